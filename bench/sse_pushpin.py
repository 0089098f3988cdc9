"""Many SSE clients through Pushpin (GRIP) in front of two daphne processes,
one 20-node run followed by every client (FLEX_BENCH_PUSHPIN_CLIENTS,
default 5,000).

Pushpin holds the client connections; the daphnes check access, replay and
answer with GRIP instructions; the `flex_worker` publishes each committed
event once to Pushpin (runs.grip). The clients run in separate processes
(`python -m bench.sse_pushpin clients …`, FLEX_BENCH_PUSHPIN_CLIENT_PROCS,
default 2), as in bench/sse.py: the latency of a frame is its receive time
minus the event's `timestamp` (set just before its transaction commits), on
the same clock. Prints delivered counts, commit -> receive p50/p99, and the
threads and RSS of each daphne and of Pushpin (all its services) per phase.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import ROOT, WORK, Child, emit, free_port, percentile, setup_django, wait_port, worker

NODES = 20
# Requests connecting at once, all client processes together. Pushpin 1.36
# hands each new request to zurl, and each GRIP hold to its handler, over
# ZeroMQ queues of 100 messages (compiled in), and fails a request that
# finds one full at once: 502 "Error while proxying to origin." or 500
# "Accept service unavailable." (docs/performance.md). Fewer than 100 in
# flight can never fill them; 80 open streams as fast as 400 did.
CONNECTING = 80
FAILED: list[str] = []  # errors of this client process's streams
CPU_AT_OPEN: list[float] = []
# Frames are compact JSON starting {"type":…,"id":…,"seq":…,"timestamp":…} (runs.events.event_frame).
FRAME_HEAD = re.compile(rb'data: \{"type":"([a-z_]+)","id":"[^"]*","seq":(\d+),"timestamp":"([^"]+)"')


async def one_client(port: int, token: str, run_id: str, opened: list[int],
                     connecting: asyncio.Semaphore, mine: list[bool]) -> list[tuple[int, float]]:
    """(seq, latency ms) of each frame until `complete` (or the stream ends).
    Pushpin sends the stream chunked at arbitrary boundaries (a frame may
    span chunks): the body is de-chunked before it is split into frames."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**20)
    writer.write((f"GET /api/v1/flex/runs/{run_id}/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                  f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n").encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.decode(errors="replace")[:200])
    chunked = b"transfer-encoding: chunked" in head.lower()
    frames: list[tuple[int, float]] = []
    buffer = b""
    try:
        while True:
            if chunked:
                size = int((await reader.readuntil(b"\r\n")).strip() or b"0", 16)
                if size == 0:
                    break
                data = await reader.readexactly(size + 2)
                buffer += data[:-2]
            else:
                data = await reader.read(65536)
                if not data:
                    break
                buffer += data
            *complete_frames, buffer = buffer.split(b"\n\n")
            done = False
            for frame in complete_frames:
                if not mine[0] and b"stream open" in frame:
                    mine[0] = True
                    opened[0] += 1
                    connecting.release()
                # The frame's seq and timestamp only (a plan frame is ~9 KB of JSON:
                # parsing it all would make the clients, not the server, the bottleneck).
                head_match = FRAME_HEAD.search(frame)
                if head_match:
                    now = time.time()
                    sent = datetime.fromisoformat(head_match.group(3).decode().replace("Z", "+00:00")).timestamp()
                    frames.append((int(head_match.group(2)), (now - sent) * 1000.0))
                    done = done or head_match.group(1) == b"complete"
            if done:
                break
    finally:
        writer.close()
    return frames


