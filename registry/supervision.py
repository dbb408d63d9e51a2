"""Market supervision at the registry (DESIGN.md section 7): the logic behind SupervisionService.

:class:`Supervision` is what the servicer calls; it needs no gRPC. Reads go to
the read-only database, plain records (filed reports, permit applications,
standard-contract filings) to the writer in one transaction each, and every
decision the registry signs goes through :class:`registry.publication.Publisher`
with its rows written in the log entry's own transaction, so nothing
acknowledged is lost and no row lacks its log entry.

Risk assessments
    A node files an annual report for one of its members (the holder must be
    a member of the calling node and have a security officer: holders of
    important data need one). Admins, or the supervisor of the holder's
    province, accept or reject it with a reason: a signed, logged
    ``RiskAssessmentDecision``. **An accepted report is current until one
    calendar year (Asia/Shanghai wall clock) after the end of the period it
    covers** (:func:`risk_valid_until`): the report for 2025 keeps the holder
    current through 2026, the year in which the next one is due. A holder of
    IMPORTANT (or higher) datasets without a current accepted report has them
    suspended federation-wide by status statements made by the registry's own
    identity with a reason starting ``risk-assessment-lapse``; once a report
    is accepted, exactly the datasets whose latest statement is such an
    automatic suspension are reinstated (a suspension by an admin stays).
    :meth:`Supervision.check_lapses` runs at start-up, every
    ``LAPSE_CHECK_SECONDS`` in the server, and after every review.

Export permits and standard contracts
    A node (for its member) or an admin applies; a national admin approves
    (a signed, logged ``ExportPermit`` valid 3 years from approval,
    :func:`provex.customs.permit_expiry`) or rejects (logged too, state
    REJECTED, so every decision has a log index), and may revoke an approved
    permit (the permit logged again with state REVOKED: nodes verify it
    offline like the approval). Permits are national: provincial
    supervisors see their province's permits but do not decide them.
    Standard contracts filed by nodes are recorded (not signed).

Trades
    :meth:`Supervision.report_trade` verifies the finalized contract envelope
    (both signatures, against the signing keys the nodes enrolled with),
    refuses trades of frozen members, decides the export with
    :func:`provex.customs.decide_export` from the registry's own data (the
    certificate's grade, categories and personal-information profile, the
    categories' cross-border rules in the registry's latest catalog release
    (:func:`provex.customs.cross_border_rules`, as CheckExport does too), the
    exporter's counts of the Asia/Shanghai calendar year of the trade, its
    permits and filings, its free-trade zone's negative list), refuses an
    export whose mechanism is not satisfied, and logs a ``TradeRecord``.
    The trade date is ``finalized_at`` when the report carries it, else the
    contract's ``agreed_at``; it may not lie in the future. Reports are
    idempotent by contract id and serialized (one counter).

Supervisors
    Scoped to a region-code prefix (:mod:`registry.authz`): a holder, exporter
    or member is in a province when its region code is; a trade when the
    seller's is. Listings and statistics are narrowed to the scope; naming
    something outside it is PERMISSION_DENIED naming the scope.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sqlite3
import statistics as stats
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from zoneinfo import ZoneInfo

from provex import customs, documents
from provex.contracts import normalize_contract_id, trade_record, verify_contract
from provex.envelope import Envelope
from provex.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ProvexError,
    VerificationError,
)
from provex.grading import CrossBorderRule, Grade
from provex.ids import DatasetId
from provex.members import check_credit_code
from provex.timestamps import from_timestamp, to_timestamp, utc_now
from provex.v1 import common_pb2, dataset_pb2, market_pb2, supervision_pb2
from registry.authz import (
    Caller,
    Role,
    require_in_scope,
    require_node,
    require_overseer,
    require_supervisor,
    scope_prefix,
)
from registry.db import Database
from registry.enrollment import check_region_prefix
from registry.issuance import Issuance, SubjectKind
from registry.publication import Publisher

_log = logging.getLogger(__name__)

LAPSE_REASON = "risk-assessment-lapse"
"""Prefix of the reason of every automatic suspension (and of its reinstatement)."""
LAPSE_CHECK_SECONDS = 60.0
"""How often the server looks for lapsed risk assessments."""
RISK_VALIDITY_YEARS = 1
MAX_PERIOD = timedelta(days=366)
MAX_TEXT = 10_000
MAX_REASON = 1_000
MAX_KEY = 128
MAX_DATA_ITEMS = 100
MAX_PAGE = 1000
DEFAULT_PAGE = 100
FUTURE_SKEW = timedelta(minutes=5)

_ZONE = ZoneInfo(customs.TIMEZONE)

_STATES: dict[str, supervision_pb2.ReviewState.ValueType] = {
    "pending": supervision_pb2.REVIEW_STATE_PENDING,
    "accepted": supervision_pb2.REVIEW_STATE_ACCEPTED,
    "rejected": supervision_pb2.REVIEW_STATE_REJECTED,
    "revoked": supervision_pb2.REVIEW_STATE_REVOKED,
}
_STATE_NAMES = {value: name for name, value in _STATES.items()}

_MECHANISMS: dict[customs.Mechanism, supervision_pb2.ExportMechanism.ValueType] = {
    customs.Mechanism.NOT_EXPORT: supervision_pb2.EXPORT_MECHANISM_UNSPECIFIED,
    customs.Mechanism.EXEMPT: supervision_pb2.EXPORT_MECHANISM_EXEMPT,
    customs.Mechanism.STANDARD_CONTRACT: supervision_pb2.EXPORT_MECHANISM_STANDARD_CONTRACT,
    customs.Mechanism.ASSESSMENT: supervision_pb2.EXPORT_MECHANISM_ASSESSMENT,
    customs.Mechanism.FORBIDDEN: supervision_pb2.EXPORT_MECHANISM_FORBIDDEN,
}


# ---------------------------------------------------------------- pure rules


def add_years(moment: datetime, years: int) -> datetime:
    """Same Asia/Shanghai wall-clock time ``years`` later (29 February -> 28 February), UTC."""
    local = moment.astimezone(_ZONE)
    try:
        later = local.replace(year=local.year + years)
    except ValueError:
        later = local.replace(year=local.year + years, day=28)
    return later.astimezone(UTC)


def risk_valid_until(period_end: datetime) -> datetime:
    """When an accepted report covering a period ending ``period_end`` stops being current."""
    return add_years(period_end, RISK_VALIDITY_YEARS)


def is_current(state: str, valid_until: datetime | None, now: datetime) -> bool:
    """Whether a report in ``state`` keeps its holder current at ``now``."""
    return state == "accepted" and valid_until is not None and now < valid_until


def month_of(moment: datetime) -> str:
    """The Asia/Shanghai calendar month "YYYY-MM" of an aware moment."""
    return moment.astimezone(_ZONE).strftime("%Y-%m")


def check_month(text: str, field: str) -> str:
    """A "YYYY-MM" month (or ""), else InvalidArgument naming ``field``."""
    if not text:
        return ""
    try:
        datetime.strptime(text, "%Y-%m")
    except ValueError:
        raise InvalidArgument(f"{field} must be a month as YYYY-MM, got {text!r}") from None
    if len(text) != 7:
        raise InvalidArgument(f"{field} must be a month as YYYY-MM, got {text!r}")
    return text


def median_fen(prices: Sequence[int]) -> int:
    """The median price in whole fen (the lower of the two middle values' mean, rounded down)."""
    if not prices:
        raise ValueError("no prices")
    return int(stats.median_low(prices)) if len(prices) % 2 else sum(_middle(prices)) // 2


def _middle(prices: Sequence[int]) -> tuple[int, int]:
    ordered = sorted(prices)
    half = len(ordered) // 2
    return ordered[half - 1], ordered[half]


def price_index(
    trades: Iterable[tuple[str, str, int]],
) -> list[supervision_pb2.PriceIndexPoint]:
    """Per category and month: trades, median price and index vs the category's first month.

    ``trades`` are (category, month "YYYY-MM", price in fen). A first month
    whose median is 0 gives every later month an index of 0.
    """
    cells: dict[tuple[str, str], list[int]] = {}
    for category, month, price in trades:
        cells.setdefault((category, month), []).append(price)
    points: list[supervision_pb2.PriceIndexPoint] = []
    base: dict[str, int] = {}
    for (category, month), prices in sorted(cells.items()):
        median = median_fen(prices)
        first = base.setdefault(category, median)
        points.append(
            supervision_pb2.PriceIndexPoint(
                category=category,
                month=month,
                trades=len(prices),
                median_price=common_pb2.Money(fen=median),
                index=round(100.0 * median / first, 4) if first else 0.0,
            )
        )
    return points


def mechanism_value(mechanism: customs.Mechanism) -> supervision_pb2.ExportMechanism.ValueType:
    """The wire value of a customs mechanism (NOT_EXPORT is UNSPECIFIED: nothing is needed)."""
    return _MECHANISMS[mechanism]


def permit_document(permit: supervision_pb2.ExportPermit) -> customs.ExportPermit:
    """The customs view of a logged (approved or revoked) permit."""
    return customs.ExportPermit(
        permit_id=permit.permit_id,
        exporter=permit.exporter,
        destination=permit.destination,
        purpose=permit.purpose,
        issued_at=from_timestamp(permit.valid_from),
        expires_at=from_timestamp(permit.valid_until),
        dataset_ids=tuple(permit.dataset_ids),
        categories=tuple(permit.categories),
        recipient=permit.recipient or None,
        revoked=permit.state == supervision_pb2.REVIEW_STATE_REVOKED,
    )


def filing_document(filing: supervision_pb2.StandardContractFiling) -> customs.StandardContract:
    """The customs view of a filed standard contract (it covers its calendar year of filing)."""
    filed_at = from_timestamp(filing.filed_at)
    return customs.StandardContract(
        contract_id=filing.filing_id,
        exporter=filing.exporter,
        destination=filing.destination,
        recipient=filing.recipient,
        filed_at=filed_at,
        year=customs.calendar_year(filed_at),
    )


def trade_date(terms: market_pb2.ContractTerms, finalized_at: datetime | None) -> datetime:
    """The date a trade counts at: its finalization if reported, else the agreement."""
    agreed = from_timestamp(terms.agreed_at)
    if finalized_at is None:
        return agreed
    if finalized_at < agreed:
        raise InvalidArgument(
            f"trade.finalized_at {finalized_at.isoformat()} is before the contract's agreed_at "
            f"{agreed.isoformat()}"
        )
    return finalized_at


def _text(value: str, field: str, limit: int = MAX_TEXT) -> str:
    text = value.strip()
    if not text:
        raise InvalidArgument(f"{field} is required")
    if len(text) > limit:
        raise InvalidArgument(f"{field} must be at most {limit:,} characters")
    return text


def check_reason(reason: str) -> str:
    """A non-empty reason of at most MAX_REASON characters."""
    if not reason.strip():
        raise InvalidArgument("reason is required: say why, for the log and the holder")
    return _text(reason, "reason", MAX_REASON)


def _key(key: str) -> str:
    if not key or len(key) > MAX_KEY or not key.isprintable():
        raise InvalidArgument(f"idempotency_key is required: 1 to {MAX_KEY} printable characters")
    return key


def _dataset(text: str, field: str) -> str:
    try:
        return str(DatasetId.parse(text))
    except InvalidArgument as error:
        raise InvalidArgument(f"{field}: {error}") from None


def normalize_assessment(
    assessment: supervision_pb2.RiskAssessment,
) -> supervision_pb2.RiskAssessment:
    """The report as filed, checked field by field (InvalidArgument names the field)."""
    out = supervision_pb2.RiskAssessment(
        holder=check_credit_code(assessment.holder, "assessment.holder"),
        processing=_text(assessment.processing, "assessment.processing"),
        risks=_text(assessment.risks, "assessment.risks"),
        measures=_text(assessment.measures, "assessment.measures"),
    )
    if not assessment.HasField("period_start") or not assessment.HasField("period_end"):
        raise InvalidArgument("assessment.period_start and assessment.period_end are required")
    start, end = from_timestamp(assessment.period_start), from_timestamp(assessment.period_end)
    if end <= start:
        raise InvalidArgument("assessment.period_end must be after assessment.period_start")
    if end - start > MAX_PERIOD:
        raise InvalidArgument("assessment period must be at most one year (an annual report)")
    out.period_start.CopyFrom(assessment.period_start)
    out.period_end.CopyFrom(assessment.period_end)
    if not assessment.data:
        raise InvalidArgument("assessment.data is required: the kinds of data and quantities")
    if len(assessment.data) > MAX_DATA_ITEMS:
        raise InvalidArgument(f"assessment.data must have at most {MAX_DATA_ITEMS} items")
    for index, item in enumerate(assessment.data):
        category = _text(item.category, f"assessment.data[{index}].category", 200)
        out.data.add(category=category, records=item.records, individuals=item.individuals)
    if len(assessment.report_digest) != 32:
        raise InvalidArgument("assessment.report_digest must be 32 bytes (SHA-256 of the report)")
    out.report_digest = assessment.report_digest
    return out


def _id(prefix: str, *parts: str) -> str:
    digest = hashlib.sha256("\x00".join(parts).encode()).hexdigest()
    return f"{prefix}-{digest[:16].upper()}"


def _digest(message: supervision_pb2.RiskAssessment | supervision_pb2.ExportPermit) -> bytes:
    return hashlib.sha256(message.SerializeToString(deterministic=True)).digest()


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text)


