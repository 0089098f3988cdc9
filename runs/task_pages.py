"""Human tasks for people: the task inbox, the task page (claim, the form
generated from the output facets' schema, submit, keep the lease) — shared by the
operator console (`runs.admin`, under /admin/runs/run/tasks/) and the history
pages (/runs/tasks/, for people who act without admin access).

Who may act: operators and superusers on every human task; any other user on
the tasks of the human capabilities they were granted (see docs/agents.md,
"Human tasks"). Support staff see the inbox and the task pages read-only.
Everything shown is redacted (the task's bundle with the facet schemas, free
text with `flexagents.redaction`). Claims and completions go through the task
services (the same rules as the agents' API: a claim is a lease, a completion
is validated against the node's contract, an invalid one counts as an
attempt, a lost lease commits nothing), with the person as the actor.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone

from flexagents.errors import FlexError
from flexagents.redaction import FREE_TEXT_KEYS, redact, redact_text
from flexagents.roles import role_of, user_may_view_all_runs, user_may_view_run
from hitl.presenters import facet_schemas
from runs import human_tasks as task_services
from runs.debug import redact_facet_values
from runs.task_forms import TaskOutputForm

LOGIN_URL = "/accounts/login/"
INBOX_LIMIT = 200
STATUS_FILTERS = (("open", "open"), ("claimed", "claimed"), ("mine", "claimed by me"), ("all", "open or claimed"))


@dataclass
class Surface:
    """Where a page is shown: the console (admin chrome) or the history pages."""

    name: str  # "console" | "pages"
    inbox_template: str
    task_template: str
    extra_context: dict[str, Any] = field(default_factory=dict)

    def inbox_url(self) -> str:
        return reverse("admin:runs_run_tasks") if self.name == "console" else reverse("run_pages:tasks")

    def task_url(self, task_id: str) -> str:
        return (reverse("admin:runs_run_task", args=[task_id]) if self.name == "console"
                else reverse("run_pages:task", args=[task_id]))

    def action_url(self, task_id: str, action: str) -> str:  # claim, extend, complete
        return (reverse(f"admin:runs_run_task_{action}", args=[task_id]) if self.name == "console"
                else reverse(f"run_pages:task-{action}", args=[task_id]))

    def run_url(self, run_id: str) -> str:
        from django.contrib.admin.utils import quote
        return (reverse("admin:runs_run_change", args=[quote(run_id)]) if self.name == "console"
                else reverse("run_pages:detail", args=[run_id]))


PAGES = Surface("pages", "runs/task_list.html", "runs/task_page.html")


def flex_disabled_message() -> str | None:
    if settings.FLEX_ENABLED:
        return None
    return ("The flex API is disabled on this server (FLEX_ENABLED=0): tasks can be read here, not claimed or "
            "completed. Nothing was changed.")


# --- reading -----------------------------------------------------------------------

def lease_left(task: Any) -> str:
    """'expires in 29 min' / 'expired 3 s ago' for a claimed task."""
    expires = getattr(task, "lease_expires_at", None)
    if expires is None:
        return ""
    seconds = int((expires - timezone.now()).total_seconds())
    if seconds < 0:
        return f"expired {_duration(-seconds)} ago"
    return f"expires in {_duration(seconds)}"


def _duration(seconds: int) -> str:
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{round(seconds / 3600, 1)} h"


def inbox_rows(request: HttpRequest, surface: Surface) -> dict[str, Any]:
    """The inbox context: open and claimed human tasks the user may see, the
    filters (status, "mine", capability) and what the user may do."""
    user = request.user
    status = request.GET.get("status") or "all"
    if status not in dict(STATUS_FILTERS):
        status = "all"
    capability = request.GET.get("capability") or ""
    tasks = task_services.human_tasks_for_person(user=user, status=status, capability_id=capability or None,
                                                 limit=INBOX_LIMIT)
    sees_runs = user_may_view_all_runs(user)  # a person granted a capability may not see the whole run
    rows = []
    for task in tasks:
        rows.append({
            "task": task, "url": surface.task_url(task.id), "run_url": surface.run_url(task.run_id) if sees_runs else "",
            "objective": redact_text(task.run.objective)[:120],
            "claimed_by": task_services.claimant_display(task),
            "mine": task_services.claimed_by_person(task, user),
            "lease_left": lease_left(task) if task.status == "claimed" else "",
            "may_act": task_services.person_may_act(user, task),
        })
    return {"rows": rows, "status": status, "status_filters": STATUS_FILTERS, "capability": capability,
            "capabilities": task_services.human_capability_ids(user), "role": role_of(user),
            "flex_enabled": bool(settings.FLEX_ENABLED), "inbox_url": surface.inbox_url()}


def task_context(request: HttpRequest, surface: Surface, task: Any, form: TaskOutputForm | None = None) -> dict[str, Any]:
    user = request.user
    schemas = facet_schemas()
    shown = task_services.task_view(task)
    facets = redact_facet_values(shown["facets"], schemas)
    clarifications = redact(shown["clarifications"], text_keys=FREE_TEXT_KEYS)
    instructions = [redact_text(str(s)) for s in shown["specialInstructions"]]
    output_facets = shown["outputFacets"]
    mine = task_services.claimed_by_person(task, user)
    may_act = task_services.person_may_act(user, task)
    if form is None and mine:
        form = TaskOutputForm(initial={"lease_token": task.lease_token}, output_facets=output_facets)
    return {
        "task": task, "run": task.run, "node_id": task_services.task_node_id(task),
        "objective": redact_text(task.run.objective),
        "inputs": [{"facet": name, "title": _title(name), "json": json.dumps(value, indent=2, ensure_ascii=False)}
                   for name, value in facets.items()],
        "clarifications": clarifications, "instructions": instructions,
        "output_facets": [{"facet": name, "title": _title(name)} for name in output_facets],
        "mine": mine, "may_act": may_act, "may_claim": may_act and task.status == "open",
        "claimed_by": task_services.claimant_display(task), "lease_left": lease_left(task),
        "form": form if mine else None,
        "claim_url": surface.action_url(task.id, "claim"), "complete_url": surface.action_url(task.id, "complete"),
        "extend_url": surface.action_url(task.id, "extend"),
        "inbox_url": surface.inbox_url(),
        "run_url": surface.run_url(task.run_id) if user_may_view_run(user, task.run) else "",
        "flex_enabled": bool(settings.FLEX_ENABLED), "role": role_of(user),
    }


def _title(facet: str) -> str:
    from planner.facets import get_catalog
    found = get_catalog().get(facet)
    return found.title if found is not None else facet


def get_task(request: HttpRequest, task_id: str) -> Any:
    """The task, or 404 when it does not exist or the user may not see it."""
    task = task_services.human_task_for_person(user=request.user, task_id=task_id)
    if task is None:
        raise Http404("No such task.")
    return task


# --- acting ---------------------------------------------------------------------------

def error_text(exc: FlexError) -> str:
    """A service error as a sentence for a person (lease_lost, validation, state)."""
    if exc.code == "lease_lost":
        return ("Your claim on this task has ended (the lease expired, someone else took the task over, or the "
                "run was cancelled): nothing was saved. Claim it again from the task inbox if it is still open.")
    return f"{exc.message} [{exc.code}]"


def act(request: HttpRequest, surface: Surface, task_id: str, action: str) -> HttpResponse:
    """POST claim / extend / complete. Errors become messages; an invalid
    completion re-renders the form with what was typed and the errors beside
    their fields."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    task = get_task(request, task_id)
    if not task_services.person_may_act(request.user, task):
        raise PermissionDenied
    disabled = flex_disabled_message()
    if disabled:
        messages.error(request, disabled)
        return HttpResponseRedirect(surface.task_url(task.id))
    user = request.user
    try:
        if action == "claim":
            claimed = task_services.claim_for_person(user=user, task_id=task.id)
            messages.success(request, f"You claimed task {task.id}; your lease {lease_left(claimed)}.")
        elif action == "extend":
            extended = task_services.extend_for_person(user=user, task_id=task.id,
                                                       lease_token=request.POST.get("lease_token", ""))
            messages.success(request, f"Your claim on task {task.id} was extended; it {lease_left(extended)}.")
        elif action == "complete":
            return complete(request, surface, task)
        else:
            raise Http404("No such action.")
    except FlexError as exc:
        messages.error(request, error_text(exc))
    return HttpResponseRedirect(surface.task_url(task.id))


