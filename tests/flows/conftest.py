import pytest


@pytest.fixture(autouse=True)
def _prefect(prefect_harness):
    """Every flow test runs against the session's real Prefect API."""
    yield
