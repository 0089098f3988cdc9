"""HITL requests in the console: read-only (answers go through the run page's
Answer button, which calls the HITL services), and the inbox of pending
requests sorted by urgency, then age."""
from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from flexagents.redaction import redact_text
from flexagents.roles import user_may_view_all_runs
from hitl.models import HitlRequest, HitlResponse, HitlStatus
from hitl.presenters import hitl_request_payload, hitl_response_payload
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
    fields = ("response_id", "response_type", "approved", "selected_option_id", "answer_text", "shown_metadata",
              "responder", "created_at")
    readonly_fields = fields
    ordering = ("id",)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    # What people read goes through the HITL presenter (redacted).
    @admin.display(description="freeform text")
    def answer_text(self, obj: HitlResponse) -> str:
        return hitl_response_payload(obj)["freeformText"] or ""

    @admin.display(description="responder")
    def responder(self, obj: HitlResponse) -> str:
        return hitl_response_payload(obj)["responderDisplayName"] or ""

    @admin.display(description="metadata")
    def shown_metadata(self, obj: HitlResponse) -> str:
        return json.dumps(hitl_response_payload(obj)["metadata"], ensure_ascii=False) if obj.metadata else ""


@admin.register(HitlRequest)
class HitlRequestAdmin(admin.ModelAdmin):
    list_display = ("id", "run_link", "kind", "urgency", "status", "question_short", "pending_node_id", "created_at")
    list_filter = ("status", "kind", "urgency")
    search_fields = ("id", "run__id", "question", "thread_id", "brief_id")
    ordering = ("status", "urgency_rank", "created_at")
    list_select_related = ("run",)
    show_full_result_count = False
    inlines = [HitlResponseInline]
    fields = ("id", "run", "kind", "status", "resolution", "urgency", "shown_question", "shown_options",
              "allow_free_form", "pending_node_id", "shown_operator_prompt", "shown_review", "plan_version", "source",
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
        return format_html('<a href="{}">{}</a>', reverse("admin:runs_run_change", args=[obj.run_id]), obj.run_id)

    @admin.display(description="question")
    def question_short(self, obj: HitlRequest) -> str:
        question = redact_text(obj.question)
        return question if len(question) <= 80 else question[:79] + "…"

    # The change page shows what the HITL presenter shows (redacted); the
    # stored row keeps the real values.
    def _shown(self, obj: HitlRequest) -> dict[str, Any]:
        return hitl_request_payload(obj, responses=[])

    @admin.display(description="question")
    def shown_question(self, obj: HitlRequest) -> str:
        return self._shown(obj)["question"]

    @admin.display(description="options")
    def shown_options(self, obj: HitlRequest) -> str:
        return json.dumps(self._shown(obj)["options"], ensure_ascii=False)

    @admin.display(description="operator prompt")
    def shown_operator_prompt(self, obj: HitlRequest) -> str:
        return self._shown(obj)["operatorPrompt"]

    @admin.display(description="under review")
    def shown_review(self, obj: HitlRequest) -> str:
        return json.dumps(self._shown(obj)["review"], ensure_ascii=False, indent=2) if obj.review else "—"
