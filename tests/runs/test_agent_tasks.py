"""Tasks end to end over the HTTP API: the test is the agent. A run whose
review is done by an external capability: the worker dispatches the node and
lets go, the "agent" claims, completes (or fails, clarifies, lets its lease
expire), and the worker continues the run."""
from __future__ import annotations

from datetime import timedelta
from typing import Any, Callable

import pytest

from runs.engine import tasks as task_services
from runs.models import NodeRun, Run, RunEvent, Task, TaskStatus
from tests.runs.agents_helpers import REVIEW_ID, invalid_review, registration, review_envelope, valid_review

# Claims run on the shared executor (another thread, another connection): committed data only.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def agent_user(make_user: Callable[..., Any]) -> Any:
    return make_user("acme-bot", "agent")


@pytest.fixture
def agent_api(api_for: Callable[[Any], Any], agent_user: Any) -> Any:
    api = api_for(agent_user)
    response = api.post("/api/v1/flex/agents/register", registration(), format="json")
    assert response.status_code == 200, response.json()
    return api


def submit(api: Any, envelope: dict[str, Any]) -> str:
    response = api.post("/api/v1/flex/runs", envelope, format="json")
    assert response.status_code == 202, response.json()
    return str(response.json()["runId"])


def claim(api: Any, agent_id: str = "acme-review", wait: int = 0) -> Any:
    return api.post(f"/api/v1/flex/agents/{agent_id}/tasks/claim", {"waitSeconds": wait}, format="json")


def types(run_id: str) -> list[str]:
    return list(RunEvent.objects.filter(run_id=run_id).order_by("seq").values_list("type", flat=True))


def seqs_contiguous(run_id: str) -> bool:
    seqs = list(RunEvent.objects.filter(run_id=run_id).order_by("seq").values_list("seq", flat=True))
    return seqs == list(range(1, len(seqs) + 1))


def test_a_run_with_an_agent_node_completes_through_the_http_calls(agent_api, api_for, operator, drain):
    run_id = submit(api_for(operator), review_envelope())
    drain()
    run = Run.objects.get(pk=run_id)
    node = NodeRun.objects.get(run_id=run_id, capability_id=REVIEW_ID)
    # The worker let go of the run: running, no owner, no expiry, node dispatched.
    assert (run.status, run.lease_owner, run.lease_expires_at) == ("running", "", None)
    assert node.status == "dispatched" and node.attempts == 1
    assert types(run_id)[-1] == "node_dispatched"
    dispatched = RunEvent.objects.filter(run_id=run_id, type="node_dispatched").get()
    task = Task.objects.get(run_id=run_id)
    assert dispatched.payload == {"nodeId": node.node_id, "capabilityId": REVIEW_ID, "attempt": 1, "taskId": task.id}
    assert drain() == 0  # nothing for a worker to do while the task waits

    response = claim(agent_api)
    assert response.status_code == 200, response.content
    body = response.json()["task"]
    assert (body["taskId"], body["runId"], body["nodeId"], body["capabilityId"], body["attempt"]) == (
        task.id, run_id, node.node_id, REVIEW_ID, 1)
    assert body["leaseToken"] and body["leaseExpiresAt"].endswith("Z")
    bundle = body["bundle"]
    assert set(bundle["facets"]) == {"copyVariants"} and len(bundle["facets"]["copyVariants"]) == 3
    assert bundle["contract"]["required"] == ["qa_report"]
    assert bundle["idempotencyKey"] == f"{run_id}:{node.node_id}:1" and bundle["clarifications"] == []
    start = RunEvent.objects.filter(run_id=run_id, type="node_start", node_id=node.node_id).get()
    assert start.payload["agentId"] == "acme-review" and start.payload["taskId"] == task.id
    assert claim(agent_api).status_code == 204  # nothing else is open

    before = RunEvent.objects.filter(run_id=run_id).count()
    done = agent_api.post(f"/api/v1/flex/tasks/{task.id}/complete",
                          {"leaseToken": body["leaseToken"], "output": valid_review()}, format="json")
    assert done.status_code == 200, done.json()
    node.refresh_from_db()
    assert (node.status, node.commits, node.output) == ("completed", 1, valid_review())
    # One commit: node_complete and the next node's start together.
    assert types(run_id)[before:] == ["node_complete", "node_start"]
    drain()
    run.refresh_from_db()
    assert run.status == "completed", run.error
    assert run.output["qa_report"] == valid_review()["qa_report"]
    assert seqs_contiguous(run_id)
    assert Task.objects.get(pk=task.id).status == TaskStatus.COMPLETED
    # A second completion with the same lease: nothing is committed.
    again = agent_api.post(f"/api/v1/flex/tasks/{task.id}/complete",
                           {"leaseToken": body["leaseToken"], "output": valid_review()}, format="json")
    assert again.status_code == 409 and again.json()["code"] == "lease_lost"
    node.refresh_from_db()
    assert node.commits == 1


