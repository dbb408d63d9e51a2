"""Servicer of PeerService: other nodes, over mutual TLS with the federation CA.

The caller is the node named by its certificate's SPIFFE id (never a request
field), and it must be an active node of the registry's directory as this
node last saw it. Contract negotiation and delivery arrive with the market
issue and answer UNIMPLEMENTED until then.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from node.instance import NodeInstance
from provex.errors import InvalidArgument, PermissionDenied
from provex.identity import PeerKind, require_peer
from provex.v1 import node_pb2, node_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]


class PeerService(node_pb2_grpc.PeerServiceServicer):
    """The peer API a node offers other nodes."""

    def __init__(self, instance: NodeInstance, trust_domain: str) -> None:
        self._node = instance
        self._trust_domain = trust_domain

    def _caller(self, context: Context) -> str:
        caller = require_peer(context, self._trust_domain)
        if caller.kind is not PeerKind.NODE:
            raise PermissionDenied(f"the peer API is for nodes; {caller} is not a node")
        return caller.name

    async def _not_offered(self, context: Context, rpc: str) -> Any:
        self._caller(context)
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            f"{rpc} belongs to trading and delivery, which this node does not offer yet",
        )

    async def PeerSearch(
        self, request: node_pb2.PeerSearchRequest, context: Context
    ) -> node_pb2.PeerSearchResponse:
        caller = self._caller(context)
        if not request.HasField("query"):
            raise InvalidArgument("query is required")
        return await self._node.peer_search(caller, request)

    async def ExchangeCheckpoint(
        self, request: node_pb2.ExchangeCheckpointRequest, context: Context
    ) -> node_pb2.ExchangeCheckpointResponse:
        caller = self._caller(context)
        return await self._node.exchange_checkpoint(caller, request.checkpoint)

    async def ProposeContract(self, request: Any, context: Context) -> Any:
        return await self._not_offered(context, "ProposeContract")

    async def NotifyContract(self, request: Any, context: Context) -> Any:
        return await self._not_offered(context, "NotifyContract")

    async def FinalizeContract(self, request: Any, context: Context) -> Any:
        return await self._not_offered(context, "FinalizeContract")

    async def TerminateContract(self, request: Any, context: Context) -> Any:
        return await self._not_offered(context, "TerminateContract")

    async def GetPeerContract(self, request: Any, context: Context) -> Any:
        return await self._not_offered(context, "GetPeerContract")

    async def Deliver(
        self, request: node_pb2.DeliverRequest, context: Context
    ) -> AsyncIterator[node_pb2.DeliverResponse]:
        await self._not_offered(context, "Deliver")  # Aborts: nothing is yielded.
        yield node_pb2.DeliverResponse()
