"""Who may open (and keep) a run's stream, cached for a few seconds.

A connect storm (thousands of followers of one run opening at once) would
otherwise run, per request, a token lookup, a run fetch and a permission
check on the executor: 2,000 x 3 queries queued on a handful of threads.
Here a stream request with `Authorization: Bearer <token>` is answered from
two small caches on the event loop, and the first request of a (token, run)
pair does the lookups in ONE executor hop that every concurrent request of
the same pair waits for (single flight):

- token -> user (active, not of the `agent` role);
- (user, run) -> may view, plus the run's `last_seq` seen then (a
  Last-Event-ID up to that value is valid: `last_seq` only grows).

Only positive answers are cached; anything else (no token, an unknown
token, a run the user may not view, a Last-Event-ID ahead of the cached
position, a ticket) takes the full DRF view, which answers with the usual
errors. Entries live FLEX_SSE_ACCESS_CACHE_SECONDS (default 5 s; 0 turns the
cache off) and at most MAX_ENTRIES of each are kept.

Why it is safe: in this process every change that can take access away
(a token deleted, a user saved — deactivated —, group or permission
membership changed, an object permission removed) clears the caches at once
through signals. A change made by another process (another daphne, the
admin of another host, a raw SQL update) takes effect here within the TTL:
a revoked permission lets the user open a stream of that run for at most
FLEX_SSE_ACCESS_CACHE_SECONDS more. An open stream re-checks access through
the same cache every few keep-alives and is ended when it is revoked.
A cached positive is keyed by the token (or user) it was computed for and
never answers for anyone else.
"""
from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings

from runs import notify

MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class StreamAccess:
    user: Any  # the User loaded when the entry was filled (only pk/username are used)
    run_id: str
    correlation_id: str
    last_seq: int


class _TtlCache:
    """A bounded map whose entries expire; oldest evicted first."""

    def __init__(self) -> None:
        self._items: OrderedDict[Any, tuple[float, Any]] = OrderedDict()

    def get(self, key: Any) -> Any | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] <= time.monotonic():
            self._items.pop(key, None)
            return None
        return item[1]

    def put(self, key: Any, value: Any, ttl: float) -> None:
        self._items[key] = (time.monotonic() + ttl, value)
        self._items.move_to_end(key)
        while len(self._items) > MAX_ENTRIES:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


_tokens = _TtlCache()      # token key -> user
_may_view = _TtlCache()    # (user pk, run id) -> (correlation id, last_seq)
_inflight: dict[Any, asyncio.Future] = {}


def ttl() -> float:
    return float(getattr(settings, "FLEX_SSE_ACCESS_CACHE_SECONDS", 5.0))


def clear() -> None:
    """Forget every cached answer (a change that may take access away)."""
    _tokens.clear()
    _may_view.clear()


def _clear_on_signal(*args: Any, **kwargs: Any) -> None:
    clear()


@notify.closing_connection
def _resolve_sync(token_key: str | None, user_pk: Any, run_id: str) -> tuple[Any, tuple[str, int] | None] | None:
    """(user, (correlation id, last_seq) or None when they may not view the
    run) — or None when the token (user) is not one we may serve here."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from flexagents.roles import user_is_agent, user_may_view_run
    from runs.models import Run
    from runs.selectors import _PLAUSIBLE_ID

    if token_key is not None:
        token = Token.objects.select_related("user").filter(key=token_key).first()
        user = token.user if token is not None else None
    else:
        user = get_user_model().objects.filter(pk=user_pk).first()
    if user is None or not user.is_active or user_is_agent(user):
        return None
    if not _PLAUSIBLE_ID.match(run_id):
        return user, None
    run = Run.objects.filter(pk=run_id).first()
    if run is None or not user_may_view_run(user, run):
        return user, None
    return user, (run.correlation_id, run.last_seq)


_resolve = sync_to_async(_resolve_sync, thread_sensitive=False)


async def _single_flight(key: Any, token_key: str | None, user_pk: Any, run_id: str) -> Any:
    future = _inflight.get(key)
    if future is None:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        _inflight[key] = future
        try:
            result = await _resolve(token_key, user_pk, run_id)
        except BaseException as exc:
            future.set_exception(exc)
            future.add_done_callback(lambda f: f.exception())
            raise
        finally:
            _inflight.pop(key, None)
        future.set_result(result)
        return result
    return await asyncio.shield(future)


async def stream_access(token_key: str, run_id: str) -> StreamAccess | None:
    """Access of the bearer of `token_key` to `run_id`'s stream, or None when
    the full view must decide (and answer with its usual error)."""
    seconds = ttl()
    user = _tokens.get(token_key) if seconds > 0 else None
    entry = _may_view.get((user.pk, run_id)) if user is not None else None
    if user is None or entry is None:
        resolved = await _single_flight(("token", token_key, run_id), token_key, None, run_id)
        if resolved is None:
            return None
        user, entry = resolved
        if seconds > 0:
            _tokens.put(token_key, user, seconds)
            if entry is not None:
                _may_view.put((user.pk, run_id), entry, seconds)
        if entry is None:
            return None
    return StreamAccess(user=user, run_id=run_id, correlation_id=entry[0], last_seq=entry[1])


async def may_view(user_pk: Any, run_id: str) -> bool:
    """May this user still view the run? (An open stream's periodic check:
    the user is loaded afresh on a miss, so no permission cache of a
    long-lived user object answers.)"""
    seconds = ttl()
    if seconds > 0 and _may_view.get((user_pk, run_id)) is not None:
        return True
    resolved = await _single_flight(("user", user_pk, run_id), None, user_pk, run_id)
    if resolved is None or resolved[1] is None:
        return False
    if seconds > 0:
        _may_view.put((user_pk, run_id), resolved[1], seconds)
    return True


def connect_signals() -> None:
    """Clear the caches on every local change that may take access away."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.db.models.signals import m2m_changed, post_delete, post_save
    from guardian.models import GroupObjectPermission, UserObjectPermission
    from rest_framework.authtoken.models import Token

    user_model = get_user_model()
    uid = "runs.stream_access"
    post_delete.connect(_clear_on_signal, sender=Token, dispatch_uid=f"{uid}.token")
    post_save.connect(_clear_on_signal, sender=user_model, dispatch_uid=f"{uid}.user")
    post_delete.connect(_clear_on_signal, sender=user_model, dispatch_uid=f"{uid}.user-del")
    post_delete.connect(_clear_on_signal, sender=Group, dispatch_uid=f"{uid}.group-del")
    for through, name in ((user_model.groups.through, "groups"),
                          (user_model.user_permissions.through, "user-perms"),
                          (Group.permissions.through, "group-perms")):
        m2m_changed.connect(_clear_on_signal, sender=through, dispatch_uid=f"{uid}.{name}")
    for model in (UserObjectPermission, GroupObjectPermission):
        post_save.connect(_clear_on_signal, sender=model, dispatch_uid=f"{uid}.{model.__name__}")
        post_delete.connect(_clear_on_signal, sender=model, dispatch_uid=f"{uid}.{model.__name__}-del")
