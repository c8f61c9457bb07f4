"""Feature flows: point-in-time snapshots at ``as_of``, registered in Feast and served online.

``ltv features`` builds the snapshot of one date, writes it beside the others (one Parquet file
per ``as_of``; several dates coexist and a rerun replaces its own), applies the Feast
declarations over them and writes the values online unless newer ones are already there.
``ltv lookup`` reads one customer back.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from feature_repo.data_sources import snapshot_dir
from features import CustomerTables, customer_tables
from features.dataset import Dataset
from features.io import InputError, write_parquet
from flows import feature_store
from flows.caching import cached
from flows.dask import cluster_tables, dask_client
from flows.data import STORAGE_RETRIES, dataset_lineage, read_inputs
from flows.outputs import score_row
from flows.runs import end_abandoned_flow_runs
from flows.settings import get_settings


def snapshot_path(workdir: Path, as_of: datetime.date) -> Path:
    """Where the feature snapshot of ``as_of`` lives: one Parquet file per date."""
    return snapshot_dir(workdir) / f"{as_of:%Y-%m-%d}.parquet"


@task(name="build-features", cache_policy=NO_CACHE)
def build_snapshot(dataset: Dataset, as_of: datetime.date, lineage: str) -> pd.DataFrame:
    """Point-in-time features of every customer known at ``as_of``.

    ``lineage`` names the dataset (``flows.data.dataset_lineage``): with ``as_of`` and the code,
    it is the cache key, so the same data give the snapshot back without building it.
    """
    return snapshot_tables(dataset, as_of).features


def snapshot_tables(
    dataset: Dataset,
    as_of: datetime.date,
    *,
    orders: bool = False,
    due_within_days: int | None = None,
    built: CustomerTables | None = None,
) -> CustomerTables:
    """``customer_tables`` at ``as_of``: the snapshot (with ``created_at``) and what was asked.

    ``created_at`` is the values' knowledge time: built from rows strictly before ``as_of``,
    they were knowable at ``as_of`` (Feast leaves out rows created after a training cutoff).
    ``built``: the tables when already built (by partition on a Dask cluster).
    """
    tables = built or customer_tables(
        dataset.transactions,
        dataset.touches,
        dataset.customers,
        as_of=as_of,
        orders=orders,
        due_within_days=due_within_days,
    )
    snapshot = tables.features
    if snapshot.empty:
        first = dataset.transactions["ordered_at"].min()
        raise InputError(f"no customer is known before {as_of}: the data start {first:%Y-%m-%d}")
    snapshot.insert(2, "created_at", snapshot["as_of"])
    return tables


@task(name="write-snapshot", cache_policy=NO_CACHE, **STORAGE_RETRIES)
def write_snapshot(snapshot: pd.DataFrame, workdir: Path, as_of: datetime.date) -> str:
    """Write the snapshot atomically; a rerun for the same date replaces it."""
    return str(write_parquet(snapshot, snapshot_path(workdir, as_of)))


@task(name="feast-apply", cache_policy=NO_CACHE, **STORAGE_RETRIES)
def apply_repo(workdir: Path, env: str) -> list[str]:
    """Register entity, source, feature views and services; the view names."""
    return feature_store.apply_definitions(feature_store.open_store(workdir, env), workdir)


@task(name="write-online", cache_policy=NO_CACHE, **STORAGE_RETRIES)
def write_online(snapshot: pd.DataFrame, workdir: Path, env: str) -> dict[str, Any]:
    """Serve the snapshot's values online unless newer values are there already (R9)."""
    done = feature_store.write_online(feature_store.open_store(workdir, env), snapshot)
    return {"written": done.written, "skipped": done.skipped, "customers": done.customers}


def snapshot_on_runner(
    dataset: Dataset, as_of: datetime.date, workdir: Path, lineage: str
) -> pd.DataFrame:
    """The snapshot of ``as_of``, by partition of customers on a Dask cluster if the run has one.

    ``--runner dask`` gives the same rows; without a cluster it is the ``build-features`` task,
    cached on ``lineage`` (the dataset's) and ``as_of`` in ``workdir``.
    """
    client = dask_client()
    if client is None:
        build = cached(build_snapshot, workdir, get_settings(), "as_of", "lineage")
        return build(dataset, as_of, lineage)
    return cluster_snapshot(client, dataset, as_of).features


def cluster_snapshot(
    client: Any,
    dataset: Dataset,
    as_of: datetime.date,
    *,
    orders: bool = False,
    due: int | None = None,
) -> CustomerTables:
    """:func:`snapshot_tables` built by partition of customers on the Dask cluster."""
    partitions = get_settings().dask.partitions
    built = cluster_tables(client, dataset, as_of, partitions, orders=orders, due_within_days=due)
    return snapshot_tables(dataset, as_of, orders=orders, due_within_days=due, built=built)


def register_snapshot(
    dataset: Dataset, as_of: datetime.date, workdir: Path, lineage: str
) -> dict[str, Any]:
    """Build, write, apply and serve the snapshot of ``as_of``: the steps every flow shares."""
    env = get_settings().env
    snapshot = snapshot_on_runner(dataset, as_of, workdir, lineage)
    path = write_snapshot(snapshot, workdir, as_of)
    views = apply_repo(workdir, env)
    online = write_online(snapshot, workdir, env)
    return describe_snapshot(snapshot, path) | {
        "as_of": str(as_of),
        "feature_views": views,
        "online": online,
    }


@flow(name="ltv-features")
def features(data: Path, as_of: datetime.date, workdir: Path) -> dict[str, Any]:
    """Validate the data, build features at ``as_of``, write the snapshot, serve it."""
    end_abandoned_flow_runs()  # runs a killed process left Running (R5)
    settings = get_settings()
    dataset, digest = read_inputs(data, workdir, settings)
    return register_snapshot(dataset, as_of, workdir, dataset_lineage(settings, digest))


@flow(name="ltv-lookup")
def lookup(customer_id: str, workdir: Path, at: datetime.datetime | None = None) -> dict[str, Any]:
    """One customer's online features and latest scores.

    Online values are per view, blank where older than the view's TTL; the scores are the
    customer's row of the latest scoring at or before ``at``.
    """
    store = feature_store.open_store(workdir, get_settings().env)
    views = feature_store.lookup(store, customer_id, at)
    return {
        "customer_id": customer_id,
        "found": any(v.as_of is not None for v in views),
        "score": score_row(workdir, customer_id, at.date() if at else None),
        "views": [
            {
                "view": v.view,
                "as_of": v.as_of.isoformat() if v.as_of else None,
                "current": v.current,
                "values": v.values,
            }
            for v in views
        ],
    }


def describe_snapshot(snapshot: pd.DataFrame, path: str) -> dict[str, Any]:
    """Customers per lifecycle stage and RFM segment: what the CLI prints."""
    return {
        "path": path,
        "customers": len(snapshot),
        "columns": len(snapshot.columns) - 3,  # customer_id, as_of and created_at are keys
        "lifecycle_stage": snapshot["lifecycle_stage"].value_counts().to_dict(),
        "rfm_segment": snapshot["rfm_segment"].value_counts().to_dict(),
        "top_customer": _top_customer(snapshot),
    }


def _top_customer(snapshot: pd.DataFrame) -> str | None:
    """The customer with the highest spend in 365 days (first by id on ties): an example."""
    if snapshot.empty:
        return None
    ranked = snapshot.sort_values(["spend_365d", "customer_id"], ascending=[False, True])
    return str(ranked["customer_id"].iloc[0])
