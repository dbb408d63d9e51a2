"""provex.metrics and the registry's metrics, against real servers in this process.

A real grpc.aio server on loopback (insecure: the interceptors do not care
about TLS) with the interceptors in the servers' order — request id,
metrics, errors — and a few generic handlers; a real asyncio HTTP endpoint;
a real registry database written by a real sequencer for the log-size,
batch-size and node-expiry metrics; a real node database for the node's
outbox, alarm and directory snapshot.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from node import outbox
from node.metrics import _read
from node.registry_link import Peer, store_directory
from node.schema import MIGRATIONS as NODE_MIGRATIONS
from node.sync import AlarmKind, _record_alarm
from provex import pki
from provex.checkpoint import NoteSigner
from provex.errors import FailedPrecondition, InvalidArgument, NotFound
from provex.logs import (
    RequestIdInterceptor,
    current_request_id,
    outbound_interceptors,
)
from provex.metrics import (
    DurableCounter,
    MetricsHttpServer,
    ServerMetrics,
    certificate_expiry,
    parse_listen,
)
from provex.rpc import ErrorInterceptor
from provex.storage import Database as NodeDatabase
from registry.db import Database
from registry.metrics import RegistryMetrics
from registry.schema import MIGRATIONS
from registry.transparency import Sequencer

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples_of(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def exposed(metrics: ServerMetrics) -> Samples:
    return samples_of((await metrics.exposition()).decode())


# ---------------------------------------------------------------- a real gRPC server

SERVICE = "test.Probe"


async def echo(request: bytes, context: Any) -> bytes:
    """Answers the request id it runs under."""
    return (current_request_id() or "").encode()


async def refuse(request: bytes, context: Any) -> bytes:
    raise NotFound("no such probe: ask for an existing one")


async def explode(request: bytes, context: Any) -> bytes:
    raise RuntimeError("a bug")


async def count(request: bytes, context: Any) -> AsyncIterator[bytes]:
    for index in range(int(request or b"3")):
        yield str(index).encode()


@pytest.fixture
async def probe() -> AsyncIterator[tuple[ServerMetrics, str]]:
    """A server with the Provex interceptors; (its metrics, its address)."""
    metrics = ServerMetrics("test", "probe-1")
    server = grpc.aio.server(
        interceptors=[RequestIdInterceptor(), metrics.interceptor("main"), ErrorInterceptor()]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    address = f"127.0.0.1:{port}"

    async def relay(request: bytes, context: Any) -> bytes:
        """Calls Echo on itself: what Echo saw is the request id the relay carried out."""
        async with grpc.aio.insecure_channel(address, interceptors=outbound_interceptors()) as out:
            echoed: bytes = await out.unary_unary(f"/{SERVICE}/Echo")(b"", timeout=5)
        return echoed

    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
        "Refuse": grpc.unary_unary_rpc_method_handler(refuse),
        "Explode": grpc.unary_unary_rpc_method_handler(explode),
        "Relay": grpc.unary_unary_rpc_method_handler(relay),
        "Count": grpc.unary_stream_rpc_method_handler(count),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    await server.start()
    yield metrics, address
    await server.stop(None)


async def test_calls_are_counted_by_method_and_code_and_timed(
    probe: tuple[ServerMetrics, str],
) -> None:
    metrics, address = probe
    expected = {  # method -> (calls, code)
        "Echo": (3, "OK"),
        "Refuse": (2, "NOT_FOUND"),
        "Explode": (1, "INTERNAL"),
    }
    async with grpc.aio.insecure_channel(address) as channel:
        for method, (times, code) in expected.items():
            for _ in range(times):
                call = channel.unary_unary(f"/{SERVICE}/{method}")(b"", timeout=5)
                if code == "OK":
                    await call
                else:
                    with pytest.raises(grpc.aio.AioRpcError) as failed:
                        await call
                    assert failed.value.code().name == code
        streamed = [m async for m in channel.unary_stream(f"/{SERVICE}/Count")(b"4", timeout=5)]
        assert streamed == [b"0", b"1", b"2", b"3"]
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await channel.unary_unary("/test.Nowhere/Nothing")(b"", timeout=5)
        assert missing.value.code() is grpc.StatusCode.UNIMPLEMENTED
    samples = await exposed(metrics)
    for method, (times, code) in {**expected, "Count": (1, "OK")}.items():
        labels = {"port": "main", "grpc_service": SERVICE, "grpc_method": method}
        assert value(samples, "provex_grpc_server_handled_total", **labels, grpc_code=code) == times
        assert value(samples, "provex_grpc_server_handling_seconds_count", **labels) == times
        assert value(samples, "provex_grpc_server_in_flight", **labels) == 0
    unknown = {"port": "main", "grpc_service": "unknown", "grpc_method": "unknown"}
    assert value(samples, "provex_grpc_server_handled_total", **unknown, grpc_code="UNIMPLEMENTED")
    assert value(samples, "provex_server_info", service="test", server_id="probe-1") == 1


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("test-123", True),
        ("a1b2:c3/d4.e5@f6+g=h_i-j", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("two words", False),
        ('forged"} {"level":"ERROR', False),
        ("", False),
    ],
)
async def test_request_id_is_kept_echoed_and_relayed_or_replaced(
    probe: tuple[ServerMetrics, str], sent: str, kept: bool
) -> None:
    _, address = probe
    async with grpc.aio.insecure_channel(address) as channel:
        for method in ("Echo", "Relay"):
            call = channel.unary_unary(f"/{SERVICE}/{method}")(
                b"", metadata=(("x-request-id", sent),), timeout=5
            )
            seen = (await call).decode()
            echoed = dict(tuple(await call.trailing_metadata()))["x-request-id"]
            assert seen == echoed, method
            assert (seen == sent) is kept, method
            assert len(seen) == 32 or kept


async def test_a_call_without_request_id_gets_a_fresh_one_each_time(
    probe: tuple[ServerMetrics, str],
) -> None:
    _, address = probe
    async with grpc.aio.insecure_channel(address) as channel:
        seen = {(await channel.unary_unary(f"/{SERVICE}/Relay")(b"", timeout=5)) for _ in range(3)}
    assert len(seen) == 3
    assert all(len(one) == 32 for one in seen)


async def test_response_hooks_see_each_successful_response(
    probe: tuple[ServerMetrics, str],
) -> None:
    metrics, address = probe
    seen: list[bytes] = []
    metrics.on_response(f"/{SERVICE}/Count", seen.append)
    metrics.on_response(f"/{SERVICE}/Refuse", seen.append)
    async with grpc.aio.insecure_channel(address) as channel:
        _ = [m async for m in channel.unary_stream(f"/{SERVICE}/Count")(b"2", timeout=5)]
        with pytest.raises(grpc.aio.AioRpcError):
            await channel.unary_unary(f"/{SERVICE}/Refuse")(b"", timeout=5)
    assert seen == [b"0", b"1"]


# ---------------------------------------------------------------- HTTP endpoint


async def http(address: str, raw: bytes) -> tuple[int, bytes, bytes]:
    host, port = parse_listen(address)
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(raw)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), head, body


async def test_http_endpoint_serves_metrics_and_refuses_everything_else() -> None:
    metrics = ServerMetrics("test", "http-1")
    calls: list[str] = []

    async def fine() -> None:
        calls.append("fine")

    async def broken() -> None:
        raise RuntimeError("the database is gone")

    metrics.add_refresher("fine", fine)
    metrics.add_refresher("broken", broken)
    endpoint = MetricsHttpServer(metrics)
    address = await endpoint.start("127.0.0.1:0")
    try:
        status, head, body = await http(address, b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n")
        assert status == 200
        assert b"text/plain" in head
        samples = samples_of(body.decode())
        assert value(samples, "provex_metrics_refresh_errors_total", refresher="broken") == 1
        assert calls == ["fine"]
        refused = {
            b"GET / HTTP/1.1\r\n\r\n": 404,
            b"DELETE /metrics HTTP/1.1\r\n\r\n": 405,
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n": 400,  # TLS to a plain port
            b"GET /metrics\r\n\r\n": 400,
            b"GET /metrics HTTP/1.1\r\n" + b"H: v\r\n" * 101 + b"\r\n": 400,
            b"GET /" + b"m" * 5000 + b" HTTP/1.1\r\n\r\n": 400,
        }
        for raw, wanted in refused.items():
            assert (await http(address, raw))[0] == wanted, raw[:40]
        # A client that connects and says nothing does not stop the others.
        _, idle = await asyncio.open_connection(*parse_listen(address))
        assert (await http(address, b"HEAD /metrics HTTP/1.1\r\n\r\n"))[::2] == (200, b"")
        idle.close()
    finally:
        await endpoint.stop()
    with pytest.raises(OSError):
        await asyncio.open_connection(*parse_listen(address))


async def test_a_bad_or_taken_address_is_refused_with_a_message() -> None:
    with pytest.raises(InvalidArgument, match="metrics_listen"):
        await MetricsHttpServer(ServerMetrics("test", "bad")).start("nowhere")
    first = MetricsHttpServer(ServerMetrics("test", "first"))
    address = await first.start("127.0.0.1:0")
    try:
        with pytest.raises(FailedPrecondition, match="metrics_listen"):
            await MetricsHttpServer(ServerMetrics("test", "second")).start(address)
    finally:
        await first.stop()


@pytest.mark.parametrize(
    ("listen", "parsed"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("[::1]:9464", ("::1", 9464)),
        ("localhost:80", ("localhost", 80)),
        ("9464", None),
        (":9464", None),
        ("host:port", None),
        ("host:70000", None),
    ],
)
def test_parse_listen(listen: str, parsed: tuple[str, int] | None) -> None:
    if parsed is None:
        with pytest.raises(ValueError, match="host:port"):
            parse_listen(listen)
    else:
        assert parse_listen(listen) == parsed


def test_durable_counter_exposes_stored_values_as_a_counter() -> None:
    metrics = ServerMetrics("test", "durable")
    alarms = DurableCounter("provex_test_alarms", "Alarms.", ["kind"])
    metrics.registry.register(alarms)
    alarms.set({("split_view",): 2.0, ("rollback",): 0.0})
    text = asyncio.run(metrics.exposition()).decode()
    types = {family.name: family.type for family in text_string_to_metric_families(text)}
    assert types["provex_test_alarms"] == "counter"
    samples = samples_of(text)
    assert value(samples, "provex_test_alarms_total", kind="split_view") == 2
    assert ("provex_test_alarms_total", (("kind", "rollback"),)) in samples


def test_separate_servers_have_separate_registries() -> None:
    first, second = ServerMetrics("test", "a"), ServerMetrics("test", "b")
    first.handled.labels("p", "s", "m", "OK").inc()
    assert first.registry is not second.registry
    assert (
        second.registry.get_sample_value(
            "provex_grpc_server_handled_total",
            {"port": "p", "grpc_service": "s", "grpc_method": "m", "grpc_code": "OK"},
        )
        is None
    )


def test_certificate_expiry_reads_not_after() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    _, ca = pki.create_ca("provex.test", now, timedelta(days=30))
    assert certificate_expiry(pki.cert_to_pem(ca)) == (now + timedelta(days=30)).timestamp()


# ---------------------------------------------------------------- the registry's own


async def test_registry_metrics_follow_the_log_and_the_directory(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "registry.db", migrations=MIGRATIONS)
    signer = NoteSigner.generate("registry.provex.test")
    sequencer = Sequencer(db, signer, "registry.provex.test/log", max_batch=5, max_wait=0)
    await sequencer.start()
    try:
        metrics = ServerMetrics("registry", "provex.test")
        registry_metrics = RegistryMetrics(metrics, db, {})
        await registry_metrics.start()
        await sequencer.append_many([f"entry {i}".encode() for i in range(12)])  # 5 + 5 + 2
        now = datetime(2026, 1, 1, tzinfo=UTC)
        expiries = {"gd-gzde": 40, "gd-szde": 10, "sh-sde": 3}  # days; sh-sde is revoked

        def enroll(conn: Any) -> None:
            for node_id, days in expiries.items():
                conn.execute(
                    "INSERT INTO nodes (node_id, region_code, display_name, peer_endpoint, "
                    "status, signing_key, certificate_fingerprint, certificate_expires_at, "
                    "enrolled_at, log_index) VALUES (?, '440100', 'x', '', ?, x'00', 'f', ?, ?, 0)",
                    (
                        node_id,
                        "revoked" if node_id == "sh-sde" else "active",
                        (now + timedelta(days=days)).isoformat(),
                        now.isoformat(),
                    ),
                )

        await db.transaction(enroll)
        await registry_metrics.refresh(now)
        earliest = metrics.registry.get_sample_value(
            "provex_registry_node_certificate_earliest_expiry_seconds"
        )
        # Refreshed again by the scrape: no batch is counted twice.
        samples = samples_of((await metrics.exposition()).decode())
    finally:
        await sequencer.stop()
        await db.close()
    assert value(samples, "provex_registry_log_size") == 12
    assert value(samples, "provex_registry_checkpoints_published_total") == 3
    assert value(samples, "provex_registry_log_batch_entries_sum") == 12
    assert value(samples, "provex_registry_log_batch_entries_bucket", le="2.0") == 1
    assert value(samples, "provex_registry_log_batch_entries_bucket", le="4.0") == 1
    assert value(samples, "provex_registry_log_batch_entries_bucket", le="8.0") == 3
    assert earliest == timedelta(days=10).total_seconds()  # The revoked node's does not count.
    assert value(samples, "provex_registry_nodes", status="active") == 2
    assert value(samples, "provex_registry_nodes", status="revoked") == 1
    assert (
        value(
            samples, "provex_registry_node_certificate_expiry_timestamp_seconds", node_id="gd-szde"
        )
        == (now + timedelta(days=10)).timestamp()
    )
    assert (
        "provex_registry_node_certificate_expiry_timestamp_seconds",
        (("node_id", "sh-sde"),),
    ) not in samples


# ---------------------------------------------------------------- a node's database


async def test_node_snapshot_counts_outbox_alarms_and_directory(tmp_path: Path) -> None:
    db = await NodeDatabase.open(tmp_path / "node.db", migrations=NODE_MIGRATIONS)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    try:

        def fill(conn: Any) -> None:
            for minutes, key in ((30, "a"), (10, "b"), (5, "c")):
                outbox.enqueue(conn, "report_member", key, b"x", now - timedelta(minutes=minutes))
            conn.execute(
                "UPDATE outbox SET state = 'failed', next_attempt_at = NULL, last_error = 'no' "
                "WHERE idempotency_key = 'a'"
            )
            for kind, peer in (
                (AlarmKind.SPLIT_VIEW, "gd-szde"),
                (AlarmKind.SPLIT_VIEW, "gd-szde"),  # Seen again: counted again.
                (AlarmKind.ROLLBACK, ""),
            ):
                _record_alarm(conn, kind, detail="d", peer=peer, note="n", at=now.isoformat())
            store_directory(
                conn,
                [
                    Peer("gd-szde", "440300", "Shenzhen", "h:1", True),
                    Peer("x", "1", "X", "", False),
                ],
                now,
            )

        await db.transaction(fill)
        snapshot = await db.run(_read)
    finally:
        await db.close()
    assert snapshot.outbox == {"pending": 2, "failed": 1}
    assert snapshot.oldest_pending == (now - timedelta(minutes=10)).timestamp()
    assert snapshot.alarms == {"split_view": 2, "rollback": 1}
    assert snapshot.deliveries == 0
    assert snapshot.status_applied_at is None  # Never applied: the row's time is empty.
    assert [(peer.node_id, peer.active) for peer in snapshot.peers] == [
        ("gd-szde", True),
        ("x", False),
    ]
