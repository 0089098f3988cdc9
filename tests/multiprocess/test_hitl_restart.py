"""A run waiting for a person survives every process being killed: the
state is in the database, not in a process (issue 4, restart survival)."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from runs.models import NodeRun, RunEvent
from tests.multiprocess.conftest import assert_contiguous, events_json, submit, wait_run_status

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

EXAMPLES = Path(settings.BASE_DIR) / "examples" / "envelopes"
AUDIENCE = "Risk officers at credit unions"


def example(name: str) -> dict:
    return json.loads((EXAMPLES / f"{name}.json").read_text())


@pytest.mark.parametrize("name, responses", [
    ("clarify-audience", [{"responseType": "freeform", "freeformText": AUDIENCE}]),
    ("approval-required", [{"responseType": "approval", "approved": True}]),
])
def test_a_waiting_run_survives_every_process_being_killed(procs, token, name, responses):
    auth = {"Authorization": f"Bearer {token}"}
    web, port = procs.daphne()
    worker = procs.worker()
    run_id = submit(port, token, example(name))
    assert wait_run_status(run_id, ("awaiting_hitl",), timeout=30) == "awaiting_hitl"

    # Stop every process, without any chance to clean up.
    web.kill()
    worker.kill()
    web2, port2 = procs.daphne()
    procs.worker()

    pending = httpx.get(f"http://127.0.0.1:{port2}/api/hitl/pending", headers=auth, timeout=30).json()["runs"]
    entry = next(r for r in pending if r["runId"] == run_id)
    response = httpx.post(f"http://127.0.0.1:{port2}/api/hitl/resume", headers=auth, timeout=30,
                          json={"runId": run_id, "requestId": entry["pendingRequestId"], "responses": responses})
    assert response.status_code == 200, response.text
    assert wait_run_status(run_id, ("completed", "failed"), timeout=30) == "completed"

    # No completed node ran again: every node committed once, completed once.
    assert set(NodeRun.objects.filter(run_id=run_id).values_list("commits", flat=True)) == {1}
    completes = Counter(RunEvent.objects.filter(run_id=run_id, type="node_complete").values_list("node_id", flat=True))
    assert completes and set(completes.values()) == {1}
    starts = Counter(RunEvent.objects.filter(run_id=run_id, type="node_start").values_list("node_id", flat=True))
    if name == "clarify-audience":
        assert starts["strategist"] == 2 and starts["copywriter"] == 1  # only the asking node re-ran
        output = RunEvent.objects.get(run_id=run_id, type="complete").payload["output"]
        assert all(AUDIENCE in v["body"] for v in output["copyVariants"])
    else:
        assert set(starts.values()) == {1}
    assert_contiguous(events_json(port2, token, run_id))
