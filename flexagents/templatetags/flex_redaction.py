"""`{{ value|redacted }}`: free text a template shows straight from a model
(a run's objective, a pause reason, a pending question) masked by the one
redactor, like every other surface (docs/api.md, Redaction)."""
from __future__ import annotations

from typing import Any

from django import template

from flexagents.redaction import redact_text

register = template.Library()


@register.filter
def redacted(value: Any) -> str:
    return "" if value is None else redact_text(str(value))
