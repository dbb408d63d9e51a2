"""Renewal of the node's federation certificate: ``provex-node renew`` and ``serve``'s renewer.

The registry issues node certificates for ``node_certificate_days`` (90 by
default); a node whose certificate expired reaches neither the registry nor
its peers. A renewal is ``EnrollmentService.RenewCertificate`` on the
registry's federation port, authenticated by the current certificate:

- **The key is kept.** The CSR is made from the node's TLS key
  (``tls/node-key.pem``). Private keys of a node state are written once
  (mode 0600) and never overwritten (:mod:`node.state`); keeping the key
  means the one file that changes is the certificate, replaced by a single
  atomic rename, so a crash can never leave a key and a certificate that do
  not belong together. To rotate the key, enroll again with a new invitation.
- **Nothing is written before it is verified:** the certificate chains to
  the federation CA, carries the node's SPIFFE id
  (``spiffe://<td>/node/<id>``) and its DNS name
  (``<id>.node.<td>``), certifies the node's own key, and the logged
  RENEWED enrollment statement (checked against the trust root) names its
  fingerprint.
- The previous certificate is kept as ``tls/node.pem.previous``; then
  ``tls/node.pem`` is replaced atomically (written aside, fsynced, renamed).

The registry refuses the old certificate as soon as it has issued the new
one, so a running node must switch at once. ``serve`` runs a
:class:`CertificateRenewer`: every ``certificate_check_seconds`` it renews
when less than ``certificate_renew_before_days`` remain (0: a third of the
certificate's lifetime, i.e. 30 days of a 90-day certificate), backing off
(doubling up to ``certificate_retry_max_seconds``) after a failure. The
switch is done inside the node in one step: the peer port presents the new
certificate from the next TLS handshake on (``grpc.dynamic_ssl_server_credentials``,
no restart), and the registry link and the peer dialer open new channels
with it (calls in flight on the old ones get a grace period). ``provex-node
renew`` against a *running* node therefore does not call the registry
itself: it asks the node (``run/renew-request``) and waits for the node's
answer (``run/renewal.json``); against a stopped node it renews directly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import cast

import grpc
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from grpc_health.v1 import health_pb2, health_pb2_grpc

from node.config import NodeConfig
from node.state import Identity, StateLayout, load_trust_root_chain, require_enrolled
from provex import bundle, pki
from provex.errors import FailedPrecondition, ProvexError, Unavailable, VerificationError
from provex.identity import (
    SpiffeId,
    TlsMaterial,
    channel_credentials,
    node_server_name,
    spiffe_id_of_certificate,
)
from provex.keyfiles import replace_file
from provex.rpc import raise_for_rpc_error
from provex.trust import TrustRoot
from provex.v1 import registry_pb2, registry_pb2_grpc

log = logging.getLogger(__name__)

REQUEST_FILE = "renew-request"
ANSWER_FILE = "renewal.json"
PREVIOUS_SUFFIX = ".previous"

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class Renewed:
    """A certificate the node renewed (and now uses)."""

    fingerprint: str
    expires_at: str
    log_index: int
    certificate: str
    previous: str


def renewal_due(certificate: x509.Certificate, renew_before_days: float) -> datetime:
    """When ``certificate`` should be renewed: ``renew_before_days`` (0: a third) before expiry."""
    expires = certificate.not_valid_after_utc
    lifetime = expires - certificate.not_valid_before_utc
    before = timedelta(days=renew_before_days) if renew_before_days > 0 else lifetime / 3
    return expires - before


def _same_key(certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    public = certificate.public_key()
    return (
        isinstance(public, ec.EllipticCurvePublicKey)
        and public.public_numbers() == key.public_key().public_numbers()
    )


def check_certificate(
    certificate: x509.Certificate,
    identity: Identity,
    ca_pem: bytes,
    key: ec.EllipticCurvePrivateKey,
    now: datetime,
) -> None:
    """VerificationError unless ``certificate`` is a valid federation certificate of this node."""
    pki.verify_chain(certificate, pki.load_cert_pem(ca_pem), now)
    expected = SpiffeId.node(identity.trust_domain, identity.node_id)
    try:
        spiffe_id = spiffe_id_of_certificate(certificate, identity.trust_domain)
    except ProvexError as error:
        raise VerificationError(f"the new certificate: {error}") from None
    if spiffe_id != expected:
        raise VerificationError(f"the new certificate is for {spiffe_id}, not {expected}")
    names = certificate.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.DNSName)
    server_name = node_server_name(identity.trust_domain, identity.node_id)
    if server_name not in names:
        raise VerificationError(f"the new certificate does not name {server_name}")
    if not _same_key(certificate, key):
        raise VerificationError("the new certificate is not for this node's TLS key")


def install_certificate(layout: StateLayout, certificate_pem: bytes) -> Path:
    """Keep the current certificate as ``node.pem.previous``; replace ``node.pem`` atomically."""
    previous = layout.tls_cert.with_name(layout.tls_cert.name + PREVIOUS_SUFFIX)
    replace_file(previous, layout.tls_cert.read_bytes())
    replace_file(layout.tls_cert, certificate_pem)
    return previous


async def renew_certificate(
    state_dir: Path,
    identity: Identity,
    trust_root: TrustRoot,
    registry_address: str,
    material: TlsMaterial,
    *,
    deadline: float,
    now: datetime,
) -> tuple[Renewed, TlsMaterial]:
    """RenewCertificate with ``material``; verify; install. The new material is returned."""
    layout = StateLayout(state_dir)
    key = pki.load_key_pem(layout.tls_key.read_bytes())
    spiffe_id = SpiffeId.node(identity.trust_domain, identity.node_id)
    request = registry_pb2.RenewCertificateRequest(
        csr_pem=pki.csr_to_pem(pki.make_csr(key, spiffe_id)).decode("ascii")
    )
    try:
        async with grpc.aio.secure_channel(
            registry_address, material.channel_credentials()
        ) as channel:
            response = await registry_pb2_grpc.EnrollmentServiceStub(channel).RenewCertificate(
                request, timeout=deadline
            )
    except grpc.aio.AioRpcError as error:
        raise_for_rpc_error(error, f"registry at {registry_address}")
    certificate_pem = response.certificate_pem.encode()
    certificate = pki.load_cert_pem(certificate_pem)
    check_certificate(certificate, identity, material.ca_pem, key, now)
    fingerprint = pki.certificate_fingerprint(certificate)
    statement = bundle.verify_bundle(
        response.enrollment, trust_root, registry_pb2.EnrollmentStatement
    ).document
    if (
        statement.node_id != identity.node_id
        or statement.certificate_fingerprint != fingerprint
        or statement.action != registry_pb2.ENROLLMENT_ACTION_RENEWED
    ):
        raise VerificationError("the renewal statement does not match the issued certificate")
    previous = install_certificate(layout, certificate_pem)
    renewed = Renewed(
        fingerprint=fingerprint,
        expires_at=certificate.not_valid_after_utc.isoformat(),
        log_index=response.enrollment.log_index,
        certificate=str(layout.tls_cert),
        previous=str(previous),
    )
    log.info(
        "federation certificate renewed: expires %s, fingerprint %s (log index %d)",
        renewed.expires_at,
        fingerprint[:16],
        renewed.log_index,
    )
    return renewed, TlsMaterial(material.ca_pem, certificate_pem, material.key_pem)


class ServerCertificate:
    """The peer port's certificate, swappable while the grpc.aio server runs.

    :meth:`credentials` are dynamic: gRPC asks :meth:`_fetch` at each TLS
    handshake, which answers a new configuration only after :meth:`use`.
    """

    def __init__(self, material: TlsMaterial) -> None:
        self._material = material
        self._served: bytes | None = None

    def use(self, material: TlsMaterial) -> None:
        """Present ``material``'s certificate from the next handshake on."""
        self._material = material

    def credentials(self) -> grpc.ServerCredentials:
        """Mutual-TLS server credentials (clients need a certificate of the federation CA)."""
        # gRPC documents a fetcher answering None as "no change"; grpc-stubs omit None.
        fetch = cast(Callable[[], grpc.ServerCertificateConfiguration], self._fetch)
        return grpc.dynamic_ssl_server_credentials(
            self._configuration(), fetch, require_client_authentication=True
        )

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        material = self._material
        if material.cert_pem is None or material.key_pem is None:
            raise FailedPrecondition("the peer port needs the node's certificate and key")
        self._served = material.cert_pem
        return grpc.ssl_server_certificate_configuration(
            [(material.key_pem, material.cert_pem)], root_certificates=material.ca_pem
        )

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        if self._material.cert_pem == self._served:
            return None  # No change: keep the current configuration.
        return self._configuration()


