"""Tests of provex.customs: export detection, the customs rules, permits, contracts, counters.

Each table reads like the rule it checks; the case names are the test ids.
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provex.customs import (
    RULE_CATALOG_ASSESSMENT,
    RULE_CATALOG_FORBIDDEN,
    RULE_CORE_FORBIDDEN,
    RULE_DOCUMENTS,
    RULE_EXPORT,
    RULE_FTZ_NEGATIVE_LIST,
    RULE_IMPORTANT_PERMIT,
    RULE_PI_ASSESSMENT,
    RULE_PI_EXEMPT,
    RULE_PI_STANDARD_CONTRACT,
    DeclaredExport,
    ExportDecision,
    ExportDocument,
    ExportPermit,
    ExportRequest,
    Mechanism,
    StandardContract,
    YearlyCount,
    YearlyCounter,
    calendar_year,
    check_export,
    cross_border_rules,
    decide_export,
    is_export,
    normalize_country,
    normalize_negative_list,
    on_negative_list,
    permit_expiry,
    required_mechanism,
)
from provex.errors import FailedPrecondition, InvalidArgument
from provex.grading import Catalog, CatalogEntry, CrossBorderRule, Grade, PersonalInfoClass

GENERAL, IMPORTANT, CORE = Grade.GENERAL, Grade.IMPORTANT, Grade.CORE
NOT_EXPORT, EXEMPT, CONTRACT, ASSESSMENT, FORBIDDEN = (
    Mechanism.NOT_EXPORT,
    Mechanism.EXEMPT,
    Mechanism.STANDARD_CONTRACT,
    Mechanism.ASSESSMENT,
    Mechanism.FORBIDDEN,
)

EXPORTER = "91440100MA5G00019C"  # CreditCode.from_parts("9", "1", "440100", "MA5G0001")
OTHER_EXPORTER = "91310000MA5H00028L"
DATASET = "440100-2026-0000123-8"
OTHER_DATASET = "440100-2026-0000124-6"
BUYER = "Acme Data (HK) Ltd"
DATE = datetime(2026, 6, 1, tzinfo=UTC)
YEAR = 2026


def at(text: str) -> datetime:
    """An aware datetime from ISO text (``Z`` for UTC)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def export(**changes: Any) -> ExportRequest:
    """An export of a general health dataset to a buyer in Hong Kong on DATE, no personal info."""
    fields: dict[str, Any] = {
        "exporter": EXPORTER,
        "dataset_id": DATASET,
        "grade": GENERAL,
        "categories": ("health.medical",),
        "buyer_country": "HK",
        "recipient": BUYER,
        "date": DATE,
        "individuals": 0,
        "sensitive": 0,
    }
    fields.update(changes)
    return ExportRequest(**fields)


def permit(*, revoked: bool = False, **changes: Any) -> ExportPermit:
    """A permit for health data to BUYER in Hong Kong, issued 1 January 2025."""
    fields: dict[str, Any] = {
        "permit_id": "EP-2025-001",
        "exporter": EXPORTER,
        "destination": "HK",
        "purpose": "clinical research",
        "issued_at": at("2025-01-01T00:00:00Z"),
        "categories": ("health",),
        "recipient": BUYER,
    }
    fields.update(changes)
    issued = ExportPermit.issue(**fields)
    return dataclasses.replace(issued, revoked=True) if revoked else issued


def contract(**changes: Any) -> StandardContract:
    """A standard contract with BUYER in Hong Kong for 2026, filed 10 January 2026."""
    fields: dict[str, Any] = {
        "contract_id": "SC-2026-001",
        "exporter": EXPORTER,
        "destination": "HK",
        "recipient": BUYER,
        "filed_at": at("2026-01-10T00:00:00Z"),
        "year": YEAR,
    }
    fields.update(changes)
    return StandardContract(**fields)


ALLOWED, ASSESSED, FORBID = (
    CrossBorderRule.ALLOWED,
    CrossBorderRule.ASSESSMENT_REQUIRED,
    CrossBorderRule.FORBIDDEN,
)


def allowed(request: ExportRequest) -> dict[str, CrossBorderRule]:
    """Every category of ``request`` ALLOWED by the catalog: only section 7's rules apply."""
    return dict.fromkeys(request.categories, ALLOWED)


def pair(count: YearlyCount) -> tuple[int, int]:
    """A yearly count as the (individuals, sensitive) pair :func:`decide` takes."""
    return count.individuals, count.sensitive


def decide(
    request: ExportRequest,
    before: tuple[int, int] = (0, 0),
    documents: Iterable[ExportDocument] = (),
    negative_list: Iterable[str] | None = None,
    cross_border: dict[str, CrossBorderRule] | None = None,
) -> ExportDecision:
    """decide_export, counters given as a pair, categories ALLOWED unless ``cross_border`` says."""
    counters = YearlyCount(request.exporter, request.year, *before)
    return decide_export(
        request,
        counters,
        cross_border=allowed(request) if cross_border is None else cross_border,
        documents=documents,
        negative_list=negative_list,
    )


# ---------------------------------------------------------------------------
# Export detection: the buyer's country
# ---------------------------------------------------------------------------

COUNTRY_CASES: dict[str, tuple[str, str, bool]] = {
    "CN is the mainland: no export": ("CN", "CN", False),
    "cn in lower case is the mainland too": ("cn", "CN", False),
    "Hong Kong is outside the mainland": ("HK", "HK", True),
    "Macao is outside the mainland": ("MO", "MO", True),
    "Taiwan is outside the mainland": ("TW", "TW", True),
    "lower-case hk is normalized": ("hk", "HK", True),
    "mixed case and white space are normalized": (" uS ", "US", True),
    "any other country is an export": ("DE", "DE", True),
}


@pytest.mark.parametrize(
    ("code", "normalized", "exported"), COUNTRY_CASES.values(), ids=COUNTRY_CASES.keys()
)
def test_country(code: str, normalized: str, exported: bool) -> None:
    assert normalize_country(code) == normalized
    assert is_export(code) is exported
    decision = decide(export(buyer_country=code))
    assert decision.is_export is exported
    assert decision.mechanism is (EXEMPT if exported else NOT_EXPORT)
    assert decision.satisfied
    assert decision.rules[0] == RULE_EXPORT


MALFORMED_COUNTRIES: dict[str, object] = {
    "empty": "",
    "one letter": "C",
    "alpha-3": "CHN",
    "a digit": "C1",
    "numeric code": "156",
    "punctuation": "C-",
    "inner space": "C N",
    "non-ASCII letter that upper-cases to two": "ß",
    "Chinese": "中国",
    "full-width letters": "ＣＮ",
    "not a string": 86,
    "None": None,
}


