"""The authorization matrix: every registry RPC called as every kind of caller.

One table row per RPC of ``TrustService``, ``EnrollmentService``,
``DirectoryService``, ``MemberService``, ``CatalogService``,
``CertificateService``, ``LogService`` and ``SupervisionService``. A row
builds a valid request for the RPC from the module's objects (node ids, member
credit codes, dataset ids) and states the outcome expected for each identity:

- ``anonymous-public``: the public port, server-only TLS, no client certificate;
- ``anonymous-federation``: the federation port without a client certificate
  (the mutual-TLS handshake fails, so every RPC answers UNAVAILABLE);
- ``node-a``: the right node, acting for itself and its own member and dataset;
- ``node-b``: another node, acting on node A's objects;
- ``auditor`` and ``admin``: admin certificates of the two roles;
- ``supervisor`` and ``supervisor-other``: provincial supervisors of Guangdong
  (region 44, node A's province) and of Shanghai (region 31, outside it);
- ``revoked-node``: a node revoked by an admin, acting on its own objects.

Rules (the issue): anonymous callers only read public data (trust root,
catalog, checkpoints, proofs, entries) or enroll with an invitation; nodes act
for themselves and their members; auditors read; admins act; supervisors read
like auditors and act like admins on supervision, inside their province only
(national export permits excepted); a revoked node is
refused everywhere on the federation port. Every refusal is PERMISSION_DENIED
or UNAUTHENTICATED with a clear message. OK means the call was authorized: it
succeeded, or failed with one of the domain codes the row allows (never
UNKNOWN or INTERNAL).

Mutating rows (renewal, revocation, status changes) run against fresh objects
made for the one case, so that no case changes what another one sees. RPCs of
the contract that the registry does not offer yet answer UNIMPLEMENTED; their
rows say so and will need their real expectations when they are implemented.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from provex import bundle as bundles
from provex import checkpoint as notes
from provex import contracts, trust
from provex.timestamps import to_timestamp
from provex.v1 import (
    common_pb2,
    market_pb2,
    registry_pb2,
    registry_pb2_grpc,
    supervision_pb2,
    supervision_pb2_grpc,
)
from tests.integration.conftest import RunningRegistry, run_cli
from tests.integration.test_certificates import description, registration
from tests.integration.test_enrollment import (
    Node,
    admin_channel,
    credit_code,
    enrolled_node,
    invite,
    unique,
)
from tests.integration.test_registry_server import load_trust_root

TIMEOUT = 10.0
REFUSAL_WINDOW = 0.3

ANONYMOUS_PUBLIC = "anonymous-public"
ANONYMOUS_FEDERATION = "anonymous-federation"
NODE_A = "node-a"
NODE_B = "node-b"
AUDITOR = "auditor"
ADMIN = "admin"
REVOKED = "revoked-node"
SUPERVISOR = "supervisor"
SUPERVISOR_OTHER = "supervisor-other"
IDENTITIES = (
    ANONYMOUS_PUBLIC,
    ANONYMOUS_FEDERATION,
    NODE_A,
    NODE_B,
    AUDITOR,
    ADMIN,
    SUPERVISOR,
    SUPERVISOR_OTHER,
    REVOKED,
)

OK = grpc.StatusCode.OK
DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
UNIMPLEMENTED = grpc.StatusCode.UNIMPLEMENTED
REFUSALS = frozenset({DENIED, UNAUTHENTICATED})
NEVER = frozenset({grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL})
CODES = {code.value[0]: code for code in grpc.StatusCode}

SERVICES = (
    "TrustService",
    "EnrollmentService",
    "DirectoryService",
    "MemberService",
    "CatalogService",
    "CertificateService",
    "LogService",
)
SUPERVISION = "SupervisionService"


# ---------------------------------------------------------------- the objects acted on


@dataclass
class Objects:
    """What a case acts on: a node, one of its members, one of its datasets."""

    node: Node
    member: str = ""
    dataset: str = ""


class Fresh(enum.Enum):
    """Whether a row needs objects of its own for each case (it changes them)."""

    NO = "shared objects"
    NODE = "a fresh node"
    DATASET = "a fresh node with a member and a dataset"


def member_message(code: str, region: str) -> registry_pb2.Member:
    """A member that may hold important data (it names a security officer)."""
    return registry_pb2.Member(
        credit_code=code,
        name=f"Matrix member {code[-6:]}",
        region_code=region,
        security_officer=registry_pb2.SecurityOfficer(
            name="王芳", title="CSO", email="wang.fang@example.cn"
        ),
    )


async def make_objects(
    registry: RunningRegistry,
    state: Path,
    root: trust.TrustRoot,
    prefix: str,
    region: str,
    *,
    fresh: Fresh = Fresh.DATASET,
) -> Objects:
    """Enroll a node; with Fresh.DATASET also report a member and register a dataset of it."""
    node = await enrolled_node(registry, state, prefix, region)
    objects = Objects(node)
    if fresh is not Fresh.DATASET:
        return objects
    objects.member = credit_code(region)
    async with node.channel(registry) as channel:
        await registry_pb2_grpc.MemberServiceStub(channel).ReportMember(
            registry_pb2.ReportMemberRequest(member=member_message(objects.member, region)),
            timeout=TIMEOUT,
        )
        registered = await registry_pb2_grpc.CertificateServiceStub(channel).RegisterDataset(
            registration(unique("az-key"), description(1, holder=objects.member)),
            timeout=TIMEOUT,
        )
    objects.dataset = bundles.verify_certificate(registered.certificate, root).dataset_id
    return objects


@dataclass
class World:
    """The module's registry, its shared objects and one channel per identity."""

    registry: RunningRegistry
    state: Path
    root: trust.TrustRoot
    a: Objects
    b: Objects
    revoked: Objects
    channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)

    def target(self, identity: str) -> Objects:
        """A revoked node acts on its own objects; everyone else on node A's."""
        return self.revoked if identity == REVOKED else self.a


