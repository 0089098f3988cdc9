"""SSE across processes: a worker writes, web processes stream; reconnects
replay exactly what was missed; a Redis restart costs latency, not events;
hundreds of streams cost neither a thread nor a connection each."""
from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time

import pytest
from django.conf import settings
from django.db import connection

from runs.models import Run
from tests.multiprocess.conftest import (SSEClient, assert_contiguous, chain_envelope, chain_event_count, events_json,
                                         is_postgres, submit, wait_run_status)
from tests.multiprocess.procs import PrivateRedis, Proc, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def follow(client: SSEClient, **kwargs) -> threading.Thread:
    thread = threading.Thread(target=client.read, kwargs=kwargs, daemon=True)
    thread.start()
    return thread


def test_streams_follow_a_workers_events_and_a_reconnect_to_another_web_process_gets_exactly_the_rest(
        procs, token):
    a, port_a = procs.daphne()
    b, port_b = procs.daphne()
    procs.worker()
    steps = 18
    total = chain_event_count(steps)
    run_id = submit(port_a, token, chain_envelope(steps=steps, step_sleep=0.1))

    follower = SSEClient(port_a, token, run_id)
    follower_thread = follow(follower, timeout=30)
    # A second client on A leaves mid-burst and comes back on B.
    leaver = SSEClient(port_a, token, run_id)
    leaver.read(until=lambda frames: len(frames) >= 12, timeout=30)
    seen_when_leaving = Run.objects.get(pk=run_id).last_seq
    assert seen_when_leaving < total, "the run finished before the reconnect: not mid-burst"
    resumed = SSEClient(port_b, token, run_id, last_event_id=leaver.frames[-1]["id"])
    resumed.read(timeout=30)
    follower_thread.join(timeout=30)

    assert wait_run_status(run_id, ("completed", "failed"), timeout=10) == "completed"
    expected = [(e["id"], e["type"]) for e in events_json(port_a, token, run_id)]
    assert len(expected) == total
    # The follower on A: everything, in order, no gap, no repeat.
    assert [(f["id"], f["event"]) for f in follower.frames] == expected
    assert_contiguous(follower.frames)
    # Frames kept arriving while it followed (it did not just get a replay).
    assert follower.frames[-1]["at"] - follower.frames[0]["at"] > 0.5
    # Reconnected on B after frame 12: exactly 13..total.
    assert [(f["id"], f["event"]) for f in leaver.frames] == expected[:12]
    assert [(f["id"], f["event"]) for f in resumed.frames] == expected[12:]
    assert_contiguous(resumed.frames, start=13)


@pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis (REDIS_URL)")
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_a_redis_restart_mid_run_delays_events_but_loses_none(procs, token):
    redis = PrivateRedis()
    redis.start()
    try:
        env = {"REDIS_URL": redis.url}
        web, port = procs.daphne(env=env)
        procs.worker(env=env)
        steps = 18
        run_id = submit(port, token, chain_envelope(steps=steps, step_sleep=0.2))
        client = SSEClient(port, token, run_id)
        thread = follow(client, timeout=40)
        wait_for(lambda: len(client.frames) >= 8, timeout=20, what="the first frames")
        redis.shutdown()
        down_at_seq = Run.objects.get(pk=run_id).last_seq
        time.sleep(1.5)
        assert Run.objects.get(pk=run_id).last_seq > down_at_seq, "the worker stopped while Redis was down"
        redis.start()
        thread.join(timeout=40)
        assert wait_run_status(run_id, ("completed", "failed"), timeout=20) == "completed"
        expected = [(e["id"], e["type"]) for e in events_json(port, token, run_id)]
        assert len(expected) == chain_event_count(steps)
        assert [(f["id"], f["event"]) for f in client.frames] == expected
        assert_contiguous(client.frames)
        # A stream opened after the restart is fed live through Redis again.
        run2 = submit(port, token, chain_envelope(steps=3, step_sleep=0.2))
        late = SSEClient(port, token, run2)
        late.read(timeout=20)
        assert [f["data"]["seq"] for f in late.frames] == list(range(1, chain_event_count(3) + 1))
    finally:
        redis.shutdown()


