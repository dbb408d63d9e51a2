"""Search benchmark: local search over a million listings, federated search, bundle verification.

    python tests/bench/search.py [--quick] [--cache DIR | --no-cache] [--keep DIR] [--profile DIR]

Fills node databases with synthetic but realistic listings (Chinese, English
and bilingual titles and descriptions: cities and districts, sectors,
measures, years, product codes; categories of the real national catalog;
prices from fen to millions of yuan; a few dozen holders per node), then runs
real processes (one ``provex-registry``, eight ``provex-node``, enrolled with
invitations) and a load client in its own process (``search_load.py``) that
sends a fixed mix of 32 queries (2-character and longer Chinese terms,
English words, mixed terms, a product code, a query without hits, filters on
category, region, price, grade and holder, and combinations), one at a time,
through the operator port (``OperatorService.Search`` / ``FederatedSearch``,
mutual TLS). Phases, one after the other (no phase overlaps another's work):

1. build the databases (two worker processes; timed, not part of any ratio)
   while the registry starts and the nodes enroll;
2. local: node ``gd-gzde`` alone, holding 1,000,000 listings (50,000 with
   ``--quick``): ``Search`` latency p50 / p99 (the mix once to warm up, at
   most 20 s, then shuffled rounds of it until 2,000 queries or 120 s);
3. federated: ``gd-gzde`` restarted on its own 100,000 listings and its 7
   peers of 100,000 each (10,000 with ``--quick``), all answering from the
   registry's directory; each query of the mix goes as ``Search`` to
   ``gd-gzde`` (``single_p95_ms``) and right after as ``FederatedSearch``
   from it over all 8 (``federated_p95_ms``; peer deadline 30 s, so that no
   peer is dropped), until 2,000 queries each or 150 s;
4. verification, once every process has stopped: certificate bundles
   registered at this run's registry (``RegisterDataset`` as ``gd-gzde``)
   verified in this process with ``provex.bundle.verify_certificate``
   (``verify_rate``), interleaved with raw ``Ed25519PublicKey.verify`` of
   600-byte messages (``ed25519_verify_rate``); then a cProfile of the
   verification says where its time goes.

Listings are stored the way the node stores them: each one's columns come
from ``node.listings._columns`` (checked at start-up against what
``create_listing`` inserts for 300 listings; if they ever differ, every row
goes through ``create_listing`` itself) and reach the node's ``listings``
table through one ``INSERT ... SELECT`` per batch, so that the node's own
triggers fill its search index (one statement per batch: inserted one
statement per row, as ``create_listing`` does, the same rows take about three
times longer).
Built databases are kept for later runs in ``$TMPDIR/provex-bench-search``
(``--cache DIR`` elsewhere, ``--no-cache`` to build afresh), keyed by the
node's schema and the rows ``create_listing`` stores for 50 sample listings:
a change to either rebuilds them (about eight minutes for the million
listings on two cores; about 5 GB in all); ``--keep DIR`` leaves state
directories and logs there instead of a temporary directory; ``--profile
DIR`` records the nodes with py-spy while they are measured and prints their
busiest frames (this slows them a little: use it to diagnose, not to report).

Targets: ``local_p50_ms`` <= 5, ``federated_ratio`` <= 2, ``verify_ratio`` >= 0.8.
The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import cProfile
import functools
import hashlib
import json
import math
import os
import pstats
import random
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.timestamp_pb2 import Timestamp

from node import listings
from node.schema import MIGRATIONS
from provex import storage, trust
from provex.bundle import verify_certificate
from provex.grading import Grade
from provex.identity import channel_credentials
from provex.ids import CREDIT_CODE_CHARSET, CreditCode, DatasetId, region
from provex.rpc import wait_for_endpoints
from provex.timestamps import to_timestamp
from provex.v1 import (
    common_pb2,
    dataset_pb2,
    market_pb2,
    node_pb2,
    node_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)
from registry.seed_catalog import national_catalog

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
GENERATOR_VERSION = 1
"""Bump when the synthetic listings change, so that cached databases are rebuilt."""
START_TIMEOUT = 60.0
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "provex-bench-search"
CLI_TIMEOUT = 120.0

# ---------------------------------------------------------------- the synthetic market

# (catalog code, weight, topics as (Chinese, English), what the dataset counts (Chinese, English))
CATEGORIES: tuple[tuple[str, int, tuple[tuple[str, str], ...], tuple[str, str]], ...] = (
    ("transport.road.traffic_flow", 12,
     (("道路交通流量", "road traffic flow"), ("路口车流量", "intersection vehicle counts"),
      ("交通拥堵指数", "traffic congestion index"),
      ("高速公路断面流量", "expressway traffic volume")),
     ("个监测断面", "monitoring sections")),
    ("transport.road.freight_logistics", 6,
     (("道路货运物流", "road freight logistics"), ("货车运行轨迹汇总", "truck movement aggregates"),
      ("物流园区吞吐量", "logistics park throughput")),
     ("个物流园区", "logistics parks")),
    ("transport.aviation.flight_schedules", 3,
     (("航班计划", "flight schedules"), ("机场航班准点率", "airport on-time performance"),
      ("机场旅客吞吐量", "airport passenger throughput")),
     ("个机场", "airports")),
    ("transport.rail.passenger_volume", 5,
     (("铁路客运量", "railway passenger volume"), ("地铁客流", "metro ridership"),
      ("高铁站客流", "high-speed rail station passenger flow")),
     ("个车站", "stations")),
    ("transport.port.container_throughput", 5,
     (("集装箱吞吐量", "container throughput"), ("港口货物吞吐量", "port cargo throughput"),
      ("船舶进出港", "vessel arrivals and departures")),
     ("个码头", "terminals")),
    ("health.public_health.statistics", 4,
     (("卫生健康统计", "health statistics"), ("医疗机构床位", "hospital bed statistics"),
      ("门急诊人次统计", "outpatient visit statistics")),
     ("家医疗机构", "medical institutions")),
    ("health.pharma", 2,
     (("医药研发", "pharmaceutical research"), ("药品集中采购价格", "drug procurement prices")),
     ("家企业", "companies")),
    ("finance.credit.enterprise_credit", 4,
     (("企业信用", "enterprise credit"), ("企业信用评分", "enterprise credit scores"),
      ("企业经营异常名录", "abnormal business operations list")),
     ("家企业", "companies")),
    ("finance.banking.loan_statistics", 3,
     (("信贷投放统计", "lending statistics"), ("普惠小微贷款", "inclusive small business loans")),
     ("家银行网点", "bank branches")),
    ("finance.payments.transaction_aggregates", 4,
     (("支付交易汇总", "payment transaction aggregates"),
      ("商圈消费指数", "shopping district spending index")),
     ("个商圈", "shopping districts")),
    ("finance.securities.market_quotes", 2,
     (("证券行情", "securities quotes"), ("期货行情", "futures quotes")),
     ("只证券", "securities")),
    ("geo.remote_sensing", 3,
     (("遥感影像", "remote sensing imagery"),
      ("高分卫星影像", "high-resolution satellite imagery")),
     ("景影像", "scenes")),
    ("geo.land_use", 2,
     (("土地利用", "land use"), ("建设用地供应", "construction land supply")),
     ("个地块", "land parcels")),
    ("industry.manufacturing.output_statistics", 4,
     (("工业生产统计", "industrial output statistics"),
      ("规上工业增加值", "industrial value added")),
     ("家工业企业", "industrial enterprises")),
    ("industry.manufacturing.equipment_telemetry", 3,
     (("工业设备运行", "industrial equipment telemetry"),
      ("设备能耗监测", "equipment energy monitoring")),
     ("台设备", "machines")),
    ("industry.supply_chain", 2,
     (("产业链供应链", "industrial supply chain"), ("供应商名录", "supplier directory")),
     ("家企业", "companies")),
    ("telecom.network.quality_statistics", 2,
     (("网络质量统计", "network quality statistics"), ("5G网络覆盖质量", "5G coverage quality")),
     ("个网格", "grid cells")),
    ("telecom.analytics.population_mobility", 4,
     (("人口流动统计", "population mobility statistics"),
      ("职住分布", "home and work distribution"),
      ("景区客流", "scenic area visitor flow")),
     ("个网格", "grid cells")),
    ("gov.market_registration.enterprises", 3,
     (("企业登记注册", "enterprise registrations"), ("新设市场主体", "new market entities")),
     ("家市场主体", "market entities")),
    ("gov.population.census_aggregates", 1,
     (("人口普查汇总", "census aggregates"),),
     ("个街道", "sub-districts")),
    ("gov.procurement", 2,
     (("政府采购", "government procurement"), ("招投标公告", "tender notices")),
     ("个项目", "projects")),
    ("commerce.retail.sales_aggregates", 4,
     (("零售销售汇总", "retail sales aggregates"),
      ("社会消费品零售总额", "total retail sales of consumer goods")),
     ("家门店", "stores")),
    ("commerce.retail.price_monitoring", 4,
     (("商品价格监测", "commodity price monitoring"), ("居民消费价格指数", "consumer price index")),
     ("种商品", "commodities")),
    ("commerce.trade.customs_declarations", 3,
     (("进出口报关", "import and export declarations"),
      ("跨境电商进出口", "cross-border e-commerce trade")),
     ("个海关监管点", "customs sites")),
    ("energy.grid.consumption_statistics", 5,
     (("用电量统计", "electricity consumption statistics"),
      ("分行业用电量", "electricity use by industry")),
     ("个供电所", "supply stations")),
    ("energy.renewables.generation", 3,
     (("风电光伏发电出力", "wind and solar generation output"),
      ("光伏发电量", "solar power generation")),
     ("座电站", "power plants")),
    ("energy.oil_gas", 2,
     (("成品油价格", "refined oil prices"), ("天然气消费量", "natural gas consumption")),
     ("座加油站", "filling stations")),
    ("agriculture.crops", 2,
     (("农作物种植", "crop planting"), ("粮食产量", "grain output")),
     ("个乡镇", "townships")),
    ("agriculture.prices", 3,
     (("农产品价格", "agricultural product prices"),
      ("蔬菜批发价格", "vegetable wholesale prices")),
     ("个批发市场", "wholesale markets")),
    ("meteorology.observations", 3,
     (("气象观测", "meteorological observations"),
      ("自动气象站观测", "automatic weather station observations")),
     ("个气象站", "weather stations")),
    ("meteorology.forecasts", 2,
     (("天气预报", "weather forecasts"), ("降水预报", "precipitation forecasts")),
     ("个预报格点", "forecast grid points")),
)  # fmt: skip

SECTOR_NAMES = {
    "transport": "交通",
    "health": "医疗健康",
    "finance": "金融",
    "geo": "地理信息",
    "industry": "工业",
    "telecom": "通信",
    "gov": "政务",
    "commerce": "商贸",
    "energy": "能源",
    "agriculture": "农业",
    "meteorology": "气象",
}
COMPANY_KINDS = ("数据科技", "大数据", "信息技术", "数智科技")
AREAS = {
    "440100": ("天河区", "越秀区", "海珠区", "荔湾区", "白云区", "黄埔区", "番禺区", "南沙区"),
    "440300": ("福田区", "罗湖区", "南山区", "宝安区", "龙岗区", "盐田区", "龙华区"),
    "310000": ("浦东新区", "黄浦区", "徐汇区", "静安区", "杨浦区", "闵行区", "嘉定区", "松江区"),
    "110000": ("东城区", "西城区", "朝阳区", "海淀区", "丰台区", "通州区", "大兴区"),
    "330100": ("上城区", "拱墅区", "西湖区", "滨江区", "萧山区", "余杭区"),
    "510100": ("锦江区", "青羊区", "金牛区", "武侯区", "成华区", "双流区"),
    "420100": ("江岸区", "江汉区", "汉阳区", "武昌区", "洪山区", "东西湖区"),
    "520100": ("南明区", "云岩区", "花溪区", "乌当区", "观山湖区"),
}
GRANULARITY = (
    ("逐5分钟", "5-minute"),
    ("逐小时", "hourly"),
    ("日度", "daily"),
    ("月度", "monthly"),
    ("季度", "quarterly"),
    ("年度", "annual"),
)
FREQUENCY = (
    ("实时", "in real time"),
    ("每日", "daily"),
    ("每周", "weekly"),
    ("每月", "monthly"),
    ("每季度", "quarterly"),
)
FORMATS = ("CSV", "Parquet", "JSON", "GeoJSON", "Excel")
AGGREGATION = (("街道", "sub-district"), ("网格", "grid cell"), ("行政区", "district"))
EXTRAS_ZH = (
    "数据已脱敏并按{agg}聚合。",
    "提供数据字典、样例数据和质量报告。",
    "支持API调用和文件交付。",
    "已通过第三方合规评估。",
    "字段包括时间、地点、指标值和质量标志。",
)
EXTRAS_EN = (
    "Anonymised and aggregated by {agg}.",
    "Includes a data dictionary, sample files and a quality report.",
    "Available through an API or as files.",
    "Compliance assessed by a third party.",
)
# (Chinese suffix, English suffix, pricing model, price range in fen)
OFFERS = (
    ("", "", market_pb2.PRICING_MODEL_ONE_TIME, (50_000, 200_000_000)),
    ("（年度订阅）", " (annual subscription)", market_pb2.PRICING_MODEL_SUBSCRIPTION,
     (100_000, 50_000_000)),
    ("（API按次调用）", " (API, pay per query)", market_pb2.PRICING_MODEL_PER_QUERY, (1, 2_000)),
    ("（样例版）", " (sample edition)", market_pb2.PRICING_MODEL_ONE_TIME, (0, 50_000)),
)  # fmt: skip
PURPOSES = (
    "科研", "商业分析", "政府决策支持", "城市规划", "风险控制", "model training", "市场研究",
)  # fmt: skip
TERMS = (30, 90, 180, 365, 365, 730, 1095)


@dataclass(frozen=True)
class Exchange:
    """A provincial exchange: its node id, home region, and the regions of its datasets."""

    node_id: str
    region_code: str
    regions: tuple[str, ...]

    @property
    def code_prefix(self) -> str:
        """The prefix of its product codes (``GZDE-0001234``)."""
        return self.node_id.split("-", 1)[1].upper()


FEDERATION = (
    Exchange("gd-gzde", "440100", ("440100", "440400", "440600", "441900", "440000")),
    Exchange("gd-szde", "440300", ("440300", "440000", "441900")),
    Exchange("sh-sde", "310000", ("310000",)),
    Exchange("bj-ide", "110000", ("110000",)),
    Exchange("zj-hzde", "330100", ("330100", "330200", "330000")),
    Exchange("sc-cdde", "510100", ("510100", "510000")),
    Exchange("hb-whde", "420100", ("420100", "420000")),
    Exchange("gz-gyde", "520100", ("520100", "520000")),
)
LOCAL = FEDERATION[0]
"""Measured alone on the big database, then restarted on its own for the federated phase."""


def check_categories() -> None:
    """Every category used exists in the national catalog, GENERAL and tradable."""
    catalog = national_catalog()
    for code, *_ in CATEGORIES:
        entry = catalog.get(code)
        if not entry.tradable or entry.min_grade != Grade.GENERAL:
            raise SystemExit(f"category {code} is not a tradable GENERAL category any more")


def holders_of(exchange: Exchange) -> dict[str, list[tuple[str, str]]]:
    """Per sector: the exchange's holders of that sector, as (credit code, company name)."""
    home = region(exchange.region_code)
    result: dict[str, list[tuple[str, str]]] = {}
    for number, (sector, sector_zh) in enumerate(SECTOR_NAMES.items()):
        holders = []
        for kind_number, kind in enumerate(COMPANY_KINDS):
            body = "MA5" + "".join(
                CREDIT_CODE_CHARSET[(number * 7 + kind_number * 3 + k * 5) % 31] for k in range(5)
            )
            code = CreditCode.from_parts("9", "1", exchange.region_code, body).code
            holders.append((code, f"{home.name_zh}{sector_zh}{kind}有限公司"))
        result[sector] = holders
    return result


