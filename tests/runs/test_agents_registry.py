"""Agent registration, heartbeats and liveness over the API, and what the
catalog and the planner make of them."""
from __future__ import annotations

from datetime import timedelta
from typing import Any, Callable

import pytest
from django.core.management import call_command
from django.utils import timezone

from planner.models import Agent, AgentCapability
from planner.registry import get_registry
from runs.engine import tasks as task_services
from runs.models import Run
from tests.conftest import load_envelope
from tests.runs.agents_helpers import REVIEW_ID, registration, review_envelope

pytestmark = pytest.mark.django_db


@pytest.fixture
def agent_user(make_user: Callable[..., Any]) -> Any:
    return make_user("acme-bot", "agent")


def register(api: Any, body: dict[str, Any]) -> Any:
    return api.post("/api/v1/flex/agents/register", body, format="json")


def catalog(api: Any) -> dict[str, dict[str, Any]]:
    response = api.get("/api/v1/flex/capabilities")
    assert response.status_code == 200
    return {c["capabilityId"]: c for c in response.json()["capabilities"]}


def test_register_then_the_catalog_shows_the_capability_with_its_status_and_agent(api_for, agent_user, operator):
    response = register(api_for(agent_user), registration())
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["agentId"], body["status"], body["heartbeatSeconds"]) == ("acme-review", "active", 30)
    assert [c["capabilityId"] for c in body["capabilities"]] == [REVIEW_ID]
    listed = catalog(api_for(operator))
    assert listed[REVIEW_ID]["status"] == "active"
    assert (listed[REVIEW_ID]["runsOn"], listed[REVIEW_ID]["agentId"]) == ("agent", "acme-review")
    assert listed["qa.ContentReview"]["runsOn"] == "server" and listed["qa.ContentReview"]["agentId"] is None
    assert Agent.objects.get(pk="acme-review").owner == agent_user


def test_re_registering_replaces_the_set(api_for, agent_user, operator):
    api = api_for(agent_user)
    assert register(api, registration()).status_code == 200
    replaced = registration(capability_id="acme.Review2")
    assert register(api, replaced).status_code == 200
    assert list(AgentCapability.objects.values_list("capability_id", flat=True)) == ["acme.Review2"]
    listed = catalog(api_for(operator))
    assert "acme.Review2" in listed and REVIEW_ID not in listed


def test_unknown_facets_are_422_naming_them(api_for, agent_user):
    response = register(api_for(agent_user), registration(outputFacets=["hashtagz"]))
    assert response.status_code == 422
    assert response.json()["code"] == "unknown_facet"
    assert response.json()["details"]["unknown"] == [{"path": "/capabilities/0/outputFacets/0", "facet": "hashtagz"}]
    assert not Agent.objects.exists()


def test_a_builtin_id_or_another_agents_id_is_a_conflict(api_for, agent_user, make_user):
    api = api_for(agent_user)
    builtin = register(api, registration(capability_id="qa.ContentReview"))
    assert builtin.status_code == 409 and builtin.json()["code"] == "capability_conflict"
    assert register(api, registration()).status_code == 200
    other = api_for(make_user("other-bot", "agent"))
    taken = register(other, registration(agent_id="other-agent"))
    assert taken.status_code == 409 and taken.json()["details"]["owner"] == "another agent"
    same_agent_id = register(other, registration(capability_id="other.Review"))
    assert same_agent_id.status_code == 409 and same_agent_id.json()["details"]["owner"] == "another user"


def test_bad_bodies_are_422(api_for, agent_user):
    api = api_for(agent_user)
    for body in ({**registration(), "extra": 1}, {**registration(), "heartbeatSeconds": 0},
                 {**registration(), "agentId": "has space"}, registration(kind="dreaming")):
        response = register(api, body)
        assert response.status_code == 422 and response.json()["code"] == "validation_failed", body


def test_heartbeat_and_inactive_marking_with_controlled_time(api_for, agent_user, operator):
    api = api_for(agent_user)
    register(api, registration(heartbeat_seconds=10))
    assert api.post("/api/v1/flex/agents/acme-review/heartbeat", {}, format="json").json() == {
        "agentId": "acme-review", "status": "active", "heartbeatSeconds": 10}
    seen = Agent.objects.get(pk="acme-review").last_heartbeat_at
    # 3 x 10 s of silence is the limit: at 29 s still active, past 30 s inactive.
    assert task_services.sweep_tasks(now=seen + timedelta(seconds=29))["agentsInactive"] == 0
    assert task_services.sweep_tasks(now=seen + timedelta(seconds=31))["agentsInactive"] == 1
    assert Agent.objects.get(pk="acme-review").status == "inactive"
    assert catalog(api_for(operator))[REVIEW_ID]["status"] == "inactive"
    # A heartbeat brings it back.
    assert api.post("/api/v1/flex/agents/acme-review/heartbeat").json()["status"] == "active"
    assert catalog(api_for(operator))[REVIEW_ID]["status"] == "active"


