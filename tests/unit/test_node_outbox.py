"""Tests of node.outbox: durable items, delivery exactly once, refusals, restarts, backoff.

Each test uses a real :class:`provex.storage.Database` on a temporary file
with the outbox schema and two domain tables (``applied`` and ``refused``)
that the completion callbacks write in the transaction marking the item.
Handlers are small stand-ins for the registry.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from node.outbox import (
    SCHEMA,
    Backoff,
    Handler,
    OutboxItemRow,
    OutboxWorker,
    Retry,
    classify_rpc_error,
    enqueue,
    get_item,
    get_row,
    is_transient,
    list_items,
    next_delay,
    pending_count,
)
from provex import errors
from provex.storage import Database, Migration
from provex.timestamps import utc_now
from provex.v1 import node_pb2

PENDING = node_pb2.OUTBOX_STATE_PENDING
DONE = node_pb2.OUTBOX_STATE_DONE
FAILED = node_pb2.OUTBOX_STATE_FAILED

MIGRATIONS = (
    Migration(
        1,
        "outbox and the test's domain tables",
        SCHEMA
        + """
        CREATE TABLE applied (key TEXT PRIMARY KEY, result BLOB NOT NULL);
        CREATE TABLE refused (key TEXT PRIMARY KEY, message TEXT NOT NULL);
        """,
    ),
)

FAST = Backoff(initial=0.005, multiplier=2.0, maximum=0.02, jitter=0.0)
WAIT = 2.0  # seconds a test waits at most for an item to settle


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(tmp_path / "node.db", migrations=MIGRATIONS)
    yield database
    await database.close()


WorkerFactory = Callable[..., OutboxWorker]


@pytest.fixture
async def workers() -> AsyncIterator[WorkerFactory]:
    """Make workers (fast backoff, a long poll interval); stop them all at the end."""
    made: list[OutboxWorker] = []

    def make(db: Database, handlers: dict[str, Handler], **options: Any) -> OutboxWorker:
        options.setdefault("backoff", FAST)
        options.setdefault("poll_interval", 30.0)
        options.setdefault("on_done", apply_result)
        options.setdefault("on_failed", record_refusal)
        worker = OutboxWorker(db, handlers, **options)
        made.append(worker)
        return worker

    yield make
    for worker in made:
        await worker.stop(grace=0.1)


def apply_result(conn: sqlite3.Connection, item: OutboxItemRow, result: bytes) -> None:
    """The domain applies the registry's answer (fails if applied twice: primary key)."""
    assert item.state == DONE and item.result == result
    conn.execute("INSERT INTO applied (key, result) VALUES (?, ?)", (item.key, result))


def record_refusal(
    conn: sqlite3.Connection, item: OutboxItemRow, error: errors.ProvexError
) -> None:
    assert item.state == FAILED and item.last_error == str(error)
    conn.execute("INSERT INTO refused (key, message) VALUES (?, ?)", (item.key, str(error)))


async def put(
    db: Database, key: str, payload: bytes = b"request", kind: str = "register"
) -> node_pb2.OutboxItem:
    return await db.transaction(lambda conn: enqueue(conn, kind, key, payload, utc_now()))


async def applied(db: Database) -> dict[str, bytes]:
    rows = await db.run(lambda conn: conn.execute("SELECT key, result FROM applied").fetchall())
    return {key: result for key, result in rows}


async def row(db: Database, key: str) -> OutboxItemRow:
    found = await db.run(lambda conn: get_row(conn, key))
    assert found is not None
    return found


async def eventually(check: Callable[[], Awaitable[bool]], within: float = WAIT) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


class Registry:
    """A stand-in registry: unreachable for its first ``outage`` calls, then answers.

    Like the real one it is idempotent: a key sent twice gets the same answer.
    """

    def __init__(self, outage: int = 0) -> None:
        self.outage = outage
        self.calls: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self.order: list[str] = []

    async def register(self, key: str, payload: bytes) -> bytes:
        self.calls[key] += 1
        if self.outage > 0:
            self.outage -= 1
            raise Retry("registry UNAVAILABLE: connection refused")
        self.answered[key] += 1
        self.order.append(key)
        return b"certificate for " + payload


