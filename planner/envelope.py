"""The TaskEnvelope: its JSON Schema and the one function that accepts or rejects it.

`validate_envelope` runs before any run or stream exists (API.md), in this order:

1. structure: a JSON object, nested at most 64 levels, matching `ENVELOPE_SCHEMA`
   (unknown keys are named, with the known ones);
2. facets: every `inputs` key and `outputContract.facets` entry is in the catalog;
3. input values: each validates against its facet's schema;
4. capabilities: every id in `policies.planner.selection` and in runtime
   policy selectors (`trigger.selector.capabilityId`) is registered — a typo
   there would silently drop the policy's step, a person's approval say;
5. the output contract: a safe, valid Draft 2020-12 schema describing an object;
6. runtime policies: unique ids, JSON-Logic conditions with known operators,
   `onNodeFail` policies that replan, fail or emit;
7. `hitl` actions' governance: assignees and escalation targets name existing
   users and groups, `onTimeout` and the deadlines fit together;
8. goals (`policies.planner.goals`): unique ids, JSON-Logic conditions whose
   every data path starts with a catalog facet.

It returns a normalised copy with defaults filled in; the caller stores that.

`selector_warnings` is the one check that cannot refuse: whether a `nodeId`
selector names a node depends on the plan, so the planner reports it (in
`plan.preview`'s diagnostics and `plan_generated.metadata.warnings`).
"""
from __future__ import annotations

import copy
from typing import Any, Protocol

from jsonschema.exceptions import ValidationError

from flexagents.errors import InvalidOutputContract, UnknownCapability, UnknownFacet, ValidationFailed
from planner import jsonlogic
from planner.contracts import (
    check_schema, get_validator, join_pointer, json_depth, json_pointer, rule_message, validate_instance,
)
from planner.types import CAPABILITY_KINDS, OPTIMISATION_OBJECTIVES, Facet

MAX_ENVELOPE_DEPTH = 64
TRIGGER_KINDS = ("onStart", "onNodeComplete", "onValidationFail", "onNodeFail", "manual")
# A node failed for good (permanent error, or retries exhausted): only these
# actions can follow (a `hitl` or `pause` on a failed node has nothing to resume).
NODE_FAIL_ACTIONS = ("replan", "fail", "emit")
GOAL_ON_UNMET = ("replan", "hitl", "fail")
DEFAULT_MAX_REPLANS = 2
FOLLOW_UP_ACTIONS = ("continue", "fail", "pause", "replan")
TIMEOUT_ACTIONS = ("approve", "reject", "fail", "cancel", "option")
# The options of a policy's approval request (runs.engine.policies).
HITL_POLICY_OPTIONS = ("approve", "reject")
MAX_WAIT_SECONDS = 30 * 86400

_STRING = {"type": "string", "maxLength": 4000}
_ID_LIST = {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 200}, "uniqueItems": True,
            "maxItems": 100}
_KIND_LIST = {"type": "array", "items": {"enum": list(CAPABILITY_KINDS)}, "uniqueItems": True}
_NAME_LIST = {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 150}, "uniqueItems": True,
              "maxItems": 50}
_PEOPLE = {"type": "object", "additionalProperties": False, "properties": {"users": _NAME_LIST, "groups": _NAME_LIST}}
_SECONDS = {"type": "integer", "minimum": 1, "maximum": MAX_WAIT_SECONDS}


def _action(action_type: str, properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["type", *required],
        "properties": {"type": {"const": action_type}, **properties},
        "additionalProperties": False,
    }


