"""A node's state directory: its layout, its keys, ``init`` and what enrollment leaves there.

Layout of ``<state>``::

    node.toml                      settings (node.config)
    identity.json                  node id, region code; after enrollment: trust domain,
                                   registry addresses, pinned trust root digest
    node.db                        SQLite: members, datasets, listings, outbox, sync state
    keys/signing.pem               Ed25519 key the node signs documents with
    tls/node-key.pem               ECDSA P-256 key of the node's federation certificate
    tls/node.pem, tls/ca.pem       the certificate the registry issued, the federation CA
    trust/root-<version>.json      trust roots, from the pinned first one on
    operator/ca.pem, ca-key.pem    the node's own operator CA (the operator port trusts only it)
    operator/server.pem, server-key.pem   the operator port's certificate
    operator/cert.pem, key.pem     the operator client certificate (``provex-node`` commands)
    run/endpoints.json             written when the server is ready

Private keys are written with mode 0600 and never overwritten.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node.config import CONFIG_FILE, NodeConfig, render_config
from provex import ids, pki, trust
from provex.errors import FailedPrecondition
from provex.identity import SpiffeId
from provex.keyfiles import ed25519_to_pem, load_ed25519, write_public, write_secret
from provex.timestamps import utc_now

OPERATOR_CA_VALIDITY = timedelta(days=3650)
OPERATOR_CERT_VALIDITY = timedelta(days=825)
OPERATOR_NAME = "operator"


@dataclass(frozen=True)
class StateLayout:
    """Paths inside a node state directory."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def identity(self) -> Path:
        return self.root / "identity.json"

    @property
    def database(self) -> Path:
        return self.root / "node.db"

    @property
    def signing_key(self) -> Path:
        return self.root / "keys" / "signing.pem"

    @property
    def tls_key(self) -> Path:
        return self.root / "tls" / "node-key.pem"

    @property
    def tls_cert(self) -> Path:
        return self.root / "tls" / "node.pem"

    @property
    def federation_ca(self) -> Path:
        return self.root / "tls" / "ca.pem"

    def trust_root(self, version: int) -> Path:
        return self.root / "trust" / f"root-{version}.json"

    @property
    def operator(self) -> Path:
        return self.root / "operator"

    @property
    def operator_ca(self) -> Path:
        return self.operator / "ca.pem"

    @property
    def operator_ca_key(self) -> Path:
        return self.operator / "ca-key.pem"

    @property
    def operator_server_cert(self) -> Path:
        return self.operator / "server.pem"

    @property
    def operator_server_key(self) -> Path:
        return self.operator / "server-key.pem"

    @property
    def operator_cert(self) -> Path:
        return self.operator / "cert.pem"

    @property
    def operator_key(self) -> Path:
        return self.operator / "key.pem"


@dataclass(frozen=True)
class Identity:
    """Who the node is, and (once enrolled) which registry and trust root it follows."""

    node_id: str
    region_code: str
    trust_domain: str = ""
    registry_public: str = ""
    registry_federation: str = ""
    trust_root_digest: str = ""

    @property
    def enrolled(self) -> bool:
        return bool(self.trust_domain and self.registry_federation and self.trust_root_digest)

    @property
    def operator_trust_domain(self) -> str:
        """The trust domain of the node's private operator CA."""
        return f"{self.node_id}.operator"


def read_identity(state_dir: Path) -> Identity:
    """The node's identity; FailedPrecondition if ``init`` has not run."""
    path = StateLayout(state_dir).identity
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise FailedPrecondition(
            f"{state_dir} is not a node state: run `provex-node init` first"
        ) from None
    return Identity(**document)


def write_identity(state_dir: Path, identity: Identity) -> None:
    """Replace ``identity.json`` atomically."""
    path = StateLayout(state_dir).identity
    scratch = path.with_suffix(f".{os.getpid()}.tmp")
    scratch.write_text(json.dumps(asdict(identity), indent=2, sort_keys=True) + "\n")
    os.replace(scratch, path)


def require_enrolled(state_dir: Path) -> Identity:
    """The identity of an enrolled node; FailedPrecondition naming the missing step."""
    identity = read_identity(state_dir)
    if not identity.enrolled:
        raise FailedPrecondition(
            f"node {identity.node_id} is not enrolled yet: run `provex-node enroll` first"
        )
    return identity


def init_state(
    state_dir: Path, node_id: str, region_code: str, config: NodeConfig, now: datetime
) -> Identity:
    """Create the state directory: settings, identity, keys and the operator's CA and certs."""
    ids.validate_node_id(node_id)
    ids.region(region_code)  # InvalidArgument for a malformed or unknown code.
    layout = StateLayout(state_dir)
    if layout.identity.exists() or layout.database.exists() or layout.signing_key.exists():
        raise FailedPrecondition(f"{state_dir} already holds a node state; refusing to overwrite")
    state_dir.mkdir(parents=True, exist_ok=True)
    layout.config.write_text(render_config(config))
    identity = Identity(node_id, region_code)
    write_secret(layout.signing_key, ed25519_to_pem(Ed25519PrivateKey.generate()))
    write_secret(layout.tls_key, pki.key_to_pem(pki.generate_tls_key()))
    _create_operator_pki(layout, identity, now)
    write_identity(state_dir, identity)
    return identity


def _create_operator_pki(layout: StateLayout, identity: Identity, now: datetime) -> None:
    """A private CA for the operator port, its server certificate and one operator client."""
    trust_domain = identity.operator_trust_domain
    ca_key, ca_cert = pki.create_ca(trust_domain, now, OPERATOR_CA_VALIDITY)
    write_secret(layout.operator_ca_key, pki.key_to_pem(ca_key))
    write_public(layout.operator_ca, pki.cert_to_pem(ca_cert))
    server_key = pki.generate_tls_key()
    server_cert = pki.issue_server_certificate(
        ca_key,
        ca_cert,
        server_key.public_key(),
        SpiffeId.node(trust_domain, identity.node_id),
        now=now,
        validity=OPERATOR_CERT_VALIDITY,
        dns_names=("localhost",),
        ip_addresses=("127.0.0.1", "::1"),
    )
    write_secret(layout.operator_server_key, pki.key_to_pem(server_key))
    write_public(layout.operator_server_cert, pki.cert_to_pem(server_cert))
    client_key = pki.generate_tls_key()
    client_id = SpiffeId.admin(trust_domain, OPERATOR_NAME)
    client_cert = pki.issue_certificate(
        ca_key,
        ca_cert,
        pki.make_csr(client_key, client_id),
        client_id,
        now=now,
        validity=OPERATOR_CERT_VALIDITY,
    )
    write_secret(layout.operator_key, pki.key_to_pem(client_key))
    write_public(layout.operator_cert, pki.cert_to_pem(client_cert))


def load_signing_key(state_dir: Path) -> Ed25519PrivateKey:
    """The node's Ed25519 document-signing key."""
    return load_ed25519(StateLayout(state_dir).signing_key)


def enrolled_identity(identity: Identity, **changes: str) -> Identity:
    """``identity`` with the fields enrollment learns."""
    return replace(identity, **changes)


def load_trust_root_chain(layout: StateLayout, digest: str) -> trust.SignedTrustRoot:
    """The pinned first trust root and every later version on disk, verified in order."""
    newer = []
    version = 2
    while layout.trust_root(version).exists():
        newer.append(layout.trust_root(version).read_bytes())
        version += 1
    # Version 1 may have expired: only the newest must be current (provex.trust).
    return trust.load_pinned_chain(layout.trust_root(1).read_bytes(), digest, newer, utc_now())
