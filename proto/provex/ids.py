"""Identifiers every party must parse and check the same way.

* :class:`DatasetId`: the registry's dataset identifier
  ``<region>-<year>-<serial>-<check>``, e.g. ``440100-2026-0000123-8``, whose
  check character is ISO 7064 MOD 11-2 (as in PRC resident identity numbers),
  computed over the 17 digits of region, year and serial.
* :class:`CreditCode`: the 18-character Unified Social Credit Code of an
  organisation (GB 32100-2015 with its 2016 amendment), including the check
  of its embedded 9-character organisation code (GB 11714-1997).
* :class:`Region` and :func:`region`: the GB/T 2260 administrative division
  codes Provex uses (all 31 mainland provincial-level divisions, the
  prefecture-level cities that host exchanges or provincial capitals, and
  Hong Kong, Macao and Taiwan flagged ``mainland=False`` for cross-border
  logic).
* :func:`validate_node_id`: the syntax of the opaque, stable node ids
  (``gd-gzde``, ``sh-sde``). Node ids stay plain ``str`` everywhere.

Malformed input raises :class:`provex.errors.InvalidArgument` whose message
names what is wrong. Every table here is immutable and built once at import.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from provex.errors import InvalidArgument

__all__ = [
    "CREDIT_CODE_CHARSET",
    "DATASET_ID_MAX_SERIAL",
    "DATASET_ID_MAX_YEAR",
    "DATASET_ID_MIN_YEAR",
    "NODE_ID_MAX_LENGTH",
    "NODE_ID_MIN_LENGTH",
    "REGIONS",
    "REGISTRATION_AUTHORITIES",
    "CreditCode",
    "DatasetId",
    "OrganisationType",
    "Region",
    "RegistrationAuthority",
    "credit_code_check_char",
    "is_known_region",
    "is_valid_node_id",
    "iso7064_mod11_2",
    "mainland_provinces",
    "organisation_code_check_char",
    "province_of",
    "region",
    "validate_node_id",
]

# ---------------------------------------------------------------------------
# ISO 7064 MOD 11-2
# ---------------------------------------------------------------------------


def iso7064_mod11_2(digits: str) -> str:
    """The ISO 7064 MOD 11-2 check character of a string of ASCII digits.

    Digit ``i`` (0-based from the left) of ``n`` digits has weight
    ``2**(n - i) mod 11``; the check value is ``(12 - sum mod 11) mod 11`` and
    10 is written ``"X"``. For 17 digits this is the check character of a PRC
    resident identity number (GB 11643-1999).
    """
    if not digits or not _ASCII_DIGITS.fullmatch(digits):
        raise InvalidArgument(f"MOD 11-2 input must be ASCII digits, got {digits!r}")
    total = 0
    for digit in digits:  # Horner's rule: weights 2**(n - i) mod 11, left to right.
        total = (total + ord(digit) - 48) * 2 % 11
    value = (12 - total) % 11
    return "X" if value == 10 else str(value)


_ASCII_DIGITS = re.compile(r"[0-9]+")

# ---------------------------------------------------------------------------
# GB/T 2260 region codes
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Region:
    """One GB/T 2260 administrative division.

    ``province`` is the code of its provincial-level division (equal to
    ``code`` for a province, autonomous region or municipality).
    ``mainland`` is False for Hong Kong, Macao and Taiwan.
    """

    code: str
    name_zh: str
    name_en: str
    province: str
    mainland: bool = True

    @property
    def is_province(self) -> bool:
        """True for a provincial-level division (province, autonomous region, municipality, SAR)."""
        return self.code == self.province


# (code, Chinese name, English name, mainland)
_PROVINCES: tuple[tuple[str, str, str, bool], ...] = (
    ("110000", "北京市", "Beijing", True),
    ("120000", "天津市", "Tianjin", True),
    ("130000", "河北省", "Hebei", True),
    ("140000", "山西省", "Shanxi", True),
    ("150000", "内蒙古自治区", "Inner Mongolia", True),
    ("210000", "辽宁省", "Liaoning", True),
    ("220000", "吉林省", "Jilin", True),
    ("230000", "黑龙江省", "Heilongjiang", True),
    ("310000", "上海市", "Shanghai", True),
    ("320000", "江苏省", "Jiangsu", True),
    ("330000", "浙江省", "Zhejiang", True),
    ("340000", "安徽省", "Anhui", True),
    ("350000", "福建省", "Fujian", True),
    ("360000", "江西省", "Jiangxi", True),
    ("370000", "山东省", "Shandong", True),
    ("410000", "河南省", "Henan", True),
    ("420000", "湖北省", "Hubei", True),
    ("430000", "湖南省", "Hunan", True),
    ("440000", "广东省", "Guangdong", True),
    ("450000", "广西壮族自治区", "Guangxi", True),
    ("460000", "海南省", "Hainan", True),
    ("500000", "重庆市", "Chongqing", True),
    ("510000", "四川省", "Sichuan", True),
    ("520000", "贵州省", "Guizhou", True),
    ("530000", "云南省", "Yunnan", True),
    ("540000", "西藏自治区", "Xizang", True),
    ("610000", "陕西省", "Shaanxi", True),
    ("620000", "甘肃省", "Gansu", True),
    ("630000", "青海省", "Qinghai", True),
    ("640000", "宁夏回族自治区", "Ningxia", True),
    ("650000", "新疆维吾尔自治区", "Xinjiang", True),
    ("710000", "台湾省", "Taiwan", False),
    ("810000", "香港特别行政区", "Hong Kong", False),
    ("820000", "澳门特别行政区", "Macao", False),
)

# Prefecture-level cities: those hosting data exchanges, and every provincial capital.
_CITIES: tuple[tuple[str, str, str], ...] = (
    ("130100", "石家庄市", "Shijiazhuang"),
    ("140100", "太原市", "Taiyuan"),
    ("150100", "呼和浩特市", "Hohhot"),
    ("210100", "沈阳市", "Shenyang"),
    ("210200", "大连市", "Dalian"),
    ("220100", "长春市", "Changchun"),
    ("230100", "哈尔滨市", "Harbin"),
    ("320100", "南京市", "Nanjing"),
    ("320500", "苏州市", "Suzhou"),
    ("330100", "杭州市", "Hangzhou"),
    ("330200", "宁波市", "Ningbo"),
    ("340100", "合肥市", "Hefei"),
    ("350100", "福州市", "Fuzhou"),
    ("350200", "厦门市", "Xiamen"),
    ("360100", "南昌市", "Nanchang"),
    ("370100", "济南市", "Jinan"),
    ("370200", "青岛市", "Qingdao"),
    ("410100", "郑州市", "Zhengzhou"),
    ("420100", "武汉市", "Wuhan"),
    ("430100", "长沙市", "Changsha"),
    ("440100", "广州市", "Guangzhou"),
    ("440300", "深圳市", "Shenzhen"),
    ("440400", "珠海市", "Zhuhai"),
    ("440600", "佛山市", "Foshan"),
    ("441900", "东莞市", "Dongguan"),
    ("450100", "南宁市", "Nanning"),
    ("460100", "海口市", "Haikou"),
    ("510100", "成都市", "Chengdu"),
    ("520100", "贵阳市", "Guiyang"),
    ("530100", "昆明市", "Kunming"),
    ("540100", "拉萨市", "Lhasa"),
    ("610100", "西安市", "Xi'an"),
    ("620100", "兰州市", "Lanzhou"),
    ("630100", "西宁市", "Xining"),
    ("640100", "银川市", "Yinchuan"),
    ("650100", "乌鲁木齐市", "Ürümqi"),
)


def _build_regions() -> Mapping[str, Region]:
    table: dict[str, Region] = {}
    for code, name_zh, name_en, mainland in _PROVINCES:
        table[code] = Region(code, name_zh, name_en, code, mainland)
    for code, name_zh, name_en in _CITIES:
        province = code[:2] + "0000"
        table[code] = Region(code, name_zh, name_en, province, table[province].mainland)
    return MappingProxyType(dict(sorted(table.items())))


REGIONS: Mapping[str, Region] = _build_regions()
"""Every region code Provex knows, by code (read-only)."""

_REGION_CODE = re.compile(r"[0-9]{6}")


def _check_region_shape(code: object, what: str = "region code") -> str:
    if not isinstance(code, str) or not _REGION_CODE.fullmatch(code):
        raise InvalidArgument(f"{what} must be 6 ASCII digits (GB/T 2260), got {code!r}")
    return code


def region(code: str) -> Region:
    """The known region with this GB/T 2260 code; InvalidArgument if malformed or unknown."""
    _check_region_shape(code)
    found = REGIONS.get(code)
    if found is None:
        raise InvalidArgument(f"region code {code} is not a known GB/T 2260 region")
    return found


def is_known_region(code: object) -> bool:
    """True if ``code`` is a region code in :data:`REGIONS`."""
    return isinstance(code, str) and code in REGIONS


def province_of(code: str) -> str:
    """The provincial-level code of a region code: its first two digits and ``0000``.

    The region itself need not be in :data:`REGIONS` (``440500`` Shantou gives
    ``440000``), but its province must be; InvalidArgument otherwise.
    """
    _check_region_shape(code)
    province = code[:2] + "0000"
    if province not in REGIONS:
        raise InvalidArgument(f"region code {code}: {province} is not a known province")
    return province


def mainland_provinces() -> tuple[Region, ...]:
    """The 31 provincial-level divisions of the mainland, by code."""
    return tuple(r for r in REGIONS.values() if r.is_province and r.mainland)


# ---------------------------------------------------------------------------
# Dataset ids
# ---------------------------------------------------------------------------

DATASET_ID_MIN_YEAR = 2000
DATASET_ID_MAX_YEAR = 2999
DATASET_ID_MAX_SERIAL = 9_999_999
_DATASET_ID_EXAMPLE = "440100-2026-0000123-8"
_DATASET_ID = re.compile(r"([0-9]{6})-([0-9]{4})-([0-9]{7})-([0-9X])")


@dataclass(frozen=True, order=True)
class DatasetId:
    """A dataset identifier issued by the registry: region, year, serial and check character.

    ``str(DatasetId("440100", 2026, 123))`` is ``"440100-2026-0000123-8"``.
    The region must be a known mainland region (the registry issues ids for
    mainland exchanges only), the year within 2000..2999, the serial within
    1..9,999,999. Construction validates; :meth:`parse` reads the text form.
    """

    region: str
    year: int
    serial: int

    def __post_init__(self) -> None:
        known = region(_check_region_shape(self.region, "dataset id region code"))
        if not known.mainland:
            raise InvalidArgument(
                f"dataset id region code {self.region} ({known.name_en}) is outside the "
                "mainland: dataset ids are issued for mainland regions only"
            )
        if not _is_int(self.year) or not (DATASET_ID_MIN_YEAR <= self.year <= DATASET_ID_MAX_YEAR):
            raise InvalidArgument(
                f"dataset id year must be within {DATASET_ID_MIN_YEAR}..{DATASET_ID_MAX_YEAR}, "
                f"got {self.year!r}"
            )
        if not _is_int(self.serial) or not (1 <= self.serial <= DATASET_ID_MAX_SERIAL):
            raise InvalidArgument(
                f"dataset id serial must be within 1..{DATASET_ID_MAX_SERIAL:,}, "
                f"got {self.serial!r}"
            )

    @property
    def digits(self) -> str:
        """The 17 digits the check character covers: region, year, serial."""
        return f"{self.region}{self.year:04d}{self.serial:07d}"

    @property
    def check_char(self) -> str:
        """The ISO 7064 MOD 11-2 check character (``0``-``9`` or ``X``)."""
        return iso7064_mod11_2(self.digits)

    def __str__(self) -> str:
        return f"{self.region}-{self.year:04d}-{self.serial:07d}-{self.check_char}"

    @classmethod
    def parse(cls, text: str) -> DatasetId:
        """Read a dataset id; case-insensitive, surrounding white space ignored, else strict."""
        if not isinstance(text, str):
            raise InvalidArgument(f"dataset id must be a string, got {type(text).__name__}")
        normalized = text.strip().upper()
        match = _DATASET_ID.fullmatch(normalized)
        if match is None:
            raise InvalidArgument(
                f"dataset id {text!r} is malformed: expected <6-digit region>-<4-digit year>-"
                f"<7-digit serial>-<check character 0-9 or X>, e.g. {_DATASET_ID_EXAMPLE}"
            )
        region_code, year, serial, check = match.groups()
        expected = iso7064_mod11_2(region_code + year + serial)
        if check != expected:
            raise InvalidArgument(
                f"dataset id {normalized}: check character is {check}, expected {expected}: typo?"
            )
        return cls(region_code, int(year), int(serial))

    @classmethod
    def is_valid(cls, text: object) -> bool:
        """True if :meth:`parse` accepts ``text``."""
        if not isinstance(text, str):
            return False
        try:
            cls.parse(text)
        except InvalidArgument:
            return False
        return True


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ---------------------------------------------------------------------------
# Unified Social Credit Codes (GB 32100-2015) and organisation codes (GB 11714-1997)
# ---------------------------------------------------------------------------

CREDIT_CODE_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
"""The 31 characters of a credit code (no I, O, Z, S, V); index = value."""

_CREDIT_CODE_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_CREDIT_CODE_VALUE: Mapping[str, int] = MappingProxyType(
    {char: value for value, char in enumerate(CREDIT_CODE_CHARSET)}
)
# GB 11714: body characters 0-9 and A-Z have values 0..35.
_ORG_CODE_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)
_ORG_CODE_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class OrganisationType:
    """The second character of a credit code, read under its registration authority."""

    code: str
    name_zh: str
    name_en: str


@dataclass(frozen=True)
class RegistrationAuthority:
    """The first character of a credit code and the organisation types it registers."""

    code: str
    name_zh: str
    name_en: str
    types: Mapping[str, OrganisationType]


def _authority(
    code: str, name_zh: str, name_en: str, *types: tuple[str, str, str]
) -> tuple[str, RegistrationAuthority]:
    table = MappingProxyType({t[0]: OrganisationType(*t) for t in types})
    return code, RegistrationAuthority(code, name_zh, name_en, table)


_OTHER = ("9", "其他", "other")

REGISTRATION_AUTHORITIES: Mapping[str, RegistrationAuthority] = MappingProxyType(
    dict(
        (
            _authority(
                "1",
                "机构编制",
                "institutional staffing (bianzhi)",
                ("1", "机关", "government organ"),
                ("2", "事业单位", "public institution"),
                ("3", "中央编办直接管理机构编制的群众团体", "mass organisation staffed by SCOPSR"),
                _OTHER,
            ),
            _authority(
                "2",
                "外交",
                "foreign affairs",
                ("1", "外国常驻新闻机构", "resident foreign news agency"),
                _OTHER,
            ),
            _authority(
                "3",
                "司法行政",
                "judicial administration",
                ("1", "律师执业机构", "law firm"),
                ("2", "公证处", "notary office"),
                ("3", "基层法律服务所", "grassroots legal service office"),
                ("4", "司法鉴定机构", "forensic appraisal institution"),
                ("5", "仲裁委员会", "arbitration commission"),
                _OTHER,
            ),
            _authority(
                "4",
                "文化",
                "culture",
                ("1", "外国在华文化中心", "foreign cultural centre in China"),
                _OTHER,
            ),
            _authority(
                "5",
                "民政",
                "civil affairs",
                ("1", "社会团体", "social organisation"),
                ("2", "民办非企业单位", "private non-enterprise unit"),
                ("3", "基金会", "foundation"),
                _OTHER,
            ),
            _authority(
                "6",
                "旅游",
                "tourism",
                (
                    "1",
                    "外国旅游部门常驻代表机构",
                    "representative office of a foreign tourism body",
                ),
                (
                    "2",
                    "港澳台地区旅游部门常驻内地（大陆）代表机构",
                    "representative office of a Hong Kong, Macao or Taiwan tourism body",
                ),
                _OTHER,
            ),
            _authority(
                "7",
                "宗教",
                "religious affairs",
                ("1", "宗教活动场所", "place of religious activity"),
                ("2", "宗教院校", "religious school"),
                _OTHER,
            ),
            _authority(
                "8",
                "工会",
                "trade unions",
                ("1", "基层工会", "grassroots trade union"),
                _OTHER,
            ),
            _authority(
                "9",
                "工商",
                "industry and commerce (market regulation)",
                ("1", "企业", "enterprise"),
                ("2", "个体工商户", "individual business"),
                ("3", "农民专业合作社", "farmers' specialised cooperative"),
            ),
            _authority(
                "A",
                "中央军委改革和编制办公室",
                "CMC reform and staffing office",
                ("1", "军队事业单位", "military public institution"),
                _OTHER,
            ),
            _authority(
                "N",
                "农业",
                "agriculture",
                ("1", "组级集体经济组织", "group-level collective economic organisation"),
                ("2", "村级集体经济组织", "village-level collective economic organisation"),
                ("3", "乡镇级集体经济组织", "township-level collective economic organisation"),
                _OTHER,
            ),
            _authority("Y", "其他", "other", ("1", "其他", "other")),
        )
    )
)
"""GB 32100-2015 (with amendment 1, 2016): registration authority codes and their types."""


def credit_code_check_char(first17: str) -> str:
    """The GB 32100 check character of the first 17 characters of a credit code."""
    if len(first17) != 17 or any(c not in _CREDIT_CODE_VALUE for c in first17):
        raise InvalidArgument(
            f"credit code body must be 17 characters of {CREDIT_CODE_CHARSET}, got {first17!r}"
        )
    total = sum(
        _CREDIT_CODE_VALUE[c] * w for c, w in zip(first17, _CREDIT_CODE_WEIGHTS, strict=True)
    )
    return CREDIT_CODE_CHARSET[(31 - total % 31) % 31]


def organisation_code_check_char(body8: str) -> str:
    """The GB 11714-1997 check character of the 8-character body of an organisation code."""
    if len(body8) != 8 or any(c not in _ORG_CODE_ALPHABET for c in body8):
        raise InvalidArgument(
            f"organisation code body must be 8 characters 0-9 or A-Z, got {body8!r}"
        )
    total = sum(
        _ORG_CODE_ALPHABET.index(c) * w for c, w in zip(body8, _ORG_CODE_WEIGHTS, strict=True)
    )
    value = 11 - total % 11
    return {10: "X", 11: "0"}.get(value, str(value))


@dataclass(frozen=True)
class CreditCode:
    """An organisation's 18-character Unified Social Credit Code (统一社会信用代码).

    Layout: registration authority (1), organisation type (1), region code of
    the registering authority (6 digits), organisation code (9, its last
    character a GB 11714 check character), check character (1). ``code`` is
    the canonical upper-case form; construction validates it completely.
    The region part is checked for shape only, since authorities register
    under codes of any level (``100000`` for central organs).
    """

    code: str

    def __post_init__(self) -> None:
        _validate_credit_code(self.code)

    @classmethod
    def parse(cls, text: str) -> CreditCode:
        """Read a credit code; case-insensitive, surrounding white space ignored, else strict."""
        if not isinstance(text, str):
            raise InvalidArgument(f"credit code must be a string, got {type(text).__name__}")
        return cls(text.strip().upper())

    @classmethod
    def is_valid(cls, text: object) -> bool:
        """True if :meth:`parse` accepts ``text``."""
        if not isinstance(text, str):
            return False
        try:
            cls.parse(text)
        except InvalidArgument:
            return False
        return True

    @classmethod
    def from_parts(
        cls, registration_authority: str, organisation_type: str, region: str, body8: str
    ) -> CreditCode:
        """Assemble a credit code, computing both check characters (for seeds and tests)."""
        organisation_code = body8 + organisation_code_check_char(body8)
        first17 = registration_authority + organisation_type + region + organisation_code
        return cls(first17 + credit_code_check_char(first17))

    @property
    def registration_authority(self) -> str:
        """Character 1: the registration authority code (``9`` industry and commerce, ...)."""
        return self.code[0]

    @property
    def organisation_type(self) -> str:
        """Character 2: the organisation type code under its authority (``1`` enterprise, ...)."""
        return self.code[1]

    @property
    def region(self) -> str:
        """Characters 3..8: the GB/T 2260 code of the registering authority's region."""
        return self.code[2:8]

    @property
    def organisation_code(self) -> str:
        """Characters 9..17: the GB 11714 organisation code (subject identifier)."""
        return self.code[8:17]

    @property
    def check_char(self) -> str:
        """Character 18: the GB 32100 check character."""
        return self.code[17]

    @property
    def authority(self) -> RegistrationAuthority:
        """The registration authority this code names."""
        return REGISTRATION_AUTHORITIES[self.registration_authority]

    @property
    def org_type(self) -> OrganisationType:
        """The organisation type this code names."""
        return self.authority.types[self.organisation_type]

    def __str__(self) -> str:
        return self.code


