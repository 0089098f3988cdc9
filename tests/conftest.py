"""Shared fixtures: personas (operator, support, client, another client, an
outsider), API clients authenticated as them, the example envelopes, and a
way to let the engine run what is queued."""
from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import SyncToAsync
from django.conf import settings
from django.contrib.auth.models import Group
from django.db import connections
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

EXAMPLES = Path(settings.BASE_DIR) / "examples" / "envelopes"


def load_envelope(name: str) -> dict[str, Any]:
    """An example envelope (a deep copy, safe to modify)."""
    with open(EXAMPLES / f"{name}.json") as fh:
        return copy.deepcopy(json.load(fh))


@pytest.fixture(autouse=True)
def _close_executor_connections() -> Iterator[None]:
    """asgiref's single-thread executor keeps a connection open; PostgreSQL
    cannot drop the test database while it is (STACK.md)."""
    yield
    executor = getattr(SyncToAsync, "single_thread_executor", None)
    if executor is not None:
        try:
            executor.submit(connections.close_all).result(timeout=5)
        except Exception:  # noqa: BLE001
            pass


@pytest.fixture(autouse=True)
def _role_groups(request: pytest.FixtureRequest) -> None:
    """Every database test starts with the role groups of the data migrations.
    A `transaction=True` test flushes every table when it ends; run in
    parallel (`make test`: pytest-xdist, one file at a time per worker), a
    test that needs no flush can follow one on the same worker."""
    if "_django_db_helper" in request.fixturenames or request.node.get_closest_marker("django_db"):
        request.getfixturevalue("_django_db_helper")
        ensure_roles()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest first, so that parallel workers finish together: the tests
    marked `long` (minutes each), then those that start processes or a
    browser, then the rest; each group in pytest-django's order. `make test`
    passes --no-loadscope-reorder so that pytest-xdist keeps this order."""

    def weight(item: pytest.Item) -> int:
        if item.get_closest_marker("long"):
            return 0
        return 1 if item.get_closest_marker("slow") or item.get_closest_marker("browser") else 2

    items.sort(key=weight)


@pytest.fixture
def envelope() -> Callable[[str], dict[str, Any]]:
    return load_envelope


def ensure_roles() -> None:
    """The role groups come from a data migration; `transaction=True` tests
    flush every table, so recreate them when they are gone."""
    if Group.objects.filter(name__in=["client", "support", "operator", "agent"]).count() == 4:
        return
    import importlib
    from types import SimpleNamespace

    from django.apps import apps

    editor = SimpleNamespace(connection=SimpleNamespace(alias="default"))
    importlib.import_module("runs.migrations.0002_roles").create_roles(apps, editor)
    importlib.import_module("runs.migrations.0006_i11_agent_role").create_agent_role(apps, editor)


@pytest.fixture
def make_user(db: None, django_user_model: Any) -> Callable[..., Any]:
    ensure_roles()

    def make(username: str, role: str | None = None, **fields: Any) -> Any:
        if role == "admin":
            return django_user_model.objects.create_superuser(username=username, password="pw", **fields)
        user = django_user_model.objects.create_user(username=username, password="pw",
                                                     is_staff=role in ("operator", "support"), **fields)
        if role is not None:
            user.groups.add(Group.objects.get(name=role))
        return user

    return make


@pytest.fixture
def operator(make_user: Callable[..., Any]) -> Any:
    return make_user("olivia", "operator")


@pytest.fixture
def support(make_user: Callable[..., Any]) -> Any:
    return make_user("sam", "support")


@pytest.fixture
def client_user(make_user: Callable[..., Any]) -> Any:
    return make_user("clara", "client")


@pytest.fixture
def other_client(make_user: Callable[..., Any]) -> Any:
    return make_user("otto", "client")


@pytest.fixture
def outsider(make_user: Callable[..., Any]) -> Any:
    return make_user("nobody", None)


@pytest.fixture
def api_for(db: None) -> Callable[[Any], APIClient]:
    """An API client authenticated with the user's Bearer token (None: anonymous)."""

    def make(user: Any | None) -> APIClient:
        api = APIClient()
        if user is not None:
            token, _ = Token.objects.get_or_create(user=user)
            api.credentials(HTTP_AUTHORIZATION=f"Bearer {token.key}")
        return api

    return make


@pytest.fixture
def drain(db: None) -> Callable[[], int]:
    """Let the engine advance every claimable run, in this thread (the same
    claim / execute / commit path workers use)."""
    from runs.engine.worker import drain as engine_drain

    return engine_drain


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None) -> Iterator[None]:
    """pytest-django's, and before it drops the test databases: close the
    connections that threads which have ended left open. A view run with
    `sync_to_async(thread_sensitive=False)` in a test's own event loop
    (`asyncio.run`) opens its connection on one of that loop's executor
    threads; asgiref copies the thread's context back to the caller, so the
    connection's wrapper outlives the thread, checked out of the pool where
    `close_pool()` cannot close it, and PostgreSQL refuses to drop a
    database still in use. (A web process keeps one loop and its executor
    threads: nothing is left behind there.)"""
    yield
    import gc
    import threading

    from django.db.backends.base.base import BaseDatabaseWrapper

    alive = {thread.ident for thread in threading.enumerate()}
    # type(), not isinstance(): the collector also holds weak proxies whose object is gone.
    for wrapper in [obj for obj in gc.get_objects() if issubclass(type(obj), BaseDatabaseWrapper)]:
        if wrapper.connection is not None and wrapper._thread_ident not in alive:
            wrapper.inc_thread_sharing()
            wrapper.close()
