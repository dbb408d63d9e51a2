"""Search over a node's LISTED listings (DESIGN.md section 6): full text, filters, stable pages.

:func:`search` answers a ``provex.v1.SearchQuery`` from the node's database;
it only reads, so it runs on the read-only connection. Only LISTED listings
are ever found: the full-text index, ``listing_scopes`` and the partial
indexes of :data:`SCHEMA` hold LISTED rows alone, kept in step with
``listings`` by triggers (every write of :mod:`node.listings`, whatever its
path, updates them in the same transaction).

Text
    The text is split on white space into at most 8 terms; a listing
    matches when every term occurs, case-insensitively, as a substring of its
    title or of its description. Everything goes through one FTS5 index with
    the ``trigram`` tokenizer (Chinese and English alike). A term of 3 or
    more characters (``交通流量``, ``traffic``) is a phrase of trigrams. A
    term of 1 or 2 characters (``数据``, ``交通``) has no trigram of its own:
    it is expanded, through the index's vocabulary, into the trigrams that
    begin with it (every indexed column ends with two ``U+0001``, so every
    occurrence begins one), which finds exactly the listings containing it
    at the cost of an indexed lookup. (Reading a prefix's trigrams from the
    vocabulary walks all their postings, so each expansion is remembered
    per database file while FTS5's structure record, which every change to
    the index rewrites, stays the same: see :func:`_expansion`.) A term that
    begins more than :data:`MAX_EXPANSION` trigrams (a single common letter)
    is checked with LIKE instead, on the rows the other terms and filters
    leave, else on every LISTED row.

Filters
    ``category_prefix`` is a dotted catalog code matching itself and its
    descendants (``health`` finds ``health`` and ``health.medical.x``, not
    ``healthcare``); ``grade`` an exact grade; ``region_prefix`` 1 to 6 digits
    of a GB/T 2260 code, where a full code's trailing ``00`` pairs are dropped
    so that ``440000`` (Guangdong) finds ``440100`` (Guangzhou) and ``440100``
    its districts ``4401xx``; ``min_price``/``max_price`` bounds in fen
    (inclusive); ``holder`` a credit code. Every field is validated
    (InvalidArgument naming it). A category, or a region prefix of 2, 4 or 6
    digits, is one key of ``listing_scopes`` (the listing's codes with their
    ancestors, its region's prefixes): a range of its primary key, read in
    ``listing_id`` order, whose rows also carry the grade and the price so
    those filters are checked without reading ``listings``. Otherwise the
    holder, grade and price use partial indexes of LISTED rows ending in
    ``listing_id``. So every filter-only query is an index range read, never
    a table scan: a page with a category, region, holder or grade filter
    reads the index in result order and stops after the page; a price range
    alone (or a 1, 3 or 5 digit region prefix) sorts the range's
    ``listing_id`` first. The total is an index count (capped, see below).

Ranking
    Okapi BM25 (k1 = 1.2, b = 0.75, IDF ``ln(1 + (N - n + 0.5) / (n + 0.5))``
    as in Lucene) with the title weighted 10 and the description 1, higher
    is better, ties broken by ``listing_id``. It is computed here rather
    than with FTS5's ``bm25()``, whose collection statistics (listing count,
    document frequencies, average length) move with every write and which
    counts every match of every term on each call, so that the ranking is a
    pure function of each listing's own text and of *frozen* statistics:
    the first page measures the average length of the LISTED listings and
    each term's document frequency (exactly up to :data:`DF_SAMPLE` matches;
    beyond, estimated from how far back in ``seq`` the term's
    :data:`DF_SAMPLE` newest matches reach), and the page token carries them
    to the following pages. Term frequencies count non-overlapping
    occurrences (ASCII case folded, as LIKE does); lengths are in
    characters; a one-term query needs no IDF (it would scale every score
    alike). A query without text scores every hit 0 and orders by
    ``listing_id``.

    Ranking is bounded work: the matches are ranked in *tiers* of
    :data:`TIER_SIZE`, newest first. The first tier is the TIER_SIZE newest
    matches (highest ``seq``: the full-text index reads them in that order
    and stops), ranked by BM25; once it is served, the next TIER_SIZE
    older ones, and so on. A page never scores more than a tier or two,
    whatever the number of matches (a broad query such as ``数据`` matches
    most of a node); the price is that a very good match older than the
    first tier is served after the first tier's weaker ones. A query with
    fewer than TIER_SIZE matches is ranked as a whole.

Total
    ``total`` counts the matches up to :data:`TOTAL_CAP`; ``TOTAL_CAP``
    itself means "at least that many" (counting all of a broad query's
    matches would cost more than the page). A node answering a peer's part
    of a federated search does not count at all (``count=False``).

Pages and the page token
    Keyset pagination on ``(tier, score desc, listing_id)`` (on
    ``listing_id`` alone for a query without text). The token is opaque
    (URL-safe base64 of a small JSON object): the position after the last
    hit served (the bounds in ``seq`` of its tier, fixed when the tier was
    cut, and its key), the frozen statistics, and a digest of the query, so a token
    presented with a different query (any field but ``page_size``, which may
    change between pages) is InvalidArgument. No server state is kept, so
    tokens never expire. The guarantee, within one paging session:

    * no listing is served twice and none is skipped, among the listings
      that match on every page request and whose title and description do
      not change in the meantime, however many listings are inserted,
      listed, edited, suspended or delisted meanwhile: each listing's sort
      key depends on nothing but its own text, its ``seq`` and the token
      (tiers are disjoint ranges of ``seq``, each cut once; new listings
      are newer than every cut and can only join the first tier). While
      nothing changes, the order is the same whatever the page size; a
      suspension may move the cut of a tier not reached yet, so listings
      then rank in a different tier than they would have;
    * a listing that starts matching after the first page (new, or newly
      listed) is served iff its key sorts after the position reached; one
      that stops matching (suspended, delisted, filtered out) is not served;
    * a listing whose title or description is edited between two pages may
      move across the position and so be served twice or not at all;
    * ``total`` counts the matches (up to TOTAL_CAP) at the time of each
      page; each page is read in one transaction (one snapshot).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import sqlite3
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final, NamedTuple

from node.listings import MAX_PRICE_FEN, load_listings
from provex.errors import InvalidArgument
from provex.ids import CreditCode
from provex.v1 import common_pb2, market_pb2, node_pb2

__all__ = (
    "DEFAULT_PAGE_SIZE",
    "DF_SAMPLE",
    "MAX_EXPANSION",
    "MAX_PAGE_SIZE",
    "MAX_TERMS",
    "MAX_TEXT",
    "SCHEMA",
    "TIER_SIZE",
    "TOTAL_CAP",
    "SearchResult",
    "check_query",
    "search",
)

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
MAX_TEXT = 200
"""Characters of ``SearchQuery.text``."""
MAX_TERMS = 8
"""White-space separated terms of ``SearchQuery.text``."""
MAX_TOKEN = 2_048
"""Characters of a page token (a real one is a few hundred at most)."""
TRIGRAM = 3
"""Terms at least this long are phrases of trigrams; shorter ones are expanded (see the module)."""

K1: Final = 1.2
B: Final = 0.75
TITLE_WEIGHT: Final = 10.0
DESCRIPTION_WEIGHT: Final = 1.0

_LISTED = market_pb2.LISTING_STATE_LISTED
_PAD = "char(1, 1)"
"""SQL of what every indexed column ends with (see :data:`SCHEMA`)."""
MAX_EXPANSION = 512
"""Trigrams a 1- or 2-character term may expand into before it is checked with LIKE instead."""
TIER_SIZE = 100
"""Matches of a text query ranked together: the newest TIER_SIZE, then the next, ..."""
TOTAL_CAP = 500
"""``total`` counts matches up to this many; TOTAL_CAP itself means at least that many."""
DF_SAMPLE = 100
"""A term's document frequency is counted up to this many matches, then estimated."""
_MIN_IDF = 1e-6
"""Floor of an IDF (a page token carries positive weights only)."""
_TOKEN_VERSION = 2

