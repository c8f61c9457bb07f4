"""Synthetic private-domain data for a baby-goods brand, with the ground truth that produced it.

The generator writes the three input tables of the contract (``transactions``, ``touches``,
``customers``) plus ``ground_truth.parquet``: one row per customer with the latent parameters and
honest expectations under the model, so that features, models and scoring can be checked against
what is really true rather than only against noisy outcomes.

Generative story (each step fully vectorised; customers are processed in blocks of
``CHUNK_CUSTOMERS``, two blocks at a time on threads, so memory stays flat; the output depends only
on the arguments, never on the machine or the scheduling):

1. Customers join over the window with growing acquisition and bumps at the big sales; ids follow
   join order. Each has a latent loyalty score (normal, shifted by acquisition source) that tilts
   everything else. About 10 % never activate (they never buy).
2. Lifetime: a Pareto/NBD-like exponential lifetime from joining, its rate gamma-distributed and
   lower for loyal customers; ``dropout_at`` ends all buying for good. Lapsed members are still
   messaged but respond far less.
3. Needs: each of eight categories has a replenishment cycle per pack, a pack price and pack
   counts. The customer adopts an entry category at joining and more categories later (more and
   sooner when loyal). Per adopted category, needs form a renewal process: the next need comes
   ``quantity * cycle / consumption_speed * noise`` after the previous one (log-normal noise of
   mean 1, wide for toys and clothing), so the last quantity and date ("estimated inventory")
   predict it.
4. Share of wallet: each need is bought here with probability ``share_of_wallet`` (else it leaks
   to another store, invisibly, still refilling the stock). Needs due within
   ``BASKET_WINDOW_DAYS`` of an order are bought in the same order: one line per category.
5. Seasonality runs a customer's clock faster or slower (618 ramp, Double 11, 12.12, stock-up
   before Chinese New Year, dip in its holiday week, mild weekends); stock-up quantities in
   promotions, and the larger stock then pushes the next need further out.
6. Campaigns go out every week or two per channel (wecom, group, moments, sms, mini_program), plus
   coupon pushes before 618 and Double 11, each to a random share of reachable members (random
   targeting, so uplift can be measured); some carry coupons. A coupon raises the chance of an
   extra order within 7 days by the customer's ``coupon_effect`` (tiny for most, large for
   coupon-only hunters, who almost never buy organically); that order buys the most-due category
   early, carries the coupon as ``discount`` and counts as a response. Organic orders in a
   coupon's 7 days may use it too (a subsidy with no uplift). A first order may use a newcomer
   coupon (hunters nearly always). Responses follow per-channel true probabilities (wecom highest,
   sms lowest), 0.15 times as likely after dropout.
7. About ``REFUND_RATE`` of lines are refunded 1-10 days later in the same order (a negative line
   of the same category, quantity and amount), only while the customer is still active: no row of
   any kind is at or after ``dropout_at``.
8. Purchase channel: mostly the customer's usual one (by acquisition source; mini_program for
   most), coupon orders mostly on the mini-program. Hours of day follow a morning/lunch/evening
   profile.

Time is simulated in fractional days since ``start``; all output timestamps are naive wall-clock
times (read as Asia/Shanghai), at whole seconds, in ``[start, end)``. The simulation runs
``FUTURE_DAYS`` past ``end`` to compute the future columns of the ground truth; nothing at or
after ``end`` is written to the input tables.
"""

from __future__ import annotations

import datetime
import math
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from features.contracts import PURCHASE_CHANNELS, TOUCH_CHANNELS

__all__ = [
    "SyntheticData",
    "generate",
    "generate_to",
    "write_synthetic",
    "iter_synthetic_chunks",
    "season_multiplier",
    "CATEGORIES",
    "SIM_TOUCH_CHANNELS",
    "CNY_DATES",
]

# --------------------------------------------------------------------------------------------
# Model constants
# --------------------------------------------------------------------------------------------

#: Customers simulated per block. Fixed, so the output never depends on the machine.
CHUNK_CUSTOMERS = 100_000
#: Days simulated past ``end`` for the future columns of the ground truth.
FUTURE_DAYS = 180
#: Needs due within this many days of an order are bought in the same order (basket).
BASKET_WINDOW_DAYS = 3.0
#: Share of lines refunded later in the same order.
REFUND_RATE = 0.02
#: A "standard" coupon (CNY); ``coupon_effect`` is defined for this value.
STANDARD_COUPON = 20.0
#: Days a coupon stays usable after it is sent.
COUPON_DAYS = 7.0
#: Newcomer coupon (CNY) on a first order: used by 95 % of coupon hunters, this share of others.
NEWCOMER_COUPON = 20.0
NEWCOMER_COUPON_USE = 0.3
_SECONDS_PER_DAY = 86_400
_ORDER_ID_WIDTH = 10
#: Worker threads simulating blocks (results never depend on it).
_WORKERS = 2

#: Touch channels simulated (a subset of ``contracts.TOUCH_CHANNELS``).
SIM_TOUCH_CHANNELS: tuple[str, ...] = ("wecom", "group", "moments", "sms", "mini_program")

#: Chinese New Year (Spring Festival day 1); other years fall back to 5 February.
CNY_DATES: dict[int, datetime.date] = {
    2018: datetime.date(2018, 2, 16),
    2019: datetime.date(2019, 2, 5),
    2020: datetime.date(2020, 1, 25),
    2021: datetime.date(2021, 2, 12),
    2022: datetime.date(2022, 2, 1),
    2023: datetime.date(2023, 1, 22),
    2024: datetime.date(2024, 2, 10),
    2025: datetime.date(2025, 1, 29),
    2026: datetime.date(2026, 2, 17),
    2027: datetime.date(2027, 2, 6),
    2028: datetime.date(2028, 1, 26),
    2029: datetime.date(2029, 2, 13),
    2030: datetime.date(2030, 2, 3),
}


@dataclass(frozen=True)
class _Category:
    name: str
    code: str
    cycle_days: float  # days one pack lasts at consumption speed 1
    price: float  # CNY per pack (mid SKU)
    extra_packs: float  # mean extra packs per purchase for a customer of bulk 1
    gap_sigma: float  # log-normal sigma of the gap noise (mean 1; low = regular)
    stockup: float  # extra packs per unit of promotion intensity
    adopt_base: float  # probability of adopting (not as entry) for loyalty 0
    entry_weight: float  # weight as the entry category


