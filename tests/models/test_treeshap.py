"""Tests of models.treeshap: table-lookup TreeSHAP against LightGBM's own, on real boosters.

The oracle is ``booster.predict(x, pred_contrib=True)``: every test trains a small LightGBM
model (no mocks) and asks for the same numbers to 1e-9, on rows that stress the decision
rule: NaN, zeros, values exactly at the split thresholds and their float neighbours, values
within LightGBM's zero threshold, infinities, unseen and null categories.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from features import build_features, make_labels
from features.synthetic import generate
from models import treeshap
from models.estimators import TrainConfig, feature_frame, feature_matrix
from models.treeshap import MAX_LEAVES, contributions

ATOL = 1e-9
TIERS = ["bronze", "silver", "gold"]
# More than 32 categories: a split's bitset spans several 32-bit words.
CITIES = [f"city_{i:02d}" for i in range(40)]
# LightGBM's kZeroThreshold: inputs this small are read as 0.
ZERO = float(np.float32(1e-35))
SPECIAL = [
    0.0,
    -0.0,
    ZERO,
    -ZERO,
    np.nextafter(ZERO, 1.0),
    np.nextafter(-ZERO, -1.0),
    1e-36,
    -1e-36,
    np.inf,
    -np.inf,
    np.nan,
]


def customers(n: int, seed: int) -> pd.DataFrame:
    """Model inputs with NaNs, a mostly-zero column and two categoricals (one of 40 cities)."""
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(
        {
            "spend_90d": rng.gamma(2.0, 50.0, n),
            "days_since_last_order": rng.integers(0, 365, n).astype(float),
            "refund_share_365d": np.where(rng.random(n) < 0.5, 0.0, rng.random(n)),
            "response_rate_180d": rng.normal(size=n),
            "member_tier": pd.Categorical(rng.choice(TIERS, n), categories=TIERS),
            "city": pd.Categorical(rng.choice(CITIES, n), categories=CITIES),
        }
    )
    x.loc[rng.random(n) < 0.15, "spend_90d"] = np.nan
    x.loc[rng.random(n) < 0.10, "refund_share_365d"] = np.nan
    x.loc[rng.random(n) < 0.10, "response_rate_180d"] = np.nan
    return x


def outcome(x: pd.DataFrame, objective: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    score = (
        np.nan_to_num(x["spend_90d"].to_numpy(), nan=-50.0) / 100
        - x["days_since_last_order"].to_numpy() / 120
        + 1.5 * (x["refund_share_365d"].to_numpy() == 0)
        + np.nan_to_num(x["response_rate_180d"].to_numpy(), nan=1.0)
        + x["member_tier"].cat.codes.to_numpy()
        + (x["city"].cat.codes.to_numpy() % 3 == 0)
    )
    if objective == "binary":
        return (rng.random(len(x)) < 1 / (1 + np.exp(-score))).astype(float)
    if objective == "gamma":
        return np.exp(score / 3) * rng.gamma(2.0, 0.5, len(x))
    return score + rng.normal(size=len(x))


def train(
    objective: str = "binary", rounds: int = 25, n: int = 800, positive: bool = False, **params
) -> lgb.Booster:
    """A small booster; ``positive``: a regression label made positive (``exp`` of it)."""
    x = customers(n, seed=1)
    settings = {
        "objective": objective,
        "num_leaves": 7,
        "learning_rate": 0.1,
        "min_data_in_leaf": 10,
        "min_data_per_group": 5,
        "cat_smooth": 1.0,
        "max_cat_to_onehot": 4,
        "deterministic": True,
        "num_threads": 1,
        "seed": 1,
        "verbosity": -1,
        **params,
    }
    y = outcome(x, objective, seed=2)
    if positive:
        y = 1 / (1 + np.exp(-y)) if objective == "cross_entropy" else np.exp(y / 3)
    data = lgb.Dataset(x, y, params={"verbosity": -1})
    return lgb.train(settings, data, num_boost_round=rounds)


def numeric_splits(booster: lgb.Booster) -> list[tuple[str, float]]:
    """Every numerical split of the model as (feature name, threshold), from ``dump_model``."""
    model = booster.dump_model()
    names = model["feature_names"]
    found = []
    stack = [tree["tree_structure"] for tree in model["tree_info"]]
    while stack:
        node = stack.pop()
        if "split_index" not in node:
            continue
        if node["decision_type"] == "<=":
            found.append((names[node["split_feature"]], float(node["threshold"])))
        stack += [node["left_child"], node["right_child"]]
    return found


def edge_rows(booster: lgb.Booster, base: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``base`` with one numeric value set at, just below and just above a threshold.

    Also every special value (zeros, values within kZeroThreshold, infinities, NaN) in every
    numeric column.
    """
    changes = [
        (name, value)
        for name, threshold in numeric_splits(booster)
        for value in (threshold, np.nextafter(threshold, -np.inf), np.nextafter(threshold, np.inf))
    ]
    numeric = [c for c in base.columns if not isinstance(base[c].dtype, pd.CategoricalDtype)]
    changes += [(name, value) for name in numeric for value in SPECIAL]
    rows = base.iloc[np.arange(len(changes)) % len(base)].reset_index(drop=True)
    for i, (name, value) in enumerate(changes):
        rows.loc[i, name] = value
    return rows


