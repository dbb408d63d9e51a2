"""The national supervision catalog, version 1, that ``provex-registry init`` seeds.

The catalog follows the structure of the national data classification and
grading rules (GB/T 43697-2024 《数据安全技术 数据分类分级规则》): a tree of
sectors (行业领域) and their data categories, each with a minimum grade
(一般数据 GENERAL < 重要数据 IMPORTANT < 核心数据 CORE), a personal-information
class (个人信息 / 敏感个人信息), whether it may be traded on a data exchange,
and what it needs to leave the mainland (数据出境: allowed, security
assessment required, forbidden).

Decisions taken here, so reviewers need not reverse-engineer them:

* Sector roots are GENERAL, hold no personal information, are tradable and
  allow cross-border transfer: they are the loosest point of their subtree,
  and every national child only tightens (grade, personal information,
  tradability, cross-border rule) what its parent allows. The catalog itself
  enforces this only for the grade and for provincial extensions; the seed
  keeps it for national entries too, so extensions never meet a surprise.
* Scale is left to the grading rules (:data:`provex.grading.DEFAULT_RULES`):
  categories such as inpatient records or ride-hailing trajectories are
  GENERAL at minimum, and a dataset of a million or more patients or riders
  grades IMPORTANT by the sensitive-information rule. Categories that are
  important whatever their size (genetic resources, grid dispatch, base
  station locations, basic surveying results, ...) carry IMPORTANT directly.
* CORE is reserved for data whose disclosure threatens national security
  (high-precision maps, geodetic and gravity data, telecom network topology,
  strategic petroleum reserves, nuclear facilities, defence industry); every
  CORE entry is non-tradable and cross-border FORBIDDEN.
* Medical records, financial accounts, biometrics/identity numbers and the
  location tracks of individuals are SENSITIVE personal information.
* Raw personal data that only licensed or statutory processors may handle
  (personal credit reports, bank accounts, passenger records, biometrics,
  real-name registration, household registration) is not tradable;
  de-identified medical, mobility and consumer data are tradable, with a
  security assessment for export.

:func:`national_catalog` builds version 1 with
:meth:`~provex.grading.Catalog.from_entries`, so every rule of the tree is
checked; :func:`national_rules` gives the grading rules published with it;
:func:`example_extensions` gives provincial extensions for demos and tests
(they are not part of version 1).
"""

from __future__ import annotations

from provex.grading import (
    DEFAULT_RULES,
    Catalog,
    CatalogEntry,
    CrossBorderRule,
    Grade,
    GradingRules,
    PersonalInfoClass,
)

__all__ = [
    "CATALOG_VERSION",
    "EXAMPLE_EXTENSIONS",
    "NATIONAL_ENTRIES",
    "example_extensions",
    "national_catalog",
    "national_rules",
]

CATALOG_VERSION = 1
"""The version number of the seeded national catalog."""

_G, _I, _C = Grade.GENERAL, Grade.IMPORTANT, Grade.CORE
_NO, _PI, _SPI = PersonalInfoClass.NONE, PersonalInfoClass.PERSONAL, PersonalInfoClass.SENSITIVE
_OK = CrossBorderRule.ALLOWED
_ASSESS = CrossBorderRule.ASSESSMENT_REQUIRED
_FORBID = CrossBorderRule.FORBIDDEN
_TRADE, _KEEP = True, False  # tradable on a data exchange, or kept off the market


_Row = tuple[str, Grade, PersonalInfoClass, bool, CrossBorderRule, str, str]
"""code, minimum grade, personal information, tradable, cross-border rule, title zh, title en."""

