"""runs.task_forms: the human-task form is django-jsonform's editor driven by
the output facets' schemas; validation is the task service's (not the widget's)."""
from __future__ import annotations

import json

import pytest
from django_jsonform.constants import JOIN_SYMBOL
from django_jsonform.validators import JSONSchemaValidator

from planner.facets import get_catalog
from runs.task_forms import TaskOutputForm, output_form_schema, pointer_coords, widget_schema


def widget_config(form: TaskOutputForm) -> dict:
    html = str(form["output"])
    import html as html_lib
    import re
    match = re.search(r'data-django-jsonform="([^"]*)"', html)
    assert match, html
    return json.loads(html_lib.unescape(match.group(1)))


@pytest.mark.parametrize("facet", sorted(get_catalog()))
def test_every_catalog_facet_becomes_a_schema_the_library_understands(facet: str) -> None:
    schema = output_form_schema([facet])
    # The library's own schema walker accepts it: a missing facet is reported
    # by name, not as "Outermost schema type must be ..." or a crash.
    with pytest.raises(Exception) as raised:
        JSONSchemaValidator(schema)({})
    assert facet in str(raised.value)
    config = widget_config(TaskOutputForm(output_facets=[facet]))
    prop = config["schema"]["properties"][facet]
    assert prop["title"] == get_catalog()[facet].title
    assert prop["type"] in ("object", "array", "string", "number", "integer", "boolean")


def test_bare_enums_get_a_type_long_strings_a_text_area_and_required_fields_are_marked() -> None:
    schema = widget_schema(get_catalog()["qa_report"].schema)
    severity = schema["properties"]["findings"]["items"]["properties"]["severity"]
    assert severity["type"] == "string" and severity["enum"] == ["info", "warning", "error"]
    assert severity["required"] is True
    assert "additionalProperties" not in schema
    text = widget_schema(get_catalog()["final_copy"].schema)["properties"]["text"]
    assert text["widget"] == "textarea" and text["minLength"] == 20
    headline = widget_schema(get_catalog()["final_copy"].schema)["properties"]["headline"]
    assert "widget" not in headline  # maxLength 200: one line
    # The catalog is not modified.
    assert "type" not in get_catalog()["qa_report"].schema["properties"]["findings"]["items"]["properties"]["severity"]


def test_the_form_parses_the_posted_json_and_leaves_the_contract_to_the_service() -> None:
    # An empty text violates the facet's minLength, but the form does not
    # judge it: the service does, with the API's rules (and counts the attempt).
    form = TaskOutputForm({"output": json.dumps({"final_copy": {"text": ""}}), "lease_token": "t"},
                          output_facets=["final_copy"])
    assert form.is_valid(), form.errors
    assert form.output_value() == {"final_copy": {"text": ""}}
    broken = TaskOutputForm({"output": "{not json", "lease_token": "t"}, output_facets=["final_copy"])
    assert not broken.is_valid()
    assert "output" in broken.errors


def test_contract_errors_land_beside_their_fields_and_keep_what_was_typed() -> None:
    typed = {"final_copy": {"text": "short", "readyToPublish": True}}
    form = TaskOutputForm({"output": json.dumps(typed), "lease_token": "t"}, output_facets=["final_copy"])
    assert form.is_valid()
    form.add_contract_errors([{"path": "/final_copy/text", "message": "should have at least 20 characters"},
                              {"path": "/", "message": "missing post_copy"}], output_facets=["final_copy"])
    config = widget_config(form)
    assert config["errorMap"][JOIN_SYMBOL.join(["final_copy", "text"])] == ["should have at least 20 characters"]
    assert json.loads(config["data"]) == typed  # nothing lost
    assert "/final_copy/text: should have at least 20 characters" in form.errors["output"]
    assert "missing post_copy" in form.errors["output"]


def test_pointer_coords() -> None:
    assert pointer_coords("/output/final_copy/text", {"final_copy"}) == ["final_copy", "text"]
    assert pointer_coords("/copyVariants/0/body", {"copyVariants"}) == ["copyVariants", "0", "body"]
    assert pointer_coords("/a~1b", {"a/b"}) == ["a/b"]
    assert pointer_coords("/", {"x"}) == []


def test_optional_fields_left_empty_are_left_out_and_an_unticked_box_is_false() -> None:
    schema = output_form_schema(["final_copy", "qa_report"])
    assert schema["properties"]["final_copy"]["properties"]["readyToPublish"]["default"] is False
    posted = {"final_copy": {"headline": "", "text": "x" * 30, "changes": [], "readyToPublish": False},
              "qa_report": {"score": None, "findings": [{"severity": "info", "message": "m", "variant": None}]}}
    form = TaskOutputForm({"output": json.dumps(posted), "lease_token": "t"}, output_facets=["final_copy", "qa_report"])
    assert form.is_valid()
    value = form.output_value()
    assert value["qa_report"]["findings"] == [{"severity": "info", "message": "m"}]  # optional: dropped
    assert value["qa_report"]["score"] is None  # required: kept, the contract reports it
    assert value["final_copy"]["headline"] == ""
