"""Tasks: nodes done outside the worker, by agents over HTTP or by people.

A node of an external capability is *dispatched* (`step.dispatch_node`): the
commit that starts it inserts a `Task` row (status `open`), sets the node
`dispatched`, emits `node_dispatched`, and the worker lets go of the run (no
owner, no lease expiry: no worker claims it or sweeps it while it waits).

Then, each in ONE short transaction:

- claim (`task_claim_for_agent`, `task_claim_for_person`): a conditional
  UPDATE open -> claimed with a new random lease token and expiry, and the
  node's `node_start` (with `agentId`) appended to the run's event log;
- heartbeat: a conditional UPDATE that extends the lease;
- complete / fail / clarify: the fence first — a conditional UPDATE of the
  task on (id, status claimed, lease token, unexpired lease, run running); no
  row means `409 lease_lost` and nothing is written — then the node's
  outcome goes through the engine's own step functions (`loop.on_success`,
  `loop.on_invalid`, `loop.on_error`, `policies.on_clarify`: the same
  validation, retry and escalation code as in-process nodes) and
  `loop.commit(..., holder=False)`, which leaves the run claimable when a
  worker has to continue it, and wakes the workers;
- the sweep of every worker (`sweep_tasks`): expired leases are taken back
  (the task `expired`, `node_error` code `lease_expired`, the node offered
  again as a new task with the next attempt, bounded like a worker crash);
  agents silent for 3 x their interval become inactive, and the tasks of
  inactive capabilities fail their runs (`capability_inactive`) unless a
  policy replans (`policies.on_capability_inactive`).

Lock order is always task row, then run row.
"""
from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from flexagents.errors import LeaseLost, NotFound
from hitl.services import clarifications_for_node
from planner.agents import agent_capability_ids, agents_mark_silent_inactive, inactive_capability_ids
from planner.models import Agent
from planner.types import ClarificationNeeded
from runs import events as ev
from runs import metrics
from runs.engine import executor, loop, policies, retry
from runs.engine.lease import Claim
from runs.engine.step import RunContext, Step, fail, start_node
from runs.models import NodeRun, NodeStatus, PlanVersion, Run, RunStatus, Task, TaskStatus
from runs.transitions import Fenced, nodes_update, run_transition

logger = logging.getLogger("runs.engine.tasks")

# Statuses of a task that can still be acted on.
LIVE_STATUSES = (TaskStatus.OPEN, TaskStatus.CLAIMED)


def task_lease_duration(*, person: bool = False) -> timedelta:
    """An agent's lease, or a person's (a form takes minutes: FLEX_HUMAN_TASK_LEASE_SECONDS)."""
    return timedelta(seconds=settings.FLEX_HUMAN_TASK_LEASE_SECONDS if person else settings.FLEX_TASK_LEASE_SECONDS)


@dataclass(frozen=True)
class ClaimedTask:
    """What the claimer gets: the task with its lease and the node's bundle."""

    task: Task
    bundle: dict[str, Any]


def task_payload(task: Task, *, bundle: dict[str, Any] | None = None, with_lease: bool = False) -> dict[str, Any]:
    """The JSON form of a task (API.md, Tasks). The lease token only for its holder."""
    status = task.status
    if status in LIVE_STATUSES and "run" in task._state.fields_cache and task.run.status != RunStatus.RUNNING:
        status = TaskStatus.CANCELLED  # its run ended; the sweep closes the row soon
    body: dict[str, Any] = {
        "taskId": task.id, "runId": task.run_id, "nodeId": task.node_id, "capabilityId": task.capability_id,
        "agentType": task.agent_type, "attempt": task.attempt, "planVersion": task.plan_version,
        "status": status, "agentId": task.agent_id or None,
        "claimedBy": task.claimed_by.get_username() if task.claimed_by_id and task.claimed_by else None,
        "createdAt": task.created_at, "claimedAt": task.claimed_at, "leaseExpiresAt": task.lease_expires_at,
    }
    if with_lease:
        body["leaseToken"] = task.lease_token
    if bundle is not None:
        body["bundle"] = bundle
    return body


# --- context -----------------------------------------------------------------------

