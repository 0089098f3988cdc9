"""The OpenAPI description of the API (served at /api/schema/, browsed at /api/docs/).

drf-spectacular builds the skeleton from the views; this module makes it say
what the server really does, in one place:

1. every operation has a stable `operationId` (the TypeScript client's
   method names) and every path parameter its API.md name (`runId`);
2. request bodies match what the server accepts: the TaskEnvelope is the very
   JSON Schema `planner.envelope` validates with (converted to OpenAPI 3.0,
   with the catalog's facet names and value schemas), the other bodies refuse
   unknown keys as the serializers do;
3. every response has its body, and every status an operation can return —
   errors included, each with the `code`s it can carry — is declared with the
   error body of API.md (`Error`: code, message, details);
4. `/api/health` (a plain Django view) is described too;
5. parameters that do nothing are not offered (no `format`: the API speaks
   JSON, and event streams where the operation says so).

The authentication schemes are described by the extensions at the end.
"""
from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema

# --- converting JSON Schema 2020-12 to the OpenAPI 3.0 schema dialect ----------------------

# Keywords an OpenAPI 3.0 Schema Object may carry. Others (prefixItems, if/then,
# patternProperties, …) are dropped: the description may then be looser than
# the server, never stricter.
_OAS30_KEYWORDS = {
    "title", "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum", "maxLength", "minLength",
    "pattern", "maxItems", "minItems", "uniqueItems", "maxProperties", "minProperties", "required", "enum", "type",
    "allOf", "oneOf", "anyOf", "not", "items", "properties", "additionalProperties", "description", "format",
    "default", "nullable", "readOnly", "writeOnly", "example", "deprecated",
}
_SCHEMA_LISTS = ("allOf", "oneOf", "anyOf")


