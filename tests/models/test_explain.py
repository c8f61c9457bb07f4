"""Tests of models.explain: reason codes from a real LightGBM churn model on synthetic customers.

The model is trained at one cutoff and explains the snapshot of a later one, as in the daily
scoring. Golden tables check the words of each driver against values worked out by hand.
"""

from __future__ import annotations

import re

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from features import build_features, make_labels
from features.families import FAMILIES, feature_columns
from features.synthetic import generate
from models.estimators import TrainConfig, canonical, feature_frame, feature_matrix
from models.explain import (
    DRIVERS,
    LOWERS_RISK,
    OTHER,
    describe,
    driver_of,
    reasons,
    top_drivers,
)
from models.treeshap import lightgbm_matrix

TRAIN_AT = "2025-12-01"
SCORE_AT = "2026-03-01"
TEXT = pd.StringDtype("pyarrow")
FAMILY_COLUMNS = feature_columns()
# A channel outside the contract: its columns are touches_180d_line_app etc.
EXTRA = "LINE app"

# Words that only one driver uses, to tell which driver a reason came from.
CHANNEL_NOUNS = {
    "wecom": "WeCom messages?",
    "group": "WeChat group messages?",
    "moments": "Moments posts?",
    "sms": "SMS messages?",
    "mini_program": "mini-program messages?",
    "official_account": "official account posts?",
    "app_push": "app push(es)?",
    "email": "emails?",
    "line_app": "line app messages?",
}
PATTERNS = {
    "recency": r"^(last order|no order yet)",
    "frequency": r"(orders? in the|no orders yet|first order|no order history)",
    "spend": r"(spent|spend|refund|average basket)",
    "category_breadth": r"(bought|one category|new categor|category data)",
    "response": r"((to|of) [\d,]+ messages? in|^no messages in|most responsive|^no message hist)",
    "contact_fatigue": r"(contacted|no contact history)",
    "coupons": r"coupon",
    "replenishment": r"restock",
    "lifecycle": r"^(member for|member tier|lifecycle stage|RFM segment|no join date)",
    OTHER: r"^(acquisition source|city tier)",
    **{
        f"channel_{c}": rf"(of|to|no) [\d,]* ?{noun}( history)? (in|on)"
        for c, noun in CHANNEL_NOUNS.items()
    },
}
UNREADABLE = re.compile(r"(\bnan\b|\bnone\b|\bnull\b|\binf\b|<na>|_)", re.IGNORECASE)


@pytest.fixture(scope="module")
def data():
    d = generate(2_000, seed=7)
    touches = d.touches.copy()
    extra = touches["channel"].eq("sms") & (np.arange(len(touches)) % 4 == 0)
    touches.loc[extra, "channel"] = EXTRA
    return d.transactions, touches, d.customers


@pytest.fixture(scope="module")
def booster(data) -> lgb.Booster:
    transactions, touches, customers = data
    features = build_features(transactions, touches, customers, as_of=TRAIN_AT)
    labels = make_labels(transactions, cutoff=TRAIN_AT, horizon_days=90)
    rows = features[features["orders_total"] > 0].merge(
        labels[["customer_id", "churned"]], on="customer_id"
    )
    x = feature_frame(rows.drop(columns=["churned"]))
    params = TrainConfig(num_threads=2).params("binary")
    train = lgb.Dataset(x, rows["churned"].astype(float), params={"verbosity": -1})
    return canonical(lgb.train(params, train, num_boost_round=50))


@pytest.fixture(scope="module")
def frame(data) -> pd.DataFrame:
    """The scoring snapshot of every known customer, with a non-default index."""
    snapshot = build_features(*data, as_of=SCORE_AT)
    return snapshot.set_index(snapshot.index * 10 + 3)


@pytest.fixture(scope="module")
def explained(booster: lgb.Booster, frame: pd.DataFrame) -> pd.DataFrame:
    return reasons(booster, frame)