#: The brand's categories: replenishment first, impulse/seasonal last.
CATEGORIES: tuple[_Category, ...] = (
    _Category("diapers", "DIA", 10.0, 129.0, 0.6, 0.30, 0.9, 0.65, 0.40),
    _Category("formula", "FOR", 20.0, 298.0, 0.7, 0.30, 0.9, 0.50, 0.30),
    _Category("wipes", "WIP", 12.0, 39.9, 1.0, 0.40, 0.9, 0.55, 0.08),
    _Category("feeding", "FEE", 60.0, 89.0, 0.3, 0.55, 0.3, 0.30, 0.04),
    _Category("skincare", "SKI", 45.0, 79.0, 0.5, 0.50, 0.5, 0.35, 0.06),
    _Category("snacks", "SNA", 14.0, 35.0, 0.7, 0.50, 0.7, 0.40, 0.05),
    _Category("toys", "TOY", 75.0, 99.0, 0.3, 0.90, 0.3, 0.30, 0.03),
    _Category("clothing", "CLO", 60.0, 129.0, 0.8, 0.90, 0.4, 0.35, 0.04),
)
_N_CAT = len(CATEGORIES)
_CYCLE = np.array([c.cycle_days for c in CATEGORIES])
_PRICE = np.array([c.price for c in CATEGORIES])
_EXTRA = np.array([c.extra_packs for c in CATEGORIES])
_SIGMA = np.array([c.gap_sigma for c in CATEGORIES])
_STOCKUP = np.array([c.stockup for c in CATEGORIES])
_ADOPT = np.array([c.adopt_base for c in CATEGORIES])
_ENTRY = np.array([c.entry_weight for c in CATEGORIES]) / sum(c.entry_weight for c in CATEGORIES)
_SKU_FACTOR = np.array([0.85, 0.95, 1.0, 1.1, 1.25, 1.4])
_SKU_WEIGHT = np.array([0.30, 0.25, 0.18, 0.12, 0.09, 0.06])
_N_SKU = len(_SKU_FACTOR)

_SOURCES = ("ads", "store", "referral", "live")
_SOURCE_P = np.array([0.35, 0.25, 0.20, 0.20])
_SOURCE_LOYALTY = np.array([-0.2, 0.3, 0.4, -0.1])
_SOURCE_NO_ACTIVATION = np.array([0.14, 0.06, 0.05, 0.12])
_SOURCE_COUPON_ONLY = np.array([0.11, 0.05, 0.04, 0.18])
_SOURCE_TIER_BONUS = np.array([0.0, 0.3, 0.2, 0.0])
_TIERS = ("normal", "silver", "gold", "black")
_TIER_CUTS = np.array([0.6, 1.3, 2.0])
_CITY_P = np.array([0.18, 0.30, 0.25, 0.17, 0.10])

# Preferred purchase channel by acquisition source, over contracts.PURCHASE_CHANNELS.
_PURCHASE_P = {
    "mini_program": (0.74, 0.40, 0.70, 0.50),
    "store": (0.08, 0.50, 0.12, 0.04),
    "live": (0.08, 0.04, 0.08, 0.40),
    "marketplace": (0.0, 0.0, 0.0, 0.0),
    "app": (0.06, 0.04, 0.06, 0.04),
    "web": (0.04, 0.02, 0.04, 0.02),
}

# Per touch channel: mean days between campaigns, audience share of reachable members, share of
# campaigns with a coupon, base reachability, true response mean, typical send hour, jitter hours.
_CH_GAP = np.array([10.0, 7.0, 7.0, 14.0, 10.0])
_CH_AUDIENCE = np.array([0.16, 0.12, 0.10, 0.18, 0.14])
_CH_COUPON = np.array([0.5, 0.3, 0.1, 0.4, 0.4])
_CH_REACH = np.array([0.55, 0.35, 0.50, 0.95, 0.60])
_CH_RESPONSE = np.array([0.30, 0.10, 0.06, 0.02, 0.12])
_CH_HOUR = np.array([10.0, 19.5, 8.5, 10.5, 11.5])
_CH_JITTER_H = np.array([8.0, 0.1, 0.1, 0.5, 0.25])
_RESPONSE_CONCENTRATION = 6.0
_COUPON_VALUES = np.array([5.0, 10.0, 20.0, 30.0, 50.0])
_COUPON_VALUE_P = np.array([0.10, 0.30, 0.35, 0.15, 0.10])

# Orders by hour of day (local time): morning, lunch and an evening peak.
_HOUR_W = np.array(
    [1.0, 0.5, 0.3, 0.2, 0.2, 0.3, 0.8, 1.5, 2.5, 3.5, 4.5, 4.5]
    + [4.0, 3.5, 3.5, 3.5, 3.5, 3.5, 4.0, 5.0, 6.0, 6.5, 5.0, 2.5]
)
_HOUR_CDF = np.cumsum(_HOUR_W) / _HOUR_W.sum()


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticData:
    """One synthetic data set: the three input tables, the ground truth and the window.

    Attributes:
        transactions: Line grain, one line per category per order (refunds: negative lines).
        touches: One row per message sent to a customer.
        customers: One row per customer (``member_tier`` is the tier at joining).
        truth: One row per customer: latent parameters and future outcomes, see ``generate``.
        start: First day of the window (naive midnight).
        end: Exclusive end of the window (naive midnight); no event at or after it.
    """

    transactions: pd.DataFrame
    touches: pd.DataFrame
    customers: pd.DataFrame
    truth: pd.DataFrame
    start: pd.Timestamp
    end: pd.Timestamp


def generate(
    n_customers: int,
    *,
    days: int = 730,
    seed: int = 42,
    end: datetime.date = datetime.date(2026, 7, 1),
) -> SyntheticData:
    """Simulate ``n_customers`` customers over the ``days`` days before ``end``.

    Args:
        n_customers: Number of customers (all join inside the window).
        days: Length of the window in days; ``start = end - days``.
        seed: Seed of the one random generator; same arguments give identical frames.
        end: Exclusive end of the window (a date; midnight).

    Everything is held in memory as pandas frames: for a million customers use ``generate_to``,
    which streams block by block.

    Returns:
        ``SyntheticData`` with pandas frames as ``pd.read_parquet`` would return them after
        ``write_synthetic`` (string columns as ``object``, timestamps ``datetime64[us]``).

        ``transactions``: customer_id, order_id, ordered_at, amount (net paid, 2 decimals),
        category, sku, quantity, channel, discount. ``touches``: customer_id, channel, sent_at,
        campaign_id, responded_at (NaT = no response seen before ``end``), coupon_value (0 = no
        coupon). ``customers``: customer_id, joined_at, member_tier (tier at joining, not a
        leak), acquisition_source, city_tier (1 = largest cities).

        ``truth`` (one row per customer, for evaluation only, never for features):

        - ``joined_at``, ``dropout_at`` (stops buying for good; may be at or after ``end``),
          ``alive_at_end`` (``dropout_at >= end``), ``activated`` (False: never buys;
          ``dropout_at == joined_at``), ``dropout_rate_per_day`` (exponential lifetime rate).
        - ``loyalty`` (latent, standard normal plus source shift), ``share_of_wallet`` (chance a
          need is bought here), ``consumption_speed`` (packs used per cycle; gaps scale with
          its inverse), ``n_categories_adopted`` (categories adopted before ``end`` or dropout).
        - ``purchase_rate_per_day``: expected organic purchases per day while alive, on a
          season-neutral day, with the categories adopted at the end (or at dropout): the sum
          over adopted categories of ``share_of_wallet * consumption_speed / (mean packs *
          cycle)``, mean packs ``1 + bulk * extra_packs`` (exact long-run renewal rate). It
          counts category purchases, i.e. order lines: orders merge purchases due within
          ``BASKET_WINDOW_DAYS`` (about 1.35 lines per order) and breadth grows with tenure, so
          observed orders per alive day are about 0.7 times it (coupon orders included). Use it
          to rank customers (Spearman 0.94 with observed orders per alive day). 0 when not
          activated.
        - ``coupon_effect``: probability that a standard (20 CNY) coupon received while alive
          causes an extra order within 7 days, beyond the organic ones (other values scale it as
          ``1 - (1 - e) ** (value / 20) ** 0.6``). The extra order buys the most-due category
          early, so part of it is pulled forward from a later organic purchase. ``coupon_only``:
          a coupon hunter who buys (almost) only with coupons.
        - ``response_<channel>``: true probability of responding to a touch while alive (after
          dropout it is 0.15 times that); ``reachable_<channel>``: whether campaigns can reach
          the customer there.
        - Future outcomes, from the same simulation run on past ``end`` with campaigns as usual:
          ``orders_next_90d`` and ``spend_next_180d`` are the realised values (net of refunds);
          ``expected_orders_next_90d``, ``expected_spend_next_180d``, ``prob_order_next_30d``
          and ``prob_order_next_90d`` are expectations given the latent parameters, the state at
          ``end`` and being alive at ``end``, with the exponential dropout integrated out exactly
          (each future event weighted by its survival probability) over one simulated path of
          needs and campaigns (so unbiased, with little noise left). They are 0 when not alive at
          ``end``.
    """
    ctx = _Context.build(n_customers, days=days, seed=seed, end=end)
    parts: dict[str, list[pa.Table]] = {k: [] for k in ("transactions", "touches", "customers")}
    parts["truth"] = []
    for tables in _iter_chunks(ctx):
        for name, table in tables.items():
            parts[name].append(table)
    frames = {name: _concat(tables, _SCHEMAS[name]).to_pandas() for name, tables in parts.items()}
    return SyntheticData(
        transactions=frames["transactions"],
        touches=frames["touches"],
        customers=frames["customers"],
        truth=frames["truth"],
        start=pd.Timestamp(ctx.start),
        end=pd.Timestamp(ctx.end),
    )


