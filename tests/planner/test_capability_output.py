"""flex.OutputMapper: maps facets onto the caller's contract."""
from __future__ import annotations

from planner.capabilities.output import OUTPUT_MAPPER_ID, OutputMapper, output_node_contract
from planner.contracts import compile_facets, validate_instance
from tests.planner.bundles import bundle_for
from tests.planner.envelopes import load_envelope

VARIANTS = [{"headline": "H", "body": "Akkuro", "callToAction": "Go"}]


def test_it_copies_the_facets_the_contract_names() -> None:
    schema = load_envelope("linkedin-variants")["outputContract"]["schema"]
    contract = output_node_contract(schema)
    bundle = bundle_for("output", {"copyVariants": VARIANTS, "post_copy": "ignored"}, contract=contract)
    assert OutputMapper().run(bundle) == {"output": {"copyVariants": VARIANTS}}


def test_it_leaves_out_properties_it_has_no_facet_for() -> None:
    contract = output_node_contract({"type": "object", "properties": {"copyVariants": {}, "qa_report": {}}})
    bundle = bundle_for("output", {"copyVariants": VARIANTS}, contract=contract)
    assert OutputMapper().run(bundle) == {"output": {"copyVariants": VARIANTS}}


def test_in_facets_mode_it_maps_the_compiled_facets() -> None:
    contract = output_node_contract(compile_facets(["copyVariants", "qa_report"]).schema)
    report = {"score": 1.0, "findings": []}
    bundle = bundle_for("output", {"copyVariants": VARIANTS, "qa_report": report}, contract=contract)
    output = OutputMapper().run(bundle)
    assert output == {"output": {"copyVariants": VARIANTS, "qa_report": report}}
    assert validate_instance(contract, output) == []


def test_its_node_contract_wraps_the_schema_under_output() -> None:
    assert output_node_contract({"type": "object"}) == {
        "type": "object", "required": ["output"], "properties": {"output": {"type": "object"}}}


def test_it_is_a_transformation_with_a_fixed_id() -> None:
    assert OutputMapper.capability_id == OUTPUT_MAPPER_ID == "flex.OutputMapper"
    assert OutputMapper.kind == "transformation"
    assert OutputMapper.output_facets == ("output",)
