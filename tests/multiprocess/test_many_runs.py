"""Many runs over several worker processes: each claimed, executed and
completed exactly once (RELIABILITY.md promises 2 and 8)."""
from __future__ import annotations

import json
from collections import Counter

import pytest
from django.db.models import Count, Max, Min

from runs.models import NodeRun, Run, RunEvent
from tests.multiprocess.conftest import sleeper_envelope, submit
from tests.multiprocess.procs import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_many_runs_over_four_workers_each_complete_exactly_once(procs, token, tmp_path):
    total = 200
    # One user queues all 200 at once: above the default backpressure caps.
    web, port = procs.daphne(env={"FLEX_MAX_QUEUED_RUNS_PER_USER": "1000", "FLEX_MAX_QUEUED_RUNS": "1000"})
    for _ in range(4):
        procs.worker()
    log = tmp_path / "calls.jsonl"
    run_ids = [submit(port, token, sleeper_envelope(sleep=0, call_log=str(log))) for _ in range(total)]

    def all_done() -> bool:
        return Run.objects.filter(pk__in=run_ids, status__in=["completed", "failed", "cancelled"]).count() == total

    wait_for(all_done, timeout=90, interval=0.25, what=f"{total} runs to finish")
    assert Counter(Run.objects.filter(pk__in=run_ids).values_list("status", flat=True)) == {"completed": total}
    # No node result committed twice (nor zero times).
    nodes = NodeRun.objects.filter(run_id__in=run_ids)
    assert nodes.count() == 2 * total
    assert set(nodes.values_list("commits", flat=True)) == {1}
    assert set(nodes.values_list("attempts", flat=True)) == {1}
    # Every run: one `complete`, and seq 1..last_seq with no gap or repeat.
    per_run = {row["run_id"]: row for row in RunEvent.objects.filter(run_id__in=run_ids).values("run_id").annotate(
        n=Count("id"), lo=Min("seq"), hi=Max("seq"))}
    last_seq = dict(Run.objects.filter(pk__in=run_ids).values_list("id", "last_seq"))
    for run_id in run_ids:
        row = per_run[run_id]
        assert (row["lo"], row["hi"], row["n"]) == (1, last_seq[run_id], last_seq[run_id]), run_id
    completes = Counter(RunEvent.objects.filter(run_id__in=run_ids, type="complete").values_list("run_id", flat=True))
    assert set(completes.values()) == {1} and len(completes) == total
    # The capability ran once per run, and the work was spread over workers.
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(calls) == total
    assert len({c["key"] for c in calls}) == total
    assert len({c["pid"] for c in calls}) >= 2
