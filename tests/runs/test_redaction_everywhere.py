"""Secrets planted in metadata, inputs, node outputs, error messages and a
cancel reason — nested and non-string — appear nowhere a person can read
them: the debug view, the run list, the events JSON, the SSE frames and the
log lines. Ordinary values stay visible, and the stored data keeps the real
values (capabilities need them)."""
from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings as django_settings

from flexagents.logging import JsonFormatter
from planner.capabilities.qa import review
from planner.types import Capability, CapabilityError, ContextBundle
from runs.models import NodeRun, Run
from tests.conftest import load_envelope

MODULE = __name__

# Every planted secret, as it must never be shown.
SECRETS = {
    "metadata apiKey": "sk-meta-111",
    "metadata nested numeric password": "424242",
    "input nested numeric password": "777001",
    "input nested apiKey": "sk-input-222",
    "special instruction token": "abc-special-333",
    "node output numeric password": "918273",
    "node output token list": "sk-out-555",
    "capability error api_key": "sk-err-666",
    "exception password": "hunter2-888",
    "exception nested credentials": "nested-999",
    "cancel reason token": "abc-reason-777",
}


class LeakyReview(Capability):
    """A reviewer whose report carries a nested, numeric password and a list of tokens."""

    capability_id = "leaky.Review"
    display_name = "Leaky reviewer"
    kind = "validation"
    input_facets = ("copyVariants",)
    output_facets = ("qa_report",)

    def run(self, bundle: ContextBundle) -> dict[str, Any]:
        report = review(bundle.facets["copyVariants"])
        report["reviewer"] = {"name": "Review bot", "account": {"password": 918273, "token": ["sk-out-555"]}}
        return {"qa_report": report}


class BrokenReview(Capability):
    """Fails with a credential in the message: first a crash, then for good."""

    capability_id = "leaky.BrokenReview"
    display_name = "Broken reviewer"
    kind = "validation"
    input_facets = ("copyVariants",)
    output_facets = ("qa_report",)

    def run(self, bundle: ContextBundle) -> dict[str, Any]:
        if bundle.attempt == 1:
            raise RuntimeError("connection reset while sending password=hunter2-888 "
                               "with {'credentials': {'vault': {'pin': 'nested-999'}}}")
        raise CapabilityError("failed with api_key=sk-err-666", code="review_refused", retryable=False)


def planted_envelope(review_capability: str) -> dict[str, Any]:
    envelope = load_envelope("facets-output")
    envelope["metadata"] = {"threadId": "thread-secrets", "briefId": "brief-secrets", "campaign": "spring-launch",
                            "apiKey": "sk-meta-111", "vault": {"nested": {"password": 424242}}}
    envelope["inputs"]["company_information"]["billing"] = {"password": 777001, "apiKey": "sk-input-222",
                                                            "plan": "enterprise"}
    envelope["specialInstructions"].append("Publish through the CMS with token=abc-special-333 please.")
    forbid = ["qa.ContentReview"] + [c for c in ("leaky.Review", "leaky.BrokenReview") if c != review_capability]
    envelope["policies"]["planner"]["selection"] = {"require": [review_capability], "forbid": forbid}
    if review_capability == "leaky.BrokenReview":
        envelope["outputContract"] = {"mode": "facets", "facets": ["qa_report"]}
    return envelope


@pytest.fixture
def leaky_capabilities(settings: Any) -> None:
    settings.FLEX_EXTRA_CAPABILITIES = [f"{MODULE}.LeakyReview", f"{MODULE}.BrokenReview"]


