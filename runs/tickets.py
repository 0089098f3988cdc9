"""Stream tickets (API.md, "Stream tickets").

A browser's `EventSource` cannot send `Authorization`, and a long-lived
token in a URL ends up in proxy and server logs. So a client that may view a
run asks for a ticket (`POST …/runs/{runId}/stream-ticket`, authenticated as
usual) and opens `GET …/runs/{runId}/stream?ticket=…`:

1. the ticket is 256 random bits; only its SHA-256 is stored;
2. it is bound to the user who asked and to the run; valid
   `FLEX_STREAM_TICKET_SECONDS` (60 s);
3. it is spent by a conditional UPDATE (`used_at IS NULL`), so it opens one
   stream, even when two requests race with it;
4. an unknown, expired, spent or foreign ticket is `401 not_authenticated`
   (one message for all: the caller learns nothing about other tickets).

The `ticket` query parameter is masked in log lines by
`flexagents.redaction.redact_text`.
"""
from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from flexagents.authentication import BearerTokenAuthentication
from runs.models import StreamTicket
from runs.selectors import run_get_for_user

logger = logging.getLogger("runs.tickets")

TICKET_PARAM = "ticket"
_PREFIX = "st_"
# Spent and expired rows are kept this long (for the admin / debugging), then
# swept when their owner asks for a new ticket.
_KEEP = timedelta(hours=1)


def ticket_digest(ticket: str) -> str:
    return hashlib.sha256(ticket.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class IssuedTicket:
    ticket: str
    expires_at: datetime
    run_id: str


def stream_ticket_create(*, user: Any, run_id: str) -> IssuedTicket:
    """A new ticket for a run the user may view (else RunNotFound)."""
    run = run_get_for_user(user=user, run_id=run_id)
    now = timezone.now()
    StreamTicket.objects.filter(user=user, expires_at__lt=now - _KEEP).delete()
    ticket = _PREFIX + secrets.token_urlsafe(32)
    expires_at = now + timedelta(seconds=settings.FLEX_STREAM_TICKET_SECONDS)
    StreamTicket.objects.create(digest=ticket_digest(ticket), run=run, user=user, expires_at=expires_at)
    logger.info("stream ticket issued", extra={"run_id": run.id, "operator_id": user.pk,
                                               "action": "stream_ticket_issued"})
    return IssuedTicket(ticket=ticket, expires_at=expires_at, run_id=run.id)


def stream_ticket_redeem(*, ticket: str, run_id: str, presented_user: Any | None = None) -> Any:
    """Spend the ticket for this run; return its user.

    `presented_user` is whoever the request's other credentials name (a
    session cookie, a Bearer token): a ticket of someone else is refused.
    """
    now = timezone.now()
    candidates = StreamTicket.objects.filter(digest=ticket_digest(ticket), run_id=run_id, used_at__isnull=True,
                                             expires_at__gt=now).select_related("user")
    if presented_user is not None:
        candidates = candidates.filter(user_id=presented_user.pk)
    row = candidates.first()
    # The conditional UPDATE is what makes a ticket single-use under races.
    if row is None or not row.user.is_active or \
            StreamTicket.objects.filter(pk=row.pk, used_at__isnull=True).update(used_at=now) != 1:
        raise exceptions.AuthenticationFailed("The stream ticket is unknown, expired, already used, "
                                              "or not for this run.")
    logger.info("stream ticket redeemed", extra={"run_id": run_id, "operator_id": row.user_id,
                                                 "action": "stream_ticket_redeemed"})
    return row.user


class StreamTicketAuthentication(BaseAuthentication):
    """`?ticket=` on a run's stream. Without the parameter it steps aside and
    the usual authenticators (Bearer, session) run."""

    def authenticate(self, request: Request) -> tuple[Any, None] | None:
        ticket = request.query_params.get(TICKET_PARAM)
        if ticket is None:
            return None
        run_id = (request.parser_context or {}).get("kwargs", {}).get("run_id", "")
        user = stream_ticket_redeem(ticket=ticket, run_id=run_id, presented_user=self._presented_user(request))
        return user, None

    @staticmethod
    def _presented_user(request: Request) -> Any | None:
        bearer = BearerTokenAuthentication().authenticate(request)  # a bad Bearer token is a 401 anyway
        if bearer is not None:
            return bearer[0]
        session_user = getattr(request._request, "user", None)
        return session_user if session_user is not None and session_user.is_authenticated else None

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'
