"""The node's connection to the national registry: one mutual-TLS channel, deadlines, handlers.

:class:`RegistryLink` owns the channel to the registry's federation port
(the node's own certificate; the federation CA). Every call it makes has a
deadline. After a certificate renewal (:mod:`node.renewal`) it dials with
the new certificate (:meth:`RegistryLink.use_certificate`). It also provides
the outbox's handlers — the calls that must reach the registry exactly
once — and keeps the node directory the federated search fans out to
(refreshed in the background, persisted, so the node still knows its peers
while the registry is down).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, cast

import grpc

from node import outbox
from provex.identity import TlsMaterial
from provex.logs import outbound_interceptors
from provex.rpc import error_for_rpc_error
from provex.storage import Database
from provex.v1 import common_pb2, registry_pb2, registry_pb2_grpc, supervision_pb2_grpc

log = logging.getLogger(__name__)

UNREACHABLE_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)

# After a renewal the old channel stays open this long: longer than the status feed's
# stream (node.sync.StatusFollower reopens it every 300 s), so no open stream is cut (a
# closed channel cancels its calls) and it is reopened on the new channel.
RETIRE_AFTER_SECONDS = 330.0

SCHEMA = """
-- The registry's node directory as last seen (what federated search fans out to).
CREATE TABLE peers (
    node_id      TEXT PRIMARY KEY,
    region_code  TEXT NOT NULL,
    display_name TEXT NOT NULL,
    endpoint     TEXT NOT NULL,
    status       TEXT NOT NULL,
    seen_at      TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Peer:
    """A node of the directory."""

    node_id: str
    region_code: str
    display_name: str
    endpoint: str
    active: bool


class RetiredChannels:
    """Channels replaced after a certificate renewal: closed once calls in flight had time."""

    def __init__(self, grace: float) -> None:
        self._grace = grace
        self._waiting: dict[asyncio.Task[None], grpc.aio.Channel] = {}

    def retire(self, channel: grpc.aio.Channel) -> None:
        """Close ``channel`` after the grace period (needs a running event loop)."""

        async def close_later() -> None:
            await asyncio.sleep(self._grace)
            await channel.close(None)

        task = asyncio.get_running_loop().create_task(close_later())
        self._waiting[task] = channel
        task.add_done_callback(lambda done: self._waiting.pop(done, None))

    async def close(self) -> None:
        """Close every retired channel now."""
        waiting, self._waiting = dict(self._waiting), {}
        for task in waiting:
            task.cancel()
        await asyncio.gather(*(channel.close(None) for channel in waiting.values()))


class RegistryLink:
    """Calls to the registry, with deadlines; outbox handlers; the cached node directory."""

    def __init__(self, address: str, tls: TlsMaterial, deadline: float) -> None:
        self._address = address
        self._deadline = deadline
        self._retired = RetiredChannels(max(RETIRE_AFTER_SECONDS, deadline + 1))
        self._channel = self._open(tls)
        # True while a certificate renewal is under way (node.renewal): the registry may
        # already refuse the certificate this channel presents.
        self._renewing = False
        self.members = registry_pb2_grpc.MemberServiceStub(self._channel)
        self.certificates = registry_pb2_grpc.CertificateServiceStub(self._channel)
        self.directory = registry_pb2_grpc.DirectoryServiceStub(self._channel)
        self.log = registry_pb2_grpc.LogServiceStub(self._channel)
        self.catalog = registry_pb2_grpc.CatalogServiceStub(self._channel)
        self.supervision = supervision_pb2_grpc.SupervisionServiceStub(self._channel)
        self.reachable = False

    def _open(self, tls: TlsMaterial) -> grpc.aio.Channel:
        return grpc.aio.secure_channel(
            self._address,
            tls.channel_credentials(),
            interceptors=outbound_interceptors(),  # Calls carry x-request-id.
        )

    def renewing(self, under_way: bool) -> None:
        """Note that a renewal started (True) or ended (False), successful or not."""
        self._renewing = under_way

    def use_certificate(self, tls: TlsMaterial) -> None:
        """Dial with ``tls`` from now on (after a renewal the registry refuses the old one).

        The stubs are rebound *in place* to a new channel, so whoever holds one
        (the checkpoint keeper, the status follower) calls with the new
        certificate; calls in flight on the old channel get a grace period
        (:data:`RETIRE_AFTER_SECONDS`).
        """
        old, self._channel = self._channel, self._open(tls)
        for stub in (
            self.members,
            self.certificates,
            self.directory,
            self.log,
            self.catalog,
            self.supervision,
        ):
            cast(Any, stub).__init__(self._channel)
        self._retired.retire(old)

    @property
    def deadline(self) -> float:
        """Seconds every call to the registry may take."""
        return self._deadline

    async def close(self) -> None:
        """Close the channel (in-flight calls are cancelled)."""
        await self._retired.close()
        await self._channel.close(None)

    def _failed(self, error: grpc.aio.AioRpcError, channel: grpc.aio.Channel) -> Exception:
        """What a failed call means to the outbox (and note whether the registry answered).

        A refusal of a call made with a certificate that is being (or has been)
        replaced is not a refusal of the item: it is retried with the new one.
        """
        self.reachable = error.code() not in UNREACHABLE_CODES
        if error.code() is grpc.StatusCode.PERMISSION_DENIED and (
            self._renewing or channel is not self._channel
        ):
            return outbox.Retry(
                f"registry refused the certificate being renewed: {error.details()}"
            )
        return outbox.classify_rpc_error(error)

    async def report_member(self, key: str, payload: bytes) -> bytes:
        """Outbox handler of ``report_member``: MemberService.ReportMember."""
        request = registry_pb2.ReportMemberRequest.FromString(payload)
        channel = self._channel
        try:
            response = await self.members.ReportMember(request, timeout=self._deadline)
        except grpc.aio.AioRpcError as error:
            raise self._failed(error, channel) from None
        self.reachable = True
        return bytes(response.SerializeToString())

    async def register_dataset(self, key: str, payload: bytes) -> bytes:
        """Outbox handler of ``register_dataset``: CertificateService.RegisterDataset."""
        request = registry_pb2.RegisterDatasetRequest.FromString(payload)
        channel = self._channel
        try:
            response = await self.certificates.RegisterDataset(request, timeout=self._deadline)
        except grpc.aio.AioRpcError as error:
            raise self._failed(error, channel) from None
        self.reachable = True
        return bytes(response.SerializeToString())

    async def announce_endpoint(self, endpoint: str) -> None:
        """Tell the directory where peers reach this node (DirectoryService.UpdateNodeEndpoint)."""
        try:
            await self.directory.UpdateNodeEndpoint(
                registry_pb2.UpdateNodeEndpointRequest(peer_endpoint=endpoint),
                timeout=self._deadline,
            )
        except grpc.aio.AioRpcError as error:
            self.reachable = error.code() not in UNREACHABLE_CODES
            raise error_for_rpc_error(error, f"registry at {self._address}") from None
        self.reachable = True
        log.info("peer endpoint %s announced to the registry", endpoint)

    async def fetch_directory(self) -> list[Peer]:
        """Every node of the registry's directory (active and revoked)."""
        try:
            response = await self.directory.ListNodes(
                registry_pb2.ListNodesRequest(include_revoked=True), timeout=self._deadline
            )
        except grpc.aio.AioRpcError as error:
            self.reachable = False
            raise error_for_rpc_error(error, f"registry at {self._address}") from None
        self.reachable = True
        return [
            Peer(
                node.node_id,
                node.region_code,
                node.display_name,
                node.peer_endpoint,
                node.status == common_pb2.STATUS_ACTIVE,
            )
            for node in response.nodes
        ]


def store_directory(conn: sqlite3.Connection, peers: list[Peer], now: datetime) -> None:
    """Replace the cached directory (database thread, in a transaction)."""
    conn.execute("DELETE FROM peers")
    conn.executemany(
        "INSERT INTO peers (node_id, region_code, display_name, endpoint, status, seen_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [
            (
                p.node_id,
                p.region_code,
                p.display_name,
                p.endpoint,
                "active" if p.active else "revoked",
                now.isoformat(),
            )
            for p in peers
        ],
    )


