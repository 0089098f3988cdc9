"""Human tasks for people: the task inbox and the task page, in the console
(/admin/runs/run/tasks/) and on the history pages (/runs/tasks/).

A run of `examples/envelopes/human-task.json` is advanced by the engine until
its `human.CopyEdit` node is offered as a task; then people look, claim and
submit through the pages, and the run goes on through the same task services
as the agents' API."""
from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from runs.models import AuditEntry, Run, RunStatus, Task, TaskStatus
from runs.services import run_create
from tests.conftest import load_envelope

pytestmark = pytest.mark.django_db

HUMAN_CAPABILITIES = json.loads((Path(django_settings.BASE_DIR) / "examples" / "capabilities" / "human.json")
                                .read_text(encoding="utf-8"))
GOOD_TEXT = "Akkuro's real-time audit trail is live: every decision, traceable. Book a demo."
PAGES = "/runs/tasks/"
CONSOLE = "/admin/runs/run/tasks/"


@pytest.fixture
def human_catalog(settings: Any) -> None:
    settings.FLEX_HUMAN_CAPABILITIES = HUMAN_CAPABILITIES


@pytest.fixture
def task(human_catalog: None, client_user: Any, drain: Any) -> Task:
    """A run of human-task.json waiting on its human node (an open task)."""
    run = run_create(user=client_user, envelope=load_envelope("human-task"))
    for _ in range(20):
        drain()
        found = Task.objects.filter(run_id=run.id, status=TaskStatus.OPEN).first()
        if found is not None:
            return found
    raise AssertionError(f"no open task: run {Run.objects.get(pk=run.id).status}")


@pytest.fixture
def editor(make_user: Any) -> Any:
    """A client granted human.CopyEdit (the group `capability:human.CopyEdit`), not staff."""
    user = make_user("edith", "client")
    user.groups.add(Group.objects.get_or_create(name="capability:human.CopyEdit")[0])
    return user


@pytest.fixture
def stranger_editor(make_user: Any) -> Any:
    """Granted another human capability only."""
    user = make_user("gus", "client")
    user.groups.add(Group.objects.get_or_create(name="capability:human.Legal")[0])
    return user


def browser(user: Any | None) -> Client:
    c = Client()
    if user is not None:
        c.force_login(user)
    return c


def task_url(base: str, task: Task) -> str:
    return f"{base}{task.id}/"


def output_post(task: Task, value: dict[str, Any]) -> dict[str, str]:
    return {"output": json.dumps(value), "lease_token": Task.objects.get(pk=task.pk).lease_token}


# --- who sees what ---------------------------------------------------------------------

def test_anonymous_people_are_sent_to_log_in(task: Task) -> None:
    anonymous = browser(None)
    for url in (PAGES, task_url(PAGES, task)):
        response = anonymous.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    for url in (CONSOLE, task_url(CONSOLE, task)):
        response = anonymous.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    response = anonymous.post(f"{task_url(PAGES, task)}claim/")
    assert response.status_code == 302
    assert Task.objects.get(pk=task.pk).status == TaskStatus.OPEN


def test_a_client_without_a_grant_has_no_inbox(task: Task, client_user: Any) -> None:
    c = browser(client_user)
    assert c.get(PAGES).status_code == 403
    assert c.get(task_url(PAGES, task)).status_code == 403
    assert c.post(f"{task_url(PAGES, task)}claim/").status_code == 403
    assert c.get(CONSOLE).status_code == 302  # not staff: the admin asks to log in
    assert "nav-task-inbox" not in c.get("/runs/").content.decode()
    assert Task.objects.get(pk=task.pk).status == TaskStatus.OPEN


def test_support_reads_the_inbox_and_the_task_and_cannot_claim(task: Task, support: Any) -> None:
    c = browser(support)
    for base in (PAGES, CONSOLE):
        inbox = c.get(base).content.decode()
        assert f'data-task-id="{task.id}"' in inbox and "(read-only)" in inbox
        page = c.get(task_url(base, task)).content.decode()
        assert 'id="task-read-only"' in page and 'id="task-claim"' not in page
        assert c.post(f"{task_url(base, task)}claim/").status_code == 403
    assert 'id="task-inbox-link"' in c.get("/admin/").content.decode()
    assert Task.objects.get(pk=task.pk).status == TaskStatus.OPEN


