"""Run one node: build its ContextBundle, call its capability, validate.

No database writes happen here: the loop commits whatever the outcome is,
fenced by the lease. The capability is called with no transaction open and
no row lock held.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from flexagents import tracing
from flexagents.logging import log_context
from planner.contracts import validate_instance
from planner.registry import get_registry
from planner.types import CapabilityError, ClarificationNeeded, ContextBundle, InvalidOutput

logger = logging.getLogger("runs.engine.executor")

SUCCESS = "success"
INVALID = "invalid"
ERROR = "error"
CLARIFY = "clarify"


@dataclass
class Outcome:
    kind: str
    output: dict[str, Any] | None = None
    errors: list[dict[str, str]] = field(default_factory=list)
    error: dict[str, Any] | None = None
    retryable: bool = True
    clarification: ClarificationNeeded | None = None
    duration_ms: float = 0.0
    # A language model's usage of this attempt ({model, promptTokens,
    # completionTokens, callMs}), whatever the outcome; None: no model called.
    usage: dict[str, Any] | None = None
    # Seconds the failing service asked us to wait before the next attempt.
    retry_after: float | None = None


def build_bundle(*, run_id: str, node: dict[str, Any], objective: str, facets: dict[str, Any],
                 envelope: dict[str, Any], clarifications: list[dict[str, Any]], attempt: int,
                 plan_version: int, goal_feedback: list[dict[str, Any]] | None = None,
                 previous_errors: list[dict[str, Any]] | None = None, tokens_left: int | None = None) -> ContextBundle:
    wanted = list(node.get("inputFacets", [])) + list(node.get("optionalInputFacets", []))
    return ContextBundle(
        run_id=run_id,
        node_id=node["id"],
        objective=objective,
        facets={name: facets[name] for name in wanted if name in facets},
        special_instructions=list(envelope.get("specialInstructions", [])),
        policies=envelope.get("policies", {}),
        contract=node.get("contract", {}),
        clarifications=clarifications,
        # Stable across crash retries of the same attempt number, so a
        # side-effecting capability can deduplicate.
        idempotency_key=f"{run_id}:{node['id']}:{attempt}",
        attempt=attempt,
        plan_version=plan_version,
        metadata=envelope.get("metadata", {}),
        # Every node gets the envelope's directives (docs/planning.md).
        directives=dict(((envelope.get("policies") or {}).get("planner") or {}).get("directives") or {}),
        goal_feedback=list(goal_feedback or []),
        previous_errors=list(previous_errors or []),
        tokens_left=tokens_left,
    )


def execute(node: dict[str, Any], bundle: ContextBundle) -> Outcome:
    """Call the node's capability and validate what it returns. Every line
    logged meanwhile (the capability's own included) names the node."""
    with log_context(node_id=bundle.node_id, capability_id=node.get("capabilityId"),
                     plan_version=bundle.plan_version, attempt=bundle.attempt), tracing.span("flex.node"):
        outcome = _execute(node, bundle)
    outcome.usage = _usage(bundle)
    return outcome


def _usage(bundle: ContextBundle) -> dict[str, Any] | None:
    total = bundle.usage_total()
    if total is not None:
        total["callMs"] = round(sum(float(u.get("callMs") or 0.0) for u in bundle.usage), 3)
    return total


def _execute(node: dict[str, Any], bundle: ContextBundle) -> Outcome:
    started = time.perf_counter()
    try:
        capability = get_registry().get(node["capabilityId"])
        result = capability.run(bundle)
    except ClarificationNeeded as question:
        # A person must answer: control flow, never a failure, never retried.
        return Outcome(CLARIFY, clarification=question, duration_ms=_ms(started))
    except InvalidOutput as exc:
        # A reply that is not output at all (a model's invalid JSON): one
        # failed validation attempt, like output that breaks its contract.
        return Outcome(INVALID, output=exc.output, errors=exc.errors, duration_ms=_ms(started))
    except CapabilityError as exc:
        return Outcome(ERROR, error={"code": exc.code, "message": str(exc)}, retryable=exc.retryable,
                       duration_ms=_ms(started), retry_after=exc.retry_after)
    except Exception as exc:  # noqa: BLE001 — any capability bug is a retryable node error
        logger.exception("capability raised", extra={"run_id": bundle.run_id, "node_id": bundle.node_id})
        return Outcome(ERROR, error={"code": "capability_exception", "message": f"{type(exc).__name__}: {exc}"},
                       duration_ms=_ms(started))
    return judge(node, result, duration_ms=_ms(started))


def judge(node: dict[str, Any], result: Any, *, duration_ms: float) -> Outcome:
    """What a capability returned, checked against the node's compiled
    contract: the same rule for in-process capabilities and for the outputs
    agents and people send to `POST /tasks/{taskId}/complete`."""
    duration = duration_ms
    if not isinstance(result, dict):
        return Outcome(INVALID, errors=[{"path": "/", "message": "the capability returned no object of facets"}],
                       duration_ms=duration)
    errors = validate_instance(node.get("contract", {}), result)
    if errors:
        # Kept for a person to review if the retries run out (never committed).
        return Outcome(INVALID, output=result, errors=errors, duration_ms=duration)
    # Keep only the facets the node declares: a capability cannot write
    # facets it does not own.
    output = {name: result[name] for name in node.get("outputFacets", []) if name in result}
    return Outcome(SUCCESS, output=output, duration_ms=duration)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)