@pytest.fixture(scope="module")
def ranked(booster: lgb.Booster, frame: pd.DataFrame) -> pd.DataFrame:
    return top_drivers(booster, frame)


def driver_sums(booster: lgb.Booster, frame: pd.DataFrame) -> pd.DataFrame:
    """The oracle: pred_contrib summed per driver with pandas, one column per driver."""
    names = booster.feature_name()
    contrib = booster.predict(feature_frame(frame, names), pred_contrib=True)
    per_feature = pd.DataFrame(contrib[:, :-1], columns=names, index=frame.index)
    return per_feature.T.groupby([driver_of(n) for n in names], sort=False).sum().T


# ---------------------------------------------------------------------------------------------
# The driver table
# ---------------------------------------------------------------------------------------------


class TestDrivers:
    def test_every_family_column_in_exactly_one_driver(self) -> None:
        for family in FAMILIES:
            for column, _ in family.columns:
                owners = [d.name for d in DRIVERS if column in d.columns]
                assert len(owners) == 1, (column, owners)
                assert driver_of(column) == owners[0]

    def test_drivers_name_only_family_columns(self) -> None:
        named = [c for d in DRIVERS for c in d.columns]
        assert len(named) == len(set(named))
        assert set(named) == set(FAMILY_COLUMNS)

    def test_names_are_unique(self) -> None:
        names = [d.name for d in DRIVERS]
        assert len(names) == len(set(names))
        assert names[-1] == OTHER

    @pytest.mark.parametrize(
        ("column", "driver"),
        [
            ("touches_180d_line_app", "channel_line_app"),
            ("responses_180d_line", "channel_line"),
            ("response_rate_line", "channel_line"),
            ("response_rate_wecom", "channel_wecom"),
            ("response_rate_180d", "response"),
            ("touches_180d", "response"),
            ("coupon_response_rate_180d", "coupons"),
            ("city_tier", OTHER),
            ("acquisition_source", OTHER),
        ],
        ids=lambda v: v,
    )
    def test_driver_of_other_columns(self, column: str, driver: str) -> None:
        assert driver_of(column) == driver


# ---------------------------------------------------------------------------------------------
# Reasons of the real model
# ---------------------------------------------------------------------------------------------


