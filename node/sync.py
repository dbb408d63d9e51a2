"""Sync with the registry: the node's verified view of the transparency log, and the status feed.

Two background tasks of the node live here (DESIGN.md sections 5 and 6);
the server starts them, this module holds their domain logic and state.

:class:`CheckpointKeeper` keeps the latest log checkpoint the node has
verified. Every checkpoint it is shown must be signed by the trust root's log
key and carry the log's origin; a larger one is accepted only with a
consistency proof from the kept one (asked of the registry, checked with
:func:`provex.merkle.verify_consistency`), then stored, cosigned with the
node's witness key (``cosignature/v1``) and handed back to the registry. The
kept checkpoint never goes backwards: a smaller checkpoint may be *seen*
(e.g. from a peer or in an old bundle) when it is provably a prefix, but it
never replaces the latest. A checkpoint that contradicts the kept one, and a
peer showing a different tree of the same size, is evidence that the
registry rewrites history or shows provinces different views: it is
recorded as an alarm (durably, with the offending note as evidence), logged
loudly, and refused with :class:`~provex.errors.VerificationError`.

:class:`StatusFollower` follows the registry's signed status statements
(``CertificateService.WatchStatus``): it verifies each statement's bundle
offline against the trust root, hands it to the node's ``apply`` callback,
and only then stores the statement's log index as its position, so a crash
re-applies a statement rather than skipping it. It reconnects with backoff
and resumes after the last applied index.

State (:data:`SCHEMA`) is in the node's SQLite database; the node's migration
includes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, TypeAlias

import grpc

from provex import checkpoint as notes
from provex import merkle
from provex.bundle import verify_bundle
from provex.errors import FailedPrecondition, ProvexError, VerificationError
from provex.rpc import error_for_rpc_error
from provex.storage import Database
from provex.trust import TrustRoot
from provex.v1 import dataset_pb2, registry_pb2

if TYPE_CHECKING:
    from provex.v1.registry_pb2_grpc import CertificateServiceAsyncStub, LogServiceAsyncStub

log = logging.getLogger(__name__)

__all__ = (
    "SCHEMA",
    "Alarm",
    "AlarmKind",
    "CheckpointKeeper",
    "Comparison",
    "Observation",
    "Outcome",
    "StatusFollower",
    "Submission",
)

SCHEMA = """
-- Checkpoints of the registry's log this node verified (signature, origin, consistency
-- with the previous one). The row with the largest tree_size is the latest, which the
-- node never rolls back from: sizes only grow, and a verified checkpoint never changes.
CREATE TABLE checkpoints (
    tree_size   INTEGER PRIMARY KEY CHECK (tree_size >= 0),
    root_hash   BLOB NOT NULL CHECK (length(root_hash) = 32),
    note        TEXT NOT NULL,
    verified_at TEXT NOT NULL,
    cosigned_at TEXT
);

CREATE TRIGGER checkpoints_never_roll_back
BEFORE INSERT ON checkpoints
WHEN NEW.tree_size <= (SELECT MAX(tree_size) FROM checkpoints)
BEGIN
    SELECT RAISE(ABORT, 'checkpoint rollback: a larger checkpoint is verified already');
END;

CREATE TRIGGER checkpoints_are_immutable
BEFORE UPDATE OF tree_size, root_hash, note, verified_at ON checkpoints
BEGIN
    SELECT RAISE(ABORT, 'a verified checkpoint never changes');
END;

-- One row: how far the status feed was applied, and the catalog version the registry
-- last announced with it.
CREATE TABLE sync_state (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    status_log_index INTEGER NOT NULL CHECK (status_log_index >= 0),
    catalog_version  INTEGER NOT NULL CHECK (catalog_version >= 0),
    updated_at       TEXT NOT NULL
);
INSERT INTO sync_state (id, status_log_index, catalog_version, updated_at) VALUES (1, 0, 0, '');

