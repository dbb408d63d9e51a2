"""Tests of node.trading: the seller's checks, the export and risk rules, storage, freezes.

Table-driven over the rules the seller's node applies before agreeing (each
refusal a FailedPrecondition naming its rule), the customs decision as the
node reaches it (permits one day before and after expiry, revoked, core
data), the risk assessment's currency, the buyer/seller field bookkeeping,
the contracts table, risk-assessment submissions and the member-freeze
bookkeeping with its listings, on a real SQLite database with the node's
migrations.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from node import listings, members, outbox, trading
from node.listings import CertifiedDataset
from node.schema import MIGRATIONS
from provex import contracts, customs
from provex.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from provex.grading import CrossBorderRule, Grade
from provex.ids import CreditCode, DatasetId
from provex.storage import migrate, open_connection, transaction
from provex.timestamps import to_timestamp
from provex.v1 import common_pb2, market_pb2, node_pb2, registry_pb2, supervision_pb2
from registry.seed_catalog import national_catalog

NOW = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
SELLER = CreditCode.from_parts("9", "1", "440100", "MA5PE001").code
BUYER = CreditCode.from_parts("9", "1", "310000", "MA5BUY01").code
DATASET = str(DatasetId("440100", 2026, 123))
LISTING = "L0123456789abcdef"
CID = contracts.contract_id_for("sh-sde", "key-1")


def terms(**changes: Any) -> market_pb2.ContractTerms:
    value = market_pb2.ContractTerms(
        contract_id=CID,
        listing_id=LISTING,
        dataset_id=DATASET,
        certificate_version=1,
        content_digest=hashlib.sha256(b"data").digest(),
        seller=SELLER,
        seller_node="gd-gzde",
        buyer=BUYER,
        buyer_node="sh-sde",
        buyer_country="CN",
        price=common_pb2.Money(fen=250_000),
        licence=market_pb2.LicenceTerms(purposes=["research"], term_days=365),
        purpose="planning",
    )
    for name, item in changes.items():
        setattr(value, name, item)
    return value


# ---------------------------------------------------------------- the seller's local rules

FACTS = trading.SaleFacts(
    terms=terms(),
    listing_state=market_pb2.LISTING_STATE_LISTED,
    certificate_status="active",
    certificate_version=1,
    grade=Grade.GENERAL,
)


@pytest.mark.parametrize(
    ("changes", "rule", "words"),
    [
        ({}, None, ""),
        ({"certificate_status": "suspended"}, trading.RULE_CERTIFICATE, "is suspended"),
        ({"certificate_status": "revoked"}, trading.RULE_CERTIFICATE, "is revoked"),
        ({"certificate_status": "missing"}, trading.RULE_CERTIFICATE, "is missing"),
        ({"certificate_version": 2}, trading.RULE_CERTIFICATE, "version 2"),
        ({"listing_state": market_pb2.LISTING_STATE_DRAFT}, trading.RULE_LISTED, "draft"),
        ({"listing_state": market_pb2.LISTING_STATE_SUSPENDED}, trading.RULE_LISTED, "suspended"),
        ({"listing_state": market_pb2.LISTING_STATE_DELISTED}, trading.RULE_LISTED, "delisted"),
        ({"grade": Grade.CORE}, trading.RULE_CORE, "core data"),
        ({"grade": Grade.IMPORTANT}, None, ""),
        ({"seller_frozen": "market abuse"}, trading.RULE_FROZEN, f"seller {SELLER}"),
        ({"buyer_frozen": "sanctions"}, trading.RULE_FROZEN, f"buyer {BUYER}"),
        # The first broken rule is named: a suspended certificate before an unlisted listing.
        (
            {"certificate_status": "suspended", "listing_state": market_pb2.LISTING_STATE_DRAFT},
            trading.RULE_CERTIFICATE,
            "suspended",
        ),
    ],
)
def test_the_sellers_local_rules(changes: dict[str, Any], rule: str | None, words: str) -> None:
    facts = replace(FACTS, **changes)
    if rule is None:
        trading.check_sale(facts)
        return
    with pytest.raises(FailedPrecondition) as caught:
        trading.check_sale(facts)
    assert str(caught.value).startswith(f"rule {rule}: ")
    assert words in str(caught.value)


# ---------------------------------------------------------------- risk assessments


def assessment(**changes: Any) -> supervision_pb2.RiskAssessment:
    value = supervision_pb2.RiskAssessment(
        holder=SELLER,
        period_start=to_timestamp(datetime(2025, 1, 1, tzinfo=UTC)),
        period_end=to_timestamp(datetime(2025, 12, 31, 16, tzinfo=UTC)),
        data=[supervision_pb2.AssessedData(category="geo.mapping", records=10)],
        processing="on premises",
        risks="leaks",
        measures="encryption",
        report_digest=hashlib.sha256(b"report").digest(),
        state=supervision_pb2.REVIEW_STATE_ACCEPTED,
    )
    for name, item in changes.items():
        if name in ("period_start", "period_end"):
            getattr(value, name).CopyFrom(item)
        else:
            setattr(value, name, item)
    return value


END_2025 = datetime(2025, 12, 31, 16, tzinfo=UTC)  # 2026-01-01 00:00 in Shanghai


@pytest.mark.parametrize(
    ("reports", "now", "current"),
    [
        ([assessment()], NOW, True),
        ([], NOW, False),
        ([assessment(state=supervision_pb2.REVIEW_STATE_PENDING)], NOW, False),
        ([assessment(state=supervision_pb2.REVIEW_STATE_REJECTED)], NOW, False),
        ([assessment(holder=BUYER)], NOW, False),
        # Current until one calendar year after the period's end, not a second longer.
        ([assessment()], END_2025 + timedelta(days=365) - timedelta(seconds=1), True),
        ([assessment()], END_2025 + timedelta(days=365), False),
        (
            [
                assessment(state=supervision_pb2.REVIEW_STATE_REJECTED),
                assessment(period_end=to_timestamp(datetime(2024, 12, 31, tzinfo=UTC))),
                assessment(),
            ],
            NOW,
            True,
        ),
    ],
)
def test_an_important_dataset_needs_a_current_accepted_assessment(
    reports: list[supervision_pb2.RiskAssessment], now: datetime, current: bool
) -> None:
    if current:
        found = trading.check_risk_assessment(SELLER, reports, now)
        assert found.state == supervision_pb2.REVIEW_STATE_ACCEPTED
        return
    with pytest.raises(FailedPrecondition, match=trading.RULE_RISK_ASSESSMENT):
        trading.check_risk_assessment(SELLER, reports, now)


@pytest.mark.parametrize(
    ("period_end", "expiry"),
    [
        (datetime(2025, 12, 31, 16, tzinfo=UTC), datetime(2026, 12, 31, 16, tzinfo=UTC)),
        # 29 February (Shanghai) expires on 28 February.
        (datetime(2024, 2, 29, 4, tzinfo=UTC), datetime(2025, 2, 28, 4, tzinfo=UTC)),
    ],
)
def test_risk_assessment_expiry(period_end: datetime, expiry: datetime) -> None:
    assert trading.risk_assessment_expiry(period_end) == expiry


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"holder": "not a code"}, "assessment.holder"),
        ({"period_end": to_timestamp(datetime(2024, 1, 1, tzinfo=UTC))}, "period_end"),
        ({"processing": " "}, "assessment.processing"),
        ({"risks": ""}, "assessment.risks"),
        ({"measures": ""}, "assessment.measures"),
        ({"report_digest": b"short"}, "assessment.report_digest"),
    ],
)
def test_a_risk_assessment_is_validated(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument, match=field.replace(".", r"\.")):
        trading.validate_assessment(assessment(**changes), "gd-gzde")


def test_a_risk_assessment_without_data_is_refused() -> None:
    report = assessment()
    del report.data[:]
    with pytest.raises(InvalidArgument, match=r"assessment\.data"):
        trading.validate_assessment(report, "gd-gzde")


def test_a_validated_assessment_drops_the_registrys_fields() -> None:
    checked = trading.validate_assessment(
        assessment(assessment_id="RA-forged", review_reason="self-accepted"), "gd-gzde"
    )
    assert checked.node_id == "gd-gzde"
    assert checked.assessment_id == "" and checked.review_reason == ""
    assert checked.state == supervision_pb2.REVIEW_STATE_UNSPECIFIED


# ---------------------------------------------------------------- customs as the node decides

ISSUED = datetime(2024, 3, 1, 2, tzinfo=UTC)


def permit(state: int = supervision_pb2.REVIEW_STATE_ACCEPTED, **changes: Any) -> Any:
    value = supervision_pb2.ExportPermit(
        permit_id="EP-1",
        exporter=SELLER,
        dataset_ids=[DATASET],
        destination="HK",
        purpose="research",
        state=state,  # type: ignore[arg-type]
    )
    value.valid_from.CopyFrom(to_timestamp(ISSUED))
    value.valid_until.CopyFrom(to_timestamp(customs.permit_expiry(ISSUED)))
    for name, item in changes.items():
        setattr(value, name, item)
    return value


ORDERS = "commerce.ecommerce.orders"  # seed catalog: ASSESSMENT_REQUIRED
FLIGHTS = "transport.aviation.flight_schedules"  # seed catalog: ALLOWED
MAPS = "geo.mapping"  # seed catalog: FORBIDDEN
SEED = national_catalog()


def export_facts(
    grade: int = Grade.IMPORTANT,
    individuals: int = 0,
    sensitive: int = 0,
    category: str = FLIGHTS,
) -> Any:
    return trading.ExportFacts(
        terms=terms(buyer_country="HK", export_permit_id="EP-1"),
        grade=grade,
        categories=(category,),
        individuals=individuals,
        sensitive=sensitive,
    )


def seed_rules(facts: trading.ExportFacts) -> dict[str, CrossBorderRule]:
    """The categories' effective rules in the seed national catalog."""
    return customs.cross_border_rules(SEED, facts.categories)


