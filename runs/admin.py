"""The operator console: a read-mostly admin for runs whose actions call the
same services as the API (same events, same audit entries, same 409 rules).

- The list is one query whatever its length (creator joined, the pending HITL
  request annotated); filters by status, pending request, capability and
  date; search by run id, objective, thread id and brief id.
- The run page is read-only and redacted (`runs.pages.run_detail`, shared
  with the history pages), with POST-only, CSRF-protected buttons: Resume,
  Answer and Cancel. Their errors are the services' errors, shown as admin
  messages with their code.
- Who sees what comes from `flexagents.roles` (guardian object permissions
  included): operators act on any run, support staff see every run and no
  buttons (a forged POST gets 403), a user granted one run sees only it.
"""
from __future__ import annotations

import json
from typing import Any, Callable

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from flexagents.errors import FlexDisabled, FlexError, RunNotFound
from flexagents.redaction import redact_text
from flexagents.roles import user_may_operate_all_runs, user_may_operate_run, user_may_view_all_runs, user_may_view_run
from hitl.models import HitlKind, HitlRequest, HitlResponse, HitlStatus
from hitl.presenters import approvals_of, facet_schemas, hitl_request_payload, hitl_response_payload, review_rows
from runs import services as run_services
from runs.filters import RUN_LIST_FILTERS, run_text_search
from runs.models import Run, RunStatus
from runs import task_pages
from runs.human_tasks import person_may_see_task_inbox, waiting_human_tasks
from runs.pages import governance_row, run_detail, runs_annotated
from runs.selectors import inbox_requests, requests_visible_to, run_get_for_user, runs_visible_to


admin.site.site_header = "Flex Agents console"
admin.site.site_title = "Flex Agents console"
admin.site.index_title = "Runs, people in the loop, capabilities"
# The console home lists every page; the left sidebar would repeat two links
# and take 285 px from the run list (whose columns must fit at 1400 px).
admin.site.enable_nav_sidebar = False


def error_message(exc: FlexError) -> str:
    """A 409/422 as an admin message: the sentence, its code, the field (JSON
    path) and message of each validation error, and the details an operator
    needs (current status, plan versions, latest response)."""
    parts = [f"{exc.message} [{exc.code}]"]
    errors = exc.details.get("errors")
    if isinstance(errors, list) and errors:
        shown = []
        for error in errors[:10]:
            if isinstance(error, dict):
                where = error.get("path") or error.get("field") or "/"
                shown.append(f"{where}: {error.get('message', '')}".strip())
            else:
                shown.append(str(error))
        more = f" (+{len(errors) - 10} more)" if len(errors) > 10 else ""
        parts.append("— " + "; ".join(shown) + more + ".")
    for key in ("status", "currentPlanVersion", "expectedPlanVersion", "receivedPlanVersion", "latestResponseId"):
        if key in exc.details:
            parts.append(f"{key}={exc.details[key]}")
    return " ".join(parts)


def form_error(form: forms.Form, what: str) -> FlexError:
    """An invalid console form as a 422 whose errors name their fields."""
    errors = [{"path": field if field != "__all__" else "/", "message": str(message)}
              for field, messages_ in form.errors.items() for message in messages_]
    return FlexError(f"The {what} form is incomplete.", code="validation_failed", status_code=422,
                     details={"errors": errors})


# The message of every console action refused while the flex feature flag is off.
FLEX_DISABLED_MESSAGE = ("The flex API is disabled on this server (FLEX_ENABLED=0): runs cannot be resumed, "
                         "answered or cancelled until it is turned back on. Nothing was changed.")


def check_flex_enabled() -> None:
    """The console refuses what the API refuses (`flex_disabled`), read per request."""
    if not settings.FLEX_ENABLED:
        raise FlexDisabled(FLEX_DISABLED_MESSAGE)


def run_change_url(run_id: str) -> str:
    """The admin URL of a run page; the admin quotes object ids in URLs
    (`run_01a` → `run_5F01a`) and unquotes them in its views."""
    return reverse("admin:runs_run_change", args=[quote(run_id)])


# --- forms of the buttons -------------------------------------------------------------

class CancelForm(forms.Form):
    reason = forms.CharField(max_length=2000, required=False)


class TriggerForm(forms.Form):
    policy_id = forms.CharField(max_length=100)
    note = forms.CharField(max_length=4000, required=False)


