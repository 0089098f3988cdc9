"""The engine's shared step types: what a worker knows about its claimed run
(`RunContext`), one transaction's worth of changes (`Step`), and the small
step builders every part of the engine uses (`start_node`, `fail`).

`runs.engine.loop` commits steps; `runs.engine.policies` adds to them. Both
import this module, and neither imports the other back.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from django.db import transaction
from django.utils import timezone

from flexagents.ids import new_task_id
from planner.registry import UnknownCapabilityId, get_registry
from runs import events as ev
from runs import notify
from runs.engine import scheduling
from runs.engine.lease import Claim
from runs.events import PendingEvent
from runs.models import NodeRun, NodeStatus, Run, RunStatus, Task
from runs.transitions import FacetWrite


@dataclass
class RunContext:
    """What the lease holder knows about its run. Only the lease holder writes
    nodes and facets, so this copy stays true while fenced commits succeed."""

    claim: Claim
    run: Run
    graph: dict[str, Any] = field(default_factory=dict)
    nodes: dict[str, NodeRun] = field(default_factory=dict)
    # Whether the run's row may hold manual policy triggers, as the last
    # commit's statement read it (the hot path reads it for free); True
    # when unknown, and the loop looks.
    triggers_pending: bool = True
    # Whether a clarification of the run was answered (read with the claim);
    # None when unknown, and `policies.clarifications_for` looks.
    clarifications: bool | None = None

    @property
    def envelope(self) -> dict[str, Any]:
        envelope: dict[str, Any] = self.run.envelope
        return envelope

    @property
    def max_retries(self) -> int:
        return int(self.envelope.get("constraints", {}).get("maxRetries", 2))

    def graph_node(self, node_id: str) -> dict[str, Any]:
        for node in self.graph.get("nodes", []):
            if node["id"] == node_id:
                found: dict[str, Any] = node
                return found
        raise KeyError(node_id)

    def states(self) -> list[scheduling.NodeState]:
        return scheduling.node_states(self.graph.get("nodes", []), {k: n.status for k, n in self.nodes.items()})


@dataclass
class Step:
    """One transaction's worth of changes, applied to memory only after commit."""

    events: list[PendingEvent] = field(default_factory=list)
    node_updates: dict[str, dict[str, Any]] = field(default_factory=dict)
    run_updates: dict[str, Any] = field(default_factory=dict)
    # Facet values a node produced, with provenance: stored once each (a
    # `RunFacet` row), never by rewriting the run's whole snapshot.
    facets: list[FacetWrite] = field(default_factory=list)
    status: str | None = None
    # Extra writes that must share the transaction (HITL request, task).
    writes: list[Callable[[], None]] = field(default_factory=list)
    # New rows of other tables (a plan's version and node rows): inserted with
    # the step, in its one statement on the hot path; their pks set then.
    inserts: list[Any] = field(default_factory=list)

    def event(self, event: PendingEvent) -> None:
        """Add an event made by one of the `runs.events.event_*` builders."""
        self.events.append(event)

    # Node changes written before `node_updates`, batch by batch: a replan
    # moves a node completed -> pending and the same step may start it
    # (pending -> running); each move must be allowed on its own.
    earlier_node_updates: list[dict[str, dict[str, Any]]] = field(default_factory=list)

    def update_node(self, node_id: str, **changes: Any) -> None:
        self.node_updates.setdefault(node_id, {}).update(changes)

    def barrier(self) -> None:
        """Later node changes are written after the ones made so far."""
        if self.node_updates:
            self.earlier_node_updates.append(self.node_updates)
            self.node_updates = {}

    def node_batches(self) -> list[dict[str, dict[str, Any]]]:
        return [*self.earlier_node_updates, self.node_updates]

    def statuses_over(self, statuses: dict[str, str]) -> dict[str, str]:
        """`statuses` with this step's node status changes applied."""
        out = dict(statuses)
        for batch in self.node_batches():
            for node_id, changes in batch.items():
                if "status" in changes:
                    out[node_id] = changes["status"]
        return out


class Halt(Exception):
    """The worker must stop working on this run (lost lease, cancelled, waiting)."""


def runs_outside(capability_id: str) -> tuple[bool, str]:
    """(is the capability done as a task, its agentType)."""
    try:
        cls = get_registry().get_class(capability_id)
    except UnknownCapabilityId:
        return False, "ai"
    return cls.is_external(), cls.agent_type


def start_node(ctx: RunContext, step: Step, node_id: str) -> None:
    """Count the attempt and announce it, in the step being committed.

    A node of an external capability (an agent's, a person's) is dispatched
    instead: a new `Task` row offered to whoever may claim it, and
    `node_dispatched`; its `node_start` comes when someone claims it."""
    node = ctx.nodes[node_id]
    attempt = node.attempts + 1
    external, agent_type = runs_outside(node.capability_id)
    if external:
        dispatch_node(ctx, step, node, attempt=attempt, agent_type=agent_type)
        return
    step.update_node(node_id, status=NodeStatus.RUNNING, attempts=attempt, started_at=timezone.now(),
                     plan_version=ctx.run.plan_version)
    step.event(ev.event_node_start(node_id=node_id, capability_id=node.capability_id, attempt=attempt))


def dispatch_node(ctx: RunContext, step: Step, node: NodeRun, *, attempt: int, agent_type: str) -> None:
    """Commit a node as a task (see runs/engine/tasks.py). The worker lets go
    of the run in this commit (`loop.commit`) when nothing else can run."""
    task_id = new_task_id()
    run_id = ctx.run.id
    plan_version = ctx.run.plan_version

    def write_task() -> None:
        # After the plan's own writes: the node row has its pk by now.
        Task.objects.create(id=task_id, run_id=run_id, node_run_id=node.pk, node_id=node.node_id,
                            capability_id=node.capability_id, agent_type=agent_type, attempt=attempt,
                            plan_version=plan_version)
        transaction.on_commit(notify.announce_tasks)

    step.writes.append(write_task)
    step.update_node(node.node_id, status=NodeStatus.DISPATCHED, attempts=attempt, started_at=None,
                     plan_version=plan_version)
    step.event(ev.event_node_dispatched(node_id=node.node_id, capability_id=node.capability_id, attempt=attempt,
                                        task_id=task_id))


def fail(step: Step, *, code: str, message: str, extra: dict[str, Any] | None = None) -> None:
    error = {"code": code, "message": message, **(extra or {})}
    step.run_updates["error"] = error
    step.status = RunStatus.FAILED
    step.event(ev.event_complete(status="failed", error=error))
