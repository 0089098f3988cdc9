"""Runtime policies and person-in-the-loop steps of the engine loop.

Each hook adds to the step being committed and returns True when it halted
the normal flow (the run now waits for a person, is paused, or failed).

1. Select: the envelope's enabled runtime policies whose trigger kind is the
   hook's, whose selector (`nodeId`, `kind`, `capabilityId`) matches the node,
   and whose JSON-Logic `condition` is truthy against `policy_data()`.
2. Fire, in envelope order: every firing emits `policy_triggered`; `emit`
   also emits a `log` event and lets the flow go on; `hitl`, `pause`,
   `replan` and `fail` decide the step, and the first of them stops the
   evaluation of later policies.

`manual` policies fire only when someone triggers them (the trigger
endpoint or the console button); the worker driving the run applies them
at its next step (`on_manual`, docs/hitl.md). Policies never re-route the graph: flow changes
only come from a new plan version (`replan`, or a resume).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Iterable

from django.utils import timezone

from hitl import services as hitl_services
from hitl.models import HitlKind, HitlRequest
from hitl.presenters import hitl_request_payload
from planner import jsonlogic
from planner.envelope import goal_facets
from runs import events as ev
from runs.replanning import plan_again, plan_nodes_payload
from runs.engine.step import RunContext, Step, fail, start_node
from runs.models import NodeRun, NodeStatus, PlanVersion, RunStatus

if TYPE_CHECKING:
    from planner.types import ClarificationNeeded

logger = logging.getLogger("runs.engine.policies")

ON_START = "onStart"
ON_NODE_COMPLETE = "onNodeComplete"
ON_VALIDATION_FAIL = "onValidationFail"
ON_NODE_FAIL = "onNodeFail"
MANUAL = "manual"


# --- hooks ---------------------------------------------------------------------

def on_start(ctx: RunContext, step: Step) -> bool:
    """The plan was just generated; no node has started."""
    return _fire_matching(ctx, step, ON_START, node=None, output={}, errors=[])


def on_node_complete(ctx: RunContext, step: Step, node: NodeRun) -> bool:
    """A node's result is in the step (status completed). A halting policy
    leaves the node completed: the run waits, pauses, is replanned or fails."""
    output = step.node_updates.get(node.node_id, {}).get("output") or node.output or {}
    return _fire_matching(ctx, step, ON_NODE_COMPLETE, node=node, output=output, errors=[])


def on_validation_fail(ctx: RunContext, step: Step, node: NodeRun, errors: list[dict[str, Any]],
                       *, output: dict[str, Any] | None = None) -> bool:
    """A node's output failed its contract on every allowed attempt. Without a
    matching halting policy the loop escalates to a person
    (`escalate_invalid_output`). `output` is the last invalid output: what a
    `hitl` policy's request shows for review."""
    return _fire_matching(ctx, step, ON_VALIDATION_FAIL, node=node, output=output or {}, errors=errors)


def escalate_invalid_output(ctx: RunContext, step: Step, node: NodeRun, errors: list[dict[str, Any]],
                            *, output: dict[str, Any]) -> None:
    """The default when validation retries are exhausted (seed 8.3 FR4): an
    approval request with the invalid output as `review` and the errors in
    `contractSummary.validationErrors`. Approve runs the node once more,
    reject fails the node and the run (docs/hitl.md)."""
    attempts = node.attempts
    question = (f"Node {node.node_id} ({node.capability_id}) produced output that fails its contract "
                f"{attempts} time{'s' if attempts != 1 else ''}. Run it once more?")
    summary = {**_contract_summary(ctx, node.node_id), "policyId": None, "trigger": ON_VALIDATION_FAIL,
               "attempts": attempts, "validationErrors": errors}
    request = hitl_services.hitl_request_build(
        run=ctx.run, kind=HitlKind.APPROVAL, question=question,
        options=[{"id": "approve", "label": "Approve", "description": "Run the node once more."},
                 {"id": "reject", "label": "Reject", "description": "Fail the node and the run."}],
        allow_free_form=False, urgency="normal", pending_node_id=node.node_id,
        operator_prompt="The output under review is the node's last attempt; it is never accepted as it is.",
        contract_summary=summary, plan_version=ctx.run.plan_version, source="validation_retries_exhausted",
        review=_reviewable(ctx, node.node_id, output))
    step.inserts.append(request)
    step.update_node(node.node_id, status=NodeStatus.AWAITING_HITL, completed_at=timezone.now())
    step.status = RunStatus.AWAITING_HITL
    step.event(ev.event_hitl_request(request=hitl_request_payload(request, responses=[]),
                                     node_id=node.node_id))


