"""Tests of node.search's bounded work: ranking tiers, the capped total, remembered expansions.

A text query ranks its matches tier by tier (the ``TIER_SIZE`` newest, then
the next ones), counts them up to ``TOTAL_CAP`` and estimates document
frequencies beyond ``DF_SAMPLE`` matches. The sizes are made tiny here so
that a few listings span several tiers; the database, the writes and the
read-only connection are the real ones of ``test_node_search``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_node_search import SUSPENDED, Market, check_index, page_through, query

from node import search
from provex.v1 import market_pb2


@pytest.fixture
def market(tmp_path: Path) -> Iterator[Market]:
    opened = Market(tmp_path / "node.db")
    yield opened
    check_index(opened.writer)
    opened.close()


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search, "TIER_SIZE", 4)
    monkeypatch.setattr(search, "TOTAL_CAP", 9)
    monkeypatch.setattr(search, "DF_SAMPLE", 3)


def seq_of(market: Market, listing_id: str) -> int:
    (seq,) = market.writer.execute(
        "SELECT seq FROM listings WHERE listing_id = ?", (listing_id,)
    ).fetchone()
    return int(seq)


def fill(market: Market, count: int) -> list[market_pb2.Listing]:
    """``count`` listings matching "traffic", with scores that do not follow their age."""
    return [
        market.add(f"t{i}", "traffic " * ((i * 7) % 5 + 1) + f"{i}", "x" * (i * 11 % 40))
        for i in range(count)
    ]


@pytest.mark.usefixtures("tiny")
def test_tiers_newest_first_best_first_within_each(market: Market) -> None:
    ids = [listing.listing_id for listing in fill(market, 11)]
    served = page_through(market, 3, text="traffic")
    assert sorted(served) == sorted(ids), "every match exactly once"
    newest_first = sorted(ids, key=lambda listing_id: -seq_of(market, listing_id))
    tiers = [newest_first[k : k + 4] for k in range(0, len(ids), 4)]
    assert [set(served[k : k + 4]) for k in range(0, len(ids), 4)] == [set(t) for t in tiers]
    scores = {
        hit.listing.listing_id: hit.score
        for hit in market.search(text="traffic", page_size=100).hits
    }
    for k in range(0, len(ids), 4):
        block = served[k : k + 4]
        assert [scores[i] for i in block] == sorted((scores[i] for i in block), reverse=True)


@pytest.mark.usefixtures("tiny")
@pytest.mark.parametrize("page_size", [1, 3, 4, 5, 100])
def test_any_page_size_serves_every_match_once(market: Market, page_size: int) -> None:
    ids = [listing.listing_id for listing in fill(market, 13)]
    one_page = [hit.listing.listing_id for hit in market.search(text="traffic", page_size=100).hits]
    assert page_through(market, page_size, text="traffic") == one_page
    assert sorted(one_page) == sorted(ids)


@pytest.mark.usefixtures("tiny")
def test_no_empty_page_after_the_last_tier(market: Market) -> None:
    fill(market, 8)  # Two full tiers, nothing below.
    first = market.search(text="traffic", page_size=4)
    second = market.search(text="traffic", page_size=4, page_token=first.next_page_token)
    assert len(first.hits) == len(second.hits) == 4
    assert second.next_page_token == ""


@pytest.mark.usefixtures("tiny")
@pytest.mark.parametrize("suspend", [False, True], ids=["inserts", "inserts and a suspension"])
def test_pages_across_tiers_survive_writes(market: Market, suspend: bool) -> None:
    """No listing twice, none skipped; with inserts alone, the same order as without them.

    Inserts are newer than every tier cut, so they can only join the first
    tier; a suspension may move the cut of a later tier (listings then rank
    in another tier than they would have), never serve a listing twice.
    """
    added = fill(market, 14)
    before = page_through(market, 100, text="traffic")
    counter = itertools.count()
    gone = added[3].listing_id

    def meddle(page: int) -> None:
        for _ in range(2):  # Sorting anywhere in the first tier.
            n = next(counter)
            market.add(f"new{n}", "traffic " * (n % 4 + 1), "fresh")
        if suspend and page == 2:
            market.set_state(added[3], SUSPENDED)

    seen = page_through(market, 3, meddle, text="traffic")
    assert len(seen) == len(set(seen)), "a listing was served twice"
    old = [listing_id for listing_id in seen if market.names[listing_id].startswith("t")]
    if not suspend:
        assert old == before, "the listings already there were skipped or reordered"
    else:
        assert gone not in old[5:], "served after its suspension"
        assert sorted(set(before) - {gone}) == sorted(set(old) - {gone}), "a listing was skipped"


TOTALS: dict[str, tuple[int, dict[str, Any], int]] = {
    "text, below the cap": (5, {"text": "traffic"}, 5),
    "text, a tier and a bit": (6, {"text": "traffic"}, 6),
    "text, at the cap": (9, {"text": "traffic"}, 9),
    "text, above the cap": (15, {"text": "traffic"}, 9),
    "text and filter, above the cap": (15, {"text": "traffic", "region_prefix": "44"}, 9),
    "filters only, above the cap": (15, {"category_prefix": "transport"}, 9),
    "no query, above the cap": (15, {}, 9),
    "no query, below the cap": (3, {}, 3),
}


@pytest.mark.usefixtures("tiny")
@pytest.mark.parametrize("count, fields, total", TOTALS.values(), ids=TOTALS.keys())
def test_total_is_capped(market: Market, count: int, fields: dict[str, Any], total: int) -> None:
    fill(market, count)
    result = market.search(page_size=2, **fields)
    assert result.total == total
    later = market.search(page_size=2, page_token=result.next_page_token, **fields)
    assert later.total == total
    assert market.search(page_size=2, **fields).total == total
    uncounted = search.search(market.reader, query(**fields), count=False)
    assert uncounted.total == 0
    assert uncounted.hits == market.search(**fields).hits


@pytest.mark.usefixtures("tiny")
def test_estimated_frequencies_still_weigh_the_rare_term_more(market: Market) -> None:
    for i in range(12):
        market.add(f"filler{i}", f"counts {i:02d}")
    rare = market.add("rare-twice", "typhoon typhoon counts")
    common = market.add("common-twice", "typhoon counts counts")
    result = market.search(text="typhoon counts")
    assert [hit.listing.listing_id for hit in result.hits] == [rare.listing_id, common.listing_id]


def test_expansions_follow_writes(market: Market) -> None:
    """A remembered expansion of a short term is used only while the index is unchanged."""
    first = market.add("first", "交通流量")
    assert market.found(text="交通") == ["first"]
    assert market.found(text="交通") == ["first"]  # From memory this time.
    market.add("second", "城市交通枢纽")  # A trigram beginning with 交通 the first had not.
    assert sorted(market.found(text="交通")) == ["first", "second"]
    market.set_state(first, SUSPENDED)
    assert market.found(text="交通") == ["second"]
    assert market.found(text="流量") == []


def test_expansions_are_per_database(tmp_path: Path) -> None:
    one, two = Market(tmp_path / "one.db"), Market(tmp_path / "two.db")
    try:
        one.add("one", "交通流量")
        two.add("two", "交通枢纽")
        assert one.found(text="交通") == ["one"]
        assert two.found(text="交通") == ["two"]
    finally:
        one.close()
        two.close()
