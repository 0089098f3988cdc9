"""Runs: the run itself, its immutable plan versions, node executions, the
per-run event log and the audit trail.

The Run table is also the work queue: a worker claims a run by taking its
lease (owner, expiry, fencing token). See `runs.engine.lease`.
"""
from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Iterable

from django.conf import settings
from django.db import models

from flexagents.ids import new_run_id


class RunStatus(models.TextChoices):
    QUEUED = "queued"
    PLANNING = "planning"
    RUNNING = "running"
    AWAITING_HITL = "awaiting_hitl"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})
WAITING_STATUSES = frozenset({RunStatus.AWAITING_HITL, RunStatus.PAUSED})

# The state machine. `runs.transitions.run_transition` is the only writer of
# `Run.status` and refuses any move that is not listed here (staying in a
# status is not a move: it writes no status).
RUN_TRANSITIONS: dict[str, frozenset[str]] = {
    RunStatus.QUEUED: frozenset({RunStatus.PLANNING, RunStatus.RUNNING, RunStatus.FAILED, RunStatus.CANCELLED}),
    RunStatus.PLANNING: frozenset({RunStatus.RUNNING, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.QUEUED,
                                   RunStatus.AWAITING_HITL, RunStatus.PAUSED, RunStatus.COMPLETED}),
    RunStatus.RUNNING: frozenset({RunStatus.AWAITING_HITL, RunStatus.PAUSED, RunStatus.COMPLETED,
                                  RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.QUEUED}),
    RunStatus.AWAITING_HITL: frozenset({RunStatus.QUEUED, RunStatus.FAILED, RunStatus.CANCELLED}),
    RunStatus.PAUSED: frozenset({RunStatus.QUEUED, RunStatus.FAILED, RunStatus.CANCELLED}),
    RunStatus.COMPLETED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.CANCELLED: frozenset(),
}


# On while `runs.transitions` writes a status; the ORM refuses status writes
# otherwise (`StatusGuardedQuerySet`, `StatusGuardedModel.save`).
STATUS_WRITER: ContextVar[bool] = ContextVar("runs_status_writer", default=False)


class StatusWriteRefused(RuntimeError):
    """A status field was written outside `runs.transitions`."""


def _refuse_status_write(model: type[models.Model]) -> None:
    if not STATUS_WRITER.get():
        raise StatusWriteRefused(f"{model.__name__}.status is written only by runs.transitions")


class StatusGuardedQuerySet(models.QuerySet):  # type: ignore[type-arg]
    """`update()` / `bulk_update()` of `status` only inside `runs.transitions`."""

    def update(self, **kwargs: Any) -> int:
        if "status" in kwargs:
            _refuse_status_write(self.model)
        return super().update(**kwargs)

    def bulk_update(self, objs: Iterable[Any], fields: Iterable[str], batch_size: int | None = None) -> int:
        fields = list(fields)
        if "status" in fields:
            _refuse_status_write(self.model)
        return super().bulk_update(objs, fields, batch_size=batch_size)


class StatusGuardedModel(models.Model):
    """`save()` of an existing row refuses a changed status outside
    `runs.transitions` (creating a row in any status is not a transition)."""

    class Meta:
        abstract = True

    @classmethod
    def from_db(cls, db: Any, field_names: Any, values: Any) -> Any:
        instance = super().from_db(db, field_names, values)
        instance._loaded_status = instance.__dict__.get("status")
        return instance

    def refresh_from_db(self, *args: Any, **kwargs: Any) -> None:
        super().refresh_from_db(*args, **kwargs)
        self._loaded_status = self.__dict__.get("status")

    def save(self, *args: Any, **kwargs: Any) -> None:
        update_fields = kwargs.get("update_fields")
        if (not self._state.adding and not kwargs.get("force_insert")
                and (update_fields is None or "status" in update_fields)
                and self.__dict__.get("status") != getattr(self, "_loaded_status", self.__dict__.get("status"))):
            _refuse_status_write(type(self))
        super().save(*args, **kwargs)
        self._loaded_status = self.__dict__.get("status")


