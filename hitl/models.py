"""Human-in-the-loop requests and their append-only response log."""
from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from flexagents.ids import new_hitl_request_id, new_hitl_response_id


class HitlKind(models.TextChoices):
    APPROVAL = "approval"
    CLARIFY = "clarify"


class HitlStatus(models.TextChoices):
    PENDING = "pending"
    RESOLVED = "resolved"
    REMOVED = "removed"


class HitlUrgency(models.TextChoices):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"


URGENCY_RANK: dict[str, int] = {HitlUrgency.HIGH: 0, HitlUrgency.NORMAL: 1, HitlUrgency.LOW: 2}


class HitlRequest(models.Model):
    id = models.CharField(primary_key=True, max_length=40, default=new_hitl_request_id, editable=False)
    run = models.ForeignKey("runs.Run", on_delete=models.CASCADE, related_name="hitl_requests")
    kind = models.CharField(max_length=20, choices=HitlKind.choices)
    question = models.TextField()
    options = models.JSONField(default=list, blank=True)
    allow_free_form = models.BooleanField(default=False)
    urgency = models.CharField(max_length=10, choices=HitlUrgency.choices, default=HitlUrgency.NORMAL)
    urgency_rank = models.PositiveSmallIntegerField(default=1)
    pending_node_id = models.CharField(max_length=120, blank=True, default="")
    operator_prompt = models.TextField(blank=True, default="")
    contract_summary = models.JSONField(default=dict, blank=True)
    # For an approval: the facet values under review (what the person is asked
    # to approve), stored as produced; every surface shows them redacted.
    review = models.JSONField(default=dict, blank=True)
    plan_version = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=20, choices=HitlStatus.choices, default=HitlStatus.PENDING)
    resolution = models.CharField(max_length=20, blank=True, default="")
    # What raised it: a policy id (hitl action), "validation" or "clarify".
    source = models.CharField(max_length=120, blank=True, default="")
    approve_action = models.JSONField(null=True, blank=True)
    reject_action = models.JSONField(null=True, blank=True)
    thread_id = models.CharField(max_length=200, blank=True, default="")
    brief_id = models.CharField(max_length=200, blank=True, default="")
    # Not auto_now_add: the `hitl_request` event is built from the unsaved
    # row, and the saved row must carry the same instant (one `createdAt`).
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    resolved_at = models.DateTimeField(null=True, blank=True)

    # Governance (API.md, "Governance of human decisions"; docs/hitl.md).
    # Who may answer: {"users": [usernames], "groups": [group names]}; empty =
    # anyone who may operate the run. Escalation adds `escalate_to` to it.
    assignees = models.JSONField(default=dict, blank=True)
    # The same as "|u:ana|g:legal|", for the inbox filter "assigned to me"
    # (a LIKE that works on every database; `assignee_keys_for`).
    assignee_keys = models.TextField(blank=True, default="")
    required_approvals = models.PositiveSmallIntegerField(default=1)
    allow_self_approval = models.BooleanField(default=False)
    # Deadlines, applied by the sweep of every worker (runs.governance) with
    # conditional UPDATEs: each fires once, whatever the number of workers.
    due_at = models.DateTimeField(null=True, blank=True)
    on_timeout = models.JSONField(null=True, blank=True)
    escalate_at = models.DateTimeField(null=True, blank=True)
    escalate_to = models.JSONField(default=dict, blank=True)
    escalated = models.BooleanField(default=False)
    escalated_at = models.DateTimeField(null=True, blank=True)
    # What the system did at `due_at` ({"type": "approve" | ..., "optionId"?}).
    applied_action = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            # The inbox: pending requests by urgency, then age.
            models.Index(fields=["status", "urgency_rank", "created_at"], name="hitl_inbox_idx"),
            models.Index(fields=["thread_id"], name="hitl_thread_idx"),
            # The sweep: pending requests whose deadline or escalation is due.
            models.Index(fields=["status", "due_at"], name="hitl_due_idx"),
            models.Index(fields=["status", "escalated", "escalate_at"], name="hitl_escalate_idx"),
        ]

    def __str__(self) -> str:
        return self.id

    @property
    def is_pending(self) -> bool:
        return self.status == HitlStatus.PENDING


def assignee_keys_for(assignees: dict[str, list[str]] | None) -> str:
    """`HitlRequest.assignee_keys` of an assignee set."""
    value = assignees or {}
    keys = [f"u:{name}" for name in value.get("users") or []] + [f"g:{name}" for name in value.get("groups") or []]
    return f"|{'|'.join(keys)}|" if keys else ""


class HitlResponseType(models.TextChoices):
    APPROVAL = "approval"
    REJECTION = "rejection"
    OPTION = "option"
    FREEFORM = "freeform"


class HitlResponse(models.Model):
    """Append-only: responses are never edited or deleted."""

    response_id = models.CharField(max_length=40, unique=True, default=new_hitl_response_id, editable=False)
    request = models.ForeignKey(HitlRequest, on_delete=models.CASCADE, related_name="responses")
    run = models.ForeignKey("runs.Run", on_delete=models.CASCADE, related_name="hitl_responses")
    response_type = models.CharField(max_length=20, choices=HitlResponseType.choices)
    approved = models.BooleanField(null=True, blank=True)
    selected_option_id = models.CharField(max_length=200, blank=True, default="")
    freeform_text = models.TextField(blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    responder = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                  related_name="flex_hitl_responses")
    responder_display_name = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        # The auto id orders responses within a request (created_at can tie).
        ordering = ["request", "id"]

    def __str__(self) -> str:
        return self.response_id
