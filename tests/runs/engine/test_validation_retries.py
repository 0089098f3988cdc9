"""Every node output is validated against its contract; invalid output is
retried up to constraints.maxRetries and never committed."""
from __future__ import annotations

import pytest

from runs.models import NodeRun, Run, RunEvent
from tests.capabilities import review_envelope
from tests.conftest import load_envelope

TEST_CAPABILITIES = ["tests.capabilities.FlakyReview", "tests.capabilities.NeverValidReview",
                     "tests.capabilities.BrokenReview"]


@pytest.fixture(autouse=True)
def _test_capabilities(settings):
    settings.FLEX_EXTRA_CAPABILITIES = TEST_CAPABILITIES


def submit(api, body):
    response = api.post("/api/v1/flex/runs", body, format="json")
    assert response.status_code == 202, response.content
    return response.json()["runId"]


def events(run_id):
    return list(RunEvent.objects.filter(run_id=run_id).order_by("seq"))


def test_it_retries_invalid_output_until_it_is_valid(api_for, client_user, drain):
    run_id = submit(api_for(client_user), review_envelope(load_envelope("linkedin-variants"), "test.FlakyReview"))
    drain()

    run = Run.objects.get(pk=run_id)
    assert run.status == "completed"
    review = [e for e in events(run_id) if e.node_id == "test"]
    assert [e.type for e in review] == ["node_start", "validation_error", "node_start", "validation_error",
                                        "node_start", "node_complete"]
    first_error = review[1].payload
    assert first_error["scope"] == "node" and first_error["attempt"] == 1
    assert {e["path"] for e in first_error["errors"]} == {"/qa_report/score", "/qa_report/findings"}
    node = NodeRun.objects.get(run_id=run_id, node_id="test")
    assert node.attempts == 3 and node.commits == 1
    assert 0 <= run.output["qa_report"]["score"] <= 1
    assert [e.seq for e in events(run_id)] == list(range(1, len(events(run_id)) + 1))


def test_it_asks_a_person_when_output_never_satisfies_the_contract(api_for, client_user, drain):
    run_id = submit(api_for(client_user), review_envelope(load_envelope("linkedin-variants"),
                                                          "test.NeverValidReview"))
    drain()

    run = Run.objects.get(pk=run_id)
    assert run.status == "awaiting_hitl"
    all_events = events(run_id)
    assert [e.type for e in all_events].count("validation_error") == 3  # maxRetries 2 → 3 attempts
    request = all_events[-1]
    assert request.type == "hitl_request" and request.payload["kind"] == "approval"
    assert request.payload["contractSummary"]["validationErrors"]
    node = NodeRun.objects.get(run_id=run_id, node_id="test")
    # Nothing invalid was committed: no output, no facet.
    assert node.output is None and node.commits == 0 and node.status == "awaiting_hitl"
    assert "qa_report" not in run.facet_snapshot()[0] and run.output is None


def test_it_honours_max_retries_from_the_envelope(api_for, client_user, drain):
    body = review_envelope(load_envelope("linkedin-variants"), "test.FlakyReview")
    body["constraints"] = {"maxRetries": 1}
    run_id = submit(api_for(client_user), body)
    drain()

    assert Run.objects.get(pk=run_id).status == "awaiting_hitl"
    assert NodeRun.objects.get(run_id=run_id, node_id="test").attempts == 2


def test_it_does_not_retry_a_permanent_capability_error(api_for, client_user, drain):
    run_id = submit(api_for(client_user), review_envelope(load_envelope("linkedin-variants"), "test.BrokenReview"))
    drain()

    node_errors = [e for e in events(run_id) if e.type == "node_error"]
    assert len(node_errors) == 1
    assert node_errors[0].payload["willRetry"] is False
    assert node_errors[0].payload["error"]["code"] == "review_refused"
    run = Run.objects.get(pk=run_id)
    assert run.status == "failed" and run.error["code"] == "review_refused"


# --- seed 8.3 FR4: exhausted retries escalate to a person ----------------------------

def pending(api):
    response = api.get("/api/hitl/pending")
    assert response.status_code == 200, response.content
    return response.json()["runs"]


def answer(api, run_id, request_id, approved):
    response = api.post("/api/hitl/resume", {
        "runId": run_id, "requestId": request_id,
        "responses": [{"responseType": "approval" if approved else "rejection", "approved": approved}]},
        format="json")
    assert response.status_code == 200, response.content
    return response.json()


def test_exhausted_retries_ask_a_person_with_the_invalid_output_and_approve_runs_the_node_once_more(
        api_for, client_user, operator, drain):
    body = review_envelope(load_envelope("linkedin-variants"), "test.FlakyReview")
    body["constraints"] = {"maxRetries": 1}  # FlakyReview is valid from its third attempt
    client = api_for(client_user)
    run_id = submit(client, body)
    drain()

    [item] = [r for r in pending(api_for(operator)) if r["runId"] == run_id]
    request = item["pendingRequest"]
    assert item["status"] == "awaiting_hitl" and request["kind"] == "approval"
    assert request["pendingNodeId"] == "test"
    # What the person is asked to approve: the invalid output, and why it is invalid.
    assert request["review"] == {"qa_report": {"score": 7, "findings": "none"}}
    assert {e["path"] for e in request["contractSummary"]["validationErrors"]} == {"/qa_report/score",
                                                                                  "/qa_report/findings"}
    assert "once more" in request["question"]

    resumed = answer(api_for(operator), run_id, request["requestId"], approved=True)
    assert resumed["status"] == "queued"
    drain()

    run = client.get(f"/api/v1/flex/runs/{run_id}").json()
    assert run["run"]["status"] == "completed"
    assert 0 <= run["output"]["qa_report"]["score"] <= 1  # the third attempt's valid output, not the reviewed one
    assert NodeRun.objects.get(run_id=run_id, node_id="test").attempts == 3


def test_rejecting_the_escalation_fails_the_node_and_the_run(api_for, client_user, operator, drain):
    client = api_for(client_user)
    run_id = submit(client, review_envelope(load_envelope("linkedin-variants"), "test.NeverValidReview"))
    drain()
    [item] = [r for r in pending(api_for(operator)) if r["runId"] == run_id]

    assert answer(api_for(operator), run_id, item["pendingRequestId"], approved=False)["status"] == "failed"

    frames = client.get(f"/api/v1/flex/runs/{run_id}/events?limit=1000").json()["events"]
    assert frames[-1]["type"] == "complete" and frames[-1]["payload"]["error"]["code"] == "hitl_rejected"
    assert NodeRun.objects.get(run_id=run_id, node_id="test").status == "failed"
