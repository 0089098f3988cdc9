"""Advance one claimed run, one committed step at a time.

Each step is ONE transaction, fenced by the lease token and the run's
status, that records what just happened and what starts next:

    plan      -> start, plan_requested, plan_generated | plan_rejected,
                 and the first node's node_start (its attempt counted)
    node done -> the node's result, facet values with provenance, the
                 snapshot, node_complete, policy effects, and the next
                 node's node_start (or the final output and `complete`)
    retry     -> validation_error | node_error, and the node's next node_start
    ask       -> hitl_request; the run waits and the worker lets go

So a node costs one commit in steady state, attempts are always counted
before the capability is called, and a crash at any point leaves a state
that any worker can continue from.
"""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, Callable

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from flexagents import tracing
from flexagents.logging import log_context
from hitl.services import FollowUp, hitl_follow_up_pending_pause
from planner.contracts import compile_facets, validate_instance
from planner.planner import build_plan
from runs import events as ev
from runs import metrics, notify
from runs.engine import executor, policies, retry, scheduling
from runs.engine.lease import ACTIVE_STATUSES, Claim, Heartbeat, claim_next, lease_duration
from runs.engine.step import Halt, RunContext, Step, fail, start_node
from runs.events import PendingEvent
from runs.models import TERMINAL_STATUSES, NodeRun, NodeStatus, PlanVersion, Run, RunStatus
from runs.transitions import (FacetWrite, Fenced, TransitionNotAllowed, all_or_nothing, claim_loaded, facets_write,
                              node_transition_allowed, nodes_update, rows_insert, run_transition, step_commit)

logger = logging.getLogger("runs.engine.loop")


def lease_after(ctx: RunContext, step: Step, statuses: dict[str, str], *, holder: bool,
                now: Any) -> tuple[dict[str, Any], bool]:
    """The run's lease fields after a step, and whether workers must be woken.

    - A worker (`holder`) keeps its lease, renewed for free, while it has
      work; a step that ends the run or makes it wait for a person (any
      status but queued, planning, running) lets go in the same commit; when the run is left running with only dispatched nodes (tasks for
      agents or people), it lets go in this same commit: no owner, no expiry
      (so no worker claims or sweeps it) and the token moved on.
    - A commit made for a task (`holder=False`, runs.engine.tasks) holds no
      lease: it leaves a run with a node to execute (or queued) claimable at
      once, and any other run without a lease.
    """
    status = step.status or ctx.run.status
    if holder and status not in ACTIVE_STATUSES:
        # Done, or waiting for a person: let go in this commit (no `release` after).
        return {"lease_owner": "", "lease_expires_at": None}, False
    running = any(s == NodeStatus.RUNNING for s in statuses.values())
    dispatched = any(s == NodeStatus.DISPATCHED for s in statuses.values())
    if holder and not (status == RunStatus.RUNNING and dispatched and not running):
        return {"lease_expires_at": now + lease_duration()}, False
    released: dict[str, Any] = {"lease_owner": "", "lease_expires_at": None, "lease_token": ctx.claim.token + 1}
    if holder:
        return released, False
    if status == RunStatus.RUNNING and running:
        # Claimable by any worker's cheap query (lease.claim_next), not a takeover.
        return {**released, "lease_expires_at": now - timedelta(milliseconds=1)}, True
    return released, status == RunStatus.QUEUED


