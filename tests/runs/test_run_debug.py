"""GET /api/v1/flex/runs/{runId}: the debug view of API.md."""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from hitl.models import HitlRequest, HitlResponse
from runs.models import AuditEntry, NodeRun, PlanVersion, Run, RunEvent
from runs.services import audit_add
from tests.conftest import load_envelope

TOP_LEVEL = {"run", "policies", "planVersions", "nodes", "facetProvenance", "hitl", "latestSnapshot", "output",
             "events", "audit", "usage"}
RUN_FIELDS = {"runId", "status", "objective", "planVersion", "threadId", "briefId", "createdAt", "updatedAt",
              "createdBy", "envelope"}


def debug_url(run_id: str) -> str:
    return f"/api/v1/flex/runs/{run_id}"


@pytest.fixture(autouse=True)
def _fresh_throttle_counts() -> Any:
    # Throttle counts live in the process's cache; never carry them between tests.
    cache.clear()
    yield
    cache.clear()


def test_the_debug_view_of_a_completed_run_shows_every_part(api_for, client_user, support, drain):
    envelope = load_envelope("linkedin-variants")
    run_id = api_for(client_user).post("/api/v1/flex/runs", envelope, format="json").json()["runId"]
    drain()

    response = api_for(support).get(debug_url(run_id))

    assert response.status_code == 200
    body = response.json()
    assert set(body) == TOP_LEVEL
    assert body["usage"] == {"promptTokens": 0, "completionTokens": 0, "totalTokens": 0, "calls": 0,
                             "maxTokens": None, "byModel": []}
    run = body["run"]
    assert RUN_FIELDS <= set(run)
    assert run["runId"] == run_id and run["status"] == "completed" and run["planVersion"] == 1
    assert (run["threadId"], run["briefId"], run["createdBy"]) == ("thread-demo-1", "brief-42", "clara")
    assert run["createdAt"].endswith("Z") and run["updatedAt"].endswith("Z")
    assert run["envelope"]["objective"] == envelope["objective"]
    assert run["envelope"]["inputs"] == envelope["inputs"]
    assert body["policies"]["planner"] == envelope["policies"]["planner"]

    [version] = body["planVersions"]
    assert version["version"] == 1 and version["reason"] == "initial" and version["trigger"] == {"kind": "submit"}
    assert version["schemaHash"]
    assert version["pendingNodeIds"] == ["strategist", "copywriter", "output"]
    assert [(n["nodeId"], n["capabilityId"], n["kind"]) for n in version["nodes"]] == [
        ("strategist", "strategist.SocialPosting", "structuring"),
        ("copywriter", "copywriter.SocialpostDrafting", "execution"),
        ("output", "flex.OutputMapper", "transformation")]
    assert version["nodes"][1]["inputFacets"] == ["company_information", "creative_brief", "handoff_summary"]
    assert version["nodes"][1]["outputFacets"] == ["copyVariants", "post_copy"]

    nodes = {n["nodeId"]: n for n in body["nodes"]}
    assert list(nodes) == ["strategist", "copywriter", "output"]
    for node in nodes.values():
        assert node["status"] == "completed" and node["attempts"] == 1
        assert node["input"]["nodeId"] == node["nodeId"] and node["output"]
        assert node["validationErrors"] == [] and node["startedAt"] and node["completedAt"]
        assert node["usage"] == []  # no language model in this run
    assert set(nodes["copywriter"]["output"]) == {"copyVariants", "post_copy"}

    # Provenance names the node of every facet a node produced.
    provenance = body["facetProvenance"]
    for node in version["nodes"]:
        for facet in node["outputFacets"]:
            if facet != "output":
                assert provenance[facet]["nodeId"] == node["nodeId"]
                assert provenance[facet]["capabilityId"] == node["capabilityId"]
                assert provenance[facet]["planVersion"] == 1
    assert provenance["company_information"]["source"] == "envelope"

    assert body["hitl"] == {"requests": [], "responses": []}
    snapshot = body["latestSnapshot"]
    assert snapshot["version"] == 1 and snapshot["pendingNodeIds"] == []
    assert snapshot["facets"]["copyVariants"] == body["output"]["copyVariants"]
    assert len(body["output"]["copyVariants"]) == 2

    stored = list(RunEvent.objects.filter(run_id=run_id).order_by("seq"))
    assert body["events"]["count"] == len(stored) == 10
    assert [e["seq"] for e in body["events"]["latest"]] == [e.seq for e in stored]
    assert body["events"]["latest"][-1]["type"] == "complete"
    assert body["events"]["latest"][-1]["payload"]["status"] == "completed"

    assert [(a["action"], a["actor"], a["planVersion"]) for a in body["audit"]] == [("run_created", "clara", 0)]
    assert body["audit"][0]["at"].endswith("Z")


