"""Engine costs in one process, one thread — the same claim / execute /
commit path as a worker (`drain()`, sweeping as often as a worker does:
once per FLEX_SWEEP_SECONDS, not before every claim), trivial capabilities — each measured
in rounds interleaved with the database's floor (`bench.floor`) and printed
as a ratio to it.

Figures (medians over the rounds, with their spread):

- marginal cost of one node step: (20-node run − 3-node run) / 17, time in
  capabilities taken out (per-run costs — claim, plan, release — cancel);
- a 3-node run end to end (claim, plan, three nodes, output, release);
- an approval cycle: a 3-node run whose policy asks a person after node 2,
  the answer (`hitl_resume`, as the API does it) and the rest of the run;
- commits and statements per node step, counted on the connection
  (transaction commits, plus writes made in autocommit mode);
- growth: a 100-node run of 2 KB nodes, time and bytes of each node step
  (SQL text plus parameters handed to the driver), steps 1–5 against 95–99.
"""
from __future__ import annotations

import json
import statistics
import time
from datetime import date, datetime
from typing import Any

from bench.common import emit, setup_django


def drain(max_steps: int) -> int:
    from django.conf import settings

    from runs.engine.worker import drain as drain_runs

    return drain_runs(max_steps=max_steps, sweep_seconds=settings.FLEX_SWEEP_SECONDS)

ROUNDS = 3


def _size(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, (list, tuple)):
        return sum(_size(v) for v in value)
    if isinstance(value, (datetime, date)):
        return len(value.isoformat())
    obj = getattr(value, "obj", None)  # psycopg's Json / Jsonb wrappers
    if obj is not None:
        return len(json.dumps(obj, default=str).encode())
    return len(str(value))


def count_commits() -> dict[str, int]:
    from django.db import connection
    from django.db.backends.base.base import BaseDatabaseWrapper

    # Bytes are counted only while `counts["count_bytes"]` is set (the growth
    # phase): sizing parameters costs time of its own.
    counts = {"commits": 0, "statements": 0, "bytes": 0, "count_bytes": 0}
    original = BaseDatabaseWrapper._commit

    def _commit(self: Any) -> Any:
        counts["commits"] += 1
        return original(self)

    BaseDatabaseWrapper._commit = _commit  # type: ignore[method-assign]

    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        counts["statements"] += 1
        if counts["count_bytes"]:
            counts["bytes"] += len(sql.encode()) + _size(params)
        if not connection.in_atomic_block and sql.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE", "WITH R"):
            counts["commits"] += 1  # autocommit: the statement (the step's `WITH r AS (UPDATE …`) commits itself
        return execute(sql, params, many, context)

    connection.execute_wrappers.append(wrapper)
    return counts


def _create(envelopes: list[dict[str, Any]]) -> list[str]:
    from bench.common import bench_user
    from runs.services import run_create

    user = bench_user()
    return [run_create(user=user, envelope=e).id for e in envelopes]


def _capability_ms(ids: list[str]) -> float:
    from runs.models import NodeRun

    return float(sum(d or 0.0 for d in NodeRun.objects.filter(run_id__in=ids).values_list("duration_ms", flat=True)))


def _check_completed(ids: list[str]) -> None:
    from runs.models import Run

    done = Run.objects.filter(pk__in=ids, status="completed").count()
    assert done == len(ids), f"only {done} of {len(ids)} runs completed"


def measure(nodes: int, runs: int, counts: dict[str, int]) -> dict[str, float]:
    from bench.capabilities import envelope

    ids = _create([envelope(nodes) for _ in range(runs)])
    before = dict(counts)
    started = time.perf_counter()
    drain(max_steps=runs + 10)
    elapsed = (time.perf_counter() - started) * 1000
    _check_completed(ids)
    capability_ms = _capability_ms(ids)
    total_nodes = runs * nodes
    return {
        "nodes": nodes, "runs": runs,
        "ms_per_run": elapsed / runs,
        "engine_ms_per_run": (elapsed - capability_ms) / runs,
        "ms_per_node": (elapsed - capability_ms) / total_nodes,
        "commits_per_run": (counts["commits"] - before["commits"]) / runs,
        "statements_per_run": (counts["statements"] - before["statements"]) / runs,
        "commits_per_node": (counts["commits"] - before["commits"]) / total_nodes,
        "statements_per_node": (counts["statements"] - before["statements"]) / total_nodes,
    }


def approval_cycle(runs: int, counts: dict[str, int]) -> dict[str, float]:
    """3-node runs asking a person after node 2: run to the question, answer
    it (the service behind POST /api/hitl/resume), run to the end."""
    from bench.capabilities import envelope
    from bench.common import bench_user
    from hitl.models import HitlRequest
    from runs.services import hitl_resume

    approver = bench_user("bench-approver")
    ids = _create([envelope(3, approve_after=2) for _ in range(runs)])
    before = dict(counts)
    started = time.perf_counter()
    drain(max_steps=runs + 10)
    # The request ids, as a client learns them from the `hitl_request` event:
    # one query for the batch, not one per answer (no part of the engine's work).
    requests = dict(HitlRequest.objects.filter(run_id__in=ids, status="pending").values_list("run_id", "id"))
    for run_id in ids:
        hitl_resume(user=approver, run_id=run_id, request_id=requests[run_id],
                    responses=[{"responseType": "approval", "approved": True}])
    drain(max_steps=runs + 10)
    elapsed = (time.perf_counter() - started) * 1000
    _check_completed(ids)
    return {"runs": runs, "engine_ms_per_run": (elapsed - _capability_ms(ids)) / runs,
            "statements_per_run": (counts["statements"] - before["statements"]) / runs,
            "commits_per_run": (counts["commits"] - before["commits"]) / runs}


