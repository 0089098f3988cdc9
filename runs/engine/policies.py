"""Runtime policies and person-in-the-loop steps of the engine loop.

Each hook adds to the step being committed and returns True when it halted
the normal flow (the run now waits for a person, is paused, or failed).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.utils import timezone

from hitl import services as hitl_services
from hitl.models import HitlKind
from runs import events as ev
from runs.models import NodeStatus, RunStatus

if TYPE_CHECKING:
    from planner.types import ClarificationNeeded
    from runs.engine.loop import RunContext, Step
    from runs.models import NodeRun


def on_start(ctx: "RunContext", step: "Step") -> bool:
    return False


def on_node_complete(ctx: "RunContext", step: "Step", node: "NodeRun") -> bool:
    return False


def on_validation_fail(ctx: "RunContext", step: "Step", node: "NodeRun", errors: list[dict[str, Any]]) -> bool:
    return False


def clarifications_for(ctx: "RunContext", node_id: str) -> list[dict[str, Any]]:
    return hitl_services.clarifications_for_node(run_id=ctx.run.id, node_id=node_id)


def on_clarify(ctx: "RunContext", step: "Step", node: "NodeRun", question: "ClarificationNeeded") -> None:
    """A capability asked a question: the run waits for a person."""
    request = hitl_services.hitl_request_build(
        run=ctx.run, kind=HitlKind.CLARIFY, question=question.question, options=question.options,
        allow_free_form=question.allow_free_form, urgency=question.urgency, pending_node_id=node.node_id,
        operator_prompt=question.operator_prompt, contract_summary=_contract_summary(ctx, node.node_id),
        plan_version=ctx.run.plan_version, source="clarify")
    step.writes.append(lambda: request.save(force_insert=True))
    step.update_node(node.node_id, status=NodeStatus.AWAITING_HITL, completed_at=timezone.now())
    step.status = RunStatus.AWAITING_HITL
    step.event(ev.HITL_REQUEST, hitl_services.hitl_request_payload(request, responses=[]), node.node_id)


def _contract_summary(ctx: "RunContext", node_id: str) -> dict[str, Any]:
    node = ctx.graph_node(node_id)
    return {"nodeId": node_id, "capabilityId": node["capabilityId"], "outputFacets": node["outputFacets"],
            "contractHash": node.get("contractHash", "")}
