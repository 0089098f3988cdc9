"""Retention: prune old runs' bulky data, keep what tells their story."""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime

from django.db.models import Exists, OuterRef, Q

from runs.models import TERMINAL_STATUSES, NodeRun, Run, RunEvent, RunFacet

logger = logging.getLogger("runs.retention")

# Rows deleted per statement: each statement is its own short transaction, so
# no lock is held long enough to stall workers, streams or the API.
EVENT_CHUNK = 1000


@dataclass
class PruneCounts:
    runs: int = 0
    events: int = 0
    node_inputs: int = 0
    snapshots: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _old_runs(*, before: datetime, statuses: Iterable[str]) -> "Q":
    # A terminal run's age is its completion time; runs finished before
    # completed_at existed fall back to their last update.
    return (Q(status__in=list(statuses))
            & (Q(completed_at__lt=before) | Q(completed_at__isnull=True, updated_at__lt=before)))


def _has_snapshot() -> Q:
    return (Q(has_snapshot=True) | ~Q(facets={}) | ~Q(provenance={}) | ~Q(pending_node_ids=[])
            | Exists(RunFacet.objects.filter(run_id=OuterRef("pk"))))


def run_data_prune(*, before: datetime, statuses: Iterable[str], dry_run: bool = False,
                   batch_size: int = 200) -> PruneCounts:
    """Delete the events, node inputs and latest snapshot of terminal runs
    that ended before `before`; keep the run row (status, envelope, output,
    error), its nodes' outputs, plan versions, HITL requests and responses,
    and its audit trail.

    1. Walk the matching runs by primary key, `batch_size` at a time (keyset
       pagination: no OFFSET, no long-lived cursor).
    2. Per batch, count (dry run) or delete events in chunks of EVENT_CHUNK
       rows, then clear node inputs and snapshots with one UPDATE each.
       Every statement commits on its own; terminal runs are never written
       by the engine, so nothing races with these writes.
    """
    statuses = list(statuses)
    if not set(statuses) <= set(TERMINAL_STATUSES):
        raise ValueError(f"only terminal runs can be pruned, not {sorted(set(statuses) - set(TERMINAL_STATUSES))}")
    counts = PruneCounts()
    matching = Run.objects.filter(_old_runs(before=before, statuses=statuses)).order_by("pk")
    last_pk = ""
    while True:
        batch = list(matching.filter(pk__gt=last_pk).values_list("pk", flat=True)[:batch_size])
        if not batch:
            return counts
        last_pk = batch[-1]
        events = RunEvent.objects.filter(run_id__in=batch)
        inputs = NodeRun.objects.filter(run_id__in=batch, input__isnull=False)
        snapshots = Run.objects.filter(pk__in=batch).filter(_has_snapshot())
        if dry_run:
            n_events, n_inputs, n_snapshots = events.count(), inputs.count(), snapshots.count()
            touched = set(events.values_list("run_id", flat=True).distinct())
            touched |= set(inputs.values_list("run_id", flat=True).distinct())
            touched |= set(snapshots.values_list("pk", flat=True))
        else:
            touched = set(events.values_list("run_id", flat=True).distinct())
            touched |= set(inputs.values_list("run_id", flat=True).distinct())
            touched |= set(snapshots.values_list("pk", flat=True))
            n_events = 0
            while True:
                ids = list(events.order_by("pk").values_list("pk", flat=True)[:EVENT_CHUNK])
                if not ids:
                    break
                n_events += RunEvent.objects.filter(pk__in=ids).delete()[0]
            n_inputs = inputs.update(input=None)
            # Terminal only, re-checked in the statement itself.
            cleared = list(snapshots.filter(status__in=statuses).values_list("pk", flat=True))
            RunFacet.objects.filter(run_id__in=cleared).delete()
            n_snapshots = Run.objects.filter(pk__in=cleared, status__in=statuses).update(
                facets={}, provenance={}, pending_node_ids=[], has_snapshot=False)
        counts.runs += len(touched)
        counts.events += n_events
        counts.node_inputs += n_inputs
        counts.snapshots += n_snapshots
        if not dry_run:
            logger.info("pruned a batch of runs", extra={"runs": len(touched), "events": n_events})
