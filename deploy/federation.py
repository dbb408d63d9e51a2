"""A local Provex federation: a registry and three provincial nodes on loopback, and a walkthrough.

    python deploy/federation.py [--workdir DIR] [--exit-after-walkthrough]

(``make demo`` installs the project and runs this.) Every party is a real
process with its own state directory and embedded SQLite, talking gRPC over
mutual TLS exactly as in production:

1. ``provex-registry init`` / ``admin add`` / ``serve`` (ports picked by the OS);
2. for Guangzhou (gd-gzde, 440100), Shenzhen (gd-szde, 440300) and Shanghai
   (sh-sde, 310000): ``provex-node init``, ``provex-registry admin invite``,
   ``provex-node enroll`` (the invitation pins the trust root), ``provex-node serve``;
3. each exchange onboards members, registers datasets through the registry
   (signed, logged certificates, verified by the node) and lists them;
4. federated searches from Guangzhou, in Chinese and English, merge the
   listings of all three provinces and name any node that did not answer;
5. a domestic trade: a Shanghai company buys Guangzhou's traffic data; the
   two nodes negotiate, both sign, the registry logs the trade, and the data
   is delivered in chunks and checked against the certificate's SHA-256;
6. core data never reaches the market: the registry refuses to certify it;
7. an export to Hong Kong of personal information (1.2 million people) is
   refused until the registry issues an export permit, then goes through,
   declared and counted;
8. a holder of important data without a current risk assessment has its
   dataset (and listing) suspended federation-wide; its report, filed
   through the node and accepted by Guangdong's provincial supervisor,
   reinstates it (and that supervisor cannot read Shanghai's reports);
9. the registry suspends one certificate and the Shenzhen node suspends its
   listing on its own within seconds;
10. the supervisors' view: trade statistics, the price index and every
    supervisory action with who took it;
11. Shanghai audits the registry's whole log (``provex-node audit``): every
    entry's signature, and the tree's root against the checkpoint it verified;
12. ``provex-registry log verify`` recomputes the log at the registry.

The federation then keeps running until Ctrl-C (or exits at once with
``--exit-after-walkthrough``), and every process is stopped with SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

from provex.envelope import Envelope
from provex.identity import channel_credentials
from provex.ids import CreditCode
from provex.rpc import wait_for_endpoints
from provex.timestamps import to_timestamp
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

BIN = Path(sys.executable).parent
DEADLINE = 20.0
START_TIMEOUT = 60.0


@dataclass(frozen=True)
class Exchange:
    """One provincial exchange of the walkthrough and what it offers."""

    node_id: str
    region: str
    name: str
    members: tuple[tuple[str, str], ...]  # (credit code, organisation name)
    datasets: tuple[tuple[str, str, str, int], ...]  # (title, description, category, price fen)


def _code(region: str, body: str) -> str:
    return CreditCode.from_parts("9", "1", region, body).code


EXCHANGES = (
    Exchange(
        "gd-gzde",
        "440100",
        "广州数据交易所 Guangzhou Data Exchange",
        ((_code("440100", "MA5G0001"), "广州市交通数据有限公司"),),
        (
            (
                "广州市道路交通流量 2025 / Guangzhou road traffic flow 2025",
                "信号灯路口小时交通量，已匿名化。Hourly counts at signalised intersections.",
                "transport.road.traffic_flow",
                1_200_000,
            ),
            (
                "广州港集装箱吞吐量 / Port of Guangzhou container throughput",
                "各码头月度集装箱吞吐量。Monthly container throughput per terminal.",
                "transport.port.container_throughput",
                500_000,
            ),
        ),
    ),
    Exchange(
        "gd-szde",
        "440300",
        "深圳数据交易所 Shenzhen Data Exchange",
        (
            (_code("440300", "MA5H0001"), "深圳市新能源汽车运营数据有限公司"),
            (_code("440300", "MA5H0002"), "深圳市跨境电商平台有限公司"),
        ),
        (
            (
                "深圳新能源汽车充电桩使用率 / Shenzhen EV charger utilisation",
                "充电站每小时使用率与排队时长。Hourly utilisation and queues at chargers.",
                "energy.grid.consumption_statistics",
                800_000,
            ),
            (
                "深圳市道路交通拥堵指数 / Shenzhen road congestion index",
                "主干道五分钟拥堵指数。Five-minute congestion index of arterial roads.",
                "transport.road.traffic_flow",
                950_000,
            ),
        ),
    ),
    Exchange(
        "sh-sde",
        "310000",
        "上海数据交易所 Shanghai Data Exchange",
        ((_code("310000", "MA5J0001"), "上海市航运数据服务有限公司"),),
        (
            (
                "上海港船舶进出港记录 / Port of Shanghai vessel movements",
                "船舶进出港时间与泊位。Vessel arrivals, departures and berths.",
                "transport.port.container_throughput",
                2_000_000,
            ),
        ),
    ),
)


HONG_KONG_BUYER = (_code("310000", "MA5JHK01"), "香港都市研究有限公司 Hong Kong Urban Research Ltd")
"""A member of the Shanghai exchange registered in Hong Kong: buying from it is an export."""
TRAFFIC_DATA_BYTES = 8 * 1024 * 1024
"""Size of the Guangzhou traffic data file the walkthrough trades and delivers."""


def say(text: str) -> None:
    """One line of the walkthrough."""
    print(text, flush=True)


def run(*command: str | Path) -> str:
    """Run a CLI to completion; show it; fail loudly with its error output."""
    shown = " ".join(Path(str(c)).name if i == 0 else str(c) for i, c in enumerate(command))
    say(f"  $ {shown[:160]}{'…' if len(shown) > 160 else ''}")
    done = subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, check=False, timeout=120
    )
    if done.returncode != 0:
        raise SystemExit(f"{shown} failed:\n{done.stderr}")
    return done.stdout


class Federation:
    """The processes of the local federation."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: list[tuple[str, asyncio.subprocess.Process]] = []
        self.registry_endpoints: dict[str, Any] = {}
        self.node_endpoints: dict[str, dict[str, Any]] = {}

    async def start(self, name: str, *command: str | Path, state: Path) -> dict[str, Any]:
        (state / "run" / "endpoints.json").unlink(missing_ok=True)
        env = dict(os.environ)
        # The walkthrough shows a lapse within seconds rather than the default minute.
        env.setdefault("PROVEX_REGISTRY_RISK_LAPSE_CHECK_SECONDS", "2")
        log = (state / "serve.log").open("ab")
        process = await asyncio.create_subprocess_exec(
            *map(str, command), stdout=asyncio.subprocess.DEVNULL, stderr=log, env=env
        )
        self.processes.append((name, process))
        try:
            async with asyncio.timeout(START_TIMEOUT):
                return await wait_for_endpoints(state)
        except TimeoutError:
            raise SystemExit(f"{name} did not start; see {state / 'serve.log'}") from None

    async def stop(self) -> None:
        for _, process in reversed(self.processes):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for name, process in reversed(self.processes):
            try:
                async with asyncio.timeout(30):
                    code = await process.wait()
            except TimeoutError:
                process.kill()
                code = await process.wait()
            say(f"  {name} stopped (exit {code})")

    def admin(self, name: str = "alice") -> grpc.aio.Channel:
        """A channel to the registry's federation port as one of its admins (alice)."""
        endpoints = self.registry_endpoints
        folder = self.workdir / "registry" / "admins" / name
        credentials = channel_credentials(
            Path(endpoints["ca_certificate"]).read_bytes(),
            (folder / "cert.pem").read_bytes(),
            (folder / "key.pem").read_bytes(),
        )
        return grpc.aio.secure_channel(endpoints["federation"], credentials)

    def operator(self, node_id: str) -> grpc.aio.Channel:
        endpoints = self.node_endpoints[node_id]
        credentials = channel_credentials(
            Path(endpoints["operator_ca_certificate"]).read_bytes(),
            Path(endpoints["operator_certificate"]).read_bytes(),
            Path(endpoints["operator_key"]).read_bytes(),
        )
        return grpc.aio.secure_channel(endpoints["operator"], credentials)


