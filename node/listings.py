"""Listings of a node (DESIGN.md section 6): validation, the state machine, storage, bulk import.

A listing offers one certified dataset of one of the node's members: a price
in integer fen, a pricing model, licence terms and a delivery method. What a
listing knows of its dataset (holder, categories, grade, region, certificate
version) is copied from the verified certificate, which the caller describes
with a :class:`CertifiedDataset`; the operator edits only the offer (title,
description, price, pricing model, licence, ``auto_approve``).

Every function takes the node's writer ``sqlite3.Connection`` and runs on the
database thread inside a transaction the caller opened
(:func:`provex.storage.transaction`); none of them commits. Refusals raise
:mod:`provex.errors`: InvalidArgument naming the field, NotFound for an
unknown listing, FailedPrecondition naming the rule.

State machine (:data:`TRANSITIONS`)
    ``DRAFT -> LISTED | DELISTED``, ``LISTED -> SUSPENDED | DELISTED``,
    ``SUSPENDED -> LISTED | DELISTED``; ``DELISTED`` is final and nothing
    returns to ``DRAFT``. Asking for the state a listing already has is a
    no-op that answers the listing unchanged (retries are harmless).
    Becoming LISTED applies the rules of DESIGN.md sections 3 and 6: a valid
    certificate (:data:`RULE_VALID_CERTIFICATE`: status active, never revoked,
    not older than the version listed), no core data
    (:data:`provex.grading.RULE_NO_CORE_DATA`) and tradable categories only
    (:data:`provex.grading.RULE_TRADABLE_CATEGORIES_ONLY`); it also refreshes
    the dataset fields from the certificate given (a re-registered dataset is
    listed under its newest version).

Sync (:func:`suspend_listings_of_dataset`)
    A suspended or revoked certificate suspends every LISTED listing of its
    dataset; a revocation also marks every listing of the dataset so that it
    can never be listed again, whatever certificate is shown later.
    Operators re-list suspended listings themselves once a certificate is
    reinstated.

Storage (:data:`SCHEMA`)
    One row per listing. ``seq`` is the row id (AUTOINCREMENT: never
    reused), which :mod:`node.search` uses as the full-text row id. The
    columns search filters on are copies of the message's fields, written by
    the same statement; ``listing`` holds the serialized Listing without its
    title and description, which are stored once, in their columns.

Bulk import (:func:`parse_import_line`, :func:`parse_jsonl`, :func:`parse_csv`)
    JSON Lines (keys are Listing field names, ``price`` in integer fen, enums
    by name such as ``one_time`` or ``PRICING_MODEL_ONE_TIME``) or CSV (the
    same names as columns, ``licence.*`` for the licence terms, lists
    ``;``-separated). Errors name the line and the field.
"""

from __future__ import annotations

import csv
import json
import re
import secrets
import sqlite3
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypeAlias

from provex.errors import FailedPrecondition, InvalidArgument, NotFound
from provex.grading import RULE_NO_CORE_DATA, RULE_TRADABLE_CATEGORIES_ONLY, Grade
from provex.ids import CreditCode, DatasetId, validate_node_id
from provex.timestamps import from_timestamp, to_timestamp
from provex.v1 import common_pb2, market_pb2

__all__ = (
    "EDITABLE_FIELDS",
    "IMPORT_FIELDS",
    "MAX_CATEGORIES",
    "MAX_DESCRIPTION",
    "MAX_PRICE_FEN",
    "MAX_PURPOSES",
    "MAX_REASON",
    "MAX_TERM_DAYS",
    "MAX_TITLE",
    "RULE_DELISTED_IS_FINAL",
    "RULE_STATE_MACHINE",
    "RULE_VALID_CERTIFICATE",
    "SCHEMA",
    "TRANSITIONS",
    "CertifiedDataset",
    "DatasetStatus",
    "ImportResult",
    "create_listing",
    "get_listing",
    "load_listings",
    "new_listing_id",
    "normalize_listing_id",
    "parse_csv",
    "parse_csv_row",
    "parse_import_line",
    "parse_jsonl",
    "relist",
    "search_scopes",
    "set_state",
    "suspend_listings_of_dataset",
    "suspend_listings_of_holder",
    "update_listing",
)

DRAFT: Final = market_pb2.LISTING_STATE_DRAFT
LISTED: Final = market_pb2.LISTING_STATE_LISTED
SUSPENDED: Final = market_pb2.LISTING_STATE_SUSPENDED
DELISTED: Final = market_pb2.LISTING_STATE_DELISTED

MAX_TITLE = 200
MAX_DESCRIPTION = 10_000
MAX_CATEGORIES = 10
MAX_PRICE_FEN = 10**12
"""10,000,000,000 CNY: anything dearer is a typo (and stays exact as a double)."""
MAX_TERM_DAYS = 3650
MAX_PURPOSES = 20
MAX_PURPOSE = 200
MAX_REASON = 1_000
_MAX_UINT32 = 2**32 - 1
_ID_ATTEMPTS = 8

RULE_VALID_CERTIFICATE = "valid-certificate"
"""A listing is listed only under an active, never revoked, current certificate."""
RULE_STATE_MACHINE = "listing-state-machine"
"""Only the transitions of :data:`TRANSITIONS` are allowed."""
RULE_DELISTED_IS_FINAL = "delisted-is-final"
"""A delisted listing is never edited nor listed again."""

TRANSITIONS: Final[Mapping[int, frozenset[int]]] = {
    DRAFT: frozenset({LISTED, DELISTED}),
    LISTED: frozenset({SUSPENDED, DELISTED}),
    SUSPENDED: frozenset({LISTED, DELISTED}),
    DELISTED: frozenset(),
}
"""The states each state may move to (besides staying where it is)."""

EDITABLE_FIELDS: Final = (
    "title",
    "description",
    "price",
    "pricing_model",
    "licence",
    "auto_approve",
)
"""What :func:`update_listing` changes; everything else comes from the certificate or the node."""

