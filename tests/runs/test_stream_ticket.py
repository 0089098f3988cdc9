"""POST /api/v1/flex/runs/{runId}/stream-ticket and GET …/stream?ticket=
(API.md, "Stream tickets"): valid once, bound to the user and the run,
60 s, stored hashed, never in a log line."""
from __future__ import annotations

import io
import json
import logging
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework.authtoken.models import Token

from flexagents.logging import JsonFormatter
from runs.models import StreamTicket
from tests.conftest import load_envelope
from tests.sse import parse_sse

# The streams are read on the shared executor with their own connections:
# they see committed data only.
pytestmark = pytest.mark.django_db(transaction=True)


def completed_run(api, drain, name="linkedin-variants"):
    response = api.post("/api/v1/flex/runs", load_envelope(name), format="json")
    assert response.status_code == 202, response.content
    drain()
    return response.json()["runId"]


def ticket_for(api, run_id):
    response = api.post(f"/api/v1/flex/runs/{run_id}/stream-ticket")
    assert response.status_code == 201, response.content
    return response.json()


def open_stream(url, headers=None):
    """GET the stream as a browser's EventSource would: no Authorization.
    Returns (status, frames or error body)."""

    async def go():
        response = await AsyncClient().get(url, headers=headers or {})
        if response.status_code != 200:
            return response.status_code, json.loads(response.content)
        body = b"".join([chunk async for chunk in response.streaming_content])
        return 200, parse_sse(body)

    return async_to_sync(go)()


def path_of(stream_url):
    parts = urlsplit(stream_url)
    return f"{parts.path}?{parts.query}"


def test_a_ticket_opens_the_run_stream_once(api_for, client_user, drain):
    api = api_for(client_user)
    run_id = completed_run(api, drain)

    body = ticket_for(api, run_id)

    assert set(body) == {"ticket", "expiresAt", "streamUrl"}
    lifetime = parse_datetime(body["expiresAt"]) - timezone.now()
    assert timedelta(seconds=55) < lifetime <= timedelta(seconds=60)
    parts = urlsplit(body["streamUrl"])
    assert parts.path == f"/api/v1/flex/runs/{run_id}/stream"
    assert parse_qs(parts.query) == {"ticket": [body["ticket"]]}

    status, frames = open_stream(path_of(body["streamUrl"]))
    assert status == 200
    assert [f["data"]["seq"] for f in frames] == list(range(1, len(frames) + 1))
    assert frames[-1]["event"] == "complete"

    status, error = open_stream(path_of(body["streamUrl"]))
    assert status == 401 and error["code"] == "not_authenticated"


def test_a_ticket_is_stored_only_as_its_hash(api_for, client_user, drain):
    api = api_for(client_user)
    run_id = completed_run(api, drain)

    ticket = ticket_for(api, run_id)["ticket"]

    row = StreamTicket.objects.get(run_id=run_id)
    stored = [str(v) for v in StreamTicket.objects.filter(pk=row.pk).values_list(
        "digest", "run_id", "user_id", "created_at", "expires_at", "used_at").get()]
    assert not any(ticket in value or ticket[3:] in value for value in stored)
    assert row.user_id == client_user.pk and row.used_at is None


def test_an_expired_ticket_is_refused(api_for, client_user, drain):
    api = api_for(client_user)
    run_id = completed_run(api, drain)
    body = ticket_for(api, run_id)
    # 61 seconds later:
    StreamTicket.objects.filter(run_id=run_id).update(expires_at=timezone.now() - timedelta(seconds=1))

    status, error = open_stream(path_of(body["streamUrl"]))

    assert status == 401 and error["code"] == "not_authenticated"


def test_a_ticket_for_another_run_is_refused(api_for, client_user, drain):
    api = api_for(client_user)
    first, second = completed_run(api, drain), completed_run(api, drain)
    ticket = ticket_for(api, first)["ticket"]

    status, error = open_stream(f"/api/v1/flex/runs/{second}/stream?ticket={ticket}")

    assert status == 401 and error["code"] == "not_authenticated"
    # Refused, not spent: it still opens the run it was issued for.
    assert open_stream(f"/api/v1/flex/runs/{first}/stream?ticket={ticket}")[0] == 200


def test_another_users_ticket_is_refused(api_for, client_user, operator, drain):
    """The operator may view clara's run, but may not use clara's ticket
    under their own credentials."""
    run_id = completed_run(api_for(client_user), drain)
    body = ticket_for(api_for(client_user), run_id)
    operator_token = Token.objects.create(user=operator).key

    status, error = open_stream(path_of(body["streamUrl"]), {"Authorization": f"Bearer {operator_token}"})

    assert status == 401 and error["code"] == "not_authenticated"
    assert StreamTicket.objects.get(run_id=run_id).used_at is None


def test_another_users_ticket_is_refused_to_a_logged_in_browser(api_for, client_user, support, drain):
    """Support may view every run; a support person's browser session with
    clara's ticket is still refused (an EventSource sends the session cookie
    on its own origin)."""
    run_id = completed_run(api_for(client_user), drain)
    body = ticket_for(api_for(client_user), run_id)

    async def go():
        client = AsyncClient()
        await client.aforce_login(support)
        response = await client.get(path_of(body["streamUrl"]))
        return response.status_code, json.loads(response.content)

    status, error = async_to_sync(go)()

    assert status == 401 and error["code"] == "not_authenticated"
    assert open_stream(path_of(body["streamUrl"]))[0] == 200


@pytest.mark.parametrize("ticket", ["", "st_made-up", "x" * 5000])
def test_an_unknown_ticket_is_refused(api_for, client_user, drain, ticket):
    run_id = completed_run(api_for(client_user), drain)

    status, error = open_stream(f"/api/v1/flex/runs/{run_id}/stream?ticket={ticket}")

    assert status == 401 and error["code"] == "not_authenticated"


def test_only_someone_who_may_view_the_run_gets_a_ticket(api_for, client_user, other_client, drain):
    run_id = completed_run(api_for(client_user), drain)

    foreign = api_for(other_client).post(f"/api/v1/flex/runs/{run_id}/stream-ticket")
    anonymous = api_for(None).post(f"/api/v1/flex/runs/{run_id}/stream-ticket")

    assert foreign.status_code == 404 and foreign.json()["code"] == "run_not_found"
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "not_authenticated"
    assert not StreamTicket.objects.exists()


def test_a_ticket_never_appears_in_a_log_line(api_for, client_user, drain):
    """Every record logged while a ticket is issued, used and reused, plus
    the request line an access log writes, formatted as the server does."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        api = api_for(client_user)
        run_id = completed_run(api, drain)
        body = ticket_for(api, run_id)
        url = path_of(body["streamUrl"])
        assert open_stream(url)[0] == 200
        assert open_stream(url)[0] == 401
        # What an access log writes for these requests (flexagents.redaction
        # masks the parameter in every line that goes through our formatter).
        logging.getLogger("flexagents.access").info('127.0.0.1:5000 - - "GET %s HTTP/1.1" 200 -', url,
                                                    extra={"path": url, "status": 200})
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)

    lines = out.getvalue().splitlines()
    assert any("stream ticket redeemed" in line for line in lines)
    assert any("ticket=[redacted]" in line for line in lines)
    leaking = [line for line in lines if body["ticket"] in line or body["ticket"][3:] in line]
    assert leaking == []
