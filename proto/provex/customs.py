"""Cross-border data transfer ("customs"): when a trade is an export and what it needs.

The seller's node runs :func:`decide_export` before it agrees to a trade, and
the registry runs the same function when an export is declared, so both
reach the same :class:`ExportDecision` with the same reasons. The registry
keeps the per-exporter yearly counters with :class:`YearlyCounter`.
Everything here is pure: no I/O, no clock (the export date is an input).

The rules (DESIGN.md section 7, "Cross-border"), each named in the reasons:

* ``export``: the buyer's ISO 3166-1 alpha-2 country decides. ``CN`` is the
  mainland and makes no export; every other valid code, including Hong Kong
  (``HK``), Macao (``MO``) and Taiwan (``TW``), is outside the mainland.
  Codes are two ASCII letters (lower case accepted and normalized, surrounding
  white space ignored); malformed codes raise
  :class:`~provex.errors.InvalidArgument` naming the field. Assignment is not
  checked: any well-formed pair is a country.
* ``core-data-forbidden``: core data never leaves the mainland, whatever
  permit the exporter holds and whatever its free-trade zone lists.
* ``catalog-forbidden`` and ``catalog-assessment`` (DESIGN.md section 3):
  every catalog entry has a cross-border rule. The caller passes each of
  the dataset's categories with its *effective* rule in the catalog version
  in force (:func:`cross_border_rules`: the strictest of the entry's own rule
  and its ancestors'). A FORBIDDEN category refuses the export whatever
  permit the exporter holds and whatever its free-trade zone lists; an
  ASSESSMENT_REQUIRED category needs an export permit exactly as important
  data does; ALLOWED leaves the decision to the other rules.
* ``ftz-negative-list``: where the exporter's free-trade zone has a negative
  list (a set of category codes; a listed code covers itself and every
  dotted descendant: ``health`` covers ``health.medical.x``, not
  ``healthcare``) and *none* of the dataset's categories is on it, the
  export is exempt from the important-data, catalog-assessment and
  personal-information rules. If *any* category is on the list, every rule
  applies to the whole dataset. An empty list (the zone has a list, nothing
  on it) exempts everything but core data and FORBIDDEN categories; ``None``
  means the zone has no list.
* ``important-data-permit``: important data (and, by ``catalog-assessment``,
  data of an ASSESSMENT_REQUIRED category) needs a registry-issued export
  permit (:class:`ExportPermit`, a security assessment) covering the dataset
  or one of its categories, for the buyer's country (and recipient, if the
  permit names one), valid at the export date (``issued_at <= date <
  expires_at``, expiry exactly 3 calendar years after issue), not revoked.
* ``personal-info-*``: personal information is counted per exporter per
  calendar year (Asia/Shanghai), cumulatively *including* this export
  (:func:`required_mechanism`): fewer than 100,000 individuals and no
  sensitive ones is exempt (``personal-info-exempt``); 100,000 to 999,999
  individuals, or 1 to 9,999 sensitive ones, needs a standard contract
  filed at the registry (``personal-info-standard-contract``); 1,000,000 or
  more, or 10,000 or more sensitive, needs a security assessment permit
  (``personal-info-assessment``). The rule applies only to an export that
  carries personal information itself: a dataset without any does not
  inherit the exporter's earlier counts.
* ``documents-held``: the strictest requirement decides the
  :class:`Mechanism`; a standard contract requirement is met by a filed
  contract (same exporter, destination, recipient and calendar year, filed
  no later than the export) or by a permit that would meet an assessment
  requirement (the stricter document covers the lighter one).

Readings where the rule text leaves room, chosen here:

* Every export counts towards the yearly counters, an exempt one included
  (the registry counts every declared export; the negative list exempts an
  export from the requirements, not from being counted). A non-export
  counts nothing.
* Calendar years, the counter reset on 1 January and the 3-year permit
  validity are all computed on the Asia/Shanghai wall clock; datetimes must
  be aware (naive ones are refused) and are stored in UTC.
* A permit naming categories covers a dataset when any of the dataset's
  categories is one of them or a dotted descendant of one. The permit's
  purpose is recorded, not matched (a trade states no purpose).
* The free-trade-zone negative list exempts from the *procedures* (the
  security assessment and the standard contract: ``important-data-permit``,
  ``personal-info-*`` and ``catalog-assessment``), not from a *prohibition*:
  a FORBIDDEN category (``catalog-forbidden``), like core data, is refused
  whether or not the zone lists it, and an empty list does not open it.
* A category's effective rule is the strictest along its path to the root
  (the catalog already keeps a provincial extension from loosening its
  parent; a national entry is read the same way). A dataset with several
  categories is refused if any one is FORBIDDEN and needs a permit if any
  one is ASSESSMENT_REQUIRED. A category missing from the catalog version
  in force has no rule to apply: :func:`cross_border_rules` refuses it
  (FailedPrecondition), never reads it as ALLOWED.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import cache
from types import MappingProxyType
from zoneinfo import ZoneInfo

from provex.errors import FailedPrecondition, InvalidArgument, NotFound
from provex.grading import Catalog, CrossBorderRule, Grade
from provex.ids import CreditCode, DatasetId

__all__ = [
    "ASSESSMENT_INDIVIDUALS",
    "ASSESSMENT_SENSITIVE",
    "CONTRACT_INDIVIDUALS",
    "MAINLAND",
    "PERMIT_VALIDITY_YEARS",
    "RULE_CATALOG_ASSESSMENT",
    "RULE_CATALOG_FORBIDDEN",
    "RULE_CORE_FORBIDDEN",
    "RULE_DOCUMENTS",
    "RULE_EXPORT",
    "RULE_FTZ_NEGATIVE_LIST",
    "RULE_IMPORTANT_PERMIT",
    "RULE_PI_ASSESSMENT",
    "RULE_PI_EXEMPT",
    "RULE_PI_STANDARD_CONTRACT",
    "TIMEZONE",
    "DeclaredExport",
    "ExportDecision",
    "ExportDocument",
    "ExportPermit",
    "ExportReason",
    "ExportRequest",
    "Mechanism",
    "StandardContract",
    "YearlyCount",
    "YearlyCounter",
    "calendar_year",
    "check_export",
    "cross_border_rules",
    "decide_export",
    "is_export",
    "normalize_country",
    "normalize_negative_list",
    "on_negative_list",
    "permit_expiry",
    "required_mechanism",
]

MAINLAND = "CN"
"""The ISO 3166-1 alpha-2 code of the mainland: a buyer here makes no export."""

TIMEZONE = "Asia/Shanghai"
"""The time zone whose calendar counts years and permit validity."""

PERMIT_VALIDITY_YEARS = 3
"""An export permit is valid for this many calendar years from its issue."""

CONTRACT_INDIVIDUALS = 100_000
"""From this many individuals a year, personal information needs a standard contract."""

ASSESSMENT_INDIVIDUALS = 1_000_000
"""From this many individuals a year, personal information needs a security assessment."""

ASSESSMENT_SENSITIVE = 10_000
"""From this many sensitive individuals a year (1 needs a contract), an assessment is needed."""

RULE_EXPORT = "export"
RULE_CORE_FORBIDDEN = "core-data-forbidden"
RULE_CATALOG_FORBIDDEN = "catalog-forbidden"
RULE_CATALOG_ASSESSMENT = "catalog-assessment"
RULE_FTZ_NEGATIVE_LIST = "ftz-negative-list"
RULE_IMPORTANT_PERMIT = "important-data-permit"
RULE_PI_EXEMPT = "personal-info-exempt"
RULE_PI_STANDARD_CONTRACT = "personal-info-standard-contract"
RULE_PI_ASSESSMENT = "personal-info-assessment"
RULE_DOCUMENTS = "documents-held"


class Mechanism(StrEnum):
    """What an export needs, from least to most strict (see :attr:`strictness`)."""

    NOT_EXPORT = "not_export"
    """The buyer is on the mainland: no export, nothing needed."""
    EXEMPT = "exempt"
    """An export that needs no document."""
    STANDARD_CONTRACT = "standard_contract"
    """An export that needs a standard contract filed at the registry (or a permit)."""
    ASSESSMENT = "assessment"
    """An export that needs a registry-issued security assessment export permit."""
    FORBIDDEN = "forbidden"
    """An export that nothing allows (core data, a category the catalog forbids to export)."""

    @property
    def strictness(self) -> int:
        """0 for NOT_EXPORT up to 4 for FORBIDDEN."""
        return list(Mechanism).index(self)


# ---------------------------------------------------------------------------
# Field checks
# ---------------------------------------------------------------------------

_COUNTRY_INPUT = re.compile(r"[A-Za-z]{2}")
_CATEGORY_CODE = re.compile(r"[a-z0-9_]+(?:\.[a-z0-9_]+)*")


@cache
def _zone() -> ZoneInfo:
    return ZoneInfo(TIMEZONE)


def normalize_country(code: object, field: str = "country") -> str:
    """The canonical alpha-2 code (``hk`` -> ``HK``); InvalidArgument naming ``field`` else."""
    if isinstance(code, str) and _COUNTRY_INPUT.fullmatch(code.strip()):
        return code.strip().upper()
    raise InvalidArgument(
        f"{field} must be an ISO 3166-1 alpha-2 country code of two letters "
        f"(e.g. CN, HK, US), got {code!r}"
    )


def is_export(country: object, field: str = "buyer_country") -> bool:
    """True when a buyer in ``country`` makes the trade an export (anything but ``CN``)."""
    return normalize_country(country, field) != MAINLAND


def _aware(moment: object, field: str) -> datetime:
    if not isinstance(moment, datetime):
        raise InvalidArgument(f"{field} must be a datetime, got {moment!r}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidArgument(f"{field} is a naive datetime: use an aware UTC datetime")
    return moment.astimezone(UTC)


def calendar_year(moment: datetime, field: str = "date") -> int:
    """The Asia/Shanghai calendar year of an aware datetime (naive ones: InvalidArgument).

    ``2026-12-31T16:30Z`` is already 2027 in Shanghai.
    """
    return _aware(moment, field).astimezone(_zone()).year


def permit_expiry(issued_at: datetime) -> datetime:
    """The moment a permit issued at ``issued_at`` expires: 3 calendar years later, in UTC.

    Same wall-clock time in Asia/Shanghai, 3 years on; an issue on 29 February
    expires on 28 February. Naive datetimes raise InvalidArgument.
    """
    local = _aware(issued_at, "issued_at").astimezone(_zone())
    year = local.year + PERMIT_VALIDITY_YEARS
    try:
        later = local.replace(year=year)
    except ValueError:  # 29 February in a year without one
        later = local.replace(year=year, day=28)
    return later.astimezone(UTC)


def _count(value: object, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidArgument(f"{field} must be an integer >= 0, got {value!r}")
    return value


def _text(value: object, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument(f"{field} must be a non-empty string, got {value!r}")
    return value.strip()


def _credit_code(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{field} must be a credit code string, got {value!r}")
    try:
        return CreditCode.parse(value).code
    except InvalidArgument as error:
        raise InvalidArgument(f"{field}: {error}") from None


def _dataset_id(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{field} must be a dataset id string, got {value!r}")
    try:
        return str(DatasetId.parse(value))
    except InvalidArgument as error:
        raise InvalidArgument(f"{field}: {error}") from None


def _category(value: object, field: str) -> str:
    if not isinstance(value, str) or not _CATEGORY_CODE.fullmatch(value):
        raise InvalidArgument(
            f"{field} must be a category code of dotted lower-case segments of a-z, 0-9 and _ "
            f"(e.g. health.medical), got {value!r}"
        )
    return value


def _sequence(value: object, field: str) -> tuple[object, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise InvalidArgument(f"{field} must be a sequence, got {value!r}")
    return tuple(value)


def _unique(items: tuple[str, ...], field: str) -> tuple[str, ...]:
    repeated = sorted({i for i in items if items.count(i) > 1})
    if repeated:
        raise InvalidArgument(f"{field}: {', '.join(repeated)} listed twice")
    return items


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------------------
# The free-trade-zone negative list
# ---------------------------------------------------------------------------


def normalize_negative_list(codes: Iterable[str] | None) -> frozenset[str] | None:
    """A negative list as a frozenset of valid category codes; None stays None (no list)."""
    if codes is None:
        return None
    return frozenset(
        _category(code, "negative_list entry") for code in _sequence(codes, "negative_list")
    )


def _covered_by(prefix: str, code: str) -> bool:
    return code == prefix or code.startswith(prefix + ".")


def on_negative_list(category: str, negative_list: Iterable[str]) -> str | None:
    """The listed code that covers ``category`` (itself or a dotted ancestor), else None.

    ``health`` covers ``health`` and ``health.medical.x``, not ``healthcare``;
    the most specific listed code is returned.
    """
    _category(category, "category")
    covering = [code for code in negative_list if _covered_by(code, category)]
    return max(covering, key=len) if covering else None


# ---------------------------------------------------------------------------
# Counters
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class YearlyCount:
    """Individuals (and sensitive ones) an exporter exported in one Asia/Shanghai calendar year."""

    exporter: str
    year: int
    individuals: int = 0
    sensitive: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "exporter", _credit_code(self.exporter, "counter.exporter"))
        if not isinstance(self.year, int) or isinstance(self.year, bool) or self.year < 1:
            raise InvalidArgument(f"counter.year must be a positive integer, got {self.year!r}")
        _count(self.individuals, "counter.individuals")
        _count(self.sensitive, "counter.sensitive")

    def plus(self, individuals: int, sensitive: int) -> YearlyCount:
        """The count with one more export of these counts added."""
        return YearlyCount(
            self.exporter,
            self.year,
            self.individuals + _count(individuals, "individuals"),
            self.sensitive + _count(sensitive, "sensitive"),
        )


@dataclass(frozen=True)
class DeclaredExport:
    """An export as declared to the registry: who, when, and how many individuals."""

    exporter: str
    date: datetime
    individuals: int = 0
    sensitive: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "exporter", _credit_code(self.exporter, "declaration.exporter"))
        object.__setattr__(self, "date", _aware(self.date, "declaration.date"))
        _count(self.individuals, "declaration.individuals")
        _count(self.sensitive, "declaration.sensitive")

    @property
    def year(self) -> int:
        """The Asia/Shanghai calendar year the export counts in."""
        return calendar_year(self.date)


@dataclass(frozen=True)
class YearlyCounter:
    """The registry's totals per exporter per calendar year, built from declared exports.

    Immutable: :meth:`add` returns a new counter. A year without declarations
    counts zero, which is how the counter resets on 1 January.
    """

    totals: Mapping[tuple[str, int], YearlyCount] = field(
        default_factory=lambda: MappingProxyType({})
    )

    def __post_init__(self) -> None:
        totals = dict(self.totals)
        for key, count in totals.items():
            if not isinstance(count, YearlyCount) or key != (count.exporter, count.year):
                raise InvalidArgument(
                    f"counter totals: {key!r} must map to that exporter's YearlyCount, "
                    f"got {count!r}"
                )
        object.__setattr__(self, "totals", MappingProxyType(totals))

    @classmethod
    def of(cls, declarations: Iterable[DeclaredExport]) -> YearlyCounter:
        """The counter totalling ``declarations`` (in any order)."""
        totals: dict[tuple[str, int], YearlyCount] = {}
        for declaration in declarations:
            if not isinstance(declaration, DeclaredExport):
                raise InvalidArgument(f"declarations must be DeclaredExport, got {declaration!r}")
            key = (declaration.exporter, declaration.year)
            before = totals.get(key) or YearlyCount(*key)
            totals[key] = before.plus(declaration.individuals, declaration.sensitive)
        return cls(totals)

    def add(self, declaration: DeclaredExport) -> YearlyCounter:
        """A new counter with ``declaration`` counted too."""
        return YearlyCounter.of([declaration]).merged(self)

    def merged(self, other: YearlyCounter) -> YearlyCounter:
        """The counter totalling both counters' declarations."""
        totals = dict(self.totals)
        for key, count in other.totals.items():
            before = totals.get(key) or YearlyCount(*key)
            totals[key] = before.plus(count.individuals, count.sensitive)
        return YearlyCounter(totals)

    def count(self, exporter: str, year: int) -> YearlyCount:
        """What ``exporter`` exported in ``year`` (zero when nothing was declared)."""
        code = _credit_code(exporter, "exporter")
        return self.totals.get((code, year)) or YearlyCount(code, year)

    def count_at(self, exporter: str, date: datetime) -> YearlyCount:
        """What ``exporter`` exported in the calendar year of ``date`` (Asia/Shanghai)."""
        return self.count(exporter, calendar_year(date))


