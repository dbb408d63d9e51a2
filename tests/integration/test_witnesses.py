"""Witnessing over the wire: nodes cosign the registry's checkpoint, everyone reads the result.

Two enrolled nodes cosign the latest checkpoint with SubmitCosignature (the
witness count grows, a repeat changes nothing); GetCheckpoint with
``with_cosignatures`` then serves a note that opens with both nodes as
witnesses, and without the flag the plain note. Bad submissions answer
INVALID_ARGUMENT or FAILED_PRECONDITION with a message naming the problem.
The authorization of the RPC is in test_authorization.py.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import grpc
import pytest

from provex import checkpoint as notes
from provex import envelope as dsse
from provex.v1 import registry_pb2, registry_pb2_grpc
from tests.integration.conftest import RunningRegistry
from tests.integration.test_enrollment import Node, enrolled_node, refused
from tests.integration.test_registry_server import load_trust_root

DEADLINE = 10.0


def cosigner(node: Node) -> notes.CosignatureSigner:
    return notes.CosignatureSigner(node.node_id, node.signing_key)


def witness(node: Node) -> notes.CosignatureVerifier:
    return notes.CosignatureVerifier(
        node.node_id, dsse.raw_public_key(node.signing_key.public_key())
    )


async def latest(registry: RunningRegistry, *, with_cosignatures: bool = False) -> str:
    async with registry.public_channel() as channel:
        response = await registry_pb2_grpc.LogServiceStub(channel).GetCheckpoint(
            registry_pb2.GetCheckpointRequest(with_cosignatures=with_cosignatures),
            timeout=DEADLINE,
        )
    return response.checkpoint


async def submit(registry: RunningRegistry, node: Node, note: str) -> int:
    async with node.channel(registry) as channel:
        response = await registry_pb2_grpc.LogServiceStub(channel).SubmitCosignature(
            registry_pb2.SubmitCosignatureRequest(checkpoint=note), timeout=DEADLINE
        )
    return response.witnesses


@pytest.fixture(scope="module")
async def nodes(registry: RunningRegistry, registry_state: tuple[Path, str]) -> tuple[Node, Node]:
    state, _ = registry_state
    return (
        await enrolled_node(registry, state, "wit-a", "440100"),
        await enrolled_node(registry, state, "wit-b", "310000"),
    )


async def test_two_nodes_cosign_and_everyone_reads_both(
    registry: RunningRegistry, nodes: tuple[Node, Node]
) -> None:
    a, b = nodes
    root = await load_trust_root(registry)
    note = await latest(registry)
    assert await submit(registry, a, notes.add_signature(note, cosigner(a))) == 1
    assert await submit(registry, a, notes.add_signature(note, cosigner(a))) == 1
    # B cosigns the note as served with A's cosignature: A's line is ignored, B's kept.
    cosigned = await latest(registry, with_cosignatures=True)
    assert await submit(registry, b, notes.add_signature(cosigned, cosigner(b))) == 2
    served = await latest(registry, with_cosignatures=True)
    verified = notes.open_checkpoint(
        served,
        root.log_verifier,
        origin=root.log_origin,
        witnesses=[witness(a), witness(b)],
        witness_threshold=2,
    )
    assert verified.cosigned_by == tuple(sorted((a.node_id, b.node_id)))
    assert notes.SignedNote.parse(served).text == notes.SignedNote.parse(note).text
    assert await latest(registry) == note  # Without the flag: the log's signature only.


async def test_bad_submissions_say_what_is_wrong(
    registry: RunningRegistry, nodes: tuple[Node, Node]
) -> None:
    a, _ = nodes
    note = await latest(registry)
    size = notes.Checkpoint.parse(notes.SignedNote.parse(note).text).size
    log = registry_pb2_grpc.LogServiceStub
    cases = {
        "": (grpc.StatusCode.INVALID_ARGUMENT, "checkpoint is required"),
        "not a note\n": (grpc.StatusCode.INVALID_ARGUMENT, "is not a signed note"),
        note: (grpc.StatusCode.FAILED_PRECONDITION, f"no cosignature of node {a.node_id}"),
    }
    # A checkpoint of the latest size the registry did not sign, cosigned by A.
    forged_log = notes.NoteSigner.generate(notes.SignedNote.parse(note).signatures[0].name)
    fork = notes.Checkpoint(forged_log.name, size, hashlib.sha256(b"fork").digest())
    forged = notes.add_signature(notes.sign_checkpoint(fork, forged_log), cosigner(a))
    cases[forged] = (grpc.StatusCode.FAILED_PRECONDITION, "differs from the one the registry")
    async with a.channel(registry) as channel:
        for text, (code, message) in cases.items():
            details = await refused(
                log(channel).SubmitCosignature(
                    registry_pb2.SubmitCosignatureRequest(checkpoint=text), timeout=DEADLINE
                ),
                code,
            )
            assert message in details, (text, details)
