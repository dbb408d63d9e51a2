"""Tests of node.sync: the node's verified checkpoint, witnessing, alarms and the status feed.

The registry's part is played by :class:`Registry`, a small in-process log
built with the real :mod:`provex.merkle` and :mod:`provex.checkpoint` code:
it signs checkpoints with the log key and answers GetCheckpoint,
GetConsistencyProof and SubmitCosignature from its own tree. A lying
registry is the same class holding a forked tree (same log key, another
history), which is exactly what a misbehaving registry could sign.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node.sync import (
    SCHEMA,
    AlarmKind,
    CheckpointKeeper,
    Comparison,
    Outcome,
    StatusFollower,
)
from provex import checkpoint as notes
from provex import documents, merkle, trust
from provex import envelope as dsse
from provex.errors import FailedPrecondition, Unavailable, VerificationError
from provex.storage import Database, Migration
from provex.v1 import common_pb2, dataset_pb2, registry_pb2

NOW = datetime(2026, 11, 25, tzinfo=UTC)
ROOT_KEY = Ed25519PrivateKey.from_private_bytes(b"\x30" * 32)
ISSUER = Ed25519PrivateKey.from_private_bytes(b"\x41" * 32)
LOG_KEY = Ed25519PrivateKey.from_private_bytes(b"\x42" * 32)
NODE_KEY = Ed25519PrivateKey.from_private_bytes(b"\x43" * 32)
ORIGIN = "provex.test/log"
LOG = notes.NoteSigner(ORIGIN, LOG_KEY)
COSIGNER = notes.CosignatureSigner("gd-gzde", NODE_KEY, clock=NOW.timestamp)
WITNESS = COSIGNER.verifier()
TRUST_ROOT = trust.TrustRoot(
    version=1,
    trust_domain="provex.test",
    root_keys=(dsse.raw_public_key(ROOT_KEY.public_key()),),
    root_threshold=1,
    issuer_key=dsse.raw_public_key(ISSUER.public_key()),
    log_key=dsse.raw_public_key(LOG_KEY.public_key()),
    log_origin=ORIGIN,
    ca_certificate_pem="-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
    issued_at=NOW - timedelta(days=1),
    expires_at=NOW + timedelta(days=365),
)
MIGRATIONS = (Migration(1, "sync", SCHEMA),)
DEADLINE = 1.0


def rpc_error(code: grpc.StatusCode, details: str = "") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details or code.name
    )


def entries(tag: str, count: int) -> list[bytes]:
    return [f"{tag}-{i}".encode() for i in range(count)]


@dataclass
class Registry:
    """The registry's LogService over an in-memory tree (real merkle and note code)."""

    leaves: list[bytes] = field(default_factory=list)
    served_size: int | None = None  # GetCheckpoint answers this size (None: the latest)
    submit_error: grpc.StatusCode | None = None
    unreachable: bool = False
    proof_requests: list[tuple[int, int]] = field(default_factory=list)
    cosigned: list[notes.VerifiedCheckpoint] = field(default_factory=list)

    @classmethod
    def of(cls, data: list[bytes]) -> Registry:
        return cls([merkle.leaf_hash(e) for e in data])

    def grow(self, data: list[bytes]) -> None:
        self.leaves.extend(merkle.leaf_hash(e) for e in data)

    def checkpoint(self, size: int | None = None) -> notes.Checkpoint:
        size = len(self.leaves) if size is None else size
        return notes.Checkpoint(ORIGIN, size, merkle.root(self.leaves[:size]))

    def note(self, size: int | None = None) -> str:
        return notes.sign_checkpoint(self.checkpoint(size), LOG)

    async def GetCheckpoint(
        self, request: registry_pb2.GetCheckpointRequest, **call: float
    ) -> registry_pb2.GetCheckpointResponse:
        assert call["timeout"] == DEADLINE
        if self.unreachable:
            raise rpc_error(grpc.StatusCode.UNAVAILABLE)
        return registry_pb2.GetCheckpointResponse(checkpoint=self.note(self.served_size))

    async def GetConsistencyProof(
        self, request: registry_pb2.GetConsistencyProofRequest, **call: float
    ) -> registry_pb2.GetConsistencyProofResponse:
        assert call["timeout"] == DEADLINE
        if self.unreachable:
            raise rpc_error(grpc.StatusCode.UNAVAILABLE)
        first, second = request.first_size, request.second_size
        self.proof_requests.append((first, second))
        if not 0 < first <= second <= len(self.leaves):
            raise rpc_error(grpc.StatusCode.INVALID_ARGUMENT, f"no proof {first} -> {second}")
        proof = merkle.consistency_proof(self.leaves, first, second)
        return registry_pb2.GetConsistencyProofResponse(
            first_size=first, second_size=second, proof=proof
        )

    async def SubmitCosignature(
        self, request: registry_pb2.SubmitCosignatureRequest, **call: float
    ) -> registry_pb2.SubmitCosignatureResponse:
        assert call["timeout"] == DEADLINE
        if self.submit_error is not None:
            raise rpc_error(self.submit_error)
        verified = notes.open_checkpoint(
            request.checkpoint,
            TRUST_ROOT.log_verifier,
            origin=ORIGIN,
            witnesses=[WITNESS],
            witness_threshold=1,
        )
        self.cosigned.append(verified)
        return registry_pb2.SubmitCosignatureResponse(witnesses=1)


