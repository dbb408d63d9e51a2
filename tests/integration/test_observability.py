"""Metrics and request ids of real registry and node processes, over the wire.

A registry of its own and two nodes (Guangzhou, Shenzhen), each started
with ``serve`` and found through ``endpoints.json``, whose ``metrics``
address is scraped over plain HTTP: call counters move with real calls
(with their method and status code, errors too), the log-size gauge is the
registry's checkpoint size, the node's outbox, sync and peer gauges are
there and right, and the endpoint answers bad requests with 4xx. A call with
``x-request-id`` is logged under that id in the node's log AND in the
registry's (the node's outbox call) or the peer's (federated search), and
the id is echoed in the trailing metadata.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from provex.ids import CreditCode
from provex.v1 import market_pb2, node_pb2, node_pb2_grpc, registry_pb2, registry_pb2_grpc
from tests.integration.conftest import RunningRegistry, run_cli, start_registry, stop_registry
from tests.integration.nodes import RunningNode, create_node, start_node, stop_node

DEADLINE = 20.0
GZ, SZ = ("gd-gzde", "440100"), ("gd-szde", "440300")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class World:
    registry: RunningRegistry
    gz: RunningNode
    sz: RunningNode


@pytest.fixture(scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    workdir = tmp_path_factory.mktemp("observability")
    state = workdir / "registry"
    init = run_cli("init", "--state", state, "--json")
    assert init.returncode == 0, init.stderr
    assert run_cli("admin", "add", "alice", "--role", "admin", "--state", state).returncode == 0
    registry = await start_registry(state, json.loads(init.stdout)["trust_root_digest"])
    nodes: list[RunningNode] = []
    try:
        for node_id, region in (GZ, SZ):
            nodes.append(await start_node(create_node(registry, workdir, node_id, region)))
        yield World(registry, nodes[0], nodes[1])
    finally:
        for node in nodes:
            await stop_node(node)
        assert await stop_registry(registry) == 0


# ---------------------------------------------------------------- HTTP


async def http(address: str, raw: bytes) -> tuple[int, str]:
    """Send ``raw`` to ``address``; the status code and body of the answer."""
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(raw)
        await writer.drain()
        async with asyncio.timeout(DEADLINE):
            answer = await reader.read()
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


async def scrape(endpoints: dict[str, object]) -> Samples:
    status, body = await http(
        str(endpoints["metrics"]), b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n"
    )
    assert status == 200, body
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def handled(samples: Samples, port: str, service: str, method: str, code: str) -> float:
    return value(
        samples,
        "provex_grpc_server_handled_total",
        port=port,
        grpc_service=f"provex.v1.{service}",
        grpc_method=method,
        grpc_code=code,
    )


async def eventually(check: Callable[[], object], seconds: float = 15.0) -> None:
    """Retry an async ``check`` (raising AssertionError) until it passes or time runs out."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            await check()  # type: ignore[misc]
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.3)


def log_lines(state: Path) -> list[dict[str, object]]:
    """The JSON lines of a server's serve.log (every line must be one JSON object)."""
    lines = (state / "serve.log").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


# ---------------------------------------------------------------- tests


