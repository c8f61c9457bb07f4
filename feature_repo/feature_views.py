"""One feature view per feature family of ``features.families``: same names, order and types.

Every view keeps values for ``SNAPSHOT_TTL``: features are relative to their ``as_of`` (days
since the last order, orders in 30 days ...), so a snapshot older than that is not served as
current, online (``ltv lookup``) or offline (a training cutoff without a recent snapshot gets
nulls rather than stale values).
"""

from __future__ import annotations

from datetime import timedelta

from feast import FeatureView, Field, FileSource
from feast.types import Float64, Int64, PrimitiveFeastType, String

from feature_repo.data_sources import customer_features
from feature_repo.entities import customer
from features.families import FAMILIES

#: How long a snapshot's values stay current: a week tolerates missed daily runs.
SNAPSHOT_TTL = timedelta(days=7)

_TYPES: dict[str, PrimitiveFeastType] = {"int": Int64, "float": Float64, "text": String}


def family_views(source: FileSource) -> dict[str, FeatureView]:
    """The feature views of all families over ``source``, by view name."""
    return {
        family.view: FeatureView(
            name=family.view,
            entities=[customer],
            ttl=SNAPSHOT_TTL,
            schema=[Field(name=name, dtype=_TYPES[kind]) for name, kind in family.columns],
            source=source,
            online=True,
            description=family.description,
            tags={"family": family.name},
        )
        for family in FAMILIES
    }


VIEWS = family_views(customer_features)
customer_rfm = VIEWS["customer_rfm"]
customer_intervals = VIEWS["customer_intervals"]
customer_category_breadth = VIEWS["customer_category_breadth"]
customer_channel_response = VIEWS["customer_channel_response"]
customer_coupon_sensitivity = VIEWS["customer_coupon_sensitivity"]
customer_replenishment = VIEWS["customer_replenishment"]
customer_lifecycle = VIEWS["customer_lifecycle"]
