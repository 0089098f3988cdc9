"""Backpressure by default: past the queued-run caps, per user and in all, a
submission is refused with 503 `server_busy` and `Retry-After`, and nothing
is written; one client's burst leaves room for the others."""
from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings as django_settings

from runs.models import Run, RunStatus
from tests.conftest import load_envelope

pytestmark = pytest.mark.django_db

RUNS = "/api/v1/flex/runs"


def test_the_default_caps_are_small_enough_for_a_small_deployment():
    assert django_settings.FLEX_MAX_QUEUED_RUNS_PER_USER <= 50
    assert django_settings.FLEX_MAX_QUEUED_RUNS <= 500


def submit(api: Any) -> Any:
    return api.post(RUNS, load_envelope("linkedin-variants"), format="json")


def test_a_burst_past_the_per_user_cap_is_refused_and_other_users_still_submit(
        settings, api_for, client_user, other_client, drain):
    settings.FLEX_MAX_QUEUED_RUNS_PER_USER = 3
    settings.FLEX_MAX_QUEUED_RUNS = 5
    burst = [submit(api_for(client_user)) for _ in range(10)]

    assert [r.status_code for r in burst] == [202] * 3 + [503] * 7
    refused = burst[-1]
    assert refused.json()["code"] == "server_busy"
    assert int(refused["Retry-After"]) > 0
    assert Run.objects.filter(created_by=client_user).count() == 3

    # Another client has their own allowance, up to the server's cap.
    theirs = [submit(api_for(other_client)) for _ in range(3)]
    assert [r.status_code for r in theirs] == [202, 202, 503]
    assert theirs[-1].json()["details"]["scope"] == "server"
    assert Run.objects.filter(status=RunStatus.QUEUED).count() == 5

    # Once the queue drains, submissions are accepted again.
    drain()
    assert submit(api_for(client_user)).status_code == 202
