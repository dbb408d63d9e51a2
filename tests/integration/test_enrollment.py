"""Enrollment, the directory and members against a real registry process.

An admin invites over mutual TLS, the node enrolls over the public port with
a CSR of its own key, then uses the issued certificate for mutual TLS to the
federation port. Each test uses its own node ids and credit codes, since the
session's registry is shared.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from provex import bundle, pki, trust
from provex import envelope as dsse
from provex.identity import SpiffeId, channel_credentials, spiffe_id_of_certificate
from provex.ids import CreditCode
from provex.invitation import parse_invitation
from provex.timestamps import to_timestamp
from provex.v1 import common_pb2, registry_pb2, registry_pb2_grpc
from tests.integration.conftest import RunningRegistry
from tests.integration.test_registry_server import DEADLINE, load_trust_root


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def credit_code(region: str = "440100") -> str:
    body = "".join(secrets.choice("0123456789") for _ in range(8))
    return CreditCode.from_parts("9", "1", region, body).code


@dataclass
class Node:
    """A node's keys and, once enrolled, its certificate."""

    node_id: str
    tls_key: ec.EllipticCurvePrivateKey
    signing_key: Ed25519PrivateKey
    certificate_pem: str = ""

    @classmethod
    def make(cls, prefix: str) -> Node:
        return cls(unique(prefix), pki.generate_tls_key(), Ed25519PrivateKey.generate())

    def csr_pem(self, claimed: str | None = None) -> str:
        csr = pki.make_csr(self.tls_key, SpiffeId.node("provex.local", claimed or self.node_id))
        return pki.csr_to_pem(csr).decode()

    def enroll_request(
        self, invitation: str, claimed: str | None = None
    ) -> registry_pb2.EnrollRequest:
        return registry_pb2.EnrollRequest(
            invitation=invitation,
            csr_pem=self.csr_pem(claimed),
            signing_key=dsse.raw_public_key(self.signing_key.public_key()),
            peer_endpoint="127.0.0.1:7600",
        )

    def channel(self, registry: RunningRegistry) -> grpc.aio.Channel:
        credentials = channel_credentials(
            registry.ca_pem, self.certificate_pem.encode(), pki.key_to_pem(self.tls_key)
        )
        return grpc.aio.secure_channel(registry.endpoints["federation"], credentials)


def admin_channel(registry: RunningRegistry, state: Path, name: str = "alice") -> grpc.aio.Channel:
    return registry.federation_channel(state / "admins" / name)


async def invite(
    registry: RunningRegistry,
    state: Path,
    node_id: str,
    region: str = "440100",
    expires_at: datetime | None = None,
) -> str:
    request = registry_pb2.CreateInvitationRequest(
        node_id=node_id, region_code=region, display_name=f"Exchange {node_id}"
    )
    if expires_at is not None:
        request.expires_at.CopyFrom(to_timestamp(expires_at))
    async with admin_channel(registry, state) as channel:
        response = await registry_pb2_grpc.EnrollmentServiceStub(channel).CreateInvitation(
            request, timeout=DEADLINE
        )
    return response.invitation


async def enroll(
    registry: RunningRegistry, request: registry_pb2.EnrollRequest
) -> registry_pb2.EnrollResponse:
    async with registry.public_channel() as channel:
        return await registry_pb2_grpc.EnrollmentServiceStub(channel).Enroll(
            request, timeout=DEADLINE
        )


async def enrolled_node(
    registry: RunningRegistry, state: Path, prefix: str, region: str = "440100"
) -> Node:
    node = Node.make(prefix)
    response = await enroll(
        registry, node.enroll_request(await invite(registry, state, node.node_id, region))
    )
    node.certificate_pem = response.certificate_pem
    return node