def manual_policies(run: Run) -> list[dict[str, str]]:
    """The run's enabled `manual` runtime policies: one console button each."""
    policies = ((run.envelope or {}).get("policies") or {}).get("runtime") or []
    return [{"id": str(p.get("id")), "action": str((p.get("action") or {}).get("type"))} for p in policies
            if (p.get("trigger") or {}).get("kind") == "manual" and p.get("enabled", True) is not False]


class ResumeForm(forms.Form):
    expected_plan_version = forms.IntegerField(min_value=0)
    note = forms.CharField(max_length=4000, required=False)


class AnswerForm(forms.Form):
    """One answer to a pending request. `latest_response_id` is the id of the
    request's latest response when the form was rendered (the stale rule)."""

    ANSWERS = [("approve", "Approve"), ("reject", "Reject"), ("option", "Pick an option"), ("freeform", "Free text")]
    request_id = forms.CharField(max_length=40)
    answer = forms.ChoiceField(choices=ANSWERS, error_messages={"required": "choose an answer"})
    option_id = forms.CharField(max_length=200, required=False)
    text = forms.CharField(max_length=8000, required=False)
    note = forms.CharField(max_length=4000, required=False)
    latest_response_id = forms.CharField(max_length=40, required=False)
    mode = forms.ChoiceField(choices=[("resume", "Answer and resume"), ("respond", "Add without resuming")],
                             required=False)

    def response(self) -> dict[str, Any]:
        """The HitlResponseInput of API.md."""
        data = self.cleaned_data
        note = data.get("note") or ""
        response: dict[str, Any] = {"requestId": data["request_id"], "metadata": {"note": note} if note else {}}
        if data["answer"] == "approve":
            response.update(responseType="approval", approved=True)
        elif data["answer"] == "reject":
            response.update(responseType="rejection", approved=False)
        elif data["answer"] == "option":
            response.update(responseType="option", selectedOptionId=data.get("option_id") or "")
        else:
            response.update(responseType="freeform", freeformText=data.get("text") or "")
        return response


