"""ASGI entry point: `daphne flexagents.asgi:application`.

With FLEX_EMBEDDED_WORKERS > 0 (the `make run` default) worker threads run
inside this process, so one daphne serves API, admin, pages, SSE and work:
the runs app registers that as a start-up hook (`runs.apps`).

Long-lived requests (a run's SSE stream, `LONG_LIVED`) are served
without Django's per-request `ThreadSensitiveContext`: that context gives
every request its own one-thread executor for the thread-sensitive hops of
the middleware chain (Django's `MiddlewareMixin` runs `process_request` /
`process_response` through `sync_to_async(thread_sensitive=True)`), and the
executor's thread lives until the response ends — one OS thread per open
stream, 2,000 threads for 2,000 followers. Without the context those hops
share asgiref's single thread-sensitive executor (each is microseconds of
header work, no database); the stream views do their database work on the
event loop's bounded default executor (runs.apis.offloaded).
"""
import os
import re

from django.core.asgi import get_asgi_application

from flexagents import startup
from flexagents.http_status import complete_reason_phrases

complete_reason_phrases()  # `422 Unprocessable Entity`, not `422 Unknown Status`
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "flexagents.settings")

django_application = get_asgi_application()

# GET /api/v1/flex/runs/<id>/stream: the only request that lives as long as a run.
LONG_LIVED = re.compile(r"^/api/v1/flex/runs/[^/]+/stream$")


async def application(scope, receive, send):
    if scope.get("type") == "http" and scope.get("method") == "GET" and LONG_LIVED.match(scope.get("path", "")):
        await django_application.handle(scope, receive, send)
        return
    await django_application(scope, receive, send)


startup.server_started()
