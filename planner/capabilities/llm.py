"""Capabilities whose work is done by a language model (declared in `planner.llm`).

One generic class, `LanguageModelCapability`, configured by a declaration:
`capability_class(declaration)` makes the subclass the registry holds. One
call of `run`:

1. build the prompt: the declaration's instructions, then the objective, the
   consumed facets (title, description, semantics, value), the facets to
   produce (title, description, semantics, schema), special instructions,
   the planner's directives, every clarification answered for this node, the
   goal feedback of a goal replan and, on a retry, the errors of the previous
   reply (docs/models.md, "Prompt");
2. call the endpoint's chat-completions API through the official `openai`
   SDK, the node's compiled contract wrapped as the structured-output
   `response_format` (`reply_schema`: an `answer` or a `clarify`);
3. record the call's usage on the bundle (the engine stores it per attempt);
4. read the reply: `clarify` → `ClarificationNeeded` (a person is asked);
   `answer` → returned, validated by the engine against the contract like
   any capability's output; anything else → `InvalidOutput` (one failed
   validation attempt).

Errors say whether retrying can help: rate limits, timeouts, connection
errors and 408/409/5xx are retryable (the engine retries with back-off,
visibly: `node_error` with `willRetry: true`); every other 4xx is permanent.
The SDK's own retries are off (`max_retries=0`) so that every attempt is
counted and shown by the engine. No message leaves here unsanitized
(`planner.llm.sanitize`): an endpoint may echo the key.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, NoReturn

import openai

from planner.facets import get_catalog
from planner.llm import Endpoint, EndpointNotConfigured, LlmDeclaration, endpoint, sanitize
from planner.types import Capability, CapabilityError, ClarificationNeeded, ContextBundle, InvalidOutput

logger = logging.getLogger("planner.capabilities.llm")

RESPONSE_FORMAT_NAME = "flex_node_reply"
MAX_OPTIONS = 10

CLARIFY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["question"],
    "additionalProperties": False,
    "properties": {
        "question": {"type": "string", "minLength": 1, "maxLength": 1000},
        "options": {
            "type": "array", "maxItems": MAX_OPTIONS,
            "items": {"type": "object", "required": ["id", "label"], "additionalProperties": False,
                      "properties": {"id": {"type": "string", "minLength": 1, "maxLength": 100},
                                     "label": {"type": "string", "minLength": 1, "maxLength": 200},
                                     "description": {"type": "string", "maxLength": 500}}},
        },
    },
}

REPLY_PROTOCOL = """\
Reply with one JSON object and nothing else, in one of two shapes:
- {"answer": {...}}: a value for every facet listed under "Produce", each valid against its JSON Schema;
- {"clarify": {"question": "...", "options": [{"id": "...", "label": "..."}]}}: only when you cannot \
produce the facets without a person's answer. Ask one short question; options are optional.
Never invent facts that the inputs, the instructions or the clarifications do not give you."""


def reply_schema(contract: dict[str, Any]) -> dict[str, Any]:
    """The structured-output schema of a node: its contract as `answer`, or a `clarify`.

    Not OpenAI's strict mode: strict schemas need every property required and
    `additionalProperties: false` everywhere, which facet schemas (optional
    fields, open objects) are not. The reply is validated by us anyway.
    """
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {"answer": contract, "clarify": CLARIFY_SCHEMA},
        "oneOf": [{"required": ["answer"]}, {"required": ["clarify"]}],
    }


def response_format(contract: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema",
            "json_schema": {"name": RESPONSE_FORMAT_NAME, "schema": reply_schema(contract), "strict": False}}


# --- the prompt -------------------------------------------------------------------------

def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=False)


def _facet_heading(name: str) -> list[str]:
    facet = get_catalog().get(name)
    if facet is None:
        return [f"## `{name}`"]
    lines = [f"## {facet.title} (`{name}`)", facet.description]
    if facet.semantics:
        lines.append(f"Guidance: {facet.semantics}")
    return lines


def build_messages(declaration: LlmDeclaration, bundle: ContextBundle) -> list[dict[str, str]]:
    """The chat messages of one attempt (docs/models.md, "Prompt")."""
    system = f"{declaration.instructions.strip()}\n\n{REPLY_PROTOCOL}"
    parts: list[str] = ["# Objective", bundle.objective, "", "# Inputs"]
    for name in (*declaration.input_facets, *declaration.optional_input_facets):
        if name not in bundle.facets:
            continue
        parts += [*_facet_heading(name), "Value:", "```json", _json(bundle.facets[name]), "```", ""]
    parts.append("# Produce")
    properties = (bundle.contract.get("properties") or {}) if isinstance(bundle.contract, dict) else {}
    for name in declaration.output_facets:
        parts += [*_facet_heading(name), "JSON Schema:", "```json", _json(properties.get(name, {})), "```", ""]
    planner_policy = ((bundle.policies or {}).get("planner") or {}) if isinstance(bundle.policies, dict) else {}
    variant_count = (planner_policy.get("topology") or {}).get("variantCount")
    if isinstance(variant_count, int) and "copyVariants" in declaration.output_facets:
        parts += ["# Variants", f"Write exactly {variant_count} variant(s).", ""]
    if bundle.special_instructions:
        parts += ["# Special instructions", *(f"- {text}" for text in bundle.special_instructions), ""]
    directives = bundle.directives or planner_policy.get("directives")
    if directives:
        parts += ["# Directives", "```json", _json(directives), "```", ""]
    if bundle.clarifications:
        parts += ["# Clarifications (answers from a person; follow them)"]
        for item in bundle.clarifications:
            parts += [f"- Question: {item.get('question')}", f"  Answer: {item.get('answer')}"]
        parts.append("")
    if bundle.goal_feedback:
        # The run's goals were not met by the last result (docs/planning.md): do better on them.
        parts += ["# Goals not met yet (improve on them)", "```json", _json(bundle.goal_feedback), "```", ""]
    if bundle.previous_errors:
        parts += ["# Your previous reply was rejected",
                  "It broke the contract here (JSON Pointer: problem); fix every point:",
                  *(f"- {error.get('path')}: {error.get('message')}" for error in bundle.previous_errors), ""]
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n".join(parts).strip()}]


# --- the client ---------------------------------------------------------------------------

_clients: dict[tuple[str, str | None, str], openai.OpenAI] = {}
_clients_lock = threading.Lock()


def client_for(target: Endpoint) -> openai.OpenAI:
    """One SDK client per endpoint configuration (thread-safe; connections pooled)."""
    key = (target.name, target.base_url, target.api_key)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            # max_retries=0: the engine retries, counting and showing every attempt.
            client = _clients[key] = openai.OpenAI(api_key=target.api_key, base_url=target.base_url, max_retries=0)
        return client


def _retry_after(exc: openai.APIStatusError) -> float | None:
    value = exc.response.headers.get("retry-after") if exc.response is not None else None
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        try:
            return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
        except (TypeError, ValueError):
            return None


def _status_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    message = body.get("message") if isinstance(body, dict) else None
    return sanitize(str(message or exc.message or ""))


def translate_error(exc: Exception, *, endpoint_name: str) -> CapabilityError:
    """An SDK exception as a capability error that says whether retrying helps.
    Never the SDK's text unsanitized."""
    where = f"the model endpoint {endpoint_name!r}"
    if isinstance(exc, openai.APITimeoutError):
        return CapabilityError(f"{where} did not answer in time", code="llm_timeout", retryable=True)
    if isinstance(exc, openai.APIConnectionError):
        return CapabilityError(f"{where} cannot be reached", code="llm_connection_error", retryable=True)
    if isinstance(exc, openai.RateLimitError):
        return CapabilityError(f"{where} is rate limiting us (429): {_status_message(exc)}", code="llm_rate_limited",
                               retryable=True, retry_after=_retry_after(exc))
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status in (408, 409) or status >= 500:
            return CapabilityError(f"{where} failed ({status}): {_status_message(exc)}", code="llm_unavailable",
                                   retryable=True, retry_after=_retry_after(exc))
        code = "llm_authentication_failed" if status in (401, 403) else "llm_request_rejected"
        return CapabilityError(f"{where} refused the request ({status}): {_status_message(exc)}", code=code,
                               retryable=False)
    return CapabilityError(f"{where}: {type(exc).__name__}: {sanitize(str(exc))}", code="llm_error", retryable=False)