class CertificateRenewer:
    """``serve``'s background renewal, and the switch of every user of the certificate."""

    def __init__(
        self,
        state_dir: Path,
        identity: Identity,
        trust_root: TrustRoot,
        registry_address: str,
        material: TlsMaterial,
        *,
        config: NodeConfig,
        clock: Clock,
    ) -> None:
        self._state = state_dir
        self._layout = StateLayout(state_dir)
        self._identity = identity
        self._root = trust_root
        self._address = registry_address
        self._config = config
        self._clock = clock
        self._listeners: list[Callable[[TlsMaterial], None]] = []
        self._watchers: list[Callable[[bool], None]] = []
        self._lock = asyncio.Lock()
        self.material = material
        self.renewals = 0

    def on_change(self, listener: Callable[[TlsMaterial], None]) -> None:
        """Call ``listener`` with the new material after each renewal."""
        self._listeners.append(listener)

    def on_renewing(self, watcher: Callable[[bool], None]) -> None:
        """Call ``watcher(True)`` before each renewal call and ``watcher(False)`` after it."""
        self._watchers.append(watcher)

    @property
    def certificate(self) -> x509.Certificate:
        assert self.material.cert_pem is not None
        return pki.load_cert_pem(self.material.cert_pem)

    @property
    def due_at(self) -> datetime:
        return renewal_due(self.certificate, self._config.certificate_renew_before_days)

    def _switch(self, material: TlsMaterial) -> None:
        self.material = material
        for listener in self._listeners:
            listener(material)

    async def renew_now(self) -> Renewed:
        """Renew with the registry and switch to the new certificate."""
        async with self._lock:
            for watcher in self._watchers:
                watcher(True)
            try:
                renewed, material = await renew_certificate(
                    self._state,
                    self._identity,
                    self._root,
                    self._address,
                    self.material,
                    deadline=self._config.registry_deadline,
                    now=self._clock(),
                )
                self.renewals += 1
                self._switch(material)
            finally:
                for watcher in self._watchers:
                    watcher(False)
            return renewed

    def _pick_up_from_disk(self) -> None:
        """Switch to a certificate another process installed (e.g. ``renew`` run directly)."""
        on_disk = self._layout.tls_cert.read_bytes()
        if on_disk == self.material.cert_pem:
            return
        assert self.material.key_pem is not None
        certificate = pki.load_cert_pem(on_disk)
        key = pki.load_key_pem(self.material.key_pem)
        check_certificate(certificate, self._identity, self.material.ca_pem, key, self._clock())
        log.info("switching to the federation certificate installed in %s", self._layout.tls_cert)
        self._switch(TlsMaterial(self.material.ca_pem, on_disk, self.material.key_pem))

    def _take_request(self) -> str | None:
        request = self._layout.root / "run" / REQUEST_FILE
        try:
            nonce = request.read_text().strip()
        except FileNotFoundError:
            return None
        request.unlink(missing_ok=True)
        return nonce or "-"

    def _answer(self, nonce: str, document: dict[str, object]) -> None:
        replace_file(
            self._layout.root / "run" / ANSWER_FILE,
            json.dumps({"nonce": nonce, **document}, sort_keys=True).encode(),
        )

    async def check_once(self) -> Renewed | None:
        """One round: switch to a newer certificate on disk; renew if asked or due."""
        self._pick_up_from_disk()
        nonce = self._take_request()
        if nonce is not None:
            try:
                renewed = await self.renew_now()
            except ProvexError as error:
                self._answer(nonce, {"ok": False, "error": str(error)})
                raise
            self._answer(nonce, {"ok": True, **asdict(renewed)})
            return renewed
        if self._clock() >= self.due_at:
            log.info(
                "federation certificate due for renewal (expires %s)",
                self.certificate.not_valid_after_utc,
            )
            return await self.renew_now()
        return None

    async def run(self) -> None:
        """Check every ``certificate_check_seconds`` until cancelled; back off after failures."""
        interval = self._config.certificate_check_seconds
        failures = 0
        while True:
            try:
                await self.check_once()
                failures = 0
                delay = interval
            except asyncio.CancelledError:
                raise
            except Exception as error:  # Logged and retried: the certificate is still valid.
                failures += 1
                delay = min(self._config.certificate_retry_max_seconds, interval * 2**failures)
                log.warning(
                    "federation certificate renewal failed (attempt %d; certificate expires %s); "
                    "retrying in %.1f s: %s",
                    failures,
                    self.certificate.not_valid_after_utc.isoformat(),
                    delay,
                    error,
                )
            await asyncio.sleep(delay)


