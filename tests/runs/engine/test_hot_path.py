"""The engine's per-run statements (runs.engine.lease, runs.engine.loop,
runs.transitions): the claim in one statement that brings the run along,
planning in one commit (queued -> planning -> running), the plan's node rows
inserted in their first statuses, and the lease let go by the commit that
ends the run or makes it wait for a person — same guarantees as before."""
from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

from hitl.models import HitlRequest
from planner import planner as planner_module
from runs.engine import lease, loop
from runs.engine.worker import drain as drain_runs
from runs.models import NodeRun, Run, RunEvent
from runs.services import hitl_resume
from runs.transitions import TransitionNotAllowed, run_transition
from tests.conftest import load_envelope
from tests.runs.engine.statements import Statements
from tests.hitl.helpers import APPROVE, submit

pytestmark = pytest.mark.django_db


def test_a_claim_is_one_statement_on_postgresql_and_brings_the_run_along(api_for, client_user):
    run_id = submit(api_for(client_user), load_envelope("linkedin-variants"))
    seen = Statements()
    with connection.execute_wrapper(seen):
        claim = lease.claim_next(worker_id="w1")
    assert claim is not None and claim.run_id == run_id and not claim.takeover
    row = Run.objects.get(pk=run_id)
    assert row.lease_owner == "w1" and row.lease_token == claim.token
    if connection.vendor == "postgresql":
        assert len(seen.sql) == 1, seen.sql
        run = claim.take_run()
        assert run is not None and run.pk == run_id and run.lease_token == claim.token
        assert run.envelope == row.envelope and run.created_by_username == client_user.username
        assert claim.take_run() is None  # the first load takes it; later loads read the row
    else:
        assert claim.take_run() is None
    # Nobody else gets it while the lease holds.
    assert lease.claim_next(worker_id="w2") is None


def test_planning_is_one_commit_from_queued_to_running_with_the_first_node_inserted_running(
        api_for, client_user):
    run_id = submit(api_for(client_user), load_envelope("linkedin-variants"))
    claim = lease.claim_next(worker_id="w1")
    assert claim is not None
    ctx = loop.load(claim)
    seen = Statements()
    with connection.execute_wrapper(seen):
        loop.plan(ctx)
    assert Run.objects.get(pk=run_id).status == "running"
    types = list(RunEvent.objects.filter(run_id=run_id).order_by("seq").values_list("type", flat=True))
    assert types == ["start", "plan_requested", "plan_generated", "node_start"]
    assert RunEvent.objects.get(run_id=run_id, type="start").payload["status"] == "planning"
    first = NodeRun.objects.get(run_id=run_id, node_id="strategist")
    assert first.status == "running" and first.attempts == 1 and first.started_at is not None
    assert ctx.nodes["strategist"].pk == first.pk  # pks set by the commit that inserted them
    assert not [s for s in seen.sql if s.lstrip().upper().startswith('UPDATE "RUNS_NODERUN"')]
    if connection.vendor == "postgresql":
        # The run, its events, the plan version and the node rows: one statement
        # (beside it only reads, and the test's own savepoint).
        writes = [s for s in seen.sql if s.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE", "WITH R")]
        assert len(writes) == 1, writes


def test_a_planner_that_raises_leaves_the_run_planning_for_the_sweep(api_for, client_user, monkeypatch):
    run_id = submit(api_for(client_user), load_envelope("linkedin-variants"))
    claim = lease.claim_next(worker_id="w1")
    assert claim is not None
    ctx = loop.load(claim)

    def broken(envelope: Any) -> Any:
        raise RuntimeError("planner bug")

    monkeypatch.setattr(loop, "build_plan", broken)
    with pytest.raises(RuntimeError):
        loop.plan(ctx)
    run = Run.objects.get(pk=run_id)
    assert run.status == "planning" and run.lease_owner == "w1"
    assert list(RunEvent.objects.filter(run_id=run_id).values_list("type", flat=True)) == ["start"]


def test_a_move_through_a_status_checks_both_moves(api_for, client_user):
    from django.db import transaction

    run_id = submit(api_for(client_user), load_envelope("linkedin-variants"))
    with pytest.raises(TransitionNotAllowed), transaction.atomic():
        # queued -> completed is not in the table (completed -> paused neither): nothing is written.
        run_transition(run_id=run_id, to="paused", expect=["queued"], via="completed", plan_version=0)
    assert Run.objects.get(pk=run_id).status == "queued"
    with transaction.atomic():
        run_transition(run_id=run_id, to="failed", expect=["queued"], via="planning", plan_version=0)
    run = Run.objects.get(pk=run_id)
    assert run.status == "failed" and run.completed_at is not None


def test_the_commit_that_ends_a_run_lets_go_of_it_and_the_worker_writes_nothing_after(api_for, client_user):
    run_id = submit(api_for(client_user), load_envelope("linkedin-variants"))
    seen = Statements()
    with connection.execute_wrapper(seen):
        drain_runs(max_steps=2)
    run = Run.objects.get(pk=run_id)
    assert run.status == "completed" and run.lease_owner == "" and run.lease_expires_at is None
    # No `release` (an UPDATE of the lease alone) after the completing commit.
    sets = [s.split(" WHERE ")[0] for s in seen.sql if s.lstrip().startswith('UPDATE "runs_run"')]
    releases = [s for s in sets if not any(f'"{c}"' in s for c in ("status", "lease_token", "pending_node_ids"))]
    assert releases == [], releases


def test_the_commit_that_asks_a_person_lets_go_and_the_resumed_run_is_claimed_again(
        api_for, client_user, operator):
    run_id = submit(api_for(client_user), load_envelope("approval-required"))
    seen = Statements()
    with connection.execute_wrapper(seen):
        drain_runs(max_steps=2)
    run = Run.objects.get(pk=run_id)
    assert run.status == "awaiting_hitl" and run.lease_owner == "" and run.lease_expires_at is None
    request = HitlRequest.objects.get(run_id=run_id, status="pending")
    if connection.vendor == "postgresql":
        # The request row is part of the asking step's one statement, fenced like the rest of it.
        asking = [s for s in seen.sql if '"hitl_hitlrequest"' in s and "INSERT" in s]
        assert len(asking) == 1 and asking[0].startswith("WITH r AS"), asking
    hitl_resume(user=operator, run_id=run_id, request_id=request.id, responses=[APPROVE])
    drain_runs(max_steps=2)
    run = Run.objects.get(pk=run_id)
    assert run.status == "completed" and run.lease_owner == ""
    seqs = list(RunEvent.objects.filter(run_id=run_id).order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))


