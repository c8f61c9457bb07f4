"""The held-out comparison a reviewer reads: each model against its baselines, same rows.

For every model kind (``churn``, ``next_purchase``, ``value``) :func:`backtest` returns the
metrics under their contract names (the model's plain, each baseline's with a suffix:
``auc_bgnbd``, ``auc_rfm``, ``gini_bgnbd`` ...), the comparison table, the decile table and
the charts (ROC, calibration, gain, deciles, importance, SHAP summary).

Baselines, on the same held-out rows:

- ``bgnbd``: BG/NBD (+ Gamma-Gamma for value) fitted on the purchase history before the
  held-out cutoff (``models.btyd.Baseline``).
- ``rfm``: the recency rule operators use, the customer's recency rank (a longer time since
  the last order = more likely to churn, less likely to buy); for value, last year's spend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from models import evaluation as ev
from models.estimators import Classifier, Regressor, feature_frame
from models.training import Models, Predictions

__all__ = [
    "DECIDING_METRIC",
    "Backtest",
    "backtest",
    "deciding_score",
    "outcome",
    "rfm_rule",
]

#: The metric that decides a promotion, per model kind (higher is better for all three).
DECIDING_METRIC = {"churn": "auc", "next_purchase": "auc", "value": "gini"}
_SHAP_ROWS = 2000


@dataclass
class Backtest:
    """One model kind's held-out evaluation."""

    kind: str
    metrics: dict[str, float]
    comparison: pd.DataFrame
    deciles: pd.DataFrame
    figures: dict[str, Any] = field(default_factory=dict)


def rfm_rule(heldout: pd.DataFrame) -> pd.DataFrame:
    """The operators' rule scores: recency rank for churn and purchase, last year's spend for value.

    The recency rank is a ranking, not a probability: its Brier score, log loss and ECE are
    reported for completeness only; compare it on AUC, PR-AUC and lift.
    """
    recency = heldout["days_since_last_order"].rank(pct=True, method="average").to_numpy()
    return pd.DataFrame(
        {
            "churn_prob": recency,
            "p_purchase_30d": 1 - recency,
            # Last year's spend at the pace of 180 days.
            "predicted_value_180d": heldout["spend_365d"].to_numpy(dtype=float) * 180 / 365,
        },
        index=heldout.index,
    )


def outcome(kind: str, heldout: pd.DataFrame) -> np.ndarray:
    """The held-out outcome a model kind is judged on (0/1, or spend for value)."""
    if kind == "value":
        return heldout["spend_180d"].to_numpy(dtype=float)
    column = "churned" if kind == "churn" else "purchased_30d"
    return heldout[column].astype(bool).to_numpy(dtype=float)


def deciding_score(
    kind: str, parts: dict[str, Classifier | Regressor], rows: pd.DataFrame
) -> float:
    """The deciding metric (:data:`DECIDING_METRIC`) of a loaded bundle on ``rows``.

    Used to score the current champion on the new held-out rows, so both versions are judged on
    the same backtest.
    """
    if kind == "value":
        predicted = parts["value_buy"].predict(rows) * parts["value_spend"].predict(rows)
        return ev.normalized_gini(outcome(kind, rows), predicted)
    first = parts["churn" if kind == "churn" else "purchase_30d"]
    return ev.classification_metrics(outcome(kind, rows), first.predict(rows))["auc"]


def _suffixed(metrics: dict[str, float], suffix: str) -> dict[str, float]:
    return {f"{k}_{suffix}": v for k, v in metrics.items() if k not in ("n", "base_rate")}


def _explain(model: Classifier | Regressor, heldout: pd.DataFrame) -> dict[str, Any]:
    x = feature_frame(heldout, model.features)
    sample = x.iloc[:: max(1, len(x) // _SHAP_ROWS)]
    contrib = np.asarray(model.booster.predict(sample, pred_contrib=True))
    gains = model.booster.feature_importance(importance_type="gain")
    numeric = sample.apply(lambda c: c.cat.codes if isinstance(c.dtype, pd.CategoricalDtype) else c)
    return {
        "feature_importance.png": ev.importance_figure(model.features, gains),
        "shap_summary.png": ev.shap_summary_figure(contrib, numeric),
    }


def backtest(
    kind: str,
    models: Models,
    heldout: pd.DataFrame,
    predictions: Predictions,
    bgnbd: pd.DataFrame,
    *,
    figures: bool = True,
) -> Backtest:
    """Evaluate one model kind and its baselines on the held-out rows.

    Args:
        kind: ``churn``, ``next_purchase`` or ``value``.
        models: The fitted models (for importance and SHAP).
        heldout: The held-out rows: features and labels.
        predictions: The models' predictions for ``heldout``.
        bgnbd: ``Baseline.predict`` output aligned with ``heldout``.
        figures: Draw the charts (off for speed in benchmarks).
    """
    rfm = rfm_rule(heldout)
    actual = outcome(kind, heldout)
    if kind == "value":
        scores = {
            "model": predictions.predicted_value_180d,
            "bgnbd": bgnbd["predicted_value_180d"].to_numpy(dtype=float),
            "rfm": rfm["predicted_value_180d"].to_numpy(dtype=float),
        }
        by_model = {name: ev.regression_metrics(actual, s) for name, s in scores.items()}
        deciles = ev.decile_table(actual, scores["model"], prob=False)
        explained: Classifier | Regressor = models.value_buy  # the registered booster
        charts = {"gain_chart.png": lambda: ev.gain_figure(actual, scores)}
    else:
        target = "churn_prob" if kind == "churn" else "p_purchase_30d"
        scores = {
            "model": getattr(predictions, target),
            "bgnbd": bgnbd[target].to_numpy(dtype=float),
            "rfm": rfm[target].to_numpy(dtype=float),
        }
        by_model = {name: ev.classification_metrics(actual, s) for name, s in scores.items()}
        deciles = ev.decile_table(actual, scores["model"])
        explained = models.churn if kind == "churn" else models.purchase_30d
        charts = {
            "roc.png": lambda: ev.roc_figure(actual, scores),
            "calibration.png": lambda: ev.calibration_figure(actual, scores),
            "gain_chart.png": lambda: ev.gain_figure(actual, scores),
        }
    metrics = {k: v for k, v in by_model["model"].items()}
    if kind == "next_purchase":
        bought = ~heldout["next_order_censored"].astype(bool).to_numpy()
        days = heldout["days_to_next_order"].to_numpy(dtype=float)
        metrics["mae_days"] = ev.mae_days(days, predictions.expected_days_to_next_order, bought)
        by_model["model"]["mae_days"] = metrics["mae_days"]
    for name in ("bgnbd", "rfm"):
        metrics |= _suffixed(by_model[name], name)
    result = Backtest(kind, metrics, ev.comparison_table(by_model), deciles)
    if figures:
        result.figures = {name: draw() for name, draw in charts.items()}
        result.figures["deciles.png"] = ev.decile_figure(deciles)
        result.figures |= _explain(explained, heldout)
    return result
