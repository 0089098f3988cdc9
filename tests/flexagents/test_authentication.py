from __future__ import annotations

from typing import Any

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

pytestmark = [pytest.mark.urls("tests.flexagents.urls"), pytest.mark.django_db]


def post(headers: dict[str, str] | None = None) -> Any:
    return APIClient().post("/api/test/echo", data={}, format="json", headers=headers or {})


def test_it_accepts_a_bearer_token(client_user: Any) -> None:
    token = Token.objects.create(user=client_user)
    response = post({"Authorization": f"Bearer {token.key}"})
    assert response.status_code == 200
    assert response.json()["user"] == "clara"


def test_it_answers_401_without_credentials() -> None:
    response = post()
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


def test_it_answers_401_for_an_unknown_token() -> None:
    response = post({"Authorization": "Bearer not-a-real-token"})
    assert response.status_code == 401
    assert response.json() == {"code": "not_authenticated",
                                "message": "Authentication credentials were missing or invalid.", "details": {}}


def test_it_answers_401_for_a_bearer_header_without_a_token() -> None:
    assert post({"Authorization": "Bearer"}).status_code == 401


def test_it_does_not_accept_the_token_keyword(client_user: Any) -> None:
    token = Token.objects.create(user=client_user)
    assert post({"Authorization": f"Token {token.key}"}).status_code == 401


def test_it_refuses_the_token_of_an_inactive_user(client_user: Any) -> None:
    token = Token.objects.create(user=client_user)
    client_user.is_active = False
    client_user.save()
    assert post({"Authorization": f"Bearer {token.key}"}).status_code == 401


def test_it_answers_a_session_write_without_csrf_token_with_reason_csrf(client_user: Any) -> None:
    api = APIClient(enforce_csrf_checks=True)
    api.force_login(client_user)
    response = api.post("/api/test/echo", data={}, format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"
    assert response.json()["details"] == {"reason": "csrf"}


def test_it_accepts_a_session_write_with_the_csrf_token(client_user: Any) -> None:
    api = APIClient(enforce_csrf_checks=True)
    api.force_login(client_user)
    api.get("/admin/login/")  # sets the csrftoken cookie
    token = api.cookies["csrftoken"].value
    response = api.post("/api/test/echo", data={}, format="json", headers={"X-CSRFToken": token})
    assert response.status_code == 200
