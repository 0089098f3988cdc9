"""Every shell example of the README and docs/ runs as written against what
`make run` starts: a real daphne with embedded workers on a fresh SQLite
database, the demo users of `manage.py flex_demo`, and the operator and
agent tokens it prints (`TOKEN`, `AGENT_TOKEN`). Each ```sh block is run in
bash, in order, one session per document;
a curl followed by a `# NNN …` comment must answer NNN, every other curl a
2xx. The only change made to the text is the port (`127.0.0.1:8000` → the
test server's)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from tests.multiprocess.procs import ProcGroup, free_port

pytestmark = pytest.mark.slow

BASE_DIR = Path(settings.BASE_DIR)
# Documents whose examples talk to a running server, in the order a reader meets them.
DOCUMENTS = ["README.md", "docs/api.md", "docs/events.md", "docs/hitl.md", "docs/planning.md", "docs/runbook.md",
             "docs/agents.md"]
_BLOCK = re.compile(r"^[ \t]*```sh\n(.*?)^[ \t]*```", re.MULTILINE | re.DOTALL)
_EXPECTED = re.compile(r"^#\s*(\d{3})\b")


def sh_blocks(text: str) -> list[str]:
    return [textwrap.dedent(block) for block in _BLOCK.findall(text)]


_HEREDOC = re.compile(r"<<-?\s*'?(\w+)'?")


def _complete(command: str) -> bool:
    """Whether `command` can end here: quotes closed, parentheses balanced, no
    trailing backslash, a here-document closed by its terminator."""
    if command.rstrip().endswith("\\"):
        return False
    heredoc = _HEREDOC.search(command)
    if heredoc:
        return command.splitlines()[-1].strip() == heredoc.group(1)
    depth = 0
    in_single = in_double = False
    for char in command:
        if char == "'" and not in_double:
            in_single = not in_single
        elif char == '"' and not in_single:
            in_double = not in_double
        elif char == "(" and not (in_single or in_double):
            depth += 1
        elif char == ")" and not (in_single or in_double):
            depth -= 1
    return not in_single and not in_double and depth <= 0


def commands(block: str) -> list[tuple[str, int | None]]:
    """The block's commands, each with the status its `# NNN` comment expects (or None)."""
    out: list[tuple[str, int | None]] = []
    pending = ""
    for line in block.splitlines():
        if not pending:
            stripped = line.strip()
            if not stripped:
                continue
            if stripped.startswith("#"):
                match = _EXPECTED.match(stripped)
                if match and out and out[-1][1] is None:
                    out[-1] = (out[-1][0], int(match.group(1)))
                continue
        pending = f"{pending}\n{line}" if pending else line
        if _complete(pending):
            out.append((pending, None))
            pending = ""
    assert not pending, f"unfinished command: {pending}"
    return [(c, s) for c, s in out if not _skipped(c)]


def _skipped(command: str) -> bool:
    # `make …` is what started the server; TOKEN and AGENT_TOKEN are set to what flex_demo printed.
    return command.startswith(("make ", "export TOKEN=", "export AGENT_TOKEN="))


@pytest.fixture(scope="module")
def server() -> Iterator[dict[str, Any]]:
    """`make run`, step by step: migrate, flex_demo, daphne with embedded workers."""
    folder = Path(tempfile.mkdtemp(prefix="flex-docs-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL", "FLEX_", "DJANGO_"))}
    env.update({"DATABASE_URL": f"sqlite:///{folder / 'flexagents.sqlite3'}", "DEBUG": "1",
                "SECRET_KEY": "docs-examples", "FLEX_EMBEDDED_WORKERS": "2", "PYTHONUNBUFFERED": "1",
                "DJANGO_SETTINGS_MODULE": "flexagents.settings",
                # As `make run` does: the demo's human capability (Makefile).
                "FLEX_HUMAN_CAPABILITIES": (BASE_DIR / "examples" / "capabilities" / "human.json").read_text()})
    port = free_port()
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput"], env=env, cwd=BASE_DIR, check=True, capture_output=True)
    demo = subprocess.run([*manage, "flex_demo", "--port", str(port)], env=env, cwd=BASE_DIR, check=True,
                          capture_output=True, text=True).stdout
    token = re.search(r"Operator token: (\w+)", demo).group(1)
    agent_token = re.search(r"Agent token:\s+(\w+)", demo).group(1)
    group = ProcGroup(env)
    try:
        group.daphne(port=port)
        yield {"port": port, "token": token, "agent_token": agent_token, "folder": folder, "demo": demo,
               "group": group}
    finally:
        group.stop_all()
        group.remove_logs()
        shutil.rmtree(folder, ignore_errors=True)


