"""The debug view, the history page of a run and its events endpoint show
the same data: one throttle scope (`run_detail`) counts reads of all three,
so the debug view's limit cannot be bypassed through the other two."""
from __future__ import annotations

from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client
from django.urls import reverse

from tests.conftest import load_envelope

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _three_reads_a_minute(settings: Any) -> Any:
    cache.clear()
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK,
                               "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
                                                          "run_detail": "3/min"}}
    yield
    cache.clear()


def test_the_debug_view_history_page_and_events_share_one_budget(api_for, client_user, support, drain):
    api = api_for(client_user)
    run_id = api.post("/api/v1/flex/runs", load_envelope("linkedin-variants"), format="json").json()["runId"]
    drain()
    browser = Client()
    browser.force_login(client_user)
    page_url = reverse("run_pages:detail", args=[run_id])
    assert page_url in browser.get("/runs/").content.decode()

    assert api.get(f"/api/v1/flex/runs/{run_id}").status_code == 200
    assert browser.get(page_url).status_code == 200
    assert api.get(f"/api/v1/flex/runs/{run_id}/events").status_code == 200

    for refused in (api.get(f"/api/v1/flex/runs/{run_id}"), api.get(f"/api/v1/flex/runs/{run_id}/events")):
        assert refused.status_code == 429
        assert refused.json()["code"] == "throttled" and int(refused["Retry-After"]) > 0
    page = browser.get(page_url)
    assert page.status_code == 429 and int(page["Retry-After"]) > 0
    # Another person's budget is their own.
    assert api_for(support).get(f"/api/v1/flex/runs/{run_id}/events").status_code == 200