def test_an_operator_finds_the_inbox_from_the_console_home_and_may_claim(task: Task, operator: Any) -> None:
    c = browser(operator)
    home = c.get("/admin/").content.decode()
    assert f'href="{CONSOLE}"' in home and 'id="task-inbox-link"' in home
    for base in (CONSOLE, PAGES):
        inbox = c.get(base).content.decode()
        assert f'href="{task_url(base, task)}"' in inbox
        page = c.get(task_url(base, task)).content.decode()
        assert 'id="task-claim"' in page
        assert "Final copy" in page and 'data-facet="post_copy"' in page  # what it produces, what it reads


def test_a_granted_person_acts_on_the_history_pages_and_only_on_their_capability(
        task: Task, editor: Any, stranger_editor: Any) -> None:
    c = browser(editor)
    assert 'id="nav-task-inbox"' in c.get("/runs/").content.decode()
    assert f'data-task-id="{task.id}"' in c.get(PAGES).content.decode()
    assert 'id="task-claim"' in c.get(task_url(PAGES, task)).content.decode()
    assert c.get(CONSOLE).status_code == 302  # not staff: the history pages are theirs
    other = browser(stranger_editor)
    assert other.get(PAGES).status_code == 200
    assert f'data-task-id="{task.id}"' not in other.get(PAGES).content.decode()
    assert other.get(task_url(PAGES, task)).status_code == 404
    assert other.post(f"{task_url(PAGES, task)}claim/").status_code == 404
    assert Task.objects.get(pk=task.pk).status == TaskStatus.OPEN


def test_an_unknown_task_is_404(task: Task, operator: Any) -> None:
    c = browser(operator)
    assert c.get(f"{PAGES}task_nope/").status_code == 404
    assert c.get(f"{CONSOLE}task_nope/").status_code == 404


# --- doing the task ----------------------------------------------------------------------

def test_a_granted_person_claims_submits_an_invalid_output_then_a_valid_one_and_the_run_completes(
        task: Task, editor: Any, drain: Any) -> None:
    c = browser(editor)
    claimed = c.post(f"{task_url(PAGES, task)}claim/", follow=True)
    assert "You claimed task" in claimed.content.decode()
    held = Task.objects.get(pk=task.pk)
    assert held.status == TaskStatus.CLAIMED and held.claimed_by == editor and held.agent_id == ""
    page = claimed.content.decode()
    assert 'id="task-form"' in page and "expires in" in page
    assert c.get(f"{PAGES}?status=mine").content.decode().count('class="task-row task-mine"') == 1

    # Too short: the API's contract check, the attempt counted, the task offered
    # again and held by the same person, what was typed kept, errors beside the field.
    typed = {"final_copy": {"headline": "Live", "text": "Too short", "readyToPublish": True}}
    invalid = c.post(f"{task_url(PAGES, task)}complete/", output_post(task, typed))
    assert invalid.status_code == 422
    body = invalid.content.decode()
    assert "/final_copy/text" in body and "nothing was committed" in body
    assert "Too short" in body
    assert Task.objects.get(pk=task.pk).status == TaskStatus.INVALID
    again = Task.objects.get(run_id=task.run_id, status=TaskStatus.CLAIMED)
    assert again.attempt == task.attempt + 1 and again.claimed_by == editor
    assert f'data-task-id="{again.id}"' in body and again.lease_token in body

    good = {"final_copy": {"headline": "Live", "text": GOOD_TEXT, "readyToPublish": True}}
    done = c.post(f"{task_url(PAGES, again)}complete/", output_post(again, good))
    assert done.status_code == 302 and done["Location"] == PAGES
    for _ in range(20):
        drain()
        run = Run.objects.get(pk=task.run_id)
        if run.is_terminal:
            break
    assert run.status == RunStatus.COMPLETED, run.error
    assert run.output["final_copy"]["text"] == GOOD_TEXT
    assert list(AuditEntry.objects.filter(run=run, actor=editor).values_list("action", flat=True)) == [
        "task_claimed", "task_output_invalid", "task_claimed", "task_completed"]


