"""The `flex` command against a real daphne and a real flex_worker, as a
person runs it: a child process with FLEX_URL / FLEX_TOKEN."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import load_envelope
from tests.multiprocess.conftest import chain_envelope, events_json, wait_run_status
from tests.multiprocess.procs import BASE_DIR, ProcGroup
from tests.tcpproxy import TcpProxy

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def flex(url: str, token: str, *args: str, timeout: float = 120,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "FLEX_URL": url, "FLEX_TOKEN": token, "COLUMNS": "250",
           "PYTHONPATH": str(BASE_DIR), **(env or {})}
    return subprocess.run([sys.executable, "-m", "flexagents.cli", *args], env=env, cwd=BASE_DIR,
                          capture_output=True, text=True, timeout=timeout)


def write(tmp_path: Path, envelope: dict[str, Any]) -> str:
    path = tmp_path / "envelope.json"
    path.write_text(json.dumps(envelope))
    return str(path)


def cut_after_two_nodes(request: bytes, response: bytes) -> bool:
    return b"/stream " in request and response.count(b"event: node_complete") >= 2


def test_it_follows_a_run_through_a_dropped_connection_printing_every_node_once(
        procs: ProcGroup, token: str, tmp_path: Path) -> None:
    _, port = procs.daphne()
    procs.worker()
    proxy = TcpProxy(port).start()
    proxy.cut = cut_after_two_nodes
    try:
        done = flex(f"http://127.0.0.1:{proxy.port}", token, "run", write(tmp_path, chain_envelope(steps=6, step_sleep=0.3)),
                    "--follow")
    finally:
        proxy.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    # The connection really dropped mid-run, and the command resumed from the last event it had.
    assert proxy.cuts == 1
    streams = [r for r in proxy.requests if b"/stream" in r.split(b"\r\n", 1)[0]]
    assert len(streams) == 2, streams
    assert b"last-event-id:" not in streams[0].lower()
    assert b"last-event-id: run_" in streams[1].lower()
    assert "reconnecting" in done.stderr

    run_id = done.stdout.split()[1]
    wait_run_status(run_id, ("completed",), timeout=30)
    events = events_json(port, token, run_id)
    node_ids = [e["payload"]["nodeId"] for e in events if e["type"] == "node_complete"]
    assert len(node_ids) == 7  # six steps and the output node
    lines = done.stdout.splitlines()
    for node_id in node_ids:
        assert sum(f"node {node_id} completed" in line for line in lines) == 1, (node_id, done.stdout)
    assert f"run {run_id} completed [7/7 nodes done]" in lines
    # Then the output, as JSON, equal to the run's.
    output_text = done.stdout[done.stdout.index("\n{") + 1:]
    assert json.loads(output_text) == next(e for e in events if e["type"] == "complete")["payload"]["output"]


def test_it_shows_a_live_table_on_a_terminal(procs: ProcGroup, token: str, tmp_path: Path) -> None:
    _, port = procs.daphne()
    procs.worker()
    # FORCE_COLOR makes Rich treat the pipe as a terminal: the Live view path.
    done = flex(f"http://127.0.0.1:{port}", token, "run", write(tmp_path, chain_envelope(steps=2, step_sleep=0.2)),
                "--follow", env={"FORCE_COLOR": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3/3 nodes done" in done.stdout
    assert "\x1b[" in done.stdout  # drawn with terminal control codes


def test_it_lists_and_answers_what_waits_for_a_person(procs: ProcGroup, token: str, tmp_path: Path) -> None:
    _, port = procs.daphne()
    procs.worker()
    url = f"http://127.0.0.1:{port}"

    submitted = flex(url, token, "run", write(tmp_path, load_envelope("approval-required")))
    assert submitted.returncode == 0, submitted.stderr
    run_id = json.loads(submitted.stdout)["runId"]
    wait_run_status(run_id, ("awaiting_hitl",), timeout=60)

    pending = flex(url, token, "pending")
    assert pending.returncode == 0, pending.stderr
    from hitl.models import HitlRequest

    request = HitlRequest.objects.get(run_id=run_id, status="pending")
    assert request.id in pending.stdout and run_id in pending.stdout and "approval" in pending.stdout

    answered = flex(url, token, "answer", request.id, "--approve", "--note", "looks right")
    assert answered.returncode == 0, answered.stderr
    assert f"answered {request.id}; run {run_id} is queued" in answered.stdout
    assert wait_run_status(run_id, ("completed",), timeout=60) == "completed"
    assert "nothing is waiting for a person" in flex(url, token, "pending").stdout

    again = flex(url, token, "answer", request.id, "--approve")
    assert again.returncode == 1
    assert "hitl_request_not_found" in again.stderr

    runs = flex(url, token, "runs", "--status", "completed")
    assert runs.returncode == 0, runs.stderr
    assert run_id in runs.stdout and "completed" in runs.stdout

    agents = flex(url, token, "agents")
    assert agents.returncode == 0, agents.stderr
    assert "server (in-process)" in agents.stdout
    assert "copywriter.SocialpostDrafting" in agents.stdout


def test_it_says_what_the_server_refused(procs: ProcGroup, token: str, tmp_path: Path) -> None:
    _, port = procs.daphne()
    url = f"http://127.0.0.1:{port}"
    refused = flex(url, "not-a-token", "runs")
    assert refused.returncode == 1
    assert "not_authenticated" in refused.stderr
    invalid = flex(url, token, "run", write(tmp_path, {"objective": "x", "surprise": 1}))
    assert invalid.returncode == 1
    assert "validation_failed" in invalid.stderr or "unknown" in invalid.stderr
    neither = flex(url, token, "answer", "hitl_x")
    assert neither.returncode == 2
    assert "exactly one of" in neither.stderr


def lose_the_first_submission_answer(request: bytes, response: bytes) -> bool:
    return request.startswith(b"POST /api/v1/flex/runs ") and response.startswith(b"HTTP/")


def test_a_lost_answer_is_retried_with_the_same_idempotency_key_and_submits_once(
        procs: ProcGroup, token: str, tmp_path: Path) -> None:
    from runs.models import Run

    _, port = procs.daphne()
    proxy = TcpProxy(port).start()
    proxy.cut, proxy.drop_on_cut = lose_the_first_submission_answer, True
    try:
        done = flex(f"http://127.0.0.1:{proxy.port}", token, "run", write(tmp_path, load_envelope("approval-required")))
    finally:
        proxy.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    assert proxy.cuts == 1  # the server answered the first POST; the command never saw it
    posts = [r for r in proxy.requests if r.startswith(b"POST /api/v1/flex/runs ")]
    keys = {line for r in posts for line in r.lower().split(b"\r\n") if line.startswith(b"idempotency-key:")}
    assert len(posts) == 2 and len(keys) == 1
    assert Run.objects.count() == 1 and json.loads(done.stdout)["runId"] == Run.objects.get().pk
