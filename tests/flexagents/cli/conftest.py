"""The `flex` command tests start real processes like tests/multiprocess does."""
from tests.multiprocess.conftest import (  # noqa: F401 — fixtures and the report hook
    catalog_path,
    child_env,
    procs,
    pytest_runtest_makereport,
    token,
)
