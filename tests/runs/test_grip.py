"""The stream view's Pushpin (GRIP) branch (runs/grip.py), through Django's
test client: access is checked before any hold, the replay comes from the
event table, the hold names the run's channel and last seq, and Pushpin's
next link replays from Grip-Last and checks access again. The multi-process
test (tests/multiprocess/test_pushpin.py) runs the same against real Pushpin."""
from __future__ import annotations

import time

import jwt
import pytest

from runs.models import Run, RunEvent
from tests.conftest import load_envelope

pytestmark = pytest.mark.django_db

KEY = "a-test-pushpin-signature-key-of-32-bytes"


@pytest.fixture
def grip(settings):
    settings.FLEX_GRIP_URL = f"http://127.0.0.1:1?key={KEY}"
    settings.FLEX_GRIP_KEY = None


def sig(key: str = KEY) -> str:
    return jwt.encode({"iss": "pushpin", "exp": int(time.time()) + 60}, key, algorithm="HS256")


def stream_url(run_id: str) -> str:
    return f"/api/v1/flex/runs/{run_id}/stream"


@pytest.fixture
def paused_run(api_for, client_user, drain):
    """A run with events that is not terminal: it waits for a person."""
    envelope = load_envelope("linkedin-variants")
    runtime = [{"id": "hold", "trigger": {"kind": "onNodeComplete", "selector": {"nodeId": "copywriter"}},
                "action": {"type": "pause", "reason": "check it"}}]
    envelope["policies"] = {**envelope.get("policies", {}), "runtime": runtime}
    response = api_for(client_user).post("/api/v1/flex/runs", envelope, format="json")
    assert response.status_code == 202, response.content
    run_id = response.json()["runId"]
    drain()
    return Run.objects.get(pk=run_id)


def test_through_pushpin_the_view_replays_then_answers_a_hold_on_the_runs_channel(grip, paused_run, api_for,
                                                                                  client_user):
    run = paused_run
    assert run.status not in ("completed", "failed", "cancelled") and run.last_seq >= 4, (run.status, run.last_seq)
    response = api_for(client_user).get(stream_url(run.id), HTTP_GRIP_SIG=sig(), HTTP_LAST_EVENT_ID=f"{run.id}:2",
                                        HTTP_ACCEPT="text/event-stream")
    assert response.status_code == 200
    assert response["Grip-Hold"] == "stream"
    assert response["Grip-Channel"] == f"events-run-{run.id}; prev-id={run.last_seq}"
    assert response["Grip-Link"].endswith("; rel=next; timeout=60")
    body = response.content.decode()
    ids = [line[4:] for line in body.splitlines() if line.startswith("id: ")]
    assert ids == [f"{run.id}:{seq}" for seq in range(3, run.last_seq + 1)]


def test_through_pushpin_access_is_refused_before_any_hold(grip, paused_run, api_for, outsider):
    response = api_for(outsider).get(stream_url(paused_run.id), HTTP_GRIP_SIG=sig(), HTTP_ACCEPT="text/event-stream")
    assert response.status_code == 404
    assert "Grip-Hold" not in response
    assert api_for(None).get(stream_url(paused_run.id), HTTP_GRIP_SIG=sig()).status_code == 401


def test_a_forged_grip_sig_gets_no_grip_instructions(grip, api_for, client_user, drain):
    response = api_for(client_user).post("/api/v1/flex/runs", load_envelope("linkedin-variants"), format="json")
    run_id = response.json()["runId"]
    drain()
    assert Run.objects.get(pk=run_id).status == "completed"
    forged = api_for(client_user).get(stream_url(run_id), HTTP_GRIP_SIG=sig("another-key-that-is-not-pushpins-own"))
    assert forged.status_code == 200 and "Grip-Hold" not in forged and "Grip-Link" not in forged
    # A finished run through Pushpin: the whole replay, and the response ends (no hold).
    done = api_for(client_user).get(stream_url(run_id), HTTP_GRIP_SIG=sig())
    assert "Grip-Hold" not in done and done.content.decode().count("\nid: ") + 1 >= 2
    assert "event: complete" in done.content.decode()


def test_the_next_link_replays_from_grip_last_and_checks_access_again(grip, paused_run, api_for, client_user,
                                                                      client):
    from guardian.shortcuts import remove_perm

    run = paused_run
    hold = api_for(client_user).get(stream_url(run.id), HTTP_GRIP_SIG=sig(), HTTP_LAST_EVENT_ID=f"{run.id}:{run.last_seq}")
    link = hold["Grip-Link"].split(">")[0][1:]
    assert link.startswith(f"/api/v1/flex/runs/{run.id}/stream/grip/")
    # Pushpin lost frames after seq 1: the next link with Grip-Last replays 2..last and holds again.
    again = client.get(link, HTTP_GRIP_SIG=sig(), HTTP_GRIP_LAST=f"events-run-{run.id}; last-id=1")
    assert again.status_code == 200 and again["Grip-Hold"] == "stream"
    ids = [line[4:] for line in again.content.decode().splitlines() if line.startswith("id: ")]
    assert ids == [f"{run.id}:{seq}" for seq in range(2, run.last_seq + 1)]
    assert again["Grip-Channel"] == f"events-run-{run.id}; prev-id={run.last_seq}"
    # Only Pushpin may follow it, only with a token signed for this run.
    assert client.get(link).status_code == 404
    assert client.get(link.replace(run.id, "run_0000000000000000000000000000"), HTTP_GRIP_SIG=sig()).status_code == 404
    # Access revoked: the stream ends with stream-error forbidden.
    remove_perm("runs.view_run", client_user, run)
    revoked = client.get(link, HTTP_GRIP_SIG=sig(), HTTP_GRIP_LAST=f"events-run-{run.id}; last-id=1")
    assert revoked.status_code == 200 and "Grip-Hold" not in revoked
    assert "event: stream-error" in revoked.content.decode() and "forbidden" in revoked.content.decode()
    assert RunEvent.objects.filter(run_id=run.id).count() == run.last_seq


def test_without_grip_url_a_grip_sig_changes_nothing(settings, paused_run, api_for, client_user):
    settings.FLEX_GRIP_URL = None
    from runs import grip

    assert not grip.enabled()
    # (the ordinary stream of a non-terminal run would not end under the test client: check the branch only)
    from django.test import RequestFactory

    request = RequestFactory().get(stream_url(paused_run.id), HTTP_GRIP_SIG=sig())
    assert grip.proxied(request) is False
