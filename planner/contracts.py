"""The contract compiler and JSON Schema validation.

Three jobs:

- `compile_facets` merges facets into one object schema (one required
  property per facet) and remembers which facet each property came from.
- `get_validator` / `validate_instance` validate values against a schema with
  validators cached by schema hash: building a validator per call is the
  classic performance bug of schema-heavy code.
- `check_schema` decides whether a caller-supplied schema is safe to use at
  all: valid Draft 2020-12, no remote or file `$ref` (SSRF), bounded size and
  depth, and regexes that RE2 can run.

Regexes in caller schemas (`pattern`, `patternProperties`, `format: regex`)
run on google-re2, a linear-time engine: Python's `re` backtracks, holds the
interpreter lock and cannot be interrupted, so one `^(a|a)*$` would freeze
every thread. jsonschema has no regex-engine setting; its `pattern`,
`patternProperties` and `additionalProperties` keywords are swapped through
`jsonschema.validators.extend`, and the `regex` format through our own
`FormatChecker`. A pattern RE2 cannot run (backreferences, lookaround) is
refused at submission.

Nothing here ever fetches a URL: every validator is built with a
`referencing.Registry` whose `retrieve` refuses, and holds only the official
meta-schemas in memory.
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import re2
from jsonschema import Draft202012Validator, FormatChecker, validators
from jsonschema.exceptions import ValidationError
from jsonschema.exceptions import UnknownType, _RefResolutionError
from jsonschema_specifications import REGISTRY as SPECIFICATIONS
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable

from planner.types import Facet

MAX_SCHEMA_BYTES = 256 * 1024
MAX_SCHEMA_DEPTH = 64
MAX_REGEX_LENGTH = 1000
MAX_MESSAGE_LENGTH = 500
VALIDATOR_CACHE_SIZE = 512
DRAFT_2020_12_URIS = frozenset({
    "https://json-schema.org/draft/2020-12/schema",
    "https://json-schema.org/draft/2020-12/schema#",
})
# Keywords whose values are data, not subschemas: a "$ref" or "pattern" key
# inside them is just a string in an example and must not be judged.
_DATA_KEYWORDS = frozenset({"const", "enum", "examples", "default"})


# --- canonical hashing ----------------------------------------------------------

def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def schema_hash(schema: dict[str, Any]) -> str:
    """sha256 hex of the schema's canonical JSON (sorted keys, compact)."""
    return hashlib.sha256(canonical_json(schema).encode("utf-8")).hexdigest()


# --- compiling facets into a contract --------------------------------------------

@dataclass(frozen=True)
class CompiledContract:
    schema: dict[str, Any]
    schema_hash: str
    provenance: dict[str, str]  # property name -> facet name


def compile_facets(facet_names: Sequence[str], *, catalog: dict[str, Facet] | None = None) -> CompiledContract:
    """One object schema requiring every named facet, each property being the facet's schema.

    Raises `KeyError` naming the facet if one is not in the catalog: callers
    validate facet names first, so reaching this is a programming error.
    """
    if catalog is None:
        from planner.facets import get_catalog

        catalog = get_catalog()
    names = list(dict.fromkeys(facet_names))  # keep order, drop duplicates
    missing = [name for name in names if name not in catalog]
    if missing:
        raise KeyError(f"unknown facets: {', '.join(missing)}")
    schema: dict[str, Any] = {
        "type": "object",
        "required": names,
        "properties": {name: catalog[name].schema for name in names},
        "additionalProperties": True,
    }
    return CompiledContract(schema=schema, schema_hash=schema_hash(schema),
                            provenance={name: name for name in names})


# --- validators -------------------------------------------------------------------

def _refuse_retrieval(uri: str) -> Resource[Any]:
    # Never fetch anything: a schema from a caller must not make the server
    # open URLs or files (SSRF, local file disclosure).
    raise NoSuchResource(ref=uri)


# --- regexes: RE2, linear time ---------------------------------------------------------

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a refused pattern is our 422, not a line on stderr
_RE2_OPTIONS.max_mem = 8 << 20  # a compiled pattern's memory is bounded too


@lru_cache(maxsize=1024)
def compile_regex(pattern: str) -> Any:
    """The RE2 program of a schema regex (cached); raises `re2.error`."""
    return re2.compile(pattern, options=_RE2_OPTIONS)


