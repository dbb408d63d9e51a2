"""Node certificate renewal with a real registry and real nodes: by command and by itself.

A registry of its own issues one-day node certificates (``node_certificate_days
= 1`` in its ``registry.toml``); two nodes (Guangzhou, Shanghai) serve. The
registry refuses a replaced certificate at once, so after each renewal the
node must already call it with the new one: ``provex-node renew`` against the
running Guangzhou node, then Shanghai restarted with a renewal threshold just
under the lifetime (``PROVEX_NODE_CERTIFICATE_RENEW_BEFORE_DAYS=0.9999``: due
about 9 s after issue) renewing by itself, again and again. Each time:
federated search both ways (the peer port presents the new certificate),
registration of a new dataset (the outbox's registry link) and the following
of a suspension (the status stream) keep working.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from provex import pki
from provex.identity import channel_credentials
from provex.v1 import (
    common_pb2,
    market_pb2,
    node_pb2,
    node_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)
from tests.integration.conftest import RunningRegistry, run_cli, start_registry, stop_registry
from tests.integration.nodes import RunningNode, create_node, node_cli, start_node, stop_node
from tests.integration.test_node_federation import certified, description, holder_of, listed

DEADLINE = 20.0
GZ, SH = ("gd-gzde", "440100"), ("sh-sde", "310000")
FAST = {"PROVEX_NODE_CERTIFICATE_CHECK_SECONDS": "0.5"}
AUTO = {**FAST, "PROVEX_NODE_CERTIFICATE_RENEW_BEFORE_DAYS": "0.9999"}


@dataclass
class Federation:
    registry: RunningRegistry
    nodes: dict[str, RunningNode]
    workdir: Path

    def operator(self, node_id: str) -> node_pb2_grpc.OperatorServiceStub:
        return node_pb2_grpc.OperatorServiceStub(self.nodes[node_id].operator_channel())


def fingerprint(path: Path) -> str:
    return pki.certificate_fingerprint(pki.load_cert_pem(path.read_bytes()))


def presented_fingerprint(node: RunningNode, client: RunningNode) -> str:
    """The fingerprint of the certificate ``node``'s peer port presents in a fresh handshake."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cafile=str(client.state / "tls" / "ca.pem"))
    context.load_cert_chain(
        str(client.state / "tls" / "node.pem"), str(client.state / "tls" / "node-key.pem")
    )
    context.set_alpn_protocols(["h2"])
    host, port = node.endpoints["peer"].rsplit(":", 1)
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


@pytest.fixture(scope="module")
async def federation(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Federation]:
    workdir = tmp_path_factory.mktemp("renewal")
    state = workdir / "registry"
    init = run_cli("init", "--state", state, "--json")
    assert init.returncode == 0, init.stderr
    settings = state / "registry.toml"
    settings.write_text(
        settings.read_text().replace("node_certificate_days = 90", "node_certificate_days = 1")
    )
    digest = json.loads(init.stdout)["trust_root_digest"]
    added = run_cli("admin", "add", "alice", "--role", "admin", "--state", state)
    assert added.returncode == 0, added.stderr
    registry = await start_registry(state, digest)
    nodes: dict[str, RunningNode] = {}
    try:
        for node_id, region in (GZ, SH):
            nodes[node_id] = await start_node(create_node(registry, workdir, node_id, region), FAST)
        running = Federation(registry, nodes, workdir)
        for node_id, region in (GZ, SH):
            await running.operator(node_id).AddMember(
                node_pb2.AddMemberRequest(
                    member=registry_pb2.Member(
                        credit_code=holder_of(region), name=f"Holder {node_id}", region_code=region
                    )
                ),
                timeout=DEADLINE,
            )
        yield running
    finally:
        for node in nodes.values():
            assert await stop_node(node) == 0
        assert await stop_registry(registry) == 0


