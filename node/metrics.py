"""A node's own Prometheus metrics: outbox, sync with the registry, peers, alarms, deliveries.

Set before each scrape from the node's database (one read-only query
function) and from the running parts: the checkpoint keeper (when a poll
last found the kept checkpoint current, the size the registry showed), the
status follower (is its stream open), the peer dialer (who the last
federated search could not reach), the registry link, and the node's
certificates on disk (re-read each time: a renewal shows at once).

Metric names and the alerts built on them: ``deploy/ALERTS.md``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import Gauge

from node.instance import NodeInstance
from node.registry_link import Peer, load_directory
from provex.metrics import DurableCounter, ServerMetrics, certificate_expiry, iso_to_unix

OUTBOX_STATES = ("pending", "failed")
ALARM_KINDS = ("inconsistent", "rollback", "split_view")


@dataclass
class _Snapshot:
    outbox: dict[str, int]
    oldest_pending: float | None
    deliveries: int
    alarms: dict[str, int]
    status_applied_at: float | None
    peers: list[Peer] = field(default_factory=list)


def _read(conn: sqlite3.Connection) -> _Snapshot:
    outbox = {
        state: int(
            conn.execute("SELECT count(*) FROM outbox WHERE state = ?", (state,)).fetchone()[0]
        )
        for state in OUTBOX_STATES
    }
    oldest = conn.execute("SELECT min(created_at) FROM outbox WHERE state = 'pending'").fetchone()
    deliveries = conn.execute("SELECT count(*) FROM deliveries WHERE state = 'running'").fetchone()
    alarms = {
        str(kind): int(times)
        for kind, times in conn.execute("SELECT kind, sum(times) FROM alarms GROUP BY kind")
    }
    applied = conn.execute("SELECT updated_at FROM sync_state WHERE id = 1").fetchone()
    return _Snapshot(
        outbox=outbox,
        oldest_pending=iso_to_unix(str(oldest[0])) if oldest and oldest[0] else None,
        deliveries=int(deliveries[0]),
        alarms=alarms,
        status_applied_at=iso_to_unix(str(applied[0])) if applied and applied[0] else None,
        peers=load_directory(conn),
    )


class NodeMetrics:
    """The node's gauges and counters, refreshed from ``instance`` before each scrape."""

    def __init__(
        self,
        metrics: ServerMetrics,
        instance: NodeInstance,
        certificates: dict[str, Path],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._instance = instance
        self._certificates = certificates
        self._metrics = metrics
        self._clock = clock
        registry = metrics.registry

        def gauge(name: str, documentation: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, documentation, list(labels), registry=registry)

        self.outbox = gauge(
            "provex_node_outbox_items",
            "Outbox items by state: pending (to send to the registry) and failed (refused).",
            ("state",),
        )
        self.outbox_oldest = gauge(
            "provex_node_outbox_oldest_pending_age_seconds",
            "Age of the oldest pending outbox item (0 when none is pending).",
        )
        self.checkpoint_age = gauge(
            "provex_node_checkpoint_age_seconds",
            "Seconds since a poll last found the node's verified checkpoint to be the "
            "registry's latest (+Inf: never since start).",
        )
        self.verified_size = gauge(
            "provex_node_verified_log_size", "Tree size of the latest checkpoint the node verified."
        )
        self.registry_size = gauge(
            "provex_node_registry_log_size",
            "Tree size of the latest checkpoint the registry showed (signature checked).",
        )
        self.log_lag = gauge(
            "provex_node_log_lag_entries",
            "Registry's log size minus the node's verified size (entries not yet verified).",
        )
        self.status_applied = gauge(
            "provex_node_status_last_applied_timestamp_seconds",
            "When the node last applied a status statement of the registry (0: never).",
        )
        self.status_position = gauge(
            "provex_node_status_log_index",
            "Log index of the last status statement applied.",
        )
        self.status_following = gauge(
            "provex_node_status_feed_connected",
            "1 while the node's status feed (WatchStatus stream) is open, else 0.",
        )
        self.registry_reachable = gauge(
            "provex_node_registry_reachable",
            "1 if the registry answered the node's last call, else 0.",
        )
        self.peers = gauge(
            "provex_node_peers",
            "Nodes of the cached directory other than this one, by status (active, revoked).",
            ("status",),
        )
        self.unreachable = gauge(
            "provex_node_peers_unreachable",
            "Active peers the last federated search could not reach, or that have not "
            "announced a peer endpoint.",
        )
        self.unreachable_peer = gauge(
            "provex_node_peer_unreachable",
            "1 for each active peer counted in provex_node_peers_unreachable.",
            ("peer",),
        )
        self.deliveries = gauge(
            "provex_node_deliveries_in_progress", "Deliveries this node is receiving now."
        )
        self.alarms = DurableCounter(
            "provex_node_checkpoint_alarms",
            "Times the registry's log was caught inconsistent (durable across restarts), "
            "by kind: inconsistent, rollback, split_view.",
            ["kind"],
        )
        registry.register(self.alarms)
        metrics.add_refresher("node", self.refresh)

    async def refresh(self) -> None:
        """Read the database and the running parts; set every gauge."""
        instance = self._instance
        snapshot = await instance.reader.run(_read)
        now = self._clock()
        for state in OUTBOX_STATES:
            self.outbox.labels(state).set(snapshot.outbox.get(state, 0))
        oldest = snapshot.oldest_pending
        self.outbox_oldest.set(0.0 if oldest is None else max(0.0, now - oldest))
        self.deliveries.set(snapshot.deliveries)
        self.alarms.set({(kind,): float(snapshot.alarms.get(kind, 0)) for kind in ALARM_KINDS})

        keeper = instance.keeper
        latest = keeper.latest_checkpoint
        verified = 0 if latest is None else latest.size
        self.verified_size.set(verified)
        self.registry_size.set(keeper.registry_size)
        self.log_lag.set(max(0, keeper.registry_size - verified))
        polled = keeper.polled_at
        self.checkpoint_age.set(float("inf") if polled is None else max(0.0, now - polled))

        follower = instance.follower
        self.status_applied.set(snapshot.status_applied_at or 0.0)
        self.status_position.set(0 if follower is None else follower.position)
        self.status_following.set(1 if follower is not None and follower.following else 0)
        self.registry_reachable.set(1 if instance.link.reachable else 0)

        others = [peer for peer in snapshot.peers if peer.node_id != instance.node_id]
        self.peers.labels("active").set(sum(1 for peer in others if peer.active))
        self.peers.labels("revoked").set(sum(1 for peer in others if not peer.active))
        silent = {
            peer.node_id
            for peer in others
            if peer.active
            and (peer.node_id in instance.dialer.unreachable or peer.endpoint.endswith(":0"))
        }
        self.unreachable.set(len(silent))
        self.unreachable_peer.clear()
        for peer_id in sorted(silent):
            self.unreachable_peer.labels(peer_id).set(1)

        for name, path in self._certificates.items():
            try:
                expiry = certificate_expiry(path.read_bytes())
            except (OSError, ValueError):
                continue  # Being replaced, or unreadable: keep the last value.
            self._metrics.certificate_expiry.labels(name).set(expiry)
