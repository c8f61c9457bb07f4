"""Tests of the coupon uplift estimate (``models.uplift``).

Golden tables for the segments (edge cases named), an oracle for the clever part (the packed-key
search, and the whole estimate against a slow row-by-row reimplementation), point in time by
truncation, and the estimate against the synthetic generator's ground truth.
"""

from __future__ import annotations

import bisect

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from features.orders import order_table
from features.synthetic import generate
from models import uplift
from models.uplift import (
    ALL_SEGMENTS,
    UpliftTable,
    estimate_uplift,
    orders_with_discount,
    segments,
    uplift_unavailable_reason,
)

DAY = pd.Timedelta(days=1)
T = pd.Timestamp("2026-03-01")


@pytest.fixture(scope="module")
def data():
    """20,000 synthetic customers over two years (about a second)."""
    return generate(20_000, seed=7)


@pytest.fixture(scope="module")
def table(data) -> UpliftTable:
    result = estimate_uplift(data.transactions, data.touches, as_of=data.end)
    assert result is not None
    return result


# --------------------------------------------------------------------------------------------
# Orders and segments: golden tables
# --------------------------------------------------------------------------------------------


def golden_lines(tz: str | None = None) -> pd.DataFrame:
    rows = [
        # customer, order, time, amount, discount
        ("A", "A1", T - 10 * DAY, 30.0, 0.0),
        ("A", "A2", T - 40 * DAY, 20.0, 0.0),
        ("A", "A2", T - 40 * DAY, 15.0, 5.0),  # coupon on the second line of the order
        ("B", "B1", T - 30 * DAY, 10.0, 0.0),  # exactly 30 days before
        ("C", "C1", T - 90 * DAY, 10.0, 0.0),  # exactly 90 days before
        ("D", "D1", T - 180 * DAY, 10.0, 2.0),  # exactly 180 days before, discounted
        ("E", "E1", T, 10.0, 3.0),  # at T itself: not earlier
        ("F", "F1", T - 30 * DAY + pd.Timedelta(seconds=1), 10.0, 0.0),  # just under 30 days
        ("F", "F2", T + DAY, 10.0, 4.0),  # a later coupon order: not a coupon user yet
        ("H", "H0", T - 100 * DAY, 10.0, 1.0),
        ("H", "H0", T - DAY, -10.0, 0.0),  # its refund, later: not an order at T - 1 day
        ("H", "H1", T - 5 * DAY, 10.0, 0.0),
        ("I", "I1", T - 50 * DAY, 10.0, 0.0),
        ("I", "I1", T - 2 * DAY, 10.0, 0.0),  # a late line: the order is still 50 days old
    ]
    frame = pd.DataFrame(
        rows, columns=["customer_id", "order_id", "ordered_at", "amount", "discount"]
    )
    if tz is not None:
        frame["ordered_at"] = frame["ordered_at"].dt.tz_localize(tz)
    return frame


GOLDEN_SEGMENTS = {
    "A": "0-30|coupon_user",
    "B": "30-90|non_user",  # 30 days exactly is in [30, 90)
    "C": "90-180|non_user",
    "D": "180+|coupon_user",
    "E": "none|non_user",  # its only order is at T
    "F": "0-30|non_user",  # its coupon order comes after T
    "G": "none|non_user",  # no order at all
    "H": "0-30|coupon_user",  # last order H1; H0 was discounted; the refund is no order
    "I": "30-90|non_user",  # order time = earliest line
}