@tracing.traced("flex.run.step")  # a span per committed step when OpenTelemetry is configured
def commit(ctx: RunContext, step: Step, *, expect: tuple[str, ...] = (RunStatus.RUNNING,),
           holder: bool = True, via: str | None = None) -> None:
    """Write a step in one transaction, fenced by lease token and status.
    `holder=False`: a commit for a task, by no worker (see `lease_after`).
    `via`: a status the run passes through in this commit (`plan`)."""
    run = ctx.run
    now = timezone.now()
    # Node changes are applied to copies first, to compute the snapshot.
    statuses = step.statuses_over({k: n.status for k, n in ctx.nodes.items()})
    pending = scheduling.pending_ids(ctx.graph.get("nodes", []), statuses)
    lease_fields, wake = lease_after(ctx, step, statuses, holder=holder, now=now)
    run_updates = {
        "pending_node_ids": pending,
        "has_snapshot": bool(ctx.graph),
        **lease_fields,
        "plan_version": run.plan_version,
        **step.run_updates,
    }
    final_status = step.status or (via if via is not None else None)
    if final_status is not None and final_status in TERMINAL_STATUSES:
        run_updates["completed_at"] = now
        metrics.note_run_created(run.id, run.created_at)
    if step.writes or step.earlier_node_updates:
        with transaction.atomic():
            if wake:
                transaction.on_commit(notify.announce_work)
            # Writes of their own (plan version and node rows, HITL request)
            # come after the fenced run update and before the node updates;
            # node changes go batch by batch (a replan's completed -> pending
            # before the same step starts the node again).
            run_transition(run_id=run.id, to=step.status, expect=expect, plan_version=run_updates["plan_version"],
                           lease_token=ctx.claim.token, updates=run_updates, events=step.events, via=via)
            rows_insert(step.inserts)
            facets_write(run.id, step.facets)
            for write in step.writes:
                write()
            # After the writes: the plan's node rows get their pks there.
            for batch in step.node_batches():
                nodes_update({ctx.nodes[node_id].pk: changes for node_id, changes in batch.items()})
        # Triggers are not read on this path: a trigger recorded since the last
        # read is seen by the next hot-path commit's read (before the next step).
    else:
        # The hot path: one statement, one round trip, one commit on PostgreSQL.
        committed = step_commit(
            run_id=run.id, to=step.status, expect=expect, plan_version=run_updates["plan_version"],
            lease_token=ctx.claim.token, updates=run_updates, facets=step.facets,
            nodes={ctx.nodes[node_id].pk: changes for node_id, changes in step.node_updates.items()},
            events=step.events, via=via, inserts=step.inserts)
        ctx.triggers_pending = committed.triggers_pending
        if wake:
            # After the commit (on_commit outside a transaction would run now).
            transaction.on_commit(notify.announce_work)
    if final_status is not None:
        run_updates["status"] = final_status
    log_node_events(ctx, step)
    # Committed: bring memory up to date.
    for batch in step.node_batches():
        for node_id, changes in batch.items():
            node = ctx.nodes[node_id]
            for key, value in changes.items():
                if hasattr(value, "resolve_expression"):
                    continue
                setattr(node, key, value)
    for key, value in run_updates.items():
        setattr(run, key, value)


NODE_LOG_EVENTS = {ev.NODE_START: logging.INFO, ev.NODE_COMPLETE: logging.INFO, ev.NODE_ERROR: logging.WARNING,
                   ev.VALIDATION_ERROR: logging.WARNING}


def log_node_events(ctx: RunContext, step: Step) -> None:
    """One structured line per committed node start, completion and error
    (an invalid output is an error too): run, node, capability, attempt and
    the node's status after the step. The correlation id comes from the
    claim's log context (see `advance`)."""
    for event in step.events:
        level = NODE_LOG_EVENTS.get(event.type)
        if level is None or not event.node_id:
            continue
        node = ctx.nodes.get(event.node_id)
        status = step.statuses_over({}).get(event.node_id) or (node.status if node else None)
        extra = {"run_id": ctx.run.id, "correlation_id": ctx.run.correlation_id or None,
                 "node_id": event.node_id, "capability_id": node.capability_id if node else None,
                 "attempt": event.payload.get("attempt"), "status": status, "plan_version": ctx.run.plan_version}
        if event.type == ev.NODE_COMPLETE:
            extra["duration_ms"] = event.payload.get("durationMs")
        elif event.type == ev.NODE_ERROR:
            extra.update(error_code=(event.payload.get("error") or {}).get("code"),
                         will_retry=event.payload.get("willRetry"))
        elif event.type == ev.VALIDATION_ERROR:
            extra["error_code"] = "validation_failed"
        logger.log(level, event.type, extra=extra)


