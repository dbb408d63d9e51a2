"""Command line of a provincial exchange node: ``provex-node``.

    provex-node init --state DIR --node-id ID --region CODE
    provex-node enroll --state DIR --invitation TEXT|@FILE --registry H:P
                       --registry-federation H:P --registry-ca FILE [--peer-endpoint H:P]
    provex-node serve --state DIR [--peer-listen H:P] [--operator-listen H:P]
    provex-node renew --state DIR            renew the federation certificate now
    provex-node member add|list ...          provex-node dataset submit|get|list ...
    provex-node listing create|publish|suspend|delist|get|import ...
    provex-node dataset attach DATASET_ID FILE
    provex-node delivery start|show CONTRACT_ID [--no-wait]
    provex-node contract request|decide|show|list ...   provex-node risk submit ...
    provex-node search TEXT [filters]        provex-node federated-search TEXT [filters]
    provex-node outbox                       provex-node status
    provex-node audit                        provex-node backup|restore ...

Operator commands talk to the running node's operator port (found through
``<state>/run/endpoints.json``) with the operator certificate ``init`` made.
Settings come from ``<state>/node.toml``, then ``PROVEX_NODE_*`` variables,
then flags. ``--json`` prints JSON for scripts; tables otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

import provex
from node import audit, datasets, listings, renewal
from node.blobs import BlobStore
from node.config import NodeConfig, load_config
from node.delivery import RETRYING
from node.enrollment import enroll
from node.search import TOTAL_CAP
from node.server import serve
from node.state import StateLayout, init_state, require_enrolled
from provex import backup
from provex.errors import InvalidArgument, ProvexError
from provex.identity import channel_credentials
from provex.logs import configure_logging
from provex.rpc import raise_for_rpc_error
from provex.timestamps import utc_now
from provex.v1 import (
    dataset_pb2,
    market_pb2,
    node_pb2,
    node_pb2_grpc,
    registry_pb2,
    supervision_pb2,
)

if TYPE_CHECKING:
    from provex.v1.node_pb2_grpc import OperatorServiceAsyncStub

DEADLINE = 30.0
DELIVERY_POLL_SECONDS = 0.2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``provex-node``."""
    parser = argparse.ArgumentParser(
        prog="provex-node",
        description=(
            "A Provex provincial exchange node: holds its members' dataset listings and "
            "trades, searches across the federation and follows the national registry."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {provex.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def with_state(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument("--state", type=Path, required=True, help="the node's state directory")
        sub.add_argument("--json", action="store_true", help="print JSON")
        return sub

    init = with_state(commands.add_parser("init", help="create a new node state directory"))
    init.add_argument("--node-id", required=True, help="stable node id, e.g. gd-gzde")
    init.add_argument("--region", required=True, help="GB/T 2260 region code, e.g. 440100")
    init.add_argument("--peer-listen", help="host:port of the peer port")
    init.add_argument("--operator-listen", help="host:port of the operator port")

    join = with_state(commands.add_parser("enroll", help="enroll with a registry invitation"))
    join.add_argument("--invitation", required=True, help="the invitation text, or @FILE")
    join.add_argument("--registry", default="", help="the registry's public host:port")
    join.add_argument(
        "--registry-federation", required=True, help="the registry's mutual-TLS host:port"
    )
    join.add_argument("--registry-ca", type=Path, required=True, help="federation CA (PEM)")
    join.add_argument("--peer-endpoint", help="host:port peers dial (default: peer_listen)")

    with_state(
        commands.add_parser(
            "audit",
            help="audit the registry's transparency log against this node's checkpoint",
            description="Download every entry of the registry's log up to the latest checkpoint "
            "this node verified, check each entry's signature against the trust root, recompute "
            "the Merkle tree and compare its root with the checkpoint's. Exit 0 when the history "
            "holds, 1 when it does not (the problems are named). The node should have run "
            "(`serve`) long enough to have verified a checkpoint.",
        )
    )
    backup.add_commands(commands, "provex-node")
    renew = with_state(
        commands.add_parser(
            "renew",
            help="renew the node's federation certificate now",
            description="Ask the registry for a new federation certificate (same TLS key, a "
            "new CSR), verify that it chains to the federation CA and names this node, keep the "
            "previous one as tls/node.pem.previous and install the new one atomically. If the "
            "node is serving, the running node does the renewal and switches to the new "
            "certificate at once (the registry refuses the old one from then on); otherwise "
            "this command does it. `serve` also renews by itself when less than "
            "certificate_renew_before_days (default: a third of the lifetime) remain.",
        )
    )
    renew.add_argument(
        "--wait",
        type=float,
        default=60.0,
        help="seconds to wait for a running node's answer (default 60)",
    )
    run = with_state(commands.add_parser("serve", help="run the node until SIGTERM"))
    run.add_argument("--peer-listen", help="host:port (port 0 picks a free one)")
    run.add_argument("--operator-listen", help="host:port (port 0 picks a free one)")

    member = commands.add_parser("member", help="members").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    add = with_state(member.add_parser("add", help="add a member (reported to the registry)"))
    add.add_argument("--credit-code", required=True)
    add.add_argument("--name", required=True)
    add.add_argument("--region", required=True)
    add.add_argument("--country", default="CN")
    add.add_argument("--officer-name", default="")
    add.add_argument("--officer-phone", default="")
    add.add_argument("--officer-email", default="")
    with_state(member.add_parser("list", help="list members"))

    dataset = commands.add_parser("dataset", help="datasets").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    submit = with_state(dataset.add_parser("submit", help="register a dataset"))
    submit.add_argument("--key", required=True, help="idempotency key of this submission")
    submit.add_argument("--file", type=Path, required=True, help="DatasetDescription as JSON")
    submit.add_argument("--dataset-id", default="", help="register a new version of this id")
    submit.add_argument(
        "--data",
        type=Path,
        help="the data file: copied into the node's blob store while hashed; its SHA-256 and "
        "size fill content_digest and size_bytes of the description",
    )
    get = with_state(dataset.add_parser("get", help="one dataset"))
    get.add_argument("dataset_id")
    with_state(dataset.add_parser("list", help="list datasets"))
    attach = with_state(
        dataset.add_parser(
            "attach",
            help="attach the data file of a dataset (what buyers receive)",
            description="Copy FILE into the node's blob store (<state>/blobs/<sha256>) while "
            "hashing it. Its SHA-256 must be the content digest of the dataset's certificate "
            "(or of its submitted description while the certificate is pending); a mismatch is "
            "refused and nothing is stored. Attach again to replace a damaged copy.",
        )
    )
    attach.add_argument("dataset_id", help="the dataset id, e.g. 440100-2026-0000123-8")
    attach.add_argument("data", type=Path, metavar="FILE", help="the data file")

    delivery = commands.add_parser("delivery", help="deliveries of bought data").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    begin = with_state(
        delivery.add_parser(
            "start",
            help="receive a finalized contract's data from the seller's node",
            description="Start (or resume, or restart after a failure) the delivery of a "
            "finalized contract this node bought; the node downloads in the background, resumes "
            "after interruptions and verifies the SHA-256 against the contract's content digest. "
            "Shows a progress bar until the delivery completes or fails.",
        )
    )
    begin.add_argument("contract_id")
    begin.add_argument("--no-wait", action="store_true", help="return once started")
    show_delivery = with_state(delivery.add_parser("show", help="progress of a delivery"))
    show_delivery.add_argument("contract_id")

    contract = commands.add_parser("contract", help="contracts with other nodes").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    ask = with_state(
        contract.add_parser(
            "request",
            help="buy: ask a seller's node for a contract on one of its listings",
            description="Propose a contract for a member of this node (the buyer) on a listing "
            "of another node. The key makes a retry safe: the same key names the same contract. "
            "The seller's node checks its rules, then agrees (its operator, or the listing's "
            "auto-approve rule); both nodes then sign and the contract is finalized.",
        )
    )
    ask.add_argument("--key", required=True, help="idempotency key of this request")
    ask.add_argument("--seller-node", required=True, help="the seller's node id, e.g. gd-gzde")
    ask.add_argument("--listing", required=True, help="the listing id, e.g. L0123456789abcdef")
    ask.add_argument("--buyer", required=True, help="credit code of the buying member")
    ask.add_argument("--purpose", required=True, help="what the buyer will use the data for")
    ask.add_argument("--permit", default="", help="export permit or filing id (exports only)")
    decide = with_state(
        contract.add_parser(
            "decide",
            help="agree to a requested contract (seller), or terminate one (either side)",
        )
    )
    decide.add_argument("contract_id")
    verdict = decide.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--agree", action="store_true", help="agree (the seller's node signs)")
    verdict.add_argument("--terminate", action="store_true", help="refuse or terminate")
    decide.add_argument("--reason", default="", help="why (required to terminate)")
    show_contract = with_state(contract.add_parser("show", help="one contract"))
    show_contract.add_argument("contract_id")
    every = with_state(contract.add_parser("list", help="contracts this node is party to"))
    every.add_argument(
        "--only",
        choices=("requested", "agreed", "finalized", "terminated"),
        default=None,
        help="only contracts in this state",
    )

    risk = commands.add_parser("risk", help="risk assessments of holders").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    report = with_state(
        risk.add_parser(
            "submit",
            help="file a holder's annual risk assessment with the registry",
            description="Submit a RiskAssessment (JSON: holder, period_start, period_end, "
            "data, processing, risks, measures, report_digest in base64) for a member of this "
            "node; it is queued for the registry and filed when the registry answers.",
        )
    )
    report.add_argument("--key", required=True, help="idempotency key of this submission")
    report.add_argument("--file", type=Path, required=True, help="RiskAssessment as JSON")

    listing = commands.add_parser("listing", help="listings").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    create = with_state(listing.add_parser("create", help="create a listing (draft)"))
    create.add_argument("--file", type=Path, required=True, help="Listing as JSON")
    for name in ("publish", "suspend", "delist"):
        change = with_state(listing.add_parser(name, help=f"{name} a listing"))
        change.add_argument("listing_id")
        change.add_argument("--reason", default="")
    show = with_state(listing.add_parser("get", help="one listing"))
    show.add_argument("listing_id")
    load = with_state(listing.add_parser("import", help="bulk import (.jsonl or .csv)"))
    load.add_argument("file", type=Path)

    for name, what in (("search", "this node"), ("federated-search", "every node")):
        find = with_state(commands.add_parser(name, help=f"search listings on {what}"))
        find.add_argument("text", nargs="?", default="")
        find.add_argument("--category", default="", help="category code prefix")
        find.add_argument("--region", default="", help="region code prefix")
        find.add_argument("--holder", default="")
        find.add_argument("--page-size", type=int, default=0)
        find.add_argument("--page-token", default="")
    with_state(commands.add_parser("outbox", help="calls waiting for the registry"))
    with_state(commands.add_parser("status", help="the node's own state"))
    return parser


# ---------------------------------------------------------------- local commands


def _renew(args: argparse.Namespace) -> int:
    """``renew``: node.renewal does the work; print the new expiry."""
    if args.wait <= 0:
        raise InvalidArgument(f"--wait must be positive, not {args.wait}")
    renewed, by_node = asyncio.run(
        renewal.renew_command(args.state, _config(args), utc_now, args.wait)
    )
    who = "the running node renewed and now uses" if by_node else "renewed"
    _print(
        args,
        {**dataclasses.asdict(renewed), "by_running_node": by_node},
        f"{who} its federation certificate\n"
        f"  expires      {renewed.expires_at}\n"
        f"  fingerprint  {renewed.fingerprint}\n"
        f"  logged at    index {renewed.log_index} (RENEWED enrollment statement)\n"
        f"  previous     {renewed.previous}",
    )
    return 0


def _config(args: argparse.Namespace) -> NodeConfig:
    overrides = {name: getattr(args, name, None) for name in ("peer_listen", "operator_listen")}
    return load_config(args.state).with_overrides(overrides)


def _print(args: argparse.Namespace, document: Any, text: str) -> None:
    print(json.dumps(document, sort_keys=True, ensure_ascii=False) if args.json else text)


def _as_json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _read_text(value: str) -> str:
    return Path(value[1:]).read_text().strip() if value.startswith("@") else value


def _audit_progress(done: int, total: int) -> None:
    width = 30
    filled = width * done // max(total, 1)
    print(
        f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} entries",
        end="",
        file=sys.stderr,
    )
    if done >= total:
        print(file=sys.stderr)


def _audit(args: argparse.Namespace) -> int:
    progress = None if args.json else _audit_progress
    report = asyncio.run(audit.audit_state(args.state, _config(args), progress=progress))
    kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(report.entries_by_type.items()))
    if report.ok:
        text = (
            f"log audited: {report.tree_size} entries ({kinds}) verified; the tree's root equals "
            f"the checkpoint's {report.root_hash[:16]}…"
        )
    else:
        text = f"log audit FAILED ({report.problem_count} problems):\n  " + "\n  ".join(
            report.problems
        )
    _print(args, report.to_json(), text)
    return 0 if report.ok else 1


def _enroll(args: argparse.Namespace) -> int:
    config = load_config(args.state)
    done = asyncio.run(
        enroll(
            args.state,
            _read_text(args.invitation),
            registry_public=args.registry,
            registry_federation=args.registry_federation,
            registry_ca_pem=args.registry_ca.read_bytes(),
            peer_endpoint=args.peer_endpoint or config.advertised_peer_address,
            now=utc_now(),
        )
    )
    _print(
        args,
        {"node_id": done.identity.node_id, "enrollment_log_index": done.enrollment_log_index},
        f"node {done.identity.node_id} enrolled (log index {done.enrollment_log_index}); "
        f"certificate {done.certificate}",
    )
    return 0


# ---------------------------------------------------------------- operator commands


def _operator_target(state: Path) -> tuple[str, grpc.ChannelCredentials]:
    """The operator port's address and the operator's credentials, from the state directory."""
    layout = StateLayout(state)
    try:
        endpoints = json.loads((state / "run" / "endpoints.json").read_text())
    except FileNotFoundError:
        raise ProvexError(
            f"the node of {state} is not running (no run/endpoints.json): start "
            "`provex-node serve` first"
        ) from None
    credentials = channel_credentials(
        layout.operator_ca.read_bytes(),
        layout.operator_cert.read_bytes(),
        layout.operator_key.read_bytes(),
    )
    return str(endpoints["operator"]), credentials


def _query(args: argparse.Namespace) -> market_pb2.SearchQuery:
    return market_pb2.SearchQuery(
        text=args.text,
        category_prefix=args.category,
        region_prefix=args.region,
        holder=args.holder,
        page_size=args.page_size,
        page_token=args.page_token,
    )


def _hits_table(hits: Sequence[market_pb2.SearchHit]) -> str:
    lines = [f"{'score':>7}  {'node':<10} {'listing':<18} {'price (CNY)':>12}  title"]
    for hit in hits:
        listing = hit.listing
        lines.append(
            f"{hit.score:7.2f}  {listing.node_id:<10} {listing.listing_id:<18} "
            f"{listing.price.fen / 100:12,.2f}  {listing.title}"
        )
    return "\n".join(lines)


def _progress(done: int, total: int, errors: int) -> None:
    width = 30
    filled = width * done // max(total, 1)
    bar = "#" * filled + "." * (width - filled)
    print(f"\r[{bar}] {done}/{total} imported, {errors} refused", end="", file=sys.stderr)


ImportLines = list[tuple[int, market_pb2.Listing | InvalidArgument]]


def _import_lines(path: Path) -> ImportLines:
    """Every record of a .csv or JSON Lines file: (line, listing or why it cannot be read)."""
    with path.open(newline="", encoding="utf-8") as handle:
        if path.suffix.lower() == ".csv":
            return list(listings.parse_csv(handle))
        return list(listings.parse_jsonl(handle))


def _operator(args: argparse.Namespace) -> int:
    """Run one operator command against the running node."""
    target, credentials = _operator_target(args.state)
    importing = args.command == "listing" and args.action == "import"
    imported = _import_lines(args.file) if importing else []
    body = args.file.read_text() if getattr(args, "file", None) and not imported else ""

    async def call() -> int:
        async with grpc.aio.secure_channel(target, credentials) as channel:
            stub = node_pb2_grpc.OperatorServiceStub(channel)
            try:
                return await _operator_call(args, stub, body, imported)
            except grpc.aio.AioRpcError as error:
                raise_for_rpc_error(error, "node")

    return asyncio.run(call())


async def _operator_call(
    args: argparse.Namespace,
    stub: OperatorServiceAsyncStub,
    body: str,
    imported: ImportLines,
) -> int:
    command, action = args.command, getattr(args, "action", "")
    if command == "member" and action == "add":
        member = registry_pb2.Member(
            credit_code=args.credit_code,
            name=args.name,
            region_code=args.region,
            country=args.country,
        )
        if args.officer_name:
            member.security_officer.CopyFrom(
                registry_pb2.SecurityOfficer(
                    name=args.officer_name, phone=args.officer_phone, email=args.officer_email
                )
            )
        added = await stub.AddMember(node_pb2.AddMemberRequest(member=member), timeout=DEADLINE)
        state = node_pb2.OutboxState.Name(added.report.state)
        _print(args, _as_json(added), f"member {added.member.credit_code} added; report {state}")
        return 0
    if command == "member":
        found = await stub.ListLocalMembers(node_pb2.ListLocalMembersRequest(), timeout=DEADLINE)
        rows = [f"{m.credit_code}  {m.region_code}  {m.name}" for m in found.members]
        _print(args, _as_json(found), "\n".join(rows) or "no members")
        return 0
    if command == "dataset" and action == "submit":
        description = json_format.Parse(body, dataset_pb2.DatasetDescription())
        if args.data is not None:
            stored = await asyncio.to_thread(BlobStore.of_state(args.state).import_file, args.data)
            description.content_digest = stored.digest
            description.size_bytes = stored.size
        request = node_pb2.SubmitDatasetRequest(
            idempotency_key=args.key, dataset=description, dataset_id=args.dataset_id
        )
        record = (await stub.SubmitDataset(request, timeout=DEADLINE)).dataset
        state = node_pb2.OutboxState.Name(record.registration.state)
        _print(args, _as_json(record), f"dataset {record.dataset_id or '(pending)'}: {state}")
        return 0
    if command == "dataset" and action == "attach":
        return await _attach(args, stub)
    if command == "delivery":
        return await _delivery(args, stub)
    if command == "contract":
        return await _contract(args, stub)
    if command == "risk":
        return await _risk(args, stub, body)
    if command == "dataset" and action == "get":
        got = await stub.GetDataset(
            node_pb2.GetDatasetRequest(dataset_id=args.dataset_id), timeout=DEADLINE
        )
        _print(
            args,
            _as_json(got.dataset),
            json.dumps(_as_json(got.dataset), indent=2, ensure_ascii=False),
        )
        return 0
    if command == "dataset":
        page = await stub.ListDatasets(node_pb2.ListDatasetsRequest(), timeout=DEADLINE)
        rows = [
            f"{d.dataset_id or '(pending)':<24} "
            f"{node_pb2.OutboxState.Name(d.registration.state):<20} {d.dataset.title}"
            for d in page.datasets
        ]
        _print(args, _as_json(page), "\n".join(rows) or "no datasets")
        return 0
    if command == "listing" and action == "create":
        listing = json_format.Parse(body, market_pb2.Listing())
        created = await stub.CreateListing(
            node_pb2.CreateListingRequest(listing=listing), timeout=DEADLINE
        )
        _print(args, _as_json(created.listing), f"listing {created.listing.listing_id} created")
        return 0
    if command == "listing" and action in ("publish", "suspend", "delist"):
        target = {
            "publish": market_pb2.LISTING_STATE_LISTED,
            "suspend": market_pb2.LISTING_STATE_SUSPENDED,
            "delist": market_pb2.LISTING_STATE_DELISTED,
        }[action]
        changed = await stub.SetListingState(
            node_pb2.SetListingStateRequest(
                listing_id=args.listing_id, state=target, reason=args.reason
            ),
            timeout=DEADLINE,
        )
        state = market_pb2.ListingState.Name(changed.listing.state)
        _print(args, _as_json(changed.listing), f"listing {args.listing_id}: {state}")
        return 0
    if command == "listing" and action == "get":
        got_listing = await stub.GetListing(
            node_pb2.GetListingRequest(listing_id=args.listing_id), timeout=DEADLINE
        )
        _print(args, _as_json(got_listing.listing), str(got_listing.listing))
        return 0
    if command == "listing" and action == "import":
        return await _import(args, stub, imported)
    if command in ("search", "federated-search"):
        if command == "search":
            result = await stub.Search(node_pb2.SearchRequest(query=_query(args)), timeout=DEADLINE)
            shown = f"{result.total}+" if result.total >= TOTAL_CAP else str(result.total)
            text = _hits_table(result.hits) + f"\n{shown} found"
            if result.next_page_token:
                text += f"; next page: --page-token {result.next_page_token}"
            _print(args, _as_json(result), text)
            return 0
        federated = await stub.FederatedSearch(
            node_pb2.FederatedSearchRequest(query=_query(args)), timeout=DEADLINE
        )
        text = _hits_table(federated.hits) + f"\nanswered: {', '.join(federated.answered)}"
        for silent in federated.unanswered:
            text += f"\nno answer from {silent.node_id}: {silent.reason}"
        if federated.split_view:
            text += f"\nSPLIT VIEW with {', '.join(federated.split_view)}"
        _print(args, _as_json(federated), text)
        return 0
    if command == "outbox":
        items = await stub.ListOutbox(node_pb2.ListOutboxRequest(), timeout=DEADLINE)
        rows = [
            f"{node_pb2.OutboxState.Name(i.state):<20} {i.kind:<18} attempts {i.attempts:<3} "
            f"{i.idempotency_key}  {i.last_error}"
            for i in items.items
        ]
        _print(args, _as_json(items), "\n".join(rows) or "outbox empty")
        return 0
    status = await stub.GetNodeStatus(node_pb2.GetNodeStatusRequest(), timeout=DEADLINE)
    _print(args, _as_json(status), str(status))
    return 0


async def _import(
    args: argparse.Namespace, stub: OperatorServiceAsyncStub, parsed: ImportLines
) -> int:
    unreadable = [str(item) for _, item in parsed if isinstance(item, InvalidArgument)]

    async def requests() -> AsyncIterator[node_pb2.ImportListingsRequest]:
        for number, listing in parsed:
            if isinstance(listing, market_pb2.Listing):
                yield node_pb2.ImportListingsRequest(listing=listing, line=number)

    done = errors = len(unreadable)
    refusals: list[str] = list(unreadable)
    async for response in stub.ImportListings(requests(), timeout=DEADLINE * 10):
        done += 1
        if response.HasField("error"):
            errors += 1
            refusals.append(response.error.message)
        if not args.json:
            _progress(done, len(parsed), errors)
    if not args.json:
        print(file=sys.stderr)
    _print(
        args,
        {"imported": done - errors, "refused": errors, "refusals": refusals},
        f"{done - errors} imported, {errors} refused" + "".join(f"\n  {r}" for r in refusals),
    )
    return 0 if errors == 0 else 1


async def _attach(args: argparse.Namespace, stub: OperatorServiceAsyncStub) -> int:
    got = await stub.GetDataset(
        node_pb2.GetDatasetRequest(dataset_id=args.dataset_id), timeout=DEADLINE
    )
    expected = datasets.attach_digest(got.dataset)
    store = BlobStore.of_state(args.state)
    stored = await asyncio.to_thread(store.import_file, args.data, expected)
    _print(
        args,
        {
            "dataset_id": got.dataset.dataset_id,
            "content_digest": stored.digest.hex(),
            "size_bytes": stored.size,
            "blob": str(store.path(stored.digest)),
        },
        f"dataset {got.dataset.dataset_id}: {stored.size} bytes attached, "
        f"SHA-256 {stored.digest.hex()}",
    )
    return 0


def _delivery_text(progress: node_pb2.DeliveryProgress) -> str:
    if progress.complete:
        verified = "digest verified" if progress.digest_verified else "digest NOT verified"
        return f"delivery of {progress.contract_id}: {progress.received_bytes} bytes, {verified}"
    total = progress.total_bytes or "?"
    text = f"delivery of {progress.contract_id}: {progress.received_bytes}/{total} bytes"
    return text + (f"; {progress.error}" if progress.error else "")


def _delivery_ended(progress: node_pb2.DeliveryProgress) -> bool:
    """Complete, or failed (an error that is not a transient one being retried)."""
    return progress.complete or (bool(progress.error) and not progress.error.startswith(RETRYING))


def _delivery_bar(progress: node_pb2.DeliveryProgress) -> None:
    width = 30
    total = progress.total_bytes
    filled = width * progress.received_bytes // total if total else 0
    bar = "#" * filled + "." * (width - filled)
    mib = progress.received_bytes / 2**20
    of = f"{total / 2**20:.1f}" if total else "?"
    note = f"  {progress.error}" if progress.error else ""
    print(f"\r[{bar}] {mib:.1f}/{of} MiB{note}\x1b[K", end="", file=sys.stderr)


async def _delivery(args: argparse.Namespace, stub: OperatorServiceAsyncStub) -> int:
    """``delivery start`` (waiting with a progress bar unless --no-wait) and ``delivery show``."""
    if args.action == "start":
        started = await stub.StartDelivery(
            node_pb2.StartDeliveryRequest(contract_id=args.contract_id), timeout=DEADLINE
        )
        progress = started.progress
        while not args.no_wait and not _delivery_ended(progress):
            if not args.json:
                _delivery_bar(progress)
            await asyncio.sleep(DELIVERY_POLL_SECONDS)
            progress = (
                await stub.GetDeliveryProgress(
                    node_pb2.GetDeliveryProgressRequest(contract_id=args.contract_id),
                    timeout=DEADLINE,
                )
            ).progress
        if not args.json and not args.no_wait:
            _delivery_bar(progress)
            print(file=sys.stderr)
    else:
        progress = (
            await stub.GetDeliveryProgress(
                node_pb2.GetDeliveryProgressRequest(contract_id=args.contract_id),
                timeout=DEADLINE,
            )
        ).progress
    _print(args, _as_json(progress), _delivery_text(progress))
    failed = _delivery_ended(progress) and not progress.complete
    return 1 if failed else 0


# ---------------------------------------------------------------- entry point


_CONTRACT_STATES = {
    "requested": market_pb2.CONTRACT_STATE_REQUESTED,
    "agreed": market_pb2.CONTRACT_STATE_AGREED,
    "finalized": market_pb2.CONTRACT_STATE_FINALIZED,
    "terminated": market_pb2.CONTRACT_STATE_TERMINATED,
}


def _contract_state(contract: market_pb2.Contract) -> str:
    return market_pb2.ContractState.Name(contract.state).removeprefix("CONTRACT_STATE_").lower()


def _contract_row(contract: market_pb2.Contract) -> str:
    terms = contract.terms
    price = f"{terms.price.fen / 100:,.2f}" if terms.dataset_id else "-"
    return (
        f"{terms.contract_id}  {_contract_state(contract):<10} {terms.listing_id}  "
        f"{terms.seller_node:>10} -> {terms.buyer_node:<10} {terms.buyer}  {price:>14} CNY"
    )


def _contract_text(contract: market_pb2.Contract) -> str:
    terms = contract.terms
    lines = [
        f"contract     {terms.contract_id}",
        f"state        {_contract_state(contract)}",
        f"listing      {terms.listing_id} of node {terms.seller_node}",
        f"dataset      {terms.dataset_id or '(the seller has not answered yet)'}",
        f"seller       {terms.seller or '-'}",
        f"buyer        {terms.buyer} of node {terms.buyer_node} ({terms.buyer_country})",
        f"price        {terms.price.fen / 100:,.2f} CNY",
        f"purpose      {terms.purpose}",
    ]
    if terms.export_permit_id:
        lines.append(f"permit       {terms.export_permit_id}")
    if contract.termination_reason:
        lines.append(f"reason       {contract.termination_reason}")
    if contract.envelope:
        signatures = len(json.loads(contract.envelope).get("signatures", []))
        lines.append(f"signatures   {signatures} of 2")
    if contract.HasField("trade_record"):
        lines.append(f"trade record log index {contract.trade_record.log_index}")
    return "\n".join(lines)


async def _contract(args: argparse.Namespace, stub: OperatorServiceAsyncStub) -> int:
    """``contract request|decide|show|list``."""
    if args.action == "request":
        asked = await stub.RequestContract(
            node_pb2.RequestContractRequest(
                idempotency_key=args.key,
                seller_node=args.seller_node,
                listing_id=args.listing,
                buyer=args.buyer,
                purpose=args.purpose,
                export_permit_id=args.permit,
            ),
            timeout=DEADLINE,
        )
        _print(args, _as_json(asked.contract), _contract_text(asked.contract))
        return 0
    if args.action == "decide":
        decided = await stub.DecideContract(
            node_pb2.DecideContractRequest(
                contract_id=args.contract_id, agree=args.agree, reason=args.reason
            ),
            timeout=DEADLINE,
        )
        _print(args, _as_json(decided.contract), _contract_text(decided.contract))
        return 0
    if args.action == "show":
        got = await stub.GetContract(
            node_pb2.GetContractRequest(contract_id=args.contract_id), timeout=DEADLINE
        )
        _print(args, _as_json(got.contract), _contract_text(got.contract))
        return 0
    state = _CONTRACT_STATES[args.only] if args.only else market_pb2.CONTRACT_STATE_UNSPECIFIED
    found: list[market_pb2.Contract] = []
    token = ""
    while True:
        page = await stub.ListContracts(
            node_pb2.ListContractsRequest(state=state, page_size=500, page_token=token),
            timeout=DEADLINE,
        )
        found.extend(page.contracts)
        token = page.next_page_token
        if not token:
            break
    document = {"contracts": [_as_json(c) for c in found]}
    _print(args, document, "\n".join(_contract_row(c) for c in found) or "no contracts")
    return 0


async def _risk(args: argparse.Namespace, stub: OperatorServiceAsyncStub, body: str) -> int:
    """``risk submit``."""
    assessment = json_format.Parse(body, supervision_pb2.RiskAssessment())
    filed = await stub.SubmitRiskAssessment(
        node_pb2.SubmitRiskAssessmentRequest(idempotency_key=args.key, assessment=assessment),
        timeout=DEADLINE,
    )
    state = node_pb2.OutboxState.Name(filed.report.state).removeprefix("OUTBOX_STATE_").lower()
    text = (
        f"risk assessment of {filed.assessment.holder}: "
        f"{filed.assessment.assessment_id or '(not filed yet)'}; report {state}"
    )
    if filed.report.last_error:
        text += f" ({filed.report.last_error})"
    _print(args, _as_json(filed), text)
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.command == "init":
        config = _config(args)
        identity = init_state(args.state, args.node_id, args.region, config, utc_now())
        _print(
            args,
            {"node_id": identity.node_id, "region_code": identity.region_code},
            f"initialized node {identity.node_id} ({identity.region_code}) in {args.state}",
        )
        return 0
    if args.command == "enroll":
        return _enroll(args)
    if args.command == "audit":
        return _audit(args)
    if args.command == "renew":
        return _renew(args)
    if args.command in ("backup", "restore"):
        summary, text = backup.run_command(args, "node")
        _print(args, summary, text)
        return 0
    if args.command == "serve":
        config = _config(args)
        node_id = require_enrolled(args.state).node_id
        configure_logging(config.log_format, service="node", instance=node_id)
        asyncio.run(serve(args.state, config))
        return 0
    if args.command is None:
        build_parser().print_help()
        return 0
    return _operator(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``provex-node``."""
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except ProvexError as error:
        print(f"provex-node: {error}", file=sys.stderr)
        return 2
    except (OSError, json.JSONDecodeError, json_format.ParseError) as error:
        print(f"provex-node: {error}", file=sys.stderr)
        return 2