def _nice_price(rng: random.Random, low: int, high: int) -> int:
    """A price in fen, log-uniform in [low, high], rounded to two significant digits."""
    if low == 0:
        if rng.random() < 0.3:
            return 0
        low = 100
    value = math.exp(rng.uniform(math.log(low), math.log(high)))
    digits = max(0, int(math.log10(value)) - 1)
    return int(round(value / 10**digits) * 10**digits)


class DatasetFacts(NamedTuple):
    """What :class:`node.listings.CertifiedDataset` holds, not yet validated (that is slow)."""

    dataset_id: str
    certificate_version: int
    holder: str
    title: str
    description: str
    categories: tuple[str, ...]
    grade: int
    region_code: str
    tradable: bool

    def certified(self) -> listings.CertifiedDataset:
        """The node's own, validated form."""
        return listings.CertifiedDataset(**self._asdict())


class Corpus:
    """The deterministic synthetic listings of one exchange: ``(draft, dataset)`` pairs.

    A dataset has one to four offers (plain, subscription, pay-per-query,
    sample); each is a draft listing as an operator submits it (state
    LISTED) and the facts of the dataset's certificate.
    """

    def __init__(self, exchange: Exchange, seed: int) -> None:
        self.exchange = exchange
        self.rng = random.Random(f"{seed}/{exchange.node_id}")
        self.holders = holders_of(exchange)
        self.weights = [weight for _, weight, _, _ in CATEGORIES]
        self.serial = 0

    def _dataset(self) -> tuple[DatasetFacts, int]:
        """A new dataset, and the language of its listings (0 Chinese, 1 English, 2 both)."""
        rng, exchange = self.rng, self.exchange
        self.serial += 1
        code, _, topics, unit = rng.choices(CATEGORIES, weights=self.weights)[0]
        categories = [code]
        if rng.random() < 0.1:
            other = rng.choices(CATEGORIES, weights=self.weights)[0][0]
            if other != code:
                categories.append(other)
        region_code = (
            exchange.regions[0]
            if rng.random() < 0.7 or len(exchange.regions) == 1
            else rng.choice(exchange.regions[1:])
        )
        place = region(region_code)
        area = rng.choice(AREAS[region_code]) if region_code in AREAS and rng.random() < 0.5 else ""
        topic_zh, topic_en = rng.choice(topics)
        granularity_zh, granularity_en = rng.choice(GRANULARITY)
        frequency_zh, frequency_en = rng.choice(FREQUENCY)
        year = rng.randint(2016, 2025)
        first_year = year - rng.choice((0, 1, 2, 3, 5))
        count = int(math.exp(rng.uniform(math.log(3), math.log(20_000))))
        holder, company = rng.choice(self.holders[code.split(".", 1)[0]])
        product = f"{exchange.code_prefix}-{self.serial:07d}"
        aggregation_zh, aggregation_en = rng.choice(AGGREGATION)
        file_format = rng.choice(FORMATS)
        title_zh = f"{place.name_zh}{area}{year}年{topic_zh}{granularity_zh}数据"
        title_en = f"{place.name_en} {topic_en} ({granularity_en}, {year})"
        extras_zh = "".join(
            text.format(agg=aggregation_zh) for text in rng.sample(EXTRAS_ZH, rng.randint(1, 3))
        )
        extras_en = " ".join(
            text.format(agg=aggregation_en) for text in rng.sample(EXTRAS_EN, rng.randint(1, 2))
        )
        description_zh = (
            f"{place.name_zh}{area}{topic_zh}{granularity_zh}数据，覆盖{count}{unit[0]}，"
            f"时间范围{first_year}年至{year}年，{frequency_zh}更新，提供{file_format}格式。"
            f"{extras_zh}数据来源：{company}。产品编号：{product}。"
        )
        description_en = (
            f"{granularity_en.capitalize()} {topic_en} for {place.name_en}: {count} {unit[1]}, "
            f"{first_year}-{year}, updated {frequency_en}, delivered as {file_format}. "
            f"{extras_en} Product code {product}."
        )
        draw = rng.random()
        if draw < 0.45:
            language, title, description = 0, title_zh, description_zh
        elif draw < 0.85:
            language, title = 2, f"{title_zh} {title_en}"
            description = f"{description_zh}\n{description_en}"
        else:
            language, title, description = 1, title_en, description_en
        dataset = DatasetFacts(
            dataset_id=str(DatasetId(region_code, rng.randint(2024, 2026), self.serial)),
            certificate_version=1 if rng.random() < 0.9 else 2,
            holder=holder,
            title=title,
            description=description,
            categories=tuple(categories),
            grade=2 if rng.random() < 0.08 else 1,
            region_code=region_code,
            tradable=True,
        )
        return dataset, language

    def __iter__(self) -> Iterator[tuple[market_pb2.Listing, DatasetFacts]]:
        rng = self.rng
        while True:
            dataset, language = self._dataset()
            for offer_number in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
                suffix_zh, suffix_en, model, (low, high) = OFFERS[offer_number]
                suffix = suffix_en if language == 1 else suffix_zh
                draft = market_pb2.Listing(
                    dataset_id=dataset.dataset_id,
                    title=dataset.title + suffix,
                    description=dataset.description,
                    price=common_pb2.Money(fen=_nice_price(rng, low, high)),
                    pricing_model=model,
                    licence=market_pb2.LicenceTerms(
                        purposes=rng.sample(PURPOSES, rng.randint(1, 3)),
                        term_days=rng.choice(TERMS),
                        no_resale=True,
                        domestic_only=rng.random() < 0.8,
                    ),
                    state=market_pb2.LISTING_STATE_LISTED,
                    auto_approve=rng.random() < 0.2,
                )
                yield draft, dataset


