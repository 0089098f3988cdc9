"""Every error under /api/ is JSON, even the ones Django produces itself.

DRF views already answer through `flexagents.errors.api_exception_handler`.
What is left is Django's own HTML: the 404 of URL resolving, the 500 of an
exception outside DRF, the 400/413 of an oversized body, 405 from plain
views, CSRF failures. This middleware rewrites those for paths under /api/
and leaves every other page (admin, history) as Django renders it.

It also answers the flex feature flag (`FLEX_ENABLED`), read per request so
`override_settings` works in tests.

Sync and async capable: under ASGI a sync-only middleware would push every
request, SSE streams included, through a thread.
"""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponseBase, JsonResponse

from flexagents import logging as flex_logging
from flexagents.errors import FlexDisabled, error_body

logger = logging.getLogger("flexagents.middleware")

API_PREFIX = "/api/"
FLEX_PREFIXES = ("/api/v1/flex/", "/api/hitl/")

# Django's status → our code and sentence, for responses it built as HTML.
_STATUS_ERRORS: dict[int, tuple[str, str]] = {
    400: ("bad_request", "The request could not be understood."),
    401: ("not_authenticated", "Authentication credentials were missing or invalid."),
    403: ("permission_denied", "Your role does not allow this action."),
    404: ("not_found", "Not found."),
    405: ("method_not_allowed", "This method is not allowed here."),
    406: ("not_acceptable", "The requested media type cannot be served."),
    413: ("payload_too_large", "The request body is larger than the server accepts."),
    415: ("unsupported_media_type", "Send the body as application/json."),
    429: ("throttled", "Too many requests; retry later."),
}
_INTERNAL = ("internal_error", "The server failed to process the request.")
# Headers worth keeping when the body is replaced.
_KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate", "Vary")


def is_api_path(path: str) -> bool:
    return path.startswith(API_PREFIX)


def json_error(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> JsonResponse:
    return JsonResponse(error_body(code, message, details), status=status)


def _declared_length(request: HttpRequest) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except (TypeError, ValueError):
        return 0


def _is_json(response: HttpResponseBase) -> bool:
    return response.get("Content-Type", "").split(";")[0].strip().endswith("json")


def _bind_correlation(request: HttpRequest) -> Any:
    """The request's correlation id (`X-Correlation-ID`, else a new one), in
    every log line of the request; a run created here inherits it."""
    request.correlation_id = (flex_logging.clean_correlation_id(request.headers.get("X-Correlation-ID"))
                              or flex_logging.new_correlation_id())
    return flex_logging.bind(correlation_id=request.correlation_id)


def _echo_correlation(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
    # What the request bound (correlation id, user, a new run), for the access
    # log line written after this middleware has let go of the context.
    request.log_fields = flex_logging.current_fields()  # type: ignore[attr-defined]
    # A view may rebind it (a run created with `metadata.correlationId`); a
    # value unfit for a header (client data) is not echoed.
    response["X-Correlation-ID"] = (flex_logging.clean_correlation_id(flex_logging.current_correlation_id())
                                    or request.correlation_id)
    return response


class HybridMiddleware:
    """A middleware that serves sync and async stacks alike: it becomes a
    coroutine function when what it wraps is one."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        if iscoroutinefunction(self.get_response):
            markcoroutinefunction(self)


class ApiErrorMiddleware(HybridMiddleware):

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if iscoroutinefunction(self):
            return self.__acall__(request)
        token = _bind_correlation(request)
        try:
            early = self._before(request)
            response = early if early is not None else self._after(request, self.get_response(request))
            return _echo_correlation(request, response)
        finally:
            flex_logging.reset(token)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        token = _bind_correlation(request)
        try:
            early = self._before(request)
            response = early if early is not None else self._after(request, await self.get_response(request))
            return _echo_correlation(request, response)
        finally:
            flex_logging.reset(token)

    def _before(self, request: HttpRequest) -> HttpResponseBase | None:
        path = request.path_info
        if not is_api_path(path):
            return None
        if not settings.FLEX_ENABLED and path.startswith(FLEX_PREFIXES):
            disabled = FlexDisabled()
            return JsonResponse(disabled.as_body(), status=disabled.status_code)
        # Refuse an oversized body before anything reads it. The parser checks
        # again (bodies without Content-Length); this covers non-DRF views.
        if _declared_length(request) > settings.FLEX_MAX_BODY_BYTES:
            return json_error(413, *_STATUS_ERRORS[413])
        return None

    def _after(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        if response.status_code < 400 or not is_api_path(request.path_info):
            return response
        # JSON bodies are ours (DRF's handler, our views). Streaming bodies
        # cannot be inspected and belong to the SSE views.
        if _is_json(response) or response.streaming:
            return response
        status = response.status_code
        if status == 400 and _declared_length(request) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
            # Django answers RequestDataTooBig raised outside a view with a
            # bare 400 (it is a SuspiciousOperation); the contract says 413.
            status = 413
        code, message = _STATUS_ERRORS.get(status, _INTERNAL if status >= 500 else ("error", "The request failed."))
        replaced = json_error(status, code, message)
        for name in _KEPT_HEADERS:
            if name in response:
                replaced[name] = response[name]
        return replaced

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponseBase | None:
        """Exceptions escaping a non-DRF view under /api/ (DRF views handle
        their own). Returning a response stops Django's HTML error page."""
        if not is_api_path(request.path_info):
            return None
        if isinstance(exception, RequestDataTooBig):
            return json_error(413, *_STATUS_ERRORS[413])
        if isinstance(exception, Http404):
            return json_error(404, *_STATUS_ERRORS[404])
        if isinstance(exception, PermissionDenied):
            return json_error(403, *_STATUS_ERRORS[403])
        if isinstance(exception, SuspiciousOperation):
            logging.getLogger("django.security").warning("suspicious request: %s", exception)
            return json_error(400, *_STATUS_ERRORS[400])
        # Log with the traceback (Django would have; we return a response so
        # it will not), never show it.
        logger.error("unhandled error in %s %s", request.method, request.path, exc_info=exception)
        return json_error(500, *_INTERNAL)

