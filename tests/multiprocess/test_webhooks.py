"""Webhooks and email delivered by real worker processes to a real receiver
process (tests/webhook_receiver.py): each event once per subscription, with
a Standard Webhooks signature that verifies; a receiver that is down gets
its deliveries later; email reaches the assignees (file-based backend in
the worker)."""
from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from standardwebhooks.webhooks import Webhook

from runs.models import Notification, NotificationAttempt, WebhookSubscription
from tests.multiprocess.conftest import submit, wait_run_status
from tests.multiprocess.procs import free_port, wait_for, wait_for_port

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

EXAMPLES = Path(settings.BASE_DIR) / "examples" / "envelopes"
RECEIVER = Path(settings.BASE_DIR) / "tests" / "webhook_receiver.py"
FAST_RETRIES = {"FLEX_WEBHOOK_ALLOW_PRIVATE": "1", "FLEX_NOTIFY_POLL_SECONDS": "0.1",
                "FLEX_NOTIFY_FIRST_RETRY_SECONDS": "0.3", "FLEX_NOTIFY_MAX_RETRY_SECONDS": "1"}


def envelope(**governance):
    body = json.loads((EXAMPLES / "approval-required.json").read_text())
    body["policies"]["runtime"][0]["action"].update(governance)
    return body


def start_receiver(procs, port, log):
    log.touch()
    proc = procs.start("receiver", [sys.executable, str(RECEIVER), str(port), str(log)])
    wait_for_port(port, proc=proc)
    return proc


def received(log):
    return [json.loads(line) for line in log.read_text().splitlines()]


def approve(port, token, run_id):
    auth = {"Authorization": f"Bearer {token}"}
    pending = httpx.get(f"http://127.0.0.1:{port}/api/hitl/pending", headers=auth, timeout=30).json()["runs"]
    request_id = next(r for r in pending if r["runId"] == run_id)["pendingRequestId"]
    response = httpx.post(f"http://127.0.0.1:{port}/api/hitl/resume", headers=auth, timeout=30,
                          json={"runId": run_id, "requestId": request_id,
                                "responses": [{"responseType": "approval", "approved": True}]})
    assert response.status_code == 200, response.text


def test_each_event_reaches_each_subscription_once_signed_and_assignees_get_email(procs, token, tmp_path):
    port = free_port()
    log = tmp_path / "received.jsonl"
    start_receiver(procs, port, log)
    first = WebhookSubscription.objects.create(url=f"http://127.0.0.1:{port}/first")
    second = WebhookSubscription.objects.create(url=f"http://127.0.0.1:{port}/second",
                                                event_types=["hitl_request", "complete"])
    get_user_model().objects.filter(username="mp-admin").update(email="mp-admin@example.com")
    mail_dir = tmp_path / "mail"
    env = {**FAST_RETRIES, "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
           "EMAIL_FILE_PATH": str(mail_dir)}
    _, web_port = procs.daphne(env=env)
    procs.worker(env=env)
    procs.worker(env=env)  # two deliverers: still once each

    run_id = submit(web_port, token, envelope(assignees={"users": ["mp-admin"]}, allowSelfApproval=True))
    wait_run_status(run_id, ("awaiting_hitl",), timeout=30)
    approve(web_port, token, run_id)
    wait_run_status(run_id, ("completed",), timeout=30)
    wait_for(lambda: Notification.objects.filter(run_id=run_id).exists() and not Notification.objects.filter(
        run_id=run_id).exclude(status="delivered").exists(), timeout=30, what="every notification delivered")

    deliveries = received(log)
    by_path: dict[str, list[str]] = {"/first": [], "/second": []}
    secrets = {"/first": first.secret, "/second": second.secret}
    for delivery in deliveries:
        message = Webhook(secrets[delivery["path"]]).verify(delivery["body"], delivery["headers"])
        assert message["data"]["runId"] == run_id
        by_path[delivery["path"]].append(message["type"])
    # Delivery order is not guaranteed (several deliverers, retries): data.seq orders them.
    assert {path: sorted(types) for path, types in by_path.items()} == {
        "/first": sorted(["hitl_request", "hitl_resolved", "complete"]), "/second": ["complete", "hitl_request"]}
    ids = Counter({k.lower(): v for k, v in d["headers"].items()}["webhook-id"] for d in deliveries)
    assert set(ids.values()) == {1}
    assert set(ids) == set(Notification.objects.filter(channel="webhook").values_list("id", flat=True))
    with pytest.raises(Exception):  # a signature made with another secret does not verify
        Webhook(second.secret).verify(deliveries[0]["body"], deliveries[0]["headers"]) if \
            deliveries[0]["path"] == "/first" else Webhook(first.secret).verify(deliveries[0]["body"],
                                                                              deliveries[0]["headers"])

    emails = [p.read_text() for p in sorted(mail_dir.iterdir())]
    assert len(emails) == 1 and "To: mp-admin@example.com" in emails[0] and run_id in emails[0]
    assert Notification.objects.get(channel="email").status == "delivered"


def test_a_receiver_that_is_down_gets_every_delivery_later(procs, token, tmp_path):
    port = free_port()
    log = tmp_path / "received.jsonl"
    WebhookSubscription.objects.create(url=f"http://127.0.0.1:{port}/hook")
    _, web_port = procs.daphne(env=FAST_RETRIES)
    procs.worker(env=FAST_RETRIES)

    runs = [submit(web_port, token, envelope(allowSelfApproval=True)) for _ in range(3)]
    for run_id in runs:
        wait_run_status(run_id, ("awaiting_hitl",), timeout=30)
    wait_for(lambda: NotificationAttempt.objects.filter(ok=False).count() >= 6, timeout=30,
             what="failed attempts while the receiver is down")
    assert not Notification.objects.filter(status="delivered").exists()
    failed = NotificationAttempt.objects.filter(ok=False).first()
    assert failed.response_code is None and "Connect" in failed.error

    start_receiver(procs, port, log)
    for run_id in runs:
        approve(web_port, token, run_id)
        wait_run_status(run_id, ("completed",), timeout=30)
    wait_for(lambda: Notification.objects.count() == 9 and not Notification.objects.exclude(
        status="delivered").exists(), timeout=30, what="every notification delivered")

    deliveries = received(log)
    keys = [(json.loads(d["body"])["data"]["runId"], json.loads(d["body"])["type"]) for d in deliveries]
    assert sorted(keys) == sorted((r, t) for r in runs for t in ("hitl_request", "hitl_resolved", "complete"))
    first_requests = Notification.objects.filter(event_type="hitl_request")
    assert all(n.attempts >= 2 and n.attempt_rows.last().ok and n.attempt_rows.last().response_code == 200
               for n in first_requests)