# --- the capability -------------------------------------------------------------------------

class LanguageModelCapability(Capability):
    """A capability done by a language model; subclasses carry a declaration."""

    declaration: ClassVar[LlmDeclaration]
    agent_type = "ai"

    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {**super().describe(), "llm": cls.declaration.describe()}

    def run(self, bundle: ContextBundle) -> dict[str, Any]:
        declaration = self.declaration
        try:
            target = endpoint(declaration.endpoint)
        except EndpointNotConfigured as exc:
            raise CapabilityError(str(exc), code="llm_endpoint_not_configured", retryable=False) from None
        model = declaration.model or target.model
        if not model:
            raise CapabilityError(f"no model is named for {declaration.capability_id} (declare one, or set the "
                                  f"endpoint's _MODEL variable)", code="llm_model_not_configured", retryable=False)
        params: dict[str, Any] = {
            "model": model,
            "messages": build_messages(declaration, bundle),
            "response_format": response_format(bundle.contract),
            # Never more output than the run's token budget has left.
            declaration.token_limit_parameter: max(1, min(declaration.max_tokens, bundle.tokens_left))
            if bundle.tokens_left is not None else declaration.max_tokens,
        }
        if declaration.temperature is not None:
            params["temperature"] = declaration.temperature
        started = time.perf_counter()
        try:
            completion = client_for(target).chat.completions.create(**params, timeout=declaration.timeout_seconds)
        except openai.OpenAIError as exc:
            raise translate_error(exc, endpoint_name=target.name) from None
        call_ms = round((time.perf_counter() - started) * 1000.0, 3)
        usage = completion.usage
        bundle.record_usage(model=str(completion.model or model),
                            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0))
        bundle.usage[-1]["callMs"] = call_ms
        logger.info("llm call", extra={"model": bundle.usage[-1]["model"], "endpoint": target.name,
                                       "call_ms": call_ms, "prompt_tokens": bundle.usage[-1]["promptTokens"],
                                       "completion_tokens": bundle.usage[-1]["completionTokens"]})
        if not completion.choices:
            raise InvalidOutput([{"path": "/", "message": "the model returned no choice"}])
        choice = completion.choices[0]
        return read_reply(choice.message.content, refusal=getattr(choice.message, "refusal", None),
                          finish_reason=choice.finish_reason, max_tokens=declaration.max_tokens)


