"""Long-polling claims wait here, holding no thread and no database connection.

A waiting `POST /agents/{agentId}/tasks/claim` is an `asyncio.Event` on the
server's event loop. It is set when a task may have become claimable:

- a task was offered in this process (`runs.notify.announce_tasks`, after
  the commit that dispatched the node), or in another one (the same call
  publishes on Redis channel `flexagents:tasks`; one subscriber per event
  loop listens, reconnecting by itself) — the same mechanism as the SSE
  streams' fan-out (`runs.streaming`);
- the per-loop poller saw the open/claimed task counts move
  (every `FLEX_TASK_POLL_SECONDS`): the only path without Redis, and a safety
  net with it (a lost message, a lease freed by another process).

One poll query per process and interval whatever the number of waiting
agents; each waiter, once woken, tries its claim in one short transaction on
the shared executor (runs.agent_apis).
"""
from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db.models import Count, Max, Q

from runs import notify
from runs.models import Task, TaskStatus

logger = logging.getLogger("runs.task_wait")


@notify.closing_connection
def _signature_sync() -> tuple[Any, ...]:
    row = Task.objects.filter(status__in=[TaskStatus.OPEN, TaskStatus.CLAIMED]).aggregate(
        open=Count("pk", filter=Q(status=TaskStatus.OPEN)), claimed=Count("pk", filter=Q(status=TaskStatus.CLAIMED)),
        latest=Max("created_at"))
    return (row["open"], row["claimed"], row["latest"])


_signature = sync_to_async(_signature_sync, thread_sensitive=False)


class TaskWaitHub(notify.PerLoopBackground):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[int, tuple[asyncio.AbstractEventLoop, set[asyncio.Event]]] = {}
        self._tasks: dict[int, list[asyncio.Task[None]]] = {}

    def register(self) -> asyncio.Event:
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        with self._lock:
            self._waiters.setdefault(id(loop), (loop, set()))[1].add(event)
        return event

    def unregister(self, event: asyncio.Event) -> None:
        with self._lock:
            for key, (_, events) in list(self._waiters.items()):
                events.discard(event)
                if not events:
                    del self._waiters[key]

    @property
    def waiting(self) -> int:
        with self._lock:
            return sum(len(events) for _, events in self._waiters.values())

    def wake_all(self) -> None:
        """From any thread: set every waiter (on its own loop)."""
        with self._lock:
            targets = [(loop, list(events)) for loop, events in self._waiters.values()]
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for loop, events in targets:
            if loop is running:
                _set_all(events)
            else:
                try:
                    loop.call_soon_threadsafe(_set_all, events)
                except RuntimeError:  # that loop is closed
                    pass

    def _wake_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            entry = self._waiters.get(id(loop))
            events = list(entry[1]) if entry else []
        _set_all(events)

    async def _poll_forever(self) -> None:
        loop = asyncio.get_running_loop()
        previous: tuple[Any, ...] | None = None
        while True:
            await asyncio.sleep(settings.FLEX_TASK_POLL_SECONDS)
            with self._lock:
                idle = id(loop) not in self._waiters
            if idle:
                previous = None
                continue
            try:
                current = await _signature()
            except Exception:  # noqa: BLE001 — the database may be restarting; next tick
                logger.warning("task poll failed", exc_info=True)
                continue
            if previous is not None and current != previous:
                self._wake_loop(loop)
            previous = current

    async def _redis_forever(self) -> None:
        import redis.asyncio as aioredis

        task = asyncio.current_task()
        url = str(settings.REDIS_URL)
        delay = 0.1
        while not (task is not None and task.cancelling()):
            client = aioredis.Redis.from_url(url, socket_connect_timeout=1.0)
            try:
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(notify.TASK_CHANNEL)
                # Whatever was offered while we were away: let the waiters look.
                self._wake_loop(asyncio.get_running_loop())
                delay = 0.1
                while not (task is not None and task.cancelling()):
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self._wake_loop(asyncio.get_running_loop())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 — reconnect on any failure
                logger.warning("task subscriber lost redis; reconnecting", extra={"error": str(exc)})
            finally:
                try:
                    await asyncio.wait_for(client.aclose(), timeout=1.0)
                except BaseException:  # noqa: BLE001 — closing is best effort
                    pass
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


def _set_all(events: list[asyncio.Event]) -> None:
    for event in events:
        event.set()


hub = TaskWaitHub()
notify.register_task_waker(hub.wake_all)
