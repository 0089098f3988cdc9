"""Run streams through Pushpin (GRIP), the proxy django-eventstream supports,
for very many followers (docs/deployment.md, "Very many clients").

With FLEX_GRIP_URL set, a stream request that comes through Pushpin (a
valid `Grip-Sig`) is not streamed by the web process: the view checks access
exactly as without Pushpin (401/404 before anything is held), replays the
events after Last-Event-ID from the event table, and answers with GRIP
instructions — hold the connection as a stream on channel `events-run-<id>`
(django-eventstream's channel naming) from that last id. Pushpin keeps the
connection; the web process keeps nothing.

Every process that commits events (worker or web) publishes each committed
frame once to Pushpin's publish endpoint, from a background thread fed after
commit (`notify.register_frame_sink`): the commit never waits for Pushpin.
The frames one transaction commits for a run (a node step commits
node_complete and the next node_start; planning several) go out as ONE
item: its http-stream content is their SSE frames concatenated, each still
its own `id:`/`event:`/`data:` frame, so a client reads exactly the bytes it
would read one item per frame, while Pushpin handles one message per
connection instead of one per event. Items that wait together in the
publisher's queue (Pushpin answered slowly) are merged the same way.

Nothing is lost: each published item carries `id` = the last seq it holds
and `prev-id` = the seq before its first — the previous item's id: a
transaction commits contiguous seqs of a run, and every position a hold or
Grip-Last names is the end of a committed transaction (a replay reads the
table to its end, and Pushpin only knows item ids). The hold names the
last id the client has. When an item does not follow the last id Pushpin
sent on a connection (a publish was dropped, or two processes published
out of order), Pushpin asks the web processes again — the hold's next link, with `Grip-Last: events-run-<id>;
last-id=<n>` — and the answer replays from the table and holds again. A lost
*last* publish is repaired by the same request after
FLEX_GRIP_RECOVER_SECONDS without events (the link's `timeout`). The next
link carries a signed token (the user and, for paging, the position) in its
path: Pushpin sends no Authorization on it, and shares concurrent requests
only when their path and Grip-Last are equal — the same user at the same
position, so a shared answer is always the right one. Every next-link answer
checks access again; a user who lost it gets a `stream-error` and the stream
ends.

A run that is terminal ends its held streams: after a `complete` frame the
publisher sends a `close` item.
"""
from __future__ import annotations

import http.client
import json
import logging
import re
import threading
import time
from collections import deque
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs, quote, urlparse

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import signing
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django_eventstream.utils import sse_encode_event

from runs import notify
from runs.events import COMPLETE, dumps, event_frame, event_id
from runs.models import TERMINAL_STATUSES, Run, RunEvent

logger = logging.getLogger("runs.grip")

READ_BATCH = 500
_SALT = "flex.grip.next"
# The next link is renewed with every answer; an old one is refused after this.
_TOKEN_MAX_AGE = 24 * 3600
_GRIP_LAST = re.compile(r"^\s*([^;\s]+)\s*;\s*last-id=([^;\s]*)\s*$")


# -- configuration -----------------------------------------------------------

@lru_cache(maxsize=4)
def _config(url: str | None, key: str | None) -> tuple[str, int, str, str | None, bool] | None:
    """(host, port, publish path, signature key, https) from FLEX_GRIP_URL."""
    if not url:
        return None
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"FLEX_GRIP_URL must be an http(s) URL, got {url!r}")
    query = parse_qs(parsed.query)
    if not key and query.get("key"):
        key = query["key"][0]
    https = parsed.scheme == "https"
    port = parsed.port or (443 if https else 80)
    path = parsed.path.rstrip("/") + "/publish/"
    return parsed.hostname, port, path, key, https


def config() -> tuple[str, int, str, str | None, bool] | None:
    return _config(settings.FLEX_GRIP_URL, settings.FLEX_GRIP_KEY)


def enabled() -> bool:
    return bool(settings.FLEX_GRIP_URL)


def grip_channel(run_id: str) -> str:
    """The GRIP channel of a run's stream: django-eventstream's `events-` +
    the quoted eventstream channel (`run-<id>`, runs.streaming.channel_for)."""
    return "events-" + quote(f"run-{run_id}")


def proxied(request: HttpRequest) -> bool:
    """Did this request come through Pushpin? Only with FLEX_GRIP_URL set and,
    when a key is configured (it should be), a valid Grip-Sig."""
    conf = config()
    sig = request.headers.get("Grip-Sig")
    if conf is None or not sig:
        return False
    key = conf[3]
    if key is None:
        return True  # no key configured: the web processes must be reachable only through Pushpin
    import jwt

    try:
        claim = jwt.decode(sig, key, algorithms=["HS256"], options={"require": ["exp"]})
    except jwt.PyJWTError:
        logger.warning("a request with an invalid Grip-Sig was not treated as coming through Pushpin")
        return False
    return isinstance(claim, dict)


