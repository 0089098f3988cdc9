"""`GET /api/ready` against real daphne, flex_worker and redis-server processes."""
from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.multiprocess.conftest import is_postgres
from tests.multiprocess.procs import PrivateRedis, ProcGroup, child_database_url, free_port, wait_for
from tests.tcpproxy import TcpProxy

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

FAST_HEARTBEAT = {"FLEX_WORKER_HEARTBEAT_SECONDS": "0.1", "FLEX_WORKER_STALE_SECONDS": "1.5"}


def ready(port: int) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}/api/ready", timeout=10)


def wait_ready(port: int, status: int, what: str, failing: str = "") -> dict[str, Any]:
    """The first body with that status (and, if given, that failed check)."""

    def probe() -> dict[str, Any] | None:
        response = ready(port)
        body = response.json()
        if response.status_code != status or (failing and failing not in body["details"]["failed"]):
            return None
        return body

    return wait_for(probe, timeout=20, interval=0.1, what=what)


def test_it_needs_a_fresh_worker_and_follows_redis_going_down_and_up(procs: ProcGroup) -> None:
    redis = PrivateRedis()
    redis.start()
    try:
        env = {"REDIS_URL": redis.url, **FAST_HEARTBEAT}
        _, port = procs.daphne(env=env)
        # Liveness and readiness differ: the server is up, nothing executes runs.
        assert httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=10).status_code == 200
        response = ready(port)
        assert response.status_code == 503
        body = response.json()
        assert body["code"] == "not_ready"
        assert body["details"]["failed"] == ["workers"]
        assert "worker" in body["message"]
        assert response.headers["Retry-After"] == "5"

        worker = procs.worker(env=env)
        body = wait_ready(port, 200, "ready with a worker")
        assert body["status"] == "ready"
        assert body["checks"]["database"] == "ok"
        assert body["checks"]["redis"] == "ok"
        assert body["checks"]["workers"]["fresh"] >= 1

        redis.shutdown()
        body = wait_ready(port, 503, "not ready without redis")
        assert body["code"] == "not_ready"
        assert body["details"]["failed"] == ["redis"]
        assert body["details"]["checks"]["redis"] == "down"

        redis.start()
        wait_ready(port, 200, "ready again with redis back")

        worker.stop()
        body = wait_ready(port, 503, "not ready once the worker's heartbeat is stale")
        assert body["details"]["failed"] == ["workers"]
    finally:
        redis.shutdown()




def test_it_answers_503_when_the_database_does_not_answer_and_200_when_it_is_back(procs: ProcGroup) -> None:
    if not is_postgres():
        # SQLite is a file, it cannot go down: point a web process at a
        # PostgreSQL address where nothing listens instead.
        _, port = procs.daphne(env={"DATABASE_URL": f"postgres://postgres@127.0.0.1:{free_port()}/flex",
                                    **FAST_HEARTBEAT})
        body = wait_ready(port, 503, "not ready without a database", failing="database")
        assert body["details"]["checks"]["database"] == "down"
        assert "database" in body["message"]
        return
    # PostgreSQL behind a proxy that the test stops and starts again.
    from urllib.parse import urlparse, urlunparse

    parsed = urlparse(child_database_url())
    proxy = TcpProxy(parsed.port or 5432).start()
    try:
        proxied = urlunparse(parsed._replace(netloc=f"{parsed.username or 'postgres'}@127.0.0.1:{proxy.port}"))
        _, port = procs.daphne(env={"DATABASE_URL": proxied, **FAST_HEARTBEAT})
        procs.worker(env=FAST_HEARTBEAT)
        wait_ready(port, 200, "ready")
        proxy.stop()
        body = wait_ready(port, 503, "not ready with the database gone", failing="database")
        assert body["details"]["checks"]["database"] == "down"
        assert "database" in body["message"]
        proxy.start()
        wait_ready(port, 200, "ready again with the database back")
    finally:
        proxy.stop()
