"""planner.envelope: accepting, normalising and rejecting TaskEnvelopes."""
from __future__ import annotations

import socket
import urllib.request
from typing import Any

import pytest

from flexagents.errors import InvalidOutputContract, UnknownCapability, UnknownFacet, ValidationFailed
from planner.contracts import check_schema
from planner.envelope import ENVELOPE_SCHEMA, TOP_LEVEL_KEYS, validate_envelope
from tests.planner.envelopes import INVALID, VALID, load_envelope


def minimal(**overrides: Any) -> dict[str, Any]:
    envelope: dict[str, Any] = {"objective": "Write a post",
                                "outputContract": {"mode": "facets", "facets": ["copyVariants"]}}
    envelope.update(overrides)
    return envelope


def errors_of(exc: pytest.ExceptionInfo[Any]) -> list[dict[str, Any]]:
    return exc.value.details["errors"]


def test_the_envelope_schema_is_itself_a_valid_schema() -> None:
    assert check_schema(ENVELOPE_SCHEMA) == []


@pytest.mark.parametrize("name", VALID)
def test_every_valid_example_envelope_is_accepted(name: str) -> None:
    envelope = validate_envelope(load_envelope(name))
    assert envelope["objective"] == load_envelope(name)["objective"]


@pytest.mark.parametrize(("name", "code"), INVALID.items())
def test_every_invalid_example_envelope_is_rejected_with_its_code(name: str, code: str) -> None:
    with pytest.raises((UnknownFacet, InvalidOutputContract)) as exc:
        validate_envelope(load_envelope(name))
    assert exc.value.code == code
    assert exc.value.status_code == 422


def test_the_unknown_facet_example_names_the_facet_and_the_known_ones() -> None:
    with pytest.raises(UnknownFacet) as exc:
        validate_envelope(load_envelope("invalid-unknown-facet"))
    assert exc.value.details["unknownFacets"] == ["favouriteColour"]
    assert "company_information" in exc.value.details["knownFacets"]
    assert errors_of(exc) == [{"path": "/inputs/favouriteColour",
                               "message": "'favouriteColour' is not a facet in the catalog"}]


def test_the_invalid_output_contract_example_points_into_the_schema() -> None:
    with pytest.raises(InvalidOutputContract) as exc:
        validate_envelope(load_envelope("invalid-output-contract"))
    paths = {error["path"] for error in errors_of(exc)}
    assert paths == {"/outputContract/schema/type", "/outputContract/schema/properties"}


# --- normalisation ------------------------------------------------------------------

def test_it_fills_the_documented_defaults() -> None:
    envelope = validate_envelope(minimal(policies={"runtime": [
        {"id": "p", "trigger": {"kind": "onStart"}, "action": {"type": "pause"}}]}))
    assert envelope["constraints"] == {"maxRetries": 2, "maxNodes": 20}
    assert envelope["policies"]["planner"]["topology"]["variantCount"] == 1
    assert envelope["policies"]["runtime"][0]["enabled"] is True
    assert envelope["specialInstructions"] == []
    assert envelope["metadata"] == {}
    assert envelope["inputs"] == {}


def test_it_keeps_values_that_were_given() -> None:
    envelope = validate_envelope(minimal(constraints={"maxRetries": 0, "maxNodes": 5, "deadlineSeconds": 60},
                                         policies={"runtime": []}))
    assert envelope["constraints"] == {"maxRetries": 0, "maxNodes": 5, "deadlineSeconds": 60}
    assert envelope["policies"]["runtime"] == []


def test_it_does_not_mutate_its_argument() -> None:
    data = minimal()
    validate_envelope(data)
    assert data == minimal()


def test_disabled_runtime_policies_stay_disabled() -> None:
    envelope = validate_envelope(minimal(policies={"runtime": [
        {"id": "p", "enabled": False, "trigger": {"kind": "manual"}, "action": {"type": "fail"}}]}))
    assert envelope["policies"]["runtime"][0]["enabled"] is False


# --- structure ----------------------------------------------------------------------

@pytest.mark.parametrize("body", [[], "text", 3, None])
def test_a_body_that_is_not_an_object_fails_validation(body: Any) -> None:
    with pytest.raises(ValidationFailed) as exc:
        validate_envelope(body)
    assert errors_of(exc) == [{"path": "/", "message": "expected a JSON object"}]


