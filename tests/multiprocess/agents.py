"""Agent processes for the multi-process tests: the example agent
(examples/agents/hashtags.py) and the test agent (agent_proc.py), both on the
SDK, started beside daphne and flex_worker processes (procs.py)."""
from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path
from typing import Any

from django.core.management import call_command

from tests.conftest import ensure_roles, load_envelope
from tests.multiprocess.procs import BASE_DIR, Proc, ProcGroup, wait_for

HASHTAGS = "acme.Hashtags"
# The task lease of the child processes (conftest.child_env: FLEX_TASK_LEASE_SECONDS).
TASK_LEASE_SECONDS = 1.5


def agent_token(username: str = "mp-agent") -> str:
    """A user of the `agent` role, created as the docs say (`flex_user --role agent --token`)."""
    ensure_roles()
    out = io.StringIO()
    call_command("flex_user", username, role="agent", token=True, stdout=out)
    return out.getvalue().strip().splitlines()[-1]


def _agent_env(port: int, token: str, env: dict[str, str]) -> dict[str, str]:
    # INFO: the tests read the agents' log lines ("registered at", "lease lost").
    return {"FLEX_URL": f"http://127.0.0.1:{port}", "FLEX_TOKEN": token, "LOG_LEVEL": "INFO", **env}


def start_test_agent(procs: ProcGroup, port: int, token: str, *, ready: bool = True, **env: str) -> Proc:
    """tests/multiprocess/agent_proc.py; its knobs (AGENT_SLEEP, …) as keyword arguments."""
    proc = procs.start("agent", [sys.executable, str(BASE_DIR / "tests" / "multiprocess" / "agent_proc.py")],
                       _agent_env(port, token, env))
    if ready:
        wait_registered(proc)
    return proc


def start_example_agent(procs: ProcGroup, port: int, token: str, **env: str) -> Proc:
    """The example, started with the one command docs/agents.md gives."""
    proc = procs.start("example-agent", [sys.executable, str(BASE_DIR / "examples" / "agents" / "hashtags.py")],
                       _agent_env(port, token, env))
    wait_registered(proc)
    return proc


def wait_registered(proc: Proc, *, timeout: float = 30) -> None:
    wait_for(lambda: " registered at " in proc.logs(20000) or not proc.alive, timeout=timeout,
             what=f"{proc.name} to register")
    if not proc.alive:
        raise RuntimeError(f"{proc.name} died before registering:\n{proc.logs()}")


def stats(proc: Proc) -> dict[str, int]:
    """What the test agent printed when it stopped (`agent stats {...}`)."""
    match = re.search(r"^agent stats (\{.*\})$", proc.logs(100000), re.MULTILINE)
    assert match, f"{proc.name} printed no stats:\n{proc.logs()}"
    return dict(json.loads(match.group(1)))


def calls(path: Path) -> list[dict[str, Any]]:
    """The test agent's call log (AGENT_CALL_LOG)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def hashtags_envelope(**changes: Any) -> dict[str, Any]:
    """examples/envelopes/hashtags.json, with top-level keys replaced."""
    envelope = load_envelope("hashtags")
    envelope.update(changes)
    return envelope
