"""The OpenAPI description (GET /api/schema/) says what the server does:
every endpoint, its bodies, every status it returns with the error body, and
request schemas that accept exactly what the server accepts."""
from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.cache import cache
from django.urls import URLPattern, URLResolver, get_resolver
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from openapi_spec_validator import validate

from runs.models import Run
from tests.conftest import load_envelope
from tests.sse import streamed

pytestmark = pytest.mark.django_db

# The schema itself, and Pushpin's next link for a held stream (runs.grip: only
# Pushpin calls it, with a signed token it got from the stream's answer).
SCHEMA_PATHS_NOT_DESCRIBED = {"/api/schema/", "/api/docs/", "/api/v1/flex/runs/{runId}/stream/grip/<str:token>"}
# Called without credentials by probes and scrapers; /metrics is outside /api/.
PROBES = {"/api/health", "/api/ready", "/metrics"}


@pytest.fixture
def schema(client) -> dict[str, Any]:
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return json.loads(response.content)


def validator(schema: dict[str, Any], target: dict[str, Any]) -> OAS30Validator:
    # Local references resolve against the components carried in the root.
    return OAS30Validator({**target, "components": schema["components"]}, format_checker=oas30_format_checker)


def schema_errors(schema: dict[str, Any], target: dict[str, Any], instance: Any) -> list[str]:
    return [error.message for error in validator(schema, target).iter_errors(instance)]


def api_paths() -> set[str]:
    """Every URL the project routes under /api/, in OpenAPI's template form."""
    found: set[str] = set()

    def walk(patterns: list[Any], prefix: str) -> None:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, route)
            elif isinstance(pattern, URLPattern) and (route.startswith("api/") or "/" + route in PROBES):
                found.add("/" + route.replace("<str:run_id>", "{runId}").replace("<str:policy_id>", "{policyId}")
                          .replace("<str:agent_id>", "{agentId}").replace("<str:task_id>", "{taskId}"))

    walk(get_resolver().url_patterns, "")
    return found - SCHEMA_PATHS_NOT_DESCRIBED