# --- steps -------------------------------------------------------------------

def start_next_or_finish(ctx: RunContext, step: Step, statuses: dict[str, str], *, goals: bool = True) -> None:
    """After a node completed (statuses already include it): start the next
    ready node, or compose, validate and store the final output. Before the
    output node starts, the envelope's goals are evaluated (they may replan,
    ask a person or fail the run instead)."""
    statuses = step.statuses_over(statuses)  # e.g. a replan in this step
    graph_nodes = ctx.graph["nodes"]
    ready = scheduling.ready_ids(graph_nodes, statuses)
    if goals and ready and ready[0] == ctx.graph.get("outputNodeId", "output") and policies.goals_of(ctx.envelope):
        if policies.check_goals(ctx, step):
            if step.status is None:
                # A goal replan: start what it made ready under the new version.
                start_next_or_finish(ctx, step, statuses, goals=False)
            return
    if ready:
        start_node(ctx, step, ready[0])
        return
    if scheduling.finished(graph_nodes, statuses):
        finish(ctx, step)
        return
    # Nothing ready and not finished: a node waits on a person or failed.


def finish(ctx: RunContext, step: Step) -> None:
    output_node_id = ctx.graph.get("outputNodeId", "output")
    produced = step.node_updates.get(output_node_id, {}).get("output")
    if produced is None:
        produced = ctx.nodes[output_node_id].output or {}
    output = produced.get("output", {})
    contract = output_contract_schema(ctx.envelope)
    errors = validate_instance(contract, output)
    if errors:
        step.event(ev.event_validation_error(attempt=1, errors=errors))
        fail(step, code="output_validation_failed", message="The composed output does not satisfy the output contract.",
             extra={"errors": errors})
        return
    step.run_updates["output"] = output
    step.status = RunStatus.COMPLETED
    step.event(ev.event_complete(status="completed", output=output))


def output_contract_schema(envelope: dict[str, Any]) -> dict[str, Any]:
    contract = envelope.get("outputContract", {})
    if contract.get("mode") == "json_schema":
        schema: dict[str, Any] = contract.get("schema", {})
        return schema
    return compile_facets(contract.get("facets", [])).schema


def plan(ctx: RunContext) -> None:
    """First step of a new run: plan it and start its first node (queued ->
    planning -> running, in one commit), or fail it.

    The planner is a pure function: a worker that dies while planning has
    committed nothing, and the run is claimed again (its lease expires). A
    planner that raises leaves the run `planning` (the start committed
    alone) for the sweep's takeover, as before planning was folded into one
    commit."""
    run = ctx.run
    step = Step()
    expect: tuple[str, ...] = (RunStatus.PLANNING,)
    via: str | None = None
    if run.status == RunStatus.QUEUED:
        step.event(ev.event_start(run_id=run.id, thread_id=run.thread_id or None, status=RunStatus.PLANNING,
                                  correlation_id=run.correlation_id or None))
        expect, via = (RunStatus.QUEUED,), RunStatus.PLANNING
    try:
        result = build_plan(run.envelope)
    except Exception:
        if via is not None:
            step.status = RunStatus.PLANNING
            commit(ctx, step, expect=expect)
        raise
    step.event(ev.event_plan_requested(attempt=1, capabilities=result.considered))
    if result.graph is None:
        step.event(ev.event_plan_rejected(attempt=1, diagnostics=result.diagnostics))
        fail(step, code="plan_rejected", message="No plan can satisfy the output contract.",
             extra={"diagnostics": result.diagnostics})
        commit(ctx, step, expect=expect, via=via)
        return
    graph = result.graph.to_dict()
    ctx.graph = graph
    run.plan_version = 1
    node_rows = [
        NodeRun(run_id=run.id, node_id=n["id"], capability_id=n["capabilityId"], kind=n["kind"], position=i,
                plan_version=1)
        for i, n in enumerate(graph["nodes"])
    ]
    pending_ids = [n["id"] for n in graph["nodes"]]

    # The version and the node rows (one multi-row insert), inserted in this
    # step's statuses (`insert_started`); their pks are set by the commit.
    step.inserts.append(PlanVersion(run_id=run.id, version=1, reason=PlanVersion.Reason.INITIAL,
                                    trigger={"kind": "submit"}, graph=graph,
                                    node_statuses={nid: NodeStatus.PENDING for nid in pending_ids},
                                    pending_node_ids=pending_ids, schema_hash=graph.get("schemaHash", "")))
    step.inserts.extend(node_rows)
    step.event(ev.event_plan_generated(
        version=1,
        nodes=[{"id": n["id"], "capabilityId": n["capabilityId"], "kind": n["kind"], "label": n.get("label", ""),
                "inputFacets": n["inputFacets"], "outputFacets": n["outputFacets"],
                "rationale": n.get("rationale", "")} for n in graph["nodes"]],
        edges=graph.get("edges", []),
        metadata=graph.get("metadata", {}),
    ))
    step.status = RunStatus.RUNNING
    # Node rows exist in memory before commit so the step can refer to them;
    # their pks are set when the commit inserts them.
    ctx.nodes = {row.node_id: row for row in node_rows}
    halted = policies.on_start(ctx, step)
    if not halted:
        ready = scheduling.ready_nodes(ctx.states())
        if ready:
            start_node(ctx, step, ready[0])
    insert_started(step, ctx.nodes)
    commit(ctx, step, expect=expect, via=via)


