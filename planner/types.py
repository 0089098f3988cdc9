"""Plain types shared by the planner, the capabilities and the engine.

Nothing here touches the ORM: the engine builds a `ContextBundle` from its
rows and hands it to a `Capability`, which returns facet values.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Facet:
    """A named, typed slice of meaning, as declared in the facet catalog."""

    name: str
    title: str
    description: str
    schema: dict[str, Any]
    semantics: str
    direction: str  # "input" | "output" | "bidirectional"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "schema": self.schema,
            "semantics": self.semantics,
            "direction": self.direction,
        }


@dataclass
class ContextBundle:
    """Everything one node execution receives (ARCHITECTURE.md, ContextBundle)."""

    run_id: str
    node_id: str
    objective: str
    facets: dict[str, Any]  # the facet values this node consumes
    special_instructions: list[str] = field(default_factory=list)
    policies: dict[str, Any] = field(default_factory=dict)
    contract: dict[str, Any] = field(default_factory=dict)  # the node's compiled JSON schema
    clarifications: list[dict[str, Any]] = field(default_factory=list)  # [{questionId, question, answer, nodeId, answeredAt}]
    idempotency_key: str = ""  # f"{run_id}:{node_id}:{attempt}"
    attempt: int = 1
    plan_version: int = 1
    metadata: dict[str, Any] = field(default_factory=dict)
    # `policies.planner.directives` of the envelope, for every node (a
    # model-backed capability puts them in its prompt).
    directives: dict[str, Any] = field(default_factory=dict)
    # Set when this node runs again because a goal was unmet (docs/planning.md):
    # [{goalId, condition, attempt, maxReplans, facets, values}], oldest first.
    goal_feedback: list[dict[str, Any]] = field(default_factory=list)
    # The errors of the node's last invalid output ([{path, message}]), so a
    # retry can do better (a language model is shown them).
    previous_errors: list[dict[str, Any]] = field(default_factory=list)
    # Language-model tokens the run may still use (`constraints.maxTokens`
    # minus what it used); None: no budget. A model call asks for no more
    # output tokens than this.
    tokens_left: int | None = None
    # Written by the capability, read by the engine after the call: one
    # `{"model", "promptTokens", "completionTokens"}` per model call of this
    # attempt (`record_usage`). Not part of the stored input.
    usage: list[dict[str, Any]] = field(default_factory=list)

    def record_usage(self, *, model: str, prompt_tokens: int, completion_tokens: int) -> None:
        self.usage.append({"model": model, "promptTokens": int(prompt_tokens),
                           "completionTokens": int(completion_tokens)})

    def usage_total(self) -> dict[str, Any] | None:
        """This attempt's usage summed (the model of the last call), or None if no model was called."""
        if not self.usage:
            return None
        return {"model": self.usage[-1]["model"],
                "promptTokens": sum(u["promptTokens"] for u in self.usage),
                "completionTokens": sum(u["completionTokens"] for u in self.usage)}

    def to_dict(self) -> dict[str, Any]:
        """camelCase form, stored as the node's input."""
        return {
            "runId": self.run_id,
            "nodeId": self.node_id,
            "objective": self.objective,
            "facets": self.facets,
            "specialInstructions": self.special_instructions,
            "policies": self.policies,
            "contract": self.contract,
            "clarifications": self.clarifications,
            "idempotencyKey": self.idempotency_key,
            "attempt": self.attempt,
            "planVersion": self.plan_version,
            "metadata": self.metadata,
            "directives": self.directives,
            "goalFeedback": self.goal_feedback,
        }


CAPABILITY_KINDS = ("structuring", "execution", "validation", "transformation", "routing")

# What `policies.planner.optimisation.objective` can ask for; each is also the
# name of a trait a capability may declare (`Capability.traits`).
OPTIMISATION_OBJECTIVES = ("speed", "quality", "diversity", "token_efficiency")
DEFAULT_OBJECTIVE = "quality"
DEFAULT_TRAIT = 0.5