# ---------------------------------------------------------------------------
# Documents
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportPermit:
    """A registry-issued export permit (security assessment): a signed, logged statement.

    It covers ``dataset_ids`` and/or ``categories`` (at least one of them;
    a category covers its dotted descendants) exported by ``exporter`` to
    ``destination`` for ``purpose``; to ``recipient`` only, if it names one
    (``None``: any recipient). Valid from ``issued_at`` (inclusive) to
    ``expires_at`` (exclusive), which must be :func:`permit_expiry` of
    ``issued_at``; :meth:`issue` computes it. A revoked permit covers nothing.
    """

    permit_id: str
    exporter: str
    destination: str
    purpose: str
    issued_at: datetime
    expires_at: datetime
    dataset_ids: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    recipient: str | None = None
    revoked: bool = False

    def __post_init__(self) -> None:
        permit_id = _text(self.permit_id, "permit.permit_id")
        what = f"permit {permit_id}"
        set_ = object.__setattr__
        set_(self, "permit_id", permit_id)
        set_(self, "exporter", _credit_code(self.exporter, f"{what}: exporter"))
        set_(self, "destination", normalize_country(self.destination, f"{what}: destination"))
        set_(self, "purpose", _text(self.purpose, f"{what}: purpose"))
        issued_at = _aware(self.issued_at, f"{what}: issued_at")
        expires_at = _aware(self.expires_at, f"{what}: expires_at")
        if expires_at != permit_expiry(issued_at):
            raise InvalidArgument(
                f"{what}: expires_at must be {PERMIT_VALIDITY_YEARS} calendar years after "
                f"issued_at ({_when(permit_expiry(issued_at))}), got {_when(expires_at)}"
            )
        set_(self, "issued_at", issued_at)
        set_(self, "expires_at", expires_at)
        dataset_ids = tuple(
            _dataset_id(d, f"{what}: dataset_ids")
            for d in _sequence(self.dataset_ids, f"{what}: dataset_ids")
        )
        categories = tuple(
            _category(c, f"{what}: categories")
            for c in _sequence(self.categories, f"{what}: categories")
        )
        if not dataset_ids and not categories:
            raise InvalidArgument(f"{what}: covers no dataset_ids and no categories")
        set_(self, "dataset_ids", _unique(dataset_ids, f"{what}: dataset_ids"))
        set_(self, "categories", _unique(categories, f"{what}: categories"))
        if self.recipient is not None:
            set_(self, "recipient", _text(self.recipient, f"{what}: recipient"))
        if not isinstance(self.revoked, bool):
            raise InvalidArgument(f"{what}: revoked must be a bool, got {self.revoked!r}")

    @classmethod
    def issue(
        cls,
        permit_id: str,
        exporter: str,
        destination: str,
        purpose: str,
        issued_at: datetime,
        *,
        dataset_ids: Iterable[str] = (),
        categories: Iterable[str] = (),
        recipient: str | None = None,
    ) -> ExportPermit:
        """A new, unrevoked permit expiring :func:`permit_expiry` of ``issued_at``."""
        return cls(
            permit_id=permit_id,
            exporter=exporter,
            destination=destination,
            purpose=purpose,
            issued_at=issued_at,
            expires_at=permit_expiry(_aware(issued_at, f"permit {permit_id}: issued_at")),
            dataset_ids=tuple(dataset_ids),
            categories=tuple(categories),
            recipient=recipient,
        )

    @property
    def document_id(self) -> str:
        """The permit id."""
        return self.permit_id

    def valid_at(self, date: datetime) -> bool:
        """Not revoked, and ``issued_at <= date < expires_at``."""
        moment = _aware(date, "date")
        return not self.revoked and self.issued_at <= moment < self.expires_at

    def problem(self, export: ExportRequest) -> str | None:
        """Why this permit does not cover ``export``, or None when it does."""
        name = f"permit {self.permit_id}"
        if self.exporter != export.exporter:
            return f"{name} is for exporter {self.exporter}"
        if self.revoked:
            return f"{name} is revoked"
        if export.date < self.issued_at:
            return f"{name} is not valid yet (issued at {_when(self.issued_at)})"
        if export.date >= self.expires_at:
            return f"{name} expired at {_when(self.expires_at)}"
        if self.destination != export.buyer_country:
            return f"{name} is for destination {self.destination}"
        if self.recipient is not None and self.recipient != export.recipient:
            return f"{name} is for recipient {self.recipient!r}"
        if export.dataset_id in self.dataset_ids:
            return None
        if any(_covered_by(c, code) for c in self.categories for code in export.categories):
            return None
        return f"{name} covers neither dataset {export.dataset_id} nor any of its categories"


