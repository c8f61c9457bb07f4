"""Customers split into partitions, and the partitions' tables joined back into one.

A partition holds every row of its customers in every table (a stable hash of
``customer_id``, the same in every process and on every machine: not Python's salted
``hash``), so each customer's features depend on its own partition and the population values
(:func:`features.combine_population`). :func:`join_tables` puts the partitions' tables back in
the order :func:`features.customer_tables` gives over all the data at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.codes import arrow_text
from features.customer_features import CustomerTables

__all__ = ["Tables", "join_tables", "partition_of", "split_tables"]

#: Fixed key of the customer hash (16 bytes, as ``pandas.util.hash_array`` wants).
_HASH_KEY = "ltv-partitions16"


@dataclass(frozen=True)
class Tables:
    """The input tables of one partition (``touches`` and ``customers`` may be ``None``)."""

    transactions: pd.DataFrame
    touches: pd.DataFrame | None = None
    customers: pd.DataFrame | None = None


def partition_of(customer_ids: pd.Series, partitions: int) -> np.ndarray:
    """Each row's partition, ``0 .. partitions - 1``, from a keyed hash of its customer id."""
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, not {partitions}")
    text = np.asarray(arrow_text(customer_ids).to_numpy(zero_copy_only=False), dtype=object)
    hashed = pd.util.hash_array(text, hash_key=_HASH_KEY, categorize=True)
    return (hashed % np.uint64(partitions)).astype(np.int64)


def split_tables(
    transactions: pd.DataFrame,
    touches: pd.DataFrame | None,
    customers: pd.DataFrame | None,
    partitions: int,
) -> list[Tables]:
    """The tables cut into ``partitions`` parts by customer; rows keep their order in a part.

    Parts without a row in any table are left out.
    """

    def cut(table: pd.DataFrame | None) -> list[pd.DataFrame | None]:
        if table is None:
            return [None] * partitions
        where = partition_of(table["customer_id"], partitions)
        order = np.argsort(where, kind="stable")
        bounds = np.searchsorted(where[order], np.arange(partitions + 1))
        return [
            table.iloc[order[a:b]].reset_index(drop=True)
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]

    parts = zip(cut(transactions), cut(touches), cut(customers), strict=True)
    out = []
    for tx, to, cu in parts:
        assert tx is not None  # transactions are always there
        if len(tx) or (to is not None and len(to)) or (cu is not None and len(cu)):
            out.append(Tables(tx, to, cu))
    return out


def join_tables(parts: list[CustomerTables]) -> CustomerTables:
    """The partitions' tables as one, in the order of the tables of all the data at once.

    Features and reminders are sorted by ``customer_id`` (Arrow's order, as
    ``customer_tables``); the orders follow their customers, each customer's orders in the
    order its partition gave, with ``customer_id`` categorical over the joined features' ids.
    """
    features = _by_customer(pd.concat([p.features for p in parts], ignore_index=True))
    due = None
    if all(p.due is not None for p in parts):
        due = _by_customer(pd.concat([p.due for p in parts if p.due is not None]))
    orders = None
    if all(p.orders is not None for p in parts):
        orders = _orders_of(features, [p.orders for p in parts if p.orders is not None])
    return CustomerTables(features, orders, due)


def _by_customer(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` sorted by ``customer_id`` in Arrow's order (stable), rows numbered from 0."""
    ids = arrow_text(frame["customer_id"])
    order = pc.sort_indices(ids).to_numpy() if len(frame) else np.zeros(0, np.int64)
    return frame.iloc[order].reset_index(drop=True)


def _orders_of(features: pd.DataFrame, parts: list[pd.DataFrame]) -> pd.DataFrame:
    """The partitions' orders, customers in the features' order, ``customer_id`` re-coded."""
    names = pd.Index(features["customer_id"].array)
    frames = []
    for part in parts:
        ids = part["customer_id"]
        text = pa.array(ids.cat.categories.to_numpy(dtype=object), pa.large_string())
        at = pc.index_in(text, value_set=pa.array(names.to_numpy(dtype=object))).to_numpy(
            zero_copy_only=False
        )
        codes = ids.cat.codes.to_numpy()
        frames.append(part.assign(customer_id=np.where(codes >= 0, at[codes], -1)))
    joined = pd.concat(frames, ignore_index=True)
    order = np.argsort(joined["customer_id"].to_numpy(), kind="stable")
    joined = joined.iloc[order].reset_index(drop=True)
    joined["customer_id"] = pd.Categorical.from_codes(
        joined["customer_id"].to_numpy(), dtype=pd.CategoricalDtype(names)
    )
    return joined
