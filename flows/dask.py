"""``--runner dask``: the flows' heavy steps on a Dask cluster, through Prefect's Dask task runner.

A flow run is given a ``DaskTaskRunner`` (:func:`task_runner`: the scheduler at
``--dask-address``, or a ``LocalCluster`` from the ``dask`` settings). Its flow body is the
same; the steps that scale with the customers ask :func:`dask_client` whether the run has a
cluster and, if so, run partitioned by customer (a keyed hash of ``customer_id``,
``features.partition``), one Prefect task per partition:

- features: each partition's part of the population values (``collect``), combined once
  (``features.combine_population``), then each partition's rows with them: exactly the rows
  of the single-process build, joined back in the same order;
- scoring: the five boosters' predictions and the reasons per partition; what needs every
  customer (percentiles, coupon tiers under one budget, control group, win-back ranking)
  runs once after, as in a single-process run;
- training: LightGBM's Dask interface (``models.dask_training``).

The partitions are scattered to the workers once; each task gets only its own.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext

from features import CustomerTables, customer_tables
from features.customer_features import PopulationPart, category_names, combine_population
from features.dataset import Dataset
from features.partition import Tables, join_tables, partition_of, split_tables
from flows.settings import Settings
from models.estimators import TrainConfig
from models.explain import reasons
from models.training import Models, Predictions, model_matrix, predict

__all__ = [
    "cluster_tables",
    "dask_client",
    "fit_on_cluster",
    "predict_by_partition",
    "reachable",
    "task_runner",
]


def task_runner(settings: Settings, address: str | None) -> Any:
    """A ``DaskTaskRunner``: the scheduler at ``address``, else a local cluster (settings)."""
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    s = settings.dask
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": s.n_workers,
            "threads_per_worker": s.threads_per_worker,
            "processes": True,
            "dashboard_address": None,
        }
    )


def reachable(address: str, timeout: float) -> str | None:
    """``None`` when a Dask scheduler answers at ``address``; else why not, in a few words."""
    from distributed import Client

    try:
        with Client(address, timeout=timeout, set_as_default=False):
            return None
    except (OSError, TimeoutError, ValueError, TypeError) as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def dask_client() -> Any | None:
    """The Dask client of the current flow run's task runner; ``None`` off a Dask cluster."""
    from prefect_dask import DaskTaskRunner

    context = FlowRunContext.get()
    runner = context.task_runner if context is not None else None
    return runner.client if isinstance(runner, DaskTaskRunner) else None


@task(name="population-part", cache_policy=NO_CACHE)
def population_part(tables: Tables, as_of: datetime.date) -> PopulationPart:
    """One partition's part of the values the features take from every customer."""
    built = customer_tables(
        tables.transactions, tables.touches, tables.customers, as_of=as_of, collect=True
    )
    assert built.population is not None  # asked for
    return built.population


@task(name="partition-features", cache_policy=NO_CACHE)
def partition_tables(
    tables: Tables,
    as_of: datetime.date,
    population: Any,
    orders: bool,
    due_within_days: int | None,
) -> CustomerTables:
    """One partition's features (and orders, reminders) with the population's values."""
    return customer_tables(
        tables.transactions,
        tables.touches,
        tables.customers,
        as_of=as_of,
        orders=orders,
        due_within_days=due_within_days,
        population=population,
    )


def cluster_tables(
    client: Any,
    dataset: Dataset,
    as_of: datetime.date,
    partitions: int,
    *,
    orders: bool = False,
    due_within_days: int | None = None,
) -> CustomerTables:
    """``customer_tables`` of the whole dataset, built by partition of customers on the cluster.

    Two passes over each partition: its part of the population values, then its rows with
    the combined values. The result equals the single-process tables exactly.
    """
    parts = split_tables(dataset.transactions, dataset.touches, dataset.customers, partitions)
    scattered = client.scatter(parts)
    firsts = [population_part.submit(part, as_of) for part in scattered]
    population = combine_population(
        [f.result() for f in firsts], category_names(dataset.transactions)
    )
    shared = client.scatter(population, broadcast=True)
    seconds = [
        partition_tables.submit(part, as_of, shared, orders, due_within_days) for part in scattered
    ]
    return join_tables([f.result() for f in seconds])


@task(name="score-partition", cache_policy=NO_CACHE)
def score_partition(part: pd.DataFrame, models: Models) -> tuple[Predictions, pd.DataFrame]:
    """The buyers' predictions of one partition, and the churn score's reasons."""
    rows = np.flatnonzero(_buyers(part))
    matrix = model_matrix(models, part, rows)
    why = reasons(models.churn.booster, part, matrix=matrix, rows=rows)
    return predict(models, part, matrix, rows), why.reset_index(drop=True)


def predict_by_partition(
    client: Any, snapshot: pd.DataFrame, models: Models, partitions: int
) -> tuple[Predictions, pd.DataFrame]:
    """The buyers' predictions and reasons, in snapshot order, computed by partition.

    Per-row work only: each row's scores and reasons do not depend on the other rows.
    """
    where = partition_of(snapshot["customer_id"], partitions)
    positions = [np.flatnonzero(where == p) for p in range(partitions)]
    positions = [p for p in positions if len(p)]
    scattered = client.scatter([snapshot.iloc[p] for p in positions])
    shared = client.scatter(models, broadcast=True)
    futures = [score_partition.submit(part, shared) for part in scattered]
    buyers = _buyers(snapshot)
    slot = np.cumsum(buyers) - 1  # a buyer's place among the buyers
    n = int(buyers.sum())
    fields = tuple(f.name for f in dataclasses.fields(Predictions))
    out = {name: np.full(n, np.nan) for name in fields}
    why = pd.DataFrame(index=pd.RangeIndex(n))
    for at, future in zip(positions, futures, strict=True):
        pred, text = future.result()
        into = slot[at[buyers[at]]]
        for name in fields:
            out[name][into] = getattr(pred, name)
        for column in text.columns:
            if column not in why:
                why[column] = pd.Series(pd.NA, index=why.index, dtype="string")
            why.loc[into, column] = text[column].to_numpy()
    return Predictions(**out), why


def _buyers(snapshot: pd.DataFrame) -> np.ndarray:
    """The customers with an order: those the models score."""
    return (snapshot["orders_total"].fillna(0) > 0).to_numpy()


@task(name="fit-models-dask", cache_policy=NO_CACHE)
def fit_on_cluster(frame: pd.DataFrame, config: TrainConfig, partitions: int) -> Models:
    """Churn, next purchase and value models trained with LightGBM's Dask interface."""
    from models.dask_training import train_models_dask  # imports Dask: only when used

    client = dask_client()
    if client is None:
        raise RuntimeError("fit_on_cluster runs in a flow with a Dask task runner")
    return train_models_dask(frame, config, client, partitions)
