"""Governance of human decisions through the API (API.md, docs/hitl.md):
assignees, separation of duties, quorum, the "assigned to me" inbox, the
envelope checks of the new `hitl` fields and the recipients of a request."""
from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group

from hitl.models import HitlRequest, HitlResponse
from hitl.services import hitl_recipients
from runs.models import AuditEntry, Run
from tests.conftest import load_envelope
from tests.hitl.helpers import APPROVE, REJECT, event_types, events_of, pending_request, resume, submit

pytestmark = pytest.mark.django_db


def governed(**rules: Any) -> dict[str, Any]:
    """The example approval, without its `allowSelfApproval` (the default:
    the creator may not approve), with `rules` added."""
    envelope = load_envelope("approval-required")
    action = envelope["policies"]["runtime"][0]["action"]
    action.pop("allowSelfApproval")
    action.update(rules)
    return envelope


@pytest.fixture
def ana(make_user):
    return make_user("ana", "operator", email="ana@example.com")


@pytest.fixture
def bob(make_user):
    return make_user("bob", "operator", email="bob@example.com")


@pytest.fixture
def legal(make_user):
    group = Group.objects.create(name="legal")
    lee = make_user("lee", "operator", email="lee@example.com")
    lee.groups.add(group)
    return lee


def waiting_run(api_for, owner, drain, **rules: Any) -> tuple[str, HitlRequest]:
    run_id = submit(api_for(owner), governed(**rules))
    drain()
    assert Run.objects.get(pk=run_id).status == "awaiting_hitl"
    return run_id, pending_request(run_id)


# --- assignees ------------------------------------------------------------------

def test_only_assignees_answer_an_assigned_request(api_for, client_user, operator, ana, legal, drain):
    run_id, request = waiting_run(api_for, client_user, drain, assignees={"users": ["ana"], "groups": ["legal"]})
    assert request.assignees == {"users": ["ana"], "groups": ["legal"]}

    refused = resume(api_for(operator), run_id, request.id, [APPROVE])

    assert refused.status_code == 403
    assert refused.json()["code"] == "not_assignee"
    assert refused.json()["details"]["assignees"] == {"users": ["ana"], "groups": ["legal"]}
    assert not HitlResponse.objects.filter(request=request).exists()
    # A note through respond is an answer too.
    note = api_for(operator).post("/api/hitl/respond", {"runId": run_id, "requestId": request.id, "responses": [
        {"responseType": "freeform", "freeformText": "fine by me"}]}, format="json")
    assert note.status_code == 403 and note.json()["code"] == "not_assignee"

    # A member of an assigned group may answer.
    accepted = resume(api_for(legal), run_id, request.id, [APPROVE])
    assert accepted.status_code == 200, accepted.content
    assert accepted.json()["status"] == "queued"


def test_a_superuser_answers_any_assigned_request(api_for, client_user, ana, make_user, drain):
    admin = make_user("root", "admin")
    run_id, request = waiting_run(api_for, client_user, drain, assignees={"users": ["ana"]})

    assert resume(api_for(admin), run_id, request.id, [REJECT]).status_code == 200


def test_an_unassigned_request_is_answered_by_any_operator(api_for, client_user, operator, drain):
    run_id, request = waiting_run(api_for, client_user, drain)

    assert resume(api_for(operator), run_id, request.id, [APPROVE]).status_code == 200


# --- separation of duties --------------------------------------------------------

def test_the_creator_may_not_approve_their_own_run(api_for, operator, drain):
    run_id, request = waiting_run(api_for, operator, drain)

    refused = resume(api_for(operator), run_id, request.id, [APPROVE])

    assert refused.status_code == 403
    body = refused.json()
    assert body["code"] == "self_approval_forbidden" and "created this run" in body["message"]
    assert Run.objects.get(pk=run_id).status == "awaiting_hitl"
    # Also as an option and through run.resume.
    option = resume(api_for(operator), run_id, request.id, [{"responseType": "option", "selectedOptionId": "approve"}])
    assert option.status_code == 403 and option.json()["code"] == "self_approval_forbidden"
    flex = api_for(operator).post("/api/v1/flex/run.resume", {
        "runId": run_id, "expectedPlanVersion": 1, "responses": [{**APPROVE, "requestId": request.id}]}, format="json")
    assert flex.status_code == 403 and flex.json()["code"] == "self_approval_forbidden"
    assert not HitlResponse.objects.filter(request=request).exists()


