"""Pure data logic: the input contract, loaders and adapters, the synthetic generator, features.

No MLflow, Prefect or Feast imports here; functions take plain arguments.
"""

from features.customer_features import LifecycleThresholds, build_features, due_categories
from features.dataset import Dataset, check_dataset, load_dataset
from features.io import InputError
from features.labels import make_labels
from features.validation import Rules

__all__ = [
    "Dataset",
    "InputError",
    "LifecycleThresholds",
    "Rules",
    "build_features",
    "check_dataset",
    "due_categories",
    "load_dataset",
    "make_labels",
]
