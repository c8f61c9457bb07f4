"""Reason codes for the churn score: each customer's top risk drivers, in an operator's words.

Method: exact TreeSHAP (``models.treeshap.contributions``, equal to LightGBM's
``pred_contrib=True`` to 1e-9 and about 20 times faster on small trees) gives every feature's
contribution to a customer's raw score (log-odds for the churn model). Contributions are summed per
**driver**, a group of related feature columns with one plain-words template (the table
:data:`DRIVERS`). SHAP explains a score's distance from the average score, so the reasons
follow that distance's direction: for a customer whose risk is above the average (the
contributions sum to more than 0) the reasons are the drivers pushing the score *up*,
largest first; for a customer below it, the drivers pushing it *down* (what keeps them
loyal). When fewer drivers push that way, the slots are filled with the strongest ones
pushing the other way. Every driver that lowers risk is suffixed :data:`LOWERS_RISK`. A driver
whose columns contribute exactly nothing is never a reason, so a model without splits gives
null reasons.

A driver's template is filled with the customer's own values ("last order 47 days ago, 2.3x
their usual gap of 20 days"). Some drivers have several **facets** (spend: amount, basket
size, refunds); the facet whose columns push hardest in the driver's direction picks the
words. A facet that has nothing to say for a row (a null value) falls back to the driver's
first facet, which always has words, null values included.

Every column of ``features.families.FAMILIES`` belongs to exactly one driver. Model features
outside them go to a channel driver when they are channel response columns
(``touches_180d_<c>``, ``responses_180d_<c>``, ``response_rate_<c>``), else to the ``other``
driver ("other customer attributes"), where the attribute pushing hardest is named.

Speed: TreeSHAP runs in chunks of ``chunk_rows`` to bound memory (a chunk holds
``chunk_rows x (features + 1)`` doubles): about 5 s per million rows for 300 trees of 7 leaves
on 71 features with the table method of ``models.treeshap`` (LightGBM's own ``pred_contrib``
took about 90 s). The words take about 4 CPU-seconds per million rows: they are filled
column-wise with Arrow kernels, once per facet over all the rows and slots that chose it, with
no Python loop over customers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TypeAlias

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.contracts import TEXT, TOUCH_CHANNELS
from features.families import FAMILIES
from models.estimators import feature_frame, row_positions
from models.treeshap import contributions

__all__ = [
    "DRIVERS",
    "LOWERS_RISK",
    "OTHER",
    "Driver",
    "Facet",
    "describe",
    "driver_of",
    "reasons",
    "top_drivers",
]

#: Appended to a reason whose driver lowers the risk (used only to fill empty slots).
LOWERS_RISK = " (lowers risk)"
#: The driver of model features outside every family (passed-through customer attributes).
OTHER = "other"

_L = pa.large_string()
_TextPart: TypeAlias = "pa.Array | str | None"
_CHANNEL_COLUMN = re.compile(r"^(?:touches_180d|responses_180d|response_rate)_(\w+)$")


# --------------------------------------------------------------------------------------------
# The rows' values
# --------------------------------------------------------------------------------------------


@dataclass
class _Values:
    """Some rows of a scoring frame: numbers as float (NaN = null), text as Arrow strings.

    A column is converted once per call of :func:`reasons` (the caches are shared by
    :meth:`subset`) and then taken row by row; a column missing from the frame is all null.
    """

    frame: pd.DataFrame
    rows: np.ndarray
    numbers: dict[str, np.ndarray] = field(default_factory=dict)
    texts: dict[str, pa.Array] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, rows: np.ndarray) -> _Values:
        """Other rows of the same frame, sharing the converted columns."""
        return _Values(self.frame, rows, self.numbers, self.texts)

    def numeric(self, column: str) -> bool:
        """Whether ``column`` is in the frame with a numeric or boolean dtype."""
        if column not in self.frame.columns:
            return False
        dtype = self.frame[column].dtype
        return pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)

    def num(self, column: str) -> np.ndarray:
        """The rows' values of ``column`` as float64, NaN for null or non-numeric."""
        if column not in self.numbers:
            if self.numeric(column):
                series = pd.to_numeric(self.frame[column], errors="coerce")
                self.numbers[column] = series.to_numpy(dtype="float64", na_value=np.nan)
            else:
                self.numbers[column] = np.full(len(self.frame), np.nan)
        return self.numbers[column][self.rows]

    def text(self, column: str) -> pa.Array:
        """The rows' values of ``column`` as Arrow large strings (null when missing)."""
        if column not in self.texts:
            if column in self.frame.columns:
                array = pa.array(self.frame[column].astype(TEXT), from_pandas=True)
                if isinstance(array, pa.ChunkedArray):
                    array = array.combine_chunks()
                self.texts[column] = array.cast(_L)
            else:
                self.texts[column] = pa.nulls(len(self.frame), _L)
        return self.texts[column].take(pa.array(self.rows, pa.int64()))


