"""A real worker process's log output: every line about a run carries the
correlation id the web process received, and each node has its lines."""
from __future__ import annotations

import json

import httpx
import pytest

from runs.models import Run
from tests.multiprocess.conftest import sleeper_envelope, wait_run_status

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_workers_log_lines_about_a_run_carry_the_correlation_id_of_its_request(procs, token):
    web, port = procs.daphne()
    worker = procs.worker(env={"LOG_LEVEL": "INFO"})
    response = httpx.post(f"http://127.0.0.1:{port}/api/v1/flex/runs", json=sleeper_envelope(sleep=0),
                          headers={"Authorization": f"Bearer {token}", "X-Correlation-ID": "mp-corr-42"}, timeout=30)
    assert response.status_code == 202, response.text
    assert response.headers["X-Correlation-ID"] == "mp-corr-42"
    run_id = response.json()["runId"]

    assert wait_run_status(run_id, ("completed", "failed"), timeout=30) == "completed"
    assert Run.objects.get(pk=run_id).correlation_id == "mp-corr-42"

    worker.stop()
    lines = [json.loads(line) for line in worker.log_path.read_text().splitlines() if line.startswith("{")]
    about_the_run = [line for line in lines if line.get("run_id") == run_id]
    assert about_the_run and {line.get("correlation_id") for line in about_the_run} == {"mp-corr-42"}
    nodes = [(line["message"], line["node_id"], line["status"]) for line in about_the_run
             if line["message"] in ("node_start", "node_complete")]
    node_ids = {node_id for _, node_id, _ in nodes}
    assert len(node_ids) == 2  # the sleeper node and the output node
    for node_id in node_ids:
        assert [(m, s) for m, n, s in nodes if n == node_id] == [("node_start", "running"),
                                                                  ("node_complete", "completed")]


PLANTED = ("sk-planted-3141", "planted-pw-2718", "planted-token-1618")


def test_one_runs_lines_from_every_process_carry_its_ids_and_no_planted_secret(procs, token):
    auth = {"Authorization": f"Bearer {token}"}
    web, port = procs.daphne(env={"LOG_LEVEL": "INFO"})
    worker = procs.worker(env={"LOG_LEVEL": "INFO"})
    envelope = sleeper_envelope(sleep=0, apiKey=PLANTED[0], note=f"use password={PLANTED[1]} when asked")
    response = httpx.post(f"http://127.0.0.1:{port}/api/v1/flex/runs?token={PLANTED[2]}", json=envelope,
                          headers={**auth, "X-Correlation-ID": "mp-corr-77"}, timeout=30)
    assert response.status_code == 202, response.text
    run_id = response.json()["runId"]
    assert wait_run_status(run_id, ("completed", "failed"), timeout=30) == "completed"
    # Reads of the run from another request, with its own correlation id.
    debug = httpx.get(f"http://127.0.0.1:{port}/api/v1/flex/runs/{run_id}",
                      headers={**auth, "X-Correlation-ID": "reader-1"}, timeout=30)
    assert debug.status_code == 200

    web.stop()
    worker.stop()
    raw = {"web": web.log_path.read_text(), "worker": worker.log_path.read_text()}
    for text in raw.values():
        for secret in PLANTED:
            assert secret not in text
    lines = {name: [json.loads(line) for line in text.splitlines() if line.startswith("{")]
             for name, text in raw.items()}
    about = {name: [line for line in found if line.get("run_id") == run_id or run_id in line["message"]]
             for name, found in lines.items()}
    assert about["web"] and about["worker"]
    for line in about["web"] + about["worker"]:
        assert line.get("run_id") == run_id, line
        assert line.get("correlation_id") == "mp-corr-77", line
    # The web process: who submitted it, and the reader's request keeps its own id beside the run's.
    assert any(line.get("user") == "mp-admin" for line in about["web"])
    assert any(line.get("request_correlation_id") == "reader-1" for line in about["web"])
    # The worker: every line names who submitted the run; a node's lines name the node.
    assert {line.get("user") for line in about["worker"]} == {"mp-admin"}
    [given] = [line for line in about["worker"] if line["message"].startswith("sleeper given")]
    assert given["capability_id"] == "mp.Sleeper" and given["node_id"] and given["plan_version"] == 1
    assert given["metadata"]["apiKey"] == "[redacted]"
