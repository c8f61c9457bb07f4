"""``ltv serve``: the deployments registered with the Prefect API, and a run they execute."""

from __future__ import annotations

import datetime
import signal
import subprocess
import time

import pytest
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment

from features.synthetic import generate_to
from flows.outputs import set_dir

from .conftest import _command

AS_OF = datetime.date(2026, 7, 1)


def _deployments() -> dict[str, object]:
    with get_client(sync_client=True) as client:
        found = client.read_deployments()
        return {f"{client.read_flow(d.flow_id).name}/{d.name}": d for d in found}


def _state(flow_run_id):
    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id).state


def test_serve_without_a_prefect_server_says_how_to_start_one(ltv, tmp_path):
    generate_to(tmp_path / "data", 50, seed=1)
    done = ltv("serve", "--data", str(tmp_path / "data"), env={"PREFECT_API_URL": ""})
    assert done.returncode == 2
    assert "PREFECT_API_URL" in done.stderr and "Traceback" not in done.stderr


def test_serve_registers_the_schedules_and_runs_what_is_asked(prefect_harness, tmp_path):
    data, work = tmp_path / "data", tmp_path / "work"
    generate_to(data, 1500, seed=5)
    command, env = _command(
        ("serve", "--data", str(data), "--workdir", str(work), "--budget", "400"),
        {"PREFECT_RUNNER_POLL_FREQUENCY": "1", "LTV_TRAIN__CUTOFF_MONTHS": "4"},
    )
    log = tmp_path / "serve.log"
    served = subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        wanted = {
            "score_customers/daily-scoring",
            "train_models/weekly-retraining",
            "ltv_pipeline/on-demand",
        }
        deadline = time.monotonic() + 120
        while not wanted <= set(found := _deployments()):
            assert served.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the deployments never appeared"
            time.sleep(1)
        scoring = found["score_customers/daily-scoring"]
        (schedule,) = scoring.schedules
        assert schedule.schedule.cron == "0 6 * * *"
        assert schedule.schedule.timezone == "Asia/Shanghai"
        assert scoring.global_concurrency_limit is not None
        assert scoring.global_concurrency_limit.limit == 1
        assert scoring.concurrency_options.collision_strategy == "ENQUEUE"
        assert scoring.parameters["run"]["budget"] == 400
        assert scoring.parameters["run"]["data"] == str(data.resolve())
        (weekly,) = found["train_models/weekly-retraining"].schedules
        assert weekly.schedule.cron == "0 2 * * 1"
        assert not found["ltv_pipeline/on-demand"].schedules

        run = run_deployment(
            "ltv_pipeline/on-demand",
            parameters={"run": {"data": str(data), "workdir": str(work), "as_of": str(AS_OF)}},
            timeout=600,
        )
        assert run.state is not None and run.state.is_completed(), log.read_text()[-3000:]
        assert (set_dir(work, AS_OF) / "coupon_list.parquet").exists()

        # A run in progress when the server stops is cancelled, not left Running.
        going = run_deployment(
            "ltv_pipeline/on-demand",
            parameters={"run": {"data": str(data), "workdir": str(tmp_path / "w2")}},
            timeout=0,
        )
        deadline = time.monotonic() + 120
        while not _state(going.id).is_running():
            assert time.monotonic() < deadline, "the second run never started"
            time.sleep(0.5)
    finally:
        served.send_signal(signal.SIGTERM)  # what a process supervisor sends; Ctrl-C is the same
        try:
            served.wait(timeout=180)
        except subprocess.TimeoutExpired:
            served.kill()
    out = log.read_text()
    assert served.returncode == 0, out[-3000:]  # stopped cleanly, not killed
    paused = _deployments()["score_customers/daily-scoring"]
    assert paused.paused, out[-3000:]  # stopping the server pauses the schedules
    assert _state(going.id).is_cancelled(), out[-3000:]
    assert "score_customers/daily-scoring" in out and "0 6 * * *" in out


@pytest.fixture(autouse=True)
def _no_leftover_deployments(prefect_harness):
    """Deployments made here are removed, so other tests see the API as they left it."""
    yield
    with get_client(sync_client=True) as client:
        for deployment in client.read_deployments():
            client.delete_deployment(deployment.id)
