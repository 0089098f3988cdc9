"""A catalog marking one field of the reviewed copy `x-sensitive`, for the
tests that show `HitlRequest.review` (admin, inbox, history pages)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings

# In the copy the approval-required run asks a person to approve.
REVIEWED_TEXT = "Today we are proud to announce it"
SENSITIVE_CALL_TO_ACTION = "Book a demo today"


@pytest.fixture
def sensitive_call_to_action(settings: Any, tmp_path: Path) -> None:
    """The shipped catalog with `copyVariants[].callToAction` marked `x-sensitive`."""
    catalog = json.loads(Path(django_settings.FLEX_FACET_CATALOG).read_text())
    for facet in catalog["facets"]:
        if facet["name"] == "copyVariants":
            facet["schema"]["items"]["properties"]["callToAction"]["x-sensitive"] = True
    path = tmp_path / "facets.json"
    path.write_text(json.dumps(catalog))
    settings.FLEX_FACET_CATALOG = path
