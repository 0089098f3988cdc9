"""Runtime policies: each trigger kind and each action kind."""
from __future__ import annotations

import pytest

from hitl.models import HitlRequest
from runs.models import NodeRun, PlanVersion, Run
from tests.capabilities import review_envelope
from tests.conftest import load_envelope
from tests.hitl.helpers import APPROVE, REJECT, event_types, events_of, pending_request, resume, submit

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _test_capabilities(settings):
    settings.FLEX_EXTRA_CAPABILITIES = ["tests.capabilities.FlakyReview", "tests.capabilities.NeverValidReview"]


def with_policies(*policies, base="linkedin-variants"):
    body = load_envelope(base)
    body["policies"]["runtime"] = list(policies)
    return body


def policy(action, kind="onNodeComplete", selector=None, condition=None, **extra):
    trigger = {"kind": kind}
    if selector is not None:
        trigger["selector"] = selector
    if condition is not None:
        trigger["condition"] = condition
    return {"id": extra.pop("id", "p1"), "trigger": trigger, "action": action, **extra}


def run_with(api_for, client_user, drain, body):
    run_id = submit(api_for(client_user), body)
    drain()
    return Run.objects.get(pk=run_id)


def triggered(run_id):
    return [e.payload for e in events_of(run_id, "policy_triggered")]


# --- triggers and selectors ------------------------------------------------------

def test_on_start_fires_before_any_node(api_for, client_user, drain):
    run = run_with(api_for, client_user, drain, with_policies(policy({"type": "hitl"}, kind="onStart")))

    assert run.status == "awaiting_hitl"
    assert event_types(run.id) == ["start", "plan_requested", "plan_generated", "policy_triggered", "hitl_request"]
    assert triggered(run.id) == [{"policyId": "p1", "trigger": "onStart", "action": {"type": "hitl"}}]
    assert pending_request(run.id).pending_node_id == ""


def test_approving_an_on_start_request_runs_the_plan(api_for, client_user, operator, drain):
    run = run_with(api_for, client_user, drain, with_policies(policy({"type": "hitl"}, kind="onStart")))

    assert resume(api_for(operator), run.id, pending_request(run.id).id, [APPROVE]).status_code == 200
    drain()

    assert Run.objects.get(pk=run.id).status == "completed"


def test_on_node_complete_fires_for_every_selected_node(api_for, client_user, drain):
    run = run_with(api_for, client_user, drain,
                   with_policies(policy({"type": "emit", "event": "done"}, selector={"kind": "structuring"}),
                                 policy({"type": "emit", "event": "any"}, id="p2")))

    assert run.status == "completed"
    fired = [(p["policyId"], p["nodeId"]) for p in triggered(run.id)]
    nodes = list(NodeRun.objects.filter(run=run).values_list("node_id", flat=True))
    assert fired.count(("p1", "strategist")) == 1 and [f for f in fired if f[0] == "p1"] == [("p1", "strategist")]
    assert [f[1] for f in fired if f[0] == "p2"] == nodes


@pytest.mark.parametrize("selector, fires", [
    ({"nodeId": "copywriter"}, True), ({"capabilityId": "copywriter.SocialpostDrafting"}, True), ({"kind": "execution"}, True),
    ({"nodeId": "copywriter", "kind": "validation"}, False), ({"capabilityId": "qa.ContentReview"}, False),  # registered, not in this plan
])
def test_selectors_match_on_every_given_key(api_for, client_user, drain, selector, fires):
    run = run_with(api_for, client_user, drain, with_policies(policy({"type": "emit", "event": "x"},
                                                                     selector=selector)))

    assert bool(triggered(run.id)) is fires


@pytest.mark.parametrize("condition, fires", [
    ({"==": [{"var": "node.id"}, "copywriter"]}, True),
    ({">=": [{"var": "output.copyVariants.length"}, 5]}, False),
    ({"in": ["Akkuro", {"var": "output.post_copy"}]}, True),
    ({"==": [{"var": "run.planVersion"}, 1]}, True),
    ({"==": [{"var": "facets.post_context.channel"}, "linkedin"]}, True),
    ({"==": [{"var": "node.attempt"}, 2]}, False),
])
def test_conditions_see_the_node_its_output_the_facets_and_the_run(api_for, client_user, drain, condition, fires):
    run = run_with(api_for, client_user, drain, with_policies(policy({"type": "emit", "event": "x"},
                                                                     selector={"nodeId": "copywriter"},
                                                                     condition=condition)))

    assert bool(triggered(run.id)) is fires


