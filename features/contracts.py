"""The input contract of DESIGN.md: table names, columns and their kinds.

A data directory holds one file per table, ``<table>.csv`` or ``<table>.parquet``.
Only the required columns may be assumed; optional columns are validated when present.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Literal

import pandas as pd

Kind = Literal["id", "text", "timestamp", "number", "count"]

TABLES = ("transactions", "touches", "customers")
#: Text columns stay in Arrow memory: vectorised string kernels, no Python object per cell.
TEXT = pd.StringDtype("pyarrow")
#: Times inside SQL are int64 nanoseconds since the epoch; a day is this many of them.
NS_PER_DAY = 86_400 * 10**9
FILE_SUFFIXES = (".parquet", ".csv")

#: Channels a customer can buy through (``transactions.channel``).
PURCHASE_CHANNELS = ("mini_program", "store", "live", "marketplace", "app", "web")
#: Private-domain channels a brand can contact a customer through (``touches.channel``).
TOUCH_CHANNELS = (
    "wecom",
    "group",
    "moments",
    "sms",
    "mini_program",
    "official_account",
    "app_push",
    "email",
)

#: Column names that are direct identifiers: hashed with the HMAC key or dropped at ingestion.
#: Whole names only (``campaign_name`` or ``product_name`` are not personal); case-insensitive.
DIRECT_IDENTIFIER_PATTERN = (
    r"(?i)^(phone|phone_?(no|number)|mobile|mobile_?(no|number|phone)|cell_?phone|tel|telephone"
    r"|name|full_?name|first_?name|last_?name|real_?name|nick_?name|customer_?name|member_?name"
    r"|user_?name|openid|open_id|wx_?openid|unionid|union_id|wx_?unionid|email|e_?mail"
    r"|email_?address|wechat(_?id)?|wx_?id|weixin(_?id)?|id_?card|id_?card_?(no|number)"
    r"|address|home_?address|shipping_?address"
    r"|手机|手机号|手机号码|电话|联系电话|姓名|名字|昵称|邮箱|地址|收货地址|身份证|身份证号)$"
)


@dataclass(frozen=True)
class ColumnSpec:
    """One column of an input table."""

    name: str
    kind: Kind
    required: bool = False
    #: For numbers: lower bound (inclusive) when set.
    min_value: float | None = None


@dataclass(frozen=True)
class TableSpec:
    """One input table: its columns and the columns that identify an exact duplicate."""

    name: str
    columns: tuple[ColumnSpec, ...]

    @property
    def required(self) -> tuple[str, ...]:
        """Names of the required columns, in contract order."""
        return tuple(c.name for c in self.columns if c.required)

    def spec(self, column: str) -> ColumnSpec | None:
        """The spec of ``column``, or ``None`` for a pass-through column."""
        return next((c for c in self.columns if c.name == column), None)


TRANSACTIONS = TableSpec(
    "transactions",
    (
        ColumnSpec("customer_id", "id", required=True),
        ColumnSpec("order_id", "id", required=True),
        ColumnSpec("ordered_at", "timestamp", required=True),
        ColumnSpec("amount", "number", required=True),
        ColumnSpec("category", "text"),
        ColumnSpec("sku", "text"),
        ColumnSpec("quantity", "count", min_value=1),
        ColumnSpec("channel", "text"),
        ColumnSpec("discount", "number", min_value=0),
    ),
)

TOUCHES = TableSpec(
    "touches",
    (
        ColumnSpec("customer_id", "id", required=True),
        ColumnSpec("channel", "text", required=True),
        ColumnSpec("sent_at", "timestamp", required=True),
        ColumnSpec("campaign_id", "text"),
        ColumnSpec("responded_at", "timestamp"),
        ColumnSpec("coupon_value", "number", min_value=0),
    ),
)

CUSTOMERS = TableSpec(
    "customers",
    (
        ColumnSpec("customer_id", "id", required=True),
        ColumnSpec("joined_at", "timestamp"),
        ColumnSpec("member_tier", "text"),
    ),
)

SPECS: dict[str, TableSpec] = {s.name: s for s in (TRANSACTIONS, TOUCHES, CUSTOMERS)}


def cutoff_timestamp(
    value: datetime.date | str | pd.Timestamp,
    tz: datetime.tzinfo | str | None,
    name: str = "as_of",
) -> pd.Timestamp:
    """The instant a cutoff names, in the data's timezone ``tz`` (``None``: naive data).

    A date (or ``'YYYY-MM-DD'``) is midnight at the start of that day in ``tz``; a naive
    timestamp is read in ``tz``; an aware one is converted to it. Raises ``ValueError`` for
    something that is not a date, or an aware cutoff for naive data.
    """
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a date or a timestamp, not {value!r}") from error
    if pd.isna(stamp):
        raise ValueError(f"{name} must be a date or a timestamp, not {value!r}")
    if tz is None:
        if stamp.tzinfo is not None:
            raise ValueError(
                f"{name} {stamp} has a timezone but the data's timestamps are naive: pass a "
                "naive timestamp or a date in the data's own clock"
            )
    elif stamp.tzinfo is None:
        stamp = stamp.tz_localize(tz, ambiguous=True, nonexistent="shift_forward")
    else:
        stamp = stamp.tz_convert(tz)
    return stamp.as_unit("ns")
