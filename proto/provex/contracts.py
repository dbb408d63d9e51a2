"""Data-trade contracts between a buyer's node and a seller's node (DESIGN.md section 7).

A contract is negotiated over the peer RPCs ProposeContract (buyer -> seller),
NotifyContract (seller -> buyer: agreed or terminated), FinalizeContract
(buyer -> seller) and TerminateContract. Both nodes keep it and compute every
step here, the same way:

* **Terms** (:func:`validate_terms`): a ``ContractTerms`` message is checked
  field by field and returned in canonical form (trimmed text, upper-case
  credit codes and country, lower-case hex ids, unknown fields dropped).
  Every refusal is :class:`~provex.errors.InvalidArgument` whose message
  starts with the field's name (``price.fen``, ``licence.purposes[0]``...).
  The contract id is ``C`` and 32 lower-case hex digits:
  :func:`contract_id_for` derives it with SHA-256 from the buyer's node id
  and the buyer's idempotency key, so a retried request names the same
  contract and never creates a second one.
* **States** (:func:`transition`): requested -> agreed -> finalized, or
  terminated from requested or agreed; finalized and terminated are final.
  Anything else raises :class:`~provex.errors.FailedPrecondition` naming the
  rule (``final``, ``agree-before-finalize``, ``no-way-back``, ``no-repeat``).
  A value that is not a contract state at all (UNSPECIFIED, an unknown
  number) is :class:`~provex.errors.InvalidArgument` naming ``state``.
* **Signatures**: the contract is ONE DSSE envelope
  (:mod:`provex.envelope`, payload type
  ``application/vnd.provex.contract+protobuf`` from :mod:`provex.documents`)
  over the serialized terms, serialized once by the seller. The seller signs
  when agreeing (:func:`seller_sign`, which stamps ``agreed_at``); the buyer
  adds its signature to the very same payload bytes when finalizing
  (:func:`buyer_countersign`). Roles are bound to positions: an agreed
  envelope carries exactly one signature, the seller's; a finalized one
  exactly two, the seller's then the buyer's. The envelope must be in the
  canonical JSON form :meth:`provex.envelope.Envelope.to_json` writes (sorted
  keys, compact, canonical base64), and its payload must be the canonical
  serialization of valid terms with ``agreed_at`` set; so any change to the
  shipped bytes fails. :func:`verify_seller_signature` and
  :func:`verify_contract` raise :class:`~provex.errors.VerificationError`,
  one class, for every failure. The public keys are each node's Ed25519
  signing key as the registry's enrollment statement certifies it; finding
  them (from ``seller_node`` / ``buyer_node``) is the caller's job.
* **Records** (:class:`ContractRecord`): a stored contract with
  :meth:`~ContractRecord.to_proto` / :meth:`~ContractRecord.from_proto`
  (``provex.v1.Contract``) and idempotent steps returning an
  :class:`Outcome` (the record and whether it changed):

  - :func:`propose`: a new contract, or the stored one unchanged when the
    terms are the same (whatever state it reached since: a retried request
    answers with the current contract). Different terms under the same
    contract id raise :class:`~provex.errors.AlreadyExists`.
  - :meth:`ContractRecord.agree`, :meth:`ContractRecord.finalize`: a repeated
    message carrying the same envelope is a no-op; so is a late duplicate of
    the agreement reaching a finalized contract over the same terms. A
    validly signed envelope that conflicts with the stored one raises
    :class:`~provex.errors.FailedPrecondition`; a bad one VerificationError.
  - :meth:`ContractRecord.terminate`: a repeated termination is a no-op and
    keeps the first reason (both sides may terminate concurrently with their
    own reasons; the outcome is the same).

Everything here is pure: no I/O and no clock (times are inputs, aware).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from types import MappingProxyType
from typing import Final, TypeAlias

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from provex import documents
from provex import envelope as dsse
from provex.errors import AlreadyExists, FailedPrecondition, InvalidArgument, VerificationError
from provex.ids import DatasetId, validate_node_id
from provex.members import check_credit_code
from provex.timestamps import from_timestamp, to_timestamp
from provex.v1 import common_pb2, market_pb2, supervision_pb2

__all__ = [
    "AGREED",
    "FINALIZED",
    "MAINLAND",
    "MAX_EXPORT_PERMIT_ID",
    "MAX_IDEMPOTENCY_KEY",
    "MAX_LICENCE_PURPOSE",
    "MAX_LICENCE_PURPOSES",
    "MAX_PRICE_FEN",
    "MAX_PURPOSE",
    "MAX_REASON",
    "MAX_TERM_DAYS",
    "PAYLOAD_TYPE",
    "REQUESTED",
    "TERMINATED",
    "ContractRecord",
    "Outcome",
    "PrivateKey",
    "PublicKey",
    "State",
    "buyer_countersign",
    "can_transition",
    "check_reason",
    "contract_id_for",
    "is_final",
    "normalize_contract_id",
    "propose",
    "seller_sign",
    "state_name",
    "trade_record",
    "transition",
    "validate_terms",
    "verify_contract",
    "verify_seller_signature",
]

State: TypeAlias = market_pb2.ContractState.ValueType
PublicKey: TypeAlias = Ed25519PublicKey | bytes
"""An Ed25519 public key, or its 32 raw bytes."""
PrivateKey: TypeAlias = Ed25519PrivateKey | dsse.SigningKey
"""A node's Ed25519 signing key (optionally with its key id worked out)."""

