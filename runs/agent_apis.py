"""The agent and task API (API.md, "Agents: capabilities outside the server").

- `POST /api/v1/flex/agents/register`, `POST /agents/{agentId}/heartbeat`,
  `GET /agents` (operators and support: every agent; an agent: its own);
- `POST /agents/{agentId}/tasks/claim` — a long poll that holds neither a
  thread nor a database connection while it waits (`TaskClaimApi.as_view`);
- `POST /tasks/{taskId}/heartbeat|complete|fail|clarify` — the lease
  holder's calls, fenced by its lease token (`409 lease_lost`);
- `GET /tasks` — the tasks the caller may act on.

Views are thin: parse, call one service (`planner.agents`,
`runs.engine.tasks`), serialize.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import django_filters
from asgiref.sync import markcoroutinefunction, sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from flexagents.dates import iso_or_none
from flexagents.errors import Forbidden, ValidationFailed, error_body
from flexagents.idempotency import idempotent
from flexagents.fields import StrictCharField, StrictIntegerField
from flexagents.pagination import KeysetCursorPagination
from flexagents.redaction import FREE_TEXT_KEYS, redact
from flexagents.roles import user_is_agent, user_may_register_agents, user_may_view_all_runs
from planner import agents as agent_services
from planner.types import CAPABILITY_KINDS
from runs import notify
from runs.apis import FlexApiView
from runs.engine import tasks as task_services
from runs.hitl_apis import StrictSerializer
from runs.models import Task, TaskStatus
from runs.task_wait import hub

logger = logging.getLogger("runs.agent_apis")

MAX_WAIT_SECONDS = 30
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:\-]*$"


# --- bodies --------------------------------------------------------------------------

def text(**kwargs: Any) -> StrictCharField:
    """A string taken as sent: no trimming, so a schema-valid value (`minLength`
    counts spaces) is never refused as blank, and a lease token is exact."""
    return StrictCharField(trim_whitespace=False, **kwargs)


class CapabilityInSerializer(StrictSerializer):
    capabilityId = serializers.RegexField(ID_PATTERN, max_length=200)
    displayName = text(required=False, allow_blank=True, max_length=200, default="")
    description = text(required=False, allow_blank=True, max_length=4000, default="")
    kind = serializers.ChoiceField(choices=CAPABILITY_KINDS)
    agentType = serializers.ChoiceField(choices=("ai", "human", "service"), required=False, default="ai")
    inputFacets = serializers.ListField(child=text(max_length=120), required=False, default=list,
                                        max_length=50)
    optionalInputFacets = serializers.ListField(child=text(max_length=120), required=False,
                                                default=list, max_length=50)
    outputFacets = serializers.ListField(child=text(max_length=120), min_length=1, max_length=50)
    version = text(required=False, allow_blank=True, max_length=40, default="")


class AgentRegisterSerializer(StrictSerializer):
    agentId = serializers.RegexField(ID_PATTERN, max_length=120)
    displayName = text(required=False, allow_blank=True, max_length=200, default="")
    heartbeatSeconds = StrictIntegerField(min_value=1, max_value=3600, required=False, default=15)
    maxConcurrency = StrictIntegerField(min_value=1, max_value=1000, required=False, default=1)
    capabilities = CapabilityInSerializer(many=True, allow_empty=True, max_length=100)


class EmptySerializer(StrictSerializer):
    pass


class ClaimSerializer(StrictSerializer):
    waitSeconds = StrictIntegerField(min_value=0, max_value=MAX_WAIT_SECONDS, required=False, default=0)


class LeaseSerializer(StrictSerializer):
    leaseToken = text(max_length=64)


class CompleteSerializer(LeaseSerializer):
    output = serializers.DictField()
    usage = serializers.DictField(required=False, allow_null=True, default=None)


class ErrorInSerializer(StrictSerializer):
    code = text(max_length=80)
    message = text(max_length=4000, allow_blank=True)


class FailSerializer(LeaseSerializer):
    error = ErrorInSerializer()
    retryable = serializers.BooleanField()


class ClarifyOptionSerializer(StrictSerializer):
    id = text(max_length=120)
    label = text(max_length=500)
    description = text(max_length=2000, required=False, allow_blank=True)


class ClarifySerializer(LeaseSerializer):
    question = text(max_length=4000)
    options = ClarifyOptionSerializer(many=True, required=False, default=list, max_length=20)
    allowFreeForm = serializers.BooleanField(required=False, default=True)


def parsed(serializer_class: type[serializers.Serializer], data: Any) -> dict[str, Any]:
    serializer = serializer_class(data={} if data is None else data)
    serializer.is_valid(raise_exception=True)
    validated: dict[str, Any] = dict(serializer.validated_data)
    return validated


def _dates(body: dict[str, Any]) -> dict[str, Any]:
    return {key: iso_or_none(value) if hasattr(value, "isoformat") else value for key, value in body.items()}


def claimed_body(claimed: task_services.ClaimedTask) -> dict[str, Any]:
    """The claim's 200 body: the task with its lease and the node's bundle (the
    real values, as an in-process capability gets them: docs/agents.md)."""
    task = _dates(task_services.task_payload(claimed.task, bundle=claimed.bundle, with_lease=True))
    return {"task": task}


def _agent_body(agent: Any) -> dict[str, Any]:
    return _dates(agent_services.agent_payload(agent))


class AgentApiView(FlexApiView):
    agent_allowed = True


# --- agents --------------------------------------------------------------------------

class AgentRegisterApi(AgentApiView):
    @extend_schema(request=AgentRegisterSerializer, summary="Register (or re-register) an agent and its capabilities")
    def post(self, request: Request) -> Response:
        if not user_may_register_agents(request.user):
            raise Forbidden("Your role may not register agents.")
        body = parsed(AgentRegisterSerializer, request.data)
        agent = agent_services.agent_register(
            user=request.user, agent_id=body["agentId"], display_name=body["displayName"],
            heartbeat_seconds=body["heartbeatSeconds"], max_concurrency=body["maxConcurrency"],
            capabilities=[dict(item) for item in body["capabilities"]])
        return Response(_agent_body(agent))


class AgentHeartbeatApi(AgentApiView):
    @extend_schema(request=EmptySerializer, summary="The agent is alive")
    def post(self, request: Request, agent_id: str) -> Response:
        parsed(EmptySerializer, request.data)
        agent = agent_services.agent_heartbeat(user=request.user, agent_id=agent_id)
        return Response({"agentId": agent.id, "status": agent.status, "heartbeatSeconds": agent.heartbeat_seconds})


class AgentListApi(AgentApiView):
    @extend_schema(summary="Registered agents (operators and support: all; an agent's owner: its own)")
    def get(self, request: Request) -> Response:
        everyone = user_may_view_all_runs(request.user) or request.user.is_superuser
        if not everyone and not user_is_agent(request.user):
            raise Forbidden("Your role may not list agents.")
        rows = agent_services.agents_list(user=request.user, all_agents=everyone)
        return Response({"agents": [_agent_body(agent) for agent in rows]})


# --- claim (long poll) -----------------------------------------------------------------

_close_after = notify.closing_connection  # a waiting claim must not hold a connection


@_close_after
def _claim_sync(user: Any, agent_id: str) -> dict[str, Any] | None:
    claimed = task_services.task_claim_for_agent(user=user, agent_id=agent_id)
    return None if claimed is None else claimed_body(claimed)


_claim = sync_to_async(_claim_sync, thread_sensitive=False)


class TaskClaimApi(AgentApiView):
    """`POST /agents/{agentId}/tasks/claim {"waitSeconds": 0..30}`.

    The DRF part (authentication, body, access, a first claim) runs on the
    shared executor; when nothing is claimable and `waitSeconds` > 0, the
    request waits on the event loop (`runs.task_wait.hub`) — no thread, no
    database connection — and tries again each time it is woken, then 204.
    """

    @extend_schema(request=ClaimSerializer, summary="Claim a task (long poll up to waitSeconds)")
    def post(self, request: Request, agent_id: str) -> Response:
        body = parsed(ClaimSerializer, request.data)
        task_services.agent_for_user(user=request.user, agent_id=agent_id)
        claimed = task_services.task_claim_for_agent(user=request.user, agent_id=agent_id)
        if claimed is not None:
            return Response(claimed_body(claimed))
        response = Response(status=204)
        if body["waitSeconds"] > 0:
            response.flex_wait = (request.user, agent_id, body["waitSeconds"])  # type: ignore[attr-defined]
        return response

    @classmethod
    def as_view(cls, **initkwargs: Any) -> Any:
        sync_view = super().as_view(**initkwargs)

        @_close_after
        def first_pass(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            response = sync_view(request, *args, **kwargs)
            if hasattr(response, "render") and not getattr(response, "is_rendered", True):
                response.render()
            return response

        run_first_pass = sync_to_async(first_pass, thread_sensitive=False)

        async def view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            response: HttpResponse = await run_first_pass(request, *args, **kwargs)
            wait = getattr(response, "flex_wait", None)
            if wait is None:
                return response
            user, agent_id, seconds = wait
            return await long_poll(user=user, agent_id=agent_id, seconds=seconds)

        markcoroutinefunction(view)
        view.cls = cls  # type: ignore[attr-defined]  # drf-spectacular and DRF's introspection read these
        view.initkwargs = getattr(sync_view, "initkwargs", initkwargs)  # type: ignore[attr-defined]
        view.csrf_exempt = True  # type: ignore[attr-defined]  # DRF's session authentication checks CSRF itself
        return view


async def long_poll(*, user: Any, agent_id: str, seconds: float) -> HttpResponse:
    """Wait up to `seconds` for a claimable task: 200 with it, or 204."""
    hub.ensure_background()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        event = hub.register()  # before the attempt: a task offered meanwhile wakes us
        try:
            body = await _claim(user, agent_id)
            if body is not None:
                return JsonResponse(body)
            remaining = deadline - loop.time()
            if remaining <= 0:
                return HttpResponse(status=204)
            try:
                await asyncio.wait_for(event.wait(), timeout=remaining)
            except asyncio.TimeoutError:
                pass
        finally:
            hub.unregister(event)


# --- the holder's calls --------------------------------------------------------------

class TaskHeartbeatApi(AgentApiView):
    @extend_schema(request=LeaseSerializer, summary="Extend a claimed task's lease")
    def post(self, request: Request, task_id: str) -> Response:
        body = parsed(LeaseSerializer, request.data)
        task = task_services.task_heartbeat(user=request.user, task_id=task_id, lease_token=body["leaseToken"])
        return Response({"taskId": task.id, "leaseExpiresAt": iso_or_none(task.lease_expires_at)})


class TaskCompleteApi(AgentApiView):
    @extend_schema(request=CompleteSerializer, summary="Complete a claimed task with its output facets")
    @idempotent
    def post(self, request: Request, task_id: str) -> Response:
        body = parsed(CompleteSerializer, request.data)
        result = task_services.task_complete(user=request.user, task_id=task_id, lease_token=body["leaseToken"],
                                             output=body["output"], usage=body["usage"])
        if not result.accepted:
            # Not raised: the refused output was committed as a counted
            # attempt, which an Idempotency-Key must keep (and replay).
            refused = Response(error_body(ValidationFailed.code,
                                          "The output fails the node's contract; the attempt is counted.",
                                          {"errors": result.errors}), status=422)
            refused.idempotent_committed = True  # type: ignore[attr-defined]
            return refused
        return Response({"taskId": task_id, "status": TaskStatus.COMPLETED})


class TaskFailApi(AgentApiView):
    @extend_schema(request=FailSerializer, summary="Give up a claimed task (retryable or not)")
    def post(self, request: Request, task_id: str) -> Response:
        body = parsed(FailSerializer, request.data)
        task_services.task_fail(user=request.user, task_id=task_id, lease_token=body["leaseToken"],
                                error=dict(body["error"]), retryable=body["retryable"])
        return Response({"taskId": task_id, "status": TaskStatus.FAILED})


class TaskClarifyApi(AgentApiView):
    @extend_schema(request=ClarifySerializer, summary="Ask a person a question about a claimed task")
    def post(self, request: Request, task_id: str) -> Response:
        body = parsed(ClarifySerializer, request.data)
        request_id = task_services.task_clarify(
            user=request.user, task_id=task_id, lease_token=body["leaseToken"], question=body["question"],
            options=[dict(o) for o in body["options"]], allow_free_form=body["allowFreeForm"])
        return Response({"taskId": task_id, "status": TaskStatus.CLARIFY, "requestId": request_id})


# --- list ----------------------------------------------------------------------------

class TaskFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=TaskStatus.choices, field_name="status")
    capabilityId = django_filters.CharFilter(field_name="capability_id", max_length=200)
    runId = django_filters.CharFilter(field_name="run_id", max_length=40)
    agentType = django_filters.CharFilter(field_name="agent_type", max_length=20)

    class Meta:
        model = Task
        fields: list[str] = []


class TaskListPagination(KeysetCursorPagination):
    ordering = ("-created_at", "-id")
    page_size = 50
    max_page_size = 200
    results_key = "tasks"


def task_list_item(task: Task) -> dict[str, Any]:
    """A list item, redacted: no lease token, no bundle; the objective (the
    caller's text) masked like in run lists."""
    body = _dates(task_services.task_payload(task))
    body["objective"] = task.run.objective
    out: dict[str, Any] = redact(body, text_keys=FREE_TEXT_KEYS)
    return out


class TaskListApi(AgentApiView):
    @extend_schema(summary="Tasks you may act on (operators: all; an agent: its capabilities')",
                   parameters=[OpenApiParameter(n, str, required=False)
                               for n in ("status", "capabilityId", "runId", "agentType", "cursor", "limit")])
    def get(self, request: Request) -> Response:
        params = request.query_params.copy()
        if "status" in params:
            params.setlist("status", [s for v in params.getlist("status") for s in v.split(",") if s])
        filterset = TaskFilter(params, queryset=task_services.tasks_visible_to(request.user).select_related("run"))
        if not filterset.is_valid():
            errors = [{"path": f"/{name}", "message": str(messages[0])} for name, messages in filterset.errors.items()]
            raise ValidationFailed(f"The query parameter(s) {', '.join(e['path'][1:] for e in errors)} are not valid.",
                                   details={"errors": errors})
        paginator = TaskListPagination()
        rows = paginator.paginate_queryset(filterset.qs, request)
        data: dict[str, Any] = paginator.get_paginated_response([task_list_item(t) for t in rows]).data
        return Response(data)

