"""Enrollment of nodes and the node directory: invitations, enroll, renew, revoke.

An admin invites a node (:meth:`NodeBook.create_invitation`); the invitation
text (:mod:`provex.invitation`) works once, until it expires. With it a node
enrolls (:meth:`NodeBook.enroll`): the federation CA issues it a certificate
for ``spiffe://<td>/node/<node-id>``, and a signed ``EnrollmentStatement``
binding node id, Ed25519 signing key and certificate fingerprint is logged in
the same transaction that writes the ``nodes`` row and marks the invitation
used, so a retried or concurrent enrollment can never use it twice. Renewal
and revocation log statements the same way. The directory reads the
``nodes`` table.
"""

from __future__ import annotations

import hmac
import logging
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from provex import ids, pki, trust
from provex import invitation as invitations
from provex.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from provex.identity import SpiffeId, node_server_name
from provex.members import check_mainland_region, check_name
from provex.timestamps import to_timestamp
from provex.v1 import common_pb2, registry_pb2
from registry.config import RegistryConfig
from registry.db import Database
from registry.publication import Publisher, RecordRows
from registry.state import RegistryKeys

log = logging.getLogger(__name__)

MAX_INVITATION_VALIDITY = timedelta(days=30)
MAX_REASON = 1000
MAX_ENDPOINT = 255
SIGNING_KEY_BYTES = 32

ACTIVE = "active"
REVOKED = "revoked"
_STATUS = {ACTIVE: common_pb2.STATUS_ACTIVE, REVOKED: common_pb2.STATUS_REVOKED}

_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)")
_REGION_PREFIX = re.compile(r"[0-9]{0,6}")


# ---------------------------------------------------------------- validation


def check_node_id(node_id: str, field: str = "node_id") -> str:
    """A node id (provex.ids rules); InvalidArgument naming ``field``."""
    if not node_id:
        raise InvalidArgument(f"{field} is required")
    try:
        return ids.validate_node_id(node_id)
    except InvalidArgument as error:
        raise InvalidArgument(f"{field}: {error}") from None


def check_region_prefix(prefix: str, field: str = "region_prefix") -> str:
    """Up to six digits: a GB/T 2260 prefix such as ``44``."""
    if not _REGION_PREFIX.fullmatch(prefix):
        raise InvalidArgument(f"{field} must be up to 6 digits (e.g. 44), got {prefix!r}")
    return prefix


def check_endpoint(
    endpoint: str, field: str = "peer_endpoint", *, unannounced_ok: bool = False
) -> str:
    """``host:port`` (``[v6]:port`` for IPv6) with a port 1..65535.

    With ``unannounced_ok`` (enrollment) port 0 is accepted too: a node that
    binds its peer port when it starts announces the real port then
    (UpdateNodeEndpoint); peers skip a node whose port is still 0.
    """
    lowest = 0 if unannounced_ok else 1
    if not endpoint:
        raise InvalidArgument(f"{field} is required (host:port where peers reach the node)")
    host, colon, port = endpoint.rpartition(":")
    if (
        len(endpoint) > MAX_ENDPOINT
        or not colon
        or not _HOST.fullmatch(host)
        or not port.isascii()
        or not port.isdigit()
        or not lowest <= int(port) <= 65535
    ):
        raise InvalidArgument(
            f"{field} must be host:port with a port {lowest}..65535, got {endpoint!r}"
        )
    return endpoint


def check_signing_key(key: bytes, field: str = "signing_key") -> bytes:
    """A raw 32-byte Ed25519 public key."""
    if len(key) != SIGNING_KEY_BYTES:
        raise InvalidArgument(
            f"{field} must be a raw {SIGNING_KEY_BYTES}-byte Ed25519 public key, "
            f"got {len(key)} bytes"
        )
    try:
        Ed25519PublicKey.from_public_bytes(key)
    except ValueError:
        raise InvalidArgument(f"{field} is not a valid Ed25519 public key") from None
    return key


def load_csr(csr_pem: str, field: str = "csr_pem") -> x509.CertificateSigningRequest:
    """A PEM CSR; InvalidArgument naming ``field``."""
    if not csr_pem.strip():
        raise InvalidArgument(f"{field} is required (a PEM CSR for an ECDSA P-256 key)")
    try:
        return pki.load_csr_pem(csr_pem.encode("utf-8"))
    except InvalidArgument as error:
        raise InvalidArgument(f"{field}: {error}") from None


# ---------------------------------------------------------------- records