REQUESTED: Final[State] = market_pb2.CONTRACT_STATE_REQUESTED
AGREED: Final[State] = market_pb2.CONTRACT_STATE_AGREED
FINALIZED: Final[State] = market_pb2.CONTRACT_STATE_FINALIZED
TERMINATED: Final[State] = market_pb2.CONTRACT_STATE_TERMINATED

PAYLOAD_TYPE: Final = documents.payload_type_of(market_pb2.ContractTerms)
"""``application/vnd.provex.contract+protobuf``."""

MAINLAND: Final = "CN"
MAX_PRICE_FEN: Final = 10**12
MAX_TERM_DAYS: Final = 3650
MAX_LICENCE_PURPOSES: Final = 20
MAX_LICENCE_PURPOSE: Final = 200
MAX_PURPOSE: Final = 500
MAX_EXPORT_PERMIT_ID: Final = 128
MAX_REASON: Final = 1_000
MAX_IDEMPOTENCY_KEY: Final = 200

_CONTRACT_ID = re.compile(r"C[0-9a-f]{32}", re.IGNORECASE)
_LISTING_ID = re.compile(r"L[0-9a-f]{16}", re.IGNORECASE)
_COUNTRY = re.compile(r"[A-Z]{2}")
_PERMIT_ID = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ID_DOMAIN: Final = b"provex/contract-id/v1\n"
_SELLER, _BUYER = "seller", "buyer"

# ---------------------------------------------------------------------------
# Contract ids
# ---------------------------------------------------------------------------


def contract_id_for(buyer_node: str, idempotency_key: str) -> str:
    """The contract id of a buyer node's request: ``C`` + 32 hex digits of SHA-256.

    The hash covers a domain tag, the node id and the key (UTF-8), separated
    by new lines (a node id has none), so a retry with the same key names the
    same contract and two nodes' keys never collide. The key is used exactly
    as given: 1..200 characters, no control characters, not blank.
    """
    try:
        node = validate_node_id(buyer_node)
    except InvalidArgument as error:
        raise InvalidArgument(f"buyer_node: {error}") from None
    if not isinstance(idempotency_key, str) or not idempotency_key.strip():
        raise InvalidArgument("idempotency_key is required (the buyer's key for this request)")
    if len(idempotency_key) > MAX_IDEMPOTENCY_KEY:
        raise InvalidArgument(
            f"idempotency_key is {len(idempotency_key)} characters, at most {MAX_IDEMPOTENCY_KEY}"
        )
    if _CONTROL.search(idempotency_key):
        raise InvalidArgument("idempotency_key must not contain control characters")
    digest = hashlib.sha256(
        _ID_DOMAIN + node.encode("ascii") + b"\n" + idempotency_key.encode("utf-8")
    ).hexdigest()
    return "C" + digest[:32]


def normalize_contract_id(text: str, field: str = "contract_id") -> str:
    """The canonical contract id (``C`` and 32 lower-case hex digits), else InvalidArgument."""
    if not isinstance(text, str) or not _CONTRACT_ID.fullmatch(text.strip()):
        raise InvalidArgument(
            f"{field} must be C followed by 32 hex digits "
            f"(e.g. C0123456789abcdef0123456789abcdef), got {text!r}"
        )
    return "C" + text.strip()[1:].lower()