@pytest.fixture
def json_log() -> Any:
    """Every log line of the test, formatted as production formats it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(previous)


async def _collect(response: Any) -> str:
    chunks = []
    async for chunk in response.streaming_content:
        chunks.append(chunk.decode() if isinstance(chunk, bytes) else chunk)
    return "".join(chunks)


def read_stream(response: Any) -> str:
    return async_to_sync(_collect)(response)


def leaked(text: str) -> list[str]:
    return [name for name, secret in SECRETS.items() if secret in text]


@pytest.mark.django_db(transaction=True)
def test_planted_secrets_appear_nowhere_a_person_can_read_them(leaky_capabilities, json_log, api_for, client_user,
                                                               operator, support, drain):
    from runs.models import Notification, WebhookSubscription

    WebhookSubscription.objects.create(url="https://hooks.example.com/flex")  # every notifiable event
    api = api_for(client_user)
    leaky = api.post("/api/v1/flex/runs", planted_envelope("leaky.Review"), format="json").json()["runId"]
    broken = api.post("/api/v1/flex/runs", planted_envelope("leaky.BrokenReview"), format="json").json()["runId"]
    drain()
    cancelled = api.post("/api/v1/flex/runs", planted_envelope("leaky.Review"), format="json").json()["runId"]
    assert api.post(f"/api/v1/flex/runs/{cancelled}/cancel",
                    {"reason": "Duplicate; see ticket, token=abc-reason-777"}, format="json").status_code == 200

    assert Run.objects.get(pk=leaky).status == "completed"
    assert Run.objects.get(pk=broken).status == "failed"

    shown: dict[str, str] = {}
    for reader in (client_user, support, operator):
        reader_api = api_for(reader)
        for run_id in (leaky, broken, cancelled):
            debug = reader_api.get(f"/api/v1/flex/runs/{run_id}")
            assert debug.status_code == 200
            shown[f"debug {run_id} as {reader.username}"] = debug.content.decode()
            events = reader_api.get(f"/api/v1/flex/runs/{run_id}/events")
            assert events.status_code == 200
            shown[f"events {run_id} as {reader.username}"] = events.content.decode()
            stream = reader_api.get(f"/api/v1/flex/runs/{run_id}/stream")
            assert stream.status_code == 200
            shown[f"sse {run_id} as {reader.username}"] = read_stream(stream)
        listing = reader_api.get("/api/v1/flex/runs")
        assert listing.status_code == 200
        shown[f"list as {reader.username}"] = listing.content.decode()
    shown["logs"] = json_log.getvalue()
    # Webhook bodies, as stored in the outbox and sent byte for byte.
    for row in Notification.objects.all():
        shown[f"webhook {row.event_type} {row.run_id}"] = json.dumps(row.body)

    assert {name: leaked(text) for name, text in shown.items() if leaked(text)} == {}

    # The webhooks really carried the runs' ends, redacted.
    assert {(r.run_id, r.event_type) for r in Notification.objects.all()} == {
        (leaky, "complete"), (broken, "complete"), (cancelled, "complete")}
    assert '"status": "completed"' in shown[f"webhook complete {leaky}"]
    assert "review_refused" in shown[f"webhook complete {broken}"]
    assert "token=[redacted]" in shown[f"webhook complete {cancelled}"]
    # The streams really carried the run (not an empty body that leaks nothing).
    assert '"status":"completed"' in shown[f"sse {leaky} as clara"]
    assert "review_refused" in shown[f"sse {broken} as clara"]
    # Ordinary values stay visible, and the redacted ones say so.
    debug = json.loads(shown[f"debug {leaky} as sam"])
    envelope = debug["run"]["envelope"]
    assert envelope["metadata"]["campaign"] == "spring-launch"
    assert envelope["metadata"]["apiKey"] == "[redacted]"
    assert envelope["metadata"]["vault"]["nested"]["password"] == "[redacted]"
    billing = envelope["inputs"]["company_information"]["billing"]
    assert billing == {"password": "[redacted]", "apiKey": "[redacted]", "plan": "enterprise"}
    assert envelope["inputs"]["company_information"]["name"] == "Akkuro"
    assert "Variant A should highlight risk reduction." in envelope["specialInstructions"]
    assert "Publish through the CMS with token=[redacted] please." in envelope["specialInstructions"]
    reviewer = debug["output"]["qa_report"]["reviewer"]
    assert reviewer == {"name": "Review bot", "account": {"password": "[redacted]", "token": "[redacted]"}}
    review_node = next(n for n in debug["nodes"] if n["capabilityId"] == "leaky.Review")
    assert review_node["output"]["qa_report"]["reviewer"]["account"]["password"] == "[redacted]"
    assert review_node["input"]["metadata"]["apiKey"] == "[redacted]"
    assert debug["latestSnapshot"]["facets"]["company_information"]["billing"]["plan"] == "enterprise"

    broken_debug = json.loads(shown[f"debug {broken} as sam"])
    broken_node = next(n for n in broken_debug["nodes"] if n["capabilityId"] == "leaky.BrokenReview")
    assert broken_node["error"]["message"] == "failed with api_key=[redacted]"
    assert "failed with api_key=[redacted]" in broken_debug["run"]["error"]["message"]
    errors = [f["payload"]["error"]["message"] for f in broken_debug["events"]["latest"] if f["type"] == "node_error"]
    assert errors == ["RuntimeError: connection reset while sending password=[redacted] "
                      "with {'credentials': [redacted]}",
                      "failed with api_key=[redacted]"]

    cancelled_debug = json.loads(shown[f"debug {cancelled} as sam"])
    assert cancelled_debug["audit"][-1]["details"]["reason"] == "Duplicate; see ticket, token=[redacted]"
    assert "run_cancelled" in shown["logs"] and "debug view read" in shown["logs"]

    # Stored data keeps the real values.
    stored = Run.objects.get(pk=leaky)
    assert stored.envelope["metadata"]["apiKey"] == "sk-meta-111"
    assert stored.envelope["inputs"]["company_information"]["billing"]["password"] == 777001
    assert NodeRun.objects.get(run_id=leaky, capability_id="leaky.Review").output["qa_report"]["reviewer"][
        "account"]["password"] == 918273


@pytest.fixture
def sensitive_catalog(settings: Any, tmp_path: Path) -> None:
    """The shipped catalog, with two fields marked `x-sensitive`."""
    catalog = json.loads(Path(django_settings.FLEX_FACET_CATALOG).read_text())
    for facet in catalog["facets"]:
        if facet["name"] == "company_information":
            facet["schema"]["properties"]["positioning"]["x-sensitive"] = True
        if facet["name"] == "copyVariants":
            facet["schema"]["items"]["properties"]["callToAction"]["x-sensitive"] = True
    path = tmp_path / "facets.json"
    path.write_text(json.dumps(catalog))
    settings.FLEX_FACET_CATALOG = path


def test_x_sensitive_facet_fields_are_redacted_in_the_debug_view_and_events(sensitive_catalog, api_for, client_user,
                                                                           drain):
    envelope = load_envelope("linkedin-variants")
    api = api_for(client_user)
    run_id = api.post("/api/v1/flex/runs", envelope, format="json").json()["runId"]
    drain()

    body = api.get(f"/api/v1/flex/runs/{run_id}").json()
    events = api.get(f"/api/v1/flex/runs/{run_id}/events").json()["events"]

    positioning = envelope["inputs"]["company_information"]["positioning"]
    company = body["run"]["envelope"]["inputs"]["company_information"]
    assert company["positioning"] == "[redacted]" and company["name"] == "Akkuro"
    assert body["latestSnapshot"]["facets"]["company_information"]["positioning"] == "[redacted]"
    strategist = next(n for n in body["nodes"] if n["nodeId"] == "strategist")
    assert strategist["input"]["facets"]["company_information"]["positioning"] == "[redacted]"
    for variants in (body["output"]["copyVariants"], body["latestSnapshot"]["facets"]["copyVariants"],
                     events[-1]["payload"]["output"]["copyVariants"],
                     body["events"]["latest"][-1]["payload"]["output"]["copyVariants"]):
        assert [v["callToAction"] for v in variants] == ["[redacted]", "[redacted]"]
        assert all("Akkuro" in v["body"] for v in variants)
    # The raw field is only in what is stored.
    stored = Run.objects.get(pk=run_id)
    assert stored.envelope["inputs"]["company_information"]["positioning"] == positioning
    assert all(v["callToAction"] != "[redacted]" for v in stored.output["copyVariants"])


# --- HITL: requests, responses and review on every surface -----------------------------------------------

# Planted in what a policy asks a person to approve, in the answers, notes and
# metadata people send, and in free text copied from one place to another.
HITL_SECRETS = {
    "objective token (copied into node outputs and posts)": "abc-objective-101",
    "rationale token (operator prompt)": "abc-rationale-202",
    "review nested password": "919191",
    "review token list": "sk-review-303",
    "review x-sensitive field": "internal-note-404",
    "review free text password": "hunter2-finding-505",
    "response freeformText password": "hunter2-answer-606",
    "response metadata apiKey": "sk-answer-707",
    "response metadata note token": "abc-answer-note-808",
    "resume metadata apiKey": "sk-resume-909",
    "resume note password": "hunter2-resume-111",
    "operator display name token": "abc-operator-212",
    "remove reason token": "abc-remove-313",
    "remove note password": "hunter2-remove-414",
}


class ReviewUnderApproval(Capability):
    """A reviewer whose report, shown for approval, carries a nested password,
    a token list, an x-sensitive note and a credential in a finding's text."""

    capability_id = "leaky.ApprovedReview"
    display_name = "Reviewer under approval"
    kind = "validation"
    input_facets = ("copyVariants",)
    output_facets = ("qa_report",)

    def run(self, bundle: ContextBundle) -> dict[str, Any]:
        report = review(bundle.facets["copyVariants"])
        report["reviewer"] = {"name": "Review bot", "account": {"password": 919191, "token": ["sk-review-303"]}}
        report["reviewerNote"] = "internal-note-404"
        report["findings"].append({"severity": "info", "message": "CMS login is password=hunter2-finding-505"})
        return {"qa_report": report}