def test_a_lost_lease_is_a_readable_message_and_commits_nothing(task: Task, operator: Any) -> None:
    c = browser(operator)
    c.post(f"{task_url(CONSOLE, task)}claim/")
    posted = output_post(task, {"final_copy": {"text": GOOD_TEXT, "readyToPublish": True}})
    Task.objects.filter(pk=task.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    response = c.post(f"{task_url(CONSOLE, task)}complete/", posted, follow=True)
    assert "Your claim on this task has ended" in response.content.decode()
    assert Run.objects.get(pk=task.run_id).output is None
    assert Task.objects.get(pk=task.pk).status == TaskStatus.CLAIMED  # the sweep takes it back, not the page


def test_a_person_extends_their_lease(task: Task, operator: Any) -> None:
    c = browser(operator)
    c.post(f"{task_url(CONSOLE, task)}claim/")
    held = Task.objects.get(pk=task.pk)
    Task.objects.filter(pk=task.pk).update(lease_expires_at=timezone.now() + timedelta(seconds=5))
    response = c.post(f"{task_url(CONSOLE, task)}extend/", {"lease_token": held.lease_token}, follow=True)
    assert "was extended" in response.content.decode()
    assert Task.objects.get(pk=task.pk).lease_expires_at > timezone.now() + timedelta(seconds=30)


def test_someone_elses_claim_is_shown_and_cannot_be_submitted(task: Task, operator: Any, editor: Any) -> None:
    browser(editor).post(f"{task_url(PAGES, task)}claim/")
    c = browser(operator)
    page = c.get(task_url(CONSOLE, task)).content.decode()
    assert 'id="task-taken"' in page and "edith" in page and 'id="task-form"' not in page
    stolen = c.post(f"{task_url(CONSOLE, task)}complete/",
                    {"output": json.dumps({"final_copy": {"text": GOOD_TEXT, "readyToPublish": True}}),
                     "lease_token": "guess"}, follow=True)
    assert "Your claim on this task has ended" in stolen.content.decode()
    assert Task.objects.get(pk=task.pk).claimed_by == editor


def test_flex_user_grants_a_human_capability(db: None, human_catalog: None) -> None:
    call_command("flex_user", "carla", "--role", "client", "--capability", "human.CopyEdit", stdout=open("/dev/null", "w"))
    from django.contrib.auth import get_user_model
    user = get_user_model().objects.get(username="carla")
    assert list(user.groups.filter(name__startswith="capability:").values_list("name", flat=True)) == [
        "capability:human.CopyEdit"]


def test_the_inbox_query_count_does_not_grow_with_tasks(task: Task, operator: Any, client_user: Any, drain: Any,
                                                         django_assert_max_num_queries: Any) -> None:
    c = browser(operator)
    c.get(CONSOLE)
    with django_assert_max_num_queries(20) as one:
        c.get(PAGES)
    for _ in range(3):
        run_create(user=client_user, envelope=load_envelope("human-task"))
    for _ in range(30):
        drain()
    assert Task.objects.filter(status=TaskStatus.OPEN).count() >= 3
    with django_assert_max_num_queries(len(one.captured_queries)):
        body = c.get(PAGES).content.decode()
    assert len(re.findall(r'class="task-row', body)) >= 3


def test_with_the_flex_flag_off_tasks_are_read_not_claimed(task: Task, operator: Any, settings: Any) -> None:
    settings.FLEX_ENABLED = False
    c = browser(operator)
    page = c.get(task_url(CONSOLE, task)).content.decode()
    assert 'id="flex-disabled"' in page and 'id="task-claim"' not in page
    response = c.post(f"{task_url(CONSOLE, task)}claim/", follow=True)
    assert "FLEX_ENABLED=0" in response.content.decode()
    assert Task.objects.get(pk=task.pk).status == TaskStatus.OPEN


def test_the_person_is_the_recorded_actor(task: Task, operator: Any) -> None:
    c = browser(operator)
    c.post(f"{task_url(CONSOLE, task)}claim/")
    held = Task.objects.get(pk=task.pk)
    c.post(f"{task_url(CONSOLE, task)}complete/",
           {"output": json.dumps({"final_copy": {"text": GOOD_TEXT, "readyToPublish": True}}),
            "lease_token": held.lease_token})
    actions = list(AuditEntry.objects.filter(run_id=task.run_id, actor=operator).values_list("action", flat=True))
    assert actions == ["task_claimed", "task_completed"]
    start = Run.objects.get(pk=task.run_id).events.filter(type="node_start", node_id=held.node_id).last()
    assert start.payload.get("claimedBy") == "olivia"


AGENT_CAPABILITY = {
    "capabilityId": "acme.CopyEdit", "displayName": "Copy editor (agent)", "kind": "transformation",
    "agentType": "ai", "inputFacets": ["post_copy"], "optionalInputFacets": [], "outputFacets": ["final_copy"],
    "version": "1.0.0",
}


@pytest.mark.django_db(transaction=True)
def test_a_clarification_asked_by_an_agent_is_answered_with_the_console_form_and_the_task_comes_back_with_it(
        api_for: Any, make_user: Any, operator: Any, client_user: Any, drain: Any) -> None:
    from django.contrib.admin.utils import quote

    agent = api_for(make_user("acme-bot", "agent"))
    assert agent.post("/api/v1/flex/agents/register", {
        "agentId": "acme-editor", "heartbeatSeconds": 300, "maxConcurrency": 1,
        "capabilities": [AGENT_CAPABILITY]}, format="json").status_code == 200
    run = run_create(user=client_user, envelope=load_envelope("human-task"))
    drain()
    task = agent.post("/api/v1/flex/agents/acme-editor/tasks/claim", {"waitSeconds": 0}, format="json").json()["task"]
    asked = agent.post(f"/api/v1/flex/tasks/{task['taskId']}/clarify", {
        "leaseToken": task["leaseToken"], "question": "Which call to action?", "allowFreeForm": True}, format="json")
    assert asked.status_code == 200, asked.content
    request_id = asked.json()["requestId"]
    from hitl.models import HitlRequest
    assert HitlRequest.objects.get(pk=request_id).pending_node_id == task["nodeId"]

    console = browser(operator)
    inbox = console.get("/admin/runs/run/inbox/").content.decode()
    assert "Which call to action?" in inbox and quote(run.id) in inbox
    answered = console.post(f"/admin/runs/run/{quote(run.id)}/answer/", {
        "request_id": request_id, "answer": "freeform", "text": "Book a 15-minute demo", "mode": "resume"},
        follow=True)
    assert "answered" in answered.content.decode()
    drain()
    again = agent.post("/api/v1/flex/agents/acme-editor/tasks/claim", {"waitSeconds": 0}, format="json")
    assert again.status_code == 200, again.content
    offered = again.json()["task"]
    assert offered["nodeId"] == task["nodeId"] and offered["attempt"] > task["attempt"]
    assert [(c["question"], c["answer"]) for c in offered["bundle"]["clarifications"]] == [
        ("Which call to action?", "Book a 15-minute demo")]
    done = agent.post(f"/api/v1/flex/tasks/{offered['taskId']}/complete", {
        "leaseToken": offered["leaseToken"],
        "output": {"final_copy": {"text": GOOD_TEXT, "readyToPublish": True}}}, format="json")
    assert done.status_code == 200, done.content
    for _ in range(10):
        drain()
    assert Run.objects.get(pk=run.id).status == RunStatus.COMPLETED


def test_the_run_page_in_the_console_links_its_waiting_task(task: Task, operator: Any) -> None:
    from django.contrib.admin.utils import quote

    page = browser(operator).get(f"/admin/runs/run/{quote(task.run_id)}/change/").content.decode()
    assert 'id="run-tasks"' in page and f'href="{task_url(CONSOLE, task)}"' in page


def test_an_invalid_output_after_the_last_attempt_sends_the_person_to_the_run_waiting_for_a_decision(
        human_catalog: None, client_user: Any, operator: Any, drain: Any) -> None:
    from hitl.models import HitlRequest

    envelope = load_envelope("human-task")
    envelope["constraints"] = {"maxRetries": 0}
    run = run_create(user=client_user, envelope=envelope)
    for _ in range(20):
        drain()
        task = Task.objects.filter(run_id=run.id, status=TaskStatus.OPEN).first()
        if task is not None:
            break
    c = browser(operator)
    c.post(f"{task_url(CONSOLE, task)}claim/")
    response = c.post(f"{task_url(CONSOLE, task)}complete/",
                      output_post(task, {"final_copy": {"text": "Too short", "readyToPublish": True}}))
    assert response.status_code == 302 and "/admin/runs/run/" in response["Location"]
    shown = c.get(response["Location"]).content.decode()
    assert "No more attempts are left" in shown and "/final_copy/text" in shown
    assert not Task.objects.filter(run_id=run.id, status__in=[TaskStatus.OPEN, TaskStatus.CLAIMED]).exists()
    assert Run.objects.get(pk=run.id).status == RunStatus.AWAITING_HITL
    assert HitlRequest.objects.get(run_id=run.id).kind == "approval"
