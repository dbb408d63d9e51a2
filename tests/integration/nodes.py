"""Real node processes for the integration tests: init, invite, enroll, serve, operator channels.

Each node is ``provex-node`` with its own state directory, enrolled with an
invitation the registry's admin created (``provex-registry admin invite``)
and served on port 0; tests find it through ``<state>/run/endpoints.json``
and call it with the generated stubs over mutual TLS, as an operator or a
peer in the wild would.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from provex.identity import channel_credentials, node_server_name, tls_channel_options
from provex.rpc import wait_for_endpoints
from tests.integration.conftest import BIN, START_TIMEOUT, RunningRegistry, run_cli


def node_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run ``provex-node`` to completion (check=False: callers assert the code)."""
    return subprocess.run(
        [str(BIN / "provex-node"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@dataclass
class RunningNode:
    """A node process and what it reported when ready."""

    node_id: str
    region: str
    state: Path
    process: asyncio.subprocess.Process
    endpoints: dict[str, Any]

    def operator_channel(self) -> grpc.aio.Channel:
        credentials = channel_credentials(
            Path(self.endpoints["operator_ca_certificate"]).read_bytes(),
            Path(self.endpoints["operator_certificate"]).read_bytes(),
            Path(self.endpoints["operator_key"]).read_bytes(),
        )
        return grpc.aio.secure_channel(self.endpoints["operator"], credentials)

    def peer_channel_as(self, other: RunningNode) -> grpc.aio.Channel:
        """A channel to this node's peer port with ``other``'s federation certificate."""
        credentials = channel_credentials(
            (other.state / "tls" / "ca.pem").read_bytes(),
            (other.state / "tls" / "node.pem").read_bytes(),
            (other.state / "tls" / "node-key.pem").read_bytes(),
        )
        options = tls_channel_options(
            node_server_name(self.endpoints["trust_domain"], self.node_id)
        )
        return grpc.aio.secure_channel(self.endpoints["peer"], credentials, options=options)


def create_node(registry: RunningRegistry, workdir: Path, node_id: str, region: str) -> Path:
    """``init``, an admin's invitation, and ``enroll``: a node state ready to serve."""
    state = workdir / node_id
    done = node_cli(
        "init", "--state", state, "--node-id", node_id, "--region", region,
        "--peer-listen", "127.0.0.1:0", "--operator-listen", "127.0.0.1:0",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    invited = run_cli(
        "admin", "invite", node_id, "--region", region, "--name", f"Exchange {node_id}",
        "--state", registry.state,
    )  # fmt: skip
    assert invited.returncode == 0, invited.stderr
    (state / "invitation.txt").write_text(invited.stdout.strip())
    enrolled = node_cli(
        "enroll", "--state", state, "--invitation", f"@{state / 'invitation.txt'}",
        "--registry", registry.endpoints["public"],
        "--registry-federation", registry.endpoints["federation"],
        "--registry-ca", registry.endpoints["ca_certificate"],
    )  # fmt: skip
    assert enrolled.returncode == 0, enrolled.stderr
    return state


async def start_node(state: Path, env: dict[str, str] | None = None) -> RunningNode:
    """``provex-node serve`` on the state's ports; wait until ready."""
    (state / "run" / "endpoints.json").unlink(missing_ok=True)
    log = (state / "serve.log").open("ab")
    environment = dict(os.environ)
    environment.update(
        {
            "PROVEX_NODE_DIRECTORY_REFRESH_SECONDS": "0.5",
            "PROVEX_NODE_CHECKPOINT_POLL_SECONDS": "0.5",
            "PROVEX_NODE_REGISTRY_DEADLINE": "3",
        }
    )
    environment.update(env or {})
    process = await asyncio.create_subprocess_exec(
        str(BIN / "provex-node"), "serve", "--state", str(state),
        stdout=asyncio.subprocess.PIPE, stderr=log, env=environment,
    )  # fmt: skip
    try:
        async with asyncio.timeout(START_TIMEOUT):
            endpoints = await wait_for_endpoints(state)
            assert process.stdout is not None
            printed = json.loads(await process.stdout.readline())
    except TimeoutError:
        process.kill()
        raise AssertionError(f"node did not start: {(state / 'serve.log').read_text()}") from None
    assert printed == endpoints
    identity = json.loads((state / "identity.json").read_text())
    return RunningNode(identity["node_id"], identity["region_code"], state, process, endpoints)


async def stop_node(node: RunningNode) -> int:
    """SIGTERM (after SIGCONT, in case the test froze it); wait for a clean exit."""
    if node.process.returncode is None:
        node.process.send_signal(signal.SIGCONT)
        node.process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(30):
        return await node.process.wait()
