"""Tests of models.evaluation: metrics against sklearn and hand-computed values, tables, figures."""

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    log_loss,
    roc_auc_score,
)

from models.evaluation import (
    CLASSIFICATION_KEYS,
    REGRESSION_KEYS,
    calibration_figure,
    calibration_table,
    classification_metrics,
    comparison_table,
    decile_figure,
    decile_table,
    delta_vs_baseline,
    expected_calibration_error,
    gain_figure,
    importance_figure,
    lift_top_decile,
    mae_days,
    normalized_gini,
    regression_metrics,
    roc_figure,
    shap_summary_figure,
)

# 20 rows with distinct probabilities 0.05, 0.10, ..., 1.00: the ten equal-frequency bins are
# consecutive pairs, with mean p 0.075, 0.175, ..., 0.975.
P20 = np.arange(1, 21) * 0.05
Y20 = np.array([0, 0, 0, 0, 0, 1, 0, 1, 1, 0, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1])


def _kaggle_gini(actual: np.ndarray, pred: np.ndarray) -> float:
    """The reference Kaggle implementation (ties broken by original order)."""
    data = np.c_[actual, pred, np.arange(len(actual))].astype(float)
    data = data[np.lexsort((data[:, 2], -data[:, 1]))]
    total = data[:, 0].sum()
    g = data[:, 0].cumsum().sum() / total - (len(actual) + 1) / 2.0
    return g / len(actual)


@pytest.fixture
def binary_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    p = rng.uniform(0, 1, 2_000)
    y = (rng.uniform(0, 1, 2_000) < p).astype(int)
    return y, p


# ---------------------------------------------------------------------------------------------
# classification
# ---------------------------------------------------------------------------------------------