# -- answers: replay, then hold ------------------------------------------------

def _next_path(run_id: str, user_pk: Any, after: int) -> str:
    token = signing.dumps({"u": user_pk, "a": after}, salt=f"{_SALT}.{run_id}", compress=True)
    return reverse("runs:run-stream-grip-next", kwargs={"run_id": run_id, "token": token})


def _frames_after(run_id: str, after: int) -> tuple[str | None, list[RunEvent]]:
    """The run's status, then the events after `after` (status first: once
    it is terminal, every event of the run is already in the table)."""
    status = Run.objects.filter(pk=run_id).values_list("status", flat=True).first()
    rows = list(RunEvent.objects.filter(run_id=run_id, seq__gt=after).order_by("seq")[:READ_BATCH])
    return status, rows


def encode_row(row: RunEvent) -> str:
    frame: str = sse_encode_event(row.type, dumps(event_frame(row)), event_id=event_id(row.run_id, row.seq))
    return frame


def hold_response(*, run_id: str, user: Any, after: int, first: bool) -> HttpResponse:
    """Replay after `after`, then hold (or page on, or end: terminal run)."""
    status, rows = _frames_after(run_id, after)
    body = ": stream open\n\n" if first else ""
    body += "".join(encode_row(row) for row in rows)
    last = rows[-1].seq if rows else after
    response = HttpResponse(body, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    next_path = _next_path(run_id, getattr(user, "pk", None), last)
    if len(rows) >= READ_BATCH:
        # More to replay: no hold yet; Pushpin asks the next page at once.
        response["Grip-Link"] = f"<{next_path}>; rel=next"
        return response
    if status is None or status in TERMINAL_STATUSES:
        return response  # everything is sent: the stream ends here
    keepalive = max(int(round(settings.FLEX_SSE_KEEPALIVE_SECONDS)), 1)
    response["Grip-Hold"] = "stream"
    response["Grip-Channel"] = f"{grip_channel(run_id)}; prev-id={last}"
    response["Grip-Link"] = f"<{next_path}>; rel=next; timeout={settings.FLEX_GRIP_RECOVER_SECONDS}"
    response["Grip-Keep-Alive"] = f": keep-alive\\n\\n; format=cstring; timeout={keepalive}"
    return response


def _forbidden() -> HttpResponse:
    return HttpResponse(sse_encode_event("stream-error", dumps({"condition": "forbidden",
                                                                "text": "Access to this run was revoked."})),
                        content_type="text/event-stream")


def next_view(request: HttpRequest, run_id: str, token: str) -> HttpResponse:
    """GET …/stream/grip/<token>: Pushpin's next link (recovery after a gap,
    the periodic check of an idle hold, the next page of a long replay). Only
    through Pushpin; the token says who follows and from where."""
    from flexagents.roles import user_may_view_run

    if not proxied(request):
        return HttpResponse(status=404)
    try:
        claim = signing.loads(token, salt=f"{_SALT}.{run_id}", max_age=_TOKEN_MAX_AGE)
    except signing.BadSignature:
        return HttpResponse(status=404)
    after = int(claim.get("a") or 0)
    channel = grip_channel(run_id)
    for value in request.headers.get("Grip-Last", "").split(","):
        match = _GRIP_LAST.match(value)
        if match and match.group(1) == channel and match.group(2).isdigit():
            after = int(match.group(2))
    user = get_user_model().objects.filter(pk=claim.get("u")).first()
    run = Run.objects.filter(pk=run_id).first()
    if user is None or run is None or not user_may_view_run(user, run):
        return _forbidden()
    return hold_response(run_id=run_id, user=user, after=after, first=False)


# -- publishing ---------------------------------------------------------------

# One item's content at most, in characters (a long transaction's frames
# are split, each part chained to the one before it).
ITEM_MAX_CHARS = 64 * 1024
# Pushpin refuses a publish body over 1,000,000 bytes (its
# push_in_max_body_size): a larger batch is posted in parts.
PUBLISH_BODY_MAX = 900_000


def publish_items(frames: list[notify.Frame]) -> list[dict[str, Any]]:
    """The GRIP items for the frames of one commit: per run, one item per
    contiguous run of seqs (all of them, normally), whose content is their
    SSE frames in seq order, `id` its last seq, `prev-id` the seq before its
    first; after a `complete` frame, the `close` item."""
    by_run: dict[str, list[notify.Frame]] = {}
    for frame in frames:
        by_run.setdefault(frame[0], []).append(frame)
    items: list[dict[str, Any]] = []
    for run_id, run_frames in by_run.items():
        channel = grip_channel(run_id)
        # [first seq, last seq, frames, ends with complete] of each item, then the items.
        groups: list[tuple[int, int, list[str], bool]] = []
        size = 0
        for _run_id, seq, type_, data in sorted(run_frames, key=lambda frame: frame[1]):
            content = sse_encode_event(type_, data, event_id=event_id(run_id, seq))
            if groups and groups[-1][1] == seq - 1 and not groups[-1][3] and size < ITEM_MAX_CHARS:
                first, _last, parts, _complete = groups[-1]
                parts.append(content)
                groups[-1] = (first, seq, parts, type_ == COMPLETE)
                size += len(content)
            else:
                groups.append((seq, seq, [content], type_ == COMPLETE))
                size = len(content)
        for first, last, parts, complete in groups:
            items.append({"channel": channel, "id": str(last), "prev-id": str(first - 1),
                          "formats": {"http-stream": {"content": "".join(parts)}}})
            if complete:
                items.append({"channel": channel, "id": f"{last}-end", "prev-id": str(last),
                              "formats": {"http-stream": {"action": "close"}}})
    return items


def merge_items(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Items waiting together (the publisher fell behind several commits)
    go out merged: an item that follows its channel's previous content item
    in the batch (its prev-id is that item's id) is appended to it."""
    merged: list[dict[str, Any]] = []
    last_of: dict[str, int] = {}
    for item in batch:
        content = item["formats"]["http-stream"].get("content")
        index = last_of.get(item["channel"])
        if content is not None and index is not None:
            previous = merged[index]
            before = previous["formats"]["http-stream"].get("content")
            if (before is not None and item["prev-id"] == previous["id"]
                    and len(before) + len(content) <= ITEM_MAX_CHARS):
                merged[index] = {**previous, "id": item["id"],
                                 "formats": {"http-stream": {"content": before + content}}}
                continue
        last_of[item["channel"]] = len(merged)
        merged.append(item)
    return merged


class Publisher:
    """Publishes committed frames to Pushpin from one background thread per
    process, in commit order, in batches; a failed POST is retried a few
    times, then dropped (the event is in the table: the next item's prev-id
    or the hold's timeout makes Pushpin fetch it from there)."""

    RETRIES = (0.05, 0.25, 1.0)

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: deque[dict[str, Any]] = deque()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._conn: http.client.HTTPConnection | None = None
        self._sending = False
        self.published = 0
        self.dropped = 0

    def __call__(self, frames: list[notify.Frame]) -> None:
        """A frame sink (runs.notify): called after commit; never blocks."""
        if not enabled():
            return
        items = publish_items(frames)
        with self._cond:
            if len(self._queue) + len(items) > settings.FLEX_GRIP_PUBLISH_QUEUE:
                self.dropped += len(items)
                logger.warning("grip publish queue full; frames dropped (streams recover from the event table)")
                return
            self._queue.extend(items)
            self._ensure_thread()
            self._cond.notify()

    def _ensure_thread(self) -> None:
        import os

        if self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
            self._pid = os.getpid()
            self._conn = None
            self._thread = threading.Thread(target=self._run, name="flex-grip-publisher", daemon=True)
            self._thread.start()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until the queue is empty (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._cond:
                if not self._queue and not self._sending:
                    return True
            time.sleep(0.01)
        return False

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                batch = merge_items([self._queue.popleft() for _ in range(min(len(self._queue), 1000))])
                self._sending = True
            try:
                self._post(batch)
            finally:
                with self._cond:
                    self._sending = False

    def _post(self, batch: list[dict[str, Any]]) -> None:
        body = json.dumps({"items": batch}).encode()
        if len(body) > PUBLISH_BODY_MAX and len(batch) > 1:
            half = len(batch) // 2
            self._post(batch[:half])
            self._post(batch[half:])
            return
        for attempt, pause in enumerate((0.0, *self.RETRIES)):
            if pause:
                time.sleep(pause)
            try:
                status = self._send(body)
            except (OSError, http.client.HTTPException) as exc:
                self._conn = None
                error = str(exc)
            else:
                if 200 <= status < 300:
                    self.published += len(batch)
                    return
                error = f"HTTP {status}"
            if attempt == len(self.RETRIES):
                self.dropped += len(batch)
                logger.warning("publish to pushpin failed; held streams recover from the event table",
                               extra={"error": error, "items": len(batch)})

    def _send(self, body: bytes) -> int:
        conf = config()
        assert conf is not None
        host, port, path, _key, https = conf
        if self._conn is None:
            cls = http.client.HTTPSConnection if https else http.client.HTTPConnection
            self._conn = cls(host, port, timeout=5)
        self._conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = self._conn.getresponse()
        response.read()
        if response.will_close:
            self._conn.close()
            self._conn = None
        return response.status


publisher = Publisher()


def register() -> None:
    """Publish this process's committed frames to Pushpin (FLEX_GRIP_URL)."""
    if enabled():
        config()  # a malformed URL fails at start, not at the first event
        notify.register_frame_sink(publisher)
