"""Contracts: terms validation, the state machine, two-party signing, records."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from provex import contracts, documents
from provex import envelope as dsse
from provex.contracts import (
    AGREED,
    FINALIZED,
    PAYLOAD_TYPE,
    REQUESTED,
    TERMINATED,
    ContractRecord,
    Outcome,
    PublicKey,
    State,
)
from provex.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    ProvexError,
    VerificationError,
)
from provex.v1 import common_pb2, market_pb2

SELLER_KEY = Ed25519PrivateKey.from_private_bytes(bytes([11]) * 32)
BUYER_KEY = Ed25519PrivateKey.from_private_bytes(bytes([12]) * 32)
THIRD_KEY = Ed25519PrivateKey.from_private_bytes(bytes([13]) * 32)
SELLER_PUB = SELLER_KEY.public_key()
BUYER_PUB = BUYER_KEY.public_key()
THIRD_PUB = THIRD_KEY.public_key()

SELLER_CODE = "91440100MA5G00019C"  # CreditCode.from_parts("9", "1", "440100", "MA5G0001")
BUYER_CODE = "91310000MA1K00023H"  # CreditCode.from_parts("9", "1", "310000", "MA1K0002")
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
AGREED_AT = T0 + timedelta(hours=1)
T2 = T0 + timedelta(hours=2)
UNSPECIFIED = market_pb2.CONTRACT_STATE_UNSPECIFIED
UNKNOWN = market_pb2.ContractState.ValueType(99)


def make_terms() -> market_pb2.ContractTerms:
    """Valid, canonical proposed terms (no agreed_at)."""
    return market_pb2.ContractTerms(
        contract_id=contracts.contract_id_for("sh-sde", "request-1"),
        listing_id="L0123456789abcdef",
        dataset_id="440100-2026-0000123-8",
        certificate_version=1,
        content_digest=hashlib.sha256(b"the data").digest(),
        seller=SELLER_CODE,
        seller_node="gd-gzde",
        buyer=BUYER_CODE,
        buyer_node="sh-sde",
        buyer_country="CN",
        price=common_pb2.Money(fen=120_000),
        licence=market_pb2.LicenceTerms(purposes=["research", "planning"], term_days=365),
        purpose="traffic research for city planning",
    )


def with_agreed_at(terms: market_pb2.ContractTerms, moment: datetime) -> market_pb2.ContractTerms:
    stamped = market_pb2.ContractTerms()
    stamped.CopyFrom(terms)
    stamped.agreed_at.FromDatetime(moment)
    return stamped


TERMS = make_terms()
SIGNED_TERMS = with_agreed_at(TERMS, AGREED_AT)
AGREED_ENV = contracts.seller_sign(TERMS, SELLER_KEY, agreed_at=AGREED_AT)
FINAL_ENV = contracts.buyer_countersign(AGREED_ENV, TERMS, BUYER_KEY, seller_public_key=SELLER_PUB)
PAYLOAD = dsse.Envelope.from_json(FINAL_ENV).payload


def both_signed(payload: bytes, payload_type: str = PAYLOAD_TYPE) -> bytes:
    """A correctly ordered, correctly signed envelope over arbitrary payload bytes."""
    return dsse.sign(payload_type, payload, [SELLER_KEY, BUYER_KEY]).to_json()


def seller_signed(payload: bytes, payload_type: str = PAYLOAD_TYPE) -> bytes:
    return dsse.sign(payload_type, payload, [SELLER_KEY]).to_json()


def field_named(message: str, field: str) -> bool:
    """True if ``message`` starts with ``field`` as a whole field name."""
    return re.match(re.escape(field) + r"(?![\w.\[])", message) is not None


# ---------------------------------------------------------------------------
# Terms
# ---------------------------------------------------------------------------


def test_contract_terms_are_a_registered_signed_document() -> None:
    assert documents.payload_type_of(market_pb2.ContractTerms) == PAYLOAD_TYPE
    assert PAYLOAD_TYPE == "application/vnd.provex.contract+protobuf"
    assert documents.MESSAGE_TYPES[PAYLOAD_TYPE] is market_pb2.ContractTerms


def test_valid_terms_are_returned_unchanged_as_a_copy() -> None:
    terms = make_terms()
    validated = contracts.validate_terms(terms)
    assert validated == terms
    assert validated is not terms
    validated.price.fen = 1
    assert terms.price.fen == 120_000


def test_terms_are_normalized() -> None:
    terms = make_terms()
    terms.contract_id = " " + terms.contract_id.upper() + " "
    terms.listing_id = "l0123456789ABCDEF"
    terms.dataset_id = " 440100-2026-0000123-8 "
    terms.seller = SELLER_CODE.lower()
    terms.buyer = f" {BUYER_CODE} "
    terms.buyer_country = " hk "
    terms.export_permit_id = " EP-2026-0001 "
    terms.purpose = "  traffic research  "
    terms.licence.purposes[0] = " research "
    validated = contracts.validate_terms(terms)
    assert validated.contract_id == TERMS.contract_id
    assert validated.listing_id == "L0123456789abcdef"
    assert validated.dataset_id == "440100-2026-0000123-8"
    assert (validated.seller, validated.buyer) == (SELLER_CODE, BUYER_CODE)
    assert validated.buyer_country == "HK"
    assert validated.export_permit_id == "EP-2026-0001"
    assert validated.purpose == "traffic research"
    assert list(validated.licence.purposes) == ["research", "planning"]


def test_unknown_fields_are_dropped() -> None:
    terms = market_pb2.ContractTerms()
    terms.ParseFromString(TERMS.SerializeToString() + b"\x98\x06\x01")  # field 99 = 1
    assert terms.SerializeToString() != TERMS.SerializeToString()
    assert contracts.validate_terms(terms).SerializeToString() == TERMS.SerializeToString()


def _set(name: str, value: object) -> Callable[[market_pb2.ContractTerms], None]:
    def mutate(terms: market_pb2.ContractTerms) -> None:
        target: object = terms
        *path, last = name.split(".")
        for part in path:
            target = getattr(target, part)
        setattr(target, last, value)

    return mutate


def _clear(name: str) -> Callable[[market_pb2.ContractTerms], None]:
    return lambda terms: terms.ClearField(name)  # type: ignore[arg-type]


def _purposes(*purposes: str) -> Callable[[market_pb2.ContractTerms], None]:
    def mutate(terms: market_pb2.ContractTerms) -> None:
        del terms.licence.purposes[:]
        terms.licence.purposes.extend(purposes)

    return mutate


def _foreign_permit(permit: str) -> Callable[[market_pb2.ContractTerms], None]:
    def mutate(terms: market_pb2.ContractTerms) -> None:
        terms.buyer_country = "US"
        terms.export_permit_id = permit

    return mutate


def _agreed_at(seconds: int, nanos: int = 0) -> Callable[[market_pb2.ContractTerms], None]:
    def mutate(terms: market_pb2.ContractTerms) -> None:
        terms.agreed_at.seconds = seconds
        terms.agreed_at.nanos = nanos

    return mutate


VALIDATION_CASES: dict[str, tuple[Callable[[market_pb2.ContractTerms], None], str]] = {
    "contract id missing": (_set("contract_id", ""), "contract_id"),
    "contract id of 31 hex digits": (_set("contract_id", "C" + "0" * 31), "contract_id"),
    "contract id of 33 hex digits": (_set("contract_id", "C" + "0" * 33), "contract_id"),
    "contract id with another prefix": (_set("contract_id", "X" + "0" * 32), "contract_id"),
    "contract id not hex": (_set("contract_id", "C" + "g" * 32), "contract_id"),
    "listing id missing": (_set("listing_id", ""), "listing_id"),
    "listing id malformed": (_set("listing_id", "L123"), "listing_id"),
    "dataset id missing": (_set("dataset_id", ""), "dataset_id"),
    "dataset id with a wrong check": (_set("dataset_id", "440100-2026-0000123-7"), "dataset_id"),
    "dataset id malformed": (_set("dataset_id", "ds-1"), "dataset_id"),
    "certificate version 0": (_set("certificate_version", 0), "certificate_version"),
    "content digest missing": (_set("content_digest", b""), "content_digest"),
    "content digest of 31 bytes": (_set("content_digest", b"\x01" * 31), "content_digest"),
    "content digest of 33 bytes": (_set("content_digest", b"\x01" * 33), "content_digest"),
    "seller missing": (_set("seller", ""), "seller"),
    "seller with a wrong check": (_set("seller", SELLER_CODE[:-1] + "D"), "seller"),
    "seller too short": (_set("seller", SELLER_CODE[:-1]), "seller"),
    "buyer missing": (_set("buyer", ""), "buyer"),
    "buyer with a forbidden letter": (_set("buyer", "I" + BUYER_CODE[1:]), "buyer"),
    "buyer is the seller": (_set("buyer", SELLER_CODE), "buyer"),
    "seller node missing": (_set("seller_node", ""), "seller_node"),
    "seller node upper case": (_set("seller_node", "GD-GZDE"), "seller_node"),
    "buyer node missing": (_set("buyer_node", ""), "buyer_node"),
    "buyer node starting with a digit": (_set("buyer_node", "1sh-sde"), "buyer_node"),
    "buyer node ending with a hyphen": (_set("buyer_node", "sh-sde-"), "buyer_node"),
    "buyer country missing": (_set("buyer_country", ""), "buyer_country"),
    "buyer country of three letters": (_set("buyer_country", "CHN"), "buyer_country"),
    "buyer country of digits": (_set("buyer_country", "86"), "buyer_country"),
    "price missing": (_clear("price"), "price"),
    "price negative": (_set("price.fen", -1), "price.fen"),
    "price above the ceiling": (_set("price.fen", contracts.MAX_PRICE_FEN + 1), "price.fen"),
    "licence missing": (_clear("licence"), "licence"),
    "licence without purposes": (_purposes(), "licence.purposes"),
    "licence with too many purposes": (
        _purposes(*(f"p{i}" for i in range(contracts.MAX_LICENCE_PURPOSES + 1))),
        "licence.purposes",
    ),
    "licence with a blank purpose": (_purposes("research", "  "), "licence.purposes[1]"),
    "licence with a control character": (_purposes("re\x00search"), "licence.purposes[0]"),
    "licence with a long purpose": (
        _purposes("x" * (contracts.MAX_LICENCE_PURPOSE + 1)),
        "licence.purposes[0]",
    ),
    "licence with a purpose twice": (_purposes("research", " research"), "licence.purposes"),
    "licence term of 0 days": (_set("licence.term_days", 0), "licence.term_days"),
    "licence term over ten years": (
        _set("licence.term_days", contracts.MAX_TERM_DAYS + 1),
        "licence.term_days",
    ),
    "purpose missing": (_set("purpose", ""), "purpose"),
    "purpose blank": (_set("purpose", " \t "), "purpose"),
    "purpose too long": (_set("purpose", "x" * (contracts.MAX_PURPOSE + 1)), "purpose"),
    "purpose with a control character": (_set("purpose", "a\x07b"), "purpose"),
    "export permit for a domestic buyer": (_set("export_permit_id", "EP-1"), "export_permit_id"),
    "export permit with a space": (_foreign_permit("EP 1"), "export_permit_id"),
    "export permit too long": (
        _foreign_permit("E" * (contracts.MAX_EXPORT_PERMIT_ID + 1)),
        "export_permit_id",
    ),
    "agreed at the epoch": (_agreed_at(0), "agreed_at"),
    "agreed at with invalid nanos": (_agreed_at(1_700_000_000, 2_000_000_000), "agreed_at"),
    "agreed after year 9999": (_agreed_at(253_402_300_800), "agreed_at"),
}


@pytest.mark.parametrize(
    ("mutate", "field"), VALIDATION_CASES.values(), ids=VALIDATION_CASES.keys()
)
def test_invalid_terms_are_refused_naming_the_field(
    mutate: Callable[[market_pb2.ContractTerms], None], field: str
) -> None:
    terms = make_terms()
    mutate(terms)
    with pytest.raises(InvalidArgument) as refused:
        contracts.validate_terms(terms)
    assert field_named(str(refused.value), field), str(refused.value)


def test_foreign_buyer_may_rely_on_an_export_permit() -> None:
    terms = make_terms()
    _foreign_permit("EP-2026-0001")(terms)
    assert contracts.validate_terms(terms).export_permit_id == "EP-2026-0001"


# ---------------------------------------------------------------------------
# Contract ids
# ---------------------------------------------------------------------------


def test_contract_id_is_deterministic_and_documented() -> None:
    expected = "C" + hashlib.sha256(b"provex/contract-id/v1\nsh-sde\nrequest-1").hexdigest()[:32]
    assert contracts.contract_id_for("sh-sde", "request-1") == expected
    assert contracts.contract_id_for("sh-sde", "request-1") == expected
    assert re.fullmatch(r"C[0-9a-f]{32}", expected)
    assert contracts.normalize_contract_id(expected.upper()) == expected


ID_PAIRS: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "another key": (("sh-sde", "request-1"), ("sh-sde", "request-2")),
    "another node": (("sh-sde", "request-1"), ("gd-gzde", "request-1")),
    "key case matters": (("sh-sde", "Request-1"), ("sh-sde", "request-1")),
    "key white space matters": (("sh-sde", "request-1 "), ("sh-sde", "request-1")),
    "node and key do not run together": (("sh-sde", "x-y"), ("sh-sde-x", "y")),
}


@pytest.mark.parametrize(("one", "other"), ID_PAIRS.values(), ids=ID_PAIRS.keys())
def test_different_requests_get_different_ids(one: tuple[str, str], other: tuple[str, str]) -> None:
    assert contracts.contract_id_for(*one) != contracts.contract_id_for(*other)


ID_REFUSALS: dict[str, tuple[str, str, str]] = {
    "node id missing": ("", "k", "buyer_node"),
    "node id upper case": ("SH-SDE", "k", "buyer_node"),
    "key missing": ("sh-sde", "", "idempotency_key"),
    "key blank": ("sh-sde", "   ", "idempotency_key"),
    "key too long": ("sh-sde", "k" * (contracts.MAX_IDEMPOTENCY_KEY + 1), "idempotency_key"),
    "key with a control character": ("sh-sde", "a\x00b", "idempotency_key"),
}


@pytest.mark.parametrize(("node", "key", "field"), ID_REFUSALS.values(), ids=ID_REFUSALS.keys())
def test_contract_id_refusals_name_the_field(node: str, key: str, field: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        contracts.contract_id_for(node, key)
    assert field_named(str(refused.value), field), str(refused.value)


# ---------------------------------------------------------------------------
# States
# ---------------------------------------------------------------------------

# (current, target) -> None when allowed, else the rule that refuses it.
TRANSITIONS: dict[str, tuple[State, State, str | None]] = {
    "requested -> requested": (REQUESTED, REQUESTED, "no-repeat"),
    "requested -> agreed": (REQUESTED, AGREED, None),
    "requested -> finalized": (REQUESTED, FINALIZED, "agree-before-finalize"),
    "requested -> terminated": (REQUESTED, TERMINATED, None),
    "agreed -> requested": (AGREED, REQUESTED, "no-way-back"),
    "agreed -> agreed": (AGREED, AGREED, "no-repeat"),
    "agreed -> finalized": (AGREED, FINALIZED, None),
    "agreed -> terminated": (AGREED, TERMINATED, None),
    "finalized -> requested": (FINALIZED, REQUESTED, "final"),
    "finalized -> agreed": (FINALIZED, AGREED, "final"),
    "finalized -> finalized": (FINALIZED, FINALIZED, "final"),
    "finalized -> terminated": (FINALIZED, TERMINATED, "final"),
    "terminated -> requested": (TERMINATED, REQUESTED, "final"),
    "terminated -> agreed": (TERMINATED, AGREED, "final"),
    "terminated -> finalized": (TERMINATED, FINALIZED, "final"),
    "terminated -> terminated": (TERMINATED, TERMINATED, "final"),
}


@pytest.mark.parametrize(
    ("current", "target", "rule"), TRANSITIONS.values(), ids=TRANSITIONS.keys()
)
def test_transitions(current: State, target: State, rule: str | None) -> None:
    assert contracts.can_transition(current, target) is (rule is None)
    if rule is None:
        assert contracts.transition(current, target) == target
    else:
        with pytest.raises(FailedPrecondition, match=f"contract state rule {rule}:"):
            contracts.transition(current, target)


NOT_STATES: dict[str, tuple[State, State]] = {
    "from unspecified": (UNSPECIFIED, AGREED),
    "to unspecified": (REQUESTED, UNSPECIFIED),
    "from an unknown number": (UNKNOWN, AGREED),
    "to an unknown number": (AGREED, UNKNOWN),
}


@pytest.mark.parametrize(("current", "target"), NOT_STATES.values(), ids=NOT_STATES.keys())
def test_values_that_are_no_state_are_invalid_arguments(current: State, target: State) -> None:
    with pytest.raises(InvalidArgument, match=r"^state "):
        contracts.transition(current, target)
    with pytest.raises(InvalidArgument, match=r"^state "):
        contracts.can_transition(current, target)


def test_final_states() -> None:
    finals = {s for s in (REQUESTED, AGREED, FINALIZED, TERMINATED) if contracts.is_final(s)}
    assert finals == {FINALIZED, TERMINATED}
    assert [contracts.state_name(s) for s in (REQUESTED, AGREED, FINALIZED, TERMINATED)] == [
        "requested",
        "agreed",
        "finalized",
        "terminated",
    ]


# ---------------------------------------------------------------------------
# Signing
# ---------------------------------------------------------------------------


def test_two_party_signing_end_to_end() -> None:
    seller_view = contracts.verify_seller_signature(AGREED_ENV, SELLER_PUB, TERMS)
    assert seller_view == SIGNED_TERMS
    assert contracts.verify_seller_signature(AGREED_ENV, SELLER_PUB) == SIGNED_TERMS
    final = contracts.verify_contract(FINAL_ENV, SELLER_PUB, BUYER_PUB, TERMS)
    assert final == SIGNED_TERMS
    # Raw public keys work as well, and the fully stamped terms as expectation.
    raw_seller, raw_buyer = dsse.raw_public_key(SELLER_PUB), dsse.raw_public_key(BUYER_PUB)
    assert contracts.verify_contract(FINAL_ENV, raw_seller, raw_buyer, SIGNED_TERMS) == final
    # One payload, serialized once by the seller; the seller's signature first.
    agreed, finalized = dsse.Envelope.from_json(AGREED_ENV), dsse.Envelope.from_json(FINAL_ENV)
    assert finalized.payload == agreed.payload == SIGNED_TERMS.SerializeToString()
    assert finalized.signatures[0] == agreed.signatures[0]
    assert [s.keyid for s in finalized.signatures] == [
        dsse.key_id(SELLER_PUB),
        dsse.key_id(BUYER_PUB),
    ]
    # Any DSSE verifier holding both keys accepts the contract.
    opened = documents.open_document(
        finalized, market_pb2.ContractTerms, [SELLER_PUB, BUYER_PUB], threshold=2
    )
    assert opened == SIGNED_TERMS


def test_signing_is_deterministic_and_accepts_signing_keys() -> None:
    assert contracts.seller_sign(TERMS, SELLER_KEY, agreed_at=AGREED_AT) == AGREED_ENV
    assert contracts.seller_sign(SIGNED_TERMS, dsse.SigningKey.of(SELLER_KEY)) == AGREED_ENV
    again = contracts.buyer_countersign(
        AGREED_ENV, SIGNED_TERMS, dsse.SigningKey.of(BUYER_KEY), seller_public_key=SELLER_PUB
    )
    assert again == FINAL_ENV


def test_seller_signs_validated_canonical_terms() -> None:
    terms = make_terms()
    terms.buyer = BUYER_CODE.lower()
    signed = contracts.verify_seller_signature(
        contracts.seller_sign(terms, SELLER_KEY, agreed_at=AGREED_AT), SELLER_PUB
    )
    assert signed == SIGNED_TERMS


SIGNING_REFUSALS: dict[str, tuple[Callable[[], object], type[ProvexError], str]] = {
    "seller signs without agreed_at": (
        lambda: contracts.seller_sign(TERMS, SELLER_KEY),
        InvalidArgument,
        "agreed_at",
    ),
    "seller signs with a naive agreed_at": (
        lambda: contracts.seller_sign(TERMS, SELLER_KEY, agreed_at=datetime(2026, 3, 1)),
        InvalidArgument,
        "agreed_at",
    ),
    "seller signs invalid terms": (
        lambda: contracts.seller_sign(market_pb2.ContractTerms(), SELLER_KEY, agreed_at=T0),
        InvalidArgument,
        "contract_id",
    ),
    "buyer countersigns under the wrong seller key": (
        lambda: contracts.buyer_countersign(
            AGREED_ENV, TERMS, BUYER_KEY, seller_public_key=THIRD_PUB
        ),
        VerificationError,
        "the seller's",
    ),
    "buyer countersigns other terms": (
        lambda: contracts.buyer_countersign(
            seller_signed(with_price(SIGNED_TERMS, 1).SerializeToString()),
            TERMS,
            BUYER_KEY,
            seller_public_key=SELLER_PUB,
        ),
        VerificationError,
        "differ",
    ),
    "buyer countersigns twice": (
        lambda: contracts.buyer_countersign(
            FINAL_ENV, TERMS, BUYER_KEY, seller_public_key=SELLER_PUB
        ),
        VerificationError,
        "exactly one signature",
    ),
    "buyer countersigns with the seller's key": (
        lambda: contracts.buyer_countersign(
            AGREED_ENV, TERMS, SELLER_KEY, seller_public_key=SELLER_PUB
        ),
        VerificationError,
        "two parties",
    ),
}


@pytest.mark.parametrize(
    ("call", "error", "match"), SIGNING_REFUSALS.values(), ids=SIGNING_REFUSALS.keys()
)
def test_signing_refusals(call: Callable[[], object], error: type[ProvexError], match: str) -> None:
    with pytest.raises(error, match=match):
        call()


def with_price(terms: market_pb2.ContractTerms, fen: int) -> market_pb2.ContractTerms:
    changed = market_pb2.ContractTerms()
    changed.CopyFrom(terms)
    changed.price.fen = fen
    return changed


def _reorder(data: bytes) -> bytes:
    parsed = dsse.Envelope.from_json(data)
    return dsse.Envelope(parsed.payload_type, parsed.payload, parsed.signatures[::-1]).to_json()


def _flip_sig(data: bytes, index: int) -> bytes:
    parsed = dsse.Envelope.from_json(data)
    signatures = list(parsed.signatures)
    sig = signatures[index]
    signatures[index] = dsse.Signature(sig.keyid, sig.sig[:-1] + bytes([sig.sig[-1] ^ 1]))
    return dsse.Envelope(parsed.payload_type, parsed.payload, tuple(signatures)).to_json()


def _with_payload(data: bytes, payload: bytes) -> bytes:
    parsed = dsse.Envelope.from_json(data)
    return dsse.Envelope(parsed.payload_type, payload, parsed.signatures).to_json()


def _with_type(data: bytes, payload_type: str) -> bytes:
    parsed = dsse.Envelope.from_json(data)
    return dsse.Envelope(payload_type, parsed.payload, parsed.signatures).to_json()


def _non_canonical_base64(data: bytes) -> bytes:
    """The same envelope with unused bits set in the last base64 digit of the buyer's signature."""
    document = json.loads(data)
    text = document["signatures"][1]["sig"]
    assert text.endswith("==")  # 64 bytes: the last digit carries 2 bits and 4 unused ones
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    odd = alphabet[alphabet.index(text[-3]) ^ 1]
    document["signatures"][1]["sig"] = text[:-3] + odd + "=="
    assert base64.b64decode(document["signatures"][1]["sig"]) == base64.b64decode(text)
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _unknown_field_payload() -> bytes:
    return SIGNED_TERMS.SerializeToString() + b"\x98\x06\x01"


