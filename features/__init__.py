"""Pure data logic: the input contract, loaders and adapters, the synthetic generator, features.

No MLflow, Prefect or Feast imports here; functions take plain arguments.
"""

from features.dataset import Dataset, check_dataset, load_dataset
from features.io import InputError
from features.validation import Rules

__all__ = ["Dataset", "InputError", "Rules", "check_dataset", "load_dataset"]
