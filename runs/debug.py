"""The debug view of a run (`GET /api/v1/flex/runs/{runId}`, API.md).

Everything support needs to understand a run without touching the database:
the run and its (redacted) envelope, policies, every plan version, the nodes
with their inputs and outputs, facet provenance, the HITL dialogue, the
latest snapshot, the output, the latest events and the audit trail.

Query budget: a fixed number of queries whatever the run's size (one per
table, never one per node, version, request or event), so a run of 200 nodes,
20 plan versions and 5,000 events costs what a run of three nodes costs.
Only the latest `LATEST_EVENTS` events are loaded; the rest are counted.

Everything leaves through `flexagents.redaction`: sensitive keys at any
depth, credentials inside free text (errors, reasons, instructions), and the
`x-sensitive` fields of facet values (the catalog's schemas).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.contrib.auth import get_user_model

from flexagents.redaction import FREE_TEXT_KEYS, is_sensitive_key, redact, redact_facets
from hitl.models import HitlRequest, HitlResponse
from hitl.services import hitl_request_payload, hitl_response_payload
from planner.facets import get_catalog
from runs.events import event_frame, iso, redact_trigger
from runs.models import AuditEntry, NodeRun, PlanVersion, Run, RunEvent

LATEST_EVENTS = 50


def _iso(value: Any) -> str | None:
    return iso(value) if value else None


def _facet_schemas() -> dict[str, dict[str, Any]]:
    return {name: facet.schema for name, facet in get_catalog().items()}


def _scrub(value: Any) -> Any:
    return redact(value, text_keys=FREE_TEXT_KEYS)


def redact_facet_values(values: Any, schemas: dict[str, dict[str, Any]]) -> Any:
    """Facet name → value, each value redacted with its facet's schema. The
    output node's `output` (the caller's contract) is itself facet-keyed."""
    if not isinstance(values, dict):
        return _scrub(values)
    out = redact_facets(values, schemas)
    inner = values.get("output")
    if isinstance(inner, dict) and "output" not in schemas and not is_sensitive_key("output"):
        out["output"] = redact_facets(inner, schemas)
    return out


def redact_envelope(envelope: Any, schemas: dict[str, dict[str, Any]]) -> Any:
    """The stored envelope keeps real values; this is the copy people see."""
    if not isinstance(envelope, dict):
        return _scrub(envelope)
    out = _scrub({k: v for k, v in envelope.items() if k != "inputs"})
    if "inputs" in envelope:
        out["inputs"] = redact_facet_values(envelope["inputs"], schemas)
    return out


def redact_output(output: Any, envelope: Any, schemas: dict[str, dict[str, Any]]) -> Any:
    if output is None:
        return None
    redacted = redact_facet_values(output, schemas)
    # The caller's own output schema may mark fields x-sensitive too.
    contract = envelope.get("outputContract", {}) if isinstance(envelope, dict) else {}
    if isinstance(contract, dict) and contract.get("mode") == "json_schema" and isinstance(contract.get("schema"), dict):
        redacted = redact(redacted, schema=contract["schema"])
    return redacted


def _redact_bundle(bundle: Any, schemas: dict[str, dict[str, Any]]) -> Any:
    """A node's stored input (its ContextBundle as a dict)."""
    if not isinstance(bundle, dict):
        return _scrub(bundle)
    out = _scrub({k: v for k, v in bundle.items() if k != "facets"})
    if "facets" in bundle:
        out["facets"] = redact_facet_values(bundle["facets"], schemas)
    if isinstance(bundle.get("goalFeedback"), list):
        # The facet values a goal judged (docs/planning.md).
        out["goalFeedback"] = [_scrub(redact_trigger(item)) for item in bundle["goalFeedback"]]
    return out


def _plan_version(pv: PlanVersion) -> dict[str, Any]:
    nodes = pv.graph.get("nodes", []) if isinstance(pv.graph, dict) else []
    return _scrub({
        "version": pv.version,
        "createdAt": _iso(pv.created_at),
        "reason": pv.reason,
        "trigger": redact_trigger(pv.trigger),
        "pendingNodeIds": pv.pending_node_ids,
        "nodeStatuses": pv.node_statuses,
        "nodes": [{"nodeId": n.get("id"), "capabilityId": n.get("capabilityId"), "kind": n.get("kind"),
                   "inputFacets": n.get("inputFacets", []), "outputFacets": n.get("outputFacets", []),
                   "dependsOn": n.get("dependsOn", []), "rationale": n.get("rationale", "")}
                  for n in nodes if isinstance(n, dict)],
        "schemaHash": pv.schema_hash,
    })


def _node(node: NodeRun, schemas: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "nodeId": node.node_id,
        "capabilityId": node.capability_id,
        "kind": node.kind,
        "status": node.status,
        "attempts": node.attempts,
        "crashAttempts": node.crash_attempts,
        "planVersion": node.plan_version,
        "input": _redact_bundle(node.input, schemas) if node.input is not None else None,
        "output": redact_facet_values(node.output, schemas) if node.output is not None else None,
        "validationErrors": _scrub(node.validation_errors),
        "error": _scrub(node.error),
        "startedAt": _iso(node.started_at),
        "completedAt": _iso(node.completed_at),
        "durationMs": node.duration_ms,
        "usage": _scrub(node.usage or []),
    }


