"""planner.jsonlogic: the evaluator behind runtime policy conditions."""
from __future__ import annotations

import time
from typing import Any

import pytest

from planner import jsonlogic
from planner.jsonlogic import MAX_DEPTH, JsonLogicError, evaluate, truthy, validate_rule

DATA = {"a": 1, "b": {"c": "x", "d": [10, 20, 30]}, "empty": "", "none": None, "list": [1, 2, 3, 4]}


@pytest.mark.parametrize(("rule", "expected"), [
    # literals
    (1, 1), ("s", "s"), (True, True), (None, None), ([1, {"var": "a"}], [1, 1]),
    # var
    ({"var": "a"}, 1),
    ({"var": ["a"]}, 1),
    ({"var": "b.c"}, "x"),
    ({"var": "b.d.1"}, 20),
    ({"var": ["b.missing", "fallback"]}, "fallback"),
    ({"var": "nope"}, None),
    ({"var": ""}, DATA),
    ({"var": [{"cat": ["b", ".", "c"]}]}, "x"),
    # missing / missing_some
    ({"missing": ["a", "zz", "b.c", "empty", "none"]}, ["zz", "empty", "none"]),
    ({"missing": "a"}, []),
    ({"missing_some": [1, ["a", "zz"]]}, []),
    ({"missing_some": [2, ["a", "zz", "yy"]]}, ["zz", "yy"]),
    # if / ?:
    ({"if": [True, "yes", "no"]}, "yes"),
    ({"if": [False, "yes", "no"]}, "no"),
    ({"if": [False, 1, False, 2, 3]}, 3),
    ({"if": [False, 1, True, 2, 3]}, 2),
    ({"if": [False, 1]}, None),
    ({"?:": [{"var": "a"}, "set", "unset"]}, "set"),
    # equality
    ({"==": [1, 1]}, True), ({"==": [1, "1"]}, True), ({"==": [0, False]}, True), ({"==": [None, 0]}, False),
    ({"==": [None, None]}, True), ({"==": ["a", "b"]}, False),
    ({"===": [1, "1"]}, False), ({"===": [1, 1.0]}, True), ({"===": [True, 1]}, False),
    ({"!=": [1, 2]}, True), ({"!=": [1, "1"]}, False), ({"!==": [1, "1"]}, True), ({"!==": [2, 2]}, False),
    # negation and truthiness
    ({"!": [True]}, False), ({"!": [[]]}, True), ({"!": ""}, True), ({"!!": [[0]]}, True), ({"!!": ["0"]}, True),
    ({"!!": [0]}, False), ({"!!": [[]]}, False),
    # or / and return the deciding value
    ({"or": [False, 0, "a"]}, "a"), ({"or": [False, 0]}, 0), ({"and": [1, "x", 3]}, 3), ({"and": [1, "", 3]}, ""),
    # comparisons, including the between form
    ({">": [2, 1]}, True), ({">": ["b", "a"]}, True), ({">=": [1, 1]}, True), ({"<": [1, 2]}, True),
    ({"<=": [2, 2]}, True), ({"<": [1, 2, 3]}, True), ({"<": [1, 1, 3]}, False), ({"<=": [1, 1, 3]}, True),
    ({"<=": [1, 4, 3]}, False), ({">": ["10", 9]}, True),
    # arithmetic
    ({"max": [1, 3, 2]}, 3), ({"min": [1, 3, 2]}, 1), ({"max": []}, None),
    ({"+": [1, 2, "3"]}, 6), ({"+": ["3.5"]}, 3.5), ({"-": [5, 2]}, 3), ({"-": [2]}, -2),
    ({"*": [2, 3, 0.5]}, 3), ({"/": [7, 2]}, 3.5), ({"/": [1, 0]}, None), ({"%": [7, 3]}, 1), ({"%": [-7, 3]}, -1),
    # strings and arrays
    ({"in": ["b", ["a", "b"]]}, True), ({"in": ["z", ["a"]]}, False), ({"in": ["ell", "hello"]}, True),
    ({"in": [1, None]}, False),
    ({"cat": ["a", 1, None, True]}, "a1nulltrue"),
    ({"substr": ["jsonlogic", 4]}, "logic"), ({"substr": ["jsonlogic", -5]}, "logic"),
    ({"substr": ["jsonlogic", 1, 3]}, "son"), ({"substr": ["jsonlogic", 4, -2]}, "log"),
    ({"merge": [[1, 2], 3, [[4]]]}, [1, 2, 3, [4]]),
    # iteration
    ({"all": [{"var": "list"}, {">": [{"var": ""}, 0]}]}, True),
    ({"all": [[], {">": [{"var": ""}, 0]}]}, False),
    ({"some": [{"var": "list"}, {">": [{"var": ""}, 3]}]}, True),
    ({"none": [{"var": "list"}, {">": [{"var": ""}, 9]}]}, True),
    ({"map": [{"var": "list"}, {"*": [{"var": ""}, 2]}]}, [2, 4, 6, 8]),
    ({"filter": [{"var": "list"}, {"%": [{"var": ""}, 2]}]}, [1, 3]),
    ({"reduce": [{"var": "list"}, {"+": [{"var": "current"}, {"var": "accumulator"}]}, 0]}, 10),
    ({"map": [{"var": "nothing"}, 1]}, []),
])
def test_it_evaluates_each_operator(rule: Any, expected: Any) -> None:
    assert evaluate(rule, DATA) == expected