def _without_price() -> bytes:
    terms = market_pb2.ContractTerms()
    terms.CopyFrom(SIGNED_TERMS)
    terms.ClearField("price")
    return terms.SerializeToString()


def _other_contract() -> bytes:
    other = make_terms()
    other.contract_id = contracts.contract_id_for("sh-sde", "request-2")
    return both_signed(with_agreed_at(other, AGREED_AT).SerializeToString())


# name -> (envelope, seller key, buyer key, expected terms)
Corruption = tuple[bytes, PublicKey, PublicKey, market_pb2.ContractTerms | None]
CORRUPTIONS: dict[str, Callable[[], Corruption]] = {
    "buyer's signature missing": lambda: (AGREED_ENV, SELLER_PUB, BUYER_PUB, None),
    "seller's signature missing": lambda: (
        dsse.sign(PAYLOAD_TYPE, PAYLOAD, [BUYER_KEY]).to_json(),
        SELLER_PUB,
        BUYER_PUB,
        None,
    ),
    "a third party signed instead of the seller": lambda: (
        dsse.sign(PAYLOAD_TYPE, PAYLOAD, [THIRD_KEY, BUYER_KEY]).to_json(),
        SELLER_PUB,
        BUYER_PUB,
        None,
    ),
    "no signature": lambda: (
        dsse.Envelope(PAYLOAD_TYPE, PAYLOAD, ()).to_json(),
        SELLER_PUB,
        BUYER_PUB,
        None,
    ),
    "keys swapped": lambda: (FINAL_ENV, BUYER_PUB, SELLER_PUB, None),
    "signatures in the wrong order": lambda: (_reorder(FINAL_ENV), SELLER_PUB, BUYER_PUB, None),
    "a third party signed instead of the buyer": lambda: (
        contracts.buyer_countersign(AGREED_ENV, TERMS, THIRD_KEY, seller_public_key=SELLER_PUB),
        SELLER_PUB,
        BUYER_PUB,
        None,
    ),
    "a third party's signature added": lambda: (
        dsse.add_signatures(dsse.Envelope.from_json(FINAL_ENV), [THIRD_KEY]).to_json(),
        SELLER_PUB,
        BUYER_PUB,
        None,
    ),
    "the seller signed twice": lambda: (
        dsse.sign(PAYLOAD_TYPE, PAYLOAD, [SELLER_KEY, SELLER_KEY]).to_json(),
        SELLER_PUB,
        SELLER_PUB,
        None,
    ),
    "seller's signature broken": lambda: (_flip_sig(FINAL_ENV, 0), SELLER_PUB, BUYER_PUB, None),
    "buyer's signature broken": lambda: (_flip_sig(FINAL_ENV, 1), SELLER_PUB, BUYER_PUB, None),
    "payload altered after signing": lambda: (
        _with_payload(FINAL_ENV, with_price(SIGNED_TERMS, 1).SerializeToString()),
        SELLER_PUB,
        BUYER_PUB,
        None,
    ),
    "payload truncated after signing": lambda: (
        _with_payload(FINAL_ENV, PAYLOAD[:-1]),
        SELLER_PUB,
        BUYER_PUB,
        None,
    ),
    "payload type changed after signing": lambda: (
        _with_type(FINAL_ENV, "application/vnd.provex.trade-record+protobuf"),
        SELLER_PUB,
        BUYER_PUB,
        None,
    ),
    "signed under another document's payload type": lambda: (
        both_signed(PAYLOAD, "application/vnd.provex.trade-record+protobuf"),
        SELLER_PUB,
        BUYER_PUB,
        None,
    ),
    "signed payload that is no ContractTerms": lambda: (
        both_signed(b"\xff\xff\xff"),
        SELLER_PUB,
        BUYER_PUB,
        None,
    ),
    "signed terms that are invalid": lambda: (
        both_signed(_without_price()),
        SELLER_PUB,
        BUYER_PUB,
        None,
    ),
    "signed terms with an unknown field": lambda: (
        both_signed(_unknown_field_payload()),
        SELLER_PUB,
        BUYER_PUB,
        None,
    ),
    "signed terms without agreed_at": lambda: (
        both_signed(TERMS.SerializeToString()),
        SELLER_PUB,
        BUYER_PUB,
        None,
    ),
    "terms differ from the expected ones": lambda: (
        FINAL_ENV,
        SELLER_PUB,
        BUYER_PUB,
        with_price(TERMS, 99),
    ),
    "agreed at another time than expected": lambda: (
        FINAL_ENV,
        SELLER_PUB,
        BUYER_PUB,
        with_agreed_at(TERMS, T2),
    ),
    "another contract than expected": lambda: (_other_contract(), SELLER_PUB, BUYER_PUB, TERMS),
    "expected terms invalid": lambda: (
        FINAL_ENV,
        SELLER_PUB,
        BUYER_PUB,
        market_pb2.ContractTerms(),
    ),
    "white space in the JSON": lambda: (
        json.dumps(json.loads(FINAL_ENV), sort_keys=True, indent=1).encode(),
        SELLER_PUB,
        BUYER_PUB,
        None,
    ),
    "non-canonical base64": lambda: (
        _non_canonical_base64(FINAL_ENV),
        SELLER_PUB,
        BUYER_PUB,
        None,
    ),
    "not JSON": lambda: (b"not json", SELLER_PUB, BUYER_PUB, None),
    "empty": lambda: (b"", SELLER_PUB, BUYER_PUB, None),
    "seller key malformed": lambda: (FINAL_ENV, b"\x01" * 31, BUYER_PUB, None),
    "buyer key malformed": lambda: (FINAL_ENV, SELLER_PUB, b"", None),
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_every_corruption_of_a_contract_is_rejected(corrupt: Callable[[], Corruption]) -> None:
    envelope, seller, buyer, expected = corrupt()
    with pytest.raises(VerificationError):
        contracts.verify_contract(envelope, seller, buyer, expected)


SELLER_CORRUPTIONS: dict[str, Callable[[], tuple[bytes, PublicKey]]] = {
    "signed by the buyer": lambda: (
        dsse.sign(PAYLOAD_TYPE, PAYLOAD, [BUYER_KEY]).to_json(),
        SELLER_PUB,
    ),
    "checked with the buyer's key": lambda: (AGREED_ENV, BUYER_PUB),
    "two signatures": lambda: (FINAL_ENV, SELLER_PUB),
    "no signature": lambda: (dsse.Envelope(PAYLOAD_TYPE, PAYLOAD, ()).to_json(), SELLER_PUB),
    "signature broken": lambda: (_flip_sig(AGREED_ENV, 0), SELLER_PUB),
    "payload altered": lambda: (
        _with_payload(AGREED_ENV, with_price(SIGNED_TERMS, 1).SerializeToString()),
        SELLER_PUB,
    ),
    "wrong payload type": lambda: (
        seller_signed(PAYLOAD, "application/vnd.provex.trade-record+protobuf"),
        SELLER_PUB,
    ),
    "terms without agreed_at": lambda: (seller_signed(TERMS.SerializeToString()), SELLER_PUB),
}


@pytest.mark.parametrize("corrupt", SELLER_CORRUPTIONS.values(), ids=SELLER_CORRUPTIONS.keys())
def test_every_corruption_of_an_agreement_is_rejected(
    corrupt: Callable[[], tuple[bytes, PublicKey]],
) -> None:
    envelope, seller = corrupt()
    with pytest.raises(VerificationError):
        contracts.verify_seller_signature(envelope, seller, TERMS)


def test_agreement_over_other_terms_is_rejected() -> None:
    with pytest.raises(VerificationError, match="price"):
        contracts.verify_seller_signature(AGREED_ENV, SELLER_PUB, with_price(TERMS, 1))


def _change_one_byte(data: st.DataObject, envelope: bytes) -> bytes:
    index = data.draw(st.integers(0, len(envelope) - 1), label="index")
    original = envelope[index]
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != original), label="byte")
    return envelope[:index] + bytes([byte]) + envelope[index + 1 :]


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_single_byte_change_fails_verification(data: st.DataObject) -> None:
    with pytest.raises(VerificationError):
        contracts.verify_contract(_change_one_byte(data, FINAL_ENV), SELLER_PUB, BUYER_PUB)
    with pytest.raises(VerificationError):
        contracts.verify_seller_signature(_change_one_byte(data, AGREED_ENV), SELLER_PUB)