@pytest.mark.parametrize("code", MALFORMED_COUNTRIES.values(), ids=MALFORMED_COUNTRIES.keys())
def test_malformed_country_refused(code: object) -> None:
    with pytest.raises(InvalidArgument, match="buyer_country must be an ISO 3166-1 alpha-2"):
        is_export(code)
    with pytest.raises(InvalidArgument, match=r"export\.buyer_country"):
        export(buyer_country=code)
    with pytest.raises(InvalidArgument, match="destination"):
        permit(destination=code)


@given(st.text(alphabet=string.ascii_letters, min_size=2, max_size=2))
def test_every_two_letter_code_is_a_country(code: str) -> None:
    assert normalize_country(code) == code.upper()
    assert is_export(code) is (code.upper() != "CN")


def _two_ascii_letters(text: str) -> bool:
    return len(text.strip()) == 2 and all(c in string.ascii_letters for c in text.strip())


@given(st.text(max_size=4).filter(lambda t: not _two_ascii_letters(t)))
def test_anything_else_is_refused(code: str) -> None:
    with pytest.raises(InvalidArgument, match="country"):
        normalize_country(code)


# ---------------------------------------------------------------------------
# Personal information thresholds (cumulative yearly counts, this export included)
# ---------------------------------------------------------------------------

THRESHOLD_CASES: dict[str, tuple[int, int, Mechanism]] = {
    "none at all: exempt": (0, 0, EXEMPT),
    "99,999 individuals, no sensitive: exempt": (99_999, 0, EXEMPT),
    "100,000 individuals: standard contract": (100_000, 0, CONTRACT),
    "999,999 individuals: standard contract": (999_999, 0, CONTRACT),
    "1,000,000 individuals: assessment": (1_000_000, 0, ASSESSMENT),
    "50,000,000 individuals: assessment": (50_000_000, 0, ASSESSMENT),
    "0 sensitive with few individuals: exempt": (10, 0, EXEMPT),
    "1 sensitive: standard contract": (1, 1, CONTRACT),
    "1 sensitive and 99,999 individuals: standard contract": (99_999, 1, CONTRACT),
    "9,999 sensitive: standard contract": (9_999, 9_999, CONTRACT),
    "9,999 sensitive and 999,999 individuals: standard contract": (999_999, 9_999, CONTRACT),
    "10,000 sensitive: assessment": (10_000, 10_000, ASSESSMENT),
    "10,000 sensitive with few individuals counted: assessment": (0, 10_000, ASSESSMENT),
    "1,000,000 individuals and 1 sensitive: assessment": (1_000_000, 1, ASSESSMENT),
}


@pytest.mark.parametrize(
    ("individuals", "sensitive", "expected"), THRESHOLD_CASES.values(), ids=THRESHOLD_CASES.keys()
)
def test_required_mechanism(individuals: int, sensitive: int, expected: Mechanism) -> None:
    assert required_mechanism(individuals, sensitive) is expected


@pytest.mark.parametrize(
    ("individuals", "sensitive", "expected"), THRESHOLD_CASES.values(), ids=THRESHOLD_CASES.keys()
)
def test_thresholds_through_a_whole_export(
    individuals: int, sensitive: int, expected: Mechanism
) -> None:
    """A first export of the year carrying these counts needs what the thresholds say."""
    decision = decide(export(individuals=individuals, sensitive=sensitive))
    assert decision.mechanism is expected
    assert decision.satisfied is (expected is EXEMPT)
    assert (decision.counters_after.individuals, decision.counters_after.sensitive) == (
        individuals,
        sensitive,
    )


@pytest.mark.parametrize(
    ("individuals", "sensitive"), [(-1, 0), (0, -1), (True, 0), (1.5, 0), ("10", 0)]
)
def test_required_mechanism_refuses_bad_counts(individuals: Any, sensitive: Any) -> None:
    with pytest.raises(InvalidArgument, match="must be an integer >= 0"):
        required_mechanism(individuals, sensitive)


counts = st.integers(min_value=0, max_value=5_000_000)


@given(counts, counts, counts, counts)
def test_mechanism_is_monotonic_in_counts(i1: int, s1: int, i2: int, s2: int) -> None:
    low = required_mechanism(min(i1, i2), min(s1, s2))
    high = required_mechanism(max(i1, i2), max(s1, s2))
    assert low.strictness <= high.strictness
    assert required_mechanism(i1, s1) in (EXEMPT, CONTRACT, ASSESSMENT)


CUMULATIVE_CASES: dict[str, tuple[tuple[int, int], tuple[int, int], Mechanism, str]] = {
    "99,998 before, 1 more stays under 100,000: exempt": (
        (99_998, 0),
        (1, 0),
        EXEMPT,
        RULE_PI_EXEMPT,
    ),
    "99,999 before, 1 more reaches 100,000: standard contract": (
        (99_999, 0),
        (1, 0),
        CONTRACT,
        RULE_PI_STANDARD_CONTRACT,
    ),
    "999,999 before, 1 more reaches 1,000,000: assessment": (
        (999_999, 0),
        (1, 0),
        ASSESSMENT,
        RULE_PI_ASSESSMENT,
    ),
    "0 sensitive before, 1 sensitive now: standard contract": (
        (50_000, 0),
        (10, 1),
        CONTRACT,
        RULE_PI_STANDARD_CONTRACT,
    ),
    "9,999 sensitive before, 1 more reaches 10,000: assessment": (
        (20_000, 9_999),
        (1, 1),
        ASSESSMENT,
        RULE_PI_ASSESSMENT,
    ),
    "2,000,000 before, but this export carries no personal information: exempt": (
        (2_000_000, 50_000),
        (0, 0),
        EXEMPT,
        RULE_PI_EXEMPT,
    ),
}


@pytest.mark.parametrize(
    ("before", "this", "expected", "rule"), CUMULATIVE_CASES.values(), ids=CUMULATIVE_CASES.keys()
)
def test_cumulative_yearly_counts(
    before: tuple[int, int], this: tuple[int, int], expected: Mechanism, rule: str
) -> None:
    decision = decide(export(individuals=this[0], sensitive=this[1]), before)
    assert decision.mechanism is expected
    assert rule in decision.rules
    after = decision.counters_after
    assert (after.exporter, after.year) == (EXPORTER, YEAR)
    assert (after.individuals, after.sensitive) == (before[0] + this[0], before[1] + this[1])


def test_several_exports_in_a_year_add_up() -> None:
    """Three exports of 40,000 individuals: the third crosses 100,000 and needs a contract."""
    counter = YearlyCounter()
    seen: list[Mechanism] = []
    for month in (2, 5, 9):
        request = export(date=datetime(2026, month, 1, tzinfo=UTC), individuals=40_000)
        decision = decide(request, pair(counter.count_at(EXPORTER, request.date)))
        seen.append(decision.mechanism)
        counter = counter.add(request.declaration())
    assert seen == [EXEMPT, EXEMPT, CONTRACT]
    assert counter.count(EXPORTER, YEAR) == YearlyCount(EXPORTER, YEAR, 120_000, 0)


