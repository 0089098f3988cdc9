"""Schemathesis against a live daphne (the Procfile's web command), once with
a client token and once with an operator token: every check, a bounded
number of cases per operation.

Guaranteed here, always: no 5xx (`not_a_server_error`) and no error body
that is not our JSON (`error_bodies_are_json`, tests/schemathesis_hooks.py).
Every other check is run and reported; the ones that judge the OpenAPI
document itself (`PENDING_SCHEMA_CHECKS`: undocumented status codes, request
schemas looser than the server) depend on the schema work and make the test
xfail with the list of findings until then. `FLEX_SCHEMATHESIS_STRICT=1`
makes them fail instead.

Knobs: `FLEX_SCHEMATHESIS_EXAMPLES` (cases per operation and phase, default
15), `FLEX_SCHEMATHESIS_SEED` (default 16).
"""
from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ensure_roles, load_envelope
from tests.multiprocess.procs import BASE_DIR

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ALWAYS = ("not_a_server_error", "error_bodies_are_json")
PENDING_SCHEMA_CHECKS = ("status_code_conformance", "positive_data_acceptance", "negative_data_rejection",
                         "missing_required_header", "unsupported_method", "response_schema_conformance",
                         "content_type_conformance", "response_headers_conformance")
EXAMPLES = int(os.environ.get("FLEX_SCHEMATHESIS_EXAMPLES", "15"))
SEED = os.environ.get("FLEX_SCHEMATHESIS_SEED", "16")
STRICT = os.environ.get("FLEX_SCHEMATHESIS_STRICT") == "1"


def token_for(django_user_model: Any, username: str, role: str) -> str:
    from django.contrib.auth.models import Group
    from rest_framework.authtoken.models import Token

    ensure_roles()
    user = django_user_model.objects.create_user(username=username, password="pw", is_staff=role == "operator")
    user.groups.add(Group.objects.get(name=role))
    return Token.objects.create(user=user).key


def failures_in(report: Path) -> list[dict[str, str]]:
    found = []
    for line in report.read_text().splitlines():
        event = json.loads(line)
        scenario = event.get("ScenarioFinished")
        if not scenario:
            continue
        label = (scenario.get("recorder") or {}).get("label", "")
        for checks in ((scenario.get("recorder") or {}).get("checks") or {}).values():
            for check in checks:
                if check.get("status") == "failure":
                    failure = (check.get("failure_info") or {}).get("failure") or {}
                    found.append({"check": check["name"], "operation": failure.get("operation") or label,
                                  "title": failure.get("title", ""), "message": str(failure.get("message", ""))[:300]})
    return found


def run_schemathesis(port: int, token: str, report: Path) -> subprocess.CompletedProcess[str]:
    # Run in the report's directory: schemathesis keeps a crash cache
    # (.schemathesis/) in its working directory, never in the checkout.
    argv = [sys.executable, "-m", "schemathesis.cli", "run", f"http://127.0.0.1:{port}/api/schema/?format=json",
            "--header", f"Authorization: Bearer {token}", "--checks", "all",
            "--max-examples", str(EXAMPLES), "--seed", SEED, "--request-timeout", "10",
            "--continue-on-failure", "--no-color", "--generation-database", "none",
            "--report", "ndjson", "--report-ndjson-path", str(report)]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks", "PYTHONPATH": str(BASE_DIR)}
    return subprocess.run(argv, cwd=report.parent, env=env, capture_output=True, text=True, timeout=600)


def test_schemathesis_finds_no_server_error_and_no_non_json_error_body(procs, django_user_model, tmp_path):
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

    found: list[dict[str, str]] = []
    for role, token in tokens.items():
        report = tmp_path / f"{role}.ndjson"
        result = run_schemathesis(port, token, report)
        assert report.exists(), result.stdout[-3000:] + result.stderr[-3000:]
        assert "Test cases:" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]
        found += [{**failure, "role": role} for failure in failures_in(report)]

    broken = [failure for failure in found if failure["check"] in ALWAYS]
    assert not broken, json.dumps(broken[:20], indent=1)
    unexpected = [failure for failure in found
                  if failure["check"] not in ALWAYS and failure["check"] not in PENDING_SCHEMA_CHECKS]
    assert not unexpected, json.dumps(unexpected[:20], indent=1)
    pending = collections.Counter(f"{failure['check']}: {failure['operation']}" for failure in found
                                  if failure["check"] in PENDING_SCHEMA_CHECKS)
    if pending:
        summary = "\n".join(f"{count} × {name}" for name, count in sorted(pending.items()))
        if STRICT:
            pytest.fail(f"schema conformance findings:\n{summary}")
        pytest.xfail("the OpenAPI document does not yet declare every 4xx nor match the server's request "
                     f"rules (schema work pending):\n{summary}")