def scoring_rows(booster: lgb.Booster) -> pd.DataFrame:
    """New customers, unseen and null categories, and the edge rows of every threshold."""
    x = customers(300, seed=3)
    rng = np.random.default_rng(4)
    # A category unseen at training (LightGBM maps it to NaN) and nulls.
    cities = x["city"].cat.add_categories(["city_new"])
    cities[rng.random(len(x)) < 0.1] = "city_new"
    cities[rng.random(len(x)) < 0.1] = None
    x["city"] = cities
    x.loc[rng.random(len(x)) < 0.1, "member_tier"] = None
    return pd.concat([x, edge_rows(booster, x)], ignore_index=True)


def assert_exact(booster: lgb.Booster, x: pd.DataFrame, **kwargs) -> np.ndarray:
    got = contributions(booster, x, **kwargs)
    np.testing.assert_allclose(got, booster.predict(x, pred_contrib=True), rtol=0, atol=ATOL)
    raw = booster.predict(x, raw_score=True)
    np.testing.assert_allclose(got.sum(axis=1), raw, rtol=0, atol=ATOL)
    return got


@pytest.fixture
def no_fallback(monkeypatch):
    """Fail the test if ``contributions`` falls back to LightGBM's own TreeSHAP."""

    def fail(*args):
        raise AssertionError("contributions fell back to pred_contrib")

    monkeypatch.setattr(treeshap, "_lightgbm", fail)


# ---------------------------------------------------------------------------------------------
# Exactness
# ---------------------------------------------------------------------------------------------

CASES = {
    "binary-2-leaves": {"num_leaves": 2},
    "binary-3-leaves": {"num_leaves": 3},
    "binary-7-leaves": {},
    f"binary-{MAX_LEAVES}-leaves": {"num_leaves": MAX_LEAVES},
    "regression": {"objective": "regression"},
    "gamma": {"objective": "gamma"},
    "zero-as-missing": {"zero_as_missing": True},
    "no-missing": {"use_missing": False},
    "zero-as-missing-regression": {"objective": "regression", "zero_as_missing": True},
    "bagging": {"bagging_fraction": 0.7, "bagging_freq": 1, "feature_fraction": 0.8},
    "random-forest": {"boosting": "rf", "bagging_fraction": 0.7, "bagging_freq": 1},
    "one-hot-categories": {"max_cat_to_onehot": 64},
    "deep-categories": {"num_leaves": 8, "min_data_in_leaf": 3, "max_cat_threshold": 64},
}


