"""Admin pages of the notifications (docs/notifications.md): webhook
subscriptions (managed here; the secret is shown once, then masked), and
the outbox with every delivery attempt, read-only. Registered by
runs/admin.py. Django's model permissions decide who sees them
(superusers; grant `runs.*_webhooksubscription` / `runs.view_notification`
to others)."""
from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from runs.models import (NOTIFIABLE_EVENT_TYPES, Notification, NotificationAttempt, WebhookSubscription,
                         new_webhook_secret)


def mask_secret(secret: str) -> str:
    return f"{secret[:10]}…{secret[-4:]}" if len(secret) > 16 else "…"


class WebhookSubscriptionForm(forms.ModelForm):
    url = forms.URLField(max_length=2000, assume_scheme="https",
                         help_text="Where events are POSTed; no redirects are followed")
    event_types = forms.MultipleChoiceField(choices=[(t, t) for t in NOTIFIABLE_EVENT_TYPES],
                                            widget=forms.CheckboxSelectMultiple, initial=list(NOTIFIABLE_EVENT_TYPES))

    class Meta:
        model = WebhookSubscription
        fields = ("url", "event_types", "active", "description")


@admin.register(WebhookSubscription)
class WebhookSubscriptionAdmin(admin.ModelAdmin):
    form = WebhookSubscriptionForm
    list_display = ("url", "shown_event_types", "active", "description", "masked_secret", "created_at")
    list_filter = ("active",)
    search_fields = ("url", "description")
    readonly_fields = ("masked_secret", "created_at", "updated_at", "recent_deliveries")
    actions = ["rotate_secret"]

    def get_fields(self, request: HttpRequest, obj: WebhookSubscription | None = None) -> Any:
        fields = ["url", "event_types", "active", "description"]
        return fields if obj is None else [*fields, "masked_secret", "created_at", "updated_at", "recent_deliveries"]

    @admin.display(description="event types")
    def shown_event_types(self, obj: WebhookSubscription) -> str:
        return ", ".join(obj.event_types or [])

    @admin.display(description="secret")
    def masked_secret(self, obj: WebhookSubscription) -> str:
        return mask_secret(obj.secret)

    @admin.display(description="recent deliveries")
    def recent_deliveries(self, obj: WebhookSubscription) -> SafeString:
        rows = list(obj.notifications.order_by("-created_at")[:20])
        if not rows:
            return format_html("{}", "none yet")
        body = format_html_join(
            "", "<tr><td><a href='{}'>{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((reverse("admin:runs_notification_change", args=[n.pk]), n.pk, n.event_type, n.run_id, n.status,
              n.attempts, n.last_error[:120]) for n in rows))
        return format_html("<table><tr><th>id</th><th>event</th><th>run</th><th>status</th><th>attempts</th>"
                           "<th>last error</th></tr>{}</table>", body)

    def response_add(self, request: HttpRequest, obj: WebhookSubscription, post_url_continue: Any = None
                     ) -> HttpResponse:
        messages.warning(request, f"Signing secret of {obj.url}: {obj.secret} — copy it now, it is not shown again.")
        return super().response_add(request, obj, post_url_continue)

    @admin.action(description="Rotate the signing secret (shown once)")
    def rotate_secret(self, request: HttpRequest, queryset: QuerySet[WebhookSubscription]) -> None:
        for subscription in queryset:
            subscription.secret = new_webhook_secret()
            subscription.save(update_fields=["secret", "updated_at"])
            messages.warning(request, f"New signing secret of {subscription.url}: {subscription.secret} — copy it "
                                      "now, it is not shown again.")


class NotificationAttemptInline(admin.TabularInline):
    model = NotificationAttempt
    extra = 0
    can_delete = False
    fields = ("number", "started_at", "ok", "response_code", "duration_ms", "error")
    readonly_fields = fields
    ordering = ("number",)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    """The outbox, read-only: what was (or will be) sent, and every attempt."""

    list_display = ("id", "channel", "event_type", "run_id", "subscription", "status", "attempts",
                    "next_attempt_at", "created_at")
    list_filter = ("status", "channel", "event_type")
    search_fields = ("id", "run_id")
    fields = ("id", "channel", "subscription", "recipients", "run_id", "event_type", "event_seq", "status",
              "attempts", "next_attempt_at", "created_at", "delivered_at", "last_error", "shown_body")
    readonly_fields = fields
    inlines = [NotificationAttemptInline]

    @admin.display(description="body (redacted, as sent)")
    def shown_body(self, obj: Notification) -> SafeString:
        return format_html("<pre>{}</pre>", json.dumps(obj.body, indent=2, ensure_ascii=False))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