@dataclass(frozen=True)
class StandardContract:
    """A standard contract for personal information exports, filed at the registry.

    It covers ``exporter``'s exports to ``recipient`` in ``destination``
    during the Asia/Shanghai calendar ``year``, from ``filed_at`` on.
    """

    contract_id: str
    exporter: str
    destination: str
    recipient: str
    filed_at: datetime
    year: int

    def __post_init__(self) -> None:
        contract_id = _text(self.contract_id, "contract.contract_id")
        what = f"standard contract {contract_id}"
        set_ = object.__setattr__
        set_(self, "contract_id", contract_id)
        set_(self, "exporter", _credit_code(self.exporter, f"{what}: exporter"))
        set_(self, "destination", normalize_country(self.destination, f"{what}: destination"))
        set_(self, "recipient", _text(self.recipient, f"{what}: recipient"))
        filed_at = _aware(self.filed_at, f"{what}: filed_at")
        set_(self, "filed_at", filed_at)
        if not isinstance(self.year, int) or isinstance(self.year, bool):
            raise InvalidArgument(f"{what}: year must be an integer, got {self.year!r}")
        if self.year < calendar_year(filed_at):
            raise InvalidArgument(
                f"{what}: year {self.year} is before the year it was filed "
                f"({calendar_year(filed_at)})"
            )

    @property
    def document_id(self) -> str:
        """The contract id."""
        return self.contract_id

    def problem(self, export: ExportRequest) -> str | None:
        """Why this contract does not cover ``export``, or None when it does."""
        name = f"standard contract {self.contract_id}"
        if self.exporter != export.exporter:
            return f"{name} is for exporter {self.exporter}"
        if self.year != export.year:
            return f"{name} is for {self.year}"
        if export.date < self.filed_at:
            return f"{name} was not filed yet (filed at {_when(self.filed_at)})"
        if self.destination != export.buyer_country:
            return f"{name} is for destination {self.destination}"
        if self.recipient != export.recipient:
            return f"{name} is for recipient {self.recipient!r}"
        return None


