"""Servicer of SupervisionService: risk assessments, customs, trade reports, statistics, freezes.

Thin: identify the caller, call :class:`registry.supervision.Supervision`
(which authorizes each call by role and, for provincial supervisors, by
region scope), encode. Who may do what:

- ``FileRiskAssessment``, ``FileStandardContract``, ``ReportTrade``: nodes, for
  their own members;
- ``ReviewRiskAssessment``, ``FreezeMember``, ``UnfreezeMember``: admins, and
  supervisors within their province;
- ``ApplyExportPermit``: nodes (for their members) and admins;
  ``ReviewExportPermit``, ``RevokeExportPermit``: admins (permits are national);
- ``ListRiskAssessments``, ``GetExportPermit``, ``CheckExport``: nodes (their own),
  admins, auditors, supervisors (their province);
- ``GetStatistics``, ``ListSupervisoryActions``: admins, auditors, supervisors
  (their province); ``GetPriceIndex`` also nodes.
"""

from __future__ import annotations

from provex.errors import InvalidArgument
from provex.v1 import supervision_pb2, supervision_pb2_grpc
from registry.services.common import Authorizer, Context
from registry.supervision import Supervision


class SupervisionService(supervision_pb2_grpc.SupervisionServiceServicer):
    """Market supervision (DESIGN.md section 7)."""

    def __init__(self, book: Supervision, authorizer: Authorizer) -> None:
        self._book = book
        self._authorizer = authorizer

    async def FileRiskAssessment(
        self, request: supervision_pb2.FileRiskAssessmentRequest, context: Context
    ) -> supervision_pb2.FileRiskAssessmentResponse:
        caller = await self._authorizer.caller(context)
        if not request.HasField("assessment"):
            raise InvalidArgument("assessment is required")
        assessment = await self._book.file_assessment(
            caller, request.idempotency_key, request.assessment
        )
        return supervision_pb2.FileRiskAssessmentResponse(assessment=assessment)

    async def ReviewRiskAssessment(
        self, request: supervision_pb2.ReviewRiskAssessmentRequest, context: Context
    ) -> supervision_pb2.ReviewRiskAssessmentResponse:
        caller = await self._authorizer.caller(context)
        assessment, decision = await self._book.review_assessment(
            caller, request.assessment_id, request.accept, request.reason
        )
        return supervision_pb2.ReviewRiskAssessmentResponse(
            assessment=assessment, decision=decision
        )

    async def ListRiskAssessments(
        self, request: supervision_pb2.ListRiskAssessmentsRequest, context: Context
    ) -> supervision_pb2.ListRiskAssessmentsResponse:
        caller = await self._authorizer.caller(context)
        assessments = await self._book.list_assessments(
            caller, request.holder, request.region_prefix, request.state, request.overdue_only
        )
        return supervision_pb2.ListRiskAssessmentsResponse(assessments=assessments)

    async def ApplyExportPermit(
        self, request: supervision_pb2.ApplyExportPermitRequest, context: Context
    ) -> supervision_pb2.ApplyExportPermitResponse:
        caller = await self._authorizer.caller(context)
        if not request.HasField("application"):
            raise InvalidArgument("application is required")
        application = await self._book.apply_permit(
            caller, request.idempotency_key, request.application
        )
        return supervision_pb2.ApplyExportPermitResponse(application=application)

    async def ReviewExportPermit(
        self, request: supervision_pb2.ReviewExportPermitRequest, context: Context
    ) -> supervision_pb2.ReviewExportPermitResponse:
        caller = await self._authorizer.caller(context)
        bundle, state = await self._book.review_permit(
            caller, request.permit_id, request.approve, request.reason
        )
        response = supervision_pb2.ReviewExportPermitResponse(state=state)
        if bundle is not None:
            response.permit.CopyFrom(bundle)
        return response

    async def RevokeExportPermit(
        self, request: supervision_pb2.RevokeExportPermitRequest, context: Context
    ) -> supervision_pb2.RevokeExportPermitResponse:
        caller = await self._authorizer.caller(context)
        bundle = await self._book.revoke_permit(caller, request.permit_id, request.reason)
        return supervision_pb2.RevokeExportPermitResponse(statement=bundle)

    async def GetExportPermit(
        self, request: supervision_pb2.GetExportPermitRequest, context: Context
    ) -> supervision_pb2.GetExportPermitResponse:
        caller = await self._authorizer.caller(context)
        bundle, state = await self._book.get_permit(caller, request.permit_id)
        response = supervision_pb2.GetExportPermitResponse(state=state)
        if bundle is not None:
            response.permit.CopyFrom(bundle)
        return response

    async def FileStandardContract(
        self, request: supervision_pb2.FileStandardContractRequest, context: Context
    ) -> supervision_pb2.FileStandardContractResponse:
        caller = await self._authorizer.caller(context)
        if not request.HasField("filing"):
            raise InvalidArgument("filing is required")
        filing = await self._book.file_standard_contract(caller, request.filing)
        return supervision_pb2.FileStandardContractResponse(filing=filing)

    async def CheckExport(
        self, request: supervision_pb2.CheckExportRequest, context: Context
    ) -> supervision_pb2.CheckExportResponse:
        caller = await self._authorizer.caller(context)
        return await self._book.check_export(caller, request)

    async def ReportTrade(
        self, request: supervision_pb2.ReportTradeRequest, context: Context
    ) -> supervision_pb2.ReportTradeResponse:
        caller = await self._authorizer.caller(context)
        if not request.HasField("trade"):
            raise InvalidArgument("trade is required")
        record = await self._book.report_trade(caller, request.trade)
        return supervision_pb2.ReportTradeResponse(record=record)

    async def GetStatistics(
        self, request: supervision_pb2.GetStatisticsRequest, context: Context
    ) -> supervision_pb2.GetStatisticsResponse:
        caller = await self._authorizer.caller(context)
        rows = await self._book.statistics(caller, request)
        return supervision_pb2.GetStatisticsResponse(rows=rows)

    async def GetPriceIndex(
        self, request: supervision_pb2.GetPriceIndexRequest, context: Context
    ) -> supervision_pb2.GetPriceIndexResponse:
        caller = await self._authorizer.caller(context)
        points = await self._book.price_index(caller, request.category_prefix)
        return supervision_pb2.GetPriceIndexResponse(points=points)

    async def FreezeMember(
        self, request: supervision_pb2.FreezeMemberRequest, context: Context
    ) -> supervision_pb2.FreezeMemberResponse:
        caller = await self._authorizer.caller(context)
        bundle = await self._book.set_frozen(caller, request.credit_code, request.reason, True)
        return supervision_pb2.FreezeMemberResponse(statement=bundle)

    async def UnfreezeMember(
        self, request: supervision_pb2.UnfreezeMemberRequest, context: Context
    ) -> supervision_pb2.UnfreezeMemberResponse:
        caller = await self._authorizer.caller(context)
        bundle = await self._book.set_frozen(caller, request.credit_code, request.reason, False)
        return supervision_pb2.UnfreezeMemberResponse(statement=bundle)

    async def ListSupervisoryActions(
        self, request: supervision_pb2.ListSupervisoryActionsRequest, context: Context
    ) -> supervision_pb2.ListSupervisoryActionsResponse:
        caller = await self._authorizer.caller(context)
        actions = await self._book.list_actions(
            caller, request.region_prefix, request.after_log_index, request.page_size
        )
        return supervision_pb2.ListSupervisoryActionsResponse(actions=actions)