def to_openapi(schema: Any, *, defs_prefix: str) -> Any:
    """A JSON Schema (2020-12) as an OpenAPI 3.0 Schema Object.

    `#/$defs/x` references become `#/components/schemas/<defs_prefix>X`.
    """
    if schema is True:
        return {}
    if schema is False:
        return {"not": {}}
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        ref = schema["$ref"]
        if ref.startswith("#/$defs/"):
            return {"$ref": f"#/components/schemas/{defs_prefix}{_pascal(ref[len('#/$defs/'):])}"}
        return {}  # a reference we cannot follow here: any value
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "const":
            out["enum"] = [value]
        elif key == "examples" and isinstance(value, list) and value:
            out["example"] = value[0]
        elif key in ("exclusiveMaximum", "exclusiveMinimum") and not isinstance(value, bool):
            out["maximum" if key == "exclusiveMaximum" else "minimum"] = value
            out[key] = True
        elif key == "type" and isinstance(value, list):
            types = [t for t in value if t != "null"]
            if "null" in value:
                out["nullable"] = True
            if len(types) == 1:
                out["type"] = types[0]
            elif types:
                out.setdefault("anyOf", []).extend({"type": t} for t in types)
        elif key in _SCHEMA_LISTS:
            out.setdefault(key, []).extend(to_openapi(item, defs_prefix=defs_prefix) for item in value)
        elif key == "properties":
            out[key] = {name: to_openapi(sub, defs_prefix=defs_prefix) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = to_openapi(value, defs_prefix=defs_prefix) if not isinstance(value, bool) or \
                key != "additionalProperties" else value
        elif key in _OAS30_KEYWORDS or key.startswith("x-"):
            out[key] = copy.deepcopy(value)
    return out


def _pascal(name: str) -> str:
    return name[:1].upper() + name[1:]


def registry_ids() -> list[str]:
    from planner.registry import get_registry

    return sorted(get_registry().ids())


def json_logic_component() -> dict[str, Any]:
    """A JSON-Logic rule as `planner.jsonlogic.validate_rule` accepts it: any
    JSON value, where every one-key object names a known operator, at any
    depth of lists and operator arguments (other objects are data)."""
    from planner.jsonlogic import OPERATORS

    rule = _ref("TaskEnvelopeJsonLogicRule")
    return {
        "description": "JSON-Logic (docs/hitl.md, Runtime policies): a one-key object is an operation",
        "anyOf": [
            {"type": "string"}, {"type": "number"}, {"type": "boolean"},
            {"type": "object", "nullable": True, "enum": [None]},
            {"type": "array", "items": rule},
            {"type": "object", "minProperties": 1, "maxProperties": 1, "additionalProperties": False,
             "properties": {op: rule for op in sorted(OPERATORS)}},
            {"type": "object", "maxProperties": 0},
            {"type": "object", "minProperties": 2, "additionalProperties": True},
        ],
    }


def envelope_components() -> dict[str, Any]:
    """`TaskEnvelope` and its parts, from the schema the server validates with.

    Facet and capability names are closed here as they are on the server
    (an unknown one is a 422): the catalog's names, the registry's ids when
    the schema is served (it is generated on each request).
    """
    from planner.envelope import ENVELOPE_SCHEMA
    from planner.facets import get_catalog

    prefix = "TaskEnvelope"
    components = {f"{prefix}{_pascal(name)}": to_openapi(sub, defs_prefix=prefix)
                  for name, sub in ENVELOPE_SCHEMA.get("$defs", {}).items()}
    root = to_openapi({k: v for k, v in ENVELOPE_SCHEMA.items() if k != "$defs"}, defs_prefix=prefix)
    catalog = get_catalog()
    root["properties"]["inputs"] = {
        "type": "object", "additionalProperties": False,
        "description": "Facet values by facet name; each value is valid against its facet's schema.",
        "properties": {name: to_openapi(facet.schema, defs_prefix=f"Facet{_pascal(name)}")
                       for name, facet in catalog.items()},
    }
    capability_ids = {"type": "string", "enum": registry_ids()}
    selection = components[f"{prefix}PlannerPolicy"]["properties"]["selection"]["properties"]
    for rule in selection.values():
        rule["items"] = {**capability_ids, "description": "A registered capability id"}
    selector = (components[f"{prefix}RuntimePolicy"]["properties"]["trigger"]["properties"]["selector"])
    selector["properties"]["capabilityId"] = capability_ids
    trigger = components[f"{prefix}RuntimePolicy"]["properties"]["trigger"]["properties"]
    trigger["condition"] = _ref(f"{prefix}JsonLogicRule")
    components[f"{prefix}JsonLogicRule"] = json_logic_component()
    # A goal's vars must also name catalog facets (422 unknown_facet): a rule OpenAPI 3.0 cannot state.
    components[f"{prefix}Goal"]["properties"]["condition"] = _ref(f"{prefix}JsonLogicRule")
    for branch in root["properties"]["outputContract"]["oneOf"]:
        facets = branch["properties"].get("facets")
        if facets is not None:
            facets["items"] = {"type": "string", "enum": sorted(catalog)}
    root["description"] = ("What a client asks for (docs/api.md, TaskEnvelope; docs/planning.md for "
                           "`policies.planner.optimisation`, `directives` and `goals`; "
                           "`constraints.maxTokens` caps the run's language-model tokens, docs/models.md).")
    components[prefix] = root
    return components


# --- response bodies -----------------------------------------------------------------------

def _obj(properties: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    schema["required"] = list(properties) if required is None else required
    if not schema["required"]:
        del schema["required"]
    schema.update(extra)
    return schema


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        # OpenAPI 3.0 cannot make a reference nullable; an alternative can.
        return {"anyOf": [schema, {"type": "object", "nullable": True, "enum": [None]}]}
    return {**schema, "nullable": True}


_STR = {"type": "string"}
_INT = {"type": "integer"}
_BOOL = {"type": "boolean"}
_TIME = {"type": "string", "format": "date-time"}
_ANY_OBJECT = {"type": "object", "additionalProperties": True}
_STRS = {"type": "array", "items": _STR}
_PEOPLE = {"type": "object", "properties": {"users": _STRS, "groups": _STRS}, "additionalProperties": False}
_NEXT = {"type": "string", "format": "uri", "nullable": True, "description": "The next page, or null"}
_RUN_STATUS = {"type": "string", "enum": ["queued", "planning", "running", "awaiting_hitl", "paused", "completed",
                                          "failed", "cancelled"]}

COMPONENTS: dict[str, Any] = {
    "Error": _obj({
        "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$", "description": "Stable, snake_case"},
        "message": {"type": "string", "description": "A human sentence"},
        "details": {"type": "object", "additionalProperties": True,
                    "description": "Machine-readable context; `errors: [{path, message}]` for 422s"},
    }, description="Every error of the API, whatever its status (docs/api.md, Errors)."),
    "Health": _obj({
        "status": {"type": "string", "enum": ["ok", "degraded"]},
        "database": {"type": "string", "enum": ["ok", "down"]},
        "redis": {"type": "string", "enum": ["ok", "down", "disabled"]},
        "version": _STR,
    }),
    "RunResumeAccepted": _obj({"runId": _STR, "status": _RUN_STATUS, "planVersion": _INT,
                               "streamUrl": {"type": "string", "format": "uri"},
                               "lastEventId": {"type": "string", "description": "`<runId>:<seq>`"}}),
    "Event": _obj({"type": _STR, "id": _STR, "seq": {"type": "integer", "minimum": 1}, "timestamp": _TIME,
                   "runId": _STR, "planVersion": _INT, "nodeId": _STR, "payload": _ANY_OBJECT},
                  required=["type", "id", "seq", "timestamp", "runId", "planVersion", "payload"],
                  description="One event, as in an SSE frame's `data` (docs/events.md)."),
    "EventPage": _obj({"events": {"type": "array", "items": _ref("Event")}, "next": _NEXT}),
    "Capability": _obj({"capabilityId": _STR, "displayName": _STR, "kind": _STR, "agentType": _STR,
                        "inputFacets": _STRS, "optionalInputFacets": _STRS, "outputFacets": _STRS,
                        "status": {"type": "string", "enum": ["active", "inactive"]},
                        "llm": _obj({"endpoint": _STR, "model": _nullable(_STR), "temperature": _nullable(
                            {"type": "number"}), "maxTokens": _INT, "selectedByDefault": _BOOL},
                            description="Only for a capability backed by a language model (docs/models.md).")},
                       required=["capabilityId", "displayName", "kind", "agentType", "inputFacets", "outputFacets",
                                 "status"]),
    "CapabilityList": _obj({"capabilities": {"type": "array", "items": _ref("Capability")}}),
    "Facet": _obj({"name": _STR, "title": _STR, "description": _STR, "schema": _ANY_OBJECT,
                   "direction": {"type": "string", "enum": ["input", "output", "bidirectional"]}}),
    "FacetList": _obj({"facets": {"type": "array", "items": _ref("Facet")}}),
    "PlanNode": _obj({"id": _STR, "capabilityId": _STR, "kind": _STR, "label": _STR, "inputFacets": _STRS,
                      "optionalInputFacets": _STRS, "outputFacets": _STRS, "contract": _ANY_OBJECT,
                      "contractHash": _STR, "rationale": _STR, "dependsOn": _STRS},
                     required=["id", "capabilityId", "kind", "inputFacets", "outputFacets", "dependsOn"]),
    "PlanGraph": _obj({"nodes": {"type": "array", "items": _ref("PlanNode")},
                       "edges": {"type": "array", "items": _obj({"from": _STR, "to": _STR, "facets": _STRS})},
                       "outputMode": {"type": "string", "enum": ["json_schema", "facets"]},
                       "outputNodeId": _STR,
                       "metadata": _obj({"warnings": {"type": "array", "items": _ref("PlanDiagnostic")}},
                                        additionalProperties=True),
                       "schemaHash": _STR}),
    "PlanDiagnostic": _obj({"code": _STR, "message": _STR, "facet": _STR, "capabilityId": _STR, "nodeId": _STR,
                            "policyId": _STR, "path": _STR}, required=["code", "message"],
                           additionalProperties=True,
                           description="Why the planner cannot plan (plan_rejected), or a warning about a "
                                       "selector that cannot fire (unknown_node_id, node_not_in_plan, "
                                       "capability_not_in_plan)."),
    "PlanPreview": _obj({"plan": _nullable(_ref("PlanGraph")),
                         "diagnostics": {"type": "array", "items": _ref("PlanDiagnostic")}}),
    "RunDebug": _obj({
        "run": _obj({"runId": _STR, "status": _RUN_STATUS, "objective": _STR, "planVersion": _INT,
                     "threadId": _nullable(_STR), "briefId": _nullable(_STR), "createdAt": _TIME,
                     "updatedAt": _TIME, "createdBy": _nullable(_STR), "envelope": _ANY_OBJECT},
                    additionalProperties=True),
        "policies": _ANY_OBJECT,
        "planVersions": {"type": "array", "items": _ANY_OBJECT},
        "nodes": {"type": "array", "items": _ANY_OBJECT},
        "usage": _obj({"promptTokens": _INT, "completionTokens": _INT, "totalTokens": _INT, "calls": _INT,
                       "maxTokens": _nullable(_INT), "byModel": {"type": "array", "items": _ANY_OBJECT}},
                      description="Language-model tokens of every node attempt, summed (docs/models.md)."),
        "facetProvenance": _ANY_OBJECT,
        "hitl": _obj({"requests": {"type": "array", "items": _ref("HitlRequest")},
                      "responses": {"type": "array", "items": _ref("HitlResponse")}}),
        "latestSnapshot": _nullable(_ANY_OBJECT),
        "output": _nullable(_ANY_OBJECT),
        "events": _obj({"count": _INT, "latest": {"type": "array", "items": _ref("Event")}}),
        "audit": {"type": "array", "items": _ANY_OBJECT},
    }, additionalProperties=True, description="Everything about a run, redacted (docs/api.md, Debug view)."),
    "HitlResponseInput": _obj({
        "requestId": _STR,
        "responseType": {"type": "string", "enum": ["approval", "rejection", "option", "freeform"]},
        "approved": _BOOL, "selectedOptionId": _STR, "freeformText": {"type": "string"},
        "metadata": _ANY_OBJECT,
    }, required=["responseType"], additionalProperties=False),
    "HitlResponse": _obj({
        "responseId": _STR, "requestId": _STR,
        "responseType": {"type": "string", "enum": ["approval", "rejection", "option", "freeform"]},
        "approved": {"type": "boolean", "nullable": True}, "selectedOptionId": _nullable(_STR),
        "freeformText": _nullable(_STR), "metadata": _ANY_OBJECT, "responderId": _nullable(_STR),
        "responderDisplayName": _STR, "createdAt": _TIME,
    }, required=["responseId", "requestId", "responseType", "createdAt"]),
    "HitlRequest": _obj({
        "requestId": _STR, "runId": _STR, "kind": {"type": "string", "enum": ["approval", "clarify"]},
        "question": _STR, "options": {"type": "array", "items": _obj({"id": _STR, "label": _STR,
                                                                      "description": _STR},
                                                                     required=["id", "label"])},
        "allowFreeForm": _BOOL, "urgency": {"type": "string", "enum": ["low", "normal", "high"]},
        "pendingNodeId": _nullable(_STR), "operatorPrompt": _nullable(_STR), "contractSummary": _nullable(_ANY_OBJECT),
        "review": _nullable(_ANY_OBJECT), "planVersion": _INT,
        "status": {"type": "string", "enum": ["pending", "resolved", "removed"]}, "createdAt": _TIME,
        "responses": {"type": "array", "items": _ref("HitlResponse")},
        # Governance (docs/hitl.md, "Governing human decisions").
        "assignees": _PEOPLE, "requiredApprovals": _INT,
        "approvals": {"type": "array", "items": _obj({"responseId": _STR, "responderId": _nullable(_STR),
                                                      "responderDisplayName": _STR, "approvedAt": _TIME})},
        "approvalsNeeded": _INT, "allowSelfApproval": _BOOL, "dueAt": _nullable(_TIME),
        "escalateAt": _nullable(_TIME), "escalated": _BOOL, "escalatedAt": _nullable(_TIME),
        "escalateTo": _PEOPLE, "onTimeout": _nullable(_ANY_OBJECT), "appliedAction": _nullable(_ANY_OBJECT),
    }, required=["requestId", "runId", "kind", "question", "options", "allowFreeForm", "urgency", "planVersion",
                 "status", "createdAt", "responses"], additionalProperties=True),
    "HitlPendingList": _obj({"runs": {"type": "array", "items": _obj({
        "runId": _STR, "threadId": _nullable(_STR), "briefId": _nullable(_STR), "status": _RUN_STATUS,
        "planVersion": _INT, "updatedAt": _TIME, "pendingRequestId": _STR, "pendingRequest": _ref("HitlRequest")})},
        "next": _NEXT}),
    "HitlRespondResult": _obj({"runId": _STR, "requestId": _STR, "latestResponseId": _nullable(_STR),
                               "responses": {"type": "array", "items": _ref("HitlResponse")}}),
    "HitlResumeResult": _obj({"runId": _STR, "status": _RUN_STATUS, "planVersion": _INT,
                              "pendingRequestId": _nullable(_STR),
                              "requests": {"type": "array", "items": _ref("HitlRequest")},
                              "responses": {"type": "array", "items": _ref("HitlResponse")}}),
    "AgentCapability": _obj({"capabilityId": _STR, "displayName": _STR, "description": _STR, "kind": _STR,
                             "agentType": _STR, "inputFacets": _STRS, "optionalInputFacets": _STRS,
                             "outputFacets": _STRS, "version": _STR,
                             "status": {"type": "string", "enum": ["active", "inactive"]}},
                            required=["capabilityId", "kind", "agentType", "inputFacets", "outputFacets", "status"]),
    "Agent": _obj({"agentId": _STR, "displayName": _STR, "status": {"type": "string", "enum": ["active", "inactive"]},
                   "heartbeatSeconds": _INT, "maxConcurrency": _INT, "lastHeartbeatAt": _nullable(_TIME),
                   "owner": _nullable(_STR),
                   "capabilities": {"type": "array", "items": _ref("AgentCapability")}},
                  required=["agentId", "status", "heartbeatSeconds", "capabilities"]),
    "AgentList": _obj({"agents": {"type": "array", "items": _ref("Agent")}}),
    "AgentHeartbeat": _obj({"agentId": _STR, "status": {"type": "string", "enum": ["active", "inactive"]},
                            "heartbeatSeconds": _INT}, required=["agentId", "status"]),
    "Task": _obj({"taskId": _STR, "runId": _STR, "nodeId": _STR, "capabilityId": _STR, "agentType": _STR,
                  "attempt": _INT, "planVersion": _INT,
                  "status": {"type": "string", "enum": ["open", "claimed", "completed", "invalid", "failed",
                                                        "clarify", "expired", "cancelled"]},
                  "agentId": _nullable(_STR), "claimedBy": _nullable(_STR), "createdAt": _TIME,
                  "claimedAt": _nullable(_TIME), "leaseExpiresAt": _nullable(_TIME), "objective": _STR,
                  "leaseToken": _STR, "bundle": _ANY_OBJECT},
                 required=["taskId", "runId", "nodeId", "capabilityId", "attempt", "status"],
                 description="A node offered to an agent or a person (docs/agents.md). `leaseToken` and "
                             "`bundle` only in a claim's answer."),
    "TaskClaimed": _obj({"task": _ref("Task")}),
    "TaskList": _obj({"tasks": {"type": "array", "items": _ref("Task")}, "next": _NEXT}),
    "TaskLease": _obj({"taskId": _STR, "leaseExpiresAt": _TIME}),
    "TaskOutcome": _obj({"taskId": _STR, "status": _STR, "requestId": _STR}, required=["taskId", "status"]),
    "HitlRemoveResult": _obj({"runId": _STR, "status": _RUN_STATUS, "planVersion": _INT,
                              "pendingRequestId": _nullable(_STR),
                              "requests": {"type": "array", "items": _ref("HitlRequest")}}),
}

# One server-sent event (as OpenAPI 3.2's `itemSchema` has it, and as schemathesis
# checks each event of a stream): `data` is the Event as JSON.
SSE = {"text/event-stream": {"schema": _obj(
    {"event": {"type": "string", "description": "The event type"},
     "id": {"type": "string", "description": "`<runId>:<seq>`; send it back as Last-Event-ID"},
     "data": {"type": "string", "description": "The Event (components/schemas/Event) as JSON"},
     "retry": {"type": "integer"}},
    required=["data"],
    description="Each server-sent event of the stream (docs/events.md); comments (`: keep-alive`) carry none.")}}

# --- operations ----------------------------------------------------------------------------

# Errors every operation of a kind can return, besides those listed per operation.
_AUTH = {401: ["not_authenticated"], 406: ["not_acceptable"]}
_FLEX = {404: ["flex_disabled"]}
_BODY = {400: ["malformed_json"], 403: ["permission_denied"], 413: ["payload_too_large"],
         415: ["unsupported_media_type"], 422: ["validation_failed"]}
_ENVELOPE = {422: ["unknown_facet", "unknown_capability", "invalid_output_contract"]}
_RUN_404 = {404: ["run_not_found"]}
_QUERY = {422: ["validation_failed"]}
_HITL_409 = {409: ["invalid_run_state", "run_already_completed", "stale_hitl_state", "hitl_request_not_pending",
                   "already_approved"],
             403: ["not_assignee", "self_approval_forbidden"]}


class Op:
    """What the schema says of one operation beyond what the view declares."""

    def __init__(self, operation_id: str, *errors: dict[int, list[str]], ok: tuple[int, str] | None = None,
                 request: str | None = None, sse: int | None = None, empty: tuple[int, str] | None = None) -> None:
        self.operation_id = operation_id
        self.empty = empty  # (status, description) of a success without a body
        self.ok = ok  # (status, component) of the JSON success body
        self.request = request  # component of the JSON request body
        self.sse = sse  # status of an event-stream success
        merged: dict[int, list[str]] = defaultdict(list)
        for table in errors:
            for status, codes in table.items():
                merged[status] += [code for code in codes if code not in merged[status]]
        self.errors = dict(merged)


OPERATIONS: dict[tuple[str, str], Op] = {
    ("/api/health", "get"): Op("health", {503: ["server_busy"]}, ok=(200, "Health")),
    ("/api/v1/flex/runs", "post"): Op("runCreate", _AUTH, _FLEX, _BODY, _ENVELOPE, {503: ["server_busy"]},
                                      request="TaskEnvelope"),
    ("/api/v1/flex/run.stream", "post"): Op("runStream", _AUTH, _FLEX, _BODY, _ENVELOPE, {503: ["server_busy"]},
                                            request="TaskEnvelope", sse=200),
    ("/api/v1/flex/runs", "get"): Op("runList", _AUTH, _FLEX, _QUERY),
    ("/api/v1/flex/runs/{runId}", "get"): Op("runDebug", _AUTH, _FLEX, _RUN_404, {429: ["throttled"]},
                                             ok=(200, "RunDebug")),
    ("/api/v1/flex/runs/{runId}/cancel", "post"): Op(
        "runCancel", _AUTH, _FLEX, _BODY, _RUN_404, {409: ["run_already_completed", "invalid_run_state"]}),
    ("/api/v1/flex/runs/{runId}/stream", "get"): Op("runStreamFollow", _AUTH, _FLEX, _RUN_404, _QUERY,
                                                    {503: ["server_busy"]}, sse=200),
    ("/api/v1/flex/runs/{runId}/stream-ticket", "post"): Op("runStreamTicket", _AUTH, _FLEX, _BODY, _RUN_404),
    ("/api/v1/flex/runs/{runId}/events", "get"): Op("runEvents", _AUTH, _FLEX, _RUN_404, _QUERY,
                                                    {429: ["throttled"]}, ok=(200, "EventPage")),
    ("/api/v1/flex/capabilities", "get"): Op("capabilityList", _AUTH, _FLEX, ok=(200, "CapabilityList")),
    ("/api/v1/flex/facets", "get"): Op("facetList", _AUTH, _FLEX, ok=(200, "FacetList")),
    ("/api/v1/flex/plan.preview", "post"): Op("planPreview", _AUTH, _FLEX, _BODY, _ENVELOPE,
                                              ok=(200, "PlanPreview"), request="TaskEnvelope"),
    ("/api/v1/flex/run.resume", "post"): Op(
        "runResume", _AUTH, _FLEX, _BODY, _RUN_404, {404: ["hitl_request_not_found"]}, _HITL_409,
        {409: ["stale_plan_version", "missing_snapshot"], 422: ["hitl_response_required"], 503: ["server_busy"]},
        ok=(202, "RunResumeAccepted"), sse=200),
    ("/api/v1/flex/runs/{runId}/policies/{policyId}/trigger", "post"): Op(
        "policyTrigger", _AUTH, _FLEX, _BODY, _RUN_404, {404: ["policy_not_found"], 409: ["invalid_run_state"]}),
    ("/api/hitl/pending", "get"): Op("hitlPending", _AUTH, _FLEX, _QUERY, ok=(200, "HitlPendingList")),
    ("/api/hitl/respond", "post"): Op("hitlRespond", _AUTH, _FLEX, _BODY, _RUN_404,
                                      {404: ["hitl_request_not_found"]}, _HITL_409, ok=(200, "HitlRespondResult")),
    ("/api/hitl/resume", "post"): Op("hitlResume", _AUTH, _FLEX, _BODY, _RUN_404, {404: ["hitl_request_not_found"]},
                                     _HITL_409, {409: ["stale_plan_version", "missing_snapshot"],
                                                 422: ["hitl_response_required"]},
                                     ok=(200, "HitlResumeResult")),
    # Probes and scrapers (runs/apis.py): no authentication, their own errors only.
    ("/api/ready", "get"): Op("ready", {503: ["not_ready"]}),
    ("/metrics", "get"): Op("metrics", {401: ["not_authenticated"]}),
    ("/api/hitl/remove", "post"): Op("hitlRemove", _AUTH, _FLEX, _BODY, _RUN_404, {404: ["hitl_request_not_found"]},
                                     _HITL_409, ok=(200, "HitlRemoveResult")),
}
_AGENT_404 = {404: ["agent_not_found"]}
_TASK = {404: ["task_not_found"], 409: ["lease_lost"]}
OPERATIONS.update({
    # Agents and tasks (runs/agent_apis.py, docs/agents.md).
    ("/api/v1/flex/agents", "get"): Op("agentList", _AUTH, _FLEX, {403: ["permission_denied"]},
                                       ok=(200, "AgentList")),
    ("/api/v1/flex/agents/register", "post"): Op(
        "agentRegister", _AUTH, _FLEX, _BODY, {409: ["capability_conflict"], 422: ["unknown_facet"]},
        ok=(200, "Agent")),
    ("/api/v1/flex/agents/{agentId}/heartbeat", "post"): Op("agentHeartbeat", _AUTH, _FLEX, _BODY, _AGENT_404,
                                                            ok=(200, "AgentHeartbeat")),
    ("/api/v1/flex/agents/{agentId}/tasks/claim", "post"): Op(
        "taskClaim", _AUTH, _FLEX, _BODY, _AGENT_404, ok=(200, "TaskClaimed"),
        empty=(204, "Nothing to claim within waitSeconds")),
    ("/api/v1/flex/tasks", "get"): Op("taskList", _AUTH, _FLEX, _QUERY, ok=(200, "TaskList")),
    ("/api/v1/flex/tasks/{taskId}/heartbeat", "post"): Op("taskHeartbeat", _AUTH, _FLEX, _BODY, _TASK,
                                                          ok=(200, "TaskLease")),
    ("/api/v1/flex/tasks/{taskId}/complete", "post"): Op("taskComplete", _AUTH, _FLEX, _BODY, _TASK,
                                                         ok=(200, "TaskOutcome")),
    ("/api/v1/flex/tasks/{taskId}/fail", "post"): Op("taskFail", _AUTH, _FLEX, _BODY, _TASK, ok=(200, "TaskOutcome")),
    ("/api/v1/flex/tasks/{taskId}/clarify", "post"): Op("taskClarify", _AUTH, _FLEX, _BODY, _TASK,
                                                        ok=(200, "TaskOutcome")),
})
# Path parameters under their API.md names.
PATH_PARAMETERS = {"run_id": "runId", "policy_id": "policyId", "agent_id": "agentId", "task_id": "taskId"}


def api_path(path: str) -> str:
    for name, api_name in PATH_PARAMETERS.items():
        path = path.replace("{" + name + "}", "{" + api_name + "}")
    return path


# An operation another module adds before this table knows it still gets the
# errors every operation of its kind can return.
_DEFAULT_GET = (_AUTH, _FLEX)
_DEFAULT_POST = (_AUTH, _FLEX, _BODY)

_STATUS_TEXT = {400: "Bad request", 401: "Not authenticated", 403: "Forbidden", 404: "Not found",
                406: "Not acceptable", 409: "Conflict", 411: "Length required", 413: "Payload too large",
                415: "Unsupported media type", 422: "Unprocessable content", 429: "Too many requests",
                503: "Service unavailable"}
_RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait before retrying"}}

# Request bodies of the DRF serializers: unknown keys are refused (the
# serializers say so in code), `responses` items are HitlResponseInput.
_STRICT_REQUESTS = ("PolicyTriggerInputRequest", "RunCancelInputRequest", "RunResumeInputRequest",
                    "RespondInputRequest", "ResumeInputRequest", "RemoveInputRequest", "AgentRegisterRequest",
                    "CapabilityInRequest", "EmptyRequest", "ClaimRequest", "LeaseRequest", "CompleteRequest",
                    "ErrorInRequest", "FailRequest", "ClarifyRequest", "ClarifyOptionRequest")
_ADDRESSED_BY_RUN_OR_THREAD = ("RespondInputRequest", "ResumeInputRequest", "RemoveInputRequest")


def error_response(status: int, codes: list[str]) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": f"{_STATUS_TEXT.get(status, 'Error')}: {', '.join(f'`{c}`' for c in codes)}",
        "content": {"application/json": {"schema": {
            "allOf": [_ref("Error"), {"type": "object", "properties": {"code": {"type": "string", "enum": codes}}}],
        }}},
    }
    if status in (429, 503):
        response["headers"] = _RETRY_AFTER
    return response


