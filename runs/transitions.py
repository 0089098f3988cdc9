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

The ORM refuses status writes anywhere else (`runs.models.StatusGuardedQuerySet`):
only code running inside `status_writer()` may change a status field, and
only this module enters it.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from django.db import transaction
from django.db.models import F, Field, Q
from django.utils import timezone

from runs import notifications
from runs.events import PendingEvent, publish_on_commit
from runs.models import (NODE_TRANSITIONS, RUN_TRANSITIONS, STATUS_WRITER, TERMINAL_STATUSES, NodeRun, Run,
                         RunEvent)


class Fenced(Exception):
    """The conditional update matched no row: the caller lost its lease, or the
    run left the status the caller expected (cancelled, resumed, …)."""


class TransitionNotAllowed(Fenced):
    """A status move the transition table does not list. Nothing was written."""


def run_transition_allowed(from_status: str, to_status: str) -> bool:
    return to_status in RUN_TRANSITIONS.get(from_status, frozenset())


def node_transition_allowed(from_status: str, to_status: str) -> bool:
    return to_status in NODE_TRANSITIONS.get(from_status, frozenset())


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
) -> list[RunEvent]:
    """Move a run from one of `expect` (None: any status) to `to` (None: the
    status stays), apply `updates` to its row and append `events` written at
    `plan_version`, in the caller's transaction. Returns the written events.

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
    if "status" in values:
        raise TypeError("run_transition sets the status from `to`, not from `updates`")
    if to is not None:
        if expected is None:
            raise TypeError("a status change needs the statuses it starts from (`expect`)")
        forbidden = [status for status in expected if not run_transition_allowed(status, to)]
        if forbidden or not expected:
            raise TransitionNotAllowed(f"{run_id}: {', '.join(forbidden) or '(nothing)'} -> {to}")
        values["status"] = to
        if to in TERMINAL_STATUSES:
            values.setdefault("completed_at", now)
    values["updated_at"] = now
    with status_writer():
        last_seq = _bump_run(run_id=run_id, count=len(pending), lease_token=lease_token, statuses=expected,
                             updates=values)
    if last_seq is None:
        raise Fenced(run_id)
    if not pending:
        return []
    first = last_seq - len(pending) + 1
    rows = [
        RunEvent(run_id=run_id, seq=first + i, type=e.type, node_id=e.node_id, plan_version=plan_version,
                 payload=e.payload, created_at=now)
        for i, e in enumerate(pending)
    ]
    RunEvent.objects.bulk_create(rows)
    notifications.enqueue(rows)
    publish_on_commit(rows)
    return rows


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
    assignments: list[str] = []
    params: list[Any] = []
    for name, value in updates.items():
        model_field = Run._meta.get_field(name)
        assert isinstance(model_field, Field)  # concrete columns only
        assignments.append(f"{qn(model_field.column)} = %s")
        params.append(model_field.get_db_prep_save(value, connection))
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
