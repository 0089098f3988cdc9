"""The run event log: what events are, how they leave the system.

Every lifecycle event is a `RunEvent` row written in the same transaction as
the state it describes, by `runs.transitions.run_transition`: its `seq` comes
from `Run.last_seq`, incremented by the conditional UPDATE that also takes the
run's row lock, so two writers of one run (a worker and an API call) queue
behind each other and `seq` never has a gap or a repeat. Publication to live
streams happens only after commit (`transaction.on_commit`), so no stream ever
sees an event that was rolled back.
"""
# No `from __future__ import annotations`: the payloads' `NotRequired` keys
# must be real annotations for `__optional_keys__` (the catalogue test).
import json
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, NotRequired, TypedDict

from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction

from flexagents.dates import iso  # noqa: F401  (re-exported: runs.events.iso)
from flexagents.redaction import redact, redact_facets
from hitl.presenters import HitlRequestPayload, HitlResponsePayload, present_hitl_event
from planner.facets import get_catalog
from runs import notify
from runs.models import RunEvent

# Event types of API.md (the SSE catalogue, docs/events.md).
START = "start"
PLAN_REQUESTED = "plan_requested"
PLAN_REJECTED = "plan_rejected"
PLAN_GENERATED = "plan_generated"
PLAN_UPDATED = "plan_updated"
NODE_START = "node_start"
NODE_DISPATCHED = "node_dispatched"
NODE_COMPLETE = "node_complete"
NODE_ERROR = "node_error"
VALIDATION_ERROR = "validation_error"
POLICY_TRIGGERED = "policy_triggered"
HITL_REQUEST = "hitl_request"
HITL_UPDATE = "hitl_update"
HITL_RESOLVED = "hitl_resolved"
HITL_ESCALATED = "hitl_escalated"
COMPLETE = "complete"
LOG = "log"
GOAL_EVALUATED = "goal_evaluated"

EVENT_TYPES = (START, PLAN_REQUESTED, PLAN_REJECTED, PLAN_GENERATED, PLAN_UPDATED, NODE_DISPATCHED, NODE_START,
               NODE_COMPLETE, NODE_ERROR, VALIDATION_ERROR, POLICY_TRIGGERED, HITL_REQUEST, HITL_UPDATE, HITL_RESOLVED,
               HITL_ESCALATED, COMPLETE, LOG, GOAL_EVALUATED)


@dataclass(frozen=True)
class PendingEvent:
    """An event not yet written. Made only by the `event_*` builders below."""

    type: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    node_id: str = ""


# --- payloads (the contract of docs/events.md; a test keeps the two equal) -----

class StartPayload(TypedDict):
    runId: str
    threadId: str | None
    status: str
    correlationId: str | None


class PlanRequestedPayload(TypedDict):
    attempt: int
    capabilities: list[str]


class PlanRejectedPayload(TypedDict):
    attempt: int
    diagnostics: list[dict[str, Any]]


class PlanGeneratedPayload(TypedDict):
    version: int
    nodes: list[dict[str, Any]]
    edges: list[dict[str, Any]]
    metadata: dict[str, Any]


class PlanUpdatedPayload(TypedDict):
    previousVersion: int
    version: int
    reason: str
    trigger: dict[str, Any]
    nodes: list[dict[str, Any]]
    # A replan (reason "replan"): how the graph changed.
    addedNodes: NotRequired[list[str]]
    removedNodes: NotRequired[list[str]]
    keptNodes: NotRequired[list[str]]


class GoalEvaluatedPayload(TypedDict):
    goalId: str
    met: bool
    attempt: int
    facets: list[str]


class NodeDispatchedPayload(TypedDict):
    nodeId: str
    capabilityId: str
    attempt: int
    taskId: str


class NodeStartPayload(TypedDict):
    nodeId: str
    capabilityId: str
    attempt: int
    # A task claimed by an agent (or a person: agentId null, claimedBy).
    agentId: NotRequired[str | None]
    taskId: NotRequired[str]
    claimedBy: NotRequired[str]


class UsagePayload(TypedDict):
    """A language model's usage in one node attempt (docs/models.md)."""

    model: str
    promptTokens: int
    completionTokens: int
    callMs: NotRequired[float]


class NodeCompletePayload(TypedDict):
    nodeId: str
    capabilityId: str
    attempt: int
    outputFacets: list[str]
    durationMs: float | None
    # Only when the attempt called a language model.
    usage: NotRequired[UsagePayload]


class NodeErrorPayload(TypedDict):
    nodeId: str
    capabilityId: str
    attempt: int
    error: dict[str, Any] | None
    willRetry: bool
    usage: NotRequired[UsagePayload]


class ValidationErrorPayload(TypedDict):
    scope: Literal["node", "output"]
    nodeId: NotRequired[str]
    attempt: int
    errors: list[dict[str, Any]]
    usage: NotRequired[UsagePayload]