class TestExactness:
    @pytest.mark.parametrize("params", CASES.values(), ids=CASES.keys())
    def test_matches_pred_contrib(self, params, no_fallback) -> None:
        booster = train(**params)
        assert_exact(booster, scoring_rows(booster))

    def test_rows_at_every_threshold_are_checked(self) -> None:
        booster = train()
        splits = numeric_splits(booster)
        x = scoring_rows(booster)
        assert len(splits) > 50
        for name, threshold in splits[:20]:
            assert (x[name] == threshold).any()
        assert x["city"].isna().any() and x["member_tier"].isna().any()

    def test_project_model(self, no_fallback) -> None:
        """A churn model trained as the project trains it, explaining a later snapshot."""
        data = generate(1500, seed=5)
        features = build_features(
            data.transactions, data.touches, data.customers, as_of="2025-12-01"
        )
        labels = make_labels(data.transactions, cutoff="2025-12-01", horizon_days=90)
        rows = features[features["orders_total"] > 0].merge(
            labels[["customer_id", "churned"]], on="customer_id"
        )
        x = feature_frame(rows.drop(columns=["churned"]))
        params = TrainConfig(num_threads=1).params("binary")
        booster = lgb.train(params, lgb.Dataset(x, rows["churned"].astype(float)), 60)
        assert params["deterministic"] and params["bagging_freq"] == 1
        snapshot = build_features(
            data.transactions, data.touches, data.customers, as_of="2026-03-01"
        )
        scoring = feature_frame(snapshot, booster.feature_name())
        assert_exact(booster, pd.concat([scoring, edge_rows(booster, scoring)]))

    def test_best_iteration_of_early_stopping(self, no_fallback) -> None:
        x = customers(800, seed=1)
        valid = customers(300, seed=9)
        params = {"objective": "binary", "verbosity": -1, "num_threads": 1, "num_leaves": 7}
        booster = lgb.train(
            {**params, "learning_rate": 0.5},
            lgb.Dataset(x, outcome(x, "binary", 2)),
            num_boost_round=200,
            valid_sets=[lgb.Dataset(valid, outcome(valid, "binary", 3))],
            callbacks=[lgb.early_stopping(5, verbose=False)],
            keep_training_booster=True,  # else train() keeps only the best iteration's trees
        )
        assert 0 < booster.best_iteration < booster.num_trees()
        assert_exact(booster, scoring_rows(booster))

    def test_trees_without_splits(self, no_fallback) -> None:
        booster = train(min_data_in_leaf=10_000, rounds=3)
        got = assert_exact(booster, scoring_rows(booster))
        assert (got[:, :-1] == 0).all()

    def test_numeric_codes_of_a_categorical_feature(self, no_fallback) -> None:
        """Plain numbers in a categorical feature: truncated to int, negative ones go right."""
        rng = np.random.default_rng(6)
        x = pd.DataFrame(
            {"code": rng.integers(0, 40, 1000).astype(float), "z": rng.normal(size=1000)}
        )
        x.loc[rng.random(1000) < 0.1, "code"] = np.nan
        y = (x["code"].fillna(7) % 3 == 0) + x["z"]
        data = lgb.Dataset(x, y, categorical_feature=["code"], params={"verbosity": -1})
        params = {"objective": "regression", "num_leaves": 7, "verbosity": -1, "num_threads": 1}
        params |= {"min_data_per_group": 5, "cat_smooth": 1.0, "max_cat_to_onehot": 4}
        booster = lgb.train(params, data, num_boost_round=20)
        odd = [-0.5, -0.99, -1.0, -2.0, 0.7, 2.999, 31.5, 32.0, 33.0, 39.0, 40.0, 1e3, 1e10]
        odd += [-1e10, 2.0**31, -(2.0**31), np.inf, -np.inf, np.nan, ZERO, -ZERO]
        scoring = pd.DataFrame({"code": odd, "z": np.linspace(-2, 2, len(odd))})
        assert_exact(booster, pd.concat([x.iloc[:200], scoring]))

    def test_float32_int_and_bool_columns(self, no_fallback) -> None:
        """LightGBM predicts float32 data when no column needs more; thresholds stay double."""
        rng = np.random.default_rng(8)
        n = 800
        x = pd.DataFrame(
            {
                "ratio": rng.normal(size=n).astype(np.float32),
                "orders": rng.integers(0, 20, n).astype(np.int8),
                "member": rng.random(n) < 0.4,
            }
        )
        y = x["ratio"] + x["orders"] / 5 + x["member"]
        params = {"objective": "regression", "num_leaves": 7, "verbosity": -1, "num_threads": 1}
        booster = lgb.train(params, lgb.Dataset(x, y.astype(float)), num_boost_round=20)
        rows = []
        for name, threshold in numeric_splits(booster):
            if name == "ratio":
                near = np.float32(threshold)
                for value in (
                    near,
                    np.nextafter(near, np.float32(-np.inf)),
                    np.nextafter(near, np.float32(np.inf)),
                ):
                    rows.append({"ratio": value, "orders": np.int8(3), "member": True})
        edges = pd.DataFrame(rows).astype({"ratio": np.float32, "orders": np.int8, "member": bool})
        scoring = pd.concat([x.iloc[:100], edges], ignore_index=True)
        assert scoring.dtypes["ratio"] == np.float32
        assert_exact(booster, scoring)
        # An int64 column makes LightGBM predict float64 data.
        assert_exact(booster, scoring.astype({"orders": np.int64}))


