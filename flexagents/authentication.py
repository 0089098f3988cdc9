"""API authentication: `Authorization: Bearer <token>` with DRF's tokens."""
from __future__ import annotations

from rest_framework import exceptions
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.request import Request

from flexagents.errors import Forbidden


class BearerTokenAuthentication(TokenAuthentication):
    """DRF's token authentication under the standard `Bearer` keyword.

    A header with another scheme (`Token …`, `Basic …`) is not ours and falls
    through to the next authenticator; a `Bearer` header with an unknown or
    malformed token raises AuthenticationFailed (401 `not_authenticated`).
    """

    keyword = "Bearer"

    def authenticate_header(self, request: Request) -> str:
        # A non-empty WWW-Authenticate makes DRF answer 401, not 403, to
        # anonymous callers (it asks the first authenticator for it).
        return 'Bearer realm="api"'


class CsrfSessionAuthentication(SessionAuthentication):
    """DRF's session authentication, with a CSRF failure that says so.

    DRF raises a bare PermissionDenied; this one carries `details.reason =
    "csrf"` like Django's own CSRF failures under /api/ (flexagents.views),
    so a browser client can tell "reload the page" from "your role cannot".
    """

    def enforce_csrf(self, request: Request) -> None:
        try:
            super().enforce_csrf(request)
        except exceptions.PermissionDenied as exc:
            raise Forbidden("The CSRF check failed; send the CSRF token with session-authenticated writes, "
                            "or use a Bearer token.", details={"reason": "csrf"}) from exc
