"""Agents as real processes beside daphne and flex_worker: the example agent
does its node; an agent killed, frozen or silenced loses its task, its lease
or its capability, and the run stays consistent (docs/agents.md)."""
from __future__ import annotations

import time

import httpx
import pytest

from hitl.models import HitlRequest
from runs.models import NodeRun, Run, RunEvent, Task
from tests.multiprocess.agents import (HASHTAGS, TASK_LEASE_SECONDS, agent_token, calls, hashtags_envelope,
                                       start_example_agent, start_test_agent, stats)
from tests.multiprocess.conftest import SWEEP_SECONDS, SSEClient, assert_contiguous, events_json, submit, \
    wait_run_status
from tests.multiprocess.procs import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Lease expiry is noticed within lease + sweep; the rest is process scheduling on a busy machine.
TAKEOVER_SECONDS = TASK_LEASE_SECONDS + SWEEP_SECONDS + 15


def hashtags_node(run_id: str) -> NodeRun:
    return NodeRun.objects.get(run_id=run_id, capability_id=HASHTAGS)


def hashtag_events(run_id: str, type_: str) -> list[RunEvent]:
    return list(RunEvent.objects.filter(run_id=run_id, type=type_, payload__capabilityId=HASHTAGS).order_by("seq"))


def types_of(run_id: str) -> list[str]:
    return list(RunEvent.objects.filter(run_id=run_id).order_by("seq").values_list("type", flat=True))


