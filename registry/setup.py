"""``provex-registry init`` and ``admin add``: create a registry's state and its admins."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from provex import pki, trust
from provex.catalog import Release
from provex.errors import AlreadyExists, InvalidArgument
from provex.grading import GradingRules
from provex.identity import SpiffeId
from registry.authz import Role
from registry.catalog import CatalogBook
from registry.config import RegistryConfig
from registry.db import Database
from registry.publication import Publisher
from registry.schema import MIGRATIONS
from registry.seed_catalog import national_catalog, national_rules
from registry.state import StateLayout, create_state, latest_trust_root, load_keys
from registry.transparency import LogReader, Sequencer

ADMIN_CERTIFICATE_VALIDITY = timedelta(days=365)


@dataclass(frozen=True)
class InitResult:
    """What ``init`` made: the trust root's pin digest and the log's size."""

    trust_root_digest: str
    log_size: int


async def initialize(state_dir: Path, config: RegistryConfig, now: datetime) -> InitResult:
    """Create the state directory, the database, and log trust root 1 and catalog 1."""
    keys = create_state(state_dir, config, now)
    layout = StateLayout(state_dir)
    db = await Database.open(layout.database, migrations=MIGRATIONS)
    sequencer = Sequencer(db, keys.log_signer(config.log_origin), config.log_origin)
    await sequencer.start()
    try:
        publisher = Publisher(sequencer, LogReader(db), keys.issuer)
        _, root_envelope = latest_trust_root(state_dir)

        def record_root(conn: sqlite3.Connection, log_index: int, envelope: bytes) -> None:
            conn.execute(
                "INSERT INTO trust_roots(version, envelope, log_index) VALUES (1, ?, ?)",
                (envelope, log_index),
            )

        await publisher.log_envelope(root_envelope, record_root)
        rules = GradingRules(1, national_rules().rules)
        release = Release(national_catalog(), rules)
        publisher_id = str(SpiffeId.registry(config.trust_domain))
        await CatalogBook(db, publisher).publish(release, now, publisher_id)
        size = sequencer.size
    finally:
        await sequencer.stop()
        await db.close()
    return InitResult(trust.digest_of(root_envelope), size)


@dataclass(frozen=True)
class AdminFiles:
    """Where ``admin add`` wrote an admin's client certificate, key and the CA."""

    folder: Path
    certificate: Path
    key: Path
    ca: Path


async def add_admin(
    state_dir: Path,
    config: RegistryConfig,
    name: str,
    role: Role,
    now: datetime,
    *,
    region: str = "",
) -> AdminFiles:
    """Issue a client certificate ``spiffe://<td>/admin/<name>`` and record its role.

    A supervisor is scoped to ``region``, a region-code prefix (e.g. "44");
    admins and auditors take none.
    """
    if role not in (Role.ADMIN, Role.AUDITOR, Role.SUPERVISOR):
        raise InvalidArgument(f"role must be admin, auditor or supervisor, not {role.value}")
    if (role is Role.SUPERVISOR) != bool(region):
        raise InvalidArgument(
            "--region is required for a supervisor (a region-code prefix such as 44) "
            "and only for a supervisor"
        )
    if region and not (region.isdigit() and 1 <= len(region) <= 6):
        raise InvalidArgument(f"region must be 1 to 6 digits of a GB/T 2260 code, not {region!r}")
    spiffe_id = SpiffeId.admin(config.trust_domain, name)
    layout = StateLayout(state_dir)
    folder = layout.admins / name
    if folder.exists():
        raise AlreadyExists(f"admin {name!r} exists already ({folder})")
    keys = load_keys(state_dir)
    key = pki.generate_tls_key()
    certificate = pki.issue_certificate(
        keys.ca_key,
        keys.ca_cert,
        pki.make_csr(key, spiffe_id),
        spiffe_id,
        now=now,
        validity=ADMIN_CERTIFICATE_VALIDITY,
    )
    db = await Database.open(layout.database, migrations=MIGRATIONS)
    try:

        def insert(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    "INSERT INTO admins(name, role, region, certificate_fingerprint, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (
                        name,
                        role.value,
                        region,
                        pki.certificate_fingerprint(certificate),
                        now.isoformat(),
                    ),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"admin {name!r} exists already") from None

        await db.transaction(insert)
    finally:
        await db.close()
    folder.mkdir(parents=True)
    files = AdminFiles(folder, folder / "cert.pem", folder / "key.pem", folder / "ca.pem")
    files.key.touch(mode=0o600)
    files.key.write_bytes(pki.key_to_pem(key))
    files.certificate.write_bytes(pki.cert_to_pem(certificate))
    files.ca.write_bytes(layout.ca_cert.read_bytes())
    return files
