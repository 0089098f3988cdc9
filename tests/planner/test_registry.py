"""planner.registry: capabilities by id, from dotted paths in settings, imported lazily."""
from __future__ import annotations

import subprocess
import sys

import pytest
from django.conf import settings
from django.test import override_settings

from planner.registry import (
    CapabilityImportError,
    CapabilityRegistry,
    UnknownCapabilityId,
    get_registry,
    reset_registry,
)
from planner.types import Capability
from tests.planner import fakes

BUILT_IN = ["copywriter.ShortformDrafting", "copywriter.SocialpostDrafting", "flex.OutputMapper", "qa.ContentReview", "strategist.SocialPosting"]


@pytest.fixture(autouse=True)
def fresh_registry() -> object:
    reset_registry()
    yield
    reset_registry()


def test_it_holds_the_configured_capabilities() -> None:
    assert get_registry().ids() == BUILT_IN


def test_it_is_built_once_and_shared() -> None:
    assert get_registry() is get_registry()


def test_reset_rebuilds_it() -> None:
    first = get_registry()
    reset_registry()
    assert get_registry() is not first


def test_get_returns_a_shared_instance_of_the_capability() -> None:
    instance = get_registry().get("qa.ContentReview")
    assert isinstance(instance, Capability)
    assert type(instance).__name__ == "ContentReview"
    assert get_registry().get("qa.ContentReview") is instance


def test_an_unknown_id_raises_a_key_error_that_names_it() -> None:
    with pytest.raises(UnknownCapabilityId) as exc:
        get_registry().get("ghost.Writer")
    assert isinstance(exc.value, KeyError)
    assert str(exc.value) == "no capability 'ghost.Writer' is registered"


def test_it_supports_membership() -> None:
    assert "strategist.SocialPosting" in get_registry()
    assert "ghost.Writer" not in get_registry()


def test_classes_and_descriptions_come_in_id_order() -> None:
    registry = get_registry()
    assert [cls.capability_id for cls in registry.classes()] == BUILT_IN
    assert [item["capabilityId"] for item in registry.describe_all()] == BUILT_IN
    assert all(item["status"] == "active" for item in registry.describe_all())


def test_extra_capabilities_from_settings_are_registered_and_dropped_with_the_setting() -> None:
    with override_settings(FLEX_EXTRA_CAPABILITIES=["tests.planner.fakes.AltStrategist"]):
        assert "alt.Strategist" in get_registry()
    assert "alt.Strategist" not in get_registry()


def test_changing_the_built_in_list_rebuilds_the_registry() -> None:
    get_registry()
    with override_settings(FLEX_CAPABILITIES=["planner.capabilities.qa.ContentReview"]):
        assert get_registry().ids() == ["qa.ContentReview"]


def test_register_accepts_a_class_or_a_dotted_path() -> None:
    registry = CapabilityRegistry()
    registry.register(fakes.AltStrategist)
    registry.register("tests.planner.fakes.Summariser")
    assert registry.ids() == ["alt.Strategist", "summary.Writer"]
    assert len(registry) == 2


def test_a_later_registration_replaces_an_earlier_one_with_the_same_id() -> None:
    class Replacement(fakes.AltStrategist):
        display_name = "Replacement"

    registry = CapabilityRegistry([fakes.AltStrategist])
    first = registry.get("alt.Strategist")
    registry.register(Replacement)
    assert isinstance(registry.get("alt.Strategist"), Replacement)
    assert registry.get("alt.Strategist") is not first


def test_a_path_that_does_not_import_fails_with_a_clear_message() -> None:
    with override_settings(FLEX_EXTRA_CAPABILITIES=["tests.planner.fakes.DoesNotExist"]):
        with pytest.raises(CapabilityImportError, match="'tests.planner.fakes.DoesNotExist' cannot be imported"):
            get_registry()


def test_a_missing_module_fails_with_a_clear_message() -> None:
    with pytest.raises(CapabilityImportError, match="'nowhere.at.All' cannot be imported"):
        CapabilityRegistry(["nowhere.at.All"])


def test_a_class_that_is_not_a_capability_is_refused() -> None:
    with pytest.raises(CapabilityImportError, match="not a subclass"):
        CapabilityRegistry(["tests.planner.fakes.NotACapability"])


def test_a_capability_with_an_unknown_kind_is_refused() -> None:
    class Odd(fakes.AltStrategist):
        kind = "magic"

    with pytest.raises(CapabilityImportError, match="kind 'magic'"):
        CapabilityRegistry([Odd])


def test_capabilities_are_not_imported_at_django_start_up() -> None:
    code = ("import django, sys; django.setup(); "
            "print(any(m in sys.modules for m in ('planner.capabilities.strategist', "
            "'planner.capabilities.copywriter', 'planner.capabilities.qa')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=settings.BASE_DIR, env={"DJANGO_SETTINGS_MODULE": "flexagents.settings",
                                                        "PATH": "/usr/bin:/bin"})
    assert result.stdout.strip() == "False"