def _context(run_id: str) -> RunContext:
    """The run under its row lock, as a worker would load it; the claim is
    the run's current token (no worker holds a run that waits on tasks)."""
    # of=("self",): PostgreSQL cannot lock the nullable side of the outer join to created_by.
    run = Run.objects.select_for_update(of=("self",)).select_related("created_by").get(pk=run_id)
    ctx = RunContext(claim=Claim(run_id=run.id, token=run.lease_token, worker_id="task", takeover=False), run=run)
    if run.plan_version:
        # The inputs and what nodes produced (`RunFacet` rows), as `loop.load` reads them.
        run.facets, run.provenance = run.facet_snapshot()
        ctx.graph = PlanVersion.objects.get(run_id=run.id, version=run.plan_version).graph
        ctx.nodes = {n.node_id: n for n in NodeRun.objects.filter(run_id=run.id)}
    return ctx


def build_task_bundle(ctx: RunContext, task: Task) -> dict[str, Any]:
    """The node's ContextBundle (camelCase), the one an in-process capability
    gets, with every clarification answered so far for this node."""
    bundle = executor.build_bundle(
        run_id=ctx.run.id, node=ctx.graph_node(task.node_id), objective=ctx.run.objective, facets=ctx.run.facets,
        envelope=ctx.envelope, clarifications=clarifications_for_node(run_id=ctx.run.id, node_id=task.node_id),
        attempt=task.attempt, plan_version=ctx.run.plan_version,
        goal_feedback=policies.goal_feedback_for(ctx, task.node_id))
    return bundle.to_dict()


# --- claim -------------------------------------------------------------------------

def _take(task: Task, *, agent_id: str, user: Any, now: datetime) -> ClaimedTask | None:
    """open -> claimed, node_start, in the caller's transaction; None when
    someone else took it or its run is no longer running."""
    token = secrets.token_urlsafe(24)
    expires = now + task_lease_duration(person=not agent_id)
    taken = Task.objects.filter(pk=task.pk, status=TaskStatus.OPEN).update(
        status=TaskStatus.CLAIMED, agent_id=agent_id, claimed_by=user, lease_token=token, lease_expires_at=expires,
        claimed_at=now)
    if taken != 1:
        return None
    ctx = _context(task.run_id)
    node = ctx.nodes.get(task.node_id)
    if ctx.run.status != RunStatus.RUNNING or node is None or node.status != NodeStatus.DISPATCHED \
            or node.attempts != task.attempt:
        raise Fenced(task.run_id)
    task.status, task.agent_id, task.claimed_by, task.lease_token = TaskStatus.CLAIMED, agent_id, user, token
    task.lease_expires_at, task.claimed_at = expires, now
    bundle = build_task_bundle(ctx, task)
    changes: dict[str, Any] = {"started_at": now}
    if node.input is None:
        changes["input"] = bundle
    nodes_update({node.pk: changes})
    run_transition(run_id=ctx.run.id, to=None, expect=(RunStatus.RUNNING,), plan_version=ctx.run.plan_version,
                   events=[ev.event_node_start(node_id=task.node_id, capability_id=task.capability_id,
                                               attempt=task.attempt, task_id=task.id, agent_id=agent_id or None,
                                               claimed_by=None if agent_id else user.get_username())])
    return ClaimedTask(task=task, bundle=bundle)


def agent_for_user(*, user: Any, agent_id: str) -> Agent:
    """The agent if `user` owns it (superusers: any); else 404."""
    agent = Agent.objects.filter(pk=agent_id).first()
    if agent is None or not (agent.owner_id == user.pk or user.is_superuser):
        raise NotFound("No such agent.", code="agent_not_found")
    return agent