def insert_started(step: Step, rows: dict[str, NodeRun]) -> None:
    """New node rows take this step's changes before they are inserted (a
    started first node is inserted `running`, not inserted `pending` and
    updated): each move checked against the node table as an update would
    be, one statement fewer."""
    if step.earlier_node_updates:
        return
    for node_id, changes in step.node_updates.items():
        row = rows[node_id]
        to = changes.get("status")
        if to is not None and not node_transition_allowed(row.status, str(to)):
            raise TransitionNotAllowed(f"node {node_id}: {row.status} -> {to}")
        for key, value in changes.items():
            setattr(row, key, value)
    step.node_updates = {}


def resume_started(ctx: RunContext) -> None:
    """A resumed (re-queued) run: mark it running and start what is ready.

    A run queued with a pause reason was resumed by a person whose answer's
    follow-up is `pause`: it goes running → paused here, as the transition
    table wants (there is no awaiting_hitl → paused), with its
    `policy_triggered` in the pausing commit."""
    step = Step()
    step.status = RunStatus.RUNNING
    if ctx.run.pause_reason:
        commit(ctx, step, expect=(RunStatus.QUEUED,))
        step = Step()
        step.status = RunStatus.PAUSED
        follow_up = hitl_follow_up_pending_pause(run_id=ctx.run.id)
        if follow_up is not None:
            step.event(follow_up_event(follow_up))
        else:
            step.event(ev.event_log(level="info", message=f"paused: {ctx.run.pause_reason}"))
        commit(ctx, step)
        return
    statuses = {k: n.status for k, n in ctx.nodes.items()}
    start_next_or_finish(ctx, step, statuses)
    if step.status in (RunStatus.AWAITING_HITL, RunStatus.PAUSED):
        # An unmet goal asked a person: the table has no queued -> awaiting_hitl,
        # so the run first becomes running, then waits (two commits).
        running = Step()
        running.status = RunStatus.RUNNING
        commit(ctx, running, expect=(RunStatus.QUEUED,))
        commit(ctx, step)
        return
    commit(ctx, step, expect=(RunStatus.QUEUED,))


def follow_up_event(follow_up: FollowUp) -> PendingEvent:
    """The `policy_triggered` of a HITL decision's follow-up
    (`hitl.services.hitl_follow_up_payload`)."""
    return ev.event_policy_triggered(
        policy_id=follow_up["policyId"], trigger=follow_up["trigger"], action=follow_up["action"],
        node_id=follow_up["nodeId"], request_id=follow_up["requestId"],
        resolution=follow_up["resolution"], follow_up=follow_up["followUp"])


