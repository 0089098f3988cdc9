"""POST /api/v1/flex/run.resume (the same service as /api/hitl/resume)."""
from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.db import connection

from hitl.models import HitlRequest
from runs.models import AuditEntry, PlanVersion, Run, RunEvent
from runs.transitions import status_writer
from tests.conftest import load_envelope
from tests.hitl.helpers import APPROVE, events_of, submit
from tests.sse import streamed, types

URL = "/api/v1/flex/run.resume"


def paused_envelope():
    body = load_envelope("linkedin-variants")
    body["policies"]["runtime"] = [{"id": "hold", "trigger": {"kind": "onNodeComplete",
                                                              "selector": {"nodeId": "strategist"}},
                                    "action": {"type": "pause", "reason": "wait for legal"}}]
    return body


@pytest.fixture
def paused(api_for, client_user, drain):
    run_id = submit(api_for(client_user), paused_envelope())
    drain()
    assert Run.objects.get(pk=run_id).status == "paused"
    return run_id


@pytest.fixture
def awaiting(api_for, client_user, drain):
    run_id = submit(api_for(client_user), load_envelope("approval-required"))
    drain()
    return run_id


@pytest.mark.django_db
def test_it_resumes_a_paused_run(api_for, operator, paused, drain):
    response = api_for(operator).post(URL, {"runId": paused, "expectedPlanVersion": 1, "note": "legal ok",
                                            "operator": {"displayName": "Legal desk"}}, format="json")

    assert response.status_code == 202, response.content
    body = response.json()
    last = RunEvent.objects.filter(run_id=paused).order_by("-seq").first()
    assert body == {"runId": paused, "status": "queued", "planVersion": 2,
                    "streamUrl": f"http://testserver/api/v1/flex/runs/{paused}/stream",
                    "lastEventId": f"{paused}:{last.seq}"}
    assert last.type == "plan_updated" and last.payload["trigger"]["kind"] == "manual"
    assert PlanVersion.objects.get(run_id=paused, version=2).reason == "resume"
    entry = AuditEntry.objects.get(run_id=paused, action="run_resumed")
    assert entry.actor == operator and entry.details["operator"] == {"displayName": "Legal desk"}
    drain()
    assert Run.objects.get(pk=paused).status == "completed"


@pytest.mark.django_db
def test_it_resolves_the_pending_request_of_a_run_awaiting_a_person(api_for, operator, awaiting, drain):
    response = api_for(operator).post(URL, {"runId": awaiting, "expectedPlanVersion": 1, "responses": [APPROVE]},
                                      format="json")

    assert response.status_code == 202
    assert HitlRequest.objects.get(run_id=awaiting).status == "resolved"
    drain()
    assert Run.objects.get(pk=awaiting).status == "completed"


@pytest.mark.django_db
def test_a_run_awaiting_a_person_needs_a_resolving_response(api_for, operator, awaiting):
    response = api_for(operator).post(URL, {"runId": awaiting, "expectedPlanVersion": 1}, format="json")

    assert response.status_code == 422 and response.json()["code"] == "hitl_response_required"
    assert Run.objects.get(pk=awaiting).plan_version == 1


@pytest.mark.django_db
def test_a_stale_plan_version_is_409(api_for, operator, paused):
    api = api_for(operator)
    assert api.post(URL, {"runId": paused, "expectedPlanVersion": 1}, format="json").status_code == 202
    with status_writer():  # set up: paused again, at version 2
        Run.objects.filter(pk=paused).update(status="paused")

    response = api.post(URL, {"runId": paused, "expectedPlanVersion": 1}, format="json")

    assert response.status_code == 409
    assert response.json()["code"] == "stale_plan_version"
    assert response.json()["details"] == {"currentPlanVersion": 2, "expectedPlanVersion": 2, "receivedPlanVersion": 1}


