"""Stream admission in a real daphne process: clients that disconnect early
do not keep their slots (RELIABILITY.md: bounded open streams per user)."""
from __future__ import annotations

import asyncio

import pytest

from tests.multiprocess.conftest import chain_envelope, submit

pytestmark = pytest.mark.django_db(transaction=True)


async def _vanish(port: int, request: bytes) -> None:
    """Send the request and hang up at once, before any response byte."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def _first_line(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.readline(), timeout=20)
    finally:
        writer.close()


def test_clients_that_hang_up_early_leave_the_per_user_limit_free(procs, token):
    web, port = procs.daphne(env={"FLEX_SSE_MAX_STREAMS_PER_USER": "2"})
    run_id = submit(port, token, chain_envelope(steps=1))  # no worker: the run stays queued
    request = (f"GET /api/v1/flex/runs/{run_id}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n").encode()

    async def scenario() -> list[bytes]:
        for _ in range(3):
            await asyncio.gather(*(_vanish(port, request) for _ in range(4)))
            await asyncio.sleep(0.3)
        # A slot whose request was cancelled while the view ran comes back when
        # the dropped response is collected, or after the admission grace (5 s).
        answers = []
        for _ in range(8):
            answers.append(await _first_line(port, request))
            if answers[-1].startswith(b"HTTP/1.1 200"):
                break
            await asyncio.sleep(1.0)
        return answers

    answers = asyncio.run(scenario())
    assert answers[-1].startswith(b"HTTP/1.1 200"), answers