HONEST = entries("honest", 40)


def forked(shared: int, size: int) -> Registry:
    """A tree sharing the honest tree's first ``shared`` entries, then another history."""
    return Registry.of(HONEST[:shared] + entries("fork", size - shared))


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    db = await Database.open(tmp_path / "node.db", migrations=MIGRATIONS)
    yield db
    await db.close()


def keeper_for(database: Database, registry: Registry | Callable[[], Registry]) -> CheckpointKeeper:
    return CheckpointKeeper(database, TRUST_ROOT, registry, DEADLINE, COSIGNER)  # type: ignore[arg-type]


async def kept_at(database: Database, registry: Registry, size: int) -> CheckpointKeeper:
    keeper = keeper_for(database, registry)
    await keeper.load()
    await keeper.observe(registry.note(size))
    registry.proof_requests.clear()
    registry.cosigned.clear()
    return keeper


async def stored_sizes(database: Database) -> list[int]:
    rows = await database.run(
        lambda conn: conn.execute("SELECT tree_size FROM checkpoints ORDER BY tree_size").fetchall()
    )
    return [int(size) for (size,) in rows]


# ---------------------------------------------------------------- growth


@pytest.mark.parametrize(
    "sizes",
    [[1, 2], [3, 10], [4, 8], [1, 2, 3, 4, 5, 8, 13, 32], [6, 7, 40], [31, 32, 33]],
    ids=str,
)
async def test_growth_is_proven_stored_and_cosigned(database: Database, sizes: list[int]) -> None:
    registry = Registry.of(HONEST)
    keeper = keeper_for(database, registry)
    await keeper.load()
    assert keeper.latest is None
    for step, size in enumerate(sizes):
        observation = await keeper.observe(registry.note(size))
        assert observation.outcome is Outcome.ADVANCED
        assert observation.latest == registry.checkpoint(size)
        assert keeper.latest == registry.note(size)
        assert observation.submission is not None and observation.submission.accepted
        cosigned = registry.cosigned[-1]
        assert cosigned.checkpoint == registry.checkpoint(size)
        assert cosigned.cosigned_by == ("gd-gzde",)
        assert cosigned.cosignatures[0].timestamp == int(NOW.timestamp())
        if step:
            assert registry.proof_requests[-1] == (sizes[step - 1], size)
    assert len(registry.proof_requests) == len(sizes) - 1  # none for the first
    assert await stored_sizes(database) == sizes
    assert await keeper.alarms() == []


async def test_the_same_checkpoint_again_changes_nothing(database: Database) -> None:
    registry = Registry.of(HONEST)
    keeper = await kept_at(database, registry, 9)
    for note in (registry.note(9), notes.add_signature(registry.note(9), COSIGNER)):
        observation = await keeper.observe(note)
        assert observation.outcome is Outcome.SAME
        assert observation.submission is None
    assert registry.proof_requests == []
    assert registry.cosigned == []
    assert keeper.latest == registry.note(9)
    assert await stored_sizes(database) == [9]


