"""Reads about runs. Permission-checked fetches live here and nowhere else."""
from __future__ import annotations

import re
from typing import Any

from django.db.models import QuerySet
from guardian.shortcuts import get_objects_for_user

from flexagents.errors import RunNotFound
from flexagents.logging import remember_run
from flexagents.roles import user_may_view_all_runs, user_may_view_run
from runs.models import Run, RunEvent

_PLAUSIBLE_ID = re.compile(r"^[\x21-\x7e]{1,40}\Z")


def runs_visible_to(*, user: Any) -> QuerySet[Run]:
    """Every run the user may view: all of them for support, operators and
    superusers; otherwise those granted to the user (guardian object perms)."""
    if user_may_view_all_runs(user):
        return Run.objects.all()
    return get_objects_for_user(user, "runs.view_run", klass=Run, accept_global_perms=False,
                                with_superuser=False)


def run_get_for_user(*, user: Any, run_id: str, for_update: bool = False) -> Run:
    """The run, or RunNotFound when it does not exist or the user may not view it
    (never reveal existence)."""
    # A value that cannot be a run id (a NUL byte, control characters, longer
    # than the column) is simply not found: PostgreSQL refuses NUL in text
    # parameters with an error, which must not become a 500.
    if not isinstance(run_id, str) or not _PLAUSIBLE_ID.match(run_id):
        raise RunNotFound(details={"runId": run_id if isinstance(run_id, str) and "\x00" not in run_id else None})
    qs = Run.objects.select_for_update() if for_update else Run.objects.all()
    run = qs.filter(pk=run_id).first()
    if run is None or not user_may_view_run(user, run):
        raise RunNotFound(details={"runId": run_id})
    # Log lines of this request that name the run carry its correlation id.
    remember_run(run.id, run.correlation_id)
    return run


def run_events_after(*, run: Run, after: int, limit: int) -> list[RunEvent]:
    return list(RunEvent.objects.filter(run=run, seq__gt=after).order_by("seq")[:limit])