ExportDocument = ExportPermit | StandardContract
"""A document an exporter holds: a permit or a filed standard contract."""


# ---------------------------------------------------------------------------
# The catalog's cross-border rules
# ---------------------------------------------------------------------------


def cross_border_rules(catalog: Catalog, categories: Iterable[str]) -> dict[str, CrossBorderRule]:
    """Each category's effective cross-border rule in ``catalog``, for :func:`decide_export`.

    The effective rule is the strictest of the entry's own rule and its
    ancestors' (``geo.mapping`` under a FORBIDDEN ``geo`` is FORBIDDEN). A
    category this catalog version does not hold is FailedPrecondition
    naming it and the version: customs never guesses a rule.
    """
    if not isinstance(catalog, Catalog):
        raise InvalidArgument(f"catalog must be a provex.grading.Catalog, got {catalog!r}")
    rules: dict[str, CrossBorderRule] = {}
    for item in _sequence(categories, "categories"):
        code = _category(item, "categories")
        try:
            path = (catalog.get(code), *catalog.ancestors(code))
        except NotFound:
            raise FailedPrecondition(
                f"category {code} is not in catalog version {catalog.version}, the version in "
                "force: its cross-border rule is unknown, so the dataset cannot be exported "
                "until its certificate names current categories"
            ) from None
        rules[code] = max((e.cross_border for e in path), key=lambda r: r.strictness)
    return rules


