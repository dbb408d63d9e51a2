"""Offline verification of a bundle: a signed, logged statement as the registry answers it.

A bundle (``provex.v1.Bundle``) carries the DSSE envelope exactly as it was
logged, its log index, an inclusion proof, and the signed checkpoint the proof
is against. Anyone holding the trust root checks, with no network:

1. the checkpoint is signed by the log key and has the log's origin;
2. the log index lies inside the checkpoint's tree;
3. SHA-256(0x00 ‖ envelope bytes) is included at that index (RFC 6962);
4. the envelope has the expected payload type and is signed by the issuer key
   (trust roots: by a threshold of the root keys);
5. the payload decodes as the expected document.

Every failure raises :class:`provex.errors.VerificationError`. Callers that
keep a checkpoint of their own additionally check consistency between the
two (``provex.merkle.verify_consistency``).

Many bundles share one checkpoint note (every bundle fetched at one tree
size), so step 1 is answered from :mod:`provex.checkpoint`'s memory of notes
already verified against the same log key and origin (keyed on the exact
note text); steps 2 to 5 run for every bundle. The trust root's keys are
loaded once per :class:`~provex.trust.TrustRoot`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf.message import Message

from provex import checkpoint as notes
from provex import documents, merkle
from provex import envelope as dsse
from provex.documents import DocumentT
from provex.errors import VerificationError
from provex.trust import TrustRoot
from provex.v1 import common_pb2, dataset_pb2, trust_pb2


@dataclass(frozen=True)
class VerifiedBundle(Generic[DocumentT]):
    """What a verified bundle proves: this document, signed, at this place in the log."""

    document: DocumentT
    envelope: dsse.Envelope
    entry: bytes
    log_index: int
    checkpoint: notes.Checkpoint
    checkpoint_note: str


def verify_bundle(
    bundle: common_pb2.Bundle, trust_root: TrustRoot, message_class: type[DocumentT]
) -> VerifiedBundle[DocumentT]:
    """Verify ``bundle`` against ``trust_root``; return its decoded document."""
    entry, note, log_index = bundle.envelope, bundle.checkpoint, bundle.log_index
    document, envelope, checkpoint = _verify(bundle, entry, note, trust_root, message_class)
    return VerifiedBundle(document, envelope, entry, log_index, checkpoint, note)


def document_signers(
    trust_root: TrustRoot, message_class: type[Message]
) -> tuple[Mapping[str, Ed25519PublicKey], int]:
    """The keys that sign ``message_class`` documents, and how many must: a threshold of
    the root keys for trust roots, the issuer key for everything else."""
    if message_class is trust_pb2.TrustRoot:
        return trust_root.root_public_keys, trust_root.root_threshold
    return trust_root.issuer_keys, 1


def verify_certificate(
    bundle: common_pb2.Bundle, trust_root: TrustRoot
) -> dataset_pb2.DatasetCertificate:
    """Verify a certificate bundle and return the dataset certificate it carries."""
    return _verify(
        bundle, bundle.envelope, bundle.checkpoint, trust_root, dataset_pb2.DatasetCertificate
    )[0]


def _verify(
    bundle: common_pb2.Bundle,
    entry: bytes,
    note: str,
    trust_root: TrustRoot,
    message_class: type[DocumentT],
) -> tuple[DocumentT, dsse.Envelope, notes.Checkpoint]:
    """Steps 1 to 5 for ``bundle`` (whose envelope and checkpoint note are given, read once)."""
    if not entry:
        raise VerificationError("bundle has no envelope")
    if not note:
        raise VerificationError("bundle has no checkpoint")
    checkpoint = notes.verify_checkpoint(
        note, trust_root.log_verifier, origin=trust_root.log_origin
    )
    log_index = bundle.log_index
    if log_index >= checkpoint.size:
        raise VerificationError(
            f"log index {log_index} is outside the checkpoint's tree of size {checkpoint.size}"
        )
    merkle.verify_inclusion(
        merkle.leaf_hash(entry),
        log_index,
        checkpoint.size,
        bundle.inclusion_proof[:],  # A list (faster than list() on a repeated field).
        checkpoint.root_hash,
    )
    envelope = dsse.Envelope.from_json(entry)
    keys, threshold = document_signers(trust_root, message_class)
    document = documents.open_document(envelope, message_class, keys, threshold)
    return document, envelope, checkpoint
