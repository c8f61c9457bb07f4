"""Benchmark ``--runner dask`` against ``--runner local``: the ``ltv-score`` flow on N customers.

Setup (untimed): N synthetic customers (default 200,000) as Parquet, and 20,000 more from the
same window on which the ``ltv-train`` flow registers the three champion models in a shared
MLflow store. Timed, each in a fresh child process after a warm-up flow, with an empty cache:
the ``ltv-score`` flow at 2026-07-01, once on the local runner and once on Prefect's Dask task
runner with a ``LocalCluster`` from the ``[dask]`` settings (2 workers, 1 thread each; the
cluster's start is counted). Reported: wall and the flow process's peak RSS of each (the Dask
workers are separate processes), their ratio, and how far the two tables are apart: the
largest absolute difference over every numeric column, and whether the tiers, the control
group and the order of the two lists are identical.

Usage::

    .venv/bin/python bench/bench_dask.py                      # 200,000 customers
    .venv/bin/python bench/bench_dask.py --customers 50000
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from child import run, run_json

SETUP = r"""
import datetime, os, sys
from pathlib import Path
from features.synthetic import generate_to
from flows.train import train
base, n = Path(sys.argv[1]), int(sys.argv[2])
generate_to(base / "big", n, seed=3)
generate_to(base / "small", 20_000, seed=4)
train(data=base / "small", as_of=datetime.date(2026, 7, 1), workdir=base / "models")
print("ok")
"""

SCORE = r"""
import datetime, json, resource, shutil, sys, time
from pathlib import Path
from prefect import flow
from flows.dask import task_runner
from flows.score import score
from flows.settings import get_settings
base, n, runner = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

@flow
def warm_up() -> None:
    pass

warm_up()
workdir = base / runner
shutil.rmtree(workdir / "cache", ignore_errors=True)
scoring = score
if runner == "dask":
    scoring = score.with_options(task_runner=task_runner(get_settings(), None))
t0 = time.perf_counter()
result = scoring(data=base / "big", as_of=datetime.date(2026, 7, 1), workdir=workdir,
                 budget=0.4 * n)
wall = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"wall": wall, "rss_mb": rss, "customers": result["customers"]}))
"""

LISTS = {"coupon_list": "coupon_tier", "recall_list": "recall_priority"}


def compare(base: Path) -> dict[str, object]:
    """How far the local and the Dask tables are apart."""
    where = "scores/as_of=2026-07-01"
    local = {t: pd.read_parquet(base / "local" / where / f"{t}.parquet") for t in TABLES}
    dask = {t: pd.read_parquet(base / "dask" / where / f"{t}.parquet") for t in TABLES}
    a, b = local["scored_customers"], dask["scored_customers"]
    numeric = [c for c in a.columns if pd.api.types.is_numeric_dtype(a[c]) and a[c].dtype != bool]
    diff = max(
        float(np.nanmax(np.abs(a[c].to_numpy(float) - b[c].to_numpy(float)), initial=0.0))
        for c in numeric
    )
    text = [c for c in a.columns if c not in numeric and c not in ("run_id",)]
    return {
        "max_abs_diff": diff,
        "numeric_columns": len(numeric),
        "same_text_columns": all(a[c].equals(b[c]) for c in text),
        "same_lists": all(local[t]["customer_id"].equals(dask[t]["customer_id"]) for t in LISTS),
    }


TABLES = ("scored_customers", *LISTS)


def main() -> None:
    """Set up, time both runners, compare their tables; print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=200_000)
    args = parser.parse_args()
    n = str(args.customers)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LTV_TRAIN__CUTOFF_MONTHS"] = "6"
        os.environ["LTV_MLFLOW__TRACKING_URI"] = f"sqlite:///{tmp}/models/mlflow.db"
        run(SETUP, tmp, n)
        local = run_json(SCORE, tmp, n, "local")
        dask = run_json(SCORE, tmp, n, "dask")
        same = compare(Path(tmp))
    print(f"{local['customers']:,} customers; the same champion models for both runners")
    print("| runner | wall s | peak RSS (flow process) |")
    print("|---|---:|---:|")
    for name, r in (("local", local), ("dask (LocalCluster, 2 workers)", dask)):
        print(f"| {name} | {r['wall']:.1f} | {r['rss_mb'] / 1024:.2f} GB |")
    print(f"dask / local wall: {dask['wall'] / local['wall']:.2f}")
    print(
        f"largest |difference| over {same['numeric_columns']} numeric columns: "
        f"{same['max_abs_diff']:.3g}; text columns (tiers, control group, reasons) identical: "
        f"{same['same_text_columns']}; coupon and win-back lists in the same order: "
        f"{same['same_lists']}"
    )


if __name__ == "__main__":
    main()
