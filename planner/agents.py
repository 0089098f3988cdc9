"""Agents: registration, heartbeats and liveness (API.md, "Agents").

The API layer checks the body's shape; these functions check what it means
(facets exist, ids are free) and write the registry (`planner.models`) in one
transaction that also bumps `CatalogVersion`, so every process sees the new
catalog (`planner.registry`).

Liveness: an agent silent for 3 x its `heartbeatSeconds` is marked inactive
by `agents_mark_silent_inactive`, which every worker runs with its sweep; a
heartbeat (or a re-registration) makes it active again.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from flexagents.errors import CapabilityConflict, NotFound, UnknownFacet
from planner.facets import get_catalog
from planner.models import Agent, AgentCapability, AgentStatus, CatalogVersion
from planner.registry import builtin_registry, human_capability_classes, invalidate_external

logger = logging.getLogger("planner.agents")

# An agent is inactive after this many heartbeat intervals of silence.
SILENCE_FACTOR = 3


@dataclass(frozen=True)
class CapabilitySpec:
    capability_id: str
    display_name: str
    description: str
    kind: str
    agent_type: str
    input_facets: list[str]
    optional_input_facets: list[str]
    output_facets: list[str]
    version: str

    @classmethod
    def from_body(cls, item: dict[str, Any]) -> CapabilitySpec:
        return cls(capability_id=item["capabilityId"], display_name=item.get("displayName", ""),
                   description=item.get("description", ""), kind=item["kind"],
                   agent_type=item.get("agentType", "ai"), input_facets=list(item.get("inputFacets", [])),
                   optional_input_facets=list(item.get("optionalInputFacets", [])),
                   output_facets=list(item["outputFacets"]), version=item.get("version", ""))


def bump_catalog_version() -> None:
    """In the caller's transaction; other processes rebuild their catalog."""
    if not CatalogVersion.objects.filter(pk=1).update(version=F("version") + 1):
        CatalogVersion.objects.get_or_create(pk=1, defaults={"version": 1})
    transaction.on_commit(invalidate_external)


def capability_payload(row: AgentCapability, *, agent_active: bool) -> dict[str, Any]:
    return {"capabilityId": row.capability_id, "displayName": row.display_name, "description": row.description,
            "kind": row.kind, "agentType": row.agent_type, "inputFacets": list(row.input_facets),
            "optionalInputFacets": list(row.optional_input_facets), "outputFacets": list(row.output_facets),
            "version": row.version,
            "status": AgentStatus.ACTIVE if agent_active and row.status == AgentStatus.ACTIVE else AgentStatus.INACTIVE}


def agent_payload(agent: Agent, *, with_capabilities: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "agentId": agent.id, "displayName": agent.display_name, "status": agent.status,
        "heartbeatSeconds": agent.heartbeat_seconds, "maxConcurrency": agent.max_concurrency,
        "lastHeartbeatAt": agent.last_heartbeat_at, "owner": agent.owner.get_username() if agent.owner_id else None,
    }
    if with_capabilities:
        active = agent.status == AgentStatus.ACTIVE
        body["capabilities"] = [capability_payload(row, agent_active=active) for row in agent.capabilities.all()]
    return body


def _check_facets(specs: list[CapabilitySpec]) -> None:
    catalog = get_catalog()
    unknown: list[dict[str, str]] = []
    for index, spec in enumerate(specs):
        for key, names in (("inputFacets", spec.input_facets), ("optionalInputFacets", spec.optional_input_facets),
                           ("outputFacets", spec.output_facets)):
            for position, name in enumerate(names):
                if name not in catalog:
                    unknown.append({"path": f"/capabilities/{index}/{key}/{position}", "facet": name})
    if unknown:
        raise UnknownFacet(f"Unknown facet{'s' if len(unknown) > 1 else ''}: "
                           f"{', '.join(sorted({u['facet'] for u in unknown}))}.",
                           details={"unknown": unknown, "known": sorted(catalog)})


def _check_conflicts(agent_id: str, specs: list[CapabilitySpec]) -> None:
    ids = [spec.capability_id for spec in specs]
    duplicates = sorted({cid for cid in ids if ids.count(cid) > 1})
    if duplicates:
        raise CapabilityConflict(f"Capability ids are repeated in the body: {', '.join(duplicates)}.",
                                 details={"capabilityIds": duplicates, "owner": "this request"})
    builtin = set(builtin_registry().ids()) | {cls.capability_id for cls in human_capability_classes()}
    taken = sorted(cid for cid in ids if cid in builtin)
    if taken:
        raise CapabilityConflict(f"Capability ids belong to built-in capabilities: {', '.join(taken)}.",
                                 details={"capabilityIds": taken, "owner": "built-in"})
    others = dict(AgentCapability.objects.filter(capability_id__in=ids).exclude(agent_id=agent_id)
                  .values_list("capability_id", "agent_id"))
    if others:
        raise CapabilityConflict(f"Capability ids belong to another agent: {', '.join(sorted(others))}.",
                                 details={"capabilityIds": sorted(others), "owner": "another agent"})


