"""docs/grafana-dashboard.json is a dashboard Grafana can import, and every
panel queries only metrics (and labels) that /metrics exposes."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from runs import metrics

DASHBOARD = Path(settings.BASE_DIR) / "docs" / "grafana-dashboard.json"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def exprs() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel["targets"]]


def exposed() -> dict[str, set[str]]:
    """Sample names the metrics of runs/metrics.py expose, with their labels."""
    names: dict[str, set[str]] = {name: set() for name in metrics.DATABASE_GAUGES}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            labels = set(value._labelnames) | ({"le"} if value._type == "histogram" else set())
            for suffix in SUFFIXES[value._type]:
                names[value._name + suffix] = labels
    return names


def test_it_is_a_dashboard_with_panels_that_query_prometheus():
    board = dashboard()
    assert board["title"] and board["uid"]
    ids = [panel["id"] for panel in board["panels"]]
    assert ids and len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["targets"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert [v["name"] for v in board["templating"]["list"]] == ["datasource"]


def test_every_metric_it_queries_exists_with_the_labels_it_uses():
    names = exposed()
    used: set[str] = set()
    for expr in exprs():
        found = set(re.findall(r"\bflex_[a-z_]+", expr))
        assert found, expr
        assert found <= set(names), (expr, found - set(names))
        used |= found
        for group in re.findall(r"by \(([^)]*)\)", expr):
            grouped = {label.strip() for label in group.split(",")}
            assert grouped <= set.union(*(names[n] for n in found)), (expr, grouped)
    # Every metric of the contract is on the dashboard.
    assert {name.rsplit("_", 1)[0] if name.endswith(("_bucket", "_count", "_sum")) else name for name in used} >= {
        "flex_runs_total", "flex_run_duration_seconds", "flex_node_duration_seconds", "flex_validation_retries_total",
        "flex_policy_triggers_total", "flex_planner_plans_total", "flex_hitl_pending", "flex_hitl_response_seconds",
        "flex_queue_depth", "flex_lease_takeovers_total", "flex_sse_open_streams", "flex_llm_tokens_total",
        "flex_agents_active"}


@pytest.mark.django_db
def test_what_it_expects_is_what_a_scrape_exposes():
    response = Client().get("/metrics")
    assert response.status_code == 200
    scraped = {sample.name for family in text_string_to_metric_families(response.content.decode())
               for sample in family.samples}
    assert scraped and scraped <= set(exposed()), scraped - set(exposed())
