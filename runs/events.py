"""The run event log: what events are, how they leave the system.

Every lifecycle event is a `RunEvent` row written in the same transaction as
the state it describes, by `runs.transitions.run_transition`: its `seq` comes
from `Run.last_seq`, incremented by the conditional UPDATE that also takes the
run's row lock, so two writers of one run (a worker and an API call) queue
behind each other and `seq` never has a gap or a repeat. Publication to live
streams happens only after commit (`transaction.on_commit`), so no stream ever
sees an event that was rolled back.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction

from flexagents.dates import iso  # noqa: F401  (re-exported: runs.events.iso)
from runs.models import RunEvent

# Event types of API.md (the SSE catalogue).
START = "start"
PLAN_REQUESTED = "plan_requested"
PLAN_REJECTED = "plan_rejected"
PLAN_GENERATED = "plan_generated"
PLAN_UPDATED = "plan_updated"
NODE_START = "node_start"
NODE_COMPLETE = "node_complete"
NODE_ERROR = "node_error"
VALIDATION_ERROR = "validation_error"
POLICY_TRIGGERED = "policy_triggered"
HITL_REQUEST = "hitl_request"
HITL_UPDATE = "hitl_update"
HITL_RESOLVED = "hitl_resolved"
COMPLETE = "complete"
LOG = "log"

EVENT_TYPES = (START, PLAN_REQUESTED, PLAN_REJECTED, PLAN_GENERATED, PLAN_UPDATED, NODE_START, NODE_COMPLETE,
               NODE_ERROR, VALIDATION_ERROR, POLICY_TRIGGERED, HITL_REQUEST, HITL_UPDATE, HITL_RESOLVED, COMPLETE, LOG)


@dataclass
class PendingEvent:
    type: str
    payload: dict[str, Any] = field(default_factory=dict)
    node_id: str = ""


def event_id(run_id: str, seq: int) -> str:
    return f"{run_id}:{seq}"


def redact_payload(type_: str, payload: Any) -> Any:
    """An event payload as it may leave the system (SSE, events JSON, debug
    view): sensitive keys at any depth, credentials inside every string, and
    the `x-sensitive` fields of facet values (HITL payloads: `hitl.presenters`)."""
    from flexagents.redaction import redact, redact_facets
    from hitl.presenters import present_hitl_event
    from planner.facets import get_catalog

    if type_ in (HITL_REQUEST, HITL_UPDATE, HITL_RESOLVED):
        return present_hitl_event(type_, payload)
    out = redact(payload)
    if type_ == COMPLETE and isinstance(out, dict) and isinstance(out.get("output"), dict):
        # The output's top-level properties are facet names (API.md, TaskEnvelope).
        schemas = {name: facet.schema for name, facet in get_catalog().items()}
        out["output"] = redact_facets(out["output"], schemas)
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
    from runs import notify

    frames = [(row.run_id, row.seq, row.type, dumps(event_frame(row))) for row in rows]
    transaction.on_commit(lambda: notify.publish_frames(frames))
