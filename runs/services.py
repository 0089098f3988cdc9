"""Writes about runs. The API, the admin, the history pages and the worker all
change runs through these functions, so they emit the same events and audit
entries and obey the same 409 rules."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from flexagents import logging as flex_logging
from flexagents.ids import new_id
from flexagents.errors import (CapabilityInactive, FlexError, Forbidden, HitlResponseRequired, InvalidRunState,
                               MissingSnapshot,
                               PolicyNotFound,
                               RunAlreadyCompleted, ServerBusy, StalePlanVersion)
from flexagents.roles import grant_run_to_owner, user_may_operate_run, user_may_submit
from hitl.models import HitlRequest, HitlResponse, HitlStatus
from hitl.presenters import approvals_of, hitl_response_payload
from hitl.services import (Resolution, check_may_answer, hitl_display_name, hitl_newest_pending_request, hitl_pending_request,
                           hitl_request_decide, hitl_request_resolve, hitl_requests_remove_pending,
                           hitl_responses_append,
                           hitl_responses_of, validate_responses, validation_error)
from planner.envelope import validate_envelope
from planner.planner import build_plan
from planner.registry import get_registry
from runs import events as ev
from runs import metrics, notify
from runs.models import AuditEntry, NodeRun, NodeStatus, PlanVersion, Run, RunStatus
from runs.replanning import ReplanOutcome, plan_again, plan_nodes_payload
from runs.selectors import run_for_answer, run_get_for_user
from runs.transitions import (Fenced, RowUpdate, nodes_update, resume_commit, run_transition,
                              run_transition_allowed)

logger = logging.getLogger("runs.services")


def check_transition(run: Run, to_status: str) -> None:
    """Refuse moves the state machine does not allow, with the API's codes."""
    if run_transition_allowed(run.status, to_status):
        return
    if run.is_terminal:
        raise RunAlreadyCompleted(details={"status": run.status})
    raise InvalidRunState(details={"status": run.status})


def audit_add(*, run: Run, action: str, actor: Any, plan_version: int | None = None,
              details: dict[str, Any] | None = None, display_name: str = "") -> AuditEntry:
    """An audit entry and its structured log line (run, operator, version, action)."""
    entry = audit_entry(run=run, action=action, actor=actor, plan_version=plan_version, details=details,
                        display_name=display_name)
    entry.save(force_insert=True)
    audit_logged(run=run, entry=entry)
    return entry


def audit_entry(*, run: Run, action: str, actor: Any, plan_version: int | None = None,
                details: dict[str, Any] | None = None, display_name: str = "") -> AuditEntry:
    """`audit_add`'s entry, unsaved: the caller inserts it with its other
    writes, then logs it (`audit_logged`)."""
    actor_id = getattr(actor, "pk", None)
    version = run.plan_version if plan_version is None else plan_version
    return AuditEntry(run=run, action=action, actor=actor if actor_id else None,
                      actor_display=display_name or (getattr(actor, "username", "") or ""),
                      plan_version=version, details=details or {})


def audit_logged(*, run: Run, entry: AuditEntry) -> None:
    """The structured log line of an audit entry (run, operator, version, action)."""
    logger.info("audit", extra={"run_id": run.id, "correlation_id": run.correlation_id or None,
                                "operator_id": entry.actor_id, "plan_version": entry.plan_version,
                                "action": entry.action, "details": entry.details})


def _refuse_past_queue_caps(user: Any) -> None:
    """Backpressure: 503 `server_busy` with Retry-After past the queued-run
    caps, per user (`FLEX_MAX_QUEUED_RUNS_PER_USER`) and for the whole
    deployment (`FLEX_MAX_QUEUED_RUNS`), so one client's burst cannot bury
    everyone else's runs. Checked before the insert; concurrent submissions
    may overshoot by a few."""
    queued = Run.objects.filter(status=RunStatus.QUEUED)
    if queued.filter(created_by=user).count() >= settings.FLEX_MAX_QUEUED_RUNS_PER_USER:
        raise ServerBusy("You have too many runs waiting to start; retry later.", retry_after=5,
                         details={"limit": settings.FLEX_MAX_QUEUED_RUNS_PER_USER, "scope": "user"})
    if queued.count() >= settings.FLEX_MAX_QUEUED_RUNS:
        raise ServerBusy("Too many runs are queued; retry later.", retry_after=10,
                         details={"limit": settings.FLEX_MAX_QUEUED_RUNS, "scope": "server"})


def _refuse_needing_inactive(envelope: dict[str, Any]) -> None:
    """422 `capability_inactive` for an envelope that only inactive
    capabilities could serve (their agents stopped heartbeating): refused
    before a run exists. Plans only when some capability is inactive."""
    if all(cls.status == "active" for cls in get_registry().classes()):
        return
    result = build_plan(envelope)
    inactive = [d for d in result.diagnostics if d.get("code") == "capability_inactive"]
    if result.graph is None and inactive:
        raise CapabilityInactive("The run needs capabilities that are inactive: "
                                 f"{', '.join(sorted({d['capabilityId'] for d in inactive}))}.",
                                 details={"diagnostics": inactive})


