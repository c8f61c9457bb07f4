"""Golden tables for ``build_features``: tiny inputs, expected values worked out by hand.

Every case uses the cutoff T = 2026-01-01 00:00 Asia/Shanghai; "d10" below means 10 days before T.
"""

from __future__ import annotations

import datetime

import numpy as np
import pandas as pd
import pytest

from features import LifecycleThresholds, build_features
from features.families import FAMILIES, feature_columns, kinds

TZ = "Asia/Shanghai"
AS_OF = "2026-01-01"
T = pd.Timestamp(AS_OF, tz=TZ)
TEXT = pd.StringDtype("pyarrow")


def at(days_before: float) -> pd.Timestamp:
    return T - pd.Timedelta(days=days_before)


def tx_frame(rows, *, category: bool = False, quantity: bool = False) -> pd.DataFrame:
    """rows: (customer_id, order_id, days_before_T, amount[, category[, quantity]])."""
    cols = ["customer_id", "order_id", "d", "amount", "category", "quantity"]
    frame = pd.DataFrame([tuple(r) + (None,) * (6 - len(r)) for r in rows], columns=cols)
    frame["ordered_at"] = [at(d) for d in frame.pop("d")]
    frame["ordered_at"] = frame["ordered_at"].astype(f"datetime64[ns, {TZ}]")
    frame["amount"] = frame["amount"].astype("float64")
    frame["quantity"] = pd.array(frame["quantity"], dtype="Int64")
    for col in ("customer_id", "order_id", "category"):
        frame[col] = frame[col].astype(TEXT)
    keep = ["customer_id", "order_id", "ordered_at", "amount"]
    keep += ["category"] if category else []
    keep += ["quantity"] if quantity else []
    return frame[keep]


def touch_frame(rows) -> pd.DataFrame:
    """rows: (customer_id, channel, sent days_before_T, responded days_before_T or None)."""
    frame = pd.DataFrame(rows, columns=["customer_id", "channel", "s", "r"])
    frame["sent_at"] = pd.Series([at(d) for d in frame.pop("s")], dtype=f"datetime64[ns, {TZ}]")
    frame["responded_at"] = pd.Series(
        [pd.NaT if pd.isna(r) else at(r) for r in frame.pop("r")], dtype=f"datetime64[ns, {TZ}]"
    )
    for col in ("customer_id", "channel"):
        frame[col] = frame[col].astype(TEXT)
    return frame


def expect(columns: dict[str, list], ints: tuple[str, ...] = ()) -> pd.DataFrame:
    frame = pd.DataFrame(columns)
    frame["customer_id"] = frame["customer_id"].astype(TEXT)
    for col in frame.columns:
        if col in ints:
            frame[col] = frame[col].astype("Int64")
        elif col != "customer_id" and frame[col].dtype != object:
            frame[col] = frame[col].astype("float64")
    return frame


def check(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    got = got[list(expected.columns)].reset_index(drop=True)
    for col in expected.columns:
        if expected[col].dtype == object:
            got[col] = got[col].astype(object).where(got[col].notna(), None)
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-9, atol=1e-9)


ONE_ORDER = [("A", "O1", 10, 100.0)]
RFM_COLS = (
    "days_since_last_order",
    "days_since_first_order",
    "orders_30d",
    "orders_365d",
    "orders_total",
    "spend_30d",
    "spend_total",
    "aov_365d",
    "spend_trend_90d",
    "refund_share_365d",
)
RFM_INTS = ("orders_30d", "orders_365d", "orders_total")