async def bring_up(federation: Federation) -> None:
    work = federation.workdir
    registry = work / "registry"
    say("1. The national registry")
    run(BIN / "provex-registry", "init", "--state", registry)
    run(BIN / "provex-registry", "admin", "add", "alice", "--role", "admin", "--state", registry)
    run(
        BIN / "provex-registry",
        "admin",
        "add",
        "gd-supervisor",
        "--role",
        "supervisor",
        "--region",
        "44",
        "--state",
        registry,
    )
    federation.registry_endpoints = await federation.start(
        "registry",
        BIN / "provex-registry",
        "serve",
        "--state",
        registry,
        "--public-listen",
        "127.0.0.1:0",
        "--federation-listen",
        "127.0.0.1:0",
        state=registry,
    )
    endpoints = federation.registry_endpoints
    say(f"  registry ready: public {endpoints['public']}, federation {endpoints['federation']}")
    say("2. Three provincial exchanges join with one-time invitations")
    for exchange in EXCHANGES:
        state = work / exchange.node_id
        run(
            BIN / "provex-node",
            "init",
            "--state",
            state,
            "--node-id",
            exchange.node_id,
            "--region",
            exchange.region,
            "--peer-listen",
            "127.0.0.1:0",
            "--operator-listen",
            "127.0.0.1:0",
        )
        invitation = run(
            BIN / "provex-registry",
            "admin",
            "invite",
            exchange.node_id,
            "--region",
            exchange.region,
            "--name",
            exchange.name,
            "--state",
            registry,
        ).strip()
        (state / "invitation.txt").write_text(invitation)
        run(
            BIN / "provex-node",
            "enroll",
            "--state",
            state,
            "--invitation",
            f"@{state / 'invitation.txt'}",
            "--registry",
            endpoints["public"],
            "--registry-federation",
            endpoints["federation"],
            "--registry-ca",
            endpoints["ca_certificate"],
        )
        federation.node_endpoints[exchange.node_id] = await federation.start(
            exchange.node_id, BIN / "provex-node", "serve", "--state", state, state=state
        )
        node = federation.node_endpoints[exchange.node_id]
        say(f"  {exchange.node_id} ({exchange.region}) serving peers at {node['peer']}")


