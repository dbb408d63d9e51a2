"""Registration certificates and status statements (DESIGN.md section 4): the logic.

:class:`Issuance` is what the ``CertificateService`` servicer calls; it needs
no gRPC and is tested directly.

Registration (:meth:`Issuance.register`, :meth:`Issuance.register_chunk`)
    A node registers one of its members' datasets. The request is validated
    and normalized (credit codes and dataset ids upper-cased), the holder is
    checked (a member of the calling node, not frozen, with a security
    officer when the data grades IMPORTANT), the grade is derived with the
    latest catalog release (:func:`provex.grading.check_registrable`: core
    data and non-tradable categories are refused), the id is assigned
    (region of the registering node, UTC year of ``issued_at``, the next
    serial of that region and year) and the :class:`DatasetCertificate` is
    signed and logged.

    Registrations are processed in groups: a bulk chunk is one group, and
    the unary calls that reach the registry in the same event-loop turn
    form one too. A group costs one query function for its idempotency
    rows, source grades and re-registered datasets, grades from a cache
    (one decision per distinct categories / personal-information counts /
    source grades), one member re-read for the holders the cache does not
    accept, a tight signing loop, and one entry group of one log batch
    (:meth:`registry.transparency.Sequencer.append_group`). In that batch's
    transaction, the group's check re-reads what may have changed since the
    in-memory checks (idempotency keys, member rows, re-registered
    datasets' owner, status and latest version) and refuses just those
    entries; then the accepted entries' rows (``idempotency``, ``datasets``,
    ``certificates``) are inserted with their log entries, a few hundred
    rows per statement, so a log entry never lacks its rows nor the
    reverse. Each refusal answers its own request; nothing is answered
    before the batch is durable.

Refusals and their codes
    INVALID_ARGUMENT for a malformed field (the message names it, e.g.
    ``dataset.content_digest must be 32 bytes (SHA-256)``); FAILED_PRECONDITION
    for *missing evidence* (an empty lawful-source statement or an empty
    right: the design lists these as refusals, not as malformed requests),
    a frozen holder, an important-data holder without a security officer,
    core data or a non-tradable category (the message names the rule) and a
    revoked dataset; NOT_FOUND for an unknown category (as
    :mod:`provex.grading` raises it), an unknown ``derived_from`` source or
    an unknown ``dataset_id``; PERMISSION_DENIED for a holder that is not a
    member of the caller's node and for a dataset of another node or holder;
    ALREADY_EXISTS for an idempotency key reused with a different request.

Idempotency
    ``(node, idempotency_key)`` maps to the SHA-256 of the normalized request
    (dataset and dataset_id). The same key with the same request answers the
    stored certificate (a fresh inclusion proof against the latest
    checkpoint: the envelope is byte-identical); with a different request it
    is ALREADY_EXISTS. Concurrent requests with the same key are serialized
    in memory (a chunk that repeats a key registers the repeats one by one
    after its group, as separate calls would be); the transaction's check
    settles a race that still gets through (the entry is refused and its
    caller answers the stored certificate).

Ids and versions
    The certificate names its id before it is signed, so serials and
    versions are allocated in memory (this process is the log's only
    writer) from the stored last values, and stored with the log entry.
    Serials are dense unless an entry is refused inside the transaction
    (a race with a member change, for example): its serial is given back
    when no later one was handed out meanwhile, otherwise it stays unused.

Caches (no per-request database round trip on the bulk path)
    The decoded latest catalog (its version re-checked at most every
    ``catalog_check_seconds``), node regions, and member rows. A cached
    member is used only to *accept*; any refusal re-reads the row first, and
    the group check re-reads the row inside the transaction, so a
    stale cache can never admit what the database refuses. Grade decisions
    are cached per catalog release.

Status (:meth:`Issuance.set_status`, :meth:`Issuance.status`, :meth:`Issuance.watch`)
    Admins suspend, revoke or reinstate a dataset id (a revoked id is never
    reinstated) and freeze (SUSPENDED) or unfreeze (ACTIVE) a member, which
    also sets ``members.status``. Each is a signed, logged
    :class:`StatusStatement`; the current status of a subject is its latest
    statement (ACTIVE when there is none). :meth:`Issuance.watch` is the feed
    of statements after a log index, optionally following new ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import sqlite3
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache, partial

from provex import documents
from provex.catalog import Release, release_from_proto
from provex.envelope import Envelope
from provex.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ProvexError,
    ResourceExhausted,
    Unavailable,
)
from provex.grading import DatasetProfile, Grade, check_registrable
from provex.ids import DATASET_ID_MAX_SERIAL, CreditCode, DatasetId, iso7064_mod11_2
from provex.timestamps import to_timestamp, utc_now
from provex.v1 import catalog_pb2, common_pb2, dataset_pb2, registry_pb2
from registry.db import Database
from registry.publication import Publisher, checkpoint_size
from registry.transparency import LogReader, insert_rows

__all__ = (
    "BULK_WINDOW",
    "MAX_BULK_CHUNK",
    "Issuance",
    "StatusSubject",
    "SubjectKind",
    "request_digest",
)

_log = logging.getLogger(__name__)

MAX_BULK_CHUNK = 1000
"""Registrations in one chunk (one message) of a bulk stream."""
BULK_WINDOW = 4
"""Chunks of one bulk stream processed concurrently (so the sequencer batches them)."""

ChunkOutcome = tuple[str, common_pb2.Bundle | ProvexError]
"""One registration of a bulk chunk: its idempotency key, and its bundle or refusal."""

MAX_IDEMPOTENCY_KEY = 128
MAX_TITLE = 200
MAX_DESCRIPTION = 10_000
MAX_LAWFUL_SOURCE = 10_000
MAX_CATEGORIES = 10
MAX_DERIVED_FROM = 100
MAX_REASON = 1_000
WATCH_POLL_SECONDS = 0.2
"""How often a following :meth:`Issuance.watch` looks for statements logged elsewhere."""
WATCH_PAGE = 256

_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*")
_LOOKUP_CHUNK = 400
_GRADING_CACHE = 4096
"""Distinct grading inputs whose decision is kept (per catalog release)."""


class SubjectKind(StrEnum):
    """What a status statement is about."""

    DATASET = "dataset"
    MEMBER = "member"
    NODE = "node"


@dataclass(frozen=True)
class StatusSubject:
    """A normalized subject of a status statement: its kind and its id."""

    kind: SubjectKind
    id: str

    def __str__(self) -> str:
        return f"{self.kind.value} {self.id}"


_STATUS_NAMES: dict[int, str] = {
    common_pb2.STATUS_ACTIVE: "active",
    common_pb2.STATUS_SUSPENDED: "suspended",
    common_pb2.STATUS_REVOKED: "revoked",
}
_STATUS_VALUES: dict[str, common_pb2.Status.ValueType] = {
    "active": common_pb2.STATUS_ACTIVE,
    "suspended": common_pb2.STATUS_SUSPENDED,
    "revoked": common_pb2.STATUS_REVOKED,
}


# ---------------------------------------------------------------- validation


@dataclass(frozen=True)
class _Prepared:
    """A validated, normalized registration request."""

    key: str
    dataset: dataset_pb2.DatasetDescription
    dataset_id: str  # "" for a new dataset
    digest: bytes
    profile_categories: tuple[str, ...]


@lru_cache(maxsize=65_536)
def _canonical_credit_code(text: str) -> str:
    """Validated, upper-case credit code (cached: a few holders register many datasets)."""
    return CreditCode.parse(text).code


def _credit_code(text: str, field: str) -> str:
    try:
        return _canonical_credit_code(text)
    except InvalidArgument as error:
        raise InvalidArgument(f"{field}: {error}") from None


def _dataset_id(text: str, field: str) -> str:
    try:
        return str(DatasetId.parse(text))
    except InvalidArgument as error:
        raise InvalidArgument(f"{field}: {error}") from None


def request_digest(dataset: dataset_pb2.DatasetDescription, dataset_id: str) -> bytes:
    """SHA-256 of a normalized request: what an idempotency key is bound to.

    The bytes hashed are the deterministic serialization of
    ``RegisterDatasetRequest(dataset=dataset, dataset_id=dataset_id)``
    (fields 2 and 3), encoded here without copying ``dataset`` into one.
    """
    body = dataset.SerializeToString(deterministic=True)
    digest = hashlib.sha256(b"\x12")
    digest.update(_varint(len(body)))
    digest.update(body)
    if dataset_id:
        text = dataset_id.encode("utf-8")
        digest.update(b"\x1a" + _varint(len(text)) + text)
    return digest.digest()


def _varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _prepare(request: registry_pb2.RegisterDatasetRequest) -> _Prepared:
    """Validate and normalize ``request``; raise naming the first bad field."""
    key = request.idempotency_key
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
        raise InvalidArgument(
            f"idempotency_key must be 1..{MAX_IDEMPOTENCY_KEY} characters, got {len(key)}"
        )
    if not request.HasField("dataset"):
        raise InvalidArgument("dataset is required")
    dataset = dataset_pb2.DatasetDescription()
    dataset.CopyFrom(request.dataset)
    holder = dataset.holder
    if not holder:
        raise InvalidArgument("dataset.holder is required (the holder's credit code)")
    canonical = _credit_code(holder, "dataset.holder")
    if canonical != holder:
        dataset.holder = canonical
    title = dataset.title
    if len(title) > MAX_TITLE or not title.strip():
        raise InvalidArgument(f"dataset.title must be 1..{MAX_TITLE} characters, got {len(title)}")
    size = len(dataset.description)
    if size > MAX_DESCRIPTION:
        raise InvalidArgument(
            f"dataset.description must be at most {MAX_DESCRIPTION:,} characters, got {size:,}"
        )
    codes = tuple(dataset.categories)
    if not 1 <= len(codes) <= MAX_CATEGORIES:
        raise InvalidArgument(
            f"dataset.categories must list 1..{MAX_CATEGORIES} catalog codes, got {len(codes)}"
        )
    size = len(dataset.content_digest)
    if size != 32:
        raise InvalidArgument(f"dataset.content_digest must be 32 bytes (SHA-256), got {size}")
    if dataset.size_bytes == 0:
        raise InvalidArgument("dataset.size_bytes must be greater than 0")
    personal = dataset.personal_info
    individuals, sensitive = personal.individuals, personal.sensitive_individuals
    if sensitive > individuals:
        raise InvalidArgument(
            "dataset.personal_info.sensitive_individuals "
            f"({sensitive:,}) must not exceed individuals ({individuals:,})"
        )
    lawful_source = dataset.lawful_source
    if not lawful_source.strip():
        raise FailedPrecondition(
            "missing evidence: lawful source statement (dataset.lawful_source is empty)"
        )
    if len(lawful_source) > MAX_LAWFUL_SOURCE:
        raise InvalidArgument(
            f"dataset.lawful_source must be at most {MAX_LAWFUL_SOURCE:,} characters"
        )
    rights = dataset.rights
    for name in ("resource_holder", "processing_user", "product_operator"):
        value = getattr(rights, name)
        if not value:
            raise FailedPrecondition(
                f"missing evidence: data rights (dataset.rights.{name} is empty; "
                "all three rights must name their holder's credit code)"
            )
        canonical = _credit_code(value, f"dataset.rights.{name}")
        if canonical != value:
            setattr(rights, name, canonical)
    derived = dataset.derived_from
    if len(derived) > MAX_DERIVED_FROM:
        raise InvalidArgument(
            f"dataset.derived_from may list at most {MAX_DERIVED_FROM} datasets, got {len(derived)}"
        )
    sources: list[str] = []
    if derived:
        given = list(derived)
        sources = [_dataset_id(text, "dataset.derived_from") for text in given]
        if len(set(sources)) != len(sources):
            raise InvalidArgument("dataset.derived_from lists a dataset twice")
        if sources != given:
            del derived[:]
            derived.extend(sources)
    language = dataset.language
    if language and not _LANGUAGE.fullmatch(language):
        raise InvalidArgument(
            f"dataset.language must be a BCP 47 tag such as zh or en, got {language!r}"
        )
    dataset_id = _dataset_id(request.dataset_id, "dataset_id") if request.dataset_id else ""
    if dataset_id and dataset_id in sources:
        raise InvalidArgument(f"dataset.derived_from: {dataset_id} cannot derive from itself")
    categories = _categories(codes)
    return _Prepared(key, dataset, dataset_id, request_digest(dataset, dataset_id), categories)


@lru_cache(maxsize=4096)
def _categories(codes: tuple[str, ...]) -> tuple[str, ...]:
    """Validated category codes (cached: a few category sets cover most registrations)."""
    try:
        return DatasetProfile(codes).categories
    except InvalidArgument as error:
        raise InvalidArgument(f"dataset.categories: {error}") from None


def _check_reason(reason: str) -> str:
    if not reason.strip():
        raise InvalidArgument("reason is required: say why the status changes")
    if len(reason) > MAX_REASON:
        raise InvalidArgument(f"reason must be at most {MAX_REASON:,} characters")
    return reason


# ---------------------------------------------------------------- rows and errors


@dataclass(frozen=True)
class _Member:
    node_id: str
    status: str
    has_officer: bool


@dataclass(frozen=True)
class _Node:
    region_code: str
    status: str
    loaded_at: float


@dataclass(frozen=True)
class _Stored:
    """An idempotency row: what a key registered."""

    digest: bytes
    dataset_id: str
    version: int


@dataclass(frozen=True)
class _DatasetRow:
    node_id: str
    holder: str
    latest_version: int
    grade: int
    status: str


class _KeyTaken(Exception):
    """A group check's refusal: the idempotency key was stored meanwhile."""

    def __init__(self, stored: _Stored) -> None:
        super().__init__(f"idempotency key used meanwhile for {stored.dataset_id}")
        self.stored = stored