def _rules_for(export: ExportRequest, cross_border: object) -> dict[str, CrossBorderRule]:
    """The rules of exactly ``export``'s categories; InvalidArgument if one is missing or odd."""
    if not isinstance(cross_border, Mapping):
        raise InvalidArgument(
            f"cross_border must map each category to its CrossBorderRule, got {cross_border!r}"
        )
    rules: dict[str, CrossBorderRule] = {}
    for code in export.categories:
        rule = cross_border.get(code)
        if not isinstance(rule, CrossBorderRule):
            raise InvalidArgument(
                f"cross_border: category {code} of dataset {export.dataset_id} needs its "
                f"CrossBorderRule from the catalog in force, got {rule!r}"
            )
        rules[code] = rule
    return rules


def _catalog_reasons(
    export: ExportRequest, rules: Mapping[str, CrossBorderRule]
) -> list[ExportReason]:
    """``catalog-assessment`` for the ASSESSMENT_REQUIRED categories (none when all ALLOWED)."""
    assessed = [c for c, r in rules.items() if r is CrossBorderRule.ASSESSMENT_REQUIRED]
    if not assessed:
        return []
    which = "category" if len(assessed) == 1 else "categories"
    return [
        ExportReason(
            RULE_CATALOG_ASSESSMENT,
            Mechanism.ASSESSMENT,
            f"the catalog requires a security assessment to export {which} "
            f"{', '.join(assessed)}: it needs a registry-issued export permit for "
            f"{export.buyer_country}",
        )
    ]