def complete(request: HttpRequest, surface: Surface, task: Any) -> HttpResponse:
    """Submit the form. Valid: the node completes, back to the inbox. Invalid
    (the same contract check as the API): nothing is committed, the attempt
    counts and the node is offered again as a new task — which the person
    claims at once, so the re-rendered form (what they typed, the errors
    beside their fields) submits to it."""
    user = request.user
    output_facets = task_services.task_view(task)["outputFacets"]
    form = TaskOutputForm(request.POST, output_facets=output_facets)
    if not form.is_valid():
        messages.error(request, "The form could not be read; nothing was sent. Correct the fields below.")
        return _render_task(request, surface, task, form, status=400)
    errors = task_services.complete_for_person(user=user, task_id=task.id, lease_token=form.cleaned_data["lease_token"],
                                               output=form.output_value())
    if not errors:
        messages.success(request, f"Task {task.id} completed; run {task.run_id} goes on.")
        return HttpResponseRedirect(surface.inbox_url())
    again = task_services.reoffered_task(task)
    if again is None or not task_services.person_may_act(user, again):
        messages.error(request, "The output does not satisfy the task's contract; nothing was committed and the "
                                "attempt counts. No more attempts are left for this task: the run now waits for a "
                                "person's decision (see the HITL inbox). " + _listed(errors))
        return HttpResponseRedirect(surface.run_url(task.run_id) if user_may_view_run(user, task.run)
                                    else surface.inbox_url())
    try:
        claimed = task_services.claim_for_person(user=user, task_id=again.id)
    except FlexError as exc:
        messages.error(request, "The output does not satisfy the task's contract; nothing was committed. "
                                + error_text(exc) + " " + _listed(errors))
        return HttpResponseRedirect(surface.inbox_url())
    data = request.POST.copy()
    data["lease_token"] = claimed.lease_token
    retry = TaskOutputForm(data, output_facets=output_facets)
    retry.is_valid()
    retry.add_contract_errors(errors, output_facets=output_facets)
    messages.error(request, f"The output does not satisfy the task's contract; nothing was committed. That was "
                            f"attempt {task.attempt}; the task is offered again (attempt {claimed.attempt}) and you "
                            f"hold it. Correct the fields marked below and submit again.")
    return _render_task(request, surface, claimed, retry, status=422)


