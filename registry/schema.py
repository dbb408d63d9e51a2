"""The registry's database schema: the log's tables (registry.db) plus the domain tables.

To change the schema, append a :class:`registry.db.Migration` with the next
version to ``DOMAIN_MIGRATIONS``; never edit a migration that has shipped.
"""

from __future__ import annotations

from registry.db import MIGRATIONS as LOG_MIGRATIONS
from registry.db import Migration

DOMAIN_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        2,
        "trust roots, catalog releases, admins",
        """
        -- Every trust root version, as signed and logged.
        CREATE TABLE trust_roots (
            version INTEGER PRIMARY KEY,
            envelope BLOB NOT NULL,
            log_index INTEGER NOT NULL REFERENCES log_entries(idx)
        );
        -- Every published catalog release (payload: provex.v1.CatalogRelease).
        CREATE TABLE catalog_releases (
            version INTEGER PRIMARY KEY,
            envelope BLOB NOT NULL,
            log_index INTEGER NOT NULL REFERENCES log_entries(idx)
        );
        -- Admin and auditor identities issued by `provex-registry admin add`.
        CREATE TABLE admins (
            name TEXT PRIMARY KEY,
            role TEXT NOT NULL CHECK (role IN ('admin', 'auditor')),
            certificate_fingerprint TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        """,
    ),
)

MIGRATIONS: tuple[Migration, ...] = LOG_MIGRATIONS + DOMAIN_MIGRATIONS
