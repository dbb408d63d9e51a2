"""The supervision catalog and dataset grading, computed the same way by registry and nodes.

* :class:`Catalog`: an immutable, numbered version of the unified
  hierarchical supervision catalog, a tree of :class:`CatalogEntry` under
  dotted codes (``health``, ``health.medical``, ``health.medical.inpatient``).
  Construction checks the tree's rules: every non-root entry's parent
  exists, a child's minimum grade is never lower than its parent's, and a
  provincial extension sits under a national entry or one of its own
  province's, and loosens nothing (tradability, cross-border rule) of its
  parent. :meth:`Catalog.with_extension` admits a province's proposal as the
  next version; :meth:`Catalog.changes_since` says what a sync must apply.
* :class:`GradingRules`: versioned grading rules as data
  (:class:`GradingRule`, serializable with ``to_dict``/``from_dict``).
* :func:`derive_grade`: a dataset's grade is the highest of its categories'
  minimum grades and of every rule that fires; the :class:`GradeDecision`
  lists every reason, so a node predicts and explains exactly what the
  registry decides. :func:`check_registrable` adds the registry's refusals
  (core data, non-tradable categories).

Everything here is pure and immutable; errors are :mod:`provex.errors`
classes whose message names the entry, field or rule concerned. Unknown
category codes raise :class:`~provex.errors.NotFound`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from types import MappingProxyType
from typing import TypeVar

from provex.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from provex.ids import REGIONS

__all__ = [
    "DEFAULT_RULES",
    "NATIONAL",
    "RULE_NO_CORE_DATA",
    "RULE_TRADABLE_CATEGORIES_ONLY",
    "Catalog",
    "CatalogChanges",
    "CatalogEntry",
    "CrossBorderRule",
    "DatasetProfile",
    "Grade",
    "GradeDecision",
    "GradeReason",
    "GradingRule",
    "GradingRules",
    "PersonalInfoClass",
    "ReasonKind",
    "RuleKind",
    "check_registrable",
    "derive_grade",
]

NATIONAL = "national"
"""The owner of every entry of the national catalog (provincial extensions name their province)."""

RULE_NO_CORE_DATA = "no-core-data"
"""Name of the registry's rule that core data is never registered or traded."""

RULE_TRADABLE_CATEGORIES_ONLY = "tradable-categories-only"
"""Name of the registry's rule that only datasets in tradable categories are registered."""


# ---------------------------------------------------------------------------
# Enumerations
# ---------------------------------------------------------------------------


class Grade(IntEnum):
    """Data grade, ordered: GENERAL < IMPORTANT < CORE."""

    GENERAL = 1
    IMPORTANT = 2
    CORE = 3

    @property
    def label(self) -> str:
        """The serialized form: ``general``, ``important`` or ``core``."""
        return self.name.lower()

    @classmethod
    def parse(cls, text: object) -> Grade:
        """A grade from its serialized name (case-insensitive); InvalidArgument otherwise."""
        if isinstance(text, str) and text.upper() in cls.__members__:
            return cls[text.upper()]
        names = ", ".join(g.label for g in cls)
        raise InvalidArgument(f"grade must be one of {names}, got {text!r}")


class PersonalInfoClass(StrEnum):
    """Whether a category holds personal information, and whether sensitive."""

    NONE = "none"
    PERSONAL = "personal"
    SENSITIVE = "sensitive"


class CrossBorderRule(StrEnum):
    """What a category's data needs to leave the mainland."""

    ALLOWED = "allowed"
    ASSESSMENT_REQUIRED = "assessment_required"
    FORBIDDEN = "forbidden"

    @property
    def strictness(self) -> int:
        """0 for ALLOWED, 1 for ASSESSMENT_REQUIRED, 2 for FORBIDDEN."""
        return list(CrossBorderRule).index(self)


class RuleKind(StrEnum):
    """The condition a :class:`GradingRule` tests."""

    PERSONAL_INFO_INDIVIDUALS = "personal_info_individuals"
    """Fires when the dataset holds personal information of ``threshold`` or more individuals."""
    SENSITIVE_INDIVIDUALS = "sensitive_individuals"
    """Fires when it holds sensitive personal information of ``threshold`` or more individuals."""
    DERIVED_FROM_SOURCES = "derived_from_sources"
    """Fires for a derived dataset; imposes the highest grade among its sources."""