def run_create(*, user: Any, envelope: Any, correlation_id: str = "") -> Run:
    """Validate an envelope and queue a run for it, owned by `user`.

    Its correlation id is `metadata.correlationId`, else `correlation_id`
    (the request's `X-Correlation-ID`), else a new one.

    Nothing is written unless the envelope is valid. The run is committed
    before this returns (durable before acknowledged); workers are told after
    commit.
    """
    if not user_may_submit(user):
        raise Forbidden("Your role may not submit runs.")
    normalized = validate_envelope(envelope)
    _refuse_needing_inactive(normalized)
    _refuse_past_queue_caps(user)
    metadata = normalized.get("metadata", {})
    deadline_seconds = normalized.get("constraints", {}).get("deadlineSeconds")
    with transaction.atomic():
        run = Run.objects.create(
            deadline_at=timezone.now() + timedelta(seconds=deadline_seconds) if deadline_seconds else None,
            objective=normalized["objective"], envelope=normalized, created_by=user,
            thread_id=str(metadata.get("threadId") or "")[:200], brief_id=str(metadata.get("briefId") or "")[:200],
            correlation_id=(str(metadata.get("correlationId") or "")[:200]
                            or flex_logging.clean_correlation_id(correlation_id)
                            or flex_logging.new_correlation_id()),
            # The envelope's inputs are the first facet values of the snapshot.
            facets=dict(normalized.get("inputs", {})),
            provenance={name: {"nodeId": None, "capabilityId": None, "planVersion": 0, "source": "envelope"}
                        for name in normalized.get("inputs", {})})
        grant_run_to_owner(run=run, user=user)
        audit_add(run=run, action="run_created", actor=user, plan_version=0)
        transaction.on_commit(notify.announce_work)
    return run


# --- cancel, respond, resume, remove ----------------------------------------------
#
# One code path for POST /runs/{id}/cancel, /api/hitl/respond, /api/hitl/resume,
# /api/hitl/remove, POST /api/v1/flex/run.resume and the admin console. Every
# one of them:
#
# 1. takes the run's row lock (`select_for_update`; on SQLite the IMMEDIATE
#    transaction already serialises writers) and checks, under it, the
#    caller's rights, the run's status, the request's status, the latest
#    response id (the stale rule) and, for run.resume, the plan version;
# 2. writes responses and the request's status (`hitl.services`), node
#    statuses, the new plan version, the run's status and events
#    (`runs.transitions`, fenced on the status read under the lock) and the
#    audit entry, in that one transaction;
# 3. wakes the workers after commit when the run was queued again.
#
# Of concurrent calls on one request exactly one passes step 1; the others
# find the request resolved (or the plan version moved) and get 409.

def lock_run_for_operator(*, user: Any, run_id: str, refusal: str) -> Run:
    """The run under its row lock: 404 if the user may not view it, 403
    (`refusal`) if the role may not act on it (support)."""
    run = run_get_for_user(user=user, run_id=run_id, for_update=True)
    if not user_may_operate_run(user, run):
        raise Forbidden(refusal)
    return run


HITL_REFUSAL = "Your role may read HITL requests but not act on them."


def _removal_events(*, run: Run, reason: str) -> list[ev.PendingEvent]:
    """Remove the run's pending requests: one `hitl_resolved` (removed) each."""
    return [ev.event_hitl_resolved(request_id=removed["requestId"], resolution="removed",
                                   responses=removed["responses"], removed_reason=removed["reason"])
            for removed in hitl_requests_remove_pending(run_id=run.id, reason=reason)]


def _cancel(*, run: Run, events: list[ev.PendingEvent]) -> None:
    run_transition(run_id=run.id, to=RunStatus.CANCELLED, expect=[run.status], plan_version=run.plan_version,
                   updates={"completed_at": timezone.now(), "lease_owner": "", "lease_expires_at": None},
                   events=events)


def run_cancel(*, user: Any, run_id: str, reason: str = "") -> Run:
    """Cancel a run: terminal and audited. Results a worker commits later are
    refused by the fence (the worker's commit requires status `running`)."""
    with transaction.atomic():
        run = lock_run_for_operator(user=user, run_id=run_id, refusal="Your role may not cancel runs.")
        check_transition(run, RunStatus.CANCELLED)
        events = _removal_events(run=run, reason=reason)
        events.append(ev.event_complete(status="cancelled", reason=reason or None))
        _cancel(run=run, events=events)
        audit_add(run=run, action="run_cancelled", actor=user, details={"reason": reason})
    run.refresh_from_db()
    return run


