"""Capabilities used only by tests (registered through FLEX_EXTRA_CAPABILITIES)."""
from __future__ import annotations

from typing import Any

from planner.capabilities.qa import review
from planner.types import Capability, CapabilityError, ContextBundle


class FlakyReview(Capability):
    """Returns output that breaks its contract on the first two attempts."""

    capability_id = "test.FlakyReview"
    display_name = "Flaky reviewer"
    kind = "validation"
    input_facets = ("copyVariants",)
    output_facets = ("qa_report",)

    def run(self, bundle: ContextBundle) -> dict[str, Any]:
        if bundle.attempt <= 2:
            return {"qa_report": {"score": 7, "findings": "none"}}
        return {"qa_report": review(bundle.facets["copyVariants"])}


class NeverValidReview(Capability):
    capability_id = "test.NeverValidReview"
    display_name = "Reviewer that never satisfies its contract"
    kind = "validation"
    input_facets = ("copyVariants",)
    output_facets = ("qa_report",)

    def run(self, bundle: ContextBundle) -> dict[str, Any]:
        return {"qa_report": {"score": -1}}


class BrokenReview(Capability):
    capability_id = "test.BrokenReview"
    display_name = "Reviewer that fails permanently"
    kind = "validation"
    input_facets = ("copyVariants",)
    output_facets = ("qa_report",)

    def run(self, bundle: ContextBundle) -> dict[str, Any]:
        raise CapabilityError("the review service refused the request", code="review_refused", retryable=False)


class UnreachableOnceReview(Capability):
    """Its service is unreachable on the first attempt (a retryable error)."""

    capability_id = "test.UnreachableOnceReview"
    display_name = "Reviewer whose service is down once"
    kind = "validation"
    input_facets = ("copyVariants",)
    output_facets = ("qa_report",)

    def run(self, bundle: ContextBundle) -> dict[str, Any]:
        if bundle.attempt == 1:
            raise CapabilityError("the review service is unavailable", code="review_unavailable", retryable=True)
        return {"qa_report": review(bundle.facets["copyVariants"])}


def review_envelope(base: dict[str, Any], capability_id: str) -> dict[str, Any]:
    """An envelope whose qa_report must come from `capability_id`."""
    base["outputContract"] = {"mode": "facets", "facets": ["qa_report"]}
    base.setdefault("policies", {}).setdefault("planner", {})["selection"] = {
        "forbid": ["qa.ContentReview"], "require": [capability_id]}
    return base
