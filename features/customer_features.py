"""Point-in-time customer features: one row per customer known at a cutoff, nothing after it.

``build_features`` turns the validated input tables into the operators' tags (RFM, purchase
interval, category breadth, channel response, coupon sensitivity, estimated inventory, lifecycle)
as of a cutoff ``T``. Only rows whose event time is strictly before ``T`` are read: lines with
``ordered_at < T``, touches with ``sent_at < T`` (a response counts only if ``responded_at < T``),
customers with ``joined_at < T``. A refund line dated at or after ``T`` therefore changes nothing
at ``T``.

Everything heavy runs in the DuckDB of ``features.duck``: one pass over the lines to orders, one
window over each customer's orders, one over each customer x category, one pass over touches.
Times enter DuckDB as integer nanoseconds since the epoch (UTC instants), so the session time
zone never matters; day counts are fractional, ``seconds / 86400``.

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
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.contracts import NS_PER_DAY, TEXT, TOUCH_CHANNELS, cutoff_timestamp
from features.duck import query_arrow
from features.families import FAMILIES, feature_columns, kinds

__all__ = ["LifecycleThresholds", "build_features", "sanitize_channel"]

_DAY = f"{NS_PER_DAY}.0"
#: Prior strength (in gaps) pulling a customer's median gap toward the population median gap.
GAP_PRIOR_GAPS = 3.0
#: Strength (pseudo-touches) of the fallback Beta prior when method of moments is degenerate.
WEAK_PRIOR_STRENGTH = 2.0
_PANDAS_TYPES = {pa.int64(): pd.Int64Dtype(), pa.string(): TEXT, pa.large_string(): TEXT}


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


_RFM_INT = _family("rfm", "int")[:4]
_SCORES = _family("rfm", "int")[4:]
_GAP_FLOAT = _family("intervals")
_CAT_INT = _family("category_breadth", "int")
_CAT_FLOAT = _family("category_breadth", "float")
_TOUCH_INT = ["touches_7d", "touches_30d", "touches_180d", "responses_180d"]
_REPL_INT = _family("replenishment", "int")
_REPL_FLOAT = _family("replenishment", "float")


def sanitize_channel(name: str) -> str:
    """A channel value as a column suffix: lower case, runs of non-word characters as ``_``."""
    cleaned = re.sub(r"\W+", "_", str(name).strip().lower()).strip("_")
    return cleaned or "other"


def _ns(values: pd.Series) -> pa.Array:
    """Event times as int64 nanoseconds since the epoch (UTC instants), nulls kept."""
    if not (
        pd.api.types.is_datetime64_any_dtype(values) or isinstance(values.dtype, pd.DatetimeTZDtype)
    ):
        values = pd.to_datetime(values)
    values = values.dt.as_unit("ns")
    return pc.cast(pa.array(values), pa.int64())


def _arrow(values: pd.Series) -> pa.Array:
    return pa.array(values, from_pandas=True)


def _encode(ids: pd.Series) -> tuple[pa.Array, pa.Array]:
    """Customer ids as dense int32 codes (grouping on integers is several times faster)."""
    text = pa.array(ids.astype(TEXT), from_pandas=True)
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    encoded = pc.dictionary_encode(text)
    return encoded.indices, encoded.dictionary


def _customer_codes(*ids: pd.Series) -> tuple[list[pa.Array], pa.Array]:
    """One code per customer across all tables, in ``customer_id`` order.

    Returns each column's codes and the sorted ids (``ids[code]``): the families join and sort
    on integers, and the strings come back once, at the end.
    """
    encoded = [_encode(column) for column in ids]
    known = pc.unique(pa.concat_arrays([dictionary for _, dictionary in encoded]))
    ordered = pc.take(known, pc.sort_indices(known))
    codes = [
        pc.take(pc.index_in(dictionary, ordered), c).cast(pa.int32()) for c, dictionary in encoded
    ]
    return codes, ordered


# --------------------------------------------------------------------------------------------
# Transactions: RFM, intervals, category breadth, discounts, estimated inventory
# --------------------------------------------------------------------------------------------


def _transaction_features(tx: pd.DataFrame, cut: int, codes: pa.Array) -> pa.Table:
    has_cat = "category" in tx.columns
    has_disc = "discount" in tx.columns
    cols: dict[str, pa.Array] = {
        "ci": codes,
        "order_id": _arrow(tx["order_id"].astype(TEXT)),
        "t": _ns(tx["ordered_at"]),
        "amount": _arrow(tx["amount"].astype("float64")),
    }
    if has_cat:
        # Only category identity matters here: small integer codes group and sort faster.
        cols["cat"], _ = _encode(tx["category"])
        qty = tx["quantity"] if "quantity" in tx.columns else pd.Series(pd.NA, index=tx.index)
        cols["q"] = _arrow(pd.to_numeric(qty).astype("Float64").astype("float64"))
    if has_disc:
        cols["discount"] = _arrow(tx["discount"].astype("float64"))
    lines = pa.table(cols)

    def since(days: int) -> str:
        return str(cut - days * NS_PER_DAY)

    disc = "coalesce(max(discount), 0) > 0" if has_disc else "NULL::BOOLEAN"
    disc_out = (
        f"count(*) FILTER (WHERE disc AND ot >= {since(365)})::DOUBLE "
        f"/ nullif(count(*) FILTER (WHERE ot >= {since(365)}), 0)"
        if has_disc
        else "NULL::DOUBLE"
    )
    order_sql = f"""
    orders AS (
        SELECT ci, hash(order_id) AS oh, min(t) AS ot, sum(amount) AS value,
               coalesce(sum(amount) FILTER (WHERE amount > 0), 0) AS gross,
               coalesce(sum(amount) FILTER (WHERE amount < 0), 0) AS refund,
               {disc} AS disc
        FROM lines WHERE t < {cut}
        GROUP BY ci, oh
    ),
    prev AS (SELECT *, lag(ot) OVER (PARTITION BY ci ORDER BY ot) AS prev_ot FROM orders),
    seq AS (SELECT *, (ot - prev_ot) / {_DAY} AS gap FROM prev),
    rfm AS (
        SELECT ci,
            count(*) AS orders_total,
            count(*) FILTER (WHERE ot >= {since(30)}) AS orders_30d,
            count(*) FILTER (WHERE ot >= {since(90)}) AS orders_90d,
            count(*) FILTER (WHERE ot >= {since(365)}) AS orders_365d,
            ({cut} - max(ot)) / {_DAY} AS days_since_last_order,
            ({cut} - min(ot)) / {_DAY} AS days_since_first_order,
            min(ot) AS first_ot,
            coalesce(sum(value) FILTER (WHERE ot >= {since(30)}), 0) AS spend_30d,
            coalesce(sum(value) FILTER (WHERE ot >= {since(90)}), 0) AS spend_90d,
            coalesce(sum(value) FILTER (WHERE ot >= {since(365)}), 0) AS spend_365d,
            sum(value) AS spend_total,
            coalesce(sum(value) FILTER (WHERE ot >= {since(180)} AND ot < {since(90)}), 0)
                AS spend_prev_90d,
            sum(gross) FILTER (WHERE ot >= {since(365)}) AS gross_365d,
            sum(refund) FILTER (WHERE ot >= {since(365)}) AS refund_365d,
            {disc_out} AS discount_order_share_365d,
            count(gap) AS n_gaps,
            avg(gap) AS gap_mean_days,
            median(gap) AS gap_median_days,
            stddev_samp(gap) AS gap_std_days,
            (max(ot) - max(prev_ot)) / {_DAY} AS last_gap_days
        FROM seq GROUP BY ci
    )"""
    if has_cat:
        cat_sql = f""",
    purch AS (
        SELECT ci, cat, t AS pt, count(*) AS n_lines, sum(coalesce(q, 1.0)) AS qty
        FROM lines WHERE t < {cut} AND amount >= 0 AND cat IS NOT NULL
        GROUP BY ci, cat, t
    ),
    pseq AS MATERIALIZED (
        SELECT *, (lead(pt) OVER (PARTITION BY ci, cat ORDER BY pt) - pt) / {_DAY} / qty AS cycle
        FROM purch
    ),
    -- Breadth and own cycle share one grouping by customer x category.
    cc AS MATERIALIZED (
        SELECT ci, cat, min(pt) AS first_t,
               coalesce(sum(n_lines) FILTER (WHERE pt >= {since(90)}), 0) AS n90,
               coalesce(sum(n_lines) FILTER (WHERE pt >= {since(365)}), 0) AS n365,
               median(cycle) AS own_cycle, max(pt) AS last_t, arg_max(qty, pt) AS last_q
        FROM pseq GROUP BY ci, cat
    ),
    catf AS (
        SELECT ci,
            count(*) FILTER (WHERE n90 > 0) AS categories_90d,
            count(*) FILTER (WHERE n365 > 0) AS categories_365d,
            count(*) FILTER (WHERE n90 > 0 AND first_t >= {since(90)}) AS new_categories_90d,
            CASE WHEN sum(n365) > 0 THEN greatest(0.0, ln(sum(n365))
                 - sum(n365 * ln(n365)) FILTER (WHERE n365 > 0) / sum(n365)) END
                AS category_entropy_365d,
            max(n365) / nullif(sum(n365), 0) AS top_category_share_365d
        FROM cc GROUP BY ci
    ),
    popc AS (SELECT cat, median(cycle) AS pop_cycle FROM pseq GROUP BY cat),
    runout AS (
        SELECT ci,
               (last_t + last_q * coalesce(own_cycle, pop_cycle) * {_DAY} - {cut}) / {_DAY}
                   AS due_in
        FROM cc JOIN popc USING (cat)
        WHERE last_t >= {since(365)}
    ),
    repl AS (
        SELECT ci,
            count(*) FILTER (WHERE due_in >= 0 AND due_in < 7) AS categories_due_7d,
            count(*) FILTER (WHERE due_in < 0) AS categories_overdue,
            min(due_in) AS days_to_next_due
        FROM runout GROUP BY ci
    )"""
        cat_cols = """
            coalesce(c.categories_90d, 0) AS categories_90d,
            coalesce(c.categories_365d, 0) AS categories_365d,
            c.category_entropy_365d, coalesce(c.new_categories_90d, 0) AS new_categories_90d,
            c.top_category_share_365d,
            coalesce(p.categories_due_7d, 0) AS categories_due_7d,
            coalesce(p.categories_overdue, 0) AS categories_overdue, p.days_to_next_due"""
        cat_join = """
        LEFT JOIN catf c USING (ci) LEFT JOIN repl p USING (ci)"""
    else:
        cat_sql = ""
        cat_cols = ",\n".join(f"NULL AS {c}" for c in _CAT_INT + _CAT_FLOAT + _REPL_INT)
        cat_cols += ", NULL::DOUBLE AS days_to_next_due"
        cat_join = ""
    sql = f"""
    WITH {order_sql}{cat_sql}
    SELECT r.*, {cat_cols}
    FROM rfm r {cat_join}
    """
    return query_arrow(sql, lines=lines)


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


def _smoothed(responses: np.ndarray, touches: np.ndarray) -> np.ndarray:
    alpha, beta = _beta_prior(responses, touches)
    return (responses + alpha) / (touches + alpha + beta)


def _touch_features(
    touches: pd.DataFrame, cut: int, codes: pa.Array
) -> tuple[pa.Table, list[str], set[str]]:
    """Per-customer touch counts; the channel columns, and the channels seen before ``T``."""
    has_coupon = "coupon_value" in touches.columns
    raw = touches["channel"].astype(TEXT)
    before = _ns(touches["sent_at"])
    raw_arrow = _arrow(raw)
    mask = pc.fill_null(pc.less(before, pa.scalar(cut, pa.int64())), False)
    seen = sorted(
        str(v) for v in pc.unique(pc.filter(raw_arrow, mask)).to_pylist() if v is not None
    )
    mapping = {v: sanitize_channel(v) for v in seen}
    names = set(mapping.values())
    channels = list(TOUCH_CHANNELS) + sorted(names - set(TOUCH_CHANNELS))
    responded = (
        _ns(touches["responded_at"])
        if "responded_at" in touches.columns
        else pa.nulls(len(touches), pa.int64())
    )
    cols: dict[str, pa.Array] = {
        "ci": codes,
        "channel": raw_arrow,
        "s": before,
        "r": responded,
    }
    if has_coupon:
        cols["cv"] = _arrow(touches["coupon_value"].astype("float64"))
    table = pa.table(cols)
    s180 = cut - 180 * NS_PER_DAY
    case = " ".join(
        f"WHEN '{v.replace(chr(39), chr(39) * 2)}' THEN '{k}'" for v, k in mapping.items()
    )
    ch_expr = f"CASE channel {case} END" if mapping else "NULL::VARCHAR"
    per_channel = []
    for i, ch in enumerate(channels):
        per_channel.append(
            f"count(*) FILTER (WHERE ch = '{ch}' AND s >= {s180}) AS n_{i}, "
            f"count(*) FILTER (WHERE ch = '{ch}' AND s >= {s180} AND r < {cut}) AS k_{i}"
        )
    coupon = (
        f"count(*) FILTER (WHERE cv > 0 AND s >= {s180}) AS coupon_touches_180d, "
        f"count(*) FILTER (WHERE cv > 0 AND s >= {s180} AND r < {cut}) AS coupon_responses"
        if has_coupon
        else "NULL::BIGINT AS coupon_touches_180d, NULL::BIGINT AS coupon_responses"
    )
    sql = f"""
    WITH t AS (SELECT ci, {ch_expr} AS ch, s, r{", cv" if has_coupon else ""}
               FROM touches WHERE s < {cut})
    SELECT ci,
        count(*) FILTER (WHERE s >= {cut - 7 * NS_PER_DAY}) AS touches_7d,
        count(*) FILTER (WHERE s >= {cut - 30 * NS_PER_DAY}) AS touches_30d,
        count(*) FILTER (WHERE s >= {s180}) AS touches_180d,
        count(*) FILTER (WHERE s >= {s180} AND r < {cut}) AS responses_180d,
        ({cut} - max(r) FILTER (WHERE r < {cut})) / {_DAY} AS days_since_last_response,
        {coupon}{"".join(", " + p for p in per_channel)}
    FROM t GROUP BY ci
    """
    return query_arrow(sql, touches=table), channels, names


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
          run-out minus ``T``, may be negative).
        - Lifecycle: ``tenure_days`` (since ``joined_at`` if before ``T``, else since the first
          order; null for a customer known only from touches), ``lifecycle_stage`` (see
          :class:`LifecycleThresholds` for the rules).
        - Attributes: ``member_tier`` and every other column of ``customers`` except
          ``customer_id`` and ``joined_at``, as they are (null when unknown).
    """
    lifecycle = lifecycle or LifecycleThresholds()
    tz = getattr(transactions["ordered_at"].dtype, "tz", None)
    cutoff = cutoff_timestamp(as_of, tz)
    cut = int(cutoff.as_unit("ns").value)

    has_touches = touches is not None
    has_coupon = touches is not None and "coupon_value" in touches.columns
    has_category = "category" in transactions.columns
    id_columns = [transactions["customer_id"]]
    if touches is not None:
        id_columns.append(touches["customer_id"])
    if customers is not None:
        id_columns.append(customers["customer_id"])
    codes, ids = _customer_codes(*id_columns)

    tx = _transaction_features(transactions, cut, codes[0])
    tf, channels, seen = (
        _touch_features(touches, cut, codes[1]) if touches is not None else (None, [], set())
    )

    if customers is not None:
        joined = (
            _ns(customers["joined_at"])
            if "joined_at" in customers.columns
            else pa.nulls(len(customers), pa.int64())
        )
        cust = pa.table({"ci": codes[-1], "j": joined})
    else:
        cust = pa.table({"ci": pa.array([], pa.int32()), "j": pa.array([], pa.int64())})

    th = lifecycle
    touch_known = "UNION SELECT ci FROM tf" if tf is not None else ""
    touch_cols = ", tf.* EXCLUDE (ci)" if tf is not None else ""
    touch_join = "LEFT JOIN tf USING (ci)" if tf is not None else ""
    sql = f"""
    WITH known AS (
        SELECT ci FROM tx
        {touch_known}
        UNION SELECT ci FROM cust WHERE j < {cut}
    ),
    joined AS (SELECT ci, min(j) AS j FROM cust WHERE j < {cut} GROUP BY ci),
    base AS (
        SELECT k.ci, tx.* EXCLUDE (ci){touch_cols},
               ({cut} - coalesce(jn.j, tx.first_ot)) / {_DAY} AS tenure_days
        FROM known k LEFT JOIN tx USING (ci) {touch_join}
        LEFT JOIN joined jn USING (ci)
    ),
    pop AS (SELECT median(gap_median_days) FILTER (WHERE n_gaps > 0) AS pop_gap FROM base),
    buyers AS (
        SELECT ci,
            rank() OVER (ORDER BY -days_since_last_order)
                + (count(*) OVER (PARTITION BY days_since_last_order) - 1) / 2.0 AS ra,
            rank() OVER (ORDER BY orders_365d)
                + (count(*) OVER (PARTITION BY orders_365d) - 1) / 2.0 AS fa,
            rank() OVER (ORDER BY spend_365d)
                + (count(*) OVER (PARTITION BY spend_365d) - 1) / 2.0 AS ma,
            count(*) OVER () AS nb
        FROM base WHERE orders_total > 0
    ),
    scored AS (
        SELECT b.*,
            CASE WHEN b.orders_total > 0 THEN
                (b.n_gaps * coalesce(b.gap_median_days, 0) + {GAP_PRIOR_GAPS} * pop.pop_gap)
                / (b.n_gaps + {GAP_PRIOR_GAPS}) END AS typical_gap_days,
            floor(5 * (s.ra - 1) / s.nb)::BIGINT + 1 AS r_score,
            floor(5 * (s.fa - 1) / s.nb)::BIGINT + 1 AS f_score,
            floor(5 * (s.ma - 1) / s.nb)::BIGINT + 1 AS m_score
        FROM base b CROSS JOIN pop LEFT JOIN buyers s USING (ci)
    ),
    ratio AS (
        SELECT *, days_since_last_order / nullif(typical_gap_days, 0) AS overdue_ratio
        FROM scored
    ),
    staged AS (
        SELECT *,
            CASE WHEN r_score IS NULL THEN 'no_purchase'
                 WHEN r_score >= 3 AND f_score >= 4 AND m_score >= 4 THEN 'important_value'
                 WHEN r_score >= 3 AND m_score >= 4 THEN 'important_develop'
                 WHEN f_score >= 4 AND m_score >= 4 THEN 'important_retain'
                 WHEN m_score >= 4 THEN 'important_winback'
                 WHEN r_score >= 3 AND f_score >= 4 THEN 'potential'
                 WHEN r_score >= 3 THEN 'new'
                 WHEN f_score >= 4 THEN 'general'
                 ELSE 'dormant' END AS rfm_segment,
            CASE WHEN coalesce(orders_total, 0) = 0 THEN 'acquisition'
                 WHEN overdue_ratio > {float(th.lost_overdue_ratio)}
                      OR days_since_last_order > {float(th.lost_days)} THEN 'lost'
                 WHEN overdue_ratio > {float(th.dormant_overdue_ratio)} THEN 'dormant'
                 WHEN orders_total < {int(th.mature_orders)} THEN 'activation'
                 ELSE 'maturity' END AS lifecycle_stage
        FROM ratio
    )
    SELECT ci, {_final_columns(channels, has_touches, has_coupon, has_category)}
    FROM staged ORDER BY ci
    """
    tables = {"tx": tx, "cust": cust} | ({"tf": tf} if tf is not None else {})
    out = query_arrow(sql, **tables)
    result = _finish(out, ids, cutoff, channels, seen, has_touches, has_coupon)
    return _attach_attributes(result, customers)


