"""planner.facets: the catalog is data, loaded once, reloaded when its setting changes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from planner.contracts import validate_instance
from planner.facets import get_catalog, load_catalog, reset_catalog
from tests.planner.envelopes import VALID, load_envelope

REQUIRED_FACETS = {"company_information", "post_context", "toneOfVoice", "creative_brief", "strategic_rationale",
                   "handoff_summary", "copyVariants", "post_copy", "qa_report"}


@pytest.fixture(autouse=True)
def fresh_catalog() -> object:
    reset_catalog()
    yield
    reset_catalog()


def test_it_has_the_demo_facets() -> None:
    assert REQUIRED_FACETS <= set(get_catalog())


def test_it_is_loaded_once() -> None:
    assert get_catalog() is get_catalog()


def test_every_facet_has_a_known_direction() -> None:
    assert {facet.direction for facet in get_catalog().values()} <= {"input", "output", "bidirectional"}
    assert get_catalog()["company_information"].direction == "input"
    assert get_catalog()["copyVariants"].direction == "output"


def test_a_facet_serialises_to_the_documented_keys() -> None:
    assert set(get_catalog()["post_copy"].to_dict()) == {"name", "title", "description", "schema", "semantics",
                                                         "direction"}


@pytest.mark.parametrize("name", VALID)
def test_every_example_input_validates_against_its_facet(name: str) -> None:
    catalog = get_catalog()
    for facet, value in load_envelope(name)["inputs"].items():
        assert validate_instance(catalog[facet].schema, value) == [], (name, facet)


def test_the_audience_is_optional_in_the_post_context() -> None:
    value = load_envelope("clarify-audience")["inputs"]["post_context"]
    assert "audience" not in value
    assert validate_instance(get_catalog()["post_context"].schema, value) == []


def test_the_company_name_is_required() -> None:
    assert validate_instance(get_catalog()["company_information"].schema, {"positioning": "x"})


def test_copy_variants_need_a_non_empty_headline_body_and_call_to_action() -> None:
    schema = get_catalog()["copyVariants"].schema
    assert validate_instance(schema, []) != []
    assert validate_instance(schema, [{"headline": "", "body": "b", "callToAction": "c"}]) != []
    assert validate_instance(schema, [{"headline": "h", "body": "b", "callToAction": "c"}]) == []


def test_the_qa_score_is_between_zero_and_one() -> None:
    schema = get_catalog()["qa_report"].schema
    assert validate_instance(schema, {"score": 1.5, "findings": []}) != []
    assert validate_instance(schema, {"score": 0.5}) != []


def test_changing_the_setting_reloads_the_catalog(tmp_path: Path) -> None:
    path = tmp_path / "facets.json"
    path.write_text(json.dumps({"facets": [{"name": "only", "schema": {"type": "string", "x-sensitive": True},
                                            "direction": "input"}]}))
    get_catalog()
    with override_settings(FLEX_FACET_CATALOG=path):
        assert list(get_catalog()) == ["only"]
        assert get_catalog()["only"].schema["x-sensitive"] is True
    assert "copyVariants" in get_catalog()


@pytest.mark.parametrize(("content", "message"), [
    ("{oops", "cannot be read"),
    ('{"facets": {}}', "'facets' list"),
    ('{"facets": [{"schema": {}}]}', "non-empty string 'name'"),
    ('{"facets": [{"name": "a", "schema": {}, "direction": "sideways"}]}', "direction 'sideways'"),
    ('{"facets": [{"name": "a", "schema": {}}, {"name": "a", "schema": {}}]}', "declared twice"),
])
def test_a_bad_catalog_fails_loudly(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "facets.json"
    path.write_text(content)
    with pytest.raises(ImproperlyConfigured, match=message):
        load_catalog(path)


def test_a_missing_catalog_file_fails_loudly(tmp_path: Path) -> None:
    with pytest.raises(ImproperlyConfigured, match="cannot be read"):
        load_catalog(tmp_path / "absent.json")
