"""``provex-registry trust rotate``: make the next trust root version while the registry is stopped.

Version N+1 keeps version N's trust domain, issuer key, log key and origin,
and federation CA; it gets a new ``issued_at`` and ``expires_at`` (default
365 days from now) and, with ``new_root_keys``, a new set of root keys
(``keys/root-v<N+1>-<k>.pem``, written once with mode 0600). It is signed by
a threshold of version N's root keys and a threshold of its own (the same
keys unless new ones were made), exactly what :func:`provex.trust.verify_chain`
requires of an update, and checked with it before anything is stored.

The new version is recorded like version 1 (a ``trust_roots`` row and a log
entry of the trust-root document type, one transaction) and then written to
``trust/root-<N+1>.json``. If the command stopped between the two, the next
run writes the missing file from the database instead of making another
version. The registry serves the new version from ``GetTrustRoot`` once it
is started again; nodes fetch it by themselves (:mod:`node.trust_follow`).
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from provex import envelope as dsse
from provex import trust
from provex.checkpoint import NoteSigner
from provex.errors import FailedPrecondition, InvalidArgument, VerificationError
from provex.healthprobe import check, probe_target
from provex.keyfiles import create_file, ed25519_to_pem, load_ed25519, write_secret
from registry.config import RegistryConfig
from registry.db import Database
from registry.publication import Publisher
from registry.schema import MIGRATIONS
from registry.state import (
    ROOT_KEY_COUNT,
    ROOT_THRESHOLD,
    TRUST_ROOT_VALIDITY,
    StateLayout,
    latest_trust_root,
)
from registry.transparency import LogReader, Sequencer

MAX_VALIDITY_DAYS = 3650
PROBE_SECONDS = 2.0


@dataclass(frozen=True)
class Rotation:
    """What ``trust rotate`` made (or completed): the new version and where it is."""

    version: int
    digest: str
    issued_at: datetime
    expires_at: datetime
    log_index: int
    path: Path
    new_root_key_files: tuple[Path, ...]
    resumed: bool = False


def new_root_key_path(layout: StateLayout, version: int, number: int) -> Path:
    """``keys/root-v<version>-<number>.pem``: a root key first listed by ``version``."""
    return layout.keys / f"root-v{version}-{number}.pem"


def require_stopped(state_dir: Path) -> None:
    """Refuse while a registry serves this state directory (its readiness file answers)."""
    endpoints = state_dir / "run" / "endpoints.json"
    if not endpoints.exists():
        return
    try:
        status = check(probe_target(state_dir), timeout=PROBE_SECONDS)
    except (grpc.RpcError, FailedPrecondition, OSError, KeyError):
        raise FailedPrecondition(
            f"{endpoints} exists but no registry answers at its address: if the registry "
            f"crashed, delete {endpoints} and run the command again"
        ) from None
    raise FailedPrecondition(
        f"the registry of {state_dir} is running ({status}): stop it (SIGTERM) first, "
        "then rotate, then start it again"
    )


def _root_keys_on_disk(layout: StateLayout) -> dict[bytes, Ed25519PrivateKey]:
    """Every root private key under keys/ (root-<n>.pem, root-v<N>-<n>.pem) by raw public key."""
    found: dict[bytes, Ed25519PrivateKey] = {}
    for path in sorted(layout.keys.glob("root-*.pem")):
        key = load_ed25519(path)
        found[dsse.raw_public_key(key.public_key())] = key
    return found


def _signers(
    root: trust.TrustRoot, available: dict[bytes, Ed25519PrivateKey]
) -> list[Ed25519PrivateKey]:
    """A threshold of ``root``'s root keys from those on disk; FailedPrecondition if too few."""
    keys = [available[raw] for raw in root.root_keys if raw in available]
    if len(keys) < root.root_threshold:
        raise FailedPrecondition(
            f"only {len(keys)} of trust root version {root.version}'s root keys are in keys/ "
            f"and {root.root_threshold} must sign: bring the offline root keys back "
            "(keys/root-*.pem) and run the command again"
        )
    return keys[: root.root_threshold]


def _new_root_keys(layout: StateLayout, version: int) -> tuple[list[Ed25519PrivateKey], list[Path]]:
    """Root keys for ``version``: generated once; those of an unfinished run are reused."""
    paths = [new_root_key_path(layout, version, n) for n in range(1, ROOT_KEY_COUNT + 1)]
    keys = []
    for path in paths:
        if path.exists():  # A run that stopped before logging the version: never overwrite.
            keys.append(load_ed25519(path))
        else:
            key = Ed25519PrivateKey.generate()
            write_secret(path, ed25519_to_pem(key))
            keys.append(key)
    return keys, paths


def _current_keys(
    layout: StateLayout, root: trust.TrustRoot
) -> tuple[Ed25519PrivateKey, Ed25519PrivateKey]:
    """The issuer and log keys on disk; they must be the ones the current version lists."""
    issuer, log_key = load_ed25519(layout.issuer_key), load_ed25519(layout.log_key)
    if dsse.raw_public_key(issuer.public_key()) != root.issuer_key:
        raise FailedPrecondition(
            f"{layout.issuer_key} is not trust root version {root.version}'s issuer key"
        )
    if dsse.raw_public_key(log_key.public_key()) != root.log_key:
        raise FailedPrecondition(
            f"{layout.log_key} is not trust root version {root.version}'s log key"
        )
    return issuer, log_key


