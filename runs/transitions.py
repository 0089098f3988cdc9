"""The only writer of run and node status.

`run_transition` is how every caller — the engine's commit (planning,
nodes, policies, recovery after a lease takeover), cancel, resume and
remove — changes a run and appends its events:

1. it checks every (expected, to) pair against `RUN_TRANSITIONS` (beside
   `RunStatus` in runs/models.py) and raises `TransitionNotAllowed` for a
   move the table does not list, before touching anything;
2. it runs one conditional `UPDATE runs_run SET …, last_seq = last_seq + n
   WHERE id = … AND status IN (expected) [AND lease_token = …] RETURNING
   last_seq`, which also takes the run's row lock, so every writer of the run
   queues behind the others until commit and `seq` has no gap or repeat;
3. it inserts the events numbered from the returned `last_seq`, their
   notification outbox rows (`runs.notifications.enqueue`: webhooks and
   email, nothing for most event types) and schedules their publication
   for after the commit;
4. when the row was not in an expected state (or the lease moved on) it
   raises `Fenced`: the caller's transaction rolls back.

`nodes_update` writes node rows, conditional on `NODE_TRANSITIONS`.

`step_commit` is the engine's hot path: the same three things for one step
(the fenced run UPDATE, the node rows, the events) as ONE statement on
PostgreSQL — a data-modifying CTE whose node updates and event insert join
the run update's RETURNING row, so a stale token or status writes nothing —
and one transaction of raw statements on SQLite. The facet values a node
produced are upserted as `RunFacet` rows (one per facet, with provenance):
a step writes its own output, never the run's accumulated snapshot, so its
cost does not grow with the run. `facets_write` does the same for steps
that take the general path.

The ORM refuses status writes anywhere else (`runs.models.StatusGuardedQuerySet`):
only code running inside `status_writer()` may change a status field, and
only this module enters it.
"""
from __future__ import annotations

import json
import sqlite3
from datetime import date, datetime
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from functools import lru_cache
from typing import Any, NamedTuple

from django.db import DataError, transaction
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import F, Field, JSONField, Q, Value
from django.db.models.expressions import CombinedExpression
from django.utils import timezone

from runs import notifications
from runs.events import PendingEvent, publish_on_commit
from runs.models import (NODE_TRANSITIONS, RUN_TRANSITIONS, STATUS_WRITER, TERMINAL_STATUSES, NodeRun, Run,
                         RunEvent, RunFacet, RunStatus)


class FacetWrite(NamedTuple):
    """A facet value a node produced, with its provenance (a `RunFacet` row)."""

    name: str
    value: Any
    node_id: str
    capability_id: str
    plan_version: int


class CommittedStep(list[RunEvent]):
    """The events a `step_commit` wrote, and what the run's row said then:
    `triggers_pending` — manual policy triggers recorded on the run and not
    yet applied (the engine applies them before its next step)."""

    triggers_pending: bool = True


class RowUpdate(NamedTuple):
    """A row of another table a commit updates (`resume_commit`): `values`
    set on the row whose pk is `pk`, if its fields still hold `expect` and
    (given) its version (`xmin`) is still `version`."""

    model: type
    pk: Any
    expect: Mapping[str, Any]
    values: Mapping[str, Any]
    version: str | None = None


class Fenced(Exception):
    """The conditional update matched no row: the caller lost its lease, or the
    run left the status the caller expected (cancelled, resumed, …)."""


class TransitionNotAllowed(Fenced):
    """A status move the transition table does not list. Nothing was written."""


def run_transition_allowed(from_status: str, to_status: str) -> bool:
    return to_status in RUN_TRANSITIONS.get(from_status, frozenset())


def node_transition_allowed(from_status: str, to_status: str) -> bool:
    return to_status in NODE_TRANSITIONS.get(from_status, frozenset())


# Set while the caller's transaction is given up whole on any error
# (`all_or_nothing`): a step inside it needs no savepoint of its own.
ALL_OR_NOTHING: ContextVar[bool] = ContextVar("runs_all_or_nothing", default=False)


@contextmanager
def all_or_nothing() -> Iterator[None]:
    """A transaction (`transaction.atomic()`) whose caller rolls it back
    whole when anything in it fails — the claim-and-plan of a new run: steps
    committed inside skip their savepoint."""
    with transaction.atomic():
        token = ALL_OR_NOTHING.set(True)
        try:
            yield
        finally:
            ALL_OR_NOTHING.reset(token)


@contextmanager
def status_writer() -> Iterator[None]:
    """Lets the ORM write status fields in this context (this module; test
    fixtures that set up a state directly)."""
    token = STATUS_WRITER.set(True)
    try:
        yield
    finally:
        STATUS_WRITER.reset(token)


