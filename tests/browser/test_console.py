"""The operator console and the history pages in a real browser (Chromium via
Playwright) against a real daphne with an embedded worker.

Every test starts where a person starts (the admin index after logging in,
or the history list) and clicks its way on: list → row link → button. Only
the start page is typed. The admin quotes ids in its URLs (`run_01a…` →
`run_5F01a…`), so these clicks go through the same URLs people use."""
from __future__ import annotations

import re
import time
from typing import Any, Callable

import pytest
from guardian.shortcuts import assign_perm

from hitl.models import HitlRequest
from runs.models import AuditEntry, Run, RunStatus
from runs.services import run_create
from tests.browser.conftest import login, screenshot, wait_for_person
from tests.conftest import load_envelope

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT_MS = 20_000
REVIEWED_TEXT = "Today we are proud to announce it"
PAUSE_ON_START = {"id": "hold", "trigger": {"kind": "onStart"}, "action": {"type": "pause", "reason": "hold it"}}


def submit_and_wait(user: Any, name: str, drain: Callable[[], int]) -> Run:
    """A run advanced in this process until it waits for a person (before
    the browser opens: the ORM may not run beside Playwright's loop)."""
    run = run_create(user=user, envelope=load_envelope(name))
    # The server's embedded worker may claim the run before drain() does;
    # then it is that worker that brings it to the person.
    return wait_for_person(run, drain)


def status_of(run_id: str) -> str:
    return Run.objects.values_list("status", flat=True).get(pk=run_id)


def wait_for_status(page: Any, orm: Any, run_id: str, status: str) -> None:
    for _ in range(100):
        if orm(status_of, run_id) == status:
            return
        page.wait_for_timeout(200)
    raise AssertionError(f"{run_id} is {orm(status_of, run_id)}, not {status}")


def open_run_list(page: Any) -> None:
    """From the admin index (where the login lands): the console's Runs link."""
    assert page.locator("#flex-console").count() == 1, page.url
    page.click("#flex-console a:text-is('Runs')")
    page.wait_for_selector("#result_list")


def open_run_from_list(page: Any, run_id: str) -> None:
    page.click(f"#result_list a:text-is('{run_id}')")
    page.wait_for_selector(f"#run-console[data-run-id='{run_id}']")
    assert "Not found" not in page.inner_text("body")


def open_history_from_list(page: Any, run_id: str) -> None:
    page.click(f"tr.run-row[data-run-id='{run_id}'] a")
    page.wait_for_selector("#run-status")


def test_an_operator_answers_the_clarify_question_and_watches_the_timeline_complete_live(
        server: str, operator: Any, client_user: Any, drain: Any, orm: Any, chromium: Any) -> None:
    run = submit_and_wait(client_user, "clarify-audience", drain)
    browser = chromium()
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    console = context.new_page()
    login(console, server, "olivia")

    # The history page follows the run live, in a tab of its own, opened from its list.
    history = context.new_page()
    history.goto(f"{server}/runs/")
    open_history_from_list(history, run.id)
    history.wait_for_selector("#live-state:text('live')", timeout=TIMEOUT_MS)
    assert history.locator("#run-status").inner_text() == "awaiting_hitl"
    assert history.locator('g.plan-node[data-node-id="strategist"]').get_attribute("data-status") == "awaiting_hitl"
    updated_before = history.locator("#run-updated").inner_text()

    open_run_list(console)
    open_run_from_list(console, run.id)
    assert "Who is the target audience for this post?" in console.inner_text("#answer")
    screenshot(console, "console-run-awaiting-answer")
    console.fill("#id_answer_text", "Chief risk officers at regional banks")
    console.fill("#answer input[name=note]", "confirmed with the client")
    console.click("#answer-submit")
    console.wait_for_selector(".messagelist .success", timeout=TIMEOUT_MS)
    assert "answered" in console.inner_text(".messagelist")
    assert f"/{run.id}/" not in console.url and "/change/" in console.url  # back on the (quoted) run page

    # No reload: the events arrive over SSE until `complete`, "Updated" with them.
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
    complete_at = history.locator("#timeline li.ev-complete time").inner_text()
    updated_after = history.locator("#run-updated").inner_text()
    assert updated_after > updated_before and updated_after.endswith(complete_at)
    screenshot(history, "history-run-completed-live")

    assert orm(status_of, run.id) == RunStatus.COMPLETED
    assert orm(lambda: AuditEntry.objects.filter(run_id=run.id, action="hitl_resumed", actor=operator).count()) == 1


