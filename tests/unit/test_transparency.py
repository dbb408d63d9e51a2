"""Tests of registry.transparency: the sequencer, the read side and verify_log.

1. Sequencer: dense indexes under concurrency, receipts that verify against
   their own checkpoint, batching, record callbacks atomic with their entry,
   failed batches, draining on stop, restart.
2. Durability: a child process appending is killed with SIGKILL; every
   acknowledged entry is in the reopened log.
3. LogReader: every inclusion and consistency proof of a small log verifies;
   requests beyond the log are refused.
4. verify_log: a clean log passes; each kind of tampering is named.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from provex.checkpoint import Checkpoint, NoteSigner, sign_checkpoint, verify_checkpoint
from provex.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from provex.merkle import (
    EMPTY_ROOT,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root,
    verify_consistency,
    verify_inclusion,
)
from registry.db import MIGRATIONS, Database, Migration
from registry.transparency import LogReader, Receipt, Sequencer, verify_log

ORIGIN = "registry.provex.test/log"


@pytest.fixture(scope="module")
def signer() -> NoteSigner:
    return NoteSigner.generate("registry.provex.test")


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(tmp_path / "registry.db", migrations=MIGRATIONS)
    yield database
    await database.close()


def open_note(note: str, signer: NoteSigner) -> Checkpoint:
    return verify_checkpoint(note, signer.verifier(), origin=ORIGIN)


def check_receipt(receipt: Receipt, entry: bytes, signer: NoteSigner) -> None:
    checkpoint = open_note(receipt.checkpoint, signer)
    assert checkpoint.size == receipt.tree_size
    verify_inclusion(
        leaf_hash(entry),
        receipt.log_index,
        receipt.tree_size,
        receipt.inclusion_proof,
        checkpoint.root_hash,
    )


async def checkpoint_sizes(db: Database) -> list[int]:
    rows = await db.run(
        lambda conn: conn.execute("SELECT size FROM log_checkpoints ORDER BY size").fetchall()
    )
    return [size for (size,) in rows]


async def build_log(
    path: Path, signer: NoteSigner, entries: list[bytes], *, max_batch: int = 5
) -> None:
    """A closed log at ``path`` holding ``entries``, in batches of ``max_batch``."""
    database = await Database.open(path, migrations=MIGRATIONS)
    sequencer = Sequencer(database, signer, ORIGIN, max_batch=max_batch, max_wait=0)
    await sequencer.start()
    await sequencer.append_many(entries)
    await sequencer.stop()
    await database.close()


# ---------------------------------------------------------------- sequencer


async def test_new_log_has_a_signed_size_zero_checkpoint(db: Database, signer: NoteSigner) -> None:
    reader = LogReader(db)
    with pytest.raises(NotFound, match="no checkpoint yet"):
        await reader.latest_checkpoint()
    sequencer = Sequencer(db, signer, ORIGIN)
    await sequencer.start()
    await sequencer.stop()
    note = await reader.latest_checkpoint()
    assert open_note(note, signer) == Checkpoint(ORIGIN, 0, EMPTY_ROOT)
    assert await reader.checkpoint_at(0) == note
    assert await reader.size() == 0


async def test_concurrent_appends_get_dense_indexes_and_proofs(
    db: Database, signer: NoteSigner
) -> None:
    sequencer = Sequencer(db, signer, ORIGIN)
    await sequencer.start()
    entries = [b"entry %d" % n for n in range(1000)]
    receipts = await asyncio.gather(*(sequencer.append(entry) for entry in entries))
    await sequencer.stop()

    assert sorted(r.log_index for r in receipts) == list(range(1000))
    for entry, receipt in zip(entries, receipts, strict=True):
        check_receipt(receipt, entry, signer)
    sizes = await checkpoint_sizes(db)
    assert sizes[-1] == 1000
    assert len(sizes) < 20  # Batching: a handful of checkpoints, not one per entry.
    assert {r.tree_size for r in receipts} <= set(sizes)

    reader = LogReader(db)
    stored = [e for start in range(0, 1000, 300) for e in await reader.entries(start, 1000)]
    assert [stored[r.log_index] for r in receipts] == entries


async def test_small_batches_each_get_their_checkpoint(db: Database, signer: NoteSigner) -> None:
    sequencer = Sequencer(db, signer, ORIGIN, max_batch=7, max_wait=0)
    await sequencer.start()
    entries = [b"small %d" % n for n in range(100)]
    receipts = await asyncio.gather(*(sequencer.append(entry) for entry in entries))
    await sequencer.stop()

    for entry, receipt in zip(entries, receipts, strict=True):
        check_receipt(receipt, entry, signer)
    sizes = await checkpoint_sizes(db)
    assert sizes == [0, *range(7, 100, 7), 100]
    reader = LogReader(db)
    for older, newer in itertools.pairwise(sizes[1:]):
        old_note, new_note = await reader.checkpoint_at(older), await reader.checkpoint_at(newer)
        assert old_note is not None and new_note is not None
        verify_consistency(
            older,
            newer,
            await reader.consistency_proof(older, newer),
            open_note(old_note, signer).root_hash,
            open_note(new_note, signer).root_hash,
        )


CERTIFICATES = """
    CREATE TABLE certificates (
        idx  INTEGER PRIMARY KEY REFERENCES log_entries (idx),
        name TEXT NOT NULL UNIQUE
    )
