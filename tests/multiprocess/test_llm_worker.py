"""The language-model example envelope through real processes: daphne, a
`flex_worker` with `OPENAI_API_KEY` and `OPENAI_BASE_URL` in its environment
(as `make run` would have them), and the local OpenAI-compatible test server.
The run completes with model-written copy and usage in its events, a
rate-limited call is retried, and the key is in no process's log lines."""
from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from runs.models import Run, RunEvent
from tests.llm_helpers import TEST_API_KEY, LlmTestServer, answer, brief_facets, copy_facets, review_facets
from tests.multiprocess.conftest import wait_run_status

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def llm_server() -> Iterator[LlmTestServer]:
    server = LlmTestServer()
    yield server
    server.stop()


def test_a_worker_runs_the_llm_example_against_an_openai_compatible_endpoint(procs, token, llm_server):
    from tests.conftest import load_envelope

    key_env = {"OPENAI_API_KEY": TEST_API_KEY, "OPENAI_BASE_URL": llm_server.base_url, "OPENAI_MODEL": "mp-model",
               "LOG_LEVEL": "INFO", "FLEX_RETRY_BACKOFF_SECONDS": "0.05"}
    llm_server.script([
        {"status": 429, "match": "(`strategic_rationale`)", "headers": {"retry-after": "0"},
         "error": {"message": "Rate limit reached for key {key}", "type": "requests", "code": "rate_limit_exceeded"}},
        answer(brief_facets(), prompt_tokens=300, completion_tokens=120, match="(`strategic_rationale`)"),
        answer(copy_facets(2), prompt_tokens=500, completion_tokens=400, match="(`post_copy`)"),
        answer(review_facets(0.85), prompt_tokens=200, completion_tokens=60, match="(`qa_report`)"),
    ])
    web, port = procs.daphne(env=key_env)
    worker = procs.worker(env=key_env)
    auth = {"Authorization": f"Bearer {token}"}

    response = httpx.post(f"http://127.0.0.1:{port}/api/v1/flex/runs", json=load_envelope("llm-social-post"),
                          headers=auth, timeout=30)
    assert response.status_code == 202, response.text
    run_id = response.json()["runId"]
    assert wait_run_status(run_id, ("completed", "failed"), timeout=60) == "completed", Run.objects.get(
        pk=run_id).error

    output = Run.objects.get(pk=run_id).output
    assert output["copyVariants"] == copy_facets(2)["copyVariants"]
    assert output["qa_report"]["score"] == 0.85
    types = list(RunEvent.objects.filter(run_id=run_id).order_by("seq").values_list("type", flat=True))
    assert types.count("node_error") == 1  # the 429, retried
    debug = httpx.get(f"http://127.0.0.1:{port}/api/v1/flex/runs/{run_id}", headers=auth, timeout=30).json()
    assert debug["usage"]["totalTokens"] == 300 + 120 + 500 + 400 + 200 + 60
    assert debug["usage"]["byModel"][0]["model"] == "mp-model"
    events = httpx.get(f"http://127.0.0.1:{port}/api/v1/flex/runs/{run_id}/events", headers=auth, timeout=30).text
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    assert 'flex_llm_tokens_total{kind="completion",model="mp-model"} 580.0' in metrics

    web.stop()
    worker.stop()
    logs = worker.log_path.read_text() + web.log_path.read_text()
    assert "llm call" in worker.log_path.read_text()
    assert [r["headers"]["authorization"] for r in llm_server.requests()] == [f"Bearer {TEST_API_KEY}"] * 4
    for name, text in {"logs": logs, "debug": json.dumps(debug), "events": events, "metrics": metrics}.items():
        assert TEST_API_KEY not in text, name
