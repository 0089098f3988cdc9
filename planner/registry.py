"""The capability registry: capability ids mapped to classes.

Four sources, one catalog (`get_registry()`):

1. built-ins named by dotted paths in `settings.FLEX_CAPABILITIES` and
   `settings.FLEX_EXTRA_CAPABILITIES` (test or deployment extras), imported
   on first use, not at start-up, so a broken capability makes `manage.py
   check` and the first run fail loudly instead of the whole process;
2. human capabilities declared in `settings.FLEX_HUMAN_CAPABILITIES`
   (`agentType: "human"`, done by people in the console, always active);
3. capabilities of agents registered over HTTP (`planner.models`), with the
   status of their agent;
4. language-model capabilities declared as data (`settings.FLEX_LLM_CAPABILITIES`,
   `planner.llm`): one class per declaration whose endpoint is configured in
   the environment; the others are left out.

Sources 2 and 3 become `ExternalCapability` subclasses: the engine never
calls their `run`; it commits their nodes as tasks. The merged registry is
cached per process and rebuilt when `CatalogVersion` moves (checked at most
every `FLEX_CATALOG_RECHECK_SECONDS`, and at once in the process that made
the change: `invalidate_external()`).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from planner.types import CAPABILITY_KINDS, Capability, CapabilityError, ContextBundle

logger = logging.getLogger("planner.registry")

_SETTINGS = ("FLEX_CAPABILITIES", "FLEX_EXTRA_CAPABILITIES", "FLEX_LLM_CAPABILITIES")


class UnknownCapabilityId(KeyError):
    """No capability with this id is registered."""

    def __init__(self, capability_id: str) -> None:
        super().__init__(capability_id)
        self.capability_id = capability_id

    def __str__(self) -> str:
        return f"no capability {self.capability_id!r} is registered"


class CapabilityImportError(ImproperlyConfigured):
    """A configured dotted path does not name an importable Capability subclass."""


def load_capability_class(dotted_path: str) -> type[Capability]:
    """Import one capability class, with a message that names the path and the setting."""
    try:
        cls = import_string(dotted_path)
    except ImportError as exc:
        raise CapabilityImportError(f"capability {dotted_path!r} cannot be imported: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Capability)):
        raise CapabilityImportError(f"capability {dotted_path!r} is not a subclass of planner.types.Capability")
    _check_declaration(cls, where=dotted_path)
    return cls


def _check_declaration(cls: type[Capability], *, where: str) -> None:
    capability_id = getattr(cls, "capability_id", None)
    if not isinstance(capability_id, str) or not capability_id:
        raise CapabilityImportError(f"capability {where!r} has no capability_id")
    if getattr(cls, "kind", None) not in CAPABILITY_KINDS:
        raise CapabilityImportError(f"capability {where!r} has kind {getattr(cls, 'kind', None)!r}; "
                                    f"expected one of {', '.join(CAPABILITY_KINDS)}")


class CapabilityRegistry:
    """Capability classes by id, with one shared instance each (capabilities hold no run state)."""

    def __init__(self, entries: Iterable[str | type[Capability]] = ()) -> None:
        self._classes: dict[str, type[Capability]] = {}
        self._instances: dict[str, Capability] = {}
        self._lock = threading.Lock()
        for entry in entries:
            self.register(entry)

    def register(self, dotted_path_or_class: str | type[Capability]) -> type[Capability]:
        """Add a capability; a later registration with the same id replaces the earlier one."""
        if isinstance(dotted_path_or_class, str):
            cls = load_capability_class(dotted_path_or_class)
        else:
            cls = dotted_path_or_class
            if not (isinstance(cls, type) and issubclass(cls, Capability)):
                raise CapabilityImportError(f"{cls!r} is not a subclass of planner.types.Capability")
            _check_declaration(cls, where=f"{cls.__module__}.{cls.__qualname__}")
        with self._lock:
            self._classes[cls.capability_id] = cls
            self._instances.pop(cls.capability_id, None)
        return cls

    def ids(self) -> list[str]:
        return sorted(self._classes)

    def classes(self) -> list[type[Capability]]:
        return [self._classes[capability_id] for capability_id in self.ids()]

    def get_class(self, capability_id: str) -> type[Capability]:
        try:
            return self._classes[capability_id]
        except KeyError:
            raise UnknownCapabilityId(capability_id) from None

    def get(self, capability_id: str) -> Capability:
        """The shared instance of a capability; raises `UnknownCapabilityId`."""
        cls = self.get_class(capability_id)
        with self._lock:
            instance = self._instances.get(capability_id)
            if instance is None:
                instance = self._instances[capability_id] = cls()
        return instance

    def describe_all(self) -> list[dict[str, Any]]:
        return [cls.describe() for cls in self.classes()]

    def __contains__(self, capability_id: object) -> bool:
        return capability_id in self._classes

    def __len__(self) -> int:
        return len(self._classes)


class ExternalCapability(Capability):
    """A capability done outside the worker (an agent over HTTP, or a person):
    its nodes become tasks (`runs.engine.tasks`), so `run` is never called."""

    runs_on = "agent"

    def run(self, bundle: ContextBundle) -> dict[str, Any]:
        raise CapabilityError(f"{self.capability_id} runs outside the server; its nodes are tasks",
                              code="external_capability", retryable=False)


def external_class(*, capability_id: str, display_name: str, kind: str, agent_type: str,
                   input_facets: Iterable[str], optional_input_facets: Iterable[str], output_facets: Iterable[str],
                   description: str = "", version: str = "", runs_on: str = "agent", agent_id: str | None = None,
                   status: str = "active") -> type[Capability]:
    """A catalog entry for a capability outside the server, as a class like the built-ins."""
    attrs = {
        "capability_id": capability_id, "display_name": display_name or capability_id, "kind": kind,
        "agent_type": agent_type, "input_facets": tuple(input_facets),
        "optional_input_facets": tuple(optional_input_facets), "output_facets": tuple(output_facets),
        "description": description, "version": version, "runs_on": runs_on, "agent_id": agent_id,
        "status": status, "__module__": __name__,
    }
    name = "External_" + "".join(ch if ch.isalnum() else "_" for ch in capability_id)
    cls = type(name, (ExternalCapability,), attrs)
    _check_declaration(cls, where=capability_id)
    return cls


def human_capability_classes() -> list[type[Capability]]:
    """`settings.FLEX_HUMAN_CAPABILITIES`: dicts with the register endpoint's
    capability keys (camelCase); `agentType` is always "human"."""
    out = []
    for item in getattr(settings, "FLEX_HUMAN_CAPABILITIES", []) or []:
        try:
            out.append(external_class(
                capability_id=item["capabilityId"], display_name=item.get("displayName", ""), kind=item["kind"],
                agent_type="human", input_facets=item.get("inputFacets", []),
                optional_input_facets=item.get("optionalInputFacets", []), output_facets=item["outputFacets"],
                description=item.get("description", ""), version=item.get("version", ""), runs_on="people"))
        except (KeyError, TypeError) as exc:
            raise CapabilityImportError(f"FLEX_HUMAN_CAPABILITIES entry {item!r} is incomplete: {exc}") from exc
    return out


def _registered_classes() -> list[type[Capability]]:
    """The capabilities of agents registered in the database, with their status."""
    from planner.models import AgentCapability, AgentStatus

    rows = AgentCapability.objects.select_related("agent").order_by("capability_id")
    out = []
    for row in rows:
        active = row.status == AgentStatus.ACTIVE and row.agent.status == AgentStatus.ACTIVE
        out.append(external_class(
            capability_id=row.capability_id, display_name=row.display_name, kind=row.kind,
            agent_type=row.agent_type, input_facets=row.input_facets,
            optional_input_facets=row.optional_input_facets, output_facets=row.output_facets,
            description=row.description, version=row.version,
            runs_on="people" if row.agent_type == "human" else "agent", agent_id=row.agent_id,
            status="active" if active else "inactive"))
    return out


def catalog_version() -> int:
    """The database's registry version (0 before any registration)."""
    from planner.models import CatalogVersion

    return CatalogVersion.objects.filter(pk=1).values_list("version", flat=True).first() or 0