class Run(StatusGuardedModel):
    id = models.CharField(primary_key=True, max_length=40, default=new_run_id, editable=False)
    status = models.CharField(max_length=20, choices=RunStatus.choices, default=RunStatus.QUEUED)
    objective = models.TextField()
    # The envelope as submitted (real values: capabilities need them). Every
    # reader that shows it to a person goes through `flexagents.redaction`.
    envelope = models.JSONField()
    thread_id = models.CharField(max_length=200, blank=True, default="")
    brief_id = models.CharField(max_length=200, blank=True, default="")
    correlation_id = models.CharField(max_length=200, blank=True, default="")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="flex_runs")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    # Current plan version: the optimistic-concurrency token of resume.
    plan_version = models.PositiveIntegerField(default=0)
    # Highest event seq written for this run; the next event takes last_seq + 1
    # under the run's row lock, so seq has no gaps and no repeats.
    last_seq = models.PositiveIntegerField(default=0)

    # Lease (the run table is the queue). lease_token grows on every claim and
    # every write by a worker is conditional on it (the fence).
    lease_owner = models.CharField(max_length=120, blank=True, default="")
    lease_token = models.PositiveBigIntegerField(default=0)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # Not before this time (a short back-off after a crash takeover).
    available_at = models.DateTimeField(null=True, blank=True)

    # The latest snapshot: facet values, their provenance and the pending node
    # ids, rewritten in the same transaction as each node's result.
    facets = models.JSONField(default=dict, blank=True)
    provenance = models.JSONField(default=dict, blank=True)
    pending_node_ids = models.JSONField(default=list, blank=True)
    has_snapshot = models.BooleanField(default=False)

    output = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    pause_reason = models.TextField(blank=True, default="")

    objects = StatusGuardedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The queue: claimable runs by status and availability.
            models.Index(fields=["status", "available_at"], name="run_queue_idx"),
            # The sweeper: leases that expired.
            models.Index(fields=["lease_expires_at"], name="run_lease_idx"),
            models.Index(fields=["thread_id"], name="run_thread_idx"),
            models.Index(fields=["brief_id"], name="run_brief_idx"),
            models.Index(fields=["-created_at"], name="run_created_idx"),
        ]
        permissions = [
            ("operate_run", "Can resume, answer and cancel a run"),
        ]

    def __str__(self) -> str:
        return self.id

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def is_waiting(self) -> bool:
        return self.status in WAITING_STATUSES

    @property
    def channel(self) -> str:
        return f"run-{self.id}"