# ---------------------------------------------------------------- enqueue and reads


async def test_enqueue_is_idempotent_and_refuses_a_reused_key(db: Database) -> None:
    first = await put(db, "k1", b"payload")
    assert first.idempotency_key == "k1" and first.kind == "register"
    assert first.state == PENDING and first.attempts == 0 and first.last_error == ""
    assert first.HasField("created_at") and not first.HasField("done_at")

    again = await put(db, "k1", b"payload")
    assert again == first
    with pytest.raises(errors.AlreadyExists, match="k1"):
        await put(db, "k1", b"another payload")
    with pytest.raises(errors.AlreadyExists):
        await put(db, "k1", b"payload", kind="report_member")
    with pytest.raises(errors.InvalidArgument):
        await put(db, "", b"payload")
    with pytest.raises(RuntimeError, match="transaction"):
        await db.run(lambda conn: enqueue(conn, "register", "k2", b"x", utc_now()))
    assert await db.run(pending_count) == 1


async def test_enqueue_rolls_back_with_the_change_that_needed_it(db: Database) -> None:
    def change_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO applied (key, result) VALUES ('domain', x'00')")
        enqueue(conn, "register", "k1", b"x", utc_now())
        raise errors.FailedPrecondition("the domain refused after all")

    with pytest.raises(errors.FailedPrecondition):
        await db.transaction(change_then_fail)
    assert await db.run(lambda conn: get_item(conn, "k1")) is None
    assert await applied(db) == {}


async def test_items_are_listed_by_state_in_creation_order(
    db: Database, workers: WorkerFactory
) -> None:
    async def accept(key: str, payload: bytes) -> bytes:
        return b"ok"

    async def refuse(key: str, payload: bytes) -> bytes:
        raise errors.PermissionDenied("holder is not a member of this node")

    async def unreachable(key: str, payload: bytes) -> bytes:
        raise Retry("registry UNAVAILABLE")

    for key, kind in [("a", "accept"), ("b", "refuse"), ("c", "later"), ("d", "accept")]:
        await put(db, key, kind=kind)
    worker = workers(db, {"accept": accept, "refuse": refuse, "later": unreachable})
    await worker.start()
    for key in "abd":
        assert (await worker.wait_done(key, WAIT)).state != PENDING

    def keys(state: int | None) -> Callable[[sqlite3.Connection], list[str]]:
        return lambda conn: [item.idempotency_key for item in list_items(conn, state)]

    assert await db.run(keys(None)) == ["a", "b", "c", "d"]
    assert await db.run(keys(node_pb2.OUTBOX_STATE_UNSPECIFIED)) == ["a", "b", "c", "d"]
    assert await db.run(keys(DONE)) == ["a", "d"]
    assert await db.run(keys(FAILED)) == ["b"]
    assert await db.run(keys(PENDING)) == ["c"]
    assert await db.run(lambda conn: len(list_items(conn, None, limit=2))) == 2
    assert await db.run(pending_count) == 1
    with pytest.raises(errors.InvalidArgument):
        await db.run(lambda conn: list_items(conn, 42))
    assert await db.run(lambda conn: get_item(conn, "missing")) is None


def test_the_worker_queries_use_the_indexes() -> None:
    conn = sqlite3.connect(":memory:")
    conn.executescript(SCHEMA)
    plans = {
        "due": conn.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM outbox WHERE state = 'pending' "
            "AND next_attempt_at <= ? AND kind IN (?) ORDER BY seq LIMIT 4",
            ("2026-01-01", "register"),
        ).fetchall(),
        "pending": conn.execute(
            "EXPLAIN QUERY PLAN SELECT count(*) FROM outbox WHERE state = 'pending'"
        ).fetchall(),
    }
    assert "outbox_due" in str(plans["due"])
    assert "outbox_by_state" in str(plans["pending"])
    conn.close()


# ---------------------------------------------------------------- delivery