def iter_synthetic_chunks(
    n_customers: int,
    *,
    days: int = 730,
    seed: int = 42,
    end: datetime.date = datetime.date(2026, 7, 1),
) -> Iterator[dict[str, pa.Table]]:
    """Yield the data of ``generate`` block by block as Arrow tables.

    Each item maps ``transactions``, ``touches``, ``customers`` and ``truth`` to the rows of one
    block of ``CHUNK_CUSTOMERS`` customers (ids ascending); concatenated they equal ``generate``.
    """
    return _iter_chunks(_Context.build(n_customers, days=days, seed=seed, end=end))


def write_synthetic(
    data: SyntheticData, out_dir: Path, *, fmt: Literal["parquet", "csv"] = "parquet"
) -> dict[str, Path]:
    """Write ``transactions``, ``touches``, ``customers`` as ``fmt`` and ``ground_truth.parquet``.

    Returns:
        The written paths, keyed ``transactions``, ``touches``, ``customers``, ``truth``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = {
        "transactions": data.transactions,
        "touches": data.touches,
        "customers": data.customers,
        "truth": data.truth,
    }
    paths = _paths(out_dir, fmt)
    for name, frame in frames.items():
        table = pa.Table.from_pandas(frame, schema=_SCHEMAS[name], preserve_index=False)
        table = table.replace_schema_metadata(None)
        writer = _open_writer(paths[name], _SCHEMAS[name], "parquet" if name == "truth" else fmt)
        try:
            writer.write(table)
        finally:
            writer.close()
    return paths


def generate_to(
    out_dir: Path,
    n_customers: int,
    *,
    days: int = 730,
    seed: int = 42,
    end: datetime.date = datetime.date(2026, 7, 1),
    fmt: Literal["parquet", "csv"] = "parquet",
) -> dict[str, Path]:
    """Generate as ``generate`` does and stream the tables to ``out_dir`` block by block.

    Memory stays at about one block of customers, whatever ``n_customers`` is. The files hold
    the same rows as ``write_synthetic(generate(...))`` (row groups may differ).

    Returns:
        The written paths, keyed ``transactions``, ``touches``, ``customers``, ``truth``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = _paths(out_dir, fmt)
    ctx = _Context.build(n_customers, days=days, seed=seed, end=end)
    writers = {
        name: _open_writer(path, _SCHEMAS[name], "parquet" if name == "truth" else fmt)
        for name, path in paths.items()
    }
    try:
        for tables in _iter_chunks(ctx):
            for name, table in tables.items():
                writers[name].write(table)
    finally:
        for writer in writers.values():
            writer.close()
    return paths