@pytest.fixture
def hitl_catalog(settings: Any, tmp_path: Path) -> None:
    """The shipped catalog with `qa_report.reviewerNote` marked x-sensitive,
    and the reviewer above."""
    catalog = json.loads(Path(django_settings.FLEX_FACET_CATALOG).read_text())
    for facet in catalog["facets"]:
        if facet["name"] == "qa_report":
            facet["schema"]["properties"]["reviewerNote"] = {"type": "string", "x-sensitive": True}
    path = tmp_path / "facets.json"
    path.write_text(json.dumps(catalog))
    settings.FLEX_FACET_CATALOG = path
    settings.FLEX_EXTRA_CAPABILITIES = [f"{MODULE}.ReviewUnderApproval"]


def approval_envelope() -> dict[str, Any]:
    envelope = load_envelope("facets-output")
    envelope["objective"] = "Three reviewed variants; publish with CMS token=abc-objective-101"
    envelope["metadata"] = {"threadId": "thread-hitl-secrets"}
    envelope["policies"]["planner"]["selection"] = {"require": ["leaky.ApprovedReview"], "forbid": ["qa.ContentReview"]}
    envelope["policies"]["runtime"] = [{
        "id": "approve-review", "trigger": {"kind": "onNodeComplete", "selector": {"capabilityId": "leaky.ApprovedReview"}},
        "action": {"type": "hitl", "rationale": "Check the report; the CMS uses token=abc-rationale-202",
                   "approveAction": "continue", "assignees": {"users": ["olivia"]}}}]
    return envelope


