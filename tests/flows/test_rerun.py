"""Reruns recompute nothing they cached (R3); a training killed at a task boundary resumes (R1, R5).

One small dataset; an uninterrupted training and scoring is the reference every rerun and every
killed-then-rerun training is compared with.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import signal
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter

from features.synthetic import generate_to
from flows.caching import cache_dir
from flows.outputs import TABLES, set_dir
from flows.score import score
from flows.settings import get_settings
from flows.train import REGISTERED, train
from models.tracking import default_tracking_uri

from .conftest import fails_once, kill_after, running_flow_runs

AS_OF = datetime.date(2026, 7, 1)
#: The tasks each flow caches.
TRAINING_CACHED = {"build-features", "labels", "training-frame", "fit-models", "baselines"}
SCORING_CACHED = {"bgnbd-comparison", "coupon-uplift", "explain-scores"}


@pytest.fixture(scope="module")
def small_settings():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LTV_TRAIN__CUTOFF_MONTHS", "3")
        get_settings.cache_clear()
        yield patch
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, prefect_harness, small_settings):
    """Data, and one uninterrupted training and scoring with their states."""
    root = tmp_path_factory.mktemp("rerun")
    data = root / "data"
    generate_to(data, 1000, seed=11)
    work = root / "work"
    trained = train(data=data, as_of=AS_OF, workdir=work, return_state=True)
    scored = score(data=data, as_of=AS_OF, workdir=work, return_state=True)
    return {
        "data": data,
        "work": work,
        "trained": trained,
        "scored": scored,
        "digests": _digests(work),
        "models": _models(work),
    }


def _digests(work) -> dict[str, str]:
    return {
        name: hashlib.sha256((set_dir(work, AS_OF) / f"{name}.parquet").read_bytes()).hexdigest()
        for name in TABLES
    }


def _models(work) -> dict[str, list[tuple[str, str]]]:
    """Per registered model: (version, digest of its booster file) of every version."""
    uri = default_tracking_uri(work)
    client = MlflowClient(uri, registry_uri=uri)
    out = {}
    for name in REGISTERED.values():
        versions = sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: v.version)
        out[name] = [(str(v.version), _booster_digest(uri, name, v.version)) for v in versions]
    return out


def _booster_digest(uri: str, name: str, version: str) -> str:
    path = mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", tracking_uri=uri)
    return hashlib.sha256(Path(path, "model.lgb").read_bytes()).hexdigest()


def _runs_by_status(work) -> dict[str, int]:
    client = MlflowClient(default_tracking_uri(work))
    experiments = [e.experiment_id for e in client.search_experiments()]
    counts: dict[str, int] = {}
    for run in client.search_runs(experiments, max_results=1000):
        counts[run.info.status] = counts.get(run.info.status, 0) + 1
    return counts


def _task_states(state) -> dict[str, set[str]]:
    """Task name (without its run suffix) -> the names of its runs' final states."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id={"any_": [state.state_details.flow_run_id]})
        )
    out: dict[str, set[str]] = {}
    for run in runs:
        out.setdefault(run.name.rsplit("-", 1)[0], set()).add(run.state.name if run.state else "")
    return out


def test_the_first_run_computes_and_persists_as_parquet(reference):
    states = _task_states(reference["trained"])
    for name in TRAINING_CACHED:
        assert states[name] == {"Completed"}, name
    results = sorted((cache_dir(reference["work"]) / "results").iterdir())
    snapshots = [p for p in results if p.name.startswith("build-features-")]
    assert len(snapshots) >= 3 and all(p.read_bytes()[:4] == b"PAR1" for p in snapshots)
    assert all(p.read_bytes()[:4] in (b"PAR1", b"PK\x03\x04") for p in results)  # no pickle
    keys = [json.loads(p.read_bytes()) for p in (cache_dir(reference["work"]) / "keys").iterdir()]
    assert {k["serializer"]["type"] for k in keys} == {"ltv-frames"}


