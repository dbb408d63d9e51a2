"""Tests of registry.supervision without gRPC: the pure rules (tables) and the book itself.

The pure part: when an accepted risk assessment stops being current, months
and medians of the statistics, the price index, the customs view of logged
permits and filings (a permit one day before and one day after its expiry, a
revoked permit, a negative-list exemption: the boundaries that are pure
logic), the action names, report validation, and the supervisor scope rules
of :mod:`registry.authz`.

The book: a full registry state in a temporary directory with a real
Sequencer, Publisher and Issuance, and an injected clock, to show that a
report accepted for 2025 keeps its holder current through 2026 and lapses on
1 January 2027 (Asia/Shanghai), suspending exactly the important datasets,
and that an acceptance reinstates only what the lapse suspended.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from provex import bundle as bundles
from provex import customs, trust
from provex.errors import InvalidArgument, PermissionDenied
from provex.grading import Grade
from provex.identity import SpiffeId
from provex.ids import CreditCode
from provex.timestamps import to_timestamp
from provex.v1 import common_pb2, dataset_pb2, registry_pb2, supervision_pb2
from registry.authz import Caller, Role, in_scope, require_in_scope, scope_prefix
from registry.config import RegistryConfig
from registry.db import Database
from registry.issuance import Issuance, SubjectKind
from registry.publication import Publisher
from registry.schema import MIGRATIONS
from registry.seed_catalog import national_catalog
from registry.setup import initialize
from registry.state import StateLayout, load_keys
from registry.supervision import (
    Supervision,
    check_month,
    filing_document,
    is_current,
    median_fen,
    month_of,
    normalize_assessment,
    permit_document,
    price_index,
    risk_valid_until,
    statement_action,
    trade_date,
)
from registry.transparency import LogReader, Sequencer

SHANGHAI = ZoneInfo("Asia/Shanghai")
TD = "provex.local"
EXPORTER = CreditCode.from_parts("9", "1", "440100", "MA5R0001").code
RECIPIENT = "Harbour Analytics Ltd"


def shanghai(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)


# ---------------------------------------------------------------- risk validity


@pytest.mark.parametrize(
    "period_end, valid_until",
    [
        ("2025-12-31T23:59:59", "2026-12-31T23:59:59"),
        ("2026-01-01T00:00:00", "2027-01-01T00:00:00"),
        ("2024-02-29T12:00:00", "2025-02-28T12:00:00"),  # no 29 February in 2025
    ],
)
def test_an_accepted_report_is_current_one_calendar_year_after_its_period(
    period_end: str, valid_until: str
) -> None:
    assert risk_valid_until(shanghai(period_end)) == shanghai(valid_until)


UNTIL = shanghai("2026-12-31T23:59:59")


@pytest.mark.parametrize(
    "state, valid_until, now, current",
    [
        ("accepted", UNTIL, UNTIL - timedelta(seconds=1), True),
        ("accepted", UNTIL, UNTIL, False),
        ("accepted", None, UNTIL, False),
        ("pending", UNTIL, UNTIL - timedelta(days=30), False),
        ("rejected", UNTIL, UNTIL - timedelta(days=30), False),
    ],
)
def test_is_current(state: str, valid_until: datetime | None, now: datetime, current: bool) -> None:
    assert is_current(state, valid_until, now) is current


# ---------------------------------------------------------------- statistics


@pytest.mark.parametrize(
    "moment, month",
    [
        (datetime(2025, 12, 31, 15, 59, 59, tzinfo=UTC), "2025-12"),
        (datetime(2025, 12, 31, 16, 0, 0, tzinfo=UTC), "2026-01"),  # midnight in Shanghai
        (shanghai("2026-03-01T00:00:00"), "2026-03"),
    ],
)
def test_months_are_shanghai_months(moment: datetime, month: str) -> None:
    assert month_of(moment) == month


@pytest.mark.parametrize("text", ["2026-13", "2026-1", "26-01", "2026/01", "january"])
def test_malformed_months_are_refused(text: str) -> None:
    with pytest.raises(InvalidArgument, match="to_month"):
        check_month(text, "to_month")


@pytest.mark.parametrize(
    "prices, median",
    [([5], 5), ([1, 3], 2), ([1, 2], 1), ([3, 1, 2], 2), ([10, 40, 20, 30], 25), ([0, 0], 0)],
)
def test_median_in_whole_fen(prices: list[int], median: int) -> None:
    assert median_fen(prices) == median


def test_the_price_index_is_relative_to_each_categorys_first_month() -> None:
    points = price_index(
        [
            ("transport", "2026-01", 100),
            ("transport", "2026-01", 300),
            ("transport", "2026-02", 300),
            ("health", "2026-02", 50),
            ("health", "2026-03", 25),
        ]
    )
    table = [(p.category, p.month, p.trades, p.median_price.fen, p.index) for p in points]
    assert table == [
        ("health", "2026-02", 1, 50, 100.0),
        ("health", "2026-03", 1, 25, 50.0),
        ("transport", "2026-01", 2, 200, 100.0),
        ("transport", "2026-02", 1, 300, 150.0),
    ]


# ---------------------------------------------------------------- customs at the registry


ISSUED = shanghai("2026-03-14T10:00:00")


def logged_permit(*, revoked: bool = False) -> supervision_pb2.ExportPermit:
    """An approved permit as ReviewExportPermit logs it (issued at ISSUED, 3 years)."""
    return supervision_pb2.ExportPermit(
        permit_id="EP-0001",
        exporter=EXPORTER,
        dataset_ids=["440100-2026-0000001-6"],
        destination="HK",
        purpose="joint research",
        valid_from=to_timestamp(ISSUED),
        valid_until=to_timestamp(customs.permit_expiry(ISSUED)),
        state=supervision_pb2.REVIEW_STATE_REVOKED
        if revoked
        else supervision_pb2.REVIEW_STATE_ACCEPTED,
    )


SEED = national_catalog()
ORDERS = "commerce.ecommerce.orders"  # ASSESSMENT_REQUIRED in the seed catalog
SENSING = "geo.remote_sensing"  # ASSESSMENT_REQUIRED
MAPS = "geo.mapping"  # FORBIDDEN
JUDGMENTS = "gov.courts.judgments_public"  # ALLOWED, personal information


def decide(
    export: customs.ExportRequest,
    documents: list[customs.ExportDocument] | None = None,
    negative_list: list[str] | None = None,
) -> customs.ExportDecision:
    """decide_export as the registry calls it: the seed catalog's rules, no counts yet."""
    return customs.decide_export(
        export,
        customs.YearlyCount(EXPORTER, export.year),
        cross_border=customs.cross_border_rules(SEED, export.categories),
        documents=documents or [],
        negative_list=negative_list,
    )


