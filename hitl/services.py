"""HITL services: raise, respond, resolve, remove. Knows nothing of the engine."""
from __future__ import annotations

from typing import Any, Iterable

from hitl.models import URGENCY_RANK, HitlKind, HitlRequest, HitlResponse, HitlStatus


def _iso(dt) -> str | None:
    from runs.events import iso

    return iso(dt) if dt else None


def hitl_request_build(*, run, kind: str, question: str, options: list[dict] | None = None,
                       allow_free_form: bool = False, urgency: str = "normal", pending_node_id: str = "",
                       operator_prompt: str = "", contract_summary: dict | None = None, plan_version: int = 0,
                       source: str = "", approve_action: dict | None = None,
                       reject_action: dict | None = None) -> HitlRequest:
    """An unsaved request; the caller saves it in its own transaction."""
    from django.utils import timezone

    return HitlRequest(
        run_id=run.id, kind=kind, question=question, options=list(options or []), allow_free_form=allow_free_form,
        urgency=urgency, urgency_rank=URGENCY_RANK.get(urgency, 1), pending_node_id=pending_node_id,
        operator_prompt=operator_prompt, contract_summary=contract_summary or {}, plan_version=plan_version,
        source=source, approve_action=approve_action, reject_action=reject_action, thread_id=run.thread_id,
        brief_id=run.brief_id, created_at=timezone.now())


def hitl_response_payload(response: HitlResponse) -> dict[str, Any]:
    return {
        "responseId": response.response_id,
        "requestId": response.request_id,
        "responseType": response.response_type,
        "approved": response.approved,
        "selectedOptionId": response.selected_option_id or None,
        "freeformText": response.freeform_text or None,
        "metadata": response.metadata,
        "responderId": str(response.responder_id) if response.responder_id else None,
        "responderDisplayName": response.responder_display_name,
        "createdAt": _iso(response.created_at),
    }


def hitl_request_payload(request: HitlRequest, *, responses: Iterable[HitlResponse]) -> dict[str, Any]:
    return {
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
        "planVersion": request.plan_version,
        "status": request.status,
        "createdAt": _iso(request.created_at),
        "responses": [hitl_response_payload(r) for r in responses],
    }


def clarifications_for_node(*, run_id: str, node_id: str) -> list[dict[str, Any]]:
    """Every clarification answered so far for a node, oldest first."""
    requests = (HitlRequest.objects.filter(run_id=run_id, pending_node_id=node_id, kind=HitlKind.CLARIFY,
                                           status=HitlStatus.RESOLVED)
                .prefetch_related("responses").order_by("created_at", "id"))
    out: list[dict[str, Any]] = []
    for request in requests:
        answers = [r for r in request.responses.all() if r.response_type in ("freeform", "option")]
        if not answers:
            continue
        last = answers[-1]
        answer = last.freeform_text if last.response_type == "freeform" else _option_label(request, last)
        out.append({"questionId": request.id, "question": request.question, "answer": answer,
                    "nodeId": node_id, "answeredAt": _iso(last.created_at)})
    return out


def _option_label(request: HitlRequest, response: HitlResponse) -> str:
    for option in request.options:
        if option.get("id") == response.selected_option_id:
            return option.get("label", response.selected_option_id)
    return response.selected_option_id


def hitl_requests_remove_pending(*, run, reason: str = "") -> list[dict[str, Any]]:
    """Mark a run's pending requests removed (the run is being cancelled).
    Returns one `hitl_resolved` payload per request; the caller emits them."""
    from django.utils import timezone

    payloads = []
    for request in HitlRequest.objects.filter(run=run, status=HitlStatus.PENDING).prefetch_related("responses"):
        request.status = HitlStatus.REMOVED
        request.resolution = "removed"
        request.resolved_at = timezone.now()
        request.save(update_fields=["status", "resolution", "resolved_at"])
        payloads.append({"requestId": request.id, "resolution": "removed", "reason": reason or None,
                         "responses": [hitl_response_payload(r) for r in request.responses.all()]})
    return payloads