def read_reply(content: str | None, *, refusal: str | None = None, finish_reason: str | None = None,
               max_tokens: int | None = None) -> dict[str, Any]:
    """The facets of an `answer` reply; `ClarificationNeeded` for a `clarify`;
    `InvalidOutput` for anything else."""
    if refusal:
        raise InvalidOutput([{"path": "/", "message": f"the model refused: {sanitize(refusal)}"}])
    if not content or not content.strip():
        raise InvalidOutput([{"path": "/", "message": "the model's reply is empty"}])
    try:
        reply = json.loads(content)
    except ValueError as exc:
        message = f"the reply is not JSON ({exc.msg} at character {exc.pos})" if isinstance(
            exc, json.JSONDecodeError) else "the reply is not JSON"
        if finish_reason == "length":
            message += f"; it was cut off at the output token limit ({max_tokens})"
        raise InvalidOutput([{"path": "/", "message": message}]) from None
    if not isinstance(reply, dict) or len({"answer", "clarify"} & set(reply)) != 1:
        raise InvalidOutput([{"path": "/", "message": "the reply must be an object with exactly one of "
                                                      "\"answer\" or \"clarify\""}])
    if "clarify" in reply:
        _clarify(reply["clarify"])
    answer = reply["answer"]
    if not isinstance(answer, dict):
        raise InvalidOutput([{"path": "/", "message": "\"answer\" must be an object of facets"}])
    return answer


def _clarify(value: Any) -> NoReturn:
    question = value.get("question") if isinstance(value, dict) else None
    if not isinstance(question, str) or not question.strip():
        raise InvalidOutput([{"path": "/", "message": "\"clarify\" needs a non-empty \"question\""}])
    options = []
    for index, option in enumerate(value.get("options") or []):
        if not isinstance(option, dict) or not str(option.get("label") or "").strip():
            raise InvalidOutput([{"path": f"/options/{index}", "message": "an option needs a label"}])
        entry = {"id": str(option.get("id") or f"option-{index + 1}")[:100], "label": str(option["label"])[:200]}
        if option.get("description"):
            entry["description"] = str(option["description"])[:500]
        options.append(entry)
    raise ClarificationNeeded(question.strip()[:1000], options=options[:MAX_OPTIONS], allow_free_form=True,
                              operator_prompt="The language model asked this question instead of answering.")


def capability_class(declaration: LlmDeclaration) -> type[LanguageModelCapability]:
    """The registry's class for one declaration."""
    name = "".join(ch if ch.isalnum() else "_" for ch in declaration.capability_id)
    return type(f"Llm_{name}", (LanguageModelCapability,), {
        "__module__": __name__,
        "declaration": declaration,
        "capability_id": declaration.capability_id,
        "display_name": declaration.display_name,
        "kind": declaration.kind,
        "input_facets": declaration.input_facets,
        "optional_input_facets": declaration.optional_input_facets,
        "output_facets": declaration.output_facets,
        "description": declaration.description,
        "selected_by_default": declaration.selected_by_default,
        "node_name": declaration.node_name,
    })