class TestOrdersWithDiscount:
    def test_golden_orders(self):
        got = orders_with_discount(golden_lines(), before=T)
        expected = pd.DataFrame(
            {
                "customer_id": ["A", "A", "B", "C", "D", "F", "H", "H", "I"],
                "order_id": ["A2", "A1", "B1", "C1", "D1", "F1", "H0", "H1", "I1"],
                "value": [35.0, 30.0, 10.0, 10.0, 10.0, 10.0, 0.0, 10.0, 20.0],
                "discounted": [True, False, False, False, True, False, True, False, False],
            }
        )
        assert_frame_equal(
            got[["customer_id", "order_id", "value", "discounted"]].astype(
                {"customer_id": object, "order_id": object}
            ),
            expected,
        )

    def test_same_orders_as_order_table(self, data):
        cut = data.end - 100 * DAY
        ours = orders_with_discount(data.transactions, before=cut)
        theirs = order_table(data.transactions, before=cut)
        assert_frame_equal(
            ours[["customer_id", "order_id", "ordered_at"]].astype(object),
            theirs[["customer_id", "order_id", "ordered_at"]].astype(object),
        )
        np.testing.assert_allclose(ours["value"], theirs["value"], rtol=1e-12)
        # Discounted: some, not all, and only orders with a discounted line before the cut.
        lines = data.transactions[data.transactions["ordered_at"] < cut]
        flagged = lines.groupby("order_id")["discount"].max() > 0
        assert ours.set_index("order_id")["discounted"].equals(
            flagged.reindex(ours["order_id"]).rename("discounted")
        )
        assert 0 < ours["discounted"].mean() < 1

    def test_without_discount_column_nobody_is_discounted(self):
        got = orders_with_discount(golden_lines().drop(columns="discount"), before=T)
        assert not got["discounted"].any()
        assert len(got) == 9


class TestSegments:
    @pytest.mark.parametrize("tz", [None, "Asia/Shanghai"], ids=["naive", "aware"])
    def test_golden_labels_at_one_time(self, tz):
        orders = orders_with_discount(golden_lines(tz), before="2027-01-01")
        ids = pd.Series(list(GOLDEN_SEGMENTS), index=range(10, 19))
        at = T if tz is None else T.tz_localize(tz)
        got = segments(orders, ids, at)
        assert got.index.tolist() == ids.index.tolist()
        assert got.astype(str).tolist() == list(GOLDEN_SEGMENTS.values())
        assert list(got.cat.categories) == list(ALL_SEGMENTS)

    def test_one_time_per_row(self):
        orders = orders_with_discount(golden_lines(), before="2027-01-01")
        ids = pd.Series(["A", "A", "A", "F", "F"])
        at = pd.Series([T - 20 * DAY, T - 40 * DAY, T - 40 * DAY + DAY, T + 2 * DAY, T + DAY])
        got = segments(orders, ids, at).astype(str).tolist()
        assert got == [
            "0-30|coupon_user",  # A2 (discounted) 20 days before
            "none|non_user",  # A2 is at that very time: nothing earlier
            "0-30|coupon_user",
            "0-30|coupon_user",  # F2 (discounted, T + 1 day) is now earlier
            "30-90|non_user",  # at F2's own time it is not earlier; F1 is 31 days old
        ]

    def test_refuses_a_plain_order_table(self):
        with pytest.raises(ValueError, match="orders_with_discount"):
            segments(order_table(golden_lines(), before=T), pd.Series(["A"]), T)

    def test_refuses_mixed_time_zones(self):
        orders = orders_with_discount(golden_lines("Asia/Shanghai"), before=T)
        with pytest.raises(ValueError, match="naive"):
            segments(orders, pd.Series(["A"]), T)

    def test_oracle_on_synthetic_data(self, data):
        """Against merge_asof on a sample of (customer, time) pairs, many with ties."""
        orders = orders_with_discount(data.transactions, before=data.end)
        rng = np.random.default_rng(0)
        picks = orders.sample(3000, random_state=1)
        # Times: exactly at an order (ties), just after one, and random instants.
        shift = rng.choice([0, 1, 86_400 * 30], len(picks)) * pd.Timedelta(seconds=1)
        at = (picks["ordered_at"] + shift).reset_index(drop=True)
        ids = picks["customer_id"].reset_index(drop=True)
        got = segments(orders, ids, at).astype(str)

        query = pd.DataFrame({"customer_id": ids, "at": at, "row": range(len(ids))}).sort_values(
            "at"
        )
        book = orders[["customer_id", "ordered_at"]].astype({"ordered_at": "datetime64[ns]"})
        book = book.sort_values("ordered_at")
        last = pd.merge_asof(
            query,
            book,
            left_on="at",
            right_on="ordered_at",
            by="customer_id",
            allow_exact_matches=False,
        ).sort_values("row")
        first_disc = orders[orders["discounted"]].groupby("customer_id")["ordered_at"].min()
        days = (last["at"] - last["ordered_at"]).dt.total_seconds().to_numpy() / 86_400
        band = np.select(
            [np.isnan(days), days < 30, days < 90, days < 180],
            ["none", "0-30", "30-90", "90-180"],
            "180+",
        )
        fd = last["customer_id"].map(first_disc)
        user = (fd < last["at"]).fillna(False).to_numpy(dtype=bool)
        expected = [
            f"{b}|{'coupon_user' if u else 'non_user'}" for b, u in zip(band, user, strict=True)
        ]
        assert got.tolist() == expected
        assert len(set(expected)) >= 6


