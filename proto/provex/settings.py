"""Typed settings for the Provex servers: a frozen dataclass, a TOML file, then environment.

Each service declares its settings as a frozen dataclass whose fields all
have defaults (``registry.config.RegistryConfig``, ``node.config.NodeConfig``)
and reads them with :func:`load_settings`: the defaults, then
``<state>/<file>`` (TOML), then ``<PREFIX><NAME>`` environment variables; the
command line applies its flags last with :func:`with_overrides`. Values are
converted to each field's type (bool, int, float, str, tuple of str); unknown
keys in the file, ``<PREFIX>*`` variables that name no setting, and values
that do not convert are refused with :class:`~provex.errors.InvalidArgument`
naming the setting (or the variable, with the known settings), so a typo is
never silently ignored.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from provex.errors import InvalidArgument

SettingsT = TypeVar("SettingsT")

__all__ = ("load_settings", "render_settings", "with_overrides")


def _field_names(settings: Any) -> list[str]:
    return [field.name for field in dataclasses.fields(settings)]


def _convert(default: Any, name: str, value: Any, source: str) -> Any:
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


def _apply(base: SettingsT, values: Mapping[str, Any], source: str) -> SettingsT:
    names = _field_names(base)
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise InvalidArgument(f"{source}: unknown setting(s) {', '.join(unknown)}")
    defaults = type(base)()
    converted = {
        name: _convert(getattr(defaults, name), name, value, source)
        for name, value in values.items()
    }
    return dataclasses.replace(base, **converted)  # type: ignore[type-var]


def with_overrides(settings: SettingsT, overrides: Mapping[str, Any]) -> SettingsT:
    """A copy with the given settings replaced (None values are ignored)."""
    present = {key: value for key, value in overrides.items() if value is not None}
    return _apply(settings, present, "override")


def load_settings(
    settings_class: type[SettingsT],
    path: Path,
    env_prefix: str,
    environ: Mapping[str, str] | None = None,
) -> SettingsT:
    """Defaults, then the TOML file at ``path`` (if present), then ``env_prefix*`` variables."""
    settings = settings_class()
    if path.exists():
        try:
            document = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as error:
            raise InvalidArgument(f"{path}: {error}") from None
        settings = _apply(settings, document, str(path))
    names = _field_names(settings)
    env = os.environ if environ is None else environ
    ours = {key: value for key, value in env.items() if key.startswith(env_prefix)}
    unknown = sorted(key for key in ours if key[len(env_prefix) :].lower() not in names)
    if unknown:
        known = ", ".join(env_prefix + name.upper() for name in names)
        raise InvalidArgument(
            f"environment: {', '.join(unknown)} "
            f"{'names' if len(unknown) == 1 else 'name'} no setting; unset "
            f"{'it' if len(unknown) == 1 else 'them'} or correct the spelling "
            f"(known settings: {known})"
        )
    from_env = {key[len(env_prefix) :].lower(): value for key, value in ours.items()}
    return _apply(settings, from_env, "environment")


def render_settings(settings: Any, env_prefix: str) -> str:
    """The TOML text of ``settings`` (what ``init`` writes), with a comment on overriding."""
    lines = [f"# Provex settings; {env_prefix}<NAME> variables and then flags override them."]
    for name in _field_names(settings):
        value = getattr(settings, name)
        if isinstance(value, tuple):
            rendered = "[" + ", ".join(f'"{item}"' for item in value) + "]"
        elif isinstance(value, bool):
            rendered = "true" if value else "false"
        elif isinstance(value, str):
            rendered = f'"{value}"'
        else:
            rendered = str(value)
        lines.append(f"{name} = {rendered}")
    return "\n".join(lines) + "\n"
