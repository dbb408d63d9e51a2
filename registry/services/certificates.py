"""Servicer of CertificateService: registration certificates and status statements.

Thin: identify and authorize the caller, call :class:`registry.issuance.Issuance`,
encode. Who may do what:

- ``RegisterDataset`` and ``RegisterDatasets``: nodes, for their own members;
- ``SetStatus``: admins (auditors and nodes get PERMISSION_DENIED);
- ``GetCertificate``, ``GetStatus``, ``WatchStatus``: any authenticated caller.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Sequence

from provex.errors import InvalidArgument, ProvexError
from provex.v1 import common_pb2, registry_pb2, registry_pb2_grpc
from registry.authz import require_admin, require_authenticated, require_node
from registry.issuance import Issuance, StatusSubject, SubjectKind
from registry.services.common import Authorizer, Context


def _result(key: str, outcome: common_pb2.Bundle | ProvexError) -> registry_pb2.RegistrationResult:
    if isinstance(outcome, common_pb2.Bundle):
        return registry_pb2.RegistrationResult(idempotency_key=key, certificate=outcome)
    error = registry_pb2.RegistrationError(code=outcome.code.value[0], message=str(outcome))
    return registry_pb2.RegistrationResult(idempotency_key=key, error=error)


class CertificateService(registry_pb2_grpc.CertificateServiceServicer):
    """Signed dataset identifiers and their status."""

    def __init__(self, issuance: Issuance, authorizer: Authorizer) -> None:
        self._issuance = issuance
        self._authorizer = authorizer

    async def RegisterDataset(
        self, request: registry_pb2.RegisterDatasetRequest, context: Context
    ) -> registry_pb2.RegisterDatasetResponse:
        caller = require_node(await self._authorizer.caller(context), "RegisterDataset")
        bundle = await self._issuance.register(caller.name, request)
        return registry_pb2.RegisterDatasetResponse(certificate=bundle)

    async def RegisterDatasets(
        self,
        request_iterator: AsyncIterable[registry_pb2.RegisterDatasetsRequest],
        context: Context,
    ) -> AsyncIterator[registry_pb2.RegisterDatasetsResponse]:
        caller = require_node(await self._authorizer.caller(context), "RegisterDatasets")

        async def chunks() -> AsyncIterator[Sequence[registry_pb2.RegisterDatasetRequest]]:
            async for item in request_iterator:
                yield item.registrations

        async for outcomes in self._issuance.register_many(caller.name, chunks()):
            yield registry_pb2.RegisterDatasetsResponse(
                results=[_result(key, outcome) for key, outcome in outcomes]
            )

    async def GetCertificate(
        self, request: registry_pb2.GetCertificateRequest, context: Context
    ) -> registry_pb2.GetCertificateResponse:
        require_authenticated(await self._authorizer.caller(context), "GetCertificate")
        bundle, status = await self._issuance.certificate(request.dataset_id, request.version)
        return registry_pb2.GetCertificateResponse(certificate=bundle, status=status)

    async def GetStatus(
        self, request: registry_pb2.GetStatusRequest, context: Context
    ) -> registry_pb2.GetStatusResponse:
        require_authenticated(await self._authorizer.caller(context), "GetStatus")
        which = request.WhichOneof("subject")
        if which is None:
            raise InvalidArgument("subject is required: dataset_id, member or node_id")
        subject = _subject(which, getattr(request, which))
        status, statement = await self._issuance.status(subject)
        response = registry_pb2.GetStatusResponse(status=status)
        if statement is not None:
            response.statement.CopyFrom(statement)
        return response

    async def SetStatus(
        self, request: registry_pb2.SetStatusRequest, context: Context
    ) -> registry_pb2.SetStatusResponse:
        caller = require_admin(await self._authorizer.caller(context), "SetStatus")
        which = request.WhichOneof("subject")
        if which is None:
            raise InvalidArgument("subject is required: dataset_id or member")
        subject = _subject(which, getattr(request, which))
        bundle = await self._issuance.set_status(
            str(caller), subject, request.status, request.reason
        )
        return registry_pb2.SetStatusResponse(statement=bundle)

    async def WatchStatus(
        self, request: registry_pb2.WatchStatusRequest, context: Context
    ) -> AsyncIterator[registry_pb2.WatchStatusResponse]:
        require_authenticated(await self._authorizer.caller(context), "WatchStatus")
        async for bundle, catalog_version in self._issuance.watch(
            request.after_log_index, follow=request.follow
        ):
            yield registry_pb2.WatchStatusResponse(
                statement=bundle, catalog_version=catalog_version
            )


_KINDS = {
    "dataset_id": SubjectKind.DATASET,
    "member": SubjectKind.MEMBER,
    "node_id": SubjectKind.NODE,
}


def _subject(field: str, value: str) -> StatusSubject:
    return Issuance.subject(_KINDS[field], value)
