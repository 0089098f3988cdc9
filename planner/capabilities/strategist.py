"""strategist.SocialPosting: turns company and post context into a creative brief."""
from __future__ import annotations

from typing import Any

from planner.types import Capability, ClarificationNeeded, ContextBundle

AUDIENCE_QUESTION = "Who is the target audience for this post?"


class SocialPosting(Capability):
    capability_id = "strategist.SocialPosting"
    display_name = "Social posting strategist"
    kind = "structuring"
    input_facets = ("company_information", "post_context")
    output_facets = ("creative_brief", "strategic_rationale", "handoff_summary")
    description = "Writes the creative brief for a social post; asks for the audience when it is missing."

    def run(self, bundle: ContextBundle) -> dict[str, Any]:
        company = bundle.facets["company_information"]
        context = bundle.facets["post_context"]
        audience = resolve_audience(context, bundle.clarifications)
        brief = {
            "audience": audience,
            "objective": bundle.objective,
            "keyMessages": _key_messages(company, context),
            "tone": _tone(company),
            "channel": context.get("channel") or "linkedin",
            "postType": context.get("type") or "announcement",
            "goal": context.get("goal") or "",
        }
        return {
            "creative_brief": brief,
            "strategic_rationale": _rationale(company, context, audience),
            "handoff_summary": _handoff(company, brief),
        }


def resolve_audience(context: dict[str, Any], clarifications: list[dict[str, Any]]) -> str:
    """The post's audience: from the context, else the latest clarification answer, else ask.

    The answer is used verbatim (not trimmed or re-cased): the person's words
    must appear in the copy exactly as typed. Clarifications arrive in the
    order they were answered, so the last non-empty one is the latest.
    """
    audience = context.get("audience")
    if isinstance(audience, str) and audience.strip():
        return audience
    answers = [str(item["answer"]) for item in clarifications
               if item.get("answer") is not None and str(item["answer"]).strip()]
    if answers:
        return answers[-1]
    raise ClarificationNeeded(
        AUDIENCE_QUESTION,
        allow_free_form=True,
        operator_prompt="The post context names no audience; describe who should read this post.",
    )


def _key_messages(company: dict[str, Any], context: dict[str, Any]) -> list[str]:
    messages = [str(context.get("details") or "").strip(), str(company.get("positioning") or "").strip()]
    values = [str(value) for value in company.get("values") or [] if str(value).strip()]
    if values:
        messages.append(f"Grounded in {_join(values)}")
    messages = [message for message in messages if message]
    return messages or [f"News from {company['name']}"]


def _tone(company: dict[str, Any]) -> str:
    values = [str(value) for value in company.get("values") or [] if str(value).strip()]
    return f"professional, conveying {_join(values)}" if values else "professional"


def _rationale(company: dict[str, Any], context: dict[str, Any], audience: str) -> str:
    goal = context.get("goal") or "awareness"
    channel = context.get("channel") or "linkedin"
    return (f"{company['name']} speaks to {audience} on {channel}: a {context.get('type') or 'post'} "
            f"that leads with the concrete change for them supports the goal \"{goal}\" better than a feature list.")


def _handoff(company: dict[str, Any], brief: dict[str, Any]) -> str:
    return (f"Write for {brief['audience']}. Name {company['name']} in every variant, lead with "
            f"\"{brief['keyMessages'][0]}\", and close on the goal: {brief['goal'] or 'engagement'}.")


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
