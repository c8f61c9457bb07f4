"""Train the three models on point-in-time rows of several cutoffs; predict a held-out cutoff.

A training frame has one row per (customer, cutoff): the features Feast returned for that
cutoff, the labels of ``features.make_labels`` at the same cutoff, and a ``cutoff`` column.
Cutoffs split it in time:

- ``fit``: every training cutoff but the latest;
- ``valid``: the latest training cutoff, for early stopping and calibration;
- the held-out evaluation cutoff is a separate frame, never passed to a fit.

Only customers with an order before the cutoff are rows: churn and repeat purchase are
undefined for someone who never bought (those are "acquisition" customers, scored apart).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, cast

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.labels import LABEL_COLUMNS
from models.estimators import (
    Calibrator,
    Classifier,
    Design,
    Regressor,
    TrainConfig,
    feature_matrix,
    fit_classifier,
    fit_regressor,
    row_positions,
)
from models.treeshap import predictions

__all__ = [
    "BUNDLES",
    "assemble_models",
    "LABELS",
    "Models",
    "Predictions",
    "evaluation_customers",
    "labelled_targets",
    "load_part",
    "model_inputs",
    "models_from_parts",
    "monthly_cutoffs",
    "predict",
    "save_parts",
    "split_by_cutoff",
    "train_models",
]

#: Label columns of a training frame (never features): every column ``make_labels`` writes,
#: so a label added there can never leak in as a feature.
LABELS = tuple(c for c in LABEL_COLUMNS if c not in ("customer_id", "cutoff"))


@dataclass
class Models:
    """The fitted models of one training."""

    churn: Classifier
    purchase_30d: Classifier
    next_order_days: Regressor
    value_buy: Classifier
    value_spend: Regressor
    horizon_days: int

    def parts(self) -> list[Classifier | Regressor]:
        """The five boosters' models, bundle by bundle (:data:`BUNDLES` order)."""
        return [getattr(self, name) for names in BUNDLES.values() for name in names]


@dataclass
class Predictions:
    """Every model output for the rows of one frame, aligned with its index."""

    churn_prob: np.ndarray
    p_purchase_30d: np.ndarray
    expected_days_to_next_order: np.ndarray
    p_buy_180d: np.ndarray
    spend_if_buy_180d: np.ndarray

    @property
    def predicted_value_180d(self) -> np.ndarray:
        """Expected net spend in 180 days: P(buy) x E[spend | buy]."""
        return self.p_buy_180d * self.spend_if_buy_180d


def evaluation_customers(ids: pd.Series, share: float, seed: int) -> np.ndarray:
    """A reproducible random share of customers set aside for evaluation (hash of id + seed).

    Earlier cutoffs' outcome windows overlap the held-out cutoff's in calendar time (a 180-day
    window from a cutoff two months earlier covers most of it), so the held-out rows belong to
    customers none of whose rows, at any cutoff, reach a fit, early stopping or calibration.
    """
    keys = pd.util.hash_pandas_object(ids.astype(str), index=False, hash_key=f"{seed:016d}")
    return (keys.to_numpy() % 10_000) < share * 10_000


