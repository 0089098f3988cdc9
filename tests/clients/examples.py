"""The example agent (examples/agents/hashtags.py), imported by path: the
examples folder is not a package."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from django.conf import settings

HASHTAGS_PATH = Path(settings.BASE_DIR) / "examples" / "agents" / "hashtags.py"


def load_hashtags() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_hashtags_agent", HASHTAGS_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
