"""Tasks across processes: the agent (this test, over HTTP) long-polls a
daphne process; a flex_worker process dispatches the node; the waiting
claim is woken (through Redis when configured, else by the per-process
poll) and the completion lets the worker finish the run."""
from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from tests.multiprocess.conftest import assert_contiguous, events_json, submit, wait_run_status
from tests.runs.agents_helpers import registration, review_envelope, valid_review

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def agent_token(transactional_db: None, django_user_model: Any) -> str:
    from django.contrib.auth.models import Group
    from rest_framework.authtoken.models import Token

    from tests.conftest import ensure_roles

    ensure_roles()
    user = django_user_model.objects.create_user(username="acme-bot", password="pw")
    user.groups.add(Group.objects.get(name="agent"))
    return Token.objects.create(user=user).key


def test_a_long_poll_on_daphne_is_woken_by_a_workers_dispatch_and_the_run_completes(procs, token, agent_token):
    web, port = procs.daphne(env={"FLEX_TASK_POLL_SECONDS": "0.5"})
    procs.worker()
    base = f"http://127.0.0.1:{port}/api/v1/flex"
    agent = {"Authorization": f"Bearer {agent_token}"}
    registered = httpx.post(f"{base}/agents/register", json=registration(), headers=agent, timeout=30)
    assert registered.status_code == 200, registered.text

    claimed: dict[str, Any] = {}

    def long_poll() -> None:
        response = httpx.post(f"{base}/agents/acme-review/tasks/claim", json={"waitSeconds": 30}, headers=agent,
                              timeout=60)
        claimed["status"] = response.status_code
        claimed["body"] = response.json() if response.status_code == 200 else None

    poller = threading.Thread(target=long_poll, daemon=True)
    poller.start()
    run_id = submit(port, token, review_envelope())
    poller.join(timeout=40)
    assert claimed.get("status") == 200, claimed
    task = claimed["body"]["task"]
    assert task["runId"] == run_id and task["attempt"] == 1
    assert set(task["bundle"]["facets"]) == {"copyVariants"}

    done = httpx.post(f"{base}/tasks/{task['taskId']}/complete", headers=agent, timeout=30,
                      json={"leaseToken": task["leaseToken"], "output": valid_review()})
    assert done.status_code == 200, done.text
    assert wait_run_status(run_id, ("completed", "failed"), timeout=30) == "completed"
    events = events_json(port, token, run_id)
    assert_contiguous(events)
    types = [e["type"] for e in events]
    assert types.index("node_dispatched") < types.index("node_complete", types.index("node_dispatched"))
    start = next(e for e in events if e["type"] == "node_start" and e["payload"].get("taskId") == task["taskId"])
    assert start["payload"]["agentId"] == "acme-review"