ENVELOPE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "TaskEnvelope",
    "type": "object",
    "required": ["objective", "outputContract"],
    "additionalProperties": False,
    "properties": {
        "objective": {"type": "string", "minLength": 1, "maxLength": 4000},
        "inputs": {"type": "object"},
        "constraints": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "maxRetries": {"type": "integer", "minimum": 0, "maximum": 10},
                "maxNodes": {"type": "integer", "minimum": 1, "maximum": 200},
                "deadlineSeconds": {"type": "integer", "minimum": 1, "maximum": 86400},
                # Language-model tokens (prompt + completion) the whole run may use
                # (docs/models.md); the attempt that goes over it fails the run.
                "maxTokens": {"type": "integer", "minimum": 1, "maximum": 1_000_000_000},
            },
        },
        "policies": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "planner": {"$ref": "#/$defs/plannerPolicy"},
                "runtime": {"type": "array", "maxItems": 100, "items": {"$ref": "#/$defs/runtimePolicy"}},
            },
        },
        "specialInstructions": {"type": "array", "maxItems": 50, "items": _STRING},
        "metadata": {
            "type": "object",
            "properties": {
                name: {"type": "string", "maxLength": 200}
                for name in ("threadId", "briefId", "correlationId", "clientId")
            },
        },
        "outputContract": {
            "oneOf": [
                {
                    "type": "object",
                    "required": ["mode", "schema"],
                    "properties": {"mode": {"const": "json_schema"}, "schema": {"type": "object"}},
                    "additionalProperties": False,
                },
                {
                    "type": "object",
                    "required": ["mode", "facets"],
                    "properties": {
                        "mode": {"const": "facets"},
                        "facets": {"type": "array", "minItems": 1, "uniqueItems": True,
                                   "items": {"type": "string", "minLength": 1, "maxLength": 200}},
                    },
                    "additionalProperties": False,
                },
            ],
        },
    },
    "$defs": {
        "plannerPolicy": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "topology": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "variantCount": {"type": "integer", "minimum": 1, "maximum": 20},
                        "maxDepth": {"type": "integer", "minimum": 1, "maximum": 50},
                        "requiredKinds": _KIND_LIST,
                        "forbiddenKinds": _KIND_LIST,
                    },
                },
                "selection": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {name: _ID_LIST for name in ("require", "forbid", "prefer", "avoid")},
                },
                "optimisation": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"objective": {"enum": list(OPTIMISATION_OBJECTIVES)}},
                },
                "directives": {"type": "object"},
                "goals": {"type": "array", "maxItems": 20, "items": {"$ref": "#/$defs/goal"}},
            },
        },
        "goal": {
            "type": "object",
            "required": ["id", "condition"],
            "additionalProperties": False,
            "properties": {
                "id": {"type": "string", "minLength": 1, "maxLength": 100},
                "condition": True,  # JSON-Logic over the facets; checked by _check_goals
                "maxReplans": {"type": "integer", "minimum": 0, "maximum": 10},
                "onUnmet": {"enum": list(GOAL_ON_UNMET)},
            },
        },
        "runtimePolicy": {
            "type": "object",
            "required": ["id", "trigger", "action"],
            "additionalProperties": False,
            "properties": {
                "id": {"type": "string", "minLength": 1, "maxLength": 100},
                "enabled": {"type": "boolean"},
                "trigger": {
                    "type": "object",
                    "required": ["kind"],
                    "additionalProperties": False,
                    "properties": {
                        "kind": {"enum": list(TRIGGER_KINDS)},
                        "selector": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "nodeId": {"type": "string", "minLength": 1, "maxLength": 200},
                                "kind": {"enum": list(CAPABILITY_KINDS)},
                                "capabilityId": {"type": "string", "minLength": 1, "maxLength": 200},
                            },
                        },
                        "condition": True,  # JSON-Logic; checked by jsonlogic.validate_rule
                    },
                },
                "action": {
                    "oneOf": [
                        _action("hitl", {"rationale": _STRING, "approveAction": {"$ref": "#/$defs/followUp"},
                                         "rejectAction": {"$ref": "#/$defs/followUp"},
                                         # Governance (docs/hitl.md, "Governing human decisions").
                                         "assignees": _PEOPLE,
                                         "requiredApprovals": {"type": "integer", "minimum": 1, "maximum": 20},
                                         "allowSelfApproval": {"type": "boolean"},
                                         "timeoutSeconds": _SECONDS,
                                         "onTimeout": {
                                             "type": "object", "required": ["type"], "additionalProperties": False,
                                             "properties": {"type": {"enum": list(TIMEOUT_ACTIONS)},
                                                            "optionId": {"type": "string", "minLength": 1,
                                                                         "maxLength": 200}}},
                                         "escalateAfterSeconds": _SECONDS,
                                         "escalateTo": _PEOPLE}),
                        _action("replan", {"rationale": _STRING}),
                        _action("fail", {"message": _STRING}),
                        _action("pause", {"reason": _STRING}),
                        _action("emit", {"event": {"type": "string", "minLength": 1, "maxLength": 100},
                                         "payload": {"type": "object"}}, required=("event",)),
                    ],
                },
            },
        },
        # What an answered `hitl` action does next: a name, or a small action object.
        "followUp": {
            "oneOf": [
                {"enum": list(FOLLOW_UP_ACTIONS)},
                {
                    "type": "object",
                    "required": ["type"],
                    "additionalProperties": False,
                    "properties": {"type": {"enum": list(FOLLOW_UP_ACTIONS)}, "message": _STRING,
                                   "reason": _STRING, "rationale": _STRING},
                },
            ],
        },
    },
}