def recover(ctx: RunContext) -> None:
    """Takeover after the previous worker's lease expired: every node it had
    started counts as a lost attempt (bounded)."""
    step = Step()
    crashed = [n for n in ctx.nodes.values() if n.status == NodeStatus.RUNNING]
    if not crashed:
        statuses = {k: n.status for k, n in ctx.nodes.items()}
        start_next_or_finish(ctx, step, statuses)
        if step.events or step.status:
            commit(ctx, step)
        return
    for node in crashed:
        crash_attempts = node.crash_attempts + 1
        decision = retry.after_worker_lost(crash_attempts=crash_attempts,
                                           max_crash_attempts=settings.FLEX_MAX_CRASH_ATTEMPTS)
        error = {"code": "worker_lost", "message": "The worker running this node stopped before committing a result."}
        step.update_node(node.node_id, crash_attempts=crash_attempts)
        step.event(ev.event_node_error(node_id=node.node_id, capability_id=node.capability_id,
                                       attempt=node.attempts, error=error, will_retry=decision.retry))
        if decision.retry:
            start_node(ctx, step, node.node_id)
        else:
            step.update_node(node.node_id, status=NodeStatus.FAILED, error=error, completed_at=timezone.now())
            fail(step, code="worker_lost", message=f"Node {node.node_id} lost its worker "
                                                    f"{crash_attempts} times.", extra={"nodeId": node.node_id})
            break
    commit(ctx, step)


def run_node(ctx: RunContext, node: NodeRun, heartbeat: Heartbeat | None) -> None:
    """Execute a started node and commit its outcome (one transaction)."""
    graph_node = ctx.graph_node(node.node_id)
    history = node.validation_errors or []
    bundle = executor.build_bundle(
        run_id=ctx.run.id, node=graph_node, objective=ctx.run.objective, facets=ctx.run.facets,
        envelope=ctx.envelope, clarifications=policies.clarifications_for(ctx, node.node_id),
        attempt=node.attempts, plan_version=ctx.run.plan_version,
        goal_feedback=policies.goal_feedback_for(ctx, node.node_id),
        previous_errors=history[-1].get("errors", []) if history and isinstance(history[-1], dict) else [],
        tokens_left=tokens_left(ctx))
    outcome = executor.execute(graph_node, bundle)
    if heartbeat is not None and heartbeat.lost.is_set():
        # Another worker owns the run now: whatever we got is discarded (the
        # fenced commit would refuse it anyway).
        raise Halt("lease lost during node execution")
    step = Step()
    if node.input is None or node.input.get("planVersion") != bundle.plan_version:
        # The bundle of the node's first attempt under this plan version (a
        # node re-run by a replan gets a new one: goal feedback, say).
        step.update_node(node.node_id, input=bundle.to_dict())
    if outcome.usage is not None:
        step.update_node(node.node_id, usage=[*(node.usage or []), {"attempt": node.attempts, **outcome.usage}])
        if over_token_budget(ctx, step, node, outcome):
            commit(ctx, step)
            return
    if outcome.kind == executor.SUCCESS:
        on_success(ctx, step, node, outcome)
    elif outcome.kind == executor.INVALID:
        on_invalid(ctx, step, node, outcome)
    elif outcome.kind == executor.CLARIFY:
        assert outcome.clarification is not None  # the executor sets it with CLARIFY
        policies.on_clarify(ctx, step, node, outcome.clarification)
    else:
        on_error(ctx, step, node, outcome)
    commit(ctx, step)


def tokens_used(ctx: RunContext, step: Step) -> int:
    """Prompt and completion tokens of every model call of the run so far,
    this step's included (the lease holder knows every node)."""
    total = 0
    for node_id, node in ctx.nodes.items():
        entries = step.node_updates.get(node_id, {}).get("usage", node.usage) or []
        total += sum(int(e.get("promptTokens") or 0) + int(e.get("completionTokens") or 0) for e in entries)
    return total