@dataclass(frozen=True)
class NodeRecord:
    """One row of the ``nodes`` table."""

    node_id: str
    region_code: str
    display_name: str
    peer_endpoint: str
    status: str
    signing_key: bytes
    certificate_fingerprint: str
    certificate_expires_at: datetime
    enrolled_at: datetime
    log_index: int

    def to_proto(self) -> registry_pb2.NodeInfo:
        """The directory's view of this node."""
        return registry_pb2.NodeInfo(
            node_id=self.node_id,
            region_code=self.region_code,
            display_name=self.display_name,
            peer_endpoint=self.peer_endpoint,
            status=_STATUS[self.status],
            signing_key=self.signing_key,
            enrolled_at=to_timestamp(self.enrolled_at),
        )


_NODE_COLUMNS = (
    "node_id, region_code, display_name, peer_endpoint, status, signing_key, "
    "certificate_fingerprint, certificate_expires_at, enrolled_at, log_index"
)


def _node(row: Any) -> NodeRecord:
    return NodeRecord(
        node_id=str(row[0]),
        region_code=str(row[1]),
        display_name=str(row[2]),
        peer_endpoint=str(row[3]),
        status=str(row[4]),
        signing_key=bytes(row[5]),
        certificate_fingerprint=str(row[6]),
        certificate_expires_at=datetime.fromisoformat(str(row[7])),
        enrolled_at=datetime.fromisoformat(str(row[8])),
        log_index=int(row[9]),
    )


def read_node(conn: sqlite3.Connection, node_id: str) -> NodeRecord | None:
    """The ``nodes`` row of ``node_id``, or None."""
    row = conn.execute(
        f"SELECT {_NODE_COLUMNS} FROM nodes WHERE node_id = ?", (node_id,)
    ).fetchone()
    return None if row is None else _node(row)


@dataclass(frozen=True)
class _InvitationRow:
    invitation_id: str
    node_id: str
    region_code: str
    display_name: str
    secret_sha256: bytes
    expires_at: datetime
    used_at: str | None


def _read_invitation(conn: sqlite3.Connection, invitation_id: str) -> _InvitationRow | None:
    row = conn.execute(
        "SELECT invitation_id, node_id, region_code, display_name, secret_sha256, expires_at, "
        "used_at FROM invitations WHERE invitation_id = ?",
        (invitation_id,),
    ).fetchone()
    if row is None:
        return None
    return _InvitationRow(
        str(row[0]),
        str(row[1]),
        str(row[2]),
        str(row[3]),
        bytes(row[4]),
        datetime.fromisoformat(str(row[5])),
        None if row[6] is None else str(row[6]),
    )


@dataclass(frozen=True)
class Enrolled:
    """What an enrolled node receives."""

    certificate_pem: str
    ca_certificate_pem: str
    enrollment: common_pb2.Bundle
    trust_root: bytes


@dataclass(frozen=True)
class Renewed:
    """What a renewing node receives."""

    certificate_pem: str
    enrollment: common_pb2.Bundle


async def latest_trust_root_envelope(db: Database) -> bytes:
    """The envelope of the newest trust root version in the database."""

    def read(conn: sqlite3.Connection) -> bytes | None:
        row = conn.execute(
            "SELECT envelope FROM trust_roots ORDER BY version DESC LIMIT 1"
        ).fetchone()
        return None if row is None else bytes(row[0])

    envelope = await db.run(read)
    if envelope is None:
        raise FailedPrecondition("the registry has no trust root: run `provex-registry init`")
    return envelope


async def first_trust_root_envelope(db: Database) -> bytes:
    """The envelope of trust root version 1: what invitations pin."""

    def read(conn: sqlite3.Connection) -> bytes | None:
        row = conn.execute("SELECT envelope FROM trust_roots WHERE version = 1").fetchone()
        return None if row is None else bytes(row[0])

    envelope = await db.run(read)
    if envelope is None:
        raise FailedPrecondition("the registry has no trust root: run `provex-registry init`")
    return envelope


def _registry_address(config: RegistryConfig) -> str:
    address = config.public_listen
    return "" if address.endswith(":0") else address


