"""The approval cycle's hot path on PostgreSQL (runs.services.hitl_resume,
runs.transitions.resume_read / resume_commit / lease_claim): an answer is one
read and one write, fenced on the row versions read; the resumed run's claim
brings along what the worker loads of it. Same writes, events and refusals
as the locking path, which SQLite takes (and PostgreSQL when anything
changed between the read and the write)."""
from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

from flexagents.errors import StaleHitlState
from hitl.models import HitlRequest, HitlResponse
from runs import services
from runs.engine import lease, loop
from runs.engine.worker import drain as drain_runs
from runs.models import AuditEntry, NodeRun, PlanVersion, Run, RunEvent
from runs.services import hitl_respond, hitl_resume
from tests.conftest import load_envelope
from tests.runs.engine.statements import Statements
from tests.hitl.helpers import APPROVE, event_types, submit

pytestmark = pytest.mark.django_db


def _asking(api_for: Any, client_user: Any) -> tuple[str, HitlRequest]:
    run_id = submit(api_for(client_user), load_envelope("approval-required"))
    drain_runs(max_steps=2)
    assert Run.objects.get(pk=run_id).status == "awaiting_hitl"
    return run_id, HitlRequest.objects.get(run_id=run_id, status="pending")


def test_an_answer_is_one_read_and_one_write_on_postgresql(api_for, client_user, operator):
    run_id, request = _asking(api_for, client_user)
    before = Run.objects.get(pk=run_id)
    assert operator.has_perm("runs.operate_run")  # the role's permissions, cached on the user (a request does it once)
    seen = Statements()
    with connection.execute_wrapper(seen):
        result = hitl_resume(user=operator, run_id=run_id, request_id=request.id, responses=[APPROVE], note="ok")
    if connection.vendor == "postgresql":
        assert len(seen.own()) == 2, [s[:80] for s in seen.own()]
        assert seen.own()[1].startswith("WITH r AS (UPDATE")
    # What the locking path writes, all of it.
    run = Run.objects.get(pk=run_id)
    assert run.status == "queued" and run.plan_version == before.plan_version + 1
    assert result.run.status == "queued" and result.resolution == "approved"
    request.refresh_from_db()
    assert request.status == "resolved" and request.resolution == "approved" and request.resolved_at is not None
    response = HitlResponse.objects.get(request=request)
    assert response.approved is True and response.responder_id == operator.pk
    assert [r.response_id for r in result.responses] == [response.response_id]
    version = PlanVersion.objects.get(run_id=run_id, version=run.plan_version)
    assert version.reason == "resume" and version.trigger["requestId"] == request.id
    assert version.graph == PlanVersion.objects.get(run_id=run_id, version=before.plan_version).graph
    assert version.node_statuses == dict(NodeRun.objects.filter(run_id=run_id).values_list("node_id", "status"))
    audit = AuditEntry.objects.get(run_id=run_id, action="hitl_resumed")
    assert audit.actor_id == operator.pk and audit.plan_version == run.plan_version
    assert audit.details["responseIds"] == [response.response_id] and audit.details["note"] == "ok"
    events = list(RunEvent.objects.filter(run_id=run_id).order_by("seq"))
    assert [e.seq for e in events] == list(range(1, len(events) + 1)) and run.last_seq == len(events)
    assert [e.type for e in events if e.seq >= result.first_seq] == ["hitl_update", "hitl_resolved", "plan_updated"]
    assert result.last_seq == run.last_seq
    drain_runs(max_steps=2)
    assert Run.objects.get(pk=run_id).status == "completed"


def test_an_answer_whose_run_changed_after_the_read_takes_the_locking_path(
        api_for, client_user, operator, make_user, monkeypatch):
    """Someone else's response lands between the answer's read and its write:
    the write is fenced off (nothing of it stays) and the locking path
    refuses the answer as stale, as it would have under the lock."""
    if connection.vendor != "postgresql":
        pytest.skip("the one-statement answer is PostgreSQL's")
    run_id, request = _asking(api_for, client_user)
    other = make_user("omar", "operator")
    read = services.run_for_answer

    def read_then_someone_responds(**kwargs: Any) -> Any:
        snapshot = read(**kwargs)
        hitl_respond(user=other, run_id=run_id, request_id=request.id,
                     responses=[{"responseType": "freeform", "freeformText": "wait"}])
        return snapshot

    monkeypatch.setattr(services, "run_for_answer", read_then_someone_responds)
    with pytest.raises(StaleHitlState):
        hitl_resume(user=operator, run_id=run_id, request_id=request.id, responses=[APPROVE])
    request.refresh_from_db()
    assert request.status == "pending"
    assert list(HitlResponse.objects.filter(request=request).values_list("responder_id", flat=True)) == [other.pk]
    run = Run.objects.get(pk=run_id)
    assert run.status == "awaiting_hitl" and not AuditEntry.objects.filter(run_id=run_id, action="hitl_resumed")
    assert event_types(run_id)[-1] == "hitl_update"


def test_a_resumed_run_is_claimed_with_what_the_worker_loads_of_it(api_for, client_user, operator):
    run_id, request = _asking(api_for, client_user)
    hitl_resume(user=operator, run_id=run_id, request_id=request.id, responses=[APPROVE])
    claim = lease.claim_next(worker_id="w1", sweep=False)
    assert claim is not None and claim.run_id == run_id
    seen = Statements()
    with connection.execute_wrapper(seen):
        ctx = loop.load(claim)
    if connection.vendor == "postgresql":
        assert seen.own() == [], seen.own()  # facets, plan version, node rows: read by the claim
        assert ctx.clarifications is False
    # The same as the ORM reads.
    run = Run.objects.get(pk=run_id)
    facets, provenance = run.facet_snapshot()
    assert (ctx.run.facets, ctx.run.provenance) == (facets, provenance)
    assert list(ctx.run.facets) == list(facets) and ctx.run.facets
    assert ctx.graph == PlanVersion.objects.get(run_id=run_id, version=run.plan_version).graph
    rows = list(NodeRun.objects.filter(run_id=run_id))
    assert list(ctx.nodes) == [n.node_id for n in rows]
    fields = [f.attname for f in NodeRun._meta.concrete_fields]
    for row in rows:
        assert {f: getattr(ctx.nodes[row.node_id], f) for f in fields} == {f: getattr(row, f) for f in fields}
    seen = Statements()
    with connection.execute_wrapper(seen):
        assert loop.advance(claim, ctx=ctx) == "completed"
    if connection.vendor == "postgresql":
        # No clarification was ever answered: the nodes after the resume do not look for any.
        assert not [s for s in seen.sql if '"hitl_hitlrequest"' in s], seen.sql
