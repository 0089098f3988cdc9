"""GET /api/v1/flex/runs: newest first, filters, cursor pagination, only the
runs the caller may view, redacted summaries."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone as dt_timezone
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from hitl.models import HitlRequest
from runs.models import Run
from tests.conftest import load_envelope

LIST = "/api/v1/flex/runs"
SUMMARY_FIELDS = {"runId", "status", "objective", "planVersion", "threadId", "briefId", "createdAt", "updatedAt",
                  "createdBy", "pendingRequestId"}
T0 = datetime(2026, 3, 1, 10, 0, tzinfo=dt_timezone.utc)


def submit(api: Any, name: str = "linkedin-variants", **metadata: str) -> str:
    envelope = load_envelope(name)
    envelope["metadata"].update(metadata)
    response = api.post(LIST, envelope, format="json")
    assert response.status_code == 202
    return response.json()["runId"]


def created(run_id: str, minutes: int) -> None:
    """Pin a run's creation time (T0 + minutes)."""
    Run.objects.filter(pk=run_id).update(created_at=T0 + timedelta(minutes=minutes))


def ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.json()
    return [r["runId"] for r in response.json()["results"]]


def test_it_lists_the_callers_runs_newest_first_as_summaries(api_for, client_user, other_client, support):
    mine = [submit(api_for(client_user)) for _ in range(3)]
    theirs = submit(api_for(other_client))
    for minutes, run_id in enumerate(mine + [theirs]):
        created(run_id, minutes)

    response = api_for(client_user).get(LIST)

    assert ids(response) == mine[::-1]
    assert response.json()["next"] is None
    summary = response.json()["results"][0]
    assert set(summary) == SUMMARY_FIELDS
    assert summary == {**summary, "status": "queued", "planVersion": 0, "threadId": "thread-demo-1",
                       "briefId": "brief-42", "createdBy": "clara", "pendingRequestId": None,
                       "createdAt": "2026-03-01T10:02:00.000Z"}
    assert ids(api_for(other_client).get(LIST)) == [theirs]
    assert ids(api_for(support).get(LIST)) == [theirs] + mine[::-1]


def test_it_filters_by_status_thread_brief_and_text(api_for, client_user, drain):
    api = api_for(client_user)
    done = submit(api, threadId="thread-a", briefId="brief-a")
    drain()
    queued = submit(api, threadId="thread-b", briefId="brief-a")
    Run.objects.filter(pk=queued).update(objective="Quarterly NEWSLETTER for partners")

    assert ids(api.get(LIST, {"status": "completed"})) == [done]
    assert set(ids(api.get(LIST, {"status": "queued,completed"}))) == {done, queued}
    assert ids(api.get(LIST, {"threadId": "thread-b"})) == [queued]
    assert set(ids(api.get(LIST, {"briefId": "brief-a"}))) == {done, queued}
    assert ids(api.get(LIST, {"briefId": "brief-a", "status": "queued"})) == [queued]
    assert ids(api.get(LIST, {"q": "newsletter"})) == [queued]
    assert ids(api.get(LIST, {"threadId": "thread-nope"})) == []


def test_it_filters_by_a_capability_that_ran_in_the_run(api_for, client_user, drain):
    api = api_for(client_user)
    variants = submit(api, "linkedin-variants")
    reviewed = submit(api, "facets-output")
    drain()

    assert ids(api.get(LIST, {"capabilityId": "qa.ContentReview"})) == [reviewed]
    assert set(ids(api.get(LIST, {"capabilityId": "copywriter.SocialpostDrafting"}))) == {variants, reviewed}
    assert ids(api.get(LIST, {"capabilityId": "nobody.Cap"})) == []