class PolicyTriggeredPayload(TypedDict):
    policyId: str | None
    trigger: str
    action: dict[str, Any]
    nodeId: NotRequired[str]
    # A HITL decision's follow-up (`approveAction` / `rejectAction`).
    requestId: NotRequired[str]
    resolution: NotRequired[str]
    followUp: NotRequired[str]


class HitlUpdatePayload(TypedDict):
    requestId: str
    response: HitlResponsePayload
    responseCount: int


class HitlResolvedPayload(TypedDict):
    requestId: str
    resolution: str
    reason: NotRequired[str | None]
    responses: list[HitlResponsePayload]
    # A deadline passed (`resolution` timed_out): what the system applied.
    appliedAction: NotRequired[dict[str, Any]]


class HitlEscalatedPayload(TypedDict):
    requestId: str
    urgency: str
    assignees: dict[str, list[str]]
    escalateTo: dict[str, list[str]]
    escalatedAt: str | None


class CompletePayload(TypedDict):
    status: Literal["completed", "failed", "cancelled"]
    output: NotRequired[dict[str, Any]]
    error: NotRequired[dict[str, Any]]
    reason: NotRequired[str | None]
    requestId: NotRequired[str]


class LogPayload(TypedDict):
    level: str
    message: str
    event: NotRequired[str]
    payload: NotRequired[dict[str, Any]]


# Event type -> its payload's TypedDict.
PAYLOADS: dict[str, type] = {
    START: StartPayload, PLAN_REQUESTED: PlanRequestedPayload, PLAN_REJECTED: PlanRejectedPayload,
    PLAN_GENERATED: PlanGeneratedPayload, PLAN_UPDATED: PlanUpdatedPayload, NODE_START: NodeStartPayload,
    NODE_DISPATCHED: NodeDispatchedPayload,
    NODE_COMPLETE: NodeCompletePayload, NODE_ERROR: NodeErrorPayload, VALIDATION_ERROR: ValidationErrorPayload,
    POLICY_TRIGGERED: PolicyTriggeredPayload, HITL_REQUEST: HitlRequestPayload, HITL_UPDATE: HitlUpdatePayload,
    HITL_RESOLVED: HitlResolvedPayload, HITL_ESCALATED: HitlEscalatedPayload, COMPLETE: CompletePayload, LOG: LogPayload,
    GOAL_EVALUATED: GoalEvaluatedPayload,
}


# --- builders: the only way events are made ------------------------------------

def event_start(*, run_id: str, thread_id: str | None, status: str, correlation_id: str | None) -> PendingEvent:
    payload: StartPayload = {"runId": run_id, "threadId": thread_id, "status": status,
                             "correlationId": correlation_id}
    return PendingEvent(START, payload)


def event_plan_requested(*, attempt: int, capabilities: list[str]) -> PendingEvent:
    payload: PlanRequestedPayload = {"attempt": attempt, "capabilities": capabilities}
    return PendingEvent(PLAN_REQUESTED, payload)


def event_plan_rejected(*, attempt: int, diagnostics: list[dict[str, Any]]) -> PendingEvent:
    payload: PlanRejectedPayload = {"attempt": attempt, "diagnostics": diagnostics}
    return PendingEvent(PLAN_REJECTED, payload)


def event_plan_generated(*, version: int, nodes: list[dict[str, Any]], edges: list[dict[str, Any]],
                         metadata: dict[str, Any]) -> PendingEvent:
    payload: PlanGeneratedPayload = {"version": version, "nodes": nodes, "edges": edges, "metadata": metadata}
    return PendingEvent(PLAN_GENERATED, payload)


def event_plan_updated(*, previous_version: int, version: int, reason: str, trigger: dict[str, Any],
                       nodes: list[dict[str, Any]], node_id: str = "", added: list[str] | None = None,
                       removed: list[str] | None = None, kept: list[str] | None = None) -> PendingEvent:
    """A new plan version; a replan also says which nodes it added, removed and kept."""
    payload: PlanUpdatedPayload = {"previousVersion": previous_version, "version": version, "reason": reason,
                                   "trigger": trigger, "nodes": nodes}
    if added is not None:
        payload["addedNodes"] = added
        payload["removedNodes"] = removed or []
        payload["keptNodes"] = kept or []
    return PendingEvent(PLAN_UPDATED, payload, node_id)


def event_goal_evaluated(*, goal_id: str, met: bool, attempt: int, facets: list[str]) -> PendingEvent:
    """A goal of `policies.planner.goals` was checked (`attempt` 1 = the first plan's result)."""
    payload: GoalEvaluatedPayload = {"goalId": goal_id, "met": met, "attempt": attempt, "facets": facets}
    return PendingEvent(GOAL_EVALUATED, payload)