def _search(pattern: str, text: str) -> bool:
    return compile_regex(pattern).search(text) is not None


def _pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _search(pattern, instance):
        yield ValidationError("does not match the pattern")


def _pattern_properties(validator: Any, patterns: dict[str, Any], instance: Any,
                        schema: dict[str, Any]) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(validator: Any, additional: Any, instance: Any,
                           schema: dict[str, Any]) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    extras = [key for key in instance
              if key not in properties and not any(_search(pattern, key) for pattern in patterns)]
    if validator.is_type(additional, "object"):
        for key in extras:
            yield from validator.descend(instance[key], additional, path=key)
    elif additional is False and extras:
        # Name the rule, not the values (a key may be a secret someone pasted).
        yield ValidationError(f"{len(extras)} propert{'y is' if len(extras) == 1 else 'ies are'} not allowed here")


def _is_re2_regex(instance: object) -> bool:
    if not isinstance(instance, str):
        return True
    compile_regex(instance)
    return True


def _format_checker() -> FormatChecker:
    checker = FormatChecker()  # an instance-local copy of the known formats
    checker.checks("regex", raises=re2.error)(_is_re2_regex)
    return checker


# --- a step budget for validation -------------------------------------------------------
# `$ref`s under anyOf/oneOf can make jsonschema's work exponential in the
# schema (three branches per level, twenty levels: 3**20 evaluations). Every
# keyword evaluation spends one step of a per-call budget; past it the value
# is refused with an error instead of holding a worker thread.
MAX_VALIDATION_STEPS = 25_000
_budget = threading.local()


class ValidationBudgetExceeded(Exception):
    pass


def _counted(keyword: Any) -> Any:
    def evaluate(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        remaining = getattr(_budget, "steps", None)
        if remaining is not None:
            if remaining <= 0:
                raise ValidationBudgetExceeded
            _budget.steps = remaining - 1
        return keyword(validator, value, instance, schema)

    return evaluate


_KEYWORDS = {"pattern": _pattern, "patternProperties": _pattern_properties,
             "additionalProperties": _additional_properties}
ContractValidator = validators.extend(Draft202012Validator, {
    name: _counted(_KEYWORDS.get(name, keyword)) for name, keyword in Draft202012Validator.VALIDATORS.items()})

# The official meta-schemas stay resolvable (they are in memory); nothing else is.
_REGISTRY: Registry[Any] = Registry(retrieve=_refuse_retrieval).with_resources(list(SPECIFICATIONS.items()))
_FORMAT_CHECKER = _format_checker()
_META_VALIDATOR = ContractValidator(Draft202012Validator.META_SCHEMA, registry=_REGISTRY,
                                    format_checker=_FORMAT_CHECKER)

_cache_lock = threading.Lock()
_validator_cache: OrderedDict[str, Any] = OrderedDict()


def get_validator(schema: dict[str, Any]) -> Any:
    """A validator for `schema`, shared by every caller with an equal schema (LRU, bounded)."""
    key = schema_hash(schema)
    with _cache_lock:
        validator = _validator_cache.get(key)
        if validator is not None:
            _validator_cache.move_to_end(key)
            return validator
    validator = ContractValidator(schema, registry=_REGISTRY, format_checker=_FORMAT_CHECKER)
    with _cache_lock:
        # Another thread may have built one meanwhile; keep the first so that
        # equal schemas always map to the same object.
        validator = _validator_cache.setdefault(key, validator)
        _validator_cache.move_to_end(key)
        while len(_validator_cache) > VALIDATOR_CACHE_SIZE:
            _validator_cache.popitem(last=False)
    return validator


def clear_validator_cache() -> None:
    with _cache_lock:
        _validator_cache.clear()


def json_pointer(parts: Sequence[Any]) -> str:
    """RFC 6901 pointer for a path; the root is "/"."""
    if not parts:
        return "/"
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in parts)


def join_pointer(prefix: str, pointer: str) -> str:
    """Prefix a pointer returned by this module ("/" is the root) with a parent path."""
    if pointer in ("", "/"):
        return prefix or "/"
    return prefix.rstrip("/") + pointer