-- Evidence that the registry misbehaves: a checkpoint inconsistent with the node's, a
-- rollback, or a peer shown a different tree. peer is '' when the registry itself
-- showed the note; one row per (kind, peer, note), counted each time it is seen again.
CREATE TABLE alarms (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind         TEXT NOT NULL CHECK (kind IN ('inconsistent', 'rollback', 'split_view')),
    detail       TEXT NOT NULL,
    peer         TEXT NOT NULL,
    note         TEXT NOT NULL,
    seen_at      TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,
    times        INTEGER NOT NULL DEFAULT 1,
    UNIQUE (kind, peer, note)
);
"""
"""The sync tables; the node's migration runs this text."""

if TYPE_CHECKING:
    LogStubSource: TypeAlias = LogServiceAsyncStub | Callable[[], LogServiceAsyncStub]
    CertificateStubSource: TypeAlias = (
        CertificateServiceAsyncStub | Callable[[], CertificateServiceAsyncStub]
    )

TrustRootSource: TypeAlias = TrustRoot | Callable[[], TrustRoot]
"""The trust root, or a function giving the current one (after a key rotation)."""

Clock: TypeAlias = Callable[[], datetime]

_TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _trust_root(source: TrustRootSource) -> TrustRoot:
    return source if isinstance(source, TrustRoot) else source()


def _describe(checkpoint: notes.Checkpoint) -> str:
    return f"size {checkpoint.size} (root {checkpoint.root_hash.hex()})"


# ---------------------------------------------------------------- alarms


class AlarmKind(StrEnum):
    """What an alarm says about the registry."""

    INCONSISTENT = "inconsistent"
    """A checkpoint that does not extend the node's latest (a rewritten history)."""
    ROLLBACK = "rollback"
    """The registry served a tree smaller than one it signed before, or not a prefix of it."""
    SPLIT_VIEW = "split_view"
    """A peer holds a log-signed checkpoint that contradicts the node's."""


@dataclass(frozen=True)
class Alarm:
    """One recorded alarm; ``note`` is the offending signed checkpoint (the evidence)."""

    id: int
    kind: AlarmKind
    detail: str
    peer: str
    note: str
    seen_at: datetime
    last_seen_at: datetime
    times: int


def _record_alarm(
    conn: sqlite3.Connection, kind: AlarmKind, *, detail: str, peer: str, note: str, at: str
) -> None:
    conn.execute(
        "INSERT INTO alarms (kind, detail, peer, note, seen_at, last_seen_at) "
        "VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (kind, peer, note) DO UPDATE SET "
        "last_seen_at = excluded.last_seen_at, times = times + 1",
        (str(kind), detail, peer, note, at, at),
    )


def _read_alarms(conn: sqlite3.Connection) -> list[Alarm]:
    rows = conn.execute(
        "SELECT id, kind, detail, peer, note, seen_at, last_seen_at, times FROM alarms ORDER BY id"
    ).fetchall()
    return [
        Alarm(
            id=int(row[0]),
            kind=AlarmKind(row[1]),
            detail=str(row[2]),
            peer=str(row[3]),
            note=str(row[4]),
            seen_at=datetime.fromisoformat(row[5]),
            last_seen_at=datetime.fromisoformat(row[6]),
            times=int(row[7]),
        )
        for row in rows
    ]


# ---------------------------------------------------------------- checkpoints


class Outcome(StrEnum):
    """What observing a valid, consistent checkpoint did."""

    ADVANCED = "advanced"
    """It is larger (or the first): it is now the latest, stored and cosigned."""
    SAME = "same"
    """It is the latest already (same size and root)."""
    OLDER = "older"
    """It is smaller and a prefix of the latest: fine to see, the latest is unchanged."""


class Comparison(StrEnum):
    """How a peer's checkpoint relates to the node's latest (values are plain strings)."""

    SAME = "same"
    AHEAD = "ahead"
    """The peer's tree is larger (proven to extend ours when the registry answered)."""
    BEHIND = "behind"
    """The peer's tree is smaller (proven a prefix of ours when the registry answered)."""
    SPLIT_VIEW = "split_view"
    """Same size and another root, or proven inconsistent: an alarm was recorded."""


@dataclass(frozen=True)
class Submission:
    """How the registry answered the node's cosignature of a checkpoint."""

    note: str
    """The note sent: the checkpoint with the node's cosignature line added."""
    witnesses: int | None = None
    """The registry's answer (witnesses it holds for that checkpoint); None if it failed."""
    error: str = ""
    code: grpc.StatusCode | None = None
    """The gRPC status of a failed submission (None when accepted or not a gRPC failure)."""

    @property
    def accepted(self) -> bool:
        """Whether the registry accepted the cosignature."""
        return self.witnesses is not None