def test_it_requires_an_objective() -> None:
    data = minimal()
    del data["objective"]
    with pytest.raises(ValidationFailed) as exc:
        validate_envelope(data)
    assert errors_of(exc) == [{"path": "/", "message": "'objective' is a required property"}]


@pytest.mark.parametrize("objective", ["", "x" * 4001])
def test_it_bounds_the_objective_length(objective: str) -> None:
    with pytest.raises(ValidationFailed) as exc:
        validate_envelope(minimal(objective=objective))
    assert errors_of(exc)[0]["path"] == "/objective"


def test_it_rejects_an_unknown_top_level_key_naming_the_known_ones() -> None:
    with pytest.raises(ValidationFailed) as exc:
        validate_envelope(minimal(callbackUrl="http://x"))
    assert errors_of(exc)[0]["path"] == "/callbackUrl"
    assert exc.value.details["allowed"] == sorted(TOP_LEVEL_KEYS)
    assert exc.value.details["unknownKeys"] == ["/callbackUrl"]


def test_it_rejects_an_unknown_policy_key_naming_the_known_ones() -> None:
    with pytest.raises(ValidationFailed) as exc:
        validate_envelope(minimal(policies={"planner": {}, "scheduler": {}}))
    assert errors_of(exc)[0]["path"] == "/policies/scheduler"
    assert exc.value.details["allowed"] == ["planner", "runtime"]


@pytest.mark.parametrize(("policies", "path"), [
    ({"planner": {"topology": {"variantCount": 2, "shape": "star"}}}, "/policies/planner/topology/shape"),
    ({"planner": {"selection": {"pick": []}}}, "/policies/planner/selection/pick"),
    ({"planner": {"strategy": "x"}}, "/policies/planner/strategy"),
    ({"planner": {"optimisation": {"objective": "speed", "budget": 1}}}, "/policies/planner/optimisation/budget"),
    ({"runtime": [{"id": "p", "trigger": {"kind": "manual", "when": 1}, "action": {"type": "pause"}}]},
     "/policies/runtime/0/trigger/when"),
    ({"runtime": [{"id": "p", "trigger": {"kind": "manual", "selector": {"node": "x"}}, "action": {"type": "pause"}}]},
     "/policies/runtime/0/trigger/selector/node"),
    ({"runtime": [{"id": "p", "trigger": {"kind": "manual"}, "action": {"type": "pause", "message": "x"}}]},
     "/policies/runtime/0/action/message"),
    ({"runtime": [{"id": "p", "priority": 1, "trigger": {"kind": "manual"}, "action": {"type": "pause"}}]},
     "/policies/runtime/0/priority"),
])
def test_it_rejects_unknown_keys_in_nested_policy_objects(policies: dict[str, Any], path: str) -> None:
    with pytest.raises(ValidationFailed) as exc:
        validate_envelope(minimal(policies=policies))
    assert [error["path"] for error in errors_of(exc)] == [path]


def test_it_rejects_unknown_constraint_keys() -> None:
    with pytest.raises(ValidationFailed) as exc:
        validate_envelope(minimal(constraints={"maxCost": 3}))
    assert errors_of(exc)[0]["path"] == "/constraints/maxCost"


@pytest.mark.parametrize(("constraints", "path"), [
    ({"maxRetries": 11}, "/constraints/maxRetries"),
    ({"maxRetries": -1}, "/constraints/maxRetries"),
    ({"maxNodes": 0}, "/constraints/maxNodes"),
    ({"maxNodes": 201}, "/constraints/maxNodes"),
    ({"maxRetries": "2"}, "/constraints/maxRetries"),
])
def test_it_bounds_the_constraints(constraints: dict[str, Any], path: str) -> None:
    with pytest.raises(ValidationFailed) as exc:
        validate_envelope(minimal(constraints=constraints))
    assert [error["path"] for error in errors_of(exc)] == [path]


@pytest.mark.parametrize("count", [0, 21, 1.5])
def test_it_bounds_the_variant_count(count: Any) -> None:
    with pytest.raises(ValidationFailed) as exc:
        validate_envelope(minimal(policies={"planner": {"topology": {"variantCount": count}}}))
    assert errors_of(exc)[0]["path"] == "/policies/planner/topology/variantCount"


def test_it_rejects_an_unknown_optimisation_objective() -> None:
    with pytest.raises(ValidationFailed):
        validate_envelope(minimal(policies={"planner": {"optimisation": {"objective": "cheapest"}}}))