def test_many_capabilities_sharing_a_prefix_get_the_same_node_ids_as_before():
    order = [f"bench.n{i}" for i in range(60)]
    ids = planner_module._node_ids(order)
    assert [ids[c] for c in order] == ["bench", *(f"bench-{i}" for i in range(2, 61))]
    taken = {"bench-3", "bench-4"}
    ids = planner_module._node_ids(order[:4], taken=taken)
    assert [ids[c] for c in order[:4]] == ["bench", "bench-2", "bench-5", "bench-6"]


def test_a_new_run_is_claimed_and_planned_in_the_claims_transaction(api_for, client_user):
    run_id = submit(api_for(client_user), load_envelope("linkedin-variants"))
    seen = Statements()
    with connection.execute_wrapper(seen):
        claimed = loop.claim_and_plan(worker_id="w1", sweep=False)
    assert claimed is not None
    claim, ctx = claimed
    assert claim.run_id == run_id and ctx is not None and ctx.run.status == "running"
    if connection.vendor == "postgresql":
        # The claim and the plan: two statements; the plan's needs no savepoint of its own
        # (the one seen is the claim's transaction nested in the test's).
        writes = [s for s in seen.sql if s.lstrip()[:6].upper() in ("INSERT", "UPDATE", "WITH R", "WITH C")]
        assert len(writes) == 2, writes
        assert len([s for s in seen.sql if s.startswith("SAVEPOINT")]) <= 1, seen.sql
    run = Run.objects.get(pk=run_id)
    assert run.status == "running" and run.lease_owner == "w1" and run.lease_token == claim.token
    assert loop.advance(claim, ctx=ctx) == "completed"
    assert Run.objects.get(pk=run_id).status == "completed"


def test_when_planning_raises_in_the_claims_transaction_nothing_of_it_stays_and_the_usual_path_shows_it(
        api_for, client_user, monkeypatch):
    run_id = submit(api_for(client_user), load_envelope("linkedin-variants"))

    def broken(envelope: Any) -> Any:
        raise RuntimeError("planner bug")

    monkeypatch.setattr(loop, "build_plan", broken)
    claimed = loop.claim_and_plan(worker_id="w1", sweep=False)
    assert claimed is not None
    claim, ctx = claimed
    assert ctx is None and claim.run_id == run_id
    assert not RunEvent.objects.filter(run_id=run_id).exists()  # the claim's transaction rolled back whole
    with pytest.raises(RuntimeError):
        loop.advance(claim)
    assert Run.objects.get(pk=run_id).status == "planning"


def test_a_resumed_run_is_claimed_and_started_in_the_claims_transaction(api_for, client_user, operator):
    run_id = submit(api_for(client_user), load_envelope("approval-required"))
    drain_runs(max_steps=2)
    request = HitlRequest.objects.get(run_id=run_id, status="pending")
    hitl_resume(user=operator, run_id=run_id, request_id=request.id, responses=[APPROVE])
    assert Run.objects.get(pk=run_id).status == "queued"
    claimed = loop.claim_and_plan(worker_id="w1", sweep=False)
    assert claimed is not None
    claim, ctx = claimed
    assert ctx is not None and ctx.run.status == "running"
    assert Run.objects.get(pk=run_id).status == "running"
    assert loop.advance(claim, ctx=ctx) == "completed"