def agent_register(*, user: Any, agent_id: str, display_name: str, heartbeat_seconds: int, max_concurrency: int,
                   capabilities: list[dict[str, Any]]) -> Agent:
    """Create or re-register `agent_id` for `user` with exactly `capabilities`
    (a re-registration replaces the set). An agent id owned by another user
    is a conflict (`capability_conflict`, details.owner "another user")."""
    specs = [CapabilitySpec.from_body(item) for item in capabilities]
    _check_facets(specs)
    now = timezone.now()
    with transaction.atomic():
        agent = Agent.objects.select_for_update().filter(pk=agent_id).first()
        if agent is not None and agent.owner_id != user.pk:
            raise CapabilityConflict(f"The agent id {agent_id!r} is registered by another user.",
                                     details={"agentId": agent_id, "owner": "another user"})
        _check_conflicts(agent_id, specs)
        if agent is None:
            agent = Agent(id=agent_id, owner=user, registered_at=now)
        agent.display_name = display_name
        agent.heartbeat_seconds = heartbeat_seconds
        agent.max_concurrency = max_concurrency
        agent.last_heartbeat_at = now
        agent.status = AgentStatus.ACTIVE
        agent.registered_at = now
        agent.save()
        agent.capabilities.exclude(capability_id__in=[s.capability_id for s in specs]).delete()
        for spec in specs:
            AgentCapability.objects.update_or_create(capability_id=spec.capability_id, defaults={
                "agent": agent, "display_name": spec.display_name, "description": spec.description,
                "kind": spec.kind, "agent_type": spec.agent_type, "input_facets": spec.input_facets,
                "optional_input_facets": spec.optional_input_facets, "output_facets": spec.output_facets,
                "version": spec.version, "status": AgentStatus.ACTIVE})
        bump_catalog_version()
    invalidate_external()
    logger.info("agent registered", extra={"agent_id": agent_id, "capabilities": [s.capability_id for s in specs]})
    return agent


def agent_get_for_user(*, user: Any, agent_id: str) -> Agent:
    """The agent, if `user` owns it (or is a superuser); else 404 (never reveal existence)."""
    agent = Agent.objects.select_related("owner").filter(pk=agent_id).first()
    if agent is None or not (agent.owner_id == user.pk or user.is_superuser):
        raise NotFound("No such agent.", code="agent_not_found")
    return agent


def agent_heartbeat(*, user: Any, agent_id: str) -> Agent:
    """Record that the agent is alive; an inactive agent becomes active again."""
    agent = agent_get_for_user(user=user, agent_id=agent_id)
    now = timezone.now()
    with transaction.atomic():
        Agent.objects.filter(pk=agent.pk).update(last_heartbeat_at=now)
        if agent.status != AgentStatus.ACTIVE:
            Agent.objects.filter(pk=agent.pk).update(status=AgentStatus.ACTIVE)
            bump_catalog_version()
            logger.info("agent active again", extra={"agent_id": agent.pk})
    if agent.status != AgentStatus.ACTIVE:
        invalidate_external()
    agent.last_heartbeat_at = now
    agent.status = AgentStatus.ACTIVE
    return agent


def agents_mark_silent_inactive(*, now: datetime | None = None) -> list[str]:
    """Mark every active agent silent for 3 x its heartbeat interval inactive;
    returns their ids. Conditional updates: two sweepers never both mark one."""
    now = now or timezone.now()
    candidates = list(Agent.objects.filter(status=AgentStatus.ACTIVE)
                      .values_list("id", "heartbeat_seconds", "last_heartbeat_at"))
    marked: list[str] = []
    with transaction.atomic():
        for agent_id, interval, last in candidates:
            cutoff = now - timedelta(seconds=SILENCE_FACTOR * interval)
            if last >= cutoff:
                continue
            if Agent.objects.filter(pk=agent_id, status=AgentStatus.ACTIVE, last_heartbeat_at__lt=cutoff).update(
                    status=AgentStatus.INACTIVE):
                marked.append(agent_id)
        if marked:
            bump_catalog_version()
    if marked:
        invalidate_external()
        logger.warning("agents inactive (no heartbeat)", extra={"agent_ids": marked})
    return marked


def inactive_capability_ids() -> list[str]:
    """Capabilities whose agent (or own status) is inactive."""
    return list(AgentCapability.objects.exclude(status=AgentStatus.ACTIVE, agent__status=AgentStatus.ACTIVE)
                .values_list("capability_id", flat=True))


def agent_capability_ids(agent_id: str) -> list[str]:
    return list(AgentCapability.objects.filter(agent_id=agent_id).values_list("capability_id", flat=True))


def agents_list(*, user: Any, all_agents: bool) -> list[Agent]:
    """Agents `user` may see: every one for operators/support (`all_agents`), else their own."""
    qs = Agent.objects.select_related("owner").prefetch_related("capabilities").order_by("id")
    if not all_agents:
        qs = qs.filter(owner_id=user.pk)
    return list(qs)
