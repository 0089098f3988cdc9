"""A stream storm: many more streams than the server has threads connect at
once and follow a run to its end. The server's thread count, sampled from
/proc all along, stays under a fixed bound (no thread per stream while
connecting, idle or delivering), and every stream gets every event in order.

Then a slow consumer: one client that stops reading does not delay the
others; it is cut off with a retry hint once it is too far behind, and its
reconnect with Last-Event-ID gets exactly the events it missed."""
from __future__ import annotations

import asyncio
import re
import socket
import threading
import time

import pytest

from tests.multiprocess.conftest import chain_envelope, chain_event_count, events_json, submit
from tests.multiprocess.test_metrics import scrape
from tests.multiprocess.procs import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Well above every thread pool of the server: the event loop's default
# executor has min(32, cores + 4) threads.
STREAMS = 400
# Threads the server may add to its baseline in any phase, whatever the
# number of streams: the executor, asgiref's thread-sensitive thread, the
# database pool and the notification threads.
THREAD_BOUND = 24
FRAME_ID = re.compile(rb"event: ([a-z_.\-]+)\nid: [^:\r\n]+:(\d+)\n")


class ThreadSampler:
    """Samples a process's thread count from /proc every 20 ms."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with open(f"/proc/{self.pid}/status") as status:
                    for line in status:
                        if line.startswith("Threads:"):
                            self.samples.append(int(line.split()[1]))
            except OSError:
                return
            self._stop.wait(0.02)

    def __enter__(self) -> "ThreadSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def stream_request(run_id: str, token: str, last_event_id: str | None = None) -> bytes:
    extra = f"Last-Event-ID: {last_event_id}\r\n" if last_event_id else ""
    return (f"GET /api/v1/flex/runs/{run_id}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n{extra}\r\n").encode()


async def follow_to_the_end(port: int, request: bytes, total: int, connected: asyncio.Event | None = None,
                            timeout: float = 180) -> list[tuple[int, str]]:
    """(seq, type) of every frame until the stream ends (or has `total`)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        body = b""
        deadline = time.monotonic() + timeout
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), timeout=max(deadline - time.monotonic(), 0.1))
            if not chunk:
                break
            body += chunk
            if connected is not None and b"stream open" in body:
                connected.set()
            frames = FRAME_ID.findall(body)
            if len(frames) >= total or body.endswith(b"\r\n0\r\n\r\n"):
                break
        assert body.startswith(b"HTTP/1.1 200"), body[:300]
        return [(int(seq), type_.decode()) for type_, seq in FRAME_ID.findall(body)]
    finally:
        writer.close()


def test_a_storm_of_streams_costs_no_thread_per_stream_and_every_stream_gets_every_event(procs, token):
    web, port = procs.daphne(env={"FLEX_SSE_MAX_STREAMS_PER_USER": str(STREAMS + 10),
                                  "FLEX_SSE_MAX_STREAMS": str(STREAMS + 50)})
    steps = 8
    total = chain_event_count(steps)
    run_id = submit(port, token, chain_envelope(steps=steps, step_sleep=0.05))  # queued: no worker yet
    events_json(port, token, run_id)  # warm up (imports, the executor)
    time.sleep(0.5)
    base = web.threads()
    request = stream_request(run_id, token)

    async def storm() -> list[list[tuple[int, str]]]:
        connected = [asyncio.Event() for _ in range(STREAMS)]
        # All at once, not in waves.
        tasks = [asyncio.create_task(follow_to_the_end(port, request, total, connected[i]))
                 for i in range(STREAMS)]
        await asyncio.wait_for(asyncio.gather(*(c.wait() for c in connected)), timeout=120)
        # Every stream is open and idle; now the run starts and they follow it.
        await asyncio.to_thread(procs.worker)
        return await asyncio.gather(*tasks)

    reads_before = scrape(port).get("flex_sse_table_reads_total", 0)
    with ThreadSampler(web.pid) as sampler:
        results = asyncio.run(storm())
    reads = scrape(port)["flex_sse_table_reads_total"] - reads_before

    expected = [(e["seq"], e["type"]) for e in events_json(port, token, run_id)]
    assert len(expected) == total
    assert all(frames == expected for frames in results), [len(f) for f in results if f != expected][:10]
    assert sampler.samples, "no thread sample was taken"
    print(f"threads: baseline {base}, max {max(sampler.samples)} over {len(sampler.samples)} samples; "
          f"{reads:.0f} table reads for {STREAMS} streams")
    assert max(sampler.samples) <= base + THREAD_BOUND, (base, max(sampler.samples))
    # Replays and catch-ups are shared by the streams of the run (one read per
    # wake: the connect storm's replays, then a poll tick per batch of events),
    # not one read per stream: that would be STREAMS for the replays alone.
    assert reads < STREAMS, reads


