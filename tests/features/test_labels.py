"""``make_labels``: golden tables, no reading before the cutoff, an oracle and the ground truth."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pandas.testing import assert_frame_equal

from features import load_dataset, make_labels
from features.labels import LABEL_COLUMNS
from features.synthetic import generate, generate_to

TZ = "Asia/Shanghai"
TEXT = pd.StringDtype("pyarrow")
CUTOFF = pd.Timestamp("2026-01-01", tz=TZ)
FAR = pd.Timestamp("2030-01-01", tz=TZ)  # observed_until that matures every window here


def lines(rows: list[tuple[str, str, str, float]], tz: str | None = TZ) -> pd.DataFrame:
    """Transaction lines as ``load_dataset`` returns them: (customer, order, time, amount)."""
    frame = pd.DataFrame(rows, columns=["customer_id", "order_id", "ordered_at", "amount"])
    at = pd.to_datetime(frame["ordered_at"], format="ISO8601").astype("datetime64[ns]")
    return frame.assign(
        customer_id=frame["customer_id"].astype(TEXT),
        order_id=frame["order_id"].astype(TEXT),
        ordered_at=at.dt.tz_localize(tz) if tz else at,
        amount=frame["amount"].astype("float64"),
    )


def expected(
    rows: list[tuple[str, bool, bool, float, bool, float, int]],
    *,
    cutoff: pd.Timestamp = CUTOFF,
    horizon: int = 90,
    matured: bool = True,
) -> pd.DataFrame:
    """Hand-computed labels: (customer, churned, purchased_30d, days, censored, spend, orders)."""
    frame = pd.DataFrame(
        rows,
        columns=[
            "customer_id",
            "churned",
            "purchased_30d",
            "days_to_next_order",
            "next_order_censored",
            "spend_180d",
            "orders_horizon",
        ],
    )
    frame.insert(1, "cutoff", pd.Series(cutoff.as_unit("ns"), index=frame.index))
    frame.insert(2, "horizon_days", np.int64(horizon))
    frame["label_matured"] = matured
    return frame.astype(
        {
            "customer_id": TEXT,
            "horizon_days": "int64",
            "days_to_next_order": "float64",
            "spend_180d": "float64",
            "orders_horizon": "int64",
        }
    )


# (id, lines, horizon, expected rows). Cutoff 2026-01-01 00:00 Asia/Shanghai throughout:
# +30 days = 2026-01-31, +90 days = 2026-04-01, +180 days = 2026-06-30.
GOLDEN = [
    (
        "one-order customer",
        [("A", "o1", "2026-01-11 12:00", 100.0)],
        90,
        [("A", False, True, 10.5, False, 100.0, 1)],
    ),
    (
        "order exactly at the cutoff counts",
        [("A", "o1", "2025-12-31 23:59:59", 10.0), ("A", "o2", "2026-01-01 00:00:00", 20.0)],
        90,
        [("A", False, True, 0.0, False, 20.0, 1)],
    ),
    (
        "order exactly at cutoff + horizon does not count",
        [("A", "o1", "2026-04-01 00:00:00", 50.0), ("B", "o2", "2026-03-31 23:59:59", 7.0)],
        90,
        [
            ("A", True, False, 90.0, True, 50.0, 0),  # still inside the 180-day spend window
            ("B", False, False, 90.0 - 1 / 86_400, False, 7.0, 1),
        ],
    ),
    (
        "order exactly at cutoff + 30 days is not purchased_30d",
        [("A", "o1", "2026-01-31 00:00:00", 5.0), ("B", "o2", "2026-01-30 23:59:59", 5.0)],
        90,
        [
            ("A", False, False, 30.0, False, 5.0, 1),
            ("B", False, True, 30.0 - 1 / 86_400, False, 5.0, 1),
        ],
    ),
    (
        "refund in the window of an order placed before the cutoff",
        [("A", "o1", "2025-12-20 10:00", 200.0), ("A", "o1", "2026-01-05 10:00", -50.0)],
        90,
        [("A", True, False, 90.0, True, -50.0, 0)],
    ),
    (
        "refund of an order placed in the window is not a second order",
        [
            ("A", "o1", "2026-01-06 00:00", 100.0),
            ("A", "o1", "2026-01-06 00:00", 30.0),
            ("A", "o1", "2026-01-09 00:00", -100.0),
        ],
        90,
        [("A", False, True, 5.0, False, 30.0, 1)],
    ),
    (
        "same-day orders are separate orders",
        [
            ("A", "o1", "2026-01-03 09:00", 10.0),
            ("A", "o1", "2026-01-03 09:00", 15.0),
            ("A", "o2", "2026-01-03 18:00", 40.0),
        ],
        90,
        [("A", False, True, 2.375, False, 65.0, 2)],
    ),
    (
        "customer with no order after the cutoff is censored",
        [("A", "o1", "2025-06-01 10:00", 99.0), ("A", "o2", "2025-12-31 23:00", 1.0)],
        90,
        [("A", True, False, 90.0, True, 0.0, 0)],
    ),
    (
        "spend window is [cutoff, cutoff + 180 days)",
        [
            ("A", "o1", "2026-06-29 23:59:59", 8.0),
            ("A", "o2", "2026-06-30 00:00:00", 1000.0),
            ("A", "o0", "2025-12-31 23:59:59", 1000.0),
        ],
        90,
        [("A", True, False, 90.0, True, 8.0, 0)],
    ),
    (
        "customers sorted by id, each once",
        [
            ("C2", "o1", "2026-02-01 00:00", 1.0),
            ("C10", "o2", "2025-01-01 00:00", 1.0),
            ("C1", "o3", "2026-01-02 00:00", 2.0),
            ("C1", "o4", "2026-01-02 00:00", 3.0),
        ],
        90,
        [
            ("C1", False, True, 1.0, False, 5.0, 2),
            ("C10", True, False, 90.0, True, 0.0, 0),
            ("C2", False, False, 31.0, False, 1.0, 1),
        ],
    ),
]

# Orders on days 20, 45 and 100 after the cutoff: only the horizon changes.
HORIZON_LINES = [
    ("A", "o1", "2026-01-21 00:00", 10.0),
    ("A", "o2", "2026-02-15 00:00", 20.0),
    ("A", "o3", "2026-04-11 00:00", 30.0),
]
HORIZONS = [
    ("7 days: purchased_30d still sees day 20", 7, ("A", True, True, 7.0, True, 60.0, 0)),
    ("30 days", 30, ("A", False, True, 20.0, False, 60.0, 1)),
    ("45 days: day 45 is out", 45, ("A", False, True, 20.0, False, 60.0, 1)),
    ("46 days", 46, ("A", False, True, 20.0, False, 60.0, 2)),
    ("365 days", 365, ("A", False, True, 20.0, False, 60.0, 3)),
]


class TestLabels:
    @pytest.mark.parametrize(
        ("rows", "horizon", "want"),
        [pytest.param(r, h, w, id=i) for i, r, h, w in GOLDEN],
    )
    def test_golden(self, rows, horizon, want):
        got = make_labels(
            lines(rows), cutoff="2026-01-01", horizon_days=horizon, observed_until=FAR
        )
        assert_frame_equal(got, expected(want, horizon=horizon))

    @pytest.mark.parametrize(
        ("horizon", "want"), [pytest.param(h, w, id=i) for i, h, w in HORIZONS]
    )
    def test_horizon(self, horizon, want):
        got = make_labels(
            lines(HORIZON_LINES), cutoff="2026-01-01", horizon_days=horizon, observed_until=FAR
        )
        assert_frame_equal(got, expected([want], horizon=horizon))

    def test_default_horizon_is_90_days(self):
        got = make_labels(lines(HORIZON_LINES), cutoff="2026-01-01", observed_until=FAR)
        assert_frame_equal(got, expected([("A", False, True, 20.0, False, 60.0, 2)]))

    @pytest.mark.parametrize(
        "cutoff",
        [
            pytest.param("2026-01-01", id="string"),
            pytest.param(datetime.date(2026, 1, 1), id="date"),
            pytest.param(pd.Timestamp("2026-01-01"), id="naive Timestamp: the data's clock"),
            pytest.param(pd.Timestamp("2025-12-31 16:00", tz="UTC"), id="aware Timestamp"),
        ],
    )
    def test_cutoff_forms_mean_midnight_in_the_data_timezone(self, cutoff):
        rows = [("A", "o1", "2025-12-31 23:59:59", 1.0), ("B", "o2", "2026-01-01 00:00", 2.0)]
        got = make_labels(lines(rows), cutoff=cutoff, observed_until=FAR)
        want = expected(
            [("A", True, False, 90.0, True, 0.0, 0), ("B", False, True, 0.0, False, 2.0, 1)]
        )
        assert_frame_equal(got, want)
        assert str(got["cutoff"].dtype) == f"datetime64[ns, {TZ}]"

    def test_naive_data(self):
        rows = [("A", "o1", "2025-12-31 23:59:59", 1.0), ("A", "o2", "2026-01-01 06:00", 2.0)]
        got = make_labels(lines(rows, tz=None), cutoff="2026-01-01", observed_until="2030-01-01")
        want = expected(
            [("A", False, True, 0.25, False, 2.0, 1)], cutoff=pd.Timestamp("2026-01-01")
        )
        assert_frame_equal(got, want)
        with pytest.raises(ValueError, match="the data.s timestamps are naive"):
            make_labels(lines(rows, tz=None), cutoff=CUTOFF)

    def test_other_columns_and_dtypes_are_accepted(self):
        frame = lines([("A", "o1", "2026-01-02", 3.0)]).assign(
            customer_id=lambda f: f["customer_id"].astype(object),
            ordered_at=lambda f: f["ordered_at"].dt.as_unit("us"),
            category="toys",
        )
        got = make_labels(frame, cutoff="2026-01-01", observed_until=FAR)
        want = expected([("A", False, True, 1.0, False, 3.0, 1)]).astype({"customer_id": object})
        assert_frame_equal(got, want)

    @pytest.mark.parametrize(
        ("last_line", "horizon", "matured"),
        [
            pytest.param("2026-06-30 00:00:00", 90, True, id="data reach cutoff + 180 days"),
            pytest.param("2026-06-29 23:59:59", 90, False, id="one second short"),
            pytest.param("2026-06-30 00:00:00", 365, False, id="a longer horizon needs more"),
            pytest.param("2027-01-01 00:00:00", 365, True, id="365-day horizon matured"),
        ],
    )
    def test_label_matured_defaults_to_the_last_line(self, last_line, horizon, matured):
        rows = [("A", "o1", "2026-01-05", 1.0), ("B", "o2", last_line, 1.0)]
        got = make_labels(lines(rows), cutoff="2026-01-01", horizon_days=horizon)
        assert got["label_matured"].tolist() == [matured, matured]

    def test_label_matured_from_observed_until(self):
        rows = [("A", "o1", "2026-01-05", 1.0)]
        early = make_labels(lines(rows), cutoff="2026-01-01", observed_until="2026-06-29")
        late = make_labels(lines(rows), cutoff="2026-01-01", observed_until="2026-06-30")
        assert early["label_matured"].tolist() == [False]
        assert late["label_matured"].tolist() == [True]

    def test_no_lines(self):
        got = make_labels(lines([]), cutoff="2026-01-01")
        assert list(got.columns) == list(LABEL_COLUMNS)
        assert got.empty

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            pytest.param({"horizon_days": 0}, "at least 1", id="zero horizon"),
            pytest.param({"horizon_days": 1.5}, "whole number", id="fractional horizon"),
            pytest.param({"horizon_days": True}, "whole number", id="bool horizon"),
            pytest.param({"cutoff": "not a date"}, "cutoff must be", id="bad cutoff"),
        ],
    )
    def test_bad_arguments(self, kwargs, message):
        args = {"cutoff": "2026-01-01", **kwargs}
        with pytest.raises(ValueError, match=message):
            make_labels(lines([("A", "o1", "2026-01-02", 1.0)]), **args)

    def test_missing_column(self):
        frame = lines([("A", "o1", "2026-01-02", 1.0)]).drop(columns="order_id")
        with pytest.raises(ValueError, match="order_id"):
            make_labels(frame, cutoff="2026-01-01")


# --- nothing before the cutoff is read -------------------------------------------------------

DAY = pd.Timedelta(days=1)
#: Offsets from the cutoff that sit on every window edge, and a few in between.
EDGES = [-DAY, -pd.Timedelta(seconds=1), pd.Timedelta(0), 30 * DAY, 90 * DAY, 180 * DAY]


@st.composite
def history(draw: st.DrawFn) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Lines around the cutoff, and the same lines with those before the cutoff edited."""
    n = draw(st.integers(1, 25))
    offset = st.one_of(
        st.sampled_from(EDGES + [e - pd.Timedelta(seconds=1) for e in EDGES]),
        st.integers(-200 * 86_400, 200 * 86_400).map(lambda s: pd.Timedelta(seconds=s)),
    )
    customers = st.sampled_from(["A", "B", "C", "D"])
    orders = st.sampled_from([f"o{i}" for i in range(8)])
    amounts = st.sampled_from([-30.0, -0.01, 0.0, 9.99, 120.0])
    rows = [(draw(customers), draw(orders), CUTOFF + draw(offset), draw(amounts)) for _ in range(n)]
    edited = []
    for customer, order, at, amount in rows:
        if at >= CUTOFF:
            edited.append((customer, order, at, amount))
            continue
        action = draw(st.sampled_from(["keep", "delete", "change"]))
        if action == "keep":
            edited.append((customer, order, at, amount))
        elif action == "change":  # any other order id (also one used after the cutoff)
            back = pd.Timedelta(seconds=draw(st.integers(1, 400 * 86_400)))
            edited.append((draw(customers), draw(orders), CUTOFF - back, draw(amounts)))
    if draw(st.booleans()):  # and lines appended before the cutoff
        back = pd.Timedelta(seconds=draw(st.integers(1, 400 * 86_400)))
        edited.append((draw(customers), draw(orders), CUTOFF - back, draw(amounts)))
    return _frame(rows), _frame(edited)


