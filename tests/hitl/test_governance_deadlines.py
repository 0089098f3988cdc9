"""Deadlines and escalation (API.md, "Governance of human decisions"),
applied by the workers' sweep, on a clock the tests control (time-machine):
each `onTimeout` type, the default (reject), escalation, exactly once, and
`constraints.deadlineSeconds` for whole runs."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import time_machine

from hitl.models import HitlRequest, HitlResponse
from runs import governance
from runs.models import AuditEntry, NodeRun, Run
from tests.conftest import load_envelope
from tests.hitl.helpers import APPROVE, event_types, events_of, pending_request, resume, submit

pytestmark = pytest.mark.django_db

START = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)


@pytest.fixture
def clock():
    with time_machine.travel(START, tick=False) as traveller:
        yield traveller


@pytest.fixture
def bob(make_user):
    return make_user("bob", "operator", email="bob@example.com")


def waiting(api_for: Any, owner: Any, drain: Any, **rules: Any) -> tuple[str, HitlRequest]:
    envelope = load_envelope("approval-required")
    envelope["policies"]["runtime"][0]["action"].update({"allowSelfApproval": False, **rules})
    run_id = submit(api_for(owner), envelope)
    drain()
    assert Run.objects.get(pk=run_id).status == "awaiting_hitl"
    return run_id, pending_request(run_id)


def system_audit(run_id: str, action: str) -> AuditEntry:
    entry = AuditEntry.objects.get(run_id=run_id, action=action)
    assert entry.actor is None and entry.actor_display == "system"
    return entry


def test_the_deadlines_are_stored_and_shown(api_for, client_user, operator, clock, drain):
    run_id, request = waiting(api_for, client_user, drain, timeoutSeconds=3600, escalateAfterSeconds=600,
                              onTimeout={"type": "approve"})

    assert request.due_at == START + timedelta(hours=1) and request.escalate_at == START + timedelta(minutes=10)
    shown = api_for(operator).get("/api/hitl/pending").json()["runs"][0]["pendingRequest"]
    assert (shown["dueAt"], shown["escalateAt"], shown["onTimeout"], shown["escalated"]) == (
        "2026-03-01T10:00:00.000Z", "2026-03-01T09:10:00.000Z", {"type": "approve"}, False)
    hitl_request = events_of(run_id, "hitl_request")[0].payload
    assert hitl_request["dueAt"] == "2026-03-01T10:00:00.000Z"


def test_nothing_happens_before_the_deadline(api_for, client_user, clock, drain):
    run_id, request = waiting(api_for, client_user, drain, timeoutSeconds=3600, onTimeout={"type": "approve"})
    clock.shift(timedelta(minutes=59))

    assert governance.sweep().timed_out == 0
    assert pending_request(run_id).id == request.id


def test_a_timeout_without_on_timeout_rejects(api_for, client_user, clock, drain):
    run_id, request = waiting(api_for, client_user, drain, timeoutSeconds=60)
    clock.shift(timedelta(seconds=61))

    assert governance.sweep().timed_out == 1

    run = Run.objects.get(pk=run_id)
    assert run.status == "failed" and run.error["code"] == "hitl_timed_out"
    resolved = events_of(run_id, "hitl_resolved")[0].payload
    assert (resolved["resolution"], resolved["appliedAction"]) == ("timed_out", {"type": "reject"})
    request.refresh_from_db()
    assert (request.status, request.resolution, request.applied_action) == ("resolved", "timed_out",
                                                                           {"type": "reject"})
    assert event_types(run_id)[-3:] == ["hitl_resolved", "plan_updated", "complete"]
    assert system_audit(run_id, "hitl_timed_out").details["resolution"] == "timed_out"


def test_on_timeout_approve_lets_the_run_complete(api_for, client_user, clock, drain):
    run_id, _ = waiting(api_for, client_user, drain, timeoutSeconds=60, onTimeout={"type": "approve"})
    clock.shift(timedelta(seconds=60))

    drain()  # the sweep runs in the worker's loop, then the worker runs the resumed run

    run = Run.objects.get(pk=run_id)
    assert run.status == "completed" and run.output["copyVariants"]
    assert events_of(run_id, "hitl_resolved")[0].payload["appliedAction"] == {"type": "approve"}
    system_audit(run_id, "hitl_timed_out")


def test_on_timeout_reject_follows_the_reject_action(api_for, client_user, clock, drain):
    run_id, _ = waiting(api_for, client_user, drain, timeoutSeconds=60, onTimeout={"type": "reject"},
                        rejectAction={"type": "pause", "reason": "nobody answered"})
    clock.shift(timedelta(seconds=60))

    drain()

    run = Run.objects.get(pk=run_id)
    assert run.status == "paused"
    triggered = events_of(run_id, "policy_triggered")[-1].payload
    assert (triggered["followUp"], triggered["resolution"], triggered["action"]["type"]) == (
        "rejectAction", "timed_out", "pause")


def test_on_timeout_fail_fails_the_run(api_for, client_user, clock, drain):
    run_id, _ = waiting(api_for, client_user, drain, timeoutSeconds=60, onTimeout={"type": "fail"},
                        rejectAction="continue")
    clock.shift(timedelta(seconds=61))

    governance.sweep()

    run = Run.objects.get(pk=run_id)
    assert run.status == "failed" and run.error["code"] == "hitl_timed_out"
    assert events_of(run_id, "complete")[0].payload["error"]["code"] == "hitl_timed_out"
    assert NodeRun.objects.get(run_id=run_id, node_id="output").status == "pending"


def test_on_timeout_cancel_cancels_the_run(api_for, client_user, clock, drain):
    run_id, request = waiting(api_for, client_user, drain, timeoutSeconds=60, onTimeout={"type": "cancel"})
    clock.shift(timedelta(seconds=61))

    governance.sweep()

    run = Run.objects.get(pk=run_id)
    assert run.status == "cancelled"
    assert event_types(run_id)[-2:] == ["hitl_resolved", "complete"]
    assert events_of(run_id, "complete")[0].payload == {"status": "cancelled", "reason": "hitl_timed_out",
                                                        "requestId": request.id}
    system_audit(run_id, "hitl_timed_out")


@pytest.mark.parametrize("option, status", [("approve", "completed"), ("reject", "failed")])
def test_on_timeout_option_answers_with_that_option(api_for, client_user, clock, drain, option, status):
    run_id, request = waiting(api_for, client_user, drain, timeoutSeconds=60,
                              onTimeout={"type": "option", "optionId": option})
    clock.shift(timedelta(seconds=61))

    drain()

    assert Run.objects.get(pk=run_id).status == status
    answer = HitlResponse.objects.get(request=request)
    assert (answer.response_type, answer.selected_option_id, answer.responder_display_name) == (
        "option", option, "system")
    assert [e.payload["response"]["selectedOptionId"] for e in events_of(run_id, "hitl_update")] == [option]


def test_a_request_answered_in_time_never_times_out(api_for, client_user, operator, clock, drain):
    run_id, request = waiting(api_for, client_user, drain, timeoutSeconds=60)
    assert resume(api_for(operator), run_id, request.id, [APPROVE]).status_code == 200
    clock.shift(timedelta(hours=1))

    drain()

    assert Run.objects.get(pk=run_id).status == "completed"
    assert not AuditEntry.objects.filter(run_id=run_id, action="hitl_timed_out").exists()


def test_a_timeout_fires_once_however_many_sweeps(api_for, client_user, clock, drain):
    run_id, _ = waiting(api_for, client_user, drain, timeoutSeconds=60, onTimeout={"type": "fail"})
    clock.shift(timedelta(seconds=61))

    assert [governance.sweep().timed_out for _ in range(3)] == [1, 0, 0]
    assert len(events_of(run_id, "hitl_resolved")) == 1


def test_escalation_raises_urgency_adds_assignees_once(api_for, client_user, operator, bob, clock, drain):
    run_id, request = waiting(api_for, client_user, drain, assignees={"users": ["olivia"]}, timeoutSeconds=3600,
                              escalateAfterSeconds=600, escalateTo={"users": ["bob"]})
    refused = resume(api_for(bob), run_id, request.id, [APPROVE])
    assert refused.status_code == 403 and refused.json()["code"] == "not_assignee"
    clock.shift(timedelta(minutes=10))

    assert [governance.sweep().escalated for _ in range(2)] == [1, 0]

    request.refresh_from_db()
    assert (request.urgency, request.escalated, request.assignees) == (
        "high", True, {"users": ["olivia", "bob"]})
    escalated = events_of(run_id, "hitl_escalated")
    assert len(escalated) == 1
    assert escalated[0].payload == {"requestId": request.id, "urgency": "high",
                                    "assignees": {"users": ["olivia", "bob"]}, "escalateTo": {"users": ["bob"]},
                                    "escalatedAt": "2026-03-01T09:10:00.000Z"}
    system_audit(run_id, "hitl_escalated")
    inbox = api_for(bob).get("/api/hitl/pending?assignedTo=me").json()["runs"]
    assert [e["pendingRequest"]["urgency"] for e in inbox] == ["high"]
    # The escalation target may answer now.
    assert resume(api_for(bob), run_id, request.id, [APPROVE]).status_code == 200


def test_escalation_then_timeout(api_for, client_user, clock, drain):
    run_id, _ = waiting(api_for, client_user, drain, timeoutSeconds=120, escalateAfterSeconds=60,
                        escalateTo={"users": ["clara"]}, onTimeout={"type": "cancel"})
    clock.shift(timedelta(seconds=200))

    result = governance.sweep()

    assert (result.escalated, result.timed_out) == (1, 1)
    assert event_types(run_id)[-3:] == ["hitl_escalated", "hitl_resolved", "complete"]


# --- constraints.deadlineSeconds -------------------------------------------------------

def with_deadline(name: str, seconds: int) -> dict[str, Any]:
    envelope = load_envelope(name)
    envelope.setdefault("constraints", {})["deadlineSeconds"] = seconds
    return envelope


def test_a_waiting_run_past_its_deadline_fails(api_for, client_user, clock, drain):
    run_id = submit(api_for(client_user), with_deadline("approval-required", 300))
    drain()
    request = pending_request(run_id)
    clock.shift(timedelta(seconds=299))
    assert governance.sweep().deadlines == 0
    clock.shift(timedelta(seconds=2))

    assert [governance.sweep().deadlines for _ in range(2)] == [1, 0]

    run = Run.objects.get(pk=run_id)
    assert run.status == "failed"
    assert run.error == {"code": "deadline_exceeded", "deadlineSeconds": 300,
                         "message": "The run did not finish within its deadline (300 seconds)."}
    assert event_types(run_id)[-2:] == ["hitl_resolved", "complete"]
    assert events_of(run_id, "hitl_resolved")[0].payload["resolution"] == "removed"
    request.refresh_from_db()
    assert request.status == "removed"
    system_audit(run_id, "deadline_exceeded")


def test_a_queued_run_past_its_deadline_fails_and_is_never_run(api_for, client_user, clock, drain):
    run_id = submit(api_for(client_user), with_deadline("linkedin-variants", 60))
    clock.shift(timedelta(seconds=61))

    drain()

    run = Run.objects.get(pk=run_id)
    assert run.status == "failed" and run.error["code"] == "deadline_exceeded"
    assert event_types(run_id) == ["complete"]


def test_a_run_that_finishes_in_time_is_left_alone(api_for, client_user, clock, drain):
    run_id = submit(api_for(client_user), with_deadline("linkedin-variants", 60))
    drain()
    clock.shift(timedelta(hours=2))

    assert governance.sweep().deadlines == 0
    assert Run.objects.get(pk=run_id).status == "completed"
