"""A small JSON-Logic evaluator (https://jsonlogic.com) for runtime policy conditions.

Conditions come from callers, so evaluation is bounded (a condition is
evaluated on a worker thread, and Python cannot interrupt it):

- at submission (`validate_rule`): at most `MAX_DEPTH` levels, `MAX_RULE_NODES`
  nodes and literal arrays of at most `MAX_ARRAY_ITEMS` items;
- while evaluating: at most `MAX_OPERATIONS` operations per evaluation, arrays
  iterated or built of at most `MAX_ARRAY_ITEMS` items, strings built of at
  most `MAX_STRING_LENGTH` characters.

Past a bound, `JsonLogicError`: the engine treats the condition as false
(logged). Semantics follow json-logic-js, including its truthiness (an empty
list is false) and loose `==`; the official test suite
(https://jsonlogic.com/tests.json, vendored in tests/planner/data/) passes in
full (tests/planner/test_jsonlogic_suite.py).

Why not a library: the two PyPI evaluators that pass that suite too
(`json-logic-qubit` 0.9.1, last released 2018; `panzi-json-logic` 1.0.1,
last released 2021) are unmaintained, and neither bounds an evaluation —
rules come from callers and run on a worker thread, so the bounds above are
a requirement, not an extra.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

MAX_DEPTH = 32
MAX_RULE_NODES = 2_000
MAX_OPERATIONS = 20_000
MAX_ARRAY_ITEMS = 1_000
MAX_STRING_LENGTH = 100_000


class JsonLogicError(ValueError):
    """The rule cannot be evaluated: an unknown operator, bad arguments, or too deep."""


# --- helpers -------------------------------------------------------------------

def truthy(value: Any) -> bool:
    """JSON-Logic truthiness: like JavaScript, except that an empty array is false."""
    if isinstance(value, (list, tuple)):
        return len(value) > 0
    return bool(value) and value != ""


def _is_rule(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1


def _to_number(value: Any) -> float:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    if value is None:
        return 0.0
    if isinstance(value, str):
        try:
            return float(value.strip()) if value.strip() else 0.0
        except ValueError:
            return float("nan")
    return float("nan")


def _number_out(value: float) -> int | float:
    # Keep integers integral so that `{"+": [1, 2]}` gives 3, not 3.0.
    return int(value) if value == value and value not in (float("inf"), float("-inf")) and value == int(value) else value


def _loose_equals(a: Any, b: Any) -> bool:
    """JavaScript's `==` for JSON values (enough of it for policy conditions)."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    if isinstance(a, (list, dict)) or isinstance(b, (list, dict)):
        if isinstance(a, (list, dict)) and isinstance(b, (list, dict)):
            return a is b
        other = b if isinstance(a, (list, dict)) else a
        container = a if isinstance(a, (list, dict)) else b
        return _loose_equals(_to_string(container), other)
    return _to_number(a) == _to_number(b)


