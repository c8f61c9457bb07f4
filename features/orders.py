"""Orders from transaction lines, as known strictly before a cutoff.

An order is a distinct ``(customer_id, order_id)``; its time is the earliest of its lines
before the cutoff and its value the sum of their ``amount`` (refund lines included), the same
convention as ``build_features``. Lines at or after the cutoff are not read, so a later refund
never changes an order's value at the cutoff.
"""

from __future__ import annotations

import datetime

import pandas as pd
import pyarrow as pa

from features.contracts import TEXT, cutoff_timestamp
from features.duck import query_arrow

__all__ = ["order_table"]


def order_table(
    transactions: pd.DataFrame,
    *,
    before: datetime.date | str | pd.Timestamp,
    discounted: bool = False,
) -> pd.DataFrame:
    """One row per order placed before ``before``: ``customer_id, order_id, ordered_at, value``.

    Args:
        transactions: Validated lines (``customer_id, order_id, ordered_at, amount``; with
            ``discounted``, an optional ``discount``).
        before: The cutoff: a date (midnight in the data's time zone) or a timestamp.
        discounted: Add ``discounted``: True when a line of the order before ``before`` has
            ``discount > 0`` (all False without a ``discount`` column).

    Returns:
        Orders sorted by ``customer_id``, ``ordered_at`` then ``order_id``; ids as
        ``string[pyarrow]`` text, ``ordered_at`` in the time zone of the input.
    """
    tz = getattr(transactions["ordered_at"].dtype, "tz", None)
    limit = cutoff_timestamp(before, tz)
    columns = ["customer_id", "order_id", "amount"]
    has_discount = discounted and "discount" in transactions.columns
    lines = pa.Table.from_pandas(
        transactions[columns + ["discount"] if has_discount else columns], preserve_index=False
    )
    # The instants as naive UTC (what a tz-aware column holds): compared and kept as they are.
    instants = transactions["ordered_at"].to_numpy(dtype="datetime64[ns]")
    lines = lines.append_column("ordered_at", pa.array(instants))
    if tz is not None:
        limit = limit.tz_convert("UTC").tz_localize(None)
    flag = "coalesce(bool_or(discount > 0), false)" if has_discount else "false"
    orders = query_arrow(
        f"""
        SELECT customer_id, order_id, min(ordered_at) AS ordered_at, sum(amount) AS value
               {f", {flag} AS discounted" if discounted else ""}
        FROM lines WHERE ordered_at < TIMESTAMP '{limit.isoformat(sep=" ")}'
        GROUP BY customer_id, order_id
        ORDER BY customer_id, ordered_at, order_id
        """,
        lines=lines,
    ).to_pandas(types_mapper={pa.string(): TEXT, pa.large_string(): TEXT}.get)
    if tz is not None:
        orders["ordered_at"] = orders["ordered_at"].dt.tz_localize("UTC").dt.tz_convert(tz)
    return orders