async def test_transient_failures_then_exactly_once(db: Database, workers: WorkerFactory) -> None:
    registry = Registry(outage=5)
    keys = [f"k{n}" for n in range(3)]
    for key in keys:
        await put(db, key, key.encode())
    worker = workers(db, {"register": registry.register})
    await worker.start()

    for key in keys:
        item = await worker.wait_done(key, WAIT)
        assert item.state == DONE, item
        assert item.last_error == "" and item.HasField("done_at")
    assert registry.answered == Counter(keys)  # one successful call per item
    assert sum(registry.calls.values()) == 5 + 3
    assert await applied(db) == {key: b"certificate for " + key.encode() for key in keys}
    total_attempts = 0
    for key in keys:
        stored = await row(db, key)
        assert stored.result == b"certificate for " + key.encode()
        assert stored.next_attempt_at is None
        total_attempts += stored.attempts
    assert total_attempts == 5 + 3

    # Done is done: waking the worker again sends nothing.
    worker.wake()
    await asyncio.sleep(0.05)
    assert sum(registry.calls.values()) == 5 + 3


async def test_a_pending_item_records_its_attempts_and_last_error(
    db: Database, workers: WorkerFactory
) -> None:
    registry = Registry(outage=1_000)
    await put(db, "k1")
    worker = workers(db, {"register": registry.register})
    await worker.start()
    await eventually(lambda: _attempts_at_least(db, "k1", 2))
    stored = await row(db, "k1")
    assert stored.state == PENDING and stored.result is None and stored.done_at is None
    assert stored.last_error == "registry UNAVAILABLE: connection refused"
    assert stored.next_attempt_at is not None
    assert await applied(db) == {}


async def _attempts_at_least(db: Database, key: str, count: int) -> bool:
    return (await row(db, key)).attempts >= count


async def test_a_refusal_fails_the_item_and_is_never_retried(
    db: Database, workers: WorkerFactory
) -> None:
    calls: Counter[str] = Counter()

    async def refuse(key: str, payload: bytes) -> bytes:
        calls[key] += 1
        raise errors.FailedPrecondition("holder 91440101MA5CXXXX0X is frozen")

    await put(db, "k1")
    worker = workers(db, {"register": refuse})
    await worker.start()
    item = await worker.wait_done("k1", WAIT)
    assert item.state == FAILED
    assert item.last_error == "holder 91440101MA5CXXXX0X is frozen"
    assert item.attempts == 1 and item.HasField("done_at")

    for _ in range(3):
        worker.wake()
        await asyncio.sleep(0.02)
    assert calls == Counter({"k1": 1})
    refused = await db.run(lambda conn: conn.execute("SELECT * FROM refused").fetchall())
    assert refused == [("k1", "holder 91440101MA5CXXXX0X is frozen")]
    assert await applied(db) == {}
    assert await db.run(pending_count) == 0


