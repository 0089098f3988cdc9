"""Leases: the Run table is the work queue.

A claim sets `lease_owner`, `lease_expires_at` and a new `lease_token`
(previous + 1). Every later write by the worker is conditional on that token
(the fence), so a worker that stalled past its lease — and whose run another
worker claimed — can no longer commit anything.

Claimable runs: `queued` runs whose lease is free or expired (a worker that
died while planning or right after a resume), and `running` runs whose lease
expired (a worker that died mid-node: the takeover, or "sweep"). Every worker
sweeps for expired leases every `FLEX_SWEEP_SECONDS`, so a dead worker's run
is taken over within lease + sweep time.

A run whose owner let it go on purpose (graceful shutdown: `hand_back`) has
no owner; its next claim is not a takeover and does not count a crash.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from runs import metrics
from runs.models import Run, RunStatus
from runs.transitions import lease_claim

logger = logging.getLogger("runs.engine.lease")


@dataclass(frozen=True)
class Claim:
    run_id: str
    token: int
    worker_id: str
    # True when the previous holder's lease expired while the run was running.
    takeover: bool
    # The run as claimed (PostgreSQL: the claiming statement returns it), so
    # the engine's first load need not read it again; taken by that load
    # (`take_run`), later loads read the row.
    preloaded: list[Run] = field(default_factory=list, compare=False, repr=False)

    def take_run(self) -> Run | None:
        return self.preloaded.pop() if self.preloaded else None


def lease_duration() -> timedelta:
    return timedelta(seconds=settings.FLEX_LEASE_SECONDS)


def claim_next(*, worker_id: str, run_id: str | None = None, sweep: bool = True) -> Claim | None:
    """Claim the oldest claimable run (or `run_id`), or return None.
    With `sweep=False` only queued runs are considered (the cheap query).

    On PostgreSQL, one statement (`runs.transitions.lease_claim`): the
    candidate is locked with `FOR UPDATE SKIP LOCKED`, so concurrent workers
    pick different runs without waiting, and leased in the same statement.
    On SQLite, in one IMMEDIATE transaction (which already serialises
    writers): find a candidate, then take the lease with a conditional
    UPDATE on the token read, checking the row count.
    """
    now = timezone.now()
    row: dict[str, Any] | None
    if connection.vendor == "postgresql":
        # One statement, one round trip: the row locked (SKIP LOCKED), leased, returned.
        run = lease_claim(worker_id=worker_id, now=now, expires_at=now + lease_duration(), sweep=sweep,
                          run_id=run_id)
        if run is None:
            return None
        row = {"id": run.id, "lease_token": run.lease_token - 1, "status": run.status,
               "lease_owner": getattr(run, "previous_owner", "")}
    else:
        run = None
        row = _claim_sqlite(worker_id=worker_id, now=now, run_id=run_id, sweep=sweep)
        if row is None:
            return None
    # A run still owned by someone whose lease ran out lost its worker (a
    # crash attempt); one handed back on purpose has no owner.
    claim = Claim(run_id=row["id"], token=row["lease_token"] + 1, worker_id=worker_id,
                  takeover=row["status"] != RunStatus.QUEUED and bool(row["lease_owner"]),
                  preloaded=[run] if run is not None else [])
    if claim.takeover:
        metrics.lease_takeover()
    return claim


def _claim_sqlite(*, worker_id: str, now: Any, run_id: str | None, sweep: bool) -> dict[str, Any] | None:
    """`claim_next` on SQLite: the same conditions as `lease_claim`'s."""
    free_or_expired = Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now)
    available = Q(available_at__isnull=True) | Q(available_at__lte=now)
    claimable = Q(status=RunStatus.QUEUED) & free_or_expired & available
    # A running run let go on purpose (handed back, or continued after a
    # task's result: runs.engine.tasks) has no owner and an expired lease.
    # A run waiting only on tasks has no expiry at all: never claimed here.
    claimable |= Q(status=RunStatus.RUNNING, lease_owner="", lease_expires_at__lt=now)
    if sweep:
        claimable |= Q(status__in=[RunStatus.RUNNING, RunStatus.PLANNING]) & Q(lease_expires_at__lt=now)
    candidates = Run.objects.filter(claimable)
    if run_id is not None:
        candidates = candidates.filter(pk=run_id)
    with transaction.atomic():
        row = candidates.order_by("created_at").values("id", "lease_token", "status", "lease_owner").first()
        if row is None:
            return None
        updated = Run.objects.filter(pk=row["id"], lease_token=row["lease_token"]).update(
            lease_owner=worker_id,
            lease_token=F("lease_token") + 1,
            lease_expires_at=now + lease_duration(),
        )
        return row if updated == 1 else None


