"""One resume wins; a run waiting for a person survives a restart."""
from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.db import connection, connections

from hitl.models import HitlResponse
from runs.models import NodeRun, PlanVersion, Run, RunEvent
from tests.conftest import load_envelope
from tests.hitl.helpers import APPROVE, events_of, pending_request, resume, submit


def race(n, call):
    """Run `call(i)` in n threads released together; returns their results."""
    barrier = threading.Barrier(n)
    results = [None] * n

    def worker(i):
        try:
            barrier.wait(timeout=30)
            results[i] = call(i)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


@pytest.mark.django_db(transaction=True)
def test_of_twenty_concurrent_resumes_exactly_one_wins(api_for, operator, client_user, drain):
    run_id = submit(api_for(client_user), load_envelope("approval-required"))
    drain()
    request_id = pending_request(run_id).id
    api_for(operator)  # create the token outside the race

    results = race(20, lambda i: resume(api_for(operator), run_id, request_id, [APPROVE], note=f"#{i}"))

    codes = Counter(r.status_code for r in results)
    assert codes == {200: 1, 409: 19}, [r.content for r in results if r.status_code not in (200, 409)]
    assert {r.json()["code"] for r in results if r.status_code == 409} <= {"hitl_request_not_pending"}
    assert HitlResponse.objects.filter(request_id=request_id).count() == 1
    assert len(events_of(run_id, "hitl_resolved")) == 1 and len(events_of(run_id, "plan_updated")) == 1
    assert PlanVersion.objects.filter(run_id=run_id).count() == 2
    seqs = list(RunEvent.objects.filter(run_id=run_id).order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))
    drain()
    assert Run.objects.get(pk=run_id).status == "completed"


@pytest.mark.django_db(transaction=True)
def test_a_run_awaiting_a_person_survives_a_restart_without_executing_a_node_twice(api_for, operator, client_user):
    from planner.registry import reset_registry
    from runs.engine.worker import Worker

    run_id = submit(api_for(client_user), load_envelope("approval-required"))
    first = Worker(worker_id="before-restart")
    while first.run_once():
        pass
    assert Run.objects.get(pk=run_id).status == "awaiting_hitl"
    # "Stop every process": nothing survives in memory but the database.
    del first
    connections.close_all()
    reset_registry()

    listed = api_for(operator).get("/api/hitl/pending").json()["runs"]
    assert [r["runId"] for r in listed] == [run_id]
    response = resume(api_for(operator), run_id, listed[0]["pendingRequestId"], [APPROVE])
    assert response.status_code == 200
    fresh = Worker(worker_id="after-restart")
    while fresh.run_once():
        pass

    assert Run.objects.get(pk=run_id).status == "completed"
    assert set(NodeRun.objects.filter(run_id=run_id).values_list("commits", flat=True)) == {1}
    completes = Counter(e.node_id for e in events_of(run_id, "node_complete"))
    assert completes and set(completes.values()) == {1}
    starts = Counter(e.node_id for e in events_of(run_id, "node_start"))
    assert set(starts.values()) == {1}