def test_reason_names_the_rule_the_exporter_and_the_year() -> None:
    decision = decide(export(individuals=1), (999_999, 0))
    reason = next(r for r in decision.reasons if r.rule == RULE_PI_ASSESSMENT)
    assert str(reason).startswith("rule personal-info-assessment: 1,000,000 or more individuals")
    assert f"exported by {EXPORTER} in 2026 needs a security assessment permit" in str(reason)
    assert reason.requires is ASSESSMENT


def test_both_personal_info_conditions_are_reported() -> None:
    decision = decide(export(individuals=150_000, sensitive=20_000))
    assert decision.mechanism is ASSESSMENT
    assert decision.rules.count(RULE_PI_STANDARD_CONTRACT) == 1  # by individuals
    assert decision.rules.count(RULE_PI_ASSESSMENT) == 1  # by sensitive individuals
    assert "10,000 or more sensitive individuals (20,000)" in decision.explain()


# ---------------------------------------------------------------------------
# Calendar years: Asia/Shanghai, resetting on 1 January
# ---------------------------------------------------------------------------

YEAR_CASES: dict[str, tuple[str, int]] = {
    "mid-year": ("2026-06-01T00:00:00Z", 2026),
    "last second of 2026 in Shanghai (15:59:59 UTC)": ("2026-12-31T15:59:59Z", 2026),
    "midnight in Shanghai is 16:00 UTC: 2027": ("2026-12-31T16:00:00Z", 2027),
    "2026-12-31T16:30Z is already 2027 in Shanghai": ("2026-12-31T16:30:00Z", 2027),
    "a Shanghai offset is read as given": ("2026-12-31T23:59:00+08:00", 2026),
    "New Year in Shanghai": ("2027-01-01T00:00:00+08:00", 2027),
    "first hours of 1 January UTC are 2027 everywhere": ("2027-01-01T00:00:00Z", 2027),
    "New York's New Year's Eve evening is 2027 in Shanghai": ("2026-12-31T12:00:00-05:00", 2027),
}


@pytest.mark.parametrize(("moment", "year"), YEAR_CASES.values(), ids=YEAR_CASES.keys())
def test_calendar_year(moment: str, year: int) -> None:
    assert calendar_year(at(moment)) == year
    assert export(date=at(moment)).year == year


RESET_CASES: dict[str, tuple[str, Mechanism, int]] = {
    "still 2026 in Shanghai: 960,000 + 50,000 needs an assessment": (
        "2026-12-31T15:30:00Z",
        ASSESSMENT,
        1_010_000,
    ),
    "2026-12-31T16:30Z is 2027 in Shanghai: the counter reset, exempt": (
        "2026-12-31T16:30:00Z",
        EXEMPT,
        50_000,
    ),
    "1 January 2027: exempt": ("2027-01-01T12:00:00Z", EXEMPT, 50_000),
}


@pytest.mark.parametrize(
    ("moment", "expected", "total"), RESET_CASES.values(), ids=RESET_CASES.keys()
)
def test_yearly_counter_resets_on_1_january(moment: str, expected: Mechanism, total: int) -> None:
    declared = [
        DeclaredExport(EXPORTER, at("2026-03-01T00:00:00Z"), 500_000),
        DeclaredExport(EXPORTER, at("2026-11-01T00:00:00Z"), 460_000),
    ]
    counter = YearlyCounter.of(declared)
    request = export(date=at(moment), individuals=50_000)
    decision = decide(request, pair(counter.count_at(EXPORTER, request.date)))
    assert decision.mechanism is expected
    assert decision.counters_after.individuals == total


def test_counters_of_another_year_or_exporter_are_refused() -> None:
    request = export(date=at("2026-12-31T16:30:00Z"), individuals=1)
    with pytest.raises(InvalidArgument, match=r"counters_before\.year is 2026.*in 2027"):
        decide_export(request, YearlyCount(EXPORTER, 2026, 10), cross_border=allowed(request))
    with pytest.raises(InvalidArgument, match=r"counters_before\.exporter"):
        decide_export(request, YearlyCount(OTHER_EXPORTER, 2027, 10), cross_border=allowed(request))


# ---------------------------------------------------------------------------
# The yearly counter (the registry's totals)
# ---------------------------------------------------------------------------


def test_yearly_counter_totals_per_exporter_per_year() -> None:
    counter = YearlyCounter.of(
        [
            DeclaredExport(EXPORTER, at("2026-01-01T00:00:00+08:00"), 10, 1),
            DeclaredExport(EXPORTER, at("2026-12-31T15:59:59Z"), 20, 2),
            DeclaredExport(EXPORTER, at("2026-12-31T16:00:00Z"), 40, 4),
            DeclaredExport(OTHER_EXPORTER, at("2026-06-01T00:00:00Z"), 80, 8),
        ]
    )
    assert dict(counter.totals) == {
        (EXPORTER, 2026): YearlyCount(EXPORTER, 2026, 30, 3),
        (EXPORTER, 2027): YearlyCount(EXPORTER, 2027, 40, 4),
        (OTHER_EXPORTER, 2026): YearlyCount(OTHER_EXPORTER, 2026, 80, 8),
    }
    assert counter.count(OTHER_EXPORTER, 2027) == YearlyCount(OTHER_EXPORTER, 2027)
    assert counter.count(EXPORTER.lower(), 2026).individuals == 30


def test_yearly_counter_is_immutable() -> None:
    empty = YearlyCounter()
    one = empty.add(DeclaredExport(EXPORTER, DATE, 5))
    assert empty.count(EXPORTER, YEAR).individuals == 0
    assert one.count(EXPORTER, YEAR).individuals == 5
    with pytest.raises(TypeError):
        one.totals[(EXPORTER, YEAR)] = YearlyCount(EXPORTER, YEAR)  # type: ignore[index]


declarations = st.lists(
    st.builds(
        DeclaredExport,
        exporter=st.sampled_from([EXPORTER, OTHER_EXPORTER]),
        date=st.datetimes(
            min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)
        ),
        individuals=st.integers(0, 2_000_000),
        sensitive=st.integers(0, 20_000),
    ),
    max_size=20,
)


@given(declarations, st.randoms())
def test_yearly_totals_are_sums_in_any_order(declared: list[DeclaredExport], random: Any) -> None:
    counter = YearlyCounter.of(declared)
    shuffled = list(declared)
    random.shuffle(shuffled)
    assert YearlyCounter.of(shuffled).totals == counter.totals
    one_by_one = YearlyCounter()
    for declaration in shuffled:
        one_by_one = one_by_one.add(declaration)
    assert one_by_one.totals == counter.totals
    for (exporter, year), count in counter.totals.items():
        mine = [d for d in declared if d.exporter == exporter and d.year == year]
        assert count.individuals == sum(d.individuals for d in mine)
        assert count.sensitive == sum(d.sensitive for d in mine)
    assert sum(c.individuals for c in counter.totals.values()) == sum(
        d.individuals for d in declared
    )


