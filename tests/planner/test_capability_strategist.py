"""strategist.SocialPosting: the brief, and asking for a missing audience."""
from __future__ import annotations

from typing import Any

import pytest

from planner.capabilities.strategist import AUDIENCE_QUESTION, SocialPosting
from planner.contracts import compile_facets, validate_instance
from planner.types import ClarificationNeeded
from tests.planner.bundles import bundle_for, inputs_of


def strategist_bundle(envelope: str, clarifications: list[dict[str, Any]] | None = None) -> Any:
    inputs = inputs_of(envelope)
    facets = {name: inputs[name] for name in SocialPosting.input_facets}
    return bundle_for("strategist", facets, envelope=envelope, clarifications=clarifications)


def answer(text: str, at: str = "2026-03-01T10:00:00Z") -> dict[str, Any]:
    return {"questionId": "q1", "question": AUDIENCE_QUESTION, "answer": text, "nodeId": "strategist",
            "answeredAt": at}


def test_its_output_matches_its_compiled_contract() -> None:
    output = SocialPosting().run(strategist_bundle("linkedin-variants"))
    assert set(output) == set(SocialPosting.output_facets)
    assert validate_instance(compile_facets(SocialPosting.output_facets).schema, output) == []


def test_the_brief_audience_is_the_post_context_audience() -> None:
    output = SocialPosting().run(strategist_bundle("linkedin-variants"))
    assert output["creative_brief"]["audience"] == "Compliance officers at mid-sized banks"
    assert output["creative_brief"]["channel"] == "linkedin"
    assert "Compliance officers at mid-sized banks" in output["handoff_summary"]


def test_it_asks_who_the_audience_is_when_the_context_has_none() -> None:
    with pytest.raises(ClarificationNeeded) as exc:
        SocialPosting().run(strategist_bundle("clarify-audience"))
    assert exc.value.question == "Who is the target audience for this post?"
    assert exc.value.allow_free_form is True
    assert exc.value.urgency == "normal"


def test_an_empty_audience_counts_as_missing() -> None:
    bundle = strategist_bundle("linkedin-variants")
    bundle.facets["post_context"]["audience"] = "   "
    with pytest.raises(ClarificationNeeded):
        SocialPosting().run(bundle)


def test_it_uses_the_answer_verbatim_as_the_audience() -> None:
    text = "  Heads of Risk at EU fintechs (Series B+)  "
    output = SocialPosting().run(strategist_bundle("clarify-audience", [answer(text)]))
    assert output["creative_brief"]["audience"] == text


def test_it_uses_the_latest_answer() -> None:
    answers = [answer("CFOs", "2026-03-01T10:00:00Z"), answer("Chief compliance officers", "2026-03-01T11:00:00Z")]
    output = SocialPosting().run(strategist_bundle("clarify-audience", answers))
    assert output["creative_brief"]["audience"] == "Chief compliance officers"


def test_a_blank_answer_does_not_count() -> None:
    output = SocialPosting().run(strategist_bundle("clarify-audience", [answer("CFOs"), answer("  ")]))
    assert output["creative_brief"]["audience"] == "CFOs"


def test_the_context_audience_wins_over_clarifications() -> None:
    output = SocialPosting().run(strategist_bundle("linkedin-variants", [answer("CFOs")]))
    assert output["creative_brief"]["audience"] == "Compliance officers at mid-sized banks"


def test_it_is_deterministic() -> None:
    assert SocialPosting().run(strategist_bundle("linkedin-variants")) == SocialPosting().run(
        strategist_bundle("linkedin-variants"))


def test_it_describes_itself() -> None:
    assert SocialPosting.describe() == {
        "capabilityId": "strategist.SocialPosting", "displayName": "Social posting strategist",
        "kind": "structuring", "agentType": "ai", "inputFacets": ["company_information", "post_context"],
        "outputFacets": ["creative_brief", "strategic_rationale", "handoff_summary"], "optionalInputFacets": [],
        "status": "active", "runsOn": "server", "agentId": None, "version": "",
        "description": SocialPosting.description,
    }
