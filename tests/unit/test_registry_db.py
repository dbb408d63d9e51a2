"""Tests of registry.db: the dedicated-thread Database, its pragmas and schema migrations."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from provex.errors import FailedPrecondition, NotFound, Unavailable
from registry.db import (
    BUSY_TIMEOUT_MS,
    MIGRATIONS,
    Database,
    Migration,
    connect,
    migrate,
    schema_version,
    transaction,
)

LOG_TABLES = {"log_entries", "log_nodes", "log_state", "log_checkpoints"}


def tables(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'").fetchall()
    return {name for (name,) in rows}


def recorded_versions(conn: sqlite3.Connection) -> list[int]:
    rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    return [version for (version,) in rows]


# ---------------------------------------------------------------- migrations


def test_migration_versions_are_consecutive_from_one() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert all(m.name and m.sql.strip() for m in MIGRATIONS)


def test_fresh_database_gets_every_migration(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "fresh.db", isolation_level=None)
    assert schema_version(conn) == 0
    assert migrate(conn, MIGRATIONS) == [m.version for m in MIGRATIONS]
    assert recorded_versions(conn) == [m.version for m in MIGRATIONS]
    assert schema_version(conn) == len(MIGRATIONS)
    assert tables(conn) >= LOG_TABLES | {"schema_migrations"}
    indexes = {row[1] for row in conn.execute("PRAGMA index_list(log_entries)")}
    assert "log_entries_by_leaf_hash" in indexes
    conn.close()


def test_migrating_again_is_a_no_op(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "again.db", isolation_level=None)
    migrate(conn, MIGRATIONS)
    before = conn.execute("SELECT * FROM schema_migrations").fetchall()
    assert migrate(conn, MIGRATIONS) == []
    assert conn.execute("SELECT * FROM schema_migrations").fetchall() == before
    conn.close()


def test_new_migrations_are_applied_on_top(tmp_path: Path) -> None:
    extended = (*MIGRATIONS, Migration(len(MIGRATIONS) + 1, "widgets", "CREATE TABLE w (a);"))
    conn = sqlite3.connect(tmp_path / "extend.db", isolation_level=None)
    migrate(conn, MIGRATIONS)
    assert migrate(conn, extended) == [len(MIGRATIONS) + 1]
    assert "w" in tables(conn)
    conn.close()


def test_database_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    conn = connect(path, migrations=MIGRATIONS)
    newer = len(MIGRATIONS) + 1
    conn.execute(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, 'future', 'now')",
        (newer,),
    )
    with pytest.raises(FailedPrecondition, match=f"version {newer} is newer than this code"):
        migrate(conn, MIGRATIONS)
    conn.close()
    for readonly in (False, True):
        with pytest.raises(FailedPrecondition, match="newer than this code"):
            connect(path, readonly=readonly, migrations=MIGRATIONS).close()


def test_failing_migration_leaves_the_previous_version(tmp_path: Path) -> None:
    broken = (
        *MIGRATIONS,
        Migration(
            len(MIGRATIONS) + 1, "broken", "CREATE TABLE half (a); INSERT INTO nowhere VALUES (1);"
        ),
    )
    conn = sqlite3.connect(tmp_path / "broken.db", isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="nowhere"):
        migrate(conn, broken)
    assert schema_version(conn) == len(MIGRATIONS)
    assert "half" not in tables(conn)
    assert not conn.in_transaction
    conn.close()


def test_migration_sql_may_hold_triggers_and_semicolons_in_literals(tmp_path: Path) -> None:
    sql = """
        CREATE TABLE notes (body TEXT);  -- a comment; with a semicolon
        CREATE TABLE audit (body TEXT);
        CREATE TRIGGER notes_audit AFTER INSERT ON notes BEGIN
            INSERT INTO audit VALUES ('saw; ' || new.body);
            INSERT INTO audit VALUES ('twice');
        END;
        INSERT INTO notes VALUES ('a;b')
    """
    conn = sqlite3.connect(tmp_path / "trigger.db", isolation_level=None)
    migrate(conn, (*MIGRATIONS, Migration(len(MIGRATIONS) + 1, "notes", sql)))
    assert conn.execute("SELECT body FROM audit ORDER BY rowid").fetchall() == [
        ("saw; a;b",),
        ("twice",),
    ]
    conn.close()


@pytest.mark.parametrize(
    "versions", [(2,), (1, 3), (1, 1)], ids=["starts at 2", "gap", "duplicate"]
)
def test_migration_versions_must_be_consecutive(tmp_path: Path, versions: tuple[int, ...]) -> None:
    migrations = [Migration(v, f"m{i}", "SELECT 1;") for i, v in enumerate(versions)]
    conn = sqlite3.connect(tmp_path / "bad.db", isolation_level=None)
    with pytest.raises(ValueError, match="consecutive"):
        migrate(conn, migrations)
    conn.close()


def test_transaction_rolls_back_when_the_block_raises(tmp_path: Path) -> None:
    conn = connect(tmp_path / "tx.db", migrations=MIGRATIONS)
    conn.execute("CREATE TABLE t (a)")
    with pytest.raises(RuntimeError, match="boom"), transaction(conn):
        conn.execute("INSERT INTO t VALUES (1)")
        raise RuntimeError("boom")
    with transaction(conn):
        conn.execute("INSERT INTO t VALUES (2)")
    assert conn.execute("SELECT a FROM t").fetchall() == [(2,)]
    conn.close()


# ---------------------------------------------------------------- Database


async def test_database_pragmas_and_dedicated_thread(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "reg.db", migrations=MIGRATIONS)
    try:

        def pragmas(conn: sqlite3.Connection) -> tuple[list[object], int]:
            values = [
                conn.execute(f"PRAGMA {name}").fetchone()[0]
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            ]
            return values, threading.get_ident()

        values, thread = await db.run(pragmas)
        assert values == ["wal", 2, 1, BUSY_TIMEOUT_MS]  # synchronous 2 is FULL
        assert thread != threading.get_ident()
        threads = await asyncio.gather(
            *(db.run(lambda _: threading.get_ident()) for _ in range(20))
        )
        assert set(threads) == {thread}
        assert await db.run(schema_version) == len(MIGRATIONS)
    finally:
        await db.close()


async def test_database_transaction_commits_or_rolls_back(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "tx.db", migrations=MIGRATIONS)
    try:
        await db.run(lambda conn: conn.execute("CREATE TABLE t (a UNIQUE)"))
        await db.transaction(lambda conn: conn.execute("INSERT INTO t VALUES (1)"))

        def insert_twice(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO t VALUES (2)")
            conn.execute("INSERT INTO t VALUES (1)")

        with pytest.raises(sqlite3.IntegrityError):
            await db.transaction(insert_twice)
        assert await db.run(lambda conn: conn.execute("SELECT a FROM t").fetchall()) == [(1,)]
    finally:
        await db.close()


async def test_closed_database_refuses_work(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "closed.db", migrations=MIGRATIONS)
    await db.close()
    await db.close()  # Harmless.
    with pytest.raises(Unavailable, match="closed"):
        await db.run(lambda conn: None)


async def test_readonly_database_reads_but_never_writes(tmp_path: Path) -> None:
    path = tmp_path / "ro.db"
    with pytest.raises(NotFound, match="no database"):
        await Database.open(path, readonly=True, migrations=MIGRATIONS)
    writer = await Database.open(path, migrations=MIGRATIONS)
    reader = await Database.open(path, readonly=True, migrations=MIGRATIONS)
    try:
        assert reader.readonly and not writer.readonly
        await writer.transaction(
            lambda conn: conn.execute("INSERT INTO log_checkpoints VALUES (0, 'x')")
        )
        rows = await reader.run(
            lambda conn: conn.execute("SELECT * FROM log_checkpoints").fetchall()
        )
        assert rows == [(0, "x")]
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await reader.run(lambda conn: conn.execute("DELETE FROM log_checkpoints"))
    finally:
        await reader.close()
        await writer.close()


async def test_readonly_database_refuses_an_unmigrated_file(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    sqlite3.connect(path).close()
    with pytest.raises(FailedPrecondition, match="older than this code"):
        await Database.open(path, readonly=True, migrations=MIGRATIONS)


async def test_reads_do_not_queue_behind_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "concurrent.db"
    writer = await Database.open(path, migrations=MIGRATIONS)
    reader = await Database.open(path, readonly=True, migrations=MIGRATIONS)
    release = threading.Event()
    try:

        def long_write(conn: sqlite3.Connection) -> bool:
            with transaction(conn):
                conn.execute("INSERT INTO log_checkpoints VALUES (0, 'uncommitted')")
                return release.wait(timeout=10)

        write = asyncio.create_task(writer.run(long_write))
        await asyncio.sleep(0.05)  # The writer now holds its write transaction open.
        rows = await asyncio.wait_for(
            reader.run(lambda conn: conn.execute("SELECT * FROM log_checkpoints").fetchall()), 5
        )
        assert rows == []  # The reader sees the last committed state, without waiting.
        release.set()
        assert await write  # The writer was still waiting: the read did not queue behind it.
    finally:
        release.set()
        await reader.close()
        await writer.close()
