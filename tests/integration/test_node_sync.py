"""node.sync against a real registry process: the status feed and the checkpoint keeper.

A node is enrolled by invitation (as in test_enrollment), reports a member,
and registers that member's dataset; an admin then suspends and revokes it.
The node's :class:`~node.sync.StatusFollower` must apply the suspension
within seconds and, restarted on the same database, resume after what it
applied. Its :class:`~node.sync.CheckpointKeeper` follows the registry's
growing log with consistency proofs and cosigns what it verified.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from node.sync import SCHEMA, CheckpointKeeper, Comparison, Outcome, StatusFollower
from provex import bundle, trust
from provex import checkpoint as notes
from provex import envelope as dsse
from provex.storage import Database, Migration
from provex.v1 import common_pb2, dataset_pb2, registry_pb2, registry_pb2_grpc
from tests.integration.conftest import RunningRegistry
from tests.integration.test_certificates import description, registration
from tests.integration.test_enrollment import Node, admin_channel, credit_code, enrolled_node

DEADLINE = 10.0
MIGRATIONS = (Migration(1, "sync", SCHEMA),)


@dataclass
class Member:
    """An enrolled node with one active member of its own."""

    node: Node
    code: str
    root: trust.TrustRoot

    def cosigner(self) -> notes.CosignatureSigner:
        return notes.CosignatureSigner(self.node.node_id, self.node.signing_key)


@pytest.fixture(scope="module")
async def member(registry: RunningRegistry, registry_state: tuple[Path, str]) -> Member:
    state, _ = registry_state
    root = trust.load_trust_root(
        (state / "trust" / "root-1.json").read_bytes(),
        registry.trust_root_digest,
        datetime.now(UTC),
    ).root
    node = await enrolled_node(registry, state, "it-sync")
    code = credit_code()
    async with node.channel(registry) as channel:
        await registry_pb2_grpc.MemberServiceStub(channel).ReportMember(
            registry_pb2.ReportMemberRequest(
                member=registry_pb2.Member(credit_code=code, name="Sync Co", region_code="440100")
            ),
            timeout=DEADLINE,
        )
    return Member(node, code, root)


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    db = await Database.open(tmp_path / "node.db", migrations=MIGRATIONS)
    yield db
    await db.close()


async def register(registry: RunningRegistry, member: Member, key: str, number: int) -> str:
    async with member.node.channel(registry) as channel:
        response = await registry_pb2_grpc.CertificateServiceStub(channel).RegisterDataset(
            registration(key, description(number, holder=member.code)), timeout=DEADLINE
        )
    return bundle.verify_certificate(response.certificate, member.root).dataset_id


async def set_status(
    registry: RunningRegistry, state: Path, root: trust.TrustRoot, dataset_id: str, status: int
) -> int:
    """An admin's SetStatus; returns the statement's log index (after verifying its bundle)."""
    async with admin_channel(registry, state) as channel:
        response = await registry_pb2_grpc.CertificateServiceStub(channel).SetStatus(
            registry_pb2.SetStatusRequest(dataset_id=dataset_id, status=status, reason="sync test"),
            timeout=DEADLINE,
        )
    return bundle.verify_bundle(response.statement, root, dataset_pb2.StatusStatement).log_index


@dataclass
class Recording:
    """A registry stub that notes what the node asked (and passes every call on)."""

    stub: Any
    watched_after: list[int] = field(default_factory=list)
    proofs: list[tuple[int, int]] = field(default_factory=list)

    def WatchStatus(self, request: registry_pb2.WatchStatusRequest, **call: Any) -> Any:
        self.watched_after.append(request.after_log_index)
        return self.stub.WatchStatus(request, **call)

    def GetConsistencyProof(
        self, request: registry_pb2.GetConsistencyProofRequest, **call: Any
    ) -> Any:
        self.proofs.append((request.first_size, request.second_size))
        return self.stub.GetConsistencyProof(request, **call)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stub, name)


@dataclass
class Applied:
    """What the node's apply callback saw: (log index, statement), and when."""

    seen: list[tuple[int, dataset_pb2.StatusStatement]] = field(default_factory=list)
    at: dict[int, float] = field(default_factory=dict)

    async def __call__(self, statement: dataset_pb2.StatusStatement, log_index: int) -> None:
        self.seen.append((log_index, statement))
        self.at[log_index] = asyncio.get_running_loop().time()

    @property
    def indices(self) -> list[int]:
        return [index for index, _ in self.seen]


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# ---------------------------------------------------------------- status feed