# ---------------------------------------------------------------- building a node's database


class _Recorder:
    """Stands in for the connection ``create_listing`` writes to: keeps the row it inserts."""

    def __init__(self) -> None:
        self.rows: list[dict[str, object]] = []

    def execute(self, sql: str, parameters: dict[str, object]) -> None:
        if not sql.lstrip().upper().startswith("INSERT INTO LISTINGS"):
            raise RuntimeError(f"create_listing ran a statement the benchmark does not know: {sql}")
        self.rows.append(dict(parameters))


def row_via_create_listing(
    draft: market_pb2.Listing, dataset: DatasetFacts, node_id: str, now: datetime
) -> dict[str, object]:
    """The row ``node.listings.create_listing`` inserts for this draft (it runs, unchanged)."""
    recorder = _Recorder()
    certified = dataset.certified()
    listings.create_listing(recorder, draft, certified, node_id, now)  # type: ignore[arg-type]
    (row,) = recorder.rows
    return row


@functools.cache
def _stamp(now: datetime) -> Timestamp:
    return to_timestamp(now)


def row_direct(
    draft: market_pb2.Listing, dataset: DatasetFacts, node_id: str, now: datetime
) -> dict[str, object]:
    """The same row, built without the per-listing validation (checked by :func:`check_rows`)."""
    listing = market_pb2.Listing()
    listing.CopyFrom(draft)
    listing.dataset_id = dataset.dataset_id
    listing.certificate_version = dataset.certificate_version
    listing.holder = dataset.holder
    listing.categories.extend(dataset.categories)
    listing.grade = dataset.grade  # type: ignore[assignment]
    listing.region_code = dataset.region_code
    listing.delivery = market_pb2.DELIVERY_METHOD_FILE
    listing.node_id = node_id
    listing.state = market_pb2.LISTING_STATE_LISTED
    listing.updated_at.CopyFrom(_stamp(now))
    listing.listing_id = listings.new_listing_id()
    row = listings._columns(listing)  # exactly how the node stores a listing
    row["created_at"] = now.astimezone(UTC).isoformat()
    return row