def important_export(
    date: datetime, categories: tuple[str, ...] = (ORDERS,)
) -> customs.ExportRequest:
    return customs.ExportRequest(
        exporter=EXPORTER,
        dataset_id="440100-2026-0000001-6",
        grade=Grade.IMPORTANT,
        categories=categories,
        buyer_country="HK",
        recipient=RECIPIENT,
        date=date,
    )


EXPIRY = shanghai("2029-03-14T10:00:00")


@pytest.mark.parametrize(
    "date, revoked, satisfied, why",
    [
        (EXPIRY - timedelta(days=1), False, True, ""),
        (EXPIRY - timedelta(seconds=1), False, True, ""),
        (EXPIRY, False, False, "expired"),
        (EXPIRY + timedelta(days=1), False, False, "expired"),
        (ISSUED - timedelta(days=1), False, False, "not valid yet"),
        (ISSUED + timedelta(days=1), True, False, "is revoked"),
    ],
)
def test_a_logged_permit_covers_exports_while_valid_and_not_revoked(
    date: datetime, revoked: bool, satisfied: bool, why: str
) -> None:
    permit = permit_document(logged_permit(revoked=revoked))
    assert permit.expires_at == EXPIRY
    decision = decide(important_export(date), documents=[permit])
    assert decision.mechanism is customs.Mechanism.ASSESSMENT
    assert decision.satisfied is satisfied
    if why:
        assert why in decision.explain()


