"""HTTP and SSE access to the Flex Agents API for the `flex` command."""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

# Frames that end a run's stream.
TERMINAL_EVENT = "complete"


class FlexError(Exception):
    """An API error (API.md error body) or a connection that cannot be made."""

    def __init__(self, code: str, message: str, status: int | None = None, details: Any = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.details = details or {}


def _error_from(response: httpx.Response) -> FlexError:
    try:
        body = response.json()
        return FlexError(body.get("code", "http_error"), body.get("message", response.reason_phrase),
                         response.status_code, body.get("details"))
    except ValueError:
        return FlexError("http_error", f"HTTP {response.status_code} {response.reason_phrase}", response.status_code)


@dataclass
class SSEFrame:
    id: str | None = None
    event: str = "message"
    data: str = ""


def _code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("code") if isinstance(body, dict) else None


def parse_sse(lines: Iterator[str]) -> Iterator[SSEFrame]:
    """SSE frames from lines (comments and keep-alives skipped)."""
    frame = SSEFrame()
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                frame.data = "\n".join(data)
                yield frame
            frame, data = SSEFrame(), []
            continue
        if line.startswith(":"):
            continue
        key, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if key == "data":
            data.append(value)
        elif key == "id":
            frame.id = value
        elif key == "event":
            frame.event = value


@dataclass
class FlexClient:
    url: str
    token: str = ""
    timeout: float = 30.0
    # Reconnection after a dropped stream: attempts in a row without any new
    # frame, and the longest pause between them.
    max_reconnects: int = 20
    max_backoff: float = 5.0
    _http: httpx.Client = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        headers = {"Accept": "application/json", "User-Agent": "flex-cli"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=self.timeout)

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise FlexError("connection_failed", f"cannot reach {self.url}: {exc}") from None
        if response.status_code >= 400:
            raise _error_from(response)
        return response.json() if response.content else None

    def post_once(self, path: str, body: Any, *, attempts: int = 4) -> Any:
        """POST a state change with an Idempotency-Key (docs/api.md,
        Idempotency), retried with the same key when the connection fails or
        the first try is still executing: at most one effect, whatever
        happens to the answer on its way back."""
        headers = {"Idempotency-Key": f"flex-cli-{uuid.uuid4().hex}"}
        failure: FlexError | None = None
        for attempt in range(attempts):
            if attempt:
                time.sleep(min(0.5 * 2 ** (attempt - 1), self.max_backoff))
            try:
                response = self._http.post(path, json=body, headers=headers)
            except httpx.TransportError as exc:
                failure = FlexError("connection_failed", f"cannot reach {self.url}: {exc}")
                continue
            if response.status_code == 409 and _code(response) == "idempotency_in_progress":
                failure = _error_from(response)
                continue
            if response.status_code >= 400:
                raise _error_from(response)
            return response.json() if response.content else None
        assert failure is not None
        raise failure

    def pages(self, path: str, key: str, params: dict[str, Any] | None = None,
              limit: int | None = None) -> list[dict[str, Any]]:
        """Every item of a paginated list (follows `next`), up to `limit`."""
        items: list[dict[str, Any]] = []
        body = self.request("GET", path, params={k: v for k, v in (params or {}).items() if v})
        while True:
            items += body.get(key, [])
            if not body.get("next") or (limit is not None and len(items) >= limit):
                return items[:limit] if limit is not None else items
            body = self.request("GET", body["next"])

    def follow(self, run_id: str, *, last_event_id: str | None = None,
               on_reconnect: Callable[[int, str | None], None] | None = None) -> Iterator[dict[str, Any]]:
        """The run's events, oldest first, each exactly once, until `complete`.

        A dropped connection (or a stream that ends before `complete`) is
        resumed with `Last-Event-ID` = the id of the last frame received, so
        the server replays exactly what was missed; events whose `seq` was
        already seen are skipped as a second line of defence.
        """
        path = f"/api/v1/flex/runs/{run_id}/stream"
        last_seq = 0
        failures = 0
        while True:
            headers = {"Accept": "text/event-stream"}
            if last_event_id:
                headers["Last-Event-ID"] = last_event_id
            try:
                # Keep-alives come every 15-20 s: a read timeout well above that.
                with self._http.stream("GET", path, headers=headers,
                                       timeout=httpx.Timeout(60.0, connect=10.0)) as response:
                    if response.status_code >= 400:
                        response.read()
                        error = _error_from(response)
                        if response.status_code < 500:
                            raise error  # retrying cannot help
                        raise httpx.TransportError(error.message)
                    for frame in parse_sse(response.iter_lines()):
                        try:
                            event = json.loads(frame.data)
                        except ValueError:
                            continue
                        if not isinstance(event, dict) or "type" not in event:
                            continue  # control frames (stream-open, stream-reset)
                        if frame.id:
                            last_event_id = frame.id
                        seq = event.get("seq") or 0
                        if seq and seq <= last_seq:
                            continue
                        last_seq = max(last_seq, seq)
                        failures = 0
                        yield event
                        if event["type"] == TERMINAL_EVENT:
                            return
            except httpx.TransportError:
                pass  # dropped, refused, timed out: reconnect below
            failures += 1
            if failures > self.max_reconnects:
                raise FlexError("connection_lost", f"the stream of run {run_id} dropped {failures} times in a row")
            if on_reconnect is not None:
                on_reconnect(failures, last_event_id)
            time.sleep(min(0.25 * 2 ** (failures - 1), self.max_backoff))
