"""The HTTP status line daphne sends carries the right reason phrase for
every status the API answers with (`422 Unprocessable Entity`, never
`422 Unknown Status`): ASGI responses have no reason phrase, daphne takes it
from Twisted's table (flexagents.http_status)."""
from __future__ import annotations

import socket
from http import HTTPStatus
from typing import Any

import pytest

from flexagents import errors

pytestmark = pytest.mark.django_db(transaction=True)


def status_line(port: int, request: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(request.encode())
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n", 1)[0].decode()


def get(path: str, token: str | None) -> str:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"


def post(path: str, token: str, body: str, content_type: str = "application/json") -> str:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body.encode())}\r\nConnection: close\r\n\r\n{body}")


def test_every_status_line_of_the_api_has_its_reason_phrase(procs: Any, token: str) -> None:
    _, port = procs.daphne()

    lines = {
        200: status_line(port, get("/api/hitl/pending", token)),
        401: status_line(port, get("/api/hitl/pending", None)),
        404: status_line(port, get("/api/v1/flex/runs/run_nope", token)),
        415: status_line(port, post("/api/v1/flex/runs", token, "objective=x", "text/plain")),
        422: status_line(port, get("/api/hitl/pending?kind=nope", token)),
    }
    for status, line in lines.items():
        assert line == f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", line
    assert "Unknown Status" not in "".join(lines.values())


def test_twisted_knows_a_phrase_for_every_status_an_error_can_have() -> None:
    from twisted.web import http

    from flexagents.http_status import complete_reason_phrases

    complete_reason_phrases()
    used = {cls.status_code for cls in vars(errors).values()
            if isinstance(cls, type) and isinstance(getattr(cls, "status_code", None), int)}
    used |= {200, 201, 202, 204, 411, 413, 415, 429}
    assert {status: http.RESPONSES.get(status) for status in used if status not in http.RESPONSES} == {}