# ---------------------------------------------------------------------------
# Export permits (important data, and personal information needing an assessment)
# ---------------------------------------------------------------------------

PERMIT_CASES: dict[str, tuple[dict[str, Any], str | None]] = {
    "covering a category of the dataset": ({}, None),
    "covering the dataset id": ({"categories": (), "dataset_ids": (DATASET,)}, None),
    "covering the exact category": ({"categories": ("health.medical",)}, None),
    "covering one of several categories": ({"categories": ("transport", "health")}, None),
    "naming no recipient covers any recipient": ({"recipient": None}, None),
    "valid from the instant of issue": ({"issued_at": DATE}, None),
    "one day before expiry: valid": ({"issued_at": at("2023-06-02T00:00:00Z")}, None),
    "expiring at the export instant: invalid": (
        {"issued_at": at("2023-06-01T00:00:00Z")},
        "expired at 2026-06-01T00:00:00Z",
    ),
    "one day after expiry: invalid": (
        {"issued_at": at("2023-05-31T00:00:00Z")},
        "expired at 2026-05-31T00:00:00Z",
    ),
    "issued in the future: not valid yet": (
        {"issued_at": DATE + timedelta(days=1)},
        "not valid yet",
    ),
    "revoked": ({"revoked": True}, "is revoked"),
    "for another destination": ({"destination": "US"}, "is for destination US"),
    "for another recipient": ({"recipient": "Other Ltd"}, "is for recipient 'Other Ltd'"),
    "for another dataset": (
        {"categories": (), "dataset_ids": (OTHER_DATASET,)},
        "covers neither dataset",
    ),
    "for another category": ({"categories": ("transport",)}, "covers neither dataset"),
    "health.med is no dotted parent of health.medical": (
        {"categories": ("health.med",)},
        "covers neither dataset",
    ),
    "a subcategory does not cover its parent": (
        {"categories": ("health.medical.inpatient",)},
        "covers neither dataset",
    ),
    "for another exporter": ({"exporter": OTHER_EXPORTER}, "is for exporter"),
}


@pytest.mark.parametrize(("changes", "problem"), PERMIT_CASES.values(), ids=PERMIT_CASES.keys())
def test_important_data_needs_a_valid_permit(changes: dict[str, Any], problem: str | None) -> None:
    held = permit(**changes)
    decision = decide(export(grade=IMPORTANT), documents=[held])
    assert decision.mechanism is ASSESSMENT
    assert RULE_IMPORTANT_PERMIT in decision.rules
    assert decision.satisfied is (problem is None)
    if problem is None:
        assert decision.document is held
        assert decision.document_id == "EP-2025-001"
        assert "satisfied by export permit EP-2025-001" in str(decision.reasons[-1])
    else:
        assert decision.document is None
        assert decision.reasons[-1].rule == RULE_DOCUMENTS
        assert problem in str(decision.reasons[-1])
        with pytest.raises(FailedPrecondition, match=RULE_IMPORTANT_PERMIT):
            request = export(grade=IMPORTANT)
            check_export(
                request,
                YearlyCount(EXPORTER, YEAR),
                cross_border=allowed(request),
                documents=[held],
            )


@pytest.mark.parametrize(("changes", "problem"), PERMIT_CASES.values(), ids=PERMIT_CASES.keys())
def test_personal_info_assessment_needs_the_same_permit(
    changes: dict[str, Any], problem: str | None
) -> None:
    decision = decide(export(individuals=1_000_000), documents=[permit(**changes)])
    assert decision.mechanism is ASSESSMENT
    assert decision.satisfied is (problem is None)


def test_important_data_without_documents_is_refused() -> None:
    decision = decide(export(grade=IMPORTANT))
    assert not decision.satisfied
    assert "no valid export permit covers this export" in decision.explain()


def test_the_first_covering_permit_is_chosen() -> None:
    expired = permit(permit_id="EP-old", issued_at=at("2020-01-01T00:00:00Z"))
    current = permit(permit_id="EP-new")
    decision = decide(export(grade=IMPORTANT), documents=[expired, current])
    assert decision.document_id == "EP-new"


EXPIRY_CASES: dict[str, tuple[str, str]] = {
    "an ordinary day: the same day 3 years on": ("2026-06-01T00:00:00Z", "2029-06-01T00:00:00Z"),
    "29 February expires on 28 February": ("2024-02-29T02:00:00Z", "2027-02-28T02:00:00Z"),
    "29 February in Shanghai (28 February in UTC) expires on 28 February in Shanghai": (
        "2024-02-28T20:00:00Z",
        "2027-02-27T20:00:00Z",
    ),
    "1 March stays 1 March": ("2024-03-01T00:00:00+08:00", "2027-02-28T16:00:00Z"),
    "a Shanghai offset gives the same instant 3 years on, in UTC": (
        "2026-01-01T08:00:00+08:00",
        "2029-01-01T00:00:00Z",
    ),
}


@pytest.mark.parametrize(("issued", "expires"), EXPIRY_CASES.values(), ids=EXPIRY_CASES.keys())
def test_permit_expiry(issued: str, expires: str) -> None:
    expiry = permit_expiry(at(issued))
    assert expiry == at(expires)
    assert expiry.tzinfo is UTC
    held = permit(issued_at=at(issued))
    assert held.expires_at == expiry
    assert held.valid_at(expiry - timedelta(microseconds=1))
    assert not held.valid_at(expiry)
    assert held.valid_at(at(issued))
    assert not held.valid_at(at(issued) - timedelta(microseconds=1))


@settings(max_examples=200)
@given(
    st.datetimes(
        min_value=datetime(1993, 1, 1), max_value=datetime(2990, 1, 1), timezones=st.just(UTC)
    )
)
def test_expiry_is_three_calendar_years_on_in_shanghai(issued: datetime) -> None:
    shanghai = timezone(timedelta(hours=8))  # no daylight saving since 1991
    local, later = issued.astimezone(shanghai), permit_expiry(issued).astimezone(shanghai)
    assert later.year == local.year + 3
    assert later.time() == local.time()
    if (local.month, local.day) == (2, 29):
        assert (later.month, later.day) == (2, 28)
    else:
        assert (later.month, later.day) == (local.month, local.day)


def test_permit_expires_at_must_be_three_years_after_issue() -> None:
    issued = permit()
    with pytest.raises(InvalidArgument, match="expires_at must be 3 calendar years after"):
        dataclasses.replace(issued, expires_at=issued.expires_at + timedelta(days=1))


