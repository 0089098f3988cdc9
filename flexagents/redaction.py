"""The one redactor (API.md, Redaction).

Every place that shows stored data to a person or writes it to a log goes
through here: the debug view, run lists, SSE frames, admin and history pages,
exports and log lines. The stored envelope keeps the real values.

Rules:
1. Any mapping key that matches `SENSITIVE_KEY_RE` has its value replaced by
   `REDACTED`, whatever that value is (string, number, list, mapping, None),
   at any depth, inside lists too — except a number under one of the
   `TOKEN_COUNT_KEYS` (`promptTokens`, `maxTokens`…: counts of model tokens).
2. With a JSON Schema, every value whose schema says `"x-sensitive": true`
   is replaced as well.
3. Every string leaf is free text and goes through `redact_text`, whatever
   key it sits under: an error message, a note, a person's answer and the
   content a capability produced alike. One rule for every surface, because
   the same text is copied from one place to another (a special instruction
   into a node's input and a post body, an answer into an audit entry).
4. Values of types we do not know become `str()` and are then text-redacted:
   we fail closed rather than leak an object's repr.

The input is never mutated; the result is a fresh JSON-shaped copy.
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, urlencode

import re2

REDACTED = "[redacted]"

_SENSITIVE_STEMS = (r"password|passwd|secret|token|api[_-]?key|authorization|cookie|credential|private[_-]?key|session"
                    r"|ticket")
SENSITIVE_KEY_RE = re.compile(_SENSITIVE_STEMS, re.IGNORECASE)

# Deeper than this we stop walking and redact the rest: the parser already
# refuses bodies nested deeper than 64, so only odd stored data gets here,
# and a RecursionError must not turn into a leak.
_MAX_DEPTH = 256

_SCALARS = (str, int, float, bool, type(None))

# Keys that match a sensitive stem ("token") but name a count of language-model
# tokens (docs/models.md, usage and constraints.maxTokens). Their value is
# shown only when it is a number (or null: no limit): anything else under them
# is redacted like any other sensitive key (fail closed on type).
TOKEN_COUNT_KEYS = frozenset({
    "promptTokens", "completionTokens", "totalTokens", "maxTokens", "usedTokens",
    "prompt_tokens", "completion_tokens", "total_tokens", "max_tokens", "used_tokens",
})


def _is_count(key: str, value: Any) -> bool:
    return key in TOKEN_COUNT_KEYS and (value is None or (isinstance(value, (int, float))
                                                           and not isinstance(value, bool)))


@lru_cache(maxsize=4096)
def _key_is_sensitive(key: str) -> bool:
    # Keys repeat a lot in big payloads (every item of a list has the same
    # keys), so the regex runs once per distinct key.
    return SENSITIVE_KEY_RE.search(key) is not None


def is_sensitive_key(key: object) -> bool:
    return _key_is_sensitive(key if isinstance(key, str) else str(key))


# --- Schemas ---------------------------------------------------------------

_Schemas = tuple[dict[str, Any], ...]
_NO_SCHEMAS: _Schemas = ()

# A caller's schema can make `$ref` under anyOf/allOf/oneOf fan out
# exponentially (`anyOf: [{}, {$ref: a}, {$ref: a}, {$ref: a}]` nested): each
# schema node is expanded once per schema (memoised by node, each `$ref`
# target visited once per expansion), the index is cached by the schema's
# hash, and past `MAX_SCHEMA_NODES` expansions the whole value is redacted
# (fail closed) rather than walked further.
MAX_SCHEMA_NODES = 100_000
MAX_WALK_STEPS = 1_000_000
_INDEX_CACHE_SIZE = 256


class _TooComplex(Exception):
    pass


class _SchemaIndex:
    """Every schema node of one root resolved once: the node, its local
    `$ref` target and the branches of allOf/anyOf/oneOf, transitively,
    without duplicates. Any of them marking the value sensitive is enough."""

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.budget = MAX_SCHEMA_NODES
        self.walk_budget = MAX_WALK_STEPS
        self._resolved: dict[int, _Schemas] = {}
        self._properties: dict[tuple[tuple[int, ...], str], _Schemas] = {}
        self.lock = threading.Lock()  # one walk at a time: the memo and budget are shared

    def _spend(self) -> None:
        # Resolving: memoised, so this budget bounds the index's whole life.
        self.budget -= 1
        if self.budget < 0:
            raise _TooComplex

    def _spend_walk(self, amount: int) -> None:
        # Matching keys and items against schemas: reset for every value.
        self.walk_budget -= amount
        if self.walk_budget < 0:
            raise _TooComplex

    def _target(self, ref: str) -> Any:
        target: Any = self.root
        for part in ref[2:].split("/") if ref != "#" else ():
            part = part.replace("~1", "/").replace("~0", "~")
            target = target.get(part) if isinstance(target, dict) else None
        return target

    def resolve(self, schema: Any) -> _Schemas:
        if not isinstance(schema, dict):
            return _NO_SCHEMAS
        key = id(schema)
        cached = self._resolved.get(key)
        if cached is not None:
            return cached
        out: list[dict[str, Any]] = []
        seen: set[int] = set()
        stack: list[Any] = [schema]
        while stack:
            node = stack.pop()
            if not isinstance(node, dict) or id(node) in seen:
                continue
            self._spend()
            seen.add(id(node))
            out.append(node)
            ref = node.get("$ref")
            if isinstance(ref, str) and (ref == "#" or ref.startswith("#/")):
                stack.append(self._target(ref))
            for combinator in ("allOf", "anyOf", "oneOf"):
                branches = node.get(combinator)
                if isinstance(branches, list):
                    stack.extend(reversed(branches))
        result = tuple(out)
        self._resolved[key] = result
        return result

    def property_schemas(self, schemas: _Schemas, key: str) -> _Schemas:
        memo_key = (tuple(map(id, schemas)), key)
        cached = self._properties.get(memo_key)
        if cached is not None:
            return cached
        out: list[dict[str, Any]] = []
        self._spend_walk(len(schemas))
        for schema in schemas:
            properties = schema.get("properties")
            if isinstance(properties, dict) and key in properties:
                out.extend(self.resolve(properties[key]))
                continue
            patterns = schema.get("patternProperties")
            matched = False
            if isinstance(patterns, dict):
                for pattern, sub in patterns.items():
                    if isinstance(pattern, str) and _pattern_matches(pattern, key):
                        out.extend(self.resolve(sub))
                        matched = True
            if not matched:
                out.extend(self.resolve(schema.get("additionalProperties")))
        result = _unique(out)
        if len(self._properties) < MAX_SCHEMA_NODES:
            self._properties[memo_key] = result
        return result

    def item_schemas(self, schemas: _Schemas, index: int) -> _Schemas:
        out: list[dict[str, Any]] = []
        self._spend_walk(len(schemas))
        for schema in schemas:
            prefix = schema.get("prefixItems")
            if isinstance(prefix, list) and index < len(prefix):
                out.extend(self.resolve(prefix[index]))
            else:
                out.extend(self.resolve(schema.get("items")))
        return _unique(out)


def _unique(schemas: list[dict[str, Any]]) -> _Schemas:
    return tuple({id(schema): schema for schema in schemas}.values())


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


@lru_cache(maxsize=1024)
def _compiled_pattern(pattern: str) -> Any:
    try:
        return re2.compile(pattern, options=_RE2_OPTIONS)
    except re2.error:
        return None


def _pattern_matches(pattern: str, key: str) -> bool:
    # RE2 like validation (planner.contracts): a caller's patternProperties
    # regex must not backtrack here either. Submission refuses patterns RE2
    # cannot run; in other stored schemas they match nothing.
    compiled = _compiled_pattern(pattern)
    return compiled is not None and compiled.search(key) is not None


_index_lock = threading.Lock()
_indexes: OrderedDict[str, _SchemaIndex] = OrderedDict()


def _schema_index(root: dict[str, Any]) -> _SchemaIndex:
    """The index of `root`, shared by every call with an equal schema."""
    try:
        key = hashlib.sha256(json.dumps(root, sort_keys=True, separators=(",", ":"),
                                        ensure_ascii=False, default=str).encode("utf-8", "replace")).hexdigest()
    except (TypeError, ValueError, RecursionError):
        return _SchemaIndex(root)
    with _index_lock:
        index = _indexes.get(key)
        if index is not None:
            _indexes.move_to_end(key)
            return index
        index = _indexes[key] = _SchemaIndex(root)
        while len(_indexes) > _INDEX_CACHE_SIZE:
            _indexes.popitem(last=False)
        return index


def _marks_sensitive(schemas: _Schemas) -> bool:
    return any(s.get("x-sensitive") is True for s in schemas)


# --- Values ----------------------------------------------------------------

def _walk(value: Any, schemas: _Schemas, root: _SchemaIndex | None, depth: int, text: bool,
          text_keys: frozenset[str] = frozenset()) -> Any:
    if schemas and _marks_sensitive(schemas):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value) if text else value
    if isinstance(value, _SCALARS):
        return value
    if depth >= _MAX_DEPTH:
        return REDACTED
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            name = key if isinstance(key, str) else str(key)
            if _key_is_sensitive(name):
                out[key if isinstance(key, _SCALARS) else name] = item if _is_count(name, item) else REDACTED
                continue
            sub = root.property_schemas(schemas, name) if schemas and root is not None else _NO_SCHEMAS
            # Under a free-text key (an error message, a reason) every string is
            # text-redacted too: that is where `api_key=…` ends up.
            out[key if isinstance(key, _SCALARS) else name] = _walk(item, sub, root, depth + 1,
                                                                    text or name in text_keys, text_keys)
        return out
    if isinstance(value, (list, tuple)):
        if not schemas or root is None:
            return [_walk(item, _NO_SCHEMAS, root, depth + 1, text, text_keys) for item in value]
        return [_walk(item, root.item_schemas(schemas, i), root, depth + 1, text, text_keys)
                for i, item in enumerate(value)]
    # Unknown type (datetime, Decimal, model instance, bytes…): never pass an
    # object through, its repr may hold a secret.
    return redact_text(str(value))


# Kept for callers written before the one free-text rule: every string leaf
# is text-redacted now (rule 3), so passing these keys changes nothing.
FREE_TEXT_KEYS: frozenset[str] = frozenset({
    "message", "error", "errors", "reason", "note", "rationale", "diagnostics", "validationErrors",
    "specialInstructions", "freeformText", "operatorPrompt", "details", "objective", "pauseReason",
})


def redact(value: Any, *, schema: dict[str, Any] | None = None, text: bool = True,
           text_keys: frozenset[str] | tuple[str, ...] = ()) -> Any:
    """Return a redacted deep copy of `value`.

    `schema` (a JSON Schema for `value`) marks more fields with
    `"x-sensitive": true`. Every string leaf goes through `redact_text`
    (rule 3; a post draft that says "password: abc" is shown as
    "password: [redacted]", the stored value is untouched). `text=False`
    exists only for tests of the key rule; no surface may use it.
    `text_keys` is accepted for older callers and changes nothing.
    """
    if not isinstance(schema, dict) or not schema:
        return _walk(value, _NO_SCHEMAS, None, 0, text, frozenset(text_keys))
    index = _schema_index(schema)
    try:
        with index.lock:
            index.walk_budget = MAX_WALK_STEPS
            return _walk(value, index.resolve(index.root), index, 0, text, frozenset(text_keys))
    except _TooComplex:
        # The schema is too tangled to tell which values it marks sensitive:
        # fail closed.
        return REDACTED


def redact_facets(facets: Mapping[str, Any], catalog_schemas: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """Redact a facet-name → value mapping, each value with its facet's schema."""
    out: dict[str, Any] = {}
    for name, value in facets.items():
        if is_sensitive_key(name):
            out[name] = REDACTED
        else:
            out[name] = redact(value, schema=catalog_schemas.get(name))
    return out