def test_it_filters_by_creation_time(api_for, client_user):
    api = api_for(client_user)
    runs = [submit(api) for _ in range(4)]
    for minutes, run_id in enumerate(runs):
        created(run_id, minutes * 10)  # 10:00, 10:10, 10:20, 10:30

    assert ids(api.get(LIST, {"createdAfter": "2026-03-01T10:05:00Z"})) == runs[:0:-1]
    assert ids(api.get(LIST, {"createdBefore": "2026-03-01T10:15:00Z"})) == runs[1::-1]
    window = {"createdAfter": "2026-03-01T10:05:00Z", "createdBefore": "2026-03-01T10:25:00Z"}
    assert ids(api.get(LIST, window)) == [runs[2], runs[1]]
    # Offsets, including a `+` that arrived unencoded (a space), and naive values (UTC).
    assert ids(api.get(f"{LIST}?createdAfter=2026-03-01T11:25:00+01:00")) == [runs[3]]
    assert ids(api.get(LIST, {"createdAfter": "2026-03-01T11:25:00+01:00"})) == [runs[3]]
    assert ids(api.get(LIST, {"createdBefore": "2026-03-01T10:05:00"})) == [runs[0]]
    assert ids(api.get(LIST, {"createdAfter": "2026-03-02"})) == []


@pytest.mark.parametrize("params, path", [
    ({"createdAfter": "yesterday"}, "/createdAfter"),
    ({"createdBefore": "2026-13-45T99:00:00Z"}, "/createdBefore"),
    ({"status": "sleeping"}, "/status"),
    ({"limit": "0"}, "/limit"),
    ({"limit": "101"}, "/limit"),
    ({"limit": "ten"}, "/limit"),
    ({"cursor": "not-a-cursor"}, "/cursor"),
    ({"cursor": "W10"}, "/cursor"),  # valid base64 of "[]"
    ({"q": "x" * 201}, "/q"),
    ({"threadId": "thread\x00"}, "/threadId"),
    ({"q": "\x00"}, "/q"),
])
def test_it_refuses_bad_query_parameters_with_a_clear_error(api_for, client_user, params, path):
    response = api_for(client_user).get(LIST, params)

    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "validation_failed"
    assert [e["path"] for e in body["details"]["errors"]] == [path]


def test_it_pages_with_an_opaque_cursor_that_keeps_the_filters(api_for, client_user, other_client):
    api = api_for(client_user)
    runs = [submit(api, threadId="paged") for _ in range(5)]
    submit(api, threadId="other-thread")
    submit(api_for(other_client), threadId="paged")
    # Two runs created in the same instant: the id breaks the tie.
    for minutes, run_id in zip([0, 1, 1, 2, 3], runs):
        created(run_id, minutes)

    seen: list[str] = []
    url: str | None = f"{LIST}?threadId=paged&limit=2"
    pages = 0
    while url:
        response = api.get(url)
        seen += ids(response)
        url = response.json()["next"]
        pages += 1
        if url:
            query = parse_qs(urlparse(url).query)
            assert query["threadId"] == ["paged"] and query["limit"] == ["2"] and query["cursor"]
    expected = sorted(runs, key=lambda r: (Run.objects.get(pk=r).created_at, r), reverse=True)
    assert pages == 3
    assert seen == expected


def test_a_cursor_does_not_shift_when_new_runs_arrive(api_for, client_user):
    api = api_for(client_user)
    runs = [submit(api) for _ in range(3)]
    for minutes, run_id in enumerate(runs):
        created(run_id, minutes)
    first = api.get(LIST, {"limit": 2})
    submit(api)  # newer than everything: must not appear on page two

    assert ids(api.get(first.json()["next"])) == [runs[0]]


def test_it_shows_the_pending_request_and_its_query_count_does_not_grow_with_the_page(api_for, support,
                                                                                       client_user):
    api = api_for(client_user)
    waiting = submit(api)
    HitlRequest.objects.create(run_id=waiting, kind="approval", question="Ship it?", status="resolved")
    pending = HitlRequest.objects.create(run_id=waiting, kind="approval", question="Really?")
    [summary] = [r for r in api.get(LIST).json()["results"] if r["runId"] == waiting]
    assert summary["pendingRequestId"] == pending.id

    def count(limit: int) -> int:
        with CaptureQueriesContext(connection) as queries:
            assert len(api_for(support).get(LIST, {"limit": limit}).json()["results"]) == limit
        return len(queries.captured_queries)

    count(1)  # the first request also creates the token
    small = count(1)
    for _ in range(11):
        submit(api)
    assert count(12) == small
