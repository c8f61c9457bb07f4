"""The offline source: the feature snapshots ``ltv features`` writes, one file per ``as_of``.

Each snapshot ``<workdir>/features/customer_features/YYYY-MM-DD.parquet`` holds one row per
customer known at ``as_of`` (the event timestamp) computed from data strictly before it, so its
values were knowable at ``as_of``: ``created_at`` records that knowledge time and training asks
Feast to drop rows created after the cutoff (``filter_by_created_timestamp``).

The path is absolute: the pinned DuckDB offline store reads it as given, without resolving it
against the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

from feast import FileSource
from feast.data_format import ParquetFormat


def snapshot_dir(workdir: Path) -> Path:
    """Where the feature snapshots of a work directory live."""
    return workdir.resolve() / "features" / "customer_features"


def snapshot_source(directory: Path) -> FileSource:
    """All snapshots under ``directory`` as one Feast file source."""
    return FileSource(
        name="customer_features",
        path=str(Path(directory).resolve() / "*.parquet"),
        file_format=ParquetFormat(),
        timestamp_field="as_of",
        created_timestamp_column="created_at",
        description="Point-in-time customer feature snapshots, one file per as_of.",
    )


customer_features = snapshot_source(snapshot_dir(Path(os.environ.get("LTV_WORKDIR", "ltv-work"))))
