"""The node's durable outbox: calls that must reach the registry, delivered exactly once.

What must reach the registry (member reports, dataset registrations, trade
reports) is never sent from the RPC that causes it. The domain writes an
outbox item with :func:`enqueue` *in the same transaction* as the change
that needs it, so the change and its report are committed together or not
at all. An :class:`OutboxWorker` then delivers the items in the background:

* While the registry is down, items stay ``PENDING`` and are retried with
  exponential backoff (:func:`next_delay`: 0.2 s doubling to 30 s, with
  jitter). Search, verification and delivery do not depend on it.
* An item becomes ``DONE`` only after its handler returned the registry's
  answer, in one transaction that also runs the kind's ``on_done`` callback
  (the domain applies the result there, e.g. stores the verified
  certificate bundle). The transaction marks only a still pending item, so
  the result is applied exactly once even if a call was made twice.
* A permanent refusal (a :class:`~provex.errors.ProvexError` whose code is
  in :data:`PERMANENT_CODES`, :class:`~provex.errors.VerificationError`
  included) makes the item ``FAILED`` with the refusal's message as
  ``last_error``, together with the optional ``on_failed`` callback; it is
  never retried.
* Transient failures (:class:`Retry`; a ProvexError with another code, such
  as ``Unavailable``; a timeout; any other exception, which is logged with
  its traceback) only count the attempt, record the message and schedule
  the next one (:func:`is_transient`).
* The registry side is idempotent by idempotency key, so sending an item
  again is always safe: an item whose call was in flight when the process
  stopped or died is simply still pending, and the next worker sends it
  again. Nothing is marked before the registry answered; nothing is lost.

The operator sees every item (:func:`list_items`, :func:`get_item`,
:func:`pending_count`) with its state, attempts and last error.

Contract negotiation (:mod:`node.trading`) uses the same machinery for the
calls it must make to a *peer* node (notify, finalize, terminate), and for
trade reports and risk assessments to the registry; it registers those
kinds with :meth:`OutboxWorker.add_kind` once the node is assembled.

Handlers
    ``async def handler(key: str, payload: bytes) -> bytes``: send the
    serialized request ``payload`` (with ``key`` as its idempotency key) and
    return the bytes to store as the item's result (typically the serialized
    response). Raise :class:`Retry` for a transient failure and a
    ProvexError for a refusal; :func:`classify_rpc_error` maps a failed gRPC
    call to the one or the other (what :func:`provex.rpc.error_for_rpc_error`
    returns is classified the same way by :func:`is_transient`). Give each
    call a deadline: an attempt that exceeds the worker's
    ``attempt_timeout`` is abandoned and retried.

The worker is asyncio only: database work runs on the
:class:`~provex.storage.Database`'s own thread.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

import grpc

from provex.errors import AlreadyExists, InvalidArgument, NotFound, ProvexError, error_for_status
from provex.logs import current_request_id, request_scope
from provex.storage import Database
from provex.timestamps import to_timestamp, utc_now
from provex.v1 import node_pb2

__all__ = (
    "PERMANENT_CODES",
    "SCHEMA",
    "TRANSIENT_CODES",
    "Backoff",
    "Handler",
    "OnDone",
    "OnFailed",
    "OutboxItemRow",
    "OutboxWorker",
    "Retry",
    "classify_rpc_error",
    "enqueue",
    "get_item",
    "get_row",
    "is_transient",
    "list_items",
    "next_delay",
    "pending_count",
)

log = logging.getLogger(__name__)

SCHEMA = """
-- Calls that must reach the registry (node.outbox). Written in the transaction of
-- the change that needs them, delivered by the outbox worker.
-- state: 'pending' (to send, or being sent), 'done' (the registry answered: result),
-- 'failed' (the registry refused: last_error, never retried).
CREATE TABLE outbox (
    idempotency_key TEXT PRIMARY KEY,
    -- Creation order, 1 + the largest so far: due items go out first in, first out.
    seq INTEGER NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    -- The serialized request the handler of `kind` sends.
    payload BLOB NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'done', 'failed')),
    -- Attempts that ended (answered, refused or failed); abandoned ones do not count.
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    -- When a pending item is due (ISO 8601, UTC, microseconds); NULL once settled.
    next_attempt_at TEXT,
    created_at TEXT NOT NULL,
    -- When the item became done or failed.
    done_at TEXT,
    -- What the handler returned (the registry's answer), once done.
    result BLOB,
    CHECK ((state = 'pending') = (next_attempt_at IS NOT NULL))
);
-- The worker's queries: the pending items due by now, and when the next one falls due.
CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
-- The operator's view and the pending count: items of a state in creation order.
CREATE INDEX outbox_by_state ON outbox (state, seq);
"""
"""The ``outbox`` table and its indexes, for the node's migrations."""

