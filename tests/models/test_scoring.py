"""``models.scoring``: bands, percentiles, migration, frequency cap, win-back and coupon columns."""

from __future__ import annotations

import datetime

import numpy as np
import pandas as pd
import pytest

from models.policy import CouponPolicy, Tier
from models.scoring import (
    RiskBands,
    baseline_columns,
    coupon_columns,
    insert_after,
    order_value,
    p_within,
    recall_columns,
    segment_migration,
    touches_within,
    value_percentile,
)

AS_OF = pd.Timestamp("2026-07-01", tz="Asia/Shanghai")


def test_risk_bands_follow_the_thresholds_and_leave_unscored_empty():
    bands = RiskBands(high=0.7, medium=0.4).band(np.array([0.9, 0.7, 0.5, 0.4, 0.1, np.nan]))
    assert bands.tolist()[:5] == ["high", "high", "medium", "medium", "low"]
    assert pd.isna(bands.iloc[5])


def test_value_percentile_is_within_each_stage():
    value = pd.Series([10.0, 20.0, 30.0, 5.0, 5.0, np.nan])
    stage = pd.Series(["maturity", "maturity", "maturity", "lost", "lost", "lost"])
    pct = value_percentile(value, stage)
    assert pct.tolist()[:3] == [33.3, 66.7, 100.0]
    assert pct.tolist()[3:5] == [75.0, 75.0]  # ties share their average rank: 1.5 of 2
    assert np.isnan(pct.iloc[5])


def test_segment_migration_reads_the_previous_scoring():
    current = pd.DataFrame({"customer_id": ["a", "b", "c"]}, index=[10, 11, 12])
    empty = segment_migration(current, None)
    assert empty.isna().all().all() and list(empty.index) == [10, 11, 12]
    previous = pd.DataFrame(
        {
            "customer_id": ["b", "a"],
            "rfm_segment": ["new", "dormant"],
            "lifecycle_stage": ["x", "y"],
        }
    )
    moved = segment_migration(current, previous)
    assert moved["previous_rfm_segment"].tolist()[:2] == ["dormant", "new"]
    assert pd.isna(moved["previous_rfm_segment"].iloc[2])  # new since the last scoring
    assert moved["previous_lifecycle_stage"].tolist()[:2] == ["y", "x"]


def test_touches_within_counts_the_window_before_as_of_only():
    touches = pd.DataFrame(
        {
            "customer_id": ["a", "a", "a", "b", "b"],
            "sent_at": [
                AS_OF - pd.Timedelta(days=1),
                AS_OF - pd.Timedelta(days=7),  # the window's first instant: counted
                AS_OF - pd.Timedelta(days=7, seconds=1),  # before it
                AS_OF,  # at as_of: not before it
                AS_OF - pd.Timedelta(hours=3),
            ],
        }
    )
    ids = pd.Series(["a", "b", "c"])
    assert touches_within(touches, ids, AS_OF, 7).tolist() == [2, 1, 0]
    assert touches_within(None, ids, AS_OF, 7).tolist() == [0, 0, 0]


@pytest.mark.parametrize("grouped", [True, False])
def test_touches_within_matches_a_plain_count_on_many_touches(grouped):
    # Enough rows for the lookup through runs of equal ids (grouped) and without (shuffled);
    # null ids, null times and ids outside the customers are not counted.
    rng = np.random.default_rng(7)
    n = 20_000
    ids = rng.integers(0, 600, n)
    if grouped:
        ids.sort()
    customer_id = pd.Series([f"c{i}" for i in ids], dtype="string[pyarrow]")
    customer_id[rng.random(n) < 0.01] = pd.NA
    sent = pd.Series(AS_OF - pd.to_timedelta(rng.integers(0, 20 * 86_400, n), unit="s"))
    sent[rng.random(n) < 0.01] = pd.NaT
    touches = pd.DataFrame({"customer_id": customer_id, "sent_at": sent})
    customers = pd.Series([f"c{i}" for i in rng.permutation(700)], dtype="string[pyarrow]")
    window = touches[(sent >= AS_OF - pd.Timedelta(days=7)) & (sent < AS_OF)]
    expected = window["customer_id"].dropna().value_counts()
    got = touches_within(touches, customers, AS_OF, 7)
    assert got.tolist() == expected.reindex(customers, fill_value=0).tolist()
    assert got.sum() > 0


