"""Contract negotiation between two provincial nodes, as real processes over mutual TLS.

One registry and two nodes: Guangzhou (gd-gzde, the seller's exchange) and
Shanghai (sh-sde, the buyer's), initialized, enrolled and served through the
CLIs, driven through their operator APIs with the generated stubs:
negotiate -> agree -> finalize with one envelope carrying both nodes'
signatures; the auto-approve rule; an idempotent retry; the refusals before
agreeing, each naming its rule (exports: the customs rules with the
catalog's cross-border rule of each category, a permit fetched and verified
offline); either node restarted mid-negotiation; the
trade record in the registry's log and a frozen member, once the registry
offers its supervision service.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from provex import bundle as bundles
from provex import contracts
from provex.ids import CreditCode
from provex.timestamps import to_timestamp, utc_now
from provex.trust import TrustRoot, load_trust_root
from provex.v1 import (
    common_pb2,
    dataset_pb2,
    market_pb2,
    node_pb2,
    node_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
    supervision_pb2,
    supervision_pb2_grpc,
)
from tests.integration.conftest import RunningRegistry, run_cli, start_registry, stop_registry
from tests.integration.nodes import RunningNode, create_node, node_cli, start_node, stop_node

DEADLINE = 20.0
SELLER, BUYER = "gd-gzde", "sh-sde"
NODES = ((SELLER, "440100"), (BUYER, "310000"))


def code(region: str, tail: str) -> str:
    return CreditCode.from_parts("9", "1", region, tail).code


HOLDER = code("440100", "MA5PE001")
BUYER_CN = code("310000", "MA5BUY01")
BUYER_HK = code("310000", "MA5BUYHK")
STRANGER = code("310000", "MA5NXBDY")
MAPS = "geo.mapping"  # seed catalog: IMPORTANT, cross-border FORBIDDEN
ORDERS = "commerce.ecommerce.orders"  # seed catalog: GENERAL, personal, ASSESSMENT_REQUIRED
ORDERS_INDIVIDUALS = 10_000_000  # the grading rule makes this many individuals IMPORTANT


@dataclass
class Market:
    registry: RunningRegistry
    nodes: dict[str, RunningNode]
    listings: dict[str, market_pb2.Listing]
    workdir: Path

    def operator(self, node_id: str) -> node_pb2_grpc.OperatorServiceStub:
        return node_pb2_grpc.OperatorServiceStub(self.nodes[node_id].operator_channel())

    def admin_channel(self) -> grpc.aio.Channel:
        return self.registry.federation_channel(self.registry.state / "admins" / "alice")


def description(title: str, category: str, individuals: int = 0) -> dataset_pb2.DatasetDescription:
    return dataset_pb2.DatasetDescription(
        holder=HOLDER,
        title=title,
        description=f"{title}: hourly records.",
        categories=[category],
        content_digest=hashlib.sha256(title.encode()).digest(),
        size_bytes=1_000_000,
        record_count=10_000,
        lawful_source="collected by the holder's own sensors",
        rights=dataset_pb2.DataRights(
            resource_holder=HOLDER, processing_user=HOLDER, product_operator=HOLDER
        ),
        language="zh",
        personal_info=common_pb2.PersonalInfoProfile(individuals=individuals),
    )


async def until(
    probe: Callable[[], Awaitable[market_pb2.Contract]],
    done: Callable[[market_pb2.Contract], bool],
    seconds: float = DEADLINE,
) -> market_pb2.Contract:
    deadline = time.monotonic() + seconds
    while True:
        value = await probe()
        if done(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.2)


async def add_member(
    operator: node_pb2_grpc.OperatorServiceStub, credit_code: str, region: str, country: str
) -> None:
    answer = await operator.AddMember(
        node_pb2.AddMemberRequest(
            member=registry_pb2.Member(
                credit_code=credit_code,
                name=f"Member {credit_code[-4:]}",
                region_code=region,
                country=country,
                security_officer=registry_pb2.SecurityOfficer(
                    name="王安全", title="CSO", phone="+86 20 1234 5678", email="cso@example.cn"
                ),
            )
        ),
        timeout=DEADLINE,
    )
    assert answer.report.state == node_pb2.OUTBOX_STATE_DONE, answer.report


async def listing_of(
    operator: node_pb2_grpc.OperatorServiceStub,
    key: str,
    category: str,
    auto: bool,
    individuals: int = 0,
) -> market_pb2.Listing:
    record = (
        await operator.SubmitDataset(
            node_pb2.SubmitDatasetRequest(
                idempotency_key=key,
                dataset=description(f"广州数据 {key}", category, individuals),
            ),
            timeout=DEADLINE,
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
    created = await operator.CreateListing(
        node_pb2.CreateListingRequest(
            listing=market_pb2.Listing(
                dataset_id=record.dataset_id,
                price=common_pb2.Money(fen=250_000),
                pricing_model=market_pb2.PRICING_MODEL_ONE_TIME,
                licence=market_pb2.LicenceTerms(purposes=["research"], term_days=365),
                delivery=market_pb2.DELIVERY_METHOD_FILE,
                auto_approve=auto,
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
async def market(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Market]:
    workdir = tmp_path_factory.mktemp("market")
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
        running = Market(registry, nodes, {}, workdir)
        seller, buyer = running.operator(SELLER), running.operator(BUYER)
        await add_member(seller, HOLDER, "440100", "CN")
        await add_member(buyer, BUYER_CN, "310000", "CN")
        await add_member(buyer, BUYER_HK, "310000", "HK")
        running.listings["manual"] = await listing_of(
            seller, "traffic", "transport.road.traffic_flow", auto=False
        )
        running.listings["auto"] = await listing_of(
            seller, "traffic-auto", "transport.road.traffic_flow", auto=True
        )
        running.listings["important"] = await listing_of(seller, "mapping", MAPS, True)
        assert running.listings["important"].grade == common_pb2.GRADE_IMPORTANT
        running.listings["orders"] = await listing_of(
            seller, "orders", ORDERS, True, individuals=ORDERS_INDIVIDUALS
        )
        assert running.listings["orders"].grade == common_pb2.GRADE_IMPORTANT
        await peers_known(running)
        yield running
    finally:
        for node in nodes.values():
            assert await stop_node(node) == 0
        if registry.process.returncode is None:
            assert await stop_registry(registry) == 0


async def peers_known(market: Market) -> None:
    """Wait until each node's cached directory has the other's announced endpoint."""
    deadline = time.monotonic() + DEADLINE
    for node_id in (SELLER, BUYER):
        while True:
            answer = await market.operator(node_id).FederatedSearch(
                node_pb2.FederatedSearchRequest(query=market_pb2.SearchQuery(text="")),
                timeout=DEADLINE,
            )
            if len(answer.answered) == len(NODES):
                break
            assert time.monotonic() < deadline, answer
            await asyncio.sleep(0.3)


def request(
    key: str, listing: market_pb2.Listing, buyer: str = BUYER_CN, permit: str = ""
) -> node_pb2.RequestContractRequest:
    return node_pb2.RequestContractRequest(
        idempotency_key=key,
        seller_node=SELLER,
        listing_id=listing.listing_id,
        buyer=buyer,
        purpose="traffic research for the city's planning office",
        export_permit_id=permit,
    )


async def contract_on(market: Market, node_id: str, contract_id: str) -> market_pb2.Contract:
    answer = await market.operator(node_id).GetContract(
        node_pb2.GetContractRequest(contract_id=contract_id), timeout=DEADLINE
    )
    return answer.contract


async def finalized_on_both(market: Market, contract_id: str) -> tuple[market_pb2.Contract, ...]:
    both = []
    for node_id in (SELLER, BUYER):
        both.append(
            await until(
                lambda node_id=node_id: contract_on(market, node_id, contract_id),  # type: ignore[misc]
                lambda c: c.state == contracts.FINALIZED,
                seconds=40,
            )
        )
    return tuple(both)


async def node_keys(market: Market) -> dict[str, bytes]:
    async with market.admin_channel() as channel:
        stub = registry_pb2_grpc.DirectoryServiceStub(channel)
        answer = await stub.ListNodes(registry_pb2.ListNodesRequest(), timeout=DEADLINE)
    return {node.node_id: bytes(node.signing_key) for node in answer.nodes}


def trust_root(market: Market) -> TrustRoot:
    state = market.nodes[SELLER].state
    identity = json.loads((state / "identity.json").read_text())
    return load_trust_root(
        (state / "trust" / "root-1.json").read_bytes(), identity["trust_root_digest"], utc_now()
    ).root


async def refusal(market: Market, call: node_pb2.RequestContractRequest) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await market.operator(BUYER).RequestContract(call, timeout=DEADLINE)
    return caught.value


# ---------------------------------------------------------------- the path


async def test_negotiate_agree_finalize_with_two_signatures(market: Market) -> None:
    requested = (
        await market.operator(BUYER).RequestContract(
            request("first", market.listings["manual"]), timeout=DEADLINE
        )
    ).contract
    cid = contracts.contract_id_for(BUYER, "first")
    assert requested.terms.contract_id == cid
    assert requested.state == contracts.REQUESTED
    # The seller filled in the listing's facts; both sides hold the same request.
    assert requested.terms.dataset_id == market.listings["manual"].dataset_id
    assert requested.terms.price.fen == 250_000
    assert requested.terms.seller == HOLDER
    on_seller = await contract_on(market, SELLER, cid)
    assert on_seller.state == contracts.REQUESTED
    assert on_seller.terms == requested.terms
    pending = await market.operator(SELLER).ListContracts(
        node_pb2.ListContractsRequest(state=contracts.REQUESTED), timeout=DEADLINE
    )
    assert cid in [c.terms.contract_id for c in pending.contracts]

    agreed = await market.operator(SELLER).DecideContract(
        node_pb2.DecideContractRequest(contract_id=cid, agree=True), timeout=DEADLINE
    )
    assert agreed.contract.state in (contracts.AGREED, contracts.FINALIZED)
    seller_copy, buyer_copy = await finalized_on_both(market, cid)
    assert seller_copy.state == buyer_copy.state == contracts.FINALIZED
    assert seller_copy.envelope == buyer_copy.envelope
    keys = await node_keys(market)
    signed = contracts.verify_contract(seller_copy.envelope, keys[SELLER], keys[BUYER])
    assert signed.contract_id == cid
    assert signed.buyer == BUYER_CN and signed.seller == HOLDER
    # The buyer cannot agree in the seller's place, and a finalized contract is final.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await market.operator(SELLER).DecideContract(
            node_pb2.DecideContractRequest(contract_id=cid, agree=False, reason="changed mind"),
            timeout=DEADLINE,
        )
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "final" in (caught.value.details() or "")


async def test_auto_approve_finalizes_without_the_operator(market: Market) -> None:
    answer = await market.operator(BUYER).RequestContract(
        request("auto-1", market.listings["auto"]), timeout=DEADLINE
    )
    assert answer.contract.state in (contracts.AGREED, contracts.FINALIZED)
    seller_copy, buyer_copy = await finalized_on_both(market, answer.contract.terms.contract_id)
    assert seller_copy.envelope == buyer_copy.envelope


async def test_a_retried_request_returns_the_same_contract(market: Market) -> None:
    operator = market.operator(BUYER)
    first = (await operator.RequestContract(request("retry", market.listings["manual"]))).contract
    again = (await operator.RequestContract(request("retry", market.listings["manual"]))).contract
    assert again.terms == first.terms
    listed = await operator.ListContracts(node_pb2.ListContractsRequest(), timeout=DEADLINE)
    ids = [c.terms.contract_id for c in listed.contracts]
    assert ids.count(first.terms.contract_id) == 1
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await operator.RequestContract(request("retry", market.listings["auto"]), timeout=DEADLINE)
    assert caught.value.code() is grpc.StatusCode.ALREADY_EXISTS
    assert "listing_id" in (caught.value.details() or "")


async def test_the_operator_cli_requests_shows_and_lists_contracts(market: Market) -> None:
    buyer_state, seller_state = market.nodes[BUYER].state, market.nodes[SELLER].state
    helped = node_cli("contract", "request", "--help")
    assert helped.returncode == 0 and "--seller-node" in helped.stdout
    assert node_cli("risk", "submit", "--help").returncode == 0
    asked = await asyncio.to_thread(
        node_cli,
        "contract", "request", "--state", buyer_state, "--json", "--key", "cli-1",
        "--seller-node", SELLER, "--listing", market.listings["auto"].listing_id,
        "--buyer", BUYER_CN, "--purpose", "route planning",
    )  # fmt: skip
    assert asked.returncode == 0, asked.stderr
    cid = json.loads(asked.stdout)["terms"]["contract_id"]
    assert cid == contracts.contract_id_for(BUYER, "cli-1")
    await finalized_on_both(market, cid)
    shown = await asyncio.to_thread(node_cli, "contract", "show", cid, "--state", seller_state)
    assert shown.returncode == 0, shown.stderr
    assert "finalized" in shown.stdout and "signatures   2 of 2" in shown.stdout
    listed = await asyncio.to_thread(node_cli, "contract", "list", "--state", buyer_state, "--json")
    assert listed.returncode == 0, listed.stderr
    assert cid in [c["terms"]["contract_id"] for c in json.loads(listed.stdout)["contracts"]]
    table = await asyncio.to_thread(
        node_cli, "contract", "list", "--only", "finalized", "--state", buyer_state
    )
    assert any(line.startswith(cid) and "finalized" in line for line in table.stdout.splitlines())
    refused = await asyncio.to_thread(
        node_cli, "contract", "decide", cid, "--terminate", "--state", buyer_state
    )
    assert refused.returncode != 0 and "reason" in refused.stderr


# ---------------------------------------------------------------- important data


async def important_listed(market: Market, name: str = "important") -> market_pb2.Listing:
    """An important listing, listed again if the registry's lapse check suspended it."""
    seller = market.operator(SELLER)
    listing = market.listings[name]
    deadline = time.monotonic() + DEADLINE
    while True:
        record = await seller.GetDataset(
            node_pb2.GetDatasetRequest(dataset_id=listing.dataset_id), timeout=DEADLINE
        )
        if record.dataset.status == common_pb2.STATUS_ACTIVE:
            break
        assert time.monotonic() < deadline, f"the important dataset {name} was not reinstated"
        await asyncio.sleep(0.2)
    current = (
        await seller.GetListing(
            node_pb2.GetListingRequest(listing_id=listing.listing_id), timeout=DEADLINE
        )
    ).listing
    if current.state != market_pb2.LISTING_STATE_LISTED:
        current = (
            await seller.SetListingState(
                node_pb2.SetListingStateRequest(
                    listing_id=listing.listing_id, state=market_pb2.LISTING_STATE_LISTED
                ),
                timeout=DEADLINE,
            )
        ).listing
    return current