def hitl_leaked(text: str) -> list[str]:
    return [name for name, secret in HITL_SECRETS.items() if secret in text]


def page(browser: Any, url: str) -> str:
    response = browser.get(url)
    assert response.status_code == 200, (url, response.status_code)
    return response.content.decode()


def link_in(html: str, pattern: str) -> str:
    """The href of the first link matching `pattern` (a regex over the href):
    pages are reached by following links, as a person does."""
    import re

    match = re.search(rf'href="({pattern})"', html)
    assert match, pattern
    return match.group(1).replace("&amp;", "&")


@pytest.mark.django_db(transaction=True)
def test_hitl_secrets_appear_nowhere_a_person_can_read_them(hitl_catalog, json_log, api_for, client_user, operator,
                                                            support, drain, settings):
    from django.test import Client

    from django.core import mail

    from hitl.models import HitlRequest, HitlResponse
    from runs import notifications
    from runs.models import Notification, WebhookSubscription

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.FLEX_WEBHOOK_ALLOW_PRIVATE = False
    mail.outbox = []
    operator.email = "olivia@example.com"
    operator.save()
    notifications.invalidate_subscriptions()
    WebhookSubscription.objects.create(url="http://127.0.0.1:9/hook")  # every notifiable event; never reached
    owner = api_for(client_user)
    approved = owner.post("/api/v1/flex/runs", approval_envelope(), format="json").json()["runId"]
    removed = owner.post("/api/v1/flex/runs", approval_envelope(), format="json").json()["runId"]
    drain()
    assert set(Run.objects.filter(pk__in=[approved, removed]).values_list("status", flat=True)) == {"awaiting_hitl"}
    request_id = HitlRequest.objects.get(run_id=approved).id
    removed_request_id = HitlRequest.objects.get(run_id=removed).id

    shown: dict[str, str] = {}
    browsers = {}
    for person in (client_user, support, operator):
        browsers[person.username] = Client()
        browsers[person.username].force_login(person)

    def read_every_page(when: str) -> None:
        for person in (client_user, support, operator):
            name, api, browser = person.username, api_for(person), browsers[person.username]
            pending = api.get("/api/hitl/pending")
            assert pending.status_code == 200
            shown[f"{when} pending as {name}"] = pending.content.decode()
            shown[f"{when} run list as {name}"] = api.get("/api/v1/flex/runs").content.decode()
            for run_id in (approved, removed):
                shown[f"{when} debug {run_id} as {name}"] = api.get(f"/api/v1/flex/runs/{run_id}").content.decode()
                shown[f"{when} events {run_id} as {name}"] = api.get(
                    f"/api/v1/flex/runs/{run_id}/events").content.decode()
            history = page(browser, "/runs/")
            shown[f"{when} history list as {name}"] = history
            for run_id in (approved, removed):
                shown[f"{when} history {run_id} as {name}"] = page(browser, link_in(history, f"/runs/{run_id}/"))
            if not person.is_staff:
                continue
            inbox = page(browser, "/admin/runs/run/inbox/")
            shown[f"{when} admin inbox as {name}"] = inbox
            shown[f"{when} admin runs as {name}"] = page(browser, "/admin/runs/run/")
            if when == "waiting":
                shown[f"{when} admin run console as {name}"] = page(browser, link_in(inbox, f"/admin/runs/run/[^\"]*{approved[4:]}[^\"]*"))
            requests_list = page(browser, "/admin/hitl/hitlrequest/")
            shown[f"{when} admin requests as {name}"] = requests_list
            for hitl_id in (request_id, removed_request_id):
                shown[f"{when} admin request {hitl_id} as {name}"] = page(
                    browser, link_in(requests_list, f"/admin/hitl/hitlrequest/[^\"]*{hitl_id[5:]}[^\"]*/change/"))

    operator_api = api_for(operator)
    respond = operator_api.post("/api/hitl/respond", {"runId": approved, "requestId": request_id, "responses": [{
        "responseType": "freeform", "freeformText": "Fine by me; the CMS password=hunter2-answer-606",
        "metadata": {"apiKey": "sk-answer-707", "note": "ping ops with token=abc-answer-note-808"}}]}, format="json")
    assert respond.status_code == 200, respond.content
    shown["respond body"] = respond.content.decode()
    read_every_page("waiting")

    resume = operator_api.post("/api/hitl/resume", {
        "runId": approved, "requestId": request_id, "latestResponseId": respond.json()["latestResponseId"],
        "responses": [{"responseType": "approval", "approved": True,
                       "metadata": {"apiKey": "sk-resume-909", "note": "approved"}}],
        "operator": {"displayName": "Olivia token=abc-operator-212"},
        "note": "resumed; vault password=hunter2-resume-111"}, format="json")
    assert resume.status_code == 200, resume.content
    shown["resume body"] = resume.content.decode()
    remove = operator_api.post("/api/hitl/remove", {
        "runId": removed, "requestId": removed_request_id, "reason": "duplicate, token=abc-remove-313",
        "note": "see vault password=hunter2-remove-414"}, format="json")
    assert remove.status_code == 200, remove.content
    shown["remove body"] = remove.content.decode()
    drain()
    assert Run.objects.get(pk=approved).status == "completed"
    read_every_page("done")
    for person in (client_user, support, operator):
        for run_id in (approved, removed):
            stream = api_for(person).get(f"/api/v1/flex/runs/{run_id}/stream")
            shown[f"sse {run_id} as {person.username}"] = read_stream(stream)
    notifications.deliver_due(limit=100)  # the emails (the webhooks are refused: a private address)
    for row in Notification.objects.all():
        shown[f"{row.channel} {row.event_type} {row.run_id} {row.subscription_id}"] = json.dumps(row.body)
    for index, message in enumerate(mail.outbox):
        shown[f"email {index}"] = f"{message.subject}\n{message.body}"
    shown["logs"] = json_log.getvalue()

    assert {name: hitl_leaked(text) for name, text in shown.items() if hitl_leaked(text)} == {}
    # The notifications really carried the dialogue (redacted), and the emails went out.
    assert len(mail.outbox) == 2 and {m.to[0] for m in mail.outbox} == {"olivia@example.com"}
    webhook_request = json.loads(next(v for k, v in shown.items() if k.startswith(f"webhook hitl_request {approved}")))
    assert webhook_request["data"]["payload"]["review"]["qa_report"]["reviewerNote"] == "[redacted]"
    assert {k.split()[1] for k in shown if k.startswith("webhook ")} == {"hitl_request", "hitl_resolved", "complete"}

    # The surfaces really showed the dialogue, redacted (not an empty page that leaks nothing).
    pending = json.loads(shown["waiting pending as olivia"])["runs"]
    entry = next(e for e in pending if e["runId"] == approved)["pendingRequest"]
    review_shown = entry["review"]["qa_report"]
    assert review_shown["reviewer"] == {"name": "Review bot", "account": {"password": "[redacted]",
                                                                          "token": "[redacted]"}}
    assert review_shown["reviewerNote"] == "[redacted]"
    assert review_shown["findings"][-1]["message"] == "CMS login is password=[redacted]"
    assert entry["operatorPrompt"] == "Check the report; the CMS uses token=[redacted]"
    answer = entry["responses"][0]
    assert answer["freeformText"] == "Fine by me; the CMS password=[redacted]"
    assert answer["metadata"] == {"apiKey": "[redacted]", "note": "ping ops with token=[redacted]"}
    assert json.loads(shown["respond body"])["responses"][0]["metadata"]["apiKey"] == "[redacted]"
    resumed = json.loads(shown["resume body"])
    assert resumed["responses"][-1]["metadata"] == {"apiKey": "[redacted]", "note": "approved"}
    assert resumed["requests"][0]["review"]["qa_report"]["reviewerNote"] == "[redacted]"
    for key in ("waiting history " + approved + " as sam", "waiting admin run console as olivia",
                f"waiting admin request {request_id} as sam"):
        assert "Fine by me; the CMS password=[redacted]" in shown[key] or "CMS uses token=[redacted]" in shown[key], key
    assert "publish with CMS token=[redacted]" in shown[f"done history {approved} as clara"]
    listed = next(r for r in json.loads(shown["done run list as clara"])["results"] if r["runId"] == approved)
    assert listed["objective"].endswith("publish with CMS token=[redacted]")
    assert '"resolution":"removed"' in shown[f"sse {removed} as sam"]
    snapshot = json.loads(shown[f"done debug {approved} as sam"])["latestSnapshot"]["facets"]
    assert snapshot["creative_brief"]["objective"].endswith("token=[redacted]")
    assert "hitl_removed" in shown["logs"] and "hitl_responded" in shown["logs"]

    # Stored rows keep the real values (capabilities and clarifications need them).
    assert HitlResponse.objects.filter(run_id=approved, freeform_text__contains="hunter2-answer-606").exists()
    assert HitlRequest.objects.get(pk=request_id).review["qa_report"]["reviewerNote"] == "internal-note-404"


