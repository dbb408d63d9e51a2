"""The registry admin's commands through the real CLI against a real registry and node.

``provex-registry nodes`` (the directory with certificate expiry), ``admin
revoke`` (EnrollmentService.RevokeNode), ``certificate status|suspend|revoke|
reinstate`` (CertificateService.GetStatus / SetStatus): human tables and
sentences by default, ``--json`` for scripts, ``--help`` for each, and errors
that say what to do next. The node follows the registry's statements, so a
suspension from the command line suspends its listing.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from provex.v1 import market_pb2, node_pb2, node_pb2_grpc, registry_pb2
from tests.integration.conftest import RunningRegistry, run_cli, start_registry, stop_registry
from tests.integration.nodes import RunningNode, create_node, start_node, stop_node
from tests.integration.test_node_federation import certified, description, holder_of, listed

DEADLINE = 20.0
NODE, REGION = "gd-gzde", "440100"
OTHER, OTHER_REGION = "sh-sde", "310000"


@dataclass
class Market:
    registry: RunningRegistry
    nodes: dict[str, RunningNode]
    dataset_id: str
    listing_id: str

    @property
    def state(self) -> Path:
        return self.registry.state

    def operator(self) -> node_pb2_grpc.OperatorServiceStub:
        return node_pb2_grpc.OperatorServiceStub(self.nodes[NODE].operator_channel())


@pytest.fixture(scope="module")
async def market(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Market]:
    workdir = tmp_path_factory.mktemp("admin-cli")
    state = workdir / "registry"
    init = run_cli("init", "--state", state, "--json")
    assert init.returncode == 0, init.stderr
    added = run_cli("admin", "add", "alice", "--role", "admin", "--state", state)
    assert added.returncode == 0, added.stderr
    registry = await start_registry(state, json.loads(init.stdout)["trust_root_digest"])
    nodes: dict[str, RunningNode] = {}
    try:
        for node_id, region in ((NODE, REGION), (OTHER, OTHER_REGION)):
            nodes[node_id] = await start_node(create_node(registry, workdir, node_id, region))
        operator = node_pb2_grpc.OperatorServiceStub(nodes[NODE].operator_channel())
        holder = holder_of(REGION)
        await operator.AddMember(
            node_pb2.AddMemberRequest(
                member=registry_pb2.Member(credit_code=holder, name="Holder", region_code=REGION)
            ),
            timeout=DEADLINE,
        )
        record = await certified(
            operator,
            "cli-1",
            description(holder, "广州公交客流", "Bus ridership.", "transport.road.traffic_flow"),
        )
        listing = await listed(operator, record.dataset_id, 5000)
        yield Market(registry, nodes, record.dataset_id, listing.listing_id)
    finally:
        for node in nodes.values():
            assert await stop_node(node) == 0
        assert await stop_registry(registry) == 0


def ok(*args: str | Path) -> str:
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def refused(*args: str | Path) -> str:
    done = run_cli(*args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.startswith("provex-registry: ")
    return done.stderr


HELP = {
    ("nodes",): "certificate expiry",
    ("admin", "revoke"): "--reason",
    ("certificate",): "reinstate",
    ("certificate", "status"): "dataset_id",
    ("certificate", "suspend"): "--reason",
    ("certificate", "revoke"): "--reason",
    ("certificate", "reinstate"): "--reason",
}


@pytest.mark.parametrize("command, mentions", HELP.items(), ids=[" ".join(c) for c in HELP])
def test_every_command_has_help(command: tuple[str, ...], mentions: str) -> None:
    assert mentions in ok(*command, "--help")


async def test_nodes_lists_the_directory_with_certificate_expiry(market: Market) -> None:
    text = ok("nodes", "--state", market.state)
    header, rule, *rows = text.splitlines()
    assert header.split()[:5] == ["NODE", "REGION", "NAME", "ENDPOINT", "STATUS"]
    assert "CERTIFICATE EXPIRES (UTC)" in header
    assert set(rule) <= {"-", " "}
    assert [row.split()[0] for row in rows] == [NODE, OTHER]
    document = json.loads(ok("nodes", "--state", market.state, "--json"))
    entries = {n["node_id"]: n for n in document["nodes"]}
    assert entries[NODE]["region_code"] == REGION
    assert entries[NODE]["status"] == "active"
    assert entries[NODE]["peer_endpoint"] == market.nodes[NODE].endpoints["peer"]
    expires = datetime.fromisoformat(entries[NODE]["certificate_expires_at"])
    assert timedelta(days=89) < expires - datetime.now(UTC) <= timedelta(days=90)
    only_shanghai = json.loads(ok("nodes", "--state", market.state, "--region", "31", "--json"))
    assert [n["node_id"] for n in only_shanghai["nodes"]] == [OTHER]
    assert "(none)" in ok("nodes", "--state", market.state, "--region", "65")
    assert "region-code prefix" in refused("nodes", "--state", market.state, "--region", "gd")
    assert "provex-registry init" in refused("nodes", "--state", market.state / "nowhere")


async def listing_state(market: Market) -> int:
    got = await market.operator().GetListing(
        node_pb2.GetListingRequest(listing_id=market.listing_id), timeout=DEADLINE
    )
    return int(got.listing.state)


async def wait_for_listing(market: Market, state: int) -> None:
    deadline = time.monotonic() + 10
    while await listing_state(market) != state:
        assert time.monotonic() < deadline, f"listing not {state} within 10 s"
        await asyncio.sleep(0.1)


async def test_certificate_status_suspend_reinstate_revoke(market: Market) -> None:
    dataset = market.dataset_id
    state = ("--state", market.state)
    assert ok("certificate", "status", dataset, *state).startswith(f"{dataset}: active")
    suspended = ok("certificate", "suspend", dataset, "--reason", "complaint", *state)
    assert suspended.startswith(f"{dataset}: suspended; logged at index ")
    await wait_for_listing(market, market_pb2.LISTING_STATE_SUSPENDED)
    status = json.loads(ok("certificate", "status", dataset, *state, "--json"))
    assert status["dataset_id"] == dataset
    assert status["status"] == "STATUS_SUSPENDED"
    assert int(status["statement"]["log_index"]) > 0
    reinstated = json.loads(
        ok("certificate", "reinstate", dataset, "--reason", "resolved", *state, "--json")
    )
    assert reinstated["status"] == "active"
    assert ok("certificate", "status", dataset, *state).startswith(f"{dataset}: active; latest")
    assert "revoked" in ok("certificate", "revoke", dataset, "--reason", "fraud", *state)
    await wait_for_listing(market, market_pb2.LISTING_STATE_SUSPENDED)
    # A revoked id is never reinstated: the registry says so, the CLI passes it on.
    never = refused("certificate", "reinstate", dataset, "--reason", "oops", *state)
    assert "never reinstated" in never
    assert "dataset_id" in refused("certificate", "status", "not-an-id", *state)
    missing = refused("certificate", "status", "440100-2026-9999999-0", *state)
    assert "440100-2026-9999999" in missing
    assert "admin add" in refused("certificate", "status", dataset, *state, "--as", "mallory")
    # --reason is required: argparse says so (exit 2, usage on stderr).
    done = run_cli("certificate", "suspend", dataset, *state)
    assert done.returncode == 2 and "--reason" in done.stderr


async def test_admin_revoke_removes_a_node_from_the_directory(market: Market) -> None:
    state = ("--state", market.state)
    revoked = ok("admin", "revoke", OTHER, "--reason", "left the federation", *state)
    assert revoked.startswith(f"node {OTHER} revoked federation-wide; logged at index ")
    assert "admin invite" in revoked
    listed_nodes = json.loads(ok("nodes", *state, "--json"))
    assert [n["node_id"] for n in listed_nodes["nodes"]] == [NODE]
    everyone = json.loads(ok("nodes", *state, "--include-revoked", "--json"))
    assert {n["node_id"]: n["status"] for n in everyone["nodes"]} == {
        NODE: "active",
        OTHER: "revoked",
    }
    assert "already revoked" in refused("admin", "revoke", OTHER, "--reason", "again", *state)
    assert "not enrolled" in refused("admin", "revoke", "xx-none", "--reason", "r", *state)
    as_json = run_cli("admin", "revoke", "Bad_Id", "--reason", "r", *state, "--json")
    assert as_json.returncode == 2 and "node_id" in as_json.stderr
