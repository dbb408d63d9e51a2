"""Tests of registry.witnesses: nodes' cosignatures of the log's checkpoints.

1. verify_submission: one table of refusals (each with its error class and
   message), built from real keys and notes (NoteSigner for the log,
   CosignatureSigner for the nodes); what an accepted cosignature keeps.
2. cosigned_note: the stored lines appended in canonical order, as a signed
   note that open_checkpoint accepts with the witnesses' keys.
3. WitnessBook over a real registry database and sequencer: witness counts,
   idempotent repeats, newer cosignatures replacing older ones, the cosigned
   latest checkpoint, durability across a reopen, nothing stored on a
   refusal, nothing logged.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from provex.checkpoint import (
    MAX_SIGNATURES,
    Checkpoint,
    CosignatureSigner,
    CosignatureVerifier,
    NoteSignature,
    NoteSigner,
    SignedNote,
    add_signature,
    open_checkpoint,
    sign_checkpoint,
)
from provex.envelope import raw_public_key
from provex.errors import (
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    ProvexError,
    VerificationError,
)
from registry.db import Database
from registry.schema import MIGRATIONS
from registry.transparency import Sequencer
from registry.witnesses import (
    MAX_CLOCK_SKEW,
    WitnessBook,
    WitnessCosignature,
    cosigned_note,
    parse_submission,
    verify_submission,
)

ORIGIN = "registry.provex.test/log"
NOW = 1_780_000_000
NODE_A = "gd-gzde"
NODE_B = "sh-shde"

LOG_KEY = Ed25519PrivateKey.generate()
KEY_A = Ed25519PrivateKey.generate()
KEY_B = Ed25519PrivateKey.generate()
LOG = NoteSigner(ORIGIN, LOG_KEY)
CHECKPOINT = Checkpoint(ORIGIN, 5, hashlib.sha256(b"five").digest())
STORED = sign_checkpoint(CHECKPOINT, LOG)


def cosigner(node_id: str, key: Ed25519PrivateKey, at: int = NOW) -> CosignatureSigner:
    return CosignatureSigner(node_id, key, clock=lambda: at)


def witness(node_id: str, key: Ed25519PrivateKey) -> CosignatureVerifier:
    return CosignatureVerifier(node_id, raw_public_key(key.public_key()))


A = cosigner(NODE_A, KEY_A)
B = cosigner(NODE_B, KEY_B)


def with_lines(note: str, *lines: NoteSignature) -> str:
    """``note``'s text with exactly the signature ``lines``."""
    return SignedNote(SignedNote.parse(note).text, lines).format()


def signature(note: str, name: str) -> NoteSignature:
    (found,) = [s for s in SignedNote.parse(note).signatures if s.name == name]
    return found


def corrupted(line: NoteSignature) -> NoteSignature:
    raw = bytearray(line.signature)
    raw[-1] ^= 0x01
    return NoteSignature(line.name, line.key_hash, bytes(raw))


# ---------------------------------------------------------------- 1. verify_submission


def _not_a_checkpoint() -> str:
    text = "hello\n"
    return SignedNote(
        text, (NoteSignature(ORIGIN, LOG.key_hash, LOG.sign(text.encode())),)
    ).format()


def _other_origin() -> str:
    other = NoteSigner("elsewhere/log", LOG_KEY)
    note = sign_checkpoint(Checkpoint("elsewhere/log", 5, CHECKPOINT.root_hash), other)
    return add_signature(note, A)


def _fork() -> str:
    # Signed by the real log key, but not the checkpoint the registry stored for size 5.
    note = sign_checkpoint(Checkpoint(ORIGIN, 5, hashlib.sha256(b"fork").digest()), LOG)
    return add_signature(note, A)


def _without_log_signature() -> str:
    return with_lines(STORED, signature(add_signature(STORED, A), NODE_A))


def _bad_log_signature() -> str:
    cosigned = add_signature(STORED, A)
    return with_lines(cosigned, corrupted(signature(cosigned, ORIGIN)), signature(cosigned, NODE_A))


def _other_key() -> str:
    return add_signature(STORED, cosigner(NODE_A, Ed25519PrivateKey.generate()))


