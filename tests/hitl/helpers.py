"""Helpers shared by the HITL tests."""
from __future__ import annotations

from typing import Any

from hitl.models import HitlRequest
from runs.models import RunEvent


def submit(api: Any, body: dict[str, Any]) -> str:
    response = api.post("/api/v1/flex/runs", body, format="json")
    assert response.status_code == 202, response.content
    return response.json()["runId"]


def event_types(run_id: str) -> list[str]:
    return list(RunEvent.objects.filter(run_id=run_id).order_by("seq").values_list("type", flat=True))


def events_of(run_id: str, type_: str) -> list[RunEvent]:
    return list(RunEvent.objects.filter(run_id=run_id, type=type_).order_by("seq"))


def pending_request(run_id: str) -> HitlRequest:
    return HitlRequest.objects.get(run_id=run_id, status="pending")


def resume(api: Any, run_id: str, request_id: str, responses: list[dict[str, Any]], **extra: Any) -> Any:
    return api.post("/api/hitl/resume", {"runId": run_id, "requestId": request_id, "responses": responses, **extra},
                    format="json")


APPROVE = {"responseType": "approval", "approved": True}
REJECT = {"responseType": "rejection", "approved": False}
