"""Server start-up hooks: what an app wants done once the ASGI application
exists (`flexagents.asgi`), without flexagents knowing the app. An app
registers a hook in its `AppConfig.ready()`; `flexagents.asgi` calls
`server_started()` once Django is set up."""
from __future__ import annotations

from typing import Callable

_hooks: list[Callable[[], None]] = []


def on_server_start(hook: Callable[[], None]) -> None:
    if hook not in _hooks:
        _hooks.append(hook)


def server_started() -> None:
    for hook in list(_hooks):
        hook()
