"""Command line of the national registry: ``provex-registry``.

    provex-registry init --state DIR [--trust-domain TD] [--log-origin O]
    provex-registry serve --state DIR [--public-listen H:P] [--federation-listen H:P]
    provex-registry admin add NAME --role admin|auditor --state DIR
    provex-registry admin invite NODE_ID --region CODE --name NAME --state DIR
    provex-registry log verify --state DIR

Settings come from ``<state>/registry.toml``, then ``PROVEX_REGISTRY_*``
variables, then these flags. ``--json`` prints one JSON object for scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc

import provex
from provex.errors import ProvexError
from provex.identity import channel_credentials
from provex.rpc import raise_for_rpc_error
from provex.timestamps import to_timestamp, utc_now
from provex.trust import decode_trust_root
from provex.v1 import registry_pb2, registry_pb2_grpc
from registry.authz import Role
from registry.config import RegistryConfig, load_config
from registry.server import serve
from registry.setup import add_admin, initialize
from registry.state import StateLayout, latest_trust_root
from registry.transparency import verify_log

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
    add.add_argument("--role", choices=["admin", "auditor"], required=True)
    invite = with_state(admin.add_parser("invite", help="invite a node (the registry must run)"))
    invite.add_argument("node_id", help="the node's id, e.g. gd-gzde")
    invite.add_argument("--region", required=True, help="GB/T 2260 region code, e.g. 440100")
    invite.add_argument("--name", required=True, help="the exchange's display name")
    invite.add_argument("--as", dest="admin", default="", help="admin name (default: the first)")
    invite.add_argument("--hours", type=int, default=0, help="validity (default: the setting)")

    log = commands.add_parser("log", help="the transparency log").add_subparsers(
        dest="log_command", metavar="ACTION", required=True
    )
    with_state(log.add_parser("verify", help="recompute the tree and check every checkpoint"))
    return parser


def _config(args: argparse.Namespace) -> RegistryConfig:
    overrides = {
        name: getattr(args, name, None)
        for name in ("trust_domain", "log_origin", "public_listen", "federation_listen")
    }
    return load_config(args.state).with_overrides(overrides)


def _emit(args: argparse.Namespace, document: dict[str, Any], text: str) -> None:
    print(json.dumps(document, sort_keys=True) if args.json else text)


def invite_node(
    state: Path, admin: str, node_id: str, region: str, name: str, *, hours: int = 0
) -> str:
    """CreateInvitation on the running registry of ``state``, as one of its admins."""
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
    request = registry_pb2.CreateInvitationRequest(
        node_id=node_id, region_code=region, display_name=name
    )
    if hours:
        request.expires_at.CopyFrom(to_timestamp(utc_now() + timedelta(hours=hours)))

    async def create() -> str:
        async with grpc.aio.secure_channel(endpoints["federation"], credentials) as channel:
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
        logging.basicConfig(
            level=logging.INFO,
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s %(message)s",
        )
        asyncio.run(serve(args.state, _config(args)))
        return 0
    if args.command == "admin" and args.admin_command == "invite":
        invitation = invite_node(
            args.state, args.admin, args.node_id, args.region, args.name, hours=args.hours
        )
        _emit(args, {"node_id": args.node_id, "invitation": invitation}, invitation)
        return 0
    if args.command == "admin":
        config = load_config(args.state)
        files = asyncio.run(add_admin(args.state, config, args.name, Role(args.role), utc_now()))
        _emit(
            args,
            {
                "name": args.name,
                "role": args.role,
                "certificate": str(files.certificate),
                "key": str(files.key),
                "ca": str(files.ca),
            },
            f"{args.role} {args.name}: certificate {files.certificate}, key {files.key}, "
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
