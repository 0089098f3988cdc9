"""Language-model capabilities against a local OpenAI-compatible server
(tests/llm_server.py, its own process), through the engine: what the request
carries, usage, retries, permanent errors, clarify, invalid replies, the
token budget, and the key appearing nowhere a person or a log can read it.
"""
from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.test import Client

from flexagents.logging import JsonFormatter
from hitl.models import HitlRequest
from planner.registry import get_registry, reset_registry
from runs.models import NodeRun, PlanVersion, Run, RunEvent
from tests.conftest import load_envelope
from tests.llm_helpers import (TEST_API_KEY, LlmTestServer, answer, brief_facets, copy_facets,
                               review_facets)

pytestmark = pytest.mark.django_db(transaction=True)

STRATEGIST, COPYWRITER, REVIEWER = "llm.SocialPosting", "llm.SocialpostDrafting", "llm.ContentReview"
# The user message names the facets each capability produces: a reply is
# matched to the request of the right node whatever the order.
FOR_STRATEGIST = "(`strategic_rationale`)"
FOR_COPYWRITER = "(`post_copy`)"
FOR_REVIEWER = "(`qa_report`)"


@pytest.fixture(scope="module")
def llm_server() -> Iterator[LlmTestServer]:
    server = LlmTestServer()
    yield server
    server.stop()


