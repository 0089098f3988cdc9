"""The per-process notification tasks of runs.streaming."""
from __future__ import annotations

import asyncio
import threading

import pytest
from django.conf import settings

from runs.streaming import hub


@pytest.mark.skipif(not settings.REDIS_URL, reason="needs REDIS_URL")
@pytest.mark.parametrize("lifetime", [0, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.3])
def test_an_event_loop_with_a_redis_subscriber_shuts_down_promptly(lifetime):
    """redis-py can swallow a CancelledError that arrives while the subscriber
    connects or reads; the subscriber must still end when its loop closes, or
    the loop hangs on shutdown (every short-lived loop that served a stream:
    each async_to_sync in tests, each worker thread's loop)."""

    async def follow_briefly() -> None:
        hub.ensure_background()
        await asyncio.sleep(lifetime)

    thread = threading.Thread(target=asyncio.run, args=(follow_briefly(),), daemon=True)
    thread.start()
    thread.join(timeout=10)

    assert not thread.is_alive(), "the event loop did not close: a background task ignored cancellation"


# --- admission: live listeners, not requests ---------------------------------------

def _stream_scope(run_id: str, token: str) -> dict:
    path = f"/api/v1/flex/runs/{run_id}/stream"
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": [(b"host", b"testserver"), (b"authorization", f"Bearer {token}".encode()),
                        (b"accept", b"text/event-stream")],
            "client": ("127.0.0.1", 50000), "server": ("testserver", 80)}


async def _disconnect_before_the_body(app, scope: dict) -> int:
    """A client that sends its request and is gone by the time the response
    headers go out: the ASGI server reports `http.disconnect` while the
    headers are being written, so the body never starts."""
    headers_out = asyncio.Event()
    status: list[int] = []
    received = 0

    async def receive() -> dict:
        nonlocal received
        received += 1
        if received == 1:
            return {"type": "http.request", "body": b"", "more_body": False}
        await headers_out.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])
            headers_out.set()
            await asyncio.sleep(3600)  # the write never completes: the peer is gone
        elif message["type"] == "http.response.body" and message.get("body"):
            raise AssertionError("the body started")

    await asyncio.wait_for(app(scope, receive, send), timeout=30)
    return status[0]


async def _open_then_leave(app, scope: dict) -> tuple[int, bytes]:
    """A client that reads the stream's first frame, then disconnects."""
    first_chunk = asyncio.Event()
    status: list[int] = []
    body = bytearray()
    received = 0

    async def receive() -> dict:
        nonlocal received
        received += 1
        if received == 1:
            return {"type": "http.request", "body": b"", "more_body": False}
        await first_chunk.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))
            first_chunk.set()

    await asyncio.wait_for(app(scope, receive, send), timeout=30)
    return status[0], bytes(body)


@pytest.mark.django_db(transaction=True)
def test_clients_that_disconnect_before_the_body_do_not_keep_their_stream_slots(settings, api_for, client_user):
    from asgiref.sync import async_to_sync
    from django.core.asgi import get_asgi_application
    from rest_framework.authtoken.models import Token

    from tests.conftest import load_envelope

    settings.FLEX_SSE_MAX_STREAMS_PER_USER = 2
    api = api_for(client_user)
    created = api.post("/api/v1/flex/runs", load_envelope("linkedin-variants"), format="json")
    assert created.status_code == 202, created.content
    run_id = created.json()["runId"]  # no worker: the run stays queued and its streams stay open
    scope = _stream_scope(run_id, Token.objects.get(user=client_user).key)
    app = get_asgi_application()

    async def scenario() -> tuple[list[int], int, bytes]:
        early = [await _disconnect_before_the_body(app, scope) for _ in range(5)]
        status, body = await _open_then_leave(app, scope)
        return early, status, body

    early, status, body = async_to_sync(scenario)()

    # Five early disconnects with a limit of two: each was admitted, none kept its slot.
    assert early == [200] * 5
    assert status == 200 and body.startswith(b": stream open")
    assert hub.streams_of(client_user.pk) == 0


def test_a_stream_dropped_before_it_started_gives_its_slot_back():
    """The request was cancelled while its view ran: the response (and its
    generator) is dropped unstarted and never closed."""
    from runs.streaming import stream_frames

    admission = hub.admit("early-leaver")
    frames = stream_frames(admission=admission, run_id="run_x", after_seq=0, user=None)
    assert hub.streams_of("early-leaver") == 1
    del frames
    assert hub.streams_of("early-leaver") == 0