def hitl_remove(*, user: Any, run_id: str, request_id: str | None = None, reason: str = "", note: str = "") -> Run:
    """Remove a pending request and cancel its run (hitl_resolved `removed`,
    then `complete` with status cancelled), audited."""
    with transaction.atomic():
        run = lock_run_for_operator(user=user, run_id=run_id, refusal=HITL_REFUSAL)
        request = hitl_pending_request(run_id=run.id, request_id=request_id)
        check_transition(run, RunStatus.CANCELLED)
        events = _removal_events(run=run, reason=reason)
        events.append(ev.event_complete(status="cancelled", reason=reason or None, request_id=request.id))
        _cancel(run=run, events=events)
        audit_add(run=run, action="hitl_removed", actor=user,
                  details={"requestId": request.id, "reason": reason, "note": note})
    run.refresh_from_db()
    return run


@dataclass(frozen=True)
class Answer:
    """What a person sent with a respond or resume call."""

    responses: Any = None
    latest_response_id: str | None = None
    operator: Any = None
    note: str = ""

    @property
    def operator_details(self) -> dict[str, Any] | None:
        return self.operator if isinstance(self.operator, dict) else None


@dataclass
class ResumeResult:
    run: Run
    request: HitlRequest | None
    responses: list[HitlResponse] = field(default_factory=list)
    resolution: str = ""
    first_seq: int = 0
    last_seq: int = 0


def hitl_respond(*, user: Any, run_id: str, request_id: str, responses: Any,
                 latest_response_id: str | None = None, operator: Any = None, note: str = "") -> dict[str, Any]:
    """Append responses to a pending request without resuming the run."""
    answer = Answer(responses=responses, latest_response_id=latest_response_id, operator=operator, note=note)
    with transaction.atomic():
        run = lock_run_for_operator(user=user, run_id=run_id, refusal=HITL_REFUSAL)
        request = hitl_pending_request(run_id=run.id, request_id=request_id)
        existing = hitl_responses_of(request=request, latest_response_id=answer.latest_response_id)
        items = validate_responses(request=request, responses=answer.responses)
        if not items:
            raise validation_error("Send at least one response.", [{"path": "/responses", "message": "must not be empty"}])
        check_may_answer(request=request, user=user, items=items, run_created_by_id=run.created_by_id,
                         existing=existing)
        rows = hitl_responses_append(request=request, items=items, user=user,
                                     display_name=hitl_display_name(user=user, operator=answer.operator))
        run_transition(run_id=run.id, to=None, expect=[run.status], plan_version=run.plan_version,
                       events=_update_events(request=request, rows=rows, before=len(existing)))
        audit_add(run=run, action="hitl_responded", actor=user,
                  details={"requestId": request.id, "responseIds": [r.response_id for r in rows], "note": note,
                           "operator": answer.operator_details})
    everything = existing + rows
    return {"runId": run.id, "requestId": request.id, "latestResponseId": everything[-1].response_id,
            "responses": [hitl_response_payload(r) for r in everything]}


def hitl_resume(*, user: Any, run_id: str, request_id: str, responses: Any, latest_response_id: str | None = None,
                operator: Any = None, note: str = "") -> ResumeResult:
    """Append responses, resolve the request and put the run back to work."""
    answer = Answer(responses=responses, latest_response_id=latest_response_id, operator=operator, note=note)
    if transaction.get_connection().vendor == "postgresql" and request_id:
        answered = _resume_in_one_statement(user=user, run_id=run_id, request_id=request_id, answer=answer)
        if answered is not None:
            return answered
    with transaction.atomic():
        run = lock_run_for_operator(user=user, run_id=run_id, refusal=HITL_REFUSAL)
        request = hitl_pending_request(run_id=run.id, request_id=request_id)
        _check_waiting(run, (RunStatus.AWAITING_HITL,))
        return _resume(user=user, run=run, request=request, answer=answer, audit_action="hitl_resumed")


