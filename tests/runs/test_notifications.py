"""Notifications (docs/notifications.md): the outbox written with the
events, email through Django's backend, the retry schedule, the SSRF guard,
the admin. Deliveries to a real receiver process: tests/multiprocess/test_webhooks.py."""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import time_machine
from django.core import mail
from django.db import transaction
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from runs import notifications
from runs.models import Notification, NotificationAttempt, WebhookSubscription
from tests.conftest import load_envelope
from tests.hitl.helpers import APPROVE, pending_request, resume, submit

pytestmark = pytest.mark.django_db
RECEIVER = Path(__file__).resolve().parents[1] / "webhook_receiver.py"


@pytest.fixture(autouse=True)
def _fresh_cache():
    notifications.invalidate_subscriptions()
    yield
    notifications.invalidate_subscriptions()


@pytest.fixture
def locmem(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    mail.outbox = []


def assigned_envelope(**governance):
    envelope = load_envelope("approval-required")
    envelope["policies"]["runtime"][0]["action"].update(governance)
    return envelope


def test_no_subscription_and_no_assignee_writes_nothing(api_for, client_user, operator, drain):
    run_id = submit(api_for(client_user), load_envelope("approval-required"))
    drain()
    assert resume(api_for(operator), run_id, pending_request(run_id).id, [APPROVE]).status_code == 200
    drain()
    assert not Notification.objects.exists()


def test_each_notifiable_event_gets_one_row_per_subscription(api_for, client_user, operator, drain):
    everything = WebhookSubscription.objects.create(url="https://hooks.example.com/a")
    only_complete = WebhookSubscription.objects.create(url="https://hooks.example.com/b", event_types=["complete"])
    WebhookSubscription.objects.create(url="https://hooks.example.com/c", active=False)
    run_id = submit(api_for(client_user), load_envelope("approval-required"))
    drain()
    assert resume(api_for(operator), run_id, pending_request(run_id).id, [APPROVE]).status_code == 200
    drain()

    rows = list(Notification.objects.filter(run_id=run_id).order_by("event_seq", "subscription_id"))
    assert [(r.event_type, r.subscription_id) for r in rows] == [
        ("hitl_request", everything.pk), ("hitl_resolved", everything.pk),
        ("complete", everything.pk), ("complete", only_complete.pk)]
    body = rows[0].body
    assert body["type"] == "hitl_request" and body["data"]["runId"] == run_id
    assert body["data"]["id"] == f"{run_id}:{rows[0].event_seq}" and body["timestamp"] == body["data"]["timestamp"]
    assert body["data"]["payload"]["requestId"] == pending_request_id(run_id)
    assert all(r.status == "pending" and r.channel == "webhook" for r in rows)


def pending_request_id(run_id):
    from hitl.models import HitlRequest

    return HitlRequest.objects.get(run_id=run_id).id


def test_a_rolled_back_event_leaves_no_notification(api_for, client_user):
    from runs import events as ev
    from runs.transitions import run_transition

    WebhookSubscription.objects.create(url="https://hooks.example.com/a")
    run_id = submit(api_for(client_user), load_envelope("approval-required"))
    with pytest.raises(RuntimeError), transaction.atomic():
        run_transition(run_id=run_id, to="cancelled", expect=["queued"], plan_version=0,
                       events=[ev.event_complete(status="cancelled", reason="test")])
        assert Notification.objects.filter(run_id=run_id).count() == 1  # written with the event…
        raise RuntimeError("roll back")
    assert not Notification.objects.filter(run_id=run_id).exists()  # …and gone with it


def test_a_subscription_change_is_seen_at_once_in_this_process(api_for, client_user, drain):
    run_id = submit(api_for(client_user), load_envelope("approval-required"))
    assert notifications.active_subscriptions() == []  # cached empty
    WebhookSubscription.objects.create(url="https://hooks.example.com/a")
    drain()
    assert Notification.objects.filter(run_id=run_id, event_type="hitl_request").count() == 1


def test_assignees_and_escalation_targets_are_emailed_through_the_outbox(api_for, client_user, make_user, drain,
                                                                          locmem, settings):
    settings.FLEX_WEBHOOK_ALLOW_PRIVATE = False
    ana = make_user("ana", "operator", email="ana@example.com")
    make_user("ben", "operator")  # no address: not emailed
    lead = make_user("lea", "operator", email="lea@example.com")
    from django.contrib.auth.models import Group

    Group.objects.get_or_create(name="leads")[0].user_set.add(lead)
    run_id = submit(api_for(client_user), assigned_envelope(assignees={"users": ["ana", "ben"]},
                                                            escalateAfterSeconds=60, escalateTo={"groups": ["leads"]}))
    drain()
    row = Notification.objects.get(run_id=run_id, channel="email")
    assert row.event_type == "hitl_request" and row.recipients == ["ana@example.com"]
    assert mail.outbox == []  # written in the transaction, sent by a deliverer

    assert notifications.deliver_due() == 1
    assert [m.to for m in mail.outbox] == [["ana@example.com"]]
    assert "Decision needed" in mail.outbox[0].subject and run_id in mail.outbox[0].body
    row.refresh_from_db()
    assert row.status == "delivered" and row.attempts == 1
    assert NotificationAttempt.objects.get(notification=row).ok

    # Escalation (i13-hitl's sweep emits hitl_escalated): the targets are told.
    from runs import events as ev
    from runs.transitions import run_transition

    request = pending_request(run_id)
    with transaction.atomic():
        run_transition(run_id=run_id, to=None, expect=None, plan_version=1, events=[ev.event_hitl_escalated(
            request_id=request.id, urgency="high", assignees={"users": ["ana", "ben"], "groups": ["leads"]},
            escalate_to={"groups": ["leads"]}, escalated_at=timezone.now().isoformat(), node_id="")])
    assert notifications.deliver_due() == 1
    assert mail.outbox[-1].to == ["lea@example.com"] and mail.outbox[-1].subject.startswith("Escalated")


def test_a_failing_email_backend_is_retried_with_backoff_then_given_up(api_for, client_user, make_user, drain,
                                                                        settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", 9, 1  # nothing listens
    settings.FLEX_NOTIFY_FIRST_RETRY_SECONDS = 10.0
    settings.FLEX_NOTIFY_MAX_RETRY_SECONDS = 3600.0
    settings.FLEX_NOTIFY_GIVE_UP_SECONDS = 24 * 3600.0
    make_user("ana", "operator", email="ana@example.com")
    run_id = submit(api_for(client_user), assigned_envelope(assignees={"users": ["ana"]}))
    drain()
    row = Notification.objects.get(run_id=run_id, channel="email")
    start = timezone.now()
    delays = []
    with time_machine.travel(start, tick=False) as clock:
        for _ in range(80):
            if notifications.deliver_due() == 0:
                break
            row.refresh_from_db()
            if row.status != "pending":
                break
            delays.append((row.next_attempt_at - timezone.now()).total_seconds())
            clock.move_to(row.next_attempt_at + timedelta(seconds=0.001))
    row.refresh_from_db()
    assert row.status == "failed" and row.attempts == len(delays) + 1
    assert 8 <= delays[0] <= 12 and 16 <= delays[1] <= 24 and 32 <= delays[2] <= 48  # doubling, ±20 %
    assert max(delays) <= 3600 * 1.2
    assert (row.attempt_rows.order_by("-number").first().started_at - row.created_at) <= timedelta(hours=24)
    assert all(not a.ok and a.error for a in row.attempt_rows.all())


@pytest.mark.parametrize("host", ["127.0.0.1", "10.1.2.3", "192.168.0.10", "169.254.169.254", "0.0.0.0", "::1",
                                  "fd00::1", "224.0.0.1", "::ffff:127.0.0.1", "100.64.0.1", "localhost"])
def test_the_ssrf_guard_refuses_non_public_addresses(host):
    literal = f"[{host}]" if ":" in host else host
    with pytest.raises(notifications.Refused):
        notifications.resolve_target(f"http://{literal}:8080/hook", allow_private=False)
    assert notifications.resolve_target(f"http://{literal}:8080/hook", allow_private=True)[3]


def test_the_ssrf_guard_lets_public_addresses_through_and_keeps_the_resolved_ip():
    assert notifications.resolve_target("https://93.184.215.14/x", allow_private=False) == (
        "https", "93.184.215.14", 443, "93.184.215.14")
    for url in ("ftp://example.com/x", "http://user:pw@example.com/x", "not a url"):
        with pytest.raises(notifications.Refused):
            notifications.resolve_target(url, allow_private=False)


@pytest.fixture
def receiver(tmp_path):
    from tests.multiprocess.procs import free_port, wait_for_port

    port = free_port()
    log = tmp_path / "received.jsonl"
    log.touch()
    proc = subprocess.Popen([sys.executable, str(RECEIVER), str(port), str(log)])
    try:
        wait_for_port(port)
        yield port, log
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def received(log):
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_a_private_receiver_is_refused_unless_allowed(api_for, client_user, drain, receiver, settings):
    port, log = receiver
    from runs import metrics

    def counted(outcome):
        return metrics.NOTIFICATION_ATTEMPTS.labels(channel="webhook", outcome=outcome)._value.get()

    refused_before, delivered_before = counted("refused"), counted("delivered")
    settings.FLEX_WEBHOOK_ALLOW_PRIVATE = False
    subscription = WebhookSubscription.objects.create(url=f"http://127.0.0.1:{port}/hook", event_types=["hitl_request"])
    run_id = submit(api_for(client_user), load_envelope("approval-required"))
    drain()
    assert notifications.deliver_due() == 1
    row = Notification.objects.get(run_id=run_id)
    attempt = row.attempt_rows.get()
    assert not attempt.ok and "non-public address" in attempt.error and attempt.response_code is None
    assert received(log) == []

    settings.FLEX_WEBHOOK_ALLOW_PRIVATE = True
    Notification.objects.filter(pk=row.pk).update(next_attempt_at=timezone.now())
    assert notifications.deliver_due() == 1
    row.refresh_from_db()
    assert row.status == "delivered" and row.attempts == 2
    (got,) = received(log)
    assert Webhook(subscription.secret).verify(got["body"], got["headers"])["data"]["runId"] == run_id
    assert (counted("refused") - refused_before, counted("delivered") - delivered_before) == (1, 1)
    headers = {k.lower(): v for k, v in got["headers"].items()}
    assert headers["webhook-id"] == row.id and headers["host"] == f"127.0.0.1:{port}"


def test_redirects_are_not_followed(receiver, settings):
    port, log = receiver
    outcome = notifications.send_webhook(url=f"http://127.0.0.1:{port}/redirect", secret="whsec_" + "QUJD" * 8,
                                         msg_id="msg_1", body={"type": "complete"}, allow_private=True)
    assert not outcome.ok and outcome.response_code == 302 and "redirects are not followed" in outcome.error
    assert [r["path"] for r in received(log)] == ["/redirect"]


def test_the_admin_shows_subscriptions_masked_and_every_attempt(admin_client, api_for, client_user, drain, settings):
    settings.FLEX_WEBHOOK_ALLOW_PRIVATE = False
    created = admin_client.post("/admin/runs/webhooksubscription/add/", {
        "url": "http://127.0.0.1:9/hook", "event_types": ["hitl_request", "complete"], "active": "on",
        "description": "ops pager"}, follow=True)
    assert created.status_code == 200
    subscription = WebhookSubscription.objects.get()
    assert subscription.secret.startswith("whsec_") and subscription.event_types == ["hitl_request", "complete"]
    assert subscription.secret in created.content.decode()  # shown once…
    listing = admin_client.get("/admin/runs/webhooksubscription/").content.decode()
    assert subscription.secret not in listing and subscription.secret[:10] in listing  # …then masked

    run_id = submit(api_for(client_user), load_envelope("approval-required"))
    drain()
    notifications.deliver_due()
    row = Notification.objects.get(run_id=run_id)
    page = admin_client.get(f"/admin/runs/webhooksubscription/{subscription.pk}/change/").content.decode()
    assert row.id in page and subscription.secret not in page
    detail = admin_client.get(f"/admin/runs/notification/{row.pk}/change/").content.decode()
    assert "non-public address" in detail and "hitl_request" in detail
    assert admin_client.get("/admin/runs/notification/add/").status_code == 403


def test_retry_delays_double_with_jitter_and_are_capped(settings):
    settings.FLEX_NOTIFY_FIRST_RETRY_SECONDS = 5.0
    settings.FLEX_NOTIFY_MAX_RETRY_SECONDS = 3600.0
    delays = [notifications.retry_delay(n) for n in range(1, 15)]
    assert 4 <= delays[0] <= 6 and 8 <= delays[1] <= 12 and 16 <= delays[2] <= 24
    assert all(d <= 3600 * 1.2 for d in delays) and delays[-1] >= 3600 * 0.8
    assert len({round(notifications.retry_delay(3), 6) for _ in range(20)}) > 1  # jitter



def test_old_finished_notifications_are_pruned_and_pending_ones_kept(api_for, client_user, drain, settings):
    settings.FLEX_NOTIFY_KEEP_DAYS = 30
    WebhookSubscription.objects.create(url="https://hooks.example.com/a")
    run_id = submit(api_for(client_user), load_envelope("approval-required"))
    drain()
    row = Notification.objects.get(run_id=run_id)
    assert notifications.prune_notifications(now=timezone.now() + timedelta(days=31)) == 0  # still pending
    Notification.objects.filter(pk=row.pk).update(status="failed")
    assert notifications.prune_notifications(now=timezone.now() + timedelta(days=29)) == 0
    assert notifications.prune_notifications(now=timezone.now() + timedelta(days=31)) == 1
    assert not Notification.objects.exists()


def test_operators_and_support_do_not_manage_webhooks(client, operator, support):
    for person in (operator, support):
        client.force_login(person)
        assert client.get("/admin/runs/webhooksubscription/").status_code == 403
        assert client.get("/admin/runs/notification/").status_code == 403
        assert client.post("/admin/runs/webhooksubscription/add/", {"url": "https://x.example.com",
                                                                    "event_types": ["complete"]}).status_code == 403
    assert not WebhookSubscription.objects.exists()


def test_a_subscription_deleted_by_another_process_never_fails_a_run(api_for, client_user, drain):
    from django.db import connection

    subscription = WebhookSubscription.objects.create(url="https://hooks.example.com/a")
    assert notifications.active_subscriptions()  # cached here
    with connection.cursor() as cursor:  # another process deletes it (no signal reaches this one)
        cursor.execute("DELETE FROM runs_webhooksubscription WHERE id = %s", [subscription.pk])
    run_id = submit(api_for(client_user), load_envelope("approval-required"))
    drain()
    assert pending_request(run_id) and not Notification.objects.exists()