# ---------------------------------------------------------------- rows


@dataclass(frozen=True)
class MemberRow:
    """What supervision needs of a member."""

    credit_code: str
    node_id: str
    region_code: str
    status: str
    has_officer: bool


@dataclass(frozen=True)
class FrozenMember:
    """A frozen member and the freeze: its reason, who froze it and when (the statement's)."""

    credit_code: str
    name: str
    region_code: str
    node_id: str
    reason: str
    actor: str
    frozen_at: datetime | None


def _member(conn: sqlite3.Connection, code: str) -> MemberRow | None:
    row = conn.execute(
        "SELECT credit_code, node_id, region_code, status, length(security_officer) > 0 "
        "FROM members WHERE credit_code = ?",
        (code,),
    ).fetchone()
    return (
        None
        if row is None
        else MemberRow(str(row[0]), str(row[1]), str(row[2]), str(row[3]), bool(row[4]))
    )


def _latest_statement(
    conn: sqlite3.Connection, kind: str, subject: str
) -> tuple[str, bytes, int] | None:
    row = conn.execute(
        "SELECT status, envelope, log_index FROM status_statements "
        "WHERE subject_kind = ? AND subject = ? ORDER BY log_index DESC LIMIT 1",
        (kind, subject),
    ).fetchone()
    return None if row is None else (str(row[0]), bytes(row[1]), int(row[2]))