def event_node_start(*, node_id: str, capability_id: str, attempt: int, task_id: str | None = None,
                     agent_id: str | None = None, claimed_by: str | None = None) -> PendingEvent:
    """A node's attempt starts: in a worker, or (`task_id`) when an agent or a
    person claims its task."""
    payload: NodeStartPayload = {"nodeId": node_id, "capabilityId": capability_id, "attempt": attempt}
    if task_id is not None:
        payload["taskId"] = task_id
        payload["agentId"] = agent_id
        if claimed_by is not None:
            payload["claimedBy"] = claimed_by
    return PendingEvent(NODE_START, payload, node_id)


def event_node_dispatched(*, node_id: str, capability_id: str, attempt: int, task_id: str) -> PendingEvent:
    """A node of an external capability was committed as a task (offered to agents or people)."""
    payload: NodeDispatchedPayload = {"nodeId": node_id, "capabilityId": capability_id, "attempt": attempt,
                                      "taskId": task_id}
    return PendingEvent(NODE_DISPATCHED, payload, node_id)
def usage_payload(usage: Mapping[str, Any]) -> UsagePayload:
    payload: UsagePayload = {"model": str(usage.get("model") or ""), "promptTokens": int(usage.get("promptTokens") or 0),
                             "completionTokens": int(usage.get("completionTokens") or 0)}
    if usage.get("callMs") is not None:
        payload["callMs"] = float(usage["callMs"])
    return payload


def event_node_complete(*, node_id: str, capability_id: str, attempt: int, output_facets: list[str],
                        duration_ms: float | None, usage: Mapping[str, Any] | None = None) -> PendingEvent:
    payload: NodeCompletePayload = {"nodeId": node_id, "capabilityId": capability_id, "attempt": attempt,
                                    "outputFacets": output_facets, "durationMs": duration_ms}
    if usage:
        payload["usage"] = usage_payload(usage)
    return PendingEvent(NODE_COMPLETE, payload, node_id)


def event_node_error(*, node_id: str, capability_id: str, attempt: int, error: dict[str, Any] | None,
                     will_retry: bool, usage: Mapping[str, Any] | None = None) -> PendingEvent:
    payload: NodeErrorPayload = {"nodeId": node_id, "capabilityId": capability_id, "attempt": attempt,
                                 "error": error, "willRetry": will_retry}
    if usage:
        payload["usage"] = usage_payload(usage)
    return PendingEvent(NODE_ERROR, payload, node_id)


def event_validation_error(*, attempt: int, errors: list[dict[str, Any]], node_id: str | None = None,
                           usage: Mapping[str, Any] | None = None) -> PendingEvent:
    """A node's output (`node_id` given) or the composed output broke its contract."""
    if node_id is None:
        output: ValidationErrorPayload = {"scope": "output", "attempt": attempt, "errors": errors}
        return PendingEvent(VALIDATION_ERROR, output)
    payload: ValidationErrorPayload = {"scope": "node", "nodeId": node_id, "attempt": attempt, "errors": errors}
    if usage:
        payload["usage"] = usage_payload(usage)
    return PendingEvent(VALIDATION_ERROR, payload, node_id)


def event_policy_triggered(*, policy_id: str | None, trigger: str, action: dict[str, Any], node_id: str = "",
                           request_id: str | None = None, resolution: str | None = None,
                           follow_up: str | None = None) -> PendingEvent:
    """A runtime policy fired; with `request_id`, the follow-up of a HITL
    decision (`resolution`, `follow_up`: approveAction | rejectAction)."""
    payload: PolicyTriggeredPayload = {"policyId": policy_id, "trigger": trigger, "action": action}
    if request_id is not None:
        payload["requestId"] = request_id
        payload["resolution"] = resolution or ""
        payload["followUp"] = follow_up or ""
    if node_id:
        payload["nodeId"] = node_id
    return PendingEvent(POLICY_TRIGGERED, payload, node_id)


def event_hitl_request(*, request: HitlRequestPayload, node_id: str) -> PendingEvent:
    """`request` is the presenter's payload (`hitl.presenters.hitl_request_payload`)."""
    return PendingEvent(HITL_REQUEST, request, node_id)


def event_hitl_update(*, request_id: str, response: HitlResponsePayload, response_count: int,
                      node_id: str) -> PendingEvent:
    payload: HitlUpdatePayload = {"requestId": request_id, "response": response, "responseCount": response_count}
    return PendingEvent(HITL_UPDATE, payload, node_id)


