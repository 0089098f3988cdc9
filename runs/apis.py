"""The flex run API (API.md, "Flex runs" and "Catalog").

Views are thin: parse, call one service or selector, serialize.
"""
from __future__ import annotations

import functools
import hmac
import logging
import re
from typing import Any, Callable
from urllib.parse import urlencode

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.db import connection, connections
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import reverse
from django_eventstream.renderers import SSEEventRenderer
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from flexagents import logging as flex_logging
from flexagents.errors import Forbidden, ServerBusy, ValidationFailed, error_body
from flexagents.fields import StrictCharField, StrictIntegerField
from flexagents.idempotency import idempotent
from flexagents.params import int_param
from flexagents.roles import user_is_agent
from planner.facets import get_catalog
from planner.planner import preview_plan
from planner.registry import get_registry
from runs import grip, metrics, notify, ops, services, stream_access
from runs.debug import run_debug_view
from runs.events import event_frame, event_id
from runs.listing import run_list_response, run_summary
from runs.selectors import run_events_after, run_get_for_user
from runs.streaming import Admission, hub, stream_frames
from runs.tickets import TICKET_PARAM, StreamTicketAuthentication, stream_ticket_create
from runs.throttles import RunDetailThrottle

logger = logging.getLogger("runs.apis")


class JsonObjectSerializer(serializers.Serializer):
    """OpenAPI fallback for views whose bodies are described in docs/api.md."""


class FlexApiView(APIView):
    """Errors are JSON even when the client asked for an event stream."""

    serializer_class = JsonObjectSerializer  # for drf-spectacular only
    # The `agent` role may call only the views that say so (API.md, Agents).
    agent_allowed = False

    def perform_authentication(self, request: Request) -> None:
        super().perform_authentication(request)
        # The rest of the request logs who asked (the middleware's reset ends it).
        flex_logging.bind(user=getattr(request.user, "username", None))

    def check_permissions(self, request: Request) -> None:
        super().check_permissions(request)
        if not self.agent_allowed and user_is_agent(request.user):
            raise Forbidden("An agent token may only register and heartbeat its agent and act on its tasks.")

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(response, Response) and response.status_code >= 400:
            request.accepted_renderer = JSONRenderer()
            request.accepted_media_type = "application/json"
        return super().finalize_response(request, response, *args, **kwargs)


class SseApiView(FlexApiView):
    renderer_classes = [JSONRenderer, SSEEventRenderer]


class SseResponse(StreamingHttpResponse):
    """An SSE response that gives its stream slot back when it is closed
    without its body ever starting (Django closes the response of a client
    that disconnected while the headers were sent, but never the generator)."""

    def __init__(self, frames: Any, admission: Admission | None) -> None:
        super().__init__(frames, content_type="text/event-stream")
        self.admission = admission

    def close(self) -> None:
        hub.withdraw(self.admission)
        super().close()


def sse_response(*, admission: Admission | None, run_id: str, after_seq: int, user: Any,
                 stop_on_wait: bool, until_seq: int | None = None) -> StreamingHttpResponse:
    response = SseResponse(stream_frames(admission=admission, run_id=run_id, after_seq=after_seq, user=user,
                                         stop_on_wait=stop_on_wait, until_seq=until_seq), admission)
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