# --------------------------------------------------------------------------------------------
# The packed-key search: oracle
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_codes", [3, 1 << 20], ids=["exact-keys", "coarse-keys"])
def test_index_rank_matches_brute_force(n_codes):
    rng = np.random.default_rng(5)
    n, m = 3000, 800
    code = rng.integers(0, min(n_codes, 40), n)
    # A year of nanoseconds, clustered: exact ties and times a few nanoseconds apart.
    t = rng.integers(0, 365 * 86_400, n) * 10**9 + rng.choice([0, 1, 7, 500], n)
    t[: n // 3] = t[n // 3 : 2 * (n // 3)]
    index, order = uplift._Index.build(code, t, n_codes)
    if n_codes > 3:
        assert index.shift > 0  # the coarse path is exercised
    assert np.array_equal(index.code, code[order]) and np.array_equal(index.t, t[order])
    qc = rng.integers(0, min(n_codes, 40), m)
    qt = np.concatenate(
        [t[rng.integers(0, n, m // 2)], rng.integers(-(10**12), 366 * 86_400 * 10**9, m - m // 2)]
    )
    qt[: m // 4] += rng.choice([-1, 1], m // 4)
    for inclusive in (False, True):
        later = (qt[:, None] >= t[None, :]) if inclusive else (qt[:, None] > t[None, :])
        brute = ((code[None, :] < qc[:, None]) | ((code[None, :] == qc[:, None]) & later)).sum(1)
        assert np.array_equal(index.rank(qc, qt, inclusive=inclusive), brute)
        (shifted,) = index.ranks(qc, qt - 5, [(5, inclusive)])
        assert np.array_equal(shifted, brute)


# --------------------------------------------------------------------------------------------
# The estimate
# --------------------------------------------------------------------------------------------


def slow_pooled(transactions, touches, as_of, window_days=7, lookback_days=365, match_days=3):
    """Row by row: pooled raw uplift and counts, from the module docstring's definitions."""
    W, H = pd.Timedelta(days=window_days), pd.Timedelta(days=match_days)
    lines = transactions[transactions["ordered_at"] < as_of]
    orders = lines.groupby(["customer_id", "order_id"]).agg(
        t=("ordered_at", "min"), disc=("discount", lambda d: bool((d > 0).any()))
    )
    times: dict[str, list] = {}
    discounted: dict[str, list] = {}
    for (customer, _), row in orders.sort_values("t").iterrows():
        times.setdefault(customer, []).append(row["t"])
        if row["disc"]:
            discounted.setdefault(customer, []).append(row["t"])
    value = touches["coupon_value"].fillna(0.0)
    coupons: dict[str, list] = {}
    for customer, sent in touches.loc[
        (value > 0) & (touches["sent_at"] < as_of), ["customer_id", "sent_at"]
    ].itertuples(index=False):
        coupons.setdefault(customer, []).append(sent)
    kept = []
    in_lookback = 0
    for customer, sent, v in zip(touches["customer_id"], touches["sent_at"], value, strict=True):
        if not (as_of - pd.Timedelta(days=lookback_days) <= sent < as_of - W):
            continue
        in_lookback += 1
        near = sum(1 for s in coupons.get(customer, []) if abs(s - sent) < W)
        if near != (v > 0):
            continue
        mine = times.get(customer, [])
        earlier = [o for o in mine if o < sent]
        if not earlier:
            band = "none"
        else:
            days = (sent - earlier[-1]) / DAY
            band = (
                "0-30"
                if days < 30
                else "30-90"
                if days < 90
                else "90-180"
                if days < 180
                else "180+"
            )
        user = any(o < sent for o in discounted.get(customer, []))
        ordered = any(sent <= o < sent + W for o in mine)
        kept.append((f"{band}|{'coupon_user' if user else 'non_user'}", sent, v, ordered))
    frame = pd.DataFrame(kept, columns=["segment", "sent", "value", "ordered"])
    controls = {s: g.sort_values("sent") for s, g in frame[frame["value"] == 0].groupby("segment")}
    residuals = []
    for segment, sent, v, ordered in frame[frame["value"] > 0].itertuples(index=False):
        ctl = controls.get(segment)
        if ctl is None:
            continue
        stamps = ctl["sent"].tolist()
        lo = bisect.bisect_left(stamps, sent - H)
        hi = bisect.bisect_right(stamps, sent + H)
        if hi > lo:
            residuals.append((v, ordered - ctl["ordered"].iloc[lo:hi].mean()))
    pooled = (
        pd.DataFrame(residuals, columns=["value", "residual"])
        .groupby("value")["residual"]
        .agg(["mean", "size"])
    )
    return pooled, in_lookback, int((frame["value"] == 0).sum())


class TestEstimate:
    def test_oracle_row_by_row(self):
        small = generate(1_500, seed=3)
        as_of = small.end - 20 * DAY
        got = estimate_uplift(small.transactions, small.touches, as_of=as_of)
        assert got is not None
        expected, in_lookback, controls = slow_pooled(small.transactions, small.touches, as_of)
        pooled = got.pooled.set_index("value")
        assert pooled.index.tolist() == expected.index.tolist()
        assert pooled["treated_n"].tolist() == expected["size"].tolist()
        np.testing.assert_allclose(pooled["raw_uplift"], expected["mean"], rtol=1e-9, atol=1e-12)
        assert got.counts["in_lookback"] == in_lookback
        assert got.counts["control"] == controls
        assert got.counts["overlapping"] > 0 and got.counts["unmatched"] >= 0

    def test_pooled_20_cny_uplift_near_the_truth(self, data, table):
        """The generator's truth brackets the estimand (see the module docstring).

        Upper: the mean true chance that a 20-CNY coupon causes an extra order, over the
        20-CNY touches of the lookback (0 once the customer has dropped out). An extra order
        only counts when the customer would not have ordered anyway, so the uplift on *any*
        order is lower: about the chance times one minus the segment's control rate, less
        so as those most moved by coupons (hunters) rarely order without one; that product is
        the lower end. The organic-coupon-use subsidy (organic orders using a coupon) changes
        no outcome here (an order is an order), so it needs no allowance. Over 8 seeds of
        20,000 customers the estimate minus the lower end had mean +0.004, sd 0.008, min -0.007
        (the campaign calendar, not the customer count, sets the noise), and the estimate
        stayed below the upper end (max -0.003): tolerances 0.02 below and 0.01 above.
        """
        lo, hi = data.end - 365 * DAY, data.end - 7 * DAY
        touches = data.touches
        sent = touches[
            (touches["sent_at"] >= lo) & (touches["sent_at"] < hi) & (touches["coupon_value"] == 20)
        ]
        truth = sent.join(data.truth.set_index("customer_id"), on="customer_id")
        alive = truth["activated"] & (truth["sent_at"] < truth["dropout_at"])
        value = 20.0
        p = np.where(alive, 1 - (1 - truth["coupon_effect"]) ** ((value / 20) ** 0.6), 0.0)
        orders = orders_with_discount(data.transactions, before=data.end)
        segment = segments(orders, truth["customer_id"], truth["sent_at"]).astype(str).to_numpy()
        cells = table.cells[table.cells["value"] == value].assign(
            segment=lambda c: c["segment"].astype(str)
        )
        control = cells.set_index("segment")["control_rate"]
        per = (
            pd.DataFrame({"segment": segment, "p": p}).groupby("segment")["p"].agg(["mean", "size"])
        )
        lower = float(
            (per["size"] * per["mean"] * (1 - control.reindex(per.index))).sum() / per["size"].sum()
        )
        upper = float(p.mean())
        estimate = float(table.pooled.set_index("value").loc[value, "uplift"])
        assert 0.035 < lower < upper < 0.08  # the truth itself is what we think it is
        assert lower - 0.02 <= estimate <= upper + 0.01, (lower, estimate, upper)

    def test_shape_non_decreasing_and_non_negative(self, table):
        assert table.values.tolist() == [5.0, 10.0, 20.0, 30.0, 50.0]
        pooled = table.pooled["uplift"].to_numpy()
        assert (np.diff(pooled) >= 0).all() and (pooled >= 0).all() and pooled[-1] > 0
        for _, cell in table.cells.groupby("segment", observed=True):
            curve = cell["uplift"].to_numpy()
            assert (np.diff(curve) >= 0).all() and (curve >= 0).all()
        # The raw differences were not all in shape: the constraints did something.
        assert (table.cells["raw_uplift"] < 0).any()

    def test_coupon_users_gain_more_than_non_users(self, data, table):
        cells = table.cells.assign(segment=table.cells["segment"].astype(str))
        cells = cells[~cells["segment"].str.startswith("none")]

        def mean_uplift(flag: str) -> float:
            sub = cells[cells["segment"].str.endswith(flag)]
            return float(np.average(sub["uplift"], weights=sub["treated_n"]))

        assert mean_uplift("|coupon_user") > 1.5 * mean_uplift("|non_user")
        # Because the hunters are coupon users (truth side of the same claim).
        orders = orders_with_discount(data.transactions, before=data.end)
        hunters = data.truth.set_index("customer_id")["coupon_only"]
        label = segments(orders, pd.Series(hunters.index), data.end).astype(str).to_numpy()
        users = np.char.endswith(label.astype(str), "|coupon_user")
        assert hunters.to_numpy()[users].mean() > 2 * hunters.to_numpy()[~users].mean()

    def test_point_in_time(self, data):
        """Rows at or after as_of and plain touches in the last W days change nothing."""
        as_of = pd.Timestamp("2026-04-01")
        tx, to = data.transactions, data.touches
        base = estimate_uplift(tx[tx["ordered_at"] < as_of], to[to["sent_at"] < as_of], as_of=as_of)
        assert base is not None
        last_week = (to["sent_at"] >= as_of - 7 * DAY) & (to["sent_at"] < as_of)
        plain = to["coupon_value"] == 0
        assert (tx["ordered_at"] >= as_of).sum() > 1000 and (to["sent_at"] >= as_of).sum() > 1000
        assert (last_week & plain).sum() > 100
        # Extra rows at and after as_of: coupon orders and coupon touches at as_of exactly.
        extra_tx = tx.head(500).assign(
            ordered_at=as_of, order_id=lambda f: "X" + f["order_id"], discount=5.0
        )
        extra_to = to.head(500).assign(sent_at=as_of, coupon_value=30.0)
        variants = {
            "full": (tx, to),
            "appended": (pd.concat([tx, extra_tx]), pd.concat([to, extra_to])),
            "no plain touches in the last week": (
                tx[tx["ordered_at"] < as_of],
                to[(to["sent_at"] < as_of) & ~(last_week & plain)],
            ),
        }
        for name, (t, u) in variants.items():
            got = estimate_uplift(t, u, as_of=as_of)
            assert got is not None, name
            assert_frame_equal(got.cells, base.cells, check_exact=True, obj=name)
            assert_frame_equal(got.pooled, base.pooled, check_exact=True, obj=name)
            assert got.counts == base.counts, name
        in_lookback = (
            (to["sent_at"] >= as_of - 365 * DAY) & (to["sent_at"] < as_of - 7 * DAY)
        ).sum()
        assert base.counts["in_lookback"] == in_lookback

    def test_deterministic_and_independent_of_row_order(self, data, table):
        again = estimate_uplift(data.transactions, data.touches, as_of=data.end)
        assert again is not None
        assert_frame_equal(again.cells, table.cells, check_exact=True)
        assert_frame_equal(again.pooled, table.pooled, check_exact=True)
        shuffled = estimate_uplift(
            data.transactions.sample(frac=1.0, random_state=2),
            data.touches.sample(frac=1.0, random_state=3),
            as_of=data.end,
        )
        assert shuffled is not None
        assert_frame_equal(shuffled.cells, table.cells, rtol=1e-12)  # sums in another order
        assert shuffled.counts == table.counts

    def test_time_zone_aware_data_gives_the_same_estimate(self, data, table):
        tz = "Asia/Shanghai"
        tx = data.transactions.assign(ordered_at=data.transactions["ordered_at"].dt.tz_localize(tz))
        to = data.touches.assign(sent_at=data.touches["sent_at"].dt.tz_localize(tz))
        got = estimate_uplift(tx, to, as_of=data.end.date())
        assert got is not None
        assert_frame_equal(got.cells, table.cells, check_exact=True)
        assert got.as_of == data.end.tz_localize(tz)

    def test_describe(self, table):
        summary = table.describe()
        assert summary.columns.tolist() == [
            "segment",
            "value",
            "treated_n",
            "control_n",
            "raw_uplift",
            "uplift",
        ]
        assert summary["segment"].iloc[:5].eq("all").all()
        assert len(summary) == 5 + len(table.cells)
        assert summary["treated_n"].iloc[:5].sum() == table.counts["treated"]


class TestNoEstimate:
    @pytest.mark.parametrize(
        ("change", "reason"),
        [
            (lambda to: None, "no touches"),
            (lambda to: to.iloc[:0], "no touches"),
            (lambda to: to.drop(columns="coupon_value"), "no coupon_value column"),
            (lambda to: to.assign(coupon_value=0.0), "no coupon touch"),
            (lambda to: to.assign(coupon_value=np.nan), "no coupon touch"),
            (lambda to: to.assign(coupon_value=10.0), "no touch without a coupon"),
        ],
        ids=["none", "empty", "no-column", "no-coupon", "null-coupon", "no-control"],
    )
    def test_none_with_a_reason(self, data, change, reason):
        touches = change(data.touches)
        assert estimate_uplift(data.transactions, touches, as_of=data.end) is None
        assert reason in uplift_unavailable_reason(touches, as_of=data.end)

    def test_reason_is_none_when_estimable(self, data):
        assert uplift_unavailable_reason(data.touches, as_of=data.end) is None

    def test_coupons_only_outside_the_lookback(self, data):
        to = data.touches
        old = to["sent_at"] < data.end - 400 * DAY
        touches = to.assign(coupon_value=to["coupon_value"].where(old, 0.0))
        assert (touches["coupon_value"] > 0).any()
        assert estimate_uplift(data.transactions, touches, as_of=data.end) is None

    def test_bad_arguments(self, data):
        with pytest.raises(ValueError):
            estimate_uplift(data.transactions, data.touches, as_of=data.end, window_days=0)
        with pytest.raises(ValueError):
            estimate_uplift(data.transactions, data.touches, as_of=data.end, prior_strength=-1)


# --------------------------------------------------------------------------------------------
# Pricing customers: interpolation in value, fallback to the pooled curve
# --------------------------------------------------------------------------------------------


def hand_table() -> UpliftTable:
    segment = pd.Categorical(["0-30|coupon_user"] * 2, categories=list(ALL_SEGMENTS))
    cells = pd.DataFrame(
        {
            "segment": segment,
            "value": [10.0, 20.0],
            "treated_n": [100, 100],
            "control_n": [300, 300],
            "treated_rate": [0.3, 0.35],
            "control_rate": [0.26, 0.27],
            "raw_uplift": [0.04, 0.08],
            "weight": [0.8, 0.8],
            "uplift": [0.04, 0.08],
        }
    )
    pooled = pd.DataFrame(
        {
            "value": [10.0, 20.0],
            "treated_n": [500, 500],
            "control_n": [900, 900],
            "treated_rate": [0.2, 0.23],
            "control_rate": [0.18, 0.18],
            "raw_uplift": [0.02, 0.05],
            "uplift": [0.02, 0.05],
        }
    )
    return UpliftTable(cells, pooled, T, 7, 365, 50.0, 3.0)


def test_for_customers_interpolates_and_falls_back():
    values = [-5.0, 0.0, 5.0, 10.0, 15.0, 20.0, 40.0]
    segment = pd.Series(["0-30|coupon_user", "180+|non_user", None, "0-30|coupon_user"])
    got = hand_table().for_customers(segment, values)
    own = [0.0, 0.0, 0.02, 0.04, 0.06, 0.08, 0.08]  # from 0 at value 0; clamped above 20
    pooled = [0.0, 0.0, 0.01, 0.02, 0.035, 0.05, 0.05]  # unseen segment and null: pooled
    np.testing.assert_allclose(got, [own, pooled, pooled, own], atol=1e-15)
    categorical = segment.astype(pd.CategoricalDtype(list(ALL_SEGMENTS)))
    np.testing.assert_allclose(hand_table().for_customers(categorical, values), got, atol=1e-15)


def test_for_customers_on_the_estimate(data, table):
    orders = orders_with_discount(data.transactions, before=data.end)
    customers = data.customers["customer_id"]
    segment = segments(orders, customers, data.end)
    got = table.for_customers(segment, [5.0, 10.0, 30.0, 100.0])
    assert got.shape == (len(customers), 4)
    assert (np.diff(got, axis=1) >= 0).all() and (got >= 0).all()
    # Above the largest level (50): clamped at its uplift.
    np.testing.assert_array_equal(got[:, 3], table.for_customers(segment, [50.0])[:, 0])


def test_many_distinct_values_are_banded(data):
    rng = np.random.default_rng(1)
    to = data.touches
    jitter = np.where(to["coupon_value"] > 0, rng.uniform(0.0, 1.0, len(to)).round(2), 0.0)
    jittered = to.assign(coupon_value=to["coupon_value"] + jitter)
    got = estimate_uplift(data.transactions, jittered, as_of=data.end)
    assert got is not None
    assert len(got.values) == uplift.MAX_LEVELS
    assert (np.diff(got.values) > 0).all() and got.values[0] >= 5.0 and got.values[-1] <= 51.0
    assert got.pooled["treated_n"].sum() == got.counts["treated"]


def test_given_orders_give_the_same_estimate():
    """Passing ``orders_with_discount`` gives exactly the estimate built from the lines."""
    from models.uplift import estimate_uplift, orders_with_discount

    data = generate(3000, seed=21)
    as_of = pd.Timestamp("2026-05-01").date()
    from_lines = estimate_uplift(data.transactions, data.touches, as_of=as_of)
    orders = orders_with_discount(data.transactions, before=as_of)
    given = estimate_uplift(data.transactions, data.touches, as_of=as_of, orders=orders)
    assert from_lines is not None and given is not None
    pd.testing.assert_frame_equal(from_lines.cells, given.cells)
    pd.testing.assert_frame_equal(from_lines.pooled, given.pooled)
    assert from_lines.counts == given.counts


@pytest.mark.parametrize("with_touches", [True, False], ids=["all-known", "buyers-only"])
def test_orders_of_customer_tables_give_the_same_estimate_and_segments(with_touches):
    """``customer_tables``' orders (ids categorical over the snapshot) give what the lines give.

    Built without touches, the categories are the buyers only: the touches of other customers
    (and a null id) get codes after them.
    """
    from features import customer_tables
    from models.uplift import estimate_uplift

    data = generate(3000, seed=21)
    as_of = pd.Timestamp("2026-05-01").date()
    touches = data.touches.copy()
    touches.loc[touches.index[:5], "customer_id"] = None
    tables = customer_tables(
        data.transactions, touches if with_touches else None, as_of=as_of, orders=True
    )
    assert isinstance(tables.orders["customer_id"].dtype, pd.CategoricalDtype)
    from_lines = estimate_uplift(data.transactions, touches, as_of=as_of)
    given = estimate_uplift(None, touches, as_of=as_of, orders=tables.orders)
    assert from_lines is not None and given is not None
    pd.testing.assert_frame_equal(from_lines.cells, given.cells)
    pd.testing.assert_frame_equal(from_lines.pooled, given.pooled)
    assert from_lines.counts == given.counts
    ids = pd.Series(sorted(set(touches["customer_id"].dropna())) + ["never-seen"])
    stamp = pd.Timestamp(as_of)
    pd.testing.assert_series_equal(
        segments(tables.orders, ids, stamp),
        segments(orders_with_discount(data.transactions, before=as_of), ids, stamp),
    )


def test_ids_outside_the_categories_share_codes_across_columns():
    """With a categorical first column, an id missing from its categories gets one code in
    every other column (as the text path gives), after the categories; so does a null."""
    from models.uplift import _encode

    first = pd.Series(pd.Categorical(["a", "b", "a"], categories=["a", "b", "c"]))
    second = pd.Series(["z", "a", None, "y"], dtype="string[pyarrow]")
    third = pd.Series(["y", "z", None], dtype="string[pyarrow]")
    (c1, c2, c3), n = _encode(first, second, third)
    assert c1.tolist() == [0, 1, 0] and c2[1] == 0
    assert c2[0] == c3[1] and c2[3] == c3[0] and c2[2] == c3[2]  # z, y and null shared
    assert len({c2[0], c2[2], c2[3]}) == 3 and min(c2[0], c2[2], c2[3]) >= 3 and n == 6
    (_, d2, d3), m = _encode(first, second.iloc[[1]], third.iloc[:0])  # nothing outside
    assert d2.tolist() == [0] and len(d3) == 0 and m == 3