def run_transition(
    *,
    run_id: str,
    to: str | None,
    expect: Iterable[str] | None,
    plan_version: int,
    lease_token: int | None = None,
    updates: Mapping[str, Any] | None = None,
    events: Iterable[PendingEvent] = (),
    via: str | None = None,
) -> list[RunEvent]:
    """Move a run from one of `expect` (None: any status) to `to` (None: the
    status stays), apply `updates` to its row and append `events` written at
    `plan_version`, in the caller's transaction. Returns the written events.
    `via`: a status the run passes through in this same commit (queued →
    planning → running when the plan is made at once); both moves are checked.

    Raises `TransitionNotAllowed` when the table forbids a move from one of
    `expect` to `to`, `Fenced` when the row is not in one of `expect` or no
    longer has `lease_token`; either way nothing was written.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("run_transition must run inside transaction.atomic()")
    expected = None if expect is None else [str(status) for status in expect]
    pending = list(events)
    now = timezone.now()
    values = dict(updates or {})
    _check_run_move(run_id, to, expected, values, now, via=via)
    with status_writer():
        last_seq = _bump_run(run_id=run_id, count=len(pending), lease_token=lease_token, statuses=expected,
                             updates=values)
    if last_seq is None:
        raise Fenced(run_id)
    if not pending:
        return []
    rows = _event_rows(run_id, last_seq, pending, plan_version, now)
    RunEvent.objects.bulk_create(rows)
    notifications.enqueue(rows)
    publish_on_commit(rows)
    return rows


def _check_run_move(run_id: str, to: str | None, expected: list[str] | None, values: dict[str, Any],
                    now: Any, *, via: str | None = None) -> None:
    """The transition-table check of a run move (through `via`, if given);
    adds status, completed_at and updated_at to `values`."""
    if "status" in values:
        raise TypeError("run_transition sets the status from `to`, not from `updates`")
    if via is not None:
        if not expected:
            raise TypeError("a move through a status needs the statuses it starts from (`expect`)")
        forbidden = [status for status in expected if not run_transition_allowed(status, via)]
        if to is not None and not run_transition_allowed(via, to):
            forbidden.append(via)
        if forbidden:
            raise TransitionNotAllowed(f"{run_id}: {', '.join(forbidden)} -> {via} -> {to}")
        values["status"] = to if to is not None else via
        if values["status"] in TERMINAL_STATUSES:
            values.setdefault("completed_at", now)
    elif to is not None:
        if expected is None:
            raise TypeError("a status change needs the statuses it starts from (`expect`)")
        forbidden = [status for status in expected if not run_transition_allowed(status, to)]
        if forbidden or not expected:
            raise TransitionNotAllowed(f"{run_id}: {', '.join(forbidden) or '(nothing)'} -> {to}")
        values["status"] = to
        if to in TERMINAL_STATUSES:
            values.setdefault("completed_at", now)
    values["updated_at"] = now


def _event_rows(run_id: str, last_seq: int, pending: Sequence[PendingEvent], plan_version: int,
                now: Any) -> list[RunEvent]:
    """The committed events as rows, numbered up to `last_seq`. Made with
    positional values in the model's field order (Django's fast path, as
    for rows read from the database): the same instances as with keywords."""
    first = last_seq - len(pending) + 1
    attnames = _event_attnames()
    rows = []
    for i, e in enumerate(pending):
        values = {"id": None, "run_id": run_id, "seq": first + i, "type": e.type, "node_id": e.node_id,
                  "plan_version": plan_version, "payload": e.payload, "created_at": now}
        rows.append(RunEvent(*[values[name] for name in attnames]))
    return rows


@lru_cache(maxsize=None)
def _event_attnames() -> tuple[str, ...]:
    return tuple(f.attname for f in RunEvent._meta.concrete_fields)


def step_commit(
    *,
    run_id: str,
    to: str | None,
    expect: Iterable[str],
    plan_version: int,
    lease_token: int,
    updates: Mapping[str, Any],
    nodes: Mapping[int, Mapping[str, Any]] | None = None,
    facets: Sequence[FacetWrite] = (),
    events: Sequence[PendingEvent] = (),
    via: str | None = None,
    inserts: Sequence[Any] = (),
) -> CommittedStep:
    """`run_transition` + `nodes_update` of one engine step, as ONE statement
    on PostgreSQL — one round trip: outside a transaction the statement is
    its own (no BEGIN, one COMMIT), inside the caller's it joins it — and one
    transaction of raw statements on SQLite. Same checks, same guarantees:

    - the run and node moves are checked against the transition tables first
      (`TransitionNotAllowed`, nothing written);
    - the run row is updated only with `lease_token` and a status in
      `expect`, and `last_seq` grows by the number of events; the node
      updates, the facet rows and the event insert happen only if that
      update did (they join its RETURNING row), so a stale token writes
      nothing (`Fenced`);
    - a node whose row is not in a status its move is allowed from fails the
      whole step (`TransitionNotAllowed`; on PostgreSQL the statement itself
      raises, so nothing of it is committed).

    `inserts`: new rows of other tables (model instances: a plan's version
    and node rows), inserted only if the run update matched; their pks are
    set on them.

    Events are numbered from the returned `last_seq` (gap-free under the
    row lock) and published after commit. The result also says whether the
    run's row holds manual policy triggers (read in the same statement). Extend it by passing more events
    or adding a part to the statement (an outbox row joins `r` like the
    events do); writes of other shapes take `run_transition` in a transaction.
    """
    expected = [str(status) for status in expect]
    now = timezone.now()
    values = dict(updates)
    _check_run_move(run_id, to, expected, values, now, via=via)
    node_changes = [(pk, _node_sources(pk, changes), changes) for pk, changes in (nodes or {}).items()]
    connection = transaction.get_connection()
    if connection.vendor == "postgresql":
        # Alone, the statement is atomic by itself; in the caller's
        # transaction, a savepoint keeps a refused node from aborting it —
        # none inside a transaction the caller gives up whole on any error
        # (`all_or_nothing`: one round trip less each way).
        rows, triggers = _commit_postgresql(
            connection, savepoint=not ALL_OR_NOTHING.get(), run_id=run_id, lease_token=lease_token,
            statuses=expected, updates=values, nodes=node_changes, facets=facets, events=events,
            plan_version=plan_version, now=now, inserts=inserts)
    else:
        with transaction.atomic(), status_writer():
            last_seq = _bump_run(run_id=run_id, count=len(events), lease_token=lease_token, statuses=expected,
                                 updates=values)
            if last_seq is None:
                raise Fenced(run_id)
            rows = _event_rows(run_id, last_seq, events, plan_version, now) if events else []
            rows_insert(inserts)
            _write_sqlite(connection, nodes=node_changes, rows=rows)
            facets_write(run_id, facets)
            notifications.enqueue(rows)
            triggers = _triggers_pending_sqlite(connection, run_id)
    if rows:
        publish_on_commit(rows)  # at once when the statement was its own transaction
    result = CommittedStep(rows)
    result.triggers_pending = triggers
    return result


def _commit_postgresql(connection: Any, *, savepoint: bool, run_id: str, events: Sequence[PendingEvent],
                       plan_version: int, now: Any, **step: Any) -> tuple[list[RunEvent], bool]:
    """`_step_postgresql` as its own transaction, or in the caller's (behind
    a savepoint when `savepoint`, so that a refused node does not abort it).
    An event that notifies someone (an active subscription follows its type,
    or it emails people it names) takes its outbox rows in the same
    transaction, so such a step opens one; the others — `complete` and
    `hitl_request` with nobody to tell — stay one statement. Returns the
    event rows and whether manual policy triggers are pending."""
    notifying = notifications.needs_outbox(events)
    try:
        with (transaction.atomic(savepoint=savepoint) if connection.in_atomic_block or notifying
              else nullcontext()), status_writer():
            last_seq, triggers = _step_postgresql(connection, run_id=run_id, events=events,
                                                  plan_version=plan_version, now=now, **step)
            if last_seq is None:
                raise Fenced(run_id)
            rows = _event_rows(run_id, last_seq, events, plan_version, now) if events else []
            if notifying:
                notifications.enqueue(rows)
    except DataError as exc:
        if _NODE_REFUSED in str(exc):
            raise TransitionNotAllowed(f"{run_id}: a node is not in a status its move starts from") from None
        if _ROW_MOVED in str(exc):
            raise Fenced(f"{run_id}: a row changed meanwhile") from None
        raise
    return rows, triggers


def _triggers_pending_sqlite(connection: Any, run_id: str) -> bool:
    qn = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {qn('manual_triggers')} FROM {qn(Run._meta.db_table)} WHERE {qn('id')} = %s",
                       [run_id])
        row = cursor.fetchone()
    return row is not None and row[0] not in (None, "", "[]", [])


def _node_sources(pk: int, changes: Mapping[str, Any]) -> list[str] | None:
    """The statuses a node may be in for `changes` (None: any)."""
    to = changes.get("status")
    if to is None:
        return None
    sources = _allowed_sources(str(to))
    if not sources:
        raise TransitionNotAllowed(f"node {pk} -> {to}")
    return sources


@lru_cache(maxsize=None)
def _allowed_sources_cached(to: str) -> tuple[str, ...]:
    return tuple(str(s) for s in NODE_TRANSITIONS if node_transition_allowed(s, to))


def _allowed_sources(to: str) -> list[str]:
    return list(_allowed_sources_cached(to))


# --- SQL of the hot path ---------------------------------------------------------

def lease_claim(*, worker_id: str, now: Any, expires_at: Any, sweep: bool, run_id: str | None = None) -> Run | None:
    """PostgreSQL: lease the oldest claimable run (or `run_id`) in ONE
    statement — the row locked with `FOR UPDATE SKIP LOCKED` (concurrent
    workers pick different runs without waiting) and its lease taken
    (`lease_token + 1`, owner, expiry) — and return it, loaded as the worker
    needs it (`previous_owner`: the owner before this claim, and
    `created_by_username`, set on it), or None. The conditions are
    `runs.engine.lease.claim_next`'s; the status is read, never written."""
    connection = transaction.get_connection()
    sql = _claim_sql(connection.ops.quote_name, sweep, run_id is not None)
    params: list[Any] = [now] * (4 if sweep else 3) + ([run_id] if run_id is not None else [])
    params += [worker_id, expires_at]
    for run in Run.objects.raw(sql, params):
        return run
    return None


