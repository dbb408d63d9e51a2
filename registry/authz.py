"""Who is calling the registry, and what they may do.

The caller is decided from the TLS peer certificate's SPIFFE id (never from a
request field): no certificate (the public port) is anonymous; a node
certificate is that node; an admin certificate carries the role recorded for
that admin name when ``admin add`` issued it. Servicers state each RPC's
requirement with one call (``require_admin``, ``require_reader``, ...).

Provincial supervisors (role ``supervisor``) are admin identities scoped to
one province: a region-code prefix such as ``44`` (Guangdong). They read like
auditors, but whatever they see or act on through supervision must lie in
their region (:func:`scope_prefix`, :func:`require_in_scope`); outside it they
get PERMISSION_DENIED naming their scope. National admins and auditors have
no scope (everything).
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
    SUPERVISOR = "supervisor"


@dataclass(frozen=True)
class Caller:
    """An authenticated (or anonymous) caller of one RPC."""

    role: Role
    spiffe_id: SpiffeId | None = None
    # A supervisor's region-code prefix ("44"); "" for everyone else.
    region: str = ""

    @property
    def name(self) -> str:
        """The node id or admin name; "anonymous" without a certificate."""
        return self.spiffe_id.name if self.spiffe_id else "anonymous"

    def __str__(self) -> str:
        return str(self.spiffe_id) if self.spiffe_id else "anonymous"


AdminRoleLookup = Callable[[str], Awaitable[Role | tuple[Role, str] | None]]
"""An admin name's role (and region, for a supervisor); None for an unknown name."""


async def identify(spiffe_id: SpiffeId | None, admin_role: AdminRoleLookup) -> Caller:
    """The caller presenting ``spiffe_id`` (see :func:`provex.identity.peer_identity`).

    None is anonymous; Unauthenticated for an unknown admin or a foreign identity.
    """
    if spiffe_id is None:
        return Caller(Role.ANONYMOUS)
    if spiffe_id.kind is PeerKind.NODE:
        return Caller(Role.NODE, spiffe_id)
    if spiffe_id.kind is PeerKind.ADMIN:
        found = await admin_role(spiffe_id.name)
        if found is None:
            raise Unauthenticated(f"{spiffe_id} is not a registered admin or auditor")
        role, region = found if isinstance(found, tuple) else (found, "")
        return Caller(role, spiffe_id, region if role is Role.SUPERVISOR else "")
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


def require_overseer(caller: Caller, action: str) -> Caller:
    """Admins, auditors and supervisors read supervision data (supervisors in their scope)."""
    if caller.role is Role.ANONYMOUS:
        raise Unauthenticated(f"{action} needs an admin client certificate")
    if caller.role not in (Role.ADMIN, Role.AUDITOR, Role.SUPERVISOR):
        raise PermissionDenied(
            f"{action} is for admins, auditors and supervisors; {caller} is a {caller.role.value}"
        )
    return caller


def require_supervisor(caller: Caller, action: str) -> Caller:
    """National admins act everywhere; provincial supervisors act in their scope."""
    if caller.role is Role.ANONYMOUS:
        raise Unauthenticated(f"{action} needs an admin client certificate")
    if caller.role not in (Role.ADMIN, Role.SUPERVISOR):
        raise PermissionDenied(
            f"{action} is for admins and provincial supervisors; {caller} is a {caller.role.value}"
        )
    return caller


def scope_description(caller: Caller) -> str:
    """ "supervisor spiffe://... is scoped to region 44" (for refusals)."""
    return f"supervisor {caller} is scoped to region {caller.region}"


def scope_prefix(caller: Caller, region_prefix: str, action: str) -> str:
    """The region prefix a query of ``caller`` covers: a supervisor's own scope at most.

    An empty prefix means "everything I may see": a supervisor's region, or
    everything for anyone else. A supervisor asking for a prefix outside (or
    wider than) its region gets PERMISSION_DENIED naming its scope.
    """
    if caller.role is not Role.SUPERVISOR:
        return region_prefix
    if not region_prefix:
        return caller.region
    if not region_prefix.startswith(caller.region):
        raise PermissionDenied(
            f"{action}: {scope_description(caller)}; region prefix {region_prefix} is outside it"
        )
    return region_prefix


def in_scope(caller: Caller, region_code: str) -> bool:
    """Whether ``region_code`` lies in the caller's scope (always true but for supervisors)."""
    return caller.role is not Role.SUPERVISOR or region_code.startswith(caller.region)


def require_in_scope(caller: Caller, region_code: str, what: str) -> None:
    """Refuse a supervisor acting on or reading ``what`` of a region outside its scope."""
    if not in_scope(caller, region_code):
        raise PermissionDenied(
            f"{scope_description(caller)}; {what} is in region {region_code}, outside it"
        )