async def test_registry_counts_calls_by_method_and_code_and_reports_its_log_size(
    world: World,
) -> None:
    registry = world.registry
    before = await scrape(registry.endpoints)
    async with registry.public_channel() as channel:
        log = registry_pb2_grpc.LogServiceStub(channel)
        trust = registry_pb2_grpc.TrustServiceStub(channel)
        await log.GetCheckpoint(registry_pb2.GetCheckpointRequest(), timeout=DEADLINE)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await trust.GetTrustRoot(registry_pb2.GetTrustRootRequest(version=99), timeout=DEADLINE)
        assert refused.value.code() is grpc.StatusCode.NOT_FOUND

        async def log_size_is_the_checkpoints() -> None:
            first = await log.GetCheckpoint(registry_pb2.GetCheckpointRequest(), timeout=DEADLINE)
            samples = await scrape(registry.endpoints)
            second = await log.GetCheckpoint(registry_pb2.GetCheckpointRequest(), timeout=DEADLINE)
            size = int(first.checkpoint.splitlines()[1])
            assert size == int(second.checkpoint.splitlines()[1])  # Nothing logged meanwhile.
            assert value(samples, "provex_registry_log_size") == size

        await eventually(log_size_is_the_checkpoints)
    after = await scrape(registry.endpoints)
    assert handled(after, "public", "LogService", "GetCheckpoint", "OK") >= 1 + handled(
        before, "public", "LogService", "GetCheckpoint", "OK"
    )
    assert handled(after, "public", "TrustService", "GetTrustRoot", "NOT_FOUND") == 1 + handled(
        before, "public", "TrustService", "GetTrustRoot", "NOT_FOUND"
    )
    latency = value(
        after,
        "provex_grpc_server_handling_seconds_count",
        port="public",
        grpc_service="provex.v1.TrustService",
        grpc_method="GetTrustRoot",
    )
    assert latency >= 1
    # Two nodes enrolled (each registration counted), both active and their certificates known.
    assert value(after, "provex_registry_nodes", status="active") == 2
    assert value(after, "provex_registry_registrations_total", kind="node") == 2
    assert value(after, "provex_registry_node_certificate_earliest_expiry_seconds") > 80 * 86400
    assert value(after, "provex_registry_checkpoints_published_total") >= 2
    assert value(after, "provex_registry_log_batch_entries_count") == value(
        after, "provex_registry_checkpoints_published_total"
    )
    assert value(after, "provex_certificate_expiry_timestamp_seconds", certificate="server") > (
        time.time()
    )


async def test_node_reports_outbox_sync_and_calls(world: World) -> None:
    node = world.gz

    async def synced() -> None:
        samples = await scrape(node.endpoints)
        assert value(samples, "provex_node_registry_reachable") == 1
        assert value(samples, "provex_node_status_feed_connected") == 1
        assert value(samples, "provex_node_checkpoint_age_seconds") < 10
        assert value(samples, "provex_node_verified_log_size") > 0
        assert value(samples, "provex_node_log_lag_entries") == 0
        assert value(samples, "provex_node_peers", status="active") == 1
        assert ("provex_node_outbox_items", (("state", "pending"),)) in samples
        assert ("provex_node_checkpoint_alarms_total", (("kind", "split_view"),)) in samples
        assert value(samples, "provex_node_deliveries_in_progress") == 0
        assert value(
            samples, "provex_certificate_expiry_timestamp_seconds", certificate="federation"
        ) > (time.time() + 14 * 86400)

    await eventually(synced)
    before = await scrape(node.endpoints)
    async with node.operator_channel() as channel:
        operator = node_pb2_grpc.OperatorServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await operator.AddMember(
                node_pb2.AddMemberRequest(member=registry_pb2.Member(name="x")), timeout=DEADLINE
            )
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        await operator.GetNodeStatus(node_pb2.GetNodeStatusRequest(), timeout=DEADLINE)
    after = await scrape(node.endpoints)
    for method, code in (("AddMember", "INVALID_ARGUMENT"), ("GetNodeStatus", "OK")):
        assert handled(after, "operator", "OperatorService", method, code) == 1 + handled(
            before, "operator", "OperatorService", method, code
        ), method


async def test_request_id_travels_from_node_to_registry_and_comes_back(world: World) -> None:
    node, registry = world.gz, world.registry
    holder = CreditCode.from_parts("9", "1", GZ[1], "MA5N0DE7").code
    async with node.operator_channel() as channel:
        operator = node_pb2_grpc.OperatorServiceStub(channel)
        call = operator.AddMember(
            node_pb2.AddMemberRequest(
                member=registry_pb2.Member(credit_code=holder, name="观测公司", region_code=GZ[1])
            ),
            metadata=(("x-request-id", "test-123"),),
            timeout=DEADLINE,
        )
        answer = await call
        assert ("x-request-id", "test-123") in tuple(await call.trailing_metadata())
    assert answer.report.state == node_pb2.OUTBOX_STATE_DONE  # Reported to the registry already.

    async def logged_in_both() -> None:
        mine = [line for line in log_lines(node.state) if line.get("request_id") == "test-123"]
        theirs = [
            line for line in log_lines(registry.state) if line.get("request_id") == "test-123"
        ]
        assert any(line.get("method", "").endswith("/AddMember") for line in mine), mine
        assert any(line.get("method", "").endswith("/ReportMember") for line in theirs), theirs
        assert all(line["service"] == "registry" for line in theirs)
        assert all(line["id"] == GZ[0] for line in mine)

    await eventually(logged_in_both, 5)


