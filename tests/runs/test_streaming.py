"""The per-process notification tasks of runs.streaming."""
from __future__ import annotations

import asyncio
import threading

import pytest
from django.conf import settings

from runs.streaming import hub


@pytest.mark.skipif(not settings.REDIS_URL, reason="needs REDIS_URL")
@pytest.mark.parametrize("lifetime", [0, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.3])
def test_an_event_loop_with_a_redis_subscriber_shuts_down_promptly(lifetime):
    """redis-py can swallow a CancelledError that arrives while the subscriber
    connects or reads; the subscriber must still end when its loop closes, or
    the loop hangs on shutdown (every short-lived loop that served a stream:
    each async_to_sync in tests, each worker thread's loop)."""

    async def follow_briefly() -> None:
        hub.ensure_background()
        await asyncio.sleep(lifetime)

    thread = threading.Thread(target=asyncio.run, args=(follow_briefly(),), daemon=True)
    thread.start()
    thread.join(timeout=10)

    assert not thread.is_alive(), "the event loop did not close: a background task ignored cancellation"
