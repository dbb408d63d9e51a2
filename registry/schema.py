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
    Migration(
        6,
        "provincial supervisors, risk assessments, export permits, filings, trades",
        """
        -- Admin identities gain the 'supervisor' role, scoped to a region-code prefix
        -- (e.g. '44' for Guangdong); admins and auditors have region ''.
        CREATE TABLE admins_v6 (
            name TEXT PRIMARY KEY,
            role TEXT NOT NULL CHECK (role IN ('admin', 'auditor', 'supervisor')),
            region TEXT NOT NULL DEFAULT '',
            certificate_fingerprint TEXT NOT NULL,
            created_at TEXT NOT NULL,
            CHECK ((role = 'supervisor') = (region != ''))
        );
        INSERT INTO admins_v6 (name, role, region, certificate_fingerprint, created_at)
            SELECT name, role, '', certificate_fingerprint, created_at FROM admins;
        DROP TABLE admins;
        ALTER TABLE admins_v6 RENAME TO admins;
        -- Annual risk-assessment reports filed by nodes for their members
        -- (assessment: serialized provex.v1.RiskAssessment, kept current with its review).
        -- state: 'pending', 'accepted' or 'rejected'.
        CREATE TABLE risk_assessments (
            assessment_id TEXT PRIMARY KEY,
            holder TEXT NOT NULL,
            node_id TEXT NOT NULL,
            region_code TEXT NOT NULL,
            idempotency_key TEXT NOT NULL,
            request_sha256 BLOB NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('pending', 'accepted', 'rejected')),
            -- When an accepted report stops being current (ISO 8601 UTC); NULL otherwise.
            valid_until TEXT,
            decision_log_index INTEGER REFERENCES log_entries(idx),
            assessment BLOB NOT NULL,
            UNIQUE (node_id, idempotency_key)
        );
        CREATE INDEX risk_assessments_by_holder ON risk_assessments (holder, state);
        -- Export permit applications and their outcome (application: serialized
        -- provex.v1.ExportPermit as applied for). state: 'pending', 'accepted', 'rejected',
        -- 'revoked'. envelope, log_index: the latest logged ExportPermit statement.
        CREATE TABLE export_permits (
            permit_id TEXT PRIMARY KEY,
            exporter TEXT NOT NULL,
            region_code TEXT NOT NULL,
            applicant TEXT NOT NULL,
            idempotency_key TEXT NOT NULL,
            request_sha256 BLOB NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('pending', 'accepted', 'rejected', 'revoked')),
            application BLOB NOT NULL,
            envelope BLOB,
            log_index INTEGER REFERENCES log_entries(idx),
            UNIQUE (applicant, idempotency_key)
        );
        CREATE INDEX export_permits_by_exporter ON export_permits (exporter, state);
        -- Filed standard contracts (filing: serialized provex.v1.StandardContractFiling).
        CREATE TABLE standard_contracts (
            filing_id TEXT PRIMARY KEY,
            exporter TEXT NOT NULL,
            region_code TEXT NOT NULL,
            node_id TEXT NOT NULL,
            filed_at TEXT NOT NULL,
            filing BLOB NOT NULL
        );
        CREATE INDEX standard_contracts_by_exporter ON standard_contracts (exporter);
        -- Reported trades, one per contract id, with what statistics and customs count.
        CREATE TABLE trades (
            contract_id TEXT PRIMARY KEY,
            log_index INTEGER NOT NULL REFERENCES log_entries(idx),
            envelope BLOB NOT NULL,
            contract_sha256 BLOB NOT NULL,
            dataset_id TEXT NOT NULL,
            seller TEXT NOT NULL,
            buyer TEXT NOT NULL,
            region_code TEXT NOT NULL,
            category TEXT NOT NULL,
            grade INTEGER NOT NULL,
            price_fen INTEGER NOT NULL,
            -- Asia/Shanghai calendar month ("YYYY-MM") and year of the trade.
            month TEXT NOT NULL,
            year INTEGER NOT NULL,
            finalized_at TEXT NOT NULL,
            is_export INTEGER NOT NULL,
            exporter TEXT NOT NULL,
            individuals INTEGER NOT NULL,
            sensitive INTEGER NOT NULL
        );
        CREATE INDEX trades_by_exporter_year ON trades (exporter, year);
        CREATE INDEX trades_by_month ON trades (month);
        -- Logged supervisory decisions that are not status statements (risk reviews,
        -- permit approvals, rejections, revocations): what, on what, by whom, where.
        CREATE TABLE supervisory_actions (
            log_index INTEGER PRIMARY KEY REFERENCES log_entries(idx),
            action TEXT NOT NULL,
            subject TEXT NOT NULL,
            region_code TEXT NOT NULL,
            actor TEXT NOT NULL,
            taken_at TEXT NOT NULL,
            -- The reason given (ExportPermit statements carry none of their own).
            reason TEXT NOT NULL
        );
        -- Free-trade-zone negative lists: exporters whose region code starts with
        -- zone_prefix are exempt for categories not listed (provex.customs).
        CREATE TABLE ftz_negative_lists (
            zone_prefix TEXT NOT NULL,
            category TEXT NOT NULL,
            PRIMARY KEY (zone_prefix, category)
        ) WITHOUT ROWID;
        """,
    ),
)

MIGRATIONS: tuple[Migration, ...] = LOG_MIGRATIONS + DOMAIN_MIGRATIONS
