"""Tests of the synthetic generator: determinism, contract, ground truth and real signals.

The statistical checks use generous margins (measured values are noted beside each bound) so
they do not flake, yet each fails if the corresponding part of the generative story is broken.
"""

from __future__ import annotations

import datetime
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from pandas.testing import assert_frame_equal

from features import contracts, synthetic
from features.synthetic import (
    CATEGORIES,
    REFUND_RATE,
    SIM_TOUCH_CHANNELS,
    SyntheticData,
    generate,
    generate_to,
    season_multiplier,
    write_synthetic,
)

N = 3000
SEED = 11


@pytest.fixture(scope="module")
def data() -> SyntheticData:
    return generate(N, seed=SEED)


@pytest.fixture(scope="module")
def orders(data: SyntheticData) -> pd.DataFrame:
    """One row per order (positive lines only): customer, time, discount."""
    pos = data.transactions[data.transactions["amount"] > 0]
    return pos.groupby("order_id", sort=False).agg(
        customer_id=("customer_id", "first"),
        ordered_at=("ordered_at", "first"),
        discount=("discount", "sum"),
        lines=("category", "size"),
    )


@pytest.fixture(scope="module")
def truth(data: SyntheticData) -> pd.DataFrame:
    return data.truth.set_index("customer_id")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------
# Determinism
# --------------------------------------------------------------------------------------------