@pytest.mark.parametrize(
    "negative_list, categories, mechanism",
    [
        (None, (SENSING,), customs.Mechanism.ASSESSMENT),  # the zone has no list
        (["health"], (SENSING,), customs.Mechanism.EXEMPT),  # not listed: exempt
        (["geo"], (SENSING,), customs.Mechanism.ASSESSMENT),  # listed by its parent
        ([], (SENSING,), customs.Mechanism.EXEMPT),  # an empty list exempts all
        # A category the catalog forbids to export: no list exempts it.
        (None, (MAPS,), customs.Mechanism.FORBIDDEN),
        (["health"], (MAPS,), customs.Mechanism.FORBIDDEN),
        ([], (MAPS,), customs.Mechanism.FORBIDDEN),
    ],
)
def test_a_negative_list_exempts_what_it_does_not_list(
    negative_list: list[str] | None, categories: tuple[str, ...], mechanism: customs.Mechanism
) -> None:
    decision = decide(important_export(ISSUED, categories), negative_list=negative_list)
    assert decision.mechanism is mechanism


def test_a_filing_covers_its_calendar_year_from_filing_on() -> None:
    filed = shanghai("2026-06-01T09:00:00")
    filing = filing_document(
        supervision_pb2.StandardContractFiling(
            filing_id="SC-1",
            exporter=EXPORTER,
            recipient=RECIPIENT,
            destination="HK",
            contract_digest=bytes(32),
            filed_at=to_timestamp(filed),
        )
    )
    assert filing.year == 2026

    def covers(date: datetime) -> bool:
        export = customs.ExportRequest(
            exporter=EXPORTER,
            dataset_id="440100-2026-0000001-6",
            grade=Grade.GENERAL,
            categories=(JUDGMENTS,),  # ALLOWED: only the personal-information rule applies
            buyer_country="HK",
            recipient=RECIPIENT,
            date=date,
            individuals=100_000,
        )
        return decide(export, documents=[filing]).satisfied

    assert covers(filed)
    assert covers(shanghai("2026-12-31T23:59:59"))
    assert not covers(filed - timedelta(seconds=1))
    assert not covers(shanghai("2027-01-01T00:00:00"))  # a new year needs a new filing


@pytest.mark.parametrize(
    "agreed, finalized, date",
    [
        (ISSUED, None, ISSUED),
        (ISSUED, ISSUED + timedelta(hours=1), ISSUED + timedelta(hours=1)),
    ],
)
def test_a_trade_counts_at_its_finalization_or_else_its_agreement(
    agreed: datetime, finalized: datetime | None, date: datetime
) -> None:
    terms = common_terms(agreed)
    assert trade_date(terms, finalized) == date


def test_a_finalization_before_the_agreement_is_refused() -> None:
    with pytest.raises(InvalidArgument, match=r"trade\.finalized_at"):
        trade_date(common_terms(ISSUED), ISSUED - timedelta(seconds=1))


def common_terms(agreed: datetime) -> object:
    from provex.v1 import market_pb2

    return market_pb2.ContractTerms(agreed_at=to_timestamp(agreed))


@pytest.mark.parametrize(
    "kind, status, automatic, action",
    [
        ("member", "suspended", False, "freeze-member"),
        ("member", "active", False, "unfreeze-member"),
        ("dataset", "suspended", True, "auto-suspend-dataset"),
        ("dataset", "active", True, "auto-reinstate-dataset"),
        ("dataset", "suspended", False, "suspend-dataset"),
        ("dataset", "revoked", False, "revoke-dataset"),
        ("dataset", "active", False, "reinstate-dataset"),
    ],
)
def test_statement_actions(kind: str, status: str, automatic: bool, action: str) -> None:
    assert statement_action(kind, status, "why", automatic) == action


# ---------------------------------------------------------------- report validation


def report(**changes: object) -> supervision_pb2.RiskAssessment:
    end = shanghai("2025-12-31T23:59:59")
    assessment = supervision_pb2.RiskAssessment(
        holder=EXPORTER.lower(),
        period_start=to_timestamp(end - timedelta(days=365)),
        period_end=to_timestamp(end),
        data=[supervision_pb2.AssessedData(category="geo.mapping", records=10)],
        processing="analysis",
        risks="leakage",
        measures="encryption",
        report_digest=hashlib.sha256(b"report").digest(),
    )
    for name, value in changes.items():
        if name in {"data"}:
            del assessment.data[:]
        elif hasattr(value, "CopyFrom"):
            getattr(assessment, name).CopyFrom(value)
        else:
            setattr(assessment, name, value)
    return assessment


