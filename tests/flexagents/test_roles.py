from __future__ import annotations

import importlib
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from django.apps import apps
from django.contrib.auth.models import Group
from django.db import connection

from flexagents import roles
from flexagents.roles import Role
from runs.models import Run

pytestmark = pytest.mark.django_db

SUPPORT_PERMS = {"runs.view_run", "runs.view_planversion", "runs.view_noderun", "runs.view_runevent",
                 "runs.view_auditentry", "hitl.view_hitlrequest", "hitl.view_hitlresponse"}
EXPECTED = {
    "client": {"runs.add_run"},
    "support": SUPPORT_PERMS,
    "operator": SUPPORT_PERMS | {"runs.operate_run", "runs.add_run", "hitl.add_hitlresponse",
                                 "hitl.change_hitlrequest"},
}


def group_perms(name: str) -> set[str]:
    return {f"{app}.{code}" for app, code in
            Group.objects.get(name=name).permissions.values_list("content_type__app_label", "codename")}


def new_run() -> Run:
    return Run.objects.create(objective="Write a post", envelope={"objective": "Write a post"})


def test_the_migration_creates_the_role_groups_with_their_permissions() -> None:
    for name, perms in EXPECTED.items():
        assert group_perms(name) == perms, name


def test_the_migration_is_reversible_and_idempotent() -> None:
    migration = importlib.import_module("runs.migrations.0002_roles")
    editor = SimpleNamespace(connection=connection)
    migration.delete_roles(apps, editor)
    assert not Group.objects.filter(name__in=EXPECTED).exists()
    migration.create_roles(apps, editor)
    migration.create_roles(apps, editor)
    for name, perms in EXPECTED.items():
        assert group_perms(name) == perms, name


def test_role_of_names_each_persona(make_user: Callable[..., Any]) -> None:
    assert roles.role_of(make_user("c", Role.CLIENT)) == "client"
    assert roles.role_of(make_user("s", Role.SUPPORT)) == "support"
    assert roles.role_of(make_user("o", Role.OPERATOR)) == "operator"
    assert roles.role_of(make_user("a", Role.ADMIN)) == "admin"
    assert roles.role_of(make_user("outsider")) is None


def test_role_of_prefers_the_stronger_group(make_user: Callable[..., Any]) -> None:
    user = make_user("both", Role.CLIENT)
    user.groups.add(Group.objects.get(name=Role.OPERATOR))
    assert roles.role_of(user) == "operator"


def test_a_client_may_submit_and_use_only_its_own_runs(make_user: Callable[..., Any]) -> None:
    client, mine, theirs = make_user("c", Role.CLIENT), new_run(), new_run()
    roles.grant_run_to_owner(run=mine, user=client)
    roles.grant_run_to_owner(run=mine, user=client)  # idempotent
    assert roles.user_may_submit(client)
    assert not roles.user_may_view_all_runs(client)
    assert not roles.user_may_operate_all_runs(client)
    assert roles.user_may_view_run(client, mine) and roles.user_may_operate_run(client, mine)
    assert not roles.user_may_view_run(client, theirs) and not roles.user_may_operate_run(client, theirs)
    assert client.has_perm("runs.change_run", mine)


def test_support_may_view_every_run_and_change_nothing(make_user: Callable[..., Any]) -> None:
    support, run = make_user("s", Role.SUPPORT), new_run()
    assert roles.user_may_view_all_runs(support) and roles.user_may_view_run(support, run)
    assert not roles.user_may_submit(support)
    assert not roles.user_may_operate_all_runs(support) and not roles.user_may_operate_run(support, run)


def test_support_may_operate_one_run_granted_to_it(make_user: Callable[..., Any]) -> None:
    from guardian.shortcuts import assign_perm

    support, granted, other = make_user("s", Role.SUPPORT), new_run(), new_run()
    assign_perm("operate_run", support, granted)
    assert roles.user_may_operate_run(support, granted)
    assert not roles.user_may_operate_run(support, other)


def test_an_operator_may_do_everything_with_any_run(make_user: Callable[..., Any]) -> None:
    operator, run = make_user("o", Role.OPERATOR), new_run()
    assert roles.user_may_submit(operator)
    assert roles.user_may_view_run(operator, run) and roles.user_may_operate_run(operator, run)


def test_a_superuser_may_do_everything(make_user: Callable[..., Any]) -> None:
    admin, run = make_user("a", Role.ADMIN), new_run()
    assert roles.user_may_submit(admin) and roles.user_may_operate_run(admin, run)


def test_outsiders_inactive_and_anonymous_users_may_do_nothing(make_user: Callable[..., Any]) -> None:
    from django.contrib.auth.models import AnonymousUser

    run = new_run()
    inactive = make_user("gone", Role.OPERATOR, is_active=False)
    for user in (make_user("outsider"), inactive, AnonymousUser(), None):
        assert not roles.user_may_submit(user)
        assert not roles.user_may_view_run(user, run)
        assert not roles.user_may_operate_run(user, run)
        assert roles.role_of(user) is None


def test_model_permission_checks_cost_one_query(make_user: Callable[..., Any],
                                                django_assert_max_num_queries: Any) -> None:
    support = make_user("s", Role.SUPPORT)
    run = new_run()
    with django_assert_max_num_queries(2):  # user perms + group perms, then cached
        for _ in range(5):
            assert roles.user_may_view_run(support, run)
            assert not roles.user_may_operate_all_runs(support)
