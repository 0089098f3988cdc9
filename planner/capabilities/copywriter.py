"""copywriter.SocialpostDrafting: drafts N post variants from a creative brief."""
from __future__ import annotations

import re
from typing import Any

from planner.types import Capability, CapabilityError, ContextBundle

# Each variant takes a different angle so that variants differ in substance;
# beyond five variants the angles repeat with a numbered headline. Closers
# cycle with a different period (4), so the 20 allowed variants all differ.
_ANGLES: tuple[dict[str, str], ...] = (
    {"headline": "{company}: {details}", "lead": "{opener} {details}.", "cta": "{action} today"},
    {"headline": "A better way forward for {audience}", "lead": "The problem is familiar; {company} has an answer. {details}.",
     "cta": "See how it works: {action_lower}"},
    {"headline": "Why we built this at {company}", "lead": "We built it because our values demand it. {details}.",
     "cta": "{action} and judge for yourself"},
    {"headline": "What would change for your team?", "lead": "Imagine the week after this lands. {details}.",
     "cta": "{action} this week"},
    {"headline": "Behind the launch at {company}", "lead": "A look behind the scenes: {details}.",
     "cta": "Talk to us: {action_lower}"},
)
_CLOSERS = ("", "Tell us what you think.", "Share it with your team.", "We would love your feedback.")
_OPENERS = {
    "confident": "Today we are proud to announce it:",
    "playful": "Guess what?",
    "warm": "We have some news we are excited to share:",
    "formal": "We are pleased to announce the following:",
}
_VARIANT_INSTRUCTION = re.compile(r"^\s*variant\s+([a-z])\b\s*(?:should\s+)?(.*?)\s*\.?\s*$", re.IGNORECASE)


class SocialpostDrafting(Capability):
    capability_id = "copywriter.SocialpostDrafting"
    display_name = "Social post copywriter"
    kind = "execution"
    input_facets = ("company_information", "creative_brief", "handoff_summary")
    optional_input_facets = ("toneOfVoice",)
    output_facets = ("copyVariants", "post_copy")
    description = "Drafts as many post variants as the plan asks for; each names the company and the audience."
    # Its variants already differ in substance, so it has nothing to change on
    # goal feedback; `copywriter.ShortformDrafting` is its fast alternative.
    traits = {"quality": 0.8, "diversity": 0.8, "speed": 0.4, "token_efficiency": 0.4}

    def run(self, bundle: ContextBundle) -> dict[str, Any]:
        company = str(bundle.facets["company_information"]["name"])
        brief = bundle.facets["creative_brief"]
        audience = str(brief["audience"])
        count = variant_count(bundle.policies)
        tone = str(bundle.facets.get("toneOfVoice") or brief.get("tone") or "")
        focuses = _variant_focuses(bundle.special_instructions)
        variants = [
            _draft(index, company=company, audience=audience, brief=brief, tone=tone, focus=focuses.get(index))
            for index in range(count)
        ]
        return {"copyVariants": variants, "post_copy": variants[0]["body"]}


def variant_count(policies: dict[str, Any]) -> int:
    """`policies.planner.topology.variantCount`, default 1."""
    topology = ((policies or {}).get("planner") or {}).get("topology") or {}
    count = topology.get("variantCount", 1)
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise CapabilityError(f"variantCount must be a positive integer, got {count!r}", code="bad_policy",
                              retryable=False)
    return count


def _variant_focuses(instructions: list[str]) -> dict[int, str]:
    """`{variant index: focus}` from instructions like "Variant A should highlight risk reduction."."""
    focuses: dict[int, str] = {}
    for instruction in instructions:
        match = _VARIANT_INSTRUCTION.match(instruction)
        if match and match.group(2):
            focuses[ord(match.group(1).lower()) - ord("a")] = match.group(2)
    return focuses


def _call_to_action(goal: str) -> str:
    goal_lower = goal.lower()
    if "demo" in goal_lower:
        return "Book a demo"
    if "sign" in goal_lower or "register" in goal_lower:
        return "Sign up"
    return "Learn more"


def _draft(index: int, *, company: str, audience: str, brief: dict[str, Any], tone: str,
           focus: str | None) -> dict[str, str]:
    angle = _ANGLES[index % len(_ANGLES)]
    messages = [str(message) for message in brief.get("keyMessages") or []]
    details = (messages[0] if messages else brief.get("objective", "")).rstrip(".") or company
    action = _call_to_action(str(brief.get("goal") or ""))
    opener = _OPENERS.get(tone.strip().lower(), "Introducing something new:")
    fields = {"company": company, "audience": audience, "details": details, "opener": opener,
              "action": action, "action_lower": action[0].lower() + action[1:]}
    headline = angle["headline"].format(**fields)
    if index >= len(_ANGLES):
        headline = f"{headline} (take {index // len(_ANGLES) + 1})"
    sentences = [
        angle["lead"].format(**fields),
        f"{company} made this for {audience}.",
        *(f"{message.rstrip('.')}." for message in messages[1:3]),
    ]
    if focus:
        sentences.append(f"Our focus: {focus.rstrip('.')}.")
    if _CLOSERS[index % len(_CLOSERS)]:
        sentences.append(_CLOSERS[index % len(_CLOSERS)])
    return {"headline": headline, "body": " ".join(sentences), "callToAction": angle["cta"].format(**fields)}
