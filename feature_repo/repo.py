"""What the Feast CLI reads: every declaration, imported once from its own module.

``feast -c feature_repo apply`` imports each file of the repository as a top-level module; the
declaration modules import each other through the ``feature_repo`` package, so the CLI reads
only this file (``.feastignore`` skips the others) and sees each object exactly once.
"""

from feature_repo.data_sources import customer_features
from feature_repo.entities import customer
from feature_repo.feature_services import (
    churn_model_v1,
    next_purchase_model_v1,
    value_model_v1,
)
from feature_repo.feature_views import (
    customer_category_breadth,
    customer_channel_response,
    customer_coupon_sensitivity,
    customer_intervals,
    customer_lifecycle,
    customer_replenishment,
    customer_rfm,
)

__all__ = [
    "churn_model_v1",
    "customer",
    "customer_category_breadth",
    "customer_channel_response",
    "customer_coupon_sensitivity",
    "customer_features",
    "customer_intervals",
    "customer_lifecycle",
    "customer_replenishment",
    "customer_rfm",
    "next_purchase_model_v1",
    "value_model_v1",
]