def _dispatched_task(api_for: Callable[[Any], Any], operator: Any, drain: Callable[[], int],
                     **constraints: Any) -> tuple[str, Task]:
    run_id = submit(api_for(operator), review_envelope(**constraints))
    drain()
    return run_id, Task.objects.get(run_id=run_id, status=TaskStatus.OPEN)


def test_invalid_output_is_422_counted_retried_then_escalated_to_a_person(agent_api, api_for, operator, drain):
    run_id, _ = _dispatched_task(api_for, operator, drain, maxRetries=1)
    for attempt in (1, 2):
        body = claim(agent_api).json()["task"]
        assert body["attempt"] == attempt
        response = agent_api.post(f"/api/v1/flex/tasks/{body['taskId']}/complete",
                                  {"leaseToken": body["leaseToken"], "output": invalid_review()}, format="json")
        assert response.status_code == 422
        assert response.json()["code"] == "validation_failed"
        assert response.json()["details"]["errors"]
    run = Run.objects.get(pk=run_id)
    node = NodeRun.objects.get(run_id=run_id, capability_id=REVIEW_ID)
    # maxRetries 1: two attempts, then a person reviews (the engine's escalation).
    assert (run.status, node.status, node.attempts, node.commits) == ("awaiting_hitl", "awaiting_hitl", 2, 0)
    assert types(run_id).count("validation_error") == 2
    assert types(run_id)[-1] == "hitl_request"
    request = RunEvent.objects.filter(run_id=run_id, type="hitl_request").get().payload
    assert request["kind"] == "approval" and request["contractSummary"]["validationErrors"]
    assert seqs_contiguous(run_id)


def test_fail_retryable_offers_again_and_permanent_fails_the_run(agent_api, api_for, operator, drain):
    run_id, _ = _dispatched_task(api_for, operator, drain)
    body = claim(agent_api).json()["task"]
    response = agent_api.post(f"/api/v1/flex/tasks/{body['taskId']}/fail",
                              {"leaseToken": body["leaseToken"], "retryable": True,
                               "error": {"code": "upstream_down", "message": "try later"}}, format="json")
    assert response.status_code == 200, response.json()
    drain()  # with a back-off the run is queued; the worker offers the task again
    second = claim(agent_api).json()["task"]
    assert second["attempt"] == 2 and second["taskId"] != body["taskId"]
    response = agent_api.post(f"/api/v1/flex/tasks/{second['taskId']}/fail",
                              {"leaseToken": second["leaseToken"], "retryable": False,
                               "error": {"code": "refused", "message": "no"}}, format="json")
    assert response.status_code == 200
    run = Run.objects.get(pk=run_id)
    assert run.status == "failed" and run.error["code"] == "refused"
    assert seqs_contiguous(run_id)