@pytest.mark.django_db
def test_a_completed_run_is_409_run_already_completed(api_for, operator, client_user, drain):
    run_id = submit(api_for(client_user), load_envelope("linkedin-variants"))
    drain()

    response = api_for(operator).post(URL, {"runId": run_id, "expectedPlanVersion": 1}, format="json")

    assert response.status_code == 409 and response.json()["code"] == "run_already_completed"
    assert response.json()["details"]["status"] == "completed"


@pytest.mark.django_db
def test_a_running_run_is_409_invalid_run_state(api_for, operator, paused):
    with status_writer():  # set up
        Run.objects.filter(pk=paused).update(status="running")

    response = api_for(operator).post(URL, {"runId": paused, "expectedPlanVersion": 1}, format="json")

    assert response.status_code == 409 and response.json()["code"] == "invalid_run_state"
    assert response.json()["details"]["status"] == "running"


@pytest.mark.django_db
def test_a_run_without_a_snapshot_is_409_missing_snapshot(api_for, operator, client_user):
    run = Run.objects.create(objective="never planned", envelope=load_envelope("linkedin-variants"),
                             created_by=client_user, status="paused")

    response = api_for(operator).post(URL, {"runId": run.id, "expectedPlanVersion": 0}, format="json")

    assert response.status_code == 409 and response.json()["code"] == "missing_snapshot"


@pytest.mark.django_db
def test_support_gets_403_and_strangers_404(api_for, support, other_client, paused):
    body = {"runId": paused, "expectedPlanVersion": 1}

    assert api_for(support).post(URL, body, format="json").status_code == 403
    assert api_for(other_client).post(URL, body, format="json").status_code == 404
    assert Run.objects.get(pk=paused).status == "paused"


@pytest.mark.django_db
@pytest.mark.parametrize("body", [{"runId": "x"}, {"expectedPlanVersion": 1}, {"runId": "x", "expectedPlanVersion": 1,
                                                                               "surprise": 1},
                                  {"runId": 7, "expectedPlanVersion": 1}, {"runId": "x", "expectedPlanVersion": "1"}])
def test_a_body_without_its_required_fields_is_422(api_for, operator, body):
    response = api_for(operator).post(URL, body, format="json")

    assert response.status_code == 422 and response.json()["code"] == "validation_failed"


@pytest.mark.django_db(transaction=True)
def test_with_accept_event_stream_it_streams_the_resumed_execution(api_for, operator, awaiting, drain):
    before = Run.objects.get(pk=awaiting).last_seq
    response = api_for(operator).post(URL, {"runId": awaiting, "expectedPlanVersion": 1, "responses": [APPROVE]},
                                      format="json", HTTP_ACCEPT="text/event-stream")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/event-stream")
    drain()

    frames = streamed(response)

    assert types(frames)[:3] == ["hitl_update", "hitl_resolved", "plan_updated"]
    assert types(frames)[-1] == "complete" and frames[0]["data"]["seq"] == before + 1
    assert frames[2]["data"]["payload"]["reason"] == "resume"


@pytest.mark.django_db(transaction=True)
def test_of_twenty_concurrent_resumes_with_one_version_exactly_one_is_accepted(api_for, operator, paused, drain):
    api_for(operator)
    barrier = threading.Barrier(20)
    codes = [None] * 20

    def call(i):
        try:
            barrier.wait(timeout=30)
            codes[i] = api_for(operator).post(URL, {"runId": paused, "expectedPlanVersion": 1}, format="json")
        finally:
            connection.close()

    threads = [threading.Thread(target=call, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    assert Counter(r.status_code for r in codes) == {202: 1, 409: 19}
    assert {r.json()["code"] for r in codes if r.status_code == 409} <= {"stale_plan_version", "invalid_run_state"}
    assert len(events_of(paused, "plan_updated")) == 1
    assert PlanVersion.objects.filter(run_id=paused).count() == 2
    drain()
    assert Run.objects.get(pk=paused).status == "completed"
