from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime

import pytest

from flexagents.logging import JsonFormatter
from flexagents.redaction import REDACTED


@pytest.fixture
def log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.flexagents.json")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    yield logger, stream
    logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_it_writes_one_json_object_per_line(log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = log
    logger.info("run %s resumed\nsecond line", "run_1", extra={"run_id": "run_1", "operator_id": 7,
                                                                 "plan_version": 2, "action": "resume"})
    [entry] = lines(stream)
    assert entry["level"] == "INFO"
    assert entry["logger"] == "tests.flexagents.json"
    assert entry["message"] == "run run_1 resumed\nsecond line"
    assert (entry["run_id"], entry["operator_id"], entry["plan_version"], entry["action"]) == ("run_1", 7, 2, "resume")
    assert entry["timestamp"].endswith("Z")
    assert datetime.fromisoformat(entry["timestamp"]).utcoffset().total_seconds() == 0


def test_it_redacts_extras_by_key_and_by_text(log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = log
    logger.info("call", extra={"api_key": 42, "payload": {"nested": {"password": "p"}, "note": "token=abc"}})
    [entry] = lines(stream)
    assert entry["api_key"] == REDACTED
    assert entry["payload"] == {"nested": {"password": REDACTED}, "note": f"token={REDACTED}"}


def test_it_redacts_the_message(log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = log
    logger.warning("upstream refused Authorization: Bearer abc123")
    assert "abc123" not in stream.getvalue()


def test_it_formats_and_redacts_exceptions(log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = log
    try:
        raise ValueError("connect failed password=hunter2")
    except ValueError:
        logger.exception("boom")
    [entry] = lines(stream)
    assert entry["exc"].startswith("Traceback")
    assert "ValueError" in entry["exc"]
    assert "hunter2" not in entry["exc"]


def test_it_serializes_values_json_cannot(log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = log
    logger.info("at", extra={"when": datetime(2026, 1, 1), "obj": object()})
    [entry] = lines(stream)
    assert entry["when"] == "2026-01-01 00:00:00"
    assert entry["obj"].startswith("<object object")
