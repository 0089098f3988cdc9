from __future__ import annotations

import pytest
from django.test import Client, override_settings

from flexagents import views

pytestmark = [pytest.mark.urls("tests.flexagents.urls"), pytest.mark.django_db]


@override_settings(REDIS_URL=None)
def test_it_reports_ok_without_authentication() -> None:
    response = Client().get("/api/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"] == "ok"
    assert body["redis"] == "disabled"
    assert body["version"] == views.app_version()
    assert "no-cache" in response["Cache-Control"]


@override_settings(REDIS_URL="redis://127.0.0.1:1/0")  # nothing listens on port 1
def test_it_reports_redis_down_but_stays_up() -> None:
    response = Client().get("/api/health")
    assert response.status_code == 200
    assert response.json()["redis"] == "down"


def test_it_answers_503_when_the_database_is_down(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(views, "_database_ok", lambda: False)
    response = Client().get("/api/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert body["database"] == "down"
    assert body["code"] == "server_busy"
    assert response["Retry-After"] == "5"


@pytest.mark.parametrize("method", ["post", "put", "delete", "patch"])
def test_another_method_is_a_json_405_not_a_csrf_refusal(method: str) -> None:
    response = getattr(Client(enforce_csrf_checks=True), method)("/api/health")
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"
    assert response["Allow"] == "GET"
