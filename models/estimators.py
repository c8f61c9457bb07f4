"""The LightGBM models: churn, next purchase and 180-day value, deterministic and calibrated.

Each model trains on the rows of earlier cutoffs and is early-stopped and calibrated on the
latest training cutoff (a time-based validation fold): a model never sees the rows it is
judged on, and the held-out evaluation cutoff is never passed here at all.

- **Churn**: P(no order in the next H days), binary LightGBM, then an isotonic map fitted on
  the validation fold.
- **Next purchase**: P(order within 30 days), the same way; and the expected days to the next
  order for customers who order within the horizon, E[T | T < H], a regression fitted only on
  rows whose next order was observed. Censoring is handled by the split: censored rows
  (no order in the horizon) inform P(T < H), the churn model's complement, and never the
  conditional time, so no censored time is treated as an event time.
- **Value**: a hurdle, P(net spend in 180 days > 0) x E[spend | spend > 0], the second part a
  Gamma regression (log link) on the positive rows, so zeros and the long right tail are
  modelled apart.

Determinism (R11): ``deterministic=True``, ``force_row_wise=True``, fixed seeds and a fixed
thread count; same data, same model text.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sklearn.isotonic import IsotonicRegression

from models.treeshap import lightgbm_matrix, predictions

__all__ = [
    "KEY_COLUMNS",
    "canonical",
    "design_frames",
    "Calibrator",
    "Classifier",
    "Design",
    "Regressor",
    "TrainConfig",
    "feature_frame",
    "fit_classifier",
    "fit_regressor",
]

#: Columns of a training frame that are keys or bookkeeping, never features.
KEY_COLUMNS = ("customer_id", "as_of", "created_at", "event_timestamp", "cutoff")


@dataclass(frozen=True)
class TrainConfig:
    """LightGBM settings shared by every model."""

    seed: int = 42
    num_threads: int = 2
    learning_rate: float = 0.1
    num_leaves: int = 7
    min_data_in_leaf: int = 50
    feature_fraction: float = 0.8
    lambda_l2: float = 1.0
    max_rounds: int = 300
    early_stopping_rounds: int = 30
    max_bin: int = 63
    bagging_fraction: float = 0.7

    def dataset_params(self) -> dict[str, Any]:
        """Binning settings, the same for every model sharing a :class:`Design`."""
        return {
            "max_bin": self.max_bin,
            "min_data_in_leaf": self.min_data_in_leaf,
            "data_random_seed": self.seed,
            "feature_pre_filter": False,
            "verbosity": -1,
        }

    def params(self, objective: str, **extra: Any) -> dict[str, Any]:
        """LightGBM parameters for ``objective``: deterministic and quiet."""
        return {
            "objective": objective,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "feature_fraction_seed": self.seed,
            "bagging_seed": self.seed,
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": 1 if self.bagging_fraction < 1 else 0,
            "data_random_seed": self.seed,
            "lambda_l2": self.lambda_l2,
            "seed": self.seed,
            "num_threads": self.num_threads,
            "deterministic": True,
            "force_row_wise": True,
            "verbosity": -1,
            **extra,
        }


def feature_frame(frame: pd.DataFrame, features: list[str] | None = None) -> pd.DataFrame:
    """The model inputs of a training or scoring frame: numbers as float, text as category.

    Text columns (segment, stage, best channel, member tier) become pandas categoricals;
    LightGBM stores their categories in the model file and maps scoring frames the same way.
    """
    names = features or [c for c in frame.columns if c not in KEY_COLUMNS]
    out: dict[str, Any] = {}
    for name in names:
        column = frame[name]
        if not _is_text(column):
            out[name] = column.to_numpy(dtype="float64", na_value=np.nan)
        elif isinstance(column.dtype, pd.CategoricalDtype):
            out[name] = column
        else:
            out[name] = column.astype("string").astype("category")
    return pd.DataFrame(out, index=frame.index, copy=False)


@dataclass
class Calibrator:
    """An isotonic map from raw to calibrated probability, stored as plain numbers (no pickle)."""

    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)

    @classmethod
    def fit(cls, raw: np.ndarray, outcome: np.ndarray) -> Calibrator:
        """Fit on the validation fold's raw scores and outcomes."""
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
        iso.fit(raw, outcome)
        return cls([float(v) for v in iso.X_thresholds_], [float(v) for v in iso.y_thresholds_])

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of raw scores."""
        if not self.x:
            return np.asarray(raw, dtype=float)
        return np.interp(raw, self.x, self.y)

    def to_dict(self) -> dict[str, list[float]]:
        """A JSON-ready form."""
        return {"x": self.x, "y": self.y}


@dataclass
class Classifier:
    """A calibrated binary LightGBM model."""

    booster: lgb.Booster
    calibrator: Calibrator
    features: list[str]

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Calibrated probabilities for the rows of ``frame``."""
        return self.calibrator(self.raw(frame))

    def raw(self, frame: pd.DataFrame) -> np.ndarray:
        """Uncalibrated probabilities."""
        return _predict(self.booster, frame, self.features)


