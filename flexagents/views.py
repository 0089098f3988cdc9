"""Platform views: the health check and the CSRF failure page."""
from __future__ import annotations

import logging
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import csrf
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from flexagents.errors import error_body
from flexagents.middleware import is_api_path

logger = logging.getLogger("flexagents.health")

# A health probe must answer quickly even when Redis does not.
REDIS_TIMEOUT_SECONDS = 1.0


@lru_cache(maxsize=1)
def app_version() -> str:
    try:
        return version("flexagents")
    except PackageNotFoundError:
        return "unknown"


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return True
    except Exception:  # any driver, pool or network error means "down"
        logger.warning("health: database check failed", exc_info=True)
        return False


@lru_cache(maxsize=4)
def _redis_client(url: str) -> Any:
    import redis  # only when configured

    return redis.Redis.from_url(url, socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                                socket_timeout=REDIS_TIMEOUT_SECONDS)


def _redis_state() -> str:
    if not settings.REDIS_URL:
        return "disabled"
    try:
        _redis_client(settings.REDIS_URL).ping()
        return "ok"
    except Exception:  # connection refused, timeout, auth: all "down"
        logger.warning("health: redis check failed", exc_info=True)
        return "down"


# CSRF-exempt: it only reads, and a probe using another method must get 405, not a CSRF 403.
@csrf_exempt
@never_cache
@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """`GET /api/health`, no authentication: 200 while the database answers.

    Redis is reported but does not fail the check: without it events still
    reach streams by polling (slower, not broken).
    """
    database_ok = _database_ok()
    body: dict[str, Any] = {
        "status": "ok" if database_ok else "degraded",
        "database": "ok" if database_ok else "down",
        "redis": _redis_state(),
        "version": app_version(),
    }
    if database_ok:
        return JsonResponse(body)
    # Every error of the API carries code/message/details (API.md); the
    # health fields stay beside them for probes that read `status`.
    body.update(error_body("server_busy", "The database is not reachable; retry later."))
    response = JsonResponse(body, status=503)
    response["Retry-After"] = "5"
    return response


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """`CSRF_FAILURE_VIEW`: JSON under /api/, Django's page elsewhere."""
    if is_api_path(request.path_info):
        return JsonResponse(error_body("permission_denied", "The CSRF check failed; send the CSRF token "
                                       "with session-authenticated writes, or use a Bearer token.",
                                       {"reason": "csrf"}), status=403)
    return csrf.csrf_failure(request, reason=reason)
