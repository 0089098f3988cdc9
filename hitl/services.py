"""HITL services: raise, respond, resolve, remove. Knows nothing of the engine."""
from __future__ import annotations

from typing import Any, Iterable

from flexagents.dates import iso_or_none
from hitl.models import URGENCY_RANK, HitlKind, HitlRequest, HitlResponse, HitlStatus
# The one presenter (redacted); re-exported because every surface imports it from here.
from hitl.presenters import hitl_request_payload, hitl_response_payload  # noqa: F401




def hitl_request_build(*, run, kind: str, question: str, options: list[dict] | None = None,
                       allow_free_form: bool = False, urgency: str = "normal", pending_node_id: str = "",
                       operator_prompt: str = "", contract_summary: dict | None = None, plan_version: int = 0,
                       source: str = "", approve_action: dict | None = None,
                       reject_action: dict | None = None, review: dict | None = None) -> HitlRequest:
    """An unsaved request; the caller saves it in its own transaction."""
    from django.utils import timezone

    return HitlRequest(
        run_id=run.id, kind=kind, question=question, options=list(options or []), allow_free_form=allow_free_form,
        urgency=urgency, urgency_rank=URGENCY_RANK.get(urgency, 1), pending_node_id=pending_node_id,
        operator_prompt=operator_prompt, contract_summary=contract_summary or {}, review=dict(review or {}),
        plan_version=plan_version,
        source=source, approve_action=approve_action, reject_action=reject_action, thread_id=run.thread_id,
        brief_id=run.brief_id, created_at=timezone.now())


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
                    "nodeId": node_id, "answeredAt": iso_or_none(last.created_at)})
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


# --- respond / resume / remove -------------------------------------------------
#
# One code path for POST /api/hitl/respond, /api/hitl/resume, /api/hitl/remove,
# POST /api/v1/flex/run.resume and the admin console. Every one of them:
#
# 1. takes the run's row lock (`select_for_update`; on SQLite the IMMEDIATE
#    transaction already serialises writers) and checks, under it, the
#    caller's rights, the run's status, the request's status, the latest
#    response id (the stale rule) and, for run.resume, the plan version;
# 2. writes responses, request status, node statuses, the new plan version,
#    the events (`runs.events.append_events`, fenced on the status read under
#    the lock) and the audit entry in that one transaction;
# 3. wakes the workers after commit when the run was queued again.
#
# Of concurrent calls on one request exactly one passes step 1; the others
# find the request resolved (or the plan version moved) and get 409.

from dataclasses import dataclass, field  # noqa: E402

MAX_RESPONSES_PER_CALL = 20
MAX_FREEFORM_CHARS = 10_000
RESPONSE_TYPES = ("approval", "rejection", "option", "freeform")
# A clarify request is resolved by an answer; an approval request by a verdict
# (its options "approve"/"reject" count as verdicts too).
RESOLVING_TYPES = {HitlKind.APPROVAL: ("approval", "rejection", "option"), HitlKind.CLARIFY: ("freeform", "option")}


@dataclass
class ResumeResult:
    run: Any
    request: HitlRequest | None
    responses: list[HitlResponse] = field(default_factory=list)
    resolution: str = ""
    first_seq: int = 0
    last_seq: int = 0


def _errors(message: str, errors: list[dict[str, str]], exc: type | None = None) -> Exception:
    from flexagents.errors import ValidationFailed

    return (exc or ValidationFailed)(message, details={"errors": errors})


def _lock_run_for_operator(*, user: Any, run_id: str) -> Any:
    """The run under its row lock: 404 if the user may not view it, 403 if
    the role may not act on it (support)."""
    from flexagents.errors import Forbidden
    from flexagents.roles import user_may_operate_run
    from runs.selectors import run_get_for_user

    run = run_get_for_user(user=user, run_id=run_id, for_update=True)
    if not user_may_operate_run(user, run):
        raise Forbidden("Your role may read HITL requests but not act on them.")
    return run