def tokens_left(ctx: RunContext) -> int | None:
    """What is left of `constraints.maxTokens` (None: no budget)."""
    budget = ctx.envelope.get("constraints", {}).get("maxTokens")
    if not isinstance(budget, int) or isinstance(budget, bool):
        return None
    return max(budget - tokens_used(ctx, Step()), 0)


def over_token_budget(ctx: RunContext, step: Step, node: NodeRun, outcome: executor.Outcome) -> bool:
    """`constraints.maxTokens`: the attempt that goes over it ends the run
    (`token_budget_exceeded`). Its output is kept on the node for people to
    read, but it is not used: no facet, no next node."""
    budget = ctx.envelope.get("constraints", {}).get("maxTokens")
    if not isinstance(budget, int) or isinstance(budget, bool):
        return False
    used = tokens_used(ctx, step)
    if used <= budget:
        return False
    error = {"code": "token_budget_exceeded",
             "message": f"The run used {used} language-model tokens; constraints.maxTokens allows {budget}."}
    step.update_node(node.node_id, status=NodeStatus.FAILED, error=error, completed_at=timezone.now(),
                     duration_ms=outcome.duration_ms, output=outcome.output)
    step.event(ev.event_node_error(node_id=node.node_id, capability_id=node.capability_id, attempt=node.attempts,
                                   error=error, will_retry=False, usage=outcome.usage))
    fail(step, code="token_budget_exceeded", message=error["message"],
         extra={"nodeId": node.node_id, "maxTokens": budget, "usedTokens": used})
    return True


def on_success(ctx: RunContext, step: Step, node: NodeRun, outcome: executor.Outcome) -> None:
    output = outcome.output or {}
    now = timezone.now()
    step.update_node(node.node_id, status=NodeStatus.COMPLETED, output=output, completed_at=now,
                     duration_ms=outcome.duration_ms, error=None, commits=F("commits") + 1)
    # Only this node's facets are written (a row each, with provenance);
    # memory keeps the whole snapshot.
    new_facets = {name: value for name, value in output.items() if name != "output"}  # `output` is no facet
    new_provenance = {name: {"nodeId": node.node_id, "capabilityId": node.capability_id,
                             "planVersion": ctx.run.plan_version} for name in new_facets}
    step.facets += [FacetWrite(name, value, node.node_id, node.capability_id, ctx.run.plan_version)
                    for name, value in new_facets.items()]
    ctx.run.facets = {**ctx.run.facets, **new_facets}
    ctx.run.provenance = {**ctx.run.provenance, **new_provenance}
    step.event(ev.event_node_complete(node_id=node.node_id, capability_id=node.capability_id,
                                      attempt=node.attempts, output_facets=list(output.keys()),
                                      duration_ms=outcome.duration_ms, usage=outcome.usage))
    statuses = {k: n.status for k, n in ctx.nodes.items()}
    statuses[node.node_id] = NodeStatus.COMPLETED
    if policies.on_node_complete(ctx, step, node):
        return  # a policy paused the run or asked a person
    if step.status is None:
        start_next_or_finish(ctx, step, statuses)


def on_invalid(ctx: RunContext, step: Step, node: NodeRun, outcome: executor.Outcome) -> None:
    step.event(ev.event_validation_error(node_id=node.node_id, attempt=node.attempts, errors=outcome.errors,
                                         usage=outcome.usage))
    history = list(node.validation_errors or []) + [{"attempt": node.attempts, "errors": outcome.errors}]
    step.update_node(node.node_id, validation_errors=history)
    decision = retry.after_invalid_output(attempts=node.attempts, max_retries=ctx.max_retries)
    if decision.retry:
        start_node(ctx, step, node.node_id)
        return
    invalid = outcome.output or {}
    if policies.on_validation_fail(ctx, step, node, outcome.errors, output=invalid):
        return  # an onValidationFail policy decided (hitl, pause, replan, fail)
    # Seed 8.3: retries exhausted, no policy decided: a person reviews the
    # invalid output instead of the run failing.
    policies.escalate_invalid_output(ctx, step, node, outcome.errors, output=invalid)


