"""The console and governance (docs/runbook-console.md): who may answer,
quorum shown and counted, the "assigned to me" inbox and run filter, and
the manual policy buttons with their access matrix."""
from __future__ import annotations

import html
import re
from typing import Any

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from hitl.models import HitlRequest, HitlStatus
from runs.models import AuditEntry, Run, RunStatus
from runs.services import run_create
from tests.conftest import load_envelope
from tests.runs.test_admin import action_url, browser, change_url, messages_of

pytestmark = pytest.mark.django_db

MANUAL_FAIL = {"id": "stop-now", "trigger": {"kind": "manual"}, "action": {"type": "fail", "message": "Stopped."}}


def approval_run(user: Any, drain: Any, **rules: Any) -> Run:
    envelope = load_envelope("approval-required")
    envelope["policies"]["runtime"][0]["action"].update({"allowSelfApproval": False, **rules})
    envelope["policies"]["runtime"].append(MANUAL_FAIL)
    run = run_create(user=user, envelope=envelope)
    drain()
    run.refresh_from_db()
    assert run.status == RunStatus.AWAITING_HITL
    return run


def pending(run: Run) -> HitlRequest:
    return HitlRequest.objects.get(run=run, status=HitlStatus.PENDING)


def text_of(response: Any) -> str:
    """The page's text, without tags."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", response.content.decode())).split())


def approve(client: Client, run: Run) -> Any:
    page = client.get(change_url(run))
    latest = page.context["pending"]["latest_response_id"]
    return client.post(action_url(run, "answer"), {"request_id": pending(run).id, "answer": "approve",
                                                   "latest_response_id": latest, "mode": "resume"}, follow=True)


@pytest.fixture
def ana(make_user):
    return make_user("ana", "operator")


@pytest.fixture
def bob(make_user):
    return make_user("bob", "operator")


def test_the_creator_s_own_approval_is_refused_with_a_readable_message(operator, drain):
    run = approval_run(operator, drain)

    response = approve(browser(operator), run)

    text = " ".join(messages_of(response))
    assert "You created this run, so you may not approve its approval request" in text
    assert "[self_approval_forbidden]" in text
    run.refresh_from_db()
    assert run.status == RunStatus.AWAITING_HITL


def test_a_non_assignee_is_refused_and_the_page_names_the_assignees(client_user, operator, ana, drain):
    run = approval_run(client_user, drain, assignees={"users": ["ana"]})
    page = browser(operator).get(change_url(run)).content.decode()
    assert "Assigned to" in page and "ana" in page

    response = approve(browser(operator), run)

    assert "[not_assignee]" in " ".join(messages_of(response))
    assert approve(browser(ana), run).status_code == 200
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED


def test_two_operators_approve_a_two_person_request_and_the_page_counts(client_user, ana, bob, drain):
    run = approval_run(client_user, drain, requiredApprovals=2)
    before = text_of(browser(ana).get(change_url(run)))
    assert "0 of 2" in before and "2 more needed" in before

    first = approve(browser(ana), run)

    assert "1 of 2 approvals; the run waits for 1 more" in " ".join(messages_of(first))
    page = text_of(first)
    assert "1 of 2" in page and "approved by ana" in page and "1 more needed" in page
    again = approve(browser(ana), run)
    assert "[already_approved]" in " ".join(messages_of(again))

    second = approve(browser(bob), run)

    assert "answered; run" in " ".join(messages_of(second))
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED
    drain()
    history = text_of(browser(bob).get(change_url(run)))
    assert "2 of 2" in history and "approved by ana, bob" in history


def test_the_inbox_filters_requests_assigned_to_me(client_user, ana, bob, make_user, drain):
    Group.objects.create(name="legal").user_set.add(bob)
    to_ana = approval_run(client_user, drain, assignees={"users": ["ana"]})
    to_legal = approval_run(client_user, drain, assignees={"groups": ["legal"]})
    inbox = reverse("admin:runs_run_inbox")

    everything = browser(ana).get(inbox).content.decode()
    mine = browser(ana).get(inbox + "?assigned=me").content.decode()
    legal = browser(bob).get(inbox + "?assigned=me").content.decode()

    assert to_ana.id in everything and to_legal.id in everything
    assert to_ana.id in mine and to_legal.id not in mine
    assert to_legal.id in legal and to_ana.id not in legal
    # The run list's sidebar filter and the history pages' filter.
    listing = browser(ana).get(reverse("admin:runs_run_changelist") + "?assigned=me").content.decode()
    assert to_ana.id in listing and to_legal.id not in listing
    pages = browser(bob).get(reverse("run_pages:list") + "?assigned=me").content.decode()
    assert to_legal.id in pages and to_ana.id not in pages


def test_the_manual_policy_button_fails_a_waiting_run(client_user, operator, drain):
    run = approval_run(client_user, drain)
    page = browser(operator).get(change_url(run)).content.decode()
    assert 'id="trigger-stop-now"' in page

    response = browser(operator).post(action_url(run, "trigger"), {"policy_id": "stop-now", "note": "wrong"},
                                      follow=True)

    assert "Policy stop-now applied; the run is failed." in messages_of(response)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert AuditEntry.objects.get(run=run, action="policy_triggered_manually").details["note"] == "wrong"
    # A finished run shows no button; a forged press is refused with a message.
    assert 'id="trigger-stop-now"' not in browser(operator).get(change_url(run)).content.decode()
    again = browser(operator).post(action_url(run, "trigger"), {"policy_id": "stop-now"}, follow=True)
    assert "[invalid_run_state]" in " ".join(messages_of(again))


def test_an_unknown_policy_from_the_console_is_an_error_message(client_user, operator, drain):
    run = approval_run(client_user, drain)

    response = browser(operator).post(action_url(run, "trigger"), {"policy_id": "nope"}, follow=True)

    assert "[policy_not_found]" in " ".join(messages_of(response))


@pytest.mark.parametrize("persona, outcome", [
    ("anonymous", "login"), ("owner", "login"), ("other_client", "login"), ("support", 403), ("operator", "done"),
])
def test_the_trigger_button_access_matrix(request, client_user, drain, persona, outcome):
    run = approval_run(client_user, drain)
    if persona == "anonymous":
        client = Client()
    else:
        fixture = {"owner": "client_user", "other_client": "other_client", "support": "support",
                   "operator": "operator"}[persona]
        client = browser(request.getfixturevalue(fixture))
    if persona == "support":
        assert 'id="trigger-stop-now"' not in client.get(change_url(run)).content.decode()

    response = client.post(reverse("admin:runs_run_trigger", args=[quote(run.id)]), {"policy_id": "stop-now"})

    run.refresh_from_db()
    if outcome == "login":
        assert response.status_code == 302 and "/admin/login/" in response["Location"]
    elif outcome == 403:
        assert response.status_code == 403
    else:
        assert response.status_code == 302 and response["Location"] == change_url(run)
    assert run.status == (RunStatus.FAILED if outcome == "done" else RunStatus.AWAITING_HITL)
