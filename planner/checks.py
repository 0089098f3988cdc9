"""System checks: `manage.py check` fails before a run would.

- planner.E001: a configured capability cannot be imported (or is not a Capability);
- planner.E002: a capability names a facet that is not in the catalog;
- planner.E003: a facet's schema is not a valid, safe JSON Schema;
- planner.E004: the facet catalog cannot be loaded;
- planner.E005: two configured paths declare the same capability id.
"""
from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Error, register
from django.core.exceptions import ImproperlyConfigured

from planner.capabilities.output import OUTPUT_FACET, OUTPUT_MAPPER_ID
from planner.contracts import check_schema
from planner.types import Capability, Facet


@register()
def check_planner(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    from planner.facets import get_catalog

    try:
        catalog = get_catalog()
    except ImproperlyConfigured as exc:
        return [Error(str(exc), hint="Point FLEX_FACET_CATALOG at a valid facets.json.", id="planner.E004")]
    return [*_facet_schema_errors(catalog), *_capability_errors(catalog)]


def _facet_schema_errors(catalog: dict[str, Facet]) -> list[CheckMessage]:
    return [
        Error(f"Facet {facet.name!r} has an invalid schema at {problem['path']}: {problem['message']}",
              obj=facet.name, id="planner.E003")
        for facet in catalog.values() for problem in check_schema(facet.schema)
    ]


def _capability_errors(catalog: dict[str, Facet]) -> list[CheckMessage]:
    from planner.registry import CapabilityImportError, configured_paths, load_capability_class

    errors: list[CheckMessage] = []
    seen: dict[str, str] = {}
    for path in configured_paths():
        try:
            cls = load_capability_class(path)
        except CapabilityImportError as exc:
            errors.append(Error(str(exc), hint="Fix FLEX_CAPABILITIES or FLEX_EXTRA_CAPABILITIES.",
                                obj=path, id="planner.E001"))
            continue
        if cls.capability_id in seen and seen[cls.capability_id] != path:
            errors.append(Error(f"Capability id {cls.capability_id!r} is declared by both {seen[cls.capability_id]} "
                                f"and {path}", obj=path, id="planner.E005"))
        seen[cls.capability_id] = path
        errors += _unknown_facet_errors(cls, path, catalog)
    return errors


def _unknown_facet_errors(cls: type[Capability], path: str, catalog: dict[str, Facet]) -> list[CheckMessage]:
    named = [*cls.input_facets, *cls.optional_input_facets, *cls.output_facets]
    if cls.capability_id == OUTPUT_MAPPER_ID:
        # The mapper's `output` is the caller's shape, not a catalog facet.
        named = [name for name in named if name != OUTPUT_FACET]
    return [
        Error(f"Capability {cls.capability_id!r} ({path}) names facet {name!r}, which is not in the catalog",
              hint="Add the facet to the catalog or fix the capability.", obj=path, id="planner.E002")
        for name in dict.fromkeys(named) if name not in catalog
    ]