_E = TypeVar("_E", bound=StrEnum)


class ReasonKind(StrEnum):
    """What a :class:`GradeReason` comes from."""

    CATEGORY = "category"
    RULE = "rule"


def _parse_enum(enum: type[_E], value: object, what: str) -> _E:
    if isinstance(value, enum):
        return value
    if isinstance(value, str):
        try:
            return enum(value)
        except ValueError:
            pass
    choices = ", ".join(m.value for m in enum)
    raise InvalidArgument(f"{what} must be one of {choices}, got {value!r}")


# ---------------------------------------------------------------------------
# Catalog entries
# ---------------------------------------------------------------------------

_CATEGORY_CODE = re.compile(r"[a-z0-9_]+(?:\.[a-z0-9_]+)*")


def _check_category_code(code: object, what: str = "category code") -> str:
    if not isinstance(code, str) or not _CATEGORY_CODE.fullmatch(code):
        raise InvalidArgument(
            f"{what} must be dotted lower-case segments of a-z, 0-9 and _ "
            f"(e.g. health.medical.inpatient), got {code!r}"
        )
    return code


def _is_mainland_province(code: object) -> bool:
    found = REGIONS.get(code) if isinstance(code, str) else None
    return found is not None and found.is_province and found.mainland


def _check_province(code: object, what: str) -> str:
    if not isinstance(code, str) or not _is_mainland_province(code):
        raise InvalidArgument(
            f"{what} must be a mainland province's 6-digit region code (e.g. 440000), got {code!r}"
        )
    return code


def _check_text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument(f"{what} must be a non-empty string, got {value!r}")
    return value


