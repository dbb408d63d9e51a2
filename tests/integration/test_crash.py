"""Crash safety of issuance: SIGKILL the registry under load, restart it, audit what survived.

64 clients (two nodes enrolled through the API, a channel each) register
datasets in a loop, each with its own idempotency keys, until the registry
process is killed with SIGKILL in the middle of their calls. After a restart
on the same state:

- every bundle a client received verifies offline against the trust root and
  is still in the log: an inclusion proof against the *new* checkpoint;
- every checkpoint a client saw is consistent with the new one (consistency
  proof), and no two seen checkpoints of one size differ (no fork);
- the new tree holds exactly what was there before the load, the received
  certificates and those of cut-off calls that had committed: nothing lost,
  nothing extra; ``provex-registry log verify`` passes;
- idempotency survived the crash: a received key answers the same
  certificate bytes, and a key whose call died in the crash registers
  exactly once (retried twice: one dataset id; the whole log then holds
  exactly one certificate per request sent and no other certificate).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Awaitable, Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import grpc

from provex import bundle as bundles
from provex import documents, merkle, trust
from provex import envelope as dsse
from provex.checkpoint import Checkpoint, verify_checkpoint
from provex.v1 import common_pb2, dataset_pb2, registry_pb2, registry_pb2_grpc
from tests.integration.conftest import RunningRegistry, run_cli, start_registry, stop_registry
from tests.integration.test_certificates import description, registration
from tests.integration.test_enrollment import Node, credit_code, enrolled_node

CLIENTS = 64
RECEIVED_BEFORE_KILL = 1000
"""Bundles the clients must have received before the registry is killed."""
LOAD_TIMEOUT = 20.0
DEADLINE = 20.0
CERTIFICATE_TYPE = documents.payload_type_of(dataset_pb2.DatasetCertificate)
PAGE = 1000  # registry.transparency.MAX_ENTRIES_PER_CALL: GetEntries pages.

T = TypeVar("T")
Request = registry_pb2.RegisterDatasetRequest


@dataclass
class Member:
    """An enrolled node and the one member it registers datasets for."""

    node: Node
    holder: str


@dataclass
class Load:
    """What the clients sent and got, shared by the client tasks."""

    received: dict[str, tuple[Request, common_pb2.Bundle]] = field(default_factory=dict)
    failed: dict[str, tuple[Member, Request, grpc.StatusCode]] = field(default_factory=dict)
    early: list[str] = field(default_factory=list)
    """Calls that failed before the kill: there must be none."""
    killed: bool = False
    enough: asyncio.Event = field(default_factory=asyncio.Event)


async def limited(calls: Iterable[Awaitable[T]], limit: int = 64) -> list[T]:
    """Await ``calls`` with at most ``limit`` at once; results in order."""
    gate = asyncio.Semaphore(limit)

    async def one(call: Awaitable[T]) -> T:
        async with gate:
            return await call

    return list(await asyncio.gather(*(one(call) for call in calls)))


async def report_member(registry: RunningRegistry, node: Node, region: str) -> str:
    code = credit_code(region)
    async with node.channel(registry) as channel:
        reported = await registry_pb2_grpc.MemberServiceStub(channel).ReportMember(
            registry_pb2.ReportMemberRequest(
                member=registry_pb2.Member(
                    credit_code=code, name=f"Port operator {code}", region_code=region
                )
            ),
            timeout=DEADLINE,
        )
    assert reported.member.node_id == node.node_id
    return code


async def latest_checkpoint(registry: RunningRegistry, root: trust.TrustRoot) -> Checkpoint:
    async with registry.public_channel() as channel:
        response = await registry_pb2_grpc.LogServiceStub(channel).GetCheckpoint(
            registry_pb2.GetCheckpointRequest(), timeout=DEADLINE
        )
    return verify_checkpoint(response.checkpoint, root.log_verifier, origin=root.log_origin)


async def client(number: int, member: Member, registry: RunningRegistry, load: Load) -> None:
    """Register new datasets one after another until a call fails (the crash)."""
    async with member.node.channel(registry) as channel:
        stub = registry_pb2_grpc.CertificateServiceStub(channel)
        for n in range(1_000_000):
            key = f"crash-{number}-{n}"
            request = registration(key, description(number * 1_000_000 + n, holder=member.holder))
            try:
                response = await stub.RegisterDataset(request, timeout=DEADLINE)
            except grpc.aio.AioRpcError as error:
                if not load.killed:
                    load.early.append(f"{key}: {error.code()} {error.details()}")
                load.failed[key] = (member, request, error.code())
                return
            load.received[key] = (request, response.certificate)
            if len(load.received) >= RECEIVED_BEFORE_KILL:
                load.enough.set()


async def load_then_kill(registry: RunningRegistry, members: list[Member]) -> Load:
    """Run the clients; SIGKILL the registry once enough bundles came back; wait for them."""
    load = Load()
    started = time.perf_counter()
    clients = [
        asyncio.create_task(client(n, members[n % len(members)], registry, load))
        for n in range(CLIENTS)
    ]
    try:
        await asyncio.wait_for(load.enough.wait(), LOAD_TIMEOUT)
    except TimeoutError:
        pass  # Too few bundles: asserted below, once the clients have ended.
    finally:
        load.killed = True
        registry.process.kill()
    assert await asyncio.wait_for(registry.process.wait(), 10) == -signal.SIGKILL
    await asyncio.wait_for(asyncio.gather(*clients), DEADLINE + 5)
    print(
        f"\ncrash: {len(load.received)} bundles received in "
        f"{time.perf_counter() - started:.2f}s, {len(load.failed)} calls cut off by SIGKILL"
    )
    assert load.early == []
    assert len(load.received) >= RECEIVED_BEFORE_KILL
    assert len(load.failed) == CLIENTS  # Each client's last call died with the registry.
    assert {code for _, _, code in load.failed.values()} == {grpc.StatusCode.UNAVAILABLE}
    return load


async def check_proofs(
    registry: RunningRegistry,
    root: trust.TrustRoot,
    new: Checkpoint,
    received: list[common_pb2.Bundle],
) -> int:
    """Inclusion of every received bundle, consistency of every checkpoint seen, in ``new``.

    Returns how many distinct tree sizes the clients saw.
    """
    seen: dict[int, bytes] = {}
    for note in {bundle.checkpoint for bundle in received}:
        checkpoint = verify_checkpoint(note, root.log_verifier, origin=root.log_origin)
        assert seen.setdefault(checkpoint.size, checkpoint.root_hash) == checkpoint.root_hash, (
            f"two checkpoints of size {checkpoint.size} with different roots"
        )
    assert new.size >= max(seen)  # Never rolled back.
    async with registry.public_channel() as channel:
        log = registry_pb2_grpc.LogServiceStub(channel)
        inclusion = await limited(
            log.GetInclusionProof(
                registry_pb2.GetInclusionProofRequest(log_index=b.log_index, tree_size=new.size),
                timeout=DEADLINE,
            )
            for b in received
        )
        consistency = await limited(
            log.GetConsistencyProof(
                registry_pb2.GetConsistencyProofRequest(first_size=size, second_size=new.size),
                timeout=DEADLINE,
            )
            for size in seen
        )
    for bundle, path in zip(received, inclusion, strict=True):
        assert (path.log_index, path.tree_size) == (bundle.log_index, new.size)
        merkle.verify_inclusion(
            merkle.leaf_hash(bundle.envelope),
            bundle.log_index,
            new.size,
            list(path.proof),
            new.root_hash,
        )
    for (size, old_root), extension in zip(seen.items(), consistency, strict=True):
        assert (extension.first_size, extension.second_size) == (size, new.size)
        merkle.verify_consistency(size, new.size, list(extension.proof), old_root, new.root_hash)
    return len(seen)


async def register_all(
    registry: RunningRegistry, calls: list[tuple[Member, Request]]
) -> list[common_pb2.Bundle]:
    """Send each request as its member's node (one channel per node); bundles in order."""
    async with AsyncExitStack() as stack:
        nodes = {m.node.node_id: m.node for m, _ in calls}
        stubs = {
            node_id: registry_pb2_grpc.CertificateServiceStub(
                await stack.enter_async_context(node.channel(registry))
            )
            for node_id, node in nodes.items()
        }
        responses = await limited(
            stubs[m.node.node_id].RegisterDataset(request, timeout=DEADLINE) for m, request in calls
        )
    return [response.certificate for response in responses]


