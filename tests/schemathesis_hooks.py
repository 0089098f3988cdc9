"""Schemathesis hooks for tests/multiprocess/test_schemathesis.py (loaded
through `SCHEMATHESIS_HOOKS=tests.schemathesis_hooks`).

One extra check: every error response under /api/ is our JSON error body
(`{"code", "message", "details"}`, API.md), never HTML, text or empty.
"""
from __future__ import annotations

import json
from typing import Any

import schemathesis


@schemathesis.check
def error_bodies_are_json(ctx: Any, response: Any, case: Any) -> bool | None:
    if response.status_code < 400:
        return None
    content_type = (response.headers.get("content-type") or [""])[0].split(";")[0].strip()
    if content_type != "application/json":
        raise AssertionError(f"{response.status_code} error with Content-Type {content_type or 'none'!r}, not JSON")
    try:
        body = json.loads(response.content or b"")
    except ValueError:
        raise AssertionError(f"{response.status_code} error body is not valid JSON") from None
    if not (isinstance(body, dict) and isinstance(body.get("code"), str) and isinstance(body.get("message"), str)):
        raise AssertionError(f"{response.status_code} error body lacks code/message")
    return None
