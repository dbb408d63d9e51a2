"""Tests of node.search: Chinese and English text, filters, ranking, stable pages, validation.

Listings are written with :mod:`node.listings` into a real SQLite file
migrated with ``listings.SCHEMA`` then ``search.SCHEMA``; searches run on a
second, read-only connection to the same file, as the node's read path does.
After the writes of each scenario, :func:`check_index` compares the search
structures (full-text index, scopes, statistics) with what the LISTED rows
say they must be.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import re
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from node import listings, search
from node.listings import CertifiedDataset
from provex.errors import InvalidArgument
from provex.grading import Grade
from provex.ids import CreditCode, DatasetId
from provex.storage import Migration, migrate, open_connection, transaction
from provex.v1 import common_pb2, market_pb2, node_pb2

NOW = datetime(2026, 3, 14, 9, 30, tzinfo=UTC)
NODE = "gd-gzde"
HOLDER = CreditCode.from_parts("9", "1", "440100", "MA5D0001").code
OTHER_HOLDER = CreditCode.from_parts("9", "1", "440300", "MA5D0002").code
LISTED = market_pb2.LISTING_STATE_LISTED
SUSPENDED = market_pb2.LISTING_STATE_SUSPENDED
DELISTED = market_pb2.LISTING_STATE_DELISTED
DRAFT = market_pb2.LISTING_STATE_DRAFT


class Market:
    """A node database: a writer to create listings, a read-only connection to search."""

    def __init__(self, path: Path) -> None:
        self.writer = open_connection(path)
        migrate(self.writer, (Migration(1, "listings", listings.SCHEMA + search.SCHEMA),))
        self.reader = open_connection(path, readonly=True)
        self.serials = itertools.count(1)
        self.names: dict[str, str] = {}  # listing id -> name given by the test

    def add(
        self,
        name: str,
        title: str,
        description: str = "",
        *,
        state: int = LISTED,
        categories: tuple[str, ...] = ("transport.road",),
        grade: Grade = Grade.GENERAL,
        region: str = "440100",
        fen: int = 100,
        holder: str = HOLDER,
    ) -> market_pb2.Listing:
        certified = self.dataset(
            next(self.serials),
            title=title,
            description=description,
            categories=categories,
            grade=grade,
            region_code=region,
            holder=holder,
        )
        offer = market_pb2.Listing(
            dataset_id=certified.dataset_id,
            title=title,
            description=description,
            price=common_pb2.Money(fen=fen),
            pricing_model=market_pb2.PRICING_MODEL_ONE_TIME,
            licence=market_pb2.LicenceTerms(purposes=["research"], term_days=365),
            state=LISTED if state == LISTED else DRAFT,
        )
        with transaction(self.writer):
            listing = listings.create_listing(self.writer, offer, certified, NODE, NOW)
            if state in (SUSPENDED, DELISTED):
                listing = listings.set_state(
                    self.writer, listing.listing_id, LISTED, "", certified, NOW
                )
                listing = listings.set_state(
                    self.writer, listing.listing_id, state, "", certified, NOW
                )
        self.names[listing.listing_id] = name
        return listing

    @staticmethod
    def dataset(serial: int, **changes: Any) -> CertifiedDataset:
        fields: dict[str, Any] = {
            "dataset_id": str(DatasetId("440100", 2026, serial)),
            "certificate_version": 1,
            "holder": HOLDER,
            "title": "",
            "description": "",
            "categories": ("transport.road",),
            "grade": Grade.GENERAL,
            "region_code": "440100",
            "tradable": True,
        }
        fields.update(changes)
        return CertifiedDataset(**fields)

    def certified(self, listing: market_pb2.Listing) -> CertifiedDataset:
        return CertifiedDataset(
            dataset_id=listing.dataset_id,
            certificate_version=listing.certificate_version,
            holder=listing.holder,
            title=listing.title,
            description=listing.description,
            categories=tuple(listing.categories),
            grade=listing.grade,
            region_code=listing.region_code,
            tradable=True,
        )

    def set_state(self, listing: market_pb2.Listing, state: int) -> None:
        with transaction(self.writer):
            listings.set_state(
                self.writer, listing.listing_id, state, "", self.certified(listing), NOW
            )

    def search(self, **fields: Any) -> search.SearchResult:
        return search.search(self.reader, query(**fields))

    def found(self, **fields: Any) -> list[str]:
        """The names of every hit, over all pages, in order."""
        names: list[str] = []
        token = ""
        while True:
            result = self.search(page_token=token, page_size=100, **fields)
            names.extend(self.names[hit.listing.listing_id] for hit in result.hits)
            token = result.next_page_token
            if not token:
                assert result.total == len(names)
                return names

    def close(self) -> None:
        self.reader.close()
        self.writer.close()


def query(**fields: Any) -> market_pb2.SearchQuery:
    for name in ("min_price", "max_price"):
        if isinstance(fields.get(name), int):
            fields[name] = common_pb2.Money(fen=fields[name])
    return market_pb2.SearchQuery(**fields)


@pytest.fixture
def market(tmp_path: Path) -> Iterator[Market]:
    opened = Market(tmp_path / "node.db")
    yield opened
    check_index(opened.writer)
    opened.close()


def check_index(conn: sqlite3.Connection) -> None:
    """The search structures hold exactly what the LISTED rows say they must."""
    rows = conn.execute(
        "SELECT seq, listing_id, title, description, categories, region_code, grade, price_fen "
        "FROM listings WHERE state = ?",
        (LISTED,),
    ).fetchall()
    conn.execute(
        "CREATE VIRTUAL TABLE IF NOT EXISTS temp.fts_rows "
        "USING fts5vocab(main, listings_fts, instance)"
    )
    indexed = {doc for (doc,) in conn.execute("SELECT DISTINCT doc FROM temp.fts_rows")}
    assert indexed == {seq for seq, *_ in rows}
    scopes = set(
        conn.execute("SELECT scope, listing_id, seq, grade, price_fen FROM listing_scopes")
    )
    expected = {
        (scope, listing_id, seq, grade, fen)
        for seq, listing_id, _, _, categories, region, grade, fen in rows
        for scope in listings.search_scopes(json.loads(categories), region)
    }
    assert scopes == expected
    stats = conn.execute("SELECT listed, length FROM search_stats").fetchone()
    assert stats == (len(rows), sum(len(row[2]) + len(row[3]) for row in rows))
    conn.execute("INSERT INTO listings_fts(listings_fts) VALUES ('integrity-check')")


# ---------------------------------------------------------------- text

CORPUS: dict[str, tuple[str, str]] = {
    "gz-zh": ("广州市道路交通流量 2025", "每小时统计的道路交通数据，覆盖全市主干道。"),
    "gz-en": ("Guangzhou road traffic flow 2025", "Hourly vehicle counts on arterial roads."),
    "sz-zh": ("深圳市公交刷卡记录", "按线路汇总的乘客流量"),
    "weather": ("Weather observations 2024", "Also covers road traffic disruption due to storms."),
    "data": ("数据", ""),
    "hospital": ("广州医院门诊统计", "Outpatient visits by department; 数据按月更新"),
}

TEXT_CASES: dict[str, tuple[str, list[str]]] = {
    "chinese phrase": ("交通流量", ["gz-zh"]),
    "chinese, in the description only": ("主干道", ["gz-zh"]),
    "english word": ("traffic", ["gz-en", "weather"]),
    "english, case folded": ("TRAFFIC Flow", ["gz-en"]),
    "english substring": ("utpatien", ["hospital"]),
    "two chinese characters": ("数据", ["data", "gz-zh", "hospital"]),
    "two characters ending a title": ("记录", ["sz-zh"]),
    "two characters that are a whole title": ("数据", ["data", "gz-zh", "hospital"]),
    "one character": ("深", ["sz-zh"]),
    "two characters, twice": ("交通 交通", ["gz-zh"]),
    "chinese and digits": ("广州 2025", ["gz-zh"]),
    "chinese or english title": ("2025 road", ["gz-en"]),
    "every term required": ("广州 门诊", ["hospital"]),
    "mixed lengths": ("流量 每小时", ["gz-zh"]),
    "digits": ("2024", ["weather"]),
    "nothing": ("上海", []),
    "a term occurring nowhere": ("交通 qq", []),
    "quotes are literal": ('"traffic"', []),
    "fts syntax is literal": ("traffic*", []),
    "fts operators are literal": ("NEAR(traffic", []),
    "like wildcards are literal": ("%", []),
    "underscore is literal": ("_", []),
    "white space only": ("  \u3000 ", ["data", "gz-en", "gz-zh", "hospital", "sz-zh", "weather"]),
}


@pytest.fixture
def corpus(market: Market) -> Market:
    for name, (title, description) in CORPUS.items():
        market.add(name, title, description)
    return market


@pytest.mark.parametrize("text, names", TEXT_CASES.values(), ids=TEXT_CASES.keys())
def test_text(corpus: Market, text: str, names: list[str]) -> None:
    assert sorted(corpus.found(text=text)) == sorted(names)


@pytest.mark.parametrize("text, names", TEXT_CASES.values(), ids=TEXT_CASES.keys())
def test_text_through_like(
    corpus: Market, monkeypatch: pytest.MonkeyPatch, text: str, names: list[str]
) -> None:
    """Short terms too common to expand are checked with LIKE: the same listings match."""
    monkeypatch.setattr(search, "MAX_EXPANSION", 0)
    assert sorted(corpus.found(text=text)) == sorted(names)


def test_ranking_puts_title_hits_first(corpus: Market) -> None:
    result = corpus.search(text="traffic")
    assert [corpus.names[hit.listing.listing_id] for hit in result.hits] == ["gz-en", "weather"]
    assert result.hits[0].score > result.hits[1].score > 0
    result = corpus.search(text="数据")
    assert corpus.names[result.hits[0].listing.listing_id] == "data"


def test_shorter_text_ranks_higher_and_ties_go_by_listing_id(market: Market) -> None:
    short = market.add("short", "traffic", "x")
    long = market.add("long", "traffic", "x" * 400)
    twins = [market.add(f"twin{i}", "traffic twin", "same") for i in range(3)]
    result = market.search(text="traffic")
    ids = [hit.listing.listing_id for hit in result.hits]
    assert ids[0] == short.listing_id
    assert ids[-1] == long.listing_id
    assert ids[1:4] == sorted(twin.listing_id for twin in twins)
    scores = [hit.score for hit in result.hits]
    assert scores == sorted(scores, reverse=True)
    assert len(set(scores[1:4])) == 1


def test_a_rare_term_weighs_more(market: Market) -> None:
    """Two listings alike but for which term they repeat: the rarer term's wins."""
    for i in range(10):
        market.add(f"filler{i}", f"counts {i:02d}")
    rare = market.add("rare-twice", "typhoon typhoon counts")
    common = market.add("common-twice", "typhoon counts counts")
    result = market.search(text="typhoon counts")
    assert [hit.listing.listing_id for hit in result.hits] == [rare.listing_id, common.listing_id]
    assert result.hits[0].score > result.hits[1].score
    result = market.search(text="counts typhoon")  # Term order does not matter.
    assert [hit.listing.listing_id for hit in result.hits] == [rare.listing_id, common.listing_id]


