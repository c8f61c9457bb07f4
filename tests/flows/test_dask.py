"""``--runner dask`` on a real local Dask cluster (2 worker processes, started once here).

Features by partition of customers equal the single-process ones exactly; ``ltv score
--runner dask`` writes the same tables as ``ltv score --runner local`` for the same champion
models; ``ltv train --runner dask`` trains with LightGBM's Dask interface and registers; a bad
runner or scheduler address ends in one line.
"""

from __future__ import annotations

import datetime

import numpy as np
import pandas as pd
import pytest
from distributed import LocalCluster
from prefect import flow
from prefect_dask import DaskTaskRunner

from features import customer_tables
from features.synthetic import generate_to
from flows.dask import cluster_tables, dask_client
from flows.features import snapshot_path
from flows.outputs import set_dir
from flows.settings import get_settings
from flows.train import train

AS_OF = datetime.date(2026, 7, 1)
BUDGET = 800.0


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes, one thread each: the cluster every test of this module uses."""
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as local:
        yield local.scheduler_address


@pytest.fixture(scope="module")
def trained(tmp_path_factory, prefect_harness):
    """Synthetic data and champion models trained in one process."""
    work = tmp_path_factory.mktemp("dask")
    data = work / "data"
    generate_to(data, 1500, seed=11)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LTV_TRAIN__CUTOFF_MONTHS", "3")
        get_settings.cache_clear()
        train(data=data, as_of=AS_OF, workdir=work)
    get_settings.cache_clear()
    return work, data


@flow(name="test-cluster-tables")
def _tables_on_cluster(data: dict, as_of: datetime.date, partitions: int) -> dict:
    from features.dataset import Dataset

    client = dask_client()
    assert client is not None, "the flow runs on the Dask task runner"
    built = cluster_tables(
        client, Dataset(**data), as_of, partitions, orders=True, due_within_days=7
    )
    return {"features": built.features, "orders": built.orders, "due": built.due}


def test_features_by_partition_equal_the_single_process_features(cluster, trained):
    _, data = trained
    tables = {
        name: pd.read_parquet(data / f"{name}.parquet")
        for name in ("transactions", "touches", "customers")
    }
    # A channel that only one customer's touches name: it must still be a column everywhere.
    touches = tables["touches"]
    touches.loc[touches["customer_id"] == touches["customer_id"].iloc[0], "channel"] = "Weibo DM"
    as_of = datetime.date(2026, 3, 1)
    whole = customer_tables(
        tables["transactions"],
        touches,
        tables["customers"],
        as_of=as_of,
        orders=True,
        due_within_days=7,
    )
    on_dask = _tables_on_cluster.with_options(task_runner=DaskTaskRunner(address=cluster))
    parts = on_dask(tables, as_of, 5)
    assert "response_rate_weibo_dm" in parts["features"].columns
    assert len(parts["features"]) > 1000
    pd.testing.assert_frame_equal(parts["features"], whole.features, check_exact=True)
    pd.testing.assert_frame_equal(parts["orders"], whole.orders, check_exact=True)
    pd.testing.assert_frame_equal(parts["due"], whole.due, check_exact=True)


def _scored(work) -> dict[str, pd.DataFrame]:
    scores = set_dir(work, AS_OF)
    return {
        name: pd.read_parquet(scores / f"{name}.parquet")
        for name in ("scored_customers", "coupon_list", "recall_list")
    } | {"snapshot": pd.read_parquet(snapshot_path(work, AS_OF))}


def test_score_on_dask_equals_score_in_one_process(ltv, cluster, trained):
    work, data = trained
    common = ("score", "--data", str(data), "--as-of", str(AS_OF), "--budget", str(BUDGET))
    common += ("--workdir", str(work))
    local = ltv(*common, "--runner", "local")
    assert local.returncode == 0, local.stderr[-3000:]
    alone = _scored(work)
    on_dask = ltv(*common, "--runner", "dask", "--dask-address", cluster)
    assert on_dask.returncode == 0, on_dask.stderr[-3000:]
    spread = _scored(work)
    pd.testing.assert_frame_equal(spread["snapshot"], alone["snapshot"], check_exact=True)
    a, b = alone["scored_customers"], spread["scored_customers"]
    assert list(a.columns) == list(b.columns) and len(a) == len(b) > 1000
    assert (a["customer_id"] == b["customer_id"]).all()
    numeric = [c for c in a.columns if pd.api.types.is_float_dtype(a[c])]
    assert {"churn_prob", "p_purchase_30d", "predicted_value_180d"} <= set(numeric)
    for column in numeric:
        x, y = a[column].to_numpy(dtype=float), b[column].to_numpy(dtype=float)
        assert (np.isnan(x) == np.isnan(y)).all(), column
        known = ~np.isnan(x)
        assert np.abs(x[known] - y[known]).max(initial=0) <= 1e-9, column
    others = [c for c in a.columns if c not in numeric]
    pd.testing.assert_frame_equal(a[others], b[others], check_exact=True)
    assert a["coupon_tier"].notna().sum() > 0 and a["in_control_group"].sum() > 0
    ranking = a["churn_prob"].rank(method="first"), b["churn_prob"].rank(method="first")
    assert (ranking[0].fillna(-1) == ranking[1].fillna(-1)).all()
    for name in ("coupon_list", "recall_list"):
        assert (alone[name]["customer_id"] == spread[name]["customer_id"]).all(), name
        assert len(alone[name]) > 0


def test_train_on_dask_trains_and_registers(ltv, cluster, trained):
    work, data = trained
    out = ltv(
        "train",
        *("--data", str(data), "--as-of", str(AS_OF), "--workdir", str(work)),
        *("--runner", "dask", "--dask-address", cluster),
        env={"LTV_TRAIN__CUTOFF_MONTHS": "3"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    for model in ("ltv-churn", "ltv-next-purchase", "ltv-value"):
        assert f"{model:<18} v2 " in out.stdout, out.stdout
    churn_auc = float(out.stdout.split("ltv-churn")[1].split("auc ")[1].split()[0])
    assert churn_auc > 0.6, out.stdout
    # The versions it registered score like any other.
    scored = ltv(
        "score",
        *("--data", str(data), "--as-of", str(AS_OF), "--workdir", str(work)),
        *("--runner", "dask", "--dask-address", cluster),
    )
    assert scored.returncode == 0, scored.stderr[-3000:]


def test_an_unknown_runner_is_refused_in_one_line(ltv, tmp_path):
    out = ltv("score", "--data", str(tmp_path), "--as-of", "2026-07-01", "--runner", "bogus")
    assert out.returncode == 2
    assert out.stderr.strip() == "error: --runner takes local or dask, not 'bogus'"
    alone = ltv("features", "--data", str(tmp_path), "--as-of", "2026-07-01", "--dask-address", "x")
    assert alone.returncode == 2
    assert alone.stderr.strip() == "error: --dask-address needs --runner dask"


def test_an_unreachable_scheduler_fails_in_one_line(ltv, trained):
    _, data = trained
    out = ltv(
        "features",
        *("--data", str(data), "--as-of", str(AS_OF)),
        *("--runner", "dask", "--dask-address", "tcp://127.0.0.1:9"),
        env={"LTV_DASK__CONNECT_TIMEOUT": "2"},
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert lines[0].startswith("error: --dask-address tcp://127.0.0.1:9: no Dask scheduler")
