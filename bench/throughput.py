"""Runs per second with 1, 2 and 4 `flex_worker` processes (3-node runs of
trivial capabilities). Runs are created unavailable, then released with one
UPDATE; the time is from that release to the last `completed_at`."""
from __future__ import annotations

import time
from datetime import timedelta

from bench.common import emit, setup_django, worker

RUNS = 120


def main() -> None:
    setup_django()
    from django.db import connection, transaction
    from django.db.models import Max
    from django.utils import timezone

    from bench.capabilities import envelope
    from bench.common import bench_user
    from runs.models import Run
    from runs.services import run_create

    user = bench_user()
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
    emit({"vendor": connection.vendor, "throughput": results})


if __name__ == "__main__":
    main()
