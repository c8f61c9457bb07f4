"""Outcome labels at a cutoff: what each customer did in ``[cutoff, cutoff + horizon)``.

``make_labels`` is the label half of a point-in-time training row: ``build_features`` reads
only what happened strictly before ``as_of``; the labels read only what happened at or after
the same date (``cutoff``), so no row feeds both sides.

Rules (the same for every label):

- Times are compared in the data's own clock: ``ordered_at`` is tz-aware after validation, and
  a date ``cutoff`` means midnight at the start of that day in that timezone (naive data: naive
  midnight). A day is 24 hours.
- Windows are half-open: a line exactly at the cutoff is in, one exactly at its end is out.
- An order is a distinct ``order_id`` (per customer). It is *placed* at its earliest
  non-refund line (``amount >= 0``); refund lines (``amount < 0``) never place an order, they
  only change what was paid. Placement is judged from the lines dated at or after the cutoff
  alone, so the labels never read a row dated before the cutoff (only the customer ids, to list
  who exists). For well-formed orders (refunds dated after their purchase) this is the order's
  ``min(ordered_at)``; the one difference: a non-refund line added after the cutoff to an order
  begun before it (an exchange, say) counts as a purchase in the window.
- Labels are complete only once the outcome window has matured: ``cutoff + max(horizon, 180
  days)`` must be at or before the end of the observed data. ``label_matured`` says whether it
  has; for an immature cutoff the labels undercount (more churn, less spend) and must not be
  trained on.
"""

from __future__ import annotations

import datetime

import numpy as np
import pandas as pd
import pyarrow as pa

from features.contracts import NS_PER_DAY, cutoff_timestamp
from features.duck import query

__all__ = ["LABEL_COLUMNS", "PURCHASE_WINDOW_DAYS", "SPEND_WINDOW_DAYS", "make_labels"]

#: Window of ``purchased_30d``, in days from the cutoff.
PURCHASE_WINDOW_DAYS = 30
#: Window of ``spend_180d``, in days from the cutoff.
SPEND_WINDOW_DAYS = 180
#: The columns of ``make_labels``, in order.
LABEL_COLUMNS = (
    "customer_id",
    "cutoff",
    "horizon_days",
    "churned",
    "purchased_30d",
    "days_to_next_order",
    "next_order_censored",
    "spend_180d",
    "orders_horizon",
    "label_matured",
)
_REQUIRED = ("customer_id", "order_id", "ordered_at", "amount")

# Orders placed in the horizon (or the 30 days) from the non-refund lines in it; then one pass
# over all lines for the customer ids (all the labels read before the cutoff) and the spend.
_SQL = """
WITH orders AS (
    SELECT customer_id, min(t) AS placed
    FROM lines
    WHERE t >= {start} AND t < {orders_end} AND NOT coalesce(amount < 0, false)
    GROUP BY customer_id, order_id
),
outcomes AS (
    SELECT customer_id,
           count(*) FILTER (WHERE placed < {horizon_end}) AS orders_horizon,
           min(placed) FILTER (WHERE placed < {horizon_end}) AS first_placed,
           count(*) FILTER (WHERE placed < {purchase_end}) > 0 AS purchased_30d
    FROM orders
    GROUP BY customer_id
),
everyone AS (
    SELECT customer_id,
           sum(amount) FILTER (WHERE t >= {start} AND t < {spend_end}) AS spend_180d
    FROM lines
    GROUP BY customer_id
)
SELECT everyone.customer_id,
       coalesce(orders_horizon, 0)::BIGINT AS orders_horizon,
       coalesce(purchased_30d, false) AS purchased_30d,
       (first_placed - {start}) / {ns_per_day}::DOUBLE AS days_to_next_order,
       coalesce(spend_180d, 0.0)::DOUBLE AS spend_180d
FROM everyone LEFT JOIN outcomes USING (customer_id)
ORDER BY everyone.customer_id
"""


