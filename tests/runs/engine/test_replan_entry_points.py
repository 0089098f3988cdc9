"""`runs.engine.policies.replan_capability_inactive`: the entry point for a
capability gone inactive (an external agent that stopped heartbeating),
called here the way its caller will: by the lease holder, in a step."""
from __future__ import annotations

import pytest

from runs.engine import lease, loop, policies
from runs.engine.step import Step
from runs.models import NodeRun, PlanVersion, Run
from tests.conftest import load_envelope
from tests.hitl.helpers import event_types, events_of, submit

pytestmark = pytest.mark.django_db


def claimed_with_copywriter_running(api_for, client_user, name="linkedin-variants"):
    run_id = submit(api_for(client_user), load_envelope(name))
    claim = lease.claim_next(worker_id="test", run_id=run_id)
    assert claim is not None
    ctx = loop.load(claim)
    loop.plan(ctx)  # the strategist is started
    loop.run_node(ctx, ctx.nodes["strategist"], None)  # it completes; the copywriter is started
    assert ctx.nodes["copywriter"].status == "running"
    return claim, ctx


def test_a_capability_gone_inactive_mid_run_is_replaced_by_an_alternative(api_for, client_user):
    claim, ctx = claimed_with_copywriter_running(api_for, client_user)

    step = Step()
    assert policies.replan_capability_inactive(ctx, step, ["copywriter.SocialpostDrafting"]) is False
    loop.commit(ctx, step)
    loop._advance(ctx, claim, heartbeat=None, stop=None)
    lease.release(claim)

    run = Run.objects.get(pk=ctx.run.id)
    assert run.status == "completed" and run.plan_version == 2
    version = PlanVersion.objects.get(run=run, version=2)
    assert version.trigger == {"kind": "capability_inactive", "capabilityIds": ["copywriter.SocialpostDrafting"],
                               "excludedCapabilities": ["copywriter.SocialpostDrafting"]}
    assert [n["id"] for n in version.graph["nodes"]] == ["strategist", "copywriter-2", "output"]
    gone = NodeRun.objects.get(run=run, node_id="copywriter")
    assert (gone.status, gone.attempts, gone.error["code"]) == ("failed", 1, "replaced_by_replan")
    assert NodeRun.objects.get(run=run, node_id="copywriter-2").capability_id == "copywriter.ShortformDrafting"
    assert [e.payload["nodeId"] for e in events_of(run.id, "node_start")] == [
        "strategist", "copywriter", "copywriter-2", "output"]
    updated = events_of(run.id, "plan_updated")[0].payload
    assert updated["addedNodes"] == ["copywriter-2"] and updated["removedNodes"] == ["copywriter"]


def test_a_capability_gone_inactive_with_no_alternative_fails_the_run(api_for, client_user):
    claim, ctx = claimed_with_copywriter_running(api_for, client_user)

    step = Step()
    assert policies.replan_capability_inactive(
        ctx, step, ["copywriter.SocialpostDrafting", "copywriter.ShortformDrafting"]) is True
    loop.commit(ctx, step)
    lease.release(claim)

    run = Run.objects.get(pk=ctx.run.id)
    assert run.status == "failed" and run.error["code"] == "replan_rejected"
    assert event_types(run.id)[-3:] == ["plan_requested", "plan_rejected", "complete"]
    abandoned = NodeRun.objects.get(run=run, node_id="copywriter")
    assert (abandoned.status, abandoned.error["code"]) == ("failed", "replan_rejected")