@dataclass(frozen=True, slots=True)
class _Grading:
    """A grade decision as a certificate states it."""

    grade: Grade
    value: common_pb2.Grade.ValueType
    reasons: tuple[str, ...]


_GradingKey = tuple[tuple[str, ...], int, int, tuple[Grade, ...]]


@dataclass(frozen=True, slots=True)
class _Planned:
    """A chunk's registration that passed the in-memory checks: its id, version and grade."""

    position: int
    prepared: _Prepared
    dataset_id: str
    version: int
    grade: Grade


@dataclass(frozen=True, slots=True)
class _Waiting:
    """A unary registration waiting for its group: its answer and its key's claim."""

    prepared: _Prepared
    result: asyncio.Future[common_pb2.Bundle]
    slot: tuple[str, str]
    done: asyncio.Future[None]


@dataclass(frozen=True)
class _ChunkFacts:
    """What a chunk's checks read from the database, in one query function."""

    stored: dict[tuple[str, str], _Stored]
    source_grades: dict[str, int]
    datasets: dict[str, _DatasetRow]


def _latest_status(
    conn: sqlite3.Connection, subject: StatusSubject
) -> tuple[str, bytes, int] | None:
    row = conn.execute(
        "SELECT status, envelope, log_index FROM status_statements "
        "WHERE subject_kind = ? AND subject = ? ORDER BY log_index DESC LIMIT 1",
        (subject.kind.value, subject.id),
    ).fetchone()
    return None if row is None else (str(row[0]), bytes(row[1]), int(row[2]))


