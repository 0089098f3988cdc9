"""Runs per second with 1, 2 and 4 `flex_worker` processes (3-node runs of
trivial capabilities). Runs are created unavailable, then released with one
UPDATE; the time is from that release to the last `completed_at`.

Then the same again with 100 more runs in flight: started, planned, their
first node done, each waiting for a person (awaiting_hitl) — rows in the
run, node, event and request tables that the queue must step over."""
from __future__ import annotations

import time
from datetime import timedelta

from bench.common import emit, setup_django, worker

RUNS = 120
IN_FLIGHT = 100


def main() -> None:
    setup_django()
    from django.db import connection, transaction
    from django.db.models import Max
    from django.utils import timezone

    from bench.capabilities import envelope
    from bench.common import bench_user
    from runs.engine.worker import drain
    from runs.models import Run
    from runs.services import run_create

    user = bench_user()

    def series() -> dict[str, dict[str, float]]:
        results = {}
        for count in (1, 2, 4):
            workers = [worker(f"{connection.vendor}-throughput-{count}-{i}") for i in range(count)]
            try:
                # Create every run held back (one transaction), then release them all.
                with transaction.atomic():
                    ids = [run_create(user=user, envelope=envelope(3)).id for _ in range(RUNS)]
                    Run.objects.filter(pk__in=ids).update(available_at=timezone.now() + timedelta(days=1))
                time.sleep(0.5)
                released = timezone.now()
                Run.objects.filter(pk__in=ids).update(available_at=released)
                deadline = time.monotonic() + 300
                while Run.objects.filter(pk__in=ids, status="completed").count() < len(ids):
                    if time.monotonic() > deadline:
                        raise TimeoutError("runs did not complete")
                    time.sleep(0.1)
                last = Run.objects.filter(pk__in=ids).aggregate(last=Max("completed_at"))["last"]
                seconds = (last - released).total_seconds()
                results[str(count)] = {"runs": len(ids), "seconds": seconds, "runs_per_second": len(ids) / seconds}
            finally:
                for w in workers:
                    w.stop()
        return results

    results = series()
    waiting = [run_create(user=user, envelope=envelope(3, approve_after=1)).id for _ in range(IN_FLIGHT)]
    drain(max_steps=IN_FLIGHT + 10)
    parked = Run.objects.filter(pk__in=waiting, status="awaiting_hitl").count()
    assert parked == IN_FLIGHT, f"only {parked} of {IN_FLIGHT} runs are waiting"
    in_flight = series()
    emit({"vendor": connection.vendor, "throughput": results, "in_flight": {"runs": IN_FLIGHT, "throughput": in_flight}})


if __name__ == "__main__":
    main()