_registry_lock = threading.Lock()
_registry: CapabilityRegistry | None = None
# (built-in registry it was made from, catalog version, monotonic time checked, merged registry)
_merged: tuple[CapabilityRegistry, int, float, CapabilityRegistry] | None = None


def configured_paths() -> list[str]:
    return [*getattr(settings, "FLEX_CAPABILITIES", []), *getattr(settings, "FLEX_EXTRA_CAPABILITIES", [])]


def llm_capability_classes() -> list[type[Capability]]:
    """One class per language-model declaration whose endpoint is configured
    (with no `OPENAI_API_KEY`, the demo's `llm.*` twins are left out)."""
    from planner.llm import active_declarations

    declarations = active_declarations()
    if not declarations:
        return []  # the openai SDK (seconds to import on a busy machine) is not loaded
    from planner.capabilities.llm import capability_class

    return [capability_class(declaration) for declaration in declarations]


def builtin_registry() -> CapabilityRegistry:
    """The in-process capabilities of settings (Python classes and
    language-model declarations), built on first use."""
    global _registry
    registry = _registry
    if registry is None:
        with _registry_lock:
            if _registry is None:
                built = CapabilityRegistry(configured_paths())
                for cls in llm_capability_classes():
                    built.register(cls)
                _registry = built
            registry = _registry
    return registry


def get_registry() -> CapabilityRegistry:
    """The whole catalog: built-ins, settings-declared human capabilities and
    registered agents' capabilities (see the module docstring)."""
    global _merged
    builtin = builtin_registry()
    now = time.monotonic()
    cached = _merged
    recheck = float(getattr(settings, "FLEX_CATALOG_RECHECK_SECONDS", 1.0))
    if cached is not None and cached[0] is builtin and now - cached[2] < recheck:
        return cached[3]
    try:
        version = catalog_version()
    except Exception:  # noqa: BLE001 — no table yet (before migrate) or no database: built-ins only
        logger.debug("agent registry unavailable", exc_info=True)
        version = -1
    if cached is not None and cached[0] is builtin and cached[1] == version:
        _merged = (builtin, version, now, cached[3])
        return cached[3]
    merged = CapabilityRegistry()
    merged._classes.update(builtin._classes)
    merged._instances = builtin._instances  # shared: one instance per built-in class
    merged._lock = builtin._lock
    externals = [*human_capability_classes(), *(_registered_classes() if version >= 0 else [])]
    for cls in externals:
        if cls.capability_id in builtin._classes:
            logger.error("external capability shadows a built-in; ignored", extra={"capability_id": cls.capability_id})
            continue
        merged._classes[cls.capability_id] = cls
    _merged = (builtin, version, now, merged)
    return merged


def invalidate_external() -> None:
    """The registered agents changed in this process: rebuild on next use."""
    global _merged
    _merged = None


def reset_registry() -> None:
    """Forget the registry; the next `get_registry()` rebuilds it from settings."""
    global _registry, _merged
    with _registry_lock:
        _registry = None
        _merged = None


@receiver(setting_changed)
def _rebuild_on_setting_change(*, setting: str, **kwargs: Any) -> None:
    if setting in _SETTINGS or setting in ("FLEX_HUMAN_CAPABILITIES", "FLEX_CATALOG_RECHECK_SECONDS"):
        reset_registry()
