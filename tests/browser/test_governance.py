"""Governance of human decisions in a real browser (Chromium via Playwright)
against a real daphne with an embedded worker: from the console's HITL inbox
to the run page to the Answer button.

- The run's creator tries to approve their own run's approval: refused with
  a readable message, nothing recorded.
- Two operators approve a two-person request: after the first the page says
  1 of 2 and who approved; after the second the request is resolved and the
  run completes.
"""
from __future__ import annotations

from typing import Any, Callable

import pytest

from hitl.models import HitlRequest
from runs.models import Run, RunStatus
from runs.services import run_create
from tests.browser.conftest import login, screenshot, wait_for_person
from tests.conftest import load_envelope

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT_MS = 20_000


def governed_run(user: Any, drain: Callable[[], int], **rules: Any) -> Run:
    envelope = load_envelope("approval-required")
    envelope["policies"]["runtime"][0]["action"].update({"allowSelfApproval": False, **rules})
    run = run_create(user=user, envelope=envelope)
    return wait_for_person(run, drain)


def open_from_inbox(page: Any, run_id: str) -> None:
    """From the admin index (where the login lands): HITL inbox → the run's row → its run page."""
    page.click("#flex-console a:text-is('HITL inbox')")
    page.locator(f"tr.inbox-row:has(a:text-is('{run_id}')) a.inbox-run-link").click()
    page.wait_for_selector(f"#run-console[data-run-id='{run_id}']")


def approve(page: Any) -> None:
    page.check("#answer input[value=approve]")
    page.click("#answer-submit")
    page.wait_for_selector(".messagelist li", timeout=TIMEOUT_MS)


def test_two_operators_approve_a_two_person_request_and_the_creator_is_refused(
        server: str, make_user: Any, operator: Any, drain: Any, orm: Any, chromium: Any) -> None:
    make_user("ana", "operator")
    make_user("bob", "operator")
    run = governed_run(operator, drain, requiredApprovals=2)  # olivia (the operator) created it
    browser = chromium()

    # The creator's own approval: refused, readable, nothing recorded.
    olivia = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
    login(olivia, server, "olivia")
    open_from_inbox(olivia, run.id)
    assert "0 of 2" in olivia.inner_text("#answer .approvals")
    approve(olivia)
    refusal = olivia.inner_text(".messagelist .error")
    assert "You created this run, so you may not approve its approval request; someone else must." in refusal
    screenshot(olivia, "governance-self-approval-refused")
    assert orm(lambda: HitlRequest.objects.get(run_id=run.id).responses.count()) == 0

    # Ana approves first: 1 of 2, her name, one more needed; the run still waits.
    ana = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
    login(ana, server, "ana")
    open_from_inbox(ana, run.id)
    approve(ana)
    assert "1 of 2 approvals; the run waits for 1 more" in ana.inner_text(".messagelist .success")
    approvals = ana.inner_text("#answer .approvals")
    assert "1 of 2" in approvals and "ana" in approvals and "1 more needed" in approvals
    screenshot(ana, "governance-one-of-two")
    assert orm(lambda: Run.objects.get(pk=run.id).status) == RunStatus.AWAITING_HITL

    # Bob, from his inbox, sees the one approval and gives the second: resolved.
    bob = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
    login(bob, server, "bob")
    bob.click("#flex-console a:text-is('HITL inbox')")
    row = bob.locator(f"tr.inbox-row:has(a:text-is('{run.id}'))")
    assert "1 of 2" in row.inner_text()
    row.locator("a.inbox-run-link").click()
    bob.wait_for_selector(f"#run-console[data-run-id='{run.id}']")
    approve(bob)
    assert "answered; run" in bob.inner_text(".messagelist .success")
    for _ in range(100):
        if orm(lambda: Run.objects.get(pk=run.id).status) == RunStatus.COMPLETED:
            break
        bob.wait_for_timeout(200)
    bob.reload()
    assert bob.inner_text("#run-status") == "completed"
    assert bob.locator("#answer").count() == 0
    dialogue = bob.inner_text("#dialogue")
    assert "resolved: approved" in dialogue and "2 of 2" in dialogue and "ana, bob" in dialogue
    screenshot(bob, "governance-two-of-two-resolved")
