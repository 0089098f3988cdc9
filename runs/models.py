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

from flexagents.ids import new_run_id, new_task_id


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

    # The latest snapshot. `facets` and `provenance` hold what the run started
    # with (the envelope's inputs); what nodes produce is stored once per
    # facet in `RunFacet` rows, and the snapshot is the two together
    # (`facet_snapshot()`). The pending node ids are rewritten in the same
    # transaction as each node's result.
    facets = models.JSONField(default=dict, blank=True)
    provenance = models.JSONField(default=dict, blank=True)
    pending_node_ids = models.JSONField(default=list, blank=True)
    has_snapshot = models.BooleanField(default=False)

    output = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    pause_reason = models.TextField(blank=True, default="")
    # created_at + constraints.deadlineSeconds: past it, the sweep of every
    # worker fails the run (`deadline_exceeded`, runs.governance).
    deadline_at = models.DateTimeField(null=True, blank=True)
    # Manual policies triggered on an active run, applied by the worker that
    # drives it at its next step: [{"policyId", "note", "by", "at"}].
    manual_triggers = models.JSONField(default=list, blank=True)

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
            models.Index(fields=["deadline_at"], name="run_deadline_idx"),
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

    def facet_snapshot(self, rows: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """The run's facet values and their provenance: the inputs it started
        with, overlaid by the values its nodes produced (`RunFacet`), in the
        order each facet first appeared. `rows`: those `RunFacet` rows as
        (name, value, node id, capability id, plan version), oldest first,
        when the caller read them already."""
        facets: dict[str, Any] = dict(self.facets or {})
        provenance: dict[str, Any] = dict(self.provenance or {})
        if rows is None:
            rows = RunFacet.objects.filter(run_id=self.id).order_by("id").values_list(
                "name", "value", "node_id", "capability_id", "plan_version")
        for name, value, node_id, capability_id, plan_version in rows:
            facets[name] = value
            provenance[name] = {"nodeId": node_id, "capabilityId": capability_id, "planVersion": plan_version}
        return facets, provenance


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
    # Committed as a task for an agent or a person (runs.engine.tasks); no worker holds the run.
    DISPATCHED = "dispatched"


# Node moves (`runs.transitions.nodes_update` is their only writer). running
# -> running is a new attempt; completed/failed/awaiting_hitl -> pending is a
# node done again after a resume (replan, approved retry).
# dispatched -> dispatched is the task offered again (a new attempt: lease
# expired, retryable failure, invalid output).
NODE_TRANSITIONS: dict[str, frozenset[str]] = {
    NodeStatus.PENDING: frozenset({NodeStatus.RUNNING, NodeStatus.SKIPPED, NodeStatus.DISPATCHED}),
    NodeStatus.RUNNING: frozenset({NodeStatus.RUNNING, NodeStatus.COMPLETED, NodeStatus.FAILED, NodeStatus.PENDING,
                                   NodeStatus.AWAITING_HITL, NodeStatus.DISPATCHED}),
    NodeStatus.DISPATCHED: frozenset({NodeStatus.DISPATCHED, NodeStatus.COMPLETED, NodeStatus.FAILED,
                                      NodeStatus.PENDING, NodeStatus.AWAITING_HITL, NodeStatus.RUNNING}),
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


class RunFacet(models.Model):
    """One facet value a node produced, with its provenance: written in the
    node's step (an upsert by name: a node done again replaces it), so a step
    writes only its own output, never the run's whole snapshot. Read through
    `Run.facet_snapshot()`."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="facet_values")
    name = models.CharField(max_length=200)
    value = models.JSONField(null=True, blank=True)
    node_id = models.CharField(max_length=120, blank=True, default="")
    capability_id = models.CharField(max_length=200, blank=True, default="")
    plan_version = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["run", "id"]
        constraints = [
            models.UniqueConstraint(fields=["run", "name"], name="run_facet_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.run_id}/{self.name}"


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


# --- notifications (API.md, Governance: Notifications; docs/notifications.md) ---

NOTIFIABLE_EVENT_TYPES = ("hitl_request", "hitl_escalated", "hitl_resolved", "complete")
EMAILED_EVENT_TYPES = ("hitl_request", "hitl_escalated")


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: `whsec_` + base64 of 24 random bytes."""
    import base64
    import secrets

    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def default_event_types() -> list[str]:
    return list(NOTIFIABLE_EVENT_TYPES)


class WebhookSubscription(models.Model):
    """An endpoint that receives some run events, signed with its secret."""

    url = models.URLField(max_length=2000, help_text="https://… (http:// is allowed too); no redirects are followed")
    event_types = models.JSONField(default=default_event_types,
                                   help_text="Any of: " + ", ".join(NOTIFIABLE_EVENT_TYPES))
    secret = models.CharField(max_length=100, default=new_webhook_secret, editable=False)
    active = models.BooleanField(default=True)
    description = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.url} ({', '.join(self.event_types)})"


class NotificationStatus(models.TextChoices):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class NotificationChannel(models.TextChoices):
    WEBHOOK = "webhook"
    EMAIL = "email"


class Notification(models.Model):
    """The outbox: one row per (subscription, event) or per emailed event,
    written in the same transaction as the event (runs.notifications), then
    delivered by the workers with retries. `id` is the webhook-id."""

    id = models.CharField(primary_key=True, max_length=40)
    channel = models.CharField(max_length=10, choices=NotificationChannel.choices)
    # No database constraint: a subscription deleted while an event is being
    # written must not fail the run's transaction (deliver() skips the row;
    # the ORM's cascade deletes the rest).
    subscription = models.ForeignKey(WebhookSubscription, null=True, blank=True, on_delete=models.CASCADE,
                                     related_name="notifications", db_constraint=False)
    recipients = models.JSONField(default=list, blank=True)  # email addresses (channel email)
    run_id = models.CharField(max_length=40, db_index=True)
    event_type = models.CharField(max_length=40)
    event_seq = models.PositiveIntegerField()
    body = models.JSONField()  # the redacted message: {type, timestamp, data}
    status = models.CharField(max_length=10, choices=NotificationStatus.choices, default=NotificationStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    # Due time; a claim moves it forward (a crashed deliverer's claim simply expires).
    next_attempt_at = models.DateTimeField()
    created_at = models.DateTimeField()
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="notification_due_idx")]

    def __str__(self) -> str:
        return f"{self.id} {self.channel} {self.event_type} {self.status}"