def _reviewable(ctx: RunContext, node_id: str, output: dict[str, Any]) -> dict[str, Any]:
    """The node's output facets of an (invalid) output, for a person to review."""
    if not isinstance(output, dict):
        return {}
    facets = ctx.graph_node(node_id).get("outputFacets") or []
    return {name: output[name] for name in facets if name in output} or dict(output)


def clarifications_for(ctx: RunContext, node_id: str) -> list[dict[str, Any]]:
    # A clarification is answered only through a resume, and every resume
    # records a new plan version: at version 1 there is none to look up
    # (this saves a query per node on the hot path).
    if ctx.run.plan_version <= 1 or ctx.clarifications is False:
        return []
    return hitl_services.clarifications_for_node(run_id=ctx.run.id, node_id=node_id)


def on_capability_inactive(ctx: RunContext, step: Step, node: NodeRun, error: dict[str, Any]) -> bool:
    """A dispatched node's capability became inactive (its agent stopped
    heartbeating): for the run, its node failed for good (it is `failed` in
    the step). `onNodeFail` policies decide, as for any such node: `replan`
    plans the remaining work again without that capability (an alternative
    takes the node; `plan_rejected` when none can), `fail` or `emit`.
    Returns True when one decided; otherwise the caller fails the run with
    `capability_inactive` (runs.engine.tasks; docs/agents.md)."""
    return on_node_fail(ctx, step, node, error)


def on_clarify(ctx: RunContext, step: Step, node: NodeRun, question: "ClarificationNeeded") -> None:
    """A capability asked a question: the run waits for a person."""
    request = hitl_services.hitl_request_build(
        run=ctx.run, kind=HitlKind.CLARIFY, question=question.question, options=question.options,
        allow_free_form=question.allow_free_form, urgency=question.urgency, pending_node_id=node.node_id,
        operator_prompt=question.operator_prompt, contract_summary=_contract_summary(ctx, node.node_id),
        plan_version=ctx.run.plan_version, source="clarify")
    step.inserts.append(request)
    step.update_node(node.node_id, status=NodeStatus.AWAITING_HITL, completed_at=timezone.now())
    step.status = RunStatus.AWAITING_HITL
    step.event(ev.event_hitl_request(request=hitl_request_payload(request, responses=[]),
                                     node_id=node.node_id))


def on_manual(ctx: RunContext, step: Step, policy: dict[str, Any]) -> bool:
    """A `manual` policy someone triggered (POST .../policies/{id}/trigger),
    applied between two steps of the run: its action as any policy's
    (`policy_triggered`, then hitl / pause / replan / fail / emit)."""
    return _fire(ctx, step, policy, MANUAL, None, [], output={})


def manual_policy(ctx: RunContext, policy_id: str) -> dict[str, Any] | None:
    return next((p for p in runtime_policies(ctx.envelope)
                 if p.get("id") == policy_id and (p.get("trigger") or {}).get("kind") == MANUAL), None)


# --- selection -------------------------------------------------------------------

def runtime_policies(envelope: dict[str, Any]) -> list[dict[str, Any]]:
    """The envelope's enabled runtime policies, in order."""
    policies = (envelope.get("policies") or {}).get("runtime") or []
    return [p for p in policies if p.get("enabled", True) is not False]


def selector_matches(selector: dict[str, Any] | None, node: NodeRun | None) -> bool:
    """Every key given must equal the node's; a selector never matches when
    there is no node (onStart)."""
    if not selector:
        return True
    if node is None:
        return False
    actual = {"nodeId": node.node_id, "kind": node.kind, "capabilityId": node.capability_id}
    return all(actual.get(key) == value for key, value in selector.items())