@lru_cache(maxsize=None)
def _claim_sql(qn: Any, sweep: bool, by_id: bool) -> str:
    t = qn(Run._meta.db_table)
    status, owner, expires, available = (qn(c) for c in ("status", "lease_owner", "lease_expires_at",
                                                           "available_at"))
    # Queued with a free or expired lease, and available; running and let go
    # on purpose (no owner, expired); with `sweep`, any running or planning
    # run whose lease expired (a dead worker's). Index run_queue_idx serves
    # the queued branch, run_lease_idx the expired ones.
    claimable = [f"({status} = '{RunStatus.QUEUED}' AND ({expires} IS NULL OR {expires} < %s) "
                 f"AND ({available} IS NULL OR {available} <= %s))",
                 f"({status} = '{RunStatus.RUNNING}' AND {owner} = '' AND {expires} < %s)"]
    if sweep:
        claimable.append(f"({status} IN ('{RunStatus.RUNNING}', '{RunStatus.PLANNING}') AND {expires} < %s)")
    where = f"({' OR '.join(claimable)})" + (f" AND {qn('id')} = %s" if by_id else "")
    # A run planned before (resumed, taken over) comes with what the engine
    # loads of it (`runs.engine.loop.load`): its facet rows, its plan
    # version's graph, its node rows, and whether it has answered
    # clarifications. These reads see the statement's snapshot; `loaded_fresh`
    # says whether the row locked is the version the snapshot saw (nobody
    # wrote the run between the two, so they match it) — else they are
    # ignored and read again.
    from hitl.models import HitlRequest
    from runs.models import PlanVersion

    facet_t, plan_t, node_t, request_t = (qn(m._meta.db_table)
                                          for m in (RunFacet, PlanVersion, NodeRun, HitlRequest))
    planned = f"{t}.{qn('plan_version')} > 0"
    run_id = f"{t}.{qn('id')}"
    loaded = (
        f", {planned} AND c.seen = (SELECT s.xmin::text FROM {t} s WHERE s.{qn('id')} = c.{qn('id')}) "
        f"AS loaded_fresh, "
        f"CASE WHEN {planned} THEN (SELECT jsonb_agg(jsonb_build_array(f.{qn('name')}, f.{qn('value')}, "
        f"f.{qn('node_id')}, f.{qn('capability_id')}, f.{qn('plan_version')}) ORDER BY f.{qn('id')}) "
        f"FROM {facet_t} f WHERE f.{qn('run_id')} = {run_id}) END AS loaded_facets, "
        f"CASE WHEN {planned} THEN (SELECT v.{qn('graph')} FROM {plan_t} v WHERE v.{qn('run_id')} = {run_id} "
        f"AND v.{qn('version')} = {t}.{qn('plan_version')}) END AS loaded_graph, "
        f"CASE WHEN {planned} THEN (SELECT jsonb_agg(to_jsonb(n) ORDER BY n.{qn('position')}, n.{qn('id')}) "
        f"FROM {node_t} n WHERE n.{qn('run_id')} = {run_id}) END AS loaded_nodes, "
        f"{planned} AND EXISTS (SELECT 1 FROM {request_t} h WHERE h.{qn('run_id')} = {run_id} "
        f"AND h.{qn('kind')} = 'clarify' AND h.{qn('status')} = 'resolved') AS loaded_clarifications")
    return (f"WITH c AS (SELECT {qn('id')}, {owner}, xmin::text AS seen FROM {t} WHERE {where} "
            f"ORDER BY {qn('created_at')} LIMIT 1 FOR UPDATE SKIP LOCKED) "
            f"UPDATE {t} SET {owner} = %s, {qn('lease_token')} = {t}.{qn('lease_token')} + 1, {expires} = %s "
            f"FROM c WHERE {t}.{qn('id')} = c.{qn('id')} "
            f"RETURNING {t}.*, c.{owner} AS previous_owner, "
            f"(SELECT {qn('username')} FROM {qn('auth_user')} WHERE {qn('id')} = {t}.{qn('created_by_id')}) "
            f"AS created_by_username{loaded}")


