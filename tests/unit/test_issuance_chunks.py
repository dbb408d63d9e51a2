"""Tests of Issuance.register_chunk: a bulk chunk registered as a unit keeps every semantic.

Same fixture as tests/unit/test_issuance.py (a real registry state, writer,
sequencer and publisher). Each refusal of the unary table answers its own
entry of a chunk with the same error; repeated keys inside a chunk, retried
chunks, versions, record-time re-checks and a unary call racing a chunk
answer as separate registrations would; the log verifies afterwards.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest
from test_issuance import (
    FOREIGN,
    HOLDER,
    NODE,
    OTHER_NODE,
    PLAIN,
    REFUSALS,
    Env,
    description,
    env,
    request,
)

from provex.errors import AlreadyExists, FailedPrecondition, PermissionDenied, ProvexError
from provex.ids import DatasetId
from provex.v1 import common_pb2, dataset_pb2, registry_pb2
from registry.config import RegistryConfig
from registry.issuance import request_digest
from registry.state import load_keys
from registry.transparency import verify_log

__all__ = ("env",)  # The fixture, imported for pytest.

Outcome = common_pb2.Bundle | ProvexError


async def chunk(env: Env, *requests: registry_pb2.RegisterDatasetRequest) -> list[Outcome]:
    outcomes = await env.issuance.register_chunk(NODE, list(requests))
    assert [key for key, _ in outcomes] == [r.idempotency_key for r in requests]
    return [outcome for _, outcome in outcomes]


def bundle(outcome: Outcome) -> common_pb2.Bundle:
    assert isinstance(outcome, common_pb2.Bundle), outcome
    return outcome


def log_verifies(env: Env) -> bool:
    path = env.writer.path
    config = RegistryConfig()
    verifier = load_keys(path.parent).log_signer(config.log_origin).verifier()
    return verify_log(path, verifier, config.log_origin).ok


@pytest.mark.parametrize("make, error, message", REFUSALS.values(), ids=REFUSALS.keys())
async def test_each_refusal_answers_its_own_entry(
    env: Env,
    make: Callable[[], registry_pb2.RegisterDatasetRequest],
    error: type[ProvexError],
    message: str,
) -> None:
    before, after = request("k-before", description(1)), request("k-after", description(2))
    first, refused, last = await chunk(env, before, make(), after)
    assert isinstance(refused, error)
    assert re.search(message, str(refused))
    serials = [DatasetId.parse(env.verify(bundle(o)).dataset_id).serial for o in (first, last)]
    assert serials == [1, 2]  # The refusal used no serial.


async def test_repeated_keys_in_a_chunk_answer_like_separate_calls(env: Env) -> None:
    outcomes = await chunk(
        env,
        request("k-a", description(1)),
        request("k-a", description(1)),  # Same request: the same certificate.
        request("k-b", description(2)),
        request("k-b", description(3)),  # Different request: ALREADY_EXISTS.
        request("k-c", description(4, holder=FOREIGN)),  # Refused...
        request("k-c", description(4)),  # ...so the key is still free.
    )
    a1, a2, b1, b2, c1, c2 = outcomes
    assert bundle(a1).envelope == bundle(a2).envelope
    assert env.verify(bundle(a2)).dataset.size_bytes == 1_001
    assert env.verify(bundle(b1)).dataset.size_bytes == 1_002
    assert isinstance(b2, AlreadyExists)
    assert "idempotency key k-b was used for a different request" in str(b2)
    assert isinstance(c1, PermissionDenied)
    assert env.verify(bundle(c2)).dataset.size_bytes == 1_004
    ids = {env.verify(bundle(o)).dataset_id for o in (a1, b1, c2)}
    assert len(ids) == 3
    assert log_verifies(env)


async def test_a_retried_chunk_answers_the_same_certificates(env: Env) -> None:
    requests = [request(f"k-{n}", description(n)) for n in range(30)]
    first = [bundle(o) for o in await chunk(env, *requests)]
    changed = list(requests)
    changed[7] = request("k-7", description(7, title="changed"))
    again = await chunk(env, *changed)
    for n, (before, after) in enumerate(zip(first, again, strict=True)):
        if n == 7:
            assert isinstance(after, AlreadyExists)
            continue
        assert bundle(after).envelope == before.envelope
        assert bundle(after).log_index == before.log_index
        env.verify(bundle(after))  # Proved against the latest checkpoint.
    count = await env.writer.run(
        lambda conn: conn.execute("SELECT count(*) FROM certificates").fetchone()[0]
    )
    assert count == 30


async def test_versions_in_a_chunk(env: Env) -> None:
    one = env.verify(await env.issuance.register(NODE, request("k-1", description(1))))
    two = env.verify(await env.issuance.register(NODE, request("k-2", description(2))))
    foreign = env.verify(
        await env.issuance.register(OTHER_NODE, request("k-f", description(9, holder=FOREIGN)))
    )
    outcomes = await chunk(
        env,
        request("v-1a", description(11), one.dataset_id),
        request("v-2", description(12), two.dataset_id.lower()),
        request("v-1b", description(13), one.dataset_id),
        request("v-f", description(14), foreign.dataset_id),
        request("v-plain", description(15, holder=PLAIN), two.dataset_id),
        request("v-new", description(16)),
    )
    certificates = [env.verify(bundle(outcomes[i])) for i in (0, 1, 2, 5)]
    assert [(c.dataset_id, c.version) for c in certificates[:3]] == [
        (one.dataset_id, 2),
        (two.dataset_id, 2),
        (one.dataset_id, 3),
    ]
    assert certificates[3].version == 1
    assert isinstance(outcomes[3], PermissionDenied)
    assert isinstance(outcomes[4], PermissionDenied)
    latest = await env.issuance.certificate_bundle(one.dataset_id)
    assert env.verify(latest).version == 3
    assert log_verifies(env)


async def test_the_transaction_rechecks_a_stale_member_cache(env: Env) -> None:
    env.verify(await env.issuance.register(NODE, request("k-0", description(0))))

    def freeze(conn: sqlite3.Connection) -> None:  # Behind the issuance's member cache.
        conn.execute("UPDATE members SET status = 'frozen' WHERE credit_code = ?", (HOLDER,))

    await env.writer.transaction(freeze)
    outcomes = await chunk(
        env,
        request("k-plain-1", description(1, holder=PLAIN)),
        request("k-holder", description(2)),
        request("k-plain-2", description(3, holder=PLAIN)),
    )
    assert isinstance(outcomes[1], FailedPrecondition)
    assert f"holder {HOLDER} is frozen" in str(outcomes[1])
    plain = [env.verify(bundle(outcomes[i])) for i in (0, 2)]
    assert [c.dataset.holder for c in plain] == [PLAIN, PLAIN]
    rows = await env.writer.run(
        lambda conn: conn.execute(
            "SELECT count(*) FROM idempotency WHERE idempotency_key = 'k-holder'"
        ).fetchone()[0]
    )
    assert rows == 0  # A refused entry leaves no row.
    assert log_verifies(env)


async def test_a_unary_call_racing_a_chunk_with_the_same_key_gets_one_certificate(
    env: Env,
) -> None:
    same = request("k-race", description(5))
    others = [request(f"k-{n}", description(n)) for n in range(10, 40)]
    unary, outcomes, again = await asyncio.gather(
        env.issuance.register(NODE, same),
        env.issuance.register_chunk(NODE, [*others, same]),
        env.issuance.register(NODE, same),
    )
    raced = bundle(outcomes[-1][1])
    assert unary.envelope == raced.envelope == again.envelope
    assert all(isinstance(o, common_pb2.Bundle) for _, o in outcomes)


@pytest.mark.parametrize(
    ("dataset", "dataset_id"),
    [
        (description(1), ""),
        (description(2, description="长" * 3000), ""),
        (description(3), "440100-2026-0000123-8"),
        (dataset_pb2.DatasetDescription(), ""),
    ],
)
def test_request_digest_is_that_of_the_normalized_request(
    dataset: dataset_pb2.DatasetDescription, dataset_id: str
) -> None:
    canonical = registry_pb2.RegisterDatasetRequest(dataset=dataset, dataset_id=dataset_id)
    expected = hashlib.sha256(canonical.SerializeToString(deterministic=True)).digest()
    assert request_digest(dataset, dataset_id) == expected


async def test_concurrent_unary_calls_share_groups_and_batches(env: Env) -> None:
    bundles = await asyncio.gather(
        *(env.issuance.register(NODE, request(f"u-{n}", description(n))) for n in range(60))
    )
    certificates = [env.verify(b) for b in bundles]
    assert sorted(DatasetId.parse(c.dataset_id).serial for c in certificates) == list(range(1, 61))
    assert len({b.checkpoint for b in bundles}) <= 3  # A few log batches, not 60.
    assert log_verifies(env)


async def test_a_cancelled_unary_call_keeps_its_key_until_its_group_is_answered(
    env: Env,
) -> None:
    first = asyncio.ensure_future(env.issuance.register(NODE, request("k-gone", description(1))))
    await asyncio.sleep(0)  # The call has joined a group.
    first.cancel()
    retried = await env.issuance.register(NODE, request("k-gone", description(1)))
    assert env.verify(retried).dataset.size_bytes == 1_001
    count = await env.writer.run(
        lambda conn: conn.execute(
            "SELECT count(*) FROM idempotency WHERE idempotency_key = 'k-gone'"
        ).fetchone()[0]
    )
    assert count == 1


async def test_a_chunk_cancelled_once_queued_keeps_its_ids(env: Env) -> None:
    sequencer = env.issuance._publisher._sequencer
    queued = asyncio.Event()
    append_group = sequencer.append_group

    async def noting(*args: Any) -> Any:
        queued.set()  # Seen by the test only once the group is in the queue (no await between).
        return await append_group(*args)

    sequencer.append_group = noting  # type: ignore[method-assign]
    chunk_task = asyncio.ensure_future(
        env.issuance.register_chunk(NODE, [request(f"c-{n}", description(n)) for n in range(20)])
    )
    await asyncio.wait_for(queued.wait(), 10)
    chunk_task.cancel()
    sequencer.append_group = append_group  # type: ignore[method-assign]
    later = await chunk(env, *(request(f"d-{n}", description(100 + n)) for n in range(5)))
    serials = [DatasetId.parse(env.verify(bundle(o)).dataset_id).serial for o in later]
    assert serials == list(range(21, 26))  # The cancelled chunk's 20 serials were logged.
    assert log_verifies(env)