def operation(schema: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    return schema["paths"][path][method.lower()]


def assert_declared(schema: dict[str, Any], method: str, path: str, response: Any) -> None:
    """The response's status is declared for the operation, its body matches
    the declared schema and — for an error — its code is one of those listed."""
    responses = operation(schema, method, path)["responses"]
    status = str(response.status_code)
    assert status in responses, f"{method} {path} returned undeclared {status}: {response.content[:300]!r}"
    content = responses[status].get("content", {})
    if response["Content-Type"].startswith(("text/event-stream", "text/plain")):
        assert response["Content-Type"].split(";")[0] in content
        return
    body = response.json()
    assert schema_errors(schema, content["application/json"]["schema"], body) == [], (method, path, body)


# --- the document --------------------------------------------------------------------------

def test_it_is_a_valid_openapi_document(schema):
    validate(schema)


def test_it_describes_every_api_endpoint_health_included(schema):
    assert set(schema["paths"]) == api_paths()
    assert "/api/health" in schema["paths"]


def test_every_operation_has_a_stable_unique_operation_id(schema):
    ids = [op["operationId"] for item in schema["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    assert {"runCreate", "runStream", "runResume", "runDebug", "planPreview", "hitlResume", "health"} <= set(ids)


def test_no_operation_offers_the_format_parameter(schema):
    names = [(path, p["name"]) for path, item in schema["paths"].items() for op in item.values()
             for p in op.get("parameters", [])]
    assert [n for n in names if n[1] == "format"] == []
    assert ("/api/v1/flex/runs/{runId}", "runId") in names  # path parameters keep API.md's names


IDEMPOTENT = {("post", "/api/v1/flex/runs"), ("post", "/api/v1/flex/runs/{runId}/cancel"),
              ("post", "/api/v1/flex/run.resume"), ("post", "/api/hitl/respond"), ("post", "/api/hitl/resume"),
              ("post", "/api/hitl/remove"), ("post", "/api/v1/flex/runs/{runId}/policies/{policyId}/trigger")}


def test_the_idempotent_operations_declare_the_key_its_errors_and_the_replay_header(schema):
    declaring = {(method, path) for path, item in schema["paths"].items() for method, op in item.items()
                 if any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in op.get("parameters", []))}
    assert IDEMPOTENT <= declaring
    for method, path in IDEMPOTENT:
        responses = operation(schema, method, path)["responses"]
        codes = {s: r["content"]["application/json"]["schema"]["allOf"][1]["properties"]["code"]["enum"]
                 for s, r in responses.items() if s[0] in "45"}
        assert "idempotency_in_progress" in codes["409"] and "idempotency_key_reused" in codes["422"]
        ok = [r for s, r in responses.items() if s[0] == "2" and "application/json" in r.get("content", {})]
        assert ok and all("Idempotent-Replayed" in r["headers"] for r in ok)


def test_every_operation_declares_its_success_body_and_its_errors_with_the_error_body(schema):
    for path, item in schema["paths"].items():
        for method, op in item.items():
            statuses = set(op["responses"])
            assert any(s.startswith("2") and op["responses"][s].get("content") for s in statuses), (method, path)
            if path not in PROBES:
                assert {"401", "404", "406"} <= statuses, (method, path)
            if method == "post":
                assert {"400", "403", "413", "415", "422"} <= statuses, (method, path)
            for status, response in op["responses"].items():
                if int(status) >= 400:
                    body = response["content"]["application/json"]["schema"]
                    assert {"$ref": "#/components/schemas/Error"} in body["allOf"], (method, path, status)
    error = schema["components"]["schemas"]["Error"]
    assert error["required"] == ["code", "message", "details"]


def test_the_health_check_needs_no_credentials(schema):
    health = operation(schema, "GET", "/api/health")
    assert health["security"] == []
    assert set(health["responses"]) == {"200", "503"}


def test_it_says_where_the_planning_fields_are_documented(schema):
    description = schema["components"]["schemas"]["TaskEnvelope"]["description"]
    for name in ("optimisation", "directives", "goals", "maxTokens"):
        assert name in description
    assert "deadlineSeconds" not in description  # enforced (runs/governance.py)


def test_a_goal_condition_is_a_json_logic_rule(schema):
    goal = schema["components"]["schemas"]["TaskEnvelopeGoal"]
    assert goal["properties"]["condition"] == {"$ref": "#/components/schemas/TaskEnvelopeJsonLogicRule"}


# --- what the server returns is what the schema declares ------------------------------------

def test_every_error_the_server_returns_is_declared(schema, api_for, client, operator, support, client_user,
                                                    drain, settings):
    owner, staff, anonymous = api_for(client_user), api_for(operator), api_for(None)
    seen: list[tuple[str, str, int]] = []

    def check(method: str, path: str, response: Any) -> Any:
        assert_declared(schema, method, path, response)
        seen.append((method, path, response.status_code))
        return response

    run_id = owner.post("/api/v1/flex/runs", load_envelope("approval-required"), format="json").json()["runId"]
    drain()
    run = Run.objects.get(pk=run_id)
    # 401 on every authenticated operation.
    for path, item in schema["paths"].items():
        for method in item:
            if path == "/api/health":
                continue
            concrete = path.replace("{runId}", run_id)
            check(method, path, getattr(anonymous, method)(concrete, {}, format="json"))
    # 400, 415, 413, 422 on bodies.
    for path in ("/api/v1/flex/runs", "/api/v1/flex/run.stream", "/api/v1/flex/plan.preview",
                 "/api/v1/flex/run.resume", "/api/hitl/respond", "/api/hitl/resume", "/api/hitl/remove"):
        check("POST", path, owner.post(path, "{not json", content_type="application/json"))
        check("POST", path, owner.post(path, "x=1", content_type="application/x-www-form-urlencoded"))
        check("POST", path, owner.post(path, {}, format="json"))
        check("POST", path, owner.post(path, {"unknown": 1}, format="json"))
    settings.FLEX_MAX_BODY_BYTES = 64
    check("POST", "/api/v1/flex/runs", owner.post("/api/v1/flex/runs", {"objective": "x" * 100}, format="json"))
    settings.FLEX_MAX_BODY_BYTES = 1024 * 1024
    # Semantic 422s of envelopes.
    bad_facet = load_envelope("invalid-unknown-facet")
    check("POST", "/api/v1/flex/plan.preview", owner.post("/api/v1/flex/plan.preview", bad_facet, format="json"))
    check("POST", "/api/v1/flex/runs", owner.post("/api/v1/flex/runs", load_envelope("invalid-output-contract"),
                                                  format="json"))
    # 403: a support person may not submit, cancel or answer.
    check("POST", "/api/v1/flex/runs", api_for(support).post("/api/v1/flex/runs", load_envelope("linkedin-variants"),
                                                             format="json"))
    check("POST", "/api/v1/flex/runs/{runId}/cancel",
          api_for(support).post(f"/api/v1/flex/runs/{run_id}/cancel", {}, format="json"))
    pending = run.hitl_requests.get(status="pending")
    check("POST", "/api/hitl/respond", api_for(support).post(
        "/api/hitl/respond", {"runId": run_id, "requestId": pending.id,
                              "responses": [{"responseType": "approval"}]}, format="json"))
    # 404s.
    for path in ("/api/v1/flex/runs/{runId}", "/api/v1/flex/runs/{runId}/events", "/api/v1/flex/runs/{runId}/stream"):
        check("GET", path, owner.get(path.replace("{runId}", "run_nope")))
    check("POST", "/api/v1/flex/runs/{runId}/cancel", owner.post("/api/v1/flex/runs/run_nope/cancel", {},
                                                                 format="json"))
    check("POST", "/api/hitl/resume", owner.post("/api/hitl/resume", {"runId": run_id, "requestId": "hreq_nope",
                                                                     "responses": []}, format="json"))
    # 422 on query parameters.
    check("GET", "/api/v1/flex/runs", owner.get("/api/v1/flex/runs?status=sleeping"))
    check("GET", "/api/v1/flex/runs/{runId}/events", owner.get(f"/api/v1/flex/runs/{run_id}/events?after=x"))
    check("GET", "/api/v1/flex/runs/{runId}/stream", owner.get(f"/api/v1/flex/runs/{run_id}/stream",
                                                               HTTP_LAST_EVENT_ID="nope"))
    check("GET", "/api/hitl/pending", owner.get("/api/hitl/pending?kind=poll"))
    # 406: a media type the endpoint cannot serve.
    check("GET", "/api/v1/flex/capabilities", owner.get("/api/v1/flex/capabilities", HTTP_ACCEPT="application/xml"))
    # 409s and 422 hitl_response_required.
    check("POST", "/api/v1/flex/run.resume", staff.post("/api/v1/flex/run.resume", {
        "runId": run_id, "expectedPlanVersion": run.plan_version + 5}, format="json"))
    check("POST", "/api/v1/flex/run.resume", staff.post("/api/v1/flex/run.resume", {
        "runId": run_id, "expectedPlanVersion": run.plan_version}, format="json"))
    check("POST", "/api/hitl/respond", staff.post("/api/hitl/respond", {
        "runId": run_id, "requestId": pending.id, "responses": [{"responseType": "freeform",
                                                                  "freeformText": "looks fine"}]}, format="json"))
    check("POST", "/api/hitl/respond", staff.post("/api/hitl/respond", {
        "runId": run_id, "requestId": pending.id, "responses": [{"responseType": "freeform",
                                                                  "freeformText": "stale"}]}, format="json"))
    check("POST", "/api/v1/flex/runs/{runId}/cancel", owner.post(f"/api/v1/flex/runs/{run_id}/cancel",
                                                                 {"reason": "done"}, format="json"))
    check("POST", "/api/v1/flex/runs/{runId}/cancel", owner.post(f"/api/v1/flex/runs/{run_id}/cancel", {},
                                                                 format="json"))
    check("POST", "/api/hitl/remove", staff.post("/api/hitl/remove", {
        "runId": run_id, "requestId": pending.id, "reason": "again"}, format="json"))
    # 429 and 503.
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {
        **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "run_detail": "1/min"}}
    cache.clear()
    for _ in range(2):
        check("GET", "/api/v1/flex/runs/{runId}", owner.get(f"/api/v1/flex/runs/{run_id}"))
    cache.clear()
    settings.FLEX_MAX_QUEUED_RUNS = 0
    check("POST", "/api/v1/flex/runs", owner.post("/api/v1/flex/runs", load_envelope("linkedin-variants"),
                                                  format="json"))
    # 404 flex_disabled on every flex operation.
    settings.FLEX_ENABLED = False
    for path, item in schema["paths"].items():
        for method in item:
            if path.startswith(("/api/v1/flex/", "/api/hitl/")):
                check(method, path, getattr(owner, method)(path.replace("{runId}", run_id), {}, format="json"))
    check("GET", "/api/health", client.get("/api/health"))

    statuses = {status for _m, _p, status in seen}
    assert {400, 401, 403, 404, 406, 409, 413, 415, 422, 429, 503} <= statuses


def test_success_bodies_match_their_declared_schemas(schema, api_for, client, client_user, operator, drain):
    owner, staff = api_for(client_user), api_for(operator)

    def ok(method: str, path: str, response: Any, status: int = 200) -> dict[str, Any]:
        assert response.status_code == status, response.content[:300]
        assert_declared(schema, method, path, response)
        return response.json()

    ok("GET", "/api/health", client.get("/api/health"))

    ok("GET", "/api/v1/flex/capabilities", owner.get("/api/v1/flex/capabilities"))
    ok("GET", "/api/v1/flex/facets", owner.get("/api/v1/flex/facets"))
    envelope = load_envelope("approval-required")
    ok("POST", "/api/v1/flex/plan.preview", owner.post("/api/v1/flex/plan.preview", envelope, format="json"))
    ok("POST", "/api/v1/flex/plan.preview", owner.post("/api/v1/flex/plan.preview",
                                                       load_envelope("unsatisfiable-output"), format="json"))
    run_id = ok("POST", "/api/v1/flex/runs", owner.post("/api/v1/flex/runs", envelope, format="json"), 202)["runId"]
    drain()
    ok("GET", "/api/v1/flex/runs", owner.get("/api/v1/flex/runs"))
    ok("GET", "/api/v1/flex/runs/{runId}/events", owner.get(f"/api/v1/flex/runs/{run_id}/events"))
    pending = ok("GET", "/api/hitl/pending", staff.get("/api/hitl/pending"))["runs"][0]
    request_id = pending["pendingRequestId"]
    responded = ok("POST", "/api/hitl/respond", staff.post("/api/hitl/respond", {
        "runId": run_id, "requestId": request_id, "responses": [{"responseType": "freeform",
                                                                  "freeformText": "Reads well"}]}, format="json"))
    ok("POST", "/api/hitl/resume", staff.post("/api/hitl/resume", {
        "runId": run_id, "requestId": request_id, "latestResponseId": responded["latestResponseId"],
        "responses": [{"responseType": "approval"}]}, format="json"))
    drain()
    ok("GET", "/api/v1/flex/runs/{runId}", owner.get(f"/api/v1/flex/runs/{run_id}"))
    second = owner.post("/api/v1/flex/runs", envelope, format="json").json()["runId"]
    drain()
    version = Run.objects.get(pk=second).plan_version
    ok("POST", "/api/v1/flex/run.resume", staff.post("/api/v1/flex/run.resume", {
        "runId": second, "expectedPlanVersion": version, "responses": [{"responseType": "rejection"}]},
        format="json"), 202)
    third = owner.post("/api/v1/flex/runs", envelope, format="json").json()["runId"]
    ok("POST", "/api/v1/flex/runs/{runId}/cancel", owner.post(f"/api/v1/flex/runs/{third}/cancel",
                                                              {"reason": "changed my mind"}, format="json"))
    fourth = owner.post("/api/v1/flex/runs", envelope, format="json").json()["runId"]
    drain()
    ok("POST", "/api/hitl/remove", staff.post("/api/hitl/remove", {"runId": fourth, "reason": "not needed"},
                                              format="json"))


@pytest.mark.django_db(transaction=True)
def test_each_event_of_a_stream_matches_the_declared_event(schema, api_for, client_user):
    owner = api_for(client_user)
    run_id = owner.post("/api/v1/flex/runs", load_envelope("linkedin-variants"), format="json").json()["runId"]
    owner.post(f"/api/v1/flex/runs/{run_id}/cancel", {}, format="json")

    # The stream of a finished run replays its events and ends.
    stream = owner.get(f"/api/v1/flex/runs/{run_id}/stream", HTTP_ACCEPT="text/event-stream")

    assert_declared(schema, "GET", "/api/v1/flex/runs/{runId}/stream", stream)
    event_schema = operation(schema, "GET", "/api/v1/flex/runs/{runId}/stream")["responses"]["200"]["content"][
        "text/event-stream"]["schema"]
    frames = streamed(stream)
    assert [frame["event"] for frame in frames][-1] == "complete"
    for frame in frames:
        raw = {"event": frame["event"], "id": frame["id"], "data": json.dumps(frame["data"])}
        assert schema_errors(schema, event_schema, raw) == []
        assert schema_errors(schema, {"$ref": "#/components/schemas/Event"}, frame["data"]) == []


# --- request schemas accept what the server accepts -----------------------------------------

def _envelope(**changes: Any) -> dict[str, Any]:
    body = load_envelope("linkedin-variants")
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


ENVELOPES = {
    "linkedin-variants": load_envelope("linkedin-variants"),
    "approval-required": load_envelope("approval-required"),
    "clarify-audience": load_envelope("clarify-audience"),
    "facets-output": load_envelope("facets-output"),
    "empty body": {},
    "no objective": _envelope(objective=None),
    "empty objective": _envelope(objective=""),
    "no output contract": _envelope(outputContract=None),
    "empty output contract": _envelope(outputContract={}),
    "facets mode without facets": _envelope(outputContract={"mode": "facets"}),
    "facets mode with no facet": _envelope(outputContract={"mode": "facets", "facets": []}),
    "unknown output facet": _envelope(outputContract={"mode": "facets", "facets": ["favouriteColour"]}),
    "schema mode with facets": _envelope(outputContract={"mode": "json_schema", "facets": ["copyVariants"]}),
    "unknown mode": _envelope(outputContract={"mode": "xml", "schema": {}}),
    "unknown top-level key": _envelope(deadline=5),
    "unknown input facet": _envelope(inputs={"favouriteColour": "blue"}),
    "input value against its facet": _envelope(inputs={"company_information": {"positioning": "no name"}}),
    "unknown constraint": _envelope(constraints={"maxRetries": 1, "timeout": 3}),
    "constraint out of range": _envelope(constraints={"maxRetries": 11}),
    "accepted, not enforced": _envelope(constraints={"deadlineSeconds": 60},
                                        policies={"planner": {"optimisation": {"objective": "speed"},
                                                              "directives": {"anything": True}}}),
    "unknown action": _envelope(policies={"runtime": [{"id": "p", "trigger": {"kind": "onStart"},
                                                       "action": {"type": "explode"}}]}),
    "pause action": _envelope(policies={"runtime": [{"id": "p", "trigger": {"kind": "onStart"},
                                                     "action": {"type": "pause", "reason": "look first"}}]}),
    "special instructions not strings": _envelope(specialInstructions=[1]),
    "unknown capability in a selection": _envelope(policies={"planner": {"selection": {"avoid": ["ghost.Writer"]}}}),
    "unknown capability in a selector": _envelope(policies={"runtime": [
        {"id": "p", "trigger": {"kind": "onNodeComplete", "selector": {"capabilityId": "ghost.Writer"}},
         "action": {"type": "hitl"}}]}),
    "a JSON-Logic condition": _envelope(policies={"runtime": [
        {"id": "p", "trigger": {"kind": "onNodeComplete", "condition": {"and": [
            {"<": [{"var": "output.qa_report.score"}, 0.8]}, {"in": ["Akkuro", {"var": "output.post_copy"}]}]}},
         "action": {"type": "hitl"}}]}),
    "an unknown operator deep in a condition": _envelope(policies={"runtime": [
        {"id": "p", "trigger": {"kind": "onNodeComplete", "condition": {"and": [{"explode": [1]}]}},
         "action": {"type": "hitl"}}]}),
    "known capability in a selector": _envelope(policies={"runtime": [
        {"id": "p", "trigger": {"kind": "onNodeComplete", "selector": {"capabilityId": "qa.ContentReview"}},
         "action": {"type": "hitl"}}]}),
}


@pytest.mark.parametrize("name", ENVELOPES)
def test_the_task_envelope_schema_accepts_exactly_what_the_server_accepts(schema, api_for, client_user, name):
    body = ENVELOPES[name]
    request_schema = operation(schema, "POST", "/api/v1/flex/plan.preview")["requestBody"]["content"][
        "application/json"]["schema"]

    accepted_by_schema = schema_errors(schema, request_schema, body) == []
    response = api_for(client_user).post("/api/v1/flex/plan.preview", body, format="json")

    assert response.status_code in (200, 422)
    assert accepted_by_schema == (response.status_code == 200), response.json()


def test_every_envelope_operation_uses_the_task_envelope(schema):
    for path in ("/api/v1/flex/runs", "/api/v1/flex/run.stream", "/api/v1/flex/plan.preview"):
        body = operation(schema, "POST", path)["requestBody"]
        assert body["required"] is True
        assert body["content"] == {"application/json": {"schema": {"$ref": "#/components/schemas/TaskEnvelope"}}}


OTHER_BODIES = [
    ("/api/v1/flex/run.resume", {}, False),
    ("/api/v1/flex/run.resume", {"runId": "run_x"}, False),
    ("/api/v1/flex/run.resume", {"runId": "run_x", "expectedPlanVersion": 1, "extra": 1}, False),
    ("/api/v1/flex/run.resume", {"runId": "{run}", "expectedPlanVersion": "{version}",
                                 "responses": [{"responseType": "maybe"}]}, False),
    ("/api/v1/flex/run.resume", {"runId": "{run}", "expectedPlanVersion": "{version}",
                                 "responses": [{"responseType": "approval", "extra": 1}]}, False),
    ("/api/v1/flex/run.resume", {"runId": "{run}", "expectedPlanVersion": "{version}",
                                 "responses": [{"responseType": "approval", "approved": True}]}, True),
    ("/api/hitl/respond", {"requestId": "hreq_x", "responses": []}, False),  # neither runId nor threadId
    ("/api/hitl/respond", {"threadId": "t", "requestId": "hreq_x", "responses": []}, True),
    ("/api/hitl/remove", {"runId": "run_x"}, False),  # reason is required
    ("/api/hitl/remove", {"runId": "run_x", "reason": "r"}, True),
    ("/api/v1/flex/runs/{runId}/cancel", {"why": "r"}, False),
    ("/api/v1/flex/runs/{runId}/cancel", {"reason": "r"}, True),
]


@pytest.mark.parametrize(("path", "body", "valid"), OTHER_BODIES)
def test_other_request_schemas_accept_what_the_server_accepts(schema, api_for, operator, client_user, drain,
                                                              path, body, valid):
    if body.get("runId") == "{run}":  # responses are checked against a run that waits for them
        run_id = api_for(client_user).post("/api/v1/flex/runs", load_envelope("approval-required"),
                                           format="json").json()["runId"]
        drain()
        body = {**body, "runId": run_id, "expectedPlanVersion": Run.objects.get(pk=run_id).plan_version}
    request_schema = operation(schema, "POST", path)["requestBody"]["content"]["application/json"]["schema"]

    assert (schema_errors(schema, request_schema, body) == []) is valid
    # The server agrees: a body the schema refuses is a 422; one it accepts gets past validation
    # (to a 404 where the ids do not exist).
    response = api_for(operator).post(path.replace("{runId}", "run_x"), body, format="json")
    assert (response.status_code != 422) is valid, response.json()


LIST_QUERIES = [
    ("status", "awaiting_hitl,paused", True), ("status", "sleeping", False), ("status", "", True),
    ("limit", "100", True), ("limit", "101", False), ("limit", "0", False),
    ("createdAfter", "2026-03-01", True), ("createdAfter", "2026-03-01T10:00:00Z", True),
    ("createdAfter", "yesterday", False), ("pending", "yes", True), ("pending", "maybe", False),
]


@pytest.mark.parametrize(("name", "value", "valid"), LIST_QUERIES)
def test_the_run_list_parameters_accept_what_the_server_accepts(schema, api_for, client_user, name, value, valid):
    [parameter] = [p for p in operation(schema, "GET", "/api/v1/flex/runs")["parameters"] if p["name"] == name]
    typed: Any = int(value) if parameter["schema"].get("type") == "integer" else value

    assert (schema_errors(schema, parameter["schema"], typed) == []) is valid
    response = api_for(client_user).get("/api/v1/flex/runs", {name: value})
    assert (response.status_code == 200) is valid, response.json()
