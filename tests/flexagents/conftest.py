from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import Group
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from flexagents.roles import Role


@pytest.fixture
def make_user(db: None, django_user_model: Any) -> Callable[..., Any]:
    """A user in the given role group (None: an outsider with no role)."""

    def make(username: str, role: str | None = None, **fields: Any) -> Any:
        if role == Role.ADMIN:
            return django_user_model.objects.create_superuser(username=username, password="pw", **fields)
        user = django_user_model.objects.create_user(username=username, password="pw", **fields)
        if role is not None:
            user.groups.add(Group.objects.get(name=role))
        return user

    return make


@pytest.fixture
def client_user(make_user: Callable[..., Any]) -> Any:
    return make_user("clara", Role.CLIENT)


@pytest.fixture
def token_client(client_user: Any) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {Token.objects.create(user=client_user).key}")
    return api
