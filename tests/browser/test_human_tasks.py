"""Human tasks and agents' clarifications in a real browser (Chromium via
Playwright) against a real daphne with an embedded worker.

Each test starts where a person starts (the console home after logging in)
and clicks on: console home → task inbox → task → claim → the form generated
from the output facets' schema → submit; or console home → HITL inbox → run
→ answer. The agent of the clarification test is this test speaking the
agents' HTTP API to the same server."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings as django_settings

from runs.models import AuditEntry, Run, RunStatus, Task, TaskStatus
from runs.services import run_create
from tests.browser.conftest import login, screenshot
from tests.conftest import load_envelope

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT_MS = 20_000
HUMAN_CAPABILITIES = json.loads((Path(django_settings.BASE_DIR) / "examples" / "capabilities" / "human.json")
                                .read_text(encoding="utf-8"))
HUMAN_SERVER = {"FLEX_HUMAN_CAPABILITIES": json.dumps(HUMAN_CAPABILITIES)}
FINAL_TEXT = "Akkuro's real-time audit trail is live: every decision, traceable. Book a demo."


@pytest.fixture
def human_catalog(settings: Any) -> None:
    """The demo's human capability in this process too (the run is planned here)."""
    settings.FLEX_HUMAN_CAPABILITIES = HUMAN_CAPABILITIES


def open_tasks_of(run_id: str) -> list[Task]:
    return list(Task.objects.filter(run_id=run_id, status=TaskStatus.OPEN).order_by("created_at"))


def wait_for_open_task(run_id: str, drain: Any) -> Task:
    """Advance the run (here, or in the server's worker) until its human node is offered."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        drain()
        tasks = open_tasks_of(run_id)
        if tasks:
            return tasks[0]
        time.sleep(0.1)
    raise AssertionError(f"no open task for {run_id}: {Run.objects.get(pk=run_id).status}")


def wait_for_status(page: Any, orm: Any, run_id: str, status: str) -> None:
    for _ in range(150):
        if orm(lambda: Run.objects.values_list("status", flat=True).get(pk=run_id)) == status:
            return
        page.wait_for_timeout(200)
    raise AssertionError(f"{run_id} is not {status}")


def editor_field(page: Any, *coords: str) -> Any:
    """An input of django-jsonform's editor, by its coordinates in the output."""
    return page.locator(f"[name='rjf§{'§'.join(coords)}']")