@dataclass(frozen=True)
class CatalogEntry:
    """One category of the catalog.

    ``owner`` is :data:`NATIONAL` or, for a provincial extension, the
    province's region code (``440000``).
    """

    code: str
    title_zh: str
    title_en: str
    min_grade: Grade
    personal_info: PersonalInfoClass
    tradable: bool
    cross_border: CrossBorderRule
    owner: str = NATIONAL

    def __post_init__(self) -> None:
        _check_category_code(self.code, "catalog entry code")
        _check_text(self.title_zh, f"catalog entry {self.code}: title_zh")
        _check_text(self.title_en, f"catalog entry {self.code}: title_en")
        if not isinstance(self.min_grade, Grade):
            raise InvalidArgument(
                f"catalog entry {self.code}: min_grade must be a Grade, got {self.min_grade!r}"
            )
        if not isinstance(self.personal_info, PersonalInfoClass):
            raise InvalidArgument(
                f"catalog entry {self.code}: personal_info must be a PersonalInfoClass, "
                f"got {self.personal_info!r}"
            )
        if not isinstance(self.tradable, bool):
            raise InvalidArgument(
                f"catalog entry {self.code}: tradable must be a bool, got {self.tradable!r}"
            )
        if not isinstance(self.cross_border, CrossBorderRule):
            raise InvalidArgument(
                f"catalog entry {self.code}: cross_border must be a CrossBorderRule, "
                f"got {self.cross_border!r}"
            )
        if self.owner != NATIONAL and not _is_mainland_province(self.owner):
            raise InvalidArgument(
                f"catalog entry {self.code}: owner must be {NATIONAL!r} or a mainland "
                f"province's 6-digit region code (e.g. 440000), got {self.owner!r}"
            )

    @property
    def parent_code(self) -> str | None:
        """The code one level up (``health.medical`` for ``health.medical.inpatient``), or None."""
        head, dot, _ = self.code.rpartition(".")
        return head if dot else None

    @property
    def is_national(self) -> bool:
        """True for an entry of the national catalog, False for a provincial extension."""
        return self.owner == NATIONAL

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict (enums as their string values)."""
        return {
            "code": self.code,
            "title_zh": self.title_zh,
            "title_en": self.title_en,
            "min_grade": self.min_grade.label,
            "personal_info": self.personal_info.value,
            "tradable": self.tradable,
            "cross_border": self.cross_border.value,
            "owner": self.owner,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> CatalogEntry:
        """The inverse of :meth:`to_dict`; InvalidArgument for missing, unknown or bad fields."""
        _check_keys(data, _ENTRY_KEYS, "catalog entry")
        code = _check_category_code(data["code"], "catalog entry code")
        return cls(
            code=code,
            title_zh=_check_text(data["title_zh"], f"catalog entry {code}: title_zh"),
            title_en=_check_text(data["title_en"], f"catalog entry {code}: title_en"),
            min_grade=Grade.parse(data["min_grade"]),
            personal_info=_parse_enum(
                PersonalInfoClass, data["personal_info"], f"catalog entry {code}: personal_info"
            ),
            tradable=_bool(data["tradable"], f"catalog entry {code}: tradable"),
            cross_border=_parse_enum(
                CrossBorderRule, data["cross_border"], f"catalog entry {code}: cross_border"
            ),
            owner=_check_text(data["owner"], f"catalog entry {code}: owner"),
        )


_ENTRY_KEYS = frozenset(
    (
        "code",
        "title_zh",
        "title_en",
        "min_grade",
        "personal_info",
        "tradable",
        "cross_border",
        "owner",
    )
)


def _check_keys(
    data: object, required: frozenset[str], what: str, optional: frozenset[str] = frozenset()
) -> None:
    if not isinstance(data, Mapping):
        raise InvalidArgument(f"{what} must be a mapping, got {type(data).__name__}")
    missing = sorted(required - data.keys())
    if missing:
        raise InvalidArgument(f"{what}: missing field(s) {', '.join(missing)}")
    unknown = sorted(str(k) for k in data.keys() - required - optional)
    if unknown:
        raise InvalidArgument(f"{what}: unknown field(s) {', '.join(unknown)}")


def _bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgument(f"{what} must be true or false, got {value!r}")
    return value


def _int(value: object, what: str, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InvalidArgument(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


# ---------------------------------------------------------------------------
# The catalog
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CatalogChanges:
    """What changed between two catalog versions, as sorted tuples of codes."""

    from_version: int
    to_version: int
    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]

    @property
    def is_empty(self) -> bool:
        """True if the two versions hold the same entries."""
        return not (self.added or self.changed or self.removed)


@dataclass(frozen=True)
class Catalog:
    """One immutable, numbered version of the supervision catalog.

    ``entries`` maps each code to its entry (read-only, sorted by code).
    Construction (or :meth:`from_entries`) checks every rule of the tree and
    raises FailedPrecondition naming the entries that break one.
    """

    version: int
    entries: Mapping[str, CatalogEntry]
    _children: Mapping[str, tuple[str, ...]] = field(
        init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        _int(self.version, "catalog version", 1)
        if not isinstance(self.entries, Mapping):
            raise InvalidArgument(
                f"catalog entries must be a mapping, got {type(self.entries).__name__}"
            )
        for code, entry in self.entries.items():
            if not isinstance(entry, CatalogEntry) or entry.code != code:
                raise InvalidArgument(f"catalog entries: {code!r} does not map to its own entry")
        entries = MappingProxyType(dict(sorted(self.entries.items())))
        children: dict[str, list[str]] = {code: [] for code in entries}
        for entry in entries.values():
            parent_code = entry.parent_code
            if parent_code is None:
                if not entry.is_national:
                    raise FailedPrecondition(
                        f"catalog entry {entry.code} (owner {entry.owner}): a provincial "
                        "extension must sit under an existing entry, not at the root"
                    )
                continue
            parent = entries.get(parent_code)
            if parent is None:
                raise FailedPrecondition(
                    f"catalog entry {entry.code}: its parent {parent_code} is not in the catalog"
                )
            _check_against_parent(entry, parent)
            children[parent_code].append(entry.code)
        object.__setattr__(self, "entries", entries)
        object.__setattr__(
            self, "_children", MappingProxyType({k: tuple(v) for k, v in children.items()})
        )

    def __hash__(self) -> int:
        return hash((self.version, tuple(self.entries.values())))

    @classmethod
    def from_entries(cls, version: int, entries: Iterable[CatalogEntry]) -> Catalog:
        """A catalog version from its entries; InvalidArgument if a code appears twice."""
        table: dict[str, CatalogEntry] = {}
        for entry in entries:
            if not isinstance(entry, CatalogEntry):
                raise InvalidArgument(f"catalog entries must be CatalogEntry, got {entry!r}")
            if entry.code in table:
                raise InvalidArgument(f"catalog entry {entry.code} appears twice")
            table[entry.code] = entry
        return cls(version, table)

    def __contains__(self, code: object) -> bool:
        return code in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[CatalogEntry]:
        """The entries in code order (parents before their children)."""
        return iter(self.entries.values())

    def get(self, code: str) -> CatalogEntry:
        """The entry with this code; NotFound if this version has none."""
        entry = self.entries.get(code)
        if entry is None:
            _check_category_code(code)
            raise NotFound(f"category {code} is not in catalog version {self.version}")
        return entry

    def roots(self) -> tuple[CatalogEntry, ...]:
        """The top-level entries (sectors), in code order."""
        return tuple(e for e in self.entries.values() if e.parent_code is None)

    def children(self, code: str) -> tuple[CatalogEntry, ...]:
        """The direct children of an entry, in code order; NotFound for an unknown code."""
        self.get(code)
        return tuple(self.entries[c] for c in self._children[code])

    def ancestors(self, code: str) -> tuple[CatalogEntry, ...]:
        """The entries above ``code``, nearest first (parent, grandparent, ..., root)."""
        found: list[CatalogEntry] = []
        parent_code = self.get(code).parent_code
        while parent_code is not None:
            parent = self.entries[parent_code]
            found.append(parent)
            parent_code = parent.parent_code
        return tuple(found)

    def with_extension(self, entry: CatalogEntry, province: str) -> Catalog:
        """The next version, with a province's extension admitted.

        The province may only add entries it owns (PermissionDenied), under
        an existing national entry or one of its own, keeping every rule of
        the tree (FailedPrecondition); an existing code is AlreadyExists.
        """
        province = _check_province(province, "extending province")
        if not isinstance(entry, CatalogEntry):
            raise InvalidArgument(f"extension must be a CatalogEntry, got {entry!r}")
        if entry.owner != province:
            raise PermissionDenied(
                f"province {province} may only add entries it owns; "
                f"{entry.code} is owned by {entry.owner}"
            )
        if entry.code in self.entries:
            raise AlreadyExists(
                f"category {entry.code} is already in catalog version {self.version}"
            )
        return Catalog(self.version + 1, {**self.entries, entry.code: entry})

    def changes_since(self, older: Catalog) -> CatalogChanges:
        """What a holder of ``older`` must apply to reach this version."""
        if older.version > self.version:
            raise InvalidArgument(
                f"catalog version {older.version} is newer than version {self.version}"
            )
        return CatalogChanges(
            from_version=older.version,
            to_version=self.version,
            added=tuple(c for c in self.entries if c not in older.entries),
            changed=tuple(
                c for c, e in self.entries.items() if c in older.entries and older.entries[c] != e
            ),
            removed=tuple(c for c in older.entries if c not in self.entries),
        )

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict: the version and the entries in code order."""
        return {"version": self.version, "entries": [e.to_dict() for e in self.entries.values()]}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Catalog:
        """The inverse of :meth:`to_dict`, with every check of construction."""
        _check_keys(data, frozenset(("version", "entries")), "catalog")
        raw_entries = data["entries"]
        if not isinstance(raw_entries, list):
            raise InvalidArgument("catalog: entries must be a list")
        return cls.from_entries(
            _int(data["version"], "catalog version", 1),
            (CatalogEntry.from_dict(_mapping(e, "catalog entry")) for e in raw_entries),
        )