# ---------------------------------------------------------------------------
# Terms
# ---------------------------------------------------------------------------


def validate_terms(terms: market_pb2.ContractTerms) -> market_pb2.ContractTerms:
    """A validated copy of ``terms`` in canonical form; InvalidArgument naming the field.

    ``agreed_at`` may be absent (a proposal) or set (agreed terms).
    ``export_permit_id`` may only be set for a buyer outside the mainland.
    """
    out = market_pb2.ContractTerms()
    out.CopyFrom(terms)
    out.DiscardUnknownFields()
    out.contract_id = normalize_contract_id(terms.contract_id)
    if not _LISTING_ID.fullmatch(terms.listing_id.strip()):
        raise InvalidArgument(
            f"listing_id must be L followed by 16 hex digits (e.g. L0123456789abcdef), "
            f"got {terms.listing_id!r}"
        )
    out.listing_id = "L" + terms.listing_id.strip()[1:].lower()
    if not terms.dataset_id.strip():
        raise InvalidArgument("dataset_id is required (e.g. 440100-2026-0000123-8)")
    try:
        out.dataset_id = str(DatasetId.parse(terms.dataset_id))
    except InvalidArgument as error:
        raise InvalidArgument(f"dataset_id: {error}") from None
    if terms.certificate_version < 1:
        raise InvalidArgument(
            f"certificate_version must be at least 1, got {terms.certificate_version}"
        )
    if len(terms.content_digest) != 32:
        raise InvalidArgument(
            "content_digest must be a 32-byte SHA-256 digest, "
            f"got {len(terms.content_digest)} bytes"
        )
    out.seller = check_credit_code(terms.seller, "seller")
    out.seller_node = _node_id(terms.seller_node, "seller_node")
    out.buyer = check_credit_code(terms.buyer, "buyer")
    if out.buyer == out.seller:
        raise InvalidArgument(f"buyer {out.buyer} is the seller: a member cannot buy from itself")
    out.buyer_node = _node_id(terms.buyer_node, "buyer_node")
    out.buyer_country = _country(terms.buyer_country)
    _check_price(terms)
    _check_licence(out)
    out.purpose = _text(terms.purpose, "purpose", MAX_PURPOSE)
    out.export_permit_id = _export_permit_id(terms.export_permit_id, out.buyer_country)
    if terms.HasField("agreed_at"):
        try:
            from_timestamp(terms.agreed_at)
        except ValueError as error:
            raise InvalidArgument(f"agreed_at is not a valid time: {error}") from None
        if terms.agreed_at.seconds <= 0:
            raise InvalidArgument("agreed_at must be after 1970-01-01")
    return out


def _node_id(text: str, field: str) -> str:
    if not text:
        raise InvalidArgument(f"{field} is required (e.g. gd-gzde)")
    try:
        return validate_node_id(text)
    except InvalidArgument as error:
        raise InvalidArgument(f"{field}: {error}") from None


def _country(text: str) -> str:
    country = text.strip().upper()
    if not _COUNTRY.fullmatch(country):
        raise InvalidArgument(
            "buyer_country must be an ISO 3166-1 alpha-2 code of two letters "
            f"(CN for the mainland, e.g. HK, US), got {text!r}"
        )
    return country


def _check_price(terms: market_pb2.ContractTerms) -> None:
    if not terms.HasField("price"):
        raise InvalidArgument("price is required (integer fen; 0 for a free dataset)")
    if not 0 <= terms.price.fen <= MAX_PRICE_FEN:
        raise InvalidArgument(
            f"price.fen must be within 0..{MAX_PRICE_FEN:,} fen, got {terms.price.fen:,}"
        )