async def test_a_suspension_is_applied_within_seconds_and_the_feed_resumes(
    registry: RunningRegistry, registry_state: tuple[Path, str], member: Member, database: Database
) -> None:
    state, _ = registry_state
    loop = asyncio.get_running_loop()
    dataset_id = await register(registry, member, "sync-feed-1", 1)
    async with member.node.channel(registry) as channel:
        stubs = Recording(registry_pb2_grpc.CertificateServiceStub(channel))
        applied = Applied()
        follower = StatusFollower(database, member.root, lambda: stubs, applied)
        task = asyncio.create_task(follower.run())
        try:
            suspended = await set_status(
                registry, state, member.root, dataset_id, common_pb2.STATUS_SUSPENDED
            )
            returned = loop.time()
            async with asyncio.timeout(5):
                await follower.wait_for(suspended)
        finally:
            await stop(task)
    assert applied.at[suspended] - returned < 5
    statement = dict(applied.seen)[suspended]
    assert statement.dataset_id == dataset_id
    assert statement.status == common_pb2.STATUS_SUSPENDED
    assert applied.indices == sorted(set(applied.indices))  # in order, each once
    position = follower.position
    assert position >= suspended
    assert follower.catalog_version >= 1
    assert stubs.watched_after[0] == 0

    # Stopped: a statement is logged meanwhile. A new follower on the same database
    # resumes after the last applied index, and applies only what is new.
    revoked = await set_status(registry, state, member.root, dataset_id, common_pb2.STATUS_REVOKED)
    async with member.node.channel(registry) as channel:
        stubs = Recording(registry_pb2_grpc.CertificateServiceStub(channel))
        again = Applied()
        resumed = StatusFollower(database, member.root, lambda: stubs, again)
        task = asyncio.create_task(resumed.run())
        try:
            async with asyncio.timeout(5):
                await resumed.wait_for(revoked)
        finally:
            await stop(task)
    assert stubs.watched_after[0] == position
    assert again.indices[0] == revoked
    assert all(index > position for index in again.indices)
    last = dict(again.seen)[revoked]
    assert (last.dataset_id, last.status) == (dataset_id, common_pb2.STATUS_REVOKED)
    assert resumed.position >= revoked


# ---------------------------------------------------------------- checkpoints


async def test_the_keeper_follows_the_growing_log_with_consistency_proofs(
    registry: RunningRegistry, member: Member, database: Database
) -> None:
    async with member.node.channel(registry) as channel:
        log = Recording(registry_pb2_grpc.LogServiceStub(channel))
        keeper = CheckpointKeeper(database, member.root, log, DEADLINE, member.cosigner())
        await keeper.load()
        first = await keeper.poll_once()
        assert first.outcome is Outcome.ADVANCED
        assert log.proofs == []  # the first checkpoint has nothing to be consistent with
        first_note = keeper.latest
        assert first_note is not None
        for number in (2, 3):
            await register(registry, member, f"sync-log-{number}", number)
            grown = await keeper.poll_once()
            assert grown.outcome is Outcome.ADVANCED
            assert log.proofs[-1][1] == grown.checkpoint.size
        assert [second for _, second in log.proofs] == sorted({s for _, s in log.proofs})
        assert log.proofs[0][0] == first.checkpoint.size
        assert keeper.latest_checkpoint == grown.checkpoint
        assert grown.checkpoint.size >= first.checkpoint.size + 2

        older = await keeper.observe(first_note, source="it-peer")
        assert older.outcome is Outcome.OLDER
        assert await keeper.compare_with_peer("it-peer", first_note) == Comparison.BEHIND
        assert await keeper.compare_with_peer("it-peer", keeper.latest or "") == Comparison.SAME
        assert keeper.latest_checkpoint == grown.checkpoint
        assert await keeper.alarms() == []

        restarted = CheckpointKeeper(database, member.root, log, DEADLINE, member.cosigner())
        await restarted.load()
        assert restarted.latest == keeper.latest


async def test_the_keeper_cosignature_is_accepted_by_the_registry(
    registry: RunningRegistry, member: Member, database: Database
) -> None:
    async with member.node.channel(registry) as channel:
        log = registry_pb2_grpc.LogServiceStub(channel)
        keeper = CheckpointKeeper(database, member.root, log, DEADLINE, member.cosigner())
        observation = await keeper.poll_once()
        submission = observation.submission
        assert submission is not None
        assert submission.accepted, submission.error
        assert submission.witnesses is not None and submission.witnesses >= 1
        note = (
            await log.GetCheckpoint(
                registry_pb2.GetCheckpointRequest(with_cosignatures=True), timeout=DEADLINE
            )
        ).checkpoint
    witness = notes.CosignatureVerifier(
        member.node.node_id, dsse.raw_public_key(member.node.signing_key.public_key())
    )
    verified = notes.open_checkpoint(
        note,
        member.root.log_verifier,
        origin=member.root.log_origin,
        witnesses=[witness],
        witness_threshold=1,
    )
    assert verified.checkpoint == observation.checkpoint
    assert member.node.node_id in verified.cosigned_by
