"""Backup and restore of real, running state, and the container health probe.

A registry and one node run as real processes on loopback with mutual TLS;
the node reports a member to the registry. Both state directories are backed
up while their servers run and members keep arriving (the registry into a
directory, the node into a .tar.gz), the servers are stopped, the backups
restored into new directories and started again: the registry's log verifies
and has a size it had during the backup, the node holds one snapshot of its
members, follows the restored registry and empties its outbox. ``python -m provex.healthprobe``
answers 0 for every running server and 1 once it has stopped.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

from provex.backup import MANIFEST_NAME, backup_state, read_manifest, restore_state
from provex.ids import CreditCode
from provex.v1 import node_pb2, node_pb2_grpc, registry_pb2, registry_pb2_grpc
from tests.integration.conftest import RunningRegistry, run_cli, start_registry, stop_registry
from tests.integration.nodes import RunningNode, create_node, node_cli, start_node, stop_node

DEADLINE = 20.0
HOLDER = CreditCode.from_parts("9", "1", "440100", "MA5BACK1").code
LATER = [CreditCode.from_parts("9", "1", "440100", f"MA5BK{n:03d}").code for n in range(40)]


def probe(state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "provex.healthprobe", "--state", str(state), "--timeout", "5"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def log_size(registry: RunningRegistry) -> int:
    async with registry.public_channel() as channel:
        response = await registry_pb2_grpc.LogServiceStub(channel).GetCheckpoint(
            registry_pb2.GetCheckpointRequest(), timeout=DEADLINE
        )
    # A checkpoint note: origin, tree size, root hash, then the signatures.
    return int(response.checkpoint.splitlines()[1])


async def wait_outbox_empty(node: RunningNode) -> node_pb2.GetNodeStatusResponse:
    deadline = time.monotonic() + 20
    async with node.operator_channel() as channel:
        stub = node_pb2_grpc.OperatorServiceStub(channel)
        while True:
            status = await stub.GetNodeStatus(node_pb2.GetNodeStatusRequest(), timeout=DEADLINE)
            if status.outbox_pending == 0 or time.monotonic() > deadline:
                return status
            await asyncio.sleep(0.2)


async def add_member(node: RunningNode, code: str, name: str) -> None:
    async with node.operator_channel() as channel:
        await node_pb2_grpc.OperatorServiceStub(channel).AddMember(
            node_pb2.AddMemberRequest(
                member=registry_pb2.Member(credit_code=code, name=name, region_code="440100")
            ),
            timeout=DEADLINE,
        )


async def keep_adding(
    node: RunningNode, codes: list[str], added: list[str], going: asyncio.Event
) -> None:
    """Add members one after another (node and registry both write meanwhile)."""
    for number, code in enumerate(codes):
        await add_member(node, code, f"广州市在线备份{number}号有限公司")
        added.append(code)
        if len(added) == 3:
            going.set()


async def members_of(node: RunningNode) -> list[str]:
    async with node.operator_channel() as channel:
        found = await node_pb2_grpc.OperatorServiceStub(channel).ListLocalMembers(
            node_pb2.ListLocalMembersRequest(), timeout=DEADLINE
        )
    return [member.credit_code for member in found.members]


async def test_backup_running_registry_and_node_then_restore_and_serve(tmp_path: Path) -> None:
    state = tmp_path / "registry"
    init = run_cli("init", "--state", state, "--json")
    assert init.returncode == 0, init.stderr
    digest = json.loads(init.stdout)["trust_root_digest"]
    added = run_cli("admin", "add", "alice", "--role", "admin", "--state", state)
    assert added.returncode == 0, added.stderr
    not_running = probe(state)
    assert not_running.returncode == 1
    assert "not ready" in not_running.stderr

    registry = await start_registry(state, digest)
    node: RunningNode | None = None
    added_later: list[str] = []
    before: list[str] = []
    try:
        node = await start_node(create_node(registry, tmp_path, "gd-gzde", "440100"))
        await add_member(node, HOLDER, "广州市备份数据有限公司")
        assert (await wait_outbox_empty(node)).outbox_pending == 0
        for server_state, service in ((state, "registry"), (node.state, "node")):
            healthy = probe(server_state)
            assert healthy.returncode == 0, healthy.stderr
            assert f"{service} at 127.0.0.1:" in healthy.stdout
            assert "SERVING" in healthy.stdout

        size = await log_size(registry)
        assert size >= 3  # trust root, catalog, the node's enrollment
        # Both backups run while members keep arriving at the node (and its reports at
        # the registry): the servers write throughout.
        going = asyncio.Event()
        adding = asyncio.create_task(keep_adding(node, LATER, added_later, going))
        await asyncio.wait_for(going.wait(), DEADLINE)
        before = list(added_later)
        registry_backup, node_backup = await asyncio.gather(
            asyncio.to_thread(backup_state, state, tmp_path / "backups" / "registry"),
            asyncio.to_thread(backup_state, node.state, tmp_path / "backups" / "gd-gzde.tar.gz"),
        )
        during = list(added_later)
        await adding
        size_after = await log_size(registry)
    finally:
        if node is not None:
            assert await stop_node(node) == 0
        assert await stop_registry(registry) == 0
    assert probe(state).returncode == 1

    # What the backups hold: everything but run/, each file with its digest.
    assert registry_backup.kind == "registry"
    assert node_backup.kind == "node"
    registry_paths = {item.path for item in registry_backup.files}
    assert {"registry.toml", "registry.db", "keys/issuer.pem", "tls/ca.pem"} <= registry_paths
    assert "admins/alice/key.pem" in registry_paths
    assert not any(path.startswith("run/") or path.endswith("-wal") for path in registry_paths)
    assert registry_backup.entry("keys/issuer.pem").mode == 0o600
    assert registry_backup.entry("registry.db").database
    assert registry_backup.entry("registry.db").schema_version >= 1
    node_paths = {item.path for item in node_backup.files}
    assert {"node.toml", "identity.json", "node.db", "tls/node.pem", "operator/key.pem"} <= (
        node_paths
    )
    assert read_manifest(tmp_path / "backups" / "gd-gzde.tar.gz") == node_backup
    assert (tmp_path / "backups" / "registry" / MANIFEST_NAME).exists()

    # Restore the registry elsewhere: its log verifies and has the size it had.
    restored = tmp_path / "restored-registry"
    wrong_program = node_cli("restore", tmp_path / "backups" / "registry", "--state", restored)
    assert wrong_program.returncode == 2
    assert "restore it with provex-registry" in wrong_program.stderr
    assert not restored.exists()
    by_cli = run_cli("restore", tmp_path / "backups" / "registry", "--state", restored, "--json")
    assert by_cli.returncode == 0, by_cli.stderr
    assert json.loads(by_cli.stdout)["files"] == len(registry_backup.files)
    assert read_manifest(tmp_path / "backups" / "registry") == registry_backup
    assert (restored / "keys" / "issuer.pem").stat().st_mode & 0o777 == 0o600
    verified = run_cli("log", "verify", "--state", restored, "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["ok"] is True

    registry = await start_registry(restored, digest)
    node = None
    try:
        assert size <= await log_size(registry) <= size_after
        assert probe(restored).returncode == 0
        # The restored node follows the restored registry (now on other ports).
        node_state = tmp_path / "restored-gd-gzde"
        restore_state(tmp_path / "backups" / "gd-gzde.tar.gz", node_state)
        node = await start_node(
            node_state,
            {"PROVEX_NODE_REGISTRY_ADDRESS": registry.endpoints["federation"]},
        )
        # One snapshot: the first member, those added before the backup began, and
        # perhaps some added while it ran, never one added after it ended.
        restored_members = await members_of(node)
        assert {HOLDER, *before} <= set(restored_members)
        assert set(restored_members) <= {HOLDER, *during}
        status = await wait_outbox_empty(node)
        assert status.node_id == "gd-gzde"
        assert status.outbox_pending == 0
        assert probe(node_state).returncode == 0
        async with registry.federation_channel(restored / "admins" / "alice") as channel:
            member = await registry_pb2_grpc.MemberServiceStub(channel).GetMember(
                registry_pb2.GetMemberRequest(credit_code=HOLDER), timeout=DEADLINE
            )
        assert member.member.node_id == "gd-gzde"
    finally:
        if node is not None:
            assert await stop_node(node) == 0
        assert await stop_registry(registry) == 0