@pytest.fixture(scope="module")
async def world(
    registry: RunningRegistry, registry_state: tuple[Path, str]
) -> AsyncIterator[World]:
    state, _ = registry_state
    root = await load_trust_root(registry)
    a = await make_objects(registry, state, root, "az-a", "440100")
    b = await make_objects(registry, state, root, "az-b", "310000")
    revoked = await make_objects(registry, state, root, "az-r", "440300")
    supervisors = {SUPERVISOR: (unique("az-gd"), "44"), SUPERVISOR_OTHER: (unique("az-sh"), "31")}
    for name, region in supervisors.values():
        added = run_cli(
            "admin", "add", name, "--role", "supervisor", "--region", region, "--state", state
        )
        assert added.returncode == 0, added.stderr
    async with admin_channel(registry, state) as channel:
        await registry_pb2_grpc.EnrollmentServiceStub(channel).RevokeNode(
            registry_pb2.RevokeNodeRequest(node_id=revoked.node.node_id, reason="key leaked"),
            timeout=TIMEOUT,
        )
    built = World(registry, state, root, a, b, revoked)
    built.channels = {
        ANONYMOUS_PUBLIC: registry.public_channel(),
        ANONYMOUS_FEDERATION: registry.federation_channel(),
        NODE_A: a.node.channel(registry),
        NODE_B: b.node.channel(registry),
        AUDITOR: admin_channel(registry, state, "audrey"),
        ADMIN: admin_channel(registry, state, "alice"),
        SUPERVISOR: admin_channel(registry, state, supervisors[SUPERVISOR][0]),
        SUPERVISOR_OTHER: admin_channel(registry, state, supervisors[SUPERVISOR_OTHER][0]),
        REVOKED: revoked.node.channel(registry),
    }
    try:
        yield built
    finally:
        for channel in built.channels.values():
            await channel.close()


