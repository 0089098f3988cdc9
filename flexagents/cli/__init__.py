"""The `flex` command: drive a Flex Agents server from a terminal.

Only HTTP (httpx), Typer and Rich: it never imports Django, so it runs on a
machine that only has the package installed. Server and token come from
FLEX_URL / FLEX_TOKEN (or --url / --token).
"""
from flexagents.cli.app import app, main

__all__ = ["app", "main"]
