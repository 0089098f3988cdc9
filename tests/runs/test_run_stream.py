"""POST /api/v1/flex/run.stream with the example envelopes, executed by real
worker threads, read as SSE frames."""
from __future__ import annotations

import time

import jsonschema
import pytest

from runs.models import NodeRun, Run, RunEvent
from tests.conftest import load_envelope
from tests.sse import streamed, types

STREAM = "/api/v1/flex/run.stream"
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def workers(settings):
    """One real worker thread, as the embedded default runs them."""
    from runs.engine.worker import start_embedded_workers, stop_embedded_workers

    settings.FLEX_IDLE_POLL_SECONDS = 0.05
    start_embedded_workers(1)
    yield
    stop_embedded_workers()


def post_stream(api, body):
    return api.post(STREAM, body, format="json", HTTP_ACCEPT="text/event-stream")


def assert_contiguous(frames):
    seqs = [f["data"]["seq"] for f in frames]
    assert seqs == list(range(1, len(seqs) + 1))
    for frame in frames:
        assert frame["id"] == frame["data"]["id"] == f"{frame['data']['runId']}:{frame['data']['seq']}"
        assert frame["event"] == frame["data"]["type"]
        assert frame["data"]["timestamp"].endswith("Z")


def test_it_streams_linkedin_variants_to_a_valid_output(workers, api_for, client_user):
    envelope = load_envelope("linkedin-variants")
    response = post_stream(api_for(client_user), envelope)

    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    frames = streamed(response)
    assert types(frames) == ["start", "plan_requested", "plan_generated",
                             "node_start", "node_complete",    # strategist
                             "node_start", "node_complete",    # copywriter
                             "node_start", "node_complete",    # output mapping
                             "complete"]
    assert_contiguous(frames)
    generated = frames[2]["data"]["payload"]
    assert [n["capabilityId"] for n in generated["nodes"]] == [
        "strategist.SocialPosting", "copywriter.SocialpostDrafting", "flex.OutputMapper"]
    complete = frames[-1]["data"]["payload"]
    assert complete["status"] == "completed"
    output = complete["output"]
    jsonschema.validate(output, envelope["outputContract"]["schema"])
    assert len(output["copyVariants"]) == 2
    for variant in output["copyVariants"]:
        assert "Akkuro" in variant["body"]
        assert "Compliance officers at mid-sized banks" in variant["body"]
    run = Run.objects.get(pk=frames[0]["data"]["runId"])
    assert run.status == "completed" and run.output == output


def test_it_streams_facets_output_with_three_reviewed_variants(workers, api_for, client_user):
    frames = streamed(post_stream(api_for(client_user), load_envelope("facets-output")))

    assert_contiguous(frames)
    assert [f["data"]["payload"]["capabilityId"] for f in frames if f["event"] == "node_complete"] == [
        "strategist.SocialPosting", "copywriter.SocialpostDrafting", "qa.ContentReview", "flex.OutputMapper"]
    output = frames[-1]["data"]["payload"]["output"]
    assert len(output["copyVariants"]) == 3
    assert 0 <= output["qa_report"]["score"] <= 1


def test_it_rejects_an_unsatisfiable_plan_with_a_diagnostic_then_fails(workers, api_for, client_user):
    frames = streamed(post_stream(api_for(client_user), load_envelope("unsatisfiable-output")))

    assert types(frames) == ["start", "plan_requested", "plan_rejected", "complete"]
    diagnostics = frames[2]["data"]["payload"]["diagnostics"]
    assert any(d.get("facet") == "videoScript" for d in diagnostics)
    assert frames[-1]["data"]["payload"]["status"] == "failed"


@pytest.mark.parametrize("name, code", [("invalid-unknown-facet", "unknown_facet"),
                                        ("invalid-output-contract", "invalid_output_contract")])
def test_it_refuses_an_invalid_envelope_before_any_stream_or_run(api_for, client_user, name, code):
    response = post_stream(api_for(client_user), load_envelope(name))

    assert response.status_code == 422
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["code"] == code
    assert Run.objects.count() == 0


def test_it_stops_the_stream_when_the_run_waits_for_a_person(workers, api_for, client_user):
    frames = streamed(post_stream(api_for(client_user), load_envelope("clarify-audience")))

    assert types(frames)[-1] == "hitl_request"
    request = frames[-1]["data"]["payload"]
    assert request["kind"] == "clarify"
    assert request["question"] == "Who is the target audience for this post?"
    assert Run.objects.get().status == "awaiting_hitl"


def test_a_client_that_disconnects_does_not_stop_its_run(workers, api_for, client_user):
    response = post_stream(api_for(client_user), load_envelope("linkedin-variants"))
    response.close()  # the client goes away before reading a single frame

    run = Run.objects.get()
    deadline = time.monotonic() + 10
    while not run.is_terminal and time.monotonic() < deadline:
        time.sleep(0.05)
        run.refresh_from_db()
    assert run.status == "completed"
    assert NodeRun.objects.filter(run=run, commits=1).count() == 3
    assert RunEvent.objects.filter(run=run, type="complete").count() == 1