def db_connections(web: Proc) -> int:
    """Database connections the web process holds: PostgreSQL backends of its
    application name, or open handles on the SQLite file (db, -wal, -shm)."""
    if is_postgres():
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
                           [connection.settings_dict["NAME"], f"flex-{web.name}"])
            return cursor.fetchone()[0]
    db_file = os.path.realpath(settings.DATABASES["default"]["TEST"]["NAME"])
    count = 0
    for fd in os.listdir(f"/proc/{web.pid}/fd"):
        try:
            target = os.readlink(f"/proc/{web.pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(db_file):
            count += 1
    return count


async def open_streams(port: int, token: str, run_id: str, n: int) -> list[tuple[asyncio.StreamReader,
                                                                                  asyncio.StreamWriter]]:
    request = (f"GET /api/v1/flex/runs/{run_id}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n").encode()

    async def one() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"stream open"), timeout=60)
        assert head.startswith(b"HTTP/1.1 200"), head[:200]
        return reader, writer

    streams: list = []
    for start in range(0, n, 50):  # in waves, as clients arrive
        streams += await asyncio.gather(*(one() for _ in range(min(50, n - start))))
    return streams


async def close_streams(streams: list) -> None:
    for _, writer in streams:
        writer.close()
    await asyncio.gather(*(w.wait_closed() for _, w in streams), return_exceptions=True)


def test_300_streams_opened_and_dropped_leave_threads_connections_and_memory_at_baseline(procs, token):
    # On PostgreSQL the web process gets a pool of only 4 connections: if an
    # open stream kept one, the fifth stream (and every API call) would wait
    # for the pool and fail.
    pool_max = 4
    web, port = procs.daphne(env={"FLEX_SSE_MAX_STREAMS_PER_USER": "1000", "FLEX_SSE_KEEPALIVE_SECONDS": "5",
                                  "FLEX_DB_POOL_MAX": str(pool_max)})
    # No worker: the run stays queued, so its streams stay open and idle.
    run_id = submit(port, token, chain_envelope(steps=1))
    # Warm up (imports, executor threads, the pool), then take the baseline.
    async def warm() -> None:
        await close_streams(await open_streams(port, token, run_id, 10))

    asyncio.run(warm())
    time.sleep(1.0)
    base_threads, base_db, base_rss = web.threads(), db_connections(web), web.rss_kb()

    def measure() -> tuple[int, int, int]:
        try:
            return web.threads(), db_connections(web), web.rss_kb()
        finally:
            connection.close()  # this helper thread's own connection

    async def scenario() -> tuple[int, int, int]:
        streams = await open_streams(port, token, run_id, 300)
        await asyncio.sleep(1.0)
        during = await asyncio.to_thread(measure)
        # Every stream is still open and served (a keep-alive or nothing, no error).
        assert all(not reader.at_eof() for reader, _ in streams)
        # Ordinary requests still get a connection while 300 streams are open.
        assert await asyncio.to_thread(events_json, port, token, run_id) == []
        await close_streams(streams)
        return during

    threads_open, db_open, rss_open = asyncio.run(scenario())
    # While 300 streams are open: no thread and no connection per stream.
    assert threads_open <= base_threads + 8, (base_threads, threads_open)
    db_bound = pool_max if is_postgres() else base_db + 4
    assert db_open <= db_bound, (base_db, db_open)

    def settled() -> bool:
        return web.threads() <= base_threads + 8 and db_connections(web) <= (pool_max if is_postgres() else base_db + 2)

    wait_for(settled, timeout=15, interval=0.25, what="threads and connections to return to baseline")
    # Memory: Python keeps freed arenas, so allow a generous margin.
    assert web.rss_kb() <= base_rss + 60 * 1024, (base_rss, rss_open, web.rss_kb())
    # The web process still answers.
    assert events_json(port, token, run_id) == []