def test_filter_only_queries_score_zero_in_listing_id_order(corpus: Market) -> None:
    result = corpus.search()
    assert [hit.score for hit in result.hits] == [0.0] * len(CORPUS)
    ids = [hit.listing.listing_id for hit in result.hits]
    assert ids == sorted(ids)
    assert result.total == len(CORPUS)
    assert result.next_page_token == ""


# ---------------------------------------------------------------- only LISTED


def test_only_listed_listings_are_found(market: Market) -> None:
    market.add("listed", "道路交通流量")
    market.add("draft", "道路交通流量 草稿", state=DRAFT)
    market.add("suspended", "道路交通流量 暂停", state=SUSPENDED)
    market.add("delisted", "道路交通流量 下架", state=DELISTED)
    for fields in ({"text": "交通流量"}, {"text": "交通"}, {}, {"category_prefix": "transport"}):
        assert market.found(**fields) == ["listed"], fields
    assert market.search(text="草稿").total == 0


def test_state_changes_and_edits_follow_into_the_index(market: Market) -> None:
    listing = market.add("one", "港口集装箱吞吐量", categories=("transport.port",))
    market.set_state(listing, SUSPENDED)
    assert market.found(text="集装箱") == []
    assert market.found(category_prefix="transport.port") == []
    market.set_state(listing, LISTED)
    assert market.found(text="集装箱") == ["one"]
    with transaction(market.writer):
        edited = listings.get_listing(market.writer, listing.listing_id)
        edited.title = "Port container throughput"
        listings.update_listing(market.writer, edited, NOW, fields={"title"})
    assert market.found(text="集装箱") == []
    assert market.found(text="container") == ["one"]
    assert market.found(text="港口") == []
    market.set_state(listing, DELISTED)
    assert market.found(text="container") == []
    assert market.search().total == 0


