"""`GET /api/ready` in process: what a probe sees with no worker running."""
from __future__ import annotations

import pytest
from django.test import Client, override_settings

pytestmark = pytest.mark.django_db


@override_settings(REDIS_URL=None)
@pytest.mark.parametrize("accept", ["*/*", "text/plain", "application/json"])
def test_it_is_not_ready_without_a_worker_whatever_the_probe_accepts(accept):
    response = Client().get("/api/ready", HTTP_ACCEPT=accept)
    assert response.status_code == 503
    body = response.json()
    assert body["code"] == "not_ready"
    assert body["details"]["failed"] == ["workers"]
    assert body["details"]["checks"]["database"] == "ok"
    assert body["details"]["checks"]["redis"] == "disabled"


@override_settings(REDIS_URL=None)
def test_it_counts_a_worker_that_holds_a_live_lease_as_alive(client_user, api_for):
    # A worker busy in a long node does not return to its loop, but renews its lease.
    from datetime import timedelta

    from django.utils import timezone

    from runs.models import Run
    from tests.conftest import load_envelope

    response = api_for(client_user).post("/api/v1/flex/runs", load_envelope("linkedin-variants"), format="json")
    Run.objects.filter(pk=response.json()["runId"]).update(
        lease_owner="worker:busy", lease_expires_at=timezone.now() + timedelta(seconds=30))
    ready = Client().get("/api/ready")
    assert ready.status_code == 200, ready.content
    assert ready.json()["checks"]["workers"]["fresh"] == 1