# ---------------------------------------------------------------- notes that do not verify


def forged_note() -> str:
    return notes.sign_checkpoint(
        Registry.of(HONEST).checkpoint(12), notes.NoteSigner(ORIGIN, Ed25519PrivateKey.generate())
    )


def tampered_note() -> str:
    note = Registry.of(HONEST).note(12)
    text, signatures = note.split("\n\n")
    lines = text.split("\n")
    lines[2] = Registry.of(entries("other", 12)).note(12).split("\n")[2]
    return "\n".join(lines) + "\n\n" + signatures


def other_origin_note() -> str:
    checkpoint = Registry.of(HONEST).checkpoint(12)
    return notes.sign_checkpoint(
        notes.Checkpoint("provex.other/log", 12, checkpoint.root_hash), LOG
    )


def witness_only_note() -> str:
    text = Registry.of(HONEST).checkpoint(12).to_text()
    line = notes.NoteSignature(COSIGNER.name, COSIGNER.key_hash, COSIGNER.sign(text.encode()))
    return notes.SignedNote(text, (line,)).format()


REFUSED: dict[str, tuple[Callable[[], str], str]] = {
    "forged signature (another key)": (forged_note, "no signature by a known key"),
    "root changed under the signature": (tampered_note, "invalid signature"),
    "wrong origin": (other_origin_note, "origin"),
    "only a witness cosignature": (witness_only_note, "no signature by a known key"),
    "not a note": (lambda: "provex.test/log\n12\n", "blank line"),
}


@pytest.mark.parametrize("case", REFUSED, ids=str)
async def test_notes_the_log_did_not_sign_are_refused(database: Database, case: str) -> None:
    make, message = REFUSED[case]
    registry = Registry.of(HONEST)
    keeper = await kept_at(database, registry, 5)
    with pytest.raises(VerificationError, match=message):
        await keeper.observe(make())
    with pytest.raises(VerificationError, match=message):
        await keeper.compare_with_peer("gd-szde", make())
    assert keeper.latest == registry.note(5)
    assert registry.proof_requests == []
    assert await keeper.alarms() == []  # not the log's signature: no evidence against it


# ---------------------------------------------------------------- a registry rewriting history


@dataclass(frozen=True)
class Lie:
    kept: int
    shown: Callable[[], str]
    proofs_from_fork: bool
    kind: AlarmKind


LIES: dict[str, Lie] = {
    "same size, another root": Lie(8, lambda: forked(5, 8).note(), False, AlarmKind.INCONSISTENT),
    "larger, not an extension (honest proofs)": Lie(
        8, lambda: forked(6, 20).note(), False, AlarmKind.INCONSISTENT
    ),
    "larger, not an extension (proofs from the fork)": Lie(
        8, lambda: forked(6, 20).note(), True, AlarmKind.INCONSISTENT
    ),
    "larger, forked at the first entry": Lie(
        1, lambda: forked(0, 2).note(), True, AlarmKind.INCONSISTENT
    ),
    "smaller, not a prefix": Lie(12, lambda: forked(3, 7).note(), False, AlarmKind.ROLLBACK),
    "smaller, not a prefix (proofs from the fork)": Lie(
        12, lambda: forked(3, 7).note(), True, AlarmKind.ROLLBACK
    ),
}


@pytest.mark.parametrize("case", LIES, ids=str)
async def test_inconsistent_history_is_refused_and_recorded(database: Database, case: str) -> None:
    lie = LIES[case]
    honest = Registry.of(HONEST)
    fork = forked(6, 20)
    registry = fork if lie.proofs_from_fork else honest
    keeper = keeper_for(database, lambda: registry)
    await keeper.load()
    await keeper.observe(honest.note(lie.kept))
    note = lie.shown()
    with pytest.raises(VerificationError) as raised:
        await keeper.observe(note)
    assert f"size {lie.kept}" in str(raised.value)
    assert keeper.latest == honest.note(lie.kept)
    assert await stored_sizes(database) == [lie.kept]
    [alarm] = await keeper.alarms()
    assert (alarm.kind, alarm.peer, alarm.note, alarm.times) == (lie.kind, "", note, 1)
    assert alarm.detail == str(raised.value)
    # Seen again: the same alarm, counted, not a second row.
    with pytest.raises(VerificationError):
        await keeper.observe(note)
    [again] = await keeper.alarms()
    assert (again.id, again.times) == (alarm.id, 2)
    # The honest log still advances from the kept checkpoint.
    registry = honest
    assert (await keeper.observe(honest.note(30))).outcome is Outcome.ADVANCED


