"""Language-model capabilities declared as data, and the endpoints they call.

A declaration file (`settings.FLEX_LLM_CAPABILITIES`, default
`planner/catalog/llm.json`) lists capabilities whose work is done by a
language model: id, kind, facets, model, instructions, temperature, output
token limit and the name of the endpoint to call (docs/models.md). The
generic capability class (`planner.capabilities.llm`) is configured from a
declaration; the registry adds one class per declaration whose endpoint is
configured.

Endpoints come from the environment, never from a file or the database:

- `default`: `OPENAI_API_KEY`, `OPENAI_BASE_URL` (optional: OpenAI's own when
  unset), `OPENAI_MODEL` (optional model for declarations that name none);
- any other name `<NAME>` (letters, digits, `_`): `FLEX_LLM_ENDPOINT_<NAME>_BASE_URL`
  (required), `FLEX_LLM_ENDPOINT_<NAME>_API_KEY` (optional: local servers need
  none), `FLEX_LLM_ENDPOINT_<NAME>_MODEL` (optional).

Keys are read when a client is made and are held only by that client; they
are never copied into settings, declarations, bundles, events or logs.
`sanitize` removes every configured key from a text (an SDK error message
may echo one) before the text leaves a capability.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from flexagents.redaction import REDACTED, redact_text
from planner.types import CAPABILITY_KINDS

DEFAULT_ENDPOINT = "default"
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
TOKEN_LIMIT_PARAMETERS = ("max_completion_tokens", "max_tokens")
_NAME_RE = re.compile(r"^[A-Za-z0-9_]{1,60}$")
_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")
_NODE_RE = re.compile(r"^[A-Za-z0-9_-]{1,60}$")
_FIELDS = frozenset({
    "capabilityId", "displayName", "description", "kind", "inputFacets", "optionalInputFacets", "outputFacets",
    "endpoint", "model", "instructions", "temperature", "maxTokens", "tokenLimitParameter", "timeoutSeconds",
    "selectedByDefault", "nodeId",
})


@dataclass(frozen=True)
class LlmDeclaration:
    """One language-model capability, as declared."""

    capability_id: str
    display_name: str
    description: str
    kind: str
    input_facets: tuple[str, ...]
    optional_input_facets: tuple[str, ...]
    output_facets: tuple[str, ...]
    endpoint: str
    model: str  # "" = the endpoint's model
    instructions: str
    temperature: float | None
    max_tokens: int  # the output token limit of one call
    token_limit_parameter: str  # how the limit is sent: max_completion_tokens | max_tokens
    timeout_seconds: float
    selected_by_default: bool  # False: planned only when the envelope requires or prefers it
    node_name: str = ""  # the node id in plans; "" = the capability id up to its first dot

    def describe(self) -> dict[str, Any]:
        """What the catalog API may show: no key, no URL."""
        return {"endpoint": self.endpoint, "model": self.model or None, "temperature": self.temperature,
                "maxTokens": self.max_tokens, "selectedByDefault": self.selected_by_default}


@dataclass(frozen=True)
class Endpoint:
    """An OpenAI-compatible chat-completions endpoint. `repr` never shows the key."""

    name: str
    base_url: str | None  # None: the SDK's default (OpenAI)
    api_key: str
    model: str

    def __repr__(self) -> str:
        return f"Endpoint(name={self.name!r}, base_url={self.base_url!r}, model={self.model!r})"

    __str__ = __repr__


class EndpointNotConfigured(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        if self.name == DEFAULT_ENDPOINT:
            return "the default model endpoint is not configured (set OPENAI_API_KEY)"
        return (f"the model endpoint {self.name!r} is not configured "
                f"(set FLEX_LLM_ENDPOINT_{self.name.upper()}_BASE_URL)")


def _env(name: str) -> str:
    return (os.environ.get(name) or "").strip()


def endpoint(name: str) -> Endpoint:
    """The endpoint called `name`, from the environment; raises `EndpointNotConfigured`."""
    if name == DEFAULT_ENDPOINT:
        key = _env("OPENAI_API_KEY")
        if not key:
            raise EndpointNotConfigured(name)
        return Endpoint(name=name, base_url=_env("OPENAI_BASE_URL") or None, api_key=key,
                        model=_env("OPENAI_MODEL") or DEFAULT_OPENAI_MODEL)
    prefix = f"FLEX_LLM_ENDPOINT_{name.upper()}_"
    base_url = _env(prefix + "BASE_URL")
    if not base_url:
        raise EndpointNotConfigured(name)
    # Local servers (Ollama, vLLM, LM Studio) want no key, but the SDK wants
    # one: a placeholder goes in the Authorization header, which they ignore.
    return Endpoint(name=name, base_url=base_url, api_key=_env(prefix + "API_KEY") or "no-key",
                    model=_env(prefix + "MODEL"))


def endpoint_configured(name: str) -> bool:
    try:
        endpoint(name)
    except EndpointNotConfigured:
        return False
    return True


def configured_keys() -> list[str]:
    """Every API key in the environment that an endpoint may use (for `sanitize`)."""
    keys = [_env("OPENAI_API_KEY")]
    keys += [value.strip() for name, value in os.environ.items()
             if name.startswith("FLEX_LLM_ENDPOINT_") and name.endswith("_API_KEY")]
    # Longest first, so a key that contains another is removed whole.
    return sorted({key for key in keys if len(key) >= 4}, key=len, reverse=True)


# OpenAI-style keys (`sk-…`, `sk-proj-…`), also half-masked ones (`sk-abc***xyz`)
# as OpenAI's 401 message quotes them.
_KEY_LIKE_RE = re.compile(r"\b(?:sk|rk|pk)-[A-Za-z0-9_*\-]{3,}")
MAX_MESSAGE_CHARS = 300


def sanitize(text: str) -> str:
    """`text` with every configured key, and anything shaped like one, masked;
    shortened. For messages that come from an endpoint or the SDK."""
    out = str(text)
    for key in configured_keys():
        out = out.replace(key, REDACTED)
    out = _KEY_LIKE_RE.sub(REDACTED, out)
    out = redact_text(out)
    return out if len(out) <= MAX_MESSAGE_CHARS else out[: MAX_MESSAGE_CHARS - 1] + "…"


# --- declarations ---------------------------------------------------------------------

def declarations_path() -> Path:
    return Path(settings.FLEX_LLM_CAPABILITIES)


def load_declarations(path: Path | None = None) -> list[LlmDeclaration]:
    """Every declaration of the file; raises `ImproperlyConfigured` naming what is wrong."""
    path = path or declarations_path()
    return list(_load(str(path), _mtime(path)))


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return -1.0


@lru_cache(maxsize=8)
def _load(path: str, mtime: float) -> tuple[LlmDeclaration, ...]:
    if mtime < 0:
        raise ImproperlyConfigured(f"FLEX_LLM_CAPABILITIES: {path} cannot be read")
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ImproperlyConfigured(f"FLEX_LLM_CAPABILITIES: {path} is not JSON: {exc}") from exc
    entries = data.get("capabilities") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ImproperlyConfigured(f"FLEX_LLM_CAPABILITIES: {path} needs a \"capabilities\" list")
    declarations = [parse_declaration(entry, where=f"{path} capabilities[{i}]") for i, entry in enumerate(entries)]
    ids = [d.capability_id for d in declarations]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ImproperlyConfigured(f"FLEX_LLM_CAPABILITIES: {path} declares {', '.join(duplicates)} more than once")
    return tuple(declarations)


def parse_declaration(entry: Any, *, where: str) -> LlmDeclaration:
    def fail(message: str) -> ImproperlyConfigured:
        return ImproperlyConfigured(f"{where}: {message}")

    if not isinstance(entry, dict):
        raise fail("a declaration is a JSON object")
    unknown = sorted(set(entry) - _FIELDS)
    if unknown:
        raise fail(f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(_FIELDS))}")
    capability_id = entry.get("capabilityId")
    if not isinstance(capability_id, str) or not _ID_RE.match(capability_id):
        raise fail("capabilityId must be a non-empty id (letters, digits, . _ : -)")
    if entry.get("kind") not in CAPABILITY_KINDS:
        raise fail(f"kind must be one of {', '.join(CAPABILITY_KINDS)}")

    def names(field: str, *, required: bool) -> tuple[str, ...]:
        value = entry.get(field, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise fail(f"{field} must be a list of facet names")
        if required and not value:
            raise fail(f"{field} must name at least one facet")
        return tuple(value)

    endpoint_name = entry.get("endpoint", DEFAULT_ENDPOINT)
    if not isinstance(endpoint_name, str) or not _NAME_RE.match(endpoint_name):
        raise fail("endpoint must be a name of letters, digits and _")
    model = entry.get("model", "")
    if not isinstance(model, str):
        raise fail("model must be a string")
    instructions = entry.get("instructions")
    if not isinstance(instructions, str) or not instructions.strip():
        raise fail("instructions must be a non-empty string")
    temperature = entry.get("temperature")
    if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, (int, float))
                                    or not 0 <= temperature <= 2):
        raise fail("temperature must be a number from 0 to 2")
    max_tokens = entry.get("maxTokens", 1024)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= 200_000:
        raise fail("maxTokens must be an integer from 1 to 200000")
    parameter = entry.get("tokenLimitParameter", "max_completion_tokens")
    if parameter not in TOKEN_LIMIT_PARAMETERS:
        raise fail(f"tokenLimitParameter must be one of {', '.join(TOKEN_LIMIT_PARAMETERS)}")
    timeout = entry.get("timeoutSeconds", settings.FLEX_LLM_TIMEOUT_SECONDS)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 3600:
        raise fail("timeoutSeconds must be a number of seconds from 0 to 3600")
    selected = entry.get("selectedByDefault", True)
    if not isinstance(selected, bool):
        raise fail("selectedByDefault must be true or false")
    node_name = entry.get("nodeId", "")
    if not isinstance(node_name, str) or (node_name and not _NODE_RE.match(node_name)):
        raise fail("nodeId must be a short name (letters, digits, _ and -)")
    display_name = entry.get("displayName", capability_id)
    description = entry.get("description", "")
    if not isinstance(display_name, str) or not isinstance(description, str):
        raise fail("displayName and description must be strings")
    return LlmDeclaration(
        capability_id=capability_id, display_name=display_name, description=description, kind=entry["kind"],
        input_facets=names("inputFacets", required=True),
        optional_input_facets=names("optionalInputFacets", required=False),
        output_facets=names("outputFacets", required=True),
        endpoint=endpoint_name, model=model, instructions=instructions,
        temperature=float(temperature) if temperature is not None else None, max_tokens=max_tokens,
        token_limit_parameter=parameter, timeout_seconds=float(timeout), selected_by_default=selected,
        node_name=node_name)


def active_declarations() -> list[LlmDeclaration]:
    """The declarations whose endpoint is configured in this environment."""
    return [d for d in load_declarations() if endpoint_configured(d.endpoint)]
