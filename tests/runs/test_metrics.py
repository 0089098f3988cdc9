"""`GET /metrics`: Prometheus text, the database gauges, the token guard."""
from __future__ import annotations

import pytest
from django.test import Client, override_settings
from prometheus_client.parser import text_string_to_metric_families

from runs import metrics
from tests.conftest import load_envelope
from tests.hitl.helpers import APPROVE, pending_request, resume, submit

pytestmark = pytest.mark.django_db


def scrape(client: Client | None = None, **headers: str) -> dict[str, float]:
    response = (client or Client()).get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return {sample.name + _labels(sample.labels): sample.value
            for family in text_string_to_metric_families(response.content.decode())
            for sample in family.samples}


def _labels(labels: dict[str, str]) -> str:
    return "{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}" if labels else ""


def test_it_follows_the_inbox_and_the_queue(api_for, client_user, operator, drain):
    before = scrape()
    assert before["flex_hitl_pending"] == 0
    assert before["flex_queue_depth"] == 0

    run_id = submit(api_for(client_user), load_envelope("approval-required"))
    assert scrape()["flex_queue_depth"] == 1  # submitted, no worker yet
    drain()
    waiting = scrape()
    assert waiting["flex_hitl_pending"] == 1
    assert waiting["flex_queue_depth"] == 0

    answered = resume(api_for(operator), run_id, pending_request(run_id).id, [APPROVE])
    assert answered.status_code == 200, answered.content
    after = scrape()
    assert after["flex_hitl_pending"] == 0
    assert after["flex_queue_depth"] == 1  # resumed: queued for a worker again
    drain()
    assert scrape()["flex_queue_depth"] == 0


def test_it_says_no_agent_is_active_until_agents_exist():
    assert scrape()["flex_agents_active"] == 0


def test_it_exposes_the_unlabelled_metrics_whether_or_not_they_were_incremented():
    # The test session's processes share one metrics directory: earlier tests
    # may have counted; tests/multiprocess/test_metrics.py checks exact counts.
    samples = scrape()
    for name in ("flex_lease_takeovers_total", "flex_run_duration_seconds_count", "flex_hitl_response_seconds_count",
                 "flex_sse_open_streams"):
        assert samples[name] >= 0


def test_it_defines_every_metric_name_of_the_contract_with_its_labels():
    defined = {m._name: tuple(m._labelnames) for m in (
        metrics.RUNS, metrics.RUN_DURATION, metrics.NODE_DURATION, metrics.VALIDATION_RETRIES,
        metrics.POLICY_TRIGGERS, metrics.PLANNER_PLANS, metrics.HITL_RESPONSE, metrics.LEASE_TAKEOVERS,
        metrics.SSE_OPEN_STREAMS, metrics.LLM_TOKENS)}
    assert defined == {
        "flex_runs": ("status",), "flex_run_duration_seconds": (), "flex_node_duration_seconds": ("capability_id",),
        "flex_validation_retries": ("capability_id",), "flex_policy_triggers": ("action",),
        "flex_planner_plans": ("result",), "flex_hitl_response_seconds": (), "flex_lease_takeovers": (),
        "flex_sse_open_streams": (), "flex_llm_tokens": ("model", "kind"),
    }
    assert set(metrics.DATABASE_GAUGES) >= {"flex_hitl_pending", "flex_queue_depth", "flex_agents_active"}


@override_settings(FLEX_METRICS_TOKEN="scrape-me")
def test_it_asks_for_the_metrics_token_when_one_is_set():
    missing = Client().get("/metrics")
    assert missing.status_code == 401
    assert missing.json()["code"] == "not_authenticated"
    assert "scrape-me" not in missing.content.decode()
    wrong = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-you")
    assert wrong.status_code == 401
    assert scrape(HTTP_AUTHORIZATION="Bearer scrape-me")["flex_hitl_pending"] == 0


def test_it_is_open_without_a_token():
    assert Client().get("/metrics").status_code == 200


@pytest.mark.parametrize("accept", [
    # What Prometheus 2.x/3.x sends, and a scraper that only takes text.
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "text/plain",
    "text/plain;version=0.0.4",
])
def test_it_answers_what_scrapers_accept(accept):
    assert scrape(HTTP_ACCEPT=accept)["flex_queue_depth"] == 0


def test_it_answers_a_client_that_only_takes_json_with_the_text_format():
    response = Client().get("/metrics", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    assert b"flex_queue_depth" in response.content


@pytest.mark.parametrize("method", ["post", "put", "delete"])
def test_it_refuses_other_methods_with_a_json_error(method):
    response = getattr(Client(), method)("/metrics")
    assert response.status_code == 405
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == "method_not_allowed"
