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
