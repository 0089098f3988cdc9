"""Reads about runs. Permission-checked fetches live here and nowhere else."""
from __future__ import annotations

import re
from typing import Any

from django.db.models import Q, QuerySet
from guardian.shortcuts import get_objects_for_user

from flexagents.errors import HitlRequestNotFound, RunNotFound
from flexagents.logging import remember_run
from flexagents.roles import user_may_operate_run, user_may_view_all_runs, user_may_view_run
from hitl.models import HitlRequest, HitlStatus
from runs.models import Run, RunEvent
from runs.transitions import ResumeSnapshot, resume_read

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


def run_for_answer(*, user: Any, run_id: str, request_id: str) -> ResumeSnapshot | None:
    """What answering request `request_id` of run `run_id` reads, in one
    statement without a lock (`runs.transitions.resume_read`; PostgreSQL),
    when the user may view and operate the run; None otherwise (the caller
    takes the locking path, which refuses with the right error)."""
    if not isinstance(run_id, str) or not _PLAUSIBLE_ID.match(run_id) or not isinstance(request_id, str) \
            or not _PLAUSIBLE_ID.match(request_id):
        return None
    snapshot = resume_read(run_id=run_id, request_id=request_id)
    if snapshot is None:
        return None
    run = snapshot.run
    remember_run(run.id, run.correlation_id)
    if not user_may_view_run(user, run) or not user_may_operate_run(user, run):
        return None
    return snapshot


def run_events_after(*, run: Run, after: int, limit: int) -> list[RunEvent]:
    return list(RunEvent.objects.filter(run=run, seq__gt=after).order_by("seq")[:limit])


# --- HITL requests: lists filter on the runs the caller may view -----------------

def hitl_pending_for_user(*, user: Any, kind: str | None = None, urgency: str | None = None,
                          thread_id: str | None = None, brief_id: str | None = None,
                          assigned_to_me: bool = False) -> QuerySet[HitlRequest]:
    """Pending requests on runs the user may view: most urgent first, then oldest
    (index hitl_inbox_idx serves the order). `assigned_to_me`: only those
    whose assignees name the user or one of the user's groups."""
    qs = HitlRequest.objects.filter(status=HitlStatus.PENDING, run__in=runs_visible_to(user=user))
    if assigned_to_me:
        qs = qs.filter(assigned_to(user))
    if kind:
        qs = qs.filter(kind=kind)
    if urgency:
        qs = qs.filter(urgency=urgency)
    if thread_id:
        qs = qs.filter(thread_id=thread_id)
    if brief_id:
        qs = qs.filter(brief_id=brief_id)
    return qs.select_related("run").prefetch_related("responses").order_by("urgency_rank", "created_at", "id")


def assigned_to(user: Any) -> Q:
    """Requests whose assignees name `user` or one of their groups."""
    condition = Q(assignee_keys__contains=f"|u:{user.username}|")
    for name in user.groups.values_list("name", flat=True):
        condition |= Q(assignee_keys__contains=f"|g:{name}|")
    return condition


def hitl_run_id_for(*, user: Any, run_id: str | None, thread_id: str | None, request_id: str | None) -> str:
    """`runId` or `threadId` addressing. With a thread: the run of `request_id`
    in that thread, or else the newest run of the thread with a pending
    request; always among the runs the user may view (else 404)."""
    if run_id:
        return run_id
    visible = runs_visible_to(user=user).filter(thread_id=thread_id)
    if request_id:
        found = (HitlRequest.objects.filter(pk=request_id, thread_id=thread_id, run__in=visible)
                 .values_list("run_id", flat=True).first())
        if found is None:
            raise HitlRequestNotFound(details={"requestId": request_id, "threadId": thread_id})
        return found
    found = (visible.filter(hitl_requests__status=HitlStatus.PENDING).order_by("-created_at", "-id")
             .values_list("id", flat=True).first())
    if found is None:
        raise RunNotFound("No run of this thread waits for a person, or you may not view it.",
                          details={"threadId": thread_id})
    return found


def requests_visible_to(*, user: Any) -> QuerySet[HitlRequest]:
    """Requests of the runs the user may view."""
    qs = HitlRequest.objects.all()
    if not user_may_view_all_runs(user):
        qs = qs.filter(run__in=runs_visible_to(user=user).values("pk"))
    return qs


def inbox_requests(*, user: Any, limit: int = 200, assigned_to_me: bool = False) -> list[HitlRequest]:
    """Pending requests, most urgent first, then oldest (hitl_inbox_idx);
    `assigned_to_me`: only those assigned to the user (by user or group)."""
    qs = requests_visible_to(user=user).filter(status=HitlStatus.PENDING)
    if assigned_to_me:
        qs = qs.filter(assigned_to(user))
    return list(qs.select_related("run").prefetch_related("responses")
                .order_by("urgency_rank", "created_at", "id")[:limit])
