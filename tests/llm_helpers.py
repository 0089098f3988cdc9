"""The local OpenAI-compatible test server (tests/llm_server.py) as a
separate process, and what tests need around it."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

SERVER = Path(__file__).with_name("llm_server.py")
# Planted in the environment of every LLM test: it must appear nowhere a
# person or a log can read it.
TEST_API_KEY = "sk-test-flex-0d9c1e7a5b3f4e2d8c6a"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LlmTestServer:
    """`tests/llm_server.py` on a free port, in its own process."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.proc = subprocess.Popen([sys.executable, str(SERVER), "--port", str(self.port)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while True:
            try:
                self._call("GET", "/_health")
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the LLM test server did not start") from None
                time.sleep(0.05)

    @property
    def base_url(self) -> str:
        """What `OPENAI_BASE_URL` is set to (the SDK appends /chat/completions)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def script(self, replies: list[dict[str, Any]], *, append: bool = False) -> None:
        self._call("POST", "/_script", {"replies": replies, "append": append})

    def requests(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/_requests")["requests"])

    def reset(self) -> None:
        self._call("POST", "/_reset", {})

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def answer(facets: dict[str, Any], *, prompt_tokens: int = 100, completion_tokens: int = 50,
           match: str | None = None, **extra: Any) -> dict[str, Any]:
    """A scripted 200 whose content is `{"answer": facets}`."""
    reply: dict[str, Any] = {"status": 200, "json": {"answer": facets},
                             "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
                             **extra}
    if match is not None:
        reply["match"] = match
    return reply


def brief_facets(audience: str = "Compliance officers at mid-sized banks") -> dict[str, Any]:
    return {
        "creative_brief": {"audience": audience, "objective": "Announce the audit trail",
                           "keyMessages": ["Every change is recorded as it happens"], "tone": "confident",
                           "channel": "linkedin", "postType": "launch", "goal": "Drive demo sign-ups"},
        "strategic_rationale": "Compliance teams fear audit gaps; lead with the fix.",
        "handoff_summary": f"Write for {audience}; name Akkuro; close on demo sign-ups.",
    }


def copy_facets(count: int = 2, audience: str = "Compliance officers at mid-sized banks") -> dict[str, Any]:
    variants = [{"headline": f"Akkuro audit trail, take {i + 1}",
                 "body": f"Akkuro records every change in real time for {audience}. Variant {i + 1}.",
                 "callToAction": "Book a demo"} for i in range(count)]
    return {"copyVariants": variants, "post_copy": variants[0]["body"]}


def review_facets(score: float = 0.9) -> dict[str, Any]:
    return {"qa_report": {"score": score, "findings": [{"severity": "info", "message": "Clear and specific."}]}}
