"""Flow runs left Running by a killed process are marked Crashed; live ones are left alone (R5)."""

from __future__ import annotations

import os
import socket
import subprocess

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.states import Completed, Running

from flows.runs import HOST_TAG, PID_TAG, end_abandoned_flow_runs


@flow
def _noop() -> None:
    """A flow whose runs the test creates by hand."""


@flow
def _cleaner() -> list[str]:
    return end_abandoned_flow_runs()


def test_only_running_runs_of_dead_processes_of_this_host_are_crashed():
    gone = subprocess.Popen(["true"])
    gone.wait()
    host = socket.gethostname()
    owners = {
        "live": [HOST_TAG + host, PID_TAG + str(os.getpid())],
        "dead": [HOST_TAG + host, PID_TAG + str(gone.pid)],
        "other host": [HOST_TAG + "another-machine", PID_TAG + str(gone.pid)],
        "untagged": [],
    }
    with get_client(sync_client=True) as client:
        runs = {
            k: client.create_flow_run(_noop, tags=t, state=Running()) for k, t in owners.items()
        }
        try:
            ended = _cleaner()
            states = {k: client.read_flow_run(r.id).state for k, r in runs.items()}
        finally:
            for run in runs.values():
                client.set_flow_run_state(run.id, Completed(), force=True)
    assert str(runs["dead"].id) in ended
    assert not {str(runs[k].id) for k in ("live", "other host", "untagged")} & set(ended)
    assert states["dead"] is not None and states["dead"].name == "Crashed"
    assert "is gone" in (states["dead"].message or "")
    for kind in ("live", "other host", "untagged"):
        assert states[kind] is not None and states[kind].is_running(), kind
