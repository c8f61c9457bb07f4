"""Feature flows: point-in-time customer features at ``as_of``, one snapshot per date."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from features import build_features
from features.dataset import Dataset
from features.io import write_parquet
from flows.data import load_data, rules_from
from flows.settings import get_settings


def snapshot_path(workdir: Path, as_of: date) -> Path:
    """Where the feature snapshot of ``as_of`` lives: one Parquet file per date."""
    return workdir / "features" / "customer_features" / f"as_of={as_of:%Y-%m-%d}" / "part.parquet"


@task(name="build-features", cache_policy=NO_CACHE)
def build_snapshot(dataset: Dataset, as_of: date) -> pd.DataFrame:
    """Point-in-time features of every customer known at ``as_of``."""
    return build_features(dataset.transactions, dataset.touches, dataset.customers, as_of=as_of)


@task(name="write-snapshot", cache_policy=NO_CACHE)
def write_snapshot(snapshot: pd.DataFrame, workdir: Path, as_of: date) -> str:
    """Write the snapshot atomically; a rerun for the same date replaces it."""
    return str(write_parquet(snapshot, snapshot_path(workdir, as_of)))


@flow(name="ltv-features")
def features(data: Path, as_of: date, workdir: Path) -> dict[str, Any]:
    """Validate the data, build features at ``as_of`` and write the snapshot."""
    settings = get_settings()
    dataset = load_data(data, rules_from(settings), settings.ingest.encoding)
    snapshot = build_snapshot(dataset, as_of)
    return describe_snapshot(snapshot, write_snapshot(snapshot, workdir, as_of))


def describe_snapshot(snapshot: pd.DataFrame, path: str) -> dict[str, Any]:
    """Customers per lifecycle stage and RFM segment: what the CLI prints."""
    return {
        "path": path,
        "customers": len(snapshot),
        "columns": len(snapshot.columns) - 2,  # customer_id and as_of are keys
        "lifecycle_stage": snapshot["lifecycle_stage"].value_counts().to_dict(),
        "rfm_segment": snapshot["rfm_segment"].value_counts().to_dict(),
    }
