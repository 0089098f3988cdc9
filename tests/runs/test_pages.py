"""Run history pages (runs/pages.py): session login, the list with filters,
the run page with its plan graph, dialogue, output and live-timeline hooks;
who sees what; bounded query counts."""
from __future__ import annotations

import html
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from hitl.models import HitlRequest
from runs.services import hitl_resume
from runs.models import Run, RunStatus
from runs.services import run_create
from tests.conftest import load_envelope
from tests.runs.review import REVIEWED_TEXT, SENSITIVE_CALL_TO_ACTION, sensitive_call_to_action  # noqa: F401

pytestmark = pytest.mark.django_db

LIST = "/runs/"


def page_url(run: Run) -> str:
    return reverse("run_pages:detail", args=[run.id])


def browser(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def submit(drain: Any) -> Any:
    def make(user: Any, name: str, **changes: Any) -> Run:
        envelope = load_envelope(name)
        envelope.update(changes)
        run = run_create(user=user, envelope=envelope)
        drain()
        run.refresh_from_db()
        return run

    return make


def test_the_pages_ask_anonymous_visitors_to_log_in() -> None:
    response = Client().get(LIST)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=/runs/")


def test_a_client_logs_in_without_admin_rights_and_lands_on_the_run_list(client_user: Any) -> None:
    client = Client()
    response = client.post("/accounts/login/", {"username": "clara", "password": "pw"})
    assert response.status_code == 302 and response["Location"] == "/runs/"
    assert client.get(LIST).status_code == 200


def test_support_sees_every_run_and_a_run_page_with_graph_dialogue_and_stream(support: Any, client_user: Any,
                                                                              submit: Any) -> None:
    run = submit(client_user, "clarify-audience")
    client = browser(support)
    listing = client.get(LIST).content.decode()
    assert run.id in listing and "awaiting_hitl" in listing and "Who is the target audience" in listing
    page = client.get(page_url(run))
    assert page.status_code == 200
    body = page.content.decode()
    assert '<svg class="plan-graph"' in body and 'data-node-id="strategist" data-status="awaiting_hitl"' in body
    assert "Who is the target audience" in body
    assert f'data-stream-url="/api/v1/flex/runs/{run.id}/stream"' in body
    assert f'data-last-event-id="{run.id}:{run.last_seq}"' in body and 'data-live="1"' in body
    assert f'href="/api/v1/flex/runs/{run.id}"' in body
    assert "runs/run.js" in body
    # Support cannot act, so no link to the console's buttons.
    assert "act in the admin console" not in body


def test_a_finished_run_shows_its_output_and_the_answer_dialogue(operator: Any, client_user: Any,
                                                                 submit: Any, drain: Any) -> None:
    run = submit(client_user, "clarify-audience")
    request = HitlRequest.objects.get(run=run)
    hitl_resume(user=operator, run_id=run.id, request_id=request.id,
                responses=[{"responseType": "freeform", "freeformText": "Risk managers in insurance"}])
    drain()
    body = browser(client_user).get(page_url(run)).content.decode()
    assert 'data-live="0"' in body
    assert "Risk managers in insurance" in body  # in the dialogue and in the output
    assert "copyVariants" in body
    assert 'data-status="completed"' in body


def test_the_run_page_is_redacted(support: Any, client_user: Any, submit: Any) -> None:
    run = submit(client_user, "linkedin-variants",
                 metadata={"threadId": "t-9", "session_id": "abc-secret-77", "nested": {"token": 99887766}})
    body = browser(support).get(page_url(run)).content.decode()
    assert "abc-secret-77" not in body and "99887766" not in body


def test_a_client_sees_only_the_runs_they_may_view(client_user: Any, other_client: Any, submit: Any) -> None:
    mine = submit(client_user, "linkedin-variants")
    theirs = submit(other_client, "clarify-audience")
    client = browser(client_user)
    listing = client.get(LIST).content.decode()
    assert mine.id in listing and theirs.id not in listing
    assert client.get(page_url(mine)).status_code == 200
    assert client.get(page_url(theirs)).status_code == 404
    assert client.get(page_url(Run(id="run_does_not_exist"))).status_code == 404


def test_the_list_filters_by_status_pending_capability_date_and_text(support: Any, client_user: Any,
                                                                     submit: Any) -> None:
    waiting = submit(client_user, "clarify-audience")
    done = submit(client_user, "linkedin-variants")
    client = browser(support)

    def ids(**params: str) -> set[str]:
        body = client.get(LIST, params).content.decode()
        return {r.id for r in (waiting, done) if r.id in body}

    assert ids(status="completed") == {done.id}
    assert ids(pending="yes") == {waiting.id}
    assert ids(pending="no") == {done.id}
    assert ids(q="thread-demo-3") == {waiting.id}
    assert ids(q=done.id) == {done.id}
    # Both plans hold a copywriter node (the waiting run's is still pending).
    assert ids(capability="copywriter.SocialpostDrafting") == {waiting.id, done.id}
    assert ids(capability="nobody.Nothing") == set()
    today = done.created_at.date().isoformat()
    assert ids(created_after=today, created_before=today) == {waiting.id, done.id}
    assert ids(created_before="2000-01-01") == set()


def _count(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200
    return len(ctx.captured_queries)


def test_the_list_costs_the_same_queries_for_1_and_30_runs(support: Any, django_assert_max_num_queries: Any) -> None:
    envelope = load_envelope("linkedin-variants")

    def add(count: int) -> None:
        runs = Run.objects.bulk_create([Run(objective=f"o{i}", envelope=envelope, created_by=support,
                                            status=RunStatus.AWAITING_HITL) for i in range(count)])
        HitlRequest.objects.bulk_create([HitlRequest(run=r, kind="clarify", question="q?") for r in runs])

    client = browser(support)
    add(1)
    one = _count(client, LIST)
    add(29)
    with django_assert_max_num_queries(one):
        assert client.get(LIST).content.decode().count('class="run-row"') == 30


def test_a_client_list_costs_the_same_queries_for_1_and_30_granted_runs(client_user: Any, submit: Any,
                                                                        django_assert_max_num_queries: Any) -> None:
    from flexagents.roles import grant_run_to_owner

    envelope = load_envelope("linkedin-variants")
    client = browser(client_user)
    first = Run.objects.create(objective="o", envelope=envelope, created_by=client_user)
    grant_run_to_owner(run=first, user=client_user)
    one = _count(client, LIST)
    for i in range(29):
        run = Run.objects.create(objective=f"o{i}", envelope=envelope, created_by=client_user)
        grant_run_to_owner(run=run, user=client_user)
    with django_assert_max_num_queries(one):
        assert client.get(LIST).content.decode().count('class="run-row"') == 30


def test_the_run_page_query_count_does_not_grow_with_the_run(support: Any, client_user: Any, submit: Any,
                                                             django_assert_max_num_queries: Any) -> None:
    small = submit(client_user, "clarify-audience")
    big = submit(client_user, "facets-output")
    client = browser(support)
    budget = _count(client, page_url(small))
    assert big.last_seq > small.last_seq
    with django_assert_max_num_queries(budget):
        assert client.get(page_url(big)).status_code == 200


# --- what a request asks a person to approve ------------------------------------------------

def test_the_dialogue_shows_what_an_approval_asks_to_approve_redacted(sensitive_call_to_action: None, support: Any,
                                                                      client_user: Any, submit: Any) -> None:
    run = submit(client_user, "approval-required")
    body = html.unescape(browser(support).get(page_url(run)).content.decode())
    dialogue = body[body.index('id="dialogue"'):body.index("<h2>Output</h2>")]
    assert "Approve the output of copywriter" in dialogue
    assert REVIEWED_TEXT in dialogue and '"callToAction": "[redacted]"' in dialogue
    assert SENSITIVE_CALL_TO_ACTION not in body
    assert "No output yet" in body  # the run's output; the copy under review is in the dialogue


def test_the_updated_time_is_a_timestamp_the_live_script_can_move(support: Any, client_user: Any,
                                                                  submit: Any) -> None:
    run = submit(client_user, "clarify-audience")
    body = browser(support).get(page_url(run)).content.decode()
    assert f'<time id="run-updated" datetime="{run.updated_at.isoformat()}">' in body


def test_with_flex_disabled_the_run_page_says_actions_are_off(settings: Any, operator: Any, client_user: Any,
                                                              submit: Any) -> None:
    run = submit(client_user, "clarify-audience")
    assert 'id="flex-disabled"' not in browser(operator).get(page_url(run)).content.decode()
    settings.FLEX_ENABLED = False
    body = browser(operator).get(page_url(run)).content.decode()
    assert 'id="flex-disabled"' in body and "FLEX_ENABLED=0" in body
    assert "act in the admin console" not in body


def test_the_run_page_lists_every_plan_version_with_its_nodes(support: Any, client_user: Any, submit: Any) -> None:
    envelope = load_envelope("linkedin-variants")
    runtime = [{"id": "redo-copy", "trigger": {"kind": "onNodeComplete", "selector": {"nodeId": "copywriter"}},
                "action": {"type": "replan"}}]
    run = submit(client_user, "linkedin-variants", policies={**envelope["policies"], "runtime": runtime})
    assert run.status == "completed" and run.plan_version == 2

    body = html.unescape(browser(support).get(page_url(run)).content.decode())

    assert "strategist (strategist.SocialPosting), copywriter (copywriter.SocialpostDrafting)" in body
    assert "strategist (strategist.SocialPosting), copywriter-2 (copywriter.ShortformDrafting)" in body
    assert '"kind": "policy"' in body and '"excludedCapabilities": ["copywriter.SocialpostDrafting"]' in body
    # The graph drawn is the current version's.
    assert 'data-node-id="copywriter-2" data-status="completed"' in body
    assert 'data-node-id="copywriter"' not in body
