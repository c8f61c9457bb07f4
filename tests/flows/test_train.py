"""``ltv train`` end to end on synthetic data: Feast rows, three models, MLflow, registry."""

from __future__ import annotations

import datetime
import hashlib

import pytest

from features.synthetic import generate_to
from flows.settings import get_settings
from flows.train import REGISTERED, train
from models.tracking import Tracker, default_tracking_uri

AS_OF = datetime.date(2026, 7, 1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A training, its rerun in the same work directory, and the same training elsewhere."""
    work = tmp_path_factory.mktemp("train")
    generate_to(work / "data", 800, seed=5)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LTV_TRAIN__CUTOFF_MONTHS", "4")
        get_settings.cache_clear()
        first = train(data=work / "data", as_of=AS_OF, workdir=work)
        second = train(data=work / "data", as_of=AS_OF, workdir=work)
        patch.setenv("LTV_CACHE__ENABLED", "false")  # fitted again, nothing read from a cache
        get_settings.cache_clear()
        train(data=work / "data", as_of=AS_OF, workdir=work / "elsewhere")
    get_settings.cache_clear()
    return work, first, second


def model_hash(work, name: str, version: str) -> str:
    import mlflow

    uri = default_tracking_uri(work)
    local = mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", tracking_uri=uri)
    return hashlib.sha256(open(f"{local}/model.lgb", "rb").read()).hexdigest()


def test_cutoffs_are_matured_and_the_latest_is_held_out(trained):
    _, first, _ = trained
    assert first["training_cutoffs"] == ["2025-10-01", "2025-11-01", "2025-12-01"]
    assert first["heldout_cutoff"] == "2026-01-01"  # + 180 days <= 2026-07-01
    assert first["params"]["training_rows"] > 0 and first["params"]["heldout_rows"] > 0
    assert first["evaluation_share"] == 0.3


def test_runs_carry_metrics_baselines_artifacts_and_lineage(trained):
    work, first, _ = trained
    tracker = Tracker(default_tracking_uri(work))
    expected = {
        "churn": {"auc", "pr_auc", "brier", "log_loss", "ece", "lift_top_decile"},
        "next_purchase": {"auc", "pr_auc", "ece", "mae_days"},
        "value": {"gini", "decile_mape", "mae"},
    }
    for kind, done in first["models"].items():
        run = tracker.client.get_run(done["run_id"])
        assert run.info.status == "FINISHED"
        metrics = run.data.metrics
        for key in expected[kind]:
            assert key in metrics, (kind, key)
        decisive = "gini" if kind == "value" else "auc"
        assert {f"{decisive}_bgnbd", f"{decisive}_rfm"} <= set(metrics)
        assert run.data.tags["feature_service"] == f"{kind}_model_v1"
        assert run.data.tags["heldout_cutoff"] == "2026-01-01"
        assert run.inputs.dataset_inputs, "training data fingerprint"
        files = {a.path for a in tracker.client.list_artifacts(done["run_id"], "charts")}
        charts = {"charts/deciles.png", "charts/feature_importance.png", "charts/shap_summary.png"}
        if kind != "value":
            charts |= {"charts/roc.png", "charts/calibration.png", "charts/gain_chart.png"}
        assert charts <= files, kind
        top = {a.path for a in tracker.client.list_artifacts(done["run_id"])}
        assert {"comparison_vs_baselines.csv", "decile_table.csv"} <= top
        # Even on this small sample (a few hundred held-out customers) churn and value beat
        # the recency rule; bench/bench_quality.py measures quality at scale.
        if kind != "next_purchase":
            assert metrics[decisive] > metrics[f"{decisive}_rfm"], kind


def test_first_version_is_champion_a_rerun_registers_nothing_and_refits_are_identical(trained):
    """R3, R11: a rerun finds its version; the same training elsewhere gives the same file."""
    work, first, second = trained
    tracker = Tracker(default_tracking_uri(work))
    for kind, name in REGISTERED.items():
        one, two = first["models"][kind], second["models"][kind]
        assert (one["version"], one["alias"]) == ("1", "champion")
        assert (two["version"], two["alias"], two["run_id"]) == ("1", "champion", one["run_id"])
        assert two["registered_before"] and "registered_before" not in one
        assert [str(v.version) for v in tracker.client.search_model_versions(f"name='{name}'")] == [
            "1"
        ]
        assert model_hash(work, name, "1") == model_hash(work / "elsewhere", name, "1")
        booster, files = tracker.load_bundle(name, "1")
        assert booster.num_trees() > 0 and any(files.iterdir())


def test_open_label_windows_and_empty_snapshots_stop_with_a_clear_error(trained):
    from features.io import InputError
    from flows.features import features

    work, _, _ = trained
    with pytest.raises(InputError, match="are not all in the data yet"):
        train(data=work / "data", as_of=datetime.date(2027, 3, 1), workdir=work / "late")
    with pytest.raises(InputError, match="no customer is known before 2020-01-01"):
        features(data=work / "data", as_of=datetime.date(2020, 1, 1), workdir=work / "early")


def test_two_trainings_at_once_each_register_their_version(tmp_path, ltv_at_once):
    """R12: two ``ltv train`` processes on one work directory both finish and register.

    The two differ (their seeds): two runs of the same training register one version, which
    ``test_rerun.py`` covers.
    """
    generate_to(tmp_path / "data", 500, seed=9)
    runs = ltv_at_once(
        "train",
        "--data",
        str(tmp_path / "data"),
        "--as-of",
        str(AS_OF),
        "--workdir",
        str(tmp_path / "work"),
        env={"LTV_TRAIN__CUTOFF_MONTHS": "3"},
        each=({"LTV_SEED": "1"}, {"LTV_SEED": "2"}),
    )
    for run in runs:
        assert run.returncode == 0, run.stderr[-3000:]
    tracker = Tracker(default_tracking_uri(tmp_path / "work"))
    for name in REGISTERED.values():
        versions = tracker.client.search_model_versions(f"name='{name}'")
        assert sorted(str(v.version) for v in versions) == ["1", "2"], name
        assert tracker.champion_version(name) in ("1", "2"), name
        for version in ("1", "2"):  # each promotion decided: champion, or challenger
            assert tracker.version_tags(name, version)["promotion"] in ("champion", "challenger")
    runs_left = tracker.client.search_runs(
        [e.experiment_id for e in tracker.client.search_experiments()],
        "attributes.status = 'RUNNING'",
    )
    assert not runs_left
