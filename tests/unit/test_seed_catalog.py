"""Tests of registry.seed_catalog: the national catalog version 1 and its example extensions."""

from __future__ import annotations

import re
from collections import defaultdict

import pytest

from provex.errors import FailedPrecondition
from provex.grading import (
    DEFAULT_RULES,
    NATIONAL,
    RULE_TRADABLE_CATEGORIES_ONLY,
    Catalog,
    CatalogEntry,
    CrossBorderRule,
    DatasetProfile,
    Grade,
    PersonalInfoClass,
    check_registrable,
    derive_grade,
)
from registry.seed_catalog import (
    CATALOG_VERSION,
    EXAMPLE_EXTENSIONS,
    NATIONAL_ENTRIES,
    example_extensions,
    national_catalog,
    national_rules,
)

GENERAL, IMPORTANT, CORE = Grade.GENERAL, Grade.IMPORTANT, Grade.CORE
NO_PI, PI, SPI = PersonalInfoClass.NONE, PersonalInfoClass.PERSONAL, PersonalInfoClass.SENSITIVE
ALLOWED = CrossBorderRule.ALLOWED
ASSESS = CrossBorderRule.ASSESSMENT_REQUIRED
FORBIDDEN = CrossBorderRule.FORBIDDEN

_CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return national_catalog()


def _depth(entry: CatalogEntry) -> int:
    return entry.code.count(".") + 1


# ---------------------------------------------------------------------------
# Shape
# ---------------------------------------------------------------------------


def test_catalog_builds_as_version_1_with_every_entry(catalog: Catalog) -> None:
    assert catalog.version == CATALOG_VERSION == 1
    assert len(catalog) == len(NATIONAL_ENTRIES)
    assert tuple(catalog) == tuple(sorted(NATIONAL_ENTRIES, key=lambda e: e.code))


def test_catalog_is_deterministic_and_round_trips(catalog: Catalog) -> None:
    assert national_catalog() == catalog
    assert Catalog.from_dict(catalog.to_dict()) == catalog


def test_seed_data_is_immutable() -> None:
    assert isinstance(NATIONAL_ENTRIES, tuple)
    assert isinstance(EXAMPLE_EXTENSIONS, tuple)
    assert all(isinstance(pair, tuple) for pair in EXAMPLE_EXTENSIONS)


def test_at_least_9_sectors_and_45_entries(catalog: Catalog) -> None:
    assert len(catalog.roots()) >= 9
    assert len(catalog) >= 45


def test_every_sector_has_2_or_3_levels(catalog: Catalog) -> None:
    assert {_depth(e) for e in catalog} == {1, 2, 3}
    for root in catalog.roots():
        assert catalog.children(root.code), f"sector {root.code} has no categories"


def test_every_entry_is_national(catalog: Catalog) -> None:
    assert all(e.owner == NATIONAL and e.is_national for e in catalog)


# The sectors DESIGN.md section 3 names, plus the optional ones the seed adds.
@pytest.mark.parametrize(
    ("code", "title_zh"),
    [
        ("health", "医疗健康"),
        ("finance", "金融"),
        ("transport", "交通运输"),
        ("geo", "自然资源与地理信息"),
        ("industry", "工业"),
        ("telecom", "电信与互联网"),
        ("gov", "政务与司法"),
        ("commerce", "商贸零售"),
        ("energy", "能源"),
        ("agriculture", "农业农村"),
        ("meteorology", "气象"),
    ],
)
def test_sector_present(catalog: Catalog, code: str, title_zh: str) -> None:
    entry = catalog.get(code)
    assert entry.parent_code is None
    assert entry.title_zh == title_zh


def test_sector_roots_are_the_loosest_point_of_their_subtree(catalog: Catalog) -> None:
    for root in catalog.roots():
        assert (root.min_grade, root.personal_info, root.tradable, root.cross_border) == (
            GENERAL,
            NO_PI,
            True,
            ALLOWED,
        ), root.code