def _note_key_type() -> str:
    # The enrolled key, but as a plain note key (type 0x01): another key hash.
    return add_signature(STORED, NoteSigner(NODE_A, KEY_A))


def _bad_cosignature() -> str:
    cosigned = add_signature(STORED, A)
    return with_lines(cosigned, signature(cosigned, ORIGIN), corrupted(signature(cosigned, NODE_A)))


def _grafted() -> str:
    # A's cosignature of another checkpoint, moved onto the stored one.
    other = sign_checkpoint(Checkpoint(ORIGIN, 6, CHECKPOINT.root_hash), LOG)
    return with_lines(STORED, signature(STORED, ORIGIN), signature(add_signature(other, A), NODE_A))


@dataclass(frozen=True)
class Refusal:
    note: Callable[[], str]
    error: type[ProvexError]
    message: str
    stored: str | None = STORED


REFUSALS = {
    "empty": Refusal(lambda: "", InvalidArgument, "checkpoint is required"),
    "not a signed note": Refusal(lambda: "5\nroot\n", InvalidArgument, "is not a signed note"),
    "no signature line": Refusal(
        lambda: CHECKPOINT.to_text() + "\n", InvalidArgument, "is not a signed note"
    ),
    "text not a checkpoint": Refusal(_not_a_checkpoint, InvalidArgument, "is not a checkpoint"),
    "another log origin": Refusal(_other_origin, VerificationError, "'elsewhere/log'"),
    "size never signed": Refusal(
        lambda: add_signature(STORED, A),
        VerificationError,
        "signed no checkpoint for tree size 5",
        None,
    ),
    "a fork of the stored checkpoint": Refusal(
        _fork, VerificationError, "differs from the one the registry signed"
    ),
    "no log signature": Refusal(
        _without_log_signature, VerificationError, "carries no signature of the log key"
    ),
    "invalid log signature": Refusal(_bad_log_signature, VerificationError, "does not verify"),
    "no cosignature": Refusal(
        lambda: STORED, FailedPrecondition, f"no cosignature of node {NODE_A}"
    ),
    "another node's cosignature": Refusal(
        lambda: add_signature(STORED, B),
        PermissionDenied,
        f"node {NODE_A} may submit only its own cosignature; the note carries cosignature "
        f"lines of {NODE_B}",
    ),
    "a key that is not the enrolled one": Refusal(_other_key, VerificationError, "key hash"),
    "the enrolled key as a note key": Refusal(_note_key_type, VerificationError, "key hash"),
    "corrupted cosignature": Refusal(_bad_cosignature, VerificationError, "does not verify"),
    "cosignature of another checkpoint": Refusal(_grafted, VerificationError, "does not verify"),
    "cosignature from the future": Refusal(
        lambda: add_signature(STORED, cosigner(NODE_A, KEY_A, NOW + MAX_CLOCK_SKEW + 1)),
        InvalidArgument,
        "ahead of the registry's clock",
    ),
}


def verify_as_a(note: str, stored: str | None = STORED) -> WitnessCosignature:
    return verify_submission(
        parse_submission(note),
        node_id=NODE_A,
        node_key=raw_public_key(KEY_A.public_key()),
        signed_note=stored,
        log_verifier=LOG.verifier(),
        now=NOW,
    )


@pytest.mark.parametrize("case", REFUSALS.values(), ids=REFUSALS.keys())
def test_refusals(case: Refusal) -> None:
    with pytest.raises(case.error) as raised:
        verify_as_a(case.note(), case.stored)
    assert case.message in str(raised.value)


def test_an_accepted_cosignature_keeps_the_callers_line_and_time() -> None:
    note = add_signature(STORED, A)
    assert verify_as_a(note) == WitnessCosignature(
        5, NODE_A, signature(note, NODE_A).to_line()[:-1], NOW
    )


def test_other_nodes_lines_are_ignored_and_a_small_skew_is_fine() -> None:
    late = cosigner(NODE_A, KEY_A, NOW + MAX_CLOCK_SKEW)
    note = add_signature(add_signature(STORED, B), late)
    accepted = verify_as_a(note)
    assert accepted.line == signature(note, NODE_A).to_line()[:-1]
    assert accepted.timestamp == NOW + MAX_CLOCK_SKEW


