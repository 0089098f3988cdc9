"""Live SSE streams of a run's events, built on django-eventstream.

What comes from django-eventstream: the per-process `ListenerManager` as the
registry of open streams (its lock and listeners by channel), its `Listener`,
its SSE encoder, and its two extension points, which we implement here: a storage class whose storage is
the run event table itself (one source of truth), and a channel manager that
lets a user read only the runs they may view.

What we add, because the stock stream view has defects we must not ship
(STACK.md): reads of the event table run on the shared executor and give
their database connection back at once (an idle stream holds no connection
and pins no thread); a frame that arrives out of order, after an overflow,
or after a Redis reconnect makes the stream re-read the table (gap-free);
without Redis a single poller per process watches `Run.last_seq` for the
runs being followed; with Redis one subscriber per process reconnects by
itself and forces a re-read after every reconnect. Delivery to listeners is
ours too (`StreamHub.deliver_many`): one wake per listener per batch and a
queue of QUEUE_LIMIT frames instead of the stock 10, each frame encoded once.
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import weakref
from collections import Counter
from typing import Any, AsyncIterator

from asgiref.sync import sync_to_async
from django.conf import settings
from django_eventstream.channelmanager import ChannelManagerBase
from django_eventstream.event import Event
from django_eventstream.storage import EventDoesNotExist, StorageBase
from django_eventstream.utils import sse_encode_event
from django_eventstream.views import Listener, get_listener_manager

from flexagents import stream_sink
from runs import metrics, notify, stream_access
from runs.events import COMPLETE, HITL_REQUEST, POLICY_TRIGGERED, dumps, event_frame
from runs.models import TERMINAL_STATUSES, Run, RunEvent

logger = logging.getLogger("runs.streaming")

READ_BATCH = 500
# Frames queued per stream before it falls back to re-reading the table.
QUEUE_LIMIT = 1000


def channel_for(run_id: str) -> str:
    return f"run-{run_id}"


def run_id_from_channel(channel: str) -> str | None:
    return channel[4:] if channel.startswith("run-") else None


class RunEventStorage(StorageBase):
    """django-eventstream storage backed by the run event table."""

    def append_event(self, channel: str, event_type: str, data: Any) -> Event:
        raise NotImplementedError("run events are written by runs.transitions.run_transition in the state's transaction")

    def get_events(self, channel: str, last_id: int, limit: int = 100) -> list[Event]:
        run_id = run_id_from_channel(channel)
        current = self.get_current_id(channel)
        if run_id is None or last_id > current:
            raise EventDoesNotExist("unknown event id", current)
        rows = RunEvent.objects.filter(run_id=run_id, seq__gt=last_id).order_by("seq")[:limit]
        return [Event(channel, row.type, dumps(event_frame(row)), id=row.seq) for row in rows]

    def get_current_id(self, channel: str) -> int:
        run_id = run_id_from_channel(channel)
        if run_id is None:
            return 0
        return Run.objects.filter(pk=run_id).values_list("last_seq", flat=True).first() or 0


class RunChannelManager(ChannelManagerBase):
    """Only runs the user may view; one channel per run (`run-<id>`)."""

    def get_channels_for_request(self, request: Any, view_kwargs: dict[str, Any]) -> set[str]:
        run_id = view_kwargs.get("run_id")
        return {channel_for(run_id)} if run_id else set()

    def can_read_channel(self, user: Any, channel: str) -> bool:
        from flexagents.roles import user_may_view_run

        run_id = run_id_from_channel(channel)
        if run_id is None or user is None or not user.is_authenticated:
            return False
        run = Run.objects.filter(pk=run_id).first()
        return run is not None and user_may_view_run(user, run)

    def is_channel_reliable(self, channel: str) -> bool:
        return True


class RunListener(Listener):
    def __init__(self, run_id: str, last_seq: int, user_id: Any) -> None:
        super().__init__()
        self.run_id = run_id
        self.last_seq = last_seq
        self.user_id = user_id
        self.channels = {channel_for(run_id)}
        # last_seq as the poller saw it last time (see _poll_forever).
        self.polled_seq = -1
        # flexagents.stream_sink's writer while the stream is caught up and
        # waiting (deliver_many takes its frames), else None.
        self.direct: Any = None
        # Frames taken for a direct write, not written yet (written together,
        # once per event-loop turn), and last_seq before the first of them.
        self.direct_pending: list[bytes] = []
        self.direct_base = 0
        self.direct_write: Any = None
        # A frame taken for a direct write ends the stream (`complete`).
        self.finished = False


class Admission:
    """A stream slot granted by `StreamHub.admit` whose generator has not
    started yet. It becomes a live listener when the generator starts, and is
    given back when the response is closed or dropped unstarted (a client that
    disconnected while the view ran or before the body began), or at the
    latest ADMIT_GRACE_SECONDS after it was granted."""

    __slots__ = ("user_id", "deadline", "done", "__weakref__")

    def __init__(self, user_id: Any, deadline: float) -> None:
        self.user_id = user_id
        self.deadline = deadline
        self.done = False


# A granted slot whose stream has not started after this long was lost: its
# request was cancelled while the view ran, and the dropped response sits in
# a reference cycle that only the garbage collector frees (weakref.finalize
# then gives the slot back). A real stream starts within milliseconds of its
# view returning; one that starts later is still counted, from its start.
ADMIT_GRACE_SECONDS = 5.0


class StreamHub(notify.PerLoopBackground):
    """Per-process bookkeeping of open streams and their notification sources.

    Admission counts live listeners (streams whose generator runs) plus slots
    granted moments ago whose generator has not started yet — never requests.
    Django's ASGI handler cancels a request whose client went away without
    ever starting (or closing) the response's async generator, so a count
    that only a generator's `finally` decrements leaks a slot per early
    disconnect."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: Counter[Any] = Counter()
        self._pending: dict[int, Admission] = {}
        self._tasks: dict[int, list[asyncio.Task]] = {}
        self._flush: dict[int, list[RunListener]] = {}  # per event loop: streams with frames to write
        self.redis_reconnects = 0

    # -- admission (bounded resources) --
    def _prune(self, now: float) -> None:
        for key, admission in list(self._pending.items()):
            if admission.deadline <= now:
                admission.done = True
                del self._pending[key]

    def _counts(self, user_id: Any) -> tuple[int, int]:
        """(streams of this user, streams in total): live plus pending."""
        pending_user = sum(1 for a in self._pending.values() if a.user_id == user_id)
        total = sum(self._live.values()) + len(self._pending)
        return self._live[user_id] + pending_user, total

    def admit(self, user_id: Any) -> Admission | None:
        now = time.monotonic()
        with self._lock:
            self._prune(now)
            mine, total = self._counts(user_id)
            if total >= settings.FLEX_SSE_MAX_STREAMS or mine >= settings.FLEX_SSE_MAX_STREAMS_PER_USER:
                return None
            admission = Admission(user_id, now + ADMIT_GRACE_SECONDS)
            self._pending[id(admission)] = admission
            return admission

    def withdraw(self, admission: Admission | None) -> None:
        """Give back a slot whose stream never started (idempotent)."""
        if admission is None:
            return
        with self._lock:
            if not admission.done:
                admission.done = True
                self._pending.pop(id(admission), None)

    def start(self, admission: Admission | None, user_id: Any) -> None:
        """The stream's generator runs: its slot is now a live listener."""
        with self._lock:
            if admission is not None and not admission.done:
                admission.done = True
                self._pending.pop(id(admission), None)
            self._live[user_id] += 1
        metrics.sse_stream_opened()  # flex_sse_open_streams, summed over live processes

    def leave(self, user_id: Any) -> None:
        with self._lock:
            self._live[user_id] -= 1
            if self._live[user_id] <= 0:
                del self._live[user_id]
        metrics.sse_stream_closed()

    def streams_of(self, user_id: Any) -> int:
        with self._lock:
            self._prune(time.monotonic())
            return self._counts(user_id)[0]

    @property
    def open_streams(self) -> int:
        with self._lock:
            self._prune(time.monotonic())
            return sum(self._live.values()) + len(self._pending)

    # -- delivery --
    def deliver(self, run_id: str, seq: int, type_: str, data: str) -> None:
        self.deliver_many([(run_id, seq, type_, data)])

    def has_listeners(self, run_id: str) -> bool:
        """Does a stream of this process follow `run_id` now?"""
        return bool(get_listener_manager().listeners_by_channel.get(channel_for(run_id)))

    def deliver_many(self, frames: list[tuple[str, int, str, str]]) -> None:
        """Queue committed frames on the listeners of their runs and wake each
        listener once per batch.

        Our own fan-out instead of `ListenerManager.add_to_queues`: that one
        keeps 10 items per listener (past that, a re-read of the table) and
        wakes through `call_soon_threadsafe` once per event and listener, a
        self-pipe write each — 500 streams x 40 events = 20,000 syscalls on
        the event loop. Here a listener holds up to QUEUE_LIMIT frames, and
        listeners are woken directly when we are on their loop, else with one
        thread-safe callback per loop.
        """
        lm = get_listener_manager()
        touched: dict[int, RunListener] = {}
        flush: list[RunListener] = []
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        with lm.lock:
            for run_id, seq, type_, data in frames:
                channel = channel_for(run_id)
                listeners = lm.listeners_by_channel.get(channel)
                if not listeners:
                    continue
                event = Event(channel, type_, data, id=seq)
                for listener in listeners:
                    direct = getattr(listener, "direct", None)
                    if (direct is not None and listener.loop is running and not listener.overflow
                            and not listener.finished and not listener.channel_items.get(channel)):
                        # Caught up and waiting: written now, in this pass,
                        # with the bytes encoded once for every stream.
                        if seq <= listener.last_seq:
                            continue  # a duplicate (local delivery and Redis echo)
                        if seq == listener.last_seq + 1:
                            if not listener.direct_pending:
                                listener.direct_base = listener.last_seq
                                flush.append(listener)
                            listener.direct_pending.append(encode(event))
                            listener.last_seq = seq
                            if type_ == COMPLETE:
                                listener.finished = True  # its generator ends the response
                            continue
                    items = listener.channel_items.setdefault(channel, [])
                    if len(items) < QUEUE_LIMIT:
                        items.append(event)
                    else:
                        listener.overflow = True  # the stream re-reads the table
                    touched[id(listener)] = listener
        if flush and running is not None:
            # One write per stream per event-loop turn, for all the frames
            # this turn brought: the pass runs once the notifications queued
            # so far are taken.
            pending = self._flush.setdefault(id(running), [])
            if not pending:
                running.call_soon(self._flush_pass, id(running))
            pending += flush
        if not touched:
            return
        by_loop: dict[int, tuple[Any, list[RunListener]]] = {}
        for listener in touched.values():
            if listener.loop is None:
                continue
            by_loop.setdefault(id(listener.loop), (listener.loop, []))[1].append(listener)
        for loop, listeners in by_loop.values():
            if loop is running:
                _set_all(listeners)
            else:
                try:
                    loop.call_soon_threadsafe(_set_all, listeners)
                except RuntimeError:  # that loop is closed
                    pass

    def _flush_pass(self, loop_key: int) -> None:
        """Write every stream's taken frames, one write each, in one pass."""
        wake = [listener for listener in self._flush.pop(loop_key, [])
                if not _flush_direct(listener) or listener.finished]
        _set_all(wake)

    def listeners(self) -> list[RunListener]:
        lm = get_listener_manager()
        with lm.lock:
            return [l for ls in lm.listeners_by_channel.values() for l in ls if isinstance(l, RunListener)]

    def force_reread(self, listeners: list[RunListener] | None = None) -> None:
        """Make listeners re-read the event table (after a gap may have opened)."""
        lm = get_listener_manager()
        targets = self.listeners() if listeners is None else listeners
        with lm.lock:
            for listener in targets:
                listener.overflow = True
        for listener in targets:
            if listener.loop is not None:
                listener.wake_threadsafe()

    # -- background tasks, one set per event loop: notify.PerLoopBackground --
    async def _poll_forever(self) -> None:
        """Watch Run.last_seq of followed runs; wake streams that fell behind.
        The only path without Redis, and a safety net with it."""
        while True:
            await asyncio.sleep(settings.FLEX_SSE_POLL_SECONDS)
            loop = asyncio.get_running_loop()
            listeners = [l for l in self.listeners() if l.loop is loop]
            if not listeners:
                continue
            try:
                current = await _read_last_seqs(sorted({l.run_id for l in listeners}))
            except Exception:  # noqa: BLE001 — the database may be restarting; try next tick
                logger.warning("event poll failed", exc_info=True)
                continue
            behind = [l for l in listeners if current.get(l.run_id, 0) > l.last_seq]
            if settings.REDIS_URL:
                # With Redis the poll is a safety net: a stream whose frames
                # are queued but not yet written is busy, not behind. Re-read
                # only for streams that made no progress since the last poll.
                stalled = [l for l in behind if l.polled_seq == l.last_seq]
                for listener in listeners:
                    listener.polled_seq = listener.last_seq
                behind = stalled
            if behind:
                self.force_reread(behind)

    async def _redis_forever(self) -> None:
        """Subscribe to event notifications; reconnect forever with back-off.
        After every (re)connect, force a re-read: messages published while we
        were away are lost, the events are not.

        Cancellation (the event loop shutting down) must always end this task:
        redis-py can swallow a CancelledError inside a blocking read, so we
        read with a timeout and check `Task.cancelling()` on every turn
        instead of trusting `pubsub.listen()` to raise it.
        """
        import redis.asyncio as aioredis

        task = asyncio.current_task()
        delay = 0.1
        while not _cancelling(task):
            client = aioredis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1.0)
            try:
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe("flexagents:events")
                self.redis_reconnects += 1
                self.force_reread()
                delay = 0.1
                while not _cancelling(task):
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None or message.get("type") != "message":
                        continue
                    self.deliver_many([(item["runId"], item["seq"], item["type"], item["data"])
                                       for item in json.loads(message["data"])])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 — reconnect on any failure
                logger.warning("redis subscriber lost its connection; reconnecting", extra={"error": str(exc)})
            finally:
                try:
                    await asyncio.wait_for(client.aclose(), timeout=1.0)
                except BaseException:  # noqa: BLE001 — closing is best effort, even when cancelled
                    pass
            if _cancelling(task):
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


