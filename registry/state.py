"""The registry's state directory: its layout, its keys, and ``init``.

Layout of ``<state>``::

    registry.toml          settings (registry.config)
    registry.db            SQLite: log, certificates, members, catalog, ...
    keys/root-<n>.pem      Ed25519 root keys (threshold 2 of 3; move offline in production)
    keys/root-v<N>-<n>.pem root keys first listed by version N (``trust rotate --new-root-keys``)
    keys/issuer.pem        Ed25519 online issuer key (certificates, statements, permits)
    keys/log.pem           Ed25519 log key (checkpoints)
    tls/ca.pem, ca-key.pem           federation CA (ECDSA P-256)
    tls/server.pem, server-key.pem   the registry's server certificate
    trust/root-<version>.json        signed trust root versions (DSSE JSON)
    admins/<name>/                   admin client certificates written by ``admin add``
    run/endpoints.json               written when the server is ready

Private keys are written with mode 0600 and never overwritten.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from provex import envelope as dsse
from provex import pki, trust
from provex.checkpoint import NoteSigner
from provex.errors import FailedPrecondition
from provex.identity import SpiffeId
from provex.keyfiles import ed25519_to_pem, load_ed25519, write_public, write_secret
from registry.config import CONFIG_FILE, RegistryConfig, render_config

ROOT_KEY_COUNT = 3
ROOT_THRESHOLD = 2
TRUST_ROOT_VALIDITY = timedelta(days=365)
CA_VALIDITY = timedelta(days=3650)
SERVER_CERT_VALIDITY = timedelta(days=365)


@dataclass(frozen=True)
class StateLayout:
    """Paths inside a registry state directory."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def database(self) -> Path:
        return self.root / "registry.db"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    def root_key(self, number: int) -> Path:
        return self.keys / f"root-{number}.pem"

    @property
    def issuer_key(self) -> Path:
        return self.keys / "issuer.pem"

    @property
    def log_key(self) -> Path:
        return self.keys / "log.pem"

    @property
    def tls(self) -> Path:
        return self.root / "tls"

    @property
    def ca_cert(self) -> Path:
        return self.tls / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.tls / "ca-key.pem"

    @property
    def server_cert(self) -> Path:
        return self.tls / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.tls / "server-key.pem"

    def trust_root(self, version: int) -> Path:
        return self.root / "trust" / f"root-{version}.json"

    @property
    def admins(self) -> Path:
        return self.root / "admins"


@dataclass(frozen=True)
class RegistryKeys:
    """Every private key and certificate the registry holds."""

    root_keys: tuple[Ed25519PrivateKey, ...]
    issuer: Ed25519PrivateKey
    log: Ed25519PrivateKey
    ca_key: ec.EllipticCurvePrivateKey
    ca_cert: x509.Certificate
    server_key: ec.EllipticCurvePrivateKey
    server_cert: x509.Certificate

    def log_signer(self, origin: str) -> NoteSigner:
        """The checkpoint signer: the log key, named after the log origin."""
        return NoteSigner(origin, self.log)


def make_trust_root(
    config: RegistryConfig, keys: RegistryKeys, version: int, now: datetime
) -> trust.TrustRoot:
    """The trust root content for the given keys."""
    return trust.TrustRoot(
        version=version,
        trust_domain=config.trust_domain,
        root_keys=tuple(dsse.raw_public_key(k.public_key()) for k in keys.root_keys),
        root_threshold=ROOT_THRESHOLD,
        issuer_key=dsse.raw_public_key(keys.issuer.public_key()),
        log_key=dsse.raw_public_key(keys.log.public_key()),
        log_origin=config.log_origin,
        ca_certificate_pem=pki.cert_to_pem(keys.ca_cert).decode("ascii"),
        issued_at=now,
        expires_at=now + TRUST_ROOT_VALIDITY,
    )


def create_state(state_dir: Path, config: RegistryConfig, now: datetime) -> RegistryKeys:
    """Write config, keys, CA, server certificate and trust root version 1.

    Refuses a directory that already holds a registry. The database and the
    log's first entries are created by :func:`registry.setup.initialize`.
    """
    layout = StateLayout(state_dir)
    if layout.config.exists() or layout.database.exists() or layout.keys.exists():
        raise FailedPrecondition(
            f"{state_dir} already holds a registry state; refusing to overwrite it"
        )
    state_dir.mkdir(parents=True, exist_ok=True)
    layout.config.write_text(render_config(config))
    root_keys = tuple(Ed25519PrivateKey.generate() for _ in range(ROOT_KEY_COUNT))
    for number, key in enumerate(root_keys, start=1):
        write_secret(layout.root_key(number), ed25519_to_pem(key))
    issuer, log_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    write_secret(layout.issuer_key, ed25519_to_pem(issuer))
    write_secret(layout.log_key, ed25519_to_pem(log_key))
    ca_key, ca_cert = pki.create_ca(config.trust_domain, now, CA_VALIDITY)
    write_secret(layout.ca_key, pki.key_to_pem(ca_key))
    write_public(layout.ca_cert, pki.cert_to_pem(ca_cert))
    server_key = pki.generate_tls_key()
    server_cert = pki.issue_server_certificate(
        ca_key,
        ca_cert,
        server_key.public_key(),
        SpiffeId.registry(config.trust_domain),
        now=now,
        validity=SERVER_CERT_VALIDITY,
        dns_names=config.server_dns_names,
        ip_addresses=config.server_ip_addresses,
    )
    write_secret(layout.server_key, pki.key_to_pem(server_key))
    write_public(layout.server_cert, pki.cert_to_pem(server_cert))
    keys = RegistryKeys(root_keys, issuer, log_key, ca_key, ca_cert, server_key, server_cert)
    root = make_trust_root(config, keys, 1, now)
    write_public(layout.trust_root(1), trust.sign_trust_root(root, root_keys[:ROOT_THRESHOLD]))
    return keys


def load_keys(state_dir: Path) -> RegistryKeys:
    """Read every key and certificate of an initialized state directory."""
    layout = StateLayout(state_dir)
    if not layout.issuer_key.exists():
        raise FailedPrecondition(
            f"{state_dir} is not an initialized registry state: run `provex-registry init` first"
        )
    return RegistryKeys(
        root_keys=tuple(load_ed25519(layout.root_key(n)) for n in range(1, ROOT_KEY_COUNT + 1)),
        issuer=load_ed25519(layout.issuer_key),
        log=load_ed25519(layout.log_key),
        ca_key=pki.load_key_pem(layout.ca_key.read_bytes()),
        ca_cert=pki.load_cert_pem(layout.ca_cert.read_bytes()),
        server_key=pki.load_key_pem(layout.server_key.read_bytes()),
        server_cert=pki.load_cert_pem(layout.server_cert.read_bytes()),
    )


def latest_trust_root(state_dir: Path) -> tuple[int, bytes]:
    """The newest trust root version on disk and its envelope bytes."""
    folder = state_dir / "trust"
    versions = sorted(int(p.stem.split("-")[1]) for p in folder.glob("root-*.json"))
    if not versions:
        raise FailedPrecondition(f"{folder} holds no trust root")
    latest = versions[-1]
    return latest, StateLayout(state_dir).trust_root(latest).read_bytes()
