"""Registration certificates and status statements (DESIGN.md section 4): the logic.

:class:`Issuance` is what the ``CertificateService`` servicer calls; it needs
no gRPC and is tested directly.

Registration (:meth:`Issuance.register`, :meth:`Issuance.register_many`)
    A node registers one of its members' datasets. The request is validated
    and normalized (credit codes and dataset ids upper-cased), the holder is
    checked (a member of the calling node, not frozen, with a security
    officer when the data grades IMPORTANT), the grade is derived with the
    latest catalog release (:func:`provex.grading.check_registrable`: core
    data and non-tradable categories are refused), the id is assigned
    (region of the registering node, UTC year of ``issued_at``, the next
    serial of that region and year) and the :class:`DatasetCertificate` is
    signed and logged. Its rows (``datasets``, ``certificates``,
    ``idempotency``) are written by the record callback
    in the same transaction as the log entry, so a log entry never lacks its
    rows nor the reverse. The callback re-checks what may have changed since
    the in-memory checks (the member row, the dataset's owner and status,
    the idempotency key) and refuses just that entry if needed.

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
    in memory; the table's primary key settles a race that still gets
    through (the record callback refuses the second entry and its caller
    answers the stored certificate).

Ids and versions
    The certificate names its id before it is signed, so serials and
    versions are allocated in memory (this process is the log's only
    writer) from the stored last values, and stored by the record callback.
    Serials are dense unless an entry is refused inside the record callback
    (a race with a member change, for example): its serial is given back
    when no later one was handed out meanwhile, otherwise it stays unused.

Caches (no per-request database round trip on the bulk path)
    The decoded latest catalog (its version re-checked at most every
    ``catalog_check_seconds``), node regions, and member rows. A cached
    member is used only to *accept*; any refusal re-reads the row first, and
    the record callback re-checks the row inside the transaction, so a
    stale cache can never admit what the database refuses. Idempotency
    lookups of concurrent requests are coalesced into one query.

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
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
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
)
from provex.grading import DatasetProfile, Grade, GradeDecision, check_registrable
from provex.ids import DATASET_ID_MAX_SERIAL, CreditCode, DatasetId
from provex.timestamps import to_timestamp, utc_now
from provex.v1 import catalog_pb2, common_pb2, dataset_pb2, registry_pb2
from registry.db import Database
from registry.publication import Publisher, checkpoint_size
from registry.transparency import LogReader

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
    """SHA-256 of a normalized request: what an idempotency key is bound to."""
    canonical = registry_pb2.RegisterDatasetRequest(dataset=dataset, dataset_id=dataset_id)
    return hashlib.sha256(canonical.SerializeToString(deterministic=True)).digest()


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
    if not dataset.holder:
        raise InvalidArgument("dataset.holder is required (the holder's credit code)")
    dataset.holder = _credit_code(dataset.holder, "dataset.holder")
    if not dataset.title.strip() or len(dataset.title) > MAX_TITLE:
        raise InvalidArgument(
            f"dataset.title must be 1..{MAX_TITLE} characters, got {len(dataset.title)}"
        )
    if len(dataset.description) > MAX_DESCRIPTION:
        raise InvalidArgument(
            f"dataset.description must be at most {MAX_DESCRIPTION:,} characters, "
            f"got {len(dataset.description):,}"
        )
    if not 1 <= len(dataset.categories) <= MAX_CATEGORIES:
        raise InvalidArgument(
            f"dataset.categories must list 1..{MAX_CATEGORIES} catalog codes, "
            f"got {len(dataset.categories)}"
        )
    if len(dataset.content_digest) != 32:
        raise InvalidArgument(
            f"dataset.content_digest must be 32 bytes (SHA-256), got {len(dataset.content_digest)}"
        )
    if dataset.size_bytes == 0:
        raise InvalidArgument("dataset.size_bytes must be greater than 0")
    personal = dataset.personal_info
    if personal.sensitive_individuals > personal.individuals:
        raise InvalidArgument(
            "dataset.personal_info.sensitive_individuals "
            f"({personal.sensitive_individuals:,}) must not exceed individuals "
            f"({personal.individuals:,})"
        )
    if not dataset.lawful_source.strip():
        raise FailedPrecondition(
            "missing evidence: lawful source statement (dataset.lawful_source is empty)"
        )
    if len(dataset.lawful_source) > MAX_LAWFUL_SOURCE:
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
        setattr(rights, name, _credit_code(value, f"dataset.rights.{name}"))
    if len(dataset.derived_from) > MAX_DERIVED_FROM:
        raise InvalidArgument(
            f"dataset.derived_from may list at most {MAX_DERIVED_FROM} datasets, "
            f"got {len(dataset.derived_from)}"
        )
    sources = [_dataset_id(text, "dataset.derived_from") for text in dataset.derived_from]
    if len(set(sources)) != len(sources):
        raise InvalidArgument("dataset.derived_from lists a dataset twice")
    del dataset.derived_from[:]
    dataset.derived_from.extend(sources)
    if dataset.language and not _LANGUAGE.fullmatch(dataset.language):
        raise InvalidArgument(
            f"dataset.language must be a BCP 47 tag such as zh or en, got {dataset.language!r}"
        )
    dataset_id = _dataset_id(request.dataset_id, "dataset_id") if request.dataset_id else ""
    if dataset_id and dataset_id in sources:
        raise InvalidArgument(f"dataset.derived_from: {dataset_id} cannot derive from itself")
    try:
        categories = DatasetProfile(tuple(dataset.categories)).categories
    except InvalidArgument as error:
        raise InvalidArgument(f"dataset.categories: {error}") from None
    return _Prepared(key, dataset, dataset_id, request_digest(dataset, dataset_id), categories)


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
    """Raised by a record callback: the idempotency key was stored meanwhile."""

    def __init__(self, stored: _Stored) -> None:
        super().__init__(f"idempotency key used meanwhile for {stored.dataset_id}")
        self.stored = stored


def _member_row(conn: sqlite3.Connection, holder: str) -> _Member | None:
    row = conn.execute(
        "SELECT node_id, status, length(security_officer) > 0 FROM members WHERE credit_code = ?",
        (holder,),
    ).fetchone()
    return None if row is None else _Member(str(row[0]), str(row[1]), bool(row[2]))


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


class _CoalescedLookup:
    """Idempotency lookups of concurrent requests, answered by one query per round."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._waiting: dict[tuple[str, str], asyncio.Future[_Stored | None]] = {}
        self._task: asyncio.Task[None] | None = None

    async def get(self, node_id: str, key: str) -> _Stored | None:
        """The stored row of ``(node_id, key)``, or None."""
        future = self._waiting.get((node_id, key))
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._waiting[node_id, key] = future
            if self._task is None:
                self._task = asyncio.create_task(self._drain())
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        try:
            await asyncio.sleep(0)  # Let this round's requests arrive.
            while self._waiting:
                batch, self._waiting = self._waiting, {}
                try:
                    found = await self._db.run(partial(_lookup_keys, keys=list(batch)))
                except Exception as error:
                    for future in batch.values():
                        if not future.done():
                            future.set_exception(error)
                    continue
                for pair, future in batch.items():
                    if not future.done():
                        future.set_result(found.get(pair))
        finally:
            self._task = None


