"""The registry's transparency log: sequencer, read side and offline verification.

Everything the registry signs is appended to one RFC 6962 log (DESIGN.md
section 5), stored in the tables of migration 1 of :mod:`registry.db`:

* :class:`Sequencer` owns the log. Appends are queued and committed in
  batches (up to ``max_batch`` entries, or ``max_wait`` seconds after the
  first): one transaction per batch writes the entries, each entry's domain
  rows (its ``record`` callback), the perfect subtrees the batch completes,
  the new tree state and ONE checkpoint signed for the new size. Only after
  the COMMIT returned (``synchronous=FULL``: it is on disk) does each waiter
  get its :class:`Receipt`, an inclusion proof against exactly that
  checkpoint. :meth:`Sequencer.append_group` appends many entries as one
  unit of one batch: one check refuses entries, one write stores the rows
  of all the accepted ones (no savepoint per entry, no future per entry).
  The batch thread inserts a few hundred rows per statement
  (:func:`insert_rows`).
* :class:`LogReader` answers monitors and auditors: latest checkpoint,
  checkpoints by size, inclusion and consistency proofs, entries by range,
  index of a leaf hash. Proofs come from the stored perfect subtrees
  (``log_nodes``) and leaf hashes, O(log n) rows each; it works on a
  read-only :class:`~registry.db.Database`.
* :func:`verify_log` (a CLI action) recomputes the whole tree from the
  stored entry bytes, streaming, and reports every stored leaf hash, node,
  checkpoint and the tree state that does not match.

``log_nodes`` holds the perfect subtrees of width >= 2; the width-1 nodes
are the ``leaf_hash`` column of ``log_entries``.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeAlias

from provex.checkpoint import (
    Checkpoint,
    NoteVerifier,
    SignedNote,
    Signer,
    sign_checkpoint,
    verify_checkpoint,
)
from provex.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
    VerificationError,
)
from provex.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    CompactRange,
    consistency_proof_ranges,
    inclusion_proof_ranges,
    is_perfect,
    leaf_hash,
    perfect_cover,
    proof_from_ranges,
    root_from_cover,
)
from registry.db import Database, open_connection, schema_version, transaction

__all__ = (
    "MAX_ENTRIES_PER_CALL",
    "GroupCheck",
    "GroupWrite",
    "LogReader",
    "LogVerification",
    "Receipt",
    "Record",
    "Sequencer",
    "insert_rows",
    "verify_log",
)

_log = logging.getLogger(__name__)

MAX_ENTRIES_PER_CALL = 1000
"""Most entries :meth:`LogReader.entries` returns at once (monitors page through the log)."""

MAX_REPORTED_PROBLEMS = 1000
"""Most problems :func:`verify_log` lists; it still counts the others."""

Record: TypeAlias = Callable[[sqlite3.Connection, int], None]
"""``record(conn, log_index)``: writes an entry's domain rows in the batch's transaction."""

GroupCheck: TypeAlias = Callable[[sqlite3.Connection], Sequence[Exception | None]]
"""``check(conn)``: for each entry of a group, None (accept) or the exception refusing it."""

GroupWrite: TypeAlias = Callable[[sqlite3.Connection, Sequence[int | None]], None]
"""``write(conn, indexes)``: a group's domain rows; each entry's log index (None: refused)."""

_Range: TypeAlias = tuple[int, int]


@dataclass(frozen=True)
class Receipt:
    """Proof that an entry is in the log: its index and inclusion proof against ``checkpoint``.

    ``checkpoint`` is the signed note for ``tree_size``, the size right after
    the entry's batch committed.
    """

    log_index: int
    tree_size: int
    inclusion_proof: tuple[bytes, ...]
    checkpoint: str


# ---------------------------------------------------------------- shared storage access


@dataclass(frozen=True)
class _LogState:
    """The committed tree: size, its CompactRange (never mutated) and its checkpoint note."""

    size: int
    compact: CompactRange
    checkpoint: str


def _read_state(conn: sqlite3.Connection) -> _LogState | None:
    row = conn.execute(
        "SELECT size, compact_range, checkpoint FROM log_state WHERE id = 1"
    ).fetchone()
    if row is None:
        return None
    size, compact, checkpoint = row
    return _LogState(int(size), CompactRange.from_bytes(int(size), bytes(compact)), str(checkpoint))


def _read_size(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT size FROM log_state WHERE id = 1").fetchone()
    return 0 if row is None else int(row[0])


def _stored_hash(conn: sqlite3.Connection, start: int, end: int) -> bytes:
    """Hash of the perfect subtree ``[start, end)``: a leaf hash or a ``log_nodes`` row."""
    if end - start == 1:
        row = conn.execute("SELECT leaf_hash FROM log_entries WHERE idx = ?", (start,)).fetchone()
    else:
        row = conn.execute(
            "SELECT hash FROM log_nodes WHERE start = ? AND end = ?", (start, end)
        ).fetchone()
    if row is None:
        raise RuntimeError(f"log storage has no hash for the subtree [{start}, {end})")
    return bytes(row[0])


def _subtree_hash(lookup: Callable[[int, int], bytes], start: int, end: int) -> bytes:
    """MTH of ``[start, end)`` from perfect-subtree hashes: looked up, or folded from its cover."""
    if is_perfect(start, end):
        return lookup(start, end)
    return root_from_cover([lookup(s, e) for s, e in perfect_cover(start, end)])


def _checkpoint_text(note: str) -> Checkpoint:
    """The checkpoint inside a signed note, signatures unchecked (our own stored notes)."""
    return Checkpoint.parse(SignedNote.parse(note).text)


# ---------------------------------------------------------------- sequencer


@dataclass(frozen=True, slots=True)
class _Pending:
    """An append waiting for its batch: the entry, its callback and its caller's future."""

    entry: bytes
    record: Record | None
    future: asyncio.Future[Receipt]