def task_claim_for_agent(*, user: Any, agent_id: str, now: datetime | None = None) -> ClaimedTask | None:
    """Claim the oldest open task of the agent's capabilities, within its
    `maxConcurrency` (claimed tasks with an unexpired lease); None if none."""
    agent = agent_for_user(user=user, agent_id=agent_id)
    now = now or timezone.now()
    capability_ids = agent_capability_ids(agent.pk)
    if not capability_ids:
        return None
    for _ in range(3):  # a candidate lost to a concurrent claim or cancel: try the next one
        with transaction.atomic():
            held = Task.objects.filter(agent_id=agent.pk, status=TaskStatus.CLAIMED, lease_expires_at__gt=now).count()
            if held >= agent.max_concurrency:
                return None
            task = (Task.objects.select_for_update(skip_locked=True, of=("self",))
                    .filter(status=TaskStatus.OPEN, capability_id__in=capability_ids, run__status=RunStatus.RUNNING)
                    .order_by("created_at", "id").first())
            if task is None:
                return None
            try:
                with transaction.atomic():
                    claimed = _take(task, agent_id=agent.pk, user=user, now=now)
            except Fenced:
                claimed = None
            if claimed is not None:
                return claimed
    return None


def task_claim_for_person(*, user: Any, task_id: str, now: datetime | None = None) -> ClaimedTask:
    """A person claims one task of a human capability (console). The same
    lease and fencing rules as agents; the person is the recorded actor."""
    from flexagents.roles import user_may_do_human_capability

    now = now or timezone.now()
    with transaction.atomic():
        task = Task.objects.select_for_update(of=("self",)).filter(pk=task_id).first()
        if task is None or task.agent_type != "human" or not user_may_do_human_capability(user, task.capability_id):
            raise NotFound("No such task.", code="task_not_found")
        if task.status != TaskStatus.OPEN:
            raise LeaseLost("The task is not open any more.", details={"status": task.status})
        try:
            with transaction.atomic():
                claimed = _take(task, agent_id="", user=user, now=now)
        except Fenced:
            claimed = None
        if claimed is not None:
            _audit_person(claimed.task, user, "task_claimed", {"capabilityId": task.capability_id,
                                                               "attempt": task.attempt})
    if claimed is None:
        raise LeaseLost("The task's run is no longer running.")
    return claimed


# --- the holder's calls ------------------------------------------------------------

def task_for_actor(*, user: Any, task_id: str) -> Task:
    """The task if `user` may act on it: the agent that registered its
    capability (its owner's token), an operator for a human task, a
    superuser; else 404 (never reveal existence)."""
    from flexagents.roles import user_may_do_human_capability
    from planner.models import AgentCapability

    task = Task.objects.select_related("claimed_by").filter(pk=task_id).first()
    if task is None:
        raise NotFound("No such task.", code="task_not_found")
    if user.is_superuser:
        return task
    owner = AgentCapability.objects.filter(capability_id=task.capability_id).values_list(
        "agent__owner_id", flat=True).first()
    if owner is not None and owner == user.pk:
        return task
    if task.agent_type == "human" and user_may_do_human_capability(user, task.capability_id):
        return task
    raise NotFound("No such task.", code="task_not_found")


def _fence(task: Task, *, lease_token: str, to: str, now: datetime, **fields: Any) -> None:
    """The holder's write: conditional on its lease (the fencing token)."""
    matched = Task.objects.filter(pk=task.pk, status=TaskStatus.CLAIMED, lease_token=lease_token,
                                  lease_expires_at__gt=now, run__status=RunStatus.RUNNING).update(
        status=to, finished_at=now, **fields)
    if matched != 1:
        raise LeaseLost()


def task_heartbeat(*, user: Any, task_id: str, lease_token: str) -> Task:
    task = task_for_actor(user=user, task_id=task_id)
    now = timezone.now()
    expires = now + task_lease_duration(person=not task.agent_id)
    with transaction.atomic():
        if not Task.objects.filter(pk=task.pk, status=TaskStatus.CLAIMED, lease_token=lease_token,
                                   lease_expires_at__gt=now, run__status=RunStatus.RUNNING).update(
                lease_expires_at=expires):
            raise LeaseLost()
    task.lease_expires_at = expires
    return task


def _finish(task: Task, *, lease_token: str, to: str, fields: dict[str, Any] | None = None) -> tuple[RunContext, NodeRun]:
    """Fence the task and load its run, in the caller's transaction."""
    now = timezone.now()
    _fence(task, lease_token=lease_token, to=to, now=now, **(fields or {}))
    ctx = _context(task.run_id)
    node = ctx.nodes.get(task.node_id)
    if ctx.run.status != RunStatus.RUNNING or node is None or node.status != NodeStatus.DISPATCHED \
            or node.attempts != task.attempt:
        raise LeaseLost()
    return ctx, node