def _comparable(row: dict[str, object]) -> dict[str, object]:
    """A row with its random listing id taken out (also from the serialized listing)."""
    result = dict(row)
    result.pop("listing_id", None)
    stored = market_pb2.Listing.FromString(bytes(result.pop("listing")))  # type: ignore[arg-type]
    stored.ClearField("listing_id")
    result["listing"] = stored.SerializeToString(deterministic=True)
    return result


def check_rows(sample: int = 300) -> bool:
    """Whether :func:`row_direct` gives exactly what ``create_listing`` stores, on a sample."""
    now = datetime.now(UTC)
    corpus = iter(Corpus(LOCAL, seed=12345))
    for _ in range(sample):
        draft, dataset = next(corpus)
        exact = _comparable(row_via_create_listing(draft, dataset, LOCAL.node_id, now))
        if exact != _comparable(row_direct(draft, dataset, LOCAL.node_id, now)):
            return False
    return True


def build_database(  # noqa: PLR0917 (a worker-process entry point)
    path: str, node_id: str, count: int, seed: int, direct: bool, batch: int = 50_000
) -> dict[str, float]:
    """Fill a fresh node database at ``path`` with ``count`` LISTED listings of ``node_id``.

    Opened with the node's migrations; rows go to a temporary table, then
    into ``listings`` with one ``INSERT ... SELECT`` per batch: the node's
    triggers index each listing as they do for the node's own writes. Runs in
    a worker process; returns its timings.
    """
    started = time.perf_counter()
    exchange = next(e for e in FEDERATION if e.node_id == node_id)
    target = Path(path)
    target.unlink(missing_ok=True)
    conn = storage.connect(target, migrations=MIGRATIONS)
    # For the build only (a million listings in a quarter less time); the node reopens the
    # file with its own settings.
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -4000000")
    make_row = row_direct if direct else row_via_create_listing
    now = datetime.now(UTC)
    corpus = iter(Corpus(exchange, seed))
    # The columns the node's INSERT sets (the others keep their defaults), as it names them.
    columns = list(make_row(*next(iter(Corpus(exchange, seed))), node_id, now))
    names = ", ".join(columns)
    conn.execute(f"CREATE TEMP TABLE bench_rows AS SELECT {names} FROM main.listings WHERE 0")
    insert = f"INSERT INTO temp.bench_rows ({names}) VALUES ({', '.join('?' * len(columns))})"
    generate = index = 0.0
    done = 0
    while done < count:
        size = min(batch, count - done)
        mark = time.perf_counter()
        rows = []
        for number in range(size):
            draft, dataset = next(corpus)
            if number % 100 == 0:
                dataset.certified()  # the facts are valid (create_listing validates them all)
            row = make_row(draft, dataset, node_id, now)
            rows.append(tuple(row[name] for name in columns))
        mark2 = time.perf_counter()
        with storage.transaction(conn):
            conn.executemany(insert, rows)
            conn.execute(f"INSERT INTO main.listings ({names}) SELECT {names} FROM temp.bench_rows")
            conn.execute("DELETE FROM temp.bench_rows")
        generate += mark2 - mark
        index += time.perf_counter() - mark2
        done += size
    conn.execute("PRAGMA journal_mode = WAL")  # as provex.storage.connect left it
    (listed,) = conn.execute(
        "SELECT count(*) FROM listings WHERE state = ?", (market_pb2.LISTING_STATE_LISTED,)
    ).fetchone()
    conn.close()
    if listed != count:
        raise RuntimeError(f"{node_id}: {listed} listings listed, expected {count}")
    return {
        "seconds": time.perf_counter() - started,
        "generate_seconds": generate,
        "store_seconds": index,
        "rows_per_second": count / (time.perf_counter() - started),
        "bytes": float(target.stat().st_size),
    }


_LISTINGS_SQL = re.compile(
    r"^(?:(?!--).)*\b(listings|listings_\w+|listing_scopes|search_stats)\b",
    re.IGNORECASE | re.MULTILINE,
)
"""A name of the listings' tables or their search index's, outside an SQL comment."""


@functools.cache
def _storage_digest() -> str:
    """What the node's storage of listings looks like: its schema, and 50 rows it stores.

    Only the migrations that touch the listings or their search index count:
    a cached database lacking a later, unrelated migration (contracts, ...)
    gets it from the node itself when it starts on the copy.
    """
    digest = hashlib.sha256()
    for migration in MIGRATIONS:
        if _LISTINGS_SQL.search(migration.sql):
            digest.update(migration.sql.encode())
    now = datetime(2026, 1, 1, tzinfo=UTC)
    corpus = iter(Corpus(LOCAL, seed=777))
    for _ in range(50):
        row = _comparable(row_via_create_listing(*next(corpus), LOCAL.node_id, now))
        digest.update(repr(sorted(row.items())).encode())
    return digest.hexdigest()


def cache_key(node_id: str, count: int, seed: int) -> str:
    """The file name of a cached database: what it holds, and how the node stores it."""
    digest = hashlib.sha256(
        json.dumps([GENERATOR_VERSION, node_id, count, seed, _storage_digest()]).encode()
    )
    return f"{node_id}-{count}-{digest.hexdigest()[:16]}.db"


# ---------------------------------------------------------------- processes