def test_naive_datetimes_are_refused() -> None:
    naive = datetime(2026, 6, 1)
    with pytest.raises(InvalidArgument, match="issued_at is a naive datetime"):
        permit_expiry(naive)
    with pytest.raises(InvalidArgument, match="date is a naive datetime"):
        calendar_year(naive)
    with pytest.raises(InvalidArgument, match=r"export\.date is a naive datetime"):
        export(date=naive)
    with pytest.raises(InvalidArgument, match="filed_at is a naive datetime"):
        contract(filed_at=naive)
    with pytest.raises(InvalidArgument, match=r"declaration\.date is a naive datetime"):
        DeclaredExport(EXPORTER, naive, 1)


# ---------------------------------------------------------------------------
# Standard contracts (personal information, 100,000 to 999,999 or 1 to 9,999 sensitive)
# ---------------------------------------------------------------------------

CONTRACT_CASES: dict[str, tuple[Callable[[], list[ExportDocument]], str | None]] = {
    "a contract with the buyer for this year": (lambda: [contract()], None),
    "a contract filed the same instant": (lambda: [contract(filed_at=DATE)], None),
    "a contract filed the previous year for this year": (
        lambda: [contract(filed_at=at("2025-12-20T00:00:00Z"))],
        None,
    ),
    "a permit meets a contract requirement too": (lambda: [permit()], None),
    "no documents": (list, "no valid filed standard contract or export permit"),
    "a contract filed after the export": (
        lambda: [contract(filed_at=DATE + timedelta(seconds=1))],
        "was not filed yet",
    ),
    "last year's contract": (
        lambda: [contract(filed_at=at("2025-01-10T00:00:00Z"), year=2025)],
        "is for 2025",
    ),
    "a contract for another destination": (
        lambda: [contract(destination="SG")],
        "is for destination SG",
    ),
    "a contract with another recipient": (
        lambda: [contract(recipient="Other Ltd")],
        "is for recipient 'Other Ltd'",
    ),
    "another exporter's contract": (
        lambda: [contract(exporter=OTHER_EXPORTER)],
        "is for exporter",
    ),
    "an expired permit and no contract": (
        lambda: [permit(issued_at=at("2023-05-31T00:00:00Z"))],
        "expired at",
    ),
}


@pytest.mark.parametrize(("held", "problem"), CONTRACT_CASES.values(), ids=CONTRACT_CASES.keys())
def test_standard_contract(held: Callable[[], list[ExportDocument]], problem: str | None) -> None:
    decision = decide(export(individuals=150_000), documents=held())
    assert decision.mechanism is CONTRACT
    assert decision.satisfied is (problem is None)
    if problem is not None:
        assert problem in str(decision.reasons[-1])


def test_a_contract_is_preferred_to_a_permit() -> None:
    decision = decide(export(individuals=150_000), documents=[permit(), contract()])
    assert decision.document_id == "SC-2026-001"


def test_a_contract_does_not_meet_an_assessment_requirement() -> None:
    decision = decide(export(individuals=1_000_000), documents=[contract()])
    assert decision.mechanism is ASSESSMENT
    assert not decision.satisfied
    decision = decide(export(grade=IMPORTANT, individuals=10), documents=[contract()])
    assert not decision.satisfied


# ---------------------------------------------------------------------------
# The free-trade-zone negative list
# ---------------------------------------------------------------------------

ON_LIST_CASES: dict[str, tuple[str, frozenset[str], str | None]] = {
    "a listed code covers itself": ("health", frozenset({"health"}), "health"),
    "a listed code covers its dotted descendants": (
        "health.medical.x",
        frozenset({"health"}),
        "health",
    ),
    "health does not cover healthcare": ("healthcare", frozenset({"health"}), None),
    "a listed descendant does not cover its parent": (
        "health",
        frozenset({"health.medical"}),
        None,
    ),
    "the most specific listed code is named": (
        "health.medical.x",
        frozenset({"health", "health.medical"}),
        "health.medical",
    ),
    "an empty list lists nothing": ("health", frozenset(), None),
}


@pytest.mark.parametrize(
    ("category", "listed", "covering"), ON_LIST_CASES.values(), ids=ON_LIST_CASES.keys()
)
def test_on_negative_list(category: str, listed: frozenset[str], covering: str | None) -> None:
    assert on_negative_list(category, listed) == covering


NEGATIVE_LIST_CASES: dict[str, tuple[frozenset[str] | None, Mechanism]] = {
    "no list in the zone: the rules apply": (None, ASSESSMENT),
    "an empty list exempts everything": (frozenset(), EXEMPT),
    "no category on the list: exempt": (frozenset({"finance", "energy"}), EXEMPT),
    "healthcare on the list does not catch health": (frozenset({"healthcare"}), EXEMPT),
    "a listed subcategory does not catch the parent": (
        frozenset({"health.medical.inpatient"}),
        EXEMPT,
    ),
    "one category listed: the rules apply to the whole dataset": (
        frozenset({"transport"}),
        ASSESSMENT,
    ),
    "a category listed exactly: the rules apply": (frozenset({"health.medical"}), ASSESSMENT),
    "a parent of a category listed: the rules apply": (frozenset({"health"}), ASSESSMENT),
}


@pytest.mark.parametrize(
    ("listed", "expected"), NEGATIVE_LIST_CASES.values(), ids=NEGATIVE_LIST_CASES.keys()
)
def test_negative_list_exemption(listed: frozenset[str] | None, expected: Mechanism) -> None:
    """Important data with 2,000,000 individuals, two categories, and no documents."""
    request = export(
        grade=IMPORTANT,
        categories=("health.medical", "transport.road"),
        individuals=2_000_000,
        sensitive=50_000,
    )
    decision = decide(request, negative_list=listed)
    assert decision.mechanism is expected
    assert decision.satisfied is (expected is EXEMPT)
    assert (RULE_FTZ_NEGATIVE_LIST in decision.rules) is (listed is not None)
    if expected is EXEMPT:
        assert RULE_IMPORTANT_PERMIT not in decision.rules
        assert decision.counters_after.individuals == 2_000_000  # still counted
    else:
        assert RULE_IMPORTANT_PERMIT in decision.rules


# ---------------------------------------------------------------------------
# Core data: forbidden, whatever is held
# ---------------------------------------------------------------------------

CORE_CASES: dict[str, tuple[Callable[[], list[ExportDocument]], frozenset[str] | None, int]] = {
    "no documents": (list, None, 0),
    "with a valid permit for the dataset": (
        lambda: [permit(dataset_ids=(DATASET,))],
        None,
        0,
    ),
    "with a negative list that lists nothing": (list, frozenset(), 0),
    "with a permit and an exempting negative list": (lambda: [permit()], frozenset(), 0),
    "with a permit, a contract and personal information": (
        lambda: [permit(), contract()],
        None,
        150_000,
    ),
}