def test_the_creator_may_approve_when_the_policy_allows_it(api_for, operator, drain):
    run_id, request = waiting_run(api_for, operator, drain, allowSelfApproval=True)
    assert request.allow_self_approval is True

    assert resume(api_for(operator), run_id, request.id, [APPROVE]).status_code == 200
    drain()
    assert Run.objects.get(pk=run_id).status == "completed"


def test_the_creator_may_still_reject_their_own_run(api_for, operator, drain):
    run_id, request = waiting_run(api_for, operator, drain)

    response = resume(api_for(operator), run_id, request.id, [REJECT])

    assert response.status_code == 200 and response.json()["status"] == "failed"


# --- quorum ----------------------------------------------------------------------

def test_two_approvals_from_two_people_resolve_a_two_person_request(api_for, client_user, ana, bob, drain):
    run_id, request = waiting_run(api_for, client_user, drain, requiredApprovals=2)

    first = resume(api_for(ana), run_id, request.id, [APPROVE])

    assert first.status_code == 200, first.content
    body = first.json()
    assert (body["status"], body["pendingRequestId"]) == ("awaiting_hitl", request.id)
    shown = body["requests"][0]
    assert shown["requiredApprovals"] == 2 and shown["approvalsNeeded"] == 1
    assert [a["responderDisplayName"] for a in shown["approvals"]] == ["ana"]
    assert event_types(run_id)[-1] == "hitl_update"
    assert AuditEntry.objects.filter(run_id=run_id, action="hitl_approval_counted").count() == 1

    # The same person again: refused, nothing stored.
    latest = body["responses"][-1]["responseId"]
    again = resume(api_for(ana), run_id, request.id, [APPROVE], latestResponseId=latest)
    assert again.status_code == 409 and again.json()["code"] == "already_approved"
    assert HitlResponse.objects.filter(request=request).count() == 1

    second = resume(api_for(bob), run_id, request.id, [APPROVE], latestResponseId=latest)

    assert second.status_code == 200, second.content
    assert second.json()["status"] == "queued"
    resolved = second.json()["requests"][0]
    assert resolved["status"] == "resolved" and resolved["approvalsNeeded"] == 0
    assert [a["responderDisplayName"] for a in resolved["approvals"]] == ["ana", "bob"]
    assert len(events_of(run_id, "hitl_update")) == 2
    assert events_of(run_id, "hitl_resolved")[0].payload["resolution"] == "approved"
    drain()
    assert Run.objects.get(pk=run_id).status == "completed"


def test_one_rejection_resolves_a_quorum_at_once(api_for, client_user, ana, bob, drain):
    run_id, request = waiting_run(api_for, client_user, drain, requiredApprovals=3)
    first = resume(api_for(ana), run_id, request.id, [APPROVE]).json()

    rejected = resume(api_for(bob), run_id, request.id, [REJECT],
                      latestResponseId=first["responses"][-1]["responseId"])

    assert rejected.status_code == 200 and rejected.json()["status"] == "failed"
    assert events_of(run_id, "hitl_resolved")[0].payload["resolution"] == "rejected"


def test_the_pending_inbox_shows_the_quorum(api_for, client_user, ana, operator, drain):
    run_id, request = waiting_run(api_for, client_user, drain, requiredApprovals=2)
    resume(api_for(ana), run_id, request.id, [APPROVE])

    entry = api_for(operator).get("/api/hitl/pending").json()["runs"][0]["pendingRequest"]

    assert (entry["requiredApprovals"], entry["approvalsNeeded"], entry["allowSelfApproval"]) == (2, 1, False)
    assert entry["approvals"][0]["responderDisplayName"] == "ana"
    for key in ("assignees", "dueAt", "escalateAt", "escalated", "onTimeout"):
        assert key in entry


# --- the inbox filter -------------------------------------------------------------

def test_assigned_to_me_filters_by_user_and_group(api_for, client_user, ana, bob, legal, drain):
    to_ana, _ = waiting_run(api_for, client_user, drain, assignees={"users": ["ana"]})
    to_legal, _ = waiting_run(api_for, client_user, drain, assignees={"groups": ["legal"]})
    unassigned, _ = waiting_run(api_for, client_user, drain)

    def inbox(user: Any, query: str = "") -> list[str]:
        response = api_for(user).get(f"/api/hitl/pending{query}")
        assert response.status_code == 200, response.content
        return sorted(entry["runId"] for entry in response.json()["runs"])

    assert inbox(ana, "?assignedTo=me") == [to_ana]
    assert inbox(legal, "?assignedTo=me") == [to_legal]
    assert inbox(bob, "?assignedTo=me") == []
    assert inbox(bob) == sorted([to_ana, to_legal, unassigned])
    bad = api_for(bob).get("/api/hitl/pending?assignedTo=everyone")
    assert bad.status_code == 422 and bad.json()["details"]["errors"][0]["path"] == "/assignedTo"


