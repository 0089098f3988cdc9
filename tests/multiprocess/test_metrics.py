"""`GET /metrics` of a real daphne shows the exact counts of what a real web
process and real worker processes did (prometheus-client multi-process mode):
completed and failed runs, validation retries, a pending approval, a lease
takeover, an open stream."""
from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings
from prometheus_client.parser import text_string_to_metric_families

from runs.models import RunEvent
from tests.capabilities import review_envelope
from tests.multiprocess import capabilities
from tests.multiprocess.conftest import sleeper_envelope, submit, wait_run_status
from tests.multiprocess.procs import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

EXAMPLES = Path(settings.BASE_DIR) / "examples" / "envelopes"


def example(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / f"{name}.json").read_text())


def scrape(port: int) -> dict[str, float]:
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    return {sample.name + _labels(sample.labels): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def _labels(labels: dict[str, str]) -> str:
    return "{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}" if labels else ""


def labelled(samples: dict[str, float], name: str, label: str) -> dict[str, float]:
    """{label value: sample} of one metric's series (zero series left out)."""
    prefix = name + "{" + label + "="
    return {key[len(prefix):-1]: value for key, value in samples.items() if key.startswith(prefix) and value}


def calls(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def test_it_counts_what_every_process_did_exactly(procs, token, tmp_path):
    auth = {"Authorization": f"Bearer {token}"}
    # Every process of this deployment shares one fresh metrics directory.
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
           "FLEX_EXTRA_CAPABILITIES": ",".join(capabilities.CAPABILITY_PATHS + [
               "tests.capabilities.FlakyReview", "tests.capabilities.BrokenReview"])}
    (tmp_path / "prometheus").mkdir()
    web, port = procs.daphne(env=env)
    workers = {w.pid: w for w in (procs.worker(env=env), procs.worker(env=env))}
    before = scrape(port)
    assert before["flex_lease_takeovers_total"] == 0
    assert labelled(before, "flex_runs_total", "status") == {}

    completed = submit(port, token, example("linkedin-variants"))
    retried = submit(port, token, review_envelope(example("linkedin-variants"), "test.FlakyReview"))
    failed = submit(port, token, review_envelope(example("linkedin-variants"), "test.BrokenReview"))
    waiting = submit(port, token, example("approval-required"))
    assert wait_run_status(completed, ("completed",), timeout=30) == "completed"
    assert wait_run_status(retried, ("completed",), timeout=30) == "completed"
    assert wait_run_status(failed, ("failed",), timeout=30) == "failed"
    assert wait_run_status(waiting, ("awaiting_hitl",), timeout=30) == "awaiting_hitl"

    # The pending gauge follows the inbox; a stream left open is counted while it is open.
    samples = scrape(port)
    assert samples["flex_hitl_pending"] == 1
    opened = threading.Event()
    close = threading.Event()

    def follow() -> None:
        with httpx.stream("GET", f"http://127.0.0.1:{port}/api/v1/flex/runs/{waiting}/stream",
                          headers={**auth, "Accept": "text/event-stream"}, timeout=30) as response:
            for _ in response.iter_lines():
                opened.set()
                if close.is_set():
                    return

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    assert opened.wait(20)
    assert scrape(port)["flex_sse_open_streams"] == 1

    pending = httpx.get(f"http://127.0.0.1:{port}/api/hitl/pending", headers=auth, timeout=30).json()["runs"]
    entry = next(r for r in pending if r["runId"] == waiting)
    answered = httpx.post(f"http://127.0.0.1:{port}/api/hitl/resume", headers=auth, timeout=30, json={
        "runId": waiting, "requestId": entry["pendingRequestId"],
        "responses": [{"responseType": "approval", "approved": True}]})
    assert answered.status_code == 200, answered.text
    assert wait_run_status(waiting, ("completed",), timeout=30) == "completed"
    close.set()
    follower.join(20)  # the stream ends with the run's `complete`
    assert scrape(port)["flex_hitl_pending"] == 0
    wait_for(lambda: scrape(port)["flex_sse_open_streams"] == 0, timeout=10, what="the stream to be forgotten")

    # A takeover: the worker running a slow node is killed; the other one takes the run over.
    log = tmp_path / "calls.jsonl"
    taken_over = submit(port, token, sleeper_envelope(sleep=2.5, call_log=str(log)))
    wait_for(lambda: len(calls(log)) == 1, timeout=20, what="a worker to call the sleeper")
    workers.pop(calls(log)[0]["pid"]).kill()
    assert wait_run_status(taken_over, ("completed",), timeout=30) == "completed"

    samples = scrape(port)
    assert labelled(samples, "flex_runs_total", "status") == {"completed": 4, "failed": 1}
    assert samples["flex_run_duration_seconds_count"] == 5
    assert labelled(samples, "flex_validation_retries_total", "capability_id") == {"test.FlakyReview": 2}
    assert labelled(samples, "flex_planner_plans_total", "result") == {"generated": 5}
    assert samples["flex_lease_takeovers_total"] == 1
    assert samples["flex_hitl_response_seconds_count"] == 1
    assert samples["flex_hitl_pending"] == 0
    assert samples["flex_queue_depth"] == 0
    # Node durations: one observation per committed node result, per capability,
    # whichever worker (the killed one included) committed it.
    committed = Counter(RunEvent.objects.filter(type="node_complete").values_list("payload__capabilityId", flat=True))
    assert labelled(samples, "flex_node_duration_seconds_count", "capability_id") == dict(committed)
    assert committed["mp.Sleeper"] == 1 and committed["test.FlakyReview"] == 1
    policies = Counter(a["type"] for a in RunEvent.objects.filter(type="policy_triggered")
                       .values_list("payload__action", flat=True))
    assert policies, "approval-required fires a policy"
    assert labelled(samples, "flex_policy_triggers_total", "action") == dict(policies)