def test_a_request_raised_while_the_history_page_is_open_appears_with_its_review(
        server: str, operator: Any, client_user: Any, drain: Any, orm: Any, chromium: Any) -> None:
    envelope = load_envelope("approval-required")
    envelope["policies"]["runtime"].insert(0, PAUSE_ON_START)
    run = run_create(user=client_user, envelope=envelope)
    # The server's embedded worker may claim the run before drain() does.
    deadline = time.monotonic() + 30
    while True:
        drain()
        run.refresh_from_db()
        if run.status == RunStatus.PAUSED or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert run.status == RunStatus.PAUSED, run.status
    context = chromium().new_context(viewport={"width": 1440, "height": 900})
    console = context.new_page()
    login(console, server, "olivia")
    history = context.new_page()
    history.goto(f"{server}/runs/")
    open_history_from_list(history, run.id)
    history.wait_for_selector("#live-state:text('live')", timeout=TIMEOUT_MS)
    assert history.locator("#dialogue .hitl-request").count() == 0

    open_run_list(console)
    open_run_from_list(console, run.id)
    console.click("#resume-submit")
    console.wait_for_selector(".messagelist .success", timeout=TIMEOUT_MS)

    history.bring_to_front()
    history.wait_for_selector("#dialogue .hitl-request .review", timeout=TIMEOUT_MS)
    box = history.locator("#dialogue .hitl-request")
    assert "Approve the output of copywriter" in box.inner_text()
    assert REVIEWED_TEXT in box.locator(".review").inner_text()
    assert history.locator("#run-status").inner_text() == "awaiting_hitl"
    screenshot(history, "history-approval-arrives-live")


def test_an_operator_reads_the_copy_under_review_from_the_inbox_and_approves_it(
        server: str, operator: Any, client_user: Any, drain: Any, orm: Any, chromium: Any) -> None:
    run = submit_and_wait(client_user, "approval-required", drain)
    page = chromium().new_page(viewport={"width": 1440, "height": 900})
    login(page, server, "olivia")

    page.click("#flex-console a:text-is('HITL inbox')")
    row = page.locator(f"tr.inbox-row:has(a:text-is('{run.id}'))")
    assert REVIEWED_TEXT in row.inner_text()
    row.locator("a.inbox-run-link").click()
    page.wait_for_selector(f"#run-console[data-run-id='{run.id}']")

    answer = page.locator("#answer")
    assert "Approve the output of copywriter" in answer.inner_text()
    assert REVIEWED_TEXT in answer.locator(".review").inner_text()
    assert page.locator("#answer input[type=radio]:checked").count() == 0  # nothing pre-selected
    screenshot(page, "console-approval-under-review")
    # Sending without choosing is stopped by the form; choosing Approve goes through.
    page.click("#answer-submit")
    assert page.locator(".messagelist").count() == 0
    page.check("#answer input[value=approve]")
    page.click("#answer-submit")
    page.wait_for_selector(".messagelist .success", timeout=TIMEOUT_MS)
    wait_for_status(page, orm, run.id, RunStatus.COMPLETED)
    page.reload()
    assert page.locator("#run-status").inner_text() == "completed"
    assert page.locator("#answer, #cancel").count() == 0