def _resume_in_one_statement(*, user: Any, run_id: str, request_id: str, answer: Answer) -> ResumeResult | None:
    """`hitl_resume`'s common case on PostgreSQL in two round trips: one read
    (`runs.selectors.run_for_answer`: the run, the request, its responses,
    the plan version, the node rows) and one write (`runs.transitions.resume_commit`:
    the responses, the request resolved, the plan version, the node rows,
    the run queued with its events, the audit entry), fenced on the row
    versions read. The same checks and the same writes as the locking path
    (`_resume`); None — nothing written — for anything else: a refusal (so
    the locking path gives its error in its order), a quorum still short,
    a replan, or a run or request that changed between read and write. The
    caller then takes the locking path."""
    snapshot = run_for_answer(user=user, run_id=run_id, request_id=request_id)
    if snapshot is None:
        return None
    run, request = snapshot.run, snapshot.request
    if (request is None or request.status != HitlStatus.PENDING or run.status != RunStatus.AWAITING_HITL
            or snapshot.plan is None):
        return None
    now = timezone.now()
    try:
        resolved, events = _resolve(user=user, request=request, answer=answer, now=now,
                                    created_by_id=run.created_by_id, loaded=snapshot.responses, store=False)
    except FlexError:
        return None
    action = resolved.action
    if not resolved.resolution or action.get("type") == "replan":
        return None
    nodes = {n.node_id: n for n in snapshot.nodes}
    writes = _resume_writes(user=user, run=run, request=request, resolved=resolved, events=events, action=action,
                            current=snapshot.plan, nodes=nodes, answer=answer, audit_action="hitl_resumed",
                            actor_display="", now=now)
    if not run_transition_allowed(run.status, writes.outcome.target):
        return None
    # Before the commit: the answer's metric is taken when its events are published.
    metrics.note_hitl_created(request.id, request.created_at)
    try:
        rows = resume_commit(
            run_id=run.id, run_version=snapshot.run_version, expect=[run.status], to=writes.outcome.target,
            plan_version=writes.version, updates=writes.outcome.updates,
            nodes={nodes[changed].pk: changes for changed, changes in writes.node_changes.items()},
            events=writes.events, inserts=[*resolved.new_responses, writes.plan, writes.audit],
            row_updates=[RowUpdate(HitlRequest, request.pk, {"status": HitlStatus.PENDING},
                                   {"status": request.status, "resolution": request.resolution,
                                    "resolved_at": request.resolved_at}, version=snapshot.request_version)])
    except Fenced:
        logger.info("answer fenced off; taking the locking path", extra={"run_id": run.id})
        return None
    audit_logged(run=run, entry=writes.audit)
    return _resumed(run=run, request=request, resolved=resolved, writes=writes, rows=rows)


def run_resume(*, user: Any, run_id: str, expected_plan_version: int, responses: Any = None,
               latest_response_id: str | None = None, operator: Any = None, note: str = "") -> ResumeResult:
    """POST /api/v1/flex/run.resume: resume a paused run, or resolve the
    pending request of a run awaiting a person and resume it."""
    answer = Answer(responses=responses, latest_response_id=latest_response_id, operator=operator, note=note)
    with transaction.atomic():
        run = lock_run_for_operator(user=user, run_id=run_id, refusal=HITL_REFUSAL)
        _check_waiting(run, (RunStatus.AWAITING_HITL, RunStatus.PAUSED))
        if not run.has_snapshot or not run.plan_version:
            raise MissingSnapshot(details={"runId": run.id, "status": run.status})
        if expected_plan_version != run.plan_version:
            # expectedPlanVersion is kept for older clients; currentPlanVersion
            # names it plainly (API.md, Second wave).
            raise StalePlanVersion(details={"currentPlanVersion": run.plan_version,
                                            "expectedPlanVersion": run.plan_version,
                                            "receivedPlanVersion": expected_plan_version})
        request = None
        if run.status == RunStatus.AWAITING_HITL:
            request = hitl_newest_pending_request(run_id=run.id)
            if request is None:
                raise HitlResponseRequired("The run waits for a person but has no pending request.",
                                           details={"runId": run.id})
        elif answer.responses:
            raise validation_error("A paused run has no pending request to answer.",
                                   [{"path": "/responses", "message": "must be empty for a paused run"}])
        return _resume(user=user, run=run, request=request, answer=answer, audit_action="run_resumed")


def resume_decided(*, run: Run, request: HitlRequest, resolved: Resolution, events: list[ev.PendingEvent],
                   audit_action: str, actor_display: str) -> ResumeResult:
    """Under the run's row lock: go on with a request the system resolved
    (a deadline, `runs.governance`) as if a person had answered it."""
    return _resume(user=None, run=run, request=request, answer=Answer(), audit_action=audit_action,
                   decided=(resolved, events), actor_display=actor_display)


def cancel_run_row(*, run: Run, events: list[ev.PendingEvent]) -> None:
    """Under the run's row lock: the run becomes cancelled with `events`."""
    _cancel(run=run, events=events)


def removal_events(*, run: Run, reason: str) -> list[ev.PendingEvent]:
    """Remove the run's pending requests (it is ending): their events."""
    return _removal_events(run=run, reason=reason)


def _check_waiting(run: Run, allowed: tuple[str, ...]) -> None:
    if run.is_terminal:
        raise RunAlreadyCompleted(details={"status": run.status})
    if run.status not in allowed:
        raise InvalidRunState(details={"status": run.status})


def _update_events(*, request: HitlRequest, rows: list[HitlResponse], before: int) -> list[ev.PendingEvent]:
    """One `hitl_update` per new response."""
    return [ev.event_hitl_update(request_id=request.id, response=hitl_response_payload(row),
                                 response_count=before + index + 1, node_id=request.pending_node_id)
            for index, row in enumerate(rows)]