def season_multiplier(start: datetime.date, n_days: int) -> np.ndarray:
    """Daily shopping-intensity multiplier for ``n_days`` days from ``start`` (1 = ordinary day).

    618 ramps from June 1 to a peak on June 18; Double 11 is raised Nov 1-10 and peaks Nov 11;
    12.12 is a small peak; the three weeks before Chinese New Year stock up and its holiday week
    dips; weekends are slightly busier (weekly mean 1).
    """
    dates = np.datetime64(start, "D") + np.arange(n_days)
    months = dates.astype("datetime64[M]")
    month = months.astype(np.int64) % 12 + 1
    dom = (dates - months.astype("datetime64[D]")).astype(np.int64) + 1
    weekday = (dates.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    mult = np.where(weekday >= 5, 1.06, 1.0)
    mult = mult / (5.0 + 2 * 1.06) * 7.0
    june = (month == 6) & (dom <= 17)
    mult = np.where(june, mult * (1.0 + 0.9 * (dom - 1) / 16.0), mult)
    mult = np.where((month == 6) & (dom == 18), 3.0, mult)
    mult = np.where((month == 6) & (dom >= 19) & (dom <= 21), mult * 0.8, mult)
    mult = np.where((month == 11) & (dom <= 10), mult * 1.6, mult)
    mult = np.where((month == 11) & (dom == 11), 4.0, mult)
    mult = np.where((month == 11) & (dom >= 12) & (dom <= 14), mult * 0.8, mult)
    mult = np.where((month == 12) & (dom == 12), 1.8, mult)
    years = dates.astype("datetime64[Y]").astype(np.int64) + 1970
    for year in range(int(years.min()), int(years.max()) + 2):
        cny = np.datetime64(CNY_DATES.get(year, datetime.date(year, 2, 5)), "D")
        offset = (dates - cny).astype(np.int64)
        mult = np.where((offset >= -21) & (offset < 0), mult * 1.35, mult)
        mult = np.where((offset >= 0) & (offset < 7), mult * 0.4, mult)
    return np.asarray(mult, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# Output schemas and writers
# --------------------------------------------------------------------------------------------

_TS = pa.timestamp("us")
_SCHEMAS: dict[str, pa.Schema] = {
    "transactions": pa.schema(
        [
            ("customer_id", pa.string()),
            ("order_id", pa.string()),
            ("ordered_at", _TS),
            ("amount", pa.float64()),
            ("category", pa.string()),
            ("sku", pa.string()),
            ("quantity", pa.int32()),
            ("channel", pa.string()),
            ("discount", pa.float64()),
        ]
    ),
    "touches": pa.schema(
        [
            ("customer_id", pa.string()),
            ("channel", pa.string()),
            ("sent_at", _TS),
            ("campaign_id", pa.string()),
            ("responded_at", _TS),
            ("coupon_value", pa.float64()),
        ]
    ),
    "customers": pa.schema(
        [
            ("customer_id", pa.string()),
            ("joined_at", _TS),
            ("member_tier", pa.string()),
            ("acquisition_source", pa.string()),
            ("city_tier", pa.int8()),
        ]
    ),
    "truth": pa.schema(
        [
            ("customer_id", pa.string()),
            ("joined_at", _TS),
            ("activated", pa.bool_()),
            ("dropout_at", _TS),
            ("alive_at_end", pa.bool_()),
            ("dropout_rate_per_day", pa.float64()),
            ("loyalty", pa.float64()),
            ("purchase_rate_per_day", pa.float64()),
            ("consumption_speed", pa.float64()),
            ("share_of_wallet", pa.float64()),
            ("n_categories_adopted", pa.int32()),
            ("coupon_effect", pa.float64()),
            ("coupon_only", pa.bool_()),
        ]
        + [(f"response_{ch}", pa.float64()) for ch in SIM_TOUCH_CHANNELS]
        + [(f"reachable_{ch}", pa.bool_()) for ch in SIM_TOUCH_CHANNELS]
        + [
            ("orders_next_90d", pa.int32()),
            ("spend_next_180d", pa.float64()),
            ("expected_orders_next_90d", pa.float64()),
            ("expected_spend_next_180d", pa.float64()),
            ("prob_order_next_30d", pa.float64()),
            ("prob_order_next_90d", pa.float64()),
        ]
    ),
}

_TX_LOCAL_SCHEMA = _SCHEMAS["transactions"].set(1, pa.field("order_id", pa.int64()))


def _paths(out_dir: Path, fmt: str) -> dict[str, Path]:
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"fmt must be 'parquet' or 'csv', not {fmt!r}")
    paths = {name: out_dir / f"{name}.{fmt}" for name in ("transactions", "touches", "customers")}
    paths["truth"] = out_dir / "ground_truth.parquet"
    return paths


class _Writer:
    """Appends Arrow tables to one Parquet or CSV file (deterministic bytes)."""

    def __init__(self, path: Path, schema: pa.Schema, fmt: str) -> None:
        self.fmt = fmt
        if fmt == "parquet":
            self._pq = pq.ParquetWriter(path, schema, compression="zstd")
        else:
            # CSV: timestamps at whole seconds print as "YYYY-MM-DD HH:MM:SS".
            self._csv_schema = pa.schema(
                [pa.field(f.name, pa.timestamp("s") if f.type == _TS else f.type) for f in schema]
            )
            self._csv = pacsv.CSVWriter(path, self._csv_schema)

    def write(self, table: pa.Table) -> None:
        if self.fmt == "parquet":
            self._pq.write_table(table, row_group_size=1 << 20)
        else:
            self._csv.write_table(table.cast(self._csv_schema))

    def close(self) -> None:
        if self.fmt == "parquet":
            self._pq.close()
        else:
            self._csv.close()


def _open_writer(path: Path, schema: pa.Schema, fmt: str) -> _Writer:
    return _Writer(path, schema, fmt)


def _concat(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    if not tables:
        return schema.empty_table()
    return pa.concat_tables(tables).combine_chunks()


# --------------------------------------------------------------------------------------------
# Global context: window, calendar clock, join times, campaign schedule
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    n: int
    days: int
    start: datetime.datetime
    end: datetime.datetime
    seed_seq: np.random.SeedSequence
    id_width: int
    # Calendar clock: grid of day boundaries and the cumulative multiplier ("operational time").
    mult: np.ndarray
    grid: np.ndarray
    clock: np.ndarray
    join_s: np.ndarray  # int64 seconds since start, sorted (customer order)
    camp_s: np.ndarray  # int64 seconds since start, sorted
    camp_ch: np.ndarray  # index into SIM_TOUCH_CHANNELS
    camp_value: np.ndarray  # coupon value, 0 = none
    camp_audience: np.ndarray  # share of reachable members targeted

    @staticmethod
    def build(n: int, *, days: int, seed: int, end: datetime.date) -> _Context:
        if n < 1:
            raise ValueError("n_customers must be at least 1")
        if days < 30:
            raise ValueError("days must be at least 30")
        if not set(SIM_TOUCH_CHANNELS) <= set(TOUCH_CHANNELS):
            raise AssertionError("SIM_TOUCH_CHANNELS must be contract touch channels")
        end_dt = datetime.datetime(end.year, end.month, end.day)
        start_dt = end_dt - datetime.timedelta(days=days)
        seed_seq = np.random.SeedSequence(seed)
        join_ss, camp_ss = seed_seq.spawn(2)
        horizon = days + FUTURE_DAYS + 60
        mult = season_multiplier(start_dt.date(), horizon)
        grid = np.arange(horizon + 1, dtype=np.float64)
        clock = np.concatenate([[0.0], np.cumsum(mult)])
        join_s = _draw_joins(np.random.default_rng(join_ss), n, days, mult)
        camp = _draw_campaigns(np.random.default_rng(camp_ss), days + FUTURE_DAYS, mult)
        return _Context(
            n=n,
            days=days,
            start=start_dt,
            end=end_dt,
            seed_seq=seed_seq,
            id_width=max(7, len(str(n))),
            mult=mult,
            grid=grid,
            clock=clock,
            join_s=join_s,
            camp_s=camp[0],
            camp_ch=camp[1],
            camp_value=camp[2],
            camp_audience=camp[3],
        )

    def fwd(self, t: np.ndarray) -> np.ndarray:
        """Real days -> operational time (cumulative season multiplier)."""
        tc = np.clip(t, 0.0, self.grid[-2])
        day = tc.astype(np.int64)
        return self.clock[day] + (tc - day) * self.mult[day]

    def inv(self, u: np.ndarray) -> np.ndarray:
        """Operational time -> real days (clamped at the end of the grid, beyond any stop)."""
        return np.interp(u, self.clock, self.grid)

    def day_mult(self, t: np.ndarray) -> np.ndarray:
        day = np.clip(t, 0, len(self.mult) - 1).astype(np.int64)
        return self.mult[day]


def _hour_seconds(rng: np.random.Generator, n: int) -> np.ndarray:
    """Seconds after midnight following the hour-of-day profile."""
    hour = np.searchsorted(_HOUR_CDF, rng.random(n), side="right")
    return hour.astype(np.int64) * 3600 + rng.integers(0, 3600, n)


def _draw_joins(rng: np.random.Generator, n: int, days: int, mult: np.ndarray) -> np.ndarray:
    """Join times (seconds since start), sorted: growing acquisition, bumps at big sales."""
    weight = np.exp(0.9 * np.arange(days) / days) * mult[:days] ** 1.3
    cdf = np.cumsum(weight) / weight.sum()
    day = np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), days - 1)
    join_s = day.astype(np.int64) * _SECONDS_PER_DAY + _hour_seconds(rng, n)
    return np.sort(join_s)


