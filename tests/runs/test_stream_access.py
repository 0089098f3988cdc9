"""The stream's access cache (runs.stream_access): a stream request with a
Bearer token is answered from a few seconds' cache of token -> user and
(user, run) -> may view. A cached positive answers only for the user it was
computed for; a right revoked in another process takes effect within
FLEX_SSE_ACCESS_CACHE_SECONDS; one revoked in this process at once."""
from __future__ import annotations

import json
import time

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.test import AsyncClient
from guardian.models import UserObjectPermission
from rest_framework.authtoken.models import Token

from runs import stream_access
from tests.conftest import load_envelope
from tests.sse import parse_sse

# The stream's set-up reads on the shared executor with its own connection.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _empty_cache():
    stream_access.clear()
    yield
    stream_access.clear()


def completed_run(api, drain):
    response = api.post("/api/v1/flex/runs", load_envelope("linkedin-variants"), format="json")
    assert response.status_code == 202, response.content
    drain()
    return response.json()["runId"]


def open_stream(run_id, user):
    """GET the run's stream with the user's Bearer token through the ASGI
    handler (where the cached path runs). (status, frames or error body)."""
    token, _ = Token.objects.get_or_create(user=user)

    async def go():
        response = await AsyncClient().get(f"/api/v1/flex/runs/{run_id}/stream",
                                           headers={"Authorization": f"Bearer {token.key}"})
        if response.status_code != 200:
            return response.status_code, json.loads(response.content)
        return 200, parse_sse(b"".join([chunk async for chunk in response.streaming_content]))

    return async_to_sync(go)()


def revoke_elsewhere(user, run_id):
    """Take the owner's rights on the run away as another process would: no
    signal reaches this process."""
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {UserObjectPermission._meta.db_table} WHERE user_id = %s AND object_pk = %s",
                       [user.pk, run_id])


def test_a_cached_positive_never_answers_for_another_user(api_for, drain, client_user, other_client):
    run_id = completed_run(api_for(client_user), drain)

    status, frames = open_stream(run_id, client_user)
    assert status == 200 and frames[-1]["event"] == "complete"
    assert stream_access._may_view.get((client_user.pk, run_id)) is not None  # the owner's answer is cached

    status, error = open_stream(run_id, other_client)
    assert status == 404 and error["code"] == "run_not_found"
    assert stream_access._may_view.get((other_client.pk, run_id)) is None  # refusals are not cached
    assert async_to_sync(stream_access.may_view)(other_client.pk, run_id) is False
    assert async_to_sync(stream_access.may_view)(client_user.pk, run_id) is True


def test_a_right_revoked_in_another_process_is_refused_after_the_ttl(api_for, drain, client_user, settings):
    settings.FLEX_SSE_ACCESS_CACHE_SECONDS = 3.0
    run_id = completed_run(api_for(client_user), drain)
    assert open_stream(run_id, client_user)[0] == 200
    revoke_elsewhere(client_user, run_id)

    # Within the TTL the cached answer stands (the documented delay)...
    assert open_stream(run_id, client_user)[0] == 200
    time.sleep(3.1)
    # ...after it, the user is refused, and an open stream's re-check says so too.
    status, error = open_stream(run_id, client_user)
    assert status == 404 and error["code"] == "run_not_found"
    assert async_to_sync(stream_access.may_view)(client_user.pk, run_id) is False


def test_a_right_revoked_in_this_process_is_refused_at_once(api_for, drain, client_user, settings):
    settings.FLEX_SSE_ACCESS_CACHE_SECONDS = 60.0
    run_id = completed_run(api_for(client_user), drain)
    assert open_stream(run_id, client_user)[0] == 200

    UserObjectPermission.objects.filter(user=client_user, object_pk=run_id).delete()

    assert open_stream(run_id, client_user)[0] == 404


def test_a_deactivated_user_is_refused_at_once(api_for, drain, client_user, settings):
    settings.FLEX_SSE_ACCESS_CACHE_SECONDS = 60.0
    run_id = completed_run(api_for(client_user), drain)
    assert open_stream(run_id, client_user)[0] == 200

    client_user.is_active = False
    client_user.save(update_fields=["is_active"])

    assert open_stream(run_id, client_user)[0] == 401


def test_with_the_cache_off_every_request_is_checked(api_for, drain, client_user, settings):
    settings.FLEX_SSE_ACCESS_CACHE_SECONDS = 0
    run_id = completed_run(api_for(client_user), drain)
    assert open_stream(run_id, client_user)[0] == 200
    assert len(stream_access._may_view) == 0
    revoke_elsewhere(client_user, run_id)
    assert open_stream(run_id, client_user)[0] == 404