TOP_LEVEL_KEYS = tuple(ENVELOPE_SCHEMA["properties"])


def validate_envelope(data: Any, *, catalog: dict[str, Facet] | None = None, registry: Any = None,
                      directory: "PeopleDirectory | None" = None) -> dict[str, Any]:
    """Accept a TaskEnvelope and return it normalised, or raise the domain error that explains why not.
    `directory` answers which user and group names exist (default: Django's auth tables)."""
    if catalog is None:
        from planner.facets import get_catalog

        catalog = get_catalog()
    if registry is None:
        from planner.registry import get_registry

        registry = get_registry()
    _check_structure(data)
    envelope = normalise(data)
    _check_facet_names(envelope, catalog)
    _check_input_values(envelope, catalog)
    _check_capability_ids(envelope, registry)
    _check_output_contract(envelope)
    _check_runtime_policies(envelope)
    _check_hitl_governance(envelope, directory or DjangoPeopleDirectory())
    _check_goals(envelope, catalog)
    return envelope


def normalise(data: dict[str, Any]) -> dict[str, Any]:
    """A deep copy with the documented defaults filled in (the input is never mutated)."""
    envelope = copy.deepcopy(data)
    envelope.setdefault("inputs", {})
    constraints = envelope.setdefault("constraints", {})
    constraints.setdefault("maxRetries", 2)
    constraints.setdefault("maxNodes", 20)
    policies = envelope.setdefault("policies", {})
    planner_policy = policies.setdefault("planner", {})
    planner_policy.setdefault("topology", {}).setdefault("variantCount", 1)
    for runtime_policy in policies.setdefault("runtime", []):
        runtime_policy.setdefault("enabled", True)
    for goal in planner_policy.get("goals") or []:
        if isinstance(goal, dict):
            goal.setdefault("maxReplans", DEFAULT_MAX_REPLANS)
            goal.setdefault("onUnmet", "hitl")
    envelope.setdefault("specialInstructions", [])
    envelope.setdefault("metadata", {})
    return envelope


# --- 1. structure ------------------------------------------------------------------------

def _check_structure(data: Any) -> None:
    if not isinstance(data, dict):
        raise ValidationFailed("The envelope must be a JSON object.",
                               details={"errors": [{"path": "/", "message": "expected a JSON object"}]})
    depth = json_depth(data)
    if depth > MAX_ENVELOPE_DEPTH:
        raise ValidationFailed("The envelope is nested too deeply.", details={"errors": [
            {"path": "/", "message": f"the envelope is nested more than {MAX_ENVELOPE_DEPTH} levels deep"}]})
    errors: list[dict[str, Any]] = []
    for error in get_validator(ENVELOPE_SCHEMA).iter_errors(data):
        errors.extend(_describe(error))
    if not errors:
        return
    errors.sort(key=lambda item: item["path"])
    details: dict[str, Any] = {"errors": errors}
    unknown = [item for item in errors if "allowed" in item]
    if unknown:
        # The shallowest unknown key decides the top-level `allowed` list.
        first = min(unknown, key=lambda item: (item["path"].count("/"), item["path"]))
        details["allowed"] = first["allowed"]
        details["unknownKeys"] = [item["path"] for item in unknown]
        message = f"Unknown key at {first['path']}; allowed: {', '.join(first['allowed'])}."
    else:
        message = "The envelope does not match the TaskEnvelope schema."
    raise ValidationFailed(message, details=details)


def _describe(error: ValidationError) -> list[dict[str, Any]]:
    """Turn one jsonschema error into readable items, naming unknown keys and oneOf branches."""
    path = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        return [
            {"path": json_pointer([*path, key]), "message": f"unknown key {key!r}; allowed: {', '.join(allowed)}",
             "allowed": allowed}
            for key in sorted(error.instance) if key not in allowed
        ]
    if error.validator == "oneOf" and isinstance(error.instance, dict):
        branch = _matching_branch(error)
        if branch is not None:
            return [item for sub in error.context or [] if sub.relative_schema_path[0] == branch
                    for item in _describe(sub)]
        discriminator, choices = _discriminator(error.validator_value)
        if discriminator:
            return [{"path": json_pointer([*path, discriminator]),
                     "message": f"{discriminator} must be one of: {', '.join(choices)}"}]
    return [{"path": json_pointer(path), "message": rule_message(error)}]


