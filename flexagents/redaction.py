"""The one redactor (API.md, Redaction).

Every place that shows stored data to a person or writes it to a log goes
through here: the debug view, run lists, SSE frames, admin and history pages,
exports and log lines. The stored envelope keeps the real values.

Rules:
1. Any mapping key that matches `SENSITIVE_KEY_RE` has its value replaced by
   `REDACTED`, whatever that value is (string, number, list, mapping, None),
   at any depth, inside lists too.
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

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

REDACTED = "[redacted]"

_SENSITIVE_STEMS = r"password|passwd|secret|token|api[_-]?key|authorization|cookie|credential|private[_-]?key|session"
SENSITIVE_KEY_RE = re.compile(_SENSITIVE_STEMS, re.IGNORECASE)

# Deeper than this we stop walking and redact the rest: the parser already
# refuses bodies nested deeper than 64, so only odd stored data gets here,
# and a RecursionError must not turn into a leak.
_MAX_DEPTH = 256

_SCALARS = (str, int, float, bool, type(None))


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


def _resolve(schema: Any, root: dict[str, Any], seen: int = 0) -> _Schemas:
    """Expand one schema into the schemas that apply to the same value:
    itself, its local `$ref` target and the branches of allOf/anyOf/oneOf.
    Any of them marking the value sensitive is enough (fail closed)."""
    if not isinstance(schema, dict) or seen > 32:
        return _NO_SCHEMAS
    out: list[dict[str, Any]] = [schema]
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            target = target.get(part) if isinstance(target, dict) else None
        out.extend(_resolve(target, root, seen + 1))
    for combinator in ("allOf", "anyOf", "oneOf"):
        branches = schema.get(combinator)
        if isinstance(branches, list):
            for branch in branches:
                out.extend(_resolve(branch, root, seen + 1))
    return tuple(out)


def _marks_sensitive(schemas: _Schemas) -> bool:
    return any(s.get("x-sensitive") is True for s in schemas)


def _property_schemas(schemas: _Schemas, key: str, root: dict[str, Any]) -> _Schemas:
    out: list[dict[str, Any]] = []
    for schema in schemas:
        properties = schema.get("properties")
        if isinstance(properties, dict) and key in properties:
            out.extend(_resolve(properties[key], root))
            continue
        patterns = schema.get("patternProperties")
        matched = False
        if isinstance(patterns, dict):
            for pattern, sub in patterns.items():
                try:
                    if re.search(pattern, key):
                        out.extend(_resolve(sub, root))
                        matched = True
                except re.error:
                    continue
        if not matched:
            out.extend(_resolve(schema.get("additionalProperties"), root))
    return tuple(out)


def _item_schemas(schemas: _Schemas, index: int, root: dict[str, Any]) -> _Schemas:
    out: list[dict[str, Any]] = []
    for schema in schemas:
        prefix = schema.get("prefixItems")
        if isinstance(prefix, list) and index < len(prefix):
            out.extend(_resolve(prefix[index], root))
        else:
            out.extend(_resolve(schema.get("items"), root))
    return tuple(out)


# --- Values ----------------------------------------------------------------

def _walk(value: Any, schemas: _Schemas, root: dict[str, Any], depth: int, text: bool,
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
                out[key if isinstance(key, _SCALARS) else name] = REDACTED
                continue
            sub = _property_schemas(schemas, name, root) if schemas else _NO_SCHEMAS
            # Under a free-text key (an error message, a reason) every string is
            # text-redacted too: that is where `api_key=…` ends up.
            out[key if isinstance(key, _SCALARS) else name] = _walk(item, sub, root, depth + 1,
                                                                    text or name in text_keys, text_keys)
        return out
    if isinstance(value, (list, tuple)):
        if not schemas:
            return [_walk(item, _NO_SCHEMAS, root, depth + 1, text, text_keys) for item in value]
        return [_walk(item, _item_schemas(schemas, i, root), root, depth + 1, text, text_keys)
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
    root = schema if isinstance(schema, dict) else {}
    return _walk(value, _resolve(root, root) if root else _NO_SCHEMAS, root, 0, text, frozenset(text_keys))


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


# Every pattern above needs a sensitive stem or "bearer" somewhere in the
# text; most strings have neither, and one search tells (rule 3 runs this on
# every string leaf of every payload).
_MAY_HOLD_SECRET_RE = re.compile(rf"{_SENSITIVE_STEMS}|bearer", re.IGNORECASE)


def redact_text(s: str) -> str:
    """Mask credentials inside free text (error messages, notes, answers,
    content, log lines)."""
    if not s or _MAY_HOLD_SECRET_RE.search(s) is None:
        return s
    s = _HEADER_RE.sub(lambda m: f"{m.group('key')}{m.group('sep')}{REDACTED}", s)
    if "{" in s or "[" in s:
        s = _mask_nested(s)
    s = _PAIR_RE.sub(_pair_sub, s)
    return _SCHEME_RE.sub(lambda m: f"{m.group('scheme')} {REDACTED}", s)
