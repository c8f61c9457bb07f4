"""A coupon's uplift on purchase probability, per customer segment, from past coupon touches.

Coupon tiering needs, for each customer and each coupon value ``v``, the uplift
``Δp(v) = P(order within W days | coupon of value v) - P(order within W days | no coupon)``.
``estimate_uplift`` measures it as of a cutoff ``T`` from the touches the brand already sent.

Method:

1. *Experiments.* Touches sent in ``[T - lookback_days, T - W)``, so every outcome window ends
   before ``T``. Treated: ``coupon_value > 0``; control: no coupon (0 or null), same channels
   and campaign mechanics. Outcome: the customer placed an order (``order_table`` convention,
   orders before ``T`` only) in ``[sent_at, sent_at + W)``. A touch whose window overlaps
   another coupon's (another coupon touch to the same customer sent less than ``W`` days
   before or after it, up to ``T``) is left out: its outcome would mix two coupons' effects,
   and as coupon pushes bunch before the big sales such overlaps make controls half-treated.
2. *Pre-treatment segment* of each touch (``segments`` at ``sent_at``, orders strictly before
   it): recency band of the last order crossed with "coupon user" (an earlier order with a
   positive ``discount``). The same function labels customers at scoring time (at ``T``), so
   a segment means the same thing on both sides.
3. *Time-matched difference.* Each treated touch is compared with the control rate of its
   segment among the control touches sent within ``match_days`` either side of it (a
   treated touch with none is left out, counted as ``unmatched``). Matching on time matters:
   coupon campaigns do not fall on the same days as plain ones (pre-sale pushes always carry
   a coupon) and the chance of ordering in any week swings with the season. The raw uplift of
   a (segment, value level) cell is the mean of ``outcome - matched control rate`` over its
   treated touches; the pooled (all-segment) curve is the same mean over all of them.
4. *Empirical Bayes.* Each cell is shrunk towards the pooled curve with weight ``n / (n + k)``,
   ``k = prior_strength`` pseudo-touches and ``n = n_t n_c / (n_t + n_c)`` from the cell's
   treated touches ``n_t`` and the segment's control touches ``n_c`` (the size of one sample
   whose mean is as noisy as the difference of the two means).
5. *Shape.* Each curve (pooled first, then every segment) is made non-decreasing in value by
   weighted isotonic regression (pool adjacent violators), then non-negative.

Value levels are the distinct coupon values of the treated touches, or, with more than
``MAX_LEVELS`` of them, quantile bands each at the mean value of its touches.
``UpliftTable.for_customers`` interpolates linearly between levels, linearly from ``Δp(0) = 0``
(no coupon, no uplift) up to the smallest level, and holds the largest level's uplift above it
(clamped: never extrapolated upward). An unseen segment gets the pooled curve.

Assumptions: coupons were sent at random, or as good as random, within a segment and a few days
(true for ``features.synthetic``, which targets a random share of reachable members); the effect
is the same for every customer of a segment; an order within ``W`` days of a coupon counts as its
effect, so purchases pulled forward from after the window count as uplift (a known upward bias).
The target is the uplift on *any order* in the window: an extra order from a customer who would
have ordered anyway adds nothing, so ``Δp`` is the chance that a coupon causes an extra order
times ``P(no order anyway)``.

On ``features.synthetic`` (8 seeds of 20,000 customers, ``as_of`` = the end) the pooled 20-CNY
uplift averages 0.045 (seed-to-seed sd 0.009, mostly from the campaign calendar, hardly less with
80,000 customers). Without the overlap exclusion it would be 0.034, without the time match 0.052,
without both 0.061. The truth lies between about 0.041 (each touch's chance of an extra order
times one minus its segment's control rate: low, as those most moved by coupons rarely order
without one) and 0.064 (the chance of an extra order itself).

Not done: no customer-level uplift model (meta-learners, uplift trees) yet, no uplift on order
value, no confidence intervals; a customer's segment is the only heterogeneity.

Without usable coupon history (no touches, no ``coupon_value`` column, no treated or no control
touch in the lookback) ``estimate_uplift`` returns ``None`` and the caller falls back on its
configured default; ``uplift_unavailable_reason`` says why. No control touches means no
counterfactual: the background purchase rate of all customers is not one (touched customers are
reachable, campaigns cluster in sales seasons), so it is not used.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from features.codes import arrow_text, encode, lookup
from features.contracts import NS_PER_DAY, TEXT, cutoff_timestamp
from features.duck import query_arrow
from features.orders import order_table

__all__ = [
    "ALL_SEGMENTS",
    "MAX_LEVELS",
    "RECENCY_BANDS",
    "UpliftTable",
    "estimate_uplift",
    "orders_with_discount",
    "segments",
    "uplift_unavailable_reason",
]

_log = logging.getLogger(__name__)

#: Recency bands ``(label, lower, upper)``: days from the last earlier order, ``[lower, upper)``
#: (an order exactly 30 days before is in "30-90"); "none" without any earlier order.
RECENCY_BANDS: tuple[tuple[str, float, float], ...] = (
    ("0-30", 0.0, 30.0),
    ("30-90", 30.0, 90.0),
    ("90-180", 90.0, 180.0),
    ("180+", 180.0, float("inf")),
)
_USER, _NON_USER = "coupon_user", "non_user"
#: Every segment label, ``"<band>|non_user"`` or ``"<band>|coupon_user"``, in code order
#: (``2 * band + coupon_user``). ``"none|coupon_user"`` cannot occur.
ALL_SEGMENTS: tuple[str, ...] = tuple(
    f"{band}|{flag}"
    for band in [b[0] for b in RECENCY_BANDS] + ["none"]
    for flag in (_NON_USER, _USER)
)
_SEGMENT_DTYPE = pd.CategoricalDtype(list(ALL_SEGMENTS))
_BAND_NS = np.array([round(b[2] * NS_PER_DAY) for b in RECENCY_BANDS[:-1]], dtype=np.int64)
_NO_ORDER_BAND = len(RECENCY_BANDS)
#: At most this many coupon value levels; more distinct values are grouped in quantile bands.
MAX_LEVELS = 12
#: "No such time" in the int64 nanosecond arrays.
_NONE = np.iinfo(np.int64).min


# --------------------------------------------------------------------------------------------
# Orders and segments
# --------------------------------------------------------------------------------------------


def orders_with_discount(
    transactions: pd.DataFrame, *, before: datetime.date | str | pd.Timestamp
) -> pd.DataFrame:
    """``features.orders.order_table`` plus whether the order used a discount.

    Args:
        transactions: Validated lines (``customer_id, order_id, ordered_at, amount``; optional
            ``discount``).
        before: The cutoff: a date (midnight in the data's time zone) or a timestamp; lines at
            or after it are not read.

    Returns:
        ``order_table(..., discounted=True)``: one row per order placed before ``before``,
        ``customer_id, order_id, ordered_at, value, discounted``, sorted by ``customer_id`` then
        ``ordered_at`` (then ``order_id``). ``discounted`` is True when a line of the order
        before ``before`` has ``discount > 0``; all False without a ``discount`` column (nobody
        is a coupon user).
    """
    return order_table(transactions, before=before, discounted=True)


def segments(
    orders: pd.DataFrame, customer_ids: pd.Series, at: pd.Series | pd.Timestamp
) -> pd.Series:
    """The pre-treatment segment of each customer at a time, from orders strictly before it.

    Args:
        orders: ``orders_with_discount``, or the orders of ``features.customer_tables``
            (``customer_id, ordered_at, discounted`` are read).
        customer_ids: The customers to label.
        at: When to label them: one timestamp for all, or one per customer (same length as
            ``customer_ids``), in the clock of ``orders.ordered_at`` (both naive or both aware).

    Returns:
        A categorical Series (categories ``ALL_SEGMENTS``) on the index of ``customer_ids``,
        ``"<band>|<flag>"``. The band: days from the last order before ``at`` to ``at`` in
        ``[0, 30)`` "0-30", ``[30, 90)`` "30-90", ``[90, 180)`` "90-180", ``>= 180`` "180+"
        (an order exactly 30 days before is "30-90"), or "none" without an earlier order (an
        order at ``at`` itself is not earlier). The flag: ``coupon_user`` with an earlier
        discounted order, else ``non_user``.

    Raises:
        ValueError: ``orders`` has no ``discounted`` column (a plain ``order_table``), ``at``
            has a null or the wrong length, or one side has time zones and the other not.
    """
    if "discounted" not in orders.columns:
        raise ValueError(
            "segments needs orders with a 'discounted' column: build them with "
            "models.uplift.orders_with_discount, not features.orders.order_table"
        )
    at_ns = _times_at(at, len(customer_ids), orders["ordered_at"])
    (order_code, code), n_codes = _encode(orders["customer_id"], customer_ids)
    book = _Book.build(
        order_code,
        _ns(orders["ordered_at"]),
        orders["discounted"].to_numpy(dtype=bool, na_value=False),
        n_codes,
    )
    last, user, _ = book.history(code, at_ns)
    codes = _segment_codes(at_ns, last, user)
    return pd.Series(
        pd.Categorical.from_codes(codes, dtype=_SEGMENT_DTYPE),
        index=customer_ids.index,
        name="segment",
    )


def _segment_codes(at_ns: np.ndarray, last: np.ndarray, user: np.ndarray) -> np.ndarray:
    """Index into ``ALL_SEGMENTS``: ``2 * band + coupon_user`` (``last``: ``_NONE`` = no order)."""
    has_order = last != _NONE
    since = at_ns - np.where(has_order, last, at_ns)
    band = np.where(has_order, np.searchsorted(_BAND_NS, since, side="right"), _NO_ORDER_BAND)
    return (2 * band + user).astype(np.int8)


def _times_at(at: pd.Series | pd.Timestamp, n: int, reference: pd.Series) -> np.ndarray:
    """``at`` as ``n`` int64 nanosecond times (UTC instants when aware)."""
    ref_aware = getattr(reference.dtype, "tz", None) is not None
    if isinstance(at, pd.Series):
        if len(at) != n:
            raise ValueError(f"at has {len(at)} values for {n} customers")
        aware = getattr(at.dtype, "tz", None) is not None
        if at.isna().any():
            raise ValueError("at has null times")
        times = _ns(at)
    else:
        stamp = pd.Timestamp(at)
        if pd.isna(stamp):
            raise ValueError("at is null")
        aware = stamp.tzinfo is not None
        times = np.full(n, stamp.as_unit("ns").value, dtype=np.int64)
    if aware != ref_aware:
        raise ValueError("at and the order times must both be naive or both time-zone aware")
    return times


# --------------------------------------------------------------------------------------------
# Integer machinery: customer codes, orders and touches sorted by (customer, time)
# --------------------------------------------------------------------------------------------


def _ns(values: pd.Series) -> np.ndarray:
    """Times as int64 nanoseconds since the epoch (UTC instants when aware; NaT as ``_NONE``)."""
    if not pd.api.types.is_datetime64_any_dtype(values):
        values = pd.to_datetime(values)
    return values.to_numpy(dtype="datetime64[ns]").view(np.int64)


def _encode(*columns: pd.Series) -> tuple[list[np.ndarray], int]:
    """Integer codes (int64) of ids shared across columns, and how many.

    Codes follow first appearance, except for a categorical first column (see below).

    Only the first id of each run of equal neighbours is hashed (the tables usually come
    grouped by customer), so the cost is one string comparison per row. A null id is a code of
    its own. A categorical first column (``customer_tables``' orders) keeps its own codes; the
    other columns are looked up in its categories, and ids not there come after them.
    """
    first = columns[0]
    if isinstance(first.dtype, pd.CategoricalDtype) and not first.isna().any():
        return _encode_by_categories(first, columns[1:])
    codes, dictionary = encode([arrow_text(column) for column in columns])
    null = any(bool((code == len(dictionary)).any()) for code in codes)
    return [code.astype(np.int64) for code in codes], len(dictionary) + int(null)


def _encode_by_categories(
    first: pd.Series, others: Sequence[pd.Series]
) -> tuple[list[np.ndarray], int]:
    """``_encode`` when the first column is categorical (no null): its codes, then lookups."""
    categories = first.cat.categories
    known = pa.array(categories.astype(TEXT).array).cast(pa.large_string())
    codes = [first.cat.codes.to_numpy().astype(np.int64)]
    gaps, rests = [], []
    for column in others:
        text = arrow_text(column)
        found = lookup(text, known)
        missing = np.isnan(found)
        codes.append(np.where(missing, 0, found).astype(np.int64))
        gaps.append(missing)
        rests.append(pd.Series(pd.arrays.ArrowStringArray(text.filter(pa.array(missing)))))
    if not any(gap.any() for gap in gaps):
        return codes, len(categories)
    # Ids not among the categories (and nulls): codes after them, shared across the columns.
    extra, count = _encode(*rests)
    for code, gap, more in zip(codes[1:], gaps, extra, strict=True):
        code[gap] = len(categories) + more
    return codes, len(categories) + count


def _ascending(values: np.ndarray) -> bool:
    """Whether ``values`` never decrease."""
    return bool(np.all(values[1:] >= values[:-1]))


def _ascending_within(key: np.ndarray, t: np.ndarray) -> bool:
    """Whether the times never decrease among neighbours sharing a key."""
    return not bool(np.any((key[1:] == key[:-1]) & (t[1:] < t[:-1])))


@dataclass(frozen=True)
class _Index:
    """Rows sorted by ``(code, t)`` (exactly), searchable by ``(code, t)``.

    The search runs on packed int64 keys ``code | (t - base) >> shift`` (a few microseconds of
    resolution at most); rows sharing a query's key are then compared on the exact times, so
    the result is exact.
    """

    code: np.ndarray
    t: np.ndarray
    key: np.ndarray
    base: int
    top: int
    shift: int
    time_bits: int

    @staticmethod
    def build(code: np.ndarray, t: np.ndarray, n_codes: int) -> tuple[_Index, np.ndarray]:
        """The index of rows ``(code, t)`` (codes in ``[0, n_codes]``) and the sorting order."""
        time_bits = 62 - max(n_codes, 1).bit_length()
        base = int(t.min()) if len(t) else 0
        top = int(t.max()) if len(t) else 0
        shift = max((top - base).bit_length() - time_bits, 0)
        probe = _Index(code[:0], t[:0], t[:0], base, top, shift, time_bits)
        key = probe.keys(code, t)
        if _ascending(key) and _ascending_within(key, t):  # already in order (customer_tables')
            return _Index(code, t, key, base, top, shift, time_bits), np.arange(len(key))
        # Unstable (vectorised) sort: rows sharing a key are put in time order just below, and
        # rows equal in code and time are interchangeable for every count the index gives.
        order = np.argsort(key)
        key, t_sorted = key[order], t[order]
        # Within a shared key the exact times may be out of order: sort those runs alone.
        bad = (key[1:] == key[:-1]) & (t_sorted[1:] < t_sorted[:-1])
        if bad.any():
            run = np.cumsum(np.concatenate([[True], key[1:] != key[:-1]]))
            members = np.flatnonzero(np.isin(run, run[1:][bad]))
            order[members] = order[members][np.lexsort((t_sorted[members], run[members]))]
            t_sorted = t[order]
        return _Index(code[order], t_sorted, key, base, top, shift, time_bits), order

    def keys(self, code: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Packed keys, monotone in ``(code, t)``; times clamped to ``[base, top]``."""
        key = np.maximum(t, self.base, dtype=np.int64)  # in place from here: no temporaries
        np.minimum(key, self.top, out=key)
        np.subtract(key, self.base, out=key)
        np.right_shift(key, self.shift, out=key)
        return np.bitwise_or(key, np.left_shift(code, self.time_bits, dtype=np.int64), out=key)

    def ranks(
        self, code: np.ndarray, t: np.ndarray, shifts: Sequence[tuple[int, bool]]
    ) -> list[np.ndarray]:
        """``rank(code, t + shift, inclusive=...)`` for each ``(shift, inclusive)``.

        The queries are sorted once (shifted times keep their order): sorted queries search
        several times faster, as the rows they land on stay in cache.
        """
        if _ascending(self.keys(code, t)):  # queries grouped by customer, in time order
            return [self.rank(code, t + shift, inclusive=inc) for shift, inc in shifts]
        order = np.argsort(self.keys(code, t))  # any order of ties: each query is on its own
        code, t = code[order], t[order]
        out = []
        for shift, inclusive in shifts:
            found = np.empty(len(t), dtype=np.int64)
            found[order] = self.rank(code, t + shift, inclusive=inclusive)
            out.append(found)
        return out

    def rank(self, code: np.ndarray, t: np.ndarray, *, inclusive: bool = False) -> np.ndarray:
        """How many rows come before ``(code, t)``: ``(c, s) < (code, t)`` (``<=`` inclusive)."""
        query = self.keys(code, t)
        pos = np.searchsorted(self.key, query, side="left")
        if len(self.key) == 0:
            return pos
        # Rows sharing the query's key (same customer, same few microseconds, or the same
        # instant): a binary search on their exact times.
        tied = np.flatnonzero(self.key[np.minimum(pos, len(self.key) - 1)] == query)
        lo = pos[tied]
        hi = np.searchsorted(self.key, query[tied], side="right")
        exact = t[tied]
        while (active := lo < hi).any():
            mid = (lo + hi) // 2
            row = self.t[np.minimum(mid, len(self.t) - 1)]
            ahead = active & (row <= exact if inclusive else row < exact)
            lo = np.where(ahead, mid + 1, lo)
            hi = np.where(active & ~ahead, mid, hi)
        pos[tied] = lo
        return pos


@dataclass(frozen=True)
class _Book:
    """Orders on integer customer codes: sorted times and each customer's first discounted one."""

    index: _Index
    first_discounted: np.ndarray  # by code; _NONE without a discounted order

    @staticmethod
    def build(code: np.ndarray, t: np.ndarray, discounted: np.ndarray, n_codes: int) -> _Book:
        """From one row per order (customer code, order time, discounted)."""
        index, order = _Index.build(code, t, n_codes)
        first = np.full(n_codes + 1, _NONE, dtype=np.int64)
        disc = np.flatnonzero(discounted[order])
        codes = index.code[disc]
        head = disc[np.concatenate([[True], codes[1:] != codes[:-1]])] if len(disc) else disc
        first[index.code[head]] = index.t[head]
        return _Book(index, first)

    def history(
        self, code: np.ndarray, at: np.ndarray, window: int = 0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per (customer code, time ``at``): what the orders say about the time.

        Returns:
            The last order strictly before ``at`` (``_NONE``: none), whether an order before
            ``at`` was discounted and, with a ``window``, whether an order falls in
            ``[at, at + window)`` (else all False).
        """
        last = np.full(len(code), _NONE, dtype=np.int64)
        ordered = np.zeros(len(code), dtype=bool)
        if len(self.index.t):
            rank, end = self.index.ranks(code, at, [(0, False), (window, False)])
            safe = np.maximum(rank - 1, 0)
            has = (rank > 0) & (self.index.code[safe] == code)
            last[has] = self.index.t[safe[has]]
            ordered = end > rank
        first = self.first_discounted[code]
        return last, (first != _NONE) & (first < at), ordered


def _order_book(transactions: pd.DataFrame, code: np.ndarray, cut: int, n_codes: int) -> _Book:
    """The orders before ``cut`` as ``orders_with_discount`` has them, on integer codes.

    Lines are grouped by customer code and DuckDB's 64-bit ``hash(order_id)`` (its top bits:
    two orders of one customer would have to share the top 40-odd bits to merge); an order's
    time is its earliest line before ``cut``, discounted when such a line has ``discount > 0``.
    """
    t = _ns(transactions["ordered_at"])
    rows = np.flatnonzero((t != _NONE) & (t < cut))
    hashed = query_arrow(
        "SELECT hash(o) AS h FROM lines",
        lines=pa.table({"o": arrow_text(transactions["order_id"])}),
    )
    order_hash = hashed.column("h").to_numpy().view(np.uint64)[rows]
    code_bits = max(n_codes, 1).bit_length()
    key = (code[rows].astype(np.uint64) << np.uint64(64 - code_bits)) | (
        order_hash >> np.uint64(code_bits)
    )
    by_order = np.argsort(key, kind="stable")
    key = key[by_order]
    heads = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]])) if len(key) else rows
    line = rows[by_order]
    times = np.minimum.reduceat(t[line], heads) if len(heads) else t[:0]
    if "discount" in transactions.columns:
        positive = transactions["discount"].to_numpy(dtype=np.float64, na_value=np.nan)[line] > 0
        discounted = (
            np.add.reduceat(positive.astype(np.int64), heads) > 0 if len(heads) else positive
        )
    else:
        discounted = np.zeros(len(heads), dtype=bool)
    return _Book.build(code[line[heads]], times, discounted, n_codes)


# --------------------------------------------------------------------------------------------
# The estimate
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpliftTable:
    """Uplift on P(order within the window) by segment and coupon value, as of a cutoff.

    Attributes:
        cells: One row per (segment seen among the experiments, value level), segments in
            ``ALL_SEGMENTS`` order, values ascending: ``segment, value`` (CNY), ``treated_n``
            (matched coupon touches of the segment at that level), ``control_n`` (the
            segment's control touches), ``treated_rate`` (share of the treated touches
            followed by an order in the window), ``control_rate`` (mean matched control rate
            of the same touches), ``raw_uplift`` (their difference; NaN without a treated
            touch), ``weight`` (of the raw uplift against the pooled curve), ``uplift`` (the
            estimate: shrunk, non-decreasing in value, non-negative).
        pooled: One row per value level over all segments: ``value, treated_n, control_n,
            treated_rate, control_rate, raw_uplift, uplift``.
        as_of: The cutoff, in the clock of the touches.
        window_days: The outcome window ``W``.
        lookback_days: Touches sent in ``[as_of - lookback_days, as_of - W)`` were read.
        prior_strength: Pseudo-touches of the shrinkage towards the pooled curve.
        match_days: Half-width of the time match between treated and control touches.
        counts: Touches ``in_lookback``, left out as ``overlapping`` another coupon's window,
            ``treated`` and ``control`` kept, and treated ones left out as ``unmatched``.
    """

    cells: pd.DataFrame
    pooled: pd.DataFrame
    as_of: pd.Timestamp
    window_days: float
    lookback_days: float
    prior_strength: float
    match_days: float
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def values(self) -> np.ndarray:
        """The coupon value levels (CNY), ascending."""
        return self.pooled["value"].to_numpy(dtype=np.float64)

    def for_customers(self, segment: pd.Series, values: Sequence[float]) -> np.ndarray:
        """Uplift of each coupon value for each customer, from the customer's segment.

        Linear between value levels; linear from 0 at value 0 (no coupon, no uplift) up to the
        smallest level; clamped at the largest level's uplift above it (no upward
        extrapolation); 0 for values <= 0. A segment not in ``cells`` (or null) gets the
        pooled curve.

        Args:
            segment: Segment labels (``segments`` at the scoring time), one per customer.
            values: Coupon values (CNY) to price.

        Returns:
            Array of shape ``(len(segment), len(values))``: uplift on P(order within
            ``window_days``).
        """
        known = list(dict.fromkeys(self.cells["segment"].astype(str)))
        levels = np.concatenate([[0.0], self.values])
        wanted = np.asarray(values, dtype=np.float64)
        curves = [self.pooled["uplift"].to_numpy(dtype=np.float64)]
        uplift = self.cells["uplift"].to_numpy(dtype=np.float64).reshape(len(known), -1)
        curves += list(uplift)
        rows = np.stack([np.interp(wanted, levels, np.concatenate([[0.0], c])) for c in curves])
        labels = pd.Categorical(segment)  # a categorical is recoded, not read cell by cell
        labels = labels.set_categories(labels.categories.astype(str))
        codes = labels.set_categories(known).codes
        return rows[codes.astype(np.int64) + 1]

    def describe(self) -> pd.DataFrame:
        """A small table for the run summary: the pooled curve (segment ``"all"``), then cells.

        Returns:
            ``segment, value, treated_n, control_n, raw_uplift, uplift``.
        """
        columns = ["segment", "value", "treated_n", "control_n", "raw_uplift", "uplift"]
        pooled = self.pooled.assign(segment="all")[columns]
        cells = self.cells.assign(segment=self.cells["segment"].astype(str))[columns]
        return pd.concat([pooled, cells], ignore_index=True)


def uplift_unavailable_reason(
    touches: pd.DataFrame | None,
    *,
    as_of: datetime.date | str | pd.Timestamp,
    window_days: float = 7,
    lookback_days: float = 365,
) -> str | None:
    """Why ``estimate_uplift`` returns ``None`` for these touches, or ``None`` if it need not.

    Returns:
        A phrase for the run summary: no touches, no ``coupon_value`` column, or no coupon
        touch (treated) or no touch without one (control) sent in
        ``[as_of - lookback_days, as_of - window_days)``. ``estimate_uplift`` may still give
        ``None`` (and log why) if no coupon touch survives its exclusions.
    """
    if touches is None or len(touches) == 0:
        return "no touches"
    if "coupon_value" not in touches.columns:
        return "touches have no coupon_value column"
    sent, cut = _sent_and_cutoff(touches, as_of)
    lo, hi = _lookback(cut, window_days, lookback_days)
    treated = _coupon_values(touches)[(sent >= lo) & (sent < hi)] > 0
    span = f"sent from {lookback_days:g} to {window_days:g} days before as_of"
    if not treated.any():
        return f"no coupon touch {span}"
    if treated.all():
        return f"no touch without a coupon (control) {span}"
    return None


def estimate_uplift(
    transactions: pd.DataFrame | None,
    touches: pd.DataFrame | None,
    *,
    as_of: datetime.date | str | pd.Timestamp,
    window_days: float = 7,
    lookback_days: float = 365,
    prior_strength: float = 50.0,
    match_days: float = 3.0,
    orders: pd.DataFrame | None = None,
) -> UpliftTable | None:
    """Coupon uplift by segment and value from the touches before ``as_of`` (see the module).

    Nothing at or after ``as_of`` is read: the experiments are the touches sent in
    ``[as_of - lookback_days, as_of - window_days)``, the outcomes orders before ``as_of``, and
    the overlap exclusion looks at coupon touches sent before ``as_of``.

    Args:
        transactions: Validated lines (``customer_id, order_id, ordered_at, amount``; optional
            ``discount`` for the coupon-user flag); not read when ``orders`` are given (may be
            ``None`` then).
        touches: Validated touches (``customer_id, sent_at, coupon_value``) or ``None``.
        as_of: The cutoff: a date (midnight in the data's time zone) or a timestamp.
        window_days: ``W``: an order in ``[sent_at, sent_at + W)`` is the touch's outcome.
        lookback_days: How far back touches are read.
        prior_strength: Pseudo-touches ``k`` of the shrinkage of each cell towards the pooled
            curve (0: none).
        match_days: A treated touch is compared with the control touches of its segment sent
            within this many days either side of it (inclusive).
        orders: The orders before ``as_of`` from :func:`orders_with_discount` (or
            ``features.customer_tables``), when the caller has them already (the same orders;
            saves grouping the lines again).

    Returns:
        An ``UpliftTable``, or ``None`` without usable coupon history (why is logged at INFO;
        see ``uplift_unavailable_reason``).

    Raises:
        ValueError: A non-positive window or match, a lookback not longer than the window, a
            negative prior strength, or touch and order times not both naive or both aware.
    """
    if not 0 < window_days < lookback_days or match_days <= 0:
        raise ValueError("need 0 < window_days < lookback_days and match_days > 0")
    if prior_strength < 0:
        raise ValueError("prior_strength must be >= 0")
    reason = uplift_unavailable_reason(
        touches, as_of=as_of, window_days=window_days, lookback_days=lookback_days
    )
    if reason is not None or touches is None:
        _log.info("no coupon uplift estimate: %s", reason)
        return None
    if orders is None and transactions is None:
        raise ValueError("estimate_uplift needs the transactions or the orders")
    lines = orders if orders is not None else transactions
    assert lines is not None
    order_tz = getattr(lines["ordered_at"].dtype, "tz", None)
    sent, cut = _sent_and_cutoff(touches, as_of)
    if (order_tz is None) != (cut.tzinfo is None):
        raise ValueError("touch and order times must both be naive or both time-zone aware")
    window = round(window_days * NS_PER_DAY)
    lo, hi = _lookback(cut, window_days, lookback_days)
    value = _coupon_values(touches)
    experiment = np.flatnonzero((sent >= lo) & (sent < hi))
    if orders is None:
        (line_code, touch_code), n_codes = _encode(lines["customer_id"], touches["customer_id"])
    else:
        (order_code, touch_code), n_codes = _encode(orders["customer_id"], touches["customer_id"])

    # Experiments whose window overlaps no other coupon's: no other coupon touch of the
    # customer sent less than W before or after (those sent up to T are looked at).
    coupons = np.flatnonzero((value > 0) & (sent >= lo - window) & (sent < cut.value))
    sent_coupons, _ = _Index.build(touch_code[coupons], sent[coupons], n_codes)
    code, at = touch_code[experiment], sent[experiment]
    after, before = sent_coupons.ranks(code, at, [(window, False), (-window, True)])
    near = after - before
    clean = near == (value[experiment] > 0)
    kept, code, at = experiment[clean], code[clean], at[clean]

    if orders is None:
        cut_ns = cutoff_timestamp(as_of, order_tz).value
        book = _order_book(lines, line_code, cut_ns, n_codes)
    else:  # the same orders, already grouped by the caller
        discounted = orders["discounted"].to_numpy(dtype=bool, na_value=False)
        book = _Book.build(order_code, _ns(orders["ordered_at"]), discounted, n_codes)
    last, user, ordered = book.history(code, at, window)
    counts = {"in_lookback": len(experiment), "overlapping": len(experiment) - len(kept)}
    fitted = _fit(
        _segment_codes(at, last, user).astype(np.int64),
        at,
        value[kept],
        ordered,
        half_width=round(match_days * NS_PER_DAY),
        prior_strength=prior_strength,
        counts=counts,
    )
    if fitted is None:
        _log.info("no coupon uplift estimate: no coupon touch left after the exclusions")
        return None
    cells, pooled = fitted
    return UpliftTable(
        cells=cells,
        pooled=pooled,
        as_of=cut,
        window_days=window_days,
        lookback_days=lookback_days,
        prior_strength=prior_strength,
        match_days=match_days,
        counts=counts,
    )


def _sent_and_cutoff(
    touches: pd.DataFrame, as_of: datetime.date | str | pd.Timestamp
) -> tuple[np.ndarray, pd.Timestamp]:
    """Sending times (int64 ns) and the cutoff in the touches' clock."""
    sent = touches["sent_at"]
    return _ns(sent), cutoff_timestamp(as_of, getattr(sent.dtype, "tz", None))


def _lookback(cut: pd.Timestamp, window_days: float, lookback_days: float) -> tuple[int, int]:
    """``[cut - lookback, cut - window)`` in int64 ns (a null time, ``_NONE``, is never in)."""
    return (
        cut.value - round(lookback_days * NS_PER_DAY),
        cut.value - round(window_days * NS_PER_DAY),
    )


def _coupon_values(touches: pd.DataFrame) -> np.ndarray:
    """``coupon_value`` as floats, null (no coupon) as 0."""
    values = touches["coupon_value"].to_numpy(dtype=np.float64, na_value=np.nan)
    return np.where(np.isnan(values), 0.0, values)


def _levels(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Level index of each treated touch and the levels' values (ascending).

    The distinct values, or with more than ``MAX_LEVELS`` of them quantile bands at the mean
    value of their touches.
    """
    distinct, index = np.unique(values, return_inverse=True)
    if len(distinct) <= MAX_LEVELS:
        return index, distinct
    edges = np.unique(np.quantile(values, np.linspace(0.0, 1.0, MAX_LEVELS + 1)[1:-1]))
    _, index = np.unique(np.searchsorted(edges, values, side="right"), return_inverse=True)
    return index, np.bincount(index, values) / np.bincount(index)


def _matched_controls(
    segment: np.ndarray, at: np.ndarray, ordered: np.ndarray, treated: np.ndarray, half: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per treated touch: control touches of its segment sent in ``[at - half, at + half]``.

    Returns:
        Their number and how many of them were followed by an order (one row per treated
        touch, in order): one sort of the controls by (segment, time), two searches.
    """
    ctl = np.flatnonzero(~treated)
    index, order = _Index.build(segment[ctl], at[ctl], len(ALL_SEGMENTS))
    cum = np.concatenate([[0], np.cumsum(ordered[ctl][order], dtype=np.int64)])
    rows = np.flatnonzero(treated)
    seg, when = segment[rows], at[rows]
    first, after = index.ranks(seg, when, [(-half, False), (half, True)])
    return after - first, cum[after] - cum[first]


def _fit(
    segment: np.ndarray,
    at: np.ndarray,
    value: np.ndarray,
    ordered: np.ndarray,
    *,
    half_width: int,
    prior_strength: float,
    counts: dict[str, int],
) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """Cells and pooled curve from one row per kept touch; ``None`` without a matched one.

    Fills ``counts`` with ``treated``, ``control`` and ``unmatched``.
    """
    n_seg = len(ALL_SEGMENTS)
    treated = value > 0
    n_near, k_near = _matched_controls(segment, at, ordered, treated, half_width)
    matched = n_near > 0
    nc_s = np.bincount(segment[~treated], minlength=n_seg).astype(np.float64)
    counts.update(
        treated=int(matched.sum()),
        control=int((~treated).sum()),
        unmatched=int((~matched).sum()),
    )
    if not matched.any():
        return None
    rows = np.flatnonzero(treated)[matched]
    level, levels = _levels(value[rows])
    n_lev = len(levels)
    cell = segment[rows] * n_lev + level
    y = ordered[rows].astype(np.float64)
    expected = k_near[matched] / n_near[matched]
    shape = (n_seg, n_lev)
    nt = np.bincount(cell, minlength=n_seg * n_lev).reshape(shape).astype(np.float64)
    kt = np.bincount(cell, y, minlength=n_seg * n_lev).reshape(shape)
    et = np.bincount(cell, expected, minlength=n_seg * n_lev).reshape(shape)

    p_nt, p_kt, p_et = nt.sum(0), kt.sum(0), et.sum(0)
    p_raw = (p_kt - p_et) / p_nt
    p_fit = np.maximum(_isotonic(p_raw, p_nt), 0.0)

    has = nt > 0
    safe = np.where(has, nt, 1.0)
    raw = np.where(has, (kt - et) / safe, np.nan)
    n_eff = np.where(has, nt * nc_s[:, None] / (safe + nc_s[:, None]), 0.0)
    weight = np.where(n_eff > 0, n_eff / np.maximum(n_eff + prior_strength, 1e-300), 0.0)
    shrunk = weight * np.nan_to_num(raw) + (1.0 - weight) * p_fit[None, :]
    fitted = np.stack(
        [
            np.maximum(_isotonic(s, w + prior_strength), 0.0)
            for s, w in zip(shrunk, n_eff, strict=True)
        ]
    )

    seen = np.flatnonzero(np.bincount(segment, minlength=n_seg) > 0)
    cells = pd.DataFrame(
        {
            "segment": pd.Categorical.from_codes(np.repeat(seen, n_lev), dtype=_SEGMENT_DTYPE),
            "value": np.tile(levels, len(seen)),
            "treated_n": nt[seen].ravel().astype(np.int64),
            "control_n": np.repeat(nc_s[seen], n_lev).astype(np.int64),
            "treated_rate": np.where(has, kt / safe, np.nan)[seen].ravel(),
            "control_rate": np.where(has, et / safe, np.nan)[seen].ravel(),
            "raw_uplift": raw[seen].ravel(),
            "weight": weight[seen].ravel(),
            "uplift": fitted[seen].ravel(),
        }
    )
    pooled = pd.DataFrame(
        {
            "value": levels,
            "treated_n": p_nt.astype(np.int64),
            "control_n": np.full(n_lev, int(nc_s.sum()), dtype=np.int64),
            "treated_rate": p_kt / p_nt,
            "control_rate": p_et / p_nt,
            "raw_uplift": p_raw,
            "uplift": p_fit,
        }
    )
    return cells, pooled


def _isotonic(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted least-squares non-decreasing fit (pool adjacent violators); a few points."""
    blocks: list[tuple[float, float, int]] = []  # (mean, weight, size)
    for yi, wi in zip(y.tolist(), w.tolist(), strict=True):
        blocks.append((yi, wi, 1))
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2, c2 = blocks.pop()
            m1, w1, c1 = blocks.pop()
            total = w1 + w2
            mean = (m1 * w1 + m2 * w2) / total if total > 0 else (m1 * c1 + m2 * c2) / (c1 + c2)
            blocks.append((mean, total, c1 + c2))
    return np.repeat([b[0] for b in blocks], [b[2] for b in blocks])