def _listed(errors: list[dict[str, Any]]) -> str:
    return "; ".join(f"{e.get('path') or '/'}: {e.get('message')}" for e in errors[:10])


def _render_task(request: HttpRequest, surface: Surface, task: Any, form: TaskOutputForm | None,
                 status: int = 200) -> HttpResponse:
    context = {**surface.extra_context, **task_context(request, surface, task, form)}
    if surface.name == "console":
        from django.contrib import admin
        context.update(admin.site.each_context(request))
        context["title"] = f"Task {task.id}"
    return render(request, surface.task_template, context, status=status)


def render_inbox(request: HttpRequest, surface: Surface) -> HttpResponse:
    context = {**surface.extra_context, **inbox_rows(request, surface)}
    if surface.name == "console":
        from django.contrib import admin
        context.update(admin.site.each_context(request))
        context["title"] = "Task inbox: work for people"
    return render(request, surface.inbox_template, context)


def render_task(request: HttpRequest, surface: Surface, task_id: str) -> HttpResponse:
    return _render_task(request, surface, get_task(request, task_id), None)


def check_may_see_inbox(request: HttpRequest) -> None:
    if not task_services.person_may_see_task_inbox(request.user):
        raise PermissionDenied


# --- the history-page views ---------------------------------------------------------------

@login_required(login_url=LOGIN_URL)
def task_list_page(request: HttpRequest) -> HttpResponse:
    check_may_see_inbox(request)
    return render_inbox(request, PAGES)


@login_required(login_url=LOGIN_URL)
def task_page(request: HttpRequest, task_id: str) -> HttpResponse:
    check_may_see_inbox(request)
    return render_task(request, PAGES, task_id)


def _page_action(action: str) -> Any:
    @login_required(login_url=LOGIN_URL)
    def view(request: HttpRequest, task_id: str) -> HttpResponse:
        check_may_see_inbox(request)
        return act(request, PAGES, task_id, action)
    view.__name__ = f"task_{action}_page"
    return view


task_claim_page = _page_action("claim")
task_complete_page = _page_action("complete")
task_extend_page = _page_action("extend")
