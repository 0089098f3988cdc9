"""The only request parser of the API: strict JSON.

DRF negotiates the parser from `Content-Type`; with this parser alone, any
other media type is a 415 (`UnsupportedMediaType`) before we are called.
"""
from __future__ import annotations

import json
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
        return data