@dataclass(frozen=True, slots=True)
class _Group:
    """Entries appended as one unit (see :meth:`Sequencer.append_group`) and their future."""

    entries: Sequence[bytes]
    check: GroupCheck
    write: GroupWrite
    future: asyncio.Future[list[Receipt | Exception]]


_Item: TypeAlias = _Pending | _Group


@dataclass
class _BatchOutcome:
    """What a batch transaction did: the new state (None if no entry was added) and answers."""

    state: _LogState | None
    receipts: list[tuple[_Pending, Receipt]] = field(default_factory=list)
    groups: list[tuple[_Group, list[Receipt | Exception]]] = field(default_factory=list)
    failures: list[tuple[_Item, Exception]] = field(default_factory=list)


def _load_or_init(conn: sqlite3.Connection, signer: Signer, origin: str) -> _LogState:
    """The committed state; on an empty log, first sign and store the size-0 checkpoint."""
    with transaction(conn):
        state = _read_state(conn)
        if state is None:
            note = sign_checkpoint(Checkpoint(origin, 0, EMPTY_ROOT), signer)
            conn.execute(
                "INSERT INTO log_state (id, size, compact_range, checkpoint) VALUES (1, 0, ?, ?)",
                (b"", note),
            )
            conn.execute("INSERT INTO log_checkpoints (size, note) VALUES (0, ?)", (note,))
            return _LogState(0, CompactRange(), note)
        entries = conn.execute("SELECT coalesce(max(idx) + 1, 0) FROM log_entries").fetchone()[0]
    if entries != state.size:
        raise RuntimeError(f"log state says size {state.size} but the log has {entries} entries")
    checkpoint = _checkpoint_text(state.checkpoint)
    if checkpoint.origin != origin:
        raise FailedPrecondition(
            f"the log's checkpoints are for origin {checkpoint.origin!r}, not {origin!r}"
        )
    if checkpoint.size != state.size or checkpoint.root_hash != state.compact.root():
        raise RuntimeError("the log's latest checkpoint does not match its tree state")
    return state


