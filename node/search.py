"""Search over a node's LISTED listings (DESIGN.md section 6): full text, filters, stable pages.

:func:`search` answers a ``provex.v1.SearchQuery`` from the node's database.
Only LISTED listings are ever found: the full-text index, the category index
and the partial filter indexes of :data:`SCHEMA` hold LISTED rows only, kept
in step with ``listings`` by triggers (so every write of
:mod:`node.listings`, whatever its path, updates them in the same
transaction).

Text
    The text is split on white space into at most 8 terms; a listing
    matches when every term occurs, case-insensitively, as a substring of its
    title or its description. Terms of 3 or more characters are found
    through the FTS5 index with the ``trigram`` tokenizer (Chinese and
    English alike: ``交通流量``, ``traffic``); terms of 1 or 2 characters
    (``数据``, ``交通``), which trigrams cannot index, are checked with LIKE
    (on the rows the longer terms selected, else on every LISTED row).

Filters
    ``category_prefix`` is a dotted catalog code matching itself and its
    descendants (``health`` finds ``health`` and ``health.medical.x``, not
    ``healthcare``); ``grade`` an exact grade; ``region_prefix`` 1 to 6 digits
    of a GB/T 2260 code, where a full code's trailing ``00`` pairs are dropped
    so that ``440000`` (Guangdong) finds ``440100`` (Guangzhou) and ``440100``
    its districts ``4401xx``; ``min_price``/``max_price`` bounds in fen
    (inclusive); ``holder`` a credit code. Every field is validated
    (InvalidArgument naming it).

Ranking
    Okapi BM25 (k1 = 1.2, b = 0.75) with the title weighted 10 and the
    description 1, higher is better, ties broken by ``listing_id``. It is
    computed in SQL rather than with FTS5's ``bm25()``, whose collection
    statistics (listing count, document frequencies, average length) move
    with every write, so that the ranking is a pure function of each
    listing's own text and of the query's *frozen* statistics: the first page
    measures the inverse document frequency of each term and the average
    length of the LISTED listings, and the page token carries those numbers
    to the following pages. Term frequencies count non-overlapping
    occurrences (ASCII case folded, as LIKE does); lengths are in
    characters. A query without text scores every hit 0 and orders by
    ``listing_id``. Filter-only queries walk a partial index of LISTED rows.

Pages and the page token
    Keyset pagination on ``(score desc, listing_id)``. The token is opaque
    (URL-safe base64 of a small JSON object): the position after the last
    hit served, the frozen statistics, and a digest of the query, so a token
    presented with a different query (any field but ``page_size``, which may
    change between pages) is InvalidArgument. No server state is kept, so
    tokens never expire. The guarantee, within one paging session:

    * no listing is served twice and none is skipped, among the listings
      that match on every page request and whose title and description do
      not change in the meantime, however many listings are inserted,
      listed, edited, suspended or delisted meanwhile: each listing's sort
      key depends on nothing but its own text and the token;
    * a listing that starts matching after the first page (new, or newly
      listed) is served iff its key sorts after the position reached; one
      that stops matching (suspended, delisted, filtered out) is not served;
    * a listing whose title or description is edited between two pages may
      move across the position and so be served twice or not at all;
    * ``total`` counts the matches at the time of each page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import sqlite3
from dataclasses import dataclass
from typing import Final

from node.listings import MAX_PRICE_FEN, load_listings
from provex.errors import InvalidArgument
from provex.ids import CreditCode
from provex.v1 import common_pb2, market_pb2, node_pb2

__all__ = (
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "MAX_TERMS",
    "MAX_TEXT",
    "SCHEMA",
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
"""Terms at least this long go through the full-text index; shorter ones use LIKE."""

K1: Final = 1.2
B: Final = 0.75
TITLE_WEIGHT: Final = 10.0
DESCRIPTION_WEIGHT: Final = 1.0

_LISTED = market_pb2.LISTING_STATE_LISTED
_TOKEN_VERSION = 1

SCHEMA = f"""
CREATE VIEW listings_listed_text AS
    SELECT seq, title, description FROM listings WHERE state = {_LISTED};

CREATE VIRTUAL TABLE listings_fts USING fts5(
    title, description,
    content = 'listings_listed_text', content_rowid = 'seq',
    tokenize = 'trigram'
);

