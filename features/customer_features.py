"""Point-in-time customer features: one row per customer known at a cutoff, nothing after it.

``build_features`` turns the validated input tables into the operators' tags (RFM, purchase
interval, category breadth, channel response, coupon sensitivity, estimated inventory, lifecycle)
as of a cutoff ``T``. Only rows whose event time is strictly before ``T`` are read: lines with
``ordered_at < T``, touches with ``sent_at < T`` (a response counts only if ``responded_at < T``),
customers with ``joined_at < T``. A refund line dated at or after ``T`` therefore changes nothing
at ``T``. ``due_categories`` names the categories behind ``categories_due_7d`` (for
replenishment reminders) from the same run-out code.

Everything heavy is vectorised NumPy over integers. Customer ids, categories and channels
become integer codes (Arrow dictionary encoding), order ids 64-bit hashes (DuckDB's ``hash``, a
group key within one customer). The transaction families then run over blocks of whole
customers, on a few threads (NumPy releases the GIL), where three sorts do the work: the lines
before ``T`` by customer and order, the orders by customer and time, the purchase lines by
customer, category and time. Every feature is a reduction over runs of one of these sorted
arrays, so there is no window and no hash table over millions of groups; each sort is one
``np.sort`` of packed 64-bit keys (``_sort_order``). What needs every customer at once (the
population's median gap and median cycles, the rank scores) comes after, on one value per
customer or category. Times are integer nanoseconds since the epoch (UTC instants), so no time
zone ever matters; day counts are fractional, ``nanoseconds / 86400e9``. Floating-point
reductions run in a fixed order (sums row by row: an order's lines in input order, a customer's
orders in time order; the standard deviation by Welford's update, as DuckDB computes it), so
the same input always gives the same output, bit for bit.

Conventions shared by all families:

- An *order* is a distinct ``order_id``; its time is the earliest of its lines before ``T``, its
  value the sum of ``amount`` over its lines before ``T`` (refund lines, ``amount < 0``, included).
  Order windows (``orders_90d``, ``spend_90d`` ...) select orders by order time in
  ``[T - 90 d, T)``; a refund before ``T`` of an older order lowers that older order's value.
- A *purchase line* is a line with ``amount >= 0`` (refund lines are not purchases); category
  breadth and estimated inventory use purchase lines, windows by the line's own time.
- Windows are half-open, ``[T - N days, T)``.
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.codes import arrow_text, encode, lookup
from features.contracts import NS_PER_DAY, TEXT, TOUCH_CHANNELS, cutoff_timestamp
from features.duck import query_arrow
from features.families import FAMILIES, feature_columns, kinds

__all__ = [
    "CustomerTables",
    "LifecycleThresholds",
    "Population",
    "PopulationPart",
    "category_names",
    "build_features",
    "customer_tables",
    "combine_population",
    "due_categories",
    "sanitize_channel",
]

#: Prior strength (in gaps) pulling a customer's median gap toward the population median gap.
GAP_PRIOR_GAPS = 3.0
#: Strength (pseudo-touches) of the fallback Beta prior when method of moments is degenerate.
WEAK_PRIOR_STRENGTH = 2.0
_DAY = float(NS_PER_DAY)
#: A missing time (``NaT``) as int64: below every real time, so it is always masked explicitly.
_NAT = np.iinfo(np.int64).min
_I64 = np.int64
#: Lines per block: the transaction families run over blocks of whole customers, so that every
#: temporary array stays small (reused by the allocator instead of mapped afresh, and cached).
_BLOCK_LINES = 1 << 18
#: Threads running the blocks (NumPy releases the GIL in its loops).
_THREADS = min(os.cpu_count() or 1, 4)
#: Rows of a block: a range of the lines before the cutoff, or their positions.
_At = slice | np.ndarray


@dataclass(frozen=True)
class LifecycleThresholds:
    """When a customer leaves each lifecycle stage, relative to their own purchase cycle.

    Rules, applied in this order (first match wins):

    1. ``acquisition``: no order before the cutoff (this includes "joined within the golden
       window and no order yet").
    2. ``lost``: ``overdue_ratio > lost_overdue_ratio`` or
       ``days_since_last_order > lost_days``.
    3. ``dormant``: ``overdue_ratio > dormant_overdue_ratio``. With fewer than two orders the
       customer's ``typical_gap_days`` is the population median gap, so this reads
       ``days_since_last_order > 2 x population typical gap``.
    4. ``activation``: fewer than ``mature_orders`` orders.
    5. ``maturity``: everyone else.

    A null ``overdue_ratio`` (no population gap yet) never matches 2 or 3's ratio tests.
    """

    dormant_overdue_ratio: float = 2.0
    lost_overdue_ratio: float = 4.0
    lost_days: float = 365.0
    mature_orders: int = 3


# --------------------------------------------------------------------------------------------
# Columns
# --------------------------------------------------------------------------------------------


def _family(name: str, kind: str | None = None) -> list[str]:
    """Column names of one family of ``features.families``, optionally of one kind."""
    (family,) = (f for f in FAMILIES if f.name == name)
    return [c for c, k in family.columns if kind is None or k == kind]


_CAT_INT = _family("category_breadth", "int")
_REPL_INT = _family("replenishment", "int")


def sanitize_channel(name: str) -> str:
    """A channel value as a column suffix: lower case, runs of non-word characters as ``_``."""
    cleaned = re.sub(r"\W+", "_", str(name).strip().lower()).strip("_")
    return cleaned or "other"


@dataclass
class _Part:
    """The transaction families of the buyers: ``who`` (codes, ascending) and their columns.

    Floats use NaN for null, ``ints`` have no nulls, ``texts`` are indices into ``_LABELS``.
    """

    who: np.ndarray
    first_order: np.ndarray
    floats: dict[str, np.ndarray] = field(default_factory=dict)
    ints: dict[str, np.ndarray] = field(default_factory=dict)
    texts: dict[str, np.ndarray] = field(default_factory=dict)
    #: The orders (``order_*`` of ``_order_block``), when the lines were read to keep them.
    orders: dict[str, np.ndarray] = field(default_factory=dict)
    run_outs: _RunOuts | None = None
    #: Every cycle per pack by category name (``collect``): a population median's inputs.
    cycles: tuple[pa.Array, np.ndarray] | None = None


@dataclass
class _RunOuts:
    """Run-outs: each customer x category last bought in the 365 days before the cutoff.

    ``days`` from the cutoff to the run-out (NaN: no cycle known); ``categories`` names the codes.
    """

    ci: np.ndarray
    cat: np.ndarray
    days: np.ndarray
    categories: pa.Array


#: The values of the text columns; a customer without orders gets the last one.
_LABELS = {
    "rfm_segment": [
        "important_value",
        "important_develop",
        "important_retain",
        "important_winback",
        "potential",
        "new",
        "general",
        "dormant",
        "no_purchase",
    ],
    "lifecycle_stage": ["lost", "dormant", "activation", "maturity", "acquisition"],
}


# --------------------------------------------------------------------------------------------
# Vectorised building blocks
# --------------------------------------------------------------------------------------------


def _ns(values: pd.Series) -> np.ndarray:
    """Event times as int64 nanoseconds since the epoch (UTC instants); ``NaT`` as ``_NAT``.

    Zero-copy for the validated ``datetime64[ns, tz]`` columns.
    """
    if not (
        pd.api.types.is_datetime64_any_dtype(values) or isinstance(values.dtype, pd.DatetimeTZDtype)
    ):
        values = pd.to_datetime(values)
    return values.to_numpy(dtype="datetime64[ns]").view(np.int64)


def _floats(values: pd.Series) -> np.ndarray:
    """A numeric column as float64, null as NaN (zero-copy for a float64 column)."""
    return values.to_numpy(dtype=np.float64, na_value=np.nan)


def _customer_codes(*ids: pd.Series) -> tuple[list[np.ndarray], pa.Array, np.ndarray]:
    """One code per customer across all tables.

    Returns each column's codes (int32, in order of first appearance), the ids by code (a null
    id gets the last code) and every code in ``customer_id`` order (null last): the families
    group and sort on integers, and the strings come back once, at the end.
    """
    codes, dictionary = encode([arrow_text(column) for column in ids])
    by_id = np.append(pc.sort_indices(dictionary).to_numpy().astype(_I64), len(dictionary))
    return codes, pa.concat_arrays([dictionary, pa.nulls(1, pa.large_string())]), by_id


def _sortable(values: np.ndarray) -> np.ndarray:
    """Float64 values as int64 keys in the same order (and back: the map is its own inverse)."""
    bits = values.view(np.int64)
    return bits ^ ((bits >> 63) & np.int64(0x7FFF_FFFF_FFFF_FFFF))


def _sort_order(major: np.ndarray, minor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions sorting the rows by ``(major, minor)``, ties in input order, and sorted ``minor``.

    ``major`` holds non-negative integers, ``minor`` int64. Almost all of the work is one
    ``np.sort`` (SIMD) of unique uint64 keys ``major | top bits of minor | position``; rows
    whose ``minor`` differ only below the bits kept (two orders of a customer in the same
    minute, say) are then put in order by an exact sort of their runs alone.
    """
    n = len(major)
    if n == 0:
        return np.zeros(0, _I64), minor[:0]
    pos_bits = max((n - 1).bit_length(), 1)
    free = 64 - pos_bits - max(int(major.max()).bit_length(), 1)
    if free < 8:  # no room worth packing: NumPy's exact (slower) sort
        order = np.lexsort((minor, major))
        return order, minor[order]
    low = int(minor.min())
    shift = max((int(minor.max()) - low).bit_length() - free, 0)
    key = minor.view(np.uint64) - np.uint64(low % (1 << 64))  # minor - low, exactly
    if shift >= pos_bits:
        key >>= np.uint64(shift - pos_bits)
    else:
        key <<= np.uint64(pos_bits - shift)
    low_bits = np.uint64((1 << pos_bits) - 1)
    key &= ~low_bits
    top = major.astype(np.uint64)
    top <<= np.uint64(free + pos_bits)
    key |= top
    del top
    key |= np.arange(n, dtype=np.uint64)
    key.sort()
    same = (key[1:] ^ key[:-1]) <= low_bits if shift else None  # equal (major, kept bits)
    key &= low_bits
    order = key.view(np.int64)
    ordered = minor[order]
    if same is not None:
        clash = same & (ordered[1:] != ordered[:-1])
        if clash.any():
            _settle(order, ordered, same, np.flatnonzero(clash))
    return order, ordered