# ---------------------------------------------------------------------------
# Titles
# ---------------------------------------------------------------------------


def test_titles_are_non_empty_in_both_languages(catalog: Catalog) -> None:
    for entry in catalog:
        assert entry.title_zh.strip() == entry.title_zh and _CJK.search(entry.title_zh), entry.code
        assert entry.title_en.strip() == entry.title_en and entry.title_en.isascii(), entry.code
        assert entry.title_en[0].isupper(), entry.code


@pytest.mark.parametrize("language", ["title_zh", "title_en"])
def test_titles_are_unique_per_level(catalog: Catalog, language: str) -> None:
    by_level: dict[int, list[str]] = defaultdict(list)
    for entry in catalog:
        by_level[_depth(entry)].append(getattr(entry, language))
    for level, titles in by_level.items():
        repeated = sorted({t for t in titles if titles.count(t) > 1})
        assert not repeated, f"level {level}: {repeated}"


# ---------------------------------------------------------------------------
# Grades, personal information, tradability, cross-border rules
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("geo.mapping", (IMPORTANT, NO_PI, True, FORBIDDEN)),
        ("geo.mapping.high_precision", (CORE, NO_PI, False, FORBIDDEN)),
        ("geo.mapping.geodetic_gravity", (CORE, NO_PI, False, FORBIDDEN)),
        ("health.medical.inpatient", (GENERAL, SPI, True, ASSESS)),
        ("health.genetics", (IMPORTANT, SPI, False, FORBIDDEN)),
        ("health.public_health.statistics", (GENERAL, NO_PI, True, ALLOWED)),
        ("finance.credit.personal_credit", (IMPORTANT, SPI, False, ASSESS)),
        ("finance.credit.enterprise_credit", (GENERAL, NO_PI, True, ALLOWED)),
        ("finance.banking.accounts", (GENERAL, SPI, False, ASSESS)),
        ("transport.road.traffic_flow", (GENERAL, NO_PI, True, ALLOWED)),
        ("transport.road.ride_hailing_trips", (GENERAL, SPI, True, ASSESS)),
        ("transport.aviation.flight_schedules", (GENERAL, NO_PI, True, ALLOWED)),
        ("energy.grid.operations", (IMPORTANT, NO_PI, False, FORBIDDEN)),
        ("energy.nuclear", (CORE, NO_PI, False, FORBIDDEN)),
        ("telecom.network.topology", (CORE, NO_PI, False, FORBIDDEN)),
        ("telecom.subscribers.location_signalling", (IMPORTANT, SPI, False, FORBIDDEN)),
        ("telecom.internet.biometrics", (GENERAL, SPI, False, ASSESS)),
        ("commerce.retail.sales_aggregates", (GENERAL, NO_PI, True, ALLOWED)),
        ("commerce.ecommerce.orders", (GENERAL, PI, True, ASSESS)),
        ("gov.courts.judgments_public", (GENERAL, PI, True, ALLOWED)),
        ("gov.population.household_registry", (IMPORTANT, SPI, False, FORBIDDEN)),
    ],
)
def test_entry_expectations(
    catalog: Catalog,
    code: str,
    expected: tuple[Grade, PersonalInfoClass, bool, CrossBorderRule],
) -> None:
    # expected: (minimum grade, personal information, tradable, cross-border rule)
    entry = catalog.get(code)
    assert (entry.min_grade, entry.personal_info, entry.tradable, entry.cross_border) == expected


def test_every_core_entry_is_non_tradable_and_forbidden_abroad(catalog: Catalog) -> None:
    core = [e for e in catalog if e.min_grade is CORE]
    assert len(core) >= 3
    for entry in core:
        assert not entry.tradable, entry.code
        assert entry.cross_border is FORBIDDEN, entry.code


def test_surveying_and_mapping_data_is_important_and_never_leaves(catalog: Catalog) -> None:
    mapping = [catalog.get("geo.mapping"), *catalog.children("geo.mapping")]
    assert len(mapping) >= 3
    for entry in mapping:
        assert entry.min_grade >= IMPORTANT, entry.code
        assert entry.cross_border is FORBIDDEN, entry.code