BATCH_FACTOR = 4
"""A worker's scan reads up to ``BATCH_FACTOR * concurrency`` due items."""

MAX_ERROR_LENGTH = 2_000
"""``last_error`` keeps at most this many characters of a failure's message."""

PENDING = node_pb2.OUTBOX_STATE_PENDING
DONE = node_pb2.OUTBOX_STATE_DONE
FAILED = node_pb2.OUTBOX_STATE_FAILED

_STATE_TEXT: dict[int, str] = {PENDING: "pending", DONE: "done", FAILED: "failed"}
_STATE_VALUE: dict[str, node_pb2.OutboxState.ValueType] = {
    "pending": PENDING,
    "done": DONE,
    "failed": FAILED,
}

# ---------------------------------------------------------------- errors


class Retry(Exception):
    """A transient failure: the registry was unreachable or busy; the item is retried later."""


TRANSIENT_CODES: frozenset[grpc.StatusCode] = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
    }
)
"""Statuses that mean "try again later". Other codes outside :data:`PERMANENT_CODES` are too."""

PERMANENT_CODES: frozenset[grpc.StatusCode] = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
    }
)
"""Statuses that are the registry's final answer: the item fails, never retried."""


def classify_rpc_error(error: grpc.aio.AioRpcError, what: str = "registry") -> Retry | ProvexError:
    """What a failed registry call means to the outbox: :class:`Retry` or a refusal.

    A status in :data:`PERMANENT_CODES` becomes the matching ProvexError
    (``InvalidArgument``, ``NotFound``, …) with the message ``"<what>: <details>"``;
    anything else (:data:`TRANSIENT_CODES`, and codes such as UNIMPLEMENTED
    that a registry upgrade may cure) is a :class:`Retry`: never give up on
    an item because of a status that is not a refusal. Handlers use it as
    ``raise classify_rpc_error(error) from None``.
    """
    code = error.code()
    details = error.details() or code.name
    if code in PERMANENT_CODES:
        return error_for_status(code, f"{what}: {details}")
    return Retry(f"{what} {code.name}: {details}")


def is_transient(error: BaseException) -> bool:
    """Whether a handler's error leaves the item pending (True) or fails it (False).

    :class:`Retry` and a ProvexError whose code is transient (``Unavailable``,
    ``ResourceExhausted``, the base class's INTERNAL: what
    :func:`provex.rpc.error_for_rpc_error` makes of an unreachable registry)
    are transient; another ProvexError is a refusal; anything else is a bug
    or an unexpected condition, retried.
    """
    if isinstance(error, ProvexError):
        return error.code not in PERMANENT_CODES
    return True


# ---------------------------------------------------------------- backoff


