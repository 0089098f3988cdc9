"""The only request parser of the API: strict JSON.

DRF negotiates the parser from `Content-Type`; with this parser alone, any
other media type is a 415 (`UnsupportedMediaType`) before we are called.
"""
from __future__ import annotations

import json
import math
import re
from typing import IO, Any, NoReturn

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser, get_encoding

from flexagents.errors import ValidationFailed

MAX_JSON_DEPTH = 64


def _reject_constant(name: str) -> NoReturn:
    # Python's json accepts NaN, Infinity and -Infinity; JSON does not, and
    # they would not survive a round trip through PostgreSQL's jsonb.
    raise ParseError(f"{name} is not a valid JSON value")


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """Whether `value` nests containers more than `limit` levels deep.

    Iterative (no recursion), and stops at the first container past the limit.
    A top-level object or array is level 1; scalars add no level.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


# A lone surrogate cannot be encoded as UTF-8 (writing it fails), and NUL is
# refused by PostgreSQL's text and jsonb: both are refused everywhere, so
# SQLite and PostgreSQL answer alike.
_UNSTORABLE_TEXT = re.compile("[\x00\ud800-\udfff]")


def _pointer(parts: list[Any]) -> str:
    if not parts:
        return "/"
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in parts)


def _text_problem(text: str) -> str | None:
    found = _UNSTORABLE_TEXT.search(text)
    if found is None:
        return None
    return "contains a NUL character" if found.group() == "\x00" else "contains a lone UTF-16 surrogate"


def unstorable_value(value: Any) -> tuple[str, str] | None:
    """The JSON pointer and the reason of the first value no database can
    store: a number out of the double range (`1e999` parses to infinity), a
    string or key holding NUL or a lone surrogate. None when all is well.
    Iterative, in document order."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(value, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, float):
            if not math.isfinite(node):
                return _pointer(list(path)), "is a number out of range"
        elif isinstance(node, str):
            problem = _text_problem(node)
            if problem:
                return _pointer(list(path)), problem
        elif isinstance(node, dict):
            for key in node:
                problem = _text_problem(key)
                if problem:
                    # Name the parent: the key itself cannot be printed safely.
                    return _pointer(list(path)), f"has a key that {problem}"
            # Reversed: the stack pops them in document order.
            stack.extend((child, (*path, key)) for key, child in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((node[index], (*path, index)) for index in range(len(node) - 1, -1, -1))
    return None


def _unstorable(pointer: str, reason: str) -> ValidationFailed:
    message = f"The value at {pointer} {reason}"
    return ValidationFailed(message, details={"errors": [{"path": pointer, "message": reason}]})


def _too_deep() -> ValidationFailed:
    message = f"The body nests deeper than {MAX_JSON_DEPTH} levels"
    return ValidationFailed(message, details={"errors": [{"path": "/", "message": message}],
                                              "maxDepth": MAX_JSON_DEPTH})


class StrictJSONParser(JSONParser):
    """JSON only, within the size limit, no NaN/Infinity, at most 64 levels deep.

    1. Size: the declared Content-Length, then the bytes actually read (a
       chunked body has no Content-Length) → `RequestDataTooBig` → 413.
    2. Syntax and encoding → `ParseError` → 400 `malformed_json`.
    3. Depth → `ValidationFailed` → 422, so one deeply nested body cannot
       make every later recursive walk (validation, redaction) blow the stack.
    4. Values no database stores (`1e999`, NUL, lone surrogates, in values
       or keys) → `ValidationFailed` → 422 with the value's JSON pointer.
    """

    def parse(self, stream: IO[bytes] | None, media_type: str | None = None,
              parser_context: dict[str, Any] | None = None) -> Any:
        parser_context = parser_context or {}
        limit: int = settings.FLEX_MAX_BODY_BYTES
        request = parser_context.get("request")
        if request is not None:
            try:
                declared = int(request.META.get("CONTENT_LENGTH") or 0)
            except (TypeError, ValueError):
                declared = 0
            if declared > limit:
                raise RequestDataTooBig("The request body is larger than FLEX_MAX_BODY_BYTES.")
        encoding = get_encoding(parser_context)  # refuses non-text codecs (zip bombs)

        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise RequestDataTooBig("The request body is larger than FLEX_MAX_BODY_BYTES.")
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError as exc:
            raise ParseError(f"JSON parse error - the body is not valid {encoding}: {exc.reason}") from None
        try:
            data = json.loads(text, parse_constant=_reject_constant)
        except RecursionError:
            # The C decoder gives up far past our limit; same answer.
            raise _too_deep() from None
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        if json_depth_exceeds(data, MAX_JSON_DEPTH):
            raise _too_deep()
        found = unstorable_value(data)
        if found is not None:
            raise _unstorable(*found)
        return data