# ---------------------------------------------------------------------------------------------
# Fallback and plumbing
# ---------------------------------------------------------------------------------------------


class TestFallback:
    def test_large_trees_fall_back_to_lightgbm(self, monkeypatch) -> None:
        booster = train(num_leaves=15)
        calls = []
        own = treeshap._lightgbm
        monkeypatch.setattr(treeshap, "_lightgbm", lambda *a: calls.append(1) or own(*a))
        assert_exact(booster, scoring_rows(booster))
        assert calls

    def test_linear_trees_get_lightgbm_error(self) -> None:
        booster = train(linear_tree=True)
        with pytest.raises(lgb.basic.LightGBMError, match="linear trees"):
            contributions(booster, customers(5, seed=1))

    def test_multiclass_keeps_lightgbm_layout(self) -> None:
        x = customers(600, seed=1)
        y = x["member_tier"].cat.codes.to_numpy()
        params = {"objective": "multiclass", "num_class": 3, "verbosity": -1, "num_threads": 1}
        booster = lgb.train(params, lgb.Dataset(x, y), num_boost_round=5)
        got = contributions(booster, x.iloc[:50], chunk_rows=20)
        assert got.shape == (50, 3 * (x.shape[1] + 1))
        np.testing.assert_allclose(got, booster.predict(x.iloc[:50], pred_contrib=True), atol=ATOL)


class TestPlumbing:
    @pytest.fixture(scope="class")
    def booster(self) -> lgb.Booster:
        return train()

    def test_chunks_blocks_and_threads_do_not_change_the_result(self, booster, monkeypatch) -> None:
        x = scoring_rows(booster)
        whole = contributions(booster, x, threads=1)
        monkeypatch.setattr(treeshap, "_BLOCK_ROWS", 24)
        for chunk_rows in (7, 100, len(x)):
            for threads in (1, 2):
                got = contributions(booster, x, chunk_rows=chunk_rows, threads=threads)
                np.testing.assert_array_equal(got, whole)

    def test_index_is_ignored(self, booster) -> None:
        x = scoring_rows(booster)
        shuffled = x.set_index(np.arange(len(x))[::-1] * 7)
        np.testing.assert_array_equal(contributions(booster, shuffled), contributions(booster, x))

    def test_no_rows(self, booster) -> None:
        got = contributions(booster, customers(5, seed=1).iloc[:0])
        assert got.shape == (0, booster.num_feature() + 1)

    def test_wrong_columns(self, booster) -> None:
        with pytest.raises(ValueError, match="columns"):
            contributions(booster, customers(5, seed=1).drop(columns=["city"]))

    @pytest.mark.parametrize("kwargs", [{"chunk_rows": 0}, {"threads": 0}])
    def test_bad_arguments(self, booster, kwargs) -> None:
        with pytest.raises(ValueError, match="positive"):
            contributions(booster, customers(5, seed=1), **kwargs)