# --- the envelope ------------------------------------------------------------------

def test_unknown_assignees_are_refused_before_any_run_exists(api_for, client_user, ana):
    response = api_for(client_user).post("/api/v1/flex/runs", governed(
        assignees={"users": ["ana", "ghost"], "groups": ["nobody-group"]},
        escalateAfterSeconds=60, escalateTo={"users": ["phantom"]}), format="json")

    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "validation_failed"
    assert {e["path"]: e["message"] for e in body["details"]["errors"]} == {
        "/policies/runtime/0/action/assignees/users/1": "unknown user 'ghost'",
        "/policies/runtime/0/action/assignees/groups/0": "unknown group 'nobody-group'",
        "/policies/runtime/0/action/escalateTo/users/0": "unknown user 'phantom'",
    }
    assert not Run.objects.exists()


@pytest.mark.parametrize("rules, path", [
    ({"onTimeout": {"type": "option", "optionId": "maybe"}, "timeoutSeconds": 60},
     "/policies/runtime/0/action/onTimeout/optionId"),
    ({"onTimeout": {"type": "approve"}}, "/policies/runtime/0/action/onTimeout"),
    ({"timeoutSeconds": 60, "escalateAfterSeconds": 60}, "/policies/runtime/0/action/escalateAfterSeconds"),
    ({"escalateTo": {"users": ["ana"]}}, "/policies/runtime/0/action/escalateTo"),
    ({"requiredApprovals": 0}, "/policies/runtime/0/action/requiredApprovals"),
    ({"onTimeout": {"type": "later"}, "timeoutSeconds": 60}, "/policies/runtime/0/action/onTimeout/type"),
    ({"assignees": {"roles": ["x"]}}, "/policies/runtime/0/action/assignees/roles"),
])
def test_inconsistent_governance_fields_are_a_422(api_for, client_user, ana, rules, path):
    response = api_for(client_user).post("/api/v1/flex/runs", governed(**rules), format="json")

    assert response.status_code == 422, response.content
    assert path in [e["path"] for e in response.json()["details"]["errors"]]


# --- recipients (for notifications) -------------------------------------------------

def test_recipients_are_the_assignees_and_then_the_escalation_targets(api_for, client_user, ana, bob, legal,
                                                                      make_user, drain):
    make_user("nomail", "operator").groups.add(Group.objects.get(name="legal"))
    _, request = waiting_run(api_for, client_user, drain, assignees={"users": ["ana"], "groups": ["legal"]},
                             timeoutSeconds=600, escalateAfterSeconds=60, escalateTo={"users": ["bob"]})

    assert [r["email"] for r in hitl_recipients(request=request)] == ["ana@example.com", "lee@example.com"]
    assert hitl_recipients(request=request, escalation=True) == [
        {"userId": bob.pk, "username": "bob", "email": "bob@example.com"}]


@pytest.mark.django_db(transaction=True)
def test_a_streamed_run_resume_short_of_the_quorum_ends_after_its_update(api_for, client_user, ana, bob, drain):
    from tests.sse import streamed, types

    run_id, request = waiting_run(api_for, client_user, drain, requiredApprovals=2)

    frames = streamed(api_for(ana).post("/api/v1/flex/run.resume", {
        "runId": run_id, "expectedPlanVersion": 1, "responses": [{**APPROVE, "requestId": request.id}]},
        format="json", HTTP_ACCEPT="text/event-stream"))

    assert types(frames) == ["hitl_update"]
    assert frames[0]["data"]["payload"]["response"]["responderDisplayName"] == "ana"
    assert Run.objects.get(pk=run_id).status == "awaiting_hitl"
    latest = frames[0]["data"]["payload"]["response"]["responseId"]
    second = api_for(bob).post("/api/v1/flex/run.resume", {
        "runId": run_id, "expectedPlanVersion": 1, "latestResponseId": latest,
        "responses": [{**APPROVE, "requestId": request.id}]}, format="json")
    assert second.status_code == 202 and second.json()["status"] == "queued"