# ---------------------------------------------------------------- 2. cosigned_note


def line_of(signer: CosignatureSigner, note: str = STORED) -> str:
    return signature(add_signature(note, signer), signer.name).to_line()[:-1]


def test_cosigned_note_opens_with_every_witness() -> None:
    note = cosigned_note(STORED, [line_of(B), line_of(A)])
    verified = open_checkpoint(
        note,
        LOG.verifier(),
        origin=ORIGIN,
        witnesses=[witness(NODE_A, KEY_A), witness(NODE_B, KEY_B)],
        witness_threshold=2,
    )
    assert verified.checkpoint == CHECKPOINT
    assert verified.cosigned_by == (NODE_A, NODE_B)
    # The same bytes as the nodes' own canonical add_signature.
    assert note == add_signature(add_signature(STORED, B), A)


def test_cosigned_note_without_lines_is_the_note() -> None:
    assert cosigned_note(STORED, []) == STORED


def test_cosigned_note_skips_repeated_keys_and_stops_at_the_limit() -> None:
    signers = [cosigner(f"node-{n:03d}", Ed25519PrivateKey.generate()) for n in range(120)]
    lines = [line_of(s) for s in signers]
    note = cosigned_note(STORED, [lines[0], lines[0], *lines[1:]])
    parsed = SignedNote.parse(note)
    assert len(parsed.signatures) == MAX_SIGNATURES
    assert parsed.signatures[0].name == ORIGIN
    kept = [s.name for s in parsed.signatures[1:]]
    assert kept == [s.name for s in signers[: MAX_SIGNATURES - 1]]


# ---------------------------------------------------------------- 3. WitnessBook


@dataclass
class Registry:
    path: Path
    writer: Database
    reader: Database
    sequencer: Sequencer
    book: WitnessBook


def add_node(conn: sqlite3.Connection, node_id: str, key: Ed25519PrivateKey) -> None:
    conn.execute(
        "INSERT INTO nodes (node_id, region_code, display_name, peer_endpoint, status, "
        "signing_key, certificate_fingerprint, certificate_expires_at, enrolled_at, log_index) "
        "VALUES (?, '440100', ?, 'node:7600', 'active', ?, 'ff', '2030-01-01', '2026-01-01', 0)",
        (node_id, f"Exchange {node_id}", raw_public_key(key.public_key())),
    )


async def open_registry(path: Path, clock: int = NOW) -> Registry:
    writer = await Database.open(path, migrations=MIGRATIONS)
    reader = await Database.open(path, readonly=True, migrations=MIGRATIONS)
    sequencer = Sequencer(writer, LOG, ORIGIN, max_wait=0)
    await sequencer.start()
    book = WitnessBook(writer, reader, LOG.verifier(), clock=lambda: clock)
    return Registry(path, writer, reader, sequencer, book)


async def close_registry(registry: Registry) -> None:
    await registry.sequencer.stop()
    await registry.reader.close()
    await registry.writer.close()


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[Registry]:
    opened = await open_registry(tmp_path / "registry.db")
    await opened.sequencer.append(b"the enrollment of both nodes")
    await opened.writer.transaction(lambda conn: add_node(conn, NODE_A, KEY_A))
    await opened.writer.transaction(lambda conn: add_node(conn, NODE_B, KEY_B))
    await opened.sequencer.append(b"entry 1")
    yield opened
    await close_registry(opened)


async def stored_rows(registry: Registry) -> list[tuple[int, str, str, int]]:
    return await registry.reader.run(
        lambda conn: conn.execute(
            "SELECT size, node_id, signature_line, timestamp FROM cosignatures ORDER BY node_id"
        ).fetchall()
    )


