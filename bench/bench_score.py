"""Benchmark scoring: the ``ltv-score`` flow on N customers with champion models.

Setup (untimed): N synthetic customers (default 1,000,000) as Parquet, and 20,000 more from
the same window on which the ``ltv-train`` flow registers the three champion models in a
temporary work directory. Timed, in a fresh child process (after a warm-up flow, so the
Prefect server's start is not counted): the ``ltv-score`` flow on the N customers at
2026-07-01 with a budget of 0.4 per customer. That is everything ``ltv score`` does: reading
and validating the inputs, the feature snapshot, the three models, BG/NBD for comparison,
reason codes for every scored customer, coupon uplift, tiers within the budget, the control
group, the win-back ranking and the exports (Parquet, CSV, DuckDB). Reported: wall, peak
RSS, each task's time (Prefect's task runs) of the median of ``--runs`` scorings (each in a
fresh process with the cache emptied first, so every task computes and persists its result;
the range of all is printed too), one more scoring with the cache full (a rerun of the same
inputs), and a floor: reading the same input files into pandas.

Usage::

    .venv/bin/python bench/bench_score.py                       # 1,000,000 customers
    .venv/bin/python bench/bench_score.py --customers 100000 --runs 1
"""

from __future__ import annotations

import argparse
import tempfile

from child import run, run_json

SETUP = r"""
import datetime, os, sys
from pathlib import Path
from features.synthetic import generate_to
from flows.train import train
base, n = Path(sys.argv[1]), int(sys.argv[2])
generate_to(base / "big", n, seed=3)
generate_to(base / "small", 20_000, seed=4)
os.environ["LTV_TRAIN__CUTOFF_MONTHS"] = "6"
train(data=base / "small", as_of=datetime.date(2026, 7, 1), workdir=base / "work")
print("ok")
"""

SCORE = r"""
import datetime, json, resource, shutil, sys, time
from pathlib import Path
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from flows.score import score
base, n = Path(sys.argv[1]), int(sys.argv[2])

@flow
def warm_up() -> None:
    pass

warm_up()
if sys.argv[3] == "cold":
    shutil.rmtree(base / "work" / "cache", ignore_errors=True)
t0 = time.perf_counter()
state = score(data=base / "big", as_of=datetime.date(2026, 7, 1), workdir=base / "work",
              budget=0.4 * n, return_state=True)
wall = time.perf_counter() - t0
result = state.result()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
with get_client(sync_client=True) as client:
    runs = client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
    )
steps = {}
for run in runs:
    name = run.name.rsplit("-", 1)[0]
    steps[name] = steps.get(name, 0.0) + run.total_run_time.total_seconds()
print(json.dumps({"wall": wall, "rss_mb": rss, "steps": steps, "customers": result["customers"],
                  "scored": result["scored"], "coupons": result["coupon_list"],
                  "recall": result["recall_list"], "control": result["control_group"],
                  "planned": result["planned_cost"], "budget": result["budget"]}))
"""

FLOOR = r"""
import json, resource, sys, time
from pathlib import Path
import pandas as pd
base = Path(sys.argv[1])
t0 = time.perf_counter()
for name in ("transactions", "touches", "customers"):
    pd.read_parquet(base / "big" / f"{name}.parquet")
print(json.dumps({"wall": time.perf_counter() - t0,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    """Set up, time the scoring flow and the floor; print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3, help="timed scorings (median shown)")
    args = parser.parse_args()
    n = str(args.customers)
    with tempfile.TemporaryDirectory() as tmp:
        run(SETUP, tmp, n)
        cold = (run_json(SCORE, tmp, n, "cold") for _ in range(args.runs))
        runs = sorted(cold, key=lambda r: r["wall"])
        warm = run_json(SCORE, tmp, n, "warm")
        floor = run_json(FLOOR, tmp)
    r = runs[len(runs) // 2]
    walls = ", ".join(f"{x['wall']:.1f}" for x in runs)
    peaks = ", ".join(f"{x['rss_mb'] / 1024:.1f}" for x in runs)
    print(f"{len(runs)} runs: wall {walls} s; peak RSS {peaks} GB (the median run below)")
    print(
        f"{r['customers']:,} customers, {r['scored']:,} scored; {r['coupons']:,} coupons "
        f"(+{r['control']:,} in the control group, expected cost {r['planned']:,.0f} of "
        f"{r['budget']:,.0f}), {r['recall']:,} on the win-back list"
    )
    print("| step | wall s | peak RSS |")
    print("|---|---:|---:|")
    print(f"| `ltv-score` flow, all steps | {r['wall']:.1f} | {r['rss_mb'] / 1024:.1f} GB |")
    for name, seconds in sorted(r["steps"].items(), key=lambda kv: -kv[1]):
        print(f"| task `{name}` | {seconds:.1f} | |")
    print(
        f"| rerun of the same inputs (cache full) | {warm['wall']:.1f} | "
        f"{warm['rss_mb'] / 1024:.1f} GB |"
    )
    print(
        f"| floor: read the input Parquet files | {floor['wall']:.1f} | "
        f"{floor['rss_mb'] / 1024:.1f} GB |"
    )


if __name__ == "__main__":
    main()
