"""Planning a running run again (docs/planning.md, "Replanning").

`plan_again` is the one computation behind every replan — a `replan`
policy, a node failed for good under one, a HITL follow-up, an unmet goal,
a capability gone inactive. It reads rows and calls the planner, and writes
nothing: the engine (`runs.engine.policies.replan`) and the resume
(`runs.services`) put its result into their own transaction.

1. The nodes to redo: the ones named, everything downstream of them, and
   unfinished nodes of an excluded capability.
2. Kept: every other completed work node. The planner gets them as they
   ran (same id, contract, wiring) and counts their facets as produced, so
   they never run again (their rows, attempts and results stay).
3. The planner runs without the excluded capabilities. A capability that
   runs again keeps its node id; a new node never takes an id the run has
   used (the failed node of an excluded capability keeps its row and its
   history under its own id).
4. The result: the new graph, the node rows to reset to `pending` or to
   create, and the rows the new plan leaves behind — a running or waiting
   one becomes `failed` (`replaced_by_replan`), a pending one `skipped`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from django.utils import timezone

from planner.planner import OUTPUT_NODE_ID, Replan, build_plan
from runs.models import NodeRun, NodeStatus

DONE = (NodeStatus.COMPLETED, NodeStatus.SKIPPED)


@dataclass
class ReplanOutcome:
    graph: dict[str, Any] | None
    diagnostics: list[dict[str, Any]]
    considered: list[str]
    # node id -> field changes for existing rows (status resets, abandonment)
    node_changes: dict[str, dict[str, Any]] = field(default_factory=dict)
    new_rows: list[NodeRun] = field(default_factory=list)
    # status of every node of the new graph once the changes are applied
    statuses: dict[str, str] = field(default_factory=dict)
    kept: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)  # node ids not in the previous graph
    removed: list[str] = field(default_factory=list)  # node ids of the previous graph not in the new one
    redo: list[str] = field(default_factory=list)

    @property
    def rejected(self) -> bool:
        return self.graph is None

    @property
    def pending(self) -> list[str]:
        assert self.graph is not None
        return [n["id"] for n in self.graph["nodes"] if self.statuses.get(n["id"]) not in DONE]


def downstream(graph: dict[str, Any], node_ids: Iterable[str]) -> set[str]:
    """Every node that depends, directly or not, on one of `node_ids`."""
    children: dict[str, set[str]] = {}
    for node in graph.get("nodes", []):
        for dep in node.get("dependsOn", []):
            children.setdefault(dep, set()).add(node["id"])
    seen: set[str] = set()
    stack = list(node_ids)
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return seen


def plan_again(*, run_id: str, envelope: dict[str, Any], graph: dict[str, Any], rows: dict[str, NodeRun],
               statuses: dict[str, str], version: int, exclude: Iterable[str] = (),
               redo: Iterable[str] = ()) -> ReplanOutcome:
    """Plan the run again as version `version` (see the module docstring).
    `statuses` are the node statuses as the caller sees them (its own
    uncommitted changes included)."""
    excluded = frozenset(exclude)
    nodes = [n for n in graph.get("nodes", []) if n["id"] != graph.get("outputNodeId", OUTPUT_NODE_ID)]
    named = set(redo)
    named |= {n["id"] for n in nodes if n["capabilityId"] in excluded and statuses.get(n["id"]) != NodeStatus.COMPLETED}
    redo_all = named | downstream(graph, named)
    keep = tuple(n for n in nodes if statuses.get(n["id"]) == NodeStatus.COMPLETED and n["id"] not in redo_all)
    kept_ids = {n["id"] for n in keep}
    reuse = {n["capabilityId"]: n["id"] for n in graph.get("nodes", [])
             if n["id"] not in kept_ids and n["capabilityId"] not in excluded and n["id"] in rows}
    result = build_plan(envelope, replan=Replan(keep=keep, exclude=excluded, node_ids=reuse,
                                                taken_ids=frozenset(rows)))
    outcome = ReplanOutcome(graph=None, diagnostics=result.diagnostics, considered=result.considered,
                            kept=sorted(kept_ids), redo=sorted(redo_all))
    if result.graph is None:
        return outcome
    new_graph = result.graph.to_dict()
    outcome.graph = new_graph
    previous_ids = [n["id"] for n in graph.get("nodes", [])]
    new_ids = [n["id"] for n in new_graph["nodes"]]
    outcome.added = [node_id for node_id in new_ids if node_id not in previous_ids]
    outcome.removed = [node_id for node_id in previous_ids if node_id not in new_ids]
    for position, node in enumerate(new_graph["nodes"]):
        node_id = node["id"]
        if node_id in kept_ids:
            outcome.statuses[node_id] = NodeStatus.COMPLETED
            continue
        outcome.statuses[node_id] = NodeStatus.PENDING
        if node_id in rows:
            if statuses.get(node_id, rows[node_id].status) != NodeStatus.PENDING:
                outcome.node_changes[node_id] = {"status": NodeStatus.PENDING}
        else:
            outcome.new_rows.append(NodeRun(run_id=run_id, node_id=node_id, capability_id=node["capabilityId"],
                                            kind=node["kind"], position=len(rows) + position, plan_version=version))
    now = timezone.now()
    for node_id in outcome.removed:
        status = statuses.get(node_id, rows[node_id].status if node_id in rows else None)
        if node_id not in rows:
            continue
        if status in (NodeStatus.RUNNING, NodeStatus.AWAITING_HITL):
            outcome.node_changes[node_id] = {
                "status": NodeStatus.FAILED, "completed_at": now,
                "error": {"code": "replaced_by_replan", "message": f"Plan version {version} replaced this node."}}
        elif status == NodeStatus.PENDING:
            outcome.node_changes[node_id] = {"status": NodeStatus.SKIPPED}
    return outcome


def plan_nodes_payload(outcome: ReplanOutcome) -> list[dict[str, Any]]:
    """`plan_updated.nodes` of a replan: every node of the new graph, its
    status, and what it is."""
    assert outcome.graph is not None
    return [{"id": n["id"], "status": outcome.statuses.get(n["id"], NodeStatus.PENDING),
             "capabilityId": n["capabilityId"], "kind": n["kind"], "label": n.get("label", ""),
             "inputFacets": n["inputFacets"], "outputFacets": n["outputFacets"],
             "dependsOn": n.get("dependsOn", []), "rationale": n.get("rationale", ""),
             "kept": n["id"] in outcome.kept}
            for n in outcome.graph["nodes"]]
