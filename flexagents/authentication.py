"""API authentication: `Authorization: Bearer <token>` with DRF's tokens."""
from __future__ import annotations

from rest_framework.authentication import TokenAuthentication
from rest_framework.request import Request


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
