"""``train_models``: the five boosters are the same at 1 and 2 threads, run after run (R11)."""

from __future__ import annotations

import dataclasses
import datetime

import numpy as np
import pandas as pd
import pytest

from features import build_features, make_labels
from features.synthetic import generate
from models.estimators import TrainConfig
from models.training import BUNDLES, model_matrix, predict, train_models

PARTS = [part for parts in BUNDLES.values() for part in parts]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    data = generate(1500, seed=11)
    rows = []
    for cutoff in (
        datetime.date(2025, 9, 1),
        datetime.date(2025, 10, 1),
        datetime.date(2025, 11, 1),
    ):
        features = build_features(data.transactions, data.touches, data.customers, as_of=cutoff)
        labels = make_labels(data.transactions, cutoff=cutoff, horizon_days=90)
        merged = features.merge(labels.drop(columns=["cutoff"]), on="customer_id")
        merged = merged[merged["orders_total"] > 0].copy()
        merged["cutoff"] = pd.Timestamp(cutoff)
        rows.append(merged)
    return pd.concat(rows, ignore_index=True)


def texts(frame: pd.DataFrame, threads: int) -> dict[str, str]:
    config = dataclasses.replace(TrainConfig(max_rounds=60), num_threads=threads)
    models = train_models(frame, config)
    return {part: getattr(models, part).booster.model_to_string() for part in PARTS}


def test_models_do_not_depend_on_threads_or_the_run(frame):
    one, two, again = texts(frame, 1), texts(frame, 2), texts(frame, 2)
    assert set(one) == set(PARTS)
    for part in PARTS:
        assert one[part] == two[part] == again[part], part
        assert "num_threads" not in one[part]


def test_predict_reads_one_matrix_and_gives_each_parts_own_prediction(frame):
    models = train_models(frame, TrainConfig(max_rounds=40))
    rows = frame[frame["cutoff"] == frame["cutoff"].max()]
    got = predict(models, rows)
    np.testing.assert_array_equal(got.churn_prob, models.churn.predict(rows))
    np.testing.assert_array_equal(got.p_purchase_30d, models.purchase_30d.predict(rows))
    np.testing.assert_array_equal(got.p_buy_180d, models.value_buy.predict(rows))
    np.testing.assert_array_equal(got.spend_if_buy_180d, models.value_spend.predict(rows))
    days = np.clip(models.next_order_days.predict(rows) - 0.5, 0, models.horizon_days)
    np.testing.assert_array_equal(got.expected_days_to_next_order, days)
    # the same rows picked out of the whole frame, with or without the caller's matrix
    picked = np.flatnonzero((frame["cutoff"] == frame["cutoff"].max()).to_numpy())
    for matrix in (None, model_matrix(models, frame, picked)):
        again = predict(models, frame, matrix, picked)
        for field in dataclasses.fields(got):
            np.testing.assert_array_equal(getattr(again, field.name), getattr(got, field.name))


def test_predict_of_no_rows_is_empty(frame):
    models = train_models(frame, TrainConfig(max_rounds=10))
    got = predict(models, frame.iloc[:0])
    assert len(got.churn_prob) == len(got.predicted_value_180d) == 0
