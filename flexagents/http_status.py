"""Reason phrases for every status line we send.

An ASGI response carries a status code and no reason phrase; daphne lets
Twisted pick one from `twisted.web.http.RESPONSES`, which has no entry for
422 or 429 (and other codes added after RFC 2616), so those status lines
read `HTTP/1.1 422 Unknown Status`. `complete_reason_phrases()` fills the
gaps from the standard library's `http.HTTPStatus`, keeping Twisted's own
phrases. `flexagents.asgi` calls it before daphne serves anything.
"""
from __future__ import annotations

from http import HTTPStatus


def complete_reason_phrases() -> None:
    try:
        from twisted.web import http
    except ImportError:  # not served by daphne: nothing to complete
        return
    for status in HTTPStatus:
        http.RESPONSES.setdefault(status.value, status.phrase.encode("ascii"))
