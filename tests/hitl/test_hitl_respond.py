"""POST /api/hitl/respond: append without resuming."""
from __future__ import annotations

import pytest

from hitl.models import HitlResponse
from runs.models import AuditEntry, Run
from tests.conftest import load_envelope
from tests.hitl.helpers import event_types, events_of, pending_request, submit

pytestmark = pytest.mark.django_db
NOTE = {"responseType": "freeform", "freeformText": "Second opinion: fine by me"}


@pytest.fixture
def awaiting(api_for, client_user, drain):
    run_id = submit(api_for(client_user), load_envelope("approval-required"))
    drain()
    return run_id


def respond(api, run_id, request_id, responses, **extra):
    return api.post("/api/hitl/respond", {"runId": run_id, "requestId": request_id, "responses": responses, **extra},
                    format="json")


def test_it_appends_responses_without_resuming(api_for, operator, awaiting):
    request = pending_request(awaiting)

    response = respond(api_for(operator), awaiting, request.id, [NOTE, {"responseType": "approval"}])

    assert response.status_code == 200, response.content
    body = response.json()
    ids = list(HitlResponse.objects.filter(request=request).values_list("response_id", flat=True))
    assert body["runId"] == awaiting and body["requestId"] == request.id
    assert body["latestResponseId"] == ids[-1] and [r["responseId"] for r in body["responses"]] == ids
    assert Run.objects.get(pk=awaiting).status == "awaiting_hitl"
    assert pending_request(awaiting).id == request.id
    updates = events_of(awaiting, "hitl_update")
    assert [u.payload["responseCount"] for u in updates] == [1, 2]
    assert updates[0].payload["response"]["freeformText"] == NOTE["freeformText"]
    assert event_types(awaiting)[-1] == "hitl_update"
    assert AuditEntry.objects.filter(run_id=awaiting, action="hitl_responded", actor=operator).count() == 1


def test_a_second_respond_must_acknowledge_the_first(api_for, operator, awaiting):
    request = pending_request(awaiting)
    latest = respond(api_for(operator), awaiting, request.id, [NOTE]).json()["latestResponseId"]

    stale = respond(api_for(operator), awaiting, request.id, [NOTE])
    fresh = respond(api_for(operator), awaiting, request.id, [NOTE], latestResponseId=latest)

    assert stale.status_code == 409 and stale.json()["code"] == "stale_hitl_state"
    assert stale.json()["details"]["latestResponseId"] == latest
    assert fresh.status_code == 200 and len(fresh.json()["responses"]) == 2


def test_support_may_not_respond(api_for, support, awaiting):
    response = respond(api_for(support), awaiting, pending_request(awaiting).id, [NOTE])

    assert response.status_code == 403 and response.json()["code"] == "permission_denied"
    assert not HitlResponse.objects.exists()


def test_an_empty_list_of_responses_is_422(api_for, operator, awaiting):
    response = respond(api_for(operator), awaiting, pending_request(awaiting).id, [])

    assert response.status_code == 422 and response.json()["code"] == "validation_failed"


@pytest.mark.parametrize("body", [
    {"requestId": "x", "responses": []},
    {"runId": "run_x", "responses": []},
    {"runId": "run_x", "requestId": "x", "responses": [], "unexpected": True},
])
def test_a_body_without_its_required_fields_is_422(api_for, operator, body):
    response = api_for(operator).post("/api/hitl/respond", body, format="json")

    assert response.status_code == 422 and response.json()["code"] == "validation_failed"


def test_unauthenticated_calls_are_401(api_for):
    response = api_for(None).post("/api/hitl/respond", {}, format="json")

    assert response.status_code == 401
