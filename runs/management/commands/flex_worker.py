"""`manage.py flex_worker`: a worker process (scale-out mode).

SIGTERM / SIGINT stop it gracefully: the current step finishes and commits,
the run is handed back to the queue, and the process exits.
"""
from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand

from runs.engine.worker import Worker, new_worker_id


class Command(BaseCommand):
    help = "Run a Flex Agents worker process that claims and executes runs."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--threads", type=int, default=1, help="worker threads in this process (default 1)")
        parser.add_argument("--id", default="", help="worker id prefix (default: host:pid)")

    def handle(self, *args: Any, **options: Any) -> None:
        workers = [Worker(worker_id=new_worker_id(options["id"] or "worker")) for _ in range(max(options["threads"], 1))]

        def stop(signum: int, frame: Any) -> None:
            for worker in workers:
                worker.stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        from runs.notify import start_work_listener

        start_work_listener()
        threads = [threading.Thread(target=w.run_forever, name=w.worker_id) for w in workers[1:]]
        for thread in threads:
            thread.start()
        self.stdout.write(f"flex_worker started: {', '.join(w.worker_id for w in workers)}", ending="\n")
        self.stdout.flush()
        workers[0].run_forever()
        for thread in threads:
            thread.join()
        self.stdout.write("flex_worker stopped")
