"""Flow runs that name their process, and the end of those a kill left Running (R5).

A process killed with SIGKILL cannot tell Prefect that its flow run is over: the run would show
Running for ever. The runs of ``ltv features``, ``train``, ``score`` and ``ltv_pipeline`` (and
the typed flows that call them) therefore first tag themselves with their host and pid, and mark
Crashed the Running flow runs of this host whose process is gone (:func:`end_abandoned_flow_runs`).
Runs of other hosts, and runs without the tags, are left alone: there is no telling whether
their process is alive. Hosts are told apart by name, so machines that share a hostname must
not share a Prefect server.
"""

from __future__ import annotations

import os
import socket
from uuid import UUID

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import StateType
from prefect.runtime import flow_run
from prefect.states import Crashed

from features.io import process_alive

HOST_TAG, PID_TAG = "ltv.host:", "ltv.pid:"


@task(name="end-abandoned-flow-runs", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def end_abandoned_flow_runs() -> list[str]:
    """Tag this flow run with its process; mark Crashed the Running runs of dead processes here.

    Returns:
        The ids of the flow runs marked Crashed.
    """
    host = socket.gethostname()
    this = flow_run.get_id()
    ended = []
    with get_client(sync_client=True) as client:
        if this is not None:
            run = client.read_flow_run(UUID(this))
            tags = [t for t in run.tags if not t.startswith((HOST_TAG, PID_TAG))]
            mine = [HOST_TAG + host, PID_TAG + str(os.getpid())]
            client.update_flow_run(UUID(this), tags=[*tags, *mine])
        running = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING])),
                tags=FlowRunFilterTags(all_=[HOST_TAG + host]),
            )
        )
        for run in running:
            pid = next((t[len(PID_TAG) :] for t in run.tags if t.startswith(PID_TAG)), "")
            if str(run.id) == this or process_alive(pid):
                continue
            message = f"its process {pid} on {host} is gone (killed); marked by a later ltv run"
            client.set_flow_run_state(run.id, Crashed(message=message), force=True)
            ended.append(str(run.id))
    return ended