@dataclass
class _Outcome:
    """What a resume does to the run: its next status, row values and the
    events that end it (a failing follow-up)."""

    target: str = RunStatus.QUEUED
    updates: dict[str, Any] = field(default_factory=lambda: {"lease_owner": "", "lease_expires_at": None,
                                                              "available_at": None, "pause_reason": ""})
    completing: list[ev.PendingEvent] = field(default_factory=list)


def _resume(*, user: Any, run: Run, request: HitlRequest | None, answer: Answer, audit_action: str,
            decided: tuple[Resolution, list[ev.PendingEvent]] | None = None, actor_display: str = "") -> ResumeResult:
    """Under the run's row lock, with status and request already checked:
    resolve the request (if any), apply its follow-up to the nodes and the
    run, record a new plan version and queue (or end) the run. `decided`:
    the request was already resolved by the system (a deadline), with its
    events."""
    now = timezone.now()
    events: list[ev.PendingEvent] = []
    resolved: Resolution | None = None
    if decided is not None:
        resolved, events = decided
    elif request is not None:
        resolved, events = _resolve(user=user, request=request, answer=answer, now=now,
                                   created_by_id=run.created_by_id)
        if not resolved.resolution:
            return _approval_counted(user=user, run=run, request=request, resolved=resolved, events=events,
                                     answer=answer)
    action = resolved.action if resolved is not None else {"type": "continue"}
    current = PlanVersion.objects.get(run_id=run.id, version=run.plan_version)
    nodes = {n.node_id: n for n in NodeRun.objects.filter(run_id=run.id)}
    writes = _resume_writes(user=user, run=run, request=request, resolved=resolved, events=events, action=action,
                            current=current, nodes=nodes, answer=answer, audit_action=audit_action,
                            actor_display=actor_display, now=now)
    for row in writes.new_rows:
        row.save(force_insert=True)
    writes.plan.save(force_insert=True)
    nodes_update({nodes[changed].pk: changes for changed, changes in writes.node_changes.items()})
    check_transition(run, writes.outcome.target)
    # No worker holds a waiting run: the fence is the row lock plus the
    # status read under it.
    rows = run_transition(run_id=run.id, to=writes.outcome.target, expect=[run.status], plan_version=writes.version,
                          updates=writes.outcome.updates, events=writes.events)
    writes.audit.save(force_insert=True)
    audit_logged(run=run, entry=writes.audit)
    return _resumed(run=run, request=request, resolved=resolved, writes=writes, rows=rows)


@dataclass
class _ResumeWrites:
    """What a resume writes, decided before anything is written: the new
    plan version (and, for a replan, new node rows), the node changes, the
    run's move and its events, the audit entry."""

    version: int
    outcome: _Outcome
    events: list[ev.PendingEvent]
    node_changes: dict[str, dict[str, Any]]
    plan: PlanVersion
    new_rows: list[NodeRun]
    audit: AuditEntry
    pending: list[str]