# --- Free text -------------------------------------------------------------

_KEY_CHARS = r"[\w.-]"
# `Authorization: Bearer abc, retrying` — a header's value runs to the end of
# the line or a closing quote (cookies hold `;` and `=`). Only an unquoted header name: quoted
# keys are JSON or Python reprs and handled below.
_HEADER_RE = re.compile(
    r"(?P<key>\b(?:proxy-)?authorization|\b(?:set-)?cookie)(?P<sep>[ \t]*:[ \t]*)(?![\"'])[^\r\n\"]+",
    re.IGNORECASE,
)
# `password=abc`, `"apiKey": "abc"`, `'token': 'abc'`, `\"secret\": \"abc\"`,
# `?api_key=abc&x=1`, `session_id: 42`.
_PAIR_RE = re.compile(
    rf"(?P<key>\\?[\"']?{_KEY_CHARS}*(?:{_SENSITIVE_STEMS}){_KEY_CHARS}*\\?[\"']?)"
    r"(?P<sep>[ \t]*[:=][ \t]*)"
    r"(?P<value>(?:(?:bearer|basic|token)[ \t]+)?"
    r"(?:\\\"(?:[^\"\\]|\\[^\"])*\\\""  # \"escaped\" (JSON inside a JSON string)
    r"|\"(?:[^\"\\]|\\.)*\""  # "double quoted"
    r"|'(?:[^'\\]|\\.)*'"  # 'single quoted'
    r"|\{[^{}\r\n]*\}"  # a flat {...}
    rf"|(?!{re.escape(REDACTED)})\[[^\]\r\n]*\]"  # a flat [...], unless already masked
    r"|[^\s,;&{}\[\])\"'\\][^\s,;&}\])\"'\\]*))",  # bare, up to a separator
    re.IGNORECASE,
)
# A bearer credential anywhere else: `curl -H "…Bearer abc"`. Not "basic":
# it is an ordinary English word; Basic credentials come in a header, above.
_SCHEME_RE = re.compile(r"\b(?P<scheme>bearer)[ \t]+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)


# URL query parameters that carry a credential although their name is not
# one of the sensitive stems: `?ticket=…` (a stream ticket, API.md) — in an
# access log line, a `Location`, a logged URL. Case-insensitive, up to the
# next separator.
URL_SECRET_PARAMS = ("ticket",)
_QUERY_PARAM_RE = re.compile(
    r"(?P<key>[?&;](?:" + "|".join(URL_SECRET_PARAMS) + r")=)(?!" + re.escape(REDACTED) + r")[^&#\s\"'<>]*",
    re.IGNORECASE,
)


def _pair_sub(match: re.Match[str]) -> str:
    value = match.group("value")
    if value.startswith('\\"'):
        masked = f'\\"{REDACTED}\\"'
    elif value[:1] in {'"', "'"}:
        masked = f"{value[0]}{REDACTED}{value[0]}"
    else:
        masked = REDACTED
    return f"{match.group('key')}{match.group('sep')}{masked}"


# A sensitive key whose value opens a bracket: `{'credentials': {'a': {'b': 'x'}}}`
# (a dict's repr in an exception message). Regexes cannot match nesting, so
# the value is found by counting brackets (`_bracket_end`).
_NESTED_RE = re.compile(
    rf"(?P<key>\\?[\"']?{_KEY_CHARS}*(?:{_SENSITIVE_STEMS}){_KEY_CHARS}*\\?[\"']?)[ \t]*[:=][ \t]*(?=[\[{{])",
    re.IGNORECASE,
)
_CLOSING = {"[": "]", "{": "}"}


def _bracket_end(s: str, start: int) -> int:
    """The index just past the bracket that closes the one at `start`
    (quotes respected); the end of the line when it never closes."""
    stack: list[str] = []
    quote = ""
    i = start
    while i < len(s):
        c = s[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c in _CLOSING:
            stack.append(_CLOSING[c])
        elif stack and c == stack[-1]:
            stack.pop()
            if not stack:
                return i + 1
        elif c in "\r\n":
            return i
        i += 1
    return len(s)


def _mask_nested(s: str) -> str:
    out: list[str] = []
    pos = 0
    for match in _NESTED_RE.finditer(s):
        if match.start() < pos:
            continue  # inside a value already masked
        out.append(s[pos:match.end()])
        out.append(REDACTED)
        pos = _bracket_end(s, match.end())
    out.append(s[pos:])
    return "".join(out)


# Every pattern above needs a sensitive stem, "bearer" or a secret URL
# parameter somewhere in the text; most strings have none, and one search
# tells (rule 3 runs this on every string leaf of every payload).
_MAY_HOLD_SECRET_RE = re.compile(rf"{_SENSITIVE_STEMS}|bearer|[?&;](?:{'|'.join(URL_SECRET_PARAMS)})=",
                                 re.IGNORECASE)


def redact_query_string(query: str) -> str:
    """A URL query string fit for a log line: the value of every sensitive
    key (`token`, `api_key`, `ticket`…, decoded first, so `api%5Fkey` counts)
    masked, every other value text-redacted; re-encoded."""
    if not query:
        return query
    pairs = parse_qsl(query, keep_blank_values=True)
    return urlencode([(key, REDACTED if is_sensitive_key(key) else redact_text(value)) for key, value in pairs],
                     safe="[]")


def redact_text(s: str) -> str:
    """Mask credentials inside free text (error messages, notes, answers,
    content, log lines)."""
    if not s or _MAY_HOLD_SECRET_RE.search(s) is None:
        return s
    s = _HEADER_RE.sub(lambda m: f"{m.group('key')}{m.group('sep')}{REDACTED}", s)
    s = _QUERY_PARAM_RE.sub(lambda m: f"{m.group('key')}{REDACTED}", s)
    if "{" in s or "[" in s:
        s = _mask_nested(s)
    s = _PAIR_RE.sub(_pair_sub, s)
    return _SCHEME_RE.sub(lambda m: f"{m.group('scheme')} {REDACTED}", s)