def test_integer_results_stay_integers() -> None:
    assert isinstance(evaluate({"+": [1, 2]}), int)


def test_or_short_circuits() -> None:
    # The unknown operator would raise if it were evaluated.
    assert evaluate({"or": [True, {"explode": []}]}) is True
    assert evaluate({"and": [False, {"explode": []}]}) is False
    assert evaluate({"if": [True, 1, {"explode": []}]}) == 1


def test_it_reads_a_policy_style_condition() -> None:
    data = {"node": {"capabilityId": "qa.ContentReview"}, "output": {"qa_report": {"score": 0.4}}}
    rule = {"and": [{"==": [{"var": "node.capabilityId"}, "qa.ContentReview"]},
                    {"<": [{"var": "output.qa_report.score"}, 0.5]}]}
    assert evaluate(rule, data) is True


def test_it_raises_on_an_unknown_operator() -> None:
    with pytest.raises(JsonLogicError, match="unknown operator 'regex'"):
        evaluate({"regex": ["a", "b"]})


def test_it_bounds_the_recursion_depth() -> None:
    rule: Any = True
    for _ in range(MAX_DEPTH + 5):
        rule = {"!!": [rule]}
    with pytest.raises(JsonLogicError, match="deeper"):
        evaluate(rule)


def test_a_rule_without_data_sees_an_empty_object() -> None:
    assert evaluate({"var": "a"}) is None
    assert evaluate({"missing": ["a"]}) == ["a"]


def test_missing_some_needs_a_minimum_and_keys() -> None:
    with pytest.raises(JsonLogicError):
        evaluate({"missing_some": [1]})


def test_truthiness_follows_json_logic() -> None:
    assert [truthy(v) for v in (0, "", None, [], False, "0", [0], {}, 1)] == [
        False, False, False, False, False, True, True, False, True]


def test_validate_rule_lists_unknown_operators_without_running_them() -> None:
    rule = {"and": [{"regex": ["a"]}, {"if": [{"var": "x"}, {"shell": "rm"}, 1]}, {"regex": ["b"]}]}
    assert validate_rule(rule) == ["unknown operator 'regex'", "unknown operator 'shell'"]


def test_validate_rule_accepts_every_known_operator() -> None:
    rule = {"and": [{"var": "a"}, {"missing": ["a"]}, {"missing_some": [1, ["a"]]}, {"?:": [1, 2, 3]},
                    {"reduce": [[1], {"+": [{"var": "current"}, 1]}, 0]}, {"substr": ["a", 0]}]}
    assert validate_rule(rule) == []
    assert validate_rule(True) == []


def test_validate_rule_reports_runaway_nesting() -> None:
    rule: Any = 1
    for _ in range(MAX_DEPTH + 5):
        rule = {"!": [rule]}
    assert validate_rule(rule) == [f"the rule is nested deeper than {MAX_DEPTH} levels"]


# --- budgets -------------------------------------------------------------------------

def nested_some(levels: int, items: int) -> dict:
    rule: dict = {"==": [1, 2]}
    for _ in range(levels):
        rule = {"some": [list(range(items)), rule]}
    return rule


def test_it_stops_an_evaluation_past_the_operation_budget_quickly() -> None:
    rule = nested_some(4, 30)  # 810,000 inner evaluations unbounded
    assert jsonlogic.validate_rule(rule) == []
    started = time.monotonic()
    with pytest.raises(jsonlogic.JsonLogicError, match="operations"):
        jsonlogic.evaluate(rule)
    assert time.monotonic() - started < 1


def test_it_stops_a_doubling_reduce_at_the_array_limit() -> None:
    doubling = {"reduce": [list(range(40)), {"merge": [{"var": "accumulator"}, {"var": "accumulator"}]}, [1]]}
    with pytest.raises(jsonlogic.JsonLogicError, match="array of more than"):
        jsonlogic.evaluate(doubling)


def test_it_stops_a_doubling_cat_at_the_string_limit() -> None:
    doubling = {"reduce": [list(range(40)), {"cat": [{"var": "accumulator"}, {"var": "accumulator"}]}, "ab"]}
    with pytest.raises(jsonlogic.JsonLogicError, match="string of more than"):
        jsonlogic.evaluate(doubling)


def test_it_refuses_to_iterate_over_an_oversized_array_from_the_data() -> None:
    with pytest.raises(jsonlogic.JsonLogicError, match="array of more than"):
        jsonlogic.evaluate({"some": [{"var": "items"}, {"==": [{"var": ""}, -1]}]}, {"items": list(range(5000))})


@pytest.mark.parametrize(("rule", "problem"), [
    (nested_some(2, 1500), "array of more than 1000 items"),
    ({"and": [{"==": [i, i]} for i in range(800)]}, "more than 2000 nodes"),
    (nested_some(40, 1), "nested deeper than 32 levels"),
])
def test_an_oversized_rule_is_refused_before_it_runs(rule: dict, problem: str) -> None:
    [message] = jsonlogic.validate_rule(rule)
    assert problem in message
