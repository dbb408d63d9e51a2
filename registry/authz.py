"""Who is calling the registry, and what they may do.

The caller is decided from the TLS peer certificate's SPIFFE id (never from a
request field): no certificate (the public port) is anonymous; a node
certificate is that node; an admin certificate carries the role recorded for
that admin name when ``admin add`` issued it. Servicers state each RPC's
requirement with one call (``require_admin``, ``require_reader``, ...).
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cryptography import x509

from provex import pki
from provex.errors import PermissionDenied, Unauthenticated
from provex.identity import (
    AUTH_CONTEXT_PEM_CERT,
    AuthContextSource,
    PeerKind,
    SpiffeId,
)


class Role(enum.Enum):
    """What a caller is to the registry."""

    ANONYMOUS = "anonymous"
    NODE = "node"
    AUDITOR = "auditor"
    ADMIN = "admin"


@dataclass(frozen=True)
class Caller:
    """An authenticated (or anonymous) caller of one RPC."""

    role: Role
    spiffe_id: SpiffeId | None = None

    @property
    def name(self) -> str:
        """The node id or admin name; "anonymous" without a certificate."""
        return self.spiffe_id.name if self.spiffe_id else "anonymous"

    def __str__(self) -> str:
        return str(self.spiffe_id) if self.spiffe_id else "anonymous"


AdminRoleLookup = Callable[[str], Awaitable[Role | None]]


async def identify(spiffe_id: SpiffeId | None, admin_role: AdminRoleLookup) -> Caller:
    """The caller presenting ``spiffe_id`` (see :func:`provex.identity.peer_identity`).

    None is anonymous; Unauthenticated for an unknown admin or a foreign identity.
    """
    if spiffe_id is None:
        return Caller(Role.ANONYMOUS)
    if spiffe_id.kind is PeerKind.NODE:
        return Caller(Role.NODE, spiffe_id)
    if spiffe_id.kind is PeerKind.ADMIN:
        role = await admin_role(spiffe_id.name)
        if role is None:
            raise Unauthenticated(f"{spiffe_id} is not a registered admin or auditor")
        return Caller(role, spiffe_id)
    raise Unauthenticated(f"{spiffe_id} may not call the registry as a client")


def peer_certificate_fingerprint(context: AuthContextSource) -> str | None:
    """Hex SHA-256 of the peer's verified TLS certificate; None without one."""
    pems = list(context.auth_context().get(AUTH_CONTEXT_PEM_CERT, ()))
    if len(pems) != 1:
        return None
    try:
        return pki.certificate_fingerprint(x509.load_pem_x509_certificate(pems[0]))
    except ValueError:
        return None


def require_admin(caller: Caller, action: str) -> Caller:
    """Only admins act."""
    if caller.role is Role.ANONYMOUS:
        raise Unauthenticated(f"{action} needs an admin client certificate")
    if caller.role is not Role.ADMIN:
        raise PermissionDenied(f"{action} is for admins; {caller} is a {caller.role.value}")
    return caller


def require_node(caller: Caller, action: str) -> Caller:
    """Only enrolled nodes act for themselves."""
    if caller.role is Role.ANONYMOUS:
        raise Unauthenticated(f"{action} needs a node certificate from the federation CA")
    if caller.role is not Role.NODE:
        raise PermissionDenied(f"{action} is for nodes; {caller} is a {caller.role.value}")
    return caller


def require_authenticated(caller: Caller, action: str) -> Caller:
    """Any node, auditor or admin (not anonymous)."""
    if caller.role is Role.ANONYMOUS:
        raise Unauthenticated(f"{action} needs a client certificate from the federation CA")
    return caller
