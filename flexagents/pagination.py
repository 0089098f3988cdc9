"""The one pagination style of the API: an opaque cursor, keyset over the
list's ordering (DRF's `CursorPagination`, API.md "Pagination").

A page is the `limit` rows strictly after the cursor's row in the list's
ordering, so a page costs the same whatever its depth and rows inserted
meanwhile never shift or repeat a page. The cursor is the ordering values of
the previous page's last row (every ordering ends with the primary key, so
it names one position); `next` is the request's URL with that cursor, the
filters kept. Bad `limit` or `cursor` values are 422 `validation_failed`
naming the parameter (DRF would silently use the default page size, or
answer 404).
"""
from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from functools import reduce
from operator import or_
from typing import Any, Sequence

from django.core.exceptions import ValidationError
from django.db.models import Field, Model, Q, QuerySet
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

from flexagents.errors import ValidationFailed
from flexagents.params import int_param


class KeysetCursorPagination(CursorPagination):
    """Subclasses set `ordering` (ending with a unique field), `page_size`,
    `max_page_size` and `results_key` (the body's list key)."""

    cursor_query_param = "cursor"
    page_size_query_param = "limit"
    page_size = 20
    max_page_size = 100
    ordering: tuple[str, ...] = ("-created_at", "-id")
    results_key = "results"

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> list[Any]:
        assert isinstance(queryset, QuerySet), "keyset pagination needs a queryset"
        self.request = request
        self.base_url = request.build_absolute_uri()
        self.page_size = self.get_page_size(request)
        position = self.decode_position(request, queryset.model)
        queryset = queryset.order_by(*self.ordering)
        if position is not None:
            queryset = queryset.filter(self.after(position))
        rows = list(queryset[:self.page_size + 1])
        self.has_next = len(rows) > self.page_size
        self.page = rows[:self.page_size]
        return self.page

    def after(self, position: Sequence[Any]) -> Q:
        """Rows strictly after `position` in the ordering: (a, b, c) after
        (A, B, C) is a ≷ A, or a = A and b ≷ B, or a = A, b = B and c ≷ C."""
        clauses = []
        for i, key in enumerate(self.ordering):
            name = key.lstrip("-")
            equal = {k.lstrip("-"): v for k, v in zip(self.ordering[:i], position[:i])}
            clauses.append(Q(**equal, **{f"{name}__{'lt' if key.startswith('-') else 'gt'}": position[i]}))
        return reduce(or_, clauses)

    def get_page_size(self, request: Request) -> int:
        return int_param(request.query_params, self.page_size_query_param, default=self.page_size, low=1,
                         high=self.max_page_size)

    def get_next_link(self) -> str | None:
        if not self.has_next or not self.page:
            return None
        last = self.page[-1]
        values = [last[k.lstrip("-")] if isinstance(last, dict) else getattr(last, k.lstrip("-"))
                  for k in self.ordering]
        return replace_query_param(self.base_url or "", self.cursor_query_param, self.encode_position(values))

    def get_previous_link(self) -> None:
        return None  # the API pages forward only

    def get_paginated_response(self, data: Any) -> Response:
        return Response({self.results_key: data, "next": self.get_next_link()})

    @staticmethod
    def encode_position(values: Sequence[Any]) -> str:
        raw = json.dumps([v.isoformat() if isinstance(v, datetime) else v for v in values], separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    def decode_position(self, request: Request, model: type[Model]) -> list[Any] | None:
        """The ordering values of the cursor, parsed by the model's fields."""
        raw = request.query_params.get(self.cursor_query_param)
        if not raw:
            return None
        try:
            values = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
            if not isinstance(values, list) or len(values) != len(self.ordering):
                raise ValueError
            position = []
            for key, value in zip(self.ordering, values):
                if not isinstance(value, (str, int)) or isinstance(value, bool):
                    raise ValueError
                field = model._meta.get_field(key.lstrip("-"))
                if not isinstance(field, Field):
                    raise ValueError
                parsed = field.to_python(value)
                if parsed is None or (isinstance(parsed, datetime) and parsed.tzinfo is None):
                    raise ValueError
                position.append(parsed)
            return position
        except (ValueError, TypeError, ValidationError, binascii.Error, UnicodeDecodeError):
            message = "not a cursor returned by this endpoint"
            raise ValidationFailed(f"The query parameter {self.cursor_query_param} is not valid: {message}.",
                                   details={"errors": [{"path": f"/{self.cursor_query_param}",
                                                        "message": message}]}) from None