def operator_display(request: HttpRequest) -> dict[str, str]:
    user = request.user
    return {"displayName": user.get_full_name() or user.get_username()}


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ("id", "status_badge", "objective_short", "plan_version", "pending_request", "creator",
                    "created", "updated")
    list_display_links = ("id",)
    # The run-list filters of the API and the history pages (runs.filters).
    list_filter = RUN_LIST_FILTERS
    search_fields = ("id", "objective", "thread_id", "brief_id")  # shows the box; the search is `q` below
    date_hierarchy = "created_at"
    list_select_related = ("created_by",)
    list_per_page = 50
    show_full_result_count = False
    ordering = ("-created_at", "-id")
    actions = ["cancel_runs", "approve_runs"]
    change_form_template = "admin/runs/run/console.html"

    class Media:
        css = {"all": ("runs/console.css",)}

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[Run],
                           search_term: str) -> tuple[QuerySet[Run], bool]:
        return run_text_search(queryset, search_term), False

    # -- who may do what ---------------------------------------------------------------
    def get_queryset(self, request: HttpRequest) -> QuerySet[Run]:
        return runs_annotated(runs_visible_to(user=request.user))

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def has_view_permission(self, request: HttpRequest, obj: Run | None = None) -> bool:
        user = request.user
        if not (user.is_active and user.is_staff):
            return False
        if obj is not None:
            return user_may_view_run(user, obj)
        return user_may_view_all_runs(user) or runs_visible_to(user=user).exists()

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # runs are submitted through the API

    def has_change_permission(self, request: HttpRequest, obj: Run | None = None) -> bool:
        return False  # read-only: state changes go through the buttons (services)

    def has_delete_permission(self, request: HttpRequest, obj: Run | None = None) -> bool:
        return False  # history is never deleted from the console

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return user_may_operate_all_runs(request.user)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    # -- list columns ------------------------------------------------------------------
    @admin.display(description="status", ordering="status")
    def status_badge(self, run: Run) -> str:
        return format_html('<span class="badge status-{}">{}</span>', run.status, run.get_status_display())

    @admin.display(description="objective")
    def objective_short(self, run: Run) -> str:
        objective = redact_text(run.objective)
        return objective if len(objective) <= 80 else objective[:79] + "…"

    @admin.display(description="pending request")
    def pending_request(self, run: Run) -> str:
        if not getattr(run, "pending_request_id", None):
            return "—"
        question = redact_text(run.pending_question or "")
        return format_html('<span class="badge pending">{}</span> {}', run.pending_kind,
                           question if len(question) <= 60 else question[:59] + "…")

    @admin.display(description="created", ordering="created_at")
    def created(self, run: Run) -> str:
        return _moment(run.created_at)

    @admin.display(description="updated", ordering="updated_at")
    def updated(self, run: Run) -> str:
        return _moment(run.updated_at)

    @admin.display(description="creator", ordering="created_by__username")
    def creator(self, run: Run) -> str:
        return run.created_by.get_username() if run.created_by else "—"

    # -- the run page --------------------------------------------------------------------
    def get_urls(self) -> list[Any]:
        wrap = self.admin_site.admin_view
        info = self.opts.app_label, self.opts.model_name
        return [
            path("inbox/", wrap(self.inbox_view), name="%s_%s_inbox" % info),
            path("tasks/", wrap(self.tasks_view), name="%s_%s_tasks" % info),
            path("tasks/<str:task_id>/", wrap(self.task_view), name="%s_%s_task" % info),
            *[path(f"tasks/<str:task_id>/{action}/", wrap(self.task_action_view(action)),
                   name=f"%s_%s_task_{action}" % info) for action in ("claim", "complete", "extend")],
            path("<path:object_id>/resume/", wrap(self.resume_view), name="%s_%s_resume" % info),
            path("<path:object_id>/answer/", wrap(self.answer_view), name="%s_%s_answer" % info),
            path("<path:object_id>/cancel/", wrap(self.cancel_view), name="%s_%s_cancel" % info),
            path("<path:object_id>/trigger/", wrap(self.trigger_view), name="%s_%s_trigger" % info),
        ] + super().get_urls()

    def _get_run(self, request: HttpRequest, object_id: str) -> Run:
        try:
            return run_get_for_user(user=request.user, run_id=unquote(object_id))
        except RunNotFound:
            raise Http404("No such run.") from None

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if request.method != "GET":
            return HttpResponseNotAllowed(["GET"])
        run = self._get_run(request, object_id)
        if not self.has_view_permission(request, run):
            raise PermissionDenied
        may_operate = user_may_operate_run(request.user, run)
        detail = run_detail(run)
        flex_on = bool(settings.FLEX_ENABLED)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Run {run.id}",
            "subtitle": redact_text(run.objective)[:80],
            "opts": self.opts,
            "original": run,
            "run": run,
            "d": detail,
            "may_operate": may_operate,
            "can_resume": may_operate and run.status == RunStatus.PAUSED,
            "can_cancel": may_operate and not run.is_terminal,
            "pending": detail.pending_request if may_operate else None,
            "manual_policies": manual_policies(run) if may_operate and not run.is_terminal else [],
            "flex_enabled": flex_on,
            "history_url": reverse("run_pages:detail", args=[run.id]),
            "debug_url": f"/api/v1/flex/runs/{run.id}",
            "has_view_permission": True,
            # Human tasks of this run waiting for a person (links to their task pages).
            "waiting_tasks": waiting_human_tasks(run) if person_may_see_task_inbox(request.user) else [],
            **(extra_context or {}),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.change_form_template, context)

    # -- the buttons -----------------------------------------------------------------------
    def _act(self, request: HttpRequest, object_id: str,
             act: Callable[[HttpRequest, Run], str]) -> HttpResponse:
        """POST only (CSRF is checked by admin_view), the run must be visible
        (else 404) and operable by this user (else 403). The service's domain
        errors become admin error messages."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        run = self._get_run(request, object_id)
        if not user_may_operate_run(request.user, run):
            raise PermissionDenied
        try:
            check_flex_enabled()
            messages.success(request, act(request, run))
        except FlexError as exc:
            messages.error(request, error_message(exc))
        return HttpResponseRedirect(run_change_url(run.id))

    def resume_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        def act(request: HttpRequest, run: Run) -> str:
            form = ResumeForm(request.POST)
            if not form.is_valid():
                raise form_error(form, "resume")
            resumed = run_services.run_resume(
                user=request.user, run_id=run.id, expected_plan_version=form.cleaned_data["expected_plan_version"],
                responses=[], latest_response_id=None, operator=operator_display(request),
                note=form.cleaned_data.get("note") or "")
            return f"Run {run.id} resumed (plan version {resumed.run.plan_version})."

        return self._act(request, object_id, act)

    def answer_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        def act(request: HttpRequest, run: Run) -> str:
            form = AnswerForm(request.POST)
            if not form.is_valid():
                raise form_error(form, "answer")
            data = form.cleaned_data
            latest = data.get("latest_response_id") or None
            if data.get("mode") == "respond":
                run_services.hitl_respond(user=request.user, run_id=run.id, request_id=data["request_id"],
                                          responses=[form.response()], latest_response_id=latest)
                return f"Response added to {data['request_id']}; the run still waits."
            result = run_services.hitl_resume(user=request.user, run_id=run.id, request_id=data["request_id"],
                                              responses=[form.response()], latest_response_id=latest,
                                              operator=operator_display(request), note=data.get("note") or "")
            if result.request is not None and not result.resolution:
                approvals = len(approvals_of(result.responses))
                return (f"Your approval of {data['request_id']} is recorded: {approvals} of "
                        f"{result.request.required_approvals} approvals; the run waits for "
                        f"{result.request.required_approvals - approvals} more.")
            return f"Request {data['request_id']} answered; run {run.id} resumed."

        return self._act(request, object_id, act)

    def trigger_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        def act(request: HttpRequest, run: Run) -> str:
            form = TriggerForm(request.POST)
            if not form.is_valid():
                raise form_error(form, "trigger")
            result = run_services.policy_trigger(user=request.user, run_id=run.id,
                                                 policy_id=form.cleaned_data["policy_id"],
                                                 note=form.cleaned_data.get("note") or "")
            if result.state == "applied":
                return f"Policy {result.policy_id} applied; the run is {result.run.status}."
            return f"Policy {result.policy_id} triggered; the worker applies it at the run's next step."

        return self._act(request, object_id, act)

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        def act(request: HttpRequest, run: Run) -> str:
            form = CancelForm(request.POST)
            reason = form.cleaned_data.get("reason", "") if form.is_valid() else ""
            run_services.run_cancel(user=request.user, run_id=run.id, reason=reason)
            return f"Run {run.id} cancelled."

        return self._act(request, object_id, act)

    # -- bulk actions ------------------------------------------------------------------------
    @admin.action(description="Cancel selected runs", permissions=["operate"])
    def cancel_runs(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        try:
            check_flex_enabled()
        except FlexError as exc:
            messages.error(request, error_message(exc))
            return
        done = 0
        for run_id in queryset.values_list("pk", flat=True):
            try:
                run_services.run_cancel(user=request.user, run_id=run_id,
                                        reason="Cancelled from the admin console (bulk action)")
                done += 1
            except FlexError as exc:
                messages.error(request, f"{run_id}: {error_message(exc)}")
        if done:
            messages.success(request, f"Cancelled {done} run(s).")

    @admin.action(description="Approve the pending approval request of selected runs", permissions=["operate"])
    def approve_runs(self, request: HttpRequest, queryset: QuerySet[Run]) -> HttpResponse | None:
        """First a confirmation page showing each request with what it asks to
        approve (its review, redacted); only the requests shown there, at the
        response they had then (the stale rule), are approved on confirmation."""
        try:
            check_flex_enabled()
        except FlexError as exc:
            messages.error(request, error_message(exc))
            return None
        pending = list(HitlRequest.objects.filter(run__in=queryset.values("pk"), status=HitlStatus.PENDING,
                                                  kind=HitlKind.APPROVAL)
                       .select_related("run").prefetch_related("responses").order_by("run_id", "created_at"))
        selected = list(queryset.values_list("pk", flat=True))
        if request.POST.get("post") != "yes":
            schemas = facet_schemas()
            rows = []
            for hitl_request in pending:
                responses = list(hitl_request.responses.all())
                rows.append({"request": hitl_request, "run_url": run_change_url(hitl_request.run_id),
                             "question": redact_text(hitl_request.question),
                             "latest_response_id": responses[-1].response_id if responses else "",
                             "review": review_rows(hitl_request.review, schemas)})
            context = {**self.admin_site.each_context(request), "title": "Approve these requests?",
                       "opts": self.opts, "rows": rows, "selected": selected,
                       "skipped": len(selected) - len({r["request"].run_id for r in rows}),
                       "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME}
            request.current_app = self.admin_site.name
            return TemplateResponse(request, "admin/runs/run/approve_confirmation.html", context)

        shown = {key[len("latest_"):]: value for key, value in request.POST.items() if key.startswith("latest_")}
        done = 0
        for hitl_request in pending:
            if hitl_request.id not in shown:
                continue  # not on the page the operator confirmed: never approved blind
            try:
                run_services.hitl_resume(
                    user=request.user, run_id=hitl_request.run_id, request_id=hitl_request.id,
                    responses=[{"requestId": hitl_request.id, "responseType": "approval", "approved": True,
                                "metadata": {"note": "Approved from the admin console (bulk action)"}}],
                    latest_response_id=shown[hitl_request.id] or None,
                    operator=operator_display(request), note="bulk approve")
                done += 1
            except FlexError as exc:
                messages.error(request, f"{hitl_request.run_id}: {error_message(exc)}")
        skipped = len(selected) - done
        if done:
            messages.success(request, f"Approved {done} request(s).")
        if skipped > 0:
            messages.warning(request, f"{skipped} selected run(s) had no pending approval request to approve.")
        return None

    # -- the HITL inbox ------------------------------------------------------------------------
    def inbox_view(self, request: HttpRequest) -> HttpResponse:
        """Pending requests the user may see, most urgent first, then oldest."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        schemas = facet_schemas()
        mine = request.GET.get("assigned") == "me"
        rows = [{"request": r, "run_url": run_change_url(r.run_id), "question": redact_text(r.question),
                 "review": review_rows(r.review, schemas),
                 "governance": governance_row(r, hitl_request_payload(r, responses=r.responses.all()))}
                for r in inbox_requests(user=request.user, assigned_to_me=mine)]
        context = {**self.admin_site.each_context(request),
                   "title": "HITL inbox: requests assigned to me" if mine else "HITL inbox: pending requests",
                   "opts": self.opts, "rows": rows, "flex_enabled": bool(settings.FLEX_ENABLED),
                   "assigned_to_me": mine}
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/hitl/inbox.html", context)


    # -- human tasks (runs.task_pages: the same views as the history pages, in the console) --
    def _check_task_inbox(self, request: HttpRequest) -> None:
        if not (request.user.is_active and request.user.is_staff) or not person_may_see_task_inbox(request.user):
            raise PermissionDenied

    def tasks_view(self, request: HttpRequest) -> HttpResponse:
        """Open and claimed human tasks; filters: status, "mine", capability."""
        self._check_task_inbox(request)
        request.current_app = self.admin_site.name
        return task_pages.render_inbox(request, CONSOLE_TASKS)

    def task_view(self, request: HttpRequest, task_id: str) -> HttpResponse:
        self._check_task_inbox(request)
        request.current_app = self.admin_site.name
        return task_pages.render_task(request, CONSOLE_TASKS, task_id)

    def task_action_view(self, action: str) -> Callable[..., HttpResponse]:
        def view(request: HttpRequest, task_id: str) -> HttpResponse:
            self._check_task_inbox(request)
            request.current_app = self.admin_site.name
            return task_pages.act(request, CONSOLE_TASKS, task_id, action)
        return view