def next_delay(
    attempts: int,
    *,
    initial: float = 0.2,
    multiplier: float = 2.0,
    maximum: float = 30.0,
    jitter: float = 0.2,
    sample: float = 0.0,
) -> float:
    """Seconds to wait after ``attempts`` failed attempts (``attempts`` >= 1).

    The base delay is ``initial * multiplier ** (attempts - 1)``, capped at
    ``maximum``; jitter takes up to the fraction ``jitter`` off it:
    ``base * (1 - jitter * sample)`` with ``sample`` in [0, 1) (the worker
    draws it at random; ``sample=0`` gives the base delay). The result never
    exceeds ``maximum``.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    if initial <= 0 or maximum < initial or multiplier < 1:
        raise ValueError(
            f"want 0 < initial <= maximum and multiplier >= 1, got initial={initial}, "
            f"maximum={maximum}, multiplier={multiplier}"
        )
    if not 0 <= jitter <= 1 or not 0 <= sample <= 1:
        raise ValueError(f"jitter and sample must be in [0, 1], got {jitter} and {sample}")
    base = initial
    for _ in range(attempts - 1):
        base *= multiplier
        if base >= maximum:
            break
    return min(base, maximum) * (1 - jitter * sample)


@dataclass(frozen=True)
class Backoff:
    """The retry schedule of an :class:`OutboxWorker` (see :func:`next_delay`)."""

    initial: float = 0.2
    multiplier: float = 2.0
    maximum: float = 30.0
    jitter: float = 0.2

    def delay(self, attempts: int, sample: float = 0.0) -> float:
        """:func:`next_delay` with these settings."""
        return next_delay(
            attempts,
            initial=self.initial,
            multiplier=self.multiplier,
            maximum=self.maximum,
            jitter=self.jitter,
            sample=sample,
        )


# ---------------------------------------------------------------- rows


def _format_time(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("naive datetime: use an aware UTC datetime")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _parse_time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


@dataclass(frozen=True)
class OutboxItemRow:
    """One outbox row as stored, payload and result included (the domain's view)."""

    key: str
    kind: str
    payload: bytes
    state: node_pb2.OutboxState.ValueType
    attempts: int
    last_error: str
    next_attempt_at: datetime | None
    created_at: datetime
    done_at: datetime | None
    result: bytes | None
    seq: int

    def to_proto(self) -> node_pb2.OutboxItem:
        """The operator's view of the item (no payload nor result)."""
        item = node_pb2.OutboxItem(
            idempotency_key=self.key,
            kind=self.kind,
            state=self.state,
            attempts=self.attempts,
            last_error=self.last_error,
            created_at=to_timestamp(self.created_at),
        )
        if self.done_at is not None:
            item.done_at.CopyFrom(to_timestamp(self.done_at))
        return item


_COLUMNS = (
    "idempotency_key, kind, payload, state, attempts, last_error, next_attempt_at, "
    "created_at, done_at, result, seq"
)


def _row(values: Sequence[object]) -> OutboxItemRow:
    (key, kind, payload, state, attempts, last_error, next_at, created, done, result, seq) = values
    assert isinstance(key, str) and isinstance(kind, str) and isinstance(state, str)
    assert isinstance(payload, bytes) and isinstance(attempts, int) and isinstance(seq, int)
    assert isinstance(last_error, str) and isinstance(created, str)
    assert next_at is None or isinstance(next_at, str)
    assert done is None or isinstance(done, str)
    assert result is None or isinstance(result, bytes)
    created_at = _parse_time(created)
    assert created_at is not None
    return OutboxItemRow(
        key=key,
        kind=kind,
        payload=payload,
        state=_STATE_VALUE[state],
        attempts=attempts,
        last_error=last_error,
        next_attempt_at=_parse_time(next_at),
        created_at=created_at,
        done_at=_parse_time(done),
        result=result,
        seq=seq,
    )


# ---------------------------------------------------------------- callbacks


Handler = Callable[[str, bytes], Awaitable[bytes]]
"""``async def handler(key, payload) -> result``: send one item to the registry."""

OnDone = Callable[[sqlite3.Connection, OutboxItemRow, bytes], None]
"""``on_done(conn, item, result)``: apply the registry's answer in the transaction marking it done.

Runs on the database thread; ``item`` is the row as marked (state DONE,
``result`` set). If it raises, the transaction rolls back (the mark and the
callback's own writes): a permanent ProvexError (:func:`is_transient`, e.g. a
:class:`~provex.errors.VerificationError` of the answer) then fails the
item (``on_failed`` applies); anything else is logged and the item is sent
again later (the registry answers the same key the same way).
"""

OnFailed = Callable[[sqlite3.Connection, OutboxItemRow, ProvexError], None]
"""``on_failed(conn, item, error)``: record a refusal in the transaction marking the item failed."""


# ---------------------------------------------------------------- writes and reads


def enqueue(
    conn: sqlite3.Connection, kind: str, key: str, payload: bytes, now: datetime
) -> node_pb2.OutboxItem:
    """Add an item, due at once, inside the caller's open transaction; return it.

    Call it in the transaction of the change that needs the call, then
    :meth:`OutboxWorker.wake` once that transaction committed. Enqueuing a
    key again with the same kind and payload returns the existing item (in
    whatever state it is); with another kind or payload it raises
    :class:`~provex.errors.AlreadyExists`. Raises
    :class:`~provex.errors.InvalidArgument` for an empty key or kind, and
    ``RuntimeError`` outside a transaction (the item would not be atomic
    with its change).
    """
    if not conn.in_transaction:
        raise RuntimeError("enqueue must run inside the transaction of the change it reports")
    if not key:
        raise InvalidArgument("idempotency_key must not be empty")
    if not kind:
        raise InvalidArgument("outbox kind must not be empty")
    existing = get_row(conn, key)
    if existing is not None:
        if existing.kind != kind or existing.payload != payload:
            raise AlreadyExists(
                f"idempotency key {key!r} was already used for a different {existing.kind} request"
            )
        return existing.to_proto()
    stamp = _format_time(now)
    conn.execute(
        "INSERT INTO outbox (idempotency_key, seq, kind, payload, state, next_attempt_at, "
        "created_at) VALUES (?, (SELECT coalesce(max(seq), 0) + 1 FROM outbox), ?, ?, "
        "'pending', ?, ?)",
        (key, kind, payload, stamp, stamp),
    )
    row = get_row(conn, key)
    assert row is not None
    return row.to_proto()


def get_row(conn: sqlite3.Connection, key: str) -> OutboxItemRow | None:
    """The stored item ``key`` with its payload and result, or None."""
    values = conn.execute(
        f"SELECT {_COLUMNS} FROM outbox WHERE idempotency_key = ?", (key,)
    ).fetchone()
    return None if values is None else _row(values)


def get_item(conn: sqlite3.Connection, key: str) -> node_pb2.OutboxItem | None:
    """The operator's view of the item ``key``, or None when there is none."""
    row = get_row(conn, key)
    return None if row is None else row.to_proto()


def _existing_item(conn: sqlite3.Connection, key: str) -> node_pb2.OutboxItem:
    item = get_item(conn, key)
    if item is None:
        raise NotFound(f"no outbox item {key!r}")
    return item


def list_items(
    conn: sqlite3.Connection, state: int | None = None, limit: int = 1000
) -> list[node_pb2.OutboxItem]:
    """Up to ``limit`` items in creation order, of one state or (None, UNSPECIFIED) all."""
    if limit < 1:
        raise InvalidArgument(f"limit must be positive, got {limit}")
    if state is None or state == node_pb2.OUTBOX_STATE_UNSPECIFIED:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM outbox ORDER BY seq LIMIT ?", (limit,)
        ).fetchall()
    else:
        text = _STATE_TEXT.get(state)
        if text is None:
            raise InvalidArgument(f"unknown outbox state {state}")
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM outbox WHERE state = ? ORDER BY seq LIMIT ?", (text, limit)
        ).fetchall()
    return [_row(values).to_proto() for values in rows]