async def test_important_data_needs_the_holders_accepted_risk_assessment(market: Market) -> None:
    error = await refusal(market, request("important-no-report", market.listings["important"]))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    # The node's own rule; or, once the registry's lapse check ran, the suspension it made.
    assert any(
        rule in (error.details() or "")
        for rule in ("current-risk-assessment", "valid-certificate", "listing-listed")
    ), error.details()
    submitted = await market.operator(SELLER).SubmitRiskAssessment(
        node_pb2.SubmitRiskAssessmentRequest(
            idempotency_key="risk-2025",
            assessment=supervision_pb2.RiskAssessment(
                holder=HOLDER,
                period_start=to_timestamp(datetime(2025, 1, 1, tzinfo=UTC)),
                period_end=to_timestamp(datetime(2025, 12, 31, tzinfo=UTC)),
                data=[
                    supervision_pb2.AssessedData(category=MAPS, records=10_000),
                    supervision_pb2.AssessedData(category=ORDERS, records=ORDERS_INDIVIDUALS),
                ],
                processing="stored and processed on premises",
                risks="leak of survey coordinates",
                measures="encryption at rest, access review",
                report_digest=hashlib.sha256(b"the full report").digest(),
            ),
        ),
        timeout=DEADLINE,
    )
    assert submitted.report.state == node_pb2.OUTBOX_STATE_DONE, submitted.report
    assert submitted.assessment.assessment_id
    async with market.admin_channel() as channel:
        await supervision_pb2_grpc.SupervisionServiceStub(channel).ReviewRiskAssessment(
            supervision_pb2.ReviewRiskAssessmentRequest(
                assessment_id=submitted.assessment.assessment_id, accept=True, reason="complete"
            ),
            timeout=DEADLINE,
        )
    market.listings["important"] = await important_listed(market)
    answer = await market.operator(BUYER).RequestContract(
        request("important-reported", market.listings["important"]), timeout=DEADLINE
    )
    await finalized_on_both(market, answer.contract.terms.contract_id)


