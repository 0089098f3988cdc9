"""One throttle for every read of a run's details.

The debug view, the history page of a run and the events endpoint show the
same stored data; throttling only the debug view let a client read it
through the other two. They share one scope, `run_detail`, counted per user
(`FLEX_RUN_DETAIL_RATE`, default 120/min; the older `FLEX_DEBUG_VIEW_RATE`
still sets it). Counts live in Django's default cache: with no CACHES
configured that is a per-process LocMem cache, so each process counts on its
own (docs/api.md, Limits).
"""
from __future__ import annotations

import math

from django.http import HttpRequest, HttpResponse
from rest_framework.settings import api_settings
from rest_framework.throttling import UserRateThrottle


class RunDetailThrottle(UserRateThrottle):
    scope = "run_detail"

    def get_rate(self) -> str | None:
        # Read per request, not frozen at import: settings overrides apply.
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)


def page_throttled(request: HttpRequest) -> HttpResponse | None:
    """For the HTML history page: a 429 page past the shared rate, else None."""
    throttle = RunDetailThrottle()
    if throttle.allow_request(request, None):  # type: ignore[arg-type]
        return None
    wait = max(1, math.ceil(throttle.wait() or 1))
    response = HttpResponse(f"Too many requests; retry in {wait} seconds.", status=429, content_type="text/plain")
    response["Retry-After"] = str(wait)
    return response