def test_classification_metrics_match_sklearn(binary_data):
    y, p = binary_data
    m = classification_metrics(y, p)
    assert tuple(m) == CLASSIFICATION_KEYS
    assert m["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert m["pr_auc"] == pytest.approx(average_precision_score(y, p), abs=1e-12)
    assert m["brier"] == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    assert m["brier"] == pytest.approx(np.mean((p - y) ** 2), abs=1e-12)
    assert m["log_loss"] == pytest.approx(log_loss(y, p), abs=1e-12)
    assert m["base_rate"] == pytest.approx(y.mean())
    assert m["n"] == len(y)
    assert all(isinstance(v, float) for v in m.values())


def test_log_loss_clips_extreme_probabilities():
    m = classification_metrics([1, 0, 1], [0.0, 1.0, 1.0])
    assert math.isfinite(m["log_loss"])
    q = np.clip([0.0, 1.0, 1.0], 1e-15, 1 - 1e-15)
    expected = -(math.log(q[0]) + math.log(1 - q[1]) + math.log(q[2])) / 3
    assert m["log_loss"] == pytest.approx(expected, rel=1e-12)


def test_ece_perfect_and_shifted():
    rng = np.random.default_rng(0)
    n = 200_000
    p = rng.uniform(0.0, 0.9, n)
    y = (rng.uniform(0, 1, n) < p).astype(int)
    assert expected_calibration_error(y, p) < 0.01
    assert expected_calibration_error(y, p + 0.1) == pytest.approx(0.1, abs=0.01)
    assert classification_metrics(y, p)["ece"] == expected_calibration_error(y, p)


def test_ece_hand_computed():
    # Per-bin observed rates 0, 0, .5, .5, .5, 1, .5, 1, 1, 1 against mean p .075 ... .975:
    # gaps .075 .175 .225 .125 .025 .425 .175 .225 .125 .025, sum 1.6, equal weights.
    assert expected_calibration_error(Y20, P20) == pytest.approx(0.16, abs=1e-12)
    # Row order does not matter when the probabilities are distinct.
    perm = np.random.default_rng(1).permutation(20)
    assert expected_calibration_error(Y20[perm], P20[perm]) == pytest.approx(0.16, abs=1e-12)


def test_calibration_table_equal_frequency():
    t = calibration_table(Y20, P20)
    assert list(t["count"]) == [2] * 10
    assert t["mean_pred"].to_numpy() == pytest.approx(np.arange(10) * 0.1 + 0.075)
    assert list(t["observed_rate"]) == [0, 0, 0.5, 0.5, 0.5, 1, 0.5, 1, 1, 1]
    # Uneven n: sizes differ by at most one; fewer rows than bins: one row per bin.
    assert list(calibration_table(np.r_[Y20, 1, 0, 1], np.r_[P20, 0.5, 0.5, 0.5])["count"]) == [
        3,
        3,
        3,
        2,
        2,
        2,
        2,
        2,
        2,
        2,
    ]
    assert len(calibration_table([0, 1, 1], [0.2, 0.5, 0.9])) == 3
    assert len(calibration_table(Y20, P20, bins=4)) == 4


def test_lift_top_decile_hand_computed():
    # Top 2 of 20 rows are p = 1.0 and 0.95, both positive; 12 of 20 positives overall.
    assert lift_top_decile(Y20, P20) == pytest.approx(1.0 / 0.6)
    assert classification_metrics(Y20, P20)["lift_top_decile"] == pytest.approx(1.0 / 0.6)


def test_lift_top_decile_ties_use_original_order():
    p = np.r_[[0.9, 0.9, 0.9], np.full(17, 0.1)]
    y = np.r_[[0, 1, 1], np.zeros(16), 1]
    # Top ceil(20 / 10) = 2 rows: the first two 0.9 rows (y 0 and 1); base rate 3/20.
    assert lift_top_decile(y, p) == pytest.approx(0.5 / 0.15)
    # 25 rows: the top decile is ceil(2.5) = 3 rows, as in decile_table.
    p25 = np.linspace(1, 0, 25)
    y25 = np.r_[[1, 1, 0], np.zeros(21), 1]
    assert lift_top_decile(y25, p25) == pytest.approx((2 / 3) / (3 / 25))
    assert decile_table(y25, p25)["count"].iloc[0] == 3


def test_single_class_gives_nan_not_exception():
    m = classification_metrics(np.zeros(50), np.linspace(0, 1, 50))
    assert math.isnan(m["auc"]) and math.isnan(m["pr_auc"])
    assert math.isnan(m["lift_top_decile"])
    assert math.isfinite(m["brier"]) and math.isfinite(m["log_loss"]) and math.isfinite(m["ece"])
    m1 = classification_metrics(np.ones(50), np.linspace(0, 1, 50))
    assert math.isnan(m1["auc"]) and math.isnan(m1["pr_auc"])
    assert m1["lift_top_decile"] == 1.0


@pytest.mark.parametrize(
    ("y", "p", "match"),
    [
        ([0, 1, np.nan], [0.1, 0.2, 0.3], "y_true contains 1 NaN"),
        ([0, 1, 1], [0.1, np.nan, np.nan], "p contains 2 NaN"),
        ([0, 1], [0.1, 0.2, 0.3], "length mismatch: y_true=2, p=3"),
        ([0, 1, 2], [0.1, 0.2, 0.3], "y_true must be 0/1"),
        ([0, 1, 1], [0.1, 0.2, 1.3], r"p must lie in \[0, 1\]"),
        ([[0, 1]], [[0.1, 0.2]], "y_true must be 1-D"),
        ([], [], "y_true is empty"),
        ([0, 1], [0.1, np.inf], "p contains 1 infinite"),
    ],
)
def test_classification_validation(y, p, match):
    with pytest.raises(ValueError, match=match):
        classification_metrics(y, p)


# ---------------------------------------------------------------------------------------------
# regression
# ---------------------------------------------------------------------------------------------


def test_gini_perfect_reversed_random():
    rng = np.random.default_rng(3)
    actual = rng.gamma(1.0, 50.0, 5_000) * (rng.uniform(size=5_000) < 0.4)
    assert normalized_gini(actual, actual) == pytest.approx(1.0)
    assert normalized_gini(actual, 2 * actual + 1) == pytest.approx(1.0)
    assert normalized_gini(actual, -actual) == pytest.approx(-1.0)
    assert abs(normalized_gini(actual, rng.uniform(size=5_000))) < 0.05


def test_gini_hand_computed_and_matches_kaggle_without_ties():
    a = np.array([0.0, 2.0, 1.0, 3.0])
    s = np.array([0.1, 0.3, 0.4, 0.2])
    # By prediction: actuals 1, 2, 3, 0 -> cumsum sum 16 -> (16/6 - 2.5) / 4 = 1/24.
    # Oracle: 3, 2, 1, 0 -> 20 -> (20/6 - 2.5) / 4 = 5/24. Ratio 0.2.
    assert normalized_gini(a, s) == pytest.approx(0.2)
    rng = np.random.default_rng(4)
    actual = rng.exponential(10.0, 300) * (rng.uniform(size=300) < 0.5)
    pred = actual + rng.normal(0, 10.0, 300)
    expected = _kaggle_gini(actual, pred) / _kaggle_gini(actual, actual)
    assert normalized_gini(actual, pred) == pytest.approx(expected, abs=1e-12)


def test_gini_ties_are_averaged_and_order_free():
    a = np.array([0.0, 2.0, 1.0, 3.0])
    # Tied runs {0, 1} (mean 1) then {2, 3} (mean 2): 1, 1, 2, 2 -> (13/6 - 2.5) / 4 = -1/12.
    assert normalized_gini(a, [1, 1, 0, 0]) == pytest.approx((-1 / 12) / (5 / 24))
    perm = [3, 1, 2, 0]
    assert normalized_gini(a[perm], np.array([1, 1, 0, 0])[perm]) == pytest.approx(-0.4)
    assert normalized_gini(a, np.full(4, 7.0)) == pytest.approx(0.0, abs=1e-12)


def test_gini_degenerate_is_nan():
    assert math.isnan(normalized_gini(np.zeros(10), np.arange(10)))
    assert math.isnan(normalized_gini(np.full(10, 3.0), np.arange(10)))


def test_regression_metrics():
    rng = np.random.default_rng(5)
    actual = rng.gamma(1.0, 50.0, 1_000) * (rng.uniform(size=1_000) < 0.4)
    m = regression_metrics(actual, actual)
    assert tuple(m) == REGRESSION_KEYS
    assert m["gini"] == pytest.approx(1.0)
    assert m["decile_mape"] == 0.0
    assert m["mae"] == 0.0 and m["rmse"] == 0.0
    assert m["spearman"] == pytest.approx(1.0)
    pred = actual + 1.0
    m2 = regression_metrics(actual, pred)
    assert m2["mae"] == pytest.approx(1.0) and m2["rmse"] == pytest.approx(1.0)
    assert m2["mean_pred"] == pytest.approx(actual.mean() + 1.0)
    assert m2["mean_actual"] == pytest.approx(actual.mean())
    assert m2["n"] == 1_000


def test_decile_mape_hand_computed_and_zero_deciles_skipped():
    ones = np.ones(100)
    assert regression_metrics(ones, 2 * ones)["decile_mape"] == pytest.approx(1.0)
    # The top-predicted decile (10 rows) has zero actual: skipped; the others are exact.
    actual = np.r_[np.zeros(10), np.ones(90)]
    pred = np.r_[np.full(10, 5.0), np.ones(90)]
    assert regression_metrics(actual, pred)["decile_mape"] == pytest.approx(0.0)
    assert math.isnan(regression_metrics(np.zeros(20), np.ones(20))["decile_mape"])


def test_regression_validation():
    with pytest.raises(ValueError, match="y_pred contains 1 NaN"):
        regression_metrics([1.0, 2.0], [1.0, np.nan])
    with pytest.raises(ValueError, match="length mismatch"):
        normalized_gini([1.0, 2.0], [1.0])


def test_mae_days():
    actual = np.array([3.0, np.nan, 10.0, 7.0])
    pred = np.array([5.0, 40.0, 4.0, np.nan])
    mask = np.array([True, False, True, False])
    assert mae_days(actual, pred, mask) == pytest.approx(4.0)
    assert mae_days(actual, pred, [1, 0, 1, 0]) == pytest.approx(4.0)
    assert math.isnan(mae_days(actual, pred, np.zeros(4, dtype=bool)))
    with pytest.raises(ValueError, match="predicted_days contains 1 NaN values where mask"):
        mae_days(actual, pred, [True, False, True, True])
    with pytest.raises(ValueError, match="length mismatch"):
        mae_days(actual, pred, [True, False])


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [20, 25, 1_003])
def test_decile_table_probability(binary_data, n):
    y, p = binary_data
    y, p = y[:n], p[:n]
    t = decile_table(y, p)
    assert list(t["decile"]) == list(range(1, 11))
    assert t["count"].sum() == n
    assert t["count"].max() - t["count"].min() <= 1
    assert t["gain"].iloc[-1] == pytest.approx(1.0)
    assert t["cum_count_share"].iloc[-1] == pytest.approx(1.0)
    assert (np.diff(t["gain"]) >= 0).all()
    # Deciles ordered: scores do not increase from one decile to the next.
    assert (t["score_min"].to_numpy()[:-1] >= t["score_max"].to_numpy()[1:]).all()
    assert (np.diff(t["mean_pred"]) <= 0).all()
    assert t["lift"].iloc[0] == pytest.approx(lift_top_decile(y, p))
    assert t["cum_lift"].iloc[-1] == pytest.approx(1.0)
    assert (t["count"] * t["mean_actual"]).sum() == pytest.approx(y.sum())