# Planted in what the governance surfaces carry: a manual trigger's note (API
# and console) and a manual policy's failure message.
GOVERNANCE_SECRETS = {
    "trigger note token": "abc-trigger-515",
    "manual fail message password": "hunter2-stop-616",
    "console trigger note apiKey": "sk-console-717",
}


@pytest.mark.django_db(transaction=True)
def test_governance_surfaces_are_redacted(json_log, api_for, client_user, operator, drain):
    from django.test import Client

    envelope = load_envelope("approval-required")
    envelope["policies"]["runtime"][0]["action"].update({"timeoutSeconds": 3600, "escalateAfterSeconds": 600,
                                                         "escalateTo": {"users": ["olivia"]}})
    envelope["policies"]["runtime"].append({"id": "stop-now", "trigger": {"kind": "manual"}, "action": {
        "type": "fail", "message": "Stopped; the vault password=hunter2-stop-616"}})
    owner = api_for(client_user)
    stopped = owner.post("/api/v1/flex/runs", envelope, format="json").json()["runId"]
    console_run = owner.post("/api/v1/flex/runs", envelope, format="json").json()["runId"]
    drain()
    shown: dict[str, str] = {}
    trigger = api_for(operator).post(f"/api/v1/flex/runs/{stopped}/policies/stop-now/trigger",
                                     {"note": "asked by ops, token=abc-trigger-515"}, format="json")
    assert trigger.status_code == 202, trigger.content
    shown["trigger body"] = trigger.content.decode()
    browser = Client()
    browser.force_login(operator)
    from django.contrib.admin.utils import quote
    from django.urls import reverse

    pressed = browser.post(reverse("admin:runs_run_trigger", args=[quote(console_run)]),
                           {"policy_id": "stop-now", "note": "apiKey: sk-console-717"}, follow=True)
    shown["console after trigger"] = pressed.content.decode()
    for run_id in (stopped, console_run):
        assert Run.objects.get(pk=run_id).status == "failed"
        for person in (client_user, operator):
            api = api_for(person)
            shown[f"debug {run_id} as {person.username}"] = api.get(f"/api/v1/flex/runs/{run_id}").content.decode()
            shown[f"events {run_id} as {person.username}"] = api.get(
                f"/api/v1/flex/runs/{run_id}/events").content.decode()
        shown[f"console {run_id}"] = browser.get(reverse("admin:runs_run_change", args=[quote(run_id)])).content.decode()
        shown[f"history {run_id}"] = browser.get(f"/runs/{run_id}/").content.decode()
    shown["logs"] = json_log.getvalue()

    leaks = {name: [k for k, v in GOVERNANCE_SECRETS.items() if v in text] for name, text in shown.items()}
    assert {name: found for name, found in leaks.items() if found} == {}
    # The surfaces did show them, redacted.
    debug = json.loads(shown[f"debug {stopped} as olivia"])
    audit = next(a for a in debug["audit"] if a["action"] == "policy_triggered_manually")
    assert audit["details"]["note"] == "asked by ops, token=[redacted]"
    assert "Stopped; the vault password=[redacted]" in shown[f"events {stopped} as olivia"]