# ---------------------------------------------------------------- rollback


async def test_an_older_prefix_is_seen_but_never_replaces_the_latest(database: Database) -> None:
    registry = Registry.of(HONEST)
    keeper = await kept_at(database, registry, 13)
    for size in (1, 5, 8, 12):
        observation = await keeper.observe(registry.note(size), source="gd-szde")
        assert observation.outcome is Outcome.OLDER
        assert observation.latest == registry.checkpoint(13)
        assert registry.proof_requests[-1] == (size, 13)
    assert keeper.latest == registry.note(13)
    assert await stored_sizes(database) == [13]
    assert registry.cosigned == []
    assert await keeper.alarms() == []


async def test_a_registry_serving_a_smaller_tree_is_a_rollback(database: Database) -> None:
    registry = Registry.of(HONEST)
    keeper = await kept_at(database, registry, 13)
    registry.served_size = 10
    with pytest.raises(VerificationError, match="lost logged entries"):
        await keeper.poll_once()
    [alarm] = await keeper.alarms()
    assert alarm.kind is AlarmKind.ROLLBACK
    assert alarm.note == registry.note(10)
    assert keeper.latest == registry.note(13)
    registry.served_size = None
    assert (await keeper.poll_once()).outcome is Outcome.ADVANCED
    assert keeper.latest == registry.note(40)


