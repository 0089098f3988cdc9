"""Human tasks as people see them: who may see and do them, the inbox
query, and the person-facing calls into the task services.

- Operators and superusers do every human task.
- Any other user does the tasks of a human capability they were granted:
  membership of the group `capability:<capabilityId>` (e.g.
  `capability:human.CopyEdit`; Django groups, managed in the admin or with
  `flex_user NAME --capability ID`). A group works for capabilities declared
  in settings and registered by agents alike, and survives re-registration.
  See docs/agents.md, "Human tasks".
- Support staff see the inbox and the tasks read-only.

Nothing here changes state by itself: claims, completions and lease extensions
go through the task services (`runs.engine.tasks`), the same
code as the agents' HTTP API, with the person as the actor.
"""
from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from flexagents.roles import (
    HUMAN_CAPABILITY_GROUP_PREFIX, human_capabilities_granted, user_may_do_human_capability, user_may_view_all_runs,
)
from runs.models import RunStatus, Task, TaskStatus

HUMAN = "human"
OPEN_OR_CLAIMED = (TaskStatus.OPEN, TaskStatus.CLAIMED)


def _active(user: Any) -> bool:
    return bool(user is not None and getattr(user, "is_authenticated", False) and user.is_active)


def granted_capability_ids(user: Any) -> set[str] | None:
    """The human capabilities this user may do: None means all of them."""
    return human_capabilities_granted(user)


def capability_group_name(capability_id: str) -> str:
    return f"{HUMAN_CAPABILITY_GROUP_PREFIX}{capability_id}"


def person_may_act_on(user: Any, capability_id: str) -> bool:
    return user_may_do_human_capability(user, capability_id)


def person_may_act(user: Any, task: Task) -> bool:
    return task.agent_type == HUMAN and person_may_act_on(user, task.capability_id)


def person_may_see_task_inbox(user: Any) -> bool:
    """Operators, support (read-only), and whoever was granted a human capability."""
    if not _active(user):
        return False
    return user_may_view_all_runs(user) or granted_capability_ids(user) != set()


def _visible(user: Any) -> QuerySet[Task]:
    qs = Task.objects.filter(agent_type=HUMAN)
    if user_may_view_all_runs(user):
        return qs
    granted = granted_capability_ids(user)
    return qs if granted is None else qs.filter(capability_id__in=sorted(granted))


def human_tasks_for_person(*, user: Any, status: str = "all", capability_id: str | None = None,
                           limit: int = 200) -> list[Task]:
    """Open and claimed human tasks the user may see, oldest first ("mine":
    those the user holds)."""
    qs = _visible(user)
    if status == "open":
        qs = qs.filter(status=TaskStatus.OPEN)
    elif status == "claimed":
        qs = qs.filter(status=TaskStatus.CLAIMED)
    elif status == "mine":
        qs = qs.filter(status=TaskStatus.CLAIMED, claimed_by=user, agent_id="")
    else:
        qs = qs.filter(status__in=OPEN_OR_CLAIMED)
    qs = qs.filter(run__status=RunStatus.RUNNING)  # a finished run's task is closed by the sweep soon
    if capability_id:
        qs = qs.filter(capability_id=capability_id)
    return list(qs.select_related("run", "claimed_by").order_by("created_at", "id")[:limit])


def human_task_for_person(*, user: Any, task_id: str) -> Task | None:
    """The task (any status) if the user may see it, else None (a 404)."""
    if not isinstance(task_id, str) or not (0 < len(task_id) <= 40) or "\x00" in task_id:
        return None
    return _visible(user).select_related("run", "claimed_by").filter(pk=task_id).first()


def waiting_human_tasks(run: Any) -> list[Task]:
    """The run's human tasks that wait for a person (open or claimed)."""
    return list(Task.objects.filter(run=run, agent_type=HUMAN, status__in=OPEN_OR_CLAIMED).order_by("created_at"))


