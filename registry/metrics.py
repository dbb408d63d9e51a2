"""The registry's own Prometheus metrics: its log, its directory, its registrations.

Read from the database at each scrape (one read-only query function) and
from the registry's keys; nothing here touches the sequencer. Each batch the
sequencer commits signs exactly one checkpoint (``log_checkpoints``, keyed by
tree size), so the batch sizes are the differences between consecutive
checkpoint sizes: the scrape observes every checkpoint signed since the last
one it saw into ``provex_registry_log_batch_entries``.

Metric names and the alerts built on them: ``deploy/ALERTS.md``.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from prometheus_client import Counter, Gauge, Histogram

from provex.metrics import ServerMetrics, iso_to_unix
from registry.db import Database

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
"""Entries per committed batch (the default ``max_batch`` is 512)."""

MAX_CHECKPOINTS_PER_SCRAPE = 100_000
"""A scrape after a long silence observes at most this many batches; the next ones the rest."""

ENROLL = "/provex.v1.EnrollmentService/Enroll"
REGISTER = "/provex.v1.CertificateService/RegisterDataset"
REGISTER_MANY = "/provex.v1.CertificateService/RegisterDatasets"


@dataclass
class _Snapshot:
    log_size: int
    checkpoint_sizes: list[int]
    nodes: dict[str, int]
    node_expiry: dict[str, float] = field(default_factory=dict)


def _read(conn: sqlite3.Connection, after_size: int) -> _Snapshot:
    row = conn.execute("SELECT size FROM log_state WHERE id = 1").fetchone()
    sizes = [
        int(size)
        for (size,) in conn.execute(
            "SELECT size FROM log_checkpoints WHERE size > ? ORDER BY size LIMIT ?",
            (after_size, MAX_CHECKPOINTS_PER_SCRAPE),
        )
    ]
    nodes = {
        str(status): int(count)
        for status, count in conn.execute("SELECT status, count(*) FROM nodes GROUP BY status")
    }
    snapshot = _Snapshot(0 if row is None else int(row[0]), sizes, nodes)
    for node_id, expires in conn.execute(
        "SELECT node_id, certificate_expires_at FROM nodes WHERE status = 'active'"
    ):
        moment = iso_to_unix(str(expires))
        if moment is not None:
            snapshot.node_expiry[str(node_id)] = moment
    return snapshot


def _last_checkpoint_size(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT max(size) FROM log_checkpoints").fetchone()
    return 0 if row is None or row[0] is None else int(row[0])


class RegistryMetrics:
    """The registry's gauges and counters, refreshed from ``reader`` before each scrape."""

    def __init__(
        self,
        metrics: ServerMetrics,
        reader: Database,
        certificates: dict[str, x509.Certificate],
    ) -> None:
        self._reader = reader
        self._last_size: int | None = None
        registry = metrics.registry
        self.log_size = Gauge(
            "provex_registry_log_size",
            "Entries in the transparency log (the latest checkpoint's tree size).",
            registry=registry,
        )
        self.checkpoints = Counter(
            "provex_registry_checkpoints_published",
            "Checkpoints signed since this process started (one per committed batch).",
            registry=registry,
        )
        self.batches = Histogram(
            "provex_registry_log_batch_entries",
            "Entries per batch the sequencer committed since this process started.",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.nodes = Gauge(
            "provex_registry_nodes",
            "Enrolled nodes of the directory by status (active, revoked).",
            ["status"],
            registry=registry,
        )
        self.node_expiry = Gauge(
            "provex_registry_node_certificate_expiry_timestamp_seconds",
            "When each active node's federation certificate expires (Unix seconds).",
            ["node_id"],
            registry=registry,
        )
        self.earliest_expiry = Gauge(
            "provex_registry_node_certificate_earliest_expiry_seconds",
            "Seconds until the first active node certificate expires (+Inf: no active node).",
            registry=registry,
        )
        self.registrations = Counter(
            "provex_registry_registrations",
            "Successful registrations answered since this process started, by kind "
            "(node: enrollments; dataset: certificates issued, a retried key counts again).",
            ["kind"],
            registry=registry,
        )
        for status in ("active", "revoked"):
            self.nodes.labels(status)
        for kind in ("node", "dataset"):
            self.registrations.labels(kind)
        for name, certificate in certificates.items():
            metrics.certificate_expiry.labels(name).set(certificate.not_valid_after_utc.timestamp())
        metrics.on_response(ENROLL, lambda _: self.registrations.labels("node").inc())
        metrics.on_response(REGISTER, lambda _: self.registrations.labels("dataset").inc())
        metrics.on_response(REGISTER_MANY, self._registered_many)
        metrics.add_refresher("registry", self.refresh)

    def _registered_many(self, response: object) -> None:
        results = getattr(response, "results", ())
        issued = sum(1 for result in results if result.HasField("certificate"))
        if issued:
            self.registrations.labels("dataset").inc(issued)

    async def start(self) -> None:
        """Note the log's size at start-up: batches are observed from there on."""
        self._last_size = await self._reader.run(_last_checkpoint_size)

    async def refresh(self, now: datetime | None = None) -> None:
        """Read the log, the checkpoints signed since the last scrape and the directory."""
        if self._last_size is None:
            await self.start()
        last = self._last_size or 0
        snapshot = await self._reader.run(lambda conn: _read(conn, last))
        self.log_size.set(snapshot.log_size)
        for size in snapshot.checkpoint_sizes:
            self.batches.observe(size - last)
            self.checkpoints.inc()
            last = size
        self._last_size = last
        for status in set(snapshot.nodes) | {"active", "revoked"}:
            self.nodes.labels(status).set(snapshot.nodes.get(status, 0))
        self.node_expiry.clear()
        for node_id, moment in snapshot.node_expiry.items():
            self.node_expiry.labels(node_id).set(moment)
        clock = now.timestamp() if now is not None else time.time()
        earliest = min(snapshot.node_expiry.values(), default=None)
        self.earliest_expiry.set(float("inf") if earliest is None else earliest - clock)