def test_price_edits_follow_into_the_filters(market: Market) -> None:
    listing = market.add("one", "traffic", fen=500, categories=("transport.road",))
    market.add("two", "traffic", fen=700, categories=("transport.road",))
    assert market.found(category_prefix="transport", max_price=600) == ["one"]
    with transaction(market.writer):
        edited = listings.get_listing(market.writer, listing.listing_id)
        edited.price.fen = 900
        listings.update_listing(market.writer, edited, NOW, fields={"price"})
    for fields in (
        {"category_prefix": "transport"},
        {"region_prefix": "44"},
        {},
        {"text": "traffic"},
    ):
        assert market.found(max_price=600, **fields) == [], fields
        assert sorted(market.found(min_price=600, **fields)) == ["one", "two"], fields


def test_suspending_a_dataset_hides_its_listings(market: Market) -> None:
    first = market.add("first", "道路交通流量 A")
    market.add("second", "道路交通流量 B")
    assert sorted(market.found(text="交通流量")) == ["first", "second"]
    with transaction(market.writer):
        listings.suspend_listings_of_dataset(market.writer, first.dataset_id, "revoked", NOW)
    assert market.found(text="交通流量") == ["second"]
    assert market.found(region_prefix="440100") == ["second"]


def test_rebuilding_the_index_keeps_it_right(corpus: Market) -> None:
    corpus.set_state(listings.get_listing(corpus.writer, next(iter(corpus.names))), DELISTED)
    before = corpus.found(text="数据")
    corpus.writer.execute("INSERT INTO listings_fts(listings_fts) VALUES ('rebuild')")
    check_index(corpus.writer)
    assert corpus.found(text="数据") == before


