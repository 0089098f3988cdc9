"""The SDK's tests against a real server use the multi-process fixtures
(daphne and flex_worker processes on the test database)."""
from tests.multiprocess.conftest import (catalog_path, child_env, procs, pytest_runtest_makereport,  # noqa: F401
                                         token)