def offloaded(view: Callable[..., Any]) -> Callable[..., Any]:
    """An async view that runs the (sync, DRF) `view` — authentication, the
    run permission check, Last-Event-ID, admission, rendering an error — on
    the event loop's bounded default executor, and gives the database
    connection back at once. The streaming response that comes back is an
    async generator served on the event loop: with the async middleware chain
    (flexagents.asgi) no stream holds an OS thread, in any phase, and a
    connect storm of thousands of streams queues on a handful of threads."""

    def run_view(request: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            response = view(request, *args, **kwargs)
            render = getattr(response, "render", None)
            if callable(render) and not getattr(response, "is_rendered", True):
                response = render()
            return response
        finally:
            if not connection.in_atomic_block:
                connections.close_all()

    in_executor = sync_to_async(run_view, thread_sensitive=False)
    # Under a sync handler (WSGI, Django's test client) the request's own
    # thread runs the view, as for any other view (and sees its transaction).
    in_request_thread = sync_to_async(view, thread_sensitive=True)

    @functools.wraps(view)
    async def async_view(request: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(request, ASGIRequest):
            return await in_executor(request, *args, **kwargs)
        return await in_request_thread(request, *args, **kwargs)

    return async_view


def cached_stream_view(view: Callable[..., Any]) -> Callable[..., Any]:
    """The run stream's view (`GET …/runs/{runId}/stream`): a request with
    `Authorization: Bearer` whose access is cached (runs.stream_access) is
    answered on the event loop — no executor hop, no query —, and the first
    request of a (token, run) pair fills the cache with one hop shared by the
    requests that arrive meanwhile. Anything the fast path does not grant (a
    ticket, a session, an unknown token, a run not visible, a Last-Event-ID
    ahead of the cached position, no free stream slot) goes to the full view
    `offloaded(view)`, which answers as before, errors included."""
    full = offloaded(view)

    @functools.wraps(view)
    async def stream_view(request: Any, run_id: str, **kwargs: Any) -> Any:
        if isinstance(request, ASGIRequest):
            response = await _cached_stream(request, run_id)
            if response is not None:
                return response
        return await full(request, run_id=run_id, **kwargs)

    return stream_view


_grip_hold = sync_to_async(notify.closing_connection(grip.hold_response), thread_sensitive=False)


async def _cached_stream(request: Any, run_id: str) -> HttpResponse | StreamingHttpResponse | None:
    if TICKET_PARAM in request.GET:
        return None
    auth = request.headers.get("Authorization", "").split()
    if len(auth) != 2 or auth[0].lower() != "bearer":
        return None
    try:
        after = parse_last_event_id(request.headers.get("Last-Event-ID") or request.GET.get("lastEventId"), run_id)
    except ValidationFailed:
        return None
    access = await stream_access.stream_access(auth[1], run_id)
    if access is None or after > access.last_seq:
        return None
    if grip.proxied(request):
        # Pushpin asks for a hold (runs.grip): the replay, read on the shared
        # executor, then the hold — as the full view answers it.
        hold: HttpResponse = await _grip_hold(run_id=run_id, user=access.user, after=after, first=True)
        return hold
    admission = hub.admit(access.user.pk)
    if admission is None:
        return None
    flex_logging.bind(user=access.user.username, run_id=run_id, correlation_id=access.correlation_id)
    response = sse_response(admission=admission, run_id=run_id, after_seq=after, user=access.user,
                            stop_on_wait=False)
    response["Vary"] = "Accept"
    return response


def admit_stream(user: Any) -> Admission:
    admission = hub.admit(getattr(user, "pk", None))
    if admission is None:
        raise ServerBusy("Too many open event streams; retry later.", retry_after=5)
    return admission


def bind_run(run: Any) -> None:
    """The rest of this request logs (and echoes) the new run's correlation id."""
    flex_logging.bind(run_id=run.id, correlation_id=run.correlation_id)


def stream_url(request: Request, run_id: str) -> str:
    return request.build_absolute_uri(reverse("runs:run-stream", kwargs={"run_id": run_id}))


class EnvelopeSerializer(serializers.Serializer):
    """Documentation only: the envelope is validated by its JSON Schema."""

    objective = serializers.CharField()
    inputs = serializers.DictField(required=False)
    constraints = serializers.DictField(required=False)
    policies = serializers.DictField(required=False)
    specialInstructions = serializers.ListField(child=serializers.CharField(), required=False)
    metadata = serializers.DictField(required=False)
    outputContract = serializers.DictField()


class RunAcceptedSerializer(serializers.Serializer):
    runId = serializers.CharField()
    status = serializers.CharField()
    planVersion = serializers.IntegerField()
    streamUrl = serializers.URLField()


class RunSummarySerializer(serializers.Serializer):
    """Documentation only: a list item and the cancel response (runs.listing)."""

    runId = serializers.CharField()
    status = serializers.CharField()
    objective = serializers.CharField()
    planVersion = serializers.IntegerField()
    threadId = serializers.CharField(allow_null=True)
    briefId = serializers.CharField(allow_null=True)
    createdAt = serializers.DateTimeField()
    updatedAt = serializers.DateTimeField()
    createdBy = serializers.CharField(allow_null=True)
    pendingRequestId = serializers.CharField(allow_null=True)


class RunListSerializer(serializers.Serializer):
    results = RunSummarySerializer(many=True)
    next = serializers.URLField(allow_null=True)


class RunStreamApi(SseApiView):
    """POST /api/v1/flex/run.stream — submit an envelope and stream the run."""

    @extend_schema(request=EnvelopeSerializer,
                   responses={(200, "text/event-stream"): OpenApiResponse(description="SSE frames of the run")},
                   summary="Submit a TaskEnvelope and stream the run's events")
    def post(self, request: Request) -> StreamingHttpResponse:
        envelope = request.data
        admission = admit_stream(request.user)
        try:
            run = services.run_create(user=request.user, envelope=envelope,
                                      correlation_id=getattr(request, "correlation_id", ""))
        except BaseException:
            hub.withdraw(admission)
            raise
        bind_run(run)
        # From seq 0: the stream must not miss the run's first events.
        return sse_response(admission=admission, run_id=run.id, after_seq=0, user=request.user, stop_on_wait=True)


class RunListCreateApi(FlexApiView):
    """POST /api/v1/flex/runs — submit without streaming; GET — list runs."""

    @extend_schema(request=EnvelopeSerializer, responses={202: RunAcceptedSerializer},
                   summary="Submit a TaskEnvelope")
    @idempotent
    def post(self, request: Request) -> Response:
        run = services.run_create(user=request.user, envelope=request.data,
                                  correlation_id=getattr(request, "correlation_id", ""))
        bind_run(run)
        return Response({"runId": run.id, "status": run.status, "planVersion": run.plan_version,
                         "streamUrl": stream_url(request, run.id)}, status=202)

    @extend_schema(summary="List the runs you may view, newest first", responses={200: RunListSerializer},
                   parameters=[OpenApiParameter(n, str, required=False) for n in
                               ("status", "threadId", "briefId", "capabilityId", "pending", "createdAfter",
                                "createdBefore", "q", "cursor", "limit")])
    def get(self, request: Request) -> Response:
        return Response(run_list_response(request))


_LAST_EVENT_ID = re.compile(r"^(?:(?P<run>[A-Za-z0-9_\-]+):)?(?P<seq>\d{1,10})$")


def parse_last_event_id(value: str | None, run_id: str) -> int:
    """`run_x:5` (the frame id) or `5`; anything else is a clear 422."""
    if value is None or value == "":
        return 0
    match = _LAST_EVENT_ID.match(value.strip())
    if not match or (match.group("run") and match.group("run") != run_id):
        raise ValidationFailed("Last-Event-ID is not an event id of this run.",
                               details={"errors": [{"path": "/lastEventId", "message": "expected '<runId>:<seq>'"}]})
    return int(match.group("seq"))


class RunStreamGetApi(SseApiView):
    """GET /api/v1/flex/runs/{runId}/stream — replay after Last-Event-ID, then follow.
    A browser's EventSource authenticates with `?ticket=` (runs.tickets)."""

    authentication_classes = [StreamTicketAuthentication, *api_settings.DEFAULT_AUTHENTICATION_CLASSES]

    @extend_schema(summary="Stream a run's events (SSE)",
                   parameters=[OpenApiParameter("lastEventId", str, required=False),
                               OpenApiParameter("ticket", str, required=False,
                                                description="A stream ticket (POST …/stream-ticket), for clients "
                                                            "that cannot send Authorization (EventSource)")],
                   responses={(200, "text/event-stream"): OpenApiResponse(description="SSE frames")})
    def get(self, request: Request, run_id: str) -> StreamingHttpResponse:
        run = run_get_for_user(user=request.user, run_id=run_id)
        raw = request.headers.get("Last-Event-ID") or request.query_params.get("lastEventId")
        after = parse_last_event_id(raw, run.id)
        if after > run.last_seq:
            raise ValidationFailed("Last-Event-ID is ahead of this run's events.",
                                   details={"errors": [{"path": "/lastEventId", "message": "unknown event id"}],
                                            "lastSeq": run.last_seq})
        if grip.proxied(request):  # through Pushpin (FLEX_GRIP_URL): replay, then Pushpin holds the stream
            return grip.hold_response(run_id=run.id, user=request.user, after=after, first=True)
        admission = admit_stream(request.user)
        return sse_response(admission=admission, run_id=run.id, after_seq=after, user=request.user,
                            stop_on_wait=False)


class StreamTicketSerializer(serializers.Serializer):
    ticket = serializers.CharField()
    expiresAt = serializers.DateTimeField()
    streamUrl = serializers.URLField()


class StreamTicketCreateApi(FlexApiView):
    """POST /api/v1/flex/runs/{runId}/stream-ticket — a single-use, 60 s ticket
    for the run's stream, bound to the caller."""

    @extend_schema(request=None, responses={201: StreamTicketSerializer},
                   summary="A short-lived, single-use ticket to open the run's stream with EventSource")
    def post(self, request: Request, run_id: str) -> Response:
        issued = stream_ticket_create(user=request.user, run_id=run_id)
        url = f"{stream_url(request, issued.run_id)}?{urlencode({TICKET_PARAM: issued.ticket})}"
        return Response(StreamTicketSerializer({"ticket": issued.ticket, "expiresAt": issued.expires_at,
                                                "streamUrl": url}).data, status=201)


class RunEventsApi(FlexApiView):
    """GET /api/v1/flex/runs/{runId}/events?after=&limit= — events as JSON."""

    throttle_classes = [RunDetailThrottle]  # the same data as the debug view: one scope

    MAX_LIMIT = 1000

    @extend_schema(summary="A run's events as JSON, oldest first",
                   parameters=[OpenApiParameter("after", int, required=False),
                               OpenApiParameter("limit", int, required=False)])
    def get(self, request: Request, run_id: str) -> Response:
        run = run_get_for_user(user=request.user, run_id=run_id)
        after = int_param(request.query_params, "after", default=0, low=0, high=2**31)
        limit = int_param(request.query_params, "limit", default=100, low=1, high=self.MAX_LIMIT)
        rows = run_events_after(run=run, after=after, limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        next_url = None
        if more:
            base = request.build_absolute_uri(reverse("runs:run-events", kwargs={"run_id": run.id}))
            next_url = f"{base}?after={rows[-1].seq}&limit={limit}"
        return Response({"events": [event_frame(r) for r in rows], "next": next_url})


class CapabilitiesApi(FlexApiView):
    @extend_schema(summary="The registered capabilities")
    def get(self, request: Request) -> Response:
        return Response({"capabilities": get_registry().describe_all()})


class FacetsApi(FlexApiView):
    @extend_schema(summary="The facet catalog")
    def get(self, request: Request) -> Response:
        facets = [f.to_dict() for f in get_catalog().values()]
        return Response({"facets": [{k: f[k] for k in ("name", "title", "description", "schema", "direction")}
                                    for f in facets]})


class PlanPreviewApi(FlexApiView):
    @extend_schema(request=EnvelopeSerializer, summary="The plan the planner would run, without creating a run")
    def post(self, request: Request) -> Response:
        from planner.envelope import validate_envelope

        return Response(preview_plan(validate_envelope(request.data)))


class RunDebugApi(FlexApiView):
    """GET /api/v1/flex/runs/{runId} — everything about a run, redacted."""

    throttle_classes = [RunDetailThrottle]

    @extend_schema(summary="The debug view of a run (redacted; rate-limited per user)",
                   responses={200: OpenApiResponse(description="run, policies, planVersions, nodes, facetProvenance, "
                                                               "hitl, latestSnapshot, output, events, audit")})
    def get(self, request: Request, run_id: str) -> Response:
        run = run_get_for_user(user=request.user, run_id=run_id)
        body = run_debug_view(run=run)
        logger.info("debug view read", extra={"run_id": run.id, "operator_id": request.user.pk,
                                              "plan_version": run.plan_version, "action": "debug_read"})
        return Response(body)


class RunCancelInputSerializer(serializers.Serializer):
    reason = StrictCharField(required=False, allow_blank=True, max_length=2000, default="")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(self.initial_data) - set(self.fields)) if isinstance(self.initial_data, dict) else []
        if unknown:
            raise serializers.ValidationError({name: ["Unknown field; the body takes only 'reason'."]
                                               for name in unknown})
        return attrs


class RunCancelApi(FlexApiView):
    """POST /api/v1/flex/runs/{runId}/cancel — terminal and audited."""

    @extend_schema(request=RunCancelInputSerializer, responses={200: RunSummarySerializer},
                   summary="Cancel a run (409 run_already_completed when terminal)")
    @idempotent
    def post(self, request: Request, run_id: str) -> Response:

        data = request.data if isinstance(request.data, dict) else None
        if data is None:
            raise ValidationFailed("The body must be a JSON object.",
                                   details={"errors": [{"path": "/", "message": "expected an object"}]})
        serializer = RunCancelInputSerializer(data=data)
        serializer.is_valid(raise_exception=True)
        # The service writes the audit entry and its structured log line
        # (run_id, operator_id, plan_version, action=run_cancelled).
        run = services.run_cancel(user=request.user, run_id=run_id, reason=serializer.validated_data["reason"])
        return Response(run_summary(run_id=run.id))


class PolicyTriggerInputSerializer(serializers.Serializer):
    note = StrictCharField(required=False, allow_blank=True, max_length=4000, default="")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(self.initial_data) - set(self.fields)) if isinstance(self.initial_data, dict) else []
        if unknown:
            raise serializers.ValidationError({name: ["Unknown field; the body takes only 'note'."]
                                               for name in unknown})
        return attrs


class PolicyTriggerResultSerializer(serializers.Serializer):
    runId = serializers.CharField()
    policyId = serializers.CharField()
    triggerId = serializers.CharField()
    state = serializers.ChoiceField(choices=["queued", "applied"])
    status = serializers.CharField()
    streamUrl = serializers.CharField()


class PolicyTriggerApi(FlexApiView):
    """POST /api/v1/flex/runs/{runId}/policies/{policyId}/trigger — fire a
    `manual` runtime policy (operators and the run's owner)."""

    @extend_schema(request=PolicyTriggerInputSerializer, responses={202: PolicyTriggerResultSerializer},
                   summary="Trigger a manual runtime policy of a run")
    @idempotent
    def post(self, request: Request, run_id: str, policy_id: str) -> Response:
        data = request.data if isinstance(request.data, dict) else None
        if data is None:
            raise ValidationFailed("The body must be a JSON object.",
                                   details={"errors": [{"path": "/", "message": "expected an object"}]})
        serializer = PolicyTriggerInputSerializer(data=data)
        serializer.is_valid(raise_exception=True)
        result = services.policy_trigger(user=request.user, run_id=run_id, policy_id=policy_id,
                                         note=serializer.validated_data["note"])
        return Response({"runId": result.run.id, "policyId": result.policy_id, "triggerId": result.trigger_id,
                         "state": result.state, "status": result.run.status,
                         "streamUrl": f"/api/v1/flex/runs/{result.run.id}/stream"}, status=202)


class RunResumeInputSerializer(serializers.Serializer):
    runId = StrictCharField(max_length=40)
    expectedPlanVersion = StrictIntegerField(min_value=0)
    responses = serializers.ListField(child=serializers.JSONField(), required=False, default=list, max_length=20)
    latestResponseId = StrictCharField(required=False, allow_null=True, max_length=40)
    operator = serializers.DictField(required=False)
    note = StrictCharField(required=False, allow_blank=True, max_length=4000, default="")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(self.initial_data) - set(self.fields)) if isinstance(self.initial_data, dict) else []
        if unknown:
            raise serializers.ValidationError({name: ["unknown field"] for name in unknown})
        return attrs


