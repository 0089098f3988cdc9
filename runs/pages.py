"""Run history pages for people (support staff, operators, clients who were
granted a run), outside the admin, and the read-side helpers the admin
console shares with them.

Everything shown here is redacted (flexagents.redaction) and fetched through
the permission-checked selectors (`runs_visible_to`, `run_get_for_user`).
Query counts do not grow with the number of rows or the size of a run: the
list is one paginated query with annotations, a run page a fixed number of
queries (events are capped at `TIMELINE_LIMIT`, the newest ones).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from html import escape
from typing import Any

from django.conf import settings
from django.contrib.admin.utils import quote
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import OuterRef, Prefetch, QuerySet, Subquery
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.safestring import SafeString, mark_safe

from flexagents.errors import RunNotFound
from flexagents.redaction import FREE_TEXT_KEYS, redact
from flexagents.roles import role_of, user_may_operate_run
from hitl.models import HitlRequest, HitlResponse, HitlStatus
from hitl.presenters import hitl_request_payload, review_rows
from planner.facets import get_catalog
from runs.debug import redact_envelope, redact_facet_values, redact_output
from runs.events import event_frame, redact_trigger
from runs.filters import capability_choices, form_filtered
from runs.models import AuditEntry, NodeRun, PlanVersion, Run, RunEvent, RunStatus
from runs.selectors import run_get_for_user, runs_visible_to
from runs.throttles import page_throttled

LOGIN_URL = "/accounts/login/"
PAGE_SIZE = 50
# The newest events shown on a run page; older ones are behind the events API.
TIMELINE_LIMIT = 500


# --- lists -----------------------------------------------------------------------

def runs_annotated(qs: QuerySet[Run]) -> QuerySet[Run]:
    """Runs with their creator and their pending HITL request (id, kind,
    question) as annotations: one query whatever the number of rows."""
    pending = HitlRequest.objects.filter(run=OuterRef("pk"), status=HitlStatus.PENDING).order_by("created_at", "id")
    return (qs.select_related("created_by")
            .defer("envelope", "facets", "provenance", "output", "error", "pending_node_ids")
            .annotate(pending_request_id=Subquery(pending.values("id")[:1]),
                      pending_kind=Subquery(pending.values("kind")[:1]),
                      pending_question=Subquery(pending.values("question")[:1])))


# --- one run ------------------------------------------------------------------------

STATUS_COLOURS = {
    "pending": "#9aa5b1", "running": "#2f80ed", "completed": "#27ae60", "failed": "#eb5757",
    "awaiting_hitl": "#f2994a", "skipped": "#cfd6dd", "dispatched": "#9b51e0",
}


def plan_graph_svg(graph: dict[str, Any], statuses: dict[str, str]) -> SafeString:
    """The plan graph as inline SVG: nodes in columns by depth, coloured by
    status (`data-node-id` / `data-status` let the page's script recolour them
    live). Every text is escaped."""
    nodes = graph.get("nodes") or []
    if not nodes:
        return mark_safe('<p class="muted">No plan yet.</p>')
    by_id = {n["id"]: n for n in nodes}
    depth: dict[str, int] = {}

    def depth_of(node_id: str, seen: frozenset[str] = frozenset()) -> int:
        if node_id in depth:
            return depth[node_id]
        parents = [p for p in by_id.get(node_id, {}).get("dependsOn", []) if p in by_id and p not in seen]
        depth[node_id] = 0 if not parents else 1 + max(depth_of(p, seen | {node_id}) for p in parents)
        return depth[node_id]

    columns: dict[int, list[str]] = {}
    for n in nodes:
        columns.setdefault(depth_of(n["id"]), []).append(n["id"])
    w, h, gap_x, gap_y, pad = 190, 58, 60, 24, 10
    pos: dict[str, tuple[int, int]] = {}
    for col, ids in columns.items():
        for row, node_id in enumerate(ids):
            pos[node_id] = (pad + col * (w + gap_x), pad + row * (h + gap_y))
    width = pad * 2 + (max(columns) + 1) * (w + gap_x) - gap_x
    height = pad * 2 + max(len(ids) for ids in columns.values()) * (h + gap_y) - gap_y
    parts = [f'<svg class="plan-graph" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" role="img" aria-label="Plan graph">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
             'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#6b7785"/></marker></defs>']
    edges = graph.get("edges") or [{"from": p, "to": n["id"]} for n in nodes for p in n.get("dependsOn", [])]
    for edge in edges:
        a, b = pos.get(edge.get("from")), pos.get(edge.get("to"))
        if a and b:
            parts.append(f'<line x1="{a[0] + w}" y1="{a[1] + h // 2}" x2="{b[0]}" y2="{b[1] + h // 2}" '
                         f'stroke="#6b7785" stroke-width="1.5" marker-end="url(#arrow)"/>')
    for n in nodes:
        x, y = pos[n["id"]]
        status = statuses.get(n["id"], "pending")
        colour = STATUS_COLOURS.get(status, "#9aa5b1")
        node_id = escape(str(n["id"]))
        parts.append(
            f'<g class="plan-node" data-node-id="{node_id}" data-status="{escape(status)}">'
            f'<title>{escape(str(n.get("capabilityId", "")))} — {escape(status)}</title>'
            f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="8" fill="{colour}" stroke="#33404d"/>'
            f'<text x="{x + 10}" y="{y + 22}" font-size="14" font-weight="bold" fill="#fff">{node_id}</text>'
            f'<text class="plan-node-status" x="{x + 10}" y="{y + 42}" font-size="12" fill="#fff">'
            f'{escape(str(n.get("kind", "")))} · {escape(status)}</text></g>')
    parts.append("</svg>")
    return mark_safe("".join(parts))


def scrub(value: Any) -> Any:
    """Sensitive keys at any depth and credentials in free-text fields."""
    return redact(value, text_keys=FREE_TEXT_KEYS)


def pretty(value: Any, *, redacted: bool = False) -> str:
    """Indented JSON for a <pre> (the template escapes it), redacted unless
    the caller already did it with a facet-aware redactor."""
    return json.dumps(value if redacted else scrub(value), indent=2, sort_keys=False, default=str)


@dataclass
class RunDetail:
    run: Run
    envelope_json: str
    policies_json: str
    plan_versions: list[dict[str, Any]]
    graph_svg: SafeString
    node_statuses: dict[str, str]
    nodes: list[dict[str, Any]]
    hitl_requests: list[dict[str, Any]]
    pending_request: dict[str, Any] | None
    events: list[dict[str, Any]]
    events_total: int
    last_event_id: str
    output_json: str | None
    error_json: str | None
    audit: list[dict[str, Any]]


def people_text(people: Any) -> str:
    """{"users": ["ana"], "groups": ["legal"]} -> "ana, group legal"."""
    value = people if isinstance(people, dict) else {}
    return ", ".join([*(str(u) for u in value.get("users") or []),
                      *(f"group {g}" for g in value.get("groups") or [])])


def timeout_text(action: Any) -> str:
    if not isinstance(action, dict):
        return "reject (the default)"
    if action.get("type") == "option":
        return f"answer with option {action.get('optionId')}"
    return str(action.get("type"))


def governance_row(request: HitlRequest, shown: Any) -> dict[str, Any] | None:
    """A request's governance as the console, the inbox and the history
    pages show it (from the presenter's payload `shown`); None when the
    request has none of it to show (a clarification without assignees or
    deadlines)."""
    row = {"request_id": request.id, "kind": request.kind, "assignees": people_text(shown["assignees"]),
           "required": shown["requiredApprovals"], "approved": len(shown["approvals"]),
           "approvers": [a["responderDisplayName"] or "someone" for a in shown["approvals"]],
           "needed": shown["approvalsNeeded"], "allow_self": shown["allowSelfApproval"],
           "due_at": request.due_at, "on_timeout": timeout_text(shown["onTimeout"]),
           "escalate_at": request.escalate_at, "escalated": request.escalated, "escalated_at": request.escalated_at,
           "escalate_to": people_text(shown["escalateTo"]),
           "applied": timeout_text(shown["appliedAction"]) if shown["appliedAction"] else ""}
    if request.kind != "approval" and not (row["assignees"] or row["due_at"] or row["escalate_at"]):
        return None
    return row


def run_detail(run: Run) -> RunDetail:
    """Everything a run page shows, redacted, in a fixed number of queries
    (plan versions, nodes, requests + responses, events, audit)."""
    versions = list(PlanVersion.objects.filter(run=run).order_by("version"))
    nodes = list(NodeRun.objects.filter(run=run).order_by("position", "id"))
    requests = list(HitlRequest.objects.filter(run=run).order_by("created_at", "id").prefetch_related(
        Prefetch("responses", queryset=HitlResponse.objects.order_by("id"))))
    events = list(RunEvent.objects.filter(run=run).order_by("-seq")[:TIMELINE_LIMIT])[::-1]
    audit = list(AuditEntry.objects.filter(run=run).select_related("actor").order_by("created_at", "id"))

    schemas = {name: facet.schema for name, facet in get_catalog().items()}
    statuses = {n.node_id: n.status for n in nodes}
    current = versions[-1] if versions else None
    graph = current.graph if current else {}
    envelope = run.envelope or {}
    request_rows = []
    pending = None
    for request in requests:
        responses = list(request.responses.all())
        # Everything a person reads of a request comes from the HITL presenter
        # (redacted); only the datetimes are the row's, for the date filters.
        shown = hitl_request_payload(request, responses=responses)
        row = {
            "id": request.id, "kind": request.kind, "question": shown["question"], "options": shown["options"],
            "allow_free_form": request.allow_free_form, "urgency": request.urgency, "status": request.status,
            "resolution": request.resolution, "pending_node_id": request.pending_node_id,
            "operator_prompt": shown["operatorPrompt"], "plan_version": request.plan_version,
            "review": review_rows(request.review, schemas),
            "governance": governance_row(request, shown),
            "created_at": request.created_at, "resolved_at": request.resolved_at,
            "latest_response_id": responses[-1].response_id if responses else "",
            "responses": [{
                "id": r.response_id, "type": r.response_type, "approved": r.approved,
                "option": p["selectedOptionId"] or "", "text": p["freeformText"] or "",
                "note": str((p["metadata"] or {}).get("note") or "") if isinstance(p["metadata"], dict) else "",
                "who": p["responderDisplayName"] or "", "at": r.created_at}
                for r, p in zip(responses, shown["responses"])],
        }
        request_rows.append(row)
        if request.status == HitlStatus.PENDING and pending is None:
            pending = row
    return RunDetail(
        run=run,
        envelope_json=pretty(redact_envelope(envelope, schemas), redacted=True),
        policies_json=pretty(envelope.get("policies", {})),
        plan_versions=[{"version": v.version, "reason": v.reason,
                        "trigger": json.dumps(scrub(redact_trigger(v.trigger))),
                        "created_at": v.created_at, "pending": ", ".join(v.pending_node_ids or []),
                        # Each node with its capability: a replan's different graph shows.
                        "nodes": ", ".join(f"{n.get('id', '')} ({n.get('capabilityId', '')})"
                                           for n in (v.graph or {}).get("nodes", []))}
                       for v in versions],
        graph_svg=plan_graph_svg(graph, statuses),
        node_statuses=statuses,
        nodes=[{"id": n.node_id, "capability": n.capability_id, "kind": n.kind, "status": n.status,
                "attempts": n.attempts, "plan_version": n.plan_version,
                "validation_errors": pretty(n.validation_errors) if n.validation_errors else "",
                "error": pretty(n.error) if n.error else "", "started_at": n.started_at,
                "completed_at": n.completed_at, "duration_ms": n.duration_ms, "tokens": node_tokens(n.usage),
                "output": pretty(redact_facet_values(n.output, schemas), redacted=True) if n.output is not None else ""} for n in nodes],
        hitl_requests=request_rows,
        pending_request=pending,
        events=[timeline_row(e) for e in events],
        events_total=run.last_seq,
        last_event_id=f"{run.id}:{events[-1].seq}" if events else "",
        output_json=pretty(redact_output(run.output, envelope, schemas), redacted=True) if run.output is not None else None,
        error_json=pretty(run.error) if run.error else None,
        audit=[{"action": a.action, "actor": a.actor_display or (a.actor.username if a.actor else "system"),
                "plan_version": a.plan_version, "at": a.created_at, "details": json.dumps(scrub(a.details))}
               for a in audit],
    )


def node_tokens(usage: Any) -> str:
    """A node's language-model tokens over its attempts, "prompt + completion"; "" without a model."""
    entries = [u for u in usage or [] if isinstance(u, dict)]
    if not entries:
        return ""
    prompt = sum(int(u.get("promptTokens") or 0) for u in entries)
    completion = sum(int(u.get("completionTokens") or 0) for u in entries)
    return f"{prompt} + {completion}"


def timeline_row(event: RunEvent) -> dict[str, Any]:
    frame = event_frame(event)
    return {"id": frame["id"], "seq": event.seq, "type": event.type, "at": event.created_at,
            "node_id": event.node_id, "plan_version": event.plan_version, "summary": event_summary(frame)}


def event_summary(frame: dict[str, Any]) -> str:
    """One line per event for the timeline (the same rule as static/runs/run.js)."""
    p = frame.get("payload") or {}
    kind = frame.get("type")
    if kind == "node_start":
        return f"{p.get('nodeId')} started (attempt {p.get('attempt')})"
    if kind == "node_complete":
        return f"{p.get('nodeId')} completed → {', '.join(p.get('outputFacets') or [])}"
    if kind == "node_error":
        return f"{p.get('nodeId')}: {(p.get('error') or {}).get('message', '')}"
    if kind == "hitl_request":
        return f"{p.get('kind')}: {p.get('question')}"
    if kind == "hitl_update":
        return f"{p.get('requestId')} response #{p.get('responseCount')}: {(p.get('response') or {}).get('responseType')}"
    if kind == "hitl_resolved":
        applied = p.get("appliedAction")
        if isinstance(applied, dict):
            return f"{p.get('requestId')} timed out: the system applied {timeout_text(applied)}"
        return f"{p.get('requestId')} {p.get('resolution')}"
    if kind == "hitl_escalated":
        return f"{p.get('requestId')} escalated to {people_text(p.get('escalateTo'))}; urgency {p.get('urgency')}"
    if kind == "plan_updated":
        return f"plan v{p.get('previousVersion')} → v{p.get('version')} ({p.get('reason')})"
    if kind == "plan_generated":
        return f"plan v{p.get('version')}: {len(p.get('nodes') or [])} nodes"
    if kind == "complete":
        return f"status {p.get('status')}"
    if kind == "policy_triggered":
        return f"policy {p.get('policyId')} → {(p.get('action') or {}).get('type')}"
    if kind == "validation_error":
        return f"{p.get('scope')} validation failed ({len(p.get('errors') or [])} errors)"
    if kind == "log":
        return str(p.get("message", ""))
    if kind == "goal_evaluated":
        return f"goal {p.get('goalId')} {'met' if p.get('met') else 'unmet'} (attempt {p.get('attempt')})"
    return ""


# --- views ---------------------------------------------------------------------------

@login_required(login_url=LOGIN_URL)
def run_list_page(request: HttpRequest) -> HttpResponse:
    qs, errors = form_filtered(runs_annotated(runs_visible_to(user=request.user)), request.GET, request)
    page = Paginator(qs.order_by("-created_at", "-id"), PAGE_SIZE).get_page(request.GET.get("page"))
    params = request.GET.copy()
    params.pop("page", None)
    return render(request, "runs/run_list.html", {
        "page": page, "runs": list(page.object_list), "filters": request.GET, "filter_errors": errors,
        "query": params.urlencode(),
        "statuses": RunStatus.values, "capabilities": capability_choices(), "role": role_of(request.user),
    })


@login_required(login_url=LOGIN_URL)
def run_page(request: HttpRequest, run_id: str) -> HttpResponse:
    throttled = page_throttled(request)  # one scope with the debug view and events (runs/throttles.py)
    if throttled is not None:
        return throttled
    try:
        run = run_get_for_user(user=request.user, run_id=run_id)
    except RunNotFound:
        raise Http404("No such run") from None
    detail = run_detail(run)
    may_operate = user_may_operate_run(request.user, run) and request.user.is_staff
    return render(request, "runs/run_page.html", {
        "d": detail, "run": run, "role": role_of(request.user),
        "stream_url": reverse("runs:run-stream", kwargs={"run_id": run.id}),
        "debug_url": f"/api/v1/flex/runs/{run.id}",
        "admin_url": reverse("admin:runs_run_change", args=[quote(run.id)]) if may_operate else "",
        "live": not run.is_terminal,
        "flex_enabled": bool(settings.FLEX_ENABLED),
    })
