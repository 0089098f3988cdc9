"""The operator console and the history pages in a real browser (Chromium via
Playwright) against a real daphne with an embedded worker."""
from __future__ import annotations

import re
from typing import Any, Callable

import pytest
from guardian.shortcuts import assign_perm

from hitl.models import HitlRequest
from runs.models import AuditEntry, Run, RunStatus
from runs.services import run_create
from tests.browser.conftest import login, screenshot
from tests.conftest import load_envelope

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT_MS = 20_000


def submit_and_wait(user: Any, name: str, drain: Callable[[], int]) -> Run:
    """A run advanced in this process until it waits for a person (before
    the browser opens: the ORM may not run beside Playwright's loop)."""
    run = run_create(user=user, envelope=load_envelope(name))
    drain()
    run.refresh_from_db()
    assert run.status == RunStatus.AWAITING_HITL, run.status
    return run


def status_of(run_id: str) -> str:
    return Run.objects.values_list("status", flat=True).get(pk=run_id)


def test_an_operator_answers_the_clarify_question_and_watches_the_timeline_complete_live(
        server: str, operator: Any, client_user: Any, drain: Any, orm: Any, chromium: Any) -> None:
    run = submit_and_wait(client_user, "clarify-audience", drain)
    browser = chromium()
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    console = context.new_page()
    login(console, server, "olivia")

    # The history page follows the run live, in a tab of its own.
    history = context.new_page()
    history.goto(f"{server}/runs/{run.id}/")
    history.wait_for_selector("#live-state:text('live')", timeout=TIMEOUT_MS)
    assert history.locator("#run-status").inner_text() == "awaiting_hitl"
    assert history.locator('g.plan-node[data-node-id="strategist"]').get_attribute("data-status") == "awaiting_hitl"

    console.goto(f"{server}/admin/runs/run/{run.id}/change/")
    assert "Who is the target audience for this post?" in console.inner_text("#answer")
    screenshot(console, "console-run-awaiting-answer")
    console.fill("#id_answer_text", "Chief risk officers at regional banks")
    console.fill("#answer input[name=note]", "confirmed with the client")
    console.click("#answer-submit")
    console.wait_for_selector(".messagelist .success", timeout=TIMEOUT_MS)
    assert "answered" in console.inner_text(".messagelist")

    # No reload: the events arrive over SSE until `complete`.
    history.bring_to_front()
    history.wait_for_selector("#timeline li.ev-complete", timeout=TIMEOUT_MS)
    assert history.locator("#run-status").inner_text() == "completed"
    assert history.locator("#live-state").inner_text() == "finished"
    assert history.locator("#timeline li.ev-hitl_resolved").count() == 1
    assert history.locator("#timeline li.ev-plan_updated").count() == 1
    assert "Chief risk officers at regional banks" in history.inner_text("#output")
    assert "Chief risk officers at regional banks" in history.inner_text("#dialogue")
    assert "resolved: answered" in history.inner_text("#dialogue")
    assert history.locator('g.plan-node[data-node-id="copywriter"]').get_attribute("data-status") == "completed"
    screenshot(history, "history-run-completed-live")

    assert orm(status_of, run.id) == RunStatus.COMPLETED
    assert orm(lambda: AuditEntry.objects.filter(run_id=run.id, action="hitl_resumed", actor=operator).count()) == 1


