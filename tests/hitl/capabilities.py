"""Test capabilities for HITL (registered through FLEX_EXTRA_CAPABILITIES)."""
from __future__ import annotations

from typing import Any

from planner.capabilities.strategist import SocialPosting
from planner.types import ClarificationNeeded, ContextBundle


class TwoQuestionStrategist(SocialPosting):
    """Asks for the audience, then for the angle; writes both answers into its output."""

    capability_id = "test.TwoQuestionStrategist"
    display_name = "Strategist that asks twice"

    def run(self, bundle: ContextBundle) -> dict[str, Any]:
        answers = [c["answer"] for c in bundle.clarifications]
        if len(answers) == 0:
            raise ClarificationNeeded("Who is the target audience?", allow_free_form=True, urgency="high")
        if len(answers) == 1:
            raise ClarificationNeeded("Which angle should the post take?",
                                      options=[{"id": "risk", "label": "Risk reduction"},
                                               {"id": "speed", "label": "Speed"}], allow_free_form=False)
        context = dict(bundle.facets["post_context"], audience=answers[0])
        bundle.facets = dict(bundle.facets, post_context=context)
        out = super().run(bundle)
        out["handoff_summary"] = f"{out['handoff_summary']} Angle: {answers[1]}. Answers seen: {answers!r}"
        return out


def two_question_envelope(base: dict[str, Any]) -> dict[str, Any]:
    base["policies"].setdefault("planner", {})["selection"] = {"forbid": ["strategist.SocialPosting"],
                                                               "require": ["test.TwoQuestionStrategist"]}
    return base
