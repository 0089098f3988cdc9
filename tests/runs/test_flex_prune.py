"""`manage.py flex_prune` removes what it says and nothing else, while
another run is executed by a real worker and streamed by a real daphne."""
from __future__ import annotations

import re
import subprocess
import sys
import threading
from datetime import timedelta
from typing import Any

import httpx
import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from runs.models import AuditEntry, NodeRun, PlanVersion, Run, RunEvent
from tests.multiprocess.conftest import (
    SSEClient,
    assert_contiguous,
    chain_envelope,
    chain_event_count,
    events_json,
    submit,
    wait_run_status,
)
from tests.multiprocess.procs import BASE_DIR, ProcGroup, wait_for

LINE = re.compile(r"(would prune|pruned) (\d+) runs ended before \S+ \(([a-z, ]+)\): (\d+) events, "
                  r"(\d+) node inputs, (\d+) snapshots")


def flex_prune(env: dict[str, str], *args: str) -> tuple[str, int, int, int, int]:
    done = subprocess.run([sys.executable, "manage.py", "flex_prune", *args], env=env, cwd=BASE_DIR,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    match = LINE.search(done.stdout)
    assert match, done.stdout
    return match.group(1), *(int(match.group(i)) for i in (2, 4, 5, 6))  # type: ignore[return-value]


def story(run_id: str) -> dict[str, Any]:
    """What pruning must keep."""
    run = Run.objects.get(pk=run_id)
    return {
        "status": run.status, "output": run.output, "error": run.error, "envelope": run.envelope,
        "plan_version": run.plan_version,
        "audit": list(AuditEntry.objects.filter(run_id=run_id).values_list("action", "details")),
        "plans": list(PlanVersion.objects.filter(run_id=run_id).values_list("version", "graph")),
        "node_outputs": list(NodeRun.objects.filter(run_id=run_id).values_list("node_id", "output", "status")),
    }


def bulk(run_id: str) -> dict[str, Any]:
    """What pruning deletes."""
    run = Run.objects.get(pk=run_id)
    return {
        "events": RunEvent.objects.filter(run_id=run_id).count(),
        "inputs": NodeRun.objects.filter(run_id=run_id, input__isnull=False).count(),
        "snapshot": run.has_snapshot or any(run.facet_snapshot()) or bool(run.pending_node_ids),
    }


@pytest.mark.slow
def test_it_prunes_old_runs_only_while_another_run_executes_and_streams(procs: ProcGroup, token: str) -> None:
    daphne, port = procs.daphne()
    auth = {"Authorization": f"Bearer {token}"}
    # Cancelled while queued (before any worker exists): an audit entry, no nodes.
    old_cancelled = submit(port, token, chain_envelope(steps=2))
    cancel = httpx.post(f"http://127.0.0.1:{port}/api/v1/flex/runs/{old_cancelled}/cancel",
                        json={"reason": "not needed"}, headers=auth, timeout=30)
    assert cancel.status_code == 200, cancel.text
    procs.worker()
    old_done = submit(port, token, chain_envelope(steps=3))
    recent_done = submit(port, token, chain_envelope(steps=3))
    for run_id in (old_done, recent_done):
        wait_run_status(run_id, ("completed",), timeout=60)
    Run.objects.filter(pk__in=[old_done, old_cancelled]).update(completed_at=timezone.now() - timedelta(days=40))

    kept_story = {run_id: story(run_id) for run_id in (old_done, old_cancelled, recent_done)}
    recent_bulk = bulk(recent_done)
    old_bulk = [bulk(old_done), bulk(old_cancelled)]
    assert old_bulk[0]["events"] and old_bulk[0]["inputs"] and old_bulk[0]["snapshot"]
    assert AuditEntry.objects.filter(run_id=old_cancelled).exists()

    # A run executing and streamed all along.
    live = submit(port, token, chain_envelope(steps=18, step_sleep=0.7))
    stream = SSEClient(port, token, live)
    reader = threading.Thread(target=stream.read, kwargs={"timeout": 90})
    reader.start()
    wait_for(lambda: sum(f["event"] == "node_complete" for f in stream.frames) >= 2, timeout=60,
             what="the live run to be under way")

    expected = (2, sum(b["events"] for b in old_bulk), sum(b["inputs"] for b in old_bulk),
                sum(b["snapshot"] for b in old_bulk))
    assert flex_prune(procs.env, "--older-than", "30d", "--dry-run") == ("would prune", *expected)
    assert bulk(old_done) == old_bulk[0]  # a dry run deletes nothing
    assert Run.objects.get(pk=live).status == "running"

    assert flex_prune(procs.env, "--older-than", "30d", "--batch-size", "1") == ("pruned", *expected)
    assert Run.objects.get(pk=live).status == "running"  # it really ran beside the live run

    for run_id in (old_done, old_cancelled):
        assert bulk(run_id) == {"events": 0, "inputs": 0, "snapshot": False}
        assert story(run_id) == kept_story[run_id]
    assert bulk(recent_done) == recent_bulk
    assert story(recent_done) == kept_story[recent_done]

    # Nothing left to do the second time.
    assert flex_prune(procs.env, "--older-than", "30d") == ("pruned", 0, 0, 0, 0)

    reader.join(timeout=90)
    assert stream.frames[-1]["event"] == "complete"
    assert stream.frames[-1]["data"]["payload"]["status"] == "completed"
    assert_contiguous(stream.frames)
    assert len(stream.frames) == chain_event_count(18)
    assert len(events_json(port, token, live)) == chain_event_count(18)

    # A person still reads a pruned run: its status, output and audit trail.
    debug = httpx.get(f"http://127.0.0.1:{port}/api/v1/flex/runs/{old_done}", headers=auth, timeout=30)
    assert debug.status_code == 200, debug.text
    assert debug.json()["output"] == kept_story[old_done]["output"]
    assert debug.json()["events"]["count"] == 0
    cancelled = httpx.get(f"http://127.0.0.1:{port}/api/v1/flex/runs/{old_cancelled}", headers=auth, timeout=30)
    assert [a["action"] for a in cancelled.json()["audit"]] == [a for a, _ in kept_story[old_cancelled]["audit"]]


@pytest.mark.django_db
@pytest.mark.parametrize("args, message", [
    (["--older-than", "30"], "number and a unit"),
    (["--older-than", "30d", "--status", "running"], "terminal statuses only"),
    (["--older-than", "30d", "--status", ""], "terminal statuses only"),
])
def test_it_refuses_what_it_cannot_prune_safely(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        call_command("flex_prune", *args)
