"""`manage.py flex_demo` (what `make run` calls): demo users whose passwords
stay the same from one `make run` to the next."""
from __future__ import annotations

import io
import json
import re
import stat

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

pytestmark = pytest.mark.django_db


@pytest.fixture
def credentials(settings, tmp_path):
    path = tmp_path / "db" / "demo-credentials.json"
    settings.FLEX_DEMO_CREDENTIALS_FILE = path
    return path


def flex_demo(*args: str) -> dict[str, tuple[str, str]]:
    """Run the command; `{username: (password, token)}` as printed."""
    out = io.StringIO()
    call_command("flex_demo", *args, stdout=out)
    printed = {}
    for line in out.getvalue().splitlines():
        match = re.match(r"\s+\w+\s+user (\w+)\s+password (.+?)\s+token (\w+)$", line)
        if match:
            printed[match.group(1)] = (match.group(2), match.group(3))
    assert set(printed) == {"operator", "support", "client", "admin"}
    return printed


def test_the_passwords_and_tokens_stay_the_same_on_every_run(credentials, client):
    first = flex_demo("--port", "8123")
    second = flex_demo("--port", "8123")

    assert second == first
    password = first["operator"][0]
    assert client.login(username="operator", password=password)


def test_it_keeps_the_passwords_in_an_owner_only_file_and_says_where(credentials):
    out = io.StringIO()
    call_command("flex_demo", stdout=out)

    assert str(credentials) in out.getvalue()
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    stored = json.loads(credentials.read_text())
    user = get_user_model().objects.get(username="client")
    assert user.check_password(stored["client"])


def test_reset_chooses_new_passwords(credentials, client):
    first = flex_demo()
    second = flex_demo("--reset")

    assert second["client"][0] != first["client"][0]
    assert second["client"][1] == first["client"][1]  # tokens are kept
    assert client.login(username="client", password=second["client"][0])
    assert not client.login(username="client", password=first["client"][0])


def test_a_password_changed_since_is_left_alone_and_not_shown(credentials, client):
    flex_demo()
    user = get_user_model().objects.get(username="support")
    user.set_password("chosen-in-the-admin")
    user.save()

    printed = flex_demo()

    assert printed["support"][0] == "(changed since; not shown)"
    assert client.login(username="support", password="chosen-in-the-admin")


def test_a_fresh_database_gets_the_stored_passwords_back(credentials, client):
    first = flex_demo()
    get_user_model().objects.filter(username__in=["operator", "support", "client", "admin"]).delete()

    second = flex_demo()

    assert {name: pw for name, (pw, _token) in second.items()} == {name: pw for name, (pw, _t) in first.items()}
    assert client.login(username="admin", password=second["admin"][0])


def test_it_prints_an_agent_token_for_the_example_agent(credentials):
    out = io.StringIO()
    call_command("flex_demo", "--port", "8123", stdout=out)
    again = io.StringIO()
    call_command("flex_demo", "--port", "8123", stdout=again)

    key = re.search(r"Agent token:\s+(\w+)", out.getvalue()).group(1)
    assert re.search(r"Agent token:\s+(\w+)", again.getvalue()).group(1) == key
    agent = get_user_model().objects.get(username="agent")
    assert agent.auth_token.key == key
    assert [g.name for g in agent.groups.all()] == ["agent"] and not agent.has_usable_password()
    assert f"FLEX_URL=http://127.0.0.1:8123 FLEX_TOKEN={key} .venv/bin/python examples/agents/hashtags.py" \
        in out.getvalue()
