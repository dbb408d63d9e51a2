"""The console's pure parts: node health, the catalog tree, the statistics series.

The endpoints themselves run against a live registry in
tests/integration/test_console.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from provex.v1 import catalog_pb2, common_pb2, supervision_pb2
from registry.console.views import catalog_tree, node_health, statistics_series


@pytest.mark.parametrize(
    ("status", "days_left", "lag", "health", "why"),
    [
        ("active", 80.0, 0, "ok", "witnessing"),
        ("active", 80.0, 99, "ok", "witnessing"),
        ("active", 80.0, 100, "warning", "100 entries behind"),
        ("active", 80.0, None, "warning", "never cosigned"),
        ("active", 13.9, 0, "warning", "expires in 14 days"),
        ("active", 14.0, 0, "ok", "witnessing"),
        ("active", 0.0, 0, "down", "expired"),
        ("revoked", 80.0, 0, "down", "node is revoked"),
    ],
)
def test_node_health(status: str, days_left: float, lag: int | None, health: str, why: str) -> None:
    found, reason = node_health(status, days_left, lag)
    assert found == health and why in reason


def _entry(code: str, grade: int = common_pb2.GRADE_GENERAL) -> catalog_pb2.CatalogEntry:
    return catalog_pb2.CatalogEntry(
        code=code, title_zh="中文", title_en=code, min_grade=common_pb2.Grade.ValueType(grade)
    )


def _shape(nodes: list[dict[str, Any]]) -> list[tuple[str, bool, list[Any]]]:
    return [(n["code"], n["entry"] is not None, _shape(n["children"])) for n in nodes]


@pytest.mark.parametrize(
    ("codes", "shape"),
    [
        ([], []),
        (["geo"], [("geo", True, [])]),
        (
            ["geo.mapping", "geo", "agriculture"],
            [("agriculture", True, []), ("geo", True, [("geo.mapping", True, [])])],
        ),
        # A parent missing from the release is implied (no entry of its own).
        (
            ["health.medical.inpatient", "health.medical.outpatient"],
            [
                (
                    "health",
                    False,
                    [
                        (
                            "health.medical",
                            False,
                            [
                                ("health.medical.inpatient", True, []),
                                ("health.medical.outpatient", True, []),
                            ],
                        )
                    ],
                )
            ],
        ),
    ],
)
def test_catalog_tree(codes: list[str], shape: list[Any]) -> None:
    assert _shape(catalog_tree(_entry(code) for code in codes)) == shape


def test_catalog_tree_entry_fields() -> None:
    (geo,) = catalog_tree([_entry("geo", common_pb2.GRADE_IMPORTANT)])
    assert geo["segment"] == "geo"
    assert geo["entry"]["min_grade"] == "important"
    assert geo["entry"]["cross_border"] == "unspecified"


def _row(values: tuple[str, int, str, int, int, int]) -> supervision_pb2.StatisticsRow:
    region, grade, month, trades, fen, exports = values
    return supervision_pb2.StatisticsRow(
        region_code=region,
        category="geo.mapping",
        grade=common_pb2.Grade.ValueType(grade),
        month=month,
        trades=trades,
        value=common_pb2.Money(fen=fen),
        exports=exports,
    )


ROWS = [
    _row(values)
    for values in (
        ("440100", common_pb2.GRADE_GENERAL, "2026-10", 2, 300, 1),
        ("440100", common_pb2.GRADE_IMPORTANT, "2026-11", 1, 50, 0),
        ("310000", common_pb2.GRADE_GENERAL, "2026-11", 4, 1000, 2),
    )
]


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("month", {"2026-10": (2, 300, 1), "2026-11": (5, 1050, 2)}),
        ("region_code", {"310000": (4, 1000, 2), "440100": (3, 350, 1)}),
        ("grade", {"general": (6, 1300, 3), "important": (1, 50, 0)}),
    ],
)
def test_statistics_series(key: str, expected: dict[str, tuple[int, int, int]]) -> None:
    series = statistics_series(ROWS, key)
    assert [p["key"] for p in series] == sorted(expected)
    assert {p["key"]: (p["trades"], p["value_fen"], p["exports"]) for p in series} == expected
