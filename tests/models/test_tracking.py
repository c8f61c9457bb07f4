"""The MLflow module against a real SQLite tracking store in a temp directory."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from models.tracking import CHALLENGER, CHAMPION, Tracker, default_tracking_uri


def booster(seed: int = 0) -> tuple[lgb.Booster, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(size=(500, 4)), columns=["a", "b", "c", "d"])
    y = (x["a"] + rng.normal(size=500) > 0).astype(int)
    params = {"objective": "binary", "verbosity": -1, "deterministic": True, "seed": seed}
    params |= {"force_row_wise": True, "num_threads": 1}
    return lgb.train(params, lgb.Dataset(x, y), 10), x


@pytest.fixture
def tracker(tmp_path):
    return Tracker(default_tracking_uri(tmp_path), tmp_path / "mlartifacts")


def test_a_run_logs_everything_and_always_ends(tracker):
    model, x = booster()
    with tracker.run("ltv-churn", "churn", {"feature_service": "churn_model_v1"}) as run:
        run.log_params({"horizon_days": 90})
        run.log_metrics({f"m{i}": float(i) for i in range(1500)} | {"nan": float("nan")})
        digest = run.log_dataset(
            x.assign(y=1), "train", str(tracker.artifact_root), "training", "y"
        )
        version = run.log_booster(model, "ltv-churn", x, {"heldout_cutoff": "2026-01-01"})
    stored = tracker.client.get_run(run.run_id)
    assert stored.info.status == "FINISHED"
    assert len(stored.data.metrics) == 1500 and "nan" not in stored.data.metrics
    assert stored.data.params["horizon_days"] == "90"
    assert stored.inputs.dataset_inputs[0].dataset.digest == digest
    assert tracker.version_tags("ltv-churn", version)["heldout_cutoff"] == "2026-01-01"
    loaded = tracker.load_booster("ltv-churn", version)
    assert np.array_equal(loaded.predict(x), model.predict(x))

    with pytest.raises(RuntimeError), tracker.run("ltv-churn", "boom", {}) as failed:
        raise RuntimeError("training failed")
    assert tracker.client.get_run(failed.run_id).info.status == "FAILED"


def test_champion_only_when_it_beats_the_champion_on_the_same_cutoff(tracker):
    model, x = booster()
    versions = []
    for _ in range(3):
        with tracker.run("ltv-churn", "churn", {}) as run:
            versions.append(run.log_booster(model, "ltv-churn", x, {}))
    first = tracker.promote(
        "ltv-churn", versions[0], metric="auc", new_value=0.7, champion=None, cutoff="c"
    )
    assert first.alias == CHAMPION and first.previous_champion is None
    worse = tracker.promote(
        "ltv-churn", versions[1], metric="auc", new_value=0.69, champion=("1", 0.7), cutoff="c"
    )
    assert worse.alias == CHALLENGER
    assert tracker.version_tags("ltv-churn", versions[1])["promotion_reason"] == (
        f"does not beat champion v{versions[0]} on held-out cutoff c: auc 0.6900 vs 0.7000"
    )
    assert tracker.champion("ltv-churn")[1] == versions[0]
    better = tracker.promote(
        "ltv-churn", versions[2], metric="auc", new_value=0.71, champion=("1", 0.7), cutoff="c"
    )
    assert better.alias == CHAMPION and tracker.champion("ltv-churn")[1] == versions[2]
    # Not comparable, stale or undefined: never promoted.
    for champion, value, reason in [
        ((versions[2], None), 0.9, "cannot be compared"),
        ((versions[0], 0.5), 0.9, "the champion changed to v3"),
        ((versions[2], 0.5), float("nan"), "auc is undefined"),
    ]:
        kept = tracker.promote(
            "ltv-churn", versions[1], metric="auc", new_value=value, champion=champion, cutoff="c"
        )
        assert kept.alias == CHALLENGER and reason in kept.reason
        assert tracker.champion("ltv-churn")[1] == versions[2]


def test_loading_refuses_a_pickled_model(tracker):
    import mlflow
    from sklearn.linear_model import LogisticRegression

    x = pd.DataFrame({"a": [0.0, 1.0, 0.0, 1.0]})
    with tracker.run("other", "pickled", {}):
        mlflow.sklearn.log_model(
            LogisticRegression().fit(x, [0, 1, 0, 1]),
            name="model",
            registered_model_name="ltv-churn",
            serialization_format="cloudpickle",
        )
    with pytest.raises(ValueError, match="not a native LightGBM model"):
        tracker.load_booster("ltv-churn", "1")


def test_two_trainings_at_once_each_register_a_version(tmp_path):
    """R12: concurrent registrations into one SQLite store both succeed."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import numpy as np, pandas as pd, lightgbm as lgb
        from models.tracking import Tracker, default_tracking_uri
        from pathlib import Path
        x = pd.DataFrame(np.random.default_rng(0).normal(size=(200, 3)), columns=list("abc"))
        b = lgb.train({{"objective": "binary", "verbosity": -1}}, lgb.Dataset(x, x.a > 0), 5)
        t = Tracker(default_tracking_uri(Path({str(tmp_path)!r})), Path({str(tmp_path)!r}) / "a")
        for i in range(3):
            with t.run("ltv-churn", "churn", {{}}) as run:
                v = run.log_booster(b, "ltv-churn", x, {{}})
            current = t.champion("ltv-churn")
            t.promote("ltv-churn", v, metric="auc", new_value=float(i),
                      champion=(current[1], 0.0) if current else None, cutoff="c")
        """
    )
    Tracker(default_tracking_uri(tmp_path), tmp_path / "a").experiment("ltv-churn")
    procs = [
        subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    tracker = Tracker(default_tracking_uri(tmp_path))
    versions = tracker.client.search_model_versions("name='ltv-churn'")
    assert sorted(int(v.version) for v in versions) == [1, 2, 3, 4, 5, 6]
    assert tracker.champion("ltv-churn") is not None


def test_fingerprint_changes_with_any_cell_and_the_schema_follows_dtypes(tracker):
    from models.tracking import _schema, fingerprint

    frame = pd.DataFrame(
        {"a": [1.0, None], "n": pd.array([1, 2], dtype="Int64"), "s": ["x", "y"]}
    ).astype({"s": "string"})
    assert fingerprint(frame) == fingerprint(frame.copy())
    changed = frame.copy()
    changed.loc[1, "s"] = "z"
    assert fingerprint(changed) != fingerprint(frame)
    schema = {c.name: (c.type.name, c.required) for c in _schema(frame).inputs}
    assert schema == {"a": ("double", False), "n": ("long", True), "s": ("string", True)}


def test_processes_creating_one_new_store_at_once_all_succeed(tmp_path):
    """R12: MLflow creates a new SQLite store on first use; four processes at once all work.

    Without the lock in ``Tracker`` most of them fail while migrating the new database.
    """
    import subprocess
    import sys

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = "import sys; from models.tracking import Tracker; Tracker(sys.argv[1]).experiment('x')"
    runs = [
        subprocess.Popen([sys.executable, "-c", code, uri], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    errors = [run.communicate(timeout=300)[1] for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0, 0], errors[0][-2000:]


def test_runs_left_running_by_a_killed_process_are_ended_as_killed(tracker, tmp_path):
    """R2: a process killed inside a run cannot end it; the next training ends it KILLED."""
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from models.tracking import Tracker
        tracker = Tracker({tracker.uri!r}, Path({str(tmp_path / "mlartifacts")!r}))
        with tracker.run("ltv-churn", "killed", {{}}) as run:
            print(run.run_id, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == -9, done.stderr
    killed = done.stdout.strip()
    assert tracker.client.get_run(killed).info.status == "RUNNING"
    with tracker.run("ltv-churn", "alive", {}) as alive:  # this process's run: left alone
        assert tracker.end_abandoned_runs() == [killed]
        assert tracker.client.get_run(alive.run_id).info.status == "RUNNING"
    assert tracker.client.get_run(killed).info.status == "KILLED"
    assert tracker.client.get_run(alive.run_id).info.status == "FINISHED"
    assert tracker.end_abandoned_runs() == []