def test_clarify_waits_for_a_person_then_offers_the_task_again_with_the_answer(agent_api, api_for, operator, drain):
    run_id, _ = _dispatched_task(api_for, operator, drain)
    body = claim(agent_api).json()["task"]
    response = agent_api.post(f"/api/v1/flex/tasks/{body['taskId']}/clarify",
                              {"leaseToken": body["leaseToken"], "question": "Which market?",
                               "options": [{"id": "eu", "label": "Europe"}], "allowFreeForm": True}, format="json")
    assert response.status_code == 200, response.json()
    request_id = response.json()["requestId"]
    run = Run.objects.get(pk=run_id)
    assert run.status == "awaiting_hitl"
    request = RunEvent.objects.filter(run_id=run_id, type="hitl_request").get().payload
    assert request["kind"] == "clarify" and request["pendingNodeId"] == body["nodeId"]
    resumed = api_for(operator).post("/api/hitl/resume", {
        "runId": run_id, "requestId": request_id,
        "responses": [{"responseType": "freeform", "freeformText": "Benelux banks"}]}, format="json")
    assert resumed.status_code == 200, resumed.json()
    drain()
    again = claim(agent_api).json()["task"]
    assert again["attempt"] == 2
    assert [c["answer"] for c in again["bundle"]["clarifications"]] == ["Benelux banks"]
    done = agent_api.post(f"/api/v1/flex/tasks/{again['taskId']}/complete",
                          {"leaseToken": again["leaseToken"], "output": valid_review()}, format="json")
    assert done.status_code == 200
    drain()
    assert Run.objects.get(pk=run_id).status == "completed"
    assert seqs_contiguous(run_id)


def test_an_expired_lease_is_taken_back_and_offered_again_and_the_old_holder_gets_lease_lost(
        agent_api, api_for, operator, drain):
    run_id, _ = _dispatched_task(api_for, operator, drain)
    first = claim(agent_api).json()["task"]
    # Just past the lease, well within the agent's heartbeat window.
    later = Task.objects.get(pk=first["taskId"]).lease_expires_at + timedelta(seconds=1)
    swept = task_services.sweep_tasks(now=later)
    assert swept["agentsInactive"] == 0
    assert swept["expired"] == 1
    assert Task.objects.get(pk=first["taskId"]).status == TaskStatus.EXPIRED
    error = RunEvent.objects.filter(run_id=run_id, type="node_error").get().payload
    assert error["error"]["code"] == "lease_expired" and error["willRetry"] is True
    # The zombie's late calls commit nothing.
    for action, extra in (("complete", {"output": valid_review()}), ("heartbeat", {}),
                          ("fail", {"error": {"code": "x", "message": "y"}, "retryable": True})):
        response = agent_api.post(f"/api/v1/flex/tasks/{first['taskId']}/{action}",
                                  {"leaseToken": first["leaseToken"], **extra}, format="json")
        assert response.status_code == 409 and response.json()["code"] == "lease_lost", action
    second = claim(agent_api).json()["task"]
    assert second["attempt"] == 2
    done = agent_api.post(f"/api/v1/flex/tasks/{second['taskId']}/complete",
                          {"leaseToken": second["leaseToken"], "output": valid_review()}, format="json")
    assert done.status_code == 200
    drain()
    assert Run.objects.get(pk=run_id).status == "completed"
    assert NodeRun.objects.get(run_id=run_id, capability_id=REVIEW_ID).commits == 1
    assert seqs_contiguous(run_id)


def test_a_cancelled_run_makes_the_holders_calls_lease_lost(agent_api, api_for, operator, drain):
    run_id, _ = _dispatched_task(api_for, operator, drain)
    body = claim(agent_api).json()["task"]
    assert api_for(operator).post(f"/api/v1/flex/runs/{run_id}/cancel", {"reason": "stop"},
                                  format="json").status_code == 200
    response = agent_api.post(f"/api/v1/flex/tasks/{body['taskId']}/complete",
                              {"leaseToken": body["leaseToken"], "output": valid_review()}, format="json")
    assert response.status_code == 409 and response.json()["code"] == "lease_lost"
    assert NodeRun.objects.get(run_id=run_id, capability_id=REVIEW_ID).commits == 0


def test_a_wrong_lease_token_is_lease_lost(agent_api, api_for, operator, drain):
    _dispatched_task(api_for, operator, drain)
    body = claim(agent_api).json()["task"]
    response = agent_api.post(f"/api/v1/flex/tasks/{body['taskId']}/complete",
                              {"leaseToken": "not-the-token", "output": valid_review()}, format="json")
    assert response.status_code == 409 and response.json()["code"] == "lease_lost"
    ok = agent_api.post(f"/api/v1/flex/tasks/{body['taskId']}/heartbeat", {"leaseToken": body["leaseToken"]},
                        format="json")
    assert ok.status_code == 200 and ok.json()["leaseExpiresAt"].endswith("Z")