def _validate_credit_code(code: object) -> None:
    if not isinstance(code, str):
        raise InvalidArgument(f"credit code must be a string, got {type(code).__name__}")
    if len(code) != 18:
        raise InvalidArgument(f"credit code {code!r} must be 18 characters, got {len(code)}")
    for position, char in enumerate(code, start=1):
        if char not in _CREDIT_CODE_VALUE:
            raise InvalidArgument(
                f"credit code {code!r}: character {position} {char!r} is not allowed "
                f"(digits and upper-case letters except I, O, Z, S, V)"
            )
    if not _REGION_CODE.fullmatch(code[2:8]):
        raise InvalidArgument(
            f"credit code {code}: characters 3-8 must be a 6-digit region code, got {code[2:8]!r}"
        )
    expected = credit_code_check_char(code[:17])
    if code[17] != expected:
        raise InvalidArgument(
            f"credit code {code}: check character is {code[17]}, expected {expected}: typo?"
        )
    authority = REGISTRATION_AUTHORITIES.get(code[0])
    if authority is None:
        raise InvalidArgument(
            f"credit code {code}: {code[0]!r} is not a GB 32100 registration authority code "
            f"(one of {''.join(REGISTRATION_AUTHORITIES)})"
        )
    if code[1] not in authority.types:
        raise InvalidArgument(
            f"credit code {code}: {code[1]!r} is not an organisation type of registration "
            f"authority {code[0]} ({authority.name_en}; types {''.join(authority.types)})"
        )
    org_expected = organisation_code_check_char(code[8:16])
    if code[16] != org_expected:
        raise InvalidArgument(
            f"credit code {code}: organisation code {code[8:17]} has check character "
            f"{code[16]}, expected {org_expected} (GB 11714)"
        )


