"""The registry's storage: the shared SQLite plumbing and the transparency log's schema.

:mod:`provex.storage` opens the file, runs migrations and owns the database
thread; this module adds the registry's first migration (the log tables).
The domain tables follow in :mod:`registry.schema`, whose ``MIGRATIONS`` is
what the registry opens its database with.
"""

from __future__ import annotations

from provex.storage import (
    BUSY_TIMEOUT_MS,
    Database,
    Migration,
    connect,
    migrate,
    open_connection,
    schema_version,
    transaction,
)

__all__ = (
    "BUSY_TIMEOUT_MS",
    "MIGRATIONS",
    "Database",
    "Migration",
    "connect",
    "migrate",
    "open_connection",
    "schema_version",
    "transaction",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "transparency log",
        """
        -- Every entry the registry logs, by its dense 0-based index.
        CREATE TABLE log_entries (
            idx       INTEGER PRIMARY KEY,
            entry     BLOB NOT NULL,
            leaf_hash BLOB NOT NULL  -- SHA-256(0x00 || entry): the tree's width-1 nodes
        );
        CREATE INDEX log_entries_by_leaf_hash ON log_entries (leaf_hash);

        -- Hashes of the perfect subtrees [start, end) of width >= 2, written as the
        -- sequencer completes them. They never change, and every proof is built from them.
        CREATE TABLE log_nodes (
            start INTEGER NOT NULL,
            end   INTEGER NOT NULL,
            hash  BLOB NOT NULL,
            PRIMARY KEY (start, end)
        ) WITHOUT ROWID;

        -- The sequencer's whole state, in one row: size, CompactRange bytes, latest checkpoint.
        CREATE TABLE log_state (
            id            INTEGER PRIMARY KEY CHECK (id = 1),
            size          INTEGER NOT NULL,
            compact_range BLOB NOT NULL,
            checkpoint    TEXT NOT NULL
        );

        -- Every checkpoint signed: one per batch, keyed by tree size.
        CREATE TABLE log_checkpoints (
            size INTEGER PRIMARY KEY,
            note TEXT NOT NULL
        );
        """,
    ),
)
"""The transparency log's schema: the registry's first migration (append only)."""
