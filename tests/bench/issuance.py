"""Issuance benchmark: durable, signed, logged registrations against baselines of the same run.

    python tests/bench/issuance.py [--quick]

Starts a real registry (``provex-registry init`` + ``serve``, its own
process), enrolls a node through the API (admin invitation, CSR, Enroll) and
reports a member; then a load client in a second process measures:

- ``unary_rate``: ``RegisterDataset`` at 64 calls in flight;
- ``bulk_rate``: the ``RegisterDatasets`` stream;
- ``echo_rate``: a plain grpc.aio echo server/client pair, same process
  layout, same mutual TLS, same concurrency;
- ``sign_rate``: raw Ed25519 signing in this process.

The last line printed is one JSON object with the raw rates and
``unary_ratio = unary_rate / echo_rate`` and ``bulk_ratio = bulk_rate / sign_rate``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from provex import pki
from provex.envelope import raw_public_key
from provex.identity import SpiffeId, channel_credentials
from provex.ids import CreditCode
from provex.rpc import wait_for_endpoints
from provex.timestamps import to_timestamp
from provex.v1 import registry_pb2, registry_pb2_grpc

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
NODE_ID = "gd-bench"
HOLDER = str(CreditCode.from_parts("9", "1", "440100", "MA5D1234"))
CATEGORY = "transport.road.traffic_flow"


def _cli(*args: str | Path) -> str:
    done = subprocess.run(
        [str(BIN / "provex-registry"), *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if done.returncode != 0:
        raise SystemExit(f"provex-registry {' '.join(map(str, args))} failed: {done.stderr}")
    return done.stdout


def _load(spec: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(HERE / "load.py"), json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
        timeout=float(spec["seconds"]) + 300,
    )
    if done.returncode != 0:
        raise SystemExit(f"load client failed: {done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _describe(what: str, result: dict[str, Any]) -> str:
    return (
        f"{what}: {result['rate']:.0f}/s ({result['count']} in {result['seconds']:.1f} s, "
        f"{result['errors']} errors)"
    )


def sign_rate(seconds: float) -> float:
    """Ed25519 signatures per second (cryptography), over 600-byte messages."""
    key = Ed25519PrivateKey.generate()
    message = b"m" * 600
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(1000):
            key.sign(message)
        count += 1000
    return count / (time.perf_counter() - started)


async def enroll_node(state: Path, endpoints: dict[str, Any], workdir: Path) -> dict[str, str]:
    """Invite, enroll and report one member through the registry's API; return TLS file paths."""
    ca = Path(endpoints["ca_certificate"]).read_bytes()
    admin = state / "admins" / "bench"
    admin_creds = channel_credentials(
        ca, (admin / "cert.pem").read_bytes(), (admin / "key.pem").read_bytes()
    )
    async with grpc.aio.secure_channel(endpoints["federation"], admin_creds) as channel:
        invitation = await registry_pb2_grpc.EnrollmentServiceStub(channel).CreateInvitation(
            registry_pb2.CreateInvitationRequest(
                node_id=NODE_ID,
                region_code="440100",
                display_name="Benchmark exchange",
                expires_at=to_timestamp(datetime.now(UTC) + timedelta(hours=1)),
            ),
            timeout=10,
        )
    key = pki.generate_tls_key()
    csr = pki.make_csr(key, SpiffeId.node(endpoints["trust_domain"], NODE_ID))
    async with grpc.aio.secure_channel(endpoints["public"], channel_credentials(ca)) as channel:
        enrolled = await registry_pb2_grpc.EnrollmentServiceStub(channel).Enroll(
            registry_pb2.EnrollRequest(
                invitation=invitation.invitation,
                csr_pem=pki.csr_to_pem(csr).decode(),
                signing_key=raw_public_key(Ed25519PrivateKey.generate().public_key()),
                peer_endpoint="127.0.0.1:1",
            ),
            timeout=10,
        )
    files = {
        "ca": workdir / "ca.pem",
        "cert": workdir / "node.pem",
        "key": workdir / "node-key.pem",
    }
    files["ca"].write_bytes(ca)
    files["cert"].write_text(enrolled.certificate_pem)
    files["key"].write_bytes(pki.key_to_pem(key))
    node_creds = channel_credentials(ca, files["cert"].read_bytes(), files["key"].read_bytes())
    async with grpc.aio.secure_channel(endpoints["federation"], node_creds) as channel:
        await registry_pb2_grpc.MemberServiceStub(channel).ReportMember(
            registry_pb2.ReportMemberRequest(
                member=registry_pb2.Member(
                    credit_code=HOLDER,
                    name="广州市交通数据有限公司",
                    region_code="440100",
                    node_id=NODE_ID,
                    country="CN",
                )
            ),
            timeout=10,
        )
    return {name: str(path) for name, path in files.items()}


async def start_process(
    *command: str, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env
    )


async def main(quick: bool) -> None:
    seconds = 5.0 if quick else 20.0
    in_flight = 64
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        state = workdir / "registry"
        _cli("init", "--state", state)
        _cli("admin", "add", "bench", "--role", "admin", "--state", state)
        env = dict(
            os.environ,
            PROVEX_REGISTRY_PUBLIC_LISTEN="127.0.0.1:0",
            PROVEX_REGISTRY_FEDERATION_LISTEN="127.0.0.1:0",
        )
        registry = await start_process(
            str(BIN / "provex-registry"), "serve", "--state", str(state), env=env
        )
        try:
            async with asyncio.timeout(30):
                endpoints = await wait_for_endpoints(state)
            tls = await enroll_node(state, endpoints, workdir)
            base = {
                "ca": tls["ca"],
                "cert": tls["cert"],
                "key": tls["key"],
                "seconds": seconds,
                "in_flight": in_flight,
                "holder": HOLDER,
                "category": CATEGORY,
                "target": endpoints["federation"],
            }
            unary = _load({**base, "mode": "unary", "prefix": "unary"})
            print(_describe("unary RegisterDataset", unary), flush=True)
            bulk_spec = {"mode": "bulk", "prefix": "bulk", "in_flight": 1000, "streams": 2}
            bulk = _load({**base, **bulk_spec, "chunk": 250})
            print(_describe("bulk RegisterDatasets", bulk), flush=True)
        finally:
            registry.send_signal(signal.SIGTERM)
            await registry.wait()
        echo = await start_process(
            sys.executable,
            str(HERE / "echo.py"),
            "serve",
            str(state / "tls" / "server.pem"),
            str(state / "tls" / "server-key.pem"),
            tls["ca"],
        )
        try:
            assert echo.stdout is not None
            port = int((await echo.stdout.readline()).decode())
            echo_result = _load({**base, "mode": "echo", "target": f"127.0.0.1:{port}"})
            print(f"echo baseline: {echo_result['rate']:.0f}/s", flush=True)
        finally:
            echo.send_signal(signal.SIGTERM)
            await echo.wait()
    signs = sign_rate(2.0 if quick else 5.0)
    print(f"Ed25519 sign: {signs:.0f}/s", flush=True)
    summary = {
        "unary_rate": round(unary["rate"], 1),
        "echo_rate": round(echo_result["rate"], 1),
        "unary_ratio": round(unary["rate"] / echo_result["rate"], 3),
        "bulk_rate": round(bulk["rate"], 1),
        "sign_rate": round(signs, 1),
        "bulk_ratio": round(bulk["rate"] / signs, 3),
        "unary_errors": unary["errors"],
        "bulk_errors": bulk["errors"],
        "seconds_per_run": seconds,
        "in_flight": in_flight,
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short runs (under a minute)")
    asyncio.run(main(parser.parse_args().quick))
