"""Goals (`policies.planner.goals`), the optimisation objective and the
directives, through the API and the engine's worker path (docs/planning.md)."""
from __future__ import annotations

from typing import Any

import pytest

from runs.models import NodeRun, PlanVersion, Run
from tests.conftest import load_envelope
from tests.hitl.helpers import APPROVE, REJECT, event_types, events_of, pending_request, resume, submit

pytestmark = pytest.mark.django_db

QUALITY_BAR = {">=": [{"var": "qa_report.score"}, 0.8]}


def goal_envelope(**goal: Any) -> dict[str, Any]:
    """The example: the fast copywriter's four variants share a body, so the
    first review scores 0.7 and the quality bar (0.8) is unmet once."""
    body = load_envelope("goal-quality")
    if goal:
        body["policies"]["planner"]["goals"] = [{"id": "quality-bar", "condition": QUALITY_BAR, **goal}]
    return body


def run_of(api_for: Any, user: Any, drain: Any, body: dict[str, Any]) -> Run:
    run_id = submit(api_for(user), body)
    drain()
    return Run.objects.get(pk=run_id)


def goal_events(run_id: str) -> list[tuple[bool, int]]:
    return [(e.payload["met"], e.payload["attempt"]) for e in events_of(run_id, "goal_evaluated")]


def starts(run_id: str) -> list[tuple[str, int]]:
    return [(e.payload["nodeId"], e.payload["attempt"]) for e in events_of(run_id, "node_start")]


def test_a_goal_unmet_once_is_met_after_a_replan_with_goal_feedback(api_for, client_user, drain):
    run = run_of(api_for, client_user, drain, goal_envelope())

    assert run.status == "completed"
    types = event_types(run.id)
    first = types.index("goal_evaluated")
    assert types[first:first + 3] == ["goal_evaluated", "plan_requested", "plan_updated"]
    assert types[-4:] == ["goal_evaluated", "node_start", "node_complete", "complete"]
    assert goal_events(run.id) == [(False, 1), (True, 2)]
    assert [e.payload["facets"] for e in events_of(run.id, "goal_evaluated")] == [["qa_report"], ["qa_report"]]
    # The strategist ran once; the copywriter and the reviewer ran again.
    assert starts(run.id) == [("strategist", 1), ("copywriter", 1), ("qa", 1), ("copywriter", 2), ("qa", 2),
                              ("output", 1)]
    updated = events_of(run.id, "plan_updated")[0].payload
    assert updated["reason"] == "replan" and updated["trigger"]["kind"] == "goal"
    assert updated["trigger"]["goalId"] == "quality-bar" and updated["trigger"]["values"]["qa_report"]["score"] == 0.7
    assert updated["keptNodes"] == ["strategist"]
    assert [(n["id"], n["status"]) for n in updated["nodes"]] == [
        ("strategist", "completed"), ("copywriter", "pending"), ("qa", "pending"), ("output", "pending")]
    # The re-run nodes got the goal and the values it judged.
    copywriter = NodeRun.objects.get(run=run, node_id="copywriter")
    [feedback] = copywriter.input["goalFeedback"]
    assert feedback["goalId"] == "quality-bar" and feedback["condition"] == QUALITY_BAR
    assert feedback["attempt"] == 1 and feedback["values"]["qa_report"]["score"] == 0.7
    assert NodeRun.objects.get(run=run, node_id="strategist").input["goalFeedback"] == []
    assert run.output["qa_report"]["score"] == 1.0
    bodies = [variant["body"] for variant in run.output["copyVariants"]]
    assert len(set(bodies)) == 4  # the copywriter acted on the feedback


def test_without_goals_the_same_envelope_completes_with_the_low_score(api_for, client_user, drain):
    body = goal_envelope()
    del body["policies"]["planner"]["goals"]
    run = run_of(api_for, client_user, drain, body)

    assert run.status == "completed" and run.output["qa_report"]["score"] == 0.7
    assert "goal_evaluated" not in event_types(run.id) and run.plan_version == 1