async def approved_permit(
    stub: supervision_pb2_grpc.SupervisionServiceStub, key: str, dataset_id: str
) -> str:
    """The id of a permit the admin applied for and approved: the dataset to Hong Kong."""
    applied = await stub.ApplyExportPermit(
        supervision_pb2.ApplyExportPermitRequest(
            idempotency_key=key,
            application=supervision_pb2.ExportPermit(
                exporter=HOLDER,
                dataset_ids=[dataset_id],
                destination="HK",
                purpose="urban research in Hong Kong",
            ),
        ),
        timeout=DEADLINE,
    )
    permit_id = applied.application.permit_id
    await stub.ReviewExportPermit(
        supervision_pb2.ReviewExportPermitRequest(
            permit_id=permit_id, approve=True, reason="assessed"
        ),
        timeout=DEADLINE,
    )
    return permit_id


async def test_exporting_important_data_needs_a_permit(market: Market) -> None:
    """Orders of 10,000,000 people: important data, and a category the catalog assesses."""
    listing = await important_listed(market, "orders")
    error = await refusal(market, request("export-important", listing, buyer=BUYER_HK))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    details = error.details() or ""
    for rule in ("important-data-permit", "catalog-assessment", "personal-info-assessment"):
        assert f"rule {rule}" in details, details
    cid = contracts.contract_id_for(BUYER, "export-important")
    assert (await contract_on(market, SELLER, cid)).state == contracts.TERMINATED


