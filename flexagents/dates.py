"""Timestamps as every surface shows them (API.md: ISO 8601 with a timezone)."""
from __future__ import annotations

from datetime import datetime, timezone as dt_timezone


def iso(dt: datetime) -> str:
    """UTC, millisecond precision, `Z` suffix: `2026-03-01T10:00:00.123Z`."""
    return dt.astimezone(dt_timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_or_none(dt: datetime | None) -> str | None:
    return iso(dt) if dt else None