def _cancelling(task: asyncio.Task | None) -> bool:
    return task is not None and task.cancelling() > 0


def _flush_direct(listener: RunListener) -> bool:
    """Write the frames taken for this stream (one write). If its client lags
    (or is gone), nothing is written: the stream goes back to where it was
    before them and re-reads them from the table itself, through its
    generator (where the slow-consumer cut-off applies). False then."""
    pending = listener.direct_pending
    if not pending:
        return True
    listener.direct_pending = []
    try:
        written = bool(listener.direct_write(_join(pending)))
    except Exception:  # noqa: BLE001 — the connection went away: the generator takes over
        logger.debug("direct write failed", exc_info=True)
        written = False
    if not written:
        listener.last_seq = listener.direct_base
        listener.finished = False
        listener.overflow = True
        listener.aevent.set()
    return written


def _set_all(listeners: list[RunListener]) -> None:
    for listener in listeners:
        listener.aevent.set()


hub = StreamHub()
# Committed frames published in this process reach its open streams.
notify.register_frame_sink(hub.deliver_many, wants=hub.has_listeners)


_close_after = notify.closing_connection


@_close_after
def _read_events_sync(run_id: str, after_seq: int, limit: int) -> tuple[list[Event], str | None]:
    # The status first: a run read as ended has its last events committed, so
    # the read after it returns them (the other way round, a run that ends
    # between the two reads would look ended with nothing to send).
    status = Run.objects.filter(pk=run_id).values_list("status", flat=True).first()
    events = RunEventStorage().get_events(channel_for(run_id), after_seq, limit=limit) if after_seq >= 0 else []
    return events, status