# ---------------------------------------------------------------------------
# The decision
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportRequest:
    """One trade as customs sees it: the dataset, the buyer, the date, the personal information.

    ``individuals`` and ``sensitive`` count the people whose (sensitive)
    personal information this export carries. ``recipient`` names the
    buyer (compared exactly with a permit's or contract's recipient).
    """

    exporter: str
    dataset_id: str
    grade: Grade
    categories: tuple[str, ...]
    buyer_country: str
    recipient: str
    date: datetime
    individuals: int = 0
    sensitive: int = 0

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "exporter", _credit_code(self.exporter, "export.exporter"))
        set_(self, "dataset_id", _dataset_id(self.dataset_id, "export.dataset_id"))
        if isinstance(self.grade, bool) or not isinstance(self.grade, int):
            raise InvalidArgument(f"export.grade must be a Grade, got {self.grade!r}")
        try:
            set_(self, "grade", Grade(self.grade))
        except ValueError:
            raise InvalidArgument(f"export.grade must be a Grade, got {self.grade!r}") from None
        categories = tuple(
            _category(c, "export.categories")
            for c in _sequence(self.categories, "export.categories")
        )
        if not categories:
            raise InvalidArgument("export.categories: at least one category is required")
        set_(self, "categories", _unique(categories, "export.categories"))
        set_(self, "buyer_country", normalize_country(self.buyer_country, "export.buyer_country"))
        set_(self, "recipient", _text(self.recipient, "export.recipient"))
        set_(self, "date", _aware(self.date, "export.date"))
        _count(self.individuals, "export.individuals")
        _count(self.sensitive, "export.sensitive")

    @property
    def is_export(self) -> bool:
        """True when the buyer is outside the mainland."""
        return self.buyer_country != MAINLAND

    @property
    def year(self) -> int:
        """The Asia/Shanghai calendar year the export counts in."""
        return calendar_year(self.date)

    def declaration(self) -> DeclaredExport:
        """The declaration the registry counts for this export."""
        return DeclaredExport(self.exporter, self.date, self.individuals, self.sensitive)


@dataclass(frozen=True)
class ExportReason:
    """One rule's contribution to a decision: the rule, what it requires, and why."""

    rule: str
    requires: Mechanism
    detail: str

    def __str__(self) -> str:
        return f"rule {self.rule}: {self.detail}"


@dataclass(frozen=True)
class ExportDecision:
    """What customs decided for one trade.

    ``mechanism`` is the strictest requirement; ``satisfied`` says whether
    the trade may go ahead (always for NOT_EXPORT and EXEMPT, never for
    FORBIDDEN, else when ``document`` meets it). ``counters_after`` is the
    exporter's yearly count including this export, the one the thresholds
    were applied to and the registry records when the export is declared
    (unchanged for a non-export). ``reasons`` name every rule considered.
    """

    is_export: bool
    mechanism: Mechanism
    satisfied: bool
    document: ExportDocument | None
    counters_after: YearlyCount
    reasons: tuple[ExportReason, ...]

    @property
    def allowed(self) -> bool:
        """True when the trade may go ahead (same as ``satisfied``)."""
        return self.satisfied

    @property
    def document_id(self) -> str | None:
        """The id of the permit or contract that satisfies the requirement, if any."""
        return None if self.document is None else self.document.document_id

    @property
    def rules(self) -> tuple[str, ...]:
        """The names of the rules in ``reasons``, in order."""
        return tuple(r.rule for r in self.reasons)

    def explain(self) -> str:
        """A human-readable account, one reason a line."""
        verdict = "allowed" if self.satisfied else "refused"
        lines = [f"{self.mechanism.value}: {verdict}"]
        lines.extend(f"  - {r}" for r in self.reasons)
        return "\n".join(lines)


def required_mechanism(individuals: int, sensitive: int) -> Mechanism:
    """What personal information of this many individuals a year needs to leave the mainland.

    Counts are cumulative per exporter per calendar year, including the
    export being decided: EXEMPT below 100,000 individuals with no sensitive
    ones; STANDARD_CONTRACT from 100,000 individuals or 1 sensitive one;
    ASSESSMENT from 1,000,000 individuals or 10,000 sensitive ones.
    """
    _count(individuals, "individuals")
    _count(sensitive, "sensitive")
    if individuals >= ASSESSMENT_INDIVIDUALS or sensitive >= ASSESSMENT_SENSITIVE:
        return Mechanism.ASSESSMENT
    if individuals >= CONTRACT_INDIVIDUALS or sensitive >= 1:
        return Mechanism.STANDARD_CONTRACT
    return Mechanism.EXEMPT


