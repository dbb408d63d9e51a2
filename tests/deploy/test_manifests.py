"""The deployment material in deploy/ against the schemas and against the programs themselves.

- Every Kubernetes manifest validates (strictly: unknown fields are errors)
  against the Kubernetes JSON schemas bundled with ``kubernetes-validate``,
  with the network switched off.
- Every ``PROVEX_REGISTRY_*`` / ``PROVEX_NODE_*`` variable, every TOML
  setting, every ``provex-registry`` / ``provex-node`` command line, every
  port and every state path that the Containerfile, compose file, manifests,
  systemd units and the guide name exists in :class:`RegistryConfig` /
  :class:`NodeConfig`, the argument parsers, or the state layouts. The lists
  are derived from the code, never written down here.
- The wiring holds together: nodes dial names the registry's certificate
  carries, Services point at declared container ports, stop timeouts exceed
  ``grace_seconds``, each server has its own volume and a health probe.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import re
import shlex
import socket
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from node import cli as node_cli
from node import config as node_config
from node import state as node_state
from provex import ids, rpc, settings
from registry import cli as registry_cli
from registry import config as registry_config
from registry import state as registry_state

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
KUBERNETES_VERSION = kubernetes_validate.latest_version()
STATE = "/var/lib/provex"
PROBE = ["python", "-m", "provex.healthprobe", "--state", STATE]
NODES = {"gd-gzde": "440100", "gd-szde": "440300", "sh-sde": "310000"}

PROGRAMS: dict[str, Any] = {
    "provex-registry": (
        registry_cli.build_parser,
        registry_config.RegistryConfig,
        "PROVEX_REGISTRY_",
    ),
    "provex-node": (node_cli.build_parser, node_config.NodeConfig, "PROVEX_NODE_"),
}


def deploy_files() -> list[Path]:
    """Every file of the deployment material (federation.py is the launcher, not material)."""
    return sorted(
        path
        for path in DEPLOY.rglob("*")
        if path.is_file() and path.suffix != ".py" and "__pycache__" not in path.parts
    )


@functools.cache
def kubernetes_documents() -> tuple[tuple[str, dict[str, Any]], ...]:
    """Every document of every manifest (read once; tests must not change them)."""
    documents = []
    for path in sorted(KUBERNETES.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                documents.append((str(path.relative_to(KUBERNETES)), document))
    return tuple(documents)


@functools.cache
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def setting_names(config_class: type[Any]) -> set[str]:
    return {field.name for field in dataclasses.fields(config_class)}


def load_with(
    config_class: type[Any], prefix: str, toml: str = "", env: dict[str, str] | None = None
) -> Any:
    """Settings through the programs' own conversions: a TOML text, then variables.

    Unknown TOML keys are refused by the loader; unknown variables (which the
    loader ignores) are refused here.
    """
    env = env or {}
    names = setting_names(config_class)
    unknown = sorted(
        k for k in env if k.startswith(prefix) and k[len(prefix) :].lower() not in names
    )
    assert not unknown, f"variables naming no setting: {unknown}"
    loaded = settings.with_overrides(config_class(), tomllib.loads(toml))
    values = {k[len(prefix) :].lower(): v for k, v in env.items() if k.startswith(prefix)}
    return settings.with_overrides(loaded, values)


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def host_of(address: str) -> str:
    return address.rsplit(":", 1)[0]


def kind_named(kind: str, name: str) -> dict[str, Any]:
    for _, document in kubernetes_documents():
        if document["kind"] == kind and document["metadata"]["name"] == name:
            return document
    raise AssertionError(f"no {kind} {name} in deploy/kubernetes")


def workload_containers(document: dict[str, Any]) -> list[dict[str, Any]]:
    spec = document["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


# ---------------------------------------------------------------- Kubernetes schemas


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(doc, id=f"{file}:{doc['kind']}/{doc['metadata']['name']}")
        for file, doc in kubernetes_documents()
    ],
)
def test_every_manifest_validates_offline_against_the_kubernetes_schema(
    document: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("schema validation tried to use the network")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (
            ("spec", "template", "spec", "containers", 0, "readinesProbe"),
            {"exec": {"command": ["true"]}},
        ),
        (("spec", "replicas"), "one"),
        (("spec", "template", "spec", "containers", 0, "resources", "limits", "memory"), ["1Gi"]),
    ],
)
def test_the_validator_refuses_a_misspelt_or_mistyped_field(
    path: tuple[str | int, ...], value: object
) -> None:
    broken = yaml.safe_load(yaml.safe_dump(kind_named("StatefulSet", "provex-registry")))
    target: Any = broken
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest_but_the_secret_templates() -> None:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml"}
    assert listed == on_disk
    assert all(not entry.startswith("secrets") for entry in listed)
    assert {p.name for p in (KUBERNETES / "secrets").glob("*.yaml")} == {
        f"{node}-enrollment.yaml" for node in NODES
    }


# ---------------------------------------------------------------- Kubernetes wiring


def registry_toml() -> str:
    return str(
        kind_named("ConfigMap", "provex-registry-config")["data"][registry_config.CONFIG_FILE]
    )


def node_toml(node: str) -> str:
    return str(kind_named("ConfigMap", f"provex-{node}-config")["data"][node_config.CONFIG_FILE])


def test_registry_statefulset_volume_services_probes_and_resources() -> None:
    config = load_with(registry_config.RegistryConfig, "PROVEX_REGISTRY_", registry_toml())
    statefulset = kind_named("StatefulSet", "provex-registry")
    assert statefulset["spec"]["replicas"] == 1
    assert kind_named("Service", statefulset["spec"]["serviceName"])["spec"]["clusterIP"] == "None"
    claims = {claim["metadata"]["name"] for claim in statefulset["spec"]["volumeClaimTemplates"]}
    assert claims == {"state"}
    server = statefulset["spec"]["template"]["spec"]["containers"][0]
    ports = {port["name"]: port["containerPort"] for port in server["ports"]}
    assert ports == {
        "public": port_of(config.public_listen),
        "federation": port_of(config.federation_listen),
    }
    # One Service per port, each pointing at the container port of its name.
    for name in ("public", "federation"):
        service = kind_named("Service", f"provex-registry-{name}")
        assert [p["targetPort"] for p in service["spec"]["ports"]] == [name]
        assert [p["port"] for p in service["spec"]["ports"]] == [ports[name]]
        assert service["spec"]["selector"] == statefulset["spec"]["selector"]["matchLabels"]
    spec = statefulset["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] > config.grace_seconds


def test_registry_init_uses_the_settings_of_its_configmap() -> None:
    """Settings ``init`` bakes into the certificate and trust root equal the ConfigMap's."""
    from_file = load_with(registry_config.RegistryConfig, "PROVEX_REGISTRY_", registry_toml())
    init = kind_named("StatefulSet", "provex-registry")["spec"]["template"]["spec"][
        "initContainers"
    ][0]
    env = {item["name"]: item["value"] for item in init["env"]}
    from_env = load_with(registry_config.RegistryConfig, "PROVEX_REGISTRY_", env=env)
    for name in ("trust_domain", "log_origin", "server_dns_names", "server_ip_addresses"):
        assert getattr(from_env, name) == getattr(from_file, name), name
    assert (
        f"cp /etc/provex/{registry_config.CONFIG_FILE} {STATE}/{registry_config.CONFIG_FILE}"
        in (init["command"][-1])
    )