SCHEMA = """
CREATE TABLE listings (
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
    listing_id          TEXT    NOT NULL UNIQUE,
    dataset_id          TEXT    NOT NULL,
    certificate_version INTEGER NOT NULL CHECK (certificate_version >= 1),
    node_id             TEXT    NOT NULL,
    holder              TEXT    NOT NULL,
    title               TEXT    NOT NULL,
    description         TEXT    NOT NULL,
    categories          TEXT    NOT NULL CHECK (json_valid(categories)
                                                AND json_type(categories) = 'array'),
    scopes              TEXT    NOT NULL CHECK (json_valid(scopes)
                                                AND json_type(scopes) = 'array'),
    grade               INTEGER NOT NULL CHECK (grade BETWEEN 1 AND 3),
    region_code         TEXT    NOT NULL,
    price_fen           INTEGER NOT NULL CHECK (price_fen >= 0),
    state               INTEGER NOT NULL CHECK (state BETWEEN 1 AND 4),
    state_reason        TEXT    NOT NULL DEFAULT '',
    revoked             INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),
    created_at          TEXT    NOT NULL,
    updated_at          TEXT    NOT NULL,
    listing             BLOB    NOT NULL
);
CREATE INDEX listings_by_dataset ON listings (dataset_id, state);
"""
"""The listings table. Apply before :data:`node.search.SCHEMA` (its triggers read this table).

``categories`` is a JSON array of catalog codes; ``scopes`` the JSON array
of :func:`search_scopes` (what search's category and region filters look
up); ``state`` and ``grade`` hold the protobuf enum numbers; ``revoked``
marks listings of a revoked certificate; times are ISO 8601 UTC.
"""

_LISTING_ID = re.compile(r"L[0-9a-f]{16}", re.IGNORECASE)
_CATEGORY_CODE = re.compile(r"[a-z0-9_]+(?:\.[a-z0-9_]+)*")
_REGION_CODE = re.compile(r"[0-9]{6}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_NEWLINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

DatasetStatus: TypeAlias = Literal["active", "suspended", "revoked"]
_STATUSES: Final = ("active", "suspended", "revoked")


def _state_name(state: int) -> str:
    try:
        return market_pb2.ListingState.Name(state).removeprefix("LISTING_STATE_")  # type: ignore[arg-type]
    except ValueError:
        return str(state)


# ---------------------------------------------------------------- the dataset


@dataclass(frozen=True)
class CertifiedDataset:
    """What a listing needs to know of its dataset, from the verified certificate and catalog.

    ``grade`` is a :class:`provex.grading.Grade` or the ``provex.v1.Grade``
    number (the two agree); ``tradable`` says whether every category of the
    dataset is tradable in the node's current catalog; ``status`` is the
    certificate's current status. Construction validates and normalizes
    (upper-case dataset id and credit code, categories as a tuple); errors
    are InvalidArgument naming ``dataset.<field>``.
    """

    dataset_id: str
    certificate_version: int
    holder: str
    title: str
    description: str
    categories: tuple[str, ...]
    grade: int
    region_code: str
    tradable: bool
    status: str = "active"

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "dataset_id", _dataset_id(self.dataset_id, "dataset.dataset_id"))
        if not _is_int(self.certificate_version) or not (
            1 <= self.certificate_version <= _MAX_UINT32
        ):
            raise InvalidArgument(
                "dataset.certificate_version must be a version number >= 1, "
                f"got {self.certificate_version!r}"
            )
        set_(self, "holder", _credit_code(self.holder, "dataset.holder"))
        if not isinstance(self.title, str) or not isinstance(self.description, str):
            raise InvalidArgument("dataset.title and dataset.description must be strings")
        set_(self, "categories", _categories(self.categories, "dataset.categories"))
        if not _is_int(self.grade) or self.grade not in tuple(Grade):
            raise InvalidArgument(
                "dataset.grade must be a grade (1 general, 2 important, 3 core), "
                f"got {self.grade!r}"
            )
        set_(self, "grade", int(self.grade))
        if not isinstance(self.region_code, str) or not _REGION_CODE.fullmatch(self.region_code):
            raise InvalidArgument(
                f"dataset.region_code must be 6 ASCII digits (GB/T 2260), got {self.region_code!r}"
            )
        if not isinstance(self.tradable, bool):
            raise InvalidArgument(f"dataset.tradable must be a bool, got {self.tradable!r}")
        if self.status not in _STATUSES:
            raise InvalidArgument(
                f"dataset.status must be one of {', '.join(_STATUSES)}, got {self.status!r}"
            )