def capability_status(port: int, token: str, capability_id: str) -> str | None:
    response = httpx.get(f"http://127.0.0.1:{port}/api/v1/flex/capabilities",
                         headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert response.status_code == 200, response.text
    return next((c["status"] for c in response.json()["capabilities"] if c["capabilityId"] == capability_id), None)


def test_the_example_agent_registers_and_does_its_node_and_the_stream_shows_it(procs, token):
    web, port = procs.daphne()
    procs.worker()
    agent = start_example_agent(procs, port, agent_token("hashtags-agent"), FLEX_HEARTBEAT_SECONDS="1")
    assert capability_status(port, token, HASHTAGS) == "active"

    run_id = submit(port, token, hashtags_envelope())
    frames = SSEClient(port, token, run_id).read(timeout=60)

    assert_contiguous(frames)
    assert frames[-1]["event"] == "complete" and frames[-1]["data"]["payload"]["status"] == "completed", \
        [f["event"] for f in frames]
    ours = [f for f in frames if f["data"]["payload"].get("capabilityId") == HASHTAGS]
    assert [f["event"] for f in ours] == ["node_dispatched", "node_start", "node_complete"]
    dispatched, started, completed = (f["data"]["payload"] for f in ours)
    assert started["agentId"] == "acme-hashtags"
    assert started["taskId"] == dispatched["taskId"] and started["attempt"] == dispatched["attempt"] == 1
    assert completed["outputFacets"] == ["hashtags"]
    output = frames[-1]["data"]["payload"]["output"]
    assert output["hashtags"][0] == "#Akkuro" and output["post_copy"]
    assert hashtags_node(run_id).commits == 1

    assert agent.stop() == 0  # SIGTERM: a clean exit
    assert "agent acme-hashtags stopped (claimed 1, completed 1)" in agent.logs()


def test_an_agent_sigkilled_mid_task_loses_it_to_a_second_agent_and_the_node_commits_once(procs, token, tmp_path):
    web, port = procs.daphne()
    procs.worker()
    key, log = agent_token(), tmp_path / "calls.jsonl"
    # Slower than the lease: the survivor must renew its lease to finish.
    agents = {p.pid: p for p in [start_test_agent(procs, port, key, AGENT_SLEEP="2.5", AGENT_CALL_LOG=str(log))
                                 for _ in range(2)]}

    run_id = submit(port, token, hashtags_envelope())
    wait_for(lambda: len(calls(log)) == 1, timeout=60, what="an agent to start the task")
    first = agents.pop(calls(log)[0]["pid"])
    [second] = agents.values()
    first.kill()  # SIGKILL mid-function: no hand-back, no clean-up

    wait_for(lambda: len(calls(log)) == 2, timeout=TAKEOVER_SECONDS, what="the second agent to get the task")
    retry = calls(log)[1]
    assert (retry["pid"], retry["attempt"]) == (second.pid, 2)
    assert wait_run_status(run_id, ("completed", "failed", "awaiting_hitl"), timeout=30) == "completed"

    node = hashtags_node(run_id)
    assert (node.commits, node.attempts, node.status) == (1, 2, "completed")
    assert f"#Pid{second.pid}" in node.output["hashtags"] and f"#Pid{first.pid}" not in str(node.output)
    assert len(hashtag_events(run_id, "node_complete")) == 1
    [expired] = hashtag_events(run_id, "node_error")
    assert expired.payload["error"]["code"] == "lease_expired" and expired.payload["willRetry"] is True
    assert [e.payload["attempt"] for e in hashtag_events(run_id, "node_dispatched")] == [1, 2]
    assert {e.payload["agentId"] for e in hashtag_events(run_id, "node_start")} == {"mp-hashtags"}
    assert sorted(Task.objects.filter(run_id=run_id).values_list("attempt", "status")) == \
        [(1, "expired"), (2, "completed")]

    # The stream, through the web process, tells the same story without a gap.
    frames = SSEClient(port, token, run_id).read(timeout=30)
    assert_contiguous(frames)
    assert [f["event"] for f in frames] == types_of(run_id)
    assert [e["seq"] for e in events_json(port, token, run_id)] == [f["data"]["seq"] for f in frames]


def test_a_zombie_agent_gets_lease_lost_and_commits_nothing(procs, token, tmp_path):
    web, port = procs.daphne()
    procs.worker()
    key, log = agent_token(), tmp_path / "calls.jsonl"
    # One task at a time and no claim in flight while it holds one, so the
    # frozen agent cannot take the retry too; a long heartbeat interval so
    # that its silence does not make the capability inactive meanwhile.
    zombie = start_test_agent(procs, port, key, AGENT_SLEEP="1.0", AGENT_CALL_LOG=str(log), AGENT_MAX_CONCURRENCY="1",
                              AGENT_HEARTBEAT_SECONDS="30")
    run_id = submit(port, token, hashtags_envelope())
    wait_for(lambda: len(calls(log)) == 1, timeout=60, what="the agent to start the task")
    zombie.pause()  # SIGSTOP mid-function, past its lease

    wait_for(lambda: hashtag_events(run_id, "node_error"), timeout=TAKEOVER_SECONDS, what="the lease to expire")
    rescuer = start_test_agent(procs, port, key, AGENT_CALL_LOG=str(log), AGENT_HEARTBEAT_SECONDS="30")
    assert wait_run_status(run_id, ("completed", "failed", "awaiting_hitl"), timeout=30) == "completed"
    events_before = types_of(run_id)

    zombie.resume()  # SIGCONT: it finishes its function and reports with its old lease
    wait_for(lambda: "lease lost" in zombie.logs(20000), timeout=20, what="the zombie to hear lease_lost")

    assert zombie.stop() == 0
    # Nothing completed, nothing failed: its lease renewal may hear lease_lost
    # too, before the completion does.
    seen = stats(zombie)
    assert set(seen) == {"claimed", "lease_lost"} and seen["claimed"] == 1 and seen["lease_lost"] >= 1, seen
    assert types_of(run_id) == events_before  # nothing written after the takeover's run
    node = hashtags_node(run_id)
    assert (node.commits, node.attempts) == (1, 2)
    assert f"#Pid{rescuer.pid}" in node.output["hashtags"] and f"#Pid{zombie.pid}" not in str(node.output)
    assert Run.objects.get(pk=run_id).output["hashtags"] == node.output["hashtags"]
    assert [c["pid"] for c in calls(log)] == [zombie.pid, rescuer.pid]


def test_an_agent_that_stops_heartbeating_becomes_inactive_and_its_runs_end(procs, token, tmp_path):
    web, port = procs.daphne()
    procs.worker()
    silent = start_test_agent(procs, port, agent_token(), AGENT_HEARTBEAT_SECONDS="1",
                              AGENT_CALL_LOG=str(tmp_path / "calls.jsonl"))
    assert capability_status(port, token, HASHTAGS) == "active"

    silent.pause()  # no heartbeat, no claim from now on
    silenced_at = time.monotonic()
    waiting = submit(port, token, hashtags_envelope())  # planned while the agent still counts as active
    wait_for(lambda: capability_status(port, token, HASHTAGS) == "inactive", timeout=30,
             what="the silent agent to become inactive")
    assert time.monotonic() - silenced_at >= 2.5  # not before 3 heartbeat intervals of silence (with slack)

    # The waiting run fails, as its policy (none: the default) says.
    assert wait_run_status(waiting, ("completed", "failed", "awaiting_hitl"), timeout=30) == "failed"
    [complete] = RunEvent.objects.filter(run_id=waiting, type="complete")
    assert complete.payload["status"] == "failed"
    assert complete.payload["error"]["code"] == "capability_inactive", complete.payload
    assert hashtags_node(waiting).commits == 0

    # A new run that needs only it is refused before it exists.
    refused = httpx.post(f"http://127.0.0.1:{port}/api/v1/flex/runs", json=hashtags_envelope(), timeout=30,
                         headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 422, refused.text
    assert refused.json()["code"] == "capability_inactive"
    assert {d["capabilityId"] for d in refused.json()["details"]["diagnostics"]} == {HASHTAGS}
    assert Run.objects.count() == 1

    # Heartbeating again makes it active again.
    silent.resume()
    wait_for(lambda: capability_status(port, token, HASHTAGS) == "active", timeout=30,
             what="the agent to become active again")
    assert silent.stop() == 0


def test_invalid_output_from_an_agent_is_refused_retried_then_escalated_to_a_person(procs, token):
    web, port = procs.daphne()
    procs.worker()
    agent = start_test_agent(procs, port, agent_token(), AGENT_OUTPUT="invalid")

    run_id = submit(port, token, hashtags_envelope(constraints={"maxRetries": 1}))
    assert wait_run_status(run_id, ("completed", "failed", "awaiting_hitl"), timeout=60) == "awaiting_hitl"

    node_id = hashtags_node(run_id).node_id
    invalid = list(RunEvent.objects.filter(run_id=run_id, type="validation_error").order_by("seq"))
    # Two attempts (maxRetries 1), each refused with the errors, both about the agent's node.
    assert [(e.payload["scope"], e.payload["nodeId"], e.payload["attempt"]) for e in invalid] == \
        [("node", node_id, 1), ("node", node_id, 2)]
    assert all(e.payload["errors"] for e in invalid)
    [request] = HitlRequest.objects.filter(run_id=run_id)
    assert (request.kind, request.status, request.pending_node_id) == ("approval", "pending", node_id)
    assert request.contract_summary["validationErrors"]
    assert "no hash sign" in str(request.review)
    node = hashtags_node(run_id)
    assert (node.commits, node.attempts) == (0, 2)

    # An operator sees it in the inbox.
    pending = httpx.get(f"http://127.0.0.1:{port}/api/hitl/pending", headers={"Authorization": f"Bearer {token}"},
                        timeout=30).json()
    assert [r["pendingRequestId"] for r in pending["runs"] if r["runId"] == run_id] == [request.id]

    assert agent.stop() == 0
    assert stats(agent) == {"claimed": 2, "rejected": 2}


def test_a_killed_agents_capability_goes_inactive_and_its_run_replans_onto_another_agent(procs, token, tmp_path):
    from runs.models import PlanVersion

    web, port = procs.daphne()
    procs.worker()
    log = tmp_path / "calls.jsonl"
    # Two agents produce `hashtags`; the envelope prefers the first, which is
    # killed mid-task: its capability goes inactive and an onNodeFail replan
    # policy moves the node to the other agent's capability.
    doomed = start_test_agent(procs, port, agent_token("mp-agent-a"), AGENT_SLEEP="120", AGENT_CALL_LOG=str(log))
    other = start_test_agent(procs, port, agent_token("mp-agent-b"), AGENT_ID="mp-other",
                             AGENT_CAPABILITY="acme.HashtagsToo", AGENT_CALL_LOG=str(log))
    envelope = hashtags_envelope()
    envelope["policies"] = {"planner": {"selection": {"prefer": [HASHTAGS]}}, "runtime": [
        {"id": "replace-lost-agent", "trigger": {"kind": "onNodeFail", "selector": {"capabilityId": HASHTAGS}},
         "action": {"type": "replan"}}]}
    run_id = submit(port, token, envelope)
    wait_for(lambda: len(calls(log)) == 1, timeout=60, what="the preferred agent to start the task")
    assert calls(log)[0]["pid"] == doomed.pid
    doomed.kill()  # SIGKILL: no more heartbeats, no hand-back

    assert wait_run_status(run_id, ("completed", "failed", "awaiting_hitl"), timeout=90) == "completed"
    run = Run.objects.get(pk=run_id)
    assert run.plan_version == 2
    trigger = PlanVersion.objects.get(run_id=run_id, version=2).trigger
    assert trigger["excludedCapabilities"] == [HASHTAGS], trigger
    assert calls(log)[-1]["pid"] == other.pid and f"#Pid{other.pid}" in run.output["hashtags"]
    assert NodeRun.objects.get(run_id=run_id, capability_id="acme.HashtagsToo").commits == 1
    assert hashtags_node(run_id).commits == 0
    frames = SSEClient(port, token, run_id).read(timeout=30)
    assert_contiguous(frames)
    assert "plan_updated" in [f["event"] for f in frames] and frames[-1]["event"] == "complete"
    assert other.stop() == 0
