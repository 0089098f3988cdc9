"""The agent SDK against a real server: daphne and flex_worker processes on
the test database, the agent in a thread of this process (or, to signal it,
a process of its own: tests/multiprocess/agent_proc.py)."""
from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from flexagents_sdk import Agent, AgentError, Backoff, Bundle, Clarify
from hitl.models import HitlRequest
from runs.models import NodeRun, RunEvent
from tests.multiprocess.agents import (HASHTAGS, agent_token, calls, hashtags_envelope, start_test_agent, stats)
from tests.multiprocess.conftest import submit, wait_run_status
from tests.multiprocess.procs import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

FAST_BACKOFF: Callable[[], Backoff] = lambda: Backoff(base=0.1, cap=1.0)  # noqa: E731


def make_agent(port: int, key: str, **options: Any) -> Agent:
    options = {"agent_id": "sdk-hashtags", "heartbeat_seconds": 5, "claim_wait_seconds": 5, "backoff": FAST_BACKOFF,
               **options}
    return Agent(f"http://127.0.0.1:{port}", key, **options)


def declare(agent: Agent, function: Callable[[Bundle], dict[str, Any]], *, output: str = "hashtags") -> None:
    agent.capability(HASHTAGS, kind="execution", input_facets=["post_copy"],
                     optional_input_facets=["company_information"], output_facets=[output])(function)


