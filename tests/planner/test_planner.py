"""planner.planner: deterministic facet-reachability plans and their diagnostics."""
from __future__ import annotations

import json
from typing import Any

import pytest
from django.conf import settings

from planner.contracts import compile_facets, schema_hash, validate_instance
from planner.planner import PlanGraph, PlanNode, PlanResult, build_plan, preview_plan
from planner.registry import CapabilityRegistry
from planner.types import Capability, Facet
from tests.planner import fakes
from tests.planner.envelopes import load_envelope


def registry_with(*extra: type[Capability]) -> CapabilityRegistry:
    return CapabilityRegistry([*settings.FLEX_CAPABILITIES, *extra])


def plan(envelope: dict[str, Any] | str, *extra: type[Capability], **kwargs: Any) -> PlanResult:
    data = load_envelope(envelope) if isinstance(envelope, str) else envelope
    return build_plan(data, registry=registry_with(*extra), **kwargs)


def node_ids(result: PlanResult) -> list[str]:
    assert result.graph is not None, result.diagnostics
    return [node.id for node in result.graph.nodes]


def capability_ids(result: PlanResult) -> list[str]:
    assert result.graph is not None, result.diagnostics
    return [node.capability_id for node in result.graph.nodes]


def with_selection(name: str, **selection: list[str]) -> dict[str, Any]:
    data = load_envelope(name)
    data["policies"]["planner"]["selection"] = selection
    return data


def with_topology(name: str, **topology: Any) -> dict[str, Any]:
    data = load_envelope(name)
    data["policies"]["planner"]["topology"].update(topology)
    return data


# --- the example envelopes ----------------------------------------------------------

def test_linkedin_variants_plans_strategist_then_copywriter_then_output() -> None:
    result = plan("linkedin-variants")
    assert result.diagnostics == []
    assert node_ids(result) == ["strategist", "copywriter", "output"]
    assert capability_ids(result) == ["strategist.SocialPosting", "copywriter.SocialpostDrafting", "flex.OutputMapper"]


def test_facets_output_plans_strategist_copywriter_qa_and_output() -> None:
    assert node_ids(plan("facets-output")) == ["strategist", "copywriter", "qa", "output"]


@pytest.mark.parametrize("name", ["approval-required", "clarify-audience"])
def test_the_other_valid_examples_plan_strategist_then_copywriter(name: str) -> None:
    assert node_ids(plan(name)) == ["strategist", "copywriter", "output"]


def test_an_unsatisfiable_output_is_rejected_with_a_diagnostic_naming_the_facet() -> None:
    result = plan("unsatisfiable-output")
    assert result.graph is None
    assert result.diagnostics == [{"code": "unsatisfiable_facet", "facet": "videoScript",
                                   "message": "No capability can produce facet 'videoScript' from the inputs"}]


def test_it_lists_the_capabilities_it_considered() -> None:
    assert plan("linkedin-variants").considered == [
        "copywriter.ShortformDrafting", "copywriter.SocialpostDrafting", "flex.OutputMapper", "qa.ContentReview", "strategist.SocialPosting"]


# --- the graph's shape --------------------------------------------------------------------

def test_nodes_carry_their_facets_and_dependencies() -> None:
    graph = plan("facets-output").graph
    assert graph is not None
    strategist, copywriter, qa, output = graph.nodes
    assert strategist.input_facets == ("company_information", "post_context")
    assert strategist.depends_on == ()
    assert copywriter.input_facets == ("company_information", "creative_brief", "handoff_summary")
    assert copywriter.optional_input_facets == ("toneOfVoice",)
    assert copywriter.depends_on == ("strategist",)
    assert qa.depends_on == ("copywriter",)
    assert output.input_facets == ("copyVariants", "qa_report")
    assert output.output_facets == ("output",)
    assert output.depends_on == ("copywriter", "qa")


