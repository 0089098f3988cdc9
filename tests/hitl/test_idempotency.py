"""Idempotency-Key on the state-changing POSTs (API.md, Governance: Idempotency)."""
from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from flexagents.idempotency import prune_idempotency_keys
from flexagents.models import IdempotencyKey
from runs.models import AuditEntry, Run
from tests.conftest import load_envelope
from tests.hitl.helpers import APPROVE, events_of, pending_request, submit

pytestmark = pytest.mark.django_db
NOTE = {"responseType": "freeform", "freeformText": "Looks right"}


@pytest.fixture
def awaiting(api_for, client_user, drain):
    run_id = submit(api_for(client_user), load_envelope("approval-required"))
    drain()
    return run_id


def respond(api, run_id, request_id, responses, key=None, **extra):
    headers = {} if key is None else {"HTTP_IDEMPOTENCY_KEY": key}
    return api.post("/api/hitl/respond", {"runId": run_id, "requestId": request_id, "responses": responses, **extra},
                    format="json", **headers)


def test_the_same_answer_twice_with_one_key_has_one_effect(api_for, operator, awaiting):
    request = pending_request(awaiting)
    api = api_for(operator)

    first = respond(api, awaiting, request.id, [NOTE], key="answer-1")
    second = respond(api, awaiting, request.id, [NOTE], key="answer-1")

    assert first.status_code == 200, first.content
    assert second.status_code == first.status_code and second.json() == first.json()
    assert second["Idempotent-Replayed"] == "true" and not first.has_header("Idempotent-Replayed")
    assert len(events_of(awaiting, "hitl_update")) == 1
    assert AuditEntry.objects.filter(run_id=awaiting, action="hitl_responded").count() == 1


def test_without_a_key_the_second_answer_is_refused_as_stale(api_for, operator, awaiting):
    request = pending_request(awaiting)
    api = api_for(operator)
    respond(api, awaiting, request.id, [NOTE])
    assert respond(api, awaiting, request.id, [NOTE]).status_code == 409


def test_a_different_body_with_the_key_is_422(api_for, operator, awaiting):
    request = pending_request(awaiting)
    api = api_for(operator)
    assert respond(api, awaiting, request.id, [NOTE], key="k").status_code == 200

    other = respond(api, awaiting, request.id, [{"responseType": "freeform", "freeformText": "No"}], key="k")

    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    assert len(events_of(awaiting, "hitl_update")) == 1


def test_the_same_key_on_another_endpoint_is_422(api_for, operator, awaiting):
    request = pending_request(awaiting)
    api = api_for(operator)
    assert respond(api, awaiting, request.id, [NOTE], key="k").status_code == 200
    cancel = api.post(f"/api/v1/flex/runs/{awaiting}/cancel", {}, format="json", HTTP_IDEMPOTENCY_KEY="k")
    assert cancel.status_code == 422 and cancel.json()["code"] == "idempotency_key_reused"
    assert Run.objects.get(pk=awaiting).status == "awaiting_hitl"


def test_keys_are_per_user(api_for, operator, admin_user, awaiting):
    request = pending_request(awaiting)
    first = respond(api_for(operator), awaiting, request.id, [NOTE], key="shared")
    other_user = respond(api_for(admin_user), awaiting, request.id, [NOTE], key="shared",
                         latestResponseId=first.json()["latestResponseId"])
    assert other_user.status_code == 200 and not other_user.has_header("Idempotent-Replayed")
    assert len(events_of(awaiting, "hitl_update")) == 2


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "caf\u00e9"])
def test_an_invalid_key_is_422_and_changes_nothing(api_for, operator, awaiting, key):
    request = pending_request(awaiting)
    response = respond(api_for(operator), awaiting, request.id, [NOTE], key=key)
    assert response.status_code == 422 and response.json()["code"] == "idempotency_key_invalid"
    assert events_of(awaiting, "hitl_update") == []


def test_errors_are_not_stored_so_the_key_can_be_retried(api_for, operator, awaiting):
    request = pending_request(awaiting)
    api = api_for(operator)
    bad = respond(api, awaiting, request.id, [NOTE], key="retry-me", latestResponseId="resp_nope")
    assert bad.status_code == 409
    assert not IdempotencyKey.objects.filter(key="retry-me").exists()
    good = respond(api, awaiting, request.id, [NOTE], key="retry-me")
    assert good.status_code == 200 and not good.has_header("Idempotent-Replayed")