def _dataset_row(conn: sqlite3.Connection, dataset_id: str) -> _DatasetRow | None:
    row = conn.execute(
        "SELECT node_id, holder, latest_version, grade FROM datasets WHERE dataset_id = ?",
        (dataset_id,),
    ).fetchone()
    if row is None:
        return None
    latest = _latest_status(conn, StatusSubject(SubjectKind.DATASET, dataset_id))
    status = "active" if latest is None else latest[0]
    return _DatasetRow(str(row[0]), str(row[1]), int(row[2]), int(row[3]), status)


def _check_member(member: _Member | None, holder: str, node_id: str, grade: Grade) -> None:
    """Refuse a holder that is not an active member of ``node_id`` (with an officer if needed)."""
    if member is None or member.node_id != node_id:
        raise PermissionDenied(f"holder {holder} is not a member of node {node_id}")
    if member.status != "active":
        raise FailedPrecondition(f"holder {holder} is frozen; it cannot register datasets")
    if grade >= Grade.IMPORTANT and not member.has_officer:
        raise FailedPrecondition(
            f"holder {holder} has no security officer; important data needs one"
        )


def _check_owner(
    row: _DatasetRow | None, dataset_id: str, node_id: str, holder: str
) -> _DatasetRow:
    """Refuse a re-registration of an unknown, foreign or revoked dataset."""
    if row is None:
        raise NotFound(f"dataset {dataset_id} does not exist")
    if row.node_id != node_id:
        raise PermissionDenied(f"dataset {dataset_id} was registered by another node")
    if row.holder != holder:
        raise PermissionDenied(f"dataset {dataset_id} belongs to holder {row.holder}, not {holder}")
    if row.status == "revoked":
        raise FailedPrecondition(f"dataset {dataset_id} is revoked; it gets no new versions")
    return row


def _in_chunks(
    conn: sqlite3.Connection, sql: str, values: Sequence[str], prefix: Sequence[str] = ()
) -> Iterator[tuple[object, ...]]:
    """Rows of ``sql`` (``{marks}`` stands for the placeholders) for ``values``, in chunks."""
    for start in range(0, len(values), _LOOKUP_CHUNK):
        chunk = values[start : start + _LOOKUP_CHUNK]
        marks = ", ".join("?" for _ in chunk)
        yield from conn.execute(sql.format(marks=marks), [*prefix, *chunk])


def _member_rows(conn: sqlite3.Connection, holders: Sequence[str]) -> dict[str, _Member]:
    """Member rows of several holders (absent: not a member)."""
    sql = (
        "SELECT credit_code, node_id, status, length(security_officer) > 0 FROM members "
        "WHERE credit_code IN ({marks})"
    )
    return {
        str(code): _Member(str(node_id), str(status), bool(officer))
        for code, node_id, status, officer in _in_chunks(conn, sql, holders)
    }


def _dataset_rows(conn: sqlite3.Connection, dataset_ids: Sequence[str]) -> dict[str, _DatasetRow]:
    """Dataset rows (with their current status) of several ids (absent: unknown id)."""
    found: dict[str, _DatasetRow] = {}
    for dataset_id in dataset_ids:
        row = _dataset_row(conn, dataset_id)
        if row is not None:
            found[dataset_id] = row
    return found


def _chunk_facts(
    conn: sqlite3.Connection,
    node_id: str,
    keys: Sequence[str],
    sources: Sequence[str],
    dataset_ids: Sequence[str],
) -> _ChunkFacts:
    """A chunk's idempotency rows, source grades and re-registered datasets."""
    stored = _lookup_keys(conn, [(node_id, key) for key in keys])
    sql = "SELECT dataset_id, grade FROM datasets WHERE dataset_id IN ({marks})"
    grades = {
        str(dataset_id): int(str(grade)) for dataset_id, grade in _in_chunks(conn, sql, sources)
    }
    return _ChunkFacts(stored, grades, _dataset_rows(conn, dataset_ids))


def _certificate_rows(
    conn: sqlite3.Connection, wanted: Sequence[tuple[str, int]]
) -> dict[tuple[str, int], tuple[bytes, int]]:
    """Stored certificates ``(dataset_id, version) -> (envelope, log_index)``."""
    found: dict[tuple[str, int], tuple[bytes, int]] = {}
    for dataset_id, version in wanted:
        row = conn.execute(
            "SELECT envelope, log_index FROM certificates WHERE dataset_id = ? AND version = ?",
            (dataset_id, version),
        ).fetchone()
        if row is not None:
            found[dataset_id, version] = (bytes(row[0]), int(row[1]))
    return found