async def _database_versions(db: Database) -> dict[int, tuple[bytes, int]]:
    def read(conn: sqlite3.Connection) -> dict[int, tuple[bytes, int]]:
        rows = conn.execute("SELECT version, envelope, log_index FROM trust_roots")
        return {int(v): (bytes(e), int(i)) for v, e, i in rows}

    return await db.run(read)


def _resume(layout: StateLayout, version: int, envelope: bytes, log_index: int) -> Rotation:
    """Write the file of a version the database holds but the disk does not."""
    root = trust.decode_trust_root(envelope)
    path = layout.trust_root(version)
    create_file(path, envelope)
    files = tuple(
        p
        for p in (new_root_key_path(layout, version, n) for n in range(1, ROOT_KEY_COUNT + 1))
        if p.exists()
    )
    return Rotation(
        version,
        trust.digest_of(envelope),
        root.issued_at,
        root.expires_at,
        log_index,
        path,
        files,
        resumed=True,
    )


async def rotate(
    state_dir: Path,
    config: RegistryConfig,
    now: datetime,
    *,
    validity: timedelta = TRUST_ROOT_VALIDITY,
    new_root_keys: bool = False,
) -> Rotation:
    """Make, log and write trust root version N+1 (the registry must be stopped)."""
    if not timedelta(days=1) <= validity <= timedelta(days=MAX_VALIDITY_DAYS):
        raise InvalidArgument(
            f"--validity-days must be between 1 and {MAX_VALIDITY_DAYS}, "
            f"not {validity.total_seconds() / 86400:g}"
        )
    require_stopped(state_dir)
    layout = StateLayout(state_dir)
    if not layout.database.exists():
        raise FailedPrecondition(
            f"{state_dir} is not an initialized registry state: run `provex-registry init` first"
        )
    on_disk, current_envelope = latest_trust_root(state_dir)
    db = await Database.open(layout.database, migrations=MIGRATIONS)
    try:
        recorded = await _database_versions(db)
        latest_recorded = max(recorded, default=0)
        if latest_recorded == on_disk + 1:
            return _resume(layout, latest_recorded, *recorded[latest_recorded])
        if latest_recorded != on_disk or recorded[on_disk][0] != current_envelope:
            raise FailedPrecondition(
                f"the database records trust root version {latest_recorded} but trust/ holds "
                f"version {on_disk} (or another envelope): restore a consistent state first"
            )
        current = trust.decode_trust_root(current_envelope)
        issuer, log_key = _current_keys(layout, current)
        version = current.version + 1
        if layout.trust_root(version).exists():
            raise FailedPrecondition(f"{layout.trust_root(version)} exists already")
        available = _root_keys_on_disk(layout)
        signers = _signers(current, available)
        key_files: list[Path] = []
        successor = replace(current, version=version, issued_at=now, expires_at=now + validity)
        if new_root_keys:
            fresh, key_files = _new_root_keys(layout, version)
            successor = replace(
                successor,
                root_keys=tuple(dsse.raw_public_key(k.public_key()) for k in fresh),
                root_threshold=ROOT_THRESHOLD,
            )
            signers += fresh[:ROOT_THRESHOLD]
        envelope = trust.sign_trust_root(successor, signers)
        # Checked as every node will check it before anything is stored.
        try:
            payload = dsse.Envelope.from_json(current_envelope).payload
            trusted = trust.SignedTrustRoot(current, current_envelope, payload)
            trust.verify_chain(trusted, [envelope], now)
        except VerificationError as error:
            raise FailedPrecondition(f"the new trust root does not verify: {error}") from None
        signer = NoteSigner(config.log_origin, log_key)
        sequencer = Sequencer(db, signer, config.log_origin)
        await sequencer.start()
        try:
            publisher = Publisher(sequencer, LogReader(db), issuer)

            def record_root(conn: sqlite3.Connection, log_index: int, signed: bytes) -> None:
                conn.execute(
                    "INSERT INTO trust_roots(version, envelope, log_index) VALUES (?, ?, ?)",
                    (version, signed, log_index),
                )

            bundle = await publisher.log_envelope(envelope, record_root)
        finally:
            await sequencer.stop()
    finally:
        await db.close()
    path = layout.trust_root(version)
    create_file(path, envelope)
    return Rotation(
        version,
        trust.digest_of(envelope),
        successor.issued_at,
        successor.expires_at,
        bundle.log_index,
        path,
        tuple(key_files),
    )


def rotate_command(
    state_dir: Path, config: RegistryConfig, now: datetime, validity_days: float, new_keys: bool
) -> Rotation:
    """``provex-registry trust rotate`` (synchronous: a CLI action)."""
    return asyncio.run(
        rotate(
            state_dir,
            config,
            now,
            validity=timedelta(days=validity_days),
            new_root_keys=new_keys,
        )
    )