def test_edges_name_the_facets_passed() -> None:
    graph = plan("facets-output").graph
    assert graph is not None
    assert list(graph.edges) == [
        {"from": "strategist", "to": "copywriter", "facets": ["creative_brief", "handoff_summary"]},
        {"from": "copywriter", "to": "qa", "facets": ["copyVariants"]},
        {"from": "copywriter", "to": "output", "facets": ["copyVariants"]},
        {"from": "qa", "to": "output", "facets": ["qa_report"]},
    ]


def test_an_optional_input_is_not_consumed_when_nobody_has_it() -> None:
    data = load_envelope("linkedin-variants")
    del data["inputs"]["toneOfVoice"]
    graph = plan(data).graph
    assert graph is not None
    assert graph.node("copywriter").optional_input_facets == ()


def test_work_node_contracts_are_the_compiled_output_facets() -> None:
    graph = plan("linkedin-variants").graph
    assert graph is not None
    for node in graph.nodes[:-1]:
        assert node.contract == compile_facets(node.output_facets).schema
        assert node.contract_hash == schema_hash(node.contract)


def test_in_json_schema_mode_the_output_node_wraps_the_callers_schema() -> None:
    data = load_envelope("linkedin-variants")
    graph = plan(data).graph
    assert graph is not None
    output = graph.nodes[-1]
    assert (output.id, output.capability_id, output.kind) == ("output", "flex.OutputMapper", "transformation")
    assert output.contract == {"type": "object", "required": ["output"],
                               "properties": {"output": data["outputContract"]["schema"]}}
    assert graph.output_mode == "json_schema"
    assert graph.output_node_id == "output"


def test_in_facets_mode_the_output_node_wraps_the_compiled_facets() -> None:
    graph = plan("facets-output").graph
    assert graph is not None
    assert graph.nodes[-1].contract["properties"]["output"] == compile_facets(["copyVariants", "qa_report"]).schema
    assert graph.output_mode == "facets"


def test_the_plan_metadata_records_the_variant_count_and_producers() -> None:
    graph = plan("facets-output").graph
    assert graph is not None
    assert graph.metadata["variantCount"] == 3
    assert graph.metadata["outputFacets"] == ["copyVariants", "qa_report"]
    assert graph.metadata["facetProducers"]["creative_brief"] == "strategist"


def test_non_required_properties_join_only_when_producible() -> None:
    data = load_envelope("linkedin-variants")
    schema = data["outputContract"]["schema"]
    schema["properties"].update({"qa_report": {"type": "object"}, "videoScript": {"type": "string"},
                                 "toneOfVoice": {"type": "string"}})
    result = plan(data)
    assert node_ids(result) == ["strategist", "copywriter", "qa", "output"]
    assert result.graph is not None
    assert result.graph.nodes[-1].input_facets == ("copyVariants", "qa_report", "toneOfVoice")


def test_a_required_property_given_as_input_needs_no_producer() -> None:
    data = load_envelope("linkedin-variants")
    data["outputContract"]["schema"] = {"type": "object", "required": ["toneOfVoice"],
                                        "properties": {"toneOfVoice": {"type": "string"}}}
    assert node_ids(plan(data)) == ["output"]


def test_a_brief_in_the_inputs_skips_the_strategist() -> None:
    data = load_envelope("linkedin-variants")
    data["inputs"]["creative_brief"] = {"audience": "A", "objective": "O", "keyMessages": ["k"], "channel": "c"}
    data["inputs"]["handoff_summary"] = "h"
    assert node_ids(plan(data)) == ["copywriter", "output"]


# --- serialisation ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ["linkedin-variants", "facets-output"])
def test_the_graph_round_trips_through_its_dict(name: str) -> None:
    graph = plan(name).graph
    assert graph is not None
    data = json.loads(json.dumps(graph.to_dict()))
    assert PlanGraph.from_dict(data) == graph
    assert PlanGraph.from_dict(data).to_dict() == data


