import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _prefect(prefect_harness):
    """Every flow test runs against the session's real Prefect API."""
    yield


@pytest.fixture
def ltv(prefect_harness):
    """Run the installed ``ltv`` console script against the session's Prefect API."""
    from prefect.settings import PREFECT_API_URL

    def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        full_env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value() or "", **(env or {})}
        ltv_bin = Path(sys.executable).with_name("ltv")
        return subprocess.run(
            [str(ltv_bin), *args], capture_output=True, text=True, env=full_env, timeout=600
        )

    return run
