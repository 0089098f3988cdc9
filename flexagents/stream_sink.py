"""A stream request's direct line to its connection.

`flexagents.asgi` sets `direct_writer` for a stream request served by daphne:
`write(body) -> bool` puts bytes on the response at once, outside the
response's generator, and answers False (writing nothing) when the client has
fallen behind (more than FLEX_SSE_SLOW_CONSUMER_BYTES unread), was cut off,
or is gone. `runs.streaming` uses it to deliver a committed frame to every
caught-up stream of a run in one pass on the event loop — no task wake-up,
no trip through Django's response loop per stream and frame; a stream that
lags gets its frames through its generator instead, with the slow-consumer
cut-off as before.
"""
from __future__ import annotations

from contextvars import ContextVar
from typing import Callable

direct_writer: ContextVar[Callable[[bytes], bool] | None] = ContextVar("flex_stream_direct_writer", default=None)