def _check_licence(out: market_pb2.ContractTerms) -> None:
    """Validate ``out.licence`` and trim its purposes in place."""
    if not out.HasField("licence"):
        raise InvalidArgument("licence is required (purposes and term_days at least)")
    licence = out.licence
    if not 1 <= len(licence.purposes) <= MAX_LICENCE_PURPOSES:
        raise InvalidArgument(
            f"licence.purposes must list 1..{MAX_LICENCE_PURPOSES} purposes, "
            f"got {len(licence.purposes)}"
        )
    purposes = [
        _text(purpose, f"licence.purposes[{position}]", MAX_LICENCE_PURPOSE)
        for position, purpose in enumerate(licence.purposes)
    ]
    if len(set(purposes)) != len(purposes):
        raise InvalidArgument("licence.purposes lists a purpose twice")
    del licence.purposes[:]
    licence.purposes.extend(purposes)
    if not 1 <= licence.term_days <= MAX_TERM_DAYS:
        raise InvalidArgument(
            f"licence.term_days must be within 1..{MAX_TERM_DAYS} (ten years), "
            f"got {licence.term_days}"
        )


def _text(value: str, field: str, limit: int) -> str:
    text = value.strip()
    if not text:
        raise InvalidArgument(f"{field} is required")
    if len(text) > limit:
        raise InvalidArgument(f"{field} is {len(text)} characters, at most {limit}")
    if _CONTROL.search(text):
        raise InvalidArgument(f"{field} must not contain control characters")
    return text


def _export_permit_id(value: str, buyer_country: str) -> str:
    permit = value.strip()
    if not permit:
        return ""
    if buyer_country == MAINLAND:
        raise InvalidArgument(
            f"export_permit_id {permit!r} is set but the buyer is in {MAINLAND}: "
            "a domestic trade is no export"
        )
    if len(permit) > MAX_EXPORT_PERMIT_ID or not _PERMIT_ID.fullmatch(permit):
        raise InvalidArgument(
            f"export_permit_id must be 1..{MAX_EXPORT_PERMIT_ID} printable ASCII characters "
            f"without spaces, got {value!r}"
        )
    return permit


def check_reason(reason: str, field: str = "reason") -> str:
    """A termination reason, trimmed: 1..1,000 characters, no control characters but new lines."""
    text = reason.strip() if isinstance(reason, str) else ""
    if not text:
        raise InvalidArgument(f"{field} is required: say why the contract is terminated")
    if len(text) > MAX_REASON:
        raise InvalidArgument(f"{field} is {len(text)} characters, at most {MAX_REASON:,}")
    if _CONTROL.search(text.replace("\n", " ")):
        raise InvalidArgument(f"{field} must not contain control characters")
    return text


def _proposal(terms: market_pb2.ContractTerms) -> market_pb2.ContractTerms:
    """``terms`` as proposed: without the seller's ``agreed_at``."""
    proposal = market_pb2.ContractTerms()
    proposal.CopyFrom(terms)
    proposal.ClearField("agreed_at")
    return proposal


def _differing_fields(a: market_pb2.ContractTerms, b: market_pb2.ContractTerms) -> list[str]:
    present = {f.name for f, _ in a.ListFields()} ^ {f.name for f, _ in b.ListFields()}
    names = [
        f.name
        for f in market_pb2.ContractTerms.DESCRIPTOR.fields
        if f.name in present or getattr(a, f.name) != getattr(b, f.name)
    ]
    return names or ["their encoding"]


# ---------------------------------------------------------------------------
# States
# ---------------------------------------------------------------------------

_STATE_NAMES: Mapping[int, str] = MappingProxyType(
    {
        REQUESTED: "requested",
        AGREED: "agreed",
        FINALIZED: "finalized",
        TERMINATED: "terminated",
    }
)
_ALLOWED: Mapping[int, frozenset[int]] = MappingProxyType(
    {
        REQUESTED: frozenset({AGREED, TERMINATED}),
        AGREED: frozenset({FINALIZED, TERMINATED}),
        FINALIZED: frozenset(),
        TERMINATED: frozenset(),
    }
)


def state_name(state: State) -> str:
    """``requested``, ``agreed``, ``finalized``, ``terminated``; InvalidArgument otherwise."""
    name = _STATE_NAMES.get(state)
    if name is None:
        raise InvalidArgument(
            f"state {state} is not a contract state (requested, agreed, finalized, terminated)"
        )
    return name


def is_final(state: State) -> bool:
    """True for finalized and terminated: states a contract never leaves."""
    state_name(state)
    return not _ALLOWED[state]


def can_transition(current: State, target: State) -> bool:
    """True if a contract in ``current`` may move to ``target``."""
    state_name(current)
    state_name(target)
    return target in _ALLOWED[current]


