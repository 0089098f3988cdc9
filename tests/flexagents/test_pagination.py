"""flexagents/pagination.py: the API's one paging style (a keyset cursor) on
the run list and the HITL inbox: no row repeated or skipped, ties broken by
the id, new rows never shift a page, bad cursors and limits are 422."""
from __future__ import annotations

import base64
import json
from datetime import datetime, timezone as dt_timezone
from typing import Any

import pytest

from hitl.models import HitlRequest
from runs.models import Run
from tests.conftest import load_envelope

pytestmark = pytest.mark.django_db

RUNS = "/api/v1/flex/runs"
INBOX = "/api/hitl/pending"
T0 = datetime(2026, 3, 1, 10, 0, tzinfo=dt_timezone.utc)
RANK = {"high": 0, "normal": 1, "low": 2}


def submit(api: Any) -> str:
    response = api.post(RUNS, load_envelope("linkedin-variants"), format="json")
    assert response.status_code == 202
    return response.json()["runId"]


def ask(run_id: str, urgency: str) -> str:
    """A pending request on the run, created at T0 (so requests tie on time)."""
    request = HitlRequest.objects.create(run_id=run_id, kind="approval", question="Ship it?", urgency=urgency,
                                         urgency_rank=RANK[urgency])
    HitlRequest.objects.filter(pk=request.pk).update(created_at=T0)
    return request.pk


def walk(api: Any, url: str | None) -> tuple[list[str], int]:
    seen: list[str] = []
    pages = 0
    while url:
        response = api.get(url)
        assert response.status_code == 200, response.json()
        seen += [r["pendingRequestId"] for r in response.json()["runs"]]
        url = response.json()["next"]
        pages += 1
    return seen, pages


def cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def test_the_inbox_pages_by_urgency_then_age_then_id_without_repeating_a_request(api_for: Any, operator: Any,
                                                                                client_user: Any) -> None:
    api = api_for(client_user)
    urgencies = ["low", "high", "normal", "high", "normal"]
    asked = [ask(submit(api), urgency) for urgency in urgencies]

    seen, pages = walk(api_for(operator), f"{INBOX}?limit=2")

    assert pages == 3
    assert seen == sorted(asked, key=lambda pk: (RANK[urgencies[asked.index(pk)]], pk))


def test_a_request_asked_while_a_person_pages_does_not_shift_the_inbox(api_for: Any, operator: Any,
                                                                       client_user: Any) -> None:
    api = api_for(client_user)
    asked = [ask(submit(api), "normal") for _ in range(3)]
    first = api_for(operator).get(INBOX, {"limit": 2}).json()
    ask(submit(api), "high")  # before every other request in the order: not on page two

    second = api_for(operator).get(first["next"]).json()

    assert [r["pendingRequestId"] for r in first["runs"] + second["runs"]] == sorted(asked)
    assert second["next"] is None


@pytest.mark.parametrize("url, values", [
    (RUNS, ["yesterday", "run_x"]),
    (RUNS, ["2026-03-01T10:00:00", "run_x"]),  # no offset: not one this endpoint wrote
    (RUNS, [1, 2]),
    (RUNS, ["2026-03-01T10:00:00+00:00", "run_x", "extra"]),
    (INBOX, ["urgent", "2026-03-01T10:00:00+00:00", "hitl_x"]),
    (INBOX, [True, "2026-03-01T10:00:00+00:00", "hitl_x"]),
    (INBOX, [1, None, "hitl_x"]),
    (INBOX, {"o": 1}),
])
def test_a_tampered_cursor_is_a_clear_422_not_a_server_error(api_for: Any, operator: Any, url: str,
                                                             values: Any) -> None:
    response = api_for(operator).get(url, {"cursor": cursor(values)})

    assert response.status_code == 422
    assert response.json()["code"] == "validation_failed"
    assert [e["path"] for e in response.json()["details"]["errors"]] == ["/cursor"]


@pytest.mark.parametrize("url, limit", [(RUNS, "101"), (INBOX, "201"), (INBOX, "-1"), (INBOX, "ten")])
def test_a_limit_out_of_range_is_422(api_for: Any, operator: Any, url: str, limit: str) -> None:
    response = api_for(operator).get(url, {"limit": limit})

    assert response.status_code == 422
    assert [e["path"] for e in response.json()["details"]["errors"]] == ["/limit"]


def test_the_next_url_keeps_the_filters_and_the_limit(api_for: Any, client_user: Any) -> None:
    api = api_for(client_user)
    for _ in range(3):
        submit(api)
    Run.objects.update(created_at=T0)  # all tie on time: the id orders them

    first = api.get(RUNS, {"status": "queued", "limit": 2}).json()

    assert "status=queued" in first["next"] and "limit=2" in first["next"] and "cursor=" in first["next"]
    second = api.get(first["next"]).json()
    ids = [r["runId"] for r in first["results"] + second["results"]]
    assert ids == sorted(Run.objects.values_list("id", flat=True), reverse=True)