class Loaded(NamedTuple):
    """A claimed run's rows as the claim read them (`claim_loaded`)."""

    facet_rows: list[tuple[str, Any, str, str, int]]
    graph: dict[str, Any]
    nodes: list[NodeRun]
    clarifications: bool


def claim_loaded(run: Run) -> Loaded | None:
    """What `lease_claim` read of a planned run along with it (facet rows,
    the current graph, the node rows, whether a clarification was answered),
    or None when it read nothing usable (a new run, another database, a run
    written between the claim's snapshot and its lock)."""
    if not getattr(run, "loaded_fresh", False) or not run.plan_version:
        return None
    graph = _loaded(getattr(run, "loaded_graph"))
    if graph is None:
        return None
    return Loaded(facet_rows=[(row[0], row[1], row[2], row[3], row[4])
                              for row in _loaded(getattr(run, "loaded_facets")) or []],
                  graph=graph,
                  nodes=[model_from_json(NodeRun, row) for row in _loaded(getattr(run, "loaded_nodes")) or []],
                  clarifications=bool(getattr(run, "loaded_clarifications")))


@lru_cache(maxsize=None)
def _column(model: type, name: str) -> tuple[Field, str]:  # type: ignore[type-arg]
    model_field = model._meta.get_field(name)  # type: ignore[attr-defined]
    assert isinstance(model_field, Field)  # concrete columns only
    return model_field, str(model_field.column)


def _increment(value: Any) -> int | None:
    """`F("x") + n` on the field itself -> n; None for anything else."""
    if (isinstance(value, CombinedExpression) and value.connector == "+" and isinstance(value.lhs, F)
            and isinstance(value.rhs, Value) and isinstance(value.rhs.value, int)):
        return int(value.rhs.value)
    return None


def _assignments(connection: Any, model: type, values: Mapping[str, Any], table: str = "", build: bool = True
                 ) -> tuple[list[str], list[Any]]:
    """`col = %s` (or `col = col + %s` for `F(col) + n`) and their parameters
    (`build=False`: the parameters only, the text being known)."""
    sets: list[str] = []
    params: list[Any] = []
    for name, value in values.items():
        model_field, column = _column(model, name)
        if hasattr(value, "resolve_expression"):
            step = _increment(value)
            if step is None or value.lhs.name != name:
                raise TypeError(f"{name}: only F('{name}') + n is supported here")
            if build:
                qn = connection.ops.quote_name
                sets.append(f"{qn(column)} = {table}{qn(column)} + %s")
            params.append(step)
            continue
        if build:
            sets.append(f"{connection.ops.quote_name(column)} = %s")
        params.append(model_field.get_db_prep_save(value, connection))
    return sets, params


def _values_shape(values: Mapping[str, Any]) -> tuple[tuple[str, bool], ...]:
    """What the text of `_assignments` depends on: the names, in order, and
    which of them are increments."""
    return tuple((name, hasattr(value, "resolve_expression")) for name, value in values.items())


# The step statement's text by the shape of the step (`_step_shape`): the
# hot path makes the same few shapes over and over (a node completes and the
# next starts), so the text is made once per shape and only the parameters
# per step.
_STEP_SQL: dict[Any, str] = {}
_STEP_SQL_MAX = 512


def _step_shape(connection: Any, lease_token: int | None, statuses: list[str], updates: Mapping[str, Any],
                nodes: list[tuple[int, list[str] | None, Mapping[str, Any]]], facets: Sequence[FacetWrite],
                events: Sequence[PendingEvent], inserts: Sequence[Any], run_version: str | None,
                row_updates: Sequence[RowUpdate]) -> Any:
    """The key of `_STEP_SQL` (None: a step whose text is not kept — one
    inserting rows or updating rows of other tables)."""
    if inserts or row_updates:
        return None
    return (connection.vendor, lease_token is None, run_version is None, len(statuses), _values_shape(updates),
            tuple((None if sources is None else len(sources), _values_shape(changes))
                  for _pk, sources, changes in nodes),
            len(events), len(facets))