def _duration_ms(task: Task) -> float:
    started = task.claimed_at or task.created_at
    return round((timezone.now() - started).total_seconds() * 1000.0, 3) if started else 0.0


@dataclass(frozen=True)
class Completion:
    accepted: bool
    errors: list[dict[str, Any]]


def task_complete(*, user: Any, task_id: str, lease_token: str, output: Any,
                  usage: dict[str, Any] | None = None) -> Completion:
    """Commit the holder's output like an in-process node's result: valid ->
    the node completes (facets, snapshot, node_complete, policies, what comes
    next); invalid -> validation_error, counted as an attempt, offered again
    up to maxRetries, then escalated to a person. One transaction."""
    task = task_for_actor(user=user, task_id=task_id)
    try:
        with transaction.atomic():
            ctx, node = _finish(task, lease_token=lease_token, to=TaskStatus.COMPLETED, fields={"usage": usage})
            outcome = executor.judge(ctx.graph_node(node.node_id), output, duration_ms=_duration_ms(task))
            step = Step()
            if outcome.kind == executor.SUCCESS:
                loop.on_success(ctx, step, node, outcome)
            else:
                Task.objects.filter(pk=task.pk).update(status=TaskStatus.INVALID,
                                                       error={"code": "validation_failed", "errors": outcome.errors})
                loop.on_invalid(ctx, step, node, outcome)
            loop.commit(ctx, step, holder=False)
            _audit_person(task, user, "task_completed" if outcome.kind == executor.SUCCESS else "task_output_invalid",
                          {"capabilityId": task.capability_id, "attempt": task.attempt})
    except Fenced:
        raise LeaseLost() from None
    return Completion(accepted=outcome.kind == executor.SUCCESS, errors=outcome.errors)


def task_fail(*, user: Any, task_id: str, lease_token: str, error: dict[str, Any], retryable: bool) -> None:
    """The holder gives up: retryable -> offered again (attempt counted, with
    the engine's back-off and retry limit); else the node fails (policies)."""
    task = task_for_actor(user=user, task_id=task_id)
    try:
        with transaction.atomic():
            ctx, node = _finish(task, lease_token=lease_token, to=TaskStatus.FAILED, fields={"error": error})
            outcome = executor.Outcome(executor.ERROR, error=dict(error), retryable=retryable,
                                       duration_ms=_duration_ms(task))
            step = Step()
            loop.on_error(ctx, step, node, outcome)
            loop.commit(ctx, step, holder=False)
            _audit_person(task, user, "task_failed", {"error": dict(error), "retryable": retryable})
    except Fenced:
        raise LeaseLost() from None


def task_clarify(*, user: Any, task_id: str, lease_token: str, question: str,
                 options: list[dict[str, Any]] | None = None, allow_free_form: bool = True) -> str:
    """The holder asks a person: a `clarify` HitlRequest for this node; the
    run waits. After the answer and resume, the node is offered again (a new
    task) with the answer in its bundle's `clarifications`. Returns the
    request id."""
    task = task_for_actor(user=user, task_id=task_id)
    try:
        with transaction.atomic():
            ctx, node = _finish(task, lease_token=lease_token, to=TaskStatus.CLARIFY)
            step = Step()
            policies.on_clarify(ctx, step, node, ClarificationNeeded(question, options=options,
                                                                     allow_free_form=allow_free_form))
            loop.commit(ctx, step, holder=False)
            _audit_person(task, user, "task_clarify", {"question": question})
    except Fenced:
        raise LeaseLost() from None
    request = next(e for e in step.events if e.type == ev.HITL_REQUEST)
    return str(request.payload["requestId"])


# --- people (human capabilities, in the console) ------------------------------------

