"""Fan-out of committed events to live SSE streams, in this process and others.

Publishing is best effort and reading is exact: a frame handed to a stream
here is only a shortcut. Every stream checks that frames arrive contiguously
(`seq` = last + 1) and otherwise re-reads the event table, so a lost Redis
message, a Redis restart or an overflowing listener costs latency, never an
event. Redis being down never fails the caller: the event is already committed.
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
import time
from collections.abc import Coroutine
from typing import Any, Callable, TypeVar

import redis
from django.conf import settings

logger = logging.getLogger("runs.notify")

Frame = tuple[str, int, str, str]  # run_id, seq, type, data-json

# Who hears about committed frames and new work in this process. The stream
# hub (`runs.streaming`) and the workers (`runs.engine.worker`) register
# themselves when imported; this module imports neither.
_frame_sinks: list[Callable[[list[Frame]], None]] = []
# Per sink: does it want frames of this run now? (None: always.)
_frame_wants: dict[int, Callable[[str], bool] | None] = {}
_work_wakers: list[Callable[[], None]] = []
_task_wakers: list[Callable[[], None]] = []
_commit_listeners: list[Callable[[list[Any]], None]] = []


def register_frame_sink(sink: Callable[[list[Frame]], None], wants: Callable[[str], bool] | None = None) -> None:
    """`sink(frames)` receives every batch of committed frames published here;
    with `wants(run_id)`, only while that says it has someone to give a frame
    of that run to."""
    if sink not in _frame_sinks:
        _frame_sinks.append(sink)
    _frame_wants[id(sink)] = wants


def frames_wanted(run_id: str) -> bool:
    """Is there anyone to hand a frame of `run_id` to: Redis (other
    processes) or a local sink that wants it? When not, no frame is built
    (JSON, redaction) at all: readers that come later read the table."""
    if settings.REDIS_URL and time.monotonic() >= _skip_until:
        return True
    for sink in list(_frame_sinks):
        wants = _frame_wants.get(id(sink))
        if wants is None or wants(run_id):
            return True
    return False


def register_commit_listener(listener: Callable[[list[Any]], None]) -> None:
    """`listener(rows)` receives the RunEvent rows of every committed
    transaction of this process (the metrics count them)."""
    if listener not in _commit_listeners:
        _commit_listeners.append(listener)


def events_committed(rows: list[Any]) -> None:
    """Called after commit with the transaction's event rows."""
    for listener in list(_commit_listeners):
        listener(rows)


def register_work_waker(waker: Callable[[], None]) -> None:
    """`waker()` is called when work is announced (here, or through Redis)."""
    if waker not in _work_wakers:
        _work_wakers.append(waker)


def _wake_local_workers() -> None:
    for waker in list(_work_wakers):
        waker()

def register_task_waker(waker: Callable[[], None]) -> None:
    """`waker()` is called (from any thread) when a task was offered here or,
    through Redis, in another process: long-polling claims wake up."""
    if waker not in _task_wakers:
        _task_wakers.append(waker)


def wake_task_waiters() -> None:
    for waker in list(_task_wakers):
        waker()


REDIS_CHANNEL = "flexagents:events"
WORK_CHANNEL = "flexagents:work"
TASK_CHANNEL = "flexagents:tasks"

_redis_lock = threading.Lock()
_redis_client: Any = None
# After a failed publish, skip Redis for a moment: while Redis is down each
# attempt would cost a connect timeout inside the worker's commit path.
_BACKOFF_SECONDS = 1.0
_skip_until = 0.0


def _sync_redis() -> Any:
    global _redis_client
    if not settings.REDIS_URL:
        return None
    with _redis_lock:
        if _redis_client is None:
            _redis_client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5)
        return _redis_client


def publish_frames(frames: list[Frame]) -> None:
    """Hand committed frames (run_id, seq, type, data-json) to local listeners
    and, when Redis is configured, to every other process."""
    for sink in list(_frame_sinks):
        sink(frames)
    _publish(REDIS_CHANNEL, lambda: json.dumps([{"runId": r, "seq": s, "type": t, "data": d}
                                                  for r, s, t, d in frames]))


def _publish(channel: str, message: Any) -> bool:
    """Publish to Redis, best effort; never raises. `message` is a string or a
    callable making one (not built at all while Redis is skipped)."""
    global _skip_until
    client = _sync_redis()
    if client is None or time.monotonic() < _skip_until:
        return False
    try:
        client.publish(channel, message() if callable(message) else message)
        return True
    except Exception as exc:  # noqa: BLE001 — best effort by design (see module docstring)
        _skip_until = time.monotonic() + _BACKOFF_SECONDS
        logger.warning("publish to redis failed; readers fall back to the event table",
                       extra={"error": str(exc), "channel": channel})
        return False


def announce_work() -> None:
    """Wake idle workers (in this process, and through Redis in others)."""
    _wake_local_workers()
    _publish(WORK_CHANNEL, "1")  # workers also poll


def announce_tasks() -> None:
    """A task was offered (committed): wake long-polling claims here and,
    through Redis, in every other process (they also poll)."""
    wake_task_waiters()
    _publish(TASK_CHANNEL, "1")


def start_work_listener() -> threading.Thread | None:
    """In a worker process: wake local workers when any process announces
    work through Redis (otherwise they find it by polling)."""
    url: str | None = settings.REDIS_URL
    if not url:
        return None

    def listen() -> None:
        while True:
            client = redis.Redis.from_url(url, socket_connect_timeout=1.0)
            try:
                pubsub = client.pubsub()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
                pubsub.subscribe(WORK_CHANNEL)
                for message in pubsub.listen():
                    if message.get("type") == "message":
                        _wake_local_workers()
            except Exception as exc:  # noqa: BLE001 — reconnect; workers poll meanwhile
                logger.warning("work listener lost redis; reconnecting", extra={"error": str(exc)})
            finally:
                try:
                    client.close()
                except Exception:  # noqa: BLE001
                    pass
            time.sleep(1.0)

    thread = threading.Thread(target=listen, name="flex-work-listener", daemon=True)
    thread.start()
    return thread


_R = TypeVar("_R")


def closing_connection(fn: Callable[..., _R]) -> Callable[..., _R]:
    """Run `fn` (a read or a short transaction, on an executor thread) and
    give its database connection back at once: an idle stream or a waiting
    claim must not hold one."""
    from django.db import connection

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> _R:
        try:
            return fn(*args, **kwargs)
        finally:
            connection.close()

    return wrapper


class PerLoopBackground:
    """A hub's background tasks, one set per event loop: `_poll_forever`, and
    `_redis_forever` when Redis is configured (runs.streaming, runs.task_wait)."""

    _tasks: dict[int, list[asyncio.Task[None]]]

    def _poll_forever(self) -> Coroutine[Any, Any, None]:
        raise NotImplementedError

    def _redis_forever(self) -> Coroutine[Any, Any, None]:
        raise NotImplementedError

    def ensure_background(self) -> None:
        loop = asyncio.get_running_loop()
        key = id(loop)
        tasks = self._tasks.get(key)
        if tasks and all(not t.done() for t in tasks):
            return
        # Forget tasks of loops that are gone (tests create many loops).
        self._tasks = {k: v for k, v in self._tasks.items() if any(not t.done() for t in v)}
        new = [loop.create_task(self._poll_forever())]
        if settings.REDIS_URL:
            new.append(loop.create_task(self._redis_forever()))
        self._tasks[key] = new
