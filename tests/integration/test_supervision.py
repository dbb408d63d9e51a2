"""SupervisionService end to end: a real registry process, enrolled nodes, mutual TLS.

A registry of its own (init, an admin, an auditor, and the provincial
supervisors of Guangdong, region 44, and Shanghai, region 31) with two nodes
enrolled by invitation (Guangzhou 440100, Shanghai 310000). Contracts are real
two-signature envelopes made with :mod:`provex.contracts` and the signing
keys the nodes enrolled with; every bundle is verified against the trust root.

Covered here: risk-assessment lapse suspends important datasets and an
acceptance reinstates them; ReportTrade's counting of personal information
per exporter and calendar year at the boundaries 99,999 / 100,000,
999,999 / 1,000,000 individuals and 0 / 1 / 9,999 / 10,000 sensitive ones;
the counter resetting on 1 January (Asia/Shanghai); important data in a
category the catalog assesses needing a permit, a revoked permit, a category
the catalog forbids refused even with a permit (ReportTrade and CheckExport),
a free-trade-zone negative-list exemption that never opens a forbidden
category; a frozen
member that cannot trade; a Guangdong supervisor refused on Shanghai's
members, reports, statistics and freezes while a national admin is not.
(Permit expiry one day before/after is pure logic: tests/unit/test_supervision.py.)
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import grpc
import pytest

from provex import bundle as bundles
from provex import contracts, trust
from provex.timestamps import to_timestamp
from provex.v1 import (
    common_pb2,
    dataset_pb2,
    market_pb2,
    registry_pb2,
    registry_pb2_grpc,
    supervision_pb2,
    supervision_pb2_grpc,
)
from tests.integration.conftest import RunningRegistry, run_cli, start_registry, stop_registry
from tests.integration.test_certificates import description, registration
from tests.integration.test_enrollment import Node, credit_code, enrolled_node, unique

DEADLINE = 20.0
SHANGHAI = ZoneInfo("Asia/Shanghai")
OFFICER = registry_pb2.SecurityOfficer(name="王芳", title="CSO", email="wang.fang@example.cn")
# Seed catalog: personal information, cross-border ALLOWED (only the thresholds apply).
PI_CATEGORY = "gov.courts.judgments_public"
# Seed catalog: IMPORTANT, cross-border FORBIDDEN.
IMPORTANT_CATEGORY = "geo.mapping"
# Seed catalog: GENERAL personal information, cross-border ASSESSMENT_REQUIRED; 10,000,000
# individuals make a dataset IMPORTANT (grading rule).
ORDERS_CATEGORY = "commerce.ecommerce.orders"
ORDERS_INDIVIDUALS = 10_000_000
# Seed catalog: sensitive personal information, ASSESSMENT_REQUIRED.
MEDICAL_CATEGORY = "health.medical.inpatient"
REGISTRY_ACTOR = "spiffe://provex.local/registry/national"


@dataclass
class Market:
    registry: RunningRegistry
    state: Path
    root: trust.TrustRoot
    gz: Node
    sh: Node

    def admin(self, name: str = "alice") -> grpc.aio.Channel:
        return self.registry.federation_channel(self.state / "admins" / name)

    def node(self, node: Node) -> grpc.aio.Channel:
        return node.channel(self.registry)


@pytest.fixture(scope="module")
async def market(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Market]:
    state = tmp_path_factory.mktemp("supervision") / "registry"
    init = run_cli("init", "--state", state, "--json")
    assert init.returncode == 0, init.stderr
    digest = json.loads(init.stdout)["trust_root_digest"]
    for name, *role in (
        ("alice", "--role", "admin"),
        ("audrey", "--role", "auditor"),
        ("gd-sup", "--role", "supervisor", "--region", "44"),
        ("sh-sup", "--role", "supervisor", "--region", "31"),
    ):
        added = run_cli("admin", "add", name, *role, "--state", state)
        assert added.returncode == 0, added.stderr
    envelope = (state / "trust" / "root-1.json").read_bytes()
    root = trust.load_trust_root(envelope, digest, datetime.now(UTC)).root
    running = await start_registry(state, digest)
    built = Market(running, state, root, Node.make("unused"), Node.make("unused"))
    try:
        built.gz = await enrolled_node(running, state, "sv-gz", "440100")
        built.sh = await enrolled_node(running, state, "sv-sh", "310000")
        yield built
    finally:
        assert await stop_registry(built.registry) == 0  # the test restarting it updates it


# ---------------------------------------------------------------- helpers


def supervision(channel: grpc.aio.Channel) -> supervision_pb2_grpc.SupervisionServiceStub:
    return supervision_pb2_grpc.SupervisionServiceStub(channel)


async def add_member(
    market: Market, node: Node, region: str, *, country: str = "CN", officer: bool = True
) -> str:
    code = credit_code(region)
    member = registry_pb2.Member(
        credit_code=code, name=f"Member {code[-6:]}", region_code=region, country=country
    )
    if officer:
        member.security_officer.CopyFrom(OFFICER)
    async with market.node(node) as channel:
        await registry_pb2_grpc.MemberServiceStub(channel).ReportMember(
            registry_pb2.ReportMemberRequest(member=member), timeout=DEADLINE
        )
    return code


async def add_dataset(
    market: Market,
    node: Node,
    holder: str,
    *,
    category: str = PI_CATEGORY,
    individuals: int = 0,
    sensitive: int = 0,
) -> str:
    dataset = description(secrets.randbelow(10**9), holder=holder, categories=[category])
    dataset.personal_info.individuals = individuals
    dataset.personal_info.sensitive_individuals = sensitive
    async with market.node(node) as channel:
        response = await registry_pb2_grpc.CertificateServiceStub(channel).RegisterDataset(
            registration(unique("sv-key"), dataset), timeout=DEADLINE
        )
    return bundles.verify_certificate(response.certificate, market.root).dataset_id


def signed_contract(
    seller_node: Node,
    buyer_node: Node,
    dataset_id: str,
    seller: str,
    buyer: str,
    *,
    country: str = "CN",
    fen: int = 100_000,
    agreed_at: datetime | None = None,
) -> bytes:
    terms = market_pb2.ContractTerms(
        contract_id=contracts.contract_id_for(buyer_node.node_id, unique("contract")),
        listing_id="L" + secrets.token_hex(8),
        dataset_id=dataset_id,
        certificate_version=1,
        content_digest=hashlib.sha256(dataset_id.encode()).digest(),
        seller=seller,
        seller_node=seller_node.node_id,
        buyer=buyer,
        buyer_node=buyer_node.node_id,
        buyer_country=country,
        price=common_pb2.Money(fen=fen),
        licence=market_pb2.LicenceTerms(purposes=["research"], term_days=365),
        purpose="research",
    )
    agreed = contracts.seller_sign(
        terms, seller_node.signing_key, agreed_at=agreed_at or datetime.now(UTC)
    )
    return contracts.buyer_countersign(
        agreed,
        terms,
        buyer_node.signing_key,
        seller_public_key=seller_node.signing_key.public_key(),
    )


async def report(market: Market, node: Node, envelope: bytes) -> common_pb2.Bundle:
    async with market.node(node) as channel:
        response = await supervision(channel).ReportTrade(
            supervision_pb2.ReportTradeRequest(
                trade=supervision_pb2.TradeRecord(contract=envelope)
            ),
            timeout=DEADLINE,
        )
    return response.record


async def trade(
    market: Market, dataset_id: str, seller: str, buyer: str, **options: object
) -> supervision_pb2.TradeRecord:
    envelope = signed_contract(market.gz, market.sh, dataset_id, seller, buyer, **options)  # type: ignore[arg-type]
    record = await report(market, market.gz, envelope)
    return bundles.verify_bundle(record, market.root, supervision_pb2.TradeRecord).document


async def refused(call: object, code: grpc.StatusCode = grpc.StatusCode.FAILED_PRECONDITION) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() is code, caught.value.details()
    details = caught.value.details() or ""
    assert details and "Traceback" not in details
    return details


async def file_contract(market: Market, exporter: str, recipient: str) -> None:
    async with market.node(market.gz) as channel:
        await supervision(channel).FileStandardContract(
            supervision_pb2.FileStandardContractRequest(
                filing=supervision_pb2.StandardContractFiling(
                    exporter=exporter,
                    recipient=recipient,
                    destination="HK",
                    contract_digest=hashlib.sha256(exporter.encode()).digest(),
                )
            ),
            timeout=DEADLINE,
        )


def at(text: str) -> datetime:
    """A wall-clock time in Shanghai ("2025-12-31T23:59:59")."""
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)


# ---------------------------------------------------------------- trades


async def test_a_domestic_trade_is_logged_once(market: Market) -> None:
    seller = await add_member(market, market.gz, "440100")
    buyer = await add_member(market, market.sh, "310000")
    dataset = await add_dataset(market, market.gz, seller, individuals=10)
    envelope = signed_contract(market.gz, market.sh, dataset, seller, buyer, fen=250_000)
    first = await report(market, market.gz, envelope)
    record = bundles.verify_bundle(first, market.root, supervision_pb2.TradeRecord).document
    assert record.seller == seller and record.buyer == buyer and record.price.fen == 250_000
    assert record.region_code == "440100" and record.category == PI_CATEGORY
    assert not record.HasField("export")
    again = await report(market, market.sh, envelope)  # the buyer's node, a retry
    assert again.envelope == first.envelope and again.log_index == first.log_index
    stranger = await enrolled_node(market.registry, market.state, "sv-x", "440300")
    assert "neither the seller's node nor the buyer's" in await refused(
        report(market, stranger, envelope), grpc.StatusCode.PERMISSION_DENIED
    )
    tampered = json.loads(envelope)
    tampered["signatures"] = tampered["signatures"][:1]
    await refused(report(market, market.gz, json.dumps(tampered).encode()))
    async with market.admin() as channel:
        rows = (
            await supervision(channel).GetStatistics(
                supervision_pb2.GetStatisticsRequest(category_prefix=PI_CATEGORY),
                timeout=DEADLINE,
            )
        ).rows
        points = (
            await supervision(channel).GetPriceIndex(
                supervision_pb2.GetPriceIndexRequest(category_prefix=PI_CATEGORY),
                timeout=DEADLINE,
            )
        ).points
    assert any(r.region_code == "440100" and r.trades >= 1 for r in rows)
    assert points and points[0].index == 100.0


async def test_personal_information_thresholds_are_counted_per_exporter(market: Market) -> None:
    exporter = await add_member(market, market.gz, "440100")
    abroad = await add_member(market, market.sh, "310000", country="HK")

    async def export(individuals: int, sensitive: int = 0) -> supervision_pb2.TradeRecord:
        dataset = await add_dataset(
            market, market.gz, exporter, individuals=individuals, sensitive=sensitive
        )
        return await trade(market, dataset, exporter, abroad, country="HK")

    first = await export(99_999)
    assert first.export.mechanism == supervision_pb2.EXPORT_MECHANISM_EXEMPT
    assert first.export.individuals == 99_999
    async with market.node(market.gz) as channel:
        check = await supervision(channel).CheckExport(
            supervision_pb2.CheckExportRequest(exporter=exporter, destination="HK", individuals=1),
            timeout=DEADLINE,
        )
    assert check.exported_individuals == 99_999
    assert check.mechanism == supervision_pb2.EXPORT_MECHANISM_STANDARD_CONTRACT
    # 100,000 this year: a standard contract is needed, and refused without one.
    details = await refused(export(1))
    assert "personal-info-standard-contract" in details and "100,000" in details
    await file_contract(market, exporter, abroad)
    second = await export(1)
    assert second.export.mechanism == supervision_pb2.EXPORT_MECHANISM_STANDARD_CONTRACT
    assert second.export.permit_id
    assert (await export(899_999)).export.mechanism == (
        supervision_pb2.EXPORT_MECHANISM_STANDARD_CONTRACT
    )  # 999,999
    assert "personal-info-assessment" in await refused(export(1))  # 1,000,000


async def test_sensitive_thresholds(market: Market) -> None:
    exporter = await add_member(market, market.gz, "440100")
    abroad = await add_member(market, market.sh, "310000", country="HK")

    async def export(sensitive: int) -> supervision_pb2.TradeRecord:
        dataset = await add_dataset(
            market, market.gz, exporter, individuals=sensitive, sensitive=sensitive
        )
        return await trade(market, dataset, exporter, abroad, country="HK")

    none = await export(0)
    assert none.export.mechanism == supervision_pb2.EXPORT_MECHANISM_EXEMPT
    assert "personal-info-standard-contract" in await refused(export(1))
    await file_contract(market, exporter, abroad)
    assert (await export(1)).export.mechanism == supervision_pb2.EXPORT_MECHANISM_STANDARD_CONTRACT
    # 1 + 9,998 = 9,999 sensitive: still a standard contract; one more makes 10,000.
    assert (await export(9_998)).export.sensitive_individuals == 9_998
    assert "personal-info-assessment" in await refused(export(1))


async def test_the_yearly_counter_resets_on_1_january(market: Market) -> None:
    exporter = await add_member(market, market.gz, "440100")
    abroad = await add_member(market, market.sh, "310000", country="MO")
    big = await add_dataset(market, market.gz, exporter, individuals=99_999)
    small = await add_dataset(market, market.gz, exporter, individuals=1)
    last_second = at("2025-12-31T23:59:59")
    first = await trade(market, big, exporter, abroad, country="MO", agreed_at=last_second)
    assert first.export.mechanism == supervision_pb2.EXPORT_MECHANISM_EXEMPT
    new_year = await trade(
        market, small, exporter, abroad, country="MO", agreed_at=at("2026-01-01T00:00:00")
    )
    assert new_year.export.mechanism == supervision_pb2.EXPORT_MECHANISM_EXEMPT  # 1 in 2026
    details = await refused(
        trade(market, small, exporter, abroad, country="MO", agreed_at=last_second)
    )
    assert "100,000" in details and "2025" in details  # 100,000 in 2025


async def test_important_data_needs_a_permit_until_it_is_revoked(market: Market) -> None:
    exporter = await add_member(market, market.gz, "440100")
    abroad = await add_member(market, market.sh, "310000", country="US")
    dataset = await add_dataset(
        market, market.gz, exporter, category=ORDERS_CATEGORY, individuals=ORDERS_INDIVIDUALS
    )
    details = await refused(trade(market, dataset, exporter, abroad, country="US"))
    for rule in ("important-data-permit", "catalog-assessment", "personal-info-assessment"):
        assert f"rule {rule}" in details, details
    async with market.node(market.gz) as channel:
        application = (
            await supervision(channel).ApplyExportPermit(
                supervision_pb2.ApplyExportPermitRequest(
                    idempotency_key="permit-1",
                    application=supervision_pb2.ExportPermit(
                        exporter=exporter,
                        dataset_ids=[dataset],
                        destination="US",
                        purpose="joint research",
                    ),
                ),
                timeout=DEADLINE,
            )
        ).application
    assert application.state == supervision_pb2.REVIEW_STATE_PENDING
    permit_id = application.permit_id
    async with market.admin("gd-sup") as channel:
        assert "national admins" in await refused(
            supervision(channel).ReviewExportPermit(
                supervision_pb2.ReviewExportPermitRequest(
                    permit_id=permit_id, approve=True, reason="ok"
                ),
                timeout=DEADLINE,
            ),
            grpc.StatusCode.PERMISSION_DENIED,
        )
    async with market.admin() as channel:
        reviewed = await supervision(channel).ReviewExportPermit(
            supervision_pb2.ReviewExportPermitRequest(
                permit_id=permit_id, approve=True, reason="assessment passed"
            ),
            timeout=DEADLINE,
        )
    permit = bundles.verify_bundle(
        reviewed.permit, market.root, supervision_pb2.ExportPermit
    ).document
    assert permit.state == supervision_pb2.REVIEW_STATE_ACCEPTED
    issued = permit.valid_from.ToDatetime(UTC).astimezone(SHANGHAI)
    assert permit.valid_until.ToDatetime(UTC).astimezone(SHANGHAI) == issued.replace(
        year=issued.year + 3
    )
    allowed = await trade(market, dataset, exporter, abroad, country="US")
    assert allowed.export.mechanism == supervision_pb2.EXPORT_MECHANISM_ASSESSMENT
    assert allowed.export.permit_id == permit_id
    async with market.admin() as channel:
        revoked = await supervision(channel).RevokeExportPermit(
            supervision_pb2.RevokeExportPermitRequest(permit_id=permit_id, reason="misuse"),
            timeout=DEADLINE,
        )
        got = await supervision(channel).GetExportPermit(
            supervision_pb2.GetExportPermitRequest(permit_id=permit_id), timeout=DEADLINE
        )
    statement = bundles.verify_bundle(revoked.statement, market.root, supervision_pb2.ExportPermit)
    assert statement.document.state == supervision_pb2.REVIEW_STATE_REVOKED
    assert got.state == supervision_pb2.REVIEW_STATE_REVOKED
    assert "is revoked" in await refused(trade(market, dataset, exporter, abroad, country="US"))


async def test_a_negative_list_exempts_what_it_does_not_list(market: Market) -> None:
    listed = run_cli("ftz", "set", "4403", "health", "--state", market.state)
    assert listed.returncode == 0, listed.stderr
    exporter = await add_member(market, market.gz, "440300")  # Shenzhen: the zone has a list
    abroad = await add_member(market, market.sh, "310000", country="HK")
    orders = await add_dataset(
        market, market.gz, exporter, category=ORDERS_CATEGORY, individuals=ORDERS_INDIVIDUALS
    )
    exempt = await trade(market, orders, exporter, abroad, country="HK")
    assert exempt.export.mechanism == supervision_pb2.EXPORT_MECHANISM_EXEMPT
    medical = await add_dataset(
        market, market.gz, exporter, category=MEDICAL_CATEGORY, individuals=5, sensitive=5
    )
    details = await refused(trade(market, medical, exporter, abroad, country="HK"))
    assert "ftz-negative-list" in details and "catalog-assessment" in details, details
    # Not on the list either, but the catalog forbids it: the list never opens it.
    mapping = await add_dataset(market, market.gz, exporter, category=IMPORTANT_CATEGORY)
    details = await refused(trade(market, mapping, exporter, abroad, country="HK"))
    assert "rule catalog-forbidden" in details and IMPORTANT_CATEGORY in details, details


async def test_a_forbidden_category_is_refused_even_with_a_permit(market: Market) -> None:
    exporter = await add_member(market, market.gz, "440100")
    abroad = await add_member(market, market.sh, "310000", country="HK")
    mapping = await add_dataset(market, market.gz, exporter, category=IMPORTANT_CATEGORY)
    orders = await add_dataset(market, market.gz, exporter, category=ORDERS_CATEGORY)
    async with market.node(market.gz) as channel:
        application = (
            await supervision(channel).ApplyExportPermit(
                supervision_pb2.ApplyExportPermitRequest(
                    idempotency_key=unique("permit-maps"),
                    application=supervision_pb2.ExportPermit(
                        exporter=exporter,
                        dataset_ids=[mapping],
                        destination="HK",
                        purpose="survey cooperation",
                    ),
                ),
                timeout=DEADLINE,
            )
        ).application
    async with market.admin() as channel:
        await supervision(channel).ReviewExportPermit(
            supervision_pb2.ReviewExportPermitRequest(
                permit_id=application.permit_id, approve=True, reason="assessed"
            ),
            timeout=DEADLINE,
        )
    details = await refused(trade(market, mapping, exporter, abroad, country="HK"))
    assert "rule catalog-forbidden" in details and IMPORTANT_CATEGORY in details, details
    assert "document(s) held" in details, details  # the permit was there, and changed nothing
    async with market.node(market.gz) as channel:
        checked = await supervision(channel).CheckExport(
            supervision_pb2.CheckExportRequest(
                exporter=exporter, destination="HK", dataset_ids=[mapping, orders]
            ),
            timeout=DEADLINE,
        )
        assessed = await supervision(channel).CheckExport(
            supervision_pb2.CheckExportRequest(
                exporter=exporter, destination="HK", dataset_ids=[orders]
            ),
            timeout=DEADLINE,
        )
    assert checked.mechanism == supervision_pb2.EXPORT_MECHANISM_FORBIDDEN
    assert "catalog-forbidden" in checked.explanation and "catalog-assessment" in (
        checked.explanation
    )
    assert assessed.mechanism == supervision_pb2.EXPORT_MECHANISM_ASSESSMENT
    assert "catalog-assessment" in assessed.explanation
    # On the mainland the catalog's cross-border rule has nothing to say.
    domestic = await add_member(market, market.sh, "310000")
    assert not (await trade(market, mapping, exporter, domestic)).HasField("export")


async def test_a_frozen_member_cannot_trade(market: Market) -> None:
    seller = await add_member(market, market.gz, "440100")
    buyer = await add_member(market, market.sh, "310000")
    dataset = await add_dataset(market, market.gz, seller)
    async with market.admin("sh-sup") as channel:
        assert "scoped to region 31" in await refused(
            supervision(channel).FreezeMember(
                supervision_pb2.FreezeMemberRequest(credit_code=seller, reason="fraud"),
                timeout=DEADLINE,
            ),
            grpc.StatusCode.PERMISSION_DENIED,
        )
    async with market.admin("gd-sup") as channel:
        frozen = await supervision(channel).FreezeMember(
            supervision_pb2.FreezeMemberRequest(credit_code=seller, reason="fraud inquiry"),
            timeout=DEADLINE,
        )
    statement = bundles.verify_bundle(frozen.statement, market.root, dataset_pb2.StatusStatement)
    assert statement.document.status == common_pb2.STATUS_SUSPENDED
    assert statement.document.actor.spiffe_id.endswith("/admin/gd-sup")
    assert "frozen" in await refused(trade(market, dataset, seller, buyer))
    async with market.admin() as channel:
        await supervision(channel).UnfreezeMember(
            supervision_pb2.UnfreezeMemberRequest(credit_code=seller, reason="cleared"),
            timeout=DEADLINE,
        )
        actions = (
            await supervision(channel).ListSupervisoryActions(
                supervision_pb2.ListSupervisoryActionsRequest(
                    after_log_index=frozen.statement.log_index - 1
                ),
                timeout=DEADLINE,
            )
        ).actions
    assert (await trade(market, dataset, seller, buyer)).seller == seller
    mine = [
        (a.action, a.actor.spiffe_id.rsplit("/", 1)[-1]) for a in actions if seller in a.subject
    ]
    assert mine == [("freeze-member", "gd-sup"), ("unfreeze-member", "alice")]


# ---------------------------------------------------------------- risk assessments


def assessment(holder: str, period_end: datetime) -> supervision_pb2.RiskAssessment:
    return supervision_pb2.RiskAssessment(
        holder=holder,
        period_start=to_timestamp(period_end - timedelta(days=365)),
        period_end=to_timestamp(period_end),
        data=[supervision_pb2.AssessedData(category=IMPORTANT_CATEGORY, records=1000)],
        processing="storage and analysis on premises",
        risks="leakage through contractors",
        measures="access control, audits, encryption at rest",
        report_digest=hashlib.sha256(holder.encode()).digest(),
    )


async def file(market: Market, node: Node, report_: supervision_pb2.RiskAssessment) -> str:
    async with market.node(node) as channel:
        response = await supervision(channel).FileRiskAssessment(
            supervision_pb2.FileRiskAssessmentRequest(
                idempotency_key=unique("risk"), assessment=report_
            ),
            timeout=DEADLINE,
        )
    assert response.assessment.state == supervision_pb2.REVIEW_STATE_PENDING
    return response.assessment.assessment_id


async def review(
    market: Market, admin: str, assessment_id: str, accept: bool = True
) -> supervision_pb2.ReviewRiskAssessmentResponse:
    async with market.admin(admin) as channel:
        return await supervision(channel).ReviewRiskAssessment(
            supervision_pb2.ReviewRiskAssessmentRequest(
                assessment_id=assessment_id, accept=accept, reason="reviewed"
            ),
            timeout=DEADLINE,
        )


async def dataset_status(market: Market, dataset_id: str) -> dataset_pb2.StatusStatement | None:
    async with market.admin("audrey") as channel:
        response = await registry_pb2_grpc.CertificateServiceStub(channel).GetStatus(
            registry_pb2.GetStatusRequest(dataset_id=dataset_id), timeout=DEADLINE
        )
    if not response.HasField("statement"):
        return None
    verified = bundles.verify_bundle(response.statement, market.root, dataset_pb2.StatusStatement)
    return verified.document


async def test_risk_lapse_suspends_and_acceptance_reinstates(market: Market) -> None:
    holder = await add_member(market, market.gz, "440100")
    important = await add_dataset(market, market.gz, holder, category=IMPORTANT_CATEGORY)
    general = await add_dataset(market, market.gz, holder, individuals=3)
    now = datetime.now(UTC)
    # A report whose year of currency is over: accepted, yet the holder is lapsed.
    stale = await file(market, market.gz, assessment(holder, now - timedelta(days=400)))
    decided = await review(market, "gd-sup", stale)
    decision = bundles.verify_bundle(
        decided.decision, market.root, supervision_pb2.RiskAssessmentDecision
    ).document
    assert decision.state == supervision_pb2.REVIEW_STATE_ACCEPTED
    assert decision.actor.spiffe_id.endswith("/admin/gd-sup")
    suspended = await dataset_status(market, important)
    assert suspended is not None and suspended.status == common_pb2.STATUS_SUSPENDED
    assert suspended.actor.spiffe_id == REGISTRY_ACTOR
    assert suspended.reason.startswith("risk-assessment-lapse")
    assert await dataset_status(market, general) is None  # general data is not affected
    current = await file(market, market.gz, assessment(holder, now - timedelta(days=30)))
    async with market.node(market.gz) as channel:
        overdue = await supervision(channel).ListRiskAssessments(
            supervision_pb2.ListRiskAssessmentsRequest(holder=holder, overdue_only=True),
            timeout=DEADLINE,
        )
    assert {a.assessment_id for a in overdue.assessments} == {stale, current}
    async with market.admin("sh-sup") as channel:
        assert "scoped to region 31" in await refused(
            supervision(channel).ReviewRiskAssessment(
                supervision_pb2.ReviewRiskAssessmentRequest(
                    assessment_id=current, accept=True, reason="ok"
                ),
                timeout=DEADLINE,
            ),
            grpc.StatusCode.PERMISSION_DENIED,
        )
    accepted = await review(market, "alice", current)
    assert accepted.assessment.state == supervision_pb2.REVIEW_STATE_ACCEPTED
    reinstated = await dataset_status(market, important)
    assert reinstated is not None and reinstated.status == common_pb2.STATUS_ACTIVE
    assert reinstated.actor.spiffe_id == REGISTRY_ACTOR
    assert "already reviewed" in await refused(review(market, "alice", current))
    async with market.admin("gd-sup") as channel:
        actions = (
            await supervision(channel).ListSupervisoryActions(
                supervision_pb2.ListSupervisoryActionsRequest(
                    after_log_index=decided.decision.log_index - 1
                ),
                timeout=DEADLINE,
            )
        ).actions
    kinds = [a.action for a in actions if holder in a.subject or important in a.subject]
    assert kinds == [
        "accept-risk-assessment",
        "auto-suspend-dataset",
        "accept-risk-assessment",
        "auto-reinstate-dataset",
    ]


# ---------------------------------------------------------------- provincial supervision


async def test_a_guangdong_supervisor_sees_guangdong_only(market: Market) -> None:
    shanghai = await add_member(market, market.sh, "310000")
    guangdong = await add_member(market, market.gz, "440100")
    await file(market, market.sh, assessment(shanghai, datetime.now(UTC) - timedelta(days=10)))
    shanghai_data = await add_dataset(market, market.sh, shanghai)
    await trade_from_shanghai(market, shanghai_data, shanghai, guangdong)
    async with market.admin("gd-sup") as channel:
        stub = supervision(channel)
        for call in (
            stub.GetStatistics(
                supervision_pb2.GetStatisticsRequest(region_prefix="31"), timeout=DEADLINE
            ),
            stub.ListRiskAssessments(
                supervision_pb2.ListRiskAssessmentsRequest(region_prefix="310000"),
                timeout=DEADLINE,
            ),
            stub.ListSupervisoryActions(
                supervision_pb2.ListSupervisoryActionsRequest(region_prefix="31"),
                timeout=DEADLINE,
            ),
            registry_pb2_grpc.MemberServiceStub(channel).GetMember(
                registry_pb2.GetMemberRequest(credit_code=shanghai), timeout=DEADLINE
            ),
            stub.FreezeMember(
                supervision_pb2.FreezeMemberRequest(credit_code=shanghai, reason="x"),
                timeout=DEADLINE,
            ),
            stub.CheckExport(
                supervision_pb2.CheckExportRequest(exporter=shanghai, destination="HK"),
                timeout=DEADLINE,
            ),
        ):
            assert "scoped to region 44" in await refused(call, grpc.StatusCode.PERMISSION_DENIED)
        rows = (
            await stub.GetStatistics(supervision_pb2.GetStatisticsRequest(), timeout=DEADLINE)
        ).rows
        reports = (
            await stub.ListRiskAssessments(
                supervision_pb2.ListRiskAssessmentsRequest(), timeout=DEADLINE
            )
        ).assessments
        members = (
            await registry_pb2_grpc.MemberServiceStub(channel).ListMembers(
                registry_pb2.ListMembersRequest(page_size=500), timeout=DEADLINE
            )
        ).members
    assert rows and all(r.region_code.startswith("44") for r in rows)
    assert reports and all(r.holder != shanghai for r in reports)
    assert members and all(m.region_code.startswith("44") for m in members)
    async with market.admin() as channel:
        stub = supervision(channel)
        national = (
            await stub.GetStatistics(
                supervision_pb2.GetStatisticsRequest(region_prefix="31"), timeout=DEADLINE
            )
        ).rows
        theirs = (
            await stub.ListRiskAssessments(
                supervision_pb2.ListRiskAssessmentsRequest(holder=shanghai), timeout=DEADLINE
            )
        ).assessments
        await registry_pb2_grpc.MemberServiceStub(channel).GetMember(
            registry_pb2.GetMemberRequest(credit_code=shanghai), timeout=DEADLINE
        )
    assert national and all(r.region_code == "310000" for r in national)
    assert len(theirs) == 1
    async with market.admin("audrey") as channel:
        assert "for admins and provincial supervisors" in await refused(
            supervision(channel).FreezeMember(
                supervision_pb2.FreezeMemberRequest(credit_code=shanghai, reason="x"),
                timeout=DEADLINE,
            ),
            grpc.StatusCode.PERMISSION_DENIED,
        )


async def trade_from_shanghai(market: Market, dataset: str, seller: str, buyer: str) -> None:
    envelope = signed_contract(market.sh, market.gz, dataset, seller, buyer)
    await report(market, market.sh, envelope)


def cli(market: Market, *args: str) -> tuple[int, str, str]:
    done = run_cli(*args, "--state", market.state)
    return done.returncode, done.stdout, done.stderr


async def test_the_admin_cli_shows_tables_and_json(market: Market) -> None:
    seller = await add_member(market, market.gz, "440100")
    buyer = await add_member(market, market.sh, "310000")
    dataset = await add_dataset(market, market.gz, seller)
    await trade(market, dataset, seller, buyer, fen=12_345)
    code, out, err = cli(market, "member", "freeze", seller, "--reason", "cli", "--as", "gd-sup")
    assert code == 0 and f"member {seller} frozen" in out, err
    code, out, err = cli(market, "actions", "--as", "gd-sup", "--json")
    assert code == 0, err
    actions = json.loads(out)["actions"]
    assert {"action": "freeze-member", "subject": f"member {seller}"}.items() <= actions[-1].items()
    code, out, err = cli(market, "actions", "--as", "alice", "--region", "44")
    assert code == 0 and out.splitlines()[0].split() == [
        "LOG",
        "WHEN",
        "ACTION",
        "SUBJECT",
        "ACTOR",
    ]
    assert f"member {seller}" in out
    code, out, err = cli(market, "member", "unfreeze", seller, "--reason", "cli", "--as", "alice")
    assert code == 0, err
    code, out, err = cli(market, "stats", "--as", "audrey", "--region", "4401")
    assert code == 0 and "MONTH" in out and "440100" in out and "310000" not in out, err
    code, out, err = cli(market, "price-index", "--as", "alice", "--json")
    assert code == 0 and json.loads(out)["points"], err
    code, out, err = cli(market, "risk", "list", "--as", "sh-sup", "--region", "44")
    assert code == 2 and "scoped to region 31" in err
    code, out, err = cli(
        market,
        "export",
        "check",
        "--as",
        "alice",
        "--exporter",
        seller,
        "--destination",
        "HK",
        "--individuals",
        "100000",
    )
    assert code == 0 and "mechanism: standard_contract" in out, err
    code, out, err = cli(market, "admin", "add", "nobody", "--role", "supervisor")
    assert code == 2 and "--region is required" in err
    for group in ("permit", "actions"):
        code, out, err = cli(market, group, "--help")
        assert code == 0 and "usage" in out, err


async def test_the_lapse_check_runs_at_start_up(market: Market) -> None:
    holder = await add_member(market, market.gz, "440100")
    important = await add_dataset(market, market.gz, holder, category=IMPORTANT_CATEGORY)
    assert await dataset_status(market, important) is None
    assert await stop_registry(market.registry) == 0
    market.registry = await start_registry(market.state, market.registry.trust_root_digest)
    suspended = await dataset_status(market, important)
    assert suspended is not None and suspended.status == common_pb2.STATUS_SUSPENDED
