"""The HITL endpoints and run.resume × every persona (API.md, Roles and access):

anonymous 401 · the owning client 200 · another client 404 · support 200 to
read pending, 403 to answer, resume or remove · operator 200.
"""
from __future__ import annotations

from typing import Any, Callable

import pytest

from hitl.models import HitlRequest, HitlResponse
from runs.models import Run
from tests.conftest import load_envelope
from tests.hitl.helpers import APPROVE, pending_request, submit

PERSONAS = ("anonymous", "owner", "other_client", "support", "operator")
FIXTURE_OF = {"owner": "client_user", "other_client": "other_client", "support": "support", "operator": "operator"}


def respond_body(run: Run, request: HitlRequest) -> dict[str, Any]:
    return {"runId": run.id, "requestId": request.id,
            "responses": [{"responseType": "freeform", "freeformText": "a second opinion"}]}


def resume_body(run: Run, request: HitlRequest) -> dict[str, Any]:
    return {"runId": run.id, "requestId": request.id, "responses": [APPROVE]}


def remove_body(run: Run, request: HitlRequest) -> dict[str, Any]:
    return {"runId": run.id, "requestId": request.id, "reason": "access matrix"}


def run_resume_body(run: Run, request: HitlRequest) -> dict[str, Any]:
    return {"runId": run.id, "expectedPlanVersion": run.plan_version,
            "responses": [{**APPROVE, "requestId": request.id}]}


# (name, path, body, expected status per persona in PERSONAS order, success status)
ENDPOINTS = [
    ("respond", "/api/hitl/respond", respond_body, (401, 200, 404, 403, 200)),
    ("resume", "/api/hitl/resume", resume_body, (401, 200, 404, 403, 200)),
    ("remove", "/api/hitl/remove", remove_body, (401, 200, 404, 403, 200)),
    ("run.resume", "/api/v1/flex/run.resume", run_resume_body, (401, 202, 404, 403, 202)),
]
CODES = {401: "not_authenticated", 403: "permission_denied", 404: "run_not_found"}
CASES = [pytest.param(name, path, body, persona, expected[i], id=f"{name}-{persona}")
         for name, path, body, expected in ENDPOINTS for i, persona in enumerate(PERSONAS)]


@pytest.fixture
def persona_api(request: Any, api_for: Callable[[Any], Any]) -> Callable[[str], Any]:
    def make(persona: str) -> Any:
        return api_for(None if persona == "anonymous" else request.getfixturevalue(FIXTURE_OF[persona]))

    return make


@pytest.fixture
def waiting(api_for: Callable[[Any], Any], client_user: Any, drain: Callable[[], int]) -> Run:
    """A run of the owning client, waiting for an approval it may give
    itself (`allowSelfApproval`: this matrix is about roles; separation of
    duties has its own tests in test_governance.py)."""
    envelope = load_envelope("approval-required")
    envelope["policies"]["runtime"][0]["action"]["allowSelfApproval"] = True
    run_id = submit(api_for(client_user), envelope)
    drain()
    run = Run.objects.get(pk=run_id)
    assert run.status == "awaiting_hitl"
    return run


@pytest.mark.parametrize("name, path, body, persona, expected", CASES)
def test_hitl_access_matrix(persona_api, waiting, name, path, body, persona, expected):
    request = pending_request(waiting.id)

    response = persona_api(persona).post(path, body(waiting, request), format="json")

    assert response.status_code == expected, response.content[:500]
    if expected in CODES:
        assert response.json()["code"] == CODES[expected]
        # A refused call changes nothing.
        request.refresh_from_db()
        waiting.refresh_from_db()
        assert (request.status, waiting.status, waiting.plan_version) == ("pending", "awaiting_hitl", 1)
        assert not HitlResponse.objects.filter(request=request).exists()


@pytest.mark.parametrize("persona, expected", list(zip(PERSONAS, (401, 200, 200, 200, 200))))
def test_pending_access_matrix(persona_api, waiting, persona, expected):
    response = persona_api(persona).get("/api/hitl/pending")

    assert response.status_code == expected
    if expected == 200:
        listed = [r["runId"] for r in response.json()["runs"]]
        assert listed == ([] if persona == "other_client" else [waiting.id])