# ---------------------------------------------------------------- the table


class Shape(enum.Enum):
    UNARY = "unary"
    SERVER_STREAM = "server streaming"
    BIDI = "bidirectional streaming"


Builder = Callable[[World, Objects], Awaitable[Message]]
Expected = Mapping[str, grpc.StatusCode]


def outcomes(
    anonymous: grpc.StatusCode,
    node_a: grpc.StatusCode,
    node_b: grpc.StatusCode,
    auditor: grpc.StatusCode,
    admin: grpc.StatusCode,
    *,
    revoked: grpc.StatusCode = DENIED,
    supervisor: grpc.StatusCode | None = None,
    supervisor_other: grpc.StatusCode | None = None,
) -> Expected:
    """One row's expectations; the federation port without a certificate never gets a call.

    Supervisors answer like auditors unless the row says otherwise (``supervisor``
    acts in node A's province, ``supervisor_other`` outside it).
    """
    return {
        ANONYMOUS_PUBLIC: anonymous,
        ANONYMOUS_FEDERATION: UNAVAILABLE,
        NODE_A: node_a,
        NODE_B: node_b,
        AUDITOR: auditor,
        ADMIN: admin,
        SUPERVISOR: auditor if supervisor is None else supervisor,
        SUPERVISOR_OTHER: auditor if supervisor_other is None else supervisor_other,
        REVOKED: revoked,
    }


PUBLIC_READ = outcomes(OK, OK, OK, OK, OK)
FEDERATION_READ = outcomes(UNAUTHENTICATED, OK, OK, OK, OK)
OWN_READ = outcomes(UNAUTHENTICATED, OK, DENIED, OK, OK)
# A member's own region decides: the supervisor of another province is refused.
OWN_READ_IN_SCOPE = outcomes(UNAUTHENTICATED, OK, DENIED, OK, OK, supervisor_other=DENIED)
NODE_FOR_ITSELF = outcomes(UNAUTHENTICATED, OK, DENIED, DENIED, DENIED)
ADMIN_ACTS = outcomes(UNAUTHENTICATED, DENIED, DENIED, DENIED, OK)
NOT_OFFERED = outcomes(UNIMPLEMENTED, UNIMPLEMENTED, UNIMPLEMENTED, UNIMPLEMENTED, UNIMPLEMENTED)


@dataclass(frozen=True)
class Rpc:
    """One row: an RPC, how to build its request, and the expected outcome per identity."""

    service: str
    method: str
    build: Builder
    expected: Expected
    shape: Shape = Shape.UNARY
    fresh: Fresh = Fresh.NO
    # Codes an authorized call may still answer for reasons of the domain.
    domain: frozenset[grpc.StatusCode] = frozenset()

    @property
    def name(self) -> str:
        return f"{self.service}.{self.method}"


def fixed(message: Message) -> Builder:
    async def build(world: World, target: Objects) -> Message:
        return message

    return build


async def enroll_request(world: World, target: Objects) -> Message:
    node = Node.make("az-enr")
    return node.enroll_request(await invite(world.registry, world.state, node.node_id))


async def invitation_request(world: World, target: Objects) -> Message:
    return registry_pb2.CreateInvitationRequest(
        node_id=unique("az-inv"), region_code="440100", display_name="Matrix invitee"
    )


async def renewal_request(world: World, target: Objects) -> Message:
    # A CSR naming the target node: node B asking for a certificate of node A is refused.
    return registry_pb2.RenewCertificateRequest(csr_pem=target.node.csr_pem())


async def revocation_request(world: World, target: Objects) -> Message:
    return registry_pb2.RevokeNodeRequest(node_id=target.node.node_id, reason="matrix")


async def get_node_request(world: World, target: Objects) -> Message:
    return registry_pb2.GetNodeRequest(node_id=target.node.node_id)


