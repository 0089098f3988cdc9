"""Event commit -> SSE client receive latency through daphne, and 500
concurrent SSE clients on one daphne process.

The latency of a frame is the client's receive time minus the event's
`timestamp` (set just before the transaction that writes it commits), on the
same clock. Runs are created held back, the clients connect, then the run is
released to a `flex_worker` process, so every frame measured is live."""
from __future__ import annotations

import asyncio
import bisect
import json
import os
import sys
import threading
import time
from datetime import datetime, timedelta
from typing import Any

from bench.common import daphne, emit, free_port, percentile, setup_django, worker

NODES = 20


class _SseClient(asyncio.Protocol):
    """A raw-socket SSE client that does almost nothing while frames arrive:
    it keeps each received chunk with its arrival time (`time.time()`, taken
    in `data_received`, before any parsing) and looks only for the end of
    the stream. Frames are parsed after the stream ended, so 2,000 clients
    in one process on the same 2 cores as the server measure the server, not
    their own JSON parsing."""

    def __init__(self, request: bytes, on_open: Any, done: asyncio.Future) -> None:
        self.request = request
        self.on_open = on_open
        self.done = done
        self.chunks: list[bytes] = []
        self.ends: list[int] = []     # cumulative size after each chunk
        self.times: list[float] = []  # arrival time of each chunk
        self.size = 0
        self.opened = False
        self.complete_at = -1
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.chunks.append(data)
        self.size += len(data)
        self.ends.append(self.size)
        self.times.append(now)
        if not self.opened or self.complete_at < 0:
            recent = b"".join(self.chunks[-2:])
            base = self.size - len(recent)
            if not self.opened and b"stream open" in recent:
                self.opened = True
                self.on_open()
            if self.complete_at < 0:
                at = recent.find(b"event: complete\n")
                if at >= 0:
                    self.complete_at = base + at
        if self.complete_at >= 0:
            tail = b"".join(self.chunks)[self.complete_at:]
            if b"\n\n" in tail and not self.done.done():
                self.done.set_result(None)
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def frames(self) -> list[tuple[int, float, float]]:
        """(seq, latency ms, receive time) of each `data:` line: its receive
        time is the arrival of the chunk that completed the line."""
        body = b"".join(self.chunks)
        out = []
        at = body.find(b"\ndata: ")
        while at >= 0:
            end = body.find(b"\n", at + 7)
            if end < 0:
                break
            received = self.times[bisect.bisect_left(self.ends, end + 1)]
            data = json.loads(body[at + 7:end])
            sent = datetime.fromisoformat(data["timestamp"].replace("Z", "+00:00")).timestamp()
            out.append((data["seq"], (received - sent) * 1000.0, received))
            if data["type"] == "complete":
                break
            at = body.find(b"\ndata: ", end)
        return out


