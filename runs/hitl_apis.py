"""The HITL API (API.md, HITL): pending, respond, resume, remove, under
/api/hitl/. They act on runs (lock, resume, cancel), so they live with the
run services; `hitl` itself only keeps requests and responses.

Views are thin: parse, call one selector or service, serialize.
"""
from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from flexagents.errors import ValidationFailed
from flexagents.fields import StrictCharField
from flexagents.idempotency import idempotent
from flexagents.pagination import KeysetCursorPagination
from flexagents.redaction import redact
from hitl import services as hitl_services
from hitl.models import HitlKind, HitlUrgency
from runs import services
from runs.apis import FlexApiView
from runs.events import iso
from runs.selectors import hitl_pending_for_user, hitl_run_id_for


class StrictSerializer(serializers.Serializer):
    """Unknown keys are a 422, not silently dropped."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({key: ["unknown field"] for key in unknown})
        return super().to_internal_value(data)


class AddressSerializer(StrictSerializer):
    runId = StrictCharField(required=False, max_length=40)
    threadId = StrictCharField(required=False, max_length=200)
    requestId = StrictCharField(max_length=40)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs.get("runId") and not attrs.get("threadId"):
            raise serializers.ValidationError({"runId": ["send runId or threadId"]})
        return attrs


class RespondInputSerializer(AddressSerializer):
    responses = serializers.ListField(child=serializers.JSONField(), max_length=hitl_services.MAX_RESPONSES_PER_CALL)
    latestResponseId = StrictCharField(required=False, allow_null=True, max_length=40)
    operator = serializers.DictField(required=False)
    note = StrictCharField(required=False, allow_blank=True, max_length=4000, default="")


class ResumeInputSerializer(RespondInputSerializer):
    responses = serializers.ListField(child=serializers.JSONField(), max_length=hitl_services.MAX_RESPONSES_PER_CALL,
                                      required=False, default=list)


class RemoveInputSerializer(AddressSerializer):
    requestId = StrictCharField(required=False, max_length=40)
    reason = StrictCharField(max_length=4000)
    note = StrictCharField(required=False, allow_blank=True, max_length=4000, default="")


def _parse(serializer_class: type[serializers.Serializer], request: Request) -> dict[str, Any]:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _run_id(request: Request, data: dict[str, Any]) -> str:
    return hitl_run_id_for(user=request.user, run_id=data.get("runId"), thread_id=data.get("threadId"),
                           request_id=data.get("requestId"))


class PendingPagination(KeysetCursorPagination):
    """Most urgent first, then oldest (index hitl_inbox_idx serves the order)."""

    ordering = ("urgency_rank", "created_at", "id")
    page_size = 50
    max_page_size = 200
    results_key = "runs"


class HitlPendingApi(FlexApiView):
    """GET /api/hitl/pending — the inbox of requests waiting for a person."""

    @extend_schema(summary="Pending HITL requests on runs you may view, most urgent and oldest first",
                   parameters=[OpenApiParameter("kind", str, enum=list(HitlKind.values), required=False),
                               OpenApiParameter("urgency", str, enum=list(HitlUrgency.values), required=False),
                               OpenApiParameter("threadId", str, required=False),
                               OpenApiParameter("briefId", str, required=False),
                               OpenApiParameter("assignedTo", str, enum=["me"], required=False,
                                                description="`me`: only requests assigned to you (by user "
                                                            "or group)"),
                               OpenApiParameter("cursor", str, required=False),
                               OpenApiParameter("limit", int, required=False)])
    def get(self, request: Request) -> Response:
        params = request.query_params
        errors = []
        if params.get("kind") and params["kind"] not in HitlKind.values:
            errors.append({"path": "/kind", "message": f"expected one of {', '.join(HitlKind.values)}"})
        if params.get("urgency") and params["urgency"] not in HitlUrgency.values:
            errors.append({"path": "/urgency", "message": f"expected one of {', '.join(HitlUrgency.values)}"})
        if params.get("assignedTo") not in (None, "", "me"):
            errors.append({"path": "/assignedTo", "message": "expected 'me'"})
        if errors:
            raise ValidationFailed("Some query parameters are not valid.", details={"errors": errors})
        qs = hitl_pending_for_user(user=request.user, kind=params.get("kind"), urgency=params.get("urgency"),
                                   thread_id=params.get("threadId"), brief_id=params.get("briefId"),
                                   assigned_to_me=params.get("assignedTo") == "me")
        paginator = PendingPagination()
        page = paginator.paginate_queryset(qs, request)
        return paginator.get_paginated_response([_pending_entry(r) for r in page])


def _pending_entry(hitl_request: Any) -> dict[str, Any]:
    """One inbox entry: the run's fields redacted like the run list's, the
    request through the HITL presenter."""
    run = hitl_request.run
    entry = redact({"runId": run.id, "threadId": run.thread_id or None, "briefId": run.brief_id or None,
                    "status": run.status, "planVersion": run.plan_version, "updatedAt": iso(run.updated_at),
                    "pendingRequestId": hitl_request.id})
    entry["pendingRequest"] = hitl_services.hitl_request_payload(hitl_request, responses=hitl_request.responses.all())
    return entry


class HitlRespondApi(FlexApiView):
    """POST /api/hitl/respond — append responses without resuming."""

    @extend_schema(request=RespondInputSerializer, summary="Append responses to a pending request")
    @idempotent
    def post(self, request: Request) -> Response:
        data = _parse(RespondInputSerializer, request)
        body = services.hitl_respond(user=request.user, run_id=_run_id(request, data), request_id=data["requestId"],
                                     responses=data["responses"], latest_response_id=data.get("latestResponseId"),
                                     operator=data.get("operator"), note=data["note"])
        return Response(body)


class HitlResumeApi(FlexApiView):
    """POST /api/hitl/resume — answer, resolve the request, resume the run."""

    @extend_schema(request=ResumeInputSerializer, summary="Resolve a pending request and resume its run")
    @idempotent
    def post(self, request: Request) -> Response:
        data = _parse(ResumeInputSerializer, request)
        result = services.hitl_resume(user=request.user, run_id=_run_id(request, data), request_id=data["requestId"],
                                      responses=data["responses"], latest_response_id=data.get("latestResponseId"),
                                      operator=data.get("operator"), note=data["note"])
        listing = hitl_services.hitl_run_payloads(run_id=result.run.id)
        return Response({"runId": result.run.id, "status": result.run.status, "planVersion": result.run.plan_version,
                         "pendingRequestId": listing["pendingRequestId"], "requests": listing["requests"],
                         "responses": [hitl_services.hitl_response_payload(r) for r in result.responses]})


class HitlRemoveApi(FlexApiView):
    """POST /api/hitl/remove — remove the pending request and cancel the run."""

    @extend_schema(request=RemoveInputSerializer, summary="Remove a pending request; the run is cancelled")
    @idempotent
    def post(self, request: Request) -> Response:
        data = _parse(RemoveInputSerializer, request)
        run = services.hitl_remove(user=request.user, run_id=_run_id(request, data),
                                   request_id=data.get("requestId"), reason=data["reason"], note=data["note"])
        listing = hitl_services.hitl_run_payloads(run_id=run.id)
        return Response({"runId": run.id, "status": run.status, "planVersion": run.plan_version,
                         "pendingRequestId": None, "requests": listing["requests"]})
