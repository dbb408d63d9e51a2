"""Trust root rotation with a real registry and real nodes: rotate offline, nodes follow.

A registry and a Guangzhou node (polling for trust roots every 0.5 s) serve.
``provex-registry trust rotate`` refuses while the registry runs; stopped,
it makes version 2 (same keys), then version 3 with new root keys, and the
registry, started again on the same ports, serves each. The running node
fetches, verifies, stores and uses each version (its metrics say which);
``log verify`` passes; the node's audit counts the logged versions (also
those signed by root keys the newest version no longer lists); a node invited
after the rotations enrolls (its invitation pins version 1, it walks to the
newest) and a node restarted walks its files from its pin. Registration, listing and federated
search keep working throughout.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from provex import trust
from provex.v1 import market_pb2, node_pb2, node_pb2_grpc, registry_pb2, registry_pb2_grpc
from tests.integration.conftest import RunningRegistry, run_cli, start_registry, stop_registry
from tests.integration.nodes import RunningNode, create_node, node_cli, start_node, stop_node
from tests.integration.test_node_federation import certified, description, holder_of, listed
from tests.integration.test_observability import scrape, value

DEADLINE = 20.0
GZ, SH = ("gd-gzde", "440100"), ("sh-sde", "310000")
POLL = {"PROVEX_NODE_TRUST_ROOT_POLL_SECONDS": "0.5"}


@dataclass
class Federation:
    registry: RunningRegistry
    nodes: dict[str, RunningNode]
    workdir: Path

    def operator(self, node_id: str) -> node_pb2_grpc.OperatorServiceStub:
        return node_pb2_grpc.OperatorServiceStub(self.nodes[node_id].operator_channel())

    async def restart_registry(self) -> None:
        """Start the stopped registry again on the ports the nodes know."""
        endpoints = self.registry.endpoints
        self.registry = await start_registry(
            self.registry.state,
            self.registry.trust_root_digest,
            (endpoints["public"], endpoints["federation"]),
        )


@pytest.fixture(scope="module")
async def federation(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Federation]:
    workdir = tmp_path_factory.mktemp("trust-rotation")
    state = workdir / "registry"
    init = run_cli("init", "--state", state, "--json")
    assert init.returncode == 0, init.stderr
    added = run_cli("admin", "add", "alice", "--role", "admin", "--state", state)
    assert added.returncode == 0, added.stderr
    running = Federation(
        await start_registry(state, json.loads(init.stdout)["trust_root_digest"]), {}, workdir
    )
    try:
        node_id, region = GZ
        running.nodes[node_id] = await start_node(
            create_node(running.registry, workdir, node_id, region), POLL
        )
        await add_holder(running, node_id, region)
        yield running
    finally:
        for node in running.nodes.values():
            assert await stop_node(node) == 0
        if running.registry.process.returncode is None:
            assert await stop_registry(running.registry) == 0


async def add_holder(federation: Federation, node_id: str, region: str) -> None:
    await federation.operator(node_id).AddMember(
        node_pb2.AddMemberRequest(
            member=registry_pb2.Member(
                credit_code=holder_of(region), name=f"Holder {node_id}", region_code=region
            )
        ),
        timeout=DEADLINE,
    )


async def trust_root_in_use(node: RunningNode) -> float:
    return value(await scrape(node.endpoints), "provex_node_trust_root_version")


async def wait_for_version(node: RunningNode, version: int) -> None:
    """Until the running node stores and uses ``version``."""
    deadline = time.monotonic() + 20
    while await trust_root_in_use(node) != version:
        assert time.monotonic() < deadline, (node.state / "serve.log").read_text()[-3000:]
        await asyncio.sleep(0.2)
    assert (node.state / "trust" / f"root-{version}.json").exists()


def rotate(federation: Federation, *flags: str) -> dict[str, object]:
    done = run_cli("trust", "rotate", "--state", federation.registry.state, "--json", *flags)
    assert done.returncode == 0, done.stderr
    answer: dict[str, object] = json.loads(done.stdout)
    return answer


async def registration_and_search_work(federation: Federation, node_id: str, key: str) -> None:
    """A new dataset is certified by the registry, listed, and found by federated search."""
    region = dict((GZ, SH))[node_id]
    operator = federation.operator(node_id)
    record = await certified(
        operator,
        key,
        description(
            holder_of(region), f"交通 {key}", "Rotation check.", "transport.road.traffic_flow"
        ),
    )
    listing = await listed(operator, record.dataset_id, 1000)
    for asking in federation.nodes:
        deadline = time.monotonic() + 15
        while True:
            answer = await federation.operator(asking).FederatedSearch(
                node_pb2.FederatedSearchRequest(query=market_pb2.SearchQuery(text=key)),
                timeout=DEADLINE,
            )
            if node_id in answer.answered and answer.hits:
                break
            assert time.monotonic() < deadline, f"{asking} cannot find {key}: {answer}"
            await asyncio.sleep(0.3)
        assert [hit.listing.listing_id for hit in answer.hits] == [listing.listing_id]


async def wait_for_checkpoint(node: RunningNode, federation: Federation, size: int) -> None:
    """Until the node has verified a checkpoint of at least ``size`` entries."""
    operator = federation.operator(node.node_id)
    deadline = time.monotonic() + 20
    while True:
        status = await operator.GetNodeStatus(node_pb2.GetNodeStatusRequest(), timeout=DEADLINE)
        if status.checkpoint and int(status.checkpoint.split("\n")[1]) >= size:
            return
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.2)


async def test_rotation_is_refused_while_the_registry_runs(federation: Federation) -> None:
    refused = run_cli("trust", "rotate", "--state", federation.registry.state)
    assert refused.returncode == 2
    assert "is running" in refused.stderr and "stop it" in refused.stderr
    assert not (federation.registry.state / "trust" / "root-2.json").exists()
    assert await trust_root_in_use(federation.nodes[GZ[0]]) == 1


async def test_a_running_node_follows_a_rotation(federation: Federation) -> None:
    node = federation.nodes[GZ[0]]
    assert await stop_registry(federation.registry) == 0
    second = rotate(federation, "--validity-days", "400")
    assert second["version"] == 2 and second["new_root_keys"] == []
    await federation.restart_registry()
    async with federation.registry.public_channel() as channel:
        served = await registry_pb2_grpc.TrustServiceStub(channel).GetTrustRoot(
            registry_pb2.GetTrustRootRequest(), timeout=DEADLINE
        )
    assert served.latest_version == 2
    assert trust.digest_of(served.envelope) == second["digest"]
    await wait_for_version(node, 2)
    assert (node.state / "trust" / "root-2.json").read_bytes() == served.envelope
    assert "trust root version 2 in use" in (node.state / "serve.log").read_text()
    verified = run_cli("log", "verify", "--state", federation.registry.state)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    await registration_and_search_work(federation, GZ[0], "rotated-2")
    # The node's audit of the registry's log counts both logged trust root versions.
    await wait_for_checkpoint(node, federation, int(str(second["log_index"])) + 1)
    audited = node_cli("audit", "--state", node.state, "--json")
    assert audited.returncode == 0, audited.stdout + audited.stderr
    assert json.loads(audited.stdout)["entries_by_type"]["trust-root"] == 2


async def test_new_root_keys_and_nodes_joining_or_restarting(federation: Federation) -> None:
    node = federation.nodes[GZ[0]]
    assert await stop_registry(federation.registry) == 0
    third = rotate(federation, "--new-root-keys")
    assert third["version"] == 3 and len(third["new_root_keys"]) == 3  # type: ignore[arg-type]
    await federation.restart_registry()
    await wait_for_version(node, 3)
    verified = run_cli("log", "verify", "--state", federation.registry.state)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # Older versions are signed by root keys version 3 no longer lists: the audit still
    # counts them (each is the file the node verified).
    await wait_for_checkpoint(node, federation, int(str(third["log_index"])) + 1)
    audited = node_cli("audit", "--state", node.state, "--json")
    assert audited.returncode == 0, audited.stdout + audited.stderr
    assert json.loads(audited.stdout)["entries_by_type"]["trust-root"] == 3
    # A node invited now pins version 1 (as every invitation) and walks to version 3.
    node_id, region = SH
    state = create_node(federation.registry, federation.workdir, node_id, region)
    identity = json.loads((state / "identity.json").read_text())
    assert identity["trust_root_digest"] == federation.registry.trust_root_digest
    registry_trust = federation.registry.state / "trust"
    for version in (1, 2, 3):
        name = f"root-{version}.json"
        assert (state / "trust" / name).read_bytes() == (registry_trust / name).read_bytes()
    federation.nodes[node_id] = await start_node(state, POLL)
    assert await trust_root_in_use(federation.nodes[node_id]) == 3
    await add_holder(federation, node_id, region)
    await registration_and_search_work(federation, node_id, "joined-after-3")
    # A node restarted walks root-1.json to root-3.json from its pin.
    assert await stop_node(node) == 0
    federation.nodes[GZ[0]] = node = await start_node(node.state, POLL)
    assert await trust_root_in_use(node) == 3
    await registration_and_search_work(federation, GZ[0], "restarted-at-3")