def _pending_request(*, run: Any, request_id: str | None) -> HitlRequest:
    from flexagents.errors import HitlRequestNotFound, HitlRequestNotPending

    if request_id:
        request = HitlRequest.objects.filter(pk=request_id, run_id=run.id).first()
        if request is None:
            raise HitlRequestNotFound(details={"requestId": request_id, "runId": run.id})
    else:
        request = HitlRequest.objects.filter(run_id=run.id).order_by("-created_at", "-id").first()
        if request is None:
            raise HitlRequestNotFound(details={"runId": run.id})
    if request.status != HitlStatus.PENDING:
        raise HitlRequestNotPending(details={"requestId": request.id, "status": request.status})
    return request


def _check_waiting(run: Any, allowed: tuple[str, ...]) -> None:
    from flexagents.errors import InvalidRunState, RunAlreadyCompleted

    if run.is_terminal:
        raise RunAlreadyCompleted(details={"status": run.status})
    if run.status not in allowed:
        raise InvalidRunState(details={"status": run.status})


def _check_latest_response(request: HitlRequest, existing: list[HitlResponse], latest_response_id: str | None) -> None:
    """The stale rule: acknowledge the latest response, if there is one."""
    from flexagents.errors import StaleHitlState

    latest = existing[-1].response_id if existing else None
    if (latest_response_id or None) != latest:
        raise StaleHitlState(details={"requestId": request.id, "latestResponseId": latest,
                                      "receivedLatestResponseId": latest_response_id})


def validate_responses(request: HitlRequest, responses: Any) -> list[dict[str, Any]]:
    """Check response inputs against the request (422 validation_failed)."""
    if responses is None:
        return []
    if not isinstance(responses, list):
        raise _errors("responses must be a list.", [{"path": "/responses", "message": "expected an array"}])
    if len(responses) > MAX_RESPONSES_PER_CALL:
        raise _errors("Too many responses.", [{"path": "/responses",
                                               "message": f"at most {MAX_RESPONSES_PER_CALL} per call"}])
    errors: list[dict[str, str]] = []
    option_ids = {str(o.get("id")) for o in request.options if isinstance(o, dict)}
    clean: list[dict[str, Any]] = []
    for index, item in enumerate(responses):
        path = f"/responses/{index}"
        if not isinstance(item, dict):
            errors.append({"path": path, "message": "expected an object"})
            continue
        unknown = set(item) - {"requestId", "responseType", "approved", "selectedOptionId", "freeformText", "metadata"}
        if unknown:
            errors.append({"path": path, "message": f"unknown keys: {', '.join(sorted(unknown))}"})
        rtype = item.get("responseType")
        if rtype not in RESPONSE_TYPES:
            errors.append({"path": f"{path}/responseType", "message": f"expected one of {', '.join(RESPONSE_TYPES)}"})
            continue
        if item.get("requestId") not in (None, request.id):
            errors.append({"path": f"{path}/requestId", "message": "not the request being answered"})
        if request.kind == HitlKind.CLARIFY and rtype in ("approval", "rejection"):
            errors.append({"path": f"{path}/responseType",
                           "message": "a clarify request is answered with freeform or option"})
        approved = item.get("approved")
        if approved is not None and not isinstance(approved, bool):
            errors.append({"path": f"{path}/approved", "message": "expected a boolean"})
        if (rtype == "approval" and approved is False) or (rtype == "rejection" and approved is True):
            errors.append({"path": f"{path}/approved", "message": f"contradicts responseType {rtype}"})
        option = item.get("selectedOptionId")
        if rtype == "option" and (not isinstance(option, str) or option not in option_ids):
            errors.append({"path": f"{path}/selectedOptionId",
                           "message": f"expected one of the request's options: {', '.join(sorted(option_ids))}"})
        text = item.get("freeformText")
        if text is not None and (not isinstance(text, str) or len(text) > MAX_FREEFORM_CHARS):
            errors.append({"path": f"{path}/freeformText", "message": f"expected a string of at most "
                                                                      f"{MAX_FREEFORM_CHARS} characters"})
        if rtype == "freeform":
            if not isinstance(text, str) or not text.strip():
                errors.append({"path": f"{path}/freeformText", "message": "a freeform response needs text"})
            elif request.kind == HitlKind.CLARIFY and not request.allow_free_form:
                errors.append({"path": f"{path}/responseType", "message": "this request only accepts its options"})
        metadata = item.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            errors.append({"path": f"{path}/metadata", "message": "expected an object"})
        clean.append(item)
    if errors:
        raise _errors("Some responses are not valid for this request.", errors)
    return clean