def event_hitl_resolved(*, request_id: str, resolution: str, responses: list[HitlResponsePayload],
                        node_id: str = "", removed_reason: str | None = None,
                        applied_action: dict[str, Any] | None = None) -> PendingEvent:
    """A request was resolved, or removed (`resolution` removed, with its
    `reason`: the run is being cancelled), or its deadline passed
    (`resolution` timed_out, with the `appliedAction` the system applied)."""
    payload: HitlResolvedPayload = {"requestId": request_id, "resolution": resolution, "responses": responses}
    if applied_action is not None:
        payload["appliedAction"] = applied_action
    if resolution == "removed":
        payload = {"requestId": request_id, "resolution": resolution, "reason": removed_reason,
                   "responses": responses}
    return PendingEvent(HITL_RESOLVED, payload, node_id)


def event_hitl_escalated(*, request_id: str, urgency: str, assignees: dict[str, list[str]],
                         escalate_to: dict[str, list[str]], escalated_at: str | None,
                         node_id: str = "") -> PendingEvent:
    """A pending request reached its `escalateAt`: urgency high, `escalateTo`
    added to its assignees (who are notified)."""
    payload: HitlEscalatedPayload = {"requestId": request_id, "urgency": urgency, "assignees": assignees,
                                     "escalateTo": escalate_to, "escalatedAt": escalated_at}
    return PendingEvent(HITL_ESCALATED, payload, node_id)


def event_complete(*, status: Literal["completed", "failed", "cancelled"], output: dict[str, Any] | None = None,
                   error: dict[str, Any] | None = None, reason: str | None = None,
                   request_id: str | None = None) -> PendingEvent:
    """The run is terminal: `output` when completed, `error` when failed,
    `reason` (and the removed request's id) when cancelled."""
    payload: CompletePayload = {"status": status}
    if status == "completed":
        payload["output"] = output or {}
    elif status == "failed":
        payload["error"] = error or {}
    else:
        payload["reason"] = reason
        if request_id is not None:
            payload["requestId"] = request_id
    return PendingEvent(COMPLETE, payload)


def event_log(*, level: str, message: str, node_id: str = "", event: str | None = None,
              payload: dict[str, Any] | None = None) -> PendingEvent:
    """An informational line; an `emit` policy adds the event it names and its payload."""
    line: LogPayload = {"level": level, "message": message}
    if event is not None:
        line["event"] = event
        line["payload"] = payload or {}
    return PendingEvent(LOG, line, node_id)


def event_id(run_id: str, seq: int) -> str:
    return f"{run_id}:{seq}"


def redact_payload(type_: str, payload: Any) -> Any:
    """An event payload as it may leave the system (SSE, events JSON, debug
    view): sensitive keys at any depth, credentials inside every string, and
    the `x-sensitive` fields of facet values (HITL payloads: `hitl.presenters`)."""
    if type_ in (HITL_REQUEST, HITL_UPDATE, HITL_RESOLVED):
        return present_hitl_event(type_, payload)
    out = redact(payload)
    if type_ == COMPLETE and isinstance(out, dict) and isinstance(out.get("output"), dict):
        # The output's top-level properties are facet names (API.md, TaskEnvelope).
        schemas = {name: facet.schema for name, facet in get_catalog().items()}
        out["output"] = redact_facets(out["output"], schemas)
    if type_ == PLAN_UPDATED and isinstance(out, dict):
        out["trigger"] = redact_trigger(out.get("trigger"))
    return out


def redact_trigger(trigger: Any) -> Any:
    """A plan version's trigger as people see it: a goal replan's `values`
    are facet values (their `x-sensitive` fields redacted)."""
    out = redact(trigger)
    if isinstance(out, dict) and isinstance(out.get("values"), dict):
        schemas = {name: facet.schema for name, facet in get_catalog().items()}
        out["values"] = redact_facets(out["values"], schemas)
    return out


def event_frame(event: RunEvent) -> dict[str, Any]:
    """The JSON `data` of an SSE frame (API.md, Events), redacted."""
    frame: dict[str, Any] = {
        "type": event.type,
        "id": event_id(event.run_id, event.seq),
        "seq": event.seq,
        "timestamp": iso(event.created_at),
        "runId": event.run_id,
        "planVersion": event.plan_version,
    }
    if event.node_id:
        frame["nodeId"] = event.node_id
    frame["payload"] = redact_payload(event.type, event.payload)
    return frame


def dumps(value: Any) -> str:
    return json.dumps(value, cls=DjangoJSONEncoder, separators=(",", ":"))


def publish_on_commit(rows: list[RunEvent]) -> None:
    """The one place that hands events to live streams, after commit only."""
    transaction.on_commit(lambda: _publish(rows))


def _publish(rows: list[RunEvent]) -> None:
    """After commit: frames (JSON, redacted) are built only when a local
    listener or Redis will take them."""
    if rows and notify.frames_wanted(rows[0].run_id):
        notify.publish_frames([(row.run_id, row.seq, row.type, dumps(event_frame(row))) for row in rows])
    notify.events_committed(rows)  # the metrics count what was committed