SCHEMA = f"""
CREATE VIEW listings_listed_text AS
    SELECT seq, title || {_PAD} AS title, description || {_PAD} AS description
    FROM listings WHERE state = {_LISTED};

CREATE VIRTUAL TABLE listings_fts USING fts5(
    title, description,
    content = 'listings_listed_text', content_rowid = 'seq',
    tokenize = 'trigram'
);

CREATE VIRTUAL TABLE listings_fts_terms USING fts5vocab(listings_fts, 'row');

CREATE TABLE listing_scopes (
    scope      TEXT    NOT NULL,
    listing_id TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    grade      INTEGER NOT NULL,
    price_fen  INTEGER NOT NULL,
    PRIMARY KEY (scope, listing_id)
) WITHOUT ROWID;

CREATE TABLE search_stats (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    listed INTEGER NOT NULL,
    length INTEGER NOT NULL
);
INSERT INTO search_stats (id, listed, length) VALUES (1, 0, 0);

CREATE INDEX listings_listed_by_id ON listings (listing_id) WHERE state = {_LISTED};
CREATE INDEX listings_listed_by_holder ON listings (holder, listing_id) WHERE state = {_LISTED};
CREATE INDEX listings_listed_by_region ON listings (region_code, listing_id)
    WHERE state = {_LISTED};
CREATE INDEX listings_listed_by_grade ON listings (grade, listing_id) WHERE state = {_LISTED};
CREATE INDEX listings_listed_by_price ON listings (price_fen, listing_id) WHERE state = {_LISTED};

CREATE TRIGGER listings_search_insert AFTER INSERT ON listings
WHEN new.state = {_LISTED}
BEGIN
    INSERT INTO listings_fts (rowid, title, description)
        VALUES (new.seq, new.title || {_PAD}, new.description || {_PAD});
    INSERT INTO listing_scopes (scope, listing_id, seq, grade, price_fen)
        SELECT value, new.listing_id, new.seq, new.grade, new.price_fen
        FROM json_each(new.scopes);
    UPDATE search_stats
        SET listed = listed + 1,
            length = length + length(new.title) + length(new.description)
        WHERE id = 1;
END;

CREATE TRIGGER listings_search_update AFTER UPDATE ON listings
WHEN (old.state = {_LISTED} OR new.state = {_LISTED})
    AND (old.state IS NOT new.state OR old.seq IS NOT new.seq
         OR old.title IS NOT new.title OR old.description IS NOT new.description)
BEGIN
    INSERT INTO listings_fts (listings_fts, rowid, title, description)
        SELECT 'delete', old.seq, old.title || {_PAD}, old.description || {_PAD}
        WHERE old.state = {_LISTED};
    INSERT INTO listings_fts (rowid, title, description)
        SELECT new.seq, new.title || {_PAD}, new.description || {_PAD}
        WHERE new.state = {_LISTED};
    UPDATE search_stats
        SET listed = listed - (old.state = {_LISTED}) + (new.state = {_LISTED}),
            length = length
                - CASE WHEN old.state = {_LISTED}
                       THEN length(old.title) + length(old.description) ELSE 0 END
                + CASE WHEN new.state = {_LISTED}
                       THEN length(new.title) + length(new.description) ELSE 0 END
        WHERE id = 1;
END;

CREATE TRIGGER listings_scopes_update AFTER UPDATE ON listings
WHEN (old.state = {_LISTED} OR new.state = {_LISTED})
    AND (old.state IS NOT new.state OR old.seq IS NOT new.seq
         OR old.listing_id IS NOT new.listing_id OR old.scopes IS NOT new.scopes
         OR old.grade IS NOT new.grade OR old.price_fen IS NOT new.price_fen)
BEGIN
    DELETE FROM listing_scopes
        WHERE old.state = {_LISTED} AND listing_id = old.listing_id
          AND scope IN (SELECT value FROM json_each(old.scopes));
    INSERT INTO listing_scopes (scope, listing_id, seq, grade, price_fen)
        SELECT value, new.listing_id, new.seq, new.grade, new.price_fen
        FROM json_each(new.scopes)
        WHERE new.state = {_LISTED};
END;

CREATE TRIGGER listings_search_delete AFTER DELETE ON listings
WHEN old.state = {_LISTED}
BEGIN
    INSERT INTO listings_fts (listings_fts, rowid, title, description)
        VALUES ('delete', old.seq, old.title || {_PAD}, old.description || {_PAD});
    DELETE FROM listing_scopes
        WHERE listing_id = old.listing_id
          AND scope IN (SELECT value FROM json_each(old.scopes));
    UPDATE search_stats
        SET listed = listed - 1,
            length = length - length(old.title) - length(old.description)
        WHERE id = 1;
END;
"""
"""The search index over ``listings``; apply after :data:`node.listings.SCHEMA`.

``listings_fts`` is an external-content FTS5 table (trigram tokenizer) whose
content is the view of LISTED rows, so
``INSERT INTO listings_fts(listings_fts) VALUES('rebuild')`` rebuilds it
correctly. Each column is indexed with two ``U+0001`` characters appended,
so that every occurrence of a 1- or 2-character term starts some indexed
trigram: ``listings_fts_terms`` (fts5vocab) then expands such a term into
the trigrams it begins (``交通`` -> ``交通流``, ``交通数``, ``交通\\x01``...).
``listing_scopes`` holds the :func:`node.listings.search_scopes` of each
LISTED listing (its catalog codes with their ancestors, its region
prefixes) with its grade and price, so a category or region filter is one
key's range, in ``listing_id`` order, which also answers the grade and
price filters without reading ``listings``; ``search_stats`` counts LISTED listings and their
total length (the ranking's average length). Partial indexes on LISTED rows
serve the other filters, each ending in ``listing_id``.
"""