class PlanVersion(models.Model):
    """An immutable snapshot of the plan graph: written once, never updated."""

    class Reason(models.TextChoices):
        INITIAL = "initial"
        RESUME = "resume"
        REPLAN = "replan"
        HITL = "hitl"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="plan_versions")
    version = models.PositiveIntegerField()
    reason = models.CharField(max_length=20, choices=Reason.choices)
    trigger = models.JSONField(default=dict, blank=True)
    graph = models.JSONField()
    node_statuses = models.JSONField(default=dict, blank=True)
    pending_node_ids = models.JSONField(default=list, blank=True)
    schema_hash = models.CharField(max_length=80, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "version"]
        constraints = [
            # Two concurrent resumes cannot both record version N+1.
            models.UniqueConstraint(fields=["run", "version"], name="plan_version_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.run_id} v{self.version}"


class NodeStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    AWAITING_HITL = "awaiting_hitl"
    SKIPPED = "skipped"


# Node moves (`runs.transitions.nodes_update` is their only writer). running
# -> running is a new attempt; completed/failed/awaiting_hitl -> pending is a
# node done again after a resume (replan, approved retry).
NODE_TRANSITIONS: dict[str, frozenset[str]] = {
    NodeStatus.PENDING: frozenset({NodeStatus.RUNNING, NodeStatus.SKIPPED}),
    NodeStatus.RUNNING: frozenset({NodeStatus.RUNNING, NodeStatus.COMPLETED, NodeStatus.FAILED, NodeStatus.PENDING,
                                   NodeStatus.AWAITING_HITL}),
    NodeStatus.AWAITING_HITL: frozenset({NodeStatus.PENDING, NodeStatus.FAILED}),
    NodeStatus.COMPLETED: frozenset({NodeStatus.PENDING}),
    NodeStatus.FAILED: frozenset({NodeStatus.PENDING}),
    NodeStatus.SKIPPED: frozenset({NodeStatus.PENDING}),
}


class NodeRun(StatusGuardedModel):
    """One node of a run's plan and what happened when it executed."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="node_runs")
    node_id = models.CharField(max_length=120)
    capability_id = models.CharField(max_length=200)
    kind = models.CharField(max_length=40)
    status = models.CharField(max_length=20, choices=NodeStatus.choices, default=NodeStatus.PENDING)
    # Attempts are counted here before the capability is called, so a worker
    # that dies mid-call still used an attempt.
    attempts = models.PositiveIntegerField(default=0)
    crash_attempts = models.PositiveIntegerField(default=0)
    plan_version = models.PositiveIntegerField(default=1)
    position = models.PositiveIntegerField(default=0)
    input = models.JSONField(null=True, blank=True)
    output = models.JSONField(null=True, blank=True)
    validation_errors = models.JSONField(default=list, blank=True)
    error = models.JSONField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    # Number of times a result was committed; the fence keeps it at most 1.
    commits = models.PositiveIntegerField(default=0)
    # A language model's usage, one entry per attempt that called one:
    # [{"attempt", "model", "promptTokens", "completionTokens", "callMs"}].
    usage = models.JSONField(default=list, blank=True)

    objects = StatusGuardedQuerySet.as_manager()

    class Meta:
        ordering = ["run", "position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["run", "node_id"], name="node_run_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.run_id}/{self.node_id}"


class RunEvent(models.Model):
    """The append-only, per-run numbered event log: SSE source, replay source,
    history timeline and audit trail in one table."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveIntegerField()
    type = models.CharField(max_length=40)
    node_id = models.CharField(max_length=120, blank=True, default="")
    plan_version = models.PositiveIntegerField(default=0)
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["run", "seq"]
        constraints = [
            # The promise "no repeats" is enforced by the database too.
            models.UniqueConstraint(fields=["run", "seq"], name="run_event_seq_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.run_id}:{self.seq} {self.type}"

    @property
    def event_id(self) -> str:
        return f"{self.run_id}:{self.seq}"


class AuditEntry(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="audit_entries")
    action = models.CharField(max_length=60)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="flex_audit_entries")
    actor_display = models.CharField(max_length=200, blank=True, default="")
    plan_version = models.PositiveIntegerField(default=0)
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "created_at", "id"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.run_id} {self.action}"


class StreamTicket(models.Model):
    """A short-lived, single-use permission to open one run's event stream
    (API.md, "Stream tickets"): what a browser's `EventSource`, which cannot
    send `Authorization`, puts in the URL instead of the long-lived token.

    Only the SHA-256 of the ticket is stored: a ticket is 256 random bits, so
    a plain hash is enough to make a leaked table useless, and lookups stay an
    index hit. `used_at` is set by a conditional UPDATE, so of two requests
    racing with one ticket exactly one gets the stream.
    """

    digest = models.CharField(max_length=64, unique=True)  # unique: the lookup key
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="stream_tickets")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="flex_stream_tickets")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)  # indexed: expired rows are swept by age
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"ticket for {self.run_id} ({self.user_id})"


class WorkerHeartbeat(models.Model):
    """A worker's "I am alive": written by its loop (throttled), read by
    `/api/ready` and the metrics (runs/ops.py). Rows of stopped workers simply go stale and
    are deleted a day later by the next heartbeat of any worker."""

    worker_id = models.CharField(max_length=120, unique=True)
    started_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()

    class Meta:
        indexes = [
            # "Is any worker fresh?" reads the newest heartbeat.
            models.Index(fields=["-last_seen_at"], name="worker_heartbeat_seen_idx"),
        ]

    def __str__(self) -> str:
        return self.worker_id