def test_genetic_resources_are_important_and_restricted_abroad(catalog: Catalog) -> None:
    genetics = [catalog.get("health.genetics"), *catalog.children("health.genetics")]
    for entry in genetics:
        assert entry.min_grade >= IMPORTANT, entry.code
        assert entry.personal_info is SPI, entry.code
        assert entry.cross_border is not ALLOWED, entry.code


@pytest.mark.parametrize(
    "code",
    [
        "health.medical",  # medical records
        "finance.banking.accounts",  # financial accounts
        "telecom.internet.biometrics",  # biometrics
        "transport.road.ride_hailing_trips",  # location tracks of individuals
        "telecom.subscribers.location_signalling",
    ],
)
def test_sensitive_personal_information(catalog: Catalog, code: str) -> None:
    assert catalog.get(code).personal_info is SPI


def test_sensitive_categories_never_leave_without_assessment(catalog: Catalog) -> None:
    for entry in catalog:
        if entry.personal_info is SPI:
            assert entry.cross_border is not ALLOWED, entry.code


def test_children_never_loosen_their_parent(catalog: Catalog) -> None:
    # Catalog enforces the grade for all entries and the rest for extensions only;
    # the seed keeps every rule for its national entries too.
    order = list(PersonalInfoClass)
    for entry in catalog:
        if entry.parent_code is None:
            continue
        parent = catalog.get(entry.parent_code)
        assert entry.min_grade >= parent.min_grade, entry.code
        assert order.index(entry.personal_info) >= order.index(parent.personal_info), entry.code
        assert parent.tradable or not entry.tradable, entry.code
        assert entry.cross_border.strictness >= parent.cross_border.strictness, entry.code


def test_most_entries_are_general(catalog: Catalog) -> None:
    grades = [e.min_grade for e in catalog]
    assert grades.count(GENERAL) > len(grades) / 2
    assert grades.count(CORE) < grades.count(IMPORTANT)


# ---------------------------------------------------------------------------
# Grading realistic datasets
# ---------------------------------------------------------------------------


def test_national_rules_are_the_default_rules() -> None:
    assert national_rules() is DEFAULT_RULES
    assert national_rules().version == 1


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        pytest.param(
            DatasetProfile(
                ("health.medical.inpatient",),
                individuals=12_000_000,
                sensitive_individuals=12_000_000,
            ),
            IMPORTANT,
            id="inpatient-records-12m-patients",
        ),
        pytest.param(
            DatasetProfile(
                ("health.medical.inpatient",),
                individuals=80_000,
                sensitive_individuals=80_000,
            ),
            GENERAL,
            id="inpatient-records-one-hospital",
        ),
        pytest.param(
            DatasetProfile(
                ("transport.road.ride_hailing_trips",),
                individuals=3_000_000,
                sensitive_individuals=3_000_000,
            ),
            IMPORTANT,
            id="ride-hailing-trajectories-3m-riders",
        ),
        pytest.param(
            DatasetProfile(("telecom.internet.user_behavior",), individuals=15_000_000),
            IMPORTANT,
            id="app-user-behaviour-15m-users",
        ),
        pytest.param(
            DatasetProfile(("commerce.retail.sales_aggregates",)),
            GENERAL,
            id="retail-sales-aggregates",
        ),
        pytest.param(
            DatasetProfile(("finance.credit.personal_credit",), individuals=5_000),
            IMPORTANT,
            id="personal-credit-small-sample",
        ),
        pytest.param(
            DatasetProfile(
                ("transport.road.traffic_flow", "transport.aviation.flight_schedules"),
                source_grades=(GENERAL, GENERAL),
            ),
            GENERAL,
            id="multimodal-traffic-from-public-sources",
        ),
        pytest.param(
            DatasetProfile(
                ("telecom.analytics.population_mobility",),
                source_grades=(IMPORTANT,),
            ),
            IMPORTANT,
            id="mobility-statistics-derived-from-signalling",
        ),
        pytest.param(
            DatasetProfile(("energy.grid.consumption_statistics", "energy.grid.operations")),
            IMPORTANT,
            id="consumption-with-dispatch-data",
        ),
        pytest.param(
            DatasetProfile(("geo.mapping.high_precision",)),
            CORE,
            id="hd-map-tiles",
        ),
    ],
)
def test_derive_grade_for_realistic_datasets(
    catalog: Catalog, profile: DatasetProfile, expected: Grade
) -> None:
    decision = derive_grade(profile, catalog, national_rules())
    assert decision.grade is expected, decision.explain()
    assert decision.catalog_version == 1
    assert decision.rules_version == 1