def test_disabled_and_manual_policies_never_fire(api_for, client_user, drain):
    run = run_with(api_for, client_user, drain,
                   with_policies(policy({"type": "fail"}, enabled=False),
                                 policy({"type": "fail"}, kind="manual", id="p2")))

    assert run.status == "completed" and triggered(run.id) == []


# --- actions --------------------------------------------------------------------

def test_emit_logs_its_payload_and_the_run_goes_on(api_for, client_user, drain):
    run = run_with(api_for, client_user, drain, with_policies(
        policy({"type": "emit", "event": "copy_ready", "payload": {"channel": "linkedin"}},
               selector={"nodeId": "copywriter"})))

    assert run.status == "completed"
    log = events_of(run.id, "log")[0].payload
    assert log["event"] == "copy_ready" and log["payload"] == {"channel": "linkedin"} and log["level"] == "info"


def test_fail_fails_the_run_after_the_node(api_for, client_user, drain):
    run = run_with(api_for, client_user, drain, with_policies(
        policy({"type": "fail", "message": "no posts on Fridays"}, selector={"nodeId": "strategist"})))

    assert run.status == "failed" and run.error["code"] == "policy_failed"
    assert events_of(run.id, "complete")[0].payload["error"]["message"] == "no posts on Fridays"
    assert NodeRun.objects.get(run=run, node_id="strategist").status == "completed"
    assert NodeRun.objects.get(run=run, node_id="copywriter").attempts == 0


def test_pause_stops_the_run_until_it_is_resumed(api_for, client_user, operator, drain):
    run = run_with(api_for, client_user, drain, with_policies(
        policy({"type": "pause", "reason": "legal review"}, selector={"nodeId": "strategist"})))

    assert run.status == "paused" and run.pause_reason == "legal review"
    assert triggered(run.id)[0]["action"] == {"type": "pause", "reason": "legal review"}
    response = api_for(operator).post("/api/v1/flex/run.resume", {"runId": run.id, "expectedPlanVersion": 1},
                                      format="json")
    assert response.status_code == 202
    drain()
    assert Run.objects.get(pk=run.id).status == "completed"


def test_replan_excludes_the_node_it_fired_on_and_plans_an_alternative(api_for, client_user, drain):
    run = run_with(api_for, client_user, drain, with_policies(
        policy({"type": "replan", "rationale": "copy too long"}, selector={"nodeId": "copywriter"})))

    assert run.status == "completed" and run.plan_version == 2
    version = PlanVersion.objects.get(run=run, version=2)
    assert version.reason == "replan" and version.trigger["policyId"] == "p1"
    assert version.trigger["excludedCapabilities"] == ["copywriter.SocialpostDrafting"]
    assert [(n["id"], n["capabilityId"]) for n in version.graph["nodes"]] == [
        ("strategist", "strategist.SocialPosting"), ("copywriter-2", "copywriter.ShortformDrafting"),
        ("output", "flex.OutputMapper")]
    assert version.node_statuses["strategist"] == "completed" and "strategist" not in version.pending_node_ids
    updated = events_of(run.id, "plan_updated")[0].payload
    assert (updated["previousVersion"], updated["version"], updated["reason"]) == (1, 2, "replan")
    assert (updated["addedNodes"], updated["removedNodes"], updated["keptNodes"]) == (
        ["copywriter-2"], ["copywriter"], ["strategist"])
    assert [(n["id"], n["status"]) for n in updated["nodes"]] == [
        ("strategist", "completed"), ("copywriter-2", "pending"), ("output", "pending")]
    strategist = NodeRun.objects.get(run=run, node_id="strategist")
    assert (strategist.commits, strategist.attempts, strategist.plan_version) == (1, 1, 1)
    assert [e.payload["nodeId"] for e in events_of(run.id, "node_start")] == [
        "strategist", "copywriter", "copywriter-2", "output"]
    assert run.facet_snapshot()[1]["copyVariants"]["nodeId"] == "copywriter-2"


def test_replan_with_no_alternative_rejects_the_plan_and_fails_the_run(api_for, client_user, drain):
    run = run_with(api_for, client_user, drain, with_policies(
        policy({"type": "replan"}, selector={"nodeId": "strategist"})))

    assert run.status == "failed" and run.error["code"] == "replan_rejected"
    types = event_types(run.id)
    assert types[types.index("policy_triggered"):] == ["policy_triggered", "plan_requested", "plan_rejected",
                                                      "complete"]
    assert events_of(run.id, "plan_rejected")[0].payload["diagnostics"][0]["excludedCapabilities"] == [
        "strategist.SocialPosting"]
    assert events_of(run.id, "complete")[0].payload["status"] == "failed"
    assert run.plan_version == 1 and not PlanVersion.objects.filter(run=run, version=2).exists()