# ---------------------------------------------------------------------------
# Records and idempotent steps
# ---------------------------------------------------------------------------

REQUESTED_RECORD = contracts.propose(None, TERMS, T0).record
AGREED_RECORD = REQUESTED_RECORD.agree(AGREED_ENV, SELLER_PUB, AGREED_AT).record
FINALIZED_RECORD = AGREED_RECORD.finalize(FINAL_ENV, SELLER_PUB, BUYER_PUB, T2).record
TERMINATED_RECORD = REQUESTED_RECORD.terminate("buyer withdrew", AGREED_AT).record
TERMINATED_AGREED = AGREED_RECORD.terminate("seller declined", T2).record
LATER = T2 + timedelta(hours=1)
OTHER_AGREEMENT = contracts.seller_sign(TERMS, SELLER_KEY, agreed_at=T2)


def test_the_happy_path() -> None:
    assert REQUESTED_RECORD.state == REQUESTED
    assert REQUESTED_RECORD.terms == TERMS
    assert REQUESTED_RECORD.envelope == b""
    assert AGREED_RECORD.state == AGREED
    assert AGREED_RECORD.terms == SIGNED_TERMS
    assert AGREED_RECORD.envelope == AGREED_ENV
    assert AGREED_RECORD.updated_at == AGREED_AT
    assert FINALIZED_RECORD.state == FINALIZED
    assert FINALIZED_RECORD.envelope == FINAL_ENV
    assert FINALIZED_RECORD.is_final
    assert FINALIZED_RECORD.contract_id == TERMS.contract_id
    assert TERMINATED_RECORD.reason == "buyer withdrew"
    assert TERMINATED_AGREED.envelope == AGREED_ENV
    assert TERMINATED_AGREED.state_name == "terminated"


