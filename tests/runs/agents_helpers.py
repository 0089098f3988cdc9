"""Shared pieces of the agent and task tests: an agent registration body, an
envelope whose review is done by the agent, and a valid review output."""
from __future__ import annotations

import copy
from typing import Any

from tests.conftest import load_envelope

REVIEW_ID = "acme.Review"


def registration(agent_id: str = "acme-review", *, capability_id: str = REVIEW_ID, max_concurrency: int = 2,
                 heartbeat_seconds: int = 30, **capability: Any) -> dict[str, Any]:
    return {
        "agentId": agent_id, "displayName": "Acme reviewer", "heartbeatSeconds": heartbeat_seconds,
        "maxConcurrency": max_concurrency,
        "capabilities": [{"capabilityId": capability_id, "displayName": "Acme review", "description": "Reviews copy",
                          "kind": "validation", "agentType": "ai", "inputFacets": ["copyVariants"],
                          "optionalInputFacets": [], "outputFacets": ["qa_report"], "version": "1.0.0",
                          **capability}],
    }


def review_envelope(**constraints: Any) -> dict[str, Any]:
    """facets-output.json with the built-in reviewer forbidden: the agent's
    capability must do the review."""
    envelope = copy.deepcopy(load_envelope("facets-output"))
    envelope["policies"]["planner"]["selection"] = {"forbid": ["qa.ContentReview"]}
    if constraints:
        envelope["constraints"] = constraints
    return envelope


def valid_review() -> dict[str, Any]:
    return {"qa_report": {"score": 0.9, "findings": [{"severity": "info", "message": "Reads well."}]}}


def invalid_review() -> dict[str, Any]:
    return {"qa_report": {"score": 7}}