def policy_data(ctx: RunContext, *, node: NodeRun | None, output: dict[str, Any],
                errors: list[dict[str, Any]]) -> dict[str, Any]:
    """What a `condition` sees (documented in docs/hitl.md)."""
    return {
        "node": ({"id": node.node_id, "capabilityId": node.capability_id, "kind": node.kind,
                  "attempt": node.attempts} if node is not None else None),
        "output": output,
        "facets": ctx.run.facets,
        "run": {"id": ctx.run.id, "status": ctx.run.status, "planVersion": ctx.run.plan_version,
                "threadId": ctx.run.thread_id, "briefId": ctx.run.brief_id},
        "errors": errors,
    }


def condition_holds(condition: Any, data: dict[str, Any]) -> bool:
    """Absent: true. A rule that cannot be evaluated is false (logged): a
    guardrail must not crash the run."""
    if condition is None:
        return True
    try:
        return jsonlogic.truthy(jsonlogic.evaluate(condition, data))
    except jsonlogic.JsonLogicError as exc:
        logger.warning("policy condition failed to evaluate", extra={"error": str(exc)})
        return False


def _fire_matching(ctx: RunContext, step: Step, trigger: str, *, node: NodeRun | None,
                   output: dict[str, Any], errors: list[dict[str, Any]]) -> bool:
    data: dict[str, Any] | None = None
    for policy in runtime_policies(ctx.envelope):
        spec = policy.get("trigger") or {}
        if spec.get("kind") != trigger or not selector_matches(spec.get("selector"), node):
            continue
        if "condition" in spec:
            data = data or policy_data(ctx, node=node, output=output, errors=errors)
            if not condition_holds(spec["condition"], data):
                continue
        if _fire(ctx, step, policy, trigger, node, errors, output=output):
            return True
    return False


# --- actions -----------------------------------------------------------------------

def _fire(ctx: RunContext, step: Step, policy: dict[str, Any], trigger: str, node: NodeRun | None,
          errors: list[dict[str, Any]], *, output: dict[str, Any] | None = None) -> bool:
    """Apply one policy's action to the step; True when it halted the flow."""
    action = policy["action"]
    kind = action["type"]
    node_id = node.node_id if node is not None else ""
    if kind == "replan" and trigger == ON_VALIDATION_FAIL and node is not None and _replanned_before(ctx, policy, node):
        # Once per (policy, node): a node that never validates ends the run.
        step.event(ev.event_log(level="warning", message=f"policy {policy['id']} already replanned node "
                                                         f"{node_id}; not replanning again", node_id=node_id))
        return False
    step.event(ev.event_policy_triggered(policy_id=policy["id"], trigger=trigger, action=action, node_id=node_id))
    if kind == "emit":
        step.event(ev.event_log(level="info", message=f"policy {policy['id']} emitted {action['event']}",
                                event=action["event"], payload=action.get("payload") or {}, node_id=node_id))
        return False
    if kind == "hitl":
        review = _reviewable(ctx, node_id, output or {}) if trigger == ON_VALIDATION_FAIL and node else output
        _raise_approval(ctx, step, policy, trigger, node, errors, review=review)
        return True
    if kind == "pause":
        if trigger == ON_VALIDATION_FAIL and node is not None:
            # The failed node runs again when the run is resumed.
            step.update_node(node_id, status=NodeStatus.PENDING)
        step.status = RunStatus.PAUSED
        step.run_updates["pause_reason"] = action.get("reason") or f"paused by policy {policy['id']}"
        return True
    if kind == "fail":
        message = action.get("message") or f"Runtime policy {policy['id']} failed the run."
        if trigger == ON_VALIDATION_FAIL and node is not None:
            step.update_node(node_id, status=NodeStatus.FAILED, completed_at=timezone.now(),
                             error={"code": "validation_failed", "message": "Output failed its contract."})
        fail(step, code="policy_failed", message=message, extra={"policyId": policy["id"], "nodeId": node_id or None})
        return True
    if kind == "replan":
        return _replan(ctx, step, policy, trigger, node)
    logger.error("unknown policy action", extra={"run_id": ctx.run.id, "action": kind})
    return False


