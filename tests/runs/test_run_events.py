"""GET /runs/{id}/stream (replay + follow, Last-Event-ID) and GET /runs/{id}/events."""
from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient
from rest_framework.authtoken.models import Token

from runs.models import Run, RunEvent
from tests.conftest import load_envelope
from tests.sse import parse_sse, streamed, types


def submit(api, name="linkedin-variants"):
    response = api.post("/api/v1/flex/runs", load_envelope(name), format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "queued" and body["streamUrl"].endswith(f"/api/v1/flex/runs/{body['runId']}/stream")
    return body["runId"]


# Streams read on the shared executor with their own connections: they see
# committed data only, hence transaction=True where a stream is read.
@pytest.mark.django_db(transaction=True)
def test_it_replays_every_event_from_the_first_then_ends_at_complete(api_for, client_user, drain):
    api = api_for(client_user)
    run_id = submit(api)
    drain()

    frames = streamed(api.get(f"/api/v1/flex/runs/{run_id}/stream"))

    assert [f["data"]["seq"] for f in frames] == list(range(1, RunEvent.objects.filter(run_id=run_id).count() + 1))
    assert types(frames)[-1] == "complete"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("how", ["header", "query"])
def test_it_replays_exactly_the_events_after_last_event_id(api_for, client_user, drain, how):
    api = api_for(client_user)
    run_id = submit(api)
    drain()
    url = f"/api/v1/flex/runs/{run_id}/stream"

    if how == "header":
        response = api.get(url, HTTP_LAST_EVENT_ID=f"{run_id}:4")
    else:
        response = api.get(url, {"lastEventId": f"{run_id}:4"})

    assert [f["data"]["seq"] for f in streamed(response)] == list(range(5, 11))


@pytest.mark.django_db
@pytest.mark.parametrize("bad", ["run_other:3", "abc", "1:2:3", "-1", "99"])
def test_it_refuses_a_last_event_id_that_is_not_of_this_run(api_for, client_user, drain, bad):
    api = api_for(client_user)
    run_id = submit(api)
    drain()

    response = api.get(f"/api/v1/flex/runs/{run_id}/stream", HTTP_LAST_EVENT_ID=bad)

    assert response.status_code == 422
    assert response.json()["code"] == "validation_failed"


@pytest.mark.django_db
def test_it_hides_another_clients_run_and_its_stream(api_for, client_user, other_client, drain):
    run_id = submit(api_for(client_user))
    other = api_for(other_client)

    for path in ("/stream", "/events"):
        response = other.get(f"/api/v1/flex/runs/{run_id}{path}")
        assert response.status_code == 404, path
        assert response.json()["code"] == "run_not_found"


@pytest.mark.django_db
def test_it_requires_authentication(api_for, client_user):
    run_id = submit(api_for(client_user))
    anonymous = api_for(None)

    assert anonymous.get(f"/api/v1/flex/runs/{run_id}/stream").status_code == 401
    assert anonymous.post("/api/v1/flex/run.stream", {}, format="json").json()["code"] == "not_authenticated"


@pytest.mark.django_db
def test_support_may_not_submit_a_run(api_for, support):
    response = api_for(support).post("/api/v1/flex/runs", load_envelope("linkedin-variants"), format="json")

    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"
    assert Run.objects.count() == 0


@pytest.mark.django_db
def test_it_pages_events_as_json(api_for, client_user, drain):
    api = api_for(client_user)
    run_id = submit(api)
    drain()

    first = api.get(f"/api/v1/flex/runs/{run_id}/events", {"limit": 4}).json()
    assert [e["seq"] for e in first["events"]] == [1, 2, 3, 4]
    assert first["next"].endswith(f"/api/v1/flex/runs/{run_id}/events?after=4&limit=4")
    second = api.get(f"/api/v1/flex/runs/{run_id}/events", {"after": 8, "limit": 4}).json()
    assert [e["seq"] for e in second["events"]] == [9, 10]
    assert second["next"] is None
    assert second["events"][-1]["type"] == "complete"
    assert {"type", "id", "seq", "timestamp", "runId", "planVersion", "payload"} <= set(second["events"][-1])


@pytest.mark.django_db
@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 5000}, {"after": "x"}])
def test_it_refuses_bad_paging_parameters(api_for, client_user, params):
    api = api_for(client_user)
    run_id = submit(api)

    response = api.get(f"/api/v1/flex/runs/{run_id}/events", params)

    assert response.status_code == 422 and response.json()["code"] == "validation_failed"


@pytest.fixture
def workers(settings):
    from runs.engine.worker import start_embedded_workers, stop_embedded_workers

    settings.FLEX_IDLE_POLL_SECONDS = 0.05
    start_embedded_workers(1)
    yield
    stop_embedded_workers()


async def read_frames(client: AsyncClient, url: str, headers: dict, until_seq: int | None) -> list[dict]:
    """Follow a stream and stop reading (disconnect) after `until_seq`."""
    response = await client.get(url, headers=headers)
    assert response.status_code == 200
    buffer, frames = b"", []
    iterator = response.streaming_content.__aiter__()
    try:
        while True:
            chunk = await iterator.__anext__()
            buffer += chunk if isinstance(chunk, bytes) else chunk.encode()
            *complete, buffer = buffer.split(b"\n\n")
            for block in complete:
                frames.extend(parse_sse(block + b"\n\n"))
            if frames and (until_seq is not None and frames[-1]["data"]["seq"] >= until_seq
                           or frames[-1]["event"] == "complete"):
                return frames
    except StopAsyncIteration:
        return frames
    finally:
        await iterator.aclose()


@pytest.mark.django_db(transaction=True)
def test_a_client_that_reconnects_mid_run_with_last_event_id_misses_nothing(api_for, client_user, workers):
    token = Token.objects.create(user=client_user).key
    api = api_for(client_user)
    run_id = submit(api, "facets-output")
    client = AsyncClient()
    url = f"/api/v1/flex/runs/{run_id}/stream"
    auth = {"Authorization": f"Bearer {token}"}

    first = async_to_sync(read_frames)(client, url, auth, 5)
    last_id = first[-1]["id"]
    rest = async_to_sync(read_frames)(client, url, {**auth, "Last-Event-ID": last_id}, None)

    seqs = [f["data"]["seq"] for f in first + rest]
    assert seqs == list(range(1, len(seqs) + 1))
    assert (first + rest)[-1]["event"] == "complete"
    assert len(seqs) == RunEvent.objects.filter(run_id=run_id).count()
