"""Reads about HITL requests. Lists filter on the runs the caller may view."""
from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from flexagents.errors import HitlRequestNotFound, RunNotFound
from hitl.models import HitlRequest, HitlStatus
from runs.selectors import runs_visible_to


def hitl_pending_for_user(*, user: Any, kind: str | None = None, urgency: str | None = None,
                          thread_id: str | None = None, brief_id: str | None = None) -> QuerySet[HitlRequest]:
    """Pending requests on runs the user may view: most urgent first, then oldest
    (index hitl_inbox_idx serves the order)."""
    qs = HitlRequest.objects.filter(status=HitlStatus.PENDING, run__in=runs_visible_to(user=user))
    if kind:
        qs = qs.filter(kind=kind)
    if urgency:
        qs = qs.filter(urgency=urgency)
    if thread_id:
        qs = qs.filter(thread_id=thread_id)
    if brief_id:
        qs = qs.filter(brief_id=brief_id)
    return qs.select_related("run").prefetch_related("responses").order_by("urgency_rank", "created_at", "id")


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