async def cli(program: str, *args: str | Path) -> str:
    """Run ``provex-registry`` or ``provex-node`` to completion; its standard output."""
    process = await asyncio.create_subprocess_exec(
        str(BIN / program),
        *map(str, args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(CLI_TIMEOUT):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        raise SystemExit(f"{program} {' '.join(map(str, args))} failed: {err.decode()}")
    return out.decode()


@dataclass
class Server:
    """A running registry or node process and the endpoints it announced."""

    name: str
    state: Path
    process: asyncio.subprocess.Process
    endpoints: dict[str, Any] = field(default_factory=dict)

    def operator_spec(self) -> dict[str, str]:
        """Target and TLS files of the node's operator port, for the load client."""
        return {
            "target": self.endpoints["operator"],
            "ca": self.endpoints["operator_ca_certificate"],
            "cert": self.endpoints["operator_certificate"],
            "key": self.endpoints["operator_key"],
        }

    def operator_stub(self, channel: grpc.aio.Channel) -> node_pb2_grpc.OperatorServiceStub:
        return node_pb2_grpc.OperatorServiceStub(channel)

    def operator_channel(self) -> grpc.aio.Channel:
        spec = self.operator_spec()
        credentials = channel_credentials(
            Path(spec["ca"]).read_bytes(),
            Path(spec["cert"]).read_bytes(),
            Path(spec["key"]).read_bytes(),
        )
        return grpc.aio.secure_channel(spec["target"], credentials)


async def start_server(
    name: str, command: Sequence[str], state: Path, env: dict[str, str]
) -> Server:
    """Start a server; wait for its ``endpoints.json`` (standard output and errors to a log)."""
    (state / "run" / "endpoints.json").unlink(missing_ok=True)
    with (state.parent / f"{name}.log").open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            *command, stdout=log, stderr=log, env=dict(os.environ, **env)
        )
    server = Server(name, state, process)
    log_path = state.parent / f"{name}.log"
    waiting = asyncio.create_task(wait_for_endpoints(state))
    exited = asyncio.create_task(process.wait())
    try:
        done, _ = await asyncio.wait(
            {waiting, exited}, timeout=START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        if waiting not in done:
            raise SystemExit(
                f"{name} exited with {process.returncode}; see {log_path}"
                if exited in done
                else f"{name} not ready after {START_TIMEOUT:.0f} s; see {log_path}"
            )
        server.endpoints = waiting.result()
    except BaseException:
        await stop_server(server)
        raise
    finally:
        waiting.cancel()
        exited.cancel()
    return server


async def stop_server(server: Server) -> None:
    """SIGTERM, then wait (SIGKILL after 30 s)."""
    if server.process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            server.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(30):
                await server.process.wait()
        except TimeoutError:
            server.process.kill()
            await server.process.wait()


@contextlib.asynccontextmanager
async def servers() -> AsyncIterator[list[Server]]:
    """A list of servers, every one stopped on the way out (errors included)."""
    running: list[Server] = []
    try:
        yield running
    finally:
        await asyncio.gather(*(stop_server(server) for server in reversed(running)))


async def init_registry(workdir: Path) -> Path:
    """``provex-registry init`` and an admin (``bench``) for the invitations."""
    state = workdir / "registry"
    await cli("provex-registry", "init", "--state", state)
    await cli("provex-registry", "admin", "add", "bench", "--role", "admin", "--state", state)
    return state


async def start_registry(state: Path) -> Server:
    env = {
        "PROVEX_REGISTRY_PUBLIC_LISTEN": "127.0.0.1:0",
        "PROVEX_REGISTRY_FEDERATION_LISTEN": "127.0.0.1:0",
    }
    command = [str(BIN / "provex-registry"), "serve", "--state", str(state)]
    return await start_server(state.name, command, state, env)


async def invite(registry: Server, exchange: Exchange) -> str:
    """An invitation from the registry's admin (``EnrollmentService.CreateInvitation``)."""
    admin = registry.state / "admins" / "bench"
    credentials = channel_credentials(
        Path(registry.endpoints["ca_certificate"]).read_bytes(),
        (admin / "cert.pem").read_bytes(),
        (admin / "key.pem").read_bytes(),
    )
    async with grpc.aio.secure_channel(registry.endpoints["federation"], credentials) as channel:
        answer = await registry_pb2_grpc.EnrollmentServiceStub(channel).CreateInvitation(
            registry_pb2.CreateInvitationRequest(
                node_id=exchange.node_id,
                region_code=exchange.region_code,
                display_name=f"Exchange {exchange.node_id}",
                expires_at=to_timestamp(datetime.now(UTC) + timedelta(hours=1)),
            ),
            timeout=30,
        )
    return answer.invitation


async def create_node(registry: Server, workdir: Path, exchange: Exchange) -> Path:
    """``provex-node init``, an admin's invitation, ``provex-node enroll``: ready to serve."""
    state = workdir / exchange.node_id
    await cli(
        "provex-node", "init", "--state", state, "--node-id", exchange.node_id,
        "--region", exchange.region_code,
        "--peer-listen", "127.0.0.1:0", "--operator-listen", "127.0.0.1:0",
    )  # fmt: skip
    (state / "invitation.txt").write_text(await invite(registry, exchange))
    await cli(
        "provex-node", "enroll", "--state", state,
        "--invitation", f"@{state / 'invitation.txt'}",
        "--registry", registry.endpoints["public"],
        "--registry-federation", registry.endpoints["federation"],
        "--registry-ca", registry.endpoints["ca_certificate"],
    )  # fmt: skip
    return state


async def start_node(state: Path) -> Server:
    env = {
        "PROVEX_NODE_DIRECTORY_REFRESH_SECONDS": "0.5",
        "PROVEX_NODE_CHECKPOINT_POLL_SECONDS": "2",
    }
    command = [str(BIN / "provex-node"), "serve", "--state", str(state)]
    return await start_server(state.name, command, state, env)


# ---------------------------------------------------------------- queries


def query_mix(exchange: Exchange) -> list[tuple[str, market_pb2.SearchQuery]]:
    """The fixed mix of queries, as a buyer on ``exchange`` would send them."""
    holder = holders_of(exchange)["transport"][0][0]
    fen = common_pb2.Money
    q = market_pb2.SearchQuery
    return [
        ("zh2 交通", q(text="交通")),
        ("zh2 港口", q(text="港口")),
        ("zh2 客流", q(text="客流")),
        ("zh2 数据", q(text="数据")),
        ("zh 集装箱吞吐量", q(text="集装箱吞吐量")),
        ("zh 道路交通流量", q(text="道路交通流量")),
        ("zh 用电量统计", q(text="用电量统计")),
        ("zh 光伏发电", q(text="光伏发电")),
        ("zh 居民消费价格指数", q(text="居民消费价格指数")),
        ("zh 气象观测", q(text="气象观测")),
        ("en traffic flow", q(text="traffic flow")),
        ("en container throughput", q(text="container throughput")),
        ("en electricity", q(text="electricity")),
        ("en weather forecasts", q(text="weather forecasts")),
        ("en metro ridership", q(text="metro ridership")),
        ("mixed 广州 交通", q(text="广州 交通")),
        ("mixed 深圳市 港口", q(text="深圳市 港口")),
        ("mixed 2024 客流", q(text="2024 客流")),
        ("mixed Shanghai container", q(text="Shanghai container")),
        ("code product", q(text=f"{exchange.code_prefix}-0001234")),
        ("none 量子计算", q(text="量子计算")),
        ("filter category transport", q(category_prefix="transport")),
        ("filter category energy.renewables", q(category_prefix="energy.renewables")),
        ("filter region 440300", q(region_prefix="440300")),
        ("filter region 4401", q(region_prefix="4401")),
        ("filter price 1k-10k CNY", q(min_price=fen(fen=100_000), max_price=fen(fen=1_000_000))),
        ("filter holder", q(holder=holder)),
        ("filter important finance",
         q(grade=common_pb2.GRADE_IMPORTANT, category_prefix="finance")),
        ("combo 交通 transport.road", q(text="交通", category_prefix="transport.road")),
        (
            "combo traffic 4401 <=50k CNY",
            q(text="traffic", region_prefix="4401", max_price=fen(fen=5_000_000)),
        ),
        ("combo 价格 commerce >=1k CNY", q(text="价格", category_prefix="commerce",
                                           min_price=fen(fen=100_000))),
        (
            "combo enterprise credit 44 general",
            q(text="enterprise credit", region_prefix="44", grade=common_pb2.GRADE_GENERAL),
        ),
    ]  # fmt: skip


def _encode(queries: list[tuple[str, market_pb2.SearchQuery]]) -> list[dict[str, str]]:
    return [
        {"label": label, "query": base64.b64encode(query.SerializeToString()).decode()}
        for label, query in queries
    ]


async def run_client(spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``search_load.py`` in its own process; its JSON answer."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE / "search_load.py"),
        json.dumps(spec),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(float(spec["seconds"]) * 3 + 600):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        raise SystemExit(f"load client failed: {err.decode()}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def summarize(what: str, figures: dict[str, Any], labels: Sequence[str]) -> dict[str, float]:
    """Print one mode's latencies (overall and per query); return p50/p95/p99."""
    latencies = [ms for _, ms in figures["latencies_ms"]]
    result = {
        "count": len(latencies),
        "p50": percentile(latencies, 50),
        "p95": percentile(latencies, 95),
        "p99": percentile(latencies, 99),
        "mean": sum(latencies) / len(latencies) if latencies else math.nan,
    }
    print(
        f"{what}: {result['count']} queries, p50 {result['p50']:.2f} ms, "
        f"p95 {result['p95']:.2f} ms, p99 {result['p99']:.2f} ms, mean {result['mean']:.2f} ms, "
        f"errors {figures['errors']}, hits {figures['hits']}"
        + (
            f", fewest nodes answering {figures['answered_min']}, "
            f"unanswered {figures['unanswered']}"
            if what.startswith("federated")
            else ""
        ),
        flush=True,
    )
    for sample in figures["error_samples"]:
        print(f"  error: {sample}", flush=True)
    per_query: dict[int, list[float]] = {}
    for index, ms in figures["latencies_ms"]:
        per_query.setdefault(int(index), []).append(ms)
    for index, label in enumerate(labels):
        values = per_query.get(index, [])
        if values:
            print(
                f"  {label:<38} p50 {percentile(values, 50):9.2f} ms  "
                f"max {max(values):9.2f} ms  (n={len(values)})",
                flush=True,
            )
    return result


# ---------------------------------------------------------------- verification


def registration(holder: str, number: int) -> registry_pb2.RegisterDatasetRequest:
    key = f"bench-verify-{number}"
    return registry_pb2.RegisterDatasetRequest(
        idempotency_key=key,
        dataset=dataset_pb2.DatasetDescription(
            holder=holder,
            title=f"广州市道路交通流量逐小时数据 {number} / Guangzhou hourly road traffic {number}",
            description="Hourly traffic counts at signalised intersections, anonymised.",
            categories=["transport.road.traffic_flow"],
            personal_info=common_pb2.PersonalInfoProfile(individuals=0),
            content_digest=hashlib.sha256(key.encode()).digest(),
            size_bytes=1_000_000 + number,
            record_count=10_000,
            lawful_source="collected by the municipal traffic authority's own sensors",
            rights=dataset_pb2.DataRights(
                resource_holder=holder, processing_user=holder, product_operator=holder
            ),
            language="zh",
        ),
    )


async def register_bundles(
    registry: Server, node_state: Path, exchange: Exchange, count: int
) -> list[common_pb2.Bundle]:
    """``count`` certificate bundles from the registry, registered as the node (mutual TLS)."""
    tls = node_state / "tls"
    credentials = channel_credentials(
        (tls / "ca.pem").read_bytes(),
        (tls / "node.pem").read_bytes(),
        (tls / "node-key.pem").read_bytes(),
    )
    holder = holders_of(exchange)["transport"][1][0]
    async with grpc.aio.secure_channel(registry.endpoints["federation"], credentials) as channel:
        await registry_pb2_grpc.MemberServiceStub(channel).ReportMember(
            registry_pb2.ReportMemberRequest(
                member=registry_pb2.Member(
                    credit_code=holder,
                    name="广州市交通数据科技有限公司",
                    region_code=exchange.region_code,
                    node_id=exchange.node_id,
                    country="CN",
                )
            ),
            timeout=30,
        )
        stub = registry_pb2_grpc.CertificateServiceStub(channel)
        window = asyncio.Semaphore(16)

        async def one(number: int) -> common_pb2.Bundle:
            async with window:
                answer = await stub.RegisterDataset(registration(holder, number), timeout=30)
                return answer.certificate

        return list(await asyncio.gather(*(one(n) for n in range(count))))


def verify_rates(
    bundles: Sequence[common_pb2.Bundle], root: trust.TrustRoot, seconds: float
) -> tuple[float, float]:
    """Bundles verified per second and raw Ed25519 verifications per second, interleaved."""
    key = Ed25519PrivateKey.generate()
    message = b"m" * 600
    signature = key.sign(message)
    public = key.public_key()
    for bundle in bundles:  # Warm up, and make sure every bundle verifies.
        verify_certificate(bundle, root)
    verified = raw = 0
    verify_time = raw_time = 0.0
    slices = 10
    for _ in range(slices):
        started = time.perf_counter()
        while time.perf_counter() - started < seconds / (2 * slices):
            for bundle in bundles:
                verify_certificate(bundle, root)
            verified += len(bundles)
        verify_time += time.perf_counter() - started
        started = time.perf_counter()
        while time.perf_counter() - started < seconds / (2 * slices):
            for _ in range(500):
                public.verify(signature, message)
            raw += 500
        raw_time += time.perf_counter() - started
    return verified / verify_time, raw / raw_time


def profile_verification(
    bundles: Sequence[common_pb2.Bundle], root: trust.TrustRoot, count: int
) -> None:
    """Print where verify_certificate spends its time (cProfile, top functions by own time)."""
    profiler = cProfile.Profile()
    rounds = max(1, count // len(bundles))
    profiler.enable()
    for _ in range(rounds):
        for bundle in bundles:
            verify_certificate(bundle, root)
    profiler.disable()
    stats = pstats.Stats(profiler)
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in entries.values())
    verified = rounds * len(bundles)
    ed25519_calls = sum(
        entry[1]
        for (_, _, name), entry in entries.items()
        if "verify" in name and "Ed25519PublicKey" in name
    )
    ed25519_time = sum(
        entry[2]
        for (_, _, name), entry in entries.items()
        if "verify" in name and "Ed25519PublicKey" in name
    )
    print(
        f"verify_certificate profile: {verified} bundles, {ed25519_calls / verified:.2f} Ed25519 "
        f"verifications per bundle, {100 * ed25519_time / total:.0f}% of the time in them; "
        "top functions by own time:",
        flush=True,
    )
    ranked = sorted(entries.items(), key=lambda item: item[1][2], reverse=True)[:10]
    for (filename, line, name), (_, calls, own, _, _) in ranked:
        where = f"{Path(filename).name}:{line}" if line else ""
        print(
            f"  {100 * own / total:5.1f}%  {own / verified * 1e6:7.2f} us/bundle  "
            f"{calls / verified:5.2f} calls/bundle  {name} {where}",
            flush=True,
        )


# ---------------------------------------------------------------- profiles (--profile)


class Spy:
    """py-spy recording server processes while a phase runs; off unless ``--profile DIR``."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.recording: list[tuple[str, Path, asyncio.subprocess.Process]] = []

    async def start(self, name: str, server: Server) -> None:
        if self.directory is None:
            return
        output = self.directory / f"{name}.txt"
        process = await asyncio.create_subprocess_exec(
            str(BIN / "py-spy"), "record", "--pid", str(server.process.pid), "--format", "raw",
            "--output", str(output), "--rate", "200", "--nonblocking",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        self.recording.append((name, output, process))

    async def stop(self) -> None:
        """Stop every recording (SIGINT writes the file) and print what each one saw."""
        for name, output, process in self.recording:
            if process.returncode is None:
                process.send_signal(signal.SIGINT)
            try:
                async with asyncio.timeout(30):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
            if output.exists():
                print_profile(name, output)
        self.recording = []


def print_profile(name: str, path: Path, top: int = 12) -> None:
    """The busiest innermost frames of a py-spy raw file, and of the project's own code."""
    leaves: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        leaves[frames[-1]] = leaves.get(frames[-1], 0) + count
        mine = next(
            (frame for frame in reversed(frames) if "(node/" in frame or "(provex/" in frame),
            "(elsewhere)",
        )
        own[mine] = own.get(mine, 0) + count
    print(f"profile {name} ({path}): {total} samples", flush=True)
    for title, table in (("innermost frames", leaves), ("innermost node/provex frames", own)):
        print(f"  {title}:", flush=True)
        for frame, count in sorted(table.items(), key=lambda item: -item[1])[:top]:
            print(f"    {100 * count / max(total, 1):5.1f}%  {frame}", flush=True)


# ---------------------------------------------------------------- the run


@dataclass(frozen=True)
class Plan:
    """Sizes and budgets of a run."""

    listings_local: int
    listings_per_node: int
    max_queries_local: int
    max_queries_federated: int
    seconds_local: float
    seconds_federated: float
    warmup_seconds: float
    bundles: int
    verify_seconds: float


FULL = Plan(1_000_000, 100_000, 2_000, 2_000, 120.0, 150.0, 20.0, 200, 10.0)
QUICK = Plan(50_000, 10_000, 320, 320, 5.0, 6.0, 3.0, 100, 2.0)
SEED = 20_260_101


@dataclass(frozen=True)
class Build:
    """One database to build: for the node ``node_id``, ``count`` listings."""

    name: str
    node_id: str
    count: int
    seed: int


class Databases:
    """Databases built by worker processes, two at a time, or copied from the cache."""

    def __init__(self, directory: Path, cache: Path | None, direct: bool) -> None:
        self.directory = directory
        self.cache = cache
        self.direct = direct
        self.workers = asyncio.Semaphore(2)
        self.tasks: dict[str, asyncio.Task[dict[str, float] | None]] = {}
        self.started = time.perf_counter()

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.db"

    def submit(self, build: Build) -> None:
        self.tasks[build.name] = asyncio.create_task(self._build(build))

    async def _build(self, build: Build) -> dict[str, float] | None:
        cached = None
        if self.cache is not None:
            cached = self.cache / cache_key(build.node_id, build.count, build.seed)
            if cached.exists():
                await asyncio.to_thread(shutil.copyfile, cached, self.path(build.name))
                return None
        async with self.workers:
            how = "direct" if self.direct else "exact"
            process = await asyncio.create_subprocess_exec(
                sys.executable, str(Path(__file__).resolve()), "--build",
                str(self.path(build.name)), build.node_id, str(build.count), str(build.seed), how,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            try:
                out, err = await process.communicate()
            finally:
                if process.returncode is None:
                    process.terminate()
                    await process.wait()
        if process.returncode != 0:
            raise SystemExit(f"building {build.name} failed: {err.decode()}")
        if cached is not None:
            for stale in cached.parent.glob(f"{build.node_id}-{build.count}-*.db"):
                stale.unlink()  # built by other code: never used again
            partial = cached.with_suffix(".partial")
            await asyncio.to_thread(shutil.copyfile, self.path(build.name), partial)
            partial.replace(cached)  # whole or not at all, should another run read it
        figures: dict[str, float] = json.loads(out.decode().strip().splitlines()[-1])
        return figures

    async def wait(self) -> dict[str, dict[str, float] | None]:
        """Every build's figures (None for a cached one)."""
        return {name: await task for name, task in self.tasks.items()}

    async def cancel(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)


def install(database: Path, state: Path) -> None:
    """Make ``database`` the node's ``node.db`` (the node is stopped)."""
    for suffix in ("", "-wal", "-shm"):
        (state / f"node.db{suffix}").unlink(missing_ok=True)
    shutil.move(database, state / "node.db")


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def code_digest() -> str:
    """Which code the servers run: SHA-256 of every source file of node, registry and provex.

    Uncommitted changes included; a change during a run means the processes
    started after it run other code than those started before (see
    :class:`CodeWatch`).
    """
    digest = hashlib.sha256()
    for package in (Path(listings.__file__).parent, Path(storage.__file__).parent):
        for path in sorted(package.rglob("*.py")):
            digest.update(str(path.relative_to(package.parent)).encode())
            digest.update(path.read_bytes())
    registry_package = Path(national_catalog.__code__.co_filename).parent
    for path in sorted(registry_package.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


class CodeWatch:
    """Notices when the servers' code changes during a run (someone editing meanwhile)."""

    def __init__(self) -> None:
        self.initial = code_digest()
        self.changed_at: list[str] = []

    def check(self, moment: str) -> None:
        current = code_digest()
        if current != self.initial and not self.changed_at:
            print(
                f"WARNING: the node/registry/provex code changed before {moment} "
                f"({self.initial} -> {current}): later figures come from other code",
                flush=True,
            )
        if current != self.initial:
            self.changed_at.append(moment)


async def main(quick: bool, cache: Path | None, keep: Path | None, profile: Path | None) -> None:
    plan = QUICK if quick else FULL
    began = time.perf_counter()
    load_at_start = load_average()
    check_categories()
    direct = check_rows()
    print(
        f"mode: {'quick' if quick else 'full'}; {plan.listings_local:,} listings on one node "
        f"(local), {len(FEDERATION)} nodes x {plan.listings_per_node:,} (federated); listing rows "
        + (
            "built with node.listings._columns (identical to create_listing on 300 listings)"
            if direct
            else "built by node.listings.create_listing (_columns differs from it)"
        )
        + f"; load average {load_at_start}",
        flush=True,
    )
    watch = CodeWatch()
    print(f"code: {watch.initial} (node, registry, provex sources)", flush=True)
    for directory in (cache, profile):
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
    spy = Spy(profile)
    with contextlib.ExitStack() as stack:
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            workdir = keep
        else:
            scratch = tempfile.TemporaryDirectory(prefix="provex-search-")
            workdir = Path(stack.enter_context(scratch))
        (workdir / "builds").mkdir(exist_ok=True)
        databases = Databases(workdir / "builds", cache, direct)
        databases.submit(Build("local", LOCAL.node_id, plan.listings_local, SEED))
        for exchange in FEDERATION:
            databases.submit(
                Build(exchange.node_id, exchange.node_id, plan.listings_per_node, SEED + 1)
            )
        try:
            async with servers() as running:
                figures = await run_phases(
                    plan, workdir, databases=databases, running=running, spy=spy, watch=watch
                )
        finally:
            await databases.cancel()
            await spy.stop()
    phase = time.perf_counter()
    verify_rate, ed25519_rate = verify_rates(
        figures["bundles"], figures["root"], plan.verify_seconds
    )
    print(
        f"verify_certificate: {verify_rate:.0f} bundles/s over {len(figures['bundles'])} bundles "
        f"({len({b.checkpoint for b in figures['bundles']})} distinct checkpoints); raw Ed25519 "
        f"verify: {ed25519_rate:.0f}/s (600-byte messages), interleaved over "
        f"{plan.verify_seconds:.0f} s",
        flush=True,
    )
    profile_verification(figures["bundles"], figures["root"], 500 if quick else 2000)
    seconds = {**figures["seconds"], "verify": time.perf_counter() - phase}
    total_seconds = time.perf_counter() - began
    print(f"total: {total_seconds:.1f} s; load average {load_average()}", flush=True)
    local, single, federated = figures["local"], figures["single"], figures["federated"]
    ratio = federated["p95"] / single["p95"]
    summary = {
        "mode": "quick" if quick else "full",
        "listings_local": plan.listings_local,
        "listings_per_node": plan.listings_per_node,
        "nodes": len(FEDERATION),
        "local_p50_ms": round(local["p50"], 3),
        "local_p99_ms": round(local["p99"], 3),
        "local_queries": local["count"],
        "single_p95_ms": round(single["p95"], 3),
        "federated_p95_ms": round(federated["p95"], 3),
        "federated_ratio": round(ratio, 3),
        "federated_queries": federated["count"],
        "federated_unanswered": figures["unanswered"],
        "query_errors": figures["errors"],
        "verify_rate": round(verify_rate, 1),
        "ed25519_verify_rate": round(ed25519_rate, 1),
        "verify_ratio": round(verify_rate / ed25519_rate, 3),
        "phase_seconds": {name: round(value, 1) for name, value in seconds.items()},
        "total_seconds": round(total_seconds, 1),
        "load_average_at_start": load_at_start,
        "code": watch.initial,
        "code_changed_during_run": bool(watch.changed_at),
        "valid": not (figures["errors"] or figures["unanswered"] or watch.changed_at),
        "targets_met": {
            "local_p50_ms": local["p50"] <= 5,
            "federated_ratio": ratio <= 2,
            "verify_ratio": verify_rate / ed25519_rate >= 0.8,
        },
    }
    print(json.dumps(summary, ensure_ascii=False), flush=True)


async def run_phases(
    plan: Plan,
    workdir: Path,
    *,
    databases: Databases,
    running: list[Server],
    spy: Spy,
    watch: CodeWatch,
) -> dict[str, Any]:
    """Set up, build, then the local and the federated phase; bundles for the last one."""
    began = time.perf_counter()
    registry = await start_registry(await init_registry(workdir))
    running.append(registry)
    created = await asyncio.gather(*(create_node(registry, workdir, e) for e in FEDERATION))
    states = {exchange.node_id: state for exchange, state in zip(FEDERATION, created, strict=True)}
    print(
        f"registry and {len(FEDERATION)} nodes enrolled after {time.perf_counter() - began:.1f} s "
        "(while the databases build)",
        flush=True,
    )
    built = await databases.wait()
    build_seconds = time.perf_counter() - databases.started
    for name, figures in built.items():
        if figures is None:
            print(f"database {name}: from the cache", flush=True)
            continue
        print(
            f"database {name}: built in {figures['seconds']:.1f} s (rows "
            f"{figures['generate_seconds']:.1f} s, into the node's tables and index "
            f"{figures['store_seconds']:.1f} s, {figures['rows_per_second']:.0f} listings/s), "
            f"{figures['bytes'] / 1e6:.0f} MB",
            flush=True,
        )
    print(f"databases ready after {build_seconds:.1f} s", flush=True)
    for exchange in FEDERATION[1:]:
        install(databases.path(exchange.node_id), states[exchange.node_id])
    home_state = states[LOCAL.node_id]
    install(databases.path("local"), home_state)
    mix = query_mix(LOCAL)
    labels = [label for label, _ in mix]

    # Local: the home node alone, holding the big database.
    phase = time.perf_counter()
    watch.check("the local phase")
    big = await start_node(home_state)
    running.append(big)
    await spy.start("local", big)
    local = await run_client(
        {
            **big.operator_spec(),
            "queries": _encode(mix),
            "modes": ["search"],
            "warmup_seconds": plan.warmup_seconds,
            "max_queries": plan.max_queries_local,
            "seconds": plan.seconds_local,
        }
    )
    await spy.stop()
    local_figures = summarize(
        f"local Search, {plan.listings_local:,} listings", local["modes"]["search"], labels
    )
    await stop_server(big)
    local_seconds = time.perf_counter() - phase
    print(f"local phase: {local_seconds:.1f} s", flush=True)

    # Federated: the home node restarted with its 100,000 listings, and its 7 peers.
    phase = time.perf_counter()
    install(databases.path(LOCAL.node_id), home_state)
    watch.check("the federated phase")
    nodes = list(await asyncio.gather(*(start_node(states[e.node_id]) for e in FEDERATION)))
    running.extend(nodes)
    home = nodes[0]
    ready = await wait_for_federation(home, len(FEDERATION))
    print(f"federation: {len(FEDERATION)} nodes answering after {ready:.1f} s", flush=True)
    await spy.start("federated-home", home)
    await spy.start("federated-peer", nodes[1])
    federation = await run_client(
        {
            **home.operator_spec(),
            "queries": _encode(mix),
            "modes": ["search", "federated"],
            "warmup_seconds": plan.warmup_seconds,
            "max_queries": plan.max_queries_federated,
            "seconds": plan.seconds_federated,
            "peer_deadline_ms": 30_000,
        }
    )
    await spy.stop()
    single_figures = summarize(
        f"single Search, one node of {plan.listings_per_node:,}",
        federation["modes"]["search"],
        labels,
    )
    federated_figures = summarize(
        f"federated FederatedSearch, {len(FEDERATION)} nodes x {plan.listings_per_node:,}",
        federation["modes"]["federated"],
        labels,
    )
    federated_seconds = time.perf_counter() - phase
    print(f"federated phase: {federated_seconds:.1f} s", flush=True)

    # Bundles for the verification (measured once every process is stopped).
    watch.check("the verification")
    bundles = await register_bundles(registry, home_state, LOCAL, plan.bundles)
    identity = json.loads((home_state / "identity.json").read_text())
    root = trust.load_trust_root(
        (home_state / "trust" / "root-1.json").read_bytes(),
        identity["trust_root_digest"],
        datetime.now(UTC),
    ).root
    return {
        "local": local_figures,
        "single": single_figures,
        "federated": federated_figures,
        "unanswered": federation["modes"]["federated"]["unanswered"],
        "errors": sum(
            figures["errors"]
            for figures in (*local["modes"].values(), *federation["modes"].values())
        ),
        "seconds": {
            "build": build_seconds,
            "local": local_seconds,
            "federated": federated_seconds,
        },
        "bundles": bundles,
        "root": root,
    }


async def wait_for_federation(home: Server, expected: int, patience: float = 90.0) -> float:
    """Until a FederatedSearch from ``home`` is answered by ``expected`` nodes; seconds waited."""
    started = time.perf_counter()
    last: Any = None
    async with home.operator_channel() as channel:
        stub = home.operator_stub(channel)
        while time.perf_counter() - started < patience:
            try:
                answer = await stub.FederatedSearch(
                    node_pb2.FederatedSearchRequest(
                        query=market_pb2.SearchQuery(text="量子计算"), peer_deadline_ms=10_000
                    ),
                    timeout=30,
                )
                last = answer
                if len(set(answer.answered)) == expected and not answer.unanswered:
                    return time.perf_counter() - started
            except grpc.aio.AioRpcError as error:
                last = error
            await asyncio.sleep(0.5)
    raise SystemExit(f"the federation never answered from {expected} nodes: {last}")


def build_main(arguments: Sequence[str]) -> None:
    """``--build PATH NODE_ID COUNT SEED direct|exact``: one database, figures as JSON."""
    path, node_id, count, seed, how = arguments
    figures = build_database(path, node_id, int(count), int(seed), how == "direct")
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--build"]:
        build_main(sys.argv[2:])
        sys.exit(0)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller databases, under a minute")
    parser.add_argument(
        "--cache",
        type=Path,
        default=DEFAULT_CACHE,
        help=f"built databases are kept here for later runs (default {DEFAULT_CACHE})",
    )
    parser.add_argument("--no-cache", action="store_true", help="build every database afresh")
    parser.add_argument("--keep", type=Path, help="state directories and logs here, kept")
    parser.add_argument(
        "--profile", type=Path, help="py-spy the nodes while measuring; raw files here"
    )
    arguments = parser.parse_args()
    cache = None if arguments.no_cache else arguments.cache
    asyncio.run(main(arguments.quick, cache, arguments.keep, arguments.profile))
