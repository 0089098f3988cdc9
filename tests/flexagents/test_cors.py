"""CORS for an SPA on another origin (API.md, "The SPA as a client"):
exactly the contract's headers for an allowed origin, none for another,
on /api/ only, on errors and on SSE streams too."""
from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from django.core.exceptions import ImproperlyConfigured
from django.test import AsyncClient
from rest_framework.authtoken.models import Token

from flexagents.env import env_origins
from tests.conftest import load_envelope

SPA = "http://localhost:5173"
OTHER = "http://evil.example:5173"
ALLOWED_HEADERS = {"authorization", "content-type", "idempotency-key", "last-event-id", "x-correlation-id"}
EXPOSED_HEADERS = {"x-correlation-id", "retry-after", "idempotent-replayed"}


@pytest.fixture(autouse=True)
def spa_allowed(settings):
    settings.CORS_ALLOWED_ORIGINS = [SPA]


def cors_headers(response):
    return {k.lower(): v for k, v in response.headers.items() if k.lower().startswith("access-control-")}


def header_set(value):
    return {part.strip().lower() for part in value.split(",")}


def preflight(client, path, origin, method="POST"):
    return client.options(path, HTTP_ORIGIN=origin, HTTP_ACCESS_CONTROL_REQUEST_METHOD=method,
                          HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization,content-type,idempotency-key")


@pytest.mark.django_db
def test_a_preflight_from_an_allowed_origin_gets_exactly_the_contract_headers(client):
    response = preflight(client, "/api/v1/flex/run.stream", SPA)

    assert response.status_code == 200
    headers = cors_headers(response)
    assert set(headers) == {"access-control-allow-origin", "access-control-allow-credentials",
                            "access-control-allow-headers", "access-control-allow-methods",
                            "access-control-expose-headers", "access-control-max-age"}
    assert headers["access-control-allow-origin"] == SPA
    assert headers["access-control-allow-credentials"] == "true"
    assert header_set(headers["access-control-allow-headers"]) == ALLOWED_HEADERS
    assert header_set(headers["access-control-allow-methods"]) == {"get", "post", "options"}
    assert header_set(headers["access-control-expose-headers"]) == EXPOSED_HEADERS
    assert "origin" in header_set(response["Vary"])


@pytest.mark.django_db
def test_an_actual_response_to_an_allowed_origin_names_it_and_exposes_the_contract_headers(api_for, client_user):
    response = api_for(client_user).get("/api/v1/flex/runs", HTTP_ORIGIN=SPA)

    assert response.status_code == 200
    headers = cors_headers(response)
    assert set(headers) == {"access-control-allow-origin", "access-control-allow-credentials",
                            "access-control-expose-headers"}
    assert headers["access-control-allow-origin"] == SPA
    assert headers["access-control-allow-credentials"] == "true"
    assert header_set(headers["access-control-expose-headers"]) == EXPOSED_HEADERS


@pytest.mark.django_db
def test_errors_carry_the_headers_so_the_spa_can_read_them(client):
    unauthenticated = client.get("/api/v1/flex/runs", HTTP_ORIGIN=SPA)
    unknown = client.get("/api/no/such/thing", HTTP_ORIGIN=SPA)

    for response in (unauthenticated, unknown):
        assert response["Content-Type"] == "application/json"
        assert cors_headers(response)["access-control-allow-origin"] == SPA
    assert unauthenticated.status_code == 401 and unknown.status_code == 404


@pytest.mark.django_db
def test_another_origin_gets_no_cors_header_at_all(client, api_for, client_user):
    refused_preflight = preflight(client, "/api/v1/flex/run.stream", OTHER)
    actual = api_for(client_user).get("/api/v1/flex/runs", HTTP_ORIGIN=OTHER)
    lookalike = api_for(client_user).get("/api/v1/flex/runs", HTTP_ORIGIN=SPA + ".evil.example")

    for response in (refused_preflight, actual, lookalike):
        assert cors_headers(response) == {}


@pytest.mark.django_db
def test_by_default_no_origin_is_allowed(client, settings):
    settings.CORS_ALLOWED_ORIGINS = []

    assert cors_headers(preflight(client, "/api/v1/flex/runs", SPA)) == {}
    assert cors_headers(client.get("/api/health", HTTP_ORIGIN=SPA)) == {}


@pytest.mark.django_db
def test_pages_outside_the_api_get_no_cors_header(client):
    assert cors_headers(client.get("/accounts/login/", HTTP_ORIGIN=SPA)) == {}
    assert cors_headers(client.get("/admin/login/", HTTP_ORIGIN=SPA)) == {}


@pytest.mark.django_db(transaction=True)
def test_sse_responses_carry_the_headers(client_user, drain):
    """Through the ASGI handler, as daphne serves them: the stream of a run
    (GET, with a ticket as an EventSource sends it) and run.stream (POST)."""
    token = Token.objects.create(user=client_user).key
    auth = {"Authorization": f"Bearer {token}"}

    async def go():
        client = AsyncClient()
        posted = await client.post("/api/v1/flex/run.stream", load_envelope("linkedin-variants"),
                                   content_type="application/json", headers={**auth, "Origin": SPA,
                                                                             "Accept": "text/event-stream"})
        chunks = posted.streaming_content.__aiter__()
        try:
            first = await chunks.__anext__()
        finally:
            await chunks.aclose()  # the run goes on without this stream
        return posted, first

    posted, first = async_to_sync(go)()
    assert posted["Content-Type"] == "text/event-stream" and first.startswith(b":")
    assert cors_headers(posted)["access-control-allow-origin"] == SPA
    assert header_set(cors_headers(posted)["access-control-expose-headers"]) == EXPOSED_HEADERS

    drain()
    from runs.models import Run

    run_id = Run.objects.get().id
    from rest_framework.test import APIClient

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    stream_url = api.post(f"/api/v1/flex/runs/{run_id}/stream-ticket", HTTP_ORIGIN=SPA).json()["streamUrl"]

    async def follow(origin):
        response = await AsyncClient().get(stream_url.split("testserver", 1)[1], headers={"Origin": origin})
        async for _ in response.streaming_content:
            pass
        return response

    followed = async_to_sync(follow)(SPA)
    assert followed.status_code == 200 and followed["Content-Type"] == "text/event-stream"
    assert cors_headers(followed)["access-control-allow-origin"] == SPA
    assert cors_headers(followed)["access-control-allow-credentials"] == "true"


@pytest.mark.parametrize("value", ["*", "http://localhost:5173/", "localhost:5173", "http://a.example/path",
                                   "ftp://a.example", "http://*.example.com"])
def test_a_bad_origin_setting_stops_the_server(monkeypatch, value):
    monkeypatch.setenv("FLEX_CORS_ALLOWED_ORIGINS", value)

    with pytest.raises(ImproperlyConfigured, match="FLEX_CORS_ALLOWED_ORIGINS"):
        env_origins("FLEX_CORS_ALLOWED_ORIGINS")


def test_the_origin_setting_is_a_comma_separated_list(monkeypatch):
    monkeypatch.setenv("FLEX_CORS_ALLOWED_ORIGINS", " http://localhost:5173, https://app.example.com ,")

    assert env_origins("FLEX_CORS_ALLOWED_ORIGINS") == ["http://localhost:5173", "https://app.example.com"]