@pytest.mark.parametrize(
    ("held", "listed", "individuals"), CORE_CASES.values(), ids=CORE_CASES.keys()
)
def test_core_data_is_forbidden(
    held: Callable[[], list[ExportDocument]], listed: frozenset[str] | None, individuals: int
) -> None:
    request = export(grade=CORE, individuals=individuals)
    decision = decide(request, documents=held(), negative_list=listed)
    assert decision.mechanism is FORBIDDEN
    assert not decision.satisfied
    assert decision.document is None
    assert decision.rules == (RULE_EXPORT, RULE_CORE_FORBIDDEN)
    with pytest.raises(FailedPrecondition, match=RULE_CORE_FORBIDDEN):
        check_export(
            request,
            YearlyCount(EXPORTER, YEAR),
            cross_border=allowed(request),
            documents=held(),
            negative_list=listed,
        )


def test_core_data_to_a_mainland_buyer_is_no_export() -> None:
    """Customs has nothing to say; grading's no-core-data rule keeps core data off the market."""
    decision = decide(export(grade=CORE, buyer_country="cn"))
    assert decision.mechanism is NOT_EXPORT
    assert decision.rules == (RULE_EXPORT,)


@given(
    individuals=counts,
    sensitive=st.integers(0, 50_000),
    listed=st.none() | st.frozensets(st.sampled_from(["health", "finance", "transport"])),
    country=st.sampled_from(["HK", "MO", "TW", "US", "SG"]),
)
def test_core_is_always_forbidden(
    individuals: int, sensitive: int, listed: frozenset[str] | None, country: str
) -> None:
    request = export(
        grade=CORE, buyer_country=country, individuals=individuals, sensitive=sensitive
    )
    held: list[ExportDocument] = [
        permit(destination=country, recipient=None),
        contract(destination=country),
    ]
    decision = decide(request, documents=held, negative_list=listed)
    assert decision.mechanism is FORBIDDEN
    assert not decision.allowed


@given(
    before_i=counts,
    before_s=st.integers(0, 20_000),
    this_i=st.integers(0, 1_500_000),
    this_s=st.integers(0, 20_000),
)
def test_general_data_needs_what_the_yearly_thresholds_say(
    before_i: int, before_s: int, this_i: int, this_s: int
) -> None:
    decision = decide(export(individuals=this_i, sensitive=this_s), (before_i, before_s))
    if this_i or this_s:
        assert decision.mechanism is required_mechanism(before_i + this_i, before_s + this_s)
    else:
        assert decision.mechanism is EXEMPT
    assert decision.satisfied is (decision.mechanism is EXEMPT)


# ---------------------------------------------------------------------------
# The catalog's cross-border rules (DESIGN.md section 3)
# ---------------------------------------------------------------------------


def entry(code: str, rule: CrossBorderRule) -> CatalogEntry:
    """A national, tradable GENERAL entry without personal information."""
    return CatalogEntry(code, code, code, GENERAL, PersonalInfoClass.NONE, True, rule)


# A national child may state a looser rule than its parent (only provincial extensions are
# kept from loosening): the effective rule is still the strictest along the path.
RULES_CATALOG = Catalog.from_entries(
    7,
    [
        entry("geo", FORBID),
        entry("geo.open", ALLOWED),
        entry("health", ALLOWED),
        entry("health.medical", ASSESSED),
        entry("health.medical.inpatient", ALLOWED),
        entry("transport", ALLOWED),
        entry("transport.road", ALLOWED),
    ],
)

RESOLUTION_CASES: dict[str, tuple[tuple[str, ...], dict[str, CrossBorderRule]]] = {
    "an allowed sector": (("transport",), {"transport": ALLOWED}),
    "allowed under an allowed parent": (("transport.road",), {"transport.road": ALLOWED}),
    "an entry's own assessment rule": (("health.medical",), {"health.medical": ASSESSED}),
    "a looser child inherits its parent's assessment": (
        ("health.medical.inpatient",),
        {"health.medical.inpatient": ASSESSED},
    ),
    "a looser child inherits its sector's prohibition": (("geo.open",), {"geo.open": FORBID}),
    "each category resolved on its own": (
        ("transport.road", "health.medical", "geo"),
        {"transport.road": ALLOWED, "health.medical": ASSESSED, "geo": FORBID},
    ),
}


@pytest.mark.parametrize(
    ("categories", "expected"), RESOLUTION_CASES.values(), ids=RESOLUTION_CASES.keys()
)
def test_cross_border_rules_take_the_strictest_along_the_path(
    categories: tuple[str, ...], expected: dict[str, CrossBorderRule]
) -> None:
    assert cross_border_rules(RULES_CATALOG, categories) == expected


def test_a_category_missing_from_the_catalog_in_force_is_refused() -> None:
    with pytest.raises(FailedPrecondition, match=r"category geo\.maps is not in catalog version 7"):
        cross_border_rules(RULES_CATALOG, ["transport", "geo.maps"])
    with pytest.raises(InvalidArgument, match="category code"):
        cross_border_rules(RULES_CATALOG, ["Geo"])


def test_the_seed_catalog_forbids_maps_and_assesses_orders() -> None:
    """The national seed: geo.mapping FORBIDDEN, commerce.ecommerce.orders ASSESSMENT_REQUIRED."""
    from registry.seed_catalog import national_catalog

    rules = cross_border_rules(national_catalog(), ["geo.mapping", "commerce.ecommerce.orders"])
    assert rules == {"geo.mapping": FORBID, "commerce.ecommerce.orders": ASSESSED}


def maps_permit() -> ExportPermit:
    """A valid permit naming the dataset itself (and the maps category)."""
    return permit(dataset_ids=(DATASET,), categories=("geo",))


@dataclasses.dataclass(frozen=True)
class CatalogCase:
    """One export under the catalog's rules and what customs decides."""

    rules: dict[str, CrossBorderRule]
    mechanism: Mechanism
    satisfied: bool
    rule: str | None  # the deciding rule named in the reasons (None: no catalog rule fires)
    detail: str = ""  # a fragment of the explanation
    held: Callable[[], list[ExportDocument]] = list
    listed: frozenset[str] | None = None
    changes: dict[str, Any] = dataclasses.field(default_factory=dict)