def _step_postgresql(connection: Any, *, run_id: str, lease_token: int | None, statuses: list[str],
                     updates: dict[str, Any], nodes: list[tuple[int, list[str] | None, Mapping[str, Any]]],
                     facets: Sequence[FacetWrite], events: Sequence[PendingEvent], plan_version: int,
                     now: Any, inserts: Sequence[Any] = (), run_version: str | None = None,
                     row_updates: Sequence[RowUpdate] = ()) -> tuple[int | None, bool]:
    """The step as one data-modifying CTE; returns the new `last_seq` (None:
    fenced) and whether the run holds manual policy triggers. Raises `TransitionNotAllowed` when a node row was not in a
    status its move is allowed from. `run_version`: the run row's version
    (`xmin`) as the caller read it — the update is fenced on it too;
    `row_updates`: rows of other tables updated with it, each of which must
    match (or the statement fails: `_ROW_MOVED`)."""
    shape = _step_shape(connection, lease_token, statuses, updates, nodes, facets, events, inserts, run_version,
                        row_updates)
    known = _STEP_SQL.get(shape) if shape is not None else None
    sql, params, groups = _step_statement(
        connection, run_id=run_id, lease_token=lease_token, statuses=statuses, updates=updates, nodes=nodes,
        facets=facets, events=events, plan_version=plan_version, now=now, inserts=inserts, run_version=run_version,
        row_updates=row_updates, build=known is None)
    if known is not None:
        sql = known
    elif shape is not None and len(_STEP_SQL) < _STEP_SQL_MAX:
        _STEP_SQL[shape] = sql
    with _binding_cursor(connection) as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None or row[0] is None:
        return None, False
    for k, (model, objs) in enumerate(groups):
        for i, obj in enumerate(objs):
            if model._meta.auto_field is not None:  # type: ignore[attr-defined]
                obj.pk = row[2 + k][i]
            obj._state.adding = False
            obj._state.db = connection.alias
    return int(row[0]), bool(row[1])


def _binding_cursor(connection: Any) -> Any:
    """A cursor that sends the parameters apart from the statement
    (server-side binding) for the step statement: its dozens of parameters
    are not quoted into its text by the driver (our CPU per step). Otherwise
    Django's cursor (execute wrappers, error wrapping) as any other; other
    statements keep the driver's client-side binding."""
    from django.db.backends.postgresql.base import ServerBindingCursor

    connection.close_if_health_check_failed()
    connection.ensure_connection()
    with connection.wrap_database_errors:
        return connection._prepare_cursor(ServerBindingCursor(connection.connection))  # type: ignore[call-arg]


def _step_statement(connection: Any, *, run_id: str, lease_token: int | None, statuses: list[str],
                    updates: dict[str, Any], nodes: list[tuple[int, list[str] | None, Mapping[str, Any]]],
                    facets: Sequence[FacetWrite], events: Sequence[PendingEvent], plan_version: int,
                    now: Any, inserts: Sequence[Any], run_version: str | None, row_updates: Sequence[RowUpdate],
                    build: bool = True) -> tuple[str, list[Any], list[tuple[type, list[Any]]]]:
    """`_step_postgresql`'s statement: its text (`build=False`: "", the text
    being known for this shape), its parameters and the groups of rows it
    inserts. The parameters are the same either way."""
    qn = connection.ops.quote_name
    run_table, node_table, event_table = (qn(m._meta.db_table) for m in (Run, NodeRun, RunEvent))
    sets, params = _assignments(connection, Run, updates, build=build)
    sets.append(f"{qn('last_seq')} = {qn('last_seq')} + %s")
    params.append(len(events))
    params.append(run_id)
    fence = ""
    if lease_token is not None:
        fence += f" AND {qn('lease_token')} = %s"
        params.append(lease_token)
    if run_version is not None:
        fence += " AND xmin = %s::xid"
        params.append(run_version)
    params += statuses
    parts = [f"r AS (UPDATE {run_table} SET {', '.join(sets)} WHERE {qn('id')} = %s{fence} "
             f"AND {qn('status')} IN ({', '.join(['%s'] * len(statuses))}) "
             f"RETURNING {qn('last_seq')}, {qn('manual_triggers')} <> '[]'::jsonb AS triggers)"] if build else []
    for k, change in enumerate(row_updates):
        table = qn(change.model._meta.db_table)  # type: ignore[attr-defined]
        row_sets, row_params = _assignments(connection, change.model, change.values)
        conditions = [f"{table}.{qn(change.model._meta.pk.column)} = %s"]  # type: ignore[attr-defined]
        row_params.append(change.pk)
        for name, value in change.expect.items():
            model_field, column = _column(change.model, name)
            conditions.append(f"{table}.{qn(column)} = %s")
            row_params.append(model_field.get_db_prep_save(value, connection))
        if change.version is not None:
            conditions.append(f"{table}.xmin = %s::xid")
            row_params.append(change.version)
        parts.append(f"u{k} AS (UPDATE {table} SET {', '.join(row_sets)} FROM r WHERE {' AND '.join(conditions)} "
                     f"RETURNING 1)")
        params += row_params
    for i, (pk, sources, changes) in enumerate(nodes):
        node_sets, node_params = _assignments(connection, NodeRun, changes, table=f"{node_table}.", build=build)
        node_params.append(pk)
        if sources is not None:
            node_params += sources
        if build:
            where = f"{node_table}.{qn('id')} = %s"
            if sources is not None:
                where += f" AND {node_table}.{qn('status')} IN ({', '.join(['%s'] * len(sources))})"
            parts.append(f"n{i} AS (UPDATE {node_table} SET {', '.join(node_sets)} FROM r WHERE {where} RETURNING 1)")
        params += node_params
    if events:
        payload_field, _ = _column(RunEvent, "payload")
        created = _column(RunEvent, "created_at")[0].get_db_prep_save(now, connection)
        if build:
            rows = ", ".join(["(%s::int, %s, %s, %s::jsonb)"] * len(events))
            columns = ", ".join(qn(c) for c in ("run_id", "seq", "type", "node_id", "plan_version", "payload",
                                                "created_at"))
            parts.append(f"e AS (INSERT INTO {event_table} ({columns}) SELECT %s, r.{qn('last_seq')} - %s + v.i, "
                         f"v.t, v.n, %s, v.p, %s FROM r, (VALUES {rows}) AS v (i, t, n, p) RETURNING 1)")
        params += [run_id, len(events), plan_version, created]
        for i, event in enumerate(events, start=1):
            params += [i, event.type, event.node_id, payload_field.get_db_prep_save(event.payload, connection)]
    if facets:
        if build:
            rows = ", ".join(["(%s, %s::jsonb, %s, %s, %s::int)"] * len(facets))
            parts.append(f"f AS ({_FACET_INSERT} SELECT %s, v.k, v.val, v.nid, v.cap, v.pv FROM r, (VALUES {rows}) "
                         f"AS v (k, val, nid, cap, pv) {_FACET_UPSERT} RETURNING 1)")
        params.append(run_id)
        params += _facet_params(connection, facets)
    groups = _insert_groups(inserts)
    for k, (model, objs) in enumerate(groups):
        sql_part, insert_params = _insert_part(connection, model, objs)
        parts.append(f"i{k} AS ({sql_part})")
        params += insert_params
    if not build:
        return "", params, groups
    # A node row the run update reached but its own update did not (not in a
    # status its move starts from) fails the statement: nothing is written.
    checks = "".join(
        f", (SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM r) OR count(*) = 1 THEN 1 "
        f"ELSE ('{_NODE_REFUSED} ' || count(*))::int END FROM n{i})" for i in range(len(nodes)))
    checks += "".join(
        f", (SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM r) OR count(*) = 1 THEN 1 "
        f"ELSE ('{_ROW_MOVED} ' || count(*))::int END FROM u{k})" for k in range(len(row_updates)))
    # Serial keys come back (drawn in row order within the statement); rows
    # with keys of their own are only counted.
    pks = "".join(f", (SELECT array_agg(pk ORDER BY pk) FROM i{k})"
                  if model._meta.auto_field is not None  # type: ignore[attr-defined]
                  else f", (SELECT count(*) FROM i{k})" for k, (model, _objs) in enumerate(groups))
    sql = f"WITH {', '.join(parts)} SELECT (SELECT {qn('last_seq')} FROM r), (SELECT triggers FROM r){pks}{checks}"
    return sql, params, groups