# --------------------------------------------------------------------------------------------
# Vectorised wording
# --------------------------------------------------------------------------------------------


def _lit(value: _TextPart) -> pa.Array | pa.Scalar:
    return value if isinstance(value, pa.Array) else pa.scalar(value, _L)


def _join(*parts: _TextPart) -> pa.Array:
    """Element-wise concatenation; a null part makes the result null."""
    return pc.binary_join_element_wise(*(_lit(p) for p in parts), pa.scalar("", _L))


def _if(condition: np.ndarray, then: _TextPart, otherwise: _TextPart) -> pa.Array:
    """``then`` where ``condition`` holds, else ``otherwise``."""
    return pc.if_else(pa.array(condition, pa.bool_()), _lit(then), _lit(otherwise))


def _case(n: int, *branches: tuple[np.ndarray, _TextPart], default: _TextPart) -> pa.Array:
    """The value of the first branch whose condition holds, else ``default`` (``None``: null)."""
    out = _lit(default)
    if not isinstance(out, pa.Array):
        out = pa.repeat(out, n)
    for condition, value in reversed(branches):
        out = _if(condition, value, out)
    return out


def _round(x: np.ndarray) -> np.ndarray:
    """Half away from zero, as people round; NaN and huge values become 0 and 10^15."""
    x = np.clip(np.nan_to_num(x, nan=0.0), -1e15, 1e15)
    return (np.sign(x) * np.floor(np.abs(x) + 0.5)).astype(np.int64)


def _number(x: np.ndarray) -> pa.Array:
    """Whole numbers with thousands separators: ``1,240``, ``-380``."""
    r = _round(x)
    a = np.abs(r)
    out = pa.array(a % 1000).cast(_L)
    high, width = a // 1000, 3
    while (high > 0).any():
        grouped = _join(pa.array(high % 1000).cast(_L), ",", pc.utf8_lpad(out, width, "0"))
        out = _if(high > 0, grouped, out)
        high, width = high // 1000, width + 4
    return _if(r < 0, _join("-", out), out)


def _decimal(x: np.ndarray, digits: int) -> pa.Array:
    """``x`` rounded to ``digits`` decimals without trailing zeros: ``2.3``, ``2``."""
    scale = 10.0**digits
    rounded = _round(x * scale) / scale
    return pa.array(rounded).cast(_L)


def _plain(x: np.ndarray) -> pa.Array:
    """A number as people write it: whole above 100, else at most two decimals."""
    return _if(np.abs(x) >= 100, _number(x), _decimal(x, 2))


def _count(x: np.ndarray, one: str, many: str) -> pa.Array:
    """``1 order``, ``3 orders``."""
    return _join(_number(x), " ", _if(_round(x) == 1, one, many))


def _times(x: np.ndarray) -> pa.Array:
    """``once``, ``twice``, ``5 times``."""
    r = _round(x)
    return _case(len(x), (r == 1, "once"), (r == 2, "twice"), default=_join(_number(x), " times"))


def _days(x: np.ndarray) -> pa.Array:
    """``less than a day``, ``1 day``, ``47 days``."""
    r = _round(np.abs(x))
    return _case(
        len(x),
        (r == 0, "less than a day"),
        (r == 1, "1 day"),
        default=_join(_number(np.abs(x)), " days"),
    )


def _ago(x: np.ndarray) -> pa.Array:
    return _join(_days(x), " ago")


def _percent(share: np.ndarray) -> pa.Array:
    """``60%``; a share above 0 that rounds to 0 is ``under 1%``."""
    r = _round(share * 100)
    return _case(len(share), ((share > 0) & (r == 0), "under 1%"), default=_join(_number(r), "%"))


def _ratio(x: np.ndarray) -> pa.Array:
    """``2.3x`` (one decimal below 10, whole above)."""
    return _join(_if(x < 9.95, _decimal(x, 1), _number(x)), "\u00d7")


def _words(values: pa.Array) -> pa.Array:
    """Text values as words: ``_`` becomes a space."""
    return pc.replace_substring(values, "_", " ")


def _mapped(values: pa.Array, labels: dict[str, str]) -> pa.Array:
    """Codes replaced by their labels; unknown codes and nulls give null."""
    index = pc.index_in(values, value_set=pa.array(list(labels), _L))
    return pc.take(pa.array(list(labels.values()), _L), index)


# --------------------------------------------------------------------------------------------
# Drivers and their facets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Facet:
    """Some columns of a driver and the words that describe them.

    ``text`` maps the rows' values to one string per row; null means "nothing to say here",
    and the driver's first facet speaks instead (a first facet never returns null).
    """

    columns: tuple[str, ...]
    text: Callable[[_Values], pa.Array]