MED = "health.medical"
CATALOG_CASES: dict[str, CatalogCase] = {
    "allowed: only the other rules (here: exempt)": CatalogCase({MED: ALLOWED}, EXEMPT, True, None),
    "allowed important data still needs its permit": CatalogCase(
        {MED: ALLOWED},
        ASSESSMENT,
        False,
        RULE_IMPORTANT_PERMIT,
        "no valid export permit",
        changes={"grade": IMPORTANT},
    ),
    "forbidden: refused, naming the category": CatalogCase(
        {"geo.mapping": FORBID},
        FORBIDDEN,
        False,
        RULE_CATALOG_FORBIDDEN,
        "the catalog forbids exporting category geo.mapping",
        changes={"categories": ("geo.mapping",)},
    ),
    "forbidden even with a valid permit for the dataset": CatalogCase(
        {"geo.mapping": FORBID},
        FORBIDDEN,
        False,
        RULE_CATALOG_FORBIDDEN,
        "ignoring 1 document(s) held",
        held=lambda: [maps_permit()],
        changes={"categories": ("geo.mapping",), "grade": IMPORTANT},
    ),
    "forbidden even under an empty negative list": CatalogCase(
        {"geo.mapping": FORBID},
        FORBIDDEN,
        False,
        RULE_CATALOG_FORBIDDEN,
        "ignoring 1 document(s) held and the free-trade-zone negative list",
        held=lambda: [maps_permit()],
        listed=frozenset(),
        changes={"categories": ("geo.mapping",)},
    ),
    "forbidden when it is not on the zone's negative list": CatalogCase(
        {"geo.mapping": FORBID},
        FORBIDDEN,
        False,
        RULE_CATALOG_FORBIDDEN,
        "geo.mapping",
        listed=frozenset({"finance"}),
        changes={"categories": ("geo.mapping",)},
    ),
    "one forbidden category of two refuses the whole dataset": CatalogCase(
        {MED: ASSESSED, "geo.mapping": FORBID},
        FORBIDDEN,
        False,
        RULE_CATALOG_FORBIDDEN,
        "category geo.mapping (cross-border rule forbidden)",
        held=lambda: [maps_permit()],
        changes={"categories": (MED, "geo.mapping")},
    ),
    "assessment with a valid permit": CatalogCase(
        {MED: ASSESSED},
        ASSESSMENT,
        True,
        RULE_CATALOG_ASSESSMENT,
        "satisfied by export permit EP-2025-001",
        held=lambda: [permit()],
    ),
    "assessment with a valid permit naming the dataset": CatalogCase(
        {MED: ASSESSED},
        ASSESSMENT,
        True,
        RULE_CATALOG_ASSESSMENT,
        "satisfied by export permit",
        held=lambda: [permit(categories=(), dataset_ids=(DATASET,))],
    ),
    "assessment with an expired permit": CatalogCase(
        {MED: ASSESSED},
        ASSESSMENT,
        False,
        RULE_CATALOG_ASSESSMENT,
        "expired at 2026-05-01T00:00:00Z",
        held=lambda: [permit(issued_at=at("2023-05-01T00:00:00Z"))],
    ),
    "assessment with a revoked permit": CatalogCase(
        {MED: ASSESSED},
        ASSESSMENT,
        False,
        RULE_CATALOG_ASSESSMENT,
        "permit EP-2025-001 is revoked",
        held=lambda: [permit(revoked=True)],
    ),
    "assessment without a permit": CatalogCase(
        {MED: ASSESSED},
        ASSESSMENT,
        False,
        RULE_CATALOG_ASSESSMENT,
        "no valid export permit covers this export",
    ),
    "assessment with a permit for another destination": CatalogCase(
        {MED: ASSESSED},
        ASSESSMENT,
        False,
        RULE_CATALOG_ASSESSMENT,
        "is for destination US",
        held=lambda: [permit(destination="US")],
    ),
    "assessment: a standard contract is not enough": CatalogCase(
        {MED: ASSESSED},
        ASSESSMENT,
        False,
        RULE_CATALOG_ASSESSMENT,
        "no valid export permit",
        held=lambda: [contract()],
    ),
    "assessment and 150,000 individuals: one permit covers both": CatalogCase(
        {MED: ASSESSED},
        ASSESSMENT,
        True,
        RULE_PI_STANDARD_CONTRACT,
        "satisfied by export permit",
        held=lambda: [contract(), permit()],
        changes={"individuals": 150_000},
    ),
    "assessment and 150,000 individuals: the contract alone is refused": CatalogCase(
        {MED: ASSESSED},
        ASSESSMENT,
        False,
        RULE_CATALOG_ASSESSMENT,
        "no valid export permit",
        held=lambda: [contract()],
        changes={"individuals": 150_000},
    ),
    "allowed and 150,000 individuals: the contract suffices": CatalogCase(
        {MED: ALLOWED},
        CONTRACT,
        True,
        RULE_PI_STANDARD_CONTRACT,
        "satisfied by standard contract SC-2026-001",
        held=lambda: [contract()],
        changes={"individuals": 150_000},
    ),
    "allowed and 1,200,000 individuals: the thresholds need a permit": CatalogCase(
        {MED: ALLOWED},
        ASSESSMENT,
        False,
        RULE_PI_ASSESSMENT,
        "no valid export permit",
        held=lambda: [contract()],
        changes={"individuals": 1_200_000},
    ),
    "assessment, not on the zone's negative list: exempt": CatalogCase(
        {MED: ASSESSED},
        EXEMPT,
        True,
        RULE_FTZ_NEGATIVE_LIST,
        "exempt from the important-data, catalog-assessment and personal-information rules",
        listed=frozenset({"finance"}),
    ),
    "assessment, on the zone's negative list: the permit is needed": CatalogCase(
        {MED: ASSESSED},
        ASSESSMENT,
        False,
        RULE_CATALOG_ASSESSMENT,
        "no valid export permit",
        listed=frozenset({"health"}),
    ),
    "a mainland buyer: a forbidden category makes no export": CatalogCase(
        {"geo.mapping": FORBID},
        NOT_EXPORT,
        True,
        None,
        "not an export",
        changes={"categories": ("geo.mapping",), "buyer_country": "CN"},
    ),
    "core data in a forbidden category: the core rule decides": CatalogCase(
        {"geo.mapping": FORBID},
        FORBIDDEN,
        False,
        RULE_CORE_FORBIDDEN,
        "core data",
        changes={"categories": ("geo.mapping",), "grade": CORE},
    ),
}


@pytest.mark.parametrize("case", CATALOG_CASES.values(), ids=CATALOG_CASES.keys())
def test_catalog_cross_border_rules(case: CatalogCase) -> None:
    request = export(**case.changes)
    decision = decide(
        request, documents=case.held(), negative_list=case.listed, cross_border=case.rules
    )
    assert decision.mechanism is case.mechanism
    assert decision.satisfied is case.satisfied
    catalog_rules = {RULE_CATALOG_FORBIDDEN, RULE_CATALOG_ASSESSMENT} & set(decision.rules)
    if case.rule is None:
        assert not catalog_rules
    else:
        assert case.rule in decision.rules
    assert case.detail in decision.explain()
    if case.satisfied:
        check_export(
            request,
            YearlyCount(EXPORTER, YEAR),
            cross_border=case.rules,
            documents=case.held(),
            negative_list=case.listed,
        )
    else:
        with pytest.raises(FailedPrecondition, match=f"refused: .*rule {case.rule}"):
            check_export(
                request,
                YearlyCount(EXPORTER, YEAR),
                cross_border=case.rules,
                documents=case.held(),
                negative_list=case.listed,
            )