def test_the_dict_uses_the_documented_camel_case_keys() -> None:
    graph = plan("linkedin-variants").graph
    assert graph is not None
    data = graph.to_dict()
    assert set(data) == {"nodes", "edges", "outputMode", "outputNodeId", "metadata", "schemaHash"}
    assert set(data["nodes"][0]) == {"id", "capabilityId", "kind", "label", "inputFacets", "optionalInputFacets",
                                     "outputFacets", "contract", "contractHash", "rationale", "dependsOn"}


def test_the_schema_hash_changes_with_a_node_contract() -> None:
    first = plan("linkedin-variants").graph
    data = load_envelope("linkedin-variants")
    data["outputContract"]["schema"]["properties"]["copyVariants"]["maxItems"] = 3
    second = plan(data).graph
    assert first is not None and second is not None
    assert first.schema_hash != second.schema_hash


def test_preview_returns_the_plan_dict_or_the_diagnostics() -> None:
    assert preview_plan(load_envelope("linkedin-variants"))["plan"]["outputNodeId"] == "output"
    preview = preview_plan(load_envelope("unsatisfiable-output"))
    assert preview["plan"] is None
    assert preview["diagnostics"][0]["facet"] == "videoScript"


# --- determinism ----------------------------------------------------------------------------

def test_planning_is_deterministic() -> None:
    first = plan("facets-output", fakes.AltStrategist, fakes.Summariser)
    second = plan("facets-output", fakes.Summariser, fakes.AltStrategist)
    assert first.graph is not None
    assert first.graph.to_dict() == second.graph.to_dict()  # type: ignore[union-attr]
    assert first.graph.schema_hash == second.graph.schema_hash  # type: ignore[union-attr]


def test_planning_does_not_mutate_the_envelope() -> None:
    data = load_envelope("facets-output")
    build_plan(data)
    assert data == load_envelope("facets-output")


# --- selection policies -----------------------------------------------------------------------

def test_among_equal_producers_the_first_id_wins() -> None:
    # "alt.Strategist" sorts before "strategist.SocialPosting".
    assert node_ids(plan("linkedin-variants", fakes.AltStrategist)) == ["alt", "copywriter", "output"]


def test_a_preferred_capability_wins_over_a_neutral_one() -> None:
    data = with_selection("linkedin-variants", prefer=["strategist.SocialPosting"])
    assert node_ids(plan(data, fakes.AltStrategist))[0] == "strategist"


def test_an_avoided_capability_loses_to_a_neutral_one() -> None:
    data = with_selection("linkedin-variants", avoid=["alt.Strategist"])
    assert node_ids(plan(data, fakes.AltStrategist))[0] == "strategist"


def test_an_avoided_capability_is_still_used_when_it_is_the_only_producer() -> None:
    data = with_selection("linkedin-variants", avoid=["strategist.SocialPosting"])
    assert node_ids(plan(data))[0] == "strategist"


def test_a_required_capability_wins_over_a_preferred_one() -> None:
    data = with_selection("linkedin-variants", require=["alt.Strategist"], prefer=["strategist.SocialPosting"])
    assert node_ids(plan(data, fakes.AltStrategist))[0] == "alt"


def test_a_forbidden_capability_is_never_used() -> None:
    data = with_selection("linkedin-variants", forbid=["alt.Strategist"])
    assert "alt.Strategist" not in capability_ids(plan(data, fakes.AltStrategist))
    assert "alt.Strategist" not in plan(data, fakes.AltStrategist).considered


def test_forbidding_the_only_producer_makes_the_plan_unsatisfiable_and_says_why() -> None:
    data = with_selection("linkedin-variants",
                          forbid=["copywriter.SocialpostDrafting", "copywriter.ShortformDrafting"])
    result = plan(data)
    assert result.graph is None
    assert result.diagnostics[0]["code"] == "unsatisfiable_facet"
    assert result.diagnostics[0]["facet"] == "copyVariants"
    assert ("excluded by policy: copywriter.ShortformDrafting, copywriter.SocialpostDrafting"
            in result.diagnostics[0]["message"])


