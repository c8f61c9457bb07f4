"""``due_categories``: the names behind ``categories_due_7d``, for replenishment reminders.

The golden case uses the cutoff T = 2026-01-01 00:00 Asia/Shanghai; "d10" below means 10 days
before T, "T+2" a run-out 2 days after it.
"""

from __future__ import annotations

import statistics
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest

from features import build_features, due_categories
from features.synthetic import generate

TZ = "Asia/Shanghai"
AS_OF = "2026-01-01"
T = pd.Timestamp(AS_OF, tz=TZ)
DAY = 86_400 * 10**9
TEXT = pd.StringDtype("pyarrow")


def tx_frame(rows) -> pd.DataFrame:
    """rows: (customer_id, order_id, days_before_T, amount, category, quantity)."""
    frame = pd.DataFrame(
        rows, columns=["customer_id", "order_id", "d", "amount", "category", "quantity"]
    )
    frame["ordered_at"] = pd.Series(
        [T - pd.Timedelta(days=d) for d in frame.pop("d")], dtype=f"datetime64[ns, {TZ}]"
    )
    frame["amount"] = frame["amount"].astype("float64")
    frame["quantity"] = pd.array(frame["quantity"], dtype="Int64")
    for col in ("customer_id", "order_id", "category"):
        frame[col] = frame[col].astype(TEXT)
    return frame[["customer_id", "order_id", "ordered_at", "amount", "category", "quantity"]]


def expect(due: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": pd.array(list(due), dtype=TEXT),
            "categories_due": pd.array(list(due.values()), dtype=TEXT),
        }
    )


# Population cycles per pack: formula 10 (B, D), wipes median(10, 5) = 7.5 (A, C), snacks 4 (A).
GOLDEN = [
    ("H", "H1", 5, 10.0, "formula", 1),  # H first: the input is not in customer_id order
    ("H", "H2", 3, -10.0, "formula", 1),  # a refund is no purchase (else: own cycle 2, overdue)
    ("A", "A1", 30, 10.0, "diapers", 2),
    ("A", "A2", 20, 10.0, "diapers", 1),  # own cycle 10 / 2 = 5: run-out d15, overdue
    ("A", "A3", 21, 10.0, "wipes", 1),
    ("A", "A4", 11, 10.0, "wipes", 2),  # own cycle 10: 2 packs -> T+9
    ("A", "A5", 6, 10.0, "snacks", 1),
    ("A", "A6", 2, 10.0, "snacks", 1),  # own cycle 4 -> T+2
    ("A", "A7", 4, 10.0, "formula", 1),  # one purchase: population cycle 10 -> T+6
    ("B", "B1", 92, 10.0, "formula", 3),
    ("B", "B2", 62, 10.0, "formula", 2),  # cycle 30 / 3 = 10: run-out d42, overdue
    ("C", "C1", 9, 10.0, "diapers", 1),
    ("C", "C2", 4, 10.0, "diapers", 1),  # own cycle 5 -> T+1
    ("C", "C3", 8, 10.0, "wipes", 1),  # wipes before bottles in the input (and dictionary) ...
    ("C", "C3", 8, 10.0, "bottles", 1),
    ("C", "C4", 3, 10.0, "wipes", 1),  # own cycle 5 -> T+2
    ("C", "C4", 3, 10.0, "bottles", 1),  # own cycle 5 -> T+2: a tie, so by name
    ("D", "D1", 20, 10.0, "formula", 1),
    ("D", "D2", 10, 10.0, "formula", 1),  # own cycle 10 -> exactly T: due
    ("E", "E1", 13, 10.0, "toys", 1),
    ("E", "E2", 3, 10.0, "toys", 1),  # own cycle 10 -> exactly T+7: not within 7 days
    ("E", "E3", 1, 10.0, "snacks", None),  # null quantity = 1 pack, population 4 -> T+3
    ("F", "F1", 0, 10.0, "formula", 1),  # exactly at T: not read
    ("F", "F2", -2, 10.0, "formula", 1),  # after T: not read
    ("G", "G1", 370, 10.0, "wipes", 50),  # 50 x 7.5 -> T+5, but last bought > 365 d ago
    ("I", "I1", 2, 10.0, None, 1),  # no category
]


class TestGolden:
    @pytest.mark.parametrize(
        ("within_days", "due"),
        [
            (
                7,
                {
                    "A": "snacks, formula",
                    "C": "diapers, bottles, wipes",
                    "D": "formula",
                    "E": "snacks",
                    "H": "formula",
                },
            ),
            (
                10,
                {
                    "A": "snacks, formula, wipes",
                    "C": "diapers, bottles, wipes",
                    "D": "formula",
                    "E": "snacks, toys",
                    "H": "formula",
                },
            ),
            (1, {"D": "formula"}),  # [T, T+1): only the run-out at exactly T; C's T+1 is out
            (0, {}),
        ],
        ids=["7d", "10d", "1d", "0d"],
    )
    def test_names_in_run_out_order(self, within_days, due):
        got = due_categories(tx_frame(GOLDEN), as_of=AS_OF, within_days=within_days)
        pd.testing.assert_frame_equal(got, expect(due))

    def test_counts_match_build_features(self):
        tx = tx_frame(GOLDEN)
        counts = build_features(tx, as_of=AS_OF).set_index("customer_id")["categories_due_7d"]
        assert counts.to_dict() == {
            "A": 2,
            "B": 0,
            "C": 3,
            "D": 1,
            "E": 1,
            "G": 0,
            "H": 1,
            "I": 0,
        }

    def test_without_category_column_is_empty(self):
        got = due_categories(tx_frame(GOLDEN).drop(columns="category"), as_of=AS_OF)
        pd.testing.assert_frame_equal(got, expect({}))

    def test_nothing_before_the_cutoff_is_empty(self):
        got = due_categories(tx_frame(GOLDEN), as_of="2020-01-01")
        pd.testing.assert_frame_equal(got, expect({}))

    def test_negative_window_is_refused(self):
        with pytest.raises(ValueError, match="within_days"):
            due_categories(tx_frame(GOLDEN), as_of=AS_OF, within_days=-1)