CONSOLE_TASKS = task_pages.Surface("console", "admin/runs/tasks.html", "admin/runs/task.html")


def _moment(at: Any) -> str:
    """A compact UTC date and time on two lines (the run list fits 1400 px)."""
    if at is None:
        return "—"
    return format_html('<time datetime="{}">{}<br>{}</time>', at.isoformat(), at.strftime("%Y-%m-%d"),
                       at.strftime("%H:%M:%S"))


# --- HITL requests in the console -----------------------------------------------------
# Read-only (answers go through the run page's Answer button, which calls the
# run services), and the inbox of pending requests sorted by urgency, then age.
# Registered here, with the runs they belong to: who may see a request is who
# may see its run.

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
              "governance", "shown_options", "allow_free_form", "pending_node_id", "operator_prompt_redacted",
              "plan_version", "source", "created_at", "resolved_at")
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[HitlRequest]:
        return requests_visible_to(user=request.user).select_related("run")

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
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

    @admin.display(description="governance")
    def governance(self, obj: HitlRequest) -> SafeString:
        """Assignees, quorum, deadlines (docs/hitl.md, "Governing human decisions")."""
        shown = hitl_request_payload(obj, responses=obj.responses.all())
        return render_to_string("runs/_governance.html", {"g": governance_row(obj, shown)}) or "—"

    @admin.display(description="under review")
    def under_review(self, obj: HitlRequest) -> SafeString:
        """What the request asks a person to approve, redacted (hitl.presenters.review_rows)."""
        return render_to_string("runs/_review.html", {"review": review_rows(obj.review), "request_id": obj.id,
                                                      "kind": obj.kind}) or "—"


# Webhook subscriptions and the notification outbox (runs.notification_admin).
from runs import notification_admin  # noqa: E402,F401