Step = Callable[[], Outcome]
# name -> (step, expected state when it changes the record, None for a no-op returning it)
STEPS_APPLIED: dict[str, tuple[Step, ContractRecord | None, State | None]] = {
    "propose a new contract": (lambda: contracts.propose(None, TERMS, T0), None, REQUESTED),
    "propose again while requested": (
        lambda: contracts.propose(REQUESTED_RECORD, TERMS, LATER),
        REQUESTED_RECORD,
        None,
    ),
    "propose again once agreed": (
        lambda: contracts.propose(AGREED_RECORD, TERMS, LATER),
        AGREED_RECORD,
        None,
    ),
    "propose again once finalized": (
        lambda: contracts.propose(FINALIZED_RECORD, TERMS, LATER),
        FINALIZED_RECORD,
        None,
    ),
    "propose again once terminated": (
        lambda: contracts.propose(TERMINATED_RECORD, TERMS, LATER),
        TERMINATED_RECORD,
        None,
    ),
    "agree while requested": (
        lambda: REQUESTED_RECORD.agree(AGREED_ENV, SELLER_PUB, LATER),
        None,
        AGREED,
    ),
    "agree again with the same envelope": (
        lambda: AGREED_RECORD.agree(AGREED_ENV, SELLER_PUB, LATER),
        AGREED_RECORD,
        None,
    ),
    "late agreement reaching a finalized contract": (
        lambda: FINALIZED_RECORD.agree(AGREED_ENV, SELLER_PUB, LATER),
        FINALIZED_RECORD,
        None,
    ),
    "finalize while agreed": (
        lambda: AGREED_RECORD.finalize(FINAL_ENV, SELLER_PUB, BUYER_PUB, LATER),
        None,
        FINALIZED,
    ),
    "finalize again with the same envelope": (
        lambda: FINALIZED_RECORD.finalize(FINAL_ENV, SELLER_PUB, BUYER_PUB, LATER),
        FINALIZED_RECORD,
        None,
    ),
    "terminate while requested": (
        lambda: REQUESTED_RECORD.terminate("no longer needed", LATER),
        None,
        TERMINATED,
    ),
    "terminate while agreed": (
        lambda: AGREED_RECORD.terminate("no longer needed", LATER),
        None,
        TERMINATED,
    ),
    "terminate again with another reason": (
        lambda: TERMINATED_RECORD.terminate("another reason", LATER),
        TERMINATED_RECORD,
        None,
    ),
}


