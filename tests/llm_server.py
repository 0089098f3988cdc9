"""A local OpenAI-compatible chat-completions server for tests and the benchmark.

Run as its own process: `python tests/llm_server.py --port 8765`. It speaks
the wire protocol the `openai` SDK speaks — `POST /v1/chat/completions` with
the real response body (`id`, `object`, `choices[].message`, `finish_reason`,
`usage`) and the real error body (`{"error": {"message", "type", "param",
"code"}}`) — and answers from a script the test gives it:

- `POST /_script` `{"replies": [Reply, ...], "append": false}` sets (or extends) the script;
- `GET /_requests` → `{"requests": [{"path", "headers", "body", "receivedAt", "handledMs"}, ...]}`
  every chat request received, in order;
- `POST /_reset` forgets script and requests.

A `Reply` is consumed by the first request it fits (`match`: a substring of
the request body, optional):
`{"status": 200, "content": "<raw text>" | "json": <value to encode as content>,
  "usage": {"prompt_tokens", "completion_tokens"}, "model"?, "finish_reason"?,
  "delayMs"?, "headers"?, "match"?}`
or an error: `{"status": 429|401|500|…, "error": {"message", "type", "code"}, "headers"?}`;
`{key}` in an error message is replaced by the bearer key the request sent
(as OpenAI's own 401 message quotes it). With no reply left, the server
answers 400 with a message that says so (a permanent error: the test fails
visibly instead of retrying).
"""
from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_lock = threading.Lock()
_script: list[dict[str, Any]] = []
_requests: list[dict[str, Any]] = []
_counter = [0]


def _take(body_text: str) -> dict[str, Any] | None:
    with _lock:
        for index, reply in enumerate(_script):
            match = reply.get("match")
            if match is None or match in body_text:
                return _script.pop(index)
    return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "flex-llm-test-server/1"
    # Headers and body leave in two writes; with Nagle's algorithm on, the
    # body waits for the client's delayed ACK (~40 ms) — a latency that is
    # neither the model's nor ours.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 — the stdlib's name
        pass  # quiet: tests read /_requests

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, str(value))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/_requests":
            with _lock:
                self._send(200, {"requests": list(_requests)})
        elif self.path == "/_health":
            self._send(200, {"ok": True})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error",
                                       "param": None, "code": "not_found"}})

    def do_POST(self) -> None:  # noqa: N802
        raw = self._body()
        if self.path == "/_script":
            data = json.loads(raw or b"{}")
            with _lock:
                if not data.get("append"):
                    _script.clear()
                _script.extend(data.get("replies") or [])
            self._send(200, {"script": len(_script)})
            return
        if self.path == "/_reset":
            with _lock:
                _script.clear()
                _requests.clear()
            self._send(200, {"ok": True})
            return
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._send(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error",
                                       "param": None, "code": "not_found"}})
            return
        self._chat(raw)

    def _chat(self, raw: bytes) -> None:
        started = time.perf_counter()
        text = raw.decode("utf-8", "replace")
        try:
            body = json.loads(text)
        except ValueError:
            self._send(400, {"error": {"message": "We could not parse the JSON body of your request.",
                                       "type": "invalid_request_error", "param": None, "code": None}})
            return
        record = {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body,
                  "receivedAt": time.time()}
        with _lock:
            _requests.append(record)
        reply = _take(text)
        if reply is None:
            reply = {"status": 400, "error": {"message": "the test server's script has no reply for this request",
                                              "type": "invalid_request_error", "code": "script_exhausted"}}
        if reply.get("delayMs"):
            time.sleep(float(reply["delayMs"]) / 1000.0)
        status = int(reply.get("status", 200))
        headers = dict(reply.get("headers") or {})
        if status != 200:
            error = dict(reply.get("error") or {})
            key = (self.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
            error["message"] = str(error.get("message") or "error").replace("{key}", key)
            error.setdefault("type", "invalid_request_error")
            error.setdefault("param", None)
            error.setdefault("code", None)
            record["handledMs"] = (time.perf_counter() - started) * 1000.0
            self._send(status, {"error": error}, headers)
            return
        content = reply["content"] if "content" in reply else json.dumps(reply.get("json"))
        usage = reply.get("usage") or {"prompt_tokens": 10, "completion_tokens": 5}
        prompt, completion = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
        with _lock:
            _counter[0] += 1
            number = _counter[0]
        record["handledMs"] = (time.perf_counter() - started) * 1000.0
        self._send(200, {
            "id": f"chatcmpl-test{number}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": reply.get("model") or body.get("model") or "test-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": None},
                         "logprobs": None, "finish_reason": reply.get("finish_reason", "stop")}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
            "system_fingerprint": None,
        }, headers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    print(f"llm test server listening on {args.host}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
