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
5. the registry suspends one certificate and the Shenzhen node suspends its
   listing on its own within seconds;
6. ``provex-registry log verify`` recomputes the whole transparency log.

The federation then keeps running until Ctrl-C (or exits at once with
``--exit-after-walkthrough``), and every process is stopped with SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from provex.identity import channel_credentials
from provex.ids import CreditCode
from provex.rpc import wait_for_endpoints
from provex.v1 import (
    common_pb2,
    dataset_pb2,
    market_pb2,
    node_pb2,
    node_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
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
        ((_code("440300", "MA5H0001"), "深圳市新能源汽车运营数据有限公司"),),
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

    def admin(self) -> grpc.aio.Channel:
        """A channel to the registry's federation port as its admin alice."""
        endpoints = self.registry_endpoints
        folder = self.workdir / "registry" / "admins" / "alice"
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
    holder: str, title: str, text: str, category: str
) -> dataset_pb2.DatasetDescription:
    return dataset_pb2.DatasetDescription(
        holder=holder,
        title=title,
        description=text,
        categories=[category],
        personal_info=common_pb2.PersonalInfoProfile(individuals=0),
        content_digest=hashlib.sha256(title.encode()).digest(),
        size_bytes=50_000_000,
        record_count=1_000_000,
        lawful_source="collected by the holder's own sensors under its operating licence",
        rights=dataset_pb2.DataRights(
            resource_holder=holder, processing_user=holder, product_operator=holder
        ),
        language="zh",
    )


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
                record = await _certified(
                    operator,
                    node_pb2.SubmitDatasetRequest(
                        idempotency_key=f"{exchange.node_id}-dataset-{number}",
                        dataset=description(holder, title, text, category),
                    ),
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
    say("5. The registry suspends a certificate; the Shenzhen node follows within seconds")
    registry = federation.workdir / "registry"
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
    say("6. Anyone can recompute the transparency log")
    say("  " + run(BIN / "provex-registry", "log", "verify", "--state", registry).strip())


async def main(workdir: Path, exit_after: bool) -> None:
    federation = Federation(workdir)
    try:
        await bring_up(federation)
        listed = await seed(federation)
        await search(federation)
        await supervise(federation, listed)
        say(f"State directories, logs and endpoints: {workdir}")
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
