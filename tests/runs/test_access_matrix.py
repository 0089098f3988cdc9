"""Every endpoint × every persona (API.md, Roles and access):

anonymous 401 · the owning client 200 · another client 404 on someone else's
run · support 200 for reads, 403 for submit and cancel · operator 200.

`/api/health` is the one public endpoint (a load-balancer probe). The HITL
endpoints and `run.resume` have their own matrices beside their tests.
"""
from __future__ import annotations

from typing import Any, Callable

import pytest
from asgiref.sync import async_to_sync

from runs.models import Run
from tests.conftest import load_envelope

PERSONAS = ("anonymous", "owner", "other_client", "support", "operator")
FIXTURE_OF = {"owner": "client_user", "other_client": "other_client", "support": "support", "operator": "operator"}


def envelope(_: str) -> dict[str, Any]:
    return load_envelope("linkedin-variants")


def cancel_body(_: str) -> dict[str, Any]:
    return {"reason": "access matrix"}


# (name, method, path, body, expected status per persona in PERSONAS order)
ENDPOINTS: list[tuple[str, str, str, Callable[[str], Any] | None, tuple[int, ...]]] = [
    ("submit and stream", "post", "/api/v1/flex/run.stream", envelope, (401, 200, 200, 403, 200)),
    ("submit", "post", "/api/v1/flex/runs", envelope, (401, 202, 202, 403, 202)),
    ("list", "get", "/api/v1/flex/runs", None, (401, 200, 200, 200, 200)),
    ("debug view", "get", "/api/v1/flex/runs/{run}", None, (401, 200, 404, 200, 200)),
    ("stream", "get", "/api/v1/flex/runs/{run}/stream", None, (401, 200, 404, 200, 200)),
    ("events", "get", "/api/v1/flex/runs/{run}/events", None, (401, 200, 404, 200, 200)),
    ("cancel", "post", "/api/v1/flex/runs/{run}/cancel", cancel_body, (401, 200, 404, 403, 200)),
    ("capabilities", "get", "/api/v1/flex/capabilities", None, (401, 200, 200, 200, 200)),
    ("facets", "get", "/api/v1/flex/facets", None, (401, 200, 200, 200, 200)),
    ("plan preview", "post", "/api/v1/flex/plan.preview", envelope, (401, 200, 200, 200, 200)),
    ("health", "get", "/api/health", None, (200, 200, 200, 200, 200)),
]
CODES = {401: "not_authenticated", 403: "permission_denied", 404: "run_not_found"}

CASES = [pytest.param(name, method, path, body, persona, expected[i], id=f"{name}-{persona}")
         for name, method, path, body, expected in ENDPOINTS for i, persona in enumerate(PERSONAS)]


@pytest.fixture(autouse=True)
def _fast_passwords(settings: Any) -> None:
    # Five personas per case: the default PBKDF2 work factor would dominate the run time.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


async def _collect(response: Any) -> str:
    chunks = []
    async for chunk in response.streaming_content:
        chunks.append(chunk.decode() if isinstance(chunk, bytes) else chunk)
    return "".join(chunks)


def consume(response: Any) -> str:
    """Read a stream to its end (it also gives back the stream's admission slot)."""
    if getattr(response, "streaming", False):
        return async_to_sync(_collect)(response)
    return response.content.decode()


@pytest.fixture
def persona_api(request: Any, api_for: Callable[[Any], Any]) -> Callable[[str], Any]:
    def make(persona: str) -> Any:
        return api_for(None if persona == "anonymous" else request.getfixturevalue(FIXTURE_OF[persona]))

    return make


@pytest.fixture
def owned_run(api_for: Callable[[Any], Any], client_user: Any) -> str:
    """A queued run of the owning client (queued, so that cancel can succeed)."""
    response = api_for(client_user).post("/api/v1/flex/runs", load_envelope("linkedin-variants"), format="json")
    assert response.status_code == 202
    return response.json()["runId"]


@pytest.mark.parametrize("name, method, path, body, persona, expected", CASES)
def test_access_matrix(persona_api, owned_run, name, method, path, body, persona, expected):
    api = persona_api(persona)
    url = path.format(run=owned_run)
    kwargs = {"format": "json"} if body is not None else {}
    if body is not None:
        kwargs["data"] = body(owned_run)

    response = getattr(api, method)(url, **kwargs)
    content = consume(response)

    assert response.status_code == expected, content[:500]
    if expected in CODES:
        assert response.json()["code"] == CODES[expected]
        assert owned_run not in content or expected == 404 and response.json()["details"] == {"runId": owned_run}
    if name == "list" and persona == "other_client":
        assert owned_run not in content
    if name == "cancel":
        assert Run.objects.get(pk=owned_run).status == ("cancelled" if expected == 200 else "queued")


def case_variants(run_id: str) -> list[str]:
    return [run_id.upper(), run_id.swapcase(), run_id.capitalize(), f"{run_id}%20", f"%20{run_id}",
            f"{run_id[:-1]}{run_id[-1].upper()}X", f"{run_id}%00", f"{run_id}.json"]


@pytest.mark.parametrize("suffix", ["", "/stream", "/events", "/cancel"])
def test_case_variants_of_a_run_id_never_reveal_another_run(api_for, owned_run, client_user, other_client, suffix):
    for user in (other_client, client_user):
        api = api_for(user)
        for variant in case_variants(owned_run):
            url = f"/api/v1/flex/runs/{variant}{suffix}"
            response = api.post(url, {}, format="json") if suffix == "/cancel" else api.get(url)
            consume(response)
            assert response.status_code == 404, (user.username, url)
            assert response.json()["code"] in ("run_not_found", "not_found")
    assert Run.objects.get(pk=owned_run).status == "queued"


@pytest.mark.parametrize("query", ["?channel=run-{victim}", "?channels=run-{victim}", "?run_id={victim}",
                                   "?runId={victim}&channel=run-{victim}"])
def test_query_string_tricks_on_another_clients_stream_get_not_found(api_for, owned_run, other_client, query):
    url = f"/api/v1/flex/runs/{owned_run}/stream" + query.format(victim=owned_run)

    response = api_for(other_client).get(url)

    assert response.status_code == 404 and response.json()["code"] == "run_not_found"


@pytest.mark.django_db(transaction=True)
def test_query_string_tricks_on_your_own_stream_show_only_your_run(api_for, client_user, other_client, drain):
    victim = api_for(client_user).post("/api/v1/flex/runs", load_envelope("linkedin-variants"),
                                       format="json").json()["runId"]
    own = api_for(other_client).post("/api/v1/flex/runs", load_envelope("linkedin-variants"),
                                     format="json").json()["runId"]
    drain()
    api = api_for(other_client)

    for query in (f"?channel=run-{victim}", f"?channels=run-{victim}&channel=run-{victim}", f"?runId={victim}"):
        response = api.get(f"/api/v1/flex/runs/{own}/stream{query}")
        body = consume(response)
        assert response.status_code == 200
        assert f'"runId":"{own}"' in body and '"type":"complete"' in body
        assert victim not in body
        events = api.get(f"/api/v1/flex/runs/{own}/events{query}")
        assert events.status_code == 200 and victim not in events.content.decode()
    # Another run's event id is refused, not followed.
    response = api.get(f"/api/v1/flex/runs/{own}/stream?lastEventId={victim}:1")
    assert response.status_code == 422
    response = api.get(f"/api/v1/flex/runs/{own}/stream", HTTP_LAST_EVENT_ID=f"{victim}:1")
    assert response.status_code == 422
    assert victim not in response.content.decode()