def load_directory(conn: sqlite3.Connection) -> list[Peer]:
    """The cached directory."""
    rows = conn.execute(
        "SELECT node_id, region_code, display_name, endpoint, status FROM peers ORDER BY node_id"
    )
    return [Peer(str(a), str(b), str(c), str(d), str(e) == "active") for a, b, c, d, e in rows]


async def refresh_directory_forever(
    link: RegistryLink,
    db: Database,
    interval: float,
    clock: Callable[[], datetime],
    *,
    own_endpoint: str = "",
    on_change: Callable[[list[Peer]], Awaitable[None]] | None = None,
) -> None:
    """Re-read the directory every ``interval`` seconds until cancelled; keep the last one.

    With ``own_endpoint``, first make sure the directory lists this node at
    that address (a node bound to a new port announces it), retrying with
    the refreshes until the registry has it.
    """
    announced = not own_endpoint
    while True:
        try:
            if not announced:
                await link.announce_endpoint(own_endpoint)
                announced = True
            peers = await link.fetch_directory()
        except Exception as error:  # The registry is down: keep the cached directory.
            log.info("node directory not refreshed: %s", error)
        else:
            await db.transaction(partial(store_directory, peers=peers, now=clock()))
            if on_change is not None:
                await on_change(peers)
        await asyncio.sleep(interval)
