"""SQLite storage shared by the registry and the node: one connection per thread, migrations.

Each service keeps all its state in one SQLite file and lists its schema as
a tuple of :class:`Migration` (``registry.schema``, ``node.schema``). This
module owns how that file is opened and how its schema evolves; each
service's repositories build on it.

* :class:`Database` is one :mod:`sqlite3` connection owned by one dedicated
  thread. Asyncio code hands it plain functions (``fn(conn) -> T``) with
  :meth:`Database.run` or :meth:`Database.transaction`; they run one at a
  time, in submission order, on that thread, so the connection never crosses
  threads and the event loop never blocks on disk.
* The writer (``readonly=False``) migrates the schema when it opens. Servers
  open a second, read-only instance for queries, so reads never queue behind
  the writer's transactions (WAL lets them read the last committed state
  meanwhile).
* Pragmas: ``journal_mode=WAL``, ``synchronous=FULL`` (a COMMIT returns only
  once it is on disk: nothing is acknowledged before it is durable),
  ``foreign_keys=ON`` and a ``busy_timeout``. Connections are in autocommit
  mode (``isolation_level=None``): transactions are explicit, see
  :func:`transaction`.

Adding a migration
------------------
Append ``Migration(<last version + 1>, "<short name>", <SQL text>)`` to the
service's migrations. Versions are consecutive from 1. Never edit, reorder or
remove a migration that has shipped: databases in the field recorded it as
applied and will not run it again; change the schema with a new migration
instead. The SQL may hold several statements (triggers included); it runs in
one transaction together with its ``schema_migrations`` row, so a migration
is applied entirely or not at all. A database whose version is newer than the
last migration this code knows is refused, never opened.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TypeVar

from provex.errors import FailedPrecondition, NotFound, Unavailable

__all__ = (
    "BUSY_TIMEOUT_MS",
    "Database",
    "Migration",
    "connect",
    "migrate",
    "open_connection",
    "schema_version",
    "transaction",
)

T = TypeVar("T")

BUSY_TIMEOUT_MS = 5_000
"""How long a statement waits for another connection's lock before failing (SQLITE_BUSY)."""
READER_CACHE_KIB = 65_536
"""Page cache of each read-only connection (SQLite's default is 2 MiB)."""


@dataclass(frozen=True)
class Migration:
    """One step of the schema: ``sql`` (one or more statements) takes it to ``version``."""

    version: int
    name: str
    sql: str


_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TEXT NOT NULL
)
"""


# ---------------------------------------------------------------- transactions


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``; ``ROLLBACK`` if the block (or the commit) raises.

    IMMEDIATE takes the write lock up front, so a transaction never fails half
    way because another connection wrote first. The connection must be in
    autocommit mode with no transaction open (as every connection of this
    module is between calls).
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _in_transaction(fn: Callable[[sqlite3.Connection], T], conn: sqlite3.Connection) -> T:
    with transaction(conn):
        return fn(conn)


# ---------------------------------------------------------------- migrations


def _check_migrations(migrations: Sequence[Migration]) -> None:
    for position, migration in enumerate(migrations, start=1):
        if migration.version != position:
            raise ValueError(
                f"migration {migration.name!r} has version {migration.version}, "
                f"want {position}: versions are consecutive from 1"
            )


def _statements(sql: str) -> Iterator[str]:
    """Split a script into single statements for ``execute``.

    ``executescript`` would commit the open transaction first, so migrations
    run statement by statement. :func:`sqlite3.complete_statement` knows
    string literals, comments and trigger bodies, so a ``;`` inside them does
    not split. What follows the last ``;`` is returned as is (blank or a
    comment is harmless; anything else is a statement without its ``;``).
    """
    *pieces, rest = sql.split(";")
    pending = ""
    for piece in pieces:
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            yield pending
            pending = ""
    pending += rest
    if pending.strip():
        yield pending


def schema_version(conn: sqlite3.Connection) -> int:
    """The highest migration version recorded in the database; 0 for a new database."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone()
    if exists is None:
        return 0
    row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
    return int(row[0]) if row is not None and row[0] is not None else 0