def test_the_owner_sees_the_debug_view_and_another_client_gets_not_found(api_for, client_user, other_client):
    run_id = api_for(client_user).post("/api/v1/flex/runs", load_envelope("linkedin-variants"),
                                       format="json").json()["runId"]

    assert api_for(client_user).get(debug_url(run_id)).status_code == 200
    hidden = api_for(other_client).get(debug_url(run_id))
    assert hidden.status_code == 404 and hidden.json()["code"] == "run_not_found"
    missing = api_for(client_user).get(debug_url("run_doesnotexist"))
    assert missing.status_code == 404 and missing.json() == {**hidden.json(), "details": {"runId": "run_doesnotexist"}}


def build_run(*, owner: Any, nodes: int, versions: int, events: int, hitl: int) -> Run:
    """A run written straight into the tables, the size we ask for."""
    node_ids = [f"n{i}" for i in range(nodes)]
    envelope = load_envelope("linkedin-variants")
    run = Run.objects.create(objective="A big run", envelope=envelope, created_by=owner, thread_id="t-big",
                             plan_version=versions, last_seq=events, status="awaiting_hitl", has_snapshot=True,
                             facets={"company_information": envelope["inputs"]["company_information"],
                                     "copyVariants": [{"headline": "h", "body": "b", "callToAction": "c"}]},
                             provenance={"copyVariants": {"nodeId": node_ids[-1], "capabilityId": "cap.Last",
                                                          "planVersion": versions}},
                             pending_node_ids=node_ids[-1:])
    graph = {"nodes": [{"id": nid, "capabilityId": f"cap.{nid}", "kind": "execution", "inputFacets": ["a"],
                        "outputFacets": ["b"], "dependsOn": node_ids[max(i - 1, 0):i]}
                       for i, nid in enumerate(node_ids)]}
    PlanVersion.objects.bulk_create([
        PlanVersion(run=run, version=v, reason="initial" if v == 1 else "resume", trigger={"kind": "test"},
                    graph=graph, pending_node_ids=node_ids[v:], schema_hash=f"hash{v}")
        for v in range(1, versions + 1)])
    NodeRun.objects.bulk_create([
        NodeRun(run=run, node_id=nid, capability_id=f"cap.{nid}", kind="execution", status="completed",
                attempts=1, position=i, input={"nodeId": nid, "facets": {"a": i}}, output={"b": i})
        for i, nid in enumerate(node_ids)])
    now = timezone.now()
    RunEvent.objects.bulk_create([
        RunEvent(run=run, seq=seq, type="log", plan_version=1, payload={"level": "info", "message": f"event {seq}"},
                 created_at=now + timedelta(microseconds=seq))
        for seq in range(1, events + 1)], batch_size=1000)
    for i in range(hitl):
        request = HitlRequest.objects.create(run=run, kind="approval", question=f"Approve {i}?",
                                             pending_node_id=node_ids[-1], plan_version=i + 1,
                                             status="pending" if i == hitl - 1 else "resolved")
        for j in range(2):
            HitlResponse.objects.create(request=request, run=run, response_type="freeform",
                                        freeform_text=f"answer {i}.{j}", responder=owner)
        audit_add(run=run, action="run_resumed", actor=owner, details={"note": f"resume {i}"})
    return run


def debug_queries(api: Any, run_id: str) -> tuple[int, dict[str, Any]]:
    with CaptureQueriesContext(connection) as queries:
        response = api.get(debug_url(run_id))
    assert response.status_code == 200
    return len(queries.captured_queries), response.json()


@pytest.mark.parametrize("reader", ["support", "client_user"])
def test_its_query_count_does_not_grow_with_the_run(request, api_for, client_user, reader):
    tiny = build_run(owner=client_user, nodes=3, versions=1, events=5, hitl=1)
    big = build_run(owner=client_user, nodes=200, versions=20, events=5000, hitl=4)
    from flexagents.roles import grant_run_to_owner

    grant_run_to_owner(run=tiny, user=client_user)
    grant_run_to_owner(run=big, user=client_user)
    api = api_for(request.getfixturevalue(reader))
    debug_queries(api, tiny.id)  # warm per-process caches (content types)

    tiny_count, tiny_body = debug_queries(api, tiny.id)
    big_count, big_body = debug_queries(api, big.id)

    assert big_count == tiny_count
    assert len(big_body["nodes"]) == 200 and len(big_body["planVersions"]) == 20
    assert [v["reason"] for v in big_body["planVersions"][:2]] == ["initial", "resume"]
    assert big_body["events"]["count"] == 5000
    assert [e["seq"] for e in big_body["events"]["latest"]] == list(range(4951, 5001))
    assert len(big_body["hitl"]["requests"]) == 4 and len(big_body["hitl"]["responses"]) == 8
    assert [len(r["responses"]) for r in big_body["hitl"]["requests"]] == [2, 2, 2, 2]
    assert big_body["run"]["pendingRequestId"] == big_body["hitl"]["requests"][-1]["requestId"]
    assert [a["details"]["note"] for a in big_body["audit"]] == [f"resume {i}" for i in range(4)]
    assert tiny_body["events"]["count"] == 5 and len(tiny_body["nodes"]) == 3


