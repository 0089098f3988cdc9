"""The agent registry: agents outside the server and the capabilities they serve.

Built-in capabilities are code (`settings.FLEX_CAPABILITIES`); these rows are
the capabilities of agents that registered over HTTP
(`POST /api/v1/flex/agents/register`, `planner.agents`). `planner.registry`
merges both into one catalog. `CatalogVersion` is one row whose counter grows
whenever the registry changes (a registration, an agent going inactive or
coming back), so every process can tell cheaply that its cached catalog is
stale.
"""
from __future__ import annotations

from django.conf import settings
from django.db import models


class AgentStatus(models.TextChoices):
    ACTIVE = "active"
    INACTIVE = "inactive"


class Agent(models.Model):
    id = models.CharField(primary_key=True, max_length=120)
    display_name = models.CharField(max_length=200, blank=True, default="")
    # The user (role `agent`, or an operator) whose token registered it: only
    # that user may heartbeat it and act on its tasks.
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="flex_agents")
    heartbeat_seconds = models.PositiveIntegerField(default=15)
    max_concurrency = models.PositiveIntegerField(default=1)
    last_heartbeat_at = models.DateTimeField()
    status = models.CharField(max_length=20, choices=AgentStatus.choices, default=AgentStatus.ACTIVE)
    registered_at = models.DateTimeField()

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["status", "last_heartbeat_at"], name="agent_liveness_idx")]

    def __str__(self) -> str:
        return self.id


class AgentCapability(models.Model):
    """One capability an agent registered. Its id is unique in the catalog."""

    capability_id = models.CharField(primary_key=True, max_length=200)
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="capabilities")
    display_name = models.CharField(max_length=200, blank=True, default="")
    description = models.TextField(blank=True, default="")
    kind = models.CharField(max_length=40)
    agent_type = models.CharField(max_length=20, default="ai")
    input_facets = models.JSONField(default=list)
    optional_input_facets = models.JSONField(default=list)
    output_facets = models.JSONField(default=list)
    version = models.CharField(max_length=40, blank=True, default="")
    status = models.CharField(max_length=20, choices=AgentStatus.choices, default=AgentStatus.ACTIVE)

    class Meta:
        ordering = ["capability_id"]
        verbose_name_plural = "agent capabilities"

    def __str__(self) -> str:
        return self.capability_id


class CatalogVersion(models.Model):
    """A single row (pk 1): bumped in the transaction of every registry change."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    version = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"catalog v{self.version}"
