"""Fixtures for tests that start real processes (daphne, flex_worker, redis)
against the test database. See procs.py."""
from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.db import connection

from tests.multiprocess import capabilities
from tests.multiprocess.procs import child_database_url, ProcGroup

LEASE_SECONDS = 1.5
SWEEP_SECONDS = 0.2


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


@pytest.fixture(scope="session")
def catalog_path(tmp_path_factory: Any) -> Path:
    return capabilities.write_catalog(tmp_path_factory.mktemp("catalog") / "facets.json")


@pytest.fixture
def child_env(catalog_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({
        "DATABASE_URL": child_database_url(),
        "DJANGO_SETTINGS_MODULE": "flexagents.settings",
        "FLEX_TESTING": "1",
        "PYTHONUNBUFFERED": "1",
        "SECRET_KEY": "multiprocess-tests",
        "FLEX_LEASE_SECONDS": str(LEASE_SECONDS),
        "FLEX_TASK_LEASE_SECONDS": str(LEASE_SECONDS),  # tests/multiprocess/agents.py: TASK_LEASE_SECONDS
        "FLEX_SWEEP_SECONDS": str(SWEEP_SECONDS),
        "FLEX_IDLE_POLL_SECONDS": "0.05",
        "FLEX_EMBEDDED_WORKERS": "0",
        "FLEX_EXTRA_CAPABILITIES": ",".join(capabilities.CAPABILITY_PATHS),
        "FLEX_FACET_CATALOG": str(catalog_path),
        "LOG_LEVEL": "WARNING",
    })
    if settings.REDIS_URL:
        env["REDIS_URL"] = settings.REDIS_URL
    return env


@pytest.fixture
def procs(request: Any, transactional_db: None, child_env: dict[str, str]) -> Iterator[ProcGroup]:
    """The test's processes; stopped before the database is flushed."""
    group = ProcGroup(child_env)
    yield group
    group.stop_all()
    failed = any(getattr(getattr(request.node, f"rep_{w}", None), "failed", False) for w in ("setup", "call"))
    if failed:
        print(group.dump_logs())
    group.remove_logs()


@pytest.fixture
def token(transactional_db: None, django_user_model: Any) -> str:
    from rest_framework.authtoken.models import Token

    user = django_user_model.objects.create_superuser(username="mp-admin", password="pw")
    return Token.objects.create(user=user).key


def sleeper_envelope(*, sleep: float, call_log: str = "", **metadata: Any) -> dict[str, Any]:
    return {
        "objective": "A test node that sleeps",
        "inputs": {"company_information": {"name": "Akkuro"}},
        "policies": {"planner": {"selection": {"forbid": ["qa.ContentReview"]}}},
        "metadata": {"sleepSeconds": sleep, "callLog": call_log, **metadata},
        "outputContract": {"mode": "facets", "facets": ["qa_report"]},
    }


def chain_envelope(*, steps: int, step_sleep: float = 0.0) -> dict[str, Any]:
    """`steps` trivial nodes plus the output node: 2 * steps + 6 events."""
    return {
        "objective": f"A chain of {steps} test nodes",
        "inputs": {"company_information": {"name": "Akkuro"}},
        "constraints": {"maxNodes": 200},
        "metadata": {"stepSleepSeconds": step_sleep},
        "outputContract": {"mode": "facets", "facets": [capabilities.chain_facet(steps)]},
    }


def chain_event_count(steps: int) -> int:
    return 2 * steps + 6


def submit(port: int, token: str, envelope: dict[str, Any]) -> str:
    response = httpx.post(f"http://127.0.0.1:{port}/api/v1/flex/runs", json=envelope,
                          headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert response.status_code == 202, response.text
    return response.json()["runId"]


def events_json(port: int, token: str, run_id: str) -> list[dict[str, Any]]:
    """Every event of a run through the HTTP events API (follows `next`)."""
    url: str | None = f"http://127.0.0.1:{port}/api/v1/flex/runs/{run_id}/events?limit=1000"
    events: list[dict[str, Any]] = []
    while url:
        response = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert response.status_code == 200, response.text
        body = response.json()
        events += body["events"]
        url = body["next"]
    return events


def wait_run_status(run_id: str, statuses: tuple[str, ...], timeout: float) -> str:
    from runs.models import Run

    deadline = time.monotonic() + timeout
    while True:
        status = Run.objects.filter(pk=run_id).values_list("status", flat=True).get()
        if status in statuses:
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} is {status}, not {statuses}, after {timeout}s")
        time.sleep(0.05)


class SSEClient:
    """A raw SSE reader (httpx, stream=True) that records every frame."""

    def __init__(self, port: int, token: str, run_id: str, *, last_event_id: str | None = None) -> None:
        self.url = f"http://127.0.0.1:{port}/api/v1/flex/runs/{run_id}/stream"
        self.headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        if last_event_id:
            self.headers["Last-Event-ID"] = last_event_id
        self.frames: list[dict[str, Any]] = []  # {"id", "event", "data", "at"}

    def read(self, *, until: Any = None, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Read frames until the stream ends or `until(frames)` is true (then disconnect)."""
        with httpx.Client(timeout=httpx.Timeout(timeout, connect=10)) as client:
            with client.stream("GET", self.url, headers=self.headers) as response:
                assert response.status_code == 200, response.read()
                frame: dict[str, Any] = {}
                for line in response.iter_lines():
                    if line == "":
                        if "data" in frame:
                            frame["at"] = time.monotonic()
                            frame["data"] = json.loads(frame["data"])
                            self.frames.append(frame)
                            if until is not None and until(self.frames):
                                return self.frames
                        frame = {}
                        continue
                    if line.startswith(":"):
                        continue
                    key, _, value = line.partition(":")
                    frame[key] = value[1:] if value.startswith(" ") else value
        return self.frames


def assert_contiguous(frames_or_events: list[dict[str, Any]], *, start: int = 1) -> None:
    seqs = [f["data"]["seq"] if "data" in f else f["seq"] for f in frames_or_events]
    assert seqs == list(range(start, start + len(seqs))), seqs
