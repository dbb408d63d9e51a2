"""The registry's first-start scripts of compose and Kubernetes, run for real with the real CLI.

Each script runs twice under ``/bin/sh`` (its paths moved into a temporary
directory): the first run initializes the state, the second changes nothing
(keys stay), and the server certificate names every address the nodes of
that deployment dial the registry by.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from registry.config import load_config
from tests.deploy.test_manifests import STATE, compose, kind_named, registry_toml

BIN = Path(sys.executable).parent


def kubernetes_init() -> tuple[str, dict[str, str], str]:
    statefulset = kind_named("StatefulSet", "provex-registry")
    init = statefulset["spec"]["template"]["spec"]["initContainers"][0]
    env = {item["name"]: item["value"] for item in init["env"]}
    return init["command"][-1], env, registry_toml()


def compose_init() -> tuple[str, dict[str, str], str]:
    service: dict[str, Any] = compose()["services"]["registry-init"]
    return service["command"][0], dict(service["environment"]), ""


def run(script: str, env: dict[str, str], root: Path) -> subprocess.CompletedProcess[str]:
    moved = script.replace(STATE, str(root / "state")).replace("/etc/provex", str(root / "etc"))
    environment = {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HOME": str(root), **env}
    return subprocess.run(
        ["/bin/sh", "-ec", moved],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        check=False,
    )


@pytest.mark.parametrize("source", [kubernetes_init, compose_init], ids=["kubernetes", "compose"])
def test_registry_first_start_script_initializes_once_with_the_names_nodes_dial(
    source: Any, tmp_path: Path
) -> None:
    script, env, configmap = source()
    (tmp_path / "state").mkdir()
    if configmap:
        (tmp_path / "etc").mkdir()
        (tmp_path / "etc" / "registry.toml").write_text(configmap)
    first = run(script, env, tmp_path)
    assert first.returncode == 0, first.stderr
    state = tmp_path / "state"
    issuer = (state / "keys" / "issuer.pem").read_bytes()
    assert (state / "admins" / "admin" / "cert.pem").exists()
    again = run(script, env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert (state / "keys" / "issuer.pem").read_bytes() == issuer

    config = load_config(state, environ=env)
    if configmap:
        assert (state / "registry.toml").read_text() == configmap
    certificate = x509.load_pem_x509_certificate((state / "tls" / "server.pem").read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(config.server_dns_names) <= set(names.get_values_for_type(x509.DNSName))
    assert {ipaddress.ip_address(a) for a in config.server_ip_addresses} <= set(
        names.get_values_for_type(x509.IPAddress)
    )
    assert config.public_listen.startswith("0.0.0.0:")
    assert config.federation_listen.startswith("0.0.0.0:")
