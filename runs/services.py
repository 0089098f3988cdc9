"""Writes about runs. The API, the admin, the history pages and the worker all
change runs through these functions, so they emit the same events and audit
entries and obey the same 409 rules."""
from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from flexagents import logging as flex_logging
from flexagents.errors import Forbidden, InvalidRunState, RunAlreadyCompleted, ServerBusy
from flexagents.roles import grant_run_to_owner, user_may_operate_run, user_may_submit
from planner.envelope import validate_envelope
from runs import events as ev
from runs.models import RUN_TRANSITIONS, AuditEntry, Run, RunStatus
from runs.selectors import run_get_for_user

logger = logging.getLogger("runs.services")


def check_transition(run: Run, to_status: str) -> None:
    """Refuse moves the state machine does not allow, with the API's codes."""
    if to_status in RUN_TRANSITIONS.get(run.status, frozenset()):
        return
    if run.is_terminal:
        raise RunAlreadyCompleted(details={"status": run.status})
    raise InvalidRunState(details={"status": run.status})


def audit_add(*, run: Run, action: str, actor: Any, plan_version: int | None = None,
              details: dict[str, Any] | None = None, display_name: str = "") -> AuditEntry:
    """An audit entry and its structured log line (run, operator, version, action)."""
    actor_id = getattr(actor, "pk", None)
    version = run.plan_version if plan_version is None else plan_version
    entry = AuditEntry.objects.create(run=run, action=action, actor=actor if actor_id else None,
                                      actor_display=display_name or (getattr(actor, "username", "") or ""),
                                      plan_version=version, details=details or {})
    logger.info("audit", extra={"run_id": run.id, "correlation_id": run.correlation_id or None,
                                "operator_id": actor_id, "plan_version": version,
                                "action": action, "details": details or {}})
    return entry


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
    _refuse_past_queue_caps(user)
    metadata = normalized.get("metadata", {})
    with transaction.atomic():
        run = Run.objects.create(
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
        from runs import notify

        transaction.on_commit(notify.announce_work)
    return run


def run_cancel(*, user: Any, run_id: str, reason: str = "") -> Run:
    """Cancel a run: terminal and audited. Results a worker commits later are
    refused by the fence (the worker's commit requires status `running`)."""
    from hitl.services import hitl_requests_remove_pending

    with transaction.atomic():
        run = run_get_for_user(user=user, run_id=run_id, for_update=True)
        if not user_may_operate_run(user, run):
            raise Forbidden("Your role may not cancel runs.")
        check_transition(run, RunStatus.CANCELLED)
        pending = hitl_requests_remove_pending(run=run, reason=reason)
        events = [ev.PendingEvent(ev.HITL_RESOLVED, payload) for payload in pending]
        events.append(ev.PendingEvent(ev.COMPLETE, {"status": "cancelled", "reason": reason or None}))
        ev.append_events(run_id=run.id, events=events, plan_version=run.plan_version,
                         statuses=[run.status],
                         run_updates={"status": RunStatus.CANCELLED, "completed_at": timezone.now(),
                                      "lease_owner": "", "lease_expires_at": None})
        audit_add(run=run, action="run_cancelled", actor=user, details={"reason": reason})
    run.refresh_from_db()
    return run