def _mapping(value: object, what: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"{what} must be a mapping, got {type(value).__name__}")
    return value


def _check_against_parent(entry: CatalogEntry, parent: CatalogEntry) -> None:
    if entry.min_grade < parent.min_grade:
        raise FailedPrecondition(
            f"catalog entry {entry.code} has minimum grade {entry.min_grade.name}, lower than "
            f"{parent.min_grade.name} of its parent {parent.code}: a child's minimum grade is "
            "never lower than its parent's"
        )
    if entry.is_national:
        return
    if not parent.is_national and parent.owner != entry.owner:
        raise FailedPrecondition(
            f"catalog entry {entry.code} of province {entry.owner} may not extend "
            f"{parent.code}, an extension of province {parent.owner}"
        )
    if entry.tradable and not parent.tradable:
        raise FailedPrecondition(
            f"catalog entry {entry.code}: a provincial extension may not make tradable what "
            f"its parent {parent.code} keeps off the market"
        )
    if entry.cross_border.strictness < parent.cross_border.strictness:
        raise FailedPrecondition(
            f"catalog entry {entry.code}: cross-border rule {entry.cross_border.value} is "
            f"looser than {parent.cross_border.value} of its parent {parent.code}"
        )


# ---------------------------------------------------------------------------
# Grading rules
# ---------------------------------------------------------------------------