def on_error(ctx: RunContext, step: Step, node: NodeRun, outcome: executor.Outcome) -> None:
    decision = retry.after_error(attempts=node.attempts, max_retries=ctx.max_retries, retryable=outcome.retryable,
                                 backoff_base=settings.FLEX_RETRY_BACKOFF_SECONDS, retry_after=outcome.retry_after)
    step.event(ev.event_node_error(node_id=node.node_id, capability_id=node.capability_id, attempt=node.attempts,
                                   error=outcome.error, will_retry=decision.retry, usage=outcome.usage))
    if decision.retry and decision.delay > 0:
        # Back off in the queue, holding no worker: the node is pending again
        # and the run is claimable from `available_at` (its next claim starts
        # the node, counting the attempt).
        step.update_node(node.node_id, status=NodeStatus.PENDING)
        step.status = RunStatus.QUEUED
        step.run_updates["available_at"] = timezone.now() + timedelta(seconds=decision.delay)
        return
    if decision.retry:
        start_node(ctx, step, node.node_id)
        return
    step.update_node(node.node_id, status=NodeStatus.FAILED, error=outcome.error, completed_at=timezone.now())
    if policies.on_node_fail(ctx, step, node, outcome.error):
        return  # an onNodeFail policy decided (replan, fail)
    error = outcome.error or {}
    fail(step, code=error.get("code", "node_failed"), message=f"Node {node.node_id} failed: {error.get('message')}",
         extra={"nodeId": node.node_id})


def apply_manual_trigger(ctx: RunContext) -> bool:
    """Apply the oldest manual policy trigger recorded on the run (by the
    trigger endpoint, under the run's row lock) in one committed step, and
    remove it from the run in that same step. True when one was applied."""
    if not ctx.triggers_pending:
        return False
    pending = Run.objects.filter(pk=ctx.run.id).values_list("manual_triggers", flat=True).first() or []
    ctx.triggers_pending = bool(pending)
    if not pending:
        return False
    entry = pending[0]
    step = Step()
    policy = policies.manual_policy(ctx, str(entry.get("policyId")))
    if policy is not None:
        policies.on_manual(ctx, step, policy)
        if step.status == RunStatus.FAILED:
            # A node started by the previous step never runs now.
            for node in ctx.nodes.values():
                if node.status == NodeStatus.RUNNING and node.node_id not in step.node_updates:
                    step.update_node(node.node_id, status=NodeStatus.FAILED, completed_at=timezone.now(),
                                     error={"code": "policy_failed", "message": f"policy {policy['id']} failed the run"})
    else:
        step.event(ev.event_log(level="warning", message=f"manual policy {entry.get('policyId')} is gone"))
    run_id = ctx.run.id

    def drop_trigger() -> None:
        # After the fenced UPDATE of the commit: the run's row is locked.
        current = Run.objects.filter(pk=run_id).values_list("manual_triggers", flat=True).get() or []
        Run.objects.filter(pk=run_id).update(manual_triggers=[t for t in current if t.get("id") != entry.get("id")])

    step.writes.append(drop_trigger)
    commit(ctx, step)
    return True


# --- driver --------------------------------------------------------------------

def load(claim: Claim) -> RunContext:
    run = claim.take_run() or Run.objects.select_related("created_by").get(pk=claim.run_id)
    ctx = RunContext(claim=claim, run=run, triggers_pending=bool(run.manual_triggers))
    if run.plan_version:
        loaded = claim_loaded(run)  # PostgreSQL: the claim's statement read them along
        if loaded is not None:
            run.facets, run.provenance = run.facet_snapshot(loaded.facet_rows)
            ctx.graph = loaded.graph
            ctx.nodes = {n.node_id: n for n in loaded.nodes}
            ctx.clarifications = loaded.clarifications
            return ctx
        # The worker's copy of the snapshot: the inputs and what nodes produced.
        run.facets, run.provenance = run.facet_snapshot()
        version = PlanVersion.objects.get(run_id=run.id, version=run.plan_version)
        ctx.graph = version.graph
        ctx.nodes = {n.node_id: n for n in NodeRun.objects.filter(run_id=run.id)}
    return ctx