def _discriminator(branches: list[Any]) -> tuple[str | None, list[str]]:
    for key in ("mode", "type"):
        choices = [b.get("properties", {}).get(key, {}).get("const") for b in branches if isinstance(b, dict)]
        if any(choices):
            return key, [choice for choice in choices if choice]
    return None, []


def _matching_branch(error: ValidationError) -> int | None:
    """The index of the oneOf branch whose `mode`/`type` constant the instance names."""
    key, _choices = _discriminator(error.validator_value)
    if key is None:
        return None
    for index, branch in enumerate(error.validator_value):
        const = branch.get("properties", {}).get(key, {}).get("const") if isinstance(branch, dict) else None
        if const is not None and error.instance.get(key) == const:
            return index
    return None


# --- 2. facet names -----------------------------------------------------------------------

def _check_facet_names(envelope: dict[str, Any], catalog: dict[str, Facet]) -> None:
    named = [(json_pointer(["inputs", key]), key) for key in envelope["inputs"]]
    contract = envelope["outputContract"]
    if contract["mode"] == "facets":
        named += [(json_pointer(["outputContract", "facets", index]), name)
                  for index, name in enumerate(contract["facets"])]
    unknown = [(path, name) for path, name in named if name not in catalog]
    if unknown:
        names = list(dict.fromkeys(name for _path, name in unknown))
        raise UnknownFacet(
            f"Unknown facet(s): {', '.join(names)}.",
            details={"unknownFacets": names, "knownFacets": sorted(catalog),
                     "errors": [{"path": path, "message": f"{name!r} is not a facet in the catalog"}
                                for path, name in unknown]},
        )


# --- 3. input values ----------------------------------------------------------------------

def _check_input_values(envelope: dict[str, Any], catalog: dict[str, Facet]) -> None:
    errors = []
    for name, value in envelope["inputs"].items():
        prefix = json_pointer(["inputs", name])
        errors += [{"path": join_pointer(prefix, item["path"]), "message": item["message"]}
                   for item in validate_instance(catalog[name].schema, value)]
    if errors:
        raise ValidationFailed("Some inputs do not match their facet's schema.", details={"errors": errors})


# --- 4. capability ids --------------------------------------------------------------------

def _check_capability_ids(envelope: dict[str, Any], registry: Any) -> None:
    named: list[tuple[str, str]] = []
    selection = envelope["policies"]["planner"].get("selection") or {}
    for rule in ("require", "forbid", "prefer", "avoid"):
        named += [(f"/policies/planner/selection/{rule}/{index}", capability_id)
                  for index, capability_id in enumerate(selection.get(rule) or [])]
    for index, policy in enumerate(envelope["policies"]["runtime"]):
        capability_id = (policy["trigger"].get("selector") or {}).get("capabilityId")
        if capability_id is not None:
            named.append((f"/policies/runtime/{index}/trigger/selector/capabilityId", capability_id))
    unknown = [(path, capability_id) for path, capability_id in named if capability_id not in registry]
    if unknown:
        names = list(dict.fromkeys(capability_id for _path, capability_id in unknown))
        raise UnknownCapability(f"Unknown capability id(s): {', '.join(names)}.",
                                details={"unknownCapabilities": names, "knownCapabilities": registry.ids(),
                                         "errors": [{"path": path,
                                                     "message": f"{capability_id!r} is not a registered capability"}
                                                    for path, capability_id in unknown]})


# --- 5. output contract --------------------------------------------------------------------

def _check_output_contract(envelope: dict[str, Any]) -> None:
    contract = envelope["outputContract"]
    if contract["mode"] != "json_schema":
        return
    schema = contract["schema"]
    errors = check_schema(schema)
    declared_type = schema.get("type", "object")
    if not errors and declared_type != "object" and not (isinstance(declared_type, list) and "object" in declared_type):
        errors = [{"path": "/type", "message": "the output contract must describe a JSON object"}]
    if errors:
        raise InvalidOutputContract(
            "The output contract is not a usable JSON Schema.",
            details={"errors": [{"path": join_pointer("/outputContract/schema", item["path"]),
                                 "message": item["message"]} for item in errors]},
        )


# --- 6. runtime policies ---------------------------------------------------------------------

