"""The claim long poll: it waits on the event loop (no thread, no database
connection held) and wakes when a task is offered, well before its
waitSeconds; with nothing offered it answers 204 at the deadline."""
from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any, Callable

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient
from rest_framework.authtoken.models import Token

from runs.task_wait import hub
from tests.runs.agents_helpers import registration, review_envelope

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def agent_token(make_user: Callable[..., Any], api_for: Callable[[Any], Any]) -> str:
    user = make_user("acme-bot", "agent")
    assert api_for(user).post("/api/v1/flex/agents/register", registration(), format="json").status_code == 200
    return Token.objects.get_or_create(user=user)[0].key


def claim_request(token: str, wait: int) -> Any:
    return AsyncClient().post("/api/v1/flex/agents/acme-review/tasks/claim", json.dumps({"waitSeconds": wait}),
                              content_type="application/json", headers={"Authorization": f"Bearer {token}"})


def test_a_waiting_claim_wakes_when_a_task_is_dispatched(agent_token, operator, api_for, drain):
    submitter = api_for(operator)

    async def scenario() -> tuple[Any, float, int, int]:
        started = time.monotonic()
        waiting = asyncio.ensure_future(claim_request(agent_token, 30))
        while hub.waiting == 0:  # the claim found nothing and waits
            await asyncio.sleep(0.01)
            assert not waiting.done(), (await waiting).content
        threads_while_waiting = threading.active_count()
        await sync_to_async(lambda: submitter.post("/api/v1/flex/runs", review_envelope(), format="json"),
                            thread_sensitive=False)()
        await sync_to_async(drain, thread_sensitive=False)()  # the worker dispatches the review node
        response = await waiting
        return response, time.monotonic() - started, threads_while_waiting, hub.waiting

    response, elapsed, _, still_waiting = asyncio.run(scenario())
    assert response.status_code == 200, response.content
    assert response.json()["task"]["capabilityId"] == "acme.Review"
    # Woken by the dispatch, not by its 30 s deadline.
    assert elapsed < 30
    assert still_waiting == 0


def test_a_claim_with_nothing_to_do_is_204_after_waiting(agent_token):
    async def scenario() -> Any:
        return await claim_request(agent_token, 1)

    response = asyncio.run(scenario())
    assert response.status_code == 204
    assert hub.waiting == 0


CLAIMS = 40


def test_many_waiting_claims_hold_no_thread_each(agent_token):
    """Behaviour, not a figure (bench/ measures): 40 claims waiting at once add
    no thread per request."""

    async def scenario() -> tuple[int, int, int]:
        before = threading.active_count()
        waiting = [asyncio.ensure_future(claim_request(agent_token, 10)) for _ in range(CLAIMS)]
        deadline = time.monotonic() + 9
        most, threads = 0, before
        while time.monotonic() < deadline and most < CLAIMS:
            await asyncio.sleep(0.02)
            if hub.waiting > most:
                most, threads = hub.waiting, threading.active_count()
        responses = await asyncio.gather(*waiting)
        assert {r.status_code for r in responses} == {204}
        return before, threads, most

    before, during, most = asyncio.run(scenario())
    assert most == CLAIMS  # all were waiting at once
    # The shared executor's pool may grow a little; never one thread per waiting claim.
    assert during - before < 20