async def create_invitation(
    writer: Database,
    config: RegistryConfig,
    *,
    node_id: str,
    region_code: str,
    display_name: str,
    expires_at: datetime | None,
    created_by: str,
    now: datetime,
) -> invitations.Invitation:
    """A one-time invitation for ``node_id``; only the secret's SHA-256 is stored.

    Needs only the database (no sequencer: nothing is logged), so a CLI may
    call it next to a running server. ``expires_at`` None means
    ``config.invitation_validity_hours`` from ``now``.
    """
    check_node_id(node_id)
    check_mainland_region(region_code)
    display_name = check_name(display_name)
    if expires_at is None:
        expires_at = now + timedelta(hours=config.invitation_validity_hours)
    if expires_at <= now:
        raise InvalidArgument(f"expires_at {expires_at.isoformat()} is not in the future")
    if expires_at > now + MAX_INVITATION_VALIDITY:
        raise InvalidArgument(
            f"expires_at is more than {MAX_INVITATION_VALIDITY.days} days out; "
            "invite closer to the enrollment date"
        )
    invitation = invitations.Invitation(
        invitation_id=invitations.new_invitation_id(),
        secret=invitations.new_secret(),
        node_id=node_id,
        region_code=region_code,
        trust_domain=config.trust_domain,
        registry_address=_registry_address(config),
        # Nodes pin version 1 and walk forward to the current one (node.state).
        trust_root_digest=trust.digest_of(await first_trust_root_envelope(writer)),
        expires_at=expires_at,
    )

    def insert(conn: sqlite3.Connection) -> None:
        existing = read_node(conn, node_id)
        if existing is not None and existing.status == ACTIVE:
            raise AlreadyExists(
                f"node {node_id} is already enrolled and active; revoke it first to re-enroll"
            )
        conn.execute(
            "INSERT INTO invitations (invitation_id, node_id, region_code, display_name, "
            "secret_sha256, expires_at, created_by, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                invitation.invitation_id,
                node_id,
                region_code,
                display_name,
                invitation.secret_sha256,
                expires_at.isoformat(),
                created_by,
                now.isoformat(),
            ),
        )

    await writer.transaction(insert)
    return invitation


# ---------------------------------------------------------------- the book