async def everything_still_works(federation: Federation, node_id: str, key: str) -> None:
    """Search both ways, register a dataset, follow its suspension: all within deadlines."""
    region = dict((GZ, SH))[node_id]
    other = SH[0] if node_id == GZ[0] else GZ[0]
    operator = federation.operator(node_id)
    record = await certified(
        operator,
        key,
        description(
            holder_of(region), f"交通 {key}", "Renewal check.", "transport.road.traffic_flow"
        ),
    )
    listing = await listed(operator, record.dataset_id, 1000)
    for asking, answering in ((node_id, other), (other, node_id)):
        deadline = time.monotonic() + 15
        while True:
            answer = await federation.operator(asking).FederatedSearch(
                node_pb2.FederatedSearchRequest(query=market_pb2.SearchQuery(text=key)),
                timeout=DEADLINE,
            )
            if answering in answer.answered:
                break
            assert time.monotonic() < deadline, f"{asking} cannot reach {answering}: {answer}"
            await asyncio.sleep(0.3)
        assert [hit.listing.listing_id for hit in answer.hits] == [listing.listing_id]
    async with federation.registry.federation_channel(
        federation.registry.state / "admins" / "alice"
    ) as channel:
        await registry_pb2_grpc.CertificateServiceStub(channel).SetStatus(
            registry_pb2.SetStatusRequest(
                dataset_id=record.dataset_id,
                status=common_pb2.STATUS_SUSPENDED,
                reason="renewal check",
            ),
            timeout=DEADLINE,
        )
    started = time.monotonic()
    while True:
        current = await operator.GetListing(
            node_pb2.GetListingRequest(listing_id=listing.listing_id), timeout=DEADLINE
        )
        if current.listing.state == market_pb2.LISTING_STATE_SUSPENDED:
            break
        assert time.monotonic() - started < 10, "suspension not followed after the renewal"
        await asyncio.sleep(0.1)
    status = await operator.GetNodeStatus(node_pb2.GetNodeStatusRequest(), timeout=DEADLINE)
    assert status.registry_reachable
    assert status.outbox_pending == 0


async def test_renew_command_switches_the_running_node(federation: Federation) -> None:
    node = federation.nodes[GZ[0]]
    certificate = node.state / "tls" / "node.pem"
    before = fingerprint(certificate)
    renewed = node_cli("renew", "--state", node.state, "--json")
    assert renewed.returncode == 0, renewed.stderr
    answer = json.loads(renewed.stdout)
    assert answer["by_running_node"] is True
    assert answer["fingerprint"] == fingerprint(certificate) != before
    assert fingerprint(Path(answer["previous"])) == before
    new = pki.load_cert_pem(certificate.read_bytes())
    lifetime = new.not_valid_after_utc - new.not_valid_before_utc
    assert lifetime.days == 1  # The registry's setting.
    # The registry's directory has the new expiry; the peer port presents the new certificate.
    listed_nodes = run_cli("nodes", "--state", federation.registry.state, "--json")
    assert listed_nodes.returncode == 0, listed_nodes.stderr
    entry = {n["node_id"]: n for n in json.loads(listed_nodes.stdout)["nodes"]}[GZ[0]]
    assert entry["certificate_fingerprint"] == answer["fingerprint"]
    assert entry["certificate_expires_at"] == answer["expires_at"]
    assert presented_fingerprint(node, federation.nodes[SH[0]]) == answer["fingerprint"]
    # The old certificate is refused by the registry; the node does not use it any more.
    previous = Path(answer["previous"]).read_bytes()
    credentials = channel_credentials(
        federation.registry.ca_pem, previous, (node.state / "tls" / "node-key.pem").read_bytes()
    )
    async with grpc.aio.secure_channel(
        federation.registry.endpoints["federation"], credentials
    ) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await registry_pb2_grpc.DirectoryServiceStub(channel).ListNodes(
                registry_pb2.ListNodesRequest(), timeout=DEADLINE
            )
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "no longer current" in (refused.value.details() or "")
    await everything_still_works(federation, GZ[0], "renew-cli")


async def test_renew_of_a_stopped_node_and_clear_errors(federation: Federation) -> None:
    node = federation.nodes[GZ[0]]
    assert await stop_node(node) == 0
    try:
        before = fingerprint(node.state / "tls" / "node.pem")
        renewed = node_cli("renew", "--state", node.state)
        assert renewed.returncode == 0, renewed.stderr
        assert "renewed its federation certificate" in renewed.stdout
        assert "expires" in renewed.stdout
        assert fingerprint(node.state / "tls" / "node.pem") != before
        missing = node_cli("renew", "--state", federation.workdir / "nowhere")
        assert missing.returncode == 2
        assert "provex-node init" in missing.stderr
        helped = node_cli("renew", "--help")
        assert helped.returncode == 0 and "previous" in helped.stdout
    finally:
        federation.nodes[GZ[0]] = await start_node(node.state, FAST)
    await everything_still_works(federation, GZ[0], "renew-stopped")


async def test_a_node_renews_by_itself_before_expiry(federation: Federation) -> None:
    node = federation.nodes[SH[0]]
    assert await stop_node(node) == 0
    certificate = node.state / "tls" / "node.pem"
    first = fingerprint(certificate)
    federation.nodes[SH[0]] = node = await start_node(node.state, AUTO)
    seen = {first}
    deadline = time.monotonic() + 40
    while len(seen) < 3:  # Two automatic renewals at least.
        assert time.monotonic() < deadline, f"no automatic renewal: {seen}"
        seen.add(fingerprint(certificate))
        await asyncio.sleep(0.2)
    log = (node.state / "serve.log").read_text()
    assert "federation certificate renewed" in log
    await everything_still_works(federation, SH[0], "renew-auto")
    assert presented_fingerprint(node, federation.nodes[GZ[0]]) in {fingerprint(certificate)} | seen