def _final_columns(
    channels: list[str], has_touches: bool, has_coupon: bool, has_category: bool
) -> str:
    """The select list of the assembly: no-order zeros, derived ratios, final SQL types.

    Touch counts come back as raw (zero-filled) doubles; ``_finish`` smooths their rates.
    """
    exprs = {c: f"coalesce({c}, 0)::BIGINT" for c in _RFM_INT}
    for c in ("spend_30d", "spend_90d", "spend_365d", "spend_total"):
        exprs[c] = f"coalesce({c}, 0.0)::DOUBLE"
    exprs |= {
        "days_since_last_order": "days_since_last_order::DOUBLE",
        "days_since_first_order": "days_since_first_order::DOUBLE",
        "aov_365d": "coalesce(spend_365d, 0.0)"
        " / CASE WHEN orders_365d > 0 THEN orders_365d::DOUBLE END",
        "spend_trend_90d": "coalesce(spend_90d, 0.0) - coalesce(spend_prev_90d, 0.0)",
        "refund_share_365d": "(0.0 - coalesce(refund_365d, 0.0))"
        " / CASE WHEN gross_365d > 0 THEN gross_365d END + 0.0",
        "gap_cv": "gap_std_days / CASE WHEN gap_mean_days > 0 THEN gap_mean_days END",
    }
    exprs |= {c: f"{c}::BIGINT" for c in _SCORES}
    exprs |= {c: f"{c}::VARCHAR" for c in ("rfm_segment", "lifecycle_stage")}
    for c in (*_CAT_INT, *_REPL_INT):
        exprs[c] = f"coalesce({c}, 0)::BIGINT" if has_category else "NULL::BIGINT"
    for c in (
        *(c for c in _GAP_FLOAT if c != "gap_cv"),
        *_CAT_FLOAT,
        *_REPL_FLOAT,
        "discount_order_share_365d",
        "tenure_days",
    ):
        exprs[c] = f"{c}::DOUBLE"
    if has_touches:
        raw = list(_TOUCH_INT)
        raw += [f"{kind}_{i}" for i in range(len(channels)) for kind in ("n", "k")]
        if has_coupon:
            raw += ["coupon_touches_180d", "coupon_responses"]
        exprs |= {c: f"coalesce({c}, 0)::DOUBLE" for c in raw}
        exprs["days_since_last_response"] = "days_since_last_response::DOUBLE"
    return ", ".join(f"({e}) AS {c}" for c, e in exprs.items())


