"""The engine loop as a client sees it: statuses, retry back-off, the queue."""
from __future__ import annotations

import time

import pytest
from django.utils import timezone

from runs.models import NodeRun, Run
from tests.capabilities import review_envelope
from tests.conftest import load_envelope
from tests.hitl.helpers import submit

pytestmark = pytest.mark.django_db


def events(api, run_id):
    response = api.get(f"/api/v1/flex/runs/{run_id}/events?limit=1000")
    assert response.status_code == 200, response.content
    return response.json()["events"]


def test_a_new_run_is_planning_before_it_runs(api_for, client_user, drain):
    api = api_for(client_user)
    run_id = submit(api, load_envelope("linkedin-variants"))
    assert api.get(f"/api/v1/flex/runs/{run_id}").json()["run"]["status"] == "queued"

    drain()

    frames = events(api, run_id)
    assert [f["type"] for f in frames[:3]] == ["start", "plan_requested", "plan_generated"]
    # queued -> planning (start) -> running (the plan and the first node_start).
    assert frames[0]["payload"]["status"] == "planning"
    assert api.get(f"/api/v1/flex/runs/{run_id}").json()["run"]["status"] == "completed"


def test_a_retryable_error_waits_in_the_queue_for_its_back_off(api_for, client_user, drain, settings):
    settings.FLEX_EXTRA_CAPABILITIES = ["tests.capabilities.UnreachableOnceReview"]
    settings.FLEX_RETRY_BACKOFF_SECONDS = 0.6
    api = api_for(client_user)
    run_id = submit(api, review_envelope(load_envelope("linkedin-variants"), "test.UnreachableOnceReview"))
    before = timezone.now()

    drain()

    run = Run.objects.get(pk=run_id)
    error = [f for f in events(api, run_id) if f["type"] == "node_error"][-1]
    assert error["payload"]["willRetry"] is True and error["payload"]["error"]["code"] == "review_unavailable"
    # The run waits in the queue, holding no worker, until its back-off is over.
    assert run.status == "queued" and run.available_at >= before + timezone.timedelta(seconds=0.6)
    assert NodeRun.objects.get(run=run, node_id="test").status == "pending"
    assert drain() == 0  # nothing is claimable yet

    time.sleep(max((run.available_at - timezone.now()).total_seconds(), 0) + 0.05)
    drain()

    run.refresh_from_db()
    assert run.status == "completed"
    assert NodeRun.objects.get(run=run, node_id="test").attempts == 2
    types = [f["type"] for f in events(api, run_id) if f.get("nodeId") == "test"]
    assert types == ["node_start", "node_error", "node_start", "node_complete"]


def test_the_planners_rationale_for_each_node_is_in_plan_generated_and_the_debug_view(
        api_for, client_user, drain, settings):
    settings.FLEX_EXTRA_CAPABILITIES = ["tests.capabilities.FlakyReview"]  # a second producer of qa_report
    body = load_envelope("facets-output")
    body["policies"]["planner"]["selection"] = {"prefer": ["test.FlakyReview"]}
    api = api_for(client_user)
    run_id = submit(api, body)

    drain()

    [plan] = [f for f in events(api, run_id) if f["type"] == "plan_generated"]
    rationale = {n["capabilityId"]: n["rationale"] for n in plan["payload"]["nodes"]}
    assert rationale["test.FlakyReview"] == ("Produces qa_report (preferred by selection.prefer over "
                                             "qa.ContentReview); feeds output")
    assert rationale["copywriter.SocialpostDrafting"].startswith(
        "Produces copyVariants (quality 0.8 beats copywriter.ShortformDrafting 0.5 by the default objective); "
        "feeds ")
    assert all(rationale.values())
    [version] = api.get(f"/api/v1/flex/runs/{run_id}").json()["planVersions"]
    assert {n["capabilityId"]: n["rationale"] for n in version["nodes"]} == rationale


def test_a_run_whose_worker_died_while_planning_is_planned_by_the_next_worker(api_for, client_user, drain):
    from datetime import timedelta

    from runs import events as ev
    from runs.engine import lease, loop

    api = api_for(client_user)
    run_id = submit(api, load_envelope("linkedin-variants"))
    # A worker claims the run, records `planning` (and `start`), then dies before the plan is committed.
    claim = lease.claim_next(worker_id="doomed")
    ctx = loop.load(claim)
    step = loop.Step(status="planning")
    step.event(ev.event_start(run_id=run_id, thread_id=None, status="planning", correlation_id=None))
    loop.commit(ctx, step, expect=("queued",))
    Run.objects.filter(pk=run_id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert api.get(f"/api/v1/flex/runs/{run_id}").json()["run"]["status"] == "planning"

    drain()  # the sweep takes the run over

    assert api.get(f"/api/v1/flex/runs/{run_id}").json()["run"]["status"] == "completed"
    types = [f["type"] for f in events(api, run_id)]
    assert types[:3] == ["start", "plan_requested", "plan_generated"] and types.count("start") == 1
    assert [f["seq"] for f in events(api, run_id)] == list(range(1, len(types) + 1))