# ---------------------------------------------------------------- filters


@pytest.fixture
def shelves(market: Market) -> Market:
    market.add("road", "r", categories=("transport.road",), region="440100", fen=100)
    market.add("road-port", "rp", categories=("transport.road", "transport.port"), fen=200)
    market.add("health", "h", categories=("health",), grade=Grade.IMPORTANT, region="440106")
    market.add("medical", "m", categories=("health.medical.inpatient",), region="440300", fen=0)
    market.add("healthcare", "hc", categories=("healthcare",), region="310000", fen=10**9)
    market.add("other", "o", categories=("finance",), region="110000", holder=OTHER_HOLDER)
    return market


FILTER_CASES: dict[str, tuple[dict[str, Any], list[str]]] = {
    "category root": ({"category_prefix": "transport"}, ["road", "road-port"]),
    "category leaf": ({"category_prefix": "transport.port"}, ["road-port"]),
    "category, not a string prefix": ({"category_prefix": "health"}, ["health", "medical"]),
    "category, deep": ({"category_prefix": "health.medical"}, ["medical"]),
    "category, unknown": ({"category_prefix": "energy"}, []),
    "grade": ({"grade": common_pb2.GRADE_IMPORTANT}, ["health"]),
    "grade general": (
        {"grade": common_pb2.GRADE_GENERAL},
        ["road", "road-port", "medical", "healthcare", "other"],
    ),
    "province": ({"region_prefix": "440000"}, ["road", "road-port", "health", "medical"]),
    "province prefix": ({"region_prefix": "44"}, ["road", "road-port", "health", "medical"]),
    "city": ({"region_prefix": "440100"}, ["road", "road-port", "health"]),
    "city prefix": ({"region_prefix": "4401"}, ["road", "road-port", "health"]),
    "district": ({"region_prefix": "440106"}, ["health"]),
    "odd prefix": ({"region_prefix": "4"}, ["road", "road-port", "health", "medical"]),
    "odd prefix, 3 digits": ({"region_prefix": "440"}, ["road", "road-port", "health", "medical"]),
    "municipality": ({"region_prefix": "310000"}, ["healthcare"]),
    "min price": ({"min_price": 200}, ["road-port", "healthcare"]),
    "max price": ({"max_price": 100}, ["road", "health", "medical", "other"]),
    "price range, inclusive": (
        {"min_price": 100, "max_price": 200},
        ["road", "road-port", "health", "other"],
    ),
    "free only": ({"max_price": 0}, ["medical"]),
    "min price 0 is a bound": (
        {"min_price": 0},
        ["road", "road-port", "health", "medical", "healthcare", "other"],
    ),
    "holder": ({"holder": OTHER_HOLDER.lower()}, ["other"]),
    "category and region": ({"category_prefix": "health", "region_prefix": "4401"}, ["health"]),
    "category and grade": (
        {"category_prefix": "health", "grade": common_pb2.GRADE_GENERAL},
        ["medical"],
    ),
    "category and holder": (
        {"category_prefix": "transport", "holder": HOLDER},
        ["road", "road-port"],
    ),
    "category and price": ({"category_prefix": "transport", "min_price": 150}, ["road-port"]),
    "odd region and grade": (
        {"region_prefix": "440", "grade": common_pb2.GRADE_IMPORTANT},
        ["health"],
    ),
    "holder and region": ({"holder": HOLDER, "region_prefix": "110000"}, []),
    "text and category": (
        {"text": "r", "category_prefix": "transport.road"},
        ["road", "road-port"],
    ),
    "text and province": ({"text": "h", "region_prefix": "44"}, ["health"]),
    "everything": (
        {
            "text": "rp",
            "category_prefix": "transport",
            "grade": common_pb2.GRADE_GENERAL,
            "region_prefix": "440100",
            "min_price": 200,
            "max_price": 200,
            "holder": HOLDER,
        },
        ["road-port"],
    ),
}


