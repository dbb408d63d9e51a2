"""Servicer of OperatorService: the exchange's operators, on the operator port only.

The operator port is mutual TLS with the node's own operator CA, so the TLS
handshake already refused everyone else (peers hold federation
certificates, which this port does not trust). Each RPC still reads the
caller's SPIFFE id and requires the operator trust domain, so a port
misconfigured to trust another CA does not open the operator API.
Contract RPCs call :mod:`node.trading` (through the instance).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import grpc

from node.instance import NodeInstance
from provex.errors import InvalidArgument, Unauthenticated
from provex.identity import PeerKind, peer_identity
from provex.v1 import node_pb2, node_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]


class OperatorService(node_pb2_grpc.OperatorServiceServicer):
    """The operator API of a node."""

    def __init__(self, instance: NodeInstance, operator_trust_domain: str) -> None:
        self._node = instance
        self._trust_domain = operator_trust_domain

    def _require_operator(self, context: Context) -> None:
        caller = peer_identity(context, self._trust_domain)
        if caller is None or caller.kind is not PeerKind.ADMIN:
            raise Unauthenticated("the operator API needs this node's operator certificate")

    async def AddMember(
        self, request: node_pb2.AddMemberRequest, context: Context
    ) -> node_pb2.AddMemberResponse:
        self._require_operator(context)
        if not request.HasField("member"):
            raise InvalidArgument("member is required")
        member, item = await self._node.add_member(request.member)
        return node_pb2.AddMemberResponse(member=member, report=item)

    async def UpdateMember(
        self, request: node_pb2.UpdateMemberRequest, context: Context
    ) -> node_pb2.UpdateMemberResponse:
        self._require_operator(context)
        if not request.HasField("member"):
            raise InvalidArgument("member is required")
        member, item = await self._node.update_member(request.member)
        return node_pb2.UpdateMemberResponse(member=member, report=item)

    async def ListLocalMembers(
        self, request: node_pb2.ListLocalMembersRequest, context: Context
    ) -> node_pb2.ListLocalMembersResponse:
        self._require_operator(context)
        members, token = await self._node.list_members(request.page_size, request.page_token)
        return node_pb2.ListLocalMembersResponse(members=members, next_page_token=token)

    async def SubmitDataset(
        self, request: node_pb2.SubmitDatasetRequest, context: Context
    ) -> node_pb2.SubmitDatasetResponse:
        self._require_operator(context)
        return node_pb2.SubmitDatasetResponse(dataset=await self._node.submit_dataset(request))

    async def GetDataset(
        self, request: node_pb2.GetDatasetRequest, context: Context
    ) -> node_pb2.GetDatasetResponse:
        self._require_operator(context)
        record = await self._node.get_dataset(request.dataset_id, request.idempotency_key)
        return node_pb2.GetDatasetResponse(dataset=record)

    async def ListDatasets(
        self, request: node_pb2.ListDatasetsRequest, context: Context
    ) -> node_pb2.ListDatasetsResponse:
        self._require_operator(context)
        records, token = await self._node.list_datasets(
            request.holder, request.page_size, request.page_token
        )
        return node_pb2.ListDatasetsResponse(datasets=records, next_page_token=token)

    async def CreateListing(
        self, request: node_pb2.CreateListingRequest, context: Context
    ) -> node_pb2.CreateListingResponse:
        self._require_operator(context)
        if not request.HasField("listing"):
            raise InvalidArgument("listing is required")
        return node_pb2.CreateListingResponse(
            listing=await self._node.create_listing(request.listing)
        )

    async def UpdateListing(
        self, request: node_pb2.UpdateListingRequest, context: Context
    ) -> node_pb2.UpdateListingResponse:
        self._require_operator(context)
        if not request.HasField("listing"):
            raise InvalidArgument("listing is required")
        return node_pb2.UpdateListingResponse(
            listing=await self._node.update_listing(request.listing)
        )

    async def SetListingState(
        self, request: node_pb2.SetListingStateRequest, context: Context
    ) -> node_pb2.SetListingStateResponse:
        self._require_operator(context)
        listing = await self._node.set_listing_state(
            request.listing_id, request.state, request.reason
        )
        return node_pb2.SetListingStateResponse(listing=listing)

    async def GetListing(
        self, request: node_pb2.GetListingRequest, context: Context
    ) -> node_pb2.GetListingResponse:
        self._require_operator(context)
        return node_pb2.GetListingResponse(listing=await self._node.get_listing(request.listing_id))

    async def ImportListings(
        self,
        request_iterator: AsyncIterable[node_pb2.ImportListingsRequest],
        context: Context,
    ) -> AsyncIterator[node_pb2.ImportListingsResponse]:
        self._require_operator(context)
        async for response in self._node.import_listings(request_iterator):
            yield response

    async def Search(
        self, request: node_pb2.SearchRequest, context: Context
    ) -> node_pb2.SearchResponse:
        self._require_operator(context)
        found = await self._node.search(request.query)
        return node_pb2.SearchResponse(
            hits=found.hits, next_page_token=found.next_page_token, total=found.total
        )

    async def FederatedSearch(
        self, request: node_pb2.FederatedSearchRequest, context: Context
    ) -> node_pb2.FederatedSearchResponse:
        self._require_operator(context)
        return await self._node.federated_search(request.query, request.peer_deadline_ms)

    async def ListOutbox(
        self, request: node_pb2.ListOutboxRequest, context: Context
    ) -> node_pb2.ListOutboxResponse:
        self._require_operator(context)
        return node_pb2.ListOutboxResponse(items=await self._node.list_outbox(request.state))

    async def GetNodeStatus(
        self, request: node_pb2.GetNodeStatusRequest, context: Context
    ) -> node_pb2.GetNodeStatusResponse:
        self._require_operator(context)
        return await self._node.node_status()

    async def RequestContract(
        self, request: node_pb2.RequestContractRequest, context: Context
    ) -> node_pb2.RequestContractResponse:
        self._require_operator(context)
        contract = await self._node.contracts().request(request)
        return node_pb2.RequestContractResponse(contract=contract)

    async def DecideContract(
        self, request: node_pb2.DecideContractRequest, context: Context
    ) -> node_pb2.DecideContractResponse:
        self._require_operator(context)
        if not request.agree and not request.reason.strip():
            raise InvalidArgument("reason is required to refuse or terminate a contract")
        contract = await self._node.contracts().decide(
            request.contract_id, request.agree, request.reason
        )
        return node_pb2.DecideContractResponse(contract=contract)

    async def GetContract(
        self, request: node_pb2.GetContractRequest, context: Context
    ) -> node_pb2.GetContractResponse:
        self._require_operator(context)
        return node_pb2.GetContractResponse(
            contract=await self._node.contracts().get(request.contract_id)
        )

    async def ListContracts(
        self, request: node_pb2.ListContractsRequest, context: Context
    ) -> node_pb2.ListContractsResponse:
        self._require_operator(context)
        found, token = await self._node.contracts().list(
            request.state, request.page_size, request.page_token
        )
        return node_pb2.ListContractsResponse(contracts=found, next_page_token=token)

    async def StartDelivery(
        self, request: node_pb2.StartDeliveryRequest, context: Context
    ) -> node_pb2.StartDeliveryResponse:
        self._require_operator(context)
        progress = await self._node.start_delivery(request.contract_id)
        return node_pb2.StartDeliveryResponse(progress=progress)

    async def GetDeliveryProgress(
        self, request: node_pb2.GetDeliveryProgressRequest, context: Context
    ) -> node_pb2.GetDeliveryProgressResponse:
        self._require_operator(context)
        progress = await self._node.delivery_progress(request.contract_id)
        return node_pb2.GetDeliveryProgressResponse(progress=progress)

    async def SubmitRiskAssessment(
        self, request: node_pb2.SubmitRiskAssessmentRequest, context: Context
    ) -> node_pb2.SubmitRiskAssessmentResponse:
        self._require_operator(context)
        if not request.HasField("assessment"):
            raise InvalidArgument("assessment is required")
        assessment, item = await self._node.contracts().submit_assessment(
            request.idempotency_key, request.assessment
        )
        return node_pb2.SubmitRiskAssessmentResponse(assessment=assessment, report=item)
