"""`manage.py flex_user <username> --role … [--password P] [--token]
[--capability ID …]` (API.md).

Creates or updates a user so that it has exactly the given role; idempotent.
With --token the API token is printed alone on the last line of stdout, so a
script can take it with `| tail -n1`. `--capability human.CopyEdit` (repeatable)
lets the user do that human capability's tasks (the group
`capability:human.CopyEdit`, created if missing; docs/agents.md, "Human tasks").
"""
from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from rest_framework.authtoken.models import Token

from flexagents.roles import ALL_ROLES, HUMAN_CAPABILITY_GROUP_PREFIX, ROLE_GROUPS, Role


class Command(BaseCommand):
    help = "Create or update a Flex Agents user with a role, optionally printing its API token."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        # Checked by hand, not with `choices`: argparse would exit with its
        # own usage text instead of a CommandError naming the roles.
        parser.add_argument("--role", required=True, help=f"One of: {', '.join(ALL_ROLES)}.")
        parser.add_argument("--password", default=None, help="Set this password (left unchanged if omitted).")
        parser.add_argument("--token", action="store_true", help="Print the API token on the last line.")
        parser.add_argument("--capability", action="append", default=[], metavar="ID",
                            help="Let the user do this human capability's tasks (repeatable).")

    def handle(self, *args: Any, username: str, role: str, password: str | None, token: bool,
               **options: Any) -> None:
        capabilities = [c.strip() for c in options.get("capability") or []]
        if any(not c or len(HUMAN_CAPABILITY_GROUP_PREFIX + c) > 150 for c in capabilities):
            raise CommandError("A --capability needs a capability id (at most 139 characters).")
        if role not in ALL_ROLES:
            raise CommandError(f"Unknown role {role!r}; use one of: {', '.join(ALL_ROLES)}.")
        if not username.strip():
            raise CommandError("The username must not be empty.")
        with transaction.atomic():
            user, created = self._save_user(username=username, role=role, password=password)
            for capability_id in capabilities:
                group, _ = Group.objects.get_or_create(name=HUMAN_CAPABILITY_GROUP_PREFIX + capability_id)
                user.groups.add(group)
            key = Token.objects.get_or_create(user=user)[0].key if token else None
        granted = f"; may do the tasks of {', '.join(capabilities)}" if capabilities else ""
        self.stdout.write(f"{'Created' if created else 'Updated'} user {user.get_username()} with role {role}{granted}.")
        if key is not None:
            self.stdout.write(key)

    def _save_user(self, *, username: str, role: str, password: str | None) -> tuple[Any, bool]:
        User = get_user_model()
        user, created = User.objects.get_or_create(**{User.USERNAME_FIELD: username})
        user.is_active = True
        user.is_superuser = role == Role.ADMIN
        # Support and operators use the read-mostly admin console.
        user.is_staff = role in (Role.ADMIN, Role.OPERATOR, Role.SUPPORT)
        if password is not None:
            user.set_password(password)
        elif created:
            user.set_unusable_password()
        user.save()
        # The user's only role group is this one; other groups are left alone.
        # An admin needs none (superusers have every permission).
        user.groups.remove(*Group.objects.filter(name__in=ROLE_GROUPS).exclude(name=role))
        if role != Role.ADMIN:
            try:
                user.groups.add(Group.objects.get(name=role))
            except Group.DoesNotExist:
                raise CommandError(f"The group {role!r} does not exist; run `manage.py migrate` first.") from None
        return user, created