async def refused(call: object, code: grpc.StatusCode) -> str:
    """Await ``call`` and return the refusal's message, checking its code."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    assert raised.value.code() is code, raised.value.details()
    details = raised.value.details() or ""
    assert details
    assert "Traceback" not in details
    return details


# ---------------------------------------------------------------- the path


async def test_invite_enroll_and_act_as_the_node(
    registry: RunningRegistry, registry_state: tuple[Path, str]
) -> None:
    state, _ = registry_state
    root = await load_trust_root(registry)
    node = Node.make("it-gz")
    text = await invite(registry, state, node.node_id)
    parsed = parse_invitation(text)
    assert parsed.trust_root_digest == registry.trust_root_digest
    assert parsed.node_id == node.node_id
    response = await enroll(registry, node.enroll_request(text))
    # What the node checks before it trusts anything: the pinned trust root, then the bundle.
    pinned = trust.load_trust_root(response.trust_root, parsed.trust_root_digest, datetime.now(UTC))
    assert pinned.root == root
    assert response.ca_certificate_pem.encode() == registry.ca_pem
    statement = bundle.verify_bundle(
        response.enrollment, root, registry_pb2.EnrollmentStatement
    ).document
    certificate = pki.load_cert_pem(response.certificate_pem.encode())
    assert spiffe_id_of_certificate(certificate, "provex.local").name == node.node_id
    assert statement.node_id == node.node_id
    assert statement.action == registry_pb2.ENROLLMENT_ACTION_ENROLLED
    assert statement.certificate_fingerprint == pki.certificate_fingerprint(certificate)
    assert statement.signing_key == dsse.raw_public_key(node.signing_key.public_key())
    node.certificate_pem = response.certificate_pem

    code = credit_code()
    async with node.channel(registry) as channel:
        directory = registry_pb2_grpc.DirectoryServiceStub(channel)
        got = await directory.GetNode(
            registry_pb2.GetNodeRequest(node_id=node.node_id), timeout=DEADLINE
        )
        assert got.node.status == common_pb2.STATUS_ACTIVE
        assert got.node.peer_endpoint == "127.0.0.1:7600"
        listed = await directory.ListNodes(
            registry_pb2.ListNodesRequest(region_prefix="44"), timeout=DEADLINE
        )
        assert node.node_id in [n.node_id for n in listed.nodes]
        moved = await directory.UpdateNodeEndpoint(
            registry_pb2.UpdateNodeEndpointRequest(peer_endpoint="gz.example:7600"),
            timeout=DEADLINE,
        )
        assert moved.node.peer_endpoint == "gz.example:7600"

        members = registry_pb2_grpc.MemberServiceStub(channel)
        reported = await members.ReportMember(
            registry_pb2.ReportMemberRequest(
                member=registry_pb2.Member(credit_code=code, name="Acme Data", region_code="440100")
            ),
            timeout=DEADLINE,
        )
        assert reported.member.node_id == node.node_id
        assert reported.member.country == "CN"
        page = await members.ListMembers(registry_pb2.ListMembersRequest(), timeout=DEADLINE)
        assert [m.credit_code for m in page.members] == [code]
        one = await members.GetMember(
            registry_pb2.GetMemberRequest(credit_code=code), timeout=DEADLINE
        )
        assert one.member.name == "Acme Data"

    async with admin_channel(registry, state, "audrey") as channel:
        seen = await registry_pb2_grpc.MemberServiceStub(channel).ListMembers(
            registry_pb2.ListMembersRequest(node_id=node.node_id), timeout=DEADLINE
        )
    assert [m.credit_code for m in seen.members] == [code]


# ---------------------------------------------------------------- refusals of enrollment


async def test_reused_forged_and_misdirected_invitations_are_refused(
    registry: RunningRegistry, registry_state: tuple[Path, str]
) -> None:
    state, _ = registry_state
    node = Node.make("it-refuse")
    text = await invite(registry, state, node.node_id)

    message = await refused(
        enroll(registry, node.enroll_request(text, claimed="gd-other")),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert "node/gd-other" in message
    assert f"node/{node.node_id}" in message

    parsed = parse_invitation(text)
    forged = replace(parsed, secret=secrets.token_bytes(32)).to_text()
    message = await refused(
        enroll(registry, node.enroll_request(forged)), grpc.StatusCode.UNAUTHENTICATED
    )
    assert "altered" in message

    await enroll(registry, node.enroll_request(text))
    message = await refused(
        enroll(registry, Node.make("it-again").enroll_request(text, claimed=node.node_id)),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert "already used" in message

    message = await refused(
        enroll(registry, node.enroll_request("not an invitation")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert message.startswith("invitation")


async def test_an_expired_invitation_is_refused(
    registry: RunningRegistry, registry_state: tuple[Path, str]
) -> None:
    state, _ = registry_state
    node = Node.make("it-late")
    text = await invite(
        registry, state, node.node_id, expires_at=datetime.now(UTC) + timedelta(seconds=1)
    )
    await asyncio.sleep(1.5)
    message = await refused(
        enroll(registry, node.enroll_request(text)), grpc.StatusCode.PERMISSION_DENIED
    )
    assert "expired" in message


async def test_malformed_enrollment_fields_are_named(registry: RunningRegistry) -> None:
    node = Node.make("it-bad")
    request = node.enroll_request("x")
    request.invitation = ""
    message = await refused(enroll(registry, request), grpc.StatusCode.INVALID_ARGUMENT)
    assert "invitation" in message


async def test_only_admins_invite(
    registry: RunningRegistry, registry_state: tuple[Path, str]
) -> None:
    state, _ = registry_state
    request = registry_pb2.CreateInvitationRequest(
        node_id=unique("it-x"), region_code="440100", display_name="X"
    )
    async with admin_channel(registry, state, "audrey") as channel:
        message = await refused(
            registry_pb2_grpc.EnrollmentServiceStub(channel).CreateInvitation(
                request, timeout=DEADLINE
            ),
            grpc.StatusCode.PERMISSION_DENIED,
        )
    assert "auditor" in message
    async with registry.public_channel() as channel:
        await refused(
            registry_pb2_grpc.EnrollmentServiceStub(channel).CreateInvitation(
                request, timeout=DEADLINE
            ),
            grpc.StatusCode.UNAUTHENTICATED,
        )
    request.region_code = "810000"
    async with admin_channel(registry, state) as channel:
        message = await refused(
            registry_pb2_grpc.EnrollmentServiceStub(channel).CreateInvitation(
                request, timeout=DEADLINE
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
    assert "region_code" in message


# ---------------------------------------------------------------- renew and revoke


async def test_renewal_replaces_the_certificate(
    registry: RunningRegistry, registry_state: tuple[Path, str]
) -> None:
    state, _ = registry_state
    root = await load_trust_root(registry)
    node = await enrolled_node(registry, state, "it-renew")
    async with node.channel(registry) as channel:
        renewed = await registry_pb2_grpc.EnrollmentServiceStub(channel).RenewCertificate(
            registry_pb2.RenewCertificateRequest(csr_pem=node.csr_pem()), timeout=DEADLINE
        )
    statement = bundle.verify_bundle(
        renewed.enrollment, root, registry_pb2.EnrollmentStatement
    ).document
    assert statement.action == registry_pb2.ENROLLMENT_ACTION_RENEWED
    old = node.certificate_pem
    node.certificate_pem = renewed.certificate_pem
    async with node.channel(registry) as channel:
        await registry_pb2_grpc.DirectoryServiceStub(channel).GetNode(
            registry_pb2.GetNodeRequest(node_id=node.node_id), timeout=DEADLINE
        )
    node.certificate_pem = old
    async with node.channel(registry) as channel:
        message = await refused(
            registry_pb2_grpc.DirectoryServiceStub(channel).GetNode(
                registry_pb2.GetNodeRequest(node_id=node.node_id), timeout=DEADLINE
            ),
            grpc.StatusCode.PERMISSION_DENIED,
        )
    assert "no longer current" in message


async def test_a_revoked_node_is_refused_everywhere(
    registry: RunningRegistry, registry_state: tuple[Path, str]
) -> None:
    state, _ = registry_state
    root = await load_trust_root(registry)
    node = await enrolled_node(registry, state, "it-revoke")
    async with node.channel(registry) as channel:
        await refused(
            registry_pb2_grpc.EnrollmentServiceStub(channel).RevokeNode(
                registry_pb2.RevokeNodeRequest(node_id=node.node_id), timeout=DEADLINE
            ),
            grpc.StatusCode.PERMISSION_DENIED,
        )
    async with admin_channel(registry, state) as channel:
        revoked = await registry_pb2_grpc.EnrollmentServiceStub(channel).RevokeNode(
            registry_pb2.RevokeNodeRequest(node_id=node.node_id, reason="key leaked"),
            timeout=DEADLINE,
        )
        shown = await registry_pb2_grpc.DirectoryServiceStub(channel).GetNode(
            registry_pb2.GetNodeRequest(node_id=node.node_id), timeout=DEADLINE
        )
    statement = bundle.verify_bundle(revoked.statement, root, registry_pb2.EnrollmentStatement)
    assert statement.document.action == registry_pb2.ENROLLMENT_ACTION_REVOKED
    assert shown.node.status == common_pb2.STATUS_REVOKED
    async with node.channel(registry) as channel:
        for call in (
            registry_pb2_grpc.DirectoryServiceStub(channel).GetNode(
                registry_pb2.GetNodeRequest(node_id=node.node_id), timeout=DEADLINE
            ),
            registry_pb2_grpc.MemberServiceStub(channel).ListMembers(
                registry_pb2.ListMembersRequest(), timeout=DEADLINE
            ),
            registry_pb2_grpc.EnrollmentServiceStub(channel).RenewCertificate(
                registry_pb2.RenewCertificateRequest(csr_pem=node.csr_pem()), timeout=DEADLINE
            ),
        ):
            message = await refused(call, grpc.StatusCode.PERMISSION_DENIED)
            assert f"node {node.node_id} is revoked" in message


# ---------------------------------------------------------------- members


async def test_nodes_act_only_for_their_own_members(
    registry: RunningRegistry, registry_state: tuple[Path, str]
) -> None:
    state, _ = registry_state
    gz = await enrolled_node(registry, state, "it-mgz")
    sh = await enrolled_node(registry, state, "it-msh", "310000")
    code = credit_code()
    async with gz.channel(registry) as channel:
        await registry_pb2_grpc.MemberServiceStub(channel).ReportMember(
            registry_pb2.ReportMemberRequest(
                member=registry_pb2.Member(credit_code=code, name="GZ Co", region_code="440100")
            ),
            timeout=DEADLINE,
        )
    async with sh.channel(registry) as channel:
        members = registry_pb2_grpc.MemberServiceStub(channel)
        message = await refused(
            members.ReportMember(
                registry_pb2.ReportMemberRequest(
                    member=registry_pb2.Member(
                        credit_code=credit_code("310000"),
                        name="SH Co",
                        region_code="310000",
                        node_id=gz.node_id,
                    )
                ),
                timeout=DEADLINE,
            ),
            grpc.StatusCode.PERMISSION_DENIED,
        )
        assert gz.node_id in message
        message = await refused(
            members.ReportMember(
                registry_pb2.ReportMemberRequest(
                    member=registry_pb2.Member(credit_code=code, name="Mine", region_code="440100")
                ),
                timeout=DEADLINE,
            ),
            grpc.StatusCode.PERMISSION_DENIED,
        )
        assert f"belongs to node {gz.node_id}" in message
        await refused(
            members.GetMember(registry_pb2.GetMemberRequest(credit_code=code), timeout=DEADLINE),
            grpc.StatusCode.PERMISSION_DENIED,
        )
        await refused(
            members.ListMembers(
                registry_pb2.ListMembersRequest(node_id=gz.node_id), timeout=DEADLINE
            ),
            grpc.StatusCode.PERMISSION_DENIED,
        )
        bad = code[:-1] + ("0" if code[-1] != "0" else "1")
        message = await refused(
            members.ReportMember(
                registry_pb2.ReportMemberRequest(
                    member=registry_pb2.Member(credit_code=bad, name="Typo", region_code="310000")
                ),
                timeout=DEADLINE,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert "member.credit_code" in message
    async with registry.public_channel() as channel:
        await refused(
            registry_pb2_grpc.MemberServiceStub(channel).ListMembers(
                registry_pb2.ListMembersRequest(), timeout=DEADLINE
            ),
            grpc.StatusCode.UNAUTHENTICATED,
        )
