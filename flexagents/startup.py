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


def settle_garbage_collector() -> None:
    """Run once the application is loaded (a server hook, see runs.apps).

    A web process that holds thousands of open streams allocates on every
    frame (tasks, futures, generator frames) and so triggers the cyclic
    garbage collector often; each older-generation collection walks every
    object of the process, including the ~150,000 that Django, DRF and the
    app created at import and never free. With 2,000 streams
    (docs/performance.md) this cut commit -> receive p50 by about half.
    `gc.freeze()` moves what exists now out of the collector's sight (it is
    still freed normally by reference counting), and larger thresholds collect
    less often: the youngest generation every 10,000 net allocations instead
    of 700, a full collection after 50 x 100 younger ones (a full one over
    2,000 streams' objects took 0.5 s of the event loop on this machine).
    Reference cycles are still collected, later."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 50, 100)
