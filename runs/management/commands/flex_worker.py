"""`manage.py flex_worker`: a worker process (scale-out mode).

SIGTERM / SIGINT stop it gracefully and promptly:

1. every worker thread is asked to stop after its current step (a node that
   is running finishes and commits, then the run is handed back);
2. the process waits at most `--grace` seconds for that;
3. a worker still inside a capability call after the grace period has its
   run handed back (`lease.hand_back`: the token moves on, so nothing that
   thread might still return can be committed) and the process exits; the
   next worker re-runs the node with the same attempt and idempotency key.

A second signal skips the grace period.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any

from django.core.management.base import BaseCommand
from django.db import connections

from runs.engine import lease
from runs.engine.worker import Worker, new_worker_id
from runs.notifications import Notifier
from runs.notify import start_work_listener


class Command(BaseCommand):
    help = "Run a Flex Agents worker process that claims and executes runs."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--threads", type=int, default=1, help="worker threads in this process (default 1)")
        parser.add_argument("--id", default="", help="worker id prefix (default: worker)")
        parser.add_argument("--grace", type=float, default=10.0,
                            help="seconds to let running nodes finish after SIGTERM before handing back (default 10)")

    def handle(self, *args: Any, **options: Any) -> None:
        workers = [Worker(worker_id=new_worker_id(options["id"] or "worker")) for _ in range(max(options["threads"], 1))]
        stop_requested = threading.Event()
        signals_seen = [0]

        def on_signal(signum: int, frame: Any) -> None:
            signals_seen[0] += 1
            for worker in workers:
                worker.stop()
            stop_requested.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        start_work_listener()
        notifier = Notifier().start()  # webhooks and email (runs.notifications)
        # Daemon threads: the main thread owns shutdown and may leave a thread
        # blocked in a capability behind (its run handed back, its token stale).
        threads = [threading.Thread(target=w.run_forever, name=w.worker_id, daemon=True) for w in workers]
        for thread in threads:
            thread.start()
        self.stdout.write(f"flex_worker started: {', '.join(w.worker_id for w in workers)}", ending="\n")
        self.stdout.flush()
        # The main thread only waits for signals (so they are handled at once).
        while not stop_requested.wait(0.5):
            if not any(t.is_alive() for t in threads):
                break
        notifier.stop()  # an attempt in flight finishes or its claim expires (then it is retried)
        deadline = time.monotonic() + max(options["grace"], 0.0)
        for thread in threads:
            while thread.is_alive() and time.monotonic() < deadline and signals_seen[0] < 2:
                thread.join(timeout=0.1)
        stuck = [w for w, t in zip(workers, threads) if t.is_alive()]
        for worker in stuck:
            claim = worker.current
            if claim is not None:
                try:
                    lease.hand_back(claim)
                    self.stdout.write(f"handed back run {claim.run_id}")
                except Exception as exc:  # noqa: BLE001 — the lease will expire instead
                    self.stderr.write(f"could not hand back run {claim.run_id}: {exc}")
        connections.close_all()
        self.stdout.write("flex_worker stopped")
        self.stdout.flush()
        if stuck:
            # Threads blocked in capability code cannot be joined; leave now.
            sys.stderr.flush()
            os._exit(0)
