"""Engine overhead per node, in one process, one thread: the same claim /
execute / commit path as a worker, with trivial capabilities.

Overhead per node = (wall time - time inside capabilities) / nodes. Commits
are counted on the connection (transaction commits, plus writes made in
autocommit mode, each of which is its own commit)."""
from __future__ import annotations

import time
from typing import Any

from bench.common import emit, setup_django


def count_commits() -> dict[str, int]:
    from django.db import connection
    from django.db.backends.base.base import BaseDatabaseWrapper

    counts = {"commits": 0, "statements": 0}
    original = BaseDatabaseWrapper._commit

    def _commit(self: Any) -> Any:
        counts["commits"] += 1
        return original(self)

    BaseDatabaseWrapper._commit = _commit  # type: ignore[method-assign]

    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        counts["statements"] += 1
        if not connection.in_atomic_block and sql.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE"):
            counts["commits"] += 1  # autocommit: the statement is its own transaction
        return execute(sql, params, many, context)

    connection.execute_wrappers.append(wrapper)
    return counts


def measure(nodes: int, runs: int, counts: dict[str, int]) -> dict[str, float]:
    from bench.capabilities import envelope
    from bench.common import bench_user
    from runs.engine.worker import drain
    from runs.models import NodeRun, Run
    from runs.services import run_create

    user = bench_user()
    ids = [run_create(user=user, envelope=envelope(nodes)).id for _ in range(runs)]
    before = dict(counts)
    started = time.perf_counter()
    drain(max_steps=runs + 10)
    elapsed = time.perf_counter() - started
    commits = counts["commits"] - before["commits"]
    statements = counts["statements"] - before["statements"]
    done = Run.objects.filter(pk__in=ids, status="completed").count()
    assert done == runs, f"only {done} of {runs} runs completed"
    capability_ms = sum(NodeRun.objects.filter(run_id__in=ids).values_list("duration_ms", flat=True))
    total_nodes = runs * nodes
    return {
        "nodes": nodes, "runs": runs,
        "ms_per_run": elapsed * 1000 / runs,
        "ms_per_node": (elapsed * 1000 - capability_ms) / total_nodes,
        "capability_ms_per_node": capability_ms / total_nodes,
        "commits_per_run": commits / runs,
        "commits_per_node": commits / total_nodes,
        "statements_per_node": statements / total_nodes,
    }


def main() -> None:
    setup_django()
    from django.db import connection

    counts = count_commits()
    measure(3, 5, counts)  # warm-up: imports, compiled validators, the pool
    small = measure(3, 60, counts)
    large = measure(20, 15, counts)
    # Marginal cost of one more node (fixed per-run costs cancel out).
    extra = large["nodes"] - small["nodes"]
    marginal_ms = (large["ms_per_run"] - large["capability_ms_per_node"] * large["nodes"]
                   - small["ms_per_run"] + small["capability_ms_per_node"] * small["nodes"]) / extra
    marginal_commits = (large["commits_per_run"] - small["commits_per_run"]) / extra
    emit({"vendor": connection.vendor, "plan3": small, "plan20": large,
          "marginal_ms_per_node": marginal_ms, "marginal_commits_per_node": marginal_commits})


if __name__ == "__main__":
    main()
