"""copywriter.SocialpostDrafting: variant count, and the company and audience named verbatim."""
from __future__ import annotations

from typing import Any

import pytest

from planner.capabilities.copywriter import SocialpostDrafting
from planner.capabilities.strategist import SocialPosting
from planner.contracts import compile_facets, validate_instance
from planner.types import CapabilityError
from tests.planner.bundles import bundle_for, inputs_of

AUDIENCE = "Compliance officers at mid-sized banks"


def copywriter_bundle(envelope: str = "linkedin-variants", *, variant_count: int | None = None,
                      audience: str | None = None, tone: bool = True) -> Any:
    inputs = inputs_of(envelope)
    if audience is not None:
        inputs["post_context"]["audience"] = audience
    strategist = SocialPosting().run(bundle_for("strategist", inputs, envelope=envelope))
    facets = {"company_information": inputs["company_information"], **strategist}
    if tone:
        facets["toneOfVoice"] = inputs["toneOfVoice"]
    return bundle_for("copywriter", facets, envelope=envelope, variant_count=variant_count)


def test_it_writes_as_many_variants_as_the_policy_asks() -> None:
    output = SocialpostDrafting().run(copywriter_bundle("linkedin-variants"))
    assert len(output["copyVariants"]) == 2


@pytest.mark.parametrize("count", [1, 3, 5, 6, 20])
def test_every_variant_count_is_honoured(count: int) -> None:
    output = SocialpostDrafting().run(copywriter_bundle(variant_count=count))
    assert len(output["copyVariants"]) == count


def test_it_writes_one_variant_by_default() -> None:
    bundle = copywriter_bundle()
    bundle.policies = {}
    assert len(SocialpostDrafting().run(bundle)["copyVariants"]) == 1


def test_a_bad_variant_count_is_a_permanent_error() -> None:
    bundle = copywriter_bundle(variant_count=0)
    with pytest.raises(CapabilityError) as exc:
        SocialpostDrafting().run(bundle)
    assert exc.value.retryable is False


@pytest.mark.parametrize("count", [1, 2, 7])
def test_every_body_names_the_company_and_the_audience_verbatim(count: int) -> None:
    output = SocialpostDrafting().run(copywriter_bundle(variant_count=count))
    for variant in output["copyVariants"]:
        assert "Akkuro" in variant["body"]
        assert AUDIENCE in variant["body"]


def test_an_unusual_audience_survives_verbatim() -> None:
    audience = "  heads of risk @ EU fintechs — {Series B+}  "
    output = SocialpostDrafting().run(copywriter_bundle(audience=audience, variant_count=3))
    assert all(audience in variant["body"] for variant in output["copyVariants"])


@pytest.mark.parametrize("count", [2, 5, 12, 20])
def test_variants_differ(count: int) -> None:
    variants = SocialpostDrafting().run(copywriter_bundle(variant_count=count))["copyVariants"]
    assert len({variant["headline"] for variant in variants}) == count
    assert len({variant["body"] for variant in variants}) == count


def test_post_copy_is_the_first_body() -> None:
    output = SocialpostDrafting().run(copywriter_bundle())
    assert output["post_copy"] == output["copyVariants"][0]["body"]


def test_its_output_matches_its_compiled_contract() -> None:
    output = SocialpostDrafting().run(copywriter_bundle(variant_count=4))
    assert validate_instance(compile_facets(SocialpostDrafting.output_facets).schema, output) == []


def test_a_variant_specific_instruction_shapes_that_variant_only() -> None:
    variants = SocialpostDrafting().run(copywriter_bundle())["copyVariants"]
    assert "risk reduction" in variants[0]["body"]
    assert "risk reduction" not in variants[1]["body"]


def test_the_tone_changes_the_wording() -> None:
    confident = SocialpostDrafting().run(copywriter_bundle())["copyVariants"][0]["body"]
    plain = SocialpostDrafting().run(copywriter_bundle(tone=False))["copyVariants"][0]["body"]
    assert confident != plain


def test_it_is_deterministic() -> None:
    assert SocialpostDrafting().run(copywriter_bundle(variant_count=3)) == SocialpostDrafting().run(
        copywriter_bundle(variant_count=3))


def test_the_demo_goal_becomes_a_demo_call_to_action() -> None:
    variants = SocialpostDrafting().run(copywriter_bundle(variant_count=5))["copyVariants"]
    assert all("demo" in variant["callToAction"].lower() for variant in variants)