@_close_after
def _read_last_seqs_sync(run_ids: list[str]) -> dict[str, int]:
    return dict(Run.objects.filter(pk__in=run_ids).values_list("id", "last_seq"))


# thread_sensitive=False: the shared executor, not a thread per request.
_read_events = sync_to_async(_read_events_sync, thread_sensitive=False)
_read_last_seqs = sync_to_async(_read_last_seqs_sync, thread_sensitive=False)


class _SharedRead:
    """One read of a run's events, shared by every stream of this event loop
    that needs one before it starts: the lowest position wins, each stream
    keeps what is after its own."""

    __slots__ = ("after", "future")

    def __init__(self, after: int, future: asyncio.Future) -> None:
        self.after = after
        self.future = future


_shared_reads: dict[tuple[int, str], _SharedRead] = {}


async def read_events_shared(run_id: str, after_seq: int) -> tuple[list[Event], str | None, bool]:
    """Events of `run_id` after `after_seq`, the run's status, and whether the
    read was cut at READ_BATCH (read again). Streams that fall behind in the
    same wake — an overflow, a gap, a Redis reconnect, a connect storm's
    initial replay — share ONE query per run: the read starts on the next
    turn of the event loop, and every stream of that run that asks before
    then joins it."""
    loop = asyncio.get_running_loop()
    key = (id(loop), run_id)
    shared = _shared_reads.get(key)
    if shared is None:
        shared = _SharedRead(after_seq, loop.create_future())
        _shared_reads[key] = shared
        loop.call_soon(lambda: loop.create_task(_run_shared_read(key, run_id, shared)))
    else:
        shared.after = min(shared.after, after_seq)
    events, status = await asyncio.shield(shared.future)
    return [e for e in events if e.id > after_seq], status, len(events) >= READ_BATCH


