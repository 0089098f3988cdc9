"""Fan-out of committed events to live SSE streams, in this process and others.

Publishing is best effort and reading is exact: a frame handed to a stream
here is only a shortcut. Every stream checks that frames arrive contiguously
(`seq` = last + 1) and otherwise re-reads the event table, so a lost Redis
message, a Redis restart or an overflowing listener costs latency, never an
event. Redis being down never fails the caller: the event is already committed.
"""
from __future__ import annotations

import json
import logging
import threading
from typing import Any

from django.conf import settings

logger = logging.getLogger("runs.notify")

REDIS_CHANNEL = "flexagents:events"
WORK_CHANNEL = "flexagents:work"

_redis_lock = threading.Lock()
_redis_client: Any = None


def _sync_redis() -> Any:
    global _redis_client
    if not settings.REDIS_URL:
        return None
    with _redis_lock:
        if _redis_client is None:
            import redis

            _redis_client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5)
        return _redis_client


def publish_frames(frames: list[tuple[str, int, str, str]]) -> None:
    """Hand committed frames (run_id, seq, type, data-json) to local listeners
    and, when Redis is configured, to every other process."""
    from runs.streaming import hub

    for run_id, seq, type_, data in frames:
        hub.deliver(run_id, seq, type_, data)
    client = _sync_redis()
    if client is None:
        return
    try:
        message = json.dumps([{"runId": r, "seq": s, "type": t, "data": d} for r, s, t, d in frames])
        client.publish(REDIS_CHANNEL, message)
    except Exception as exc:  # noqa: BLE001 — best effort by design (see module docstring)
        logger.warning("event publish to redis failed; streams will read the event table", extra={"error": str(exc)})


def announce_work() -> None:
    """Wake idle workers (in this process, and through Redis in others)."""
    from runs.engine import worker

    worker.wake_local_workers()
    client = _sync_redis()
    if client is None:
        return
    try:
        client.publish(WORK_CHANNEL, "1")
    except Exception as exc:  # noqa: BLE001 — workers also poll
        logger.warning("work announcement to redis failed; workers will poll", extra={"error": str(exc)})


def start_work_listener() -> threading.Thread | None:
    """In a worker process: wake local workers when any process announces
    work through Redis (otherwise they find it by polling)."""
    if not settings.REDIS_URL:
        return None

    def listen() -> None:
        import time

        import redis

        from runs.engine import worker

        while True:
            try:
                client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1.0)
                pubsub = client.pubsub()
                pubsub.subscribe(WORK_CHANNEL)
                for message in pubsub.listen():
                    if message.get("type") == "message":
                        worker.wake_local_workers()
            except Exception as exc:  # noqa: BLE001 — reconnect; workers poll meanwhile
                logger.warning("work listener lost redis; reconnecting", extra={"error": str(exc)})
                time.sleep(1.0)

    thread = threading.Thread(target=listen, name="flex-work-listener", daemon=True)
    thread.start()
    return thread