@pytest.mark.parametrize("server", [HUMAN_SERVER], indirect=True)
def test_an_operator_claims_a_human_task_from_the_inbox_fills_the_generated_form_and_the_run_completes(
        server: str, human_catalog: None, operator: Any, client_user: Any, drain: Any, orm: Any,
        chromium: Any) -> None:
    run = run_create(user=client_user, envelope=load_envelope("human-task"))
    task = wait_for_open_task(run.id, drain)
    assert task.capability_id == "human.CopyEdit"

    page = chromium().new_page(viewport={"width": 1440, "height": 1000})
    login(page, server, "olivia")
    page.click("#flex-console #task-inbox-link")
    row = page.locator(f"tr.task-row[data-task-id='{task.id}']")
    assert row.get_attribute("data-status") == "open"
    assert "human.CopyEdit" in row.inner_text()
    screenshot(page, "task-inbox")
    row.locator("a.task-link").click()
    page.wait_for_selector(f"#task[data-task-id='{task.id}']")
    # The inputs are shown (the drafted post), and nothing to fill before the claim.
    assert page.locator(".task-input[data-facet='post_copy']").count() == 1
    assert page.locator("#task-form").count() == 0
    screenshot(page, "task-open")

    page.click("#task-claim")
    page.wait_for_selector(".messagelist .success", timeout=TIMEOUT_MS)
    assert "You claimed task" in page.inner_text(".messagelist")
    assert "expires in" in page.inner_text("#task-lease")
    page.wait_for_selector("#task-form .rjf-form-wrapper")  # the editor generated from final_copy's schema

    # Too short a text (the facet asks for 20 characters): a readable error
    # beside the field, what was typed is still there, the run goes on waiting.
    editor_field(page, "final_copy", "headline").fill("Audit trail, live")
    editor_field(page, "final_copy", "text").fill("Too short")
    page.click("#task-submit")
    page.wait_for_selector("#task-errors", timeout=TIMEOUT_MS)
    assert "/final_copy/text" in page.inner_text("#task-errors")
    assert "nothing was committed" in page.inner_text(".messagelist")
    assert editor_field(page, "final_copy", "text").input_value() == "Too short"
    assert editor_field(page, "final_copy", "headline").input_value() == "Audit trail, live"
    assert page.locator("#task-form .rjf-error-text, #task-form .rjf-error").count() >= 1
    screenshot(page, "task-invalid-output")
    assert orm(lambda: Run.objects.get(pk=run.id).status) != RunStatus.COMPLETED

    editor_field(page, "final_copy", "text").fill(FINAL_TEXT)
    editor_field(page, "final_copy", "readyToPublish").check()
    page.click("#task-submit")
    page.wait_for_selector(".messagelist .success", timeout=TIMEOUT_MS)
    assert "completed" in page.inner_text(".messagelist")
    wait_for_status(page, orm, run.id, RunStatus.COMPLETED)

    final = orm(lambda: Run.objects.get(pk=run.id).output)
    assert final["final_copy"]["text"] == FINAL_TEXT
    assert final["final_copy"]["readyToPublish"] is True
    # The person is the recorded actor.
    assert orm(lambda: AuditEntry.objects.filter(run_id=run.id, actor=operator).exists())
    # The run's console page linked the waiting task; the inbox no longer lists it.
    page.reload()
    assert page.locator(f"tr.task-row[data-task-id='{task.id}']").count() == 0


AGENT_CAPABILITY = {
    "capabilityId": "acme.CopyEdit", "displayName": "Copy editor (agent)", "kind": "transformation",
    "agentType": "ai", "inputFacets": ["post_copy"], "optionalInputFacets": [], "outputFacets": ["final_copy"],
    "version": "1.0.0",
}