EXPIRY = customs.permit_expiry(ISSUED)


@pytest.mark.parametrize(
    ("facts", "documents", "when", "outcome"),
    [
        # Important data: the permit, valid the day before expiry, not the day after.
        (export_facts(), ("accepted",), EXPIRY - timedelta(days=1), customs.Mechanism.ASSESSMENT),
        (export_facts(), ("accepted",), EXPIRY + timedelta(days=1), "important-data-permit"),
        (export_facts(), ("revoked",), NOW, "revoked"),
        (export_facts(), (), NOW, "important-data-permit"),
        # Core data never leaves, whatever is held.
        (export_facts(Grade.CORE), ("accepted",), NOW, "core-data-forbidden"),
        # General data without personal information in an ALLOWED category: exempt.
        (export_facts(Grade.GENERAL), (), NOW, customs.Mechanism.EXEMPT),
        # The catalog: a FORBIDDEN category never leaves, even with a valid permit.
        (export_facts(Grade.IMPORTANT, category=MAPS), ("accepted",), NOW, "catalog-forbidden"),
        (export_facts(Grade.GENERAL, category=MAPS), (), NOW, "catalog-forbidden"),
        # ASSESSMENT_REQUIRED: general data needs the permit; valid, expired, revoked, missing.
        (
            export_facts(Grade.GENERAL, category=ORDERS),
            ("accepted",),
            NOW,
            customs.Mechanism.ASSESSMENT,
        ),
        (
            export_facts(Grade.GENERAL, category=ORDERS),
            ("accepted",),
            EXPIRY + timedelta(days=1),
            "catalog-assessment",
        ),
        (export_facts(Grade.GENERAL, category=ORDERS), ("revoked",), NOW, "revoked"),
        (export_facts(Grade.GENERAL, category=ORDERS), (), NOW, "catalog-assessment"),
        # ... and with 1,200,000 individuals, one permit meets both requirements.
        (
            export_facts(Grade.GENERAL, 1_200_000, category=ORDERS),
            ("accepted",),
            NOW,
            customs.Mechanism.ASSESSMENT,
        ),
        # Personal information: 99,999 exempt, 100,000 needs a contract (a permit covers it).
        (export_facts(Grade.GENERAL, 99_999), (), NOW, customs.Mechanism.EXEMPT),
        (export_facts(Grade.GENERAL, 100_000), (), NOW, "personal-info-standard-contract"),
        (
            export_facts(Grade.GENERAL, 100_000),
            ("accepted",),
            EXPIRY - timedelta(days=1),
            customs.Mechanism.STANDARD_CONTRACT,
        ),
        (export_facts(Grade.GENERAL, 0, 1), (), NOW, "personal-info-standard-contract"),
        (export_facts(Grade.GENERAL, 0, 10_000), (), NOW, "personal-info-assessment"),
    ],
)
def test_the_export_decision(
    facts: trading.ExportFacts,
    documents: tuple[str, ...],
    when: datetime,
    outcome: customs.Mechanism | str,
) -> None:
    states = {
        "accepted": supervision_pb2.REVIEW_STATE_ACCEPTED,
        "revoked": supervision_pb2.REVIEW_STATE_REVOKED,
    }
    held = tuple(trading.permit_document(permit(states[d]), states[d]) for d in documents)
    if isinstance(outcome, customs.Mechanism):
        decision = trading.decide_export(
            facts, when, cross_border=seed_rules(facts), documents=held
        )
        assert decision.mechanism is outcome
        declared = trading.declaration(facts.terms, decision, facts)
        assert declared is not None
        assert declared.destination == "HK" and declared.exporter == SELLER
        assert declared.individuals == facts.individuals
        return
    with pytest.raises(FailedPrecondition) as caught:
        trading.decide_export(facts, when, cross_border=seed_rules(facts), documents=held)
    assert outcome in str(caught.value)


