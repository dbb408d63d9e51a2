"""Who is calling the registry: roles from the TLS identity, and the refusals per requirement."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta

import pytest

from provex import pki
from provex.errors import PermissionDenied, ProvexError, Unauthenticated
from provex.identity import SpiffeId, peer_identity
from registry.authz import (
    Caller,
    Role,
    identify,
    require_admin,
    require_authenticated,
    require_node,
)

TD = "provex.test"
NOW = datetime(2026, 11, 25, tzinfo=UTC)
CA_KEY, CA_CERT = pki.create_ca(TD, NOW, timedelta(days=30))


class FakeContext:
    """Just the auth context of a TLS peer, as grpc.aio exposes it."""

    def __init__(self, spiffe_id: SpiffeId | None) -> None:
        self._properties: dict[str, list[bytes]] = {}
        if spiffe_id is not None:
            key = pki.generate_tls_key()
            cert = pki.issue_certificate(
                CA_KEY,
                CA_CERT,
                pki.make_csr(key, spiffe_id),
                spiffe_id,
                now=NOW,
                validity=timedelta(days=1),
            )
            self._properties["x509_pem_cert"] = [pki.cert_to_pem(cert)]

    def auth_context(self) -> Mapping[str, Iterable[bytes]]:
        return self._properties


async def admin_roles(name: str) -> Role | None:
    return {"alice": Role.ADMIN, "audrey": Role.AUDITOR}.get(name)


IDENTITIES = {
    "no certificate": (None, Role.ANONYMOUS),
    "a node": (SpiffeId.node(TD, "gd-gzde"), Role.NODE),
    "an admin": (SpiffeId.admin(TD, "alice"), Role.ADMIN),
    "an auditor": (SpiffeId.admin(TD, "audrey"), Role.AUDITOR),
}


@pytest.mark.parametrize("spiffe_id, role", IDENTITIES.values(), ids=IDENTITIES.keys())
async def test_roles_come_from_the_certificate(spiffe_id: SpiffeId | None, role: Role) -> None:
    caller = await identify(peer_identity(FakeContext(spiffe_id), TD), admin_roles)
    assert caller.role is role
    assert caller.spiffe_id == spiffe_id


async def test_unregistered_admins_and_registry_identities_are_refused() -> None:
    with pytest.raises(Unauthenticated, match="not a registered admin"):
        await identify(peer_identity(FakeContext(SpiffeId.admin(TD, "mallory")), TD), admin_roles)
    with pytest.raises(Unauthenticated, match="may not call the registry"):
        await identify(peer_identity(FakeContext(SpiffeId.registry(TD)), TD), admin_roles)


ANONYMOUS = Caller(Role.ANONYMOUS)
NODE = Caller(Role.NODE, SpiffeId.node(TD, "gd-gzde"))
AUDITOR = Caller(Role.AUDITOR, SpiffeId.admin(TD, "audrey"))
ADMIN = Caller(Role.ADMIN, SpiffeId.admin(TD, "alice"))

Requirement = Callable[[Caller, str], Caller]
MATRIX: dict[str, tuple[Requirement, Caller, type[ProvexError] | None]] = {
    "admin action by anonymous": (require_admin, ANONYMOUS, Unauthenticated),
    "admin action by a node": (require_admin, NODE, PermissionDenied),
    "admin action by an auditor": (require_admin, AUDITOR, PermissionDenied),
    "admin action by an admin": (require_admin, ADMIN, None),
    "node action by anonymous": (require_node, ANONYMOUS, Unauthenticated),
    "node action by an admin": (require_node, ADMIN, PermissionDenied),
    "node action by a node": (require_node, NODE, None),
    "authenticated read by anonymous": (require_authenticated, ANONYMOUS, Unauthenticated),
    "authenticated read by an auditor": (require_authenticated, AUDITOR, None),
}


@pytest.mark.parametrize("requirement, caller, refusal", MATRIX.values(), ids=MATRIX.keys())
def test_requirement_matrix(
    requirement: Requirement, caller: Caller, refusal: type[ProvexError] | None
) -> None:
    if refusal is None:
        assert requirement(caller, "SetStatus") is caller
        return
    with pytest.raises(refusal) as raised:
        requirement(caller, "SetStatus")
    assert "SetStatus" in str(raised.value)


def test_callers_print_their_identity() -> None:
    assert str(ANONYMOUS) == "anonymous" and ANONYMOUS.name == "anonymous"
    assert str(NODE) == "spiffe://provex.test/node/gd-gzde" and NODE.name == "gd-gzde"
