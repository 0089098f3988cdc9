from __future__ import annotations

import copy
from datetime import datetime
from decimal import Decimal

from flexagents.redaction import REDACTED, SENSITIVE_KEY_RE, redact, redact_facets, redact_text


def test_it_redacts_a_string_password() -> None:
    assert redact({"password": "hunter2", "name": "x"}) == {"password": REDACTED, "name": "x"}


def test_it_redacts_a_numeric_password() -> None:
    assert redact({"password": 1234}) == {"password": REDACTED}


def test_it_redacts_bool_none_list_and_dict_values_under_sensitive_keys() -> None:
    value = {"secret": True, "token": None, "credentials": ["a", "b"], "session": {"id": 1, "user": "u"}}
    assert redact(value) == {"secret": REDACTED, "token": REDACTED, "credentials": REDACTED, "session": REDACTED}


def test_it_redacts_at_any_depth_and_inside_lists() -> None:
    value = {"a": [{"b": {"c": [{"apiKey": "k", "keep": 1}]}}, {"private_key": "p"}]}
    assert redact(value) == {"a": [{"b": {"c": [{"apiKey": REDACTED, "keep": 1}]}}, {"private_key": REDACTED}]}


def test_it_matches_case_variants_and_keys_that_contain_a_stem() -> None:
    for key in ("API_KEY", "x-api-key", "apikey", "sessionId", "Authorization", "SET-COOKIE", "db_passwd",
                "clientSecret", "refresh_token", "aws_credentials", "privateKey", "PRIVATE-KEY", "Password"):
        assert redact({key: "v"}) == {key: REDACTED}, key
        assert SENSITIVE_KEY_RE.search(key)


def test_it_keeps_keys_that_are_not_sensitive() -> None:
    value = {"name": "n", "keyboard": "k", "api": "a", "monkey": 1, "tone": "warm"}
    assert redact(value) == value


def test_it_never_mutates_the_input() -> None:
    value = {"password": "p", "nested": {"token": "t", "items": [{"secret": 1}, [1, 2]]}}
    before = copy.deepcopy(value)
    result = redact(value)
    assert value == before
    result["nested"]["items"][1].append(3)
    assert value == before
    assert result["nested"] is not value["nested"]


def test_it_redacts_fields_the_schema_marks_sensitive() -> None:
    schema = {
        "type": "object",
        "properties": {
            "pin": {"type": "string", "x-sensitive": True},
            "accounts": {"type": "array", "items": {"$ref": "#/$defs/account"}},
            "pair": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "string", "x-sensitive": True}]},
            "extra": {"type": "object", "additionalProperties": {"type": "string", "x-sensitive": True}},
            "either": {"anyOf": [{"type": "string"}, {"type": "number", "x-sensitive": True}]},
        },
        "$defs": {"account": {"type": "object", "properties": {"iban": {"x-sensitive": True}, "bank": {}}}},
    }
    value = {"pin": "1234", "accounts": [{"iban": "DE00", "bank": "B"}], "pair": ["a", "b"],
             "extra": {"anything": "x"}, "either": 3, "other": "kept"}
    assert redact(value, schema=schema) == {
        "pin": REDACTED, "accounts": [{"iban": REDACTED, "bank": "B"}], "pair": ["a", REDACTED],
        "extra": {"anything": REDACTED}, "either": REDACTED, "other": "kept",
    }


def test_it_applies_each_facets_schema() -> None:
    schemas = {"company": {"type": "object", "properties": {"taxId": {"x-sensitive": True}}}}
    facets = {"company": {"name": "Acme", "taxId": "123", "apiKey": "k"}, "tone": "warm", "apiToken": "t"}
    assert redact_facets(facets, schemas) == {
        "company": {"name": "Acme", "taxId": REDACTED, "apiKey": REDACTED}, "tone": "warm", "apiToken": REDACTED,
    }


def test_it_turns_unknown_types_into_redacted_text() -> None:
    class Leaky:
        def __str__(self) -> str:
            return "Leaky(password=hunter2)"

    result = redact({"when": datetime(2026, 1, 1), "amount": Decimal("1.5"), "obj": Leaky(), "pair": ("a", 1)})
    assert result == {"when": "2026-01-01 00:00:00", "amount": "1.5", "obj": "Leaky(password=[redacted])",
                      "pair": ["a", 1]}


def test_it_masks_credentials_in_every_string_whatever_its_key() -> None:
    # One free-text rule: content, notes and messages alike (docs/api.md, Redaction).
    assert redact({"draft": "reset your password=now"}) == {"draft": f"reset your password={REDACTED}"}
    assert redact({"post": ["see token=abc"], "note": {"deep": "api_key: k1"}}) == {
        "post": [f"see token={REDACTED}"], "note": {"deep": f"api_key: {REDACTED}"}}
    assert redact({"draft": "an ordinary post about sessions"}) == {"draft": "an ordinary post about sessions"}


def test_it_redacts_a_bearer_authorization_header_in_text() -> None:
    assert redact_text("Authorization: Bearer abc") == f"Authorization: {REDACTED}"
    assert "abc123" not in redact_text('curl -H "Authorization: Bearer abc123" https://x')
    assert redact_text("sent Bearer abc.def-ghi to upstream") == f"sent Bearer {REDACTED} to upstream"


def test_it_redacts_key_value_pairs_in_text() -> None:
    assert redact_text("login failed password=hunter2 user=bob") == f"login failed password={REDACTED} user=bob"
    assert redact_text('{"apiKey": "k1", "n": 2}') == f'{{"apiKey": "{REDACTED}", "n": 2}}'
    assert redact_text("{'client_secret': 's', 'n': 2}") == f"{{'client_secret': '{REDACTED}', 'n': 2}}"
    assert redact_text("GET /cb?api_key=abc&page=2") == f"GET /cb?api_key={REDACTED}&page=2"
    assert redact_text('"sessionId": 42,') == f'"sessionId": {REDACTED},'
    assert redact_text("Cookie: a=b; sessionid=c") == f"Cookie: {REDACTED}"


def test_it_leaves_ordinary_text_alone() -> None:
    for text in ("Session expired: please retry", "basic information", "no secrets here", ""):
        assert redact_text(text) == text


def test_it_handles_big_payloads() -> None:
    # Behaviour only: how fast is a benchmark's question, never a timed assertion.
    payload = {"items": [{"id": i, "name": f"item {i}", "token": "t", "tags": ["a", "b"]} for i in range(50_000)]}
    result = redact(payload)
    assert all(item["token"] == REDACTED for item in result["items"])
    assert result["items"][49_999]["name"] == "item 49999" and payload["items"][0]["token"] == "t"


def test_it_redacts_what_lies_too_deep_to_walk() -> None:
    value: object = "leaf"
    for _ in range(2000):
        value = [value]
    result = redact(value)
    for _ in range(256):
        result = result[0]
    assert result == REDACTED


def test_a_query_string_has_every_sensitive_parameter_masked_even_percent_encoded() -> None:
    from flexagents.redaction import redact_query_string

    masked = redact_query_string("status=a&api_key=s1&token=s2&ticket=s3&api%5Fkey=s4&note=password%3Ds5&status=b")
    assert "s1" not in masked and "s2" not in masked and "s3" not in masked and "s4" not in masked
    assert "s5" not in masked
    assert masked.startswith("status=a&api_key=[redacted]&token=[redacted]&ticket=[redacted]")
    assert masked.endswith("&status=b")