def test_decile_table_value_and_small_n():
    rng = np.random.default_rng(6)
    actual = rng.gamma(1.0, 50.0, 500)
    t = decile_table(actual, actual, prob=False)
    assert t["gain"].iloc[-1] == pytest.approx(1.0)
    assert t["gain"].iloc[0] > 0.1
    assert len(decile_table([1.0, 2.0, 0.0], [3.0, 2.0, 1.0], prob=False)) == 3
    with pytest.raises(ValueError, match="y_true must be 0/1"):
        decile_table(actual, actual)
    with pytest.raises(ValueError, match="score contains 1 NaN"):
        decile_table([1.0, 2.0], [1.0, np.nan], prob=False)


def test_comparison_and_delta_tables():
    metrics = {
        "lgbm": {"auc": 0.8, "brier": 0.10, "n": 100.0},
        "bgnbd": {"auc": 0.7, "brier": 0.12},
    }
    t = comparison_table(metrics, ["auc", "brier"])
    assert list(t.index) == ["lgbm", "bgnbd"] and list(t.columns) == ["auc", "brier"]
    assert t.index.name == "model"
    full = comparison_table(metrics)
    assert list(full.columns) == ["auc", "brier", "n"]
    assert math.isnan(full.loc["bgnbd", "n"])
    d = delta_vs_baseline(t, "bgnbd")
    assert list(d.columns) == ["auc delta vs bgnbd", "brier delta vs bgnbd"]
    assert d.loc["lgbm", "auc delta vs bgnbd"] == pytest.approx(0.1)
    assert d.loc["bgnbd"].tolist() == [0.0, 0.0]
    with pytest.raises(KeyError, match="baseline 'pareto'"):
        delta_vs_baseline(t, "pareto")


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------


