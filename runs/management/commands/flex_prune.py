"""`manage.py flex_prune --older-than 30d [--status completed,failed,cancelled] [--dry-run]`

Deletes the events, node inputs and latest snapshot of terminal runs that
ended longer ago than `--older-than`; keeps the run row, its output and its
audit trail. Safe while the system works (short batched statements; only
terminal runs). Schedule: docs/runbook.md.
"""
from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from runs.models import TERMINAL_STATUSES
from runs.retention import run_data_prune

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_age(text: str) -> timedelta:
    match = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", text or "")
    if not match:
        raise CommandError(f"--older-than takes a number and a unit (s, m, h, d, w), e.g. 30d; got {text!r}")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


class Command(BaseCommand):
    help = "Delete old terminal runs' events, node inputs and snapshots (keeps runs, outputs and audit)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--older-than", required=True, help="age of the runs to prune, e.g. 30d, 12h, 90m")
        parser.add_argument("--status", default="completed,failed,cancelled",
                            help="comma-separated terminal statuses (default: completed,failed,cancelled)")
        parser.add_argument("--dry-run", action="store_true", help="print what would be deleted, delete nothing")
        parser.add_argument("--batch-size", type=int, default=200, help="runs per batch (default 200)")

    def handle(self, *args: Any, **options: Any) -> None:
        age = parse_age(options["older_than"])
        statuses = [s.strip() for s in options["status"].split(",") if s.strip()]
        unknown = sorted(set(statuses) - set(TERMINAL_STATUSES))
        if not statuses or unknown:
            raise CommandError(f"--status takes terminal statuses only ({', '.join(sorted(TERMINAL_STATUSES))}); "
                               f"got {', '.join(unknown) or 'nothing'}")
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1")
        before = timezone.now() - age
        counts = run_data_prune(before=before, statuses=statuses, dry_run=options["dry_run"],
                                batch_size=options["batch_size"])
        verb = "would prune" if options["dry_run"] else "pruned"
        self.stdout.write(f"{verb} {counts.runs} runs ended before {before.isoformat(timespec='seconds')} "
                          f"({', '.join(statuses)}): {counts.events} events, {counts.node_inputs} node inputs, "
                          f"{counts.snapshots} snapshots")