def _lookup_keys(
    conn: sqlite3.Connection, keys: list[tuple[str, str]]
) -> dict[tuple[str, str], _Stored]:
    """Idempotency rows of many (node, key) pairs: per node, chunks of one indexed query each."""
    by_node: dict[str, list[str]] = {}
    for node_id, key in keys:
        by_node.setdefault(node_id, []).append(key)
    found: dict[tuple[str, str], _Stored] = {}
    for node_id, node_keys in by_node.items():
        for start in range(0, len(node_keys), _LOOKUP_CHUNK):
            chunk = node_keys[start : start + _LOOKUP_CHUNK]
            marks = ", ".join("?" for _ in chunk)
            # node_id = ? AND key IN (...) searches the primary key; a row-value
            # IN (VALUES ...) would scan the whole table.
            rows = conn.execute(
                "SELECT idempotency_key, request_sha256, dataset_id, version FROM idempotency "
                f"WHERE node_id = ? AND idempotency_key IN ({marks})",
                [node_id, *chunk],
            )
            for key, digest, dataset_id, version in rows:
                found[node_id, str(key)] = _Stored(bytes(digest), str(dataset_id), int(version))
    return found


# ---------------------------------------------------------------- issuance


def _grade_value(grade: Grade) -> common_pb2.Grade.ValueType:
    return common_pb2.Grade.Value(f"GRADE_{grade.name}")


def _internal(error: BaseException) -> ProvexError:
    _log.error("registration failed unexpectedly", exc_info=error)
    return ProvexError("internal error; the registry logged the details")


def _new_dataset_id(region: str, year: int, serial: int) -> str:
    """``str(DatasetId(region, year, serial))`` of an allocated serial (prefix checked once)."""
    _check_id_prefix(region, year)
    digits = f"{region}{year:04d}{serial:07d}"
    return f"{region}-{year:04d}-{serial:07d}-{iso7064_mod11_2(digits)}"


@lru_cache(maxsize=256)
def _check_id_prefix(region: str, year: int) -> None:
    DatasetId(region, year, 1)  # Raises for a region or year no dataset id may have.


def _key_reused(prepared: _Prepared, stored: _Stored) -> AlreadyExists:
    return AlreadyExists(
        f"idempotency key {prepared.key} was used for a different request "
        f"(it registered {stored.dataset_id} version {stored.version})"
    )


def _check_planned(
    conn: sqlite3.Connection, *, node_id: str, planned: Sequence[_Planned]
) -> list[Exception | None]:
    """Re-check a chunk's registrations in its log transaction: one verdict each.

    What may have changed since the in-memory checks: the idempotency keys,
    the holders' member rows, the re-registered datasets' owner, status and
    latest version. A refused registration gets no log entry and no rows.
    """
    taken = _lookup_keys(conn, [(node_id, entry.prepared.key) for entry in planned])
    members = _member_rows(conn, sorted({entry.prepared.dataset.holder for entry in planned}))
    datasets = _dataset_rows(
        conn, sorted({entry.dataset_id for entry in planned if entry.version > 1})
    )
    latest: dict[str, int] = {}
    verdicts: list[Exception | None] = []
    for entry in planned:
        stored = taken.get((node_id, entry.prepared.key))
        if stored is not None:
            verdicts.append(_KeyTaken(stored))
            continue
        holder = entry.prepared.dataset.holder
        try:
            _check_member(members.get(holder), holder, node_id, entry.grade)
            if entry.version > 1:
                row = _check_owner(
                    datasets.get(entry.dataset_id), entry.dataset_id, node_id, holder
                )
                if entry.version <= latest.get(entry.dataset_id, row.latest_version):
                    raise AlreadyExists(
                        f"dataset {entry.dataset_id} version {entry.version} exists already"
                    )
                latest[entry.dataset_id] = entry.version
        except ProvexError as error:
            verdicts.append(error)
            continue
        verdicts.append(None)
    return verdicts


def _write_planned(
    conn: sqlite3.Connection,
    indexes: Sequence[int | None],
    envelopes: Sequence[bytes],
    *,
    node_id: str,
    planned: Sequence[_Planned],
) -> None:
    """The rows of a chunk's logged registrations: one statement per table."""
    keys: list[tuple[str, str, bytes, str, int]] = []
    new: list[tuple[str, str, str, int, int]] = []
    versions: list[tuple[int, int, str]] = []
    certificates: list[tuple[str, int, int, bytes]] = []
    for entry, index, envelope in zip(planned, indexes, envelopes, strict=True):
        if index is None:
            continue
        prepared = entry.prepared
        keys.append((node_id, prepared.key, prepared.digest, entry.dataset_id, entry.version))
        if entry.version == 1:
            new.append((entry.dataset_id, node_id, prepared.dataset.holder, 1, int(entry.grade)))
        else:
            versions.append((entry.version, int(entry.grade), entry.dataset_id))
        certificates.append((entry.dataset_id, entry.version, index, envelope))
    insert_rows(
        conn,
        "INSERT INTO idempotency (node_id, idempotency_key, request_sha256, dataset_id, "
        "version) VALUES",
        keys,
    )
    insert_rows(
        conn,
        "INSERT INTO datasets (dataset_id, node_id, holder, latest_version, grade) VALUES",
        new,
    )
    conn.executemany(
        "UPDATE datasets SET latest_version = ?, grade = ? WHERE dataset_id = ?", versions
    )
    insert_rows(
        conn,
        "INSERT INTO certificates (dataset_id, version, log_index, envelope) VALUES",
        certificates,
    )


