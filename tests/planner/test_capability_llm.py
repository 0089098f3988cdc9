"""planner/llm.py and planner/capabilities/llm.py without a server:
declarations, endpoints, the reply schema, reading replies, error
translation, sanitizing, and how the planner ranks capabilities that are
selected only on request."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command

from planner.capabilities.llm import (build_messages, capability_class, read_reply, reply_schema,
                                      response_format, translate_error)
from planner.contracts import check_schema, compile_facets, validate_instance
from planner.llm import (EndpointNotConfigured, endpoint, load_declarations, parse_declaration, sanitize)
from planner.planner import build_plan
from planner.registry import CapabilityRegistry
from planner.types import ClarificationNeeded, ContextBundle, InvalidOutput
from tests.conftest import load_envelope

SHIPPED = Path(__file__).resolve().parents[2] / "planner" / "catalog" / "llm.json"


def declaration(**fields: Any) -> dict[str, Any]:
    return {"capabilityId": "acme.Brief", "kind": "structuring", "inputFacets": ["company_information"],
            "outputFacets": ["creative_brief"], "instructions": "Write a brief.", **fields}


# --- declarations ------------------------------------------------------------------------

def test_it_loads_the_shipped_twins_with_the_facets_of_their_deterministic_namesakes():
    from planner.capabilities.copywriter import SocialpostDrafting
    from planner.capabilities.qa import ContentReview
    from planner.capabilities.strategist import SocialPosting

    twins = {d.capability_id: d for d in load_declarations(SHIPPED)}
    for namesake in (SocialPosting, SocialpostDrafting, ContentReview):
        twin = twins["llm." + namesake.capability_id.split(".", 1)[1]]
        assert (twin.kind, twin.input_facets, twin.optional_input_facets, twin.output_facets) == (
            namesake.kind, namesake.input_facets, namesake.optional_input_facets, namesake.output_facets)
        assert twin.selected_by_default is False and twin.endpoint == "default"


def test_it_fills_in_the_defaults():
    parsed = parse_declaration(declaration(), where="x")
    assert (parsed.endpoint, parsed.model, parsed.temperature, parsed.max_tokens) == ("default", "", None, 1024)
    assert parsed.token_limit_parameter == "max_completion_tokens" and parsed.selected_by_default is True


@pytest.mark.parametrize("fields, message", [
    ({"kind": "thinking"}, "kind must be one of"),
    ({"outputFacets": []}, "outputFacets must name at least one facet"),
    ({"temperature": 3}, "temperature must be a number from 0 to 2"),
    ({"maxTokens": 0}, "maxTokens must be an integer"),
    ({"maxTokens": True}, "maxTokens must be an integer"),
    ({"endpoint": "a b"}, "endpoint must be a name"),
    ({"instructions": " "}, "instructions must be a non-empty string"),
    ({"tokenLimitParameter": "max_output"}, "tokenLimitParameter must be one of"),
    ({"apiKey": "sk-in-a-file"}, "unknown field(s) apiKey"),
    ({"nodeId": "a node"}, "nodeId must be a short name"),
])
def test_it_refuses_a_bad_declaration_naming_the_field(fields, message):
    with pytest.raises(ImproperlyConfigured, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_declaration(declaration(**fields), where="x")


def test_a_broken_declaration_file_fails_manage_py_check(settings, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-check-123456")  # facets are checked for active declarations
    path = tmp_path / "llm.json"
    path.write_text(json.dumps({"capabilities": [declaration(outputFacets=["videoScript"])]}))
    settings.FLEX_LLM_CAPABILITIES = path
    with pytest.raises(Exception, match="videoScript"):
        call_command("check")
    path.write_text("{not json")
    with pytest.raises(Exception, match="planner.E006"):
        call_command("check")


# --- endpoints ------------------------------------------------------------------------------

def test_the_default_endpoint_needs_a_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(EndpointNotConfigured, match="OPENAI_API_KEY"):
        endpoint("default")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-abc-123456")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    found = endpoint("default")
    assert (found.base_url, found.model) == ("http://127.0.0.1:9/v1", "gpt-4o-mini")
    assert "sk-abc" not in repr(found) and "sk-abc" not in str(found)


def test_a_named_endpoint_comes_from_its_variables(monkeypatch):
    with pytest.raises(EndpointNotConfigured, match="FLEX_LLM_ENDPOINT_LOCAL_BASE_URL"):
        endpoint("local")
    monkeypatch.setenv("FLEX_LLM_ENDPOINT_LOCAL_BASE_URL", "http://127.0.0.1:11434/v1")
    monkeypatch.setenv("FLEX_LLM_ENDPOINT_LOCAL_MODEL", "llama3.2")
    found = endpoint("local")
    assert (found.base_url, found.model, found.api_key) == ("http://127.0.0.1:11434/v1", "llama3.2", "no-key")


def test_sanitize_removes_every_configured_key_and_key_shaped_words(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "plainkey-without-prefix-42")
    monkeypatch.setenv("FLEX_LLM_ENDPOINT_AZURE_API_KEY", "azure0123456789")
    text = ("Incorrect API key provided: plainkey-without-prefix-42; also azure0123456789, sk-proj-abc***xyz "
            "and api_key=zzz")
    cleaned = sanitize(text)
    for secret in ("plainkey-without-prefix-42", "azure0123456789", "sk-proj-abc", "zzz"):
        assert secret not in cleaned
    assert cleaned.startswith("Incorrect API key provided: [redacted]")
    assert len(sanitize("x" * 5000)) == 300


# --- the reply ------------------------------------------------------------------------------

def test_the_reply_schema_is_the_contract_or_a_question_and_is_a_valid_schema():
    contract = compile_facets(["creative_brief"]).schema
    schema = reply_schema(contract)
    assert check_schema(schema) == []
    assert validate_instance(schema, {"clarify": {"question": "Who reads this?"}}) == []
    assert validate_instance(schema, {"answer": {"creative_brief": {}}}) != []  # the contract applies
    assert validate_instance(schema, {}) != [] and validate_instance(schema, {"other": 1}) != []
    assert response_format(contract)["json_schema"]["strict"] is False


def test_an_answer_reply_gives_its_facets():
    assert read_reply('{"answer": {"post_copy": "Hi"}}') == {"post_copy": "Hi"}


def test_a_clarify_reply_asks_a_person():
    with pytest.raises(ClarificationNeeded) as asked:
        read_reply(json.dumps({"clarify": {"question": " Who reads this? ",
                                           "options": [{"id": "a", "label": "Banks", "description": "B"},
                                                       {"label": "Insurers"}]}}))
    assert asked.value.question == "Who reads this?"
    assert asked.value.options == [{"id": "a", "label": "Banks", "description": "B"},
                                   {"id": "option-2", "label": "Insurers"}]
    assert asked.value.allow_free_form is True


@pytest.mark.parametrize("content, message", [
    ("", "empty"),
    ("Sure! Here is your brief:", "not JSON"),
    ("[1, 2]", "exactly one of"),
    ('{"answer": {}, "clarify": {"question": "q"}}', "exactly one of"),
    ('{"answer": "text"}', "must be an object of facets"),
    ('{"clarify": {"question": ""}}', "non-empty"),
])
def test_anything_else_is_invalid_output(content, message):
    with pytest.raises(InvalidOutput) as invalid:
        read_reply(content)
    assert message in invalid.value.errors[0]["message"]


def test_a_refusal_is_invalid_output():
    with pytest.raises(InvalidOutput, match="refused"):
        read_reply(None, refusal="I can't help with that.")


# --- errors -----------------------------------------------------------------------------------

def _status_error(cls: type[openai.APIStatusError], status: int, message: str,
                  headers: dict[str, str] | None = None) -> openai.APIStatusError:
    request = httpx2.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    response = httpx2.Response(status, request=request, headers=headers or {})
    return cls(message, response=response, body={"message": message, "type": "x", "code": None})


def test_errors_say_whether_retrying_helps():
    request = httpx2.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    cases = [
        (openai.APITimeoutError(request=request), "llm_timeout", True),
        (openai.APIConnectionError(request=request), "llm_connection_error", True),
        (_status_error(openai.RateLimitError, 429, "slow down", {"retry-after": "7"}), "llm_rate_limited", True),
        (_status_error(openai.InternalServerError, 502, "bad gateway"), "llm_unavailable", True),
        (_status_error(openai.AuthenticationError, 401, "Incorrect API key provided: sk-live-123456"),
         "llm_authentication_failed", False),
        (_status_error(openai.BadRequestError, 400, "bad schema"), "llm_request_rejected", False),
        (_status_error(openai.NotFoundError, 404, "model not found"), "llm_request_rejected", False),
    ]
    for exc, code, retryable in cases:
        error = translate_error(exc, endpoint_name="default")
        assert (error.code, error.retryable) == (code, retryable), exc
        assert "sk-live-123456" not in error.message
    assert translate_error(cases[2][0], endpoint_name="default").retry_after == 7.0


# --- the prompt -------------------------------------------------------------------------------

def test_the_prompt_shows_previous_errors_only_on_a_retry():
    twin = next(d for d in load_declarations(SHIPPED) if d.capability_id == "llm.ContentReview")
    bundle = ContextBundle(run_id="r", node_id="n", objective="Review it",
                           facets={"copyVariants": [{"headline": "h", "body": "b", "callToAction": "c"}]},
                           contract=compile_facets(["qa_report"]).schema)
    first = build_messages(twin, bundle)[1]["content"]
    assert "rejected" not in first and "## QA report (`qa_report`)" in first
    bundle.previous_errors = [{"path": "/qa_report/score", "message": "must be <= 1"}]
    assert "- /qa_report/score: must be <= 1" in build_messages(twin, bundle)[1]["content"]


def test_the_prompt_carries_directives_and_goal_feedback_from_the_bundle():
    twin = next(d for d in load_declarations(SHIPPED) if d.capability_id == "llm.SocialpostDrafting")
    bundle = ContextBundle(run_id="r", node_id="n", objective="Write it", facets={},
                           contract=compile_facets(["copyVariants"]).schema)
    assert "Goals not met" not in build_messages(twin, bundle)[1]["content"]
    bundle.directives = {"brandVoice": "plain words"}
    bundle.goal_feedback = [{"goalId": "quality", "condition": {">=": [{"var": "qa_report.score"}, 0.8]},
                             "attempt": 1, "values": {"qa_report": {"score": 0.7}}}]
    prompt = build_messages(twin, bundle)[1]["content"]
    assert "# Directives" in prompt and "plain words" in prompt
    assert "# Goals not met yet" in prompt and '"goalId": "quality"' in prompt and "0.7" in prompt


# --- planning -----------------------------------------------------------------------------------

def test_capabilities_selected_only_on_request_lose_to_the_default_and_win_when_required():
    twins = {d.capability_id: capability_class(d) for d in load_declarations(SHIPPED)}
    from planner.registry import get_registry

    classes = [*get_registry().classes(), *twins.values()]
    registry = CapabilityRegistry(classes)
    envelope = load_envelope("facets-output")
    from planner.envelope import normalise

    default = build_plan(normalise(envelope), registry=registry)
    assert default.graph is not None
    assert {n.capability_id for n in default.graph.nodes} == {
        "strategist.SocialPosting", "copywriter.SocialpostDrafting", "qa.ContentReview", "flex.OutputMapper"}
    envelope["policies"]["planner"]["selection"] = {"require": list(twins)}
    chosen = build_plan(normalise(envelope), registry=registry)
    assert chosen.graph is not None
    assert [n.id for n in chosen.graph.nodes] == ["strategist", "copywriter", "qa", "output"]  # the namesakes' ids
    assert [n.capability_id for n in chosen.graph.nodes][:3] == list(twins)