def test_an_operator_bulk_approves_from_the_list_after_reading_each_review_and_cancels_a_run(
        server: str, operator: Any, client_user: Any, drain: Any, orm: Any, chromium: Any) -> None:
    to_approve = submit_and_wait(client_user, "approval-required", drain)
    to_cancel = submit_and_wait(client_user, "clarify-audience", drain)
    page = chromium().new_page(viewport={"width": 1440, "height": 900})
    login(page, server, "olivia")

    open_run_list(page)
    assert page.locator(f"tr:has-text('{to_approve.id}') .badge.pending").count() == 1
    page.check(f"input[name=_selected_action][value='{to_approve.id}']")
    page.select_option("select[name=action]", "approve_runs")
    page.click("button[name=index]")
    page.wait_for_selector("#approve-confirm")
    request = page.locator(".hitl-request")
    assert request.count() == 1
    assert "Approve the output of copywriter" in request.inner_text()
    assert REVIEWED_TEXT in request.locator(".review").inner_text()
    screenshot(page, "console-bulk-approve-confirmation")
    assert orm(status_of, to_approve.id) == RunStatus.AWAITING_HITL
    page.click("#approve-confirm-submit")
    page.wait_for_selector(".messagelist .success", timeout=TIMEOUT_MS)
    assert "Approved 1 request(s)." in page.inner_text(".messagelist")
    wait_for_status(page, orm, to_approve.id, RunStatus.COMPLETED)

    open_run_from_list(page, to_cancel.id)
    page.fill("#cancel input[name=reason]", "the client withdrew the brief")
    page.click("#cancel-submit")
    page.wait_for_selector(".messagelist .success", timeout=TIMEOUT_MS)
    assert page.locator("#run-status").inner_text() == "cancelled"
    assert "the client withdrew the brief" in page.inner_text("#audit")
    screenshot(page, "console-run-cancelled")

    assert orm(status_of, to_cancel.id) == RunStatus.CANCELLED
    assert orm(lambda: HitlRequest.objects.get(run_id=to_cancel.id).status) == "removed"


def test_the_hitl_request_list_opens_a_request_with_its_review_and_links_to_its_run(
        server: str, operator: Any, client_user: Any, drain: Any, orm: Any, chromium: Any) -> None:
    run = submit_and_wait(client_user, "approval-required", drain)
    request_id = orm(lambda: HitlRequest.objects.get(run_id=run.id).id)
    page = chromium().new_page(viewport={"width": 1440, "height": 900})
    login(page, server, "olivia")

    page.click("#content-main a:text-is('Hitl requests')")
    page.wait_for_selector("#result_list")
    page.click(f"#result_list a:text-is('{request_id}')")
    page.wait_for_selector("#content-main .field-under_review")
    assert "Not found" not in page.inner_text("body")
    assert REVIEWED_TEXT in page.inner_text(".field-under_review")
    page.click("a.run-link")
    page.wait_for_selector(f"#run-console[data-run-id='{run.id}']")
    assert REVIEWED_TEXT in page.inner_text("#answer")


def test_capabilities_and_facets_open_from_the_console_home(server: str, support: Any, chromium: Any) -> None:
    page = chromium().new_page(viewport={"width": 1440, "height": 900})
    login(page, server, "sam")
    page.click("#flex-console a:text-is('Capabilities')")
    assert page.locator("#capabilities code:text-is('strategist.SocialPosting')").count() == 1
    page.click(".breadcrumbs a:text-is('Home')")
    page.click("#flex-console a:text-is('Facets')")
    assert page.locator("#facets code:text-is('creative_brief')").count() == 1


