"""The operator console (runs/admin.py, hitl/admin.py, planner/admin.py):
lists, the read-only run page, the Resume / Answer / Cancel buttons and bulk
actions calling the API's services, permissions, CSRF and query counts."""
from __future__ import annotations

import html
import re
from typing import Any

import pytest
from django.contrib.admin.utils import quote
from django.contrib.messages import get_messages
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from guardian.shortcuts import assign_perm

from hitl.models import HitlRequest, HitlStatus
from runs.models import AuditEntry, Run, RunEvent, RunStatus
from runs.services import run_create
from tests.conftest import load_envelope
from tests.runs.review import REVIEWED_TEXT, SENSITIVE_CALL_TO_ACTION, sensitive_call_to_action  # noqa: F401

pytestmark = pytest.mark.django_db

PAUSE_ON_START = {"id": "hold", "trigger": {"kind": "onStart"}, "action": {"type": "pause", "reason": "hold it"}}


def change_url(run: Run) -> str:
    # The admin quotes ids in its URLs, as its list links do (`run_01a` → `run_5F01a`).
    return reverse("admin:runs_run_change", args=[quote(run.id)])


def action_url(run: Run, name: str) -> str:
    return reverse(f"admin:runs_run_{name}", args=[quote(run.id)])


def browser(user: Any, *, csrf: bool = False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


@pytest.fixture
def submit(drain: Any) -> Any:
    def make(user: Any, name: str, **changes: Any) -> Run:
        envelope = load_envelope(name)
        for key, value in changes.items():
            envelope[key] = value
        run = run_create(user=user, envelope=envelope)
        drain()
        run.refresh_from_db()
        return run

    return make


@pytest.fixture
def clarify_run(submit: Any, client_user: Any) -> Run:
    run = submit(client_user, "clarify-audience")
    assert run.status == RunStatus.AWAITING_HITL
    return run


@pytest.fixture
def approval_run(submit: Any, client_user: Any) -> Run:
    run = submit(client_user, "approval-required")
    assert run.status == RunStatus.AWAITING_HITL
    return run


@pytest.fixture
def paused_run(submit: Any, client_user: Any) -> Run:
    envelope = load_envelope("linkedin-variants")
    envelope.setdefault("policies", {})["runtime"] = [PAUSE_ON_START]
    run = submit(client_user, "linkedin-variants", policies=envelope["policies"])
    assert run.status == RunStatus.PAUSED
    return run


def staff_without_role(make_user: Any, username: str) -> Any:
    user = make_user(username, None)
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    return user


def pending_of(run: Run) -> HitlRequest:
    return HitlRequest.objects.get(run=run, status=HitlStatus.PENDING)


# --- the list -----------------------------------------------------------------------

def test_the_run_list_shows_status_plan_version_pending_request_and_creator(operator: Any, clarify_run: Run) -> None:
    response = browser(operator).get(reverse("admin:runs_run_changelist"))
    assert response.status_code == 200
    body = response.content.decode()
    assert clarify_run.id in body
    assert "status-awaiting_hitl" in body
    assert "Who is the target audience" in body
    assert "clara" in body


def test_the_run_list_filters_and_searches(operator: Any, clarify_run: Run, submit: Any, client_user: Any) -> None:
    done = submit(client_user, "linkedin-variants")
    assert done.status == RunStatus.COMPLETED
    client = browser(operator)
    changelist = reverse("admin:runs_run_changelist")
    pending_only = client.get(changelist, {"pending": "yes"}).content.decode()
    assert clarify_run.id in pending_only and done.id not in pending_only
    completed = client.get(changelist, {"status__exact": "completed"}).content.decode()
    assert done.id in completed and clarify_run.id not in completed
    by_thread = client.get(changelist, {"q": "thread-demo-3"}).content.decode()
    assert clarify_run.id in by_thread and done.id not in by_thread
    by_capability = client.get(changelist, {"capability": "qa.ContentReview"})
    assert by_capability.status_code == 200


def _bulk_runs(user: Any, count: int) -> None:
    envelope = load_envelope("linkedin-variants")
    runs = Run.objects.bulk_create([Run(objective=f"run {i}", envelope=envelope, created_by=user,
                                        status=RunStatus.AWAITING_HITL, plan_version=1) for i in range(count)])
    HitlRequest.objects.bulk_create([HitlRequest(run=run, kind="clarify", question=f"question {i}")
                                     for i, run in enumerate(runs)])


def _count_queries(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200
    return len(ctx.captured_queries)


def test_the_run_list_costs_the_same_queries_for_1_and_30_runs(operator: Any, django_assert_max_num_queries: Any) -> None:
    client = browser(operator)
    url = reverse("admin:runs_run_changelist")
    _bulk_runs(operator, 1)
    one = _count_queries(client, url)
    _bulk_runs(operator, 29)
    with django_assert_max_num_queries(one):
        response = client.get(url)
    assert response.content.decode().count("question ") >= 30


def test_the_inbox_lists_pending_requests_most_urgent_first_then_oldest(operator: Any, clarify_run: Run,
                                                                       approval_run: Run) -> None:
    HitlRequest.objects.filter(run=approval_run).update(urgency="high", urgency_rank=0)
    response = browser(operator).get(reverse("admin:runs_run_inbox"))
    body = response.content.decode()
    assert response.status_code == 200
    assert body.index(approval_run.id) < body.index(clarify_run.id)
    HitlRequest.objects.filter(run=approval_run).update(urgency="normal", urgency_rank=1)
    body = browser(operator).get(reverse("admin:runs_run_inbox")).content.decode()
    # Same urgency: the older request (the clarify run came first) leads.
    assert body.index(clarify_run.id) < body.index(approval_run.id)


# --- the run page -------------------------------------------------------------------

def test_the_run_page_shows_plan_graph_nodes_dialogue_timeline_and_audit(operator: Any, clarify_run: Run) -> None:
    response = browser(operator).get(change_url(clarify_run))
    assert response.status_code == 200
    body = response.content.decode()
    assert '<svg class="plan-graph"' in body
    assert 'data-node-id="strategist" data-status="awaiting_hitl"' in body
    assert "Who is the target audience" in body
    assert "hitl_request" in body and "plan_generated" in body
    assert "run_created" in body
    assert 'id="answer"' in body and 'id="cancel"' in body


def test_the_run_page_is_redacted(operator: Any, submit: Any, client_user: Any) -> None:
    run = submit(client_user, "clarify-audience",
                 metadata={"threadId": "t-1", "apiToken": "sk-live-123456", "crm": {"password": 424242}},
                 specialInstructions=["Use password=hunter2 for the CRM"])
    body = browser(operator).get(change_url(run)).content.decode()
    assert "sk-live-123456" not in body
    assert "hunter2" not in body and "424242" not in body
    assert "[redacted]" in body


def test_the_run_page_query_count_does_not_grow_with_the_run(operator: Any, clarify_run: Run,
                                                             django_assert_max_num_queries: Any) -> None:
    client = browser(operator)
    before = _count_queries(client, change_url(clarify_run))
    last = clarify_run.last_seq
    RunEvent.objects.bulk_create([RunEvent(run=clarify_run, seq=last + i, type="log", payload={"message": f"m{i}"},
                                           created_at=clarify_run.created_at) for i in range(1, 101)])
    Run.objects.filter(pk=clarify_run.pk).update(last_seq=last + 100)
    with django_assert_max_num_queries(before):
        assert client.get(change_url(clarify_run)).status_code == 200


def test_answering_the_clarify_question_resumes_the_run_which_uses_the_answer(operator: Any, clarify_run: Run,
                                                                            drain: Any) -> None:
    request = pending_of(clarify_run)
    response = browser(operator).post(action_url(clarify_run, "answer"), {
        "request_id": request.id, "answer": "freeform", "text": "Heads of compliance at fintechs",
        "note": "from the console", "latest_response_id": "", "mode": "resume"})
    assert response.status_code == 302
    assert any("answered" in m for m in messages_of(response))
    drain()
    clarify_run.refresh_from_db()
    assert clarify_run.status == RunStatus.COMPLETED
    assert "Heads of compliance at fintechs" in clarify_run.output["copyVariants"][0]["body"]
    assert AuditEntry.objects.filter(run=clarify_run, action="hitl_resumed", actor=operator).exists()


def test_a_stale_answer_is_refused_with_an_admin_error_message(operator: Any, clarify_run: Run) -> None:
    request = pending_of(clarify_run)
    client = browser(operator)
    # Someone adds a response meanwhile…
    client.post(action_url(clarify_run, "answer"), {"request_id": request.id, "answer": "freeform",
                                                    "text": "draft", "mode": "respond"})
    # …and this form was rendered before it (no latest response id).
    response = client.post(action_url(clarify_run, "answer"), {
        "request_id": request.id, "answer": "freeform", "text": "final", "latest_response_id": "", "mode": "resume"})
    assert any("stale_hitl_state" in m for m in messages_of(response))
    clarify_run.refresh_from_db()
    assert clarify_run.status == RunStatus.AWAITING_HITL


def test_resume_acts_on_the_shown_plan_version_and_a_stale_one_is_an_error(operator: Any, paused_run: Run,
                                                                        drain: Any) -> None:
    client = browser(operator)
    page = client.get(change_url(paused_run)).content.decode()
    assert f"Resume plan v{paused_run.plan_version}" in page
    stale = client.post(action_url(paused_run, "resume"), {"expected_plan_version": paused_run.plan_version + 5})
    assert any("stale_plan_version" in m for m in messages_of(stale))
    ok = client.post(action_url(paused_run, "resume"), {"expected_plan_version": paused_run.plan_version})
    assert any("resumed" in m for m in messages_of(ok))
    drain()
    paused_run.refresh_from_db()
    assert paused_run.status == RunStatus.COMPLETED
    again = client.post(action_url(paused_run, "resume"), {"expected_plan_version": paused_run.plan_version})
    assert any("run_already_completed" in m for m in messages_of(again))


def test_cancel_with_a_reason_cancels_and_audits(operator: Any, clarify_run: Run) -> None:
    response = browser(operator).post(action_url(clarify_run, "cancel"), {"reason": "customer withdrew"})
    assert response.status_code == 302
    clarify_run.refresh_from_db()
    assert clarify_run.status == RunStatus.CANCELLED
    entry = AuditEntry.objects.get(run=clarify_run, action="run_cancelled")
    assert entry.actor == operator and entry.details["reason"] == "customer withdrew"
    assert RunEvent.objects.filter(run=clarify_run, type="complete", payload__status="cancelled").exists()


def test_the_buttons_are_post_only(operator: Any, clarify_run: Run) -> None:
    client = browser(operator)
    for name in ("resume", "answer", "cancel"):
        assert client.get(action_url(clarify_run, name)).status_code == 405
    clarify_run.refresh_from_db()
    assert clarify_run.status == RunStatus.AWAITING_HITL


def test_every_action_needs_a_csrf_token(operator: Any, clarify_run: Run, paused_run: Run) -> None:
    client = browser(operator, csrf=True)
    request = pending_of(clarify_run)
    posts = [
        (action_url(clarify_run, "answer"), {"request_id": request.id, "answer": "freeform", "text": "x"}),
        (action_url(paused_run, "resume"), {"expected_plan_version": paused_run.plan_version}),
        (action_url(clarify_run, "cancel"), {"reason": "x"}),
        (reverse("admin:runs_run_changelist"), {"action": "cancel_runs", "_selected_action": [clarify_run.id]}),
        (reverse("admin:runs_run_changelist"), {"action": "approve_runs", "_selected_action": [clarify_run.id]}),
    ]
    for url, data in posts:
        assert client.post(url, data).status_code == 403, url
    clarify_run.refresh_from_db()
    paused_run.refresh_from_db()
    assert (clarify_run.status, paused_run.status) == (RunStatus.AWAITING_HITL, RunStatus.PAUSED)
    # With the token from the page, the same POST works.
    page = client.get(change_url(clarify_run))
    token = page.context["csrf_token"]
    ok = client.post(action_url(clarify_run, "cancel"), {"reason": "x", "csrfmiddlewaretoken": str(token)})
    assert ok.status_code == 302


def test_bulk_approve_first_shows_each_request_with_its_review_then_approves_on_confirmation(
        operator: Any, clarify_run: Run, approval_run: Run, drain: Any) -> None:
    client = browser(operator)
    changelist = reverse("admin:runs_run_changelist")
    confirm = client.post(changelist, {"action": "approve_runs", "_selected_action": [approval_run.id, clarify_run.id]})
    assert confirm.status_code == 200
    body = confirm.content.decode()
    assert "Approve the output of copywriter" in body and REVIEWED_TEXT in body
    assert "1 selected run(s) have no pending approval request" in body
    approval_run.refresh_from_db()
    assert approval_run.status == RunStatus.AWAITING_HITL  # nothing happens before the confirmation

    request = pending_of(approval_run)
    response = client.post(changelist, {"action": "approve_runs", "post": "yes", f"latest_{request.id}": "",
                                        "_selected_action": [approval_run.id, clarify_run.id]})
    assert response.status_code == 302
    drain()
    approval_run.refresh_from_db()
    clarify_run.refresh_from_db()
    assert approval_run.status == RunStatus.COMPLETED
    assert clarify_run.status == RunStatus.AWAITING_HITL  # a question cannot be approved
    client.post(changelist, {"action": "cancel_runs", "_selected_action": [clarify_run.id, approval_run.id]})
    clarify_run.refresh_from_db()
    assert clarify_run.status == RunStatus.CANCELLED
    assert AuditEntry.objects.filter(run=clarify_run, action="run_cancelled").count() == 1


def test_bulk_approve_never_approves_a_request_the_confirmation_page_did_not_show(
        operator: Any, approval_run: Run) -> None:
    response = browser(operator).post(reverse("admin:runs_run_changelist"), {
        "action": "approve_runs", "post": "yes", "_selected_action": [approval_run.id]})
    assert response.status_code == 302
    approval_run.refresh_from_db()
    assert approval_run.status == RunStatus.AWAITING_HITL
    assert pending_of(approval_run).responses.count() == 0


# --- who sees what ----------------------------------------------------------------------

def test_support_sees_everything_without_buttons_or_bulk_actions(support: Any, clarify_run: Run,
                                                                 paused_run: Run) -> None:
    client = browser(support)
    listing = client.get(reverse("admin:runs_run_changelist"))
    assert listing.status_code == 200
    assert clarify_run.id in listing.content.decode()
    assert "cancel_runs" not in listing.content.decode()
    for run in (clarify_run, paused_run):
        page = client.get(change_url(run)).content.decode()
        assert "Who is the target audience" in page or run is paused_run
        assert 'id="actions"' not in page and "answer-submit" not in page and "resume-submit" not in page


def test_a_forged_post_by_support_is_forbidden(support: Any, clarify_run: Run, paused_run: Run) -> None:
    client = browser(support, csrf=True)
    token = str(client.get(change_url(clarify_run)).context["csrf_token"])
    request = pending_of(clarify_run)
    forged = [
        (action_url(clarify_run, "answer"), {"request_id": request.id, "answer": "freeform", "text": "x"}),
        (action_url(paused_run, "resume"), {"expected_plan_version": paused_run.plan_version}),
        (action_url(clarify_run, "cancel"), {"reason": "x"}),
    ]
    for url, data in forged:
        assert client.post(url, {**data, "csrfmiddlewaretoken": token}).status_code == 403, url
    # A bulk action support may not use is refused and changes nothing.
    client.post(reverse("admin:runs_run_changelist"),
                {"action": "cancel_runs", "_selected_action": [clarify_run.id], "csrfmiddlewaretoken": token})
    clarify_run.refresh_from_db()
    paused_run.refresh_from_db()
    assert (clarify_run.status, paused_run.status) == (RunStatus.AWAITING_HITL, RunStatus.PAUSED)
    assert not AuditEntry.objects.filter(actor=support).exists()


def test_a_user_granted_one_run_sees_only_that_run(make_user: Any, clarify_run: Run, approval_run: Run) -> None:
    guest = staff_without_role(make_user, "gina")
    assign_perm("runs.view_run", guest, clarify_run)
    client = browser(guest)
    listing = client.get(reverse("admin:runs_run_changelist"))
    assert listing.status_code == 200
    body = listing.content.decode()
    assert clarify_run.id in body and approval_run.id not in body
    assert client.get(change_url(clarify_run)).status_code == 200
    assert client.get(change_url(approval_run)).status_code == 404
    # Viewing is not operating.
    assert client.post(action_url(clarify_run, "cancel"), {"reason": "x"}).status_code == 403
    inbox = client.get(reverse("admin:runs_run_inbox")).content.decode()
    assert clarify_run.id in inbox and approval_run.id not in inbox


def test_a_user_without_runs_or_staff_gets_no_console(make_user: Any, client_user: Any, clarify_run: Run) -> None:
    nobody = staff_without_role(make_user, "nina")
    assert browser(nobody).get(reverse("admin:runs_run_changelist")).status_code == 403
    # Clients are not staff: the admin sends them to its login page.
    response = browser(client_user).get(change_url(clarify_run))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_hitl_requests_are_read_only_and_filtered_like_runs(operator: Any, make_user: Any, clarify_run: Run,
                                                            approval_run: Run) -> None:
    body = browser(operator).get(reverse("admin:hitl_hitlrequest_changelist")).content.decode()
    assert clarify_run.id in body and approval_run.id in body
    guest = staff_without_role(make_user, "gina")
    assign_perm("runs.view_run", guest, approval_run)
    body = browser(guest).get(reverse("admin:hitl_hitlrequest_changelist")).content.decode()
    assert approval_run.id in body and clarify_run.id not in body
    detail = browser(operator).get(reverse("admin:hitl_hitlrequest_change", args=[pending_of(clarify_run).id]))
    assert detail.status_code == 200 and 'name="_save"' not in detail.content.decode()


def test_capabilities_and_facets_are_browsable_read_only(support: Any) -> None:
    client = browser(support)
    capabilities = client.get(reverse("admin:flex_capabilities"))
    assert capabilities.status_code == 200
    assert "strategist.SocialPosting" in capabilities.content.decode()
    facets = client.get(reverse("admin:flex_facets"))
    assert facets.status_code == 200 and "creative_brief" in facets.content.decode()
    index = client.get(reverse("admin:index")).content.decode()
    assert reverse("admin:flex_capabilities") in index and reverse("admin:runs_run_inbox") in index
    assert client.post(reverse("admin:flex_facets")).status_code == 405


# --- ids in URLs: the admin quotes them ---------------------------------------------------

def test_the_run_list_links_to_a_run_page_whose_buttons_work(operator: Any, clarify_run: Run) -> None:
    client = browser(operator)
    listing = client.get(reverse("admin:runs_run_changelist")).content.decode()
    quoted = quote(clarify_run.id)
    assert quoted != clarify_run.id  # `_` is quoted: the bug only shows with real ids
    link = re.search(r'href="([^"]*/%s/change/[^"]*)"' % re.escape(quoted), listing)
    assert link, "the list links to the run"
    page = client.get(html.unescape(link.group(1)))
    assert page.status_code == 200 and clarify_run.id in page.content.decode()
    cancel = re.search(r'<form method="post" action="([^"]+)" id="cancel">', page.content.decode())
    assert cancel and quoted in cancel.group(1)
    done = client.post(cancel.group(1), {"reason": "from the list"}, follow=True)
    assert done.status_code == 200
    assert done.redirect_chain[-1][0] == change_url(clarify_run)
    assert any("cancelled" in m for m in messages_of(done))
    clarify_run.refresh_from_db()
    assert clarify_run.status == RunStatus.CANCELLED


def test_the_hitl_request_list_links_to_the_request_and_the_request_to_its_run(operator: Any,
                                                                               approval_run: Run) -> None:
    client = browser(operator)
    request = pending_of(approval_run)
    listing = client.get(reverse("admin:hitl_hitlrequest_changelist")).content.decode()
    link = re.search(r'href="([^"]*/%s/change/[^"]*)"' % re.escape(quote(request.id)), listing)
    assert link
    detail = client.get(html.unescape(link.group(1)))
    assert detail.status_code == 200
    body = detail.content.decode()
    assert REVIEWED_TEXT in body  # what the request asks to approve
    run_link = re.search(r'<a href="([^"]+)" class="run-link">', body)
    assert run_link and client.get(run_link.group(1)).status_code == 200


def test_the_inbox_links_to_the_run_page_and_shows_what_is_under_review(operator: Any, approval_run: Run) -> None:
    client = browser(operator)
    inbox = client.get(reverse("admin:runs_run_inbox")).content.decode()
    assert REVIEWED_TEXT in inbox
    link = re.search(r'<a href="([^"]+)#answer" class="inbox-run-link">', inbox)
    assert link and client.get(link.group(1)).status_code == 200


# --- the approval shows what it asks to approve -------------------------------------------

def test_the_approval_page_shows_the_review_redacted_and_preselects_no_answer(
        sensitive_call_to_action: None, operator: Any, submit: Any, client_user: Any) -> None:
    run = submit(client_user, "approval-required")
    body = browser(operator).get(change_url(run)).content.decode()
    form = html.unescape(body[body.index('id="answer"'):body.index("</form>", body.index('id="answer"'))])
    assert REVIEWED_TEXT in form  # the copy, in the form that asks about it
    assert '"callToAction": "[redacted]"' in form
    assert SENSITIVE_CALL_TO_ACTION not in body  # x-sensitive: nowhere on the page
    assert "checked" not in form
    # The stored review keeps the real value.
    assert pending_of(run).review["copyVariants"][0]["callToAction"] == SENSITIVE_CALL_TO_ACTION


def test_the_inbox_and_bulk_confirmation_redact_the_review(sensitive_call_to_action: None, operator: Any,
                                                           submit: Any, client_user: Any) -> None:
    run = submit(client_user, "approval-required")
    client = browser(operator)
    inbox = client.get(reverse("admin:runs_run_inbox")).content.decode()
    confirm = client.post(reverse("admin:runs_run_changelist"),
                          {"action": "approve_runs", "_selected_action": [run.id]}).content.decode()
    request = client.get(reverse("admin:hitl_hitlrequest_change", args=[quote(pending_of(run).id)])).content.decode()
    for body in (inbox, confirm, request):
        body = html.unescape(body)
        assert REVIEWED_TEXT in body and '"callToAction": "[redacted]"' in body
        assert SENSITIVE_CALL_TO_ACTION not in body


def test_an_approval_sent_without_a_choice_is_refused_naming_the_field(operator: Any, approval_run: Run) -> None:
    request = pending_of(approval_run)
    response = browser(operator).post(action_url(approval_run, "answer"), {
        "request_id": request.id, "latest_response_id": "", "mode": "resume"})
    assert response.status_code == 302
    assert messages_of(response) == ["The answer form is incomplete. [validation_failed] — answer: choose an answer."]
    approval_run.refresh_from_db()
    assert approval_run.status == RunStatus.AWAITING_HITL


def test_an_error_banner_names_the_field_that_failed(operator: Any, clarify_run: Run) -> None:
    request = pending_of(clarify_run)
    response = browser(operator).post(action_url(clarify_run, "answer"), {
        "request_id": request.id, "answer": "freeform", "text": "  ", "latest_response_id": "", "mode": "resume"})
    [message] = messages_of(response)
    assert "[validation_failed]" in message
    assert "/responses/0/freeformText: a freeform response needs text" in message


# --- the console home per role -------------------------------------------------------------

def test_the_console_home_promises_actions_only_to_roles_that_have_them(operator: Any, support: Any) -> None:
    operator_home = browser(operator).get(reverse("admin:index")).content.decode()
    support_home = browser(support).get(reverse("admin:index")).content.decode()
    assert "resume, answer, cancel" in operator_home
    assert "resume, answer, cancel" not in support_home
    assert "read-only for your role" in support_home


# --- FLEX_ENABLED=0: the console refuses what the API refuses --------------------------------

def test_with_flex_disabled_every_console_action_is_refused_with_a_clear_message(
        settings: Any, operator: Any, clarify_run: Run, approval_run: Run, paused_run: Run) -> None:
    settings.FLEX_ENABLED = False
    client = browser(operator)
    page = client.get(change_url(approval_run)).content.decode()
    assert 'id="flex-disabled"' in page and "FLEX_ENABLED=0" in page
    assert re.search(r'id="answer-submit" disabled', page)
    request = pending_of(approval_run)
    refused = [
        client.post(action_url(approval_run, "answer"), {"request_id": request.id, "answer": "approve",
                                                         "latest_response_id": "", "mode": "resume"}),
        client.post(action_url(clarify_run, "cancel"), {"reason": "x"}),
        client.post(action_url(paused_run, "resume"), {"expected_plan_version": paused_run.plan_version}),
        client.post(reverse("admin:runs_run_changelist"), {"action": "approve_runs", "post": "yes",
                                                           f"latest_{request.id}": "",
                                                           "_selected_action": [approval_run.id]}),
        client.post(reverse("admin:runs_run_changelist"), {"action": "cancel_runs",
                                                           "_selected_action": [clarify_run.id]}),
    ]
    for response in refused:
        assert response.status_code == 302
        message = messages_of(response)[-1]  # the newest (unread ones stay in the cookie)
        assert "FLEX_ENABLED=0" in message and "[flex_disabled]" in message and "Nothing was changed" in message
    for run, status in ((approval_run, RunStatus.AWAITING_HITL), (clarify_run, RunStatus.AWAITING_HITL),
                        (paused_run, RunStatus.PAUSED)):
        run.refresh_from_db()
        assert run.status == status
    assert not AuditEntry.objects.filter(action__in=["run_cancelled", "hitl_resumed", "run_resumed"]).exists()
    assert 'id="flex-disabled"' in client.get(reverse("admin:index")).content.decode()


# --- secrets in responses stay out of every console and history page ---------------------------

def test_secrets_in_responses_appear_on_no_console_or_history_page(operator: Any, approval_run: Run) -> None:
    from hitl.services import hitl_respond

    request = pending_of(approval_run)
    hitl_respond(user=operator, run_id=approval_run.id, request_id=request.id, responses=[
        {"responseType": "freeform", "freeformText": "use password=hunter2 for the CRM",
         "metadata": {"apiKey": "sk-live-778899", "note": "token=abc123xyz"}}])
    client = browser(operator)
    pages = {
        "run page": client.get(change_url(approval_run)),
        "inbox": client.get(reverse("admin:runs_run_inbox")),
        "request list": client.get(reverse("admin:hitl_hitlrequest_changelist")),
        "request page": client.get(reverse("admin:hitl_hitlrequest_change", args=[quote(request.id)])),
        "bulk confirmation": client.post(reverse("admin:runs_run_changelist"),
                                         {"action": "approve_runs", "_selected_action": [approval_run.id]}),
        "history page": client.get(reverse("run_pages:detail", args=[approval_run.id])),
    }
    for name, response in pages.items():
        body = response.content.decode()
        assert response.status_code == 200, name
        for secret in ("hunter2", "sk-live-778899", "abc123xyz"):
            assert secret not in body, (name, secret)
    assert "[redacted]" in pages["request page"].content.decode()
