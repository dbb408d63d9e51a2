"""The catalog on the wire: releases round-trip exactly; malformed wire data is refused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from provex import catalog as wire
from provex.errors import FailedPrecondition, InvalidArgument, ProvexError
from provex.grading import GradingRules
from provex.v1 import catalog_pb2, common_pb2
from registry.seed_catalog import national_catalog, national_rules

RELEASE = wire.Release(national_catalog(), GradingRules(1, national_rules().rules))
WHEN = datetime(2026, 11, 25, tzinfo=UTC)


def test_the_national_release_round_trips() -> None:
    message = wire.release_to_proto(RELEASE, WHEN, "spiffe://provex.local/admin/root")
    decoded = wire.release_from_proto(
        catalog_pb2.CatalogRelease.FromString(message.SerializeToString())
    )
    assert decoded == RELEASE
    assert message.published_by.spiffe_id == "spiffe://provex.local/admin/root"


def _broken(change: str) -> catalog_pb2.CatalogRelease:
    message = wire.release_to_proto(RELEASE, WHEN, "spiffe://provex.local/admin/root")
    first = message.entries[0]
    child = next(e for e in message.entries if e.code.count(".") == 1)
    if change == "grade unspecified":
        first.min_grade = common_pb2.GRADE_UNSPECIFIED
    elif change == "personal info unspecified":
        first.personal_info = common_pb2.PERSONAL_INFO_CLASS_UNSPECIFIED
    elif change == "cross-border unspecified":
        first.cross_border = common_pb2.CROSS_BORDER_RULE_UNSPECIFIED
    elif change == "rule kind unspecified":
        message.rules[0].kind = catalog_pb2.GRADING_RULE_KIND_UNSPECIFIED
    elif change == "orphan entry":
        message.entries.add().CopyFrom(child)
        message.entries[-1].code = "nowhere.orphan"
    elif change == "child graded below parent":
        sector = next(e for e in message.entries if "." not in e.code)
        sector.min_grade = common_pb2.GRADE_CORE  # its children stay lower
    return message


CASES = [
    "grade unspecified",
    "personal info unspecified",
    "cross-border unspecified",
    "rule kind unspecified",
    "orphan entry",
    "child graded below parent",
]


@pytest.mark.parametrize("change", CASES)
def test_malformed_releases_are_refused(change: str) -> None:
    with pytest.raises((InvalidArgument, FailedPrecondition)) as raised:
        wire.release_from_proto(_broken(change))
    assert isinstance(raised.value, ProvexError)
    assert str(raised.value)