async def report_member_request(world: World, target: Objects) -> Message:
    region = target.member[2:8]
    return registry_pb2.ReportMemberRequest(member=member_message(target.member, region))


async def get_member_request(world: World, target: Objects) -> Message:
    return registry_pb2.GetMemberRequest(credit_code=target.member)


async def list_members_request(world: World, target: Objects) -> Message:
    return registry_pb2.ListMembersRequest(node_id=target.node.node_id)


async def new_version_request(world: World, target: Objects) -> registry_pb2.RegisterDatasetRequest:
    # A new version of the target's dataset, held by the target's member.
    number = secrets.randbelow(10**9)
    return registration(unique("az-key"), description(number, holder=target.member), target.dataset)


async def bulk_request(world: World, target: Objects) -> Message:
    # One chunk holding one registration.
    return registry_pb2.RegisterDatasetsRequest(
        registrations=[await new_version_request(world, target)]
    )


async def certificate_request(world: World, target: Objects) -> Message:
    return registry_pb2.GetCertificateRequest(dataset_id=target.dataset)


async def status_request(world: World, target: Objects) -> Message:
    return registry_pb2.GetStatusRequest(dataset_id=target.dataset)


async def cosignature_request(world: World, target: Objects) -> Message:
    # The latest checkpoint cosigned by the target node: node B submitting node A's
    # cosignature is refused, node A's own is accepted.
    async with world.registry.public_channel() as channel:
        note = (
            await registry_pb2_grpc.LogServiceStub(channel).GetCheckpoint(
                registry_pb2.GetCheckpointRequest(), timeout=TIMEOUT
            )
        ).checkpoint
    cosigner = notes.CosignatureSigner(target.node.node_id, target.node.signing_key)
    return registry_pb2.SubmitCosignatureRequest(checkpoint=notes.add_signature(note, cosigner))


async def set_status_request(world: World, target: Objects) -> Message:
    return registry_pb2.SetStatusRequest(
        dataset_id=target.dataset, status=common_pb2.STATUS_SUSPENDED, reason="matrix"
    )


def _supervision(world: World, identity: str) -> supervision_pb2_grpc.SupervisionServiceStub:
    return supervision_pb2_grpc.SupervisionServiceStub(world.channels[identity])


def risk_report(holder: str) -> supervision_pb2.RiskAssessment:
    end = datetime.now(UTC) - timedelta(days=30)
    return supervision_pb2.RiskAssessment(
        holder=holder,
        period_start=to_timestamp(end - timedelta(days=365)),
        period_end=to_timestamp(end),
        data=[supervision_pb2.AssessedData(category="transport", records=10)],
        processing="analysis",
        risks="leakage",
        measures="encryption",
        report_digest=bytes(32),
    )


async def file_risk_request(world: World, target: Objects) -> Message:
    return supervision_pb2.FileRiskAssessmentRequest(
        idempotency_key=unique("az-risk"), assessment=risk_report(target.member)
    )


async def review_risk_request(world: World, target: Objects) -> Message:
    # A fresh pending report of node A's member (reviewing changes it).
    filed = await _supervision(world, NODE_A).FileRiskAssessment(
        await file_risk_request(world, world.a), timeout=TIMEOUT
    )
    return supervision_pb2.ReviewRiskAssessmentRequest(
        assessment_id=filed.assessment.assessment_id, accept=True, reason="matrix"
    )


async def list_risk_request(world: World, target: Objects) -> Message:
    return supervision_pb2.ListRiskAssessmentsRequest(
        holder=target.member, region_prefix=target.member[2:8]
    )


def permit_application(target: Objects) -> supervision_pb2.ExportPermit:
    return supervision_pb2.ExportPermit(
        exporter=target.member, dataset_ids=[target.dataset], destination="HK", purpose="matrix"
    )


async def apply_permit_request(world: World, target: Objects) -> Message:
    return supervision_pb2.ApplyExportPermitRequest(
        idempotency_key=unique("az-permit"), application=permit_application(target)
    )