def test_resume_and_create_and_cancel_replay(api_for, operator, client_user, awaiting):
    request = pending_request(awaiting)
    api = api_for(operator)
    body = {"runId": awaiting, "requestId": request.id, "responses": [APPROVE]}
    first = api.post("/api/hitl/resume", body, format="json", HTTP_IDEMPOTENCY_KEY="resume-1")
    again = api.post("/api/hitl/resume", body, format="json", HTTP_IDEMPOTENCY_KEY="resume-1")
    assert first.status_code == 200 and again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    assert len(events_of(awaiting, "hitl_resolved")) == 1

    owner = api_for(client_user)
    envelope = load_envelope("approval-required")
    created = owner.post("/api/v1/flex/runs", envelope, format="json", HTTP_IDEMPOTENCY_KEY="create-1")
    replayed = owner.post("/api/v1/flex/runs", envelope, format="json", HTTP_IDEMPOTENCY_KEY="create-1")
    assert created.status_code == replayed.status_code == 202 and created.json() == replayed.json()
    assert Run.objects.filter(created_by=client_user).count() == 2  # the fixture's run and this one

    run_id = created.json()["runId"]
    cancelled = owner.post(f"/api/v1/flex/runs/{run_id}/cancel", {"reason": "x"}, format="json",
                           HTTP_IDEMPOTENCY_KEY="cancel-1")
    cancel_again = owner.post(f"/api/v1/flex/runs/{run_id}/cancel", {"reason": "x"}, format="json",
                              HTTP_IDEMPOTENCY_KEY="cancel-1")
    assert cancelled.status_code == 200 and cancel_again.status_code == 200  # not 409 run_already_completed
    assert cancel_again.json() == cancelled.json()
    assert len(events_of(run_id, "complete")) == 1


def test_keys_are_pruned_after_24_hours(api_for, operator, awaiting):
    request = pending_request(awaiting)
    api = api_for(operator)
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        first = respond(api, awaiting, request.id, [NOTE], key="old")
    assert first.status_code == 200
    with time_machine.travel(start + timedelta(hours=23), tick=False):
        assert prune_idempotency_keys() == 0
        assert respond(api, awaiting, request.id, [NOTE], key="old")["Idempotent-Replayed"] == "true"
    with time_machine.travel(start + timedelta(hours=24, seconds=1), tick=False):
        assert prune_idempotency_keys() == 1
    assert not IdempotencyKey.objects.filter(key="old").exists()
    # The key is free again: a new request executes (and is refused as stale: a second answer).
    again = respond(api, awaiting, request.id, [NOTE], key="old")
    assert again.status_code == 409 and again.json()["code"] == "stale_hitl_state"


def test_a_streamed_resume_is_replayed_as_its_json_form(api_for, operator, awaiting):
    api = api_for(operator)
    body = {"runId": awaiting, "expectedPlanVersion": 1, "responses": [APPROVE]}
    streamed = api.post("/api/v1/flex/run.resume", body, format="json", HTTP_ACCEPT="text/event-stream",
                        HTTP_IDEMPOTENCY_KEY="stream-resume")
    assert streamed.status_code == 200 and streamed["Content-Type"].startswith("text/event-stream")
    again = api.post("/api/v1/flex/run.resume", body, format="json", HTTP_ACCEPT="text/event-stream",
                     HTTP_IDEMPOTENCY_KEY="stream-resume")
    assert again.status_code == 202 and again["Idempotent-Replayed"] == "true"
    replay = again.json()
    assert replay["runId"] == awaiting and replay["streamUrl"].endswith(f"/runs/{awaiting}/stream")
    assert replay["lastEventId"].startswith(f"{awaiting}:")
    assert len(events_of(awaiting, "hitl_resolved")) == 1


def test_a_superuser_key_is_not_an_operator_key_and_anonymous_requests_are_refused_first(api_for, awaiting):
    request = pending_request(awaiting)
    anonymous = respond(api_for(None), awaiting, request.id, [NOTE], key="k")
    assert anonymous.status_code == 401 and not IdempotencyKey.objects.exists()
