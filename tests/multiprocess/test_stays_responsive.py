"""While each hostile envelope of the hostile-input review is processed by a
daphne with embedded workers (the `make run` shape: one process, two worker
threads), /api/health answers and another user's run completes.

The envelopes: a backtracking regex in the output contract matched against
a produced value of 40 a's (Python's `re` would hold the GIL for hours), a
schema whose `$ref`s fan out under anyOf (its debug view is read while the
run is processed), one whose fan-out jsonschema would evaluate 3**20 times,
and a condition that would evaluate 810,000 nested operations. Bounds are generous: this is behaviour, not a benchmark."""
from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from runs.models import TERMINAL_STATUSES, Run
from tests.conftest import load_envelope
from tests.multiprocess.conftest import wait_run_status
from tests.multiprocess.test_schemathesis import token_for
from tests.runs.test_hostile_schemas import fanning_schema

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ANSWER = 10.0  # seconds for /api/health and a debug view
COMPLETE = 90.0  # seconds for the other user's small run


def regex_envelope() -> dict[str, Any]:
    envelope = load_envelope("linkedin-variants")
    envelope["inputs"]["company_information"]["name"] = "a" * 40
    headline = envelope["outputContract"]["schema"]["properties"]["copyVariants"]["items"]["properties"]["headline"]
    headline["pattern"] = "^(a|a)*$"
    return envelope


def fanning_envelope() -> dict[str, Any]:
    envelope = load_envelope("linkedin-variants")
    envelope["outputContract"]["schema"] = fanning_schema()
    return envelope


def fanning_validation_envelope() -> dict[str, Any]:
    """Twenty levels of three `$ref`s under anyOf, the last never matching a
    string: 3**20 evaluations for jsonschema without a step budget."""
    envelope = load_envelope("linkedin-variants")
    schema = envelope["outputContract"]["schema"]
    schema["$defs"] = {"d20": {"type": "integer"}}
    for level in range(19, -1, -1):
        schema["$defs"][f"d{level}"] = {"anyOf": [{"$ref": f"#/$defs/d{level + 1}"}] * 3}
    schema["properties"]["copyVariants"]["items"]["properties"]["headline"] = {"$ref": "#/$defs/d0"}
    return envelope


def condition_envelope() -> dict[str, Any]:
    condition: dict[str, Any] = {"==": [1, 2]}
    for _ in range(4):
        condition = {"some": [list(range(30)), condition]}
    envelope = load_envelope("linkedin-variants")
    envelope["policies"]["runtime"] = [
        {"id": f"heavy-{kind}", "trigger": {"kind": kind, "condition": condition}, "action": {"type": "pause"}}
        for kind in ("onStart", "onNodeComplete")]
    return envelope


@pytest.mark.parametrize("hostile", [regex_envelope, fanning_envelope, fanning_validation_envelope,
                                     condition_envelope],
                         ids=["backtracking-regex", "fanning-schema", "fanning-validation", "heavy-condition"])
def test_health_and_another_users_run_answer_while_a_hostile_envelope_is_processed(
        procs: Any, django_user_model: Any, hostile: Any) -> None:
    _, port = procs.daphne(env={"FLEX_EMBEDDED_WORKERS": "2"})
    base = f"http://127.0.0.1:{port}"
    attacker = {"Authorization": f"Bearer {token_for(django_user_model, 'mallory', 'client')}"}
    bystander = {"Authorization": f"Bearer {token_for(django_user_model, 'bob', 'client')}"}

    submitted = httpx.post(f"{base}/api/v1/flex/runs", json=hostile(), headers=attacker, timeout=ANSWER)
    assert submitted.status_code == 202, submitted.text
    hostile_id = submitted.json()["runId"]

    # The owner keeps opening the run's debug view meanwhile (the redactor
    # walks its output contract each time).
    reads: list[int] = []
    stop = threading.Event()

    def read_debug_view() -> None:
        while not stop.is_set():
            try:
                reads.append(httpx.get(f"{base}/api/v1/flex/runs/{hostile_id}", headers=attacker,
                                       timeout=ANSWER).status_code)
            except httpx.TimeoutException:
                reads.append(0)
            stop.wait(0.2)

    reader = threading.Thread(target=read_debug_view, daemon=True)
    reader.start()
    try:
        health = httpx.get(f"{base}/api/health", timeout=ANSWER)
        assert health.status_code == 200
        other = httpx.post(f"{base}/api/v1/flex/runs", json=load_envelope("linkedin-variants"),
                           headers=bystander, timeout=ANSWER)
        assert other.status_code == 202, other.text
        assert wait_run_status(other.json()["runId"], ("completed",), timeout=COMPLETE) == "completed"
        assert httpx.get(f"{base}/api/health", timeout=ANSWER).status_code == 200
        # The hostile run itself finishes one way or the other.
        wait_run_status(hostile_id, tuple(TERMINAL_STATUSES), timeout=COMPLETE)
    finally:
        stop.set()
        reader.join(ANSWER * 2)
    assert reads and set(reads) == {200}, reads
    assert Run.objects.get(pk=hostile_id).status in TERMINAL_STATUSES