async def _pending_permit(world: World) -> str:
    applied = await _supervision(world, NODE_A).ApplyExportPermit(
        await apply_permit_request(world, world.a), timeout=TIMEOUT
    )
    return applied.application.permit_id


async def review_permit_request(world: World, target: Objects) -> Message:
    return supervision_pb2.ReviewExportPermitRequest(
        permit_id=await _pending_permit(world), approve=True, reason="matrix"
    )


async def revoke_permit_request(world: World, target: Objects) -> Message:
    permit_id = await _pending_permit(world)
    await _supervision(world, ADMIN).ReviewExportPermit(
        supervision_pb2.ReviewExportPermitRequest(permit_id=permit_id, approve=True, reason="m"),
        timeout=TIMEOUT,
    )
    return supervision_pb2.RevokeExportPermitRequest(permit_id=permit_id, reason="matrix")


async def get_permit_request(world: World, target: Objects) -> Message:
    return supervision_pb2.GetExportPermitRequest(permit_id=await _pending_permit(world))


async def filing_request(world: World, target: Objects) -> Message:
    return supervision_pb2.FileStandardContractRequest(
        filing=supervision_pb2.StandardContractFiling(
            exporter=target.member,
            recipient="Matrix Ltd",
            destination="HK",
            contract_digest=bytes(32),
        )
    )


async def check_export_request(world: World, target: Objects) -> Message:
    return supervision_pb2.CheckExportRequest(
        exporter=target.member, destination="HK", dataset_ids=[target.dataset], individuals=1
    )


async def report_trade_request(world: World, target: Objects) -> Message:
    # A domestic trade: node A's member sells its dataset to node B's member.
    seller, buyer = world.a, world.b
    terms = market_pb2.ContractTerms(
        contract_id=contracts.contract_id_for(buyer.node.node_id, unique("az-contract")),
        listing_id="L" + secrets.token_hex(8),
        dataset_id=seller.dataset,
        certificate_version=1,
        content_digest=bytes(32),
        seller=seller.member,
        seller_node=seller.node.node_id,
        buyer=buyer.member,
        buyer_node=buyer.node.node_id,
        buyer_country="CN",
        price=common_pb2.Money(fen=100),
        licence=market_pb2.LicenceTerms(purposes=["matrix"], term_days=1),
        purpose="matrix",
    )
    agreed = contracts.seller_sign(terms, seller.node.signing_key, agreed_at=datetime.now(UTC))
    envelope = contracts.buyer_countersign(
        agreed,
        terms,
        buyer.node.signing_key,
        seller_public_key=seller.node.signing_key.public_key(),
    )
    return supervision_pb2.ReportTradeRequest(trade=supervision_pb2.TradeRecord(contract=envelope))


async def freeze_request(world: World, target: Objects) -> Message:
    return supervision_pb2.FreezeMemberRequest(credit_code=target.member, reason="matrix")


async def unfreeze_request(world: World, target: Objects) -> Message:
    await _supervision(world, ADMIN).FreezeMember(
        await freeze_request(world, target), timeout=TIMEOUT
    )
    return supervision_pb2.UnfreezeMemberRequest(credit_code=target.member, reason="matrix")


# Supervision: admins act, supervisors act in node A's province (44) and not outside it.
SUPERVISE = outcomes(
    UNAUTHENTICATED, DENIED, DENIED, DENIED, OK, supervisor=OK, supervisor_other=DENIED
)
OVERSEE = outcomes(UNAUTHENTICATED, DENIED, DENIED, OK, OK, supervisor=OK, supervisor_other=DENIED)
NODE_OR_OVERSEER = outcomes(
    UNAUTHENTICATED, OK, DENIED, OK, OK, supervisor=OK, supervisor_other=DENIED
)
NATIONAL = outcomes(UNAUTHENTICATED, DENIED, DENIED, DENIED, OK)