def _personal_info_reasons(count: YearlyCount) -> list[ExportReason]:
    who = f"exported by {count.exporter} in {count.year}"
    individuals, sensitive = f"{count.individuals:,}", f"{count.sensitive:,}"
    reasons: list[ExportReason] = []
    by_individuals = required_mechanism(count.individuals, 0)
    by_sensitive = required_mechanism(0, count.sensitive)
    if by_individuals is Mechanism.ASSESSMENT:
        reasons.append(
            ExportReason(
                RULE_PI_ASSESSMENT,
                Mechanism.ASSESSMENT,
                f"{ASSESSMENT_INDIVIDUALS:,} or more individuals ({individuals}) {who} "
                "needs a security assessment permit",
            )
        )
    elif by_individuals is Mechanism.STANDARD_CONTRACT:
        reasons.append(
            ExportReason(
                RULE_PI_STANDARD_CONTRACT,
                Mechanism.STANDARD_CONTRACT,
                f"{CONTRACT_INDIVIDUALS:,} to {ASSESSMENT_INDIVIDUALS - 1:,} individuals "
                f"({individuals}) {who} needs a filed standard contract",
            )
        )
    if by_sensitive is Mechanism.ASSESSMENT:
        reasons.append(
            ExportReason(
                RULE_PI_ASSESSMENT,
                Mechanism.ASSESSMENT,
                f"{ASSESSMENT_SENSITIVE:,} or more sensitive individuals ({sensitive}) {who} "
                "needs a security assessment permit",
            )
        )
    elif by_sensitive is Mechanism.STANDARD_CONTRACT:
        reasons.append(
            ExportReason(
                RULE_PI_STANDARD_CONTRACT,
                Mechanism.STANDARD_CONTRACT,
                f"1 to {ASSESSMENT_SENSITIVE - 1:,} sensitive individuals ({sensitive}) {who} "
                "needs a filed standard contract",
            )
        )
    if not reasons:
        reasons.append(
            ExportReason(
                RULE_PI_EXEMPT,
                Mechanism.EXEMPT,
                f"fewer than {CONTRACT_INDIVIDUALS:,} individuals ({individuals}) and no sensitive "
                f"ones {who}: exempt",
            )
        )
    return reasons


def _find_document(
    mechanism: Mechanism, export: ExportRequest, documents: list[ExportDocument]
) -> tuple[ExportDocument | None, list[str]]:
    """The first document meeting ``mechanism`` (contracts before permits), and why others fail."""
    kinds: tuple[type[ExportDocument], ...] = (
        (StandardContract, ExportPermit)
        if mechanism is Mechanism.STANDARD_CONTRACT
        else (ExportPermit,)
    )
    problems: list[str] = []
    for kind in kinds:
        for document in documents:
            if not isinstance(document, kind):
                continue
            problem = document.problem(export)
            if problem is None:
                return document, problems
            problems.append(problem)
    return None, problems