def tasks_for_person(user: Any, *, status: str | None = TaskStatus.OPEN) -> Any:
    """Human tasks a person may claim or holds (the console's task inbox):
    operators and superusers see every human task, a person granted human
    capabilities (group `capability:<id>`) their tasks; `status` None: any.
    Tasks of runs no longer running are left out of open/claimed lists."""
    from flexagents.roles import human_capabilities_granted

    granted = None if user.is_superuser else human_capabilities_granted(user)
    if granted is not None and not granted:
        return Task.objects.none()
    qs = Task.objects.filter(agent_type="human").select_related("run", "claimed_by").order_by("-created_at", "-id")
    if granted is not None:
        qs = qs.filter(capability_id__in=sorted(granted))
    if status is not None:
        qs = qs.filter(status=status)
        if status in LIVE_STATUSES:
            qs = qs.filter(run__status=RunStatus.RUNNING)
    return qs


def task_bundle_for_person(*, user: Any, task_id: str) -> dict[str, Any]:
    """What a person sees of a human task before and while working on it:
    the node's bundle, redacted (API.md, Redaction: a page is a surface),
    with the output facets' JSON Schemas for the form."""
    from flexagents.redaction import FREE_TEXT_KEYS, redact, redact_facets
    from planner.facets import get_catalog

    task = task_for_actor(user=user, task_id=task_id)
    if task.agent_type != "human":
        raise NotFound("No such task.", code="task_not_found")
    with transaction.atomic():
        ctx = _context(task.run_id)
        bundle = build_task_bundle(ctx, task)
        output_facets = list(ctx.graph_node(task.node_id).get("outputFacets", []))
    catalog = get_catalog()
    schemas = {name: facet.schema for name, facet in catalog.items()}
    bundle["facets"] = redact_facets(bundle["facets"], schemas)
    shown: dict[str, Any] = redact(bundle, text_keys=FREE_TEXT_KEYS)
    shown["outputFacets"] = [{"name": name, "title": catalog[name].title, "description": catalog[name].description,
                              "schema": catalog[name].schema} for name in output_facets if name in catalog]
    return shown


def _audit_person(task: Task, user: Any, action: str, details: dict[str, Any]) -> None:
    """A person's act on a human task is in the run's audit trail."""
    from runs.models import AuditEntry

    if task.agent_id or user is None:
        return
    AuditEntry.objects.create(run_id=task.run_id, action=action, actor=user, actor_display=user.get_username(),
                              plan_version=task.plan_version,
                              details={"taskId": task.id, "nodeId": task.node_id, **details})


# --- listing -----------------------------------------------------------------------

def tasks_visible_to(user: Any) -> Any:
    """Tasks the user may act on: operators and superusers every one, an
    agent's owner those of the capabilities it registered. Others: none."""
    from flexagents.roles import user_may_operate_all_runs
    from planner.models import AgentCapability

    qs = Task.objects.select_related("claimed_by")
    if user.is_superuser or user_may_operate_all_runs(user):
        return qs
    mine = AgentCapability.objects.filter(agent__owner_id=user.pk).values_list("capability_id", flat=True)
    return qs.filter(capability_id__in=list(mine))


# --- sweeps (every worker, every FLEX_SWEEP_SECONDS) -------------------------------

def sweep_tasks(*, now: datetime | None = None, limit: int = 100) -> dict[str, int]:
    """Take back expired task leases, mark silent agents inactive, end the
    tasks of inactive capabilities. Returns counts (for logs and tests)."""
    now = now or timezone.now()
    expired = 0
    for task_id in list(Task.objects.filter(status=TaskStatus.CLAIMED, lease_expires_at__lt=now)
                        .order_by("lease_expires_at").values_list("pk", flat=True)[:limit]):
        if _take_back(task_id, now=now):
            expired += 1
    marked = agents_mark_silent_inactive(now=now)
    inactive = inactive_capability_ids()
    ended = 0
    if inactive:
        for task_id in list(Task.objects.filter(status__in=LIVE_STATUSES, capability_id__in=inactive)
                            .values_list("pk", flat=True)[:limit]):
            if _end_inactive(task_id, now=now):
                ended += 1
    closed = cancel_open_tasks_of_finished_runs()
    return {"expired": expired, "agentsInactive": len(marked), "inactiveTasks": ended, "closed": closed}


