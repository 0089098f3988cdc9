"""Test-only capabilities for the multi-process tests, loaded by the child
processes through FLEX_EXTRA_CAPABILITIES (see `conftest.child_env`).

Capabilities may only consume catalog facets, so their knobs come from the
envelope's `metadata`:

- `mp.Sleeper` (company_information -> qa_report) sleeps
  `metadata.sleepSeconds` and appends one line per call to
  `metadata.callLog` (a file), so a test can count invocations across
  processes. Envelopes forbid the built-in `qa.ContentReview` so the planner
  picks it.
- `mp.Chain1` … `mp.ChainN` (company_information -> mp_chain_1 -> … ->
  mp_chain_N) each sleep `metadata.stepSleepSeconds`: a run with many
  events spread over time, for the stream tests. Their facets live in a test
  catalog written by `write_catalog` (the real catalog plus mp_chain_*).
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from django.conf import settings

from planner.types import Capability, ContextBundle

CHAIN_LENGTH = 18


def _log_call(bundle: ContextBundle) -> None:
    path = (bundle.metadata or {}).get("callLog")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"pid": os.getpid(), "nodeId": bundle.node_id, "attempt": bundle.attempt,
                                 "key": bundle.idempotency_key, "at": time.time()}) + "\n")


class Sleeper(Capability):
    capability_id = "mp.Sleeper"
    display_name = "Sleeper (test)"
    kind = "validation"
    input_facets = ("company_information",)
    output_facets = ("qa_report",)
    description = "Sleeps metadata.sleepSeconds, then reports."

    def run(self, bundle: ContextBundle) -> dict[str, Any]:
        _log_call(bundle)
        # What a careless capability does: log what it was given (secrets included).
        logging.getLogger("tests.mp.sleeper").warning("sleeper given %s", (bundle.metadata or {}).get("note", ""),
                                                      extra={"metadata": bundle.metadata})
        time.sleep(float((bundle.metadata or {}).get("sleepSeconds", 0)))
        return {"qa_report": {"score": 1, "findings": [
            {"severity": "info", "message": f"slept in pid {os.getpid()}, attempt {bundle.attempt}"}]}}


def chain_facet(i: int) -> str:
    return f"mp_chain_{i}"


def _make_chain(i: int) -> type[Capability]:
    def run(self: Capability, bundle: ContextBundle) -> dict[str, Any]:
        time.sleep(float((bundle.metadata or {}).get("stepSleepSeconds", 0)))
        return {chain_facet(i): {"step": i}}

    return type(f"Chain{i}", (Capability,), {
        "__module__": __name__,
        "capability_id": f"mp.Chain{i}",
        "display_name": f"Chain step {i} (test)",
        "kind": "transformation",
        "input_facets": ("company_information",) if i == 1 else (chain_facet(i - 1),),
        "output_facets": (chain_facet(i),),
        "description": "One step of a chain of trivial nodes.",
        "run": run,
    })


for _i in range(1, CHAIN_LENGTH + 1):
    globals()[f"Chain{_i}"] = _make_chain(_i)

CAPABILITY_PATHS = [f"{__name__}.Sleeper"] + [f"{__name__}.Chain{i}" for i in range(1, CHAIN_LENGTH + 1)]


def write_catalog(path: Path) -> Path:
    """The real facet catalog plus the chain facets, written to `path`."""
    base = json.loads(Path(settings.BASE_DIR / "planner" / "catalog" / "facets.json").read_text())
    for i in range(1, CHAIN_LENGTH + 1):
        base["facets"].append({
            "name": chain_facet(i), "title": f"Chain step {i}", "description": "A test facet.",
            "semantics": "Test only.", "direction": "bidirectional",
            "schema": {"type": "object", "required": ["step"], "properties": {"step": {"type": "integer"}}},
        })
    path.write_text(json.dumps(base))
    return path
