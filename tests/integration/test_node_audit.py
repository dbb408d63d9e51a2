"""A province audits the registry's log (``provex-node audit``) with real processes.

The node verifies checkpoints as it runs; the audit downloads every entry up
to the latest one, checks each entry's signature and recomputes the tree. A
registry whose stored history was edited afterwards fails the audit, and the
audit names the entry.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

from provex.v1 import node_pb2, node_pb2_grpc
from tests.integration.conftest import run_cli, start_registry, stop_registry
from tests.integration.nodes import create_node, node_cli, start_node, stop_node

DEADLINE = 20.0


async def test_a_province_audits_the_log_and_catches_an_edited_entry(tmp_path: Path) -> None:
    state = tmp_path / "registry"
    init = run_cli("init", "--state", state, "--json")
    assert init.returncode == 0, init.stderr
    digest = json.loads(init.stdout)["trust_root_digest"]
    assert run_cli("admin", "add", "alice", "--role", "admin", "--state", state).returncode == 0
    registry = await start_registry(state, digest)
    node = await start_node(create_node(registry, tmp_path, "sh-audit", "310000"))
    try:
        async with node.operator_channel() as channel:
            operator = node_pb2_grpc.OperatorServiceStub(channel)
            deadline = time.monotonic() + DEADLINE
            while True:
                status = await operator.GetNodeStatus(
                    node_pb2.GetNodeStatusRequest(), timeout=DEADLINE
                )
                if status.checkpoint:
                    break
                assert time.monotonic() < deadline, "the node verified no checkpoint"
                await asyncio.sleep(0.2)
        audited = node_cli("audit", "--state", node.state, "--json")
        assert audited.returncode == 0, audited.stdout + audited.stderr
        report = json.loads(audited.stdout)
        assert report["ok"] is True
        assert report["computed_root"] == report["root_hash"]
        kinds = report["entries_by_type"]
        assert kinds["trust-root"] == 1 and kinds["catalog-release"] == 1
        assert kinds["enrollment"] >= 1
        assert sum(kinds.values()) == report["tree_size"]

        # The registry's operator edits a stored entry below the node's checkpoint.
        listen = (registry.endpoints["public"], registry.endpoints["federation"])
        assert await stop_registry(registry) == 0
        with sqlite3.connect(state / "registry.db") as conn:
            entry = bytes(conn.execute("SELECT entry FROM log_entries WHERE idx = 1").fetchone()[0])
            edited = entry.replace(b'"payload":"', b'"payload":"AAAA', 1)
            assert edited != entry
            conn.execute("UPDATE log_entries SET entry = ? WHERE idx = 1", (edited,))
        registry = await start_registry(state, digest, listen=listen)
        failed = node_cli("audit", "--state", node.state)
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert "log audit FAILED" in failed.stdout
        assert "entry 1:" in failed.stdout
        assert "history changed" in failed.stdout
    finally:
        assert await stop_node(node) == 0
        if registry.process.returncode is None:
            assert await stop_registry(registry) == 0