def _response_row(*, request: HitlRequest, item: dict[str, Any], user: Any, display_name: str) -> HitlResponse:
    from django.utils import timezone

    rtype = item["responseType"]
    approved = item.get("approved")
    if rtype == "approval":
        approved = True
    elif rtype == "rejection":
        approved = False
    elif rtype == "option" and request.kind == HitlKind.APPROVAL:
        approved = {"approve": True, "reject": False}.get(item.get("selectedOptionId"), approved)
    return HitlResponse(request=request, run_id=request.run_id, response_type=rtype, approved=approved,
                        selected_option_id=item.get("selectedOptionId") or "",
                        freeform_text=item.get("freeformText") or "", metadata=item.get("metadata") or {},
                        responder=user if getattr(user, "pk", None) else None,
                        responder_display_name=display_name[:200], created_at=timezone.now())


def resolution_of(request: HitlRequest, responses: list[HitlResponse]) -> str:
    """`approved` / `rejected` / `answered`, from the latest resolving
    response; "" when none resolves the request."""
    for response in reversed(responses):
        if response.response_type not in RESOLVING_TYPES[request.kind]:
            continue
        if request.kind == HitlKind.CLARIFY:
            return "answered"
        if response.approved is True:
            return "approved"
        if response.approved is False:
            return "rejected"
    return ""


def _display_name(user: Any, operator: Any) -> str:
    if isinstance(operator, dict) and isinstance(operator.get("displayName"), str) and operator["displayName"]:
        return operator["displayName"]
    return getattr(user, "username", "") or ""


def _append(*, request: HitlRequest, items: list[dict[str, Any]], user: Any, display_name: str,
            existing: list[HitlResponse]) -> tuple[list[HitlResponse], list[Any]]:
    """Save new responses; one `hitl_update` event per response."""
    from runs import events as ev

    rows = [_response_row(request=request, item=item, user=user, display_name=display_name) for item in items]
    events = []
    for index, row in enumerate(rows):
        row.save(force_insert=True)
        events.append(ev.PendingEvent(ev.HITL_UPDATE, {"requestId": request.id, "response": hitl_response_payload(row),
                                                        "responseCount": len(existing) + index + 1},
                                      request.pending_node_id))
    return rows, events


def hitl_respond(*, user: Any, run_id: str, request_id: str, responses: Any,
                 latest_response_id: str | None = None, operator: Any = None, note: str = "") -> dict[str, Any]:
    """Append responses to a pending request without resuming the run."""
    from django.db import transaction

    from runs import events as ev
    from runs.services import audit_add

    with transaction.atomic():
        run = _lock_run_for_operator(user=user, run_id=run_id)
        request = _pending_request(run=run, request_id=request_id)
        existing = list(request.responses.all())
        _check_latest_response(request, existing, latest_response_id)
        items = validate_responses(request, responses)
        if not items:
            raise _errors("Send at least one response.", [{"path": "/responses", "message": "must not be empty"}])
        display = _display_name(user, operator)
        rows, events = _append(request=request, items=items, user=user, display_name=display, existing=existing)
        ev.append_events(run_id=run.id, events=events, plan_version=run.plan_version, statuses=[run.status])
        audit_add(run=run, action="hitl_responded", actor=user,
                  details={"requestId": request.id, "responseIds": [r.response_id for r in rows], "note": note,
                           "operator": operator if isinstance(operator, dict) else None})
    everything = existing + rows
    return {"runId": run.id, "requestId": request.id, "latestResponseId": everything[-1].response_id,
            "responses": [hitl_response_payload(r) for r in everything]}


def hitl_resume(*, user: Any, run_id: str, request_id: str, responses: Any, latest_response_id: str | None = None,
                operator: Any = None, note: str = "") -> ResumeResult:
    """Append responses, resolve the request and put the run back to work."""
    from django.db import transaction

    from runs.models import RunStatus

    with transaction.atomic():
        run = _lock_run_for_operator(user=user, run_id=run_id)
        request = _pending_request(run=run, request_id=request_id)
        _check_waiting(run, (RunStatus.AWAITING_HITL,))
        return _resume_locked(user=user, run=run, request=request, responses=responses,
                              latest_response_id=latest_response_id, operator=operator, note=note,
                              trigger_kind="hitl", audit_action="hitl_resumed")