@pytest.mark.parametrize("fields, names", FILTER_CASES.values(), ids=FILTER_CASES.keys())
def test_filters(shelves: Market, fields: dict[str, Any], names: list[str]) -> None:
    found = shelves.found(**fields)
    assert sorted(found) == sorted(names)
    assert len(found) == len(set(found))


@pytest.mark.parametrize(
    "fields", [case[0] for case in FILTER_CASES.values()], ids=FILTER_CASES.keys()
)
def test_filter_queries_read_indexes_only(shelves: Market, fields: dict[str, Any]) -> None:
    """No statement of a search scans the listings table or a whole index."""
    statements: list[str] = []
    shelves.reader.set_trace_callback(statements.append)
    shelves.search(**fields)
    shelves.reader.set_trace_callback(None)
    for statement in statements:
        if not statement.startswith("SELECT") and not statement.startswith("WITH"):
            continue
        expanded = re.sub(r"\bInf\b", "9e999", statement)  # How the trace spells infinity.
        plan = [row[3] for row in shelves.reader.execute(f"EXPLAIN QUERY PLAN {expanded}")]
        scans = [
            step
            for step in plan
            if step.startswith("SCAN")
            and not step.startswith(
                ("SCAN listings_fts", "SCAN hits", "SCAN (subquery", "SCAN search_stats")
            )
        ]
        assert not scans, (statement, plan)


# ---------------------------------------------------------------- validation

QUERY_REFUSED: dict[str, tuple[dict[str, Any], str]] = {
    "text too long": ({"text": "x" * 201}, "text must be at most 200 characters"),
    "too many terms": ({"text": " ".join("abcdefghi")}, "text must have at most 8 terms"),
    "control character": ({"text": "traffic\x00"}, "text must not contain control characters"),
    "category upper-case": (
        {"category_prefix": "Health"},
        "category_prefix must be a dotted catalog code",
    ),
    "category trailing dot": ({"category_prefix": "health."}, "category_prefix must be"),
    "category wildcard": ({"category_prefix": "health%"}, "category_prefix must be"),
    "unknown grade": ({"grade": 7}, "grade must be GENERAL, IMPORTANT, CORE or unset"),
    "region letters": ({"region_prefix": "44a"}, "region_prefix must be 1..6 ASCII digits"),
    "region too long": ({"region_prefix": "4401061"}, "region_prefix must be 1..6"),
    "region full-width digits": ({"region_prefix": "４４"}, "region_prefix must be 1..6"),
    "bad holder": ({"holder": "91440100MA5D00010X"}, "holder: credit code"),
    "negative min price": ({"min_price": -1}, "min_price.fen must be within 0"),
    "absurd max price": ({"max_price": 10**12 + 1}, "max_price.fen must be within 0"),
    "min above max": (
        {"min_price": 300, "max_price": 200},
        r"min_price \(300 fen\) must not exceed max_price \(200 fen\)",
    ),
    "page too large": ({"page_size": 101}, "page_size must be at most 100, got 101"),
    "token not base64": ({"page_token": "!!!"}, "page_token is malformed"),
    "token not json": (
        {"page_token": base64.urlsafe_b64encode(b"hello").decode()},
        "page_token is malformed",
    ),
    "token too long": ({"page_token": "A" * 5000}, "page_token is malformed"),
}


