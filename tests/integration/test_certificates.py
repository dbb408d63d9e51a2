"""CertificateService end to end: a real registry process, mutual TLS, port 0.

Until enrollment lands in these tests, nodes and their members are written
straight into ``<state>/registry.db`` of a registry state made here with
``provex-registry init`` (before the registry starts), and each node gets a
client certificate for ``spiffe://provex.local/node/<id>`` from the state's
federation CA. Every bundle the registry answers is verified with
:mod:`provex.bundle` against the trust root alone (pinned by init's digest).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from provex import bundle as bundles
from provex import pki, trust
from provex.identity import SpiffeId
from provex.ids import CreditCode, DatasetId
from provex.v1 import common_pb2, dataset_pb2, registry_pb2, registry_pb2_grpc
from tests.integration.conftest import RunningRegistry, run_cli, start_registry, stop_registry

DEADLINE = 20.0
TRUST_DOMAIN = "provex.local"
NODE = "gd-gzde"
OTHER_NODE = "gd-szde"
HOLDER = CreditCode.from_parts("9", "1", "440100", "MA5E0001").code  # has a security officer
PLAIN = CreditCode.from_parts("9", "1", "440100", "MA5E0002").code
FROZEN = CreditCode.from_parts("9", "1", "440100", "MA5E0003").code
FOREIGN = CreditCode.from_parts("9", "1", "440300", "MA5E0004").code  # member of gd-szde


def add_node(state: Path, node_id: str, region: str, members: list[tuple[str, str, bytes]]) -> Path:
    """Test-only enrollment: a ``nodes`` row, ``members`` rows and a node client certificate.

    ``members`` are (credit code, status, serialized SecurityOfficer or b"").
    Returns the folder holding cert.pem and key.pem.
    """
    now = datetime.now(UTC)
    ca_key = pki.load_key_pem((state / "tls" / "ca-key.pem").read_bytes())
    ca_cert = pki.load_cert_pem((state / "tls" / "ca.pem").read_bytes())
    spiffe_id = SpiffeId.node(TRUST_DOMAIN, node_id)
    key = pki.generate_tls_key()
    cert = pki.issue_certificate(
        ca_key,
        ca_cert,
        pki.make_csr(key, spiffe_id),
        spiffe_id,
        now=now,
        validity=timedelta(days=1),
    )
    folder = state / "test-nodes" / node_id
    folder.mkdir(parents=True)
    (folder / "cert.pem").write_bytes(pki.cert_to_pem(cert))
    (folder / "key.pem").write_bytes(pki.key_to_pem(key))
    with sqlite3.connect(state / "registry.db") as conn:
        conn.execute(
            "INSERT INTO nodes (node_id, region_code, display_name, peer_endpoint, status, "
            "signing_key, certificate_fingerprint, certificate_expires_at, enrolled_at, "
            "log_index) VALUES (?, ?, ?, '127.0.0.1:1', 'active', ?, ?, ?, ?, 0)",
            (
                node_id,
                region,
                node_id,
                bytes(32),
                pki.certificate_fingerprint(cert),
                (now + timedelta(days=1)).isoformat(),
                now.isoformat(),
            ),
        )
        for code, status, officer in members:
            conn.execute(
                "INSERT INTO members (credit_code, node_id, name, region_code, country, "
                "security_officer, status, updated_at) VALUES (?, ?, ?, ?, 'CN', ?, ?, ?)",
                (code, node_id, f"member {code}", code[2:8], officer, status, now.isoformat()),
            )
    conn.close()
    return folder


@dataclass
class Federation:
    registry: RunningRegistry
    root: trust.TrustRoot
    node: Path
    other_node: Path
    admin: Path
    auditor: Path

    def channel(self, folder: Path) -> grpc.aio.Channel:
        return self.registry.federation_channel(folder)

    def verify(self, bundle: common_pb2.Bundle) -> dataset_pb2.DatasetCertificate:
        return bundles.verify_certificate(bundle, self.root)

    def verify_statement(self, bundle: common_pb2.Bundle) -> dataset_pb2.StatusStatement:
        return bundles.verify_bundle(bundle, self.root, dataset_pb2.StatusStatement).document


@pytest.fixture(scope="module")
async def federation(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Federation]:
    state = tmp_path_factory.mktemp("certificates") / "registry"
    init = run_cli("init", "--state", state, "--json")
    assert init.returncode == 0, init.stderr
    digest = json.loads(init.stdout)["trust_root_digest"]
    for name, role in (("alice", "admin"), ("audrey", "auditor")):
        added = run_cli("admin", "add", name, "--role", role, "--state", state)
        assert added.returncode == 0, added.stderr
    officer = registry_pb2.SecurityOfficer(name="李娜", title="CSO").SerializeToString()
    node = add_node(
        state,
        NODE,
        "440100",
        [(HOLDER, "active", officer), (PLAIN, "active", b""), (FROZEN, "frozen", b"")],
    )
    other = add_node(state, OTHER_NODE, "440300", [(FOREIGN, "active", b"")])
    envelope = (state / "trust" / "root-1.json").read_bytes()
    root = trust.load_trust_root(envelope, digest, datetime.now(UTC)).root
    running = await start_registry(state, digest)
    try:
        yield Federation(
            running, root, node, other, state / "admins" / "alice", state / "admins" / "audrey"
        )
    finally:
        assert await stop_registry(running) == 0


def description(number: int, **changes: object) -> dataset_pb2.DatasetDescription:
    holder = str(changes.pop("holder", HOLDER))
    dataset = dataset_pb2.DatasetDescription(
        holder=holder,
        title=f"港口集装箱吞吐量 {number}",
        description="Monthly container throughput per terminal.",
        categories=["transport.port.container_throughput"],
        content_digest=hashlib.sha256(f"port {number}".encode()).digest(),
        size_bytes=10_000 + number,
        record_count=120,
        lawful_source="reported by terminal operators under contract",
        rights=dataset_pb2.DataRights(
            resource_holder=holder, processing_user=holder, product_operator=holder
        ),
        language="zh",
    )
    for name, value in changes.items():
        if isinstance(value, list):
            field = getattr(dataset, name)
            del field[:]
            field.extend(value)
        else:
            setattr(dataset, name, value)
    return dataset


def registration(
    key: str, dataset: dataset_pb2.DatasetDescription, dataset_id: str = ""
) -> registry_pb2.RegisterDatasetRequest:
    return registry_pb2.RegisterDatasetRequest(
        idempotency_key=key, dataset=dataset, dataset_id=dataset_id
    )


async def register(
    federation: Federation, request: registry_pb2.RegisterDatasetRequest, folder: Path | None = None
) -> common_pb2.Bundle:
    async with federation.channel(folder or federation.node) as channel:
        response = await registry_pb2_grpc.CertificateServiceStub(channel).RegisterDataset(
            request, timeout=DEADLINE
        )
    return response.certificate


async def test_register_retry_and_new_version(federation: Federation) -> None:
    first = await register(federation, registration("e2e-1", description(1)))
    certificate = federation.verify(first)
    assert certificate.dataset_id.startswith("440100-")
    assert certificate.version == 1 and certificate.node_id == NODE
    retry = await register(federation, registration("e2e-1", description(1)))
    assert retry.envelope == first.envelope
    federation.verify(retry)
    second = await register(
        federation,
        registration("e2e-2", description(1, size_bytes=99_999), certificate.dataset_id),
    )
    assert federation.verify(second).dataset_id == certificate.dataset_id
    assert federation.verify(second).version == 2
    async with federation.channel(federation.auditor) as channel:
        stub = registry_pb2_grpc.CertificateServiceStub(channel)
        latest = await stub.GetCertificate(
            registry_pb2.GetCertificateRequest(dataset_id=certificate.dataset_id), timeout=DEADLINE
        )
        original = await stub.GetCertificate(
            registry_pb2.GetCertificateRequest(dataset_id=certificate.dataset_id, version=1),
            timeout=DEADLINE,
        )
    assert federation.verify(latest.certificate).version == 2
    assert latest.status == common_pb2.STATUS_ACTIVE
    assert original.certificate.envelope == first.envelope
    federation.verify(original.certificate)


async def _foreign_dataset(federation: Federation) -> str:
    bundle = await register(
        federation, registration("foreign-1", description(5, holder=FOREIGN)), federation.other_node
    )
    return federation.verify(bundle).dataset_id


REFUSALS: dict[str, tuple[Callable[[], registry_pb2.RegisterDatasetRequest], grpc.StatusCode]] = {
    "short digest": (
        lambda: registration("r-1", description(1, content_digest=b"x")),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "empty key": (lambda: registration("", description(1)), grpc.StatusCode.INVALID_ARGUMENT),
    "unknown category": (
        lambda: registration("r-2", description(1, categories=["transport.warp"])),
        grpc.StatusCode.NOT_FOUND,
    ),
    "core data": (
        lambda: registration("r-3", description(1, categories=["telecom.network.topology"])),
        grpc.StatusCode.FAILED_PRECONDITION,
    ),
    "non-tradable": (
        lambda: registration("r-4", description(1, categories=["gov.courts.case_files"])),
        grpc.StatusCode.FAILED_PRECONDITION,
    ),
    "holder of another node": (
        lambda: registration("r-5", description(1, holder=FOREIGN)),
        grpc.StatusCode.PERMISSION_DENIED,
    ),
    "frozen holder": (
        lambda: registration("r-6", description(1, holder=FROZEN)),
        grpc.StatusCode.FAILED_PRECONDITION,
    ),
    "no lawful source": (
        lambda: registration("r-7", description(1, lawful_source="")),
        grpc.StatusCode.FAILED_PRECONDITION,
    ),
    "no rights": (
        lambda: registry_pb2.RegisterDatasetRequest(
            idempotency_key="r-8",
            dataset=dataset_pb2.DatasetDescription(
                **{
                    k: v
                    for k, v in ((f.name, v) for f, v in description(1).ListFields())
                    if k != "rights"
                }
            ),
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    ),
    "important data without officer": (
        lambda: registration("r-9", description(1, holder=PLAIN, categories=["geo.mapping"])),
        grpc.StatusCode.FAILED_PRECONDITION,
    ),
    "unknown source": (
        lambda: registration(
            "r-10", description(1, derived_from=[str(DatasetId("440100", 2026, 987_654))])
        ),
        grpc.StatusCode.NOT_FOUND,
    ),
    "unknown dataset id": (
        lambda: registration("r-11", description(1), str(DatasetId("440100", 2026, 987_655))),
        grpc.StatusCode.NOT_FOUND,
    ),
}


@pytest.mark.parametrize("make, code", REFUSALS.values(), ids=REFUSALS.keys())
async def test_refusals(
    federation: Federation,
    make: Callable[[], registry_pb2.RegisterDatasetRequest],
    code: grpc.StatusCode,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await register(federation, make())
    assert raised.value.code() is code, raised.value.details()
    assert raised.value.details() and "Traceback" not in raised.value.details()


async def test_refusals_about_who_asks(federation: Federation) -> None:
    theirs = await _foreign_dataset(federation)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await register(federation, registration("who-1", description(7), theirs))
    assert raised.value.code() is grpc.StatusCode.PERMISSION_DENIED
    await register(federation, registration("who-2", description(8)))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await register(federation, registration("who-2", description(9)))
    assert raised.value.code() is grpc.StatusCode.ALREADY_EXISTS
    assert "idempotency key who-2 was used for a different request" in str(raised.value.details())
    for folder in (federation.admin, federation.auditor):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await register(federation, registration("who-3", description(10)), folder)
        assert raised.value.code() is grpc.StatusCode.PERMISSION_DENIED
    async with federation.registry.public_channel() as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await registry_pb2_grpc.CertificateServiceStub(channel).GetCertificate(
                registry_pb2.GetCertificateRequest(dataset_id=theirs), timeout=DEADLINE
            )
    assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_bulk_stream_answers_every_item_in_order(federation: Federation) -> None:
    count, chunk = 500, 120

    def item(n: int) -> registry_pb2.RegisterDatasetRequest:
        if n % 100 == 13:
            dataset = description(1000 + n, holder=FOREIGN)
        elif n % 100 == 57:
            dataset = description(1000 + n, categories=["energy.nuclear"])
        else:
            dataset = description(1000 + n)
        return registration(f"bulk-{n}", dataset)

    items = [item(n) for n in range(count)]

    async def requests() -> AsyncIterator[registry_pb2.RegisterDatasetsRequest]:
        for start in range(0, count, chunk):
            yield registry_pb2.RegisterDatasetsRequest(registrations=items[start : start + chunk])

    async with federation.channel(federation.node) as channel:
        stub = registry_pb2_grpc.CertificateServiceStub(channel)
        responses = [r async for r in stub.RegisterDatasets(requests(), timeout=60)]
    assert [len(r.results) for r in responses] == [120, 120, 120, 120, 20]
    results = [result for response in responses for result in response.results]
    assert [r.idempotency_key for r in results] == [f"bulk-{n}" for n in range(count)]
    ids = set()
    for n, result in enumerate(results):
        if n % 100 == 13:
            assert result.error.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
        elif n % 100 == 57:
            assert result.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
            assert "rule" in result.error.message
        else:
            assert result.WhichOneof("result") == "certificate"
            ids.add(federation.verify(result.certificate).dataset_id)
    assert len(ids) == count - 10


async def test_bulk_retries_repeats_and_versions_answer_like_unary_calls(
    federation: Federation,
) -> None:
    first = [registration(f"again-{n}", description(3000 + n)) for n in range(40)]
    known = federation.verify(await register(federation, registration("v-0", description(3999))))
    repeated = [
        registration("again-0", description(3000)),  # Same key, same request.
        registration("again-1", description(3100)),  # Same key, another request.
        registration("pair", description(3200)),
        registration("pair", description(3200)),  # Repeated inside one chunk.
        registration("v-1", description(3300), known.dataset_id),
        registration("v-2", description(3301), known.dataset_id),
    ]

    async def requests() -> AsyncIterator[registry_pb2.RegisterDatasetsRequest]:
        yield registry_pb2.RegisterDatasetsRequest(registrations=first)
        yield registry_pb2.RegisterDatasetsRequest(registrations=first)  # A retried chunk.
        yield registry_pb2.RegisterDatasetsRequest(registrations=repeated)

    async with federation.channel(federation.node) as channel:
        stub = registry_pb2_grpc.CertificateServiceStub(channel)
        responses = [r async for r in stub.RegisterDatasets(requests(), timeout=60)]
    original, retried, mixed = ([r for r in response.results] for response in responses)
    for before, after in zip(original, retried, strict=True):
        assert after.certificate.envelope == before.certificate.envelope
        federation.verify(after.certificate)
    unary = await register(federation, first[5])
    assert unary.envelope == original[5].certificate.envelope
    assert mixed[0].certificate.envelope == original[0].certificate.envelope
    assert mixed[1].error.code == grpc.StatusCode.ALREADY_EXISTS.value[0]
    assert "idempotency key again-1 was used for a different request" in mixed[1].error.message
    assert mixed[2].certificate.envelope == mixed[3].certificate.envelope
    versions = [federation.verify(mixed[i].certificate) for i in (4, 5)]
    assert [(c.dataset_id, c.version) for c in versions] == [
        (known.dataset_id, 2),
        (known.dataset_id, 3),
    ]
    verified = run_cli("log", "verify", "--state", federation.registry.state, "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["ok"] is True


async def test_an_empty_bulk_chunk_is_refused(federation: Federation) -> None:
    async def requests() -> AsyncIterator[registry_pb2.RegisterDatasetsRequest]:
        yield registry_pb2.RegisterDatasetsRequest()

    async with federation.channel(federation.node) as channel:
        stub = registry_pb2_grpc.CertificateServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            _ = [r async for r in stub.RegisterDatasets(requests(), timeout=DEADLINE)]
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "registrations: a chunk holds 1..1000" in (raised.value.details() or "")


async def test_status_by_admins_only_and_seen_everywhere(federation: Federation) -> None:
    certificate = federation.verify(
        await register(federation, registration("st-1", description(20)))
    )
    dataset_id = certificate.dataset_id
    async with federation.channel(federation.auditor) as channel:
        before = await registry_pb2_grpc.CertificateServiceStub(channel).GetStatus(
            registry_pb2.GetStatusRequest(dataset_id=dataset_id), timeout=DEADLINE
        )
    assert before.status == common_pb2.STATUS_ACTIVE
    assert not before.HasField("statement")

    suspend = registry_pb2.SetStatusRequest(
        dataset_id=dataset_id, status=common_pb2.STATUS_SUSPENDED, reason="holder under review"
    )
    for folder in (federation.node, federation.auditor):
        async with federation.channel(folder) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await registry_pb2_grpc.CertificateServiceStub(channel).SetStatus(
                    suspend, timeout=DEADLINE
                )
        assert raised.value.code() is grpc.StatusCode.PERMISSION_DENIED

    async with federation.channel(federation.auditor) as channel:
        watch = registry_pb2_grpc.CertificateServiceStub(channel).WatchStatus(
            registry_pb2.WatchStatusRequest(
                after_log_index=certificate_index(federation), follow=True
            ),
            timeout=DEADLINE,
        )
        async with federation.channel(federation.admin) as admin_channel:
            admin = registry_pb2_grpc.CertificateServiceStub(admin_channel)
            made = (await admin.SetStatus(suspend, timeout=DEADLINE)).statement
        statement = federation.verify_statement(made)
        assert statement.dataset_id == dataset_id
        assert statement.status == common_pb2.STATUS_SUSPENDED
        assert statement.actor.spiffe_id == f"spiffe://{TRUST_DOMAIN}/admin/alice"
        seen = await asyncio.wait_for(watch.read(), DEADLINE)
        watch.cancel()
    assert seen.statement.envelope == made.envelope
    assert seen.catalog_version == 1
    federation.verify_statement(seen.statement)

    async with federation.channel(federation.node) as channel:
        stub = registry_pb2_grpc.CertificateServiceStub(channel)
        now = await stub.GetStatus(
            registry_pb2.GetStatusRequest(dataset_id=dataset_id), timeout=DEADLINE
        )
        fetched = await stub.GetCertificate(
            registry_pb2.GetCertificateRequest(dataset_id=dataset_id), timeout=DEADLINE
        )
        feed = [
            r
            async for r in stub.WatchStatus(
                registry_pb2.WatchStatusRequest(after_log_index=0), timeout=DEADLINE
            )
        ]
    assert now.status == common_pb2.STATUS_SUSPENDED
    assert now.statement.envelope == made.envelope
    assert fetched.status == common_pb2.STATUS_SUSPENDED
    assert made.envelope in [r.statement.envelope for r in feed]

    async with federation.channel(federation.admin) as channel:
        admin = registry_pb2_grpc.CertificateServiceStub(channel)
        await admin.SetStatus(
            registry_pb2.SetStatusRequest(
                dataset_id=dataset_id, status=common_pb2.STATUS_REVOKED, reason="unlawful"
            ),
            timeout=DEADLINE,
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await admin.SetStatus(
                registry_pb2.SetStatusRequest(
                    dataset_id=dataset_id, status=common_pb2.STATUS_ACTIVE, reason="undo"
                ),
                timeout=DEADLINE,
            )
        assert raised.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        frozen = await admin.SetStatus(
            registry_pb2.SetStatusRequest(
                member=PLAIN, status=common_pb2.STATUS_SUSPENDED, reason="audit"
            ),
            timeout=DEADLINE,
        )
    assert federation.verify_statement(frozen.statement).member == PLAIN
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await register(federation, registration("st-2", description(21, holder=PLAIN)))
    assert raised.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "frozen" in str(raised.value.details())


def certificate_index(federation: Federation) -> int:
    """The log's current size minus one: watch only what comes next."""
    with sqlite3.connect(federation.registry.state / "registry.db") as conn:
        size = int(conn.execute("SELECT size FROM log_state").fetchone()[0])
    conn.close()
    return size - 1


async def test_a_request_over_the_size_limit_is_refused_unprocessed(
    federation: Federation,
) -> None:
    huge = registration("huge", description(9_999, description="x" * (5 * 1024 * 1024)))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await register(federation, huge)
    assert raised.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    # Nothing was registered under that key: a small request with it is a fresh registration.
    bundle = await register(federation, registration("huge", description(9_999)))
    assert federation.verify(bundle).version == 1