ACTIVE_STATUSES = (RunStatus.QUEUED, RunStatus.PLANNING, RunStatus.RUNNING)


def renew(claim: Claim) -> bool:
    """Extend the lease; False when it was lost (another worker holds it, or
    this worker already let go: a late renewal must not re-lease a released
    run, or a resumed run would wait a whole lease before anyone claims it)."""
    with transaction.atomic():
        return Run.objects.filter(pk=claim.run_id, lease_token=claim.token, lease_owner=claim.worker_id).update(
            lease_expires_at=timezone.now() + lease_duration()) == 1


def release(claim: Claim) -> None:
    """Let go of the run after `advance` returned or failed.

    A waiting or terminal run drops its lease. A run still active (the engine
    raised, or had nothing to do) keeps its owner with the lease expired now:
    the next claim is a takeover and counts a crash attempt, so an engine bug
    that repeats is bounded instead of requeued forever — and never left
    `running` with no lease, which no sweep would ever find.
    """
    now = timezone.now()
    with transaction.atomic():
        mine = Run.objects.filter(pk=claim.run_id, lease_token=claim.token)
        mine.exclude(status__in=ACTIVE_STATUSES).update(lease_owner="", lease_expires_at=None)
        mine.filter(status__in=ACTIVE_STATUSES).update(lease_expires_at=now - timedelta(milliseconds=1))


def hand_back(claim: Claim) -> None:
    """Give a run back to the queue untouched (graceful shutdown).

    The token moves on (so this process can commit nothing more for the run,
    even if a capability call returns after this), the owner is cleared (the
    next claim is not a crash takeover: the started node re-runs with the
    same attempt number and idempotency key) and the lease is expired now so
    any worker can claim it at once."""
    with transaction.atomic():
        Run.objects.filter(pk=claim.run_id, lease_token=claim.token).update(
            lease_owner="", lease_token=F("lease_token") + 1,
            lease_expires_at=timezone.now() - timedelta(seconds=1))


class Heartbeat:
    """Renews the lease of the run a worker holds, on its own thread, every
    lease/3, so a capability that blocks for a long time keeps its run.

    `lost` is set when a renewal finds the lease gone; the worker then
    discards whatever the capability returns (the commit is fenced anyway).
    """

    def __init__(self, name: str) -> None:
        self._claim: Claim | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.lost = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"{name}-heartbeat", daemon=True)
        self._thread.start()

    def track(self, claim: Claim | None) -> None:
        with self._lock:
            self._claim = claim
            self.lost.clear()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        interval = max(settings.FLEX_LEASE_SECONDS / 3.0, 0.05)
        try:
            while not self._stop.wait(interval):
                with self._lock:
                    claim = self._claim
                if claim is None:
                    continue
                try:
                    if not renew(claim):
                        with self._lock:
                            # Only if we still track that claim: a renewal racing
                            # with track() must not mark the *next* run as lost.
                            if self._claim is claim:
                                logger.warning("lease lost", extra={"run_id": claim.run_id,
                                                                    "worker": claim.worker_id})
                                self.lost.set()
                except Exception:  # noqa: BLE001 — a failed renewal is retried next tick
                    logger.exception("lease renewal failed", extra={"run_id": claim.run_id})
                    close_old_connections()
        finally:
            connection.close()
