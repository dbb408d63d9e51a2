"""Settings of a node: ``<state>/node.toml``, then ``PROVEX_NODE_*`` variables, then flags.

Every setting is a typed field of :class:`NodeConfig`; reading and refusals
are :mod:`provex.settings`'s. ``init`` writes the file with these defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provex import settings

CONFIG_FILE = "node.toml"
ENV_PREFIX = "PROVEX_NODE_"


@dataclass(frozen=True)
class NodeConfig:
    """Everything a node reads at start-up besides its keys and database."""

    # Mutual TLS with the federation CA: other nodes call PeerService here.
    peer_listen: str = "127.0.0.1:7500"
    # The address other nodes dial (reported to the registry's directory); empty: peer_listen.
    peer_advertise: str = ""
    # Mutual TLS with the node's own operator CA; loopback only unless changed deliberately.
    operator_listen: str = "127.0.0.1:7501"
    # The registry's federation port (mutual TLS); empty: the one enrolled with.
    registry_address: str = ""
    # Deadlines of outbound calls, in seconds.
    registry_deadline: float = 10.0
    peer_deadline: float = 2.0
    # Requests larger than this are refused before they are processed.
    max_message_bytes: int = 4 * 1024 * 1024
    # How often the node re-reads the registry's directory and checkpoint (seconds).
    directory_refresh_seconds: float = 5.0
    checkpoint_poll_seconds: float = 2.0
    grace_seconds: float = 10.0
    # Prometheus metrics over plain HTTP at /metrics (provex.metrics; deploy/ALERTS.md).
    # Loopback by default; port 0 picks a free one (endpoints.json names it); empty: off.
    metrics_listen: str = "127.0.0.1:0"
    # Logs of `serve` on stderr: "json" (one object per line, provex.logs) or "text".
    log_format: str = "json"
    # Delivery (node.delivery). The seller sends chunks of this size; 0 rate: no throttle
    # (a positive rate, bytes per second, is for tests and for sharing a thin uplink).
    delivery_chunk_bytes: int = 256 * 1024
    delivery_rate_bytes_per_second: int = 0
    # The buyer's deadlines: for each chunk to arrive, and for one stream (then it resumes).
    delivery_chunk_deadline: float = 30.0
    delivery_stream_deadline: float = 600.0
    # The buyer retries an interrupted delivery after 0.5 s, doubling up to this (seconds).
    delivery_retry_max_seconds: float = 5.0
    # Renewal of the federation certificate (node.renewal): `serve` checks every
    # certificate_check_seconds and renews when less than certificate_renew_before_days
    # remain (0: a third of the certificate's lifetime, 30 days of a 90-day one); after a
    # failure it retries after twice the interval, doubling up to certificate_retry_max_seconds.
    certificate_renew_before_days: float = 0.0
    certificate_check_seconds: float = 5.0
    certificate_retry_max_seconds: float = 600.0
    # How often `serve` asks the registry for a newer trust root version (node.trust_follow;
    # also once at start). After a failed attempt it asks again within a minute.
    trust_root_poll_seconds: float = 3600.0

    def with_overrides(self, overrides: Mapping[str, Any]) -> NodeConfig:
        """A copy with the given settings replaced (None values are ignored)."""
        return settings.with_overrides(self, overrides)

    @property
    def advertised_peer_address(self) -> str:
        """What peers dial: ``peer_advertise``, or ``peer_listen``."""
        return self.peer_advertise or self.peer_listen


def load_config(state_dir: Path, environ: Mapping[str, str] | None = None) -> NodeConfig:
    """Read ``<state>/node.toml`` (if present), then the environment."""
    return settings.load_settings(NodeConfig, state_dir / CONFIG_FILE, ENV_PREFIX, environ)


def render_config(config: NodeConfig) -> str:
    """The TOML text of ``config`` (what ``init`` writes)."""
    return settings.render_settings(config, ENV_PREFIX)
