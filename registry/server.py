"""``provex-registry serve``: the registry's gRPC servers.

Two ports on one grpc.aio server process:

- the **public** port (server-authenticated TLS): trust root, catalog and log
  reads (and, later, enrollment by invitation);
- the **federation** port (mutual TLS, client certificates from the
  federation CA): the same plus everything nodes and admins do.

Health checking and reflection are on both. Once both ports listen, the
server writes ``<state>/run/endpoints.json`` and prints the same object as one
JSON line. SIGTERM or SIGINT drains in-flight calls (``grace_seconds``), stops
the sequencer (every queued append is committed and answered) and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from provex import pki
from provex.identity import SpiffeId, TlsMaterial
from provex.logs import RequestIdInterceptor
from provex.metrics import MetricsHttpServer, ServerMetrics, serve_metrics
from provex.rpc import (
    CallerCheckInterceptor,
    ErrorInterceptor,
    add_health_and_reflection,
    announce_and_wait_for_signal,
    remove_endpoints,
    write_endpoints,
)
from provex.v1 import registry_pb2, registry_pb2_grpc, supervision_pb2, supervision_pb2_grpc
from registry.catalog import CatalogBook
from registry.config import RegistryConfig
from registry.console.views import ConsoleSources
from registry.db import Database
from registry.enrollment import NodeBook
from registry.issuance import Issuance
from registry.members import MemberBook
from registry.metrics import RegistryMetrics
from registry.publication import Publisher
from registry.schema import MIGRATIONS
from registry.services.certificates import CertificateService
from registry.services.common import Authorizer
from registry.services.enrollment import DirectoryService, EnrollmentService
from registry.services.members import MemberService
from registry.services.reads import CatalogService, LogService, TrustService
from registry.services.supervision import SupervisionService
from registry.state import RegistryKeys, StateLayout, load_keys
from registry.supervision import Supervision
from registry.transparency import LogReader, Sequencer
from registry.witnesses import WitnessBook

if TYPE_CHECKING:
    from registry.console.server import Console

log = logging.getLogger(__name__)

SERVICES = (
    "TrustService",
    "CatalogService",
    "LogService",
    "EnrollmentService",
    "DirectoryService",
    "MemberService",
    "CertificateService",
)


@dataclass
class RunningRegistry:
    """The parts of a running registry, for an orderly stop."""

    servers: tuple[grpc.aio.Server, ...]
    sequencer: Sequencer
    issuance: Issuance
    writer: Database
    reader: Database
    endpoints: dict[str, Any]
    # The periodic risk-assessment lapse check (registry.supervision).
    lapse_task: asyncio.Task[None] | None = None
    # The supervision console (HTTPS), unless console_listen is empty.
    console: Console | None = None
    # The /metrics endpoint (provex.metrics), unless metrics_listen is empty.
    metrics_http: MetricsHttpServer | None = None


def _server(
    config: RegistryConfig, authorizer: Authorizer, metrics: ServerMetrics, port: str
) -> grpc.aio.Server:
    """A server whose every call (health and reflection too) first identifies its caller.

    The check refuses a revoked node, or one presenting a replaced
    certificate, on every RPC, including those open to anonymous callers.
    """
    limit = config.max_message_bytes
    return grpc.aio.server(
        interceptors=[
            RequestIdInterceptor(),
            metrics.interceptor(port),
            ErrorInterceptor(),
            CallerCheckInterceptor(authorizer.check),
        ],
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", 4 * limit),
        ],
    )


@dataclass(frozen=True)
class Parts:
    """What the servicers are built from: settings, keys, storage, the log."""

    config: RegistryConfig
    keys: RegistryKeys
    writer: Database
    reader: Database
    sequencer: Sequencer
    log_reader: LogReader
    publisher: Publisher
    authorizer: Authorizer
    # One for both ports: it allocates the dataset serials.
    issuance: Issuance
    supervision: Supervision


def _add_services(server: grpc.aio.Server, parts: Parts) -> None:
    reader, publisher = parts.reader, parts.publisher
    registry_pb2_grpc.add_TrustServiceServicer_to_server(TrustService(reader), server)
    registry_pb2_grpc.add_CatalogServiceServicer_to_server(
        CatalogService(CatalogBook(reader, publisher)), server
    )
    witnesses = WitnessBook(
        parts.writer, reader, parts.keys.log_signer(parts.config.log_origin).verifier()
    )
    registry_pb2_grpc.add_LogServiceServicer_to_server(
        LogService(parts.log_reader, witnesses, parts.authorizer), server
    )
    nodes = NodeBook(
        parts.config,
        parts.keys,
        parts.writer,
        reader,
        publisher,
        on_node_change=parts.authorizer.node_changed,
    )
    registry_pb2_grpc.add_EnrollmentServiceServicer_to_server(
        EnrollmentService(nodes, parts.authorizer), server
    )
    registry_pb2_grpc.add_DirectoryServiceServicer_to_server(
        DirectoryService(nodes, parts.authorizer), server
    )
    registry_pb2_grpc.add_MemberServiceServicer_to_server(
        MemberService(MemberBook(parts.writer, reader), parts.authorizer), server
    )
    registry_pb2_grpc.add_CertificateServiceServicer_to_server(
        CertificateService(parts.issuance, parts.authorizer),
        server,
    )
    names = [registry_pb2.DESCRIPTOR.services_by_name[name].full_name for name in SERVICES]
    # Supervision is for nodes and admins; on the public port it answers UNAUTHENTICATED.
    supervision_pb2_grpc.add_SupervisionServiceServicer_to_server(
        SupervisionService(parts.supervision, parts.authorizer), server
    )
    names.append(supervision_pb2.DESCRIPTOR.services_by_name["SupervisionService"].full_name)
    add_health_and_reflection(server, names)


async def _start_console(state_dir: Path, parts: Parts) -> Console:
    """The read-only supervision console (registry.console) on ``console_listen``."""
    # Imported here: aiohttp costs every other CLI command 0.3 s otherwise.
    from registry.console.server import start_console, tls_context  # noqa: PLC0415

    layout = StateLayout(state_dir)
    reader = parts.reader
    sources = ConsoleSources(
        nodes=NodeBook(
            parts.config,
            parts.keys,
            parts.writer,
            reader,
            parts.publisher,
            on_node_change=parts.authorizer.node_changed,
        ),
        catalog=CatalogBook(reader, parts.publisher),
        witnesses=WitnessBook(
            parts.writer, reader, parts.keys.log_signer(parts.config.log_origin).verifier()
        ),
        supervision=parts.supervision,
    )
    context = tls_context(
        pki.cert_to_pem(parts.keys.ca_cert), layout.server_cert, layout.server_key
    )
    return await start_console(
        parts.config.console_listen,
        sources,
        parts.authorizer,
        context,
        grace=parts.config.grace_seconds,
    )


async def start(state_dir: Path, config: RegistryConfig) -> RunningRegistry:
    """Open storage, start the sequencer and both servers; write endpoints.json."""
    layout = StateLayout(state_dir)
    metrics = ServerMetrics("registry", config.trust_domain)
    metrics_http = await serve_metrics(metrics, config.metrics_listen)
    keys = load_keys(state_dir)
    writer = await Database.open(layout.database, migrations=MIGRATIONS)
    reader = await Database.open(layout.database, readonly=True, migrations=MIGRATIONS)
    sequencer = Sequencer(
        writer,
        keys.log_signer(config.log_origin),
        config.log_origin,
        max_batch=config.max_batch,
        max_wait=config.max_batch_wait_ms / 1000,
    )
    await sequencer.start()
    log_reader = LogReader(reader)
    publisher = Publisher(sequencer, log_reader, keys.issuer)
    authorizer = Authorizer(reader, config.trust_domain)
    issuance = Issuance(reader, publisher, log_reader)
    supervision = Supervision(
        writer, reader, publisher, issuance, str(SpiffeId.registry(config.trust_domain))
    )
    await supervision.check_lapses()  # At start-up, then periodically (lapse_task).
    parts = Parts(
        config,
        keys,
        writer,
        reader,
        sequencer,
        log_reader,
        publisher,
        authorizer,
        issuance,
        supervision,
    )
    ca_pem = pki.cert_to_pem(keys.ca_cert)
    material = TlsMaterial(
        ca_pem, pki.cert_to_pem(keys.server_cert), pki.key_to_pem(keys.server_key)
    )
    registry_metrics = RegistryMetrics(
        metrics, reader, {"server": keys.server_cert, "ca": keys.ca_cert}
    )
    await registry_metrics.start()
    # One grpc.aio server per port, so that each port has its own TLS policy.
    public = _server(config, authorizer, metrics, "public")
    _add_services(public, parts)
    public_port = public.add_secure_port(
        config.public_listen, material.server_credentials(require_client_auth=False)
    )
    federation = _server(config, authorizer, metrics, "federation")
    _add_services(federation, parts)
    federation_port = federation.add_secure_port(
        config.federation_listen, material.server_credentials(require_client_auth=True)
    )
    # The console first: a console_listen it cannot use stops start-up before gRPC serves.
    console = await _start_console(state_dir, parts) if config.console_listen else None
    await public.start()
    await federation.start()
    host_public = config.public_listen.rsplit(":", 1)[0]
    host_federation = config.federation_listen.rsplit(":", 1)[0]
    endpoints: dict[str, Any] = {
        "service": "registry",
        "public": f"{host_public}:{public_port}",
        "federation": f"{host_federation}:{federation_port}",
        "ca_certificate": str(layout.ca_cert),
        "trust_domain": config.trust_domain,
    }
    if console is not None:
        endpoints["console"] = console.address
    running = RunningRegistry((public, federation), sequencer, issuance, writer, reader, endpoints)
    running.console = console
    running.metrics_http = metrics_http
    if metrics_http is not None:
        endpoints["metrics"] = metrics_http.address
    running.lapse_task = asyncio.create_task(
        supervision.run_lapse_checks(config.risk_lapse_check_seconds)
    )
    write_endpoints(state_dir, endpoints)
    return running


async def stop(state_dir: Path, running: RunningRegistry, grace: float) -> None:
    """Drain calls, commit the sequencer's queue, close storage, remove endpoints.json."""
    remove_endpoints(state_dir)
    if running.lapse_task is not None:
        running.lapse_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running.lapse_task
    running.issuance.close_watches()  # Following streams end instead of holding the drain.
    if running.console is not None:
        await running.console.stop()
    if running.metrics_http is not None:
        await running.metrics_http.stop()
    await asyncio.gather(*(server.stop(grace) for server in running.servers))
    await running.sequencer.stop()
    await running.reader.close()
    await running.writer.close()


async def serve(state_dir: Path, config: RegistryConfig) -> None:
    """Run until SIGTERM or SIGINT, then stop cleanly."""
    running = await start(state_dir, config)
    await announce_and_wait_for_signal("registry", running.endpoints)
    await stop(state_dir, running, config.grace_seconds)