def pending_count(conn: sqlite3.Connection) -> int:
    """How many items wait for the registry."""
    row = conn.execute("SELECT count(*) FROM outbox WHERE state = 'pending'").fetchone()
    return int(row[0])


# ---------------------------------------------------------------- the worker's statements


def _due(
    conn: sqlite3.Connection, now: str, kinds: tuple[str, ...], limit: int
) -> tuple[list[OutboxItemRow], str | None]:
    """Due pending items of ``kinds`` (creation order), and when the next one falls due."""
    marks = ", ".join("?" * len(kinds))
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM outbox "
        f"WHERE state = 'pending' AND next_attempt_at <= ? AND kind IN ({marks}) "
        "ORDER BY seq LIMIT ?",
        (now, *kinds, limit),
    ).fetchall()
    later = conn.execute(
        "SELECT min(next_attempt_at) FROM outbox "
        f"WHERE state = 'pending' AND next_attempt_at > ? AND kind IN ({marks})",
        (now, *kinds),
    ).fetchone()
    return [_row(values) for values in rows], later[0]


def _unhandled(conn: sqlite3.Connection, kinds: tuple[str, ...]) -> list[tuple[str, int]]:
    marks = ", ".join("?" * len(kinds))
    rows = conn.execute(
        "SELECT kind, count(*) FROM outbox "
        f"WHERE state = 'pending' AND kind NOT IN ({marks}) GROUP BY kind",
        kinds,
    ).fetchall()
    return [(str(kind), int(count)) for kind, count in rows]


