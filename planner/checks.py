"""System checks: `manage.py check` fails before a run would.

- planner.E001: a configured capability cannot be imported (or is not a Capability);
- planner.E002: a capability names a facet that is not in the catalog;
- planner.E003: a facet's schema is not a valid, safe JSON Schema;
- planner.E004: the facet catalog cannot be loaded;
- planner.E005: two configured paths declare the same capability id;
- planner.E006: the language-model declarations (FLEX_LLM_CAPABILITIES) cannot be loaded;
- planner.E007: an active language-model declaration names an unknown facet or reuses a capability id.
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
    return [*_facet_schema_errors(catalog), *_capability_errors(catalog), *_llm_errors(catalog)]


def _llm_errors(catalog: dict[str, Facet]) -> list[CheckMessage]:
    """The file is checked whether or not an endpoint is configured (a broken
    file must fail `manage.py check` before anyone sets a key); the facets and
    ids of the declarations that are active (their endpoint configured, so
    they are registered). A deployment with its own facet catalog is not
    held to the demo twins' facets until it configures their endpoint."""
    from planner.llm import endpoint_configured, load_declarations
    from planner.registry import CapabilityImportError, configured_paths, load_capability_class

    try:
        declarations = load_declarations()
    except ImproperlyConfigured as exc:
        return [Error(str(exc), hint="Fix the file FLEX_LLM_CAPABILITIES names (docs/models.md).",
                      id="planner.E006")]
    taken = set()
    for path in configured_paths():
        try:
            taken.add(load_capability_class(path).capability_id)
        except CapabilityImportError:
            continue  # reported as planner.E001
    errors: list[CheckMessage] = []
    for declaration in declarations:
        if not endpoint_configured(declaration.endpoint):
            continue
        where = f"llm:{declaration.capability_id}"
        if declaration.capability_id in taken:
            errors.append(Error(f"Language-model capability {declaration.capability_id!r} reuses the id of a "
                                "configured capability", obj=where, id="planner.E007"))
        named = [*declaration.input_facets, *declaration.optional_input_facets, *declaration.output_facets]
        errors += [Error(f"Language-model capability {declaration.capability_id!r} names facet {name!r}, which is "
                         "not in the catalog", obj=where, id="planner.E007")
                   for name in dict.fromkeys(named) if name not in catalog]
    return errors


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