# --- goals: the judged facet values in plan versions, bundles and the goal's request ---------------------------

GOAL_SECRETS = {key: HITL_SECRETS[key] for key in (
    "review nested password", "review token list", "review x-sensitive field", "review free text password")}


@pytest.mark.django_db(transaction=True)
def test_goal_feedback_secrets_appear_nowhere_a_person_can_read_them(hitl_catalog, json_log, api_for, client_user,
                                                                     operator, drain):
    from django.test import Client

    envelope = load_envelope("facets-output")
    envelope["policies"]["planner"]["selection"] = {"require": ["leaky.ApprovedReview"],
                                                    "forbid": ["qa.ContentReview"]}
    envelope["policies"]["planner"]["goals"] = [
        {"id": "never", "condition": {">=": [{"var": "qa_report.score"}, 2]}, "maxReplans": 1}]
    api = api_for(operator)
    run_id = api_for(client_user).post("/api/v1/flex/runs", envelope, format="json").json()["runId"]
    drain()
    assert Run.objects.get(pk=run_id).status == "awaiting_hitl"  # replanned once, then a person decides

    browser = Client()
    browser.force_login(operator)
    shown = {
        "debug": api.get(f"/api/v1/flex/runs/{run_id}").content.decode(),
        "events": api.get(f"/api/v1/flex/runs/{run_id}/events").content.decode(),
        "pending": api.get("/api/hitl/pending").content.decode(),
        "history": page(browser, link_in(page(browser, "/runs/"), f"/runs/{run_id}/")),
        "logs": json_log.getvalue(),
    }
    leaks = {name: [key for key, secret in GOAL_SECRETS.items() if secret in text] for name, text in shown.items()}
    assert {name: found for name, found in leaks.items() if found} == {}

    # They were shown, redacted: the plan version's trigger, the re-run node's bundle, the request's review.
    debug = json.loads(shown["debug"])
    judged = debug["planVersions"][1]["trigger"]["values"]["qa_report"]
    assert judged["reviewerNote"] == "[redacted]" and judged["reviewer"]["account"]["password"] == "[redacted]"
    rerun = next(n for n in debug["nodes"] if n["capabilityId"] == "leaky.ApprovedReview")
    assert rerun["input"]["goalFeedback"][0]["values"]["qa_report"]["reviewerNote"] == "[redacted]"
    updated = next(e for e in json.loads(shown["events"])["events"] if e["type"] == "plan_updated")
    assert updated["payload"]["trigger"]["values"]["qa_report"]["reviewerNote"] == "[redacted]"
    review_shown = json.loads(shown["pending"])["runs"][0]["pendingRequest"]["review"]["qa_report"]
    assert review_shown["reviewerNote"] == "[redacted]"
    assert "v2" in shown["history"] and "goal" in shown["history"]
    # The stored trigger keeps the real values (the capability that re-runs needs them).
    from runs.models import PlanVersion

    stored = PlanVersion.objects.get(run_id=run_id, version=2).trigger["values"]["qa_report"]
    assert stored["reviewerNote"] == "internal-note-404"