class TestRFM:
    @pytest.mark.parametrize(
        ("rows", "values"),
        [
            (ONE_ORDER, [10, 10, 1, 1, 1, 100, 100, 100, 100, 0.0]),
            (ONE_ORDER + [("A", "O2", 0, 50.0)], [10, 10, 1, 1, 1, 100, 100, 100, 100, 0.0]),
            (ONE_ORDER + [("A", "O2", -4, 50.0)], [10, 10, 1, 1, 1, 100, 100, 100, 100, 0.0]),
            (ONE_ORDER + [("A", "O1", 7, -40.0)], [10, 10, 1, 1, 1, 60, 60, 60, 60, 0.4]),
            (ONE_ORDER + [("A", "O1", -1, -40.0)], [10, 10, 1, 1, 1, 100, 100, 100, 100, 0.0]),
            (
                [("A", "O1", 10 - 8 / 24, 100.0), ("A", "O2", 10 - 20 / 24, 50.0)],
                [10 - 20 / 24, 10 - 8 / 24, 2, 2, 2, 150, 150, 75, 150, 0.0],
            ),
            (
                [("A", "O1", 10, 60.0), ("A", "O1", 10, 40.0)],
                [10, 10, 1, 1, 1, 100, 100, 100, 100, 0.0],
            ),
            (
                [("A", "O1", 10, 10.0), ("A", "O2", 61, 20.0), ("A", "O3", 153, 40.0)]
                + [("A", "O4", 579, 80.0)],
                [10, 579, 1, 3, 4, 10, 150, 70 / 3, -10, 0.0],
            ),
        ],
        ids=[
            "one-order",
            "order-exactly-at-cutoff-excluded",
            "order-after-cutoff-excluded",
            "refund-line",
            "refund-after-cutoff-excluded",
            "same-day-orders",
            "multi-line-order",
            "windows-30-90-365",
        ],
    )
    def test_rfm_columns(self, rows, values):
        got = build_features(tx_frame(rows), as_of=AS_OF)
        expected = expect(
            {"customer_id": ["A"], **{c: [v] for c, v in zip(RFM_COLS, values, strict=True)}},
            RFM_INTS,
        )
        check(got, expected)

    def test_scores_and_segments(self):
        # A..E: 1..5 orders of 100 each; last order 50, 40, 30, 20, 10 days before T.
        rows = []
        for i, cid in enumerate("ABCDE"):
            last = 50 - 10 * i
            rows += [(cid, f"{cid}{k}", last + k, 100.0) for k in range(i + 1)]
        customers = pd.DataFrame({"customer_id": ["F"], "joined_at": [at(3)]}).astype(
            {"customer_id": TEXT, "joined_at": f"datetime64[ns, {TZ}]"}
        )
        got = build_features(tx_frame(rows), customers=customers, as_of=AS_OF)
        scores = [1, 2, 3, 4, 5, None]
        expected = expect(
            {
                "customer_id": list("ABCDEF"),
                "r_score": scores,
                "f_score": scores,
                "m_score": scores,
                "rfm_segment": [
                    "dormant",
                    "dormant",
                    "new",
                    "important_value",
                    "important_value",
                    "no_purchase",
                ],
            },
            ("r_score", "f_score", "m_score"),
        )
        check(got, expected)

    def test_tied_scores_share_the_average_rank(self):
        # orders_365d 1, 1, 2, 3: average ranks 1.5, 1.5, 3, 4 of n=4 -> floor(5(a-1)/4)+1.
        rows = [("A", "A1", 5, 10.0), ("B", "B1", 5, 10.0)]
        rows += [("C", "C1", 5, 10.0), ("C", "C2", 6, 10.0)]
        rows += [("D", "D1", 5, 10.0), ("D", "D2", 6, 10.0), ("D", "D3", 7, 10.0)]
        got = build_features(tx_frame(rows), as_of=AS_OF)
        expected = expect({"customer_id": list("ABCD"), "f_score": [1, 1, 3, 4]}, ("f_score",))
        check(got, expected)

    def test_as_of_date_string_and_timestamp_agree(self):
        tx = tx_frame(ONE_ORDER + [("A", "O2", 0, 50.0)])
        by_date = build_features(tx, as_of=datetime.date(2026, 1, 1))
        pd.testing.assert_frame_equal(by_date, build_features(tx, as_of=AS_OF))
        pd.testing.assert_frame_equal(by_date, build_features(tx, as_of=T))
        assert (by_date["as_of"] == T).all()
        assert list(by_date.columns[:2]) == ["customer_id", "as_of"]


