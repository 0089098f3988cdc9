"""ASGI entry point: `daphne flexagents.asgi:application`.

With FLEX_EMBEDDED_WORKERS > 0 (the `make run` default) worker threads run
inside this process, so one daphne serves API, admin, pages, SSE and work.
"""
import os

from django.core.asgi import get_asgi_application

from flexagents.http_status import complete_reason_phrases

complete_reason_phrases()  # `422 Unprocessable Entity`, not `422 Unknown Status`
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "flexagents.settings")

application = get_asgi_application()

from django.conf import settings  # noqa: E402  (after Django is set up)

if settings.FLEX_EMBEDDED_WORKERS:
    from runs.engine.worker import start_embedded_workers

    start_embedded_workers()