async def test_storage_itself_refuses_a_rollback(database: Database) -> None:
    registry = Registry.of(HONEST)
    await kept_at(database, registry, 13)

    def insert_smaller(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO checkpoints (tree_size, root_hash, note, verified_at) "
            "VALUES (5, ?, 'x', 'now')",
            (bytes(32),),
        )

    with pytest.raises(sqlite3.IntegrityError, match="rollback"):
        await database.transaction(insert_smaller)

    def rewrite(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE checkpoints SET root_hash = ? WHERE tree_size = 13", (bytes(32),))

    with pytest.raises(sqlite3.IntegrityError, match="never changes"):
        await database.transaction(rewrite)


async def test_a_stale_keeper_never_rolls_the_stored_latest_back(database: Database) -> None:
    registry = Registry.of(HONEST)
    stale = await kept_at(database, registry, 5)
    current = keeper_for(database, registry)
    await current.load()
    await current.observe(registry.note(9))
    # Storing what is stored already is harmless (e.g. a store cancelled after its commit).
    assert (await stale.observe(registry.note(9))).outcome is Outcome.ADVANCED
    await current.observe(registry.note(12))
    with pytest.raises(FailedPrecondition, match="not larger than the stored latest"):
        await stale.observe(registry.note(10))
    assert await stored_sizes(database) == [5, 9, 12]


# ---------------------------------------------------------------- peers


PEERS: dict[str, tuple[Callable[[], str], Comparison, tuple[int, int] | None]] = {
    "same": (lambda: Registry.of(HONEST).note(16), Comparison.SAME, None),
    "same with cosignatures": (
        lambda: notes.add_signature(Registry.of(HONEST).note(16), COSIGNER),
        Comparison.SAME,
        None,
    ),
    "ahead": (lambda: Registry.of(HONEST).note(25), Comparison.AHEAD, (16, 25)),
    "behind": (lambda: Registry.of(HONEST).note(3), Comparison.BEHIND, (3, 16)),
    "same size, another root": (lambda: forked(9, 16).note(), Comparison.SPLIT_VIEW, None),
    "ahead on another history": (lambda: forked(9, 25).note(), Comparison.SPLIT_VIEW, (16, 25)),
    "behind on another history": (lambda: forked(2, 3).note(), Comparison.SPLIT_VIEW, (3, 16)),
}


@pytest.mark.parametrize("case", PEERS, ids=str)
async def test_checkpoints_compared_with_peers(database: Database, case: str) -> None:
    make, expected, proof = PEERS[case]
    registry = Registry.of(HONEST)
    keeper = await kept_at(database, registry, 16)
    note = make()
    assert await keeper.compare_with_peer("gd-szde", note) == expected
    assert registry.proof_requests == ([proof] if proof else [])
    alarms = await keeper.alarms()
    if expected is Comparison.SPLIT_VIEW:
        [alarm] = alarms
        assert (alarm.kind, alarm.peer, alarm.note) == (AlarmKind.SPLIT_VIEW, "gd-szde", note)
        assert "gd-szde" in alarm.detail
    else:
        assert alarms == []
    assert keeper.latest == registry.note(16)  # comparing never moves the latest


async def test_peer_comparison_without_the_registry_is_unproven(database: Database) -> None:
    registry = Registry.of(HONEST)
    keeper = await kept_at(database, registry, 16)
    registry.unreachable = True
    assert await keeper.compare_with_peer("gd-szde", registry.note(20)) == "ahead"
    assert await keeper.compare_with_peer("gd-szde", forked(4, 10).note()) == "behind"
    assert await keeper.compare_with_peer("gd-szde", forked(4, 16).note()) == "split_view"
    assert [a.kind for a in await keeper.alarms()] == [AlarmKind.SPLIT_VIEW]
    with pytest.raises(Unavailable):
        await keeper.observe(registry.note(20))
    assert keeper.latest == registry.note(16)
    assert await keeper.alarms() != []


# ---------------------------------------------------------------- restart, witnessing


async def test_a_restarted_keeper_keeps_the_latest(tmp_path: Path) -> None:
    registry = Registry.of(HONEST)
    first_db = await Database.open(tmp_path / "node.db", migrations=MIGRATIONS)
    try:
        keeper = keeper_for(first_db, registry)
        await keeper.observe(registry.note(3))
        await keeper.observe(registry.note(9))
    finally:
        await first_db.close()
    database = await Database.open(tmp_path / "node.db", migrations=MIGRATIONS)
    try:
        restarted = keeper_for(database, registry)
        await restarted.load()
        assert restarted.latest == registry.note(9)
        assert restarted.latest_checkpoint == registry.checkpoint(9)
        assert (await restarted.observe(registry.note(5))).outcome is Outcome.OLDER
        with pytest.raises(VerificationError):
            await restarted.observe(forked(4, 9).note())
        registry.proof_requests.clear()
        assert (await restarted.observe(registry.note(12))).outcome is Outcome.ADVANCED
        assert registry.proof_requests == [(9, 12)]
        assert [a.kind for a in await restarted.alarms()] == [AlarmKind.INCONSISTENT]
    finally:
        await database.close()


async def test_a_failed_cosignature_is_not_fatal_and_retried_when_transient(
    database: Database,
) -> None:
    registry = Registry.of(HONEST)
    keeper = await kept_at(database, registry, 4)
    registry.submit_error = grpc.StatusCode.UNAVAILABLE
    observation = await keeper.observe(registry.note(6))
    assert observation.outcome is Outcome.ADVANCED
    assert observation.submission is not None and not observation.submission.accepted
    assert observation.submission.code is grpc.StatusCode.UNAVAILABLE
    assert keeper.latest == registry.note(6)
    registry.submit_error = None
    retried = await keeper.observe(registry.note(6))
    assert retried.outcome is Outcome.SAME
    assert retried.submission is not None and retried.submission.accepted
    assert [c.checkpoint.size for c in registry.cosigned] == [6]
    assert (await keeper.observe(registry.note(6))).submission is None  # accepted: done

    registry.submit_error = grpc.StatusCode.UNIMPLEMENTED
    refused = await keeper.observe(registry.note(7))
    assert (
        refused.submission is not None and refused.submission.code is grpc.StatusCode.UNIMPLEMENTED
    )
    assert (await keeper.observe(registry.note(7))).submission is None  # not retried


async def eventually(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in 5 s")


async def test_run_polls_and_backs_off_until_cancelled(database: Database) -> None:
    registry = Registry.of(HONEST[:5])
    keeper = keeper_for(database, registry)
    task = asyncio.create_task(keeper.run(0.01, max_backoff=0.05))
    try:
        async with asyncio.timeout(5):
            await eventually(lambda: keeper.latest == registry.note(5))
            registry.unreachable = True
            await asyncio.sleep(0.1)
            registry.unreachable = False
            registry.grow(HONEST[5:9])
            await eventually(lambda: keeper.latest == registry.note(9))
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert task.cancelled()


# ---------------------------------------------------------------- the status feed


def statement(number: int, key: Ed25519PrivateKey = ISSUER) -> bytes:
    document = dataset_pb2.StatusStatement(
        dataset_id=f"440100-2026-{number:07d}-0",
        status=common_pb2.STATUS_SUSPENDED,
        reason=f"case {number}",
    )
    return documents.sign_document(document, [key]).to_json()


@dataclass
class Feed:
    """The registry's CertificateService.WatchStatus over an in-memory log of statements."""

    log: list[bytes]
    statements: list[int]  # their log indices
    fail_after: int | None = None  # the next stream breaks after this many messages
    requests: list[int] = field(default_factory=list)

    def bundle(self, index: int) -> common_pb2.Bundle:
        leaves = [merkle.leaf_hash(e) for e in self.log]
        return common_pb2.Bundle(
            envelope=self.log[index],
            log_index=index,
            inclusion_proof=merkle.inclusion_proof(leaves, index),
            checkpoint=notes.sign_checkpoint(
                notes.Checkpoint(ORIGIN, len(leaves), merkle.root(leaves)), LOG
            ),
        )

    def WatchStatus(
        self, request: registry_pb2.WatchStatusRequest, timeout: float | None = None
    ) -> Stream:
        assert request.follow and timeout is not None
        self.requests.append(request.after_log_index)
        fail_after, self.fail_after = self.fail_after, None
        return Stream(self, request.after_log_index, fail_after)


@dataclass
class Stream:
    feed: Feed
    after: int
    fail_after: int | None
    cancelled: bool = False

    def cancel(self) -> bool:
        self.cancelled = True
        return True

    async def __aiter__(self) -> AsyncIterator[registry_pb2.WatchStatusResponse]:
        sent = 0
        cursor = self.after
        while True:
            for index in [i for i in self.feed.statements if i > cursor]:
                if self.fail_after is not None and sent == self.fail_after:
                    raise rpc_error(grpc.StatusCode.UNAVAILABLE, "connection reset")
                yield registry_pb2.WatchStatusResponse(
                    statement=self.feed.bundle(index), catalog_version=3
                )
                sent += 1
                cursor = index
            await asyncio.sleep(0.005)


async def test_the_follower_applies_in_order_and_resumes_after_failures(
    database: Database,
) -> None:
    log = [b"trust root", statement(1), b"certificate", statement(2), statement(3)]
    feed = Feed(log, [1, 3, 4], fail_after=1)
    applied: list[tuple[int, str]] = []
    failures = [4]  # applying index 4 fails once: it is re-applied, not skipped

    async def apply(document: dataset_pb2.StatusStatement, index: int) -> None:
        if index in failures:
            failures.remove(index)
            raise RuntimeError("listing store busy")
        applied.append((index, document.dataset_id))

    follower = StatusFollower(database, TRUST_ROOT, lambda: feed, apply, initial_backoff=0.01)  # type: ignore[arg-type]
    task = asyncio.create_task(follower.run())
    try:
        async with asyncio.timeout(5):
            await follower.wait_for(4)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert [i for i, _ in applied] == [1, 3, 4]
    assert applied[0][1] == "440100-2026-0000001-0"
    assert feed.requests == [0, 1, 3]  # broke after index 1, then apply of 4 failed once
    assert (follower.position, follower.catalog_version) == (4, 3)

    # A forged statement (not the issuer's key) is never applied; the follower stays put.
    feed.log.append(statement(4, Ed25519PrivateKey.generate()))
    feed.statements.append(5)
    restarted = StatusFollower(database, TRUST_ROOT, feed, apply, initial_backoff=0.01)  # type: ignore[arg-type]
    task = asyncio.create_task(restarted.run())
    try:
        await eventually(lambda: len(feed.requests) >= 5)  # refused, then reconnected
        assert restarted.position == 4
        assert feed.requests[3:5] == [4, 4]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert [i for i, _ in applied] == [1, 3, 4]