@dataclass
class Regressor:
    """A LightGBM regression (its predictions on the response scale)."""

    booster: lgb.Booster
    features: list[str]

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Predictions for the rows of ``frame``."""
        return _predict(self.booster, frame, self.features)


def _predict(booster: lgb.Booster, frame: pd.DataFrame, features: list[str]) -> np.ndarray:
    """``booster.predict`` of the model's columns of ``frame`` (by table lookup when it can)."""
    return predictions(booster, feature_matrix(frame, booster, features))


def feature_matrix(
    frame: pd.DataFrame,
    booster: lgb.Booster,
    features: list[str],
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """What LightGBM reads for the rows ``rows`` (all by default) of ``feature_frame(frame)``.

    The numbers of ``lightgbm_matrix(booster, feature_frame(frame.iloc[rows], features))``:
    numbers as float64, text as the code of its category in the model (NaN when null or not
    seen in training). Built column by column from ``frame`` itself, without a frame of
    categoricals or a copy of the rows, and column-major: each column is one contiguous write
    here and one contiguous read for the tree lookup.
    """
    rows = None if rows is None else row_positions(rows)
    known = booster.pandas_categorical or []
    text = [name for name in features if _is_text(frame[name])]
    if len(text) != len(known):  # LightGBM's own conversion says what does not match
        inputs = feature_frame(frame, features)
        return lightgbm_matrix(booster, inputs if rows is None else inputs.iloc[rows])
    categories = dict(zip(text, known, strict=True))
    out = np.empty((len(frame) if rows is None else len(rows), len(features)), order="F")
    for j, name in enumerate(features):
        column = frame[name]
        if name in categories:
            values = _category_codes(column, categories[name])
        else:
            values = column.to_numpy(dtype="float64", na_value=np.nan)
        out[:, j] = values if rows is None else values[rows]
    return out


def row_positions(rows: np.ndarray) -> np.ndarray:
    """``rows`` as int64 positions; a boolean mask or other values are refused, not guessed."""
    positions = np.asarray(rows)
    if positions.ndim != 1 or (positions.dtype.kind not in "iu" and len(positions)):
        raise ValueError(f"rows must be integer positions, not {positions.dtype} values")
    return positions.astype(np.int64, copy=False)


def _category_codes(column: pd.Series, categories: list[Any]) -> np.ndarray:
    """Each value's position in ``categories`` as float64 (NaN: null or not there)."""
    if isinstance(column.dtype, pd.StringDtype) and all(isinstance(c, str) for c in categories):
        text = pa.array(column.array).cast(pa.large_string())  # Arrow's own hash lookup
        found = pc.index_in(text, value_set=pa.array(categories, pa.large_string()))
        return found.to_numpy(zero_copy_only=False).astype(np.float64)
    if not isinstance(column.dtype, pd.CategoricalDtype):
        column = column.astype("string")
    codes = pd.Categorical(column, categories=categories).codes
    return np.where(codes < 0, np.nan, codes)


def _is_text(column: pd.Series) -> bool:
    """A column ``feature_frame`` turns into a category (text, or a category already)."""
    return isinstance(column.dtype, pd.CategoricalDtype) or not (
        pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)
    )


