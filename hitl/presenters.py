"""The one presenter of HITL payloads (API.md, HITL and Redaction).

Every surface that shows a request or a response — `/api/hitl/*`,
`run.resume`, the events (`hitl_request`, `hitl_update`, `hitl_resolved`),
the debug view, the history pages and the admin — builds it here, so they
all show the same fields, redacted the same way:

1. sensitive keys at any depth (`metadata.apiKey`) become `[redacted]`;
2. every string is free text and is masked by `flexagents.redaction`
   (`password=hunter2` in an answer, a note or a question);
3. `review` (facet name → value, stored as produced) is redacted with each
   facet's schema, so `x-sensitive` fields are masked too.

The rows keep the real values: a capability re-run after a clarification
reads the answer as written (`hitl.services.clarifications_for_node`).
"""
from __future__ import annotations

import json
from typing import Any, Iterable, Mapping, TypedDict, cast

from flexagents.dates import iso_or_none
from flexagents.redaction import is_sensitive_key, redact, redact_facets
from hitl.models import HitlRequest, HitlResponse
from planner.facets import get_catalog


class HitlResponsePayload(TypedDict):
    responseId: str
    requestId: str
    responseType: str
    approved: bool | None
    selectedOptionId: str | None
    freeformText: str | None
    metadata: dict[str, Any]
    responderId: str | None
    responderDisplayName: str
    createdAt: str | None


class HitlApprovalPayload(TypedDict):
    """One person's approval of a request (the first one each person gave)."""

    responseId: str
    responderId: str | None
    responderDisplayName: str
    approvedAt: str | None


class HitlRequestPayload(TypedDict):
    requestId: str
    runId: str
    kind: str
    question: str
    options: list[dict[str, Any]]
    allowFreeForm: bool
    urgency: str
    pendingNodeId: str
    operatorPrompt: str
    contractSummary: dict[str, Any]
    review: dict[str, Any]
    planVersion: int
    status: str
    resolution: str | None
    createdAt: str | None
    resolvedAt: str | None
    responses: list[HitlResponsePayload]
    # Governance (API.md, "Governance of human decisions").
    assignees: dict[str, list[str]]
    requiredApprovals: int
    approvals: list[HitlApprovalPayload]
    approvalsNeeded: int
    allowSelfApproval: bool
    dueAt: str | None
    escalateAt: str | None
    escalated: bool
    escalatedAt: str | None
    escalateTo: dict[str, list[str]]
    onTimeout: dict[str, Any] | None
    appliedAction: dict[str, Any] | None


def facet_schemas() -> dict[str, dict[str, Any]]:
    """Facet name -> JSON Schema (its `x-sensitive` marks drive redaction)."""
    return {name: facet.schema for name, facet in get_catalog().items()}


def redact_review(review: Any, *, schemas: Mapping[str, dict[str, Any]] | None = None) -> Any:
    """Facet values under review, each redacted with its facet's schema (the
    output node's `output` is itself facet-keyed)."""
    if not isinstance(review, Mapping):
        return redact(review)
    schemas = facet_schemas() if schemas is None else schemas
    out = redact_facets(review, schemas)
    inner = review.get("output")
    if isinstance(inner, Mapping) and "output" not in schemas and not is_sensitive_key("output"):
        out["output"] = redact_facets(inner, schemas)
    return out


def present_hitl_response(data: Any) -> Any:
    """A stored response's payload (or an event's copy of it), redacted."""
    return redact(data)


def present_hitl_request(data: Any) -> Any:
    """A request's payload (or an event's copy of it), redacted."""
    if not isinstance(data, Mapping):
        return redact(data)
    out = redact({k: v for k, v in data.items() if k != "review"})
    if "review" in data:
        out["review"] = redact_review(data["review"])
    return out


