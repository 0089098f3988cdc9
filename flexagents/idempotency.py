"""`Idempotency-Key` on state-changing POSTs (API.md, Governance: Idempotency).

Applying it to a view is one line — decorate the handler:

    class RunCancelApi(FlexApiView):
        @idempotent
        def post(self, request, run_id): ...

What it does, for a request that carries the header (without it: nothing):

1. The key must be 1-255 printable ASCII characters, else `422
   idempotency_key_invalid`.
2. One transaction wraps the lookup, the handler (the services' own
   `atomic` blocks become savepoints) and the row that records the response:
   the key is stored if and only if the change it made is committed.
3. Concurrency. PostgreSQL: `pg_try_advisory_xact_lock` on (user, key) is
   the in-progress marker — a second request with the key while the first
   is executing gets `409 idempotency_in_progress` at once; the lock belongs
   to the transaction, so a crashed process (its connection gone) never
   leaves a key stuck. The unique index (user, key) is the backstop.
   SQLite: transactions are serialized (`BEGIN IMMEDIATE`), so a second
   request waits for the first to commit (up to the database timeout, 20 s)
   and then replays its response; nothing can be left in progress.
4. A stored key with the same fingerprint (method, path, canonical JSON
   body) replays the stored status and body with `Idempotent-Replayed:
   true`; a different fingerprint is `422 idempotency_key_reused`.
5. Errors are not stored: a 4xx/5xx made no change (its transaction rolled
   back), so the same key may be retried — after fixing the body too. Only
   2xx responses are recorded and replayed (unlike Stripe, which also saves
   errors of requests that started executing), with one exception: an error
   response the view marks `idempotent_committed` did change state and is
   committed, recorded and replayed like a success (a task completion whose
   output failed its contract: the attempt is counted).
6. Keys are kept `FLEX_IDEMPOTENCY_TTL_SECONDS` (24 h): older ones are
   ignored and deleted by the workers' sweep (`prune_idempotency_keys`).

A streaming response (SSE) cannot be replayed byte for byte: the view sets
`response.idempotent_record = (status, body)` — what a retry should get
(e.g. the 202 JSON form with the stream URL to reconnect to).
"""
from __future__ import annotations

import functools
import hashlib
import json
import re
import struct
from datetime import timedelta
from typing import Any, Callable, TypeVar

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from flexagents.errors import IdempotencyInProgress, IdempotencyKeyInvalid, IdempotencyKeyReused
from flexagents.models import IdempotencyKey

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
_VALID_KEY = re.compile(r"^[\x20-\x7e]{1,255}$")

Handler = TypeVar("Handler", bound=Callable[..., Any])


def ttl() -> timedelta:
    return timedelta(seconds=getattr(settings, "FLEX_IDEMPOTENCY_TTL_SECONDS", 24 * 3600))


def idempotency_key(request: Request) -> str | None:
    """The request's key, None without the header; invalid → 422."""
    raw: str | None = request.META.get("HTTP_IDEMPOTENCY_KEY")
    if raw is None:
        return None
    if not _VALID_KEY.match(raw):
        raise IdempotencyKeyInvalid(details={"errors": [{"path": "/headers/Idempotency-Key",
                                                         "message": "expected 1-255 printable ASCII characters"}]})
    return raw


def request_fingerprint(request: Request) -> str:
    """sha256 of the method, the path and the body as canonical JSON."""
    data = request.data
    if hasattr(data, "lists"):  # a QueryDict (no body, or a form)
        data = {k: v for k, v in data.lists()}
    canonical = json.dumps({"method": request.method, "path": request.path, "body": data}, sort_keys=True,
                           separators=(",", ":"), cls=DjangoJSONEncoder, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def _try_lock(user_id: int, key: str) -> bool:
    """PostgreSQL: the transaction-scoped advisory lock of (user, key)."""
    if connection.vendor != "postgresql":
        return True  # SQLite: BEGIN IMMEDIATE already serialized this transaction
    digest = hashlib.sha256(f"idempotency:{user_id}:{key}".encode()).digest()
    (lock_id,) = struct.unpack(">q", digest[:8])
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [lock_id])
        return bool(cursor.fetchone()[0])


def _replay(row: IdempotencyKey) -> Response:
    return Response(row.body, status=row.status_code, headers={REPLAYED_HEADER: "true"})


def _record(response: Any) -> tuple[int, Any]:
    record = getattr(response, "idempotent_record", None)
    if record is not None:
        status, body = record
    elif isinstance(response, Response):
        status, body = response.status_code, response.data
    else:
        raise ImproperlyConfigured("an @idempotent view returned a response without data: set "
                                   "response.idempotent_record = (status, body)")
    # What the client got, as JSON (datetimes, decimals and lazy strings encoded once).
    return int(status), json.loads(json.dumps(body, cls=DjangoJSONEncoder))


def idempotent(handler: Handler) -> Handler:
    """Decorate a DRF view handler (`post`) to honour `Idempotency-Key`."""

    @functools.wraps(handler)
    def wrapper(view: Any, request: Request, *args: Any, **kwargs: Any) -> Any:
        key = idempotency_key(request)
        user: Any = request.user
        if key is None or not getattr(user, "is_authenticated", False):
            return handler(view, request, *args, **kwargs)
        fingerprint = request_fingerprint(request)
        with transaction.atomic():
            if not _try_lock(user.pk, key):
                raise IdempotencyInProgress(details={"key": key})
            now = timezone.now()
            row = IdempotencyKey.objects.filter(user=user, key=key).first()
            if row is not None and row.created_at < now - ttl():
                row.delete()  # expired, not yet pruned: the key is free again
                row = None
            if row is not None:
                if row.fingerprint != fingerprint:
                    raise IdempotencyKeyReused(details={"key": key, "firstPath": row.path})
                # A replay is JSON, even of a request that asked for an event stream.
                request.accepted_renderer = JSONRenderer()
                request.accepted_media_type = "application/json"
                return _replay(row)
            response = handler(view, request, *args, **kwargs)
            if response.status_code >= 400 and not getattr(response, "idempotent_committed", False):
                transaction.set_rollback(True)  # an error response is not recorded (see module docstring)
                return response
            status, body = _record(response)
            try:
                with transaction.atomic():
                    IdempotencyKey.objects.create(user=user, key=key, fingerprint=fingerprint,
                                                  method=request.method or "", path=request.path[:512],
                                                  status_code=status, body=body, created_at=now)
            except IntegrityError:
                # Another request with the key committed meanwhile (only without the lock):
                # this one's change rolls back.
                raise IdempotencyInProgress(details={"key": key}) from None
            return response

    wrapper.idempotent = True  # type: ignore[attr-defined]  # read by flexagents.openapi
    return wrapper  # type: ignore[return-value]


def prune_idempotency_keys(*, now: Any = None, batch: int = 1000) -> int:
    """Delete keys older than the TTL; returns how many."""
    cutoff = (now or timezone.now()) - ttl()
    total = 0
    while True:
        ids = list(IdempotencyKey.objects.filter(created_at__lt=cutoff).values_list("pk", flat=True)[:batch])
        if not ids:
            return total
        total += IdempotencyKey.objects.filter(pk__in=ids).delete()[0]
