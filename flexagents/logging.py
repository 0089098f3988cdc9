"""One JSON object per log line, redacted.

Fields: `timestamp` (ISO 8601, UTC), `level`, `logger`, `message`, then the
bound log context (`correlation_id`, `run_id`: see `log_context`) and every
`extra` passed to the log call (run_id, operator_id, plan_version, action…),
then `exc`/`stack` when present. Everything goes through
`flexagents.redaction`: extras by key and by text, message and traceback by
text, because a log line is the easiest place for a token to leak.
"""
from __future__ import annotations

import json
import logging
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any

from flexagents.redaction import redact, redact_text

# Attributes every LogRecord has; anything else on a record came from `extra`.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_BASE_FIELDS = ("timestamp", "level", "logger", "message", "exc", "stack")
# Where the record factory puts the bound context (a name no `extra` uses, so
# a call may still pass `run_id` or `correlation_id` itself: extras win).
_CONTEXT_ATTR = "flex_context"

# --- correlation ids and the log context ----------------------------------------------
#
# A correlation id follows a run through every process: the web request that
# created it (header `X-Correlation-ID`, or `metadata.correlationId`, else a
# generated one) and every worker that advances it. Code binds `run_id` and
# `correlation_id` for the duration of a request or a claim; every log line
# written meanwhile carries them. A line that names a run but was written
# outside such a scope (a heartbeat thread, a service) gets the run's
# correlation id from a small per-process memory of the runs seen lately.

_context: ContextVar[dict[str, Any]] = ContextVar("flex_log_context", default={})
_VALID_ID = re.compile(r"^[A-Za-z0-9._:/+=@-]{1,200}$")
_KNOWN_LIMIT = 10000
_known: OrderedDict[str, str] = OrderedDict()
_known_lock = threading.Lock()


def new_correlation_id() -> str:
    return uuid.uuid4().hex


def clean_correlation_id(value: Any) -> str:
    """A client's correlation id if it is a plausible one, else ""."""
    text = value.strip() if isinstance(value, str) else ""
    return text if _VALID_ID.match(text) else ""


def remember_run(run_id: str, correlation_id: str) -> None:
    if not run_id or not correlation_id:
        return
    with _known_lock:
        _known[run_id] = correlation_id
        _known.move_to_end(run_id)
        while len(_known) > _KNOWN_LIMIT:
            _known.popitem(last=False)


def correlation_id_of(run_id: Any) -> str | None:
    with _known_lock:
        return _known.get(run_id) if isinstance(run_id, str) else None


def bind(**fields: Any) -> Token:
    """Add fields to the log context; `reset(token)` restores the previous one."""
    merged = {**_context.get(), **{k: v for k, v in fields.items() if v}}
    remember_run(merged.get("run_id", ""), merged.get("correlation_id", ""))
    return _context.set(merged)


def reset(token: Token) -> None:
    _context.reset(token)


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    token = bind(**fields)
    try:
        yield
    finally:
        reset(token)


def current_correlation_id() -> str | None:
    return _context.get().get("correlation_id")


def _install_record_factory() -> None:
    previous = logging.getLogRecordFactory()
    if getattr(previous, "flex_context", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        bound = _context.get()
        if bound:
            setattr(record, _CONTEXT_ATTR, dict(bound))
        return record

    factory.flex_context = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


_install_record_factory()


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The context and `extra` fields of a record (extras win), with the run's
    correlation id filled in when the line names a run."""
    fields = dict(getattr(record, _CONTEXT_ATTR, None) or {})
    extras = {key: _extra_value(value) for key, value in vars(record).items()
              if key not in _RECORD_ATTRS and key not in _BASE_FIELDS and key != _CONTEXT_ATTR}
    fields.update(extras)
    run_id = fields.get("run_id")
    if not run_id:
        return fields
    if extras.get("correlation_id"):
        remember_run(run_id, extras["correlation_id"])
        return fields
    known = correlation_id_of(run_id)
    if known and known != fields.get("correlation_id"):
        # A line about a run carries the run's id; the request that touched
        # the run (a read, a resume) keeps its own beside it.
        if fields.get("correlation_id"):
            fields["request_correlation_id"] = fields["correlation_id"]
        fields["correlation_id"] = known
    elif fields.get("correlation_id") and "run_id" in (getattr(record, _CONTEXT_ATTR, None) or {}):
        remember_run(run_id, fields["correlation_id"])
    return fields


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
        extras = record_fields(record)
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
