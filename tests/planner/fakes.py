"""Small capabilities for tests: registered by dotted path or by class."""
from __future__ import annotations

from typing import Any

from planner.types import Capability, ContextBundle


class _Echo(Capability):
    def run(self, bundle: ContextBundle) -> dict[str, Any]:
        return {facet: f"{self.capability_id}:{facet}" for facet in self.output_facets}


class AltStrategist(_Echo):
    """A second producer of the strategist's facets, for selection-policy tests."""

    capability_id = "alt.Strategist"
    display_name = "Alternative strategist"
    kind = "structuring"
    input_facets = ("company_information", "post_context")
    output_facets = ("creative_brief", "strategic_rationale", "handoff_summary")


class BriefFromTone(_Echo):
    """Produces a brief from the tone alone (a different input path)."""

    capability_id = "tone.Briefer"
    display_name = "Tone briefer"
    kind = "structuring"
    input_facets = ("toneOfVoice",)
    output_facets = ("creative_brief", "handoff_summary")


class Summariser(_Echo):
    """A capability no output needs: appears only when required."""

    capability_id = "summary.Writer"
    display_name = "Summary writer"
    kind = "execution"
    input_facets = ("creative_brief",)
    output_facets = ("strategic_rationale",)


class Unreachable(_Echo):
    """Needs a tone of voice, which only the inputs can give (no capability produces it)."""

    capability_id = "unreachable.Cap"
    display_name = "Unreachable"
    kind = "routing"
    input_facets = ("post_copy", "toneOfVoice")
    output_facets = ("qa_report",)


class NotACapability:
    capability_id = "not.Capability"


class UnknownFacetCapability(_Echo):
    capability_id = "bad.UnknownFacet"
    display_name = "Names an unknown facet"
    kind = "execution"
    input_facets = ("favouriteColour",)
    output_facets = ("post_copy",)


class SameIdAsAlt(AltStrategist):
    """Declares the id of AltStrategist from another path (a configuration mistake)."""
