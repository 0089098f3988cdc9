"""Template helpers of the console and the history pages: what the viewing
user's role may do, and whether the flex feature flag is on."""
from __future__ import annotations

from typing import Any

from django import template
from django.conf import settings

from flexagents.roles import user_may_operate_all_runs

register = template.Library()


@register.simple_tag
def may_operate_runs(user: Any) -> bool:
    """Operators (and superusers) act on every run; support staff only read."""
    return bool(user and user.is_authenticated and user_may_operate_all_runs(user))


@register.simple_tag
def flex_enabled() -> bool:
    """`FLEX_ENABLED`, read per render (tests override it)."""
    return bool(settings.FLEX_ENABLED)


@register.simple_tag
def may_see_task_inbox(user: Any) -> bool:
    """Operators, support (read-only) and the people granted a human capability."""
    from runs.human_tasks import person_may_see_task_inbox
    return bool(user and user.is_authenticated and person_may_see_task_inbox(user))
