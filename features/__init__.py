"""Pure data logic: the input contract, loaders and adapters, the synthetic generator, features.

No MLflow, Prefect or Feast imports here; functions take plain arguments.
"""

from features.customer_features import (
    CustomerTables,
    LifecycleThresholds,
    build_features,
    customer_tables,
    due_categories,
)
from features.dataset import Dataset, check_dataset, load_dataset
from features.io import InputError
from features.labels import make_labels
from features.validation import Rules

__all__ = [
    "CustomerTables",
    "Dataset",
    "InputError",
    "LifecycleThresholds",
    "Rules",
    "build_features",
    "check_dataset",
    "customer_tables",
    "due_categories",
    "load_dataset",
    "make_labels",
]
