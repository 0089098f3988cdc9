"""Workers that die, stall or run long, as real processes sharing the test
database: the lease, its heartbeat thread and the fence (RELIABILITY.md
promises 2, 3 and 4)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from runs.models import NodeRun, Run, RunEvent
from tests.multiprocess.conftest import (LEASE_SECONDS, SWEEP_SECONDS, SSEClient, assert_contiguous, events_json,
                                         sleeper_envelope, submit, wait_run_status)
from tests.multiprocess.procs import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def calls(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def sleeper_node(run_id: str) -> NodeRun:
    return NodeRun.objects.get(run_id=run_id, capability_id="mp.Sleeper")


def types_of(run_id: str) -> list[str]:
    return list(RunEvent.objects.filter(run_id=run_id).order_by("seq").values_list("type", flat=True))


def sleeper_events(run_id: str, type_: str) -> list[RunEvent]:
    return list(RunEvent.objects.filter(run_id=run_id, type=type_, payload__capabilityId="mp.Sleeper"))


def test_a_sigkilled_workers_run_is_taken_over_and_its_node_committed_once(procs, token, tmp_path):
    web, port = procs.daphne()
    # Both workers are up before the run exists: starting one while the node
    # runs can take longer than the node on a busy machine.
    workers = {w.pid: w for w in (procs.worker(), procs.worker())}
    log = tmp_path / "calls.jsonl"
    run_id = submit(port, token, sleeper_envelope(sleep=2.5, call_log=str(log)))
    wait_for(lambda: len(calls(log)) == 1, timeout=20, what="a worker to call the capability")
    first = workers.pop(calls(log)[0]["pid"])
    [second] = workers.values()

    first.kill()  # SIGKILL mid-capability: no hand-back, no clean-up
    killed_at = time.time()
    wait_for(lambda: len(calls(log)) == 2, timeout=LEASE_SECONDS + SWEEP_SECONDS + 10,
             what="another worker to take the run over")
    retry = calls(log)[1]
    assert retry["pid"] == second.pid
    # Taken over within lease + sweep time (plus process scheduling slack).
    assert retry["at"] - killed_at <= LEASE_SECONDS + SWEEP_SECONDS + 2.0

    assert wait_run_status(run_id, ("completed", "failed"), timeout=20) == "completed"
    node = sleeper_node(run_id)
    assert (node.commits, node.attempts, node.crash_attempts, node.status) == (1, 2, 1, "completed")
    assert str(second.pid) in json.dumps(node.output)
    assert len(sleeper_events(run_id, "node_complete")) == 1
    [lost] = sleeper_events(run_id, "node_error")
    assert lost.payload["error"]["code"] == "worker_lost" and lost.payload["willRetry"] is True

    # The stream (through the web process) shows the whole story, gap-free.
    frames = SSEClient(port, token, run_id).read(timeout=20)
    assert_contiguous(frames)
    assert [f["event"] for f in frames] == types_of(run_id)
    assert frames[-1]["data"]["payload"]["status"] == "completed"
    assert [e["seq"] for e in events_json(port, token, run_id)] == [f["data"]["seq"] for f in frames]


def test_a_zombie_worker_commits_nothing_and_emits_nothing_after_a_takeover(procs, token, tmp_path):
    web, port = procs.daphne()
    zombie = procs.worker()
    log = tmp_path / "calls.jsonl"
    run_id = submit(port, token, sleeper_envelope(sleep=2.0, call_log=str(log)))
    wait_for(lambda: len(calls(log)) == 1, timeout=20, what="the first worker to call the capability")
    token_of_zombie = Run.objects.get(pk=run_id).lease_token

    zombie.pause()  # SIGSTOP: its heartbeat thread stops too
    heir = procs.worker()
    wait_for(lambda: len(calls(log)) == 2, timeout=LEASE_SECONDS + SWEEP_SECONDS + 10,
             what="another worker to take the run over")
    assert calls(log)[1]["pid"] == heir.pid
    assert Run.objects.get(pk=run_id).lease_token > token_of_zombie
    # Wake the zombie while the heir is still inside the capability: its own
    # call has long finished (2 s of wall time passed), so it tries to commit.
    zombie.resume()

    assert wait_run_status(run_id, ("completed", "failed"), timeout=20) == "completed"
    time.sleep(LEASE_SECONDS)  # give the zombie every chance to write something
    assert zombie.alive
    node = sleeper_node(run_id)
    assert (node.commits, node.attempts, node.crash_attempts) == (1, 2, 1)
    # The committed result is the heir's, not the zombie's.
    assert str(heir.pid) in json.dumps(node.output) and str(zombie.pid) not in json.dumps(node.output)
    assert len(sleeper_events(run_id, "node_complete")) == 1
    assert len(sleeper_events(run_id, "node_start")) == 2
    assert types_of(run_id).count("complete") == 1
    run = Run.objects.get(pk=run_id)
    events = list(RunEvent.objects.filter(run_id=run_id).order_by("seq").values_list("seq", flat=True))
    assert events == list(range(1, run.last_seq + 1))
    assert len(calls(log)) == 2  # the zombie did not start the node again either


def test_a_healthy_node_running_three_lease_lengths_is_not_taken_over(procs, token, tmp_path):
    web, port = procs.daphne()
    procs.worker()
    log = tmp_path / "calls.jsonl"
    run_id = submit(port, token, sleeper_envelope(sleep=3 * LEASE_SECONDS, call_log=str(log)))
    wait_for(lambda: len(calls(log)) == 1, timeout=20, what="the capability to be called")
    claimed_token = Run.objects.get(pk=run_id).lease_token
    # Idle workers sweep for expired leases all the while.
    procs.worker()
    procs.worker()

    assert wait_run_status(run_id, ("completed", "failed"), timeout=30) == "completed"
    node = sleeper_node(run_id)
    assert (node.commits, node.attempts, node.crash_attempts) == (1, 1, 0)
    assert len(sleeper_events(run_id, "node_start")) == 1
    assert sleeper_events(run_id, "node_error") == []
    assert Run.objects.get(pk=run_id).lease_token == claimed_token
    assert len(calls(log)) == 1


def test_a_sigterm_hands_the_run_back_promptly_and_the_node_reruns_without_a_crash_attempt(procs, token, tmp_path):
    web, port = procs.daphne()
    leaving = procs.worker("--grace", "0.5")
    log = tmp_path / "calls.jsonl"
    run_id = submit(port, token, sleeper_envelope(sleep=5.0, call_log=str(log)))
    wait_for(lambda: len(calls(log)) == 1, timeout=20, what="the capability to be called")
    token_before = Run.objects.get(pk=run_id).lease_token

    asked_at = time.monotonic()
    assert leaving.stop(timeout=10) == 0
    assert time.monotonic() - asked_at < 4.0  # did not wait for the 5 s capability
    run = Run.objects.get(pk=run_id)
    assert run.lease_owner == "" and run.lease_token > token_before  # handed back, fenced

    heir = procs.worker()
    assert wait_run_status(run_id, ("completed", "failed"), timeout=30) == "completed"
    assert [c["pid"] for c in calls(log)] == [leaving.pid, heir.pid]
    # Same attempt, same idempotency key: a hand-back is not a crash.
    assert calls(log)[0]["key"] == calls(log)[1]["key"]
    node = sleeper_node(run_id)
    assert (node.commits, node.attempts, node.crash_attempts) == (1, 1, 0)
    assert sleeper_events(run_id, "node_error") == []
    assert len(sleeper_events(run_id, "node_complete")) == 1