def test_a_domestic_trade_declares_no_export() -> None:
    facts = trading.ExportFacts(terms(), Grade.IMPORTANT, (MAPS,), 0, 0)
    decision = trading.decide_export(facts, NOW, cross_border=seed_rules(facts))
    assert decision.mechanism is customs.Mechanism.NOT_EXPORT
    assert trading.declaration(facts.terms, decision, facts) is None


def test_this_years_counts_decide_the_personal_information_rule() -> None:
    facts = export_facts(Grade.GENERAL, 1)
    rules = seed_rules(facts)
    assert trading.decide_export(facts, NOW, cross_border=rules).mechanism is (
        customs.Mechanism.EXEMPT
    )
    with pytest.raises(FailedPrecondition, match="personal-info-standard-contract"):
        trading.decide_export(facts, NOW, cross_border=rules, counted=(99_999, 0))


@pytest.mark.parametrize(
    ("state", "words"),
    [
        (supervision_pb2.REVIEW_STATE_PENDING, "is pending"),
        (supervision_pb2.REVIEW_STATE_REJECTED, "is rejected"),
    ],
)
def test_an_unapproved_permit_is_refused(state: int, words: str) -> None:
    with pytest.raises(FailedPrecondition, match=words):
        trading.permit_document(permit(state), state)


