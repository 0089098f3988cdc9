"""Opaque, sortable identifiers (`run_…`, `hitl_…`, `resp_…`).

A millisecond timestamp prefix keeps ids roughly sortable by creation time
(pleasant in logs and admin lists); 64 random bits make them unguessable.
"""
from __future__ import annotations

import secrets
import time


def new_id(prefix: str) -> str:
    millis = int(time.time() * 1000)
    return f"{prefix}_{millis:012x}{secrets.token_hex(8)}"


def new_run_id() -> str:
    return new_id("run")


def new_hitl_request_id() -> str:
    return new_id("hitl")


def new_hitl_response_id() -> str:
    return new_id("resp")


def new_task_id() -> str:
    return new_id("task")
