"""HITL requests in the console: read-only (answers go through the run page's
Answer button, which calls the HITL services), and the inbox of pending
requests sorted by urgency, then age."""
from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import quote
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.template.loader import render_to_string
from django.utils.html import format_html
from django.utils.safestring import SafeString

from flexagents.redaction import redact_text
from flexagents.roles import user_may_view_all_runs
from hitl.models import HitlRequest, HitlResponse, HitlStatus
from hitl.presenters import hitl_request_payload, hitl_response_payload, review_rows
from runs.selectors import runs_visible_to


def requests_visible_to(*, user: Any) -> QuerySet[HitlRequest]:
    """Requests of the runs the user may view."""
    qs = HitlRequest.objects.all()
    if not user_may_view_all_runs(user):
        qs = qs.filter(run__in=runs_visible_to(user=user).values("pk"))
    return qs


def inbox_requests(*, user: Any, limit: int = 200) -> list[HitlRequest]:
    """Pending requests, most urgent first, then oldest (hitl_inbox_idx)."""
    return list(requests_visible_to(user=user).filter(status=HitlStatus.PENDING)
                .select_related("run").order_by("urgency_rank", "created_at", "id")[:limit])


class HitlResponseInline(admin.TabularInline):
    model = HitlResponse
    extra = 0
    can_delete = False
    fields = ("response_id", "response_type", "approved", "selected_option_id", "freeform_redacted", "note",
              "shown_metadata", "responder", "created_at")
    readonly_fields = fields
    ordering = ("id",)

    # What people read goes through the HITL presenter (redacted); the
    # stored row keeps the real values.
    @admin.display(description="free text")
    def freeform_redacted(self, obj: HitlResponse) -> str:
        return hitl_response_payload(obj)["freeformText"] or ""

    @admin.display(description="note")
    def note(self, obj: HitlResponse) -> str:
        return str((hitl_response_payload(obj)["metadata"] or {}).get("note") or "")

    @admin.display(description="responder")
    def responder(self, obj: HitlResponse) -> str:
        return hitl_response_payload(obj)["responderDisplayName"] or ""

    @admin.display(description="metadata")
    def shown_metadata(self, obj: HitlResponse) -> str:
        return json.dumps(hitl_response_payload(obj)["metadata"], ensure_ascii=False) if obj.metadata else ""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(HitlRequest)
class HitlRequestAdmin(admin.ModelAdmin):
    list_display = ("id", "run_link", "kind", "urgency", "status", "question_short", "pending_node_id", "created_at")
    list_filter = ("status", "kind", "urgency")
    search_fields = ("id", "run__id", "question", "thread_id", "brief_id")
    ordering = ("status", "urgency_rank", "created_at")
    list_select_related = ("run",)
    show_full_result_count = False
    inlines = [HitlResponseInline]

    class Media:
        css = {"all": ("runs/console.css",)}
    fields = ("id", "run_link", "kind", "status", "resolution", "urgency", "question_redacted", "under_review",
              "shown_options", "allow_free_form", "pending_node_id", "operator_prompt_redacted", "plan_version", "source",
              "created_at", "resolved_at")
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[HitlRequest]:
        return requests_visible_to(user=request.user).select_related("run")

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        from runs.admin import RunAdmin
        from runs.models import Run

        return RunAdmin(Run, self.admin_site).has_view_permission(request, obj.run if obj is not None else None)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="run", ordering="run_id")
    def run_link(self, obj: HitlRequest) -> str:
        # Admin URLs carry quoted ids (`run_01a` → `run_5F01a`).
        return format_html('<a href="{}" class="run-link">{}</a>', reverse("admin:runs_run_change",
                                                                           args=[quote(obj.run_id)]), obj.run_id)

    @admin.display(description="question")
    def question_short(self, obj: HitlRequest) -> str:
        question = redact_text(obj.question)
        return question if len(question) <= 80 else question[:79] + "…"

    @admin.display(description="question")
    def question_redacted(self, obj: HitlRequest) -> str:
        return hitl_request_payload(obj, responses=[])["question"]

    @admin.display(description="operator prompt")
    def operator_prompt_redacted(self, obj: HitlRequest) -> str:
        return hitl_request_payload(obj, responses=[])["operatorPrompt"]

    @admin.display(description="options")
    def shown_options(self, obj: HitlRequest) -> str:
        return json.dumps(hitl_request_payload(obj, responses=[])["options"], ensure_ascii=False)

    @admin.display(description="under review")
    def under_review(self, obj: HitlRequest) -> SafeString:
        """What the request asks a person to approve, redacted (hitl.presenters.review_rows)."""
        return render_to_string("runs/_review.html", {"review": review_rows(obj.review), "request_id": obj.id,
                                                      "kind": obj.kind}) or "—"
