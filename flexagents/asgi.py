"""ASGI entry point: `daphne flexagents.asgi:application`.

With FLEX_EMBEDDED_WORKERS > 0 (the `make run` default) worker threads run
inside this process, so one daphne serves API, admin, pages, SSE and work:
the runs app registers that as a start-up hook (`runs.apps`).
"""
import os

from django.core.asgi import get_asgi_application

from flexagents import startup
from flexagents.http_status import complete_reason_phrases

complete_reason_phrases()  # `422 Unprocessable Entity`, not `422 Unknown Status`
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "flexagents.settings")

application = get_asgi_application()
startup.server_started()
