"""Real registry processes on loopback for the integration tests.

A registry is initialized with ``provex-registry init``, started with
``provex-registry serve`` on port 0 (public and federation ports), and found
through ``<state>/run/endpoints.json``, exactly as an outside tool would.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from provex.identity import channel_credentials
from provex.rpc import wait_for_endpoints

BIN = Path(sys.executable).parent
START_TIMEOUT = 30.0


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run ``provex-registry`` to completion (check=False: callers assert the code)."""
    return subprocess.run(
        [str(BIN / "provex-registry"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@dataclass
class RunningRegistry:
    """A registry process and what it reported when ready."""

    state: Path
    process: asyncio.subprocess.Process
    endpoints: dict[str, Any]
    trust_root_digest: str

    @property
    def ca_pem(self) -> bytes:
        return Path(self.endpoints["ca_certificate"]).read_bytes()

    def public_channel(self) -> grpc.aio.Channel:
        return grpc.aio.secure_channel(self.endpoints["public"], channel_credentials(self.ca_pem))

    def federation_channel(self, folder: Path | None = None) -> grpc.aio.Channel:
        """A mutual-TLS channel with the client certificate in ``folder`` (cert.pem, key.pem)."""
        if folder is None:
            credentials = channel_credentials(self.ca_pem)
        else:
            credentials = channel_credentials(
                self.ca_pem, (folder / "cert.pem").read_bytes(), (folder / "key.pem").read_bytes()
            )
        return grpc.aio.secure_channel(self.endpoints["federation"], credentials)


async def start_registry(
    state: Path, digest: str, listen: tuple[str, str] = ("127.0.0.1:0", "127.0.0.1:0")
) -> RunningRegistry:
    """Start ``provex-registry serve`` (public, federation ports; 0 = any) and wait until ready."""
    env = dict(os.environ)
    env["PROVEX_REGISTRY_PUBLIC_LISTEN"] = listen[0]
    env["PROVEX_REGISTRY_FEDERATION_LISTEN"] = listen[1]
    (state / "run" / "endpoints.json").unlink(missing_ok=True)
    log = (state / "serve.log").open("ab")
    process = await asyncio.create_subprocess_exec(
        str(BIN / "provex-registry"),
        "serve",
        "--state",
        str(state),
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
        env=env,
    )
    try:
        async with asyncio.timeout(START_TIMEOUT):
            endpoints = await wait_for_endpoints(state)
            assert process.stdout is not None
            printed = json.loads(await process.stdout.readline())
    except TimeoutError:
        process.kill()
        raise AssertionError(
            f"registry did not start: {(state / 'serve.log').read_text()}"
        ) from None
    assert printed == endpoints
    return RunningRegistry(state, process, endpoints, digest)


async def stop_registry(registry: RunningRegistry) -> int:
    """SIGTERM, then wait for a clean exit; return the exit code."""
    if registry.process.returncode is None:
        registry.process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(30):
        return await registry.process.wait()


@pytest.fixture(scope="session")
def registry_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """An initialized registry state with an admin and an auditor."""
    state = tmp_path_factory.mktemp("registry")
    init = run_cli("init", "--state", state, "--json")
    assert init.returncode == 0, init.stderr
    digest = json.loads(init.stdout)["trust_root_digest"]
    for name, role in (("alice", "admin"), ("audrey", "auditor")):
        added = run_cli("admin", "add", name, "--role", role, "--state", state)
        assert added.returncode == 0, added.stderr
    yield state, digest


@pytest.fixture(scope="session")
async def registry(registry_state: tuple[Path, str]) -> AsyncIterator[RunningRegistry]:
    """One registry process shared by the tests of a session."""
    state, digest = registry_state
    running = await start_registry(state, digest)
    yield running
    assert await stop_registry(running) == 0
