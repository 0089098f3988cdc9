"""20 concurrent requests with one Idempotency-Key against a real server:
one executes, the others replay its response or get 409
idempotency_in_progress (API.md, Governance: Idempotency). Runs on the
database the suite runs on (SQLite or PostgreSQL: .ci/run does both)."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from runs.models import AuditEntry, RunEvent
from tests.multiprocess.conftest import submit, wait_run_status

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

EXAMPLES = Path(settings.BASE_DIR) / "examples" / "envelopes"


def test_twenty_concurrent_requests_with_one_key_execute_once(procs, token):
    auth = {"Authorization": f"Bearer {token}"}
    _, port = procs.daphne()
    procs.worker()
    run_id = submit(port, token, json.loads((EXAMPLES / "approval-required.json").read_text()))
    wait_run_status(run_id, ("awaiting_hitl",), timeout=30)
    pending = httpx.get(f"http://127.0.0.1:{port}/api/hitl/pending", headers=auth, timeout=30).json()["runs"]
    request_id = next(r for r in pending if r["runId"] == run_id)["pendingRequestId"]
    body = {"runId": run_id, "requestId": request_id,
            "responses": [{"responseType": "freeform", "freeformText": "Checked, fine"}]}

    barrier = threading.Barrier(20)
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def send() -> None:
        with httpx.Client(timeout=60) as client:
            barrier.wait()
            response = client.post(f"http://127.0.0.1:{port}/api/hitl/respond", json=body,
                                   headers={**auth, "Idempotency-Key": "one-answer"})
        with lock:
            results.append(response)

    threads = [threading.Thread(target=send) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)

    assert len(results) == 20
    executed = [r for r in results if r.status_code == 200 and "idempotent-replayed" not in r.headers]
    replayed = [r for r in results if r.status_code == 200 and r.headers.get("idempotent-replayed") == "true"]
    in_progress = [r for r in results if r.status_code == 409]
    assert len(executed) == 1, [(r.status_code, r.text[:200]) for r in results]
    assert len(executed) + len(replayed) + len(in_progress) == 20, [(r.status_code, r.text[:200]) for r in results]
    assert all(r.json() == executed[0].json() for r in replayed)
    assert all(r.json()["code"] == "idempotency_in_progress" for r in in_progress)
    assert RunEvent.objects.filter(run_id=run_id, type="hitl_update").count() == 1
    assert AuditEntry.objects.filter(run_id=run_id, action="hitl_responded").count() == 1
    print(f"\n20 concurrent, one key: 1 executed, {len(replayed)} replayed, {len(in_progress)} in progress")