_CATEGORY_PREFIX = re.compile(r"[a-z0-9_]+(?:\.[a-z0-9_]+)*")
_REGION_PREFIX = re.compile(r"[0-9]{1,6}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# ---------------------------------------------------------------- the query


@dataclass(frozen=True)
class _Query:
    """A validated, normalized SearchQuery."""

    terms: tuple[str, ...]
    category_prefix: str
    grade: int
    region_prefix: str
    min_fen: int | None
    max_fen: int | None
    holder: str
    page_size: int
    page_token: str

    @property
    def has_filters(self) -> bool:
        return bool(
            self.category_prefix
            or self.grade
            or self.region_prefix
            or self.min_fen is not None
            or self.max_fen is not None
            or self.holder
        )

    def digest(self) -> str:
        """What a page token is bound to: every field but the page size and token."""
        canonical = json.dumps(
            [
                [_ascii_lower(term) for term in self.terms],
                self.category_prefix,
                self.grade,
                self.region_prefix,
                self.min_fen,
                self.max_fen,
                self.holder,
            ],
            ensure_ascii=False,
            separators=(",", ":"),
        )
        digest = hashlib.sha256(canonical.encode()).digest()[:12]
        return base64.urlsafe_b64encode(digest).decode()


def _terms(text: str) -> tuple[str, ...]:
    if len(text) > MAX_TEXT:
        raise InvalidArgument(f"text must be at most {MAX_TEXT} characters, got {len(text)}")
    if _CONTROL.search(text.replace("\t", " ").replace("\n", " ")):
        raise InvalidArgument("text must not contain control characters")
    terms: list[str] = []
    seen: set[str] = set()
    for term in text.split():
        if _ascii_lower(term) not in seen:  # What ranking and matching tell apart.
            seen.add(_ascii_lower(term))
            terms.append(term)
    if len(terms) > MAX_TERMS:
        raise InvalidArgument(f"text must have at most {MAX_TERMS} terms, got {len(terms)}")
    return tuple(terms)


def _price(query: market_pb2.SearchQuery, field: str) -> int | None:
    if field == "min_price":
        present, fen = query.HasField("min_price"), query.min_price.fen
    else:
        present, fen = query.HasField("max_price"), query.max_price.fen
    if not present:
        return None
    if not 0 <= fen <= MAX_PRICE_FEN:
        raise InvalidArgument(f"{field}.fen must be within 0..{MAX_PRICE_FEN:,}, got {fen:,}")
    return fen


def _region_prefix(text: str) -> str:
    if not text:
        return ""
    if not _REGION_PREFIX.fullmatch(text):
        raise InvalidArgument(
            f"region_prefix must be 1..6 ASCII digits of a GB/T 2260 code, got {text!r}"
        )
    if len(text) == 6:
        while text.endswith("00"):
            text = text[:-2]
    return text


def _normalize(query: market_pb2.SearchQuery) -> _Query:
    terms = _terms(query.text)
    category = query.category_prefix
    if category and not _CATEGORY_PREFIX.fullmatch(category):
        raise InvalidArgument(
            "category_prefix must be a dotted catalog code (lower-case a-z, 0-9 and _ "
            f"segments, e.g. transport.road), got {category!r}"
        )
    if query.grade not in common_pb2.Grade.values():
        raise InvalidArgument(f"grade must be GENERAL, IMPORTANT, CORE or unset, got {query.grade}")
    holder = ""
    if query.holder:
        try:
            holder = CreditCode.parse(query.holder).code
        except InvalidArgument as error:
            raise InvalidArgument(f"holder: {error}") from None
    min_fen, max_fen = _price(query, "min_price"), _price(query, "max_price")
    if min_fen is not None and max_fen is not None and min_fen > max_fen:
        raise InvalidArgument(
            f"min_price ({min_fen:,} fen) must not exceed max_price ({max_fen:,} fen)"
        )
    if query.page_size > MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size must be at most {MAX_PAGE_SIZE}, got {query.page_size}")
    return _Query(
        terms=terms,
        category_prefix=category,
        grade=int(query.grade),
        region_prefix=_region_prefix(query.region_prefix),
        min_fen=min_fen,
        max_fen=max_fen,
        holder=holder,
        page_size=query.page_size or DEFAULT_PAGE_SIZE,
        page_token=query.page_token,
    )


def check_query(query: market_pb2.SearchQuery) -> None:
    """Raise InvalidArgument naming the first bad field of ``query`` (page token included)."""
    normalized = _normalize(query)
    if normalized.page_token:
        _decode_token(normalized)


# ---------------------------------------------------------------- page tokens


@dataclass(frozen=True)
class _Position:
    """Where a page starts: a tier, the key reached in it, and the statistics frozen at page 1.

    A tier is the matches with ``floor <= seq < top`` (``top`` 0: no upper
    bound, the first tier); ``floor`` -1 means a tier still to be cut below
    ``top`` (from the :data:`TIER_SIZE` newest matches there), to be served
    from its start (``score`` and ``listing_id`` are then ignored).
    Filter-only queries use ``listing_id`` alone (``top`` and ``floor`` 0).
    """

    score: float
    listing_id: str
    idf: tuple[float, ...]
    average_length: float
    top: int = 0
    floor: int = -1


def _encode_token(query: _Query, position: _Position) -> str:
    payload = {
        "v": _TOKEN_VERSION,
        "q": query.digest(),
        "s": position.score,
        "l": position.listing_id,
        "w": list(position.idf),
        "a": position.average_length,
        "t": position.top,
        "f": position.floor,
    }
    text = json.dumps(payload, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def _finite(value: object) -> bool:
    return isinstance(value, float | int) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and minimum <= value < 2**63


def _decode_token(query: _Query) -> _Position:
    token = query.page_token
    malformed = InvalidArgument("page_token is malformed: pass back a next_page_token unchanged")
    if len(token) > MAX_TOKEN:
        raise malformed
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
        payload = json.loads(raw)
    except (binascii.Error, ValueError):
        raise malformed from None
    if not isinstance(payload, dict) or "v" not in payload:
        raise malformed
    if payload["v"] != _TOKEN_VERSION:
        raise InvalidArgument("page_token is from another version of the node: search again")
    if set(payload) != {"v", "q", "s", "l", "w", "a", "t", "f"}:
        raise malformed
    if payload["q"] != query.digest():
        raise InvalidArgument(
            "page_token was issued for a different query: repeat the query's text and "
            "filters unchanged, or search again without a token"
        )
    score, listing_id, idf, average = payload["s"], payload["l"], payload["w"], payload["a"]
    top, floor = payload["t"], payload["f"]
    weights_ok = (
        isinstance(idf, list)
        and len(idf) == len(query.terms)
        and all(_finite(w) and w > 0 for w in idf)
    )
    if not (
        _finite(score)
        and isinstance(listing_id, str)
        and len(listing_id) <= 64
        and weights_ok
        and _finite(average)
        and average > 0
        and _integer(top, 0)
        and _integer(floor, -1)
        and (top == 0 or floor < top)
    ):
        raise malformed
    return _Position(
        float(score), listing_id, tuple(float(w) for w in idf), float(average), top, floor
    )


# ---------------------------------------------------------------- SQL


def _ascii_lower(text: str) -> str:
    """Lower-case A-Z only, as SQLite's lower() and LIKE do."""
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in text)


def _has_ascii_letters(text: str) -> bool:
    return any("A" <= c <= "Z" or "a" <= c <= "z" for c in text)


def _like_pattern(term: str) -> str:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _phrase(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


@dataclass(frozen=True)
class _Plan:
    """How each term is found: an FTS5 expression, or None to check it with LIKE."""

    expressions: tuple[str | None, ...]
    impossible: bool
    """Some term occurs nowhere: nothing can match."""

    @property
    def match(self) -> str:
        """The FTS5 query requiring every indexed term ("" if none is)."""
        return " AND ".join(f"({e})" for e in self.expressions if e is not None)


def _plan(conn: sqlite3.Connection, query: _Query) -> _Plan:
    expressions: list[str | None] = []
    for term in query.terms:
        if len(term) >= TRIGRAM:
            expressions.append(_phrase(term))
            continue
        trigrams = _expansion(conn, term.lower())
        if not trigrams:
            return _Plan((), impossible=True)
        if len(trigrams) > MAX_EXPANSION:
            expressions.append(None)
        else:
            expressions.append(" OR ".join(_phrase(trigram) for trigram in trigrams))
    return _Plan(tuple(expressions), impossible=False)


_STRUCTURE = "SELECT block FROM listings_fts_data WHERE id = 10"
"""FTS5's structure record (row 10 of ``listings_fts_data``): each index change rewrites it."""
_EXPANSIONS_KEPT = 256
_expansions: OrderedDict[tuple[str, str, int], tuple[bytes, tuple[str, ...]]] = OrderedDict()
_expansions_lock = threading.Lock()


def _expansion(conn: sqlite3.Connection, prefix: str) -> tuple[str, ...]:
    """The indexed trigrams that begin with ``prefix`` (at most MAX_EXPANSION + 1 of them).

    Reading them from ``listings_fts_terms`` walks every posting of every
    such trigram (fts5vocab counts them), which takes long for a common
    prefix; so they are remembered per database file, with FTS5's structure
    record as read in this snapshot. Any write to the index rewrites that
    record, so a remembered expansion is used only while the index is
    exactly as it was when the expansion was read.
    """
    (path,) = [row[2] for row in conn.execute("PRAGMA database_list") if row[1] == "main"]
    (structure,) = conn.execute(_STRUCTURE).fetchone() or (None,)
    key = (path, prefix, MAX_EXPANSION)
    if path and isinstance(structure, bytes):
        with _expansions_lock:
            kept = _expansions.get(key)
            if kept is not None and kept[0] == structure:
                _expansions.move_to_end(key)
                return kept[1]
    trigrams = tuple(
        trigram
        for (trigram,) in conn.execute(
            "SELECT term FROM listings_fts_terms WHERE term > ? AND term < ? LIMIT ?",
            (prefix, prefix + "\U0010ffff", MAX_EXPANSION + 1),
        )
        if trigram.startswith(prefix)
    )
    if path and isinstance(structure, bytes):
        with _expansions_lock:
            _expansions[key] = (structure, trigrams)
            _expansions.move_to_end(key)
            while len(_expansions) > _EXPANSIONS_KEPT:
                _expansions.popitem(last=False)
    return trigrams


def _scope_keys(query: _Query) -> list[str]:
    """The ``listing_scopes`` keys the query's category and region filters look up."""
    keys = []
    if query.category_prefix:
        keys.append("c:" + query.category_prefix)
    if len(query.region_prefix) in (2, 4, 6):
        keys.append("r:" + query.region_prefix)
    return keys


def _filters(query: _Query, plan: _Plan, params: dict[str, object], alias: str) -> list[str]:
    """WHERE clauses of the filters not looked up by key, and of the terms found by LIKE.

    ``alias`` is ``l`` (a ``listings`` row) or ``s0`` (a ``listing_scopes``
    row, which has the grade and the price only: see :func:`_scopes_answer`).
    """
    clauses = []
    if query.grade:
        clauses.append(f"{alias}.grade = :grade")
        params["grade"] = query.grade
    if query.min_fen is not None:
        clauses.append(f"{alias}.price_fen >= :min_fen")
        params["min_fen"] = query.min_fen
    if query.max_fen is not None:
        clauses.append(f"{alias}.price_fen <= :max_fen")
        params["max_fen"] = query.max_fen
    if query.region_prefix and len(query.region_prefix) not in (2, 4, 6):
        clauses.append("l.region_code >= :region_lo AND l.region_code < :region_hi")
        params["region_lo"] = query.region_prefix
        params["region_hi"] = query.region_prefix + ":"  # ':' follows '9'
    if query.holder:
        clauses.append("l.holder = :holder")
        params["holder"] = query.holder
    for i, (term, expression) in enumerate(zip(query.terms, plan.expressions, strict=True)):
        if expression is None:
            clauses.append(
                f"(l.title LIKE :like{i} ESCAPE '\\' OR l.description LIKE :like{i} ESCAPE '\\')"
            )
            params[f"like{i}"] = _like_pattern(term)
    return clauses


def _source(query: _Query, plan: _Plan, params: dict[str, object]) -> tuple[str, str]:
    """``FROM ... WHERE ...`` of the matching rows, and the ``listing_id`` column to order by.

    The join order is fixed rather than left to the planner (which has no
    statistics to go on): the full-text index first when there is text (the
    cost follows the text's matches); else, with a category or region key
    and no holder, ``listing_scopes`` alone (read in ``listing_id`` order,
    grade and price checked on its own columns, a second key looked up by
    primary key); else ``listings`` through the planner's choice of its
    partial indexes (the holder's, when given: a holder has few listings).
    """
    keys = _scope_keys(query)
    for k, key in enumerate(keys):
        params[f"scope{k}"] = key
    if keys and _scopes_answer(query):
        lookups = [
            f"listing_scopes AS s{k} ON s{k}.scope = :scope{k} AND s{k}.listing_id = s0.listing_id"
            for k in range(1, len(keys))
        ]
        where = ["s0.scope = :scope0", *_filters(query, plan, params, "s0")]
        tables = ["listing_scopes AS s0", *lookups]
        return f"FROM {' CROSS JOIN '.join(tables)} WHERE {' AND '.join(where)}", "s0.listing_id"
    lookups = [
        f"listing_scopes AS s{k} ON s{k}.scope = :scope{k} AND s{k}.listing_id = l.listing_id"
        for k in range(len(keys))
    ]
    where = [f"l.state = {_LISTED}", *_filters(query, plan, params, "l")]
    if plan.match:
        params["match"] = plan.match
        where.insert(0, "listings_fts MATCH :match")
        tables = ["listings_fts", "listings AS l ON l.seq = listings_fts.rowid", *lookups]
    else:
        tables = ["listings AS l", *lookups]
    return f"FROM {' CROSS JOIN '.join(tables)} WHERE {' AND '.join(where)}", "l.listing_id"


def _scopes_answer(query: _Query) -> bool:
    """Whether ``listing_scopes`` rows alone check every filter but the scope keys."""
    odd_region = bool(query.region_prefix) and len(query.region_prefix) not in (2, 4, 6)
    return not (query.terms or query.holder or odd_region)


# ---------------------------------------------------------------- ranking


_Candidate = tuple[int, str, str, str]
"""A match of a tier: ``(seq, listing_id, title, description)``."""


class _Ranked(NamedTuple):
    """A match placed: its score, and the tier it was ranked in."""

    seq: int
    listing_id: str
    score: float
    top: int
    floor: int


class _Scorer:
    """BM25 of one listing's title and description with the frozen statistics (see the module).

    Terms with ASCII letters are counted in the ASCII-lowered UTF-8 of the
    text (``bytes.lower()`` folds A-Z alone, as SQLite's lower() and LIKE
    do), the others in the text as it is; ``str.count`` and ``bytes.count``
    count non-overlapping occurrences.
    """

    def __init__(self, query: _Query, idf: tuple[float, ...], average_length: float) -> None:
        pairs = list(zip(query.terms, idf, strict=True))
        self._plain = tuple((term, w) for term, w in pairs if not _has_ascii_letters(term))
        self._folded = tuple(
            (_ascii_lower(term).encode(), w) for term, w in pairs if _has_ascii_letters(term)
        )
        # K1 * ((1 - B) + B * length / average), as base + slope * length.
        self._base = K1 * (1 - B)
        self._slope = K1 * B / average_length

    def __call__(self, title: str, description: str) -> float:
        norm = self._base + self._slope * (len(title) + len(description))
        score = 0.0
        for term, weight in self._plain:
            tf = TITLE_WEIGHT * title.count(term) + DESCRIPTION_WEIGHT * description.count(term)
            if tf:
                score += weight * tf * (K1 + 1) / (tf + norm)
        if self._folded:
            folded_title, folded_description = title.encode().lower(), description.encode().lower()
            for needle, weight in self._folded:
                tf = TITLE_WEIGHT * folded_title.count(
                    needle
                ) + DESCRIPTION_WEIGHT * folded_description.count(needle)
                if tf:
                    score += weight * tf * (K1 + 1) / (tf + norm)
        return score


def _seq_column(plan: _Plan) -> str:
    """The column of the text source that is ``listings.seq`` and reads in its order."""
    return "listings_fts.rowid" if plan.match else "l.seq"


def _tier(
    conn: sqlite3.Connection, query: _Query, plan: _Plan, top: int, floor: int
) -> tuple[list[_Candidate], int]:
    """The matches of one tier and its floor; ``floor`` -1 cuts a new tier below ``top``.

    A new tier is the :data:`TIER_SIZE` newest matches below ``top`` (any
    if ``top`` is 0); its floor is the oldest one's ``seq``, or 0 when there
    are no more matches below (the tier reaches the bottom).
    """
    params: dict[str, object] = {}
    source, _ = _source(query, plan, params)
    column = _seq_column(plan)
    bounds = []
    if top:
        bounds.append(f"{column} < :top")
        params["top"] = top
    if floor >= 0:
        bounds.append(f"{column} >= :floor")
        params["floor"] = floor
    limit = ""
    if floor < 0:
        limit = " LIMIT :tier"
        params["tier"] = TIER_SIZE
    sql = (
        f"SELECT l.seq, l.listing_id, l.title, l.description {source}"
        f"{''.join(' AND ' + bound for bound in bounds)} ORDER BY {column} DESC{limit}"
    )
    rows: list[_Candidate] = conn.execute(sql, params).fetchall()
    if floor < 0:
        floor = rows[-1][0] if len(rows) == TIER_SIZE else 0
    return rows, floor


def _ranked_page(
    conn: sqlite3.Connection, query: _Query, plan: _Plan, position: _Position
) -> tuple[list[_Ranked], tuple[int, int] | None]:
    """Up to ``page_size + 1`` matches after ``position``, tier by tier, best first in each.

    Also, when the first tier was read, how many matches it holds and its
    floor (what counting the matches need not read again); None otherwise.
    """
    score = _Scorer(query, position.idf, position.average_length)
    wanted = query.page_size + 1
    page: list[_Ranked] = []
    top, floor = position.top, position.floor
    after_score, after_id = position.score, position.listing_id
    head: tuple[int, int] | None = None
    while True:
        if floor < 0:
            after_score, after_id = math.inf, ""
        candidates, floor = _tier(conn, query, plan, top, floor)
        if top == 0:
            head = (len(candidates), floor)
        ranked = sorted(
            [(-score(title, text), listing_id, seq) for seq, listing_id, title, text in candidates]
        )
        for negated, listing_id, seq in ranked:
            value = -negated
            if value < after_score or (value == after_score and listing_id > after_id):
                page.append(_Ranked(seq, listing_id, value, top, floor))
                if len(page) == wanted:
                    return page, head
        if floor == 0:
            return page, head
        top, floor = floor, -1


def _next_position(page: list[_Ranked], size: int, frozen: _Position) -> _Position:
    """Where the page after ``page[:size]`` starts (``page`` has one more match)."""
    last, following = page[size - 1], page[size]
    if (following.top, following.floor) != (last.top, last.floor):
        # The last tier served is exhausted: start the next one, cut anew then.
        return _Position(0.0, "", frozen.idf, frozen.average_length, following.top, -1)
    return _Position(
        last.score, last.listing_id, frozen.idf, frozen.average_length, last.top, last.floor
    )


def _first_position(conn: sqlite3.Connection, query: _Query, plan: _Plan) -> _Position:
    """The statistics the ranking freezes for this paging session, and the start.

    A term's document frequency is counted exactly up to :data:`DF_SAMPLE`
    matches; beyond, it is estimated from how far back in ``seq`` its
    :data:`DF_SAMPLE` newest matches reach.
    """
    if not query.terms:
        return _Position(0.0, "", (), 1.0, 0, 0)
    listed, length = conn.execute("SELECT listed, length FROM search_stats").fetchone()
    average = max(length / listed, 1.0) if listed else 1.0
    if len(query.terms) == 1:
        return _Position(math.inf, "", (1.0,), average)
    # Two statements: SQLite reads min() or max() alone off the end of the rowid b-tree.
    (oldest,) = conn.execute("SELECT min(seq) FROM listings").fetchone()
    (newest,) = conn.execute("SELECT max(seq) FROM listings").fetchone()
    measured: dict[int, float] = {}
    for i, expression in enumerate(plan.expressions):
        if expression is None:
            continue
        seqs = [
            seq
            for (seq,) in conn.execute(
                "SELECT rowid FROM listings_fts WHERE listings_fts MATCH ? "
                "ORDER BY rowid DESC LIMIT ?",
                (expression, DF_SAMPLE),
            )
        ]
        frequency = float(len(seqs))
        if len(seqs) == DF_SAMPLE:
            frequency = min(DF_SAMPLE * (newest - oldest + 1) / (newest - seqs[-1] + 1), listed)
        measured[i] = math.log(1 + (listed - frequency + 0.5) / (frequency + 0.5))
    # A term too common to expand weighs as the most common measured term (or 1 if none is).
    common = min(measured.values(), default=1.0)
    idf = tuple(max(measured.get(i, common), _MIN_IDF) for i in range(len(query.terms)))
    return _Position(math.inf, "", idf, average)


# ---------------------------------------------------------------- search


@dataclass(frozen=True)
class SearchResult:
    """One page of hits, the token of the next page ("" after the last) and the match count.

    ``total`` is exact up to :data:`TOTAL_CAP`; :data:`TOTAL_CAP` itself means
    at least that many.
    """

    hits: tuple[market_pb2.SearchHit, ...]
    next_page_token: str
    total: int

    def to_response(self) -> node_pb2.SearchResponse:
        """The ``SearchResponse`` of this page."""
        return node_pb2.SearchResponse(
            hits=self.hits, next_page_token=self.next_page_token, total=self.total
        )


def search(
    conn: sqlite3.Connection, query: market_pb2.SearchQuery, *, count: bool = True
) -> SearchResult:
    """One page of the LISTED listings matching ``query``, best first (see the module doc).

    Read-only: runs on the read-only connection as well, in one read
    transaction (its own, unless the caller has one open). InvalidArgument
    names a bad field, a malformed page token, or a token of another query.
    ``count=False`` skips counting the matches (``total`` is then 0), for
    callers that do not show it, such as a peer's part of a federated search.
    """
    normalized = _normalize(query)
    if conn.in_transaction:
        return _search(conn, normalized, count)
    conn.execute("BEGIN")  # One snapshot for the statistics, the page and the count.
    try:
        return _search(conn, normalized, count)
    finally:
        conn.execute("COMMIT")


def _search(conn: sqlite3.Connection, query: _Query, count: bool) -> SearchResult:
    position = _decode_token(query) if query.page_token else None
    plan = _plan(conn, query)
    if plan.impossible:
        return SearchResult(hits=(), next_page_token="", total=0)
    if position is None:
        position = _first_position(conn, query, plan)
    size = query.page_size
    if query.terms:
        page, head = _ranked_page(conn, query, plan, position)
        token = (
            _encode_token(query, _next_position(page, size, position)) if len(page) > size else ""
        )
        rows = [(match.seq, match.score) for match in page[:size]]
        total = 0
        if count and head is None:
            total = _count(conn, query, plan)
        elif count and head is not None:
            counted, floor = head
            if floor and counted < TOTAL_CAP:
                counted += _count(conn, query, plan, below=floor, cap=TOTAL_CAP - counted)
            total = min(counted, TOTAL_CAP)
    else:
        params: dict[str, object] = {"limit": size + 1, "after_id": position.listing_id}
        source, order = _source(query, plan, params)
        seq = order.replace("listing_id", "seq")
        found = conn.execute(
            f"SELECT {seq}, {order} {source} AND {order} > :after_id ORDER BY {order} LIMIT :limit",
            params,
        ).fetchall()
        token = ""
        if len(found) > size:
            last_id = found[size - 1][1]
            token = _encode_token(query, _Position(0.0, last_id, (), 1.0, 0, 0))
        rows = [(seq, 0.0) for seq, _ in found[:size]]
        total = _count(conn, query, plan) if count else 0
    listings = load_listings(conn, [seq for seq, _ in rows])
    hits = tuple(
        market_pb2.SearchHit(listing=listings[seq], score=score)
        for seq, score in rows
        if seq in listings
    )
    return SearchResult(hits=hits, next_page_token=token, total=total)


def _count(
    conn: sqlite3.Connection, query: _Query, plan: _Plan, *, below: int = 0, cap: int = 0
) -> int:
    """The matches (with ``seq`` below ``below``, if given), counted up to ``cap`` or TOTAL_CAP."""
    cap = cap or TOTAL_CAP
    if not query.terms and not query.has_filters:
        (listed,) = conn.execute("SELECT listed FROM search_stats").fetchone()
        return min(int(listed), cap)
    params: dict[str, object] = {"cap": cap}
    if query.has_filters or None in plan.expressions:
        source, _ = _source(query, plan, params)
        column = _seq_column(plan)  # ``below`` is given for text queries only.
    else:  # The full-text index holds LISTED listings alone: no need to read them.
        source, params["match"] = "FROM listings_fts WHERE listings_fts MATCH :match", plan.match
        column = "listings_fts.rowid"
    if below:
        source += f" AND {column} < :below"
        params["below"] = below
    (found,) = conn.execute(
        f"SELECT count(*) FROM (SELECT 1 {source} LIMIT :cap)", params
    ).fetchone()
    return int(found)