def _strict_equals(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def _to_string(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(_number_out(value))
    if isinstance(value, list):
        return ",".join("" if item is None else _to_string(item) for item in value)
    if isinstance(value, dict):
        return "[object Object]"
    return str(value)


def _compare(a: Any, b: Any) -> tuple[Any, Any]:
    # JavaScript compares two strings as strings, anything else as numbers.
    if isinstance(a, str) and isinstance(b, str):
        return a, b
    return _to_number(a), _to_number(b)


def _less(a: Any, b: Any, *, or_equal: bool) -> bool:
    x, y = _compare(a, b)
    result: bool = x <= y if or_equal else x < y
    return result


def _get_var(data: Any, path: Any, default: Any = None) -> Any:
    if path is None or path == "" or path == []:
        return data
    current = data
    for part in str(path).split(".") if not isinstance(path, (int, float)) else [str(_number_out(path))]:
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.lstrip("-").isdigit() and 0 <= int(part) < len(current):
            current = current[int(part)]
        else:
            return default
    return current


# --- operators over evaluated arguments ----------------------------------------------

def _op_var(data: Any, args: list[Any]) -> Any:
    return _get_var(data, args[0] if args else None, args[1] if len(args) > 1 else None)


def _op_missing(data: Any, args: list[Any]) -> list[Any]:
    keys = args[0] if args and isinstance(args[0], list) else args
    return [key for key in keys if _get_var(data, key) in (None, "")]


def _op_missing_some(data: Any, args: list[Any]) -> list[Any]:
    if len(args) != 2 or not isinstance(args[1], list):
        raise JsonLogicError("missing_some takes [minimum, [keys]]")
    need, keys = args
    missing = _op_missing(data, [keys])
    return [] if len(keys) - len(missing) >= _to_number(need) else missing


def _between(args: list[Any], *, or_equal: bool) -> bool:
    if len(args) == 3:
        return _less(args[0], args[1], or_equal=or_equal) and _less(args[1], args[2], or_equal=or_equal)
    if len(args) != 2:
        raise JsonLogicError("comparison takes two or three arguments")
    return _less(args[0], args[1], or_equal=or_equal)


def _arith_sum(args: list[Any]) -> int | float:
    return _number_out(sum((_to_number(arg) for arg in args), 0.0))


def _arith_product(args: list[Any]) -> int | float:
    result = 1.0
    for arg in args:
        result *= _to_number(arg)
    return _number_out(result)


def _arith_minus(args: list[Any]) -> int | float:
    if len(args) == 1:
        return _number_out(-_to_number(args[0]))
    return _number_out(_to_number(args[0]) - _to_number(args[1]))


def _arith_divide(args: list[Any]) -> int | float | None:
    divisor = _to_number(args[1])
    if divisor == 0:
        return None  # JavaScript gives Infinity/NaN; neither is JSON, so null
    return _number_out(_to_number(args[0]) / divisor)


def _arith_modulo(args: list[Any]) -> int | float | None:
    divisor = _to_number(args[1])
    if divisor == 0:
        return None
    dividend = _to_number(args[0])
    # JavaScript's % keeps the dividend's sign (Python's follows the divisor).
    result = abs(dividend) % abs(divisor)
    return _number_out(-result if dividend < 0 else result)


def _extremum(args: list[Any], pick: Callable[..., float]) -> int | float | None:
    if not args:
        return None
    return _number_out(pick(_to_number(arg) for arg in args))


def _op_in(args: list[Any]) -> bool:
    needle, haystack = args[0], args[1] if len(args) > 1 else None
    if isinstance(haystack, str):
        return isinstance(needle, str) and needle in haystack
    if isinstance(haystack, list):
        return any(_strict_equals(needle, item) for item in haystack)
    return False


def _op_substr(args: list[Any]) -> str:
    text = _to_string(args[0])
    start = int(_to_number(args[1])) if len(args) > 1 else 0
    if start < 0:
        start = max(0, len(text) + start)
    if len(args) > 2:
        length = int(_to_number(args[2]))
        end = len(text) + length if length < 0 else start + length
        return text[start:end]
    return text[start:]


def _op_merge(args: list[Any]) -> list[Any]:
    merged: list[Any] = []
    for arg in args:
        merged.extend(arg if isinstance(arg, list) else [arg])
    return merged


_SIMPLE: dict[str, Callable[[list[Any]], Any]] = {
    "==": lambda a: _loose_equals(a[0], a[1]),
    "===": lambda a: _strict_equals(a[0], a[1]),
    "!=": lambda a: not _loose_equals(a[0], a[1]),
    "!==": lambda a: not _strict_equals(a[0], a[1]),
    "!": lambda a: not truthy(a[0]),
    "!!": lambda a: truthy(a[0]),
    ">": lambda a: _less(a[1], a[0], or_equal=False),
    ">=": lambda a: _less(a[1], a[0], or_equal=True),
    "<": lambda a: _between(a, or_equal=False),
    "<=": lambda a: _between(a, or_equal=True),
    "max": lambda a: _extremum(a, max),
    "min": lambda a: _extremum(a, min),
    "+": _arith_sum,
    "*": _arith_product,
    "-": _arith_minus,
    "/": _arith_divide,
    "%": _arith_modulo,
    "in": _op_in,
    "cat": lambda a: "".join(_to_string(arg) for arg in a),
    "substr": _op_substr,
    "merge": _op_merge,
}
_SIMPLE_ARITY = {"==": 2, "===": 2, "!=": 2, "!==": 2, "!": 1, "!!": 1, ">": 2, ">=": 2,
                 "/": 2, "%": 2, "in": 2, "substr": 1, "-": 1}
_DATA_OPS: dict[str, Callable[[Any, list[Any]], Any]] = {
    "var": _op_var,
    "missing": _op_missing,
    "missing_some": _op_missing_some,
}
# Operators that evaluate their own arguments (short-circuit or per-item scope).
_LAZY = ("if", "?:", "or", "and", "all", "some", "none", "map", "filter", "reduce")
OPERATORS = frozenset(_SIMPLE) | frozenset(_DATA_OPS) | frozenset(_LAZY)


# --- evaluation --------------------------------------------------------------------

class _Budget:
    __slots__ = ("operations",)

    def __init__(self) -> None:
        self.operations = MAX_OPERATIONS

    def spend(self) -> None:
        self.operations -= 1
        if self.operations < 0:
            raise JsonLogicError(f"the rule needs more than {MAX_OPERATIONS} operations")


def _bounded(value: Any) -> Any:
    """A value an operator produced, refused when it outgrows the limits."""
    if isinstance(value, list) and len(value) > MAX_ARRAY_ITEMS:
        raise JsonLogicError(f"an array of more than {MAX_ARRAY_ITEMS} items")
    if isinstance(value, str) and len(value) > MAX_STRING_LENGTH:
        raise JsonLogicError(f"a string of more than {MAX_STRING_LENGTH} characters")
    return value


def evaluate(rule: Any, data: Any = None) -> Any:
    """Apply a JSON-Logic rule to data; raises `JsonLogicError` for unknown
    operators or past a bound (depth, operations, array and string sizes)."""
    return _evaluate(rule, {} if data is None else data, 0, _Budget())


def _evaluate(rule: Any, data: Any, depth: int, budget: _Budget) -> Any:
    if depth > MAX_DEPTH:
        raise JsonLogicError(f"the rule is nested deeper than {MAX_DEPTH} levels")
    budget.spend()
    if isinstance(rule, list):
        return [_evaluate(item, data, depth + 1, budget) for item in _bounded(rule)]
    if not _is_rule(rule):
        return rule
    (op, raw_args), = rule.items()
    args = raw_args if isinstance(raw_args, list) else [raw_args]
    if op in _LAZY:
        return _bounded(_evaluate_lazy(op, args, data, depth + 1, budget))
    if op not in _DATA_OPS and op not in _SIMPLE:
        raise JsonLogicError(f"unknown operator {op!r}")
    values = [_evaluate(arg, data, depth + 1, budget) for arg in _bounded(args)]
    if op in _DATA_OPS:
        return _bounded(_DATA_OPS[op](data, values))
    if len(values) < _SIMPLE_ARITY.get(op, 0):
        values += [None] * (_SIMPLE_ARITY[op] - len(values))
    if op in ("cat", "merge", "in"):
        # Their cost grows with the sizes of their arguments, not the rule's.
        for value in values:
            _bounded(value)
            if isinstance(value, list):
                for item in value:
                    _bounded(item)
    return _bounded(_SIMPLE[op](values))


def _evaluate_lazy(op: str, args: list[Any], data: Any, depth: int, budget: _Budget) -> Any:
    if op in ("if", "?:"):
        return _evaluate_if(args, data, depth, budget)
    if op == "or":
        value: Any = False
        for arg in args:
            value = _evaluate(arg, data, depth, budget)
            if truthy(value):
                return value
        return value
    if op == "and":
        value = True
        for arg in args:
            value = _evaluate(arg, data, depth, budget)
            if not truthy(value):
                return value
        return value
    return _evaluate_iteration(op, args, data, depth, budget)


def _evaluate_if(args: list[Any], data: Any, depth: int, budget: _Budget) -> Any:
    # [cond1, then1, cond2, then2, ..., else]
    index = 0
    while index + 1 < len(args):
        if truthy(_evaluate(args[index], data, depth, budget)):
            return _evaluate(args[index + 1], data, depth, budget)
        index += 2
    return _evaluate(args[index], data, depth, budget) if index < len(args) else None


def _evaluate_iteration(op: str, args: list[Any], data: Any, depth: int, budget: _Budget) -> Any:
    items = _evaluate(args[0], data, depth, budget) if args else []
    if not isinstance(items, list):
        items = []
    _bounded(items)
    body = args[1] if len(args) > 1 else None
    if op == "all":
        return bool(items) and all(truthy(_evaluate(body, item, depth, budget)) for item in items)
    if op == "some":
        return any(truthy(_evaluate(body, item, depth, budget)) for item in items)
    if op == "none":
        return not any(truthy(_evaluate(body, item, depth, budget)) for item in items)
    if op == "map":
        return [_evaluate(body, item, depth, budget) for item in items]
    if op == "filter":
        return [item for item in items if truthy(_evaluate(body, item, depth, budget))]
    # reduce: [items, rule over {"current", "accumulator"}, initial]
    accumulator = _evaluate(args[2], data, depth, budget) if len(args) > 2 else None
    for item in items:
        accumulator = _evaluate(body, {"current": item, "accumulator": accumulator}, depth, budget)
    return accumulator


# --- static checks ------------------------------------------------------------------

def validate_rule(rule: Any) -> list[str]:
    """Problems with a rule without running it: unknown operators, too much
    nesting, too many nodes, literal arrays that are too long."""
    problems: list[str] = []
    stack: list[tuple[Any, int]] = [(rule, 0)]
    nodes = 0
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if nodes > MAX_RULE_NODES:
            problems.append(f"the rule has more than {MAX_RULE_NODES} nodes")
            break
        if depth > MAX_DEPTH:
            problems.append(f"the rule is nested deeper than {MAX_DEPTH} levels")
            break
        if isinstance(node, list):
            if len(node) > MAX_ARRAY_ITEMS:
                problems.append(f"the rule holds an array of more than {MAX_ARRAY_ITEMS} items")
                break
            stack.extend((item, depth + 1) for item in node)
        elif _is_rule(node):
            (op, args), = node.items()
            if op not in OPERATORS:
                problems.append(f"unknown operator {op!r}")
            stack.append((args, depth + 1))
        elif isinstance(node, dict):
            stack.extend((item, depth + 1) for item in node.values())
    return sorted(set(problems))


_SCOPED = frozenset({"map", "filter", "all", "none", "some", "reduce"})


def data_paths(rule: Any) -> list[str]:
    """The literal `var` paths a rule reads from its data, in order of first
    appearance. Vars inside the per-item rule of `map`, `filter`, `all`,
    `none`, `some` and `reduce` read the item, not the data, and are left
    out; a computed path (`{"var": {"cat": …}}`) reads "" (anything)."""
    found: list[str] = []
    stack: list[Any] = [rule]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(reversed(node))
        elif _is_rule(node):
            (op, args), = node.items()
            if op == "var":
                path = args[0] if isinstance(args, list) and args else args
                if isinstance(path, (int, float)) and not isinstance(path, bool):
                    path = str(path)
                found.append(path if isinstance(path, str) else "")
                if isinstance(args, list):
                    stack.extend(reversed(args[1:]))
            elif op in _SCOPED and isinstance(args, list):
                stack.extend(reversed(args[:1] + args[2:] if op == "reduce" else args[:1]))
            else:
                stack.append(args)
        elif isinstance(node, dict):
            stack.extend(reversed(list(node.values())))
    return list(dict.fromkeys(found))