def _settle_done(
    conn: sqlite3.Connection,
    row: OutboxItemRow,
    result: bytes,
    now: datetime,
    on_done: OnDone | None,
) -> bool:
    """Mark a still pending item done and apply ``on_done``; False if it was settled already."""
    cursor = conn.execute(
        "UPDATE outbox SET state = 'done', attempts = attempts + 1, last_error = '', "
        "next_attempt_at = NULL, done_at = ?, result = ? "
        "WHERE idempotency_key = ? AND state = 'pending'",
        (_format_time(now), result, row.key),
    )
    if cursor.rowcount != 1:
        return False
    if on_done is not None:
        settled = get_row(conn, row.key)
        assert settled is not None
        on_done(conn, settled, result)
    return True


def _settle_failed(
    conn: sqlite3.Connection,
    row: OutboxItemRow,
    error: ProvexError,
    now: datetime,
    on_failed: OnFailed | None,
) -> bool:
    """Mark a still pending item failed and apply ``on_failed``; False if it was settled."""
    cursor = conn.execute(
        "UPDATE outbox SET state = 'failed', attempts = attempts + 1, last_error = ?, "
        "next_attempt_at = NULL, done_at = ? "
        "WHERE idempotency_key = ? AND state = 'pending'",
        (_error_text(error), _format_time(now), row.key),
    )
    if cursor.rowcount != 1:
        return False
    if on_failed is not None:
        settled = get_row(conn, row.key)
        assert settled is not None
        on_failed(conn, settled, error)
    return True


def _reschedule(conn: sqlite3.Connection, key: str, message: str, due: datetime) -> None:
    conn.execute(
        "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? "
        "WHERE idempotency_key = ? AND state = 'pending'",
        (message[:MAX_ERROR_LENGTH], _format_time(due), key),
    )