class TestIntervals:
    def test_gaps_typical_gap_and_lifecycle(self):
        rows = [("A", f"A{d}", d, 10.0) for d in (40, 30, 25, 10)]  # gaps 10, 5, 15
        rows += [("B", "B1", 50, 10.0), ("B", "B2", 30, 10.0)]  # gap 20
        rows += [("C", "C1", 5, 10.0), ("D", "D1", 40, 10.0), ("E", "E1", 100, 10.0)]
        customers = pd.DataFrame({"customer_id": ["F", "G"], "joined_at": [at(3), at(-3)]}).astype(
            {"customer_id": TEXT, "joined_at": f"datetime64[ns, {TZ}]"}
        )
        got = build_features(tx_frame(rows), customers=customers, as_of=AS_OF)
        # population median gap = median(10, 20) = 15; typical = (g*median + 3*15)/(g+3)
        nan = np.nan
        expected = expect(
            {
                "customer_id": list("ABCDEF"),
                "gap_mean_days": [10, 20, nan, nan, nan, nan],
                "gap_median_days": [10, 20, nan, nan, nan, nan],
                "gap_std_days": [5, nan, nan, nan, nan, nan],
                "gap_cv": [0.5, nan, nan, nan, nan, nan],
                "last_gap_days": [15, 20, nan, nan, nan, nan],
                "typical_gap_days": [12.5, 16.25, 15, 15, 15, nan],
                "overdue_ratio": [0.8, 30 / 16.25, 5 / 15, 40 / 15, 100 / 15, nan],
                "tenure_days": [40, 50, 5, 40, 100, 3],
                "lifecycle_stage": [
                    "maturity",
                    "activation",
                    "activation",
                    "dormant",
                    "lost",
                    "acquisition",
                ],
            }
        )
        check(got, expected)

    def test_lifecycle_thresholds_are_configurable(self):
        rows = [("D", "D1", 90, 10.0), ("B", "B1", 50, 10.0), ("B", "B2", 30, 10.0)]
        strict = LifecycleThresholds(dormant_overdue_ratio=10, lost_overdue_ratio=20)
        got = build_features(tx_frame(rows), as_of=AS_OF, lifecycle=strict)
        # pop gap 20; D: 90/20 = 4.5 (< 10) -> activation; B: 30/20 = 1.5 -> activation
        check(got, expect({"customer_id": ["B", "D"], "lifecycle_stage": ["activation"] * 2}))
        got = build_features(tx_frame(rows), as_of=AS_OF, lifecycle=LifecycleThresholds())
        check(got, expect({"customer_id": ["B", "D"], "lifecycle_stage": ["activation", "lost"]}))


class TestCategoryBreadth:
    def test_breadth_entropy_and_new_categories(self):
        rows = [
            ("A", "O1", 10, 30.0, "diapers"),
            ("A", "O1", 10, 20.0, "wipes"),
            ("A", "O2", 61, 30.0, "diapers"),
            ("A", "O3", 214, 90.0, "formula"),
            ("A", "O4", 579, 20.0, "wipes"),
            ("A", "O3", 7, -90.0, "formula"),  # refund line: not a purchase
            ("A", "O5", 0, 20.0, "toys"),  # at T: excluded
            ("B", "O6", 5, 20.0, None),  # no category
        ]
        got = build_features(tx_frame(rows, category=True), as_of=AS_OF)
        nan = np.nan
        expected = expect(
            {
                "customer_id": ["A", "B"],
                "categories_90d": [2, 0],
                "categories_365d": [3, 0],
                "new_categories_90d": [1, 0],
                "category_entropy_365d": [1.5 * np.log(2), nan],
                "top_category_share_365d": [0.5, nan],
            },
            ("categories_90d", "categories_365d", "new_categories_90d"),
        )
        check(got, expected)


