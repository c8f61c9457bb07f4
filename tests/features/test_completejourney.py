"""Tests of the Complete Journey adapter: a hand-written golden case and the real package data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from features.adapters.completejourney import (
    RAW_TABLES,
    convert_completejourney,
    load_completejourney,
)
from features.contracts import CUSTOMERS, TOUCHES, TRANSACTIONS

NaT = pd.NaT
TS = pd.Timestamp


# --- golden case --------------------------------------------------------------------------------


def _raw_tables() -> dict[str, pd.DataFrame]:
    """Three households; raw timestamps are naive UTC instants, as in the package."""
    transactions = pd.DataFrame(
        {
            "household_id": [30, 10, 10, 20, 20],
            "store_id": [1, 1, 1, 2, 2],
            "basket_id": [300, 100, 100, 201, 200],
            "product_id": [1001, 1002, 1001, 9999, 1003],
            "quantity": [1, 1, 2, 0, 0],
            "sales_value": [1.75, 2.00, 3.50, 0.00, 0.00],
            "retail_disc": [0.00, 0.00, 0.50, 0.00, 0.00],
            "coupon_disc": [0.00, 0.50, 0.00, 2.00, 0.00],
            "coupon_match_disc": [0.00, 0.50, 0.00, 0.00, 0.00],
            "week": [45, 9, 9, 53, 27],
            "transaction_timestamp": pd.to_datetime(
                [
                    "2017-11-05 06:30:00",  # 01:30 EST, just after the DST fall-back
                    "2017-03-01 17:30:00",  # 12:30 EST
                    "2017-03-01 17:30:00",
                    "2017-12-31 01:00:00",  # 20:00 EST the day before
                    "2017-07-04 03:15:00",  # 23:15 EDT the day before
                ]
            ),
        }
    )
    products = pd.DataFrame(
        {
            "product_id": [1001, 1002, 1003],
            "manufacturer_id": [1, 2, 3],
            "department": ["PASTRY", "GROCERY", "PRODUCE"],
            "brand": ["Private", "National", "National"],
            "product_category": ["ROLLS", "SOFT DRINKS", None],
            "product_type": ["ROLLS: BAGELS", "SOFT DRINKS 12/18&15PK", None],
            "package_size": [None, "12 OZ", None],
        }
    )
    demographics = pd.DataFrame(
        {
            "household_id": [30, 10],
            "age": ["65+", "45-54"],
            "income": [None, "50-74K"],
        }
    )
    campaigns = pd.DataFrame({"campaign_id": [7, 5, 5], "household_id": [10, 20, 10]})
    campaign_descriptions = pd.DataFrame(
        {
            "campaign_id": [5, 7, 9],
            "campaign_type": ["Type A", "Type B", "Type C"],
            "start_date": pd.to_datetime(["2017-02-20", "2017-06-01", "2017-09-01"]),
            "end_date": pd.to_datetime(["2017-03-31", "2017-07-01", "2017-10-01"]),
        }
    )
    coupon_redemptions = pd.DataFrame(
        {
            "household_id": [10, 10],
            "coupon_upc": [111, 222],
            "campaign_id": [5, 5],
            "redemption_date": pd.to_datetime(["2017-03-05", "2017-03-01"]),
        }
    )
    return {
        "transactions": transactions,
        "products": products,
        "demographics": demographics,
        "campaigns": campaigns,
        "campaign_descriptions": campaign_descriptions,
        "coupon_redemptions": coupon_redemptions,
    }


EXPECTED_TRANSACTIONS = pd.DataFrame(
    {
        "customer_id": ["10", "10", "20", "30", "20"],
        "order_id": ["100", "100", "200", "300", "201"],
        "ordered_at": [
            TS("2017-03-01 12:30:00"),
            TS("2017-03-01 12:30:00"),
            TS("2017-07-03 23:15:00"),
            TS("2017-11-05 01:30:00"),
            TS("2017-12-30 20:00:00"),
        ],
        # sales_value - coupon_disc: retail_disc and coupon_match_disc are already netted out.
        "amount": [3.50, 1.50, 0.00, 1.75, -2.00],
        "category": ["ROLLS", "SOFT DRINKS", "PRODUCE", "ROLLS", None],
        "sku": ["1001", "1002", "1003", "1001", "9999"],
        "quantity": pd.array([2, 1, None, 1, None], dtype="Int64"),
        "channel": ["store"] * 5,
        "discount": [0.00, 1.00, 0.00, 0.00, 2.00],
        "department": ["PASTRY", "GROCERY", "PRODUCE", "PASTRY", None],
    }
)

EXPECTED_TOUCHES = pd.DataFrame(
    {
        "customer_id": ["10", "20", "10"],
        "channel": ["type_a", "type_a", "type_b"],
        "sent_at": [TS("2017-02-20"), TS("2017-02-20"), TS("2017-06-01")],
        "campaign_id": ["5", "5", "7"],
        "responded_at": [TS("2017-03-01"), NaT, NaT],
        "coupon_value": [np.nan, np.nan, np.nan],
    }
)

EXPECTED_CUSTOMERS = pd.DataFrame(
    {
        "customer_id": ["10", "20", "30"],
        "joined_at": pd.Series([NaT, NaT, NaT], dtype="datetime64[ns]"),
        "age": ["45-54", None, "65+"],
        "income": ["50-74K", None, None],
    }
)


def test_golden_conversion() -> None:
    out = convert_completejourney(_raw_tables())
    assert set(out) == {"transactions", "touches", "customers"}
    assert_frame_equal(out["transactions"], EXPECTED_TRANSACTIONS)
    assert_frame_equal(out["touches"], EXPECTED_TOUCHES)
    assert_frame_equal(out["customers"], EXPECTED_CUSTOMERS)


def test_inputs_are_not_modified() -> None:
    raw = _raw_tables()
    convert_completejourney(raw)
    for name, frame in _raw_tables().items():
        assert_frame_equal(raw[name], frame)


def test_tz_aware_timestamps_are_converted_to_store_wall_clock() -> None:
    raw = _raw_tables()
    ts = raw["transactions"]["transaction_timestamp"]
    # The same instants, given tz-aware in another zone: the output must not change.
    raw["transactions"]["transaction_timestamp"] = ts.dt.tz_localize("UTC").dt.tz_convert(
        "America/Los_Angeles"
    )
    out = convert_completejourney(raw)
    assert_frame_equal(out["transactions"], EXPECTED_TRANSACTIONS)


def test_negative_discounts_are_sign_normalised() -> None:
    raw = _raw_tables()
    for column in ("retail_disc", "coupon_disc", "coupon_match_disc"):
        raw["transactions"][column] = -raw["transactions"][column]
    out = convert_completejourney(raw)
    assert_frame_equal(out["transactions"], EXPECTED_TRANSACTIONS)


def test_households_only_in_campaigns_become_customers() -> None:
    raw = _raw_tables()
    raw["campaigns"] = pd.concat(
        [raw["campaigns"], pd.DataFrame({"campaign_id": [9], "household_id": [40]})],
        ignore_index=True,
    )
    out = convert_completejourney(raw)
    assert out["customers"]["customer_id"].tolist() == ["10", "20", "30", "40"]
    assert set(out["touches"]["customer_id"]) <= set(out["customers"]["customer_id"])


def test_missing_raw_table_is_named() -> None:
    raw = _raw_tables()
    del raw["coupon_redemptions"]
    with pytest.raises(KeyError, match="coupon_redemptions"):
        convert_completejourney(raw)


# --- the real package data ----------------------------------------------------------------------

N_CUSTOMERS = 2_469
N_ORDERS = 155_848
N_LINES = 1_469_307


@pytest.fixture(scope="module")
def raw() -> dict[str, pd.DataFrame]:
    return load_completejourney()


@pytest.fixture(scope="module")
def converted(raw: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    return convert_completejourney(raw)


def test_load_reads_only_the_needed_tables(raw: dict[str, pd.DataFrame]) -> None:
    assert set(raw) == set(RAW_TABLES)


def test_real_counts(converted: dict[str, pd.DataFrame]) -> None:
    tx, customers = converted["transactions"], converted["customers"]
    assert len(tx) == N_LINES
    assert tx["order_id"].nunique() == N_ORDERS
    assert tx["customer_id"].nunique() == N_CUSTOMERS
    assert len(customers) == N_CUSTOMERS
    assert customers["customer_id"].is_unique


def test_real_customers_cover_transactions_and_touches(
    converted: dict[str, pd.DataFrame],
) -> None:
    known = set(converted["customers"]["customer_id"])
    assert set(converted["transactions"]["customer_id"]) == known
    assert set(converted["touches"]["customer_id"]) <= known
    # 801 households have demographics; the others are kept with null attributes.
    assert converted["customers"]["age"].notna().sum() == 801
    assert converted["customers"]["joined_at"].isna().all()
    assert "member_tier" not in converted["customers"]


def test_real_ids_are_strings(converted: dict[str, pd.DataFrame]) -> None:
    for table, columns in {
        "transactions": ("customer_id", "order_id", "sku"),
        "touches": ("customer_id", "campaign_id"),
        "customers": ("customer_id",),
    }.items():
        for column in columns:
            values = converted[table][column]
            assert values.map(lambda v: isinstance(v, str)).all(), f"{table}.{column}"


def test_real_timestamps_are_naive(converted: dict[str, pd.DataFrame]) -> None:
    for table, column in [
        ("transactions", "ordered_at"),
        ("touches", "sent_at"),
        ("touches", "responded_at"),
        ("customers", "joined_at"),
    ]:
        assert converted[table][column].dtype == np.dtype("datetime64[ns]"), f"{table}.{column}"


def test_real_required_columns_have_no_nulls(converted: dict[str, pd.DataFrame]) -> None:
    for spec in (TRANSACTIONS, TOUCHES, CUSTOMERS):
        frame = converted[spec.name]
        for column in spec.required:
            assert frame[column].notna().all(), f"{spec.name}.{column}"


def test_real_columns_follow_the_contract(converted: dict[str, pd.DataFrame]) -> None:
    extras = {"transactions": {"department"}, "touches": set(), "customers": None}
    for spec in (TRANSACTIONS, TOUCHES, CUSTOMERS):
        columns = set(converted[spec.name].columns)
        assert set(spec.required) <= columns
        allowed = extras[spec.name]
        if allowed is not None:
            assert columns <= {c.name for c in spec.columns} | allowed, spec.name


def test_real_ordered_at_is_store_local_2017(
    raw: dict[str, pd.DataFrame], converted: dict[str, pd.DataFrame]
) -> None:
    orders = converted["transactions"].drop_duplicates("order_id")
    dates = orders["ordered_at"].dt.normalize()
    # Local calendar year 2017 minus Christmas Day (removed by the data's makers). Read naively,
    # the raw values spill 534 lines into 2018-01-01.
    assert dates.min() == pd.Timestamp("2017-01-01")
    assert dates.max() == pd.Timestamp("2017-12-31")
    assert dates.nunique() == 364
    assert not (dates == pd.Timestamp("2017-12-25")).any()
    # Each local date lies in exactly one of the data's Monday-to-Sunday weeks.
    weeks = raw["transactions"].drop_duplicates("basket_id")
    week_of = pd.Series(weeks["week"].to_numpy(), index=weeks["basket_id"].astype(str))
    per_date = pd.DataFrame({"date": dates, "week": orders["order_id"].map(week_of)})
    assert per_date["week"].notna().all()
    assert (per_date.groupby("date")["week"].nunique() == 1).all()


def test_real_quantity_amount_discount(
    raw: dict[str, pd.DataFrame], converted: dict[str, pd.DataFrame]
) -> None:
    tx, src = converted["transactions"], raw["transactions"]
    products = raw["products"].drop_duplicates("product_id").set_index("product_id")
    department = src["product_id"].map(products["department"])
    category = src["product_id"].map(products["product_category"])
    not_counted = (department == "FUEL") | (category == "COUPON/MISC ITEMS")
    assert (src["quantity"] == 0).sum() == 8_869
    assert not_counted.sum() == 17_237
    assert (
        tx["quantity"].isna().to_numpy().tolist()
        == ((src["quantity"] == 0) | not_counted).to_numpy().tolist()
    )
    assert (tx["quantity"].dropna() >= 1).all()
    assert tx["quantity"].max() < 10_000  # every remaining quantity is a plausible item count
    assert (tx["discount"] >= 0).all()
    assert tx["channel"].eq("store").all()
    assert tx["amount"].sum() == pytest.approx((src["sales_value"] - src["coupon_disc"]).sum())
    assert tx["discount"].sum() == pytest.approx(
        (src["coupon_disc"] + src["coupon_match_disc"]).sum()
    )
    assert (tx["amount"] < 0).sum() == 3_507  # coupon lines worth more than the line, not refunds


def test_real_no_duplicate_lines(
    raw: dict[str, pd.DataFrame], converted: dict[str, pd.DataFrame]
) -> None:
    assert raw["transactions"].duplicated().sum() == 0
    assert converted["transactions"].duplicated().sum() == 0
    assert converted["touches"].duplicated().sum() == 0


def test_real_touches(raw: dict[str, pd.DataFrame], converted: dict[str, pd.DataFrame]) -> None:
    touches = converted["touches"]
    assert len(touches) == len(raw["campaigns"]) == 6_589
    assert set(touches["channel"]) == {"type_a", "type_b", "type_c"}
    assert touches["responded_at"].notna().sum() == 792
    assert touches["coupon_value"].isna().all()
    responded = touches.dropna(subset=["responded_at"])
    assert (responded["responded_at"] >= responded["sent_at"]).all()