def description(
    holder: str,
    title: str,
    text: str,
    category: str,
    *,
    data: tuple[bytes, int] | None = None,
    individuals: int = 0,
) -> dataset_pb2.DatasetDescription:
    """A dataset description; ``data`` is the (SHA-256, size) of a real data file, if any."""
    digest, size = data if data is not None else (hashlib.sha256(title.encode()).digest(), 50_000)
    return dataset_pb2.DatasetDescription(
        holder=holder,
        title=title,
        description=text,
        categories=[category],
        personal_info=common_pb2.PersonalInfoProfile(individuals=individuals),
        content_digest=digest,
        size_bytes=size,
        record_count=1_000_000,
        lawful_source="collected by the holder's own sensors under its operating licence",
        rights=dataset_pb2.DataRights(
            resource_holder=holder, processing_user=holder, product_operator=holder
        ),
        language="zh",
    )


def traffic_data(path: Path) -> tuple[bytes, int]:
    """Write the Guangzhou traffic counts (synthetic CSV); their SHA-256 and size."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        header = b"intersection,hour,vehicles\n"
        out.write(header)
        digest.update(header)
        written, row = len(header), 0
        while written < TRAFFIC_DATA_BYTES:
            line = f"GZ-{row % 4096:04d},2025-{1 + row % 12:02d}-01T{row % 24:02d},"
            line += f"{(row * 7919) % 2400}\n"
            data = line.encode()
            out.write(data)
            digest.update(data)
            written += len(data)
            row += 1
    return digest.digest(), written


async def seed(federation: Federation) -> dict[str, list[str]]:
    """Members, certified datasets and published listings on every node; listing ids by node."""
    say("3. Each exchange onboards members, certifies datasets and lists them")
    listed: dict[str, list[str]] = {}
    for exchange in EXCHANGES:
        async with federation.operator(exchange.node_id) as channel:
            operator = node_pb2_grpc.OperatorServiceStub(channel)
            for code, name in exchange.members:
                added = await operator.AddMember(
                    node_pb2.AddMemberRequest(
                        member=registry_pb2.Member(
                            credit_code=code, name=name, region_code=exchange.region
                        )
                    ),
                    timeout=DEADLINE,
                )
                state = node_pb2.OutboxState.Name(added.report.state)
                say(f"  {exchange.node_id}: member {code} {name} (report to registry: {state})")
            holder = exchange.members[0][0]
            for number, (title, text, category, price) in enumerate(exchange.datasets, 1):
                data_file = federation.workdir / f"{exchange.node_id}-dataset-{number}.csv"
                data = traffic_data(data_file) if number == 1 else None
                record = await _certified(
                    operator,
                    node_pb2.SubmitDatasetRequest(
                        idempotency_key=f"{exchange.node_id}-dataset-{number}",
                        dataset=description(holder, title, text, category, data=data),
                    ),
                )
                if data is not None:
                    # The data itself goes into the node's blob store: what buyers receive.
                    run(
                        BIN / "provex-node",
                        "dataset",
                        "attach",
                        "--state",
                        federation.workdir / exchange.node_id,
                        record.dataset_id,
                        data_file,
                    )
                listing = (
                    await operator.CreateListing(
                        node_pb2.CreateListingRequest(
                            listing=market_pb2.Listing(
                                dataset_id=record.dataset_id,
                                price=common_pb2.Money(fen=price),
                                pricing_model=market_pb2.PRICING_MODEL_ONE_TIME,
                                licence=market_pb2.LicenceTerms(
                                    purposes=["research", "urban planning"],
                                    term_days=365,
                                    no_resale=True,
                                ),
                                delivery=market_pb2.DELIVERY_METHOD_FILE,
                            )
                        ),
                        timeout=DEADLINE,
                    )
                ).listing
                await operator.SetListingState(
                    node_pb2.SetListingStateRequest(
                        listing_id=listing.listing_id, state=market_pb2.LISTING_STATE_LISTED
                    ),
                    timeout=DEADLINE,
                )
                listed.setdefault(exchange.node_id, []).append(listing.listing_id)
                say(
                    f"  {exchange.node_id}: certificate {record.dataset_id} "
                    f"(log index {record.certificate.log_index}), listing {listing.listing_id} "
                    f"at ¥{price / 100:,.2f}"
                )
    return listed


async def _certified(
    operator: node_pb2_grpc.OperatorServiceStub, request: node_pb2.SubmitDatasetRequest
) -> node_pb2.DatasetRecord:
    """Submit, then wait until the registry's certificate is on the node."""
    record = (await operator.SubmitDataset(request, timeout=DEADLINE)).dataset
    deadline = time.monotonic() + DEADLINE
    while not record.HasField("certificate"):
        if record.registration.state == node_pb2.OUTBOX_STATE_FAILED:
            raise SystemExit(f"registration refused: {record.registration.last_error}")
        if time.monotonic() > deadline:
            raise SystemExit(f"no certificate for {request.idempotency_key} in time")
        await asyncio.sleep(0.2)
        record = (
            await operator.GetDataset(
                node_pb2.GetDatasetRequest(idempotency_key=request.idempotency_key),
                timeout=DEADLINE,
            )
        ).dataset
    return record