def test_recall_ranks_dormant_and_lost_by_what_a_contact_recovers():
    snapshot = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d", "e"],
            "lifecycle_stage": ["dormant", "lost", "maturity", "lost", "dormant"],
            "best_channel": ["wecom", "sms", "wecom", None, "wecom"],
            "response_rate_wecom": [0.3, 0.1, 0.3, np.nan, 0.3],
            "response_rate_sms": [0.0, 0.05, 0.0, np.nan, 0.0],
        }
    )
    scored = pd.DataFrame(
        {
            "churn_prob": [0.9, 0.8, 0.9, 0.9, 0.05],
            "spend_if_buy_180d": [100.0, 1000.0, 500.0, 900.0, 2000.0],
        }
    )
    out = recall_columns(scored, snapshot)
    recovered = out["expected_recovered_value"]
    assert recovered.iloc[0] == pytest.approx(0.9 * 0.3 * 100)
    assert recovered.iloc[1] == pytest.approx(0.8 * 0.05 * 1000)
    assert recovered.iloc[4] == pytest.approx(0.05 * 0.3 * 2000)  # back anyway: little to win
    assert np.isnan(recovered.iloc[2]) and pd.isna(out["recall_priority"].iloc[2])
    assert recovered.iloc[3] == 0.0  # no channel reached
    assert out["recall_priority"].tolist() == [3, 1, pd.NA, 4, 2]
    assert out["p_reactivation"].iloc[0] == pytest.approx(1 - 0.9 * 0.7)


def test_p_within_scales_the_30_day_probability():
    p = np.array([0.0, 0.3, 1.0])
    assert p_within(p, 30) == pytest.approx(p)
    assert (p_within(p, 7) <= p).all() and p_within(p, 7)[1] == pytest.approx(1 - 0.7 ** (7 / 30))


def test_order_value_falls_back_to_the_lifetime_average():
    snapshot = pd.DataFrame(
        {
            "aov_365d": [50.0, np.nan, 0.0],
            "spend_total": [500.0, 300.0, 0.0],
            "orders_total": [9, 3, 0],
        }
    )
    values = order_value(snapshot)
    assert values[:2].tolist() == [50.0, 100.0] and np.isnan(values[2])