def transition(current: State, target: State) -> State:
    """``target`` if a contract in ``current`` may move there, else FailedPrecondition.

    The refusal names the rule: ``final`` (finalized and terminated never
    change), ``no-repeat`` (a state is entered once; repeated messages are
    for :class:`ContractRecord`'s idempotent steps), ``agree-before-finalize``
    (requested -> finalized skips the seller's agreement), ``no-way-back``
    (nothing returns to requested, or from finalized).
    """
    if can_transition(current, target):
        return target
    now, then = state_name(current), state_name(target)
    if is_final(current):
        raise FailedPrecondition(
            f"contract state rule final: a {now} contract never changes (asked to become {then})"
        )
    if current == target:
        raise FailedPrecondition(f"contract state rule no-repeat: the contract is already {now}")
    if target == FINALIZED:
        raise FailedPrecondition(
            f"contract state rule agree-before-finalize: a {now} contract must be agreed "
            "(signed by the seller) before it is finalized"
        )
    raise FailedPrecondition(
        f"contract state rule no-way-back: a {now} contract cannot become {then} "
        "(requested -> agreed -> finalized, or terminated)"
    )


# ---------------------------------------------------------------------------
# Signing and verification
# ---------------------------------------------------------------------------


def seller_sign(
    terms: market_pb2.ContractTerms, seller_key: PrivateKey, *, agreed_at: datetime | None = None
) -> bytes:
    """The seller's agreement: an envelope (JSON bytes) over the validated terms, one signature.

    ``agreed_at`` (aware) is stamped into the terms when given; otherwise the
    terms must carry it already (InvalidArgument naming ``agreed_at``). The
    terms are serialized here, once; the buyer countersigns these bytes.
    """
    stamped = market_pb2.ContractTerms()
    stamped.CopyFrom(terms)
    if agreed_at is not None:
        try:
            stamped.agreed_at.CopyFrom(to_timestamp(agreed_at))
        except ValueError as error:
            raise InvalidArgument(f"agreed_at: {error}") from None
    signed = validate_terms(stamped)
    if not signed.HasField("agreed_at"):
        raise InvalidArgument("agreed_at is required: the seller stamps the time it agrees")
    return documents.sign_document(signed, [seller_key]).to_json()


def buyer_countersign(
    envelope: bytes,
    terms: market_pb2.ContractTerms,
    buyer_key: PrivateKey,
    *,
    seller_public_key: PublicKey,
) -> bytes:
    """The finalized envelope: the seller's agreed envelope with the buyer's signature added.

    First checks the agreed envelope as :func:`verify_seller_signature` does,
    against the terms the buyer proposed (``terms``; an unset ``agreed_at``
    accepts the seller's), so the buyer never signs what it did not ask for
    or what the seller did not sign. VerificationError otherwise, also when
    the buyer's key is the seller's.
    """
    verify_seller_signature(envelope, seller_public_key, terms)
    agreed = dsse.Envelope.from_json(envelope)
    private = buyer_key.key if isinstance(buyer_key, dsse.SigningKey) else buyer_key
    if dsse.key_id(private.public_key()) == agreed.signatures[0].keyid:
        raise VerificationError("the buyer's key is the seller's: a contract needs two parties")
    return dsse.add_signatures(agreed, [private]).to_json()


def verify_seller_signature(
    envelope: bytes,
    seller_public_key: PublicKey,
    expected: market_pb2.ContractTerms | None = None,
) -> market_pb2.ContractTerms:
    """The terms of an agreed contract envelope, checked; VerificationError otherwise.

    The envelope must be canonical, of the contract payload type, carry
    exactly one signature, the seller's, valid, over valid canonical terms
    with ``agreed_at``; equal to ``expected`` when given (ignoring
    ``agreed_at`` if ``expected`` has none).
    """
    parsed = _parse(envelope)
    seller = _load_key(seller_public_key, _SELLER)
    if len(parsed.signatures) != 1:
        raise VerificationError(
            "an agreed contract envelope carries exactly one signature, the seller's; "
            f"this one has {len(parsed.signatures)}"
        )
    _check_signature(parsed, 0, _SELLER, seller)
    return _signed_terms(parsed, expected)