def test_a_hitl_reject_action_replans_onto_an_alternative(api_for, client_user, operator, drain):
    body = load_envelope("approval-required")
    body["policies"]["runtime"][0]["action"]["rejectAction"] = {"type": "replan"}
    body["policies"]["runtime"][0]["trigger"]["selector"] = {"kind": "execution"}  # any copywriter
    run = run_with(api_for, client_user, drain, body)
    first = pending_request(run.id)

    assert resume(api_for(operator), run.id, first.id, [REJECT]).status_code == 200
    version = PlanVersion.objects.get(run=run, version=2)
    assert version.reason == "replan" and version.trigger["kind"] == "hitl"
    assert version.trigger["excludedCapabilities"] == ["copywriter.SocialpostDrafting"]
    drain()

    # The alternative copywriter wrote the copy; its output is asked about in turn.
    second = pending_request(run.id)
    assert second.id != first.id and second.pending_node_id == "copywriter-2"
    assert NodeRun.objects.get(run=run, node_id="copywriter").attempts == 1
    assert resume(api_for(operator), run.id, second.id, [APPROVE]).status_code == 200
    drain()
    assert Run.objects.get(pk=run.id).status == "completed"


def test_an_approve_action_can_fail_the_run(api_for, client_user, operator, drain):
    body = load_envelope("approval-required")
    body["policies"]["runtime"][0]["action"]["approveAction"] = "fail"
    run = run_with(api_for, client_user, drain, body)

    resume(api_for(operator), run.id, pending_request(run.id).id, [APPROVE])

    assert Run.objects.get(pk=run.id).status == "failed"


# --- onValidationFail -------------------------------------------------------------

def invalid_review(*policies, capability="test.NeverValidReview"):
    body = review_envelope(load_envelope("linkedin-variants"), capability)
    body["constraints"] = {"maxRetries": 1}
    body["policies"]["runtime"] = list(policies)
    return body


def test_without_a_policy_exhausted_validation_asks_a_person(api_for, client_user, drain):
    run = run_with(api_for, client_user, drain, invalid_review())

    assert run.status == "awaiting_hitl" and triggered(run.id) == []
    request = pending_request(run.id)
    assert request.kind == "approval" and request.source == "validation_retries_exhausted"
    assert request.review == {"qa_report": {"score": -1}}


def test_a_fail_policy_on_validation_fail_still_fails_the_run(api_for, client_user, drain):
    run = run_with(api_for, client_user, drain,
                   invalid_review(policy({"type": "fail", "message": "no person needed"}, kind="onValidationFail")))

    assert run.status == "failed" and run.error["code"] == "policy_failed"
    assert not HitlRequest.objects.filter(run=run).exists()


def test_on_validation_fail_escalates_to_an_approval(api_for, client_user, drain):
    run = run_with(api_for, client_user, drain, invalid_review(policy({"type": "hitl"}, kind="onValidationFail")))

    assert run.status == "awaiting_hitl"
    request = pending_request(run.id)
    assert request.kind == "approval" and request.pending_node_id == "test"
    assert request.contract_summary["validationErrors"]
    assert NodeRun.objects.get(run=run, node_id="test").status == "awaiting_hitl"
    assert triggered(run.id)[0]["trigger"] == "onValidationFail"


def test_approving_a_validation_escalation_runs_the_node_once_more(api_for, client_user, operator, drain, settings):
    # FlakyReview is valid from its third attempt: two attempts fail, a person approves a third.
    run = run_with(api_for, client_user, drain, invalid_review(policy({"type": "hitl"}, kind="onValidationFail"),
                                                               capability="test.FlakyReview"))
    assert run.status == "awaiting_hitl"

    resume(api_for(operator), run.id, pending_request(run.id).id, [APPROVE])
    drain()

    run.refresh_from_db()
    node = NodeRun.objects.get(run=run, node_id="test")
    assert run.status == "completed" and node.attempts == 3 and node.commits == 1


def test_rejecting_a_validation_escalation_fails_the_run_and_the_node(api_for, client_user, operator, drain):
    run = run_with(api_for, client_user, drain, invalid_review(policy({"type": "hitl"}, kind="onValidationFail")))

    resume(api_for(operator), run.id, pending_request(run.id).id, [REJECT])

    assert Run.objects.get(pk=run.id).status == "failed"
    assert NodeRun.objects.get(run=run, node_id="test").status == "failed"


