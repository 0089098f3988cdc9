"""Schemathesis against a live daphne (the Procfile's web command), once with
a client token and once with an operator token: every check
(`--checks all` plus `error_bodies_are_json`, tests/schemathesis_hooks.py),
every phase, a bounded number of cases per operation. Strict: no 5xx, no
undocumented status code, no error body that is not our JSON, no response
outside its schema, no request the schema allows and the server refuses
(or the reverse) — save the narrow, by-design exceptions in `BY_DESIGN`.

Not fuzzed here: the two operations that follow a run's event stream
(`runStream`, POST /api/v1/flex/run.stream, and `runStreamFollow`, GET
/api/v1/flex/runs/{runId}/stream). A schema-valid request opens a stream that
stays open until the run ends (no worker runs here) with a keep-alive
comment every 15 s, so each case would hold the fuzzer for its whole request
timeout (the run took more than 10 minutes with them). Their contract —
status codes, JSON errors, Last-Event-ID, slots — is tested by
tests/runs/test_run_stream.py, tests/runs/test_streaming.py,
tests/runs/test_stream_ticket.py, tests/multiprocess/test_streams.py and
tests/multiprocess/test_stream_admission.py.

Knobs: `FLEX_SCHEMATHESIS_EXAMPLES` (cases per operation in the fuzzing
phase, default 10), `FLEX_SCHEMATHESIS_SEED` (default 16).
"""
from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ensure_roles, load_envelope
from tests.multiprocess.procs import BASE_DIR

pytestmark = [pytest.mark.slow, pytest.mark.long, pytest.mark.django_db(transaction=True)]

EXAMPLES = int(os.environ.get("FLEX_SCHEMATHESIS_EXAMPLES", "10"))
SEED = os.environ.get("FLEX_SCHEMATHESIS_SEED", "16")
STREAMING = ("runStream", "runStreamFollow")  # see the module docstring

# Findings that are right by design: a schema-valid request the server
# refuses (`positive_data_acceptance`) with a 422 whose every error is one of
# these, each a rule OpenAPI 3.0 cannot state. (path suffix, message start)
BY_DESIGN = (
    # The list cursor is opaque and signed: any string is schema-valid, only
    # one the server returned in a `next` link is accepted.
    ("/cursor", "not a cursor returned by this endpoint"),
    # NUL characters are refused anywhere in a body (neither database stores
    # them). The schema says so on every declared string (`pattern`), but
    # OpenAPI 3.0 has no `propertyNames` for keys, and free JSON (`metadata`,
    # `directives`, facet values' open objects) is declared as any JSON.
    ("", "has a key that contains a NUL character"),
    ("", "contains a NUL character"),
    # Runtime policy ids are unique within an envelope; `uniqueItems` compares
    # whole items, not one property of them.
    ("/id", "duplicate policy id"),
    # A `hitl` action's assignees and escalation targets must be existing
    # users and groups (server state, like the cursor; usernames are not
    # published in the schema), and its deadline fields depend on each other
    # (docs/hitl.md, "Governing human decisions").
    ("", "unknown user "),
    ("", "unknown group "),
    ("/onTimeout", "onTimeout needs timeoutSeconds"),
    ("/onTimeout/optionId", "expected one of the request's options"),
    ("/onTimeout/optionId", "optionId goes with type 'option' only"),
    ("/escalateTo", "escalateTo needs escalateAfterSeconds"),
    ("/escalateAfterSeconds", "must be less than timeoutSeconds"),
    # The same for goal ids.
    ("/id", "duplicate goal id"),
    # Which actions an onNodeFail policy may take depends on the trigger kind.
    ("/action/type", "an onNodeFail policy can only"),
)
# A goal's condition is any JSON-Logic rule in the schema; the server also
# wants its every var to be a literal path starting with a catalog facet
# (422 unknown_facet or validation_failed at the condition).
GOAL_CONDITION = re.compile(r"^/policies/planner/goals/\d+/condition$")


def token_for(django_user_model: Any, username: str, role: str) -> str:
    from django.contrib.auth.models import Group
    from rest_framework.authtoken.models import Token

    ensure_roles()
    user = django_user_model.objects.create_user(username=username, password="pw", is_staff=role == "operator")
    user.groups.add(Group.objects.get(name=role))
    return Token.objects.create(user=user).key


