"""OpenTelemetry, configured by its standard environment variables, in real
processes: a span per HTTP request (web), per committed step and per node
(worker), with the run's ids; off by default at no cost."""
from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.multiprocess.conftest import sleeper_envelope, wait_run_status

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

pytest.importorskip("opentelemetry.sdk.trace")

OTEL = {"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "flex-test", "OTEL_BSP_SCHEDULE_DELAY": "100"}
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def spans(text: str) -> list[dict[str, Any]]:
    """The console exporter's spans (pretty-printed JSON objects) among the log lines."""
    decoder = json.JSONDecoder()
    found, at = [], 0
    while (at := text.find("{\n", at)) != -1:
        value, end = decoder.raw_decode(text, at)
        if isinstance(value, dict) and "context" in value and "name" in value:
            found.append(value)
        at = end
    return found


def test_it_writes_a_span_per_request_step_and_node_with_the_runs_ids(procs, token):
    web, port = procs.daphne(env=OTEL)
    worker = procs.worker(env=OTEL)
    response = httpx.post(f"http://127.0.0.1:{port}/api/v1/flex/runs", json=sleeper_envelope(sleep=0),
                          headers={"Authorization": f"Bearer {token}", "X-Correlation-ID": "trace-me",
                                   "traceparent": TRACEPARENT}, timeout=30)
    assert response.status_code == 202, response.text
    run_id = response.json()["runId"]
    assert wait_run_status(run_id, ("completed",), timeout=30) == "completed"
    web.stop()
    worker.stop()

    [request] = [s for s in spans(web.log_path.read_text()) if s["name"] == "POST /api/v1/flex/runs"]
    assert request["kind"] == "SpanKind.SERVER"
    assert request["context"]["trace_id"] == "0x4bf92f3577b34da6a3ce929d0e0e4736"  # the caller's trace goes on
    assert request["attributes"]["http.response.status_code"] == 202
    assert request["attributes"]["flex.run_id"] == run_id
    assert request["attributes"]["flex.correlation_id"] == "trace-me"
    assert request["resource"]["attributes"]["service.name"] == "flex-test"

    worker_spans = spans(worker.log_path.read_text())
    nodes = [s for s in worker_spans if s["name"] == "flex.node"]
    assert sorted(s["attributes"]["flex.capability_id"] for s in nodes) == ["flex.OutputMapper", "mp.Sleeper"]
    steps = [s for s in worker_spans if s["name"] == "flex.run.step"]
    assert len(steps) >= 3  # start, plan + first node, each node's result
    for span in nodes + steps:
        assert span["attributes"]["flex.run_id"] == run_id
        assert span["attributes"]["flex.correlation_id"] == "trace-me"


def test_it_costs_nothing_when_off(procs, token):
    from flexagents import tracing
    from runs.engine import loop

    assert tracing.ENABLED is False  # no OTEL_* variable in the test environment
    assert not hasattr(loop.commit, "__wrapped__")  # the step function itself, undecorated
    web, port = procs.daphne()
    response = httpx.post(f"http://127.0.0.1:{port}/api/v1/flex/runs", json=sleeper_envelope(sleep=0),
                          headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert response.status_code == 202
    web.stop()
    assert spans(web.log_path.read_text()) == []
