"""Orders from transaction lines, as known strictly before a cutoff.

An order is a distinct ``(customer_id, order_id)``; its time is the earliest of its lines
before the cutoff and its value the sum of their ``amount`` (refund lines included), the same
convention as ``build_features``. Lines at or after the cutoff are not read, so a later refund
never changes an order's value at the cutoff.
"""

from __future__ import annotations

import datetime

import pandas as pd

from features.contracts import cutoff_timestamp
from features.duck import query

__all__ = ["order_table"]


def order_table(
    transactions: pd.DataFrame, *, before: datetime.date | str | pd.Timestamp
) -> pd.DataFrame:
    """One row per order placed before ``before``: ``customer_id, order_id, ordered_at, value``.

    Args:
        transactions: Validated lines (``customer_id, order_id, ordered_at, amount``).
        before: The cutoff: a date (midnight in the data's time zone) or a timestamp.

    Returns:
        Orders sorted by ``customer_id`` then ``ordered_at``; ``ordered_at`` in the time zone of
        the input.
    """
    tz = getattr(transactions["ordered_at"].dtype, "tz", None)
    cut = cutoff_timestamp(before, tz)
    lines = transactions[["customer_id", "order_id", "ordered_at", "amount"]]
    stamp = "ordered_at AT TIME ZONE 'UTC'" if tz is not None else "ordered_at"
    limit = cut.tz_convert("UTC").tz_localize(None) if tz is not None else cut
    orders = query(
        f"""
        SELECT customer_id, order_id, min({stamp}) AS ordered_at, sum(amount) AS value
        FROM lines WHERE {stamp} < TIMESTAMP '{limit.isoformat(sep=" ")}'
        GROUP BY customer_id, order_id
        ORDER BY customer_id, ordered_at, order_id
        """,
        lines=lines,
    )
    if tz is not None:
        orders["ordered_at"] = orders["ordered_at"].dt.tz_localize("UTC").dt.tz_convert(tz)
    return orders
