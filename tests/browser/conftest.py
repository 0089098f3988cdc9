"""Browser tests: Playwright (from PyPI) driving Debian's Chromium against a
real daphne serving the app, with a worker thread inside it, on the test
database (STACK.md, "Testing SSE and the browser").

Playwright's sync API runs an event loop in the calling thread, so Django's
ORM refuses to run there while a browser is open: tests set their data up
before opening the browser, and use `orm()` (another thread) afterwards.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.db import connections

from tests.multiprocess.procs import child_database_url, ProcGroup, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOTS = Path(settings.BASE_DIR) / "artifacts" / "screenshots"


def pytest_collection_modifyitems(items: list[Any]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).parent == here:
            item.add_marker(pytest.mark.browser)
            if not os.access(CHROMIUM, os.X_OK):
                item.add_marker(pytest.mark.skip(reason=f"{CHROMIUM} is missing: install Debian's chromium "
                                                        "(scripts/ensure-browser.sh); never `playwright install`"))


@pytest.fixture
def server(transactional_db: None, request: Any) -> Iterator[str]:
    """A real daphne with one embedded worker on the test database; its base URL."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({
        "DATABASE_URL": child_database_url(),
        "DJANGO_SETTINGS_MODULE": "flexagents.settings",
        "FLEX_TESTING": "1",
        "PYTHONUNBUFFERED": "1",
        "FLEX_EMBEDDED_WORKERS": "1",
        "FLEX_IDLE_POLL_SECONDS": "0.1",
        "FLEX_SSE_POLL_SECONDS": "0.1",
        "FLEX_SSE_KEEPALIVE_SECONDS": "2",
        "LOG_LEVEL": "WARNING",
    })
    # `@pytest.mark.parametrize("server", [{"FLEX_ENABLED": "0"}], indirect=True)` sets more.
    env.update(getattr(request, "param", None) or {})
    if settings.REDIS_URL:
        env["REDIS_URL"] = settings.REDIS_URL
    group = ProcGroup(env)
    proc, port = group.daphne()
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(f"{base}/api/health", timeout=2).status_code == 200, timeout=20, what="daphne")
    yield base
    group.stop_all()
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        print(group.dump_logs())
    group.remove_logs()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def orm() -> Iterator[Callable[..., Any]]:
    """Run ORM code in a thread of its own (the test thread hosts Playwright's loop)."""
    pool = ThreadPoolExecutor(max_workers=1)

    def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return pool.submit(fn, *args, **kwargs).result(timeout=60)

    yield call
    pool.submit(connections.close_all).result(timeout=10)
    pool.shutdown()


@pytest.fixture
def chromium() -> Iterator[Callable[[], Any]]:
    """Opens the browser on demand (after the test's ORM setup); closes it at the end."""
    from playwright.sync_api import sync_playwright

    state: dict[str, Any] = {}

    def open_browser() -> Any:
        state["pw"] = sync_playwright().start()
        state["browser"] = state["pw"].chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        return state["browser"]

    yield open_browser
    if "browser" in state:
        state["browser"].close()
    if "pw" in state:
        state["pw"].stop()


def screenshot(page: Any, name: str) -> Path:
    """Saved under artifacts/screenshots/ (CI keeps that folder)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def login(page: Any, base: str, username: str, *, admin: bool = True, password: str = "pw") -> None:
    page.goto(f"{base}/admin/login/" if admin else f"{base}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("[type=submit]")
    page.wait_for_load_state()


def wait_for_person(run: Any, drain: Any) -> Any:
    """Advance `run` in this process until it waits for a person (before the
    browser opens: the ORM may not run beside Playwright's loop). The
    server's embedded worker may claim it before drain() does; then that
    worker brings it to the person."""
    import time

    from runs.models import RunStatus

    deadline = time.monotonic() + 30
    while True:
        drain()
        run.refresh_from_db()
        if run.status == RunStatus.AWAITING_HITL or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert run.status == RunStatus.AWAITING_HITL, run.status
    return run