class NodeBook:
    """Invitations, enrollment, renewal, revocation and the node directory."""

    def __init__(
        self,
        config: RegistryConfig,
        keys: RegistryKeys,
        writer: Database,
        reader: Database,
        publisher: Publisher,
        *,
        on_node_change: Callable[[str], None] | None = None,
    ) -> None:
        """``on_node_change(node_id)`` runs after a node's status or certificate changed."""
        self._config = config
        self._keys = keys
        self._writer = writer
        self._reader = reader
        self._publisher = publisher
        self._on_node_change = on_node_change

    async def _publish_node_change(
        self, node_id: str, statement: registry_pb2.EnrollmentStatement, record: RecordRows
    ) -> common_pb2.Bundle:
        """Log ``statement`` with its rows, then tell ``on_node_change`` (also on failure)."""
        try:
            return await self._publisher.publish(statement, record)
        finally:
            if self._on_node_change is not None:
                self._on_node_change(node_id)

    # -- invitations

    async def _latest_trust_root(self) -> bytes:
        return await latest_trust_root_envelope(self._reader)

    async def create_invitation(
        self,
        node_id: str,
        region_code: str,
        display_name: str,
        expires_at: datetime | None,
        *,
        created_by: str,
        now: datetime,
    ) -> invitations.Invitation:
        """A one-time invitation for ``node_id`` (see :func:`create_invitation`)."""
        return await create_invitation(
            self._writer,
            self._config,
            node_id=node_id,
            region_code=region_code,
            display_name=display_name,
            expires_at=expires_at,
            created_by=created_by,
            now=now,
        )

    # -- enrollment

    async def _valid_invitation(
        self, parsed: invitations.Invitation, now: datetime
    ) -> _InvitationRow:
        if parsed.trust_domain != self._config.trust_domain:
            raise PermissionDenied(
                f"invitation is for trust domain {parsed.trust_domain!r}, "
                f"this registry serves {self._config.trust_domain!r}"
            )
        row = await self._reader.run(lambda conn: _read_invitation(conn, parsed.invitation_id))
        if (
            row is None
            or not hmac.compare_digest(row.secret_sha256, parsed.secret_sha256)
            or row.node_id != parsed.node_id
            or row.region_code != parsed.region_code
        ):
            raise Unauthenticated(
                f"invitation {parsed.invitation_id} was not issued by this registry or was "
                "altered; ask the registry admin for a new one"
            )
        _check_usable(row, now)
        return row

    async def enroll(
        self,
        invitation_text: str,
        csr_pem: str,
        signing_key: bytes,
        peer_endpoint: str,
        now: datetime,
    ) -> Enrolled:
        """Enroll the invited node: certificate, logged statement, used invitation."""
        parsed = invitations.parse_invitation(invitation_text)
        csr = load_csr(csr_pem)
        check_signing_key(signing_key)
        check_endpoint(peer_endpoint, unannounced_ok=True)
        row = await self._valid_invitation(parsed, now)
        node_id = row.node_id
        existing = await self._reader.run(lambda conn: read_node(conn, node_id))
        if existing is not None and existing.status == ACTIVE:
            raise AlreadyExists(f"node {node_id} is already enrolled and active")
        certificate = self._issue(csr, node_id, now)
        fingerprint = pki.certificate_fingerprint(certificate)
        expires = certificate.not_valid_after_utc
        statement = registry_pb2.EnrollmentStatement(
            node_id=node_id,
            region_code=row.region_code,
            display_name=row.display_name,
            signing_key=signing_key,
            certificate_fingerprint=fingerprint,
            certificate_expires_at=to_timestamp(expires),
            peer_endpoint=peer_endpoint,
            action=registry_pb2.ENROLLMENT_ACTION_ENROLLED,
            issued_at=to_timestamp(now),
        )

        def record(conn: sqlite3.Connection, log_index: int, envelope: bytes) -> None:
            used = conn.execute(
                "UPDATE invitations SET used_at = ? WHERE invitation_id = ? AND used_at IS NULL",
                (now.isoformat(), row.invitation_id),
            )
            if used.rowcount == 0:
                raise PermissionDenied(f"invitation {row.invitation_id} was already used")
            current = read_node(conn, node_id)
            if current is not None and current.status == ACTIVE:
                raise AlreadyExists(f"node {node_id} is already enrolled and active")
            conn.execute(
                "INSERT INTO nodes (node_id, region_code, display_name, peer_endpoint, status, "
                "signing_key, certificate_fingerprint, certificate_expires_at, enrolled_at, "
                "log_index) VALUES (?, ?, ?, ?, 'active', ?, ?, ?, ?, ?) "
                "ON CONFLICT (node_id) DO UPDATE SET region_code = excluded.region_code, "
                "display_name = excluded.display_name, peer_endpoint = excluded.peer_endpoint, "
                "status = 'active', signing_key = excluded.signing_key, "
                "certificate_fingerprint = excluded.certificate_fingerprint, "
                "certificate_expires_at = excluded.certificate_expires_at, "
                "enrolled_at = excluded.enrolled_at, log_index = excluded.log_index",
                (
                    node_id,
                    row.region_code,
                    row.display_name,
                    peer_endpoint,
                    signing_key,
                    fingerprint,
                    expires.isoformat(),
                    now.isoformat(),
                    log_index,
                ),
            )

        bundle = await self._publish_node_change(node_id, statement, record)
        log.info("node %s enrolled (log index %d)", node_id, bundle.log_index)
        return Enrolled(
            certificate_pem=pki.cert_to_pem(certificate).decode("ascii"),
            ca_certificate_pem=pki.cert_to_pem(self._keys.ca_cert).decode("ascii"),
            enrollment=bundle,
            trust_root=await self._latest_trust_root(),
        )

    def _issue(
        self, csr: x509.CertificateSigningRequest, node_id: str, now: datetime
    ) -> x509.Certificate:
        spiffe_id = SpiffeId.node(self._config.trust_domain, node_id)
        try:
            return pki.issue_certificate(
                self._keys.ca_key,
                self._keys.ca_cert,
                csr,
                spiffe_id,
                now=now,
                validity=timedelta(days=self._config.node_certificate_days),
                dns_names=[node_server_name(self._config.trust_domain, node_id)],
            )
        except InvalidArgument as error:
            raise InvalidArgument(f"csr_pem: {error}") from None

    # -- renewal and revocation

    async def _active_node(self, node_id: str) -> NodeRecord:
        node = await self.get_node(node_id)
        if node.status != ACTIVE:
            raise PermissionDenied(f"node {node_id} is revoked")
        return node

    async def renew(self, node_id: str, csr_pem: str, now: datetime) -> Renewed:
        """A fresh certificate for an active node; logs a RENEWED statement."""
        csr = load_csr(csr_pem)
        node = await self._active_node(node_id)
        certificate = self._issue(csr, node_id, now)
        fingerprint = pki.certificate_fingerprint(certificate)
        expires = certificate.not_valid_after_utc
        statement = _statement(node, registry_pb2.ENROLLMENT_ACTION_RENEWED, now)
        statement.certificate_fingerprint = fingerprint
        statement.certificate_expires_at.CopyFrom(to_timestamp(expires))

        def record(conn: sqlite3.Connection, log_index: int, envelope: bytes) -> None:
            updated = conn.execute(
                "UPDATE nodes SET certificate_fingerprint = ?, certificate_expires_at = ?, "
                "log_index = ? WHERE node_id = ? AND status = 'active'",
                (fingerprint, expires.isoformat(), log_index, node_id),
            )
            if updated.rowcount == 0:
                raise PermissionDenied(f"node {node_id} is revoked")

        bundle = await self._publish_node_change(node_id, statement, record)
        log.info("node %s renewed its certificate (log index %d)", node_id, bundle.log_index)
        return Renewed(pki.cert_to_pem(certificate).decode("ascii"), bundle)

    async def revoke(
        self, node_id: str, reason: str, revoked_by: str, now: datetime
    ) -> common_pb2.Bundle:
        """Revoke a node federation-wide; logs a REVOKED statement."""
        check_node_id(node_id)
        if len(reason) > MAX_REASON:
            raise InvalidArgument(f"reason is {len(reason)} characters, at most {MAX_REASON}")
        node = await self.get_node(node_id)
        if node.status == REVOKED:
            raise FailedPrecondition(f"node {node_id} is already revoked")
        statement = _statement(node, registry_pb2.ENROLLMENT_ACTION_REVOKED, now)

        def record(conn: sqlite3.Connection, log_index: int, envelope: bytes) -> None:
            updated = conn.execute(
                "UPDATE nodes SET status = 'revoked', log_index = ? "
                "WHERE node_id = ? AND status = 'active'",
                (log_index, node_id),
            )
            if updated.rowcount == 0:
                raise FailedPrecondition(f"node {node_id} is already revoked")

        bundle = await self._publish_node_change(node_id, statement, record)
        log.warning(
            "node %s revoked by %s (log index %d): %s",
            node_id,
            revoked_by,
            bundle.log_index,
            reason or "no reason given",
        )
        return bundle

    # -- directory

    async def get_node(self, node_id: str) -> NodeRecord:
        """One node of the directory; NotFound if it never enrolled."""
        check_node_id(node_id)
        node = await self._reader.run(lambda conn: read_node(conn, node_id))
        if node is None:
            raise NotFound(f"node {node_id} is not enrolled")
        return node

    async def list_nodes(self, region_prefix: str, include_revoked: bool) -> list[NodeRecord]:
        """Nodes whose region code starts with ``region_prefix``, by node id."""
        check_region_prefix(region_prefix)
        sql = f"SELECT {_NODE_COLUMNS} FROM nodes WHERE region_code LIKE ? "
        if not include_revoked:
            sql += "AND status = 'active' "
        sql += "ORDER BY node_id"

        def read(conn: sqlite3.Connection) -> list[NodeRecord]:
            return [_node(row) for row in conn.execute(sql, (region_prefix + "%",))]

        return await self._reader.run(read)

    async def update_endpoint(self, node_id: str, peer_endpoint: str) -> NodeRecord:
        """Change an active node's peer endpoint."""
        check_endpoint(peer_endpoint)

        def update(conn: sqlite3.Connection) -> NodeRecord:
            changed = conn.execute(
                "UPDATE nodes SET peer_endpoint = ? WHERE node_id = ? AND status = 'active'",
                (peer_endpoint, node_id),
            )
            node = read_node(conn, node_id)
            if node is None:
                raise NotFound(f"node {node_id} is not enrolled")
            if changed.rowcount == 0:
                raise PermissionDenied(f"node {node_id} is revoked")
            return node

        return await self._writer.transaction(update)


def _check_usable(row: _InvitationRow, now: datetime) -> None:
    if row.used_at is not None:
        raise PermissionDenied(
            f"invitation {row.invitation_id} was already used at {row.used_at}; "
            "an invitation works once"
        )
    if now >= row.expires_at:
        raise PermissionDenied(
            f"invitation {row.invitation_id} expired at {row.expires_at.isoformat()}; "
            "ask the registry admin for a new one"
        )


def _statement(
    node: NodeRecord, action: registry_pb2.EnrollmentAction.ValueType, now: datetime
) -> registry_pb2.EnrollmentStatement:
    return registry_pb2.EnrollmentStatement(
        node_id=node.node_id,
        region_code=node.region_code,
        display_name=node.display_name,
        signing_key=node.signing_key,
        certificate_fingerprint=node.certificate_fingerprint,
        certificate_expires_at=to_timestamp(node.certificate_expires_at),
        peer_endpoint=node.peer_endpoint,
        action=action,
        issued_at=to_timestamp(now),
    )
