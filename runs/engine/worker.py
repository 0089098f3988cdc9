"""Workers: threads inside the web process (embedded default) or the
`manage.py flex_worker` process. Both run the same `Worker.run_forever` loop:

1. claim a run: a queued one, or — at most every `FLEX_SWEEP_SECONDS` — one
   whose lease expired (the takeover "sweep"); the sweep also applies the
   HITL escalations and timeouts and the run deadlines that are due
   (`runs.governance`);
2. advance it with a heartbeat thread renewing the lease;
3. let go of it when it waits for a person or is terminal;
4. when idle, sleep until woken (a run was queued in this process, or a
   Redis announcement) or until the poll interval passes.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
import weakref

from django.conf import settings
from django.db import close_old_connections, connection

from runs import governance, notify
from runs.engine import lease, loop, tasks
from runs.engine.step import RunContext
from runs.notifications import Notifier
from runs.models import RunStatus
from runs.ops import worker_beat

# What `advance` returns when its last commit let go of the run (the commit
# that completed it, failed it or made it wait for a person: `loop.lease_after`,
# or the one that left it to agents): no `release` after it.
LET_GO = frozenset({"dispatched", RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED,
                    RunStatus.AWAITING_HITL, RunStatus.PAUSED})

logger = logging.getLogger("runs.engine.worker")

_local_workers: "weakref.WeakSet[Worker]" = weakref.WeakSet()


def wake_local_workers() -> None:
    for worker in list(_local_workers):
        worker.wake()


# Announced work (`runs.notify.announce_work`) wakes this process's workers.
notify.register_work_waker(wake_local_workers)


def new_worker_id(prefix: str = "worker") -> str:
    return f"{prefix}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    def __init__(self, *, worker_id: str | None = None, poll_seconds: float | None = None,
                 sweep_seconds: float | None = None) -> None:
        self.worker_id = worker_id or new_worker_id()
        self.poll_seconds = poll_seconds if poll_seconds is not None else settings.FLEX_IDLE_POLL_SECONDS
        self.sweep_seconds = sweep_seconds if sweep_seconds is not None else settings.FLEX_SWEEP_SECONDS
        self._last_sweep = float("-inf")
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self.current: lease.Claim | None = None
        self.runs_advanced = 0
        _local_workers.add(self)

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """Ask the loop to stop after the current step (graceful shutdown)."""
        self._stopping.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def run_once(self, heartbeat: lease.Heartbeat | None = None) -> bool:
        """Claim and advance at most one run. True if a run was advanced."""
        now = time.monotonic()
        sweep = now - self._last_sweep >= self.sweep_seconds
        if sweep:
            self._last_sweep = now
            # Deadlines and escalations (state in the database; each applied
            # once whatever the number of workers sweeping).
            governance.sweep()
            self.sweep_tasks()
        ctx: RunContext | None = None
        claim: lease.Claim | None
        if connection.vendor == "postgresql":
            # A new run is claimed and planned in one commit.
            claimed = loop.claim_and_plan(worker_id=self.worker_id, sweep=sweep)
            claim, ctx = claimed if claimed is not None else (None, None)
        else:
            claim = lease.claim_next(worker_id=self.worker_id, sweep=sweep)
        if claim is None:
            return False
        self.current = claim
        if heartbeat is not None:
            heartbeat.track(claim)
        outcome = ""
        try:
            outcome = loop.advance(claim, heartbeat=heartbeat, stop=lambda: self.stopping, ctx=ctx)
        finally:
            if heartbeat is not None:
                heartbeat.track(None)
            self.current = None
            try:
                if outcome == "handed_back":
                    lease.hand_back(claim)
                elif outcome != "lease_lost" and outcome not in LET_GO:
                    # Also after an exception (outcome ""): release() leaves an
                    # active run to the sweep as a counted crash attempt.
                    lease.release(claim)
            except Exception:  # noqa: BLE001 — the lease then simply expires
                logger.exception("could not let go of a run", extra={"run_id": claim.run_id})
                close_old_connections()
        self.runs_advanced += 1
        return True

    def sweep_tasks(self) -> None:
        """With the lease sweep: expired task leases, silent agents, tasks of
        inactive capabilities (runs.engine.tasks.sweep_tasks). Never raises."""
        try:
            swept = tasks.sweep_tasks()
        except Exception:  # noqa: BLE001 — the next sweep tries again
            logger.exception("task sweep failed", extra={"worker": self.worker_id})
            close_old_connections()
            return
        if any(swept.values()):
            logger.info("task sweep", extra={"worker": self.worker_id, **swept})

    def run_forever(self) -> None:
        heartbeat = lease.Heartbeat(self.worker_id)
        logger.info("worker started", extra={"worker": self.worker_id})
        try:
            while not self.stopping:
                worker_beat(self.worker_id)  # throttled; /api/ready reads it
                try:
                    worked = self.run_once(heartbeat)
                except Exception:  # noqa: BLE001 — a bug in one run must not kill the worker
                    logger.exception("worker step failed", extra={"worker": self.worker_id})
                    close_old_connections()
                    worked = False
                    time.sleep(self.poll_seconds)
                if not worked and not self.stopping:
                    self._wake.wait(self.poll_seconds)
                    self._wake.clear()
        finally:
            heartbeat.stop()
            connection.close()
            logger.info("worker stopped", extra={"worker": self.worker_id})


def drain(*, worker_id: str = "drain", max_steps: int = 1000, sweep_seconds: float = 0.0) -> int:
    """Advance every claimable run until none is left, in this thread.
    For management commands and tests that want a run executed now (they
    sweep before every claim; a worker sweeps every FLEX_SWEEP_SECONDS)."""
    worker = Worker(worker_id=worker_id, sweep_seconds=sweep_seconds)
    steps = 0
    while steps < max_steps and worker.run_once():
        steps += 1
    return steps


_embedded: list[tuple[Worker, threading.Thread]] = []
_embedded_notifier: list[Notifier] = []
_embedded_lock = threading.Lock()


def start_embedded_workers_if_configured() -> None:
    """Server start-up hook (see `runs.apps`): worker threads inside the web
    process when `FLEX_EMBEDDED_WORKERS` > 0 (the `make run` default)."""
    if settings.FLEX_EMBEDDED_WORKERS:
        start_embedded_workers()


def start_embedded_workers(count: int | None = None) -> list[Worker]:
    """Worker threads inside this process (idempotent), and the notification
    deliverer beside them (runs.notifications)."""
    count = settings.FLEX_EMBEDDED_WORKERS if count is None else count
    with _embedded_lock:
        if count and not _embedded_notifier:
            _embedded_notifier.append(Notifier().start())
        while len(_embedded) < count:
            worker = Worker(worker_id=new_worker_id("embedded"))
            thread = threading.Thread(target=worker.run_forever, name=f"flex-worker-{len(_embedded)}", daemon=True)
            thread.start()
            _embedded.append((worker, thread))
        return [w for w, _ in _embedded]


def stop_embedded_workers(timeout: float = 10.0) -> None:
    with _embedded_lock:
        for notifier in _embedded_notifier:
            notifier.stop()
        _embedded_notifier.clear()
        for worker, _ in _embedded:
            worker.stop()
        for _, thread in _embedded:
            thread.join(timeout=timeout)
        _embedded.clear()