@contextmanager
def running(agent: Agent, *, registered: bool = True) -> Iterator[dict[str, BaseException]]:
    """`agent.run()` in a thread; stopped (at once) when the block ends."""
    failure: dict[str, BaseException] = {}

    def target() -> None:
        try:
            agent.run()
        except BaseException as exc:  # noqa: BLE001 — handed to the test
            failure["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        if registered:
            wait_for(lambda: agent.registered.is_set() or failure, timeout=30, what="the agent to register")
            assert not failure, failure
        yield failure
    finally:
        agent.stop(now=True)
        thread.join(timeout=30)
        assert not thread.is_alive(), "the agent did not stop"


def node_of(run_id: str) -> NodeRun:
    return NodeRun.objects.get(run_id=run_id, capability_id=HASHTAGS)


def test_it_asks_a_person_and_gets_the_task_back_with_the_answer(procs, token):
    web, port = procs.daphne()
    procs.worker()
    question = "Should the company tag come first?"
    seen: list[tuple[int, list[Any]]] = []

    def hashtags(bundle: Bundle) -> dict[str, Any]:
        seen.append((bundle.attempt, [c.answer for c in bundle.clarifications]))
        answer = bundle.answer_to(question)
        if answer is None:
            raise Clarify(question, options=["Yes", "No"], allow_free_form=False)
        return {"hashtags": ["#Akkuro", "#Answered"]}

    agent = make_agent(port, agent_token())
    declare(agent, hashtags)
    with running(agent):
        run_id = submit(port, token, hashtags_envelope())
        assert wait_run_status(run_id, ("awaiting_hitl", "failed", "completed"), timeout=60) == "awaiting_hitl"
        [request] = HitlRequest.objects.filter(run_id=run_id)
        assert (request.kind, request.question, request.pending_node_id) == ("clarify", question,
                                                                             node_of(run_id).node_id)
        assert [o["id"] for o in request.options] == ["yes", "no"] and request.allow_free_form is False

        answered = httpx.post(f"http://127.0.0.1:{port}/api/hitl/resume", timeout=30,
                              headers={"Authorization": f"Bearer {token}"},
                              json={"runId": run_id, "requestId": request.id,
                                    "responses": [{"responseType": "option", "selectedOptionId": "yes"}]})
        assert answered.status_code == 200, answered.text
        assert wait_run_status(run_id, ("completed", "failed", "awaiting_hitl"), timeout=60) == "completed"

    assert len(seen) == 2 and seen[0][1] == [] and len(seen[1][1]) == 1
    assert node_of(run_id).output == {"hashtags": ["#Akkuro", "#Answered"]}
    assert (agent.stats["clarified"], agent.stats["completed"]) == (1, 1)


def test_sigterm_hands_back_a_task_that_does_not_finish_within_the_grace_period(procs, token, tmp_path):
    web, port = procs.daphne()
    procs.worker()
    key, log = agent_token(), tmp_path / "calls.jsonl"
    slow = start_test_agent(procs, port, key, AGENT_SLEEP="60", AGENT_GRACE_SECONDS="0.5", AGENT_CALL_LOG=str(log))
    run_id = submit(port, token, hashtags_envelope())
    wait_for(lambda: calls(log), timeout=60, what="the agent to start the task")

    signalled = time.monotonic()
    slow.signal(signal.SIGTERM)
    assert slow.popen.wait(timeout=20) == 0
    assert time.monotonic() - signalled < 10  # the grace period, not the function's 60 s
    assert stats(slow) == {"claimed": 1, "handed_back": 1}
    [handed_back] = RunEvent.objects.filter(run_id=run_id, type="node_error", payload__capabilityId=HASHTAGS)
    assert handed_back.payload["error"]["code"] == "agent_stopping" and handed_back.payload["willRetry"] is True

    # Offered again at once (no lease to wait for): another agent finishes it.
    agent = make_agent(port, key, agent_id="mp-hashtags")
    declare(agent, lambda bundle: {"hashtags": ["#Akkuro"]})
    with running(agent):
        assert wait_run_status(run_id, ("completed", "failed", "awaiting_hitl"), timeout=60) == "completed"
    node = node_of(run_id)
    assert (node.attempts, node.commits, node.output) == (2, 1, {"hashtags": ["#Akkuro"]})


def test_sigterm_lets_a_running_function_finish_and_report(procs, token, tmp_path):
    web, port = procs.daphne()
    procs.worker()
    log = tmp_path / "calls.jsonl"
    agent = start_test_agent(procs, port, agent_token(), AGENT_SLEEP="2", AGENT_CALL_LOG=str(log))
    run_id = submit(port, token, hashtags_envelope())
    wait_for(lambda: calls(log), timeout=60, what="the agent to start the task")

    agent.signal(signal.SIGTERM)
    assert agent.popen.wait(timeout=30) == 0

    assert stats(agent) == {"claimed": 1, "completed": 1}
    assert wait_run_status(run_id, ("completed", "failed", "awaiting_hitl"), timeout=30) == "completed"
    assert (node_of(run_id).attempts, node_of(run_id).commits) == (1, 1)


def test_it_reconnects_when_the_server_comes_back(procs, token, caplog):
    caplog.set_level(logging.INFO, logger="flexagents_sdk")
    web, port = procs.daphne()
    procs.worker()
    # A heartbeat interval longer than the outage and a restart on a busy machine.
    agent = make_agent(port, agent_token(), heartbeat_seconds=10)
    declare(agent, lambda bundle: {"hashtags": ["#Akkuro"]})
    with running(agent):
        web.stop()
        time.sleep(1.5)  # claims and heartbeats fail meanwhile, and back off
        procs.daphne(port=port)
        run_id = submit(port, token, hashtags_envelope())
        assert wait_run_status(run_id, ("completed", "failed", "awaiting_hitl"), timeout=60) == "completed"
    assert agent.stats["completed"] == 1
    assert "claim: ConnectError" in caplog.text  # it did see the server gone
    [started] = RunEvent.objects.filter(run_id=run_id, type="node_start", payload__capabilityId=HASHTAGS)
    assert started.payload["agentId"] == "sdk-hashtags"


def test_it_never_holds_more_than_max_concurrency_tasks(procs, token):
    web, port = procs.daphne()
    procs.worker()
    spans: list[tuple[float, float]] = []
    lock = threading.Lock()

    def hashtags(bundle: Bundle) -> dict[str, Any]:
        started = time.monotonic()
        time.sleep(1.0)
        with lock:
            spans.append((started, time.monotonic()))
        return {"hashtags": ["#Akkuro"]}

    agent = make_agent(port, agent_token(), max_concurrency=2)
    declare(agent, hashtags)
    with running(agent):
        runs = [submit(port, token, hashtags_envelope()) for _ in range(5)]
        for run_id in runs:
            assert wait_run_status(run_id, ("completed", "failed", "awaiting_hitl"), timeout=90) == "completed"

    def running_at(moment: float) -> int:
        return sum(1 for start, end in spans if start <= moment < end)

    assert len(spans) == 5
    assert max(running_at(start) for start, _ in spans) == 2  # two at once, never three


@pytest.mark.parametrize("problem", ["unknown_facet", "bad_token"])
def test_a_registration_the_server_refuses_stops_the_agent_with_the_reason(procs, token, problem):
    web, port = procs.daphne()
    key = "not-a-token" if problem == "bad_token" else agent_token()
    agent = make_agent(port, key)
    declare(agent, lambda bundle: {}, output="hashTags" if problem == "unknown_facet" else "hashtags")

    with running(agent, registered=False) as failure:
        wait_for(lambda: failure, timeout=30, what="the agent to give up")

    assert isinstance(failure["error"], AgentError)
    assert ("unknown_facet" if problem == "unknown_facet" else "401") in str(failure["error"])


def test_an_agent_the_server_forgot_registers_again(procs, token):
    from planner.models import Agent as AgentRow

    web, port = procs.daphne()
    procs.worker()
    agent = make_agent(port, agent_token(), heartbeat_seconds=1)
    declare(agent, lambda bundle: {"hashtags": ["#Akkuro"]})
    with running(agent):
        AgentRow.objects.filter(pk="sdk-hashtags").delete()  # as if the database had been reset
        # The next heartbeat (or claim) is answered 404: the agent registers again.
        wait_for(lambda: AgentRow.objects.filter(pk="sdk-hashtags").exists(), timeout=30,
                 what="the agent to register again")
        run_id = submit(port, token, hashtags_envelope())
        assert wait_run_status(run_id, ("completed", "failed", "awaiting_hitl"), timeout=60) == "completed"
    assert agent.stats["completed"] == 1