@dataclass
class Design:
    """The fit and validation rows, binned once and shared by every model (subsets, own labels).

    Binning (LightGBM's ``Dataset`` construction) is the costly step before training; each
    model takes a subset of rows of these two datasets and sets its own labels, so the five
    boosters of a training share one binning.
    """

    fit: lgb.Dataset
    valid: lgb.Dataset
    x_valid: pd.DataFrame
    names: list[str]
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def build(cls, fit: pd.DataFrame, valid: pd.DataFrame, config: TrainConfig) -> Design:
        """Bin the fit rows, and the validation rows with the same bins and categories."""
        x_fit, x_valid = design_frames(fit, valid)
        names = list(x_fit.columns)
        params = config.dataset_params()
        dfit = lgb.Dataset(x_fit, np.zeros(len(x_fit)), params=params, free_raw_data=False)
        dvalid = lgb.Dataset(
            x_valid, np.zeros(len(x_valid)), reference=dfit, params=params, free_raw_data=False
        )
        return cls(dfit.construct(), dvalid.construct(), x_valid, names)

    def rows(
        self, fit_rows: np.ndarray, y_fit: np.ndarray, valid_rows: np.ndarray, y_valid: np.ndarray
    ) -> tuple[lgb.Dataset, lgb.Dataset]:
        """Datasets of the chosen rows (boolean masks) with their labels."""
        chosen = []
        with self.lock:  # models training side by side take their subsets one at a time
            for base, rows, y in ((self.fit, fit_rows, y_fit), (self.valid, valid_rows, y_valid)):
                part = base.subset(np.flatnonzero(rows).tolist()).construct()
                part.set_label(np.asarray(y, dtype=float))
                chosen.append(part)
        return chosen[0], chosen[1]


def design_frames(fit: pd.DataFrame, valid: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The model inputs of the fit and validation rows, the latter with the fit's categories."""
    x_fit = feature_frame(fit)
    x_valid = feature_frame(valid, list(x_fit.columns))
    for name in x_fit.columns:  # the validation fold uses the training categories
        if isinstance(x_fit[name].dtype, pd.CategoricalDtype):
            x_valid[name] = x_valid[name].cat.set_categories(x_fit[name].cat.categories)
    return x_fit, x_valid


def _train(
    params: dict[str, Any], dtrain: lgb.Dataset, dvalid: lgb.Dataset, config: TrainConfig
) -> lgb.Booster:
    booster = lgb.train(
        params,
        dtrain,
        num_boost_round=config.max_rounds,
        valid_sets=[dvalid],
        callbacks=[lgb.early_stopping(config.early_stopping_rounds, verbose=False)],
    )
    return canonical(booster)


def canonical(booster: lgb.Booster) -> lgb.Booster:
    """The booster without its thread count, so the model file is the same at any count (R11).

    With ``deterministic=True`` and ``force_row_wise=True`` the trees do not depend on the
    number of threads; only the ``[num_threads: N]`` line of the saved parameters would.
    """
    text = re.sub(r"^\[num_threads: \d+\]\n", "", booster.model_to_string(), flags=re.M)
    return lgb.Booster(model_str=text)


def fit_classifier(
    design: Design,
    rows: tuple[np.ndarray, np.ndarray],
    y_fit: np.ndarray,
    y_valid: np.ndarray,
    config: TrainConfig,
) -> Classifier:
    """A binary model early-stopped on the validation rows and calibrated (isotonic) on them.

    Args:
        design: The binned fit and validation rows.
        rows: Boolean masks of the fit and validation rows this model uses.
        y_fit: 0/1 outcomes of the chosen fit rows.
        y_valid: Outcomes of the chosen validation rows.
        config: LightGBM settings.
    """
    dtrain, dvalid = design.rows(rows[0], y_fit, rows[1], y_valid)
    booster = _train(config.params("binary", metric="binary_logloss"), dtrain, dvalid, config)
    model = Classifier(booster, Calibrator(), design.names)
    raw = model.raw(design.x_valid[rows[1]])
    model.calibrator = Calibrator.fit(raw, np.asarray(y_valid, dtype=float))
    return model


def fit_regressor(
    design: Design,
    rows: tuple[np.ndarray, np.ndarray],
    y_fit: np.ndarray,
    y_valid: np.ndarray,
    config: TrainConfig,
    objective: str = "gamma",
) -> Regressor:
    """A regression early-stopped on the validation rows (``gamma``: log link, positive)."""
    dtrain, dvalid = design.rows(rows[0], y_fit, rows[1], y_valid)
    booster = _train(config.params(objective), dtrain, dvalid, config)
    return Regressor(booster, design.names)
