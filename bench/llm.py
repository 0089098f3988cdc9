"""Language-model nodes: the server's own overhead apart from the model's latency.

The LLM example envelope (`examples/envelopes/llm-social-post.json`, three
model-backed nodes and the output mapper) runs against the local
OpenAI-compatible test server (`tests/llm_server.py`, its own process), which
answers after a fixed delay that stands for the model. Runs are advanced in
this process, one thread, by the workers' claim / execute / commit path
(`drain`). Per LLM node and attempt:

- model: the time the test server spent on the request (its `handledMs`,
  the scripted delay included) — the model's latency;
- node: from the node's `node_start` to its `node_complete` (event
  timestamps: both are committed rows, so the commit of the result counts);
- overhead = node - model: ours (prompt, SDK and HTTP, parsing, validation,
  the commit); split into SDK+HTTP (`callMs` measured around the SDK call,
  minus model) and the rest.
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Any

from bench.common import ROOT, emit, setup_django

MODEL_DELAY_MS = float(os.environ.get("FLEX_BENCH_LLM_DELAY_MS", "50"))
RUNS = int(os.environ.get("FLEX_BENCH_LLM_RUNS", "20"))
# Node id -> what only that node's prompt contains.
MARKERS = {"strategist": "(`strategic_rationale`)", "copywriter": "(`post_copy`)", "qa": "(`qa_report`)"}


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from tests.llm_helpers import LlmTestServer, answer, brief_facets, copy_facets, review_facets

    server = LlmTestServer()
    os.environ.update({"OPENAI_API_KEY": "sk-bench-not-a-real-key", "OPENAI_BASE_URL": server.base_url,
                       "OPENAI_MODEL": "bench-model"})
    try:
        setup_django()
        from runs.engine.worker import drain
        from runs.models import Run, RunEvent
        from runs.services import run_create
        from bench.common import bench_user
        from tests.conftest import load_envelope

        replies = []
        for _ in range(RUNS + 1):
            replies += [answer(brief_facets(), match=MARKERS["strategist"], delayMs=MODEL_DELAY_MS),
                        answer(copy_facets(2), match=MARKERS["copywriter"], delayMs=MODEL_DELAY_MS),
                        answer(review_facets(), match=MARKERS["qa"], delayMs=MODEL_DELAY_MS)]
        server.script(replies)
        user = bench_user()
        # One warm-up run (imports, the SDK client, connections), not measured.
        warm = run_create(user=user, envelope=load_envelope("llm-social-post")).id
        drain(max_steps=20)
        assert Run.objects.get(pk=warm).status == "completed", Run.objects.get(pk=warm).error
        skip = len(server.requests())
        ids = [run_create(user=user, envelope=load_envelope("llm-social-post")).id for _ in range(RUNS)]
        started = time.perf_counter()
        drain(max_steps=RUNS * 10 + 10)
        elapsed = time.perf_counter() - started
        done = Run.objects.filter(pk__in=ids, status="completed").count()
        assert done == RUNS, f"only {done} of {RUNS} runs completed"

        requests = server.requests()[skip:]
        model_ms: dict[str, list[float]] = {node: [] for node in MARKERS}
        for request in requests:
            prompt = request["body"]["messages"][-1]["content"]
            node = next(n for n, marker in MARKERS.items() if marker in prompt)
            model_ms[node].append(float(request["handledMs"]))
        node_ms: dict[str, list[float]] = {node: [] for node in MARKERS}
        call_ms: dict[str, list[float]] = {node: [] for node in MARKERS}
        # drain advances one run at a time, nodes in plan order: the k-th
        # request for a node is the k-th run's (runs are created in order).
        for run_id in ids:
            starts: dict[str, Any] = {}
            for event in RunEvent.objects.filter(run_id=run_id, type__in=("node_start", "node_complete")) \
                    .order_by("seq"):
                if event.node_id not in MARKERS:
                    continue
                if event.type == "node_start":
                    starts[event.node_id] = event.created_at
                else:
                    node_ms[event.node_id].append((event.created_at - starts[event.node_id]).total_seconds() * 1000)
                    call_ms[event.node_id].append(float(event.payload["usage"]["callMs"]))
        nodes = {}
        for node in MARKERS:
            overhead = [n - m for n, m in zip(node_ms[node], model_ms[node])]
            sdk = [c - m for c, m in zip(call_ms[node], model_ms[node])]
            nodes[node] = {
                "model_ms_p50": statistics.median(model_ms[node]), "node_ms_p50": statistics.median(node_ms[node]),
                "overhead_ms_p50": statistics.median(overhead), "overhead_ms_max": max(overhead),
                "sdk_http_ms_p50": statistics.median(sdk),
                "engine_ms_p50": statistics.median([o - s for o, s in zip(overhead, sdk)]),
                "attempts": len(node_ms[node]),
            }
        emit({"runs": RUNS, "model_delay_ms": MODEL_DELAY_MS, "ms_per_run": elapsed * 1000 / RUNS, "nodes": nodes})
    finally:
        server.stop()


if __name__ == "__main__":
    main()