async def search(federation: Federation) -> None:
    say("4. Federated search from Guangzhou (every node answers in parallel)")
    async with federation.operator("gd-gzde") as channel:
        operator = node_pb2_grpc.OperatorServiceStub(channel)
        # Peers appear in the directory the nodes refresh every few seconds.
        await _wait_for_peers(operator)
        for text in ("交通", "container throughput", "港"):
            answer = await operator.FederatedSearch(
                node_pb2.FederatedSearchRequest(query=market_pb2.SearchQuery(text=text)),
                timeout=DEADLINE,
            )
            say(f"  query {text!r}: answered by {', '.join(answer.answered)}")
            for hit in answer.hits:
                listing = hit.listing
                say(f"    {listing.node_id:<8} {listing.dataset_id}  {listing.title}")
            for silent in answer.unanswered:
                say(f"    no answer from {silent.node_id}: {silent.reason}")


async def _wait_for_peers(operator: node_pb2_grpc.OperatorServiceStub) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        answer = await operator.FederatedSearch(
            node_pb2.FederatedSearchRequest(query=market_pb2.SearchQuery()), timeout=DEADLINE
        )
        if len(answer.answered) == len(EXCHANGES):
            return
        await asyncio.sleep(0.5)


async def supervise(federation: Federation, listed: dict[str, list[str]]) -> None:
    say("9. The registry suspends a certificate; the Shenzhen node follows within seconds")
    async with federation.operator("gd-szde") as channel:
        operator = node_pb2_grpc.OperatorServiceStub(channel)
        listing = (
            await operator.GetListing(
                node_pb2.GetListingRequest(listing_id=listed["gd-szde"][0]), timeout=DEADLINE
            )
        ).listing
        started = time.monotonic()
        async with federation.admin() as admin:
            await registry_pb2_grpc.CertificateServiceStub(admin).SetStatus(
                registry_pb2.SetStatusRequest(
                    dataset_id=listing.dataset_id,
                    status=common_pb2.STATUS_SUSPENDED,
                    reason="complaint about the lawful source under review",
                ),
                timeout=DEADLINE,
            )
        say(f"  registry: {listing.dataset_id} suspended (a signed, logged status statement)")
        while time.monotonic() - started < 10:
            current = (
                await operator.GetListing(
                    node_pb2.GetListingRequest(listing_id=listing.listing_id), timeout=DEADLINE
                )
            ).listing
            if current.state == market_pb2.LISTING_STATE_SUSPENDED:
                say(
                    f"  gd-szde: listing {listing.listing_id} is SUSPENDED "
                    f"{time.monotonic() - started:.2f} s after the registry was asked"
                )
                break
            await asyncio.sleep(0.05)
        else:
            say(f"  gd-szde: listing {listing.listing_id} is STILL listed after 10 s")


def _yuan(money: common_pb2.Money) -> str:
    return f"¥{money.fen / 100:,.2f}"


async def _contract_until(
    operator: node_pb2_grpc.OperatorServiceStub,
    contract_id: str,
    done: Callable[[market_pb2.Contract], bool],
    what: str,
) -> market_pb2.Contract:
    """Poll a node's copy of a contract until ``done`` holds (the outbox carries it on)."""
    deadline = time.monotonic() + 60
    while True:
        contract = (
            await operator.GetContract(
                node_pb2.GetContractRequest(contract_id=contract_id), timeout=DEADLINE
            )
        ).contract
        if done(contract):
            return contract
        if contract.state == market_pb2.CONTRACT_STATE_TERMINATED:
            raise SystemExit(f"contract {contract_id} terminated: {contract.termination_reason}")
        if time.monotonic() > deadline:
            raise SystemExit(f"contract {contract_id}: {what} did not happen within 60 s")
        await asyncio.sleep(0.2)


def _signatures(envelope: bytes) -> int:
    return len(json.loads(envelope)["signatures"])