def make_labels(
    transactions: pd.DataFrame,
    *,
    cutoff: datetime.date | str | pd.Timestamp,
    horizon_days: int = 90,
    observed_until: datetime.date | str | pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Churn, next-purchase and value outcomes of every customer after ``cutoff``.

    Args:
        transactions: Validated transaction lines (``customer_id``, ``order_id``,
            ``ordered_at``, ``amount``; other columns are ignored), e.g.
            ``load_dataset(...).transactions``.
        cutoff: Start of the outcome windows: a date or ``'YYYY-MM-DD'`` (midnight at the
            start of that day in the data's timezone) or a ``Timestamp`` (naive: wall time in
            the data's timezone; aware: converted to it).
        horizon_days: Length of the churn window ``[cutoff, cutoff + horizon_days)``, in days.
        observed_until: End of the observed data, for ``label_matured``; default the latest
            ``ordered_at`` in ``transactions``. Same forms as ``cutoff``.

    The labels are complete only when the outcome window has matured: ``cutoff + max(
    horizon_days, 180)`` days must be at or before the end of the data (``label_matured``).
    Before that, orders and spend not yet observed are missing and churn is overstated.

    Returns:
        One row per ``customer_id`` found anywhere in ``transactions`` (the caller joins with
        the features, which decide who is known at the cutoff), sorted by ``customer_id``, with
        a default index and the columns:

        - ``customer_id``: as in ``transactions``.
        - ``cutoff``: the cutoff as a Timestamp in the data's timezone (naive if the data are).
        - ``horizon_days`` (int): as given.
        - ``churned`` (bool): no order placed in ``[cutoff, cutoff + horizon_days)``.
        - ``purchased_30d`` (bool): an order placed in ``[cutoff, cutoff + 30 days)``,
          whatever the horizon.
        - ``days_to_next_order`` (float): days from the cutoff to the first order placed at or
          after it, censored at ``horizon_days``.
        - ``next_order_censored`` (bool): no order within the horizon (then
          ``days_to_next_order == horizon_days``); equal to ``churned``.
        - ``spend_180d`` (float): net ``amount`` of all lines dated in ``[cutoff, cutoff + 180
          days)``, refund lines included (also refunds of orders placed before the cutoff):
          what the customer paid, net, in that window. 0 when none.
        - ``orders_horizon`` (int): orders placed in ``[cutoff, cutoff + horizon_days)``.
        - ``label_matured`` (bool): ``cutoff + max(horizon_days, 180) days <= observed_until``.

    Raises:
        ValueError: a required column is missing, ``ordered_at`` is not a timestamp column,
            ``horizon_days`` is not a positive whole number, or an aware ``cutoff`` is given
            for naive data.
    """
    missing = [c for c in _REQUIRED if c not in transactions.columns]
    if missing:
        raise ValueError(f"transactions: missing column(s) {', '.join(missing)}")
    if isinstance(horizon_days, bool) or not isinstance(horizon_days, int | np.integer):
        raise ValueError(f"horizon_days must be a whole number of days, not {horizon_days!r}")
    if horizon_days < 1:
        raise ValueError(f"horizon_days must be at least 1, not {horizon_days}")
    horizon_days = int(horizon_days)

    ordered_at = transactions["ordered_at"]
    if not pd.api.types.is_datetime64_any_dtype(ordered_at):
        raise ValueError(
            f"transactions: ordered_at must be a timestamp column, not {ordered_at.dtype} "
            "(validate the data first, e.g. with load_dataset)"
        )
    ordered_at = ordered_at.dt.as_unit("ns")
    tz = ordered_at.dt.tz
    start = cutoff_timestamp(cutoff, tz, "cutoff")
    if observed_until is None:
        observed = ordered_at.max()
    else:
        observed = cutoff_timestamp(observed_until, tz, "observed_until")
    matured = bool(
        pd.notna(observed)
        and start + pd.Timedelta(days=max(horizon_days, SPEND_WINDOW_DAYS)) <= observed
    )

    # Times as int64 nanoseconds since the epoch (UTC for aware data, wall time for naive):
    # exact comparisons (DuckDB's timestamps stop at microseconds) and no timezone in SQL.
    lines = pa.Table.from_pandas(
        pd.DataFrame(
            {
                "customer_id": transactions["customer_id"],
                "order_id": transactions["order_id"],
                "t": ordered_at.array.asi8,
                "amount": transactions["amount"].astype("float64"),
            },
            copy=False,
        ),
        preserve_index=False,
    )
    c = start.value
    horizon_end = c + horizon_days * NS_PER_DAY
    purchase_end = c + PURCHASE_WINDOW_DAYS * NS_PER_DAY
    sql = _SQL.format(
        start=c,
        orders_end=max(horizon_end, purchase_end),
        horizon_end=horizon_end,
        purchase_end=purchase_end,
        spend_end=c + SPEND_WINDOW_DAYS * NS_PER_DAY,
        ns_per_day=NS_PER_DAY,
    )
    out = query(sql, lines=lines)

    days = out["days_to_next_order"].to_numpy(dtype="float64", na_value=np.nan)
    censored = np.isnan(days)
    n = len(out)
    return pd.DataFrame(
        {
            "customer_id": out["customer_id"].astype(transactions["customer_id"].dtype),
            "cutoff": pd.Series(start, index=pd.RangeIndex(n), dtype=ordered_at.dtype),
            "horizon_days": np.full(n, horizon_days, dtype=np.int64),
            "churned": censored,
            "purchased_30d": out["purchased_30d"].to_numpy(dtype=bool),
            "days_to_next_order": np.where(censored, float(horizon_days), days),
            "next_order_censored": censored.copy(),
            "spend_180d": out["spend_180d"].to_numpy(dtype="float64"),
            "orders_horizon": out["orders_horizon"].to_numpy(dtype=np.int64),
            "label_matured": np.full(n, matured, dtype=bool),
        }
    )