def _check_runtime_policies(envelope: dict[str, Any]) -> None:
    errors = []
    seen: set[str] = set()
    for index, policy in enumerate(envelope["policies"]["runtime"]):
        if policy["id"] in seen:
            errors.append({"path": f"/policies/runtime/{index}/id", "message": f"duplicate policy id {policy['id']!r}"})
        seen.add(policy["id"])
        if "condition" in policy["trigger"]:
            errors += [{"path": f"/policies/runtime/{index}/trigger/condition", "message": problem}
                       for problem in jsonlogic.validate_rule(policy["trigger"]["condition"])]
        if policy["trigger"]["kind"] == "onNodeFail" and policy["action"]["type"] not in NODE_FAIL_ACTIONS:
            errors.append({"path": f"/policies/runtime/{index}/action/type",
                           "message": f"an onNodeFail policy can only {', '.join(NODE_FAIL_ACTIONS)}; "
                                      f"{policy['action']['type']!r} has no node to come back to"})
    if errors:
        raise ValidationFailed("Some runtime policies are not valid.", details={"errors": errors})


# --- 7. governance of `hitl` actions -------------------------------------------------------------

class PeopleDirectory(Protocol):
    """Which of the given names exist."""

    def unknown_users(self, names: list[str]) -> list[str]: ...

    def unknown_groups(self, names: list[str]) -> list[str]: ...


class DjangoPeopleDirectory:
    """Users by username (active ones) and groups by name, in Django's auth tables."""

    def unknown_users(self, names: list[str]) -> list[str]:
        if not names:
            return []
        from django.contrib.auth import get_user_model

        model = get_user_model()
        known = set(model.objects.filter(**{f"{model.USERNAME_FIELD}__in": names, "is_active": True})
                    .values_list(model.USERNAME_FIELD, flat=True))
        return [name for name in names if name not in known]

    def unknown_groups(self, names: list[str]) -> list[str]:
        if not names:
            return []
        from django.contrib.auth.models import Group

        known = set(Group.objects.filter(name__in=names).values_list("name", flat=True))
        return [name for name in names if name not in known]


def _check_hitl_governance(envelope: dict[str, Any], directory: PeopleDirectory) -> None:
    """An assignee or escalation target that does not exist would leave a
    request nobody may answer: every user and group name must exist (422
    `validation_failed`, each unknown name at its path). Also: `onTimeout`
    `option` names one of the request's options (`approve` / `reject`), and
    an escalation comes before the timeout."""
    errors: list[dict[str, str]] = []
    for index, policy in enumerate(envelope["policies"]["runtime"]):
        action = policy["action"]
        if action.get("type") != "hitl":
            continue
        base = f"/policies/runtime/{index}/action"
        for field_name in ("assignees", "escalateTo"):
            people = action.get(field_name) or {}
            users = list(people.get("users") or [])
            groups = list(people.get("groups") or [])
            unknown_users = set(directory.unknown_users(users))
            unknown_groups = set(directory.unknown_groups(groups))
            errors += [{"path": f"{base}/{field_name}/users/{i}", "message": f"unknown user {name!r}"}
                       for i, name in enumerate(users) if name in unknown_users]
            errors += [{"path": f"{base}/{field_name}/groups/{i}", "message": f"unknown group {name!r}"}
                       for i, name in enumerate(groups) if name in unknown_groups]
        on_timeout = action.get("onTimeout")
        if on_timeout is not None:
            option_id = on_timeout.get("optionId")
            if on_timeout["type"] == "option" and option_id not in HITL_POLICY_OPTIONS:
                errors.append({"path": f"{base}/onTimeout/optionId",
                               "message": f"expected one of the request's options: {', '.join(HITL_POLICY_OPTIONS)}"})
            elif on_timeout["type"] != "option" and option_id is not None:
                errors.append({"path": f"{base}/onTimeout/optionId",
                               "message": "optionId goes with type 'option' only"})
            if "timeoutSeconds" not in action:
                errors.append({"path": f"{base}/onTimeout", "message": "onTimeout needs timeoutSeconds"})
        if "escalateTo" in action and "escalateAfterSeconds" not in action:
            errors.append({"path": f"{base}/escalateTo", "message": "escalateTo needs escalateAfterSeconds"})
        if ("escalateAfterSeconds" in action and "timeoutSeconds" in action
                and action["escalateAfterSeconds"] >= action["timeoutSeconds"]):
            errors.append({"path": f"{base}/escalateAfterSeconds",
                           "message": "must be less than timeoutSeconds (an escalation after the timeout never happens)"})
    if errors:
        raise ValidationFailed("Some hitl actions name people or deadlines that cannot work.",
                               details={"errors": errors})