def run_resume(*, user: Any, run_id: str, expected_plan_version: int, responses: Any = None,
               latest_response_id: str | None = None, operator: Any = None, note: str = "") -> ResumeResult:
    """POST /api/v1/flex/run.resume: resume a paused run, or resolve the
    pending request of a run awaiting a person and resume it."""
    from django.db import transaction

    from flexagents.errors import HitlResponseRequired, MissingSnapshot, StalePlanVersion
    from runs.models import RunStatus

    with transaction.atomic():
        run = _lock_run_for_operator(user=user, run_id=run_id)
        _check_waiting(run, (RunStatus.AWAITING_HITL, RunStatus.PAUSED))
        if not run.has_snapshot or not run.plan_version:
            raise MissingSnapshot(details={"runId": run.id, "status": run.status})
        if expected_plan_version != run.plan_version:
            # expectedPlanVersion is kept for older clients; currentPlanVersion
            # names it plainly (API.md, Second wave).
            raise StalePlanVersion(details={"currentPlanVersion": run.plan_version,
                                            "expectedPlanVersion": run.plan_version,
                                            "receivedPlanVersion": expected_plan_version})
        request = None
        if run.status == RunStatus.AWAITING_HITL:
            request = HitlRequest.objects.filter(run_id=run.id, status=HitlStatus.PENDING).order_by("-created_at").first()
            if request is None:
                raise HitlResponseRequired("The run waits for a person but has no pending request.",
                                           details={"runId": run.id})
        elif responses:
            raise _errors("A paused run has no pending request to answer.",
                          [{"path": "/responses", "message": "must be empty for a paused run"}])
        return _resume_locked(user=user, run=run, request=request, responses=responses,
                              latest_response_id=latest_response_id, operator=operator, note=note,
                              trigger_kind="manual" if request is None else "hitl", audit_action="run_resumed")


def _one_of(names: tuple[str, ...]) -> str:
    """("approval", "rejection", "option") -> "an approval, rejection or option"."""
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
    return f"{'an' if listed[:1] in 'aeiou' else 'a'} {listed}"


def _follow_up_for(request: HitlRequest, resolution: str) -> dict[str, Any]:
    if request.kind == HitlKind.CLARIFY:
        return {"type": "continue"}
    if resolution == "approved":
        return dict(request.approve_action or {"type": "continue"})
    return dict(request.reject_action or {"type": "fail"})


def hitl_follow_up_payload(request: HitlRequest) -> dict[str, Any] | None:
    """The `policy_triggered` payload of the follow-up a resolved approval
    applies when its policy set one (`approveAction` / `rejectAction`);
    None when the default applies (seed 8.5 AC1)."""
    if request.kind != HitlKind.APPROVAL or request.resolution not in ("approved", "rejected"):
        return None
    approved = request.resolution == "approved"
    action = request.approve_action if approved else request.reject_action
    if not action:
        return None
    payload: dict[str, Any] = {
        "policyId": request.source or None,
        "trigger": (request.contract_summary or {}).get("trigger") or "hitl",
        "action": dict(action),
        "requestId": request.id,
        "resolution": request.resolution,
        "followUp": "approveAction" if approved else "rejectAction",
    }
    if request.pending_node_id:
        payload["nodeId"] = request.pending_node_id
    return payload


def hitl_follow_up_pending_pause(*, run_id: str) -> dict[str, Any] | None:
    """For the engine: the `policy_triggered` payload of the `pause` follow-up
    the latest resolved request of the run left to apply (see `_resume_locked`)."""
    request = (HitlRequest.objects.filter(run_id=run_id, status=HitlStatus.RESOLVED)
               .order_by("-resolved_at", "-created_at", "-id").first())
    payload = hitl_follow_up_payload(request) if request is not None else None
    return payload if payload is not None and payload["action"].get("type") == "pause" else None


