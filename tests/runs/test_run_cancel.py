"""POST /api/v1/flex/runs/{runId}/cancel: terminal, audited, 409 when the run
already finished, and results a worker produces after it are discarded."""
from __future__ import annotations

import logging
from typing import Any

import pytest

from runs import services
from runs.engine import lease, loop
from runs.transitions import Fenced
from runs.models import AuditEntry, NodeRun, Run, RunEvent
from tests.conftest import load_envelope


def submit(api: Any, name: str = "linkedin-variants") -> str:
    response = api.post("/api/v1/flex/runs", load_envelope(name), format="json")
    assert response.status_code == 202
    return response.json()["runId"]


def cancel(api: Any, run_id: str, body: Any = None) -> Any:
    return api.post(f"/api/v1/flex/runs/{run_id}/cancel", {"reason": "not needed"} if body is None else body,
                    format="json")


def frames(api: Any, run_id: str) -> list[dict[str, Any]]:
    return api.get(f"/api/v1/flex/runs/{run_id}/events").json()["events"]


def test_it_cancels_a_queued_run_with_a_complete_frame_and_an_audit_entry(caplog, api_for, client_user):
    api = api_for(client_user)
    run_id = submit(api)

    with caplog.at_level(logging.INFO, logger="runs.services"):
        response = cancel(api, run_id, {"reason": "Brief withdrawn"})

    assert response.status_code == 200
    body = response.json()
    assert body["runId"] == run_id and body["status"] == "cancelled" and body["createdBy"] == "clara"
    run = Run.objects.get(pk=run_id)
    assert run.status == "cancelled" and run.completed_at is not None and run.is_terminal
    [last] = frames(api, run_id)[-1:]
    assert last["type"] == "complete"
    assert last["payload"]["status"] == "cancelled" and last["payload"]["reason"] == "Brief withdrawn"
    entry = AuditEntry.objects.get(run_id=run_id, action="run_cancelled")
    assert entry.actor == client_user and entry.details == {"reason": "Brief withdrawn"}
    [line] = [r for r in caplog.records if getattr(r, "action", None) == "run_cancelled"]
    assert (line.run_id, line.operator_id, line.plan_version) == (run_id, client_user.pk, 0)
    # Nothing left to claim.
    assert lease.claim_next(worker_id="w") is None


def test_cancelling_twice_gives_run_already_completed(api_for, client_user):
    api = api_for(client_user)
    run_id = submit(api)
    assert cancel(api, run_id).status_code == 200
    events = RunEvent.objects.filter(run_id=run_id).count()

    again = cancel(api, run_id)

    assert again.status_code == 409
    assert again.json()["code"] == "run_already_completed"
    assert again.json()["details"] == {"status": "cancelled"}
    assert RunEvent.objects.filter(run_id=run_id).count() == events
    assert AuditEntry.objects.filter(run_id=run_id, action="run_cancelled").count() == 1


def test_a_completed_run_cannot_be_cancelled(api_for, operator, client_user, drain):
    run_id = submit(api_for(client_user))
    drain()

    response = cancel(api_for(operator), run_id)

    assert response.status_code == 409
    assert response.json()["code"] == "run_already_completed"
    assert response.json()["details"] == {"status": "completed"}
    assert Run.objects.get(pk=run_id).status == "completed"


def test_support_may_not_cancel_and_another_client_cannot_see_the_run(api_for, client_user, other_client, support):
    run_id = submit(api_for(client_user))

    denied = cancel(api_for(support), run_id)
    hidden = cancel(api_for(other_client), run_id)

    assert denied.status_code == 403 and denied.json()["code"] == "permission_denied"
    assert hidden.status_code == 404 and hidden.json()["code"] == "run_not_found"
    assert Run.objects.get(pk=run_id).status == "queued"
    assert not AuditEntry.objects.filter(run_id=run_id, action="run_cancelled").exists()


def test_an_operator_may_cancel_any_run(api_for, client_user, operator):
    run_id = submit(api_for(client_user))

    response = cancel(api_for(operator), run_id, {})

    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert AuditEntry.objects.get(run_id=run_id, action="run_cancelled").actor == operator


def test_cancelling_a_run_that_waits_for_a_person_removes_the_request(api_for, client_user, drain):
    api = api_for(client_user)
    run_id = submit(api, "clarify-audience")
    drain()
    assert Run.objects.get(pk=run_id).status == "awaiting_hitl"

    assert cancel(api, run_id).status_code == 200

    tail = frames(api, run_id)[-2:]
    assert [f["type"] for f in tail] == ["hitl_resolved", "complete"]
    assert tail[0]["payload"]["resolution"] == "removed"
    assert tail[1]["payload"]["status"] == "cancelled"
    assert Run.objects.get(pk=run_id).hitl_requests.get().status == "removed"


@pytest.mark.parametrize("body, path", [
    ({"reason": "x", "status": "completed"}, "/status"),
    ({"reason": {"text": "nested"}}, "/reason"),
    ({"reason": "x" * 2001}, "/reason"),
    ({"reason": 5}, "/reason"),  # not turned into "5": the schema says string
    (["reason"], "/"),
])
def test_it_refuses_a_bad_body_and_changes_nothing(api_for, client_user, body, path):
    api = api_for(client_user)
    run_id = submit(api)

    response = cancel(api, run_id, body)

    assert response.status_code == 422
    assert response.json()["code"] == "validation_failed"
    assert [e["path"] for e in response.json()["details"]["errors"]] == [path]
    assert Run.objects.get(pk=run_id).status == "queued"


def node_state(run_id: str) -> list[tuple[Any, ...]]:
    return list(NodeRun.objects.filter(run_id=run_id).order_by("position")
                .values_list("node_id", "status", "attempts", "output", "commits", "completed_at"))


def test_a_worker_that_finishes_a_node_after_the_cancel_commits_nothing(api_for, client_user, operator):
    run_id = submit(api_for(client_user))
    claim = lease.claim_next(worker_id="slow-worker", run_id=run_id)
    assert claim is not None
    ctx = loop.load(claim)
    loop.plan(ctx)  # committed: plan_generated and the first node_start
    assert Run.objects.get(pk=run_id).status == "running"
    strategist = ctx.nodes["strategist"]
    assert strategist.status == "running"

    services.run_cancel(user=operator, run_id=run_id, reason="stop")
    events = list(RunEvent.objects.filter(run_id=run_id).values_list("seq", "type"))
    nodes = node_state(run_id)
    facets = Run.objects.get(pk=run_id).facet_snapshot()[0]

    # The worker's capability returns now; its commit is fenced off.
    with pytest.raises(Fenced):
        loop.run_node(ctx, strategist, None)
    # Driving the run again with the old claim does nothing either.
    assert loop.advance(claim) == "cancelled"

    run = Run.objects.get(pk=run_id)
    assert run.status == "cancelled" and run.facet_snapshot()[0] == facets and "creative_brief" not in facets
    assert list(RunEvent.objects.filter(run_id=run_id).values_list("seq", "type")) == events
    assert events[-1][1] == "complete"
    assert node_state(run_id) == nodes
    assert NodeRun.objects.get(run_id=run_id, node_id="strategist").commits == 0
    assert lease.claim_next(worker_id="another") is None