def test_metadata_keeps_free_keys_but_types_the_known_ones() -> None:
    assert validate_envelope(minimal(metadata={"threadId": "t", "anything": {"x": 1}}))["metadata"]["anything"]
    with pytest.raises(ValidationFailed) as exc:
        validate_envelope(minimal(metadata={"threadId": 3}))
    assert errors_of(exc)[0]["path"] == "/metadata/threadId"


def test_special_instructions_must_be_strings() -> None:
    with pytest.raises(ValidationFailed) as exc:
        validate_envelope(minimal(specialInstructions=["ok", 3]))
    assert errors_of(exc)[0]["path"] == "/specialInstructions/1"


def test_it_rejects_an_unknown_output_mode_by_naming_the_modes() -> None:
    with pytest.raises(ValidationFailed) as exc:
        validate_envelope(minimal(outputContract={"mode": "yaml"}))
    assert errors_of(exc) == [{"path": "/outputContract/mode", "message": "mode must be one of: json_schema, facets"}]


def test_it_explains_a_bad_output_contract_by_its_mode() -> None:
    with pytest.raises(ValidationFailed) as exc:
        validate_envelope(minimal(outputContract={"mode": "json_schema"}))
    assert errors_of(exc) == [{"path": "/outputContract", "message": "'schema' is a required property"}]
    with pytest.raises(ValidationFailed) as exc:
        validate_envelope(minimal(outputContract={"mode": "facets", "facets": []}))
    assert errors_of(exc)[0]["path"] == "/outputContract/facets"


def test_it_rejects_an_envelope_nested_deeper_than_64_levels() -> None:
    deep: dict[str, Any] = {}
    for _ in range(70):
        deep = {"a": deep}
    with pytest.raises(ValidationFailed) as exc:
        validate_envelope(minimal(metadata=deep))
    assert "nested more than 64" in errors_of(exc)[0]["message"]


# --- runtime policies ------------------------------------------------------------------

def runtime(**policy: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"id": "p", "trigger": {"kind": "onNodeComplete"}, "action": {"type": "hitl"}}
    base.update(policy)
    return minimal(policies={"runtime": [base]})


@pytest.mark.parametrize("action", [
    {"type": "hitl", "rationale": "check", "approveAction": "continue", "rejectAction": {"type": "replan"}},
    {"type": "replan", "rationale": "again"},
    {"type": "fail", "message": "no"},
    {"type": "pause", "reason": "wait"},
    {"type": "emit", "event": "copy_ready", "payload": {"a": 1}},
])
def test_it_accepts_every_action_type(action: dict[str, Any]) -> None:
    assert validate_envelope(runtime(action=action))["policies"]["runtime"][0]["action"] == action


def test_an_emit_action_needs_an_event() -> None:
    with pytest.raises(ValidationFailed) as exc:
        validate_envelope(runtime(action={"type": "emit"}))
    assert errors_of(exc) == [{"path": "/policies/runtime/0/action", "message": "'event' is a required property"}]


def test_it_rejects_an_unknown_action_type() -> None:
    with pytest.raises(ValidationFailed) as exc:
        validate_envelope(runtime(action={"type": "email"}))
    assert errors_of(exc)[0]["path"] == "/policies/runtime/0/action/type"


def test_it_rejects_an_unknown_trigger_kind() -> None:
    with pytest.raises(ValidationFailed):
        validate_envelope(runtime(trigger={"kind": "onEverything"}))


def test_it_accepts_a_json_logic_condition() -> None:
    condition = {"and": [{">=": [{"var": "output.qa_report.score"}, 0.5]}, {"in": ["x", {"var": "tags"}]}]}
    envelope = validate_envelope(runtime(trigger={"kind": "onNodeComplete", "condition": condition,
                                                  "selector": {"capabilityId": "qa.ContentReview"}}))
    assert envelope["policies"]["runtime"][0]["trigger"]["condition"] == condition


def test_it_rejects_a_condition_with_an_unknown_operator() -> None:
    with pytest.raises(ValidationFailed) as exc:
        validate_envelope(runtime(trigger={"kind": "onStart", "condition": {"and": [{"regex": ["a", "b"]}]}}))
    assert errors_of(exc) == [{"path": "/policies/runtime/0/trigger/condition",
                               "message": "unknown operator 'regex'"}]