class TestReplenishment:
    def test_estimated_inventory(self):
        rows = [
            ("A", "A1", 30, 10.0, "diapers", 2),
            ("A", "A2", 20, 10.0, "diapers", 1),  # own cycle 10 d / 2 packs = 5 -> d15 overdue
            ("A", "A3", 4, 10.0, "formula", 1),  # population cycle 10 -> due in 6 days
            ("B", "B1", 92, 10.0, "formula", 3),
            ("B", "B2", 62, 10.0, "formula", 2),  # cycle 30 / 3 = 10; 2 packs -> d42 overdue
            ("C", "C1", 31, 10.0, "wipes", None),
            ("C", "C2", 11, 10.0, "wipes", None),  # null quantity = 1 pack: due in 9 days
            ("C", "C3", 579, 10.0, "diapers", 1),  # last bought > 365 d ago: ignored
        ]
        got = build_features(tx_frame(rows, category=True, quantity=True), as_of=AS_OF)
        expected = expect(
            {
                "customer_id": ["A", "B", "C"],
                "categories_due_7d": [1, 0, 0],
                "categories_overdue": [1, 1, 0],
                "days_to_next_due": [-15, -42, 9],
            },
            ("categories_due_7d", "categories_overdue"),
        )
        check(got, expected)


class TestChannelResponse:
    def test_counts_smoothed_rates_and_best_channel(self):
        touches = touch_frame(
            [
                ("A", "wecom", 2, 1),
                ("A", "wecom", 12, None),
                ("A", "sms", 6, -1),  # response after T: not a response
                ("A", "sms", 245, 244),  # outside 180 d
                ("B", "wecom", 17, 16),
                ("B", "sms", 22, 21),
                ("C", "sms", 2 / 24, None),
                ("C", "group", -2, None),  # sent after T: group never seen
            ]
        )
        tx = tx_frame([("A", "O1", 10, 100.0)])
        got = build_features(tx, touches, as_of=AS_OF)
        # group is a contract channel with no touch before T: zero counts, no rate.
        assert got["touches_180d_group"].tolist() == [0, 0, 0]
        assert got["response_rate_group"].isna().all()
        assert got.columns[2:].tolist() == feature_columns()
        # wecom prior: rates 1/2, 1/1 -> mean .75, var .0625, a+b = 2 -> Beta(1.5, .5)
        # sms prior: rates 0, 1, 0 -> a+b = 0, degenerate -> pooled (1+1)/(3+2)=.4, Beta(.8, 1.2)
        # overall prior: rates 1/3, 1, 0 -> Beta(4/21, 5/21)
        expected = expect(
            {
                "customer_id": ["A", "B", "C"],
                "touches_7d": [2, 0, 1],
                "touches_30d": [3, 2, 1],
                "touches_180d": [3, 2, 1],
                "responses_180d": [1, 2, 0],
                "touches_180d_wecom": [2, 1, 0],
                "responses_180d_wecom": [1, 1, 0],
                "response_rate_wecom": [2.5 / 4, 2.5 / 3, 0.75],
                "touches_180d_sms": [1, 1, 1],
                "responses_180d_sms": [0, 1, 0],
                "response_rate_sms": [0.8 / 3, 1.8 / 3, 0.8 / 3],
                "response_rate_180d": [25 / 72, 46 / 51, 2 / 15],
                "days_since_last_response": [1, 16, np.nan],
                "best_channel": ["wecom", "wecom", "sms"],
            },
            (
                "touches_7d",
                "touches_30d",
                "touches_180d",
                "responses_180d",
                "touches_180d_wecom",
                "responses_180d_wecom",
                "touches_180d_sms",
                "responses_180d_sms",
            ),
        )
        check(got, expected)