def test_it_is_rate_limited_per_user(settings, api_for, client_user, support):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK,
                               "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
                                                          "run_detail": "2/min"}}
    run_id = api_for(client_user).post("/api/v1/flex/runs", load_envelope("linkedin-variants"),
                                       format="json").json()["runId"]
    api = api_for(client_user)

    assert [api.get(debug_url(run_id)).status_code for _ in range(2)] == [200, 200]
    refused = api.get(debug_url(run_id))

    assert refused.status_code == 429
    assert refused.json()["code"] == "throttled"
    assert 0 < int(refused["Retry-After"]) <= 60
    assert refused.json()["details"]["retryAfter"] == int(refused["Retry-After"])
    # Per user: another user's budget is untouched, and endpoints without run details are not limited.
    assert api_for(support).get(debug_url(run_id)).status_code == 200
    assert api.get("/api/v1/flex/runs").status_code == 200


def test_each_read_writes_a_structured_log_line(caplog, api_for, support, client_user):
    run_id = api_for(client_user).post("/api/v1/flex/runs", load_envelope("linkedin-variants"),
                                       format="json").json()["runId"]

    with caplog.at_level(logging.INFO, logger="runs.apis"):
        api_for(support).get(debug_url(run_id))

    [record] = [r for r in caplog.records if r.name == "runs.apis"]
    assert (record.run_id, record.operator_id, record.plan_version, record.action) == (
        run_id, support.pk, 0, "debug_read")


def test_a_run_with_two_plan_versions_lists_both_with_their_reasons(api_for, operator, client_user, drain):
    run_id = api_for(client_user).post("/api/v1/flex/runs", load_envelope("linkedin-variants"),
                                       format="json").json()["runId"]
    drain()
    first = PlanVersion.objects.get(run_id=run_id, version=1)
    PlanVersion.objects.create(run_id=run_id, version=2, reason="replan", trigger={"kind": "policy", "policyId": "p1"},
                               graph=first.graph, pending_node_ids=["output"], schema_hash="h2")
    audit_add(run=Run.objects.get(pk=run_id), action="run_replanned", actor=operator, plan_version=2)

    body = api_for(operator).get(debug_url(run_id)).json()

    assert [(v["version"], v["reason"], v["trigger"]) for v in body["planVersions"]] == [
        (1, "initial", {"kind": "submit"}), (2, "replan", {"kind": "policy", "policyId": "p1"})]
    assert body["planVersions"][1]["pendingNodeIds"] == ["output"]
    assert [(a["action"], a["actor"], a["planVersion"]) for a in body["audit"]] == [
        ("run_created", "clara", 0), ("run_replanned", "olivia", 2)]
    assert AuditEntry.objects.filter(run_id=run_id).count() == 2


def test_the_debug_view_shows_each_plan_version_with_its_own_graph(api_for, client_user, support, drain):
    envelope = load_envelope("linkedin-variants")
    envelope["policies"]["runtime"] = [{"id": "redo-copy", "trigger": {"kind": "onNodeComplete",
                                                                      "selector": {"nodeId": "copywriter"}},
                                        "action": {"type": "replan", "rationale": "try the other style"}}]
    run_id = api_for(client_user).post("/api/v1/flex/runs", envelope, format="json").json()["runId"]
    drain()

    body = api_for(support).get(debug_url(run_id)).json()

    first, second = body["planVersions"]
    assert (first["version"], first["reason"], second["version"], second["reason"]) == (1, "initial", 2, "replan")
    assert [(n["nodeId"], n["capabilityId"]) for n in first["nodes"]] == [
        ("strategist", "strategist.SocialPosting"), ("copywriter", "copywriter.SocialpostDrafting"),
        ("output", "flex.OutputMapper")]
    assert [(n["nodeId"], n["capabilityId"]) for n in second["nodes"]] == [
        ("strategist", "strategist.SocialPosting"), ("copywriter-2", "copywriter.ShortformDrafting"),
        ("output", "flex.OutputMapper")]
    assert second["trigger"]["policyId"] == "redo-copy"
    assert second["trigger"]["excludedCapabilities"] == ["copywriter.SocialpostDrafting"]
    assert second["nodes"][1]["dependsOn"] == ["strategist"] and second["nodes"][1]["rationale"]
    assert first["schemaHash"] != second["schemaHash"]
    # Every node row is there, with the version it last ran under.
    assert [(n["nodeId"], n["status"], n["planVersion"]) for n in body["nodes"]] == [
        ("strategist", "completed", 1), ("copywriter", "completed", 1), ("output", "completed", 2),
        ("copywriter-2", "completed", 2)]
    assert body["facetProvenance"]["copyVariants"]["nodeId"] == "copywriter-2"
