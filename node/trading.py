"""Contracts on this node: negotiation with peers, both signatures, the trade report.

A contract is kept on both sides (``role`` says which side this node is) as
the serialized :class:`provex.v1.Contract`; its ``state`` column mirrors the
message's state for queries. Delivery (:mod:`node.delivery`) reads finalized
contracts through :func:`load_contract`.

The negotiation (DESIGN.md section 7), every step idempotent and persisted
before anything is sent:

1. The buyer's operator asks (RequestContract). The buyer node checks its
   member (a member of this node whose report the registry acknowledged,
   not frozen), stores the request as REQUESTED under
   :func:`provex.contracts.contract_id_for` (buyer node + idempotency key;
   the terms are partial until the seller fills in the listing's facts) and
   proposes it to the seller node (PeerService.ProposeContract).
2. The seller node completes the terms from its listing and certificate,
   stores them as REQUESTED, and runs the checks before agreeing, each
   refusal a FailedPrecondition naming its rule (:data:`RULES`): certificate
   valid and not suspended, listing listed, core data never traded, neither
   party frozen, the cross-border rules (:mod:`provex.customs`, with the
   registry's export permit verified offline), and for important data the
   holder's current accepted risk assessment. A refusal terminates the
   contract with that reason. With the listing's ``auto_approve`` it agrees
   at once; otherwise its operator decides (DecideContract).
3. Agreeing signs the terms (:func:`provex.contracts.seller_sign`) and tells
   the buyer (NotifyContract, through the durable outbox). The buyer
   verifies the seller's signature against the key the registry's directory
   certifies, countersigns and sends the two-signature envelope
   (FinalizeContract, through the outbox). The seller verifies both
   signatures, stores FINALIZED and reports the trade to the registry (outbox
   kind ``report_trade``, idempotency key = contract id, with the export
   declaration for an export); the buyer stores FINALIZED once the seller
   accepted. The registry's trade record bundle is verified and kept.
4. Either side terminates with a reason (DecideContract with ``agree``
   false); the other side is told through the outbox.

Peer calls that must happen (notify, finalize, terminate) are outbox items
like the registry calls: a peer that is down, or a restart of either node,
only delays them; the operator sees them in the outbox with their last error.

Readings chosen here (the rule text leaves room):

* *Buyer a known member of its node*: the registry lets a node read only its
  own members, so the buyer's node vouches: it proposes only for a member of
  its own whose report the registry acknowledged, and the seller accepts the
  claim from the node that the mutual-TLS certificate names (the caller must
  be ``buyer_node``). Freezes, which the registry publishes federation-wide,
  are checked on both sides.
* *Current risk assessment*: an ACCEPTED report of the holder whose period
  ended less than a calendar year ago (:func:`risk_assessment_expiry`, as
  the registry counts it).
* *The catalog's cross-border rules*: the node keeps no catalog copy of its
  own (its status feed only announces the version), so it fetches the
  registry's latest release (CatalogService.GetCatalog, with the link's
  deadline), verifies its bundle offline against the trust root like a
  permit, and keeps it decoded, replaced only when the registry answers a
  newer version; it asks again at most every
  :data:`CATALOG_RECHECK_SECONDS`. While the registry is unreachable the
  release last verified is enforced; with none verified yet an export
  waits (Unavailable: the contract stays requested). The dataset's
  categories are the certificate's, and each one's effective rule is
  :func:`provex.customs.cross_border_rules` of that release, as at the
  registry: a FORBIDDEN category is refused before any other registry call.
* *Export documents*: the export permit named by ``export_permit_id`` is
  fetched from the registry and verified offline (bundle, state, validity,
  scope). For personal information the registry's CheckExport gives this
  year's counts; when only a standard contract is needed and the id names
  no permit, it is taken as the filing's id, which the registry checks when
  the export is declared. The node knows no free-trade-zone negative list
  (the registry applies it), so it may be stricter than the registry.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node import datasets, listings, members, outbox
from node.registry_link import UNREACHABLE_CODES
from provex import bundle as bundles
from provex import contracts, customs
from provex import envelope as dsse
from provex.catalog import Release, release_from_proto
from provex.contracts import ContractRecord
from provex.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ProvexError,
    Unavailable,
    VerificationError,
)
from provex.grading import CrossBorderRule, Grade
from provex.ids import validate_node_id
from provex.members import check_credit_code
from provex.rpc import error_for_rpc_error
from provex.timestamps import from_timestamp, to_timestamp
from provex.trust import TrustRoot
from provex.v1 import (
    catalog_pb2,
    common_pb2,
    dataset_pb2,
    market_pb2,
    node_pb2,
    registry_pb2,
    supervision_pb2,
)

if TYPE_CHECKING:
    from node.federation import PeerDialer
    from node.registry_link import Peer, RegistryLink
    from provex.storage import Database

log = logging.getLogger(__name__)

Role = Literal["buyer", "seller"]

SCHEMA = """
-- Contracts this node is party to; ``contract`` is the serialized provex.v1.Contract.
-- ``export`` is the serialized ExportDeclaration the seller decided when agreeing (exports).
CREATE TABLE contracts (
    contract_id TEXT PRIMARY KEY,
    role        TEXT NOT NULL CHECK (role IN ('buyer', 'seller')),
    state       INTEGER NOT NULL,
    contract    BLOB NOT NULL,
    export      BLOB,
    updated_at  TEXT NOT NULL
);
CREATE INDEX contracts_by_state ON contracts (state, updated_at);
-- Risk assessments the operator submitted, by its idempotency key; ``assessment`` is the
-- serialized provex.v1.RiskAssessment (the registry's answer once filed).
CREATE TABLE risk_assessments (
    idempotency_key TEXT PRIMARY KEY,
    holder          TEXT NOT NULL,
    assessment      BLOB NOT NULL,
    created_at      TEXT NOT NULL
);
"""

CATALOG_SCHEMA = """
-- Catalog releases verified by this node (serialized provex.v1.Bundle of the signed
-- CatalogRelease), so its cross-border rules hold while the registry is unreachable.
CREATE TABLE catalog_releases (
    version   INTEGER PRIMARY KEY,
    release   BLOB NOT NULL,
    stored_at TEXT NOT NULL
);
"""

CATALOG_FOLLOW_SECONDS = 5.0
"""How often the node compares the announced catalog version with the one it keeps."""

REPORT_KIND = "report_trade"
RISK_KIND = "file_risk_assessment"
NOTIFY_KIND = "contract_notify"
FINALIZE_KIND = "contract_finalize"
TERMINATE_KIND = "contract_terminate"

RULE_CERTIFICATE = "valid-certificate"
RULE_LISTED = "listing-listed"
RULE_KNOWN_BUYER = "known-buyer"
RULE_CORE = "core-data-never-traded"
RULE_FROZEN = "member-not-frozen"
RULE_RISK_ASSESSMENT = "current-risk-assessment"
RULE_EXPORT_PERMIT = "export-permit"
RULES = (
    RULE_CERTIFICATE,
    RULE_LISTED,
    RULE_KNOWN_BUYER,
    RULE_CORE,
    RULE_FROZEN,
    RULE_RISK_ASSESSMENT,
    RULE_EXPORT_PERMIT,
)
"""The node's own rules; the cross-border ones are :mod:`provex.customs`'s (``catalog-...``)."""

RISK_ASSESSMENT_YEARS = 1
"""An accepted risk assessment is current until one calendar year after its period ends."""
ANSWER_WAIT_SECONDS = 3.0
CATALOG_RECHECK_SECONDS = 30.0
"""How long the catalog release last verified is used before the registry is asked again."""
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_KEY = 128

_BUYER_FIELDS = (
    "contract_id",
    "listing_id",
    "seller_node",
    "buyer",
    "buyer_node",
    "buyer_country",
    "purpose",
    "export_permit_id",
)
_MECHANISM = {
    customs.Mechanism.NOT_EXPORT: supervision_pb2.EXPORT_MECHANISM_UNSPECIFIED,
    customs.Mechanism.EXEMPT: supervision_pb2.EXPORT_MECHANISM_EXEMPT,
    customs.Mechanism.STANDARD_CONTRACT: supervision_pb2.EXPORT_MECHANISM_STANDARD_CONTRACT,
    customs.Mechanism.ASSESSMENT: supervision_pb2.EXPORT_MECHANISM_ASSESSMENT,
    customs.Mechanism.FORBIDDEN: supervision_pb2.EXPORT_MECHANISM_FORBIDDEN,
}

# ---------------------------------------------------------------- storage


def load_contract(
    conn: sqlite3.Connection, contract_id: str
) -> tuple[Role, market_pb2.Contract] | None:
    """This node's side of a contract and the contract as kept, or None if unknown."""
    row = conn.execute(
        "SELECT role, contract FROM contracts WHERE contract_id = ?", (contract_id,)
    ).fetchone()
    if row is None:
        return None
    role: Role = "buyer" if row[0] == "buyer" else "seller"
    return role, market_pb2.Contract.FromString(bytes(row[1]))


def require_contract(
    conn: sqlite3.Connection, contract_id: str
) -> tuple[Role, market_pb2.Contract]:
    """:func:`load_contract` of a normalized id; NotFound naming it otherwise."""
    cid = contracts.normalize_contract_id(contract_id)
    found = load_contract(conn, cid)
    if found is None:
        raise NotFound(f"contract {cid} is not known to this node")
    return found


def save_contract(
    conn: sqlite3.Connection,
    role: Role,
    contract: market_pb2.Contract,
    now: datetime,
    export: supervision_pb2.ExportDeclaration | None = None,
) -> market_pb2.Contract:
    """Insert or replace this node's copy of a contract (the caller's transaction)."""
    contract.updated_at.CopyFrom(to_timestamp(now))
    conn.execute(
        "INSERT INTO contracts (contract_id, role, state, contract, export, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (contract_id) DO UPDATE SET "
        "state = excluded.state, contract = excluded.contract, "
        "export = coalesce(excluded.export, contracts.export), updated_at = excluded.updated_at",
        (
            contract.terms.contract_id,
            role,
            int(contract.state),
            contract.SerializeToString(deterministic=True),
            None if export is None else export.SerializeToString(deterministic=True),
            now.isoformat(),
        ),
    )
    return contract


def _save_record(
    conn: sqlite3.Connection,
    role: Role,
    record: ContractRecord,
    export: supervision_pb2.ExportDeclaration | None = None,
) -> market_pb2.Contract:
    return save_contract(conn, role, record.to_proto(), record.updated_at, export)


def load_export(conn: sqlite3.Connection, contract_id: str) -> supervision_pb2.ExportDeclaration:
    """The export declaration decided when agreeing (empty for a domestic trade)."""
    row = conn.execute(
        "SELECT export FROM contracts WHERE contract_id = ?", (contract_id,)
    ).fetchone()
    if row is None or row[0] is None:
        return supervision_pb2.ExportDeclaration()
    return supervision_pb2.ExportDeclaration.FromString(bytes(row[0]))


def list_contracts(
    conn: sqlite3.Connection, state: int, page_size: int, page_token: str
) -> tuple[list[market_pb2.Contract], str]:
    """A page of contracts by id (optionally of one state), and the next page's token."""
    if page_size > MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size {page_size} is above the maximum {MAX_PAGE_SIZE}")
    if state and state not in market_pb2.ContractState.values():
        raise InvalidArgument(f"state {state} is not a contract state")
    size = page_size or DEFAULT_PAGE_SIZE
    after = ""
    if page_token:
        try:
            after = contracts.normalize_contract_id(
                base64.urlsafe_b64decode(page_token.encode("ascii")).decode("ascii")
            )
        except (binascii.Error, ValueError, InvalidArgument):
            raise InvalidArgument("page_token is not a token this node gave out") from None
    sql = "SELECT contract FROM contracts WHERE contract_id > ?"
    params: list[object] = [after]
    if state:
        sql += " AND state = ?"
        params.append(int(state))
    sql += " ORDER BY contract_id LIMIT ?"
    params.append(size + 1)
    rows = conn.execute(sql, params).fetchall()
    found = [market_pb2.Contract.FromString(bytes(row[0])) for row in rows[:size]]
    if len(rows) > size:
        token = base64.urlsafe_b64encode(found[-1].terms.contract_id.encode()).decode("ascii")
        return found, token
    return found, ""


# ---------------------------------------------------------------- terms


def request_terms(
    *,
    contract_id: str,
    seller_node: str,
    listing_id: str,
    buyer: str,
    buyer_node: str,
    buyer_country: str,
    purpose: str,
    export_permit_id: str,
) -> market_pb2.ContractTerms:
    """The buyer's part of the terms (what it proposes; the seller adds the listing's facts)."""
    return market_pb2.ContractTerms(
        contract_id=contract_id,
        listing_id=listing_id,
        seller_node=seller_node,
        buyer=buyer,
        buyer_node=buyer_node,
        buyer_country=buyer_country,
        purpose=purpose.strip(),
        export_permit_id=export_permit_id.strip(),
    )


def buyer_part(terms: market_pb2.ContractTerms) -> market_pb2.ContractTerms:
    """Only the fields the buyer proposes."""
    part = market_pb2.ContractTerms()
    for name in _BUYER_FIELDS:
        setattr(part, name, getattr(terms, name))
    return part


def differing_request(a: market_pb2.ContractTerms, b: market_pb2.ContractTerms) -> list[str]:
    """The buyer's fields in which two versions of a request differ."""
    return [name for name in _BUYER_FIELDS if getattr(a, name) != getattr(b, name)]


def is_complete(terms: market_pb2.ContractTerms) -> bool:
    """Whether the seller filled in the listing's facts (a buyer's request before: no)."""
    return bool(terms.dataset_id)


def complete_terms(
    request: market_pb2.ContractTerms,
    listing: market_pb2.Listing,
    content_digest: bytes,
) -> market_pb2.ContractTerms:
    """The seller's full terms: the buyer's request and the listing's facts, validated."""
    terms = buyer_part(request)
    terms.dataset_id = listing.dataset_id
    terms.certificate_version = listing.certificate_version
    terms.content_digest = content_digest
    terms.seller = listing.holder
    terms.price.CopyFrom(listing.price)
    terms.licence.CopyFrom(listing.licence)
    return contracts.validate_terms(terms)


# ---------------------------------------------------------------- the checks before agreeing


def refuse(rule: str, message: str) -> FailedPrecondition:
    """A refusal naming its rule."""
    return FailedPrecondition(f"rule {rule}: {message}")


@dataclass(frozen=True)
class SaleFacts:
    """What the seller's node knows locally when it checks a contract."""

    terms: market_pb2.ContractTerms
    listing_state: int
    certificate_status: str
    certificate_version: int
    grade: int
    seller_frozen: str | None = None
    buyer_frozen: str | None = None


def check_sale(facts: SaleFacts) -> None:
    """The seller's local rules, in order; FailedPrecondition naming the first one broken."""
    terms = facts.terms
    if facts.certificate_status != "active":
        raise refuse(
            RULE_CERTIFICATE,
            f"the certificate of dataset {terms.dataset_id} is {facts.certificate_status}",
        )
    if facts.certificate_version != terms.certificate_version:
        raise refuse(
            RULE_CERTIFICATE,
            f"dataset {terms.dataset_id} has certificate version {facts.certificate_version}, "
            f"the listing offers version {terms.certificate_version}",
        )
    if facts.listing_state != market_pb2.LISTING_STATE_LISTED:
        state = market_pb2.ListingState.Name(facts.listing_state).removeprefix("LISTING_STATE_")  # type: ignore[arg-type]
        raise refuse(RULE_LISTED, f"listing {terms.listing_id} is {state.lower()}, not listed")
    if facts.grade == Grade.CORE:
        raise refuse(RULE_CORE, f"dataset {terms.dataset_id} is core data, which is never traded")
    if facts.seller_frozen is not None:
        raise refuse(RULE_FROZEN, f"the seller {terms.seller} is frozen: {facts.seller_frozen}")
    if facts.buyer_frozen is not None:
        raise refuse(RULE_FROZEN, f"the buyer {terms.buyer} is frozen: {facts.buyer_frozen}")


def risk_assessment_expiry(period_end: datetime) -> datetime:
    """When an accepted report covering a period ending ``period_end`` stops being current.

    One calendar year later on the Asia/Shanghai wall clock (29 February: 28
    February), as the registry counts it.
    """
    local = period_end.astimezone(ZoneInfo(customs.TIMEZONE))
    try:
        later = local.replace(year=local.year + RISK_ASSESSMENT_YEARS)
    except ValueError:
        later = local.replace(year=local.year + RISK_ASSESSMENT_YEARS, day=28)
    return later.astimezone(UTC)


def check_risk_assessment(
    holder: str, assessments: list[supervision_pb2.RiskAssessment], now: datetime
) -> supervision_pb2.RiskAssessment:
    """The holder's current accepted risk assessment; FailedPrecondition if there is none."""
    current = [
        a
        for a in assessments
        if a.holder == holder
        and a.state == supervision_pb2.REVIEW_STATE_ACCEPTED
        and a.HasField("period_end")
        and now < risk_assessment_expiry(from_timestamp(a.period_end))
    ]
    if not current:
        raise refuse(
            RULE_RISK_ASSESSMENT,
            f"dataset is important data and its holder {holder} has no current accepted risk "
            "assessment (an accepted report whose period ended less than a calendar year ago): "
            "file one (`provex-node risk submit`) and have it accepted",
        )
    return max(current, key=lambda a: from_timestamp(a.period_end))


def permit_document(permit: supervision_pb2.ExportPermit, state: int) -> customs.ExportPermit:
    """The customs view of a verified registry permit; FailedPrecondition if it is unusable."""
    if state not in (supervision_pb2.REVIEW_STATE_ACCEPTED, supervision_pb2.REVIEW_STATE_REVOKED):
        raise refuse(
            RULE_EXPORT_PERMIT, f"export permit {permit.permit_id} is {_review_state(state)}"
        )
    try:
        return customs.ExportPermit(
            permit_id=permit.permit_id,
            exporter=permit.exporter,
            destination=permit.destination,
            purpose=permit.purpose or "unstated",
            issued_at=from_timestamp(permit.valid_from),
            expires_at=from_timestamp(permit.valid_until),
            dataset_ids=tuple(permit.dataset_ids),
            categories=tuple(permit.categories),
            recipient=permit.recipient or None,
            revoked=state == supervision_pb2.REVIEW_STATE_REVOKED,
        )
    except (InvalidArgument, ValueError) as error:
        raise refuse(RULE_EXPORT_PERMIT, f"export permit {permit.permit_id}: {error}") from None


def _review_state(state: int) -> str:
    try:
        name = supervision_pb2.ReviewState.Name(state)  # type: ignore[arg-type]
    except ValueError:
        return str(state)
    return name.removeprefix("REVIEW_STATE_").lower()


@dataclass(frozen=True)
class ExportFacts:
    """What customs needs of a trade, besides the documents and the year's counts."""

    terms: market_pb2.ContractTerms
    grade: int
    categories: tuple[str, ...]
    individuals: int
    sensitive: int


def decide_export(
    facts: ExportFacts,
    now: datetime,
    *,
    cross_border: dict[str, CrossBorderRule],
    counted: tuple[int, int] = (0, 0),
    documents: tuple[customs.ExportDocument, ...] = (),
) -> customs.ExportDecision:
    """:func:`provex.customs.check_export` of the trade (FailedPrecondition naming the rules).

    ``cross_border`` is each category's effective rule in the catalog in
    force (:func:`provex.customs.cross_border_rules`).
    """
    terms = facts.terms
    request = customs.ExportRequest(
        exporter=terms.seller,
        dataset_id=terms.dataset_id,
        grade=Grade(facts.grade),
        categories=facts.categories,
        buyer_country=terms.buyer_country,
        recipient=terms.buyer,
        date=now,
        individuals=facts.individuals,
        sensitive=facts.sensitive,
    )
    before = customs.YearlyCount(terms.seller, request.year, counted[0], counted[1])
    return customs.check_export(request, before, cross_border=cross_border, documents=documents)


def declaration(
    terms: market_pb2.ContractTerms, decision: customs.ExportDecision, facts: ExportFacts
) -> supervision_pb2.ExportDeclaration | None:
    """The export declaration of an export (None for a domestic trade)."""
    if not decision.is_export:
        return None
    return supervision_pb2.ExportDeclaration(
        exporter=terms.seller,
        destination=terms.buyer_country,
        individuals=facts.individuals,
        sensitive_individuals=facts.sensitive,
        mechanism=_MECHANISM[decision.mechanism],
        permit_id=decision.document_id or terms.export_permit_id,
    )


def trade_record(
    contract: market_pb2.Contract,
    listing: market_pb2.Listing,
    export: supervision_pb2.ExportDeclaration,
    now: datetime,
) -> supervision_pb2.TradeRecord:
    """The report of a finalized contract to the registry."""
    record = contracts.trade_record(
        contract.terms,
        contract.envelope,
        category=listing.categories[0] if listing.categories else "",
        grade=listing.grade,
        region_code=listing.region_code,
    )
    if export.exporter:
        record.export.CopyFrom(export)
    record.finalized_at.CopyFrom(to_timestamp(now))
    return record


# ---------------------------------------------------------------- risk assessments


def validate_assessment(
    assessment: supervision_pb2.RiskAssessment, node_id: str
) -> supervision_pb2.RiskAssessment:
    """A submitted risk assessment, checked, stamped with this node; InvalidArgument naming why."""
    out = supervision_pb2.RiskAssessment()
    out.CopyFrom(assessment)
    out.holder = check_credit_code(assessment.holder, "assessment.holder")
    out.node_id = node_id
    if not assessment.HasField("period_start") or not assessment.HasField("period_end"):
        raise InvalidArgument("assessment.period_start and assessment.period_end are required")
    if from_timestamp(assessment.period_end) <= from_timestamp(assessment.period_start):
        raise InvalidArgument("assessment.period_end must be after assessment.period_start")
    if not assessment.data:
        raise InvalidArgument("assessment.data must list the kinds of data and their quantities")
    for position, item in enumerate(assessment.data):
        if not item.category.strip():
            raise InvalidArgument(f"assessment.data[{position}].category is required")
    for name in ("processing", "risks", "measures"):
        if not getattr(assessment, name).strip():
            raise InvalidArgument(f"assessment.{name} is required")
    if len(assessment.report_digest) != 32:
        raise InvalidArgument(
            "assessment.report_digest must be the 32-byte SHA-256 of the full report, "
            f"got {len(assessment.report_digest)} bytes"
        )
    for name in ("assessment_id", "state", "review_reason", "reviewed_by", "filed_at"):
        out.ClearField(name)  # type: ignore[arg-type]
    return out


def submit_assessment(
    conn: sqlite3.Connection,
    node_id: str,
    key: str,
    assessment: supervision_pb2.RiskAssessment,
    now: datetime,
) -> tuple[supervision_pb2.RiskAssessment, node_pb2.OutboxItem]:
    """Store a risk assessment and queue it for the registry (the caller's transaction)."""
    if not 1 <= len(key) <= MAX_KEY:
        raise InvalidArgument(f"idempotency_key must be 1..{MAX_KEY} characters, got {len(key)}")
    checked = validate_assessment(assessment, node_id)
    member = members.get_member(conn, checked.holder)
    if member is None:
        raise FailedPrecondition(
            f"assessment.holder {checked.holder} is not a member of this node: add it first"
        )
    outbox_key = f"risk:{node_id}:{key}"
    row = conn.execute(
        "SELECT assessment FROM risk_assessments WHERE idempotency_key = ?", (key,)
    ).fetchone()
    request = supervision_pb2.FileRiskAssessmentRequest(idempotency_key=outbox_key)
    request.assessment.CopyFrom(checked)
    if row is None:
        conn.execute(
            "INSERT INTO risk_assessments (idempotency_key, holder, assessment, created_at) "
            "VALUES (?, ?, ?, ?)",
            (key, checked.holder, checked.SerializeToString(deterministic=True), now.isoformat()),
        )
        stored = checked
    else:
        stored = supervision_pb2.RiskAssessment.FromString(bytes(row[0]))
        previous = outbox.get_row(conn, outbox_key)
        if previous is not None and previous.payload != request.SerializeToString(
            deterministic=True
        ):
            raise AlreadyExists(f"idempotency key {key} was used for another risk assessment")
    item = outbox.enqueue(
        conn, RISK_KIND, outbox_key, request.SerializeToString(deterministic=True), now
    )
    return stored, item


def get_assessment(conn: sqlite3.Connection, key: str) -> supervision_pb2.RiskAssessment:
    """The stored risk assessment of a submission (the registry's answer once filed)."""
    row = conn.execute(
        "SELECT assessment FROM risk_assessments WHERE idempotency_key = ?", (key,)
    ).fetchone()
    if row is None:
        raise NotFound(f"no risk assessment was submitted with idempotency key {key}")
    return supervision_pb2.RiskAssessment.FromString(bytes(row[0]))


def _assessment_filed(conn: sqlite3.Connection, item: outbox.OutboxItemRow, result: bytes) -> None:
    answer = supervision_pb2.FileRiskAssessmentResponse.FromString(result)
    key = item.key.split(":", 2)[2]
    conn.execute(
        "UPDATE risk_assessments SET assessment = ? WHERE idempotency_key = ?",
        (answer.assessment.SerializeToString(deterministic=True), key),
    )


# ---------------------------------------------------------------- the negotiation


def _certificate(record: node_pb2.DatasetRecord) -> dataset_pb2.DatasetCertificate | None:
    if not record.HasField("certificate"):
        return None
    payload = dsse.Envelope.from_json(record.certificate.envelope).payload
    return dataset_pb2.DatasetCertificate.FromString(payload)


def _status_name(record: node_pb2.DatasetRecord) -> str:
    return {
        common_pb2.STATUS_ACTIVE: "active",
        common_pb2.STATUS_SUSPENDED: "suspended",
        common_pb2.STATUS_REVOKED: "revoked",
    }.get(record.status, "unknown")


@dataclass(frozen=True)
class _Sale:
    """What the seller gathered from its database for the checks."""

    facts: SaleFacts
    export: ExportFacts
    listing: market_pb2.Listing


def _gather_sale(conn: sqlite3.Connection, terms: market_pb2.ContractTerms) -> _Sale:
    listing = listings.get_listing(conn, terms.listing_id)
    record = datasets.get_dataset(conn, dataset_id=terms.dataset_id)
    certificate = _certificate(record)
    status = _status_name(record) if certificate is not None else "missing"
    facts = SaleFacts(
        terms=terms,
        listing_state=listing.state,
        certificate_status=status,
        certificate_version=certificate.version if certificate is not None else 0,
        grade=int(certificate.grade) if certificate is not None else int(listing.grade),
        seller_frozen=members.frozen_reason(conn, terms.seller),
        buyer_frozen=members.frozen_reason(conn, terms.buyer),
    )
    personal = certificate.dataset.personal_info if certificate is not None else None
    # Customs reads the certificate's categories, as the registry does (the listing copies them).
    categories = tuple(listing.categories)
    if certificate is not None and certificate.dataset.categories:
        categories = tuple(certificate.dataset.categories)
    export = ExportFacts(
        terms=terms,
        grade=facts.grade,
        categories=categories,
        individuals=personal.individuals if personal is not None else 0,
        sensitive=personal.sensitive_individuals if personal is not None else 0,
    )
    return _Sale(facts, export, listing)


class Trading:
    """Both sides of the negotiation, the operator's view of contracts, risk assessments.

    Built by :class:`node.instance.NodeInstance`; registers its outbox kinds
    (registry and peer calls) on the node's worker before it starts.
    """

    def __init__(
        self,
        *,
        node_id: str,
        signing_key: Ed25519PrivateKey,
        trust_root: TrustRoot | Callable[[], TrustRoot],
        writer: Database,
        reader: Database,
        link: RegistryLink,
        worker: outbox.OutboxWorker,
        dialer: PeerDialer,
        peers: Callable[[], Awaitable[list[Peer]]],
        clock: Callable[[], datetime],
        peer_deadline: float,
    ) -> None:
        self._node_id = node_id
        self._key = signing_key
        self._public = dsse.raw_public_key(signing_key.public_key())
        # A function when the node follows new trust root versions (node.trust_follow).
        self._trust_root = trust_root
        self._writer = writer
        self._reader = reader
        self._link = link
        self._worker = worker
        self._dialer = dialer
        self._peers = peers
        self._clock = clock
        self._deadline = peer_deadline
        self._keys: dict[str, bytes] = {node_id: self._public}
        self._release: Release | None = None
        self._release_checked = float("-inf")
        self._release_lock = asyncio.Lock()
        worker.add_kind(NOTIFY_KIND, self._send_notify)
        worker.add_kind(
            FINALIZE_KIND,
            self._send_finalize,
            on_done=self._finalized,
            on_failed=self._finalize_refused,
        )
        worker.add_kind(TERMINATE_KIND, self._send_terminate)
        worker.add_kind(REPORT_KIND, self._report_trade, on_done=self._trade_reported)
        worker.add_kind(RISK_KIND, self._file_assessment, on_done=_assessment_filed)

    # ------------------------------------------------------------ helpers

    @property
    def _root(self) -> TrustRoot:
        """The trust root in use now (swapped after a rotation)."""
        root = self._trust_root
        return root if isinstance(root, TrustRoot) else root()

    async def _wait(self, key: str) -> None:
        self._worker.wake()
        with contextlib.suppress(NotFound):
            await self._worker.wait_done(key, ANSWER_WAIT_SECONDS)

    async def _peer(self, node_id: str) -> Peer:
        for peer in await self._peers():
            if peer.node_id != node_id:
                continue
            if not peer.active:
                raise FailedPrecondition(f"node {node_id} is revoked in the registry's directory")
            if not peer.endpoint or peer.endpoint.endswith(":0"):
                raise Unavailable(f"node {node_id} has not announced its peer endpoint yet")
            return peer
        raise NotFound(
            f"node {node_id} is not in the registry's node directory as this node last saw it"
        )

    async def public_key(self, node_id: str) -> bytes:
        """A node's Ed25519 signing key as the registry's directory certifies it."""
        known = self._keys.get(node_id)
        if known is not None:
            return known
        try:
            answer = await self._link.directory.GetNode(
                registry_pb2.GetNodeRequest(node_id=node_id), timeout=self._link.deadline
            )
        except grpc.aio.AioRpcError as error:
            raise error_for_rpc_error(error, "the registry (signing key of a node)") from None
        if answer.node.status != common_pb2.STATUS_ACTIVE:
            raise FailedPrecondition(f"node {node_id} is not active in the registry's directory")
        key = bytes(answer.node.signing_key)
        self._keys[node_id] = key
        return key

    async def catalog_release(self) -> Release:
        """The registry's latest catalog release, verified offline (see the module docstring).

        Every newer release verified is also stored (``catalog_releases``), so a
        node restarted while the registry is unreachable enforces the last one.
        """
        loop = asyncio.get_running_loop()
        async with self._release_lock:
            kept = self._release
            if kept is not None and loop.time() < self._release_checked + CATALOG_RECHECK_SECONDS:
                return kept
            try:
                answer = await self._link.catalog.GetCatalog(
                    registry_pb2.GetCatalogRequest(version=0), timeout=self._link.deadline
                )
            except grpc.aio.AioRpcError as error:
                if error.code() in UNREACHABLE_CODES:
                    if kept is None:
                        kept = await self._stored_release()
                    if kept is not None:
                        self._release = kept
                        log.warning(
                            "registry unreachable (%s): enforcing catalog version %d",
                            error.code().name,
                            kept.catalog.version,
                        )
                        return kept
                raise error_for_rpc_error(error, "the registry (GetCatalog)") from None
            message = self._verified_release(answer.release)
            if kept is None or message.version > kept.catalog.version:
                kept = self._decoded_release(message)
                bundle = answer.release.SerializeToString()
                now = self._clock().isoformat()
                await self._writer.transaction(
                    lambda conn: conn.execute(
                        "INSERT OR IGNORE INTO catalog_releases (version, release, stored_at) "
                        "VALUES (?, ?, ?)",
                        (message.version, bundle, now),
                    )
                )
                self._release = kept
                log.info("catalog version %d verified for the cross-border rules", message.version)
            self._release_checked = loop.time()
            return kept

    def _verified_release(self, bundle: common_pb2.Bundle) -> catalog_pb2.CatalogRelease:
        try:
            return bundles.verify_bundle(bundle, self._root, catalog_pb2.CatalogRelease).document
        except VerificationError as error:
            raise Unavailable(
                f"the catalog release does not verify against the trust root: "
                f"{error}; the cross-border rules cannot be checked"
            ) from None

    @staticmethod
    def _decoded_release(message: catalog_pb2.CatalogRelease) -> Release:
        try:
            return release_from_proto(message)
        except (InvalidArgument, FailedPrecondition) as error:
            raise Unavailable(
                f"the catalog version {message.version} does not decode: "
                f"{error}; the cross-border rules cannot be checked"
            ) from None

    async def _stored_release(self) -> Release | None:
        """The newest release stored by an earlier run, verified again; None if none."""

        def read(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(
                "SELECT release FROM catalog_releases ORDER BY version DESC LIMIT 1"
            ).fetchone()
            return None if row is None else bytes(row[0])

        stored = await self._reader.run(read)
        if stored is None:
            return None
        bundle = common_pb2.Bundle.FromString(stored)
        return self._decoded_release(self._verified_release(bundle))

    async def follow_catalog(self, announced: Callable[[], int], interval: float) -> None:
        """Fetch, verify and store each catalog version the registry announces (runs forever).

        ``announced`` is the version the status feed last carried; the node
        keeps the release itself so it can enforce it while the registry is away.
        """
        while True:
            kept = self._release
            if kept is None or announced() > kept.catalog.version:
                try:
                    if kept is not None:
                        self._release_checked = float("-inf")
                    await self.catalog_release()
                except ProvexError as error:
                    log.warning("catalog version %d not synced yet: %s", announced(), error)
            await asyncio.sleep(interval)

    async def _cross_border(self, categories: tuple[str, ...]) -> dict[str, CrossBorderRule]:
        """Each category's effective cross-border rule in the catalog in force."""
        release = await self.catalog_release()
        return customs.cross_border_rules(release.catalog, categories)

    async def _registry(self, what: str, call: Awaitable[object]) -> object:
        try:
            return await call
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.UNIMPLEMENTED:
                raise Unavailable(f"the registry does not answer {what} yet") from None
            raise error_for_rpc_error(error, f"the registry ({what})") from None

    # ------------------------------------------------------------ operator: reads

    async def get(self, contract_id: str) -> market_pb2.Contract:
        """This node's copy of a contract (a buyer's copy fetches the seller's trade record)."""
        role, contract = await self._reader.run(lambda conn: require_contract(conn, contract_id))
        if (
            role == "buyer"
            and contract.state == contracts.FINALIZED
            and not contract.HasField("trade_record")
        ):
            contract = await self._fetch_trade_record(contract)
        return contract

    async def _fetch_trade_record(self, contract: market_pb2.Contract) -> market_pb2.Contract:
        """Ask the seller's node for the registry's trade record; keep it once verified."""
        cid, seller_node = contract.terms.contract_id, contract.terms.seller_node
        try:
            peer = await self._peer(seller_node)
            answer = await asyncio.wait_for(
                self._dialer.stub(peer).GetPeerContract(
                    node_pb2.GetPeerContractRequest(contract_id=cid), timeout=self._deadline
                ),
                self._deadline + 0.25,
            )
        except (ProvexError, grpc.aio.AioRpcError, TimeoutError) as error:
            log.info("trade record of %s not fetched from %s: %s", cid, seller_node, error)
            return contract
        if not answer.contract.HasField("trade_record"):
            return contract
        try:
            record = bundles.verify_bundle(
                answer.contract.trade_record, self._root, supervision_pb2.TradeRecord
            ).document
        except VerificationError as error:
            log.warning("trade record of %s from %s does not verify: %s", cid, seller_node, error)
            return contract
        if record.contract_id != cid or record.contract != contract.envelope:
            log.warning(
                "node %s answered a trade record of another contract for %s", seller_node, cid
            )
            return contract
        now = self._clock()

        def store(conn: sqlite3.Connection) -> market_pb2.Contract:
            role, current = require_contract(conn, cid)
            if current.state != contracts.FINALIZED or current.HasField("trade_record"):
                return current
            current.trade_record.CopyFrom(answer.contract.trade_record)
            return save_contract(conn, role, current, now)

        return await self._writer.transaction(store)

    async def list(
        self, state: int, page_size: int, page_token: str
    ) -> tuple[list[market_pb2.Contract], str]:
        """A page of the contracts this node is party to."""
        return await self._reader.run(
            lambda conn: list_contracts(conn, state, page_size, page_token)
        )

    # ------------------------------------------------------------ buyer

    async def request(self, request: node_pb2.RequestContractRequest) -> market_pb2.Contract:
        """RequestContract: record the request, propose it to the seller, answer the contract."""
        cid = contracts.contract_id_for(self._node_id, request.idempotency_key)
        if not request.seller_node:
            raise InvalidArgument("seller_node is required (the seller's node id, e.g. sh-sde)")
        try:
            seller_node = validate_node_id(request.seller_node)
        except InvalidArgument as error:
            raise InvalidArgument(f"seller_node: {error}") from None
        if seller_node == self._node_id:
            raise InvalidArgument(
                f"seller_node is this node ({self._node_id}): a trade between members of one "
                "exchange is not a federation contract"
            )
        listing_id = listings.normalize_listing_id(request.listing_id)
        buyer = check_credit_code(request.buyer, "buyer")
        if not request.purpose.strip():
            raise InvalidArgument("purpose is required: what the buyer will use the data for")
        now = self._clock()

        def record(conn: sqlite3.Connection) -> market_pb2.Contract:
            member = members.get_member(conn, buyer)
            if member is None:
                raise refuse(RULE_KNOWN_BUYER, f"buyer {buyer} is not a member of this node")
            terms = request_terms(
                contract_id=cid,
                seller_node=seller_node,
                listing_id=listing_id,
                buyer=buyer,
                buyer_node=self._node_id,
                buyer_country=(member.country or contracts.MAINLAND).upper(),
                purpose=request.purpose,
                export_permit_id=request.export_permit_id,
            )
            found = load_contract(conn, cid)
            if found is not None:
                role, stored = found
                differing = differing_request(buyer_part(stored.terms), terms)
                if role != "buyer" or differing:
                    raise AlreadyExists(
                        f"idempotency key {request.idempotency_key!r} was used for another "
                        f"request (contract {cid}, differing: {', '.join(differing) or 'role'}); "
                        "a new contract needs a new key"
                    )
                return stored
            frozen = members.frozen_reason(conn, buyer)
            if frozen is not None:
                raise refuse(RULE_FROZEN, f"the buyer {buyer} is frozen: {frozen}")
            if not members.report_acknowledged(conn, self._node_id, buyer):
                raise refuse(
                    RULE_KNOWN_BUYER,
                    f"buyer {buyer} is not known to the registry yet: its member report is "
                    "still in the outbox (see `provex-node outbox`); retry once it is done",
                )
            contract = market_pb2.Contract(terms=terms, state=contracts.REQUESTED)
            return save_contract(conn, "buyer", contract, now)

        contract = await self._writer.transaction(record)
        if contract.state != contracts.REQUESTED:
            return contract
        return await self._propose(contract)

    async def _propose(self, contract: market_pb2.Contract) -> market_pb2.Contract:
        terms = contract.terms
        cid = terms.contract_id
        peer = await self._peer(terms.seller_node)
        try:
            answer = await self._dialer.stub(peer).ProposeContract(
                node_pb2.ProposeContractRequest(terms=buyer_part(terms)), timeout=self._deadline
            )
        except grpc.aio.AioRpcError as error:
            refusal = error_for_rpc_error(error, f"seller node {terms.seller_node}")
            if isinstance(refusal, FailedPrecondition):
                await self._terminate_locally(cid, str(refusal))
                raise refusal from None
            if isinstance(refusal, Unavailable):
                raise Unavailable(
                    f"{refusal}; contract {cid} is kept as requested: retry RequestContract with "
                    "the same idempotency key"
                ) from None
            raise refusal from None
        return await self._accept_answer(answer.contract)

    async def _terminate_locally(self, contract_id: str, reason: str) -> market_pb2.Contract:
        now = self._clock()

        def terminate(conn: sqlite3.Connection) -> market_pb2.Contract:
            role, stored = require_contract(conn, contract_id)
            if stored.state in (contracts.FINALIZED, contracts.TERMINATED):
                return stored
            stored.state = contracts.TERMINATED
            stored.termination_reason = contracts.check_reason(reason[: contracts.MAX_REASON])
            return save_contract(conn, role, stored, now)

        return await self._writer.transaction(terminate)

    async def _accept_answer(self, answer: market_pb2.Contract) -> market_pb2.Contract:
        """The buyer applies the seller's view of its request (Propose answer or Notify)."""
        terms = contracts.validate_terms(answer.terms)
        cid = terms.contract_id
        if answer.state in (contracts.AGREED, contracts.FINALIZED):
            return await self._agreed(answer)
        now = self._clock()

        def apply(conn: sqlite3.Connection) -> market_pb2.Contract:
            role, stored = require_contract(conn, cid)
            differing = differing_request(buyer_part(stored.terms), buyer_part(terms))
            if role != "buyer" or differing:
                raise FailedPrecondition(
                    f"the seller answered contract {cid} with other terms than requested "
                    f"(differing: {', '.join(differing) or 'role'})"
                )
            if answer.state == contracts.TERMINATED:
                if stored.state in (contracts.FINALIZED, contracts.TERMINATED):
                    return stored
                stored.state = contracts.TERMINATED
                stored.termination_reason = contracts.check_reason(answer.termination_reason)
                return save_contract(conn, role, stored, now)
            if answer.state != contracts.REQUESTED:
                raise InvalidArgument(f"contract.state {answer.state} is not a contract state")
            if stored.state == contracts.REQUESTED:
                terms.ClearField("agreed_at")
                stored.terms.CopyFrom(terms)
                return save_contract(conn, role, stored, now)
            return stored

        return await self._writer.transaction(apply)

    async def _agreed(self, answer: market_pb2.Contract) -> market_pb2.Contract:
        """The seller agreed: verify its signature, countersign, queue the finalization."""
        terms = answer.terms
        cid = contracts.normalize_contract_id(terms.contract_id)
        seller_key = await self.public_key(terms.seller_node)
        now = self._clock()
        agreed_envelope = answer.envelope
        if answer.state == contracts.FINALIZED:
            parsed = dsse.Envelope.from_json(answer.envelope)
            agreed_envelope = dsse.Envelope(
                parsed.payload_type, parsed.payload, parsed.signatures[:1]
            ).to_json()

        def apply(conn: sqlite3.Connection) -> market_pb2.Contract:
            role, stored = require_contract(conn, cid)
            if role != "buyer":
                raise PermissionDenied(f"this node is the seller of contract {cid}, not the buyer")
            if stored.state in (contracts.FINALIZED, contracts.TERMINATED):
                return stored
            if stored.state == contracts.AGREED:
                return stored  # The finalization is queued already.
            proposed = contracts.validate_terms(terms)
            proposed.ClearField("agreed_at")
            differing = differing_request(buyer_part(stored.terms), buyer_part(proposed))
            if differing:
                raise FailedPrecondition(
                    f"the seller agreed to contract {cid} with other terms than requested "
                    f"(differing: {', '.join(differing)})"
                )
            record = ContractRecord(terms=proposed, state=contracts.REQUESTED, updated_at=now)
            agreed = record.agree(agreed_envelope, seller_key, now).record
            countersigned = contracts.buyer_countersign(
                agreed.envelope, proposed, self._key, seller_public_key=seller_key
            )
            request = node_pb2.FinalizeContractRequest(contract_id=cid, envelope=countersigned)
            outbox.enqueue(
                conn,
                FINALIZE_KIND,
                f"finalize:{cid}",
                request.SerializeToString(deterministic=True),
                now,
            )
            return _save_record(conn, "buyer", agreed)

        contract = await self._writer.transaction(apply)
        if contract.state == contracts.AGREED:
            await self._wait(f"finalize:{cid}")
            contract = await self.get(cid)
        return contract

    async def _send_finalize(self, key: str, payload: bytes) -> bytes:
        request = node_pb2.FinalizeContractRequest.FromString(payload)
        _, stored = await self._reader.run(lambda conn: require_contract(conn, request.contract_id))
        return await self._call_peer(stored.terms.seller_node, "FinalizeContract", request)

    def _finalized(
        self, conn: sqlite3.Connection, item: outbox.OutboxItemRow, result: bytes
    ) -> None:
        request = node_pb2.FinalizeContractRequest.FromString(item.payload)
        answer = node_pb2.FinalizeContractResponse.FromString(result).contract
        role, stored = require_contract(conn, request.contract_id)
        if stored.state != contracts.AGREED:
            return
        if answer.state == contracts.FINALIZED and answer.envelope == request.envelope:
            record = ContractRecord.from_proto(stored)
            done = replace(
                record,
                state=contracts.FINALIZED,
                envelope=request.envelope,
                updated_at=self._clock(),
            )
            _save_record(conn, role, done)
        elif answer.state == contracts.TERMINATED:
            stored.state = contracts.TERMINATED
            stored.termination_reason = answer.termination_reason or "terminated by the seller"
            save_contract(conn, role, stored, self._clock())

    def _finalize_refused(
        self, conn: sqlite3.Connection, item: outbox.OutboxItemRow, error: ProvexError
    ) -> None:
        request = node_pb2.FinalizeContractRequest.FromString(item.payload)
        role, stored = require_contract(conn, request.contract_id)
        if stored.state == contracts.AGREED:
            stored.state = contracts.TERMINATED
            stored.termination_reason = contracts.check_reason(
                f"the seller node refused the finalization: {error}"[: contracts.MAX_REASON]
            )
            save_contract(conn, role, stored, self._clock())

    async def _call_peer(self, node_id: str, method: str, request: object) -> bytes:
        """An outbox handler's peer call: Retry while the peer cannot be reached."""
        try:
            peer = await self._peer(node_id)
        except (NotFound, Unavailable) as error:
            raise outbox.Retry(str(error)) from None
        stub = self._dialer.stub(peer)
        try:
            answer = await getattr(stub, method)(request, timeout=self._deadline)
        except grpc.aio.AioRpcError as error:
            raise outbox.classify_rpc_error(error, f"node {node_id}") from None
        return bytes(answer.SerializeToString())

    # ------------------------------------------------------------ peer: the buyer side

    async def notified(self, caller: str, contract: market_pb2.Contract) -> market_pb2.Contract:
        """NotifyContract from the seller: agreed (countersign and finalize) or terminated."""
        if not contract.HasField("terms"):
            raise InvalidArgument("contract.terms is required")
        cid = contracts.normalize_contract_id(
            contract.terms.contract_id, "contract.terms.contract_id"
        )
        _, stored = await self._reader.run(lambda conn: require_contract(conn, cid))
        if caller != stored.terms.seller_node:
            raise PermissionDenied(
                f"node {caller} is not the seller node of contract {cid} "
                f"({stored.terms.seller_node})"
            )
        if contract.state not in (contracts.AGREED, contracts.TERMINATED, contracts.FINALIZED):
            raise InvalidArgument(
                "contract.state must be agreed or terminated in a notification, got "
                f"{contract.state}"
            )
        if contract.state == contracts.TERMINATED:
            contracts.check_reason(contract.termination_reason, "contract.termination_reason")
        return await self._accept_answer(contract)

    # ------------------------------------------------------------ peer: the seller side

    async def proposed(self, caller: str, request: market_pb2.ContractTerms) -> market_pb2.Contract:
        """ProposeContract from the buyer's node: record, check, agree if the listing says so."""
        cid = contracts.normalize_contract_id(request.contract_id, "terms.contract_id")
        if request.buyer_node != caller:
            raise PermissionDenied(
                f"node {caller} cannot propose for buyer node {request.buyer_node!r}: a node "
                "proposes for its own members"
            )
        if request.seller_node != self._node_id:
            raise InvalidArgument(
                f"terms.seller_node is {request.seller_node!r}, but this node is {self._node_id}"
            )
        listing_id = listings.normalize_listing_id(request.listing_id, "terms.listing_id")
        try:
            await self._peer(caller)
        except (FailedPrecondition, NotFound):
            raise PermissionDenied(
                f"node {caller} is not an active node of the registry's directory"
            ) from None
        except Unavailable:
            pass  # Active, not yet announced: its endpoint is not needed to answer it.
        now = self._clock()

        def record(conn: sqlite3.Connection) -> tuple[market_pb2.Contract, bool]:
            found = load_contract(conn, cid)
            if found is not None:
                role, stored = found
                differing = differing_request(buyer_part(stored.terms), buyer_part(request))
                if role != "seller" or differing:
                    raise AlreadyExists(
                        f"contract {cid} exists with another request (differing: "
                        f"{', '.join(differing) or 'role'}); a new contract needs a new "
                        "idempotency key"
                    )
                return stored, False
            listing = listings.get_listing(conn, listing_id)
            record = datasets.get_dataset(conn, dataset_id=listing.dataset_id)
            certificate = _certificate(record)
            if certificate is None:
                raise refuse(RULE_CERTIFICATE, f"dataset {listing.dataset_id} has no certificate")
            terms = complete_terms(request, listing, certificate.dataset.content_digest)
            created = contracts.propose(None, terms, now).record
            return _save_record(conn, "seller", created), listing.auto_approve

        contract, auto = await self._writer.transaction(record)
        if contract.state != contracts.REQUESTED:
            return contract
        try:
            return await self._review(cid, agree=auto)
        except Unavailable as error:
            log.info("contract %s stays requested: %s", cid, error)
            return contract

    async def decide(self, contract_id: str, agree: bool, reason: str) -> market_pb2.Contract:
        """DecideContract: the seller agrees or refuses; either side may terminate."""
        role, stored = await self._reader.run(lambda conn: require_contract(conn, contract_id))
        cid = stored.terms.contract_id
        if not agree:
            return await self.terminate(cid, reason)
        if role == "buyer":
            raise FailedPrecondition(
                f"this node is the buyer of contract {cid}: the seller's node agrees; the buyer "
                "may only terminate (agree=false with a reason)"
            )
        if stored.state == contracts.TERMINATED:
            contracts.transition(stored.state, contracts.AGREED)
        return await self._review(cid, agree=True)

    async def _review(self, cid: str, *, agree: bool) -> market_pb2.Contract:
        """Check a requested contract; refuse (terminate) or, with ``agree``, sign and notify."""
        _, stored = await self._reader.run(lambda conn: require_contract(conn, cid))
        if stored.state != contracts.REQUESTED:
            return stored
        sale = await self._reader.run(lambda conn: _gather_sale(conn, stored.terms))
        try:
            check_sale(sale.facts)
            export = await self._check_with_registry(sale)
        except FailedPrecondition as refusal:
            await self.terminate(cid, str(refusal))
            raise
        if not agree:
            return stored
        now = self._clock()

        def sign(conn: sqlite3.Connection) -> market_pb2.Contract:
            role, current = require_contract(conn, cid)
            if current.state != contracts.REQUESTED:
                return current
            record = ContractRecord.from_proto(current)
            envelope = contracts.seller_sign(record.terms, self._key, agreed_at=now)
            agreed = record.agree(envelope, self._public, now).record
            contract = _save_record(conn, role, agreed, export)
            outbox.enqueue(
                conn,
                NOTIFY_KIND,
                f"notify:{cid}:agreed",
                node_pb2.NotifyContractRequest(contract=contract).SerializeToString(
                    deterministic=True
                ),
                now,
            )
            return contract

        contract = await self._writer.transaction(sign)
        await self._wait(f"notify:{cid}:agreed")
        return await self.get(cid) if contract.state == contracts.AGREED else contract

    async def _check_with_registry(self, sale: _Sale) -> supervision_pb2.ExportDeclaration | None:
        """The rules that need the registry: the cross-border rules, the risk assessment."""
        terms = sale.facts.terms
        now = self._clock()
        decision: customs.ExportDecision | None = None
        if customs.is_export(terms.buyer_country):
            documents: list[customs.ExportDocument] = []
            counted = (0, 0)
            rules = await self._cross_border(sale.export.categories)
            if sale.export.grade == Grade.CORE or CrossBorderRule.FORBIDDEN in rules.values():
                # Raises: core data and forbidden categories never leave, whatever is held.
                decide_export(sale.export, now, cross_border=rules)
            if sale.export.individuals or sale.export.sensitive:
                counted = await self._counted(sale)
            if terms.export_permit_id:
                documents.append(await self._permit(terms, counted, sale, now))
            decision = decide_export(
                sale.export, now, cross_border=rules, counted=counted, documents=tuple(documents)
            )
        if sale.facts.grade == Grade.IMPORTANT:
            answer = await self._registry(
                "ListRiskAssessments",
                self._link.supervision.ListRiskAssessments(
                    supervision_pb2.ListRiskAssessmentsRequest(
                        holder=terms.seller, state=supervision_pb2.REVIEW_STATE_ACCEPTED
                    ),
                    timeout=self._link.deadline,
                ),
            )
            assert isinstance(answer, supervision_pb2.ListRiskAssessmentsResponse)
            check_risk_assessment(terms.seller, list(answer.assessments), now)
        return None if decision is None else declaration(terms, decision, sale.export)

    async def _counted(self, sale: _Sale) -> tuple[int, int]:
        terms = sale.facts.terms
        answer = await self._registry(
            "CheckExport",
            self._link.supervision.CheckExport(
                supervision_pb2.CheckExportRequest(
                    exporter=terms.seller,
                    destination=terms.buyer_country,
                    dataset_ids=[terms.dataset_id],
                    individuals=sale.export.individuals,
                    sensitive_individuals=sale.export.sensitive,
                ),
                timeout=self._link.deadline,
            ),
        )
        assert isinstance(answer, supervision_pb2.CheckExportResponse)
        return answer.exported_individuals, answer.exported_sensitive_individuals

    async def _permit(
        self,
        terms: market_pb2.ContractTerms,
        counted: tuple[int, int],
        sale: _Sale,
        now: datetime,
    ) -> customs.ExportDocument:
        """The export document ``export_permit_id`` names: a verified permit, or a filing."""
        try:
            answer = await self._link.supervision.GetExportPermit(
                supervision_pb2.GetExportPermitRequest(permit_id=terms.export_permit_id),
                timeout=self._link.deadline,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.NOT_FOUND:
                return self._filing(terms, counted, sale, now)
            if error.code() is grpc.StatusCode.UNIMPLEMENTED:
                raise Unavailable("the registry does not answer GetExportPermit yet") from None
            raise error_for_rpc_error(error, "the registry (GetExportPermit)") from None
        if not answer.permit.envelope:
            raise refuse(
                RULE_EXPORT_PERMIT,
                f"export permit {terms.export_permit_id} is "
                f"{_review_state(answer.state)}: it has not been approved",
            )
        try:
            permit = bundles.verify_bundle(
                answer.permit, self._root, supervision_pb2.ExportPermit
            ).document
        except VerificationError as error:
            raise refuse(
                RULE_EXPORT_PERMIT,
                f"export permit {terms.export_permit_id} does not verify: {error}",
            ) from None
        if permit.permit_id != terms.export_permit_id:
            raise refuse(
                RULE_EXPORT_PERMIT,
                f"the registry answered permit {permit.permit_id} for {terms.export_permit_id}",
            )
        revoked = supervision_pb2.REVIEW_STATE_REVOKED
        return permit_document(
            permit, revoked if revoked in (answer.state, permit.state) else permit.state
        )

    def _filing(
        self,
        terms: market_pb2.ContractTerms,
        counted: tuple[int, int],
        sale: _Sale,
        now: datetime,
    ) -> customs.ExportDocument:
        """An id that names no permit: a filed standard contract, if that is all that is needed."""
        total = (counted[0] + sale.export.individuals, counted[1] + sale.export.sensitive)
        needed = customs.required_mechanism(*total)
        if sale.export.grade != Grade.GENERAL or needed is not customs.Mechanism.STANDARD_CONTRACT:
            raise refuse(
                RULE_EXPORT_PERMIT,
                f"export permit {terms.export_permit_id} is not known to the registry",
            )
        return customs.StandardContract(
            contract_id=terms.export_permit_id,
            exporter=terms.seller,
            destination=terms.buyer_country,
            recipient=terms.buyer,
            filed_at=now,
            year=customs.calendar_year(now),
        )

    async def finalize(self, caller: str, contract_id: str, envelope: bytes) -> market_pb2.Contract:
        """FinalizeContract from the buyer's node: verify both signatures, keep, report."""
        _, stored = await self._reader.run(lambda conn: require_contract(conn, contract_id))
        cid = stored.terms.contract_id
        if caller != stored.terms.buyer_node:
            raise PermissionDenied(
                f"node {caller} is not the buyer node of contract {cid} ({stored.terms.buyer_node})"
            )
        if not envelope:
            raise InvalidArgument("envelope is required: the contract with both signatures")
        buyer_key = await self.public_key(stored.terms.buyer_node)
        now = self._clock()

        def apply(conn: sqlite3.Connection) -> market_pb2.Contract:
            role, current = require_contract(conn, cid)
            if role != "seller":
                raise PermissionDenied(f"this node is the buyer of contract {cid}")
            record = ContractRecord.from_proto(current)
            outcome = record.finalize(envelope, self._public, buyer_key, now)
            if not outcome.changed:
                return current
            contract = _save_record(conn, role, outcome.record)
            listing = listings.get_listing(conn, contract.terms.listing_id)
            report = supervision_pb2.ReportTradeRequest(
                trade=trade_record(contract, listing, load_export(conn, cid), now)
            )
            outbox.enqueue(
                conn, REPORT_KIND, cid, report.SerializeToString(deterministic=True), now
            )
            return contract

        try:
            contract = await self._writer.transaction(apply)
        except VerificationError as error:
            raise InvalidArgument(f"envelope: {error}") from None
        self._worker.wake()
        return contract

    async def _send_notify(self, key: str, payload: bytes) -> bytes:
        request = node_pb2.NotifyContractRequest.FromString(payload)
        return await self._call_peer(request.contract.terms.buyer_node, "NotifyContract", request)

    async def _report_trade(self, key: str, payload: bytes) -> bytes:
        request = supervision_pb2.ReportTradeRequest.FromString(payload)
        try:
            answer = await self._link.supervision.ReportTrade(request, timeout=self._link.deadline)
        except grpc.aio.AioRpcError as error:
            raise outbox.classify_rpc_error(error) from None
        return bytes(answer.SerializeToString())

    def _trade_reported(
        self, conn: sqlite3.Connection, item: outbox.OutboxItemRow, result: bytes
    ) -> None:
        answer = supervision_pb2.ReportTradeResponse.FromString(result)
        record = bundles.verify_bundle(answer.record, self._root, supervision_pb2.TradeRecord)
        if record.document.contract_id != item.key:
            raise VerificationError(
                f"the registry's trade record is of contract {record.document.contract_id}, "
                f"not {item.key}"
            )
        role, stored = require_contract(conn, item.key)
        stored.trade_record.CopyFrom(answer.record)
        save_contract(conn, role, stored, self._clock())

    async def _file_assessment(self, key: str, payload: bytes) -> bytes:
        request = supervision_pb2.FileRiskAssessmentRequest.FromString(payload)
        try:
            answer = await self._link.supervision.FileRiskAssessment(
                request, timeout=self._link.deadline
            )
        except grpc.aio.AioRpcError as error:
            raise outbox.classify_rpc_error(error) from None
        return bytes(answer.SerializeToString())

    # ------------------------------------------------------------ either side

    async def terminate(self, contract_id: str, reason: str) -> market_pb2.Contract:
        """Terminate with a reason (either side's operator, or a refused check); tell the peer."""
        text = contracts.check_reason(reason[: contracts.MAX_REASON] if reason else reason)
        now = self._clock()

        def apply(conn: sqlite3.Connection) -> tuple[market_pb2.Contract, str]:
            role, stored = require_contract(conn, contract_id)
            cid = stored.terms.contract_id
            if stored.state == contracts.TERMINATED:
                return stored, ""
            contracts.transition(stored.state, contracts.TERMINATED)
            stored.state = contracts.TERMINATED
            stored.termination_reason = text
            contract = save_contract(conn, role, stored, now)
            if role == "seller":
                key = f"notify:{cid}:terminated"
                payload = node_pb2.NotifyContractRequest(contract=contract)
                outbox.enqueue(
                    conn, NOTIFY_KIND, key, payload.SerializeToString(deterministic=True), now
                )
            else:
                key = f"terminate:{cid}"
                request = node_pb2.TerminateContractRequest(contract_id=cid, reason=text)
                outbox.enqueue(
                    conn, TERMINATE_KIND, key, request.SerializeToString(deterministic=True), now
                )
            return contract, key

        contract, key = await self._writer.transaction(apply)
        if key:
            await self._wait(key)
        return contract

    async def _send_terminate(self, key: str, payload: bytes) -> bytes:
        request = node_pb2.TerminateContractRequest.FromString(payload)
        _, stored = await self._reader.run(lambda conn: require_contract(conn, request.contract_id))
        return await self._call_peer(stored.terms.seller_node, "TerminateContract", request)

    async def peer_terminated(
        self, caller: str, contract_id: str, reason: str
    ) -> market_pb2.Contract:
        """TerminateContract from the other party's node."""
        text = contracts.check_reason(reason)
        now = self._clock()

        def apply(conn: sqlite3.Connection) -> market_pb2.Contract:
            role, stored = require_contract(conn, contract_id)
            other = stored.terms.buyer_node if role == "seller" else stored.terms.seller_node
            if caller != other:
                raise PermissionDenied(
                    f"node {caller} is not party to contract {stored.terms.contract_id}"
                )
            if stored.state == contracts.TERMINATED:
                return stored
            contracts.transition(stored.state, contracts.TERMINATED)
            stored.state = contracts.TERMINATED
            stored.termination_reason = text
            return save_contract(conn, role, stored, now)

        return await self._writer.transaction(apply)

    async def peer_get(self, caller: str, contract_id: str) -> market_pb2.Contract:
        """GetPeerContract: the contract as this node keeps it, for the other party only."""
        _, stored = await self._reader.run(lambda conn: require_contract(conn, contract_id))
        if caller not in (stored.terms.buyer_node, stored.terms.seller_node):
            raise PermissionDenied(
                f"node {caller} is not party to contract {stored.terms.contract_id}"
            )
        return stored

    # ------------------------------------------------------------ risk assessments

    async def submit_assessment(
        self, key: str, assessment: supervision_pb2.RiskAssessment
    ) -> tuple[supervision_pb2.RiskAssessment, node_pb2.OutboxItem]:
        """SubmitRiskAssessment: store, queue for the registry, answer with the item."""
        now = self._clock()
        _, item = await self._writer.transaction(
            lambda conn: submit_assessment(conn, self._node_id, key, assessment, now)
        )
        self._worker.wake()
        item = await self._worker.wait_done(item.idempotency_key, ANSWER_WAIT_SECONDS)
        stored = await self._writer.run(lambda conn: get_assessment(conn, key))
        return stored, item