class RunResumeApi(SseApiView):
    """POST /api/v1/flex/run.resume — resume a paused run or one awaiting a
    person (same service as /api/hitl/resume and the admin buttons)."""

    @extend_schema(request=RunResumeInputSerializer,
                   responses={202: OpenApiResponse(description='{"runId", "status", "planVersion", "streamUrl", '
                                                               '"lastEventId"}'),
                              (200, "text/event-stream"): OpenApiResponse(description="SSE of the resumed run")},
                   summary="Resume a run (409 on a stale plan version; one of concurrent resumes wins)")
    @idempotent
    def post(self, request: Request) -> Any:
        serializer = RunResumeInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        wants_stream = "text/event-stream" in request.headers.get("Accept", "")
        admission = admit_stream(request.user) if wants_stream else None
        try:
            result = services.run_resume(user=request.user, run_id=data["runId"],
                                expected_plan_version=data["expectedPlanVersion"], responses=data["responses"],
                                latest_response_id=data.get("latestResponseId"), operator=data.get("operator"),
                                note=data["note"])
        except BaseException:
            hub.withdraw(admission)
            raise
        run = result.run
        accepted = {"runId": run.id, "status": run.status, "planVersion": run.plan_version,
                    "streamUrl": stream_url(request, run.id), "lastEventId": event_id(run.id, result.last_seq)}
        if wants_stream:
            # From just before the resume's own events: hitl_resolved, plan_updated, …
            # An approval short of its quorum: the run still waits, so the
            # stream is the resume's own `hitl_update` frames.
            short = result.request is not None and not result.resolution
            response = sse_response(admission=admission, run_id=run.id, after_seq=result.first_seq - 1,
                                    user=request.user, stop_on_wait=True,
                                    until_seq=result.last_seq if short else None)
            # A retry with the same Idempotency-Key gets the JSON form (the stream URL to reconnect to).
            response.idempotent_record = (202, accepted)  # type: ignore[attr-defined]
            return response
        return Response(accepted, status=202)


