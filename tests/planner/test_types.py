"""planner.types: the shapes shared with the engine."""
from __future__ import annotations

import pytest

from planner.types import Capability, CapabilityError, ClarificationNeeded, ContextBundle


def test_a_bundle_serialises_with_camel_case_keys() -> None:
    bundle = ContextBundle(run_id="r", node_id="n", objective="o", facets={"a": 1}, special_instructions=["s"],
                           policies={}, contract={}, clarifications=[], idempotency_key="r:n:2", attempt=2,
                           plan_version=3, metadata={"threadId": "t"}, directives={"voice": "plain"},
                           goal_feedback=[{"goalId": "g"}])
    assert bundle.to_dict() == {
        "runId": "r", "nodeId": "n", "objective": "o", "facets": {"a": 1}, "specialInstructions": ["s"],
        "policies": {}, "contract": {}, "clarifications": [], "idempotencyKey": "r:n:2", "attempt": 2,
        "planVersion": 3, "metadata": {"threadId": "t"}, "directives": {"voice": "plain"},
        "goalFeedback": [{"goalId": "g"}],
    }


def test_a_capability_error_is_retryable_by_default() -> None:
    error = CapabilityError("boom")
    assert (error.message, error.code, error.retryable) == ("boom", "capability_error", True)
    assert CapabilityError("x", code="quota", retryable=False).retryable is False


def test_a_clarification_carries_its_question_and_defaults() -> None:
    asked = ClarificationNeeded("Who?")
    assert (asked.question, asked.options, asked.allow_free_form, asked.urgency, asked.operator_prompt) == (
        "Who?", [], True, "normal", "")
    assert str(asked) == "Who?"


def test_the_base_capability_must_be_implemented() -> None:
    class Bare(Capability):
        capability_id = "bare.Cap"
        display_name = "Bare"
        kind = "execution"

    with pytest.raises(NotImplementedError):
        Bare().run(ContextBundle(run_id="r", node_id="n", objective="o", facets={}))
