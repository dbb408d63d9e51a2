"""provex.settings: environment variables with a service's prefix must name a setting."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from node.config import NodeConfig
from node.config import load_config as load_node_config
from provex.errors import InvalidArgument
from provex.settings import load_settings
from registry.config import RegistryConfig
from registry.config import load_config as load_registry_config


@dataclass(frozen=True)
class Sample:
    """A small settings class for the table below."""

    listen: str = "127.0.0.1:0"
    deadline: float = 2.0


ACCEPTED = {
    "nothing set": ({}, Sample()),
    "a known setting": ({"PROVEX_TEST_DEADLINE": "0.5"}, Sample(deadline=0.5)),
    "other prefixes are not ours": (
        {"PROVEX_OTHER_THING": "x", "PROVEX_KEEP_WORKDIR": "1", "PATH": "/bin"},
        Sample(),
    ),
    "a lower-case lookalike is not ours": ({"provex_test_typo": "1"}, Sample()),
}


@pytest.mark.parametrize("environ, expected", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_known_or_foreign_variables_are_accepted(
    tmp_path: Path, environ: dict[str, str], expected: Sample
) -> None:
    assert load_settings(Sample, tmp_path / "x.toml", "PROVEX_TEST_", environ) == expected


REFUSED = {
    "a typo": ({"PROVEX_TEST_DEADLNE": "1"}, r"PROVEX_TEST_DEADLNE names no setting"),
    "several": (
        {"PROVEX_TEST_B": "1", "PROVEX_TEST_A": "1", "PROVEX_TEST_LISTEN": ":1"},
        r"PROVEX_TEST_A, PROVEX_TEST_B name no setting",
    ),
    "the bare prefix": ({"PROVEX_TEST_": "1"}, r"PROVEX_TEST_ names no setting"),
    "the known settings are listed": (
        {"PROVEX_TEST_X": "1"},
        r"known settings: PROVEX_TEST_LISTEN, PROVEX_TEST_DEADLINE",
    ),
}


@pytest.mark.parametrize("environ, message", REFUSED.values(), ids=REFUSED.keys())
def test_unknown_variables_are_refused(
    tmp_path: Path, environ: dict[str, str], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        load_settings(Sample, tmp_path / "x.toml", "PROVEX_TEST_", environ)


def test_the_services_refuse_a_misspelt_variable(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="PROVEX_REGISTRY_MAX_BATCHES names no setting"):
        load_registry_config(tmp_path, environ={"PROVEX_REGISTRY_MAX_BATCHES": "8"})
    with pytest.raises(InvalidArgument, match="PROVEX_NODE_PEER_LISTENN names no setting"):
        load_node_config(tmp_path, environ={"PROVEX_NODE_PEER_LISTENN": ":1"})
    # Each service reads only its own prefix: the other's variables are left alone.
    assert load_registry_config(tmp_path, environ={"PROVEX_NODE_X": "1"}) == RegistryConfig()
    assert load_node_config(tmp_path, environ={"PROVEX_REGISTRY_X": "1"}) == NodeConfig()


def test_every_variable_the_tests_and_deploy_set_is_a_setting() -> None:
    """Nothing legitimate is refused: each PROVEX_REGISTRY_/PROVEX_NODE_ name in the tree."""

    root = Path(__file__).resolve().parents[2]
    pattern = re.compile(r"\bPROVEX_(REGISTRY|NODE)_([A-Z0-9_]+)")
    registry_names = {name.upper() for name in RegistryConfig.__dataclass_fields__}
    node_names = {name.upper() for name in NodeConfig.__dataclass_fields__}
    strays = []
    for folder in ("deploy", "tests/integration", "tests/deploy", "tests/bench"):
        for path in sorted((root / folder).rglob("*")):
            if not path.is_file() or path.suffix in (".pyc",):
                continue
            try:
                text = path.read_text()
            except UnicodeDecodeError:
                continue
            for service, name in pattern.findall(text):
                known = registry_names if service == "REGISTRY" else node_names
                if name not in known:
                    strays.append(f"{path.relative_to(root)}: PROVEX_{service}_{name}")
    assert strays == []
