"""Streams through Pushpin (GRIP) in front of two daphne processes, with a
worker that commits the run's events and publishes them to Pushpin.

Pushpin holds the client connections; the web processes only check access,
replay from the event table and answer with GRIP instructions (runs.grip).
A follower gets every event in order while the daphne that answered it is
killed; a client that reconnects with Last-Event-ID gets exactly the rest
from the other daphne; publishes that never reach Pushpin are repaired
from the event table; access is refused exactly as without Pushpin."""
from __future__ import annotations

import os
import shutil
import signal
import threading
import time

import httpx
import jwt
import pytest
from django.contrib.auth.models import Group

from tests.conftest import ensure_roles
from tests.multiprocess.conftest import (SSEClient, assert_contiguous, chain_envelope, chain_event_count, events_json,
                                         submit, wait_run_status)
from tests.multiprocess.procs import Pushpin, free_port, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not Pushpin.available(),
                       reason="needs Debian's pushpin package (pushpin, condure, zurl): apt-get install pushpin"),
]


def follow(client: SSEClient, **kwargs) -> threading.Thread:
    thread = threading.Thread(target=client.read, kwargs=kwargs, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def pushpin_stack(procs):
    """Pushpin in front of two daphnes; `start(worker_env=…)` starts it all."""
    started: list[Pushpin] = []

    def start(*, web_env: dict[str, str] | None = None, worker_env: dict[str, str] | None = None):
        ports = [free_port(), free_port()]
        pushpin = Pushpin(procs, ports)
        started.append(pushpin)
        grip = {"FLEX_GRIP_URL": pushpin.grip_url}
        webs = [procs.daphne(port=p, env={**grip, **(web_env or {})})[0] for p in ports]
        pushpin.start()
        procs.worker(env={**grip, **(worker_env or {})})
        return pushpin, webs, ports

    yield start
    for pushpin in started:  # the runner's own services (condure, zurl, proxy, handler) too
        if pushpin.proc is not None:
            pushpin.proc.stop(timeout=5)
            try:
                os.killpg(pushpin.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(pushpin.dir, ignore_errors=True)


def test_through_pushpin_every_event_arrives_in_order_across_a_daphne_kill_and_a_reconnect(pushpin_stack, procs,
                                                                                            token):
    pushpin, (web_a, web_b), (port_a, port_b) = pushpin_stack()
    steps = 18
    total = chain_event_count(steps)
    run_id = submit(pushpin.port, token, chain_envelope(steps=steps, step_sleep=0.15))

    follower = SSEClient(pushpin.port, token, run_id)
    follower_thread = follow(follower, timeout=60)
    leaver = SSEClient(pushpin.port, token, run_id)
    leaver.read(until=lambda frames: len(frames) >= 10, timeout=30)
    wait_for(lambda: len(follower.frames) >= 10, timeout=30, what="the follower's first frames")

    # The daphne that answered both (Pushpin's first target) dies mid-run.
    web_a.kill()
    from runs.models import Run

    assert Run.objects.get(pk=run_id).last_seq < total, "the run finished before the kill: not mid-run"
    # The leaver reconnects through Pushpin with Last-Event-ID: the other daphne answers.
    resumed = SSEClient(pushpin.port, token, run_id, last_event_id=leaver.frames[-1]["id"])
    resumed.read(timeout=60)
    follower_thread.join(timeout=60)
    assert not follower_thread.is_alive(), "the held stream did not end after the run's complete frame"

    assert wait_run_status(run_id, ("completed", "failed"), timeout=10) == "completed"
    expected = [(e["id"], e["type"]) for e in events_json(port_b, token, run_id)]
    assert len(expected) == total
    # Held by Pushpin: the follower outlived the daphne that answered it and got everything once, in order.
    assert [(f["id"], f["event"]) for f in follower.frames] == expected
    assert_contiguous(follower.frames)
    assert follower.frames[-1]["at"] - follower.frames[0]["at"] > 0.5, "a replay, not a live stream"
    assert [(f["id"], f["event"]) for f in leaver.frames] == expected[:10]
    assert [(f["id"], f["event"]) for f in resumed.frames] == expected[10:]
    assert_contiguous(resumed.frames, start=11)

    # The killed daphne comes back on its port and answers again; a late client gets the whole run.
    procs.daphne(port=port_a, env={"FLEX_GRIP_URL": pushpin.grip_url})
    late = SSEClient(pushpin.port, token, run_id)
    late.read(timeout=30)
    assert [(f["id"], f["event"]) for f in late.frames] == expected


def test_publishes_that_never_reach_pushpin_are_repaired_from_the_event_table(pushpin_stack, token):
    # The worker publishes to a port where nothing listens: every publish is
    # lost. Held streams still get every event, from the table, when their
    # hold's next link times out (FLEX_GRIP_RECOVER_SECONDS).
    dead = f"http://127.0.0.1:{free_port()}"
    pushpin, _webs, (port_a, _port_b) = pushpin_stack(web_env={"FLEX_GRIP_RECOVER_SECONDS": "1"},
                                                      worker_env={"FLEX_GRIP_URL": dead})
    steps = 6
    total = chain_event_count(steps)
    run_id = submit(port_a, token, chain_envelope(steps=steps, step_sleep=0.3))
    client = SSEClient(pushpin.port, token, run_id)
    client.read(timeout=60)
    expected = [(e["id"], e["type"]) for e in events_json(port_a, token, run_id)]
    assert len(expected) == total
    assert [(f["id"], f["event"]) for f in client.frames] == expected
    assert_contiguous(client.frames)


def test_access_is_refused_through_pushpin_as_without_it(pushpin_stack, token, django_user_model):
    from rest_framework.authtoken.models import Token

    pushpin, _webs, (port_a, _port_b) = pushpin_stack()
    run_id = submit(pushpin.port, token, chain_envelope(steps=2))
    ensure_roles()  # the role groups (the data migration's) after a transactional test's flush
    other = django_user_model.objects.create_user(username="someone-else", password="pw")
    other.groups.add(Group.objects.get(name="client"))
    other_token = Token.objects.create(user=other).key
    stream = f"http://127.0.0.1:{pushpin.port}/api/v1/flex/runs/{run_id}/stream"

    def get(url: str, headers: dict[str, str]) -> httpx.Response:
        with httpx.Client(timeout=20) as client:
            with client.stream("GET", url, headers={"Accept": "text/event-stream", **headers}) as response:
                response.read()
                return response

    # A run the user may not view: 404 (its existence is not revealed), no hold.
    refused = get(stream, {"Authorization": f"Bearer {other_token}"})
    assert refused.status_code == 404, refused.text
    assert refused.json()["code"] == "run_not_found", refused.text
    # No credentials: 401; a run that does not exist: 404.
    assert get(stream, {}).status_code == 401
    assert get(f"http://127.0.0.1:{pushpin.port}/api/v1/flex/runs/nope/stream",
               {"Authorization": f"Bearer {token}"}).status_code == 404
    # The owner may: the full run, through Pushpin.
    wait_run_status(run_id, ("completed",), timeout=30)
    assert get(stream, {"Authorization": f"Bearer {token}"}).status_code == 200

    # Straight to daphne, a forged Grip-Sig is not believed: an ordinary stream, no GRIP instructions.
    forged = jwt.encode({"iss": "pushpin", "exp": int(time.time()) + 60}, "not-the-key-of-this-pushpin-instance", algorithm="HS256")
    direct = get(f"http://127.0.0.1:{port_a}/api/v1/flex/runs/{run_id}/stream",
                 {"Authorization": f"Bearer {token}", "Grip-Sig": forged})
    assert direct.status_code == 200 and "Grip-Hold" not in direct.headers and "Grip-Link" not in direct.headers
    assert "event: complete" in direct.text
    # The next-link path answers only Pushpin (and only with a signed token).
    assert httpx.get(f"http://127.0.0.1:{port_a}/api/v1/flex/runs/{run_id}/stream/grip/x:y:z",
                     timeout=10).status_code == 404
