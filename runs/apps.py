from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "runs"
    verbose_name = "Runs"

    def ready(self) -> None:
        # Wiring once the models are loaded (Django's place for it): the
        # stream hub and the workers register with runs.notify when imported,
        # and the web server starts embedded workers through a start-up hook.
        from flexagents import startup
        from runs import streaming  # noqa: F401  (registers the hub's frame sink)
        from runs.engine import worker

        startup.on_server_start(worker.start_embedded_workers_if_configured)