_RULE_ID = re.compile(r"[a-z][a-z0-9_.-]*")
_COUNT_KINDS = (RuleKind.PERSONAL_INFO_INDIVIDUALS, RuleKind.SENSITIVE_INDIVIDUALS)


@dataclass(frozen=True)
class GradingRule:
    """A grading rule as data: when its condition holds, the dataset grades at least ``grade``.

    Count rules (PERSONAL_INFO_INDIVIDUALS, SENSITIVE_INDIVIDUALS) fire when
    the count reaches ``threshold`` (>= 1) and need a ``grade``. A
    DERIVED_FROM_SOURCES rule has threshold 0 and no grade: it fires for
    any dataset with sources and imposes the highest source grade.
    """

    id: str
    description: str
    kind: RuleKind
    threshold: int = 0
    grade: Grade | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not _RULE_ID.fullmatch(self.id):
            raise InvalidArgument(
                f"grading rule id must be lower-case a-z, 0-9, '_', '.', '-' starting with a "
                f"letter, got {self.id!r}"
            )
        _check_text(self.description, f"grading rule {self.id}: description")
        if not isinstance(self.kind, RuleKind):
            raise InvalidArgument(f"grading rule {self.id}: kind must be a RuleKind")
        if self.kind in _COUNT_KINDS:
            _int(self.threshold, f"grading rule {self.id}: threshold", 1)
            if not isinstance(self.grade, Grade):
                raise InvalidArgument(f"grading rule {self.id}: a {self.kind} rule needs a grade")
        elif self.threshold != 0 or self.grade is not None:
            raise InvalidArgument(
                f"grading rule {self.id}: a {self.kind} rule takes no threshold and no "
                "grade (it imposes the highest source grade)"
            )

    def evaluate(self, profile: DatasetProfile) -> GradeReason | None:
        """The reason this rule gives for ``profile``, or None if it does not fire."""
        if self.kind is RuleKind.DERIVED_FROM_SOURCES:
            if not profile.source_grades:
                return None
            highest = max(profile.source_grades)
            detail = (
                f"derived from {len(profile.source_grades)} source dataset(s), "
                f"the highest graded {highest.name}"
            )
            return GradeReason(ReasonKind.RULE, self.id, highest, detail)
        count = (
            profile.individuals
            if self.kind is RuleKind.PERSONAL_INFO_INDIVIDUALS
            else profile.sensitive_individuals
        )
        if count < self.threshold or self.grade is None:
            return None
        noun = "personal" if self.kind is RuleKind.PERSONAL_INFO_INDIVIDUALS else "sensitive"
        detail = f"{noun} information of {count:,} individuals, threshold {self.threshold:,}"
        return GradeReason(ReasonKind.RULE, self.id, self.grade, detail)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict; ``grade`` is null for a DERIVED_FROM_SOURCES rule."""
        return {
            "id": self.id,
            "description": self.description,
            "kind": self.kind.value,
            "threshold": self.threshold,
            "grade": None if self.grade is None else self.grade.label,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> GradingRule:
        """The inverse of :meth:`to_dict`; InvalidArgument for missing, unknown or bad fields."""
        _check_keys(data, frozenset(("id", "description", "kind", "threshold", "grade")), "rule")
        raw_grade = data["grade"]
        threshold = data["threshold"]
        return cls(
            id=_check_text(data["id"], "grading rule id"),
            description=_check_text(data["description"], "grading rule description"),
            kind=_parse_enum(RuleKind, data["kind"], "grading rule kind"),
            threshold=_int(threshold, "grading rule threshold", 0),
            grade=None if raw_grade is None else Grade.parse(raw_grade),
        )


@dataclass(frozen=True)
class GradingRules:
    """A numbered version of the grading rules, published with the catalog."""

    version: int
    rules: tuple[GradingRule, ...]

    def __post_init__(self) -> None:
        _int(self.version, "grading rules version", 1)
        rules = tuple(self.rules)
        seen: set[str] = set()
        for rule in rules:
            if not isinstance(rule, GradingRule):
                raise InvalidArgument(f"grading rules must be GradingRule, got {rule!r}")
            if rule.id in seen:
                raise InvalidArgument(f"grading rule {rule.id} appears twice")
            seen.add(rule.id)
        object.__setattr__(self, "rules", rules)

    def get(self, rule_id: str) -> GradingRule:
        """The rule with this id; NotFound otherwise."""
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise NotFound(f"grading rule {rule_id} is not in rules version {self.version}")

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict: the version and the rules in order."""
        return {"version": self.version, "rules": [r.to_dict() for r in self.rules]}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> GradingRules:
        """The inverse of :meth:`to_dict`."""
        _check_keys(data, frozenset(("version", "rules")), "grading rules")
        raw_rules = data["rules"]
        if not isinstance(raw_rules, list):
            raise InvalidArgument("grading rules: rules must be a list")
        return cls(
            _int(data["version"], "grading rules version", 1),
            tuple(GradingRule.from_dict(_mapping(r, "grading rule")) for r in raw_rules),
        )


