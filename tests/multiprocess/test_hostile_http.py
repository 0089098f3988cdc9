"""Bodies and logs through a real daphne process, started as the Procfile
starts it (`python -m flexagents.serve`): chunked JSON is read under the same
size limit, a multipart body Twisted cannot parse still reaches the app and
gets a JSON 415, and the access log masks secrets in query strings."""
from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from runs.models import Run
from tests.conftest import load_envelope
from tests.multiprocess.procs import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

RUNS = "/api/v1/flex/runs"


def raw_request(port: int, head: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request over a plain socket; the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    header_text, _, payload = data.partition(b"\r\n\r\n")
    status_line, *lines = header_text.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    if headers.get("transfer-encoding") == "chunked":
        decoded, rest = b"", payload
        while rest:
            size_text, _, rest = rest.partition(b"\r\n")
            size = int(size_text, 16)
            if size == 0:
                break
            decoded, rest = decoded + rest[:size], rest[size + 2:]
        payload = decoded
    return int(status_line.split()[1]), headers, payload


def chunks(data: bytes, size: int = 4096) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


@pytest.fixture
def web(procs: Any) -> int:
    _, port = procs.daphne(env={"LOG_LEVEL": "INFO"})
    return port


def test_a_chunked_json_body_is_read_like_any_other(web: int, token: str) -> None:
    envelope = load_envelope("linkedin-variants")
    body = json.dumps(envelope).encode()

    response = httpx.post(f"http://127.0.0.1:{web}{RUNS}", content=chunks(body, 512), timeout=30,
                          headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})

    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert response.status_code == 202, response.text
    run = Run.objects.get(pk=response.json()["runId"])
    assert run.envelope["objective"] == envelope["objective"]


def test_a_chunked_body_past_the_size_limit_is_a_json_413(web: int, token: str) -> None:
    body = json.dumps({"objective": "x" * (2_621_440)}).encode()  # 2.5 MiB, limit 1 MiB

    response = httpx.post(f"http://127.0.0.1:{web}{RUNS}", content=chunks(body, 65536), timeout=60,
                          headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})

    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert Run.objects.count() == 0


@pytest.mark.parametrize("content_type", ["multipart/form-data; boundary=", "multipart/form-data",
                                          "multipart/form-data; boundary=xyz"])
def test_a_multipart_body_is_a_json_415(web: int, token: str, content_type: str) -> None:
    body = b"--xyz\r\nContent-Disposition: form-data; name=\"objective\"\r\n\r\nhi\r\n--xyz--\r\n"
    status, headers, payload = raw_request(web, (
        f"POST {RUNS} HTTP/1.1\nHost: 127.0.0.1\nAuthorization: Bearer {token}\n"
        f"Content-Type: {content_type}\nContent-Length: {len(body)}\nConnection: close\n"), body)

    assert status == 415
    assert headers["content-type"] == "application/json"
    assert json.loads(payload)["code"] == "unsupported_media_type"


def test_the_access_log_masks_secrets_in_query_strings(procs: Any, web: int, token: str) -> None:
    secrets = {"api_key": "SEKRIT-api-1", "token": "SEKRIT-tok-2", "ticket": "SEKRIT-tkt-3",
               "api%5Fkey": "SEKRIT-enc-4", "note": "password=SEKRIT-txt-5"}
    query = "status=completed&" + "&".join(
        f"{key}={str(httpx.QueryParams({'v': value})).split('=', 1)[1]}" for key, value in secrets.items())

    response = httpx.get(f"http://127.0.0.1:{web}{RUNS}?{query}", timeout=30,
                         headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    [daphne] = procs.procs

    line = wait_for(lambda: next((entry for entry in map(_json_or_none, daphne.logs(tail=200_000).splitlines())
                                  if entry and entry.get("logger") == "flexagents.access"), None),
                    timeout=10, what="the access log line")
    logs = daphne.logs(tail=200_000)
    assert "SEKRIT" not in logs
    assert line["path"] == RUNS and line["status"] == 200 and line["method"] == "GET"
    assert "status=completed" in line["query"]
    for key in ("api_key", "token", "ticket"):
        assert f"{key}=[redacted]" in line["query"] or f"{key}=%5Bredacted%5D" in line["query"]
    # daphne's own access line (`127.0.0.1:5678 - - [date] "GET /api/…?…" 200 12`) is gone.
    assert not [text for text in logs.splitlines() if text.startswith("127.0.0.1:")]


def _json_or_none(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
