"""HITL services: build, answer, resolve and remove requests, and their
payloads. They write requests and responses only; the run itself (its
status, events, plan versions and audit trail) is changed by the run
services (`runs.services`), which call these inside their transaction.
This module imports nothing from `runs`: a run is passed by id, or as any
object with the few attributes read here (`RunRef`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, TypedDict

from django.utils import timezone

from flexagents.dates import iso_or_none
from flexagents.errors import (AlreadyApproved, HitlRequestNotFound, HitlRequestNotPending, HitlResponseRequired,
                               NotAssignee, SelfApprovalForbidden, StaleHitlState, ValidationFailed)
from hitl.models import URGENCY_RANK, HitlKind, assignee_keys_for, HitlRequest, HitlResponse, HitlStatus
# The one presenter (redacted); re-exported because every surface imports it from here.
from hitl.presenters import (HitlResponsePayload, approvals_of, hitl_request_payload,  # noqa: F401
                             hitl_response_payload)

MAX_RESPONSES_PER_CALL = 20
MAX_FREEFORM_CHARS = 10_000
RESPONSE_TYPES = ("approval", "rejection", "option", "freeform")
# A clarify request is resolved by an answer; an approval request by a verdict
# (its options "approve"/"reject" count as verdicts too).
RESOLVING_TYPES: dict[str, tuple[str, ...]] = {HitlKind.APPROVAL: ("approval", "rejection", "option"), HitlKind.CLARIFY: ("freeform", "option")}


class RunRef(Protocol):
    """What a request needs to know of its run."""

    id: str
    thread_id: str
    brief_id: str


class RemovedRequest(TypedDict):
    """A request removed because its run is being cancelled."""

    requestId: str
    reason: str | None
    responses: list[HitlResponsePayload]


class FollowUp(TypedDict):
    """The follow-up a resolved approval's policy set (`approveAction` /
    `rejectAction`): what its `policy_triggered` event says."""

    policyId: str | None
    trigger: str
    action: dict[str, Any]
    requestId: str
    resolution: str
    followUp: str
    nodeId: str


@dataclass
class Resolution:
    """A request resolved by responses (`hitl_request_resolve`)."""

    resolution: str
    new_responses: list[HitlResponse] = field(default_factory=list)
    responses: list[HitlResponse] = field(default_factory=list)
    # What happens next: {"type": "continue" | "fail" | "pause" | "replan", …}.
    action: dict[str, Any] = field(default_factory=lambda: {"type": "continue"})
    follow_up: FollowUp | None = None


# --- raise -----------------------------------------------------------------------

def hitl_request_build(*, run: RunRef, kind: str, question: str, options: list[dict[str, Any]] | None = None,
                       allow_free_form: bool = False, urgency: str = "normal", pending_node_id: str = "",
                       operator_prompt: str = "", contract_summary: dict[str, Any] | None = None,
                       plan_version: int = 0, source: str = "", approve_action: dict[str, Any] | None = None,
                       reject_action: dict[str, Any] | None = None,
                       review: dict[str, Any] | None = None,
                       governance: dict[str, Any] | None = None) -> HitlRequest:
    """An unsaved request; the caller saves it in its own transaction.
    `governance`: the `hitl` action's governance fields as the envelope
    has them (`assignees`, `requiredApprovals`, `allowSelfApproval`,
    `timeoutSeconds`, `onTimeout`, `escalateAfterSeconds`, `escalateTo`)."""
    created_at = timezone.now()
    rules = governance or {}
    timeout = rules.get("timeoutSeconds")
    escalate_after = rules.get("escalateAfterSeconds")
    return HitlRequest(
        run_id=run.id, kind=kind, question=question, options=list(options or []), allow_free_form=allow_free_form,
        urgency=urgency, urgency_rank=URGENCY_RANK.get(urgency, 1), pending_node_id=pending_node_id,
        operator_prompt=operator_prompt, contract_summary=contract_summary or {}, review=dict(review or {}),
        plan_version=plan_version,
        source=source, approve_action=approve_action, reject_action=reject_action, thread_id=run.thread_id,
        brief_id=run.brief_id, created_at=created_at,
        assignees=_people(rules.get("assignees")), assignee_keys=assignee_keys_for(_people(rules.get("assignees"))),
        required_approvals=int(rules.get("requiredApprovals") or 1),
        allow_self_approval=bool(rules.get("allowSelfApproval", False)),
        due_at=created_at + timedelta(seconds=timeout) if timeout else None,
        on_timeout=dict(rules["onTimeout"]) if rules.get("onTimeout") else None,
        escalate_at=created_at + timedelta(seconds=escalate_after) if escalate_after else None,
        escalate_to=_people(rules.get("escalateTo")))


GOVERNANCE_KEYS = ("assignees", "requiredApprovals", "allowSelfApproval", "timeoutSeconds", "onTimeout",
                   "escalateAfterSeconds", "escalateTo")


def _people(value: Any) -> dict[str, list[str]]:
    """{"users": [...], "groups": [...]} with only the non-empty lists."""
    if not isinstance(value, dict):
        return {}
    out: dict[str, list[str]] = {}
    for key in ("users", "groups"):
        names = [str(name) for name in value.get(key) or [] if name]
        if names:
            out[key] = list(dict.fromkeys(names))
    return out


def merge_people(*values: Any) -> dict[str, list[str]]:
    """The union of several assignee sets, order kept."""
    out: dict[str, list[str]] = {}
    for value in values:
        for key, names in _people(value).items():
            out[key] = list(dict.fromkeys([*out.get(key, []), *names]))
    return out


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
            return str(option.get("label", response.selected_option_id))
    return response.selected_option_id


# --- governance: who may answer, who is told ----------------------------------------

def is_assignee(*, request: HitlRequest, user: Any) -> bool:
    """Whether `user` is named by the request's assignees (by username, or
    through one of its groups). An unassigned request has no assignees."""
    people = request.assignees or {}
    if getattr(user, "username", None) in (people.get("users") or []):
        return True
    groups = people.get("groups") or []
    return bool(groups) and user.groups.filter(name__in=groups).exists()


def check_may_answer(*, request: HitlRequest, user: Any, items: list[dict[str, Any]], run_created_by_id: Any,
                     existing: list[HitlResponse]) -> None:
    """The governance rules (docs/hitl.md), checked before anything is written:

    1. an assigned request is answered only by its assignees and superusers
       (403 `not_assignee`);
    2. the run's creator may not approve their own run's approval request
       unless `allowSelfApproval` (403 `self_approval_forbidden`) — a
       rejection, a note or an option that does not approve stays allowed;
    3. a person counts once toward `requiredApprovals`: a second approval
       by the same person is a 409 `already_approved`.
    """
    if request.assignees and not getattr(user, "is_superuser", False) and not is_assignee(request=request, user=user):
        raise NotAssignee(details={"requestId": request.id, "assignees": request.assignees})
    if request.kind != HitlKind.APPROVAL:
        return
    approving = [i for i in items if _approves(request, i)]
    if not approving:
        return
    user_id = getattr(user, "pk", None)
    if (not request.allow_self_approval and user_id is not None and run_created_by_id is not None
            and user_id == run_created_by_id):
        raise SelfApprovalForbidden(details={"requestId": request.id, "allowSelfApproval": False})
    already = user_id is not None and any(r.approved is True and r.responder_id == user_id for r in existing)
    if already or len(approving) > 1:
        raise AlreadyApproved(details={"requestId": request.id, "requiredApprovals": request.required_approvals,
                                       "approvals": len(approvals_of(existing))})


def _approves(request: HitlRequest, item: dict[str, Any]) -> bool:
    rtype = item.get("responseType")
    if rtype == "approval":
        return True
    if rtype == "option" and request.kind == HitlKind.APPROVAL:
        return bool(item.get("selectedOptionId") == "approve" or item.get("approved") is True)
    return False


class Recipient(TypedDict):
    """A person to tell about a request (notifications: email, webhooks)."""

    userId: int
    username: str
    email: str


def people_users(people: Any) -> list[Any]:
    """The active users named by an assignee set (usernames and group
    members), each once, by username."""
    from django.contrib.auth import get_user_model
    from django.db.models import Q

    value = people if isinstance(people, dict) else {}
    users = [str(n) for n in value.get("users") or []]
    groups = [str(n) for n in value.get("groups") or []]
    if not users and not groups:
        return []
    model = get_user_model()
    condition = Q(username__in=users) | Q(groups__name__in=groups)
    return list(model.objects.filter(condition, is_active=True).distinct().order_by("username"))


def hitl_recipients(*, request: HitlRequest, escalation: bool = False) -> list[Recipient]:
    """Who is told about a request: its assignees (users, and the members of
    its groups) when it is raised, or its `escalateTo` people when it
    escalates (`escalation=True`). Only users with an email address; an
    unassigned request has no recipients (it is in every operator's inbox)."""
    people = request.escalate_to if escalation else request.assignees
    return [{"userId": int(user.pk), "username": user.username, "email": user.email}
            for user in people_users(people) if user.email]


# --- read, check --------------------------------------------------------------------

def hitl_pending_request(*, run_id: str, request_id: str | None) -> HitlRequest:
    """The request to act on (by id, or the run's newest): 404 when absent,
    409 when no longer pending."""
    if request_id:
        request = HitlRequest.objects.filter(pk=request_id, run_id=run_id).first()
        if request is None:
            raise HitlRequestNotFound(details={"requestId": request_id, "runId": run_id})
    else:
        request = HitlRequest.objects.filter(run_id=run_id).order_by("-created_at", "-id").first()
        if request is None:
            raise HitlRequestNotFound(details={"runId": run_id})
    if request.status != HitlStatus.PENDING:
        raise HitlRequestNotPending(details={"requestId": request.id, "status": request.status})
    return request


def hitl_newest_pending_request(*, run_id: str) -> HitlRequest | None:
    return HitlRequest.objects.filter(run_id=run_id, status=HitlStatus.PENDING).order_by("-created_at").first()


def hitl_responses_of(*, request: HitlRequest, latest_response_id: str | None,
                      loaded: list[HitlResponse] | None = None) -> list[HitlResponse]:
    """The request's responses so far, after the stale rule: the caller must
    acknowledge the latest one, if there is one (409 `stale_hitl_state`).
    `loaded`: the responses as the caller already read them (oldest first)."""
    existing = list(request.responses.all()) if loaded is None else list(loaded)
    latest = existing[-1].response_id if existing else None
    if (latest_response_id or None) != latest:
        raise StaleHitlState(details={"requestId": request.id, "latestResponseId": latest,
                                      "receivedLatestResponseId": latest_response_id})
    return existing


def validation_error(message: str, errors: list[dict[str, str]]) -> ValidationFailed:
    return ValidationFailed(message, details={"errors": errors})


def validate_responses(*, request: HitlRequest, responses: Any) -> list[dict[str, Any]]:
    """Check response inputs against the request (422 validation_failed)."""
    if responses is None:
        return []
    if not isinstance(responses, list):
        raise validation_error("responses must be a list.", [{"path": "/responses", "message": "expected an array"}])
    if len(responses) > MAX_RESPONSES_PER_CALL:
        raise validation_error("Too many responses.", [{"path": "/responses",
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
        raise validation_error("Some responses are not valid for this request.", errors)
    return clean


def _response_row(*, request: HitlRequest, item: dict[str, Any], user: Any, display_name: str) -> HitlResponse:
    rtype = item["responseType"]
    approved = item.get("approved")
    if rtype == "approval":
        approved = True
    elif rtype == "rejection":
        approved = False
    elif rtype == "option" and request.kind == HitlKind.APPROVAL:
        approved = {"approve": True, "reject": False}.get(str(item.get("selectedOptionId")), approved)
    return HitlResponse(request=request, run_id=request.run_id, response_type=rtype, approved=approved,
                        selected_option_id=item.get("selectedOptionId") or "",
                        freeform_text=item.get("freeformText") or "", metadata=item.get("metadata") or {},
                        responder=user if getattr(user, "pk", None) else None,
                        responder_display_name=display_name[:200], created_at=timezone.now())


def resolution_of(*, request: HitlRequest, responses: list[HitlResponse]) -> str:
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


def hitl_display_name(*, user: Any, operator: Any) -> str:
    """Who answered, as shown: the operator's display name when sent, else the user's."""
    if isinstance(operator, dict) and isinstance(operator.get("displayName"), str) and operator["displayName"]:
        return str(operator["displayName"])
    return getattr(user, "username", "") or ""


# --- write ---------------------------------------------------------------------------

def hitl_responses_append(*, request: HitlRequest, items: list[dict[str, Any]], user: Any,
                          display_name: str) -> list[HitlResponse]:
    """Save new responses (validated items), in the caller's transaction."""
    rows = [_response_row(request=request, item=item, user=user, display_name=display_name) for item in items]
    for row in rows:
        row.save(force_insert=True)
    return rows


def _one_of(names: tuple[str, ...]) -> str:
    """("approval", "rejection", "option") -> "an approval, rejection or option"."""
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
    return f"{'an' if listed[:1] in 'aeiou' else 'a'} {listed}"


def hitl_request_resolve(*, request: HitlRequest, existing: list[HitlResponse], items: list[dict[str, Any]],
                         user: Any, display_name: str, now: datetime) -> Resolution:
    """Append the responses and resolve the request with them, in the
    caller's transaction. Decides before writing: nothing is stored when the
    responses cannot resolve the request (422 `hitl_response_required`).
    An approval short of the request's `requiredApprovals` is stored and
    leaves the request pending: the result's `resolution` is "" then."""
    resolved = hitl_request_decide(request=request, existing=existing, items=items, user=user,
                                   display_name=display_name, now=now)
    for row in resolved.new_responses:
        row.save(force_insert=True)
    if resolved.resolution:
        request.save(update_fields=["status", "resolution", "resolved_at"])
    return resolved


def hitl_request_decide(*, request: HitlRequest, existing: list[HitlResponse], items: list[dict[str, Any]],
                        user: Any, display_name: str, now: datetime) -> Resolution:
    """What `hitl_request_resolve` writes, decided without writing: the new
    response rows (unsaved) and, when they resolve it, the request's new
    status, resolution and time (set on `request`, unsaved). The caller
    stores them (`hitl_request_resolve`, or one statement of the engine's
    hot path, `runs.services`)."""
    rows = [_response_row(request=request, item=i, user=user, display_name=display_name) for i in items]
    resolution = resolution_of(request=request, responses=existing + rows)
    if not resolution:
        raise HitlResponseRequired(f"This {request.kind} request must be resolved by "
                                   f"{_one_of(RESOLVING_TYPES[request.kind])} response.",
                                   details={"requestId": request.id, "kind": request.kind,
                                            "responseTypes": list(RESOLVING_TYPES[request.kind])})
    if (resolution == "approved" and request.kind == HitlKind.APPROVAL
            and len(approvals_of(existing + rows)) < request.required_approvals):
        # A quorum: this approval counts, the request waits for the others.
        return Resolution(resolution="", new_responses=rows, responses=existing + rows, action={"type": "wait"})
    request.status = HitlStatus.RESOLVED
    request.resolution = resolution
    request.resolved_at = now
    return Resolution(resolution=resolution, new_responses=rows, responses=existing + rows,
                      action=_follow_up_for(request, resolution), follow_up=hitl_follow_up_payload(request=request))


def hitl_request_time_out(*, request: HitlRequest, now: datetime) -> Resolution | None:
    """Resolve a pending request whose `due_at` passed with its `onTimeout`
    action (none: reject), in the caller's transaction. A conditional UPDATE
    (still pending, still due): of several sweepers exactly one gets the
    request, the others get None. `onTimeout` `option` stores the chosen
    option as a response by the system, so the record shows it.

    The result's `action` is what happens to the run: the request's
    `approveAction` / `rejectAction` for a verdict, `{"type": "fail"}` for
    `fail` and `{"type": "cancel"}` for `cancel`."""
    applied: dict[str, Any] = dict(request.on_timeout or {"type": "reject"})
    won = HitlRequest.objects.filter(pk=request.pk, status=HitlStatus.PENDING, due_at__lte=now).update(
        status=HitlStatus.RESOLVED, resolution="timed_out", resolved_at=now, applied_action=applied)
    if won != 1:
        return None
    request.status, request.resolution, request.resolved_at = HitlStatus.RESOLVED, "timed_out", now
    request.applied_action = applied
    rows: list[HitlResponse] = []
    if applied["type"] == "option":
        rows = hitl_responses_append(request=request, items=[{
            "responseType": "option", "selectedOptionId": applied.get("optionId"),
            "metadata": {"timedOut": True}}], user=None, display_name="system")
    verdict = verdict_of(request)
    if verdict:
        action = _follow_up_for(request, verdict)
    elif applied["type"] == "cancel":
        action = {"type": "cancel"}
    elif request.kind == HitlKind.CLARIFY and applied["type"] == "option":
        action = {"type": "continue"}
    else:
        action = {"type": "fail"}
    responses = list(request.responses.all())
    return Resolution(resolution="timed_out", new_responses=rows, responses=responses, action=action,
                      follow_up=hitl_follow_up_payload(request=request))


def hitl_requests_remove_pending(*, run_id: str, reason: str = "") -> list[RemovedRequest]:
    """Mark a run's pending requests removed (the run is being cancelled).
    Returns what each `hitl_resolved` event says; the caller emits them."""
    removed: list[RemovedRequest] = []
    for request in HitlRequest.objects.filter(run_id=run_id, status=HitlStatus.PENDING).prefetch_related("responses"):
        request.status = HitlStatus.REMOVED
        request.resolution = "removed"
        request.resolved_at = timezone.now()
        request.save(update_fields=["status", "resolution", "resolved_at"])
        removed.append({"requestId": request.id, "reason": reason or None,
                        "responses": [hitl_response_payload(r) for r in request.responses.all()]})
    return removed


# --- follow-ups ------------------------------------------------------------------------

def _follow_up_for(request: HitlRequest, resolution: str) -> dict[str, Any]:
    if request.kind == HitlKind.CLARIFY:
        return {"type": "continue"}
    if resolution == "approved":
        return dict(request.approve_action or {"type": "continue"})
    return dict(request.reject_action or {"type": "fail"})


def verdict_of(request: HitlRequest) -> str:
    """`approved` / `rejected` for an approval decided by a person, or by the
    system at its deadline (`onTimeout` approve, reject or option
    approve/reject); "" otherwise."""
    if request.resolution in ("approved", "rejected"):
        return request.resolution
    if request.resolution == "timed_out" and isinstance(request.applied_action, dict):
        kind = request.applied_action.get("type")
        option = request.applied_action.get("optionId")
        if kind == "approve" or (kind == "option" and option == "approve"):
            return "approved"
        if kind == "reject" or (kind == "option" and option == "reject"):
            return "rejected"
    return ""


def hitl_follow_up_payload(*, request: HitlRequest) -> FollowUp | None:
    """The `policy_triggered` payload of the follow-up a resolved approval
    applies when its policy set one (`approveAction` / `rejectAction`);
    None when the default applies (seed 8.5 AC1)."""
    verdict = verdict_of(request)
    if request.kind != HitlKind.APPROVAL or not verdict:
        return None
    approved = verdict == "approved"
    action = request.approve_action if approved else request.reject_action
    if not action:
        return None
    return {
        "policyId": request.source or None,
        "trigger": (request.contract_summary or {}).get("trigger") or "hitl",
        "action": dict(action),
        "requestId": request.id,
        "resolution": request.resolution,
        "followUp": "approveAction" if approved else "rejectAction",
        "nodeId": request.pending_node_id,
    }


def hitl_follow_up_pending_pause(*, run_id: str) -> FollowUp | None:
    """For the engine: the `pause` follow-up the latest resolved request of
    the run left to apply (a resume queues the run with its pause reason;
    the worker that takes it pauses it and says why)."""
    request = (HitlRequest.objects.filter(run_id=run_id, status=HitlStatus.RESOLVED)
               .order_by("-resolved_at", "-created_at", "-id").first())
    follow_up = hitl_follow_up_payload(request=request) if request is not None else None
    return follow_up if follow_up is not None and follow_up["action"].get("type") == "pause" else None


def hitl_run_payloads(*, run_id: str) -> dict[str, Any]:
    """Every request of a run with its responses (the resume body's `requests`)."""
    requests = HitlRequest.objects.filter(run_id=run_id).prefetch_related("responses").order_by("created_at", "id")
    return {"requests": [hitl_request_payload(r, responses=r.responses.all()) for r in requests],
            "pendingRequestId": next((r.id for r in requests if r.status == HitlStatus.PENDING), None)}