def _take_back(task_id: str, *, now: datetime) -> bool:
    """An expired lease: the task is `expired` and the node offered again
    (a new task, the next attempt), bounded like a crashed worker."""
    with transaction.atomic():
        if not Task.objects.filter(pk=task_id, status=TaskStatus.CLAIMED, lease_expires_at__lt=now).update(
                status=TaskStatus.EXPIRED, finished_at=now):
            return False
        task = Task.objects.get(pk=task_id)
        ctx = _context(task.run_id)
        node = ctx.nodes.get(task.node_id)
        if ctx.run.status != RunStatus.RUNNING or node is None or node.status != NodeStatus.DISPATCHED \
                or node.attempts != task.attempt:
            return True  # nothing of the run to change (it ended meanwhile)
        crash_attempts = node.crash_attempts + 1
        decision = retry.after_worker_lost(crash_attempts=crash_attempts,
                                           max_crash_attempts=settings.FLEX_MAX_CRASH_ATTEMPTS)
        error = {"code": "lease_expired", "message": f"The task's lease expired before {task.agent_id or 'its holder'} "
                                                    "finished it."}
        step = Step()
        step.update_node(node.node_id, crash_attempts=crash_attempts)
        step.event(ev.event_node_error(node_id=node.node_id, capability_id=node.capability_id, attempt=node.attempts,
                                       error=error, will_retry=decision.retry))
        if decision.retry:
            start_node(ctx, step, node.node_id)
        else:
            step.update_node(node.node_id, status=NodeStatus.FAILED, error=error, completed_at=now)
            fail(step, code="lease_expired", message=f"Node {node.node_id}'s task lease expired "
                                                     f"{crash_attempts} times.", extra={"nodeId": node.node_id})
        try:
            loop.commit(ctx, step, holder=False)
        except Fenced:
            return False
    metrics.lease_takeover()
    logger.warning("task lease expired", extra={"task_id": task_id, "run_id": task.run_id, "node_id": task.node_id,
                                                "agent_id": task.agent_id, "will_retry": decision.retry})
    return True


def _end_inactive(task_id: str, *, now: datetime) -> bool:
    """A task of a capability gone inactive: the run fails with
    `capability_inactive`, unless a policy replans (the hook)."""
    with transaction.atomic():
        if not Task.objects.filter(pk=task_id, status__in=LIVE_STATUSES).update(
                status=TaskStatus.CANCELLED, finished_at=now,
                error={"code": "capability_inactive", "message": "The capability's agent is inactive."}):
            return False
        task = Task.objects.get(pk=task_id)
        ctx = _context(task.run_id)
        node = ctx.nodes.get(task.node_id)
        if ctx.run.status != RunStatus.RUNNING or node is None or node.status != NodeStatus.DISPATCHED:
            return True
        step = Step()
        error = {"code": "capability_inactive",
                 "message": f"Capability {node.capability_id} became inactive (its agent stopped sending "
                            f"heartbeats) while node {node.node_id} waited for it."}
        step.event(ev.event_node_error(node_id=node.node_id, capability_id=node.capability_id,
                                       attempt=node.attempts, error=error, will_retry=False))
        step.update_node(node.node_id, status=NodeStatus.FAILED, error=error, completed_at=now)
        if not policies.on_capability_inactive(ctx, step, node, error):
            fail(step, code="capability_inactive", message=error["message"],
                 extra={"nodeId": node.node_id, "capabilityId": node.capability_id})
        elif step.status is None:
            # A policy replanned: start what the new plan makes ready, in this
            # commit, so the run is claimable (or dispatched) at once.
            loop.start_next_or_finish(ctx, step, {k: n.status for k, n in ctx.nodes.items()})
        try:
            loop.commit(ctx, step, holder=False)
        except Fenced:
            return False
    return True


def cancel_open_tasks_of_finished_runs(*, limit: int = 500) -> int:
    """Tasks still open or claimed whose run ended (cancelled, failed): closed
    so lists show the truth. Their holders already get 409 lease_lost."""
    ids = list(Task.objects.filter(status__in=LIVE_STATUSES)
               .exclude(run__status=RunStatus.RUNNING).values_list("pk", flat=True)[:limit])
    if not ids:
        return 0
    return Task.objects.filter(pk__in=ids, status__in=LIVE_STATUSES).exclude(run__status=RunStatus.RUNNING).update(
        status=TaskStatus.CANCELLED, finished_at=timezone.now())
