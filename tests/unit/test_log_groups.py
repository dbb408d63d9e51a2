"""Tests of Sequencer.append_group, insert_rows and Publisher's group signing (registry).

A group is many entries appended as one unit of one batch: its check refuses
entries (they get no index), its write gets every accepted entry's index and
writes all rows at once, and a failing check or write drops the group alone.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.message import Message

from provex import documents
from provex.checkpoint import NoteSigner, verify_checkpoint
from provex.envelope import SigningKey
from provex.merkle import leaf_hash, verify_inclusion
from provex.v1 import dataset_pb2, registry_pb2, trust_pb2
from registry.db import MIGRATIONS, Database
from registry.publication import GroupSigner
from registry.transparency import (
    GroupCheck,
    GroupWrite,
    LogReader,
    Receipt,
    Sequencer,
    insert_rows,
    verify_log,
)

ORIGIN = "registry.provex.test/log"
ROWS = "CREATE TABLE rows (idx INTEGER PRIMARY KEY REFERENCES log_entries(idx), name TEXT UNIQUE)"


@pytest.fixture(scope="module")
def signer() -> NoteSigner:
    return NoteSigner.generate("registry.provex.test")


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(tmp_path / "registry.db", migrations=MIGRATIONS)
    await database.run(lambda conn: conn.execute(ROWS))
    yield database
    await database.close()


def check_receipt(receipt: Receipt, entry: bytes, signer: NoteSigner) -> None:
    checkpoint = verify_checkpoint(receipt.checkpoint, signer.verifier(), origin=ORIGIN)
    assert checkpoint.size == receipt.tree_size
    verify_inclusion(
        leaf_hash(entry),
        receipt.log_index,
        receipt.tree_size,
        receipt.inclusion_proof,
        checkpoint.root_hash,
    )


class Refuse(Exception):
    """A check's refusal of one entry."""


def group_of(
    names: Sequence[str], *, fail_write: bool = False
) -> tuple[list[bytes], GroupCheck, GroupWrite]:
    """Entries named ``names``; a check refusing names starting with "no", a write of rows."""
    entries = [name.encode() for name in names]

    def check(conn: sqlite3.Connection) -> list[Exception | None]:
        return [Refuse(name) if name.startswith("no") else None for name in names]

    def write(conn: sqlite3.Connection, indexes: Sequence[int | None]) -> None:
        rows = [(i, n) for i, n in zip(indexes, names, strict=True) if i is not None]
        insert_rows(conn, "INSERT INTO rows (idx, name) VALUES", rows)
        if fail_write:
            raise ValueError("write failed after its rows")

    return entries, check, write


async def stored_rows(db: Database) -> list[tuple[int, str, bytes]]:
    return await db.run(
        lambda conn: conn.execute(
            "SELECT r.idx, r.name, e.entry FROM rows r JOIN log_entries e USING (idx) "
            "ORDER BY r.idx"
        ).fetchall()
    )


async def test_group_refusals_get_no_index_and_rows_commit_with_entries(
    db: Database, signer: NoteSigner
) -> None:
    sequencer = Sequencer(db, signer, ORIGIN, max_wait=0.01)
    await sequencer.start()
    entries, check, write = group_of(["a", "no-1", "b", "c", "no-2", "d"])
    before, answers = await asyncio.gather(
        sequencer.append(b"plain"), sequencer.append_group(entries, check, write)
    )
    await sequencer.stop()

    assert before.log_index == 0
    kinds = ["Receipt", "Refuse", "Receipt", "Receipt", "Refuse", "Receipt"]
    assert [type(a).__name__ for a in answers] == kinds
    receipts = [(e, a) for e, a in zip(entries, answers, strict=True) if isinstance(a, Receipt)]
    assert [a.log_index for _, a in receipts] == [1, 2, 3, 4]  # Dense, refusals skipped.
    assert len({a.checkpoint for _, a in receipts} | {before.checkpoint}) == 1  # One batch.
    for entry, receipt in receipts:
        check_receipt(receipt, entry, signer)
    assert await stored_rows(db) == [(1, "a", b"a"), (2, "b", b"b"), (3, "c", b"c"), (4, "d", b"d")]
    assert verify_log(db.path, signer.verifier(), ORIGIN).ok


