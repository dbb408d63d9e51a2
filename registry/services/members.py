"""Servicer of members: nodes report their own; nodes, auditors and admins read."""

from __future__ import annotations

from provex.errors import InvalidArgument
from provex.timestamps import utc_now
from provex.v1 import registry_pb2, registry_pb2_grpc
from registry.authz import require_authenticated, require_node
from registry.members import MemberBook
from registry.services.common import Authorizer, Context


class MemberService(registry_pb2_grpc.MemberServiceServicer):
    """ReportMember (node, for itself), GetMember and ListMembers (nodes see their own)."""

    def __init__(self, book: MemberBook, authorizer: Authorizer) -> None:
        self._book = book
        self._authorizer = authorizer

    async def ReportMember(
        self, request: registry_pb2.ReportMemberRequest, context: Context
    ) -> registry_pb2.ReportMemberResponse:
        caller = require_node(await self._authorizer.caller(context), "ReportMember")
        if not request.HasField("member"):
            raise InvalidArgument("member is required")
        member = await self._book.report(caller.name, request.member, utc_now())
        return registry_pb2.ReportMemberResponse(member=member.to_proto())

    async def GetMember(
        self, request: registry_pb2.GetMemberRequest, context: Context
    ) -> registry_pb2.GetMemberResponse:
        caller = require_authenticated(await self._authorizer.caller(context), "GetMember")
        member = await self._book.get(caller, request.credit_code)
        return registry_pb2.GetMemberResponse(member=member.to_proto())

    async def ListMembers(
        self, request: registry_pb2.ListMembersRequest, context: Context
    ) -> registry_pb2.ListMembersResponse:
        caller = require_authenticated(await self._authorizer.caller(context), "ListMembers")
        members, token = await self._book.list(
            caller, request.node_id, request.region_prefix, request.page_size, request.page_token
        )
        return registry_pb2.ListMembersResponse(
            members=[member.to_proto() for member in members], next_page_token=token
        )
