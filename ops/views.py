"""`GET /api/ready` (readiness) and `GET /metrics` (Prometheus)."""
from __future__ import annotations

import hmac
import logging
from typing import Any

from django.conf import settings
from django.db import connection
from django.http import HttpResponse, JsonResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from flexagents import views as platform_views
from flexagents.errors import error_body

logger = logging.getLogger("ops.views")


# A probe must answer within its own timeout, even when the database does not.
DATABASE_TIMEOUT_SECONDS = 2


def database_answers() -> bool:
    """True when the database answers `SELECT 1` now.

    On PostgreSQL a fresh connection with a connect timeout, not the pool: a
    pool whose server is gone makes callers wait its whole pool timeout
    (20 s), longer than any orchestrator waits for a probe.
    """
    if connection.vendor != "postgresql":
        return platform_views._database_ok()
    import psycopg

    try:
        params = connection.get_connection_params()
        with psycopg.connect(**params, connect_timeout=DATABASE_TIMEOUT_SECONDS) as conn:
            conn.execute("SELECT 1").fetchone()
        return True
    except Exception:  # noqa: BLE001 — refused, timeout, auth: all "down"
        logger.warning("ready: database check failed", exc_info=True)
        return False


def readiness() -> tuple[dict[str, Any], list[str]]:
    """Every check's state and the names of those that failed."""
    checks: dict[str, Any] = {"database": "ok" if database_answers() else "down",
                              "redis": platform_views._redis_state()}
    if checks["database"] == "ok":
        from ops.heartbeats import fresh_workers

        try:
            fresh = fresh_workers()
        except Exception:  # noqa: BLE001 — a half-migrated or failing database
            logger.warning("ready: worker check failed", exc_info=True)
            fresh = 0
        checks["workers"] = {"fresh": fresh, "staleAfterSeconds": settings.FLEX_WORKER_STALE_SECONDS}
    else:
        checks["workers"] = {"fresh": None, "staleAfterSeconds": settings.FLEX_WORKER_STALE_SECONDS}
    failed = [name for name in ("database", "redis") if checks[name] == "down"]
    if not checks["workers"]["fresh"]:
        failed.append("workers")
    return checks, failed


_FAILED_SENTENCES = {
    "database": "the database does not answer",
    "redis": "Redis (REDIS_URL) does not answer",
    "workers": "no worker heartbeat is fresh",
}


class ProbeApi(APIView):
    """No authentication: probes and scrapers call it, and whatever `Accept`
    they send, they get the one format the endpoint has (never a 406)."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        return super().perform_content_negotiation(request, force=True)


class ReadyApi(ProbeApi):

    @extend_schema(
        operation_id="ready",
        summary="Readiness: database, Redis (when configured) and a fresh worker heartbeat",
        description="200 when the database answers, Redis answers (when `REDIS_URL` is set) and at least one "
                    "worker showed life within `FLEX_WORKER_STALE_SECONDS`. Otherwise 503 `not_ready` with "
                    "`details.failed` (names of the failed checks) and `details.checks`. `/api/health` stays "
                    "the liveness check.",
        auth=[],
        responses={
            200: inline_serializer("Ready", {"status": serializers.CharField(), "checks": serializers.DictField()}),
            503: OpenApiResponse(description="Not ready: `{code: not_ready, message, details: {failed, checks}}`"),
        },
    )
    def get(self, request: Request) -> HttpResponse:
        checks, failed = readiness()
        if not failed:
            return JsonResponse({"status": "ready", "checks": checks}, headers={"Cache-Control": "no-cache"})
        message = "Not ready: " + "; ".join(_FAILED_SENTENCES[name] for name in failed) + "."
        return JsonResponse(error_body("not_ready", message, {"failed": failed, "checks": checks}), status=503,
                            headers={"Retry-After": "5", "Cache-Control": "no-cache"})


class PrometheusTextRenderer(BaseRenderer):
    """Lets content negotiation accept scrapers that ask for text only (the
    view builds its body itself)."""

    media_type = "text/plain"
    format = "txt"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        return data if isinstance(data, bytes) else str(data).encode()


class MetricsApi(ProbeApi):
    """Prometheus scrape endpoint; `FLEX_METRICS_TOKEN` (Bearer) when set."""
    renderer_classes = [PrometheusTextRenderer]

    @extend_schema(
        operation_id="metrics",
        summary="Prometheus metrics of every process of the deployment",
        description="Prometheus text format (multi-process: web and worker processes aggregated through "
                    "`PROMETHEUS_MULTIPROC_DIR`). Gauges that are facts of the database (`flex_hitl_pending`, "
                    "`flex_queue_depth`, `flex_agents_active`, `flex_workers_fresh`) are computed at scrape "
                    "time. When `FLEX_METRICS_TOKEN` is set, send `Authorization: Bearer <token>` (else 401 "
                    "`not_authenticated`).",
        auth=[],
        responses={(200, "text/plain"): OpenApiResponse(OpenApiTypes.STR, description="text/plain; version=0.0.4"),
                   (401, "application/json"): OpenApiResponse(
                       description="`not_authenticated` (FLEX_METRICS_TOKEN is set)")},
    )
    def get(self, request: Request) -> HttpResponse:
        expected = settings.FLEX_METRICS_TOKEN
        if expected:
            sent = request.META.get("HTTP_AUTHORIZATION", "")
            scheme, _, token = sent.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
                response = JsonResponse(error_body("not_authenticated", "Send Authorization: Bearer "
                                                   "<FLEX_METRICS_TOKEN> to read the metrics."), status=401)
                response["WWW-Authenticate"] = 'Bearer realm="metrics"'
                return response
        from ops.metrics import render

        body, content_type = render()
        return HttpResponse(body, content_type=content_type)