def usage_summary(nodes: list[NodeRun], envelope: dict[str, Any]) -> dict[str, Any]:
    """The run's language-model usage: every attempt of every node summed,
    in all and per model, beside the budget (`constraints.maxTokens`)."""
    by_model: dict[str, dict[str, int]] = {}
    for node in nodes:
        for entry in node.usage or []:
            if not isinstance(entry, dict):
                continue
            model = by_model.setdefault(str(entry.get("model") or ""), {"promptTokens": 0, "completionTokens": 0,
                                                                       "calls": 0})
            model["promptTokens"] += int(entry.get("promptTokens") or 0)
            model["completionTokens"] += int(entry.get("completionTokens") or 0)
            model["calls"] += 1
    prompt = sum(m["promptTokens"] for m in by_model.values())
    completion = sum(m["completionTokens"] for m in by_model.values())
    constraints = envelope.get("constraints") if isinstance(envelope.get("constraints"), dict) else {}
    return _scrub({
        "promptTokens": prompt, "completionTokens": completion, "totalTokens": prompt + completion,
        "calls": sum(m["calls"] for m in by_model.values()),
        "maxTokens": (constraints or {}).get("maxTokens"),
        "byModel": [{"model": name, **counts} for name, counts in sorted(by_model.items())],
    })


def _audit(entry: AuditEntry) -> dict[str, Any]:
    return {
        "action": entry.action,
        "actor": entry.actor_display or (entry.actor.username if entry.actor else None),
        "actorId": str(entry.actor_id) if entry.actor_id else None,
        "planVersion": entry.plan_version,
        "at": _iso(entry.created_at),
        "details": _scrub(entry.details),
    }


def run_debug_view(*, run: Run) -> dict[str, Any]:
    """The debug body of API.md for a run the caller may view (fetched with
    `runs.selectors.run_get_for_user`). Ten queries, whatever the run's size."""
    schemas = _facet_schemas()
    envelope = run.envelope if isinstance(run.envelope, dict) else {}

    created_by = (get_user_model().objects.filter(pk=run.created_by_id).values_list("username", flat=True).first()
                  if run.created_by_id else None)
    versions = list(PlanVersion.objects.filter(run_id=run.id).order_by("version"))
    nodes = list(NodeRun.objects.filter(run_id=run.id).order_by("position", "id"))
    requests = list(HitlRequest.objects.filter(run_id=run.id).order_by("created_at", "id"))
    responses = list(HitlResponse.objects.filter(run_id=run.id).order_by("id"))
    event_count = RunEvent.objects.filter(run_id=run.id).count()
    # The latest events, newest first from the (run, seq) index, shown oldest first.
    latest = list(RunEvent.objects.filter(run_id=run.id).order_by("-seq")[:LATEST_EVENTS])[::-1]
    audit = list(AuditEntry.objects.filter(run_id=run.id).select_related("actor").order_by("created_at", "id"))
    facets, provenance = run.facet_snapshot()

    by_request: dict[str, list[HitlResponse]] = defaultdict(list)
    for response in responses:
        by_request[response.request_id].append(response)
    pending = next((r.id for r in requests if r.is_pending), None)

    return {
        "run": {
            "runId": run.id,
            "status": run.status,
            "objective": _scrub({"objective": run.objective})["objective"],
            "planVersion": run.plan_version,
            "threadId": run.thread_id or None,
            "briefId": run.brief_id or None,
            "correlationId": run.correlation_id or None,
            "createdAt": _iso(run.created_at),
            "updatedAt": _iso(run.updated_at),
            "completedAt": _iso(run.completed_at),
            "createdBy": created_by,
            "pendingRequestId": pending,
            "pauseReason": _scrub({"pauseReason": run.pause_reason})["pauseReason"] or None,
            "error": _scrub(run.error),
            "lastEventId": f"{run.id}:{run.last_seq}" if run.last_seq else None,
            "envelope": redact_envelope(envelope, schemas),
        },
        "policies": _scrub(envelope.get("policies", {})),
        "planVersions": [_plan_version(pv) for pv in versions],
        "nodes": [_node(node, schemas) for node in nodes],
        "usage": usage_summary(nodes, envelope),
        "facetProvenance": _scrub(provenance),
        "hitl": {
            "requests": [_scrub(hitl_request_payload(r, responses=by_request.get(r.id, []))) for r in requests],
            "responses": [_scrub(hitl_response_payload(r)) for r in responses],
        },
        "latestSnapshot": {
            "version": run.plan_version,
            "hasSnapshot": run.has_snapshot,
            "pendingNodeIds": run.pending_node_ids,
            "facets": redact_facet_values(facets, schemas),
        },
        "output": redact_output(run.output, envelope, schemas),
        "events": {"count": event_count, "latest": [event_frame(e) for e in latest]},
        "audit": [_audit(entry) for entry in audit],
    }