SUPERVISION_ROWS: tuple[Rpc, ...] = (
    Rpc(SUPERVISION, "FileRiskAssessment", file_risk_request, NODE_FOR_ITSELF),
    Rpc(SUPERVISION, "ReviewRiskAssessment", review_risk_request, SUPERVISE),
    Rpc(
        SUPERVISION,
        "ListRiskAssessments",
        list_risk_request,
        outcomes(UNAUTHENTICATED, OK, OK, OK, OK, supervisor=OK, supervisor_other=DENIED),
    ),
    Rpc(
        SUPERVISION,
        "ApplyExportPermit",
        apply_permit_request,
        outcomes(UNAUTHENTICATED, OK, DENIED, DENIED, OK),
    ),
    Rpc(SUPERVISION, "ReviewExportPermit", review_permit_request, NATIONAL),
    Rpc(SUPERVISION, "RevokeExportPermit", revoke_permit_request, NATIONAL),
    Rpc(SUPERVISION, "GetExportPermit", get_permit_request, NODE_OR_OVERSEER),
    Rpc(SUPERVISION, "FileStandardContract", filing_request, NODE_FOR_ITSELF),
    Rpc(SUPERVISION, "CheckExport", check_export_request, NODE_OR_OVERSEER),
    # Either party's node reports: node B is the buyer's node here.
    Rpc(
        SUPERVISION,
        "ReportTrade",
        report_trade_request,
        outcomes(UNAUTHENTICATED, OK, OK, DENIED, DENIED),
    ),
    Rpc(
        SUPERVISION,
        "GetStatistics",
        fixed(supervision_pb2.GetStatisticsRequest(region_prefix="44")),
        OVERSEE,
    ),
    Rpc(
        SUPERVISION,
        "GetPriceIndex",
        fixed(supervision_pb2.GetPriceIndexRequest()),
        FEDERATION_READ,
    ),
    Rpc(SUPERVISION, "FreezeMember", freeze_request, SUPERVISE, fresh=Fresh.DATASET),
    Rpc(SUPERVISION, "UnfreezeMember", unfreeze_request, SUPERVISE, fresh=Fresh.DATASET),
    Rpc(
        SUPERVISION,
        "ListSupervisoryActions",
        fixed(supervision_pb2.ListSupervisoryActionsRequest(region_prefix="44")),
        OVERSEE,
    ),
)

