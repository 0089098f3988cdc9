"""The only place that decides what happens after a failed attempt.

Asking a person (`ClarificationNeeded`) is not a failure and never reaches
here: the executor turns it into an outcome of its own first.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RetryDecision:
    retry: bool
    reason: str


def after_invalid_output(*, attempts: int, max_retries: int) -> RetryDecision:
    """Output failed its contract: retry while attempts <= max_retries."""
    if attempts <= max_retries:
        return RetryDecision(True, "validation_failed")
    return RetryDecision(False, "validation_retries_exhausted")


def after_error(*, attempts: int, max_retries: int, retryable: bool) -> RetryDecision:
    if not retryable:
        return RetryDecision(False, "permanent_error")
    if attempts <= max_retries:
        return RetryDecision(True, "retryable_error")
    return RetryDecision(False, "retries_exhausted")


def after_worker_lost(*, crash_attempts: int, max_crash_attempts: int) -> RetryDecision:
    """A worker died while the node ran. Bounded, so a capability that kills
    its worker cannot requeue forever."""
    if crash_attempts < max_crash_attempts:
        return RetryDecision(True, "worker_lost")
    return RetryDecision(False, "worker_lost")
