"""Tests of node.listings: validation, the state machine, the listing rules, sync, bulk import.

Each test uses a real SQLite file migrated with ``listings.SCHEMA`` then
``search.SCHEMA`` (the order the node applies them), and calls the functions
inside :func:`provex.storage.transaction` as the node's writer does.
"""

from __future__ import annotations

import dataclasses
import io
import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from node import listings, search
from node.listings import CertifiedDataset
from provex.errors import FailedPrecondition, InvalidArgument, NotFound, ProvexError
from provex.grading import Grade
from provex.ids import CreditCode, DatasetId
from provex.storage import Migration, migrate, open_connection, transaction
from provex.timestamps import to_timestamp
from provex.v1 import common_pb2, market_pb2

NOW = datetime(2026, 3, 14, 9, 30, tzinfo=UTC)
NODE = "gd-gzde"
HOLDER = CreditCode.from_parts("9", "1", "440100", "MA5D0001").code
OTHER_HOLDER = CreditCode.from_parts("9", "1", "440100", "MA5D0002").code
DATASET = str(DatasetId("440100", 2026, 123))
OTHER_DATASET = str(DatasetId("440100", 2026, 124))

DRAFT = market_pb2.LISTING_STATE_DRAFT
LISTED = market_pb2.LISTING_STATE_LISTED
SUSPENDED = market_pb2.LISTING_STATE_SUSPENDED
DELISTED = market_pb2.LISTING_STATE_DELISTED
STATE_NAMES = {DRAFT: "draft", LISTED: "listed", SUSPENDED: "suspended", DELISTED: "delisted"}


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = open_connection(tmp_path / "node.db")
    migrate(connection, (Migration(1, "listings", listings.SCHEMA + search.SCHEMA),))
    yield connection
    connection.close()


def dataset(**changes: Any) -> CertifiedDataset:
    fields: dict[str, Any] = {
        "dataset_id": DATASET,
        "certificate_version": 1,
        "holder": HOLDER,
        "title": "广州市道路交通流量 2025",
        "description": "每小时的道路交通流量数据",
        "categories": ("transport.road",),
        "grade": Grade.GENERAL,
        "region_code": "440100",
        "tradable": True,
        "status": "active",
    }
    fields.update(changes)
    return CertifiedDataset(**fields)


def apply(listing: market_pb2.Listing, changes: dict[str, Any]) -> market_pb2.Listing:
    """Set fields of ``listing`` (None clears a message field); return it."""
    for name, value in changes.items():
        if name in ("price", "licence", "updated_at"):
            listing.ClearField(name)  # type: ignore[arg-type]
            if value is not None:
                getattr(listing, name).CopyFrom(value)
        elif name == "categories":
            del listing.categories[:]
            listing.categories.extend(value)
        else:
            setattr(listing, name, value)
    return listing


def offer(**changes: Any) -> market_pb2.Listing:
    listing = market_pb2.Listing(
        dataset_id=DATASET,
        price=common_pb2.Money(fen=123_456),
        pricing_model=market_pb2.PRICING_MODEL_ONE_TIME,
        licence=market_pb2.LicenceTerms(purposes=["research"], term_days=365),
    )
    return apply(listing, changes)


def create(
    conn: sqlite3.Connection,
    listing: market_pb2.Listing | None = None,
    certified: CertifiedDataset | None = None,
    node: str = NODE,
    now: datetime = NOW,
) -> market_pb2.Listing:
    with transaction(conn):
        return listings.create_listing(conn, listing or offer(), certified or dataset(), node, now)


def move(
    conn: sqlite3.Connection,
    listing_id: str,
    state: int,
    certified: CertifiedDataset | None = None,
    *,
    reason: str = "",
    now: datetime = NOW,
) -> market_pb2.Listing:
    with transaction(conn):
        return listings.set_state(conn, listing_id, state, reason, certified or dataset(), now)


def in_state(conn: sqlite3.Connection, state: int) -> market_pb2.Listing:
    """A stored listing in ``state``, reached through allowed transitions."""
    if state == LISTED:
        return create(conn, offer(state=LISTED))
    created = create(conn)
    if state == SUSPENDED:
        move(conn, created.listing_id, LISTED)
        return move(conn, created.listing_id, SUSPENDED)
    if state == DELISTED:
        return move(conn, created.listing_id, DELISTED)
    return created


def count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM listings").fetchone()[0])


# ---------------------------------------------------------------- creation