def test_a_mainland_trade_needs_no_cross_border_rules() -> None:
    """No export, no rule to read: a category unknown to the catalog in force does not matter."""
    decision = decide(export(buyer_country="CN", categories=("geo.mapping",)), cross_border={})
    assert decision.mechanism is NOT_EXPORT
    assert decision.satisfied


def test_a_forbidden_category_is_refused_before_anything_else() -> None:
    """Nothing but the export and the prohibition is considered: no permit, no list, no counts."""
    request = export(categories=("geo.mapping",), individuals=150_000)
    decision = decide(
        request,
        documents=[maps_permit(), contract()],
        negative_list=frozenset(),
        cross_border={"geo.mapping": FORBID},
    )
    assert decision.rules == (RULE_EXPORT, RULE_CATALOG_FORBIDDEN)
    assert decision.document is None
    assert decision.counters_after.individuals == 150_000  # refused, still what it would count


@given(
    individuals=counts,
    listed=st.none() | st.frozensets(st.sampled_from(["geo", "health", "finance"])),
    grade=st.sampled_from([GENERAL, IMPORTANT]),
    country=st.sampled_from(["HK", "MO", "TW", "US", "SG"]),
)
def test_a_forbidden_category_never_leaves(
    individuals: int, listed: frozenset[str] | None, grade: Grade, country: str
) -> None:
    request = export(
        grade=grade, categories=(MED, "geo.mapping"), buyer_country=country, individuals=individuals
    )
    held: list[ExportDocument] = [
        permit(destination=country, recipient=None, dataset_ids=(DATASET,)),
        contract(destination=country),
    ]
    decision = decide(
        request,
        documents=held,
        negative_list=listed,
        cross_border={MED: ASSESSED, "geo.mapping": FORBID},
    )
    assert decision.mechanism is FORBIDDEN
    assert not decision.allowed


# ---------------------------------------------------------------------------
# Decisions and field checks
# ---------------------------------------------------------------------------


def test_a_mainland_trade_counts_nothing() -> None:
    decision = decide(export(buyer_country="CN", individuals=5_000_000), (10, 1))
    assert decision.counters_after == YearlyCount(EXPORTER, YEAR, 10, 1)
    assert decision.document_id is None


def test_important_data_with_personal_info_needs_one_permit() -> None:
    decision = decide(export(grade=IMPORTANT, individuals=150_000), documents=[permit()])
    assert decision.mechanism is ASSESSMENT
    assert decision.satisfied
    assert decision.rules == (
        RULE_EXPORT,
        RULE_IMPORTANT_PERMIT,
        RULE_PI_STANDARD_CONTRACT,
        RULE_DOCUMENTS,
    )
    text = decision.explain()
    assert text.startswith("assessment: allowed")
    assert "rule important-data-permit: dataset 440100-2026-0000123-8 is important data" in text


def test_inputs_are_normalized() -> None:
    request = export(
        exporter=EXPORTER.lower(),
        dataset_id=DATASET.lower(),
        categories=["health.medical"],
        grade=2,
        buyer_country="hk",
        recipient=f"  {BUYER} ",
        date=at("2026-06-01T08:00:00+08:00"),
    )
    assert request.exporter == EXPORTER
    assert request.grade is IMPORTANT
    assert request.categories == ("health.medical",)
    assert request.buyer_country == "HK"
    assert request.recipient == BUYER
    assert request.date == DATE and request.date.tzinfo is UTC
    assert request.declaration() == DeclaredExport(EXPORTER, DATE)
    assert normalize_negative_list(["health", "health"]) == frozenset({"health"})
    assert normalize_negative_list(None) is None


INVALID_CASES: dict[str, tuple[Callable[[], object], str]] = {
    "malformed exporter credit code": (
        lambda: export(exporter="91440100MA5G00019X"),
        r"export\.exporter: credit code",
    ),
    "malformed dataset id": (lambda: export(dataset_id="440100-2026-1"), r"export\.dataset_id"),
    "malformed category": (lambda: export(categories=("Health",)), r"export\.categories"),
    "no categories": (lambda: export(categories=()), "at least one category"),
    "a category twice": (lambda: export(categories=("a", "a")), "listed twice"),
    "categories as one string": (lambda: export(categories="health"), "must be a sequence"),
    "not a grade": (lambda: export(grade=7), r"export\.grade"),
    "a bool as a count": (lambda: export(individuals=True), r"export\.individuals"),
    "negative sensitive count": (lambda: export(sensitive=-1), r"export\.sensitive"),
    "empty recipient": (lambda: export(recipient=" "), r"export\.recipient"),
    "a permit covering nothing": (
        lambda: permit(categories=()),
        "covers no dataset_ids and no categories",
    ),
    "a permit with an empty purpose": (lambda: permit(purpose=""), "purpose"),
    "a permit with an empty id": (lambda: permit(permit_id=""), r"permit\.permit_id"),
    "a permit with a bad dataset id": (lambda: permit(dataset_ids=("x",)), "dataset_ids"),
    "a contract for a year before its filing": (
        lambda: contract(year=2025),
        "year 2025 is before the year it was filed",
    ),
    "a bad negative list entry": (
        lambda: decide(export(), negative_list={"Health"}),
        "negative_list entry",
    ),
    "a negative list given as one string": (
        lambda: decide(export(), negative_list="health"),
        "negative_list must be a sequence",
    ),
    "something other than a document": (
        lambda: decide(export(), documents=["EP-1"]),  # type: ignore[list-item]
        "documents must be ExportPermit or StandardContract",
    ),
    "a category without its cross-border rule": (
        lambda: decide(export(categories=(MED, "geo")), cross_border={MED: ALLOWED}),
        r"cross_border: category geo of dataset .* needs its CrossBorderRule",
    ),
    "a cross-border rule given as text": (
        lambda: decide(export(), cross_border={MED: "forbidden"}),  # type: ignore[dict-item]
        "needs its CrossBorderRule from the catalog in force, got 'forbidden'",
    ),
    "cross-border rules that are no mapping": (
        lambda: decide_export(
            export(),
            YearlyCount(EXPORTER, YEAR),
            cross_border=[ALLOWED],  # type: ignore[arg-type]
        ),
        "cross_border must map each category",
    ),
    "a counter of a negative count": (
        lambda: YearlyCount(EXPORTER, YEAR, -1),
        r"counter\.individuals",
    ),
}


@pytest.mark.parametrize(("build", "message"), INVALID_CASES.values(), ids=INVALID_CASES.keys())
def test_invalid_inputs_are_refused(build: Callable[[], object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        build()
