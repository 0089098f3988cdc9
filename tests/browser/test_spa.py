"""The reference SPA (examples/spa/) in a real browser, served from a second
origin by its own static file server, against a real daphne that allows
that origin (FLEX_CORS_ALLOWED_ORIGINS) — and from an origin it does not."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from django.conf import settings
from rest_framework.authtoken.models import Token

from runs.models import AuditEntry, Run, RunStatus, StreamTicket
from tests.browser.conftest import screenshot
from tests.multiprocess.procs import ProcGroup, child_database_url, free_port, wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None,
                       reason="the SPA loads the TypeScript client, built with node (scripts/build-spa.sh)"),
]

TIMEOUT_MS = 20_000
EXAMPLES = settings.BASE_DIR / "examples"


@pytest.fixture(scope="module")
def spa_built() -> None:
    subprocess.run(["bash", str(settings.BASE_DIR / "scripts" / "build-spa.sh")], check=True, timeout=300)


@pytest.fixture
def stack(transactional_db: None, spa_built: None, request: Any) -> Iterator[dict[str, str]]:
    """Two static servers (the allowed SPA origin, another one) and a daphne
    with one embedded worker that allows only the first."""
    spa_port, other_port = free_port(), free_port()
    spa, other = f"http://127.0.0.1:{spa_port}", f"http://127.0.0.1:{other_port}"
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
        "LOG_LEVEL": "INFO",
        "FLEX_CORS_ALLOWED_ORIGINS": spa,
    })
    if settings.REDIS_URL:
        env["REDIS_URL"] = settings.REDIS_URL
    group = ProcGroup(env)
    for port in (spa_port, other_port):
        group.start("static", [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                               "--directory", str(EXAMPLES)])
    _, api_port = group.daphne()
    api = f"http://127.0.0.1:{api_port}"
    wait_for(lambda: httpx.get(f"{api}/api/health", timeout=2).status_code == 200, timeout=20, what="daphne")
    for origin in (spa, other):
        wait_for(lambda o=origin: _up(f"{o}/spa/"), timeout=20, what=f"static server {origin}")
    yield {"api": api, "spa": spa, "other": other, "logs": group}
    group.stop_all()
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        print(group.dump_logs())
    group.remove_logs()


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def open_spa(chromium: Any, origin: str, api: str, token: str) -> tuple[Any, list[str]]:
    page = chromium().new_context(viewport={"width": 1280, "height": 900}).new_page()
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    page.goto(f"{origin}/spa/")
    page.fill("#api-base", api)
    page.fill("#token", token)
    return page, console


def load_example(page: Any, name: str) -> None:
    page.select_option("#example", name)
    page.click("#load-example")
    page.wait_for_function("document.querySelector('#envelope').value.includes('outputContract')",
                           timeout=TIMEOUT_MS)


def test_the_spa_on_another_origin_submits_gets_the_question_live_answers_it_and_sees_the_output(
        stack: dict[str, Any], client_user: Any, orm: Any, chromium: Any) -> None:
    token = Token.objects.create(user=client_user).key
    page, _ = open_spa(chromium, stack["spa"], stack["api"], token)

    load_example(page, "clarify-audience")
    page.click("#submit")

    # The question arrives on the submit stream (POST run.stream, read by fetch).
    page.wait_for_selector("#hitl:not([hidden])", timeout=TIMEOUT_MS)
    assert page.inner_text("#hitl-question") == "Who is the target audience for this post?"
    assert page.inner_text("#run-status") == "awaiting_hitl"
    assert page.locator('#plan g.plan-node[data-node-id="strategist"]').get_attribute("data-status") == "awaiting_hitl"
    assert page.locator("#timeline li.ev-plan_generated").count() == 1
    page.wait_for_selector("#live-state:text('live')", timeout=TIMEOUT_MS)
    screenshot(page, "spa-clarify-question")

    page.fill("#hitl-answer", "Chief risk officers at regional banks")
    page.click("#send-answer")

    # The rest arrives on the EventSource opened with a stream ticket.
    page.wait_for_selector("#timeline li.ev-complete", timeout=TIMEOUT_MS)
    assert page.inner_text("#run-status") == "completed"
    assert page.locator("#hitl").is_hidden()
    assert "Chief risk officers at regional banks" in page.inner_text("#output")
    assert page.locator("#timeline li.ev-hitl_resolved").count() == 1
    assert page.locator('#plan g.plan-node[data-node-id="copywriter"]').get_attribute("data-status") == "completed"
    assert page.inner_text("#error") == "" or page.locator("#error").is_hidden()
    screenshot(page, "spa-clarify-complete")

    run_id = page.inner_text("#run-id")
    assert orm(lambda: Run.objects.get(pk=run_id).status) == RunStatus.COMPLETED
    assert orm(lambda: AuditEntry.objects.filter(run_id=run_id, action="hitl_resumed",
                                                 actor=client_user).count()) == 1
    tickets = orm(lambda: list(StreamTicket.objects.filter(run_id=run_id).values_list("used_at", flat=True)))
    assert tickets and all(used is not None for used in tickets)
    # The server's log lines (JSON, through flexagents.logging) name the
    # tickets' use but never a ticket.
    daphne = next(p for p in stack["logs"].procs if p.name.startswith("daphne"))
    lines = [line for line in daphne.log_path.read_text(errors="replace").splitlines() if line.startswith("{")]
    assert any("stream ticket redeemed" in line for line in lines)
    assert [line for line in lines if re.search(r"st_[A-Za-z0-9_-]{20,}", line)] == []


def test_the_spa_shows_what_an_approval_is_about_and_approves_it(
        stack: dict[str, Any], client_user: Any, orm: Any, chromium: Any) -> None:
    token = Token.objects.create(user=client_user).key
    page, _ = open_spa(chromium, stack["spa"], stack["api"], token)

    load_example(page, "approval-required")
    page.click("#submit")

    page.wait_for_selector("#hitl:not([hidden])", timeout=TIMEOUT_MS)
    assert page.inner_text("#hitl-title") == "Approval needed"
    assert page.locator("#hitl-review-box").is_visible()
    assert "Akkuro" in page.inner_text("#hitl-review")  # the draft copy under review
    page.wait_for_selector("#live-state:text('live')", timeout=TIMEOUT_MS)
    page.click("#approve")

    page.wait_for_selector("#timeline li.ev-complete", timeout=TIMEOUT_MS)
    assert page.inner_text("#run-status") == "completed"
    assert "resolved: approved" in page.inner_text("#timeline")
    run_id = page.inner_text("#run-id")
    assert orm(lambda: Run.objects.get(pk=run_id).status) == RunStatus.COMPLETED


def test_the_spa_on_an_origin_not_allowed_fails_with_a_cors_error_and_creates_nothing(
        stack: dict[str, Any], client_user: Any, orm: Any, chromium: Any) -> None:
    token = Token.objects.create(user=client_user).key
    page, console = open_spa(chromium, stack["other"], stack["api"], token)

    load_example(page, "clarify-audience")
    page.click("#submit")

    page.wait_for_selector("#error:not([hidden])", timeout=TIMEOUT_MS)
    assert "CORS" in page.inner_text("#error")
    assert any("blocked by CORS policy" in line for line in console), console
    assert page.inner_text("#run-id") == ""
    assert orm(lambda: Run.objects.count()) == 0