def _resume_locked(*, user: Any, run: Any, request: HitlRequest | None, responses: Any,
                   latest_response_id: str | None, operator: Any, note: str, trigger_kind: str,
                   audit_action: str) -> ResumeResult:
    """Under the run's row lock, with status and request already checked."""
    from django.db import transaction
    from django.utils import timezone

    from flexagents.errors import HitlResponseRequired
    from runs import events as ev
    from runs import notify
    from runs.models import NodeRun, NodeStatus, PlanVersion, RunStatus
    from runs.services import audit_add, check_transition

    now = timezone.now()
    display = _display_name(user, operator)
    events: list[Any] = []
    all_responses: list[HitlResponse] = []
    resolution = ""
    follow_up: dict[str, Any] = {"type": "continue"}
    follow_up_event: dict[str, Any] | None = None
    if request is not None:
        existing = list(request.responses.all())
        _check_latest_response(request, existing, latest_response_id)
        items = validate_responses(request, responses)
        # Decide before writing: nothing is stored when the body cannot resolve.
        preview = existing + [_response_row(request=request, item=i, user=user, display_name=display) for i in items]
        resolution = resolution_of(request, preview)
        if not resolution:
            raise HitlResponseRequired(f"This {request.kind} request must be resolved by "
                                       f"{_one_of(RESOLVING_TYPES[request.kind])} response.",
                                       details={"requestId": request.id, "kind": request.kind,
                                                "responseTypes": list(RESOLVING_TYPES[request.kind])})
        rows, events = _append(request=request, items=items, user=user, display_name=display, existing=existing)
        all_responses = existing + rows
        request.status = HitlStatus.RESOLVED
        request.resolution = resolution
        request.resolved_at = now
        request.save(update_fields=["status", "resolution", "resolved_at"])
        events.append(ev.PendingEvent(ev.HITL_RESOLVED, {
            "requestId": request.id, "resolution": resolution,
            "responses": [hitl_response_payload(r) for r in all_responses]}, request.pending_node_id))
        follow_up = _follow_up_for(request, resolution)
        follow_up_event = hitl_follow_up_payload(request)

    # What happens to the nodes and the run.
    current = PlanVersion.objects.get(run_id=run.id, version=run.plan_version)
    nodes = {n.node_id: n for n in NodeRun.objects.filter(run_id=run.id)}
    statuses = {k: n.status for k, n in nodes.items()}
    node_changes: dict[str, dict[str, Any]] = {}
    node_id = request.pending_node_id if request is not None else ""
    action = follow_up.get("type", "continue")
    target = RunStatus.QUEUED
    run_updates: dict[str, Any] = {"lease_owner": "", "lease_expires_at": None, "available_at": None,
                                   "pause_reason": ""}
    if node_id in nodes:
        if action == "fail":
            if statuses[node_id] == NodeStatus.AWAITING_HITL:
                node_changes[node_id] = {"status": NodeStatus.FAILED, "completed_at": now}
        elif action == "replan":
            # The node's work is discarded and done again, with everything
            # downstream of it (normally still pending).
            for dependent in _downstream(current.graph, node_id) | {node_id}:
                if statuses.get(dependent) not in (NodeStatus.PENDING, None):
                    node_changes[dependent] = {"status": NodeStatus.PENDING}
        elif statuses[node_id] == NodeStatus.AWAITING_HITL:
            # clarify answered, approved validation escalation, pause: run it again.
            node_changes[node_id] = {"status": NodeStatus.PENDING}
    for changed, changes in node_changes.items():
        statuses[changed] = changes["status"]
    completing: list[Any] = []
    if action == "fail":
        target = RunStatus.FAILED
        code = "hitl_rejected" if resolution == "rejected" else "policy_failed"
        error = {"code": code, "message": follow_up.get("message") or (
            "A person rejected the request." if resolution == "rejected" else "The approved action fails the run."),
            "requestId": request.id if request else None, "nodeId": node_id or None}
        run_updates.update(error=error, completed_at=now)
        completing.append(ev.PendingEvent(ev.COMPLETE, {"status": "failed", "error": error}))
    elif action == "pause":
        # The table has no awaiting_hitl → paused: the run is queued with its
        # pause reason, and the worker that takes it moves it running → paused
        # and emits this `policy_triggered` then (runs.engine.loop.resume_started),
        # so a stream ends only once the run really is paused.
        run_updates["pause_reason"] = follow_up.get("reason") or "paused after a HITL decision"

    previous, version = run.plan_version, run.plan_version + 1
    trigger = {"kind": trigger_kind, "requestId": request.id if request else None, "resolution": resolution or None,
               "action": action, "actorId": getattr(user, "pk", None)}
    pending = [n["id"] for n in current.graph.get("nodes", []) if statuses.get(n["id"]) not in ("completed", "skipped")]
    PlanVersion.objects.create(run_id=run.id, version=version, reason=PlanVersion.Reason.RESUME, trigger=trigger,
                               graph=current.graph, node_statuses=statuses, pending_node_ids=pending,
                               schema_hash=current.schema_hash)
    events.append(ev.PendingEvent(ev.PLAN_UPDATED, {
        "previousVersion": previous, "version": version, "reason": "resume", "trigger": trigger,
        "nodes": [{"id": n["id"], "status": statuses.get(n["id"], "pending")} for n in current.graph.get("nodes", [])]}))
    if follow_up_event is not None and action != "pause":
        events.append(ev.PendingEvent(ev.POLICY_TRIGGERED, follow_up_event, node_id))
    events.extend(completing)
    for changed, changes in node_changes.items():
        NodeRun.objects.filter(pk=nodes[changed].pk).update(**changes)
    check_transition(run, target)
    run_updates.update(status=target, plan_version=version, pending_node_ids=pending)
    # No worker holds a waiting run: the fence is the row lock plus the
    # status read under it.
    rows = ev.append_events(run_id=run.id, events=events, plan_version=version, statuses=[run.status],
                            run_updates=run_updates)
    audit_add(run=run, action=audit_action, actor=user, plan_version=version,
              details={"requestId": request.id if request else None, "resolution": resolution or None,
                       "action": action, "previousVersion": previous, "status": target, "note": note,
                       "responseIds": [r.response_id for r in all_responses],
                       "operator": operator if isinstance(operator, dict) else None})
    if target == RunStatus.QUEUED:
        transaction.on_commit(notify.announce_work)
    for key, value in run_updates.items():
        setattr(run, key, value)
    return ResumeResult(run=run, request=request, responses=all_responses, resolution=resolution,
                        first_seq=rows[0].seq if rows else run.last_seq, last_seq=rows[-1].seq if rows else run.last_seq)