def test_a_goal_unmet_past_max_replans_asks_a_person(api_for, client_user, operator, drain):
    run = run_of(api_for, client_user, drain,
                 goal_envelope(condition={">=": [{"var": "qa_report.score"}, 2]}, maxReplans=1))

    assert run.status == "awaiting_hitl"
    assert goal_events(run.id) == [(False, 1), (False, 2)]
    assert event_types(run.id)[-2:] == ["goal_evaluated", "hitl_request"]
    request = pending_request(run.id)
    assert (request.kind, request.source, request.pending_node_id) == ("approval", "goal:quality-bar", "")
    assert request.review["qa_report"]["score"] == 1.0 and request.contract_summary["goalId"] == "quality-bar"
    listed = api_for(operator).get("/api/hitl/pending").json()["runs"]
    assert [r["pendingRequestId"] for r in listed] == [request.id]

    assert resume(api_for(operator), run.id, request.id, [APPROVE]).status_code == 200
    drain()

    run.refresh_from_db()
    assert run.status == "completed" and goal_events(run.id) == [(False, 1), (False, 2)]  # accepted, not re-judged


def test_rejecting_an_unmet_goal_fails_the_run(api_for, client_user, operator, drain):
    run = run_of(api_for, client_user, drain,
                 goal_envelope(condition={">=": [{"var": "qa_report.score"}, 2]}, maxReplans=0))
    assert goal_events(run.id) == [(False, 1)]

    resume(api_for(operator), run.id, pending_request(run.id).id, [REJECT])

    run.refresh_from_db()
    assert run.status == "failed" and run.error["code"] == "hitl_rejected"


def test_on_unmet_fail_fails_the_run_with_goal_unmet(api_for, client_user, drain):
    run = run_of(api_for, client_user, drain, goal_envelope(
        condition={">=": [{"var": "qa_report.score"}, 2]}, maxReplans=1, onUnmet="fail"))

    assert run.status == "failed"
    assert run.error["code"] == "goal_unmet" and run.error["goalId"] == "quality-bar"
    assert goal_events(run.id) == [(False, 1), (False, 2)]
    assert event_types(run.id)[-2:] == ["goal_evaluated", "complete"]
    assert not NodeRun.objects.get(run=run, node_id="output").attempts


def test_on_unmet_replan_tries_an_alternative_capability_once(api_for, client_user, drain):
    run = run_of(api_for, client_user, drain, goal_envelope(maxReplans=0, onUnmet="replan"))

    assert run.status == "completed" and goal_events(run.id) == [(False, 1), (True, 2)]
    version = PlanVersion.objects.get(run=run, version=2)
    assert version.trigger["escalated"] is True
    assert version.trigger["excludedCapabilities"] == ["copywriter.ShortformDrafting"]
    assert [n["capabilityId"] for n in version.graph["nodes"]][:2] == ["strategist.SocialPosting",
                                                                      "copywriter.SocialpostDrafting"]
    assert run.facet_snapshot()[1]["copyVariants"]["nodeId"] == "copywriter-2"


@pytest.mark.parametrize("objective, copywriter", [
    (None, "copywriter.SocialpostDrafting"), ("quality", "copywriter.SocialpostDrafting"),
    ("diversity", "copywriter.SocialpostDrafting"), ("speed", "copywriter.ShortformDrafting"),
    ("token_efficiency", "copywriter.ShortformDrafting"),
])
def test_the_objective_chooses_the_documented_alternative(api_for, client_user, drain, objective, copywriter):
    body = load_envelope("linkedin-variants")
    if objective:
        body["policies"]["planner"]["optimisation"] = {"objective": objective}
    run = run_of(api_for, client_user, drain, body)

    assert run.status == "completed"
    [plan] = events_of(run.id, "plan_generated")
    assert [n["capabilityId"] for n in plan.payload["nodes"]][1] == copywriter
    assert plan.payload["metadata"]["objective"] == (objective or "quality")


