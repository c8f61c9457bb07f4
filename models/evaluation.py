"""Held-out evaluation: metrics, tables and figures to compare LightGBM models with BTYD baselines.

Everything here is a pure function of arrays (numpy, pandas, scikit-learn, matplotlib): no
tracking, orchestration or feature-store calls, so the same code scores a model, a baseline or a
test fixture. The metric names are contracts (they become MLflow metric keys): ``auc``,
``pr_auc``, ``brier``, ``log_loss``, ``ece``, ``lift_top_decile`` (purchase probability);
``gini``, ``decile_mape``, ``mae`` (value); ``mae_days`` (time to next order).

Conventions shared by every function:

- Inputs are 1-D array-likes of equal, non-zero length, without NaN or infinity. A violation
  raises ``ValueError`` naming the argument (``"p contains 3 NaN values"``). Binary labels must be
  0/1 (booleans are accepted) and probabilities must lie in ``[0, 1]``.
- **Ranking and ties.** Whenever rows are put in score order the sort is *stable*: by ``-score``
  (highest first) for deciles, gain and lift, by ``score`` (lowest first) for calibration bins;
  tied scores keep their original row order. Results that depend on how ties are split (the
  rows at a bin boundary) are therefore deterministic for a given row order.
- **Equal-frequency bins.** Calibration bins and deciles are contiguous runs of the sorted rows,
  made with :func:`numpy.array_split`: ``k = min(bins, n)`` bins whose sizes differ by at most
  one, the larger ones first. This is the quantile binning of the predictions, but by rank
  rather than by value, so no bin is ever empty and heavily tied scores (a baseline that predicts
  the same value for many customers) cannot collapse the bins. A consequence: the top decile has
  exactly ``ceil(n / 10)`` rows, the same rows ``lift_top_decile`` reads.
- Degenerate inputs give NaN, not an exception: a single-class label makes ``auc`` and ``pr_auc``
  NaN, no positives make lifts NaN, zero total value makes ``gini`` and gains NaN.
- Figures are built on :class:`matplotlib.figure.Figure` directly (no ``pyplot``, no global
  state, no interactive backend); ``fig.savefig(path)`` writes PNG without any backend set up.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    log_loss,
    roc_auc_score,
    roc_curve,
)

__all__ = [
    "CLASSIFICATION_KEYS",
    "LOWER_IS_BETTER",
    "REGRESSION_KEYS",
    "calibration_figure",
    "calibration_table",
    "classification_metrics",
    "comparison_table",
    "decile_figure",
    "decile_table",
    "delta_vs_baseline",
    "expected_calibration_error",
    "gain_figure",
    "importance_figure",
    "lift_top_decile",
    "mae_days",
    "normalized_gini",
    "regression_metrics",
    "roc_figure",
    "shap_summary_figure",
]

#: Keys of :func:`classification_metrics`, in order.
CLASSIFICATION_KEYS = (
    "auc",
    "pr_auc",
    "brier",
    "log_loss",
    "ece",
    "lift_top_decile",
    "base_rate",
    "n",
)
#: Keys of :func:`regression_metrics`, in order.
REGRESSION_KEYS = (
    "gini",
    "decile_mape",
    "mae",
    "rmse",
    "spearman",
    "mean_pred",
    "mean_actual",
    "n",
)
#: Metrics where a smaller value is better (all others: larger is better, or descriptive).
LOWER_IS_BETTER = frozenset({"brier", "log_loss", "ece", "decile_mape", "mae", "rmse", "mae_days"})

#: Probabilities are clipped to ``[_EPS, 1 - _EPS]`` for the log loss.
_EPS = 1e-15
_N_DECILES = 10
_N_CALIBRATION_BINS = 10
#: Points per curve of the gain chart (percentiles of the population, plus the origin).
_GAIN_GRID = 101
#: Rows drawn per feature in the SHAP summary (a deterministic subsample above this).
_SHAP_MAX_POINTS = 2000

FloatArray = npt.NDArray[np.float64]


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _as_1d(x: npt.ArrayLike, name: str, *, allow_nan: bool = False) -> FloatArray:
    """Convert ``x`` to a 1-D float array, or raise ``ValueError`` naming ``name``."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from exc
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not allow_nan:
        n_nan = int(np.isnan(arr).sum())
        if n_nan:
            raise ValueError(f"{name} contains {n_nan} NaN values")
    n_inf = int(np.isinf(arr).sum())
    if n_inf:
        raise ValueError(f"{name} contains {n_inf} infinite values")
    return arr