def _downstream(graph: dict[str, Any], node_id: str) -> set[str]:
    children: dict[str, set[str]] = {}
    for node in graph.get("nodes", []):
        for dep in node.get("dependsOn", []):
            children.setdefault(dep, set()).add(node["id"])
    seen: set[str] = set()
    stack = [node_id]
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return seen


def hitl_remove(*, user: Any, run_id: str, request_id: str | None = None, reason: str = "", note: str = "") -> Any:
    """Remove a pending request and cancel its run (hitl_resolved `removed`,
    then `complete` with status cancelled), audited."""
    from django.db import transaction
    from django.utils import timezone

    from runs import events as ev
    from runs.models import RunStatus
    from runs.services import audit_add, check_transition

    with transaction.atomic():
        run = _lock_run_for_operator(user=user, run_id=run_id)
        request = _pending_request(run=run, request_id=request_id)
        check_transition(run, RunStatus.CANCELLED)
        payloads = hitl_requests_remove_pending(run=run, reason=reason)
        events = [ev.PendingEvent(ev.HITL_RESOLVED, p) for p in payloads]
        events.append(ev.PendingEvent(ev.COMPLETE, {"status": "cancelled", "reason": reason or None,
                                                    "requestId": request.id}))
        ev.append_events(run_id=run.id, events=events, plan_version=run.plan_version, statuses=[run.status],
                         run_updates={"status": RunStatus.CANCELLED, "completed_at": timezone.now(),
                                      "lease_owner": "", "lease_expires_at": None})
        audit_add(run=run, action="hitl_removed", actor=user,
                  details={"requestId": request.id, "reason": reason, "note": note})
    run.refresh_from_db()
    return run


def hitl_run_payloads(*, run: Any) -> dict[str, Any]:
    """Every request of a run with its responses (the resume body's `requests`)."""
    requests = HitlRequest.objects.filter(run_id=run.id).prefetch_related("responses").order_by("created_at", "id")
    return {"requests": [hitl_request_payload(r, responses=r.responses.all()) for r in requests],
            "pendingRequestId": next((r.id for r in requests if r.status == HitlStatus.PENDING), None)}
