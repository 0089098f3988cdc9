"""POST /api/v1/flex/runs/{runId}/policies/{policyId}/trigger: manual
policies (API.md, "Governance of human decisions"; docs/hitl.md)."""
from __future__ import annotations

from typing import Any

import pytest

from hitl.models import HitlRequest
from runs.models import AuditEntry, NodeRun, Run
from tests.conftest import load_envelope
from tests.hitl.helpers import event_types, events_of, submit

pytestmark = pytest.mark.django_db

MANUAL = [
    {"id": "stop-now", "trigger": {"kind": "manual"}, "action": {"type": "fail", "message": "Stopped by hand."}},
    {"id": "ask-legal", "trigger": {"kind": "manual"}, "action": {"type": "hitl", "rationale": "Legal wants a look"}},
    {"id": "ping", "trigger": {"kind": "manual"}, "action": {"type": "emit", "event": "pinged"}},
    {"id": "hold", "trigger": {"kind": "manual"}, "action": {"type": "pause", "reason": "held by hand"}},
]


def envelope(name: str = "linkedin-variants") -> dict[str, Any]:
    body = load_envelope(name)
    runtime = body.setdefault("policies", {}).setdefault("runtime", [])
    runtime.extend(MANUAL)
    return body


def trigger(api: Any, run_id: str, policy_id: str, body: Any = None) -> Any:
    return api.post(f"/api/v1/flex/runs/{run_id}/policies/{policy_id}/trigger", body or {}, format="json")


@pytest.fixture
def queued(api_for, client_user) -> str:
    return submit(api_for(client_user), envelope())


def test_a_fail_policy_triggered_on_an_active_run_is_applied_by_the_worker(api_for, client_user, queued, drain):
    response = trigger(api_for(client_user), queued, "stop-now", {"note": "wrong brief"})

    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["runId"], body["policyId"], body["state"], body["status"]) == (queued, "stop-now", "queued",
                                                                                "queued")
    assert body["streamUrl"] == f"/api/v1/flex/runs/{queued}/stream"
    audit = AuditEntry.objects.get(run_id=queued, action="policy_triggered_manually")
    assert audit.details["note"] == "wrong brief" and audit.actor.username == "clara"

    drain()

    run = Run.objects.get(pk=queued)
    assert run.status == "failed" and run.error["code"] == "policy_failed"
    assert run.error["message"] == "Stopped by hand." and run.manual_triggers == []
    triggered = events_of(queued, "policy_triggered")
    assert [(e.payload["policyId"], e.payload["trigger"]) for e in triggered] == [("stop-now", "manual")]


def test_a_hitl_policy_triggered_by_hand_asks_a_person(api_for, operator, queued, drain):
    assert trigger(api_for(operator), queued, "ask-legal").status_code == 202

    drain()

    run = Run.objects.get(pk=queued)
    assert run.status == "awaiting_hitl"
    request = HitlRequest.objects.get(run=run)
    assert (request.source, request.kind, request.operator_prompt) == ("ask-legal", "approval", "Legal wants a look")
    assert "triggered by hand" in request.question


def test_after_a_manual_hitl_is_approved_the_run_completes(api_for, operator, queued, drain):
    assert trigger(api_for(operator), queued, "ask-legal").status_code == 202
    drain()
    request = HitlRequest.objects.get(run_id=queued)

    answered = api_for(operator).post("/api/hitl/resume", {"runId": queued, "requestId": request.id, "responses": [
        {"responseType": "approval", "approved": True}]}, format="json")

    assert answered.status_code == 200, answered.content
    drain()
    run = Run.objects.get(pk=queued)
    assert run.status == "completed" and run.output["copyVariants"]
    assert set(NodeRun.objects.filter(run=run).values_list("status", flat=True)) == {"completed"}


def test_a_manual_pause_then_a_resume_completes_the_run(api_for, operator, queued, drain):
    assert trigger(api_for(operator), queued, "hold").status_code == 202
    drain()
    run = Run.objects.get(pk=queued)
    assert (run.status, run.pause_reason) == ("paused", "held by hand")

    resumed = api_for(operator).post("/api/v1/flex/run.resume", {"runId": queued,
                                                                 "expectedPlanVersion": run.plan_version},
                                     format="json")

    assert resumed.status_code == 202, resumed.content
    drain()
    assert Run.objects.get(pk=queued).status == "completed"


