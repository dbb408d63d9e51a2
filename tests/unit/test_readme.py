"""The README's configuration reference names every setting of both servers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from node.config import NodeConfig
from registry.config import RegistryConfig

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.mark.parametrize("config", [RegistryConfig, NodeConfig])
def test_every_setting_is_documented(config: type) -> None:
    reference = README.split("## Configuration reference", 1)[1].split("\n## ", 1)[0]
    missing = [f.name for f in dataclasses.fields(config) if f"`{f.name}`" not in reference]
    assert not missing, f"add {missing} to the README's configuration reference"