@dataclass(frozen=True)
class Driver:
    """A group of related feature columns that explains the score in one phrase."""

    name: str
    title: str
    facets: tuple[Facet, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column of the driver, facet by facet."""
        return tuple(c for f in self.facets for c in f.columns)


def _recency(v: _Values) -> pa.Array:
    days = v.num("days_since_last_order")
    gap = v.num("typical_gap_days")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = days / gap
    last = _join("last order ", _ago(days))
    usual = _join("their usual gap of ", _days(gap))
    compared = _case(
        len(v),
        (ratio >= 1.1, _join(_ratio(ratio), " ", usual)),
        (ratio < 0.9, _join("within ", usual)),
        default=_join("about ", usual),
    )
    return _case(
        len(v),
        (np.isnan(days), "no order yet"),
        (~(gap > 0) | ~np.isfinite(ratio), last),
        default=_join(last, ", ", compared),
    )


def _frequency(v: _Values) -> pa.Array:
    o90, o365, total = v.num("orders_90d"), v.num("orders_365d"), v.num("orders_total")
    in_90 = _join(_count(o90, "order", "orders"), " in the last 90 days")
    return _case(
        len(v),
        (np.isnan(o90) & np.isnan(o365), "no order history on record"),
        ((total == 0) | (np.isnan(total) & (o365 == 0) & ~(o90 > 0)), "no orders yet"),
        (np.isnan(o365), in_90),
        (
            (o365 == 0) & (total > 0),
            _join("no orders in the past year, ", _number(total), " before"),
        ),
        (o365 == 0, "no orders in the past year"),
        (o90 == 0, _join("no orders in the last 90 days, ", _number(o365), " in the past year")),
        (np.isnan(o90), _join(_count(o365, "order", "orders"), " in the past year")),
        default=_join(in_90, ", ", _number(o365), " in the past year"),
    )


def _first_order(v: _Values) -> pa.Array:
    days = v.num("days_since_first_order")
    return _case(len(v), (np.isnan(days), None), default=_join("first order ", _ago(days)))


def _spend(v: _Values) -> pa.Array:
    s90, trend = v.num("spend_90d"), v.num("spend_trend_90d")
    prior = s90 - trend
    spent = _join("spent ", _number(s90), " in the last 90 days")
    compared = _case(
        len(v),
        (np.abs(trend) < 0.5, ", the same as the 90 days before"),
        (trend < 0, _join(", ", _number(-trend), " less than the 90 days before")),
        default=_join(", ", _number(trend), " more than the 90 days before"),
    )
    nothing = s90 < 0.5
    return _case(
        len(v),
        (np.isnan(s90), "no spend on record"),
        (
            s90 <= -0.5,
            _join("refunds exceeded purchases by ", _number(-s90), " in the last 90 days"),
        ),
        (
            nothing & (prior >= 0.5),
            _join("no spend in the last 90 days, after ", _number(prior), " the 90 days before"),
        ),
        (nothing & (np.abs(prior) < 0.5), "no spend in the last 180 days"),
        (nothing, "no spend in the last 90 days"),
        (np.isnan(trend), spent),
        (np.abs(prior) < 0.5, _join(spent, ", nothing the 90 days before")),
        default=_join(spent, compared),
    )


def _basket(v: _Values) -> pa.Array:
    aov = v.num("aov_365d")
    return _case(
        len(v),
        (np.isnan(aov), None),
        default=_join("average basket ", _number(aov), " in the past year"),
    )


def _refunds(v: _Values) -> pa.Array:
    share = v.num("refund_share_365d")
    return _case(
        len(v),
        (np.isnan(share), None),
        (share <= 0, "no refunds in the past year"),
        default=_join(_percent(share), " of the past year's purchases refunded"),
    )


def _breadth(v: _Values) -> pa.Array:
    c90, c365 = v.num("categories_90d"), v.num("categories_365d")
    in_90 = _join("bought ", _count(c90, "category", "categories"), " in the last 90 days")
    return _case(
        len(v),
        (np.isnan(c90) & np.isnan(c365), "no category data on record"),
        ((c365 == 0) & ~(c90 > 0), "no category bought in the past year"),
        (np.isnan(c365), in_90),
        (
            c90 == 0,
            _join(
                "bought nothing in the last 90 days, ",
                _count(c365, "category", "categories"),
                " in the past year",
            ),
        ),
        (
            np.isnan(c90),
            _join("bought ", _count(c365, "category", "categories"), " in the past year"),
        ),
        default=_join(in_90, ", ", _number(c365), " in the past year"),
    )


def _concentration(v: _Values) -> pa.Array:
    share = v.num("top_category_share_365d")
    return _case(
        len(v),
        (np.isnan(share), None),
        (share >= 0.995, "all the past year's purchases in one category"),
        default=_join(_percent(share), " of the past year's purchases in one category"),
    )


def _novelty(v: _Values) -> pa.Array:
    new = v.num("new_categories_90d")
    return _case(
        len(v),
        (np.isnan(new), None),
        (new == 0, "no new category in the last 90 days"),
        default=_join(
            "tried ", _count(new, "new category", "new categories"), " in the last 90 days"
        ),
    )


#: Contract channels: (name, one message, several messages).
_CHANNEL_WORDS: dict[str, tuple[str, str, str]] = {
    "wecom": ("WeCom", "WeCom message", "WeCom messages"),
    "group": ("WeChat group", "WeChat group message", "WeChat group messages"),
    "moments": ("Moments", "Moments post", "Moments posts"),
    "sms": ("SMS", "SMS message", "SMS messages"),
    "mini_program": ("mini-program", "mini-program message", "mini-program messages"),
    "official_account": ("official account", "official account post", "official account posts"),
    "app_push": ("app push", "app push", "app pushes"),
    "email": ("email", "email", "emails"),
}


def _channel_words(channel: str) -> tuple[str, str, str]:
    if channel in _CHANNEL_WORDS:
        return _CHANNEL_WORDS[channel]
    name = channel.replace("_", " ")
    return name, f"{name} message", f"{name} messages"


def _responses(
    v: _Values, touches: str, responses: str, words: tuple[str, str, str], last: str | None
) -> pa.Array:
    """Responses to the touches of 180 days, with the last response when ``last`` is given."""
    _, one, many = words
    t, r = v.num(touches), v.num(responses)
    days = v.num(last) if last else np.full(len(v), np.nan)
    sent = _count(t, one, many)
    since = _case(
        len(v),
        (np.isnan(days), ", never responded" if last else ""),
        default=_join(", last responded ", _ago(days)),
    )
    replied = _case(len(v), (np.isnan(days), ""), default=_join(", the last ", _ago(days)))
    return _case(
        len(v),
        (np.isnan(t), f"no {one} history on record"),
        (t == 0, _join(f"no {many} in the last 180 days", since)),
        (~(r > 0), _join("no response to ", sent, " in the last 180 days", since)),
        default=_join("responded to ", _number(r), " of ", sent, " in the last 180 days", replied),
    )


def _channel(channel: str, v: _Values) -> pa.Array:
    return _responses(
        v,
        f"touches_180d_{channel}",
        f"responses_180d_{channel}",
        _channel_words(channel),
        None,
    )


def _overall(v: _Values) -> pa.Array:
    words = ("message", "message", "messages")
    return _responses(v, "touches_180d", "responses_180d", words, "days_since_last_response")


def _best_channel(v: _Values) -> pa.Array:
    names = {c: _CHANNEL_WORDS[c][0] for c in TOUCH_CHANNELS if c in _CHANNEL_WORDS}
    best = v.text("best_channel")
    return _join("most responsive on ", pc.coalesce(_mapped(best, names), _words(best)))


def _fatigue(v: _Values) -> pa.Array:
    t30, t7 = v.num("touches_30d"), v.num("touches_7d")
    month = _join("contacted ", _times(t30), " in the last 30 days")
    return _case(
        len(v),
        (np.isnan(t30), "no contact history on record"),
        (t30 == 0, "not contacted in the last 30 days"),
        (t7 > 0, _join(month, ", ", _times(t7), " in the last week")),
        default=month,
    )


def _coupon_offers(v: _Values) -> pa.Array:
    n, rate = v.num("coupon_touches_180d"), v.num("coupon_response_rate_180d")
    offers = _join("received ", _count(n, "coupon offer", "coupon offers"), " in the last 180 days")
    return _case(
        len(v),
        (np.isnan(n), "no coupon offers on record"),
        (n == 0, "no coupon offers in the last 180 days"),
        (np.isnan(rate), offers),
        default=_join(offers, ", estimated response rate ", _percent(rate)),
    )


def _coupon_orders(v: _Values) -> pa.Array:
    share = v.num("discount_order_share_365d")
    return _case(
        len(v),
        (np.isnan(share), None),
        (share <= 0, "no order in the past year used a coupon"),
        (share >= 0.995, "every order in the past year used a coupon"),
        default=_join(_percent(share), " of orders in the past year used a coupon"),
    )


def _replenishment(v: _Values) -> pa.Array:
    overdue, due = v.num("categories_overdue"), v.num("categories_due_7d")
    next_due = v.num("days_to_next_due")
    late = _join(_count(overdue, "category", "categories"), " past the usual restock time")
    return _case(
        len(v),
        (
            np.isnan(overdue) & np.isnan(due) & np.isnan(next_due),
            "no restock estimate on record",
        ),
        ((overdue > 0) & (next_due < 0), _join(late, ", the earliest by ", _days(next_due))),
        (overdue > 0, late),
        (
            due > 0,
            _join(_count(due, "category", "categories"), " due for restock within a week"),
        ),
        (next_due < 0, _join("restock overdue by ", _days(next_due))),
        (next_due >= 0, _join("next restock due in ", _days(next_due))),
        default="no restock estimate for the past year's purchases",
    )


def _tenure(v: _Values) -> pa.Array:
    days = v.num("tenure_days")
    years = days / 365.0
    return _case(
        len(v),
        (np.isnan(days), "no join date on record"),
        ((days >= 365) & (_round(years * 10) == 10), "member for 1 year"),
        (days >= 365, _join("member for ", _decimal(years, 1), " years")),
        default=_join("member for ", _days(days)),
    )


_STAGES = {
    "acquisition": "lifecycle stage: joined, no order yet",
    "activation": "lifecycle stage: early buyer, habit not formed yet",
    "maturity": "lifecycle stage: regular buyer",
    "dormant": "lifecycle stage: dormant, past their usual buying cycle",
    "lost": "lifecycle stage: lapsed, far past their usual buying cycle",
}

_SEGMENTS = {
    "important_value": "high value",
    "important_develop": "high value to develop",
    "important_retain": "high value at risk",
    "important_winback": "high value to win back",
    "potential": "potential",
    "new": "new",
    "general": "general",
    "dormant": "dormant",
    "no_purchase": "no purchase yet",
}


def _stage(v: _Values) -> pa.Array:
    stage = v.text("lifecycle_stage")
    return pc.coalesce(_mapped(stage, _STAGES), _join("lifecycle stage: ", _words(stage)))


def _tier(v: _Values) -> pa.Array:
    return _join("member tier: ", _words(v.text("member_tier")))


def _segment(v: _Values) -> pa.Array:
    segment = v.text("rfm_segment")
    return _join("RFM segment: ", pc.coalesce(_mapped(segment, _SEGMENTS), _words(segment)))


def _attribute(column: str, v: _Values) -> pa.Array:
    """``city tier: 3``, ``acquisition source: ads``; ``... not recorded`` when null."""
    words = column.replace("_", " ")
    if v.numeric(column):
        x = v.num(column)
        value = _case(len(v), (np.isnan(x), None), default=_plain(x))
    else:
        value = _words(v.text(column))
    return pc.coalesce(_join(words, ": ", value), pa.scalar(f"{words} not recorded", _L))


def _channel_driver(channel: str) -> Driver:
    name, _, many = _channel_words(channel)
    return Driver(
        f"channel_{channel}",
        f"responses to {many}",
        (
            Facet(
                (
                    f"touches_180d_{channel}",
                    f"responses_180d_{channel}",
                    f"response_rate_{channel}",
                ),
                partial(_channel, channel),
            ),
        ),
    )


_RECENCY = (
    "days_since_last_order",
    "r_score",
    *(name for family in FAMILIES if family.name == "intervals" for name, _ in family.columns),
)

#: The drivers in tie-break order. Channels outside the contract get a driver like the
#: contract channels' (after them), and :data:`OTHER` takes every other model feature.
DRIVERS: tuple[Driver, ...] = (
    Driver(
        "recency",
        "days since the last order against the customer's usual gap",
        (Facet(_RECENCY, _recency),),
    ),
    Driver(
        "frequency",
        "number of orders",
        (
            Facet(
                ("orders_30d", "orders_90d", "orders_365d", "orders_total", "f_score"), _frequency
            ),
            Facet(("days_since_first_order",), _first_order),
        ),
    ),
    Driver(
        "spend",
        "money spent",
        (
            Facet(
                (
                    "spend_30d",
                    "spend_90d",
                    "spend_365d",
                    "spend_total",
                    "spend_trend_90d",
                    "m_score",
                ),
                _spend,
            ),
            Facet(("aov_365d",), _basket),
            Facet(("refund_share_365d",), _refunds),
        ),
    ),
    Driver(
        "category_breadth",
        "number of categories bought",
        (
            Facet(("categories_90d", "categories_365d"), _breadth),
            Facet(("category_entropy_365d", "top_category_share_365d"), _concentration),
            Facet(("new_categories_90d",), _novelty),
        ),
    ),
    *(_channel_driver(channel) for channel in TOUCH_CHANNELS),
    Driver(
        "response",
        "responses to messages on any channel",
        (
            Facet(
                (
                    "touches_180d",
                    "responses_180d",
                    "response_rate_180d",
                    "days_since_last_response",
                ),
                _overall,
            ),
            Facet(("best_channel",), _best_channel),
        ),
    ),
    Driver(
        "contact_fatigue",
        "recent contact frequency",
        (Facet(("touches_7d", "touches_30d"), _fatigue),),
    ),
    Driver(
        "coupons",
        "coupon use and coupon offers",
        (
            Facet(("coupon_touches_180d", "coupon_response_rate_180d"), _coupon_offers),
            Facet(("discount_order_share_365d",), _coupon_orders),
        ),
    ),
    Driver(
        "replenishment",
        "estimated restock timing",
        (Facet(("categories_due_7d", "categories_overdue", "days_to_next_due"), _replenishment),),
    ),
    Driver(
        "lifecycle",
        "tenure, lifecycle stage, member tier and RFM segment",
        (
            Facet(("tenure_days",), _tenure),
            Facet(("lifecycle_stage",), _stage),
            Facet(("member_tier",), _tier),
            Facet(("rfm_segment",), _segment),
        ),
    ),
    Driver(OTHER, "other customer attributes", ()),
)

_BY_NAME = {d.name: d for d in DRIVERS}
_BY_COLUMN = {c: d.name for d in DRIVERS for c in d.columns}


def driver_of(column: str) -> str:
    """The name of the driver a feature column belongs to.

    A family column has its driver in :data:`DRIVERS`; a channel response column of any
    other channel ``c`` has ``channel_<c>``; anything else is :data:`OTHER`.
    """
    if column in _BY_COLUMN:
        return _BY_COLUMN[column]
    match = _CHANNEL_COLUMN.match(column)
    return f"channel_{match.group(1)}" if match else OTHER


def _driver(name: str) -> Driver:
    if name in _BY_NAME:
        return _BY_NAME[name]
    if name.startswith("channel_"):
        return _channel_driver(name.removeprefix("channel_"))
    raise KeyError(f"unknown driver {name!r}")


def describe(frame: pd.DataFrame, driver: str, *, facet: int = 0) -> pd.Series:
    """The words of one driver (and facet) for every row of ``frame``, whatever the model.

    Args:
        frame: A scoring frame (feature snapshot columns; missing columns read as null).
        driver: A driver name (see :data:`DRIVERS`, or ``channel_<c>`` for any channel).
        facet: Which facet of the driver speaks; a facet with nothing to say for a row falls
            back to the first facet, as in :func:`reasons`.

    Returns:
        Strings (``string[pyarrow]``) aligned with ``frame.index``, never null.

    Raises:
        KeyError: For an unknown driver, or :data:`OTHER` (its words need a column).
    """
    found = _driver(driver)
    if not found.facets:
        raise KeyError(f"driver {driver!r} has no fixed words; its reasons name a column")
    values = _Values(frame, np.arange(len(frame)))
    text = _spoken(found, found.facets[facet], values)
    return pd.Series(pd.arrays.ArrowStringArray(text), index=frame.index, name=driver)


def _spoken(driver: Driver, facet: Facet, values: _Values) -> pa.Array:
    """A facet's words, the driver's first facet speaking where the facet has none."""
    text = facet.text(values)
    missing = text.is_null().to_numpy(zero_copy_only=False)
    if missing.any() and driver.facets and facet is not driver.facets[0]:
        rows = values.rows[missing]
        fallback = driver.facets[0].text(values.subset(rows))
        text = pc.replace_with_mask(text, pa.array(missing), fallback)
    return pc.fill_null(text, pa.scalar(driver.title, _L)).cast(_L)


# --------------------------------------------------------------------------------------------
# Ranking
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """How the model's feature contributions sum into facets and drivers.

    ``columns`` orders the model's features facet by facet; ``starts`` are the facets' first
    positions in that order, ``driver_starts`` the drivers' first facets.
    """

    drivers: list[Driver]
    facets: list[Facet]
    facet_driver: np.ndarray
    columns: np.ndarray
    starts: np.ndarray
    driver_starts: np.ndarray

    @classmethod
    def build(cls, features: Sequence[str]) -> _Plan:
        """The plan of a model with ``features``; drivers without one are left out."""
        by_driver: dict[str, list[int]] = {}
        for i, name in enumerate(features):
            by_driver.setdefault(driver_of(name), []).append(i)
        static = [d.name for d in DRIVERS]
        extra = [n for n in by_driver if n not in _BY_NAME]  # other channels, feature order
        last_channel = max(i for i, n in enumerate(static) if n.startswith("channel_"))
        order = static[: last_channel + 1] + extra + static[last_channel + 1 :]
        drivers: list[Driver] = []
        facets: list[Facet] = []
        columns: list[int] = []
        owner, starts, driver_starts = [], [], []
        for name in order:
            if name not in by_driver:
                continue
            driver = _driver(name)
            mine = by_driver[name]
            if name == OTHER:
                groups = [
                    (Facet((features[i],), partial(_attribute, features[i])), [i]) for i in mine
                ]
            else:
                groups = [(f, [i for i in mine if features[i] in f.columns]) for f in driver.facets]
            driver_starts.append(len(facets))
            for facet, members in groups:
                if not members:
                    continue
                starts.append(len(columns))
                columns += members
                facets.append(facet)
                owner.append(len(drivers))
            drivers.append(driver)
        return cls(
            drivers,
            facets,
            np.array(owner, dtype=np.int64),
            np.array(columns, dtype=np.int64),
            np.array(starts, dtype=np.int64),
            np.array(driver_starts, dtype=np.int64),
        )


@dataclass
class _Ranked:
    """The chosen drivers of every row: ``(top, n)`` arrays, slot by slot."""

    plan: _Plan
    driver: np.ndarray  # index into plan.drivers, -1: no reason
    facet: np.ndarray  # index into plan.facets, -1: no reason
    value: np.ndarray  # the driver's summed contribution, NaN: no reason


def _inputs(booster: lgb.Booster, frame: pd.DataFrame) -> pd.DataFrame:
    """The model's inputs, text columns with the model's own categories."""
    names = list(booster.feature_name())
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise ValueError(f"the frame lacks model features: {missing}")
    x = feature_frame(frame, names)
    categorical = [c for c in names if isinstance(x[c].dtype, pd.CategoricalDtype)]
    known = booster.pandas_categorical or []
    if len(categorical) != len(known):
        raise ValueError(
            f"the frame has {len(categorical)} text features ({categorical}) but the model "
            f"was trained with {len(known)}"
        )
    for name, categories in zip(categorical, known, strict=True):
        x[name] = x[name].cat.set_categories(categories)
    return x


def _rank(
    booster: lgb.Booster,
    frame: pd.DataFrame,
    top: int,
    chunk_rows: int,
    matrix: np.ndarray | None,
    rows: np.ndarray | None,
) -> _Ranked:
    """TreeSHAP chunk by chunk, summed per facet and driver; the ``top`` drivers of each row.

    The rows are ``frame``'s ``rows`` (positions; all when ``None``); ``matrix`` (when given)
    holds their model inputs.
    """
    if top < 1 or chunk_rows < 1:
        raise ValueError(f"top and chunk_rows must be positive, got {top} and {chunk_rows}")
    plan = _Plan.build(booster.feature_name())
    n, k = len(frame) if rows is None else len(rows), len(plan.drivers)
    driver = np.full((top, n), -1, dtype=np.int64)
    facet = np.full((top, n), -1, dtype=np.int64)
    value = np.full((top, n), np.nan)
    if n == 0:
        return _Ranked(plan, driver, facet, value)
    if matrix is not None and matrix.shape != (n, booster.num_feature()):
        raise ValueError(f"matrix has shape {matrix.shape}, not ({n}, {booster.num_feature()})")
    x: pd.DataFrame | np.ndarray
    if matrix is not None:
        x = matrix
    else:  # the model's columns, then the rows (no copy of the other columns)
        x = _inputs(booster, frame)
        x = x if rows is None else x.iloc[rows]
    width = len(plan.columns) + 1
    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        chunk = x[start:stop] if isinstance(x, np.ndarray) else x.iloc[start:stop]
        contrib = contributions(booster, chunk)
        if contrib.ndim != 2 or contrib.shape[1] != width:
            raise ValueError("reasons need a single-output model (binary or regression)")
        by_facet = np.add.reduceat(contrib[:, plan.columns], plan.starts, axis=1)
        by_driver = np.add.reduceat(by_facet, plan.driver_starts, axis=1)
        # The direction of the row's distance from the average score (up when it is 0).
        toward = np.where(by_driver.sum(axis=1) < 0, -1.0, 1.0)[:, None]
        aligned = by_driver * toward
        at = np.arange(stop - start)
        free = np.ones(aligned.shape, dtype=bool)  # drivers not chosen yet
        for slot in range(min(top, k)):
            chosen = _strongest(aligned, free)
            free[at, chosen] = False
            v = by_driver[at, chosen]
            said = (aligned[at, chosen] > 0) | (aligned[at, chosen] < 0)
            score = by_facet * np.sign(v)[:, None]
            score[plan.facet_driver[None, :] != chosen[:, None]] = -np.inf
            best = np.argmax(score, axis=1)
            driver[slot, start:stop] = np.where(said, chosen, -1)
            facet[slot, start:stop] = np.where(said, best, -1)
            value[slot, start:stop] = np.where(said, v, np.nan)
    return _Ranked(plan, driver, facet, value)


def _strongest(aligned: np.ndarray, free: np.ndarray) -> np.ndarray:
    """Each row's next driver among the ``free`` ones.

    Drivers pushing the row's way (``aligned > 0``), strongest first; then the others,
    strongest first; then those contributing nothing. Ties go to the first driver.
    """
    way = np.where(free & (aligned > 0), aligned, -np.inf)
    other = np.where(free & (aligned < 0), -aligned, -np.inf)
    first_way, first_other = np.argmax(way, axis=1), np.argmax(other, axis=1)
    at = np.arange(len(aligned))
    return np.where(
        way[at, first_way] > -np.inf,
        first_way,
        np.where(other[at, first_other] > -np.inf, first_other, np.argmax(free, axis=1)),
    )


def top_drivers(
    booster: lgb.Booster, frame: pd.DataFrame, *, top: int = 3, chunk_rows: int = 200_000
) -> pd.DataFrame:
    """The drivers behind each row's score, ranked as in :func:`reasons`, by name.

    Args:
        booster: As for :func:`reasons`.
        frame: As for :func:`reasons`.
        top: How many drivers per row.
        chunk_rows: Rows per TreeSHAP call.

    Returns:
        A frame aligned with ``frame.index``: ``driver_1`` .. ``driver_<top>`` (driver names,
        ``string[pyarrow]``, null when there is nothing to say) and ``contribution_1`` ..
        ``contribution_<top>`` (the driver's summed contribution to the raw score, log-odds
        for a binary model; NaN when null).
    """
    ranked = _rank(booster, frame, top, chunk_rows, None, None)
    names = pa.array([d.name for d in ranked.plan.drivers] + [None], _L)
    out: dict[str, object] = {}
    for slot in range(top):
        index = np.where(ranked.driver[slot] >= 0, ranked.driver[slot], len(ranked.plan.drivers))
        out[f"driver_{slot + 1}"] = pd.arrays.ArrowStringArray(names.take(pa.array(index)))
    for slot in range(top):
        out[f"contribution_{slot + 1}"] = ranked.value[slot]
    return pd.DataFrame(out, index=frame.index)


def reasons(
    booster: lgb.Booster,
    frame: pd.DataFrame,
    *,
    top: int = 3,
    chunk_rows: int = 200_000,
    matrix: np.ndarray | None = None,
    rows: np.ndarray | None = None,
) -> pd.DataFrame:
    """Plain-words reasons for each row's churn score, strongest first.

    Args:
        booster: The churn model's booster (any single-output LightGBM model works; "risk"
            is then "a higher score").
        frame: A scoring frame: the feature snapshot as ``build_features`` writes it (other
            columns are ignored); the model's inputs are ``feature_frame(frame,
            booster.feature_name())``, text features mapped to the model's categories.
        top: How many reasons per row.
        chunk_rows: Rows per TreeSHAP call; memory is about ``chunk_rows x features x 8``
            bytes, twice.
        matrix: The model's inputs for ``frame`` (its ``rows``) as LightGBM reads them
            (``models.estimators.feature_matrix``), when the caller has them already.
        rows: Positions of the rows of ``frame`` to explain (all by default): the frame is
            read where needed, never copied.

    Returns:
        A frame aligned with ``frame.index`` (of the ``rows``), columns ``reason_1`` ..
        ``reason_<top>`` (``string[pyarrow]``): the drivers raising the risk most, in order,
        then (when fewer raise it) the ones lowering it most, suffixed :data:`LOWERS_RISK`.
        Null only when fewer drivers than ``top`` contribute anything (a model without
        splits: all null).

    Raises:
        ValueError: When the frame lacks a model feature, its text features do not match the
            model's, or the model has several outputs.
    """
    given = None if rows is None else row_positions(rows)
    chosen = np.arange(len(frame)) if given is None else given
    ranked = _rank(booster, frame, top, chunk_rows, matrix, given)
    n = len(chosen)
    flat_facet = ranked.facet.reshape(-1)  # position = slot * n + row
    flat_value = ranked.value.reshape(-1)
    values = _Values(frame, np.zeros(0, dtype=np.int64))
    pieces: list[pa.Array] = []
    positions: list[np.ndarray] = []
    for f, facet in enumerate(ranked.plan.facets):
        where = np.flatnonzero(flat_facet == f)
        if len(where) == 0:
            continue
        driver = ranked.plan.drivers[ranked.plan.facet_driver[f]]
        text = _spoken(driver, facet, values.subset(chosen[where % n]))
        pieces.append(_if(flat_value[where] < 0, _join(text, LOWERS_RISK), text))
        positions.append(where)
    silent = np.flatnonzero(flat_facet < 0)
    pieces.append(pa.nulls(len(silent), _L))
    positions.append(silent)
    placed = np.concatenate(positions)
    source = np.empty_like(placed)  # the piece element that lands at each position
    source[placed] = np.arange(len(placed))
    every = pa.concat_arrays(pieces).take(pa.array(source))
    return pd.DataFrame(
        {
            f"reason_{slot + 1}": pd.arrays.ArrowStringArray(every.slice(slot * n, n))
            for slot in range(top)
        },
        index=frame.index[chosen],
    )
