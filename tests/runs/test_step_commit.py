"""runs.transitions.step_commit, the engine's hot path (one statement on
PostgreSQL, one transaction on SQLite): the fence, gap-free numbering shared
with run_transition, the node table, facet rows, one commit per node step,
and a snapshot identical to what the old whole-snapshot rewrite produced."""
from __future__ import annotations

from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import F
from django.utils import timezone

from hitl.models import HitlRequest
from runs.debug import _facet_schemas, _scrub, redact_facet_values
from runs.engine import loop
from runs.events import event_log, event_node_complete, event_node_start
from runs.models import NodeRun, Run, RunEvent, RunFacet
from runs import notifications
from runs.transitions import FacetWrite, Fenced, TransitionNotAllowed, run_transition, step_commit
from tests.conftest import load_envelope
from tests.hitl.helpers import APPROVE, resume

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(client_user: Any) -> Run:
    run = Run.objects.create(objective="o", envelope={}, created_by=client_user, lease_token=7, status="running",
                             facets={"company_information": {"name": "Acme"}},
                             provenance={"company_information": {"nodeId": None, "source": "envelope"}})
    NodeRun.objects.create(run=run, node_id="a", capability_id="cap.A", kind="execution", status="running",
                           attempts=1)
    NodeRun.objects.create(run=run, node_id="b", capability_id="cap.B", kind="execution", position=1)
    return run


def nodes(run: Run) -> dict[str, NodeRun]:
    return {n.node_id: n for n in NodeRun.objects.filter(run=run)}


def step_kwargs(run: Run) -> dict[str, Any]:
    """Node a completes with facet `brief`, node b starts: one engine step."""
    by_id = nodes(run)
    kwargs: dict[str, Any] = dict(
        run_id=run.id, to=None, expect=["running"], plan_version=1, lease_token=7,
        updates={"pending_node_ids": ["b"]},
        nodes={by_id["a"].pk: {"status": "completed", "output": {"brief": {"text": "x"}}, "commits": F("commits") + 1},
               by_id["b"].pk: {"status": "running", "attempts": 1}},
        facets=[FacetWrite("brief", {"text": "x"}, "a", "cap.A", 1)],
        events=[event_node_complete(node_id="a", capability_id="cap.A", attempt=1, output_facets=["brief"],
                                    duration_ms=1.0),
                event_node_start(node_id="b", capability_id="cap.B", attempt=1)])
    return kwargs


def step(run: Run, **overrides: Any) -> list[RunEvent]:
    """The step inside a transaction of the caller's."""
    with transaction.atomic():
        return step_commit(**{**step_kwargs(run), **overrides})


def test_a_step_writes_the_run_both_nodes_the_facet_and_the_events_numbered_after_earlier_ones(run):
    with transaction.atomic():
        run_transition(run_id=run.id, to=None, expect=["running"], plan_version=1, lease_token=7,
                       events=[event_log(level="info", message=str(i)) for i in range(3)])

    written = step(run)

    assert [(e.seq, e.type) for e in written] == [(4, "node_complete"), (5, "node_start")]
    assert list(RunEvent.objects.filter(run=run).values_list("seq", "type", "node_id")) == [
        (1, "log", ""), (2, "log", ""), (3, "log", ""), (4, "node_complete", "a"), (5, "node_start", "b")]
    run.refresh_from_db()
    assert (run.last_seq, run.status, run.pending_node_ids) == (5, "running", ["b"])
    by_id = nodes(run)
    assert (by_id["a"].status, by_id["a"].output, by_id["a"].commits) == ("completed", {"brief": {"text": "x"}}, 1)
    assert (by_id["b"].status, by_id["b"].attempts) == ("running", 1)
    facets, provenance = run.facet_snapshot()
    assert facets == {"company_information": {"name": "Acme"}, "brief": {"text": "x"}}
    assert provenance["brief"] == {"nodeId": "a", "capabilityId": "cap.A", "planVersion": 1}
    # The run row itself keeps what the run started with: the step wrote one row for its facet.
    assert run.facets == {"company_information": {"name": "Acme"}}


