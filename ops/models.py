"""Operations data: one heartbeat row per worker (thread) of any process."""
from __future__ import annotations

from django.db import models


class WorkerHeartbeat(models.Model):
    """A worker's "I am alive": written by its loop (throttled), read by
    `/api/ready` and the metrics. Rows of stopped workers simply go stale and
    are deleted a day later by the next heartbeat of any worker."""

    worker_id = models.CharField(max_length=120, unique=True)
    started_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()

    class Meta:
        indexes = [
            # "Is any worker fresh?" reads the newest heartbeat.
            models.Index(fields=["-last_seen_at"], name="worker_heartbeat_seen_idx"),
        ]

    def __str__(self) -> str:
        return self.worker_id