def human_capability_ids(user: Any | None = None) -> list[str]:
    """The catalog's human capabilities (those the user may see tasks of)."""
    from planner.registry import get_registry
    ids = [cls.capability_id for cls in get_registry().classes() if cls.agent_type == HUMAN]
    granted = None if user is None or user_may_view_all_runs(user) else granted_capability_ids(user)
    return sorted(i for i in ids if granted is None or i in granted)


def claimed_by_person(task: Task, user: Any) -> bool:
    return (task.status == TaskStatus.CLAIMED and not task.agent_id and task.claimed_by_id is not None
            and task.claimed_by_id == getattr(user, "pk", None))


def claimant_display(task: Task) -> str:
    if task.status != TaskStatus.CLAIMED:
        return ""
    if task.agent_id:
        return f"agent {task.agent_id}"
    if task.claimed_by is not None:
        return task.claimed_by.get_full_name() or task.claimed_by.get_username()
    return ""


def plan_node_of(task: Task) -> dict[str, Any]:
    """The task's node in the plan version it was offered under."""
    from runs.models import PlanVersion
    graph = (PlanVersion.objects.filter(run_id=task.run_id, version=task.plan_version)
             .values_list("graph", flat=True).first()) or {}
    for node in graph.get("nodes") or []:
        if node.get("id") == task_node_id(task):
            return dict(node)
    return {}


def task_node_id(task: Task) -> str:
    return str(task.node_id)


def output_facets_of(task: Task, node: dict[str, Any] | None = None) -> list[str]:
    """The facets the task produces (its plan node's, else its capability's)."""
    node = plan_node_of(task) if node is None else node
    names = [str(n) for n in node.get("outputFacets") or []]
    if names:
        return names
    from planner.registry import get_registry
    try:
        return list(get_registry().get_class(task.capability_id).output_facets)
    except KeyError:
        return []


def task_view(task: Task) -> dict[str, Any]:
    """What a person reads before and while doing the task, unredacted (the
    pages redact it): the input facets the node consumes, the special
    instructions and every clarification answered so far for the node."""
    from hitl.services import clarifications_for_node
    node = plan_node_of(task)
    run_facets, _ = task.run.facet_snapshot()  # inputs and what nodes produced (RunFacet rows)
    wanted = [*(node.get("inputFacets") or []), *(node.get("optionalInputFacets") or [])]
    envelope = task.run.envelope if isinstance(task.run.envelope, dict) else {}
    return {
        "facets": {name: run_facets[name] for name in wanted if name in run_facets},
        "specialInstructions": list(envelope.get("specialInstructions") or []),
        "clarifications": clarifications_for_node(run_id=task.run_id, node_id=task_node_id(task)),
        "outputFacets": output_facets_of(task, node),
    }


# --- acting: the task services, with the person as the actor ------------------------------
# The services write the audit entries (task_claimed, task_completed,
# task_output_invalid) with the person as actor, in their transaction.

def claim_for_person(*, user: Any, task_id: str) -> Task:
    from runs.engine.tasks import task_claim_for_person
    return task_claim_for_person(user=user, task_id=task_id).task


def extend_for_person(*, user: Any, task_id: str, lease_token: str) -> Task:
    from runs.engine.tasks import task_heartbeat
    return task_heartbeat(user=user, task_id=task_id, lease_token=lease_token)


def complete_for_person(*, user: Any, task_id: str, lease_token: str, output: dict[str, Any]) -> list[dict[str, Any]]:
    """[] when the output was committed; else the contract's errors (the
    attempt is counted and the node offered again, as for an agent)."""
    from runs.engine.tasks import task_complete
    completion = task_complete(user=user, task_id=task_id, lease_token=lease_token, output=output)
    return [] if completion.accepted else list(completion.errors or [{"path": "/", "message": "invalid output"}])


def reoffered_task(task: Task) -> Task | None:
    """The open task that offers the same node again after `task` (an invalid
    output, a retryable failure), if any."""
    return (Task.objects.filter(run_id=task.run_id, node_id=task.node_id, status=TaskStatus.OPEN,
                                attempt__gt=task.attempt).order_by("-attempt").first())