async def trade(federation: Federation, listed: dict[str, list[str]]) -> None:
    say("5. A domestic trade: a Shanghai company buys Guangzhou's road traffic data")
    buyer_member = EXCHANGES[2].members[0][0]
    async with (
        federation.operator("sh-sde") as buyer_channel,
        federation.operator("gd-gzde") as seller_channel,
    ):
        buyer = node_pb2_grpc.OperatorServiceStub(buyer_channel)
        seller = node_pb2_grpc.OperatorServiceStub(seller_channel)
        requested = (
            await buyer.RequestContract(
                node_pb2.RequestContractRequest(
                    idempotency_key="walkthrough-traffic",
                    seller_node="gd-gzde",
                    listing_id=listed["gd-gzde"][0],
                    buyer=buyer_member,
                    purpose="research on commuter flows for an urban planning study",
                ),
                timeout=DEADLINE,
            )
        ).contract
        terms = requested.terms
        contract_id = terms.contract_id
        say(
            f"  sh-sde: contract {contract_id} requested: {terms.dataset_id} from "
            f"{terms.seller} for {_yuan(terms.price)} (REQUESTED on both nodes)"
        )
        await seller.DecideContract(
            node_pb2.DecideContractRequest(contract_id=contract_id, agree=True),
            timeout=DEADLINE,
        )
        say(
            "  gd-gzde: the operator agrees; the node checks certificate, listing, buyer, grade "
            "and customs, and signs"
        )
        final = await _contract_until(
            buyer, contract_id, lambda c: c.state == market_pb2.CONTRACT_STATE_FINALIZED, "final"
        )
        say(
            f"  sh-sde: countersigned; FINALIZED on both nodes, one envelope with "
            f"{_signatures(final.envelope)} signatures"
        )
        reported = await _contract_until(
            seller, contract_id, lambda c: c.HasField("trade_record"), "the trade report"
        )
        say(
            f"  registry: trade record logged at index {reported.trade_record.log_index} "
            "(the node verified its inclusion proof)"
        )
        started = time.monotonic()
        await buyer.StartDelivery(
            node_pb2.StartDeliveryRequest(contract_id=contract_id), timeout=DEADLINE
        )
        while True:
            progress = (
                await buyer.GetDeliveryProgress(
                    node_pb2.GetDeliveryProgressRequest(contract_id=contract_id),
                    timeout=DEADLINE,
                )
            ).progress
            failed = progress.error and not progress.error.startswith("retrying")
            if progress.complete or failed or time.monotonic() - started > 120:
                break
            await asyncio.sleep(0.1)
        if not progress.complete:
            raise SystemExit(f"delivery of {contract_id} did not complete: {progress.error}")
        say(
            f"  sh-sde: received {progress.received_bytes:,} of {progress.total_bytes:,} bytes "
            f"from gd-gzde in {time.monotonic() - started:.2f} s; SHA-256 equals the "
            f"certificate's content digest: {'yes' if progress.digest_verified else 'NO'}"
        )


async def refuse_core_data(federation: Federation) -> None:
    say("6. Core data never reaches the market")
    holder = EXCHANGES[0].members[0][0]
    request = node_pb2.SubmitDatasetRequest(
        idempotency_key="gd-gzde-core-survey",
        dataset=description(
            holder,
            "广州市高精度测绘成果 / Guangzhou high-precision survey results",
            "厘米级道路与地下管线测绘。Centimetre-accurate roads and utility lines.",
            "geo.mapping.high_precision",
        ),
    )
    async with federation.operator("gd-gzde") as channel:
        operator = node_pb2_grpc.OperatorServiceStub(channel)
        try:
            record = (await operator.SubmitDataset(request, timeout=DEADLINE)).dataset
        except grpc.aio.AioRpcError as error:
            say(f"  gd-gzde: refused at once ({error.code().name}): {error.details()}")
            return
        deadline = time.monotonic() + DEADLINE
        while record.registration.state != node_pb2.OUTBOX_STATE_FAILED:
            if record.HasField("certificate") or time.monotonic() > deadline:
                raise SystemExit("core data was certified; it must never be")
            await asyncio.sleep(0.2)
            record = (
                await operator.GetDataset(
                    node_pb2.GetDatasetRequest(idempotency_key=request.idempotency_key),
                    timeout=DEADLINE,
                )
            ).dataset
        say(f"  registry refused the certificate: {record.registration.last_error}")


