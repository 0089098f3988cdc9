"""OpenTelemetry tracing, optional and off by default.

On when the standard environment variables ask for traces
(`OTEL_TRACES_EXPORTER` other than `none`, or `OTEL_EXPORTER_OTLP_ENDPOINT`
/ `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), `OTEL_SDK_DISABLED` is not `true`
and the SDK is installed (`pip install -e .[tracing]`). Then:

- every HTTP request is a span (`TracingMiddleware`; a W3C `traceparent`
  header continues the caller's trace);
- every step a worker commits is a span (`@traced("flex.run.step")` on
  `runs.engine.loop.commit`);
- every node execution is a span (`span("flex.node")` in
  `runs.engine.executor.execute`).

Spans carry the bound log context (`run_id`, `correlation_id`, `node_id`,
`capability_id`, `plan_version`, `user`) as `flex.*` attributes, so a trace
and the log lines of a run share their ids.

Off, nothing is imported and nothing runs: `traced` returns the function
itself, `span` a shared null context, and the middleware removes itself at
startup (`MiddlewareNotUsed`).
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from django.core.exceptions import MiddlewareNotUsed
from django.http import HttpRequest, HttpResponseBase

logger = logging.getLogger("flexagents.tracing")

F = TypeVar("F", bound=Callable[..., Any])
_CONTEXT_ATTRIBUTES = ("run_id", "correlation_id", "node_id", "capability_id", "plan_version", "attempt", "user",
                       "worker")


def _wanted() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def _sdk_installed() -> bool:
    try:
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        return False
    return True


# Decided once per process, from the environment it was started with.
ENABLED = _wanted() and _sdk_installed()

_setup_lock = threading.Lock()
_tracer: Any = None


def _exporters() -> list[Any]:
    names = [n.strip().lower() for n in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if n.strip()]
    found: list[Any] = []
    for name in names:
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            found.append(ConsoleSpanExporter())
        elif name == "otlp":
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            except ImportError:
                logger.warning("OTEL_TRACES_EXPORTER=otlp needs opentelemetry-exporter-otlp-proto-http")
                continue
            found.append(OTLPSpanExporter())  # endpoint, headers, protocol: the OTEL_EXPORTER_OTLP_* variables
        elif name != "none":
            logger.warning("unknown OTEL_TRACES_EXPORTER %r ignored", name)
    return found


def tracer() -> Any:
    """The process's tracer, set up at first use (the SDK reads
    OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_BSP_* itself)."""
    global _tracer
    if _tracer is None:
        with _setup_lock:
            if _tracer is None:
                from opentelemetry import trace
                from opentelemetry.sdk.resources import Resource
                from opentelemetry.sdk.trace import TracerProvider
                from opentelemetry.sdk.trace.export import BatchSpanProcessor

                provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get(
                    "OTEL_SERVICE_NAME", "flexagents")}))
                for exporter in _exporters():
                    provider.add_span_processor(BatchSpanProcessor(exporter))
                trace.set_tracer_provider(provider)
                _tracer = trace.get_tracer("flexagents")
    return _tracer


def _context_attributes() -> dict[str, Any]:
    from flexagents.logging import current_fields

    return {f"flex.{key}": value for key, value in current_fields().items()
            if key in _CONTEXT_ATTRIBUTES and isinstance(value, (str, int, float, bool))}


_OFF = contextlib.nullcontext()


def span(name: str, **attributes: Any) -> Any:
    """A span around a block (with the log context's ids), or a null context when off."""
    if not ENABLED:
        return _OFF
    return _span(name, attributes)


@contextlib.contextmanager
def _span(name: str, attributes: dict[str, Any], context: Any = None, kind: Any = None) -> Iterator[Any]:
    kwargs: dict[str, Any] = {"attributes": {**_context_attributes(), **attributes}}
    if context is not None:
        kwargs["context"] = context
    if kind is not None:
        kwargs["kind"] = kind
    with tracer().start_as_current_span(name, **kwargs) as current:
        yield current


def traced(name: str) -> Callable[[F], F]:
    """Decorator: a span per call when tracing is on; the function itself when off."""

    def decorate(fn: F) -> F:
        if not ENABLED:
            return fn
        import functools

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with _span(name, {}):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


class TracingMiddleware:
    """A server span per HTTP request (method, route, status)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        if not ENABLED:
            raise MiddlewareNotUsed
        from asgiref.sync import iscoroutinefunction, markcoroutinefunction

        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def _start(self, request: HttpRequest) -> Any:
        from opentelemetry.propagate import extract
        from opentelemetry.trace import SpanKind

        carrier = {"traceparent": request.headers.get("traceparent", ""),
                   "tracestate": request.headers.get("tracestate", "")}
        return _span(f"{request.method} {request.path}", {"http.request.method": request.method,
                                                          "url.path": request.path},
                     context=extract({k: v for k, v in carrier.items() if v}), kind=SpanKind.SERVER)

    @staticmethod
    def _finish(current: Any, request: HttpRequest, response: HttpResponseBase) -> None:
        current.set_attribute("http.response.status_code", response.status_code)
        match = getattr(request, "resolver_match", None)
        if match is not None and match.route:
            current.set_attribute("http.route", str(match.route))
        for key, value in (getattr(request, "log_fields", None) or {}).items():
            if key in _CONTEXT_ATTRIBUTES and isinstance(value, (str, int, float, bool)):
                current.set_attribute(f"flex.{key}", value)

    def __call__(self, request: HttpRequest) -> Any:
        from asgiref.sync import iscoroutinefunction

        if iscoroutinefunction(self):
            return self.__acall__(request)
        with self._start(request) as current:
            response = self.get_response(request)
            self._finish(current, request, response)
            return response

    async def __acall__(self, request: HttpRequest) -> Any:
        with self._start(request) as current:
            response = await self.get_response(request)
            self._finish(current, request, response)
            return response
