"""HITL requests in the console: read-only (answers go through the run page's
Answer button, which calls the HITL services), and the inbox of pending
requests sorted by urgency, then age."""
from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from flexagents.roles import user_may_view_all_runs
from hitl.models import HitlRequest, HitlResponse, HitlStatus
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
    fields = ("response_id", "response_type", "approved", "selected_option_id", "freeform_text",
              "responder_display_name", "created_at")
    readonly_fields = fields
    ordering = ("id",)

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
    fields = ("id", "run", "kind", "status", "resolution", "urgency", "question", "options", "allow_free_form",
              "pending_node_id", "operator_prompt", "plan_version", "source", "created_at", "resolved_at")
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
        return obj.question if len(obj.question) <= 80 else obj.question[:79] + "…"
