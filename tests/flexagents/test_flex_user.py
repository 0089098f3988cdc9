from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command
from rest_framework.authtoken.models import Token

pytestmark = pytest.mark.django_db
User = get_user_model()


def flex_user(*args: str) -> list[str]:
    out = io.StringIO()
    call_command("flex_user", *args, stdout=out)
    return out.getvalue().splitlines()


def groups_of(username: str) -> set[str]:
    return set(User.objects.get(username=username).groups.values_list("name", flat=True))


@pytest.mark.parametrize(("role", "staff"), [("client", False), ("support", True), ("operator", True)])
def test_it_creates_a_user_in_its_role_group(role: str, staff: bool) -> None:
    flex_user("u", "--role", role)
    user = User.objects.get(username="u")
    assert groups_of("u") == {role}
    assert (user.is_staff, user.is_superuser, user.is_active) == (staff, False, True)
    assert not user.has_usable_password()


def test_it_creates_an_admin_as_a_staff_superuser_without_role_groups() -> None:
    flex_user("root", "--role", "admin")
    user = User.objects.get(username="root")
    assert user.is_superuser and user.is_staff
    assert groups_of("root") == set()


def test_it_prints_the_token_alone_on_the_last_line() -> None:
    lines = flex_user("u", "--role", "operator", "--token")
    assert lines[-1] == Token.objects.get(user__username="u").key
    assert len(lines[-1].split()) == 1


def test_it_prints_no_token_unless_asked() -> None:
    flex_user("u", "--role", "client")
    assert not Token.objects.exists()


def test_it_is_idempotent() -> None:
    first = flex_user("u", "--role", "client", "--password", "pw1", "--token")
    second = flex_user("u", "--role", "client", "--token")
    assert first[-1] == second[-1]
    assert User.objects.filter(username="u").count() == 1
    assert groups_of("u") == {"client"}
    assert User.objects.get(username="u").check_password("pw1")  # no --password: unchanged


def test_it_moves_a_user_to_its_new_role_and_keeps_other_groups() -> None:
    flex_user("u", "--role", "client")
    User.objects.get(username="u").groups.add(Group.objects.create(name="marketing"))
    flex_user("u", "--role", "operator", "--password", "pw2")
    user = User.objects.get(username="u")
    assert groups_of("u") == {"operator", "marketing"}
    assert user.is_staff and user.check_password("pw2")
    flex_user("u", "--role", "admin")
    flex_user("u", "--role", "client")
    user.refresh_from_db()
    assert not user.is_superuser and not user.is_staff
    assert groups_of("u") == {"client", "marketing"}


def test_it_refuses_an_unknown_role() -> None:
    with pytest.raises(CommandError, match="Unknown role 'boss'"):
        flex_user("u", "--role", "boss")
    assert not User.objects.exists()
