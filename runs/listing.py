"""`GET /api/v1/flex/runs`: the runs the caller may view, newest first.

Filters: the shared run-list filters of `runs.filters` (the history pages and
the admin use the same definition). Pagination: `RunListPagination`, a
keyset cursor over `(created_at, id)` descending (`flexagents.pagination`),
so a page costs the same whatever its depth and rows inserted meanwhile
never shift a page: `limit` (1..100, default 20) and the opaque `cursor` of
the previous page's `next` URL.
"""
from __future__ import annotations

from typing import Any

from django.db.models import OuterRef, QuerySet, Subquery
from rest_framework.request import Request

from flexagents.pagination import KeysetCursorPagination
from flexagents.redaction import FREE_TEXT_KEYS, redact
from hitl.models import HitlRequest, HitlStatus
from runs.events import iso
from runs.filters import api_filtered
from runs.models import Run
from runs.selectors import runs_visible_to

# The columns a summary needs: never load envelopes, facets or outputs for a list.
SUMMARY_FIELDS = ("id", "status", "objective", "plan_version", "thread_id", "brief_id", "created_at", "updated_at",
                  "created_by__username")


class RunListPagination(KeysetCursorPagination):
    # Served by run_created_idx; the id breaks ties between runs created in the same instant.
    ordering = ("-created_at", "-id")
    page_size = 20
    max_page_size = 100
    results_key = "results"


def with_pending_request(qs: QuerySet[Run]) -> QuerySet[Run]:
    """Annotate each run with the id of its pending HITL request (one subquery,
    not one query per run)."""
    pending = HitlRequest.objects.filter(run=OuterRef("pk"), status=HitlStatus.PENDING).order_by("created_at", "id")
    return qs.annotate(pending_request_id=Subquery(pending.values("id")[:1]))


def summary_from_row(row: dict[str, Any]) -> dict[str, Any]:
    """The redacted summary of a run (list items, the cancel response)."""
    summary = {
        "runId": row["id"],
        "status": row["status"],
        "objective": row["objective"],
        "planVersion": row["plan_version"],
        "threadId": row["thread_id"] or None,
        "briefId": row["brief_id"] or None,
        "createdAt": iso(row["created_at"]),
        "updatedAt": iso(row["updated_at"]),
        "createdBy": row["created_by__username"],
        "pendingRequestId": row["pending_request_id"],
    }
    # The objective, thread and brief ids are the caller's text: a pasted
    # credential in them is masked like anywhere else.
    return redact(summary, text_keys=FREE_TEXT_KEYS | {"threadId", "briefId"})


def run_summary(*, run_id: str) -> dict[str, Any]:
    row = with_pending_request(Run.objects.filter(pk=run_id)).values(*SUMMARY_FIELDS, "pending_request_id").get()
    return summary_from_row(row)


def run_list_response(request: Request) -> dict[str, Any]:
    """One page of summaries and the URL of the next page (or None)."""
    qs = api_filtered(runs_visible_to(user=request.user), request.query_params, request)
    paginator = RunListPagination()
    rows = paginator.paginate_queryset(with_pending_request(qs).values(*SUMMARY_FIELDS, "pending_request_id"), request)
    body: dict[str, Any] = paginator.get_paginated_response([summary_from_row(row) for row in rows]).data
    return body