# ---------------------------------------------------------------- `provex-node renew`


async def _node_is_serving(state_dir: Path, deadline: float) -> bool:
    """Whether the node of ``state_dir`` runs: its operator port answers a health check."""
    layout = StateLayout(state_dir)
    try:
        endpoints = json.loads((state_dir / "run" / "endpoints.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    credentials = channel_credentials(
        layout.operator_ca.read_bytes(),
        layout.operator_cert.read_bytes(),
        layout.operator_key.read_bytes(),
    )
    try:
        async with grpc.aio.secure_channel(str(endpoints["operator"]), credentials) as channel:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=deadline
            )
    except grpc.aio.AioRpcError:
        return False
    return True


async def _ask_running_node(state_dir: Path, wait_seconds: float) -> Renewed:
    run = state_dir / "run"
    nonce = secrets.token_hex(8)
    answer = run / ANSWER_FILE
    replace_file(run / REQUEST_FILE, nonce.encode())
    give_up = time.monotonic() + wait_seconds
    while time.monotonic() < give_up:
        try:
            document = json.loads(answer.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            document = {}
        if document.get("nonce") == nonce:
            if not document.get("ok"):
                raise FailedPrecondition(f"the running node could not renew: {document['error']}")
            return Renewed(**{k: v for k, v in document.items() if k not in ("nonce", "ok")})
        await asyncio.sleep(0.1)
    (run / REQUEST_FILE).unlink(missing_ok=True)
    raise Unavailable(
        f"the running node did not answer the renewal request within {wait_seconds:.0f} s; "
        "see its log, or stop it and run `provex-node renew` again"
    )


async def renew_command(
    state_dir: Path, config: NodeConfig, clock: Clock, wait_seconds: float
) -> tuple[Renewed, bool]:
    """``provex-node renew``: through the running node, or directly; True if through the node."""
    identity = require_enrolled(state_dir)
    if await _node_is_serving(state_dir, 2.0):
        return await _ask_running_node(state_dir, wait_seconds), True
    layout = StateLayout(state_dir)
    material = TlsMaterial(
        layout.federation_ca.read_bytes(), layout.tls_cert.read_bytes(), layout.tls_key.read_bytes()
    )
    root = load_trust_root_chain(layout, identity.trust_root_digest).root
    renewed, _ = await renew_certificate(
        state_dir,
        identity,
        root,
        config.registry_address or identity.registry_federation,
        material,
        deadline=config.registry_deadline,
        now=clock(),
    )
    return renewed, False
