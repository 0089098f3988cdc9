"""Deadlines and escalations are applied by the sweep of every worker, from
the database (runs/governance.py): with two `flex_worker` processes sweeping
every 0.2 s, each escalation, request timeout and run deadline fires exactly
once — and one that falls due while every process is down fires once they
are back (real daphne and workers, short real timeouts)."""
from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from hitl.models import HitlRequest
from runs.models import AuditEntry, Run, RunEvent
from tests.multiprocess.conftest import assert_contiguous, events_json, submit, wait_run_status

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

EXAMPLES = Path(settings.BASE_DIR) / "examples" / "envelopes"


def approval(**rules: Any) -> dict[str, Any]:
    envelope = json.loads((EXAMPLES / "approval-required.json").read_text())
    envelope["policies"]["runtime"][0]["action"].update(rules)
    return envelope


def types_of(run_id: str) -> Counter[str]:
    return Counter(RunEvent.objects.filter(run_id=run_id).values_list("type", flat=True))


def system_audit(run_id: str) -> Counter[str]:
    return Counter(AuditEntry.objects.filter(run_id=run_id, actor__isnull=True, actor_display="system")
                   .values_list("action", flat=True))


def test_escalations_timeouts_and_deadlines_fire_once_with_two_workers_and_survive_a_restart(procs, token):
    web, port = procs.daphne()
    workers = [procs.worker(), procs.worker()]
    escalate = {"users": ["mp-admin"]}
    # Falls due while everything runs.
    live = submit(port, token, approval(escalateAfterSeconds=1, timeoutSeconds=3, onTimeout={"type": "approve"},
                                        escalateTo=escalate))
    # Fall due while every process is down.
    later = submit(port, token, approval(escalateAfterSeconds=7, timeoutSeconds=9, onTimeout={"type": "cancel"},
                                         escalateTo=escalate))
    expiring = approval()
    expiring["constraints"] = {"deadlineSeconds": 9}
    expiring_id = submit(port, token, expiring)
    started = time.monotonic()
    for run_id in (live, later, expiring_id):
        assert wait_run_status(run_id, ("awaiting_hitl",), timeout=30) == "awaiting_hitl"

    # 1. The live one: escalated, then approved by the system, then completed.
    assert wait_run_status(live, ("completed", "failed", "cancelled"), timeout=30) == "completed"
    request = HitlRequest.objects.get(run_id=live)
    assert (request.escalated, request.urgency, request.resolution) == (True, "high", "timed_out")
    assert request.assignees == escalate and request.applied_action == {"type": "approve"}
    counts = types_of(live)
    assert (counts["hitl_escalated"], counts["hitl_resolved"], counts["complete"]) == (1, 1, 1)
    assert system_audit(live) == Counter({"hitl_escalated": 1, "hitl_timed_out": 1})
    # The other two are not due yet (they were submitted less than 7 s ago).
    assert time.monotonic() - started < 6.5, "the machine is too slow for this test's timings"
    assert not HitlRequest.objects.get(run_id=later).escalated

    # 2. Kill every process, without any chance to clean up; wait past every deadline.
    web.kill()
    for worker in workers:
        worker.kill()
    time.sleep(max(0.0, 10.5 - (time.monotonic() - started)))
    assert Run.objects.get(pk=later).status == "awaiting_hitl"
    assert Run.objects.get(pk=expiring_id).status == "awaiting_hitl"
    assert not HitlRequest.objects.get(run_id=later).escalated

    # 3. Start everything again: what fell due while down fires, once.
    web2, port2 = procs.daphne()
    procs.worker()
    procs.worker()
    assert wait_run_status(later, ("completed", "failed", "cancelled"), timeout=30) == "cancelled"
    assert wait_run_status(expiring_id, ("completed", "failed", "cancelled"), timeout=30) == "failed"
    time.sleep(1.0)  # several more sweeps by both workers: nothing fires twice

    request = HitlRequest.objects.get(run_id=later)
    assert (request.escalated, request.resolution, request.applied_action) == (True, "timed_out", {"type": "cancel"})
    counts = types_of(later)
    assert (counts["hitl_escalated"], counts["hitl_resolved"], counts["complete"]) == (1, 1, 1)
    assert system_audit(later) == Counter({"hitl_escalated": 1, "hitl_timed_out": 1})
    expired = Run.objects.get(pk=expiring_id)
    assert expired.error["code"] == "deadline_exceeded"
    assert (types_of(expiring_id)["complete"], types_of(expiring_id)["hitl_resolved"]) == (1, 1)
    assert system_audit(expiring_id) == Counter({"deadline_exceeded": 1})
    for run_id in (live, later, expiring_id):
        assert_contiguous(events_json(port2, token, run_id))