def _statement(envelope: bytes) -> dataset_pb2.StatusStatement:
    return documents.decode_payload(
        Envelope.from_json(envelope).payload, dataset_pb2.StatusStatement
    )


def _assessment_row(conn: sqlite3.Connection, assessment_id: str) -> tuple[str, bytes] | None:
    row = conn.execute(
        "SELECT region_code, assessment FROM risk_assessments WHERE assessment_id = ?",
        (assessment_id,),
    ).fetchone()
    return None if row is None else (str(row[0]), bytes(row[1]))


def _current_holders(conn: sqlite3.Connection, now: datetime) -> set[str]:
    return {
        str(row[0])
        for row in conn.execute(
            "SELECT DISTINCT holder FROM risk_assessments WHERE state = 'accepted' "
            "AND valid_until > ?",
            (_iso(now),),
        )
    }


@dataclass(frozen=True)
class _LapseWork:
    suspend: list[tuple[str, str]]
    reinstate: list[tuple[str, str]]


def _lapse_work(
    conn: sqlite3.Connection, now: datetime, holder: str | None, actor: str
) -> _LapseWork:
    sql = "SELECT dataset_id, holder FROM datasets WHERE grade >= ?"
    params: list[object] = [int(Grade.IMPORTANT)]
    if holder is not None:
        sql += " AND holder = ?"
        params.append(holder)
    current = _current_holders(conn, now)
    work = _LapseWork([], [])
    for dataset_id, owner in conn.execute(sql, params).fetchall():
        latest = _latest_statement(conn, "dataset", str(dataset_id))
        if str(owner) not in current:
            if latest is None or latest[0] == "active":
                work.suspend.append((str(dataset_id), str(owner)))
        elif latest is not None and latest[0] == "suspended":
            statement = _statement(latest[1])
            if statement.actor.spiffe_id == actor and statement.reason.startswith(LAPSE_REASON):
                work.reinstate.append((str(dataset_id), str(owner)))
    return work


_ACTION_COLUMNS = "log_index, action, subject, region_code, actor, taken_at"

_STATEMENT_REGION = "COALESCE(m.region_code, dm.region_code, n.region_code, '')"
_STATEMENT_ACTIONS = f"""
    SELECT s.log_index, s.subject_kind, s.subject, s.status, s.envelope, {_STATEMENT_REGION}
    FROM status_statements s
    LEFT JOIN members m ON s.subject_kind = 'member' AND m.credit_code = s.subject
    LEFT JOIN datasets d ON s.subject_kind = 'dataset' AND d.dataset_id = s.subject
    LEFT JOIN members dm ON dm.credit_code = d.holder
    LEFT JOIN nodes n ON s.subject_kind = 'node' AND n.node_id = s.subject
    WHERE s.log_index > ? AND {_STATEMENT_REGION} LIKE ?
    ORDER BY s.log_index LIMIT ?
"""


def statement_action(kind: str, status: str, reason: str, automatic: bool) -> str:
    """The supervisory action a status statement records."""
    if kind == "member":
        return "freeze-member" if status == "suspended" else "unfreeze-member"
    if automatic:
        return "auto-suspend-dataset" if status == "suspended" else "auto-reinstate-dataset"
    return {"suspended": "suspend-dataset", "revoked": "revoke-dataset"}.get(
        status, "reinstate-dataset"
    )


# ---------------------------------------------------------------- the book