def _username(run: Run) -> str | None:
    """Who created the run (for the log context), without a query when the
    claim brought it along (`created_by_username`)."""
    if hasattr(run, "created_by_username"):
        return str(run.created_by_username) if run.created_by_username else None
    return getattr(run.created_by, "username", None) if run.created_by_id else None


def claim_and_plan(*, worker_id: str, sweep: bool) -> tuple[Claim, RunContext | None] | None:
    """Claim the next run; a new one (queued, never planned) is planned in
    the claim's own transaction, so claiming and planning it cost one
    commit, and a resumed one (queued again) is started in it the same way. The row is locked (SKIP LOCKED) while the pure, local planner
    runs; a worker that dies meanwhile commits nothing and the run stays
    queued. Returns (claim, its context when planned here) or None.

    A planner (or resume) that raises rolls the whole transaction back; the
    run is then claimed on its own and `advance` does it as before (its failure leaves
    the run `planning` for the sweep)."""
    try:
        with all_or_nothing():
            claim = claim_next(worker_id=worker_id, sweep=sweep)
            if claim is None:
                return None
            ctx = load(claim)
            if ctx.run.status != RunStatus.QUEUED:
                return claim, ctx
            with log_context(run_id=ctx.run.id, correlation_id=ctx.run.correlation_id, worker=worker_id,
                             user=_username(ctx.run)):
                if ctx.run.plan_version:
                    resume_started(ctx)  # a resumed run: running again, its next node started
                else:
                    plan(ctx)
            return claim, ctx
    except Fenced:
        raise
    except Exception:  # noqa: BLE001 — planning failed: nothing was committed; the usual path shows it
        logger.warning("planning in the claim's transaction failed; claiming on its own",
                       extra={"worker": worker_id}, exc_info=True)
    again = claim_next(worker_id=worker_id, sweep=sweep)
    return (again, None) if again is not None else None


def advance(claim: Claim, *, heartbeat: Heartbeat | None = None, stop: Callable[[], bool] | None = None,
            ctx: RunContext | None = None) -> str:
    """Drive a claimed run until it completes, waits, or the worker must stop.
    Returns the run's status as this worker last saw it. `ctx`: the run as
    `claim_and_plan` left it (already loaded, maybe planned)."""
    if ctx is None:
        ctx = load(claim)
    with log_context(run_id=ctx.run.id, correlation_id=ctx.run.correlation_id, worker=claim.worker_id,
                     user=_username(ctx.run)):
        return _advance(ctx, claim, heartbeat=heartbeat, stop=stop)


def _advance(ctx: RunContext, claim: Claim, *, heartbeat: Heartbeat | None,
             stop: Callable[[], bool] | None) -> str:
    try:
        if ctx.run.status in (RunStatus.QUEUED, RunStatus.PLANNING) and not ctx.run.plan_version:
            plan(ctx)
        elif ctx.run.status == RunStatus.QUEUED:
            resume_started(ctx)
        elif claim.takeover:
            recover(ctx)
        while ctx.run.status == RunStatus.RUNNING:
            if stop is not None and stop():
                return "handed_back"
            if apply_manual_trigger(ctx):
                continue
            running = [n for n in ctx.nodes.values() if n.status == NodeStatus.RUNNING]
            if not running and ctx.run.lease_token != claim.token:
                # The last commit let go of the run: it waits on tasks (agents, people).
                return "dispatched"
            if not running:
                step = Step()
                start_next_or_finish(ctx, step, {k: n.status for k, n in ctx.nodes.items()})
                if not step.events and step.status is None:
                    logger.error("run has nothing to do", extra={"run_id": ctx.run.id})
                    return ctx.run.status
                commit(ctx, step)
                continue
            run_node(ctx, running[0], heartbeat)
    except Fenced:
        # Cancelled, resumed or taken over meanwhile: discard and let go.
        logger.info("step fenced off", extra={"run_id": claim.run_id, "worker": claim.worker_id})
        return "fenced"
    except Halt:
        return "lease_lost"
    return ctx.run.status
