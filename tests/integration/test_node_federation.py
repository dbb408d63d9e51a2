"""A registry and three provincial nodes as real processes: the node's whole life on the wire.

One registry of its own (its directory holds exactly these nodes) and three
nodes (Guangzhou, Shenzhen, Shanghai), each initialized, invited, enrolled
and served through the CLIs, then driven through their operator APIs with
the generated stubs over mutual TLS: members, certified datasets, listings,
local and federated search, the registry's revocations followed within
seconds, a frozen peer named by a federated search that still answers in
time, a registry outage survived, and clear errors for bad input.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from provex.identity import channel_credentials
from provex.ids import CreditCode
from provex.v1 import (
    common_pb2,
    dataset_pb2,
    market_pb2,
    node_pb2,
    node_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)
from tests.integration.conftest import RunningRegistry, run_cli, start_registry, stop_registry
from tests.integration.nodes import RunningNode, create_node, node_cli, start_node, stop_node

DEADLINE = 20.0
NODES = (("gd-gzde", "440100"), ("gd-szde", "440300"), ("sh-sde", "310000"))
TITLES = {
    "gd-gzde": ("广州市道路交通流量 2025", "Hourly traffic counts at Guangzhou intersections."),
    "gd-szde": ("深圳市道路交通拥堵指数", "Five-minute congestion index of Shenzhen roads."),
    "sh-sde": ("Port of Shanghai container throughput", "上海港各码头月度集装箱吞吐量。"),
}
CATEGORIES = {
    "gd-gzde": "transport.road.traffic_flow",
    "gd-szde": "transport.road.traffic_flow",
    "sh-sde": "transport.port.container_throughput",
}


def holder_of(region: str) -> str:
    return CreditCode.from_parts("9", "1", region, "MA5N0DE1").code


_VALID = holder_of("440100")
WRONG_CHECK_CHARACTER = _VALID[:-1] + ("0" if _VALID[-1] != "0" else "1")


@dataclass
class Federation:
    registry: RunningRegistry
    nodes: dict[str, RunningNode]
    listings: dict[str, market_pb2.Listing]
    workdir: Path

    def operator(self, node_id: str) -> node_pb2_grpc.OperatorServiceStub:
        return node_pb2_grpc.OperatorServiceStub(self.nodes[node_id].operator_channel())

    def admin_channel(self) -> grpc.aio.Channel:
        return self.registry.federation_channel(self.registry.state / "admins" / "alice")


def description(
    holder: str, title: str, text: str, category: str
) -> dataset_pb2.DatasetDescription:
    return dataset_pb2.DatasetDescription(
        holder=holder,
        title=title,
        description=text,
        categories=[category],
        content_digest=hashlib.sha256(title.encode()).digest(),
        size_bytes=10_000_000,
        record_count=100_000,
        lawful_source="collected by the holder's own sensors",
        rights=dataset_pb2.DataRights(
            resource_holder=holder, processing_user=holder, product_operator=holder
        ),
        language="zh",
    )


async def certified(
    operator: node_pb2_grpc.OperatorServiceStub, key: str, dataset: dataset_pb2.DatasetDescription
) -> node_pb2.DatasetRecord:
    record = (
        await operator.SubmitDataset(
            node_pb2.SubmitDatasetRequest(idempotency_key=key, dataset=dataset), timeout=DEADLINE
        )
    ).dataset
    deadline = time.monotonic() + DEADLINE
    while not record.HasField("certificate"):
        assert record.registration.state != node_pb2.OUTBOX_STATE_FAILED, record
        assert time.monotonic() < deadline, f"no certificate for {key}"
        await asyncio.sleep(0.1)
        record = (
            await operator.GetDataset(
                node_pb2.GetDatasetRequest(idempotency_key=key), timeout=DEADLINE
            )
        ).dataset
    return record


async def listed(
    operator: node_pb2_grpc.OperatorServiceStub, dataset_id: str, price: int
) -> market_pb2.Listing:
    created = await operator.CreateListing(
        node_pb2.CreateListingRequest(
            listing=market_pb2.Listing(
                dataset_id=dataset_id,
                price=common_pb2.Money(fen=price),
                pricing_model=market_pb2.PRICING_MODEL_ONE_TIME,
                licence=market_pb2.LicenceTerms(purposes=["research"], term_days=365),
                delivery=market_pb2.DELIVERY_METHOD_FILE,
            )
        ),
        timeout=DEADLINE,
    )
    published = await operator.SetListingState(
        node_pb2.SetListingStateRequest(
            listing_id=created.listing.listing_id, state=market_pb2.LISTING_STATE_LISTED
        ),
        timeout=DEADLINE,
    )
    return published.listing


@pytest.fixture(scope="module")
async def federation(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Federation]:
    workdir = tmp_path_factory.mktemp("federation")
    state = workdir / "registry"
    init = run_cli("init", "--state", state, "--json")
    assert init.returncode == 0, init.stderr
    digest = json.loads(init.stdout)["trust_root_digest"]
    added = run_cli("admin", "add", "alice", "--role", "admin", "--state", state)
    assert added.returncode == 0, added.stderr
    registry = await start_registry(state, digest)
    nodes: dict[str, RunningNode] = {}
    try:
        for node_id, region in NODES:
            nodes[node_id] = await start_node(create_node(registry, workdir, node_id, region))
        running = Federation(registry, nodes, {}, workdir)
        for node_id, region in NODES:
            operator = running.operator(node_id)
            holder = holder_of(region)
            await operator.AddMember(
                node_pb2.AddMemberRequest(
                    member=registry_pb2.Member(
                        credit_code=holder, name=f"Holder {node_id}", region_code=region
                    )
                ),
                timeout=DEADLINE,
            )
            title, text = TITLES[node_id]
            record = await certified(
                operator, f"{node_id}-1", description(holder, title, text, CATEGORIES[node_id])
            )
            running.listings[node_id] = await listed(operator, record.dataset_id, 100_000)
        yield running
    finally:
        for node in nodes.values():
            assert await stop_node(node) == 0
        if registry.process.returncode is None:
            assert await stop_registry(registry) == 0


async def federated(
    federation: Federation, text: str, node_id: str = "gd-gzde", deadline_ms: int = 0
) -> node_pb2.FederatedSearchResponse:
    return await federation.operator(node_id).FederatedSearch(
        node_pb2.FederatedSearchRequest(
            query=market_pb2.SearchQuery(text=text), peer_deadline_ms=deadline_ms
        ),
        timeout=DEADLINE,
    )


async def every_node_answers(federation: Federation) -> node_pb2.FederatedSearchResponse:
    """Federated search once the directory (refreshed every 0.5 s) lists every node."""
    deadline = time.monotonic() + 15
    while True:
        answer = await federated(federation, "")
        if len(answer.answered) == len(NODES) or time.monotonic() > deadline:
            return answer
        await asyncio.sleep(0.3)


# ---------------------------------------------------------------- the path


async def test_nodes_certify_list_and_search_across_provinces(federation: Federation) -> None:
    for node_id, listing in federation.listings.items():
        assert listing.state == market_pb2.LISTING_STATE_LISTED
        assert listing.node_id == node_id
        assert listing.grade == common_pb2.GRADE_GENERAL
        status = await federation.operator(node_id).GetNodeStatus(
            node_pb2.GetNodeStatusRequest(), timeout=DEADLINE
        )
        assert status.node_id == node_id
        assert status.outbox_pending == 0
    everyone = await every_node_answers(federation)
    assert sorted(everyone.answered) == sorted(node for node, _ in NODES)
    assert not everyone.unanswered
    # Chinese, two characters: both Guangdong listings, from two nodes.
    answer = await federated(federation, "交通")
    assert {hit.listing.node_id for hit in answer.hits} == {"gd-gzde", "gd-szde"}
    # Chinese text of an English title's description, found on Shanghai's node.
    answer = await federated(federation, "集装箱吞吐量")
    assert [hit.listing.node_id for hit in answer.hits] == ["sh-sde"]
    answer = await federated(federation, "container throughput", node_id="sh-sde")
    assert [hit.listing.listing_id for hit in answer.hits] == [
        federation.listings["sh-sde"].listing_id
    ]


async def test_local_search_pages_are_stable(federation: Federation) -> None:
    operator = federation.operator("gd-gzde")
    holder = holder_of("440100")
    extra = []
    for number in range(2, 6):
        record = await certified(
            operator,
            f"gd-gzde-page-{number}",
            description(
                holder, f"广州地铁客流 {number}", "Metro ridership.", CATEGORIES["gd-gzde"]
            ),
        )
        extra.append(await listed(operator, record.dataset_id, 1000 * number))
    seen: list[str] = []
    token = ""
    while True:
        page = await operator.Search(
            node_pb2.SearchRequest(
                query=market_pb2.SearchQuery(text="广州", page_size=2, page_token=token)
            ),
            timeout=DEADLINE,
        )
        assert len(page.hits) <= 2
        seen.extend(hit.listing.listing_id for hit in page.hits)
        token = page.next_page_token
        if not token:
            break
    expected = {federation.listings["gd-gzde"].listing_id, *(x.listing_id for x in extra)}
    assert len(seen) == len(set(seen))
    assert set(seen) == expected


async def test_a_suspension_at_the_registry_suspends_the_listing_within_5_s(
    federation: Federation,
) -> None:
    operator = federation.operator("gd-szde")
    holder = holder_of("440300")
    record = await certified(
        operator,
        "gd-szde-suspend",
        description(holder, "深圳公交到站", "Bus arrivals.", CATEGORIES["gd-szde"]),
    )
    listing = await listed(operator, record.dataset_id, 5000)
    started = time.monotonic()
    async with federation.admin_channel() as channel:
        await registry_pb2_grpc.CertificateServiceStub(channel).SetStatus(
            registry_pb2.SetStatusRequest(
                dataset_id=record.dataset_id,
                status=common_pb2.STATUS_SUSPENDED,
                reason="complaint under review",
            ),
            timeout=DEADLINE,
        )
    while True:
        current = await operator.GetListing(
            node_pb2.GetListingRequest(listing_id=listing.listing_id), timeout=DEADLINE
        )
        if current.listing.state == market_pb2.LISTING_STATE_SUSPENDED:
            break
        assert time.monotonic() - started < 5.0, "listing still listed 5 s after the statement"
        await asyncio.sleep(0.1)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await operator.SetListingState(
            node_pb2.SetListingStateRequest(
                listing_id=listing.listing_id, state=market_pb2.LISTING_STATE_LISTED
            ),
            timeout=DEADLINE,
        )
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION


async def test_a_frozen_peer_is_named_and_does_not_delay_the_answer(
    federation: Federation,
) -> None:
    await every_node_answers(federation)
    frozen = federation.nodes["sh-sde"]
    frozen.process.send_signal(signal.SIGSTOP)  # Its port accepts connections; nothing answers.
    try:
        started = time.monotonic()
        answer = await federated(federation, "交通", deadline_ms=1000)
        elapsed = time.monotonic() - started
    finally:
        frozen.process.send_signal(signal.SIGCONT)
    assert elapsed < 1.0 + 1.5, f"federated search took {elapsed:.2f} s with a 1 s peer deadline"
    assert [peer.node_id for peer in answer.unanswered] == ["sh-sde"]
    assert answer.unanswered[0].reason
    assert sorted(answer.answered) == ["gd-gzde", "gd-szde"]
    assert {hit.listing.node_id for hit in answer.hits} == {"gd-gzde", "gd-szde"}


async def test_registry_outage_search_goes_on_and_registrations_complete_once(
    federation: Federation,
) -> None:
    registry = federation.registry
    listen = (registry.endpoints["public"], registry.endpoints["federation"])
    assert await stop_registry(registry) == 0
    operator = federation.operator("gd-gzde")
    holder = holder_of("440100")
    try:
        answer = await federated(federation, "交通")
        assert {hit.listing.node_id for hit in answer.hits} >= {"gd-gzde", "gd-szde"}
        pending = (
            await operator.SubmitDataset(
                node_pb2.SubmitDatasetRequest(
                    idempotency_key="during-outage",
                    dataset=description(
                        holder, "广州停车场空位", "Parking.", CATEGORIES["gd-gzde"]
                    ),
                ),
                timeout=DEADLINE,
            )
        ).dataset
        assert pending.registration.state == node_pb2.OUTBOX_STATE_PENDING
        assert not pending.HasField("certificate")
        await asyncio.sleep(1.0)  # Several failed attempts.
    finally:
        restarted = await start_registry(registry.state, registry.trust_root_digest, listen)
        federation.registry = restarted
    record = await certified(
        operator,
        "during-outage",
        description(holder, "广州停车场空位", "Parking.", CATEGORIES["gd-gzde"]),
    )
    assert record.registration.state == node_pb2.OUTBOX_STATE_DONE
    assert record.registration.attempts >= 1
    # Exactly once: the registry holds one certificate of version 1 for that submission.
    async with restarted.federation_channel(restarted.state / "admins" / "alice") as channel:
        found = await registry_pb2_grpc.CertificateServiceStub(channel).GetCertificate(
            registry_pb2.GetCertificateRequest(dataset_id=record.dataset_id), timeout=DEADLINE
        )
    assert found.certificate.envelope == record.certificate.envelope


# ---------------------------------------------------------------- refusals


BAD_OPERATOR_CALLS = {
    "member without credit code": (
        "AddMember",
        node_pb2.AddMemberRequest(member=registry_pb2.Member(name="x", region_code="440100")),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "member with a bad check character": (
        "AddMember",
        node_pb2.AddMemberRequest(
            member=registry_pb2.Member(
                credit_code=holder_of("440100")[:-1]
                + ("0" if holder_of("440100")[-1] != "0" else "1"),
                name="x",
                region_code="440100",
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "member of another node": (
        "AddMember",
        node_pb2.AddMemberRequest(
            member=registry_pb2.Member(
                credit_code=holder_of("440300"), name="x", region_code="440300", node_id="gd-szde"
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "dataset without key": (
        "SubmitDataset",
        node_pb2.SubmitDatasetRequest(dataset=dataset_pb2.DatasetDescription()),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "dataset of a non-member": (
        "SubmitDataset",
        node_pb2.SubmitDatasetRequest(
            idempotency_key="stranger",
            dataset=description(holder_of("110000"), "t", "d", "transport.road.traffic_flow"),
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    ),
    "unknown dataset": (
        "GetDataset",
        node_pb2.GetDatasetRequest(dataset_id="440100-2026-0999999-1"),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "listing without dataset": (
        "CreateListing",
        node_pb2.CreateListingRequest(listing=market_pb2.Listing()),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "unknown listing": (
        "GetListing",
        node_pb2.GetListingRequest(listing_id="L0000000000000000"),
        grpc.StatusCode.NOT_FOUND,
    ),
    "malformed listing id": (
        "SetListingState",
        node_pb2.SetListingStateRequest(listing_id="nope", state=market_pb2.LISTING_STATE_LISTED),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "page too large": (
        "Search",
        node_pb2.SearchRequest(query=market_pb2.SearchQuery(page_size=100_000)),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "forged page token": (
        "Search",
        node_pb2.SearchRequest(query=market_pb2.SearchQuery(page_token="not-a-token")),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "contract request without a key": (
        "RequestContract",
        node_pb2.RequestContractRequest(),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "unknown contract": (
        "GetContract",
        node_pb2.GetContractRequest(contract_id="C" + "0" * 32),
        grpc.StatusCode.NOT_FOUND,
    ),
}


@pytest.mark.parametrize(
    "rpc, request_message, code", BAD_OPERATOR_CALLS.values(), ids=BAD_OPERATOR_CALLS.keys()
)
async def test_bad_operator_input_gets_a_clear_error(
    federation: Federation, rpc: str, request_message: object, code: grpc.StatusCode
) -> None:
    operator = federation.operator("gd-gzde")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await getattr(operator, rpc)(request_message, timeout=DEADLINE)
    assert raised.value.code() is code, raised.value.details()
    details = raised.value.details() or ""
    assert details and "Traceback" not in details
    # The node stays up.
    status = await operator.GetNodeStatus(node_pb2.GetNodeStatusRequest(), timeout=DEADLINE)
    assert status.node_id == "gd-gzde"


async def test_peers_reach_only_the_peer_api(federation: Federation) -> None:
    guangzhou, shenzhen = federation.nodes["gd-gzde"], federation.nodes["gd-szde"]
    async with guangzhou.peer_channel_as(shenzhen) as channel:
        peer = node_pb2_grpc.PeerServiceStub(channel)
        answer = await peer.PeerSearch(
            node_pb2.PeerSearchRequest(query=market_pb2.SearchQuery(text="交通")),
            timeout=DEADLINE,
        )
        assert {hit.listing.node_id for hit in answer.hits} == {"gd-gzde"}
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await peer.PeerSearch(node_pb2.PeerSearchRequest(), timeout=DEADLINE)
        assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        # The operator API is not served on the peer port at all.
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await node_pb2_grpc.OperatorServiceStub(channel).GetNodeStatus(
                node_pb2.GetNodeStatusRequest(), timeout=DEADLINE
            )
        assert raised.value.code() is grpc.StatusCode.UNIMPLEMENTED
    # A node's federation certificate does not open the operator port.
    credentials = channel_credentials(
        Path(guangzhou.endpoints["operator_ca_certificate"]).read_bytes(),
        (shenzhen.state / "tls" / "node.pem").read_bytes(),
        (shenzhen.state / "tls" / "node-key.pem").read_bytes(),
    )
    async with grpc.aio.secure_channel(guangzhou.endpoints["operator"], credentials) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await node_pb2_grpc.OperatorServiceStub(channel).GetNodeStatus(
                node_pb2.GetNodeStatusRequest(), timeout=5
            )
        assert raised.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_operator_cli_imports_listings_and_searches(federation: Federation) -> None:
    node = federation.nodes["gd-gzde"]
    operator = federation.operator("gd-gzde")
    holder = holder_of("440100")
    records = [
        await certified(
            operator,
            f"cli-import-{n}",
            description(holder, f"广州公交客流 {n}", "Bus ridership.", CATEGORIES["gd-gzde"]),
        )
        for n in range(2)
    ]
    lines = [
        json.dumps(
            {
                "dataset_id": record.dataset_id,
                "price": 25_000,
                "pricing_model": "one_time",
                "licence": {"purposes": ["research"], "term_days": 30},
                "delivery": "file",
            }
        )
        for record in records
    ]
    lines.append(json.dumps({"dataset_id": "not-an-id", "price": 1}))
    source = federation.workdir / "import.jsonl"
    source.write_text("\n".join(lines) + "\n")
    done = await asyncio.to_thread(
        node_cli, "listing", "import", "--state", node.state, "--json", source
    )
    assert done.returncode == 1, done.stderr  # One line was refused.
    report = json.loads(done.stdout)
    assert report["imported"] == 2
    assert report["refused"] == 1
    assert "line 3" in report["refusals"][0]
    shown = await asyncio.to_thread(node_cli, "search", "--state", node.state, "公交客流")
    assert shown.returncode == 0, shown.stderr
    assert "found" in shown.stdout
    status = await asyncio.to_thread(node_cli, "status", "--state", node.state, "--json")
    assert json.loads(status.stdout)["node_id"] == "gd-gzde"