async def test_a_forbidden_category_is_never_exported_even_with_a_permit(market: Market) -> None:
    """geo.mapping: the catalog forbids its export; the registry's permit changes nothing."""
    listing = await important_listed(market)
    async with market.admin_channel() as channel:
        stub = supervision_pb2_grpc.SupervisionServiceStub(channel)
        permit_id = await approved_permit(stub, "permit-maps-hk", listing.dataset_id)
    error = await refusal(market, request("export-maps", listing, buyer=BUYER_HK, permit=permit_id))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    details = error.details() or ""
    assert "rule catalog-forbidden" in details and MAPS in details, details
    assert "important-data-permit" not in details, details  # refused before any document
    cid = contracts.contract_id_for(BUYER, "export-maps")
    refused = await contract_on(market, SELLER, cid)
    assert refused.state == contracts.TERMINATED
    assert "catalog-forbidden" in refused.termination_reason
    # The same dataset still trades on the mainland.
    answer = await market.operator(BUYER).RequestContract(
        request("maps-domestic", listing), timeout=DEADLINE
    )
    await finalized_on_both(market, answer.contract.terms.contract_id)


async def test_a_registry_permit_allows_the_export_until_it_is_revoked(market: Market) -> None:
    listing = await important_listed(market, "orders")
    async with market.admin_channel() as channel:
        stub = supervision_pb2_grpc.SupervisionServiceStub(channel)
        permit_id = await approved_permit(stub, "permit-hk", listing.dataset_id)
        answer = await market.operator(BUYER).RequestContract(
            request("export-permitted", listing, buyer=BUYER_HK, permit=permit_id),
            timeout=DEADLINE,
        )
        cid = answer.contract.terms.contract_id
        seller_copy, _ = await finalized_on_both(market, cid)
        assert seller_copy.terms.export_permit_id == permit_id
        reported = await until(
            lambda: contract_on(market, SELLER, cid), lambda c: c.HasField("trade_record"), 40
        )
        trade = bundles.verify_bundle(
            reported.trade_record, trust_root(market), supervision_pb2.TradeRecord
        ).document
        assert trade.export.destination == "HK"
        assert trade.export.mechanism == supervision_pb2.EXPORT_MECHANISM_ASSESSMENT
        assert trade.export.permit_id == permit_id
        await stub.RevokeExportPermit(
            supervision_pb2.RevokeExportPermitRequest(permit_id=permit_id, reason="misuse"),
            timeout=DEADLINE,
        )
    error = await refusal(
        market, request("export-revoked", listing, buyer=BUYER_HK, permit=permit_id)
    )
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "revoked" in (error.details() or ""), error.details()