# --- human tasks: the task inbox and the task page ------------------------------------------------------

TASK_SECRETS = {
    "objective token": "abc-task-objective-121",
    "input nested apiKey": "sk-task-input-232",
    "input free text password": "hunter2-task-343",
    "special instruction token": "abc-task-instruction-454",
}


@pytest.mark.django_db(transaction=True)
def test_task_secrets_appear_nowhere_on_the_task_inbox_and_the_task_page(settings, client_user, operator, support,
                                                                         make_user, drain):
    from django.contrib.auth.models import Group
    from django.test import Client

    from runs.models import Task, TaskStatus
    from runs.services import run_create

    settings.FLEX_HUMAN_CAPABILITIES = json.loads(
        (Path(django_settings.BASE_DIR) / "examples" / "capabilities" / "human.json").read_text())
    editor = make_user("edith", "client")
    editor.groups.add(Group.objects.get_or_create(name="capability:human.CopyEdit")[0])
    envelope = load_envelope("human-task")
    envelope["objective"] += " (publish with CMS token=abc-task-objective-121)"
    envelope["inputs"]["company_information"]["integrations"] = {"cms": {"apiKey": "sk-task-input-232"}}
    envelope["inputs"]["post_context"]["details"] += ". Staging login: password=hunter2-task-343"
    envelope["specialInstructions"] = ["Schedule it with token=abc-task-instruction-454"]
    run = run_create(user=client_user, envelope=envelope)
    for _ in range(20):
        drain()
        task = Task.objects.filter(run_id=run.id, status=TaskStatus.OPEN).first()
        if task is not None:
            break
    assert task is not None, Run.objects.get(pk=run.id).status

    shown: dict[str, str] = {}
    for person, bases in ((operator, ("/admin/runs/run/tasks/", "/runs/tasks/")),
                          (support, ("/admin/runs/run/tasks/", "/runs/tasks/")), (editor, ("/runs/tasks/",))):
        browser = Client()
        browser.force_login(person)
        for base in bases:
            inbox = page(browser, base)
            shown[f"inbox {base} as {person.username}"] = inbox
            shown[f"task {base} as {person.username}"] = page(browser, link_in(inbox, f"{base}{task.id}/"))
    browser = Client()
    browser.force_login(editor)
    claimed = browser.post(f"/runs/tasks/{task.id}/claim/", follow=True)
    assert claimed.status_code == 200
    shown["task form as edith"] = claimed.content.decode()
    shown["inbox mine as edith"] = page(browser, "/runs/tasks/?status=mine")

    assert {name: [k for k, s in TASK_SECRETS.items() if s in text] for name, text in shown.items()
            if any(s in text for s in TASK_SECRETS.values())} == {}
    # The pages really showed the task: the company, the redacted values, the form.
    form_page = shown["task form as edith"]
    assert 'id="task-form"' in form_page and "Akkuro" in form_page
    assert "publish with CMS token=[redacted]" in form_page
    assert "Schedule it with token=[redacted]" in form_page
    assert "publish with CMS token=[redacted]" in shown["inbox /runs/tasks/ as sam"]