def decide_export(
    export: ExportRequest,
    counters_before: YearlyCount,
    *,
    cross_border: Mapping[str, CrossBorderRule],
    documents: Iterable[ExportDocument] = (),
    negative_list: Iterable[str] | None = None,
) -> ExportDecision:
    """Decide one trade under the customs rules (see the module docstring).

    ``counters_before`` is the exporter's count for the calendar year of the
    export date, before this export (InvalidArgument if it is another
    exporter's or another year's). ``cross_border`` maps every category of
    the dataset to its effective rule in the catalog version in force
    (:func:`cross_border_rules`; InvalidArgument if one is missing from an
    export; a mainland trade does not read it, so it may be empty).
    ``documents`` are the permits and filed standard contracts the exporter
    holds; ``negative_list`` is its free-trade zone's negative list, or None
    if the zone has none.
    """
    if not isinstance(export, ExportRequest):
        raise InvalidArgument(f"export must be an ExportRequest, got {export!r}")
    if not isinstance(counters_before, YearlyCount):
        raise InvalidArgument(f"counters_before must be a YearlyCount, got {counters_before!r}")
    if counters_before.exporter != export.exporter:
        raise InvalidArgument(
            f"counters_before.exporter is {counters_before.exporter}, "
            f"but the exporter is {export.exporter}"
        )
    if counters_before.year != export.year:
        raise InvalidArgument(
            f"counters_before.year is {counters_before.year}, but the export date "
            f"{_when(export.date)} is in {export.year} ({TIMEZONE})"
        )
    held_documents: list[ExportDocument] = []
    for item in _sequence(documents, "documents"):
        if not isinstance(item, (ExportPermit, StandardContract)):
            raise InvalidArgument(
                f"documents must be ExportPermit or StandardContract, got {item!r}"
            )
        held_documents.append(item)
    listed = normalize_negative_list(negative_list)

    if not export.is_export:
        return ExportDecision(
            is_export=False,
            mechanism=Mechanism.NOT_EXPORT,
            satisfied=True,
            document=None,
            counters_after=counters_before,
            reasons=(
                ExportReason(
                    RULE_EXPORT,
                    Mechanism.NOT_EXPORT,
                    f"buyer country {export.buyer_country} is the mainland: not an export",
                ),
            ),
        )

    rules = _rules_for(export, cross_border)
    counters_after = counters_before.plus(export.individuals, export.sensitive)
    reasons = [
        ExportReason(
            RULE_EXPORT,
            Mechanism.EXEMPT,
            f"buyer country {export.buyer_country} is outside the mainland: the trade is an export",
        )
    ]

    def refused(rule: str, detail: str) -> ExportDecision:
        """FORBIDDEN: no document or negative list changes that (both named if present)."""
        ignored = []
        if held_documents:
            ignored.append(f"{len(held_documents)} document(s) held")
        if listed is not None:
            ignored.append("the free-trade-zone negative list")
        if ignored:
            detail += f" (ignoring {' and '.join(ignored)})"
        reasons.append(ExportReason(rule, Mechanism.FORBIDDEN, detail))
        return ExportDecision(
            is_export=True,
            mechanism=Mechanism.FORBIDDEN,
            satisfied=False,
            document=None,
            counters_after=counters_after,
            reasons=tuple(reasons),
        )

    if export.grade is Grade.CORE:
        return refused(
            RULE_CORE_FORBIDDEN,
            f"dataset {export.dataset_id} is core data, which never leaves the mainland",
        )

    forbidden = [c for c, r in rules.items() if r is CrossBorderRule.FORBIDDEN]
    if forbidden:
        which = "category" if len(forbidden) == 1 else "categories"
        return refused(
            RULE_CATALOG_FORBIDDEN,
            f"the catalog forbids exporting {which} {', '.join(forbidden)} (cross-border rule "
            f"forbidden): dataset {export.dataset_id} never leaves the mainland",
        )

    if listed is not None:
        on_list = {c: on_negative_list(c, listed) for c in export.categories}
        hits = [
            c if code == c else f"{c} (listed as {code})"
            for c, code in on_list.items()
            if code is not None
        ]
        if not hits:
            reasons.append(
                ExportReason(
                    RULE_FTZ_NEGATIVE_LIST,
                    Mechanism.EXEMPT,
                    f"none of the categories {', '.join(export.categories)} is on the "
                    "exporter's free-trade-zone negative list: exempt from the important-data, "
                    "catalog-assessment and personal-information rules",
                )
            )
            return ExportDecision(
                is_export=True,
                mechanism=Mechanism.EXEMPT,
                satisfied=True,
                document=None,
                counters_after=counters_after,
                reasons=tuple(reasons),
            )
        reasons.append(
            ExportReason(
                RULE_FTZ_NEGATIVE_LIST,
                Mechanism.EXEMPT,
                f"{'category' if len(hits) == 1 else 'categories'} {', '.join(hits)} "
                f"{'is' if len(hits) == 1 else 'are'} on the exporter's free-trade-zone "
                "negative list: the rules apply",
            )
        )

    if export.grade is Grade.IMPORTANT:
        reasons.append(
            ExportReason(
                RULE_IMPORTANT_PERMIT,
                Mechanism.ASSESSMENT,
                f"dataset {export.dataset_id} is important data: it needs a registry-issued "
                f"export permit for {export.buyer_country}",
            )
        )
    reasons.extend(_catalog_reasons(export, rules))
    if export.individuals or export.sensitive:
        reasons.extend(_personal_info_reasons(counters_after))
    else:
        reasons.append(
            ExportReason(
                RULE_PI_EXEMPT,
                Mechanism.EXEMPT,
                "this export carries no personal information",
            )
        )

    mechanism = max((r.requires for r in reasons), key=lambda m: m.strictness)
    document: ExportDocument | None = None
    satisfied = mechanism is Mechanism.EXEMPT
    if not satisfied:
        document, problems = _find_document(mechanism, export, held_documents)
        satisfied = document is not None
        wanted = (
            "filed standard contract or export permit"
            if mechanism is Mechanism.STANDARD_CONTRACT
            else "export permit"
        )
        if document is not None:
            kind = "export permit" if isinstance(document, ExportPermit) else "standard contract"
            detail = f"satisfied by {kind} {document.document_id}"
        else:
            detail = f"not satisfied: no valid {wanted} covers this export"
            if problems:
                detail += f" ({'; '.join(problems)})"
        reasons.append(ExportReason(RULE_DOCUMENTS, mechanism, detail))

    return ExportDecision(
        is_export=True,
        mechanism=mechanism,
        satisfied=satisfied,
        document=document,
        counters_after=counters_after,
        reasons=tuple(reasons),
    )


def check_export(
    export: ExportRequest,
    counters_before: YearlyCount,
    *,
    cross_border: Mapping[str, CrossBorderRule],
    documents: Iterable[ExportDocument] = (),
    negative_list: Iterable[str] | None = None,
) -> ExportDecision:
    """:func:`decide_export`, raising FailedPrecondition (naming the rules) when refused."""
    decision = decide_export(
        export,
        counters_before,
        cross_border=cross_border,
        documents=documents,
        negative_list=negative_list,
    )
    if not decision.satisfied:
        because = "; ".join(str(r) for r in decision.reasons if r.rule != RULE_EXPORT)
        raise FailedPrecondition(
            f"export of {export.dataset_id} to {export.buyer_country} refused: {because}"
        )
    return decision
