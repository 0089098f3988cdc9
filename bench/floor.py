"""The database's floor: what one transaction of three small writes costs on
this machine, now, on the engine's own connection.

One transaction of an UPDATE of a run row, an INSERT of an event row and an
INSERT of a ~600-byte JSON row (an audit entry), measured two ways on the
same connection:

- `driver`: straight on the driver's connection (psycopg with the same
  client-side cursor Django uses, or sqlite3): BEGIN, three statements,
  COMMIT. This is THE floor every engine figure is divided by.
- `django`: the same through Django's cursor and `transaction.atomic()`, to
  show what the framework adds.

The engine benchmark measures it in every round, interleaved with the engine
figures, so the machine's load of the moment mostly cancels out of the
ratios."""
from __future__ import annotations

import json
import statistics
import time
from typing import Any


def _statements(connection: Any, placeholder: str) -> tuple[str, str, str]:
    from runs.models import AuditEntry, Run, RunEvent

    qn = connection.ops.quote_name

    def marks(n: int) -> str:
        return ", ".join([placeholder] * n)

    update = (f"UPDATE {qn(Run._meta.db_table)} SET {qn('updated_at')} = {placeholder}, "
              f"{qn('last_seq')} = {qn('last_seq')} + 1 WHERE {qn('id')} = {placeholder}")
    event = (f"INSERT INTO {qn(RunEvent._meta.db_table)} ({qn('run_id')}, {qn('seq')}, {qn('type')}, "
             f"{qn('node_id')}, {qn('plan_version')}, {qn('payload')}, {qn('created_at')}) VALUES ({marks(7)})")
    audit = (f"INSERT INTO {qn(AuditEntry._meta.db_table)} ({qn('run_id')}, {qn('action')}, {qn('actor_display')}, "
             f"{qn('plan_version')}, {qn('details')}, {qn('created_at')}) VALUES ({marks(6)})")
    return update, event, audit


class Floor:
    """Measures the floor on Django's default connection (set up once)."""

    def __init__(self) -> None:
        from bench.common import bench_user
        from runs.models import Run

        # Created finished, so no worker ever claims it.
        self.run = Run.objects.create(objective="floor", envelope={}, created_by=bench_user(), status="completed")
        self.seq = 0
        self.details = json.dumps({"note": "x" * 560, "n": 1})  # ≈ 600 B

    def _params(self) -> tuple[list[Any], list[Any], list[Any]]:
        from datetime import datetime, timezone

        self.seq += 1
        now = datetime.now(timezone.utc)
        return ([now, self.run.id],
                [self.run.id, self.seq, "log", "", 1, '{"level": "info", "message": "floor"}', now],
                [self.run.id, "floor", "bench", 1, self.details, now])

    def driver_once(self) -> float:
        from django.db import connection

        connection.ensure_connection()
        raw = connection.connection
        if connection.vendor == "postgresql":
            sql = _statements(connection, "%s")
            started = time.perf_counter()
            with raw.transaction():
                for statement, params in zip(sql, self._params()):
                    raw.execute(statement, params)
            return (time.perf_counter() - started) * 1000
        sql = _statements(connection, "?")
        params = [[p.isoformat(sep=" ") if hasattr(p, "isoformat") else p for p in ps] for ps in self._params()]
        started = time.perf_counter()
        raw.execute("BEGIN")
        for statement, values in zip(sql, params):
            raw.execute(statement, values)
        raw.execute("COMMIT")
        return (time.perf_counter() - started) * 1000

    def django_once(self) -> float:
        from django.db import connection, transaction

        sql = _statements(connection, "%s")
        params = self._params()
        started = time.perf_counter()
        with transaction.atomic(), connection.cursor() as cursor:
            for statement, values in zip(sql, params):
                cursor.execute(statement, values)
        return (time.perf_counter() - started) * 1000

    def measure(self, rounds: int = 100) -> dict[str, float]:
        """Median milliseconds of `rounds` transactions each way (alternating)."""
        driver: list[float] = []
        django: list[float] = []
        for _ in range(rounds):
            driver.append(self.driver_once())
            django.append(self.django_once())
        return {"driver_ms": statistics.median(driver), "django_ms": statistics.median(django)}
