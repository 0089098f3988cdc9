"""Replanning and goals across real processes: a daphne web process and a
`manage.py flex_worker` on the same database (docs/planning.md)."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from runs.models import NodeRun, PlanVersion, RunEvent
from tests.multiprocess.conftest import assert_contiguous, submit, wait_run_status

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

EXAMPLES = Path(settings.BASE_DIR) / "examples" / "envelopes"


def example(name: str) -> dict:
    return json.loads((EXAMPLES / f"{name}.json").read_text())


def test_the_goal_example_is_replanned_once_and_completes(procs, token):
    web, port = procs.daphne()
    procs.worker()
    body = example("goal-quality")
    # The multi-process tests register other producers of qa_report (mp.*): the demo reviewer judges here.
    body["policies"]["planner"]["selection"] = {"prefer": ["qa.ContentReview"]}
    run_id = submit(port, token, body)

    assert wait_run_status(run_id, ("completed", "failed", "awaiting_hitl"), timeout=60) == "completed"

    frames = httpx.get(f"http://127.0.0.1:{port}/api/v1/flex/runs/{run_id}/events?limit=200",
                       headers={"Authorization": f"Bearer {token}"}, timeout=30).json()["events"]
    types = [f["type"] for f in frames]
    goals = [(f["payload"]["met"], f["payload"]["attempt"]) for f in frames if f["type"] == "goal_evaluated"]
    assert goals == [(False, 1), (True, 2)]
    first = types.index("goal_evaluated")
    assert types[first:first + 3] == ["goal_evaluated", "plan_requested", "plan_updated"]
    assert types[-1] == "complete" and frames[-1]["payload"]["output"]["qa_report"]["score"] == 1.0
    starts = Counter(RunEvent.objects.filter(run_id=run_id, type="node_start").values_list("node_id", flat=True))
    assert starts == {"strategist": 1, "copywriter": 2, "qa": 2, "output": 1}
    assert NodeRun.objects.get(run_id=run_id, node_id="strategist").commits == 1
    assert [v.reason for v in PlanVersion.objects.filter(run_id=run_id).order_by("version")] == ["initial", "replan"]
    assert_contiguous(frames)


def test_a_rejected_copy_is_replanned_onto_the_other_copywriter_by_another_process(procs, token):
    auth = {"Authorization": f"Bearer {token}"}
    body = example("approval-required")
    body["policies"]["runtime"][0]["action"]["rejectAction"] = "replan"
    web, port = procs.daphne()
    procs.worker()
    run_id = submit(port, token, body)
    assert wait_run_status(run_id, ("awaiting_hitl",), timeout=30) == "awaiting_hitl"

    pending = httpx.get(f"http://127.0.0.1:{port}/api/hitl/pending", headers=auth, timeout=30).json()["runs"]
    entry = next(r for r in pending if r["runId"] == run_id)
    response = httpx.post(f"http://127.0.0.1:{port}/api/hitl/resume", headers=auth, timeout=30,
                          json={"runId": run_id, "requestId": entry["pendingRequestId"],
                                "responses": [{"responseType": "rejection", "approved": False}]})
    assert response.status_code == 200, response.text
    assert wait_run_status(run_id, ("completed", "failed", "awaiting_hitl"), timeout=30) == "completed"

    version = PlanVersion.objects.get(run_id=run_id, version=2)
    assert version.reason == "replan"
    assert [n["capabilityId"] for n in version.graph["nodes"]] == [
        "strategist.SocialPosting", "copywriter.ShortformDrafting", "flex.OutputMapper"]
    starts = Counter(RunEvent.objects.filter(run_id=run_id, type="node_start").values_list("node_id", flat=True))
    assert starts == {"strategist": 1, "copywriter": 1, "copywriter-2": 1, "output": 1}
    assert_contiguous(list(RunEvent.objects.filter(run_id=run_id).order_by("seq").values("seq")))
