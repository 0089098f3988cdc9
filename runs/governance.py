"""Deadlines and escalations, applied by the sweep of every worker.

No timer lives in any one process: the deadlines are columns
(`HitlRequest.escalate_at`, `HitlRequest.due_at`, `Run.deadline_at`), so a
restart loses none of them, and every worker (embedded threads and
`flex_worker` processes) runs `sweep()` every `FLEX_SWEEP_SECONDS`
(`runs.engine.worker`). Each item is applied in its own transaction that:

1. takes the run's row lock, as every API write does (on SQLite the
   IMMEDIATE transaction serialises writers);
2. re-reads the item and changes it with a conditional UPDATE (still
   pending / not escalated yet / run still not terminal), so of several
   workers sweeping at once exactly one applies it and the others see
   nothing to do;
3. writes the run's events and an audit entry whose actor is `system`.

What each does (docs/hitl.md, "Governing human decisions"):

- escalation (`escalate_at` passed, request pending): urgency `high`,
  `escalateTo` added to the assignees, `hitl_escalated`;
- timeout (`due_at` passed, request pending): the `onTimeout` action
  (default: reject), `hitl_resolved` with `resolution: "timed_out"` and
  `appliedAction`, then what a person's answer would have done;
- run deadline (`created_at + constraints.deadlineSeconds` passed, run not
  terminal, waiting runs included): the run ends `failed` with error code
  `deadline_exceeded`; a worker still running one of its nodes is fenced
  off (its commit expects `running`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import close_old_connections, transaction
from django.utils import timezone

from flexagents.dates import iso_or_none
from hitl.models import URGENCY_RANK, HitlRequest, HitlStatus, HitlUrgency, assignee_keys_for
from hitl.presenters import hitl_response_payload
from hitl.services import hitl_request_time_out, merge_people
from runs import events as ev
from runs import services
from runs.models import TERMINAL_STATUSES, NodeRun, NodeStatus, Run, RunStatus
from runs.transitions import Fenced, nodes_update, run_transition

logger = logging.getLogger("runs.governance")

SYSTEM = "system"
BATCH = 100


@dataclass
class SweepResult:
    escalated: int = 0
    timed_out: int = 0
    deadlines: int = 0


def sweep(now: datetime | None = None) -> SweepResult:
    """Apply every escalation, request timeout and run deadline that is due.
    Never raises: a failing item is logged and retried at the next sweep."""
    now = now or timezone.now()
    result = SweepResult()
    for request_id, run_id in (HitlRequest.objects.filter(status=HitlStatus.PENDING, escalated=False,
                                                          escalate_at__lte=now)
                               .order_by("escalate_at").values_list("id", "run_id")[:BATCH]):
        result.escalated += _guarded(escalate_request, request_id=request_id, run_id=run_id, now=now)
    for request_id, run_id in (HitlRequest.objects.filter(status=HitlStatus.PENDING, due_at__lte=now)
                               .order_by("due_at").values_list("id", "run_id")[:BATCH]):
        result.timed_out += _guarded(time_out_request, request_id=request_id, run_id=run_id, now=now)
    for run_id in (Run.objects.filter(deadline_at__lte=now).exclude(status__in=TERMINAL_STATUSES)
                   .order_by("deadline_at").values_list("id", flat=True)[:BATCH]):
        result.deadlines += _guarded(expire_run, run_id=run_id, now=now)
    return result


def _guarded(apply: Any, **kwargs: Any) -> int:
    try:
        return 1 if apply(**kwargs) else 0
    except Fenced:
        return 0  # someone else changed the run first: nothing to do
    except Exception:  # noqa: BLE001 — retried at the next sweep
        logger.exception("governance sweep item failed", extra={k: v for k, v in kwargs.items() if k != "now"})
        close_old_connections()
        return 0


def _lock_run(run_id: str) -> Run | None:
    return Run.objects.select_for_update().filter(pk=run_id).first()


def escalate_request(*, request_id: str, run_id: str, now: datetime) -> bool:
    """Escalate one request, once. True when this call did it."""
    with transaction.atomic():
        run = _lock_run(run_id)
        request = HitlRequest.objects.filter(pk=request_id, status=HitlStatus.PENDING, escalated=False,
                                             escalate_at__lte=now).first()
        if run is None or request is None or run.is_terminal:
            return False
        assignees = merge_people(request.assignees, request.escalate_to)
        won = HitlRequest.objects.filter(pk=request.pk, status=HitlStatus.PENDING, escalated=False).update(
            escalated=True, escalated_at=now, urgency=HitlUrgency.HIGH, urgency_rank=URGENCY_RANK[HitlUrgency.HIGH],
            assignees=assignees, assignee_keys=assignee_keys_for(assignees))
        if won != 1:
            return False
        run_transition(run_id=run.id, to=None, expect=[run.status], plan_version=run.plan_version, events=[
            ev.event_hitl_escalated(request_id=request.id, urgency=HitlUrgency.HIGH, assignees=assignees,
                                    escalate_to=request.escalate_to or {}, escalated_at=iso_or_none(now),
                                    node_id=request.pending_node_id)])
        services.audit_add(run=run, action="hitl_escalated", actor=None, display_name=SYSTEM,
                           details={"requestId": request.id, "assignees": assignees,
                                    "escalateTo": request.escalate_to or {}})
    logger.info("hitl request escalated", extra={"run_id": run_id, "request_id": request_id})
    return True


def time_out_request(*, request_id: str, run_id: str, now: datetime) -> bool:
    """Apply one request's `onTimeout`, once. True when this call did it."""
    with transaction.atomic():
        run = _lock_run(run_id)
        request = HitlRequest.objects.filter(pk=request_id, status=HitlStatus.PENDING, due_at__lte=now).first()
        if run is None or request is None or run.status != RunStatus.AWAITING_HITL:
            return False
        resolved = hitl_request_time_out(request=request, now=now)
        if resolved is None:
            return False
        applied = dict(request.applied_action or {})
        events = [ev.event_hitl_update(request_id=request.id, response=hitl_response_payload(row),
                                       response_count=len(resolved.responses), node_id=request.pending_node_id)
                  for row in resolved.new_responses]
        events.append(ev.event_hitl_resolved(request_id=request.id, resolution="timed_out",
                                             responses=[hitl_response_payload(r) for r in resolved.responses],
                                             node_id=request.pending_node_id, applied_action=applied))
        if resolved.action.get("type") == "cancel":
            events.append(ev.event_complete(status="cancelled", reason="hitl_timed_out", request_id=request.id))
            services.cancel_run_row(run=run, events=events)
            services.audit_add(run=run, action="hitl_timed_out", actor=None, display_name=SYSTEM,
                               details={"requestId": request.id, "appliedAction": applied, "status": "cancelled"})
        else:
            services.resume_decided(run=run, request=request, resolved=resolved, events=events,
                                    audit_action="hitl_timed_out", actor_display=SYSTEM)
    logger.info("hitl request timed out", extra={"run_id": run_id, "request_id": request_id})
    return True