def test_a_permit_with_a_wrong_validity_is_refused() -> None:
    bad = permit()
    bad.valid_until.CopyFrom(to_timestamp(ISSUED + timedelta(days=10)))
    with pytest.raises(FailedPrecondition, match=trading.RULE_EXPORT_PERMIT):
        trading.permit_document(bad, supervision_pb2.REVIEW_STATE_ACCEPTED)


# ---------------------------------------------------------------- terms


def test_the_seller_completes_the_buyers_request() -> None:
    request = trading.request_terms(
        contract_id=CID,
        seller_node="gd-gzde",
        listing_id=LISTING,
        buyer=BUYER,
        buyer_node="sh-sde",
        buyer_country="CN",
        purpose="  planning ",
        export_permit_id="",
    )
    assert not trading.is_complete(request)
    listing = market_pb2.Listing(
        listing_id=LISTING,
        dataset_id=DATASET,
        certificate_version=1,
        holder=SELLER,
        price=common_pb2.Money(fen=99),
        licence=market_pb2.LicenceTerms(purposes=["research"], term_days=30),
        auto_approve=True,
    )
    full = trading.complete_terms(request, listing, hashlib.sha256(b"x").digest())
    assert trading.is_complete(full)
    assert full.purpose == "planning" and full.price.fen == 99 and full.seller == SELLER
    assert trading.differing_request(trading.buyer_part(full), request) == []
    other = trading.buyer_part(full)
    other.purpose = "resale"
    other.buyer_country = "HK"
    assert trading.differing_request(full, other) == ["buyer_country", "purpose"]