# --------------------------------------------------------------------------------------------
# Synthetic data: agreement with build_features, a row-by-row oracle, point in time
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_tx() -> pd.DataFrame:
    tx = generate(3000, days=730, seed=5).transactions
    tx = tx[["customer_id", "order_id", "ordered_at", "amount", "category", "quantity"]].copy()
    tx["ordered_at"] = tx["ordered_at"].dt.tz_localize(TZ)
    for col in ("customer_id", "order_id", "category"):
        tx[col] = tx[col].astype(TEXT)
    tx["quantity"] = tx["quantity"].astype("Int64")
    return tx


DATES = ["2025-11-20", "2026-07-01"]


def name_counts(due: pd.DataFrame, customers: pd.Series) -> np.ndarray:
    """Names per customer of ``customers`` (0 when absent from ``due``)."""
    counts = due.set_index("customer_id")["categories_due"].str.split(", ").str.len()
    return counts.reindex(customers.to_numpy()).fillna(0).astype("int64").to_numpy()


@pytest.mark.parametrize("as_of", DATES)
def test_as_many_names_as_categories_due_7d(synthetic_tx, as_of):
    features = build_features(synthetic_tx, as_of=as_of)
    due = due_categories(synthetic_tx, as_of=as_of)
    assert set(due["customer_id"]) <= set(features["customer_id"])
    expected = features["categories_due_7d"].to_numpy(dtype="int64")
    np.testing.assert_array_equal(name_counts(due, features["customer_id"]), expected)
    assert (expected > 0).sum() > 100  # many customers are due: the comparison means something


def oracle(tx: pd.DataFrame, cut: int, within_days: int) -> dict[str, str]:
    """Slow row-by-row reading of ``build_features``' "Estimated inventory" definition."""
    packs: dict[tuple[str, str], dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for row in tx.itertuples(index=False):
        t = int(row.ordered_at.value)
        if t < cut and row.amount >= 0 and not pd.isna(row.category):
            q = 1.0 if pd.isna(row.quantity) else float(row.quantity)
            packs[(row.customer_id, row.category)][t] += q
    cycles: dict[tuple[str, str], list[float]] = {}
    population = defaultdict(list)
    for key, by_t in packs.items():
        ts = sorted(by_t)
        cycles[key] = [(b - a) / DAY / by_t[a] for a, b in zip(ts, ts[1:], strict=False)]
        population[key[1]] += cycles[key]
    due = defaultdict(list)
    for (cid, cat), by_t in packs.items():
        last = max(by_t)
        own = cycles[(cid, cat)]
        if last < cut - 365 * DAY or not (own or population[cat]):
            continue
        cycle = statistics.median(own or population[cat])
        days = (last + by_t[last] * cycle * DAY - cut) / DAY
        if 0 <= days < within_days:
            due[cid].append((days, cat))
    return {cid: ", ".join(cat for _, cat in sorted(due[cid])) for cid in sorted(due)}


def test_names_equal_a_row_by_row_oracle(synthetic_tx):
    cut = pd.Timestamp("2026-03-10", tz=TZ)
    got = due_categories(synthetic_tx, as_of=cut, within_days=14)
    expected = oracle(synthetic_tx, int(cut.value), 14)
    assert len(expected) > 100
    pd.testing.assert_frame_equal(got, expect(expected))


@pytest.mark.parametrize("as_of", DATES)
def test_lines_at_or_after_the_cutoff_change_nothing(synthetic_tx, as_of):
    cut = pd.Timestamp(as_of, tz=TZ)
    before = synthetic_tx[synthetic_tx["ordered_at"] < cut]
    expected = due_categories(before, as_of=as_of)
    assert len(expected) > 100
    # Lines at exactly T and later: repeat purchases of categories that are due (they would
    # refill the stock), a new category and a new customer, and refunds of earlier lines.
    due_rows = before.merge(expected[["customer_id"]], on="customer_id").tail(200)
    later = [
        due_rows.assign(ordered_at=cut, order_id="late"),
        due_rows.assign(ordered_at=cut + pd.Timedelta(days=3), category="pet_food"),
        before.tail(50).assign(
            ordered_at=cut + pd.Timedelta(hours=1), amount=-1.0, order_id="refund"
        ),
        before.head(20).assign(customer_id="Z-new", ordered_at=cut),
    ]
    after = pd.concat([synthetic_tx, *later], ignore_index=True).sample(frac=1, random_state=3)
    for col in ("customer_id", "order_id", "category"):
        after[col] = after[col].astype(TEXT)
    pd.testing.assert_frame_equal(due_categories(after, as_of=as_of), expected)