def test_support_sees_the_same_pages_without_buttons_and_a_forged_post_is_forbidden(
        server: str, support: Any, client_user: Any, drain: Any, orm: Any, chromium: Any) -> None:
    run = submit_and_wait(client_user, "clarify-audience", drain)
    page = chromium().new_page(viewport={"width": 1440, "height": 900})
    login(page, server, "sam")

    home = page.inner_text("#flex-console")
    assert "resume, answer, cancel" not in home and "read-only for your role" in home
    open_run_list(page)
    assert page.locator("select[name=action]").count() == 0  # no bulk actions
    open_run_from_list(page, run.id)
    assert "Who is the target audience for this post?" in page.inner_text("#dialogue")
    assert page.locator("#actions, #answer, #resume, #cancel").count() == 0
    screenshot(page, "console-run-support-read-only")

    page.click("#history-link")
    page.wait_for_selector("#live-state:text('live')", timeout=TIMEOUT_MS)
    assert page.locator('g.plan-node[data-node-id="strategist"]').count() == 1
    screenshot(page, "history-run-support")

    # A forged POST with a valid session and CSRF token: refused by role.
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    page.go_back()  # to the run page: its cancel URL is the one an operator's button posts to
    cancel_url = page.url.split("#")[0].replace("/change/", "/cancel/")
    forged = page.request.post(cancel_url, form={"reason": "forged", "csrfmiddlewaretoken": token},
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
    open_history_from_list(page, granted.id)
    assert page.locator("#run-status").inner_text() == "awaiting_hitl"
    # Typed on purpose: a run the list does not offer does not exist for this user.
    response = page.goto(f"{server}/runs/{hidden.id}/")
    assert response is not None and response.status == 404
    api = page.request.get(f"{server}/api/v1/flex/runs/{hidden.id}")
    assert api.status == 404
    # Clients are not admin staff.
    page.goto(f"{server}/admin/runs/run/")
    assert "/admin/login/" in page.url


def test_the_run_list_shows_every_column_at_1400_pixels(
        server: str, operator: Any, client_user: Any, drain: Any, chromium: Any) -> None:
    run = submit_and_wait(client_user, "approval-required", drain)
    page = chromium().new_page(viewport={"width": 1400, "height": 900})
    login(page, server, "olivia")
    open_run_list(page)
    screenshot(page, "console-run-list-1400")
    row = page.locator(f"#result_list tr:has(a:text-is('{run.id}'))")
    # The table scrolls inside `.results`: a column is cut off when it lies
    # beyond that box's right edge, whatever the window's width.
    results = page.locator("#changelist .results").bounding_box()
    assert results is not None and results["x"] + results["width"] <= 1400
    for column in ("id", "status_badge", "objective_short", "plan_version", "pending_request", "creator",
                   "created", "updated"):
        box = row.locator(f".field-{column}").bounding_box()
        assert box is not None, column
        assert box["x"] >= results["x"] and box["x"] + box["width"] <= results["x"] + results["width"] + 0.5, \
            (column, box, results)
    assert page.evaluate("(() => { const r = document.querySelector('#changelist .results');"
                         " return r.scrollWidth <= r.clientWidth; })()")


@pytest.mark.parametrize("server", [{"FLEX_ENABLED": "0"}], indirect=True)
def test_with_flex_disabled_the_console_refuses_actions_with_a_clear_message(
        server: str, operator: Any, client_user: Any, drain: Any, orm: Any, chromium: Any) -> None:
    run = submit_and_wait(client_user, "clarify-audience", drain)
    page = chromium().new_page(viewport={"width": 1440, "height": 900})
    login(page, server, "olivia")

    assert "FLEX_ENABLED=0" in page.inner_text("#flex-console")
    open_run_list(page)
    page.check(f"input[name=_selected_action][value='{run.id}']")
    page.select_option("select[name=action]", "cancel_runs")
    page.click("button[name=index]")
    page.wait_for_selector(".messagelist .error", timeout=TIMEOUT_MS)
    assert "The flex API is disabled on this server (FLEX_ENABLED=0)" in page.inner_text(".messagelist")

    open_run_from_list(page, run.id)
    assert "FLEX_ENABLED=0" in page.inner_text("#flex-disabled")
    for button in ("#answer-submit", "#respond-submit", "#cancel-submit"):
        assert page.locator(button).is_disabled(), button
    screenshot(page, "console-run-flex-disabled")
    page.click("#history-link")
    page.wait_for_selector("#run-status")
    assert "FLEX_ENABLED=0" in page.inner_text("#flex-disabled")
    assert orm(status_of, run.id) == RunStatus.AWAITING_HITL