@pytest.mark.parametrize(
    ("step", "unchanged", "state"), STEPS_APPLIED.values(), ids=STEPS_APPLIED.keys()
)
def test_steps_that_apply(
    step: Step, unchanged: ContractRecord | None, state: State | None
) -> None:
    outcome = step()
    if unchanged is not None:
        assert outcome == Outcome(unchanged, False)
        assert outcome.record is unchanged
    else:
        assert outcome.changed
        assert outcome.record.state == state
        assert outcome.record.updated_at in (T0, LATER)


STEPS_REFUSED: dict[str, tuple[Step, type[ProvexError], str]] = {
    "propose other terms under the same id": (
        lambda: contracts.propose(AGREED_RECORD, with_price(TERMS, 1), LATER),
        AlreadyExists,
        "price",
    ),
    "propose for another stored contract": (
        lambda: contracts.propose(
            REQUESTED_RECORD,
            _other_terms(),
            LATER,
        ),
        InvalidArgument,
        "^contract_id",
    ),
    "propose terms carrying agreed_at": (
        lambda: contracts.propose(None, SIGNED_TERMS, T0),
        InvalidArgument,
        "^agreed_at",
    ),
    "propose invalid terms": (
        lambda: contracts.propose(None, with_price(TERMS, -1), T0),
        InvalidArgument,
        "^price.fen",
    ),
    "agree once terminated": (
        lambda: TERMINATED_RECORD.agree(AGREED_ENV, SELLER_PUB, LATER),
        FailedPrecondition,
        "rule final",
    ),
    "agree again at another time": (
        lambda: AGREED_RECORD.agree(OTHER_AGREEMENT, SELLER_PUB, LATER),
        FailedPrecondition,
        "already agreed",
    ),
    "agreement at another time reaching a finalized contract": (
        lambda: FINALIZED_RECORD.agree(OTHER_AGREEMENT, SELLER_PUB, LATER),
        FailedPrecondition,
        "already finalized",
    ),
    "agreement signed by a third party": (
        lambda: REQUESTED_RECORD.agree(
            contracts.seller_sign(TERMS, THIRD_KEY, agreed_at=AGREED_AT), SELLER_PUB, LATER
        ),
        VerificationError,
        "seller",
    ),
    "agreement over other terms": (
        lambda: REQUESTED_RECORD.agree(
            contracts.seller_sign(with_price(TERMS, 1), SELLER_KEY, agreed_at=AGREED_AT),
            SELLER_PUB,
            LATER,
        ),
        VerificationError,
        "price",
    ),
    "finalize while requested": (
        lambda: REQUESTED_RECORD.finalize(FINAL_ENV, SELLER_PUB, BUYER_PUB, LATER),
        FailedPrecondition,
        "rule agree-before-finalize",
    ),
    "finalize once terminated": (
        lambda: TERMINATED_AGREED.finalize(FINAL_ENV, SELLER_PUB, BUYER_PUB, LATER),
        FailedPrecondition,
        "rule final",
    ),
    "finalize without the buyer's signature": (
        lambda: AGREED_RECORD.finalize(AGREED_ENV, SELLER_PUB, BUYER_PUB, LATER),
        VerificationError,
        "two signatures",
    ),
    "finalize with a third party's signature": (
        lambda: AGREED_RECORD.finalize(
            contracts.buyer_countersign(AGREED_ENV, TERMS, THIRD_KEY, seller_public_key=SELLER_PUB),
            SELLER_PUB,
            BUYER_PUB,
            LATER,
        ),
        VerificationError,
        "buyer",
    ),
    "terminate once finalized": (
        lambda: FINALIZED_RECORD.terminate("too late", LATER),
        FailedPrecondition,
        "rule final",
    ),
    "terminate without a reason": (
        lambda: REQUESTED_RECORD.terminate("  ", LATER),
        InvalidArgument,
        "^reason",
    ),
    "terminate with a reason too long": (
        lambda: REQUESTED_RECORD.terminate("x" * (contracts.MAX_REASON + 1), LATER),
        InvalidArgument,
        "^reason",
    ),
    "step at a naive time": (
        lambda: REQUESTED_RECORD.terminate("no longer needed", datetime(2026, 3, 2)),
        InvalidArgument,
        "^updated_at",
    ),
}