class NotificationAttempt(models.Model):
    """One delivery attempt of a notification (visible in the admin)."""

    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="attempt_rows")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.FloatField()
    ok = models.BooleanField()
    response_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["notification", "number"]

    def __str__(self) -> str:
        return f"{self.notification_id} #{self.number} {'ok' if self.ok else 'failed'}"
class TaskStatus(models.TextChoices):
    OPEN = "open"            # offered, nobody holds it
    CLAIMED = "claimed"      # leased to an agent or a person
    COMPLETED = "completed"  # a valid output was committed
    INVALID = "invalid"      # the output failed its contract (an attempt used)
    FAILED = "failed"        # the holder gave up (`fail`)
    CLARIFY = "clarify"      # the holder asked a person; a new task follows the answer
    EXPIRED = "expired"      # the lease ran out; re-offered as a new task
    CANCELLED = "cancelled"  # the run ended or the capability went inactive


class Task(models.Model):
    """One offer of a node to an agent or a person: one row per attempt of a
    dispatched node (a re-offer is a new row with the next attempt).

    The lease is a fencing token: every write by the holder is a conditional
    UPDATE on (id, status=claimed, lease_token, lease_expires_at > now), so a
    holder whose lease expired or was taken over commits nothing
    (`409 lease_lost`). See runs/engine/tasks.py and docs/agents.md.
    """

    id = models.CharField(primary_key=True, max_length=40, default=new_task_id, editable=False)
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="tasks")
    node_run = models.ForeignKey(NodeRun, on_delete=models.CASCADE, related_name="tasks")
    node_id = models.CharField(max_length=120)
    capability_id = models.CharField(max_length=200)
    agent_type = models.CharField(max_length=20, default="ai")
    attempt = models.PositiveIntegerField(default=1)
    plan_version = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=20, choices=TaskStatus.choices, default=TaskStatus.OPEN)
    # Who holds (or held) it: an agent id, or a person (claimed_by with no agent).
    agent_id = models.CharField(max_length=120, blank=True, default="")
    claimed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="flex_tasks")
    lease_token = models.CharField(max_length=64, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    usage = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            # Claim: open tasks of some capabilities, oldest first.
            models.Index(fields=["status", "capability_id", "created_at"], name="task_offer_idx"),
            # Sweep: claimed tasks whose lease expired; maxConcurrency counts.
            models.Index(fields=["status", "lease_expires_at"], name="task_lease_idx"),
            models.Index(fields=["agent_id", "status"], name="task_agent_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.run_id}/{self.node_id})"
