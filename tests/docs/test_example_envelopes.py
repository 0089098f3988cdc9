"""The example envelopes of examples/envelopes/ do what its README says
(the repository's copies: the docs tell users to send those files)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from runs.models import NodeRun, Run
from tests.sse import streamed, types

pytestmark = pytest.mark.django_db(transaction=True)
EXAMPLES = Path(settings.BASE_DIR) / "examples" / "envelopes"


def example(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / f"{name}.json").read_text())


@pytest.fixture
def workers(settings):
    from runs.engine.worker import start_embedded_workers, stop_embedded_workers

    settings.FLEX_IDLE_POLL_SECONDS = 0.05
    start_embedded_workers(1)
    yield
    stop_embedded_workers()


def test_every_example_envelope_is_listed_in_the_readme():
    readme = (EXAMPLES / "README.md").read_text()
    for path in EXAMPLES.glob("*.json"):
        assert f"`{path.name}`" in readme


def test_the_pause_example_pauses_after_the_strategist_and_completes_on_resume(workers, api_for, client_user,
                                                                               operator):
    frames = streamed(api_for(client_user).post("/api/v1/flex/run.stream", example("pause-after-brief"),
                                                format="json", HTTP_ACCEPT="text/event-stream"))

    assert types(frames)[-1] == "policy_triggered"
    last = frames[-1]["data"]["payload"]
    assert last["action"]["type"] == "pause" and last["policyId"] == "pause-after-brief"
    assert last["nodeId"] == "strategist"
    run = Run.objects.get(pk=frames[0]["data"]["runId"])
    assert run.status == "paused"
    assert api_for(operator).get("/api/hitl/pending").json()["runs"] == []

    resumed = streamed(api_for(operator).post("/api/v1/flex/run.resume",
                                              {"runId": run.id, "expectedPlanVersion": run.plan_version},
                                              format="json", HTTP_ACCEPT="text/event-stream"))

    assert types(resumed)[0] == "plan_updated" and types(resumed)[-1] == "complete"
    assert resumed[-1]["data"]["payload"]["status"] == "completed"
    assert len(resumed[-1]["data"]["payload"]["output"]["copyVariants"]) == 1
    started = [f["data"]["payload"]["nodeId"] for f in resumed if f["event"] == "node_start"]
    assert "strategist" not in started and "copywriter" in started
    assert NodeRun.objects.get(run=run, node_id="strategist").attempts == 1


def test_the_goal_example_is_replanned_once_then_meets_its_goal(workers, api_for, client_user):
    frames = streamed(api_for(client_user).post("/api/v1/flex/run.stream", example("goal-quality"),
                                                format="json", HTTP_ACCEPT="text/event-stream"))

    seen = types(frames)
    assert seen[-1] == "complete" and frames[-1]["data"]["payload"]["status"] == "completed"
    goals = [(f["data"]["payload"]["met"], f["data"]["payload"]["attempt"]) for f in frames
             if f["event"] == "goal_evaluated"]
    assert goals == [(False, 1), (True, 2)]
    updated = next(f["data"]["payload"] for f in frames if f["event"] == "plan_updated")
    assert updated["reason"] == "replan" and updated["trigger"]["kind"] == "goal"
    started = [f["data"]["payload"]["nodeId"] for f in frames if f["event"] == "node_start"]
    assert started == ["strategist", "copywriter", "qa", "copywriter", "qa", "output"]
    [plan] = [f["data"]["payload"] for f in frames if f["event"] == "plan_generated"]
    assert plan["nodes"][1]["capabilityId"] == "copywriter.ShortformDrafting"
    run = Run.objects.get(pk=frames[0]["data"]["runId"])
    directives = example("goal-quality")["policies"]["planner"]["directives"]
    assert all(node.input["directives"] == directives for node in NodeRun.objects.filter(run=run))