@dataclass(frozen=True)
class Observation:
    """The result of :meth:`CheckpointKeeper.observe` of a checkpoint that verified."""

    outcome: Outcome
    checkpoint: notes.Checkpoint
    """The checkpoint observed."""
    latest: notes.Checkpoint
    """The node's latest checkpoint afterwards."""
    submission: Submission | None = None
    """The cosignature sent back to the registry, if one was (ADVANCED, or a retry)."""


@dataclass(frozen=True)
class _Kept:
    checkpoint: notes.Checkpoint
    note: str
    cosigned: bool


def _load_latest(conn: sqlite3.Connection) -> tuple[str, int, bytes, bool] | None:
    row = conn.execute(
        "SELECT note, tree_size, root_hash, cosigned_at IS NOT NULL FROM checkpoints "
        "ORDER BY tree_size DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    return str(row[0]), int(row[1]), bytes(row[2]), bool(row[3])


def _store_checkpoint(
    conn: sqlite3.Connection, checkpoint: notes.Checkpoint, note: str, at: str
) -> None:
    """Insert a new latest; refuses (FailedPrecondition) anything not larger than the latest.

    Storing the latest again (same size and root, e.g. after a cancelled
    store whose transaction had committed) is a no-op.
    """
    row = conn.execute(
        "SELECT tree_size, root_hash FROM checkpoints ORDER BY tree_size DESC LIMIT 1"
    ).fetchone()
    if row is not None and (int(row[0]), bytes(row[1])) == (checkpoint.size, checkpoint.root_hash):
        return
    if row is not None and int(row[0]) >= checkpoint.size:
        raise FailedPrecondition(
            f"checkpoint of size {checkpoint.size} is not larger than the stored latest "
            f"(size {int(row[0])})"
        )
    conn.execute(
        "INSERT INTO checkpoints (tree_size, root_hash, note, verified_at) VALUES (?, ?, ?, ?)",
        (checkpoint.size, checkpoint.root_hash, note, at),
    )


class CheckpointKeeper:
    """The node's latest verified checkpoint of the registry's log, and its witnessing.

    ``database`` is the node's writable database (with :data:`SCHEMA`),
    ``trust_root`` gives the log key and origin, ``log_service`` is the
    registry's LogService stub or a function giving it (called for each
    request, so the node may replace its channel), ``deadline`` bounds each
    call in seconds, and ``cosigner`` is the node's witness key (named after
    the node, the node's Ed25519 signing key). Call :meth:`load` first.
    """

    def __init__(
        self,
        database: Database,
        trust_root: TrustRootSource,
        log_service: LogStubSource,
        deadline: float,
        cosigner: notes.CosignatureSigner,
        *,
        clock: Clock = _utc_now,
    ) -> None:
        self._db = database
        self._trust_root = trust_root
        self._log_service = log_service
        self._deadline = deadline
        self._cosigner = cosigner
        self._clock = clock
        self._kept: _Kept | None = None
        self._loaded = False
        self._lock = asyncio.Lock()
        self._retry_submission = False
        # For the metrics (node.metrics): when a poll last found the kept checkpoint current
        # (time.time(); None: never), and the tree size the registry last showed, signed.
        self.polled_at: float | None = None
        self.registry_size = 0

    # ------------------------------------------------------------ state

    async def load(self) -> None:
        """Read the latest stored checkpoint (after a restart)."""
        row = await self._db.run(_load_latest)
        if row is None:
            self._kept = None
        else:
            note, size, root_hash, cosigned = row
            checkpoint = notes.Checkpoint.parse(notes.SignedNote.parse(note).text)
            if (checkpoint.size, checkpoint.root_hash) != (size, root_hash):
                raise FailedPrecondition(
                    f"stored checkpoint of size {size} does not match its note; "
                    "the node database is corrupt"
                )
            self._kept = _Kept(checkpoint, note, cosigned)
            self._retry_submission = not cosigned
        self._loaded = True

    @property
    def latest(self) -> str | None:
        """The latest verified checkpoint's signed note, or None before the first one."""
        return None if self._kept is None else self._kept.note

    @property
    def latest_checkpoint(self) -> notes.Checkpoint | None:
        """The latest verified checkpoint, or None before the first one."""
        return None if self._kept is None else self._kept.checkpoint

    async def alarms(self) -> list[Alarm]:
        """Every alarm recorded, oldest first."""
        return await self._db.run(_read_alarms)

    # ------------------------------------------------------------ checks

    def verify(self, note: str) -> notes.Checkpoint:
        """The checkpoint of ``note`` if the log key signed it and its origin is the log's.

        VerificationError otherwise (no alarm: a note the log did not sign is
        no evidence against the log).
        """
        root = _trust_root(self._trust_root)
        return notes.verify_checkpoint(note, root.log_verifier, origin=root.log_origin)

    def _stub(self) -> LogServiceAsyncStub:
        source = self._log_service
        return source() if callable(source) else source

    async def _consistency_proof(self, first: int, second: int) -> list[bytes]:
        """The registry's proof that the tree of ``second`` leaves extends that of ``first``.

        Raises Unavailable (or the registry's refusal as a ProvexError) when it
        does not answer; that is no evidence either way.
        """
        request = registry_pb2.GetConsistencyProofRequest(first_size=first, second_size=second)
        try:
            response = await self._stub().GetConsistencyProof(request, timeout=self._deadline)
        except grpc.aio.AioRpcError as error:
            raise error_for_rpc_error(
                error, f"registry (consistency proof {first} -> {second})"
            ) from None
        return list(response.proof)

    async def _prove_prefix(self, old: notes.Checkpoint, new: notes.Checkpoint) -> None:
        """VerificationError unless ``new`` extends ``old`` (``old.size <= new.size``)."""
        if old.size == 0:
            if old.root_hash != merkle.EMPTY_ROOT:
                raise VerificationError("a checkpoint of size 0 has a root that is not empty")
            return
        if old.size == new.size:
            if old.root_hash != new.root_hash:
                raise VerificationError(f"two roots for size {old.size}")
            return
        proof = await self._consistency_proof(old.size, new.size)
        merkle.verify_consistency(old.size, new.size, proof, old.root_hash, new.root_hash)

    async def _alarm(self, kind: AlarmKind, detail: str, peer: str, note: str) -> None:
        at = self._clock().isoformat()
        await self._db.transaction(
            lambda conn: _record_alarm(conn, kind, detail=detail, peer=peer, note=note, at=at)
        )
        source = f"peer {peer}" if peer else "the registry"
        log.critical("TRANSPARENCY LOG ALARM (%s, from %s): %s", kind, source, detail)

    # ------------------------------------------------------------ observing

    async def observe(self, note: str, *, source: str = "") -> Observation:
        """Verify ``note`` against the trust root and the node's latest checkpoint.

        ``source`` names a peer the note came from ('' for the registry); it
        is what an alarm records. Larger and consistent: stored as the latest,
        cosigned and sent back (best effort). Same: nothing. Smaller and a
        prefix: seen, the latest is unchanged. Anything else raises
        VerificationError and records an alarm ("inconsistent" for a
        same-size fork or a failed proof forward, "rollback" for a smaller
        checkpoint that is not a prefix). Unavailable when the registry does
        not answer for a proof (nothing is recorded; try again).
        """
        if not self._loaded:
            await self.load()
        checkpoint = self.verify(note)
        async with self._lock:
            kept = self._kept
            if kept is None:
                await self._store(checkpoint, note)
                return await self._advanced(checkpoint, note)
            old = kept.checkpoint
            if checkpoint.size == old.size:
                if checkpoint.root_hash != old.root_hash:
                    detail = (
                        f"checkpoint of {_describe(checkpoint)} contradicts the verified "
                        f"checkpoint of {_describe(old)}: two different trees of one size; "
                        "the registry rewrote its history or shows different views"
                    )
                    await self._alarm(AlarmKind.INCONSISTENT, detail, source, note)
                    raise VerificationError(detail)
                submission = await self._retry() if self._retry_submission else None
                return Observation(Outcome.SAME, checkpoint, old, submission)
            if checkpoint.size > old.size:
                try:
                    await self._prove_prefix(old, checkpoint)
                except VerificationError as error:
                    detail = (
                        f"checkpoint of {_describe(checkpoint)} does not extend the verified "
                        f"checkpoint of {_describe(old)} ({error}); the registry rewrote its "
                        "history; the node keeps its checkpoint"
                    )
                    await self._alarm(AlarmKind.INCONSISTENT, detail, source, note)
                    raise VerificationError(detail) from None
                await self._store(checkpoint, note)
                return await self._advanced(checkpoint, note)
            try:
                await self._prove_prefix(checkpoint, old)
            except VerificationError as error:
                detail = (
                    f"checkpoint of {_describe(checkpoint)} is smaller than the verified "
                    f"checkpoint of {_describe(old)} and not a prefix of it ({error}); "
                    "refusing to roll back"
                )
                await self._alarm(AlarmKind.ROLLBACK, detail, source, note)
                raise VerificationError(detail) from None
            return Observation(Outcome.OLDER, checkpoint, old)

    async def _store(self, checkpoint: notes.Checkpoint, note: str) -> None:
        at = self._clock().isoformat()
        await self._db.transaction(lambda conn: _store_checkpoint(conn, checkpoint, note, at))
        self._kept = _Kept(checkpoint, note, cosigned=False)
        log.info("verified log checkpoint %s", _describe(checkpoint))

    async def _advanced(self, checkpoint: notes.Checkpoint, note: str) -> Observation:
        submission = await self._submit(checkpoint, note)
        return Observation(Outcome.ADVANCED, checkpoint, checkpoint, submission)

    async def _retry(self) -> Submission | None:
        kept = self._kept
        if kept is None or kept.cosigned:
            self._retry_submission = False
            return None
        return await self._submit(kept.checkpoint, kept.note)

    async def _submit(self, checkpoint: notes.Checkpoint, note: str) -> Submission:
        """Cosign ``note`` and send it to the registry; failures are logged, not raised."""
        cosigned = notes.add_signature(note, self._cosigner)
        request = registry_pb2.SubmitCosignatureRequest(checkpoint=cosigned)
        try:
            response = await self._stub().SubmitCosignature(request, timeout=self._deadline)
        except grpc.aio.AioRpcError as error:
            code = error.code()
            # Retry on the next observation only when the registry was unreachable.
            self._retry_submission = code in _TRANSIENT
            message = str(error_for_rpc_error(error, "registry (SubmitCosignature)"))
            log.warning(
                "cosignature of checkpoint size %d not accepted: %s", checkpoint.size, message
            )
            return Submission(cosigned, error=message, code=code)
        except ProvexError as error:  # e.g. a stub that raises domain errors
            self._retry_submission = False
            log.warning("cosignature of checkpoint size %d failed: %s", checkpoint.size, error)
            return Submission(cosigned, error=str(error))
        self._retry_submission = False
        at = self._clock().isoformat()
        await self._db.transaction(
            lambda conn: conn.execute(
                "UPDATE checkpoints SET cosigned_at = ? WHERE tree_size = ?", (at, checkpoint.size)
            )
        )
        if self._kept is not None and self._kept.checkpoint == checkpoint:
            self._kept = _Kept(checkpoint, self._kept.note, cosigned=True)
        return Submission(cosigned, witnesses=int(response.witnesses))

    # ------------------------------------------------------------ polling

    async def poll_once(self) -> Observation:
        """Fetch the registry's latest checkpoint and observe it.

        The registry's own latest must never be smaller than what the node
        verified: even a consistent smaller one means it lost entries or
        serves a stale view, so it is recorded as a "rollback" and raised.
        """
        try:
            response = await self._stub().GetCheckpoint(
                registry_pb2.GetCheckpointRequest(), timeout=self._deadline
            )
        except grpc.aio.AioRpcError as error:
            raise error_for_rpc_error(error, "registry (GetCheckpoint)") from None
        with contextlib.suppress(ProvexError):  # observe() says what is wrong with it.
            self.registry_size = self.verify(response.checkpoint).size
        observation = await self.observe(response.checkpoint)
        if observation.outcome is Outcome.OLDER:
            detail = (
                f"the registry's latest checkpoint is of {_describe(observation.checkpoint)}, "
                f"smaller than the verified checkpoint of {_describe(observation.latest)}: "
                "it lost logged entries or serves a stale view"
            )
            await self._alarm(AlarmKind.ROLLBACK, detail, "", response.checkpoint)
            raise VerificationError(detail)
        self.polled_at = time.time()
        return observation

    async def run(self, interval: float, *, max_backoff: float = 60.0) -> None:
        """Poll every ``interval`` seconds until cancelled; back off (doubling) on errors."""
        delay = interval
        while True:
            try:
                await self.poll_once()
            except VerificationError as error:
                log.error("log checkpoint refused: %s", error)
                delay = min(max(delay * 2, interval), max_backoff)
            except ProvexError as error:
                log.warning("log checkpoint poll failed: %s", error)
                delay = min(max(delay * 2, interval), max_backoff)
            except Exception:
                log.exception("log checkpoint poll failed unexpectedly")
                delay = min(max(delay * 2, interval), max_backoff)
            else:
                delay = interval
            await asyncio.sleep(delay)

    # ------------------------------------------------------------ peers

    async def compare_with_peer(self, peer_id: str, note: str) -> Comparison:
        """How a peer's checkpoint relates to ours; records a "split_view" alarm if it contradicts.

        The note must verify with the log key (VerificationError otherwise,
        no alarm). Same size: same root or split view. Different sizes: the
        registry is asked for a consistency proof between the two; if it is
        unreachable the answer is unproven ("ahead"/"behind"), if the proof
        fails it is a split view. The node's latest is not changed here.
        """
        if not self._loaded:
            await self.load()
        theirs = self.verify(note)
        kept = self._kept
        if kept is None:
            return Comparison.AHEAD
        ours = kept.checkpoint
        if theirs.size == ours.size:
            if theirs.root_hash == ours.root_hash:
                return Comparison.SAME
            detail = (
                f"peer {peer_id} holds a log-signed checkpoint of {_describe(theirs)}, "
                f"this node one of {_describe(ours)}: the registry shows them different trees"
            )
            await self._alarm(AlarmKind.SPLIT_VIEW, detail, peer_id, note)
            return Comparison.SPLIT_VIEW
        older, newer = (theirs, ours) if theirs.size < ours.size else (ours, theirs)
        answer = Comparison.BEHIND if theirs.size < ours.size else Comparison.AHEAD
        try:
            await self._prove_prefix(older, newer)
        except VerificationError as error:
            detail = (
                f"peer {peer_id} holds a log-signed checkpoint of {_describe(theirs)} "
                f"inconsistent with this node's of {_describe(ours)} ({error}): "
                "the registry shows them different histories"
            )
            await self._alarm(AlarmKind.SPLIT_VIEW, detail, peer_id, note)
            return Comparison.SPLIT_VIEW
        except ProvexError as error:
            log.warning(
                "cannot prove peer %s's checkpoint of size %d consistent now: %s",
                peer_id,
                theirs.size,
                error,
            )
        return answer


# ---------------------------------------------------------------- status feed

ApplyStatement: TypeAlias = Callable[[dataset_pb2.StatusStatement, int], Awaitable[None]]
"""The node's reaction to a verified status statement at a log index; must be idempotent."""


def _load_position(conn: sqlite3.Connection) -> tuple[int, int]:
    row = conn.execute(
        "SELECT status_log_index, catalog_version FROM sync_state WHERE id = 1"
    ).fetchone()
    return (0, 0) if row is None else (int(row[0]), int(row[1]))


def _store_position(
    conn: sqlite3.Connection, log_index: int, catalog_version: int, at: str
) -> None:
    conn.execute(
        "INSERT INTO sync_state (id, status_log_index, catalog_version, updated_at) "
        "VALUES (1, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
        "status_log_index = MAX(status_log_index, excluded.status_log_index), "
        "catalog_version = MAX(catalog_version, excluded.catalog_version), "
        "updated_at = excluded.updated_at",
        (log_index, catalog_version, at),
    )


class StatusFollower:
    """Follows the registry's status statements and applies each one exactly in order.

    ``certificate_service`` is the registry's CertificateService stub or a
    function giving it (called at each reconnection). ``apply(statement,
    log_index)`` runs before the position is stored, so it must be
    idempotent. The stream is reopened every ``stream_seconds`` (its
    deadline), and after a failure with backoff from ``initial_backoff``
    doubling to ``max_backoff`` seconds.
    """

    def __init__(
        self,
        database: Database,
        trust_root: TrustRootSource,
        certificate_service: CertificateStubSource,
        apply: ApplyStatement,
        *,
        initial_backoff: float = 0.2,
        max_backoff: float = 10.0,
        stream_seconds: float = 300.0,
        clock: Clock = _utc_now,
    ) -> None:
        self._db = database
        self._trust_root = trust_root
        self._certificate_service = certificate_service
        self._apply = apply
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._stream_seconds = stream_seconds
        self._clock = clock
        self._position = 0
        self._catalog_version = 0
        self._loaded = False
        self._progressed = False
        self._changed = asyncio.Condition()
        self.following = False  # A WatchStatus stream is open (for the metrics).

    async def load(self) -> None:
        """Read the stored position (done by :meth:`run` if not called before)."""
        self._position, self._catalog_version = await self._db.run(_load_position)
        self._loaded = True

    @property
    def position(self) -> int:
        """The log index of the last statement applied (0: none yet)."""
        return self._position

    @property
    def catalog_version(self) -> int:
        """The catalog's latest version as the registry last announced it (0: unknown)."""
        return self._catalog_version

    async def wait_for(self, log_index: int) -> None:
        """Return once the statement at ``log_index`` (or a later one) is applied.

        Bound the wait with :func:`asyncio.timeout`.
        """
        async with self._changed:
            await self._changed.wait_for(lambda: self._position >= log_index)

    def _stub(self) -> CertificateServiceAsyncStub:
        source = self._certificate_service
        return source() if callable(source) else source

    async def run(self) -> None:
        """Follow the feed until cancelled, reconnecting with backoff after any failure."""
        if not self._loaded:
            await self.load()
        backoff = self._initial_backoff
        while True:
            started = time.monotonic()
            self._progressed = False
            try:
                await self._follow()
            except grpc.aio.AioRpcError as error:
                if error.code() is grpc.StatusCode.DEADLINE_EXCEEDED and (
                    time.monotonic() - started >= self._stream_seconds * 0.9
                ):
                    backoff = self._initial_backoff
                    continue  # The stream's own deadline: reopen at once.
                problem = str(error_for_rpc_error(error, "registry (WatchStatus)"))
            except VerificationError as error:
                problem = f"a statement failed verification: {error}"
                log.error("status feed: %s", problem)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is None or current.cancelling():
                    raise  # This task is being stopped.
                # grpc.aio cancels a call whose channel was closed (e.g. replaced after a
                # certificate renewal): reconnect, never end the follower silently.
                problem = "the stream's channel was closed"
            except Exception as error:
                log.exception("status feed: applying a statement failed")
                problem = f"applying a statement failed: {error!r}"
            else:
                problem = "the registry ended the stream"
            if self._progressed:
                backoff = self._initial_backoff
            log.warning(
                "status feed stopped after log index %d (%s); reconnecting in %.1f s",
                self._position,
                problem,
                backoff,
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff)

    async def _follow(self) -> None:
        """One stream from the current position, until it ends or fails."""
        request = registry_pb2.WatchStatusRequest(after_log_index=self._position, follow=True)
        call = self._stub().WatchStatus(request, timeout=self._stream_seconds)
        try:
            self.following = True
            async for response in call:
                await self._handle(response)
        finally:
            self.following = False
            call.cancel()

    async def _handle(self, response: registry_pb2.WatchStatusResponse) -> None:
        verified = verify_bundle(
            response.statement, _trust_root(self._trust_root), dataset_pb2.StatusStatement
        )
        index = verified.log_index
        if index <= self._position:
            return  # Applied already (a server resending): never applied twice here.
        await self._apply(verified.document, index)
        catalog_version = max(self._catalog_version, int(response.catalog_version))
        at = self._clock().isoformat()
        await self._db.transaction(lambda conn: _store_position(conn, index, catalog_version, at))
        async with self._changed:
            self._position = index
            self._catalog_version = catalog_version
            self._changed.notify_all()
        self._progressed = True
