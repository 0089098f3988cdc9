"""Notifications: webhooks and email through one durable outbox
(API.md, Governance: Notifications; docs/notifications.md).

1. **Written with the event.** `runs.transitions.run_transition` — the one
   writer of events — calls `enqueue(rows)` in the same transaction: one
   `Notification` row per (active subscription that wants the event type,
   event), and one email row per `hitl_request` / `hitl_escalated` whose
   assignees (or escalation targets) have an email address. A rolled-back
   transaction leaves no notification; a committed event always has its
   rows. Events of other types cost nothing; that there is no active
   subscription is cached per process (invalidated at once in the process
   that adds one, after `SUBSCRIPTION_CACHE_SECONDS` elsewhere); when there
   are some, they are read in the event's transaction.
2. **Redacted once.** The message body is the event as SSE shows it
   (`runs.events.event_frame`: the same redaction), wrapped as
   `{"type", "timestamp", "data"}`; no secret is ever stored in the outbox.
3. **Delivered by the workers.** A `Notifier` thread in every worker process
   (and beside the embedded workers) claims due rows — `SELECT … FOR UPDATE
   SKIP LOCKED` on PostgreSQL, the serialized transaction on SQLite — by
   moving their `next_attempt_at` forward by a claim period, so a crashed
   deliverer's rows come due again by themselves. Each attempt is recorded
   (`NotificationAttempt`: outcome, response code, error, duration).
4. **Retries.** Exponential backoff with jitter from
   `FLEX_NOTIFY_FIRST_RETRY_SECONDS`, capped at
   `FLEX_NOTIFY_MAX_RETRY_SECONDS`, until `FLEX_NOTIFY_GIVE_UP_SECONDS`
   (24 h) after the event; then `failed`.
5. **Webhooks** are signed per Standard Webhooks (`standardwebhooks`):
   `webhook-id` (the row id, the same on every retry), `webhook-timestamp`,
   `webhook-signature`. The SSRF guard resolves the host once, refuses
   loopback, private, link-local, reserved, multicast and unspecified
   addresses (unless `FLEX_WEBHOOK_ALLOW_PRIVATE`), connects to that very
   address (no second resolution), sends the original `Host` and TLS SNI,
   follows no redirect (a 3xx is a failed attempt) and times out.
6. **Email** goes through Django's email backend (`EMAIL_BACKEND`).
"""
from __future__ import annotations

import ipaddress
import json
import logging
import random
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterable
from urllib.parse import urlsplit, urlunsplit

import httpx
from django.conf import settings
from django.core.mail import send_mail
from django.db import close_old_connections, transaction
from django.db.models.signals import post_delete, post_save
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from flexagents.ids import new_id
from runs.events import PendingEvent
from runs.models import (EMAILED_EVENT_TYPES, NOTIFIABLE_EVENT_TYPES, Notification, NotificationAttempt,
                         NotificationChannel, NotificationStatus, RunEvent, WebhookSubscription)

logger = logging.getLogger("runs.notifications")

SUBSCRIPTION_CACHE_SECONDS = 5.0
CLAIM_BATCH = 20
USER_AGENT = "FlexAgents-Webhooks/1"

# --- 1. the outbox, written with the events -----------------------------------------------

_cache_lock = threading.Lock()
_cache: dict[str, Any] = {"at": float("-inf"), "subscriptions": []}


def _read_subscriptions() -> list[tuple[int, frozenset[str]]]:
    return [(pk, frozenset(types or [])) for pk, types in
            WebhookSubscription.objects.filter(active=True).values_list("pk", "event_types")]


def active_subscriptions() -> list[tuple[int, frozenset[str]]]:
    """(id, event types) of the active subscriptions. The cache only answers
    "there are none" (the common case costs no query); when there are some,
    they are read in the caller's transaction, so a subscription deleted or
    disabled a moment ago in another process gets no row."""
    now = time.monotonic()
    with _cache_lock:
        fresh = now - _cache["at"] < SUBSCRIPTION_CACHE_SECONDS
        if fresh and not _cache["subscriptions"]:
            return []
    rows = _read_subscriptions()
    with _cache_lock:
        _cache.update(at=now, subscriptions=rows)
    return rows