def test_a_facet_written_again_replaces_its_row_and_keeps_its_place(run):
    step(run, nodes={}, events=[], facets=[FacetWrite("brief", {"v": 1}, "a", "cap.A", 1),
                                           FacetWrite("tone", "warm", "a", "cap.A", 1)])
    step(run, nodes={}, events=[], facets=[FacetWrite("brief", {"v": 2}, "b", "cap.B", 2)])

    facets, provenance = Run.objects.get(pk=run.pk).facet_snapshot()
    assert list(facets) == ["company_information", "brief", "tone"]
    assert facets["brief"] == {"v": 2} and provenance["brief"] == {"nodeId": "b", "capabilityId": "cap.B",
                                                                   "planVersion": 2}
    assert RunFacet.objects.filter(run=run).count() == 2


@pytest.mark.parametrize("fence", [{"lease_token": 6}, {"expect": ["queued"]}, {"expect": ["paused", "queued"]}])
def test_a_stale_token_or_status_commits_nothing(run, fence):
    before = nodes(run)

    with pytest.raises(Fenced):
        step(run, **fence)

    run.refresh_from_db()
    assert (run.last_seq, run.status, run.pending_node_ids) == (0, "running", [])
    after = nodes(run)
    assert [(n.status, n.attempts, n.output, n.commits) for n in after.values()] == [
        (n.status, n.attempts, n.output, n.commits) for n in before.values()]
    assert not RunEvent.objects.filter(run=run).exists()
    assert not RunFacet.objects.filter(run=run).exists()


def test_a_node_not_in_a_status_its_move_starts_from_rolls_the_whole_step_back(run):
    NodeRun.objects.filter(run=run, node_id="a").update(attempts=9)  # a is running: may complete
    b = nodes(run)["b"]

    with pytest.raises(TransitionNotAllowed):
        # b is pending: pending -> completed is not in the table.
        step(run, nodes={b.pk: {"status": "completed"}})

    run.refresh_from_db()
    assert run.last_seq == 0 and not RunEvent.objects.filter(run=run).exists()
    assert not RunFacet.objects.filter(run=run).exists()
    assert nodes(run)["b"].status == "pending"


def test_a_run_move_the_table_forbids_is_refused_before_anything_is_written(run):
    with pytest.raises(TransitionNotAllowed):
        step(run, to="planning")  # running -> planning is not a move

    run.refresh_from_db()
    assert (run.status, run.last_seq) == ("running", 0)
    assert nodes(run)["a"].status == "running" and not RunFacet.objects.filter(run=run).exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("refused", ["node", "fence"])
def test_alone_outside_a_transaction_a_refused_step_commits_nothing_either(run, refused):
    """On PostgreSQL the step is then its own transaction (one statement):
    a refused node fails the statement itself."""
    b = nodes(run)["b"]
    overrides: dict[str, Any] = {"nodes": {b.pk: {"status": "completed"}}} if refused == "node" else {"lease_token": 1}

    with pytest.raises(TransitionNotAllowed if refused == "node" else Fenced):
        step_commit(**{**step_kwargs(run), **overrides})

    run.refresh_from_db()
    assert (run.last_seq, run.pending_node_ids) == (0, [])
    assert not RunEvent.objects.filter(run=run).exists() and not RunFacet.objects.filter(run=run).exists()
    assert [n.status for n in nodes(run).values()] == ["running", "pending"]


@pytest.mark.django_db(transaction=True)
def test_alone_outside_a_transaction_a_step_commits(run):
    step_commit(**step_kwargs(run))

    assert Run.objects.get(pk=run.pk).last_seq == 2 and RunFacet.objects.filter(run=run).count() == 1


