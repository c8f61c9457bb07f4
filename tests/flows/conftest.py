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
    """Run the same ``ltv`` command in two processes at the same time; their results.

    ``each`` gives the two processes' own extra environment (e.g. two seeds).
    """

    def run(
        *args: str, env: dict | None = None, each: tuple[dict, dict] = ({}, {})
    ) -> list[subprocess.CompletedProcess]:
        pipe = subprocess.PIPE
        started = []
        for own in each:
            command, full_env = _command(args, {**(env or {}), **own})
            started.append(
                subprocess.Popen(command, env=full_env, stdout=pipe, stderr=pipe, text=True)
            )
        done = []
        for process in started:
            out, err = process.communicate(timeout=600)
            done.append(subprocess.CompletedProcess(command, process.returncode, out, err))
        return done

    return run


def fails_once(real, error: BaseException):
    """``real``, but its first call raises ``error`` (an injected storage or tracking fault)."""
    failed: list[bool] = []

    def flaky(*args, **kwargs):
        if not failed:
            failed.append(True)
            raise error
        return real(*args, **kwargs)

    return flaky


def kill_after(args: tuple[str, ...], after: str, timeout: float = 300) -> int:
    """Run ``ltv *args``; SIGKILL it once a task whose name starts with ``after`` completed.

    The flow run is watched through the session's Prefect API. Returns the exit code
    (``-SIGKILL`` when the kill came in time).
    """
    import signal
    import time

    import pandas as pd
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime
    from prefect.client.schemas.sorting import FlowRunSort

    since = pd.Timestamp.now(tz="UTC")
    command, env = _command(args, None)
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while process.poll() is None and time.monotonic() < deadline:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=since)),
                sort=FlowRunSort.START_TIME_DESC,
                limit=1,
            )
            done = runs and any(
                t.name.startswith(after) and t.state is not None and t.state.is_completed()
                for t in client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id={"any_": [runs[0].id]})
                )
            )
            if done:
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
    process.wait(timeout=60)
    if process.returncode != -signal.SIGKILL and process.stderr is not None:
        sys.stderr.write(process.stderr.read().decode(errors="replace"))  # why it ended early
    return process.returncode


def running_flow_runs() -> list[str]:
    """The names of the flow runs the session's Prefect API shows Running."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    running = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))
    with get_client(sync_client=True) as client:
        return [r.name for r in client.read_flow_runs(flow_run_filter=FlowRunFilter(state=running))]
