"""POST /api/hitl/remove: the request is removed and the run cancelled."""
from __future__ import annotations

import pytest

from hitl.models import HitlRequest
from runs.models import AuditEntry, Run
from tests.conftest import load_envelope
from tests.hitl.helpers import event_types, events_of, pending_request, submit

pytestmark = pytest.mark.django_db


@pytest.fixture
def awaiting(api_for, client_user, drain):
    run_id = submit(api_for(client_user), load_envelope("approval-required"))
    drain()
    return run_id


def test_it_removes_the_request_and_cancels_the_run(api_for, operator, awaiting, drain):
    request = pending_request(awaiting)

    response = api_for(operator).post("/api/hitl/remove", {"runId": awaiting, "requestId": request.id,
                                                           "reason": "duplicate brief", "note": "see thread 7"},
                                      format="json")

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "cancelled"
    request.refresh_from_db()
    assert (request.status, request.resolution) == ("removed", "removed")
    run = Run.objects.get(pk=awaiting)
    assert run.status == "cancelled" and run.completed_at is not None
    assert event_types(awaiting)[-2:] == ["hitl_resolved", "complete"]
    assert events_of(awaiting, "hitl_resolved")[0].payload["resolution"] == "removed"
    assert events_of(awaiting, "complete")[0].payload["status"] == "cancelled"
    entry = AuditEntry.objects.get(run=run, action="hitl_removed")
    assert entry.actor == operator and entry.details == {"requestId": request.id, "reason": "duplicate brief",
                                                         "note": "see thread 7"}
    assert drain() == 0


def test_it_finds_the_pending_request_of_a_thread(api_for, operator, awaiting):
    response = api_for(operator).post("/api/hitl/remove", {"threadId": "thread-demo-2", "reason": "no longer needed"},
                                      format="json")

    assert response.status_code == 200 and response.json()["runId"] == awaiting
    assert HitlRequest.objects.get(run_id=awaiting).status == "removed"


def test_removing_twice_is_409(api_for, operator, awaiting):
    api = api_for(operator)
    request = pending_request(awaiting)
    body = {"runId": awaiting, "requestId": request.id, "reason": "x"}
    assert api.post("/api/hitl/remove", body, format="json").status_code == 200

    again = api.post("/api/hitl/remove", body, format="json")

    assert again.status_code == 409 and again.json()["code"] == "hitl_request_not_pending"
    assert len(events_of(awaiting, "complete")) == 1


def test_support_may_not_remove(api_for, support, awaiting):
    response = api_for(support).post("/api/hitl/remove", {"runId": awaiting, "reason": "x"}, format="json")

    assert response.status_code == 403
    assert Run.objects.get(pk=awaiting).status == "awaiting_hitl"


def test_a_reason_is_required(api_for, operator, awaiting):
    response = api_for(operator).post("/api/hitl/remove", {"runId": awaiting}, format="json")

    assert response.status_code == 422 and response.json()["details"]["errors"][0]["path"] == "/reason"


def test_a_reason_must_be_a_string(api_for, operator, awaiting):
    response = api_for(operator).post("/api/hitl/remove", {"runId": awaiting, "reason": 5}, format="json")

    assert response.status_code == 422 and response.json()["details"]["errors"][0]["path"] == "/reason"
    assert Run.objects.get(pk=awaiting).status == "awaiting_hitl"
