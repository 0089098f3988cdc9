"""A goal still unmet after its replans: a person finds its request in the
HITL inbox, reads the judged review, accepts it, and reads on the history
page the two plan versions (docs/planning.md)."""
from __future__ import annotations

from typing import Any

import pytest

from runs.models import Run, RunStatus
from runs.services import run_create
from tests.browser.conftest import login, screenshot, wait_for_person
from tests.browser.test_console import TIMEOUT_MS, wait_for_status
from tests.conftest import load_envelope

pytestmark = pytest.mark.django_db(transaction=True)


def goal_run_waiting(user: Any, drain: Any) -> Run:
    envelope = load_envelope("goal-quality")
    envelope["policies"]["planner"]["goals"][0].update(
        condition={">=": [{"var": "qa_report.score"}, 2]}, maxReplans=1)  # never met
    run = run_create(user=user, envelope=envelope)
    return wait_for_person(run, drain)


def test_an_operator_accepts_an_unmet_goal_from_the_inbox_and_reads_both_plan_versions(
        server: str, operator: Any, client_user: Any, drain: Any, orm: Any, chromium: Any) -> None:
    run = goal_run_waiting(client_user, drain)
    page = chromium().new_page(viewport={"width": 1440, "height": 900})
    login(page, server, "olivia")

    page.click("#flex-console a:text-is('HITL inbox')")
    row = page.locator(f"tr.inbox-row:has(a:text-is('{run.id}'))")
    assert "Goal quality-bar is still unmet after 1 replan(s)" in row.inner_text()
    row.locator("a.inbox-run-link").click()
    page.wait_for_selector(f"#run-console[data-run-id='{run.id}']")
    answer = page.locator("#answer")
    assert "score" in answer.locator(".review").inner_text()  # the judged qa_report
    assert page.locator("#answer input[type=radio]:checked").count() == 0
    screenshot(page, "console-goal-unmet")
    page.check("#answer input[value=approve]")
    page.click("#answer-submit")
    page.wait_for_selector(".messagelist .success", timeout=TIMEOUT_MS)
    wait_for_status(page, orm, run.id, RunStatus.COMPLETED)

    # The history page, reached from the console's run page as a person does,
    # shows both versions and their nodes.
    page.click("#history-link")
    page.wait_for_selector("#plan-version")
    page.click("summary:text-is('Plan versions')")
    versions = page.locator("details:has(summary:text-is('Plan versions')) tbody tr")
    assert versions.count() == 3  # initial, the goal replan, the resume that accepted it
    assert "replan" in versions.nth(1).inner_text() and '"kind": "goal"' in versions.nth(1).inner_text()
    assert "copywriter (copywriter.ShortformDrafting)" in versions.nth(1).inner_text()
    timeline = page.locator("body").inner_text()
    assert "goal quality-bar unmet (attempt 1)" in timeline and "goal quality-bar unmet (attempt 2)" in timeline
    screenshot(page, "history-goal-plan-versions")
