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
    first = last_seq - len(pending) + 1
    return [
        RunEvent(run_id=run_id, seq=first + i, type=e.type, node_id=e.node_id, plan_version=plan_version,
                 payload=e.payload, created_at=now)
        for i, e in enumerate(pending)
    ]


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
        # transaction, a savepoint keeps a refused node from aborting it.
        # An event that may notify someone takes its outbox rows in the same
        # transaction, so such a step opens one; the others stay one statement.
        notifying = notifications.may_notify(events)
        try:
            # (No savepoint inside a transaction the caller gives up whole on any
            # error — `all_or_nothing`: one round trip less each way.)
            savepoint = not ALL_OR_NOTHING.get()
            with (transaction.atomic(savepoint=savepoint) if connection.in_atomic_block or notifying
                  else nullcontext()), status_writer():
                last_seq, triggers = _step_postgresql(
                    connection, run_id=run_id, lease_token=lease_token, statuses=expected, updates=values,
                    nodes=node_changes, facets=facets, events=events, plan_version=plan_version, now=now,
                    inserts=inserts)
                if last_seq is None:
                    raise Fenced(run_id)
                rows = _event_rows(run_id, last_seq, events, plan_version, now) if events else []
                if notifying:
                    notifications.enqueue(rows)
        except DataError as exc:
            if _NODE_REFUSED in str(exc):
                raise TransitionNotAllowed(f"{run_id}: a node is not in a status its move starts from") from None
            raise
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
    return (f"WITH c AS (SELECT {qn('id')}, {owner} FROM {t} WHERE {where} ORDER BY {qn('created_at')} "
            f"LIMIT 1 FOR UPDATE SKIP LOCKED) "
            f"UPDATE {t} SET {owner} = %s, {qn('lease_token')} = {t}.{qn('lease_token')} + 1, {expires} = %s "
            f"FROM c WHERE {t}.{qn('id')} = c.{qn('id')} "
            f"RETURNING {t}.*, c.{owner} AS previous_owner, "
            f"(SELECT {qn('username')} FROM {qn('auth_user')} WHERE {qn('id')} = {t}.{qn('created_by_id')}) "
            f"AS created_by_username")


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


def _assignments(connection: Any, model: type, values: Mapping[str, Any], table: str = ""
                 ) -> tuple[list[str], list[Any]]:
    """`col = %s` (or `col = col + %s` for `F(col) + n`) and their parameters."""
    qn = connection.ops.quote_name
    sets: list[str] = []
    params: list[Any] = []
    for name, value in values.items():
        model_field, column = _column(model, name)
        if hasattr(value, "resolve_expression"):
            step = _increment(value)
            if step is None or value.lhs.name != name:
                raise TypeError(f"{name}: only F('{name}') + n is supported here")
            sets.append(f"{qn(column)} = {table}{qn(column)} + %s")
            params.append(step)
            continue
        sets.append(f"{qn(column)} = %s")
        params.append(model_field.get_db_prep_save(value, connection))
    return sets, params