def _short(message: str) -> str:
    # Messages quote the offending instance; a megabyte value must not become
    # a megabyte error body.
    return message if len(message) <= MAX_MESSAGE_LENGTH else message[: MAX_MESSAGE_LENGTH - 1] + "…"


# Rules whose schema-side value is a number worth naming in the message.
_NAMED_LIMITS = {
    "minLength": "must be at least {} characters long", "maxLength": "must be at most {} characters long",
    "minimum": "must be >= {}", "maximum": "must be <= {}",
    "exclusiveMinimum": "must be > {}", "exclusiveMaximum": "must be < {}",
    "multipleOf": "must be a multiple of {}",
    "minItems": "must have at least {} items", "maxItems": "must have at most {} items",
    "minProperties": "must have at least {} properties", "maxProperties": "must have at most {} properties",
    "minContains": "must contain at least {} matching items", "maxContains": "must contain at most {} matching items",
}


def rule_message(error: ValidationError) -> str:
    """What rule a value broke, naming the rule and never the value itself
    (a 422 must not echo a password someone put in the wrong field)."""
    keyword = str(error.validator)
    expected = error.validator_value
    if keyword == "type":
        names = expected if isinstance(expected, list) else [expected]
        return f"must be of type {' or '.join(map(str, names))}"
    if keyword == "required":
        # jsonschema names the missing property (a name from the schema).
        return _short(error.message)
    if keyword in _NAMED_LIMITS and isinstance(expected, (int, float)):
        return _NAMED_LIMITS[keyword].format(expected)
    if keyword == "format":
        return f"is not a valid {expected}"
    if keyword == "enum":
        return "is not one of the allowed values (enum)"
    if keyword == "const":
        return "is not the required constant (const)"
    if keyword == "pattern":
        return "does not match the pattern"
    if keyword == "uniqueItems":
        return "has duplicate items (uniqueItems)"
    if keyword == "additionalProperties" and "not allowed" in error.message and expected is False:
        return error.message  # ours: counts the keys, never prints them
    if keyword == "false":
        return "no value is allowed here"
    return f"does not satisfy {keyword}"