async def export(federation: Federation) -> None:
    say("7. An export to Hong Kong: refused without a permit, then permitted")
    holder = EXCHANGES[1].members[1][0]
    buyer_code, buyer_name = HONG_KONG_BUYER
    async with (
        federation.operator("sh-sde") as buyer_channel,
        federation.operator("gd-szde") as seller_channel,
        federation.admin() as admin_channel,
    ):
        buyer = node_pb2_grpc.OperatorServiceStub(buyer_channel)
        seller = node_pb2_grpc.OperatorServiceStub(seller_channel)
        supervision = supervision_pb2_grpc.SupervisionServiceStub(admin_channel)
        await buyer.AddMember(
            node_pb2.AddMemberRequest(
                member=registry_pb2.Member(
                    credit_code=buyer_code, name=buyer_name, region_code="310000", country="HK"
                )
            ),
            timeout=DEADLINE,
        )
        say(f"  sh-sde: member {buyer_code} {buyer_name} (country HK)")
        record = await _certified(
            seller,
            node_pb2.SubmitDatasetRequest(
                idempotency_key="gd-szde-orders",
                dataset=description(
                    holder,
                    "深圳跨境电商订单 2025 / Shenzhen cross-border e-commerce orders 2025",
                    "订单、收货城市与品类，含个人信息。Orders with delivery city and category.",
                    "commerce.ecommerce.orders",
                    individuals=1_200_000,
                ),
            ),
        )
        listing = (
            await seller.CreateListing(
                node_pb2.CreateListingRequest(
                    listing=market_pb2.Listing(
                        dataset_id=record.dataset_id,
                        price=common_pb2.Money(fen=3_000_000),
                        pricing_model=market_pb2.PRICING_MODEL_ONE_TIME,
                        licence=market_pb2.LicenceTerms(
                            purposes=["market research"], term_days=365
                        ),
                        delivery=market_pb2.DELIVERY_METHOD_FILE,
                        auto_approve=True,
                    )
                ),
                timeout=DEADLINE,
            )
        ).listing
        await seller.SetListingState(
            node_pb2.SetListingStateRequest(
                listing_id=listing.listing_id, state=market_pb2.LISTING_STATE_LISTED
            ),
            timeout=DEADLINE,
        )
        say(
            f"  gd-szde: {record.dataset_id} (personal information of 1,200,000 people) "
            f"listed as {listing.listing_id}, approved automatically"
        )

        def ask(key: str, permit: str = "") -> node_pb2.RequestContractRequest:
            return node_pb2.RequestContractRequest(
                idempotency_key=key,
                seller_node="gd-szde",
                listing_id=listing.listing_id,
                buyer=buyer_code,
                purpose="consumer research for a Hong Kong retail study",
                export_permit_id=permit,
            )

        try:
            await buyer.RequestContract(ask("walkthrough-export"), timeout=DEADLINE)
        except grpc.aio.AioRpcError as error:
            say(f"  refused ({error.code().name}): {error.details()}")
        else:
            raise SystemExit("an export without a permit was agreed; it must not be")
        applied = await supervision.ApplyExportPermit(
            supervision_pb2.ApplyExportPermitRequest(
                idempotency_key="walkthrough-permit",
                application=supervision_pb2.ExportPermit(
                    exporter=holder,
                    dataset_ids=[record.dataset_id],
                    destination="HK",
                    recipient=buyer_code,
                    purpose="consumer research for a Hong Kong retail study",
                ),
            ),
            timeout=DEADLINE,
        )
        permit_id = applied.application.permit_id
        reviewed = await supervision.ReviewExportPermit(
            supervision_pb2.ReviewExportPermitRequest(
                permit_id=permit_id, approve=True, reason="security assessment passed"
            ),
            timeout=DEADLINE,
        )
        say(
            f"  registry admin: security assessment passed; export permit {permit_id} signed "
            f"and logged at index {reviewed.permit.log_index}, valid 3 years"
        )
        answer = await buyer.RequestContract(
            ask("walkthrough-export-permitted", permit_id), timeout=DEADLINE
        )
        contract_id = answer.contract.terms.contract_id
        await _contract_until(
            buyer, contract_id, lambda c: c.state == market_pb2.CONTRACT_STATE_FINALIZED, "final"
        )
        reported = await _contract_until(
            seller, contract_id, lambda c: c.HasField("trade_record"), "the trade report"
        )
        record_payload = Envelope.from_json(reported.trade_record.envelope).payload
        declared = supervision_pb2.TradeRecord.FromString(record_payload).export
        mechanism = supervision_pb2.ExportMechanism.Name(declared.mechanism)
        say(
            f"  contract {contract_id} FINALIZED; export declared to the registry at index "
            f"{reported.trade_record.log_index}: {declared.individuals:,} individuals to "
            f"{declared.destination} under {mechanism} ({declared.permit_id})"
        )
        counted = await supervision.CheckExport(
            supervision_pb2.CheckExportRequest(exporter=holder, destination="HK"),
            timeout=DEADLINE,
        )
        say(
            f"  registry: {counted.exported_individuals:,} individuals exported by {holder} "
            "this calendar year"
        )