def _settle(order: np.ndarray, ordered: np.ndarray, same: np.ndarray, clash: np.ndarray) -> None:
    """Sort exactly, in place, the runs of equal packed prefix that hold the ``clash`` rows."""
    breaks = np.flatnonzero(~same)  # a run ends at each break
    after = np.searchsorted(breaks, clash)
    first = np.where(after > 0, breaks[np.maximum(after - 1, 0)] + 1, 0)
    last = np.where(after < len(breaks), breaks[np.minimum(after, len(breaks) - 1)], len(order) - 1)
    first, unique = np.unique(first, return_index=True)
    size = last[unique] - first + 1
    run = np.repeat(np.arange(len(first)), size)
    rows = np.arange(len(run)) - np.repeat(np.cumsum(size) - size, size) + first[run]
    sub, values = order[rows], ordered[rows]
    fixed = np.lexsort((sub, values, run))
    order[rows], ordered[rows] = sub[fixed], values[fixed]


def _starts(*keys: np.ndarray) -> np.ndarray:
    """Where a run of equal consecutive rows (over all ``keys``) begins, as a boolean mask."""
    n = len(keys[0])
    new = np.ones(n, dtype=bool)
    if n > 1:
        np.not_equal(keys[0][1:], keys[0][:-1], out=new[1:])
        for key in keys[1:]:
            new[1:] |= key[1:] != key[:-1]
    return new


