"""Query-parameter parsing shared by the API views."""
from __future__ import annotations

from typing import Any, Mapping

from flexagents.errors import ValidationFailed


def int_param(params: Mapping[str, Any], name: str, *, default: int, low: int, high: int,
              errors: list[dict[str, str]] | None = None) -> int:
    """An integer query parameter in [low, high], `default` when absent.

    A bad value raises `validation_failed` naming the parameter, or — when
    the caller collects several problems — is appended to `errors` (and the
    default returned) so one response can name them all.
    """
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError):
        value = low - 1
    if low <= value <= high:
        return value
    error = {"path": f"/{name}", "message": f"expected an integer from {low} to {high}"}
    if errors is None:
        raise ValidationFailed(f"The query parameter {name} must be an integer from {low} to {high}.",
                               details={"errors": [error]})
    errors.append(error)
    return default