def _draw_campaigns(
    rng: np.random.Generator, days: int, mult: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Campaign schedule over ``[0, days)``: per channel every week or two, more at big sales."""
    times, chans, values, audiences = [], [], [], []
    promo_days = np.nonzero(mult[:days] >= 2.5)[0]  # 618 and Double 11 peak days
    for ch in range(len(SIM_TOUCH_CHANNELS)):
        gaps = _CH_GAP[ch] * rng.uniform(0.7, 1.3, int(days / _CH_GAP[ch] * 1.5) + 2)
        day = np.cumsum(gaps) - rng.uniform(0, _CH_GAP[ch])
        day = np.floor(day[(day >= 0) & (day < days)])
        # Pre-sale pushes three days before each peak, always with a coupon, wider audience.
        presale = promo_days - 3
        presale = presale[presale >= 0].astype(np.float64)
        k, kp = len(day), len(presale)
        value = np.where(
            rng.random(k) < _CH_COUPON[ch], rng.choice(_COUPON_VALUES, k, p=_COUPON_VALUE_P), 0.0
        )
        times.append(np.concatenate([day, presale]))
        chans.append(np.full(k + kp, ch, dtype=np.int8))
        values.append(np.concatenate([value, rng.choice(_COUPON_VALUES[1:], kp)]))
        audiences.append(
            np.concatenate([_CH_AUDIENCE[ch] * rng.uniform(0.6, 1.4, k), np.full(kp, 0.35)])
        )
    day_all = np.concatenate(times)
    ch_all = np.concatenate(chans)
    hour = _CH_HOUR[ch_all] + rng.uniform(0, 2, len(day_all))
    camp_s = (day_all * _SECONDS_PER_DAY + hour * 3600).astype(np.int64)
    order = np.lexsort((ch_all, camp_s))
    return (
        camp_s[order],
        ch_all[order],
        np.concatenate(values)[order],
        np.concatenate(audiences)[order],
    )


# --------------------------------------------------------------------------------------------
# One block of customers
# --------------------------------------------------------------------------------------------


def _iter_chunks(ctx: _Context) -> Iterator[dict[str, pa.Table]]:
    """Simulate the blocks in order, two at a time on worker threads (numpy releases the GIL).

    Each block has its own child generator, so the result does not depend on scheduling; order
    ids are numbered here, in block order, once the previous blocks' counts are known.
    """
    n_chunks = math.ceil(ctx.n / CHUNK_CUSTOMERS)
    chunk_seeds = ctx.seed_seq.spawn(2 + n_chunks)[2:]

    def run(i: int) -> tuple[dict[str, pa.Table], int]:
        lo, hi = i * CHUNK_CUSTOMERS, min(ctx.n, (i + 1) * CHUNK_CUSTOMERS)
        return _simulate_chunk(ctx, np.random.default_rng(chunk_seeds[i]), lo, hi)

    order_offset = 0
    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        pending: deque[Future[tuple[dict[str, pa.Table], int]]] = deque()
        submitted = 0
        while submitted < min(_WORKERS, n_chunks):
            pending.append(pool.submit(run, submitted))
            submitted += 1
        while pending:
            tables, n_orders = pending.popleft().result()
            if submitted < n_chunks:
                pending.append(pool.submit(run, submitted))
                submitted += 1
            tx = tables["transactions"]
            local = tx.column("order_id").to_numpy()
            order_ids = _ids("O", order_offset + 1 + local, _ORDER_ID_WIDTH)
            tables["transactions"] = tx.set_column(1, _SCHEMAS["transactions"].field(1), order_ids)
            order_offset += n_orders
            yield tables


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1.0 - p))


def _ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    """``prefix`` + zero-padded ``numbers`` as an Arrow string array (no Python strings)."""
    digits = pc.utf8_lpad(pc.cast(pa.array(numbers, pa.int64()), pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _timestamps(ctx: _Context, seconds: np.ndarray) -> pa.Array:
    base = np.datetime64(ctx.start, "s").astype(np.int64)
    return pa.array((seconds + base) * 1_000_000, pa.int64()).cast(_TS)


def _simulate_chunk(
    ctx: _Context, rng: np.random.Generator, lo: int, hi: int
) -> tuple[dict[str, pa.Table], int]:
    n = hi - lo
    d_s = ctx.days * _SECONDS_PER_DAY
    join_s = ctx.join_s[lo:hi]
    join_d = join_s / _SECONDS_PER_DAY

    # -- customer attributes and latent parameters ---------------------------------------
    source = rng.choice(len(_SOURCES), n, p=_SOURCE_P)
    loyalty = rng.standard_normal(n) + _SOURCE_LOYALTY[source]
    city = rng.choice(5, n, p=_CITY_P) + 1
    tier_score = 0.8 * loyalty + 0.6 * rng.standard_normal(n) + _SOURCE_TIER_BONUS[source]
    tier = np.searchsorted(_TIER_CUTS, tier_score, side="right")
    activated = rng.random(n) >= _SOURCE_NO_ACTIVATION[source] * np.exp(-0.3 * loyalty)
    coupon_only = rng.random(n) < np.minimum(
        0.6, _SOURCE_COUPON_ONLY[source] * np.exp(-0.4 * loyalty)
    )
    share = _sigmoid(0.8 + 0.9 * loyalty + 0.5 * rng.standard_normal(n))
    share = np.where(coupon_only, 0.02, share)
    speed = np.clip(rng.gamma(5.0, 0.2, n) * np.exp(0.15 * loyalty), 0.2, 5.0)
    bulk = rng.gamma(2.0, 0.5, n)
    dropout_rate = rng.gamma(1.2, 1.0 / (1.2 * 460.0), n) * np.exp(-0.7 * loyalty)
    dropout_rate = np.where(coupon_only, 1.5 * dropout_rate, dropout_rate)
    lifetime_s = np.minimum(rng.exponential(1.0, n) / dropout_rate, 36_500.0) * _SECONDS_PER_DAY
    dropout_s = np.where(activated, join_s + lifetime_s.astype(np.int64), join_s)
    alive_end = dropout_s >= d_s
    coupon_effect = np.where(
        coupon_only,
        rng.beta(6.0, 3.0, n),
        np.minimum(rng.beta(1.0, 14.0, n) * np.exp(-0.5 * loyalty), 0.9),
    )
    n_ch = len(SIM_TOUCH_CHANNELS)
    reach = rng.random((n, n_ch)) < _sigmoid(_logit(_CH_REACH)[None, :] + 0.5 * loyalty[:, None])
    reach[:, 2] &= reach[:, 0] | (rng.random(n) < 0.2)  # Moments need a WeCom friend (mostly)
    response = rng.beta(
        _CH_RESPONSE * _RESPONSE_CONCENTRATION,
        (1 - _CH_RESPONSE) * _RESPONSE_CONCENTRATION,
        (n, n_ch),
    )
    pref_channel = np.empty(n, dtype=np.int8)
    for s in range(len(_SOURCES)):
        sel = source == s
        p = np.array([_PURCHASE_P[c][s] for c in PURCHASE_CHANNELS])
        pref_channel[sel] = rng.choice(len(PURCHASE_CHANNELS), int(sel.sum()), p=p / p.sum())
    pref_sku = rng.choice(_N_SKU, (n, _N_CAT), p=_SKU_WEIGHT).astype(np.int8)

    # -- category adoption: entry at joining, more later (more and sooner when loyal) -------
    entry = rng.choice(_N_CAT, n, p=_ENTRY)
    adopt_p = _sigmoid(_logit(_ADOPT)[None, :] + 1.1 * loyalty[:, None])
    adopts = rng.random((n, _N_CAT)) < adopt_p
    delay = rng.exponential(1.0, (n, _N_CAT)) * (150.0 * np.exp(-0.5 * loyalty))[:, None]
    adopt_d = np.where(adopts, join_d[:, None] + 14.0 + delay, np.inf)
    rows = np.arange(n)
    adopt_d[rows, entry] = join_d + rng.exponential(3.0, n)  # first need: the golden week
    adopt_d[~activated] = np.inf
    stop_s = np.where(alive_end, d_s + FUTURE_DAYS * _SECONDS_PER_DAY, dropout_s)
    horizon_end = np.minimum(dropout_s, d_s) / _SECONDS_PER_DAY
    adopted_end = adopt_d < horizon_end[:, None]
    mean_packs = 1.0 + bulk[:, None] * _EXTRA[None, :]
    purchase_rate = np.where(
        activated,
        (adopted_end * (share * speed)[:, None] / (mean_packs * _CYCLE[None, :])).sum(1),
        0.0,
    )

    # -- touches: campaigns to a random share of reachable members who have joined ---------
    tc, tk = [], []
    reach_idx = [np.nonzero(reach[:, j])[0] for j in range(n_ch)]
    for k in range(len(ctx.camp_s)):
        m = int(np.searchsorted(join_s, ctx.camp_s[k], side="left"))  # joined strictly before
        ri = reach_idx[ctx.camp_ch[k]]
        m_reach = int(np.searchsorted(ri, m))
        if m_reach == 0:
            continue
        hit = ri[_bernoulli_positions(rng, m_reach, float(ctx.camp_audience[k]))]
        tc.append(hit.astype(np.int32))
        tk.append(np.full(len(hit), k, dtype=np.int32))
    t_cust = np.concatenate(tc) if tc else np.zeros(0, np.int32)
    t_camp = np.concatenate(tk) if tk else np.zeros(0, np.int32)
    t_ch = ctx.camp_ch[t_camp]
    jitter = (rng.random(len(t_camp)) * _CH_JITTER_H[t_ch] * 3600).astype(np.int64)
    t_sent = ctx.camp_s[t_camp] + jitter
    t_value = ctx.camp_value[t_camp]
    alive_at_send = activated[t_cust] & (t_sent < dropout_s[t_cust])

    # Coupon-induced extra orders (alive, or alive_at_end for future sends: see truth docs).
    can_induce = (t_value > 0) & activated[t_cust] & (alive_at_send | alive_end[t_cust])
    eligible = np.nonzero(can_induce)[0]
    e_value = (t_value[eligible] / STANDARD_COUPON) ** 0.6
    p_ind = 1.0 - (1.0 - coupon_effect[t_cust[eligible]]) ** e_value
    induced = np.zeros(len(t_cust), dtype=bool)
    induced[eligible] = rng.random(len(eligible)) < p_ind
    ind_delay = np.clip(rng.gamma(2.0, 0.75, len(t_cust)), 0.02, COUPON_DAYS - 0.1)
    ind_idx = np.nonzero(induced)[0]
    ind_t = t_sent[ind_idx] / _SECONDS_PER_DAY + ind_delay[ind_idx]
    ind_order = np.lexsort((ind_t, t_cust[ind_idx]))
    ind_idx, ind_t = ind_idx[ind_order], ind_t[ind_order]
    ind_count = np.bincount(t_cust[ind_idx], minlength=n)
    ind_end = np.cumsum(ind_count)
    ind_ptr = ind_end - ind_count

    # -- the need/order process ------------------------------------------------------------
    due0 = ctx.fwd(np.where(np.isfinite(adopt_d), adopt_d, 1e9))
    due0[~np.isfinite(adopt_d)] = np.inf
    sim = _simulate_orders(
        ctx, rng, due0, stop_s / _SECONDS_PER_DAY, speed, bulk, share, ind_t, ind_ptr, ind_end
    )
    o_cust, o_t, o_ind, l_order, l_cat, l_q = sim
    n_o = len(o_cust)
    o_is_ind = o_ind >= 0
    o_touch = np.full(n_o, -1, dtype=np.int64)
    o_touch[o_is_ind] = ind_idx[o_ind[o_is_ind]]

    # Order time at whole seconds; organic orders get a realistic hour of the day.
    o_s = np.floor(o_t * _SECONDS_PER_DAY).astype(np.int64)
    rehour = np.floor(o_t).astype(np.int64) * _SECONDS_PER_DAY + _hour_seconds(rng, n_o)
    ok = (rehour >= join_s[o_cust]) & (rehour < stop_s[o_cust]) & ~o_is_ind
    o_s = np.where(ok, rehour, o_s)
    o_keep = (o_s >= join_s[o_cust]) & (o_s < stop_s[o_cust])  # guards float round-off

    # Coupon use by organic orders: the latest unused coupon of the last 7 days, if any.
    o_coupon = np.where(o_is_ind, t_value[np.maximum(o_touch, 0)], 0.0)
    cpn = np.nonzero((t_value > 0) & ~induced)[0]
    key_shift = np.int64(1) << np.int64(32)
    cpn_key = t_cust[cpn].astype(np.int64) * key_shift + t_sent[cpn]
    cpn_sort = np.argsort(cpn_key, kind="stable")
    cpn, cpn_key = cpn[cpn_sort], cpn_key[cpn_sort]
    organic = np.nonzero(~o_is_ind & o_keep)[0]
    pos = np.searchsorted(cpn_key, o_cust[organic].astype(np.int64) * key_shift + o_s[organic])
    pos -= 1
    found = pos >= 0
    cand = cpn[np.maximum(pos, 0)] if len(cpn) else np.zeros(len(organic), np.int64)
    found &= (t_cust[cand] == o_cust[organic]) if len(cpn) else False
    found &= o_s[organic] - t_sent[cand] <= COUPON_DAYS * _SECONDS_PER_DAY
    p_use = np.where(coupon_only, 0.95, 0.4)[o_cust[organic]]
    found &= rng.random(len(organic)) < p_use
    users, used = organic[found], cand[found]
    first_use = np.unique(used, return_index=True)[1]  # orders are time-sorted per customer
    o_coupon[users[first_use]] = t_value[used[first_use]]
    # Newcomer coupon on a customer's very first order (what coupon hunters join for).
    first_order = np.unique(o_cust, return_index=True)[1]
    first_order = first_order[o_coupon[first_order] == 0]
    p_new = np.where(coupon_only, 0.95, NEWCOMER_COUPON_USE)[o_cust[first_order]]
    o_coupon[first_order[rng.random(len(first_order)) < p_new]] = NEWCOMER_COUPON

    # Purchase channel: the customer's usual one mostly; coupon orders mostly on the mini-program.
    o_channel = np.where(
        rng.random(n_o) < 0.75,
        pref_channel[o_cust],
        rng.choice(len(PURCHASE_CHANNELS), n_o, p=_base_channel_p()),
    )
    o_channel = np.where(o_is_ind & (rng.random(n_o) < 0.85), 0, o_channel).astype(np.int8)

    # -- lines: SKU, price, discount on the largest line ---------------------------------
    n_l = len(l_order)
    l_cust = o_cust[l_order]
    l_sku = np.where(
        rng.random(n_l) < 0.85, pref_sku[l_cust, l_cat], rng.choice(_N_SKU, n_l, p=_SKU_WEIGHT)
    )
    l_gross = np.round(_PRICE[l_cat] * _SKU_FACTOR[l_sku], 2) * l_q
    l_disc = np.zeros(n_l)
    # Lines of an order are contiguous: the coupon goes on the first line of largest gross.
    c_lines = np.nonzero(o_coupon[l_order] > 0)[0]
    if len(c_lines):
        c_ord = l_order[c_lines]
        starts = np.flatnonzero(np.r_[True, c_ord[1:] != c_ord[:-1]])
        sizes = np.diff(np.r_[starts, len(c_lines)])
        c_gross = l_gross[c_lines]
        is_max = c_gross == np.repeat(np.maximum.reduceat(c_gross, starts), sizes)
        csum = np.cumsum(is_max)
        first = is_max & (csum - np.repeat(csum[starts] - is_max[starts], sizes) == 1)
        sel = c_lines[first]
        l_disc[sel] = np.round(np.minimum(o_coupon[l_order[sel]], 0.5 * l_gross[sel]), 2)
    l_amount = np.round(l_gross - l_disc, 2)
    l_s = o_s[l_order]

    # Refunds: a later negative line in the same order, while the customer is still active.
    refund = np.nonzero(rng.random(n_l) < REFUND_RATE)[0]
    r_s = l_s[refund] + rng.integers(1 * _SECONDS_PER_DAY, 10 * _SECONDS_PER_DAY, len(refund))
    r_ok = (r_s < stop_s[l_cust[refund]]) & o_keep[l_order[refund]]
    refund, r_s = refund[r_ok], r_s[r_ok]

    # -- ground truth: future outcomes -----------------------------------------------------
    future_s = d_s
    is_future = o_keep & (o_s >= future_s)
    surv_o = np.exp(-dropout_rate[o_cust] * (o_s - future_s) / _SECONDS_PER_DAY)
    in90 = is_future & (o_s < future_s + 90 * _SECONDS_PER_DAY)
    in30 = is_future & (o_s < future_s + 30 * _SECONDS_PER_DAY)
    real_o = o_s < dropout_s[o_cust]
    exp_orders = np.bincount(o_cust[in90], surv_o[in90], minlength=n)
    real_orders = np.bincount(o_cust[in90 & real_o], minlength=n)
    p30, p90 = np.zeros(n), np.zeros(n)
    np.maximum.at(p30, o_cust[in30], surv_o[in30])  # survival to the first order in the window
    np.maximum.at(p90, o_cust[in90], surv_o[in90])
    h180 = future_s + 180 * _SECONDS_PER_DAY
    l_future = is_future[l_order] & (l_s < h180)
    surv_l = surv_o[l_order]
    exp_spend = np.bincount(l_cust[l_future], l_amount[l_future] * surv_l[l_future], minlength=n)
    real_l = l_future & (l_s < dropout_s[l_cust])
    real_spend = np.bincount(l_cust[real_l], l_amount[real_l], minlength=n)
    r_cust = l_cust[refund]
    r_amount = l_amount[refund]
    r_future = (r_s >= future_s) & (r_s < h180)
    surv_r = np.exp(-dropout_rate[r_cust] * (r_s - future_s) / _SECONDS_PER_DAY)
    exp_spend -= np.bincount(r_cust[r_future], r_amount[r_future] * surv_r[r_future], minlength=n)
    real_r = r_future & (r_s < dropout_s[r_cust])
    real_spend -= np.bincount(r_cust[real_r], r_amount[real_r], minlength=n)
    for arr in (exp_orders, exp_spend, p30, p90, real_spend):
        arr[~alive_end] = 0.0

    # -- past rows -> Arrow tables ---------------------------------------------------------
    # Sort keys: customer | seconds | small tie-breaker, packed in one int64 (chunk < 2**18).
    s_bits = int(stop_s.max()).bit_length() + 1
    past_idx = np.nonzero(o_keep & (o_s < future_s))[0]
    o_key = (o_cust[past_idx].astype(np.int64) << s_bits) | o_s[past_idx]
    o_sorted = past_idx[_argsort_int(o_key)]
    order_rank = np.full(n_o, -1, dtype=np.int64)
    order_rank[o_sorted] = np.arange(len(o_sorted))
    line_sel = np.nonzero(order_rank[l_order] >= 0)[0]
    r_sel = np.nonzero(r_s < future_s)[0]
    ln_src = np.concatenate([line_sel, refund[r_sel]])
    ln_s = np.concatenate([l_s[line_sel], r_s[r_sel]])
    ln_amount = np.concatenate([l_amount[line_sel], -r_amount[r_sel]])
    ln_disc = np.concatenate([l_disc[line_sel], np.zeros(len(r_sel))])
    ln_cat = l_cat[ln_src]
    ln_key = (l_cust[ln_src].astype(np.int64) << (s_bits + 4)) | (ln_s << 4) | ln_cat
    srt = _argsort_int(ln_key)
    ln_src, ln_s, ln_amount, ln_disc, ln_cat = (
        a[srt] for a in (ln_src, ln_s, ln_amount, ln_disc, ln_cat)
    )
    cust_ids = _ids("C", np.arange(lo + 1, hi + 1), ctx.id_width)
    cat_names = pa.array([c.name for c in CATEGORIES])
    sku_names = pa.array([f"{c.code}-{k + 1:02d}" for c in CATEGORIES for k in range(_N_SKU)])
    transactions = pa.table(
        [
            cust_ids.take(pa.array(l_cust[ln_src])),
            pa.array(order_rank[l_order[ln_src]]),  # block-local; numbered by _iter_chunks
            _timestamps(ctx, ln_s),
            pa.array(ln_amount, pa.float64()),
            cat_names.take(pa.array(ln_cat)),
            sku_names.take(pa.array(ln_cat.astype(np.int64) * _N_SKU + l_sku[ln_src])),
            pa.array(l_q[ln_src].astype(np.int32)),
            pa.array(list(PURCHASE_CHANNELS)).take(pa.array(o_channel[l_order[ln_src]])),
            pa.array(ln_disc, pa.float64()),
        ],
        schema=_TX_LOCAL_SCHEMA,
    )

    # Touches sent before the end, with responses (far fewer after dropout).
    past_t = np.nonzero(t_sent < d_s)[0]
    p_resp = response[t_cust, t_ch] * np.where(alive_at_send, 1.0, 0.15)
    responded = (rng.random(len(t_cust)) < p_resp) | induced
    resp_delay = np.minimum(np.exp(np.log(3.0) + 1.2 * rng.standard_normal(len(t_cust))), 168.0)
    resp_s = t_sent + (resp_delay * 3600).astype(np.int64)
    ind_resp = t_sent[ind_idx] + (ind_delay[ind_idx] * rng.uniform(0.1, 0.9, len(ind_idx)) * 86400)
    resp_s[ind_idx] = ind_resp.astype(np.int64)
    responded &= resp_s < d_s
    c_bits = len(ctx.camp_s).bit_length()  # a customer gets each campaign at most once: unique
    t_key = (t_cust[past_t].astype(np.int64) << (s_bits + c_bits)) | (t_sent[past_t] << c_bits)
    t_key |= t_camp[past_t]
    tsrt = past_t[_argsort_int(t_key)]
    resp_arr = _timestamps(ctx, resp_s[tsrt])
    resp_arr = pc.if_else(pa.array(responded[tsrt]), resp_arr, pa.scalar(None, _TS))
    touches = pa.table(
        [
            cust_ids.take(pa.array(t_cust[tsrt])),
            pa.array(list(SIM_TOUCH_CHANNELS)).take(pa.array(t_ch[tsrt])),
            _timestamps(ctx, t_sent[tsrt]),
            _ids("CMP", np.arange(1, len(ctx.camp_s) + 1), 5).take(pa.array(t_camp[tsrt])),
            resp_arr,
            pa.array(t_value[tsrt], pa.float64()),
        ],
        schema=_SCHEMAS["touches"],
    )

    joined_ts = _timestamps(ctx, join_s)
    customers = pa.table(
        [
            cust_ids,
            joined_ts,
            pa.array(list(_TIERS)).take(pa.array(tier)),
            pa.array(list(_SOURCES)).take(pa.array(source)),
            pa.array(city.astype(np.int8)),
        ],
        schema=_SCHEMAS["customers"],
    )
    truth_cols = [
        cust_ids,
        joined_ts,
        pa.array(activated),
        _timestamps(ctx, dropout_s),
        pa.array(alive_end),
        pa.array(dropout_rate),
        pa.array(loyalty),
        pa.array(purchase_rate),
        pa.array(speed),
        pa.array(share),
        pa.array(adopted_end.sum(1).astype(np.int32)),
        pa.array(coupon_effect),
        pa.array(coupon_only),
    ]
    truth_cols += [pa.array(response[:, j]) for j in range(n_ch)]
    truth_cols += [pa.array(reach[:, j]) for j in range(n_ch)]
    truth_cols += [
        pa.array(real_orders.astype(np.int32)),
        pa.array(np.round(real_spend, 2)),
        pa.array(exp_orders),
        pa.array(exp_spend),
        pa.array(p30),
        pa.array(p90),
    ]
    truth = pa.table(truth_cols, schema=_SCHEMAS["truth"])
    tables = {
        "transactions": transactions,
        "touches": touches,
        "customers": customers,
        "truth": truth,
    }
    return tables, len(o_sorted)


def _argsort_int(keys: np.ndarray) -> np.ndarray:
    """Argsort of integer keys that is the same on every CPU: fast path when keys are unique.

    An unstable sort may order equal keys differently across SIMD implementations; ties are rare
    here (two events of one customer in the same second), so only then pay for a stable sort.
    """
    order = np.argsort(keys)
    ranked = keys[order]
    if len(keys) > 1 and bool((ranked[1:] == ranked[:-1]).any()):
        order = np.argsort(keys, kind="stable")
    return order


def _bernoulli_positions(rng: np.random.Generator, m: int, p: float) -> np.ndarray:
    """Positions of the successes in ``m`` Bernoulli(``p``) trials, drawn by geometric skips."""
    if p <= 0.0:
        return np.zeros(0, dtype=np.int64)
    size = int(m * p + 5.0 * math.sqrt(m * p) + 16)
    pos = np.cumsum(rng.geometric(min(p, 1.0), size)) - 1
    while pos[-1] < m:  # rare: top up until past the end
        more = np.cumsum(rng.geometric(min(p, 1.0), size)) + pos[-1]
        pos = np.concatenate([pos, more])
    return pos[: np.searchsorted(pos, m)]


def _base_channel_p() -> np.ndarray:
    p = np.array([_PURCHASE_P[c][0] for c in PURCHASE_CHANNELS])
    return p / p.sum()


def _simulate_orders(
    ctx: _Context,
    rng: np.random.Generator,
    due0: np.ndarray,
    stop_d: np.ndarray,
    speed: np.ndarray,
    bulk: np.ndarray,
    share: np.ndarray,
    ind_t: np.ndarray,
    ind_ptr: np.ndarray,
    ind_end: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Run the need renewal processes of all customers, one order step at a time.

    ``due0`` (customers x categories) holds the operational time of each category's next need
    (inf: never). At each step every active customer's next event is the earlier of its next
    need and its next coupon-induced order; the order buys every category due within the basket
    window (each need leaks with probability ``1 - share``; a coupon order always buys its most
    due category here), and each bought pack count moves that category's next need.

    Returns:
        Orders (customer, time in days, induced-order index or -1) and lines (order index,
        category, quantity), orders in step order (time-ascending per customer), lines grouped
        by order with categories ascending.
    """
    n = len(stop_d)
    idx = np.arange(n)
    due = due0.copy()
    stop = stop_d.copy()
    ptr, pend = ind_ptr.copy(), ind_end.copy()
    spd, blk, shr = speed.copy(), bulk.copy(), share.copy()
    first = np.ones(n, dtype=bool)
    n_ind = len(ind_t)
    ind_pad = np.r_[ind_t, np.inf]
    out_oc, out_ot, out_oi = [], [], []
    out_lo, out_lc, out_lq = [], [], []
    n_orders = 0
    while idx.size:
        r = np.arange(idx.size)
        amin = due.argmin(1)
        t = ctx.inv(due[r, amin])
        t_ind = ind_pad[np.where(ptr < pend, ptr, n_ind)]
        is_ind = t_ind < t
        t = np.where(is_ind, t_ind, t)
        live = t < stop
        if not live.all():
            keep = np.nonzero(live)[0]
            idx, due, stop, ptr, pend = idx[keep], due[keep], stop[keep], ptr[keep], pend[keep]
            spd, blk, shr, first = spd[keep], blk[keep], shr[keep], first[keep]
            amin, t, is_ind = amin[keep], t[keep], is_ind[keep]
            r = np.arange(idx.size)
            if not idx.size:
                break
        u_t = ctx.fwd(t)
        u_lim = ctx.fwd(t + BASKET_WINDOW_DAYS)
        buy = due <= u_lim[:, None]
        buy[r, amin] = True
        bi, bc = np.nonzero(buy)
        forced = (bc == amin[bi]) & (is_ind[bi] | first[bi])
        rec = forced | (rng.random(len(bi)) < shr[bi])
        promo = np.maximum(ctx.day_mult(t) - 1.1, 0.0)
        lam = blk[bi] * _EXTRA[bc] + _STOCKUP[bc] * promo[bi]
        q = 1 + rng.poisson(lam)
        sigma = _SIGMA[bc]
        noise = np.exp(sigma * rng.standard_normal(len(bc)) - 0.5 * sigma * sigma)
        gap = q * _CYCLE[bc] / spd[bi] * noise
        due[bi, bc] = np.maximum(due[bi, bc], u_t[bi]) + gap
        # Emit the recorded lines and their orders.
        rb = bi[rec]
        has = np.zeros(idx.size, dtype=bool)
        has[rb] = True
        orows = np.nonzero(has)[0]
        local = np.cumsum(has) - 1
        out_oc.append(idx[orows].astype(np.int32))
        out_ot.append(t[orows])
        out_oi.append(np.where(is_ind[orows], ptr[orows], -1).astype(np.int64))
        out_lo.append(n_orders + local[rb])
        out_lc.append(bc[rec].astype(np.int8))
        out_lq.append(q[rec].astype(np.int16))
        n_orders += len(orows)
        ptr = ptr + is_ind
        first[:] = False
    return (
        _cat(out_oc, np.int32),
        _cat(out_ot, np.float64),
        _cat(out_oi, np.int64),
        _cat(out_lo, np.int64),
        _cat(out_lc, np.int8),
        _cat(out_lq, np.int16),
    )


def _cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)
