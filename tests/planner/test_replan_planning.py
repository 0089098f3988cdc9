"""planner.planner: the optimisation objective and planning again (`Replan`)."""
from __future__ import annotations

from typing import Any

import pytest

from planner.planner import Replan, build_plan
from tests.planner.test_planner import capability_ids, node_ids, plan, registry_with
from tests.planner.envelopes import load_envelope


def with_objective(objective: str | None, name: str = "linkedin-variants") -> dict[str, Any]:
    data = load_envelope(name)
    if objective is not None:
        data["policies"]["planner"]["optimisation"] = {"objective": objective}
    return data


@pytest.mark.parametrize("objective, copywriter", [
    (None, "copywriter.SocialpostDrafting"),  # the default objective is quality
    ("quality", "copywriter.SocialpostDrafting"),
    ("diversity", "copywriter.SocialpostDrafting"),
    ("speed", "copywriter.ShortformDrafting"),
    ("token_efficiency", "copywriter.ShortformDrafting"),
])
def test_the_objective_chooses_between_alternative_producers(objective, copywriter) -> None:
    result = plan(with_objective(objective))
    assert capability_ids(result) == ["strategist.SocialPosting", copywriter, "flex.OutputMapper"]
    assert result.graph is not None
    assert result.graph.metadata["objective"] == (objective or "quality")
    rationale = result.graph.node("copywriter").rationale
    assert (objective or "quality") in rationale and "beats" in rationale


def test_selection_outranks_the_objective() -> None:
    data = with_objective("speed")
    data["policies"]["planner"]["selection"] = {"prefer": ["copywriter.SocialpostDrafting"]}
    assert "copywriter.SocialpostDrafting" in capability_ids(plan(data))
    data["policies"]["planner"]["selection"] = {"avoid": ["copywriter.ShortformDrafting"]}
    assert "copywriter.SocialpostDrafting" in capability_ids(plan(data))


def first_graph(name: str = "facets-output") -> dict[str, Any]:
    result = plan(name)
    assert result.graph is not None
    return result.graph.to_dict()


def test_a_replan_keeps_completed_nodes_and_replaces_an_excluded_capability() -> None:
    graph = first_graph()
    strategist = next(n for n in graph["nodes"] if n["id"] == "strategist")
    result = build_plan(load_envelope("facets-output"), registry=registry_with(), replan=Replan(
        keep=(strategist,), exclude=frozenset({"copywriter.SocialpostDrafting"}),
        node_ids={"qa.ContentReview": "qa"}, taken_ids=frozenset({"strategist", "copywriter", "qa", "output"})))
    assert result.graph is not None, result.diagnostics
    assert node_ids(result) == ["strategist", "copywriter-2", "qa", "output"]
    assert capability_ids(result)[1] == "copywriter.ShortformDrafting"
    assert result.graph.node("strategist").to_dict() == strategist  # kept exactly as it ran
    assert result.graph.node("copywriter-2").depends_on == ("strategist",)
    assert result.graph.node("qa").depends_on == ("copywriter-2",)
    assert result.graph.metadata["replan"] == {"keptNodes": ["strategist"],
                                               "excludedCapabilities": ["copywriter.SocialpostDrafting"]}


def test_a_replan_with_no_alternative_is_rejected_and_names_the_exclusion() -> None:
    graph = first_graph()
    strategist = next(n for n in graph["nodes"] if n["id"] == "strategist")
    result = build_plan(load_envelope("facets-output"), registry=registry_with(), replan=Replan(
        keep=(strategist,), exclude=frozenset({"qa.ContentReview"})))
    assert result.graph is None
    assert result.diagnostics == [{
        "code": "unsatisfiable_facet", "facet": "qa_report", "excludedCapabilities": ["qa.ContentReview"],
        "message": "No capability can produce facet 'qa_report' from the inputs (excluded by the replan: "
                   "qa.ContentReview)"}]


def test_a_kept_node_stays_even_when_its_capability_is_excluded() -> None:
    # A capability gone inactive after its node completed: its results stand.
    graph = first_graph()
    strategist = next(n for n in graph["nodes"] if n["id"] == "strategist")
    result = build_plan(load_envelope("facets-output"), registry=registry_with(), replan=Replan(
        keep=(strategist,), exclude=frozenset({"strategist.SocialPosting"})))
    assert result.graph is not None and node_ids(result)[0] == "strategist"