def _raise_approval(ctx: RunContext, step: Step, policy: dict[str, Any], trigger: str, node: NodeRun | None,
                    errors: list[dict[str, Any]], *, review: dict[str, Any] | None = None) -> None:
    """An approval request. After onNodeComplete the node stays completed;
    after onValidationFail it waits (approve = one more attempt, see docs)."""
    action = policy["action"]
    node_id = node.node_id if node is not None else ""
    rationale = action.get("rationale") or ""
    if trigger == ON_VALIDATION_FAIL:
        question = f"Node {node_id} produced output that fails its contract. Try it again?"
    elif trigger == MANUAL:
        question = f"Policy {policy['id']} was triggered by hand. Approve to let the run go on?"
    elif node is not None:
        question = f"Approve the output of {node_id} ({node.capability_id})?"
    else:
        question = "Approve this run before it starts?"
    summary = _contract_summary(ctx, node_id) if node_id else {"outputFacets": [], "nodeId": None}
    summary = {**summary, "policyId": policy["id"], "trigger": trigger}
    if errors:
        summary["validationErrors"] = errors
    request = hitl_services.hitl_request_build(
        run=ctx.run, kind=HitlKind.APPROVAL, question=question,
        options=[{"id": "approve", "label": "Approve"}, {"id": "reject", "label": "Reject"}],
        allow_free_form=False, urgency="normal", pending_node_id=node_id, operator_prompt=rationale,
        contract_summary=summary, plan_version=ctx.run.plan_version, source=policy["id"],
        approve_action=_follow_up(action.get("approveAction")), reject_action=_follow_up(action.get("rejectAction")),
        review=review, governance={key: action[key] for key in hitl_services.GOVERNANCE_KEYS if key in action})
    step.inserts.append(request)
    if trigger == ON_VALIDATION_FAIL and node is not None:
        step.update_node(node_id, status=NodeStatus.AWAITING_HITL, completed_at=timezone.now())
    step.status = RunStatus.AWAITING_HITL
    step.event(ev.event_hitl_request(request=hitl_request_payload(request, responses=[]),
                                     node_id=node_id))


def _follow_up(value: Any) -> dict[str, Any] | None:
    """`"replan"` or `{"type": "replan", ...}` -> the object form."""
    if value is None:
        return None
    return {"type": value} if isinstance(value, str) else dict(value)


def _replan(ctx: RunContext, step: Step, policy: dict[str, Any], trigger: str, node: NodeRun | None) -> bool:
    """A `replan` policy fired. The node it fired on (if any) is treated as
    failed: its capability is excluded and it is redone, with everything
    downstream, by whatever the planner chooses instead (docs/planning.md).
    Without a node (onStart) nothing is excluded. Fired after
    onValidationFail it happens once per (policy, node) — see `_fire`."""
    node_id = node.node_id if node is not None else ""
    trigger_info = {"kind": "policy", "policyId": policy["id"], "trigger": trigger, "nodeId": node_id or None,
                    "rationale": policy["action"].get("rationale")}
    exclude = [node.capability_id] if node is not None else []
    redo = [node_id] if node is not None else []
    if replan(ctx, step, trigger=trigger_info, exclude=exclude, redo=redo, node_id=node_id):
        return True
    # onStart / onNodeComplete: the flow goes on under the new version. After
    # onValidationFail / onNodeFail the node's step is decided: the loop
    # starts what is ready next under the new version.
    return trigger in (ON_VALIDATION_FAIL, ON_NODE_FAIL)


# --- replanning ------------------------------------------------------------------

def _statuses(ctx: RunContext, step: Step) -> dict[str, str]:
    """Node statuses as this step leaves them."""
    return step.statuses_over({k: n.status for k, n in ctx.nodes.items()})