async def statistics(federation: Federation) -> None:
    say("10. What the national supervisors see")
    async with federation.admin() as channel:
        supervision = supervision_pb2_grpc.SupervisionServiceStub(channel)
        rows = (
            await supervision.GetStatistics(
                supervision_pb2.GetStatisticsRequest(), timeout=DEADLINE
            )
        ).rows
        say(
            f"  {'region':<8} {'category':<32} {'grade':<9} {'month':<8} {'trades':>6} "
            f"{'value':>14} {'exports':>7}"
        )
        for row in rows:
            grade = common_pb2.Grade.Name(row.grade).removeprefix("GRADE_").lower()
            say(
                f"  {row.region_code:<8} {row.category:<32} {grade:<9} {row.month:<8} "
                f"{row.trades:>6} {_yuan(row.value):>14} {row.exports:>7}"
            )
        points = (
            await supervision.GetPriceIndex(
                supervision_pb2.GetPriceIndexRequest(), timeout=DEADLINE
            )
        ).points
        for point in points:
            say(
                f"  price index {point.category} {point.month}: median "
                f"{_yuan(point.median_price)} over {point.trades} trade(s), index {point.index:.1f}"
            )
        actions = (
            await supervision.ListSupervisoryActions(
                supervision_pb2.ListSupervisoryActionsRequest(), timeout=DEADLINE
            )
        ).actions
        for action in actions:
            say(
                f"  action at log index {action.log_index}: {action.action} {action.subject} "
                f"by {action.actor.spiffe_id}"
            )


MAPPING_HOLDER = (_code("440100", "MA5G0002"), "广州市测绘地理信息有限公司")
"""A Guangzhou holder of important data (surveying and mapping)."""


async def _dataset_status(operator: node_pb2_grpc.OperatorServiceStub, dataset_id: str) -> int:
    record = await operator.GetDataset(
        node_pb2.GetDatasetRequest(dataset_id=dataset_id), timeout=DEADLINE
    )
    return int(record.dataset.status)


async def _listing_state(operator: node_pb2_grpc.OperatorServiceStub, listing_id: str) -> int:
    listing = await operator.GetListing(
        node_pb2.GetListingRequest(listing_id=listing_id), timeout=DEADLINE
    )
    return int(listing.listing.state)


async def risk_assessment(federation: Federation) -> None:
    say("8. Important data needs a current risk assessment of its holder")
    holder, name = MAPPING_HOLDER
    async with (
        federation.operator("gd-gzde") as channel,
        federation.admin("gd-supervisor") as supervisor_channel,
    ):
        operator = node_pb2_grpc.OperatorServiceStub(channel)
        await operator.AddMember(
            node_pb2.AddMemberRequest(
                member=registry_pb2.Member(
                    credit_code=holder,
                    name=name,
                    region_code="440100",
                    security_officer=registry_pb2.SecurityOfficer(
                        name="陈安全", title="数据安全负责人", phone="+86 20 8888 0001"
                    ),
                )
            ),
            timeout=DEADLINE,
        )
        record = await _certified(
            operator,
            node_pb2.SubmitDatasetRequest(
                idempotency_key="gd-gzde-mapping",
                dataset=description(
                    holder,
                    "广州市 1:2000 地形图 / Guangzhou 1:2000 topographic maps",
                    "城区地形、道路与建筑轮廓。Terrain, roads and building outlines.",
                    "geo.mapping",
                ),
            ),
        )
        say(
            f"  gd-gzde: {name} certified {record.dataset_id}, graded IMPORTANT; "
            "it has filed no risk assessment"
        )
        listing_id = ""
        try:
            created = await operator.CreateListing(
                node_pb2.CreateListingRequest(
                    listing=market_pb2.Listing(
                        dataset_id=record.dataset_id,
                        price=common_pb2.Money(fen=5_000_000),
                        pricing_model=market_pb2.PRICING_MODEL_ONE_TIME,
                        licence=market_pb2.LicenceTerms(purposes=["urban planning"], term_days=365),
                        delivery=market_pb2.DELIVERY_METHOD_FILE,
                    )
                ),
                timeout=DEADLINE,
            )
            listing_id = created.listing.listing_id
            await operator.SetListingState(
                node_pb2.SetListingStateRequest(
                    listing_id=listing_id, state=market_pb2.LISTING_STATE_LISTED
                ),
                timeout=DEADLINE,
            )
            say(f"  gd-gzde: listing {listing_id} LISTED")
        except grpc.aio.AioRpcError as error:
            say(f"  gd-gzde: not listed ({error.details()})")
        started = time.monotonic()
        while await _dataset_status(operator, record.dataset_id) != common_pb2.STATUS_SUSPENDED:
            if time.monotonic() - started > 30:
                raise SystemExit("the registry's lapse check did not suspend the dataset")
            await asyncio.sleep(0.2)
        shown = f", listing {listing_id} " if listing_id else " "
        if listing_id:
            state = market_pb2.ListingState.Name(await _listing_state(operator, listing_id))
            shown += state.removeprefix("LISTING_STATE_")
        say(
            f"  registry: no current accepted risk assessment -> {record.dataset_id} suspended "
            f"federation-wide by a logged statement; on gd-gzde: dataset SUSPENDED{shown}"
        )
        filed = await operator.SubmitRiskAssessment(
            node_pb2.SubmitRiskAssessmentRequest(
                idempotency_key="mapping-risk-2025",
                assessment=supervision_pb2.RiskAssessment(
                    holder=holder,
                    period_start=to_timestamp(datetime(2025, 1, 1, tzinfo=UTC)),
                    period_end=to_timestamp(datetime(2025, 12, 31, tzinfo=UTC)),
                    data=[supervision_pb2.AssessedData(category="geo.mapping", records=2_400_000)],
                    processing="stored and processed in a certified facility in Guangzhou",
                    risks="disclosure of building outlines of sensitive sites",
                    measures="desensitised outlines, access review, encryption at rest",
                    report_digest=hashlib.sha256(b"2025 risk assessment report").digest(),
                ),
            ),
            timeout=DEADLINE,
        )
        assessment_id = filed.assessment.assessment_id
        say(f"  gd-gzde: risk assessment {assessment_id} for 2025 filed through the node")
        supervision = supervision_pb2_grpc.SupervisionServiceStub(supervisor_channel)
        await supervision.ReviewRiskAssessment(
            supervision_pb2.ReviewRiskAssessmentRequest(
                assessment_id=assessment_id, accept=True, reason="measures adequate"
            ),
            timeout=DEADLINE,
        )
        say("  registry: Guangdong's provincial supervisor accepts it (a logged decision)")
        started = time.monotonic()
        while await _dataset_status(operator, record.dataset_id) != common_pb2.STATUS_ACTIVE:
            if time.monotonic() - started > 30:
                raise SystemExit("the accepted report did not reinstate the dataset")
            await asyncio.sleep(0.2)
        if listing_id:
            await operator.SetListingState(
                node_pb2.SetListingStateRequest(
                    listing_id=listing_id, state=market_pb2.LISTING_STATE_LISTED
                ),
                timeout=DEADLINE,
            )
        say(
            f"  gd-gzde: {record.dataset_id} reinstated after "
            f"{time.monotonic() - started:.2f} s"
            + (f"; listing {listing_id} LISTED again" if listing_id else "")
        )
        try:
            await supervision.ListRiskAssessments(
                supervision_pb2.ListRiskAssessmentsRequest(region_prefix="31"), timeout=DEADLINE
            )
        except grpc.aio.AioRpcError as error:
            say(f"  Guangdong's supervisor asking for Shanghai's reports: {error.code().name}")