def test_create_fills_the_listing_from_the_certificate(conn: sqlite3.Connection) -> None:
    created = create(conn, offer(dataset_id=DATASET.lower()))
    assert created.listing_id.startswith("L")
    assert listings.normalize_listing_id(created.listing_id) == created.listing_id
    assert created.state == DRAFT
    assert created.node_id == NODE
    assert created.holder == HOLDER
    assert created.dataset_id == DATASET
    assert created.certificate_version == 1
    assert list(created.categories) == ["transport.road"]
    assert created.grade == common_pb2.GRADE_GENERAL
    assert created.region_code == "440100"
    assert created.title == "广州市道路交通流量 2025"  # defaulted from the dataset
    assert created.description == "每小时的道路交通流量数据"
    assert created.delivery == market_pb2.DELIVERY_METHOD_FILE
    assert created.updated_at == to_timestamp(NOW)
    assert listings.get_listing(conn, created.listing_id) == created
    assert listings.get_listing(conn, created.listing_id.upper().replace("L", "l", 1)) == created


def test_create_keeps_the_offer_and_trims_text(conn: sqlite3.Connection) -> None:
    created = create(
        conn,
        offer(
            title="  Guangzhou road traffic flow 2025 ",
            description="Hourly counts.\nSince 2018.",
            auto_approve=True,
            licence=market_pb2.LicenceTerms(
                purposes=[" research ", "planning"], term_days=3650, no_resale=True
            ),
            holder=HOLDER.lower(),
            categories=["transport.road"],
            grade=common_pb2.GRADE_GENERAL,
            region_code="440100",
            certificate_version=1,
            node_id=NODE,
            delivery=market_pb2.DELIVERY_METHOD_FILE,
        ),
    )
    assert created.title == "Guangzhou road traffic flow 2025"
    assert created.description == "Hourly counts.\nSince 2018."
    assert created.auto_approve
    assert list(created.licence.purposes) == ["research", "planning"]
    assert created.licence.no_resale
    assert created.price.fen == 123_456
    row = conn.execute(
        "SELECT price_fen, categories, grade, state, holder, region_code FROM listings"
    ).fetchone()
    assert row == (123_456, '["transport.road"]', 1, DRAFT, HOLDER, "440100")


def test_create_listed(conn: sqlite3.Connection) -> None:
    created = create(conn, offer(state=LISTED, price=common_pb2.Money(fen=0)))
    assert created.state == LISTED
    assert created.price.fen == 0
    assert listings.get_listing(conn, created.listing_id).state == LISTED


def test_listing_ids_are_unique(conn: sqlite3.Connection) -> None:
    ids = {create(conn).listing_id for _ in range(50)}
    assert len(ids) == 50


def _licence(**changes: Any) -> market_pb2.LicenceTerms:
    fields: dict[str, Any] = {"purposes": ["research"], "term_days": 365}
    fields.update(changes)
    return market_pb2.LicenceTerms(**fields)