def insert_rows(conn: sqlite3.Connection, head: str, rows: Sequence[Sequence[object]]) -> None:
    """``head`` (``INSERT INTO t (a, b) VALUES``) for every row, many rows per statement.

    One statement of a few hundred rows instead of ``executemany``'s step per
    row: each step releases and takes back the GIL, which costs the batch
    thread a wait behind the event loop every time.
    """
    if not rows:
        return
    width = len(rows[0])
    group = "(" + ", ".join("?" * width) + ")"
    per_statement = max(1, min(_ROWS_PER_STATEMENT, _max_variables(conn) // width))
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        values = [value for row in chunk for value in row]
        conn.execute(f"{head} {', '.join([group] * len(chunk))}", values)


_ROWS_PER_STATEMENT = 500


def _max_variables(conn: sqlite3.Connection) -> int:
    """The most ``?`` one statement may hold (999 on old SQLite builds)."""
    try:
        return conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    except AttributeError:  # Python < 3.11.
        return 999


def _insert_entries(conn: sqlite3.Connection, rows: list[tuple[int, bytes, bytes]]) -> None:
    insert_rows(conn, "INSERT INTO log_entries (idx, entry, leaf_hash) VALUES", rows)


def _write_group(
    conn: sqlite3.Connection, group: _Group, first_index: int
) -> tuple[list[tuple[int, bytes, bytes]], list[int | None], list[Exception | None]]:
    """Check and write one group at ``first_index`` (database thread, inside a savepoint).

    Returns the accepted entries' rows (index, entry, leaf hash), each entry's
    index (None if refused) and each entry's refusal (None if accepted).
    """
    verdicts = list(group.check(conn))
    if len(verdicts) != len(group.entries):
        raise RuntimeError(
            f"a group check answered {len(verdicts)} verdicts for {len(group.entries)} entries"
        )
    rows: list[tuple[int, bytes, bytes]] = []
    indexes: list[int | None] = []
    for entry, verdict in zip(group.entries, verdicts, strict=True):
        if verdict is None:
            index = first_index + len(rows)
            rows.append((index, entry, leaf_hash(entry)))
            indexes.append(index)
        else:
            indexes.append(None)
    _insert_entries(conn, rows)
    group.write(conn, indexes)
    return rows, indexes, verdicts


def _write_batch(
    conn: sqlite3.Connection,
    batch: Sequence[_Item],
    state: _LogState,
    signer: Signer,
    origin: str,
) -> _BatchOutcome:
    """Commit ``batch`` after ``state`` in one transaction; then build the receipts.

    Runs on the database thread. Entries get dense indexes in queue order;
    an entry whose ``record`` callback raises is rolled back to its savepoint
    and gets no index. A group is checked first (its refused entries get no
    index), then its accepted entries and their rows are written at once in
    one savepoint: if that raises, the whole group is rolled back. Raises if
    the transaction fails (nothing is stored).
    """
    # Every hash a proof of a new leaf can need: the old frontier plus what this batch completes.
    known: dict[_Range, bytes] = dict(
        zip(perfect_cover(0, state.size), state.compact.hashes, strict=True)
    )
    compact = state.compact.copy()
    leaves: list[bytes] = []  # Leaf hashes of the accepted entries, in index order.
    singles: list[tuple[_Pending, int]] = []
    groups: list[tuple[_Group, list[int | None], list[Exception | None]]] = []
    failures: list[tuple[_Item, Exception]] = []
    new_nodes: list[tuple[int, int, bytes]] = []

    def visit(start: int, end: int, value: bytes) -> None:
        known[start, end] = value
        if end - start > 1:
            new_nodes.append((start, end, value))

    with transaction(conn):
        plain: list[tuple[int, bytes, bytes]] = []  # Entries without a callback, for executemany.
        for item in batch:
            index = state.size + len(leaves)
            if isinstance(item, _Group):
                _insert_entries(conn, plain)
                plain.clear()
                conn.execute("SAVEPOINT log_group")
                try:
                    rows, indexes, verdicts = _write_group(conn, item, index)
                except Exception as error:  # The group's own failure: only this group is dropped.
                    conn.execute("ROLLBACK TO log_group")
                    conn.execute("RELEASE log_group")
                    failures.append((item, error))
                    continue
                conn.execute("RELEASE log_group")
                leaves.extend(row[2] for row in rows)
                groups.append((item, indexes, verdicts))
                continue
            row = (index, item.entry, leaf_hash(item.entry))
            if item.record is None:
                plain.append(row)
                singles.append((item, index))
                leaves.append(row[2])
                continue
            _insert_entries(conn, plain)  # Earlier entries first: the callback may refer to them.
            plain.clear()
            conn.execute("SAVEPOINT log_entry")
            try:
                _insert_entries(conn, [row])
                item.record(conn, index)
            except Exception as error:  # The callback's own failure: only this entry is dropped.
                conn.execute("ROLLBACK TO log_entry")
                conn.execute("RELEASE log_entry")
                failures.append((item, error))
                continue
            conn.execute("RELEASE log_entry")
            singles.append((item, index))
            leaves.append(row[2])
        _insert_entries(conn, plain)
        if not leaves:
            refused = [
                (group, _group_answers(indexes, verdicts, None))
                for group, indexes, verdicts in groups
            ]
            return _BatchOutcome(None, groups=refused, failures=failures)

        compact.extend(leaves, visit)
        insert_rows(conn, "INSERT INTO log_nodes (start, end, hash) VALUES", new_nodes)
        note = sign_checkpoint(Checkpoint(origin, compact.size, compact.root()), signer)
        updated = conn.execute(
            "UPDATE log_state SET size = ?, compact_range = ?, checkpoint = ? "
            "WHERE id = 1 AND size = ?",
            (compact.size, compact.to_bytes(), note, state.size),
        )
        if updated.rowcount != 1:
            raise RuntimeError(f"the stored log is no longer at size {state.size}: another writer?")
        conn.execute("INSERT INTO log_checkpoints (size, note) VALUES (?, ?)", (compact.size, note))

    # Committed. Right-edge (non-perfect) subtrees are shared by many proofs: fold each once.
    size = compact.size

    def lookup(start: int, end: int) -> bytes:
        return known[start, end]

    def subtree_hash(start: int, end: int) -> bytes:
        value = known.get((start, end))
        if value is None:
            value = known[start, end] = _subtree_hash(lookup, start, end)
        return value

    def receipt(index: int) -> Receipt:
        proof = proof_from_ranges(inclusion_proof_ranges(index, size), subtree_hash)
        return Receipt(
            log_index=index, tree_size=size, inclusion_proof=tuple(proof), checkpoint=note
        )

    receipts = [(pending, receipt(index)) for pending, index in singles]
    answered = [
        (group, _group_answers(indexes, verdicts, receipt)) for group, indexes, verdicts in groups
    ]
    return _BatchOutcome(_LogState(size, compact, note), receipts, answered, failures)


def _group_answers(
    indexes: Sequence[int | None],
    verdicts: Sequence[Exception | None],
    receipt: Callable[[int], Receipt] | None,
) -> list[Receipt | Exception]:
    """Each entry's receipt, or its refusal."""
    answers: list[Receipt | Exception] = []
    for index, verdict in zip(indexes, verdicts, strict=True):
        if index is None or receipt is None:
            answers.append(verdict if verdict is not None else RuntimeError("entry not logged"))
        else:
            answers.append(receipt(index))
    return answers


class Sequencer:
    """Owns the log: batches appends; one transaction and one signed checkpoint per batch.

    Only one Sequencer may write a log (one registry process); the batch
    transaction checks that the stored size is still the one it extends.
    """

    def __init__(
        self,
        db: Database,
        signer: Signer,
        origin: str,
        *,
        max_batch: int = 512,
        max_wait: float = 0.005,
    ) -> None:
        """A stopped sequencer over writable ``db``; ``signer`` signs checkpoints for ``origin``.

        A batch closes at ``max_batch`` entries or ``max_wait`` seconds after its first entry.
        """
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if max_wait < 0:
            raise ValueError(f"max_wait must not be negative, got {max_wait}")
        if db.readonly:
            raise ValueError("the sequencer needs a writable database")
        Checkpoint(origin, 0, EMPTY_ROOT)  # Validates the origin line now, not at the first batch.
        self._db = db
        self._signer = signer
        self._origin = origin
        self._max_batch = max_batch
        self._max_wait = max_wait
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue()
        self._state: _LogState | None = None
        self._task: asyncio.Task[None] | None = None
        self._accepting = False
        self._queued = 0  # Entries in the queue (a group counts its entries).
        self._waiter: asyncio.Future[None] | None = None  # The collector, waiting for entries.
        self._wanted = 0  # Queued entries that fill the collector's batch.

    @property
    def size(self) -> int:
        """Entries committed so far (as of the last batch; the sequencer must have started)."""
        return self._require_state().size

    @property
    def checkpoint(self) -> str:
        """The latest signed checkpoint note (the sequencer must have started)."""
        return self._require_state().checkpoint

    def _require_state(self) -> _LogState:
        if self._state is None:
            raise Unavailable("the log's state is not loaded (sequencer not started, or reloading)")
        return self._state

    async def start(self) -> None:
        """Load the log's state (signing the size-0 checkpoint of a new log); accept appends."""
        if self._task is not None:
            raise RuntimeError("the sequencer is already running")
        self._state = await self._db.run(
            partial(_load_or_init, signer=self._signer, origin=self._origin)
        )
        self._accepting = True
        self._task = asyncio.create_task(self._run(), name="provex-log-sequencer")

    async def stop(self) -> None:
        """Refuse new appends, commit and answer every one already queued, then end."""
        task, self._task = self._task, None
        if task is None:
            return
        self._accepting = False
        self._put(None)
        await task

    async def append(self, entry: bytes, record: Record | None = None) -> Receipt:
        """Log ``entry``; return once it is durable, with its proof against that batch's checkpoint.

        ``record(conn, log_index)``, if given, runs in the batch's transaction
        on the database thread to write the entry's domain rows (e.g. a
        certificate); it must not commit or roll back. If it raises, the entry
        and its rows are rolled back, the entry gets no index, and this call
        raises that exception. If the batch's transaction fails, every append
        of the batch raises its exception. An append whose caller is cancelled
        may still be logged. Raises :class:`~provex.errors.Unavailable` if the
        sequencer is not running.
        """
        return await self._submit(entry, record)

    async def append_many(self, entries: Iterable[bytes]) -> list[Receipt]:
        """Log several entries (queued together, so they share batches); receipts in order."""
        futures = [self._submit(entry, None) for entry in entries]
        return list(await asyncio.gather(*futures))

    async def append_group(
        self, entries: Sequence[bytes], check: GroupCheck, write: GroupWrite
    ) -> list[Receipt | Exception]:
        """Log ``entries`` as one unit of one batch; each entry's receipt or refusal, in order.

        In the batch's transaction (database thread) ``check(conn)`` first
        answers, for each entry, None to accept it or the exception refusing
        it; the accepted entries then get consecutive indexes and
        ``write(conn, indexes)`` writes every row of the group at once
        (``indexes[i]`` is entry i's log index, None if refused). If ``check``
        or ``write`` raises, the group is rolled back and this call raises
        that exception; if the batch's transaction fails, it raises that.
        Nothing is answered before the batch is durable. A group larger than
        ``max_batch`` makes a batch of its own.
        """
        if not self._accepting:
            raise Unavailable("the log sequencer is not running")
        for entry in entries:
            if not isinstance(entry, bytes):
                raise TypeError(f"a log entry is bytes, not {type(entry).__name__}")
        future: asyncio.Future[list[Receipt | Exception]] = (
            asyncio.get_running_loop().create_future()
        )
        self._put(_Group(entries, check, write, future))
        return await future

    def _submit(self, entry: bytes, record: Record | None) -> asyncio.Future[Receipt]:
        if not self._accepting:
            raise Unavailable("the log sequencer is not running")
        if not isinstance(entry, bytes):
            raise TypeError(f"a log entry is bytes, not {type(entry).__name__}")
        future: asyncio.Future[Receipt] = asyncio.get_running_loop().create_future()
        self._put(_Pending(entry, record, future))
        return future

    def _put(self, item: _Item | None) -> None:
        """Queue ``item``; wake the collector once its batch is full or at the stop marker."""
        self._queue.put_nowait(item)
        if item is not None:
            self._queued += _weight(item)
        waiter = self._waiter
        if (
            waiter is not None
            and not waiter.done()
            and (item is None or self._queued >= self._wanted)
        ):
            waiter.set_result(None)

    def _take(self) -> _Item | None:
        item = self._queue.get_nowait()
        if item is not None:
            self._queued -= _weight(item)
        return item

    async def _wait_for_entries(self, wanted: int, seconds: float) -> None:
        """Return once ``wanted`` entries (or the stop marker) are queued, or after ``seconds``.

        One future and one timer per batch, not a ``wait_for`` task per entry.
        """
        if self._queued >= wanted:
            return
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        self._wanted = wanted
        timer = loop.call_later(seconds, _wake, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    async def _run(self) -> None:
        try:
            stopping = False
            while not stopping:
                first = await self._queue.get()
                if first is None:
                    break
                self._queued -= _weight(first)
                batch, stopping = await self._collect(first)
                await self._commit(batch)
        finally:
            self._accepting = False
            while not self._queue.empty():  # Only if cancelled: nobody will commit these.
                pending = self._take()
                if pending is not None and not pending.future.done():
                    pending.future.set_exception(Unavailable("the log sequencer stopped"))

    async def _collect(self, first: _Item) -> tuple[list[_Item], bool]:
        """The batch starting with ``first``, and whether the stop marker ended it.

        A batch closes once it holds ``max_batch`` entries (a group counts its entries).
        """
        batch = [first]
        entries = _weight(first)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._max_wait
        while entries < self._max_batch:
            if self._queue.empty():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                await self._wait_for_entries(self._max_batch - entries, remaining)
                if self._queue.empty():
                    break
            item = self._take()
            if item is None:
                return batch, True
            batch.append(item)
            entries += _weight(item)
        return batch, False

    async def _commit(self, batch: list[_Item]) -> None:
        """Write ``batch``; answer each waiter. On failure fail them all and reload the state."""
        try:
            state = self._state
            if state is None:  # A previous failure left the state unknown.
                state = self._state = await self._db.run(_load_state)
            outcome = await self._db.run(
                partial(
                    _write_batch,
                    batch=batch,
                    state=state,
                    signer=self._signer,
                    origin=self._origin,
                )
            )
        except Exception as error:
            _log.exception("log batch of %d entries failed", len(batch))
            await self._reload()  # Before answering: a waiter may look at the state at once.
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(error)
            return
        if outcome.state is not None:
            self._state = outcome.state
        for pending, receipt in outcome.receipts:
            if not pending.future.done():
                pending.future.set_result(receipt)
        for group, answers in outcome.groups:
            if not group.future.done():
                group.future.set_result(answers)
        for item, failure in outcome.failures:
            if not item.future.done():
                item.future.set_exception(failure)

    async def _reload(self) -> None:
        """Make the in-memory state the database's again (None, retried later, if that fails)."""
        self._state = None
        try:
            self._state = await self._db.run(_load_state)
        except Exception:
            _log.exception("reloading the log state failed; retrying before the next batch")


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _weight(item: _Item) -> int:
    """Entries an item adds to a batch."""
    return len(item.entries) if isinstance(item, _Group) else 1


def _load_state(conn: sqlite3.Connection) -> _LogState:
    state = _read_state(conn)
    if state is None:
        raise RuntimeError("the log has no state row")
    return state


# ---------------------------------------------------------------- read side


def _check_within(name: str, value: int, size: int) -> None:
    if value < 0:
        raise InvalidArgument(f"{name} {value} is negative")
    if value > size:
        raise InvalidArgument(f"{name} {value} is beyond the log's size {size}")


def _inclusion_proof(conn: sqlite3.Connection, index: int, tree_size: int) -> list[bytes]:
    _check_within("tree_size", tree_size, _read_size(conn))
    if not 0 <= index < tree_size:
        raise InvalidArgument(f"leaf index {index} is not in a tree of size {tree_size}")
    lookup = partial(_stored_hash, conn)
    return proof_from_ranges(
        inclusion_proof_ranges(index, tree_size), partial(_subtree_hash, lookup)
    )


def _latest_proofs(
    conn: sqlite3.Connection, indexes: Sequence[int]
) -> tuple[str, list[list[bytes]]]:
    """The latest checkpoint and each leaf's inclusion proof against it (one read snapshot)."""
    conn.execute("BEGIN")
    try:
        note = _latest_checkpoint(conn)
        size = _checkpoint_text(note).size
        hashes: dict[_Range, bytes] = {}

        def lookup(start: int, end: int) -> bytes:
            value = hashes.get((start, end))
            if value is None:
                value = hashes[start, end] = _stored_hash(conn, start, end)
            return value

        def subtree_hash(start: int, end: int) -> bytes:
            value = hashes.get((start, end))
            if value is None:
                value = hashes[start, end] = _subtree_hash(lookup, start, end)
            return value

        proofs: list[list[bytes]] = []
        for index in indexes:
            if not 0 <= index < size:
                raise InvalidArgument(f"leaf index {index} is not in a tree of size {size}")
            proofs.append(proof_from_ranges(inclusion_proof_ranges(index, size), subtree_hash))
    finally:
        conn.execute("COMMIT")
    return note, proofs


def _consistency_proof(conn: sqlite3.Connection, size1: int, size2: int) -> list[bytes]:
    _check_within("size2", size2, _read_size(conn))
    if size1 < 1:
        raise InvalidArgument(f"size1 {size1}: a consistency proof starts from size 1 or more")
    if size1 > size2:
        raise InvalidArgument(f"size1 {size1} is greater than size2 {size2}")
    lookup = partial(_stored_hash, conn)
    return proof_from_ranges(consistency_proof_ranges(size1, size2), partial(_subtree_hash, lookup))


def _entries(conn: sqlite3.Connection, start: int, end: int, limit: int) -> list[bytes]:
    size = _read_size(conn)
    _check_within("end", end, size)
    if not 0 <= start <= end:
        raise InvalidArgument(f"start {start} is not in [0, end {end}]")
    end = min(end, start + limit)
    rows = conn.execute(
        "SELECT entry FROM log_entries WHERE idx >= ? AND idx < ? ORDER BY idx", (start, end)
    ).fetchall()
    if len(rows) != end - start:
        raise RuntimeError(f"log storage lacks entries in [{start}, {end})")
    return [bytes(row[0]) for row in rows]


def _latest_checkpoint(conn: sqlite3.Connection) -> str:
    row = conn.execute("SELECT checkpoint FROM log_state WHERE id = 1").fetchone()
    if row is None:
        raise NotFound("the log has no checkpoint yet (its sequencer never started)")
    return str(row[0])


def _checkpoint_at(conn: sqlite3.Connection, size: int) -> str | None:
    row = conn.execute("SELECT note FROM log_checkpoints WHERE size = ?", (size,)).fetchone()
    return None if row is None else str(row[0])


def _leaf_index(conn: sqlite3.Connection, value: bytes) -> int | None:
    row = conn.execute("SELECT min(idx) FROM log_entries WHERE leaf_hash = ?", (value,)).fetchone()
    return None if row is None or row[0] is None else int(row[0])


class LogReader:
    """Read side of the log for monitors, auditors and bundles; any Database, read-only too.

    Sizes are taken from the committed tree state; a request beyond it
    raises :class:`~provex.errors.InvalidArgument`. Each call is one query
    function on the database thread; proofs read O(log size) rows.
    """

    def __init__(self, db: Database, *, max_entries: int = MAX_ENTRIES_PER_CALL) -> None:
        """A reader over ``db``; :meth:`entries` returns at most ``max_entries`` per call."""
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self._db = db
        self._max_entries = max_entries

    async def size(self) -> int:
        """Entries committed (0 before the sequencer first started)."""
        return await self._db.run(_read_size)

    async def latest_checkpoint(self) -> str:
        """The latest signed checkpoint note; NotFound before the sequencer first started."""
        return await self._db.run(_latest_checkpoint)

    async def checkpoint_at(self, size: int) -> str | None:
        """The checkpoint signed for ``size``, or None if no batch ended at that size."""
        return await self._db.run(partial(_checkpoint_at, size=size))

    async def inclusion_proof(self, index: int, tree_size: int) -> list[bytes]:
        """RFC 6962 inclusion proof of leaf ``index`` in the tree of the first ``tree_size``."""
        return await self._db.run(partial(_inclusion_proof, index=index, tree_size=tree_size))

    async def latest_proofs(self, indexes: Sequence[int]) -> tuple[str, list[list[bytes]]]:
        """The latest checkpoint and, against it, the inclusion proof of each leaf index.

        One query function: subtree hashes shared by the proofs are read once.
        """
        return await self._db.run(partial(_latest_proofs, indexes=list(indexes)))

    async def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        """RFC 6962 consistency proof from the tree of ``size1`` to that of ``size2``.

        Requires ``1 <= size1 <= size2 <= size`` (equal sizes: an empty proof).
        """
        return await self._db.run(partial(_consistency_proof, size1=size1, size2=size2))

    async def entries(self, start: int, end: int) -> list[bytes]:
        """Entries ``start`` to ``end`` (exclusive), at most ``max_entries`` of them.

        Like CT's get-entries, a longer range is cut short: page on from
        ``start + len(result)``.
        """
        return await self._db.run(partial(_entries, start=start, end=end, limit=self._max_entries))

    async def leaf_index(self, leaf_hash: bytes) -> int | None:
        """The (first) index whose leaf hash is ``leaf_hash``, or None if no entry has it."""
        if len(leaf_hash) != HASH_SIZE:
            raise InvalidArgument(f"leaf_hash has {len(leaf_hash)} bytes, want {HASH_SIZE}")
        return await self._db.run(partial(_leaf_index, value=leaf_hash))


# ---------------------------------------------------------------- offline verification


@dataclass(frozen=True)
class LogVerification:
    """Result of :func:`verify_log`: what was checked and every problem found."""

    entries: int
    """Entries whose hashes were recomputed."""
    checkpoints: int
    """Stored checkpoints examined."""
    problems: tuple[str, ...]
    """One line per problem, naming the entry, node or checkpoint (the first few hundred)."""
    problem_count: int
    """All problems found, including those beyond :data:`MAX_REPORTED_PROBLEMS`."""

    @property
    def ok(self) -> bool:
        """Whether the log is intact."""
        return self.problem_count == 0


@dataclass
class _Problems:
    lines: list[str] = field(default_factory=list)
    count: int = 0

    def add(self, line: str) -> None:
        self.count += 1
        if len(self.lines) < MAX_REPORTED_PROBLEMS:
            self.lines.append(line)


def verify_log(path: Path, verifier: NoteVerifier, origin: str) -> LogVerification:
    """Check the log in the database at ``path`` against its own entries and ``verifier``.

    Recomputes the tree from every stored entry's bytes, streaming them in
    one read transaction (a live log can be checked; its writer is not
    blocked), and checks: that indexes are dense; each stored leaf hash; each
    stored perfect node (present, equal, and no extra ones); each stored
    checkpoint (signed by ``verifier`` for ``origin``, for the size it is
    stored under, with the root of the recomputed tree at that size); and the
    tree state row. Synchronous: it is a CLI action.
    """
    problems = _Problems()
    conn = open_connection(path, readonly=True)
    try:
        # The log's tables are migration 1, which never changes: any later version will do.
        if schema_version(conn) < 1:
            raise FailedPrecondition(f"{path} holds no transparency log (schema version 0)")
        conn.execute("BEGIN")  # One snapshot for every query below.
        compact, checkpoints, complete = _verify_tree(conn, verifier, origin, problems)
        if complete:  # After a gap the tree is unknown: nodes and state cannot be judged.
            _verify_extra_nodes(conn, compact.size, problems)
            _verify_state(conn, compact, problems)
        conn.execute("COMMIT")
    finally:
        conn.close()
    return LogVerification(compact.size, checkpoints, tuple(problems.lines), problems.count)


def _verify_tree(
    conn: sqlite3.Connection, verifier: NoteVerifier, origin: str, problems: _Problems
) -> tuple[CompactRange, int, bool]:
    """Stream entries and checkpoints together; return (the tree, checkpoints seen, no gap)."""
    compact = CompactRange()

    def visit(start: int, end: int, value: bytes) -> None:
        if end - start < 2:
            return
        row = conn.execute(
            "SELECT hash FROM log_nodes WHERE start = ? AND end = ?", (start, end)
        ).fetchone()
        if row is None:
            problems.add(f"node [{start}, {end}): missing")
        elif bytes(row[0]) != value:
            problems.add(f"node [{start}, {end}): stored hash differs from the entries' tree")

    entries = conn.execute("SELECT idx, entry, leaf_hash FROM log_entries ORDER BY idx")
    checkpoints = conn.execute("SELECT size, note FROM log_checkpoints ORDER BY size")
    complete = True
    examined = 0
    for size, note in checkpoints:
        examined += 1
        while complete and compact.size < size:
            row = entries.fetchone()
            if row is None:
                break
            complete = _verify_entry(compact, row, visit, problems)
        if compact.size < size:
            why = "an entry is missing before it" if not complete else "beyond the stored entries"
            problems.add(f"checkpoint at size {size}: {why} (checked up to {compact.size})")
            continue
        _verify_checkpoint(
            size=int(size),
            note=str(note),
            root=compact.root(),
            verifier=verifier,
            origin=origin,
            problems=problems,
        )
    for row in entries:  # Entries after the last checkpoint.
        if not complete:
            break
        complete = _verify_entry(compact, row, visit, problems)
    if examined == 0:
        problems.add("the log has no checkpoint")
    return compact, examined, complete


def _verify_entry(
    compact: CompactRange,
    row: tuple[int, bytes, bytes],
    visit: Callable[[int, int, bytes], None],
    problems: _Problems,
) -> bool:
    """Add one stored entry to ``compact``; False (and a problem) if its index leaves a gap."""
    index, entry, stored = row
    if index != compact.size:
        problems.add(f"entry {compact.size}: missing (the next stored entry is {index})")
        return False
    if not isinstance(entry, bytes):
        problems.add(f"entry {index}: stored as {type(entry).__name__}, not bytes")
        entry = str(entry).encode("utf-8", "surrogateescape")
    value = leaf_hash(entry)
    if stored != value:
        problems.add(f"entry {index}: stored leaf hash does not match its bytes")
    compact.append(value, visit)
    return True


def _verify_checkpoint(
    *,
    size: int,
    note: str,
    root: bytes,
    verifier: NoteVerifier,
    origin: str,
    problems: _Problems,
) -> None:
    try:
        checkpoint = verify_checkpoint(note, verifier, origin=origin)
    except VerificationError as error:
        problems.add(f"checkpoint at size {size}: {error}")
        return
    if checkpoint.size != size:
        problems.add(f"checkpoint at size {size}: its note is for size {checkpoint.size}")
    elif checkpoint.root_hash != root:
        problems.add(f"checkpoint at size {size}: root differs from the entries' tree")


def _verify_extra_nodes(conn: sqlite3.Connection, size: int, problems: _Problems) -> None:
    """Every stored node must be one the entries' tree has (those were compared already)."""
    for start, end in conn.execute("SELECT start, end FROM log_nodes ORDER BY start, end"):
        if end - start < 2 or not is_perfect(start, end):
            problems.add(f"node [{start}, {end}): not a perfect subtree of width 2 or more")
        elif end > size:
            problems.add(f"node [{start}, {end}): beyond the log's {size} entries")


def _verify_state(conn: sqlite3.Connection, compact: CompactRange, problems: _Problems) -> None:
    """The state row must hold the recomputed size and frontier and the latest checkpoint."""
    row = conn.execute(
        "SELECT size, compact_range, checkpoint FROM log_state WHERE id = 1"
    ).fetchone()
    if row is None:
        problems.add("log state: missing")
        return
    size, frontier, note = row
    if size != compact.size:
        problems.add(f"log state: size {size}, but the log has {compact.size} entries")
    elif bytes(frontier) != compact.to_bytes():
        problems.add("log state: compact range differs from the entries' tree")
    latest = conn.execute("SELECT note FROM log_checkpoints ORDER BY size DESC LIMIT 1").fetchone()
    if latest is None or latest[0] != note:
        problems.add("log state: its checkpoint is not the latest stored checkpoint")
