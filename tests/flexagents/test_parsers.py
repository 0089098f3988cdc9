from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.core.exceptions import RequestDataTooBig
from django.test import override_settings
from rest_framework.exceptions import ParseError
from rest_framework.test import APIClient

from flexagents.errors import ValidationFailed
from flexagents.parsers import MAX_JSON_DEPTH, StrictJSONParser

pytestmark = pytest.mark.urls("tests.flexagents.urls")


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def parse(body: bytes, meta: dict[str, str] | None = None) -> Any:
    class FakeRequest:
        META = meta if meta is not None else {"CONTENT_LENGTH": str(len(body))}

    return StrictJSONParser().parse(io.BytesIO(body), "application/json", {"request": FakeRequest()})


def test_it_parses_json() -> None:
    assert parse(b'{"a": [1, 2.5, null, true, "\xc3\xa9"]}') == {"a": [1, 2.5, None, True, "é"]}


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_it_rejects_non_standard_constants(constant: str) -> None:
    with pytest.raises(ParseError):
        parse(f'{{"a": {constant}}}'.encode())


def test_it_accepts_64_levels_and_refuses_65() -> None:
    assert parse(json.dumps(nested(MAX_JSON_DEPTH)).encode())
    with pytest.raises(ValidationFailed) as caught:
        parse(json.dumps(nested(MAX_JSON_DEPTH + 1)).encode())
    assert caught.value.details["maxDepth"] == 64


def test_it_refuses_nesting_that_would_exhaust_the_decoder() -> None:
    with pytest.raises(ValidationFailed):
        parse(b"[" * 100_000 + b"]" * 100_000)


@override_settings(FLEX_MAX_BODY_BYTES=1024)
def test_it_refuses_a_body_declared_too_big() -> None:
    with pytest.raises(RequestDataTooBig):
        parse(b"{}", meta={"CONTENT_LENGTH": "4096"})


@override_settings(FLEX_MAX_BODY_BYTES=1024)
def test_it_refuses_a_body_that_is_too_big_without_a_content_length() -> None:
    with pytest.raises(RequestDataTooBig):
        parse(json.dumps({"a": "x" * 2000}).encode(), meta={})


def test_it_refuses_bytes_that_are_not_utf8() -> None:
    with pytest.raises(ParseError):
        parse(b'{"a": "\xff"}')


# Through DRF and the exception handler ------------------------------------

def test_it_answers_400_malformed_json(token_client: APIClient) -> None:
    response = token_client.post("/api/test/echo", data="{nope", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "malformed_json"


def test_it_answers_400_for_nan(token_client: APIClient) -> None:
    response = token_client.post("/api/test/echo", data='{"a": NaN}', content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "malformed_json"


def test_it_answers_422_for_a_body_nested_too_deep(token_client: APIClient) -> None:
    response = token_client.post("/api/test/echo", data=json.dumps(nested(65)), content_type="application/json")
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "validation_failed"
    assert body["details"]["maxDepth"] == 64
    assert body["details"]["errors"][0]["path"] == "/"


def test_it_answers_415_for_another_media_type(token_client: APIClient) -> None:
    response = token_client.post("/api/test/echo", data="a=1", content_type="text/plain")
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"


def test_it_answers_413_for_a_body_over_the_limit(token_client: APIClient) -> None:
    big = json.dumps({"a": "x" * (1024 * 1024)})
    response = token_client.post("/api/test/echo", data=big, content_type="application/json")
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


def test_it_echoes_a_valid_body(token_client: APIClient) -> None:
    response = token_client.post("/api/test/echo", data={"a": [1, {"b": None}]}, format="json")
    assert response.status_code == 200
    assert response.json()["data"] == {"a": [1, {"b": None}]}