def test_a_valid_report_is_normalized() -> None:
    assert normalize_assessment(report()).holder == EXPORTER


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"holder": "not a code"}, "assessment.holder"),
        ({"processing": "  "}, "assessment.processing"),
        ({"risks": ""}, "assessment.risks"),
        ({"measures": ""}, "assessment.measures"),
        ({"report_digest": b"short"}, "report_digest"),
        ({"data": []}, "assessment.data"),
        ({"period_start": to_timestamp(shanghai("2026-01-01T00:00:00"))}, "period_end"),
        ({"period_start": to_timestamp(shanghai("2023-01-01T00:00:00"))}, "at most one year"),
    ],
)
def test_malformed_reports_name_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument, match=field):
        normalize_assessment(report(**changes))


# ---------------------------------------------------------------- supervisor scope

GD = Caller(Role.SUPERVISOR, SpiffeId.admin(TD, "gd-sup"), "44")
ADMIN = Caller(Role.ADMIN, SpiffeId.admin(TD, "alice"))
AUDITOR = Caller(Role.AUDITOR, SpiffeId.admin(TD, "audrey"))


@pytest.mark.parametrize(
    "caller, asked, covered",
    [
        (GD, "", "44"),
        (GD, "44", "44"),
        (GD, "4403", "4403"),
        (GD, "31", None),
        (GD, "4", None),  # wider than its province
        (ADMIN, "", ""),
        (ADMIN, "31", "31"),
        (AUDITOR, "4403", "4403"),
    ],
)
def test_scope_prefix(caller: Caller, asked: str, covered: str | None) -> None:
    if covered is None:
        with pytest.raises(PermissionDenied, match="scoped to region 44"):
            scope_prefix(caller, asked, "GetStatistics")
    else:
        assert scope_prefix(caller, asked, "GetStatistics") == covered


@pytest.mark.parametrize(
    "caller, region, inside",
    [(GD, "440100", True), (GD, "310000", False), (ADMIN, "310000", True), (AUDITOR, "1", True)],
)
def test_in_scope(caller: Caller, region: str, inside: bool) -> None:
    assert in_scope(caller, region) is inside
    if inside:
        require_in_scope(caller, region, "member X")
    else:
        with pytest.raises(PermissionDenied, match="member X is in region 310000"):
            require_in_scope(caller, region, "member X")


# ---------------------------------------------------------------- the book, with a clock

NOW = shanghai("2026-03-14T10:00:00")
NODE = "gd-gzde"
HOLDER = CreditCode.from_parts("9", "1", "440100", "MA5R0002").code
REGISTRY = str(SpiffeId.registry(TD))
NODE_CALLER = Caller(Role.NODE, SpiffeId.node(TD, NODE))


@dataclass
class Book:
    supervision: Supervision
    issuance: Issuance
    root: trust.TrustRoot
    clock: list[datetime]


def insert_directory(conn: sqlite3.Connection) -> None:
    conn.execute(
        "INSERT INTO nodes (node_id, region_code, display_name, peer_endpoint, status, "
        "signing_key, certificate_fingerprint, certificate_expires_at, enrolled_at, "
        "log_index) VALUES (?, '440100', ?, '127.0.0.1:1', 'active', ?, 'ff', ?, ?, 0)",
        (NODE, NODE, bytes(32), NOW.isoformat(), NOW.isoformat()),
    )
    officer = registry_pb2.SecurityOfficer(name="王芳", title="CSO").SerializeToString()
    conn.execute(
        "INSERT INTO members (credit_code, node_id, name, region_code, country, "
        "security_officer, status, updated_at) VALUES (?, ?, 'holder', '440100', 'CN', ?, "
        "'active', ?)",
        (HOLDER, NODE, officer, NOW.isoformat()),
    )


@pytest.fixture
async def book(tmp_path: Path) -> AsyncIterator[Book]:
    state = tmp_path / "registry"
    config = RegistryConfig()
    await initialize(state, config, NOW)
    layout = StateLayout(state)
    keys = load_keys(state)
    writer = await Database.open(layout.database, migrations=MIGRATIONS)
    reader = await Database.open(layout.database, readonly=True, migrations=MIGRATIONS)
    sequencer = Sequencer(writer, keys.log_signer(config.log_origin), config.log_origin)
    await sequencer.start()
    await writer.transaction(insert_directory)
    log_reader = LogReader(reader)
    clock = [NOW]
    publisher = Publisher(sequencer, log_reader, keys.issuer)
    issuance = Issuance(reader, publisher, log_reader, clock=lambda: clock[0])
    supervision = Supervision(writer, reader, publisher, issuance, REGISTRY, clock=lambda: clock[0])
    envelope = layout.trust_root(1).read_bytes()
    root = trust.load_trust_root(envelope, trust.digest_of(envelope), NOW).root
    try:
        yield Book(supervision, issuance, root, clock)
    finally:
        await sequencer.stop()
        await reader.close()
        await writer.close()


