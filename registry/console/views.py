"""What the supervision console shows, as JSON-ready dicts, read through the registry's books.

One function per ``/api/`` endpoint of :mod:`registry.console.server`. Each
takes the authenticated :class:`~registry.authz.Caller` (an admin, auditor or
supervisor: the server refuses everyone else first) and narrows what it reads
to a supervisor's province the way the gRPC services do
(:func:`registry.authz.scope_prefix`). Nothing here writes.

Node health is what the registry itself knows of a node, without calling it:
its status, how long its certificate has left (under
:data:`CERTIFICATE_WARNING_DAYS` is a warning, as in the documented alert),
and whether it cosigned (witnessed) a recent checkpoint of the log.
"""

from __future__ import annotations

import base64
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from provex.checkpoint import Checkpoint, SignedNote, cosignature_timestamp
from provex.timestamps import from_timestamp, utc_now
from provex.v1 import catalog_pb2, common_pb2, supervision_pb2
from registry.authz import Caller, Role, scope_prefix
from registry.catalog import CatalogBook
from registry.enrollment import NodeBook
from registry.supervision import Supervision
from registry.witnesses import WitnessBook

CERTIFICATE_WARNING_DAYS = 14
"""A node certificate expiring within this many days makes the node's health a warning."""
WITNESS_LAG_WARNING = 100
"""A node whose last cosigned checkpoint is this many entries behind the latest is lagging."""

Json = dict[str, Any]


@dataclass(frozen=True)
class ConsoleSources:
    """The registry's parts the console reads (built by :mod:`registry.server`)."""

    nodes: NodeBook
    catalog: CatalogBook
    witnesses: WitnessBook
    supervision: Supervision


def _iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment is not None else ""


def _grade(grade: int) -> str:
    """``GRADE_IMPORTANT`` -> "important"; "unspecified" for 0."""
    return common_pb2.Grade.Name(common_pb2.Grade.ValueType(grade)).removeprefix("GRADE_").lower()


def whoami(caller: Caller) -> Json:
    """Who the page is showing data to, and the scope of what it shows."""
    return {
        "caller": str(caller),
        "name": caller.name,
        "role": caller.role.value,
        "scope": caller.region if caller.role is Role.SUPERVISOR else "",
    }


# ---------------------------------------------------------------- checkpoint and witnesses


@dataclass(frozen=True)
class _Latest:
    checkpoint: Checkpoint
    note: str
    cosigners: list[tuple[str, int]]


async def _latest(sources: ConsoleSources) -> _Latest:
    note = await sources.witnesses.cosigned_checkpoint()
    signed = SignedNote.parse(note)
    # The first signature is the log's own; every further line is a node's cosignature.
    cosigners = [(s.name, cosignature_timestamp(s.signature)) for s in signed.signatures[1:]]
    return _Latest(Checkpoint.parse(signed.text), note, cosigners)


async def checkpoint(sources: ConsoleSources, caller: Caller) -> Json:
    """The latest signed checkpoint and the nodes that cosigned it (every province's)."""
    del caller  # The log is public; every overseer sees all of it.
    latest = await _latest(sources)
    return {
        "origin": latest.checkpoint.origin,
        "size": latest.checkpoint.size,
        "root_hash": base64.b64encode(latest.checkpoint.root_hash).decode("ascii"),
        "note": latest.note,
        "cosignatures": [
            {"node_id": name, "timestamp": _iso(datetime.fromtimestamp(when, UTC))}
            for name, when in latest.cosigners
        ],
    }


# ---------------------------------------------------------------- the node directory


def node_health(status: str, days_left: float, lag: int | None) -> tuple[str, str]:
    """("ok" | "warning" | "down", why) for one node."""
    if status != "active":
        return "down", f"node is {status}"
    if days_left <= 0:
        return "down", "certificate expired"
    if days_left < CERTIFICATE_WARNING_DAYS:
        return "warning", f"certificate expires in {days_left:.0f} days"
    if lag is None:
        return "warning", "has never cosigned a checkpoint"
    if lag >= WITNESS_LAG_WARNING:
        return "warning", f"last cosigned checkpoint is {lag} entries behind"
    return "ok", "active; witnessing the log"


async def directory(sources: ConsoleSources, caller: Caller) -> Json:
    """Every node in scope (revoked ones too) with its health."""
    prefix = scope_prefix(caller, "", "The node directory")
    nodes = await sources.nodes.list_nodes(prefix, include_revoked=True)
    cosigned = await sources.witnesses.last_cosigned()
    size = (await _latest(sources)).checkpoint.size
    now = utc_now()
    rows: list[Json] = []
    for node in nodes:
        days_left = (node.certificate_expires_at - now) / timedelta(days=1)
        last = cosigned.get(node.node_id)
        lag = None if last is None else max(0, size - last[0])
        health, why = node_health(node.status, days_left, lag)
        rows.append(
            {
                "node_id": node.node_id,
                "region_code": node.region_code,
                "display_name": node.display_name,
                "peer_endpoint": node.peer_endpoint,
                "status": node.status,
                "enrolled_at": _iso(node.enrolled_at),
                "certificate_expires_at": _iso(node.certificate_expires_at),
                "certificate_days_left": round(days_left, 1),
                "last_cosigned_size": None if last is None else last[0],
                "last_cosigned_at": "" if last is None else _iso(last[1]),
                "health": health,
                "health_reason": why,
            }
        )
    return {"scope": prefix, "log_size": size, "nodes": rows}