def replan(ctx: RunContext, step: Step, *, trigger: dict[str, Any], exclude: Iterable[str] = (),
           redo: Iterable[str] = (), node_id: str = "") -> bool:
    """Plan the run again, in the step being committed: the entry point of
    every replan the engine makes (a `replan` policy, a node failed for good
    under one, an unmet goal, `capability_inactive`). Completed nodes are
    kept and never re-run; `exclude` capability ids are not planned; `redo`
    node ids (and what depends on them) run again.

    A different plan: version N+1 (reason `replan`, this `trigger`),
    `plan_requested` then `plan_updated` with the new nodes; returns False
    (the flow goes on). No plan: `plan_requested`, `plan_rejected` and
    `complete` failed (`replan_rejected`); returns True."""
    excluded = sorted(set(exclude))
    redo = list(dict.fromkeys(redo))
    statuses = _statuses(ctx, step)
    previous = ctx.run.plan_version
    version = previous + 1
    outcome = plan_again(run_id=ctx.run.id, envelope=ctx.envelope, graph=ctx.graph, rows=ctx.nodes,
                         statuses=statuses, version=version, exclude=excluded, redo=redo)
    trigger = {**trigger, "excludedCapabilities": excluded}
    step.event(ev.event_plan_requested(attempt=version, capabilities=outcome.considered))
    if outcome.graph is None:
        now = timezone.now()
        stuck_nodes = [*redo, *(n["id"] for n in ctx.graph.get("nodes", []) if n["capabilityId"] in excluded)]
        for stuck in dict.fromkeys(stuck_nodes):
            if statuses.get(stuck) in (NodeStatus.RUNNING, NodeStatus.AWAITING_HITL):
                step.update_node(stuck, status=NodeStatus.FAILED, completed_at=now,
                                 error={"code": "replan_rejected", "message": "No other plan could replace it."})
        step.event(ev.event_plan_rejected(attempt=version, diagnostics=outcome.diagnostics))
        fail(step, code="replan_rejected", message="No other plan can satisfy the output contract.",
             extra={"diagnostics": outcome.diagnostics, "trigger": trigger})
        return True
    graph = outcome.graph
    step.barrier()  # after the changes already in the step (the node that just completed, say)
    for changed, changes in outcome.node_changes.items():
        step.update_node(changed, **changes)
    step.barrier()  # before any start under the new version
    new_rows = list(outcome.new_rows)
    for row in new_rows:
        ctx.nodes[row.node_id] = row
    run_id, statuses_after, pending = ctx.run.id, dict(outcome.statuses), outcome.pending

    def write_version() -> None:
        for row in new_rows:
            row.save(force_insert=True)
        PlanVersion.objects.create(run_id=run_id, version=version, reason=PlanVersion.Reason.REPLAN,
                                   trigger=trigger, graph=graph, node_statuses=statuses_after,
                                   pending_node_ids=pending, schema_hash=graph.get("schemaHash", ""))

    step.writes.append(write_version)
    ctx.graph = graph
    ctx.run.plan_version = version
    step.run_updates["plan_version"] = version
    step.event(ev.event_plan_updated(previous_version=previous, version=version, reason="replan", trigger=trigger,
                                     nodes=plan_nodes_payload(outcome), node_id=node_id, added=outcome.added,
                                     removed=outcome.removed, kept=outcome.kept))
    logger.info("replanned", extra={"run_id": run_id, "plan_version": version, "trigger": trigger.get("kind"),
                                    "added": outcome.added, "removed": outcome.removed})
    return False


def replan_capability_inactive(ctx: RunContext, step: Step, capability_ids: Iterable[str]) -> bool:
    """Capabilities went inactive (an agent stopped heartbeating): plan the
    run again without them. Nodes of theirs that had not completed are
    redone by an alternative; completed ones are kept. Same return as `replan`."""
    ids = sorted(set(capability_ids))
    return replan(ctx, step, trigger={"kind": "capability_inactive", "capabilityIds": ids}, exclude=ids)


def on_node_fail(ctx: RunContext, step: Step, node: NodeRun, error: dict[str, Any] | None) -> bool:
    """A node failed for good (a permanent error, or its retries ran out;
    the node is already `failed` in the step). `onNodeFail` policies decide:
    `replan` (the node's capability excluded), `fail`, or `emit`. Returns
    True when one decided; otherwise the run fails as it always did."""
    errors = [{"path": "", "message": str((error or {}).get("message") or ""), "code": (error or {}).get("code")}]
    return _fire_matching(ctx, step, ON_NODE_FAIL, node=node, output={}, errors=errors)