def split_by_cutoff(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``fit`` (all cutoffs but the latest) and ``valid`` (the latest) parts of ``frame``."""
    cutoffs = sorted(frame["cutoff"].unique())
    if len(cutoffs) < 2:
        raise ValueError(
            f"training needs at least 2 matured cutoffs (one to fit, one to validate); "
            f"got {len(cutoffs)}"
        )
    latest = frame["cutoff"] == cutoffs[-1]
    return frame[~latest], frame[latest]


def model_inputs(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` without its label columns."""
    return frame.drop(columns=[c for c in LABELS if c in frame.columns])


#: A model's objective, its fit and validation rows (boolean masks) and their outcomes.
Target = tuple[str, tuple[np.ndarray, np.ndarray], np.ndarray, np.ndarray]


def labelled_targets(fit: pd.DataFrame, valid: pd.DataFrame) -> dict[str, Target]:
    """What each of the five models learns: objective, rows and outcomes, by model part.

    The time to the next order is learnt from rows whose next order was observed (not
    censored), the spend from rows that spent; the others from every row.
    """
    every = (np.ones(len(fit), dtype=bool), np.ones(len(valid), dtype=bool))

    def binary(column: str, source: pd.DataFrame) -> np.ndarray:
        return source[column].astype(bool).to_numpy(dtype=float)

    seen = (
        ~fit["next_order_censored"].astype(bool).to_numpy(),
        ~valid["next_order_censored"].astype(bool).to_numpy(),
    )
    days_fit = fit["days_to_next_order"].to_numpy(dtype=float)[seen[0]] + 0.5
    days_valid = valid["days_to_next_order"].to_numpy(dtype=float)[seen[1]] + 0.5
    spend_fit = fit["spend_180d"].to_numpy(dtype=float)
    spend_valid = valid["spend_180d"].to_numpy(dtype=float)
    spent = (spend_fit > 0, spend_valid > 0)
    return {
        "churn": ("binary", every, binary("churned", fit), binary("churned", valid)),
        "purchase_30d": (
            "binary",
            every,
            binary("purchased_30d", fit),
            binary("purchased_30d", valid),
        ),
        "next_order_days": ("gamma", seen, days_fit, days_valid),
        "value_buy": ("binary", every, spent[0].astype(float), spent[1].astype(float)),
        "value_spend": ("gamma", spent, spend_fit[spent[0]], spend_valid[spent[1]]),
    }


def train_models(frame: pd.DataFrame, config: TrainConfig) -> Models:
    """Fit churn, 30-day purchase, next-order time and the value hurdle on ``frame``.

    Args:
        frame: Training rows (features, labels and ``cutoff``) of at least two cutoffs.
        config: LightGBM settings.
    """
    fit, valid = split_by_cutoff(frame)
    design = Design.build(model_inputs(fit), model_inputs(valid), config)
    # The five boosters train side by side, one thread each: small trees leave most of a
    # multi-threaded round waiting, so parallel models use the cores better. The trees do not
    # depend on the thread count (deterministic=True, row-wise), so neither do the models.
    single = replace(config, num_threads=1)
    jobs: dict[str, Callable[[], Classifier | Regressor]] = {
        name: partial(
            fit_classifier if objective == "binary" else fit_regressor,
            design,
            rows,
            y_fit,
            y_valid,
            single,
        )
        for name, (objective, rows, y_fit, y_valid) in labelled_targets(fit, valid).items()
    }
    with ThreadPoolExecutor(max(1, config.num_threads)) as pool:
        running = {name: pool.submit(job) for name, job in jobs.items()}
        fitted = {name: future.result() for name, future in running.items()}
    return assemble_models(fitted, frame)


def assemble_models(fitted: dict[str, Classifier | Regressor], frame: pd.DataFrame) -> Models:
    """The :class:`Models` of the five fitted parts, with the horizon of ``frame``'s labels."""
    horizon = int(frame["horizon_days"].iloc[0]) if "horizon_days" in frame else 90
    return Models(
        churn=cast(Classifier, fitted["churn"]),
        purchase_30d=cast(Classifier, fitted["purchase_30d"]),
        next_order_days=cast(Regressor, fitted["next_order_days"]),
        value_buy=cast(Classifier, fitted["value_buy"]),
        value_spend=cast(Regressor, fitted["value_spend"]),
        horizon_days=horizon,
    )


def model_matrix(
    models: Models, frame: pd.DataFrame, rows: np.ndarray | None = None
) -> np.ndarray | None:
    """LightGBM's input matrix of ``frame`` (rows ``rows``), read by all five boosters.

    The parts share their features and categories when trained together (``None`` when they
    do not); the matrix holds the numbers LightGBM computes from the frame itself
    (``models.estimators.feature_matrix``).
    """
    first = models.churn
    shared = all(
        p.features == first.features
        and p.booster.pandas_categorical == first.booster.pandas_categorical
        for p in models.parts()
    )
    if not shared or (len(frame) if rows is None else len(rows)) == 0:
        return None
    return feature_matrix(frame, first.booster, first.features, rows)


def predict(
    models: Models,
    frame: pd.DataFrame,
    matrix: np.ndarray | None = None,
    rows: np.ndarray | None = None,
) -> Predictions:
    """All model outputs for ``frame``, or its ``rows`` (features; labels are ignored).

    The frame becomes LightGBM's input matrix once (:func:`model_matrix`, or ``matrix`` when
    the caller has it already), and every booster reads it, without five conversions.
    """
    rows = None if rows is None else row_positions(rows)
    n = len(frame) if rows is None else len(rows)
    if n == 0:  # LightGBM refuses an empty input
        nothing = np.zeros(0)
        return Predictions(nothing, nothing, nothing, nothing, nothing)
    if matrix is not None and len(matrix) != n:
        raise ValueError(f"matrix has {len(matrix)} rows, the frame {n}")
    shared = matrix if matrix is not None else model_matrix(models, frame, rows)
    if shared is not None:

        def out(part: Classifier | Regressor) -> np.ndarray:
            raw = predictions(part.booster, shared)
            return part.calibrator(raw) if isinstance(part, Classifier) else raw
    else:
        x = model_inputs(frame if rows is None else frame.iloc[rows])

        def out(part: Classifier | Regressor) -> np.ndarray:
            return part.predict(x)

    days = np.clip(out(models.next_order_days) - 0.5, 0.0, float(models.horizon_days))
    return Predictions(
        churn_prob=out(models.churn),
        p_purchase_30d=out(models.purchase_30d),
        expected_days_to_next_order=days,
        p_buy_180d=out(models.value_buy),
        spend_if_buy_180d=out(models.value_spend),
    )


#: Registered model -> its parts, the first being the registered booster.
BUNDLES: dict[str, tuple[str, ...]] = {
    "churn": ("churn",),
    "next_purchase": ("purchase_30d", "next_order_days"),
    "value": ("value_buy", "value_spend"),
}


def save_parts(models: Models, kind: str, directory: Path) -> list[Path]:
    """Write the companion parts of bundle ``kind`` as plain files (no pickle).

    The first part is the registered booster itself; every part's calibration map goes to
    ``<part>.calibration.json`` and every other part's booster to ``<part>.lgb`` (LightGBM's
    native text format).
    """
    paths = []
    for i, part in enumerate(BUNDLES[kind]):
        model = getattr(models, part)
        if i > 0:
            path = directory / f"{part}.lgb"
            model.booster.save_model(str(path))
            paths.append(path)
        if isinstance(model, Classifier):
            path = directory / f"{part}.calibration.json"
            path.write_text(json.dumps(model.calibrator.to_dict()))
            paths.append(path)
    return paths


def load_part(kind: str, booster: lgb.Booster, files: Path) -> dict[str, Classifier | Regressor]:
    """The parts of bundle ``kind`` from its registered booster and its companion files."""
    parts: dict[str, Classifier | Regressor] = {}
    for i, part in enumerate(BUNDLES[kind]):
        model = booster if i == 0 else lgb.Booster(model_file=str(files / f"{part}.lgb"))
        names = list(model.feature_name())
        calibration = files / f"{part}.calibration.json"
        if calibration.exists():
            parts[part] = Classifier(
                model, Calibrator(**json.loads(calibration.read_text())), names
            )
        else:
            parts[part] = Regressor(model, names)
    return parts


def models_from_parts(parts: dict[str, Classifier | Regressor], horizon_days: int) -> Models:
    """The :class:`Models` of loaded bundle parts (:func:`load_part` of every bundle).

    Raises:
        ValueError: a part is missing, or a classifier stands where a regression should (or
            the other way round).
    """
    expected = {name: f.type for name, f in Models.__dataclass_fields__.items()}
    chosen: dict[str, Any] = {}
    for name in (p for parts_of in BUNDLES.values() for p in parts_of):
        kind = Classifier if expected[name] in ("Classifier", Classifier) else Regressor
        part = parts.get(name)
        if not isinstance(part, kind):
            raise ValueError(f"model part {name} is missing or not a {kind.__name__}")
        chosen[name] = part
    return Models(**chosen, horizon_days=horizon_days)


def monthly_cutoffs(
    data_start: datetime.date,
    as_of: datetime.date,
    *,
    months: int,
    maturity_days: int,
    min_history_days: int,
) -> list[datetime.date]:
    """First-of-month cutoffs whose labels have matured by ``as_of``, oldest first.

    A cutoff ``c`` qualifies when ``c + maturity_days <= as_of`` (every label window, the
    180-day value window included, is observed), ``c >= data_start + min_history_days`` (some
    history to compute features from), and it lies in the ``months`` months before the latest
    matured one.
    """
    latest = as_of - datetime.timedelta(days=maturity_days)
    month = datetime.date(latest.year, latest.month, 1)
    earliest = data_start + datetime.timedelta(days=min_history_days)
    cutoffs = []
    for _ in range(months):
        if month < earliest:
            break
        cutoffs.append(month)
        month = (month - datetime.timedelta(days=1)).replace(day=1)
    return cutoffs[::-1]
