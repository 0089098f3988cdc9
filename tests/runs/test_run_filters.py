"""runs/filters.py: one filter definition. The same filter gives the same
runs on the API (`GET /api/v1/flex/runs`), the history pages (`/runs/`) and
the admin's run list, with the same boundaries: both creation bounds are
inclusive, a date names its whole UTC day, `q` is objective text or an exact
run / thread / brief id."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone as dt_timezone
from typing import Any

import pytest
from django.contrib.admin.utils import unquote
from django.test import Client
from django.urls import reverse

from hitl.models import HitlRequest
from runs.models import Run
from tests.conftest import load_envelope

pytestmark = pytest.mark.django_db

API = "/api/v1/flex/runs"
PAGES = "/runs/"
DAY = datetime(2026, 3, 1, tzinfo=dt_timezone.utc)
MICRO = timedelta(microseconds=1)
# The API's parameter names as the pages' form and the admin's sidebar name them.
PAGE_NAMES = {"capabilityId": "capability", "createdAfter": "created_after", "createdBefore": "created_before"}
ADMIN_NAMES = {**PAGE_NAMES, "status": "status__exact"}


@pytest.fixture
def runs(api_for: Any, client_user: Any, drain: Any) -> dict[str, str]:
    """Four runs around the day 2026-03-01: its last microsecond before, its
    first and last microseconds, the first microsecond of the next day."""
    api = api_for(client_user)

    def submit(name: str) -> str:
        envelope = load_envelope("linkedin-variants")
        envelope["metadata"].update(threadId=f"thread-{name}", briefId=f"brief-{name}")
        response = api.post(API, envelope, format="json")
        assert response.status_code == 202
        return response.json()["runId"]

    made = {name: submit(name) for name in ("before", "start", "end")}
    drain()  # completed, with their capabilities' nodes
    made["next"] = submit("next")  # still queued
    for name, when in (("before", DAY - MICRO), ("start", DAY), ("end", DAY + timedelta(days=1) - MICRO),
                       ("next", DAY + timedelta(days=1))):
        Run.objects.filter(pk=made[name]).update(created_at=when)
    Run.objects.filter(pk=made["start"]).update(objective="Quarterly NEWSLETTER for partners")
    HitlRequest.objects.create(run_id=made["end"], kind="approval", question="Ship it?")
    return made


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def on_the_api(api: Any, params: dict[str, str]) -> set[str]:
    response = api.get(API, params)
    assert response.status_code == 200, response.json()
    return {r["runId"] for r in response.json()["results"]}


def on_the_pages(client: Client, params: dict[str, str]) -> set[str]:
    response = client.get(PAGES, {PAGE_NAMES.get(k, k): v for k, v in params.items()})
    assert response.status_code == 200
    body = response.content.decode()
    assert "filter-errors" not in body
    return set(re.findall(r'class="run-row" data-run-id="([^"]+)"', body))


def in_the_admin(client: Client, params: dict[str, str]) -> set[str]:
    response = client.get(reverse("admin:runs_run_changelist"), {ADMIN_NAMES.get(k, k): v for k, v in params.items()})
    assert response.status_code == 200
    return admin_rows(response.content.decode())


def admin_rows(body: str) -> set[str]:
    return {unquote(pk) for pk in re.findall(r'href="/admin/runs/run/([^/"]+)/change/', body)}


@pytest.mark.parametrize("params, expected", [
    ({}, {"before", "start", "end", "next"}),
    # A date names its whole day, on both bounds.
    ({"createdAfter": "2026-03-01", "createdBefore": "2026-03-01"}, {"start", "end"}),
    ({"createdAfter": "2026-03-02"}, {"next"}),
    ({"createdBefore": "2026-02-28"}, {"before"}),
    # An instant is inclusive, on both bounds.
    ({"createdAfter": "2026-03-01T00:00:00Z"}, {"start", "end", "next"}),
    ({"createdBefore": "2026-03-02T00:00:00Z"}, {"before", "start", "end", "next"}),
    ({"createdAfter": "2026-03-01T00:00:00Z", "createdBefore": "2026-03-01T00:00:00Z"}, {"start"}),
    ({"createdBefore": "2026-03-01T01:00:00+01:00"}, {"before", "start"}),
    # Text: in the objective (any case), or exactly a run, thread or brief id.
    ({"q": "newsletter"}, {"start"}),
    ({"q": "thread-end"}, {"end"}),
    ({"q": "brief-before"}, {"before"}),
    ({"q": "thread-en"}, set()),
    ({"status": "queued"}, {"next"}),
    ({"status": "completed,queued"}, {"before", "start", "end", "next"}),
    ({"pending": "yes"}, {"end"}),
    ({"pending": "no"}, {"before", "start", "next"}),
    ({"capabilityId": "copywriter.SocialpostDrafting"}, {"before", "start", "end"}),
    ({"capabilityId": "copywriter.SocialpostDrafting", "createdAfter": "2026-03-01", "status": "completed"},
     {"start", "end"}),
])
def test_the_same_filter_gives_the_same_runs_on_the_api_the_pages_and_the_admin(
        api_for: Any, operator: Any, runs: dict[str, str], params: dict[str, str], expected: set[str]) -> None:
    want = {runs[name] for name in expected}
    client = logged_in(operator)

    assert on_the_api(api_for(operator), params) == want
    assert on_the_pages(client, params) == want
    assert in_the_admin(client, params) == want


def test_a_run_id_finds_its_run_everywhere(api_for: Any, operator: Any, runs: dict[str, str]) -> None:
    client = logged_in(operator)
    params = {"q": runs["end"]}

    assert on_the_api(api_for(operator), params) == on_the_pages(client, params) == in_the_admin(client, params) == {
        runs["end"]}


@pytest.mark.parametrize("params", [{"createdAfter": "yesterday"}, {"createdBefore": "2026-02-30"},
                                    {"status": "sleeping"}, {"pending": "maybe"}, {"q": "x" * 201}])
def test_a_bad_value_is_refused_everywhere_in_the_way_of_each_surface(api_for: Any, operator: Any,
                                                                     runs: dict[str, str],
                                                                     params: dict[str, str]) -> None:
    [(name, value)] = params.items()
    client = logged_in(operator)

    api = api_for(operator).get(API, params)
    assert api.status_code == 422 and api.json()["code"] == "validation_failed"
    assert [e["path"] for e in api.json()["details"]["errors"]] == [f"/{name}"]

    page = client.get(PAGES, {PAGE_NAMES.get(name, name): value}).content.decode()
    assert f'data-path="/{PAGE_NAMES.get(name, name)}"' in page

    admin = client.get(reverse("admin:runs_run_changelist"), {ADMIN_NAMES.get(name, name): value})
    assert admin.status_code == 302 and admin["Location"].endswith("?e=1")


def test_a_nul_in_the_search_text_is_refused_everywhere(api_for: Any, operator: Any, runs: dict[str, str]) -> None:
    client = logged_in(operator)

    api = api_for(operator).get(API, {"q": "run\x00"})
    assert api.status_code == 422 and [e["path"] for e in api.json()["details"]["errors"]] == ["/q"]
    assert 'data-path="/q"' in client.get(PAGES, {"q": "run\x00"}).content.decode()
    # The admin's own search form refuses it first, says so and searches nothing.
    admin = client.get(reverse("admin:runs_run_changelist"), {"q": "run\x00"})
    assert "Null characters are not allowed" in admin.content.decode()
    assert admin_rows(admin.content.decode()) == set(runs.values())


def test_the_admin_date_links_use_the_same_inclusive_bounds(operator: Any, runs: dict[str, str]) -> None:
    today = datetime.now(dt_timezone.utc).date().isoformat()
    Run.objects.filter(pk=runs["end"]).update(created_at=datetime.now(dt_timezone.utc))
    client = logged_in(operator)
    changelist = reverse("admin:runs_run_changelist")
    body = client.get(changelist).content.decode()

    [link] = re.findall(r'href="(\?[^"]*created_after=[^"]*)"[^>]*>\s*Today', body)
    assert f"created_after={today}" in link and f"created_before={today}" in link
    assert in_the_admin(client, {"createdAfter": today, "createdBefore": today}) == {runs["end"]}
    assert admin_rows(client.get(changelist + link.replace("&amp;", "&")).content.decode()) == {runs["end"]}