async def test_an_unexpected_error_is_logged_and_retried(
    db: Database, workers: WorkerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    calls: Counter[str] = Counter()

    async def buggy_once(key: str, payload: bytes) -> bytes:
        calls[key] += 1
        if calls[key] == 1:
            raise KeyError("surprise")
        return b"ok"

    await put(db, "k1")
    worker = workers(db, {"register": buggy_once})
    with caplog.at_level(logging.ERROR, logger="node.outbox"):
        await worker.start()
        item = await worker.wait_done("k1", WAIT)
    assert item.state == DONE and item.attempts == 2
    assert calls["k1"] == 2
    logged = [record for record in caplog.records if record.exc_info is not None]
    assert logged and "KeyError" in caplog.text


async def test_on_done_runs_in_the_done_transaction(db: Database, workers: WorkerFactory) -> None:
    """A failing on_done rolls back the mark and its own writes; a refusing one fails the item."""
    registry = Registry()
    seen: Counter[str] = Counter()

    def on_done(conn: sqlite3.Connection, item: OutboxItemRow, result: bytes) -> None:
        seen[item.key] += 1
        apply_result(conn, item, result)  # written, then undone if we raise
        if item.key == "flaky" and seen[item.key] == 1:
            raise RuntimeError("disk hiccup")
        if item.key == "forged":
            raise errors.VerificationError("certificate signature does not verify")

    await put(db, "flaky")
    await put(db, "forged")
    worker = workers(db, {"register": registry.register}, on_done=on_done)
    await worker.start()

    flaky = await worker.wait_done("flaky", WAIT)
    assert flaky.state == DONE and flaky.attempts == 2
    forged = await worker.wait_done("forged", WAIT)
    assert forged.state == FAILED
    assert forged.last_error == "certificate signature does not verify"
    assert await applied(db) == {"flaky": b"certificate for request"}
    assert registry.calls["flaky"] == 2  # sent again: the first answer was not applied
    assert registry.calls["forged"] == 1


async def test_callbacks_per_kind(db: Database, workers: WorkerFactory) -> None:
    done: list[tuple[str, str]] = []

    def member_done(conn: sqlite3.Connection, item: OutboxItemRow, result: bytes) -> None:
        done.append(("member", item.key))

    async def answer(key: str, payload: bytes) -> bytes:
        return b""

    await put(db, "m1", kind="report_member")
    await put(db, "d1", kind="register")
    worker = workers(
        db, {"report_member": answer, "register": answer}, on_done={"report_member": member_done}
    )
    await worker.start()
    assert (await worker.wait_done("m1", WAIT)).state == DONE
    assert (await worker.wait_done("d1", WAIT)).state == DONE
    assert done == [("member", "m1")]
    assert (await row(db, "d1")).result == b""


async def test_items_of_a_kind_without_handler_wait(db: Database, workers: WorkerFactory) -> None:
    registry = Registry()
    await put(db, "t1", kind="report_trade")
    await put(db, "d1")
    worker = workers(db, {"register": registry.register})
    await worker.start()
    assert (await worker.wait_done("d1", WAIT)).state == DONE
    assert (await row(db, "t1")).state == PENDING and registry.calls["t1"] == 0


# ---------------------------------------------------------------- ordering and concurrency


async def test_due_items_go_out_in_creation_order(db: Database, workers: WorkerFactory) -> None:
    registry = Registry()
    keys = [f"item-{n}" for n in (9, 3, 7, 1, 8, 2, 6, 4, 5, 0)]  # not sorted by name
    for key in keys:
        await put(db, key)
    # One at a time, and more items than one scan reads (4 per slot).
    worker = workers(db, {"register": registry.register}, concurrency=1)
    await worker.start()
    assert (await worker.wait_done(keys[-1], WAIT)).state == DONE
    assert registry.order == keys


async def test_an_item_backing_off_does_not_block_the_others(
    db: Database, workers: WorkerFactory
) -> None:
    answered: list[str] = []

    async def register(key: str, payload: bytes) -> bytes:
        if key == "first" and len(answered) < 2:
            raise Retry("registry DEADLINE_EXCEEDED")
        answered.append(key)
        return b"ok"

    for key in ("first", "second", "third"):
        await put(db, key)
    worker = workers(db, {"register": register}, concurrency=1)
    await worker.start()
    assert (await worker.wait_done("first", WAIT)).state == DONE
    assert answered == ["second", "third", "first"]
    assert (await row(db, "first")).attempts >= 2


async def test_at_most_concurrency_calls_in_flight(db: Database, workers: WorkerFactory) -> None:
    current = 0
    highest = 0

    async def slow(key: str, payload: bytes) -> bytes:
        nonlocal current, highest
        current += 1
        highest = max(highest, current)
        await asyncio.sleep(0.01)
        current -= 1
        return b"ok"

    for n in range(12):
        await put(db, f"k{n}")
    worker = workers(db, {"register": slow}, concurrency=3)
    await worker.start()
    for n in range(12):
        assert (await worker.wait_done(f"k{n}", WAIT)).state == DONE
    assert highest == 3


# ---------------------------------------------------------------- restart, wake, wait_done


async def test_a_restart_completes_every_item_once(tmp_path: Path, workers: WorkerFactory) -> None:
    path = tmp_path / "node.db"
    keys = [f"r{n}" for n in range(6)]
    started: list[str] = []
    never = asyncio.Event()

    async def hangs(key: str, payload: bytes) -> bytes:
        """The registry answers r0, then stops answering: calls hang until abandoned."""
        started.append(key)
        if key == "r0":
            return b"answer r0"
        await never.wait()
        raise AssertionError("unreachable")

    first_db = await Database.open(path, migrations=MIGRATIONS)
    for key in keys:
        await put(first_db, key)
    first = workers(first_db, {"register": hangs}, concurrency=3)
    await first.start()
    assert (await first.wait_done("r0", WAIT)).state == DONE
    await eventually(lambda: _true(len(started) == 4 and first.in_flight == 3))
    await first.stop(grace=0.02)
    assert first.in_flight == 0

    # Nothing in flight was marked: those items are simply pending, untouched.
    for key in keys[1:]:
        stored = await row(first_db, key)
        assert (stored.state, stored.attempts, stored.last_error) == (PENDING, 0, "")
    assert await applied(first_db) == {"r0": b"answer r0"}
    await first_db.close()

    second_db = await Database.open(path, migrations=MIGRATIONS)
    registry = Registry(outage=2)
    second = workers(second_db, {"register": registry.register})
    await second.start()
    for key in keys[1:]:
        assert (await second.wait_done(key, WAIT)).state == DONE
    assert registry.calls["r0"] == 0  # done before the restart: not sent again
    assert registry.answered == Counter(keys[1:])
    done = await applied(second_db)
    assert sorted(done) == keys  # each applied exactly once (the table's primary key)
    assert await second_db.run(pending_count) == 0
    await second.stop()
    await second_db.close()


async def _true(value: bool) -> bool:
    return value


async def test_wake_sends_a_new_item_at_once(db: Database, workers: WorkerFactory) -> None:
    sent = asyncio.Event()

    async def register(key: str, payload: bytes) -> bytes:
        sent.set()
        return b"ok"

    worker = workers(db, {"register": register}, poll_interval=30.0)
    await worker.start()
    await asyncio.sleep(0.02)  # the worker has scanned an empty table and sleeps

    await put(db, "k1")
    await asyncio.sleep(0.05)
    assert not sent.is_set()  # without wake() it would wait for the 30 s poll

    began = time.monotonic()
    worker.wake()
    await asyncio.wait_for(sent.wait(), timeout=1.0)
    assert time.monotonic() - began < 0.5
    await eventually(lambda: _state_is(db, "k1", DONE))


async def _state_is(db: Database, key: str, state: int) -> bool:
    return (await row(db, key)).state == state


async def test_wait_done_times_out_with_the_pending_item(
    db: Database, workers: WorkerFactory
) -> None:
    registry = Registry(outage=1_000_000)
    await put(db, "k1")
    worker = workers(db, {"register": registry.register})
    await worker.start()

    began = time.monotonic()
    item = await worker.wait_done("k1", 0.1)
    elapsed = time.monotonic() - began
    assert 0.1 <= elapsed < 1.0
    assert item.state == PENDING and item.attempts >= 1
    assert item.last_error.startswith("registry UNAVAILABLE")
    assert (await worker.wait_done("k1", 0)).state == PENDING
    with pytest.raises(errors.NotFound):
        await worker.wait_done("no such key", 0.01)


async def test_stop_is_idempotent_and_the_worker_restarts(
    db: Database, workers: WorkerFactory
) -> None:
    registry = Registry()
    worker = workers(db, {"register": registry.register})
    await worker.stop()  # never started
    await worker.start()
    assert worker.running
    with pytest.raises(RuntimeError):
        await worker.start()
    await worker.stop()
    await worker.stop()
    assert not worker.running
    await put(db, "k1")
    await worker.start()
    assert (await worker.wait_done("k1", WAIT)).state == DONE


async def test_the_worker_needs_the_writable_database_and_handlers(tmp_path: Path) -> None:
    writer = await Database.open(tmp_path / "node.db", migrations=MIGRATIONS)
    reader = await Database.open(tmp_path / "node.db", migrations=MIGRATIONS, readonly=True)
    try:
        with pytest.raises(ValueError, match="writable"):
            OutboxWorker(reader, {"register": Registry().register})
        with pytest.raises(ValueError, match="handler"):
            OutboxWorker(writer, {})
        with pytest.raises(ValueError, match="concurrency"):
            OutboxWorker(writer, {"register": Registry().register}, concurrency=0)
    finally:
        await reader.close()
        await writer.close()


# ---------------------------------------------------------------- backoff


@pytest.mark.parametrize(
    "attempts, expected",
    [(1, 0.2), (2, 0.4), (3, 0.8), (4, 1.6), (5, 3.2), (8, 25.6), (9, 30.0), (10_000, 30.0)],
)
def test_backoff_doubles_up_to_the_maximum(attempts: int, expected: float) -> None:
    assert next_delay(attempts, jitter=0.0) == pytest.approx(expected)
    assert Backoff(jitter=0.0).delay(attempts) == pytest.approx(expected)


@pytest.mark.parametrize(
    "attempts, jitter, sample, expected",
    [
        (1, 0.2, 0.0, 0.2),  # no jitter drawn
        (1, 0.2, 0.5, 0.18),
        (1, 0.2, 1.0, 0.16),  # at most 20% off
        (9, 0.2, 0.5, 27.0),  # jitter applies below the cap: never above 30 s
        (3, 1.0, 0.25, 0.6),  # full jitter
    ],
)
def test_backoff_jitter(attempts: int, jitter: float, sample: float, expected: float) -> None:
    assert next_delay(attempts, jitter=jitter, sample=sample) == pytest.approx(expected)


@pytest.mark.parametrize(
    "options",
    [
        {"attempts": 0},
        {"attempts": 1, "initial": 0.0},
        {"attempts": 1, "multiplier": 0.5},
        {"attempts": 1, "initial": 5.0, "maximum": 1.0},
        {"attempts": 1, "jitter": 1.5},
        {"attempts": 1, "sample": -0.1},
    ],
)
def test_backoff_refuses_nonsense(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        next_delay(**options)


# ---------------------------------------------------------------- classification


def rpc_error(code: grpc.StatusCode, details: str = "the details") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code,
        initial_metadata=grpc.aio.Metadata(),
        trailing_metadata=grpc.aio.Metadata(),
        details=details,
        debug_error_string="",
    )


PERMANENT = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidArgument,
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.ALREADY_EXISTS: errors.AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
    grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: errors.Unauthenticated,
}
TRANSIENT = [
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNIMPLEMENTED,  # a registry upgrade may cure it: never give up
]