# --- goals -----------------------------------------------------------------------

def goals_of(envelope: dict[str, Any]) -> list[dict[str, Any]]:
    goals: list[dict[str, Any]] = ((envelope.get("policies") or {}).get("planner") or {}).get("goals") or []
    return goals


def _goal_replans(ctx: RunContext) -> list[dict[str, Any]]:
    """The triggers of the run's goal replans, oldest first."""
    triggers: list[dict[str, Any]] = list(
        PlanVersion.objects.filter(run_id=ctx.run.id, reason=PlanVersion.Reason.REPLAN, trigger__kind="goal")
        .order_by("version").values_list("trigger", flat=True))
    return triggers


def _accepted_goals(ctx: RunContext) -> set[str]:
    """Goals a person accepted unmet (an approved `goal:<id>` request)."""
    sources = HitlRequest.objects.filter(run_id=ctx.run.id, source__startswith="goal:", resolution="approved",
                                         ).values_list("source", flat=True)
    return {source.split(":", 1)[1] for source in sources}


def check_goals(ctx: RunContext, step: Step) -> bool:
    """The plan's work nodes are done and its output is next: evaluate the
    envelope's goals, in order, against the facets (one `goal_evaluated`
    each). All met (or accepted by a person): False, the output is composed.
    The first unmet goal decides — a goal replan, a person, or failure —
    and True is returned (docs/planning.md)."""
    goals = goals_of(ctx.envelope)
    if not goals:
        return False
    accepted = _accepted_goals(ctx)
    history = _goal_replans(ctx)
    attempt = len(history) + 1
    for goal in goals:
        if goal["id"] in accepted:
            continue
        names = goal_facets(goal["condition"])
        met = condition_holds(goal["condition"], ctx.run.facets)
        step.event(ev.event_goal_evaluated(goal_id=goal["id"], met=met, attempt=attempt, facets=names))
        if not met:
            mine = [t for t in history if t.get("goalId") == goal["id"]]
            return _goal_unmet(ctx, step, goal, names, attempt=attempt, replans=mine)
    return False


def _goal_unmet(ctx: RunContext, step: Step, goal: dict[str, Any], names: list[str], *, attempt: int,
                replans: list[dict[str, Any]]) -> bool:
    max_replans = int(goal.get("maxReplans", 2))
    regular = [t for t in replans if not t.get("escalated")]
    redo, feeders = _goal_work(ctx, names)
    # A goal about facets no node of the plan produces (the inputs): nothing
    # to run again, so straight to onUnmet.
    if redo and len(regular) < max_replans:
        return _goal_replan(ctx, step, goal, names, attempt=attempt, redo=redo, exclude=[])
    on_unmet = goal.get("onUnmet", "hitl")
    if redo and on_unmet == "replan" and len(regular) == len(replans):
        by_id = {n["id"]: n for n in ctx.graph.get("nodes", [])}
        exclude = sorted({by_id[i]["capabilityId"] for i in (feeders or redo)})
        return _goal_replan(ctx, step, goal, names, attempt=attempt, redo=redo, exclude=exclude)
    values = {name: ctx.run.facets.get(name) for name in names}
    if on_unmet == "hitl":
        _raise_goal_approval(ctx, step, goal, names, attempt=attempt, replans=len(replans), values=values)
        return True
    fail(step, code="goal_unmet",
         message=f"Goal {goal['id']!r} is still unmet after {len(replans)} replan(s).",
         extra={"goalId": goal["id"], "attempt": attempt, "facets": names})
    return True