# --- the engine: one commit per node step ------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_every_node_step_is_exactly_one_commit(api_for, client_user, monkeypatch):
    """Counted on the connection, around each node step of a real run: one
    commit (and on PostgreSQL one statement, its own transaction: the step
    is one round trip)."""
    from runs.engine.worker import drain

    counts = {"commits": 0, "statements": 0}
    original_commit = BaseDatabaseWrapper._commit

    def counting_commit(self: Any) -> Any:
        counts["commits"] += 1
        return original_commit(self)

    def counting_statements(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        writes = sql.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE", "WITH R")
        if connection.in_atomic_block or writes:
            counts["statements"] += 1  # (reads after commit, e.g. the metrics', are not the step's)
        if writes and not connection.in_atomic_block:
            counts["commits"] += 1  # autocommit: the statement is its own transaction
        return execute(sql, params, many, context)

    steps: list[tuple[str, int, int]] = []
    original_run_node = loop.run_node

    def counted_run_node(ctx: Any, node: NodeRun, heartbeat: Any) -> None:
        before = dict(counts)
        original_run_node(ctx, node, heartbeat)
        steps.append((node.node_id, counts["commits"] - before["commits"],
                      counts["statements"] - before["statements"]))

    monkeypatch.setattr(BaseDatabaseWrapper, "_commit", counting_commit)
    monkeypatch.setattr(loop, "run_node", counted_run_node)
    run_id = api_for(client_user).post("/api/v1/flex/runs", load_envelope("linkedin-variants"),
                                       format="json").json()["runId"]
    # With no webhook subscriptions, a notifiable event (the run's `complete`)
    # costs no read once the cache knows there are none (runs.notifications);
    # warm it, so the count does not depend on which test ran before.
    notifications.active_subscriptions()
    with connection.execute_wrapper(counting_statements):
        drain()

    assert Run.objects.get(pk=run_id).status == "completed"
    assert [node_id for node_id, _, _ in steps] == ["strategist", "copywriter", "output"]
    assert all(commits == 1 for _, commits, _ in steps), steps
    if connection.vendor == "postgresql":
        assert all(statements == 1 for _, _, statements in steps), steps


# --- the derived snapshot against the old whole rewrite ---------------------------


def old_full_rewrite(run_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Reference: the snapshot as the engine wrote it before facet rows. The
    run started with its inputs (`run_create`), and every node's commit
    rewrote the WHOLE `facets` and `provenance` with that node's output
    (`runs.engine.loop.on_success` then), replayed here in commit order."""
    run = Run.objects.get(pk=run_id)
    facets: dict[str, Any] = dict(run.facets)
    provenance: dict[str, Any] = dict(run.provenance)
    for event in RunEvent.objects.filter(run_id=run_id, type="node_complete").order_by("seq"):
        node = NodeRun.objects.get(run_id=run_id, node_id=event.node_id)
        output = node.output or {}
        facets = dict(facets)
        provenance = dict(provenance)
        for name, value in output.items():
            if name == "output":
                continue  # the mapped output is not a facet
            facets[name] = value
            provenance[name] = {"nodeId": node.node_id, "capabilityId": node.capability_id,
                                "planVersion": event.plan_version}
    return facets, provenance


def debug_body(api_for: Any, user: Any, run_id: str) -> dict[str, Any]:
    cache.clear()  # throttle counts
    response = api_for(user).get(f"/api/v1/flex/runs/{run_id}")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def test_the_derived_snapshot_and_the_debug_view_equal_the_old_rewrite(api_for, client_user, operator, support,
                                                                         drain):
    api = api_for(client_user)
    plain = api.post("/api/v1/flex/runs", load_envelope("linkedin-variants"), format="json").json()["runId"]
    approved = api.post("/api/v1/flex/runs", load_envelope("approval-required"), format="json").json()["runId"]
    drain()
    request = HitlRequest.objects.get(run_id=approved, status="pending")
    assert resume(api_for(operator), approved, request.id, [APPROVE]).status_code == 200
    drain()

    schemas = _facet_schemas()
    for run_id in (plain, approved):
        run = Run.objects.get(pk=run_id)
        assert run.status == "completed"
        expected_facets, expected_provenance = old_full_rewrite(run_id)
        assert len(expected_facets) > len(run.facets)  # nodes did produce facets
        facets, provenance = run.facet_snapshot()
        assert (facets, provenance) == (expected_facets, expected_provenance)
        body = debug_body(api_for, support, run_id)
        assert body["latestSnapshot"]["facets"] == redact_facet_values(expected_facets, schemas)
        assert body["facetProvenance"] == _scrub(expected_provenance)
    # The approved run's facets came from two plan versions' worth of steps.
    assert Run.objects.get(pk=approved).plan_version == 2


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the one-statement step is PostgreSQL's")
def test_a_step_of_a_known_shape_reuses_the_text_and_sends_the_same_statement(run, monkeypatch):
    """The statement's text is kept per shape of step: the text and the
    parameters sent are those of a statement made anew, and the kept text
    serves a step of the same shape with other values."""
    from runs import transitions

    sent: list[tuple[str, list[Any]]] = []

    def record(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql.startswith("WITH r AS"):
            sent.append((sql, list(params)))
        return execute(sql, params, many, context)

    monkeypatch.setattr(transitions, "_STEP_SQL", {})
    with connection.execute_wrapper(record):
        step(run)  # the shape's first step: its text made and kept
        assert len(transitions._STEP_SQL) == 1
        by_id = nodes(run)
        Run.objects.filter(pk=run.pk).update(lease_token=8)
        with transitions.status_writer():  # both nodes back to where the step starts from
            NodeRun.objects.filter(pk=by_id["a"].pk).update(status="running")
            NodeRun.objects.filter(pk=by_id["b"].pk).update(status="pending")
        other = step_kwargs(run) | {"lease_token": 8, "updates": {"pending_node_ids": ["a", "b"]}}
        with transaction.atomic():
            step_commit(**other)  # the same shape, other values: the kept text
    assert len(transitions._STEP_SQL) == 1
    assert len(sent) == 2
    assert sent[0][0] == sent[1][0]
    # What a statement made anew would send, text and parameters alike
    # (but the step's time).
    fresh = _fresh_statement(other)
    assert sent[1][0] == fresh[0]
    assert [_plain(p) for p in sent[1][1]] == [_plain(p) for p in fresh[1]]
    assert [_plain(p) for p in sent[1][1]] != [_plain(p) for p in sent[0][1]]  # other values, the kept text
    by_id = nodes(run)
    assert (by_id["a"].status, by_id["b"].status, Run.objects.get(pk=run.pk).pending_node_ids) == (
        "completed", "running", ["a", "b"])


def test_the_parameters_are_the_same_whether_the_text_is_made_or_not(run):
    from runs import transitions

    kwargs = step_kwargs(run)
    values = dict(kwargs["updates"], plan_version=1, lease_expires_at=timezone.now())
    node_changes = [(pk, transitions._node_sources(pk, changes), changes) for pk, changes in kwargs["nodes"].items()]
    made = [transitions._step_statement(
        connection, run_id=run.id, lease_token=7, statuses=["running"], updates=values, nodes=node_changes,
        facets=kwargs["facets"], events=kwargs["events"], plan_version=1, now=values["lease_expires_at"], inserts=(),
        run_version=None, row_updates=(), build=build) for build in (True, False)]
    assert made[0][0].startswith("WITH r AS") and made[1][0] == ""
    assert [_plain(p) for p in made[0][1]] == [_plain(p) for p in made[1][1]]
    assert len(made[0][1]) == made[0][0].count("%s")


def _plain(value: Any) -> Any:
    from datetime import datetime

    if isinstance(value, datetime):
        return datetime  # the step's time: `now` of each call
    return getattr(value, "obj", value)  # psycopg's Jsonb wrapper: its value


def _fresh_statement(kwargs: dict[str, Any]) -> tuple[str, list[Any]]:
    from runs import transitions

    values = dict(kwargs["updates"])
    now = timezone.now()
    transitions._check_run_move(kwargs["run_id"], kwargs["to"], list(kwargs["expect"]), values, now, via=None)
    node_changes = [(pk, transitions._node_sources(pk, changes), changes) for pk, changes in kwargs["nodes"].items()]
    sql, params, _groups = transitions._step_statement(
        connection, run_id=kwargs["run_id"], lease_token=kwargs["lease_token"], statuses=list(kwargs["expect"]),
        updates=values, nodes=node_changes, facets=kwargs["facets"], events=kwargs["events"],
        plan_version=kwargs["plan_version"], now=now, inserts=(), run_version=None, row_updates=())
    return sql, params


def test_the_event_rows_of_a_step_equal_rows_made_with_keywords():
    from runs import transitions

    now = timezone.now()
    pending = [event_node_complete(node_id="a", capability_id="cap.A", attempt=1, output_facets=["brief"],
                                   duration_ms=1.0),
               event_log(level="info", message="m")]
    rows = transitions._event_rows("r1", 9, pending, 3, now)
    expected = [RunEvent(run_id="r1", seq=8 + i, type=e.type, node_id=e.node_id, plan_version=3, payload=e.payload,
                         created_at=now) for i, e in enumerate(pending)]

    def fields(row: RunEvent) -> dict[str, Any]:
        return {k: v for k, v in vars(row).items() if k != "_state"} | {
            "adding": row._state.adding, "db": row._state.db}

    assert [fields(r) for r in rows] == [fields(r) for r in expected]
    assert [r.seq for r in rows] == [8, 9] and rows[0].pk is None