def _error_text(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    if not isinstance(error, (Retry, ProvexError)):
        text = f"{type(error).__name__}: {text}"
    return text[:MAX_ERROR_LENGTH]


# ---------------------------------------------------------------- the worker


@dataclass(frozen=True)
class _Outcome:
    result: bytes | None = None
    refusal: ProvexError | None = None
    retry: str | None = None


MAX_ORIGINS = 10_000
"""Most request ids remembered for pending items (beyond it, their calls get fresh ids)."""


class OutboxWorker:
    """Delivers pending outbox items with their kind's handler; see the module docstring.

    ``db`` is the node's writable database. ``handlers`` maps each kind to
    its :data:`Handler`; only those kinds are sent (pending items of other
    kinds wait, and are logged at start). ``on_done`` and ``on_failed`` are
    one callback for every kind or a mapping kind -> callback. At most
    ``concurrency`` calls are in flight at once; an attempt running longer
    than ``attempt_timeout`` seconds is abandoned and retried. The worker
    looks for due items when woken (:meth:`wake`, a finished attempt), when
    the next retry falls due, and at least every ``poll_interval`` seconds.
    """

    def __init__(
        self,
        db: Database,
        handlers: Mapping[str, Handler],
        *,
        on_done: Mapping[str, OnDone] | OnDone | None = None,
        on_failed: Mapping[str, OnFailed] | OnFailed | None = None,
        backoff: Backoff | None = None,
        concurrency: int = 16,
        poll_interval: float = 5.0,
        attempt_timeout: float | None = 60.0,
        clock: Callable[[], datetime] = utc_now,
        rng: random.Random | None = None,
    ) -> None:
        """Configure the worker; :meth:`start` runs it."""
        if db.readonly:
            raise ValueError("the outbox worker needs the writable database")
        if not handlers:
            raise ValueError("the outbox worker needs at least one handler")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, got {poll_interval}")
        self._db = db
        self._handlers = dict(handlers)
        self._kinds = tuple(sorted(self._handlers))
        self._on_done: dict[str, OnDone] = {}
        if isinstance(on_done, Mapping):
            self._on_done.update(on_done)
        elif on_done is not None:
            self._on_done.update(dict.fromkeys(self._kinds, on_done))
        self._on_failed: dict[str, OnFailed] = {}
        if isinstance(on_failed, Mapping):
            self._on_failed.update(on_failed)
        elif on_failed is not None:
            self._on_failed.update(dict.fromkeys(self._kinds, on_failed))
        self._backoff = backoff if backoff is not None else Backoff()
        self._concurrency = concurrency
        self._poll_interval = poll_interval
        self._attempt_timeout = attempt_timeout
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._batch = concurrency * BATCH_FACTOR
        # Set when something happened (wake, an attempt ended); the loop then looks again.
        self._signal = asyncio.Event()
        # wake() asks for a new scan of the table (new items may be due).
        self._rescan = False
        # Loop time when the earliest item rescheduled since the last scan falls due.
        self._retry_at: float | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        # Keys whose attempt ended while a scan ran: that scan's view of them may be stale.
        self._ended_during_scan: set[str] = set()
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        # The request id of the call waiting for a pending item: its registry call carries it.
        self._origins: dict[str, str] = {}

    def add_kind(
        self,
        kind: str,
        handler: Handler,
        *,
        on_done: OnDone | None = None,
        on_failed: OnFailed | None = None,
    ) -> None:
        """Handle one more kind (before :meth:`start`): its handler and callbacks.

        Lets a domain whose handlers need the running node (peer calls of
        :mod:`node.trading`) register them once the node is assembled.
        """
        if self._loop_task is not None:
            raise RuntimeError("add kinds before the outbox worker starts")
        if not kind or kind in self._handlers:
            raise ValueError(f"outbox kind {kind!r} is empty or handled already")
        self._handlers[kind] = handler
        self._kinds = tuple(sorted(self._handlers))
        if on_done is not None:
            self._on_done[kind] = on_done
        if on_failed is not None:
            self._on_failed[kind] = on_failed

    # ------------------------------------------------------------ lifecycle

    @property
    def running(self) -> bool:
        """Whether :meth:`start` was called and :meth:`stop` not yet."""
        return self._loop_task is not None

    @property
    def in_flight(self) -> int:
        """How many calls are under way."""
        return len(self._in_flight)

    async def start(self) -> None:
        """Start delivering: pending items (from before a restart too) go out at once."""
        if self._loop_task is not None:
            raise RuntimeError("the outbox worker is already running")
        unhandled = await self._db.run(partial(_unhandled, kinds=self._kinds))
        for kind, count in unhandled:
            log.warning("outbox: %d pending %r items have no handler; they wait", count, kind)
        self._loop_task = asyncio.create_task(self._loop(), name="provex-outbox")

    async def stop(self, grace: float = 5.0) -> None:
        """Stop: no new calls; calls in flight get ``grace`` seconds, then are abandoned.

        An abandoned call marks nothing: its item stays pending and is sent
        again by the next worker (the registry recognises the idempotency
        key). A mark already handed to the database thread still commits.
        Stopping a stopped worker does nothing.
        """
        task, self._loop_task = self._loop_task, None
        if task is None:
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        attempts = list(self._in_flight.values())
        if attempts:
            _, late = await asyncio.wait(attempts, timeout=grace)
            for attempt in late:
                attempt.cancel()
            await asyncio.gather(*attempts, return_exceptions=True)

    def wake(self) -> None:
        """Look for due items now: call it once a transaction that enqueued has committed."""
        self._rescan = True
        self._signal.set()

    async def wait_done(self, key: str, timeout: float) -> node_pb2.OutboxItem:  # noqa: ASYNC109
        """The item ``key`` once settled (done or failed), or as it is after ``timeout`` seconds.

        Lets an RPC answer with the registry's result when it comes quickly,
        and with the pending item otherwise. Raises
        :class:`~provex.errors.NotFound` for an unknown key. Also wakes the
        worker.
        """
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(waiter)
        origin = current_request_id()
        if origin is not None and len(self._origins) < MAX_ORIGINS:
            self._origins[key] = origin  # Before the worker can start the item's call.
        try:
            self.wake()
            item = await self._db.run(partial(_existing_item, key=key))
            if item.state != PENDING or timeout <= 0:
                self._origins.pop(key, None)
                return item
            try:
                async with asyncio.timeout(timeout):
                    await waiter
            except TimeoutError:
                pass
            return await self._db.run(partial(_existing_item, key=key))
        finally:
            waiters = self._waiters.get(key)
            if waiters is not None and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._waiters[key]

    # ------------------------------------------------------------ the loop

    async def _loop(self) -> None:
        """Scan for due items, keep them in creation order, start them as slots free up.

        A scan reads up to ``batch`` due items. Slots that free up take the
        next of them without a new scan; the table is scanned again when
        woken, when the next retry falls due, every ``poll_interval``, or
        when the items read are used up and the scan was full (more may wait).
        """
        loop = asyncio.get_running_loop()
        ready: deque[OutboxItemRow] = deque()
        full = False
        scan_deadline = loop.time()
        while True:
            self._signal.clear()
            now = loop.time()
            deadline = scan_deadline
            if self._retry_at is not None:
                deadline = min(deadline, self._retry_at)
            free = len(self._in_flight) < self._concurrency
            if self._rescan or now >= deadline or (full and not ready and free):
                self._rescan = False
                self._retry_at = None
                try:
                    rows, delay = await self._scan()
                except Exception:
                    log.exception("outbox: looking for due items failed; trying again")
                    rows, delay = [], self._poll_interval
                full = len(rows) >= self._batch
                ready = deque(
                    row
                    for row in rows
                    if row.key not in self._in_flight and row.key not in self._ended_during_scan
                )
                scan_deadline = loop.time() + delay
            while ready and len(self._in_flight) < self._concurrency:
                row = ready.popleft()
                self._in_flight[row.key] = asyncio.create_task(
                    self._attempt(row), name=f"provex-outbox:{row.key}"
                )
            deadline = scan_deadline
            if self._retry_at is not None:
                deadline = min(deadline, self._retry_at)
            try:
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    await self._signal.wait()
            except TimeoutError:
                pass

    async def _scan(self) -> tuple[list[OutboxItemRow], float]:
        """Due items in creation order (at most ``batch``), and seconds until the next falls due."""
        self._ended_during_scan.clear()
        now = self._clock()
        rows, later = await self._db.run(
            partial(_due, now=_format_time(now), kinds=self._kinds, limit=self._batch)
        )
        delay = self._poll_interval
        due_later = _parse_time(later)
        if due_later is not None:
            delay = min(delay, max(0.0, (due_later - self._clock()).total_seconds()))
        return rows, delay

    def _retry_in(self, seconds: float) -> None:
        at = asyncio.get_running_loop().time() + seconds
        if self._retry_at is None or at < self._retry_at:
            self._retry_at = at

    async def _attempt(self, row: OutboxItemRow) -> None:
        settled = False
        try:
            outcome = await self._call(row)
            try:
                settled = await self._record(row, outcome)
            except Exception as error:
                # Rolled back (an on_failed bug, a database error): nothing was marked.
                log.exception("outbox: recording the outcome of %r failed", row.key)
                try:
                    await self._retry_later(row, f"recording the outcome failed: {error}")
                except Exception:
                    # The database fails: hold the slot a while, so this is no hot loop.
                    log.exception("outbox: rescheduling %r failed", row.key)
                    await asyncio.sleep(self._backoff.delay(row.attempts + 1, self._rng.random()))
                    self._retry_in(0.0)
        finally:
            self._in_flight.pop(row.key, None)
            self._ended_during_scan.add(row.key)
            if settled:
                self._notify(row.key)
            self._signal.set()

    async def _call(self, row: OutboxItemRow) -> _Outcome:
        handler = self._handlers[row.kind]
        try:
            with request_scope(self._origins.pop(row.key, None)):
                async with asyncio.timeout(self._attempt_timeout):
                    result = await handler(row.key, row.payload)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # stopping: abandon the call, mark nothing
            return _Outcome(retry="the call was cancelled")
        except TimeoutError:
            return _Outcome(retry=f"no answer within {self._attempt_timeout} s")
        except Exception as error:
            if not isinstance(error, (Retry, ProvexError)):
                log.exception("outbox: the %s handler failed on %r", row.kind, row.key)
            if is_transient(error):
                return _Outcome(retry=_error_text(error))
            assert isinstance(error, ProvexError)
            return _Outcome(refusal=error)
        if not isinstance(result, bytes):
            log.error("outbox: the %s handler returned %s, not bytes", row.kind, type(result))
            return _Outcome(retry=f"handler returned {type(result).__name__}, not bytes")
        return _Outcome(result=result)

    async def _record(self, row: OutboxItemRow, outcome: _Outcome) -> bool:
        """Store the outcome; True if the item is now settled (done or failed)."""
        if outcome.result is not None:
            settle = partial(
                _settle_done,
                row=row,
                result=outcome.result,
                now=self._clock(),
                on_done=self._on_done.get(row.kind),
            )
            try:
                return await self._db.transaction(settle)
            except Exception as error:
                if isinstance(error, ProvexError) and not is_transient(error):
                    outcome = _Outcome(refusal=error)
                else:
                    # Rolled back: the result is not applied; the call is made again.
                    log.exception("outbox: applying the answer to %r failed", row.key)
                    outcome = _Outcome(retry=f"applying the answer failed: {_error_text(error)}")
        if outcome.refusal is not None:
            log.warning("outbox: %r refused: %s", row.key, outcome.refusal)
            fail = partial(
                _settle_failed,
                row=row,
                error=outcome.refusal,
                now=self._clock(),
                on_failed=self._on_failed.get(row.kind),
            )
            return await self._db.transaction(fail)
        await self._retry_later(row, outcome.retry or "retry")
        return False

    async def _retry_later(self, row: OutboxItemRow, message: str) -> None:
        """Count the attempt, record ``message`` and schedule the next attempt."""
        attempts = row.attempts + 1
        wait = self._backoff.delay(attempts, self._rng.random())
        log.info(
            "outbox: %r attempt %d failed (%s); next in %.2f s", row.key, attempts, message, wait
        )
        due = self._clock() + timedelta(seconds=wait)
        await self._db.transaction(partial(_reschedule, key=row.key, message=message, due=due))
        self._retry_in(wait)

    def _notify(self, key: str) -> None:
        for waiter in self._waiters.pop(key, []):
            if not waiter.done():
                waiter.set_result(None)