@pytest.mark.parametrize("code, error_class", PERMANENT.items(), ids=str)
def test_refusals_are_permanent(
    code: grpc.StatusCode, error_class: type[errors.ProvexError]
) -> None:
    error = classify_rpc_error(rpc_error(code, "holder is frozen"))
    assert type(error) is error_class
    assert str(error) == "registry: holder is frozen"
    assert not is_transient(error)


@pytest.mark.parametrize("code", TRANSIENT, ids=str)
def test_unreachable_or_busy_is_transient(code: grpc.StatusCode) -> None:
    error = classify_rpc_error(rpc_error(code, "connection refused"), what="the registry")
    assert isinstance(error, Retry)
    assert str(error) == f"the registry {code.name}: connection refused"
    assert is_transient(error)


def transient_cases() -> Iterator[tuple[BaseException, bool]]:
    yield Retry("later"), True
    yield errors.Unavailable("registry is unreachable"), True
    yield errors.ResourceExhausted("rate limited"), True
    yield errors.ProvexError("registry: internal"), True  # what an INTERNAL status becomes
    yield RuntimeError("a bug"), True
    yield errors.VerificationError("bad signature"), False
    for error_class in PERMANENT.values():
        yield error_class("refused"), False


@pytest.mark.parametrize("error, transient", list(transient_cases()), ids=repr)
def test_is_transient(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient
