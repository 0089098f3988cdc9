"""The one definition of the run-list filters (django-filter), shared by
`GET /api/v1/flex/runs`, the history pages' list and the admin's run list,
with the same meaning everywhere (docs/api.md, "List runs"):

- `status`: one status or several, comma-separated.
- `threadId`, `briefId`: exact match.
- `capabilityId`: runs with a node of that capability.
- `pending`: `yes` / `no`: the run has / has no pending HITL request.
- `createdAfter`, `createdBefore`: **inclusive** bounds. A timestamp is an
  instant (ISO 8601; without an offset it is UTC); a date alone names that
  whole UTC day, so `createdAfter=D&createdBefore=D` is the runs of day D.
- `q`: the objective contains the text (case-insensitive), or the text is
  exactly the run id, the thread id or the brief id.

Text values hold at most 200 characters and no NUL. The API refuses a bad
value (422 naming the parameter); the pages show the error; the admin says
its lookup is not valid. The pages and the admin read the same filters under
their form names (`capability`, `created_after`, `created_before`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone as dt_timezone
from typing import Any, Iterator, Mapping

import django_filters
from django import forms
from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from flexagents.errors import ValidationFailed
from hitl.models import HitlRequest, HitlStatus
from runs.models import NodeRun, Run, RunStatus
from runs.selectors import assigned_to

MAX_FILTER_LENGTH = 200


# --- form fields ------------------------------------------------------------------

class StatusesField(forms.CharField):
    """`queued` or `queued,running`: a list of known statuses."""

    def clean(self, value: Any) -> list[str] | None:
        text = super().clean(value)
        if not text:
            return None
        wanted = [s.strip() for s in text.split(",") if s.strip()]
        unknown = [s for s in wanted if s not in RunStatus.values]
        if unknown:
            raise forms.ValidationError(
                f"is not a known status; expected one of {', '.join(RunStatus.values)}")
        return wanted or None


@dataclass(frozen=True)
class Moment:
    """A parsed bound: the instant, and whether the value named a whole day."""

    at: datetime
    whole_day: bool


class MomentField(forms.CharField):
    """ISO 8601 timestamp or date. A naive value is UTC. A `+` of an offset
    that arrived unencoded in a query string reads as a space: put it back."""

    def clean(self, value: Any) -> Moment | None:
        text = super().clean(value)
        if not text:
            return None
        text = re.sub(r"(\d) (\d{2}:?\d{2})$", r"\1+\2", text)
        try:
            # A date first: parse_datetime also reads a bare date (as midnight).
            day = parse_date(text)
            whole_day = day is not None
            parsed = datetime(day.year, day.month, day.day) if day else parse_datetime(text)
        except ValueError:
            parsed = None
        if parsed is None:
            raise forms.ValidationError("expected an ISO 8601 timestamp such as 2026-03-01T10:00:00Z or a date")
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt_timezone.utc)
        try:
            # In UTC: PostgreSQL refuses offsets beyond ±15:59 that Python reads.
            parsed = parsed.astimezone(dt_timezone.utc)
        except OverflowError:
            raise forms.ValidationError("the timestamp is out of range") from None
        return Moment(parsed, whole_day)


# --- filters ------------------------------------------------------------------------

class StatusFilter(django_filters.Filter):
    field_class = StatusesField

    def filter(self, qs: QuerySet[Run], value: list[str] | None) -> QuerySet[Run]:
        return qs.filter(status__in=value) if value else qs


class CreatedFilter(django_filters.Filter):
    """Inclusive bound on `created_at`; a date covers its whole day."""

    field_class = MomentField

    def __init__(self, *, bound: str, **kwargs: Any) -> None:
        super().__init__(field_name="created_at", **kwargs)
        self.bound = bound

    def filter(self, qs: QuerySet[Run], value: Moment | None) -> QuerySet[Run]:
        if value is None:
            return qs
        if self.bound == "after":
            return qs.filter(created_at__gte=value.at)
        if value.whole_day:
            if value.at.date() == date.max:
                return qs  # the last day there is: nothing comes after it
            return qs.filter(created_at__lt=value.at + timedelta(days=1))
        return qs.filter(created_at__lte=value.at)


def text(field_name: str | None = None, **kwargs: Any) -> django_filters.CharFilter:
    return django_filters.CharFilter(field_name=field_name, max_length=MAX_FILTER_LENGTH, **kwargs)


class RunFilter(django_filters.FilterSet):
    """The filters under the API's parameter names (API.md)."""

    status = StatusFilter(max_length=MAX_FILTER_LENGTH)
    threadId = text("thread_id")
    briefId = text("brief_id")
    capabilityId = text(method="filter_capability")
    pending = django_filters.ChoiceFilter(choices=[("yes", "yes"), ("no", "no")], method="filter_pending")
    createdAfter = CreatedFilter(bound="after", max_length=MAX_FILTER_LENGTH)
    createdBefore = CreatedFilter(bound="before", max_length=MAX_FILTER_LENGTH)
    q = text(method="filter_text")
    # Runs with a pending request assigned to the caller (by user or group).
    assignedTo = django_filters.ChoiceFilter(choices=[("me", "me")], method="filter_assigned")

    class Meta:
        model = Run
        fields: list[str] = []

    def filter_assigned(self, qs: QuerySet[Run], name: str, value: str) -> QuerySet[Run]:
        user = getattr(self.request, "user", None)
        if user is None or not getattr(user, "is_authenticated", False):
            return qs.none()
        mine = HitlRequest.objects.filter(assigned_to(user), run=OuterRef("pk"), status=HitlStatus.PENDING)
        return qs.filter(Exists(mine))

    def filter_capability(self, qs: QuerySet[Run], name: str, value: str) -> QuerySet[Run]:
        return qs.filter(Exists(NodeRun.objects.filter(run=OuterRef("pk"), capability_id=value)))

    def filter_pending(self, qs: QuerySet[Run], name: str, value: str) -> QuerySet[Run]:
        has = Exists(HitlRequest.objects.filter(run=OuterRef("pk"), status=HitlStatus.PENDING))
        return qs.filter(has) if value == "yes" else qs.exclude(has)

    def filter_text(self, qs: QuerySet[Run], name: str, value: str) -> QuerySet[Run]:
        value = value.strip()
        if not value:
            return qs
        return qs.filter(Q(objective__icontains=value) | Q(pk=value) | Q(thread_id=value) | Q(brief_id=value))


# The pages' and the admin's form names for the same filters.
FORM_NAMES = {"capabilityId": "capability", "createdAfter": "created_after", "createdBefore": "created_before",
              "assignedTo": "assigned"}


class RunFormFilter(RunFilter):
    """The same filters under the history pages' (and admin's) form names."""


RunFormFilter.base_filters = {FORM_NAMES.get(name, name): f for name, f in RunFilter.base_filters.items()}


def filter_errors(filterset: django_filters.FilterSet) -> list[dict[str, str]]:
    """Form errors as API.md errors: `[{"path": "/name", "message"}]`."""
    return [{"path": f"/{name}", "message": " ".join(str(m) for m in messages)}
            for name, messages in filterset.errors.items()]


def api_filtered(queryset: QuerySet[Run], params: Mapping[str, Any], request: Any = None) -> QuerySet[Run]:
    """The API: a bad value is 422 `validation_failed` naming the parameter."""
    filterset = RunFilter(params, queryset=queryset, request=request)
    if not filterset.is_valid():
        errors = filter_errors(filterset)
        names = ", ".join(e["path"].lstrip("/") for e in errors)
        raise ValidationFailed(f"The query parameter(s) {names} are not valid: {errors[0]['message']}.",
                               details={"errors": errors})
    filtered: QuerySet[Run] = filterset.qs
    return filtered


def form_filtered(queryset: QuerySet[Run], params: Mapping[str, Any],
                  request: Any = None) -> tuple[QuerySet[Run], list[dict[str, str]]]:
    """The pages: the valid filters apply, the bad ones are reported."""
    filterset = RunFormFilter(params, queryset=queryset, request=request)
    errors = [] if filterset.is_valid() else filter_errors(filterset)
    return filterset.qs, errors


def capability_choices() -> list[str]:
    from planner.registry import get_registry

    return sorted(get_registry().ids())


# --- the admin's sidebar ------------------------------------------------------------

def admin_filtered(queryset: QuerySet[Run], params: Mapping[str, Any], request: Any = None) -> QuerySet[Run]:
    filterset = RunFormFilter(params, queryset=queryset, request=request)
    if not filterset.is_valid():
        raise IncorrectLookupParameters(filter_errors(filterset))
    filtered: QuerySet[Run] = filterset.qs
    return filtered


class SharedListFilter(admin.SimpleListFilter):
    """One filter of `RunFormFilter` in the admin's sidebar. `parameter_name`
    is the admin URL's name, `field` the filter's form name."""

    field = ""

    def queryset(self, request: HttpRequest, queryset: QuerySet[Run]) -> QuerySet[Run]:
        value = self.value()
        if value in (None, ""):
            return queryset
        return admin_filtered(queryset, {self.field or str(self.parameter_name): value}, request)


class StatusListFilter(SharedListFilter):
    title = "status"
    parameter_name = "status__exact"  # the admin's usual name for a status link
    field = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(str(value), str(label)) for value, label in RunStatus.choices]


class PendingListFilter(SharedListFilter):
    title = "pending request"
    parameter_name = "pending"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Has a pending request"), ("no", "No pending request")]


class AssignedListFilter(SharedListFilter):
    title = "assigned"
    parameter_name = "assigned"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("me", "Waiting for me (assigned)")]


class CapabilityListFilter(SharedListFilter):
    title = "capability"
    parameter_name = "capability"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(c, c) for c in capability_choices()]


class CreatedListFilter(admin.ListFilter):
    """`created_after` / `created_before` (dates, inclusive), with the usual
    links: today, the past 7 days, this month, this year."""

    title = "created"
    parameters = ("created_after", "created_before")

    def __init__(self, request: HttpRequest, params: dict[str, Any], model: Any, model_admin: Any) -> None:
        super().__init__(request, params, model, model_admin)
        for name in self.parameters:
            if name in params:
                value = params.pop(name)
                self.used_parameters[name] = value[-1] if isinstance(value, list) else value

    def has_output(self) -> bool:
        return True

    def expected_parameters(self) -> list[str | None]:
        return list(self.parameters)

    def queryset(self, request: HttpRequest, queryset: QuerySet[Run]) -> QuerySet[Run]:
        return admin_filtered(queryset, self.used_parameters) if self.used_parameters else queryset

    def choices(self, changelist: Any) -> Iterator[dict[str, Any]]:
        today = timezone.now().astimezone(dt_timezone.utc).date()
        links: list[tuple[str, dict[str, str]]] = [
            ("Any date", {}),
            ("Today", {"created_after": today.isoformat(), "created_before": today.isoformat()}),
            ("Past 7 days", {"created_after": (today - timedelta(days=6)).isoformat(),
                             "created_before": today.isoformat()}),
            ("This month", {"created_after": today.replace(day=1).isoformat(), "created_before": today.isoformat()}),
            ("This year", {"created_after": today.replace(month=1, day=1).isoformat(),
                           "created_before": today.isoformat()}),
        ]
        for title, params in links:
            yield {"selected": self.used_parameters == params,
                   "query_string": changelist.get_query_string(params, remove=list(self.parameters)),
                   "display": title}


RUN_LIST_FILTERS = (StatusListFilter, PendingListFilter, AssignedListFilter, CapabilityListFilter, CreatedListFilter)


def run_text_search(queryset: QuerySet[Run], term: str) -> QuerySet[Run]:
    """The admin's search box: the `q` filter."""
    return admin_filtered(queryset, {"q": term}) if term.strip() else queryset