# ---------------------------------------------------------------- storage


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = open_connection(tmp_path / "node.db")
    migrate(connection, MIGRATIONS)
    yield connection
    connection.close()


def test_contracts_are_kept_listed_and_paged(conn: sqlite3.Connection) -> None:
    ids = sorted(contracts.contract_id_for("sh-sde", f"key-{n}") for n in range(5))
    with transaction(conn):
        for number, cid in enumerate(ids):
            record = contracts.ContractRecord(
                terms=terms(contract_id=cid), state=contracts.REQUESTED, updated_at=NOW
            )
            contract = record.to_proto()
            if number % 2:
                contract.state = contracts.TERMINATED
                contract.termination_reason = "budget"
            trading.save_contract(conn, "seller", contract, NOW)
    role, kept = trading.require_contract(conn, ids[0].upper())
    assert role == "seller" and kept.terms.contract_id == ids[0]
    assert trading.load_contract(conn, ids[0]) == (role, kept)
    seen, token = [], ""
    while True:
        page, token = trading.list_contracts(conn, 0, 2, token)
        seen.extend(c.terms.contract_id for c in page)
        if not token:
            break
    assert seen == ids
    terminated, _ = trading.list_contracts(conn, contracts.TERMINATED, 0, "")
    assert [c.terms.contract_id for c in terminated] == [ids[1], ids[3]]
    with pytest.raises(NotFound, match="is not known"):
        trading.require_contract(conn, contracts.contract_id_for("sh-sde", "other"))
    with pytest.raises(InvalidArgument, match="page_token"):
        trading.list_contracts(conn, 0, 2, "!!")
    with pytest.raises(InvalidArgument, match="not a contract state"):
        trading.list_contracts(conn, 9, 2, "")


def test_the_export_declaration_is_kept_with_the_contract(conn: sqlite3.Connection) -> None:
    record = contracts.ContractRecord(terms=terms(), state=contracts.REQUESTED, updated_at=NOW)
    declared = supervision_pb2.ExportDeclaration(exporter=SELLER, destination="HK")
    with transaction(conn):
        trading.save_contract(conn, "seller", record.to_proto(), NOW, declared)
        trading.save_contract(conn, "seller", record.to_proto(), NOW)  # keeps the declaration
    assert trading.load_export(conn, CID) == declared
    assert trading.load_export(conn, "C" + "0" * 32) == supervision_pb2.ExportDeclaration()


def add_member(conn: sqlite3.Connection, code: str) -> None:
    with transaction(conn):
        members.add_member(
            conn,
            "gd-gzde",
            registry_pb2.Member(credit_code=code, name="Holder", region_code="440100"),
            NOW,
        )


