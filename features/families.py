"""The feature families: every column ``build_features`` writes, in order, with its type.

This is the one list the snapshot and the Feast feature views (``feature_repo/``) are both made
from, so they cannot drift apart. Each family becomes one feature view, ``customer_<name>``.

Per-channel response columns exist for every contract channel (``TOUCH_CHANNELS``), so the
schema is the same at every cutoff; channels outside the contract seen in the data add columns
to the snapshot (after the contract ones) but not to the feature views. Customer attributes
other than ``member_tier`` are passed through after all families and are not registered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from features.contracts import TOUCH_CHANNELS

__all__ = ["FAMILIES", "Family", "Kind", "channel_columns", "feature_columns", "kinds"]

#: Column kinds: ``int`` is pandas ``Int64``, ``float`` ``float64``, ``text`` ``string[pyarrow]``.
Kind = Literal["int", "float", "text"]


@dataclass(frozen=True)
class Family:
    """A group of related features, served together as one feature view."""

    name: str
    description: str
    columns: tuple[tuple[str, Kind], ...]

    @property
    def view(self) -> str:
        """The Feast feature view's name."""
        return f"customer_{self.name}"


def channel_columns(channel: str) -> tuple[tuple[str, Kind], ...]:
    """The three response columns of one (sanitised) touch channel."""
    return (
        (f"touches_180d_{channel}", "int"),
        (f"responses_180d_{channel}", "int"),
        (f"response_rate_{channel}", "float"),
    )


def _floats(*names: str) -> tuple[tuple[str, Kind], ...]:
    return tuple((name, "float") for name in names)


def _ints(*names: str) -> tuple[tuple[str, Kind], ...]:
    return tuple((name, "int") for name in names)


FAMILIES: tuple[Family, ...] = (
    Family(
        "rfm",
        "Recency, frequency and monetary value; quintile scores and the named RFM segment.",
        (
            *_floats("days_since_last_order", "days_since_first_order"),
            *_ints("orders_30d", "orders_90d", "orders_365d", "orders_total"),
            *_floats(
                "spend_30d",
                "spend_90d",
                "spend_365d",
                "spend_total",
                "aov_365d",
                "spend_trend_90d",
                "refund_share_365d",
            ),
            *_ints("r_score", "f_score", "m_score"),
            ("rfm_segment", "text"),
        ),
    ),
    Family(
        "intervals",
        "Gaps between orders and how overdue the next order is against the customer's cycle.",
        _floats(
            "gap_mean_days",
            "gap_median_days",
            "gap_std_days",
            "gap_cv",
            "last_gap_days",
            "typical_gap_days",
            "overdue_ratio",
        ),
    ),
    Family(
        "category_breadth",
        "How many categories a customer buys, how evenly, and which are new.",
        (
            *_ints("categories_90d", "categories_365d"),
            *_floats("category_entropy_365d"),
            *_ints("new_categories_90d"),
            *_floats("top_category_share_365d"),
        ),
    ),
    Family(
        "channel_response",
        "Touches, replies and smoothed reply rates per channel; contact fatigue; best channel.",
        (
            *(column for channel in TOUCH_CHANNELS for column in channel_columns(channel)),
            *_ints("touches_7d", "touches_30d", "touches_180d", "responses_180d"),
            *_floats("response_rate_180d", "days_since_last_response"),
            ("best_channel", "text"),
        ),
    ),
    Family(
        "coupon_sensitivity",
        "How often orders use a discount and how the customer answers coupon touches.",
        (
            *_floats("discount_order_share_365d"),
            *_ints("coupon_touches_180d"),
            *_floats("coupon_response_rate_180d"),
        ),
    ),
    Family(
        "replenishment",
        "Estimated inventory: categories due for a repurchase soon or already overdue.",
        (*_ints("categories_due_7d", "categories_overdue"), *_floats("days_to_next_due")),
    ),
    Family(
        "lifecycle",
        "Lifecycle stage relative to the customer's own cycle, tenure and member tier.",
        (("tenure_days", "float"), ("lifecycle_stage", "text"), ("member_tier", "text")),
    ),
)


def feature_columns(extra_channels: tuple[str, ...] | list[str] = ()) -> list[str]:
    """Every feature column in output order; ``extra_channels`` follow the contract channels."""
    names: list[str] = []
    for family in FAMILIES:
        for name, _ in family.columns:
            names.append(name)
            if family.name == "channel_response" and name == f"response_rate_{TOUCH_CHANNELS[-1]}":
                names += [n for ch in extra_channels for n, _ in channel_columns(ch)]
    return names


def kinds(extra_channels: tuple[str, ...] | list[str] = ()) -> dict[str, Kind]:
    """The kind of every feature column, including the extra channels' columns."""
    out = {name: kind for family in FAMILIES for name, kind in family.columns}
    return out | {n: k for ch in extra_channels for n, k in channel_columns(ch)}
