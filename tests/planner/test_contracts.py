"""planner.contracts: compiling facets, cached validators, and refusing unsafe schemas."""
from __future__ import annotations

import socket
import time
import urllib.request
from typing import Any

import pytest

from planner import contracts
from planner.contracts import (
    CompiledContract,
    check_schema,
    compile_facets,
    get_validator,
    json_pointer,
    schema_hash,
    validate_instance,
)
from planner.facets import get_catalog


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a URL, a file URL or a socket fails the test."""

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"network or file access attempted: {args!r}")

    monkeypatch.setattr(urllib.request, "urlopen", forbidden)
    monkeypatch.setattr(socket, "create_connection", forbidden)
    monkeypatch.setattr(socket, "getaddrinfo", forbidden)
    monkeypatch.setattr(socket.socket, "connect", forbidden)


# --- schema_hash ----------------------------------------------------------------------

def test_the_schema_hash_ignores_key_order() -> None:
    assert schema_hash({"type": "object", "required": ["a"]}) == schema_hash({"required": ["a"], "type": "object"})


def test_the_schema_hash_is_the_sha256_of_compact_sorted_json() -> None:
    import hashlib

    assert schema_hash({"b": 1, "a": [1, 2]}) == hashlib.sha256(b'{"a":[1,2],"b":1}').hexdigest()


def test_the_schema_hash_changes_when_the_schema_does() -> None:
    assert schema_hash({"type": "string"}) != schema_hash({"type": "integer"})


# --- compile_facets ---------------------------------------------------------------------

def test_it_compiles_facets_into_one_object_schema_requiring_each() -> None:
    compiled = compile_facets(["copyVariants", "qa_report"])
    catalog = get_catalog()
    assert isinstance(compiled, CompiledContract)
    assert compiled.schema["type"] == "object"
    assert compiled.schema["required"] == ["copyVariants", "qa_report"]
    assert compiled.schema["properties"]["qa_report"] == catalog["qa_report"].schema
    assert compiled.schema["additionalProperties"] is True
    assert compiled.provenance == {"copyVariants": "copyVariants", "qa_report": "qa_report"}
    assert compiled.schema_hash == schema_hash(compiled.schema)


def test_a_compiled_contract_validates_facet_values() -> None:
    schema = compile_facets(["qa_report"]).schema
    assert validate_instance(schema, {"qa_report": {"score": 0.5, "findings": []}}) == []
    errors = validate_instance(schema, {"qa_report": {"score": 2, "findings": []}})
    assert errors == [{"path": "/qa_report/score", "message": "must be <= 1"}]


def test_compiling_an_unknown_facet_names_it() -> None:
    with pytest.raises(KeyError, match="videoScript"):
        compile_facets(["videoScript"])


def test_compiling_accepts_an_explicit_catalog() -> None:
    from planner.types import Facet

    catalog = {"x": Facet("x", "X", "", {"type": "integer"}, "", "output")}
    assert compile_facets(["x"], catalog=catalog).schema["properties"] == {"x": {"type": "integer"}}


# --- validators and validate_instance -----------------------------------------------------

def test_the_validator_cache_returns_the_same_object_for_an_equal_schema() -> None:
    first = get_validator({"type": "object", "properties": {"a": {"type": "string"}}})
    second = get_validator({"properties": {"a": {"type": "string"}}, "type": "object"})
    assert first is second


def test_the_validator_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(contracts, "VALIDATOR_CACHE_SIZE", 3)
    contracts.clear_validator_cache()
    for index in range(10):
        get_validator({"const": index})
    assert len(contracts._validator_cache) == 3


def test_valid_instances_give_no_errors() -> None:
    assert validate_instance({"type": "string"}, "hello") == []


def test_errors_at_the_root_have_the_path_slash() -> None:
    assert validate_instance({"type": "string"}, 1) == [{"path": "/", "message": "must be of type string"}]


def test_error_paths_are_json_pointers_with_escaping() -> None:
    schema = {"type": "object", "properties": {"a/b~c": {"type": "array", "items": {"type": "integer"}}}}
    errors = validate_instance(schema, {"a/b~c": [1, "x"]})
    assert [error["path"] for error in errors] == ["/a~1b~0c/1"]


def test_json_pointer_of_an_empty_path_is_the_root() -> None:
    assert json_pointer([]) == "/"
    assert json_pointer(["a", 0]) == "/a/0"


def test_the_validator_checks_formats() -> None:
    assert validate_instance({"type": "string", "format": "email"}, "not an email")


def test_it_reports_an_unresolvable_local_ref_instead_of_crashing() -> None:
    errors = validate_instance({"$ref": "#/$defs/missing"}, 1)
    assert len(errors) == 1 and "cannot be resolved" in errors[0]["message"]


def test_it_reports_self_referencing_ref_recursion_instead_of_crashing() -> None:
    schema = {"$defs": {"loop": {"$ref": "#/$defs/loop"}}, "$ref": "#/$defs/loop"}
    errors = validate_instance(schema, {"a": 1})
    assert errors == [{"path": "/", "message": "the schema refers to itself without end ($ref recursion)"}]


def test_a_recursive_schema_that_descends_still_works() -> None:
    tree = {"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#"}}}}
    assert validate_instance(tree, {"children": [{"children": []}]}) == []
    assert validate_instance(tree, {"children": [{"children": 1}]})[0]["path"] == "/children/0/children"


@pytest.mark.parametrize("ref", [
    "http://169.254.169.254/latest/meta-data/",
    "https://example.com/schema.json",
    "file:///etc/passwd",
])
def test_it_never_fetches_a_remote_or_file_ref_when_validating(no_network: None, ref: str) -> None:
    errors = validate_instance({"$ref": ref}, "anything")
    assert len(errors) == 1 and "cannot be resolved" in errors[0]["message"]


def test_the_official_meta_schema_resolves_from_memory(no_network: None) -> None:
    errors = validate_instance({"$ref": "https://json-schema.org/draft/2020-12/schema"}, {"type": 12})
    assert errors


def test_long_error_messages_are_shortened() -> None:
    errors = validate_instance({"type": "integer"}, "x" * 10_000)
    assert len(errors[0]["message"]) <= contracts.MAX_MESSAGE_LENGTH


# --- check_schema ------------------------------------------------------------------------

def test_a_valid_schema_has_no_problems() -> None:
    assert check_schema({"type": "object", "properties": {"a": {"type": "string", "pattern": "^[a-z]+$"}}}) == []


def test_every_catalog_facet_schema_passes_the_check() -> None:
    for facet in get_catalog().values():
        assert check_schema(facet.schema) == [], facet.name


def test_it_rejects_a_schema_that_breaks_the_meta_schema() -> None:
    errors = check_schema({"type": 12, "properties": "nope"})
    assert {error["path"] for error in errors} == {"/type", "/properties"}


def test_it_rejects_a_schema_that_is_not_an_object() -> None:
    assert check_schema(["type", "object"]) == [{"path": "/", "message": "a JSON Schema must be an object or a boolean"}]


@pytest.mark.parametrize("ref", ["http://evil.example/s.json", "https://example.com/x#/a", "file:///etc/passwd",
                                 "other.json#/defs/a", "//evil.example/x"])
def test_it_rejects_a_remote_ref(no_network: None, ref: str) -> None:
    errors = check_schema({"type": "object", "properties": {"a": {"$ref": ref}}})
    assert errors[0]["path"] == "/properties/a/$ref"
    assert "remote $ref is not allowed" in errors[0]["message"]


def test_it_rejects_a_remote_dynamic_ref(no_network: None) -> None:
    errors = check_schema({"$dynamicRef": "http://evil.example/s.json"})
    assert errors[0]["path"] == "/$dynamicRef"


def test_it_accepts_local_refs() -> None:
    assert check_schema({"$defs": {"s": {"type": "string"}}, "properties": {"a": {"$ref": "#/$defs/s"}}}) == []


def test_a_property_named_ref_is_not_a_reference() -> None:
    assert check_schema({"type": "object", "properties": {"$ref": {"type": "string"}}}) == []


def test_a_ref_inside_an_example_value_is_data() -> None:
    assert check_schema({"type": "object", "examples": [{"$ref": "http://x"}], "const": {"$ref": "http://y"}}) == []


def test_it_rejects_another_dialect() -> None:
    errors = check_schema({"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"})
    assert errors == [{"path": "/$schema", "message": "only JSON Schema Draft 2020-12 is supported"}]


def test_it_rejects_a_huge_schema() -> None:
    huge = {"type": "object", "properties": {f"p{index}": {"type": "string", "description": "x" * 100}
                                             for index in range(3000)}}
    errors = check_schema(huge)
    assert len(errors) == 1 and "bytes; the limit is" in errors[0]["message"]


def test_it_rejects_a_deeply_nested_schema_without_recursing() -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(5000):
        schema = {"items": schema}
    errors = check_schema(schema)
    assert len(errors) == 1 and "nested" in errors[0]["message"]


@pytest.mark.parametrize("pattern", ["^(a|a)*$", "^(a|aa)+$", "(a+)+$", "^(\\w+\\s?)*$", "(x+x+)+y"])
def test_it_accepts_a_backtracking_regex_and_matches_it_in_linear_time(pattern: str) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string", "pattern": pattern}},
              "patternProperties": {pattern: {"type": "string"}}}
    assert check_schema(schema) == []
    started = time.monotonic()
    for length in (34, 40, 5000):
        validate_instance(schema, {"a": "a" * length + "!", "a" * length + "!": "x"})
    assert time.monotonic() - started < 1


def test_it_runs_the_regex_format_on_re2() -> None:
    schema = {"type": "object", "properties": {"r": {"type": "string", "format": "regex"}}}
    assert validate_instance(schema, {"r": "^[a-z]+$"}) == []
    errors = validate_instance(schema, {"r": "(?=secret)"})
    assert errors and errors[0]["path"] == "/r" and "secret" not in errors[0]["message"]


@pytest.mark.parametrize("pattern", ["(a)\\1", "(?=a)b", "(?<!a)b", "x(?!y)"])
def test_it_refuses_a_regex_re2_cannot_run(pattern: str) -> None:
    errors = check_schema({"type": "string", "pattern": pattern})
    assert errors and errors[0]["path"] == "/pattern"
    assert "linear-time engine (RE2)" in errors[0]["message"]


def test_it_refuses_unevaluated_properties_beside_pattern_properties() -> None:
    errors = check_schema({"type": "object", "patternProperties": {"^x": {}}, "unevaluatedProperties": False})
    assert errors == [{"path": "/unevaluatedProperties",
                       "message": "unevaluatedProperties cannot be combined with patternProperties"}]


@pytest.mark.parametrize("pattern", ["^[a-z]+$", "^\\d{3}-\\d{4}$", "(ab|cd)*", "^(\\d{3}-)+\\d$", "a{2,5}"])
def test_it_accepts_ordinary_regexes(pattern: str) -> None:
    assert check_schema({"type": "string", "pattern": pattern}) == []


def test_it_rejects_a_regex_that_does_not_compile() -> None:
    errors = check_schema({"type": "string", "pattern": "(unclosed"})
    assert errors[0]["path"] == "/pattern" and "missing )" in errors[0]["message"]


def test_it_rejects_a_too_long_regex() -> None:
    errors = check_schema({"type": "string", "pattern": "a" * 1001})
    assert "the limit is 1000" in errors[0]["message"]


def test_it_checks_pattern_properties_keys() -> None:
    errors = check_schema({"type": "object", "patternProperties": {"(a)\\1": {"type": "string"}}})
    assert errors[0]["path"] == "/patternProperties/(a)\\1"


def test_checking_a_rejected_regex_is_fast() -> None:
    started = time.monotonic()
    check_schema({"type": "string", "pattern": "(a+)+$" + "b" * 900})
    assert time.monotonic() - started < 1


@pytest.mark.parametrize(("schema", "value"), [
    ({"type": "string"}, {"password": "hunter2-secret"}),
    ({"enum": ["a", "b"]}, "hunter2-secret"),
    ({"const": "a"}, "hunter2-secret"),
    ({"type": "string", "maxLength": 3}, "hunter2-secret"),
    ({"type": "string", "pattern": "^x$"}, "hunter2-secret"),
    ({"type": "string", "format": "email"}, "hunter2-secret"),
    ({"type": "object", "additionalProperties": False}, {"hunter2-secret": 1}),
    ({"type": "object", "propertyNames": {"maxLength": 2}}, {"hunter2-secret": 1}),
    ({"not": {"type": "string"}}, "hunter2-secret"),
    ({"type": "array", "uniqueItems": True}, ["hunter2-secret", "hunter2-secret"]),
])
def test_a_validation_message_names_the_rule_and_never_the_value(schema: dict[str, Any], value: Any) -> None:
    errors = validate_instance(schema, value)
    assert errors
    for error in errors:
        assert "hunter2" not in error["message"], error


def test_validating_against_a_fanning_schema_stops_at_the_step_budget() -> None:
    # Twenty levels, each three $refs to the next under anyOf, the last one never matching.
    defs: dict[str, Any] = {"d20": {"type": "string"}}
    for level in range(19, -1, -1):
        defs[f"d{level}"] = {"anyOf": [{"$ref": f"#/$defs/d{level + 1}"}] * 3}
    schema = {"$defs": defs, "$ref": "#/$defs/d0"}
    assert check_schema(schema) == []
    started = time.monotonic()
    errors = validate_instance(schema, {"not": "a string"})
    assert time.monotonic() - started < 5
    assert errors == [{"path": "/", "message": errors[0]["message"]}]
    assert "steps" in errors[0]["message"]
    # An ordinary schema still validates.
    assert validate_instance({"type": "string"}, "x") == []