# ---------------------------------------------------------------- the catalog tree


def catalog_tree(entries: Iterable[catalog_pb2.CatalogEntry]) -> list[Json]:
    """The dotted codes of a release as a tree; parents missing from the release are implied."""
    roots: list[Json] = []
    by_code: dict[str, Json] = {}

    def node(code: str) -> Json:
        found = by_code.get(code)
        if found is not None:
            return found
        parent, _, segment = code.rpartition(".")
        made: Json = {"code": code, "segment": segment, "entry": None, "children": []}
        by_code[code] = made
        (node(parent)["children"] if parent else roots).append(made)
        return made

    for entry in sorted(entries, key=lambda e: e.code):
        node(entry.code)["entry"] = {
            "title_zh": entry.title_zh,
            "title_en": entry.title_en,
            "min_grade": _grade(entry.min_grade),
            "tradable": entry.tradable,
            "cross_border": common_pb2.CrossBorderRule.Name(entry.cross_border)
            .removeprefix("CROSS_BORDER_RULE_")
            .lower(),
            "owner": entry.owner,
        }
    return roots


async def catalog(sources: ConsoleSources, caller: Caller) -> Json:
    """The latest catalog release as a tree of categories."""
    del caller  # The catalog is public.
    release, _, _ = await sources.catalog.changes_since(0)
    return {
        "version": release.version,
        "published_at": _iso(from_timestamp(release.published_at)),
        "published_by": release.published_by.spiffe_id,
        "entries": len(release.entries),
        "tree": catalog_tree(release.entries),
    }


# ---------------------------------------------------------------- statistics


def statistics_series(rows: Iterable[supervision_pb2.StatisticsRow], key: str) -> list[Json]:
    """Totals of trades, value and exports per ``key`` (month, region_code or grade), by key."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for row in rows:
        label = _grade(row.grade) if key == "grade" else str(getattr(row, key))
        total = totals[label]
        total[0] += row.trades
        total[1] += row.value.fen
        total[2] += row.exports
    return [
        {"key": label, "trades": t, "value_fen": v, "exports": e}
        for label, (t, v, e) in sorted(totals.items())
    ]


async def statistics(sources: ConsoleSources, caller: Caller) -> Json:
    """Trades, value and exports in scope: the rows, and totals by month, region and grade."""
    rows = await sources.supervision.statistics(caller, supervision_pb2.GetStatisticsRequest())
    return {
        "scope": scope_prefix(caller, "", "GetStatistics"),
        "rows": [
            {
                "region_code": r.region_code,
                "category": r.category,
                "grade": _grade(r.grade),
                "month": r.month,
                "trades": r.trades,
                "value_fen": r.value.fen,
                "exports": r.exports,
            }
            for r in rows
        ],
        "by_month": statistics_series(rows, "month"),
        "by_region": statistics_series(rows, "region_code"),
        "by_grade": statistics_series(rows, "grade"),
    }


# ---------------------------------------------------------------- frozen members, overdue reports


async def frozen(sources: ConsoleSources, caller: Caller) -> Json:
    """Members frozen now, in scope, with who froze them, when and why."""
    members = await sources.supervision.frozen_members(caller)
    return {
        "members": [
            {
                "credit_code": m.credit_code,
                "name": m.name,
                "region_code": m.region_code,
                "node_id": m.node_id,
                "reason": m.reason,
                "actor": m.actor,
                "frozen_at": _iso(m.frozen_at),
            }
            for m in members
        ]
    }


async def overdue(sources: ConsoleSources, caller: Caller) -> Json:
    """Risk assessments of holders with no current accepted one (in scope), newest first."""
    found = await sources.supervision.list_assessments(
        caller, "", "", supervision_pb2.REVIEW_STATE_UNSPECIFIED, True
    )
    return {
        "assessments": [
            {
                "assessment_id": a.assessment_id,
                "holder": a.holder,
                "node_id": a.node_id,
                "period_start": _iso(from_timestamp(a.period_start)),
                "period_end": _iso(from_timestamp(a.period_end)),
                "state": supervision_pb2.ReviewState.Name(a.state)
                .removeprefix("REVIEW_STATE_")
                .lower(),
                "filed_at": _iso(from_timestamp(a.filed_at)),
            }
            for a in found
        ]
    }
