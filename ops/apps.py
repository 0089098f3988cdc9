from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Operating the system: readiness, worker heartbeats, metrics, retention."""

    name = "ops"
    verbose_name = "Operations"

    def ready(self) -> None:
        # Define every metric in this process (multi-process files included),
        # so unlabelled counters scrape as 0 before their first increment.
        from ops import metrics  # noqa: F401