def _resume_writes(*, user: Any, run: Run, request: HitlRequest | None, resolved: Resolution | None,
                   events: list[ev.PendingEvent], action: dict[str, Any], current: PlanVersion,
                   nodes: dict[str, NodeRun], answer: Answer, audit_action: str, actor_display: str,
                   now: datetime) -> _ResumeWrites:
    """A resume's writes (`_ResumeWrites`) from what it read: the run, the
    request and its resolution, the current plan version and the node rows."""
    node_id = request.pending_node_id if request is not None else ""
    statuses = {k: n.status for k, n in nodes.items()}
    node_changes = _node_changes(graph=current.graph, statuses=statuses, node_id=node_id,
                                 action=action.get("type", "continue"), now=now)
    for changed, changes in node_changes.items():
        statuses[changed] = changes["status"]
    outcome = _outcome(request=request, resolved=resolved, action=action, node_id=node_id, now=now)

    previous, version = run.plan_version, run.plan_version + 1
    trigger = {"kind": "manual" if request is None else "hitl", "requestId": request.id if request else None,
               "resolution": (resolved.resolution if resolved else "") or None,
               "action": action.get("type", "continue"), "actorId": getattr(user, "pk", None)}
    replanned = None
    new_rows: list[NodeRun] = []
    if action.get("type") == "replan":
        # A real replan (docs/planning.md): the node the request was about is
        # redone by an alternative to its capability, completed nodes kept.
        node_changes, replanned = _replan_on_resume(run=run, graph=current.graph, nodes=nodes, node_id=node_id,
                                                    version=version, trigger=trigger, outcome=outcome, now=now)
        statuses = {k: n.status for k, n in nodes.items()}
        for changed, changes in node_changes.items():
            statuses[changed] = changes["status"]
    if replanned is not None and replanned.graph is not None:
        graph, statuses = replanned.graph, {**statuses, **replanned.statuses}
        pending = replanned.pending
        new_rows = list(replanned.new_rows)
        plan = PlanVersion(run_id=run.id, version=version, reason=PlanVersion.Reason.REPLAN,
                           trigger=trigger, graph=graph, node_statuses=replanned.statuses,
                           pending_node_ids=pending, schema_hash=graph.get("schemaHash", ""))
        events.append(ev.event_plan_updated(
            previous_version=previous, version=version, reason="replan", trigger=trigger,
            nodes=plan_nodes_payload(replanned), added=replanned.added, removed=replanned.removed,
            kept=replanned.kept))
    else:
        pending = [n["id"] for n in current.graph.get("nodes", [])
                   if statuses.get(n["id"]) not in ("completed", "skipped")]
        plan = PlanVersion(run_id=run.id, version=version, reason=PlanVersion.Reason.RESUME, trigger=trigger,
                           graph=current.graph, node_statuses=statuses, pending_node_ids=pending,
                           schema_hash=current.schema_hash)
        events.append(ev.event_plan_updated(
            previous_version=previous, version=version, reason="resume", trigger=trigger,
            nodes=[{"id": n["id"], "status": statuses.get(n["id"], "pending")}
                   for n in current.graph.get("nodes", [])]))
        if replanned is not None:  # no other plan: the run fails after the resume's own events
            outcome.completing.insert(0, ev.event_plan_rejected(attempt=version, diagnostics=replanned.diagnostics))
            outcome.completing.insert(0, ev.event_plan_requested(attempt=version, capabilities=replanned.considered))
    follow_up = resolved.follow_up if resolved is not None else None
    if follow_up is not None and action.get("type") != "pause":
        events.append(ev.event_policy_triggered(
            policy_id=follow_up["policyId"], trigger=follow_up["trigger"], action=follow_up["action"],
            node_id=node_id, request_id=follow_up["requestId"], resolution=follow_up["resolution"],
            follow_up=follow_up["followUp"]))
    events.extend(outcome.completing)
    outcome.updates.update(plan_version=version, pending_node_ids=pending)
    responses = resolved.responses if resolved is not None else []
    audit = audit_entry(run=run, action=audit_action, actor=user, plan_version=version, display_name=actor_display,
                        details={"requestId": request.id if request else None,
                                 "resolution": (resolved.resolution if resolved else "") or None,
                                 "action": action.get("type", "continue"), "previousVersion": previous,
                                 "status": outcome.target, "note": answer.note,
                                 "responseIds": [r.response_id for r in responses],
                                 "operator": answer.operator_details})
    return _ResumeWrites(version=version, outcome=outcome, events=events, node_changes=node_changes, plan=plan,
                         new_rows=new_rows, audit=audit, pending=pending)


def _resumed(*, run: Run, request: HitlRequest | None, resolved: Resolution | None, writes: _ResumeWrites,
             rows: list[Any]) -> ResumeResult:
    """After a resume's writes (in its transaction): wake the workers after
    commit, update `run` as written, the result."""
    if writes.outcome.target == RunStatus.QUEUED:
        transaction.on_commit(notify.announce_work)
    for key, value in {**writes.outcome.updates, "status": writes.outcome.target}.items():
        setattr(run, key, value)
    responses = resolved.responses if resolved is not None else []
    return ResumeResult(run=run, request=request, responses=responses,
                        resolution=resolved.resolution if resolved else "",
                        first_seq=rows[0].seq if rows else run.last_seq, last_seq=rows[-1].seq if rows else run.last_seq)


def _approval_counted(*, user: Any, run: Run, request: HitlRequest, resolved: Resolution,
                      events: list[ev.PendingEvent], answer: Answer) -> ResumeResult:
    """A resume whose approval does not reach the request's quorum yet: the
    approval is stored (`hitl_update`), the run keeps waiting."""
    rows = run_transition(run_id=run.id, to=None, expect=[run.status], plan_version=run.plan_version, events=events)
    approvals = len(approvals_of(resolved.responses))
    audit_add(run=run, action="hitl_approval_counted", actor=user,
              details={"requestId": request.id, "approvals": approvals,
                       "requiredApprovals": request.required_approvals, "note": answer.note,
                       "responseIds": [r.response_id for r in resolved.new_responses],
                       "operator": answer.operator_details})
    return ResumeResult(run=run, request=request, responses=resolved.responses, resolution="",
                        first_seq=rows[0].seq if rows else run.last_seq, last_seq=rows[-1].seq if rows else run.last_seq)