async def logged_certificates(
    registry: RunningRegistry, root: trust.TrustRoot, checkpoint: Checkpoint
) -> dict[bytes, list[str]]:
    """Every certificate in the log up to ``checkpoint``: dataset ids by content digest."""
    async with registry.public_channel() as channel:
        log = registry_pb2_grpc.LogServiceStub(channel)
        pages = await limited(
            log.GetEntries(
                registry_pb2.GetEntriesRequest(start=start, end=min(start + PAGE, checkpoint.size)),
                timeout=DEADLINE,
            )
            for start in range(0, checkpoint.size, PAGE)
        )
    entries = [entry for page in pages for entry in page.entries]
    assert len(entries) == checkpoint.size
    assert merkle.root([merkle.leaf_hash(e) for e in entries]) == checkpoint.root_hash
    issuer = {dsse.key_id(root.issuer_key): root.issuer_public_key}
    logged: dict[bytes, list[str]] = {}
    for entry in entries:
        envelope = dsse.Envelope.from_json(entry)
        if envelope.payload_type == CERTIFICATE_TYPE:
            document = documents.open_document(envelope, dataset_pb2.DatasetCertificate, issuer)
            logged.setdefault(document.dataset.content_digest, []).append(document.dataset_id)
    return logged


async def test_sigkill_under_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    state = tmp_path / "registry"
    init = run_cli("init", "--state", state, "--json")
    assert init.returncode == 0, init.stderr
    digest = json.loads(init.stdout)["trust_root_digest"]
    added = run_cli("admin", "add", "alice", "--role", "admin", "--state", state)
    assert added.returncode == 0, added.stderr
    root = trust.load_trust_root(
        (state / "trust" / "root-1.json").read_bytes(), digest, datetime.now(UTC)
    ).root

    first = await start_registry(state, digest)
    restarted: RunningRegistry | None = None
    try:
        members = []
        for prefix, region in (("crash-gz", "440100"), ("crash-sh", "310000")):
            node = await enrolled_node(first, state, prefix, region)
            members.append(Member(node, await report_member(first, node, region)))
        before = (await latest_checkpoint(first, root)).size

        load = await load_then_kill(first, members)
        received = load.received
        # Every received bundle verifies offline; ids and log indexes are distinct.
        certificates = {
            key: bundles.verify_certificate(b, root) for key, (_, b) in received.items()
        }
        for key, certificate in certificates.items():
            assert certificate.dataset == received[key][0].dataset
        assert len({c.dataset_id for c in certificates.values()}) == len(received)
        assert len({b.log_index for _, b in received.values()}) == len(received)

        # ------------------------------------------------------------ restart on the same state
        restarted = await start_registry(state, digest)
        new = await latest_checkpoint(restarted, root)
        sizes = await check_proofs(restarted, root, new, [b for _, b in received.values()])
        print(f"crash: new tree size {new.size}, {sizes} checkpoint sizes seen, all consistent")
        verified = run_cli("log", "verify", "--state", state, "--json")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert json.loads(verified.stdout) == {"ok": True, "problems": []}

        # ------------------------------------------------------------ idempotency after the crash
        member_of = {m.node.node_id: m for m in members}
        retried = await register_all(
            restarted,
            [(member_of[certificates[key].node_id], r) for key, (r, _) in received.items()],
        )
        for (key, (_, got)), again in zip(received.items(), retried, strict=True):
            assert again.envelope == got.envelope, f"{key} answered a different certificate"
            assert again.log_index == got.log_index
            bundles.verify_certificate(again, root)

        cut_off = list(load.failed.items())
        calls = [(m, request) for _, (m, request, _) in cut_off]
        firsts = await register_all(restarted, calls)
        seconds = await register_all(restarted, calls)
        committed = 0  # Cut-off calls whose certificate had committed before the kill.
        for (key, (_, request, _)), once, twice in zip(cut_off, firsts, seconds, strict=True):
            certificate = bundles.verify_certificate(once, root)
            assert certificate.dataset == request.dataset
            assert twice.envelope == once.envelope, f"{key} minted a second certificate"
            assert bundles.verify_certificate(twice, root).dataset_id == certificate.dataset_id
            committed += once.log_index < new.size
        print(f"crash: {committed} of the cut-off calls had committed before the kill")
        # Nothing acknowledged was lost, nothing unasked was added, before or after the restart.
        assert new.size == before + len(received) + committed
        final = await latest_checkpoint(restarted, root)
        assert final.size == new.size + CLIENTS - committed

        # The whole log: exactly one certificate per request sent, and no other certificate.
        logged = await logged_certificates(restarted, root, final)
        sent = [r.dataset.content_digest for r, _ in received.values()] + [
            r.dataset.content_digest for _, (_, r, _) in cut_off
        ]
        assert len(set(sent)) == len(sent)
        assert sorted(logged) == sorted(sent)
        assert {d.hex(): ids for d, ids in logged.items() if len(ids) != 1} == {}

        assert await stop_registry(restarted) == 0
    finally:
        for running in (first, restarted):  # Only after a failure: never leave a process behind.
            if running is not None and running.process.returncode is None:
                running.process.kill()
                await running.process.wait()
