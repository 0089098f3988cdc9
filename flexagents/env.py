"""Environment helpers that fail loudly on bad values.

A typo in an environment variable must stop the process at start-up with a
message that names the variable, never silently fall back to a default.
"""
from __future__ import annotations

import os

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return default if value is None else value


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be one of 1/0/true/false/yes/no/on/off, got {value!r}")


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, got {number}")
    if maximum is not None and number > maximum:
        raise ImproperlyConfigured(f"{name} must be <= {maximum}, got {number}")
    return number


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, got {number}")
    return number


def env_origins(name: str) -> list[str]:
    """A comma-separated list of web origins (`https://app.example.com`,
    `http://localhost:5173`): scheme, host and optional port, nothing else.
    A wildcard, a path or a trailing slash is refused: an origin the browser
    sends never matches them, so they would only hide a typo."""
    from urllib.parse import urlsplit

    origins = []
    for raw in (os.environ.get(name) or "").split(","):
        origin = raw.strip()
        if not origin:
            continue
        try:
            parts = urlsplit(origin)
            parts.port  # noqa: B018 — raises on a bad port
        except ValueError:
            raise ImproperlyConfigured(f"{name}: {origin!r} is not an origin") from None
        if parts.scheme not in {"http", "https"} or not parts.hostname or "*" in origin \
                or parts.path or parts.query or parts.fragment or parts.username is not None:
            raise ImproperlyConfigured(f"{name}: {origin!r} is not an origin; "
                                       "write scheme://host[:port], e.g. http://localhost:5173")
        origins.append(origin)
    return origins