async def _run_shared_read(key: tuple[int, str], run_id: str, shared: _SharedRead) -> None:
    if _shared_reads.get(key) is shared:
        del _shared_reads[key]  # later askers start a new read
    metrics.sse_table_read()  # flex_sse_table_reads_total
    try:
        result = await _read_events(run_id, shared.after, READ_BATCH)
    except BaseException as exc:  # noqa: BLE001 — handed to every waiting stream
        if not shared.future.done():
            shared.future.set_exception(exc)
            shared.future.add_done_callback(lambda f: f.exception())  # retrieved even if no one waits
        if isinstance(exc, asyncio.CancelledError):
            raise
        return
    if not shared.future.done():
        shared.future.set_result(result)


def _ends_stream(type_: str, data: str, stop_on_wait: bool) -> bool:
    if type_ == COMPLETE:
        return True
    if not stop_on_wait:
        return False
    if type_ == HITL_REQUEST:
        return True
    if type_ == POLICY_TRIGGERED:
        action = json.loads(data).get("payload", {}).get("action", {})
        return action.get("type") == "pause"
    return False


def encode(event: Event) -> bytes:
    """The SSE frame of an event as bytes, encoded once however many streams
    send it (the Event object is shared by every listener of the run)."""
    encoded = getattr(event, "flex_sse", None)
    if encoded is None:
        encoded = sse_encode_event(event.type, event.data,
                                   event_id=f"{run_id_from_channel(event.channel)}:{event.id}").encode()
        event.flex_sse = encoded
    return encoded