CREATE_REFUSED: dict[str, tuple[dict[str, Any], dict[str, Any], type[ProvexError], str]] = {
    "listing_id given": (
        {"listing_id": "L0123456789abcdef"},
        {},
        InvalidArgument,
        "listing_id is assigned",
    ),
    "another node": ({"node_id": "gd-szde"}, {}, InvalidArgument, "node_id: this is node gd-gzde"),
    "updated_at given": (
        {"updated_at": to_timestamp(NOW)},
        {},
        InvalidArgument,
        "updated_at is set",
    ),
    "suspended state": ({"state": SUSPENDED}, {}, InvalidArgument, "state of a new listing"),
    "delisted state": ({"state": DELISTED}, {}, InvalidArgument, "state of a new listing"),
    "no dataset_id": ({"dataset_id": ""}, {}, InvalidArgument, "dataset_id is required"),
    "bad dataset_id": (
        {"dataset_id": "440100-2026-0000123-0"},
        {},
        InvalidArgument,
        "dataset_id: .*check character",
    ),
    "other dataset": (
        {"dataset_id": OTHER_DATASET},
        {},
        InvalidArgument,
        "dataset_id: the listing offers",
    ),
    "other version": ({"certificate_version": 2}, {}, InvalidArgument, "certificate_version"),
    "bad holder": ({"holder": "91440100MA5D00010X"}, {}, InvalidArgument, "^holder: "),
    "other holder": (
        {"holder": OTHER_HOLDER},
        {},
        InvalidArgument,
        "holder: dataset .* is held by",
    ),
    "other categories": (
        {"categories": ["health"]},
        {},
        InvalidArgument,
        "categories come from the certificate",
    ),
    "other grade": (
        {"grade": common_pb2.GRADE_IMPORTANT},
        {},
        InvalidArgument,
        "grade comes from the certificate",
    ),
    "other region": (
        {"region_code": "440300"},
        {},
        InvalidArgument,
        "region_code comes from the certificate",
    ),
    "title too long": (
        {"title": "数" * 201},
        {},
        InvalidArgument,
        r"title must be 1\.\.200 characters",
    ),
    "blank title everywhere": (
        {"title": " "},
        {"title": ""},
        InvalidArgument,
        "title must be 1..200",
    ),
    "title with a line break": (
        {"title": "a\nb"},
        {},
        InvalidArgument,
        "title must not contain control",
    ),
    "description too long": (
        {"description": "x" * 10_001},
        {},
        InvalidArgument,
        "description must be at most 10,000",
    ),
    "description with NUL": (
        {"description": "a\x00b"},
        {},
        InvalidArgument,
        "description must not contain control",
    ),
    "no price": ({"price": None}, {}, InvalidArgument, "price is required"),
    "negative price": (
        {"price": common_pb2.Money(fen=-1)},
        {},
        InvalidArgument,
        "price.fen must be within",
    ),
    "absurd price": (
        {"price": common_pb2.Money(fen=10**12 + 1)},
        {},
        InvalidArgument,
        "price.fen must be within",
    ),
    "no pricing model": (
        {"pricing_model": 0},
        {},
        InvalidArgument,
        "pricing_model must be one of ONE_TIME",
    ),
    "unknown pricing model": (
        {"pricing_model": 9},
        {},
        InvalidArgument,
        "pricing_model must be one of",
    ),
    "no licence": ({"licence": None}, {}, InvalidArgument, "licence is required"),
    "no purposes": (
        {"licence": _licence(purposes=[])},
        {},
        InvalidArgument,
        r"licence.purposes must list 1\.\.20",
    ),
    "blank purpose": (
        {"licence": _licence(purposes=["research", " "])},
        {},
        InvalidArgument,
        r"licence.purposes\[1\] must be 1\.\.200",
    ),
    "too many purposes": (
        {"licence": _licence(purposes=[f"p{i}" for i in range(21)])},
        {},
        InvalidArgument,
        "licence.purposes must list",
    ),
    "repeated purpose": (
        {"licence": _licence(purposes=["a", "a "])},
        {},
        InvalidArgument,
        "lists a purpose twice",
    ),
    "purpose with a tab": (
        {"licence": _licence(purposes=["a\tb"])},
        {},
        InvalidArgument,
        r"licence.purposes\[0\] must not contain",
    ),
    "no term": (
        {"licence": _licence(term_days=0)},
        {},
        InvalidArgument,
        r"licence.term_days must be within 1\.\.3650",
    ),
    "term over ten years": (
        {"licence": _licence(term_days=3651)},
        {},
        InvalidArgument,
        "licence.term_days must be within",
    ),
    "unknown delivery": ({"delivery": 5}, {}, InvalidArgument, "delivery must be FILE"),
    "revoked certificate": (
        {},
        {"status": "revoked"},
        FailedPrecondition,
        "rule valid-certificate: .* revoked",
    ),
    "listed, suspended certificate": (
        {"state": LISTED},
        {"status": "suspended"},
        FailedPrecondition,
        "rule valid-certificate: .* suspended",
    ),
    "listed, core data": (
        {"state": LISTED},
        {"grade": Grade.CORE},
        FailedPrecondition,
        "rule no-core-data",
    ),
    "listed, not tradable": (
        {"state": LISTED},
        {"tradable": False},
        FailedPrecondition,
        "rule tradable-categories-only",
    ),
}


@pytest.mark.parametrize(
    "listing_changes, dataset_changes, error, message",
    CREATE_REFUSED.values(),
    ids=CREATE_REFUSED.keys(),
)
def test_create_refuses(
    conn: sqlite3.Connection,
    listing_changes: dict[str, Any],
    dataset_changes: dict[str, Any],
    error: type[ProvexError],
    message: str,
) -> None:
    with pytest.raises(error, match=message) as raised:
        create(conn, offer(**listing_changes), dataset(**dataset_changes))
    assert type(raised.value) is error
    assert count(conn) == 0


CREATE_ALLOWED_DRAFTS = {
    "suspended certificate": {"status": "suspended"},
    "core data": {"grade": Grade.CORE},
    "not tradable": {"tradable": False},
}


@pytest.mark.parametrize(
    "dataset_changes", CREATE_ALLOWED_DRAFTS.values(), ids=CREATE_ALLOWED_DRAFTS.keys()
)
def test_drafts_need_no_listable_certificate(
    conn: sqlite3.Connection, dataset_changes: dict[str, Any]
) -> None:
    assert create(conn, certified=dataset(**dataset_changes)).state == DRAFT


def test_create_refuses_a_bad_node_id(conn: sqlite3.Connection) -> None:
    with pytest.raises(InvalidArgument, match="node id"):
        create(conn, node="GD-GZDE")


