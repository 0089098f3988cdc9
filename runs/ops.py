"""Operating the system: worker heartbeats and readiness (`GET /api/ready`).

A worker busy inside a long node does not return to its loop; it still
renews its run's lease every lease/3 on its own thread, so a live lease
counts as a heartbeat too (`fresh_workers`).
"""
from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from flexagents import views as platform_views
from runs.models import Run, WorkerHeartbeat

logger = logging.getLogger("runs.ops")


# Stale rows (stopped or crashed workers) are deleted after this long.
FORGET_AFTER = timedelta(days=1)

_last_beat: dict[str, float] = {}
_lock = threading.Lock()


def worker_beat(worker_id: str) -> None:
    """Record that `worker_id` is alive, at most every FLEX_WORKER_HEARTBEAT_SECONDS.

    Never raises: a heartbeat that cannot be written (database down) must
    not stop the worker; readiness then reports it stale, which is the truth.
    """
    now_mono = time.monotonic()
    with _lock:
        if now_mono - _last_beat.get(worker_id, float("-inf")) < settings.FLEX_WORKER_HEARTBEAT_SECONDS:
            return
        _last_beat[worker_id] = now_mono
    try:
        now = timezone.now()
        if not WorkerHeartbeat.objects.filter(worker_id=worker_id).update(last_seen_at=now):
            WorkerHeartbeat.objects.update_or_create(worker_id=worker_id,
                                                     defaults={"started_at": now, "last_seen_at": now})
            # A new worker is rare: the moment to forget long-dead ones.
            WorkerHeartbeat.objects.filter(last_seen_at__lt=now - FORGET_AFTER).delete()
    except Exception:  # noqa: BLE001 — see docstring
        with _lock:
            _last_beat.pop(worker_id, None)
        logger.warning("worker heartbeat failed", exc_info=True)
        close_old_connections()


def stale_after() -> timedelta:
    return timedelta(seconds=settings.FLEX_WORKER_STALE_SECONDS)


def fresh_workers() -> int:
    """How many workers showed life within FLEX_WORKER_STALE_SECONDS: a fresh
    heartbeat row, or a run lease held and not expired (a busy worker)."""
    now = timezone.now()
    beating = set(WorkerHeartbeat.objects.filter(last_seen_at__gte=now - stale_after())
                  .values_list("worker_id", flat=True))
    leasing = set(Run.objects.filter(lease_expires_at__gt=now).exclude(lease_owner="")
                  .values_list("lease_owner", flat=True))
    return len(beating | leasing)


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
