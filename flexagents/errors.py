"""Domain errors and the one exception handler of the API.

Every error leaves the API as `{"code", "message", "details"}` (API.md).
Domain code raises a `FlexError` subclass carrying its stable `code` and
`status_code`; DRF's and Django's own exceptions are mapped here too, so no
view ever builds an error body by hand.
"""
from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response

logger = logging.getLogger("flexagents.errors")


class FlexError(Exception):
    """A domain error: a stable code, an HTTP status and a human sentence."""

    code = "error"
    status_code = 400
    default_message = "The request could not be processed."

    def __init__(self, message: str | None = None, *, code: str | None = None, status_code: int | None = None,
                 details: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> None:
        self.message = message or self.default_message
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code
        self.details = details or {}
        self.headers = headers or {}
        super().__init__(self.message)

    def as_body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class NotFound(FlexError):
    code = "not_found"
    status_code = 404
    default_message = "Not found."


class RunNotFound(NotFound):
    code = "run_not_found"
    default_message = "No run with this id exists, or you may not view it."


class HitlRequestNotFound(NotFound):
    code = "hitl_request_not_found"
    default_message = "No HITL request with this id exists, or you may not view it."


class FlexDisabled(NotFound):
    code = "flex_disabled"
    default_message = "The flex API is disabled on this server."


class Forbidden(FlexError):
    code = "permission_denied"
    status_code = 403
    default_message = "Your role does not allow this action."


class NotAssignee(Forbidden):
    code = "not_assignee"
    default_message = "This request is assigned to other people; only they may answer it."


class SelfApprovalForbidden(Forbidden):
    code = "self_approval_forbidden"
    default_message = "You created this run, so you may not approve its approval request; someone else must."


class PolicyNotFound(NotFound):
    code = "policy_not_found"
    default_message = "The run's envelope has no runtime policy with this id."


class Conflict(FlexError):
    status_code = 409
    code = "conflict"


class InvalidRunState(Conflict):
    code = "invalid_run_state"
    default_message = "The run is not in a state that allows this action."


class RunAlreadyCompleted(Conflict):
    code = "run_already_completed"
    default_message = "The run has already finished."


class StalePlanVersion(Conflict):
    code = "stale_plan_version"
    default_message = "The plan version you acted on is no longer current."


class StaleHitlState(Conflict):
    code = "stale_hitl_state"
    default_message = "Someone responded to this request since you last read it."


class HitlRequestNotPending(Conflict):
    code = "hitl_request_not_pending"
    default_message = "This request was already resolved or removed."


class AlreadyApproved(Conflict):
    code = "already_approved"
    default_message = "You already approved this request; it needs approvals from other people."


class MissingSnapshot(Conflict):
    code = "missing_snapshot"
    default_message = "The run has no plan snapshot to resume from."


class Unprocessable(FlexError):
    status_code = 422
    code = "validation_failed"
    default_message = "The request body is not valid."


class ValidationFailed(Unprocessable):
    code = "validation_failed"


class UnknownFacet(Unprocessable):
    code = "unknown_facet"
    default_message = "The envelope names facets that are not in the catalog."


class UnknownCapability(Unprocessable):
    code = "unknown_capability"
    default_message = "The envelope names capabilities that are not registered."


class InvalidOutputContract(Unprocessable):
    code = "invalid_output_contract"
    default_message = "The output contract is not a valid JSON Schema."


class HitlResponseRequired(Unprocessable):
    code = "hitl_response_required"
    default_message = "The pending request must be resolved by the responses in this body."


class IdempotencyKeyInvalid(Unprocessable):
    code = "idempotency_key_invalid"
    default_message = "The Idempotency-Key header must be 1-255 printable ASCII characters."


class IdempotencyKeyReused(Unprocessable):
    code = "idempotency_key_reused"
    default_message = "This Idempotency-Key was already used with a different request."


class IdempotencyInProgress(Conflict):
    code = "idempotency_in_progress"
    default_message = "A request with this Idempotency-Key is still being processed; retry shortly."
class CapabilityInactive(Unprocessable):
    code = "capability_inactive"
    default_message = "The run needs a capability whose agent is inactive."


class CapabilityConflict(Conflict):
    code = "capability_conflict"
    default_message = "The capability id belongs to a built-in or to another agent."


class LeaseLost(Conflict):
    code = "lease_lost"
    default_message = "This task's lease expired, was taken over, or its run is no longer running."


class ServerBusy(FlexError):
    code = "server_busy"
    status_code = 503
    default_message = "The server is busy; retry later."

    def __init__(self, message: str | None = None, *, retry_after: int = 5, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.headers["Retry-After"] = str(retry_after)


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "details": details or {}}


def _validation_errors(detail: Any, path: str = "") -> list[dict[str, str]]:
    """Flatten DRF serializer errors into JSON-pointer paths."""
    out: list[dict[str, str]] = []
    if isinstance(detail, dict):
        for key, value in detail.items():
            sub = path if key == "non_field_errors" else f"{path}/{key}"
            out.extend(_validation_errors(value, sub))
    elif isinstance(detail, list):
        if all(not isinstance(item, (dict, list)) for item in detail):
            out.extend({"path": path or "/", "message": str(item)} for item in detail)
        else:
            for index, item in enumerate(detail):
                out.extend(_validation_errors(item, f"{path}/{index}"))
    else:
        out.append({"path": path or "/", "message": str(detail)})
    return out


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """The only place where exceptions become API error bodies."""
    headers: dict[str, str] = {}
    if isinstance(exc, FlexError):
        body, status, headers = exc.as_body(), exc.status_code, exc.headers
    elif isinstance(exc, RequestDataTooBig):
        body, status = error_body("payload_too_large", "The request body is larger than the server accepts."), 413
    elif isinstance(exc, drf_exceptions.ParseError):
        body, status = error_body("malformed_json", "The request body is not valid JSON.",
                                  {"error": str(exc.detail)}), 400
    elif isinstance(exc, drf_exceptions.UnsupportedMediaType):
        body, status = error_body("unsupported_media_type", "Send the body as application/json.",
                                  {"mediaType": exc.args[0] if exc.args else None}), 415
    elif isinstance(exc, (drf_exceptions.NotAuthenticated, drf_exceptions.AuthenticationFailed)):
        body, status = error_body("not_authenticated", "Authentication credentials were missing or invalid."), 401
        headers["WWW-Authenticate"] = 'Bearer realm="api"'
    elif isinstance(exc, (drf_exceptions.PermissionDenied, PermissionDenied)):
        body, status = error_body("permission_denied", "Your role does not allow this action."), 403
    elif isinstance(exc, (drf_exceptions.NotFound, Http404)):
        body, status = error_body("not_found", "Not found."), 404
    elif isinstance(exc, drf_exceptions.MethodNotAllowed):
        body, status = error_body("method_not_allowed", str(exc.detail)), 405
    elif isinstance(exc, drf_exceptions.NotAcceptable):
        body, status = error_body("not_acceptable", "The requested media type cannot be served."), 406
    elif isinstance(exc, drf_exceptions.Throttled):
        wait = int(exc.wait or 1)
        body, status = error_body("throttled", "Too many requests; retry later.", {"retryAfter": wait}), 429
        headers["Retry-After"] = str(wait)
    elif isinstance(exc, drf_exceptions.ValidationError):
        body, status = error_body("validation_failed", "The request body is not valid.",
                                  {"errors": _validation_errors(exc.detail)}), 422
    elif isinstance(exc, drf_exceptions.APIException):
        body, status = error_body(exc.default_code or "error", str(exc.detail)), exc.status_code
    else:
        # Unexpected: log it with its traceback, never show it.
        logger.exception("unhandled error in API view", exc_info=exc)
        body, status = error_body("internal_error", "The server failed to process the request."), 500
    response = Response(body, status=status)
    for name, value in headers.items():
        response[name] = value
    return response