async def register(book: Book, key: str, category: str) -> str:
    holder = HOLDER
    dataset = dataset_pb2.DatasetDescription(
        holder=holder,
        title=f"测绘 {key}",
        description="Survey tiles.",
        categories=[category],
        content_digest=hashlib.sha256(key.encode()).digest(),
        size_bytes=1000,
        record_count=10,
        lawful_source="own surveys",
        rights=dataset_pb2.DataRights(
            resource_holder=holder, processing_user=holder, product_operator=holder
        ),
        language="zh",
    )
    bundle = await book.issuance.register(
        NODE, registry_pb2.RegisterDatasetRequest(idempotency_key=key, dataset=dataset)
    )
    return bundles.verify_certificate(bundle, book.root).dataset_id


async def status(book: Book, dataset_id: str) -> tuple[int, str]:
    value, bundle = await book.issuance.status(
        book.issuance.subject(SubjectKind.DATASET, dataset_id)
    )
    if bundle is None:
        return value, ""
    document = bundles.verify_bundle(bundle, book.root, dataset_pb2.StatusStatement).document
    return value, document.actor.spiffe_id


async def accept(book: Book, key: str, period_end: datetime) -> None:
    filed = await book.supervision.file_assessment(
        NODE_CALLER,
        key,
        report(
            holder=HOLDER,
            period_start=to_timestamp(period_end - timedelta(days=365)),
            period_end=to_timestamp(period_end),
        ),
    )
    await book.supervision.review_assessment(ADMIN, filed.assessment_id, True, "complete")


async def test_a_report_lapses_a_year_after_its_period_and_acceptance_reinstates(
    book: Book,
) -> None:
    important = await register(book, "k1", "geo.mapping")
    general = await register(book, "k2", "transport.road.traffic_flow")
    held_by_admin = await register(book, "k3", "geo.mapping")
    # Without any report the important datasets lapse at the first check.
    assert await book.supervision.check_lapses() == 2
    assert await status(book, important) == (common_pb2.STATUS_SUSPENDED, REGISTRY)
    assert await status(book, general) == (common_pb2.STATUS_ACTIVE, "")
    # An admin's own suspension is not the lapse's to lift.
    await book.issuance.set_status(
        str(ADMIN),
        book.issuance.subject(SubjectKind.DATASET, held_by_admin),
        common_pb2.STATUS_SUSPENDED,
        "inquiry",
    )
    await accept(book, "report-2025", shanghai("2025-12-31T23:59:59"))  # current in 2026
    assert await status(book, important) == (common_pb2.STATUS_ACTIVE, REGISTRY)
    assert (await status(book, held_by_admin))[0] == common_pb2.STATUS_SUSPENDED
    assert await book.supervision.check_lapses() == 0  # nothing to do while current
    book.clock[0] = shanghai("2026-12-31T23:59:58")
    assert await book.supervision.check_lapses() == 0
    book.clock[0] = shanghai("2027-01-01T00:00:00")  # one year after the period: lapsed
    assert await book.supervision.check_lapses() == 1
    assert await status(book, important) == (common_pb2.STATUS_SUSPENDED, REGISTRY)
    await accept(book, "report-2026", shanghai("2026-12-31T23:59:59"))
    assert await status(book, important) == (common_pb2.STATUS_ACTIVE, REGISTRY)
    actions = await book.supervision.list_actions(ADMIN, "", 0, 0)
    names = [a.action for a in actions]
    assert names.count("auto-suspend-dataset") == 3
    assert names.count("auto-reinstate-dataset") == 2
    assert names.count("accept-risk-assessment") == 2
    assert "suspend-dataset" in names
    gd = await book.supervision.list_actions(GD, "", 0, 0)
    assert [a.log_index for a in gd] == [a.log_index for a in actions]  # all in 44
    sh = Caller(Role.SUPERVISOR, SpiffeId.admin(TD, "sh-sup"), "31")
    assert await book.supervision.list_actions(sh, "", 0, 0) == []