def _frame(rows: list[tuple[str, str, pd.Timestamp, float]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["customer_id", "order_id", "ordered_at", "amount"])
    return frame.astype(
        {
            "customer_id": TEXT,
            "order_id": TEXT,
            "ordered_at": f"datetime64[ns, {TZ}]",
            "amount": "float64",
        }
    )


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(history(), st.sampled_from([7, 30, 90, 365]))
def test_rows_before_the_cutoff_change_no_label(pair, horizon):
    original, edited = pair
    before = make_labels(original, cutoff=CUTOFF, horizon_days=horizon, observed_until=FAR)
    after = make_labels(edited, cutoff=CUTOFF, horizon_days=horizon, observed_until=FAR)
    assert set(after["customer_id"]) == set(edited["customer_id"])
    # Customers that are new in ``edited`` (a changed line moved to them) had no label before:
    # nothing they did after the cutoff changed, so they match the empty history's labels.
    after = after.set_index("customer_id")
    before = before.set_index("customer_id").reindex(after.index)
    new = before["cutoff"].isna()
    if new.any():
        empty = make_labels(
            _frame([(c, "x", CUTOFF - DAY, 0.0) for c in after.index[new]]),
            cutoff=CUTOFF,
            horizon_days=horizon,
            observed_until=FAR,
        ).set_index("customer_id")
        before.loc[new] = empty
        before = before.astype(after.dtypes.to_dict())
    assert_frame_equal(after, before, check_exact=False, rtol=1e-9, atol=1e-9)


# --- an obviously correct oracle, and the ground truth of the synthetic data ------------------


def oracle(tx: pd.DataFrame, cutoff: pd.Timestamp, horizon: int) -> pd.DataFrame:
    """Customer by customer, order by order, as the rules are written: slow and plain.

    An order's time is ``min(ordered_at)`` over all its lines, from the whole history.
    """
    rows = []
    end = cutoff + horizon * DAY
    for customer, mine in tx.groupby("customer_id", sort=True):
        placed = sorted(
            at for at in mine.groupby("order_id")["ordered_at"].min() if cutoff <= at < end
        )
        in_30 = [
            at
            for at in mine.groupby("order_id")["ordered_at"].min()
            if cutoff <= at < cutoff + 30 * DAY
        ]
        spend = sum(
            amount
            for at, amount in zip(mine["ordered_at"], mine["amount"], strict=True)
            if cutoff <= at < cutoff + 180 * DAY
        )
        days = (placed[0] - cutoff) / DAY if placed else float(horizon)
        rows.append(
            (customer, not placed, bool(in_30), days, not placed, float(spend), len(placed))
        )
    return expected(rows, cutoff=cutoff, horizon=horizon, matured=False)


@pytest.fixture(scope="module")
def small_synthetic() -> pd.DataFrame:
    tx = generate(400, seed=5).transactions
    return tx.assign(
        customer_id=tx["customer_id"].astype(TEXT),
        order_id=tx["order_id"].astype(TEXT),
        ordered_at=tx["ordered_at"].astype("datetime64[ns]").dt.tz_localize(TZ),
    )


@pytest.mark.parametrize(
    ("cutoff", "horizon"),
    [
        pytest.param("2025-03-01", 90, id="2025-03-01, 90 days"),
        pytest.param("2025-11-11", 30, id="Double 11, 30 days"),
        pytest.param("2026-04-15", 7, id="near the end, 7 days"),
    ],
)
def test_matches_the_row_by_row_oracle(small_synthetic, cutoff, horizon):
    tx = small_synthetic
    refunds = tx[tx["amount"] < 0]
    assert len(refunds) > 0 and refunds["order_id"].isin(tx.loc[tx["amount"] > 0, "order_id"]).all()
    stamp = pd.Timestamp(cutoff, tz=TZ)
    got = make_labels(tx, cutoff=cutoff, horizon_days=horizon, observed_until=FAR)
    want = oracle(tx, stamp, horizon).assign(label_matured=True)
    assert_frame_equal(got, want, check_exact=False, rtol=1e-9, atol=1e-6)
    assert 0 < got["churned"].sum() < len(got)  # both outcomes present: the check has teeth


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame]:
    out: Path = tmp_path_factory.mktemp("synthetic")
    paths = generate_to(out, 3000, seed=3)
    truth = pd.read_parquet(paths["truth"])
    return load_dataset(out).transactions, truth