"""


def certify(name: str, *, then_fail: bool = False) -> Callable[[sqlite3.Connection, int], None]:
    def record(conn: sqlite3.Connection, index: int) -> None:
        conn.execute("INSERT INTO certificates (idx, name) VALUES (?, ?)", (index, name))
        if then_fail:
            raise ValueError(f"refused {name}")

    return record


async def test_record_callbacks_commit_with_their_entry_and_fail_alone(
    db: Database, signer: NoteSigner
) -> None:
    await db.run(lambda conn: conn.execute(CERTIFICATES))
    sequencer = Sequencer(db, signer, ORIGIN)
    await sequencer.start()
    await sequencer.append(b"first", certify("taken"))
    calls = {
        b"a": certify("a"),
        b"refused": certify("refused", then_fail=True),  # Raises after writing its row.
        b"b": certify("b"),
        b"duplicate": certify("taken"),  # Violates UNIQUE: sqlite3.IntegrityError.
        b"c": certify("c"),
        b"plain": None,
        b"d": certify("d"),
    }
    results = await asyncio.gather(
        *(sequencer.append(entry, record) for entry, record in calls.items()),
        return_exceptions=True,
    )
    await sequencer.stop()

    outcome = dict(zip(calls, results, strict=True))
    assert isinstance(outcome.pop(b"refused"), ValueError)
    assert isinstance(outcome.pop(b"duplicate"), sqlite3.IntegrityError)
    receipts: dict[bytes, Receipt] = {}
    for entry, result in outcome.items():
        assert isinstance(result, Receipt)
        receipts[entry] = result
    assert [r.log_index for r in receipts.values()] == [1, 2, 3, 4, 5]  # Dense, in queue order.
    assert len({r.checkpoint for r in receipts.values()}) == 1  # One batch.
    for entry, receipt in receipts.items():
        check_receipt(receipt, entry, signer)

    rows = await db.run(
        lambda conn: conn.execute(
            "SELECT c.idx, c.name, e.entry FROM certificates c JOIN log_entries e USING (idx) "
            "ORDER BY c.idx"
        ).fetchall()
    )
    assert rows == [
        (0, "taken", b"first"),
        (1, "a", b"a"),
        (2, "b", b"b"),
        (3, "c", b"c"),
        (5, "d", b"d"),
    ]
    assert await LogReader(db).size() == 6


async def test_batch_whose_callbacks_all_fail_adds_nothing(
    db: Database, signer: NoteSigner
) -> None:
    await db.run(lambda conn: conn.execute(CERTIFICATES))
    sequencer = Sequencer(db, signer, ORIGIN)
    await sequencer.start()
    await sequencer.append(b"kept")
    results = await asyncio.gather(
        *(sequencer.append(b"x%d" % n, certify(f"x{n}", then_fail=True)) for n in range(3)),
        return_exceptions=True,
    )
    assert all(isinstance(result, ValueError) for result in results)
    assert sequencer.size == 1
    receipt = await sequencer.append(b"next")
    await sequencer.stop()
    assert receipt.log_index == 1
    assert await checkpoint_sizes(db) == [0, 1, 2]


class FailingSigner:
    """Signs like ``signer`` except on the call numbered ``fail_on`` (counting from 0)."""

    def __init__(self, signer: NoteSigner, fail_on: int) -> None:
        self._signer = signer
        self._fail_on = fail_on
        self._calls = 0
        self.name = signer.name
        self.key_hash = signer.key_hash

    def sign(self, text: bytes) -> bytes:
        self._calls += 1
        if self._calls - 1 == self._fail_on:
            raise OSError("signing device unplugged")
        return self._signer.sign(text)


def end_the_transaction(conn: sqlite3.Connection, index: int) -> None:
    conn.execute("ROLLBACK")  # Misbehaving callback: breaks the batch's transaction.


async def test_failed_batch_fails_every_waiter_and_reloads_state(
    db: Database, signer: NoteSigner
) -> None:
    # Signature 0 is the size-0 checkpoint, 1 the first batch, 2 the second batch.
    sequencer = Sequencer(db, FailingSigner(signer, fail_on=2), ORIGIN, max_wait=0)
    await sequencer.start()
    await sequencer.append(b"before")
    results = await asyncio.gather(
        *(sequencer.append(b"doomed %d" % n) for n in range(10)), return_exceptions=True
    )
    assert all(isinstance(r, OSError) and "unplugged" in str(r) for r in results)
    assert sequencer.size == 1
    broken = await asyncio.gather(
        sequencer.append(b"doomed too"),
        sequencer.append(b"breaker", end_the_transaction),
        return_exceptions=True,
    )
    assert all(isinstance(r, sqlite3.OperationalError) for r in broken)
    assert sequencer.size == 1

    receipt = await sequencer.append(b"after")
    await sequencer.stop()
    assert receipt.log_index == 1
    check_receipt(receipt, b"after", signer)
    assert await LogReader(db).entries(0, 2) == [b"before", b"after"]
    assert verify_log(db.path, signer.verifier(), ORIGIN).ok


async def test_stop_drains_queued_appends(db: Database, signer: NoteSigner) -> None:
    sequencer = Sequencer(db, signer, ORIGIN, max_batch=64, max_wait=0.05)
    await sequencer.start()
    entries = [b"queued %d" % n for n in range(300)]
    tasks = [asyncio.create_task(sequencer.append(entry)) for entry in entries]
    await asyncio.sleep(0)  # Every task has queued its entry.
    await sequencer.stop()
    assert all(task.done() for task in tasks)
    for entry, task in zip(entries, tasks, strict=True):
        check_receipt(task.result(), entry, signer)
    assert sequencer.size == 300
    with pytest.raises(Unavailable, match="not running"):
        await sequencer.append(b"too late")


async def test_restart_continues_the_same_log(tmp_path: Path, signer: NoteSigner) -> None:
    path = tmp_path / "restart.db"
    await build_log(path, signer, [b"first run %d" % n for n in range(50)], max_batch=9)

    db = await Database.open(path, migrations=MIGRATIONS)
    try:
        sequencer = Sequencer(db, signer, ORIGIN, max_batch=9, max_wait=0)
        await sequencer.start()
        assert sequencer.size == 50
        receipts = await sequencer.append_many([b"second run %d" % n for n in range(30)])
        await sequencer.stop()
        assert [r.log_index for r in receipts] == list(range(50, 80))

        reader = LogReader(db)
        latest = open_note(await reader.latest_checkpoint(), signer)
        assert latest.size == 80
        for size in await checkpoint_sizes(db):
            if size == 0:
                continue
            note = await reader.checkpoint_at(size)
            assert note is not None
            verify_consistency(
                size,
                80,
                await reader.consistency_proof(size, 80),
                open_note(note, signer).root_hash,
                latest.root_hash,
            )
        with pytest.raises(FailedPrecondition, match="origin"):
            await Sequencer(db, signer, "another.origin/log").start()
    finally:
        await db.close()


async def test_sequencer_refuses_a_readonly_database(tmp_path: Path, signer: NoteSigner) -> None:
    await build_log(tmp_path / "ro.db", signer, [])
    reader_db = await Database.open(tmp_path / "ro.db", readonly=True, migrations=MIGRATIONS)
    try:
        with pytest.raises(ValueError, match="writable"):
            Sequencer(reader_db, signer, ORIGIN)
    finally:
        await reader_db.close()


# ---------------------------------------------------------------- durability

CHILD = """
import asyncio, sys
from pathlib import Path
from provex.checkpoint import NoteSigner
from registry.db import MIGRATIONS, Database, Migration
from registry.transparency import Sequencer