# --- tasks: the task list, a person's view of a human task, the logs ------------------

HUMAN_REVIEW = {"capabilityId": "human.Review", "displayName": "Human reviewer", "kind": "validation",
                "inputFacets": ["copyVariants"], "outputFacets": ["qa_report"]}


def task_envelope(capability: str) -> dict[str, Any]:
    envelope = planted_envelope("leaky.Review")
    others = [c for c in ("leaky.Review", "leaky.BrokenReview", "acme.Review", "human.Review") if c != capability]
    envelope["policies"]["planner"]["selection"] = {"require": [capability], "forbid": ["qa.ContentReview", *others]}
    return envelope


@pytest.mark.django_db(transaction=True)
def test_task_surfaces_show_no_secrets(leaky_capabilities, settings, json_log, api_for, client_user, operator,
                                       make_user, drain):
    from runs.engine import tasks as task_services
    from tests.runs.agents_helpers import registration

    settings.FLEX_HUMAN_CAPABILITIES = [HUMAN_REVIEW]
    agent = api_for(make_user("acme-bot", "agent"))
    assert agent.post("/api/v1/flex/agents/register", registration(), format="json").status_code == 200
    api = api_for(client_user)
    by_agent = api.post("/api/v1/flex/runs", task_envelope("acme.Review"), format="json").json()["runId"]
    by_person = api.post("/api/v1/flex/runs", task_envelope("human.Review"), format="json").json()["runId"]
    drain()

    shown: dict[str, str] = {}
    for name, reader in (("operator", api_for(operator)), ("agent", agent)):
        listing = reader.get("/api/v1/flex/tasks")
        assert listing.status_code == 200
        shown[f"task list as {name}"] = listing.content.decode()
    assert by_agent in shown["task list as agent"] and by_person in shown["task list as operator"]

    # The agent is the capability: its claim carries the real values, as an
    # in-process capability's bundle does (docs/agents.md).
    claimed = agent.post("/api/v1/flex/agents/acme-review/tasks/claim", {}, format="json").json()["task"]
    assert claimed["bundle"]["metadata"]["apiKey"] == "sk-meta-111"
    report = review(claimed["bundle"]["facets"]["copyVariants"])
    report["reviewer"] = {"name": "Agent", "account": {"password": 918273, "token": ["sk-out-555"]}}
    done = agent.post(f"/api/v1/flex/tasks/{claimed['taskId']}/complete",
                      {"leaseToken": claimed["leaseToken"], "output": {"qa_report": report}}, format="json")
    assert done.status_code == 200, done.json()
    drain()
    assert Run.objects.get(pk=by_agent).status == "completed"
    shown["debug of the agent's run"] = api_for(operator).get(f"/api/v1/flex/runs/{by_agent}").content.decode()
    shown["task list after"] = api_for(operator).get("/api/v1/flex/tasks").content.decode()

    # A person's view of a human task: redacted, ordinary values visible.
    human_task = task_services.tasks_for_person(operator).get(run_id=by_person)
    person_view = task_services.task_bundle_for_person(user=operator, task_id=human_task.id)
    shown["human task bundle"] = json.dumps(person_view)
    assert person_view["metadata"]["apiKey"] == "[redacted]"
    assert person_view["metadata"]["campaign"] == "spring-launch"
    assert [f["name"] for f in person_view["outputFacets"]] == ["qa_report"]
    claimed_by_person = task_services.task_claim_for_person(user=operator, task_id=human_task.id)
    shown["human claim as shown"] = json.dumps(task_services.task_bundle_for_person(
        user=operator, task_id=claimed_by_person.task.id))
    shown["logs"] = json_log.getvalue()

    assert {name: leaked(text) for name, text in shown.items() if leaked(text)} == {}
    # The surfaces really carried the tasks (not empty bodies that leak nothing).
    assert "node_dispatched" in shown["debug of the agent's run"] and "[redacted]" in shown["human task bundle"]