def _refuse_newer(version: int, migrations: Sequence[Migration]) -> None:
    known = len(migrations)
    if version > known:
        raise FailedPrecondition(
            f"database schema version {version} is newer than this code knows "
            f"(version {known}); run a newer Provex or restore an older database"
        )


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration]) -> list[int]:
    """Apply the migrations the database lacks, in order; return the versions applied.

    Each migration runs in its own transaction with its ``schema_migrations``
    row (a failing one leaves the database at the previous version). A
    database already up to date is left untouched (returns ``[]``); one whose
    version is newer than ``migrations`` raises
    :class:`~provex.errors.FailedPrecondition`.
    """
    _check_migrations(migrations)
    conn.execute(_MIGRATIONS_TABLE)
    applied: list[int] = []
    for migration in migrations:
        with transaction(conn):
            # Re-read under the write lock: another process may have migrated meanwhile.
            version = schema_version(conn)
            _refuse_newer(version, migrations)
            if migration.version <= version:
                continue
            for statement in _statements(migration.sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, datetime.now(UTC).isoformat()),
            )
        applied.append(migration.version)
    _refuse_newer(schema_version(conn), migrations)
    return applied


# ---------------------------------------------------------------- connections


def open_connection(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open ``path`` with Provex's pragmas, in autocommit mode; no schema check.

    The writer creates the file if needed and switches it to WAL. A read-only
    connection (``mode=ro`` and ``query_only``) needs an existing file (else
    :class:`~provex.errors.NotFound`); writes through it fail. Most callers
    want :func:`connect`, which also migrates or checks the schema.
    """
    if readonly and not path.exists():
        raise NotFound(f"no database at {path}")
    if readonly:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    else:
        conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = FULL")
        if readonly:
            conn.execute("PRAGMA query_only = ON")
            # 64 MiB of page cache per reader: search and log reads revisit the same pages.
            conn.execute(f"PRAGMA cache_size = -{READER_CACHE_KIB}")
        else:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                raise FailedPrecondition(f"database {path} cannot use WAL journaling ({mode})")
    except BaseException:
        conn.close()
        raise
    return conn


def connect(
    path: Path, *, migrations: Sequence[Migration], readonly: bool = False
) -> sqlite3.Connection:
    """:func:`open_connection`, then migrate (writer) or check the schema version (read-only).

    The writer applies the migrations the database lacks. A read-only
    connection requires the database to be at exactly the last version of
    ``migrations`` (else :class:`~provex.errors.FailedPrecondition`). The
    connection belongs to the calling thread.
    """
    conn = open_connection(path, readonly=readonly)
    try:
        if readonly:
            _check_readable(conn, migrations)
        else:
            migrate(conn, migrations)
    except BaseException:
        conn.close()
        raise
    return conn


def _check_readable(conn: sqlite3.Connection, migrations: Sequence[Migration]) -> None:
    version = schema_version(conn)
    _refuse_newer(version, migrations)
    if version < len(migrations):
        raise FailedPrecondition(
            f"database schema version {version} is older than this code's "
            f"(version {len(migrations)}); open it read-write once to migrate it"
        )


class Database:
    """One SQLite connection, owned by one dedicated thread, used from asyncio.

    Open with :meth:`open`, close with :meth:`close`. Every function given to
    :meth:`run` or :meth:`transaction` runs on the owning thread, one at a
    time, in the order submitted.
    """

    def __init__(
        self, path: Path, readonly: bool, executor: ThreadPoolExecutor, conn: sqlite3.Connection
    ) -> None:
        """Use :meth:`open`: the connection must have been made on ``executor``'s thread."""
        self._path = path
        self._readonly = readonly
        self._executor = executor
        self._conn = conn
        self._closed = False

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        migrations: Sequence[Migration],
        readonly: bool = False,
    ) -> Database:
        """Open ``path`` on a new thread (see :func:`connect`); the writer migrates it."""
        kind = "ro" if readonly else "rw"
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"provex-db-{kind}")
        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(
                executor, partial(connect, path, readonly=readonly, migrations=migrations)
            )
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(path, readonly, executor, conn)

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    @property
    def readonly(self) -> bool:
        """Whether this is a read-only instance."""
        return self._readonly

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on the database thread and return its result (or raise its error).

        ``fn`` manages transactions itself (the connection is in autocommit
        mode); see :meth:`transaction`. If the awaiting task is cancelled once
        ``fn`` has started, ``fn`` still runs to its end.
        """
        if self._closed:
            raise Unavailable(f"database {self._path} is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, self._conn)

    async def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` inside ``BEGIN IMMEDIATE`` ... ``COMMIT`` on the database thread.

        If ``fn`` raises, the transaction is rolled back and the error re-raised.
        """
        return await self.run(partial(_in_transaction, fn))

    async def close(self) -> None:
        """Close the connection once the functions already submitted have run.

        Later calls of :meth:`run` raise :class:`~provex.errors.Unavailable`.
        Closing twice is harmless.
        """
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._conn.close)
        finally:
            self._executor.shutdown(wait=False)

    def __repr__(self) -> str:
        mode = "read-only" if self._readonly else "read-write"
        return f"Database({str(self._path)!r}, {mode})"
