"""Servicers of enrollment (invitations, enroll, renew, revoke) and the node directory."""

from __future__ import annotations

from provex.errors import InvalidArgument
from provex.timestamps import from_timestamp, to_timestamp, utc_now
from provex.v1 import registry_pb2, registry_pb2_grpc
from registry.authz import require_admin, require_authenticated, require_node
from registry.enrollment import NodeBook
from registry.services.common import Authorizer, Context


class EnrollmentService(registry_pb2_grpc.EnrollmentServiceServicer):
    """Invitations (admin), enrollment (anonymous, with an invitation), renewal, revocation."""

    def __init__(self, book: NodeBook, authorizer: Authorizer) -> None:
        self._book = book
        self._authorizer = authorizer

    async def CreateInvitation(
        self, request: registry_pb2.CreateInvitationRequest, context: Context
    ) -> registry_pb2.CreateInvitationResponse:
        caller = require_admin(await self._authorizer.caller(context), "CreateInvitation")
        expires_at = from_timestamp(request.expires_at) if request.HasField("expires_at") else None
        invitation = await self._book.create_invitation(
            request.node_id,
            request.region_code,
            request.display_name,
            expires_at,
            created_by=str(caller),
            now=utc_now(),
        )
        return registry_pb2.CreateInvitationResponse(
            invitation=invitation.to_text(), expires_at=to_timestamp(invitation.expires_at)
        )

    async def Enroll(
        self, request: registry_pb2.EnrollRequest, context: Context
    ) -> registry_pb2.EnrollResponse:
        # Anyone holding an invitation may enroll, anonymously on the public port (a revoked
        # node re-enrolls with a new invitation), so the TLS identity is not consulted.
        if not request.invitation:
            raise InvalidArgument("invitation is required (the text the registry admin gave you)")
        enrolled = await self._book.enroll(
            request.invitation,
            request.csr_pem,
            request.signing_key,
            request.peer_endpoint,
            utc_now(),
        )
        return registry_pb2.EnrollResponse(
            certificate_pem=enrolled.certificate_pem,
            ca_certificate_pem=enrolled.ca_certificate_pem,
            enrollment=enrolled.enrollment,
            trust_root=enrolled.trust_root,
        )

    async def RenewCertificate(
        self, request: registry_pb2.RenewCertificateRequest, context: Context
    ) -> registry_pb2.RenewCertificateResponse:
        caller = require_node(await self._authorizer.caller(context), "RenewCertificate")
        renewed = await self._book.renew(caller.name, request.csr_pem, utc_now())
        return registry_pb2.RenewCertificateResponse(
            certificate_pem=renewed.certificate_pem, enrollment=renewed.enrollment
        )

    async def RevokeNode(
        self, request: registry_pb2.RevokeNodeRequest, context: Context
    ) -> registry_pb2.RevokeNodeResponse:
        caller = require_admin(await self._authorizer.caller(context), "RevokeNode")
        bundle = await self._book.revoke(request.node_id, request.reason, str(caller), utc_now())
        return registry_pb2.RevokeNodeResponse(statement=bundle)


class DirectoryService(registry_pb2_grpc.DirectoryServiceServicer):
    """The node directory: reads for any authenticated caller, endpoint changes by the node."""

    def __init__(self, book: NodeBook, authorizer: Authorizer) -> None:
        self._book = book
        self._authorizer = authorizer

    async def ListNodes(
        self, request: registry_pb2.ListNodesRequest, context: Context
    ) -> registry_pb2.ListNodesResponse:
        require_authenticated(await self._authorizer.caller(context), "ListNodes")
        nodes = await self._book.list_nodes(request.region_prefix, request.include_revoked)
        return registry_pb2.ListNodesResponse(nodes=[node.to_proto() for node in nodes])

    async def GetNode(
        self, request: registry_pb2.GetNodeRequest, context: Context
    ) -> registry_pb2.GetNodeResponse:
        require_authenticated(await self._authorizer.caller(context), "GetNode")
        node = await self._book.get_node(request.node_id)
        return registry_pb2.GetNodeResponse(node=node.to_proto())

    async def UpdateNodeEndpoint(
        self, request: registry_pb2.UpdateNodeEndpointRequest, context: Context
    ) -> registry_pb2.UpdateNodeEndpointResponse:
        caller = require_node(await self._authorizer.caller(context), "UpdateNodeEndpoint")
        node = await self._book.update_endpoint(caller.name, request.peer_endpoint)
        return registry_pb2.UpdateNodeEndpointResponse(node=node.to_proto())
