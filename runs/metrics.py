"""Prometheus metrics (API.md, Operations).

Multi-process mode: every process (daphne web processes, `flex_worker`
processes) writes its counters and histograms to files in
`PROMETHEUS_MULTIPROC_DIR` (set by the settings before this module is
imported); a scrape of any web process aggregates them all.

Gauges that are facts of the database are not counted in memory: a custom
collector reads them at scrape time (`DatabaseFactsCollector`), so they are
right whichever process changed the data, and after a restart.

Counters and histograms are defined here, one place, with their labels.
Which of them are incremented, and where, is listed in docs/runbook.md.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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
LLM_TOKENS = Counter("flex_llm_tokens", "Language-model tokens used.", ["model", "kind"])

# Computed from the database at scrape time (DatabaseFactsCollector).
DATABASE_GAUGES = ("flex_hitl_pending", "flex_queue_depth", "flex_agents_active", "flex_workers_fresh")


class DatabaseFactsCollector(Collector):
    """Gauges read from the database on each scrape."""

    def collect(self) -> Iterator[Metric]:
        from hitl.models import HitlRequest, HitlStatus
        from runs.models import Run, RunStatus
        from runs.ops import fresh_workers

        yield GaugeMetricFamily("flex_hitl_pending", "HITL requests waiting for a person.",
                                value=HitlRequest.objects.filter(status=HitlStatus.PENDING).count())
        yield GaugeMetricFamily("flex_queue_depth", "Runs queued for a worker.",
                                value=Run.objects.filter(status=RunStatus.QUEUED).count())
        # No external agents exist yet (API.md, Agents): 0 until their table does.
        yield GaugeMetricFamily("flex_agents_active", "External agents with a fresh heartbeat.", value=0)
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
