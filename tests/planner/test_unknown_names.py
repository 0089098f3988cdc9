"""A typo in an envelope never silently removes a step (API.md, Second wave).

Unknown facets and capability ids are refused with 422 before any run
exists, through every endpoint that takes an envelope; `nodeId` selectors
that cannot match are reported by the planner (plan.preview diagnostics and
`plan_generated.metadata.warnings`)."""
from __future__ import annotations

from typing import Any

import pytest

from runs.models import Run, RunEvent
from tests.conftest import load_envelope

pytestmark = pytest.mark.django_db

ENDPOINTS = ["/api/v1/flex/runs", "/api/v1/flex/run.stream", "/api/v1/flex/plan.preview"]


def approval_with_selector(selector: dict[str, Any]) -> dict[str, Any]:
    envelope = load_envelope("approval-required")
    envelope["policies"]["runtime"][0]["trigger"]["selector"] = selector
    return envelope


def post(api: Any, path: str, body: dict[str, Any]) -> Any:
    return api.post(path, body, format="json", HTTP_ACCEPT="application/json, text/event-stream")


@pytest.mark.parametrize("path", ENDPOINTS)
def test_it_refuses_a_misspelt_capability_in_an_approval_selector(api_for, client_user, path):
    envelope = approval_with_selector({"capabilityId": "copywriter.SocialPostDrafting"})  # P, not p

    response = post(api_for(client_user), path, envelope)

    assert response.status_code == 422
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["code"] == "unknown_capability"
    assert body["details"]["unknownCapabilities"] == ["copywriter.SocialPostDrafting"]
    assert "copywriter.SocialpostDrafting" in body["details"]["knownCapabilities"]
    assert body["details"]["errors"] == [{"path": "/policies/runtime/0/trigger/selector/capabilityId",
                                          "message": "'copywriter.SocialPostDrafting' is not a registered capability"}]
    assert Run.objects.count() == 0 and RunEvent.objects.count() == 0


@pytest.mark.parametrize("path", ENDPOINTS)
def test_it_refuses_an_unknown_capability_in_a_selection_policy(api_for, client_user, path):
    envelope = load_envelope("linkedin-variants")
    envelope["policies"]["planner"]["selection"] = {"avoid": ["qa.ContentReveiw"]}

    response = post(api_for(client_user), path, envelope)

    assert response.status_code == 422
    assert response.json()["code"] == "unknown_capability"
    assert response.json()["details"]["errors"][0]["path"] == "/policies/planner/selection/avoid/0"
    assert Run.objects.count() == 0


def test_it_names_every_unknown_capability_once_with_every_place_it_appears(api_for, client_user):
    envelope = approval_with_selector({"capabilityId": "ghost.Writer"})
    envelope["policies"]["planner"]["selection"] = {"prefer": ["ghost.Writer"]}

    body = post(api_for(client_user), "/api/v1/flex/runs", envelope).json()

    assert body["details"]["unknownCapabilities"] == ["ghost.Writer"]
    assert [e["path"] for e in body["details"]["errors"]] == [
        "/policies/planner/selection/prefer/0", "/policies/runtime/0/trigger/selector/capabilityId"]


@pytest.mark.parametrize("path", ENDPOINTS)
def test_it_refuses_an_unknown_output_facet(api_for, client_user, path):
    envelope = load_envelope("facets-output")
    envelope["outputContract"]["facets"] = ["copyVariants", "qa_reprot"]

    response = post(api_for(client_user), path, envelope)

    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "unknown_facet"
    assert body["details"]["unknownFacets"] == ["qa_reprot"]
    assert "qa_report" in body["details"]["knownFacets"]
    assert body["details"]["errors"][0]["path"] == "/outputContract/facets/1"
    assert Run.objects.count() == 0


def test_a_correct_selector_still_raises_the_approval(api_for, client_user, drain):
    response = post(api_for(client_user), "/api/v1/flex/runs",
                    approval_with_selector({"capabilityId": "copywriter.SocialpostDrafting"}))
    assert response.status_code == 202

    drain()

    assert Run.objects.get(pk=response.json()["runId"]).status == "awaiting_hitl"


def test_plan_preview_reports_a_node_id_no_plan_can_contain(api_for, client_user):
    envelope = approval_with_selector({"nodeId": "copywritter"})

    response = post(api_for(client_user), "/api/v1/flex/plan.preview", envelope)

    assert response.status_code == 200
    body = response.json()
    assert [n["id"] for n in body["plan"]["nodes"]] == ["strategist", "copywriter", "output"]
    [warning] = body["diagnostics"]
    assert warning["code"] == "unknown_node_id"
    assert warning["nodeId"] == "copywritter" and warning["policyId"] == "approve-copy"
    assert warning["path"] == "/policies/runtime/0/trigger/selector/nodeId"
    assert "copywriter" in warning["knownNodeIds"]
    assert body["plan"]["metadata"]["warnings"] == body["diagnostics"]
    assert Run.objects.count() == 0


def test_plan_preview_reports_a_registered_capability_this_plan_does_not_use(api_for, client_user):
    envelope = load_envelope("linkedin-variants")
    envelope["policies"]["runtime"] = [{"id": "review-qa", "trigger": {
        "kind": "onNodeComplete", "selector": {"capabilityId": "qa.ContentReview"}}, "action": {"type": "hitl"}}]

    body = post(api_for(client_user), "/api/v1/flex/plan.preview", envelope).json()

    assert [(d["code"], d["capabilityId"]) for d in body["diagnostics"]] == [
        ("capability_not_in_plan", "qa.ContentReview")]


def test_plan_preview_reports_node_selectors_even_when_the_plan_is_rejected(api_for, client_user):
    envelope = load_envelope("unsatisfiable-output")
    envelope.setdefault("policies", {})["runtime"] = [
        {"id": "p", "trigger": {"kind": "onNodeComplete", "selector": {"nodeId": "nobody"}}, "action": {"type": "hitl"}}]

    body = post(api_for(client_user), "/api/v1/flex/plan.preview", envelope).json()

    assert body["plan"] is None
    codes = [d["code"] for d in body["diagnostics"]]
    assert "unsatisfiable_facet" in codes and codes[-1] == "unknown_node_id"


def test_a_run_reports_an_impossible_node_selector_in_plan_generated(api_for, client_user, drain):
    response = post(api_for(client_user), "/api/v1/flex/runs", approval_with_selector({"nodeId": "copywritter"}))
    assert response.status_code == 202

    drain()

    run_id = response.json()["runId"]
    events = api_for(client_user).get(f"/api/v1/flex/runs/{run_id}/events").json()["events"]
    [generated] = [e for e in events if e["type"] == "plan_generated"]
    warnings = generated["payload"]["metadata"]["warnings"]
    assert [(w["code"], w["nodeId"]) for w in warnings] == [("unknown_node_id", "copywritter")]


def test_a_plan_whose_selectors_all_match_has_no_warnings(api_for, client_user):
    body = post(api_for(client_user), "/api/v1/flex/plan.preview", load_envelope("approval-required")).json()

    assert body["diagnostics"] == [] and body["plan"]["metadata"]["warnings"] == []