async def _wait_for_wake(listener: RunListener, timeout: float) -> bool:
    """Wait until the listener is woken (True) or `timeout` passes (False).
    `asyncio.timeout` rather than `wait_for`: no extra task per wait (with
    thousands of streams woken on every commit, that task was a cost)."""
    if listener.aevent.is_set():
        return True
    try:
        async with asyncio.timeout(timeout):
            await listener.aevent.wait()
        return True
    except TimeoutError:
        return False


def _release_request_thread() -> None:
    """Give back what the (sync) view left behind for this request.

    Django's ASGI handler runs each request in its own `ThreadSensitiveContext`,
    so a sync view gets a fresh one-thread executor, and that thread — holding
    the database connection the view used — lives until the response ends. For
    an SSE response that is the stream's whole life: one thread and one
    connection per open stream (STACK.md: 100 streams = 102 threads). Here the
    connection is closed on that thread and the executor is detached from the
    request context and shut down; thread-sensitive work later in the request
    (the response's close) gets a short-lived executor again, which Django's
    handler shuts down at the end as usual. Relies on asgiref internals
    (3.x `SyncToAsync.context_to_thread_executor`); if they change, the stream
    still works, only with the old cost.
    """
    from asgiref.sync import SyncToAsync
    from django.db import connections

    try:
        context = SyncToAsync.thread_sensitive_context.get(None)
        executor = SyncToAsync.context_to_thread_executor.pop(context, None) if context is not None else None
    except Exception:  # noqa: BLE001 — best effort, see the docstring
        logger.debug("could not detach the request executor", exc_info=True)
        return
    if executor is None:
        return
    try:
        executor.submit(connections.close_all)
        executor.shutdown(wait=False)
    except Exception:  # noqa: BLE001
        logger.debug("could not shut down the request executor", exc_info=True)


def _join(chunk: list[bytes]) -> bytes:
    return chunk[0] if len(chunk) == 1 else b"".join(chunk)