async def test_federated_search_carries_the_request_id_and_counts_unreachable_peers(
    world: World,
) -> None:
    node, peer = world.gz, world.sz
    async with node.operator_channel() as channel:
        operator = node_pb2_grpc.OperatorServiceStub(channel)
        search = node_pb2.FederatedSearchRequest(query=market_pb2.SearchQuery(text="交通"))

        async def both_answer() -> None:
            answer = await operator.FederatedSearch(
                search, metadata=(("x-request-id", "fed-456"),), timeout=DEADLINE
            )
            assert sorted(answer.answered) == [GZ[0], SZ[0]]

        await eventually(both_answer)
        samples = await scrape(node.endpoints)
        assert value(samples, "provex_node_peers_unreachable") == 0
        searched = [line for line in log_lines(peer.state) if line.get("request_id") == "fed-456"]
        assert any(line.get("method", "").endswith("/PeerSearch") for line in searched)

        peer.process.send_signal(signal.SIGSTOP)  # Frozen: it answers nobody.
        try:
            answer = await operator.FederatedSearch(
                node_pb2.FederatedSearchRequest(query=search.query, peer_deadline_ms=500),
                timeout=DEADLINE,
            )
            assert [silent.node_id for silent in answer.unanswered] == [SZ[0]]
            samples = await scrape(node.endpoints)
            assert value(samples, "provex_node_peers_unreachable") == 1
            assert value(samples, "provex_node_peer_unreachable", peer=SZ[0]) == 1
        finally:
            peer.process.send_signal(signal.SIGCONT)


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /nowhere HTTP/1.1\r\n\r\n", 404),
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
        (b"garbage\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\n" + b"X-Long: " + b"a" * 10_000 + b"\r\n\r\n", 400),
        (b"HEAD /metrics HTTP/1.1\r\n\r\n", 200),
    ],
    ids=["unknown path", "POST", "not HTTP", "header too long", "HEAD"],
)
async def test_metrics_endpoint_answers_bad_requests_with_4xx(
    world: World, raw: bytes, status: int
) -> None:
    for endpoints in (world.registry.endpoints, world.gz.endpoints):
        answered, body = await http(str(endpoints["metrics"]), raw)
        assert answered == status, body
        if raw.startswith(b"HEAD"):
            assert body == ""
    # The servers still serve after them.
    assert (
        value(
            await scrape(world.registry.endpoints),
            "provex_server_info",
            service="registry",
            server_id="provex.local",
        )
        == 1
    )


ROOT = Path(__file__).resolve().parents[2]
METRIC_NAME = re.compile(r"\bprovex_[a-z_]+\b")


async def test_every_metric_the_alerts_and_their_page_name_is_exported(world: World) -> None:
    exported: set[str] = set()
    for endpoints in (world.registry.endpoints, world.gz.endpoints):
        _, body = await http(str(endpoints["metrics"]), b"GET /metrics HTTP/1.1\r\n\r\n")
        for family in text_string_to_metric_families(body):
            exported.add(family.name)
            exported.update(sample.name for sample in family.samples)
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yaml").read_text())
    expressions = " ".join(rule["expr"] for group in rules["groups"] for rule in group["rules"])
    page = (ROOT / "deploy" / "ALERTS.md").read_text()
    named = set(METRIC_NAME.findall(expressions)) | set(METRIC_NAME.findall(page))
    assert named - exported == set()
    # And the page documents every metric the servers export (but the client's own).
    documented = {name for name in exported if name.startswith("provex_")}
    bases = {re.sub(r"_(bucket|count|sum|created|total)$", "", name) for name in documented}
    assert {name for name in bases if name not in page} == set()