def test_replan_on_validation_fail_replaces_the_node_by_an_alternative(api_for, client_user, drain):
    body = invalid_review(policy({"type": "replan"}, kind="onValidationFail"))
    body["policies"]["planner"]["selection"] = {"prefer": ["test.NeverValidReview"]}  # qa.ContentReview remains
    run = run_with(api_for, client_user, drain, body)

    assert run.status == "completed" and run.plan_version == 2
    version = PlanVersion.objects.get(run=run, version=2)
    assert version.reason == "replan" and version.trigger["trigger"] == "onValidationFail"
    replaced = NodeRun.objects.get(run=run, node_id="test")
    assert (replaced.status, replaced.attempts, replaced.error["code"]) == ("failed", 2, "replaced_by_replan")
    assert NodeRun.objects.get(run=run, node_id="qa").status == "completed"
    assert run.facet_snapshot()[1]["qa_report"]["nodeId"] == "qa"


def test_replan_on_validation_fail_without_an_alternative_fails_the_run(api_for, client_user, drain):
    run = run_with(api_for, client_user, drain, invalid_review(policy({"type": "replan"}, kind="onValidationFail")))

    # test.NeverValidReview is required by selection.require: excluding it leaves no plan.
    assert run.status == "failed" and run.error["code"] == "replan_rejected"
    assert events_of(run.id, "plan_rejected")[0].payload["diagnostics"][0]["code"] == \
        "required_capability_unavailable"
    assert NodeRun.objects.get(run=run, node_id="test").status == "failed"


def test_a_node_failed_for_good_under_an_on_node_fail_replan_policy_is_replaced(api_for, client_user, drain,
                                                                                 settings):
    settings.FLEX_EXTRA_CAPABILITIES = ["tests.capabilities.BrokenReview"]
    body = review_envelope(load_envelope("linkedin-variants"), "test.BrokenReview")
    body["policies"]["planner"]["selection"] = {"prefer": ["test.BrokenReview"]}
    body["policies"]["runtime"] = [policy({"type": "replan"}, kind="onNodeFail", selector={"kind": "validation"})]
    run = run_with(api_for, client_user, drain, body)

    assert run.status == "completed" and run.plan_version == 2
    assert NodeRun.objects.get(run=run, node_id="test").status == "failed"
    assert PlanVersion.objects.get(run=run, version=2).trigger["excludedCapabilities"] == ["test.BrokenReview"]
    assert [p["trigger"] for p in triggered(run.id)] == ["onNodeFail"]


def test_an_on_node_fail_policy_may_not_ask_a_person(api_for, client_user):
    body = with_policies(policy({"type": "hitl"}, kind="onNodeFail"))
    response = api_for(client_user).post("/api/v1/flex/runs", body, format="json")
    assert response.status_code == 422
    assert response.json()["details"]["errors"][0]["path"] == "/policies/runtime/0/action/type"


def test_pause_on_validation_fail_reruns_the_node_on_resume(api_for, client_user, operator, drain):
    run = run_with(api_for, client_user, drain, invalid_review(policy({"type": "pause"}, kind="onValidationFail"),
                                                               capability="test.FlakyReview"))
    assert run.status == "paused" and NodeRun.objects.get(run=run, node_id="test").status == "pending"

    api_for(operator).post("/api/v1/flex/run.resume", {"runId": run.id, "expectedPlanVersion": 1}, format="json")
    drain()

    assert Run.objects.get(pk=run.id).status == "completed"
    assert not HitlRequest.objects.filter(run=run).exists()


def test_a_hitl_replan_with_no_alternative_fails_the_run_after_the_resume(api_for, client_user, operator, drain):
    body = load_envelope("approval-required")
    body["policies"]["runtime"][0]["action"]["rejectAction"] = "replan"
    body["policies"]["planner"]["selection"] = {"forbid": ["copywriter.ShortformDrafting"]}
    run = run_with(api_for, client_user, drain, body)

    assert resume(api_for(operator), run.id, pending_request(run.id).id, [REJECT]).status_code == 200

    run.refresh_from_db()
    assert run.status == "failed" and run.error["code"] == "replan_rejected"
    types = event_types(run.id)
    assert types[types.index("hitl_resolved"):] == ["hitl_resolved", "plan_updated", "policy_triggered",
                                                    "plan_requested", "plan_rejected", "complete"]
    assert events_of(run.id, "plan_updated")[0].payload["reason"] == "resume"
