"""The `flex` command (Typer + Rich)."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from flexagents.cli.client import FlexClient, FlexError
from flexagents.cli.view import RunView

app = typer.Typer(help="Drive a Flex Agents server: submit and follow runs, answer people's questions.",
                  no_args_is_help=True, add_completion=False)
console = Console()
err = Console(stderr=True)

DEFAULT_URL = "http://127.0.0.1:8000"


class State:
    url: str = DEFAULT_URL
    token: str = ""

    @classmethod
    def client(cls) -> FlexClient:
        return FlexClient(cls.url, cls.token)


@app.callback()
def options(
    url: str = typer.Option(DEFAULT_URL, "--url", envvar="FLEX_URL", help="server URL (FLEX_URL)"),
    token: str = typer.Option("", "--token", envvar="FLEX_TOKEN", help="API token (FLEX_TOKEN)", show_default=False),
) -> None:
    State.url, State.token = url, token


def fail(error: FlexError) -> None:
    err.print(f"[red]error[/red] {error.code}: {error.message}", highlight=False)
    if error.details:
        err.print_json(data=error.details)
    raise typer.Exit(1)


def print_json(data: Any) -> None:
    # Plain JSON on stdout (pipe-friendly), colours only on a terminal.
    if console.is_terminal:
        console.print_json(data=data)
    else:
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        sys.stdout.flush()


@app.command()
def run(
    file: Path = typer.Argument(..., help="a TaskEnvelope JSON file ('-' reads stdin)", allow_dash=True),
    follow: bool = typer.Option(False, "--follow", "-f", help="show the nodes live, then the output"),
) -> None:
    """Submit a run; with --follow, show its nodes live until it ends, then its output."""
    try:
        envelope = json.loads(sys.stdin.read() if str(file) == "-" else file.read_text())
    except (OSError, ValueError) as exc:
        err.print(f"[red]error[/red] cannot read the envelope: {exc}")
        raise typer.Exit(2)
    client = State.client()
    try:
        created = client.post_once("/api/v1/flex/runs", envelope)
        if not follow:
            print_json(created)
            return
        view = RunView(created["runId"], status=created.get("status", "queued"))
        _follow(client, view)
    except FlexError as error:
        fail(error)
    finally:
        client.close()
    if view.output is not None:
        print_json(view.output)
    if view.error:
        err.print(f"[red]{view.status}[/red]: {view.error}", highlight=False)
    raise typer.Exit(0 if view.status == "completed" else 1)


def _follow(client: FlexClient, view: RunView) -> None:
    """Live table on a terminal; one line per node result otherwise (logs, pipes)."""

    def reconnecting(attempt: int, last_event_id: Optional[str]) -> None:
        err.print(f"[yellow]stream dropped; reconnecting (attempt {attempt}) from {last_event_id or 'the start'}"
                  "[/yellow]", highlight=False)

    events = client.follow(view.run_id, on_reconnect=reconnecting)
    if console.is_terminal:
        with Live(view.render(), console=console, refresh_per_second=8) as live:
            for event in events:
                view.apply(event)
                live.update(view.render())
        return
    console.print(f"run {view.run_id} {view.status}", highlight=False)
    for event in events:
        view.apply(event)
        _print_line(view, event)


def _print_line(view: RunView, event: dict[str, Any]) -> None:
    kind, payload = event["type"], event.get("payload") or {}
    line = None
    if kind == "plan_generated":
        line = f"plan v{payload.get('version')}: {len(payload.get('nodes', []))} nodes"
    elif kind == "node_complete":
        node = view.nodes[payload["nodeId"]]
        line = (f"[{view.progress()}] node {node.node_id} completed ({node.capability_id}, "
                f"attempt {node.attempt}, {node.duration_ms or 0:.0f} ms)")
    elif kind == "node_error":
        line = f"node {payload['nodeId']} error: {(payload.get('error') or {}).get('message', '')}" + (
            " (will retry)" if payload.get("willRetry") else "")
    elif kind == "hitl_request":
        line = (f"waiting for a person: {payload.get('question', '')} -> flex answer {payload.get('requestId')} "
                "--approve | --reject | --option ID | --text ...")
    elif kind == "hitl_resolved":
        line = f"answered: {payload.get('resolution')}"
    elif kind == "complete":
        line = f"run {view.run_id} {view.status} [{view.progress()}]"
    if line:
        console.print(line, highlight=False, markup=False, soft_wrap=True)


@app.command()
def pending(as_json: bool = typer.Option(False, "--json", help="print the raw JSON")) -> None:
    """Questions waiting for a person (the HITL inbox)."""
    client = State.client()
    try:
        runs = client.pages("/api/hitl/pending", "runs")
    except FlexError as error:
        fail(error)
    finally:
        client.close()
    if as_json:
        print_json(runs)
        return
    if not runs:
        console.print("nothing is waiting for a person")
        return
    table = Table(title=f"{len(runs)} waiting for a person")
    for column in ("request", "run", "kind", "urgency", "question", "options", "answers"):
        table.add_column(column, overflow="fold")
    for entry in runs:
        request = entry.get("pendingRequest") or {}
        table.add_row(entry.get("pendingRequestId") or "", entry["runId"], request.get("kind", ""),
                      request.get("urgency", ""), request.get("question", ""),
                      ", ".join(o.get("id", "") for o in request.get("options") or []),
                      str(len(request.get("responses") or [])))
    console.print(table)


@app.command()
def answer(
    request_id: str = typer.Argument(..., help="the HITL request id (see `flex pending`)"),
    approve: bool = typer.Option(False, "--approve", help="approve (approval requests)"),
    reject: bool = typer.Option(False, "--reject", help="reject (approval requests)"),
    option: Optional[str] = typer.Option(None, "--option", help="choose an option id (clarify requests)"),
    text: Optional[str] = typer.Option(None, "--text", help="answer in words (clarify requests)"),
    note: Optional[str] = typer.Option(None, "--note", help="a note kept with the answer"),
) -> None:
    """Answer a pending request and resume its run (POST /api/hitl/resume)."""
    chosen = [name for name, given in (("--approve", approve), ("--reject", reject), ("--option", option is not None),
                                       ("--text", text is not None)) if given]
    if len(chosen) != 1:
        err.print("[red]error[/red] give exactly one of --approve, --reject, --option ID, --text TEXT")
        raise typer.Exit(2)
    if approve:
        response: dict[str, Any] = {"responseType": "approval", "approved": True}
    elif reject:
        response = {"responseType": "rejection", "approved": False}
    elif option is not None:
        response = {"responseType": "option", "selectedOptionId": option}
    else:
        response = {"responseType": "freeform", "freeformText": text}
    client = State.client()
    try:
        entry = next((e for e in client.pages("/api/hitl/pending", "runs")
                      if e.get("pendingRequestId") == request_id), None)
        if entry is None:
            raise FlexError("hitl_request_not_found", f"no pending request {request_id} that you may see")
        body: dict[str, Any] = {"runId": entry["runId"], "requestId": request_id,
                                "responses": [{"requestId": request_id, **response}]}
        earlier = (entry.get("pendingRequest") or {}).get("responses") or []
        if earlier:
            # The answers listed with the request are the ones this person saw.
            body["latestResponseId"] = earlier[-1]["responseId"]
        if note:
            body["note"] = note
        result = client.post_once("/api/hitl/resume", body)
    except FlexError as error:
        fail(error)
    finally:
        client.close()
    console.print(f"answered {request_id}; run {result['runId']} is {result['status']} "
                  f"(plan v{result['planVersion']})", highlight=False)


@app.command()
def runs(
    status: Optional[str] = typer.Option(None, "--status", help="only runs with this status"),
    limit: int = typer.Option(20, "--limit", min=1, help="how many (newest first)"),
    as_json: bool = typer.Option(False, "--json", help="print the raw JSON"),
) -> None:
    """The newest runs you may see."""
    client = State.client()
    try:
        items = client.pages("/api/v1/flex/runs", "results", {"status": status}, limit=limit)
    except FlexError as error:
        fail(error)
    finally:
        client.close()
    if as_json:
        print_json(items)
        return
    table = Table(title=f"{len(items)} runs")
    for column in ("run", "status", "plan", "created", "objective"):
        table.add_column(column, overflow="fold")
    for item in items:
        table.add_row(item["runId"], item["status"], f"v{item.get('planVersion', 0)}", item.get("createdAt", ""),
                      item.get("objective", ""))
    console.print(table)


@app.command()
def agents(as_json: bool = typer.Option(False, "--json", help="print the raw JSON")) -> None:
    """Registered agents (GET /api/v1/flex/agents: status, heartbeat, capabilities), then every
    capability grouped by where it runs (GET /api/v1/flex/capabilities) when your role may read the catalog."""
    client = State.client()
    try:
        registered = client.request("GET", "/api/v1/flex/agents")["agents"]
        try:
            capabilities = client.request("GET", "/api/v1/flex/capabilities")["capabilities"]
        except FlexError as error:
            if error.status != 403:
                raise
            capabilities = []  # an agent token reads its own agents only
    except FlexError as error:
        fail(error)
    finally:
        client.close()
    groups: dict[str, list[dict[str, Any]]] = {}
    for capability in capabilities:
        groups.setdefault(where_it_runs(capability), []).append(capability)
    if as_json:
        print_json({"agents": registered, "capabilities": groups})
        return
    table = Table(title=f"agents ({len(registered)})", title_justify="left")
    for column in ("agent", "status", "last heartbeat", "every", "max tasks", "capabilities"):
        table.add_column(column, overflow="fold")
    for agent in registered:
        table.add_row(agent["agentId"], agent["status"], agent.get("lastHeartbeatAt") or "",
                      f"{agent.get('heartbeatSeconds', '')}s", str(agent.get("maxConcurrency", "")),
                      ", ".join(f"{c['capabilityId']} ({c['status']})" for c in agent.get("capabilities", [])))
    console.print(table)
    for where, members in sorted(groups.items()):
        table = Table(title=f"{where} ({len(members)})", title_justify="left")
        for column in ("capability", "kind", "agent type", "status", "inputs -> outputs"):
            table.add_column(column, overflow="fold")
        for capability in members:
            table.add_row(capability["capabilityId"], capability.get("kind", ""), capability.get("agentType", ""),
                          capability.get("status", "active"),
                          f"{', '.join(capability.get('inputFacets', []))} -> {', '.join(capability.get('outputFacets', []))}")
        console.print(table)


def where_it_runs(capability: dict[str, Any]) -> str:
    """`runsOn` of the catalog: an agent (with its id), people, or the server."""
    runs_on = capability.get("runsOn")
    if capability.get("agentId"):
        return f"agent {capability['agentId']}"
    if runs_on == "people" or capability.get("agentType") == "human":
        return "people (task inbox)"
    return "server (in-process)"


def main() -> None:
    app()
