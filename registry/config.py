"""Settings of the registry: ``<state>/registry.toml``, then ``PROVEX_REGISTRY_*`` variables.

Command-line flags override both (the CLI passes them as ``overrides``).
Every setting is a typed field of :class:`RegistryConfig`; reading and
refusals are :mod:`provex.settings`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provex import settings

CONFIG_FILE = "registry.toml"
ENV_PREFIX = "PROVEX_REGISTRY_"


@dataclass(frozen=True)
class RegistryConfig:
    """Everything the registry reads at start-up besides its keys and database."""

    trust_domain: str = "provex.local"
    # Server-authenticated TLS: enrollment by invitation and public read-only data.
    public_listen: str = "127.0.0.1:7400"
    # Mutual TLS: nodes and admins.
    federation_listen: str = "127.0.0.1:7401"
    # HTTPS, mutual TLS: the read-only supervision console for admins, auditors and
    # supervisors (registry.console); empty disables it.
    console_listen: str = "127.0.0.1:0"
    # Names and addresses the server certificate is valid for.
    server_dns_names: tuple[str, ...] = ("localhost",)
    server_ip_addresses: tuple[str, ...] = ("127.0.0.1",)
    log_origin: str = "provex.local/log"
    # Sequencer: a batch closes after this many entries or this many milliseconds.
    max_batch: int = 512
    max_batch_wait_ms: float = 5.0
    # Requests larger than this are refused before they are processed.
    max_message_bytes: int = 4 * 1024 * 1024
    invitation_validity_hours: int = 72
    node_certificate_days: int = 90
    grace_seconds: float = 10.0
    # How often holders of important data are checked for a lapsed risk assessment
    # (their important datasets are suspended; registry.supervision).
    risk_lapse_check_seconds: float = 60.0
    # Prometheus metrics over plain HTTP at /metrics (provex.metrics; deploy/ALERTS.md).
    # Loopback by default; port 0 picks a free one (endpoints.json names it); empty: off.
    metrics_listen: str = "127.0.0.1:0"
    # Logs of `serve` on stderr: "json" (one object per line, provex.logs) or "text".
    log_format: str = "json"

    def with_overrides(self, overrides: Mapping[str, Any]) -> RegistryConfig:
        """A copy with the given settings replaced (None values are ignored)."""
        return settings.with_overrides(self, overrides)


def load_config(state_dir: Path, environ: Mapping[str, str] | None = None) -> RegistryConfig:
    """Read ``<state>/registry.toml`` (if present), then the environment."""
    return settings.load_settings(RegistryConfig, state_dir / CONFIG_FILE, ENV_PREFIX, environ)


def render_config(config: RegistryConfig) -> str:
    """The TOML text of ``config`` (what ``init`` writes)."""
    return settings.render_settings(config, ENV_PREFIX)