# ---------------------------------------------------------------------------
# Node ids
# ---------------------------------------------------------------------------

NODE_ID_MIN_LENGTH = 3
NODE_ID_MAX_LENGTH = 63
_NODE_ID_CHARS = re.compile(r"[a-z0-9-]+")


def validate_node_id(text: str) -> str:
    """Return ``text`` if it is a valid node id, else raise InvalidArgument saying why.

    A node id is opaque and stable (``gd-gzde``): 3..63 characters of
    lower-case ASCII letters, digits and hyphens, starting with a letter, not
    ending with a hyphen, with no two hyphens in a row. It is never
    normalized: ``GD-GZDE`` is refused, not lower-cased.
    """
    if not isinstance(text, str):
        raise InvalidArgument(f"node id must be a string, got {type(text).__name__}")
    if not NODE_ID_MIN_LENGTH <= len(text) <= NODE_ID_MAX_LENGTH:
        raise InvalidArgument(
            f"node id {text!r} must be {NODE_ID_MIN_LENGTH}..{NODE_ID_MAX_LENGTH} characters, "
            f"got {len(text)}"
        )
    if not _NODE_ID_CHARS.fullmatch(text):
        bad = next(c for c in text if not ("a" <= c <= "z" or "0" <= c <= "9" or c == "-"))
        hint = " (node ids are lower-case)" if "A" <= bad <= "Z" else ""
        raise InvalidArgument(
            f"node id {text!r}: character {bad!r} is not allowed; use a-z, 0-9 and '-'{hint}"
        )
    if not "a" <= text[0] <= "z":
        raise InvalidArgument(f"node id {text!r} must start with a letter")
    if text.endswith("-"):
        raise InvalidArgument(f"node id {text!r} must not end with a hyphen")
    if "--" in text:
        raise InvalidArgument(f"node id {text!r} must not contain two hyphens in a row")
    return text


def is_valid_node_id(text: object) -> bool:
    """True if :func:`validate_node_id` accepts ``text``."""
    if not isinstance(text, str):
        return False
    try:
        validate_node_id(text)
    except InvalidArgument:
        return False
    return True