def hitl_response_payload(response: HitlResponse) -> HitlResponsePayload:
    """A stored response as every surface shows it (API.md, HitlResponseInput
    plus `responseId`, `responderId`, `responderDisplayName`, `createdAt`)."""
    return cast(HitlResponsePayload, present_hitl_response({
        "responseId": response.response_id,
        "requestId": response.request_id,
        "responseType": response.response_type,
        "approved": response.approved,
        "selectedOptionId": response.selected_option_id or None,
        "freeformText": response.freeform_text or None,
        "metadata": response.metadata,
        "responderId": str(response.responder_id) if response.responder_id else None,
        "responderDisplayName": response.responder_display_name,
        "createdAt": iso_or_none(response.created_at),
    }))


def approvals_of(responses: Iterable[HitlResponse]) -> list[HitlResponse]:
    """The approving responses that count toward a quorum: the first approval
    of each distinct person (a response with no user counts by its display
    name), oldest first."""
    seen: set[str] = set()
    out: list[HitlResponse] = []
    for response in responses:
        if response.approved is not True:
            continue
        who = f"user:{response.responder_id}" if response.responder_id else f"name:{response.responder_display_name}"
        if who in seen:
            continue
        seen.add(who)
        out.append(response)
    return out


def hitl_approval_payload(response: HitlResponse) -> HitlApprovalPayload:
    return {"responseId": response.response_id,
            "responderId": str(response.responder_id) if response.responder_id else None,
            "responderDisplayName": response.responder_display_name,
            "approvedAt": iso_or_none(response.created_at)}


def hitl_request_payload(request: HitlRequest, *, responses: Iterable[HitlResponse]) -> HitlRequestPayload:
    """A request as every surface shows it (API.md, HitlRequest, with `review`
    and the governance fields)."""
    responses = list(responses)
    approvals = approvals_of(responses) if request.kind == "approval" else []
    needed = max(request.required_approvals - len(approvals), 0) if request.status == "pending" else 0
    return cast(HitlRequestPayload, present_hitl_request({
        "requestId": request.id,
        "runId": request.run_id,
        "kind": request.kind,
        "question": request.question,
        "options": request.options,
        "allowFreeForm": request.allow_free_form,
        "urgency": request.urgency,
        "pendingNodeId": request.pending_node_id,
        "operatorPrompt": request.operator_prompt,
        "contractSummary": request.contract_summary,
        "review": request.review,
        "planVersion": request.plan_version,
        "status": request.status,
        "resolution": request.resolution or None,
        "createdAt": iso_or_none(request.created_at),
        "resolvedAt": iso_or_none(request.resolved_at),
        "responses": [hitl_response_payload(r) for r in responses],
        "assignees": request.assignees or {},
        "requiredApprovals": request.required_approvals,
        "approvals": [hitl_approval_payload(r) for r in approvals],
        "approvalsNeeded": needed,
        "allowSelfApproval": request.allow_self_approval,
        "dueAt": iso_or_none(request.due_at),
        "escalateAt": iso_or_none(request.escalate_at),
        "escalated": request.escalated,
        "escalatedAt": iso_or_none(request.escalated_at),
        "escalateTo": request.escalate_to or {},
        "onTimeout": request.on_timeout,
        "appliedAction": request.applied_action,
    }))


def present_hitl_event(type_: str, payload: Any) -> Any:
    """The HITL events' payloads, redacted by the same rules (rows written by
    any version of the code: the presenter applies on the way out too)."""
    if not isinstance(payload, Mapping):
        return redact(payload)
    if type_ == "hitl_request":
        return present_hitl_request(payload)
    return redact(payload)


def review_rows(review: Any, schemas: Mapping[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """What a person is asked to approve (`HitlRequest.review`) as the console
    and the history pages show it: one row per facet, redacted as above. A
    string is shown as text, anything else as indented JSON."""
    if not isinstance(review, Mapping) or not review:
        return []
    catalog = get_catalog()
    redacted = redact_review(review, schemas=facet_schemas() if schemas is None else schemas)
    rows = []
    for name, value in redacted.items():
        facet = catalog.get(name)
        rows.append({"facet": name, "title": getattr(facet, "title", "") or name,
                     "text": value if isinstance(value, str) else "",
                     "json": "" if isinstance(value, str) else json.dumps(value, indent=2, default=str)})
    return rows
