"""``provex-node serve``: the node's gRPC servers and background work.

Two ports, each its own grpc.aio server with its own TLS policy:

- the **peer** port (mutual TLS, federation CA): PeerService for other nodes;
- the **operator** port (mutual TLS, the node's private operator CA; loopback
  by default): OperatorService for the exchange's operators.

Health checking and reflection are on both. In the background the node
delivers its outbox to the registry, follows the registry's status
statements, verifies every newer checkpoint against the last one it kept
(and cosigns it), refreshes the node directory, and renews its federation
certificate before it expires (:mod:`node.renewal`; the peer port, the
registry link and the peer dialer switch to the new one without a restart),
and fetches, verifies, stores and uses newer trust root versions
(:mod:`node.trust_follow`).
Once both ports listen it writes ``<state>/run/endpoints.json`` and prints
the same object as one JSON line; SIGTERM or SIGINT drains calls and stops
everything cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from node import datasets, delivery, members, outbox, trading
from node.blobs import BlobStore
from node.config import NodeConfig
from node.federation import PeerDialer
from node.instance import NodeInstance
from node.metrics import NodeMetrics
from node.registry_link import RegistryLink, refresh_directory_forever
from node.renewal import CertificateRenewer, ServerCertificate
from node.schema import MIGRATIONS
from node.services.operator import OperatorService
from node.services.peer import PeerService
from node.state import StateLayout, load_signing_key, load_trust_root_chain, require_enrolled
from node.sync import CheckpointKeeper, StatusFollower
from node.trust_follow import TrustRootFollower, TrustRootHolder
from provex.checkpoint import CosignatureSigner
from provex.identity import TlsMaterial
from provex.logs import RequestIdInterceptor
from provex.metrics import MetricsHttpServer, ServerMetrics, serve_metrics
from provex.rpc import (
    ErrorInterceptor,
    add_health_and_reflection,
    announce_and_wait_for_signal,
    remove_endpoints,
    write_endpoints,
)
from provex.storage import Database
from provex.timestamps import utc_now
from provex.trust import SignedTrustRoot
from provex.v1 import node_pb2, node_pb2_grpc

log = logging.getLogger(__name__)


@dataclass
class RunningNode:
    """The parts of a running node, for an orderly stop."""

    servers: tuple[grpc.aio.Server, ...]
    instance: NodeInstance
    tasks: tuple[asyncio.Task[None], ...]
    endpoints: dict[str, Any]
    # The /metrics endpoint (provex.metrics), unless metrics_listen is empty.
    metrics_http: MetricsHttpServer | None = None


def _server(config: NodeConfig, metrics: ServerMetrics, port: str) -> grpc.aio.Server:
    limit = config.max_message_bytes
    return grpc.aio.server(
        interceptors=[RequestIdInterceptor(), metrics.interceptor(port), ErrorInterceptor()],
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", 4 * limit),
        ],
    )


async def start(state_dir: Path, config: NodeConfig) -> RunningNode:
    """Open storage, start the background work and both servers; write endpoints.json."""
    identity = require_enrolled(state_dir)
    metrics = ServerMetrics("node", identity.node_id)
    metrics_http = await serve_metrics(metrics, config.metrics_listen)
    layout = StateLayout(state_dir)
    # The version in use may change while serving (node.trust_follow): parts that verify
    # with it read holder.current; the rest keep the keys it started with, which a
    # swapped-in version never changes.
    holder = TrustRootHolder(load_trust_root_chain(layout, identity.trust_root_digest))
    root = holder.started_with
    federation = TlsMaterial(
        layout.federation_ca.read_bytes(), layout.tls_cert.read_bytes(), layout.tls_key.read_bytes()
    )
    writer = await Database.open(layout.database, migrations=MIGRATIONS)
    reader = await Database.open(layout.database, migrations=MIGRATIONS, readonly=True)
    registry_address = config.registry_address or identity.registry_federation
    link = RegistryLink(registry_address, federation, config.registry_deadline)
    signing_key = load_signing_key(state_dir)
    keeper = CheckpointKeeper(
        writer,
        lambda: holder.current,
        link.log,
        config.registry_deadline,
        CosignatureSigner(identity.node_id, signing_key),
    )
    await keeper.load()
    worker = outbox.OutboxWorker(
        writer,
        {members.REPORT_KIND: link.report_member, datasets.REGISTER_KIND: link.register_dataset},
        on_done={datasets.REGISTER_KIND: datasets.on_registered(root, utc_now)},
        attempt_timeout=config.registry_deadline + 5,
    )
    instance = NodeInstance(
        identity=identity,
        trust_root=root,
        writer=writer,
        reader=reader,
        link=link,
        worker=worker,
        keeper=keeper,
        dialer=PeerDialer(
            federation, identity.trust_domain, retire_after=config.delivery_stream_deadline
        ),
        clock=utc_now,
        peer_deadline=config.peer_deadline,
    )

    def use_trust_root(signed: SignedTrustRoot) -> None:
        instance.trust_root = signed.root

    holder.on_change(use_trust_root)
    follower = StatusFollower(
        writer, lambda: holder.current, link.certificates, instance.apply_statement
    )
    instance.follower = follower
    instance.trades = trading.Trading(
        node_id=identity.node_id,
        signing_key=signing_key,
        trust_root=lambda: holder.current,
        writer=writer,
        reader=reader,
        link=link,
        worker=worker,
        dialer=instance.dialer,
        peers=instance.peers,
        clock=utc_now,
        peer_deadline=config.peer_deadline,
    )
    blobs = BlobStore.of_state(state_dir)
    instance.seller = delivery.Seller(
        reader, blobs, config.delivery_chunk_bytes, config.delivery_rate_bytes_per_second
    )
    instance.deliveries = delivery.Deliveries(
        writer,
        reader,
        blobs,
        delivery.peer_source(
            instance.dialer,
            instance.peers,
            config.delivery_chunk_deadline,
            config.delivery_stream_deadline,
        ),
        utc_now,
        retry_max_seconds=config.delivery_retry_max_seconds,
    )
    operator_material = TlsMaterial(
        layout.operator_ca.read_bytes(),
        layout.operator_server_cert.read_bytes(),
        layout.operator_server_key.read_bytes(),
    )
    NodeMetrics(
        metrics,
        instance,
        {"federation": layout.tls_cert, "operator_server": layout.operator_server_cert},
    )
    peer_certificate = ServerCertificate(federation)
    renewer = CertificateRenewer(
        state_dir, identity, root, registry_address, federation, config=config, clock=utc_now
    )
    # One switch after a renewal: the peer port, the registry link, the peer dialer.
    renewer.on_change(peer_certificate.use)
    renewer.on_change(link.use_certificate)
    renewer.on_renewing(link.renewing)
    renewer.on_change(instance.dialer.use_certificate)
    peer_server = _server(config, metrics, "peer")
    node_pb2_grpc.add_PeerServiceServicer_to_server(
        PeerService(instance, identity.trust_domain), peer_server
    )
    services = node_pb2.DESCRIPTOR.services_by_name
    add_health_and_reflection(peer_server, [services["PeerService"].full_name])
    peer_port = peer_server.add_secure_port(config.peer_listen, peer_certificate.credentials())
    operator_server = _server(config, metrics, "operator")
    node_pb2_grpc.add_OperatorServiceServicer_to_server(
        OperatorService(instance, identity.operator_trust_domain), operator_server
    )
    add_health_and_reflection(operator_server, [services["OperatorService"].full_name])
    operator_port = operator_server.add_secure_port(
        config.operator_listen, operator_material.server_credentials(require_client_auth=True)
    )
    await peer_server.start()
    await operator_server.start()
    peer_address = f"{config.peer_listen.rsplit(':', 1)[0]}:{peer_port}"
    await worker.start()
    await instance.deliveries.resume_all()
    tasks = (
        asyncio.create_task(follower.run(), name="provex-status-follower"),
        asyncio.create_task(keeper.run(config.checkpoint_poll_seconds), name="provex-checkpoints"),
        asyncio.create_task(
            refresh_directory_forever(
                link,
                writer,
                config.directory_refresh_seconds,
                utc_now,
                own_endpoint=config.peer_advertise or peer_address,
            ),
            name="provex-directory",
        ),
        asyncio.create_task(
            instance.trades.follow_catalog(
                lambda: follower.catalog_version, trading.CATALOG_FOLLOW_SECONDS
            ),
            name="provex-catalog",
        ),
        asyncio.create_task(renewer.run(), name="provex-certificate-renewal"),
        asyncio.create_task(
            TrustRootFollower(
                layout,
                holder,
                identity.registry_public,
                deadline=config.registry_deadline,
                clock=utc_now,
                metrics=metrics,
            ).run(config.trust_root_poll_seconds),
            name="provex-trust-root",
        ),
    )
    endpoints: dict[str, Any] = {
        "service": "node",
        "node_id": identity.node_id,
        "region_code": identity.region_code,
        "peer": peer_address,
        "operator": f"{config.operator_listen.rsplit(':', 1)[0]}:{operator_port}",
        "ca_certificate": str(layout.federation_ca),
        "operator_ca_certificate": str(layout.operator_ca),
        "operator_certificate": str(layout.operator_cert),
        "operator_key": str(layout.operator_key),
        "trust_domain": identity.trust_domain,
    }
    running = RunningNode((peer_server, operator_server), instance, tasks, endpoints)
    running.metrics_http = metrics_http
    if metrics_http is not None:
        endpoints["metrics"] = metrics_http.address
    write_endpoints(state_dir, endpoints)
    return running


async def stop(state_dir: Path, running: RunningNode, grace: float) -> None:
    """Drain calls, stop background work, close channels and storage."""
    remove_endpoints(state_dir)
    if running.metrics_http is not None:
        await running.metrics_http.stop()
    await asyncio.gather(*(server.stop(grace) for server in running.servers))
    for task in running.tasks:
        task.cancel()
    for task in running.tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    instance = running.instance
    if instance.deliveries is not None:
        await instance.deliveries.close()
    await instance.worker.stop()
    await instance.dialer.close()
    await instance.link.close()
    await instance.reader.close()
    await instance.writer.close()


async def serve(state_dir: Path, config: NodeConfig) -> None:
    """Run until SIGTERM or SIGINT, then stop cleanly."""
    running = await start(state_dir, config)
    await announce_and_wait_for_signal("node", running.endpoints)
    await stop(state_dir, running, config.grace_seconds)
