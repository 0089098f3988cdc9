"""runs.streaming's catch-up read: a run that ends between the read of its
status and the read of its events never looks ended with nothing to send."""
from __future__ import annotations

from typing import Any

import pytest
from django.db import connection, transaction

from runs import events as ev
from runs import streaming
from runs.models import TERMINAL_STATUSES
from runs.transitions import run_transition
from tests.conftest import load_envelope
from tests.hitl.helpers import submit

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_run_ending_between_the_two_reads_is_read_with_its_last_events(api_for, client_user):
    run_id = submit(api_for(client_user), load_envelope("unsatisfiable-output"))
    ended = []

    def end_the_run_after_the_first_read(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        result = execute(sql, params, many, context)
        # After whichever of the two reads comes first: the events, or the status.
        if not ended and sql.lstrip().upper().startswith("SELECT") and (
                '"runs_runevent"' in sql or '"runs_run"."status"' in sql):
            ended.append(sql)
            # Another process commits the run's end right now.
            with transaction.atomic():
                run_transition(run_id=run_id, to="failed", expect=["queued"], plan_version=0,
                               events=[ev.event_complete(status="failed", error={"code": "x", "message": "x"})])
        return result

    with connection.execute_wrapper(end_the_run_after_the_first_read):
        events, status = streaming._read_events_sync(run_id, 0, 100)
    assert ended
    assert status not in TERMINAL_STATUSES or [e.type for e in events] == ["complete"], (status, events)