def by_design(check: str, response: dict[str, Any] | None) -> bool:
    if check != "positive_data_acceptance" or not response or response.get("status_code") != 422:
        return False
    content = response.get("content") or ""
    if isinstance(content, dict):
        content = base64.b64decode(content.get("$base64", "")).decode("utf-8", "replace")
    try:
        body = json.loads(content)
        if isinstance(body, dict) and body.get("code") == "idempotency_key_reused":
            # An Idempotency-Key is server state: the fuzzer sends one header
            # value with other bodies, which is refused by design (docs/api.md).
            return True
        errors = body["details"]["errors"]
    except (ValueError, KeyError, TypeError):
        return False
    return body.get("code") in ("validation_failed", "unknown_facet") and bool(errors) and all(
        GOAL_CONDITION.match(str(error.get("path", ""))) or (body.get("code") == "validation_failed" and any(
            str(error.get("path", "")).endswith(suffix) and str(error.get("message", "")).startswith(start)
            for suffix, start in BY_DESIGN))
        for error in errors)


def failures_in(report: Path) -> tuple[list[dict[str, str]], int]:
    """The failed checks of a ndjson report, and how many were by design."""
    found, excused = [], 0
    for line in report.read_text().splitlines():
        scenario = json.loads(line).get("ScenarioFinished")
        if not scenario:
            continue
        recorder = scenario.get("recorder") or {}
        for case_id, checks in (recorder.get("checks") or {}).items():
            response = ((recorder.get("interactions") or {}).get(case_id) or {}).get("response")
            for check in checks:
                if check.get("status") != "failure":
                    continue
                if by_design(check["name"], response):
                    excused += 1
                    continue
                failure = (check.get("failure_info") or {}).get("failure") or {}
                found.append({"check": check["name"], "operation": failure.get("operation") or recorder.get("label"),
                              "title": failure.get("title", ""), "message": str(failure.get("message", ""))[:300],
                              "status": str((response or {}).get("status_code", "")),
                              "body": str((response or {}).get("content", ""))[:300]})
    return found, excused


def run_schemathesis(port: int, token: str, report: Path) -> subprocess.CompletedProcess[str]:
    # Run in the report's directory: schemathesis keeps a crash cache
    # (.schemathesis/) in its working directory, never in the checkout.
    argv = [sys.executable, "-m", "schemathesis.cli", "run", f"http://127.0.0.1:{port}/api/schema/?format=json",
            "--header", f"Authorization: Bearer {token}", "--checks", "all",
            "--max-examples", str(EXAMPLES), "--seed", SEED, "--request-timeout", "10",
            "--continue-on-failure", "--no-color", "--generation-database", "none",
            *[arg for op in STREAMING for arg in ("--exclude-operation-id", op)],
            "--report", "ndjson", "--report-ndjson-path", str(report)]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks", "PYTHONPATH": str(BASE_DIR)}
    return subprocess.run(argv, cwd=report.parent, env=env, capture_output=True, text=True, timeout=600)


def test_schemathesis_finds_nothing_the_schema_does_not_say(procs, django_user_model, tmp_path):
    _, port = procs.daphne(env={
        # Fuzzing submits hundreds of runs and reads details fast: not what
        # the backpressure caps and the read throttle are there to measure.
        "FLEX_MAX_QUEUED_RUNS_PER_USER": "100000", "FLEX_MAX_QUEUED_RUNS": "100000",
        "FLEX_RUN_DETAIL_RATE": "100000/min",
    })
    tokens = {"client": token_for(django_user_model, "st-client", "client"),
              "operator": token_for(django_user_model, "st-operator", "operator")}
    # Something to find: a run the client owns.
    # A worker is alive (its heartbeat), so /api/ready answers 200 and not its 503.
    from django.utils import timezone

    from runs.models import WorkerHeartbeat

    WorkerHeartbeat.objects.create(worker_id="st-worker", started_at=timezone.now(),
                                   last_seen_at=timezone.now() + timedelta(hours=1))
    created = httpx.post(f"http://127.0.0.1:{port}/api/v1/flex/runs", json=load_envelope("linkedin-variants"),
                         headers={"Authorization": f"Bearer {tokens['client']}"}, timeout=30)
    assert created.status_code == 202, created.text

    schema = httpx.get(f"http://127.0.0.1:{port}/api/schema/?format=json", timeout=30).json()
    operations = sum(1 for item in schema["paths"].values() for method in item
                     if method in ("get", "post", "put", "patch", "delete"))
    found: list[dict[str, str]] = []
    for role, token in tokens.items():
        report = tmp_path / f"{role}.ndjson"
        result = run_schemathesis(port, token, report)
        assert report.exists(), result.stdout[-3000:] + result.stderr[-3000:]
        assert "Test cases:" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]
        failures, _ = failures_in(report)
        found += [{**failure, "role": role} for failure in failures]
        # Something was tested: every operation but the streaming ones ran.
        assert f"Tested: {operations - len(STREAMING)}" in result.stdout, result.stdout[-3000:]

    assert not found, json.dumps(found[:20], indent=1)
