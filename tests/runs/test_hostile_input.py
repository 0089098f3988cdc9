"""Hostile bodies get a clear JSON 4xx and change nothing: values no
database can store (`1e999`, NUL, lone surrogates) are refused at parse time
with the JSON pointer of the offending value, the same on SQLite and
PostgreSQL; oversized conditions are refused at submission; validation
messages name the path and the rule, never the value."""
from __future__ import annotations

import json
from typing import Any

import pytest

from hitl.models import HitlRequest
from runs.models import Run
from tests.conftest import load_envelope

pytestmark = pytest.mark.django_db

RUNS = "/api/v1/flex/runs"


def post_raw(api: Any, path: str, text: str) -> Any:
    """Post JSON text as typed (escapes such as \\ud800 kept verbatim)."""
    return api.generic("POST", path, text.encode("utf-8"), content_type="application/json")


def envelope_text(**replacements: str) -> str:
    """The linkedin envelope with some values swapped for raw JSON text."""
    envelope = load_envelope("linkedin-variants")
    markers = {}
    for index, (path, raw) in enumerate(replacements.items()):
        marker = f"__raw_{index}__"
        markers[json.dumps(marker)] = raw
        node = envelope
        *parents, last = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = marker
    text = json.dumps(envelope)
    for marker, raw in markers.items():
        text = text.replace(marker, raw)
    return text


@pytest.mark.parametrize(("where", "raw", "pointer", "reason"), [
    ("inputs.company_information.founded", "1e999", "/inputs/company_information/founded", "out of range"),
    ("metadata.score", "-1e400", "/metadata/score", "out of range"),
    ("objective", '"Write \\u0000 copy"', "/objective", "NUL"),
    ("metadata.campaign", '"spring\\u0000"', "/metadata/campaign", "NUL"),
    ("metadata.nested", '{"bad\\u0000key": 1}', "/metadata/nested", "key that contains a NUL"),
    ("objective", '"Write \\ud800 copy"', "/objective", "surrogate"),
    ("inputs.company_information.tags", '["ok", "\\udfff"]', "/inputs/company_information/tags/1", "surrogate"),
    ("specialInstructions", '["a", {"x": "\\u0000"}]', "/specialInstructions/1/x", "NUL"),
])
def test_a_value_no_database_stores_is_a_422_naming_its_pointer(api_for, client_user, where, raw, pointer, reason):
    response = post_raw(api_for(client_user), RUNS, envelope_text(**{where: raw}))

    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "validation_failed"
    [error] = body["details"]["errors"]
    assert error["path"] == pointer and reason in error["message"]
    assert Run.objects.count() == 0


def test_a_hitl_response_with_nul_text_is_a_422_and_the_request_stays_pending(api_for, client_user, drain):
    api = api_for(client_user)
    response = api.post(RUNS, load_envelope("clarify-audience"), format="json")
    run_id = response.json()["runId"]
    drain()
    request = HitlRequest.objects.get(run_id=run_id)
    body = json.dumps({"runId": run_id, "requestId": request.id,
                       "responses": [{"questionId": "q", "freeformText": "__nul__"}],
                       "metadata": {"source": "__nul__"}}).replace("__nul__", "a\\u0000b")

    answered = post_raw(api, "/api/hitl/respond", body)

    assert answered.status_code == 422
    assert answered.json()["details"]["errors"][0]["path"] == "/responses/0/freeformText"
    request.refresh_from_db()
    assert request.status == "pending"


def test_options_on_the_api_docs_is_a_json_405(api_for, client_user):
    response = api_for(client_user).options("/api/docs/")
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"


def test_an_oversized_condition_is_refused_at_submission(api_for, client_user):
    # The envelope: `some` nested over 1,500-element arrays (17 KB).
    condition: dict[str, Any] = {"==": [1, 2]}
    for _ in range(2):
        condition = {"some": [list(range(1500)), condition]}
    envelope = load_envelope("linkedin-variants")
    envelope["policies"]["runtime"] = [{"id": "slow", "trigger": {"kind": "onStart", "condition": condition},
                                        "action": {"type": "pause"}}]

    response = api_for(client_user).post(RUNS, envelope, format="json")

    assert response.status_code == 422
    [error] = response.json()["details"]["errors"]
    assert error["path"] == "/policies/runtime/0/trigger/condition"
    assert "more than 1000 items" in error["message"]
    assert Run.objects.count() == 0


@pytest.mark.parametrize("misplaced", [
    {"password": "hunter2-secret"},
    "hunter2-secret" * 3,
    ["hunter2-secret"],
])
def test_a_validation_error_names_the_path_and_rule_never_the_value(api_for, client_user, misplaced):
    envelope = load_envelope("linkedin-variants")
    envelope["policies"]["planner"]["topology"]["variantCount"] = misplaced

    response = api_for(client_user).post(RUNS, envelope, format="json")

    assert response.status_code == 422
    text = response.content.decode()
    assert "hunter2" not in text
    paths = [error["path"] for error in response.json()["details"]["errors"]]
    assert "/policies/planner/topology/variantCount" in paths


@pytest.mark.parametrize(("url", "status", "pointer"), [
    (f"{RUNS}?status=%00", 422, "/status"),
    (f"{RUNS}?threadId=a%00b&limit=5", 422, "/threadId"),
    (f"{RUNS}/run_%00/events", 404, None),
    ("/api/hitl/pending?runId=%00", 422, "/runId"),
])
def test_a_nul_in_the_path_or_query_is_a_json_4xx_on_every_database(api_for, client_user, url, status, pointer):
    response = api_for(client_user).get(url)

    assert response.status_code == status
    body = response.json()
    if pointer:
        assert body["code"] == "validation_failed" and body["details"]["errors"][0]["path"] == pointer
    else:
        assert body["code"] == "not_found"


def test_an_unknown_status_filter_is_a_422_that_does_not_echo_the_value(api_for, client_user):
    response = api_for(client_user).get(f"{RUNS}?status=hunter2-secret")

    assert response.status_code == 422
    assert "hunter2" not in response.content.decode()
    assert response.json()["details"]["errors"][0]["path"] == "/status"
