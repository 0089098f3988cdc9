"""The capability registry: capability ids mapped to classes named by dotted paths.

Paths come from `settings.FLEX_CAPABILITIES` (the built-ins) and
`settings.FLEX_EXTRA_CAPABILITIES` (test or deployment extras). They are
imported on first use, not at start-up, so a broken capability makes
`manage.py check` and the first run fail loudly instead of the whole process.
Language-model capabilities are declared as data (`settings.FLEX_LLM_CAPABILITIES`,
`planner.llm`): one class is made per declaration whose endpoint is
configured in the environment; the others are left out.
"""
from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from planner.types import CAPABILITY_KINDS, Capability

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


_registry_lock = threading.Lock()
_registry: CapabilityRegistry | None = None


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


def get_registry() -> CapabilityRegistry:
    """The process-wide registry, built from settings on first use."""
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


def reset_registry() -> None:
    """Forget the registry; the next `get_registry()` rebuilds it from settings."""
    global _registry
    with _registry_lock:
        _registry = None


@receiver(setting_changed)
def _rebuild_on_setting_change(*, setting: str, **kwargs: Any) -> None:
    if setting in _SETTINGS:
        reset_registry()