async def test_witnesses_count_and_repeats_are_idempotent(registry: Registry) -> None:
    latest = registry.sequencer.checkpoint
    size = registry.sequencer.size
    assert await registry.book.submit(NODE_A, add_signature(latest, A)) == 1
    first = await stored_rows(registry)
    assert await registry.book.submit(NODE_A, add_signature(latest, A)) == 1
    assert await stored_rows(registry) == first
    assert await registry.book.submit(NODE_B, add_signature(latest, B)) == 2
    assert await registry.book.witnesses(size) == 2
    assert registry.sequencer.size == size  # Cosignatures are not logged.


async def test_a_newer_cosignature_replaces_an_older_one(registry: Registry) -> None:
    latest = registry.sequencer.checkpoint
    newer = cosigner(NODE_A, KEY_A, NOW - 10)
    older = cosigner(NODE_A, KEY_A, NOW - 100)
    await registry.book.submit(NODE_A, add_signature(latest, older))
    await registry.book.submit(NODE_A, add_signature(latest, newer))
    assert [row[3] for row in await stored_rows(registry)] == [NOW - 10]
    assert await registry.book.submit(NODE_A, add_signature(latest, older)) == 1
    ((_, _, line, timestamp),) = await stored_rows(registry)
    assert (line, timestamp) == (line_of(newer, latest), NOW - 10)


async def test_the_cosigned_checkpoint_is_the_latest_with_its_lines(registry: Registry) -> None:
    latest = registry.sequencer.checkpoint
    await registry.book.submit(NODE_A, add_signature(latest, A))
    await registry.book.submit(NODE_B, add_signature(latest, B))
    note = await registry.book.cosigned_checkpoint()
    verified = open_checkpoint(
        note,
        LOG.verifier(),
        origin=ORIGIN,
        witnesses=[witness(NODE_A, KEY_A), witness(NODE_B, KEY_B)],
        witness_threshold=2,
    )
    assert verified.cosigned_by == (NODE_A, NODE_B)
    assert SignedNote.parse(note).text == SignedNote.parse(latest).text
    # An older checkpoint may be cosigned too, but the latest is served.
    await registry.sequencer.append(b"entry 2")
    assert await registry.book.cosigned_checkpoint() == registry.sequencer.checkpoint
    await registry.book.submit(NODE_A, add_signature(latest, cosigner(NODE_A, KEY_A, NOW + 1)))
    assert await registry.book.cosigned_checkpoint() == registry.sequencer.checkpoint


async def test_cosignatures_survive_a_reopen(registry: Registry) -> None:
    latest = registry.sequencer.checkpoint
    await registry.book.submit(NODE_A, add_signature(latest, A))
    await close_registry(registry)  # Closing again in the fixture is harmless.
    reopened = await open_registry(registry.path)
    try:
        assert await reopened.book.cosigned_checkpoint() == add_signature(latest, A)
    finally:
        await close_registry(reopened)


def _unknown_node(latest: str) -> str:
    return add_signature(latest, cosigner("xx-none", KEY_A))


def _fork_of(latest: str) -> str:
    size = Checkpoint.parse(SignedNote.parse(latest).text).size
    forked = Checkpoint(ORIGIN, size, hashlib.sha256(b"fork").digest())
    return add_signature(sign_checkpoint(forked, LOG), A)


def _beyond(latest: str) -> str:
    return add_signature(sign_checkpoint(Checkpoint(ORIGIN, 99, CHECKPOINT.root_hash), LOG), A)


REFUSED_BY_THE_BOOK = {
    "an unknown node": (_unknown_node, "xx-none", PermissionDenied, "is not enrolled"),
    "a fork": (_fork_of, NODE_A, VerificationError, "differs from the one the registry signed"),
    "a size never signed": (_beyond, NODE_A, VerificationError, "no checkpoint for tree size 99"),
}


@pytest.mark.parametrize(
    "build, node_id, error, message", REFUSED_BY_THE_BOOK.values(), ids=REFUSED_BY_THE_BOOK.keys()
)
async def test_nothing_is_stored_on_a_refusal(
    registry: Registry,
    build: Callable[[str], str],
    node_id: str,
    error: type[ProvexError],
    message: str,
) -> None:
    with pytest.raises(error) as raised:
        await registry.book.submit(node_id, build(registry.sequencer.checkpoint))
    assert message in str(raised.value)
    assert await stored_rows(registry) == []