DATASET_REFUSED: dict[str, tuple[dict[str, Any], str]] = {
    "bad id": ({"dataset_id": "440100-2026-123"}, "dataset.dataset_id: "),
    "no id": ({"dataset_id": ""}, "dataset.dataset_id is required"),
    "version 0": ({"certificate_version": 0}, "dataset.certificate_version must be"),
    "version not int": ({"certificate_version": "1"}, "dataset.certificate_version must be"),
    "bad holder": ({"holder": "nope"}, "dataset.holder: "),
    "no categories": ({"categories": ()}, r"dataset.categories must list 1\.\.10"),
    "categories as text": ({"categories": "transport"}, "dataset.categories must be a list"),
    "bad category": ({"categories": ("Transport",)}, "is not a catalog code"),
    "repeated category": ({"categories": ("a", "a")}, "lists a category twice"),
    "grade 0": ({"grade": 0}, "dataset.grade must be a grade"),
    "grade 4": ({"grade": 4}, "dataset.grade must be a grade"),
    "bad region": ({"region_code": "4401"}, "dataset.region_code must be 6 ASCII digits"),
    "tradable not bool": ({"tradable": 1}, "dataset.tradable must be a bool"),
    "unknown status": ({"status": "frozen"}, "dataset.status must be one of"),
}