def verify_contract(
    envelope: bytes,
    seller_public_key: PublicKey,
    buyer_public_key: PublicKey,
    expected: market_pb2.ContractTerms | None = None,
) -> market_pb2.ContractTerms:
    """The terms of a finalized contract envelope, checked; VerificationError otherwise.

    The envelope must be canonical, of the contract payload type, carry
    exactly two valid signatures, the seller's first and the buyer's second
    (two different keys), over valid canonical terms with ``agreed_at``;
    equal to ``expected`` when given (ignoring ``agreed_at`` if ``expected``
    has none).
    """
    parsed = _parse(envelope)
    seller = _load_key(seller_public_key, _SELLER)
    buyer = _load_key(buyer_public_key, _BUYER)
    if dsse.key_id(seller) == dsse.key_id(buyer):
        raise VerificationError("the seller's and the buyer's keys are the same key")
    if len(parsed.signatures) != 2:
        raise VerificationError(
            "a finalized contract envelope carries exactly two signatures, the seller's "
            f"then the buyer's; this one has {len(parsed.signatures)}"
        )
    _check_signature(parsed, 0, _SELLER, seller)
    _check_signature(parsed, 1, _BUYER, buyer)
    return _signed_terms(parsed, expected)


def _parse(data: bytes) -> dsse.Envelope:
    if not isinstance(data, bytes):
        raise VerificationError(f"contract envelope must be bytes, got {type(data).__name__}")
    if not data:
        raise VerificationError("contract envelope is empty")
    parsed = dsse.Envelope.from_json(data)
    if parsed.to_json() != data:
        raise VerificationError(
            "contract envelope is not in canonical DSSE JSON form "
            "(sorted keys, no white space, canonical base64)"
        )
    if parsed.payload_type != PAYLOAD_TYPE:
        raise VerificationError(
            f"payload type {parsed.payload_type!r} where {PAYLOAD_TYPE!r} was expected"
        )
    return parsed


def _load_key(key: PublicKey, role: str) -> Ed25519PublicKey:
    if isinstance(key, Ed25519PublicKey):
        return key
    if isinstance(key, bytes):
        try:
            return dsse.load_public_key(key)
        except VerificationError as error:
            raise VerificationError(f"the {role}'s public key: {error}") from None
    raise VerificationError(f"the {role}'s public key is a {type(key).__name__}")


def _check_signature(parsed: dsse.Envelope, index: int, role: str, key: Ed25519PublicKey) -> None:
    signature = parsed.signatures[index]
    expected_id = dsse.key_id(key)
    if signature.keyid != expected_id:
        raise VerificationError(
            f"contract signature {index + 1} should be the {role}'s (key id "
            f"{expected_id[:16]}...), but names key id {signature.keyid[:16]}..."
        )
    single = dsse.Envelope(parsed.payload_type, parsed.payload, (signature,))
    try:
        dsse.verify(single, PAYLOAD_TYPE, {expected_id: key})
    except VerificationError:
        raise VerificationError(f"the {role}'s signature does not verify") from None


def _signed_terms(
    parsed: dsse.Envelope, expected: market_pb2.ContractTerms | None
) -> market_pb2.ContractTerms:
    decoded = documents.decode_payload(parsed.payload, market_pb2.ContractTerms)
    try:
        signed = validate_terms(decoded)
    except InvalidArgument as error:
        raise VerificationError(f"the signed contract terms are not valid: {error}") from None
    if signed.SerializeToString() != parsed.payload:
        raise VerificationError("the signed contract terms are not in canonical form")
    if not signed.HasField("agreed_at"):
        raise VerificationError("the signed contract terms have no agreed_at")
    if expected is not None:
        try:
            want = validate_terms(expected)
        except InvalidArgument as error:
            raise VerificationError(f"the expected contract terms are not valid: {error}") from None
        if not want.HasField("agreed_at"):
            want.agreed_at.CopyFrom(signed.agreed_at)
        if want != signed:
            raise VerificationError(
                f"contract {signed.contract_id}: the signed terms differ from the expected ones "
                f"in {', '.join(_differing_fields(want, signed))}"
            )
    return signed