# ---------------------------------------------------------------------------------------------
# Predictions
# ---------------------------------------------------------------------------------------------

PREDICTED = {k: v for k, v in CASES.items() if k != "random-forest"} | {
    "poisson": {"objective": "poisson", "positive": True},
    "tweedie": {"objective": "tweedie", "positive": True},
    "quantile": {"objective": "quantile", "alpha": 0.8},
    "huber": {"objective": "huber"},
    "regression-l1": {"objective": "regression_l1"},
    "binary-sigmoid-2": {"sigmoid": 2.0},
    "trees-without-splits": {"min_data_in_leaf": 10_000, "rounds": 3},
}


def predicted_by_lightgbm(booster: lgb.Booster, matrix: np.ndarray) -> tuple[np.ndarray, ...]:
    return booster.predict(matrix, raw_score=True), booster.predict(matrix)


def refuse_lightgbm(booster: lgb.Booster, monkeypatch) -> None:
    """Fail the test if ``predictions`` asks LightGBM to predict."""

    def fail(*args, **kwargs):
        raise AssertionError("predictions fell back to booster.predict")

    monkeypatch.setattr(booster, "predict", fail)


class TestPredictions:
    @pytest.mark.parametrize("params", PREDICTED.values(), ids=PREDICTED.keys())
    def test_matches_lightgbm(self, params, monkeypatch) -> None:
        booster = train(**params)
        matrix = treeshap.lightgbm_matrix(booster, scoring_rows(booster))
        raw, output = predicted_by_lightgbm(booster, matrix)
        refuse_lightgbm(booster, monkeypatch)
        # The raw scores are LightGBM's to the last bit; the transform is numpy's.
        np.testing.assert_array_equal(treeshap.predictions(booster, matrix, raw_score=True), raw)
        got = treeshap.predictions(booster, matrix)
        np.testing.assert_allclose(got, output, rtol=1e-14, atol=0)
        if params.get("objective", "binary") == "binary":
            assert ((got > 0) & (got < 1)).all()

    def test_project_models(self, monkeypatch) -> None:
        """The project's own five boosters, as training makes them."""
        booster = train(rounds=300, **TrainConfig(num_threads=1).params("binary"))
        matrix = treeshap.lightgbm_matrix(booster, scoring_rows(booster))
        raw, output = predicted_by_lightgbm(booster, matrix)
        refuse_lightgbm(booster, monkeypatch)
        np.testing.assert_array_equal(treeshap.predictions(booster, matrix, raw_score=True), raw)
        np.testing.assert_allclose(treeshap.predictions(booster, matrix), output, rtol=1e-14)

    @pytest.mark.parametrize(
        "params",
        [
            {"num_leaves": 15},
            {"objective": "regression", "reg_sqrt": True},
            {"objective": "cross_entropy", "positive": True},
            CASES["random-forest"],
        ],
        ids=["large-trees", "regression-sqrt", "other-objective", "random-forest"],
    )
    def test_falls_back_to_lightgbm(self, params) -> None:
        booster = train(**params)
        matrix = treeshap.lightgbm_matrix(booster, scoring_rows(booster))
        np.testing.assert_array_equal(
            treeshap.predictions(booster, matrix), booster.predict(matrix)
        )

    def test_blocks_and_threads_do_not_change_the_result(self, monkeypatch) -> None:
        booster = train()
        matrix = treeshap.lightgbm_matrix(booster, scoring_rows(booster))
        whole = treeshap.predictions(booster, matrix, threads=1)
        monkeypatch.setattr(treeshap, "_BLOCK_ROWS", 24)
        for threads in (1, 2, 3):
            np.testing.assert_array_equal(
                treeshap.predictions(booster, matrix, threads=threads), whole
            )

    def test_no_rows_and_bad_threads(self) -> None:
        booster = train()
        empty = np.zeros((0, booster.num_feature()))
        assert treeshap.predictions(booster, empty).shape == (0,)
        with pytest.raises(ValueError, match="positive"):
            treeshap.predictions(booster, empty, threads=0)
        for width in (booster.num_feature() - 1, booster.num_feature() + 1):
            with pytest.raises(ValueError, match="features"):
                treeshap.predictions(booster, np.zeros((3, width)))