class Issuance:
    """Registers datasets, answers certificates, and makes and serves status statements.

    Reads go to ``reader_db`` (read-only); every write happens in a log
    batch's transaction (:meth:`Publisher.publish_group` for certificates,
    a record callback of :meth:`Publisher.publish` for statements). One
    instance per registry process (it allocates serials): see
    ``registry.server``, which makes it once for both ports.
    """

    def __init__(
        self,
        reader_db: Database,
        publisher: Publisher,
        log_reader: LogReader,
        *,
        clock: Callable[[], datetime] = utc_now,
        catalog_check_seconds: float = 0.5,
        node_cache_seconds: float = 5.0,
    ) -> None:
        self._db = reader_db
        self._publisher = publisher
        self._log = log_reader
        self._clock = clock
        self._catalog_check = catalog_check_seconds
        self._node_ttl = node_cache_seconds
        self._release: Release | None = None
        self._catalog_checked = float("-inf")
        self._catalog_lock = asyncio.Lock()
        self._nodes: dict[str, _Node] = {}
        self._members: dict[str, _Member] = {}
        self._inflight: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._waiting: dict[str, list[_Waiting]] = {}  # Unary registrations for the next group.
        self._flush_scheduled = False
        self._flushes: set[asyncio.Task[None]] = set()
        self._runners: dict[str, asyncio.Task[None]] = {}
        self._serials: dict[tuple[str, int], int] = {}
        self._versions: dict[str, int] = {}
        self._gradings: dict[_GradingKey, _Grading | tuple[type[ProvexError], str]] = {}
        self._gradings_release: Release | None = None
        self._status_changed = asyncio.Event()
        self._closing = False

    # ------------------------------------------------------------ catalog and directory

    async def release(self) -> Release:
        """The latest catalog release, decoded; its version is re-checked now and then."""
        loop = asyncio.get_running_loop()
        if self._release is not None and loop.time() < self._catalog_checked + self._catalog_check:
            return self._release
        async with self._catalog_lock:
            if self._release is not None and loop.time() < (
                self._catalog_checked + self._catalog_check
            ):
                return self._release
            version = await self.catalog_version()
            if self._release is None or self._release.catalog.version != version:

                def read(conn: sqlite3.Connection) -> bytes:
                    row = conn.execute(
                        "SELECT envelope FROM catalog_releases WHERE version = ?", (version,)
                    ).fetchone()
                    if row is None:
                        raise FailedPrecondition("the registry has no catalog release")
                    return bytes(row[0])

                envelope = Envelope.from_json(await self._db.run(read))
                message = documents.decode_payload(envelope.payload, catalog_pb2.CatalogRelease)
                self._release = release_from_proto(message)
            self._catalog_checked = loop.time()
            return self._release

    async def catalog_version(self) -> int:
        """The latest catalog release's version (0 if none)."""

        def read(conn: sqlite3.Connection) -> int:
            return int(conn.execute("SELECT MAX(version) FROM catalog_releases").fetchone()[0] or 0)

        return await self._db.run(read)

    async def _node(self, node_id: str) -> _Node:
        loop = asyncio.get_running_loop()
        node = self._nodes.get(node_id)
        if node is None or loop.time() >= node.loaded_at + self._node_ttl:

            def read(conn: sqlite3.Connection) -> tuple[str, str] | None:
                row = conn.execute(
                    "SELECT region_code, status FROM nodes WHERE node_id = ?", (node_id,)
                ).fetchone()
                return None if row is None else (str(row[0]), str(row[1]))

            row = await self._db.run(read)
            if row is None:
                self._nodes.pop(node_id, None)
                raise PermissionDenied(f"node {node_id} is not enrolled at this registry")
            node = self._nodes[node_id] = _Node(row[0], row[1], loop.time())
        if node.status != "active":
            raise PermissionDenied(f"node {node_id} is {node.status}")
        return node

    async def _refresh_members(self, wanted: list[tuple[str, Grade]], node_id: str) -> None:
        """Re-read (one query) every holder the member cache does not accept for its grade."""
        stale: set[str] = set()
        for holder, grade in wanted:
            cached = self._members.get(holder)
            if cached is None:
                stale.add(holder)
                continue
            try:
                _check_member(cached, holder, node_id, grade)
            except ProvexError:
                stale.add(holder)
        if not stale:
            return
        rows = await self._db.run(partial(_member_rows, holders=sorted(stale)))
        for holder in stale:
            member = rows.get(holder)
            if member is None:
                self._members.pop(holder, None)
            else:
                self._members[holder] = member

    def _grading(
        self, release: Release, prepared: _Prepared, source_grades: tuple[Grade, ...]
    ) -> _Grading:
        """The grade decision of a registration (refusals raise); cached per release and input."""
        if self._gradings_release is not release:
            self._gradings.clear()
            self._gradings_release = release
        personal = prepared.dataset.personal_info
        key = (
            prepared.profile_categories,
            personal.individuals,
            personal.sensitive_individuals,
            source_grades,
        )
        cached = self._gradings.get(key)
        if cached is None:
            try:
                profile = DatasetProfile(key[0], key[1], key[2], source_grades)
                decision = check_registrable(profile, release.catalog, release.rules)
                reasons = tuple(line.strip() for line in decision.explain().splitlines())
                cached = _Grading(decision.grade, _grade_value(decision.grade), reasons)
            except ProvexError as error:
                cached = (type(error), str(error))
            if len(self._gradings) >= _GRADING_CACHE:
                self._gradings.clear()
            self._gradings[key] = cached
        if isinstance(cached, tuple):
            raise cached[0](cached[1])
        return cached

    # ------------------------------------------------------------ registration

    async def register(
        self, node_id: str, request: registry_pb2.RegisterDatasetRequest
    ) -> common_pb2.Bundle:
        """Register (or re-register) a dataset for ``node_id``; the certificate's bundle."""
        return await self._register_alone(node_id, _prepare(request))

    async def _register_alone(self, node_id: str, prepared: _Prepared) -> common_pb2.Bundle:
        """Register one validated request once no other registration of its key is running.

        The request joins the group of the unary registrations that reach
        this point in the same event-loop turn (:meth:`_flush`): they are
        registered together like a bulk chunk. Its key stays claimed until
        that group is answered, even if this caller is cancelled meanwhile.
        """
        slot = (node_id, prepared.key)
        while (running := self._inflight.get(slot)) is not None:
            await asyncio.shield(running)  # Same key in flight: wait, then see what it stored.
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._inflight[slot] = done
        result: asyncio.Future[common_pb2.Bundle] = loop.create_future()
        self._waiting.setdefault(node_id, []).append(_Waiting(prepared, result, slot, done))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return await result

    def _flush(self) -> None:
        """Start a group runner for each node with waiting unary requests and none running."""
        self._flush_scheduled = False
        for node_id in self._waiting:
            if node_id not in self._runners:
                self._runners[node_id] = asyncio.create_task(self._run_groups(node_id))

    async def _run_groups(self, node_id: str) -> None:
        """Register a node's waiting unary requests, a group at a time, until none wait.

        The next group starts once the previous one is handed to the log (it
        waits for durability on its own), so under load a group gathers
        every request that arrived meanwhile: one lookup and one log group
        for all of them.
        """
        try:
            loop = asyncio.get_running_loop()
            while items := self._waiting.pop(node_id, None):
                submitted: asyncio.Future[None] = loop.create_future()
                task = asyncio.create_task(self._register_waiting(node_id, items, submitted))
                self._flushes.add(task)
                task.add_done_callback(self._flushes.discard)
                await submitted
        finally:
            del self._runners[node_id]

    async def _register_waiting(
        self, node_id: str, items: list[_Waiting], submitted: asyncio.Future[None]
    ) -> None:
        """Register one group of unary requests (distinct keys); answer and release each."""
        try:
            prepared = [item.prepared for item in items]
            outcomes = await self._register_batch(node_id, prepared, submitted)
        except BaseException as error:
            failure = error if isinstance(error, Exception) else Unavailable("registry stopping")
            for item in items:
                if not item.result.done():
                    item.result.set_exception(failure)
            if not isinstance(error, Exception):
                raise
        else:
            for item, outcome in zip(items, outcomes, strict=True):
                if item.result.done():  # The caller gave up; its registration went ahead.
                    continue
                if isinstance(outcome, common_pb2.Bundle):
                    item.result.set_result(outcome)
                else:
                    item.result.set_exception(outcome)
        finally:
            if not submitted.done():
                submitted.set_result(None)
            for item in items:
                del self._inflight[item.slot]
                item.done.set_result(None)

    async def register_chunk(
        self, node_id: str, requests: Sequence[registry_pb2.RegisterDatasetRequest]
    ) -> list[ChunkOutcome]:
        """Register every request of one bulk chunk as a unit; ``(key, bundle or refusal)`` each.

        Every request is validated; the first request of each idempotency key
        (not being registered elsewhere at the moment) goes into one unit:
        one idempotency lookup, grades from the cache, one member re-read for
        the holders the cache does not accept, certificates signed in one
        loop and logged as one group of one log batch (one statement per
        table, no per-entry savepoint, no per-entry task). Repeated keys are
        then registered one by one after it, as separate calls would be: the
        same request answers the same certificate, a different one
        ALREADY_EXISTS. A refusal answers its own request only; nothing is
        answered before it is durable. Raises InvalidArgument for a chunk of
        a bad size.
        """
        if not 1 <= len(requests) <= MAX_BULK_CHUNK:
            raise InvalidArgument(
                f"registrations: a chunk holds 1..{MAX_BULK_CHUNK} registrations, "
                f"got {len(requests)}"
            )

        outcomes: list[common_pb2.Bundle | ProvexError | None] = [None] * len(requests)
        prepared: list[_Prepared | None] = [None] * len(requests)
        for position, request in enumerate(requests):
            try:
                prepared[position] = _prepare(request)
            except ProvexError as error:
                outcomes[position] = error
            except Exception as error:
                outcomes[position] = _internal(error)
        # The first request of each key not in flight elsewhere goes into the chunk's batch;
        # repeated keys follow one by one afterwards, as separate registrations would.
        batch: list[int] = []
        later: dict[str, list[int]] = {}
        claimed: list[tuple[str, str]] = []
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for position, item in enumerate(prepared):
            if item is None:
                continue
            slot = (node_id, item.key)
            if item.key in later or slot in self._inflight:
                later.setdefault(item.key, []).append(position)
                continue
            later[item.key] = []
            self._inflight[slot] = done
            claimed.append(slot)
            batch.append(position)
        try:
            items = [item for item in (prepared[position] for position in batch) if item]
            try:
                answers = await self._register_batch(node_id, items) if items else []
            except ProvexError as error:
                answers = [error] * len(batch)
            except Exception as error:
                answers = [_internal(error)] * len(batch)
            for position, answer in zip(batch, answers, strict=True):
                outcomes[position] = answer
        finally:
            for slot in claimed:
                del self._inflight[slot]
            done.set_result(None)

        async def one_by_one(positions: list[int]) -> None:
            for position in positions:
                item = prepared[position]
                assert item is not None
                try:
                    outcomes[position] = await self._register_alone(node_id, item)
                except ProvexError as error:
                    outcomes[position] = error
                except Exception as error:
                    outcomes[position] = _internal(error)

        await asyncio.gather(*(one_by_one(positions) for positions in later.values() if positions))
        results: list[ChunkOutcome] = []
        for request, outcome in zip(requests, outcomes, strict=True):
            assert outcome is not None
            results.append((request.idempotency_key, outcome))
        return results

    async def register_many(
        self,
        node_id: str,
        chunks: AsyncIterable[Sequence[registry_pb2.RegisterDatasetRequest]],
        *,
        window: int = BULK_WINDOW,
    ) -> AsyncIterator[list[ChunkOutcome]]:
        """Bulk registration: the outcomes of each chunk (see :meth:`register_chunk`), in order.

        Up to ``window`` chunks are processed at once, so the client's next
        chunks are registered while earlier answers travel back. A bad chunk,
        or an error of ``chunks`` itself, ends the stream with that error.
        """
        queue: asyncio.Queue[asyncio.Task[list[ChunkOutcome]] | None] = asyncio.Queue(window)

        async def feed() -> None:
            try:
                async for chunk in chunks:
                    task = asyncio.create_task(self.register_chunk(node_id, chunk))
                    await queue.put(task)
            finally:
                await queue.put(None)

        feeder = asyncio.create_task(feed())
        try:
            while (task := await queue.get()) is not None:
                yield await task
            await feeder  # Raise what the request stream raised, if anything.
        finally:
            feeder.cancel()
            while not queue.empty():
                item = queue.get_nowait()
                if item is not None:
                    item.cancel()

    async def _register_batch(
        self,
        node_id: str,
        items: list[_Prepared],
        submitted: asyncio.Future[None] | None = None,
    ) -> list[common_pb2.Bundle | ProvexError]:
        """Register validated requests with distinct keys as one unit (see :meth:`register_chunk`).

        ``submitted``, if given, is resolved once the group's ids are
        allocated and it is about to be queued for the log.

        One query function reads every idempotency row, source grade and
        re-registered dataset; grades come from the cache; the certificates
        are signed in one loop and logged as one group of one batch whose
        rows are written with one statement per table.
        """
        outcomes: list[common_pb2.Bundle | ProvexError | None] = [None] * len(items)
        node = await self._node(node_id)
        release = await self.release()
        facts = await self._db.run(
            partial(
                _chunk_facts,
                node_id=node_id,
                keys=[item.key for item in items],
                sources=sorted({s for item in items for s in item.dataset.derived_from}),
                dataset_ids=sorted({item.dataset_id for item in items if item.dataset_id}),
            )
        )
        stored: list[tuple[int, _Stored]] = []
        graded: list[tuple[int, _Grading, _DatasetRow | None]] = []
        for position, item in enumerate(items):
            found = facts.stored.get((node_id, item.key))
            if found is not None:
                stored.append((position, found))
                continue
            try:
                grades: list[Grade] = []
                for source in item.dataset.derived_from:
                    grade = facts.source_grades.get(source)
                    if grade is None:
                        raise NotFound(f"dataset.derived_from: dataset {source} does not exist")
                    grades.append(Grade(grade))
                existing = None
                if item.dataset_id:
                    existing = _check_owner(
                        facts.datasets.get(item.dataset_id),
                        item.dataset_id,
                        node_id,
                        item.dataset.holder,
                    )
                graded.append((position, self._grading(release, item, tuple(grades)), existing))
            except ProvexError as error:
                outcomes[position] = error
        await self._refresh_members(
            [(items[position].dataset.holder, grading.grade) for position, grading, _ in graded],
            node_id,
        )
        issued_at = self._clock().astimezone(UTC)
        serial_key = (node.region_code, issued_at.year)
        if any(existing is None for _, _, existing in graded):
            await self._load_serial(serial_key)
        timestamp = to_timestamp(issued_at)
        planned: list[_Planned] = []
        certificates: list[dataset_pb2.DatasetCertificate] = []
        for position, grading, existing in graded:
            item = items[position]
            holder = item.dataset.holder
            try:
                _check_member(self._members.get(holder), holder, node_id, grading.grade)
                if existing is None:
                    serial = self._take_serial(serial_key)
                    dataset_id = _new_dataset_id(node.region_code, issued_at.year, serial)
                    version = 1
                else:
                    dataset_id = item.dataset_id
                    version = max(self._versions.get(dataset_id, 0), existing.latest_version) + 1
                    self._versions[dataset_id] = version
            except ProvexError as error:
                outcomes[position] = error
                continue
            planned.append(_Planned(position, item, dataset_id, version, grading.grade))
            certificates.append(
                dataset_pb2.DatasetCertificate(
                    dataset_id=dataset_id,
                    version=version,
                    node_id=node_id,
                    dataset=item.dataset,
                    grade=grading.value,
                    grade_reasons=grading.reasons,
                    catalog_version=release.catalog.version,
                    issued_at=timestamp,
                )
            )
        if submitted is not None and not submitted.done():
            submitted.set_result(None)  # The next group may start: this one is queued below.
        if planned:
            try:
                answers = await self._publisher.publish_group(
                    certificates,
                    partial(_check_planned, node_id=node_id, planned=planned),
                    partial(_write_planned, node_id=node_id, planned=planned),
                )
            except Exception:  # Nothing was stored: give the ids back. (Not when cancelled:
                # the group is queued and may still be logged.)
                for entry in reversed(planned):
                    self._give_back(
                        node.region_code, issued_at.year, entry.dataset_id, entry.version
                    )
                raise
            for entry, answer in reversed(list(zip(planned, answers, strict=True))):
                if isinstance(answer, common_pb2.Bundle):
                    outcomes[entry.position] = answer
                    continue
                self._give_back(node.region_code, issued_at.year, entry.dataset_id, entry.version)
                if isinstance(answer, _KeyTaken):
                    stored.append((entry.position, answer.stored))
                elif isinstance(answer, ProvexError):
                    outcomes[entry.position] = answer
                    # The re-check disagreed: forget the cached member row.
                    self._members.pop(entry.prepared.dataset.holder, None)
                else:
                    outcomes[entry.position] = _internal(answer)
        if stored:
            answered = await self._answer_stored_many([(items[p], found) for p, found in stored])
            for (position, _), answer in zip(stored, answered, strict=True):
                outcomes[position] = answer
        results: list[common_pb2.Bundle | ProvexError] = []
        for outcome in outcomes:
            assert outcome is not None
            results.append(outcome)
        return results

    async def _answer_stored_many(
        self, pairs: list[tuple[_Prepared, _Stored]]
    ) -> list[common_pb2.Bundle | ProvexError]:
        """:meth:`_answer_stored` for many keys: one read of the certificates, one of the proofs."""
        wanted = [
            (found.dataset_id, found.version)
            for prepared, found in pairs
            if found.digest == prepared.digest
        ]
        rows = await self._db.run(partial(_certificate_rows, wanted=wanted))
        bundles = await self._publisher.bundles_for([rows[pair] for pair in wanted if pair in rows])
        proved = dict(zip([pair for pair in wanted if pair in rows], bundles, strict=True))
        answers: list[common_pb2.Bundle | ProvexError] = []
        for prepared, found in pairs:
            pair = (found.dataset_id, found.version)
            if found.digest != prepared.digest:
                answers.append(_key_reused(prepared, found))
            elif pair in proved:
                answers.append(proved[pair])
            else:
                answers.append(
                    NotFound(f"dataset {found.dataset_id} version {found.version} does not exist")
                )
        return answers

    async def _load_serial(self, key: tuple[str, int]) -> None:
        """Read the last serial of a region and year once (then it is counted in memory)."""
        if key not in self._serials:

            def read(conn: sqlite3.Connection) -> int:
                # Ids of one region and year sort by serial: <region>-<year>-<7 digits>-<check>.
                prefix = f"{key[0]}-{key[1]:04d}-"
                row = conn.execute(
                    "SELECT max(dataset_id) FROM datasets WHERE dataset_id > ? AND dataset_id < ?",
                    (prefix, prefix + "~"),
                ).fetchone()
                return 0 if row is None or row[0] is None else DatasetId.parse(row[0]).serial

            last = await self._db.run(read)
            self._serials.setdefault(key, last)  # Another task may have loaded it meanwhile.

    def _take_serial(self, key: tuple[str, int]) -> int:
        """The next serial of a loaded region and year."""
        serial = self._serials[key] + 1
        if serial > DATASET_ID_MAX_SERIAL:
            raise ResourceExhausted(f"region {key[0]} has used every dataset serial of {key[1]}")
        self._serials[key] = serial
        return serial

    def _give_back(self, region: str, year: int, dataset_id: str, version: int) -> None:
        """Return an unused serial or version if nothing later was handed out."""
        if version == 1:
            serial = DatasetId.parse(dataset_id).serial
            if self._serials.get((region, year)) == serial:
                self._serials[region, year] = serial - 1
        elif self._versions.get(dataset_id) == version:
            self._versions[dataset_id] = version - 1

    # ------------------------------------------------------------ certificates and status

    async def certificate_bundle(self, dataset_id: str, version: int = 0) -> common_pb2.Bundle:
        """A stored certificate (``version`` 0: latest), proved against the latest checkpoint."""
        normalized = _dataset_id(dataset_id, "dataset_id")

        def read(conn: sqlite3.Connection) -> tuple[bytes, int] | None:
            if version == 0:
                row = conn.execute(
                    "SELECT envelope, log_index FROM certificates WHERE dataset_id = ? "
                    "ORDER BY version DESC LIMIT 1",
                    (normalized,),
                ).fetchone()
            else:
                row = conn.execute(
                    "SELECT envelope, log_index FROM certificates "
                    "WHERE dataset_id = ? AND version = ?",
                    (normalized, version),
                ).fetchone()
            return None if row is None else (bytes(row[0]), int(row[1]))

        found = await self._db.run(read)
        if found is None:
            what = f"dataset {normalized}" + (f" version {version}" if version else "")
            raise NotFound(f"{what} does not exist")
        return await self._publisher.bundle_for(*found)

    async def certificate(
        self, dataset_id: str, version: int = 0
    ) -> tuple[common_pb2.Bundle, common_pb2.Status.ValueType]:
        """A certificate's bundle and the dataset's current status."""
        bundle = await self.certificate_bundle(dataset_id, version)
        status, _ = await self.status(self.subject(SubjectKind.DATASET, dataset_id))
        return bundle, status

    @staticmethod
    def subject(kind: SubjectKind, text: str) -> StatusSubject:
        """A validated, normalized subject."""
        if kind is SubjectKind.DATASET:
            return StatusSubject(kind, _dataset_id(text, "dataset_id"))
        if kind is SubjectKind.MEMBER:
            return StatusSubject(kind, _credit_code(text, "member"))
        if not text:
            raise InvalidArgument("node_id is required")
        return StatusSubject(kind, text)

    async def status(
        self, subject: StatusSubject
    ) -> tuple[common_pb2.Status.ValueType, common_pb2.Bundle | None]:
        """The subject's current status and its latest statement (None: never stated, ACTIVE)."""

        def read(conn: sqlite3.Connection) -> tuple[str | None, tuple[str, bytes, int] | None]:
            if subject.kind is SubjectKind.DATASET:
                sql = "SELECT 'active' FROM datasets WHERE dataset_id = ?"
            elif subject.kind is SubjectKind.MEMBER:
                sql = "SELECT status FROM members WHERE credit_code = ?"
            else:
                sql = "SELECT status FROM nodes WHERE node_id = ?"
            row = conn.execute(sql, (subject.id,)).fetchone()
            return (None if row is None else str(row[0])), _latest_status(conn, subject)

        own, latest = await self._db.run(read)
        if own is None:
            raise NotFound(f"{subject} does not exist")
        if latest is None:
            # Never stated: ACTIVE, except a node revoked through enrollment.
            return _STATUS_VALUES.get(own, common_pb2.STATUS_SUSPENDED), None
        status, envelope, log_index = latest
        return _STATUS_VALUES[status], await self._publisher.bundle_for(envelope, log_index)

    async def set_status(
        self,
        actor: str,
        subject: StatusSubject,
        status: common_pb2.Status.ValueType,
        reason: str,
    ) -> common_pb2.Bundle:
        """Sign and log a status statement for ``subject`` made by ``actor`` (a SPIFFE id)."""
        name = _STATUS_NAMES.get(status)
        if name is None:
            raise InvalidArgument("status must be ACTIVE, SUSPENDED or REVOKED")
        _check_reason(reason)
        if subject.kind is SubjectKind.NODE:
            raise InvalidArgument("nodes are revoked through EnrollmentService.RevokeNode")
        if subject.kind is SubjectKind.MEMBER and name == "revoked":
            raise InvalidArgument(
                "a member is frozen (SUSPENDED) or unfrozen (ACTIVE), never revoked"
            )
        current, _ = await self.status(subject)  # NOT_FOUND for an unknown subject.
        if current == common_pb2.STATUS_REVOKED:
            raise FailedPrecondition(f"{subject} is revoked; a revoked id is never reinstated")
        statement = dataset_pb2.StatusStatement(
            status=status,
            reason=reason,
            actor=common_pb2.Actor(spiffe_id=actor),
            issued_at=to_timestamp(self._clock()),
        )
        if subject.kind is SubjectKind.DATASET:
            statement.dataset_id = subject.id
        else:
            statement.member = subject.id

        def record(conn: sqlite3.Connection, log_index: int, envelope: bytes) -> None:
            latest = _latest_status(conn, subject)
            if latest is not None and latest[0] == "revoked":
                raise FailedPrecondition(f"{subject} is revoked; a revoked id is never reinstated")
            conn.execute(
                "INSERT INTO status_statements (log_index, subject_kind, subject, status, "
                "envelope) VALUES (?, ?, ?, ?, ?)",
                (log_index, subject.kind.value, subject.id, name, envelope),
            )
            if subject.kind is SubjectKind.MEMBER:
                frozen = "active" if name == "active" else "frozen"
                conn.execute(
                    "UPDATE members SET status = ? WHERE credit_code = ?", (frozen, subject.id)
                )

        try:
            return await self._publisher.publish(statement, record)
        finally:
            if subject.kind is SubjectKind.MEMBER:
                self._members.pop(subject.id, None)
            self._status_changed.set()
            self._status_changed = asyncio.Event()

    def close_watches(self) -> None:
        """End every following :meth:`watch` once it has sent what is logged (server stop)."""
        self._closing = True
        self._status_changed.set()

    async def watch(
        self, after_log_index: int, *, follow: bool
    ) -> AsyncIterator[tuple[common_pb2.Bundle, int]]:
        """Status statements logged after ``after_log_index`` with the catalog's latest version.

        With ``follow`` it never ends: it waits for new statements (woken by
        :meth:`set_status`, and polling every :data:`WATCH_POLL_SECONDS`).
        """
        cursor = after_log_index
        while True:
            changed = self._status_changed
            rows, note, catalog_version = await self._db.run(
                partial(_statements_after, after=cursor, limit=WATCH_PAGE)
            )
            if rows:
                size = checkpoint_size(note)
                for log_index, envelope in rows:
                    proof = await self._log.inclusion_proof(log_index, size)
                    bundle = common_pb2.Bundle(
                        envelope=envelope,
                        log_index=log_index,
                        inclusion_proof=proof,
                        checkpoint=note,
                    )
                    yield bundle, catalog_version
                    cursor = log_index
                continue
            if not follow or self._closing:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), WATCH_POLL_SECONDS)


def _statements_after(
    conn: sqlite3.Connection, after: int, limit: int
) -> tuple[list[tuple[int, bytes]], str, int]:
    """Statements after a log index, then the latest checkpoint (which covers them)."""
    rows = [
        (int(index), bytes(envelope))
        for index, envelope in conn.execute(
            "SELECT log_index, envelope FROM status_statements WHERE log_index > ? "
            "ORDER BY log_index LIMIT ?",
            (after, limit),
        )
    ]
    note = str(conn.execute("SELECT checkpoint FROM log_state WHERE id = 1").fetchone()[0])
    version = int(conn.execute("SELECT MAX(version) FROM catalog_releases").fetchone()[0] or 0)
    return rows, note, version


def status_name(status: int) -> str:
    """``active``, ``suspended`` or ``revoked`` for a status value (for messages and CLIs)."""
    return _STATUS_NAMES.get(status, "unspecified")