@pytest.mark.parametrize("node", sorted(NODES))
def test_node_statefulset_dials_names_the_registry_certificate_carries(node: str) -> None:
    registry = load_with(registry_config.RegistryConfig, "PROVEX_REGISTRY_", registry_toml())
    config = load_with(node_config.NodeConfig, "PROVEX_NODE_", node_toml(node))
    statefulset = kind_named("StatefulSet", f"provex-{node}")
    service = kind_named("Service", statefulset["spec"]["serviceName"])
    # Peers dial the advertised address: this node's Service, on its peer port.
    assert (
        host_of(config.peer_advertise) == f"{service['metadata']['name']}.provex.svc.cluster.local"
    )
    assert port_of(config.peer_advertise) == port_of(config.peer_listen)
    assert [p["port"] for p in service["spec"]["ports"]] == [port_of(config.peer_listen)]
    server = statefulset["spec"]["template"]["spec"]["containers"][0]
    assert [p["containerPort"] for p in server["ports"]] == [port_of(config.peer_listen)]
    # The operator port stays on loopback, where its certificate and the probe are valid.
    assert host_of(config.operator_listen) == "127.0.0.1"
    # The registry's federation Service, named in its certificate.
    federation = kind_named("Service", "provex-registry-federation")
    assert host_of(config.registry_address) in registry.server_dns_names
    assert host_of(config.registry_address).startswith(
        f"{federation['metadata']['name']}.provex.svc"
    )
    assert port_of(config.registry_address) == port_of(registry.federation_listen)
    script = statefulset["spec"]["template"]["spec"]["initContainers"][0]["command"][-1]
    args = node_cli.build_parser().parse_args(shlex.split(enroll_line(script)))
    assert args.registry_federation == config.registry_address
    assert host_of(args.registry) in registry.server_dns_names
    assert port_of(args.registry) == port_of(registry.public_listen)
    init = node_cli.build_parser().parse_args(shlex.split(init_line(script)))
    assert (init.node_id, init.region) == (node, NODES[node])
    # The enrollment Secret it mounts exists as a template with the two keys enroll reads.
    volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    secret = kind_named("Secret", volumes["enrollment"]["secret"]["secretName"])
    assert set(secret["stringData"]) == {"invitation", "registry-ca.pem"}
    init_container = statefulset["spec"]["template"]["spec"]["initContainers"][0]
    mounted = {m["name"]: Path(m["mountPath"]) for m in init_container["volumeMounts"]}
    assert args.invitation == f"@{mounted['enrollment'] / 'invitation'}"
    assert args.registry_ca == mounted["enrollment"] / "registry-ca.pem"
    assert (
        statefulset["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        > config.grace_seconds
    )


def enroll_line(script: str) -> str:
    return next(line for line in script.splitlines() if "provex-node enroll" in line).split(
        "provex-node", 1
    )[1]


def init_line(script: str) -> str:
    return next(line for line in script.splitlines() if "provex-node init" in line).split(
        "provex-node", 1
    )[1]


@pytest.mark.parametrize(
    "document",
    [doc for _, doc in kubernetes_documents() if doc["kind"] == "StatefulSet"],
    ids=lambda doc: doc["metadata"]["name"],
)
def test_every_container_is_probed_limited_and_unprivileged(document: dict[str, Any]) -> None:
    spec = document["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    for container in workload_containers(document):
        resources = container["resources"]
        assert set(resources["requests"]) == {"cpu", "memory"}
        assert set(resources["limits"]) == {"cpu", "memory"}
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
        assert mounts["state"] == STATE
    server = spec["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert server[probe]["exec"]["command"] == PROBE
        assert server[probe]["timeoutSeconds"] >= 5


# ---------------------------------------------------------------- compose


def test_compose_runs_a_registry_and_three_nodes_each_with_its_own_volume() -> None:
    services = compose()["services"]
    servers = ["registry", *NODES]
    volumes = {}
    for name in servers:
        service = services[name]
        assert service["healthcheck"]["test"] == ["CMD", *PROBE]
        assert service["stop_signal"] == "SIGTERM"
        state_mounts = [v for v in service["volumes"] if v.endswith(f":{STATE}")]
        assert len(state_mounts) == 1
        volumes[name] = state_mounts[0].split(":")[0]
        assert volumes[name] in compose()["volumes"]
        program = "provex-registry" if name == "registry" else "provex-node"
        assert service["command"] == [program, "serve", "--state", STATE]
    assert len(set(volumes.values())) == len(servers)
    for node, region in NODES.items():
        ids.validate_node_id(node)
        ids.region(region)
        init = services[f"{node}-init"]
        enroll = services[f"{node}-enroll"]
        assert services[node]["depends_on"][f"{node}-enroll"]["condition"] == (
            "service_completed_successfully"
        )
        assert enroll["depends_on"]["registry"]["condition"] == "service_healthy"
        assert enroll["depends_on"][f"{node}-init"]["condition"] == "service_completed_successfully"
        assert f"{volumes[node]}:{STATE}" in init["volumes"]
        assert f"{volumes['registry']}:{STATE}:ro" in enroll["volumes"]
        assert enroll["network_mode"] == "service:registry"
        commands = dict((argv[0], argv[1:]) for argv in command_lines("\n".join(enroll["command"])))
        invite = registry_cli.build_parser().parse_args(commands["provex-registry"])
        assert (invite.node_id, invite.region) == (node, region)
        made = node_cli.build_parser().parse_args(
            next(argv for argv in command_lines("\n".join(init["command"])))[1:]
        )
        assert (made.node_id, made.region) == (node, region)


def test_compose_settings_wire_the_nodes_to_the_registry() -> None:
    services = compose()["services"]
    registry = load_with(
        registry_config.RegistryConfig,
        "PROVEX_REGISTRY_",
        env=services["registry-init"]["environment"],
    )
    published = {int(mapping.split(":")[-1]) for mapping in services["registry"]["ports"]}
    assert published == {port_of(registry.public_listen), port_of(registry.federation_listen)}
    assert "0.0.0.0" in registry.server_ip_addresses  # what `admin invite` dials next to it
    for node in NODES:
        config = load_with(
            node_config.NodeConfig, "PROVEX_NODE_", env=services[f"{node}-init"]["environment"]
        )
        assert config.peer_advertise == f"{node}:{port_of(config.peer_listen)}"
        assert host_of(config.operator_listen) == "127.0.0.1"
        enroll = dict(
            (argv[0], argv[1:])
            for argv in command_lines("\n".join(services[f"{node}-enroll"]["command"]))
        )
        args = node_cli.build_parser().parse_args(enroll["provex-node"])
        for address, listen in (
            (args.registry, registry.public_listen),
            (args.registry_federation, registry.federation_listen),
        ):
            assert host_of(address) in registry.server_dns_names
            assert port_of(address) == port_of(listen)
        assert args.registry_ca == Path(STATE) / "tls" / "ca.pem"
        assert stop_seconds(services[node]["stop_grace_period"]) > config.grace_seconds
    assert stop_seconds(services["registry"]["stop_grace_period"]) > registry.grace_seconds


def stop_seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)s", text)
    assert match, text
    return float(match.group(1))


# ---------------------------------------------------------------- systemd


def unit(path: Path) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections[current] = {}
            continue
        key, _, value = line.partition("=")
        sections[current].setdefault(key, []).append(value)
    return sections


HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "CapabilityBoundingSet": "",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "RestrictNamespaces": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "SystemCallArchitectures": "native",
    "KillSignal": "SIGTERM",
}


@pytest.mark.parametrize(
    ("name", "program"),
    [("provex-registry.service", "provex-registry"), ("provex-node@.service", "provex-node")],
)
def test_systemd_units_are_hardened_and_stop_after_the_grace_period(
    name: str, program: str
) -> None:
    service = unit(DEPLOY / "systemd" / name)["Service"]
    for key, value in HARDENING.items():
        assert service[key] == [value], key
    assert "@system-service" in service["SystemCallFilter"]
    assert service["User"] == ["provex"]
    build_parser, config_class, _ = PROGRAMS[program]
    timeout = stop_seconds(service["TimeoutStopSec"][0])
    assert timeout > config_class().grace_seconds
    executable, *argv = shlex.split(service["ExecStart"][0])
    assert Path(executable).name == program
    args = build_parser().parse_args([a.replace("%i", "gd-gzde") for a in argv])
    assert args.command == "serve"
    state = str(args.state).replace("gd-gzde", "%i")
    assert service["ReadWritePaths"] == [state]
    assert f"/var/lib/{service['StateDirectory'][0]}" == state
    assert "WantedBy" in unit(DEPLOY / "systemd" / name)["Install"]


# ---------------------------------------------------------------- Containerfile


def test_containerfile_builds_one_non_root_image_for_both_programs() -> None:
    text = (DEPLOY / "Containerfile").read_text()
    instructions = [
        line.split(None, 1) for line in joined_lines(text) if line and not line.startswith("#")
    ]
    froms = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert all(rest.startswith("python:3.11-slim") for rest in froms)
    user = [rest for keyword, rest in instructions if keyword == "USER"][-1]
    assert user.split(":")[0] not in ("0", "root")
    assert [rest for keyword, rest in instructions if keyword == "VOLUME"] == [f'["{STATE}"]']
    exposed = {
        int(p) for keyword, rest in instructions if keyword == "EXPOSE" for p in rest.split()
    }
    registry = load_with(registry_config.RegistryConfig, "PROVEX_REGISTRY_", registry_toml())
    node = load_with(node_config.NodeConfig, "PROVEX_NODE_", node_toml("gd-gzde"))
    assert exposed == {
        port_of(registry.public_listen),
        port_of(registry.federation_listen),
        port_of(node.peer_listen),
    }
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert set(PROGRAMS) <= set(pyproject["project"]["scripts"])
    # What the image copies is not excluded by its ignore file.
    ignore = (DEPLOY / "Containerfile.dockerignore").read_text().split()
    for keyword, rest in instructions:
        if keyword == "COPY" and not rest.startswith("--from"):
            for source in rest.split()[:-1]:
                assert f"!{source}" in ignore or f"!{source}/**" in ignore, source


def joined_lines(text: str) -> Iterator[str]:
    """Lines with backslash continuations joined."""
    yield from (line.strip() for line in text.replace("\\\n", " ").splitlines())


# ---------------------------------------------------------------- names across all files


VARIABLE = re.compile(r"\bPROVEX_(?:REGISTRY|NODE)_[A-Z0-9_]+")


def test_every_variable_named_anywhere_is_a_setting() -> None:
    known = {
        prefix + name.upper()
        for _, config_class, prefix in PROGRAMS.values()
        for name in setting_names(config_class)
    }
    # The generic forms the guide uses when it explains the scheme.
    generic = {"PROVEX_REGISTRY_", "PROVEX_NODE_"}
    seen: dict[str, set[str]] = {}
    for path in deploy_files():
        for name in VARIABLE.findall(path.read_text()):
            seen.setdefault(name, set()).add(path.name)
    unknown = {name: files for name, files in seen.items() if name not in known | generic}
    assert not unknown, f"variables that name no setting: {unknown}"
    assert seen  # the material does use them


def test_every_toml_setting_named_in_the_material_is_a_setting() -> None:
    """ConfigMaps load through the programs' own loader, which refuses unknown keys."""
    for _, document in kubernetes_documents():
        if document["kind"] != "ConfigMap":
            continue
        for key, text in document["data"].items():
            program = {
                registry_config.CONFIG_FILE: "provex-registry",
                node_config.CONFIG_FILE: "provex-node",
            }[key]
            _, config_class, prefix = PROGRAMS[program]
            loaded = load_with(config_class, prefix, text)
            assert set(tomllib.loads(text)) <= setting_names(config_class)
            assert isinstance(loaded, config_class)


COMMAND = re.compile(
    r"(?:^|[\s(;&|])(?:/opt/provex/bin/)?(provex-(?:registry|node))(?=\s|$)([^\n;&|)>`]*)"
)


def command_lines(text: str) -> Iterator[list[str]]:
    """Every provex-registry / provex-node command line in a shell text."""
    for match in COMMAND.finditer(text.replace("\\\n", " ")):
        rest = match.group(2).strip().rstrip(".,:")
        yield [match.group(1), *shlex.split(rest, comments=True)]


def yaml_strings_and_argvs(value: Any) -> Iterator[str | list[str]]:
    if isinstance(value, dict):
        for item in value.values():
            yield from yaml_strings_and_argvs(item)
    elif isinstance(value, list):
        if value and all(isinstance(item, str) for item in value):
            yield [str(item) for item in value]
        for item in value:
            yield from yaml_strings_and_argvs(item)
    elif isinstance(value, str):
        yield value


def command_lines_in(path: Path) -> Iterator[list[str]]:
    """Command lines of a deploy file: YAML values, Markdown code blocks, other text."""
    text = path.read_text()
    if path.suffix == ".yaml":
        for document in yaml.safe_load_all(text):
            for value in yaml_strings_and_argvs(document):
                if isinstance(value, list):
                    if value[0] in PROGRAMS:
                        yield value
                else:
                    yield from command_lines(value)
    elif path.suffix == ".md":
        for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.DOTALL):
            yield from command_lines(block)
    else:  # Containerfile, systemd units: commands in comments count too.
        yield from command_lines(re.sub(r"(?m)^\s*#\s?", "", text))