# ---------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ContractRecord:
    """A contract as either node stores it (``provex.v1.Contract``).

    Construction validates the terms (keeping a canonical private copy; do not
    mutate ``terms``) and the invariants of the state: requested has no
    envelope and no ``agreed_at``; agreed and finalized have both; terminated
    has a reason and only terminated has one; only finalized has a trade
    record. InvalidArgument naming the field otherwise. Instances compare by
    value but are not hashable (they hold protobuf messages).
    """

    terms: market_pb2.ContractTerms
    state: State
    updated_at: datetime
    envelope: bytes = b""
    reason: str = ""
    trade_record: common_pb2.Bundle | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "terms", validate_terms(self.terms))
        name = state_name(self.state)
        if not isinstance(self.updated_at, datetime) or self.updated_at.tzinfo is None:
            raise InvalidArgument("updated_at must be an aware datetime")
        agreed = self.terms.HasField("agreed_at")
        if self.state == REQUESTED and (self.envelope or agreed):
            raise InvalidArgument(
                "envelope: a requested contract has no envelope and its terms no agreed_at"
            )
        if self.state in (AGREED, FINALIZED) and not (self.envelope and agreed):
            raise InvalidArgument(
                f"envelope: an {name} contract has a signed envelope and its terms an agreed_at"
            )
        if (self.state == TERMINATED) != bool(self.reason):
            raise InvalidArgument(
                "termination_reason: required for a terminated contract, empty otherwise"
            )
        if self.trade_record is not None and self.state != FINALIZED:
            raise InvalidArgument("trade_record: only a finalized contract is reported")

    @property
    def contract_id(self) -> str:
        """The contract's id."""
        return self.terms.contract_id

    @property
    def state_name(self) -> str:
        """The state's lower-case name."""
        return state_name(self.state)

    @property
    def is_final(self) -> bool:
        """True when finalized or terminated."""
        return is_final(self.state)

    def to_proto(self) -> market_pb2.Contract:
        """The wire form (a fresh message)."""
        contract = market_pb2.Contract(
            state=self.state, termination_reason=self.reason, envelope=self.envelope
        )
        contract.terms.CopyFrom(self.terms)
        contract.updated_at.CopyFrom(to_timestamp(self.updated_at))
        if self.trade_record is not None:
            contract.trade_record.CopyFrom(self.trade_record)
        return contract

    @classmethod
    def from_proto(cls, contract: market_pb2.Contract) -> ContractRecord:
        """Read the wire form; InvalidArgument naming the field (``contract.terms.price``...).

        Signatures are not checked here (no keys): a peer's envelope is
        verified by :meth:`agree` and :meth:`finalize`.
        """
        if not contract.HasField("terms"):
            raise InvalidArgument("contract.terms is required")
        try:
            terms = validate_terms(contract.terms)
        except InvalidArgument as error:
            raise InvalidArgument(f"contract.terms.{error}") from None
        if not contract.HasField("updated_at"):
            raise InvalidArgument("contract.updated_at is required")
        try:
            updated_at = from_timestamp(contract.updated_at)
        except ValueError as error:
            raise InvalidArgument(f"contract.updated_at is not a valid time: {error}") from None
        trade_record: common_pb2.Bundle | None = None
        if contract.HasField("trade_record"):
            trade_record = common_pb2.Bundle()
            trade_record.CopyFrom(contract.trade_record)
        try:
            return cls(
                terms=terms,
                state=contract.state,
                updated_at=updated_at,
                envelope=contract.envelope,
                reason=contract.termination_reason,
                trade_record=trade_record,
            )
        except InvalidArgument as error:
            raise InvalidArgument(f"contract.{error}") from None

    def agree(self, envelope: bytes, seller_public_key: PublicKey, now: datetime) -> Outcome:
        """Apply the seller's agreement (its envelope from :func:`seller_sign`).

        requested -> agreed, keeping the signed terms (with ``agreed_at``) and
        the envelope. A repeat with the same envelope, or a late duplicate
        reaching a finalized contract over the same terms, is a no-op. A
        terminated contract, or a validly signed agreement that differs from
        the stored one, raises FailedPrecondition; a bad envelope, or one over
        other terms than those proposed, VerificationError.
        """
        if self.state == TERMINATED:
            transition(self.state, AGREED)
        signed = verify_seller_signature(envelope, seller_public_key, _proposal(self.terms))
        if self.state == REQUESTED:
            changed = replace(
                self,
                terms=signed,
                state=transition(self.state, AGREED),
                envelope=envelope,
                updated_at=now,
            )
            return Outcome(changed, True)
        if signed != self.terms or (self.state == AGREED and envelope != self.envelope):
            raise FailedPrecondition(
                f"contract {self.contract_id} is already {self.state_name} under a different "
                "agreement envelope; this one conflicts with it"
            )
        return Outcome(self, False)

    def finalize(
        self,
        envelope: bytes,
        seller_public_key: PublicKey,
        buyer_public_key: PublicKey,
        now: datetime,
    ) -> Outcome:
        """Apply the finalized envelope (from :func:`buyer_countersign`).

        agreed -> finalized, once :func:`verify_contract` accepts the envelope
        against the agreed terms. A repeat with the same envelope is a no-op;
        a different one when finalized, and any finalization of a requested
        or terminated contract, raise FailedPrecondition; a bad envelope
        VerificationError.
        """
        if self.state in (REQUESTED, TERMINATED):
            transition(self.state, FINALIZED)
        verify_contract(envelope, seller_public_key, buyer_public_key, self.terms)
        if self.state == AGREED:
            if dsse.Envelope.from_json(envelope).payload != (
                dsse.Envelope.from_json(self.envelope).payload
            ):
                raise FailedPrecondition(
                    f"contract {self.contract_id}: the finalized payload is not the agreed one"
                )
            changed = replace(
                self, state=transition(self.state, FINALIZED), envelope=envelope, updated_at=now
            )
            return Outcome(changed, True)
        if envelope != self.envelope:
            raise FailedPrecondition(
                f"contract {self.contract_id} is already finalized under a different envelope"
            )
        return Outcome(self, False)

    def terminate(self, reason: str, now: datetime) -> Outcome:
        """requested or agreed -> terminated with ``reason`` (InvalidArgument if blank).

        Terminating a terminated contract is a no-op keeping the first reason;
        a finalized contract raises FailedPrecondition (rule ``final``).
        """
        text = check_reason(reason)
        if self.state == TERMINATED:
            return Outcome(self, False)
        target = transition(self.state, TERMINATED)
        return Outcome(replace(self, state=target, reason=text, updated_at=now), True)


