"""One JSON object per log line, redacted.

Fields: `timestamp` (ISO 8601, UTC), `level`, `logger`, `message`, then every
`extra` passed to the log call (run_id, operator_id, plan_version, action…),
then `exc`/`stack` when present. Everything goes through
`flexagents.redaction`: extras by key and by text, message and traceback by
text, because a log line is the easiest place for a token to leak.
"""
from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from flexagents.redaction import redact, redact_text

# Attributes every LogRecord has; anything else on a record came from `extra`.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_BASE_FIELDS = ("timestamp", "level", "logger", "message", "exc", "stack")


def _extra_value(value: Any) -> Any:
    # Django's request logger passes the request object; its repr is enough
    # and the method/path are what a reader wants.
    method, path = getattr(value, "method", None), getattr(value, "path", None)
    if isinstance(method, str) and isinstance(path, str):
        return f"{method} {path}"
    return value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact_text(record.getMessage()),
        }
        extras = {key: _extra_value(value) for key, value in vars(record).items()
                  if key not in _RECORD_ATTRS and key not in _BASE_FIELDS}
        if extras:
            entry.update(redact(extras, text=True))
        if record.exc_info:
            entry["exc"] = redact_text(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exc"] = redact_text(record.exc_text)
        if record.stack_info:
            entry["stack"] = redact_text(self.formatStack(record.stack_info))
        # default=str: redact() already turned unknown types into text; this
        # only guards against a formatter crash losing the line.
        return json.dumps(entry, ensure_ascii=False, default=str)
