"""runs.events.append_events: numbering and the fence, on both write paths."""
from __future__ import annotations

import pytest
from django.db import transaction
from django.db.models import F

from runs.events import Fenced, PendingEvent, append_events
from runs.models import Run, RunEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(client_user):
    return Run.objects.create(objective="o", envelope={}, created_by=client_user, lease_token=7, status="running")


def write(run, count, **kwargs):
    with transaction.atomic():
        return append_events(run_id=run.id, events=[PendingEvent("log", {"i": i}) for i in range(count)],
                             plan_version=1, **kwargs)


def test_it_numbers_events_from_one_without_gaps(run):
    write(run, 3)
    write(run, 2, lease_token=7, statuses=["running"], run_updates={"facets": {"a": [1, {"b": None}]}})

    assert list(RunEvent.objects.filter(run=run).values_list("seq", flat=True)) == [1, 2, 3, 4, 5]
    run.refresh_from_db()
    assert run.last_seq == 5 and run.facets == {"a": [1, {"b": None}]}


@pytest.mark.parametrize("fence", [{"lease_token": 6}, {"statuses": ["queued"]}, {"statuses": []}])
def test_a_write_that_fails_the_fence_changes_nothing(run, fence):
    with pytest.raises(Fenced):
        write(run, 2, run_updates={"status": "failed"}, **fence)

    run.refresh_from_db()
    assert (run.last_seq, run.status) == (0, "running")
    assert not RunEvent.objects.filter(run=run).exists()


def test_an_expression_in_the_updates_takes_the_orm_path_and_numbers_the_same(run):
    write(run, 1)
    write(run, 2, lease_token=7, run_updates={"lease_token": F("lease_token") + 1})

    run.refresh_from_db()
    assert run.lease_token == 8 and run.last_seq == 3
    assert list(RunEvent.objects.filter(run=run).values_list("seq", flat=True)) == [1, 2, 3]


def test_a_status_change_the_transition_table_forbids_changes_nothing(client_user):
    waiting = Run.objects.create(objective="o", envelope={}, created_by=client_user, status="awaiting_hitl")

    with pytest.raises(Fenced):
        write(waiting, 1, statuses=["awaiting_hitl"], run_updates={"status": "paused"})

    waiting.refresh_from_db()
    assert (waiting.status, waiting.last_seq) == ("awaiting_hitl", 0)
    assert not RunEvent.objects.filter(run=waiting).exists()