@pytest.fixture
def llm(llm_server: LlmTestServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[LlmTestServer]:
    """The endpoint configured as `make run` would see it with a key set."""
    llm_server.reset()
    monkeypatch.setenv("OPENAI_API_KEY", TEST_API_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", llm_server.base_url)
    monkeypatch.setenv("OPENAI_MODEL", "test-model")
    reset_registry()
    yield llm_server
    monkeypatch.undo()
    reset_registry()


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Every log line of the test, formatted as production formats it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(previous)


def llm_envelope(**constraints: Any) -> dict[str, Any]:
    envelope = load_envelope("llm-social-post")
    envelope["constraints"].update(constraints)
    return envelope


def submit(api: Any, envelope: dict[str, Any]) -> str:
    response = api.post("/api/v1/flex/runs", envelope, format="json")
    assert response.status_code == 202, response.content
    return str(response.json()["runId"])


def events(run_id: str, *types: str) -> list[dict[str, Any]]:
    rows = RunEvent.objects.filter(run_id=run_id).order_by("seq")
    return [{"type": r.type, **r.payload} for r in rows if not types or r.type in types]


def user_prompt(request: dict[str, Any]) -> str:
    return str(request["body"]["messages"][-1]["content"])


def happy_script(count: int = 2) -> list[dict[str, Any]]:
    return [answer(brief_facets(), prompt_tokens=300, completion_tokens=120, match=FOR_STRATEGIST),
            answer(copy_facets(count), prompt_tokens=500, completion_tokens=400, match=FOR_COPYWRITER),
            answer(review_facets(), prompt_tokens=200, completion_tokens=60, match=FOR_REVIEWER)]


def test_the_request_carries_the_contract_the_facets_and_the_instructions(llm, api_for, client_user, drain):
    llm.script(happy_script())

    run_id = submit(api_for(client_user), llm_envelope())
    drain()

    run = Run.objects.get(pk=run_id)
    assert run.status == "completed", run.error
    assert run.output["copyVariants"] == copy_facets(2)["copyVariants"]
    requests = llm.requests()
    assert len(requests) == 3
    graph = PlanVersion.objects.get(run_id=run_id, version=1).graph
    by_capability = {node["capabilityId"]: node for node in graph["nodes"]}
    strategist = next(r for r in requests if FOR_STRATEGIST in user_prompt(r))
    body = strategist["body"]
    # The node's compiled contract is the structured-output response_format.
    assert body["response_format"]["type"] == "json_schema"
    schema = body["response_format"]["json_schema"]
    assert schema["name"] == "flex_node_reply" and schema["strict"] is False
    assert schema["schema"]["properties"]["answer"] == by_capability[STRATEGIST]["contract"]
    assert set(schema["schema"]["properties"]["clarify"]["properties"]) == {"question", "options"}
    # The declaration: model (from the endpoint), temperature, output token limit.
    assert body["model"] == "test-model"
    assert body["temperature"] == 0.4
    assert body["max_completion_tokens"] == 1200
    assert strategist["headers"]["authorization"] == f"Bearer {TEST_API_KEY}"
    system = body["messages"][0]["content"]
    assert system.startswith("You are a senior social media strategist.")
    prompt = user_prompt(strategist)
    # The objective, the consumed facets with title, description, semantics and value.
    assert "Two reviewed LinkedIn variants announcing the real-time audit trail" in prompt
    assert "## Company information (`company_information`)" in prompt
    assert "Who the company is: its name, positioning and values." in prompt
    assert "Guidance: Use the name verbatim." in prompt
    assert '"positioning": "AI compliance copilots for regulated teams"' in prompt
    assert "## Creative brief (`creative_brief`)" in prompt  # what to produce
    assert "- Variant A should highlight risk reduction." in prompt  # special instructions
    copywriter = user_prompt(next(r for r in requests if FOR_COPYWRITER in user_prompt(r)))
    assert "Write exactly 2 variant(s)." in copywriter
    # Facets produced upstream (by the model) reach the next node's prompt.
    assert "Every change is recorded as it happens" in copywriter
    assert "## Tone of voice (`toneOfVoice`)" in copywriter  # an optional input, given


def test_directives_and_clarifications_reach_the_prompt(llm, api_for, client_user, operator, drain):
    envelope = llm_envelope()
    del envelope["inputs"]["post_context"]["audience"]
    envelope["policies"]["planner"]["directives"] = {"brandVoice": "plain words, no hype"}
    llm.script([{"status": 200, "match": FOR_STRATEGIST, "usage": {"prompt_tokens": 80, "completion_tokens": 20},
                 "json": {"clarify": {"question": "Which readers should the post speak to?",
                                      "options": [{"id": "banks", "label": "Bank compliance teams"}]}}}])

    run_id = submit(api_for(client_user), envelope)
    drain()

    assert Run.objects.get(pk=run_id).status == "awaiting_hitl"
    request = HitlRequest.objects.get(run_id=run_id)
    assert request.kind == "clarify"
    assert request.question == "Which readers should the post speak to?"
    assert request.options == [{"id": "banks", "label": "Bank compliance teams"}]
    assert request.pending_node_id == "strategist"  # the twin takes its namesake's node id
    first = llm.requests()[0]
    assert "# Directives" in user_prompt(first) and "plain words, no hype" in user_prompt(first)

    llm.script([answer(brief_facets("Treasury teams at credit unions"), match=FOR_STRATEGIST),
                answer(copy_facets(2, "Treasury teams at credit unions"), match=FOR_COPYWRITER),
                answer(review_facets(), match=FOR_REVIEWER)])
    resumed = api_for(operator).post("/api/hitl/resume", {
        "runId": run_id, "requestId": request.id,
        "responses": [{"responseType": "freeform", "freeformText": "Treasury teams at credit unions"}]},
        format="json")
    assert resumed.status_code == 200, resumed.content
    drain()

    assert Run.objects.get(pk=run_id).status == "completed"
    again = [r for r in llm.requests() if FOR_STRATEGIST in user_prompt(r)][1]
    prompt = user_prompt(again)
    assert "# Clarifications" in prompt
    assert "- Question: Which readers should the post speak to?" in prompt
    assert "  Answer: Treasury teams at credit unions" in prompt
    # The clarify attempt's tokens count too.
    strategist = NodeRun.objects.get(run_id=run_id, capability_id=STRATEGIST)
    assert [(u["attempt"], u["promptTokens"]) for u in strategist.usage] == [(1, 80), (2, 100)]


def test_usage_is_recorded_per_attempt_in_node_complete_and_summed_in_the_debug_view(llm, api_for, client_user,
                                                                                    support, drain):
    llm.script(happy_script())

    run_id = submit(api_for(client_user), llm_envelope())
    drain()

    completes = {e["capabilityId"]: e for e in events(run_id, "node_complete")}
    usage = completes[COPYWRITER]["usage"]
    assert {k: usage[k] for k in ("model", "promptTokens", "completionTokens")} == {
        "model": "test-model", "promptTokens": 500, "completionTokens": 400}
    assert usage["callMs"] > 0
    assert "usage" not in completes["flex.OutputMapper"]  # no model, no usage
    node = NodeRun.objects.get(run_id=run_id, capability_id=COPYWRITER)
    assert [(u["attempt"], u["model"], u["promptTokens"], u["completionTokens"]) for u in node.usage] == [
        (1, "test-model", 500, 400)]

    debug = api_for(support).get(f"/api/v1/flex/runs/{run_id}").json()
    assert debug["usage"]["promptTokens"] == 1000
    assert debug["usage"]["completionTokens"] == 580
    assert debug["usage"]["totalTokens"] == 1580
    assert debug["usage"]["calls"] == 3
    assert debug["usage"]["maxTokens"] == 20000
    assert debug["usage"]["byModel"] == [{"model": "test-model", "promptTokens": 1000, "completionTokens": 580,
                                          "calls": 3}]
    copy_node = next(n for n in debug["nodes"] if n["capabilityId"] == COPYWRITER)
    assert copy_node["usage"][0]["promptTokens"] == 500
    frame = next(f for f in api_for(support).get(f"/api/v1/flex/runs/{run_id}/events").json()["events"]
                 if f["type"] == "node_complete" and f["payload"]["capabilityId"] == COPYWRITER)
    assert frame["payload"]["usage"]["completionTokens"] == 400  # a count, not a secret: shown

    metrics = Client().get("/metrics").content.decode()
    assert 'flex_llm_tokens_total{kind="prompt",model="test-model"}' in metrics


def test_a_rate_limit_then_success_is_retried(llm, api_for, client_user, drain):
    llm.script([{"status": 429, "match": FOR_STRATEGIST, "headers": {"retry-after": "0"},
                 "error": {"message": "Rate limit reached for test-model", "type": "requests",
                           "code": "rate_limit_exceeded"}},
                *happy_script()])

    run_id = submit(api_for(client_user), llm_envelope())
    drain()

    assert Run.objects.get(pk=run_id).status == "completed"
    errors = events(run_id, "node_error")
    assert len(errors) == 1
    assert errors[0]["capabilityId"] == STRATEGIST and errors[0]["willRetry"] is True
    assert errors[0]["error"]["code"] == "llm_rate_limited"
    assert "Rate limit reached" in errors[0]["error"]["message"]
    starts = [e["attempt"] for e in events(run_id, "node_start") if e["capabilityId"] == STRATEGIST]
    assert starts == [1, 2]
    assert len([r for r in llm.requests() if FOR_STRATEGIST in user_prompt(r)]) == 2  # no hidden SDK retry


def test_a_server_error_then_success_is_retried(llm, api_for, client_user, drain):
    llm.script([{"status": 503, "match": FOR_COPYWRITER, "error": {"message": "The server is overloaded",
                                                                    "type": "server_error"}},
                *happy_script()])

    run_id = submit(api_for(client_user), llm_envelope())
    drain()

    assert Run.objects.get(pk=run_id).status == "completed"
    [error] = events(run_id, "node_error")
    assert (error["capabilityId"], error["error"]["code"], error["willRetry"]) == (COPYWRITER, "llm_unavailable",
                                                                                   True)


def test_a_401_fails_the_node_without_retry(llm, api_for, client_user, drain):
    llm.script([{"status": 401, "error": {"message": "Incorrect API key provided: {key}. You can find your API key "
                                                     "at https://platform.openai.com/account/api-keys.",
                                          "type": "invalid_request_error", "code": "invalid_api_key"}}])

    run_id = submit(api_for(client_user), llm_envelope())
    drain()

    run = Run.objects.get(pk=run_id)
    assert run.status == "failed"
    [error] = events(run_id, "node_error")
    assert error["willRetry"] is False
    assert error["error"]["code"] == "llm_authentication_failed"
    assert "refused the request (401)" in error["error"]["message"]
    assert TEST_API_KEY not in json.dumps(error) and TEST_API_KEY not in json.dumps(run.error)
    assert len(llm.requests()) == 1
    assert run.error["code"] == "llm_authentication_failed"


def test_a_400_is_permanent_too(llm, api_for, client_user, drain):
    llm.script([{"status": 400, "error": {"message": "Invalid schema for response_format 'flex_node_reply'",
                                          "type": "invalid_request_error", "code": "invalid_json_schema"}}])

    run_id = submit(api_for(client_user), llm_envelope())
    drain()

    [error] = events(run_id, "node_error")
    assert (error["error"]["code"], error["willRetry"]) == ("llm_request_rejected", False)
    assert Run.objects.get(pk=run_id).status == "failed"


def test_an_invalid_json_reply_counts_as_a_validation_attempt_and_the_errors_reach_the_retry(llm, api_for,
                                                                                           client_user, drain):
    broken_brief = brief_facets()
    del broken_brief["handoff_summary"]
    llm.script([{"status": 200, "match": FOR_STRATEGIST, "content": '{"answer": {"creative_brief": ',
                 "finish_reason": "length"},
                answer(broken_brief, match=FOR_STRATEGIST),
                *happy_script()])

    run_id = submit(api_for(client_user), llm_envelope())
    drain()

    assert Run.objects.get(pk=run_id).status == "completed"
    invalid = events(run_id, "validation_error")
    assert {e["nodeId"] for e in invalid} == {"strategist"}
    assert [e["attempt"] for e in invalid] == [1, 2]
    assert "not JSON" in invalid[0]["errors"][0]["message"]
    assert "output token limit (1200)" in invalid[0]["errors"][0]["message"]
    assert any("handoff_summary" in error["message"] for error in invalid[1]["errors"])
    assert invalid[0]["usage"]["promptTokens"] == 10  # the failed attempts' tokens are counted
    prompts = [user_prompt(r) for r in llm.requests() if FOR_STRATEGIST in user_prompt(r)]
    assert len(prompts) == 3
    assert "rejected" not in prompts[0]
    assert "# Your previous reply was rejected" in prompts[1] and "not JSON" in prompts[1]
    assert "handoff_summary" in prompts[2].split("# Your previous reply was rejected")[1]


def test_a_reply_with_neither_answer_nor_clarify_is_invalid(llm, api_for, client_user, drain):
    llm.script([{"status": 200, "match": FOR_STRATEGIST, "json": {"creative_brief": {}}},
                *happy_script()])

    run_id = submit(api_for(client_user), llm_envelope())
    drain()

    [invalid] = events(run_id, "validation_error")
    assert invalid["errors"] == [{"path": "/", "message": 'the reply must be an object with exactly one of '
                                                          '"answer" or "clarify"'}]
    assert Run.objects.get(pk=run_id).status == "completed"


def test_exceeding_max_tokens_fails_the_run(llm, api_for, client_user, drain):
    llm.script(happy_script())

    run_id = submit(api_for(client_user), llm_envelope(maxTokens=1000))
    drain()

    run = Run.objects.get(pk=run_id)
    assert run.status == "failed"
    assert run.error["code"] == "token_budget_exceeded"
    assert (run.error["maxTokens"], run.error["usedTokens"]) == (1000, 1320)  # 420 + 900
    [error] = events(run_id, "node_error")
    assert (error["capabilityId"], error["willRetry"]) == (COPYWRITER, False)
    complete = events(run_id, "complete")[-1]
    assert complete["status"] == "failed" and complete["error"]["code"] == "token_budget_exceeded"
    assert not [r for r in llm.requests() if FOR_REVIEWER in user_prompt(r)]  # nothing ran after it
    # The copywriter asked for no more output than the budget had left (1000 - 420), not its 2000.
    copywriter = next(r for r in llm.requests() if FOR_COPYWRITER in user_prompt(r))
    assert copywriter["body"]["max_completion_tokens"] == 580


def test_a_max_tokens_that_is_not_a_positive_integer_is_refused(llm, api_for, client_user):
    response = api_for(client_user).post("/api/v1/flex/runs", llm_envelope(maxTokens=0), format="json")

    assert response.status_code == 422
    assert response.json()["code"] == "validation_failed"
    assert response.json()["details"]["errors"][0]["path"] == "/constraints/maxTokens"


def test_with_a_key_the_deterministic_capabilities_stay_the_default(llm, api_for, client_user, drain):
    run_id = submit(api_for(client_user), load_envelope("facets-output"))
    drain()

    assert Run.objects.get(pk=run_id).status == "completed"
    assert llm.requests() == []
    capabilities = {c["capabilityId"]: c for c in api_for(client_user).get("/api/v1/flex/capabilities").json()[
        "capabilities"]}
    assert capabilities[COPYWRITER]["status"] == "active"
    assert capabilities[COPYWRITER]["llm"]["selectedByDefault"] is False
    assert "apiKey" not in json.dumps(capabilities) and TEST_API_KEY not in json.dumps(capabilities)


def test_without_a_key_the_llm_capabilities_are_left_out_and_nothing_fails(api_for, client_user, drain,
                                                                           monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    reset_registry()

    assert STRATEGIST not in get_registry()
    listed = [c["capabilityId"] for c in api_for(client_user).get("/api/v1/flex/capabilities").json()[
        "capabilities"]]
    assert not [c for c in listed if c.startswith("llm.")]
    refused = api_for(client_user).post("/api/v1/flex/runs", llm_envelope(), format="json")
    assert refused.status_code == 422 and refused.json()["code"] == "unknown_capability"
    run_id = submit(api_for(client_user), load_envelope("facets-output"))
    drain()
    assert Run.objects.get(pk=run_id).status == "completed"


# --- the key, nowhere -----------------------------------------------------------------------

async def _collect(response: Any) -> str:
    chunks = []
    async for chunk in response.streaming_content:
        chunks.append(chunk.decode() if isinstance(chunk, bytes) else chunk)
    return "".join(chunks)


def test_the_api_key_appears_in_no_event_log_line_debug_view_or_admin_page(llm, json_log, api_for, client_user,
                                                                          support, operator, drain):
    llm.script(happy_script())
    completed = submit(api_for(client_user), llm_envelope())
    drain()
    # An endpoint that echoes the whole key in its error, on a retryable and
    # on a permanent error.
    llm.script([{"status": 500, "error": {"message": "upstream failed for key {key}", "type": "server_error"}},
                {"status": 401, "error": {"message": "Incorrect API key provided: {key}.", "code": "invalid_api_key"}}])
    failed = submit(api_for(client_user), llm_envelope())
    drain()
    assert Run.objects.get(pk=completed).status == "completed"
    assert Run.objects.get(pk=failed).status == "failed"
    assert [r["headers"]["authorization"] for r in llm.requests()][-1] == f"Bearer {TEST_API_KEY}"  # it was sent

    shown: dict[str, str] = {}
    for reader in (client_user, support, operator):
        api = api_for(reader)
        for run_id in (completed, failed):
            shown[f"debug {run_id} {reader}"] = api.get(f"/api/v1/flex/runs/{run_id}").content.decode()
            shown[f"events {run_id} {reader}"] = api.get(f"/api/v1/flex/runs/{run_id}/events").content.decode()
            shown[f"sse {run_id} {reader}"] = async_to_sync(_collect)(api.get(f"/api/v1/flex/runs/{run_id}/stream"))
        shown[f"list {reader}"] = api.get("/api/v1/flex/runs").content.decode()
        shown[f"capabilities {reader}"] = api.get("/api/v1/flex/capabilities").content.decode()
    browser = Client()
    browser.force_login(operator)
    for path in ("/admin/runs/run/", f"/admin/runs/run/{completed}/change/", f"/admin/runs/run/{failed}/change/",
                 "/runs/", f"/runs/{completed}/", f"/runs/{failed}/"):
        response = browser.get(path)
        assert response.status_code == 200, path
        shown[f"page {path}"] = response.content.decode()
    shown["logs"] = json_log.getvalue()

    assert [name for name, text in shown.items() if TEST_API_KEY in text] == []
    # The surfaces really show these runs (not empty bodies that leak nothing).
    assert "llm_authentication_failed" in shown[f"events {failed} {support}"]
    assert "[redacted]" in shown[f"events {failed} {support}"]  # where the endpoint echoed the key
    assert '"promptTokens":300' in shown[f"sse {completed} {support}"].replace(" ", "")
    assert "llm call" in shown["logs"]
    # The console and the history page show each node's tokens (prompt + completion).
    assert "<td>300 + 120</td>" in shown[f"page /admin/runs/run/{completed}/change/"]
    assert "<td>300 + 120</td>" in shown[f"page /runs/{completed}/"]