def test_it_rejects_duplicate_policy_ids() -> None:
    policy = {"id": "same", "trigger": {"kind": "manual"}, "action": {"type": "pause"}}
    with pytest.raises(ValidationFailed) as exc:
        validate_envelope(minimal(policies={"runtime": [policy, dict(policy)]}))
    assert errors_of(exc)[0]["path"] == "/policies/runtime/1/id"


# --- facets, inputs and capabilities -------------------------------------------------------

def test_it_rejects_unknown_output_facets() -> None:
    with pytest.raises(UnknownFacet) as exc:
        validate_envelope(minimal(outputContract={"mode": "facets", "facets": ["copyVariants", "videoScript"]}))
    assert exc.value.details["unknownFacets"] == ["videoScript"]
    assert errors_of(exc)[0]["path"] == "/outputContract/facets/1"


def test_json_schema_properties_need_not_be_facets_at_validation_time() -> None:
    # The planner decides (plan_rejected), not the validator: see unsatisfiable-output.json.
    assert validate_envelope(load_envelope("unsatisfiable-output"))


def test_it_validates_input_values_against_their_facet_schemas() -> None:
    data = load_envelope("linkedin-variants")
    data["inputs"]["company_information"]["name"] = 42
    data["inputs"]["toneOfVoice"] = ""
    with pytest.raises(ValidationFailed) as exc:
        validate_envelope(data)
    assert [error["path"] for error in errors_of(exc)] == ["/inputs/company_information/name", "/inputs/toneOfVoice"]


def test_a_missing_required_input_field_is_reported_at_the_facet() -> None:
    data = load_envelope("linkedin-variants")
    del data["inputs"]["company_information"]["name"]
    with pytest.raises(ValidationFailed) as exc:
        validate_envelope(data)
    assert errors_of(exc) == [{"path": "/inputs/company_information", "message": "'name' is a required property"}]


def test_it_rejects_unknown_capability_ids_in_the_selection() -> None:
    policies = {"planner": {"selection": {"require": ["strategist.SocialPosting"], "prefer": ["ghost.Writer"]}}}
    with pytest.raises(UnknownCapability) as exc:
        validate_envelope(minimal(policies=policies))
    assert exc.value.details["unknownCapabilities"] == ["ghost.Writer"]
    assert "copywriter.SocialpostDrafting" in exc.value.details["knownCapabilities"]
    assert errors_of(exc)[0]["path"] == "/policies/planner/selection/prefer/0"


# --- the output contract ------------------------------------------------------------------

def with_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return minimal(outputContract={"mode": "json_schema", "schema": schema})


@pytest.mark.parametrize("ref", ["http://169.254.169.254/latest/meta-data/", "file:///etc/passwd"])
def test_a_remote_ref_in_the_output_contract_is_rejected_without_a_fetch(
        monkeypatch: pytest.MonkeyPatch, ref: str) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("fetched")

    monkeypatch.setattr(urllib.request, "urlopen", forbidden)
    monkeypatch.setattr(socket.socket, "connect", forbidden)
    with pytest.raises(InvalidOutputContract) as exc:
        validate_envelope(with_schema({"type": "object", "properties": {"copyVariants": {"$ref": ref}}}))
    assert errors_of(exc)[0]["path"] == "/outputContract/schema/properties/copyVariants/$ref"
    assert "remote $ref is not allowed" in errors_of(exc)[0]["message"]


def test_a_regex_re2_cannot_run_in_the_output_contract_is_rejected() -> None:
    schema = {"type": "object", "properties": {"post_copy": {"type": "string", "pattern": "^(a)\\1$"}}}
    with pytest.raises(InvalidOutputContract) as exc:
        validate_envelope(with_schema(schema))
    assert errors_of(exc)[0]["path"] == "/outputContract/schema/properties/post_copy/pattern"


def test_a_huge_output_contract_is_rejected() -> None:
    schema = {"type": "object", "properties": {f"p{i}": {"description": "x" * 1000} for i in range(300)}}
    with pytest.raises(InvalidOutputContract):
        validate_envelope(with_schema(schema))


def test_the_output_contract_must_describe_an_object() -> None:
    with pytest.raises(InvalidOutputContract) as exc:
        validate_envelope(with_schema({"type": "string"}))
    assert errors_of(exc)[0]["path"] == "/outputContract/schema/type"


def test_checks_run_in_order_structure_first() -> None:
    data = load_envelope("invalid-unknown-facet")
    data["bogus"] = 1
    with pytest.raises(ValidationFailed):
        validate_envelope(data)
