"""Prometheus metrics (API.md, Operations).

Multi-process mode: every process (daphne web processes, `flex_worker`
processes) writes its counters and histograms to files in
`PROMETHEUS_MULTIPROC_DIR` (set by the settings before this module is
imported); a scrape of any web process aggregates them all.

Gauges that are facts of the database are not counted in memory: a custom
collector reads them at scrape time (`DatabaseFactsCollector`), so they are
right whichever process changed the data, and after a restart.

Counters and histograms are defined here, one place, with their labels,
and each is changed by one small named function below (`run_finished`,
`node_finished`, …). Most are fed by `events_committed`: every state change
is a `RunEvent` written by `runs.events.append_events`, so counting the
events of a transaction after it commits counts exactly what happened (a
fenced or rolled-back step counts nothing), in whichever process committed
it (worker or web). Two facts are not events: a lease takeover
(`runs.engine.lease.claim_next`) and an open SSE stream
(`runs.streaming.StreamHub`). `flex_llm_tokens_total{model,kind}` counts the
`usage` of committed `node_complete`, `node_error` and `validation_error`
events (a model's tokens, whatever the attempt's outcome).
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hitl.models import HitlRequest, HitlStatus
from planner.models import Agent, AgentStatus
from runs import events as ev
from runs import notify
from runs.models import Run, RunStatus
from runs.ops import fresh_workers

logger = logging.getLogger("runs.metrics")

# Seconds: node steps are milliseconds to minutes; runs and human answers up to days.
_NODE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, float("inf"))
_LONG_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 86400, 7 * 86400, float("inf"))

RUNS = Counter("flex_runs", "Runs that reached a terminal status.", ["status"])
RUN_DURATION = Histogram("flex_run_duration_seconds", "Creation to terminal status, per run.",
                         buckets=_LONG_BUCKETS)
NODE_DURATION = Histogram("flex_node_duration_seconds", "One node execution (one attempt).", ["capability_id"],
                          buckets=_NODE_BUCKETS)
VALIDATION_RETRIES = Counter("flex_validation_retries", "Node attempts retried after a failed validation.",
                             ["capability_id"])
POLICY_TRIGGERS = Counter("flex_policy_triggers", "Runtime policies that fired.", ["action"])
PLANNER_PLANS = Counter("flex_planner_plans", "Planner outcomes.", ["result"])
HITL_RESPONSE = Histogram("flex_hitl_response_seconds", "From a HITL request to its resolution.",
                          buckets=_LONG_BUCKETS)
LEASE_TAKEOVERS = Counter("flex_lease_takeovers", "Runs claimed from a worker whose lease expired.")
SSE_OPEN_STREAMS = Gauge("flex_sse_open_streams", "SSE streams open now, all live processes summed.",
                         multiprocess_mode="livesum")
SSE_TABLE_READS = Counter("flex_sse_table_reads", "Reads of the event table by SSE streams (replays and "
                          "catch-ups; one per run per wake, shared by its lagging streams).")
LLM_TOKENS = Counter("flex_llm_tokens", "Language-model tokens used.", ["model", "kind"])
NOTIFICATION_ATTEMPTS = Counter("flex_notification_attempts",
                                "Notification delivery attempts (webhooks, email) by outcome: delivered, retry "
                                "(will be tried again), failed (gave up), refused (SSRF guard).",
                                ["channel", "outcome"])

# Computed from the database at scrape time (DatabaseFactsCollector).
DATABASE_GAUGES = ("flex_hitl_pending", "flex_queue_depth", "flex_agents_active", "flex_workers_fresh")


# --- the increments (one function per fact) -----------------------------------

def notification_attempt(*, channel: str, outcome: str) -> None:
    """One delivery attempt of a notification (runs.notifications)."""
    NOTIFICATION_ATTEMPTS.labels(channel=channel, outcome=outcome).inc()


def run_finished(*, status: str, seconds: float | None) -> None:
    """A run reached a terminal status (completed, failed, cancelled)."""
    RUNS.labels(status=status).inc()
    if seconds is not None:
        RUN_DURATION.observe(max(seconds, 0.0))


def node_finished(*, capability_id: str, seconds: float) -> None:
    """One node execution completed (its result committed)."""
    NODE_DURATION.labels(capability_id=capability_id).observe(max(seconds, 0.0))


def validation_retry(*, capability_id: str) -> None:
    """A node's output failed validation and the node runs again."""
    VALIDATION_RETRIES.labels(capability_id=capability_id).inc()


def policy_triggered(*, action: str) -> None:
    POLICY_TRIGGERS.labels(action=action).inc()


def plan_result(*, result: str) -> None:
    """The planner's outcome: `generated`, `rejected` or `replanned`."""
    PLANNER_PLANS.labels(result=result).inc()


def hitl_answered(*, seconds: float | None) -> None:
    """A HITL request was resolved by a person (not removed)."""
    if seconds is not None:
        HITL_RESPONSE.observe(max(seconds, 0.0))


def lease_takeover() -> None:
    """A worker claimed a run whose previous worker's lease expired."""
    LEASE_TAKEOVERS.inc()


def sse_stream_opened() -> None:
    SSE_OPEN_STREAMS.inc()


def sse_stream_closed() -> None:
    SSE_OPEN_STREAMS.dec()


def sse_table_read() -> None:
    SSE_TABLE_READS.inc()


