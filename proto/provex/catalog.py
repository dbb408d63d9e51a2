"""The catalog on the wire: a signed ``CatalogRelease`` <-> :mod:`provex.grading` objects.

The registry publishes each catalog version as a ``provex.v1.CatalogRelease``
(entries and grading rules); nodes decode the same release into a
:class:`provex.grading.Catalog` and :class:`provex.grading.GradingRules`, so
both compute grades from identical data. Grading rules are versioned with the
catalog: the rules of release N have version N.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import TypeVar

from provex.errors import InvalidArgument
from provex.grading import (
    Catalog,
    CatalogEntry,
    CrossBorderRule,
    Grade,
    GradingRule,
    GradingRules,
    PersonalInfoClass,
    RuleKind,
)
from provex.timestamps import to_timestamp
from provex.v1 import catalog_pb2, common_pb2

EnumT = TypeVar("EnumT", bound=Enum)


@dataclass(frozen=True)
class Release:
    """One catalog version and the grading rules published with it."""

    catalog: Catalog
    rules: GradingRules


def _member(enum_class: type[EnumT], wire_name: str, prefix: str, field: str) -> EnumT:
    try:
        return enum_class[wire_name.removeprefix(prefix)]
    except KeyError:
        raise InvalidArgument(f"{field}: {wire_name} is not allowed here") from None


def _grade_to_proto(grade: Grade) -> common_pb2.Grade.ValueType:
    return common_pb2.Grade.Value(f"GRADE_{grade.name}")


def _grade_from_proto(value: common_pb2.Grade.ValueType) -> Grade:
    return _member(Grade, common_pb2.Grade.Name(value), "GRADE_", "grade")


def entry_to_proto(entry: CatalogEntry) -> catalog_pb2.CatalogEntry:
    """The wire form of a catalog entry."""
    return catalog_pb2.CatalogEntry(
        code=entry.code,
        title_zh=entry.title_zh,
        title_en=entry.title_en,
        min_grade=_grade_to_proto(entry.min_grade),
        personal_info=common_pb2.PersonalInfoClass.Value(
            f"PERSONAL_INFO_CLASS_{entry.personal_info.name}"
        ),
        tradable=entry.tradable,
        cross_border=common_pb2.CrossBorderRule.Value(
            f"CROSS_BORDER_RULE_{entry.cross_border.name}"
        ),
        owner=entry.owner,
    )


def entry_from_proto(message: catalog_pb2.CatalogEntry) -> CatalogEntry:
    """A validated catalog entry from its wire form (InvalidArgument when malformed)."""
    personal = common_pb2.PersonalInfoClass.Name(message.personal_info)
    cross_border = common_pb2.CrossBorderRule.Name(message.cross_border)
    return CatalogEntry(
        code=message.code,
        title_zh=message.title_zh,
        title_en=message.title_en,
        min_grade=_grade_from_proto(message.min_grade),
        personal_info=_member(
            PersonalInfoClass, personal, "PERSONAL_INFO_CLASS_", f"{message.code}.personal_info"
        ),
        tradable=message.tradable,
        cross_border=_member(
            CrossBorderRule, cross_border, "CROSS_BORDER_RULE_", f"{message.code}.cross_border"
        ),
        owner=message.owner,
    )


def rule_to_proto(rule: GradingRule) -> catalog_pb2.GradingRule:
    """The wire form of a grading rule."""
    return catalog_pb2.GradingRule(
        id=rule.id,
        description=rule.description,
        kind=catalog_pb2.GradingRuleKind.Value(f"GRADING_RULE_KIND_{rule.kind.name}"),
        threshold=rule.threshold,
        min_grade=_grade_to_proto(rule.grade) if rule.grade else common_pb2.GRADE_UNSPECIFIED,
    )


def rule_from_proto(message: catalog_pb2.GradingRule) -> GradingRule:
    """A validated grading rule from its wire form."""
    kind_name = catalog_pb2.GradingRuleKind.Name(message.kind)
    grade = None
    if message.min_grade != common_pb2.GRADE_UNSPECIFIED:
        grade = _grade_from_proto(message.min_grade)
    return GradingRule(
        id=message.id,
        description=message.description,
        kind=_member(RuleKind, kind_name, "GRADING_RULE_KIND_", f"rule {message.id}.kind"),
        threshold=message.threshold,
        grade=grade,
    )


def release_to_proto(
    release: Release, published_at: datetime, published_by: str
) -> catalog_pb2.CatalogRelease:
    """The signed payload of a catalog release."""
    return catalog_pb2.CatalogRelease(
        version=release.catalog.version,
        entries=[entry_to_proto(entry) for entry in release.catalog.entries.values()],
        rules=[rule_to_proto(rule) for rule in release.rules.rules],
        published_at=to_timestamp(published_at),
        published_by=common_pb2.Actor(spiffe_id=published_by),
    )


def release_from_proto(message: catalog_pb2.CatalogRelease) -> Release:
    """Decode and check a release: every tree rule of the catalog holds (else it raises)."""
    catalog = Catalog.from_entries(message.version, [entry_from_proto(e) for e in message.entries])
    rules = GradingRules(message.version, tuple(rule_from_proto(r) for r in message.rules))
    return Release(catalog, rules)
