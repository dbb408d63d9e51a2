"""Signed documents: which protobuf message each DSSE payload type carries.

Every supervisory fact is a protobuf message serialized once, wrapped in a
DSSE envelope (:mod:`provex.envelope`) under a payload type that names the
message. :func:`sign_document` makes such an envelope; :func:`open_document`
verifies one and decodes its payload, raising VerificationError for every
failure, a payload that does not parse included.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from google.protobuf.message import DecodeError, Message

from provex import envelope as dsse
from provex.errors import VerificationError
from provex.v1 import (
    catalog_pb2,
    dataset_pb2,
    market_pb2,
    registry_pb2,
    supervision_pb2,
    trust_pb2,
)

DocumentT = TypeVar("DocumentT", bound=Message)

PAYLOAD_TYPES: Mapping[type[Message], str] = MappingProxyType(
    {
        trust_pb2.TrustRoot: "application/vnd.provex.trust-root+protobuf",
        dataset_pb2.DatasetCertificate: "application/vnd.provex.dataset-certificate+protobuf",
        dataset_pb2.StatusStatement: "application/vnd.provex.status-statement+protobuf",
        catalog_pb2.CatalogRelease: "application/vnd.provex.catalog-release+protobuf",
        registry_pb2.EnrollmentStatement: "application/vnd.provex.enrollment+protobuf",
        supervision_pb2.ExportPermit: "application/vnd.provex.export-permit+protobuf",
        supervision_pb2.RiskAssessmentDecision: "application/vnd.provex.risk-decision+protobuf",
        supervision_pb2.TradeRecord: "application/vnd.provex.trade-record+protobuf",
        market_pb2.ContractTerms: "application/vnd.provex.contract+protobuf",
    }
)

MESSAGE_TYPES: Mapping[str, type[Message]] = MappingProxyType(
    {payload_type: cls for cls, payload_type in PAYLOAD_TYPES.items()}
)


def payload_type_of(message_class: type[Message]) -> str:
    """The DSSE payload type of a document message class."""
    try:
        return PAYLOAD_TYPES[message_class]
    except KeyError:
        raise ValueError(f"{message_class.__name__} is not a signed document type") from None


def sign_document(
    document: Message, keys: Sequence[Ed25519PrivateKey | dsse.SigningKey]
) -> dsse.Envelope:
    """Serialize ``document`` once and sign those bytes with every key."""
    return dsse.sign(payload_type_of(type(document)), document.SerializeToString(), keys)


def decode_payload(payload: bytes, message_class: type[DocumentT]) -> DocumentT:
    """Parse a document's payload bytes; VerificationError when they do not parse."""
    try:
        return message_class.FromString(payload)
    except DecodeError as error:
        raise VerificationError(
            f"payload is not a valid {message_class.__name__}: {error}"
        ) from None


def open_document(
    envelope: dsse.Envelope,
    message_class: type[DocumentT],
    trusted_keys: Mapping[str, Ed25519PublicKey] | Iterable[Ed25519PublicKey],
    threshold: int = 1,
) -> DocumentT:
    """Verify ``envelope`` (payload type, signatures) and decode its document."""
    payload_type = PAYLOAD_TYPES.get(message_class) or payload_type_of(message_class)
    payload = dsse.verify(envelope, payload_type, trusted_keys, threshold)
    return decode_payload(payload, message_class)
