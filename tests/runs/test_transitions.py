"""runs.transitions: the one writer of run and node status — the table, the
fence, event numbering on both write paths, and the ORM guard."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.db import transaction
from django.db.models import F

from runs.events import event_log
from runs.models import NODE_TRANSITIONS, RUN_TRANSITIONS, NodeRun, NodeStatus, Run, RunEvent, RunStatus, \
    StatusWriteRefused
from runs.transitions import Fenced, TransitionNotAllowed, nodes_update, run_transition, status_writer

pytestmark = pytest.mark.django_db

PAIRS = [(a, b) for a in RunStatus.values for b in RunStatus.values]
NODE_PAIRS = [(a, b) for a in NodeStatus.values for b in NodeStatus.values]


@pytest.fixture
def run(client_user):
    return Run.objects.create(objective="o", envelope={}, created_by=client_user, lease_token=7, status="running")


def write(run, count, *, to=None, expect=None, **kwargs):
    with transaction.atomic():
        return run_transition(run_id=run.id, to=to, expect=expect, plan_version=1,
                              events=[event_log(level="info", message=str(i)) for i in range(count)], **kwargs)


def test_it_numbers_events_from_one_without_gaps(run):
    write(run, 3)
    write(run, 2, lease_token=7, expect=["running"], updates={"facets": {"a": [1, {"b": None}]}})

    assert list(RunEvent.objects.filter(run=run).values_list("seq", flat=True)) == [1, 2, 3, 4, 5]
    run.refresh_from_db()
    assert run.last_seq == 5 and run.facets == {"a": [1, {"b": None}]}


@pytest.mark.parametrize("fence", [{"lease_token": 6}, {"expect": ["queued"]}, {"expect": []}])
def test_a_write_that_fails_the_fence_changes_nothing(run, fence):
    fence.setdefault("expect", ["running"])
    with pytest.raises(Fenced):
        write(run, 2, to="failed", **fence)

    run.refresh_from_db()
    assert (run.last_seq, run.status) == (0, "running")
    assert not RunEvent.objects.filter(run=run).exists()


def test_an_expression_in_the_updates_takes_the_orm_path_and_numbers_the_same(run):
    write(run, 1)
    write(run, 2, lease_token=7, updates={"lease_token": F("lease_token") + 1})

    run.refresh_from_db()
    assert run.lease_token == 8 and run.last_seq == 3
    assert list(RunEvent.objects.filter(run=run).values_list("seq", flat=True)) == [1, 2, 3]


def test_a_status_change_the_transition_table_forbids_changes_nothing(client_user):
    waiting = Run.objects.create(objective="o", envelope={}, created_by=client_user, status="awaiting_hitl")

    with pytest.raises(TransitionNotAllowed):
        write(waiting, 1, to="paused", expect=["awaiting_hitl"])

    waiting.refresh_from_db()
    assert (waiting.status, waiting.last_seq) == ("awaiting_hitl", 0)
    assert not RunEvent.objects.filter(run=waiting).exists()


@pytest.mark.parametrize("from_status,to_status", PAIRS)
def test_every_pair_of_the_run_table_is_applied_or_refused(client_user, from_status, to_status):
    row = Run.objects.create(objective="o", envelope={}, created_by=client_user, status=from_status)

    if to_status in RUN_TRANSITIONS[from_status]:
        written = write(row, 1, to=to_status, expect=[from_status])
        row.refresh_from_db()
        assert row.status == to_status and row.last_seq == 1
        assert [(e.seq, e.type) for e in written] == [(1, "log")]
        assert list(RunEvent.objects.filter(run=row).values_list("seq", flat=True)) == [1]
        assert (row.completed_at is not None) == (to_status in ("completed", "failed", "cancelled"))
    else:
        with pytest.raises(TransitionNotAllowed):
            write(row, 1, to=to_status, expect=[from_status], updates={"pause_reason": "changed"})
        row.refresh_from_db()
        assert (row.status, row.last_seq, row.pause_reason, row.completed_at) == (from_status, 0, "", None)
        assert not RunEvent.objects.filter(run=row).exists()


@pytest.mark.parametrize("from_status,to_status", NODE_PAIRS)
def test_every_pair_of_the_node_table_is_applied_or_refused(run, from_status, to_status):
    node = NodeRun.objects.create(run=run, node_id="n", capability_id="c", kind="execution", status=from_status)

    if to_status in NODE_TRANSITIONS[from_status]:
        with transaction.atomic():
            nodes_update({node.pk: {"status": to_status, "attempts": 3}})
        node.refresh_from_db()
        assert (node.status, node.attempts) == (to_status, 3)
    else:
        with pytest.raises(TransitionNotAllowed), transaction.atomic():
            nodes_update({node.pk: {"status": to_status, "attempts": 3}})
        node.refresh_from_db()
        assert (node.status, node.attempts) == (from_status, 0)


def test_a_run_status_written_outside_the_transitions_module_is_refused(run):
    node = NodeRun.objects.create(run=run, node_id="n", capability_id="c", kind="execution")

    with pytest.raises(StatusWriteRefused):
        Run.objects.filter(pk=run.pk).update(status="completed")
    with pytest.raises(StatusWriteRefused):
        Run.objects.bulk_update([run], ["status"])
    run.status = "completed"
    with pytest.raises(StatusWriteRefused):
        run.save()
    with pytest.raises(StatusWriteRefused):
        NodeRun.objects.filter(pk=node.pk).update(status="completed")
    with pytest.raises(StatusWriteRefused):
        run.node_runs.update(status="failed")
    node.status = "completed"
    with pytest.raises(StatusWriteRefused):
        node.save(update_fields=["status"])

    assert Run.objects.get(pk=run.pk).status == "running"
    assert NodeRun.objects.get(pk=node.pk).status == "pending"


def test_a_row_reloaded_after_a_transition_saves_its_other_fields(run):
    with transaction.atomic():
        run_transition(run_id=run.id, to="paused", expect=["running"], plan_version=1)
    run.refresh_from_db()
    run.objective = "changed"
    run.save()

    assert Run.objects.filter(pk=run.pk).values_list("status", "objective").get() == ("paused", "changed")


def test_other_fields_are_written_as_usual_and_the_writer_may_write_status(run):
    run.objective = "changed"
    run.save()
    Run.objects.filter(pk=run.pk).update(pause_reason="x")

    with status_writer():
        Run.objects.filter(pk=run.pk).update(status="paused")

    run.refresh_from_db()
    assert (run.objective, run.pause_reason, run.status) == ("changed", "x", "paused")


def doc_table(heading: str) -> dict[str, set[str]]:
    """A `| from \\ to | allowed |` table of docs/architecture.md as {from: {to}}."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text()
    rows = text.split(f"| {heading} | allowed |", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    table: dict[str, set[str]] = {}
    for row in rows:
        sources, targets = (cell.strip() for cell in row.strip("|").split("|"))
        for source in re.findall(r"`(\w+)`", sources):
            table[source] = set(re.findall(r"`(\w+)`", targets))
    return table


def test_the_architecture_doc_shows_both_tables_as_they_are():
    assert doc_table("from \\ to") == {k: set(v) for k, v in RUN_TRANSITIONS.items()}
    assert doc_table("node from \\ to") == {k: set(v) for k, v in NODE_TRANSITIONS.items()}