def test_a_manual_fail_leaves_no_node_running(api_for, operator, queued, drain):
    trigger(api_for(operator), queued, "stop-now")

    drain()

    statuses = set(NodeRun.objects.filter(run_id=queued).values_list("status", flat=True))
    assert "running" not in statuses and "failed" in statuses


def test_an_emit_policy_logs_and_the_run_goes_on(api_for, operator, queued, drain):
    assert trigger(api_for(operator), queued, "ping").status_code == 202

    drain()

    assert Run.objects.get(pk=queued).status == "completed"
    types = event_types(queued)
    assert types.count("policy_triggered") == 1 and "log" in types


def test_a_fail_policy_on_a_waiting_run_is_applied_at_once(api_for, operator, client_user, drain):
    run_id = submit(api_for(client_user), envelope("approval-required"))
    drain()
    assert Run.objects.get(pk=run_id).status == "awaiting_hitl"

    response = trigger(api_for(operator), run_id, "stop-now")

    assert response.status_code == 202
    assert (response.json()["state"], response.json()["status"]) == ("applied", "failed")
    assert event_types(run_id)[-3:] == ["policy_triggered", "hitl_resolved", "complete"]
    assert HitlRequest.objects.get(run_id=run_id).status == "removed"


def test_a_hitl_policy_on_a_waiting_run_is_a_409(api_for, operator, client_user, drain):
    run_id = submit(api_for(client_user), envelope("approval-required"))
    drain()

    response = trigger(api_for(operator), run_id, "ask-legal")

    assert response.status_code == 409
    assert response.json()["code"] == "invalid_run_state"
    assert response.json()["details"]["status"] == "awaiting_hitl"


def test_unknown_policy_is_404(api_for, operator, queued):
    response = trigger(api_for(operator), queued, "nope")

    assert response.status_code == 404
    assert response.json()["code"] == "policy_not_found"
    assert "stop-now" in response.json()["details"]["policyIds"]


def test_a_policy_that_is_not_manual_is_409(api_for, operator, client_user):
    run_id = submit(api_for(client_user), envelope("approval-required"))

    response = trigger(api_for(operator), run_id, "approve-copy")

    assert response.status_code == 409
    assert response.json()["code"] == "invalid_run_state"
    assert response.json()["details"]["triggerKind"] == "onNodeComplete"


def test_a_terminal_run_is_409(api_for, operator, queued, drain):
    drain()
    assert Run.objects.get(pk=queued).status == "completed"

    response = trigger(api_for(operator), queued, "stop-now")

    assert response.status_code == 409
    assert response.json()["code"] == "invalid_run_state"
    assert response.json()["details"]["status"] == "completed"


@pytest.mark.parametrize("body", [{"note": 3}, {"reason": "x"}, [1]])
def test_a_bad_body_is_422(api_for, operator, queued, body):
    response = trigger(api_for(operator), queued, "stop-now", body)

    assert response.status_code == 422
    assert Run.objects.get(pk=queued).manual_triggers == []


PERSONAS = {"anonymous": (401, "not_authenticated"), "owner": (202, None), "other_client": (404, "run_not_found"),
            "support": (403, "permission_denied"), "operator": (202, None)}
FIXTURE_OF = {"owner": "client_user", "other_client": "other_client", "support": "support", "operator": "operator"}


@pytest.mark.parametrize("persona", PERSONAS)
def test_access_matrix(request, api_for, queued, persona):
    user = None if persona == "anonymous" else request.getfixturevalue(FIXTURE_OF[persona])
    status, code = PERSONAS[persona]

    response = trigger(api_for(user), queued, "stop-now")

    assert response.status_code == status, response.content
    if code is not None:
        assert response.json()["code"] == code
        assert Run.objects.get(pk=queued).manual_triggers == []
    else:
        assert [t["policyId"] for t in Run.objects.get(pk=queued).manual_triggers] == ["stop-now"]
