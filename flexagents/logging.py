"""Structured log lines through structlog, redacted.

Call sites use the standard library (`logging.getLogger(__name__).info(msg,
extra={...})`) or structlog (`structlog.get_logger().info("event", k=v)`);
both reach the one handler, whose formatter is a structlog
`ProcessorFormatter` running the same processors:

1. `add_fields`: `timestamp` (ISO 8601, UTC), `level`, `logger`, `message`,
   then the bound log context (`correlation_id`, `run_id`, `user`,
   `node_id`, `capability_id`, `plan_version`: see `log_context`) and every
   `extra` or keyword of the call (they win over the context);
2. `add_exception`: `exc` / `stack` when present;
3. `redact_fields`: everything through `flexagents.redaction` (fields by key
   and by text, message and traceback by text), because a log line is the
   easiest place for a token to leak;
4. a renderer: one JSON object per line (`JsonFormatter`, the default), or
   plain console lines (`ConsoleFormatter`, `make run` with DEBUG=1;
   `FLEX_LOG_FORMAT` chooses).
"""
from __future__ import annotations

import json
import logging
import re
import sys
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any

import structlog
from structlog.stdlib import ProcessorFormatter

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


def current_fields() -> dict[str, Any]:
    """A copy of the log context bound now."""
    return dict(_context.get())


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
              if key not in _RECORD_ATTRS and key not in _BASE_FIELDS and key != _CONTEXT_ATTR
              and not key.startswith("_")}
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


# --- processors (structlog) ----------------------------------------------------------------

# Keys of structlog's own event dict that are not fields of the line.
_EVENT_META = frozenset({"event", "_record", "_from_structlog", "exc_info", "stack_info", "positional_args"})


def _timestamp(created: float) -> str:
    return datetime.fromtimestamp(created, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def add_fields(_logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """The line's fields in their order: timestamp, level, logger, message,
    then context and extras (from a stdlib record) or keywords (structlog)."""
    record: logging.LogRecord | None = event_dict.get("_record")
    entry: dict[str, Any] = {
        "timestamp": _timestamp(record.created) if record is not None else _timestamp(datetime.now(UTC).timestamp()),
        "level": record.levelname if record is not None else method.upper(),
        "logger": record.name if record is not None else "",
        "message": str(event_dict.get("event", "")),
    }
    fields = record_fields(record) if record is not None else {}
    fields.update({k: v for k, v in event_dict.items() if k not in _EVENT_META})
    entry.update(fields)
    for key in ("exc_info", "stack_info"):
        if event_dict.get(key):
            entry[key] = event_dict[key]
    if record is not None and not entry.get("exc_info") and record.exc_text:
        entry["exc"] = record.exc_text
    return entry


_TRACEBACKS = logging.Formatter()


def add_exception(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """`exc_info` / `stack_info` become the text fields `exc` / `stack`."""
    exc_info = event_dict.pop("exc_info", None)
    if exc_info:
        if exc_info is True:
            exc_info = sys.exc_info()
        elif isinstance(exc_info, BaseException):
            exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
        event_dict["exc"] = _TRACEBACKS.formatException(exc_info)
    stack_info = event_dict.pop("stack_info", None)
    if stack_info:
        event_dict["stack"] = _TRACEBACKS.formatStack(stack_info) if isinstance(stack_info, str) else str(stack_info)
    return event_dict


_TEXT_FIELDS = ("message", "exc", "stack")
_PLAIN_FIELDS = ("timestamp", "level", "logger")


def redact_fields(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """The redaction processor: the one redactor (`flexagents.redaction`) over
    every field; free text (message, traceback) by text."""
    entry = {key: event_dict[key] for key in _PLAIN_FIELDS if key in event_dict}
    for key in _TEXT_FIELDS:
        if key in event_dict:
            entry[key] = redact_text(str(event_dict[key]))
    rest = {k: v for k, v in event_dict.items() if k not in _TEXT_FIELDS and k not in _PLAIN_FIELDS}
    if rest:
        entry.update(redact(rest, text=True))
    # The traceback reads best last.
    for key in ("exc", "stack"):
        if key in entry:
            entry[key] = entry.pop(key)
    return entry


SHARED_PROCESSORS: tuple[Any, ...] = (add_fields, add_exception, redact_fields)


class JsonFormatter(ProcessorFormatter):
    """One JSON object per line (production, and whenever DEBUG is off)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # default=str: redact() already turned unknown types into text; this
        # only guards against a renderer crash losing the line.
        super().__init__(*args, processors=[*SHARED_PROCESSORS,
                                            structlog.processors.JSONRenderer(ensure_ascii=False, default=str)],
                         **kwargs)


def _for_console(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    # ConsoleRenderer prints `exception` as a block after the line.
    if "exc" in event_dict:
        event_dict["exception"] = event_dict.pop("exc")
    return event_dict


class ConsoleFormatter(ProcessorFormatter):
    """Plain lines for a person at a terminal (`make run`): time, level,
    message, logger and the fields as key=value; redacted the same way."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, processors=[
            *SHARED_PROCESSORS, _for_console,
            # Tracebacks arrive as redacted text (`exception`); the plain
            # formatter guards against one that shows local variables.
            structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty(), event_key="message",
                                          exception_formatter=structlog.dev.plain_traceback)],
            **kwargs)


def configure_structlog() -> None:
    """structlog's own loggers (`structlog.get_logger()`) hand their event
    to the standard library, so both kinds of call reach the same handler
    and formatter (settings.LOGGING)."""
    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


configure_structlog()