# ---------------------------------------------------------------- refusals


async def test_an_unlisted_listing_is_refused_naming_the_rule(market: Market) -> None:
    seller = market.operator(SELLER)
    extra = await listing_of(seller, "suspended-one", "transport.road.traffic_flow", auto=True)
    await seller.SetListingState(
        node_pb2.SetListingStateRequest(
            listing_id=extra.listing_id,
            state=market_pb2.LISTING_STATE_SUSPENDED,
            reason="maintenance",
        ),
        timeout=DEADLINE,
    )
    error = await refusal(market, request("unlisted", extra))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "listing-listed" in (error.details() or "")
    cid = contracts.contract_id_for(BUYER, "unlisted")
    for node_id in (BUYER, SELLER):
        kept = await contract_on(market, node_id, cid)
        assert kept.state == contracts.TERMINATED
        assert "listing-listed" in kept.termination_reason


async def test_a_buyer_that_is_no_member_is_refused(market: Market) -> None:
    error = await refusal(market, request("stranger", market.listings["auto"], buyer=STRANGER))
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "known-buyer" in (error.details() or "")


async def test_a_peer_cannot_propose_for_another_node(market: Market) -> None:
    seller, buyer = market.nodes[SELLER], market.nodes[BUYER]
    terms = market_pb2.ContractTerms(
        contract_id=contracts.contract_id_for("gd-szde", "forged"),
        listing_id=market.listings["auto"].listing_id,
        seller_node=SELLER,
        buyer=BUYER_CN,
        buyer_node="gd-szde",
        buyer_country="CN",
        purpose="research",
    )
    async with seller.peer_channel_as(buyer) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await node_pb2_grpc.PeerServiceStub(channel).ProposeContract(
                node_pb2.ProposeContractRequest(terms=terms), timeout=DEADLINE
            )
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED


# ---------------------------------------------------------------- restarts


async def test_restarting_the_seller_mid_negotiation_keeps_the_contract(market: Market) -> None:
    requested = (
        await market.operator(BUYER).RequestContract(
            request("restart-seller", market.listings["manual"]), timeout=DEADLINE
        )
    ).contract
    cid = requested.terms.contract_id
    assert await stop_node(market.nodes[SELLER]) == 0
    market.nodes[SELLER] = await start_node(market.nodes[SELLER].state)
    await peers_known(market)
    kept = await contract_on(market, SELLER, cid)
    assert kept.state == contracts.REQUESTED
    assert kept.terms == requested.terms
    await market.operator(SELLER).DecideContract(
        node_pb2.DecideContractRequest(contract_id=cid, agree=True), timeout=DEADLINE
    )
    seller_copy, buyer_copy = await finalized_on_both(market, cid)
    assert seller_copy.envelope == buyer_copy.envelope


async def test_an_agreement_reaches_a_buyer_that_was_down(market: Market) -> None:
    requested = (
        await market.operator(BUYER).RequestContract(
            request("restart-buyer", market.listings["manual"]), timeout=DEADLINE
        )
    ).contract
    cid = requested.terms.contract_id
    assert await stop_node(market.nodes[BUYER]) == 0
    agreed = await market.operator(SELLER).DecideContract(
        node_pb2.DecideContractRequest(contract_id=cid, agree=True), timeout=DEADLINE
    )
    assert agreed.contract.state == contracts.AGREED  # the buyer is down: notification queued
    items = await market.operator(SELLER).ListOutbox(node_pb2.ListOutboxRequest())
    notify = [i for i in items.items if i.idempotency_key == f"notify:{cid}:agreed"]
    assert notify and notify[0].state == node_pb2.OUTBOX_STATE_PENDING
    market.nodes[BUYER] = await start_node(market.nodes[BUYER].state)
    assert (await contract_on(market, BUYER, cid)).state == contracts.REQUESTED
    seller_copy, buyer_copy = await finalized_on_both(market, cid)
    assert seller_copy.envelope == buyer_copy.envelope


async def test_the_buyer_terminates_and_the_seller_learns_it(market: Market) -> None:
    requested = (
        await market.operator(BUYER).RequestContract(
            request("withdrawn", market.listings["manual"]), timeout=DEADLINE
        )
    ).contract
    cid = requested.terms.contract_id
    done = await market.operator(BUYER).DecideContract(
        node_pb2.DecideContractRequest(contract_id=cid, agree=False, reason="budget cut"),
        timeout=DEADLINE,
    )
    assert done.contract.state == contracts.TERMINATED
    on_seller = await until(
        lambda: contract_on(market, SELLER, cid), lambda c: c.state == contracts.TERMINATED
    )
    assert on_seller.termination_reason == "budget cut"


# ---------------------------------------------------------------- with the registry's supervision