CREATE TABLE listing_categories (
    code TEXT    NOT NULL,
    seq  INTEGER NOT NULL,
    PRIMARY KEY (code, seq)
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
        VALUES (new.seq, new.title, new.description);
    INSERT INTO listing_categories (code, seq)
        SELECT value, new.seq FROM json_each(new.categories);
    UPDATE search_stats
        SET listed = listed + 1,
            length = length + length(new.title) + length(new.description)
        WHERE id = 1;
END;

CREATE TRIGGER listings_search_update AFTER UPDATE ON listings
WHEN (old.state = {_LISTED} OR new.state = {_LISTED})
    AND (old.state IS NOT new.state OR old.seq IS NOT new.seq
         OR old.title IS NOT new.title OR old.description IS NOT new.description
         OR old.categories IS NOT new.categories)
BEGIN
    INSERT INTO listings_fts (listings_fts, rowid, title, description)
        SELECT 'delete', old.seq, old.title, old.description WHERE old.state = {_LISTED};
    DELETE FROM listing_categories
        WHERE old.state = {_LISTED} AND seq = old.seq
          AND code IN (SELECT value FROM json_each(old.categories));
    INSERT INTO listings_fts (rowid, title, description)
        SELECT new.seq, new.title, new.description WHERE new.state = {_LISTED};
    INSERT INTO listing_categories (code, seq)
        SELECT value, new.seq FROM json_each(new.categories) WHERE new.state = {_LISTED};
    UPDATE search_stats
        SET listed = listed - (old.state = {_LISTED}) + (new.state = {_LISTED}),
            length = length
                - CASE WHEN old.state = {_LISTED}
                       THEN length(old.title) + length(old.description) ELSE 0 END
                + CASE WHEN new.state = {_LISTED}
                       THEN length(new.title) + length(new.description) ELSE 0 END
        WHERE id = 1;
END;

CREATE TRIGGER listings_search_delete AFTER DELETE ON listings
WHEN old.state = {_LISTED}
BEGIN
    INSERT INTO listings_fts (listings_fts, rowid, title, description)
        VALUES ('delete', old.seq, old.title, old.description);
    DELETE FROM listing_categories
        WHERE seq = old.seq AND code IN (SELECT value FROM json_each(old.categories));
    UPDATE search_stats
        SET listed = listed - 1,
            length = length - length(old.title) - length(old.description)
        WHERE id = 1;
END;
"""
"""The search index over ``listings``; apply after :data:`node.listings.SCHEMA`.

``listings_fts`` is an external-content FTS5 table whose content is the view
of LISTED rows, so ``INSERT INTO listings_fts(listings_fts) VALUES('rebuild')``
rebuilds it correctly; ``listing_categories`` maps each catalog code of a
LISTED listing to its row; ``search_stats`` counts LISTED listings and their
total length (what the ranking's average length comes from). Partial indexes
on LISTED rows serve the filters, each ending in ``listing_id`` so that a
filter-only page is one index range read in result order.
"""

_CATEGORY_PREFIX = re.compile(r"[a-z0-9_]+(?:\.[a-z0-9_]+)*")
_REGION_PREFIX = re.compile(r"[0-9]{1,6}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SCORE_SQL_TERM = "((length(l.{column}) - length(replace(lower(l.{column}), :p{i}, ''))) / :n{i})"


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
    def long_terms(self) -> tuple[str, ...]:
        return tuple(term for term in self.terms if len(term) >= TRIGRAM)

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
                [term.casefold() for term in self.terms],
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
        if term.casefold() not in seen:
            seen.add(term.casefold())
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
    """Where a page starts, and the statistics frozen at the first page."""

    score: float
    listing_id: str
    idf: tuple[float, ...]
    average_length: float


def _encode_token(query: _Query, position: _Position) -> str:
    payload = {
        "v": _TOKEN_VERSION,
        "q": query.digest(),
        "s": position.score,
        "l": position.listing_id,
        "w": list(position.idf),
        "a": position.average_length,
    }
    text = json.dumps(payload, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def _finite(value: object) -> bool:
    return isinstance(value, float | int) and not isinstance(value, bool) and math.isfinite(value)


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
    if not isinstance(payload, dict) or set(payload) != {"v", "q", "s", "l", "w", "a"}:
        raise malformed
    if payload["v"] != _TOKEN_VERSION:
        raise InvalidArgument("page_token is from another version of the node: search again")
    if payload["q"] != query.digest():
        raise InvalidArgument(
            "page_token was issued for a different query: repeat the query's text and "
            "filters unchanged, or search again without a token"
        )
    score, listing_id, idf, average = payload["s"], payload["l"], payload["w"], payload["a"]
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
    ):
        raise malformed
    return _Position(float(score), listing_id, tuple(float(w) for w in idf), float(average))


# ---------------------------------------------------------------- SQL


def _ascii_lower(text: str) -> str:
    """Lower-case A-Z only, as SQLite's lower() and LIKE do."""
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in text)


def _like_pattern(term: str) -> str:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _match_expression(terms: tuple[str, ...]) -> str:
    """An FTS5 query: every term as a quoted phrase (a substring, for trigrams), all required."""
    return " ".join('"' + term.replace('"', '""') + '"' for term in terms)


def _filters(query: _Query, params: dict[str, object]) -> list[str]:
    """WHERE clauses on ``listings AS l`` for LISTED rows, the filters and the short terms."""
    clauses = [f"l.state = {_LISTED}"]
    if query.category_prefix:
        # Codes hold a-z 0-9 _ and '.', so [p, p + '/') is p and p.* exactly ('.' < '/').
        clauses.append(
            "l.seq IN (SELECT seq FROM listing_categories WHERE code >= :cat_lo AND code < :cat_hi)"
        )
        params["cat_lo"] = query.category_prefix
        params["cat_hi"] = query.category_prefix + "/"
    if query.grade:
        clauses.append("l.grade = :grade")
        params["grade"] = query.grade
    if query.region_prefix:
        clauses.append("l.region_code >= :region_lo AND l.region_code < :region_hi")
        params["region_lo"] = query.region_prefix
        params["region_hi"] = query.region_prefix + ":"  # ':' follows '9'
    if query.min_fen is not None:
        clauses.append("l.price_fen >= :min_fen")
        params["min_fen"] = query.min_fen
    if query.max_fen is not None:
        clauses.append("l.price_fen <= :max_fen")
        params["max_fen"] = query.max_fen
    if query.holder:
        clauses.append("l.holder = :holder")
        params["holder"] = query.holder
    for i, term in enumerate(query.terms):
        if len(term) < TRIGRAM:
            clauses.append(
                f"(l.title LIKE :like{i} ESCAPE '\\' OR l.description LIKE :like{i} ESCAPE '\\')"
            )
            params[f"like{i}"] = _like_pattern(term)
    return clauses


def _score_sql(query: _Query, position: _Position, params: dict[str, object]) -> str:
    """BM25 of one listing (``l``) with the frozen statistics of ``position``."""
    params["avgdl"] = position.average_length
    norm = f"{K1} * ({1 - B} + {B} * (length(l.title) + length(l.description)) / :avgdl)"
    parts = []
    for i, term in enumerate(query.terms):
        params[f"p{i}"] = _ascii_lower(term)
        params[f"n{i}"] = len(term)
        params[f"idf{i}"] = position.idf[i]
        title = _SCORE_SQL_TERM.format(column="title", i=i)
        description = _SCORE_SQL_TERM.format(column="description", i=i)
        tf = f"({TITLE_WEIGHT} * {title} + {DESCRIPTION_WEIGHT} * {description})"
        parts.append(f":idf{i} * {tf} * {K1 + 1} / ({tf} + {norm})")
    return " + ".join(parts)


def _source(query: _Query, params: dict[str, object]) -> str:
    """FROM ... WHERE ... of the matching rows (``l`` is the listing)."""
    where = " AND ".join(_filters(query, params))
    if query.long_terms:
        params["match"] = _match_expression(query.long_terms)
        return (
            "FROM listings_fts CROSS JOIN listings AS l ON l.seq = listings_fts.rowid "
            f"WHERE listings_fts MATCH :match AND {where}"
        )
    return f"FROM listings AS l WHERE {where}"


def _first_position(conn: sqlite3.Connection, query: _Query) -> _Position:
    """The statistics the ranking freezes for this paging session, and the start."""
    if not query.terms:
        return _Position(0.0, "", (), 1.0)
    listed, length = conn.execute("SELECT listed, length FROM search_stats").fetchone()
    average = max(length / listed, 1.0) if listed else 1.0
    if len(query.terms) == 1:
        return _Position(math.inf, "", (1.0,), average)
    long_idf: dict[str, float] = {}
    for term in query.long_terms:
        (frequency,) = conn.execute(
            "SELECT count(*) FROM listings_fts WHERE listings_fts MATCH ?",
            (_match_expression((term,)),),
        ).fetchone()
        long_idf[term] = math.log(1 + (listed - frequency + 0.5) / (frequency + 0.5))
    # Short terms cannot be counted without reading every row: weigh them as the most
    # common long term (they are common by nature), or all alike when there is none.
    short_idf = min(long_idf.values(), default=1.0)
    idf = tuple(long_idf.get(term, short_idf) for term in query.terms)
    return _Position(math.inf, "", idf, average)


# ---------------------------------------------------------------- search


@dataclass(frozen=True)
class SearchResult:
    """One page of hits, the token of the next page ("" after the last) and the match count."""

    hits: tuple[market_pb2.SearchHit, ...]
    next_page_token: str
    total: int

    def to_response(self) -> node_pb2.SearchResponse:
        """The ``SearchResponse`` of this page."""
        return node_pb2.SearchResponse(
            hits=self.hits, next_page_token=self.next_page_token, total=self.total
        )


def search(conn: sqlite3.Connection, query: market_pb2.SearchQuery) -> SearchResult:
    """One page of the LISTED listings matching ``query``, best first (see the module doc).

    Read-only: runs on the read-only connection as well. InvalidArgument
    names a bad field, a malformed page token, or a token of another query.
    """
    normalized = _normalize(query)
    if conn.in_transaction:
        return _search(conn, normalized)
    conn.execute("BEGIN")  # One snapshot for the statistics, the page and the count.
    try:
        return _search(conn, normalized)
    finally:
        conn.execute("COMMIT")


def _search(conn: sqlite3.Connection, normalized: _Query) -> SearchResult:
    if normalized.page_token:
        position = _decode_token(normalized)
    else:
        position = _first_position(conn, normalized)
    params: dict[str, object] = {"limit": normalized.page_size + 1}
    source = _source(normalized, params)
    if normalized.terms:
        score = _score_sql(normalized, position, params)
        params["after_score"] = position.score
        params["after_id"] = position.listing_id
        page_sql = (
            f"SELECT seq, listing_id, score FROM (SELECT l.seq AS seq, "
            f"l.listing_id AS listing_id, {score} AS score {source}) "
            "WHERE score < :after_score OR (score = :after_score AND listing_id > :after_id) "
            "ORDER BY score DESC, listing_id LIMIT :limit"
        )
    else:
        params["after_id"] = position.listing_id
        page_sql = (
            f"SELECT l.seq, l.listing_id, 0.0 {source} AND l.listing_id > :after_id "
            "ORDER BY l.listing_id LIMIT :limit"
        )
    rows: list[tuple[int, str, float]] = conn.execute(page_sql, params).fetchall()
    total = _count(conn, normalized)
    more = len(rows) > normalized.page_size
    rows = rows[: normalized.page_size]
    listings = load_listings(conn, [seq for seq, _, _ in rows])
    hits = tuple(
        market_pb2.SearchHit(listing=listings[seq], score=float(score))
        for seq, _, score in rows
        if seq in listings
    )
    token = ""
    if more and rows:
        _, last_id, last_score = rows[-1]
        token = _encode_token(
            normalized,
            _Position(float(last_score), last_id, position.idf, position.average_length),
        )
    return SearchResult(hits=hits, next_page_token=token, total=total)


def _count(conn: sqlite3.Connection, query: _Query) -> int:
    if not query.terms and not query.has_filters:
        (listed,) = conn.execute("SELECT listed FROM search_stats").fetchone()
        return int(listed)
    params: dict[str, object] = {}
    source = _source(query, params)
    (count,) = conn.execute(f"SELECT count(*) {source}", params).fetchone()
    return int(count)
