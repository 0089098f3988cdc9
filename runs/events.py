"""The run event log: how events are numbered, written and published.

Every lifecycle event is a `RunEvent` row written in the same transaction as
the state it describes. Its `seq` comes from `Run.last_seq`, incremented by a
conditional UPDATE that also takes the run's row lock, so two writers of one
run (a worker and an API call) queue behind each other and `seq` never has a
gap or a repeat. Publication to live streams happens only after commit
(`transaction.on_commit`), so no stream ever sees an event that was rolled back.
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any, Iterable

from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from flexagents.dates import iso  # noqa: F401  (re-exported: runs.events.iso)
from runs.models import RUN_TRANSITIONS, Run, RunEvent

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


class Fenced(Exception):
    """The conditional update matched no row: the caller lost its lease, or the
    run left the status the caller expected (cancelled, resumed, …)."""


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


def append_events(
    *,
    run_id: str,
    events: list[PendingEvent],
    plan_version: int,
    lease_token: int | None = None,
    statuses: Iterable[str] | None = None,
    run_updates: dict[str, Any] | None = None,
) -> list[RunEvent]:
    """Number and write `events` for a run, in the caller's transaction.

    1. One conditional UPDATE of the run row: bumps `last_seq` by the number of
       events, applies `run_updates`, and — the fence — matches only while the
       run still has `lease_token` and one of `statuses`. Taking the row lock
       here serialises every writer of the run until commit.
    2. Numbers the events from the `last_seq` that UPDATE returned (ours until
       commit) and inserts them.
    3. Schedules publication for after the commit.

    Raises `Fenced` when the condition matched nothing; the caller's
    transaction must then roll back.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("append_events must run inside transaction.atomic()")
    now = timezone.now()
    updates = dict(run_updates or {})
    updates["updated_at"] = now
    if "status" in updates:
        statuses = allowed_sources(updates["status"], statuses)
    last_seq = _bump_run(run_id=run_id, count=len(events), lease_token=lease_token,
                         statuses=list(statuses) if statuses is not None else None, updates=updates)
    if last_seq is None:
        raise Fenced(run_id)
    if not events:
        return []
    first = last_seq - len(events) + 1
    rows = [
        RunEvent(run_id=run_id, seq=first + i, type=e.type, node_id=e.node_id, plan_version=plan_version,
                 payload=e.payload, created_at=now)
        for i, e in enumerate(events)
    ]
    RunEvent.objects.bulk_create(rows)
    publish_on_commit(rows)
    return rows


def allowed_sources(to_status: str, statuses: Iterable[str] | None) -> list[str]:
    """The statuses among `statuses` (None: any) from which the transition
    table allows a move to `to_status` (staying put is not a move). Every
    status change goes through `append_events`, so this is where the table is
    enforced: a forbidden move matches no row and raises `Fenced`, changing
    nothing."""
    sources = RUN_TRANSITIONS.keys() if statuses is None else statuses
    return [s for s in sources if s == to_status or to_status in RUN_TRANSITIONS.get(s, frozenset())]


def _bump_run(*, run_id: str, count: int, lease_token: int | None, statuses: list[str] | None,
              updates: dict[str, Any]) -> int | None:
    """The fenced UPDATE of the run row; returns the new `last_seq`, or None
    when the fence matched nothing.

    One statement with `RETURNING` on the hot path (it runs once per node):
    the row lock it takes is held until commit, so the returned value is ours.
    The ORM has no UPDATE … RETURNING, hence the SQL; values still go through
    each field's own `get_db_prep_save` (JSON, datetimes).
    """
    connection = transaction.get_connection()
    if (connection.vendor == "sqlite" and sqlite3.sqlite_version_info < (3, 35)) or any(
            hasattr(value, "resolve_expression") for value in updates.values()):
        return _bump_run_orm(run_id=run_id, count=count, lease_token=lease_token, statuses=statuses,
                             updates=updates)
    qn = connection.ops.quote_name
    assignments, params = [], []
    for name, value in updates.items():
        model_field = Run._meta.get_field(name)
        assignments.append(f"{qn(model_field.column)} = %s")
        params.append(model_field.get_db_prep_save(value, connection))
    assignments.append(f"{qn('last_seq')} = {qn('last_seq')} + %s")
    params.append(count)
    where, where_params = [f"{qn('id')} = %s"], [run_id]
    if lease_token is not None:
        where.append(f"{qn('lease_token')} = %s")
        where_params.append(lease_token)
    if statuses is not None:
        if not statuses:
            return None
        where.append(f"{qn('status')} IN ({', '.join(['%s'] * len(statuses))})")
        where_params.extend(str(status) for status in statuses)
    sql = (f"UPDATE {qn(Run._meta.db_table)} SET {', '.join(assignments)} "
           f"WHERE {' AND '.join(where)} RETURNING {qn('last_seq')}")
    with connection.cursor() as cursor:
        cursor.execute(sql, params + where_params)
        row = cursor.fetchone()
    return None if row is None else int(row[0])


def _bump_run_orm(*, run_id: str, count: int, lease_token: int | None, statuses: list[str] | None,
                  updates: dict[str, Any]) -> int | None:
    """The same with two statements, for SQLite older than 3.35 (no RETURNING)."""
    condition = Q(pk=run_id)
    if lease_token is not None:
        condition &= Q(lease_token=lease_token)
    if statuses is not None:
        condition &= Q(status__in=statuses)
    if Run.objects.filter(condition).update(**updates, last_seq=F("last_seq") + count) != 1:
        return None
    return Run.objects.filter(pk=run_id).values_list("last_seq", flat=True).get()


def publish_on_commit(rows: list[RunEvent]) -> None:
    """The one place that hands events to live streams, after commit only."""
    from runs import metrics, notify

    frames = [(row.run_id, row.seq, row.type, dumps(event_frame(row))) for row in rows]
    transaction.on_commit(lambda: notify.publish_frames(frames))
    transaction.on_commit(lambda: metrics.events_committed(rows))  # counters of what was committed
