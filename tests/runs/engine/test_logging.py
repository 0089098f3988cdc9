"""Correlation ids and the engine's structured log lines (seed 8.3 FR1 / IR7):
the id comes from `metadata.correlationId`, the `X-Correlation-ID` header or
is generated; it is echoed, in the `start` payload, in the debug view and in
every log line about the run; every node start, completion and error is one
line with run, node, capability, attempt and status."""
from __future__ import annotations

import io
import json
import logging
import re

import pytest

from flexagents.logging import JsonFormatter
from tests.capabilities import review_envelope
from tests.conftest import load_envelope

pytestmark = pytest.mark.django_db


@pytest.fixture
def log_lines():
    """Every log line written during the test, formatted as in production."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)

    def lines():
        return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]

    yield lines
    root.removeHandler(handler)
    root.setLevel(previous)


def envelope(name="linkedin-variants"):
    """An example envelope without its own correlation id."""
    body = load_envelope(name)
    body["metadata"].pop("correlationId", None)
    return body


def submit(api, body, **headers):
    response = api.post("/api/v1/flex/runs", body, format="json", **headers)
    assert response.status_code == 202, response.content
    return response


def events(api, run_id):
    return api.get(f"/api/v1/flex/runs/{run_id}/events?limit=1000").json()["events"]


def test_the_header_correlation_id_follows_the_run_everywhere(api_for, client_user, drain, log_lines):
    api = api_for(client_user)
    response = submit(api, envelope(), HTTP_X_CORRELATION_ID="order-4711")
    run_id = response.json()["runId"]
    assert response["X-Correlation-ID"] == "order-4711"

    drain()

    start = events(api, run_id)[0]
    assert start["type"] == "start" and start["payload"]["correlationId"] == "order-4711"
    assert api.get(f"/api/v1/flex/runs/{run_id}").json()["run"]["correlationId"] == "order-4711"
    about_the_run = [line for line in log_lines() if line.get("run_id") == run_id]
    assert about_the_run, "no log line names the run"
    assert {line.get("correlation_id") for line in about_the_run} == {"order-4711"}, [(l["logger"], l["message"], l.get("correlation_id")) for l in about_the_run if l.get("correlation_id") != "order-4711"]


def test_each_node_start_and_completion_is_one_structured_line(api_for, client_user, drain, log_lines):
    api = api_for(client_user)
    run_id = submit(api, load_envelope("linkedin-variants")).json()["runId"]
    drain()

    frames = [f for f in events(api, run_id) if f["type"] in ("node_start", "node_complete")]
    lines = [line for line in log_lines() if line.get("run_id") == run_id
             and line["message"] in ("node_start", "node_complete")]
    assert [(line["message"], line["node_id"], line["capability_id"], line["attempt"]) for line in lines] == [
        (f["type"], f["payload"]["nodeId"], f["payload"]["capabilityId"], f["payload"]["attempt"]) for f in frames]
    assert {line["status"] for line in lines if line["message"] == "node_start"} == {"running"}
    assert {line["status"] for line in lines if line["message"] == "node_complete"} == {"completed"}
    assert all(line["correlation_id"] for line in lines)


def test_a_node_error_is_one_structured_line(api_for, client_user, drain, log_lines, settings):
    settings.FLEX_EXTRA_CAPABILITIES = ["tests.capabilities.UnreachableOnceReview"]
    api = api_for(client_user)
    run_id = submit(api, review_envelope(envelope(), "test.UnreachableOnceReview"),
                    HTTP_X_CORRELATION_ID="flaky-1").json()["runId"]
    drain()

    [error] = [line for line in log_lines() if line.get("run_id") == run_id and line["message"] == "node_error"]
    assert error["level"] == "WARNING"
    assert (error["node_id"], error["capability_id"], error["attempt"], error["status"]) == (
        "test", "test.UnreachableOnceReview", 1, "running")  # retried at once: running its next attempt
    assert error["error_code"] == "review_unavailable" and error["will_retry"] is True
    assert error["correlation_id"] == "flaky-1"


def test_metadata_correlation_id_wins_and_is_echoed(api_for, client_user):
    body = envelope()
    body["metadata"]["correlationId"] = "from-the-envelope"
    response = submit(api_for(client_user), body, HTTP_X_CORRELATION_ID="from-the-header")

    assert response["X-Correlation-ID"] == "from-the-envelope"
    debug = api_for(client_user).get(f"/api/v1/flex/runs/{response.json()['runId']}").json()
    assert debug["run"]["correlationId"] == "from-the-envelope"


def test_without_one_a_correlation_id_is_generated_and_echoed(api_for, client_user):
    response = submit(api_for(client_user), envelope())

    generated = response["X-Correlation-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    debug = api_for(client_user).get(f"/api/v1/flex/runs/{response.json()['runId']}").json()
    assert debug["run"]["correlationId"] == generated


def test_every_response_echoes_the_correlation_id_even_an_error(api_for, client_user):
    api = api_for(client_user)
    assert api.get("/api/v1/flex/runs", HTTP_X_CORRELATION_ID="list-1")["X-Correlation-ID"] == "list-1"
    missing = api.get("/api/v1/flex/runs/run_nope", HTTP_X_CORRELATION_ID="missing-1")
    assert missing.status_code == 404 and missing["X-Correlation-ID"] == "missing-1"
    # A value that is not a plausible id is replaced, not echoed.
    odd = api.get("/api/v1/flex/runs", HTTP_X_CORRELATION_ID="<script>")["X-Correlation-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", odd)


def test_an_envelope_correlation_id_unfit_for_a_header_is_kept_but_not_echoed(api_for, client_user):
    body = envelope()
    body["metadata"]["correlationId"] = "line one\r\nSet-Cookie: x=1"
    response = submit(api_for(client_user), body, HTTP_X_CORRELATION_ID="safe-1")

    assert response["X-Correlation-ID"] == "safe-1"
    debug = api_for(client_user).get(f"/api/v1/flex/runs/{response.json()['runId']}").json()
    assert debug["run"]["correlationId"] == "line one\r\nSet-Cookie: x=1"
