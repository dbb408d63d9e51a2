"""Registry settings: defaults, file, environment, overrides, and clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from provex.errors import InvalidArgument
from registry.config import CONFIG_FILE, RegistryConfig, load_config, render_config


def test_defaults_when_nothing_is_set(tmp_path: Path) -> None:
    assert load_config(tmp_path, environ={}) == RegistryConfig()


def test_file_then_environment_then_overrides(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_text(
        'trust_domain = "gov.example"\nmax_batch = 64\nserver_dns_names = ["a", "b"]\n'
    )
    config = load_config(
        tmp_path,
        environ={"PROVEX_REGISTRY_MAX_BATCH": "128", "PROVEX_NODE_UNRELATED": "x"},
    )
    assert config.trust_domain == "gov.example"
    assert config.max_batch == 128
    assert config.server_dns_names == ("a", "b")
    overridden = config.with_overrides({"public_listen": "127.0.0.1:0", "max_batch": None})
    assert overridden.public_listen == "127.0.0.1:0"
    assert overridden.max_batch == 128


def test_rendered_file_reads_back_identically(tmp_path: Path) -> None:
    config = RegistryConfig(trust_domain="x.example", server_ip_addresses=("127.0.0.1", "::1"))
    (tmp_path / CONFIG_FILE).write_text(render_config(config))
    assert load_config(tmp_path, environ={}) == config


REFUSALS = {
    "unknown key in file": ("typo_setting = 1\n", {}, "unknown setting"),
    "bad number in file": ('max_batch = "many"\n', {}, "max_batch"),
    "bad number in environment": ("", {"PROVEX_REGISTRY_MAX_BATCH": "lots"}, "max_batch"),
    "not TOML": ("= =\n", {}, CONFIG_FILE),
}


@pytest.mark.parametrize("text, environ, message", REFUSALS.values(), ids=REFUSALS.keys())
def test_refusals_name_the_setting(
    tmp_path: Path, text: str, environ: dict[str, str], message: str
) -> None:
    (tmp_path / CONFIG_FILE).write_text(text)
    with pytest.raises(InvalidArgument, match=message):
        load_config(tmp_path, environ=environ)