class TestReasons:
    def test_the_model_sees_the_extra_channel_and_attributes(self, booster: lgb.Booster) -> None:
        names = booster.feature_name()
        assert "touches_180d_line_app" in names
        assert {"city_tier", "acquisition_source"} <= set(names)

    def test_every_row_gets_three_reasons(
        self, explained: pd.DataFrame, frame: pd.DataFrame
    ) -> None:
        assert list(explained.columns) == ["reason_1", "reason_2", "reason_3"]
        assert explained.index.equals(frame.index)
        assert (explained.dtypes == TEXT).all()
        assert explained.notna().all().all()
        assert (explained.map(len) > 5).all().all()

    def test_reasons_are_readable(self, explained: pd.DataFrame, booster: lgb.Booster) -> None:
        names = set(FAMILY_COLUMNS) | set(booster.feature_name())
        for text in pd.unique(explained.to_numpy().ravel()):
            assert not UNREADABLE.search(text), text
            assert not any(name in text for name in names), text

    def test_deterministic_and_independent_of_chunks(
        self, booster: lgb.Booster, frame: pd.DataFrame, explained: pd.DataFrame
    ) -> None:
        pd.testing.assert_frame_equal(reasons(booster, frame), explained)
        pd.testing.assert_frame_equal(reasons(booster, frame, chunk_rows=333), explained)

    def test_the_callers_input_matrix_gives_the_same_reasons(
        self, booster: lgb.Booster, frame: pd.DataFrame, explained: pd.DataFrame
    ) -> None:
        matrix = lightgbm_matrix(booster, feature_frame(frame, booster.feature_name()))
        got = reasons(booster, frame, matrix=matrix, chunk_rows=333)
        pd.testing.assert_frame_equal(got, explained)
        with pytest.raises(ValueError, match="shape"):
            reasons(booster, frame, matrix=matrix[:-1])

    def test_rows_are_explained_where_they_are(
        self, booster: lgb.Booster, frame: pd.DataFrame, explained: pd.DataFrame
    ) -> None:
        """``rows``: some rows of the frame, in any order, as if they were a frame of their own."""
        rows = np.random.default_rng(3).permutation(len(frame))[: len(frame) // 2]
        pd.testing.assert_frame_equal(reasons(booster, frame, rows=rows), explained.iloc[rows])
        matrix = feature_matrix(frame, booster, booster.feature_name(), rows)
        got = reasons(booster, frame, rows=rows, matrix=matrix, chunk_rows=333)
        pd.testing.assert_frame_equal(got, explained.iloc[rows])
        with pytest.raises(ValueError, match="integer positions"):  # a mask is not positions
            reasons(booster, frame, rows=np.ones(len(frame), dtype=bool))

    def test_ranking_matches_summed_contributions(
        self, booster: lgb.Booster, frame: pd.DataFrame, ranked: pd.DataFrame
    ) -> None:
        rows = frame.index[:: max(1, len(frame) // 40)]
        sums = driver_sums(booster, frame).loc[rows]
        for row in rows:
            total = sums.loc[row]
            positive = total[total > 0].sort_values(ascending=False, kind="stable")
            negative = total[total < 0].sort_values(kind="stable")
            first, then = (negative, positive) if total.sum() < 0 else (positive, negative)
            expected = list(pd.concat([first, then]).index[:3])
            got = ranked.loc[row, ["driver_1", "driver_2", "driver_3"]].tolist()
            assert got == expected, row
            np.testing.assert_allclose(
                ranked.loc[row, ["contribution_1", "contribution_2", "contribution_3"]].to_numpy(
                    dtype=float
                ),
                total[expected].to_numpy(),
                rtol=1e-9,
                atol=1e-12,
            )

    def test_words_come_from_the_facet_pushing_hardest(
        self,
        booster: lgb.Booster,
        frame: pd.DataFrame,
        explained: pd.DataFrame,
        ranked: pd.DataFrame,
    ) -> None:
        names = booster.feature_name()
        rows = frame.index[:: max(1, len(frame) // 60)]
        x = feature_frame(frame, names)
        contrib = pd.DataFrame(
            booster.predict(x, pred_contrib=True)[:, :-1], columns=names, index=frame.index
        ).loc[rows]
        facets = {d.name: [f.columns for f in d.facets] for d in DRIVERS}
        checked = set()
        for row in rows:
            for slot in (1, 2, 3):
                driver = ranked.loc[row, f"driver_{slot}"]
                sign = np.sign(ranked.loc[row, f"contribution_{slot}"])
                mine = [n for n in names if driver_of(n) == driver]
                if driver == OTHER:
                    push = {n: sign * contrib.loc[row, n] for n in mine}
                    strongest = max(push, key=lambda n: push[n])  # first of equals
                    expected = strongest.replace("_", " ") + ": "
                    assert explained.loc[row, f"reason_{slot}"].startswith(expected)
                    continue
                groups = facets.get(driver, [tuple(mine)])
                push = [
                    sign * contrib.loc[row, [c for c in g if c in mine]].sum()
                    if any(c in mine for c in g)
                    else -np.inf
                    for g in groups
                ]
                facet = int(np.argmax(push))
                expected = describe(frame.loc[[row]], driver, facet=facet).iloc[0]
                expected += LOWERS_RISK if sign < 0 else ""
                assert explained.loc[row, f"reason_{slot}"] == expected, (row, driver, facet)
                checked.add((driver, facet))
        assert any(facet > 0 for _, facet in checked)  # not only first facets

    def test_each_reason_speaks_for_its_driver(
        self, explained: pd.DataFrame, ranked: pd.DataFrame
    ) -> None:
        for slot in (1, 2, 3):
            for driver, text in zip(
                ranked[f"driver_{slot}"], explained[f"reason_{slot}"], strict=True
            ):
                assert re.search(PATTERNS[driver], text), (driver, text)

    def test_direction_is_spelled_out(self, explained: pd.DataFrame, ranked: pd.DataFrame) -> None:
        lowers = 0
        for slot in (1, 2, 3):
            negative = ranked[f"contribution_{slot}"] < 0
            suffixed = explained[f"reason_{slot}"].str.endswith(LOWERS_RISK)
            assert (negative == suffixed).all()
            lowers += int(negative.sum())
        assert lowers > 0  # the data has customers with fewer than 3 risk-raising drivers
        # A lowering reason never comes before a raising one.
        signs = ranked[["contribution_1", "contribution_2", "contribution_3"]] > 0
        assert not (~signs["contribution_1"] & signs["contribution_2"]).any()
        assert not (~signs["contribution_2"] & signs["contribution_3"]).any()

    def test_categories_follow_the_model(
        self, booster: lgb.Booster, frame: pd.DataFrame, ranked: pd.DataFrame
    ) -> None:
        used = dict(zip(booster.feature_name(), booster.feature_importance(), strict=True))
        assert used["rfm_segment"] + used["lifecycle_stage"] + used["acquisition_source"] > 0
        # A few segments in reverse order: the frame's own categories differ from the model's.
        subset = frame[frame["rfm_segment"].isin(["dormant", "new", "important_retain"])]
        subset = subset.iloc[::-1]
        got = top_drivers(booster, subset)
        pd.testing.assert_frame_equal(got, ranked.loc[subset.index])

    def test_text_features_must_match_the_model(
        self, booster: lgb.Booster, frame: pd.DataFrame
    ) -> None:
        broken = frame.head(5).assign(member_tier=1.0)
        with pytest.raises(ValueError, match="text features"):
            reasons(booster, broken)

    def test_missing_feature(self, booster: lgb.Booster, frame: pd.DataFrame) -> None:
        with pytest.raises(ValueError, match="overdue_ratio"):
            reasons(booster, frame.drop(columns=["overdue_ratio"]))

    def test_top_and_empty_frame(self, booster: lgb.Booster, frame: pd.DataFrame) -> None:
        five = reasons(booster, frame.head(20), top=5)
        assert list(five.columns) == [f"reason_{k}" for k in range(1, 6)]
        assert five.notna().all().all()
        empty = reasons(booster, frame.head(0))
        assert list(empty.columns) == ["reason_1", "reason_2", "reason_3"]
        assert len(empty) == 0

    def test_a_model_without_splits_has_nothing_to_say(self, frame: pd.DataFrame) -> None:
        x = feature_frame(frame.drop(columns=["customer_id", "as_of"]))
        params = TrainConfig(num_threads=1, min_data_in_leaf=10**6).params("binary")
        y = (np.arange(len(x)) % 2).astype(float)
        flat = lgb.train(params, lgb.Dataset(x, y, params={"verbosity": -1}), 3)
        out = reasons(flat, frame.head(50))
        assert out.isna().all().all()
        assert top_drivers(flat, frame.head(50))["driver_1"].isna().all()


class TestHandMadeRows:
    def test_long_overdue_customer(self, booster: lgb.Booster, frame: pd.DataFrame) -> None:
        row = frame[frame["orders_total"] >= 5].head(1).copy()
        row["days_since_last_order"] = 120.4
        row["typical_gap_days"] = 15.2
        row["overdue_ratio"] = 120.4 / 15.2
        row["r_score"] = pd.array([1], dtype="Int64")
        out = reasons(booster, row)
        assert (
            out["reason_1"].iloc[0]
            == "last order 120 days ago, 7.9\u00d7 their usual gap of 15 days"
        )

    def test_null_features_read_well(self, booster: lgb.Booster, frame: pd.DataFrame) -> None:
        row = frame.head(3).copy()
        for column in booster.feature_name():
            if row[column].dtype == TEXT or row[column].dtype == object:
                row[column] = pd.array([None] * 3, dtype=TEXT)
            elif str(row[column].dtype) == "Int64":
                row[column] = pd.array([None] * 3, dtype="Int64")
            else:
                row[column] = np.nan
        out = reasons(booster, row)
        assert out.notna().all().all()
        for text in out.to_numpy().ravel():
            assert not UNREADABLE.search(text), text

    @pytest.mark.parametrize(
        ("driver", "facet"),
        [(d.name, i) for d in DRIVERS for i in range(len(d.facets))] + [("channel_line_app", 0)],
        ids=str,
    )
    def test_every_facet_reads_well_null_or_not(
        self, frame: pd.DataFrame, driver: str, facet: int
    ) -> None:
        nulls = pd.DataFrame(index=range(2))  # every column missing reads as null
        for data in (frame, nulls):
            words = describe(data, driver, facet=facet)
            assert words.notna().all()
            assert words.index.equals(data.index)
            for text in pd.unique(words):
                assert text and not UNREADABLE.search(text), text
                assert re.search(PATTERNS[driver], text), text


# ---------------------------------------------------------------------------------------------
# Golden words: values worked out by hand
# ---------------------------------------------------------------------------------------------


def words(driver: str, facet: int = 0, **columns: list) -> list[str]:
    return describe(pd.DataFrame(columns), driver, facet=facet).tolist()


NAN = float("nan")


class TestGoldenWords:
    @pytest.mark.parametrize(
        ("days", "gap", "expected"),
        [
            (47.2, 20.4, "last order 47 days ago, 2.3\u00d7 their usual gap of 20 days"),
            (47.0, NAN, "last order 47 days ago"),
            (NAN, 20.0, "no order yet"),
            (3.0, 20.0, "last order 3 days ago, within their usual gap of 20 days"),
            (20.5, 20.0, "last order 21 days ago, about their usual gap of 20 days"),
            (0.2, 10.0, "last order less than a day ago, within their usual gap of 10 days"),
            (1.4, 1.0, "last order 1 day ago, 1.4\u00d7 their usual gap of 1 day"),
            (250.0, 20.0, "last order 250 days ago, 13\u00d7 their usual gap of 20 days"),
            (1500.0, 0.0, "last order 1,500 days ago"),
        ],
        ids=["overdue", "no-gap", "no-order", "within", "about", "today", "one-day", "x13", "zero"],
    )
    def test_recency(self, days: float, gap: float, expected: str) -> None:
        assert words("recency", days_since_last_order=[days], typical_gap_days=[gap]) == [expected]

    @pytest.mark.parametrize(
        ("o90", "o365", "total", "expected"),
        [
            (2, 9, 12, "2 orders in the last 90 days, 9 in the past year"),
            (1, 1, 1, "1 order in the last 90 days, 1 in the past year"),
            (0, 4, 6, "no orders in the last 90 days, 4 in the past year"),
            (0, 0, 3, "no orders in the past year, 3 before"),
            (0, 0, 0, "no orders yet"),
            (None, None, None, "no order history on record"),
        ],
        ids=["some", "one", "none-90", "none-365", "never", "null"],
    )
    def test_frequency(self, o90, o365, total, expected: str) -> None:
        got = words(
            "frequency",
            orders_90d=pd.array([o90], dtype="Int64"),
            orders_365d=pd.array([o365], dtype="Int64"),
            orders_total=pd.array([total], dtype="Int64"),
        )
        assert got == [expected]

    @pytest.mark.parametrize(
        ("spend", "trend", "expected"),
        [
            (1240.4, -380.2, "spent 1,240 in the last 90 days, 380 less than the 90 days before"),
            (1240.0, 380.0, "spent 1,240 in the last 90 days, 380 more than the 90 days before"),
            (
                1234567.8,
                0.2,
                "spent 1,234,568 in the last 90 days, the same as the 90 days before",
            ),
            (742.0, 742.0, "spent 742 in the last 90 days, nothing the 90 days before"),
            (0.0, -500.0, "no spend in the last 90 days, after 500 the 90 days before"),
            (0.0, 0.0, "no spend in the last 180 days"),
            (-120.0, -120.0, "refunds exceeded purchases by 120 in the last 90 days"),
            (1005007.0, NAN, "spent 1,005,007 in the last 90 days"),
            (NAN, NAN, "no spend on record"),
        ],
        ids=["less", "more", "same", "from-nothing", "stopped", "none", "refunds", "pad", "null"],
    )
    def test_spend(self, spend: float, trend: float, expected: str) -> None:
        assert words("spend", spend_90d=[spend], spend_trend_90d=[trend]) == [expected]

    def test_spend_facets_fall_back_when_null(self) -> None:
        columns = {
            "spend_90d": [100.0, 100.0],
            "spend_trend_90d": [0.0, 0.0],
            "aov_365d": [212.6, NAN],
            "refund_share_365d": [0.123, NAN],
        }
        same = "spent 100 in the last 90 days, the same as the 90 days before"
        assert words("spend", 1, **columns) == ["average basket 213 in the past year", same]
        assert words("spend", 2, **columns) == ["12% of the past year's purchases refunded", same]

    @pytest.mark.parametrize(
        ("touches", "responses", "expected"),
        [
            (5, 0, "no response to 5 WeCom messages in the last 180 days"),
            (5, 2, "responded to 2 of 5 WeCom messages in the last 180 days"),
            (1, 0, "no response to 1 WeCom message in the last 180 days"),
            (0, 0, "no WeCom messages in the last 180 days"),
            (None, None, "no WeCom message history on record"),
        ],
        ids=["no-response", "some", "one", "not-reached", "null"],
    )
    def test_channel(self, touches, responses, expected: str) -> None:
        got = words(
            "channel_wecom",
            touches_180d_wecom=pd.array([touches], dtype="Int64"),
            responses_180d_wecom=pd.array([responses], dtype="Int64"),
        )
        assert got == [expected]

    def test_channel_names(self) -> None:
        assert words(
            "channel_mini_program", touches_180d_mini_program=[3], responses_180d_mini_program=[1]
        ) == ["responded to 1 of 3 mini-program messages in the last 180 days"]
        assert words("channel_line_app", touches_180d_line_app=[0]) == [
            "no line app messages in the last 180 days"
        ]

    @pytest.mark.parametrize(
        ("touches", "responses", "last", "expected"),
        [
            (9, 0, NAN, "no response to 9 messages in the last 180 days, never responded"),
            (
                9,
                0,
                200.0,
                "no response to 9 messages in the last 180 days, last responded 200 days ago",
            ),
            (9, 2, 60.0, "responded to 2 of 9 messages in the last 180 days, the last 60 days ago"),
            (0, 0, 300.0, "no messages in the last 180 days, last responded 300 days ago"),
        ],
        ids=["never", "long-ago", "some", "not-reached"],
    )
    def test_overall_response(self, touches, responses, last, expected: str) -> None:
        got = words(
            "response",
            touches_180d=[touches],
            responses_180d=[responses],
            days_since_last_response=[last],
        )
        assert got == [expected]

    def test_best_channel(self) -> None:
        got = words("response", 1, best_channel=pd.array(["wecom", "line_app"], dtype=TEXT))
        assert got == ["most responsive on WeCom", "most responsive on line app"]

    @pytest.mark.parametrize(
        ("t30", "t7", "expected"),
        [
            (6, 2, "contacted 6 times in the last 30 days, twice in the last week"),
            (1, 0, "contacted once in the last 30 days"),
            (0, 0, "not contacted in the last 30 days"),
        ],
        ids=["many", "once", "none"],
    )
    def test_contact_fatigue(self, t30: int, t7: int, expected: str) -> None:
        assert words("contact_fatigue", touches_30d=[t30], touches_7d=[t7]) == [expected]

    def test_coupons(self) -> None:
        got = words(
            "coupons",
            1,
            discount_order_share_365d=[0.6, 0.0, 1.0, NAN],
            coupon_touches_180d=[4, 4, 4, 0],
            coupon_response_rate_180d=[0.2, 0.2, 0.004, 0.1],
        )
        assert got == [
            "60% of orders in the past year used a coupon",
            "no order in the past year used a coupon",
            "every order in the past year used a coupon",
            "no coupon offers in the last 180 days",
        ]
        assert words("coupons", coupon_touches_180d=[4], coupon_response_rate_180d=[0.004]) == [
            "received 4 coupon offers in the last 180 days, estimated response rate under 1%"
        ]

    def test_replenishment(self) -> None:
        got = words(
            "replenishment",
            categories_overdue=[2, 1, 0, 0, 0],
            categories_due_7d=[0, 0, 1, 0, 0],
            days_to_next_due=[-30.2, -0.3, 3.0, 12.0, NAN],
        )
        assert got == [
            "2 categories past the usual restock time, the earliest by 30 days",
            "1 category past the usual restock time, the earliest by less than a day",
            "1 category due for restock within a week",
            "next restock due in 12 days",
            "no restock estimate for the past year's purchases",
        ]

    def test_category_breadth(self) -> None:
        assert words("category_breadth", categories_90d=[1, 0], categories_365d=[4, 2]) == [
            "bought 1 category in the last 90 days, 4 in the past year",
            "bought nothing in the last 90 days, 2 categories in the past year",
        ]

    def test_lifecycle(self) -> None:
        assert words("lifecycle", tenure_days=[45.3, 500.0, 370.0, NAN]) == [
            "member for 45 days",
            "member for 1.4 years",
            "member for 1 year",
            "no join date on record",
        ]
        stage = pd.array(["lost", "maturity", "some_new_stage", None], dtype=TEXT)
        assert words("lifecycle", 1, lifecycle_stage=stage, tenure_days=[1.0] * 4) == [
            "lifecycle stage: lapsed, far past their usual buying cycle",
            "lifecycle stage: regular buyer",
            "lifecycle stage: some new stage",
            "member for 1 day",
        ]
        segment = pd.array(["important_retain", "important_winback", "no_purchase"], dtype=TEXT)
        assert words("lifecycle", 3, rfm_segment=segment) == [
            "RFM segment: high value at risk",
            "RFM segment: high value to win back",
            "RFM segment: no purchase yet",
        ]


def test_drivers_are_taken_in_the_order_of_the_ranking_rule() -> None:
    """``_strongest``, slot after slot, gives the order of the rule it implements: drivers
    pushing the row's way by strength, then the others by strength, then the silent ones; ties
    to the first driver (the rule as a stable lexsort, on values with many ties and zeros)."""
    from models.explain import _strongest

    rng = np.random.default_rng(11)
    aligned = rng.integers(-3, 4, size=(5000, 9)).astype(float) / 2
    expected = np.lexsort(
        (
            np.where(aligned > 0, -aligned, aligned),
            np.where(aligned > 0, 0, np.where(aligned < 0, 1, 2)),
        ),
        axis=1,
    )
    free = np.ones(aligned.shape, dtype=bool)
    rows = np.arange(len(aligned))
    for slot in range(aligned.shape[1]):
        chosen = _strongest(aligned, free)
        np.testing.assert_array_equal(chosen, expected[:, slot])
        free[rows, chosen] = False
