"""R7: the DuckDB feature build equals a slow row-by-row oracle, and ignores rows after T.

The oracle below loops over each customer's rows in plain Python (no DuckDB, no pandas group-by),
following the definitions of ``build_features``' docstring word by word.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest

from features import build_features
from features.contracts import TOUCH_CHANNELS
from features.synthetic import generate

TZ = "Asia/Shanghai"
DAY = 86_400 * 10**9
TEXT = pd.StringDtype("pyarrow")
CATEGORIES = ["diapers", "formula", "wipes", "toys", None]
CHANNELS = ["wecom", "group", "sms", "WeCom Guide"]


# --------------------------------------------------------------------------------------------
# Oracle
# --------------------------------------------------------------------------------------------


def _ns(value) -> int | None:
    return None if pd.isna(value) else int(pd.Timestamp(value).value)


def _avg_ranks(values: dict[str, float]) -> dict[str, float]:
    out = {}
    for key, v in values.items():
        below = sum(1 for w in values.values() if w < v)
        equal = sum(1 for w in values.values() if w == v)
        out[key] = below + 1 + (equal - 1) / 2
    return out


def oracle(tx: pd.DataFrame, touches: pd.DataFrame | None, cut: int) -> pd.DataFrame:
    lines = defaultdict(list)
    for row in tx.itertuples(index=False):
        t = _ns(row.ordered_at)
        if t < cut:
            qty = getattr(row, "quantity", None)
            lines[row.customer_id].append(
                (
                    row.order_id,
                    t,
                    float(row.amount),
                    getattr(row, "category", None),
                    1.0 if qty is None or pd.isna(qty) else float(qty),
                )
            )
    sent = defaultdict(list)
    if touches is not None:
        for row in touches.itertuples(index=False):
            s = _ns(row.sent_at)
            if s < cut:
                sent[row.customer_id].append((str(row.channel), s, _ns(row.responded_at)))
    known = sorted(set(lines) | set(sent))

    rows: dict[str, dict] = {}
    medians = {}
    pair_cycles = defaultdict(list)  # category -> all per-pack cycles, for the population
    purchases_of = {}
    for cid in known:
        r: dict = {"customer_id": cid}
        orders: dict[str, list] = {}
        for oid, t, amount, _cat, _q in lines[cid]:
            o = orders.setdefault(oid, [t, 0.0, 0.0, 0.0])
            o[0] = min(o[0], t)
            o[1] += amount
            if amount > 0:
                o[2] += amount
            if amount < 0:
                o[3] += amount
        ots = sorted(o[0] for o in orders.values())
        r["orders_total"] = len(orders)
        for w in (30, 90, 365):
            inside = [o for o in orders.values() if o[0] >= cut - w * DAY]
            r[f"orders_{w}d"] = len(inside)
            r[f"spend_{w}d"] = sum(o[1] for o in inside)
        r["spend_total"] = sum(o[1] for o in orders.values())
        prev = sum(o[1] for o in orders.values() if cut - 180 * DAY <= o[0] < cut - 90 * DAY)
        r["spend_trend_90d"] = r["spend_90d"] - prev
        r["aov_365d"] = r["spend_365d"] / r["orders_365d"] if r["orders_365d"] else np.nan
        in365 = [o for o in orders.values() if o[0] >= cut - 365 * DAY]
        gross = sum(o[2] for o in in365)
        r["refund_share_365d"] = -sum(o[3] for o in in365) / gross if gross > 0 else np.nan
        r["days_since_last_order"] = (cut - ots[-1]) / DAY if ots else np.nan
        r["days_since_first_order"] = (cut - ots[0]) / DAY if ots else np.nan
        r["_last_ot"] = ots[-1] if ots else None
        gaps = [(b - a) / DAY for a, b in zip(ots, ots[1:], strict=False)]
        r["_n_gaps"] = len(gaps)
        r["gap_mean_days"] = statistics.fmean(gaps) if gaps else np.nan
        r["gap_median_days"] = statistics.median(gaps) if gaps else np.nan
        r["gap_std_days"] = statistics.stdev(gaps) if len(gaps) >= 2 else np.nan
        r["gap_cv"] = (
            r["gap_std_days"] / r["gap_mean_days"]
            if len(gaps) >= 2 and r["gap_mean_days"] > 0
            else np.nan
        )
        r["last_gap_days"] = gaps[-1] if gaps else np.nan
        if gaps:
            medians[cid] = r["gap_median_days"]

        # category breadth and purchases (all purchase lines of a category at one instant)
        has_cat = "category" in tx.columns
        counts365: dict[str, int] = defaultdict(int)
        cats90, first_t = set(), {}
        purchases: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
        for _oid, t, amount, cat, q in lines[cid]:
            if amount < 0 or cat is None or pd.isna(cat):
                continue
            first_t[cat] = min(first_t.get(cat, t), t)
            if t >= cut - 365 * DAY:
                counts365[cat] += 1
            if t >= cut - 90 * DAY:
                cats90.add(cat)
            purchases[cat][t] += q
        if has_cat:
            total = sum(counts365.values())
            r["categories_90d"] = len(cats90)
            r["categories_365d"] = len(counts365)
            r["new_categories_90d"] = sum(1 for c in cats90 if first_t[c] >= cut - 90 * DAY)
            r["category_entropy_365d"] = (
                -sum(n / total * math.log(n / total) for n in counts365.values())
                if total
                else np.nan
            )
            r["top_category_share_365d"] = max(counts365.values()) / total if total else np.nan
        purchases_of[cid] = purchases
        for cat, by_t in purchases.items():
            ts = sorted(by_t)
            for a, b in zip(ts, ts[1:], strict=False):
                pair_cycles[cat].append((b - a) / DAY / by_t[a])

        # touches
        by_channel: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        r["touches_7d"] = sum(1 for _c, s, _r in sent[cid] if s >= cut - 7 * DAY)
        r["touches_30d"] = sum(1 for _c, s, _r in sent[cid] if s >= cut - 30 * DAY)
        r["touches_180d"] = r["responses_180d"] = 0
        for ch, s, resp in sent[cid]:
            if s >= cut - 180 * DAY:
                name = ch.lower().replace(" ", "_")
                by_channel[name][0] += 1
                r["touches_180d"] += 1
                if resp is not None and resp < cut:
                    by_channel[name][1] += 1
                    r["responses_180d"] += 1
        r["_by_channel"] = by_channel
        rows[cid] = r

    pop_gap = statistics.median(medians.values()) if medians else None
    buyers = {c: r for c, r in rows.items() if r["orders_total"] > 0}
    ranks = {
        "r_score": _avg_ranks({c: r["_last_ot"] for c, r in buyers.items()}),
        "f_score": _avg_ranks({c: r["orders_365d"] for c, r in buyers.items()}),
        "m_score": _avg_ranks({c: r["spend_365d"] for c, r in buyers.items()}),
    }
    # Every contract channel has columns; other channels only once seen before the cutoff.
    seen = sorted(
        {ch.lower().replace(" ", "_") for cid in known for ch, _s, _r in sent[cid]}
        | set(TOUCH_CHANNELS),
    )
    pop_cycle = {c: statistics.median(v) for c, v in pair_cycles.items() if v}
    for cid, r in rows.items():
        n = r.pop("_n_gaps")
        r.pop("_last_ot")
        if r["orders_total"] and pop_gap is not None:
            med = r["gap_median_days"] if n else 0.0
            r["typical_gap_days"] = (n * med + 3 * pop_gap) / (n + 3)
            r["overdue_ratio"] = (
                r["days_since_last_order"] / r["typical_gap_days"]
                if r["typical_gap_days"] > 0
                else np.nan
            )
        else:
            r["typical_gap_days"] = r["overdue_ratio"] = np.nan
        for col, rank in ranks.items():
            a = rank.get(cid)
            r[col] = math.floor(5 * (a - 1) / len(buyers)) + 1 if a is not None else pd.NA
        by_channel = r.pop("_by_channel")
        if touches is not None:
            for ch in seen:
                r[f"touches_180d_{ch}"], r[f"responses_180d_{ch}"] = by_channel.get(ch, [0, 0])
        if "category" in tx.columns:
            due = []
            for cat, by_t in purchases_of[cid].items():
                ts = sorted(by_t)
                if ts[-1] < cut - 365 * DAY:
                    continue
                own = [(b - a) / DAY / by_t[a] for a, b in zip(ts, ts[1:], strict=False)]
                cycle = statistics.median(own) if own else pop_cycle.get(cat)
                if cycle is not None:
                    due.append((ts[-1] + by_t[ts[-1]] * cycle * DAY - cut) / DAY)
            r["categories_due_7d"] = sum(1 for d in due if 0 <= d < 7)
            r["categories_overdue"] = sum(1 for d in due if d < 0)
            r["days_to_next_due"] = min(due) if due else np.nan
    return pd.DataFrame([rows[c] for c in known])


# --------------------------------------------------------------------------------------------
# Random data
# --------------------------------------------------------------------------------------------


def random_data(seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2024-01-01", tz=TZ).value
    rows = []
    order_no = 0
    for c in range(rng.integers(5, 25)):
        cid = f"C{c:03d}"
        base = start + int(rng.integers(0, 400)) * DAY
        for _ in range(rng.integers(0, 12)):
            order_no += 1
            # whole days or hours so that same-time orders and ties happen
            t = base + int(rng.integers(0, 500)) * DAY // int(rng.choice([1, 4]))
            for _line in range(rng.integers(1, 4)):
                amount = float(np.round(rng.uniform(-5, 300), 2))
                q = rng.integers(1, 4) if rng.random() < 0.8 else None
                cat = CATEGORIES[rng.integers(0, len(CATEGORIES))]
                rows.append((cid, f"O{order_no:05d}", t, amount, cat, q))
                if rng.random() < 0.15:  # a refund of this line some days later
                    lag = int(rng.integers(0, 20)) * DAY
                    rows.append((cid, f"O{order_no:05d}", t + lag, -amount, cat, q))
    tx = pd.DataFrame(rows, columns=["customer_id", "order_id", "t", "amount", "category", "q"])
    tx["ordered_at"] = pd.to_datetime(tx.pop("t"), utc=True).dt.tz_convert(TZ)
    tx["quantity"] = pd.array(tx.pop("q"), dtype="Int64")
    tx = tx[["customer_id", "order_id", "ordered_at", "amount", "category", "quantity"]]
    for col in ("customer_id", "order_id", "category"):
        tx[col] = tx[col].astype(TEXT)
    touches = []
    n_customers = max(int(rng.integers(5, 25)), 1)
    for _ in range(rng.integers(0, 120)):
        cid = f"C{rng.integers(0, n_customers + 3):03d}"  # some customers only touched
        s = start + int(rng.integers(0, 900)) * DAY // 2
        resp = s + int(rng.integers(0, 10)) * DAY if rng.random() < 0.4 else None
        touches.append((cid, CHANNELS[rng.integers(0, len(CHANNELS))], s, resp))
    to = pd.DataFrame(touches, columns=["customer_id", "channel", "sent_at", "responded_at"])
    for col in ("sent_at", "responded_at"):
        to[col] = pd.to_datetime(to[col], utc=True).dt.tz_convert(TZ)
    for col in ("customer_id", "channel"):
        to[col] = to[col].astype(TEXT)
    return tx, to


def random_cutoffs(tx: pd.DataFrame, rng: np.random.Generator, k: int) -> list[pd.Timestamp]:
    start = pd.Timestamp("2024-01-01", tz=TZ)
    cuts = [start + pd.Timedelta(days=int(d)) for d in rng.integers(100, 900, size=k - 1)]
    if len(tx):  # one cutoff exactly at a line's time
        cuts.append(tx["ordered_at"].iloc[int(rng.integers(0, len(tx)))])
    return cuts


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------

INTS = [
    "orders_total",
    "orders_30d",
    "orders_90d",
    "orders_365d",
    "r_score",
    "f_score",
    "m_score",
    "categories_90d",
    "categories_365d",
    "new_categories_90d",
    "touches_7d",
    "touches_30d",
    "touches_180d",
    "responses_180d",
    "categories_due_7d",
    "categories_overdue",
]


def assert_matches_oracle(tx, touches, cut: pd.Timestamp) -> None:
    fast = build_features(tx, touches, as_of=cut)
    slow = oracle(tx, touches, int(cut.value))
    assert list(fast["customer_id"]) == list(slow["customer_id"])
    assert set(slow.columns) <= set(fast.columns), set(slow.columns) - set(fast.columns)
    channel_cols = [c for c in fast.columns if c.startswith(("touches_180d_", "responses_180d_"))]
    assert sorted(channel_cols) == sorted(c for c in slow.columns if c in channel_cols)
    for col in slow.columns:
        if col == "customer_id":
            continue
        expected = slow[col]
        got = fast[col]
        if col in INTS or col in channel_cols:
            pd.testing.assert_series_equal(
                got.astype("Int64"), expected.astype("Int64"), check_names=False, obj=col
            )
        else:
            np.testing.assert_allclose(
                got.to_numpy(dtype=float),
                expected.to_numpy(dtype=float),
                rtol=1e-9,
                atol=1e-6,
                err_msg=col,
            )


SEEDS = [0, 1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("seed", SEEDS, ids=[f"seed{s}" for s in SEEDS])
def test_fast_build_equals_oracle_on_random_data(seed: int) -> None:
    tx, touches = random_data(seed)
    rng = np.random.default_rng(1000 + seed)
    for cut in random_cutoffs(tx, rng, 5):
        assert_matches_oracle(tx, touches, cut)


@pytest.fixture(scope="module")
def synthetic():
    data = generate(150, days=500, seed=7)
    tx = data.transactions.copy()
    tx["ordered_at"] = tx["ordered_at"].dt.tz_localize(TZ)
    touches = data.touches.copy()
    for col in ("sent_at", "responded_at"):
        touches[col] = touches[col].dt.tz_localize(TZ)
    for frame in (tx, touches):
        for col in frame.columns:
            if frame[col].dtype == object:
                frame[col] = frame[col].astype(TEXT)
    tx["quantity"] = tx["quantity"].astype("Int64")
    return tx, touches


@pytest.mark.parametrize("as_of", ["2025-09-01", "2026-01-15", "2026-04-03", "2026-07-01"])
def test_fast_build_equals_oracle_on_synthetic_data(synthetic, as_of: str) -> None:
    tx, touches = synthetic
    assert_matches_oracle(tx, touches, pd.Timestamp(as_of, tz=TZ))


def _append_future(tx, touches, cut: pd.Timestamp, rng: np.random.Generator):
    """Rows at or after ``cut``: new lines, refunds of earlier orders, touches, responses."""
    future = []
    earlier = tx[tx["ordered_at"] < cut]
    for i in range(30):
        when = cut + pd.Timedelta(hours=int(rng.integers(0, 24 * 60)) * int(i % 3 != 0))
        if len(earlier) and rng.random() < 0.5:  # a late refund of an order before T
            line = earlier.iloc[int(rng.integers(0, len(earlier)))]
            future.append(
                (line.customer_id, line.order_id, when, -abs(line.amount), line.category, 1)
            )
        else:
            cid = f"C{rng.integers(0, 40):03d}"
            future.append((cid, f"F{i:04d}", when, 50.0, "toys", 2))
    extra = pd.DataFrame(future, columns=list(tx.columns))
    extra["ordered_at"] = pd.to_datetime(extra["ordered_at"]).dt.tz_convert(TZ)
    tx2 = pd.concat([tx, extra.astype(tx.dtypes.to_dict())], ignore_index=True)
    new_touches = pd.DataFrame(
        {
            "customer_id": [f"C{rng.integers(0, 40):03d}" for _ in range(20)],
            "channel": ["Email"] * 10 + ["wecom"] * 10,  # a channel never seen before T
            "sent_at": [cut + pd.Timedelta(hours=int(h)) for h in rng.integers(0, 500, 20)],
            "responded_at": [cut + pd.Timedelta(days=30)] * 20,
        }
    ).astype(touches.dtypes.to_dict())
    touches2 = pd.concat([touches, new_touches], ignore_index=True)
    # responses after T to touches sent before T
    late = touches2["sent_at"] < cut
    touches2.loc[late & touches2["responded_at"].isna(), "responded_at"] = cut
    return tx2.sample(frac=1, random_state=1), touches2


@pytest.mark.parametrize("seed", [10, 11, 12, 13], ids=lambda s: f"seed{s}")
def test_rows_at_or_after_cutoff_change_nothing(seed: int) -> None:
    tx, touches = random_data(seed)
    rng = np.random.default_rng(seed)
    for cut in random_cutoffs(tx, rng, 3):
        before = build_features(tx, touches, as_of=cut)
        tx2, touches2 = _append_future(tx, touches, cut, rng)
        after = build_features(tx2, touches2, as_of=cut)
        pd.testing.assert_frame_equal(before, after)