async def main(path: str, key: str, origin: str) -> None:
    db = await Database.open(Path(path), migrations=MIGRATIONS)
    sequencer = Sequencer(db, NoteSigner.from_signer_key(key), origin, max_wait=0.001)
    await sequencer.start()
    counter = iter(range(10**9))

    async def worker() -> None:
        for n in counter:
            receipt = await sequencer.append(b"entry %d" % n)
            sys.stdout.write(f"{receipt.log_index} {n}\\n")
            sys.stdout.flush()

    await asyncio.gather(*(worker() for _ in range(8)))

asyncio.run(main(*sys.argv[1:]))
"""


async def test_acknowledged_entries_survive_sigkill(tmp_path: Path, signer: NoteSigner) -> None:
    path = tmp_path / "killed.db"
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        str(path),
        signer.signer_key(),
        ORIGIN,
        stdout=asyncio.subprocess.PIPE,
    )
    acknowledged: dict[int, int] = {}
    try:
        assert child.stdout is not None
        while len(acknowledged) < 400:
            line = await asyncio.wait_for(child.stdout.readline(), 30)
            assert line, f"the child exited early with status {child.returncode}"
            index, n = map(int, line.split())
            acknowledged[index] = n
    finally:
        child.kill()  # SIGKILL: no cleanup, no final checkpoint, mid-batch.
        await child.wait()
    assert child.returncode == -signal.SIGKILL

    db = await Database.open(path, migrations=MIGRATIONS)  # Recovers the WAL of the killed writer.
    try:
        reader = LogReader(db)
        size = await reader.size()
        assert size > max(acknowledged)
        for index, n in acknowledged.items():
            assert await reader.entries(index, index + 1) == [b"entry %d" % n]
        sequencer = Sequencer(db, signer, ORIGIN)
        await sequencer.start()  # The tree state matches the entries: the log goes on.
        assert (await sequencer.append(b"after the crash")).log_index == size
        await sequencer.stop()
    finally:
        await db.close()
    result = verify_log(path, signer.verifier(), ORIGIN)
    assert result.ok, result.problems
    assert result.entries == size + 1


# ---------------------------------------------------------------- reader

READER_ENTRIES = [b"leaf %d" % n for n in range(45)]


@pytest.fixture(scope="module")
async def reader_log(tmp_path_factory: pytest.TempPathFactory, signer: NoteSigner) -> Path:
    path = tmp_path_factory.mktemp("reader") / "reader.db"
    entries = [*READER_ENTRIES, READER_ENTRIES[3]]  # A duplicate entry at index 45.
    await build_log(path, signer, entries, max_batch=4)
    return path


@pytest.fixture
async def reader(reader_log: Path) -> AsyncIterator[LogReader]:
    database = await Database.open(reader_log, readonly=True, migrations=MIGRATIONS)
    yield LogReader(database, max_entries=10)
    await database.close()


async def test_every_inclusion_proof_verifies(reader: LogReader) -> None:
    leaves = [leaf_hash(entry) for entry in [*READER_ENTRIES, READER_ENTRIES[3]]]
    for size in range(1, len(leaves) + 1):
        tree_root = root(leaves[:size])
        for index in range(size):
            proof = await reader.inclusion_proof(index, size)
            assert proof == inclusion_proof(leaves, index, size)
            verify_inclusion(leaves[index], index, size, proof, tree_root)


async def test_every_consistency_proof_verifies(reader: LogReader) -> None:
    leaves = [leaf_hash(entry) for entry in [*READER_ENTRIES, READER_ENTRIES[3]]]
    for size2 in range(1, len(leaves) + 1):
        root2 = root(leaves[:size2])
        for size1 in range(1, size2 + 1):
            proof = await reader.consistency_proof(size1, size2)
            assert proof == consistency_proof(leaves, size1, size2)
            verify_consistency(size1, size2, proof, root(leaves[:size1]), root2)


async def test_entries_are_paged_and_checkpoints_found(
    reader: LogReader, signer: NoteSigner
) -> None:
    assert await reader.entries(0, 46) == READER_ENTRIES[:10]  # Cut at max_entries.
    paged: list[bytes] = []
    while len(paged) < 46:
        paged += await reader.entries(len(paged), 46)
    assert paged == [*READER_ENTRIES, READER_ENTRIES[3]]
    assert await reader.entries(46, 46) == []
    assert await reader.checkpoint_at(45) is None  # Not a batch boundary (batches of 4).
    note = await reader.checkpoint_at(44)
    assert note is not None and open_note(note, signer).size == 44
    assert open_note(await reader.latest_checkpoint(), signer).size == 46


async def test_leaf_index(reader: LogReader) -> None:
    assert await reader.leaf_index(leaf_hash(READER_ENTRIES[7])) == 7
    assert await reader.leaf_index(leaf_hash(READER_ENTRIES[3])) == 3  # The first of two.
    assert await reader.leaf_index(leaf_hash(b"never logged")) is None


OUT_OF_RANGE: dict[str, tuple[str, tuple[Any, ...], str]] = {
    "inclusion: tree size beyond the log": (
        "inclusion_proof",
        (0, 47),
        "tree_size 47 is beyond the log's size 46",
    ),
    "inclusion: index not below the size": (
        "inclusion_proof",
        (10, 10),
        "leaf index 10 is not in a tree of size 10",
    ),
    "inclusion: negative index": ("inclusion_proof", (-1, 10), "leaf index -1"),
    "inclusion: negative tree size": ("inclusion_proof", (0, -1), "tree_size -1 is negative"),
    "consistency: size2 beyond the log": (
        "consistency_proof",
        (1, 50),
        "size2 50 is beyond the log's size 46",
    ),
    "consistency: from the empty tree": ("consistency_proof", (0, 5), "size1 0"),
    "consistency: size1 above size2": (
        "consistency_proof",
        (6, 5),
        "size1 6 is greater than size2 5",
    ),
    "entries: end beyond the log": ("entries", (40, 47), "end 47 is beyond the log's size 46"),
    "entries: start after end": ("entries", (5, 4), "start 5"),
    "entries: negative start": ("entries", (-1, 4), "start -1"),
    "leaf index: not a hash": ("leaf_index", (b"short",), "leaf_hash has 5 bytes"),
}


@pytest.mark.parametrize(
    ("method", "args", "message"), OUT_OF_RANGE.values(), ids=OUT_OF_RANGE.keys()
)
async def test_requests_outside_the_log_are_refused(
    reader: LogReader, method: str, args: tuple[Any, ...], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        await getattr(reader, method)(*args)


# ---------------------------------------------------------------- verify_log

VERIFY_ENTRIES = [b"audited %d" % n for n in range(40)]


@pytest.fixture(scope="module")
async def clean_log(tmp_path_factory: pytest.TempPathFactory, signer: NoteSigner) -> Path:
    path = tmp_path_factory.mktemp("verify") / "clean.db"
    await build_log(path, signer, VERIFY_ENTRIES, max_batch=6)
    return path


@pytest.fixture
def log_copy(clean_log: Path, tmp_path: Path) -> Path:
    """A private copy of the clean log, to tamper with."""
    copy = tmp_path / "copy.db"
    source, target = sqlite3.connect(clean_log), sqlite3.connect(copy)
    source.backup(target)
    source.close()
    target.close()
    return copy


def tamper(path: Path, sql: str, *params: object) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    cursor = conn.execute(sql, params)
    assert cursor.rowcount != 0, "the tampering changed nothing"
    conn.close()


def test_verify_log_passes_a_clean_log(clean_log: Path, signer: NoteSigner) -> None:
    result = verify_log(clean_log, signer.verifier(), ORIGIN)
    assert result.ok, result.problems
    assert result.problems == ()
    assert (result.entries, result.checkpoints) == (40, 8)  # Size 0, then batches of 6.


TAMPERING: dict[str, tuple[str, tuple[object, ...], str]] = {
    "entry bytes edited": (
        "UPDATE log_entries SET entry = ? WHERE idx = 17",
        (b"forged",),
        "entry 17: stored leaf hash does not match its bytes",
    ),
    "entry and its leaf hash edited": (
        "UPDATE log_entries SET entry = ?, leaf_hash = ? WHERE idx = 17",
        (b"forged", leaf_hash(b"forged")),
        "checkpoint at size 18: root differs from the entries' tree",
    ),
    "entry deleted": ("DELETE FROM log_entries WHERE idx = 17", (), "entry 17: missing"),
    "checkpoint note edited": (
        "UPDATE log_checkpoints SET note = replace(note, 'registry.provex.test/log', "
        "'registry.provex.test/lag') WHERE size = 24",
        (),
        "checkpoint at size 24: ",
    ),
    "checkpoint stored under another size": (
        "UPDATE log_checkpoints SET note = (SELECT note FROM log_checkpoints WHERE size = 12) "
        "WHERE size = 24",
        (),
        "checkpoint at size 24: its note is for size 12",
    ),
    "node deleted": ("DELETE FROM log_nodes WHERE start = 16 AND end = 24", (), "node [16, 24)"),
    "node edited": (
        "UPDATE log_nodes SET hash = ? WHERE start = 0 AND end = 32",
        (b"\x00" * 32,),
        "node [0, 32): stored hash differs",
    ),
    "node added": (
        "INSERT INTO log_nodes (start, end, hash) VALUES (3, 5, ?)",
        (b"\x00" * 32,),
        "node [3, 5): not a perfect subtree",
    ),
    "node beyond the log": (
        "INSERT INTO log_nodes (start, end, hash) VALUES (40, 42, ?)",
        (b"\x00" * 32,),
        "node [40, 42): beyond the log's 40 entries",
    ),
    "state rolled back": (
        "UPDATE log_state SET checkpoint = (SELECT note FROM log_checkpoints WHERE size = 36)",
        (),
        "log state: its checkpoint is not the latest",
    ),
}


@pytest.mark.parametrize(("sql", "params", "problem"), TAMPERING.values(), ids=TAMPERING.keys())
def test_verify_log_names_what_was_tampered(
    log_copy: Path, signer: NoteSigner, sql: str, params: tuple[object, ...], problem: str
) -> None:
    tamper(log_copy, sql, *params)
    result = verify_log(log_copy, signer.verifier(), ORIGIN)
    assert not result.ok
    assert result.problem_count == len(result.problems)
    assert any(line.startswith(problem) for line in result.problems), result.problems


def test_verify_log_checks_roots_of_validly_signed_checkpoints(
    log_copy: Path, signer: NoteSigner
) -> None:
    forged = sign_checkpoint(Checkpoint(ORIGIN, 30, b"\x07" * 32), signer)
    tamper(log_copy, "UPDATE log_checkpoints SET note = ? WHERE size = 30", forged)
    result = verify_log(log_copy, signer.verifier(), ORIGIN)
    assert result.problems == ("checkpoint at size 30: root differs from the entries' tree",)


def test_verify_log_with_the_wrong_key_rejects_every_checkpoint(clean_log: Path) -> None:
    stranger = NoteSigner.generate("registry.provex.test")
    result = verify_log(clean_log, stranger.verifier(), ORIGIN)
    assert result.problem_count == 8
    assert all(line.startswith("checkpoint at size") for line in result.problems)


async def test_verify_log_reads_databases_with_later_migrations(
    tmp_path: Path, signer: NoteSigner
) -> None:
    path = tmp_path / "domain.db"
    domain = Migration(len(MIGRATIONS) + 1, "domain tables", "CREATE TABLE members (id);")
    database = await Database.open(path, migrations=(*MIGRATIONS, domain))
    sequencer = Sequencer(database, signer, ORIGIN)
    await sequencer.start()
    await sequencer.append_many([b"one", b"two", b"three"])
    await sequencer.stop()
    await database.close()
    result = verify_log(path, signer.verifier(), ORIGIN)
    assert result.ok, result.problems
    assert result.entries == 3


def test_verify_log_refuses_a_file_without_a_log(tmp_path: Path, signer: NoteSigner) -> None:
    with pytest.raises(NotFound, match="no database"):
        verify_log(tmp_path / "missing.db", signer.verifier(), ORIGIN)
    sqlite3.connect(tmp_path / "empty.db").close()
    with pytest.raises(FailedPrecondition, match="no transparency log"):
        verify_log(tmp_path / "empty.db", signer.verifier(), ORIGIN)
