"""How long to wait before trying the server again.

Exponential backoff with "full jitter" (a random delay between zero and the
exponential bound): many agents that lost the same server do not come back
in lock-step. A ``Retry-After`` from the server (429, 503) is honoured as a
lower bound.
"""
from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["Backoff"]


class Backoff:
    """``next_delay()`` grows as ``base * factor**n`` (capped at ``cap``),
    jittered; ``reset()`` after a success starts again from ``base``."""

    def __init__(self, *, base: float = 0.5, factor: float = 2.0, cap: float = 30.0,
                 rand: Callable[[], float] = random.random) -> None:
        if base <= 0 or factor < 1 or cap < base:
            raise ValueError("Backoff needs base > 0, factor >= 1 and cap >= base")
        self.base = base
        self.factor = factor
        self.cap = cap
        self._rand = rand
        self.failures = 0

    def bound(self) -> float:
        """The largest delay the next failure may wait."""
        return min(self.cap, self.base * self.factor ** self.failures)

    def next_delay(self, *, retry_after: float | None = None) -> float:
        """Record a failure; the delay to wait before the next try."""
        delay = self.bound() * self._rand()
        # Never below a tenth of the bound: a jitter of ~0 must not turn into a busy loop.
        delay = max(delay, self.bound() / 10)
        self.failures += 1
        if retry_after is not None and retry_after > delay:
            delay = retry_after
        return delay

    def reset(self) -> None:
        self.failures = 0
