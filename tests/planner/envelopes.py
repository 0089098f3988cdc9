"""The shared example envelopes (`/work/shared/examples/envelopes`, beside the checkout)."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from django.conf import settings

SHARED_EXAMPLES = Path(settings.BASE_DIR).parent / "shared" / "examples" / "envelopes"
# A checkout without the shared folder next to it uses the copy in the repository.
EXAMPLES = SHARED_EXAMPLES if SHARED_EXAMPLES.is_dir() else Path(settings.BASE_DIR) / "examples" / "envelopes"

VALID = ("linkedin-variants", "approval-required", "clarify-audience", "facets-output", "unsatisfiable-output")
INVALID = {"invalid-unknown-facet": "unknown_facet", "invalid-output-contract": "invalid_output_contract"}


def load_envelope(name: str) -> dict[str, Any]:
    """An example envelope by name (without `.json`), as a fresh copy that tests may change."""
    with open(EXAMPLES / f"{name}.json", encoding="utf-8") as fh:
        return copy.deepcopy(json.load(fh))