def _pandas(values: pa.Array | pa.ChunkedArray) -> pd.api.extensions.ExtensionArray:
    """An Arrow column as the output's pandas type: ``Int64``, ``string[pyarrow]``, ``float64``."""
    return values.to_pandas(types_mapper=_PANDAS_TYPES.get).array


def _touch_rates(
    out: pa.Table, channels: list[str], seen: set[str], has_coupon: bool
) -> dict[str, object]:
    """Smoothed rates and best channel over all known customers (0 touches -> prior mean).

    A channel with no touch at all before the cutoff has no prior to fit: its rate is null.
    """
    new: dict[str, object] = {c: out.column(c).to_numpy() for c in _TOUCH_INT}
    new["response_rate_180d"] = _smoothed(new["responses_180d"], new["touches_180d"])  # type: ignore[arg-type]
    rates = np.full((out.num_rows, len(channels)), -np.inf)
    for i, ch in enumerate(channels):
        n_c = out.column(f"n_{i}").to_numpy()
        k_c = out.column(f"k_{i}").to_numpy()
        rate = _smoothed(k_c, n_c) if ch in seen else np.full(out.num_rows, np.nan)
        new[f"touches_180d_{ch}"] = n_c
        new[f"responses_180d_{ch}"] = k_c
        new[f"response_rate_{ch}"] = rate
        rates[:, i] = np.where(n_c > 0, rate, -np.inf)
    pick = None
    if channels:
        by_name = np.argsort(np.array(channels))  # ties go to the first name alphabetically
        best = by_name[np.argmax(rates[:, by_name], axis=1)]
        pick = pa.array(best, mask=~np.isfinite(rates.max(axis=1)))
    new["best_channel"] = pc.take(pa.array(channels, pa.string()), pick) if pick else None
    if has_coupon:
        n_cp = out.column("coupon_touches_180d").to_numpy()
        k_cp = out.column("coupon_responses").to_numpy()
        new["coupon_touches_180d"] = n_cp
        new["coupon_response_rate_180d"] = _smoothed(k_cp, n_cp)
    return new


