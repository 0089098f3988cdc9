"""What `flex run --follow` shows: the plan's nodes, their status, a count."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

STYLES = {"pending": "dim", "running": "yellow", "completed": "green", "failed": "red", "retrying": "magenta",
          "awaiting_hitl": "cyan", "dispatched": "blue", "skipped": "dim"}


@dataclass
class NodeState:
    node_id: str
    capability_id: str = ""
    kind: str = ""
    status: str = "pending"
    attempt: int = 0
    duration_ms: float | None = None


@dataclass
class RunView:
    run_id: str
    status: str = "queued"
    plan_version: int = 0
    nodes: dict[str, NodeState] = field(default_factory=dict)
    waiting_for: dict[str, Any] | None = None
    output: Any = None
    error: Any = None

    def node(self, node_id: str) -> NodeState:
        if node_id not in self.nodes:
            self.nodes[node_id] = NodeState(node_id)
        return self.nodes[node_id]

    @property
    def done(self) -> int:
        return sum(n.status in ("completed", "skipped") for n in self.nodes.values())

    def apply(self, event: dict[str, Any]) -> None:
        """Fold one event into the view."""
        kind, payload = event["type"], event.get("payload") or {}
        self.plan_version = event.get("planVersion") or self.plan_version
        if kind == "start":
            self.status = payload.get("status", "running")
        elif kind == "plan_generated":
            self.status = "running"
            for node in payload.get("nodes", []):
                state = self.node(node["id"])
                state.capability_id = node.get("capabilityId", "")
                state.kind = node.get("kind", "")
        elif kind == "plan_updated":
            for removed in payload.get("removedNodes") or []:  # a replan's new graph drops them
                self.nodes.pop(removed, None)
            for node in payload.get("nodes", []):
                state = self.node(node["id"])
                state.status = node.get("status") or state.status
                state.capability_id = node.get("capabilityId") or state.capability_id
                state.kind = node.get("kind") or state.kind
            self.status = "running"
            self.waiting_for = None
        elif kind == "node_start":
            state = self.node(payload["nodeId"])
            state.status, state.attempt = "running", payload.get("attempt", state.attempt)
            state.capability_id = payload.get("capabilityId") or state.capability_id
        elif kind == "node_dispatched":
            self.node(payload["nodeId"]).status = "dispatched"
        elif kind == "node_complete":
            state = self.node(payload["nodeId"])
            state.status, state.duration_ms = "completed", payload.get("durationMs")
            state.attempt = payload.get("attempt", state.attempt)
        elif kind == "node_error":
            self.node(payload["nodeId"]).status = "retrying" if payload.get("willRetry") else "failed"
        elif kind == "hitl_request":
            self.status, self.waiting_for = "awaiting_hitl", payload
            if payload.get("pendingNodeId"):
                self.node(payload["pendingNodeId"]).status = "awaiting_hitl"
        elif kind == "hitl_resolved":
            self.waiting_for = None
        elif kind == "complete":
            self.status = payload.get("status", "completed")
            self.output, self.error = payload.get("output"), payload.get("error")

    def progress(self) -> str:
        return f"{self.done}/{len(self.nodes)} nodes done"

    def render(self) -> Group:
        title = Text.assemble(("run ", "bold"), (self.run_id, "bold"), "  ",
                              (self.status, STYLES.get(self.status, "bold")),
                              f"  plan v{self.plan_version}  {self.progress()}")
        table = Table(show_edge=False, pad_edge=False)
        for column in ("node", "capability", "status", "attempt", "ms"):
            table.add_column(column, justify="right" if column in ("attempt", "ms") else "left")
        for node in self.nodes.values():
            table.add_row(node.node_id, node.capability_id, Text(node.status, STYLES.get(node.status, "")),
                          str(node.attempt or ""), "" if node.duration_ms is None else f"{node.duration_ms:.0f}")
        parts: list[Any] = [title, table]
        if self.waiting_for:
            request = self.waiting_for
            parts.append(Text(f"waiting for a person: {request.get('question', '')}\n"
                              f"  flex answer {request.get('requestId')} --approve | --reject | --option ID | --text ...",
                              style="cyan"))
        return Group(*parts)