def _resolve(*, user: Any, request: HitlRequest, answer: Answer, now: datetime, created_by_id: Any,
             loaded: list[HitlResponse] | None = None, store: bool = True
             ) -> tuple[Resolution, list[ev.PendingEvent]]:
    """Check and store the answer, resolve the request; its events
    (`hitl_update` per response, then `hitl_resolved`). `store=False`:
    decide only — the new responses and the request's new state are left
    unsaved for the caller to write (and to count in the metrics);
    `loaded`: the request's responses as the caller read them."""
    existing = hitl_responses_of(request=request, latest_response_id=answer.latest_response_id, loaded=loaded)
    items = validate_responses(request=request, responses=answer.responses)
    check_may_answer(request=request, user=user, items=items, run_created_by_id=created_by_id,
                     existing=existing)
    decide = hitl_request_resolve if store else hitl_request_decide
    resolved = decide(request=request, existing=existing, items=items, user=user,
                      display_name=hitl_display_name(user=user, operator=answer.operator), now=now)
    events = _update_events(request=request, rows=resolved.new_responses, before=len(existing))
    if not resolved.resolution:
        return resolved, events  # a quorum still short of approvals
    events.append(ev.event_hitl_resolved(request_id=request.id, resolution=resolved.resolution,
                                         responses=[hitl_response_payload(r) for r in resolved.responses],
                                         node_id=request.pending_node_id))
    if store:
        metrics.note_hitl_created(request.id, request.created_at)
    return resolved, events


def _replan_on_resume(*, run: Run, graph: dict[str, Any], nodes: dict[str, NodeRun], node_id: str, version: int,
                      trigger: dict[str, Any], outcome: _Outcome, now: datetime) -> tuple[dict[str, dict[str, Any]], ReplanOutcome]:
    """A `replan` follow-up: plan again without the asking node's capability
    (nothing is excluded for a run-level request). No other plan: the node
    fails and the run with it (`plan_rejected`, then `complete` failed)."""
    statuses = {k: n.status for k, n in nodes.items()}
    exclude = [nodes[node_id].capability_id] if node_id in nodes else []
    trigger["excludedCapabilities"] = exclude
    replanned = plan_again(run_id=run.id, envelope=run.envelope, graph=graph, rows=nodes, statuses=statuses,
                           version=version, exclude=exclude, redo=[node_id] if node_id in nodes else [])
    if replanned.graph is not None:
        # The resume's stream starts hitl_resolved, plan_updated (API.md): no plan_requested before it.
        return replanned.node_changes, replanned
    changes: dict[str, dict[str, Any]] = {}
    if node_id in nodes and statuses[node_id] in (NodeStatus.AWAITING_HITL, NodeStatus.RUNNING):
        changes[node_id] = {"status": NodeStatus.FAILED, "completed_at": now}
    error = {"code": "replan_rejected", "message": "No other plan can satisfy the output contract.",
             "diagnostics": replanned.diagnostics, "nodeId": node_id or None}
    outcome.target = RunStatus.FAILED
    outcome.updates.update(error=error, completed_at=now)
    outcome.completing = [ev.event_complete(status="failed", error=error)]
    return changes, replanned


def _node_changes(*, graph: dict[str, Any], statuses: dict[str, str], node_id: str, action: str,
                  now: datetime) -> dict[str, dict[str, Any]]:
    """What a follow-up does to the node the request was about."""
    changes: dict[str, dict[str, Any]] = {}
    if node_id not in statuses:
        return changes
    if action == "fail":
        if statuses[node_id] == NodeStatus.AWAITING_HITL:
            changes[node_id] = {"status": NodeStatus.FAILED, "completed_at": now}
    elif action == "replan":
        pass  # `_replan_on_resume` decides
    elif statuses[node_id] == NodeStatus.AWAITING_HITL:
        # clarify answered, approved validation escalation, pause: run it again.
        changes[node_id] = {"status": NodeStatus.PENDING}
    return changes


# How a failing follow-up names the failure, by the request's resolution.
FAIL_CODES: dict[str, tuple[str, str]] = {
    "rejected": ("hitl_rejected", "A person rejected the request."),
    "timed_out": ("hitl_timed_out", "Nobody answered the request before its deadline."),
    "": ("policy_failed", "The approved action fails the run."),
}


def _outcome(*, request: HitlRequest | None, resolved: Resolution | None, action: dict[str, Any], node_id: str,
             now: datetime) -> _Outcome:
    outcome = _Outcome()
    resolution = resolved.resolution if resolved is not None else ""
    if action.get("type") == "fail":
        outcome.target = RunStatus.FAILED
        code, default_message = FAIL_CODES.get(resolution, FAIL_CODES[""])
        error = {"code": code, "message": action.get("message") or default_message,
            "requestId": request.id if request else None, "nodeId": node_id or None}
        outcome.updates.update(error=error, completed_at=now)
        outcome.completing.append(ev.event_complete(status="failed", error=error))
    elif action.get("type") == "pause":
        # The table has no awaiting_hitl → paused: the run is queued with its
        # pause reason, and the worker that takes it moves it running → paused
        # and emits this `policy_triggered` then (runs.engine.loop.resume_started),
        # so a stream ends only once the run really is paused.
        outcome.updates["pause_reason"] = action.get("reason") or "paused after a HITL decision"
    return outcome


