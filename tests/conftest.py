"""Shared fixtures: one Prefect test harness for the whole session (it takes ~10 s to start).

The ``ltv`` fixtures run the installed console script against that harness's API.
"""

import os
import subprocess
import sys
from pathlib import Path

# Before Prefect is imported: no telemetry or scheduling services in tests.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def prefect_harness():
    """A real Prefect API (temporary SQLite database), started once per test session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def _command(args: tuple[str, ...], env: dict | None) -> tuple[list[str], dict]:
    """The ``ltv`` console script with ``args``, and an environment using the session's API."""
    from prefect.settings import PREFECT_API_URL

    full_env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value() or "", **(env or {})}
    return [str(Path(sys.executable).with_name("ltv")), *args], full_env


@pytest.fixture(scope="session")
def ltv(prefect_harness):
    """Run the installed ``ltv`` console script against the session's Prefect API."""

    def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        command, full_env = _command(args, env)
        return subprocess.run(command, capture_output=True, text=True, env=full_env, timeout=600)

    return run


@pytest.fixture
def ltv_at_once(prefect_harness):
    """Run the same ``ltv`` command in two processes at the same time; their results."""

    def run(*args: str, env: dict | None = None) -> list[subprocess.CompletedProcess]:
        command, full_env = _command(args, env)
        pipe = subprocess.PIPE
        started = [
            subprocess.Popen(command, env=full_env, stdout=pipe, stderr=pipe, text=True)
            for _ in range(2)
        ]
        done = []
        for process in started:
            out, err = process.communicate(timeout=600)
            done.append(subprocess.CompletedProcess(command, process.returncode, out, err))
        return done

    return run