DEFAULT_RULES = GradingRules(
    version=1,
    rules=(
        GradingRule(
            id="pi-10m-individuals",
            description="personal information of 10,000,000 or more individuals is important data",
            kind=RuleKind.PERSONAL_INFO_INDIVIDUALS,
            threshold=10_000_000,
            grade=Grade.IMPORTANT,
        ),
        GradingRule(
            id="sensitive-pi-1m-individuals",
            description=(
                "sensitive personal information of 1,000,000 or more individuals is important data"
            ),
            kind=RuleKind.SENSITIVE_INDIVIDUALS,
            threshold=1_000_000,
            grade=Grade.IMPORTANT,
        ),
        GradingRule(
            id="derived-at-least-sources",
            description="a derived dataset grades at least the highest of its sources",
            kind=RuleKind.DERIVED_FROM_SOURCES,
        ),
    ),
)
"""The national rules of DESIGN.md section 3, as a starting version (immutable)."""


# ---------------------------------------------------------------------------
# Grade derivation
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetProfile:
    """What grading needs to know of a dataset.

    ``categories`` are catalog codes (at least one, no repeats);
    ``individuals`` and ``sensitive_individuals`` count the people whose
    (sensitive) personal information it holds; ``source_grades`` are the
    grades of the datasets it derives from. Lists are accepted and stored as
    tuples; plain ints are accepted as grades.
    """

    categories: tuple[str, ...]
    individuals: int = 0
    sensitive_individuals: int = 0
    source_grades: tuple[Grade, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.categories, str) or not isinstance(self.categories, Iterable):
            raise InvalidArgument(
                f"dataset categories must be a sequence of codes, got {self.categories!r}"
            )
        categories = tuple(self.categories)
        if not categories:
            raise InvalidArgument("dataset categories: at least one category is required")
        for code in categories:
            _check_category_code(code, "dataset category")
        repeated = sorted({c for c in categories if categories.count(c) > 1})
        if repeated:
            raise InvalidArgument(f"dataset categories: {', '.join(repeated)} listed twice")
        _int(self.individuals, "dataset individuals", 0)
        _int(self.sensitive_individuals, "dataset sensitive_individuals", 0)
        if isinstance(self.source_grades, str) or not isinstance(self.source_grades, Iterable):
            raise InvalidArgument(
                f"dataset source_grades must be a sequence of grades, got {self.source_grades!r}"
            )
        grades: list[Grade] = []
        for grade in self.source_grades:
            if isinstance(grade, bool) or not isinstance(grade, int):
                raise InvalidArgument(f"dataset source_grades: {grade!r} is not a grade")
            try:
                grades.append(Grade(grade))
            except ValueError:
                raise InvalidArgument(f"dataset source_grades: {grade!r} is not a grade") from None
        object.__setattr__(self, "categories", categories)
        object.__setattr__(self, "source_grades", tuple(grades))