def invalidate_subscriptions(**_: Any) -> None:
    with _cache_lock:
        _cache["at"] = float("-inf")


post_save.connect(invalidate_subscriptions, sender=WebhookSubscription, dispatch_uid="webhook-subscriptions-saved")
post_delete.connect(invalidate_subscriptions, sender=WebhookSubscription,
                    dispatch_uid="webhook-subscriptions-deleted")


def message_body(row: RunEvent) -> dict[str, Any]:
    """What a receiver gets: `{"type", "timestamp", "data"}`, `data` being the
    event exactly as an SSE frame carries it (redacted)."""
    from runs.events import event_frame

    frame = event_frame(row)
    return {"type": row.type, "timestamp": frame["timestamp"], "data": frame}


def email_recipients(row: RunEvent) -> list[str]:
    """The addresses told about a `hitl_request` (its assignees) or a
    `hitl_escalated` (its `escalateTo` people), read from the event itself
    (the request row may be written after its event, in the same
    transaction): users named or in a named group, active, with an email
    address — as `hitl.services.hitl_recipients` chooses them."""
    from hitl.services import people_users

    payload = row.payload or {}
    people = payload.get("escalateTo") if row.type == "hitl_escalated" else payload.get("assignees")
    return sorted({user.email for user in people_users(people or {}) if user.email})


def may_notify(events: Iterable[PendingEvent]) -> bool:
    """Whether any of these events is of a type that notifications follow
    (its step then writes its outbox rows in the events' transaction)."""
    return any(event.type in NOTIFIABLE_EVENT_TYPES for event in events)


def needs_outbox(events: Iterable[PendingEvent]) -> bool:
    """Whether these events may get outbox rows: some are notifiable, and
    either emailed or followed by an active subscription
    (`active_subscriptions`: no query while the cache knows there are none).
    A commit whose events need none is one statement, without a transaction
    of its own. Like the cache, a subscription created a moment ago may miss
    an event committed meanwhile."""
    notifiable = [event for event in events if event.type in NOTIFIABLE_EVENT_TYPES]
    if not notifiable:
        return False
    return any(_names_people(event) for event in notifiable) or bool(active_subscriptions())


def _names_people(event: PendingEvent) -> bool:
    """Whether an emailed event names anyone to email (`email_recipients`
    finds nobody, without a query, when it names no user and no group)."""
    if event.type not in EMAILED_EVENT_TYPES:
        return False
    payload = event.payload or {}
    people = payload.get("escalateTo") if event.type == "hitl_escalated" else payload.get("assignees")
    return isinstance(people, dict) and bool(people.get("users") or people.get("groups"))


def enqueue(rows: Iterable[RunEvent]) -> list[Notification]:
    """In the events' transaction: the outbox rows of the notifiable events."""
    notifiable = [row for row in rows if row.type in NOTIFIABLE_EVENT_TYPES]
    if not notifiable:
        return []
    subscriptions = active_subscriptions()
    now = timezone.now()
    out: list[Notification] = []
    for row in notifiable:
        wanted = [pk for pk, types in subscriptions if row.type in types]
        recipients = email_recipients(row) if row.type in EMAILED_EVENT_TYPES else []
        if not wanted and not recipients:
            continue
        body = message_body(row)
        common = {"run_id": row.run_id, "event_type": row.type, "event_seq": row.seq, "body": body,
                  "next_attempt_at": now, "created_at": now}
        out += [Notification(id=new_id("msg"), channel=NotificationChannel.WEBHOOK, subscription_id=pk, **common)
                for pk in wanted]
        if recipients:
            out.append(Notification(id=new_id("msg"), channel=NotificationChannel.EMAIL, recipients=recipients,
                                    **common))
    if out:
        Notification.objects.bulk_create(out)
        transaction.on_commit(wake_notifiers)
    return out