def _insert_groups(objs: Sequence[Any]) -> list[tuple[type, list[Any]]]:
    groups: dict[type, list[Any]] = {}
    for obj in objs:
        groups.setdefault(type(obj), []).append(obj)
    return list(groups.items())


def _insert_part(connection: Any, model: type, objs: list[Any]) -> tuple[str, list[Any]]:
    """`INSERT INTO table (…) SELECT … FROM r, jsonb_to_recordset($rows)`:
    rows inserted only when the run update matched, every row in ONE
    parameter (a JSON array), so the statement's text and its parameter
    count do not grow with the number of rows (the driver caches the
    parsing of short statements with few parameters; a plan of 20 nodes
    would otherwise be parsed anew each time). Values are prepared by their
    fields as `bulk_create` would; returns their pks as `pk`."""
    sql, fields = _insert_sql(connection, model)
    rows = [{f.column: _json_value(f, f.pre_save(obj, True), connection) for f in fields} for obj in objs]
    return sql, [json.dumps(rows, cls=DjangoJSONEncoder)]


_INSERT_SQL: dict[tuple[str, type], tuple[str, tuple[Any, ...]]] = {}


def _insert_sql(connection: Any, model: type) -> tuple[str, tuple[Any, ...]]:
    """`_insert_part`'s statement and fields: the same for every row set of a
    model, made once per model (the hot path makes several per step)."""
    key = (connection.vendor, model)
    made = _INSERT_SQL.get(key)
    if made is None:
        qn = connection.ops.quote_name
        opts = model._meta  # type: ignore[attr-defined]
        fields = tuple(f for f in opts.concrete_fields if f is not opts.auto_field)
        columns = ", ".join(qn(f.column) for f in fields)
        record = ", ".join(f"{qn(f.column)} {f.db_type(connection)}" for f in fields)
        sql = (f"INSERT INTO {qn(opts.db_table)} ({columns}) SELECT {', '.join(f'x.{qn(f.column)}' for f in fields)} "
               f"FROM r, jsonb_to_recordset(%s::jsonb) AS x ({record}) RETURNING {qn(opts.pk.column)} AS pk")
        made = _INSERT_SQL[key] = (sql, fields)
    return made


def _json_value(field: Any, value: Any, connection: Any) -> Any:
    """A field's value as JSON for `jsonb_to_recordset`: a JSON field's own
    value, anything else as its field prepares it for the database."""
    if isinstance(field, JSONField):
        return field.get_prep_value(value) if value is not None else None
    prepared = field.get_db_prep_save(value, connection)
    return prepared.isoformat() if isinstance(prepared, (datetime, date)) else prepared


def rows_insert(objs: Sequence[Any]) -> None:
    """Insert new rows of other tables with a step (`step_commit`'s `inserts`,
    or on the general path after `run_transition`), one multi-row insert per
    table; sets their pks."""
    for model, group in _insert_groups(objs):
        model._default_manager.bulk_create(group)  # type: ignore[attr-defined]


_NODE_REFUSED = "node_move_refused"
_ROW_MOVED = "row_moved_meanwhile"

_FACET_INSERT = ('INSERT INTO "runs_runfacet" ("run_id", "name", "value", "node_id", "capability_id", '
                 '"plan_version")')
_FACET_UPSERT = ('ON CONFLICT ("run_id", "name") DO UPDATE SET "value" = excluded."value", '
                 '"node_id" = excluded."node_id", "capability_id" = excluded."capability_id", '
                 '"plan_version" = excluded."plan_version"')