# The table is laid out by hand (one entry per two lines: code and rules, then titles).
# fmt: off
_NATIONAL_ROWS: tuple[_Row, ...] = (
    # (code, minimum grade, personal information, tradable, cross-border rule,
    #  title zh, title en)
    # --- 医疗健康 Health and medical care
    ("health",                                     _G,  _NO,  _TRADE, _OK,
     "医疗健康", "Health and medical care"),
    ("health.medical",                             _G,  _SPI, _TRADE, _ASSESS,
     "医疗服务数据", "Medical service data"),
    ("health.medical.inpatient",                   _G,  _SPI, _TRADE, _ASSESS,
     "住院病历数据", "Inpatient medical records"),
    ("health.medical.outpatient",                  _G,  _SPI, _TRADE, _ASSESS,
     "门急诊诊疗数据", "Outpatient and emergency records"),
    ("health.medical.imaging",                     _G,  _SPI, _TRADE, _ASSESS,
     "医学影像数据", "Medical imaging data"),
    ("health.medical.prescriptions",               _G,  _SPI, _TRADE, _ASSESS,
     "处方与用药数据", "Prescription and medication data"),
    ("health.genetics",                            _I,  _SPI, _KEEP,  _FORBID,
     "人类遗传资源数据", "Human genetic resources data"),
    ("health.genetics.genome_sequences",           _I,  _SPI, _KEEP,  _FORBID,
     "人类基因组测序数据", "Human genome sequencing data"),
    ("health.public_health",                       _G,  _NO,  _TRADE, _OK,
     "公共卫生数据", "Public health data"),
    ("health.public_health.statistics",            _G,  _NO,  _TRADE, _OK,
     "卫生健康统计数据", "Health statistics (aggregated)"),
    ("health.public_health.infectious_disease",    _I,  _SPI, _KEEP,  _ASSESS,
     "传染病监测数据", "Infectious disease surveillance data"),
    ("health.pharma",                              _G,  _NO,  _TRADE, _ASSESS,
     "医药研发数据", "Pharmaceutical research data"),
    ("health.pharma.clinical_trials",              _G,  _SPI, _TRADE, _ASSESS,
     "药物临床试验数据", "Drug clinical trial data"),
    # --- 金融 Finance
    ("finance",                                    _G,  _NO,  _TRADE, _OK,
     "金融", "Finance"),
    ("finance.credit",                             _G,  _NO,  _TRADE, _OK,
     "征信数据", "Credit reporting data"),
    ("finance.credit.enterprise_credit",           _G,  _NO,  _TRADE, _OK,
     "企业信用数据", "Enterprise credit data"),
    ("finance.credit.personal_credit",             _I,  _SPI, _KEEP,  _ASSESS,
     "个人征信数据", "Personal credit reporting data"),
    ("finance.banking",                            _G,  _NO,  _TRADE, _OK,
     "银行业数据", "Banking data"),
    ("finance.banking.accounts",                   _G,  _SPI, _KEEP,  _ASSESS,
     "个人银行账户数据", "Personal bank account data"),
    ("finance.banking.loan_statistics",            _G,  _NO,  _TRADE, _OK,
     "信贷投放统计数据", "Lending statistics (aggregated)"),
    ("finance.payments",                           _G,  _NO,  _TRADE, _OK,
     "支付清算数据", "Payment and clearing data"),
    ("finance.payments.transaction_aggregates",    _G,  _NO,  _TRADE, _OK,
     "支付交易汇总统计", "Payment transaction statistics (aggregated)"),
    ("finance.payments.clearing_operations",       _I,  _NO,  _KEEP,  _FORBID,
     "支付清算系统运行数据", "Payment clearing system operations data"),
    ("finance.securities",                         _G,  _NO,  _TRADE, _OK,
     "证券期货数据", "Securities and futures data"),
    ("finance.securities.market_quotes",           _G,  _NO,  _TRADE, _OK,
     "证券期货行情数据", "Securities and futures quotes"),
    ("finance.insurance",                          _G,  _NO,  _TRADE, _OK,
     "保险业数据", "Insurance data"),
    ("finance.insurance.policyholders",            _G,  _SPI, _TRADE, _ASSESS,
     "保单与被保险人数据", "Policy and insured-person data"),
    # --- 交通运输 Transport
    ("transport",                                  _G,  _NO,  _TRADE, _OK,
     "交通运输", "Transport"),
    ("transport.road",                             _G,  _NO,  _TRADE, _OK,
     "道路运输数据", "Road transport data"),
    ("transport.road.traffic_flow",                _G,  _NO,  _TRADE, _OK,
     "道路交通流量数据", "Road traffic flow data"),
    ("transport.road.freight_logistics",           _G,  _NO,  _TRADE, _OK,
     "道路货运物流数据", "Road freight and logistics data"),
    ("transport.road.ride_hailing_trips",          _G,  _SPI, _TRADE, _ASSESS,
     "网约车出行轨迹数据", "Ride-hailing trip trajectories"),
    ("transport.aviation",                         _G,  _NO,  _TRADE, _OK,
     "民航数据", "Civil aviation data"),
    ("transport.aviation.flight_schedules",        _G,  _NO,  _TRADE, _OK,
     "航班计划数据", "Flight schedule data"),
    ("transport.aviation.passenger_records",       _G,  _SPI, _KEEP,  _ASSESS,
     "旅客订座与乘机记录", "Passenger reservation and boarding records"),
    ("transport.rail",                             _G,  _NO,  _TRADE, _OK,
     "铁路运输数据", "Rail transport data"),
    ("transport.rail.passenger_volume",            _G,  _NO,  _TRADE, _OK,
     "铁路客运量统计数据", "Railway passenger volume statistics"),
    ("transport.port",                             _G,  _NO,  _TRADE, _OK,
     "港口航运数据", "Port and shipping data"),
    ("transport.port.container_throughput",        _G,  _NO,  _TRADE, _OK,
     "港口集装箱吞吐量数据", "Port container throughput data"),
    # --- 自然资源与地理信息 Natural resources and geographic information
    ("geo",                                        _G,  _NO,  _TRADE, _OK,
     "自然资源与地理信息", "Natural resources and geographic information"),
    ("geo.mapping",                                _I,  _NO,  _TRADE, _FORBID,
     "测绘地理信息数据", "Surveying, mapping and geographic information data"),
    ("geo.mapping.high_precision",                 _C,  _NO,  _KEEP,  _FORBID,
     "高精度地图数据", "High-precision (HD) map data"),
    ("geo.mapping.geodetic_gravity",               _C,  _NO,  _KEEP,  _FORBID,
     "大地测量与重力数据", "Geodetic and gravity survey data"),
    ("geo.mapping.basic_surveying",                _I,  _NO,  _KEEP,  _FORBID,
     "基础测绘成果", "Basic surveying and mapping results"),
    ("geo.remote_sensing",                         _G,  _NO,  _TRADE, _ASSESS,
     "遥感影像数据", "Remote sensing imagery"),
    ("geo.remote_sensing.high_resolution",         _I,  _NO,  _TRADE, _FORBID,
     "高分辨率遥感影像", "High-resolution satellite imagery"),
    ("geo.place_names",                            _G,  _NO,  _TRADE, _ASSESS,
     "地名地址数据", "Place-name and address data"),
    ("geo.land_use",                               _G,  _NO,  _TRADE, _ASSESS,
     "国土调查与土地利用数据", "Land survey and land-use data"),
    ("geo.minerals",                               _G,  _NO,  _TRADE, _ASSESS,
     "矿产资源数据", "Mineral resources data"),
    ("geo.minerals.strategic_reserves",            _I,  _NO,  _KEEP,  _FORBID,
     "战略性矿产资源储量数据", "Strategic mineral reserves data"),
    # --- 工业 Industry
    ("industry",                                   _G,  _NO,  _TRADE, _OK,
     "工业", "Industry"),
    ("industry.manufacturing",                     _G,  _NO,  _TRADE, _OK,
     "制造业生产数据", "Manufacturing data"),
    ("industry.manufacturing.output_statistics",   _G,  _NO,  _TRADE, _OK,
     "工业生产统计数据", "Industrial output statistics"),
    ("industry.manufacturing.equipment_telemetry", _G,  _NO,  _TRADE, _ASSESS,
     "工业设备运行数据", "Industrial equipment operating data"),
    ("industry.supply_chain",                      _G,  _NO,  _TRADE, _ASSESS,
     "产业链供应链数据", "Industrial supply-chain data"),
    ("industry.rd",                                _G,  _NO,  _TRADE, _ASSESS,
     "工业研发设计数据", "Industrial research and design data"),
    ("industry.rd.key_technologies",               _I,  _NO,  _TRADE, _FORBID,
     "关键核心技术研发数据", "Key and core technology research data"),
    ("industry.defense",                           _C,  _NO,  _KEEP,  _FORBID,
     "国防科技工业数据", "Defence science, technology and industry data"),
    # --- 电信与互联网 Telecommunications and internet
    ("telecom",                                    _G,  _NO,  _TRADE, _OK,
     "电信与互联网", "Telecommunications and internet"),
    ("telecom.network",                            _G,  _NO,  _TRADE, _ASSESS,
     "通信网络数据", "Communications network data"),
    ("telecom.network.topology",                   _C,  _NO,  _KEEP,  _FORBID,
     "通信网络拓扑与关键设施数据", "Network topology and critical facility data"),
    ("telecom.network.base_stations",              _I,  _NO,  _KEEP,  _FORBID,
     "基站位置与覆盖数据", "Base station location and coverage"),
    ("telecom.network.quality_statistics",         _G,  _NO,  _TRADE, _ASSESS,
     "网络质量统计数据", "Network quality statistics"),
    ("telecom.subscribers",                        _G,  _PI,  _TRADE, _ASSESS,
     "电信用户数据", "Telecom subscriber data"),
    ("telecom.subscribers.registration",           _I,  _SPI, _KEEP,  _FORBID,
     "用户实名登记信息", "Real-name subscriber registration"),
    ("telecom.subscribers.location_signalling",    _I,  _SPI, _KEEP,  _FORBID,
     "用户位置信令数据", "Subscriber location signalling data"),
    ("telecom.analytics",                          _G,  _NO,  _TRADE, _ASSESS,
     "通信大数据分析产品", "Telecom big-data analytics"),
    ("telecom.analytics.population_mobility",      _G,  _NO,  _TRADE, _ASSESS,
     "人口流动统计数据", "Population mobility statistics (aggregated)"),
    ("telecom.internet",                           _G,  _PI,  _TRADE, _ASSESS,
     "互联网平台数据", "Internet platform data"),
    ("telecom.internet.user_behavior",             _G,  _PI,  _TRADE, _ASSESS,
     "互联网用户行为数据", "Internet user behaviour data"),
    ("telecom.internet.biometrics",                _G,  _SPI, _KEEP,  _ASSESS,
     "人脸等生物识别信息", "Facial and other biometric information"),
    # --- 政务与司法 Public administration and justice
    ("gov",                                        _G,  _NO,  _TRADE, _OK,
     "政务与司法", "Public administration and justice"),
    ("gov.courts",                                 _G,  _NO,  _TRADE, _OK,
     "司法审判数据", "Judicial and court data"),
    ("gov.courts.judgments_public",                _G,  _PI,  _TRADE, _OK,
     "公开裁判文书", "Published court judgments"),
    ("gov.courts.case_files",                      _I,  _SPI, _KEEP,  _FORBID,
     "诉讼案卷数据", "Litigation case files"),
    ("gov.market_registration",                    _G,  _NO,  _TRADE, _OK,
     "市场主体登记数据", "Market entity registration data"),
    ("gov.market_registration.enterprises",        _G,  _NO,  _TRADE, _OK,
     "企业登记注册信息", "Enterprise registration records"),
    ("gov.population",                             _G,  _NO,  _TRADE, _OK,
     "人口数据", "Population data"),
    ("gov.population.census_aggregates",           _G,  _NO,  _TRADE, _OK,
     "人口普查汇总数据", "Population census aggregates"),
    ("gov.population.household_registry",          _I,  _SPI, _KEEP,  _FORBID,
     "户籍人口登记信息", "Household registration records"),
    ("gov.procurement",                            _G,  _NO,  _TRADE, _OK,
     "政府采购数据", "Government procurement data"),
    # --- 商贸零售 Commerce and retail
    ("commerce",                                   _G,  _NO,  _TRADE, _OK,
     "商贸零售", "Commerce and retail"),
    ("commerce.retail",                            _G,  _NO,  _TRADE, _OK,
     "零售业数据", "Retail data"),
    ("commerce.retail.sales_aggregates",           _G,  _NO,  _TRADE, _OK,
     "零售销售汇总数据", "Retail sales aggregates"),
    ("commerce.retail.price_monitoring",           _G,  _NO,  _TRADE, _OK,
     "商品价格监测数据", "Commodity price monitoring data"),
    ("commerce.ecommerce",                         _G,  _NO,  _TRADE, _OK,
     "电子商务数据", "E-commerce data"),
    ("commerce.ecommerce.orders",                  _G,  _PI,  _TRADE, _ASSESS,
     "电商订单与收货信息", "E-commerce orders and delivery details"),
    ("commerce.ecommerce.consumer_profiles",       _G,  _PI,  _TRADE, _ASSESS,
     "消费者画像数据", "Consumer profile data"),
    ("commerce.trade",                             _G,  _NO,  _TRADE, _OK,
     "对外贸易数据", "Foreign trade data"),
    ("commerce.trade.customs_declarations",        _G,  _NO,  _TRADE, _ASSESS,
     "进出口报关数据", "Import and export declarations"),
    # --- 能源 Energy
    ("energy",                                     _G,  _NO,  _TRADE, _OK,
     "能源", "Energy"),
    ("energy.grid",                                _G,  _NO,  _TRADE, _ASSESS,
     "电网数据", "Power grid data"),
    ("energy.grid.operations",                     _I,  _NO,  _KEEP,  _FORBID,
     "电网调度运行数据", "Grid dispatch and operations data"),
    ("energy.grid.consumption_statistics",         _G,  _NO,  _TRADE, _ASSESS,
     "用电量统计数据", "Electricity consumption statistics"),
    ("energy.grid.smart_meters",                   _G,  _PI,  _TRADE, _ASSESS,
     "居民智能电表数据", "Household smart-meter data"),
    ("energy.oil_gas",                             _G,  _NO,  _TRADE, _ASSESS,
     "油气数据", "Oil and gas data"),
    ("energy.oil_gas.pipeline_network",            _I,  _NO,  _KEEP,  _FORBID,
     "油气管网设施数据", "Oil and gas pipeline network data"),
    ("energy.oil_gas.strategic_reserves",          _C,  _NO,  _KEEP,  _FORBID,
     "国家石油储备数据", "National petroleum reserve data"),
    ("energy.nuclear",                             _C,  _NO,  _KEEP,  _FORBID,
     "核能与核设施数据", "Nuclear energy and facility data"),
    ("energy.renewables",                          _G,  _NO,  _TRADE, _OK,
     "可再生能源数据", "Renewable energy data"),
    ("energy.renewables.generation",               _G,  _NO,  _TRADE, _OK,
     "风电光伏发电出力数据", "Wind and solar generation output"),
    # --- 农业农村 Agriculture and rural affairs
    ("agriculture",                                _G,  _NO,  _TRADE, _OK,
     "农业农村", "Agriculture and rural affairs"),
    ("agriculture.crops",                          _G,  _NO,  _TRADE, _OK,
     "农作物种植数据", "Crop planting and yield data"),
    ("agriculture.prices",                         _G,  _NO,  _TRADE, _OK,
     "农产品价格数据", "Agricultural product prices"),
    ("agriculture.germplasm",                      _I,  _NO,  _TRADE, _FORBID,
     "农作物种质资源数据", "Crop germplasm resources data"),
    # --- 气象 Meteorology
    ("meteorology",                                _G,  _NO,  _TRADE, _OK,
     "气象", "Meteorology"),
    ("meteorology.observations",                   _G,  _NO,  _TRADE, _ASSESS,
     "气象观测数据", "Meteorological observation data"),
    ("meteorology.forecasts",                      _G,  _NO,  _TRADE, _OK,
     "天气预报产品", "Weather forecast products"),
)
# fmt: on

