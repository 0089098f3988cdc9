"""The agent SDK's pure parts: the task and bundle it parses, the backoff it
waits by, the bodies it sends and the errors it reads. No server; the SDK
against a real server is in test_sdk_agent.py."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import httpx
import pytest

from flexagents_sdk import Agent, ApiError, Backoff, Bundle, Clarify, ProtocolError, TaskFailed
from flexagents_sdk.agent import _invoke
from flexagents_sdk.bundle import parse_task, parse_timestamp
from flexagents_sdk.client import api_base, raise_for_status


def task_body(**overrides: Any) -> dict[str, Any]:
    bundle = {
        "runId": "run_1", "nodeId": "hashtags", "objective": "Post with hashtags",
        "facets": {"post_copy": "Our audit trail"}, "specialInstructions": ["Keep it short."],
        "policies": {"planner": {}}, "contract": {"type": "object"},
        "clarifications": [{"questionId": "q1", "question": "Which audience?", "answer": "Banks",
                            "nodeId": "hashtags", "answeredAt": "2026-11-29T10:00:00Z"},
                           {"questionId": "q2", "question": "Which audience?", "answer": "Insurers",
                            "nodeId": "hashtags", "answeredAt": "2026-11-29T10:05:00Z"}],
        "idempotencyKey": "run_1:hashtags:2", "attempt": 2, "planVersion": 1, "metadata": {"threadId": "t"},
        "somethingNewer": True,
    }
    task = {"taskId": "task_1", "runId": "run_1", "nodeId": "hashtags", "capabilityId": "acme.Hashtags",
            "attempt": 2, "leaseToken": "lease-abc", "leaseExpiresAt": "2026-11-29T10:00:30.500Z", "bundle": bundle}
    task.update(overrides)
    return {"task": task}


# -- parsing -------------------------------------------------------------------------------------

def test_it_parses_a_claimed_task_and_its_bundle() -> None:
    task = parse_task(task_body())

    assert (task.task_id, task.capability_id, task.attempt, task.lease_token) == \
        ("task_1", "acme.Hashtags", 2, "lease-abc")
    assert task.lease_expires_at == datetime(2026, 11, 29, 10, 0, 30, 500000, tzinfo=timezone.utc)
    bundle = task.bundle
    assert bundle.facets == {"post_copy": "Our audit trail"}
    assert bundle.special_instructions == ("Keep it short.",)
    assert bundle.idempotency_key == "run_1:hashtags:2" and bundle.attempt == 2
    assert [c.answer for c in bundle.clarifications] == ["Banks", "Insurers"]
    assert bundle.raw["somethingNewer"] is True  # unknown keys are kept, not refused


def test_the_latest_answer_to_a_question_wins() -> None:
    bundle = parse_task(task_body()).bundle

    assert bundle.answer_to("Which audience?") == "Insurers"
    assert bundle.answer_to("Which channel?") is None


def test_a_bundle_without_optional_keys_gets_defaults() -> None:
    bundle = Bundle.from_json({"runId": "run_1", "nodeId": "n", "facets": {}})

    assert (bundle.objective, bundle.special_instructions, bundle.clarifications, bundle.attempt) == ("", (), (), 1)


@pytest.mark.parametrize("change, message", [
    ({"taskId": ""}, "task.taskId"),
    ({"leaseToken": None}, "task.leaseToken"),
    ({"leaseExpiresAt": "tomorrow"}, "ISO 8601"),
    ({"attempt": "2"}, "task.attempt"),
    ({"bundle": []}, "bundle must be a JSON object"),
    ({"bundle": {"runId": "r", "nodeId": "n", "facets": "text"}}, "bundle.facets"),
    ({"bundle": {"runId": "r", "nodeId": "n", "facets": {}, "clarifications": {}}}, "bundle.clarifications"),
    ({"bundle": {"runId": "r", "nodeId": "n", "facets": {}, "attempt": True}}, "bundle.attempt"),
])
def test_it_refuses_a_task_that_breaks_the_contract(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        parse_task(task_body(**change))


def test_a_timestamp_without_a_zone_is_utc() -> None:
    assert parse_timestamp("2026-11-29T10:00:00").tzinfo == timezone.utc
    assert parse_timestamp("2026-11-29T11:00:00+01:00") == datetime(2026, 11, 29, 10, tzinfo=timezone.utc)


# -- backoff ------------------------------------------------------------------------------------

def test_the_backoff_grows_to_its_cap_and_resets() -> None:
    backoff = Backoff(base=0.5, factor=2, cap=4, rand=lambda: 1.0)

    assert [backoff.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_the_backoff_is_jittered_but_never_zero() -> None:
    backoff = Backoff(base=1, factor=2, cap=8, rand=lambda: 0.0)

    assert [backoff.next_delay() for _ in range(4)] == [0.1, 0.2, 0.4, 0.8]


def test_the_backoff_waits_at_least_what_retry_after_says() -> None:
    backoff = Backoff(base=0.5, cap=30, rand=lambda: 0.5)

    assert backoff.next_delay(retry_after=7) == 7
    assert backoff.next_delay(retry_after=0) == 0.5  # the backoff's own delay when it is longer


def test_a_backoff_that_cannot_back_off_is_refused() -> None:
    with pytest.raises(ValueError):
        Backoff(base=0)
    with pytest.raises(ValueError):
        Backoff(base=2, cap=1)


# -- what the agent sends -------------------------------------------------------------------------

def make_agent(**options: Any) -> Agent:
    return Agent("http://127.0.0.1:8000/", "tok", agent_id="acme-hashtags", **options)


def test_the_registration_declares_every_capability_in_camel_case() -> None:
    agent = make_agent(heartbeat_seconds=5, max_concurrency=2, display_name="Hashtags")

    @agent.capability("acme.Hashtags", kind="execution", input_facets=["post_copy"],
                      optional_input_facets=["company_information"], output_facets=["hashtags"], version="2.1.0")
    def hashtags(bundle: Bundle) -> dict[str, Any]:
        """Suggests hashtags.

        More text that is not the description."""
        return {"hashtags": ["#a"]}

    assert agent.registration() == {
        "agentId": "acme-hashtags", "displayName": "Hashtags", "heartbeatSeconds": 5, "maxConcurrency": 2,
        "capabilities": [{"capabilityId": "acme.Hashtags", "displayName": "acme.Hashtags",
                          "description": "Suggests hashtags.", "kind": "execution", "agentType": "ai",
                          "inputFacets": ["post_copy"], "optionalInputFacets": ["company_information"],
                          "outputFacets": ["hashtags"], "version": "2.1.0"}],
    }
    assert hashtags(Bundle.from_json({"runId": "r", "nodeId": "n", "facets": {}})) == {"hashtags": ["#a"]}


@pytest.mark.parametrize("options, message", [
    ({"output_facets": []}, "at least one output facet"),
    ({"output_facets": "hashtags"}, "list of facet names"),
    ({"agent_type": "robot"}, "agent_type"),
])
def test_a_capability_declared_wrongly_is_refused_at_once(options: dict[str, Any], message: str) -> None:
    agent = make_agent()
    declaration = {"kind": "execution", "input_facets": ["post_copy"], "output_facets": ["hashtags"], **options}
    with pytest.raises(ValueError, match=message):
        agent.capability("acme.Hashtags", **declaration)


def test_a_capability_declared_twice_is_refused() -> None:
    agent = make_agent()
    agent.capability("acme.Hashtags", kind="execution", input_facets=[], output_facets=["hashtags"])(
        lambda bundle: {})
    with pytest.raises(ValueError, match="declared twice"):
        agent.capability("acme.Hashtags", kind="execution", input_facets=[], output_facets=["hashtags"])


@pytest.mark.parametrize("options", [{"heartbeat_seconds": 0}, {"max_concurrency": 0},
                                     {"claim_wait_seconds": 31}, {"stop_grace_seconds": -1}])
def test_impossible_agent_settings_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        make_agent(**options)


def test_the_server_url_may_name_the_api_prefix_or_not() -> None:
    assert api_base("http://h:8000/") == api_base("http://h:8000/api/v1/flex") == "http://h:8000/api/v1/flex"
    with pytest.raises(ValueError):
        api_base("h:8000")


def test_clarify_turns_plain_options_into_ids_and_labels() -> None:
    question = Clarify("Who is the post for?", options=["B2B buyers", {"id": "smb", "label": "Small firms"}],
                       allow_free_form=False)

    assert question.to_json() == {"question": "Who is the post for?", "allowFreeForm": False, "options": [
        {"id": "b2b-buyers", "label": "B2B buyers"}, {"id": "smb", "label": "Small firms"}]}


@pytest.mark.parametrize("args, kwargs", [
    ((" ",), {}),
    (("Q?",), {"options": ["Same", "same"]}),
    (("Q?",), {"options": [], "allow_free_form": False}),
    (("Q?",), {"options": [{"label": "no id"}]}),
])
def test_a_question_nobody_could_answer_is_refused(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Clarify(*args, **kwargs)


def test_task_failed_needs_a_snake_case_code() -> None:
    assert TaskFailed("rate_limited", "try later").to_json() == {
        "error": {"code": "rate_limited", "message": "try later"}, "retryable": True}
    with pytest.raises(ValueError):
        TaskFailed("Rate Limited", "try later")


# -- what a function's end becomes --------------------------------------------------------------

def outcome_of(function: Any) -> Any:
    agent = make_agent()
    agent.capability("acme.Hashtags", kind="execution", input_facets=[], output_facets=["hashtags"])(function)
    return _invoke(agent.capabilities["acme.Hashtags"], Bundle.from_json({"runId": "r", "nodeId": "n",
                                                                           "facets": {}}))


def test_a_returned_mapping_completes_the_task() -> None:
    outcome = outcome_of(lambda bundle: {"hashtags": ["#a"]})
    assert (outcome.kind, outcome.output) == ("complete", {"hashtags": ["#a"]})


def test_clarify_and_task_failed_become_their_calls() -> None:
    def asks(bundle: Bundle) -> dict[str, Any]:
        raise Clarify("Which audience?")

    def refuses(bundle: Bundle) -> dict[str, Any]:
        raise TaskFailed("refused", "no", retryable=False)

    assert outcome_of(asks).clarify.question == "Which audience?"
    assert (outcome_of(refuses).kind, outcome_of(refuses).failure.retryable) == ("fail", False)


@pytest.mark.parametrize("function, code", [
    (lambda bundle: 1 / 0, "capability_exception"),
    (lambda bundle: ["#a"], "invalid_output"),
    (lambda bundle: {"hashtags": {1, 2}}, "invalid_output"),
])
def test_a_function_that_breaks_fails_the_task_retryably(function: Any, code: str) -> None:
    outcome = outcome_of(function)
    assert (outcome.kind, outcome.failure.code, outcome.failure.retryable) == ("fail", code, True)


# -- what the agent reads ------------------------------------------------------------------------

def response(status: int, body: Any = None, **headers: str) -> httpx.Response:
    request = httpx.Request("POST", "http://h/api/v1/flex/tasks/t/complete")
    if body is None:
        return httpx.Response(status, headers=headers, text="<html>Bad gateway</html>", request=request)
    return httpx.Response(status, json=body, headers=headers, request=request)


def test_an_error_body_becomes_an_api_error_with_its_code() -> None:
    with pytest.raises(ApiError) as caught:
        raise_for_status(response(422, {"code": "validation_failed", "message": "Invalid output.",
                                        "details": {"errors": [{"path": "/hashtags", "message": "required"}]}}))
    assert (caught.value.status, caught.value.code, caught.value.transient) == (422, "validation_failed", False)
    assert caught.value.details["errors"][0]["path"] == "/hashtags"


def test_an_answer_that_is_not_the_error_format_still_becomes_an_api_error() -> None:
    with pytest.raises(ApiError) as caught:
        raise_for_status(response(502))
    assert (caught.value.code, caught.value.transient) == ("http_502", True)


def test_retry_after_is_read_in_seconds() -> None:
    with pytest.raises(ApiError) as caught:
        raise_for_status(response(503, {"code": "server_busy", "message": "busy"}, **{"Retry-After": "3"}))
    assert caught.value.retry_after == 3.0


def test_a_success_is_not_an_error() -> None:
    raise_for_status(response(204, {}))
