"""Tests of provex.ids: dataset ids, credit codes, region codes, node ids."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provex.errors import InvalidArgument
from provex.ids import (
    CREDIT_CODE_CHARSET,
    REGIONS,
    REGISTRATION_AUTHORITIES,
    CreditCode,
    DatasetId,
    credit_code_check_char,
    is_known_region,
    is_valid_node_id,
    iso7064_mod11_2,
    mainland_provinces,
    organisation_code_check_char,
    province_of,
    region,
    validate_node_id,
)

# --------------------------------------------------------------------------
# ISO 7064 MOD 11-2
# --------------------------------------------------------------------------

# Public resident identity numbers (GB 11643 examples): the algorithm is the same.
MOD11_2_CASES = {
    "GB 11643 example ending in X": ("11010519491231002", "X"),
    "resident id example ending in 4": ("44052418800101001", "4"),
    "dataset id of DESIGN.md": ("44010020260000123", "8"),
    "all zeros": ("00000000000000000", "1"),
}


@pytest.mark.parametrize("digits, check", MOD11_2_CASES.values(), ids=MOD11_2_CASES.keys())
def test_mod11_2_check_char(digits: str, check: str) -> None:
    assert iso7064_mod11_2(digits) == check


@pytest.mark.parametrize("digits", ["", "1234a", "１２３"], ids=["empty", "letter", "full-width"])
def test_mod11_2_refuses_non_digits(digits: str) -> None:
    with pytest.raises(InvalidArgument):
        iso7064_mod11_2(digits)


# --------------------------------------------------------------------------
# Dataset ids
# --------------------------------------------------------------------------

DATASET_ID_CASES = {
    "design example": ("440100-2026-0000123-8", DatasetId("440100", 2026, 123)),
    "lower-case x": ("110000-2026-0000009-x", DatasetId("110000", 2026, 9)),
    "surrounding white space": ("  310000-2030-9999999-6\n", DatasetId("310000", 2030, 9_999_999)),
    "province-level region": ("520000-2000-0000001-8", DatasetId("520000", 2000, 1)),
    "last year": ("520100-2999-0000001-1", DatasetId("520100", 2999, 1)),
}


@pytest.mark.parametrize("text, expected", DATASET_ID_CASES.values(), ids=DATASET_ID_CASES.keys())
def test_dataset_id_parse(text: str, expected: DatasetId) -> None:
    parsed = DatasetId.parse(text)
    assert parsed == expected
    assert str(parsed) == text.strip().upper()
    assert DatasetId.is_valid(text)
    assert DatasetId.parse(str(parsed)) == parsed


def test_dataset_id_formatting_and_check_char() -> None:
    dataset_id = DatasetId("440100", 2026, 123)
    assert str(dataset_id) == "440100-2026-0000123-8"
    assert dataset_id.check_char == "8"
    assert dataset_id.digits == "44010020260000123"


def test_dataset_id_upper_case_x_when_formatted() -> None:
    text = str(DatasetId("110000", 2026, 9))
    assert text.endswith("-X")


DATASET_ID_BAD = {
    "empty": ("", "malformed"),
    "blank": ("   ", "malformed"),
    "no dashes": ("44010020260000123 8", "malformed"),
    "region too short": ("44010-2026-0000123-8", "malformed"),
    "year two digits": ("440100-26-0000123-8", "malformed"),
    "serial not padded": ("440100-2026-123-8", "malformed"),
    "serial too long": ("440100-2026-00000123-8", "malformed"),
    "missing check": ("440100-2026-0000123", "malformed"),
    "check letter not X": ("440100-2026-0000123-A", "malformed"),
    "two check chars": ("440100-2026-0000123-88", "malformed"),
    "inner space": ("440100 -2026-0000123-8", "malformed"),
    "underscore separators": ("440100_2026_0000123_8", "malformed"),
    "full-width digits": ("４40100-2026-0000123-8", "malformed"),
    "trailing garbage": ("440100-2026-0000123-8;", "malformed"),
    "wrong check char": ("440100-2026-0000123-3", "check character is 3, expected 8: typo?"),
    "unknown region": (f"999900-2026-0000001-{iso7064_mod11_2('99990020260000001')}", "999900"),
    "Hong Kong": (f"810000-2026-0000001-{iso7064_mod11_2('81000020260000001')}", "mainland"),
    "year 1999": (f"440100-1999-0000001-{iso7064_mod11_2('44010019990000001')}", "year"),
    "serial zero": (f"440100-2026-0000000-{iso7064_mod11_2('44010020260000000')}", "serial"),
}


@pytest.mark.parametrize("text, message", DATASET_ID_BAD.values(), ids=DATASET_ID_BAD.keys())
def test_dataset_id_refuses(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        DatasetId.parse(text)
    assert not DatasetId.is_valid(text)


DATASET_ID_BAD_FIELDS = {
    "region not digits": (("44010a", 2026, 1), "region"),
    "region int": ((440100, 2026, 1), "region"),
    "year 3000": (("440100", 3000, 1), "year"),
    "year bool": (("440100", True, 1), "year"),
    "serial negative": (("440100", 2026, -1), "serial"),
    "serial too large": (("440100", 2026, 10_000_000), "serial"),
}


@pytest.mark.parametrize(
    "fields, message", DATASET_ID_BAD_FIELDS.values(), ids=DATASET_ID_BAD_FIELDS.keys()
)
def test_dataset_id_constructor_validates(fields: tuple[object, ...], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        DatasetId(*fields)  # type: ignore[arg-type]


def test_dataset_id_is_valid_refuses_non_strings() -> None:
    assert not DatasetId.is_valid(None)
    assert not DatasetId.is_valid(44010020260000123)


def test_dataset_ids_order_by_region_year_serial() -> None:
    ids = [DatasetId("440300", 2026, 1), DatasetId("440100", 2027, 1), DatasetId("440100", 2026, 2)]
    assert sorted(ids) == [ids[2], ids[1], ids[0]]


MAINLAND_CODES = sorted(code for code, r in REGIONS.items() if r.mainland)
dataset_ids = st.builds(
    DatasetId,
    st.sampled_from(MAINLAND_CODES),
    st.integers(2000, 2999),
    st.integers(1, 9_999_999),
)
# Everything a typist might hit instead: digits, X/x, separators, other letters.
typo_chars = st.sampled_from("0123456789Xx-_ ./AaBOoIl")


@given(dataset_ids, st.data())
def test_every_single_character_typo_of_a_dataset_id_is_detected(
    dataset_id: DatasetId, data: st.DataObject
) -> None:
    text = str(dataset_id)
    position = data.draw(st.integers(0, len(text) - 1))
    replacement = data.draw(typo_chars)
    typo = text[:position] + replacement + text[position + 1 :]
    if typo.upper() == text:  # same id, only the case of X changed
        assert DatasetId.parse(typo) == dataset_id
    else:
        assert not DatasetId.is_valid(typo)


@given(dataset_ids, st.data())
def test_every_adjacent_transposition_in_a_dataset_id_is_detected(
    dataset_id: DatasetId, data: st.DataObject
) -> None:
    text = str(dataset_id)
    position = data.draw(st.integers(0, len(text) - 2))
    swapped = text[:position] + text[position + 1] + text[position] + text[position + 2 :]
    if swapped != text:
        assert not DatasetId.is_valid(swapped)


def test_every_single_digit_substitution_exhaustively() -> None:
    text = "440100-2026-0000123-8"
    for position, original in enumerate(text):
        for replacement in "0123456789X":
            if replacement != original:
                typo = text[:position] + replacement + text[position + 1 :]
                assert not DatasetId.is_valid(typo), typo


# --------------------------------------------------------------------------
# Unified Social Credit Codes
# --------------------------------------------------------------------------

# Real, published codes (the GB 32100 textbook example and codes collected
# online for python-stdnum's test suite), covering enterprises, individual
# businesses, a public institution, X in the organisation code and both check
# characters, and the MA-series organisation codes assigned since 2015.
REAL_CREDIT_CODES = {
    "classic example (Fuzhou)": ("91350100M000100Y43", "9", "1", "350100", "M000100Y4"),
    "Beijing enterprise": ("91110000600037341L", "9", "1", "110000", "600037341"),
    "Beijing enterprise 2": ("91110000710926094P", "9", "1", "110000", "710926094"),
    "Tianjin public institution": ("121200004013590816", "1", "2", "120000", "401359081"),
    "Shanghai enterprise": ("91310000631696382C", "9", "1", "310000", "631696382"),
    "Shanghai MA-series": ("91310115MA1K3BTP2B", "9", "1", "310115", "MA1K3BTP2"),
    "X as organisation check": ("9131012056010553X5", "9", "1", "310120", "56010553X"),
    "Shenzhen enterprise": ("91440300568520498A", "9", "1", "440300", "568520498"),
    "Shenzhen X org check": ("9144030071526726XG", "9", "1", "440300", "71526726X"),
    "digit check 0": ("91620105L015101280", "9", "1", "620105", "L01510128"),
    "individual business": ("92340602MA2PBMEM24", "9", "2", "340602", "MA2PBMEM2"),
    "individual business X check": ("92340602MA2PEL453X", "9", "2", "340602", "MA2PEL453"),
    "Wuhan region MA": ("91420684MA4927PJ7B", "9", "1", "420684", "MA4927PJ7"),
}


@pytest.mark.parametrize(
    "text, authority, org_type, region_code, org_code",
    REAL_CREDIT_CODES.values(),
    ids=REAL_CREDIT_CODES.keys(),
)
def test_real_credit_codes(
    text: str, authority: str, org_type: str, region_code: str, org_code: str
) -> None:
    code = CreditCode.parse(text)
    assert str(code) == text
    assert code.registration_authority == authority
    assert code.organisation_type == org_type
    assert code.region == region_code
    assert code.organisation_code == org_code
    assert code.check_char == text[-1]
    assert CreditCode.is_valid(text)
    assert CreditCode.is_valid(text.lower())


def test_credit_code_names_its_authority_and_type() -> None:
    code = CreditCode.parse("92340602MA2PBMEM24")
    assert code.authority.name_zh == "工商"
    assert code.org_type.name_zh == "个体工商户"


def test_credit_code_parse_normalizes_case_and_white_space() -> None:
    assert CreditCode.parse("  91350100m000100y43 ").code == "91350100M000100Y43"


def test_credit_code_constructor_is_strict() -> None:
    with pytest.raises(InvalidArgument):
        CreditCode("91350100m000100y43")


def test_registration_authority_table() -> None:
    types = {a: "".join(auth.types) for a, auth in REGISTRATION_AUTHORITIES.items()}
    assert types == {
        "1": "1239",
        "2": "19",
        "3": "123459",
        "4": "19",
        "5": "1239",
        "6": "129",
        "7": "129",
        "8": "19",
        "9": "123",
        "A": "19",
        "N": "1239",
        "Y": "1",
    }


def _recheck(first17: str) -> str:
    """A credit code from its first 17 characters, with a correct check character."""
    return first17 + credit_code_check_char(first17)


CREDIT_CODE_BAD = {
    "empty": ("", "18 characters"),
    "17 characters": ("91350100M000100Y4", "18 characters"),
    "19 characters": ("91350100M000100Y433", "18 characters"),
    "letter I": ("91350100I000100Y43", "character 9 'I'"),
    "letter O": ("91350100O000100Y43", "'O'"),
    "letter Z": ("91350100Z000100Y43", "'Z'"),
    "letter S": ("91350100S000100Y43", "'S'"),
    "letter V": ("91350100V000100Y43", "'V'"),
    "inner space": ("913501 00M000100Y4", "' '"),
    "dash": ("91350100-M000100Y4", "'-'"),
    "letter in region": (_recheck("913501A0M000100Y4"), "6-digit region"),
    "wrong check": ("91350100M000100Y44", "check character is 4, expected 3: typo?"),
    "unknown authority B": (_recheck("B1350100M000100Y4"), "registration authority"),
    "unknown authority 0": (_recheck("01350100M000100Y4"), "registration authority"),
    "industry type 4": (_recheck("94350100M000100Y4"), "organisation type"),
    "civil affairs type 4": (_recheck("54350100M000100Y4"), "organisation type"),
    "other type 9": (_recheck("Y9350100M000100Y4"), "organisation type"),
    "organisation check": (_recheck("91350100M000100Y5"), "GB 11714"),
}


@pytest.mark.parametrize("text, message", CREDIT_CODE_BAD.values(), ids=CREDIT_CODE_BAD.keys())
def test_credit_code_refuses(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        CreditCode.parse(text)
    assert not CreditCode.is_valid(text)


def test_credit_code_is_valid_refuses_non_strings() -> None:
    assert not CreditCode.is_valid(None)
    with pytest.raises(InvalidArgument):
        CreditCode.parse(91350100)  # type: ignore[arg-type]


ORG_CODE_CASES = {
    "classic M000100Y": ("M000100Y", "4"),
    "check X (10)": ("56010553", "X"),
    "check 0 (11)": ("MA2PBMN5", "0"),
    "digits only": ("60003734", "1"),
}


@pytest.mark.parametrize("body, check", ORG_CODE_CASES.values(), ids=ORG_CODE_CASES.keys())
def test_organisation_code_check_char(body: str, check: str) -> None:
    assert organisation_code_check_char(body) == check


def test_organisation_code_check_zero_when_sum_divisible_by_11() -> None:
    assert organisation_code_check_char("00000000") == "0"


AUTHORITY_TYPES = sorted((a, t) for a, auth in REGISTRATION_AUTHORITIES.items() for t in auth.types)
credit_codes = st.builds(
    lambda at, region_code, body: CreditCode.from_parts(at[0], at[1], region_code, body),
    st.sampled_from(AUTHORITY_TYPES),
    st.from_regex(r"[0-9]{6}", fullmatch=True),
    st.text(alphabet=CREDIT_CODE_CHARSET, min_size=8, max_size=8),
)


@given(credit_codes, st.data())
def test_every_single_character_typo_of_a_credit_code_is_detected(
    code: CreditCode, data: st.DataObject
) -> None:
    text = code.code
    position = data.draw(st.integers(0, 17))
    replacement = data.draw(st.sampled_from(CREDIT_CODE_CHARSET + "IOZSV -"))
    if replacement != text[position]:
        typo = text[:position] + replacement + text[position + 1 :]
        assert not CreditCode.is_valid(typo)


@given(credit_codes)
def test_generated_credit_codes_round_trip(code: CreditCode) -> None:
    assert CreditCode.parse(str(code)) == code
    assert CreditCode.parse(str(code).lower()) == code


# --------------------------------------------------------------------------
# Regions
# --------------------------------------------------------------------------


def test_exactly_31_mainland_provinces() -> None:
    provinces = mainland_provinces()
    assert len(provinces) == 31
    assert provinces[0].code == "110000"
    assert provinces[-1].code == "650000"
    assert all(p.code.endswith("0000") and p.province == p.code for p in provinces)
    assert len({p.code[:2] for p in provinces}) == 31


def test_non_mainland_divisions_are_flagged() -> None:
    outside = {code for code, r in REGIONS.items() if not r.mainland}
    assert outside == {"710000", "810000", "820000"}


REGION_CASES = {
    "Guangzhou": ("440100", "广州市", "Guangzhou", "440000"),
    "Shenzhen": ("440300", "深圳市", "Shenzhen", "440000"),
    "Shanghai (municipality)": ("310000", "上海市", "Shanghai", "310000"),
    "Hangzhou": ("330100", "杭州市", "Hangzhou", "330000"),
    "Chengdu": ("510100", "成都市", "Chengdu", "510000"),
    "Chongqing": ("500000", "重庆市", "Chongqing", "500000"),
    "Wuhan": ("420100", "武汉市", "Wuhan", "420000"),
    "Nanjing": ("320100", "南京市", "Nanjing", "320000"),
    "Suzhou": ("320500", "苏州市", "Suzhou", "320000"),
    "Qingdao": ("370200", "青岛市", "Qingdao", "370000"),
    "Xiamen": ("350200", "厦门市", "Xiamen", "350000"),
    "Tianjin": ("120000", "天津市", "Tianjin", "120000"),
    "Beijing": ("110000", "北京市", "Beijing", "110000"),
    "Dalian": ("210200", "大连市", "Dalian", "210000"),
    "Xi'an": ("610100", "西安市", "Xi'an", "610000"),
    "Guiyang": ("520100", "贵阳市", "Guiyang", "520000"),
    "Xinjiang": ("650000", "新疆维吾尔自治区", "Xinjiang", "650000"),
    "Hong Kong": ("810000", "香港特别行政区", "Hong Kong", "810000"),
}


@pytest.mark.parametrize(
    "code, name_zh, name_en, province", REGION_CASES.values(), ids=REGION_CASES.keys()
)
def test_region_table(code: str, name_zh: str, name_en: str, province: str) -> None:
    found = region(code)
    assert (found.code, found.name_zh, found.name_en, found.province) == (
        code,
        name_zh,
        name_en,
        province,
    )
    assert is_known_region(code)
    assert province_of(code) == province


def test_every_region_belongs_to_a_known_province() -> None:
    for code, r in REGIONS.items():
        assert r.province == code[:2] + "0000"
        assert REGIONS[r.province].is_province
        assert r.mainland == REGIONS[r.province].mainland


REGION_BAD = {
    "unknown": "440500",
    "five digits": "44010",
    "letters": "44010A",
    "full-width": "４40100",
    "empty": "",
}


@pytest.mark.parametrize("code", REGION_BAD.values(), ids=REGION_BAD.keys())
def test_region_refuses(code: str) -> None:
    with pytest.raises(InvalidArgument, match="region code"):
        region(code)
    assert not is_known_region(code)


def test_province_of_unlisted_city() -> None:
    assert province_of("440500") == "440000"


@pytest.mark.parametrize(
    "code", ["990000", "4401", "abcdef"], ids=["no province", "short", "alpha"]
)
def test_province_of_refuses(code: str) -> None:
    with pytest.raises(InvalidArgument):
        province_of(code)


def test_region_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        REGIONS["999999"] = REGIONS["110000"]  # type: ignore[index]


# --------------------------------------------------------------------------
# Node ids
# --------------------------------------------------------------------------

NODE_IDS_GOOD = {
    "Guangzhou": "gd-gzde",
    "Shenzhen": "gd-szde",
    "Shanghai": "sh-sde",
    "three chars": "abc",
    "digits": "gz2",
    "63 chars": "a" * 63,
    "several hyphens": "a-b-c-1",
}


@pytest.mark.parametrize("text", NODE_IDS_GOOD.values(), ids=NODE_IDS_GOOD.keys())
def test_node_id_accepts(text: str) -> None:
    assert validate_node_id(text) == text
    assert is_valid_node_id(text)


NODE_IDS_BAD = {
    "empty": ("", "3..63"),
    "two chars": ("ab", "3..63"),
    "64 chars": ("a" * 64, "3..63"),
    "upper case": ("GD-GZDE", "lower-case"),
    "underscore": ("gd_gzde", "'_'"),
    "dot": ("gd.gzde", "'.'"),
    "space": ("gd gzde", "' '"),
    "non-ASCII letter": ("gd-gzdé", "'é'"),
    "leading digit": ("1gd", "start with a letter"),
    "leading hyphen": ("-gd", "start with a letter"),
    "trailing hyphen": ("gd-", "end with a hyphen"),
    "double hyphen": ("gd--gzde", "two hyphens"),
    "surrounding space": (" gd-gzde", "' '"),
}


@pytest.mark.parametrize("text, message", NODE_IDS_BAD.values(), ids=NODE_IDS_BAD.keys())
def test_node_id_refuses(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        validate_node_id(text)
    assert not is_valid_node_id(text)


def test_node_id_refuses_non_strings() -> None:
    assert not is_valid_node_id(None)
    with pytest.raises(InvalidArgument):
        validate_node_id(42)  # type: ignore[arg-type]
