"""Many long-polling agents on one daphne: what waiting costs, and how fast a
task reaches its agent.

A load process (`bench.agent_load`, asyncio + httpx) registers N agents, each
serving its own capability, and keeps one claim long poll (waitSeconds 30)
in flight per agent. Measured on the daphne process while they wait:
threads (/proc/<pid>/status), database connections (pg_stat_activity on
PostgreSQL; open handles on the SQLite file), RSS. Then one run per agent is
released at once (each prefers its agent's capability); claim latency is the
agent's receive time minus the commit time of the node's `node_dispatched`
event, on the same clock.

    python -m bench.agents [agents=200] [runs=agents]
"""
from __future__ import annotations

import io
import json
import os
import sys
import threading
import time
from datetime import timedelta
from typing import Any

from bench.common import Child, daphne, emit, free_port, percentile, setup_django, worker

PREFIX = "bench.Agent"


def envelope(index: int) -> dict[str, Any]:
    return {
        "objective": f"A task for bench agent {index}",
        "inputs": {"company_information": {"name": "Bench"}},
        "policies": {"planner": {"selection": {"prefer": [f"{PREFIX}{index:03d}"]}}},
        "outputContract": {"mode": "facets", "facets": ["bench_agent"]},
    }


def agent_token() -> str:
    from django.core.management import call_command

    out = io.StringIO()
    call_command("flex_user", "bench-agent", role="agent", token=True, stdout=out)
    return out.getvalue().strip().splitlines()[-1]


def main() -> None:
    setup_django()
    from django.db import connection, transaction
    from django.utils import timezone

    from bench.common import bench_user
    from bench.sse import sqlite_handles
    from runs import notify
    from runs.models import Run, RunEvent
    from runs.services import run_create

    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else count
    user, key = bench_user(), agent_token()
    port = free_port()
    app_name = f"bench-agents-web-{port}"  # PGAPPNAME (libpq) tags the web process's connections
    web = daphne(f"{connection.vendor}-agents-daphne", port, env={"PGAPPNAME": app_name})
    wk = worker(f"{connection.vendor}-agents-worker")
    load: Child | None = None

    def conns() -> int:
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [app_name])
                return int(cursor.fetchone()[0])
        return sqlite_handles(web)

    def snapshot() -> dict[str, Any]:
        return {"threads": web.status("Threads"), "db": conns(), "rss_mb": round(web.status("VmRSS") / 1024, 1),
                "fds": len(os.listdir(f"/proc/{web.pid}/fd"))}

    peaks: dict[str, dict[str, Any]] = {"connect": {}, "dispatch": {}}
    phase = ["connect"]
    sampling = threading.Event()

    def sample() -> None:
        try:
            while not sampling.is_set():
                now = snapshot()
                for k, v in now.items():
                    peaks[phase[0]][k] = max(peaks[phase[0]].get(k, 0), v)
                time.sleep(0.1)
        finally:
            connection.close()

    result: dict[str, Any] = {"vendor": connection.vendor, "agents": count, "runs": runs,
                              "redis": bool(os.environ.get("REDIS_URL"))}
    try:
        result["baseline"] = snapshot()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        load = Child(f"{connection.vendor}-agent-load",
                     [sys.executable, "-m", "bench.agent_load", str(port), key, str(count), PREFIX])
        deadline = time.monotonic() + 180
        while "READY" not in load.log_path.read_text(errors="replace"):
            if load.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the agents did not start: {load.log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)
        result["seconds_to_register_and_poll"] = round(time.monotonic() - started, 1)
        time.sleep(3.0)  # every agent is now parked in its long poll
        result["waiting"] = snapshot()

        # Every run created held back, then released at once.
        with transaction.atomic():
            ids = [run_create(user=user, envelope=envelope(i % count)).id for i in range(runs)]
            Run.objects.filter(pk__in=ids).update(available_at=timezone.now() + timedelta(days=1))
        phase[0] = "dispatch"
        released = time.monotonic()
        Run.objects.filter(pk__in=ids).update(available_at=timezone.now())
        notify.announce_work()
        deadline = time.monotonic() + 300
        while Run.objects.filter(pk__in=ids, status__in=("completed", "failed")).count() < len(ids):
            if time.monotonic() > deadline:
                raise TimeoutError("the runs did not finish")
            time.sleep(0.2)
        result["seconds_to_finish_runs"] = round(time.monotonic() - released, 2)
        result["runs_completed"] = Run.objects.filter(pk__in=ids, status="completed").count()
        sampling.set()
        sampler.join()
        result["connect_peak"], result["dispatch_peak"] = peaks["connect"], peaks["dispatch"]
        time.sleep(2.0)
        result["after"] = snapshot()
    finally:
        sampling.set()
        if load is not None:
            load.stop()
        wk.stop()
        web.stop()

    lines = load.log_path.read_text(errors="replace").splitlines() if load is not None else []
    claims = [json.loads(line[6:]) for line in lines if line.startswith("CLAIM ")]
    stats = next((json.loads(line[6:]) for line in lines if line.startswith("STATS ")), {})
    dispatched = {e.payload.get("taskId"): e.created_at.timestamp()
                  for e in RunEvent.objects.filter(run_id__in=ids, type="node_dispatched")}
    latencies = [(c["at"] - dispatched[c["taskId"]]) * 1000.0 for c in claims if c["taskId"] in dispatched]
    result["claims"] = len(claims)
    result["claim_latency"] = {"p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
                               "max_ms": max(latencies) if latencies else float("nan")}
    result["load_stats"] = stats
    emit(result)


if __name__ == "__main__":
    main()