def _health_operation() -> dict[str, Any]:
    unavailable = error_response(503, ["server_busy"])
    unavailable["content"]["application/json"]["schema"]["allOf"].insert(0, _ref("Health"))
    unavailable["description"] = "The database does not answer: the health fields beside the error body"
    return {
        "operationId": "health",
        "summary": "Liveness: 200 while the database answers (no authentication)",
        "tags": ["health"],
        "security": [],
        "responses": {"200": {"description": "Up", "content": {"application/json": {"schema": _ref("Health")}}},
                      "503": unavailable},
    }


# Path parameters: the view's keyword -> API.md's name.
def postprocess_schema(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular POSTPROCESSING_HOOKS entry: steps 1–5 of the module docstring."""
    paths: dict[str, Any] = {}
    for path, item in result.get("paths", {}).items():
        renamed = api_path(path)
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "path" and parameter.get("name") in PATH_PARAMETERS:
                    parameter["name"] = PATH_PARAMETERS[parameter["name"]]
            operation["parameters"] = [p for p in operation.get("parameters", [])
                                       if not (p.get("in") == "query" and p.get("name") == "format")]
            if not operation["parameters"]:
                del operation["parameters"]
        paths[renamed] = item
    paths["/api/health"] = {"get": _health_operation()}
    result["paths"] = dict(sorted(paths.items()))

    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("EnvelopeRequest", None)
    schemas.update(envelope_components())
    schemas.update(copy.deepcopy(COMPONENTS))
    _tighten_requests(schemas)
    for name, schema in schemas.items():
        if name.startswith("TaskEnvelope") or name in _STRICT_REQUESTS or name == "HitlResponseInput":
            _no_nul_characters(schema)

    for path, item in result["paths"].items():
        for method, operation in item.items():
            _finish_operation(path, method, operation)
    return result


_NO_NUL = "^[^\\u0000]*$"


def _no_nul_characters(schema: Any) -> None:
    """Strings the server reads are refused with NUL characters (neither
    database stores them): say so on every string of a request body."""
    if isinstance(schema, list):
        for item in schema:
            _no_nul_characters(item)
        return
    if not isinstance(schema, dict):
        return
    if schema.get("type") == "string" and "pattern" not in schema and "enum" not in schema:
        schema["pattern"] = _NO_NUL
    for key, value in schema.items():
        if key in ("properties",):
            for sub in value.values():
                _no_nul_characters(sub)
        elif key in ("items", "additionalProperties", "not", "allOf", "oneOf", "anyOf"):
            _no_nul_characters(value)


def _tighten_requests(schemas: dict[str, Any]) -> None:
    for name in _STRICT_REQUESTS:
        schema = schemas.get(name)
        if schema is None:
            continue
        schema["additionalProperties"] = False
        responses = schema.get("properties", {}).get("responses")
        if responses is not None:
            responses["items"] = _ref("HitlResponseInput")
        operator = schema.get("properties", {}).get("operator")
        if operator is not None:
            operator.update({"properties": {"displayName": {"type": "string", "maxLength": 200}},
                             "description": "Display metadata only; the acting operator is the caller"})
        if name in _ADDRESSED_BY_RUN_OR_THREAD:
            schema["anyOf"] = [{"required": ["runId"]}, {"required": ["threadId"]}]


_WHEN = {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "string", "format": "date"},
                   {"type": "string", "maxLength": 0}]}
_STATUSES = "(queued|planning|running|awaiting_hitl|paused|completed|failed|cancelled)"
_TASK_STATUSES = "(open|claimed|completed|invalid|failed|clarify|expired|cancelled)"
_EVENT_ID = {"type": "string", "pattern": r"^([A-Za-z0-9_-]+:)?[0-9]{1,10}$"}
# Query and header parameters as the server reads them (the views declare names only).
_PARAMETERS: dict[tuple[str, str], dict[str, dict[str, Any]]] = {
    ("/api/v1/flex/runs", "get"): {
        "status": {"description": "Comma-separated statuses",
                   "schema": {"type": "string", "pattern": f"^({_STATUSES}(,{_STATUSES})*)?$"}},
        "createdAfter": {"description": "Inclusive; ISO 8601 (UTC without an offset), a date covers its whole day",
                         "schema": _WHEN},
        "createdBefore": {"description": "Inclusive; ISO 8601 (UTC without an offset), a date covers its whole day",
                          "schema": _WHEN},
        "assignedTo": {"description": "`me`: runs with a pending HITL request assigned to you (by user or group)",
                       "schema": {"type": "string", "enum": ["me"]}},
        "pending": {"description": "Runs with (`yes`) or without (`no`) a pending HITL request",
                    "schema": {"type": "string", "enum": ["yes", "no"]}},
        "q": {"description": "Text in the objective", "schema": {"type": "string", "maxLength": 200}},
        "cursor": {"description": "From the `next` link of the previous page", "schema": {"type": "string"}},
        "limit": {"schema": {"type": "integer", "minimum": 1, "maximum": 100}},
    },
    ("/api/v1/flex/runs/{runId}/events", "get"): {
        "after": {"description": "Events with a greater `seq`",
                  "schema": {"type": "integer", "minimum": 0, "maximum": 2**31}},
        "limit": {"schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
    },
    ("/api/v1/flex/runs/{runId}/stream", "get"): {
        "lastEventId": {"description": "Replay the events after this one (`<runId>:<seq>` or `<seq>`)",
                        "schema": _EVENT_ID},
    },
    ("/api/v1/flex/tasks", "get"): {
        "status": {"description": "Comma-separated task statuses",
                   "schema": {"type": "string", "pattern": f"^({_TASK_STATUSES}(,{_TASK_STATUSES})*)?$"}},
        "capabilityId": {"schema": {"type": "string", "maxLength": 200, "pattern": "^[^\\u0000]*$"}},
        "runId": {"schema": {"type": "string", "maxLength": 40, "pattern": "^[^\\u0000]*$"}},
        "agentType": {"schema": {"type": "string", "maxLength": 20, "pattern": "^[^\\u0000]*$"}},
        "cursor": {"description": "From the `next` link of the previous page", "schema": {"type": "string"}},
        "limit": {"schema": {"type": "integer", "minimum": 1, "maximum": 200}},
    },
    ("/api/hitl/pending", "get"): {
        "offset": {"schema": {"type": "integer", "minimum": 0, "maximum": 10**9}},
        "limit": {"schema": {"type": "integer", "minimum": 1, "maximum": 200}},
    },
}
_HEADERS: dict[tuple[str, str], list[dict[str, Any]]] = {
    ("/api/v1/flex/runs/{runId}/stream", "get"): [
        {"in": "header", "name": "Last-Event-ID", "required": False, "schema": _EVENT_ID,
         "description": "As `lastEventId`; the header wins when both are sent"}],
}


_IDEMPOTENT_MARK = "x-idempotent"
_IDEMPOTENCY_KEY = {
    "in": "header", "name": "Idempotency-Key", "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x20-\\x7e]{1,255}$"},
    "description": "1-255 printable ASCII characters. The same key from the same user with the same body "
                   "replays the first (2xx) response with `Idempotent-Replayed: true`; kept 24 h "
                   "(docs/api.md, Idempotency).",
}
_IDEMPOTENT_ERRORS = {409: ["idempotency_in_progress"], 422: ["idempotency_key_invalid", "idempotency_key_reused"]}
_REPLAYED = {"Idempotent-Replayed": {"schema": {"type": "string", "enum": ["true"]},
                                     "description": "Present on a replayed response"}}


def _finish_parameters(path: str, method: str, operation: dict[str, Any]) -> None:
    refined = _PARAMETERS.get((path, method), {})
    for parameter in operation.get("parameters", []):
        if parameter.get("in") == "query" and parameter["name"] in refined:
            parameter.update(copy.deepcopy(refined[parameter["name"]]))
        if parameter.get("in") == "query" and not parameter.get("required"):
            # The server reads `?name=` as the parameter left out (django-filter,
            # flexagents.params), as a browser's form submits it.
            parameter["allowEmptyValue"] = True
    extra = copy.deepcopy(_HEADERS.get((path, method), []))
    if extra:
        operation["parameters"] = [*operation.get("parameters", []), *extra]


def _finish_operation(path: str, method: str, operation: dict[str, Any]) -> None:
    _finish_parameters(path, method, operation)
    op = OPERATIONS.get((path, method))
    if op is None:
        op = Op(operation.get("operationId", ""), *(_DEFAULT_POST if method == "post" else _DEFAULT_GET))
    else:
        operation["operationId"] = op.operation_id
    if op.request and "requestBody" in operation:
        operation["requestBody"] = {"required": True,
                                    "content": {"application/json": {"schema": _ref(op.request)}}}
    elif "requestBody" in operation:
        operation["requestBody"]["required"] = True
        operation["requestBody"]["content"] = {
            "application/json": operation["requestBody"]["content"].get("application/json", {})}
    responses = operation.setdefault("responses", {})
    if op.ok is not None:
        status, component = op.ok
        responses[str(status)] = {"description": responses.get(str(status), {}).get("description") or "OK",
                                  "content": {"application/json": {"schema": _ref(component)}}}
    if op.empty is not None:
        responses[str(op.empty[0])] = {"description": op.empty[1]}
    if op.sse is not None:
        responses[str(op.sse)] = {"description": "The run's events as server-sent events", "content": SSE}
    errors = op.errors
    if operation.pop(_IDEMPOTENT_MARK, False):
        errors = Op("", op.errors, _IDEMPOTENT_ERRORS).errors
        for status in [s for s in responses if s.startswith("2")]:
            if "text/event-stream" not in responses[status].get("content", {}):
                responses[status]["headers"] = copy.deepcopy(_REPLAYED)
    for status, codes in sorted(errors.items()):
        responses[str(status)] = error_response(status, codes)
    operation["responses"] = dict(sorted(responses.items()))


class FlexAutoSchema(AutoSchema):
    """Operation ids from `OPERATIONS` (stable names for generated clients);
    handlers decorated with `flexagents.idempotency.idempotent` declare the
    `Idempotency-Key` header (and `_finish_operation` its errors and the
    `Idempotent-Replayed` response header)."""

    def get_operation(self, *args: Any, **kwargs: Any) -> Any:
        operation = super().get_operation(*args, **kwargs)
        handler = getattr(self.view, self.method.lower(), None)
        if operation is not None and getattr(handler, "idempotent", False):
            operation.setdefault("parameters", []).append(copy.deepcopy(_IDEMPOTENCY_KEY))
            operation[_IDEMPOTENT_MARK] = True
        return operation

    def get_operation_id(self) -> str:
        op = OPERATIONS.get((api_path(self.path), self.method.lower()))
        return op.operation_id if op is not None else super().get_operation_id()


# --- authentication schemes ----------------------------------------------------------------

class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "flexagents.authentication.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):  # noqa: ANN001, ANN201
        return {"type": "http", "scheme": "bearer", "description": "API token: `Authorization: Bearer <token>`"}


class SessionScheme(OpenApiAuthenticationExtension):
    target_class = "flexagents.authentication.CsrfSessionAuthentication"
    name = "cookieAuth"

    def get_security_definition(self, auto_schema):  # noqa: ANN001, ANN201
        return {"type": "apiKey", "in": "cookie", "name": "sessionid",
                "description": "Django session (browser pages); unsafe methods need the CSRF token"}


class StreamTicketScheme(OpenApiAuthenticationExtension):
    target_class = "runs.tickets.StreamTicketAuthentication"
    name = "streamTicket"

    def get_security_definition(self, auto_schema):  # noqa: ANN001, ANN201
        return {"type": "apiKey", "in": "query", "name": "ticket",
                "description": "Single-use stream ticket (POST …/stream-ticket) for EventSource, which cannot "
                               "send Authorization"}