def test_an_agent_asks_for_clarification_a_person_answers_from_the_hitl_inbox_and_the_task_comes_back_with_it(
        server: str, operator: Any, client_user: Any, make_user: Any, drain: Any, orm: Any, chromium: Any) -> None:
    from rest_framework.authtoken.models import Token

    agent_user = make_user("acme-bot", "agent")
    token = Token.objects.create(user=agent_user).key
    api = httpx.Client(base_url=server, headers={"Authorization": f"Bearer {token}"}, timeout=40)
    registered = api.post("/api/v1/flex/agents/register", json={
        "agentId": "acme-editor", "displayName": "Acme editor", "heartbeatSeconds": 300, "maxConcurrency": 1,
        "capabilities": [AGENT_CAPABILITY]})
    assert registered.status_code == 200, registered.text

    run = run_create(user=client_user, envelope=load_envelope("human-task"))
    drain()
    claimed = api.post("/api/v1/flex/agents/acme-editor/tasks/claim", json={"waitSeconds": 20})
    assert claimed.status_code == 200, claimed.text
    task = claimed.json()["task"]
    assert task["runId"] == run.id and task["bundle"]["clarifications"] == []
    asked = api.post(f"/api/v1/flex/tasks/{task['taskId']}/clarify", json={
        "leaseToken": task["leaseToken"], "question": "Which call to action should the post end with?",
        "options": [{"id": "demo", "label": "Book a demo"}, {"id": "trial", "label": "Start a trial"}],
        "allowFreeForm": True})
    assert asked.status_code in (200, 202), asked.text

    page = chromium().new_page(viewport={"width": 1440, "height": 1000})
    login(page, server, "olivia")
    page.click("#flex-console a:text-is('HITL inbox')")
    row = page.locator(f"tr.inbox-row:has(a:text-is('{run.id}'))")
    row.wait_for(timeout=TIMEOUT_MS)
    assert "Which call to action" in row.inner_text()
    row.locator("a.inbox-run-link").click()
    page.wait_for_selector(f"#run-console[data-run-id='{run.id}']")
    assert "Which call to action should the post end with?" in page.inner_text("#answer")
    assert "Book a demo" in page.inner_text("#answer")  # the agent's options are offered
    page.check("#answer input[value=freeform]")
    page.fill("#id_answer_text", "End with: book a 15-minute demo")
    page.click("#answer-submit")
    page.wait_for_selector(".messagelist .success", timeout=TIMEOUT_MS)
    screenshot(page, "clarify-answered-for-agent")

    # Offered again, with the answer in the bundle.
    again = api.post("/api/v1/flex/agents/acme-editor/tasks/claim", json={"waitSeconds": 20})
    assert again.status_code == 200, again.text
    offered = again.json()["task"]
    assert offered["nodeId"] == task["nodeId"] and offered["taskId"] != task["taskId"]
    clarifications = offered["bundle"]["clarifications"]
    assert [c["answer"] for c in clarifications] == ["End with: book a 15-minute demo"]
    assert clarifications[0]["nodeId"] == task["nodeId"]
    done = api.post(f"/api/v1/flex/tasks/{offered['taskId']}/complete", json={
        "leaseToken": offered["leaseToken"],
        "output": {"final_copy": {"text": FINAL_TEXT + " (15 minutes)", "readyToPublish": True}}})
    assert done.status_code == 200, done.text
    wait_for_status(page, orm, run.id, RunStatus.COMPLETED)
    assert orm(lambda: Run.objects.get(pk=run.id).output)["final_copy"]["text"].endswith("(15 minutes)")


@pytest.mark.parametrize("server", [HUMAN_SERVER], indirect=True)
def test_a_person_granted_the_capability_does_the_task_on_the_history_pages(
        server: str, human_catalog: None, make_user: Any, client_user: Any, drain: Any, orm: Any,
        chromium: Any) -> None:
    from django.contrib.auth.models import Group

    editor = make_user("edith", "client")  # not staff: no admin console
    editor.groups.add(Group.objects.get_or_create(name="capability:human.CopyEdit")[0])
    run = run_create(user=client_user, envelope=load_envelope("human-task"))
    task = wait_for_open_task(run.id, drain)

    page = chromium().new_page(viewport={"width": 1280, "height": 1000})
    login(page, server, "edith", admin=False)
    page.click("#nav-task-inbox")
    page.locator(f"tr.task-row[data-task-id='{task.id}'] a.task-link").click()
    page.wait_for_selector(f"#task[data-task-id='{task.id}']")
    page.click("#task-claim")
    page.wait_for_selector("#task-form .rjf-form-wrapper", timeout=TIMEOUT_MS)
    assert "You claimed task" in page.inner_text(".messagelist")
    editor_field(page, "final_copy", "text").fill(FINAL_TEXT)
    page.click("#task-form .rjf-add-button")  # "What was changed": one item
    editor_field(page, "final_copy", "changes", "0").fill("Shortened the call to action")
    editor_field(page, "final_copy", "readyToPublish").check()
    screenshot(page, "history-task-form")
    page.click("#task-submit")
    page.wait_for_selector(".messagelist .success", timeout=TIMEOUT_MS)
    wait_for_status(page, orm, run.id, RunStatus.COMPLETED)
    final = orm(lambda: Run.objects.get(pk=run.id).output)["final_copy"]
    assert final["changes"] == ["Shortened the call to action"] and final["text"] == FINAL_TEXT
    assert orm(lambda: list(AuditEntry.objects.filter(run_id=run.id, actor__username="edith")
                            .values_list("action", flat=True))) == ["task_claimed", "task_completed"]
