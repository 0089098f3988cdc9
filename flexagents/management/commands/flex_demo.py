"""`manage.py flex_demo`: the demo users of `make run`, and how to use them.

Creates (or resets) one user per role with a fresh random password and
prints the credentials and an operator API token. Meant for a developer's
own machine: the server `make run` starts listens on 127.0.0.1 only.
"""
from __future__ import annotations

import secrets
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand
from rest_framework.authtoken.models import Token

DEMO_USERS = (("operator", "operator"), ("support", "support"), ("client", "client"), ("admin", "admin"))


class Command(BaseCommand):
    help = "Create the demo users (operator, support, client, admin) and print their credentials."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--port", default="8000")

    def handle(self, *args: Any, **options: Any) -> None:
        from django.contrib.auth import get_user_model

        lines = []
        for username, role in DEMO_USERS:
            password = secrets.token_urlsafe(9)
            call_command("flex_user", username, role=role, password=password, stdout=_Null())
            user = get_user_model().objects.get(username=username)
            token, _ = Token.objects.get_or_create(user=user)
            lines.append((username, role, password, token.key))
        base = f"http://127.0.0.1:{options['port']}"
        out = self.stdout
        out.write("")
        out.write("Flex Agents demo users (passwords are new on every `make run`):")
        for username, role, password, token in lines:
            out.write(f"  {role:<9} user {username:<9} password {password:<14} token {token}")
        operator_token = lines[0][3]
        out.write("")
        out.write(f"  Admin console:  {base}/admin/   (log in as operator)")
        out.write(f"  Run history:    {base}/runs/")
        out.write(f"  API docs:       {base}/api/docs/")
        out.write(f"  Operator token: {operator_token}")
        out.write("")
        out.write("  Try it:")
        out.write(f"    export TOKEN={operator_token}")
        out.write("    curl -N -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' \\")
        out.write(f"      --data @examples/envelopes/linkedin-variants.json {base}/api/v1/flex/run.stream")
        out.write("")


class _Null:
    def write(self, *args: Any, **kwargs: Any) -> None:
        pass

    def flush(self) -> None:
        pass
