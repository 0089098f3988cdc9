"""What an answer does next (`approveAction` / `rejectAction`), through
POST /api/hitl/resume: each applied follow-up emits `policy_triggered`
(seed 8.5 AC1), and every status change is one the transition table allows."""
from __future__ import annotations

from typing import Any

import pytest

from hitl.models import HitlRequest
from runs.models import RUN_TRANSITIONS, Run, RunStatus
from tests.conftest import load_envelope
from tests.hitl.helpers import APPROVE, REJECT, event_types, events_of, pending_request, resume, submit

pytestmark = pytest.mark.django_db


def awaiting(api_for: Any, client_user: Any, drain: Any, **follow_ups: Any) -> str:
    body = load_envelope("approval-required")
    body["policies"]["runtime"][0]["action"].update(follow_ups)
    run_id = submit(api_for(client_user), body)
    drain()
    assert Run.objects.get(pk=run_id).status == "awaiting_hitl"
    return run_id


@pytest.fixture
def status_changes(monkeypatch: Any) -> list[tuple[str, str]]:
    """Every status the run table is written with, as (from, to), read around
    each write of the run's row (the whole history of a run's status)."""
    from runs import transitions

    seen: list[tuple[str, str]] = []

    def watch(name: str) -> None:
        # The run row is written by `_bump_run`, or on PostgreSQL's hot path
        # by the one statement of `_step_postgresql`.
        original = getattr(transitions, name)

        def watched(*args: Any, run_id: str, **kwargs: Any) -> Any:
            before = Run.objects.filter(pk=run_id).values_list("status", flat=True).first()
            result = original(*args, run_id=run_id, **kwargs)
            after = Run.objects.filter(pk=run_id).values_list("status", flat=True).first()
            if result is not None and before != after:
                seen.append((before, after))
            return result

        monkeypatch.setattr(transitions, name, watched)

    watch("_bump_run")
    watch("_step_postgresql")
    return seen


def triggered_after_resume(run_id: str) -> list[dict[str, Any]]:
    return [e.payload for e in events_of(run_id, "policy_triggered") if e.payload.get("requestId")]


def test_an_approve_action_pause_goes_through_running_to_paused(api_for, client_user, operator, drain,
                                                                 status_changes):
    run_id = awaiting(api_for, client_user, drain, approveAction={"type": "pause", "reason": "legal hold"})
    request = pending_request(run_id)

    response = resume(api_for(operator), run_id, request.id, [APPROVE])

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "queued"  # never awaiting_hitl -> paused
    drain()
    run = Run.objects.get(pk=run_id)
    assert (run.status, run.pause_reason) == ("paused", "legal hold")
    assert status_changes[-3:] == [("awaiting_hitl", "queued"), ("queued", "running"), ("running", "paused")]
    assert all(to in RUN_TRANSITIONS[frm] for frm, to in status_changes), status_changes
    # The policy_triggered of the pause is written when the run really pauses,
    # so a stream that ends on it never ends before the run is paused.
    types = event_types(run_id)
    assert types[types.index("hitl_resolved"):] == ["hitl_resolved", "plan_updated", "policy_triggered"]
    assert triggered_after_resume(run_id) == [{
        "policyId": "approve-copy", "trigger": "onNodeComplete", "nodeId": "copywriter",
        "action": {"type": "pause", "reason": "legal hold"}, "requestId": request.id, "resolution": "approved",
        "followUp": "approveAction"}]

    # And it resumes from there to the end.
    resumed = api_for(operator).post("/api/v1/flex/run.resume", {"runId": run_id, "expectedPlanVersion": 2},
                                     format="json")
    assert resumed.status_code == 202, resumed.content
    drain()
    assert Run.objects.get(pk=run_id).status == "completed"
    assert all(to in RUN_TRANSITIONS[frm] for frm, to in status_changes), status_changes


@pytest.mark.parametrize("follow_ups, answer, action, follow_up, final", [
    # replan: the copywriter's capability is excluded; the alternative's copy needs no approval
    ({"approveAction": "replan"}, APPROVE, {"type": "replan"}, "approveAction", "completed"),
    ({"approveAction": {"type": "fail", "message": "stop here"}}, APPROVE, {"type": "fail", "message": "stop here"},
     "approveAction", "failed"),
    ({"rejectAction": "continue"}, REJECT, {"type": "continue"}, "rejectAction", "completed"),
])
def test_a_resume_emits_policy_triggered_for_the_follow_up_it_applies(api_for, client_user, operator, drain,
                                                                      follow_ups, answer, action, follow_up, final):
    run_id = awaiting(api_for, client_user, drain, **follow_ups)
    request = pending_request(run_id)

    response = resume(api_for(operator), run_id, request.id, [answer])

    assert response.status_code == 200, response.content
    assert triggered_after_resume(run_id) == [{
        "policyId": "approve-copy", "trigger": "onNodeComplete", "nodeId": "copywriter", "action": action,
        "requestId": request.id, "resolution": "approved" if answer is APPROVE else "rejected",
        "followUp": follow_up}]
    # It is in the resume's own events, after the new plan version.
    types = event_types(run_id)
    assert types[types.index("hitl_resolved"):][:3] == ["hitl_resolved", "plan_updated", "policy_triggered"]
    # And the frames of the events API carry it.
    frames = api_for(client_user).get(f"/api/v1/flex/runs/{run_id}/events").json()["events"]
    assert [f["payload"]["followUp"] for f in frames if f["type"] == "policy_triggered" and
            "followUp" in f["payload"]] == [follow_up]
    drain()
    assert Run.objects.get(pk=run_id).status == final


def test_the_default_follow_up_emits_no_policy_triggered(api_for, client_user, operator, drain):
    run_id = awaiting(api_for, client_user, drain)

    assert resume(api_for(operator), run_id, pending_request(run_id).id, [APPROVE]).status_code == 200

    assert triggered_after_resume(run_id) == []


def test_a_request_that_cannot_be_resolved_says_which_responses_can(api_for, client_user, operator, drain):
    run_id = awaiting(api_for, client_user, drain)

    response = resume(api_for(operator), run_id, pending_request(run_id).id,
                      [{"responseType": "freeform", "freeformText": "a note"}])

    assert response.status_code == 422
    assert response.json()["message"] == ("This approval request must be resolved by an approval, rejection "
                                          "or option response.")
    assert HitlRequest.objects.get(run_id=run_id).status == "pending"