def test_a_rerun_recomputes_nothing_it_cached_and_registers_nothing_twice(reference):
    """R3: training and scoring again on the same inputs: cached tasks are read, not run."""
    work, data = reference["work"], reference["data"]
    runs_before = _runs_by_status(work)
    again = train(data=data, as_of=AS_OF, workdir=work, return_state=True)
    states = _task_states(again)
    for name in TRAINING_CACHED:
        assert states[name] == {"Cached"}, (name, states[name])
    result = again.result()
    assert all(m["registered_before"] for m in result["models"].values())
    first = reference["trained"].result()["models"]
    assert {k: m["version"] for k, m in result["models"].items()} == {
        k: m["version"] for k, m in first.items()
    }
    assert _models(work) == reference["models"]  # no second version
    assert _runs_by_status(work) == runs_before  # no second MLflow run

    rescored = score(data=data, as_of=AS_OF, workdir=work, return_state=True)
    states = _task_states(rescored)
    for name in SCORING_CACHED:
        assert states[name] == {"Cached"}, (name, states[name])
    assert _digests(work) == reference["digests"]


def test_changed_data_are_not_served_from_the_cache(reference, tmp_path):
    import pandas as pd

    data = tmp_path / "data"
    data.mkdir()
    for path in reference["data"].glob("*.parquet"):
        (data / path.name).write_bytes(path.read_bytes())
    tx = pd.read_parquet(data / "transactions.parquet")
    tx.iloc[:-50].to_parquet(data / "transactions.parquet", index=False)  # the last lines go
    state = score(data=data, as_of=AS_OF, workdir=reference["work"], return_state=True)
    states = _task_states(state)
    for name in SCORING_CACHED:
        assert states[name] == {"Completed"}, (name, states[name])


@pytest.mark.parametrize(
    "after",
    ["load-dataset", "build-features", "training-frame", "fit-models", "baselines", "log-model"],
)
def test_a_training_killed_after_a_task_then_rerun_is_the_uninterrupted_one(
    reference, tmp_path, after
):
    """R1, R5: SIGKILL once ``after`` completed, then rerun: the same models, once each."""
    work = tmp_path / "work"
    args = ("train", "--data", str(reference["data"]), "--as-of", str(AS_OF))
    assert kill_after((*args, "--workdir", str(work)), after) == -signal.SIGKILL
    train(data=reference["data"], as_of=AS_OF, workdir=work)
    assert _models(work) == reference["models"]  # same boosters, one version each
    assert "RUNNING" not in _runs_by_status(work)
    assert running_flow_runs() == []


def test_io_errors_in_training_storage_and_tracking_are_retried_and_change_nothing(
    reference, tmp_path, monkeypatch
):
    """R2: a full disk under a snapshot write and an unreachable MLflow, once each: same models."""
    import flows.features
    import flows.train

    disk_full = OSError(28, "No space left on device (injected)")
    monkeypatch.setattr(
        flows.features, "write_parquet", fails_once(flows.features.write_parquet, disk_full)
    )
    unreachable = ConnectionError("MLflow server unreachable (injected)")
    monkeypatch.setattr(
        flows.train, "tracker_for", fails_once(flows.train.tracker_for, unreachable)
    )
    work = tmp_path / "work"
    state = train(data=reference["data"], as_of=AS_OF, workdir=work, return_state=True)
    assert state.is_completed()
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id={"any_": [state.state_details.flow_run_id]})
        )
    attempts = {r.name.rsplit("-", 1)[0]: 0 for r in runs}
    for run in runs:
        name = run.name.rsplit("-", 1)[0]
        attempts[name] = max(attempts[name], run.run_count)
    assert attempts["write-snapshot"] == 2 and attempts["end-abandoned-runs"] == 2
    assert _models(work) == reference["models"]


def test_a_version_left_half_done_is_finished_not_registered_again(reference):
    """A kill between registering a version and tagging it: the rerun finishes that version."""
    uri = default_tracking_uri(reference["work"])
    client = MlflowClient(uri, registry_uri=uri)
    name = REGISTERED["value"]
    version = reference["models"][name][0][0]
    for tag in ("training_key", "promotion", "promotion_reason", "as_of", "training_cutoffs"):
        client.delete_model_version_tag(name, version, tag)
    result = train(data=reference["data"], as_of=AS_OF, workdir=reference["work"])
    assert result["models"]["value"]["version"] == version
    assert _models(reference["work"]) == reference["models"]  # nothing registered again
    tags = client.get_model_version(name, version).tags
    assert tags["as_of"] == str(AS_OF) and json.loads(tags["training_cutoffs"])
    assert tags["promotion"] == "champion" and tags["training_key"]