# --- Operations: readiness and metrics (API.md, "Operations") ---------------

_FAILED_SENTENCES = {
    "database": "the database does not answer",
    "redis": "Redis (REDIS_URL) does not answer",
    "workers": "no worker heartbeat is fresh",
}


class ProbeApi(FlexApiView):
    """No authentication: probes and scrapers call it, and whatever `Accept`
    they send, they get the one format the endpoint has (never a 406); its
    errors (a 405) are JSON like every API error."""

    agent_allowed = True  # probes are not about roles
    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        return super().perform_content_negotiation(request, force=True)


class ReadyApi(ProbeApi):

    @extend_schema(
        operation_id="ready",
        summary="Readiness: database, Redis (when configured) and a fresh worker heartbeat",
        description="200 when the database answers, Redis answers (when `REDIS_URL` is set) and at least one "
                    "worker showed life within `FLEX_WORKER_STALE_SECONDS`. Otherwise 503 `not_ready` with "
                    "`details.failed` (names of the failed checks) and `details.checks`. `/api/health` stays "
                    "the liveness check.",
        auth=[],
        responses={
            200: inline_serializer("Ready", {"status": serializers.CharField(), "checks": serializers.DictField()}),
            503: OpenApiResponse(description="Not ready: `{code: not_ready, message, details: {failed, checks}}`"),
        },
    )
    def get(self, request: Request) -> HttpResponse:
        checks, failed = ops.readiness()
        if not failed:
            return JsonResponse({"status": "ready", "checks": checks}, headers={"Cache-Control": "no-cache"})
        message = "Not ready: " + "; ".join(_FAILED_SENTENCES[name] for name in failed) + "."
        return JsonResponse(error_body("not_ready", message, {"failed": failed, "checks": checks}), status=503,
                            headers={"Retry-After": "5", "Cache-Control": "no-cache"})


