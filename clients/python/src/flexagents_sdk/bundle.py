"""The task a claim hands over, and the ContextBundle inside it.

The server sends camelCase JSON (API.md, "Tasks"); these frozen dataclasses
give it snake_case names and types. Keys the SDK does not know are kept in
``raw`` so a newer server never breaks an older agent.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

__all__ = ["Bundle", "Clarification", "ProtocolError", "Task", "parse_task", "parse_timestamp"]


class ProtocolError(ValueError):
    """The server sent something that does not match the contract."""


@dataclass(frozen=True)
class Clarification:
    """A question a node asked earlier in this run, and a person's answer."""

    question_id: str
    question: str
    answer: Any
    node_id: str
    answered_at: str


@dataclass(frozen=True)
class Bundle:
    """Everything the capability function receives for one task.

    ``facets`` holds the values of the node's input facets (and of the
    optional ones the run has); ``contract`` is the JSON Schema the output
    must satisfy; ``clarifications`` every question answered so far in the
    run; ``idempotency_key`` (``runId:nodeId:attempt``) lets a function with
    side effects recognise a retry of the same attempt.
    """

    run_id: str
    node_id: str
    objective: str
    facets: Mapping[str, Any]
    special_instructions: tuple[str, ...] = ()
    policies: Mapping[str, Any] = field(default_factory=dict)
    contract: Mapping[str, Any] = field(default_factory=dict)
    clarifications: tuple[Clarification, ...] = ()
    idempotency_key: str = ""
    attempt: int = 1
    plan_version: int = 1
    metadata: Mapping[str, Any] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def answer_to(self, question: str) -> Any | None:
        """The latest answer to ``question`` asked by this node, or None."""
        for item in reversed(self.clarifications):
            if item.question == question and item.node_id == self.node_id:
                return item.answer
        return None

    @classmethod
    def from_json(cls, data: Any) -> Bundle:
        """Parse the camelCase ContextBundle; :class:`ProtocolError` if it is not one."""
        obj = _object(data, "bundle")
        clarifications = []
        for index, item in enumerate(_list(obj.get("clarifications"), "bundle.clarifications")):
            entry = _object(item, f"bundle.clarifications[{index}]")
            clarifications.append(Clarification(
                question_id=str(entry.get("questionId", "")), question=str(entry.get("question", "")),
                answer=entry.get("answer"), node_id=str(entry.get("nodeId", "")),
                answered_at=str(entry.get("answeredAt", ""))))
        return cls(
            run_id=_str(obj, "runId", "bundle"),
            node_id=_str(obj, "nodeId", "bundle"),
            objective=str(obj.get("objective") or ""),
            facets=_object(obj.get("facets", {}), "bundle.facets"),
            special_instructions=tuple(str(s) for s in _list(obj.get("specialInstructions"),
                                                             "bundle.specialInstructions")),
            policies=_object(obj.get("policies") or {}, "bundle.policies"),
            contract=_object(obj.get("contract") or {}, "bundle.contract"),
            clarifications=tuple(clarifications),
            idempotency_key=str(obj.get("idempotencyKey") or ""),
            attempt=_int(obj.get("attempt", 1), "bundle.attempt"),
            plan_version=_int(obj.get("planVersion", 1), "bundle.planVersion"),
            metadata=_object(obj.get("metadata") or {}, "bundle.metadata"),
            raw=obj,
        )


@dataclass(frozen=True)
class Task:
    """A claimed task: the lease (``lease_token`` until ``lease_expires_at``)
    and the bundle to work on."""

    task_id: str
    run_id: str
    node_id: str
    capability_id: str
    attempt: int
    lease_token: str
    lease_expires_at: datetime
    bundle: Bundle


def parse_task(body: Any) -> Task:
    """The ``task`` of a ``200`` claim answer (``{"task": {...}}``)."""
    task = _object(_object(body, "claim answer").get("task"), "task")
    bundle = Bundle.from_json(task.get("bundle"))
    return Task(
        task_id=_str(task, "taskId", "task"),
        run_id=str(task.get("runId") or bundle.run_id),
        node_id=str(task.get("nodeId") or bundle.node_id),
        capability_id=_str(task, "capabilityId", "task"),
        attempt=_int(task.get("attempt", bundle.attempt), "task.attempt"),
        lease_token=_str(task, "leaseToken", "task"),
        lease_expires_at=parse_timestamp(_str(task, "leaseExpiresAt", "task")),
        bundle=bundle,
    )


def parse_timestamp(value: str) -> datetime:
    """An ISO 8601 timestamp with a timezone (``2026-03-01T10:00:00.123Z``), as an aware datetime."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError as exc:
        raise ProtocolError(f"not an ISO 8601 timestamp: {value!r}") from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError(f"{where} must be a JSON object, got {type(value).__name__}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ProtocolError(f"{where} must be a JSON array, got {type(value).__name__}")
    return value


def _str(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise ProtocolError(f"{where}.{key} must be a non-empty string, got {value!r}")
    return value


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f"{where} must be an integer, got {value!r}")
    return value
