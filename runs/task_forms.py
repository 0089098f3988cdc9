"""The form of a human task: generated from its output facets' JSON Schema.

The widget is django-jsonform's (a React editor driven by a JSON Schema); this
module only translates the facet catalog's schemas into the widget's dialect
(types spelled out for bare `enum`s, long strings as text areas, descriptions
as help texts) and maps the server's validation errors back onto the fields.

Validation is NOT the widget's: the form only parses the JSON the editor
posts, and the value goes to the task service, which validates it against
the node's contract exactly as `POST /tasks/{taskId}/complete` does (same
rules, same error paths, an invalid output counted as an attempt). Its
errors are shown beside the fields they name and above the form; what the
person typed is kept.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from django import forms
from django_jsonform.constants import JOIN_SYMBOL
from django_jsonform.forms.fields import JSONFormField
from django_jsonform.widgets import JSONFormWidget

from planner.facets import get_catalog
from planner.types import Facet

# Strings longer than this (or without a maximum) are edited in a text area.
SHORT_STRING_MAX = 200


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"


def widget_schema(schema: Mapping[str, Any], *, title: str = "", help_text: str = "") -> dict[str, Any]:
    """A facet's JSON Schema in django-jsonform's dialect (a copy; the
    validation keywords are kept, the widget shows them as hints)."""
    out: dict[str, Any] = copy.deepcopy(dict(schema))
    if "enum" in out and "type" not in out and out["enum"]:
        out["type"] = _json_type(out["enum"][0])
    kind = out.get("type")
    if isinstance(kind, list):  # ["string", "null"] → the first non-null type
        kind = next((k for k in kind if k != "null"), "string")
        out["type"] = kind
    if title and "title" not in out:
        out["title"] = title
    if kind == "object":
        # The person fills the declared fields; extra keys would need a prompt() per key.
        out.pop("additionalProperties", None)
        properties = out.get("properties") or {}
        required = set(out.get("required") or [])
        out["properties"] = {name: widget_schema(sub, title=str(sub.get("title") or name))
                             for name, sub in properties.items() if isinstance(sub, Mapping)}
        for name in required & set(out["properties"]):
            out["properties"][name].setdefault("required", True)
        if help_text:
            out.setdefault("description", help_text)
    elif kind == "array":
        items = out.get("items")
        out["items"] = widget_schema(items if isinstance(items, Mapping) else {"type": "string"})
        if help_text:
            out.setdefault("description", help_text)
    else:
        if kind is None:
            out["type"] = "string"
            kind = "string"
        if kind == "boolean":
            out.setdefault("default", False)  # an unticked box is `false`, not "left empty"
        if help_text:
            out.setdefault("help_text", help_text)
        if kind == "string" and "enum" not in out and "format" not in out \
                and int(out.get("maxLength") or SHORT_STRING_MAX + 1) > SHORT_STRING_MAX:
            out.setdefault("widget", "textarea")
    return out


def output_form_schema(output_facets: Iterable[str], catalog: Mapping[str, Facet] | None = None) -> dict[str, Any]:
    """One object whose properties are the task's output facets (every one
    required, as the node's contract says), each titled and explained as in
    the catalog. Its value is the `output` of a task completion."""
    catalog = get_catalog() if catalog is None else catalog
    properties: dict[str, Any] = {}
    for name in output_facets:
        facet = catalog.get(name)
        if facet is None:
            properties[name] = {"type": "string", "title": name, "widget": "textarea", "required": True}
            continue
        prop = widget_schema(facet.schema, title=facet.title, help_text=facet.description)
        prop.setdefault("required", True)
        properties[name] = prop
    return {"type": "object", "title": "Output", "properties": properties, "required": list(properties)}


class TaskOutputField(JSONFormField):
    """The generated editor; `clean()` parses the posted JSON and leaves the
    contract to the task service (one set of rules with the API)."""

    def validate(self, value: Any) -> None:
        forms.JSONField.validate(self, value)


class TaskOutputForm(forms.Form):
    """`output` (the generated editor) and the lease token the page was
    rendered with: a completion with an older token is `lease_lost`."""

    output = TaskOutputField(schema={"type": "object", "properties": {}})
    lease_token = forms.CharField(max_length=200, widget=forms.HiddenInput)

    def __init__(self, *args: Any, output_facets: Iterable[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        schema = output_form_schema(output_facets)
        self.form_schema = schema
        field = self.fields["output"]
        field.widget = JSONFormWidget(schema=schema)
        field.widget.is_required = True
        field.label = "Output"
        field.help_text = "The values this task produces; they are checked against the run's contract on submit."

    def output_value(self) -> dict[str, Any]:
        """What the person entered; an optional field left empty (the editor
        posts `null`) is left out, as it would be from an agent."""
        value = self.cleaned_data.get("output")
        return drop_empty_optionals(value, self.form_schema) if isinstance(value, dict) else {}

    def add_contract_errors(self, errors: Iterable[Mapping[str, Any]], *, output_facets: Iterable[str]) -> None:
        """The service's `details.errors` (`{path, message}`, JSON pointers)
        beside the fields they name, and listed above the form."""
        facets = set(output_facets)
        error_map: dict[str, list[str]] = {}
        listed = []
        for error in errors:
            path = str(error.get("path") or "/")
            message = str(error.get("message") or "invalid value")
            coords = pointer_coords(path, facets)
            error_map.setdefault(JOIN_SYMBOL.join(coords), []).append(message)
            listed.append(f"{path}: {message}" if path not in ("", "/") else message)
        widget = self.fields["output"].widget
        if error_map and isinstance(widget, JSONFormWidget):
            widget.add_error(error_map)
        for line in listed:
            self.add_error("output", line)


def drop_empty_optionals(value: Any, schema: Mapping[str, Any]) -> Any:
    """`null` under a key its object does not require is removed, at any depth."""
    if isinstance(value, dict):
        found = schema.get("properties")
        props: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        listed = schema.get("required")
        required: list[Any] = listed if isinstance(listed, list) else []
        return {k: drop_empty_optionals(v, props.get(k) or {}) for k, v in value.items()
                if not (v is None and k not in required)}
    if isinstance(value, list):
        found_items = schema.get("items")
        items: Mapping[str, Any] = found_items if isinstance(found_items, Mapping) else {}
        return [drop_empty_optionals(v, items) for v in value]
    return value


def pointer_coords(path: str, facets: set[str]) -> list[str]:
    """`/post_copy` or `/output/final_copy/text` → the widget's coordinates
    (`["post_copy"]`, `["final_copy", "text"]`)."""
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path.strip("/").split("/") if p != ""]
    if parts and parts[0] == "output" and "output" not in facets:
        parts = parts[1:]
    return parts