def _goal_work(ctx: RunContext, names: list[str]) -> tuple[list[str], list[str]]:
    """(nodes to redo, of which the feeders): the nodes that produce the
    goal's facets and the work nodes that feed them directly."""
    output_id = ctx.graph.get("outputNodeId", "output")
    work = [n for n in ctx.graph.get("nodes", []) if n["id"] != output_id]
    producers = [n["id"] for n in work if set(n.get("outputFacets", [])) & set(names)]
    work_ids = {n["id"] for n in work}
    feeders = list(dict.fromkeys(dep for n in work if n["id"] in producers for dep in n.get("dependsOn", [])
                                 if dep in work_ids and dep not in producers))
    return list(dict.fromkeys([*producers, *feeders])), feeders


def _goal_replan(ctx: RunContext, step: Step, goal: dict[str, Any], names: list[str], *, attempt: int,
                 redo: list[str], exclude: list[str]) -> bool:
    """Redo the nodes that produce the goal's facets and the nodes that feed
    them directly (and, by `plan_again`, everything downstream), with
    `goalFeedback` in their bundles. Escalated (`onUnmet: "replan"` once
    `maxReplans` is spent), the feeders' capabilities — or the producers'
    when nothing feeds them — are excluded, for a different graph."""
    escalate = bool(exclude)
    trigger = {"kind": "goal", "goalId": goal["id"], "attempt": attempt, "condition": goal["condition"],
               "maxReplans": goal.get("maxReplans", 2), "onUnmet": goal.get("onUnmet", "hitl"),
               "facets": names, "values": {name: ctx.run.facets.get(name) for name in names},
               "escalated": escalate}
    return replan(ctx, step, trigger=trigger, exclude=exclude, redo=redo) or True


def _raise_goal_approval(ctx: RunContext, step: Step, goal: dict[str, Any], names: list[str], *, attempt: int,
                         replans: int, values: dict[str, Any]) -> None:
    """`onUnmet: "hitl"`: a person decides. Approve accepts the result as it
    is (the output is composed); reject fails the run (`hitl_rejected`)."""
    request = hitl_services.hitl_request_build(
        run=ctx.run, kind=HitlKind.APPROVAL,
        question=f"Goal {goal['id']} is still unmet after {replans} replan(s). Accept the result as it is?",
        options=[{"id": "approve", "label": "Accept", "description": "Compose the output from these results."},
                 {"id": "reject", "label": "Reject", "description": "Fail the run."}],
        allow_free_form=False, urgency="normal", pending_node_id="",
        operator_prompt=f"The goal's condition is not met by the facets under review ({', '.join(names)}).",
        contract_summary={"goalId": goal["id"], "condition": goal["condition"], "attempt": attempt,
                          "replans": replans, "maxReplans": goal.get("maxReplans", 2), "facets": names,
                          "outputFacets": names, "nodeId": None},
        plan_version=ctx.run.plan_version, source=f"goal:{goal['id']}", review=values)
    step.inserts.append(request)
    step.status = RunStatus.AWAITING_HITL
    step.event(ev.event_hitl_request(request=hitl_request_payload(request, responses=[]), node_id=""))


def goal_feedback_for(ctx: RunContext, node_id: str) -> list[dict[str, Any]]:
    """`goalFeedback` of a node's bundle: every goal replan that made this
    node run again, oldest first — the goal and the facet values it judged."""
    if ctx.run.plan_version <= 1 or not goals_of(ctx.envelope):
        return []
    rows = (PlanVersion.objects.filter(run_id=ctx.run.id, reason=PlanVersion.Reason.REPLAN, trigger__kind="goal")
            .order_by("version").values_list("trigger", "pending_node_ids"))
    return [{key: trigger.get(key) for key in ("goalId", "condition", "attempt", "maxReplans", "facets", "values")}
            for trigger, pending in rows if node_id in (pending or [])]


def _replanned_before(ctx: RunContext, policy: dict[str, Any], node: NodeRun) -> bool:
    return PlanVersion.objects.filter(run_id=ctx.run.id, reason=PlanVersion.Reason.REPLAN,
                                      trigger__policyId=policy["id"], trigger__nodeId=node.node_id).exists()


def _contract_summary(ctx: RunContext, node_id: str) -> dict[str, Any]:
    node = ctx.graph_node(node_id)
    return {"nodeId": node_id, "capabilityId": node["capabilityId"], "outputFacets": node["outputFacets"],
            "contractHash": node.get("contractHash", "")}
