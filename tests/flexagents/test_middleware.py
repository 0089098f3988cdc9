from __future__ import annotations

import pytest
from django.test import AsyncClient, Client, override_settings

pytestmark = [pytest.mark.urls("tests.flexagents.urls"), pytest.mark.django_db]


def test_it_answers_json_404_for_an_unknown_api_path() -> None:
    response = Client().get("/api/no/such/thing")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"code": "not_found", "message": "Not found.", "details": {}}


@override_settings(DEBUG=True)
def test_it_answers_json_404_even_with_debug_on() -> None:
    response = Client().get("/api/no/such/thing")
    assert response.json()["code"] == "not_found"


def test_it_leaves_404_pages_outside_the_api_alone() -> None:
    response = Client().get("/no/such/page")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_it_answers_json_500_without_a_traceback() -> None:
    response = Client(raise_request_exception=False).get("/api/test/boom")
    assert response.status_code == 500
    assert response.json() == {"code": "internal_error", "message": "The server failed to process the request.",
                               "details": {}}
    assert b"hunter2" not in response.content and b"Traceback" not in response.content


def test_it_answers_json_405_keeping_the_allow_header() -> None:
    response = Client().post("/api/health")
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"
    assert response["Allow"] == "GET"


def test_it_answers_json_403_for_a_csrf_failure_under_the_api() -> None:
    response = Client(enforce_csrf_checks=True).post("/api/test/form", data={"a": "1"})
    assert response.status_code == 403
    body = response.json()
    assert body["code"] == "permission_denied"
    assert body["details"] == {"reason": "csrf"}


def test_it_leaves_csrf_failures_outside_the_api_to_django() -> None:
    response = Client(enforce_csrf_checks=True).post("/test/form", data={"a": "1"})
    assert response.status_code == 403
    assert response["Content-Type"].startswith("text/html")


def test_it_answers_413_before_reading_an_oversized_body() -> None:
    response = Client().generic("POST", "/api/test/form", data=b"x" * (1024 * 1024 + 1),
                                content_type="application/octet-stream")
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


@override_settings(FLEX_ENABLED=False)
@pytest.mark.parametrize("path", ["/api/v1/flex/anything", "/api/v1/flex/runs", "/api/hitl/pending"])
def test_it_answers_flex_disabled_when_the_flag_is_off(path: str) -> None:
    response = Client().get(path)
    assert response.status_code == 404
    assert response.json()["code"] == "flex_disabled"


@override_settings(FLEX_ENABLED=False)
def test_it_keeps_health_up_when_the_flag_is_off() -> None:
    assert Client().get("/api/health").status_code == 200


def test_it_passes_flex_paths_through_when_the_flag_is_on() -> None:
    assert Client().get("/api/v1/flex/anything").json()["code"] == "not_found"


@pytest.mark.asyncio
async def test_it_answers_json_404_under_asgi() -> None:
    response = await AsyncClient().get("/api/no/such/thing")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


@pytest.mark.asyncio
@override_settings(FLEX_ENABLED=False)
async def test_it_answers_flex_disabled_under_asgi() -> None:
    response = await AsyncClient().get("/api/v1/flex/runs")
    assert response.json()["code"] == "flex_disabled"