def _medians(segment: np.ndarray, key: np.ndarray, count: int, scale: float = 0.0) -> np.ndarray:
    """DuckDB's ``median`` per segment ``0..count-1`` (NaN when empty).

    The middle value, or the mean of the two middle ones. Values are ``key / scale`` (int64
    nanoseconds) or, without ``scale``, the floats whose ``_sortable`` keys ``key`` are.
    """
    out = np.full(count, np.nan)
    if len(key) == 0:
        return out
    _, ordered = _sort_order(segment, key)
    values = ordered / scale if scale else _sortable(ordered).view(np.float64)
    sizes = np.bincount(segment, minlength=count)
    has = sizes > 0
    first = (np.cumsum(sizes) - sizes)[has]
    out[has] = (values[first + (sizes[has] - 1) // 2] + values[first + sizes[has] // 2]) / 2
    return out


def _median(values: np.ndarray) -> float:
    """DuckDB's ``median`` of a non-empty array."""
    ordered = np.sort(values)
    return float((ordered[(len(ordered) - 1) // 2] + ordered[len(ordered) // 2]) / 2)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Each value's ``rank()`` plus half its ties: ``rank + (count of equal values - 1) / 2``."""
    order = np.argsort(values)  # ties in any order: they share one rank
    ordered = values[order]
    new = _starts(ordered)
    first = np.flatnonzero(new)
    size = np.diff(np.append(first, len(ordered)))
    group = np.cumsum(new) - 1
    ranks = np.empty(len(values))
    ranks[order] = (first[group] + 1).astype(np.float64) + (size[group] - 1) / 2.0
    return ranks


def _ranks_in(population: np.ndarray, values: np.ndarray) -> np.ndarray:
    """:func:`_average_ranks` of ``values`` among ``population`` (sorted, holding them all)."""
    sorted_values = np.asarray(values, dtype=np.float64)
    left = np.searchsorted(population, sorted_values, side="left")
    right = np.searchsorted(population, sorted_values, side="right")
    return (left + 1).astype(np.float64) + (right - left - 1) / 2.0


def _small_int(count: int) -> type[np.integer]:
    """The smallest unsigned type holding ``0..count-1`` (NumPy radix-sorts 8 and 16 bits)."""
    return np.uint8 if count <= 1 << 8 else np.uint16 if count <= 1 << 16 else np.int64


def _sums(segment: np.ndarray, values: np.ndarray, count: int) -> np.ndarray:
    """Sum of ``values`` per segment, added in row order (as DuckDB's ``sum`` on one thread)."""
    return np.bincount(segment, weights=values, minlength=count)


def _counts(segment: np.ndarray, where: np.ndarray, count: int) -> np.ndarray:
    """Rows per segment where ``where`` holds."""
    return np.bincount(segment[where], minlength=count)


def _welford_squares(values: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Sum of squared deviations per run of ``values`` (runs of ``sizes``), as DuckDB gets it.

    DuckDB's ``stddev_samp`` updates a running mean and sum of squares row by row (Welford);
    doing the same, in the same order, gives the same bits. Vectorised across runs: step ``j``
    updates every run longer than ``j`` at once (runs taken longest first).
    """
    longest = np.argsort(-sizes, kind="stable")
    length = sizes[longest]
    first = (np.cumsum(sizes) - sizes)[longest]
    mean = np.zeros(len(sizes))
    squares = np.zeros(len(sizes))
    active = len(sizes)
    for j in range(int(length[0]) if len(length) else 0):
        while active and length[active - 1] <= j:
            active -= 1
        x = values[first[:active] + j]
        old = mean[:active]
        new = old + (x - old) / (j + 1)
        squares[:active] += (x - new) * (x - old)
        mean[:active] = new
    out = np.empty(len(sizes))
    out[longest] = squares
    return out


def _joined(parts: Iterator[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The blocks' results, each array joined block after block (in block order)."""
    found = list(parts)
    joined = {}
    for name in list(found[0]) if found else []:
        joined[name] = np.concatenate([part.pop(name) for part in found])  # frees as it goes
    return joined


# --------------------------------------------------------------------------------------------
# Transactions: RFM, intervals, category breadth, discounts, estimated inventory
# --------------------------------------------------------------------------------------------


@dataclass
class _Lines:
    """The transaction columns by input row, and the rows before the cutoff (``rows``).

    ``ci`` and ``order_hash`` are those rows' customer codes and order id hashes (empty when
    orders are not read); ``cat`` the category codes (``n_categories`` for none), ``categories``
    the names by code and ``qty`` the quantities (numbers, any null kind), when present.
    """

    rows: np.ndarray
    ci: np.ndarray
    order_hash: np.ndarray
    t: np.ndarray
    amount: np.ndarray
    discount: np.ndarray | None
    cat: np.ndarray | None
    n_categories: int
    qty: pd.api.extensions.ExtensionArray | np.ndarray | None
    categories: pa.Array | None = None
    keep_orders: bool = False

    def clear(self) -> None:
        """Let go of the arrays (the blocks are done)."""
        self.rows = self.ci = self.order_hash = self.t = self.amount = np.zeros(0)
        self.discount = self.cat = self.qty = self.categories = None


def _hash_order_ids(transactions: pd.DataFrame, t: np.ndarray, cut: int) -> np.ndarray:
    """DuckDB's 64-bit ``hash(order_id)`` of the lines before ``cut``, in row order, as int64.

    The row order holds because DuckDB preserves insertion order (its default, which
    ``features.duck`` keeps) for a query without ``ORDER BY``.
    """
    lines = pa.table({"o": arrow_text(transactions["order_id"]), "t": t})
    sql = f"SELECT hash(o) AS h FROM lines WHERE t >= {_NAT + 1} AND t < {cut}"  # not NaT
    out = query_arrow(sql, lines=lines)
    return out.column("h").to_numpy().view(np.int64)


def _lines(
    tx: pd.DataFrame,
    cut: int,
    *,
    orders: bool = True,
    keep_orders: bool = False,
    categories: tuple[str, ...] | None = None,
) -> _Lines:
    """The lines before ``cut`` and the columns the transaction families read (``ci`` empty).

    Without ``orders`` only what the purchase lines need is read (no order id hashes, no
    discounts): enough for the run-outs of ``due_categories``. With ``keep_orders`` the blocks
    hand back the orders too. ``categories`` codes the categories (default: in order of
    appearance), so that a partition sums a customer's categories in the whole data's order.
    """
    t = _ns(tx["ordered_at"])
    rows = np.flatnonzero((t != _NAT) & (t < cut))
    cat = qty = dictionary = None
    n_categories = 0
    if "category" in tx.columns:
        if categories is None:
            (cat,), dictionary = encode([arrow_text(tx["category"])])
        else:
            dictionary = pa.array(categories, pa.large_string())
            at = lookup(arrow_text(tx["category"]), dictionary)
            cat = np.where(np.isnan(at), len(dictionary), at).astype(np.int32)
        n_categories = len(dictionary)
        if "quantity" in tx.columns:
            quantity = tx["quantity"]
            if not pd.api.types.is_numeric_dtype(quantity):
                quantity = pd.to_numeric(quantity)
            qty = quantity.array  # converted block by block: no full-length copy
    return _Lines(
        rows,
        np.zeros(0, np.int32),
        _hash_order_ids(tx, t, cut) if orders and len(rows) else np.zeros(0, _I64),
        t,
        _floats(tx["amount"]),
        _floats(tx["discount"]) if orders and "discount" in tx.columns else None,
        cat,
        n_categories,
        qty,
        dictionary,
        keep_orders,
    )


def _blocks(ci: np.ndarray, n_codes: int) -> list[_At]:
    """Positions (in ``ci``) of the rows of each block: whole customers, consecutive codes."""
    if len(ci) == 0:
        return []
    if bool((ci[1:] >= ci[:-1]).all()):  # lines grouped by customer: ranges, no copy
        targets = ci[np.arange(_BLOCK_LINES, len(ci), _BLOCK_LINES)]
        edges = np.unique(np.concatenate([[0, len(ci)], np.searchsorted(ci, targets)]))
        return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    per_code = np.bincount(ci, minlength=n_codes)
    block_of_code = (np.cumsum(per_code) - per_code) // _BLOCK_LINES
    block = block_of_code.astype(_small_int(int(block_of_code[-1]) + 1))[ci]
    sizes = np.bincount(block)
    starts = np.cumsum(sizes) - sizes
    ranges = [(int(a), int(a + b)) for a, b in zip(starts, sizes, strict=True) if b]
    by_block = np.argsort(block, kind="stable")
    return [by_block[a:b] for a, b in ranges]


def _transaction_features(
    lines: _Lines, cut: int, n_codes: int, pool: ThreadPoolExecutor
) -> Iterator[dict[str, np.ndarray]]:
    """Start the per-customer work of the transaction families, block by block, on ``pool``.

    Returns the blocks' results (an iterator: ``_transaction_part`` waits for them).
    """
    return pool.map(partial(_block_features, lines, cut), _blocks(lines.ci, n_codes))


def _transaction_part(
    blocks: Iterator[dict[str, np.ndarray]],
    lines: _Lines,
    cut: int,
    th: LifecycleThresholds,
    pool: ThreadPoolExecutor,
    given: Population | None = None,
    collect: bool = False,
) -> _Part:
    """Every transaction family for the customers with a line before ``cut`` (the buyers).

    Joins the blocks' per-customer results; what needs every customer (population medians, rank
    scores) comes after, on one value per customer or category: from these customers, or from
    ``given`` (the population of every partition, :func:`combine_population`).
    """
    found = _joined(blocks)
    has_discount, categories = lines.discount is not None, lines.categories
    n_categories = lines.n_categories
    lines.clear()
    cycles = found.pop("cycle", np.zeros(0)), found.pop("cycle_cat", np.zeros(0, _I64))
    population = (
        None
        if given is not None
        else pool.submit(_group_medians, cycles[1], cycles[0], n_categories)
    )
    kept = {name: found.pop(name) for name in list(found) if name.startswith("order_")}
    part = _order_part(found, cut, th, has_discount, given)
    part.orders = kept
    if collect and categories is not None:
        part.cycles = (categories.take(pa.array(cycles[1])), cycles[0])
    del cycles
    if categories is not None:
        medians = (
            np.array([given.cycles.get(c, np.nan) for c in categories.to_pylist()])
            if population is None and given is not None
            else population.result()  # type: ignore[union-attr]
        )
        _category_part(part, found, medians, cut, categories)
    return part


def _block_features(
    lines: _Lines, cut: int, at: _At, *, orders: bool = True
) -> dict[str, np.ndarray]:
    """Per-customer sums of one block (codes ascending), and its category purchases' cycles.

    Without ``orders`` only the purchase part runs (``who``: the block's customers).
    """
    line = lines.rows[at]
    low = int(lines.ci[at].min())
    ci = lines.ci[at] - low
    t, amount = lines.t[line], lines.amount[line]
    if orders:
        discount = None if lines.discount is None else lines.discount[line]
        out = _order_block(
            ci, lines.order_hash[at], t, amount, discount, cut, keep=lines.keep_orders
        )
    else:
        out = {"who": np.flatnonzero(np.bincount(ci))}
    if lines.cat is not None:
        cat = lines.cat[line]
        bought = np.flatnonzero((amount >= 0) & (cat < lines.n_categories))
        qty = None if lines.qty is None else _floats(pd.Series(lines.qty[line[bought]]))
        out |= _purchase_block(
            out["who"], ci[bought], cat[bought], t[bought], qty, lines.n_categories, cut
        )
    for name in ("who", "seg_ci", "order_ci"):  # block codes back to customer codes
        if name in out:
            out[name] += low
    return out


def _order_block(
    ci: np.ndarray,
    order_hash: np.ndarray,
    t: np.ndarray,
    amount: np.ndarray,
    discount: np.ndarray | None,
    cut: int,
    *,
    keep: bool = False,
) -> dict[str, np.ndarray]:
    """Lines to orders, orders to per-customer counts, sums and gap statistics.

    With ``keep`` the orders themselves too (``order_*``: customer, time, value and whether a
    line had a discount), by customer and time.
    """
    # Lines to orders: one run per (customer, order id hash), lines in input order.
    by_order, order_hash = _sort_order(ci, order_hash)
    ci = ci[by_order]
    new = _starts(ci, order_hash)
    del order_hash
    heads = np.flatnonzero(new)
    n_orders = len(heads)
    line_order = np.cumsum(new) - 1
    paid = amount[by_order]
    paid[np.isnan(paid)] = 0.0  # a null amount adds nothing
    ot = np.minimum.reduceat(t[by_order], heads)
    value = _sums(line_order, paid, n_orders)
    gross = _sums(line_order, np.maximum(paid, 0.0), n_orders)
    refund = _sums(line_order, np.minimum(paid, 0.0), n_orders)
    disc = None
    if discount is not None:
        disc = _counts(line_order, discount[by_order] > 0, n_orders) > 0
    oci = ci[heads]
    del ci, paid, line_order, by_order, heads

    # Orders by customer and time: one run per customer.
    by_time, ot = _sort_order(oci, ot)
    oci, value, gross, refund = oci[by_time], value[by_time], gross[by_time], refund[by_time]
    if disc is not None:
        disc = disc[by_time]
    new = _starts(oci)
    cust = np.cumsum(new) - 1
    heads = np.flatnonzero(new)
    k = len(heads)
    lasts = np.append(heads[1:], n_orders)[:k] - 1
    n = np.diff(np.append(heads, n_orders))
    out = {"who": oci[heads].astype(_I64), "orders_total": n}
    out["first_ot"], out["last_ot"] = ot[heads], ot[lasts]
    window = {days: ot >= cut - days * NS_PER_DAY for days in (30, 90, 180, 365)}
    for days in (30, 90, 365):
        out[f"orders_{days}d"] = _counts(cust, window[days], k)
        out[f"spend_{days}d"] = _sums(cust, np.where(window[days], value, 0.0), k)
    out["spend_total"] = _sums(cust, value, k)
    out["spend_prev_90d"] = _sums(cust, np.where(window[180] & ~window[90], value, 0.0), k)
    out["gross_365d"] = _sums(cust, np.where(window[365], gross, 0.0), k)
    out["refund_365d"] = _sums(cust, np.where(window[365], refund, 0.0), k)
    if disc is not None:
        out["discount_orders_365d"] = _counts(cust, window[365] & disc, k)
    if keep:
        out |= {"order_ci": oci, "order_t": ot, "order_value": value}
        out["order_discounted"] = disc if disc is not None else np.zeros(n_orders, dtype=bool)

    # Gaps between consecutive orders of a customer (in time order).
    inner = ~new[1:]
    gap_ns = np.diff(ot)[inner]
    gap = gap_ns / _DAY
    gap_cust = cust[1:][inner]
    out["gap_sum"] = _sums(gap_cust, gap, k)
    out["gap_squares"] = _welford_squares(gap, n - 1)
    out["gap_median_days"] = _medians(gap_cust, gap_ns, k, _DAY)
    last_gap = np.full(k, np.nan)
    two = n > 1
    last_gap[two] = (ot[lasts[two]] - ot[lasts[two] - 1]) / _DAY
    out["last_gap_days"] = last_gap
    return out


def _purchase_block(
    who: np.ndarray,
    ci: np.ndarray,
    cat: np.ndarray,
    t: np.ndarray,
    qty: np.ndarray | None,
    n_categories: int,
    cut: int,
) -> dict[str, np.ndarray]:
    """Category breadth of the customers ``who`` and the purchase cycles, from purchase lines.

    Also every customer x category last bought in 365 days (``seg_*``: customer, category,
    last purchase time and packs, own median cycle) and every cycle with its category, for the
    run-outs, which need the population median cycle of each category.
    """
    k = len(who)
    s90, s365 = cut - 90 * NS_PER_DAY, cut - 365 * NS_PER_DAY
    # Purchases: the lines of one customer x category at one instant; packs = sum of quantity.
    pair = ci.astype(_I64) * n_categories + cat
    by_time, t = _sort_order(pair, t)
    pair = pair[by_time]
    new = _starts(pair, t)
    heads = np.flatnonzero(new)
    m = len(heads)
    if qty is None:
        packs = np.diff(np.append(heads, len(pair))).astype(np.float64)
    else:
        packs = qty[by_time]
        packs[np.isnan(packs)] = 1.0
        packs = _sums(np.cumsum(new) - 1, packs, m)
    lines = np.diff(np.append(heads, len(pair)))
    pair, pt = pair[heads], t[heads]
    del t, by_time, new, heads

    # Customer x category: cycle per pack between consecutive purchases, own median cycle.
    first = _starts(pair)
    seg = np.cumsum(first) - 1
    seg_heads = np.flatnonzero(first)
    n_seg = len(seg_heads)
    seg_lasts = np.append(seg_heads[1:], m)[:n_seg] - 1
    follows = ~first[1:]  # purchase i + 1 is the next one of purchase i's customer x category
    cycle = (np.diff(pt)[follows] / _DAY) / packs[:-1][follows]
    cycle_seg = seg[:-1][follows]
    cycle_key = _sortable(cycle)
    own = _medians(cycle_seg, cycle_key, n_seg)
    seg_pair = pair[seg_heads]
    seg_cat = seg_pair % n_categories
    seg_ci = seg_pair // n_categories
    n90 = _sums(seg, np.where(pt >= s90, lines, 0), n_seg)
    n365 = _sums(seg, np.where(pt >= s365, lines, 0), n_seg)
    first_t, last_t = pt[seg_heads], pt[seg_lasts]

    row = np.searchsorted(who, seg_ci)  # every purchasing customer has an order
    out = {
        "categories_90d": _counts(row, n90 > 0, k),
        "categories_365d": _counts(row, n365 > 0, k),
        "new_categories_90d": _counts(row, (n90 > 0) & (first_t >= s90), k),
        "lines_365d": _sums(row, n365, k),
    }
    bought = n365 > 0
    out["spread_365d"] = _sums(row[bought], n365[bought] * np.log(n365[bought]), k)
    top = np.zeros(k)
    np.maximum.at(top, row, n365)
    out["top_lines_365d"] = top
    recent = last_t >= s365
    out |= {
        "seg_ci": seg_ci[recent],
        "seg_cat": seg_cat[recent],
        "seg_last_t": last_t[recent],
        "seg_last_q": packs[seg_lasts][recent],
        "seg_own": own[recent],
        "cycle": cycle,
        "cycle_cat": seg_cat[cycle_seg].astype(_small_int(n_categories)),
    }
    return out


def _group_medians(group: np.ndarray, values: np.ndarray, count: int) -> np.ndarray:
    """DuckDB's ``median`` of ``values`` per group ``0..count-1`` (NaN when empty)."""
    out = np.full(count, np.nan)
    ordered = values[np.argsort(group.astype(_small_int(count)), kind="stable")]
    sizes = np.bincount(group, minlength=count)
    starts = np.cumsum(sizes) - sizes
    for g in np.flatnonzero(sizes):
        start, size = int(starts[g]), int(sizes[g])
        middle = np.partition(ordered[start : start + size], [(size - 1) // 2, size // 2])
        out[g] = (middle[(size - 1) // 2] + middle[size // 2]) / 2
    return out


def _order_part(
    found: dict[str, np.ndarray],
    cut: int,
    th: LifecycleThresholds,
    has_discount: bool,
    given: Population | None = None,
) -> _Part:
    """RFM, intervals, scores, segment and stage of the buyers, from the blocks' sums.

    The population median gap and the rank scores are among these buyers, or ``given``.
    """
    who = found.get("who", np.zeros(0, _I64))
    k = len(who)
    if k == 0:
        found = {}
    empty_ints = np.zeros(0, _I64)
    get_int = lambda name: found.get(name, empty_ints)  # noqa: E731
    get = lambda name: found.get(name, np.zeros(0))  # noqa: E731
    part = _Part(who, get_int("first_ot"))
    n = get_int("orders_total")
    days_last = (cut - get_int("last_ot")) / _DAY
    part.floats["days_since_last_order"] = days_last
    part.floats["days_since_first_order"] = (cut - part.first_order) / _DAY
    for name in ("orders_30d", "orders_90d", "orders_365d", "orders_total"):
        part.ints[name] = get_int(name)
    for name in ("spend_30d", "spend_90d", "spend_365d", "spend_total"):
        part.floats[name] = get(name)
    orders_365 = part.ints["orders_365d"]
    in_365 = np.where(orders_365 > 0, orders_365, np.nan)
    part.floats["aov_365d"] = get("spend_365d") / in_365
    part.floats["spend_trend_90d"] = get("spend_90d") - get("spend_prev_90d")
    gross = get("gross_365d")
    part.floats["refund_share_365d"] = (0.0 - get("refund_365d")) / np.where(
        gross > 0, gross, np.nan
    ) + 0.0
    if has_discount:
        part.floats["discount_order_share_365d"] = get_int("discount_orders_365d") / in_365

    n_gaps = n - 1
    has_gap = n_gaps > 0
    mean = get("gap_sum") / np.where(has_gap, n_gaps, np.nan)
    std = np.sqrt(get("gap_squares") / np.where(n_gaps > 1, n_gaps - 1, np.nan))
    median = get("gap_median_days")
    part.floats["gap_mean_days"] = mean
    part.floats["gap_median_days"] = median
    part.floats["gap_std_days"] = std
    part.floats["gap_cv"] = std / np.where(mean > 0, mean, np.nan)
    part.floats["last_gap_days"] = get("last_gap_days")
    # Typical gap: own median gap shrunk toward the population's (customers with a gap).
    if given is not None:
        pop = given.gap_median_days
    else:
        pop = _median(median[has_gap]) if has_gap.any() else np.nan
    typical = (n_gaps * np.where(has_gap, median, 0.0) + GAP_PRIOR_GAPS * pop) / (
        n_gaps + GAP_PRIOR_GAPS
    )
    part.floats["typical_gap_days"] = typical
    ratio = days_last / np.where(typical != 0, typical, np.nan)
    part.floats["overdue_ratio"] = ratio

    # RFM scores (1-5 by average rank among buyers) and segment; lifecycle stage.
    scores = {}
    buyers = k if given is None else given.buyers
    for name, values in (
        ("r_score", -days_last),
        ("f_score", orders_365),
        ("m_score", part.floats["spend_365d"]),
    ):
        ranks = _average_ranks(values) if given is None else _ranks_in(given.rfm[name], values)
        scores[name] = np.floor(5 * (ranks - 1) / max(buyers, 1)).astype(_I64) + 1
    part.ints |= scores
    recent, frequent = scores["r_score"] >= 3, scores["f_score"] >= 4
    valuable = scores["m_score"] >= 4
    part.texts["rfm_segment"] = np.select(
        [
            recent & frequent & valuable,
            recent & valuable,
            frequent & valuable,
            valuable,
            recent & frequent,
            recent,
            frequent,
        ],
        list(range(7)),
        7,
    )
    part.texts["lifecycle_stage"] = np.select(
        [
            (ratio > float(th.lost_overdue_ratio)) | (days_last > float(th.lost_days)),
            ratio > float(th.dormant_overdue_ratio),
            n < int(th.mature_orders),
        ],
        list(range(3)),
        3,
    )
    return part


def _run_outs(found: dict[str, np.ndarray], population: np.ndarray, cut: int) -> np.ndarray:
    """Days from ``cut`` to the run-out of each customer x category last bought in 365 days.

    Run-out = last purchase + its packs x cycle per pack (the own median cycle, else the
    category's ``population`` median; NaN when neither exists). Rows follow ``found["seg_*"]``.
    """
    own = found["seg_own"]
    cycle = np.where(np.isnan(own), population[found["seg_cat"]], own)
    return (found["seg_last_t"] + found["seg_last_q"] * cycle * _DAY - float(cut)) / _DAY


def _category_part(
    part: _Part,
    found: dict[str, np.ndarray],
    population: np.ndarray,
    cut: int,
    categories: pa.Array,
) -> None:
    """Category breadth and estimated inventory of the buyers, into ``part``.

    ``population`` is each category's median cycle over all customers (NaN: no cycle);
    ``categories`` the names by code (kept with the run-outs, for the reminders).
    """
    k = len(part.who)
    if not found:
        for name in (*_CAT_INT, *_REPL_INT):
            part.ints[name] = np.zeros(0, _I64)
        for name in ("category_entropy_365d", "top_category_share_365d", "days_to_next_due"):
            part.floats[name] = np.zeros(0)
        return
    for name in ("categories_90d", "categories_365d", "new_categories_90d"):
        part.ints[name] = found[name]
    total = found["lines_365d"]
    counted = total > 0
    entropy = np.full(k, np.nan)
    entropy[counted] = np.maximum(
        0.0, np.log(total[counted]) - found["spread_365d"][counted] / total[counted]
    )
    part.floats["category_entropy_365d"] = entropy
    part.floats["top_category_share_365d"] = np.where(
        counted, found["top_lines_365d"] / np.where(counted, total, 1.0), np.nan
    )
    due = _run_outs(found, population, cut)
    part.run_outs = _RunOuts(found["seg_ci"], found["seg_cat"], due, categories)
    row = np.searchsorted(part.who, found["seg_ci"])
    part.ints["categories_due_7d"] = _counts(row, (due >= 0) & (due < 7), k)
    part.ints["categories_overdue"] = _counts(row, due < 0, k)
    dated = ~np.isnan(due)
    soonest = np.full(k, np.inf)
    np.minimum.at(soonest, row[dated], due[dated])
    part.floats["days_to_next_due"] = np.where(_counts(row, dated, k) > 0, soonest, np.nan)


# --------------------------------------------------------------------------------------------
# Touches: channel response, contact fatigue, coupon response
# --------------------------------------------------------------------------------------------


def _beta_prior(responses: np.ndarray, touches: np.ndarray) -> tuple[float, float]:
    """Beta(alpha, beta) by method of moments over per-customer rates (customers with touches).

    Degenerate cases (fewer than two customers, zero variance, mean 0 or 1, or moments that
    imply a non-positive strength) fall back to a weak prior of strength
    ``WEAK_PRIOR_STRENGTH`` centred on the pooled Laplace rate ``(R + 1) / (N + 2)``.
    """
    reached = touches > 0
    rates = responses[reached] / touches[reached]
    if rates.size >= 2:
        mean = float(rates.mean())
        var = float(rates.var())
        if var > 0 and 0 < mean < 1:
            strength = mean * (1 - mean) / var - 1
            if strength > 0:
                return mean * strength, (1 - mean) * strength
    pooled = (float(responses[reached].sum()) + 1) / (float(touches[reached].sum()) + 2)
    return WEAK_PRIOR_STRENGTH * pooled, WEAK_PRIOR_STRENGTH * (1 - pooled)


def _smoothed(
    responses: np.ndarray, touches: np.ndarray, prior: tuple[float, float] | None = None
) -> np.ndarray:
    alpha, beta = _beta_prior(responses, touches) if prior is None else prior
    return (responses + alpha) / (touches + alpha + beta)


@dataclass
class _Touches:
    """The touches sent before ``T``, reduced to what the features read.

    ``before`` marks them (rows of the table). ``answered`` are the rows (sent before ``T``)
    with a response before ``T`` and ``response`` its time; ``recent`` the rows sent in the
    last 180 days, with their time sent, whether a response came before ``T``, channel (index
    into ``channels``, -1: none) and whether a coupon came with them.
    """

    before: np.ndarray
    answered: np.ndarray
    response: np.ndarray
    recent: np.ndarray
    sent: np.ndarray
    responded: np.ndarray
    channel: np.ndarray
    coupon: np.ndarray | None
    channels: list[str]
    seen: set[str]


def _touches_before(
    touches: pd.DataFrame, cut: int, seen: frozenset[str] | None = None
) -> _Touches:
    """The touches sent before ``cut``; channel columns: the contract's, then others seen.

    ``seen``: the channels every partition's touches name (default: those of ``touches``).
    """
    sent = _ns(touches["sent_at"])
    before = (sent != _NAT) & (sent < cut)
    recent = np.flatnonzero(before & (sent >= cut - 180 * NS_PER_DAY))
    (index,), dictionary = encode([arrow_text(touches["channel"])])
    raw = dictionary.to_pylist()
    used = np.bincount(index[before], minlength=len(raw) + 1)[: len(raw)] > 0
    mapping = {v: sanitize_channel(v) for v, u in zip(raw, used, strict=True) if u}
    names = set(mapping.values()) if seen is None else set(seen)
    channels = list(TOUCH_CHANNELS) + sorted(names - set(TOUCH_CHANNELS))
    position = {name: i for i, name in enumerate(channels)}
    of_raw = np.array([position[mapping[v]] if v in mapping else -1 for v in raw] + [-1])
    answered = np.zeros(0, _I64)
    response = np.zeros(0, _I64)
    responded = np.zeros(len(recent), dtype=bool)
    if "responded_at" in touches.columns:
        response = _ns(touches["responded_at"])
        replied = (response != _NAT) & (response < cut)
        responded = replied[recent]
        answered = np.flatnonzero(replied & before)
        response = response[answered]
    coupon = None
    if "coupon_value" in touches.columns:
        coupon = _floats(touches["coupon_value"])[recent] > 0
    return _Touches(
        before,
        answered,
        response,
        recent,
        sent[recent],
        responded,
        of_raw[index[recent]],
        coupon,
        channels,
        names,
    )


def _touch_features(
    tb: _Touches,
    ci: np.ndarray,
    cut: int,
    rows: np.ndarray,
    n: int,
    has_coupon: bool,
    priors: dict[str, tuple[float, float]] | None = None,
) -> dict[str, np.ndarray]:
    """Counts, smoothed rates and best channel of the known customers ``rows`` (codes).

    ``ci`` are the customer codes of the touches. A customer without touches has zero counts
    and the prior mean as rates; a channel with no touch at all before the cutoff has no prior
    to fit: its rate is null. The priors are fitted on these customers, or ``priors`` (by
    :data:`_PRIOR_KEYS` name: every partition's, :func:`combine_population`). The coupon
    responses come back too, as ``_coupon_responses`` (not a feature).
    """
    prior = (priors or {}).get
    m = len(rows)
    slot = np.zeros(n, _I64)
    slot[rows] = np.arange(m)
    last = np.full(m, _NAT)
    np.maximum.at(last, slot[ci[tb.answered]], tb.response)
    row = slot[ci[tb.recent]]
    new: dict[str, np.ndarray] = {
        "touches_7d": _counts(row, tb.sent >= cut - 7 * NS_PER_DAY, m),
        "touches_30d": _counts(row, tb.sent >= cut - 30 * NS_PER_DAY, m),
        "touches_180d": np.bincount(row, minlength=m),
        "responses_180d": _counts(row, tb.responded, m),
    }
    new["response_rate_180d"] = _smoothed(
        new["responses_180d"], new["touches_180d"], prior("response_rate_180d")
    )
    new["days_since_last_response"] = np.where(last != _NAT, (cut - last) / _DAY, np.nan)
    channels = tb.channels
    width = len(channels)
    cell = row * width + tb.channel
    named = tb.channel >= 0
    n_all = _counts(cell, named, m * width).reshape(m, width)
    k_all = _counts(cell, named & tb.responded, m * width).reshape(m, width)
    rates = np.full((m, width), -np.inf)
    for i, ch in enumerate(channels):
        n_c, k_c = n_all[:, i].copy(), k_all[:, i].copy()
        seen = ch in tb.seen
        rate = _smoothed(k_c, n_c, prior(f"response_rate_{ch}")) if seen else np.full(m, np.nan)
        new[f"touches_180d_{ch}"] = n_c
        new[f"responses_180d_{ch}"] = k_c
        new[f"response_rate_{ch}"] = rate
        rates[:, i] = np.where(n_c > 0, rate, -np.inf)
    by_name = np.argsort(np.array(channels))  # ties go to the first name alphabetically
    best = by_name[np.argmax(rates[:, by_name], axis=1)]
    best_channel = np.array(channels, dtype=object)[best]
    best_channel[~np.isfinite(rates.max(axis=1))] = None  # no touch in 180 days
    new["best_channel"] = best_channel
    if has_coupon and tb.coupon is not None:
        n_cp = _counts(row, tb.coupon, m)
        k_cp = _counts(row, tb.coupon & tb.responded, m)
        new["coupon_touches_180d"] = n_cp
        new["_coupon_responses"] = k_cp
        new["coupon_response_rate_180d"] = _smoothed(k_cp, n_cp, prior("coupon_response_rate_180d"))
    return new


# --------------------------------------------------------------------------------------------
# Assembly
# --------------------------------------------------------------------------------------------


def build_features(
    transactions: pd.DataFrame,
    touches: pd.DataFrame | None = None,
    customers: pd.DataFrame | None = None,
    *,
    as_of: datetime.date | str | pd.Timestamp,
    lifecycle: LifecycleThresholds | None = None,
) -> pd.DataFrame:
    """Features of every customer known at ``as_of``, from rows strictly before it.

    Args:
        transactions: Validated lines (``customer_id, order_id, ordered_at, amount``; optional
            ``category``, ``quantity``, ``discount``).
        touches: Validated touches or ``None``.
        customers: Validated customers or ``None``.
        as_of: The cutoff ``T``: a date or ``'YYYY-MM-DD'`` (midnight starting that day in the
            time zone of ``ordered_at``) or a timestamp.
        lifecycle: Stage thresholds (defaults: :class:`LifecycleThresholds`).

    A customer is *known* at ``T`` with a line before ``T``, a touch sent before ``T`` or a
    ``customers`` row with ``joined_at < T`` (a row with a null ``joined_at`` counts only with
    a line or touch before ``T``).

    Returns:
        One row per known customer sorted by ``customer_id``, columns in the order of
        ``features.families`` (then attributes other than ``member_tier``); counts are
        ``Int64``, everything else numeric ``float64`` (NaN = null), text ``string[pyarrow]``.
        Days are fractional.

        - ``customer_id``, ``as_of`` (the cutoff timestamp).
        - RFM: ``days_since_last_order``, ``days_since_first_order``, ``orders_{30,90,365}d``,
          ``orders_total``, ``spend_{30,90,365}d``, ``spend_total`` (net of refunds before
          ``T``), ``aov_365d`` (``spend_365d / orders_365d``, null without orders in 365 d),
          ``spend_trend_90d`` (``spend_90d`` minus spend of orders in ``[T-180d, T-90d)``),
          ``refund_share_365d`` (minus the refund lines of orders in 365 d over their positive
          lines; null without positive lines). Without orders: days null, counts and spends 0.
        - ``r_score``, ``f_score``, ``m_score``: 1-5 among customers with an order before ``T``
          on last order time (later = 5), ``orders_365d`` and ``spend_365d``. Each value gets
          its average rank ``a`` (ties share it) among the ``n`` such customers, and the score
          ``floor(5 (a - 1) / n) + 1``. Null without orders.
        - ``rfm_segment``: ``no_purchase`` without orders; otherwise with *recent* = ``R >= 3``,
          *frequent* = ``F >= 4``, *valuable* = ``M >= 4``: recent+frequent+valuable
          ``important_value``; recent+valuable ``important_develop``; frequent+valuable
          ``important_retain`` (at risk); valuable ``important_winback``; recent+frequent
          ``potential``; recent ``new``; frequent ``general``; none ``dormant``.
        - Intervals between consecutive order times (orders sorted by time, then ``order_id``):
          ``gap_mean_days``, ``gap_median_days``, ``gap_std_days`` (sample, null with < 2
          gaps), ``gap_cv`` (std / mean), ``last_gap_days``, ``typical_gap_days`` =
          ``(g * median + 3 * P) / (g + 3)`` with ``g`` the customer's gaps and ``P`` the
          median over customers with >= 2 orders of their median gap (prior of 3 gaps; a
          one-order customer gets ``P``), ``overdue_ratio`` =
          ``days_since_last_order / typical_gap_days``.
        - Category breadth over purchase lines with a category (null columns when
          ``transactions`` has no ``category``): ``categories_90d``, ``categories_365d``,
          ``category_entropy_365d`` (Shannon, natural log, over line counts),
          ``new_categories_90d`` (bought in the last 90 d, never before), and
          ``top_category_share_365d`` (line-count share of the top category).
        - Channel response (all null when ``touches`` is ``None``): per channel ``c``, every
          contract channel in contract order, then other channels seen in a touch before ``T``
          sorted (names lower-cased, non-word runs as ``_``): ``touches_180d_<c>``,
          ``responses_180d_<c>``, ``response_rate_<c>`` (null for a channel with no touch
          before ``T``). Rates are
          ``(k + a) / (n + a + b)`` with a Beta(a, b) fitted at ``T`` by method of moments over
          the per-customer rates of customers reached on ``c`` in 180 d (weak prior, strength
          2 around the pooled Laplace rate, when degenerate); a customer not reached gets the
          prior mean. Also ``touches_7d``, ``touches_30d``, ``touches_180d``,
          ``responses_180d``, ``response_rate_180d`` (same smoothing over all channels),
          ``days_since_last_response`` (any response before ``T``) and ``best_channel`` (highest
          smoothed rate among channels reached in 180 d; ties to the first name alphabetically).
        - Coupons: ``discount_order_share_365d`` (orders in 365 d with a positive ``discount``
          on a line; null without a ``discount`` column or orders in 365 d),
          ``coupon_touches_180d`` and ``coupon_response_rate_180d`` (touches with
          ``coupon_value > 0``, smoothed as above; null without touches or ``coupon_value``).
        - Estimated inventory (null without ``category``): per customer x category, purchases
          are the category's purchase lines of one order (time: earliest line; packs: sum of
          ``quantity``, null = 1). Cycle per pack = the customer's median of ``gap / packs of
          the earlier purchase`` over that category (>= 2 purchases), else the median of the
          same ratio over all customers' consecutive purchases of the category before ``T``.
          Run-out = last purchase time + its packs x cycle. Over categories last bought in the
          last 365 d: ``categories_due_7d`` (run-out in ``[T, T + 7d)``),
          ``categories_overdue`` (run-out before ``T``), ``days_to_next_due`` (earliest
          run-out minus ``T``, may be negative). The names of the due categories, for
          reminders: :func:`due_categories` (same run-outs).
        - Lifecycle: ``tenure_days`` (since ``joined_at`` if before ``T``, else since the first
          order; null for a customer known only from touches), ``lifecycle_stage`` (see
          :class:`LifecycleThresholds` for the rules).
        - Attributes: ``member_tier`` and every other column of ``customers`` except
          ``customer_id`` and ``joined_at``, as they are (null when unknown).
    """
    return customer_tables(
        transactions, touches, customers, as_of=as_of, lifecycle=lifecycle
    ).features


@dataclass(frozen=True)
class PopulationPart:
    """What the features of one partition of the customers give toward the population's values.

    Customers (and all their rows) belong to one partition. ``gap_medians``: the median gap of
    each buyer with two orders or more; ``rfm``: the values each rank score ranks (buyers);
    ``cycles``: every cycle per pack with its category name; ``ids``: the known customers, in
    ``customer_id`` order, with ``counts``: their responses and touches per smoothed rate (by
    column name); ``channels``: the channels the touches before the cutoff name.
    """

    gap_medians: np.ndarray
    rfm: dict[str, np.ndarray]
    cycles: tuple[pa.Array, np.ndarray] | None
    ids: pa.Array
    counts: dict[str, tuple[np.ndarray, np.ndarray]]
    channels: frozenset[str]


@dataclass(frozen=True)
class Population:
    """The values features take from every customer at once (:func:`combine_population`).

    Given to :func:`customer_tables` of one partition of the customers, they make its rows
    exactly those of the same customers built from all the data together.
    """

    gap_median_days: float
    rfm: dict[str, np.ndarray]  # sorted
    buyers: int
    cycles: dict[str, float]
    priors: dict[str, tuple[float, float]]
    channels: frozenset[str]
    categories: tuple[str, ...] | None


def category_names(transactions: pd.DataFrame) -> tuple[str, ...] | None:
    """The categories of all the lines in order of appearance (``None`` without the column).

    The order the features code them in: a customer's categories are summed in it.
    """
    if "category" not in transactions.columns:
        return None
    _, dictionary = encode([arrow_text(transactions["category"])])
    return tuple(dictionary.to_pylist())


def combine_population(
    parts: list[PopulationPart], categories: tuple[str, ...] | None
) -> Population:
    """The population of all partitions: medians, rank values, rate priors, channels.

    Computed as :func:`customer_tables` computes them over all the data at once (the rate
    priors over the customers in ``customer_id`` order, so even their sums add up alike).
    ``categories``: :func:`category_names` of all the lines.
    """
    gaps = np.concatenate([p.gap_medians for p in parts]) if parts else np.zeros(0)
    rfm = {
        name: np.sort(np.concatenate([p.rfm[name] for p in parts]))
        for name in ("r_score", "f_score", "m_score")
    }
    cycles: dict[str, float] = {}
    found = [p.cycles for p in parts if p.cycles is not None]
    if found:
        names = pa.chunked_array([c[0] for c in found], pa.large_string())
        (codes,), dictionary = encode([names])
        values = np.concatenate([c[1] for c in found])
        medians = _group_medians(codes, values, len(dictionary))
        cycles = dict(zip(dictionary.to_pylist(), medians.tolist(), strict=True))
    ids = pa.chunked_array([p.ids for p in parts], pa.large_string())
    order = pc.sort_indices(ids).to_numpy() if len(ids) else np.zeros(0, _I64)
    channels = frozenset().union(*(p.channels for p in parts))
    priors = {}
    fitted = {"response_rate_180d", "coupon_response_rate_180d"}
    fitted |= {f"response_rate_{ch}" for ch in channels}  # a channel never used has no prior
    for key in sorted({k for p in parts for k in p.counts} & fitted):
        pairs = [p.counts.get(key) or (np.zeros(len(p.ids)),) * 2 for p in parts]
        responses = np.concatenate([r for r, _ in pairs])[order]
        touched = np.concatenate([t for _, t in pairs])[order]
        priors[key] = _beta_prior(responses, touched)
    return Population(
        _median(gaps) if len(gaps) else np.nan,
        rfm,
        sum(len(p.rfm["r_score"]) for p in parts),
        cycles,
        priors,
        channels,
        categories,
    )


def _population_part(
    tx: _Part, touch: dict[str, np.ndarray], tb: _Touches | None, ids: pa.Array
) -> PopulationPart:
    """This partition's :class:`PopulationPart` (``ids``: the known customers, in order)."""
    n = tx.ints.get("orders_total", np.zeros(0, _I64))
    counts = {}
    if tb is not None:
        counts["response_rate_180d"] = (touch["responses_180d"], touch["touches_180d"])
        for ch in tb.channels:
            counts[f"response_rate_{ch}"] = (
                touch[f"responses_180d_{ch}"],
                touch[f"touches_180d_{ch}"],
            )
        if "_coupon_responses" in touch:
            counts["coupon_response_rate_180d"] = (
                touch["_coupon_responses"],
                touch["coupon_touches_180d"],
            )
    return PopulationPart(
        gap_medians=tx.floats.get("gap_median_days", np.zeros(0))[n > 1],
        rfm={
            "r_score": -tx.floats.get("days_since_last_order", np.zeros(0)),
            "f_score": tx.ints.get("orders_365d", np.zeros(0, _I64)).astype(np.float64),
            "m_score": tx.floats.get("spend_365d", np.zeros(0)),
        },
        cycles=tx.cycles,
        ids=ids,
        counts=counts,
        channels=frozenset(tb.seen) if tb is not None else frozenset(),
    )


@dataclass(frozen=True)
class CustomerTables:
    """What one pass over the lines gives at a cutoff (see :func:`customer_tables`)."""

    features: pd.DataFrame
    orders: pd.DataFrame | None = None
    due: pd.DataFrame | None = None
    population: PopulationPart | None = None


def customer_tables(
    transactions: pd.DataFrame,
    touches: pd.DataFrame | None = None,
    customers: pd.DataFrame | None = None,
    *,
    as_of: datetime.date | str | pd.Timestamp,
    lifecycle: LifecycleThresholds | None = None,
    orders: bool = False,
    due_within_days: int | None = None,
    population: Population | None = None,
    collect: bool = False,
) -> CustomerTables:
    """``build_features``, and from the same grouping of the lines the orders and reminders.

    Scoring needs the orders (for BG/NBD and the coupon uplift) and the restock reminders next
    to the features; taking them from the pass that builds the features reads the lines once.

    Args:
        transactions: As in :func:`build_features`.
        touches: As in :func:`build_features`.
        customers: As in :func:`build_features`.
        as_of: As in :func:`build_features`.
        lifecycle: As in :func:`build_features`.
        orders: Also return ``orders``: one row per order placed before ``as_of`` (the orders of
            the features: an order id of a customer; time, its earliest line before ``as_of``;
            value, the sum of those lines' ``amount``, where null amounts add nothing: an order
            of only null amounts is worth 0, where ``order_table`` has a null). Columns:
            ``customer_id`` (categorical: the categories are the features' ``customer_id``
            but a null one, so a code is the customer's row in ``features``), ``ordered_at``
            (the time zone of the input), ``value`` and ``discounted`` (a line had
            ``discount > 0``; all False without a ``discount`` column); sorted by
            ``customer_id`` then ``ordered_at``. Otherwise the rows of ``order_table(...,
            discounted=True)`` without ``order_id`` (orders of one customer at the same instant
            may come in another order).
        due_within_days: Also return ``due``: ``due_categories(transactions, as_of=as_of,
            within_days=due_within_days)``, from the run-outs the features count.
        population: For the tables of one partition of the customers (each customer's rows
            all in it): the values that need every customer (population median gap and
            cycles, rank scores, rate priors, channels) from :func:`combine_population` of
            every partition's ``collect``; the rows are then those of the whole data's tables.
        collect: Also return ``population``: this partition's :class:`PopulationPart`.
    """
    if due_within_days is not None:
        _check_window(due_within_days)
    lifecycle = lifecycle or LifecycleThresholds()
    tz = getattr(transactions["ordered_at"].dtype, "tz", None)
    cutoff = cutoff_timestamp(as_of, tz)
    cut = int(cutoff.as_unit("ns").value)
    tables = [t for t in (transactions, touches, customers) if t is not None]

    with ThreadPoolExecutor(_THREADS) as pool:
        # The text columns first, all at once: customer ids, order ids, categories, channels.
        coding = pool.submit(_customer_codes, *(t["customer_id"] for t in tables))
        reading = pool.submit(
            _lines,
            transactions,
            cut,
            keep_orders=orders,
            categories=population.categories if population is not None else None,
        )
        seen = population.channels if population is not None else None
        touching = pool.submit(_touches_before, touches, cut, seen) if touches is not None else None
        codes, ids, by_id = coding.result()
        n = len(ids)
        lines = reading.result()
        lines.ci = codes.pop(0)[lines.rows]  # the codes of every line are not needed any more
        blocks = _transaction_features(lines, cut, n, pool)  # runs while the rest is read
        known = np.zeros(n, dtype=bool)
        known[lines.ci] = True
        tb = touching.result() if touching is not None else None
        touch_codes = codes.pop(0) if tb is not None else np.zeros(0, np.int32)
        if tb is not None:
            known[touch_codes[tb.before]] = True
            tb.before = tb.before[:0]
        customer_codes = codes.pop(0) if customers is not None else np.zeros(0, np.int32)
        joined = np.full(n, _NAT)  # earliest joined_at before the cutoff
        if customers is not None and "joined_at" in customers.columns:
            j = _ns(customers["joined_at"])
            before = np.flatnonzero((j != _NAT) & (j < cut))
            latest = np.iinfo(np.int64).max
            joined[:] = latest
            np.minimum.at(joined, customer_codes[before], j[before])
            joined[joined == latest] = _NAT
            known[customer_codes[before]] = True
        rows = by_id[known[by_id]]  # the known customers' codes, in customer_id order
        pa.default_memory_pool().release_unused()  # the text phase's transient Arrow buffers
        has_coupon = touches is not None and "coupon_value" in touches.columns
        priors = population.priors if population is not None else None
        counting = (
            pool.submit(_touch_features, tb, touch_codes, cut, rows, n, has_coupon, priors)
            if tb is not None
            else None
        )
        tx = _transaction_part(blocks, lines, cut, lifecycle, pool, population, collect)
        touch = counting.result() if counting is not None else {}
    channels = tb.channels if tb is not None else []
    part = _population_part(tx, touch, tb, ids.take(pa.array(rows))) if collect else None
    columns = _columns(tx, touch, channels, rows, ids, joined[rows], cutoff, cut)
    if customers is not None:
        _attributes(columns, customers, customer_codes, rows)
    # One block per column (no copy); a frame of very many is consolidated, as pandas prefers.
    features = pd.DataFrame(columns, copy=len(columns) > 90)
    del columns
    due = None
    if due_within_days is not None:
        due = (
            _due_names(tx.run_outs, ids, by_id, due_within_days)
            if tx.run_outs is not None
            else _due_frame()
        )
    kept = _order_frame(tx.orders, ids, by_id, rows, tz) if orders else None
    return CustomerTables(features, kept, due, part)


def _columns(
    tx: _Part,
    touch: dict[str, np.ndarray],
    channels: list[str],
    rows: np.ndarray,
    ids: pa.Array,
    joined: np.ndarray,
    cutoff: pd.Timestamp,
    cut: int,
) -> dict[str, object]:
    """The columns of the known customers ``rows`` (codes, in output order), in column order.

    A customer without orders gets zero counts and spends, null days and scores, the
    ``no_purchase`` segment and the ``acquisition`` stage; the touch columns are null without
    ``touches``, and so is every column whose input column is missing.
    """
    m = len(rows)
    slot = np.zeros(len(ids), _I64)
    slot[rows] = np.arange(m)
    at = slot[tx.who]  # the buyers' rows
    bought = np.zeros(m, dtype=bool)
    bought[at] = True
    stamps = np.full(m, cutoff.as_unit("ns").value, dtype=np.int64).view("datetime64[ns]")
    result: dict[str, object] = {
        "customer_id": pd.arrays.ArrowStringArray(ids.take(pa.array(rows))),
        "as_of": stamps
        if cutoff.tz is None
        else pd.DatetimeIndex(stamps).tz_localize("UTC").tz_convert(cutoff.tz).array,
    }
    since = joined.copy()  # tenure: since joining (before the cutoff), else the first order
    since[at] = np.where(joined[at] != _NAT, joined[at], tx.first_order)
    tenure = np.where(since != _NAT, (cut - since) / _DAY, np.nan)
    zero_spend = ("spend_30d", "spend_90d", "spend_365d", "spend_total", "spend_trend_90d")
    extra = [c for c in channels if c not in TOUCH_CHANNELS]
    kind = kinds(extra)
    for col in feature_columns(extra):
        if col in tx.ints:
            values = np.zeros(m, _I64)
            values[at] = tx.ints[col]
            scored = col in ("r_score", "f_score", "m_score")
            result[col] = pd.arrays.IntegerArray(values, ~bought if scored else np.zeros(m, bool))
        elif col in tx.floats:
            floats = np.full(m, 0.0 if col in zero_spend else np.nan)
            floats[at] = tx.floats[col]
            result[col] = floats
        elif col in tx.texts:
            labels = _LABELS[col]
            index = np.full(m, len(labels) - 1)
            index[at] = tx.texts[col]
            result[col] = pd.arrays.ArrowStringArray(
                pa.array(labels, pa.large_string()).take(pa.array(index))
            )
        elif col == "tenure_days":
            result[col] = tenure
        elif col == "best_channel" and col in touch:
            result[col] = pd.arrays.ArrowStringArray(pa.array(touch[col], pa.large_string()))
        elif col in touch:
            values = touch[col]
            result[col] = (
                pd.arrays.IntegerArray(values.astype(_I64, copy=False), np.zeros(m, bool))
                if kind[col] == "int"
                else values
            )
        elif kind[col] == "int":
            result[col] = pd.arrays.IntegerArray(np.zeros(m, _I64), np.ones(m, dtype=bool))
        elif kind[col] == "float":
            result[col] = np.full(m, np.nan)
        else:
            result[col] = pd.arrays.ArrowStringArray(pa.nulls(m, pa.large_string()))
    return result


def _attributes(
    columns: dict[str, object], customers: pd.DataFrame, codes: np.ndarray, rows: np.ndarray
) -> None:
    """``member_tier`` and the other customer attributes (first row per customer), at the end."""
    extra = [c for c in customers.columns if c not in ("customer_id", "joined_at")]
    if not extra:
        return
    first = np.full(int(codes.max(initial=0)) + 1 if len(codes) else 0, -1, _I64)
    order, _ = _sort_order(codes, np.zeros(len(codes), _I64))  # stable: first rows first
    heads = order[_starts(codes[order])] if len(codes) else order
    first[codes[heads]] = heads
    position = np.where(rows < len(first), first[np.minimum(rows, len(first) - 1)], -1)
    attrs = customers[extra].reset_index(drop=True).reindex(pd.Index(position))
    for col in extra:
        if col == "member_tier":
            columns[col] = attrs[col].astype(TEXT).array
        elif col not in columns:  # a feature name wins over a same-named attribute
            columns[col] = attrs[col].array


# --------------------------------------------------------------------------------------------
# Replenishment reminders: the names behind ``categories_due_7d``
# --------------------------------------------------------------------------------------------


def due_categories(
    transactions: pd.DataFrame,
    *,
    as_of: datetime.date | str | pd.Timestamp,
    within_days: int = 7,
) -> pd.DataFrame:
    """The categories each customer is due to replenish soon, by name, from lines before ``as_of``.

    The run-outs are those of ``build_features`` ("Estimated inventory", same code): per
    customer x category last bought in the 365 days before ``T``, last purchase time + its packs
    x cycle per pack. With ``within_days=7`` a customer's names are exactly the
    ``categories_due_7d`` they are counted in.

    Args:
        transactions: Validated lines (``customer_id, order_id, ordered_at, amount``; optional
            ``category``, ``quantity``). Only lines with ``ordered_at < T`` are read.
        as_of: The cutoff ``T``, as in ``build_features``.
        within_days: The window: run-outs in ``[T, T + within_days days)`` are due (>= 0).

    Returns:
        One row per customer with at least one due category, sorted by ``customer_id``:
        ``customer_id`` and ``categories_due`` (the category names, earliest run-out first, ties
        by name, joined with ``", "``), both ``string[pyarrow]``. No rows without a
        ``category`` column.
    """
    _check_window(within_days)
    tz = getattr(transactions["ordered_at"].dtype, "tz", None)
    cut = int(cutoff_timestamp(as_of, tz).as_unit("ns").value)
    if "category" not in transactions.columns:
        return _due_frame()
    with ThreadPoolExecutor(_THREADS) as pool:
        coding = pool.submit(_customer_codes, transactions["customer_id"])
        lines = _lines(transactions, cut, orders=False)
        (codes,), ids, by_id = coding.result()
        lines.ci = codes[lines.rows]
        block = partial(_block_features, lines, cut, orders=False)
        found = _joined(pool.map(block, _blocks(lines.ci, len(ids))))
    categories = lines.categories
    assert categories is not None  # a category column gives a dictionary
    n_categories = lines.n_categories
    lines.clear()
    if not found:  # no line before the cutoff
        return _due_frame()
    population = _group_medians(found.pop("cycle_cat"), found.pop("cycle"), n_categories)
    due = _run_outs(found, population, cut)
    run_outs = _RunOuts(found["seg_ci"], found["seg_cat"], due, categories)
    return _due_names(run_outs, ids, by_id, within_days)


def _check_window(within_days: int) -> None:
    if within_days < 0:
        raise ValueError(f"within_days must be >= 0, not {within_days!r}")


def _due_names(
    run_outs: _RunOuts, ids: pa.Array, by_id: np.ndarray, within_days: int
) -> pd.DataFrame:
    """The frame of ``due_categories`` from the run-outs (customers as codes into ``ids``)."""
    hit = np.flatnonzero((run_outs.days >= 0) & (run_outs.days < within_days))
    ci, cat, due = run_outs.ci[hit], run_outs.cat[hit], run_outs.days[hit]
    customer_rank = np.empty(len(ids), _I64)
    customer_rank[by_id] = np.arange(len(ids))
    categories = run_outs.categories
    name_rank = np.empty(len(categories), _I64)
    name_rank[pc.sort_indices(categories).to_numpy()] = np.arange(len(categories))
    order = np.lexsort((name_rank[cat], due, customer_rank[ci]))
    ci, cat = ci[order], cat[order]
    heads = np.flatnonzero(_starts(ci))
    offsets = pa.array(np.append(heads, len(ci)).astype(np.int32))
    names = pa.ListArray.from_arrays(offsets, categories.take(pa.array(cat)))
    return _due_frame(
        ids.take(pa.array(ci[heads])), pc.binary_join(names, pa.scalar(", ", pa.large_string()))
    )


def _due_frame(ids: pa.Array | None = None, names: pa.Array | None = None) -> pd.DataFrame:
    """The frame of ``due_categories``: both columns ``string[pyarrow]`` (no rows by default)."""
    if ids is None or names is None:
        ids = names = pa.array([], pa.large_string())
    return pd.DataFrame(
        {
            "customer_id": pd.arrays.ArrowStringArray(ids.cast(pa.large_string())),
            "categories_due": pd.arrays.ArrowStringArray(names.cast(pa.large_string())),
        }
    )


def _order_frame(
    kept: dict[str, np.ndarray],
    ids: pa.Array,
    by_id: np.ndarray,
    rows: np.ndarray,
    tz: datetime.tzinfo | None,
) -> pd.DataFrame:
    """The kept orders as a frame, customers in ``customer_id`` order (see ``customer_tables``).

    The blocks hand the orders back grouped by customer code, ascending, and by time within a
    customer, so putting the customers in id order moves whole runs: no sort. ``customer_id``
    is categorical over the ids of the snapshot's ``rows`` (codes), so its codes are rows.
    """
    ci = kept.get("order_ci", np.zeros(0, np.int32))
    per_code = np.bincount(ci, minlength=len(ids))
    first, counts = (np.cumsum(per_code) - per_code)[by_id], per_code[by_id]
    move = np.repeat(first - (np.cumsum(counts) - counts), counts) + np.arange(len(ci))
    named = rows[rows != len(ids) - 1]  # the last code is the null id: no category
    slot = np.full(len(ids), -1, dtype=np.int32)
    slot[named] = np.arange(len(named))
    names = pd.Index(pd.arrays.ArrowStringArray(ids.take(pa.array(named))))
    at = pd.DatetimeIndex(kept.get("order_t", np.zeros(0, _I64))[move].view("datetime64[ns]"))
    return pd.DataFrame(
        {
            "customer_id": pd.Categorical.from_codes(
                slot[ci[move]], dtype=pd.CategoricalDtype(names)
            ),
            "ordered_at": at if tz is None else at.tz_localize("UTC").tz_convert(tz),
            "value": kept.get("order_value", np.zeros(0))[move],
            "discounted": kept.get("order_discounted", np.zeros(0, bool))[move],
        }
    )