def _downstream(graph: dict[str, Any], node_id: str) -> set[str]:
    children: dict[str, set[str]] = {}
    for node in graph.get("nodes", []):
        for dep in node.get("dependsOn", []):
            children.setdefault(dep, set()).add(node["id"])
    seen: set[str] = set()
    stack = [node_id]
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return seen


# --- manual policies --------------------------------------------------------------

@dataclass
class TriggerResult:
    run: Run
    policy_id: str
    trigger_id: str
    # "queued": the worker driving the run applies it at its next step;
    # "applied": applied at once (a waiting run: `fail` or `emit`).
    state: str


# What a manual policy may do to a run that waits for a person (paused or
# awaiting_hitl): no worker holds it, so it is applied at once. `hitl`,
# `replan` (and `pause` on a run awaiting a person) need the run running.
WAITING_RUN_ACTIONS = ("fail", "emit", "pause")


def policy_trigger(*, user: Any, run_id: str, policy_id: str, note: str = "") -> TriggerResult:
    """POST /api/v1/flex/runs/{runId}/policies/{policyId}/trigger (docs/hitl.md,
    "Manual policies"): operators and the run's owner (operate rights)."""
    with transaction.atomic():
        run = lock_run_for_operator(user=user, run_id=run_id, refusal="Your role may not trigger policies.")
        policies = (run.envelope.get("policies") or {}).get("runtime") or []
        policy = next((p for p in policies if p.get("id") == policy_id), None)
        if policy is None:
            raise PolicyNotFound(details={"runId": run.id, "policyId": policy_id,
                                          "policyIds": [p.get("id") for p in policies]})
        kind = (policy.get("trigger") or {}).get("kind")
        if run.is_terminal:
            raise InvalidRunState("The run has finished; its policies can no longer be triggered.",
                                  details={"status": run.status, "policyId": policy_id})
        if kind != "manual":
            raise InvalidRunState(f"Policy {policy_id} fires on {kind}, not by hand.",
                                  details={"status": run.status, "policyId": policy_id, "triggerKind": kind})
        if policy.get("enabled", True) is False:
            raise InvalidRunState(f"Policy {policy_id} is disabled in the run's envelope.",
                                  details={"status": run.status, "policyId": policy_id, "enabled": False})
        action = dict(policy.get("action") or {})
        trigger_id = new_id("trg")
        entry = {"id": trigger_id, "policyId": policy_id, "note": note, "by": getattr(user, "username", ""),
                 "at": timezone.now().isoformat()}
        if run.is_waiting:
            state = _apply_to_waiting_run(run=run, policy=policy, action=action)
        else:
            run_transition(run_id=run.id, to=None, expect=[run.status], plan_version=run.plan_version,
                           updates={"manual_triggers": [*(run.manual_triggers or []), entry]})
            state = "queued"
            transaction.on_commit(notify.announce_work)
        audit_add(run=run, action="policy_triggered_manually", actor=user,
                  details={"policyId": policy_id, "note": note, "triggerId": trigger_id, "state": state,
                           "action": action.get("type")})
    run.refresh_from_db()
    return TriggerResult(run=run, policy_id=policy_id, trigger_id=trigger_id, state=state)


def _apply_to_waiting_run(*, run: Run, policy: dict[str, Any], action: dict[str, Any]) -> str:
    kind = action.get("type")
    if kind not in WAITING_RUN_ACTIONS or (kind == "pause" and run.status != RunStatus.PAUSED):
        raise InvalidRunState(f"A {kind} policy applies to a running run; this one is {run.status}.",
                              details={"status": run.status, "policyId": policy["id"], "action": kind})
    events = [ev.event_policy_triggered(policy_id=policy["id"], trigger="manual", action=action)]
    if kind == "emit":
        events.append(ev.event_log(level="info", message=f"policy {policy['id']} emitted {action['event']}",
                                   event=action["event"], payload=action.get("payload") or {}))
        run_transition(run_id=run.id, to=None, expect=[run.status], plan_version=run.plan_version, events=events)
    elif kind == "pause":
        run_transition(run_id=run.id, to=None, expect=[run.status], plan_version=run.plan_version, events=events)
    else:
        error = {"code": "policy_failed", "message": action.get("message")
                 or f"Runtime policy {policy['id']} failed the run.", "policyId": policy["id"]}
        events += _removal_events(run=run, reason=f"policy {policy['id']} failed the run")
        events.append(ev.event_complete(status="failed", error=error))
        nodes_update({node.pk: {"status": NodeStatus.FAILED, "completed_at": timezone.now()}
                      for node in NodeRun.objects.filter(run_id=run.id, status=NodeStatus.AWAITING_HITL)})
        run_transition(run_id=run.id, to=RunStatus.FAILED, expect=[run.status], plan_version=run.plan_version,
                       updates={"error": error, "completed_at": timezone.now(), "lease_owner": "",
                                "lease_expires_at": None}, events=events)
    return "applied"