def test_an_operator_approves_one_run_and_cancels_another_from_the_admin(
        server: str, operator: Any, client_user: Any, drain: Any, orm: Any, chromium: Any) -> None:
    to_approve = submit_and_wait(client_user, "approval-required", drain)
    to_cancel = submit_and_wait(client_user, "clarify-audience", drain)
    page = chromium().new_page(viewport={"width": 1440, "height": 900})
    login(page, server, "olivia")

    page.set_viewport_size({"width": 1760, "height": 900})
    page.goto(f"{server}/admin/runs/run/")
    assert page.locator(f"tr:has-text('{to_approve.id}') .badge.pending").count() == 1
    screenshot(page, "console-run-list")
    page.set_viewport_size({"width": 1440, "height": 900})

    page.goto(f"{server}/admin/runs/run/{to_approve.id}/change/")
    assert page.locator("#answer input[value=approve]").is_checked()
    page.click("#answer-submit")
    page.wait_for_selector(".messagelist .success", timeout=TIMEOUT_MS)
    for _ in range(100):
        if orm(status_of, to_approve.id) == RunStatus.COMPLETED:
            break
        page.wait_for_timeout(200)
    page.reload()
    assert page.locator("#run-status").inner_text() == "completed"
    assert page.locator("#actions").count() == 0 or page.locator("#cancel").count() == 0

    page.goto(f"{server}/admin/runs/run/{to_cancel.id}/change/")
    page.fill("#cancel input[name=reason]", "the client withdrew the brief")
    page.click("#cancel-submit")
    page.wait_for_selector(".messagelist .success", timeout=TIMEOUT_MS)
    assert page.locator("#run-status").inner_text() == "cancelled"
    assert "the client withdrew the brief" in page.inner_text("#audit")
    screenshot(page, "console-run-cancelled")

    assert orm(status_of, to_cancel.id) == RunStatus.CANCELLED
    assert orm(lambda: HitlRequest.objects.get(run_id=to_cancel.id).status) == "removed"


def test_support_sees_the_same_pages_without_buttons_and_a_forged_post_is_forbidden(
        server: str, support: Any, client_user: Any, drain: Any, orm: Any, chromium: Any) -> None:
    run = submit_and_wait(client_user, "clarify-audience", drain)
    page = chromium().new_page(viewport={"width": 1440, "height": 900})
    login(page, server, "sam")

    page.goto(f"{server}/admin/runs/run/")
    assert page.locator(f"text={run.id}").count() >= 1
    assert page.locator("select[name=action]").count() == 0  # no bulk actions
    page.goto(f"{server}/admin/runs/run/{run.id}/change/")
    assert "Who is the target audience for this post?" in page.inner_text("#dialogue")
    assert page.locator("#actions, #answer, #resume, #cancel").count() == 0
    screenshot(page, "console-run-support-read-only")

    page.goto(f"{server}/runs/{run.id}/")
    page.wait_for_selector("#live-state:text('live')", timeout=TIMEOUT_MS)
    assert page.locator('g.plan-node[data-node-id="strategist"]').count() == 1
    screenshot(page, "history-run-support")

    # A forged POST with a valid session and CSRF token: refused by role.
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    forged = page.request.post(f"{server}/admin/runs/run/{run.id}/cancel/",
                               form={"reason": "forged", "csrfmiddlewaretoken": token},
                               headers={"Origin": server, "Referer": f"{server}/admin/"}, max_redirects=0)
    assert forged.status == 403
    assert "CSRF" not in forged.text()
    assert orm(status_of, run.id) == RunStatus.AWAITING_HITL


def test_a_client_granted_one_run_sees_only_that_one(
        server: str, client_user: Any, other_client: Any, drain: Any, orm: Any, chromium: Any) -> None:
    granted = submit_and_wait(other_client, "clarify-audience", drain)
    hidden = submit_and_wait(other_client, "approval-required", drain)
    assign_perm("runs.view_run", client_user, granted)
    page = chromium().new_page(viewport={"width": 1280, "height": 800})
    login(page, server, "clara", admin=False)

    assert re.search(r"/runs/$", page.url)
    rows = page.locator("tr.run-row")
    assert rows.count() == 1
    assert rows.first.get_attribute("data-run-id") == granted.id
    screenshot(page, "history-list-client")
    page.goto(f"{server}/runs/{granted.id}/")
    assert page.locator("#run-status").inner_text() == "awaiting_hitl"
    response = page.goto(f"{server}/runs/{hidden.id}/")
    assert response is not None and response.status == 404
    # The API says the same: the other run does not exist for this user.
    api = page.request.get(f"{server}/api/v1/flex/runs/{hidden.id}")
    assert api.status == 404
    # Clients are not admin staff.
    page.goto(f"{server}/admin/runs/run/")
    assert "/admin/login/" in page.url