def growth(nodes: int, pad_bytes: int, runs: int, counts: dict[str, int]) -> dict[str, Any]:
    """Per node step of long runs with large facets: time, bytes, commits."""
    from bench.capabilities import envelope
    from runs.engine import loop

    steps: list[tuple[float, int, int, float]] = []
    original = loop.run_node

    def timed(*args: Any, **kwargs: Any) -> Any:
        before = dict(counts)
        started, cpu = time.perf_counter(), time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            steps.append(((time.perf_counter() - started) * 1000, counts["bytes"] - before["bytes"],
                          counts["commits"] - before["commits"], (time.process_time() - cpu) * 1000))

    per_run: list[list[tuple[float, int, int, float]]] = []
    loop.run_node = timed  # type: ignore[assignment]
    counts["count_bytes"] = 1
    try:
        for _ in range(runs):
            ids = _create([envelope(nodes, pad_bytes=pad_bytes)])
            steps.clear()
            drain(max_steps=2)
            _check_completed(ids)
            per_run.append(list(steps))
    finally:
        loop.run_node = original  # type: ignore[assignment]
        counts["count_bytes"] = 0

    def window(lo: int, hi: int, index: int) -> float:
        # Steps lo..hi (1-based, capability nodes), median over steps and runs.
        return float(statistics.median(s[index] for run in per_run for s in run[lo - 1:hi]))

    first_ms, last_ms = window(1, 5, 0), window(nodes - 5, nodes - 1, 0)
    first_b, last_b = window(1, 5, 1), window(nodes - 5, nodes - 1, 1)
    # CPU time of this process (Python, driver) per step: less sensitive to
    # other load on the machine than wall time.
    first_cpu, last_cpu = window(1, 5, 3), window(nodes - 5, nodes - 1, 3)
    return {"nodes": nodes, "pad_bytes": pad_bytes, "runs": runs,
            "first_ms": first_ms, "last_ms": last_ms, "ms_growth": last_ms / first_ms - 1,
            "first_cpu_ms": first_cpu, "last_cpu_ms": last_cpu, "cpu_growth": last_cpu / first_cpu - 1,
            "first_bytes": first_b, "last_bytes": last_b, "bytes_growth": last_b / first_b - 1,
            "commits_per_step": statistics.mean(s[2] for run in per_run for s in run[:nodes - 1]),
            "total_bytes_per_run": statistics.mean(sum(s[1] for s in run) for run in per_run)}


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    setup_django()
    from django.db import connection

    from bench.floor import Floor

    counts = count_commits()
    floor = Floor()
    measure(3, 5, counts)  # warm-up: imports, compiled validators, the pool
    approval_cycle(2, counts)
    floor.measure(30)
    rounds: list[dict[str, Any]] = []
    for _ in range(ROUNDS):
        f1 = floor.measure(100)
        small = measure(3, 40, counts)
        large = measure(20, 10, counts)
        approval = approval_cycle(15, counts)
        f2 = floor.measure(100)
        floor_ms = (f1["driver_ms"] + f2["driver_ms"]) / 2
        extra = large["nodes"] - small["nodes"]
        marginal = (large["engine_ms_per_run"] - small["engine_ms_per_run"]) / extra
        rounds.append({
            "floor_ms": floor_ms, "floor_django_ms": (f1["django_ms"] + f2["django_ms"]) / 2,
            "marginal_ms_per_node": marginal,
            "marginal_commits_per_node": (large["commits_per_run"] - small["commits_per_run"]) / extra,
            "marginal_statements_per_node": (large["statements_per_run"] - small["statements_per_run"]) / extra,
            "run3_ms": small["engine_ms_per_run"], "approval_ms": approval["engine_ms_per_run"],
            "approval_statements": approval["statements_per_run"],
            "marginal_ratio": marginal / floor_ms, "run3_ratio": small["engine_ms_per_run"] / floor_ms,
            "approval_ratio": approval["engine_ms_per_run"] / floor_ms,
            "plan3": small, "plan20": large, "approval": approval,
        })
    keys = ("floor_ms", "floor_django_ms", "marginal_ms_per_node", "marginal_commits_per_node",
            "marginal_statements_per_node", "run3_ms", "approval_ms", "approval_statements", "marginal_ratio",
            "run3_ratio", "approval_ratio")
    summary = {key: spread([r[key] for r in rounds]) for key in keys}
    f = floor.measure(100)
    grown = growth(100, 2000, 2, counts)
    grown["floor_ms"] = (f["driver_ms"] + floor.measure(100)["driver_ms"]) / 2
    emit({"vendor": connection.vendor, "rounds": rounds, "summary": summary, "growth": grown})


if __name__ == "__main__":
    main()
