"""qa.ContentReview: scores post variants against simple, deterministic checks."""
from __future__ import annotations

from typing import Any

from planner.types import Capability, ContextBundle

MAX_BODY_CHARS = 3000  # LinkedIn's post limit
MAX_HEADLINE_CHARS = 150
_PENALTY = {"error": 0.25, "warning": 0.1, "info": 0.0}


class ContentReview(Capability):
    capability_id = "qa.ContentReview"
    display_name = "Content reviewer"
    kind = "validation"
    input_facets = ("copyVariants",)
    output_facets = ("qa_report",)
    description = "Checks length, completeness and distinctness of copy variants; scores them from 0 to 1."

    def run(self, bundle: ContextBundle) -> dict[str, Any]:
        return {"qa_report": review(bundle.facets["copyVariants"])}


def review(variants: list[dict[str, Any]]) -> dict[str, Any]:
    findings = _findings(variants)
    penalty = sum(_PENALTY[finding["severity"]] for finding in findings)
    score = round(max(0.0, min(1.0, 1.0 - penalty)), 2)
    if not findings:
        findings = [{"severity": "info", "message": f"All {len(variants)} variant(s) pass the checks."}]
    return {"score": score, "findings": findings}


def _findings(variants: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not variants:
        return [{"severity": "error", "message": "There are no variants to review."}]
    findings: list[dict[str, Any]] = []
    seen_bodies: dict[str, int] = {}
    for index, variant in enumerate(variants):
        body = str(variant.get("body") or "")
        headline = str(variant.get("headline") or "")
        for field in ("headline", "body", "callToAction"):
            if not str(variant.get(field) or "").strip():
                findings.append({"severity": "error", "message": f"The {field} is empty.", "variant": index})
        if len(body) > MAX_BODY_CHARS:
            findings.append({"severity": "error", "message": f"The body has {len(body)} characters; "
                             f"the channel allows {MAX_BODY_CHARS}.", "variant": index})
        if len(headline) > MAX_HEADLINE_CHARS:
            findings.append({"severity": "warning", "message": "The headline is long for a feed.", "variant": index})
        if body and body in seen_bodies:
            findings.append({"severity": "warning", "message": f"The body repeats variant {seen_bodies[body]}.",
                             "variant": index})
        seen_bodies.setdefault(body, index)
    return findings
