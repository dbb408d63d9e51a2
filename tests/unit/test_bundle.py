"""Offline verification of bundles against the trust root, and every way one can be forged."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from provex import bundle as bundles
from provex import checkpoint as notes
from provex import documents, merkle, trust
from provex import envelope as dsse
from provex.errors import VerificationError
from provex.v1 import common_pb2, dataset_pb2, trust_pb2

NOW = datetime(2026, 11, 25, tzinfo=UTC)
ROOT_KEYS = [Ed25519PrivateKey.from_private_bytes(bytes([30 + i]) * 32) for i in range(3)]
ISSUER = Ed25519PrivateKey.from_private_bytes(b"\x41" * 32)
LOG = Ed25519PrivateKey.from_private_bytes(b"\x42" * 32)
ORIGIN = "provex.test/log"
TRUST_ROOT = trust.TrustRoot(
    version=1,
    trust_domain="provex.test",
    root_keys=tuple(dsse.raw_public_key(k.public_key()) for k in ROOT_KEYS),
    root_threshold=2,
    issuer_key=dsse.raw_public_key(ISSUER.public_key()),
    log_key=dsse.raw_public_key(LOG.public_key()),
    log_origin=ORIGIN,
    ca_certificate_pem="-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
    issued_at=NOW - timedelta(days=1),
    expires_at=NOW + timedelta(days=365),
)


def certificate(serial: int) -> dataset_pb2.DatasetCertificate:
    return dataset_pb2.DatasetCertificate(
        dataset_id=f"440100-2026-{serial:07d}-0", version=1, node_id="gd-gzde"
    )


@dataclass
class Log:
    """A tiny in-memory log, built the way the registry's sequencer does."""

    entries: list[bytes]

    def bundle(
        self, index: int, signer: Ed25519PrivateKey = LOG, origin: str = ORIGIN
    ) -> common_pb2.Bundle:
        leaves = [merkle.leaf_hash(e) for e in self.entries]
        note = notes.sign_checkpoint(
            notes.Checkpoint(origin, len(leaves), merkle.root(leaves)),
            notes.NoteSigner(origin, signer),
        )
        return common_pb2.Bundle(
            envelope=self.entries[index],
            log_index=index,
            inclusion_proof=merkle.inclusion_proof(leaves, index),
            checkpoint=note,
        )


def make_log() -> Log:
    entries = [documents.sign_document(certificate(i), [ISSUER]).to_json() for i in range(1, 7)]
    statement = dataset_pb2.StatusStatement(
        dataset_id="440100-2026-0000001-0", status=common_pb2.STATUS_SUSPENDED
    )
    entries.append(documents.sign_document(statement, [ISSUER]).to_json())
    entries.append(trust.sign_trust_root(TRUST_ROOT, ROOT_KEYS[:2]))
    entries.append(
        dsse.sign(
            documents.payload_type_of(dataset_pb2.DatasetCertificate), b"\xff\xff", [ISSUER]
        ).to_json()
    )
    entries.append(
        documents.sign_document(certificate(99), [Ed25519PrivateKey.generate()]).to_json()
    )
    return Log(entries)


LOG_UNDER_TEST = make_log()


@pytest.mark.parametrize("index", range(6))
def test_every_certificate_in_the_log_verifies(index: int) -> None:
    bundle = LOG_UNDER_TEST.bundle(index)
    verified = bundles.verify_bundle(bundle, TRUST_ROOT, dataset_pb2.DatasetCertificate)
    assert verified.document == certificate(index + 1)
    assert verified.log_index == index
    assert verified.checkpoint.size == len(LOG_UNDER_TEST.entries)
    assert bundles.verify_certificate(bundle, TRUST_ROOT) == certificate(index + 1)


def test_status_statements_and_trust_roots_verify_with_their_own_keys() -> None:
    statement = bundles.verify_bundle(
        LOG_UNDER_TEST.bundle(6), TRUST_ROOT, dataset_pb2.StatusStatement
    )
    assert statement.document.status == common_pb2.STATUS_SUSPENDED
    root = bundles.verify_bundle(LOG_UNDER_TEST.bundle(7), TRUST_ROOT, trust_pb2.TrustRoot)
    assert trust.TrustRoot.from_proto(root.document) == TRUST_ROOT


def _with(**changes: object) -> Callable[[], common_pb2.Bundle]:
    def build() -> common_pb2.Bundle:
        bundle = LOG_UNDER_TEST.bundle(2)
        for field, value in changes.items():
            if field == "inclusion_proof":
                del bundle.inclusion_proof[:]
                bundle.inclusion_proof.extend(value)  # type: ignore[arg-type]
            else:
                setattr(bundle, field, value)
        return bundle

    return build


def _flip(data: bytes, position: int) -> bytes:
    return data[:position] + bytes([data[position] ^ 1]) + data[position + 1 :]


