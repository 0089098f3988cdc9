"""POST /api/hitl/resume: approvals, clarifications, the stale rule, rights."""
from __future__ import annotations

import pytest

from hitl.models import HitlRequest, HitlResponse
from runs.models import AuditEntry, NodeRun, PlanVersion, Run
from tests.conftest import load_envelope
from tests.hitl.helpers import APPROVE, REJECT, event_types, events_of, pending_request, resume, submit

pytestmark = pytest.mark.django_db


@pytest.fixture
def awaiting_approval(api_for, client_user, drain):
    run_id = submit(api_for(client_user), load_envelope("approval-required"))
    drain()
    return run_id


def test_it_pauses_an_approval_required_run_after_the_copywriter(awaiting_approval):
    run = Run.objects.get(pk=awaiting_approval)
    request = pending_request(run.id)
    assert run.status == "awaiting_hitl"
    assert (request.kind, request.pending_node_id, request.source) == ("approval", "copywriter", "approve-copy")
    assert NodeRun.objects.get(run=run, node_id="copywriter").status == "completed"
    assert event_types(run.id)[-2:] == ["policy_triggered", "hitl_request"]
    assert events_of(run.id, "policy_triggered")[0].payload == {
        "policyId": "approve-copy", "trigger": "onNodeComplete", "nodeId": "copywriter",
        "action": {"type": "hitl", "rationale": "Copy must be approved before it is returned",
                   "allowSelfApproval": True}}


def test_approving_completes_the_run(api_for, operator, awaiting_approval, drain):
    request = pending_request(awaiting_approval)

    response = resume(api_for(operator), awaiting_approval, request.id, [APPROVE], note="looks good")

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["runId"], body["status"], body["planVersion"], body["pendingRequestId"]) == (
        awaiting_approval, "queued", 2, None)
    assert body["responses"][0]["responseType"] == "approval" and body["requests"][0]["status"] == "resolved"
    drain()
    run = Run.objects.get(pk=awaiting_approval)
    assert run.status == "completed" and len(run.output["copyVariants"]) == 1
    types = event_types(run.id)
    assert types[types.index("hitl_request") + 1:] == ["hitl_update", "hitl_resolved", "plan_updated", "node_start",
                                                       "node_complete", "complete"]
    resolved = events_of(run.id, "hitl_resolved")[0].payload
    assert resolved["resolution"] == "approved" and resolved["requestId"] == request.id
    updated = events_of(run.id, "plan_updated")[0].payload
    assert (updated["previousVersion"], updated["version"], updated["reason"]) == (1, 2, "resume")
    assert updated["trigger"]["kind"] == "hitl" and updated["trigger"]["requestId"] == request.id
    version = PlanVersion.objects.get(run=run, version=2)
    assert version.reason == "resume" and version.pending_node_ids == ["output"]
    assert NodeRun.objects.get(run=run, node_id="copywriter").commits == 1


def test_rejecting_fails_the_run_with_a_complete_frame(api_for, operator, awaiting_approval, drain):
    request = pending_request(awaiting_approval)

    response = resume(api_for(operator), awaiting_approval, request.id, [REJECT])

    assert response.status_code == 200 and response.json()["status"] == "failed"
    assert drain() == 0  # nothing left to run
    run = Run.objects.get(pk=awaiting_approval)
    assert run.status == "failed" and run.error["code"] == "hitl_rejected"
    complete = events_of(run.id, "complete")
    assert len(complete) == 1 and complete[0].payload["status"] == "failed"
    assert events_of(run.id, "hitl_resolved")[0].payload["resolution"] == "rejected"


def test_the_owner_may_reject_but_not_approve_their_own_run(api_for, client_user, drain):
    envelope = load_envelope("approval-required")
    del envelope["policies"]["runtime"][0]["action"]["allowSelfApproval"]  # the default: false
    awaiting_approval = submit(api_for(client_user), envelope)
    drain()
    request = pending_request(awaiting_approval)
    refused = resume(api_for(client_user), awaiting_approval, request.id, [APPROVE])
    assert refused.status_code == 403 and refused.json()["code"] == "self_approval_forbidden"
    assert not HitlResponse.objects.filter(request=request).exists()

    response = resume(api_for(client_user), awaiting_approval, request.id, [REJECT])

    assert response.status_code == 200
    assert Run.objects.get(pk=awaiting_approval).status == "failed"