def _facet_params(connection: Any, facets: Sequence[FacetWrite]) -> list[Any]:
    value_field, _ = _column(RunFacet, "value")
    params: list[Any] = []
    for facet in facets:
        params += [facet.name, value_field.get_db_prep_save(facet.value, connection), facet.node_id,
                   facet.capability_id, facet.plan_version]
    return params


def facets_write(run_id: str, facets: Sequence[FacetWrite]) -> None:
    """Upsert facet values a node produced (one row per facet, with its
    provenance), in the caller's transaction, after the run's fenced update."""
    if not facets:
        return
    connection = transaction.get_connection()
    params = _facet_params(connection, facets)
    with connection.cursor() as cursor:
        cursor.executemany(f"{_FACET_INSERT} VALUES (%s, %s, %s, %s, %s, %s) {_FACET_UPSERT}",
                           [[run_id, *params[i:i + 5]] for i in range(0, len(params), 5)])


def _write_sqlite(connection: Any, *, nodes: list[tuple[int, list[str] | None, Mapping[str, Any]]],
                  rows: list[RunEvent]) -> None:
    """The rest of a step on SQLite, after the fenced run UPDATE: the events
    (one executemany) and the node rows, raw statements in the transaction."""
    qn = connection.ops.quote_name
    with connection.cursor() as cursor:
        if rows:
            payload_field, _ = _column(RunEvent, "payload")
            created = _column(RunEvent, "created_at")[0].get_db_prep_save(rows[0].created_at, connection)
            columns = ("run_id", "seq", "type", "node_id", "plan_version", "payload", "created_at")
            cursor.executemany(
                f"INSERT INTO {qn(RunEvent._meta.db_table)} ({', '.join(qn(c) for c in columns)}) "
                f"VALUES ({', '.join(['%s'] * len(columns))})",
                [(r.run_id, r.seq, r.type, r.node_id, r.plan_version,
                  payload_field.get_db_prep_save(r.payload, connection), created) for r in rows])
        table = qn(NodeRun._meta.db_table)
        for pk, sources, changes in nodes:
            sets, params = _assignments(connection, NodeRun, changes)
            where = f"{qn('id')} = %s"
            params.append(pk)
            if sources is not None:
                where += f" AND {qn('status')} IN ({', '.join(['%s'] * len(sources))})"
                params += sources
            cursor.execute(f"UPDATE {table} SET {', '.join(sets)} WHERE {where}", params)
            if cursor.rowcount != 1:
                raise TransitionNotAllowed(f"node {pk} -> {changes.get('status')}")


def nodes_update(changes: Mapping[int, Mapping[str, Any]]) -> None:
    """Apply `changes` (node row pk -> field values) in the caller's
    transaction. A status change is conditional on the table: the row must
    be in a status from which the move is allowed, or `TransitionNotAllowed`
    is raised (the caller's transaction rolls back)."""
    with status_writer():
        for pk, values in changes.items():
            rows = NodeRun.objects.filter(pk=pk)
            to = values.get("status")
            if to is not None:
                rows = rows.filter(status__in=[s for s in NODE_TRANSITIONS if node_transition_allowed(s, to)])
            if rows.update(**values) != 1:
                raise TransitionNotAllowed(f"node {pk} -> {to}")


def _bump_run(*, run_id: str, count: int, lease_token: int | None, statuses: list[str] | None,
              updates: dict[str, Any]) -> int | None:
    """The fenced UPDATE of the run row; returns the new `last_seq`, or None
    when the fence matched nothing.

    One statement with `RETURNING` on the hot path (it runs once per node):
    the row lock it takes is held until commit, so the returned value is ours.
    The ORM has no UPDATE … RETURNING, hence the SQL; values still go through
    each field's own `get_db_prep_save` (JSON, datetimes).
    """
    connection = transaction.get_connection()
    if statuses is not None and not statuses:
        return None
    if (connection.vendor == "sqlite" and sqlite3.sqlite_version_info < (3, 35)) or any(
            hasattr(value, "resolve_expression") for value in updates.values()):
        return _bump_run_orm(run_id=run_id, count=count, lease_token=lease_token, statuses=statuses,
                             updates=updates)
    qn = connection.ops.quote_name
    assignments, params = _assignments(connection, Run, updates)
    assignments.append(f"{qn('last_seq')} = {qn('last_seq')} + %s")
    params.append(count)
    where = [f"{qn('id')} = %s"]
    where_params: list[Any] = [run_id]
    if lease_token is not None:
        where.append(f"{qn('lease_token')} = %s")
        where_params.append(lease_token)
    if statuses is not None:
        where.append(f"{qn('status')} IN ({', '.join(['%s'] * len(statuses))})")
        where_params.extend(statuses)
    sql = (f"UPDATE {qn(Run._meta.db_table)} SET {', '.join(assignments)} "
           f"WHERE {' AND '.join(where)} RETURNING {qn('last_seq')}")
    with connection.cursor() as cursor:
        cursor.execute(sql, params + where_params)
        row = cursor.fetchone()
    return None if row is None else int(row[0])


def _bump_run_orm(*, run_id: str, count: int, lease_token: int | None, statuses: list[str] | None,
                  updates: dict[str, Any]) -> int | None:
    """The same with two statements, for SQLite older than 3.35 (no RETURNING)
    and for updates that are expressions."""
    condition = Q(pk=run_id)
    if lease_token is not None:
        condition &= Q(lease_token=lease_token)
    if statuses is not None:
        condition &= Q(status__in=statuses)
    if Run.objects.filter(condition).update(**updates, last_seq=F("last_seq") + count) != 1:
        return None
    return int(Run.objects.filter(pk=run_id).values_list("last_seq", flat=True).get())


# --- the answer to a person's request (PostgreSQL) ---------------------------------