class TestDeterminism:
    def test_same_seed_same_frames(self, data: SyntheticData) -> None:
        again = generate(N, seed=SEED)
        for name in ("transactions", "touches", "customers", "truth"):
            assert_frame_equal(getattr(data, name), getattr(again, name))
        assert (again.start, again.end) == (data.start, data.end)

    def test_same_seed_same_file_bytes(self, tmp_path: Path) -> None:
        small = generate(500, seed=3)
        a = write_synthetic(small, tmp_path / "a")
        b = write_synthetic(generate(500, seed=3), tmp_path / "b")
        assert sorted(a) == sorted(b) == ["customers", "touches", "transactions", "truth"]
        assert a["truth"].name == "ground_truth.parquet"
        for key in a:
            assert _digest(a[key]) == _digest(b[key]), key
        c = generate_to(tmp_path / "c", 500, seed=3)
        d = generate_to(tmp_path / "d", 500, seed=3)
        for key in c:
            assert _digest(c[key]) == _digest(d[key]), key

    def test_different_seed_differs(self, data: SyntheticData) -> None:
        other = generate(N, seed=SEED + 1)
        assert not data.transactions.equals(other.transactions)
        assert not data.truth["dropout_at"].equals(other.truth["dropout_at"])
        assert not data.customers["joined_at"].equals(other.customers["joined_at"])

    def test_generate_to_holds_the_same_rows(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Small blocks, so the streaming path, the worker threads and the order numbering across
        # blocks are exercised on a small run.
        monkeypatch.setattr(synthetic, "CHUNK_CUSTOMERS", 300)
        small = generate(800, seed=5)
        assert small.transactions.groupby("order_id")["customer_id"].nunique().max() == 1
        numbers = small.transactions["order_id"].str[1:].astype(int)
        assert set(numbers) == set(range(1, numbers.max() + 1))
        paths = generate_to(tmp_path / "s", 800, seed=5)
        assert pq.ParquetFile(paths["transactions"]).num_row_groups == 3
        assert_frame_equal(pd.read_parquet(paths["transactions"]), small.transactions)
        assert_frame_equal(pd.read_parquet(paths["touches"]), small.touches)
        assert_frame_equal(pd.read_parquet(paths["customers"]), small.customers)
        assert_frame_equal(pd.read_parquet(paths["truth"]), small.truth)

    def test_csv_round_trip(self, tmp_path: Path) -> None:
        small = generate(300, seed=2)
        paths = write_synthetic(small, tmp_path, fmt="csv")
        assert paths["transactions"].suffix == ".csv"
        assert paths["truth"].suffix == ".parquet"
        tx = pd.read_csv(paths["transactions"], parse_dates=["ordered_at"])
        assert len(tx) == len(small.transactions)
        assert (tx["ordered_at"] == small.transactions["ordered_at"]).all()
        np.testing.assert_allclose(tx["amount"], small.transactions["amount"])
        touches = pd.read_csv(paths["touches"], parse_dates=["sent_at", "responded_at"])
        assert touches["responded_at"].isna().sum() == small.touches["responded_at"].isna().sum()
        with pytest.raises(ValueError, match="fmt"):
            write_synthetic(small, tmp_path, fmt="xlsx")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Contract
# --------------------------------------------------------------------------------------------


class TestContract:
    @pytest.mark.parametrize("table", ["transactions", "touches", "customers"])
    def test_columns_present_and_required_not_null(self, data: SyntheticData, table: str) -> None:
        frame = getattr(data, table)
        spec = contracts.SPECS[table]
        assert set(spec.required) <= set(frame.columns)
        for col in spec.columns:
            assert col.name in frame.columns, col.name
        for col in spec.required:
            assert frame[col].notna().all(), col
        for col in frame.columns:
            if col != "responded_at":
                assert frame[col].notna().all(), col
        assert not frame.duplicated().any()

    def test_dtypes(self, data: SyntheticData) -> None:
        tx, to, cu = data.transactions, data.touches, data.customers
        for frame, ts in ((tx, "ordered_at"), (to, "sent_at"), (to, "responded_at")):
            assert pd.api.types.is_datetime64_dtype(frame[ts]), ts
            assert frame[ts].dt.tz is None
        assert pd.api.types.is_datetime64_dtype(cu["joined_at"])
        for col in ("customer_id", "order_id", "category", "sku", "channel"):
            assert pd.api.types.is_string_dtype(tx[col]), col
            assert all(isinstance(v, str) for v in tx[col].head(50))
        assert pd.api.types.is_integer_dtype(tx["quantity"])
        assert pd.api.types.is_float_dtype(tx["amount"])
        assert pd.api.types.is_float_dtype(tx["discount"])
        assert pd.api.types.is_float_dtype(to["coupon_value"])

    def test_values_in_range(self, data: SyntheticData) -> None:
        tx, to, cu = data.transactions, data.touches, data.customers
        assert (tx["quantity"] >= 1).all()
        assert (tx["discount"] >= 0).all()
        assert np.isfinite(tx["amount"]).all()
        assert (tx["amount"] != 0).all()
        assert (tx["amount"].round(2) == tx["amount"]).all()
        assert (to["coupon_value"] >= 0).all()
        assert set(tx["channel"]) <= set(contracts.PURCHASE_CHANNELS)
        assert set(to["channel"]) == set(SIM_TOUCH_CHANNELS)
        assert set(SIM_TOUCH_CHANNELS) <= set(contracts.TOUCH_CHANNELS)
        assert set(tx["category"]) == {c.name for c in CATEGORIES}
        assert tx["customer_id"].str.fullmatch(r"C\d{7}").all()
        assert cu["customer_id"].is_unique and len(cu) == N
        assert set(cu["member_tier"]) == {"normal", "silver", "gold", "black"}
        for frame, col in ((tx, "ordered_at"), (to, "sent_at"), (cu, "joined_at")):
            assert frame[col].min() >= data.start, col
            assert frame[col].max() < data.end, col
        resp = to["responded_at"].dropna()
        assert resp.max() < data.end
        responded = to.dropna(subset=["responded_at"])
        assert (responded["responded_at"] >= responded["sent_at"]).all()

    def test_orders_and_lines(self, data: SyntheticData) -> None:
        tx = data.transactions
        assert (tx.groupby("order_id")["customer_id"].nunique() == 1).all()
        pos = tx[tx["amount"] > 0]
        assert not pos.duplicated(["order_id", "category"]).any()  # one line per category
        assert (pos.groupby("order_id")["ordered_at"].nunique() == 1).all()
        # A refund line refers to an earlier positive line of the same order and category.
        ref = tx[tx["amount"] < 0]
        assert len(ref) > 0
        merged = ref.merge(pos, on=["order_id", "category"], suffixes=("_r", "_p"))
        assert len(merged) == len(ref)
        assert (merged["ordered_at_r"] > merged["ordered_at_p"]).all()
        assert np.allclose(merged["amount_r"], -merged["amount_p"])
        assert (merged["discount_r"] == 0).all()
        assert 0.5 * REFUND_RATE < len(ref) / len(pos) < 1.5 * REFUND_RATE  # measured 0.019

    def test_discount_is_a_coupon_on_one_line(self, data: SyntheticData) -> None:
        tx = data.transactions
        disc = tx[tx["discount"] > 0]
        assert len(disc) > 0
        assert (disc.groupby("order_id").size() == 1).all()
        gross = disc["amount"] + disc["discount"]
        assert (disc["discount"] <= 0.5 * gross + 0.01).all()
        assert disc["discount"].max() <= 50.0

    def test_every_customer_known(self, data: SyntheticData) -> None:
        known = set(data.customers["customer_id"])
        assert set(data.transactions["customer_id"]) <= known
        assert set(data.touches["customer_id"]) <= known
        assert list(data.truth["customer_id"]) == list(data.customers["customer_id"])
        assert (data.truth["joined_at"] == data.customers["joined_at"]).all()

    def test_other_windows_and_edges(self) -> None:
        one = generate(1, seed=0, days=60)
        assert len(one.customers) == len(one.truth) == 1
        cny = generate(300, seed=1, days=120, end=datetime.date(2024, 3, 1))
        assert cny.start == pd.Timestamp("2023-11-02") and cny.end == pd.Timestamp("2024-03-01")
        assert cny.transactions["ordered_at"].between(cny.start, cny.end, "left").all()
        with pytest.raises(ValueError):
            generate(0)


# --------------------------------------------------------------------------------------------
# Ground truth consistency
# --------------------------------------------------------------------------------------------


class TestGroundTruth:
    def test_no_transaction_at_or_after_dropout(
        self, data: SyntheticData, truth: pd.DataFrame
    ) -> None:
        # Strict: no row of any kind (refunds included) at or after dropout_at.
        tx = data.transactions.join(truth[["dropout_at", "joined_at"]], on="customer_id")
        assert (tx["ordered_at"] < tx["dropout_at"]).all()
        assert (tx["ordered_at"] >= tx["joined_at"]).all()

    def test_no_event_before_joining(self, data: SyntheticData, truth: pd.DataFrame) -> None:
        to = data.touches.join(truth["joined_at"], on="customer_id")
        assert (to["sent_at"] > to["joined_at"]).all()

    def test_alive_flag_and_activation(self, data: SyntheticData, truth: pd.DataFrame) -> None:
        assert (truth["alive_at_end"] == (truth["dropout_at"] >= data.end)).all()
        dead_on_arrival = truth[~truth["activated"]]
        assert (dead_on_arrival["dropout_at"] == dead_on_arrival["joined_at"]).all()
        buyers = set(data.transactions["customer_id"])
        assert not buyers & set(dead_on_arrival.index)
        never = 1 - len(buyers) / len(truth)
        assert 0.08 < never < 0.20  # measured 0.12
        assert 0.35 < truth["alive_at_end"].mean() < 0.75  # measured 0.56

    def test_truth_columns(self, truth: pd.DataFrame) -> None:
        expected = {
            "joined_at",
            "purchase_rate_per_day",
            "dropout_at",
            "alive_at_end",
            "coupon_effect",
            "coupon_only",
            "consumption_speed",
            "n_categories_adopted",
            "expected_orders_next_90d",
            "expected_spend_next_180d",
        } | {f"response_{ch}" for ch in SIM_TOUCH_CHANNELS}
        assert expected <= set(truth.columns)
        assert truth.notna().all().all()
        assert truth["coupon_effect"].between(0, 1).all()
        assert truth["n_categories_adopted"].between(0, len(CATEGORIES)).all()
        assert 0.05 < truth["coupon_only"].mean() < 0.16  # measured 0.10
        dead = truth[~truth["alive_at_end"]]
        assert (dead[["expected_orders_next_90d", "orders_next_90d"]] == 0).all().all()
        for col in ("prob_order_next_30d", "prob_order_next_90d"):
            assert truth[col].between(0, 1).all()
        assert (truth["prob_order_next_30d"] <= truth["prob_order_next_90d"]).all()

    def test_future_expectations_are_unbiased(self, truth: pd.DataFrame) -> None:
        # Expected values integrate the dropout out of the same path the realised ones follow.
        alive = truth[truth["alive_at_end"]]
        exp_o, real_o = alive["expected_orders_next_90d"], alive["orders_next_90d"]
        assert abs(exp_o.mean() / real_o.mean() - 1) < 0.08  # measured 0.99
        assert exp_o.corr(real_o) > 0.8
        exp_s, real_s = alive["expected_spend_next_180d"], alive["spend_next_180d"]
        assert abs(exp_s.mean() / real_s.mean() - 1) < 0.1  # measured 0.98
        p90 = alive["prob_order_next_90d"]
        assert abs(p90.mean() - (real_o > 0).mean()) < 0.05  # measured 0.907 vs 0.908


# --------------------------------------------------------------------------------------------
# The signals a model should be able to learn
# --------------------------------------------------------------------------------------------


def _alive_days(truth: pd.DataFrame, end: pd.Timestamp) -> pd.Series:
    last = truth["dropout_at"].where(truth["dropout_at"] < end, end)
    return (last - truth["joined_at"]).dt.total_seconds() / 86_400


class TestSignals:
    def test_purchase_rate_drives_orders(
        self, data: SyntheticData, orders: pd.DataFrame, truth: pd.DataFrame
    ) -> None:
        days = _alive_days(truth, data.end)
        n_orders = orders.groupby("customer_id").size().reindex(truth.index, fill_value=0)
        sel = truth["activated"] & (days > 60)
        rate = truth.loc[sel, "purchase_rate_per_day"]
        observed = n_orders[sel] / days[sel]
        assert rate.corr(observed, method="spearman") > 0.75  # measured 0.94
        top = rate >= rate.quantile(0.75)
        bottom = rate <= rate.quantile(0.25)
        assert observed[top].mean() > 3 * observed[bottom].mean()

    def test_alive_customers_bought_recently(
        self, data: SyntheticData, orders: pd.DataFrame, truth: pd.DataFrame
    ) -> None:
        cutoff = data.end - pd.Timedelta(days=90)
        recent = set(orders.loc[orders["ordered_at"] >= cutoff, "customer_id"])
        has_recent = truth.index.isin(list(recent))
        old = (truth["joined_at"] < cutoff) & truth["activated"]
        alive_share = has_recent[old & truth["alive_at_end"]].mean()
        dead_share = has_recent[old & ~truth["alive_at_end"]].mean()
        assert alive_share > 0.8  # measured 0.95
        assert dead_share < 0.25  # measured 0.09 (those who dropped out in the last 90 days)

    def test_coupon_hunters_buy_with_coupons(
        self, orders: pd.DataFrame, truth: pd.DataFrame
    ) -> None:
        with_coupon = (orders["discount"] > 0).groupby(orders["customer_id"]).mean()
        hunter = truth["coupon_only"].reindex(with_coupon.index)
        assert with_coupon[hunter].mean() > 0.7  # measured 0.9
        assert with_coupon[hunter].mean() > 3 * with_coupon[~hunter].mean()

    def test_coupon_uplift_follows_coupon_effect(
        self, data: SyntheticData, orders: pd.DataFrame, truth: pd.DataFrame
    ) -> None:
        # Share of touches followed by an order within 7 days, coupon touches minus plain ones:
        # large for high coupon_effect, small for the rest (loyal buyers buy anyway).
        to = data.touches.join(truth[["coupon_effect", "dropout_at"]], on="customer_id")
        to = to[to["sent_at"] < to["dropout_at"]].reset_index()
        od = orders.reset_index()[["customer_id", "ordered_at"]]
        m = to[["index", "customer_id", "sent_at"]].merge(od, on="customer_id")
        dt = m["ordered_at"] - m["sent_at"]
        m["hit"] = (dt >= pd.Timedelta(0)) & (dt < pd.Timedelta(days=7))
        to["hit"] = m.groupby("index")["hit"].any().reindex(to["index"], fill_value=False).values
        coupon = to["coupon_value"] > 0

        def uplift(sel: pd.Series) -> float:
            return float(to.loc[sel & coupon, "hit"].mean() - to.loc[sel & ~coupon, "hit"].mean())

        high, low = uplift(to["coupon_effect"] > 0.4), uplift(to["coupon_effect"] < 0.05)
        assert high > 0.3  # measured 0.6
        assert high > low + 0.25  # low measured 0.02-0.04

    def test_response_by_channel(self, data: SyntheticData, truth: pd.DataFrame) -> None:
        rate = data.touches["responded_at"].notna().groupby(data.touches["channel"]).mean()
        assert rate["wecom"] > 2 * rate["sms"]  # measured 0.23 vs 0.055
        true_mean = truth[[f"response_{ch}" for ch in SIM_TOUCH_CHANNELS]].mean()
        assert true_mean.idxmax() == "response_wecom"
        assert true_mean.idxmin() == "response_sms"

    def test_responses_fall_after_dropout(self, data: SyntheticData, truth: pd.DataFrame) -> None:
        to = data.touches.join(truth["dropout_at"], on="customer_id")
        responded = to["responded_at"].notna()
        alive = to["sent_at"] < to["dropout_at"]
        assert responded[alive].mean() > 2.5 * responded[~alive].mean()

    def test_loyal_customers_are_broader(self, data: SyntheticData, truth: pd.DataFrame) -> None:
        pos = data.transactions[data.transactions["amount"] > 0]
        breadth = pos.groupby("customer_id")["category"].nunique()
        breadth = breadth.reindex(truth.index, fill_value=0)[truth["activated"]]
        loyalty = truth.loc[truth["activated"], "loyalty"]
        top = loyalty >= loyalty.quantile(2 / 3)
        bottom = loyalty <= loyalty.quantile(1 / 3)
        assert breadth[top].mean() > 1.8 * breadth[bottom].mean()  # measured 4.5 vs 1.5
        adopted = truth["n_categories_adopted"]
        assert adopted[truth["loyalty"] > 0.5].mean() > adopted[truth["loyalty"] < -0.5].mean() + 1

    def test_quantity_moves_the_next_need(self, data: SyntheticData) -> None:
        pos = data.transactions[data.transactions["amount"] > 0]
        pos = pos[pos["category"].isin(["diapers", "formula", "wipes", "snacks"])]
        pos = pos.sort_values(["customer_id", "category", "ordered_at"])
        nxt = pos.groupby(["customer_id", "category"])["ordered_at"].shift(-1)
        gap = (nxt - pos["ordered_at"]).dt.total_seconds() / 86_400
        ok = gap.notna()
        assert ok.sum() > 5000
        assert pos.loc[ok, "quantity"].corr(gap[ok], method="spearman") > 0.25  # measured 0.46

    def test_big_sales_have_more_orders(self, data: SyntheticData, orders: pd.DataFrame) -> None:
        at = orders["ordered_at"]

        def count(a: str, b: str) -> int:
            return int(((at >= pd.Timestamp(a)) & (at < pd.Timestamp(b))).sum())

        # Double 11 (Nov 1-11) against 11 days three weeks before and after (measured 1.6x).
        d11, before, after = (
            count("2025-11-01", "2025-11-12"),
            count("2025-10-10", "2025-10-21"),
            count("2025-11-20", "2025-12-01"),
        )
        assert d11 > 1.25 * max(before, after)
        # 618 (June 1-18) against 18 days in May (measured 1.45x; the base keeps growing).
        assert count("2026-06-01", "2026-06-19") > 1.2 * count("2026-05-08", "2026-05-26")
        # Chinese New Year week (2026-02-17) dips against the week three weeks later.
        assert count("2026-02-17", "2026-02-24") < 0.7 * count("2026-03-10", "2026-03-17")

    def test_order_hours_are_realistic(self, orders: pd.DataFrame) -> None:
        hours = orders["ordered_at"].dt.hour
        assert (hours < 6).mean() < 0.1  # measured 0.04
        assert hours.between(19, 22).mean() > 0.2


def test_season_multiplier_calendar() -> None:
    start = datetime.date(2025, 1, 1)
    mult = pd.Series(
        season_multiplier(start, 365), index=pd.date_range(start, periods=365, freq="D")
    )
    assert mult["2025-11-11"] == 4.0
    assert mult["2025-06-18"] == 3.0
    assert mult["2025-01-29":"2025-02-04"].max() < 0.5  # CNY 2025 holiday week
    assert mult["2025-01-10":"2025-01-27"].min() > 1.2  # stock-up before it
    ordinary = mult["2025-03-03":"2025-03-30"]
    assert abs(ordinary.mean() - 1.0) < 0.01


def test_parquet_has_no_pandas_metadata(tmp_path: Path) -> None:
    paths = write_synthetic(generate(50, seed=1), tmp_path)
    meta = pq.read_schema(paths["transactions"]).metadata or {}
    assert b"pandas" not in meta
