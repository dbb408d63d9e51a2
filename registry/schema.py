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
    Migration(
        3,
        "nodes, invitations, members",
        """
        -- Enrolled nodes: the directory. status: 'active' or 'revoked'.
        CREATE TABLE nodes (
            node_id TEXT PRIMARY KEY,
            region_code TEXT NOT NULL,
            display_name TEXT NOT NULL,
            peer_endpoint TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
            signing_key BLOB NOT NULL,
            certificate_fingerprint TEXT NOT NULL,
            certificate_expires_at TEXT NOT NULL,
            enrolled_at TEXT NOT NULL,
            -- The latest enrollment statement (enrolled, renewed or revoked) in the log.
            log_index INTEGER NOT NULL REFERENCES log_entries(idx)
        );
        -- One-time invitations; only the SHA-256 of the secret is kept.
        CREATE TABLE invitations (
            invitation_id TEXT PRIMARY KEY,
            node_id TEXT NOT NULL,
            region_code TEXT NOT NULL,
            display_name TEXT NOT NULL,
            secret_sha256 BLOB NOT NULL,
            expires_at TEXT NOT NULL,
            created_by TEXT NOT NULL,
            created_at TEXT NOT NULL,
            used_at TEXT
        );
        -- Organisations reported by their nodes (USCC). status: 'active' or 'frozen'.
        CREATE TABLE members (
            credit_code TEXT PRIMARY KEY,
            node_id TEXT NOT NULL REFERENCES nodes(node_id),
            name TEXT NOT NULL,
            region_code TEXT NOT NULL,
            country TEXT NOT NULL,
            -- Serialized provex.v1.SecurityOfficer, empty when none.
            security_officer BLOB NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('active', 'frozen')),
            updated_at TEXT NOT NULL
        );
        CREATE INDEX members_by_node ON members (node_id);
        """,
    ),
    Migration(
        4,
        "certificates, idempotency, status statements",
        """
        -- Every dataset id issued, with its latest version and that version's grade
        -- (provex.grading.Grade value), for re-registration and derived_from. Ids of one
        -- region and year sort by serial, so the last serial issued is max(dataset_id).
        CREATE TABLE datasets (
            dataset_id TEXT PRIMARY KEY,
            node_id TEXT NOT NULL,
            holder TEXT NOT NULL,
            latest_version INTEGER NOT NULL,
            grade INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX datasets_by_holder ON datasets (holder);
        -- Every certificate (one per version of a dataset) as signed and logged.
        CREATE TABLE certificates (
            dataset_id TEXT NOT NULL REFERENCES datasets(dataset_id),
            version INTEGER NOT NULL,
            log_index INTEGER NOT NULL REFERENCES log_entries(idx),
            envelope BLOB NOT NULL,
            PRIMARY KEY (dataset_id, version)
        ) WITHOUT ROWID;
        -- What each (node, idempotency key) registered, and the SHA-256 of that request.
        CREATE TABLE idempotency (
            node_id TEXT NOT NULL,
            idempotency_key TEXT NOT NULL,
            request_sha256 BLOB NOT NULL,
            dataset_id TEXT NOT NULL,
            version INTEGER NOT NULL,
            PRIMARY KEY (node_id, idempotency_key)
        ) WITHOUT ROWID;
        -- Every status statement (suspend, revoke, reinstate; freeze, unfreeze) as logged.
        CREATE TABLE status_statements (
            log_index INTEGER PRIMARY KEY REFERENCES log_entries(idx),
            subject_kind TEXT NOT NULL CHECK (subject_kind IN ('dataset', 'member', 'node')),
            subject TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'revoked')),
            envelope BLOB NOT NULL
        );
        CREATE INDEX status_statements_by_subject
            ON status_statements (subject_kind, subject, log_index);
        """,
    ),
    Migration(
        5,
        "witness cosignatures",
        """
        -- Nodes' cosignatures (c2sp.org/tlog-cosignature, cosignature/v1) of the log's
        -- checkpoints, one row per (checkpoint size, node): the node's newest line for that
        -- checkpoint (registry.witnesses). Not registry statements: never logged.
        CREATE TABLE cosignatures (
            size INTEGER NOT NULL REFERENCES log_checkpoints(size),
            node_id TEXT NOT NULL REFERENCES nodes(node_id),
            -- The signed-note line "— <node id> <base64(key hash || time || signature)>",
            -- without its newline.
            signature_line TEXT NOT NULL,
            -- The POSIX time inside the cosignature.
            timestamp INTEGER NOT NULL,
            received_at TEXT NOT NULL,
            PRIMARY KEY (size, node_id)
        ) WITHOUT ROWID;
        """,
    ),
)

MIGRATIONS: tuple[Migration, ...] = LOG_MIGRATIONS + DOMAIN_MIGRATIONS