def test_an_unknown_objective_is_refused(api_for, client_user):
    body = load_envelope("linkedin-variants")
    body["policies"]["planner"]["optimisation"] = {"objective": "cheapest"}

    response = api_for(client_user).post("/api/v1/flex/runs", body, format="json")

    assert response.status_code == 422 and response.json()["code"] == "validation_failed"
    assert response.json()["details"]["errors"][0]["path"] == "/policies/planner/optimisation/objective"
    assert not Run.objects.exists()


def test_directives_reach_every_bundle(api_for, client_user, drain):
    run = run_of(api_for, client_user, drain, goal_envelope())

    directives = load_envelope("goal-quality")["policies"]["planner"]["directives"]
    inputs = list(NodeRun.objects.filter(run=run).values_list("node_id", "input"))
    assert len(inputs) == 4 and all(bundle["directives"] == directives for _node, bundle in inputs)


@pytest.mark.parametrize("goal, status, code, path", [
    ({"id": "g", "condition": {">=": [{"var": "qa_reprot.score"}, 0.8]}}, 422, "unknown_facet",
     "/policies/planner/goals/0/condition"),
    ({"id": "g", "condition": {"≥": [{"var": "qa_report.score"}, 0.8]}}, 422, "validation_failed",
     "/policies/planner/goals/0/condition"),
    ({"id": "g", "condition": {"var": {"cat": ["qa_", "report.score"]}}}, 422, "validation_failed",
     "/policies/planner/goals/0/condition"),
    ({"id": "g", "condition": QUALITY_BAR, "onUnmet": "ignore"}, 422, "validation_failed",
     "/policies/planner/goals/0/onUnmet"),
    ({"id": "g", "condition": QUALITY_BAR, "maxReplans": -1}, 422, "validation_failed",
     "/policies/planner/goals/0/maxReplans"),
    ({"condition": QUALITY_BAR}, 422, "validation_failed", "/policies/planner/goals/0"),
])
def test_goals_are_validated_with_the_envelope(api_for, client_user, goal, status, code, path):
    body = load_envelope("goal-quality")
    body["policies"]["planner"]["goals"] = [goal]

    response = api_for(client_user).post("/api/v1/flex/runs", body, format="json")

    assert response.status_code == status and response.json()["code"] == code, response.content
    assert response.json()["details"]["errors"][0]["path"] == path
    assert not Run.objects.exists()


def test_goal_defaults_are_filled_in(api_for, client_user, drain):
    body = goal_envelope()
    body["policies"]["planner"]["goals"] = [{"id": "quality-bar", "condition": QUALITY_BAR}]
    run_id = submit(api_for(client_user), body)
    assert Run.objects.get(pk=run_id).envelope["policies"]["planner"]["goals"] == [
        {"id": "quality-bar", "condition": QUALITY_BAR, "maxReplans": 2, "onUnmet": "hitl"}]


def test_a_goal_unmet_after_a_resume_asks_a_person_through_the_state_machine(api_for, client_user, operator,
                                                                             drain):
    body = goal_envelope(condition={">=": [{"var": "qa_report.score"}, 2]}, maxReplans=0)
    body["policies"]["runtime"] = [{"id": "check-review", "trigger": {"kind": "onNodeComplete",
                                                                      "selector": {"nodeId": "qa"}},
                                    "action": {"type": "hitl"}}]
    run = run_of(api_for, client_user, drain, body)
    first = pending_request(run.id)
    assert first.source == "check-review"

    assert resume(api_for(operator), run.id, first.id, [APPROVE]).status_code == 200
    drain()

    run.refresh_from_db()
    assert run.status == "awaiting_hitl" and goal_events(run.id) == [(False, 1)]
    assert pending_request(run.id).source == "goal:quality-bar"