def _same_length(**arrays: np.ndarray) -> None:
    """Raise ``ValueError`` unless all arrays have the same length."""
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{name}={n}" for name, n in lengths.items())
        raise ValueError(f"length mismatch: {shown}")


def _binary(y: npt.ArrayLike, name: str) -> FloatArray:
    """Validate 0/1 labels."""
    arr = _as_1d(y, name)
    bad = ~np.isin(arr, (0.0, 1.0))
    if bad.any():
        raise ValueError(
            f"{name} must be 0/1 labels; found {int(bad.sum())} other values (e.g. {arr[bad][0]!r})"
        )
    return arr


def _probability(p: npt.ArrayLike, name: str) -> FloatArray:
    """Validate probabilities in ``[0, 1]``."""
    arr = _as_1d(p, name)
    bad = (arr < 0.0) | (arr > 1.0)
    if bad.any():
        raise ValueError(f"{name} must lie in [0, 1]; found {int(bad.sum())} values outside")
    return arr


def _binary_pair(y_true: npt.ArrayLike, p: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    y = _binary(y_true, "y_true")
    q = _probability(p, "p")
    _same_length(y_true=y, p=q)
    return y, q


def _chunks(order: np.ndarray, k: int) -> list[np.ndarray]:
    """Split the sorted row indices into ``min(k, n)`` contiguous, near-equal chunks."""
    return np.array_split(order, min(k, len(order)))


def _desc_order(score: FloatArray) -> np.ndarray:
    """Row indices by descending score; ties keep their original order."""
    return np.argsort(-score, kind="stable")


def _safe_div(num: float, den: float) -> float:
    return float(num / den) if den != 0 else math.nan


# --------------------------------------------------------------------------------------------
# Classification (purchase probability)
# --------------------------------------------------------------------------------------------


def calibration_table(y_true: npt.ArrayLike, p: npt.ArrayLike, bins: int = 10) -> pd.DataFrame:
    """Reliability table: observed rate against mean predicted probability per bin.

    Bins are equal-frequency by rank of ``p`` (ascending, stable): ``min(bins, n)`` contiguous
    runs of the sorted rows whose sizes differ by at most one (see the module notes).

    Args:
        y_true: 0/1 outcomes.
        p: Predicted probabilities in ``[0, 1]``.
        bins: Number of bins (at least 1).

    Returns:
        One row per bin, lowest predictions first, with columns ``bin`` (1-based), ``count``,
        ``p_min``, ``p_max``, ``mean_pred``, ``observed_rate`` and ``abs_gap``
        (``|mean_pred - observed_rate|``).

    Raises:
        ValueError: On invalid inputs or ``bins < 1``.
    """
    y, q = _binary_pair(y_true, p)
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    order = np.argsort(q, kind="stable")
    rows = []
    for i, idx in enumerate(_chunks(order, bins), start=1):
        mean_pred = float(q[idx].mean())
        observed = float(y[idx].mean())
        rows.append(
            {
                "bin": i,
                "count": len(idx),
                "p_min": float(q[idx].min()),
                "p_max": float(q[idx].max()),
                "mean_pred": mean_pred,
                "observed_rate": observed,
                "abs_gap": abs(mean_pred - observed),
            }
        )
    return pd.DataFrame(rows)


def expected_calibration_error(
    y_true: npt.ArrayLike, p: npt.ArrayLike, bins: int = _N_CALIBRATION_BINS
) -> float:
    """Expected calibration error over equal-frequency bins.

    ``ECE = sum_b (n_b / n) * |mean(p in b) - mean(y in b)|`` over the bins of
    :func:`calibration_table` (quantile bins by rank of ``p``; 10 by default). Equal-frequency
    bins keep every bin populated when predictions are concentrated near zero, as purchase
    probabilities usually are; equal-width bins would leave most of the mass in one bin.

    Args:
        y_true: 0/1 outcomes.
        p: Predicted probabilities in ``[0, 1]``.
        bins: Number of bins.

    Returns:
        The ECE, in ``[0, 1]``.
    """
    table = calibration_table(y_true, p, bins=bins)
    return float((table["count"] * table["abs_gap"]).sum() / table["count"].sum())


def lift_top_decile(y_true: npt.ArrayLike, p: npt.ArrayLike) -> float:
    """Positive rate among the top 10% by ``p``, divided by the overall positive rate.

    The top decile is the first ``ceil(n / 10)`` rows by a stable sort on ``-p`` (ties keep their
    original order), which is decile 1 of :func:`decile_table`.

    Args:
        y_true: 0/1 outcomes.
        p: Scores (probabilities in ``[0, 1]``).

    Returns:
        The lift; NaN when there are no positives.
    """
    y, q = _binary_pair(y_true, p)
    return _lift_top(y, q)


def _lift_top(y: FloatArray, score: FloatArray) -> float:
    k = -(-len(y) // _N_DECILES)
    top = _desc_order(score)[:k]
    return _safe_div(float(y[top].mean()), float(y.mean()))


def classification_metrics(y_true: npt.ArrayLike, p: npt.ArrayLike) -> dict[str, float]:
    """Discrimination and calibration metrics of a purchase probability.

    Args:
        y_true: 0/1 outcomes (booleans accepted).
        p: Predicted probabilities in ``[0, 1]``.

    Returns:
        ``auc`` (ROC AUC), ``pr_auc`` (average precision), ``brier``, ``log_loss`` (``p`` clipped
        to ``[1e-15, 1 - 1e-15]``), ``ece`` (see :func:`expected_calibration_error`),
        ``lift_top_decile`` (see :func:`lift_top_decile`), ``base_rate`` and ``n``. With a
        single class in ``y_true``, ``auc`` and ``pr_auc`` are NaN (and ``lift_top_decile`` too
        when there are no positives).

    Raises:
        ValueError: On mismatched lengths, NaN or infinite values, labels other than 0/1 or
            probabilities outside ``[0, 1]``; the message names the argument.
    """
    y, q = _binary_pair(y_true, p)
    two_classes = 0.0 < y.mean() < 1.0
    clipped = np.clip(q, _EPS, 1.0 - _EPS)
    return {
        "auc": float(roc_auc_score(y, q)) if two_classes else math.nan,
        "pr_auc": float(average_precision_score(y, q)) if two_classes else math.nan,
        "brier": float(brier_score_loss(y, q, labels=[0, 1])),
        "log_loss": float(log_loss(y, clipped, labels=[0, 1])),
        "ece": expected_calibration_error(y, q),
        "lift_top_decile": _lift_top(y, q),
        "base_rate": float(y.mean()),
        "n": float(len(y)),
    }


# --------------------------------------------------------------------------------------------
# Regression (spend)
# --------------------------------------------------------------------------------------------


def _gini(actual: FloatArray, pred: FloatArray) -> float:
    """Unnormalized Gini of ``actual`` ordered by descending ``pred``, ties averaged."""
    n = len(actual)
    total = float(actual.sum())
    if total == 0.0:
        return math.nan
    order = _desc_order(pred)
    a = actual[order]
    s = pred[order]
    # Within a run of tied predictions every row gets the run's mean actual: the expectation of
    # the Kaggle Gini over all orderings of the tie (the cumulative sum is linear in the order).
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    sizes = np.diff(np.r_[starts, n])
    means = np.add.reduceat(a, starts) / sizes
    a = np.repeat(means, sizes)
    return float(np.cumsum(a).sum() / total - (n + 1) / 2.0) / n


def normalized_gini(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
    """Normalized Gini: Gini of the actuals ordered by prediction over that of the oracle order.

    The usual (Kaggle) definition: sort rows by descending prediction, take
    ``G = (sum(cumsum(actual)) / sum(actual) - (n + 1) / 2) / n`` and divide by the same quantity
    with rows sorted by the actuals themselves. A perfect ranking gives 1, the reversed ranking
    -1, a random one about 0. **Ties in the predictions** are averaged: every row of a run of
    tied predictions counts the run's mean actual, which is the expected Kaggle Gini over all
    orderings of the tie. So the result never depends on row order, a constant prediction scores
    exactly 0, and without ties it equals the Kaggle value.

    Args:
        y_true: Actual values (non-negative spend; zero-inflated is fine).
        y_pred: Predictions (any real scores; only their order matters).

    Returns:
        The normalized Gini; NaN when the actuals sum to zero or are all equal.
    """
    a = _as_1d(y_true, "y_true")
    s = _as_1d(y_pred, "y_pred")
    _same_length(y_true=a, y_pred=s)
    return _normalized_gini(a, s)


def _normalized_gini(a: FloatArray, s: FloatArray) -> float:
    oracle = _gini(a, a)
    if math.isnan(oracle) or oracle == 0.0:
        return math.nan
    return _gini(a, s) / oracle


def _decile_mape(a: FloatArray, s: FloatArray) -> float:
    errors = []
    for idx in _chunks(_desc_order(s), _N_DECILES):
        actual = float(a[idx].sum())
        if actual != 0.0:
            errors.append(abs(float(s[idx].sum()) - actual) / abs(actual))
    return float(np.mean(errors)) if errors else math.nan


def _spearman(a: FloatArray, s: FloatArray) -> float:
    ra = pd.Series(a).rank(method="average").to_numpy()
    rs = pd.Series(s).rank(method="average").to_numpy()
    if ra.std() == 0.0 or rs.std() == 0.0:
        return math.nan
    return float(np.corrcoef(ra, rs)[0, 1])


def regression_metrics(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> dict[str, float]:
    """Ranking and calibration-in-aggregate metrics of a spend prediction.

    Args:
        y_true: Actual spend (non-negative, zero-inflated).
        y_pred: Predicted spend.

    Returns:
        ``gini`` (:func:`normalized_gini`), ``decile_mape``, ``mae``, ``rmse``, ``spearman``
        (rank correlation, average ranks for ties; NaN if either side is constant),
        ``mean_pred``, ``mean_actual`` and ``n``. ``decile_mape`` is the mean over the prediction
        deciles (stable sort on ``-y_pred``, as in :func:`decile_table`) of
        ``|sum(pred) - sum(actual)| / sum(actual)``; deciles whose actual sum is zero are skipped
        (the ratio is undefined there), and it is NaN when all are. (The denominator is taken in
        absolute value, so a decile of net refunds cannot give a negative error.)

    Raises:
        ValueError: On mismatched lengths or NaN/infinite values, naming the argument.
    """
    a = _as_1d(y_true, "y_true")
    s = _as_1d(y_pred, "y_pred")
    _same_length(y_true=a, y_pred=s)
    err = s - a
    return {
        "gini": _normalized_gini(a, s),
        "decile_mape": _decile_mape(a, s),
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "spearman": _spearman(a, s),
        "mean_pred": float(s.mean()),
        "mean_actual": float(a.mean()),
        "n": float(len(a)),
    }


def mae_days(
    actual_days: npt.ArrayLike, predicted_days: npt.ArrayLike, mask: npt.ArrayLike
) -> float:
    """Mean absolute error of days to next order, over the customers who did buy.

    Args:
        actual_days: Observed days to the next order (may be NaN where ``mask`` is false, e.g.
            for censored customers).
        predicted_days: Predicted days (may be NaN where ``mask`` is false).
        mask: Boolean, true for the customers who bought in the window.

    Returns:
        ``mean(|predicted - actual|)`` over ``mask``; NaN when ``mask`` selects nobody.

    Raises:
        ValueError: On mismatched lengths, a non-boolean mask, or NaN/infinite values inside the
            mask.
    """
    m = np.asarray(mask)
    if m.ndim != 1:
        raise ValueError(f"mask must be 1-D, got shape {m.shape}")
    if m.dtype != np.bool_:
        if m.size and not np.isin(m, (0, 1)).all():
            raise ValueError("mask must be boolean (or 0/1)")
        m = m.astype(bool)
    a = _as_1d(actual_days, "actual_days", allow_nan=True)
    s = _as_1d(predicted_days, "predicted_days", allow_nan=True)
    _same_length(actual_days=a, predicted_days=s, mask=m)
    if not m.any():
        return math.nan
    for name, arr in (("actual_days", a), ("predicted_days", s)):
        n_nan = int(np.isnan(arr[m]).sum())
        if n_nan:
            raise ValueError(f"{name} contains {n_nan} NaN values where mask is true")
    return float(np.abs(s[m] - a[m]).mean())


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


def decile_table(y_true: npt.ArrayLike, score: npt.ArrayLike, *, prob: bool = True) -> pd.DataFrame:
    """Decile table of a score: what each tenth of the population, best first, holds.

    Deciles are contiguous runs of rows by a stable sort on ``-score`` (decile 1 = highest
    scores; ties keep their original order), sizes differing by at most one; with fewer than 10
    rows there are ``n`` deciles of one row.

    Args:
        y_true: Actual outcomes: 0/1 labels when ``prob``, otherwise values (spend).
        score: The ranking score: a probability when ``prob``, otherwise a predicted value.
        prob: Whether this is a probability table (validates 0/1 labels and ``[0, 1]`` scores).

    Returns:
        One row per decile with columns ``decile``, ``count``, ``score_min``, ``score_max``,
        ``mean_pred`` (mean score), ``mean_actual`` (positive rate or mean value),
        ``sum_actual``, ``cum_count_share`` (share of the population down to this decile),
        ``gain`` (cumulative share of positives or value captured; ends at 1.0, NaN if the
        total is zero), ``lift`` (``mean_actual`` over the overall mean) and ``cum_lift``
        (``gain / cum_count_share``).
    """
    if prob:
        y, s = _binary_pair(y_true, score)
    else:
        y = _as_1d(y_true, "y_true")
        s = _as_1d(score, "score")
        _same_length(y_true=y, score=s)
    n = len(y)
    total = float(y.sum())
    overall = float(y.mean())
    rows = []
    for i, idx in enumerate(_chunks(_desc_order(s), _N_DECILES), start=1):
        rows.append(
            {
                "decile": i,
                "count": len(idx),
                "score_min": float(s[idx].min()),
                "score_max": float(s[idx].max()),
                "mean_pred": float(s[idx].mean()),
                "mean_actual": float(y[idx].mean()),
                "sum_actual": float(y[idx].sum()),
            }
        )
    table = pd.DataFrame(rows)
    table["cum_count_share"] = table["count"].cumsum() / n
    table["gain"] = table["sum_actual"].cumsum() / total if total != 0.0 else math.nan
    table["lift"] = table["mean_actual"] / overall if overall != 0.0 else math.nan
    table["cum_lift"] = table["gain"] / table["cum_count_share"]
    return table


def comparison_table(
    metrics_by_model: Mapping[str, Mapping[str, float]], keys: Sequence[str] | None = None
) -> pd.DataFrame:
    """Models as rows, chosen metrics as columns.

    Args:
        metrics_by_model: ``{model name: {metric: value}}``, e.g. the outputs of
            :func:`classification_metrics` for a LightGBM model and its BTYD baselines.
        keys: Metric columns, in order; default: every key seen, in first-seen order. A metric a
            model lacks is NaN.

    Returns:
        A float frame indexed by model name (index name ``model``), in the mapping's order.
    """
    if keys is None:
        seen: dict[str, None] = {}
        for metrics in metrics_by_model.values():
            seen.update(dict.fromkeys(metrics))
        keys = list(seen)
    data = {
        model: [float(metrics.get(k, math.nan)) for k in keys]
        for model, metrics in metrics_by_model.items()
    }
    table = pd.DataFrame.from_dict(data, orient="index", columns=list(keys), dtype=float)
    table.index.name = "model"
    return table


def delta_vs_baseline(table: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Each model's metrics minus the baseline's (the baseline row becomes zeros).

    The sign is raw (``model - baseline``); for the metrics in :data:`LOWER_IS_BETTER` a
    negative delta is an improvement.

    Args:
        table: A :func:`comparison_table`.
        baseline: The row (model name) to subtract.

    Returns:
        A frame shaped like ``table`` with columns named ``"<metric> delta vs <baseline>"``.

    Raises:
        KeyError: If ``baseline`` is not a row of ``table``.
    """
    if baseline not in table.index:
        raise KeyError(f"baseline {baseline!r} not in table (models: {list(table.index)})")
    delta = table - table.loc[baseline]
    return delta.rename(columns=lambda c: f"{c} delta vs {baseline}")


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def _figure(width: float = 6.0, height: float = 5.0) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def roc_figure(y: npt.ArrayLike, scores: Mapping[str, npt.ArrayLike]) -> Figure:
    """ROC curves of several models or baselines on one chart.

    Args:
        y: 0/1 outcomes.
        scores: ``{name: probabilities}``; each curve is labelled with its AUC.

    Returns:
        A figure with one axes: a line per model plus the chance diagonal. With a single class
        in ``y`` the curves are undefined and only the diagonal is drawn.
    """
    yy = _binary(y, "y")
    fig = _figure()
    ax = fig.add_subplot()
    two_classes = 0.0 < yy.mean() < 1.0
    for name, p in scores.items():
        q = _probability(p, f"scores[{name!r}]")
        _same_length(y=yy, **{f"scores[{name!r}]": q})
        if two_classes:
            fpr, tpr, _ = roc_curve(yy, q)
            ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(yy, q):.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    ax.set(
        xlabel="False positive rate",
        ylabel="True positive rate",
        xlim=(0, 1),
        ylim=(0, 1),
        title="ROC" if two_classes else "ROC (undefined: one class)",
    )
    ax.legend(loc="lower right")
    return fig


def calibration_figure(
    y: npt.ArrayLike, probabilities: Mapping[str, npt.ArrayLike], bins: int = 10
) -> Figure:
    """Reliability diagram of several models: observed rate against mean predicted, per bin.

    Args:
        y: 0/1 outcomes.
        probabilities: ``{name: probabilities}``; each line is labelled with its ECE.
        bins: Equal-frequency bins per model (see :func:`calibration_table`).

    Returns:
        A figure with one axes: a line (with markers) per model plus the identity diagonal.
    """
    yy = _binary(y, "y")
    fig = _figure()
    ax = fig.add_subplot()
    hi = 0.0
    for name, p in probabilities.items():
        q = _probability(p, f"probabilities[{name!r}]")
        _same_length(y=yy, **{f"probabilities[{name!r}]": q})
        table = calibration_table(yy, q, bins=bins)
        ece = float((table["count"] * table["abs_gap"]).sum() / table["count"].sum())
        ax.plot(
            table["mean_pred"], table["observed_rate"], marker="o", label=f"{name} (ECE {ece:.3f})"
        )
        hi = max(hi, float(table["mean_pred"].max()), float(table["observed_rate"].max()))
    hi = min(1.0, hi * 1.05) if hi > 0 else 1.0
    ax.plot([0, hi], [0, hi], linestyle="--", color="grey", label="perfectly calibrated")
    ax.set(
        xlabel="Mean predicted probability",
        ylabel="Observed rate",
        xlim=(0, hi),
        ylim=(0, hi),
        title="Calibration (equal-frequency bins)",
    )
    ax.legend(loc="upper left")
    return fig


def _gain_curve(y: FloatArray, score: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Cumulative share captured at each percentile of the population (stable -score order)."""
    n = len(y)
    captured = np.r_[0.0, np.cumsum(y[_desc_order(score)])]
    total = captured[-1]
    x = np.linspace(0.0, 1.0, _GAIN_GRID)
    gain = np.interp(x * n, np.arange(n + 1), captured)
    return x, gain / total if total != 0.0 else np.full_like(x, np.nan)


def gain_figure(y: npt.ArrayLike, scores: Mapping[str, npt.ArrayLike]) -> Figure:
    """Cumulative gain and lift charts of several scores.

    Works for binary outcomes (share of positives captured) and for values such as spend (share
    of value captured).

    Args:
        y: Actual outcomes (0/1 or non-negative values).
        scores: ``{name: score}``; higher scores are targeted first.

    Returns:
        A figure with two axes. Left, cumulative gain: a line per model plus the random-targeting
        diagonal. Right, cumulative lift by decile: a line per model plus the ``lift = 1``
        reference.
    """
    yy = _as_1d(y, "y")
    fig = _figure(11.0, 5.0)
    ax_gain, ax_lift = fig.subplots(1, 2)
    total = float(yy.sum())
    for name, sc in scores.items():
        s = _as_1d(sc, f"scores[{name!r}]")
        _same_length(y=yy, **{f"scores[{name!r}]": s})
        x, gain = _gain_curve(yy, s)
        ax_gain.plot(x, gain, label=name)
        table = decile_table(yy, s, prob=False)
        ax_lift.plot(table["decile"], table["cum_lift"], marker="o", label=name)
    ax_gain.plot([0, 1], [0, 1], linestyle="--", color="grey", label="random")
    ax_gain.set(
        xlabel="Share of customers targeted (highest score first)",
        ylabel="Share of outcome captured",
        xlim=(0, 1),
        ylim=(0, 1.02),
        title="Cumulative gain" if total != 0.0 else "Cumulative gain (undefined: zero total)",
    )
    ax_gain.legend(loc="lower right")
    ax_lift.axhline(1.0, linestyle="--", color="grey", label="random")
    ax_lift.set(xlabel="Decile (1 = highest score)", ylabel="Cumulative lift", title="Lift")
    ax_lift.legend(loc="upper right")
    return fig


def decile_figure(table: pd.DataFrame) -> Figure:
    """Mean predicted against mean actual per decile, as grouped bars.

    Args:
        table: A :func:`decile_table`.

    Returns:
        A figure with one axes holding two bar containers (predicted, actual), one bar per
        decile each.
    """
    missing = {"decile", "mean_pred", "mean_actual"} - set(table.columns)
    if missing:
        raise ValueError(f"table is missing columns {sorted(missing)}")
    fig = _figure(7.0, 4.5)
    ax = fig.add_subplot()
    x = np.arange(len(table))
    width = 0.4
    ax.bar(x - width / 2, table["mean_pred"], width, label="mean predicted")
    ax.bar(x + width / 2, table["mean_actual"], width, label="mean actual")
    ax.set_xticks(x, [str(d) for d in table["decile"]])
    ax.set(
        xlabel="Decile (1 = highest score)", ylabel="Mean", title="Predicted vs actual by decile"
    )
    ax.legend(loc="upper right")
    return fig


def importance_figure(
    names: Sequence[str], gains: npt.ArrayLike, top: int = 20, *, normalize: bool = True
) -> Figure:
    """Horizontal bar chart of the most important features (e.g. LightGBM gain importance).

    Args:
        names: Feature names.
        gains: Importance per feature, same order as ``names``.
        top: How many features to show (the largest first, at the top).
        normalize: Show shares of the total importance instead of raw values.

    Returns:
        A figure with one axes and ``min(top, len(names))`` bars.
    """
    g = _as_1d(gains, "gains")
    if len(names) != len(g):
        raise ValueError(f"length mismatch: names={len(names)}, gains={len(g)}")
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    total = float(np.abs(g).sum())
    values = g / total if normalize and total > 0 else g
    order = np.argsort(-values, kind="stable")[:top]
    fig = _figure(7.0, max(2.5, 0.3 * len(order) + 1.0))
    ax = fig.add_subplot()
    # Bottom to top: the least important of the shown features first, the most important last.
    shown = order[::-1]
    y_pos = np.arange(len(shown))
    ax.barh(y_pos, values[shown])
    ax.set_yticks(y_pos, [str(names[i]) for i in shown])
    ax.set(
        xlabel="Share of total importance" if normalize else "Importance",
        title=f"Top {len(order)} features",
    )
    return fig


def _value_rank(col: pd.Series) -> FloatArray:
    """Percentile rank in ``[0, 1]`` of a feature's values (categories by code); NaN stays NaN."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        codes = col.cat.codes.astype("float64")
        col = codes.where(codes >= 0)
    elif col.dtype == bool:
        col = col.astype("float64")
    elif not pd.api.types.is_numeric_dtype(col):
        col = col.astype("category").cat.codes.astype("float64")
        col = col.where(col >= 0)
    ranks = pd.to_numeric(col, errors="coerce").rank(method="average", pct=True)
    lo, hi = ranks.min(), ranks.max()
    if pd.isna(lo) or hi == lo:
        flat = np.full(len(ranks), 0.5, dtype=np.float64)
        flat[ranks.isna().to_numpy()] = np.nan
        return flat
    return np.asarray((ranks - lo) / (hi - lo), dtype=np.float64)


def _beeswarm_offsets(values: FloatArray, rng: np.random.Generator) -> FloatArray:
    """Vertical jitter proportional to the local density of ``values`` (at most 0.4)."""
    if len(values) == 0:
        return np.zeros(0)
    lo, hi = float(values.min()), float(values.max())
    if hi == lo:
        density = np.ones_like(values)
    else:
        counts, edges = np.histogram(values, bins=50, range=(lo, hi))
        which = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(counts) - 1)
        density = counts[which] / counts.max()
    return 0.4 * density * rng.uniform(-1.0, 1.0, size=len(values))


def shap_summary_figure(
    contrib: np.ndarray,
    feature_values: pd.DataFrame,
    top: int = 20,
    *,
    seed: int = 0,
) -> Figure:
    """Beeswarm-like SHAP summary from LightGBM ``pred_contrib`` output.

    Features are ranked by mean ``|SHAP|``; each of the ``top`` features gets a row of points
    (one per customer, x = SHAP value) jittered vertically in proportion to the local density,
    colored by the percentile rank of the feature's value (blue low, red high; categories by
    code; missing values grey). At most 2,000 rows per feature are drawn, a subsample fixed by
    ``seed``; the jitter is seeded too, so the figure is deterministic.

    Args:
        contrib: ``booster.predict(X, pred_contrib=True)``: shape ``(n, n_features + 1)`` (the
            last column, the expected value, is dropped) or ``(n, n_features)``.
        feature_values: The features the contributions were computed on, ``n`` rows, one column
            per feature in the same order.
        top: How many features to show (the most important at the top).
        seed: Seed of the subsample and of the jitter.

    Returns:
        A figure with the summary axes (one scatter collection per feature shown, plus one for
        that feature's missing values when it has any) and a colorbar.

    Raises:
        ValueError: If the shapes of ``contrib`` and ``feature_values`` disagree.
    """
    c = np.asarray(contrib, dtype=np.float64)
    n_rows, n_feat = feature_values.shape
    if c.ndim != 2 or c.shape[0] != n_rows or c.shape[1] not in (n_feat, n_feat + 1):
        raise ValueError(
            f"contrib must have shape ({n_rows}, {n_feat}) or ({n_rows}, {n_feat + 1}) to match "
            f"feature_values, got {c.shape}"
        )
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    c = c[:, :n_feat]
    if np.isnan(c).any():
        raise ValueError(f"contrib contains {int(np.isnan(c).sum())} NaN values")
    importance = np.abs(c).mean(axis=0)
    order = np.argsort(-importance, kind="stable")[:top]
    rng = np.random.default_rng(seed)
    rows = (
        np.sort(rng.choice(n_rows, size=_SHAP_MAX_POINTS, replace=False))
        if n_rows > _SHAP_MAX_POINTS
        else np.arange(n_rows)
    )
    cmap = colormaps["coolwarm"]
    norm = Normalize(0.0, 1.0)
    fig = _figure(8.0, max(3.0, 0.4 * len(order) + 1.5))
    ax = fig.add_subplot()
    for pos, j in zip(range(len(order) - 1, -1, -1), order, strict=True):
        shap = c[rows, j]
        ranks = _value_rank(feature_values.iloc[rows, j].reset_index(drop=True))
        y_pos = pos + _beeswarm_offsets(shap, rng)
        known = ~np.isnan(ranks)
        ax.scatter(
            shap[known], y_pos[known], c=ranks[known], cmap=cmap, norm=norm, s=6, linewidths=0
        )
        if not known.all():
            ax.scatter(shap[~known], y_pos[~known], color="lightgrey", s=6, linewidths=0)
    ax.axvline(0.0, color="grey", linewidth=0.8)
    ax.set_yticks(np.arange(len(order)), [str(feature_values.columns[j]) for j in order[::-1]])
    ax.set(xlabel="SHAP value (contribution to the raw score)", title="SHAP summary")
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="Feature value (rank)")
    return fig
