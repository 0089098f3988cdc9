"""copywriter.ShortformDrafting: the fast, cheap alternative to the social post copywriter.

Same facets as `copywriter.SocialpostDrafting`, another style: one short core
message that every variant shares, the variants differing only in headline
and call to action. It declares lower quality and diversity and higher speed
and token efficiency, so `optimisation.objective` "speed" or
"token_efficiency" picks it, "quality" or "diversity" (and the default) the
other one (docs/planning.md).

It acts on `goalFeedback` (a goal of the envelope was unmet and this node
runs again): every variant then gets a body of its own, led by a different
angle — deterministic, so a goal on `qa_report.score` (which the reviewer
lowers for repeated bodies) is met on the second try.
"""
from __future__ import annotations

from typing import Any

from planner.capabilities.copywriter import variant_count
from planner.types import Capability, ContextBundle

_HEADLINES = ("{company}, now for {audience}", "New from {company}", "{company}: this changes the week",
              "Made for {audience}", "Ready when you are")
_ACTIONS = ("{action} now", "{action} today", "{action} this week")
_ANGLES = ("Here is the short version.", "Picture the week after this lands.", "Why we built it:",
           "The problem is familiar; this is the fix.", "Behind the launch:")


class ShortformDrafting(Capability):
    capability_id = "copywriter.ShortformDrafting"
    display_name = "Short-form copywriter"
    kind = "execution"
    input_facets = ("company_information", "creative_brief", "handoff_summary")
    optional_input_facets = ("toneOfVoice",)
    output_facets = ("copyVariants", "post_copy")
    description = ("Writes one short core message for every variant; headlines and calls to action vary. "
                   "Fast and cheap; on goal feedback it writes a distinct body per variant.")
    traits = {"quality": 0.5, "diversity": 0.3, "speed": 0.9, "token_efficiency": 0.9}

    def run(self, bundle: ContextBundle) -> dict[str, Any]:
        company = str(bundle.facets["company_information"]["name"])
        brief = bundle.facets["creative_brief"]
        audience = str(brief["audience"])
        messages = [str(message).rstrip(".") for message in brief.get("keyMessages") or []]
        core = (messages[0] if messages else str(brief.get("objective") or company)).rstrip(".")
        action = "Book a demo" if "demo" in str(brief.get("goal") or "").lower() else "Learn more"
        fields = {"company": company, "audience": audience, "action": action}
        revise = bool(bundle.goal_feedback)
        variants = []
        for index in range(variant_count(bundle.policies)):
            body = f"{core}. {company}, for {audience}."
            if revise:
                # Goal feedback: no two variants share a body.
                body = f"{_ANGLES[index % len(_ANGLES)]} {body}"
                if index >= len(_ANGLES):
                    body += f" (take {index // len(_ANGLES) + 1})"
            headline = _HEADLINES[index % len(_HEADLINES)].format(**fields)
            if index >= len(_HEADLINES):
                headline = f"{headline} ({index // len(_HEADLINES) + 1})"
            variants.append({"headline": headline, "body": body,
                             "callToAction": _ACTIONS[index % len(_ACTIONS)].format(**fields)})
        return {"copyVariants": variants, "post_copy": variants[0]["body"]}
