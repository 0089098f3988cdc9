"""flex.OutputMapper: the last node of every plan, mapping facets onto the caller's contract.

Its input facets differ per plan (the planner gives the node the facets the
contract needs), so the class declares none; its single output is `output`,
which is not a catalog facet but the caller's own shape.
"""
from __future__ import annotations

from typing import Any

from planner.types import Capability, ContextBundle

OUTPUT_MAPPER_ID = "flex.OutputMapper"
OUTPUT_FACET = "output"


class OutputMapper(Capability):
    capability_id = OUTPUT_MAPPER_ID
    display_name = "Output mapper"
    kind = "transformation"
    input_facets = ()
    output_facets = (OUTPUT_FACET,)
    description = "Maps the facets of a run onto the caller's output contract."

    def run(self, bundle: ContextBundle) -> dict[str, Any]:
        wanted = ((bundle.contract.get("properties") or {}).get(OUTPUT_FACET) or {}).get("properties") or {}
        return {OUTPUT_FACET: {name: bundle.facets[name] for name in wanted if name in bundle.facets}}


def output_node_contract(output_schema: dict[str, Any]) -> dict[str, Any]:
    """The mapper node's contract: an object whose `output` is the caller's (or compiled) schema."""
    return {"type": "object", "required": [OUTPUT_FACET], "properties": {OUTPUT_FACET: output_schema}}
