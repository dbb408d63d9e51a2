"""Delivery between real node processes: full, interrupted by a killed seller, tampered, refused.

A registry and two nodes (the seller in Guangzhou, the buyer in Shanghai)
run as real processes on loopback with mutual TLS; a third node is enrolled
(its certificate is the federation CA's) but never started. The seller's
datasets are certified by the registry and their data attached with the CLI
(``dataset submit --data`` and ``dataset attach``). Contracts are negotiated
for real (RequestContract on the buyer's node, auto-approved listings, both
nodes' signatures); one stays requested (a listing without auto-approve that
its operator never decides).
The seller is throttled (``delivery_rate_bytes_per_second``) so a 32 MiB
delivery lasts long enough to kill the seller in the middle of it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format

from node.delivery import RETRYING
from provex.identity import channel_credentials, node_server_name, tls_channel_options
from provex.ids import CreditCode
from provex.storage import open_connection
from provex.v1 import common_pb2, dataset_pb2, market_pb2, node_pb2, node_pb2_grpc, registry_pb2
from tests.integration.conftest import RunningRegistry
from tests.integration.nodes import RunningNode, create_node, node_cli, start_node, stop_node

DEADLINE = 20.0
SELLER, BUYER, OTHER = ("gd-dlsell", "440100"), ("sh-dlbuy", "310000"), ("gd-dlother", "440300")
MIB = 1024 * 1024
SIZES = {"big": 32 * MIB, "small": 3 * MIB + 123, "tamper": 2 * MIB}
RATE = 8 * MIB  # the seller's throttle: the big delivery lasts about 4 s
SELLER_ENV = {"PROVEX_NODE_DELIVERY_RATE_BYTES_PER_SECOND": str(RATE)}
BUYER_ENV = {
    "PROVEX_NODE_DELIVERY_RETRY_MAX_SECONDS": "0.5",
    "PROVEX_NODE_DELIVERY_CHUNK_DEADLINE": "5",
}


def holder_of(region: str, body: str) -> str:
    return CreditCode.from_parts("9", "1", region, body).code


SELLER_HOLDER = holder_of(SELLER[1], "MA5DLQ01")
BUYER_HOLDER = holder_of(BUYER[1], "MA5DLQ02")


@dataclass
class Market:
    registry: RunningRegistry
    seller: RunningNode
    buyer: RunningNode
    other_state: Path
    files: dict[str, Path]
    datasets: dict[str, str]  # name -> dataset id
    contracts: dict[str, str]  # name -> contract id

    def operator(self, node: RunningNode) -> node_pb2_grpc.OperatorServiceStub:
        return node_pb2_grpc.OperatorServiceStub(node.operator_channel())

    def digest(self, name: str) -> bytes:
        return hashlib.sha256(self.files[name].read_bytes()).digest()


def description(name: str, size: int, digest: bytes = b"") -> dataset_pb2.DatasetDescription:
    return dataset_pb2.DatasetDescription(
        holder=SELLER_HOLDER,
        title=f"广州市道路交通流量 {name}",
        description=f"Hourly traffic counts, delivery test {name}.",
        categories=["transport.road.traffic_flow"],
        content_digest=digest,
        size_bytes=size,
        record_count=1000,
        lawful_source="collected by the holder's own sensors",
        rights=dataset_pb2.DataRights(
            resource_holder=SELLER_HOLDER,
            processing_user=SELLER_HOLDER,
            product_operator=SELLER_HOLDER,
        ),
        language="zh",
    )


async def certificate_of(operator: node_pb2_grpc.OperatorServiceStub, key: str) -> str:
    """The dataset id once the registry certified the submission ``key``."""
    deadline = time.monotonic() + DEADLINE
    while True:
        record = (
            await operator.GetDataset(
                node_pb2.GetDatasetRequest(idempotency_key=key), timeout=DEADLINE
            )
        ).dataset
        if record.HasField("certificate"):
            return record.dataset_id
        assert record.registration.state != node_pb2.OUTBOX_STATE_FAILED, record
        assert time.monotonic() < deadline, f"no certificate for {key}"
        await asyncio.sleep(0.1)


async def listed(market: Market, dataset_id: str, *, auto_approve: bool) -> market_pb2.Listing:
    operator = market.operator(market.seller)
    created = await operator.CreateListing(
        node_pb2.CreateListingRequest(
            listing=market_pb2.Listing(
                dataset_id=dataset_id,
                price=common_pb2.Money(fen=100_000),
                pricing_model=market_pb2.PRICING_MODEL_ONE_TIME,
                licence=market_pb2.LicenceTerms(purposes=["research"], term_days=365),
                delivery=market_pb2.DELIVERY_METHOD_FILE,
                auto_approve=auto_approve,
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


def contract_request(key: str, listing: market_pb2.Listing) -> node_pb2.RequestContractRequest:
    return node_pb2.RequestContractRequest(
        idempotency_key=f"delivery-test-{key}",
        seller_node=SELLER[0],
        listing_id=listing.listing_id,
        buyer=BUYER_HOLDER,
        purpose="traffic research",
    )


async def negotiated(market: Market, key: str, listing: market_pb2.Listing) -> str:
    """Request a contract on the buyer's node; its id once both nodes hold it finalized."""
    answer = await market.operator(market.buyer).RequestContract(
        contract_request(key, listing), timeout=DEADLINE
    )
    contract_id = answer.contract.terms.contract_id
    for node in (market.seller, market.buyer):
        deadline = time.monotonic() + 40
        while True:
            kept = await market.operator(node).GetContract(
                node_pb2.GetContractRequest(contract_id=contract_id), timeout=DEADLINE
            )
            if kept.contract.state == market_pb2.CONTRACT_STATE_FINALIZED:
                break
            assert kept.contract.state != market_pb2.CONTRACT_STATE_TERMINATED, kept.contract
            assert time.monotonic() < deadline, kept.contract
            await asyncio.sleep(0.1)
    return contract_id


