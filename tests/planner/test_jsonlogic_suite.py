"""The official JSON-Logic test suite (https://jsonlogic.com/tests.json, vendored
under tests/planner/data/) run against `planner.jsonlogic`.

Every case must give the expected value with the expected JSON type: `1` and
`1.0` are the same JSON number, but `true` is not `1`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from planner import jsonlogic

SUITE = Path(__file__).parent / "data" / "jsonlogic-tests.json"


def _cases() -> list[Any]:
    items = json.loads(SUITE.read_text(encoding="utf-8"))
    cases, section = [], "start"
    for item in items:
        if isinstance(item, str):
            section = item
        else:
            cases.append(pytest.param(*item, id=f"{section[:40]}-{len(cases)}"))
    return cases


def _json_kind(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


def same_json(got: Any, expected: Any) -> bool:
    if _json_kind(got) != _json_kind(expected):
        return False
    if isinstance(expected, list):
        return len(got) == len(expected) and all(same_json(g, e) for g, e in zip(got, expected))
    if isinstance(expected, dict):
        return got.keys() == expected.keys() and all(same_json(got[k], expected[k]) for k in expected)
    return bool(got == expected)


def test_the_vendored_suite_is_the_whole_suite():
    cases = _cases()
    assert len(cases) == 277  # the count of jsonlogic.com/tests.json at the vendored commit


@pytest.mark.parametrize("rule, data, expected", _cases())
def test_official_suite(rule, data, expected):
    assert jsonlogic.validate_rule(rule) == [] or not isinstance(rule, dict)
    assert same_json(jsonlogic.evaluate(rule, data), expected)


def test_the_comparison_can_fail():
    assert not same_json(True, 1) and not same_json([1, True], [1, 1]) and not same_json("1", 1)