MATRIX: tuple[Rpc, ...] = (
    Rpc("TrustService", "GetTrustRoot", fixed(registry_pb2.GetTrustRootRequest()), PUBLIC_READ),
    # Enrollment: the invitation is the credential, the TLS identity is not consulted
    # (except that a revoked node is refused on the federation port).
    Rpc("EnrollmentService", "CreateInvitation", invitation_request, ADMIN_ACTS),
    Rpc("EnrollmentService", "Enroll", enroll_request, outcomes(OK, OK, OK, OK, OK)),
    Rpc(
        "EnrollmentService", "RenewCertificate", renewal_request, NODE_FOR_ITSELF, fresh=Fresh.NODE
    ),
    Rpc("EnrollmentService", "RevokeNode", revocation_request, ADMIN_ACTS, fresh=Fresh.NODE),
    Rpc(
        "DirectoryService",
        "ListNodes",
        fixed(registry_pb2.ListNodesRequest(region_prefix="44")),
        FEDERATION_READ,
    ),
    Rpc("DirectoryService", "GetNode", get_node_request, FEDERATION_READ),
    # No node id in the request: node B can only move its own endpoint.
    Rpc(
        "DirectoryService",
        "UpdateNodeEndpoint",
        fixed(registry_pb2.UpdateNodeEndpointRequest(peer_endpoint="matrix.example:7600")),
        outcomes(UNAUTHENTICATED, OK, OK, DENIED, DENIED),
    ),
    Rpc("MemberService", "ReportMember", report_member_request, NODE_FOR_ITSELF),
    Rpc("MemberService", "GetMember", get_member_request, OWN_READ_IN_SCOPE),
    Rpc("MemberService", "ListMembers", list_members_request, OWN_READ),
    Rpc("CatalogService", "GetCatalog", fixed(registry_pb2.GetCatalogRequest()), PUBLIC_READ),
    Rpc(
        "CatalogService",
        "ListCatalogChanges",
        fixed(registry_pb2.ListCatalogChangesRequest(since_version=0)),
        PUBLIC_READ,
    ),
    Rpc(
        "CatalogService",
        "ProposeExtension",
        fixed(registry_pb2.ProposeExtensionRequest(justification="matrix")),
        NOT_OFFERED,
    ),
    Rpc("CatalogService", "ListProposals", fixed(registry_pb2.ListProposalsRequest()), NOT_OFFERED),
    Rpc(
        "CatalogService",
        "ReviewProposal",
        fixed(registry_pb2.ReviewProposalRequest(proposal_id="p-none", reason="matrix")),
        NOT_OFFERED,
    ),
    Rpc(
        "CatalogService", "PublishCatalog", fixed(registry_pb2.PublishCatalogRequest()), NOT_OFFERED
    ),
    Rpc("CertificateService", "RegisterDataset", new_version_request, NODE_FOR_ITSELF),
    Rpc("CertificateService", "RegisterDatasets", bulk_request, NODE_FOR_ITSELF, shape=Shape.BIDI),
    Rpc("CertificateService", "GetCertificate", certificate_request, FEDERATION_READ),
    Rpc("CertificateService", "GetStatus", status_request, FEDERATION_READ),
    Rpc("CertificateService", "SetStatus", set_status_request, ADMIN_ACTS, fresh=Fresh.DATASET),
    Rpc(
        "CertificateService",
        "WatchStatus",
        fixed(registry_pb2.WatchStatusRequest(after_log_index=0, follow=False)),
        FEDERATION_READ,
        shape=Shape.SERVER_STREAM,
    ),
    Rpc("LogService", "GetCheckpoint", fixed(registry_pb2.GetCheckpointRequest()), PUBLIC_READ),
    Rpc(
        "LogService",
        "GetInclusionProof",
        fixed(registry_pb2.GetInclusionProofRequest(log_index=0)),
        PUBLIC_READ,
    ),
    Rpc(
        "LogService",
        "GetConsistencyProof",
        fixed(registry_pb2.GetConsistencyProofRequest(first_size=1)),
        PUBLIC_READ,
    ),
    Rpc(
        "LogService",
        "GetEntries",
        fixed(registry_pb2.GetEntriesRequest(start=0, end=1)),
        PUBLIC_READ,
    ),
    Rpc("LogService", "SubmitCosignature", cosignature_request, NODE_FOR_ITSELF),
    *SUPERVISION_ROWS,
)

CASES = [
    pytest.param(rpc, identity, id=f"{rpc.name}-{identity}")
    for rpc in MATRIX
    for identity in IDENTITIES
]


# ---------------------------------------------------------------- calling


@dataclass(frozen=True)
class Answer:
    code: grpc.StatusCode
    details: str