def test_a_risk_assessment_is_stored_and_queued_once(conn: sqlite3.Connection) -> None:
    with pytest.raises(FailedPrecondition, match="not a member"), transaction(conn):
        trading.submit_assessment(conn, "gd-gzde", "r-1", assessment(), NOW)
    add_member(conn, SELLER)
    with transaction(conn):
        stored, item = trading.submit_assessment(conn, "gd-gzde", "r-1", assessment(), NOW)
    assert item.kind == trading.RISK_KIND and item.state == node_pb2.OUTBOX_STATE_PENDING
    assert stored.node_id == "gd-gzde"
    with transaction(conn):
        again, same = trading.submit_assessment(conn, "gd-gzde", "r-1", assessment(), NOW)
    assert again == stored and same.idempotency_key == item.idempotency_key
    with pytest.raises(AlreadyExists), transaction(conn):
        trading.submit_assessment(conn, "gd-gzde", "r-1", assessment(risks="other"), NOW)
    assert len(outbox.list_items(conn)) == 2  # the member's report and the assessment
    with pytest.raises(InvalidArgument, match="idempotency_key"), transaction(conn):
        trading.submit_assessment(conn, "gd-gzde", "", assessment(), NOW)


def certified(dataset_id: str = DATASET) -> CertifiedDataset:
    return CertifiedDataset(
        dataset_id=dataset_id,
        certificate_version=1,
        holder=SELLER,
        title="广州市道路交通流量",
        description="每小时",
        categories=("transport.road",),
        grade=Grade.GENERAL,
        region_code="440100",
        tradable=True,
    )


def listed(conn: sqlite3.Connection) -> str:
    offer = market_pb2.Listing(
        dataset_id=DATASET,
        price=common_pb2.Money(fen=100),
        pricing_model=market_pb2.PRICING_MODEL_ONE_TIME,
        licence=market_pb2.LicenceTerms(purposes=["research"], term_days=30),
    )
    with transaction(conn):
        created = listings.create_listing(conn, offer, certified(), "gd-gzde", NOW)
        listings.set_state(
            conn, created.listing_id, market_pb2.LISTING_STATE_LISTED, "", certified(), NOW
        )
    return created.listing_id


def test_a_freeze_suspends_the_members_listings_and_lifting_it_lists_them_again(
    conn: sqlite3.Connection,
) -> None:
    first, second = listed(conn), listed(conn)
    with transaction(conn):  # The operator suspended the second one itself.
        listings.set_state(conn, second, market_pb2.LISTING_STATE_SUSPENDED, "audit", None, NOW)
    with transaction(conn):
        assert members.record_freeze(
            conn, SELLER, frozen=True, reason="abuse", log_index=7, now=NOW
        )
        suspended = listings.suspend_listings_of_holder(conn, SELLER, "frozen", NOW)
        members.remember_frozen_listings(conn, SELLER, suspended)
    assert suspended == [first]
    assert "abuse" in (members.frozen_reason(conn, SELLER) or "")
    assert members.frozen_reason(conn, BUYER) is None
    with transaction(conn):  # An older statement replayed changes nothing.
        assert not members.record_freeze(
            conn, SELLER, frozen=False, reason="old", log_index=3, now=NOW
        )
    with transaction(conn):
        assert members.record_freeze(
            conn, SELLER, frozen=False, reason="cleared", log_index=9, now=NOW
        )
        restored = listings.relist(conn, members.take_frozen_listings(conn, SELLER), "ok", NOW)
    assert restored == [first]
    assert members.frozen_reason(conn, SELLER) is None
    assert listings.get_listing(conn, first).state == market_pb2.LISTING_STATE_LISTED
    assert listings.get_listing(conn, second).state == market_pb2.LISTING_STATE_SUSPENDED
    assert members.take_frozen_listings(conn, SELLER) == []


def test_a_member_is_known_once_the_registry_acknowledged_its_report(
    conn: sqlite3.Connection,
) -> None:
    add_member(conn, SELLER)
    assert not members.report_acknowledged(conn, "gd-gzde", SELLER)
    with transaction(conn):
        conn.execute(
            "UPDATE outbox SET state = 'done', next_attempt_at = NULL, done_at = ? WHERE kind = ?",
            (NOW.isoformat(), members.REPORT_KIND),
        )
    assert members.report_acknowledged(conn, "gd-gzde", SELLER)
    assert not members.report_acknowledged(conn, "gd-szde", SELLER)
    assert not members.report_acknowledged(conn, "gd-gzde", BUYER)
