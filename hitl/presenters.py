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
from typing import Any, Iterable, Mapping

from flexagents.dates import iso_or_none
from flexagents.redaction import is_sensitive_key, redact, redact_facets
from hitl.models import HitlRequest, HitlResponse
from planner.facets import get_catalog




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


def hitl_response_payload(response: HitlResponse) -> dict[str, Any]:
    """A stored response as every surface shows it (API.md, HitlResponseInput
    plus `responseId`, `responderId`, `responderDisplayName`, `createdAt`)."""
    return present_hitl_response({
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
    })


def hitl_request_payload(request: HitlRequest, *, responses: Iterable[HitlResponse]) -> dict[str, Any]:
    """A request as every surface shows it (API.md, HitlRequest, with `review`)."""
    return present_hitl_request({
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
    })


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
