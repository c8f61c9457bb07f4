"""Orders as known before a cutoff."""

import pandas as pd

from features.orders import order_table


def lines(tz: str | None = "Asia/Shanghai") -> pd.DataFrame:
    stamps = pd.to_datetime(
        ["2026-01-01 10:00", "2026-01-03 00:00", "2026-01-05 00:00", "2025-12-31 23:59"]
    )
    return pd.DataFrame(
        {
            "customer_id": ["A", "A", "A", "B"],
            "order_id": ["1", "1", "2", "3"],
            "ordered_at": stamps.tz_localize(tz) if tz else stamps,
            "amount": [10.0, -2.0, 5.0, 7.0],
        }
    )


def test_orders_use_only_lines_before_the_cutoff():
    got = order_table(lines(), before="2026-01-04")
    assert got["order_id"].tolist() == ["1", "3"]
    assert got["value"].tolist() == [8.0, 7.0]  # the refund before the cutoff counts
    assert got["ordered_at"].iloc[0] == pd.Timestamp("2026-01-01 10:00", tz="Asia/Shanghai")
    # Midnight of the cutoff date is in the data's own time zone.
    assert order_table(lines(), before="2026-01-01")["order_id"].tolist() == ["3"]
    # A refund on or after the cutoff does not change the order's value at the cutoff.
    assert order_table(lines(), before="2026-01-02")["value"].tolist() == [10.0, 7.0]


def test_naive_times_stay_naive():
    got = order_table(lines(None), before="2026-01-04")
    assert got["ordered_at"].dt.tz is None
    assert got["value"].tolist() == [8.0, 7.0]
