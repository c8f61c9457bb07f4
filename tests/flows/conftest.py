import pytest

from ..conftest import _command  # noqa: F401  (lives in tests/conftest.py; imported from here)


@pytest.fixture(autouse=True)
def _prefect(prefect_harness):
    """Every flow test runs against the session's real Prefect API."""
    yield