def _other_terms() -> market_pb2.ContractTerms:
    other = make_terms()
    other.contract_id = contracts.contract_id_for("sh-sde", "request-2")
    return other


@pytest.mark.parametrize(
    ("step", "error", "match"), STEPS_REFUSED.values(), ids=STEPS_REFUSED.keys()
)
def test_steps_that_are_refused(step: Step, error: type[ProvexError], match: str) -> None:
    with pytest.raises(error, match=match):
        step()


def test_conflicting_proposal_is_already_exists_and_names_the_fields() -> None:
    other = make_terms()
    other.purpose = "something else"
    other.price.fen = 7
    with pytest.raises(AlreadyExists, match=r"differing: price, purpose\)"):
        contracts.propose(REQUESTED_RECORD, other, LATER)


RECORDS: dict[str, ContractRecord] = {
    "requested": REQUESTED_RECORD,
    "agreed": AGREED_RECORD,
    "finalized": FINALIZED_RECORD,
    "terminated while requested": TERMINATED_RECORD,
    "terminated once agreed": TERMINATED_AGREED,
    "finalized and reported": ContractRecord(
        terms=SIGNED_TERMS,
        state=FINALIZED,
        updated_at=LATER,
        envelope=FINAL_ENV,
        trade_record=common_pb2.Bundle(envelope=b"{}", log_index=7, checkpoint="c"),
    ),
}