def expire_run(*, run_id: str, now: datetime) -> bool:
    """Fail one run past its deadline, once. True when this call did it."""
    with transaction.atomic():
        run = _lock_run(run_id)
        if run is None or run.is_terminal or run.deadline_at is None or run.deadline_at > now:
            return False
        seconds = (run.envelope.get("constraints") or {}).get("deadlineSeconds")
        error = {"code": "deadline_exceeded",
                 "message": f"The run did not finish within its deadline ({seconds} seconds).",
                 "deadlineSeconds": seconds}
        events = services.removal_events(run=run, reason="deadline_exceeded")
        events.append(ev.event_complete(status="failed", error=error))
        nodes_update({node.pk: {"status": NodeStatus.FAILED, "completed_at": now,
                                "error": {"code": "deadline_exceeded", "message": error["message"]}}
                      for node in NodeRun.objects.filter(run_id=run.id, status__in=[NodeStatus.RUNNING,
                                                                                     NodeStatus.AWAITING_HITL])})
        run_transition(run_id=run.id, to=RunStatus.FAILED, expect=[run.status], plan_version=run.plan_version,
                       updates={"error": error, "completed_at": now, "lease_owner": "", "lease_expires_at": None},
                       events=events)
        services.audit_add(run=run, action="deadline_exceeded", actor=None, display_name=SYSTEM,
                           details={"deadlineSeconds": seconds, "status": run.status})
    logger.info("run deadline exceeded", extra={"run_id": run_id})
    return True