def test_the_owner_may_approve_their_own_run_when_the_policy_allows_it(api_for, client_user, drain):
    run_id = submit(api_for(client_user), load_envelope("approval-required"))  # allowSelfApproval: true
    drain()

    response = resume(api_for(client_user), run_id, pending_request(run_id).id, [APPROVE])

    assert response.status_code == 200
    drain()
    assert Run.objects.get(pk=run_id).status == "completed"


def test_it_writes_an_audit_entry_with_the_authenticated_actor(api_for, operator, awaiting_approval):
    request = pending_request(awaiting_approval)
    resume(api_for(operator), awaiting_approval, request.id, [APPROVE], note="ok",
           operator={"displayName": "Someone Else"})

    entry = AuditEntry.objects.get(run_id=awaiting_approval, action="hitl_resumed")
    assert entry.actor == operator and entry.plan_version == 2
    assert entry.details["note"] == "ok" and entry.details["requestId"] == request.id
    assert entry.details["operator"] == {"displayName": "Someone Else"}
    stored = HitlResponse.objects.get(request=request)
    assert stored.responder == operator and stored.responder_display_name == "Someone Else"


def test_it_logs_a_structured_line_per_action(api_for, operator, awaiting_approval, caplog):
    with caplog.at_level("INFO", logger="runs.services"):
        resume(api_for(operator), awaiting_approval, pending_request(awaiting_approval).id, [APPROVE])
    record = next(r for r in caplog.records if getattr(r, "action", None) == "hitl_resumed")
    assert (record.run_id, record.operator_id, record.plan_version) == (awaiting_approval, operator.pk, 2)


def test_support_may_not_resume(api_for, support, awaiting_approval):
    response = resume(api_for(support), awaiting_approval, pending_request(awaiting_approval).id, [APPROVE])

    assert response.status_code == 403 and response.json()["code"] == "permission_denied"
    assert Run.objects.get(pk=awaiting_approval).status == "awaiting_hitl"


@pytest.mark.parametrize("who", ["other_client", "outsider"])
def test_a_run_the_caller_may_not_view_is_not_found(api_for, request, awaiting_approval, who):
    response = resume(api_for(request.getfixturevalue(who)), awaiting_approval,
                      pending_request(awaiting_approval).id, [APPROVE])

    assert response.status_code == 404 and response.json()["code"] == "run_not_found"


def test_an_unknown_request_is_not_found(api_for, operator, awaiting_approval):
    response = resume(api_for(operator), awaiting_approval, "hitl_nope", [APPROVE])

    assert response.status_code == 404 and response.json()["code"] == "hitl_request_not_found"


def test_responses_that_do_not_resolve_the_request_are_422_and_change_nothing(api_for, operator, awaiting_approval):
    request = pending_request(awaiting_approval)

    response = resume(api_for(operator), awaiting_approval, request.id,
                      [{"responseType": "freeform", "freeformText": "a note only"}])

    assert response.status_code == 422 and response.json()["code"] == "hitl_response_required"
    assert not HitlResponse.objects.exists() and pending_request(awaiting_approval).id == request.id
    assert Run.objects.get(pk=awaiting_approval).plan_version == 1


@pytest.mark.parametrize("bad", [
    {"responseType": "maybe"},
    {"responseType": "approval", "approved": False},
    {"responseType": "option", "selectedOptionId": "nope"},
    {"responseType": "approval", "extra": 1},
])
def test_malformed_responses_are_422_validation_failed(api_for, operator, awaiting_approval, bad):
    response = resume(api_for(operator), awaiting_approval, pending_request(awaiting_approval).id, [bad])

    assert response.status_code == 422 and response.json()["code"] == "validation_failed"
    assert response.json()["details"]["errors"][0]["path"].startswith("/responses/0")


def test_it_addresses_the_run_by_thread(api_for, operator, awaiting_approval):
    request = pending_request(awaiting_approval)

    response = api_for(operator).post("/api/hitl/resume", {"threadId": "thread-demo-2", "requestId": request.id,
                                                           "responses": [APPROVE]}, format="json")

    assert response.status_code == 200 and response.json()["runId"] == awaiting_approval


def test_resuming_a_resolved_request_is_409(api_for, operator, awaiting_approval):
    request = pending_request(awaiting_approval)
    assert resume(api_for(operator), awaiting_approval, request.id, [APPROVE]).status_code == 200
    latest = HitlResponse.objects.get(request=request).response_id

    again = resume(api_for(operator), awaiting_approval, request.id, [APPROVE], latestResponseId=latest)

    assert again.status_code == 409 and again.json()["code"] == "hitl_request_not_pending"
    assert HitlResponse.objects.filter(request=request).count() == 1
    assert len(events_of(awaiting_approval, "plan_updated")) == 1


