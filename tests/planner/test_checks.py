"""planner.checks: `manage.py check` catches broken capabilities and catalogs."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.core.checks.registry import registry as check_registry
from django.test import override_settings

from planner.checks import check_planner
from planner.facets import reset_catalog


@pytest.fixture(autouse=True)
def fresh_catalog() -> object:
    reset_catalog()
    yield
    reset_catalog()


def ids_of(messages: list[Any]) -> list[str]:
    return [message.id for message in messages]


def write_catalog(tmp_path: Path, facets: list[dict[str, Any]]) -> Path:
    path = tmp_path / "facets.json"
    path.write_text(json.dumps({"facets": facets}))
    return path


def test_the_check_is_registered() -> None:
    assert check_planner in check_registry.get_checks()


def test_the_shipped_configuration_passes() -> None:
    assert check_planner() == []


def test_a_capability_that_does_not_import_is_e001() -> None:
    with override_settings(FLEX_EXTRA_CAPABILITIES=["tests.planner.fakes.Missing"]):
        messages = check_planner()
    assert ids_of(messages) == ["planner.E001"]
    assert "tests.planner.fakes.Missing" in messages[0].msg


def test_a_class_that_is_not_a_capability_is_e001() -> None:
    with override_settings(FLEX_EXTRA_CAPABILITIES=["tests.planner.fakes.NotACapability"]):
        assert ids_of(check_planner()) == ["planner.E001"]


def test_a_capability_naming_an_unknown_facet_is_e002() -> None:
    with override_settings(FLEX_EXTRA_CAPABILITIES=["tests.planner.fakes.UnknownFacetCapability"]):
        messages = check_planner()
    assert ids_of(messages) == ["planner.E002"]
    assert "'favouriteColour'" in messages[0].msg


def test_a_facet_with_an_invalid_schema_is_e003(tmp_path: Path) -> None:
    path = write_catalog(tmp_path, [
        {"name": "ok", "schema": {"type": "string"}},
        {"name": "bad", "schema": {"type": "string", "pattern": "(?=a)a"}},
        {"name": "remote", "schema": {"$ref": "http://example.com/s.json"}},
    ])
    with override_settings(FLEX_FACET_CATALOG=path, FLEX_CAPABILITIES=[]):
        messages = check_planner()
    assert ids_of(messages) == ["planner.E003", "planner.E003"]
    assert {message.obj for message in messages} == {"bad", "remote"}


def test_a_catalog_that_cannot_be_loaded_is_e004(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with override_settings(FLEX_FACET_CATALOG=path):
        assert ids_of(check_planner()) == ["planner.E004"]


def test_two_paths_with_the_same_capability_id_are_e005() -> None:
    with override_settings(FLEX_EXTRA_CAPABILITIES=["tests.planner.fakes.AltStrategist",
                                                    "tests.planner.fakes.SameIdAsAlt"]):
        assert ids_of(check_planner()) == ["planner.E005"]