class ResumeSnapshot(NamedTuple):
    """What answering a request reads (`resume_read`), in one statement: the
    run and the request with their row versions (`xmin`, the fence of the
    answer's commit), the request's responses, the run's current plan
    version and its node rows."""

    run: Run
    run_version: str
    request: Any  # hitl.models.HitlRequest | None
    request_version: str | None
    responses: list[Any]  # hitl.models.HitlResponse
    plan: Any  # PlanVersion (graph, schema_hash) | None
    nodes: list[NodeRun]


def resume_read(*, run_id: str, request_id: str) -> ResumeSnapshot | None:
    """PostgreSQL: the run, its request `request_id`, the request's
    responses (oldest first), the run's current plan version and its node
    rows — ONE statement, no lock. The answer's writes are fenced on the
    versions read here (`resume_commit`): when anything changed meanwhile,
    they write nothing and the caller takes the locking path."""
    from hitl.models import HitlRequest, HitlResponse
    from runs.models import PlanVersion

    connection = transaction.get_connection()
    sql = _resume_read_sql(connection.ops.quote_name)
    for run in Run.objects.raw(sql, [request_id, run_id]):
        extra = {name: _loaded(getattr(run, name))
                 for name in ("request_row", "response_rows", "plan_row", "node_rows")}
        request = None if extra["request_row"] is None else model_from_json(HitlRequest, extra["request_row"])
        responses = [model_from_json(HitlResponse, row) for row in extra["response_rows"] or []]
        plan = None
        if extra["plan_row"] is not None:
            graph, schema_hash = extra["plan_row"]
            plan = PlanVersion(run_id=run.id, version=run.plan_version, graph=graph, schema_hash=schema_hash)
        nodes = [model_from_json(NodeRun, row) for row in extra["node_rows"] or []]
        return ResumeSnapshot(run=run, run_version=str(getattr(run, "row_version")), request=request,
                              request_version=getattr(run, "request_version"), responses=responses, plan=plan,
                              nodes=nodes)
    return None


def _loaded(value: Any) -> Any:
    """A jsonb column of a raw query: text (Django's loader) or already parsed."""
    return json.loads(value) if isinstance(value, (str, bytes)) else value


@lru_cache(maxsize=None)
def _resume_read_sql(qn: Any) -> str:
    from hitl.models import HitlRequest, HitlResponse
    from runs.models import PlanVersion

    run_t, request_t, response_t, plan_t, node_t = (
        qn(m._meta.db_table) for m in (Run, HitlRequest, HitlResponse, PlanVersion, NodeRun))
    return (f"SELECT r.*, r.xmin::text AS row_version, to_jsonb(q) AS request_row, q.xmin::text AS request_version, "
            f"(SELECT jsonb_agg(to_jsonb(p) ORDER BY p.{qn('id')}) FROM {response_t} p "
            f"WHERE p.{qn('request_id')} = q.{qn('id')}) AS response_rows, "
            f"(SELECT jsonb_build_array(v.{qn('graph')}, v.{qn('schema_hash')}) FROM {plan_t} v "
            f"WHERE v.{qn('run_id')} = r.{qn('id')} AND v.{qn('version')} = r.{qn('plan_version')}) AS plan_row, "
            f"(SELECT jsonb_agg(to_jsonb(n) ORDER BY n.{qn('id')}) FROM {node_t} n "
            f"WHERE n.{qn('run_id')} = r.{qn('id')}) AS node_rows "
            f"FROM {run_t} r LEFT JOIN {request_t} q ON q.{qn('id')} = %s AND q.{qn('run_id')} = r.{qn('id')} "
            f"WHERE r.{qn('id')} = %s")


def model_from_json(model: type, row: Mapping[str, Any]) -> Any:
    """A model instance from its row as `to_jsonb` gives it (column -> value):
    JSON columns as they are, the others through their field (datetimes from
    ISO text), as if the ORM had loaded it."""
    opts = model._meta  # type: ignore[attr-defined]
    names: list[str] = []
    values: list[Any] = []
    for f in opts.concrete_fields:
        value = row.get(f.column)
        if value is not None and not isinstance(f, JSONField):
            value = f.to_python(value)
        names.append(f.attname)
        values.append(value)
    return model.from_db(transaction.get_connection().alias, names, values)  # type: ignore[attr-defined]


def resume_commit(*, run_id: str, run_version: str, expect: Iterable[str], to: str, plan_version: int,
                  updates: Mapping[str, Any], nodes: Mapping[int, Mapping[str, Any]],
                  events: Sequence[PendingEvent], inserts: Sequence[Any],
                  row_updates: Sequence[RowUpdate]) -> list[RunEvent]:
    """PostgreSQL: the writes of an answer to a person's request — the run
    moved (`to`, from one of `expect`) with `updates` and `events`, its node
    rows, the request resolved (`row_updates`), the new rows (`inserts`:
    responses, the plan version, the audit entry) — as ONE statement, the
    step's CTE (`step_commit`), fenced on the run row's version as
    `resume_read` saw it instead of a lease: a run or request that changed
    since writes nothing (`Fenced`), and the caller takes the locking path.
    Outside a transaction the statement is its own; inside the caller's, a
    savepoint keeps a refusal from aborting it. Events are published after
    commit; their outbox rows are written in the same transaction (one is
    opened then)."""
    expected = [str(status) for status in expect]
    now = timezone.now()
    values = dict(updates)
    _check_run_move(run_id, to, expected, values, now)
    node_changes = [(pk, _node_sources(pk, changes), changes) for pk, changes in nodes.items()]
    rows, _triggers = _commit_postgresql(
        transaction.get_connection(), savepoint=True, run_id=run_id, lease_token=None, statuses=expected,
        updates=values, nodes=node_changes, facets=(), events=events, plan_version=plan_version, now=now,
        inserts=inserts, run_version=run_version, row_updates=row_updates)
    if rows:
        publish_on_commit(rows)
    return rows
