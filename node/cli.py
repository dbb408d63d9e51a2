"""Command line of a provincial exchange node: ``provex-node``.

    provex-node init --state DIR --node-id ID --region CODE
    provex-node enroll --state DIR --invitation TEXT|@FILE --registry H:P
                       --registry-federation H:P --registry-ca FILE [--peer-endpoint H:P]
    provex-node serve --state DIR [--peer-listen H:P] [--operator-listen H:P]
    provex-node member add|list ...          provex-node dataset submit|get|list ...
    provex-node listing create|publish|suspend|delist|get|import ...
    provex-node search TEXT [filters]        provex-node federated-search TEXT [filters]
    provex-node outbox                       provex-node status

Operator commands talk to the running node's operator port (found through
``<state>/run/endpoints.json``) with the operator certificate ``init`` made.
Settings come from ``<state>/node.toml``, then ``PROVEX_NODE_*`` variables,
then flags. ``--json`` prints JSON for scripts; tables otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

import provex
from node import listings
from node.config import NodeConfig, load_config
from node.enrollment import enroll
from node.server import serve
from node.state import StateLayout, init_state
from provex.errors import InvalidArgument, ProvexError
from provex.identity import channel_credentials
from provex.rpc import raise_for_rpc_error
from provex.timestamps import utc_now
from provex.v1 import dataset_pb2, market_pb2, node_pb2, node_pb2_grpc, registry_pb2

if TYPE_CHECKING:
    from provex.v1.node_pb2_grpc import OperatorServiceAsyncStub

DEADLINE = 30.0


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
    get = with_state(dataset.add_parser("get", help="one dataset"))
    get.add_argument("dataset_id")
    with_state(dataset.add_parser("list", help="list datasets"))

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


def _config(args: argparse.Namespace) -> NodeConfig:
    overrides = {name: getattr(args, name, None) for name in ("peer_listen", "operator_listen")}
    return load_config(args.state).with_overrides(overrides)


def _print(args: argparse.Namespace, document: Any, text: str) -> None:
    print(json.dumps(document, sort_keys=True, ensure_ascii=False) if args.json else text)


def _as_json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _read_text(value: str) -> str:
    return Path(value[1:]).read_text().strip() if value.startswith("@") else value


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
        request = node_pb2.SubmitDatasetRequest(
            idempotency_key=args.key, dataset=description, dataset_id=args.dataset_id
        )
        record = (await stub.SubmitDataset(request, timeout=DEADLINE)).dataset
        state = node_pb2.OutboxState.Name(record.registration.state)
        _print(args, _as_json(record), f"dataset {record.dataset_id or '(pending)'}: {state}")
        return 0
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
            text = _hits_table(result.hits) + f"\n{result.total} found"
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


# ---------------------------------------------------------------- entry point


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
    if args.command == "serve":
        logging.basicConfig(
            level=logging.INFO,
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s %(message)s",
        )
        asyncio.run(serve(args.state, _config(args)))
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