def run_document(server: dict[str, Any], document: str) -> list[dict[str, Any]]:
    """Run a document's examples in one bash session; what each command did."""
    text = (BASE_DIR / document).read_text()
    cmds = [cmd for block in sh_blocks(text) for cmd in commands(block)]
    log = server["folder"] / f"{document.replace('/', '_')}.log"
    log.write_text("")
    lines = [
        "set -o pipefail",
        # Every curl records the status of its last response (after redirects or 100-continue).
        'curl() { local h; h=$(mktemp); command curl --max-time 60 -D "$h" "$@"; local rc=$?; '
        'echo "status $(grep -a "^HTTP/" "$h" | tail -1 | cut -d" " -f2)" >> "$LOG"; rm -f "$h"; return $rc; }',
    ]
    for index, (cmd, _expected) in enumerate(cmds):
        lines.append(f'echo "command {index}" >> "$LOG"')
        lines.append(cmd.replace("127.0.0.1:8000", f"127.0.0.1:{server['port']}"))
        lines.append(f'rc=$?; [ $rc -eq 0 ] || echo "failed $rc" >> "$LOG"')
    script = "\n".join(lines) + "\n"
    result = subprocess.run(["bash", "-c", script], cwd=BASE_DIR, capture_output=True, text=True, timeout=600,
                            env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"),
                                 "TOKEN": server["token"], "AGENT_TOKEN": server["agent_token"], "LOG": str(log)})
    done: list[dict[str, Any]] = []
    for line in log.read_text().splitlines():
        kind, _, value = line.partition(" ")
        if kind == "command":
            cmd, expected = cmds[int(value)]
            done.append({"command": cmd, "expected": expected, "statuses": [], "failed": None})
        elif kind == "status":
            done[-1]["statuses"].append(int(value) if value.isdigit() else 0)
        elif kind == "failed":
            done[-1]["failed"] = int(value)
    assert len(done) == len(cmds), result.stderr[-2000:]
    for item in done:
        item["output"] = result.stdout[-3000:]
    return done


def test_the_documents_have_examples_to_run():
    for document in DOCUMENTS:
        assert commands("\n".join(sh_blocks((BASE_DIR / document).read_text()))), document


def test_make_run_prints_where_the_demo_passwords_are_and_keeps_them(server):
    assert str(server["folder"] / "demo-credentials.json") in server["demo"]
    again = subprocess.run([sys.executable, "manage.py", "flex_demo", "--port", str(server["port"])],
                           env=server["group"].env, cwd=BASE_DIR, check=True, capture_output=True, text=True).stdout
    assert again == server["demo"]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_example_runs_as_written(server, document):
    for item in run_document(server, document):
        where = f"{document}: {item['command']}\n{item['output']}"
        assert item["failed"] is None, f"exit {item['failed']}: {where}"
        if "curl" not in item["command"]:
            continue
        assert item["statuses"], f"no HTTP answer: {where}"
        if item["expected"] is not None:
            assert item["statuses"][-1] == item["expected"], f"{item['statuses']}: {where}"
        else:
            assert all(200 <= status < 300 for status in item["statuses"]), f"{item['statuses']}: {where}"