def stream_frames(*, admission: Admission | None, run_id: str, after_seq: int, user: Any,
                  stop_on_wait: bool = False, until_seq: int | None = None) -> AsyncIterator[bytes]:
    """The frames of a stream admitted with `admission`. If the generator is
    dropped without ever starting (the request was cancelled), the slot goes
    back at once."""
    frames = event_stream(admission=admission, run_id=run_id, after_seq=after_seq, user=user,
                          stop_on_wait=stop_on_wait, until_seq=until_seq)
    weakref.finalize(frames, hub.withdraw, admission)
    return frames


def _revoked_frame() -> str:
    """The last frame of a stream whose reader may no longer view the run."""
    frame: str = sse_encode_event("stream-error", dumps({"condition": "forbidden",
                                                        "text": "Access to this run was revoked."}))
    return frame


async def event_stream(*, admission: Admission | None, run_id: str, after_seq: int, user: Any,
                       stop_on_wait: bool = False, until_seq: int | None = None) -> AsyncIterator[bytes]:
    """Frames after `after_seq`, then live ones, until the run is terminal
    (or, with `stop_on_wait`, waits for a person or is paused; or, with
    `until_seq`, that event was sent).

    Its slot (`hub.admit`) counts as a live listener from the generator's
    first step to its `finally`.
    """
    user_id = getattr(user, "pk", None)
    # Frames may be written past this generator only when nothing but
    # `complete` ends the stream (flexagents.stream_sink).
    direct = stream_sink.direct_writer.get() if not stop_on_wait and until_seq is None else None
    _release_request_thread()
    listener = RunListener(run_id, after_seq, user_id)
    listener.direct_write = direct
    listener.assign_loop()
    lm = get_listener_manager()
    lm.add_listener(listener)
    hub.ensure_background()
    channel = channel_for(run_id)
    keepalive = settings.FLEX_SSE_KEEPALIVE_SECONDS
    recheck_every = max(int(5.0 / max(keepalive, 0.01)), 1)
    idle_ticks = 0
    hub.start(admission, user_id)
    try:
        yield b": stream open\n\n"
        need_read = True
        while True:
            if need_read:
                # Discard queued notifications first: the read covers them.
                with lm.lock:
                    listener.channel_items = {}
                    listener.overflow = False
                    listener.aevent.clear()
                events, status, cut = await read_events_shared(run_id, listener.last_seq)
                chunk: list[bytes] = []
                ended = False
                for event in events:
                    chunk.append(encode(event))
                    listener.last_seq = event.id
                    if _ends_stream(event.type, event.data, stop_on_wait) or (
                            until_seq is not None and event.id >= until_seq):
                        ended = True
                        break
                if chunk:
                    yield _join(chunk)
                if ended:
                    return
                if cut:
                    continue
                need_read = False
                if status is None or (status in TERMINAL_STATUSES and not events):
                    return
            listener.direct = direct
            try:
                woke = await _wait_for_wake(listener, keepalive)
            finally:
                listener.direct = None
            # Frames taken but not written yet go first (order), or back to the table.
            if _flush_direct(listener) and listener.finished:
                return
            if not woke:
                yield b": keep-alive\n\n"
                idle_ticks += 1
                if idle_ticks % recheck_every == 0 and not await stream_access.may_view(user_id, run_id):
                    # Access was revoked (possibly in another process).
                    yield _revoked_frame()
                    return
                continue
            with lm.lock:
                items = listener.channel_items.pop(channel, [])
                listener.channel_items = {}
                overflow, listener.overflow = listener.overflow, False
                error, listener.error = listener.error, ""
                listener.aevent.clear()
            if error:
                yield _revoked_frame()
                return
            if overflow:
                need_read = True
                continue
            # Every frame pending for this stream goes out in ONE write: under
            # load a wake finds several, and each write is a trip through
            # Django's response loop, daphne and Twisted.
            chunk = []
            ended = False
            for item in sorted(items, key=lambda e: e.id) if len(items) > 1 else items:
                if item.id <= listener.last_seq:
                    continue  # a duplicate (local delivery and Redis echo)
                if item.id != listener.last_seq + 1:
                    need_read = True  # a gap: the table has what we missed
                    break
                chunk.append(encode(item))
                listener.last_seq = item.id
                if _ends_stream(item.type, item.data, stop_on_wait):
                    ended = True
                    break
            if chunk:
                yield _join(chunk)
            if ended:
                return
    finally:
        listener.direct = None
        listener.aevent.set()
        lm.remove_listener(listener)
        hub.leave(user_id)