GOOD = LOG_UNDER_TEST.bundle(2)
CORRUPTIONS: dict[str, Callable[[], common_pb2.Bundle]] = {
    "envelope byte flipped": _with(envelope=_flip(GOOD.envelope, 20)),
    "envelope of another entry": _with(envelope=LOG_UNDER_TEST.entries[3]),
    "no envelope": _with(envelope=b""),
    "log index moved": _with(log_index=3),
    "log index outside the tree": _with(log_index=len(LOG_UNDER_TEST.entries)),
    "proof element flipped": _with(
        inclusion_proof=[_flip(GOOD.inclusion_proof[0], 0), *GOOD.inclusion_proof[1:]]
    ),
    "proof truncated": _with(inclusion_proof=list(GOOD.inclusion_proof[:-1])),
    "proof extended": _with(inclusion_proof=[*GOOD.inclusion_proof, b"\x00" * 32]),
    "no checkpoint": _with(checkpoint=""),
    "checkpoint signed by another key": lambda: LOG_UNDER_TEST.bundle(2, signer=ISSUER),
    "checkpoint of another origin": lambda: LOG_UNDER_TEST.bundle(2, origin="evil.test/log"),
    "checkpoint body edited": _with(checkpoint=GOOD.checkpoint.replace("\n10\n", "\n11\n", 1)),
    "checkpoint signature stripped": _with(checkpoint=GOOD.checkpoint.split("\n\n")[0] + "\n\n"),
    "statement where a certificate is expected": lambda: LOG_UNDER_TEST.bundle(6),
    "trust root where a certificate is expected": lambda: LOG_UNDER_TEST.bundle(7),
    "payload that does not decode": lambda: LOG_UNDER_TEST.bundle(8),
    "certificate signed by a stranger": lambda: LOG_UNDER_TEST.bundle(9),
}


@pytest.mark.parametrize("forge", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_every_corruption_is_rejected(forge: Callable[[], common_pb2.Bundle]) -> None:
    with pytest.raises(VerificationError):
        bundles.verify_certificate(forge(), TRUST_ROOT)


def test_trust_root_entry_needs_the_root_threshold() -> None:
    weak = Log([trust.sign_trust_root(TRUST_ROOT, ROOT_KEYS[:1])])
    with pytest.raises(VerificationError, match="1 valid signature"):
        bundles.verify_bundle(weak.bundle(0), TRUST_ROOT, trust_pb2.TrustRoot)
    issuer_signed = Log([documents.sign_document(TRUST_ROOT.to_proto(), [ISSUER]).to_json()])
    with pytest.raises(VerificationError):
        bundles.verify_bundle(issuer_signed.bundle(0), TRUST_ROOT, trust_pb2.TrustRoot)


# ---------------------------------------------------------------- remembered checkpoints


def _flip_char(text: str, position: int) -> str:
    """``text`` with one character replaced by another of the same size (a tampered note)."""
    replacement = "B" if text[position] != "B" else "C"
    return text[:position] + replacement + text[position + 1 :]


def _tampered_notes() -> dict[str, str]:
    note = GOOD.checkpoint
    signature_at = note.rindex(" ") + 10  # inside the base64 of the log's signature
    return {
        "signature byte": _flip_char(note, signature_at),
        "root hash byte": _flip_char(note, note.index("\n", note.index("\n") + 1) + 5),
        "tree size digit": GOOD.checkpoint.replace("\n10\n", "\n11\n", 1),
        "origin letter": note.replace("provex.test", "provex.tesu", 1),
    }


@pytest.mark.parametrize("tampered", _tampered_notes().values(), ids=_tampered_notes().keys())
def test_a_remembered_note_does_not_vouch_for_a_tampered_one(tampered: str) -> None:
    assert len(tampered) == len(GOOD.checkpoint) and tampered != GOOD.checkpoint
    bundles.verify_certificate(GOOD, TRUST_ROOT)  # the genuine note is remembered now
    forged = _with(checkpoint=tampered)()
    for _ in range(2):  # refused every time: failures are not remembered
        with pytest.raises(VerificationError):
            bundles.verify_certificate(forged, TRUST_ROOT)
    assert bundles.verify_certificate(GOOD, TRUST_ROOT) == certificate(3)


def test_the_checkpoint_signature_is_checked_once_per_note() -> None:
    notes.forget_verified()
    before = notes.verified_memory()
    for _ in range(3):
        for index in range(6):  # six bundles, one checkpoint note
            bundles.verify_certificate(LOG_UNDER_TEST.bundle(index), TRUST_ROOT)
    after = notes.verified_memory()
    assert after.misses - before.misses == 1
    assert after.hits - before.hits == 17
    assert after.maxsize == notes.VERIFIED_CACHE_SIZE


def test_a_remembered_note_is_not_trusted_under_another_trust_root() -> None:
    bundles.verify_certificate(GOOD, TRUST_ROOT)
    other_log = Ed25519PrivateKey.from_private_bytes(b"\x43" * 32)
    other_root = replace(TRUST_ROOT, log_key=dsse.raw_public_key(other_log.public_key()))
    with pytest.raises(VerificationError, match="no signature by a known key"):
        bundles.verify_certificate(GOOD, other_root)
    elsewhere = replace(TRUST_ROOT, log_origin="provex.test/other-log")
    with pytest.raises(VerificationError):
        bundles.verify_certificate(GOOD, elsewhere)


@pytest.mark.parametrize(
    "forge",
    [CORRUPTIONS[name] for name in CORRUPTIONS if "checkpoint" not in name],
    ids=[name for name in CORRUPTIONS if "checkpoint" not in name],
)
def test_envelope_and_proof_are_checked_even_when_the_note_is_remembered(
    forge: Callable[[], common_pb2.Bundle],
) -> None:
    bundles.verify_certificate(GOOD, TRUST_ROOT)
    forged = forge()
    if forged.checkpoint:
        notes.verify_checkpoint(
            forged.checkpoint, TRUST_ROOT.log_verifier, origin=TRUST_ROOT.log_origin
        )  # this bundle's note is remembered as valid: the rest must still fail
    with pytest.raises(VerificationError):
        bundles.verify_certificate(forged, TRUST_ROOT)