async def province_audit(federation: Federation) -> None:
    say("11. Shanghai audits the registry's whole log against the checkpoint it verified")
    out = run(BIN / "provex-node", "audit", "--state", federation.workdir / "sh-sde")
    say("  " + out.strip())


async def audit(federation: Federation) -> None:
    say("12. The registry recomputes its own log")
    registry = federation.workdir / "registry"
    say("  " + run(BIN / "provex-registry", "log", "verify", "--state", registry).strip())


async def main(workdir: Path, exit_after: bool) -> None:
    federation = Federation(workdir)
    try:
        await bring_up(federation)
        listed = await seed(federation)
        await search(federation)
        await trade(federation, listed)
        await refuse_core_data(federation)
        await export(federation)
        await risk_assessment(federation)
        await supervise(federation, listed)
        await statistics(federation)
        await province_audit(federation)
        await audit(federation)
        say(f"State directories, logs and endpoints: {workdir}")
        console = federation.registry_endpoints.get("console")
        if console:
            admin = workdir / "registry" / "admins" / "alice"
            say(
                f"Supervision console: https://{console}/ (client certificate "
                f"{admin / 'cert.pem'}, key {admin / 'key.pem'})"
            )
        metrics = [
            f"{name} http://{endpoints['metrics']}/metrics"
            for name, endpoints in (
                ("registry", federation.registry_endpoints),
                *federation.node_endpoints.items(),
            )
            if endpoints.get("metrics")
        ]
        if metrics:
            say("Prometheus metrics: " + ", ".join(metrics))
        if not exit_after:
            say("The federation keeps running; press Ctrl-C to stop it.")
            stopping = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stopping.set)
            await stopping.wait()
    finally:
        say("Stopping the federation")
        await federation.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", type=Path, help="where the state directories go")
    parser.add_argument(
        "--exit-after-walkthrough", action="store_true", help="stop once the walkthrough is done"
    )
    arguments = parser.parse_args()
    scratch = None
    if arguments.workdir is None:
        scratch = tempfile.mkdtemp(prefix="provex-federation-")
        arguments.workdir = Path(scratch)
    elif arguments.workdir.exists() and any(arguments.workdir.iterdir()):
        raise SystemExit(f"{arguments.workdir} is not empty; give a new directory")
    arguments.workdir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(arguments.workdir, arguments.exit_after_walkthrough))
    if scratch is not None and os.environ.get("PROVEX_KEEP_WORKDIR") != "1":
        shutil.rmtree(scratch, ignore_errors=True)
