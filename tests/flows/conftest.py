import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _prefect(prefect_harness):
    """Every flow test runs against the session's real Prefect API."""
    yield


def _command(args: tuple[str, ...], env: dict | None) -> tuple[list[str], dict]:
    """The ``ltv`` console script with ``args``, and an environment using the session's API."""
    from prefect.settings import PREFECT_API_URL

    full_env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value() or "", **(env or {})}
    return [str(Path(sys.executable).with_name("ltv")), *args], full_env


@pytest.fixture
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
