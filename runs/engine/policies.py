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

`manual` policies are never fired by the engine (they name an operator's
intent; see docs/hitl.md). Policies never re-route the graph: flow changes
only come from a new plan version (`replan`, or a resume).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from hitl import services as hitl_services
from hitl.models import HitlKind
from hitl.presenters import hitl_request_payload
from planner import jsonlogic
from runs import events as ev
from runs.engine.step import RunContext, Step, fail, start_node
from runs.models import NodeRun, NodeStatus, PlanVersion, RunStatus

if TYPE_CHECKING:
    from planner.types import ClarificationNeeded

logger = logging.getLogger("runs.engine.policies")

ON_START = "onStart"
ON_NODE_COMPLETE = "onNodeComplete"
ON_VALIDATION_FAIL = "onValidationFail"
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
    step.writes.append(lambda: request.save(force_insert=True))
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
    if ctx.run.plan_version <= 1:
        return []
    return hitl_services.clarifications_for_node(run_id=ctx.run.id, node_id=node_id)


def on_capability_inactive(ctx: RunContext, step: Step, node: NodeRun) -> bool:
    """A dispatched node's capability became inactive (its agent stopped
    heartbeating). THE REPLAN TRIGGER POINT: this is where a replan policy
    would plan the remaining work again without that capability (API.md,
    "Replanning and goals"). Replanning is not built yet, so it never
    decides: it returns False and the caller fails the node and the run with
    `capability_inactive` (runs.engine.tasks)."""
    return False


def on_clarify(ctx: RunContext, step: Step, node: NodeRun, question: "ClarificationNeeded") -> None:
    """A capability asked a question: the run waits for a person."""
    request = hitl_services.hitl_request_build(
        run=ctx.run, kind=HitlKind.CLARIFY, question=question.question, options=question.options,
        allow_free_form=question.allow_free_form, urgency=question.urgency, pending_node_id=node.node_id,
        operator_prompt=question.operator_prompt, contract_summary=_contract_summary(ctx, node.node_id),
        plan_version=ctx.run.plan_version, source="clarify")
    step.writes.append(lambda: request.save(force_insert=True))
    step.update_node(node.node_id, status=NodeStatus.AWAITING_HITL, completed_at=timezone.now())
    step.status = RunStatus.AWAITING_HITL
    step.event(ev.event_hitl_request(request=hitl_request_payload(request, responses=[]),
                                     node_id=node.node_id))


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
        review=review)
    step.writes.append(lambda: request.save(force_insert=True))
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
    """Record a new plan version for the remaining work. Completed nodes stay
    locked (their results and statuses are kept); after onValidationFail the
    failed node is put back to pending, once per (policy, node), so a node
    that never validates still ends the run instead of looping."""
    node_id = node.node_id if node is not None else ""
    statuses = {k: n.status for k, n in ctx.nodes.items()}
    for changed, changes in step.node_updates.items():
        if "status" in changes:
            statuses[changed] = changes["status"]
    if trigger == ON_VALIDATION_FAIL and node is not None:
        step.update_node(node_id, status=NodeStatus.PENDING)
        statuses[node_id] = NodeStatus.PENDING
    previous = ctx.run.plan_version
    version = previous + 1
    graph = ctx.graph
    trigger_info = {"kind": "policy", "policyId": policy["id"], "trigger": trigger, "nodeId": node_id or None,
                    "rationale": policy["action"].get("rationale")}
    pending = [n["id"] for n in graph.get("nodes", []) if statuses.get(n["id"]) not in ("completed", "skipped")]
    run_id = ctx.run.id

    def write_version() -> None:
        PlanVersion.objects.create(run_id=run_id, version=version, reason=PlanVersion.Reason.REPLAN,
                                   trigger=trigger_info, graph=graph, node_statuses=dict(statuses),
                                   pending_node_ids=pending, schema_hash=graph.get("schemaHash", ""))

    step.writes.append(write_version)
    ctx.run.plan_version = version
    step.run_updates["plan_version"] = version
    step.event(ev.event_plan_updated(previous_version=previous, version=version, reason="replan",
                                     trigger=trigger_info,
                                     nodes=[{"id": n["id"], "status": statuses.get(n["id"], "pending")}
                                            for n in graph.get("nodes", [])], node_id=node_id))
    if trigger == ON_VALIDATION_FAIL and node is not None:
        # The failed node is ready again: start it in this same step.
        start_node(ctx, step, node_id)
        return True
    # onStart / onNodeComplete: the flow goes on under the new version.
    return False


def _replanned_before(ctx: RunContext, policy: dict[str, Any], node: NodeRun) -> bool:
    return PlanVersion.objects.filter(run_id=ctx.run.id, reason=PlanVersion.Reason.REPLAN,
                                      trigger__policyId=policy["id"], trigger__nodeId=node.node_id).exists()


def _contract_summary(ctx: RunContext, node_id: str) -> dict[str, Any]:
    node = ctx.graph_node(node_id)
    return {"nodeId": node_id, "capabilityId": node["capabilityId"], "outputFacets": node["outputFacets"],
            "contractHash": node.get("contractHash", "")}