def test_a_required_capability_that_nothing_needs_is_added() -> None:
    data = with_selection("linkedin-variants", require=["summary.Writer"])
    result = plan(data, fakes.Summariser)
    assert node_ids(result) == ["strategist", "copywriter", "summary", "output"]
    assert result.graph is not None
    summary = result.graph.node("summary")
    assert summary.depends_on == ("strategist",)
    assert "selection.require" in summary.rationale
    # It finishes before the output, though the output takes nothing from it.
    assert "summary" in result.graph.nodes[-1].depends_on
    assert {"from": "summary", "to": "output", "facets": []} in result.graph.edges


def test_a_required_capability_with_unsatisfiable_inputs_is_a_diagnostic() -> None:
    data = with_selection("linkedin-variants", require=["unreachable.Cap"])
    del data["inputs"]["toneOfVoice"]
    result = plan(data, fakes.Unreachable)
    assert result.graph is None
    assert result.diagnostics == [{
        "code": "required_capability_unsatisfiable", "capabilityId": "unreachable.Cap",
        "message": "Capability 'unreachable.Cap' is required but its inputs (post_copy, toneOfVoice) "
                   "cannot be produced from the inputs"}]


def test_a_required_capability_runs_once_its_inputs_can_be_met() -> None:
    data = with_selection("linkedin-variants", require=["unreachable.Cap"])
    assert node_ids(plan(data, fakes.Unreachable)) == ["strategist", "copywriter", "unreachable", "output"]


def test_a_capability_both_required_and_forbidden_is_a_diagnostic() -> None:
    data = with_selection("linkedin-variants", require=["qa.ContentReview"], forbid=["qa.ContentReview"])
    result = plan(data)
    assert result.graph is None
    assert result.diagnostics[0]["code"] == "required_capability_unavailable"
    assert result.diagnostics[0]["capabilityId"] == "qa.ContentReview"


def test_a_producer_whose_inputs_are_missing_is_passed_over() -> None:
    # tone.Briefer sorts first but needs toneOfVoice, which this envelope lacks.
    data = load_envelope("linkedin-variants")
    del data["inputs"]["toneOfVoice"]
    assert node_ids(plan(data, fakes.BriefFromTone))[0] == "strategist"


def test_a_different_input_path_is_found_when_it_is_the_only_one() -> None:
    data = with_selection("linkedin-variants", forbid=["strategist.SocialPosting"])
    assert node_ids(plan(data, fakes.BriefFromTone)) == ["tone", "copywriter", "output"]


def test_only_capabilities_on_a_path_to_the_output_appear() -> None:
    ids = capability_ids(plan("linkedin-variants", fakes.Summariser, fakes.Unreachable))
    assert "summary.Writer" not in ids and "unreachable.Cap" not in ids and "qa.ContentReview" not in ids


# --- topology and constraints ---------------------------------------------------------------

def test_forbidden_kinds_exclude_capabilities_but_never_the_output_mapper() -> None:
    data = with_topology("facets-output", forbiddenKinds=["validation", "transformation"])
    result = plan(data)
    assert result.graph is None
    assert result.diagnostics[0]["facet"] == "qa_report"
    assert node_ids(plan(with_topology("linkedin-variants", forbiddenKinds=["transformation"])))[-1] == "output"


def test_a_required_kind_is_added_when_it_can_run() -> None:
    ids = node_ids(plan(with_topology("linkedin-variants", requiredKinds=["validation"])))
    assert ids == ["strategist", "copywriter", "qa", "output"]


def test_a_required_kind_nobody_offers_is_a_diagnostic() -> None:
    result = plan(with_topology("linkedin-variants", requiredKinds=["routing"]))
    assert result.graph is None
    assert result.diagnostics[0]["code"] == "required_kind_missing"


def test_the_output_mapper_satisfies_a_required_transformation() -> None:
    assert plan(with_topology("linkedin-variants", requiredKinds=["transformation"])).graph is not None


