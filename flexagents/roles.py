"""Roles (API.md, Roles and access) and the questions views ask about them.

A role is a Django group created by `runs/migrations/0002_roles.py`; what a
role may do is the model permissions of its group. A single run can also be
shared through guardian object permissions (a client owns the runs it
submitted). Superusers are the role "admin" and may do everything.

Model-permission checks are cached on the user object by Django's
ModelBackend, so asking several of these in one request costs one query;
each object-permission check costs one more.
"""
from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from guardian.utils import get_user_obj_perms_model


class Role:
    CLIENT = "client"
    SUPPORT = "support"
    OPERATOR = "operator"
    AGENT = "agent"  # a program serving capabilities over HTTP (docs/agents.md)
    ADMIN = "admin"  # a superuser; not a group


# The groups, most powerful first: a user in several gets the first.
ROLE_GROUPS: tuple[str, ...] = (Role.OPERATOR, Role.SUPPORT, Role.CLIENT, Role.AGENT)
ALL_ROLES: tuple[str, ...] = (Role.CLIENT, Role.SUPPORT, Role.OPERATOR, Role.AGENT, Role.ADMIN)

# What the owner of a run (its submitter) may do with it.
OWNER_RUN_PERMISSIONS: tuple[str, ...] = ("view_run", "change_run", "operate_run")


def _active(user: Any) -> bool:
    return bool(user is not None and getattr(user, "is_authenticated", False) and user.is_active)


def role_of(user: Any) -> str | None:
    """The user's role name, or None for anonymous users and users in no role group."""
    if not _active(user):
        return None
    if user.is_superuser:
        return Role.ADMIN
    names = set(user.groups.filter(name__in=ROLE_GROUPS).values_list("name", flat=True))
    return next((role for role in ROLE_GROUPS if role in names), None)


def user_may_submit(user: Any) -> bool:
    return _active(user) and user.has_perm("runs.add_run")


def user_may_view_all_runs(user: Any) -> bool:
    """Support, operators and superusers."""
    return _active(user) and user.has_perm("runs.view_run")


def user_may_operate_all_runs(user: Any) -> bool:
    """Operators and superusers: answer HITL, resume and cancel any run."""
    return _active(user) and user.has_perm("runs.operate_run")


def user_may_view_run(user: Any, run: Any) -> bool:
    # The model permission first: it is cached, the object check is a query.
    return user_may_view_all_runs(user) or (_active(user) and user.has_perm("runs.view_run", run))


def user_may_operate_run(user: Any, run: Any) -> bool:
    return user_may_operate_all_runs(user) or (_active(user) and user.has_perm("runs.operate_run", run))


def user_may_register_agents(user: Any) -> bool:
    """The `agent` role and superusers."""
    return _active(user) and user.has_perm("planner.add_agent")


def user_is_agent(user: Any) -> bool:
    """A user of the `agent` role (not a superuser): it may use the agent and
    task endpoints only (API.md, Agents). Only that role's group holds
    `planner.add_agent`, and permission checks are cached on the user."""
    return _active(user) and not user.is_superuser and user.has_perm("planner.add_agent")


# A user in the group `capability:<capabilityId>` does the tasks of that human
# capability (docs/agents.md, "Human tasks"); operators do every one.
HUMAN_CAPABILITY_GROUP_PREFIX = "capability:"


def human_capabilities_granted(user: Any) -> set[str] | None:
    """The human capabilities whose tasks this user may do; None: all of them
    (operators, superusers). One query per request (cached on the user)."""
    if not _active(user):
        return set()
    if user_may_operate_all_runs(user):
        return None
    cached = getattr(user, "_flex_human_capabilities", None)
    if cached is None:
        prefix = HUMAN_CAPABILITY_GROUP_PREFIX
        cached = {name[len(prefix):] for name in
                  user.groups.filter(name__startswith=prefix).values_list("name", flat=True)}
        user._flex_human_capabilities = cached
    return set(cached)


def user_may_do_human_capability(user: Any, capability_id: str) -> bool:
    granted = human_capabilities_granted(user)
    return granted is None or capability_id in granted


def grant_run_to_owner(*, run: Any, user: Any) -> None:
    """Give the submitter view/change/operate on their run.

    Two queries whatever the number of permissions (guardian's assign_perm
    takes three per permission); idempotent thanks to the unique constraint.
    """
    content_type = ContentType.objects.get_for_model(run)
    permissions = Permission.objects.filter(content_type=content_type, codename__in=OWNER_RUN_PERMISSIONS)
    model = get_user_obj_perms_model(run)
    model.objects.bulk_create(
        [model(user=user, permission=permission, content_type=content_type, object_pk=str(run.pk))
         for permission in permissions],
        ignore_conflicts=True,
    )
