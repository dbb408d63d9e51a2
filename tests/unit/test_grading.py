"""Tests of provex.grading: the catalog tree, extensions, rules as data, grade derivation."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provex.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ProvexError,
)
from provex.grading import (
    DEFAULT_RULES,
    NATIONAL,
    RULE_NO_CORE_DATA,
    RULE_TRADABLE_CATEGORIES_ONLY,
    Catalog,
    CatalogEntry,
    CrossBorderRule,
    DatasetProfile,
    Grade,
    GradingRule,
    GradingRules,
    PersonalInfoClass,
    ReasonKind,
    RuleKind,
    check_registrable,
    derive_grade,
)

GENERAL, IMPORTANT, CORE = Grade.GENERAL, Grade.IMPORTANT, Grade.CORE
NO_PI, PI, SPI = PersonalInfoClass.NONE, PersonalInfoClass.PERSONAL, PersonalInfoClass.SENSITIVE
OK, ASSESS, NEVER = (
    CrossBorderRule.ALLOWED,
    CrossBorderRule.ASSESSMENT_REQUIRED,
    CrossBorderRule.FORBIDDEN,
)
GD, SH = "440000", "310000"


def entry(
    code: str,
    grade: Grade = GENERAL,
    personal_info: PersonalInfoClass = NO_PI,
    *,
    tradable: bool = True,
    cross_border: CrossBorderRule = OK,
    owner: str = NATIONAL,
) -> CatalogEntry:
    """A catalog entry with titles made up from its code."""
    return CatalogEntry(
        code=code,
        title_zh=f"类目 {code}",
        title_en=code.rsplit(".", 1)[-1].replace("_", " ").title(),
        min_grade=grade,
        personal_info=personal_info,
        tradable=tradable,
        cross_border=cross_border,
        owner=owner,
    )


ENTRIES = (
    entry("health"),
    entry("health.medical", IMPORTANT, SPI, cross_border=ASSESS),
    entry("health.medical.inpatient", IMPORTANT, SPI, cross_border=ASSESS),
    entry("health.genetic", CORE, SPI, tradable=False, cross_border=NEVER),
    entry("finance"),
    entry("finance.credit", IMPORTANT, PI, cross_border=ASSESS),
    entry("transport"),
    entry("transport.traffic_flow"),
    entry("geo", IMPORTANT, cross_border=ASSESS),
    entry("geo.survey_maps", CORE, tradable=False, cross_border=NEVER),
    entry("public_admin"),
    entry("public_admin.judgments", tradable=False),
)
CATALOG = Catalog.from_entries(1, ENTRIES)


# --------------------------------------------------------------------------
# Enumerations
# --------------------------------------------------------------------------


def test_grades_are_ordered() -> None:
    assert Grade.GENERAL < Grade.IMPORTANT < Grade.CORE
    assert max(Grade.GENERAL, Grade.CORE, Grade.IMPORTANT) is Grade.CORE
    assert [g.label for g in Grade] == ["general", "important", "core"]


GRADE_NAMES = {
    "lower": ("important", IMPORTANT),
    "upper": ("CORE", CORE),
    "mixed": ("General", GENERAL),
}


@pytest.mark.parametrize("text, grade", GRADE_NAMES.values(), ids=GRADE_NAMES.keys())
def test_grade_parse(text: str, grade: Grade) -> None:
    assert Grade.parse(text) is grade


@pytest.mark.parametrize("text", ["", "secret", "2", None], ids=["empty", "word", "digit", "none"])
def test_grade_parse_refuses(text: object) -> None:
    with pytest.raises(InvalidArgument, match="grade must be one of general, important, core"):
        Grade.parse(text)


def test_cross_border_strictness() -> None:
    assert [r.strictness for r in (OK, ASSESS, NEVER)] == [0, 1, 2]


# --------------------------------------------------------------------------
# Catalog entries
# --------------------------------------------------------------------------

PARENT_CODES = {
    "root": ("health", None),
    "second level": ("health.medical", "health"),
    "third level": ("health.medical.inpatient", "health.medical"),
    "digits and underscore": ("geo.maps_1_10000", "geo"),
}


@pytest.mark.parametrize("code, parent", PARENT_CODES.values(), ids=PARENT_CODES.keys())
def test_parent_code(code: str, parent: str | None) -> None:
    assert entry(code).parent_code == parent


ENTRY_BAD = {
    "upper-case code": ({"code": "Health"}, "dotted lower-case"),
    "empty code": ({"code": ""}, "dotted lower-case"),
    "trailing dot": ({"code": "health."}, "dotted lower-case"),
    "empty segment": ({"code": "health..medical"}, "dotted lower-case"),
    "hyphen": ({"code": "health-care"}, "dotted lower-case"),
    "space": ({"code": "health care"}, "dotted lower-case"),
    "CJK code": ({"code": "健康"}, "dotted lower-case"),
    "empty title_zh": ({"title_zh": ""}, "title_zh"),
    "blank title_en": ({"title_en": "  "}, "title_en"),
    "grade as int": ({"min_grade": 2}, "min_grade"),
    "personal info as str": ({"personal_info": "none"}, "personal_info"),
    "tradable as str": ({"tradable": "yes"}, "tradable"),
    "tradable as int": ({"tradable": 1}, "tradable"),
    "cross border as str": ({"cross_border": "allowed"}, "cross_border"),
    "owner a city": ({"owner": "440100"}, "owner"),
    "owner Hong Kong": ({"owner": "810000"}, "owner"),
    "owner a node id": ({"owner": "gd-gzde"}, "owner"),
    "owner upper-case national": ({"owner": "NATIONAL"}, "owner"),
}


@pytest.mark.parametrize("changes, message", ENTRY_BAD.values(), ids=ENTRY_BAD.keys())
def test_catalog_entry_refuses(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        dataclasses.replace(entry("health"), **changes)


def test_catalog_entry_dict_round_trip() -> None:
    original = entry("health.medical", IMPORTANT, SPI, cross_border=ASSESS, owner=NATIONAL)
    data = original.to_dict()
    assert data == {
        "code": "health.medical",
        "title_zh": "类目 health.medical",
        "title_en": "Medical",
        "min_grade": "important",
        "personal_info": "sensitive",
        "tradable": True,
        "cross_border": "assessment_required",
        "owner": "national",
    }
    assert CatalogEntry.from_dict(data) == original


ENTRY_DICT_BAD = {
    "missing owner": ({"owner": None}, "missing field(s) owner"),
    "unknown field": ({"colour": "red"}, "unknown field(s) colour"),
    "bad grade": ({"min_grade": "secret"}, "grade must be one of"),
    "bad personal info": ({"personal_info": "some"}, "personal_info must be one of"),
    "bad cross border": ({"cross_border": "maybe"}, "cross_border must be one of"),
    "tradable as string": ({"tradable": "true"}, "tradable must be true or false"),
}


@pytest.mark.parametrize("changes, message", ENTRY_DICT_BAD.values(), ids=ENTRY_DICT_BAD.keys())
def test_catalog_entry_from_dict_refuses(changes: dict[str, object], message: str) -> None:
    data = entry("health").to_dict()
    for key, value in changes.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        CatalogEntry.from_dict(data)


# --------------------------------------------------------------------------
# The catalog tree
# --------------------------------------------------------------------------


def test_catalog_navigation() -> None:
    assert CATALOG.version == 1
    assert len(CATALOG) == len(ENTRIES)
    assert "health.medical" in CATALOG
    assert "health.dental" not in CATALOG
    assert [e.code for e in CATALOG.roots()] == [
        "finance",
        "geo",
        "health",
        "public_admin",
        "transport",
    ]
    assert [e.code for e in CATALOG.children("health")] == ["health.genetic", "health.medical"]
    assert CATALOG.children("health.medical.inpatient") == ()
    assert [e.code for e in CATALOG.ancestors("health.medical.inpatient")] == [
        "health.medical",
        "health",
    ]
    assert CATALOG.ancestors("health") == ()
    codes = [e.code for e in CATALOG]
    assert codes == sorted(codes)


def test_catalog_entries_are_read_only() -> None:
    with pytest.raises(TypeError):
        CATALOG.entries["x"] = entry("x")  # type: ignore[index]


def test_catalog_does_not_share_the_callers_dict() -> None:
    table = {e.code: e for e in ENTRIES}
    catalog = Catalog(1, table)
    table["extra"] = entry("extra")
    assert "extra" not in catalog


LOOKUP_BAD = {
    "unknown code": ("health.dental", NotFound),
    "unknown root": ("energy", NotFound),
    "malformed code": ("Health", InvalidArgument),
}


@pytest.mark.parametrize("code, error", LOOKUP_BAD.values(), ids=LOOKUP_BAD.keys())
def test_catalog_lookups_refuse(code: str, error: type[ProvexError]) -> None:
    with pytest.raises(error):
        CATALOG.get(code)
    with pytest.raises(error):
        CATALOG.children(code)
    with pytest.raises(error):
        CATALOG.ancestors(code)


TREE_BAD = {
    "missing parent": (
        [entry("health"), entry("health.medical.inpatient")],
        FailedPrecondition,
        "health.medical.inpatient: its parent health.medical is not in the catalog",
    ),
    "child graded lower than parent": (
        [entry("health", IMPORTANT), entry("health.medical", GENERAL)],
        FailedPrecondition,
        "health.medical has minimum grade GENERAL, lower than IMPORTANT of its parent health",
    ),
    "grandchild lower than child": (
        [entry("geo", GENERAL), entry("geo.maps", CORE), entry("geo.maps.city", IMPORTANT)],
        FailedPrecondition,
        "geo.maps.city has minimum grade IMPORTANT, lower than CORE of its parent geo.maps",
    ),
    "duplicate code": (
        [entry("health"), entry("health", IMPORTANT)],
        InvalidArgument,
        "catalog entry health appears twice",
    ),
    "provincial root": (
        [entry("health"), entry("gd_health", owner=GD)],
        FailedPrecondition,
        "must sit under an existing entry",
    ),
    "province extends another province": (
        [entry("health"), entry("health.sh", owner=SH), entry("health.sh.gd", owner=GD)],
        FailedPrecondition,
        "health.sh.gd of province 440000 may not extend health.sh",
    ),
    "extension tradable under non-tradable": (
        [entry("health", tradable=False), entry("health.gd", owner=GD)],
        FailedPrecondition,
        "may not make tradable what its parent health keeps off the market",
    ),
    "extension looser cross-border": (
        [entry("health", cross_border=NEVER), entry("health.gd", cross_border=ASSESS, owner=GD)],
        FailedPrecondition,
        "cross-border rule assessment_required is looser than forbidden of its parent health",
    ),
    "not a CatalogEntry": ([entry("health"), "finance"], InvalidArgument, "CatalogEntry"),
}


@pytest.mark.parametrize("entries, error, message", TREE_BAD.values(), ids=TREE_BAD.keys())
def test_catalog_refuses(
    entries: list[CatalogEntry], error: type[ProvexError], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        Catalog.from_entries(1, entries)


def test_national_children_may_loosen_tradability_and_cross_border() -> None:
    # Only provincial extensions are held to their parent's tradability and
    # cross-border rule; the national catalog is the registry's to decide.
    catalog = Catalog.from_entries(
        1, [entry("health", tradable=False, cross_border=NEVER), entry("health.stats")]
    )
    assert catalog.get("health.stats").tradable


@pytest.mark.parametrize("version", [0, -1, True, "1"], ids=["zero", "negative", "bool", "str"])
def test_catalog_version_must_be_positive(version: object) -> None:
    with pytest.raises(InvalidArgument, match="catalog version"):
        Catalog.from_entries(version, ENTRIES)  # type: ignore[arg-type]


def test_catalog_mapping_keys_must_match_codes() -> None:
    with pytest.raises(InvalidArgument, match="does not map to its own entry"):
        Catalog(1, {"finance": entry("health")})


def test_empty_catalog_is_allowed() -> None:
    assert len(Catalog.from_entries(1, [])) == 0


def test_catalog_dict_round_trip() -> None:
    data = CATALOG.to_dict()
    assert data["version"] == 1
    assert Catalog.from_dict(data) == CATALOG
    assert hash(Catalog.from_dict(data)) == hash(CATALOG)


CATALOG_DICT_BAD = {
    "missing version": ({"entries": []}, "missing field(s) version"),
    "entries not a list": ({"version": 1, "entries": {}}, "entries must be a list"),
    "entry not a mapping": ({"version": 1, "entries": ["health"]}, "must be a mapping"),
    "extra field": ({"version": 1, "entries": [], "signed": True}, "unknown field(s) signed"),
}


@pytest.mark.parametrize("data, message", CATALOG_DICT_BAD.values(), ids=CATALOG_DICT_BAD.keys())
def test_catalog_from_dict_refuses(data: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        Catalog.from_dict(data)


# --------------------------------------------------------------------------
# Provincial extensions and versions
# --------------------------------------------------------------------------


def test_extension_makes_the_next_version() -> None:
    extension = entry("transport.traffic_flow.gd_ports", owner=GD)
    extended = CATALOG.with_extension(extension, GD)
    assert extended.version == 2
    assert extended.get("transport.traffic_flow.gd_ports") == extension
    assert "transport.traffic_flow.gd_ports" not in CATALOG  # the old version is unchanged
    assert [e.code for e in extended.children("transport.traffic_flow")] == [
        "transport.traffic_flow.gd_ports"
    ]


def test_extension_under_own_extension() -> None:
    first = CATALOG.with_extension(entry("transport.gd", owner=GD), GD)
    second = first.with_extension(entry("transport.gd.ports", owner=GD), GD)
    assert second.version == 3
    assert [e.code for e in second.ancestors("transport.gd.ports")] == ["transport.gd", "transport"]


EXTENSION_BAD = {
    "owned by another province": (
        entry("transport.sh", owner=SH),
        GD,
        PermissionDenied,
        "province 440000 may only add entries it owns",
    ),
    "owned nationally": (
        entry("transport.rail"),
        GD,
        PermissionDenied,
        "transport.rail is owned by national",
    ),
    "code exists": (
        entry("health.medical", IMPORTANT, SPI, cross_border=ASSESS, owner=GD),
        GD,
        AlreadyExists,
        "category health.medical is already in catalog version 1",
    ),
    "parent missing": (
        entry("energy.grid", owner=GD),
        GD,
        FailedPrecondition,
        "its parent energy is not in the catalog",
    ),
    "grade below parent": (
        entry("health.medical.gd_clinics", GENERAL, SPI, cross_border=ASSESS, owner=GD),
        GD,
        FailedPrecondition,
        "health.medical.gd_clinics has minimum grade GENERAL, lower than IMPORTANT of its "
        "parent health.medical",
    ),
    "tradable under non-tradable": (
        entry("public_admin.judgments.gd", owner=GD),
        GD,
        FailedPrecondition,
        "keeps off the market",
    ),
    "looser cross-border": (
        entry("geo.gd_tiles", IMPORTANT, owner=GD),
        GD,
        FailedPrecondition,
        "cross-border rule allowed is looser than assessment_required of its parent geo",
    ),
    "province is a city": (entry("transport.gz"), "440100", InvalidArgument, "extending province"),
    "province outside mainland": (
        entry("transport.hk"),
        "810000",
        InvalidArgument,
        "extending province",
    ),
}


@pytest.mark.parametrize(
    "extension, province, error, message", EXTENSION_BAD.values(), ids=EXTENSION_BAD.keys()
)
def test_extension_refused(
    extension: CatalogEntry, province: str, error: type[ProvexError], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        CATALOG.with_extension(extension, province)


def test_changes_since() -> None:
    newer = Catalog.from_entries(
        5,
        [
            *(e for e in ENTRIES if e.code not in ("public_admin.judgments", FLOW)),
            dataclasses.replace(CATALOG.get(FLOW), title_en="Traffic flows"),
            entry("energy"),
            entry("energy.grid", IMPORTANT),
        ],
    )
    changes = newer.changes_since(CATALOG)
    assert (changes.from_version, changes.to_version) == (1, 5)
    assert changes.added == ("energy", "energy.grid")
    assert changes.changed == ("transport.traffic_flow",)
    assert changes.removed == ("public_admin.judgments",)
    assert not changes.is_empty


def test_changes_since_itself_is_empty() -> None:
    assert CATALOG.changes_since(CATALOG).is_empty


def test_changes_since_a_newer_version_is_refused() -> None:
    extended = CATALOG.with_extension(entry("transport.gd", owner=GD), GD)
    with pytest.raises(InvalidArgument, match="newer"):
        CATALOG.changes_since(extended)


# --------------------------------------------------------------------------
# Grading rules as data
# --------------------------------------------------------------------------


def test_default_rules() -> None:
    assert DEFAULT_RULES.version == 1
    assert [(r.kind, r.threshold, r.grade) for r in DEFAULT_RULES.rules] == [
        (RuleKind.PERSONAL_INFO_INDIVIDUALS, 10_000_000, IMPORTANT),
        (RuleKind.SENSITIVE_INDIVIDUALS, 1_000_000, IMPORTANT),
        (RuleKind.DERIVED_FROM_SOURCES, 0, None),
    ]


def test_rules_dict_round_trip() -> None:
    data = DEFAULT_RULES.to_dict()
    assert data["rules"][0] == {  # type: ignore[index]
        "id": "pi-10m-individuals",
        "description": "personal information of 10,000,000 or more individuals is important data",
        "kind": "personal_info_individuals",
        "threshold": 10_000_000,
        "grade": "important",
    }
    assert data["rules"][2]["grade"] is None  # type: ignore[index]
    assert GradingRules.from_dict(data) == DEFAULT_RULES


def test_rules_get() -> None:
    assert DEFAULT_RULES.get("derived-at-least-sources").kind is RuleKind.DERIVED_FROM_SOURCES
    with pytest.raises(NotFound):
        DEFAULT_RULES.get("nope")


RULE_BAD = {
    "count rule without grade": (
        {"kind": "personal_info_individuals", "threshold": 5, "grade": None},
        "needs a grade",
    ),
    "count rule threshold 0": (
        {"kind": "sensitive_individuals", "threshold": 0, "grade": "important"},
        "threshold must be an integer >= 1",
    ),
    "derived rule with grade": (
        {"kind": "derived_from_sources", "threshold": 0, "grade": "core"},
        "takes no threshold and no grade",
    ),
    "derived rule with threshold": (
        {"kind": "derived_from_sources", "threshold": 2, "grade": None},
        "takes no threshold and no grade",
    ),
    "unknown kind": ({"kind": "vibes"}, "kind must be one of"),
    "bad id": ({"id": "Rule 1"}, "grading rule id"),
    "negative threshold": ({"threshold": -1}, "threshold must be an integer >= 0"),
    "threshold as string": ({"threshold": "10"}, "threshold must be an integer"),
    "empty description": ({"description": ""}, "description"),
    "bad grade": ({"grade": "top"}, "grade must be one of"),
    "missing kind": ({"kind": None}, "missing field(s) kind"),
    "extra field": ({"enabled": True}, "unknown field(s) enabled"),
}


@pytest.mark.parametrize("changes, message", RULE_BAD.values(), ids=RULE_BAD.keys())
def test_rule_from_dict_refuses(changes: dict[str, object], message: str) -> None:
    data = dict(DEFAULT_RULES.rules[0].to_dict())
    for key, value in changes.items():
        if value is None and key in ("kind",):
            del data[key]
        else:
            data[key] = value
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        GradingRule.from_dict(data)


def test_rules_refuse_duplicate_ids() -> None:
    rule = DEFAULT_RULES.rules[0]
    with pytest.raises(InvalidArgument, match="appears twice"):
        GradingRules(2, (rule, rule))


# --------------------------------------------------------------------------
# Grade derivation
# --------------------------------------------------------------------------

PI_RULE = "pi-10m-individuals"
SPI_RULE = "sensitive-pi-1m-individuals"
DERIVED_RULE = "derived-at-least-sources"
FLOW = "transport.traffic_flow"

# name: (categories, individuals, sensitive individuals, source grades, grade, reason subjects)
DERIVE_CASES: dict[str, tuple[list[str], int, int, list[Grade], Grade, list[str]]] = {
    "general category": ([FLOW], 0, 0, [], GENERAL, [FLOW]),
    "important category": (
        ["health.medical.inpatient"],
        0,
        0,
        [],
        IMPORTANT,
        ["health.medical.inpatient"],
    ),
    "core category": (["health.genetic"], 0, 0, [], CORE, ["health.genetic"]),
    "highest of several categories": (
        [FLOW, "finance.credit"],
        0,
        0,
        [],
        IMPORTANT,
        [FLOW, "finance.credit"],
    ),
    "9,999,999 individuals: general": ([FLOW], 9_999_999, 0, [], GENERAL, [FLOW]),
    "10,000,000 individuals: important": ([FLOW], 10_000_000, 0, [], IMPORTANT, [FLOW, PI_RULE]),
    "999,999 sensitive: general": ([FLOW], 999_999, 999_999, [], GENERAL, [FLOW]),
    "1,000,000 sensitive: important": (
        [FLOW],
        1_000_000,
        1_000_000,
        [],
        IMPORTANT,
        [FLOW, SPI_RULE],
    ),
    "sensitive counted without individuals": (
        [FLOW],
        0,
        1_000_000,
        [],
        IMPORTANT,
        [FLOW, SPI_RULE],
    ),
    "both thresholds": ([FLOW], 12_000_000, 3_000_000, [], IMPORTANT, [FLOW, PI_RULE, SPI_RULE]),
    "rule on an important category": (
        ["finance.credit"],
        10_000_000,
        0,
        [],
        IMPORTANT,
        ["finance.credit", PI_RULE],
    ),
    "derived from general sources": (
        [FLOW],
        0,
        0,
        [GENERAL, GENERAL],
        GENERAL,
        [FLOW, DERIVED_RULE],
    ),
    "derived from an important source": (
        [FLOW],
        0,
        0,
        [GENERAL, IMPORTANT],
        IMPORTANT,
        [FLOW, DERIVED_RULE],
    ),
    "derived from a core source": ([FLOW], 0, 0, [CORE], CORE, [FLOW, DERIVED_RULE]),
    "derived and over threshold": (
        [FLOW],
        10_000_000,
        0,
        [IMPORTANT],
        IMPORTANT,
        [FLOW, PI_RULE, DERIVED_RULE],
    ),
}


@pytest.mark.parametrize(
    "categories, individuals, sensitive, sources, grade, subjects",
    DERIVE_CASES.values(),
    ids=DERIVE_CASES.keys(),
)
def test_derive_grade(
    *,
    categories: list[str],
    individuals: int,
    sensitive: int,
    sources: list[Grade],
    grade: Grade,
    subjects: list[str],
) -> None:
    profile = DatasetProfile(tuple(categories), individuals, sensitive, tuple(sources))
    decision = derive_grade(profile, CATALOG, DEFAULT_RULES)
    assert decision.grade is grade
    assert [r.subject for r in decision.reasons] == subjects
    assert decision.grade == max(r.grade for r in decision.reasons)


def test_reasons_explain_the_decision() -> None:
    profile = DatasetProfile(("finance.credit", FLOW), 10_000_000, 0, (GENERAL,))
    decision = derive_grade(profile, CATALOG, DEFAULT_RULES)
    assert [(r.kind, r.subject, r.grade) for r in decision.reasons] == [
        (ReasonKind.CATEGORY, "finance.credit", IMPORTANT),
        (ReasonKind.CATEGORY, FLOW, GENERAL),
        (ReasonKind.RULE, PI_RULE, IMPORTANT),
        (ReasonKind.RULE, DERIVED_RULE, GENERAL),
    ]
    assert [r.subject for r in decision.decisive_reasons] == ["finance.credit", PI_RULE]
    assert (decision.catalog_version, decision.rules_version) == (1, 1)
    assert (
        "personal information of 10,000,000 individuals, threshold 10,000,000"
        in decision.reasons[2].detail
    )
    assert "the highest graded GENERAL" in decision.reasons[3].detail
    text = decision.explain()
    assert text.splitlines()[0] == "grade IMPORTANT (catalog v1, rules v1)"
    assert "* category finance.credit: IMPORTANT" in text
    assert "- category transport.traffic_flow: GENERAL" in text


def test_rules_are_data_a_new_version_changes_the_outcome() -> None:
    stricter = GradingRules(
        2,
        (
            GradingRule(
                "pi-5m",
                "personal information of 5,000,000 or more individuals is important data",
                RuleKind.PERSONAL_INFO_INDIVIDUALS,
                5_000_000,
                IMPORTANT,
            ),
        ),
    )
    profile = DatasetProfile((FLOW,), individuals=5_000_000, source_grades=(IMPORTANT,))
    assert derive_grade(profile, CATALOG, DEFAULT_RULES).grade is IMPORTANT  # via its source
    decision = derive_grade(profile, CATALOG, stricter)
    assert decision.grade is IMPORTANT
    assert [r.subject for r in decision.reasons] == [FLOW, "pi-5m"]
    assert decision.rules_version == 2
    no_rules = derive_grade(profile, CATALOG, GradingRules(3, ()))
    assert no_rules.grade is GENERAL


def test_derive_grade_unknown_category_is_not_found() -> None:
    with pytest.raises(
        NotFound, match=re.escape("category health.dental is not in catalog version 1")
    ):
        derive_grade(DatasetProfile(("health.dental",)), CATALOG, DEFAULT_RULES)


PROFILE_BAD = {
    "no categories": ({"categories": ()}, "at least one category"),
    "a bare string": ({"categories": "health"}, "sequence of codes"),
    "malformed category": ({"categories": ("Health",)}, "dataset category"),
    "repeated category": ({"categories": (FLOW, FLOW)}, f"{FLOW} listed twice"),
    "negative individuals": ({"individuals": -1}, "individuals must be an integer >= 0"),
    "negative sensitive": ({"sensitive_individuals": -5}, "sensitive_individuals"),
    "individuals as float": ({"individuals": 1.5}, "individuals"),
    "source grade 0": ({"source_grades": (0,)}, "0 is not a grade"),
    "source grade 4": ({"source_grades": (4,)}, "4 is not a grade"),
    "source grade bool": ({"source_grades": (True,)}, "True is not a grade"),
    "source grade name": ({"source_grades": ("core",)}, "'core' is not a grade"),
}


@pytest.mark.parametrize("fields, message", PROFILE_BAD.values(), ids=PROFILE_BAD.keys())
def test_profile_refuses(fields: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"categories": (FLOW,), **fields}
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        DatasetProfile(**arguments)  # type: ignore[arg-type]


def test_profile_normalizes_lists_and_int_grades() -> None:
    profile = DatasetProfile([FLOW], source_grades=[2, Grade.CORE])  # type: ignore[arg-type]
    assert profile.categories == (FLOW,)
    assert profile.source_grades == (IMPORTANT, CORE)
    assert all(isinstance(g, Grade) for g in profile.source_grades)


@given(
    individuals=st.integers(0, 30_000_000),
    more=st.integers(0, 30_000_000),
    sensitive=st.integers(0, 3_000_000),
    sources=st.lists(st.sampled_from(Grade), max_size=3),
    categories=st.lists(st.sampled_from(sorted(CATALOG.entries)), min_size=1, unique=True),
)
def test_grade_is_monotone_and_the_highest_reason(
    individuals: int, more: int, sensitive: int, sources: list[Grade], categories: list[str]
) -> None:
    profile = DatasetProfile(tuple(categories), individuals, sensitive, tuple(sources))
    bigger = dataclasses.replace(profile, individuals=individuals + more)
    decision = derive_grade(profile, CATALOG, DEFAULT_RULES)
    assert decision.grade == max(r.grade for r in decision.reasons)
    assert decision.grade >= max(CATALOG.get(c).min_grade for c in categories)
    assert derive_grade(bigger, CATALOG, DEFAULT_RULES).grade >= decision.grade
    assert derive_grade(profile, CATALOG, DEFAULT_RULES) == decision


# --------------------------------------------------------------------------
# What the registry refuses
# --------------------------------------------------------------------------


def test_registrable_dataset_gets_its_decision() -> None:
    profile = DatasetProfile(("health.medical.inpatient",), 200_000, 200_000)
    decision = check_registrable(profile, CATALOG, DEFAULT_RULES)
    assert decision.grade is IMPORTANT


REGISTRABLE_BAD = {
    "core category": (
        DatasetProfile(("health.genetic",)),
        FailedPrecondition,
        RULE_TRADABLE_CATEGORIES_ONLY,
    ),
    "non-tradable general category": (
        DatasetProfile(("public_admin.judgments",)),
        FailedPrecondition,
        f"rule {RULE_TRADABLE_CATEGORIES_ONLY}: category public_admin.judgments (Judgments)",
    ),
    "one non-tradable among tradable": (
        DatasetProfile((FLOW, "public_admin.judgments")),
        FailedPrecondition,
        RULE_TRADABLE_CATEGORIES_ONLY,
    ),
    "core by a core source": (
        DatasetProfile((FLOW,), source_grades=(CORE,)),
        FailedPrecondition,
        f"rule {RULE_NO_CORE_DATA}: the dataset grades CORE (rule {DERIVED_RULE}: CORE",
    ),
    "unknown category": (DatasetProfile(("energy.grid",)), NotFound, "energy.grid"),
}


@pytest.mark.parametrize(
    "profile, error, message", REGISTRABLE_BAD.values(), ids=REGISTRABLE_BAD.keys()
)
def test_check_registrable_refuses(
    profile: DatasetProfile, error: type[ProvexError], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        check_registrable(profile, CATALOG, DEFAULT_RULES)


def test_core_tradable_category_is_refused_as_core() -> None:
    # A (hypothetical) tradable core category still never gets registered.
    catalog = Catalog.from_entries(1, [entry("defence", CORE)])
    with pytest.raises(FailedPrecondition, match=f"rule {RULE_NO_CORE_DATA}.*category defence"):
        check_registrable(DatasetProfile(("defence",)), catalog, DEFAULT_RULES)
