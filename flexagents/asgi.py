"""ASGI entry point: `daphne flexagents.asgi:application`.

With FLEX_EMBEDDED_WORKERS > 0 (the `make run` default) worker threads run
inside this process, so one daphne serves API, admin, pages, SSE and work:
the runs app registers that as a start-up hook (`runs.apps`).

Long-lived requests (a run's SSE stream, `LONG_LIVED`, and an agent's
task-claim long poll, `LONG_POLL`) are served
without Django's per-request `ThreadSensitiveContext`: that context gives
every request its own one-thread executor for the thread-sensitive hops of
the middleware chain (Django's `MiddlewareMixin` runs `process_request` /
`process_response` through `sync_to_async(thread_sensitive=True)`), and the
executor's thread lives until the response ends — one OS thread per open
stream, 2,000 threads for 2,000 followers. Without the context those hops
share asgiref's single thread-sensitive executor (each is microseconds of
header work, no database); the stream views do their database work on the
event loop's bounded default executor (runs.apis.offloaded).
"""
import asyncio
import json
import logging
import os
import re
import socket
from typing import Any

from django.core.asgi import get_asgi_application

from flexagents import startup, stream_sink
from flexagents.http_status import complete_reason_phrases

complete_reason_phrases()  # `422 Unprocessable Entity`, not `422 Unknown Status`
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "flexagents.settings")

django_application = get_asgi_application()

# GET /api/v1/flex/runs/<id>/stream: the only request that lives as long as a run.
LONG_LIVED = re.compile(r"^/api/v1/flex/runs/[^/]+/stream$")
# POST /api/v1/flex/agents/<id>/tasks/claim: an agent's long poll (up to 30 s),
# whose database work runs on the bounded default executor (runs.agent_apis).
LONG_POLL = re.compile(r"^/api/v1/flex/agents/[^/]+/tasks/claim$")


logger = logging.getLogger("flexagents.asgi")

# The last frame a slow consumer gets: reconnect in a second, from the last id received.
SLOW_CONSUMER_FRAME = ("retry: 1000\nevent: stream-error\ndata: " + json.dumps({
    "condition": "slow-consumer",
    "text": "The client fell too far behind; reconnect with Last-Event-ID to get the rest."}) + "\n\n").encode()


def _transport(send: Any) -> Any:
    """The TCP transport under daphne's `send` (a partial bound to its
    request), or None under any other server: then there is no cut-off."""
    try:
        from twisted.internet.abstract import FileDescriptor
    except ImportError:
        return None
    request = getattr(send, "args", (None,))[0] if getattr(send, "args", None) else None
    candidates = [getattr(getattr(request, "channel", None), "transport", None), getattr(request, "transport", None)]
    for transport in candidates:
        for _ in range(3):  # through protocol wrappers
            if isinstance(transport, FileDescriptor) and hasattr(transport, "_tempDataLen"):
                return transport
            transport = getattr(transport, "transport", None)
    return None


def _unsent(transport: Any) -> int:
    """Bytes of the response waiting in the server for the client to read
    (after the kernel's socket buffer is full)."""
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


async def _drains(transport: Any, limit: int, grace: float) -> bool:
    """Wait (this stream only) until the client has taken enough to bring
    the unsent bytes under `limit`; False if it has not within `grace`
    seconds. A burst (a replay of hundreds of events) waits here instead of
    piling up; a client that reads nothing is cut."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while _unsent(transport) > limit:
        if loop.time() >= deadline or transport.disconnected:
            return False
        await asyncio.sleep(0.02)
    return True


async def serve_long_lived(scope: dict, receive: Any, send: Any) -> None:
    """A stream request: no per-request thread context (see the module
    docstring), and a slow-consumer cut-off. ASGI gives no back-pressure
    (daphne's `send` never waits), so a client that stops reading would make
    the server buffer every frame for it. Once more than
    FLEX_SSE_SLOW_CONSUMER_BYTES wait unread, this stream (and no other)
    waits for its client; if they still wait after
    FLEX_SSE_SLOW_CONSUMER_SECONDS, the stream gets a last frame — `retry:`
    and `stream-error` `slow-consumer` — and ends; the client
    reconnects with Last-Event-ID and loses nothing (frames come from the
    event table). Nobody else waits for it: delivery never blocks on a
    client."""
    from django.conf import settings

    transport = _transport(send)
    limit = settings.FLEX_SSE_SLOW_CONSUMER_BYTES
    if transport is not None:
        try:  # a small kernel buffer per stream: lag shows up here, bounded, not in the kernel
            transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, settings.FLEX_SSE_SOCKET_BUFFER_BYTES)
        except (AttributeError, OSError):
            pass
    grace = settings.FLEX_SSE_SLOW_CONSUMER_SECONDS
    cut = asyncio.Event()
    protocol = send.args[0] if transport is not None else None

    def write_now(body: bytes) -> bool:
        """flexagents.stream_sink: write frames now, unless this client lags.
        What daphne does for a body message, without the message."""
        if (cut.is_set() or transport.disconnected or protocol.finished or protocol.channel is None
                or _unsent(transport) > limit):
            return False
        twisted_http.Request.write(protocol, body)
        # Send now rather than when the reactor next finds the socket
        # writable: that is after every callback queued meanwhile (on a
        # `complete`, the ends of thousands of streams). What the kernel
        # does not take waits in Twisted's buffer, as usual.
        if not transport.disconnecting:
            transport.doWrite()
        return True

    if protocol is not None:
        from twisted.web import http as twisted_http

        if isinstance(protocol, twisted_http.Request):
            stream_sink.direct_writer.set(write_now)

    async def guarded_send(message: dict) -> None:
        if cut.is_set():
            return
        await send(message)
        if transport is None or message.get("type") != "http.response.body" or not message.get("more_body"):
            return
        if _unsent(transport) > limit and not await _drains(transport, limit, grace):
            cut.set()
            logger.info("slow SSE consumer cut off", extra={"path": scope.get("path"), "unsent": _unsent(transport)})
            await send({"type": "http.response.body", "body": SLOW_CONSUMER_FRAME, "more_body": False})

    async def guarded_receive() -> dict:
        if cut.is_set():
            return {"type": "http.disconnect"}
        received = asyncio.ensure_future(receive())
        was_cut = asyncio.ensure_future(cut.wait())
        try:
            done, _ = await asyncio.wait({received, was_cut}, return_when=asyncio.FIRST_COMPLETED)
        finally:  # also when Django cancels its disconnect listener (a response that is not a stream)
            for waiter in (received, was_cut):
                if not waiter.done():
                    waiter.cancel()
        if received in done:
            return received.result()
        return {"type": "http.disconnect"}  # Django stops the stream's generator

    await django_application.handle(scope, guarded_receive, guarded_send)


async def application(scope: dict, receive: Any, send: Any) -> None:
    if scope.get("type") == "http" and scope.get("method") == "GET" and LONG_LIVED.match(scope.get("path", "")):
        await serve_long_lived(scope, receive, send)
        return
    if scope.get("type") == "http" and scope.get("method") == "POST" and LONG_POLL.match(scope.get("path", "")):
        await django_application.handle(scope, receive, send)  # no per-request thread context either
        return
    await django_application(scope, receive, send)


startup.server_started()
