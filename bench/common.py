"""Helpers shared by the benchmark phases (no Django import at module level:
the orchestrator configures each phase's database through the environment)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORK = Path(os.environ.get("FLEX_BENCH_DIR", "/tmp/flex_bench"))
RESULT_PREFIX = "BENCH_RESULT "


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "flexagents.settings")
    # The benchmarks queue hundreds of runs at once on purpose.
    os.environ.setdefault("FLEX_MAX_QUEUED_RUNS_PER_USER", "100000")
    os.environ.setdefault("FLEX_MAX_QUEUED_RUNS", "100000")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def emit(result: dict[str, Any]) -> None:
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


class Child:
    """A child process with its output in a log file under WORK."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        WORK.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = WORK / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=self._log,
                                      stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()

    def status(self, field: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)


def daphne(name: str, port: int, env: dict[str, str] | None = None) -> Child:
    child = Child(name, [str(Path(sys.executable).parent / "daphne"), "-b", "127.0.0.1", "-p", str(port),
                         "flexagents.asgi:application"], env)
    wait_port(port)
    return child


def worker(name: str, env: dict[str, str] | None = None) -> Child:
    child = Child(name, [sys.executable, "manage.py", "flex_worker"], env)
    deadline = time.monotonic() + 30
    while "flex_worker started" not in child.log_path.read_text(errors="replace"):
        if child.popen.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not start: {child.log_path.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)
    return child


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100.0 * (len(ordered) - 1))))
    return ordered[index]


def bench_user(username: str = "bench") -> Any:
    """The client creating runs ("bench"), or another superuser ("bench-approver"
    answers approvals: a run's creator may not approve its own request)."""
    from django.contrib.auth import get_user_model

    user_model = get_user_model()
    user = user_model.objects.filter(username=username).first()
    return user or user_model.objects.create_superuser(username=username, password="bench")


def bench_token() -> str:
    from rest_framework.authtoken.models import Token

    token, _ = Token.objects.get_or_create(user=bench_user())
    return token.key
