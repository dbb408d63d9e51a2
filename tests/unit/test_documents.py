"""Signed documents: payload types, signing, opening, malformed payloads."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from provex import documents
from provex import envelope as dsse
from provex.errors import VerificationError
from provex.v1 import common_pb2, dataset_pb2, supervision_pb2

ISSUER = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)


def test_payload_types_are_unique_and_invertible() -> None:
    assert len(set(documents.PAYLOAD_TYPES.values())) == len(documents.PAYLOAD_TYPES)
    for message_class, payload_type in documents.PAYLOAD_TYPES.items():
        assert documents.MESSAGE_TYPES[payload_type] is message_class
        assert payload_type.startswith("application/vnd.provex.")


def test_sign_and_open_a_certificate() -> None:
    certificate = dataset_pb2.DatasetCertificate(
        dataset_id="440100-2026-0000123-8", version=1, grade=common_pb2.GRADE_GENERAL
    )
    envelope = documents.sign_document(certificate, [ISSUER])
    assert envelope.payload == certificate.SerializeToString()
    opened = documents.open_document(
        envelope, dataset_pb2.DatasetCertificate, [ISSUER.public_key()]
    )
    assert opened == certificate


def test_opening_as_the_wrong_type_is_refused() -> None:
    envelope = documents.sign_document(dataset_pb2.DatasetCertificate(), [ISSUER])
    with pytest.raises(VerificationError, match="payload type"):
        documents.open_document(envelope, supervision_pb2.ExportPermit, [ISSUER.public_key()])


def test_garbage_payload_is_a_verification_error() -> None:
    payload_type = documents.payload_type_of(dataset_pb2.DatasetCertificate)
    envelope = dsse.sign(payload_type, b"\xff\xff\xff\xff", [ISSUER])
    with pytest.raises(VerificationError, match="not a valid DatasetCertificate"):
        documents.open_document(envelope, dataset_pb2.DatasetCertificate, [ISSUER.public_key()])


def test_only_document_types_can_be_signed() -> None:
    with pytest.raises(ValueError, match="not a signed document"):
        documents.sign_document(common_pb2.Money(fen=1), [ISSUER])