async def sse_client(port: int, token: str, run_id: str, opened: asyncio.Event | None,
                     counter: list[int], total: int) -> list[tuple[int, float, float]]:
    """(seq, latency ms, receive time) of each frame until `complete`."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def on_open() -> None:
        counter[0] += 1
        if opened is not None and counter[0] >= total:
            opened.set()

    request = (f"GET /api/v1/flex/runs/{run_id}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n").encode()
    transport, client = await loop.create_connection(lambda: _SseClient(request, on_open, done), "127.0.0.1", port)
    try:
        await done
    finally:
        transport.close()
    return client.frames()


def sqlite_handles(web: Any) -> int:
    """Open handles of the web process on the SQLite file (db, -wal, -shm)."""
    from django.conf import settings

    db_file = os.path.realpath(settings.DATABASES["default"]["NAME"])
    count = 0
    for fd in os.listdir(f"/proc/{web.pid}/fd"):
        try:
            if os.readlink(f"/proc/{web.pid}/fd/{fd}").startswith(db_file):
                count += 1
        except OSError:
            pass
    return count


def held_run(user: Any, step_sleep: float) -> str:
    from django.db import transaction
    from django.utils import timezone

    from bench.capabilities import envelope
    from runs.models import Run
    from runs.services import run_create

    with transaction.atomic():
        run_id = run_create(user=user, envelope=envelope(NODES, step_sleep=step_sleep)).id
        Run.objects.filter(pk=run_id).update(available_at=timezone.now() + timedelta(days=1))
    return run_id


def release(run_id: str) -> None:
    from django.utils import timezone

    from runs import notify
    from runs.models import Run

    Run.objects.filter(pk=run_id).update(available_at=timezone.now())
    notify.announce_work()


def main() -> None:
    setup_django()
    from django.db import connection

    from bench.capabilities import event_count
    from bench.common import bench_token, bench_user

    clients = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    latency_runs = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    user, token = bench_user(), bench_token()
    total_events = event_count(NODES)
    port = free_port()
    # PGAPPNAME (libpq) tags the web process's PostgreSQL connections.
    web_pid_name = f"bench-web-{port}"
    web = daphne(f"{connection.vendor}-sse-daphne", port, env={
        "FLEX_SSE_MAX_STREAMS_PER_USER": str(clients + 100), "PGAPPNAME": web_pid_name})
    wk = worker(f"{connection.vendor}-sse-worker")
    result: dict[str, Any] = {"vendor": connection.vendor, "redis": bool(os.environ.get("REDIS_URL"))}
    try:
        # 1. Latency with one client per run, runs one after another.
        latencies: list[float] = []
        for _ in range(latency_runs):
            run_id = held_run(user, step_sleep=0.01)

            async def one() -> list[tuple[int, float, float]]:
                opened = asyncio.Event()
                task = asyncio.create_task(sse_client(port, token, run_id, opened, [0], 1))
                await opened.wait()
                await asyncio.to_thread(release, run_id)
                return await task

            frames = asyncio.run(one())
            assert [f[0] for f in frames] == list(range(1, total_events + 1)), [f[0] for f in frames]
            latencies += [f[1] for f in frames]
        result["latency"] = {"frames": len(latencies), "p50_ms": percentile(latencies, 50),
                             "p99_ms": percentile(latencies, 99), "max_ms": max(latencies)}

        # 2. Many clients on one daphne, all following one run.
        if clients:
            result["many"] = many_clients(web, port, token, user, clients, total_events, web_pid_name)
    finally:
        wk.stop()
        web.stop()
    emit(result)


def many_clients(web: Any, port: int, token: str, user: Any, clients: int, total_events: int,
                 app_name: str) -> dict[str, Any]:
    from django.db import connection

    def conns() -> int:
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [app_name])
                return cursor.fetchone()[0]
        return sqlite_handles(web)

    def snapshot() -> dict[str, Any]:
        return {"threads": web.status("Threads"), "db": conns(), "rss_mb": round(web.status("VmRSS") / 1024, 1)}

    base = snapshot()
    run_id = held_run(user, step_sleep=0.02)
    # Peaks per phase: "connect" (requests in flight: Django runs each sync
    # view on its own thread), "delivery" (streams open and busy).
    peaks: dict[str, dict[str, Any]] = {"connect": {}, "delivery": {}}
    current = ["connect"]
    sampling = threading.Event()

    def sample() -> None:
        try:
            while not sampling.is_set():
                now = snapshot()
                peak = peaks[current[0]]
                for key, value in now.items():
                    peak[key] = max(peak.get(key, 0), value)
                time.sleep(0.1)
        finally:
            connection.close()

    idle: dict[str, Any] = {}

    async def scenario() -> tuple[list[list[tuple[int, float, float]]], float]:
        opened = asyncio.Event()
        counter = [0]
        tasks = []
        started = time.monotonic()
        for start in range(0, clients, 100):
            tasks += [asyncio.create_task(sse_client(port, token, run_id, opened, counter, clients))
                      for _ in range(min(100, clients - start))]
            await asyncio.sleep(0.2)
        await asyncio.wait_for(opened.wait(), timeout=120)
        open_seconds = time.monotonic() - started
        await asyncio.sleep(1.5)
        idle.update(await asyncio.to_thread(lambda: (snapshot(), connection.close())[0]))
        current[0] = "delivery"
        await asyncio.to_thread(release, run_id)
        return await asyncio.gather(*tasks), open_seconds

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    all_frames, open_seconds = asyncio.run(scenario())
    sampling.set()
    sampler.join()
    complete = sum(1 for frames in all_frames if [f[0] for f in frames] == list(range(1, total_events + 1)))
    latencies = [f[1] for frames in all_frames for f in frames]
    by_seq: dict[int, list[float]] = {}
    for frames in all_frames:
        for seq, latency, _ in frames:
            by_seq.setdefault(seq, []).append(latency)
    time.sleep(2.0)
    return {"clients": clients, "complete_deliveries": complete, "frames": len(latencies),
            "seconds_to_open": open_seconds,
            "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
            # Where the time goes: the median latency of each event, in order.
            "p50_ms_by_seq": [round(percentile(by_seq[seq], 50)) for seq in sorted(by_seq)],
            "baseline": base, "connect_peak": peaks["connect"], "open_idle": idle,
            "delivery_peak": peaks["delivery"], "after": snapshot()}


if __name__ == "__main__":
    main()