@dataclass(frozen=True)
class GradeReason:
    """One contribution to a grade: a category's minimum or a rule that fired.

    ``subject`` is the category code or the rule id.
    """

    kind: ReasonKind
    subject: str
    grade: Grade
    detail: str

    def __str__(self) -> str:
        return f"{self.kind.value} {self.subject}: {self.grade.name} ({self.detail})"


@dataclass(frozen=True)
class GradeDecision:
    """A dataset's grade, every reason behind it, and the versions it was decided under."""

    grade: Grade
    reasons: tuple[GradeReason, ...]
    catalog_version: int
    rules_version: int

    @property
    def decisive_reasons(self) -> tuple[GradeReason, ...]:
        """The reasons that impose the final grade."""
        return tuple(r for r in self.reasons if r.grade == self.grade)

    def explain(self) -> str:
        """A human-readable account, one reason a line."""
        lines = [
            f"grade {self.grade.name} (catalog v{self.catalog_version}, "
            f"rules v{self.rules_version})"
        ]
        lines.extend(f"  {'*' if r.grade == self.grade else '-'} {r}" for r in self.reasons)
        return "\n".join(lines)


def derive_grade(profile: DatasetProfile, catalog: Catalog, rules: GradingRules) -> GradeDecision:
    """The grade of a dataset: the highest of its categories' minimums and of every firing rule.

    Reasons list every category (in the profile's order) and then every rule
    that fired (in the rules' order). An unknown category raises NotFound.
    """
    reasons: list[GradeReason] = []
    for code in profile.categories:
        entry = catalog.get(code)
        reasons.append(
            GradeReason(
                ReasonKind.CATEGORY,
                code,
                entry.min_grade,
                f"minimum grade of category {entry.title_en} / {entry.title_zh}",
            )
        )
    for rule in rules.rules:
        reason = rule.evaluate(profile)
        if reason is not None:
            reasons.append(reason)
    return GradeDecision(
        grade=max(r.grade for r in reasons),
        reasons=tuple(reasons),
        catalog_version=catalog.version,
        rules_version=rules.version,
    )


def check_registrable(
    profile: DatasetProfile, catalog: Catalog, rules: GradingRules
) -> GradeDecision:
    """The grade decision for a dataset the registry will register, else FailedPrecondition.

    Refuses (naming the rule) a dataset in a non-tradable category
    (:data:`RULE_TRADABLE_CATEGORIES_ONLY`) and one that grades CORE
    (:data:`RULE_NO_CORE_DATA`). Unknown categories raise NotFound.
    """
    decision = derive_grade(profile, catalog, rules)
    for code in profile.categories:
        entry = catalog.get(code)
        if not entry.tradable:
            raise FailedPrecondition(
                f"rule {RULE_TRADABLE_CATEGORIES_ONLY}: category {code} ({entry.title_en}) is "
                "not tradable, so the dataset cannot be registered"
            )
    if decision.grade is Grade.CORE:
        because = "; ".join(str(r) for r in decision.decisive_reasons)
        raise FailedPrecondition(
            f"rule {RULE_NO_CORE_DATA}: the dataset grades CORE ({because}); "
            "core data is never registered or traded"
        )
    return decision