class Capability:
    """Something that does work: consumes input facets, returns output facets.

    Subclasses set the class attributes and implement `run`. Instances hold no
    per-run state, so the registry may reuse one instance for every call.
    """

    capability_id: ClassVar[str]
    display_name: ClassVar[str]
    kind: ClassVar[str]  # one of CAPABILITY_KINDS
    agent_type: ClassVar[str] = "ai"
    input_facets: ClassVar[tuple[str, ...]] = ()
    optional_input_facets: ClassVar[tuple[str, ...]] = ()
    output_facets: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""
    # How well it serves each optimisation objective, from 0 to 1 (missing:
    # DEFAULT_TRAIT). The planner ranks alternative producers of a facet by
    # the envelope's objective (docs/planning.md).
    traits: ClassVar[dict[str, float]] = {}

    @classmethod
    def trait(cls, objective: str) -> float:
        return float(cls.traits.get(objective, DEFAULT_TRAIT))
    version: ClassVar[str] = ""
    # Where the work happens (docs/agents.md): "server" (this class's `run`,
    # in a worker), "agent" (a program that claims tasks over HTTP) or
    # "people" (a person claims the task in the console).
    runs_on: ClassVar[str] = "server"
    # The registered agent serving it (None for built-ins and settings-declared human capabilities).
    agent_id: ClassVar[str | None] = None
    # "active" or "inactive" (its agent stopped heartbeating): only active ones are planned.
    status: ClassVar[str] = "active"
    # False: the planner picks this capability for a facet only when the
    # envelope requires or prefers it, or no other capability produces it
    # (the language-model twins of the demo catalog).
    selected_by_default: ClassVar[bool] = True
    # The id of this capability's node in a plan; "" = its id up to the first dot.
    node_name: ClassVar[str] = ""

    def run(self, bundle: ContextBundle) -> dict[str, Any]:
        """Return `{facet_name: value}` for this capability's output facets."""
        raise NotImplementedError(f"{type(self).__name__} does not implement run()")

    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {
            "capabilityId": cls.capability_id,
            "displayName": cls.display_name,
            "kind": cls.kind,
            "agentType": cls.agent_type,
            "inputFacets": list(cls.input_facets),
            "outputFacets": list(cls.output_facets),
            "optionalInputFacets": list(cls.optional_input_facets),
            "description": cls.description,
            "version": cls.version,
            "status": cls.status,
            "runsOn": cls.runs_on,
            "agentId": cls.agent_id,
        }

    @classmethod
    def is_external(cls) -> bool:
        """Done outside the worker, as a task (an agent or a person)."""
        return cls.runs_on != "server"


class CapabilityError(Exception):
    """A capability failed; `retryable` tells the engine whether trying again can help."""

    def __init__(self, message: str, *, code: str = "capability_error", retryable: bool = True,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.retryable = retryable
        # Seconds the service asked us to wait (a 429's Retry-After); the
        # engine's back-off never waits less.
        self.retry_after = retry_after


class InvalidOutput(Exception):
    """The capability's reply cannot be used as output (not JSON, not the
    agreed shape): one failed validation attempt, like output that breaks its
    contract. `errors` are `[{"path", "message"}]`."""

    def __init__(self, errors: list[dict[str, str]], *, output: dict[str, Any] | None = None) -> None:
        super().__init__("; ".join(f"{e['path']}: {e['message']}" for e in errors))
        self.errors = errors
        self.output = output


class ClarificationNeeded(Exception):
    """A capability cannot proceed without a person's answer (a `clarify` HITL request).

    This is control flow, not a failure: the engine must catch it before its
    retry handling and never retry it.
    """

    def __init__(self, question: str, *, options: list[dict[str, Any]] | None = None,
                 allow_free_form: bool = True, urgency: str = "normal", operator_prompt: str = "") -> None:
        super().__init__(question)
        self.question = question
        self.options = list(options or [])
        self.allow_free_form = allow_free_form
        self.urgency = urgency
        self.operator_prompt = operator_prompt
