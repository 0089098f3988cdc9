from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "runs"
    verbose_name = "Runs"

    def ready(self) -> None:
        # Wiring once the models are loaded (Django's place for it): the
        # stream hub and the workers register with runs.notify when imported,
        # and the web server starts embedded workers through a start-up hook.
        from flexagents import startup
        from runs import stream_access, streaming  # noqa: F401  (registers the hub's frame sink)
        from runs.engine import worker

        startup.on_server_start(worker.start_embedded_workers_if_configured)
        startup.on_server_start(startup.settle_garbage_collector)  # fewer, cheaper collections under many streams
        stream_access.connect_signals()  # cached stream access forgets revoked rights at once

        from runs import grip

        grip.register()  # with FLEX_GRIP_URL: committed frames are published to Pushpin

        # Define every metric in this process (multi-process files included),
        # so unlabelled counters scrape as 0 before their first increment.
        import atexit
        import os

        from prometheus_client import multiprocess

        from runs import metrics  # noqa: F401

        # A live-summed gauge (open SSE streams) must forget a process that
        # exits; a crashed process is forgotten when the directory is emptied
        # at the next deployment start (docs/deployment.md).
        atexit.register(multiprocess.mark_process_dead, os.getpid())