def llm_tokens_used(*, model: str, kind: str, tokens: int) -> None:
    """Tokens of a language-model call: `kind` is prompt or completion."""
    LLM_TOKENS.labels(model=model, kind=kind).inc(tokens)


def events_committed(rows: Iterable[Any]) -> None:
    """Count the facts among one transaction's committed events (runs.events).

    A `validation_error` is a retry when the same step starts the same node
    again (`node_start`): that is how the engine retries (runs.engine.loop).
    Never raises: metrics must not break the write path.
    """
    try:
        _count(list(rows))
    except Exception:  # noqa: BLE001 — see docstring
        logger.warning("metrics: counting committed events failed", exc_info=True)


def _count(rows: list[Any]) -> None:
    # Started again in a worker (node_start) or offered again as a task (node_dispatched).
    restarted = {row.node_id: row.payload.get("capabilityId", "") for row in rows
                 if row.type in (ev.NODE_START, ev.NODE_DISPATCHED)}
    for row in rows:
        payload = row.payload or {}
        usage = payload.get("usage") if row.type in _USAGE_EVENTS else None
        if isinstance(usage, dict):
            model = str(usage.get("model") or "")
            llm_tokens_used(model=model, kind="prompt", tokens=int(usage.get("promptTokens") or 0))
            llm_tokens_used(model=model, kind="completion", tokens=int(usage.get("completionTokens") or 0))
        if row.type == ev.COMPLETE:
            run_finished(status=str(payload.get("status")), seconds=_run_seconds(row))
        elif row.type == ev.NODE_COMPLETE:
            node_finished(capability_id=str(payload.get("capabilityId", "")),
                          seconds=float(payload.get("durationMs") or 0) / 1000)
        elif row.type == ev.VALIDATION_ERROR and payload.get("scope") == "node" and row.node_id in restarted:
            validation_retry(capability_id=restarted[row.node_id])
        elif row.type == ev.POLICY_TRIGGERED:
            action = payload.get("action")
            policy_triggered(action=str(action.get("type") if isinstance(action, dict) else action))
        elif row.type == ev.PLAN_GENERATED:
            plan_result(result="generated")
        elif row.type == ev.PLAN_REJECTED:
            plan_result(result="rejected")
        elif row.type == ev.PLAN_UPDATED and payload.get("reason") == "replan":
            plan_result(result="replanned")
        elif row.type == ev.HITL_RESOLVED and payload.get("resolution") not in (None, "removed"):
            hitl_answered(seconds=_hitl_seconds(payload.get("requestId"), row.created_at))


_USAGE_EVENTS = frozenset({ev.NODE_COMPLETE, ev.NODE_ERROR, ev.VALIDATION_ERROR})


# Creation times the writer already holds for a run it is finishing or a
# request being answered (`note_run_created`, `note_hitl_created`), so
# counting the end costs no query; bounded (cleared when full).
_CREATED: dict[tuple[str, Any], Any] = {}
_CREATED_MAX = 4096


def _note(key: tuple[str, Any], created_at: Any) -> None:
    if len(_CREATED) >= _CREATED_MAX:
        _CREATED.clear()
    _CREATED[key] = created_at


def note_run_created(run_id: str, created_at: Any) -> None:
    """Before committing a run's end: when it was created (`flex_run_seconds`)."""
    _note(("run", run_id), created_at)


def note_hitl_created(request_id: Any, created_at: Any) -> None:
    """Before committing a request's answer: when it was asked (`flex_hitl_answer_seconds`)."""
    _note(("hitl", request_id), created_at)


def _run_seconds(row: Any) -> float | None:
    created = _CREATED.pop(("run", row.run_id), None)
    if created is None:
        created = Run.objects.filter(pk=row.run_id).values_list("created_at", flat=True).first()
    return (row.created_at - created).total_seconds() if created else None


def _hitl_seconds(request_id: Any, resolved_at: Any) -> float | None:
    created = _CREATED.pop(("hitl", request_id), None)
    if created is not None:
        return float((resolved_at - created).total_seconds())
    created = HitlRequest.objects.filter(pk=request_id).values_list("created_at", flat=True).first()
    return (resolved_at - created).total_seconds() if created else None


# --- scrape time -----------------------------------------------------------------

class DatabaseFactsCollector(Collector):
    """Gauges read from the database on each scrape."""

    def collect(self) -> Iterator[Metric]:

        yield GaugeMetricFamily("flex_hitl_pending", "HITL requests waiting for a person.",
                                value=HitlRequest.objects.filter(status=HitlStatus.PENDING).count())
        yield GaugeMetricFamily("flex_queue_depth", "Runs queued for a worker.",
                                value=Run.objects.filter(status=RunStatus.QUEUED).count())
        yield GaugeMetricFamily("flex_agents_active", "Registered agents whose status is active "
                                "(a heartbeat within 3 x their interval).",
                                value=Agent.objects.filter(status=AgentStatus.ACTIVE).count())
        yield GaugeMetricFamily("flex_workers_fresh", "Workers with a fresh heartbeat or a live lease.",
                                value=fresh_workers())


def scrape_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(DatabaseFactsCollector())
    return registry


def render() -> tuple[bytes, str]:
    """The body and content type of one scrape."""
    return generate_latest(scrape_registry()), CONTENT_TYPE_PLAIN_0_0_4


# Count every committed transaction's events in this process.
notify.register_commit_listener(events_committed)
