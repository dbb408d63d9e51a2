"""The registry as a real process: TLS ports, public reads, verification offline, shutdown."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from provex import bundle, merkle, trust
from provex import catalog as wire
from provex.checkpoint import verify_checkpoint
from provex.v1 import catalog_pb2, registry_pb2, registry_pb2_grpc
from tests.integration.conftest import RunningRegistry, run_cli, start_registry, stop_registry

DEADLINE = 10.0


async def load_trust_root(registry: RunningRegistry) -> trust.TrustRoot:
    async with registry.public_channel() as channel:
        response = await registry_pb2_grpc.TrustServiceStub(channel).GetTrustRoot(
            registry_pb2.GetTrustRootRequest(), timeout=DEADLINE
        )
    assert response.latest_version == 1
    signed = trust.load_trust_root(response.envelope, registry.trust_root_digest, datetime.now(UTC))
    return signed.root


async def test_trust_root_is_pinned_by_the_init_digest(registry: RunningRegistry) -> None:
    root = await load_trust_root(registry)
    assert root.trust_domain == registry.endpoints["trust_domain"]
    assert root.ca_certificate_pem.encode() == registry.ca_pem


async def test_catalog_release_verifies_offline(registry: RunningRegistry) -> None:
    root = await load_trust_root(registry)
    async with registry.public_channel() as channel:
        response = await registry_pb2_grpc.CatalogServiceStub(channel).GetCatalog(
            registry_pb2.GetCatalogRequest(), timeout=DEADLINE
        )
    verified = bundle.verify_bundle(response.release, root, catalog_pb2.CatalogRelease)
    release = wire.release_from_proto(verified.document)
    assert release.catalog.version == 1
    assert len(release.catalog.entries) >= 40
    assert {code.split(".")[0] for code in release.catalog.entries} >= {
        "health",
        "finance",
        "transport",
        "geo",
        "industry",
        "telecom",
        "gov",
        "commerce",
        "energy",
    }


async def test_log_reads_over_the_public_port(registry: RunningRegistry) -> None:
    root = await load_trust_root(registry)
    async with registry.public_channel() as channel:
        log = registry_pb2_grpc.LogServiceStub(channel)
        note = (
            await log.GetCheckpoint(registry_pb2.GetCheckpointRequest(), timeout=DEADLINE)
        ).checkpoint
        checkpoint = verify_checkpoint(note, root.log_verifier, origin=root.log_origin)
        assert checkpoint.size >= 2
        entries = await log.GetEntries(
            registry_pb2.GetEntriesRequest(start=0, end=checkpoint.size), timeout=DEADLINE
        )
        leaves = [merkle.leaf_hash(entry) for entry in entries.entries]
        assert merkle.root(leaves) == checkpoint.root_hash
        proof = await log.GetInclusionProof(
            registry_pb2.GetInclusionProofRequest(log_index=1, tree_size=checkpoint.size),
            timeout=DEADLINE,
        )
        merkle.verify_inclusion(
            leaves[1], 1, checkpoint.size, list(proof.proof), checkpoint.root_hash
        )


BAD_REQUESTS = {
    "entries with end before start": (
        "GetEntries",
        registry_pb2.GetEntriesRequest(start=5, end=1),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "proof beyond the tree": (
        "GetInclusionProof",
        registry_pb2.GetInclusionProofRequest(log_index=10_000, tree_size=20_000),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "consistency from an empty tree": (
        "GetConsistencyProof",
        registry_pb2.GetConsistencyProofRequest(first_size=0),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
}


@pytest.mark.parametrize(
    "method, request_message, code", BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys()
)
async def test_bad_log_requests_get_clear_errors(
    registry: RunningRegistry, method: str, request_message: object, code: grpc.StatusCode
) -> None:
    async with registry.public_channel() as channel:
        call = getattr(registry_pb2_grpc.LogServiceStub(channel), method)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(request_message, timeout=DEADLINE)
    assert raised.value.code() is code
    assert "Traceback" not in (raised.value.details() or "")
    assert raised.value.details()


async def test_unknown_versions_are_not_found(registry: RunningRegistry) -> None:
    async with registry.public_channel() as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await registry_pb2_grpc.CatalogServiceStub(channel).GetCatalog(
                registry_pb2.GetCatalogRequest(version=99), timeout=DEADLINE
            )
        assert raised.value.code() is grpc.StatusCode.NOT_FOUND
        assert "catalog version 99" in (raised.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await registry_pb2_grpc.TrustServiceStub(channel).GetTrustRoot(
                registry_pb2.GetTrustRootRequest(version=7), timeout=DEADLINE
            )
        assert raised.value.code() is grpc.StatusCode.NOT_FOUND


async def test_unoffered_rpcs_say_so(registry: RunningRegistry) -> None:
    async with registry.public_channel() as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await registry_pb2_grpc.CatalogServiceStub(channel).PublishCatalog(
                registry_pb2.PublishCatalogRequest(), timeout=DEADLINE
            )
    assert raised.value.code() is grpc.StatusCode.UNIMPLEMENTED


async def test_federation_port_requires_a_federation_certificate(
    registry: RunningRegistry, registry_state: tuple[Path, str]
) -> None:
    async with registry.federation_channel() as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await registry_pb2_grpc.LogServiceStub(channel).GetCheckpoint(
                registry_pb2.GetCheckpointRequest(), timeout=DEADLINE
            )
    assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
    state, _ = registry_state
    async with registry.federation_channel(state / "admins" / "alice") as channel:
        response = await registry_pb2_grpc.LogServiceStub(channel).GetCheckpoint(
            registry_pb2.GetCheckpointRequest(), timeout=DEADLINE
        )
    assert response.checkpoint


@pytest.mark.parametrize("port", ["public", "federation"])
async def test_health_on_both_ports(
    registry: RunningRegistry, registry_state: tuple[Path, str], port: str
) -> None:
    state, _ = registry_state
    channel = (
        registry.public_channel()
        if port == "public"
        else registry.federation_channel(state / "admins" / "audrey")
    )
    async with channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="provex.v1.LogService"), timeout=DEADLINE
        )
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_restart_keeps_the_log_and_tampering_is_caught(tmp_path: Path) -> None:
    state = tmp_path / "registry"
    init = run_cli("init", "--state", state, "--json")
    assert init.returncode == 0, init.stderr
    digest = init.stdout.split('"trust_root_digest": "')[1].split('"')[0]
    first = await start_registry(state, digest)
    async with first.public_channel() as channel:
        before = (
            await registry_pb2_grpc.LogServiceStub(channel).GetCheckpoint(
                registry_pb2.GetCheckpointRequest(), timeout=DEADLINE
            )
        ).checkpoint
    assert await stop_registry(first) == 0
    assert not (state / "run" / "endpoints.json").exists()
    second = await start_registry(state, digest)
    async with second.public_channel() as channel:
        after = (
            await registry_pb2_grpc.LogServiceStub(channel).GetCheckpoint(
                registry_pb2.GetCheckpointRequest(), timeout=DEADLINE
            )
        ).checkpoint
    assert await stop_registry(second) == 0
    assert before.split("\n")[:3] == after.split("\n")[:3]
    verified = run_cli("log", "verify", "--state", state)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    with sqlite3.connect(state / "registry.db") as conn:
        (entry,) = conn.execute("SELECT entry FROM log_entries WHERE idx = 1").fetchone()
        conn.execute(
            "UPDATE log_entries SET entry = ? WHERE idx = 1",
            (entry[:50] + bytes([entry[50] ^ 1]) + entry[51:],),
        )
    tampered = run_cli("log", "verify", "--state", state)
    assert tampered.returncode == 1
    assert "entry 1" in tampered.stdout