async def test_the_trade_record_is_in_the_registry_log(market: Market) -> None:
    cid = contracts.contract_id_for(BUYER, "first")
    reported = await until(
        lambda: contract_on(market, SELLER, cid), lambda c: c.HasField("trade_record"), 40
    )
    assert reported.HasField("trade_record")
    record = bundles.verify_bundle(
        reported.trade_record, trust_root(market), supervision_pb2.TradeRecord
    )
    assert record.document.contract_id == cid
    assert record.document.contract == reported.envelope
    # The buyer's node fetches the record from the seller's and verifies it the same way.
    on_buyer = await until(
        lambda: contract_on(market, BUYER, cid), lambda c: c.HasField("trade_record")
    )
    assert on_buyer.trade_record == reported.trade_record


async def test_a_frozen_member_cannot_trade(market: Market) -> None:
    async with market.admin_channel() as channel:
        stub = supervision_pb2_grpc.SupervisionServiceStub(channel)
        await stub.FreezeMember(
            supervision_pb2.FreezeMemberRequest(credit_code=BUYER_CN, reason="market abuse"),
            timeout=DEADLINE,
        )
        try:
            deadline = time.monotonic() + DEADLINE
            while True:
                try:
                    await market.operator(BUYER).RequestContract(
                        request(f"frozen-{time.monotonic_ns()}", market.listings["auto"]),
                        timeout=DEADLINE,
                    )
                except grpc.aio.AioRpcError as error:
                    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
                    assert "member-not-frozen" in (error.details() or "")
                    break
                assert time.monotonic() < deadline, "the freeze never reached the buyer's node"
                await asyncio.sleep(0.3)
        finally:
            await stub.UnfreezeMember(
                supervision_pb2.UnfreezeMemberRequest(credit_code=BUYER_CN, reason="cleared"),
                timeout=DEADLINE,
            )


async def listing_state(market: Market, listing_id: str) -> int:
    answer = await market.operator(SELLER).GetListing(
        node_pb2.GetListingRequest(listing_id=listing_id), timeout=DEADLINE
    )
    return answer.listing.state


async def test_a_frozen_seller_has_its_listings_suspended_until_unfrozen(market: Market) -> None:
    listing_id = market.listings["auto"].listing_id
    assert await listing_state(market, listing_id) == market_pb2.LISTING_STATE_LISTED
    async with market.admin_channel() as channel:
        stub = supervision_pb2_grpc.SupervisionServiceStub(channel)
        await stub.FreezeMember(
            supervision_pb2.FreezeMemberRequest(credit_code=HOLDER, reason="inquiry"),
            timeout=DEADLINE,
        )
        try:
            deadline = time.monotonic() + DEADLINE
            while await listing_state(market, listing_id) != market_pb2.LISTING_STATE_SUSPENDED:
                assert time.monotonic() < deadline, "the freeze never suspended the listing"
                await asyncio.sleep(0.2)
            error = await refusal(market, request("seller-frozen", market.listings["auto"]))
            assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
        finally:
            await stub.UnfreezeMember(
                supervision_pb2.UnfreezeMemberRequest(credit_code=HOLDER, reason="cleared"),
                timeout=DEADLINE,
            )
    deadline = time.monotonic() + DEADLINE
    while await listing_state(market, listing_id) != market_pb2.LISTING_STATE_LISTED:
        assert time.monotonic() < deadline, "lifting the freeze did not list the listing again"
        await asyncio.sleep(0.2)
    answer = await market.operator(BUYER).RequestContract(
        request("seller-unfrozen", market.listings["auto"]), timeout=DEADLINE
    )
    await finalized_on_both(market, answer.contract.terms.contract_id)


async def test_the_kept_catalog_is_enforced_while_the_registry_is_down(market: Market) -> None:
    """Last in the module: it stops the registry. A restarted seller still knows the catalog."""
    listing = await important_listed(market)
    async with market.admin_channel() as channel:
        stub = supervision_pb2_grpc.SupervisionServiceStub(channel)
        permit_id = await approved_permit(stub, "permit-maps-offline", listing.dataset_id)
    assert await stop_registry(market.registry) == 0
    seller = market.nodes[SELLER]
    peer_address = seller.endpoints["peer"]  # Restarted on the same port: no directory update.
    assert await stop_node(seller) == 0
    market.nodes[SELLER] = await start_node(seller.state, {"PROVEX_NODE_PEER_LISTEN": peer_address})
    error = await refusal(
        market, request("export-maps-offline", listing, buyer=BUYER_HK, permit=permit_id)
    )
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION, error
    details = error.details() or ""
    assert "rule catalog-forbidden" in details and MAPS in details, details
