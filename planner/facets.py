"""The facet catalog: data in `planner/catalog/facets.json`, loaded once.

The file named by `settings.FLEX_FACET_CATALOG` is read on first use and kept
in memory; tests that override the setting get a fresh catalog through the
`setting_changed` signal.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

from planner.types import Facet

FACET_DIRECTIONS = ("input", "output", "bidirectional")

_lock = threading.Lock()
_catalog: dict[str, Facet] | None = None


def get_catalog() -> dict[str, Facet]:
    """Return the facet catalog, `{name: Facet}`, loading it on first use."""
    global _catalog
    catalog = _catalog
    if catalog is None:
        with _lock:
            if _catalog is None:
                _catalog = load_catalog(Path(settings.FLEX_FACET_CATALOG))
            catalog = _catalog
    return catalog


def reset_catalog() -> None:
    """Forget the loaded catalog; the next `get_catalog()` reads the file again."""
    global _catalog
    with _lock:
        _catalog = None


def load_catalog(path: Path) -> dict[str, Facet]:
    """Read and check a catalog file. Bad files fail loudly: a run must never guess."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ImproperlyConfigured(f"FLEX_FACET_CATALOG {path} cannot be read: {exc}") from exc
    entries = data.get("facets") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ImproperlyConfigured(f"FLEX_FACET_CATALOG {path} must be an object with a 'facets' list")
    catalog: dict[str, Facet] = {}
    for index, entry in enumerate(entries):
        facet = _facet_from_entry(entry, where=f"{path} facets[{index}]")
        if facet.name in catalog:
            raise ImproperlyConfigured(f"{path}: facet {facet.name!r} is declared twice")
        catalog[facet.name] = facet
    return catalog


def _facet_from_entry(entry: Any, *, where: str) -> Facet:
    if not isinstance(entry, dict):
        raise ImproperlyConfigured(f"{where} must be an object")
    name = entry.get("name")
    schema = entry.get("schema")
    direction = entry.get("direction", "bidirectional")
    if not isinstance(name, str) or not name:
        raise ImproperlyConfigured(f"{where} needs a non-empty string 'name'")
    if not isinstance(schema, (dict, bool)):
        raise ImproperlyConfigured(f"{where} ({name}) needs a 'schema' object")
    if direction not in FACET_DIRECTIONS:
        raise ImproperlyConfigured(f"{where} ({name}) has direction {direction!r}; expected one of {FACET_DIRECTIONS}")
    return Facet(
        name=name,
        title=str(entry.get("title") or name),
        description=str(entry.get("description") or ""),
        schema=schema if isinstance(schema, dict) else {} if schema else {"not": {}},
        semantics=str(entry.get("semantics") or ""),
        direction=direction,
    )


@receiver(setting_changed)
def _reload_on_setting_change(*, setting: str, **kwargs: Any) -> None:
    if setting == "FLEX_FACET_CATALOG":
        reset_catalog()