def test_an_inactive_capability_is_not_planned_preview_says_so_and_a_run_needing_it_is_422(
        api_for, agent_user, operator):
    register(api_for(agent_user), registration())
    Agent.objects.filter(pk="acme-review").update(last_heartbeat_at=timezone.now() - timedelta(hours=1))
    task_services.sweep_tasks()
    assert get_registry().get_class(REVIEW_ID).status == "inactive"
    preview = api_for(operator).post("/api/v1/flex/plan.preview", review_envelope(), format="json").json()
    assert preview["plan"] is None
    assert [d["code"] for d in preview["diagnostics"]] == ["capability_inactive"]
    assert preview["diagnostics"][0]["capabilityId"] == REVIEW_ID
    response = api_for(operator).post("/api/v1/flex/runs", review_envelope(), format="json")
    assert response.status_code == 422 and response.json()["code"] == "capability_inactive"
    assert not Run.objects.exists()


def test_a_waiting_run_fails_when_its_capability_goes_inactive(api_for, agent_user, operator, drain):
    register(api_for(agent_user), registration())
    run_id = api_for(operator).post("/api/v1/flex/runs", review_envelope(), format="json").json()["runId"]
    drain()
    assert Run.objects.get(pk=run_id).status == "running"
    Agent.objects.filter(pk="acme-review").update(last_heartbeat_at=timezone.now() - timedelta(hours=1))
    swept = task_services.sweep_tasks()
    assert (swept["agentsInactive"], swept["inactiveTasks"]) == (1, 1)
    run = Run.objects.get(pk=run_id)
    assert run.status == "failed" and run.error["code"] == "capability_inactive"


def test_a_waiting_run_replans_onto_an_alternative_when_its_capability_goes_inactive_under_a_replan_policy(
        api_for, agent_user, operator, drain):
    from runs.models import NodeRun, PlanVersion, RunEvent

    register(api_for(agent_user), registration())
    envelope = load_envelope("facets-output")
    # The agent's reviewer is preferred; the built-in one is the alternative.
    envelope["policies"]["planner"]["selection"] = {"prefer": [REVIEW_ID]}
    envelope["policies"]["runtime"] = [{"id": "replace-dead-reviewer", "trigger": {
        "kind": "onNodeFail", "selector": {"kind": "validation"}}, "action": {"type": "replan"}}]
    run_id = api_for(operator).post("/api/v1/flex/runs", envelope, format="json").json()["runId"]
    drain()
    assert Run.objects.get(pk=run_id).status == "running"
    assert NodeRun.objects.get(run_id=run_id, capability_id=REVIEW_ID).status == "dispatched"

    Agent.objects.filter(pk="acme-review").update(last_heartbeat_at=timezone.now() - timedelta(hours=1))
    task_services.sweep_tasks()
    drain()

    run = Run.objects.get(pk=run_id)
    assert run.status == "completed", run.error
    assert run.plan_version == 2
    version = PlanVersion.objects.get(run_id=run_id, version=2)
    assert version.trigger["excludedCapabilities"] == [REVIEW_ID]
    assert "qa.ContentReview" in [n["capabilityId"] for n in version.graph["nodes"]]
    assert NodeRun.objects.get(run_id=run_id, capability_id=REVIEW_ID).status == "failed"
    types = list(RunEvent.objects.filter(run_id=run_id).order_by("seq").values_list("type", flat=True))
    assert types.count("plan_updated") == 1 and types[-1] == "complete"
    seqs = list(RunEvent.objects.filter(run_id=run_id).order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))


def test_flex_user_creates_an_agent_token(capsys, db):
    from tests.conftest import ensure_roles

    ensure_roles()
    call_command("flex_user", "hashtagger", "--role", "agent", "--token")
    lines = capsys.readouterr().out.strip().splitlines()
    assert "role agent" in lines[0] and len(lines[-1]) == 40
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.get(username="hashtagger")
    assert [g.name for g in user.groups.all()] == ["agent"] and not user.is_staff


def test_the_agents_gauge_counts_active_agents(api_for, agent_user):
    from runs.metrics import DatabaseFactsCollector

    register(api_for(agent_user), registration())
    gauges = {m.name: m.samples[0].value for m in DatabaseFactsCollector().collect()}
    assert gauges["flex_agents_active"] == 1
    Agent.objects.filter(pk="acme-review").update(last_heartbeat_at=timezone.now() - timedelta(hours=1))
    task_services.sweep_tasks()
    gauges = {m.name: m.samples[0].value for m in DatabaseFactsCollector().collect()}
    assert gauges["flex_agents_active"] == 0


def test_the_agents_list(api_for, agent_user, operator, client_user, make_user):
    register(api_for(agent_user), registration())
    mine = api_for(agent_user).get("/api/v1/flex/agents").json()["agents"]
    assert [a["agentId"] for a in mine] == ["acme-review"]
    assert [a["agentId"] for a in api_for(operator).get("/api/v1/flex/agents").json()["agents"]] == ["acme-review"]
    assert api_for(make_user("other-bot", "agent")).get("/api/v1/flex/agents").json()["agents"] == []
    assert api_for(client_user).get("/api/v1/flex/agents").status_code == 403