def _customers(n: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    scored = pd.DataFrame(
        {
            "customer_id": [f"C{i:05d}" for i in range(n)],
            "churn_prob": rng.uniform(0, 1, n),
            "p_purchase_30d": rng.uniform(0, 0.5, n),
            "predicted_value_180d": rng.uniform(0, 2000, n),
            "lifecycle_stage": rng.choice(["activation", "maturity", "dormant", "lost"], n),
        }
    )
    snapshot = pd.DataFrame(
        {
            "aov_365d": rng.uniform(50, 400, n),
            "spend_total": rng.uniform(100, 5000, n),
            "orders_total": rng.integers(1, 30, n),
        }
    )
    return scored, snapshot


def test_coupon_columns_respect_budget_eligibility_and_the_control_group():
    scored, snapshot = _customers(4000)
    scored.loc[:99, "churn_prob"] = np.nan  # no score: no coupon
    policy = CouponPolicy(
        tiers=[
            Tier(name="light", value=5.0),
            Tier(name="strong", value=30.0, min_churn_prob=0.5, stages=["dormant", "lost"]),
        ],
        control_share=0.2,
    )
    uplift = np.tile([0.03, 0.10], (len(scored), 1))
    capped = np.zeros(len(scored), bool)
    capped[100:200] = True
    opted = np.zeros(len(scored), bool)
    opted[200:300] = True
    out, totals = coupon_columns(
        scored,
        snapshot,
        uplift,
        policy,
        budget=2_000.0,
        capped=capped,
        opted_out=opted,
        as_of=datetime.date(2026, 7, 1),
        seed=1,
    )
    tiered = out["coupon_tier"].notna()
    assert tiered.sum() > 100
    assert out.loc[tiered, "expected_coupon_cost"].sum() <= 2_000.0 + 1e-9
    assert totals["planned_cost"] == pytest.approx(out["expected_coupon_cost"].sum())
    assert totals["budget_used"] + totals["control_cost_withheld"] == pytest.approx(
        totals["planned_cost"]
    )
    assert not tiered.iloc[:300].any(), "unscored, capped and opted-out customers get nothing"
    strong = out["coupon_tier"] == "strong"
    assert (scored.loc[strong, "churn_prob"] >= 0.5).all()
    assert scored.loc[strong, "lifecycle_stage"].isin(["dormant", "lost"]).all()
    assert (out.loc[tiered, "expected_incremental_value"] > 0).all()
    assert not out.loc[~tiered, "in_control_group"].any()
    for name in ("light", "strong"):
        rows = out["coupon_tier"] == name
        if rows.sum() >= 50:
            assert abs(out.loc[rows, "in_control_group"].mean() - 0.2) < 0.02, name
    assert (out.loc[tiered, "coupon_value"].isin([5.0, 30.0])).all()


def test_opt_out_flags_read_text_booleans_and_numbers():
    from models.scoring import opt_out_flags

    text = pd.Series(["true", "False", "0", "no", "YES", " y ", "1", None, ""], dtype=object)
    assert opt_out_flags(text).tolist() == [
        True,
        False,
        False,
        False,
        True,
        True,
        True,
        False,
        False,
    ]
    assert opt_out_flags(pd.Series([True, False, None], dtype="boolean")).tolist() == [
        True,
        False,
        False,
    ]
    assert opt_out_flags(pd.Series([0, 1, np.nan])).tolist() == [False, True, False]


def test_a_customer_refunded_beyond_purchases_has_no_order_value():
    snapshot = pd.DataFrame(
        {"aov_365d": [np.nan, -20.0], "spend_total": [-50.0, -20.0], "orders_total": [2, 1]}
    )
    assert np.isnan(order_value(snapshot)).all()


def test_baseline_columns_follow_the_customers_and_leave_the_unknown_empty():
    rng = np.random.default_rng(3)
    known = [f"c{i}" for i in range(0, 3_000, 3)]
    scores = pd.DataFrame(
        {"p_alive": rng.random(len(known)), "expected_purchases_180d": rng.random(len(known))},
        index=pd.Index(known, name="customer_id"),
    )
    ids = pd.Series([f"c{i}" for i in rng.permutation(3_000)], index=np.arange(3_000) + 10)
    got = baseline_columns(scores, ids)
    expected = scores.reindex(ids.to_numpy())
    assert list(got.index) == list(ids.index)
    np.testing.assert_array_equal(got["p_alive_bgnbd"], expected["p_alive"])
    np.testing.assert_array_equal(
        got["expected_purchases_180d_bgnbd"], expected["expected_purchases_180d"]
    )
    assert got["p_alive_bgnbd"].isna().sum() == 2_000
    nobody = baseline_columns(scores.iloc[:0], ids)
    assert nobody.isna().all().all() and len(nobody) == len(ids)


def test_insert_after_places_columns_without_copying_or_changing_the_frame():
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"], "c": [3, 4]}, index=[5, 6])
    extra = pd.DataFrame({"n": [0.5, 0.25], "m": pd.array(["p", None], dtype="string")}, [5, 6])
    out = insert_after(frame, "a", extra)
    assert list(out.columns) == ["a", "n", "m", "b", "c"]
    assert list(frame.columns) == ["a", "b", "c"]  # the frame given is left as it was
    assert np.shares_memory(out["a"].to_numpy(), frame["a"].to_numpy())
    pd.testing.assert_series_equal(out["m"], extra["m"])
    assert list(insert_after(frame, "c", extra).columns)[-2:] == ["n", "m"]
    with pytest.raises(ValueError, match="index"):
        insert_after(frame, "a", extra.reset_index(drop=True))