def _step_postgresql(connection: Any, *, run_id: str, lease_token: int, statuses: list[str],
                     updates: dict[str, Any], nodes: list[tuple[int, list[str] | None, Mapping[str, Any]]],
                     facets: Sequence[FacetWrite], events: Sequence[PendingEvent], plan_version: int,
                     now: Any, inserts: Sequence[Any] = ()) -> tuple[int | None, bool]:
    """The step as one data-modifying CTE; returns the new `last_seq` (None:
    fenced) and whether the run holds manual policy triggers. Raises `TransitionNotAllowed` when a node row was not in a
    status its move is allowed from."""
    qn = connection.ops.quote_name
    run_table, node_table, event_table = (qn(m._meta.db_table) for m in (Run, NodeRun, RunEvent))
    sets, params = _assignments(connection, Run, updates)
    sets.append(f"{qn('last_seq')} = {qn('last_seq')} + %s")
    params.append(len(events))
    params += [run_id, lease_token, *statuses]
    parts = [f"r AS (UPDATE {run_table} SET {', '.join(sets)} WHERE {qn('id')} = %s AND {qn('lease_token')} = %s "
             f"AND {qn('status')} IN ({', '.join(['%s'] * len(statuses))}) "
             f"RETURNING {qn('last_seq')}, {qn('manual_triggers')} <> '[]'::jsonb AS triggers)"]
    for i, (pk, sources, changes) in enumerate(nodes):
        node_sets, node_params = _assignments(connection, NodeRun, changes, table=f"{node_table}.")
        where = f"{node_table}.{qn('id')} = %s"
        node_params.append(pk)
        if sources is not None:
            where += f" AND {node_table}.{qn('status')} IN ({', '.join(['%s'] * len(sources))})"
            node_params += sources
        parts.append(f"n{i} AS (UPDATE {node_table} SET {', '.join(node_sets)} FROM r WHERE {where} RETURNING 1)")
        params += node_params
    if events:
        payload_field, _ = _column(RunEvent, "payload")
        created = _column(RunEvent, "created_at")[0].get_db_prep_save(now, connection)
        rows = ", ".join(["(%s::int, %s, %s, %s::jsonb)"] * len(events))
        columns = ", ".join(qn(c) for c in ("run_id", "seq", "type", "node_id", "plan_version", "payload",
                                            "created_at"))
        parts.append(f"e AS (INSERT INTO {event_table} ({columns}) SELECT %s, r.{qn('last_seq')} - %s + v.i, v.t, "
                     f"v.n, %s, v.p, %s FROM r, (VALUES {rows}) AS v (i, t, n, p) RETURNING 1)")
        params += [run_id, len(events), plan_version, created]
        for i, event in enumerate(events, start=1):
            params += [i, event.type, event.node_id, payload_field.get_db_prep_save(event.payload, connection)]
    if facets:
        rows = ", ".join(["(%s, %s::jsonb, %s, %s, %s::int)"] * len(facets))
        parts.append(f"f AS ({_FACET_INSERT} SELECT %s, v.k, v.val, v.nid, v.cap, v.pv FROM r, (VALUES {rows}) AS "
                     f"v (k, val, nid, cap, pv) {_FACET_UPSERT} RETURNING 1)")
        params.append(run_id)
        params += _facet_params(connection, facets)
    groups = _insert_groups(inserts)
    for k, (model, objs) in enumerate(groups):
        sql_part, insert_params = _insert_part(connection, model, objs)
        parts.append(f"i{k} AS ({sql_part})")
        params += insert_params
    # A node row the run update reached but its own update did not (not in a
    # status its move starts from) fails the statement: nothing is written.
    checks = "".join(
        f", (SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM r) OR count(*) = 1 THEN 1 "
        f"ELSE ('{_NODE_REFUSED} ' || count(*))::int END FROM n{i})" for i in range(len(nodes)))
    # Serial keys come back (drawn in row order within the statement); rows
    # with keys of their own are only counted.
    pks = "".join(f", (SELECT array_agg(pk ORDER BY pk) FROM i{k})"
                  if model._meta.auto_field is not None  # type: ignore[attr-defined]
                  else f", (SELECT count(*) FROM i{k})" for k, (model, _objs) in enumerate(groups))
    sql = f"WITH {', '.join(parts)} SELECT (SELECT {qn('last_seq')} FROM r), (SELECT triggers FROM r){pks}{checks}"
    with connection.cursor() as cursor:
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
    qn = connection.ops.quote_name
    opts = model._meta  # type: ignore[attr-defined]
    fields = [f for f in opts.concrete_fields if f is not opts.auto_field]
    rows = [{f.column: _json_value(f, f.pre_save(obj, True), connection) for f in fields} for obj in objs]
    columns = ", ".join(qn(f.column) for f in fields)
    record = ", ".join(f"{qn(f.column)} {f.db_type(connection)}" for f in fields)
    sql = (f"INSERT INTO {qn(opts.db_table)} ({columns}) SELECT {', '.join(f'x.{qn(f.column)}' for f in fields)} "
           f"FROM r, jsonb_to_recordset(%s::jsonb) AS x ({record}) RETURNING {qn(opts.pk.column)} AS pk")
    return sql, [json.dumps(rows, cls=DjangoJSONEncoder)]


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
