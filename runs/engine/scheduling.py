"""Which nodes of a plan can run next. Pure functions over plain data."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

DONE = "completed"
SKIPPED = "skipped"


@dataclass(frozen=True)
class NodeState:
    id: str
    status: str
    depends_on: tuple[str, ...]


def ready_nodes(nodes: Sequence[NodeState]) -> list[str]:
    """Pending nodes whose every dependency is completed, in plan order."""
    status = {n.id: n.status for n in nodes}
    return [
        n.id for n in nodes
        if n.status == "pending" and all(status.get(dep) in (DONE, SKIPPED) for dep in n.depends_on)
    ]


def is_finished(nodes: Iterable[NodeState]) -> bool:
    return all(n.status in (DONE, SKIPPED) for n in nodes)


def pending_node_ids(nodes: Iterable[NodeState]) -> list[str]:
    return [n.id for n in nodes if n.status not in (DONE, SKIPPED)]


def node_states(graph_nodes: Sequence[Mapping[str, Any]], statuses: Mapping[str, str]) -> list[NodeState]:
    """Build NodeStates from a plan graph's node dicts and a status map."""
    return [NodeState(id=n["id"], status=statuses.get(n["id"], "pending"), depends_on=tuple(n.get("dependsOn", ())))
            for n in graph_nodes]


def pending_ids(graph_nodes: Sequence[Mapping[str, Any]], statuses: Mapping[str, str]) -> list[str]:
    """`pending_node_ids(node_states(graph_nodes, statuses))` without building
    the states (the engine computes it at every commit)."""
    return [n["id"] for n in graph_nodes if statuses.get(n["id"], "pending") not in (DONE, SKIPPED)]


def ready_ids(graph_nodes: Sequence[Mapping[str, Any]], statuses: Mapping[str, str]) -> list[str]:
    """`ready_nodes(node_states(graph_nodes, statuses))` without building the
    states (the engine asks after every completed node)."""
    ids = {n["id"] for n in graph_nodes}
    return [
        n["id"] for n in graph_nodes
        if statuses.get(n["id"], "pending") == "pending"
        and all((statuses.get(dep, "pending") if dep in ids else None) in (DONE, SKIPPED)
                for dep in n.get("dependsOn", ()))
    ]


def finished(graph_nodes: Sequence[Mapping[str, Any]], statuses: Mapping[str, str]) -> bool:
    """`is_finished(node_states(graph_nodes, statuses))` without building the states."""
    return all(statuses.get(n["id"], "pending") in (DONE, SKIPPED) for n in graph_nodes)