# --- 8. goals ------------------------------------------------------------------------------------

def goal_facets(condition: Any) -> list[str]:
    """The facets a goal's condition reads: the first segment of each data path."""
    return list(dict.fromkeys(path.split(".", 1)[0] for path in jsonlogic.data_paths(condition) if path))


def _check_goals(envelope: dict[str, Any], catalog: dict[str, Facet]) -> None:
    """Goals are JSON-Logic over the facets: known operators, and every data
    path starts with a catalog facet (a typo would make a goal never met)."""
    errors: list[dict[str, Any]] = []
    unknown: list[tuple[str, str]] = []
    seen: set[str] = set()
    for index, goal in enumerate(envelope["policies"]["planner"].get("goals") or []):
        base = f"/policies/planner/goals/{index}"
        if goal["id"] in seen:
            errors.append({"path": f"{base}/id", "message": f"duplicate goal id {goal['id']!r}"})
        seen.add(goal["id"])
        problems = jsonlogic.validate_rule(goal["condition"])
        errors += [{"path": f"{base}/condition", "message": problem} for problem in problems]
        if problems:
            continue
        paths = jsonlogic.data_paths(goal["condition"])
        if "" in paths:
            errors.append({"path": f"{base}/condition",
                           "message": "every var of a goal must name a facet (no computed or empty paths)"})
        unknown += [(f"{base}/condition", name) for name in goal_facets(goal["condition"]) if name not in catalog]
    if unknown:
        names = list(dict.fromkeys(name for _path, name in unknown))
        raise UnknownFacet(f"Goal conditions read unknown facet(s): {', '.join(names)}.",
                           details={"unknownFacets": names, "knownFacets": sorted(catalog),
                                    "errors": [{"path": path, "message": f"{name!r} is not a facet in the catalog"}
                                               for path, name in unknown]})
    if errors:
        raise ValidationFailed("Some goals are not valid.", details={"errors": errors})


# --- selectors the plan cannot match (warnings, not errors) ------------------------------------

def selector_warnings(envelope: dict[str, Any], *, possible_node_ids: set[str],
                      plan_node_ids: set[str] | None = None,
                      plan_capability_ids: set[str] | None = None) -> list[dict[str, Any]]:
    """Runtime-policy selectors that will never fire, as planner diagnostics.

    - `unknown_node_id`: no plan of this envelope can contain the `nodeId`
      (`possible_node_ids`: the ids any registered capability would get);
    - `node_not_in_plan` / `capability_not_in_plan`: this plan (when given)
      has no such node or capability, so the policy does not fire on it.
    """
    warnings: list[dict[str, Any]] = []
    for index, policy in enumerate(envelope.get("policies", {}).get("runtime") or []):
        selector = policy.get("trigger", {}).get("selector") or {}
        base = {"policyId": policy.get("id")}
        node_id = selector.get("nodeId")
        if node_id is not None:
            path = f"/policies/runtime/{index}/trigger/selector/nodeId"
            if node_id not in possible_node_ids:
                warnings.append({**base, "code": "unknown_node_id", "nodeId": node_id, "path": path,
                                 "knownNodeIds": sorted(possible_node_ids),
                                 "message": f"Policy {policy.get('id')!r} selects node {node_id!r}, which no plan "
                                            f"of this envelope can contain; it will never fire"})
            elif plan_node_ids is not None and node_id not in plan_node_ids:
                warnings.append({**base, "code": "node_not_in_plan", "nodeId": node_id, "path": path,
                                 "message": f"Policy {policy.get('id')!r} selects node {node_id!r}, which is not "
                                            f"in this plan; it will not fire unless a replan adds it"})
        capability_id = selector.get("capabilityId")
        if capability_id is not None and plan_capability_ids is not None and capability_id not in plan_capability_ids:
            warnings.append({**base, "code": "capability_not_in_plan", "capabilityId": capability_id,
                             "path": f"/policies/runtime/{index}/trigger/selector/capabilityId",
                             "message": f"Policy {policy.get('id')!r} selects capability {capability_id!r}, "
                                        f"which is not in this plan; it will not fire unless a replan adds it"})
    return warnings
