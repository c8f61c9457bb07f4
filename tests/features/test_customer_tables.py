"""``customer_tables``: the features, orders and reminders of one pass over the lines.

Each part must equal what its own function gives: ``build_features``, ``order_table(...,
discounted=True)`` without ``order_id``, and ``due_categories``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features import CustomerTables, build_features, customer_tables, due_categories
from features.customer_features import _BLOCK_LINES
from features.orders import order_table
from features.synthetic import generate

TZ = "Asia/Shanghai"
TEXT = pd.StringDtype("pyarrow")
DAY = 86_400 * 10**9
KEY = ["customer_id", "ordered_at", "value", "discounted"]


def random_lines(seed: int, n_orders: int = 400, tz: str | None = TZ) -> pd.DataFrame:
    """Lines with refunds (some after the order), shared instants, discounts and shuffled rows."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2025-01-01").value
    customer = rng.integers(0, max(n_orders // 6, 2), n_orders)
    # whole days or quarter days, so that one customer's orders share instants
    at = start + rng.integers(0, 500, n_orders) * DAY // rng.choice([1, 4], n_orders)
    per_order = rng.integers(1, 4, n_orders)
    order = np.repeat(np.arange(n_orders), per_order)
    lag = np.where(rng.random(len(order)) < 0.15, rng.integers(0, 30, len(order)) * DAY, 0)
    amount = np.round(rng.uniform(-5, 300, len(order)), 2)
    frame = pd.DataFrame(
        {
            "customer_id": pd.array([f"C{c:04d}" for c in customer[order]], dtype=TEXT),
            "order_id": pd.array([f"O{o:06d}" for o in order], dtype=TEXT),
            "ordered_at": pd.to_datetime(at[order] + lag),
            "amount": np.where(lag > 0, -np.abs(amount), amount),
            "category": pd.array(rng.choice(["milk", "wipes", "toys"], len(order)), dtype=TEXT),
            "quantity": pd.array(rng.integers(1, 4, len(order)), dtype="Int64"),
            "discount": np.where(rng.random(len(order)) < 0.2, 5.0, 0.0),
        }
    )
    if tz is not None:
        frame["ordered_at"] = frame["ordered_at"].dt.tz_localize("UTC").dt.tz_convert(tz)
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def assert_parts_match(tx: pd.DataFrame, as_of: str) -> CustomerTables:
    got = customer_tables(tx, as_of=as_of, orders=True, due_within_days=7)
    pd.testing.assert_frame_equal(got.features, build_features(tx, as_of=as_of))
    pd.testing.assert_frame_equal(got.due, due_categories(tx, as_of=as_of, within_days=7))
    expected = order_table(tx, before=as_of, discounted=True).drop(columns="order_id")
    assert list(got.orders.columns) == KEY
    # customer_id is categorical over the features' ids: its codes are the rows of features
    customer = got.orders["customer_id"]
    assert customer.cat.categories.equals(pd.Index(got.features["customer_id"]))
    codes = customer.cat.codes.to_numpy()
    assert (got.features["customer_id"].to_numpy()[codes] == customer.astype(TEXT)).all()
    orders = got.orders.assign(customer_id=customer.astype(TEXT))
    assert orders.dtypes.equals(expected.dtypes)
    # Sorted by customer, then time (orders of one customer at one instant in any order).
    assert orders[["customer_id", "ordered_at"]].equals(
        orders[["customer_id", "ordered_at"]]
        .sort_values(["customer_id", "ordered_at"], kind="stable")
        .reset_index(drop=True)
    )
    pd.testing.assert_frame_equal(
        orders.sort_values(KEY, kind="stable").reset_index(drop=True),
        expected.sort_values(KEY, kind="stable").reset_index(drop=True),
    )
    return got


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("tz", [TZ, None], ids=["aware", "naive"])
def test_parts_equal_their_own_functions_on_random_lines(seed: int, tz: str | None) -> None:
    tx = random_lines(seed, tz=tz)
    for as_of in ("2025-03-01", "2025-09-15", "2026-06-01"):
        got = assert_parts_match(tx, as_of)
        assert len(got.orders) > 0
    # the refunds after their order and the discounts make the comparison mean something
    assert (tx["amount"] < 0).any() and (tx["discount"] > 0).any()


def test_lines_grouped_by_customer_and_several_blocks() -> None:
    """More lines than one block, grouped by customer (the no-copy block path)."""
    tx = random_lines(7, n_orders=_BLOCK_LINES // 2 + 5000)
    tx = tx.sort_values(["customer_id", "ordered_at"], kind="stable").reset_index(drop=True)
    assert (tx["ordered_at"] < pd.Timestamp("2026-06-01", tz=TZ)).sum() > _BLOCK_LINES
    assert_parts_match(tx, "2026-06-01")


def test_synthetic_data() -> None:
    data = generate(400, days=400, seed=3)
    tx = data.transactions.copy()
    tx["ordered_at"] = tx["ordered_at"].dt.tz_localize(TZ)
    for col in ("customer_id", "order_id", "category"):
        tx[col] = tx[col].astype(TEXT)
    got = assert_parts_match(tx, "2026-01-15")
    assert len(got.due) > 10


def test_without_discount_or_category_columns() -> None:
    tx = random_lines(3).drop(columns=["discount", "category"])
    got = customer_tables(tx, as_of="2026-01-01", orders=True, due_within_days=7)
    assert not got.orders["discounted"].any()
    assert got.due.empty
    expected = order_table(tx, before="2026-01-01", discounted=True).drop(columns="order_id")
    orders = got.orders.assign(customer_id=got.orders["customer_id"].astype(TEXT))
    pd.testing.assert_frame_equal(
        orders.sort_values(KEY).reset_index(drop=True),
        expected.sort_values(KEY).reset_index(drop=True),
    )


def test_nothing_before_the_cutoff_gives_empty_tables() -> None:
    tx = random_lines(4)
    got = customer_tables(tx, as_of="2024-01-01", orders=True, due_within_days=7)
    assert got.features.empty and got.orders.empty and got.due.empty
    assert list(got.orders.columns) == KEY
    assert str(got.orders["ordered_at"].dtype) == f"datetime64[ns, {TZ}]"


def test_only_what_is_asked_is_returned() -> None:
    got = customer_tables(random_lines(5), as_of="2026-01-01")
    assert got.orders is None and got.due is None
    with pytest.raises(ValueError, match="within_days"):
        customer_tables(random_lines(5), as_of="2026-01-01", due_within_days=-1)
