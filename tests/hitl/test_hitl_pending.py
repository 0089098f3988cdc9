"""GET /api/hitl/pending: the inbox, filtered to runs the caller may view."""
from __future__ import annotations

import pytest

from hitl.models import HitlRequest
from tests.conftest import load_envelope
from tests.hitl.helpers import APPROVE, pending_request, resume, submit

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_waiting(api_for, client_user, other_client, drain):
    approval = submit(api_for(client_user), load_envelope("approval-required"))
    clarify = submit(api_for(other_client), load_envelope("clarify-audience"))
    drain()
    return approval, clarify


def pending(api, **params):
    response = api.get("/api/hitl/pending", params)
    assert response.status_code == 200, response.content
    return response.json()


def test_a_waiting_run_appears_with_its_request(api_for, operator, two_waiting):
    approval, _ = two_waiting
    body = pending(api_for(operator), kind="approval")

    assert body["next"] is None and len(body["runs"]) == 1
    entry = body["runs"][0]
    request = pending_request(approval)
    assert (entry["runId"], entry["threadId"], entry["briefId"], entry["status"], entry["planVersion"]) == (
        approval, "thread-demo-2", "brief-43", "awaiting_hitl", 1)
    assert entry["pendingRequestId"] == request.id
    assert entry["pendingRequest"]["kind"] == "approval" and entry["pendingRequest"]["status"] == "pending"
    assert entry["pendingRequest"]["pendingNodeId"] == "copywriter" and entry["updatedAt"].endswith("Z")


def test_it_orders_by_urgency_then_age(api_for, operator, two_waiting):
    approval, clarify = two_waiting
    HitlRequest.objects.filter(run_id=clarify).update(urgency="high", urgency_rank=0)

    assert [r["runId"] for r in pending(api_for(operator))["runs"]] == [clarify, approval]


@pytest.mark.parametrize("params, expected", [
    ({"kind": "clarify"}, [1]), ({"urgency": "low"}, []), ({"threadId": "thread-demo-2"}, [0]),
    ({"briefId": "brief-43"}, [0]), ({"briefId": "nope"}, []),
])
def test_it_filters(api_for, operator, two_waiting, params, expected):
    assert {r["runId"] for r in pending(api_for(operator), **params)["runs"]} == {two_waiting[i] for i in expected}


def test_clients_see_only_their_own_runs_and_support_sees_all(api_for, client_user, support, outsider, two_waiting):
    assert [r["runId"] for r in pending(api_for(client_user))["runs"]] == [two_waiting[0]]
    assert len(pending(api_for(support))["runs"]) == 2
    assert pending(api_for(outsider))["runs"] == []


def test_resolved_requests_leave_the_inbox(api_for, operator, two_waiting):
    approval, _ = two_waiting
    resume(api_for(operator), approval, pending_request(approval).id, [APPROVE])

    assert [r["runId"] for r in pending(api_for(operator))["runs"]] == [two_waiting[1]]


def test_it_pages_with_next(api_for, operator, two_waiting):
    api = api_for(operator)
    first = pending(api, limit=1)
    assert len(first["runs"]) == 1 and first["next"]

    second = api.get(first["next"]).json()

    assert len(second["runs"]) == 1 and second["next"] is None
    assert first["runs"][0]["runId"] != second["runs"][0]["runId"]


@pytest.mark.parametrize("params", [{"kind": "other"}, {"urgency": "urgent"}, {"limit": "0"}, {"cursor": "x"}])
def test_bad_filters_are_422(api_for, operator, params):
    response = api_for(operator).get("/api/hitl/pending", params)

    assert response.status_code == 422 and response.json()["code"] == "validation_failed"


def test_a_request_reads_the_same_in_its_event_and_in_the_inbox(api_for, client_user, operator, two_waiting):
    approval, _ = two_waiting
    entry = pending(api_for(operator), kind="approval")["runs"][0]["pendingRequest"]
    frames = api_for(client_user).get(f"/api/v1/flex/runs/{approval}/events").json()["events"]
    event = next(f["payload"] for f in frames if f["type"] == "hitl_request")

    assert entry["createdAt"] == event["createdAt"]
    assert entry == event  # one presenter: same fields, same values, while nothing was answered


def test_an_approval_shows_the_output_under_review(api_for, operator, two_waiting):
    approval, _ = two_waiting
    entry = pending(api_for(operator), kind="approval")["runs"][0]["pendingRequest"]

    variants = entry["review"]["copyVariants"]
    assert len(variants) == 1 and "Akkuro" in variants[0]["body"]
    assert sorted(entry["review"]) == sorted(entry["contractSummary"]["outputFacets"])
