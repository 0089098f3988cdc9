"""flexagents.cli.view: a replan's plan_updated replaces the nodes it drops."""
from __future__ import annotations

from flexagents.cli.view import RunView


def test_a_replan_swaps_the_replaced_node_for_its_alternative() -> None:
    view = RunView(run_id="run_1")
    view.apply({"type": "plan_generated", "planVersion": 1, "payload": {"nodes": [
        {"id": "strategist", "capabilityId": "strategist.SocialPosting", "kind": "structuring"},
        {"id": "copywriter", "capabilityId": "copywriter.SocialpostDrafting", "kind": "execution"}]}})
    view.apply({"type": "node_complete", "planVersion": 1, "payload": {"nodeId": "strategist", "attempt": 1}})
    view.apply({"type": "plan_updated", "planVersion": 2, "payload": {
        "previousVersion": 1, "version": 2, "reason": "replan", "trigger": {"kind": "capability_inactive"},
        "nodes": [{"id": "strategist", "status": "completed", "capabilityId": "strategist.SocialPosting"},
                  {"id": "copywriter-2", "status": "pending", "capabilityId": "copywriter.ShortformDrafting",
                   "kind": "execution"}],
        "addedNodes": ["copywriter-2"], "removedNodes": ["copywriter"], "keptNodes": ["strategist"]}})

    assert list(view.nodes) == ["strategist", "copywriter-2"]
    assert view.nodes["copywriter-2"].capability_id == "copywriter.ShortformDrafting"
    assert (view.plan_version, view.done) == (2, 1)