@pytest.mark.parametrize(
    ("names", "fail_write", "error"),
    [
        (["x", "y"], True, ValueError),  # The write raises after inserting rows.
        (["x", "taken"], False, sqlite3.IntegrityError),  # A row violates UNIQUE.
    ],
)
async def test_a_failing_group_is_dropped_alone(
    db: Database,
    signer: NoteSigner,
    names: list[str],
    fail_write: bool,
    error: type[Exception],
) -> None:
    sequencer = Sequencer(db, signer, ORIGIN, max_wait=0.01)
    await sequencer.start()
    first = group_of(["taken"])
    await sequencer.append_group(*first)
    bad = group_of(names, fail_write=fail_write)
    good = group_of(["g1", "g2"])
    results = await asyncio.gather(
        sequencer.append_group(*bad),
        sequencer.append_group(*good),
        return_exceptions=True,
    )
    await sequencer.stop()
    assert isinstance(results[0], error)
    assert isinstance(results[1], list)
    assert [a.log_index for a in results[1] if isinstance(a, Receipt)] == [1, 2]
    assert await stored_rows(db) == [(0, "taken", b"taken"), (1, "g1", b"g1"), (2, "g2", b"g2")]
    assert verify_log(db.path, signer.verifier(), ORIGIN).ok


async def test_a_group_of_refusals_only_adds_nothing(db: Database, signer: NoteSigner) -> None:
    sequencer = Sequencer(db, signer, ORIGIN, max_wait=0)
    await sequencer.start()
    answers = await sequencer.append_group(*group_of(["no-a", "no-b"]))
    assert [str(a) for a in answers] == ["no-a", "no-b"]
    assert sequencer.size == 0
    receipt = await sequencer.append(b"next")
    await sequencer.stop()
    assert receipt.log_index == 0


async def test_a_group_larger_than_max_batch_is_one_batch(db: Database, signer: NoteSigner) -> None:
    sequencer = Sequencer(db, signer, ORIGIN, max_batch=4, max_wait=0.01)
    await sequencer.start()
    names = [f"e{n}" for n in range(10)]
    answers, single = await asyncio.gather(
        sequencer.append_group(*group_of(names)),
        sequencer.append(b"after"),
    )
    await sequencer.stop()
    assert {a.tree_size for a in answers if isinstance(a, Receipt)} == {10}
    assert single.log_index == 10
    reader = LogReader(db)
    note, proofs = await reader.latest_proofs(range(11))
    assert note == single.checkpoint
    checkpoint = verify_checkpoint(note, signer.verifier(), origin=ORIGIN)
    for index, (entry, proof) in enumerate(
        zip([*group_of(names)[0], b"after"], proofs, strict=True)
    ):
        verify_inclusion(leaf_hash(entry), index, 11, proof, checkpoint.root_hash)


@pytest.mark.parametrize("count", [1, 7, 1200])
def test_insert_rows_writes_every_row_in_order(tmp_path: Path, count: int) -> None:
    conn = sqlite3.connect(tmp_path / "rows.db", isolation_level=None)
    conn.execute("CREATE TABLE t (a INTEGER, b BLOB, c TEXT)")
    rows = [(n, bytes([n % 256]) * 3, f"row {n}") for n in range(count)]
    insert_rows(conn, "INSERT INTO t (a, b, c) VALUES", rows)
    insert_rows(conn, "INSERT INTO t (a, b, c) VALUES", [])
    assert conn.execute("SELECT a, b, c FROM t ORDER BY rowid").fetchall() == rows
    conn.close()


@pytest.mark.parametrize(
    "document",
    [
        dataset_pb2.DatasetCertificate(dataset_id="440100-2026-0000123-8", version=1),
        dataset_pb2.DatasetCertificate(
            dataset=dataset_pb2.DatasetDescription(title="道路 " * 500, description='\x00"\\')
        ),
        dataset_pb2.StatusStatement(reason="x"),
        registry_pb2.EnrollmentStatement(),
        trust_pb2.TrustRoot(),
    ],
)
def test_group_signer_bytes_are_those_of_sign_document(document: Message) -> None:
    key = SigningKey.of(Ed25519PrivateKey.generate())
    signed = GroupSigner(key, type(document)).envelope(document.SerializeToString())
    assert signed == documents.sign_document(document, [key]).to_json()
