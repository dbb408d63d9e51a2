"""Servicer of PeerService: other nodes, over mutual TLS with the federation CA.

The caller is the node named by its certificate's SPIFFE id (never a request
field), and it must be an active node of the registry's directory as this
node last saw it. Contract negotiation goes to :mod:`node.trading`, the
delivery stream to :mod:`node.delivery`.
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

    async def ProposeContract(
        self, request: node_pb2.ProposeContractRequest, context: Context
    ) -> node_pb2.ProposeContractResponse:
        caller = self._caller(context)
        if not request.HasField("terms"):
            raise InvalidArgument("terms is required")
        contract = await self._node.contracts().proposed(caller, request.terms)
        return node_pb2.ProposeContractResponse(contract=contract)

    async def NotifyContract(
        self, request: node_pb2.NotifyContractRequest, context: Context
    ) -> node_pb2.NotifyContractResponse:
        caller = self._caller(context)
        if not request.HasField("contract"):
            raise InvalidArgument("contract is required")
        contract = await self._node.contracts().notified(caller, request.contract)
        return node_pb2.NotifyContractResponse(contract=contract)

    async def FinalizeContract(
        self, request: node_pb2.FinalizeContractRequest, context: Context
    ) -> node_pb2.FinalizeContractResponse:
        caller = self._caller(context)
        contract = await self._node.contracts().finalize(
            caller, request.contract_id, request.envelope
        )
        return node_pb2.FinalizeContractResponse(contract=contract)

    async def TerminateContract(
        self, request: node_pb2.TerminateContractRequest, context: Context
    ) -> node_pb2.TerminateContractResponse:
        caller = self._caller(context)
        contract = await self._node.contracts().peer_terminated(
            caller, request.contract_id, request.reason
        )
        return node_pb2.TerminateContractResponse(contract=contract)

    async def GetPeerContract(
        self, request: node_pb2.GetPeerContractRequest, context: Context
    ) -> node_pb2.GetPeerContractResponse:
        caller = self._caller(context)
        contract = await self._node.contracts().peer_get(caller, request.contract_id)
        return node_pb2.GetPeerContractResponse(contract=contract)

    async def Deliver(
        self, request: node_pb2.DeliverRequest, context: Context
    ) -> AsyncIterator[node_pb2.DeliverResponse]:
        caller = self._caller(context)
        async for response in self._node.deliver(caller, request):
            yield response
