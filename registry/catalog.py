"""The catalog at the registry: signed, numbered releases and incremental sync.

Releases are immutable: each is a signed ``CatalogRelease`` logged once and
stored with its log index. Readers get a release as a bundle, or the entries
that changed since a version they hold.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime

from provex import catalog as wire
from provex import documents
from provex.envelope import Envelope
from provex.errors import InvalidArgument, NotFound
from provex.v1 import catalog_pb2, common_pb2
from registry.db import Database
from registry.publication import Publisher


class CatalogBook:
    """Publishes and serves catalog releases."""

    def __init__(self, reader_db: Database, publisher: Publisher) -> None:
        self._db = reader_db
        self._publisher = publisher

    async def publish(
        self, release: wire.Release, published_at: datetime, published_by: str
    ) -> common_pb2.Bundle:
        """Sign, log and store a new release; its version must follow the latest."""
        message = wire.release_to_proto(release, published_at, published_by)
        version = release.catalog.version

        def record(conn: sqlite3.Connection, log_index: int, envelope: bytes) -> None:
            latest = conn.execute("SELECT MAX(version) FROM catalog_releases").fetchone()[0] or 0
            if version != latest + 1:
                raise InvalidArgument(
                    f"catalog version {version} does not follow the latest version {latest}"
                )
            conn.execute(
                "INSERT INTO catalog_releases(version, envelope, log_index) VALUES (?, ?, ?)",
                (version, envelope, log_index),
            )

        return await self._publisher.publish(message, record)

    async def _row(self, version: int) -> tuple[int, bytes, int]:
        def read(conn: sqlite3.Connection) -> tuple[int, bytes, int] | None:
            if version == 0:
                sql = "SELECT version, envelope, log_index FROM catalog_releases "
                sql += "ORDER BY version DESC LIMIT 1"
                row = conn.execute(sql).fetchone()
            else:
                row = conn.execute(
                    "SELECT version, envelope, log_index FROM catalog_releases WHERE version = ?",
                    (version,),
                ).fetchone()
            return None if row is None else (int(row[0]), bytes(row[1]), int(row[2]))

        row = await self._db.run(read)
        if row is None:
            raise NotFound(f"catalog version {version} does not exist")
        return row

    async def release_bundle(self, version: int) -> common_pb2.Bundle:
        """The bundle of a release (0 = latest), proved against the latest checkpoint."""
        _, envelope, log_index = await self._row(version)
        return await self._publisher.bundle_for(envelope, log_index)

    async def changes_since(
        self, since_version: int
    ) -> tuple[catalog_pb2.CatalogRelease, list[str], common_pb2.Bundle]:
        """The latest release, the codes removed since ``since_version``, and its bundle."""
        latest_version, envelope, log_index = await self._row(0)
        if since_version > latest_version:
            raise InvalidArgument(
                f"since_version {since_version} is newer than the latest version {latest_version}"
            )
        latest = _payload(envelope)
        removed: list[str] = []
        if since_version > 0:
            _, old_envelope, _ = await self._row(since_version)
            old_codes = {entry.code for entry in _payload(old_envelope).entries}
            removed = sorted(old_codes - {entry.code for entry in latest.entries})
            old = {entry.code: entry for entry in _payload(old_envelope).entries}
            changed = [entry for entry in latest.entries if old.get(entry.code) != entry]
            del latest.entries[:]
            latest.entries.extend(changed)
        bundle = await self._publisher.bundle_for(envelope, log_index)
        return latest, removed, bundle


def _payload(envelope: bytes) -> catalog_pb2.CatalogRelease:
    return documents.decode_payload(
        Envelope.from_json(envelope).payload, catalog_pb2.CatalogRelease
    )
