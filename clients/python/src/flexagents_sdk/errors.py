"""What a capability function raises, and what the SDK raises to its caller.

A capability function ends in one of three ways:

- it returns its output facets (``{"hashtags": [...]}``): the task is
  completed;
- it raises :class:`Clarify`: the run waits for a person to answer, and the
  task is offered again later with the answer in ``bundle.clarifications``;
- it raises :class:`TaskFailed` (or any other exception): the task fails;
  the server retries it when ``retryable`` (any other exception counts as
  retryable, like a bug in an in-process capability).
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["AgentError", "ApiError", "Clarify", "TaskFailed", "Option"]

Option = Mapping[str, str]
"""A clarification option: ``{"id": "b2b", "label": "B2B buyers", "description": "..."}``."""


class Clarify(Exception):
    """Ask a person a question instead of guessing.

    ``options`` are strings (their id is derived from the text) or mappings
    with ``id``, ``label`` and an optional ``description``;
    ``allow_free_form`` lets the person type an answer of their own.
    """

    def __init__(self, question: str, *, options: Sequence[str | Option] = (),
                 allow_free_form: bool = True) -> None:
        if not isinstance(question, str) or not question.strip():
            raise ValueError("Clarify needs a non-empty question")
        super().__init__(question)
        self.question = question
        self.options: list[dict[str, str]] = [_option(item, index) for index, item in enumerate(options)]
        ids = [option["id"] for option in self.options]
        if len(set(ids)) != len(ids):
            raise ValueError(f"Clarify options need distinct ids, got {ids}")
        if not self.options and not allow_free_form:
            raise ValueError("Clarify without options must allow a free-form answer")
        self.allow_free_form = allow_free_form

    def to_json(self) -> dict[str, Any]:
        """The body of ``POST /tasks/{taskId}/clarify`` (without the lease token)."""
        return {"question": self.question, "options": self.options, "allowFreeForm": self.allow_free_form}


def _option(item: str | Option, index: int) -> dict[str, str]:
    if isinstance(item, str):
        if not item.strip():
            raise ValueError(f"Clarify option {index} is empty")
        slug = re.sub(r"[^a-z0-9]+", "-", item.lower()).strip("-")
        return {"id": slug or f"option-{index + 1}", "label": item}
    if not isinstance(item, Mapping) or not isinstance(item.get("id"), str) or not isinstance(item.get("label"), str):
        raise ValueError(f"Clarify option {index} must be a string or a mapping with string 'id' and 'label'")
    option = {"id": item["id"], "label": item["label"]}
    if isinstance(item.get("description"), str):
        option["description"] = item["description"]
    return option


class TaskFailed(Exception):
    """The task failed. ``retryable=False`` tells the server that trying
    again cannot help (bad input, a refusal); ``True`` that it might (a
    timeout of something the function called)."""

    def __init__(self, code: str, message: str, *, retryable: bool = True) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", code or ""):
            raise ValueError(f"TaskFailed code must be snake_case, got {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable

    def to_json(self) -> dict[str, Any]:
        """The body of ``POST /tasks/{taskId}/fail`` (without the lease token)."""
        return {"error": {"code": self.code, "message": self.message}, "retryable": self.retryable}


class ApiError(Exception):
    """The server answered with an error (the project's error body:
    ``{"code", "message", "details"}``)."""

    def __init__(self, status: int, code: str, message: str, details: Mapping[str, Any] | None = None, *,
                 retry_after: float | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details: dict[str, Any] = dict(details or {})
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        """Whether asking again later can help (throttled, busy, a server error)."""
        return self.status == 429 or self.status >= 500


class AgentError(Exception):
    """The agent cannot run: bad credentials, a registration the server
    refuses (unknown facet, a capability id owned by someone else), or no
    capability declared. :meth:`Agent.run` raises it."""
