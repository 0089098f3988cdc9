"""Every agent and task endpoint × (anonymous, client, support, operator, the
agent owning it, another agent) — API.md, Agents: an agent token may
register and heartbeat its own agent and act on the tasks of the
capabilities it registered, nothing else; every other endpoint answers an
agent as a role without access."""
from __future__ import annotations

from typing import Any, Callable

import pytest

from runs.models import Task
from tests.runs.agents_helpers import registration, review_envelope, valid_review

# Claims run on the shared executor (another connection): committed data only.
pytestmark = pytest.mark.django_db(transaction=True)

PERSONAS = ("anonymous", "client", "support", "operator", "owner_agent", "other_agent")


@pytest.fixture(autouse=True)
def _fast_passwords(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def world(make_user: Callable[..., Any], api_for: Callable[[Any], Any], drain: Callable[[], int]) -> dict[str, Any]:
    users = {"client": make_user("clara", "client"), "support": make_user("sam", "support"),
             "operator": make_user("olivia", "operator"), "owner_agent": make_user("acme-bot", "agent"),
             "other_agent": make_user("other-bot", "agent")}
    assert api_for(users["owner_agent"]).post("/api/v1/flex/agents/register", registration(),
                                              format="json").status_code == 200
    assert api_for(users["other_agent"]).post("/api/v1/flex/agents/register",
                                              registration("other-agent", capability_id="other.Review"),
                                              format="json").status_code == 200
    run_id = api_for(users["operator"]).post("/api/v1/flex/runs", review_envelope(), format="json").json()["runId"]
    drain()
    task = Task.objects.get(run_id=run_id)
    return {"users": users, "run_id": run_id, "task_id": task.id}


def api(api_for: Callable[[Any], Any], world: dict[str, Any], persona: str) -> Any:
    return api_for(None if persona == "anonymous" else world["users"][persona])


def call(client: Any, method: str, path: str, body: Any = None) -> Any:
    if method == "get":
        return client.get(path)
    return client.post(path, body if body is not None else {}, format="json")


# (name, method, path, body, expected status per persona in PERSONAS order)
ENDPOINTS = [
    ("register", "post", "/api/v1/flex/agents/register", lambda w: registration(),
     (401, 403, 403, 403, 200, 409)),
    ("agent heartbeat", "post", "/api/v1/flex/agents/acme-review/heartbeat", None, (401, 404, 404, 404, 200, 404)),
    ("agents list", "get", "/api/v1/flex/agents", None, (401, 403, 200, 200, 200, 200)),
    ("claim", "post", "/api/v1/flex/agents/acme-review/tasks/claim", lambda w: {"waitSeconds": 0},
     (401, 404, 404, 404, 200, 404)),
    ("task list", "get", "/api/v1/flex/tasks", None, (401, 200, 200, 200, 200, 200)),
    ("task heartbeat", "post", "/api/v1/flex/tasks/{task}/heartbeat", lambda w: {"leaseToken": "x"},
     (401, 404, 404, 404, 409, 404)),
    ("task complete", "post", "/api/v1/flex/tasks/{task}/complete",
     lambda w: {"leaseToken": "x", "output": valid_review()}, (401, 404, 404, 404, 409, 404)),
    ("task fail", "post", "/api/v1/flex/tasks/{task}/fail",
     lambda w: {"leaseToken": "x", "retryable": True, "error": {"code": "c", "message": "m"}},
     (401, 404, 404, 404, 409, 404)),
    ("task clarify", "post", "/api/v1/flex/tasks/{task}/clarify", lambda w: {"leaseToken": "x", "question": "?"},
     (401, 404, 404, 404, 409, 404)),
]
CASES = [pytest.param(name, method, path, body, persona, expected[i], id=f"{name}-{persona}")
         for name, method, path, body, expected in ENDPOINTS for i, persona in enumerate(PERSONAS)]


@pytest.mark.parametrize("name,method,path,body,persona,expected", CASES)
def test_agent_and_task_endpoints(api_for, world, name, method, path, body, persona, expected):
    response = call(api(api_for, world, persona), method, path.format(task=world["task_id"]),
                    body(world) if body else None)
    assert response.status_code == expected, (name, persona, response.content)
    if expected >= 400:
        assert response.json()["code"] in ("not_authenticated", "permission_denied", "agent_not_found",
                                           "task_not_found", "lease_lost", "capability_conflict")


def test_the_task_list_shows_each_caller_what_it_may_act_on(api_for, world):
    def ids(persona: str) -> list[str]:
        return [t["taskId"] for t in api(api_for, world, persona).get("/api/v1/flex/tasks").json()["tasks"]]

    assert ids("operator") == [world["task_id"]] and ids("owner_agent") == [world["task_id"]]
    assert ids("other_agent") == [] and ids("client") == [] and ids("support") == []


# Every endpoint outside the agent API answers an agent token as a role without access.
OTHER_ENDPOINTS = [
    ("get", "/api/v1/flex/runs"), ("post", "/api/v1/flex/runs"), ("get", "/api/v1/flex/runs/{run}"),
    ("get", "/api/v1/flex/runs/{run}/events"), ("post", "/api/v1/flex/runs/{run}/cancel"),
    ("get", "/api/v1/flex/capabilities"), ("get", "/api/v1/flex/facets"), ("post", "/api/v1/flex/plan.preview"),
    ("post", "/api/v1/flex/run.resume"), ("get", "/api/hitl/pending"), ("post", "/api/hitl/respond"),
    ("post", "/api/hitl/resume"), ("post", "/api/hitl/remove"), ("post", "/api/v1/flex/runs/{run}/stream-ticket"),
]


@pytest.mark.parametrize("method,path", OTHER_ENDPOINTS, ids=[f"{m} {p}" for m, p in OTHER_ENDPOINTS])
def test_an_agent_token_may_use_nothing_else(api_for, world, method, path):
    body = review_envelope() if path.endswith(("runs", "plan.preview")) else {}
    response = call(api(api_for, world, "owner_agent"), method, path.format(run=world["run_id"]), body)
    assert response.status_code in (403, 404), response.content
    assert response.json()["code"] in ("permission_denied", "run_not_found", "not_found")
