"""The production profile's servers, as ``infra/loopback.sh start`` left them.

The servers' addresses and secrets come from the environment file the script writes
(``$LTV_INFRA_STATE/ltv-prod.env``, default ``/tmp/ltv-infra``). Without the servers these tests
skip, saying how to start them; with ``LTV_INTEGRATION=1`` (what ``.ci/run`` sets) a missing or
unreachable server fails them instead.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ..flows.conftest import _command


def pytest_collection_modifyitems(items):
    """Every test under tests/integration carries the ``integration`` marker."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def ltv(prefect_harness):
    """The installed ``ltv`` console script against the session's Prefect API."""

    def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        command, full_env = _command(args, env)
        return subprocess.run(command, capture_output=True, text=True, env=full_env, timeout=900)

    return run


def env_file() -> Path:
    """Where ``infra/loopback.sh`` writes the profile's environment."""
    return Path(os.environ.get("LTV_INFRA_STATE", "/tmp/ltv-infra")) / "ltv-prod.env"


def read_env_file(path: Path) -> dict[str, str]:
    """The ``export NAME=value`` lines of ``path`` as a mapping."""
    found = {}
    for line in path.read_text().splitlines():
        words = shlex.split(line, comments=True)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, value = words[1].split("=", 1)
            found[name] = value
    return found


def unauthenticated_status(url: str) -> int:
    """The HTTP status of a request to the MLflow API without credentials."""
    try:
        with urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/search?max_results=1"):
            return 200
    except urllib.error.HTTPError as error:
        return error.code


def _check_servers(env: dict[str, str]) -> None:
    import psycopg
    import redis

    with psycopg.connect(env["LTV_INFRA_MLFLOW_DB"], connect_timeout=5) as conn:
        conn.execute("SELECT 1")
    client = redis.Redis(
        host=env["LTV_REDIS_HOST"],
        port=int(env["LTV_REDIS_PORT"]),
        password=env["LTV_REDIS_PASSWORD"],
        socket_timeout=5,
    )
    client.ping()
    status = unauthenticated_status(env["LTV_MLFLOW__TRACKING_URI"])
    if status != 401:
        raise RuntimeError(f"MLflow answered {status} to a request without credentials")


@pytest.fixture(name="unauthenticated_status")
def _unauthenticated_status():
    """:func:`unauthenticated_status`, for the tests."""
    return unauthenticated_status


@pytest.fixture(scope="session")
def prod_env() -> dict[str, str]:
    """The profile's environment variables, once every server answers."""
    required = os.environ.get("LTV_INTEGRATION") == "1"
    path = env_file()
    try:
        env = read_env_file(path)
        _check_servers(env)
    except Exception as exc:  # any reason the servers cannot be used
        # The exception's type and first line only: connection errors never carry passwords.
        first = (str(exc).splitlines() or [""])[0]
        reason = f"production servers unavailable ({path}: {type(exc).__name__}: {first})"
        if required:
            pytest.fail(f"LTV_INTEGRATION=1 but {reason}", pytrace=False)
        pytest.skip(f"{reason}; start them with `bash infra/loopback.sh start`")
    return env
