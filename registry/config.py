"""Settings of the registry: ``<state>/registry.toml``, then ``PROVEX_REGISTRY_*`` variables.

Command-line flags override both (the CLI passes them as ``overrides``).
Every setting is a typed field of :class:`RegistryConfig`; unknown keys in
the file are refused so that a typo is not silently ignored.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from provex.errors import InvalidArgument

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

    def with_overrides(self, overrides: Mapping[str, Any]) -> RegistryConfig:
        """A copy with the given settings replaced (None values are ignored)."""
        present = {k: v for k, v in overrides.items() if v is not None}
        return _build(self, present, "override")


_FIELDS = {f.name: f for f in fields(RegistryConfig)}


def _convert(name: str, value: Any, source: str) -> Any:
    default = getattr(RegistryConfig(), name)
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                return value.lower() in ("1", "true", "yes", "on")
            return bool(value)
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, tuple):
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(item).strip() for item in items if str(item).strip())
        return str(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{source}: setting {name!r} has a bad value {value!r}") from None


def _build(base: RegistryConfig, values: Mapping[str, Any], source: str) -> RegistryConfig:
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise InvalidArgument(f"{source}: unknown setting(s) {', '.join(unknown)}")
    converted = {name: _convert(name, value, source) for name, value in values.items()}
    return dataclasses.replace(base, **converted)


def load_config(state_dir: Path, environ: Mapping[str, str] | None = None) -> RegistryConfig:
    """Read ``<state>/registry.toml`` (if present), then the environment."""
    config = RegistryConfig()
    path = state_dir / CONFIG_FILE
    if path.exists():
        try:
            document = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as error:
            raise InvalidArgument(f"{path}: {error}") from None
        config = _build(config, document, str(path))
    env = os.environ if environ is None else environ
    from_env = {
        key[len(ENV_PREFIX) :].lower(): value
        for key, value in env.items()
        if key.startswith(ENV_PREFIX) and key[len(ENV_PREFIX) :].lower() in _FIELDS
    }
    return _build(config, from_env, "environment")


def render_config(config: RegistryConfig) -> str:
    """The TOML text of ``config`` (what ``init`` writes)."""
    lines = ["# Provex registry settings; PROVEX_REGISTRY_<NAME> variables override them."]
    for name in _FIELDS:
        value = getattr(config, name)
        if isinstance(value, tuple):
            rendered = "[" + ", ".join(f'"{item}"' for item in value) + "]"
        elif isinstance(value, str):
            rendered = f'"{value}"'
        else:
            rendered = str(value)
        lines.append(f"{name} = {rendered}")
    return "\n".join(lines) + "\n"