class PrometheusTextRenderer(BaseRenderer):
    """Lets content negotiation accept scrapers that ask for text only (the
    view builds its body itself)."""

    media_type = "text/plain"
    format = "txt"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        return data if isinstance(data, bytes) else str(data).encode()


class MetricsApi(ProbeApi):
    """Prometheus scrape endpoint; `FLEX_METRICS_TOKEN` (Bearer) when set."""
    renderer_classes = [PrometheusTextRenderer]

    @extend_schema(
        operation_id="metrics",
        summary="Prometheus metrics of every process of the deployment",
        description="Prometheus text format (multi-process: web and worker processes aggregated through "
                    "`PROMETHEUS_MULTIPROC_DIR`). Gauges that are facts of the database (`flex_hitl_pending`, "
                    "`flex_queue_depth`, `flex_agents_active`, `flex_workers_fresh`) are computed at scrape "
                    "time. When `FLEX_METRICS_TOKEN` is set, send `Authorization: Bearer <token>` (else 401 "
                    "`not_authenticated`).",
        auth=[],
        responses={(200, "text/plain"): OpenApiResponse(OpenApiTypes.STR, description="text/plain; version=0.0.4"),
                   (401, "application/json"): OpenApiResponse(
                       description="`not_authenticated` (FLEX_METRICS_TOKEN is set)")},
    )
    def get(self, request: Request) -> HttpResponse:
        expected = settings.FLEX_METRICS_TOKEN
        if expected:
            sent = request.META.get("HTTP_AUTHORIZATION", "")
            scheme, _, token = sent.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
                response = JsonResponse(error_body("not_authenticated", "Send Authorization: Bearer "
                                                   "<FLEX_METRICS_TOKEN> to read the metrics."), status=401)
                response["WWW-Authenticate"] = 'Bearer realm="metrics"'
                return response
        body, content_type = metrics.render()
        return HttpResponse(body, content_type=content_type)