class TestInputs:
    def test_transactions_only_gives_null_dependent_columns(self):
        got = build_features(tx_frame(ONE_ORDER), as_of=AS_OF)
        dependent = [
            "categories_90d",
            "categories_365d",
            "category_entropy_365d",
            "new_categories_90d",
            "top_category_share_365d",
            "touches_7d",
            "touches_30d",
            "touches_180d",
            "responses_180d",
            "response_rate_180d",
            "days_since_last_response",
            "best_channel",
            "discount_order_share_365d",
            "coupon_touches_180d",
            "coupon_response_rate_180d",
            "categories_due_7d",
            "categories_overdue",
            "days_to_next_due",
            "member_tier",
        ]
        assert got[dependent].isna().all().all()
        assert got["orders_total"].tolist() == [1]
        assert got.columns[2:].tolist() == feature_columns()
        assert got[[c for c in got if c.startswith("response_rate_")]].isna().all().all()

    def test_known_customers_and_attributes(self):
        tx = tx_frame([("A", "O1", 10, 100.0), ("E", "O2", 5, 10.0)])
        touches = touch_frame([("D", "sms", 3, None), ("H", "sms", -1, None)])
        customers = pd.DataFrame(
            {
                "customer_id": ["B", "C", "D", "E", "G"],
                "joined_at": [at(3), at(-3), None, at(-10), None],
                "member_tier": ["gold", "normal", None, "silver", "gold"],
                "city_tier": [1, 2, 3, 4, 5],
            }
        ).astype({"customer_id": TEXT, "joined_at": f"datetime64[ns, {TZ}]"})
        got = build_features(tx, touches, customers, as_of=AS_OF)
        # A: order; B: joined before T; C: joins after T (unknown); D: null joined_at + touch;
        # E: joins after T but ordered before; G: null joined_at, no activity; H: touch after T.
        expected = expect(
            {
                "customer_id": ["A", "B", "D", "E"],
                "member_tier": [None, "gold", None, "silver"],
                "tenure_days": [10, 3, np.nan, 5],
                "lifecycle_stage": ["activation", "acquisition", "acquisition", "activation"],
            }
        )
        check(got, expected)
        assert got["city_tier"].tolist()[1:] == [1, 3, 4]
        assert np.isnan(got["city_tier"].tolist()[0])

    def test_discount_share(self):
        tx = tx_frame([("A", "O1", 10, 100.0), ("A", "O2", 20, 50.0), ("A", "O3", 400, 50.0)])
        tx["discount"] = [10.0, 0.0, 5.0]
        got = build_features(tx, as_of=AS_OF)
        check(got, expect({"customer_id": ["A"], "discount_order_share_365d": [0.5]}))


class TestRegistry:
    def test_columns_and_types_follow_the_families(self):
        tx = tx_frame([("A", "O1", 10, 100.0)])
        touches = touch_frame([("A", "WeCom", 2, 1), ("A", "Live Room", 3, None)])
        customers = pd.DataFrame(
            {"customer_id": ["A"], "city_tier": [2], "member_tier": ["gold"]}
        ).astype({"customer_id": TEXT})
        got = build_features(tx, touches, customers, as_of=AS_OF)
        # A channel outside the contract follows the contract channels; attributes come last.
        assert got.columns.tolist() == [
            "customer_id",
            "as_of",
            *feature_columns(["live_room"]),
            "city_tier",
        ]
        dtypes = {"int": "Int64", "float": "float64", "text": "string"}
        for column, kind in kinds(["live_room"]).items():
            assert str(got[column].dtype) == dtypes[kind], column
        assert got["member_tier"].tolist() == ["gold"]

    def test_family_names_are_unique_and_views_are_named_for_feast(self):
        names = [c for family in FAMILIES for c, _ in family.columns]
        assert len(names) == len(set(names))
        assert [f.view for f in FAMILIES][:2] == ["customer_rfm", "customer_intervals"]
