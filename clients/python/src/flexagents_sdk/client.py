"""The agent protocol over HTTP (API.md, "Agents: capabilities outside the
server"), one method per endpoint, on httpx.

:class:`Agent` uses these; they are public for agents that want to drive the
protocol themselves (a different concurrency model, a test). Every error
answer becomes an :class:`ApiError` carrying the server's ``code``; network
failures are httpx's own exceptions (``httpx.TransportError``).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from flexagents_sdk.bundle import Task, parse_task
from flexagents_sdk.errors import ApiError

__all__ = ["API_PREFIX", "AgentClient", "AgentHeartbeatClient", "api_base", "raise_for_status"]

API_PREFIX = "/api/v1/flex"
MAX_WAIT_SECONDS = 30
USER_AGENT = "flex-agents-sdk/0.1"


def api_base(url: str) -> str:
    """``http://host:8000`` (or ``…/api/v1/flex``) → ``http://host:8000/api/v1/flex``."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"the server URL must start with http:// or https://, got {url!r}")
    return url if url.endswith(API_PREFIX) else url + API_PREFIX


def _headers(token: str) -> dict[str, str]:
    if not token or not token.strip():
        raise ValueError("an API token is needed (manage.py flex_user NAME --role agent --token)")
    return {"Authorization": f"Bearer {token.strip()}", "User-Agent": USER_AGENT, "Accept": "application/json"}


def raise_for_status(response: httpx.Response) -> None:
    """Raise :class:`ApiError` for a 4xx/5xx answer, with the body's code, message and details."""
    if response.status_code < 400:
        return
    code, message = f"http_{response.status_code}", response.reason_phrase or "error"
    details: dict[str, Any] = {}
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        code = str(body.get("code") or code)
        message = str(body.get("message") or message)
        if isinstance(body.get("details"), dict):
            details = body["details"]
    raise ApiError(response.status_code, code, message, details, retry_after=_retry_after(response))


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare from this server; the backoff decides


def _json(response: httpx.Response) -> dict[str, Any]:
    raise_for_status(response)
    if response.status_code == 204 or not response.content:
        return {}
    body = response.json()
    return body if isinstance(body, dict) else {"body": body}


class AgentClient:
    """The asynchronous calls of an agent: register, claim, and the task calls.

    ``timeout`` bounds every call but ``claim``, whose read timeout is its
    ``wait_seconds`` plus ``timeout`` (a long poll answers late by design).
    """

    def __init__(self, url: str, token: str, *, timeout: float = 15.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base = api_base(url)
        self.timeout = timeout
        self._http = httpx.AsyncClient(headers=_headers(token), timeout=timeout, transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _post(self, path: str, body: Mapping[str, Any], *, timeout: float | None = None) -> httpx.Response:
        return await self._http.post(self.base + path, json=body,
                                     timeout=self.timeout if timeout is None else timeout)

    async def register(self, registration: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /agents/register``: declare (or replace) the agent and its capabilities."""
        return _json(await self._post("/agents/register", registration))

    async def heartbeat(self, agent_id: str) -> dict[str, Any]:
        """``POST /agents/{agentId}/heartbeat``: the agent is alive."""
        return _json(await self._post(f"/agents/{quote(agent_id, safe='')}/heartbeat", {}))

    async def claim(self, agent_id: str, *, wait_seconds: float = MAX_WAIT_SECONDS) -> Task | None:
        """``POST /agents/{agentId}/tasks/claim``: a task (and its lease), or
        None when nothing came within ``wait_seconds`` (0..30)."""
        wait = max(0, min(MAX_WAIT_SECONDS, int(wait_seconds)))
        response = await self._post(f"/agents/{quote(agent_id, safe='')}/tasks/claim", {"waitSeconds": wait},
                                    timeout=wait + self.timeout)
        raise_for_status(response)
        if response.status_code == 204:
            return None
        return parse_task(response.json())

    async def renew(self, task_id: str, lease_token: str) -> dict[str, Any]:
        """``POST /tasks/{taskId}/heartbeat``: extend the task's lease."""
        return _json(await self._post(f"/tasks/{quote(task_id, safe='')}/heartbeat", {"leaseToken": lease_token}))

    async def complete(self, task_id: str, lease_token: str, output: Mapping[str, Any],
                       usage: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``POST /tasks/{taskId}/complete`` with the output facets."""
        body: dict[str, Any] = {"leaseToken": lease_token, "output": dict(output)}
        if usage is not None:
            body["usage"] = dict(usage)
        return _json(await self._post(f"/tasks/{quote(task_id, safe='')}/complete", body))

    async def fail(self, task_id: str, lease_token: str, *, code: str, message: str,
                   retryable: bool) -> dict[str, Any]:
        """``POST /tasks/{taskId}/fail``."""
        body = {"leaseToken": lease_token, "error": {"code": code, "message": message}, "retryable": retryable}
        return _json(await self._post(f"/tasks/{quote(task_id, safe='')}/fail", body))

    async def clarify(self, task_id: str, lease_token: str, *, question: str,
                      options: list[dict[str, str]] | None = None, allow_free_form: bool = True) -> dict[str, Any]:
        """``POST /tasks/{taskId}/clarify``: a person answers, then the task comes back."""
        body = {"leaseToken": lease_token, "question": question, "options": list(options or []),
                "allowFreeForm": allow_free_form}
        return _json(await self._post(f"/tasks/{quote(task_id, safe='')}/clarify", body))


class AgentHeartbeatClient:
    """The agent heartbeat, synchronous: :class:`Agent` sends it from a
    thread of its own, so that neither busy functions nor a slow long poll
    can delay it."""

    def __init__(self, url: str, token: str, *, timeout: float = 10.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.base = api_base(url)
        self._http = httpx.Client(headers=_headers(token), timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def heartbeat(self, agent_id: str) -> dict[str, Any]:
        """``POST /agents/{agentId}/heartbeat``."""
        return _json(self._http.post(f"{self.base}/agents/{quote(agent_id, safe='')}/heartbeat", json={}))