def test_inpatient_records_of_12m_patients_are_important_by_both_scale_rules(
    catalog: Catalog,
) -> None:
    profile = DatasetProfile(
        ("health.medical.inpatient",), individuals=12_000_000, sensitive_individuals=12_000_000
    )
    decision = derive_grade(profile, catalog, national_rules())
    assert {r.subject for r in decision.decisive_reasons} == {
        "pi-10m-individuals",
        "sensitive-pi-1m-individuals",
    }


def test_retail_aggregates_are_registrable(catalog: Catalog) -> None:
    profile = DatasetProfile(("commerce.retail.sales_aggregates",))
    assert check_registrable(profile, catalog, national_rules()).grade is GENERAL


@pytest.mark.parametrize(
    ("code", "rule"),
    [
        ("geo.mapping.high_precision", RULE_TRADABLE_CATEGORIES_ONLY),
        ("telecom.network.topology", RULE_TRADABLE_CATEGORIES_ONLY),
        ("finance.credit.personal_credit", RULE_TRADABLE_CATEGORIES_ONLY),
    ],
)
def test_non_tradable_categories_are_refused(catalog: Catalog, code: str, rule: str) -> None:
    with pytest.raises(FailedPrecondition, match=rule):
        check_registrable(DatasetProfile((code,)), catalog, national_rules())


def test_every_core_category_is_refused_by_the_registry(catalog: Catalog) -> None:
    for entry in catalog:
        if entry.min_grade is CORE:
            with pytest.raises(FailedPrecondition, match=RULE_TRADABLE_CATEGORIES_ONLY):
                check_registrable(DatasetProfile((entry.code,)), catalog, national_rules())


# ---------------------------------------------------------------------------
# Example provincial extensions
# ---------------------------------------------------------------------------


def test_example_extensions_are_provincial_and_not_in_v1(catalog: Catalog) -> None:
    extensions = example_extensions()
    assert extensions == EXAMPLE_EXTENSIONS
    assert len(extensions) >= 1
    assert ("440000", "transport.port.greater_bay_area_shipping") in {
        (province, entry.code) for entry, province in extensions
    }
    for entry, province in extensions:
        assert entry.owner == province != NATIONAL
        assert entry.code not in catalog
        assert entry.parent_code is not None and catalog.get(entry.parent_code).is_national


@pytest.mark.parametrize(
    ("entry", "province"), EXAMPLE_EXTENSIONS, ids=[e.code for e, _ in EXAMPLE_EXTENSIONS]
)
def test_example_extension_is_accepted(
    catalog: Catalog, entry: CatalogEntry, province: str
) -> None:
    extended = catalog.with_extension(entry, province)
    assert extended.version == 2
    assert extended.get(entry.code) == entry
    assert extended.changes_since(catalog).added == (entry.code,)
    grade = derive_grade(DatasetProfile((entry.code,)), extended, national_rules()).grade
    assert grade >= catalog.get(entry.parent_code or "").min_grade


def test_example_extensions_apply_in_sequence(catalog: Catalog) -> None:
    extended = catalog
    for entry, province in example_extensions():
        extended = extended.with_extension(entry, province)
    assert extended.version == 1 + len(example_extensions())
    assert len(extended) == len(catalog) + len(example_extensions())
