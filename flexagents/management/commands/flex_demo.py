"""`manage.py flex_demo`: the demo users of `make run`, and how to use them.

Creates one user per role and prints the credentials and an operator API
token; and an `agent` user (role `agent`, token only, no password) whose
token the example agent uses (docs/agents.md). Passwords are chosen once, at random, and kept in
`demo-credentials.json` beside the SQLite database (`db/`, ignored by git;
readable by its owner only), so they stay the same on every `make run`;
`--reset` chooses new ones. A password someone changed since (in the admin,
say) is left alone and not shown. Meant for a developer's own machine: the
server `make run` starts listens on 127.0.0.1 only.
"""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand
from rest_framework.authtoken.models import Token

DEMO_USERS = (("operator", "operator"), ("support", "support"), ("client", "client"), ("admin", "admin"))
# A program, not a person: it gets a token and no password.
DEMO_AGENT = "agent"


def credentials_file() -> Path:
    """Beside the SQLite database (a fresh database, fresh file), else in `db/`."""
    configured = getattr(settings, "FLEX_DEMO_CREDENTIALS_FILE", None)
    if configured:
        return Path(configured)
    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3" and str(database["NAME"]) != ":memory:":
        return Path(database["NAME"]).resolve().parent / "demo-credentials.json"
    return Path(settings.BASE_DIR) / "db" / "demo-credentials.json"


def _load(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)} if isinstance(data, dict) \
        else {}


def _save(path: Path, passwords: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created with owner-only permissions before anything is written to it.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(passwords, fh, indent=2, sort_keys=True)
        fh.write("\n")


class Command(BaseCommand):
    help = "Create the demo users (operator, support, client, admin) and print their credentials."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--port", default="8000")
        parser.add_argument("--reset", action="store_true", help="Choose new passwords for the demo users.")

    def handle(self, *args: Any, **options: Any) -> None:
        from django.contrib.auth import get_user_model

        path = credentials_file()
        stored = {} if options["reset"] else _load(path)
        kept: dict[str, str] = {}
        lines = []
        for username, role in DEMO_USERS:
            user = get_user_model().objects.filter(username=username).first()
            password: str | None = stored.get(username)
            if user is not None and user.has_usable_password() and password is not None \
                    and not user.check_password(password):
                password = None  # changed by someone since: leave it, do not show it
                call_command("flex_user", username, role=role, stdout=_Null())
            else:
                if password is None or user is None or not user.check_password(password):
                    password = password or secrets.token_urlsafe(9)
                    call_command("flex_user", username, role=role, password=password, stdout=_Null())
                else:
                    call_command("flex_user", username, role=role, stdout=_Null())  # role and groups only
                kept[username] = password
            user = get_user_model().objects.get(username=username)
            token, _ = Token.objects.get_or_create(user=user)
            lines.append((username, role, password, token.key))
        if kept != stored:
            _save(path, {**stored, **kept})
        call_command("flex_user", DEMO_AGENT, role="agent", stdout=_Null())
        agent_token, _ = Token.objects.get_or_create(user=get_user_model().objects.get(username=DEMO_AGENT))
        base = f"http://127.0.0.1:{options['port']}"
        out = self.stdout
        out.write("")
        out.write(f"Flex Agents demo users (passwords kept in {path}; `manage.py flex_demo --reset` changes them):")
        for username, role, password, token in lines:
            shown = password if password is not None else "(changed since; not shown)"
            out.write(f"  {role:<9} user {username:<9} password {shown:<14} token {token}")
        operator_token = lines[0][3]
        out.write("")
        out.write(f"  Admin console:  {base}/admin/   (log in as operator)")
        out.write(f"  Task inbox:     {base}/admin/runs/run/tasks/   (work for people, e.g. human.CopyEdit; "
                  "submit examples/envelopes/human-task.json)")
        out.write(f"  Run history:    {base}/runs/")
        out.write(f"  API docs:       {base}/api/docs/")
        out.write(f"  Operator token: {operator_token}")
        out.write(f"  Agent token:    {agent_token.key}   (user {DEMO_AGENT}, role agent; docs/agents.md)")
        out.write("")
        out.write("  Try it:")
        out.write(f"    export TOKEN={operator_token}")
        out.write("    curl -N -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' \\")
        out.write(f"      --data @examples/envelopes/linkedin-variants.json {base}/api/v1/flex/run.stream")
        out.write("")
        out.write("  The example agent (a second terminal), then send examples/envelopes/hashtags.json:")
        out.write(f"    FLEX_URL={base} FLEX_TOKEN={agent_token.key} .venv/bin/python examples/agents/hashtags.py")
        out.write("")
        out.write(f"  {_language_models()}")
        out.write("")


def _language_models() -> str:
    """Whether the demo's language-model twins are registered (docs/models.md);
    never names a key."""
    from planner.registry import get_registry

    ids = [cid for cid in get_registry().ids() if cid.startswith("llm.")]
    if not ids:
        return ("Language model: off (set OPENAI_API_KEY, and OPENAI_BASE_URL for a compatible endpoint, to "
                "register llm.SocialPosting, llm.SocialpostDrafting and llm.ContentReview).")
    return (f"Language model: on ({', '.join(ids)}); try --data @examples/envelopes/llm-social-post.json "
            "(it calls the model and spends tokens).")


class _Null:
    def write(self, *args: Any, **kwargs: Any) -> None:
        pass

    def flush(self) -> None:
        pass
