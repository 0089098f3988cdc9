"""Request bodies and the access log, at the edge of the application.

- `InputGuardMiddleware`:
  - a body sent with `Transfer-Encoding: chunked` has no Content-Length, and
    DRF treats a request without one as bodiless (the envelope came out
    empty: "objective is required"). The body is read here, at most
    `FLEX_MAX_BODY_BYTES` + 1 bytes: past the limit, 413; else it becomes the
    request's body with its real length;
  - under /api/, a NUL character in the path (`%00`) is a JSON 404 and in a
    query parameter a JSON 422 naming the parameter: PostgreSQL refuses NUL
    in text, so it must never reach a query (the body's values are checked
    by `flexagents.parsers`).
- `RequestLogMiddleware`: one log line per request (logger
  `flexagents.access`): method, path, the query string redacted by the one
  redactor, status, duration. It replaces daphne's raw access log, which
  printed query strings verbatim (`flexagents.serve` turns that one off).
"""
from __future__ import annotations

import io
import logging
import time
from collections.abc import Awaitable
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse

from flexagents import logging as flex_logging
from flexagents.errors import error_body
from flexagents.middleware import HybridMiddleware
from flexagents.redaction import redact_query_string

logger = logging.getLogger("flexagents.access")


_Middleware = HybridMiddleware


def _too_large(request: HttpRequest) -> HttpResponseBase:
    if request.path_info.startswith("/api/"):
        return JsonResponse(error_body("payload_too_large", "The request body is larger than the server accepts."),
                            status=413)
    return HttpResponse("The request body is too large.", status=413, content_type="text/plain")


def _read_chunked_body(request: HttpRequest) -> HttpResponseBase | None:
    if request.META.get("CONTENT_LENGTH") or "chunked" not in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
        return None
    limit: int = settings.FLEX_MAX_BODY_BYTES
    body = request.read(limit + 1)
    if len(body) > limit:
        return _too_large(request)
    # What HttpRequest.body does once read: keep the bytes, serve reads from them.
    request._body = body  # type: ignore[attr-defined]
    request._stream = io.BytesIO(body)  # type: ignore[attr-defined]
    request._read_started = False  # type: ignore[attr-defined]
    request.META["CONTENT_LENGTH"] = str(len(body))
    return None


def _refuse_nul(request: HttpRequest) -> HttpResponseBase | None:
    if not request.path_info.startswith("/api/"):
        return None
    if "\x00" in request.path_info:
        return JsonResponse(error_body("not_found", "Not found."), status=404)
    for key, values in request.GET.lists():
        if "\x00" in key or any("\x00" in value for value in values):
            pointer = "/" + key.replace("\x00", "").replace("~", "~0").replace("/", "~1")
            return JsonResponse(error_body("validation_failed", f"The query parameter {pointer[1:]!r} contains a "
                                           "NUL character.",
                                           {"errors": [{"path": pointer, "message": "contains a NUL character"}]}),
                                status=422)
    return None


def _guard(request: HttpRequest) -> HttpResponseBase | None:
    return _refuse_nul(request) or _read_chunked_body(request)


class InputGuardMiddleware(_Middleware):
    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if iscoroutinefunction(self):
            return self.__acall__(request)
        return _guard(request) or self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        # The ASGI handler has already spooled the body to a temporary file;
        # reading it does not wait on the client.
        return _guard(request) or await self.get_response(request)


def _log(request: HttpRequest, response: HttpResponseBase, started: float) -> None:
    query = request.META.get("QUERY_STRING", "")
    # The request's log context has ended here: bind again what it bound
    # (ApiErrorMiddleware kept it) and name the run of the URL, if any.
    match = getattr(request, "resolver_match", None)
    about = {"run_id": match.kwargs.get("run_id")} if match is not None and match.kwargs.get("run_id") else {}
    with flex_logging.log_context(**getattr(request, "log_fields", {})):
        _log_line(request, response, started, query, about)


def _log_line(request: HttpRequest, response: HttpResponseBase, started: float, query: str,
              about: dict[str, Any]) -> None:
    logger.info("%s %s%s %s", request.method, request.path, f"?{redact_query_string(query)}" if query else "",
                response.status_code,
                extra={"method": request.method, "path": request.path,
                       "query": redact_query_string(query) if query else "",
                       "status": response.status_code,
                       "durationMs": round((time.monotonic() - started) * 1000, 1), **about})


class RequestLogMiddleware(_Middleware):
    """Logs when the response is ready (an SSE stream: when it starts)."""

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if iscoroutinefunction(self):
            return self.__acall__(request)
        started = time.monotonic()
        response = self.get_response(request)
        _log(request, response, started)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        started = time.monotonic()
        response = await self.get_response(request)
        _log(request, response, started)
        return response