# ---------------------------------------------------------------- issuance


def _grade_value(grade: Grade) -> common_pb2.Grade.ValueType:
    return common_pb2.Grade.Value(f"GRADE_{grade.name}")


def _internal(error: BaseException) -> ProvexError:
    _log.error("registration failed unexpectedly", exc_info=error)
    return ProvexError("internal error; the registry logged the details")


class Issuance:
    """Registers datasets, answers certificates, and makes and serves status statements.

    Reads go to ``reader_db`` (read-only); every write is a record callback
    of :meth:`Publisher.publish`, in the log entry's own transaction. One
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
        self._keys = _CoalescedLookup(reader_db)
        self._inflight: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._serials: dict[tuple[str, int], int] = {}
        self._versions: dict[str, int] = {}
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

    async def _check_holder(self, holder: str, node_id: str, grade: Grade) -> None:
        """Accept from the cache; before refusing, re-read the member row."""
        cached = self._members.get(holder)
        if cached is not None:
            try:
                _check_member(cached, holder, node_id, grade)
                return
            except ProvexError:
                pass
        member = await self._db.run(partial(_member_row, holder=holder))
        if member is None:
            self._members.pop(holder, None)
        else:
            self._members[holder] = member
        _check_member(member, holder, node_id, grade)

    # ------------------------------------------------------------ registration

    async def register(
        self, node_id: str, request: registry_pb2.RegisterDatasetRequest
    ) -> common_pb2.Bundle:
        """Register (or re-register) a dataset for ``node_id``; the certificate's bundle."""
        prepared = _prepare(request)
        slot = (node_id, prepared.key)
        while (running := self._inflight.get(slot)) is not None:
            await asyncio.shield(running)  # Same key in flight: wait, then see what it stored.
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inflight[slot] = done
        try:
            return await self._register(node_id, prepared)
        finally:
            del self._inflight[slot]
            done.set_result(None)

    async def register_chunk(
        self, node_id: str, requests: Sequence[registry_pb2.RegisterDatasetRequest]
    ) -> list[ChunkOutcome]:
        """Register every request of one bulk chunk at once; ``(key, bundle or refusal)`` each.

        The chunk's registrations share log batches; a refusal answers its own
        request only. Raises InvalidArgument for a chunk of a bad size.
        """
        if not 1 <= len(requests) <= MAX_BULK_CHUNK:
            raise InvalidArgument(
                f"registrations: a chunk holds 1..{MAX_BULK_CHUNK} registrations, "
                f"got {len(requests)}"
            )

        async def outcome(
            request: registry_pb2.RegisterDatasetRequest,
        ) -> common_pb2.Bundle | ProvexError:
            try:
                return await self.register(node_id, request)
            except ProvexError as error:
                return error
            except Exception as error:
                return _internal(error)

        outcomes = await asyncio.gather(*(outcome(request) for request in requests))
        pairs = zip(requests, outcomes, strict=True)
        return [(request.idempotency_key, item) for request, item in pairs]

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

    async def _register(self, node_id: str, prepared: _Prepared) -> common_pb2.Bundle:
        stored = await self._keys.get(node_id, prepared.key)
        if stored is not None:
            return await self._answer_stored(prepared, stored)
        node = await self._node(node_id)
        dataset = prepared.dataset
        release = await self.release()
        source_grades = await self._source_grades(list(dataset.derived_from))
        existing: _DatasetRow | None = None
        if prepared.dataset_id:
            existing = _check_owner(
                await self._db.run(partial(_dataset_row, dataset_id=prepared.dataset_id)),
                prepared.dataset_id,
                node_id,
                dataset.holder,
            )
        profile = DatasetProfile(
            prepared.profile_categories,
            individuals=dataset.personal_info.individuals,
            sensitive_individuals=dataset.personal_info.sensitive_individuals,
            source_grades=source_grades,
        )
        decision = check_registrable(profile, release.catalog, release.rules)
        await self._check_holder(dataset.holder, node_id, decision.grade)
        issued_at = self._clock().astimezone(UTC)
        if existing is None:
            serial_key = (node.region_code, issued_at.year)
            serial = await self._next_serial(serial_key)
            dataset_id = str(DatasetId(node.region_code, issued_at.year, serial))
            version = 1
        else:
            dataset_id = prepared.dataset_id
            version = max(self._versions.get(dataset_id, 0), existing.latest_version) + 1
            self._versions[dataset_id] = version
        certificate = dataset_pb2.DatasetCertificate(
            dataset_id=dataset_id,
            version=version,
            node_id=node_id,
            dataset=dataset,
            grade=_grade_value(decision.grade),
            grade_reasons=[line.strip() for line in decision.explain().splitlines()],
            catalog_version=release.catalog.version,
            issued_at=to_timestamp(issued_at),
        )
        record = partial(
            self._record_certificate,
            node_id=node_id,
            prepared=prepared,
            dataset_id=dataset_id,
            version=version,
            decision=decision,
        )
        try:
            return await self._publisher.publish(certificate, record)
        except _KeyTaken as taken:
            self._give_back(node.region_code, issued_at.year, dataset_id, version)
            return await self._answer_stored(prepared, taken.stored)
        except ProvexError:
            self._give_back(node.region_code, issued_at.year, dataset_id, version)
            self._members.pop(dataset.holder, None)  # The record's re-check disagreed.
            raise

    async def _next_serial(self, key: tuple[str, int]) -> int:
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

    async def _source_grades(self, sources: list[str]) -> tuple[Grade, ...]:
        if not sources:
            return ()

        def read(conn: sqlite3.Connection) -> dict[str, int]:
            marks = ", ".join("?" for _ in sources)
            rows = conn.execute(
                f"SELECT dataset_id, grade FROM datasets WHERE dataset_id IN ({marks})", sources
            )
            return {str(dataset_id): int(grade) for dataset_id, grade in rows}

        grades = await self._db.run(read)
        for source in sources:
            if source not in grades:
                raise NotFound(f"dataset.derived_from: dataset {source} does not exist")
        return tuple(Grade(grades[source]) for source in sources)

    async def _answer_stored(self, prepared: _Prepared, stored: _Stored) -> common_pb2.Bundle:
        if stored.digest != prepared.digest:
            raise AlreadyExists(
                f"idempotency key {prepared.key} was used for a different request "
                f"(it registered {stored.dataset_id} version {stored.version})"
            )
        return await self.certificate_bundle(stored.dataset_id, stored.version)

    def _record_certificate(
        self,
        conn: sqlite3.Connection,
        log_index: int,
        envelope: bytes,
        *,
        node_id: str,
        prepared: _Prepared,
        dataset_id: str,
        version: int,
        decision: GradeDecision,
    ) -> None:
        """The certificate's rows, in its log entry's transaction (database thread)."""
        try:
            conn.execute(
                "INSERT INTO idempotency (node_id, idempotency_key, request_sha256, dataset_id, "
                "version) VALUES (?, ?, ?, ?, ?)",
                (node_id, prepared.key, prepared.digest, dataset_id, version),
            )
        except sqlite3.IntegrityError:
            found = _lookup_keys(conn, [(node_id, prepared.key)])
            raise _KeyTaken(found[node_id, prepared.key]) from None
        holder = prepared.dataset.holder
        grade = int(decision.grade)
        if version == 1:
            # One statement: the dataset row, only if the holder is (still) an active member of
            # the node with a security officer when the data is important.
            inserted = conn.execute(
                "INSERT INTO datasets (dataset_id, node_id, holder, latest_version, grade) "
                "SELECT ?, ?, ?, 1, ? FROM members WHERE credit_code = ? AND node_id = ? "
                "AND status = 'active' AND (? < 2 OR length(security_officer) > 0)",
                (dataset_id, node_id, holder, grade, holder, node_id, grade),
            )
            if inserted.rowcount != 1:
                _check_member(_member_row(conn, holder), holder, node_id, decision.grade)
                raise FailedPrecondition(f"holder {holder} may not register this dataset")
        else:
            _check_member(_member_row(conn, holder), holder, node_id, decision.grade)
            row = _check_owner(_dataset_row(conn, dataset_id), dataset_id, node_id, holder)
            if version <= row.latest_version:
                raise AlreadyExists(f"dataset {dataset_id} version {version} exists already")
            conn.execute(
                "UPDATE datasets SET latest_version = ?, grade = ? WHERE dataset_id = ?",
                (version, grade, dataset_id),
            )
        conn.execute(
            "INSERT INTO certificates (dataset_id, version, log_index, envelope) "
            "VALUES (?, ?, ?, ?)",
            (dataset_id, version, log_index, envelope),
        )

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
