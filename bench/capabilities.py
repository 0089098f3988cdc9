"""Trivial capabilities for the benchmark: a chain company_information ->
bench_1 -> bench_2 -> … Each does nothing but return its facet, so what is
measured is the engine. `metadata.stepSleepSeconds` spaces events out for
the stream benchmarks."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from planner.types import Capability, ContextBundle

LENGTH = 19  # + the output node = a 20-node plan
BASE_CATALOG = Path(__file__).resolve().parent.parent / "planner" / "catalog" / "facets.json"


def facet(i: int) -> str:
    return f"bench_{i}"


def _make(i: int) -> type[Capability]:
    def run(self: Capability, bundle: ContextBundle) -> dict[str, Any]:
        pause = float((bundle.metadata or {}).get("stepSleepSeconds", 0) or 0)
        if pause:
            time.sleep(pause)
        return {facet(i): {"step": i}}

    return type(f"Step{i}", (Capability,), {
        "__module__": __name__, "capability_id": f"bench.Step{i}", "display_name": f"Bench step {i}",
        "kind": "transformation", "input_facets": ("company_information",) if i == 1 else (facet(i - 1),),
        "output_facets": (facet(i),), "description": "Returns its facet at once.", "run": run,
    })


for _i in range(1, LENGTH + 1):
    globals()[f"Step{_i}"] = _make(_i)

PATHS = [f"{__name__}.Step{i}" for i in range(1, LENGTH + 1)]


def write_catalog(path: Path) -> Path:
    data = json.loads(BASE_CATALOG.read_text())
    for i in range(1, LENGTH + 1):
        data["facets"].append({"name": facet(i), "title": f"Bench {i}", "description": "Benchmark facet.",
                               "semantics": "Benchmark only.", "direction": "bidirectional",
                               "schema": {"type": "object", "required": ["step"],
                                          "properties": {"step": {"type": "integer"}}}})
    # What the long-polling agents of bench.agents produce.
    data["facets"].append({"name": "bench_agent", "title": "Bench agent", "description": "Benchmark facet.",
                           "semantics": "Benchmark only.", "direction": "output",
                           "schema": {"type": "object", "required": ["step"],
                                      "properties": {"step": {"type": "integer"}}}})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def envelope(nodes: int, *, step_sleep: float = 0.0) -> dict[str, Any]:
    """An envelope whose plan has `nodes` nodes (nodes - 1 steps + the output node)."""
    return {
        "objective": f"Benchmark chain of {nodes} nodes",
        "inputs": {"company_information": {"name": "Bench"}},
        "constraints": {"maxNodes": 200},
        "metadata": {"stepSleepSeconds": step_sleep},
        "outputContract": {"mode": "facets", "facets": [facet(nodes - 1)]},
    }


def event_count(nodes: int) -> int:
    """start, plan_requested, plan_generated, node_start/node_complete per node, complete."""
    return 2 * nodes + 4