def test_max_depth_counts_the_work_nodes_on_the_longest_chain() -> None:
    assert plan(with_topology("facets-output", maxDepth=3)).graph is not None
    result = plan(with_topology("facets-output", maxDepth=2))
    assert result.graph is None
    assert result.diagnostics[0]["code"] == "max_depth_exceeded"


def test_max_nodes_counts_every_node() -> None:
    data = load_envelope("facets-output")
    data["constraints"] = {"maxNodes": 4}
    assert plan(data).graph is not None
    data["constraints"] = {"maxNodes": 3}
    result = plan(data)
    assert result.graph is None
    assert result.diagnostics[0]["code"] == "max_nodes_exceeded"


def test_variant_count_does_not_change_the_graph_shape() -> None:
    two = plan(with_topology("linkedin-variants", variantCount=2)).graph
    five = plan(with_topology("linkedin-variants", variantCount=5)).graph
    assert two is not None and five is not None
    assert [n.id for n in two.nodes] == [n.id for n in five.nodes]
    assert five.metadata["variantCount"] == 5


# --- ids and cycles ----------------------------------------------------------------------------

class CopywriterTwo(Capability):
    capability_id = "copywriter.Alt"
    display_name = "Second copywriter"
    kind = "execution"
    input_facets = ("copyVariants",)
    output_facets = ("post_copy",)


def test_node_ids_are_deduplicated_with_suffixes() -> None:
    data = load_envelope("linkedin-variants")
    data["outputContract"] = {"mode": "facets", "facets": ["post_copy"]}
    data["policies"]["planner"]["selection"] = {"require": ["copywriter.Alt"]}
    ids = node_ids(plan(data, CopywriterTwo))
    assert ids == ["strategist", "copywriter", "copywriter-2", "output"]


class LoopA(Capability):
    capability_id = "loop.A"
    display_name = "A"
    kind = "execution"
    input_facets = ("strategic_rationale",)
    output_facets = ("post_copy",)


class LoopB(Capability):
    capability_id = "loop.B"
    display_name = "B"
    kind = "execution"
    input_facets = ("post_copy",)
    output_facets = ("strategic_rationale",)


def test_a_facet_that_only_a_cycle_could_produce_is_a_cycle_diagnostic() -> None:
    catalog_free = {"objective": "x", "inputs": {}, "outputContract": {"mode": "facets", "facets": ["post_copy"]}}
    result = build_plan(catalog_free, registry=CapabilityRegistry([LoopA, LoopB, *settings.FLEX_CAPABILITIES[-1:]]))
    assert result.graph is None
    assert result.diagnostics[0]["code"] == "cycle"
    assert result.diagnostics[0]["facet"] == "post_copy"


def test_it_plans_with_an_explicit_catalog() -> None:
    catalog = {"videoScript": Facet("videoScript", "Video script", "", {"type": "string"}, "", "output"),
               "topic": Facet("topic", "Topic", "", {"type": "string"}, "", "input")}

    class Scripter(Capability):
        capability_id = "video.Scripter"
        display_name = "Scripter"
        kind = "execution"
        input_facets = ("topic",)
        output_facets = ("videoScript",)

        def run(self, bundle: Any) -> dict[str, Any]:
            return {"videoScript": f"About {bundle.facets['topic']}"}

    envelope = {"objective": "x", "inputs": {"topic": "audits"},
                "outputContract": {"mode": "json_schema", "schema": {"type": "object", "required": ["videoScript"]}}}
    result = build_plan(envelope, catalog=catalog,
                        registry=CapabilityRegistry([Scripter, "planner.capabilities.output.OutputMapper"]))
    assert [node.id for node in result.graph.nodes] == ["video", "output"]  # type: ignore[union-attr]
    node: PlanNode = result.graph.nodes[0]  # type: ignore[union-attr]
    assert validate_instance(node.contract, {"videoScript": "About audits"}) == []