def validate_instance(schema: dict[str, Any], instance: Any) -> list[dict[str, str]]:
    """Errors of `instance` against `schema` as `[{"path", "message"}]`; empty when valid.

    Never raises for a bad schema: unresolvable `$ref`s, endless `$ref`
    recursion and unknown types come back as error items at the root.
    """
    _budget.steps = MAX_VALIDATION_STEPS
    try:
        validator = get_validator(schema)
        errors = sorted(validator.iter_errors(instance), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    except ValidationBudgetExceeded:
        return [{"path": "/", "message": f"the schema needs more than {MAX_VALIDATION_STEPS} steps to validate "
                                         "this value (its $refs fan out); simplify it"}]
    except (Unresolvable, _RefResolutionError) as exc:
        return [{"path": "/", "message": _short(f"the schema has a $ref that cannot be resolved: {_ref_of(exc)}")}]
    except RecursionError:
        return [{"path": "/", "message": "the schema refers to itself without end ($ref recursion)"}]
    except (UnknownType, re.error, re2.error, TypeError, ValueError) as exc:
        return [{"path": "/", "message": _short(f"the schema cannot be applied: {exc}")}]
    finally:
        _budget.steps = None
    return [{"path": json_pointer(list(error.absolute_path)), "message": rule_message(error)} for error in errors]


def _ref_of(exc: Exception) -> str:
    ref = getattr(exc, "ref", None)
    if ref is None and isinstance(exc.__cause__, Unresolvable):
        ref = getattr(exc.__cause__, "ref", None)
    return str(ref if ref is not None else exc)


# --- checking caller-supplied schemas ------------------------------------------------

def check_schema(schema: Any) -> list[dict[str, str]]:
    """Why `schema` may not be used, as `[{"path", "message"}]` relative to the schema.

    1. size and depth first (everything after walks the schema);
    2. `$ref`s: only local `#...` fragments;
    3. regexes: not too long, and RE2 compiles them (so they run in linear time);
    4. the Draft 2020-12 meta-schema.
    """
    if not isinstance(schema, (dict, bool)):
        return [{"path": "/", "message": "a JSON Schema must be an object or a boolean"}]
    depth = json_depth(schema)
    if depth > MAX_SCHEMA_DEPTH:
        return [{"path": "/", "message": f"the schema is nested {depth} levels deep; the limit is {MAX_SCHEMA_DEPTH}"}]
    try:
        size = len(canonical_json(schema).encode("utf-8"))
    except (TypeError, ValueError) as exc:
        return [{"path": "/", "message": f"the schema is not JSON: {exc}"}]
    if size > MAX_SCHEMA_BYTES:
        return [{"path": "/", "message": f"the schema is {size} bytes; the limit is {MAX_SCHEMA_BYTES}"}]
    errors = _dialect_errors(schema) + _ref_errors(schema) + _regex_errors(schema)
    errors += [
        {"path": json_pointer(list(error.absolute_path)), "message": rule_message(error)}
        for error in sorted(_META_VALIDATOR.iter_errors(schema), key=lambda e: list(map(str, e.absolute_path)))
        if not (error.validator == "format" and error.validator_value == "regex")  # reported above, with the reason
    ]
    return errors


def json_depth(value: Any) -> int:
    """Nesting depth of a JSON value (a scalar is 0), computed without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            deepest = max(deepest, depth)
            continue
        deepest = max(deepest, depth + 1)
        if depth + 1 > MAX_SCHEMA_DEPTH * 4:
            return depth + 1  # deep enough to reject; stop walking
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _walk_schema(schema: Any) -> Iterator[tuple[list[Any], dict[str, Any]]]:
    """Every object in the schema with its path, skipping data-valued keywords."""
    stack: list[tuple[list[Any], Any]] = [([], schema)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            yield path, node
            for key, child in node.items():
                if key not in _DATA_KEYWORDS:
                    stack.append(([*path, key], child))
        elif isinstance(node, list):
            stack.extend(([*path, index], child) for index, child in enumerate(node))


def _dialect_errors(schema: Any) -> list[dict[str, str]]:
    if isinstance(schema, dict) and "$schema" in schema and schema["$schema"] not in DRAFT_2020_12_URIS:
        return [{"path": "/$schema", "message": "only JSON Schema Draft 2020-12 is supported"}]
    return []


def _ref_errors(schema: Any) -> list[dict[str, str]]:
    errors = []
    for path, node in _walk_schema(schema):
        for keyword in ("$ref", "$dynamicRef"):
            ref = node.get(keyword)
            # A dict under "$ref" is a property *named* "$ref", not a reference.
            if isinstance(ref, str) and not ref.startswith("#"):
                errors.append({"path": json_pointer([*path, keyword]),
                               "message": f"remote $ref is not allowed ({ref[:200]!r}); use a local '#...' reference"})
    return errors


def _regex_errors(schema: Any) -> list[dict[str, str]]:
    errors = []
    nodes = list(_walk_schema(schema))
    if any("patternProperties" in node for _, node in nodes):
        # jsonschema evaluates `unevaluatedProperties` with Python's `re` over
        # every patternProperties regex; we cannot swap that engine, so the
        # two keywords are not accepted together.
        errors += [{"path": json_pointer([*path, "unevaluatedProperties"]),
                    "message": "unevaluatedProperties cannot be combined with patternProperties"}
                   for path, node in nodes if "unevaluatedProperties" in node]
    for path, node in nodes:
        pattern = node.get("pattern")
        if isinstance(pattern, str):
            problem = regex_problem(pattern)
            if problem:
                errors.append({"path": json_pointer([*path, "pattern"]), "message": problem})
        pattern_properties = node.get("patternProperties")
        if isinstance(pattern_properties, dict):
            for key in pattern_properties:
                problem = regex_problem(key)
                if problem:
                    errors.append({"path": json_pointer([*path, "patternProperties", key]), "message": problem})
    return errors


def regex_problem(pattern: str) -> str | None:
    """Why a schema regex is refused, or None: too long, or RE2 cannot run it."""
    if len(pattern) > MAX_REGEX_LENGTH:
        return f"the regex is {len(pattern)} characters long; the limit is {MAX_REGEX_LENGTH}"
    try:
        compile_regex(pattern)
    except re2.error as exc:
        reason = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        reason = reason.split(":")[0]  # RE2 quotes the pattern after the colon
        return (f"the regex cannot run on the linear-time engine (RE2): {reason}; "
                "backreferences and lookaround are not supported")
    return None