async def _sent_unless_refused(message: Message, finished: asyncio.Event) -> AsyncIterator[Message]:
    """Send ``message`` once the server had time to refuse the stream without reading it.

    A grpc.aio client writing while the server ends the call reports INTERNAL
    ("Internal error from Core", a failed SendMessageOperation) instead of the
    server's status; waiting for a refusal first keeps that client race out.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(REFUSAL_WINDOW):
            await finished.wait()
    if not finished.is_set():
        yield message


async def attempt(rpc: Rpc, channel: grpc.aio.Channel, request: Message) -> Answer:
    """Call ``rpc`` once; for streams, the first response (or the end, or the error)."""
    module = supervision_pb2_grpc if rpc.service == SUPERVISION else registry_pb2_grpc
    stub = getattr(module, f"{rpc.service}Stub")(channel)
    method = getattr(stub, rpc.method)
    try:
        if rpc.shape is Shape.UNARY:
            await method(request, timeout=TIMEOUT)
            return Answer(OK, "")
        finished = asyncio.Event()
        if rpc.shape is Shape.BIDI:
            call: Any = method(_sent_unless_refused(request, finished), timeout=TIMEOUT)
        else:
            call = method(request, timeout=TIMEOUT)
        call.add_done_callback(lambda _: finished.set())
        try:
            first = await call.read()
            if first is grpc.aio.EOF:
                code = await call.code()
                return Answer(code, await call.details() or "")
            if rpc.shape is Shape.BIDI:
                # The bulk stream refuses one registration in-band and goes on.
                (result,) = first.results
                if result.HasField("error"):
                    return Answer(CODES[result.error.code], result.error.message)
            return Answer(OK, "")
        finally:
            call.cancel()
    except grpc.aio.AioRpcError as error:
        if error.code() in NEVER:
            return Answer(error.code(), f"{error.details()} ({error.debug_error_string()})")
        return Answer(error.code(), error.details() or "")


@contextlib.asynccontextmanager
async def caller_channel(
    world: World, identity: str, target: Objects
) -> AsyncIterator[grpc.aio.Channel]:
    """The identity's shared channel; for node A acting on fresh objects, that node's own."""
    if identity == NODE_A and target is not world.a:
        async with target.node.channel(world.registry) as channel:
            yield channel
    else:
        yield world.channels[identity]


def describe(rpc: Rpc, identity: str, answer: Answer) -> str:
    return f"{rpc.name} as {identity}: {answer.code.name} {answer.details!r}"


# ---------------------------------------------------------------- the tests


def test_the_matrix_covers_every_rpc() -> None:
    rows = {rpc.name for rpc in MATRIX}
    assert len(rows) == len(MATRIX)
    contract = {
        f"{service}.{method.name}"
        for service in SERVICES
        for method in registry_pb2.DESCRIPTOR.services_by_name[service].methods
    } | {
        f"{SUPERVISION}.{method.name}"
        for method in supervision_pb2.DESCRIPTOR.services_by_name[SUPERVISION].methods
    }
    assert rows == contract
    allowed = {OK, UNAVAILABLE, UNIMPLEMENTED, *REFUSALS}
    for rpc in MATRIX:
        assert set(rpc.expected) == set(IDENTITIES), rpc.name
        assert set(rpc.expected.values()) <= allowed, rpc.name
        assert rpc.expected[ANONYMOUS_FEDERATION] is UNAVAILABLE, rpc.name
        assert rpc.expected[REVOKED] is DENIED, rpc.name


@pytest.mark.parametrize("rpc, identity", CASES)
async def test_authorization(world: World, rpc: Rpc, identity: str) -> None:
    target = world.target(identity)
    if rpc.fresh is not Fresh.NO and identity != REVOKED:
        target = await make_objects(
            world.registry, world.state, world.root, "az-f", "440100", fresh=rpc.fresh
        )
    request = await rpc.build(world, target)
    async with caller_channel(world, identity, target) as channel:
        answer = await attempt(rpc, channel, request)
    expected = rpc.expected[identity]
    what = describe(rpc, identity, answer)
    assert answer.code not in NEVER, what
    if expected is OK:
        assert answer.code is OK or answer.code in rpc.domain, f"expected OK; {what}"
        if answer.code is not OK:
            assert answer.details and "Traceback" not in answer.details, what
        return
    assert answer.code is expected, f"expected {expected.name}; {what}"
    assert answer.details, f"empty message; {what}"
    assert "Traceback" not in answer.details, what
    if identity == REVOKED:
        assert f"node {world.revoked.node.node_id} is revoked" in answer.details, what