# --- 2. retry schedule ----------------------------------------------------------------------

def retry_delay(attempts: int) -> float:
    """Seconds before the attempt after `attempts` failed ones: exponential
    from FLEX_NOTIFY_FIRST_RETRY_SECONDS, capped, with ±20 % jitter."""
    first = settings.FLEX_NOTIFY_FIRST_RETRY_SECONDS
    base = min(first * (2 ** max(attempts - 1, 0)), settings.FLEX_NOTIFY_MAX_RETRY_SECONDS)
    return float(base * random.uniform(0.8, 1.2))


def claim_seconds() -> float:
    """How long a claimed row stays out of other deliverers' reach."""
    return settings.FLEX_WEBHOOK_TIMEOUT_SECONDS * 3 + 30


# --- 3. the SSRF guard and one webhook attempt -------------------------------------------------

class Refused(Exception):
    """The target may not be called (a private address, a bad URL)."""


@dataclass
class Outcome:
    ok: bool
    response_code: int | None = None
    error: str = ""
    refused: bool = False


def _forbidden(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return bool(address.is_loopback or address.is_private or address.is_link_local or address.is_reserved
                or address.is_multicast or address.is_unspecified or not address.is_global)


def resolve_target(url: str, *, allow_private: bool) -> tuple[str, str, int, str]:
    """(scheme, host, port, ip) of a webhook URL, the host resolved once;
    `Refused` for a URL we do not call or an address the guard forbids."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refused(f"not an http(s) URL: {url!r}")
    if parts.username or parts.password:
        raise Refused("credentials in the URL are not allowed")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OSError(f"cannot resolve {parts.hostname}: {exc}") from exc  # retried: DNS may come back
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not allow_private:
        bad = [str(a) for a in addresses if _forbidden(a)]
        if bad:
            raise Refused(f"{parts.hostname} resolves to a non-public address ({', '.join(bad)}); "
                          "set FLEX_WEBHOOK_ALLOW_PRIVATE=1 to allow it")
    return parts.scheme, parts.hostname, port, str(addresses[0])


def send_webhook(*, url: str, secret: str, msg_id: str, body: dict[str, Any],
                 allow_private: bool | None = None, timeout: float | None = None) -> Outcome:
    """One signed POST of `body` to `url` (the caller records the outcome)."""
    allow = settings.FLEX_WEBHOOK_ALLOW_PRIVATE if allow_private is None else allow_private
    seconds = settings.FLEX_WEBHOOK_TIMEOUT_SECONDS if timeout is None else timeout
    try:
        scheme, host, port, ip = resolve_target(url, allow_private=allow)
    except Refused as exc:
        return Outcome(ok=False, error=str(exc), refused=True)
    except OSError as exc:
        return Outcome(ok=False, error=str(exc))
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    stamp = timezone.now()
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(stamp.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id=msg_id, timestamp=stamp, data=data),
    }
    parts = urlsplit(url)
    default_port = (scheme == "https" and port == 443) or (scheme == "http" and port == 80)
    headers["host"] = host if default_port else f"{host}:{port}"
    literal = f"[{ip}]" if ":" in ip else ip
    target = urlunsplit((scheme, f"{literal}:{port}", parts.path or "/", parts.query, ""))
    extensions = {"sni_hostname": host} if scheme == "https" else {}
    try:
        with httpx.Client(timeout=httpx.Timeout(seconds), follow_redirects=False, trust_env=False) as client:
            response = client.post(target, content=data.encode(), headers=headers, extensions=extensions)
    except httpx.HTTPError as exc:
        return Outcome(ok=False, error=f"{type(exc).__name__}: {exc}"[:2000])
    if 200 <= response.status_code < 300:
        return Outcome(ok=True, response_code=response.status_code)
    reason = "redirects are not followed" if 300 <= response.status_code < 400 else "not a 2xx answer"
    return Outcome(ok=False, response_code=response.status_code, error=f"HTTP {response.status_code}: {reason}")


def send_email(*, recipients: list[str], body: dict[str, Any]) -> Outcome:
    """One email (Django's email backend) about a request or its escalation."""
    data = body.get("data") or {}
    payload = data.get("payload") or {}
    escalated = body.get("type") == "hitl_escalated"
    question = str(payload.get("question") or "")
    subject = ("Escalated: " if escalated else "Decision needed: ") + (question or data.get("runId", ""))
    lines = [
        "A request on Flex Agents is waiting for a person." if not escalated
        else "A request on Flex Agents was escalated to you.",
        "",
        f"Run: {data.get('runId')}",
        f"Request: {payload.get('requestId')}",
    ]
    if question:
        lines.append(f"Question: {question}")
    if payload.get("kind"):
        lines.append(f"Kind: {payload.get('kind')}")
    if payload.get("urgency"):
        lines.append(f"Urgency: {payload.get('urgency')}")
    base = getattr(settings, "FLEX_PUBLIC_URL", "") or ""
    if base:
        lines.append(f"Inbox: {base.rstrip('/')}/console/hitl")
    try:
        send_mail(subject[:200], "\n".join(lines), None, recipients, fail_silently=False)
    except Exception as exc:  # noqa: BLE001 — any backend failure is a failed attempt, retried
        return Outcome(ok=False, error=f"{type(exc).__name__}: {exc}"[:2000])
    return Outcome(ok=True)


# --- 4. claiming and delivering --------------------------------------------------------------

def claim_due(*, limit: int = CLAIM_BATCH, now: datetime | None = None) -> list[Notification]:
    """Claim due rows: each is ours until `claim_seconds()` from now."""
    now = now or timezone.now()
    until = now + timedelta(seconds=claim_seconds())
    due = Notification.objects.filter(status=NotificationStatus.PENDING, next_attempt_at__lte=now)
    if not due.exists():
        # An index read, no transaction: an idle poll takes no write lock (SQLite's BEGIN IMMEDIATE would).
        return []
    with transaction.atomic():
        rows = list(Notification.objects.select_for_update(skip_locked=True)
                    .filter(status=NotificationStatus.PENDING, next_attempt_at__lte=now)
                    .order_by("next_attempt_at")[:limit])
        claimed = []
        for row in rows:
            # Conditional: on SQLite (no row locks) the serialized transaction makes it exact too.
            if Notification.objects.filter(pk=row.pk, status=NotificationStatus.PENDING,
                                           next_attempt_at=row.next_attempt_at).update(next_attempt_at=until):
                claimed.append(row)
    return claimed


def deliver(row: Notification) -> Outcome:
    """One attempt of a claimed row; records it and schedules what follows."""
    from runs import metrics

    started = timezone.now()
    clock = time.monotonic()
    if row.channel == NotificationChannel.EMAIL:
        outcome = send_email(recipients=list(row.recipients or []), body=row.body)
    else:
        subscription = (WebhookSubscription.objects.filter(pk=row.subscription_id).first()
                        if row.subscription_id is not None else None)
        if subscription is None:
            outcome = Outcome(ok=False, error="the subscription was deleted", refused=True)
        else:
            outcome = send_webhook(url=subscription.url, secret=subscription.secret, msg_id=row.id, body=row.body)
    duration_ms = (time.monotonic() - clock) * 1000
    now = timezone.now()
    number = row.attempts + 1
    give_up_at = row.created_at + timedelta(seconds=settings.FLEX_NOTIFY_GIVE_UP_SECONDS)
    updates: dict[str, Any] = {"attempts": number, "last_error": outcome.error}
    if outcome.ok:
        updates.update(status=NotificationStatus.DELIVERED, delivered_at=now)
        label = "delivered"
    else:
        next_at = now + timedelta(seconds=retry_delay(number))
        if next_at > give_up_at:
            updates["status"] = NotificationStatus.FAILED
            label = "failed"
        else:
            updates["next_attempt_at"] = next_at
            label = "retry"
        if outcome.refused:
            label = "refused"
    with transaction.atomic():
        NotificationAttempt.objects.create(notification=row, number=number, started_at=started,
                                           duration_ms=round(duration_ms, 3), ok=outcome.ok,
                                           response_code=outcome.response_code, error=outcome.error)
        Notification.objects.filter(pk=row.pk, status=NotificationStatus.PENDING).update(**updates)
    metrics.notification_attempt(channel=row.channel, outcome=label)
    log = logger.info if outcome.ok else logger.warning
    log("notification attempt", extra={"notification_id": row.id, "channel": row.channel, "run_id": row.run_id,
                                       "event_type": row.event_type, "attempt": number, "outcome": label,
                                       "response_code": outcome.response_code, "error": outcome.error[:300]})
    return outcome


def deliver_due(*, limit: int = CLAIM_BATCH) -> int:
    """Claim and attempt due notifications once; returns how many."""
    rows = claim_due(limit=limit)
    for row in rows:
        try:
            deliver(row)
        except Exception:  # noqa: BLE001 — the claim expires and the row is retried
            logger.exception("notification delivery crashed", extra={"notification_id": row.id})
            close_old_connections()
    return len(rows)


def prune_notifications(*, now: datetime | None = None, batch: int = 1000) -> int:
    """Delete delivered and failed notifications (and their attempts) older
    than `FLEX_NOTIFY_KEEP_DAYS`; pending ones are never deleted."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.FLEX_NOTIFY_KEEP_DAYS)
    total = 0
    while True:
        ids = list(Notification.objects.filter(created_at__lt=cutoff).exclude(status=NotificationStatus.PENDING)
                   .values_list("pk", flat=True)[:batch])
        if not ids:
            return total
        Notification.objects.filter(pk__in=ids).delete()
        total += len(ids)


# --- 5. the deliverer thread -----------------------------------------------------------------

_notifiers: list["Notifier"] = []
_notifiers_lock = threading.Lock()


def wake_notifiers() -> None:
    for notifier in list(_notifiers):
        notifier.wake()


class Notifier:
    """Delivers due notifications until stopped, one per worker process;
    every minute also prunes expired idempotency keys and old notifications."""

    PRUNE_EVERY_SECONDS = 60.0

    def __init__(self, *, poll_seconds: float | None = None) -> None:
        self.poll_seconds = poll_seconds if poll_seconds is not None else settings.FLEX_NOTIFY_POLL_SECONDS
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._last_prune = float("-inf")
        self.thread: threading.Thread | None = None

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def start(self) -> "Notifier":
        with _notifiers_lock:
            _notifiers.append(self)
        self.thread = threading.Thread(target=self.run_forever, name="flex-notifier", daemon=True)
        self.thread.start()
        return self

    def housekeeping(self) -> None:
        from flexagents.idempotency import prune_idempotency_keys

        if time.monotonic() - self._last_prune >= self.PRUNE_EVERY_SECONDS:
            self._last_prune = time.monotonic()
            pruned = prune_idempotency_keys()
            old = prune_notifications()
            if pruned or old:
                logger.info("housekeeping", extra={"idempotency_keys_pruned": pruned, "notifications_pruned": old})

    def run_forever(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    worked = deliver_due()
                    self.housekeeping()
                except Exception:  # noqa: BLE001 — the database may be away for a moment
                    logger.exception("notifier step failed")
                    close_old_connections()
                    worked = 0
                if not worked and not self._stopping.is_set():
                    self._wake.wait(self.poll_seconds)
                    self._wake.clear()
        finally:
            with _notifiers_lock:
                if self in _notifiers:
                    _notifiers.remove(self)
            from django.db import connection

            connection.close()
