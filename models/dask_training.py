"""The three models trained on a Dask cluster through LightGBM's Dask interface.

The same rows, labels, parameters and calibration as ``models.training.train_models``; only
the boosting runs distributed (``lightgbm.dask``, data-parallel over the cluster's workers),
so the models are close to, not bit for bit, the single-process ones. LightGBM's Dask
interface has no early stopping (each worker sees part of the validation rows), so every
model boosts ``max_rounds`` rounds and is cut, on the driver, at the round with the lowest
validation loss: what early stopping would keep, without stopping on a plateau. The result
is a native ``lightgbm.Booster`` per model, registered and loaded like any other.
"""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from lightgbm.dask import DaskLGBMClassifier, DaskLGBMRegressor

from models.estimators import (
    Calibrator,
    Classifier,
    Regressor,
    TrainConfig,
    canonical,
    design_frames,
)
from models.training import (
    Models,
    assemble_models,
    labelled_targets,
    model_inputs,
    split_by_cutoff,
)

__all__ = ["best_rounds", "train_models_dask"]


def train_models_dask(
    frame: pd.DataFrame, config: TrainConfig, client: Any, partitions: int
) -> Models:
    """Fit churn, 30-day purchase, next-order time and the value hurdle on a Dask cluster.

    Args:
        frame: Training rows (features, labels and ``cutoff``) of at least two cutoffs.
        config: LightGBM settings (``num_threads`` per worker).
        client: A ``distributed.Client`` of the cluster.
        partitions: Dask partitions of the fit rows (at least one per worker).
    """
    import dask.dataframe as dd

    fit, valid = split_by_cutoff(frame)
    x_fit, x_valid = design_frames(model_inputs(fit), model_inputs(valid))
    names = list(x_fit.columns)
    fitted: dict[str, Classifier | Regressor] = {}
    for name, (objective, rows, y_fit, y_valid) in labelled_targets(fit, valid).items():
        chosen = x_fit[rows[0]].assign(_y=y_fit).reset_index(drop=True)
        data = dd.from_pandas(chosen, npartitions=max(1, min(partitions, len(chosen))))
        params = config.params(objective) | config.dataset_params()
        params.pop("objective")
        model: Any = (DaskLGBMClassifier if objective == "binary" else DaskLGBMRegressor)(
            client=client, objective=objective, n_estimators=config.max_rounds, **params
        )
        with client.as_current():  # LightGBM waits on the parts through the default client
            model.fit(data[names], data["_y"])
        valid_x = x_valid[rows[1]]
        booster = _best(model.booster_, valid_x, y_valid, objective)
        if objective == "binary":
            classifier = Classifier(booster, Calibrator(), names)
            classifier.calibrator = Calibrator.fit(classifier.raw(valid_x), y_valid)
            fitted[name] = classifier
        else:
            fitted[name] = Regressor(booster, names)
    return assemble_models(fitted, frame)


def _best(booster: lgb.Booster, x: pd.DataFrame, y: np.ndarray, objective: str) -> lgb.Booster:
    """``booster`` cut at its round of lowest validation loss, without its thread count."""
    rounds = best_rounds(booster, x, y, objective)
    return canonical(lgb.Booster(model_str=booster.model_to_string(num_iteration=rounds)))


def best_rounds(booster: lgb.Booster, x: pd.DataFrame, y: np.ndarray, objective: str) -> int:
    """The number of rounds with the lowest validation loss (binary log loss, gamma deviance).

    The raw score after ``k`` rounds is the sum of the first ``k`` trees' outputs, so one
    prediction per tree gives the whole curve.
    """
    total = booster.num_trees()
    if total == 0 or len(x) == 0:
        return max(total, 1)
    steps = np.column_stack(
        [
            booster.predict(x, raw_score=True, start_iteration=i, num_iteration=1)
            for i in range(total)
        ]
    )
    # The first tree holds the initial score (boost_from_average), as LightGBM saves it.
    raw = np.cumsum(steps, axis=1)
    y = np.asarray(y, dtype=float)[:, None]
    if objective == "binary":
        p = np.clip(1.0 / (1.0 + np.exp(-raw)), 1e-15, 1 - 1e-15)
        loss = -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(axis=0)
    else:  # gamma, log link: negative log-likelihood up to constants
        loss = (y * np.exp(-raw) + raw).mean(axis=0)
    return int(np.argmin(loss)) + 1
