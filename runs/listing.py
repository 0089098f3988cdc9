"""`GET /api/v1/flex/runs`: the runs the caller may view, newest first.

Filters (query string): `status` (one status or several, comma-separated),
`threadId`, `briefId`, `capabilityId` (runs with a node of that capability),
`createdAfter` / `createdBefore` (ISO 8601, exclusive bounds), `q` (text in the
objective, case-insensitive). Pagination is by cursor: `limit` (1..100,
default 20) and the opaque `cursor` of the previous page's `next` URL.

Keyset pagination over `(created_at, id)` descending, so a page costs the
same whatever its depth and rows inserted meanwhile never shift a page.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import datetime, timezone as dt_timezone
from typing import Any
from urllib.parse import urlencode

from django.db.models import Exists, OuterRef, Q, QuerySet, Subquery
from django.utils.dateparse import parse_date, parse_datetime
from rest_framework.request import Request

from flexagents.errors import ValidationFailed
from flexagents.params import int_param
from flexagents.redaction import FREE_TEXT_KEYS, redact
from hitl.models import HitlRequest, HitlStatus
from runs.events import iso
from runs.models import NodeRun, Run, RunStatus
from runs.selectors import runs_visible_to

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_FILTER_LENGTH = 200
FILTERS = ("status", "threadId", "briefId", "capabilityId", "createdAfter", "createdBefore", "q", "cursor", "limit")

# The columns a summary needs: never load envelopes, facets or outputs for a list.
SUMMARY_FIELDS = ("id", "status", "objective", "plan_version", "thread_id", "brief_id", "created_at", "updated_at",
                  "created_by__username")


def _invalid(name: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"The query parameter {name} is not valid: {message}.",
                            details={"errors": [{"path": f"/{name}", "message": message}]})


def _text_param(params: Any, name: str) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if len(value) > MAX_FILTER_LENGTH:
        raise _invalid(name, f"at most {MAX_FILTER_LENGTH} characters")
    if "\x00" in value:
        # PostgreSQL refuses NUL in text parameters; say so instead of a 500.
        raise _invalid(name, "must not contain NUL characters")
    return value


def parse_timestamp(raw: str, name: str) -> datetime:
    """ISO 8601; a naive value is UTC. A `+` of an offset that arrived
    unencoded in a query string reads as a space: put it back."""
    value = re.sub(r"(\d) (\d{2}:?\d{2})$", r"\1+\2", raw.strip())
    try:
        parsed = parse_datetime(value)
        if parsed is None:
            day = parse_date(value)
            parsed = datetime(day.year, day.month, day.day) if day else None
    except ValueError:
        parsed = None
    if parsed is None:
        raise _invalid(name, "expected an ISO 8601 timestamp such as 2026-03-01T10:00:00Z")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt_timezone.utc)
    return parsed


def _limit(params: Any) -> int:
    return int_param(params, "limit", default=DEFAULT_LIMIT, low=1, high=MAX_LIMIT)


def encode_cursor(created_at: datetime, run_id: str) -> str:
    raw = json.dumps([created_at.astimezone(dt_timezone.utc).isoformat(), run_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, run_id = json.loads(raw)
        when = datetime.fromisoformat(created)
        if when.tzinfo is None or not isinstance(run_id, str):
            raise ValueError
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise _invalid("cursor", "not a cursor returned by this endpoint") from None
    return when, run_id


def filter_runs(qs: QuerySet[Run], params: Any) -> QuerySet[Run]:
    statuses = _text_param(params, "status")
    if statuses:
        wanted = [s.strip() for s in statuses.split(",") if s.strip()]
        unknown = [s for s in wanted if s not in RunStatus.values]
        if unknown:
            raise _invalid("status", f"is not a known status; expected one of {', '.join(RunStatus.values)}")
        qs = qs.filter(status__in=wanted)
    if (thread_id := _text_param(params, "threadId")) is not None:
        qs = qs.filter(thread_id=thread_id)
    if (brief_id := _text_param(params, "briefId")) is not None:
        qs = qs.filter(brief_id=brief_id)
    if (capability_id := _text_param(params, "capabilityId")) is not None:
        qs = qs.filter(Exists(NodeRun.objects.filter(run=OuterRef("pk"), capability_id=capability_id)))
    if (after := _text_param(params, "createdAfter")) is not None:
        qs = qs.filter(created_at__gt=parse_timestamp(after, "createdAfter"))
    if (before := _text_param(params, "createdBefore")) is not None:
        qs = qs.filter(created_at__lt=parse_timestamp(before, "createdBefore"))
    if (text := _text_param(params, "q")) is not None:
        qs = qs.filter(objective__icontains=text)
    return qs


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


def run_list(*, user: Any, params: Any) -> tuple[list[dict[str, Any]], str | None]:
    """One page of summaries and the cursor of the next page (or None)."""
    limit = _limit(params)
    qs = filter_runs(runs_visible_to(user=user), params)
    if (cursor := _text_param(params, "cursor")) is not None:
        created_at, run_id = decode_cursor(cursor)
        # Strictly after the last row of the previous page in (-created_at, -id).
        qs = qs.filter(Q(created_at__lt=created_at) | Q(created_at=created_at, id__lt=run_id))
    # Served by run_created_idx; the id breaks ties between runs created in the same instant.
    qs = with_pending_request(qs).order_by("-created_at", "-id")
    rows = list(qs.values(*SUMMARY_FIELDS, "pending_request_id")[:limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1]["created_at"], rows[-1]["id"]) if more and rows else None
    return [summary_from_row(row) for row in rows], next_cursor


def run_list_response(request: Request) -> dict[str, Any]:
    results, next_cursor = run_list(user=request.user, params=request.query_params)
    next_url = None
    if next_cursor is not None:
        params = {k: v for k, v in request.query_params.items() if k in FILTERS and k != "cursor"}
        params["cursor"] = next_cursor
        next_url = request.build_absolute_uri(request.path) + "?" + urlencode(params)
    return {"results": results, "next": next_url}