def clients_main(port: int, token: str, run_id: str, count: int, total: int, at_once: int) -> None:
    """A client process: open `count` streams, say OPEN, follow to the end, print RESULT."""

    async def run() -> list[list[tuple[int, float]]]:
        opened = [0]
        # At most `at_once` requests of this process in flight at once (its
        # share of CONNECTING): a storm as fast as the stack answers.
        connecting = asyncio.Semaphore(at_once)

        async def client() -> list[tuple[int, float]]:
            await connecting.acquire()
            mine = [False]
            try:
                return await one_client(port, token, run_id, opened, connecting, mine)
            except (OSError, RuntimeError, asyncio.IncompleteReadError, ValueError) as exc:
                FAILED.append(repr(exc)[:200])
                if not mine[0]:  # refused before it opened: count it as "open" (and lost)
                    opened[0] += 1
                    connecting.release()
                return []

        tasks = [asyncio.create_task(client()) for _ in range(count)]
        deadline = time.monotonic() + 300
        while opened[0] < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{opened[0]}/{count} streams open")
            await asyncio.sleep(0.05)
        print("OPEN", flush=True)
        CPU_AT_OPEN.append(time.process_time())
        results = await asyncio.wait_for(asyncio.gather(*tasks), timeout=600)
        return results

    results = asyncio.run(run())
    expected = list(range(1, total + 1))
    complete = sum(1 for frames in results if [f[0] for f in frames] == expected)
    incomplete = [[f[0] for f in frames] for frames in results if [f[0] for f in frames] != expected]
    latencies = [round(f[1], 2) for frames in results for f in frames]
    print("RESULT " + json.dumps({"complete": complete, "latencies": latencies, "failed": FAILED,
                                  "delivery_cpu": time.process_time() - CPU_AT_OPEN[0],
                                  "incomplete_examples": [(len(seqs), seqs[-3:]) for seqs in incomplete[:5]]}),
          flush=True)


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes (their threads included)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
    return total / os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    """pid and its descendants (Pushpin's runner and its services)."""
    pids, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            pids.append(child)
            frontier.append(child)
    return pids