class Supervision:
    """Risk assessments, export permits, filings, trade reports, statistics, freezes."""

    def __init__(
        self,
        writer: Database,
        reader: Database,
        publisher: Publisher,
        issuance: Issuance,
        registry_actor: str,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._writer = writer
        self._reader = reader
        self._publisher = publisher
        self._issuance = issuance
        self._actor = registry_actor
        self._clock = clock
        self._trade_lock = asyncio.Lock()
        self._lapse_lock = asyncio.Lock()
        self._review_lock = asyncio.Lock()

    # ------------------------------------------------------------ helpers

    async def _member_of(self, code: str, field: str) -> MemberRow:
        member = await self._reader.run(partial(_member, code=code))
        if member is None:
            raise NotFound(f"{field} {code} is not a registered member")
        return member

    def _node_acts_for(self, caller: Caller, member: MemberRow, field: str) -> None:
        if caller.role is Role.NODE and member.node_id != caller.name:
            raise PermissionDenied(
                f"{field} {member.credit_code} is a member of node {member.node_id}; "
                f"node {caller.name} acts only for its own members"
            )

    # ------------------------------------------------------------ risk assessments

    async def file_assessment(
        self, caller: Caller, key: str, assessment: supervision_pb2.RiskAssessment
    ) -> supervision_pb2.RiskAssessment:
        """A node files a report for one of its members; a retry answers the stored one."""
        require_node(caller, "FileRiskAssessment")
        key = _key(key)
        if assessment.node_id and assessment.node_id != caller.name:
            raise PermissionDenied(
                f"node {caller.name} files only as itself, not as {assessment.node_id}"
            )
        report = normalize_assessment(assessment)
        member = await self._member_of(report.holder, "holder")
        self._node_acts_for(caller, member, "holder")
        if not member.has_officer:
            raise FailedPrecondition(
                f"holder {member.credit_code} has no security officer: risk assessments are "
                "filed by holders of important data, which need one"
            )
        digest = _digest(report)
        report.assessment_id = _id("RA", caller.name, key)
        report.node_id = caller.name
        report.state = supervision_pb2.REVIEW_STATE_PENDING
        report.filed_at.CopyFrom(to_timestamp(self._clock()))

        def insert(conn: sqlite3.Connection) -> bytes:
            row = conn.execute(
                "SELECT request_sha256, assessment FROM risk_assessments "
                "WHERE node_id = ? AND idempotency_key = ?",
                (caller.name, key),
            ).fetchone()
            if row is not None:
                if bytes(row[0]) != digest:
                    raise AlreadyExists(
                        f"idempotency key {key!r} was used for another report "
                        f"({report.assessment_id}); use a new key for a new report"
                    )
                return bytes(row[1])
            blob = report.SerializeToString()
            conn.execute(
                "INSERT INTO risk_assessments (assessment_id, holder, node_id, region_code, "
                "idempotency_key, request_sha256, state, assessment) "
                "VALUES (?, ?, ?, ?, ?, ?, 'pending', ?)",
                (
                    report.assessment_id,
                    report.holder,
                    caller.name,
                    member.region_code,
                    key,
                    digest,
                    blob,
                ),
            )
            return blob

        stored = await self._writer.transaction(insert)
        return supervision_pb2.RiskAssessment.FromString(stored)

    async def review_assessment(
        self, caller: Caller, assessment_id: str, accept: bool, reason: str
    ) -> tuple[supervision_pb2.RiskAssessment, common_pb2.Bundle]:
        """Accept or reject a pending report: a signed, logged decision; then the lapse check."""
        require_supervisor(caller, "ReviewRiskAssessment")
        reason = check_reason(reason)
        if not assessment_id:
            raise InvalidArgument("assessment_id is required")
        async with self._review_lock:
            found = await self._reader.run(partial(_assessment_row, assessment_id=assessment_id))
            if found is None:
                raise NotFound(f"risk assessment {assessment_id} does not exist")
            region, blob = found
            require_in_scope(caller, region, f"risk assessment {assessment_id}")
            report = supervision_pb2.RiskAssessment.FromString(blob)
            if report.state != supervision_pb2.REVIEW_STATE_PENDING:
                raise FailedPrecondition(
                    f"risk assessment {assessment_id} was already reviewed "
                    f"({_STATE_NAMES.get(report.state, 'unknown')}); file a new report"
                )
            now = self._clock()
            state = "accepted" if accept else "rejected"
            decision = supervision_pb2.RiskAssessmentDecision(
                assessment_id=assessment_id,
                holder=report.holder,
                state=_STATES[state],
                reason=reason,
                actor=common_pb2.Actor(spiffe_id=str(caller)),
                issued_at=to_timestamp(now),
            )
            valid_until: datetime | None = None
            if accept:
                valid_until = risk_valid_until(from_timestamp(report.period_end))
                decision.valid_until.CopyFrom(to_timestamp(valid_until))
            report.state = _STATES[state]
            report.review_reason = reason
            report.reviewed_by.CopyFrom(decision.actor)

            def record(conn: sqlite3.Connection, log_index: int, envelope: bytes) -> None:
                changed = conn.execute(
                    "UPDATE risk_assessments SET state = ?, valid_until = ?, "
                    "decision_log_index = ?, assessment = ? "
                    "WHERE assessment_id = ? AND state = 'pending'",
                    (
                        state,
                        None if valid_until is None else _iso(valid_until),
                        log_index,
                        report.SerializeToString(),
                        assessment_id,
                    ),
                ).rowcount
                if changed != 1:
                    raise FailedPrecondition(
                        f"risk assessment {assessment_id} was reviewed meanwhile"
                    )
                _insert_action(
                    conn,
                    log_index=log_index,
                    action=f"{'accept' if accept else 'reject'}-risk-assessment",
                    subject=f"risk assessment {assessment_id} of {report.holder}",
                    region=region,
                    actor=str(caller),
                    now=now,
                    reason=reason,
                )

            bundle = await self._publisher.publish(decision, record)
        await self.check_lapses(report.holder)
        return report, bundle

    async def list_assessments(
        self,
        caller: Caller,
        holder: str,
        region_prefix: str,
        state: supervision_pb2.ReviewState.ValueType,
        overdue_only: bool,
    ) -> list[supervision_pb2.RiskAssessment]:
        """Reports, newest first: nodes see their own, supervisors their province's."""
        if caller.role is Role.ANONYMOUS or caller.role is not Role.NODE:
            require_overseer(caller, "ListRiskAssessments")
        check_region_prefix(region_prefix)
        prefix = scope_prefix(caller, region_prefix, "ListRiskAssessments")
        sql = "SELECT assessment, holder FROM risk_assessments WHERE region_code LIKE ?"
        params: list[object] = [prefix + "%"]
        if holder:
            sql += " AND holder = ?"
            params.append(check_credit_code(holder, "holder"))
        if caller.role is Role.NODE:
            sql += " AND node_id = ?"
            params.append(caller.name)
        if state:
            name = _STATE_NAMES.get(state)
            if name is None:
                raise InvalidArgument("state must be a review state")
            sql += " AND state = ?"
            params.append(name)
        sql += " ORDER BY rowid DESC LIMIT ?"
        params.append(MAX_PAGE)
        now = self._clock()

        def read(conn: sqlite3.Connection) -> tuple[list[tuple[bytes, str]], set[str]]:
            rows = [(bytes(r[0]), str(r[1])) for r in conn.execute(sql, params)]
            return rows, _current_holders(conn, now)

        rows, current = await self._reader.run(read)
        return [
            supervision_pb2.RiskAssessment.FromString(blob)
            for blob, owner in rows
            if not overdue_only or owner not in current
        ]

    async def check_lapses(self, holder: str | None = None) -> int:
        """Suspend lapsed holders' important datasets, reinstate current ones'; statements made."""
        async with self._lapse_lock:
            now = self._clock()
            work = await self._reader.run(
                partial(_lapse_work, now=now, holder=holder, actor=self._actor)
            )
            made = 0
            for dataset_id, owner in work.suspend:
                made += await self._set_dataset(
                    dataset_id,
                    common_pb2.STATUS_SUSPENDED,
                    f"{LAPSE_REASON}: holder {owner} has no current accepted risk assessment",
                )
            for dataset_id, owner in work.reinstate:
                made += await self._set_dataset(
                    dataset_id,
                    common_pb2.STATUS_ACTIVE,
                    f"{LAPSE_REASON} lifted: holder {owner} has a current accepted risk assessment",
                )
            return made

    async def _set_dataset(
        self, dataset_id: str, status: common_pb2.Status.ValueType, reason: str
    ) -> int:
        try:
            await self._issuance.set_status(
                self._actor, self._issuance.subject(SubjectKind.DATASET, dataset_id), status, reason
            )
        except ProvexError as error:
            _log.warning("lapse check: %s left as is: %s", dataset_id, error)
            return 0
        return 1

    async def run_lapse_checks(self, interval: float = LAPSE_CHECK_SECONDS) -> None:
        """Check every ``interval`` seconds until cancelled (start-up checks once before)."""
        while True:
            await asyncio.sleep(interval)
            try:
                made = await self.check_lapses()
                if made:
                    _log.info("risk-assessment lapse check: %d status statement(s)", made)
            except Exception:  # Keep checking: one bad round must not end the task.
                _log.exception("risk-assessment lapse check failed")

    # ------------------------------------------------------------ export permits

    async def apply_permit(
        self, caller: Caller, key: str, application: supervision_pb2.ExportPermit
    ) -> supervision_pb2.ExportPermit:
        """A node (for its member) or an admin applies for a permit; a retry answers the same."""
        if caller.role is not Role.NODE:
            require_supervisor(caller, "ApplyExportPermit")
            if caller.role is not Role.ADMIN:
                raise PermissionDenied(
                    f"ApplyExportPermit is for nodes (for their members) and national admins; "
                    f"{caller} is a {caller.role.value}"
                )
        key = _key(key)
        exporter = check_credit_code(application.exporter, "application.exporter")
        member = await self._member_of(exporter, "exporter")
        self._node_acts_for(caller, member, "exporter")
        applicant = str(caller)
        permit_id = _id("EP", applicant, key)
        dataset_ids = [_dataset(d, "application.dataset_ids") for d in application.dataset_ids]
        # The customs rules check the rest (destination, purpose, coverage) as they will apply it.
        checked = customs.ExportPermit.issue(
            permit_id,
            exporter,
            application.destination,
            application.purpose,
            self._clock(),
            dataset_ids=dataset_ids,
            categories=list(application.categories),
            recipient=application.recipient.strip() or None,
        )
        if not customs.is_export(checked.destination, "application.destination"):
            raise InvalidArgument(
                "application.destination is the mainland (CN): no permit is needed"
            )

        def holders(conn: sqlite3.Connection) -> dict[str, str]:
            return {
                d: str(row[0])
                for d in checked.dataset_ids
                if (
                    row := conn.execute(
                        "SELECT holder FROM datasets WHERE dataset_id = ?", (d,)
                    ).fetchone()
                )
            }

        held = await self._reader.run(holders)
        for dataset_id in checked.dataset_ids:
            if dataset_id not in held:
                raise NotFound(f"dataset {dataset_id} does not exist")
            if held[dataset_id] != exporter:
                raise PermissionDenied(
                    f"dataset {dataset_id} is held by {held[dataset_id]}, not by {exporter}"
                )
        permit = supervision_pb2.ExportPermit(
            exporter=exporter,
            dataset_ids=list(checked.dataset_ids),
            categories=list(checked.categories),
            destination=checked.destination,
            recipient=checked.recipient or "",
            purpose=checked.purpose,
            max_individuals=application.max_individuals,
            max_sensitive_individuals=application.max_sensitive_individuals,
        )
        digest = _digest(permit)
        permit.permit_id = permit_id
        permit.state = supervision_pb2.REVIEW_STATE_PENDING
        permit.actor.spiffe_id = applicant

        def insert(conn: sqlite3.Connection) -> bytes:
            row = conn.execute(
                "SELECT request_sha256, application FROM export_permits "
                "WHERE applicant = ? AND idempotency_key = ?",
                (applicant, key),
            ).fetchone()
            if row is not None:
                if bytes(row[0]) != digest:
                    raise AlreadyExists(
                        f"idempotency key {key!r} was used for another application "
                        f"({permit_id}); use a new key"
                    )
                return bytes(row[1])
            blob = permit.SerializeToString()
            conn.execute(
                "INSERT INTO export_permits (permit_id, exporter, region_code, applicant, "
                "idempotency_key, request_sha256, state, application) "
                "VALUES (?, ?, ?, ?, ?, ?, 'pending', ?)",
                (permit_id, exporter, member.region_code, applicant, key, digest, blob),
            )
            return blob

        return supervision_pb2.ExportPermit.FromString(await self._writer.transaction(insert))

    async def _permit_row(self, permit_id: str) -> tuple[str, str, bytes, bytes | None, int | None]:
        if not permit_id:
            raise InvalidArgument("permit_id is required")

        def read(
            conn: sqlite3.Connection,
        ) -> tuple[str, str, bytes, bytes | None, int | None] | None:
            row = conn.execute(
                "SELECT state, region_code, application, envelope, log_index "
                "FROM export_permits WHERE permit_id = ?",
                (permit_id,),
            ).fetchone()
            if row is None:
                return None
            return (
                str(row[0]),
                str(row[1]),
                bytes(row[2]),
                None if row[3] is None else bytes(row[3]),
                None if row[4] is None else int(row[4]),
            )

        found = await self._reader.run(read)
        if found is None:
            raise NotFound(f"export permit {permit_id} does not exist")
        return found

    async def _decide_permit(
        self,
        caller: Caller,
        *,
        permit_id: str,
        reason: str,
        want: str,
        target: str,
        build: Callable[[supervision_pb2.ExportPermit, bytes | None, datetime], None],
    ) -> common_pb2.Bundle:
        state, region, application, envelope, _ = await self._permit_row(permit_id)
        if state != want:
            raise FailedPrecondition(
                f"export permit {permit_id} is {state}; only a {want} one can be "
                f"{'revoked' if target == 'revoked' else 'reviewed'}"
            )
        now = self._clock()
        permit = supervision_pb2.ExportPermit.FromString(application)
        build(permit, envelope, now)
        permit.state = _STATES[target]
        permit.actor.CopyFrom(common_pb2.Actor(spiffe_id=str(caller)))
        action = {
            "accepted": "approve-export-permit",
            "rejected": "reject-export-permit",
            "revoked": "revoke-export-permit",
        }[target]

        def record(conn: sqlite3.Connection, log_index: int, logged: bytes) -> None:
            changed = conn.execute(
                "UPDATE export_permits SET state = ?, envelope = ?, log_index = ? "
                "WHERE permit_id = ? AND state = ?",
                (target, logged, log_index, permit_id, want),
            ).rowcount
            if changed != 1:
                raise FailedPrecondition(f"export permit {permit_id} changed meanwhile")
            _insert_action(
                conn,
                log_index=log_index,
                action=action,
                subject=f"export permit {permit_id} of {permit.exporter}",
                region=region,
                actor=str(caller),
                now=now,
                reason=reason,
            )

        return await self._publisher.publish(permit, record)

    async def review_permit(
        self, caller: Caller, permit_id: str, approve: bool, reason: str
    ) -> tuple[common_pb2.Bundle | None, supervision_pb2.ReviewState.ValueType]:
        """Approve (the permit, valid 3 years) or reject; both logged. National admins only."""
        self._national(caller, "ReviewExportPermit")
        reason = check_reason(reason)

        def approved(permit: supervision_pb2.ExportPermit, _: bytes | None, now: datetime) -> None:
            permit.valid_from.CopyFrom(to_timestamp(now))
            permit.valid_until.CopyFrom(to_timestamp(customs.permit_expiry(now)))

        def rejected(permit: supervision_pb2.ExportPermit, _: bytes | None, now: datetime) -> None:
            return None

        target = "accepted" if approve else "rejected"
        bundle = await self._decide_permit(
            caller,
            permit_id=permit_id,
            reason=reason,
            want="pending",
            target=target,
            build=approved if approve else rejected,
        )
        return (bundle if approve else None), _STATES[target]

    async def revoke_permit(self, caller: Caller, permit_id: str, reason: str) -> common_pb2.Bundle:
        """Revoke an approved permit: the permit logged again with state REVOKED."""
        self._national(caller, "RevokeExportPermit")
        reason = check_reason(reason)

        def revoked(
            permit: supervision_pb2.ExportPermit, envelope: bytes | None, _: datetime
        ) -> None:
            assert envelope is not None
            logged = documents.decode_payload(
                Envelope.from_json(envelope).payload, supervision_pb2.ExportPermit
            )
            permit.CopyFrom(logged)

        return await self._decide_permit(
            caller,
            permit_id=permit_id,
            reason=reason,
            want="accepted",
            target="revoked",
            build=revoked,
        )

    @staticmethod
    def _national(caller: Caller, action: str) -> None:
        require_supervisor(caller, action)
        if caller.role is not Role.ADMIN:
            raise PermissionDenied(
                f"{action} is for national admins (export permits are national); "
                f"{caller} is a {caller.role.value} of region {caller.region}"
            )

    async def get_permit(
        self, caller: Caller, permit_id: str
    ) -> tuple[common_pb2.Bundle | None, supervision_pb2.ReviewState.ValueType]:
        """The latest logged statement of a permit (none while pending) and its state."""
        if caller.role is not Role.NODE:
            require_overseer(caller, "GetExportPermit")
        state, region, application, envelope, log_index = await self._permit_row(permit_id)
        if caller.role is Role.NODE:
            exporter = supervision_pb2.ExportPermit.FromString(application).exporter
            member = await self._member_of(exporter, "exporter")
            self._node_acts_for(caller, member, "exporter")
        require_in_scope(caller, region, f"export permit {permit_id}")
        if envelope is None or log_index is None:
            return None, _STATES[state]
        return await self._publisher.bundle_for(envelope, log_index), _STATES[state]

    async def file_standard_contract(
        self, caller: Caller, filing: supervision_pb2.StandardContractFiling
    ) -> supervision_pb2.StandardContractFiling:
        """Record a node's standard contract for its member; the same filing again is a no-op."""
        require_node(caller, "FileStandardContract")
        exporter = check_credit_code(filing.exporter, "filing.exporter")
        member = await self._member_of(exporter, "exporter")
        self._node_acts_for(caller, member, "exporter")
        destination = customs.normalize_country(filing.destination, "filing.destination")
        if not customs.is_export(destination, "filing.destination"):
            raise InvalidArgument("filing.destination is the mainland (CN): nothing to file")
        recipient = _text(filing.recipient, "filing.recipient", 500)
        if len(filing.contract_digest) != 32:
            raise InvalidArgument(
                "filing.contract_digest must be 32 bytes (SHA-256 of the contract)"
            )
        filing_id = filing.filing_id.strip() or _id(
            "SC", caller.name, exporter, destination, recipient, filing.contract_digest.hex()
        )
        _text(filing_id, "filing.filing_id", 128)
        now = self._clock()
        stored = supervision_pb2.StandardContractFiling(
            filing_id=filing_id,
            exporter=exporter,
            recipient=recipient,
            destination=destination,
            contract_digest=filing.contract_digest,
            filed_at=to_timestamp(now),
        )

        def insert(conn: sqlite3.Connection) -> bytes:
            row = conn.execute(
                "SELECT node_id, filing FROM standard_contracts WHERE filing_id = ?", (filing_id,)
            ).fetchone()
            if row is not None:
                old = supervision_pb2.StandardContractFiling.FromString(bytes(row[1]))
                same = (old.exporter, old.recipient, old.destination, old.contract_digest) == (
                    exporter,
                    recipient,
                    destination,
                    filing.contract_digest,
                )
                if str(row[0]) != caller.name or not same:
                    raise AlreadyExists(
                        f"standard contract {filing_id} was filed with other content"
                    )
                return bytes(row[1])
            blob = stored.SerializeToString()
            conn.execute(
                "INSERT INTO standard_contracts (filing_id, exporter, region_code, node_id, "
                "filed_at, filing) VALUES (?, ?, ?, ?, ?, ?)",
                (filing_id, exporter, member.region_code, caller.name, _iso(now), blob),
            )
            return blob

        return supervision_pb2.StandardContractFiling.FromString(
            await self._writer.transaction(insert)
        )

    # ------------------------------------------------------------ customs

    async def _export_inputs(
        self, exporter: str, region_code: str, year: int
    ) -> tuple[customs.YearlyCount, list[customs.ExportDocument], frozenset[str] | None]:
        def read(
            conn: sqlite3.Connection,
        ) -> tuple[tuple[int, int], list[bytes], list[bytes], list[str], bool]:
            count = conn.execute(
                "SELECT COALESCE(SUM(individuals), 0), COALESCE(SUM(sensitive), 0) FROM trades "
                "WHERE exporter = ? AND year = ? AND is_export = 1",
                (exporter, year),
            ).fetchone()
            permits = [
                bytes(r[0])
                for r in conn.execute(
                    "SELECT envelope FROM export_permits WHERE exporter = ? "
                    "AND state IN ('accepted', 'revoked')",
                    (exporter,),
                )
            ]
            filings = [
                bytes(r[0])
                for r in conn.execute(
                    "SELECT filing FROM standard_contracts WHERE exporter = ?", (exporter,)
                )
            ]
            zone = conn.execute(
                "SELECT zone_prefix FROM ftz_negative_lists WHERE ? LIKE zone_prefix || '%' "
                "ORDER BY length(zone_prefix) DESC LIMIT 1",
                (region_code,),
            ).fetchone()
            listed: list[str] = []
            if zone is not None:
                listed = [
                    str(r[0])
                    for r in conn.execute(
                        "SELECT category FROM ftz_negative_lists WHERE zone_prefix = ? "
                        "AND category != ''",
                        (zone[0],),
                    )
                ]
            return (int(count[0]), int(count[1])), permits, filings, listed, zone is not None

        (individuals, sensitive), permits, filings, listed, has_zone = await self._reader.run(read)
        held: list[customs.ExportDocument] = [
            permit_document(
                documents.decode_payload(
                    Envelope.from_json(p).payload, supervision_pb2.ExportPermit
                )
            )
            for p in permits
        ]
        held.extend(
            filing_document(supervision_pb2.StandardContractFiling.FromString(f)) for f in filings
        )
        count = customs.YearlyCount(exporter, year, individuals, sensitive)
        return count, held, (frozenset(listed) if has_zone else None)

    async def _cross_border(self, categories: Sequence[str]) -> dict[str, CrossBorderRule]:
        """The categories' effective cross-border rules in the registry's latest catalog."""
        release = await self._issuance.release()
        return customs.cross_border_rules(release.catalog, categories)

    async def _certificate(
        self, dataset_id: str, version: int = 0
    ) -> dataset_pb2.DatasetCertificate:
        bundle = await self._issuance.certificate_bundle(dataset_id, version)
        return documents.decode_payload(
            Envelope.from_json(bundle.envelope).payload, dataset_pb2.DatasetCertificate
        )

    async def check_export(
        self, caller: Caller, request: supervision_pb2.CheckExportRequest
    ) -> supervision_pb2.CheckExportResponse:
        """The mechanism an export would need now, given the exporter's counts this year."""
        if caller.role is not Role.NODE:
            require_overseer(caller, "CheckExport")
        exporter = check_credit_code(request.exporter, "exporter")
        member = await self._member_of(exporter, "exporter")
        self._node_acts_for(caller, member, "exporter")
        require_in_scope(caller, member.region_code, f"exporter {exporter}")
        destination = customs.normalize_country(request.destination, "destination")
        now = self._clock()
        count, _, listed = await self._export_inputs(
            exporter, member.region_code, customs.calendar_year(now)
        )
        response = supervision_pb2.CheckExportResponse(
            exported_individuals=count.individuals,
            exported_sensitive_individuals=count.sensitive,
        )
        decisions: list[customs.ExportDecision] = []
        datasets = [_dataset(d, "dataset_ids") for d in request.dataset_ids]
        for dataset_id in datasets:
            certificate = await self._certificate(dataset_id)
            if certificate.dataset.holder != exporter:
                raise PermissionDenied(f"dataset {dataset_id} is not held by {exporter}")
            export = customs.ExportRequest(
                exporter=exporter,
                dataset_id=dataset_id,
                grade=Grade(certificate.grade),
                categories=tuple(certificate.dataset.categories),
                buyer_country=destination,
                recipient="(any recipient)",
                date=now,
                individuals=request.individuals,
                sensitive=request.sensitive_individuals,
            )
            rules = await self._cross_border(export.categories) if export.is_export else {}
            decisions.append(
                customs.decide_export(export, count, cross_border=rules, negative_list=listed)
            )
        if decisions:
            strictest = max(decisions, key=lambda d: d.mechanism.strictness)
            response.mechanism = mechanism_value(strictest.mechanism)
            response.explanation = "\n".join(
                f"{d}: "
                + "; ".join(str(r) for r in decision.reasons if r.rule != customs.RULE_DOCUMENTS)
                for d, decision in zip(datasets, decisions, strict=True)
            )
            return response
        if not customs.is_export(destination, "destination"):
            response.explanation = f"destination {destination} is the mainland: not an export"
            return response
        mechanism = customs.required_mechanism(
            count.individuals + request.individuals, count.sensitive + request.sensitive_individuals
        )
        response.mechanism = mechanism_value(mechanism)
        response.explanation = (
            f"personal information: {count.individuals + request.individuals:,} individuals and "
            f"{count.sensitive + request.sensitive_individuals:,} sensitive ones exported by "
            f"{exporter} in {count.year} with this export: {mechanism.value}"
        )
        return response

    # ------------------------------------------------------------ trades

    async def _signing_key(self, node_id: str, role: str) -> bytes:
        def read(conn: sqlite3.Connection) -> tuple[bytes, str] | None:
            row = conn.execute(
                "SELECT signing_key, status FROM nodes WHERE node_id = ?", (node_id,)
            ).fetchone()
            return None if row is None else (bytes(row[0]), str(row[1]))

        found = await self._reader.run(read)
        if found is None:
            raise FailedPrecondition(f"the {role} node {node_id} is not enrolled at this registry")
        if found[1] != "active":
            raise FailedPrecondition(f"the {role} node {node_id} is {found[1]}")
        return found[0]

    async def report_trade(
        self, caller: Caller, trade: supervision_pb2.TradeRecord
    ) -> common_pb2.Bundle:
        """Verify, check, count and log a finalized trade; a repeated report answers the same."""
        require_node(caller, "ReportTrade")
        if not trade.contract:
            raise InvalidArgument(
                "trade.contract is required: the finalized contract envelope signed by both nodes"
            )
        try:
            unverified = documents.decode_payload(
                Envelope.from_json(trade.contract).payload, market_pb2.ContractTerms
            )
        except (VerificationError, ValueError) as error:
            raise InvalidArgument(f"trade.contract is not a contract envelope: {error}") from None
        if caller.name not in (unverified.seller_node, unverified.buyer_node):
            raise PermissionDenied(
                f"node {caller.name} is neither the seller's node nor the buyer's node of "
                "this contract; a trade is reported by one of its parties"
            )
        seller_key = await self._signing_key(unverified.seller_node, "seller's")
        buyer_key = await self._signing_key(unverified.buyer_node, "buyer's")
        terms = verify_contract(trade.contract, seller_key, buyer_key)
        contract_id = terms.contract_id
        if trade.contract_id and normalize_contract_id(trade.contract_id) != contract_id:
            raise InvalidArgument(
                f"trade.contract_id {trade.contract_id} is not the contract's id {contract_id}"
            )
        finalized = from_timestamp(trade.finalized_at) if trade.HasField("finalized_at") else None
        date = trade_date(terms, finalized)
        now = self._clock()
        if date > now + FUTURE_SKEW:
            raise InvalidArgument(f"the trade's date {date.isoformat()} is in the future")
        contract_sha = hashlib.sha256(trade.contract).digest()
        async with self._trade_lock:

            def stored(conn: sqlite3.Connection) -> tuple[bytes, bytes, int] | None:
                row = conn.execute(
                    "SELECT contract_sha256, envelope, log_index FROM trades WHERE contract_id = ?",
                    (contract_id,),
                ).fetchone()
                return None if row is None else (bytes(row[0]), bytes(row[1]), int(row[2]))

            existing = await self._reader.run(stored)
            if existing is not None:
                if existing[0] != contract_sha:
                    raise AlreadyExists(
                        f"trade {contract_id} was reported with another contract envelope"
                    )
                return await self._publisher.bundle_for(existing[1], existing[2])
            seller = await self._member_of(terms.seller, "seller")
            buyer = await self._member_of(terms.buyer, "buyer")
            for role, member, node in (
                ("seller", seller, terms.seller_node),
                ("buyer", buyer, terms.buyer_node),
            ):
                if member.node_id != node:
                    raise FailedPrecondition(
                        f"{role} {member.credit_code} is a member of node {member.node_id}, "
                        f"not of {node}"
                    )
                if member.status != "active":
                    raise FailedPrecondition(
                        f"{role} {member.credit_code} is frozen federation-wide: it cannot trade"
                    )
            certificate = await self._certificate(terms.dataset_id, terms.certificate_version)
            if certificate.dataset.holder != seller.credit_code:
                raise FailedPrecondition(
                    f"dataset {terms.dataset_id} is held by {certificate.dataset.holder}, not by "
                    f"the seller {seller.credit_code}"
                )
            grade = Grade(certificate.grade)
            profile = certificate.dataset.personal_info
            export = customs.ExportRequest(
                exporter=seller.credit_code,
                dataset_id=terms.dataset_id,
                grade=grade,
                categories=tuple(certificate.dataset.categories),
                buyer_country=terms.buyer_country or customs.MAINLAND,
                recipient=buyer.credit_code,
                date=date,
                individuals=profile.individuals,
                sensitive=profile.sensitive_individuals,
            )
            count, held, listed = await self._export_inputs(
                seller.credit_code, seller.region_code, export.year
            )
            rules = await self._cross_border(export.categories) if export.is_export else {}
            decision = customs.check_export(
                export, count, cross_border=rules, documents=held, negative_list=listed
            )
            record = trade_record(
                terms,
                trade.contract,
                category=certificate.dataset.categories[0],
                grade=common_pb2.Grade.ValueType(int(grade)),
                region_code=seller.region_code,
            )
            record.finalized_at.CopyFrom(to_timestamp(date))
            if decision.is_export:
                record.export.CopyFrom(
                    supervision_pb2.ExportDeclaration(
                        exporter=seller.credit_code,
                        destination=export.buyer_country,
                        individuals=export.individuals,
                        sensitive_individuals=export.sensitive,
                        mechanism=mechanism_value(decision.mechanism),
                        permit_id=decision.document_id or "",
                    )
                )

            def rows(conn: sqlite3.Connection, log_index: int, envelope: bytes) -> None:
                conn.execute(
                    "INSERT INTO trades (contract_id, log_index, envelope, contract_sha256, "
                    "dataset_id, seller, buyer, region_code, category, grade, price_fen, month, "
                    "year, finalized_at, is_export, exporter, individuals, sensitive) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        contract_id,
                        log_index,
                        envelope,
                        contract_sha,
                        terms.dataset_id,
                        terms.seller,
                        terms.buyer,
                        seller.region_code,
                        record.category,
                        int(grade),
                        terms.price.fen,
                        month_of(date),
                        export.year,
                        _iso(date),
                        int(decision.is_export),
                        seller.credit_code,
                        export.individuals if decision.is_export else 0,
                        export.sensitive if decision.is_export else 0,
                    ),
                )

            return await self._publisher.publish(record, rows)

    # ------------------------------------------------------------ statistics

    async def statistics(
        self, caller: Caller, request: supervision_pb2.GetStatisticsRequest
    ) -> list[supervision_pb2.StatisticsRow]:
        """Trades, value and exports per (region, category, grade, month), in scope."""
        require_overseer(caller, "GetStatistics")
        check_region_prefix(request.region_prefix)
        prefix = scope_prefix(caller, request.region_prefix, "GetStatistics")
        sql = (
            "SELECT region_code, category, grade, month, COUNT(*), SUM(price_fen), "
            "SUM(is_export) FROM trades WHERE region_code LIKE ? AND category LIKE ?"
        )
        params: list[object] = [prefix + "%", request.category_prefix + "%"]
        if request.grade:
            sql += " AND grade = ?"
            params.append(int(request.grade))
        if check_month(request.from_month, "from_month"):
            sql += " AND month >= ?"
            params.append(request.from_month)
        if check_month(request.to_month, "to_month"):
            sql += " AND month <= ?"
            params.append(request.to_month)
        sql += (
            " GROUP BY region_code, category, grade, month"
            " ORDER BY month, region_code, category, grade"
        )

        def read(conn: sqlite3.Connection) -> list[tuple[str, str, int, str, int, int, int]]:
            return [
                (str(r[0]), str(r[1]), int(r[2]), str(r[3]), int(r[4]), int(r[5]), int(r[6]))
                for r in conn.execute(sql, params)
            ]

        return [
            supervision_pb2.StatisticsRow(
                region_code=region,
                category=category,
                grade=common_pb2.Grade.ValueType(grade),
                month=month,
                trades=trades,
                value=common_pb2.Money(fen=value),
                exports=exports,
            )
            for region, category, grade, month, trades, value, exports in await self._reader.run(
                read
            )
        ]

    async def price_index(
        self, caller: Caller, category_prefix: str
    ) -> list[supervision_pb2.PriceIndexPoint]:
        """Median price per category and month, indexed on the first month (= 100)."""
        if caller.role is not Role.NODE:
            require_overseer(caller, "GetPriceIndex")
        prefix = scope_prefix(caller, "", "GetPriceIndex")

        def read(conn: sqlite3.Connection) -> list[tuple[str, str, int]]:
            return [
                (str(r[0]), str(r[1]), int(r[2]))
                for r in conn.execute(
                    "SELECT category, month, price_fen FROM trades "
                    "WHERE category LIKE ? AND region_code LIKE ?",
                    (category_prefix + "%", prefix + "%"),
                )
            ]

        return price_index(await self._reader.run(read))

    # ------------------------------------------------------------ freezes and actions

    async def frozen_members(self, caller: Caller) -> list[FrozenMember]:
        """Members frozen now, in the caller's scope, with the statement that froze each."""
        require_overseer(caller, "Listing frozen members")
        prefix = scope_prefix(caller, "", "Listing frozen members")

        def read(conn: sqlite3.Connection) -> list[tuple[tuple[str, ...], bytes | None]]:
            found: list[tuple[tuple[str, ...], bytes | None]] = []
            for row in conn.execute(
                "SELECT credit_code, name, region_code, node_id FROM members "
                "WHERE status = 'frozen' AND region_code LIKE ? ORDER BY credit_code LIMIT ?",
                (prefix + "%", MAX_PAGE),
            ).fetchall():
                latest = _latest_statement(conn, SubjectKind.MEMBER.value, str(row[0]))
                found.append((tuple(str(v) for v in row), None if latest is None else latest[1]))
            return found

        frozen: list[FrozenMember] = []
        for (code, name, region, node_id), envelope in await self._reader.run(read):
            statement = _statement(envelope) if envelope is not None else None
            frozen.append(
                FrozenMember(
                    credit_code=code,
                    name=name,
                    region_code=region,
                    node_id=node_id,
                    reason=statement.reason if statement else "",
                    actor=statement.actor.spiffe_id if statement else "",
                    frozen_at=from_timestamp(statement.issued_at) if statement else None,
                )
            )
        return frozen

    async def set_frozen(
        self, caller: Caller, credit_code: str, reason: str, frozen: bool
    ) -> common_pb2.Bundle:
        """Freeze (SUSPENDED) or unfreeze (ACTIVE) a member: a logged status statement."""
        action = "FreezeMember" if frozen else "UnfreezeMember"
        require_supervisor(caller, action)
        code = check_credit_code(credit_code, "credit_code")
        reason = check_reason(reason)
        member = await self._member_of(code, "member")
        require_in_scope(caller, member.region_code, f"member {code}")
        if (member.status == "frozen") == frozen:
            raise FailedPrecondition(
                f"member {code} is already {'frozen' if frozen else 'active (not frozen)'}"
            )
        return await self._issuance.set_status(
            str(caller),
            self._issuance.subject(SubjectKind.MEMBER, code),
            common_pb2.STATUS_SUSPENDED if frozen else common_pb2.STATUS_ACTIVE,
            reason,
        )

    async def list_actions(
        self, caller: Caller, region_prefix: str, after: int, page_size: int
    ) -> list[supervision_pb2.SupervisoryAction]:
        """Supervisory actions after a log index, oldest first, in the caller's scope."""
        require_overseer(caller, "ListSupervisoryActions")
        check_region_prefix(region_prefix)
        prefix = scope_prefix(caller, region_prefix, "ListSupervisoryActions") + "%"
        if page_size > MAX_PAGE:
            raise InvalidArgument(f"page_size {page_size} is above the maximum {MAX_PAGE}")
        size = page_size or DEFAULT_PAGE

        def read(
            conn: sqlite3.Connection,
        ) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
            own = conn.execute(
                f"SELECT {_ACTION_COLUMNS} FROM supervisory_actions "
                "WHERE log_index > ? AND region_code LIKE ? ORDER BY log_index LIMIT ?",
                (after, prefix, size),
            ).fetchall()
            statements = conn.execute(_STATEMENT_ACTIONS, (after, prefix, size)).fetchall()
            return [tuple(r) for r in own], [tuple(r) for r in statements]

        own, statements = await self._reader.run(read)
        actions: list[tuple[int, supervision_pb2.SupervisoryAction]] = []
        for log_index, action, subject, _, actor, taken_at in own:
            actions.append(
                (
                    int(str(log_index)),
                    supervision_pb2.SupervisoryAction(
                        action=str(action),
                        subject=str(subject),
                        actor=common_pb2.Actor(spiffe_id=str(actor)),
                        taken_at=to_timestamp(_parse_iso(str(taken_at))),
                        log_index=int(str(log_index)),
                    ),
                )
            )
        for log_index, kind, subject, status, envelope, _ in statements:
            assert isinstance(envelope, bytes)
            statement = _statement(envelope)
            automatic = statement.actor.spiffe_id == self._actor and statement.reason.startswith(
                LAPSE_REASON
            )
            actions.append(
                (
                    int(str(log_index)),
                    supervision_pb2.SupervisoryAction(
                        action=statement_action(
                            str(kind), str(status), statement.reason, automatic
                        ),
                        subject=f"{kind} {subject}",
                        actor=statement.actor,
                        taken_at=statement.issued_at,
                        log_index=int(str(log_index)),
                    ),
                )
            )
        actions.sort(key=lambda pair: pair[0])
        return [action for _, action in actions[:size]]


def _insert_action(
    conn: sqlite3.Connection,
    *,
    log_index: int,
    action: str,
    subject: str,
    region: str,
    actor: str,
    now: datetime,
    reason: str,
) -> None:
    conn.execute(
        f"INSERT INTO supervisory_actions ({_ACTION_COLUMNS}, reason) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (log_index, action, subject, region, actor, _iso(now), reason),
    )