@dataclass(frozen=True)
class Outcome:
    """The result of an idempotent step: the record, and False when the step was a no-op."""

    record: ContractRecord
    changed: bool


def propose(
    existing: ContractRecord | None, terms: market_pb2.ContractTerms, now: datetime
) -> Outcome:
    """Record a proposed contract (ProposeContract on the seller, RequestContract on the buyer).

    ``existing`` is the stored contract with the same id, if any. A new
    contract starts requested. The same terms again return ``existing``
    unchanged, whatever state it reached. Different terms raise
    AlreadyExists naming the differing fields (a retry must repeat its
    request; a new contract needs a new idempotency key). The terms must
    not carry ``agreed_at`` (InvalidArgument): the seller sets it.
    """
    proposed = validate_terms(terms)
    if proposed.HasField("agreed_at"):
        raise InvalidArgument("agreed_at must be empty in a proposal: the seller sets it")
    if existing is None:
        return Outcome(ContractRecord(terms=proposed, state=REQUESTED, updated_at=now), True)
    if existing.contract_id != proposed.contract_id:
        raise InvalidArgument(
            f"contract_id {proposed.contract_id} is not the stored contract's "
            f"({existing.contract_id})"
        )
    stored = _proposal(existing.terms)
    if stored != proposed:
        raise AlreadyExists(
            f"contract {proposed.contract_id} exists with other terms (differing: "
            f"{', '.join(_differing_fields(stored, proposed))}); a retry must repeat the same "
            "request, a new contract needs a new idempotency key"
        )
    return Outcome(existing, False)


def trade_record(
    terms: market_pb2.ContractTerms,
    envelope: bytes,
    *,
    category: str,
    grade: common_pb2.Grade.ValueType,
    region_code: str,
) -> supervision_pb2.TradeRecord:
    """The trade record of a finalized contract: its parties and price from ``terms``, the
    two-signature ``envelope``, and the dataset's category, grade and region (which the
    seller's node takes from its listing and the registry from its own certificate)."""
    return supervision_pb2.TradeRecord(
        contract_id=terms.contract_id,
        contract=envelope,
        dataset_id=terms.dataset_id,
        seller=terms.seller,
        buyer=terms.buyer,
        seller_node=terms.seller_node,
        buyer_node=terms.buyer_node,
        price=terms.price,
        category=category,
        grade=grade,
        region_code=region_code,
    )