@pytest.mark.parametrize("cutoff", ["2025-06-01", "2026-01-01", "2026-05-01"])
def test_customers_dropped_out_before_the_cutoff_never_buy_again(synthetic, cutoff):
    """By construction no line of any kind is at or after a customer's ``dropout_at``."""
    tx, truth = synthetic
    labels = make_labels(tx, cutoff=cutoff).set_index("customer_id")
    dropout = truth.set_index("customer_id")["dropout_at"].dt.tz_localize(TZ)
    gone = labels.index[(dropout.reindex(labels.index) < pd.Timestamp(cutoff, tz=TZ)).to_numpy()]
    assert len(gone) > 100
    assert labels.loc[gone, "churned"].all()
    assert not labels.loc[gone, "purchased_30d"].any()
    assert (labels.loc[gone, "orders_horizon"] == 0).all()
    assert (labels.loc[gone, "days_to_next_order"] == 90.0).all()
    assert (labels.loc[gone, "spend_180d"] == 0.0).all()
    # Only buyers are listed, each once; the rest do buy sometimes.
    assert labels.index.is_unique and set(labels.index) == set(tx["customer_id"])
    assert not labels.drop(gone)["churned"].all()


def test_synthetic_window_end_is_immature(synthetic):
    tx, _ = synthetic
    labels = make_labels(tx, cutoff="2026-07-01")
    assert labels["churned"].all() and not labels["label_matured"].any()
    assert not make_labels(tx, cutoff="2026-01-02")["label_matured"].any()  # 180 days past end
    assert make_labels(tx, cutoff="2025-12-01")["label_matured"].all()
