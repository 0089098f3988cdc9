"""The stream view's Pushpin (GRIP) branch (runs/grip.py), through Django's
test client: access is checked before any hold, the replay comes from the
event table, the hold names the run's channel and last seq, and Pushpin's
next link replays from Grip-Last and checks access again. The multi-process
test (tests/multiprocess/test_pushpin.py) runs the same against real Pushpin."""
from __future__ import annotations

import time
from typing import Any

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


def test_each_commit_goes_to_pushpin_as_one_item_and_the_frames_are_the_replay_byte_for_byte(
        grip: None, api_for: Any, client_user: Any, drain: Any, django_capture_on_commit_callbacks: Any) -> None:
    """The frames one transaction commits for a run are one GRIP item (id =
    its last seq, prev-id = the previous item's id), whose content is those
    events' SSE frames, each its own id/event/data frame: exactly the bytes
    the table replay sends."""
    import json

    from django_eventstream.utils import sse_encode_event

    from runs import grip as grip_module
    from runs import notify
    from runs.events import event_id

    bodies: list[dict[str, Any]] = []

    def send(body: bytes) -> int:
        bodies.append(json.loads(body))
        return 200

    publisher = grip_module.Publisher()
    publisher._send = send  # type: ignore[method-assign]
    committed: list[list[notify.Frame]] = []

    def sink(frames: list[notify.Frame]) -> None:
        committed.append(frames)
        publisher(frames)

    notify.register_frame_sink(sink)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            response = api_for(client_user).post("/api/v1/flex/runs", load_envelope("linkedin-variants"),
                                                 format="json")
            assert response.status_code == 202, response.content
            run_id = response.json()["runId"]
            drain()
        assert publisher.flush(timeout=10)
    finally:
        notify._frame_sinks.remove(sink)
        notify._frame_wants.pop(id(sink), None)
    run = Run.objects.get(pk=run_id)
    assert run.status == "completed"
    channel = grip_module.grip_channel(run_id)
    items = [item for body in bodies for item in body["items"] if item["channel"] == channel]
    frames = [item for item in items if "content" in item["formats"]["http-stream"]]
    # Fewer messages than events: the commits of several events went out as one each.
    assert len(frames) < run.last_seq, [item["id"] for item in frames]
    previous = "0"
    for item in frames:
        assert item["prev-id"] == previous
        previous = item["id"]
    assert previous == str(run.last_seq)
    assert items[-1] == {"channel": channel, "id": f"{run.last_seq}-end", "prev-id": str(run.last_seq),
                         "formats": {"http-stream": {"action": "close"}}}
    # Byte for byte what one item per event sent: each event its own frame, in order.
    published = "".join(item["formats"]["http-stream"]["content"] for item in frames)
    one_by_one = "".join(sse_encode_event(type_, data, event_id=event_id(run_id_, seq))
                         for batch in committed for run_id_, seq, type_, data in batch if run_id_ == run_id)
    assert published == one_by_one
    ids = [line[4:] for line in published.splitlines() if line.startswith("id: ")]
    assert ids == [f"{run_id}:{seq}" for seq in range(1, run.last_seq + 1)]
    # The same frames as the replay from the table (PostgreSQL's jsonb may order the keys of a payload differently).
    replay = grip_module.hold_response(run_id=run_id, user=client_user, after=0, first=False).content.decode()

    def parsed(stream: str) -> list[list[object]]:
        return [[json.loads(line[6:]) if line.startswith("data: ") else line for line in frame.splitlines()]
                for frame in stream.split("\n\n") if frame]

    assert parsed(published) == parsed(replay)


def test_frames_of_one_commit_are_chained_per_run_and_split_where_seqs_do_not_follow() -> None:
    from runs import grip as grip_module

    items = grip_module.publish_items([("a", 4, "node_start", "{}"), ("b", 1, "run_started", "{}"),
                                       ("a", 5, "node_complete", "{}"), ("a", 7, "node_start", "{}"),
                                       ("b", 2, "complete", "{}")])
    summary = [(item["channel"], item["id"], item["prev-id"], item["formats"]["http-stream"].get("content", "close")
                .count("id: ")) for item in items]
    assert summary == [("events-run-a", "5", "3", 2), ("events-run-a", "7", "6", 1),
                       ("events-run-b", "2", "0", 2), ("events-run-b", "2-end", "2", 0)]


def test_items_waiting_together_are_merged_per_channel_and_a_large_batch_is_posted_in_parts(monkeypatch: Any) -> None:
    from runs import grip as grip_module

    commits = [[("a", 1, "start", "{}"), ("a", 2, "plan_generated", "{}")], [("b", 1, "start", "{}")],
               [("a", 3, "node_start", "{}")], [("a", 4, "complete", "{}")], [("b", 2, "node_start", "{}")]]
    queued = [item for frames in commits for item in grip_module.publish_items(frames)]
    merged = grip_module.merge_items(queued)
    assert [(item["channel"], item["id"], item["prev-id"]) for item in merged] == [
        ("events-run-a", "4", "0"), ("events-run-b", "2", "0"), ("events-run-a", "4-end", "4")]
    assert merged[0]["formats"]["http-stream"]["content"] == "".join(
        item["formats"]["http-stream"]["content"] for item in queued if item["channel"] == "events-run-a"
        and "content" in item["formats"]["http-stream"])
    # A gap (a frame published elsewhere, or dropped) is not bridged: Pushpin must see it.
    gap = grip_module.merge_items(grip_module.publish_items([("a", 1, "start", "{}")])
                                  + grip_module.publish_items([("a", 3, "node_start", "{}")]))
    assert [(item["id"], item["prev-id"]) for item in gap] == [("1", "0"), ("3", "2")]

    sizes: list[int] = []

    def send(body: bytes) -> int:
        sizes.append(len(body))
        return 200

    publisher = grip_module.Publisher()
    monkeypatch.setattr(publisher, "_send", send)
    big = [{"channel": "events-run-c", "id": str(n), "prev-id": str(n - 1),
            "formats": {"http-stream": {"content": "x" * 60_000}}} for n in range(1, 41)]
    publisher._post(big)
    assert len(sizes) > 1 and max(sizes) <= grip_module.PUBLISH_BODY_MAX and publisher.published == 40
