"""Federated search: ask every active peer at once, each with a deadline, and merge.

The node dials peers over mutual TLS with its federation certificate and
checks that the server *is* the node it meant: the peer's certificate must
carry ``<node-id>.node.<trust-domain>`` (:func:`provex.identity.node_server_name`),
whatever address the directory gave. A slow, dead or refusing peer never
delays the answer past its deadline; it is named, with the reason, among the
peers that did not answer. Each call carries this node's latest verified
checkpoint and brings back the peer's, so a registry showing two provinces
two histories is caught (the caller compares them).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc

from node.registry_link import Peer, RetiredChannels
from provex.errors import ProvexError
from provex.identity import TlsMaterial, node_server_name, tls_channel_options
from provex.logs import outbound_interceptors
from provex.v1 import market_pb2, node_pb2, node_pb2_grpc

if TYPE_CHECKING:
    from provex.v1.node_pb2_grpc import PeerServiceAsyncStub

log = logging.getLogger(__name__)

CheckpointComparison = Callable[[str, str], Awaitable[str]]
"""``compare(peer_id, peer_checkpoint) -> "same" | "ahead" | "behind" | "split_view" | ...``"""


class PeerDialer:
    """One channel and stub per peer (reused across calls), verified against its node name."""

    def __init__(self, tls: TlsMaterial, trust_domain: str, retire_after: float = 5.0) -> None:
        self._tls = tls
        self._trust_domain = trust_domain
        self._channels: dict[tuple[str, str], tuple[grpc.aio.Channel, PeerServiceAsyncStub]] = {}
        # After a renewal, old channels live on this long (a delivery stream may be running).
        self._retired = RetiredChannels(retire_after)
        # Peers the last federated search could not reach, with the reason (node.metrics).
        self.unreachable: dict[str, str] = {}

    def stub(self, peer: Peer) -> PeerServiceAsyncStub:
        """A PeerService stub for ``peer`` at its current endpoint."""
        slot = (peer.node_id, peer.endpoint)
        dialed = self._channels.get(slot)
        if dialed is None:
            channel = grpc.aio.secure_channel(
                peer.endpoint,
                self._tls.channel_credentials(),
                options=tls_channel_options(node_server_name(self._trust_domain, peer.node_id)),
                interceptors=outbound_interceptors(),  # Calls carry x-request-id.
            )
            dialed = channel, node_pb2_grpc.PeerServiceStub(channel)
            self._channels[slot] = dialed
        return dialed[1]

    def use_certificate(self, tls: TlsMaterial) -> None:
        """Dial peers with ``tls`` from now on (after a renewal); old channels are retired."""
        self._tls = tls
        dialed, self._channels = list(self._channels.values()), {}
        for channel, _ in dialed:
            self._retired.retire(channel)

    async def close(self) -> None:
        """Close every channel."""
        dialed, self._channels = list(self._channels.values()), {}
        await self._retired.close()
        await asyncio.gather(*(channel.close(None) for channel, _ in dialed))


@dataclass
class FederatedResult:
    """Merged hits, who answered, who did not (and why), and split views seen."""

    hits: list[market_pb2.SearchHit]
    answered: list[str] = field(default_factory=list)
    unanswered: list[node_pb2.UnansweredPeer] = field(default_factory=list)
    split_view: list[str] = field(default_factory=list)

    def to_proto(self) -> node_pb2.FederatedSearchResponse:
        return node_pb2.FederatedSearchResponse(
            hits=self.hits,
            answered=self.answered,
            unanswered=self.unanswered,
            split_view=self.split_view,
        )


def _reason(error: BaseException) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        if error.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
            return "no answer before the deadline"
        return f"{error.code().name}: {error.details()}"
    if isinstance(error, TimeoutError):
        return "no answer before the deadline"
    return f"{type(error).__name__}: {error}"


def merge_hits(
    groups: Sequence[Sequence[market_pb2.SearchHit]], limit: int
) -> list[market_pb2.SearchHit]:
    """The best ``limit`` hits of all groups: higher score first, then node and listing id."""
    every = [hit for group in groups for hit in group]
    every.sort(key=lambda hit: (-hit.score, hit.listing.node_id, hit.listing.listing_id))
    return every[:limit]


async def fan_out(
    query: market_pb2.SearchQuery,
    local_hits: Sequence[market_pb2.SearchHit],
    self_id: str,
    peers: Sequence[Peer],
    dialer: PeerDialer,
    *,
    deadline: float,
    checkpoint: str,
    compare: CheckpointComparison | None,
    limit: int,
) -> FederatedResult:
    """Search every active peer in parallel; merge with ``local_hits``; name the silent ones."""
    targets = [peer for peer in peers if peer.active and peer.node_id != self_id]
    peer_query = market_pb2.SearchQuery()
    peer_query.CopyFrom(query)
    peer_query.page_token = ""  # Page tokens are each node's own.
    request = node_pb2.PeerSearchRequest(query=peer_query, checkpoint=checkpoint)

    async def ask(peer: Peer) -> node_pb2.PeerSearchResponse:
        # The gRPC deadline bounds the call; the timeout also bounds connection set-up
        # (asyncio.timeout, unlike wait_for, runs the call in this task: no task per peer).
        async with asyncio.timeout(deadline + 0.25):
            return await dialer.stub(peer).PeerSearch(request, timeout=deadline)

    result = FederatedResult(hits=[], answered=[self_id])
    for peer in targets:
        if peer.endpoint.endswith(":0"):
            result.unanswered.append(
                node_pb2.UnansweredPeer(
                    node_id=peer.node_id, reason="it has not announced its peer endpoint yet"
                )
            )
    targets = [peer for peer in targets if not peer.endpoint.endswith(":0")]
    outcomes = await asyncio.gather(*(ask(peer) for peer in targets), return_exceptions=True)
    groups: list[Sequence[market_pb2.SearchHit]] = [local_hits]
    for peer, outcome in zip(targets, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            result.unanswered.append(
                node_pb2.UnansweredPeer(node_id=peer.node_id, reason=_reason(outcome))
            )
            continue
        dialer.unreachable.pop(peer.node_id, None)
        result.answered.append(peer.node_id)
        groups.append(outcome.hits)
        if compare is not None and outcome.checkpoint:
            # Cheap once the note is known: provex.checkpoint remembers verified notes,
            # and a peer shows the same note on every search until the log grows.
            try:
                verdict = await compare(peer.node_id, outcome.checkpoint)
            except ProvexError as error:  # A checkpoint that does not verify proves nothing.
                log.warning("checkpoint of %s not compared: %s", peer.node_id, error)
                continue
            if verdict == "split_view":
                result.split_view.append(peer.node_id)
    for silent in result.unanswered:
        dialer.unreachable[silent.node_id] = silent.reason
    result.hits = merge_hits(groups, limit)
    return result