def _save(fig: Figure, tmp_path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    fig.savefig(path)
    assert path.stat().st_size > 1_000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_roc_figure(binary_data, tmp_path):
    y, p = binary_data
    fig = roc_figure(
        y, {"lgbm": p, "baseline": np.clip(p + 0.2, 0, 1), "flat": np.full(len(y), 0.3)}
    )
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert len(ax.lines) == 4  # three models + chance
    assert "AUC" in ax.get_legend().get_texts()[0].get_text()
    _save(fig, tmp_path, "roc")
    one_class = roc_figure(np.zeros(10), {"m": np.linspace(0, 1, 10)})
    assert len(one_class.axes[0].lines) == 1


def test_calibration_figure(binary_data, tmp_path):
    y, p = binary_data
    fig = calibration_figure(y, {"lgbm": p, "shifted": np.clip(p * 0.5, 0, 1)})
    (ax,) = fig.axes
    assert len(ax.lines) == 3
    assert len(ax.lines[0].get_xdata()) == 10
    _save(fig, tmp_path, "calibration")


def test_gain_figure(binary_data, tmp_path):
    y, p = binary_data
    fig = gain_figure(y, {"lgbm": p, "random": np.random.default_rng(0).uniform(size=len(y))})
    ax_gain, ax_lift = fig.axes
    assert len(ax_gain.lines) == 3 and len(ax_lift.lines) == 3
    x, g = ax_gain.lines[0].get_data()
    assert g[0] == 0.0 and g[-1] == pytest.approx(1.0) and x[-1] == 1.0
    _save(fig, tmp_path, "gain")
    spend = np.random.default_rng(1).gamma(1.0, 20.0, 300)
    assert len(gain_figure(spend, {"m": spend}).axes[0].lines) == 2


def test_decile_figure(binary_data, tmp_path):
    y, p = binary_data
    fig = decile_figure(decile_table(y, p))
    (ax,) = fig.axes
    assert len(ax.containers) == 2
    assert len(ax.patches) == 20
    _save(fig, tmp_path, "deciles")
    with pytest.raises(ValueError, match="missing columns"):
        decile_figure(pd.DataFrame({"decile": [1]}))


def test_importance_figure(tmp_path):
    names = [f"f{i}" for i in range(30)]
    gains = np.arange(30, dtype=float)
    fig = importance_figure(names, gains, top=20)
    (ax,) = fig.axes
    assert len(ax.patches) == 20
    assert ax.get_yticklabels()[-1].get_text() == "f29"  # largest at the top
    _save(fig, tmp_path, "importance")
    assert len(importance_figure(names[:5], gains[:5]).axes[0].patches) == 5
    with pytest.raises(ValueError, match="length mismatch"):
        importance_figure(names, gains[:3])


def test_shap_summary_figure(tmp_path):
    rng = np.random.default_rng(2)
    n = 3_000
    features = pd.DataFrame(
        {f"x{j}": rng.normal(size=n) for j in range(25)}
        | {"channel": pd.Categorical(rng.choice(["wecom", "sms", "group"], n))}
    )
    contrib = rng.normal(size=(n, 27)) * np.r_[np.arange(1, 27), 0.0]  # + expected-value column
    fig = shap_summary_figure(contrib, features, top=20)
    ax = fig.axes[0]
    assert len(fig.axes) == 2  # summary + colorbar
    assert len(ax.collections) == 20
    assert ax.get_yticklabels()[-1].get_text() == "channel"  # largest mean |SHAP| on top
    assert sum(len(c.get_offsets()) for c in ax.collections) == 20 * 2_000
    _save(fig, tmp_path, "shap")
    # Deterministic: same input, same points.
    again = shap_summary_figure(contrib, features, top=20).axes[0]
    for c1, c2 in zip(ax.collections, again.collections, strict=True):
        np.testing.assert_array_equal(c1.get_offsets(), c2.get_offsets())
    # Missing feature values get their own grey collection; contrib without the bias column.
    with_nan = features.iloc[:200, :3].copy()
    with_nan.iloc[:10, 0] = np.nan
    small = shap_summary_figure(contrib[:200, :3] + 1.0, with_nan, top=5)
    assert len(small.axes[0].collections) == 4
    with pytest.raises(ValueError, match="contrib must have shape"):
        shap_summary_figure(contrib[:, :5], features)