class TestFeatureMatrix:
    """``feature_matrix`` builds, column by column, the matrix LightGBM's conversion gives."""

    @staticmethod
    def expected(booster: lgb.Booster, frame: pd.DataFrame, rows=None) -> np.ndarray:
        chosen = frame if rows is None else frame.iloc[rows]
        return treeshap.lightgbm_matrix(booster, feature_frame(chosen, booster.feature_name()))

    @pytest.mark.parametrize("text", ["category", "string[pyarrow]", "object"])
    def test_same_numbers_as_lightgbm_for_every_kind_of_text(self, text):
        booster = train()
        frame = scoring_rows(booster)
        for name in ("member_tier", "city"):  # unseen and null categories included
            if text != "category":
                frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
                frame[name] = frame[name].astype(text)
        rng = np.random.default_rng(5)
        for rows in (
            None,
            np.sort(rng.choice(len(frame), 200, replace=False)),
            rng.permutation(50),
        ):
            got = feature_matrix(frame, booster, booster.feature_name(), rows)
            want = self.expected(booster, frame, rows)
            assert got.shape == want.shape and got.flags.f_contiguous
            np.testing.assert_array_equal(got, want)  # NaN where NaN, the same bits elsewhere
        # the lookup reads it as it reads LightGBM's own matrix
        np.testing.assert_array_equal(
            treeshap.predictions(booster, got, raw_score=True),
            booster.predict(self.expected(booster, frame, rows), raw_score=True),
        )

    def test_integer_and_boolean_columns_with_nulls(self):
        booster = train()
        frame = customers(300, seed=3)
        days = frame["days_since_last_order"]
        frame["days_since_last_order"] = pd.array(
            np.where(np.arange(len(frame)) % 7 == 0, None, days), dtype="Int64"
        )
        frame["refund_share_365d"] = frame["refund_share_365d"].fillna(0) > 0.5
        got = feature_matrix(frame, booster, booster.feature_name())
        np.testing.assert_array_equal(got, self.expected(booster, frame))
        assert np.isnan(got[::7, 1]).all()

    def test_text_the_model_has_no_categories_for_goes_through_lightgbm(self):
        """A text column where the model saw numbers: LightGBM's own conversion decides."""
        booster = train()
        frame = scoring_rows(booster)
        frame["spend_90d"] = frame["spend_90d"].astype(str)
        with pytest.raises(ValueError) as raised:
            self.expected(booster, frame)
        with pytest.raises(ValueError, match=str(raised.value)[:20]):
            feature_matrix(frame, booster, booster.feature_name())


@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_numpy_input_of_any_number_type_is_read_as_lightgbm_reads_it(dtype):
    """float32 is widened, other numbers go through float32, as ``booster.predict`` does."""
    booster = train()
    matrix = treeshap.lightgbm_matrix(booster, customers(300, seed=9))
    given = (np.nan_to_num(matrix, nan=0.0) * 10).astype(dtype)
    np.testing.assert_array_equal(
        treeshap.predictions(booster, given, raw_score=True),
        booster.predict(given, raw_score=True),
    )
    np.testing.assert_allclose(
        contributions(booster, given), booster.predict(given, pred_contrib=True), atol=ATOL
    )
