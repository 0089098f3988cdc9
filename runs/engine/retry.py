"""The only place that decides what happens after a failed attempt.

Asking a person (`ClarificationNeeded`) is not a failure and never reaches
here: the executor turns it into an outcome of its own first.
"""
from __future__ import annotations

from dataclasses import dataclass

# The longest wait between two attempts of a node.
MAX_BACKOFF_SECONDS = 30.0


@dataclass(frozen=True)
class RetryDecision:
    retry: bool
    reason: str
    # Seconds to wait before the next attempt (0: at once, in the same step).
    delay: float = 0.0


def backoff(*, attempts: int, base: float) -> float:
    """Exponential: base, 2 x base, 4 x base, ... capped at MAX_BACKOFF_SECONDS."""
    if base <= 0:
        return 0.0
    return float(min(base * (2 ** max(attempts - 1, 0)), MAX_BACKOFF_SECONDS))


def after_invalid_output(*, attempts: int, max_retries: int) -> RetryDecision:
    """Output failed its contract: retry while attempts <= max_retries."""
    if attempts <= max_retries:
        return RetryDecision(True, "validation_failed")
    return RetryDecision(False, "validation_retries_exhausted")


def after_error(*, attempts: int, max_retries: int, retryable: bool, backoff_base: float = 0.0,
                retry_after: float | None = None) -> RetryDecision:
    """A capability error: retried after a back-off (a rate limit or an
    outage needs time; invalid output is retried at once instead). A
    service's own `retry_after` (a 429's Retry-After) is a floor, capped
    like the back-off."""
    if not retryable:
        return RetryDecision(False, "permanent_error")
    if attempts <= max_retries:
        delay = backoff(attempts=attempts, base=backoff_base)
        if retry_after is not None and retry_after > delay:
            delay = float(min(retry_after, MAX_BACKOFF_SECONDS))
        return RetryDecision(True, "retryable_error", delay=delay)
    return RetryDecision(False, "retries_exhausted")


def after_worker_lost(*, crash_attempts: int, max_crash_attempts: int) -> RetryDecision:
    """A worker died while the node ran. Bounded, so a capability that kills
    its worker cannot requeue forever."""
    if crash_attempts < max_crash_attempts:
        return RetryDecision(True, "worker_lost")
    return RetryDecision(False, "worker_lost")