def test_every_command_line_in_the_material_parses_with_the_real_cli(
    capsys: pytest.CaptureFixture[str],
) -> None:
    checked = 0
    for path in deploy_files():
        for program, *argv in command_lines_in(path):
            if not argv or argv[0].startswith("<") or argv[0] in ("--help", "--version"):
                continue
            parser: argparse.ArgumentParser = PROGRAMS[program][0]()
            try:
                parser.parse_args([a.replace("%i", "gd-gzde") for a in argv])
            except SystemExit:
                pytest.fail(
                    f"{path.name}: `{program} {shlex.join(argv)}`: {capsys.readouterr().err}"
                )
            checked += 1
    assert checked >= 20


def subcommands(parser: argparse.ArgumentParser) -> set[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


def known_state_paths() -> set[str]:
    """Relative paths inside a registry or node state directory, from the layouts and rpc."""
    found: set[str] = set()
    for layout_class in (registry_state.StateLayout, node_state.StateLayout):
        layout = layout_class(Path("/"))
        for name in dir(layout_class):
            value = getattr(layout, name)
            if isinstance(value, Path):
                found.add(value.relative_to("/").as_posix())
    registry_layout = registry_state.StateLayout(Path("/"))
    found.update(registry_layout.root_key(n).relative_to("/").as_posix() for n in (1, 2, 3))
    found.update(
        layout.trust_root(1).relative_to("/").as_posix()
        for layout in (registry_layout, node_state.StateLayout(Path("/")))
    )
    return found


def endpoints_path(tmp_path: Path) -> str:
    return rpc.write_endpoints(tmp_path, {}).relative_to(tmp_path).as_posix()


PATH = re.compile(r"/var/lib/provex(?:/[A-Za-z0-9_.%@<>-]+)*")


def test_every_state_path_named_anywhere_exists_in_the_state_layouts(tmp_path: Path) -> None:
    known = known_state_paths() | {endpoints_path(tmp_path)}
    folders = {str(Path(path).parent) for path in known} - {"."}
    # A state directory is /var/lib/provex (containers) or /var/lib/provex/<name> (systemd).
    state_names = {"registry", "%i", "<node-id>", *NODES}
    problems = []
    for path in deploy_files():
        for found in PATH.findall(path.read_text()):
            parts = found.rstrip(".").split("/")[4:]
            if parts and parts[0] in state_names:
                parts = parts[1:]
            relative = "/".join(parts)
            if relative and relative not in known | folders | state_names:
                problems.append(f"{path.name}: {found}")
    assert not problems, "paths that no state layout has:\n" + "\n".join(problems)
