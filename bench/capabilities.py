"""Trivial capabilities for the benchmark: a chain company_information ->
bench_1 -> bench_2 -> … Each does nothing but return its facet, so what is
measured is the engine. `metadata.stepSleepSeconds` spaces events out for
the stream benchmarks; `metadata.padBytes` makes each facet that large (the
growth benchmark's 2 KB nodes)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from planner.types import Capability, ContextBundle

LENGTH = 99  # + the output node = up to a 100-node plan
BASE_CATALOG = Path(__file__).resolve().parent.parent / "planner" / "catalog" / "facets.json"


def facet(i: int) -> str:
    return f"bench_{i}"


def _make(i: int) -> type[Capability]:
    def run(self: Capability, bundle: ContextBundle) -> dict[str, Any]:
        metadata = bundle.metadata or {}
        pause = float(metadata.get("stepSleepSeconds", 0) or 0)
        if pause:
            time.sleep(pause)
        pad = int(metadata.get("padBytes", 0) or 0)
        return {facet(i): {"step": i, "pad": "x" * pad} if pad else {"step": i}}

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


def envelope(nodes: int, *, step_sleep: float = 0.0, pad_bytes: int = 0, approve_after: int | None = None
             ) -> dict[str, Any]:
    """An envelope whose plan has `nodes` nodes (nodes - 1 steps + the output
    node); with `approve_after`, a person must approve step N's output."""
    metadata: dict[str, Any] = {"stepSleepSeconds": step_sleep}
    if pad_bytes:
        metadata["padBytes"] = pad_bytes
    env: dict[str, Any] = {
        "objective": f"Benchmark chain of {nodes} nodes",
        "inputs": {"company_information": {"name": "Bench"}},
        "constraints": {"maxNodes": 200},
        "metadata": metadata,
        "outputContract": {"mode": "facets", "facets": [facet(nodes - 1)]},
    }
    if approve_after is not None:
        env["policies"] = {"runtime": [{
            "id": "bench-approve", "action": {"type": "hitl", "rationale": "Benchmark approval"},
            "trigger": {"kind": "onNodeComplete", "selector": {"capabilityId": f"bench.Step{approve_after}"}}}]}
    return env


def event_count(nodes: int) -> int:
    """start, plan_requested, plan_generated, node_start/node_complete per node, complete."""
    return 2 * nodes + 4