def _finish(
    out: pa.Table,
    ids: pa.Array,
    cutoff: pd.Timestamp,
    channels: list[str],
    seen: set[str],
    has_touches: bool,
    has_coupon: bool,
) -> pd.DataFrame:
    """Customer ids and cutoff, smoothed touch rates, pandas dtypes and column order."""
    n = out.num_rows
    touch = _touch_rates(out, channels, seen, has_coupon) if has_touches else {}
    extra = [c for c in channels if c not in TOUCH_CHANNELS]
    kind = kinds(extra)
    arrow_kind = {"int": pa.int64(), "float": pa.float64(), "text": pa.string()}
    stamps = np.full(n, cutoff.as_unit("ns").value, dtype=np.int64).view("datetime64[ns]")
    result: dict[str, object] = {
        "customer_id": _pandas(pc.take(ids, out.column("ci"))),
        "as_of": stamps
        if cutoff.tz is None
        else pd.DatetimeIndex(stamps).tz_localize("UTC").tz_convert(cutoff.tz).array,
    }
    for col in feature_columns(extra):
        values = (
            touch[col] if col in touch else out.column(col) if col in out.column_names else None
        )
        if isinstance(values, np.ndarray):
            result[col] = (
                pd.array(values.astype(np.int64), dtype="Int64") if kind[col] == "int" else values
            )
            continue
        if values is None:
            values = pa.nulls(n, arrow_kind[kind[col]])
        result[col] = _pandas(values)
    return pd.DataFrame(result)


def _attach_attributes(result: pd.DataFrame, customers: pd.DataFrame | None) -> pd.DataFrame:
    """``member_tier`` and the other customer attributes, after the features."""
    if customers is None:
        return result
    extra = [c for c in customers.columns if c not in ("customer_id", "joined_at")]
    first = customers.drop_duplicates("customer_id")
    attrs = first[extra].set_axis(pd.Index(first["customer_id"].astype(TEXT)), axis=0)
    attrs = attrs.reindex(pd.Index(result["customer_id"])).reset_index(drop=True)
    for col in extra:
        if col == "member_tier":
            result[col] = attrs[col].astype(TEXT).array
        elif col not in result:  # a feature name wins over a same-named attribute
            result[col] = attrs[col].array
    return result