def test_max_concurrency_is_respected_per_agent(api_for, agent_user, operator, drain):
    api = api_for(agent_user)
    assert api.post("/api/v1/flex/agents/register", registration(max_concurrency=1), format="json").status_code == 200
    _dispatched_task(api_for, operator, drain)
    _dispatched_task(api_for, operator, drain)
    first = claim(api)
    assert first.status_code == 200
    assert claim(api).status_code == 204  # one held, maxConcurrency 1
    body = first.json()["task"]
    api.post(f"/api/v1/flex/tasks/{body['taskId']}/complete", {"leaseToken": body["leaseToken"],
                                                               "output": valid_review()}, format="json")
    assert claim(api).status_code == 200  # the slot is free again


def test_the_task_list_shows_the_callers_tasks_filtered(agent_api, api_for, operator, drain, make_user):
    run_id, task = _dispatched_task(api_for, operator, drain)
    listed = agent_api.get("/api/v1/flex/tasks?status=open")
    assert listed.status_code == 200
    assert [t["taskId"] for t in listed.json()["tasks"]] == [task.id]
    assert "leaseToken" not in listed.json()["tasks"][0]
    assert api_for(operator).get(f"/api/v1/flex/tasks?runId={run_id}").json()["tasks"][0]["taskId"] == task.id
    assert agent_api.get("/api/v1/flex/tasks?status=claimed").json()["tasks"] == []
    other = make_user("other-bot", "agent")
    assert api_for(other).get("/api/v1/flex/tasks").json()["tasks"] == []
    bad = agent_api.get("/api/v1/flex/tasks?status=bogus")
    assert bad.status_code == 422 and bad.json()["code"] == "validation_failed"


def test_a_completion_sent_twice_with_one_idempotency_key_commits_once_and_replays(agent_api, api_for, operator,
                                                                                   drain):
    run_id, _ = _dispatched_task(api_for, operator, drain, maxRetries=1)
    body = claim(agent_api).json()["task"]
    url = f"/api/v1/flex/tasks/{body['taskId']}/complete"
    # An invalid output is a counted attempt: with a key, the 422 is committed and replayed, not rolled back.
    refused = {"leaseToken": body["leaseToken"], "output": invalid_review()}
    first = agent_api.post(url, refused, format="json", HTTP_IDEMPOTENCY_KEY="done-1")
    again = agent_api.post(url, refused, format="json", HTTP_IDEMPOTENCY_KEY="done-1")
    assert first.status_code == again.status_code == 422 and first.json() == again.json()
    assert again["Idempotent-Replayed"] == "true"
    # One counted attempt, one re-offer (the replay did neither again).
    assert types(run_id).count("validation_error") == 1 and Task.objects.filter(run_id=run_id).count() == 2

    second = claim(agent_api).json()["task"]
    assert second["attempt"] == 2
    url = f"/api/v1/flex/tasks/{second['taskId']}/complete"
    done = {"leaseToken": second["leaseToken"], "output": valid_review()}
    first = agent_api.post(url, done, format="json", HTTP_IDEMPOTENCY_KEY="done-2")
    again = agent_api.post(url, done, format="json", HTTP_IDEMPOTENCY_KEY="done-2")
    assert first.status_code == again.status_code == 200 and first.json() == again.json()
    assert again["Idempotent-Replayed"] == "true"
    other = agent_api.post(url, {**done, "usage": {"model": "m", "promptTokens": 1, "completionTokens": 1}},
                           format="json", HTTP_IDEMPOTENCY_KEY="done-2")
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    node = NodeRun.objects.get(run_id=run_id, capability_id=REVIEW_ID)
    assert (node.status, node.commits) == ("completed", 1)
    drain()
    assert Run.objects.get(pk=run_id).status == "completed" and seqs_contiguous(run_id)