@pytest.mark.parametrize("fields, message", QUERY_REFUSED.values(), ids=QUERY_REFUSED.keys())
def test_query_refused(market: Market, fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        market.search(**fields)
    with pytest.raises(InvalidArgument, match=message):
        search.check_query(query(**fields))


def test_query_limits_accepted(market: Market) -> None:
    market.add("one", "traffic")
    result = market.search(text=" ".join(["traffic"] * 20), page_size=100)  # Repeats fold.
    assert result.total == 1
    assert market.search(text="x" * 200, region_prefix="440106", page_size=1).total == 0
    search.check_query(query(text="abc def", grade=common_pb2.GRADE_CORE, page_size=100))


# ---------------------------------------------------------------- pages


def token_payload(token: str) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    return payload


def encode_payload(payload: dict[str, Any]) -> str:
    text = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(text).rstrip(b"=").decode()


def page_through(market: Market, page_size: int, between: Any = None, **fields: Any) -> list[str]:
    """Listing ids over every page; ``between(page_number)`` runs after each page."""
    seen: list[str] = []
    token = ""
    for number in itertools.count(1):
        result = market.search(page_token=token, page_size=page_size, **fields)
        assert len(result.hits) <= page_size
        seen.extend(hit.listing.listing_id for hit in result.hits)
        token = result.next_page_token
        if not token:
            return seen
        if between is not None:
            between(number)
    raise AssertionError("unreachable")


PAGING_QUERIES: dict[str, dict[str, Any]] = {
    "one chinese term": {"text": "交通"},
    "two terms (frozen idf)": {"text": "traffic 交通流量"},
    "short and long terms": {"text": "数据 traffic"},
    "filters only": {"category_prefix": "transport"},
    "filters and text": {"text": "traffic", "region_prefix": "44"},
    "no query at all": {},
}


@pytest.mark.parametrize("fields", PAGING_QUERIES.values(), ids=PAGING_QUERIES.keys())
def test_pages_survive_inserts(market: Market, fields: dict[str, Any]) -> None:
    """Inserting between pages: no duplicate, no gap, same order among the listings already there.

    The inserts also move the collection statistics (listing count, document
    frequencies, average length): the test fails if a later page ranks with
    anything but the statistics frozen in the token.
    """
    for i in range(45):
        market.add(
            f"old{i}",
            f"traffic 交通流量 {i} " + "数据 " * (1 + i % 4),
            "道路交通 traffic " * (i % 5) + "x" * (i * 7 % 60),
        )
    before = page_through(market, 100, **fields)
    assert len(before) == 45
    counter = itertools.count()

    def insert(page: int) -> None:
        # Listings that sort anywhere (more matching text, shorter and longer), and listings
        # that match nothing but move the statistics: one term only, very long text.
        for _ in range(5):
            n = next(counter)
            market.add(f"noise{n}", f"traffic noise {n}", "z" * 2000, categories=("health",))
        for _ in range(7):
            n = next(counter)
            market.add(
                f"new{n}",
                "traffic traffic 交通流量 交通" if n % 2 else f"交通流量 traffic {n}",
                "数据 " * (n % 3) + "y" * (n * 13 % 90),
                categories=("transport.port",),
            )

    seen = page_through(market, 10, insert, **fields)
    assert len(seen) == len(set(seen)), "a listing was served twice"
    old = [listing_id for listing_id in seen if market.names[listing_id].startswith("old")]
    assert old == before, "the pre-existing listings were skipped or reordered"


def test_pages_skip_listings_that_stop_matching(market: Market) -> None:
    added = [market.add(f"l{i}", f"traffic {i}") for i in range(30)]
    ids = page_through(market, 100, text="traffic")
    gone = {ids[5], ids[25]}

    def suspend(page: int) -> None:
        if page == 1:
            for listing in added:
                if listing.listing_id in gone:
                    market.set_state(listing, SUSPENDED)

    seen = page_through(market, 10, suspend, text="traffic")
    # ids[5] was served on the first page already; ids[25] is suspended before its page.
    assert seen == [listing_id for listing_id in ids if listing_id != ids[25]]


def test_page_sizes_and_the_last_page(market: Market) -> None:
    for i in range(25):
        market.add(f"l{i}", f"traffic {i}")
    first = market.search(text="traffic")
    assert len(first.hits) == search.DEFAULT_PAGE_SIZE
    assert first.total == 25
    rest = market.search(text="traffic", page_token=first.next_page_token, page_size=5)
    assert len(rest.hits) == 5
    assert rest.next_page_token == ""  # Exactly the last five: no empty page after them.
    ids = [hit.listing.listing_id for hit in first.hits + rest.hits]
    assert len(set(ids)) == 25


def test_tokens_are_bound_to_their_query(market: Market) -> None:
    for i in range(5):
        market.add(f"l{i}", f"traffic {i}")
    token = market.search(text="traffic", page_size=2).next_page_token
    assert token
    assert len(token) < 400
    for other in (
        {"text": "traffic 2"},
        {"text": "traffic", "grade": common_pb2.GRADE_GENERAL},
        {"text": "traffic", "region_prefix": "44"},
        {"text": "traffic", "min_price": 0},
        {"text": "traffic", "holder": HOLDER},
        {"text": "traffic", "category_prefix": "transport"},
        {},
    ):
        with pytest.raises(InvalidArgument, match="page_token was issued for a different query"):
            market.search(page_token=token, **other)
    # What does not change the query: the page size, the case of the text, spacing.
    assert market.search(text="TRAFFIC ", page_token=token, page_size=3).hits


TAMPERED: dict[str, tuple[dict[str, Any], str]] = {
    "other version": ({"v": 1}, "page_token is from another version"),
    "missing key": ({"a": None}, "page_token is malformed"),
    "extra key": ({"x": 1}, "page_token is malformed"),
    "score not a number": ({"s": "high"}, "page_token is malformed"),
    "infinite score": ({"s": math.inf}, "page_token is malformed"),
    "weights of another length": ({"w": [1.0, 1.0]}, "page_token is malformed"),
    "negative weight": ({"w": [-1.0]}, "page_token is malformed"),
    "zero average": ({"a": 0}, "page_token is malformed"),
    "listing id not text": ({"l": 5}, "page_token is malformed"),
    "tier top not an integer": ({"t": 1.5}, "page_token is malformed"),
    "tier floor below -1": ({"f": -2}, "page_token is malformed"),
    "tier floor above its top": ({"t": 5, "f": 5}, "page_token is malformed"),
}


@pytest.mark.parametrize("changes, message", TAMPERED.values(), ids=TAMPERED.keys())
def test_tampered_tokens_are_refused(market: Market, changes: dict[str, Any], message: str) -> None:
    for i in range(3):
        market.add(f"l{i}", f"traffic {i}")
    payload = token_payload(market.search(text="traffic", page_size=1).next_page_token)
    for key, value in changes.items():
        if value is None:
            del payload[key]
        else:
            payload[key] = value
    with pytest.raises(InvalidArgument, match=message):
        market.search(text="traffic", page_token=encode_payload(payload))


def test_result_as_response(corpus: Market) -> None:
    result = corpus.search(text="traffic", page_size=1)
    response = result.to_response()
    assert isinstance(response, node_pb2.SearchResponse)
    assert list(response.hits) == list(result.hits)
    assert response.next_page_token == result.next_page_token
    assert response.total == 2


def test_search_inside_a_callers_transaction(corpus: Market) -> None:
    with transaction(corpus.writer):
        result = search.search(corpus.writer, query(text="traffic"))
    assert result.total == 2
    assert not corpus.writer.in_transaction