# ---------------------------------------------------------------- field checks


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _dataset_id(text: object, field: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise InvalidArgument(f"{field} is required (e.g. 440100-2026-0000123-8)")
    try:
        return str(DatasetId.parse(text))
    except InvalidArgument as error:
        raise InvalidArgument(f"{field}: {error}") from None


def _credit_code(text: object, field: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise InvalidArgument(f"{field} is required (an 18-character credit code)")
    try:
        return CreditCode.parse(text).code
    except InvalidArgument as error:
        raise InvalidArgument(f"{field}: {error}") from None


def _categories(codes: object, field: str) -> tuple[str, ...]:
    if isinstance(codes, str) or not isinstance(codes, Iterable):
        raise InvalidArgument(f"{field} must be a list of catalog codes, got {codes!r}")
    result = tuple(codes)
    if not 1 <= len(result) <= MAX_CATEGORIES:
        raise InvalidArgument(
            f"{field} must list 1..{MAX_CATEGORIES} catalog codes, got {len(result)}"
        )
    for code in result:
        if not isinstance(code, str) or not _CATEGORY_CODE.fullmatch(code):
            raise InvalidArgument(
                f"{field}: {code!r} is not a catalog code (dotted lower-case segments of "
                "a-z, 0-9 and _, e.g. transport.road.traffic)"
            )
    if len(set(result)) != len(result):
        raise InvalidArgument(f"{field} lists a category twice")
    return result


def search_scopes(categories: Iterable[str], region_code: str) -> list[str]:
    """The filter keys a listing answers to: ``c:<code>`` and ``r:<prefix>``, sorted.

    Every catalog code and each of its ancestors (``transport.road.traffic``
    gives ``c:transport``, ``c:transport.road``, ``c:transport.road.traffic``),
    and the region code's province, city and own prefixes (``440106`` gives
    ``r:44``, ``r:4401``, ``r:440106``). Search filters on a category prefix
    or a 2, 4 or 6 digit region prefix by looking one key up.
    """
    scopes: set[str] = set()
    for code in categories:
        parts = code.split(".")
        scopes.update("c:" + ".".join(parts[: depth + 1]) for depth in range(len(parts)))
    if region_code:
        scopes.update("r:" + region_code[:length] for length in (2, 4, 6))
    return sorted(scopes)


def normalize_listing_id(text: str, field: str = "listing_id") -> str:
    """The canonical listing id (``L`` and 16 lower-case hex digits), else InvalidArgument."""
    if not isinstance(text, str) or not _LISTING_ID.fullmatch(text.strip()):
        raise InvalidArgument(
            f"{field} must be L followed by 16 hex digits (e.g. L0123456789abcdef), got {text!r}"
        )
    return "L" + text.strip()[1:].lower()


def new_listing_id() -> str:
    """A fresh random listing id: ``L`` and 16 hex digits (64 bits from :mod:`secrets`)."""
    return "L" + secrets.token_hex(8)


def _check_title(listing: market_pb2.Listing) -> None:
    title = listing.title.strip()
    if not 1 <= len(title) <= MAX_TITLE:
        raise InvalidArgument(f"title must be 1..{MAX_TITLE} characters, got {len(title)}")
    if _CONTROL.search(title):
        raise InvalidArgument("title must not contain control characters (line breaks, tabs)")
    listing.title = title


def _check_description(listing: market_pb2.Listing) -> None:
    description = listing.description.strip()
    if len(description) > MAX_DESCRIPTION:
        raise InvalidArgument(
            f"description must be at most {MAX_DESCRIPTION:,} characters, got {len(description):,}"
        )
    if _CONTROL_BUT_NEWLINES.search(description):
        raise InvalidArgument("description must not contain control characters except line breaks")
    listing.description = description


def _check_offer(listing: market_pb2.Listing) -> None:
    """Validate (and default) the offer's fields: price, pricing model, licence, delivery."""
    if not listing.HasField("price"):
        raise InvalidArgument("price is required (integer fen; 0 for a free dataset)")
    if not 0 <= listing.price.fen <= MAX_PRICE_FEN:
        raise InvalidArgument(
            f"price.fen must be within 0..{MAX_PRICE_FEN:,} fen, got {listing.price.fen:,}"
        )
    if listing.pricing_model not in market_pb2.PricingModel.values() or (
        listing.pricing_model == market_pb2.PRICING_MODEL_UNSPECIFIED
    ):
        names = ", ".join(
            name.removeprefix("PRICING_MODEL_")
            for name, number in market_pb2.PricingModel.items()
            if number != market_pb2.PRICING_MODEL_UNSPECIFIED
        )
        raise InvalidArgument(f"pricing_model must be one of {names}, got {listing.pricing_model}")
    if not listing.HasField("licence"):
        raise InvalidArgument("licence is required (purposes and term_days at least)")
    _check_licence(listing.licence)
    if listing.delivery == market_pb2.DELIVERY_METHOD_UNSPECIFIED:
        listing.delivery = market_pb2.DELIVERY_METHOD_FILE
    if listing.delivery != market_pb2.DELIVERY_METHOD_FILE:
        raise InvalidArgument(
            f"delivery must be FILE (the only delivery method so far), got {listing.delivery}"
        )


def _check_licence(licence: market_pb2.LicenceTerms) -> None:
    if not 1 <= len(licence.purposes) <= MAX_PURPOSES:
        raise InvalidArgument(
            f"licence.purposes must list 1..{MAX_PURPOSES} purposes, got {len(licence.purposes)}"
        )
    purposes = [purpose.strip() for purpose in licence.purposes]
    for position, purpose in enumerate(purposes):
        if not 1 <= len(purpose) <= MAX_PURPOSE:
            raise InvalidArgument(
                f"licence.purposes[{position}] must be 1..{MAX_PURPOSE} characters, "
                f"got {len(purpose)}"
            )
        if _CONTROL.search(purpose):
            raise InvalidArgument(
                f"licence.purposes[{position}] must not contain control characters"
            )
    if len(set(purposes)) != len(purposes):
        raise InvalidArgument("licence.purposes lists a purpose twice")
    del licence.purposes[:]
    licence.purposes.extend(purposes)
    if not 1 <= licence.term_days <= MAX_TERM_DAYS:
        raise InvalidArgument(
            f"licence.term_days must be within 1..{MAX_TERM_DAYS} (ten years), "
            f"got {licence.term_days}"
        )


def _check_reason(reason: str) -> str:
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise InvalidArgument(f"reason must be a string of at most {MAX_REASON:,} characters")
    return reason.strip()


def _check_state_value(state: int, field: str = "state") -> None:
    if state not in TRANSITIONS:
        raise InvalidArgument(
            f"{field} must be one of DRAFT, LISTED, SUSPENDED, DELISTED, got {_state_name(state)}"
        )


# ---------------------------------------------------------------- the rules


def _check_same_dataset(listing: market_pb2.Listing, dataset: CertifiedDataset) -> None:
    if listing.dataset_id != dataset.dataset_id:
        raise InvalidArgument(
            f"dataset: the certificate given is of dataset {dataset.dataset_id}, "
            f"but listing {listing.listing_id} offers {listing.dataset_id}"
        )
    if listing.holder and listing.holder != dataset.holder:
        raise InvalidArgument(
            f"holder: listing {listing.listing_id} is offered by {listing.holder}, "
            f"but the certificate names {dataset.holder}"
        )


def _check_listable(listing: market_pb2.Listing, dataset: CertifiedDataset, revoked: bool) -> None:
    """Refuse, naming the rule, to list ``listing`` under ``dataset``'s certificate."""
    subject = (
        f"listing {listing.listing_id} cannot be listed"
        if listing.listing_id
        else ("the listing cannot be listed")
    )
    if revoked or dataset.status == "revoked":
        raise FailedPrecondition(
            f"{subject}: rule {RULE_VALID_CERTIFICATE}: the certificate of dataset "
            f"{dataset.dataset_id} is revoked; its listings are never listed again"
        )
    if dataset.status != "active":
        raise FailedPrecondition(
            f"{subject}: rule {RULE_VALID_CERTIFICATE}: the certificate of dataset "
            f"{dataset.dataset_id} is {dataset.status}; list it again once the registry "
            "reinstates it"
        )
    if dataset.certificate_version < listing.certificate_version:
        raise FailedPrecondition(
            f"{subject}: rule {RULE_VALID_CERTIFICATE}: certificate version "
            f"{dataset.certificate_version} is older than version "
            f"{listing.certificate_version}, which the listing offered already"
        )
    if dataset.grade == Grade.CORE:
        raise FailedPrecondition(
            f"{subject}: rule {RULE_NO_CORE_DATA}: dataset {dataset.dataset_id} grades CORE; "
            "core data is never traded"
        )
    if not dataset.tradable:
        raise FailedPrecondition(
            f"{subject}: rule {RULE_TRADABLE_CATEGORIES_ONLY}: a category of dataset "
            f"{dataset.dataset_id} ({', '.join(dataset.categories)}) is not tradable"
        )


def _apply_dataset(listing: market_pb2.Listing, dataset: CertifiedDataset) -> None:
    """Copy the certificate's facts into the listing."""
    listing.dataset_id = dataset.dataset_id
    listing.certificate_version = dataset.certificate_version
    listing.holder = dataset.holder
    del listing.categories[:]
    listing.categories.extend(dataset.categories)
    listing.grade = dataset.grade  # type: ignore[assignment]
    listing.region_code = dataset.region_code


def _check_dataset_fields(listing: market_pb2.Listing, dataset: CertifiedDataset) -> None:
    """Fields of a new listing that come from the certificate: empty, or what it says."""
    if _dataset_id(listing.dataset_id, "dataset_id") != dataset.dataset_id:
        raise InvalidArgument(
            f"dataset_id: the listing offers {listing.dataset_id} but the certificate given "
            f"is of {dataset.dataset_id}"
        )
    if listing.certificate_version not in (0, dataset.certificate_version):
        raise InvalidArgument(
            f"certificate_version: the current certificate of {dataset.dataset_id} is "
            f"version {dataset.certificate_version}, not {listing.certificate_version}"
        )
    if listing.holder and _credit_code(listing.holder, "holder") != dataset.holder:
        raise InvalidArgument(
            f"holder: dataset {dataset.dataset_id} is held by {dataset.holder}, "
            f"not {listing.holder}"
        )
    if listing.categories and set(listing.categories) != set(dataset.categories):
        raise InvalidArgument(
            "categories come from the certificate: leave them empty or give "
            f"{', '.join(dataset.categories)}"
        )
    if listing.grade not in (common_pb2.GRADE_UNSPECIFIED, dataset.grade):
        raise InvalidArgument(
            f"grade comes from the certificate ({Grade(dataset.grade).label}): leave it empty"
        )
    if listing.region_code and listing.region_code != dataset.region_code:
        raise InvalidArgument(
            f"region_code comes from the certificate ({dataset.region_code}): leave it empty"
        )


# ---------------------------------------------------------------- storage


def _stored_bytes(listing: market_pb2.Listing) -> bytes:
    stored = market_pb2.Listing()
    stored.CopyFrom(listing)
    stored.ClearField("title")
    stored.ClearField("description")
    return stored.SerializeToString(deterministic=True)


def _columns(listing: market_pb2.Listing) -> dict[str, object]:
    return {
        "listing_id": listing.listing_id,
        "dataset_id": listing.dataset_id,
        "certificate_version": listing.certificate_version,
        "node_id": listing.node_id,
        "holder": listing.holder,
        "title": listing.title,
        "description": listing.description,
        "categories": json.dumps(list(listing.categories), separators=(",", ":")),
        "scopes": json.dumps(search_scopes(listing.categories, listing.region_code)),
        "grade": int(listing.grade),
        "region_code": listing.region_code,
        "price_fen": listing.price.fen,
        "state": int(listing.state),
        "updated_at": from_timestamp(listing.updated_at).isoformat(),
        "listing": _stored_bytes(listing),
    }


def _insert(conn: sqlite3.Connection, listing: market_pb2.Listing, now: datetime) -> None:
    for _ in range(_ID_ATTEMPTS):
        listing.listing_id = new_listing_id()
        columns = _columns(listing)
        columns["created_at"] = now.astimezone(UTC).isoformat()
        names = ", ".join(columns)
        values = ", ".join(f":{name}" for name in columns)
        try:
            conn.execute(f"INSERT INTO listings ({names}) VALUES ({values})", columns)
        except sqlite3.IntegrityError as error:
            if "listings.listing_id" in str(error):
                continue  # A 64-bit collision: draw again.
            raise
        return
    raise RuntimeError(f"no free listing id after {_ID_ATTEMPTS} attempts")  # pragma: no cover


def _store(
    conn: sqlite3.Connection, listing: market_pb2.Listing, reason: str | None = None
) -> None:
    columns = _columns(listing)
    if reason is not None:
        columns["state_reason"] = reason
    assignments = ", ".join(f"{name} = :{name}" for name in columns if name != "listing_id")
    cursor = conn.execute(
        f"UPDATE listings SET {assignments} WHERE listing_id = :listing_id", columns
    )
    if cursor.rowcount != 1:
        raise NotFound(f"listing {listing.listing_id} not found")


def _from_row(title: str, description: str, blob: bytes) -> market_pb2.Listing:
    listing = market_pb2.Listing.FromString(blob)
    listing.title = title
    listing.description = description
    return listing


def _load(conn: sqlite3.Connection, listing_id: str) -> tuple[market_pb2.Listing, bool]:
    """The listing and whether its certificate was revoked; NotFound if there is none."""
    row = conn.execute(
        "SELECT title, description, listing, revoked FROM listings WHERE listing_id = ?",
        (listing_id,),
    ).fetchone()
    if row is None:
        raise NotFound(f"listing {listing_id} not found")
    return _from_row(row[0], row[1], row[2]), bool(row[3])


def load_listings(conn: sqlite3.Connection, seqs: Sequence[int]) -> dict[int, market_pb2.Listing]:
    """The listings with these row ids (``listings.seq``), by row id; missing ones are absent.

    For :mod:`node.search`, which finds row ids first and decodes only one page.
    """
    if not seqs:
        return {}
    marks = ", ".join("?" * len(seqs))
    rows = conn.execute(
        f"SELECT seq, title, description, listing FROM listings WHERE seq IN ({marks})",
        tuple(seqs),
    )
    return {seq: _from_row(title, description, blob) for seq, title, description, blob in rows}


# ---------------------------------------------------------------- operations


def create_listing(
    conn: sqlite3.Connection,
    listing: market_pb2.Listing,
    dataset: CertifiedDataset,
    node_id: str,
    now: datetime,
) -> market_pb2.Listing:
    """Validate and store a new listing of ``dataset`` on node ``node_id``; return it.

    The node assigns ``listing_id`` (``listing.listing_id`` must be empty),
    ``node_id`` and ``updated_at``; the certificate supplies ``dataset_id``
    (which must match), ``certificate_version``, ``holder``, ``categories``,
    ``grade`` and ``region_code`` (each empty or equal to the certificate's);
    an empty title or description defaults to the dataset's. The listing is
    a DRAFT unless ``listing.state`` asks for LISTED, in which case the
    listing rules apply (FailedPrecondition naming the rule, nothing stored).
    A revoked certificate is refused even for a draft. ``delivery`` defaults
    to FILE.
    """
    node_id = validate_node_id(node_id)
    draft = market_pb2.Listing()
    draft.CopyFrom(listing)
    if draft.listing_id:
        raise InvalidArgument("listing_id is assigned by the node: leave it empty")
    if draft.node_id and draft.node_id != node_id:
        raise InvalidArgument(f"node_id: this is node {node_id}, not {draft.node_id}")
    if draft.HasField("updated_at"):
        raise InvalidArgument("updated_at is set by the node: leave it empty")
    requested = draft.state
    if requested not in (market_pb2.LISTING_STATE_UNSPECIFIED, DRAFT, LISTED):
        raise InvalidArgument(
            f"state of a new listing must be DRAFT or LISTED, got {_state_name(requested)}"
        )
    _check_dataset_fields(draft, dataset)
    if dataset.status == "revoked":
        raise FailedPrecondition(
            f"rule {RULE_VALID_CERTIFICATE}: the certificate of dataset {dataset.dataset_id} "
            "is revoked; it cannot be offered"
        )
    if not draft.title.strip():
        draft.title = dataset.title
    if not draft.description.strip():
        draft.description = dataset.description
    _check_title(draft)
    _check_description(draft)
    _check_offer(draft)
    _apply_dataset(draft, dataset)
    draft.node_id = node_id
    if requested == LISTED:
        _check_listable(draft, dataset, revoked=False)
    draft.state = LISTED if requested == LISTED else DRAFT
    draft.updated_at.CopyFrom(to_timestamp(now))
    _insert(conn, draft, now)
    return draft


def get_listing(conn: sqlite3.Connection, listing_id: str) -> market_pb2.Listing:
    """The listing with this id, in any state; NotFound if there is none."""
    listing, _ = _load(conn, normalize_listing_id(listing_id))
    return listing


_NOT_EDITABLE: Final = (
    "dataset_id",
    "certificate_version",
    "node_id",
    "holder",
    "categories",
    "grade",
    "region_code",
    "delivery",
    "state",
)


def update_listing(
    conn: sqlite3.Connection,
    listing: market_pb2.Listing,
    now: datetime,
    *,
    fields: Collection[str] | None = None,
) -> market_pb2.Listing:
    """Change the editable fields of the listing ``listing.listing_id``; return it.

    ``fields`` names the fields to replace (a subset of
    :data:`EDITABLE_FIELDS`); None replaces them all (so a client reads,
    modifies and writes back the whole listing). Every other field must be
    empty or equal to the stored value (InvalidArgument naming it: state
    changes go through :func:`set_state`, dataset facts come from the
    certificate). A set ``updated_at`` that differs from the stored one means
    the listing changed since the caller read it: FailedPrecondition. A
    DELISTED listing is never edited (:data:`RULE_DELISTED_IS_FINAL`).
    """
    listing_id = normalize_listing_id(listing.listing_id)
    if fields is None:
        chosen: tuple[str, ...] = EDITABLE_FIELDS
    else:
        unknown = sorted(set(fields) - set(EDITABLE_FIELDS))
        if unknown:
            raise InvalidArgument(
                f"fields: {', '.join(unknown)} not editable (editable: "
                f"{', '.join(EDITABLE_FIELDS)})"
            )
        chosen = tuple(name for name in EDITABLE_FIELDS if name in fields)
    current, _ = _load(conn, listing_id)
    if current.state == DELISTED:
        raise FailedPrecondition(
            f"listing {listing_id} is delisted: rule {RULE_DELISTED_IS_FINAL}: "
            "a delisted listing is never edited"
        )
    for name in _NOT_EDITABLE:
        given = getattr(listing, name)
        if name == "categories":
            differs = bool(given) and list(given) != list(current.categories)
        elif name in ("dataset_id", "holder"):
            differs = bool(given) and given.strip().upper() != getattr(current, name)
        else:
            differs = bool(given) and given != getattr(current, name)
        if differs:
            hint = " (use SetListingState)" if name == "state" else ""
            raise InvalidArgument(f"{name} is not editable{hint}: leave it empty")
    if listing.HasField("updated_at") and listing.updated_at != current.updated_at:
        raise FailedPrecondition(
            f"listing {listing_id} changed since it was read (updated at "
            f"{from_timestamp(current.updated_at).isoformat()}): read it again"
        )
    updated = market_pb2.Listing()
    updated.CopyFrom(current)
    for name in chosen:
        if name == "price":
            updated.ClearField("price")
            if listing.HasField("price"):
                updated.price.CopyFrom(listing.price)
        elif name == "licence":
            updated.ClearField("licence")
            if listing.HasField("licence"):
                updated.licence.CopyFrom(listing.licence)
        else:
            setattr(updated, name, getattr(listing, name))
    _check_title(updated)
    _check_description(updated)
    _check_offer(updated)
    updated.updated_at.CopyFrom(to_timestamp(now))
    _store(conn, updated)
    return updated


def set_state(  # noqa: PLR0917 (the signature the servicers call)
    conn: sqlite3.Connection,
    listing_id: str,
    state: int,
    reason: str,
    dataset: CertifiedDataset | None,
    now: datetime,
) -> market_pb2.Listing:
    """Move a listing along the state machine (:data:`TRANSITIONS`); return it.

    Asking for its current state answers it unchanged. Becoming LISTED needs
    ``dataset`` (the current certificate of the listing's dataset) and
    passes the listing rules (FailedPrecondition naming the rule); it copies
    the certificate's facts (version, categories, grade, region) into the
    listing. ``reason`` (at most 1,000 characters) is kept with the state.
    """
    listing_id = normalize_listing_id(listing_id)
    _check_state_value(state)
    reason = _check_reason(reason)
    current, revoked = _load(conn, listing_id)
    if current.state == state:
        return current
    if state not in TRANSITIONS[current.state]:
        allowed = ", ".join(sorted(_state_name(s) for s in TRANSITIONS[current.state]))
        rule = RULE_DELISTED_IS_FINAL if current.state == DELISTED else RULE_STATE_MACHINE
        raise FailedPrecondition(
            f"listing {listing_id} is {_state_name(current.state)}: rule {rule}: it cannot "
            f"become {_state_name(state)} (allowed: {allowed or 'none'})"
        )
    updated = market_pb2.Listing()
    updated.CopyFrom(current)
    if state == LISTED:
        if dataset is None:
            raise InvalidArgument(
                "dataset: listing needs the current certificate of the listing's dataset"
            )
        _check_same_dataset(current, dataset)
        _check_listable(current, dataset, revoked)
        _apply_dataset(updated, dataset)
    updated.state = market_pb2.ListingState.ValueType(state)
    updated.updated_at.CopyFrom(to_timestamp(now))
    _store(conn, updated, reason)
    return updated


def _suspend_rows(
    conn: sqlite3.Connection, rows: list[Any], reason: str, now: datetime
) -> list[str]:
    """Suspend the listings of ``(title, description, listing)`` rows; their ids in row order."""
    stamp = to_timestamp(now)
    suspended: list[str] = []
    for title, description, blob in rows:
        listing = _from_row(title, description, blob)
        listing.state = SUSPENDED
        listing.updated_at.CopyFrom(stamp)
        _store(conn, listing, reason)
        suspended.append(listing.listing_id)
    return suspended


def suspend_listings_of_dataset(
    conn: sqlite3.Connection,
    dataset_id: str,
    reason: str,
    now: datetime,
    *,
    revoked: bool = False,
) -> list[str]:
    """Suspend every LISTED listing of ``dataset_id``; return their ids, sorted.

    Sync calls this when the dataset's certificate is suspended or revoked.
    With ``revoked``, every listing of the dataset, whatever its state, is
    also marked so that it can never be listed again. Idempotent.
    """
    dataset_id = _dataset_id(dataset_id, "dataset_id")
    reason = _check_reason(reason)
    rows = conn.execute(
        "SELECT title, description, listing FROM listings "
        "WHERE dataset_id = ? AND state = ? ORDER BY listing_id",
        (dataset_id, LISTED),
    ).fetchall()
    suspended = _suspend_rows(conn, rows, reason, now)
    if revoked:
        conn.execute(
            "UPDATE listings SET revoked = 1 WHERE dataset_id = ? AND revoked = 0", (dataset_id,)
        )
    return suspended


def suspend_listings_of_holder(
    conn: sqlite3.Connection, holder: str, reason: str, now: datetime
) -> list[str]:
    """Suspend every LISTED listing of the member ``holder``; return their ids, sorted.

    Sync calls this when the registry freezes the member federation-wide.
    Idempotent: a listing already suspended is left as it is.
    """
    holder = _credit_code(holder, "holder")
    reason = _check_reason(reason)
    rows = conn.execute(
        "SELECT title, description, listing FROM listings "
        "WHERE holder = ? AND state = ? ORDER BY listing_id",
        (holder, LISTED),
    ).fetchall()
    return _suspend_rows(conn, rows, reason, now)


def relist(
    conn: sqlite3.Connection, listing_ids: Iterable[str], reason: str, now: datetime
) -> list[str]:
    """List again the SUSPENDED listings among ``listing_ids`` (an unfreeze); return their ids.

    A listing whose certificate was revoked, or that is no longer suspended
    (delisted, or listed again by the operator), is left as it is; so is one
    whose dataset's certificate is not active now (the caller passes only
    listings whose certificate it checked).
    """
    reason = _check_reason(reason)
    stamp = to_timestamp(now)
    restored: list[str] = []
    for listing_id in sorted(listing_ids):
        try:
            listing, revoked = _load(conn, normalize_listing_id(listing_id))
        except NotFound:
            continue
        if revoked or listing.state != SUSPENDED:
            continue
        listing.state = LISTED
        listing.updated_at.CopyFrom(stamp)
        _store(conn, listing, reason)
        restored.append(listing.listing_id)
    return restored


# ---------------------------------------------------------------- bulk import

ImportResult: TypeAlias = tuple[int, market_pb2.Listing | InvalidArgument]
"""One record of an import file: its line number, and its listing or why it was refused."""

_LICENCE_FIELDS: Final = (
    "purposes",
    "term_days",
    "no_resale",
    "domestic_only",
    "onward_transfer_allowed",
)
IMPORT_FIELDS: Final = (
    "dataset_id",
    "certificate_version",
    "holder",
    "title",
    "description",
    "categories",
    "grade",
    "region_code",
    "price",
    "pricing_model",
    "licence",
    "delivery",
    "state",
    "auto_approve",
)
"""The JSON keys of an import line (``licence`` is an object of :data:`_LICENCE_FIELDS`)."""
_SET_BY_NODE: Final = ("listing_id", "node_id", "updated_at")
_CSV_COLUMNS: Final = tuple(name for name in IMPORT_FIELDS if name != "licence") + tuple(
    f"licence.{name}" for name in _LICENCE_FIELDS
)
_CSV_INTS: Final = frozenset({"certificate_version", "price", "licence.term_days"})
_CSV_BOOLS: Final = frozenset(
    {
        "auto_approve",
        "licence.no_resale",
        "licence.domestic_only",
        "licence.onward_transfer_allowed",
    }
)
_CSV_LISTS: Final = frozenset({"categories", "licence.purposes"})
_TRUE: Final = frozenset({"true", "yes", "y", "1", "是"})
_FALSE: Final = frozenset({"false", "no", "n", "0", "否"})


def _text(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{field} must be a string, got {value!r}")
    return value


def _unsigned(value: object, field: str, maximum: int) -> int:
    if not _is_int(value) or not 0 <= value <= maximum:  # type: ignore[operator]
        raise InvalidArgument(f"{field} must be an integer within 0..{maximum:,}, got {value!r}")
    return value  # type: ignore[return-value]


def _boolean(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgument(f"{field} must be true or false, got {value!r}")
    return value


def _strings(value: object, field: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidArgument(f"{field} must be a list of strings, got {value!r}")
    return value


def _enum(value: object, items: Iterable[tuple[str, int]], prefix: str, field: str) -> int:
    """An enum number from its name, with or without ``prefix``, case-insensitive."""
    numbers = {name: number for name, number in items if number != 0}
    names = [name.removeprefix(prefix).lower() for name in numbers]
    if isinstance(value, str):
        name = value.strip().upper().replace("-", "_")
        full = name if name.startswith(prefix) else prefix + name
        if full in numbers:
            return numbers[full]
    raise InvalidArgument(f"{field} must be one of {', '.join(names)}, got {value!r}")


def _listing_from_fields(data: Mapping[str, object]) -> market_pb2.Listing:
    """A Listing from an import record's typed values; InvalidArgument naming the field."""
    for name in data:
        if name in _SET_BY_NODE:
            raise InvalidArgument(f"{name} is set by the node: leave it out")
        if name not in IMPORT_FIELDS:
            raise InvalidArgument(f"unknown field {name!r} (fields: {', '.join(IMPORT_FIELDS)})")
    listing = market_pb2.Listing()
    for name in ("dataset_id", "holder", "title", "description", "region_code"):
        if name in data:
            setattr(listing, name, _text(data[name], name))
    if "certificate_version" in data:
        listing.certificate_version = _unsigned(
            data["certificate_version"], "certificate_version", _MAX_UINT32
        )
    if "categories" in data:
        listing.categories.extend(_strings(data["categories"], "categories"))
    if "grade" in data:
        listing.grade = _enum(data["grade"], common_pb2.Grade.items(), "GRADE_", "grade")  # type: ignore[assignment]
    if "price" in data:
        price = data["price"]
        if not _is_int(price):
            raise InvalidArgument(f"price must be an integer number of fen, got {price!r}")
        if not 0 <= price <= MAX_PRICE_FEN:  # type: ignore[operator]
            raise InvalidArgument(f"price must be within 0..{MAX_PRICE_FEN:,} fen, got {price!r}")
        listing.price.fen = price  # type: ignore[assignment]
    if "pricing_model" in data:
        listing.pricing_model = _enum(  # type: ignore[assignment]
            data["pricing_model"],
            market_pb2.PricingModel.items(),
            "PRICING_MODEL_",
            "pricing_model",
        )
    if "delivery" in data:
        listing.delivery = _enum(  # type: ignore[assignment]
            data["delivery"], market_pb2.DeliveryMethod.items(), "DELIVERY_METHOD_", "delivery"
        )
    if "state" in data:
        listing.state = _enum(  # type: ignore[assignment]
            data["state"], market_pb2.ListingState.items(), "LISTING_STATE_", "state"
        )
    if "auto_approve" in data:
        listing.auto_approve = _boolean(data["auto_approve"], "auto_approve")
    if "licence" in data:
        _licence_from_fields(data["licence"], listing.licence)
    if listing.title:
        _check_title(listing)
    _check_description(listing)
    if listing.HasField("licence"):
        _check_licence(listing.licence)
    return listing


def _licence_from_fields(data: object, licence: market_pb2.LicenceTerms) -> None:
    if not isinstance(data, Mapping):
        raise InvalidArgument(f"licence must be an object, got {data!r}")
    for name in data:
        if name not in _LICENCE_FIELDS:
            raise InvalidArgument(
                f"unknown field licence.{name} (fields: {', '.join(_LICENCE_FIELDS)})"
            )
    licence.SetInParent()
    if "purposes" in data:
        licence.purposes.extend(_strings(data["purposes"], "licence.purposes"))
    if "term_days" in data:
        licence.term_days = _unsigned(data["term_days"], "licence.term_days", _MAX_UINT32)
    for name in ("no_resale", "domestic_only", "onward_transfer_allowed"):
        if name in data:
            setattr(licence, name, _boolean(data[name], f"licence.{name}"))


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidArgument(f"field {key!r} appears twice")
        result[key] = value
    return result


def parse_import_line(text: str, line: int) -> market_pb2.Listing:
    """The Listing of one JSON Lines record; InvalidArgument ``line N: <field> ...`` if bad.

    Keys are Listing field names (:data:`IMPORT_FIELDS`); ``price`` is an
    integer number of fen; ``categories`` and ``licence.purposes`` are lists
    of strings; enums are names (``one_time``, ``PRICING_MODEL_ONE_TIME``,
    ``listed``, ``important``). The node's own fields (listing_id, node_id,
    updated_at) and unknown keys are refused. Only what the file alone can
    say is checked here; :func:`create_listing` checks the rest.
    """
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as error:
        raise InvalidArgument(
            f"line {line}: not valid JSON: {error.msg} (column {error.colno})"
        ) from None
    except InvalidArgument as error:
        raise InvalidArgument(f"line {line}: {error}") from None
    if not isinstance(data, dict):
        raise InvalidArgument(f"line {line}: a record must be a JSON object, got {text.strip()!r}")
    try:
        return _listing_from_fields(data)
    except InvalidArgument as error:
        raise InvalidArgument(f"line {line}: {error}") from None


def parse_jsonl(lines: Iterable[str]) -> Iterator[ImportResult]:
    """Each non-blank line of a JSON Lines file: ``(line number, listing or refusal)``."""
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            yield number, parse_import_line(text, number)
        except InvalidArgument as error:
            yield number, error


def _csv_value(column: str, cell: str) -> object:
    text = cell.strip()
    if column in _CSV_INTS:
        if not re.fullmatch(r"[0-9]+", text):
            raise InvalidArgument(f"{column} must be an integer, got {cell!r}")
        return int(text)
    if column in _CSV_BOOLS:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise InvalidArgument(f"{column} must be true or false, got {cell!r}")
    if column in _CSV_LISTS:
        return [item.strip() for item in text.split(";") if item.strip()]
    return cell if column in ("title", "description") else text


def parse_csv_row(row: Mapping[str, str | None], line: int) -> market_pb2.Listing:
    """The Listing of one CSV record (column -> cell); InvalidArgument naming line and column.

    Columns are :data:`IMPORT_FIELDS` with the licence flattened into
    ``licence.purposes``, ``licence.term_days``, ``licence.no_resale``,
    ``licence.domestic_only`` and ``licence.onward_transfer_allowed``; lists
    are ``;``-separated; booleans true/false (yes/no, 1/0, 是/否); an empty
    cell leaves the field unset.
    """
    data: dict[str, object] = {}
    licence: dict[str, object] = {}
    try:
        for column, cell in row.items():
            if column not in _CSV_COLUMNS:
                raise InvalidArgument(
                    f"unknown column {column!r} (columns: {', '.join(_CSV_COLUMNS)})"
                )
            if cell is None or not cell.strip():
                continue
            value = _csv_value(column, cell)
            if column.startswith("licence."):
                licence[column.removeprefix("licence.")] = value
            else:
                data[column] = value
        if licence:
            data["licence"] = licence
        return _listing_from_fields(data)
    except InvalidArgument as error:
        raise InvalidArgument(f"line {line}: {error}") from None


def parse_csv(rows: Iterable[str]) -> Iterator[ImportResult]:
    """Each record of a CSV file with a header line: ``(line number, listing or refusal)``.

    ``rows`` is what :func:`csv.reader` reads (an open text file, a list of
    lines). The line number is the record's first physical line. A bad
    header (unknown or repeated column) or malformed CSV raises
    InvalidArgument naming the line: the rest of the file cannot be read
    reliably. Blank records are skipped; a UTF-8 byte order mark and spaces
    around column names are ignored.
    """
    reader = csv.reader(rows, strict=True)
    try:
        header = next(reader, None)
        if header is None:
            return
        columns = [name.strip() for name in header]
        if columns:
            columns[0] = columns[0].removeprefix("\ufeff").strip()
        for name in columns:
            if name not in _CSV_COLUMNS:
                raise InvalidArgument(
                    f"line 1: unknown column {name!r} (columns: {', '.join(_CSV_COLUMNS)})"
                )
        if len(set(columns)) != len(columns):
            raise InvalidArgument("line 1: the header names a column twice")
        previous = reader.line_num
        for record in reader:
            start, previous = previous + 1, reader.line_num
            if not any(cell.strip() for cell in record):
                continue
            if len(record) != len(columns):
                yield (
                    start,
                    InvalidArgument(
                        f"line {start}: {len(record)} cells, "
                        f"but the header has {len(columns)} columns"
                    ),
                )
                continue
            try:
                yield start, parse_csv_row(dict(zip(columns, record, strict=True)), start)
            except InvalidArgument as error:
                yield start, error
    except csv.Error as error:
        raise InvalidArgument(f"line {reader.line_num}: malformed CSV: {error}") from None