async def open_slow_reader(port: int, request: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client with a tiny receive window that reads the response head and
    then stops reading."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=2048)
    writer.write(request)
    await writer.drain()
    await asyncio.wait_for(reader.readuntil(b"stream open"), timeout=30)
    return reader, writer


async def read_rest(reader: asyncio.StreamReader, timeout: float = 60) -> bytes:
    body = b""
    while not body.endswith(b"\r\n0\r\n\r\n"):
        chunk = await asyncio.wait_for(reader.read(65536), timeout=timeout)
        if not chunk:
            break
        body += chunk
    return body


def test_a_client_that_stops_reading_delays_no_one_and_after_its_cut_off_reconnects_to_exactly_the_rest(
        procs, token):
    web, port = procs.daphne(env={"FLEX_SSE_SLOW_CONSUMER_BYTES": "1024", "FLEX_SSE_SOCKET_BUFFER_BYTES": "4096",
                                  "FLEX_SSE_SLOW_CONSUMER_SECONDS": "0.5"})
    steps = 18
    total = chain_event_count(steps)
    run_id = submit(port, token, chain_envelope(steps=steps, step_sleep=0.02))  # queued: no worker yet
    request = stream_request(run_id, token)

    async def scenario() -> tuple[list[list[tuple[int, str]]], bytes]:
        slow_reader, slow_writer = await open_slow_reader(port, request)
        connected = [asyncio.Event() for _ in range(5)]
        followers = [asyncio.create_task(follow_to_the_end(port, request, total, c)) for c in connected]
        await asyncio.gather(*(c.wait() for c in connected))
        await asyncio.to_thread(procs.worker)
        # Every other follower gets the whole run while the slow one reads nothing.
        results = await asyncio.gather(*followers)
        # It keeps not reading for well over FLEX_SSE_SLOW_CONSUMER_SECONDS, then reads again.
        await asyncio.sleep(3.0)
        rest = await read_rest(slow_reader)
        slow_writer.close()
        return results, rest

    results, slow_body = asyncio.run(scenario())
    print(f"slow client: {len(slow_body)} bytes; followers: {[len(f) for f in results]}")
    expected = [(e["seq"], e["type"]) for e in events_json(port, token, run_id)]
    assert len(expected) == total
    assert all(frames == expected for frames in results), [len(f) for f in results]

    # The slow client was cut off with a retry hint, part-way through the run.
    assert b"retry: 1000\nevent: stream-error" in slow_body and b'"slow-consumer"' in slow_body, slow_body[-400:]
    received = [(int(seq), type_.decode()) for type_, seq in FRAME_ID.findall(slow_body)]
    assert received == expected[:len(received)] and len(received) < total, (len(received), total)

    # It reconnects from the last id it got and receives exactly the missed events.
    last_id = f"{run_id}:{received[-1][0]}" if received else None
    rest = asyncio.run(follow_to_the_end(port, stream_request(run_id, token, last_id), total - len(received)))
    assert received + rest == expected
