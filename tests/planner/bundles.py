"""Building ContextBundles for capability tests from the example envelopes."""
from __future__ import annotations

from typing import Any

from planner.types import ContextBundle
from tests.planner.envelopes import load_envelope


def bundle_for(node_id: str, facets: dict[str, Any], *, envelope: str = "linkedin-variants",
               clarifications: list[dict[str, Any]] | None = None, contract: dict[str, Any] | None = None,
               variant_count: int | None = None) -> ContextBundle:
    data = load_envelope(envelope)
    policies = data.get("policies", {})
    if variant_count is not None:
        policies.setdefault("planner", {}).setdefault("topology", {})["variantCount"] = variant_count
    return ContextBundle(
        run_id="run-1", node_id=node_id, objective=data["objective"], facets=facets,
        special_instructions=data.get("specialInstructions", []), policies=policies, contract=contract or {},
        clarifications=clarifications or [], idempotency_key=f"run-1:{node_id}:1", attempt=1, plan_version=1,
        metadata=data.get("metadata", {}),
    )


def inputs_of(envelope: str) -> dict[str, Any]:
    return load_envelope(envelope)["inputs"]
