"""A caller's output contract cannot make the pages of its run hang: the
redactor resolves each schema once (memoised, cached by hash, node budget),
so a schema whose `$ref`s fan out under anyOf answers promptly on the debug
view, the history page and the admin page."""
from __future__ import annotations

import json
import signal
from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client
from django.urls import reverse

from tests.conftest import load_envelope

pytestmark = pytest.mark.django_db

PROMPT = 15.0  # seconds; the old walk never finished


def fanning_schema() -> dict[str, Any]:
    """The issue's schema: every level offers three `$ref`s to itself under anyOf."""
    schema = load_envelope("linkedin-variants")["outputContract"]["schema"]
    fan = {"anyOf": [{}, {"$ref": "#/$defs/a"}, {"$ref": "#/$defs/a"}, {"$ref": "#/$defs/a"}]}
    schema["anyOf"] = fan["anyOf"]
    schema["$defs"] = {"a": {**json.loads(json.dumps(fan)),
                             "properties": {"copyVariants": {"$ref": "#/$defs/a"},
                                            "headline": {"$ref": "#/$defs/a"}},
                             "items": {"$ref": "#/$defs/a"}}}
    return schema


class _Stalled(Exception):
    pass


def answered_within(seconds: float, call: Any) -> Any:
    """Run `call`; fail (rather than hang the suite) past `seconds`. The old
    walk was pure Python, so an alarm interrupts it."""
    def stalled(signum: int, frame: Any) -> None:
        raise _Stalled(f"no answer within {seconds}s")

    previous = signal.signal(signal.SIGALRM, stalled)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return call()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(autouse=True)
def _fresh_throttle_counts() -> Any:
    cache.clear()
    yield
    cache.clear()


def test_a_fanning_schema_does_not_stall_the_debug_view_history_page_or_admin_page(
        api_for, client_user, operator, support, drain):
    envelope = load_envelope("linkedin-variants")
    envelope["outputContract"]["schema"] = fanning_schema()
    assert len(json.dumps(envelope["outputContract"]["schema"])) < 2000
    response = api_for(client_user).post("/api/v1/flex/runs", envelope, format="json")
    assert response.status_code == 202, response.json()
    run_id = response.json()["runId"]
    drain()

    for person in (client_user, support, operator):
        debug = answered_within(PROMPT, lambda p=person: api_for(p).get(f"/api/v1/flex/runs/{run_id}"))
        assert debug.status_code == 200
        assert debug.json()["run"]["status"] == "completed"

    owner = Client()
    owner.force_login(client_user)
    listing = owner.get("/runs/").content.decode()
    detail_url = reverse("run_pages:detail", args=[run_id])
    assert detail_url in listing
    page = answered_within(PROMPT, lambda: owner.get(detail_url))
    assert page.status_code == 200

    console = Client()
    console.force_login(operator)
    changelist = console.get(reverse("admin:runs_run_changelist")).content.decode()
    change_url = reverse("admin:runs_run_change", args=[run_id])
    assert run_id in changelist
    admin_page = answered_within(PROMPT, lambda: console.get(change_url))
    assert admin_page.status_code == 200