def test_the_stale_rule_needs_the_latest_response_id(api_for, operator, support, awaiting_approval, drain):
    api = api_for(operator)
    request = pending_request(awaiting_approval)
    noted = api.post("/api/hitl/respond", {"runId": awaiting_approval, "requestId": request.id,
                                           "responses": [{"responseType": "freeform", "freeformText": "checking"}]},
                     format="json")
    assert noted.status_code == 200
    latest = noted.json()["latestResponseId"]

    without = resume(api, awaiting_approval, request.id, [APPROVE])
    wrong = resume(api, awaiting_approval, request.id, [APPROVE], latestResponseId="resp_wrong")
    right = resume(api, awaiting_approval, request.id, [APPROVE], latestResponseId=latest)

    assert (without.status_code, wrong.status_code, right.status_code) == (409, 409, 200)
    assert without.json()["code"] == wrong.json()["code"] == "stale_hitl_state"
    assert without.json()["details"]["latestResponseId"] == latest
    assert HitlResponse.objects.filter(request=request).count() == 2
    drain()
    assert Run.objects.get(pk=awaiting_approval).status == "completed"


def test_a_draft_answer_from_respond_can_resolve_on_resume(api_for, operator, awaiting_approval):
    api = api_for(operator)
    request = pending_request(awaiting_approval)
    latest = api.post("/api/hitl/respond", {"runId": awaiting_approval, "requestId": request.id,
                                            "responses": [APPROVE]}, format="json").json()["latestResponseId"]

    response = resume(api, awaiting_approval, request.id, [], latestResponseId=latest)

    assert response.status_code == 200 and response.json()["status"] == "queued"


# --- clarifications ------------------------------------------------------------

def test_a_clarify_answer_reaches_the_final_copy_verbatim(api_for, operator, client_user, drain):
    run_id = submit(api_for(client_user), load_envelope("clarify-audience"))
    drain()
    request = pending_request(run_id)
    assert request.kind == "clarify" and request.pending_node_id == "strategist"
    assert Run.objects.get(pk=run_id).status == "awaiting_hitl"
    answer = "Heads of Compliance at  Dutch credit unions (ÄÖ)"

    response = resume(api_for(operator), run_id, request.id, [{"responseType": "freeform", "freeformText": answer}])

    assert response.status_code == 200
    assert NodeRun.objects.get(run_id=run_id, node_id="strategist").status == "pending"
    drain()
    run = Run.objects.get(pk=run_id)
    assert run.status == "completed"
    assert all(answer in variant["body"] for variant in run.output["copyVariants"])
    assert events_of(run_id, "hitl_resolved")[0].payload["resolution"] == "answered"


def test_a_clarify_request_refuses_an_approval(api_for, operator, client_user, drain):
    run_id = submit(api_for(client_user), load_envelope("clarify-audience"))
    drain()

    response = resume(api_for(operator), run_id, pending_request(run_id).id, [APPROVE])

    assert response.status_code == 422 and response.json()["code"] == "validation_failed"


@pytest.fixture
def two_question_capability(settings):
    settings.FLEX_EXTRA_CAPABILITIES = ["tests.hitl.capabilities.TwoQuestionStrategist"]


def test_a_two_turn_clarification_receives_both_answers(api_for, operator, client_user, drain,
                                                        two_question_capability):
    from tests.hitl.capabilities import two_question_envelope

    api = api_for(operator)
    run_id = submit(api_for(client_user), two_question_envelope(load_envelope("clarify-audience")))
    drain()
    first = pending_request(run_id)
    assert first.question == "Who is the target audience?" and first.urgency == "high"
    assert resume(api, run_id, first.id, [{"responseType": "freeform", "freeformText": "Risk managers"}]
                  ).status_code == 200
    drain()
    second = pending_request(run_id)
    assert second.question == "Which angle should the post take?" and second.plan_version == 2

    assert resume(api, run_id, second.id, [{"responseType": "option", "selectedOptionId": "risk"}]).status_code == 200
    drain()

    run = Run.objects.get(pk=run_id)
    assert run.status == "completed"
    assert "Answers seen: ['Risk managers', 'Risk reduction']" in run.facet_snapshot()[0]["handoff_summary"]
    assert all("Risk managers" in v["body"] for v in run.output["copyVariants"])
    assert run.plan_version == 3
    assert HitlRequest.objects.filter(run=run, status="resolved").count() == 2
