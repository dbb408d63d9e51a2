"""A gRPC health probe for containers and supervisors: ``python -m provex.healthprobe``.

Both servers serve only TLS, which Kubernetes' native ``grpc:`` probes and
most health probes do not speak with a private CA and client certificates.
This probe does, from what the state directory already holds::

    python -m provex.healthprobe --state /var/lib/provex [--service NAME] [--timeout 3]

It reads ``<state>/run/endpoints.json`` (present only while the server is
ready) and calls ``grpc.health.v1.Health/Check``:

- a **registry** on its public port (server TLS, trusting ``ca_certificate``);
- a **node** on its operator port (mutual TLS with the operator CA and the
  operator certificate ``init`` wrote; the port stays on loopback).

A wildcard listen host (``0.0.0.0``, ``::``) is dialed as ``127.0.0.1``;
the servers' certificates name ``127.0.0.1`` and ``localhost``. Exit status
0 means SERVING; 1 anything else (not ready, not serving, unreachable), with
one line on standard error saying why.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from provex.errors import FailedPrecondition, ProvexError
from provex.identity import channel_credentials, tls_channel_options

__all__ = ("ProbeTarget", "check", "main", "probe_target")

DEFAULT_TIMEOUT = 3.0
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})


@dataclass(frozen=True)
class ProbeTarget:
    """Where and how to call the health service of a running server."""

    service: str
    address: str
    ca_pem: bytes
    cert_pem: bytes | None = None
    key_pem: bytes | None = None


def dialable(address: str) -> str:
    """``address`` with a wildcard host replaced by ``127.0.0.1``."""
    host, _, port = address.rpartition(":")
    return f"127.0.0.1:{port}" if host in _WILDCARD_HOSTS else address


def probe_target(state_dir: Path) -> ProbeTarget:
    """The health-check target of the server running on ``state_dir``."""
    endpoints_file = state_dir / "run" / "endpoints.json"
    try:
        endpoints = json.loads(endpoints_file.read_text())
    except FileNotFoundError:
        raise FailedPrecondition(
            f"not ready: {endpoints_file} does not exist (the server is starting, stopped, "
            "or --state is wrong)"
        ) from None
    except json.JSONDecodeError:
        raise FailedPrecondition(f"not ready: {endpoints_file} is being written") from None
    service = str(endpoints.get("service", ""))
    if service == "registry":
        return ProbeTarget(
            service,
            dialable(str(endpoints["public"])),
            Path(endpoints["ca_certificate"]).read_bytes(),
        )
    if service == "node":
        return ProbeTarget(
            service,
            dialable(str(endpoints["operator"])),
            Path(endpoints["operator_ca_certificate"]).read_bytes(),
            Path(endpoints["operator_certificate"]).read_bytes(),
            Path(endpoints["operator_key"]).read_bytes(),
        )
    raise FailedPrecondition(f"{endpoints_file} names an unknown service {service!r}")


def check(
    target: ProbeTarget,
    service_name: str = "",
    timeout: float = DEFAULT_TIMEOUT,
    server_name: str | None = None,
) -> str:
    """Call Health/Check on ``target``; return the status name (``SERVING``, ...)."""
    credentials = channel_credentials(target.ca_pem, target.cert_pem, target.key_pem)
    options = tls_channel_options(server_name)
    with grpc.secure_channel(target.address, credentials, options=options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = stub.Check(health_pb2.HealthCheckRequest(service=service_name), timeout=timeout)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def build_parser() -> argparse.ArgumentParser:
    """The arguments of ``python -m provex.healthprobe``."""
    parser = argparse.ArgumentParser(
        prog="python -m provex.healthprobe",
        description="Exit 0 if the Provex server running on a state directory is SERVING.",
    )
    parser.add_argument("--state", type=Path, required=True, help="the server's state directory")
    parser.add_argument("--service", default="", help="a gRPC service name (default: the server)")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help="deadline of the call, seconds"
    )
    parser.add_argument(
        "--server-name",
        default=None,
        help="verify the server certificate against this name instead of the dialed host",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Probe once; 0 when SERVING, 1 otherwise."""
    args = build_parser().parse_args(argv)
    try:
        target = probe_target(args.state)
        status = check(target, args.service, args.timeout, args.server_name)
    except ProvexError as error:
        print(f"healthprobe: {error}", file=sys.stderr)
        return 1
    except (OSError, KeyError) as error:
        print(f"healthprobe: not ready: {error!r}", file=sys.stderr)
        return 1
    except grpc.RpcError as error:
        code = error.code().name if isinstance(error, grpc.Call) else "UNKNOWN"
        details = error.details() if isinstance(error, grpc.Call) else str(error)
        print(
            f"healthprobe: {target.service} at {target.address}: {code} {details}", file=sys.stderr
        )
        return 1
    if status != "SERVING":
        print(f"healthprobe: {target.service} at {target.address} is {status}", file=sys.stderr)
        return 1
    print(f"{target.service} at {target.address}: {status}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