@pytest.mark.parametrize("record", RECORDS.values(), ids=RECORDS.keys())
def test_records_round_trip_through_the_wire_form(record: ContractRecord) -> None:
    wire = record.to_proto()
    assert wire.terms == record.terms
    assert wire.state == record.state
    assert wire.envelope == record.envelope
    assert wire.termination_reason == record.reason
    parsed = ContractRecord.from_proto(market_pb2.Contract.FromString(wire.SerializeToString()))
    assert parsed == record


def _wire(**changes: object) -> market_pb2.Contract:
    wire = AGREED_RECORD.to_proto()
    for name, value in changes.items():
        if value is None:
            wire.ClearField(name)  # type: ignore[arg-type]
        elif name == "trade_record":
            wire.trade_record.CopyFrom(value)  # type: ignore[arg-type]
        else:
            setattr(wire, name, value)
    return wire


def _wire_bad_terms() -> market_pb2.Contract:
    wire = AGREED_RECORD.to_proto()
    wire.terms.price.fen = -5
    return wire


WIRE_REFUSALS: dict[str, tuple[Callable[[], market_pb2.Contract], str]] = {
    "terms missing": (lambda: _wire(terms=None), "contract.terms"),
    "terms invalid": (_wire_bad_terms, "contract.terms.price.fen"),
    "updated_at missing": (lambda: _wire(updated_at=None), "contract.updated_at"),
    "state unspecified": (lambda: _wire(state=UNSPECIFIED), "contract.state"),
    "state unknown": (lambda: _wire(state=42), "contract.state"),
    "agreed without an envelope": (lambda: _wire(envelope=b""), "contract.envelope"),
    "requested with an envelope": (lambda: _wire(state=REQUESTED), "contract.envelope"),
    "terminated without a reason": (lambda: _wire(state=TERMINATED), "contract.termination_reason"),
    "agreed with a reason": (
        lambda: _wire(termination_reason="why"),
        "contract.termination_reason",
    ),
    "trade record before finalization": (
        lambda: _wire(trade_record=common_pb2.Bundle(log_index=1)),
        "contract.trade_record",
    ),
}


@pytest.mark.parametrize(("make", "field"), WIRE_REFUSALS.values(), ids=WIRE_REFUSALS.keys())
def test_malformed_wire_contracts_are_refused_naming_the_field(
    make: Callable[[], market_pb2.Contract], field: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        ContractRecord.from_proto(make())
    assert field_named(str(refused.value), field), str(refused.value)


def test_a_record_keeps_its_own_copy_of_the_terms() -> None:
    terms = make_terms()
    record = ContractRecord(terms=terms, state=REQUESTED, updated_at=T0)
    terms.price.fen = 1
    assert record.terms.price.fen == 120_000
    assert record.to_proto().terms is not record.terms