def main() -> None:
    setup_django()
    from django.db import connection

    from bench.capabilities import event_count
    from bench.common import bench_token, bench_user
    from bench.sse import held_run, release
    from tests.multiprocess.procs import ProcGroup, Pushpin

    clients = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    procs_n = max(1, int(os.environ.get("FLEX_BENCH_PUSHPIN_CLIENT_PROCS", "2")))
    if not Pushpin.available():
        emit({"skipped": "pushpin is not installed (apt-get install pushpin)"})
        return
    user, token = bench_user(), bench_token()
    total = event_count(NODES)
    ports = [free_port(), free_port()]
    group = ProcGroup(dict(os.environ))
    pushpin = Pushpin(group, ports)
    grip = {"FLEX_GRIP_URL": pushpin.grip_url}
    # The Procfile's web command, with a listen backlog for the connect storm (docs/deployment.md).
    webs = [Child(f"{connection.vendor}-pushpin-daphne-{i + 1}",
                  [sys.executable, "-m", "flexagents.serve", "-e", f"tcp:port={port}:interface=127.0.0.1:backlog=1024"],
                  env=grip) for i, port in enumerate(ports)]
    for port in ports:
        wait_port(port)
    pp = pushpin.start()
    wk = worker(f"{connection.vendor}-pushpin-worker", env=grip)
    result: dict[str, Any] = {"vendor": connection.vendor, "redis": bool(os.environ.get("REDIS_URL")),
                              "clients": clients, "client_processes": procs_n}
    children: list[subprocess.Popen[str]] = []
    try:
        def snapshot() -> dict[str, Any]:
            out: dict[str, Any] = {}
            for i, web in enumerate(webs):
                out[f"daphne{i + 1}"] = {"threads": web.status("Threads"),
                                         "rss_mb": round(web.status("VmRSS") / 1024, 1)}
            tree = _tree(pp.pid)
            out["pushpin"] = {"threads": sum(_status(p, "Threads") for p in tree),
                              "rss_mb": round(sum(_status(p, "VmRSS") for p in tree) / 1024, 1)}
            return out

        def merge_peak(peak: dict[str, Any], now: dict[str, Any]) -> None:
            for proc, figures in now.items():
                slot = peak.setdefault(proc, {})
                for key, value in figures.items():
                    slot[key] = max(slot.get(key, 0), value)

        run_id = held_run(user, step_sleep=0.02)
        # Warm each daphne up (imports, URL resolver, executor) before the storm, as bench/sse.py's
        # latency phase does: the first requests of a cold process are slow, and 400 of them at once
        # made Pushpin answer some with 502.
        import urllib.request

        for port in ports:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/flex/runs/{run_id}/events",
                                             headers={"Authorization": f"Bearer {token}"})
            urllib.request.urlopen(request, timeout=30).read()
        time.sleep(1.0)
        result["baseline"] = snapshot()
        peaks: dict[str, dict[str, Any]] = {"connect": {}, "delivery": {}}
        current = ["connect"]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                try:
                    merge_peak(peaks[current[0]], snapshot())
                except (OSError, KeyError):
                    pass
                time.sleep(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        share = [clients // procs_n + (1 if i < clients % procs_n else 0) for i in range(procs_n)]
        at_once = str(max(1, CONNECTING // sum(1 for n in share if n)))
        children = [subprocess.Popen([sys.executable, "-m", "bench.sse_pushpin", "clients", str(pushpin.port), token,
                                      run_id, str(n), str(total), at_once], cwd=ROOT, stdout=subprocess.PIPE,
                                     text=True)
                    for n in share if n]
        for child in children:
            assert child.stdout is not None
            line = child.stdout.readline()
            if not line.startswith("OPEN"):
                raise RuntimeError(f"a client process failed before all its streams opened: {line!r}")
        result["seconds_to_open"] = round(time.monotonic() - started, 1)
        time.sleep(1.5)
        result["open_idle"] = snapshot()
        current[0] = "delivery"

        def cpu() -> dict[str, float]:
            return {"pushpin": _cpu_seconds(_tree(pp.pid)), "daphnes": _cpu_seconds([w.pid for w in webs]),
                    "worker": _cpu_seconds([wk.pid])}

        cpu_before, wall_before = cpu(), time.monotonic()
        release(run_id)
        complete, latencies = 0, []
        failures: list[str] = []
        incomplete: list[Any] = []
        clients_cpu = 0.0
        for child in children:
            assert child.stdout is not None
            for line in child.stdout:
                if line.startswith("RESULT "):
                    body = json.loads(line[7:])
                    complete += body["complete"]
                    latencies += body["latencies"]
                    failures += body["failed"]
                    incomplete += body["incomplete_examples"]
                    clients_cpu += body["delivery_cpu"]
            child.wait(timeout=60)
        cpu_after = cpu()
        result["delivery_cpu_seconds"] = {**{k: round(cpu_after[k] - cpu_before[k], 1) for k in cpu_after},
                                          "clients": round(clients_cpu, 1)}
        result["delivery_wall_seconds"] = round(time.monotonic() - wall_before, 1)
        stop.set()
        sampler.join(timeout=5)
        time.sleep(2.0)
        result.update({"complete_deliveries": complete, "frames": len(latencies),
                       "frames_expected": clients * total, "failed_streams": len(failures),
                       "failures": failures[:5], "incomplete_examples": incomplete[:5],
                       "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
                       "max_ms": max(latencies) if latencies else float("nan"),
                       "connect_peak": peaks["connect"], "delivery_peak": peaks["delivery"], "after": snapshot()})
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
        wk.stop()
        for web in webs:
            web.stop()
        group.stop_all()
        try:
            os.killpg(pp.pid, 9)  # the runner's services, should any outlive it
        except ProcessLookupError:
            pass
        shutil.rmtree(pushpin.dir, ignore_errors=True)
        for proc in group.procs:  # Pushpin's log (all its services) next to the other logs
            shutil.copy(proc.log_path, WORK / f"{connection.vendor}-pushpin.log")
        shutil.rmtree(group.log_dir, ignore_errors=True)
    emit(result)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "clients":
        port, token, run_id, count, total, at_once = sys.argv[2:8]
        clients_main(int(port), token, run_id, int(count), int(total), int(at_once))
    else:
        main()
