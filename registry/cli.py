"""Command line of the national registry: ``provex-registry``.

    provex-registry init --state DIR [--trust-domain TD] [--log-origin O]
    provex-registry serve --state DIR [--public-listen H:P] [--federation-listen H:P]
    provex-registry admin add NAME --role admin|auditor|supervisor [--region PREFIX] --state DIR
    provex-registry admin invite NODE_ID --region CODE --name NAME --state DIR
    provex-registry admin revoke NODE_ID --reason TEXT --state DIR
    provex-registry nodes --state DIR [--region PREFIX] [--include-revoked]
    provex-registry certificate status DATASET_ID --state DIR
    provex-registry certificate suspend|revoke|reinstate DATASET_ID --reason TEXT --state DIR
    provex-registry log verify --state DIR

Market supervision (the registry must run; ``--as NAME`` picks the admin identity,
default the first one in ``<state>/admins``):

    provex-registry risk list|review ...        risk assessments
    provex-registry permit apply|review|revoke|get ...   export permits
    provex-registry member freeze|unfreeze CREDIT_CODE --reason TEXT
    provex-registry export check --exporter CODE --destination CC
    provex-registry stats | price-index | actions
    provex-registry ftz set ZONE_PREFIX [CATEGORY ...]   free-trade-zone negative lists

Settings come from ``<state>/registry.toml``, then ``PROVEX_REGISTRY_*``
variables, then these flags. ``--json`` prints one JSON object for scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

import provex
from provex import backup
from provex.errors import ProvexError
from provex.healthprobe import dialable
from provex.identity import channel_credentials
from provex.logs import configure_logging
from provex.rpc import raise_for_rpc_error
from provex.timestamps import to_timestamp, utc_now
from provex.trust import decode_trust_root
from provex.v1 import common_pb2, registry_pb2, registry_pb2_grpc, supervision_pb2
from provex.v1 import supervision_pb2_grpc as supervision_grpc
from registry.authz import Role
from registry.config import RegistryConfig, load_config
from registry.db import Database
from registry.enrollment import NodeRecord, read_node
from registry.schema import MIGRATIONS
from registry.server import serve
from registry.setup import add_admin, initialize
from registry.state import StateLayout, latest_trust_root
from registry.transparency import verify_log
from registry.trust_rotation import rotate_command

DEADLINE = 20.0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``provex-registry``."""
    parser = argparse.ArgumentParser(
        prog="provex-registry",
        description=(
            "The Provex national registry: enrolls provincial nodes, keeps the supervision "
            "catalog, issues signed dataset identifiers and logs what it signs in a "
            "Merkle transparency log."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {provex.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def with_state(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument("--state", type=Path, required=True, help="the state directory")
        sub.add_argument("--json", action="store_true", help="print one JSON object")
        return sub

    init = with_state(commands.add_parser("init", help="create a new registry state directory"))
    init.add_argument("--trust-domain", help="SPIFFE trust domain (default provex.local)")
    init.add_argument("--log-origin", help="origin line of the log's checkpoints")
    init.add_argument("--public-listen", help="host:port of the public port")
    init.add_argument("--federation-listen", help="host:port of the mutual-TLS port")

    serve = with_state(commands.add_parser("serve", help="run the registry until SIGTERM"))
    serve.add_argument("--public-listen", help="host:port (port 0 picks a free one)")
    serve.add_argument("--federation-listen", help="host:port (port 0 picks a free one)")

    admin = commands.add_parser("admin", help="admin identities").add_subparsers(
        dest="admin_command", metavar="ACTION", required=True
    )
    add = with_state(admin.add_parser("add", help="issue an admin or auditor certificate"))
    add.add_argument("name", help="admin name (lower-case letters, digits, hyphens)")
    add.add_argument("--role", choices=["admin", "auditor", "supervisor"], required=True)
    add.add_argument(
        "--region",
        default="",
        help="a supervisor's province: region-code prefix, e.g. 44 (Guangdong)",
    )
    invite = with_state(admin.add_parser("invite", help="invite a node (the registry must run)"))
    invite.add_argument("node_id", help="the node's id, e.g. gd-gzde")
    invite.add_argument("--region", required=True, help="GB/T 2260 region code, e.g. 440100")
    invite.add_argument("--name", required=True, help="the exchange's display name")
    invite.add_argument("--as", dest="admin", default="", help="admin name (default: the first)")
    invite.add_argument("--hours", type=int, default=0, help="validity (default: the setting)")
    revoke_node = with_state(
        admin.add_parser(
            "revoke",
            help="revoke a node federation-wide (logged; the registry must run)",
            description="Revoke a node federation-wide (EnrollmentService.RevokeNode): the "
            "registry logs a REVOKED enrollment statement, refuses the node's calls from then "
            "on, and peers stop searching it. The node comes back only by enrolling again with "
            "a new invitation (`provex-registry admin invite`). The registry must run.",
        )
    )
    revoke_node.add_argument("node_id", help="the node's id, e.g. gd-gzde")
    revoke_node.add_argument("--reason", required=True, help="why (logged with the statement)")
    revoke_node.add_argument(
        "--as", dest="admin", default="", help="admin name (default: the first)"
    )

    nodes = with_state(
        commands.add_parser(
            "nodes",
            help="the node directory: id, region, endpoint, status, certificate expiry",
            description="The node directory: id, region, name, peer endpoint, status and the "
            "certificate expiry (UTC) of every enrolled node, by node id. Read from the state "
            "directory's database, so it works whether or not the registry runs.",
        )
    )
    nodes.add_argument("--region", default="", help="region-code prefix, e.g. 44")
    nodes.add_argument("--include-revoked", action="store_true", help="list revoked nodes too")

    certificate = commands.add_parser(
        "certificate",
        help="status of dataset certificates (the registry must run)",
        description="A dataset's status (status) and the admin's logged status statements "
        "(suspend, revoke, reinstate) through CertificateService; nodes following the registry "
        "apply them to their listings by themselves. A revoked id is never reinstated.",
    ).add_subparsers(dest="certificate_command", metavar="ACTION", required=True)
    status = with_state(
        certificate.add_parser(
            "status",
            help="a dataset's current status and its statement",
            description="A dataset's current status (active, suspended, revoked) and the log "
            "index of its latest status statement.",
        )
    )
    status.add_argument("dataset_id", help="e.g. 440100-2026-0000001-6")
    status.add_argument("--as", dest="admin", default="", help="admin name (default: the first)")
    for action, text in _CERTIFICATE_ACTIONS.items():
        sub = with_state(certificate.add_parser(action, help=text[1], description=text[1]))
        sub.add_argument("dataset_id", help="e.g. 440100-2026-0000001-6")
        sub.add_argument("--reason", required=True, help="why (logged with the statement)")
        sub.add_argument("--as", dest="admin", default="", help="admin name (default: the first)")

    log = commands.add_parser("log", help="the transparency log").add_subparsers(
        dest="log_command", metavar="ACTION", required=True
    )
    with_state(log.add_parser("verify", help="recompute the tree and check every checkpoint"))
    trust_commands = commands.add_parser(
        "trust", help="the trust root (offline: the registry must be stopped)"
    ).add_subparsers(dest="trust_command", metavar="ACTION", required=True)
    rotate = with_state(
        trust_commands.add_parser(
            "rotate",
            help="make the next trust root version (the registry must be stopped)",
            description="Make trust root version N+1: same trust domain, issuer key, log key "
            "and federation CA, a new expiry; signed by a threshold of version N's root keys "
            "(and, with --new-root-keys, of a new set written to keys/root-v<N+1>-<k>.pem), "
            "logged like version 1 and written to trust/root-<N+1>.json. Run it while the "
            "registry is stopped; once started again it serves the new version and nodes "
            "fetch it by themselves.",
        )
    )
    rotate.add_argument(
        "--validity-days", type=float, default=365.0, help="days until it expires (default 365)"
    )
    rotate.add_argument(
        "--new-root-keys", action="store_true", help="replace the root keys by a new set"
    )
    backup.add_commands(commands, "provex-registry")
    _supervision_parsers(commands, with_state)
    return parser


def _supervision_parsers(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    with_state: Any,
) -> None:
    def online(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        with_state(sub)
        sub.add_argument("--as", dest="admin", default="", help="admin name (default: the first)")
        return sub

    risk = commands.add_parser("risk", help="risk assessments").add_subparsers(
        dest="risk_command", metavar="ACTION", required=True
    )
    listing = online(risk.add_parser("list", help="list risk assessment reports"))
    listing.add_argument("--holder", default="", help="credit code of the holder")
    listing.add_argument("--region", default="", help="region-code prefix of the holders")
    listing.add_argument("--state-filter", dest="review_state", choices=sorted(_REVIEW_STATES))
    listing.add_argument(
        "--overdue", action="store_true", help="only holders without a current accepted report"
    )
    reviewing = online(risk.add_parser("review", help="accept or reject a report"))
    reviewing.add_argument("assessment_id")
    verdict = reviewing.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--accept", action="store_true")
    verdict.add_argument("--reject", action="store_true")
    reviewing.add_argument("--reason", required=True)

    permit = commands.add_parser("permit", help="export permits").add_subparsers(
        dest="permit_command", metavar="ACTION", required=True
    )
    apply = online(permit.add_parser("apply", help="apply for an export permit (as an admin)"))
    apply.add_argument("--key", required=True, help="idempotency key (a retry names the same)")
    apply.add_argument("--exporter", required=True, help="credit code of the exporter")
    apply.add_argument("--destination", required=True, help="ISO 3166-1 alpha-2, e.g. HK")
    apply.add_argument("--purpose", required=True)
    apply.add_argument("--recipient", default="", help="the one recipient it allows (default any)")
    apply.add_argument("--dataset", action="append", default=[], help="a dataset id (repeat)")
    apply.add_argument("--category", action="append", default=[], help="a category (repeat)")
    review = online(permit.add_parser("review", help="approve or reject an application"))
    review.add_argument("permit_id")
    decision = review.add_mutually_exclusive_group(required=True)
    decision.add_argument("--approve", action="store_true")
    decision.add_argument("--reject", action="store_true")
    review.add_argument("--reason", required=True)
    revoke = online(permit.add_parser("revoke", help="revoke an approved permit"))
    revoke.add_argument("permit_id")
    revoke.add_argument("--reason", required=True)
    get = online(permit.add_parser("get", help="a permit's state and logged statement"))
    get.add_argument("permit_id")

    member = commands.add_parser("member", help="freeze members").add_subparsers(
        dest="member_command", metavar="ACTION", required=True
    )
    for action, text in (("freeze", "freeze a member federation-wide"), ("unfreeze", "lift it")):
        sub = online(member.add_parser(action, help=text))
        sub.add_argument("credit_code")
        sub.add_argument("--reason", required=True)

    export = commands.add_parser("export", help="cross-border checks").add_subparsers(
        dest="export_command", metavar="ACTION", required=True
    )
    check = online(export.add_parser("check", help="what an export needs now"))
    check.add_argument("--exporter", required=True)
    check.add_argument("--destination", required=True)
    check.add_argument("--dataset", action="append", default=[])
    check.add_argument("--individuals", type=int, default=0)
    check.add_argument("--sensitive", type=int, default=0)

    stats = online(commands.add_parser("stats", help="trade statistics by region and month"))
    stats.add_argument("--region", default="", help="region-code prefix")
    stats.add_argument("--category", default="", help="category prefix")
    stats.add_argument("--grade", choices=["general", "important", "core"])
    stats.add_argument("--from", dest="from_month", default="", help="YYYY-MM")
    stats.add_argument("--to", dest="to_month", default="", help="YYYY-MM")
    index = online(commands.add_parser("price-index", help="median prices per category"))
    index.add_argument("--category", default="", help="category prefix")
    actions = online(commands.add_parser("actions", help="supervisory actions and who took them"))
    actions.add_argument("--region", default="", help="region-code prefix")
    actions.add_argument("--after", type=int, default=0, help="after this log index")
    actions.add_argument("--limit", type=int, default=100)

    ftz = commands.add_parser("ftz", help="free-trade-zone negative lists").add_subparsers(
        dest="ftz_command", metavar="ACTION", required=True
    )
    ftz_set = with_state(
        ftz.add_parser(
            "set",
            help="give the zone of a region-code prefix its negative list (no category: "
            "the zone exempts everything but core data)",
        )
    )
    ftz_set.add_argument("zone", help="region-code prefix of the zone, e.g. 4403")
    ftz_set.add_argument("categories", nargs="*", help="listed category codes")
    ftz_remove = with_state(ftz.add_parser("remove", help="the zone has no negative list"))
    ftz_remove.add_argument("zone")


def _config(args: argparse.Namespace) -> RegistryConfig:
    overrides = {
        name: getattr(args, name, None)
        for name in ("trust_domain", "log_origin", "public_listen", "federation_listen")
    }
    return load_config(args.state).with_overrides(overrides)


def _emit(args: argparse.Namespace, document: dict[str, Any], text: str) -> None:
    print(json.dumps(document, sort_keys=True) if args.json else text)


def _admin_connection(state: Path, admin: str) -> tuple[str, grpc.ChannelCredentials]:
    """The federation endpoint of the running registry and an admin's credentials."""
    admins = StateLayout(state).admins
    names = sorted(p.name for p in admins.iterdir()) if admins.exists() else []
    admin = admin or (names[0] if names else "")
    if not admin or not (admins / admin).exists():
        raise ProvexError(f"no admin {admin!r} in {admins}: run `provex-registry admin add` first")
    endpoints_file = state / "run" / "endpoints.json"
    if not endpoints_file.exists():
        raise ProvexError(f"the registry of {state} is not running: start it with `serve`")
    endpoints = json.loads(endpoints_file.read_text())
    credentials = channel_credentials(
        Path(endpoints["ca_certificate"]).read_bytes(),
        (admins / admin / "cert.pem").read_bytes(),
        (admins / admin / "key.pem").read_bytes(),
    )
    return dialable(str(endpoints["federation"])), credentials


def invite_node(
    state: Path, admin: str, node_id: str, region: str, name: str, *, hours: int = 0
) -> str:
    """CreateInvitation on the running registry of ``state``, as one of its admins."""
    target, credentials = _admin_connection(state, admin)
    request = registry_pb2.CreateInvitationRequest(
        node_id=node_id, region_code=region, display_name=name
    )
    if hours:
        request.expires_at.CopyFrom(to_timestamp(utc_now() + timedelta(hours=hours)))

    async def create() -> str:
        async with grpc.aio.secure_channel(target, credentials) as channel:
            stub = registry_pb2_grpc.EnrollmentServiceStub(channel)
            try:
                response = await stub.CreateInvitation(request, timeout=DEADLINE)
            except grpc.aio.AioRpcError as error:
                raise_for_rpc_error(error, "registry")
        return str(response.invitation)

    return asyncio.run(create())


def _run(args: argparse.Namespace) -> int:
    if args.command == "init":
        config = _config(args)
        result = asyncio.run(initialize(args.state, config, utc_now()))
        _emit(
            args,
            {
                "state": str(args.state),
                "trust_root_digest": result.trust_root_digest,
                "log_size": result.log_size,
                "trust_domain": config.trust_domain,
            },
            f"initialized {args.state}\n  trust domain       {config.trust_domain}\n"
            f"  trust root digest  {result.trust_root_digest}\n"
            f"  log entries        {result.log_size} (trust root 1, catalog 1)",
        )
        return 0
    if args.command == "serve":
        config = _config(args)
        configure_logging(config.log_format, service="registry", instance=config.trust_domain)
        asyncio.run(serve(args.state, config))
        return 0
    if args.command == "admin" and args.admin_command == "invite":
        invitation = invite_node(
            args.state, args.admin, args.node_id, args.region, args.name, hours=args.hours
        )
        _emit(args, {"node_id": args.node_id, "invitation": invitation}, invitation)
        return 0
    if args.command == "admin" and args.admin_command == "revoke":
        return _revoke_node(args)
    if args.command == "nodes":
        return _nodes(args)
    if args.command == "certificate":
        return _certificate(args)
    if args.command == "admin":
        config = load_config(args.state)
        files = asyncio.run(
            add_admin(args.state, config, args.name, Role(args.role), utc_now(), region=args.region)
        )
        scope = f" (region {args.region})" if args.region else ""
        _emit(
            args,
            {
                "name": args.name,
                "role": args.role,
                "region": args.region,
                "certificate": str(files.certificate),
                "key": str(files.key),
                "ca": str(files.ca),
            },
            f"{args.role} {args.name}{scope}: certificate {files.certificate}, key {files.key}, "
            f"CA {files.ca}",
        )
        return 0
    if args.command == "log":
        config = load_config(args.state)
        _, envelope = latest_trust_root(args.state)
        root = decode_trust_root(envelope)
        verification = verify_log(
            StateLayout(args.state).database, root.log_verifier, config.log_origin
        )
        _emit(
            args,
            {"ok": verification.ok, "problems": list(verification.problems)},
            "log verified: every entry and checkpoint holds"
            if verification.ok
            else "log verification FAILED:\n  " + "\n  ".join(verification.problems),
        )
        return 0 if verification.ok else 1
    if args.command == "trust":
        return _rotate_trust_root(args)
    if args.command in ("backup", "restore"):
        summary, text = backup.run_command(args, "registry")
        _emit(args, summary, text)
        return 0
    if args.command == "ftz":
        return _ftz(args)
    if args.command in _SUPERVISION_COMMANDS:
        return _supervise(args)
    build_parser().print_help()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``provex-registry``."""
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except ProvexError as error:
        print(f"provex-registry: {error}", file=sys.stderr)
        return 2


# ---------------------------------------------------------------- supervision commands

_REVIEW_STATES = {
    "pending": supervision_pb2.REVIEW_STATE_PENDING,
    "accepted": supervision_pb2.REVIEW_STATE_ACCEPTED,
    "rejected": supervision_pb2.REVIEW_STATE_REJECTED,
    "revoked": supervision_pb2.REVIEW_STATE_REVOKED,
}
_GRADES = {
    "general": common_pb2.GRADE_GENERAL,
    "important": common_pb2.GRADE_IMPORTANT,
    "core": common_pb2.GRADE_CORE,
}
_SUPERVISION_COMMANDS = ("risk", "permit", "member", "export", "stats", "price-index", "actions")


def _as_dict(message: Message) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain text table: a header line, a rule, one line a row (columns padded)."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(line[i]) for line in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if not rows:
        lines.append("(none)")
    return "\n".join(lines)


def _when(timestamp: Any) -> str:
    return timestamp.ToDatetime().strftime("%Y-%m-%d %H:%M") if timestamp.seconds else "-"


def _enum(enum: Any, value: int, prefix: str) -> str:
    return str(enum.Name(value)).removeprefix(prefix).lower()


def _bundle_text(bundle: common_pb2.Bundle) -> str:
    return f"logged at index {bundle.log_index}"


async def _call(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    target, credentials = _admin_connection(args.state, args.admin)
    async with grpc.aio.secure_channel(target, credentials) as channel:
        stub = supervision_grpc.SupervisionServiceStub(channel)
        try:
            return await _dispatch(args, stub)
        except grpc.aio.AioRpcError as error:
            raise_for_rpc_error(error, "registry")


async def _dispatch(
    args: argparse.Namespace, stub: supervision_grpc.SupervisionServiceAsyncStub
) -> tuple[dict[str, Any], str]:
    command = args.command
    rows: list[tuple[object, ...]]
    if command == "risk" and args.risk_command == "list":
        listed = await stub.ListRiskAssessments(
            supervision_pb2.ListRiskAssessmentsRequest(
                holder=args.holder,
                region_prefix=args.region,
                state=_REVIEW_STATES.get(
                    args.review_state or "", supervision_pb2.REVIEW_STATE_UNSPECIFIED
                ),
                overdue_only=args.overdue,
            ),
            timeout=DEADLINE,
        )
        rows = [
            (
                a.assessment_id,
                a.holder,
                a.node_id,
                _when(a.period_end),
                _enum(supervision_pb2.ReviewState, a.state, "REVIEW_STATE_"),
                a.reviewed_by.spiffe_id.rsplit("/", 1)[-1] or "-",
            )
            for a in listed.assessments
        ]
        return _as_dict(listed), table(
            ("ASSESSMENT", "HOLDER", "NODE", "PERIOD END", "STATE", "REVIEWED BY"), rows
        )
    if command == "risk":
        reviewed = await stub.ReviewRiskAssessment(
            supervision_pb2.ReviewRiskAssessmentRequest(
                assessment_id=args.assessment_id, accept=args.accept, reason=args.reason
            ),
            timeout=DEADLINE,
        )
        state = _enum(supervision_pb2.ReviewState, reviewed.assessment.state, "REVIEW_STATE_")
        return _as_dict(reviewed), (
            f"risk assessment {args.assessment_id} {state}; decision "
            f"{_bundle_text(reviewed.decision)}"
        )
    if command == "permit":
        return await _permit(args, stub)
    if command == "member":
        if args.member_command == "freeze":
            frozen = await stub.FreezeMember(
                supervision_pb2.FreezeMemberRequest(
                    credit_code=args.credit_code, reason=args.reason
                ),
                timeout=DEADLINE,
            )
            return _as_dict(
                frozen
            ), f"member {args.credit_code} frozen; {_bundle_text(frozen.statement)}"
        lifted = await stub.UnfreezeMember(
            supervision_pb2.UnfreezeMemberRequest(credit_code=args.credit_code, reason=args.reason),
            timeout=DEADLINE,
        )
        return _as_dict(
            lifted
        ), f"member {args.credit_code} unfrozen; {_bundle_text(lifted.statement)}"
    if command == "export":
        checked = await stub.CheckExport(
            supervision_pb2.CheckExportRequest(
                exporter=args.exporter,
                destination=args.destination,
                dataset_ids=args.dataset,
                individuals=args.individuals,
                sensitive_individuals=args.sensitive,
            ),
            timeout=DEADLINE,
        )
        mechanism = _enum(supervision_pb2.ExportMechanism, checked.mechanism, "EXPORT_MECHANISM_")
        return _as_dict(checked), (
            f"mechanism: {mechanism}\nexported this year: {checked.exported_individuals:,} "
            f"individuals, {checked.exported_sensitive_individuals:,} sensitive\n"
            f"{checked.explanation}"
        )
    if command == "stats":
        statistics = await stub.GetStatistics(
            supervision_pb2.GetStatisticsRequest(
                region_prefix=args.region,
                category_prefix=args.category,
                grade=_GRADES.get(args.grade or "", common_pb2.GRADE_UNSPECIFIED),
                from_month=args.from_month,
                to_month=args.to_month,
            ),
            timeout=DEADLINE,
        )
        rows = [
            (
                r.month,
                r.region_code,
                r.category,
                _enum(common_pb2.Grade, r.grade, "GRADE_"),
                r.trades,
                f"{r.value.fen / 100:,.2f}",
                r.exports,
            )
            for r in statistics.rows
        ]
        return _as_dict(statistics), table(
            ("MONTH", "REGION", "CATEGORY", "GRADE", "TRADES", "VALUE (CNY)", "EXPORTS"), rows
        )
    if command == "price-index":
        index = await stub.GetPriceIndex(
            supervision_pb2.GetPriceIndexRequest(category_prefix=args.category),
            timeout=DEADLINE,
        )
        rows = [
            (p.category, p.month, p.trades, f"{p.median_price.fen / 100:,.2f}", f"{p.index:.1f}")
            for p in index.points
        ]
        return _as_dict(index), table(
            ("CATEGORY", "MONTH", "TRADES", "MEDIAN (CNY)", "INDEX"), rows
        )
    listed_actions = await stub.ListSupervisoryActions(
        supervision_pb2.ListSupervisoryActionsRequest(
            region_prefix=args.region, after_log_index=args.after, page_size=args.limit
        ),
        timeout=DEADLINE,
    )
    rows = [
        (a.log_index, _when(a.taken_at), a.action, a.subject, a.actor.spiffe_id)
        for a in listed_actions.actions
    ]
    return _as_dict(listed_actions), table(("LOG", "WHEN", "ACTION", "SUBJECT", "ACTOR"), rows)


async def _permit(
    args: argparse.Namespace, stub: supervision_grpc.SupervisionServiceAsyncStub
) -> tuple[dict[str, Any], str]:
    if args.permit_command == "apply":
        applied = await stub.ApplyExportPermit(
            supervision_pb2.ApplyExportPermitRequest(
                idempotency_key=args.key,
                application=supervision_pb2.ExportPermit(
                    exporter=args.exporter,
                    destination=args.destination,
                    purpose=args.purpose,
                    recipient=args.recipient,
                    dataset_ids=args.dataset,
                    categories=args.category,
                ),
            ),
            timeout=DEADLINE,
        )
        return _as_dict(
            applied
        ), f"export permit application {applied.application.permit_id} pending"
    if args.permit_command == "review":
        reviewed = await stub.ReviewExportPermit(
            supervision_pb2.ReviewExportPermitRequest(
                permit_id=args.permit_id, approve=args.approve, reason=args.reason
            ),
            timeout=DEADLINE,
        )
        state = _enum(supervision_pb2.ReviewState, reviewed.state, "REVIEW_STATE_")
        logged = f"; {_bundle_text(reviewed.permit)}" if reviewed.HasField("permit") else ""
        return _as_dict(reviewed), f"export permit {args.permit_id} {state}{logged}"
    if args.permit_command == "revoke":
        revoked = await stub.RevokeExportPermit(
            supervision_pb2.RevokeExportPermitRequest(permit_id=args.permit_id, reason=args.reason),
            timeout=DEADLINE,
        )
        return _as_dict(
            revoked
        ), f"export permit {args.permit_id} revoked; {_bundle_text(revoked.statement)}"
    got = await stub.GetExportPermit(
        supervision_pb2.GetExportPermitRequest(permit_id=args.permit_id), timeout=DEADLINE
    )
    state = _enum(supervision_pb2.ReviewState, got.state, "REVIEW_STATE_")
    logged = f"; {_bundle_text(got.permit)}" if got.HasField("permit") else " (not logged yet)"
    return _as_dict(got), f"export permit {args.permit_id}: {state}{logged}"


def _supervise(args: argparse.Namespace) -> int:
    document, text = asyncio.run(_call(args))
    _emit(args, document, text)
    return 0


# ---------------------------------------------------------------- nodes and certificates

_CERTIFICATE_ACTIONS = {
    "suspend": (common_pb2.STATUS_SUSPENDED, "suspend a dataset federation-wide (logged)"),
    "revoke": (common_pb2.STATUS_REVOKED, "revoke a dataset for good (logged)"),
    "reinstate": (common_pb2.STATUS_ACTIVE, "lift a suspension (logged)"),
}


async def _admin_call(args: argparse.Namespace, call: Any) -> Any:
    """Run ``call(channel)`` on the running registry as an admin; RPC errors become ProvexErrors."""
    target, credentials = _admin_connection(args.state, args.admin)
    async with grpc.aio.secure_channel(target, credentials) as channel:
        try:
            return await call(channel)
        except grpc.aio.AioRpcError as error:
            raise_for_rpc_error(error, "registry")


def _revoke_node(args: argparse.Namespace) -> int:
    request = registry_pb2.RevokeNodeRequest(node_id=args.node_id, reason=args.reason)

    async def revoke(channel: grpc.aio.Channel) -> registry_pb2.RevokeNodeResponse:
        stub = registry_pb2_grpc.EnrollmentServiceStub(channel)
        return await stub.RevokeNode(request, timeout=DEADLINE)

    response = asyncio.run(_admin_call(args, revoke))
    _emit(
        args,
        _as_dict(response),
        f"node {args.node_id} revoked federation-wide; {_bundle_text(response.statement)}\n"
        "  its calls are refused from now on; to let it back in, invite it again "
        "(`provex-registry admin invite`)",
    )
    return 0


def _nodes(args: argparse.Namespace) -> int:
    """The directory as the registry's database holds it (works whether or not it runs)."""
    database = StateLayout(args.state).database
    if not database.exists():
        raise ProvexError(f"{args.state} is not a registry state: run `provex-registry init`")
    if args.region and not (args.region.isdigit() and len(args.region) <= 6):
        raise ProvexError(f"--region must be a region-code prefix of digits, not {args.region!r}")
    sql = "SELECT node_id FROM nodes WHERE region_code LIKE ? ORDER BY node_id"
    found: list[NodeRecord] = []

    async def read() -> None:
        db = await Database.open(database, migrations=MIGRATIONS, readonly=True)
        try:

            def rows(conn: Any) -> list[NodeRecord]:
                ids = [str(row[0]) for row in conn.execute(sql, (args.region + "%",))]
                return [node for node in (read_node(conn, i) for i in ids) if node is not None]

            found.extend(await db.run(rows))
        finally:
            await db.close()

    asyncio.run(read())
    listed = [n for n in found if args.include_revoked or n.status == "active"]
    document = {
        "nodes": [
            {
                "node_id": n.node_id,
                "region_code": n.region_code,
                "display_name": n.display_name,
                "peer_endpoint": n.peer_endpoint,
                "status": n.status,
                "certificate_fingerprint": n.certificate_fingerprint,
                "certificate_expires_at": n.certificate_expires_at.isoformat(),
                "enrolled_at": n.enrolled_at.isoformat(),
            }
            for n in listed
        ]
    }
    rows = [
        (
            n.node_id,
            n.region_code,
            n.display_name,
            n.peer_endpoint,
            n.status,
            n.certificate_expires_at.strftime("%Y-%m-%d %H:%M"),
        )
        for n in listed
    ]
    _emit(
        args,
        document,
        table(("NODE", "REGION", "NAME", "ENDPOINT", "STATUS", "CERTIFICATE EXPIRES (UTC)"), rows),
    )
    return 0


def _certificate(args: argparse.Namespace) -> int:
    dataset_id = args.dataset_id
    if args.certificate_command == "status":

        async def get(channel: grpc.aio.Channel) -> registry_pb2.GetStatusResponse:
            stub = registry_pb2_grpc.CertificateServiceStub(channel)
            return await stub.GetStatus(
                registry_pb2.GetStatusRequest(dataset_id=dataset_id), timeout=DEADLINE
            )

        got = asyncio.run(_admin_call(args, get))
        status = _enum(common_pb2.Status, got.status, "STATUS_")
        logged = (
            f"; latest statement {_bundle_text(got.statement)}"
            if got.HasField("statement")
            else " (no status statement was ever made)"
        )
        _emit(args, {"dataset_id": dataset_id, **_as_dict(got)}, f"{dataset_id}: {status}{logged}")
        return 0
    wanted, _ = _CERTIFICATE_ACTIONS[args.certificate_command]

    async def set_status(channel: grpc.aio.Channel) -> registry_pb2.SetStatusResponse:
        stub = registry_pb2_grpc.CertificateServiceStub(channel)
        return await stub.SetStatus(
            registry_pb2.SetStatusRequest(dataset_id=dataset_id, status=wanted, reason=args.reason),
            timeout=DEADLINE,
        )

    response = asyncio.run(_admin_call(args, set_status))
    status = _enum(common_pb2.Status, wanted, "STATUS_")
    _emit(
        args,
        {"dataset_id": dataset_id, "status": status, **_as_dict(response)},
        f"{dataset_id}: {status}; {_bundle_text(response.statement)} "
        "(nodes following the registry apply it by themselves)",
    )
    return 0


def _rotate_trust_root(args: argparse.Namespace) -> int:
    """``trust rotate``: the next trust root version, made offline."""
    done = rotate_command(
        args.state, load_config(args.state), utc_now(), args.validity_days, args.new_root_keys
    )
    keys = ", ".join(str(p) for p in done.new_root_key_files) or "unchanged"
    _emit(
        args,
        {
            "version": done.version,
            "digest": done.digest,
            "issued_at": done.issued_at.isoformat(),
            "expires_at": done.expires_at.isoformat(),
            "log_index": done.log_index,
            "path": str(done.path),
            "new_root_keys": [str(p) for p in done.new_root_key_files],
            "resumed": done.resumed,
        },
        f"trust root version {done.version}{' (completed an interrupted run)' * done.resumed}\n"
        f"  file         {done.path}\n  digest       {done.digest}\n"
        f"  expires      {done.expires_at.isoformat()}\n  log index    {done.log_index}\n"
        f"  root keys    {keys}\n"
        "start the registry again: it serves the new version and nodes fetch it by themselves",
    )
    return 0


def _ftz(args: argparse.Namespace) -> int:
    """Write a zone's negative list straight into the database (the registry may run)."""
    zone = args.zone
    if not (zone.isdigit() and 1 <= len(zone) <= 6):
        raise ProvexError(f"zone must be a region-code prefix of 1 to 6 digits, not {zone!r}")
    categories = sorted(set(getattr(args, "categories", [])))

    async def write() -> None:
        db = await Database.open(StateLayout(args.state).database, migrations=MIGRATIONS)
        try:

            def replace(conn: Any) -> None:
                conn.execute("DELETE FROM ftz_negative_lists WHERE zone_prefix = ?", (zone,))
                if args.ftz_command == "set":
                    # The '' row says the zone has a list, even an empty one.
                    conn.executemany(
                        "INSERT INTO ftz_negative_lists (zone_prefix, category) VALUES (?, ?)",
                        [(zone, c) for c in ["", *categories]],
                    )

            await db.transaction(replace)
        finally:
            await db.close()

    asyncio.run(write())
    listed = ", ".join(categories) or "(nothing: everything but core data is exempt)"
    text = (
        f"zone {zone}: negative list {listed}"
        if args.ftz_command == "set"
        else f"zone {zone}: no negative list"
    )
    _emit(args, {"zone": zone, "categories": categories, "listed": args.ftz_command == "set"}, text)
    return 0