async def peers_see_each_other(market: Market) -> None:
    """Both nodes' directories (refreshed every 0.5 s) list the other one."""
    for node, other in ((market.buyer, market.seller), (market.seller, market.buyer)):
        deadline = time.monotonic() + DEADLINE
        while True:
            answer = await market.operator(node).FederatedSearch(
                node_pb2.FederatedSearchRequest(query=market_pb2.SearchQuery(text="")),
                timeout=DEADLINE,
            )
            if other.node_id in answer.answered:
                break
            assert time.monotonic() < deadline, answer
            await asyncio.sleep(0.2)


@pytest.fixture(scope="module")
def data_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("delivery-data")
    files = {}
    for seed, (name, size) in enumerate(SIZES.items()):
        path = folder / f"{name}.bin"
        path.write_bytes(random.Random(seed).randbytes(size))
        files[name] = path
    return files


@pytest.fixture(scope="module")
async def market(
    registry: RunningRegistry,
    tmp_path_factory: pytest.TempPathFactory,
    data_files: dict[str, Path],
) -> AsyncIterator[Market]:
    workdir = tmp_path_factory.mktemp("delivery")
    seller_state = create_node(registry, workdir, *SELLER)
    buyer_state = create_node(registry, workdir, *BUYER)
    other_state = create_node(registry, workdir, *OTHER)
    seller = await start_node(seller_state, SELLER_ENV)
    buyer = await start_node(buyer_state, BUYER_ENV)
    running = Market(registry, seller, buyer, other_state, data_files, {}, {})
    try:
        members = ((seller, SELLER_HOLDER, SELLER[1]), (buyer, BUYER_HOLDER, BUYER[1]))
        for node, holder, region in members:
            await running.operator(node).AddMember(
                node_pb2.AddMemberRequest(
                    member=registry_pb2.Member(
                        credit_code=holder, name=f"Holder on {node.node_id}", region_code=region
                    )
                ),
                timeout=DEADLINE,
            )
        # "small": submitted with --data, which fills digest and size and attaches the data.
        small_json = workdir / "small.json"
        small_json.write_text(json_format.MessageToJson(description("small", 0)))
        submitted = node_cli(
            "dataset", "submit", "--state", seller_state, "--key", "dl-small",
            "--file", small_json, "--data", data_files["small"], "--json",
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr
        assert json.loads(submitted.stdout)["dataset"]["size_bytes"] == str(SIZES["small"])
        running.datasets["small"] = await certificate_of(running.operator(seller), "dl-small")
        # "big" and "tamper": registered with their digest, then attached with `dataset attach`.
        for name in ("big", "tamper"):
            await running.operator(seller).SubmitDataset(
                node_pb2.SubmitDatasetRequest(
                    idempotency_key=f"dl-{name}",
                    dataset=description(name, SIZES[name], running.digest(name)),
                ),
                timeout=DEADLINE,
            )
            running.datasets[name] = await certificate_of(running.operator(seller), f"dl-{name}")
            attached = node_cli(
                "dataset", "attach", "--state", seller_state, running.datasets[name],
                data_files[name], "--json",
            )  # fmt: skip
            assert attached.returncode == 0, attached.stderr
            assert json.loads(attached.stdout)["content_digest"] == running.digest(name).hex()
        await peers_see_each_other(running)
        offers: dict[str, market_pb2.Listing] = {}
        # Auto-approved: finalized without the operator; "restart" buys the big data again.
        purchases = {"small": "small", "big": "big", "tamper": "tamper", "restart": "big"}
        for dataset in sorted(set(purchases.values())):
            offers[dataset] = await listed(running, running.datasets[dataset], auto_approve=True)
        negotiations = [negotiated(running, name, offers[data]) for name, data in purchases.items()]
        for name, contract_id in zip(purchases, await asyncio.gather(*negotiations), strict=True):
            running.contracts[name] = contract_id
        # Not auto-approved and never decided: the contract stays requested.
        listing = await listed(running, running.datasets["small"], auto_approve=False)
        requested = await running.operator(buyer).RequestContract(
            contract_request("requested", listing), timeout=DEADLINE
        )
        running.contracts["requested"] = requested.contract.terms.contract_id
        yield running
    finally:
        for node in (running.seller, running.buyer):
            assert await stop_node(node) == 0


async def progress_of(market: Market, name: str) -> node_pb2.DeliveryProgress:
    answer = await market.operator(market.buyer).GetDeliveryProgress(
        node_pb2.GetDeliveryProgressRequest(contract_id=market.contracts[name]), timeout=DEADLINE
    )
    return answer.progress


async def settled(market: Market, name: str, within: float = 60.0) -> node_pb2.DeliveryProgress:
    """The buyer's progress once the delivery is complete or has failed."""
    deadline = time.monotonic() + within
    while True:
        progress = await progress_of(market, name)
        if progress.complete or (progress.error and not progress.error.startswith(RETRYING)):
            return progress
        assert time.monotonic() < deadline, progress
        await asyncio.sleep(0.1)


def offsets_served(market: Market, name: str) -> list[int]:
    """The offsets the seller's log says it delivered contract ``name`` from, in order."""
    log = (market.seller.state / "serve.log").read_text()
    pattern = rf"delivering contract {market.contracts[name]} to {BUYER[0]} from offset (\d+)"
    return [int(offset) for offset in re.findall(pattern, log)]


def received_blob(market: Market, name: str) -> Path:
    return market.buyer.state / "blobs" / market.digest(name).hex()


def partial_of(market: Market, name: str) -> Path:
    return market.buyer.state / "blobs" / "partial" / market.contracts[name]


def peer_stub(target: RunningNode, caller_state: Path) -> node_pb2_grpc.PeerServiceStub:
    """PeerService of ``target`` with the federation certificate of the node at ``caller_state``."""
    credentials = channel_credentials(
        (caller_state / "tls" / "ca.pem").read_bytes(),
        (caller_state / "tls" / "node.pem").read_bytes(),
        (caller_state / "tls" / "node-key.pem").read_bytes(),
    )
    options = tls_channel_options(
        node_server_name(target.endpoints["trust_domain"], target.node_id)
    )
    channel = grpc.aio.secure_channel(target.endpoints["peer"], credentials, options=options)
    return node_pb2_grpc.PeerServiceStub(channel)


async def deliver_refused(
    stub: node_pb2_grpc.PeerServiceStub, contract_id: str, offset: int = 0
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        async for _ in stub.Deliver(
            node_pb2.DeliverRequest(contract_id=contract_id, offset=offset), timeout=DEADLINE
        ):
            pass
    return refused.value


# ---------------------------------------------------------------- tests


async def test_a_full_delivery_with_the_cli_verifies_the_digest(market: Market) -> None:
    started = node_cli(
        "delivery", "start", "--state", market.buyer.state, market.contracts["small"]
    )
    assert started.returncode == 0, started.stderr
    assert "digest verified" in started.stdout
    assert "MiB" in started.stderr  # the progress bar
    shown = node_cli(
        "delivery", "show", "--state", market.buyer.state, market.contracts["small"], "--json"
    )
    assert shown.returncode == 0, shown.stderr
    progress = json.loads(shown.stdout)
    assert progress["complete"] is True and progress["digest_verified"] is True
    assert int(progress["received_bytes"]) == int(progress["total_bytes"]) == SIZES["small"]
    assert received_blob(market, "small").read_bytes() == market.files["small"].read_bytes()
    assert not partial_of(market, "small").exists()


async def test_a_killed_seller_restarts_and_the_delivery_resumes_from_its_offset(
    market: Market,
) -> None:
    total = SIZES["big"]
    await market.operator(market.buyer).StartDelivery(
        node_pb2.StartDeliveryRequest(contract_id=market.contracts["big"]), timeout=DEADLINE
    )
    deadline = time.monotonic() + DEADLINE
    while (await progress_of(market, "big")).received_bytes < total // 4:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    market.seller.process.send_signal(signal.SIGKILL)
    await market.seller.process.wait()
    await asyncio.sleep(1.0)  # the buyer notices and retries; nothing arrives meanwhile
    stalled = await progress_of(market, "big")
    at_kill = stalled.received_bytes
    assert total // 4 <= at_kill < total, stalled
    assert stalled.error.startswith(RETRYING), stalled
    assert (await progress_of(market, "big")).received_bytes == at_kill
    market.seller = await start_node(market.seller.state, SELLER_ENV)
    seen = [at_kill]
    deadline = time.monotonic() + 60
    while not (progress := await progress_of(market, "big")).complete:
        seen.append(progress.received_bytes)
        assert not progress.error or progress.error.startswith(RETRYING), progress
        assert time.monotonic() < deadline, progress
        await asyncio.sleep(0.05)
    assert progress.digest_verified and progress.received_bytes == total
    assert seen == sorted(seen), "the delivery went backwards"
    # The restarted seller was asked for the rest only, not for the data from 0 again.
    offsets = offsets_served(market, "big")
    assert offsets[0] == 0 and offsets[-1] >= at_kill > 0, offsets
    assert hashlib.sha256(received_blob(market, "big").read_bytes()).digest() == market.digest(
        "big"
    )


async def test_a_killed_buyer_resumes_its_delivery_when_it_starts_again(market: Market) -> None:
    total = SIZES["big"]
    await market.operator(market.buyer).StartDelivery(
        node_pb2.StartDeliveryRequest(contract_id=market.contracts["restart"]), timeout=DEADLINE
    )
    deadline = time.monotonic() + DEADLINE
    while (await progress_of(market, "restart")).received_bytes < total // 4:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    market.buyer.process.send_signal(signal.SIGKILL)
    await market.buyer.process.wait()
    conn = open_connection(market.buyer.state / "node.db", readonly=True)
    try:
        row = conn.execute(
            "SELECT state, received_bytes FROM deliveries WHERE contract_id = ?",
            (market.contracts["restart"],),
        ).fetchone()
    finally:
        conn.close()
    state, at_kill = row[0], int(row[1])
    assert state == "running" and total // 4 <= at_kill < total, row
    # Nobody starts the delivery again: the node resumes it by itself when it starts.
    market.buyer = await start_node(market.buyer.state, BUYER_ENV)
    seen = [at_kill]
    deadline = time.monotonic() + 60
    while not (progress := await progress_of(market, "restart")).complete:
        seen.append(progress.received_bytes)
        assert time.monotonic() < deadline, progress
        await asyncio.sleep(0.05)
    assert progress.digest_verified and progress.received_bytes == total
    assert seen == sorted(seen), "the delivery went backwards"
    offsets = offsets_served(market, "restart")
    assert offsets[0] == 0 and offsets[-1] >= at_kill > 0, offsets


async def test_a_tampered_chunk_is_refused_and_the_delivery_can_start_again(
    market: Market,
) -> None:
    blob = market.seller.state / "blobs" / market.digest("tamper").hex()
    with blob.open("r+b") as handle:  # one chunk of the seller's copy changes
        handle.seek(MIB)
        handle.write(b"\x00" * 256 * 1024)
    operator = market.operator(market.buyer)
    request = node_pb2.StartDeliveryRequest(contract_id=market.contracts["tamper"])
    await operator.StartDelivery(request, timeout=DEADLINE)
    failed = await settled(market, "tamper")
    assert not failed.complete and not failed.digest_verified
    assert f"does not match the expected content digest {market.digest('tamper').hex()}" in (
        failed.error
    )
    assert not received_blob(market, "tamper").exists()
    assert not partial_of(market, "tamper").exists()
    shown = node_cli("delivery", "show", "--state", market.buyer.state, market.contracts["tamper"])
    assert shown.returncode == 1 and "does not match" in shown.stdout
    # The seller's operator attaches the right data again; the buyer starts over and succeeds.
    again = node_cli(
        "dataset", "attach", "--state", market.seller.state, market.datasets["tamper"],
        market.files["tamper"],
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    await operator.StartDelivery(request, timeout=DEADLINE)
    progress = await settled(market, "tamper")
    assert progress.complete and progress.digest_verified, progress
    assert received_blob(market, "tamper").read_bytes() == market.files["tamper"].read_bytes()


async def test_attaching_the_wrong_data_is_refused(market: Market) -> None:
    refused = node_cli(
        "dataset", "attach", "--state", market.seller.state, market.datasets["big"],
        market.files["small"],
    )  # fmt: skip
    assert refused.returncode == 2
    assert f"does not match the expected content digest {market.digest('big').hex()}" in (
        refused.stderr
    )


async def test_only_the_buyer_node_may_fetch(market: Market) -> None:
    other = await deliver_refused(
        peer_stub(market.seller, market.other_state), market.contracts["small"]
    )
    assert other.code() is grpc.StatusCode.PERMISSION_DENIED
    assert f"only {BUYER[0]} may fetch" in (other.details() or "")
    as_buyer = peer_stub(market.seller, market.buyer.state)
    unknown = await deliver_refused(as_buyer, "C" + "0" * 32)
    assert unknown.code() is grpc.StatusCode.NOT_FOUND
    past_end = await deliver_refused(as_buyer, market.contracts["small"], SIZES["small"] + 1)
    assert past_end.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "past the end" in (past_end.details() or "")


async def test_a_contract_that_is_not_finalized_is_not_delivered(market: Market) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await market.operator(market.buyer).StartDelivery(
            node_pb2.StartDeliveryRequest(contract_id=market.contracts["requested"]),
            timeout=DEADLINE,
        )
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "only a finalized contract" in (refused.value.details() or "")
    direct = await deliver_refused(
        peer_stub(market.seller, market.buyer.state), market.contracts["requested"]
    )
    assert direct.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "is requested" in (direct.details() or "")
    shown = node_cli(
        "delivery", "start", "--state", market.buyer.state, market.contracts["requested"]
    )
    assert shown.returncode == 2 and "only a finalized contract" in shown.stderr