@pytest.mark.parametrize("changes, message", DATASET_REFUSED.values(), ids=DATASET_REFUSED.keys())
def test_certified_dataset_refuses(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        dataset(**changes)


def test_certified_dataset_normalizes() -> None:
    certified = dataset(
        dataset_id=DATASET.lower(),
        holder=HOLDER.lower(),
        categories=["transport.road", "transport.port"],
        grade=common_pb2.GRADE_IMPORTANT,
    )
    assert certified.dataset_id == DATASET
    assert certified.holder == HOLDER
    assert certified.categories == ("transport.road", "transport.port")
    assert certified.grade == 2
    assert type(certified.grade) is int


# ---------------------------------------------------------------- the state machine

# (from, to) -> None when allowed, else the rule named in the refusal.
TRANSITIONS: dict[tuple[int, int], str | None] = {
    (DRAFT, DRAFT): None,
    (DRAFT, LISTED): None,
    (DRAFT, SUSPENDED): "listing-state-machine",
    (DRAFT, DELISTED): None,
    (LISTED, DRAFT): "listing-state-machine",
    (LISTED, LISTED): None,
    (LISTED, SUSPENDED): None,
    (LISTED, DELISTED): None,
    (SUSPENDED, DRAFT): "listing-state-machine",
    (SUSPENDED, LISTED): None,
    (SUSPENDED, SUSPENDED): None,
    (SUSPENDED, DELISTED): None,
    (DELISTED, DRAFT): "delisted-is-final",
    (DELISTED, LISTED): "delisted-is-final",
    (DELISTED, SUSPENDED): "delisted-is-final",
    (DELISTED, DELISTED): None,
}


def test_the_transition_table_is_the_modules() -> None:
    for (source, target), rule in TRANSITIONS.items():
        allowed = source == target or target in listings.TRANSITIONS[source]
        assert allowed == (rule is None), (source, target)


@pytest.mark.parametrize(
    "source, target, rule",
    [(source, target, rule) for (source, target), rule in TRANSITIONS.items()],
    ids=[f"{STATE_NAMES[s]}->{STATE_NAMES[t]}" for s, t in TRANSITIONS],
)
def test_transitions(conn: sqlite3.Connection, source: int, target: int, rule: str | None) -> None:
    listing = in_state(conn, source)
    later = NOW + timedelta(minutes=5)
    if rule is not None:
        with pytest.raises(FailedPrecondition, match=f"rule {rule}: it cannot become"):
            move(conn, listing.listing_id, target, now=later)
        assert listings.get_listing(conn, listing.listing_id) == listing
        return
    moved = move(conn, listing.listing_id, target, reason="operator asked", now=later)
    assert moved.state == target
    assert listings.get_listing(conn, listing.listing_id) == moved
    if source == target:
        assert moved == listing  # A no-op: not even updated_at moves.
    else:
        assert moved.updated_at == to_timestamp(later)
        stored_reason = conn.execute(
            "SELECT state_reason FROM listings WHERE listing_id = ?", (listing.listing_id,)
        ).fetchone()[0]
        assert stored_reason == "operator asked"


SET_STATE_REFUSED: dict[str, tuple[int, dict[str, Any] | None, type[ProvexError], str]] = {
    "unspecified state": (0, {}, InvalidArgument, "state must be one of DRAFT, LISTED"),
    "unknown state": (9, {}, InvalidArgument, "state must be one of"),
    "no certificate": (LISTED, None, InvalidArgument, "dataset: listing needs the current"),
    "another dataset's certificate": (
        LISTED,
        {"dataset_id": OTHER_DATASET},
        InvalidArgument,
        "dataset: the certificate given is of dataset",
    ),
    "another holder": (
        LISTED,
        {"holder": OTHER_HOLDER},
        InvalidArgument,
        "holder: listing .* is offered by",
    ),
    "suspended certificate": (
        LISTED,
        {"status": "suspended"},
        FailedPrecondition,
        "rule valid-certificate: .* is suspended",
    ),
    "revoked certificate": (
        LISTED,
        {"status": "revoked"},
        FailedPrecondition,
        "rule valid-certificate: .* is revoked",
    ),
    "core data": (LISTED, {"grade": Grade.CORE}, FailedPrecondition, "rule no-core-data"),
    "not tradable": (
        LISTED,
        {"tradable": False},
        FailedPrecondition,
        "rule tradable-categories-only",
    ),
}


@pytest.mark.parametrize(
    "state, dataset_changes, error, message",
    SET_STATE_REFUSED.values(),
    ids=SET_STATE_REFUSED.keys(),
)
def test_set_state_refuses(
    conn: sqlite3.Connection,
    state: int,
    dataset_changes: dict[str, Any] | None,
    error: type[ProvexError],
    message: str,
) -> None:
    listing = create(conn)
    certified = None if dataset_changes is None else dataset(**dataset_changes)
    with pytest.raises(error, match=message), transaction(conn):
        listings.set_state(conn, listing.listing_id, state, "", certified, NOW)
    assert listings.get_listing(conn, listing.listing_id) == listing


def test_set_state_refuses_an_older_certificate(conn: sqlite3.Connection) -> None:
    listing = create(conn, certified=dataset(certificate_version=3))
    with pytest.raises(FailedPrecondition, match="certificate version 2 is older than version 3"):
        move(conn, listing.listing_id, LISTED, dataset(certificate_version=2))


def test_set_state_refuses_unknown_and_malformed_ids(conn: sqlite3.Connection) -> None:
    with pytest.raises(NotFound, match="listing L0123456789abcdef not found"):
        move(conn, "L0123456789ABCDEF", LISTED)
    with pytest.raises(InvalidArgument, match="listing_id must be L followed by 16 hex"):
        move(conn, "listing-1", LISTED)
    with pytest.raises(InvalidArgument, match="reason must be a string of at most 1,000"):
        move(conn, create(conn).listing_id, DELISTED, reason="x" * 1001)


def test_listing_takes_the_newest_certificate(conn: sqlite3.Connection) -> None:
    listing = in_state(conn, SUSPENDED)
    renewed = dataset(
        certificate_version=2,
        categories=("transport.road", "transport.port"),
        grade=Grade.IMPORTANT,
        region_code="440106",
    )
    relisted = move(conn, listing.listing_id, LISTED, renewed)
    assert relisted.certificate_version == 2
    assert list(relisted.categories) == ["transport.road", "transport.port"]
    assert relisted.grade == common_pb2.GRADE_IMPORTANT
    assert relisted.region_code == "440106"
    assert listings.get_listing(conn, listing.listing_id) == relisted


# ---------------------------------------------------------------- updates


def update(
    conn: sqlite3.Connection,
    listing: market_pb2.Listing,
    fields: set[str] | None = None,
    now: datetime = NOW,
) -> market_pb2.Listing:
    with transaction(conn):
        return listings.update_listing(conn, listing, now, fields=fields)


def test_update_replaces_the_editable_fields(conn: sqlite3.Connection) -> None:
    listing = in_state(conn, LISTED)
    edited = market_pb2.Listing()
    edited.CopyFrom(listing)  # Read, modify, write back (updated_at included).
    edited.title = "广州市道路交通流量 2026"
    edited.description = ""
    edited.price.fen = 99
    edited.pricing_model = market_pb2.PRICING_MODEL_SUBSCRIPTION
    edited.licence.term_days = 30
    edited.auto_approve = True
    later = NOW + timedelta(hours=1)
    updated = update(conn, edited, now=later)
    assert updated.title == "广州市道路交通流量 2026"
    assert updated.description == ""
    assert updated.price.fen == 99
    assert updated.pricing_model == market_pb2.PRICING_MODEL_SUBSCRIPTION
    assert updated.licence.term_days == 30
    assert updated.auto_approve
    assert updated.state == LISTED
    assert updated.updated_at == to_timestamp(later)
    assert listings.get_listing(conn, listing.listing_id) == updated


def test_update_with_fields_changes_only_those(conn: sqlite3.Connection) -> None:
    listing = create(conn)
    patch = market_pb2.Listing(listing_id=listing.listing_id, price=common_pb2.Money(fen=5))
    updated = update(conn, patch, fields={"price"})
    expected = market_pb2.Listing()
    expected.CopyFrom(listing)
    expected.price.fen = 5
    assert updated == expected


UPDATE_REFUSED: dict[str, tuple[dict[str, Any], set[str] | None, type[ProvexError], str]] = {
    "dataset_id": (
        {"dataset_id": OTHER_DATASET},
        None,
        InvalidArgument,
        "dataset_id is not editable",
    ),
    "certificate_version": (
        {"certificate_version": 7},
        None,
        InvalidArgument,
        "certificate_version is not editable",
    ),
    "node_id": ({"node_id": "gd-szde"}, None, InvalidArgument, "node_id is not editable"),
    "holder": ({"holder": OTHER_HOLDER}, None, InvalidArgument, "holder is not editable"),
    "categories": ({"categories": ["health"]}, None, InvalidArgument, "categories is not editable"),
    "grade": (
        {"grade": common_pb2.GRADE_IMPORTANT},
        None,
        InvalidArgument,
        "grade is not editable",
    ),
    "region_code": (
        {"region_code": "440300"},
        None,
        InvalidArgument,
        "region_code is not editable",
    ),
    "state": (
        {"state": LISTED},
        None,
        InvalidArgument,
        r"state is not editable \(use SetListingState\)",
    ),
    "unknown field in the mask": (
        {},
        {"price", "grade"},
        InvalidArgument,
        "fields: grade not editable",
    ),
    "stale read": (
        {"updated_at": to_timestamp(NOW - timedelta(seconds=1))},
        None,
        FailedPrecondition,
        "changed since it was read",
    ),
    "empty title": ({"title": ""}, None, InvalidArgument, "title must be 1..200"),
    "no price": ({"price": None}, {"price"}, InvalidArgument, "price is required"),
    "bad licence": ({"licence": _licence(term_days=0)}, None, InvalidArgument, "licence.term_days"),
}


@pytest.mark.parametrize(
    "changes, fields, error, message", UPDATE_REFUSED.values(), ids=UPDATE_REFUSED.keys()
)
def test_update_refuses(
    conn: sqlite3.Connection,
    changes: dict[str, Any],
    fields: set[str] | None,
    error: type[ProvexError],
    message: str,
) -> None:
    listing = create(conn)
    edited = market_pb2.Listing()
    edited.CopyFrom(listing)
    apply(edited, changes)
    with pytest.raises(error, match=message):
        update(conn, edited, fields)
    assert listings.get_listing(conn, listing.listing_id) == listing


def test_update_refuses_delisted_and_unknown(conn: sqlite3.Connection) -> None:
    delisted = in_state(conn, DELISTED)
    with pytest.raises(FailedPrecondition, match="rule delisted-is-final"):
        update(conn, delisted)
    with pytest.raises(NotFound):
        update(conn, market_pb2.Listing(listing_id="L0000000000000000"))
    with pytest.raises(InvalidArgument, match="listing_id must be"):
        update(conn, market_pb2.Listing(listing_id=""))


def test_get_listing_refuses(conn: sqlite3.Connection) -> None:
    with pytest.raises(NotFound, match="listing L00000000000000aa not found"):
        listings.get_listing(conn, " L00000000000000AA ")
    with pytest.raises(InvalidArgument, match="listing_id must be"):
        listings.get_listing(conn, "L0")


# ---------------------------------------------------------------- sync


def test_suspend_listings_of_dataset(conn: sqlite3.Connection) -> None:
    listed = [in_state(conn, LISTED) for _ in range(3)]
    draft = in_state(conn, DRAFT)
    delisted = in_state(conn, DELISTED)
    other = create(
        conn, offer(dataset_id=OTHER_DATASET, state=LISTED), dataset(dataset_id=OTHER_DATASET)
    )
    later = NOW + timedelta(minutes=1)
    with transaction(conn):
        suspended = listings.suspend_listings_of_dataset(
            conn, DATASET.lower(), "certificate suspended", later
        )
    assert suspended == sorted(item.listing_id for item in listed)
    for item in listed:
        stored = listings.get_listing(conn, item.listing_id)
        assert stored.state == SUSPENDED
        assert stored.updated_at == to_timestamp(later)
    assert listings.get_listing(conn, draft.listing_id) == draft
    assert listings.get_listing(conn, delisted.listing_id) == delisted
    assert listings.get_listing(conn, other.listing_id) == other
    with transaction(conn):
        assert listings.suspend_listings_of_dataset(conn, DATASET, "again", later) == []
    # A suspension is lifted by the operator once the certificate is active again.
    assert move(conn, listed[0].listing_id, LISTED).state == LISTED


def test_revocation_blocks_every_listing_of_the_dataset(conn: sqlite3.Connection) -> None:
    listed = in_state(conn, LISTED)
    draft = in_state(conn, DRAFT)
    with transaction(conn):
        assert listings.suspend_listings_of_dataset(
            conn, DATASET, "certificate revoked", NOW, revoked=True
        ) == [listed.listing_id]
    for listing_id in (listed.listing_id, draft.listing_id):
        with pytest.raises(FailedPrecondition, match=r"rule valid-certificate: .* revoked"):
            move(conn, listing_id, LISTED, dataset(status="active"))
    assert move(conn, draft.listing_id, DELISTED).state == DELISTED


def test_suspend_listings_of_dataset_refuses_a_bad_id(conn: sqlite3.Connection) -> None:
    with pytest.raises(InvalidArgument, match="dataset_id: "):
        listings.suspend_listings_of_dataset(conn, "nope", "", NOW)


def test_search_scopes() -> None:
    assert listings.search_scopes(["transport.road.traffic", "transport.port"], "440106") == [
        "c:transport",
        "c:transport.port",
        "c:transport.road",
        "c:transport.road.traffic",
        "r:44",
        "r:4401",
        "r:440106",
    ]


# ---------------------------------------------------------------- bulk import

FULL_LINE = {
    "dataset_id": DATASET,
    "certificate_version": 1,
    "holder": HOLDER,
    "title": "广州市道路交通流量 2025",
    "description": "每小时",
    "categories": ["transport.road"],
    "grade": "general",
    "region_code": "440100",
    "price": 123456,
    "pricing_model": "one_time",
    "licence": {
        "purposes": ["research"],
        "term_days": 365,
        "no_resale": True,
        "domestic_only": True,
        "onward_transfer_allowed": False,
    },
    "delivery": "FILE",
    "state": "LISTING_STATE_LISTED",
    "auto_approve": True,
}


def test_parse_import_line() -> None:
    parsed = listings.parse_import_line(json.dumps(FULL_LINE, ensure_ascii=False), 1)
    assert parsed == market_pb2.Listing(
        dataset_id=DATASET,
        certificate_version=1,
        holder=HOLDER,
        title="广州市道路交通流量 2025",
        description="每小时",
        categories=["transport.road"],
        grade=common_pb2.GRADE_GENERAL,
        region_code="440100",
        price=common_pb2.Money(fen=123456),
        pricing_model=market_pb2.PRICING_MODEL_ONE_TIME,
        licence=market_pb2.LicenceTerms(
            purposes=["research"], term_days=365, no_resale=True, domestic_only=True
        ),
        delivery=market_pb2.DELIVERY_METHOD_FILE,
        state=LISTED,
        auto_approve=True,
    )


def test_a_parsed_line_creates_a_listing(conn: sqlite3.Connection) -> None:
    line = {
        "dataset_id": DATASET,
        "price": 0,
        "pricing_model": "per-query",
        "licence": {"purposes": ["研究"], "term_days": 30},
    }
    created = create(conn, listings.parse_import_line(json.dumps(line), 3))
    assert created.pricing_model == market_pb2.PRICING_MODEL_PER_QUERY
    assert created.title == "广州市道路交通流量 2025"


IMPORT_REFUSED: dict[str, tuple[str, str]] = {
    "not JSON": ('{"price": 1', "line 7: not valid JSON"),
    "not an object": ("[1, 2]", "line 7: a record must be a JSON object"),
    "unknown field": ('{"prize": 1}', "line 7: unknown field 'prize'"),
    "listing_id": ('{"listing_id": "L0123456789abcdef"}', "line 7: listing_id is set by the node"),
    "node_id": ('{"node_id": "gd-gzde"}', "line 7: node_id is set by the node"),
    "repeated key": ('{"price": 1, "price": 2}', "line 7: field 'price' appears twice"),
    "price as decimal": ('{"price": 12.5}', "line 7: price must be an integer number of fen"),
    "price as text": ('{"price": "100"}', "line 7: price must be an integer number of fen"),
    "price as bool": ('{"price": true}', "line 7: price must be an integer"),
    "negative price": ('{"price": -1}', "line 7: price must be within 0"),
    "title not text": ('{"title": 5}', "line 7: title must be a string"),
    "title too long": (json.dumps({"title": "x" * 201}), "line 7: title must be 1..200"),
    "categories as text": ('{"categories": "transport"}', "line 7: categories must be a list"),
    "unknown pricing model": (
        '{"pricing_model": "auction"}',
        "line 7: pricing_model must be one of one_time, subscription, per_query",
    ),
    "unspecified pricing model": (
        '{"pricing_model": "unspecified"}',
        "line 7: pricing_model must be one of",
    ),
    "unknown grade": (
        '{"grade": "secret"}',
        "line 7: grade must be one of general, important, core",
    ),
    "unknown state": ('{"state": "archived"}', "line 7: state must be one of draft"),
    "numeric enum": ('{"delivery": 1}', "line 7: delivery must be one of file"),
    "licence not an object": ('{"licence": ["research"]}', "line 7: licence must be an object"),
    "unknown licence field": (
        '{"licence": {"resale": true}}',
        "line 7: unknown field licence.resale",
    ),
    "negative term": (
        '{"licence": {"term_days": -1}}',
        "line 7: licence.term_days must be an integer",
    ),
    "purposes not a list": (
        '{"licence": {"purposes": "research"}}',
        "line 7: licence.purposes must be a list",
    ),
    "term too long": (
        '{"licence": {"purposes": ["a"], "term_days": 4000}}',
        "line 7: licence.term_days must be within 1..3650",
    ),
    "flag as text": ('{"auto_approve": "yes"}', "line 7: auto_approve must be true or false"),
    "version too big": (
        '{"certificate_version": 4294967296}',
        "line 7: certificate_version must be an integer",
    ),
}


@pytest.mark.parametrize("text, message", IMPORT_REFUSED.values(), ids=IMPORT_REFUSED.keys())
def test_parse_import_line_refuses(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(").replace(")", r"\)")):
        listings.parse_import_line(text, 7)


def test_parse_jsonl_numbers_lines_and_skips_blank_ones() -> None:
    lines = [
        json.dumps({"dataset_id": DATASET, "price": 1}),
        "",
        "   ",
        '{"price": "1"}',
        json.dumps({"dataset_id": OTHER_DATASET, "price": 2}),
    ]
    results = list(listings.parse_jsonl(lines))
    assert [line for line, _ in results] == [1, 4, 5]
    first, bad, last = (outcome for _, outcome in results)
    assert isinstance(first, market_pb2.Listing) and first.price.fen == 1
    assert isinstance(bad, InvalidArgument) and str(bad).startswith("line 4: price")
    assert isinstance(last, market_pb2.Listing) and last.dataset_id == OTHER_DATASET


CSV_TEXT = (
    "\ufeffdataset_id, title ,description,price,pricing_model,licence.purposes,"
    "licence.term_days,licence.no_resale,auto_approve,categories,state\n"
    f'{DATASET},广州市道路交通流量,"多行\n描述",100,one_time,研究; 规划 ;,365,是,no,'
    "transport.road;transport.port,listed\n"
    "\n"
    f"{OTHER_DATASET},,,abc,one_time,research,30,,,,\n"
    f"{OTHER_DATASET},,,5,subscription,research,30,maybe,,,\n"
    f"{OTHER_DATASET},,,5\n"
    f"{OTHER_DATASET},Shenzhen,,0,per_query,research,3650,false,TRUE,,draft\n"
)


def test_parse_csv() -> None:
    results = list(listings.parse_csv(io.StringIO(CSV_TEXT, newline="")))
    assert [line for line, _ in results] == [2, 5, 6, 7, 8]
    first = results[0][1]
    assert first == market_pb2.Listing(
        dataset_id=DATASET,
        title="广州市道路交通流量",
        description="多行\n描述",
        price=common_pb2.Money(fen=100),
        pricing_model=market_pb2.PRICING_MODEL_ONE_TIME,
        licence=market_pb2.LicenceTerms(purposes=["研究", "规划"], term_days=365, no_resale=True),
        categories=["transport.road", "transport.port"],
        state=LISTED,
    )
    errors = [str(outcome) for _, outcome in results[1:4]]
    assert errors == [
        "line 5: price must be an integer, got 'abc'",
        "line 6: licence.no_resale must be true or false, got 'maybe'",
        "line 7: 4 cells, but the header has 11 columns",
    ]
    last = results[4][1]
    assert isinstance(last, market_pb2.Listing)
    assert last.auto_approve and last.state == DRAFT and last.licence.term_days == 3650


CSV_HEADER_REFUSED = {
    "unknown column": ("dataset_id,prize\n", "line 1: unknown column 'prize'"),
    "repeated column": ("price,price\n", "line 1: the header names a column twice"),
    "nested licence": ("licence\n", "line 1: unknown column 'licence'"),
    "node column": ("listing_id\n", "line 1: unknown column 'listing_id'"),
    "unterminated quote": ('price,title\n1,"abc\n', "malformed CSV"),
}


@pytest.mark.parametrize(
    "text, message", CSV_HEADER_REFUSED.values(), ids=CSV_HEADER_REFUSED.keys()
)
def test_parse_csv_refuses_the_file(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        list(listings.parse_csv(io.StringIO(text, newline="")))


def test_parse_csv_of_an_empty_file() -> None:
    assert list(listings.parse_csv([])) == []
    assert list(listings.parse_csv(["price,title\n"])) == []


def test_parse_csv_row_refuses() -> None:
    with pytest.raises(InvalidArgument, match="line 9: unknown column 'colour'"):
        listings.parse_csv_row({"colour": "red"}, 9)
    with pytest.raises(InvalidArgument, match=r"line 9: licence\.term_days must be an integer"):
        listings.parse_csv_row({"licence.term_days": "-3"}, 9)
    row = listings.parse_csv_row({"price": " 7 ", "title": None, "grade": "important"}, 9)
    assert row.price.fen == 7 and row.grade == common_pb2.GRADE_IMPORTANT


def test_stored_rows_do_not_repeat_the_text(conn: sqlite3.Connection) -> None:
    listing = create(conn)
    blob = conn.execute("SELECT listing FROM listings").fetchone()[0]
    stored = market_pb2.Listing.FromString(blob)
    assert stored.title == "" and stored.description == ""
    stored.title, stored.description = listing.title, listing.description
    assert stored == listing


def test_dataclass_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        dataset().status = "revoked"  # type: ignore[misc]