NATIONAL_ENTRIES: tuple[CatalogEntry, ...] = tuple(
    CatalogEntry(code, title_zh, title_en, grade, personal_info, tradable, cross_border)
    for code, grade, personal_info, tradable, cross_border, title_zh, title_en in _NATIONAL_ROWS
)
"""Every entry of national catalog version 1, owner :data:`~provex.grading.NATIONAL`."""

EXAMPLE_EXTENSIONS: tuple[tuple[CatalogEntry, str], ...] = (
    (
        CatalogEntry(
            code="transport.port.greater_bay_area_shipping",
            title_zh="粤港澳大湾区航运数据",
            title_en="Greater Bay Area shipping data",
            min_grade=_G,
            personal_info=_NO,
            tradable=_TRADE,
            cross_border=_ASSESS,
            owner="440000",
        ),
        "440000",
    ),
    (
        CatalogEntry(
            code="commerce.trade.lingang_special_area",
            title_zh="临港新片区国际贸易数据",
            title_en="Lin-gang Special Area international trade data",
            min_grade=_G,
            personal_info=_NO,
            tradable=_TRADE,
            cross_border=_ASSESS,
            owner="310000",
        ),
        "310000",
    ),
)
"""Provincial extensions (entry, province code) for demos and tests; not part of version 1."""


def national_catalog() -> Catalog:
    """National catalog version 1, built with every rule of the tree checked."""
    return Catalog.from_entries(CATALOG_VERSION, NATIONAL_ENTRIES)


def national_rules() -> GradingRules:
    """The grading rules published with catalog version 1 (:data:`DEFAULT_RULES`)."""
    return DEFAULT_RULES


def example_extensions() -> tuple[tuple[CatalogEntry, str], ...]:
    """Example provincial extensions as (entry, province code), each accepted by ``with_extension``.

    Guangdong (440000) adds Greater Bay Area shipping data under
    ``transport.port``; Shanghai (310000) adds Lin-gang Special Area trade
    data under ``commerce.trade``. Both tighten the cross-border rule of their
    parent (export needs a security assessment), as extensions may.
    """
    return EXAMPLE_EXTENSIONS
