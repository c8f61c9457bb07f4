"""Benchmark ``build_features`` against plain pandas RFM and a one-pass DuckDB floor.

Generates a synthetic dataset of N customers once (default 1,000,000: about 20M transaction
lines and 14M touches), validates it once with ``load_dataset`` and saves the validated frames
as a Parquet snapshot (both in a child process, timed). Then runs, each in its own child
process that first reads the snapshot (load time reported apart, not in the step's wall) so
that peak RSS is that child's alone:

1. ``features.build_features(transactions, touches, customers, as_of=...)``: the whole feature
   build ("not available" when it cannot be imported);
2. ``features.make_labels(transactions, cutoff=as_of)``: the labels of the same cutoff;
3. the RFM part (days since last and first order, orders and spend in 30/90/365 days, AOV)
   written as a data scientist would in plain pandas: groupby + agg, no row loops;
4. the floor: one DuckDB pass ``SELECT customer_id, count(*), sum(amount) ... GROUP BY
   customer_id`` over the same in-memory transactions frame.

Reports wall seconds of the step (best of ``--repeat``), its ratio to the floor, peak RSS of
the child (with the loaded data) and the peak RSS once the data were loaded, as a markdown table
for BENCHMARKS.md.

Usage::

    .venv/bin/python bench/bench_features.py                      # 1,000,000 customers
    .venv/bin/python bench/bench_features.py --customers 100000 --repeat 3
    .venv/bin/python bench/bench_features.py --snapshot /tmp/snap  # keep (or reuse) the snapshot
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from child import run_json

TABLES = ("transactions", "touches", "customers")

#: Generate, validate once, save the validated frames: argv = out dir, customers.
SNAPSHOT = r"""
import json, resource, sys, tempfile, time
from pathlib import Path
from features import load_dataset
from features.synthetic import generate_to
out, n = Path(sys.argv[1]), int(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
with tempfile.TemporaryDirectory() as raw:
    t0 = time.perf_counter()
    generate_to(Path(raw), n)
    t1 = time.perf_counter()
    ds = load_dataset(raw)
    t2 = time.perf_counter()
    for name in ("transactions", "touches", "customers"):
        getattr(ds, name).to_parquet(out / f"{name}.parquet", index=False)
print(json.dumps({"generate": t1 - t0, "load_dataset": t2 - t1, "lines": len(ds.transactions),
                  "touches": len(ds.touches), "customers": len(ds.customers),
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

#: Read the snapshot (validated dtypes: Arrow text, tz-aware timestamps, Int64 counts).
#: argv = snapshot dir, as_of, tables to read (comma-separated).
LOAD = r"""
import json, resource, sys, time
from pathlib import Path
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
text = pd.StringDtype("pyarrow")
t0 = time.perf_counter()
frames = {
    name: pq.read_table(Path(sys.argv[1]) / f"{name}.parquet").to_pandas(
        types_mapper={pa.string(): text, pa.large_string(): text}.get)
    for name in sys.argv[3].split(",")
}
load = time.perf_counter() - t0
rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
as_of = sys.argv[2]
tx = frames["transactions"]
def report(wall, rows):
    print(json.dumps({"wall": wall, "load": load, "rows": rows, "rss_loaded_mb": rss_loaded,
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

BUILD = r"""
try:
    from features import build_features
except ImportError:
    from features.customer_features import build_features
t0 = time.perf_counter()
out = build_features(tx, frames["touches"], frames["customers"], as_of=as_of)
report(time.perf_counter() - t0, len(out))
"""

LABELS = r"""
from features import make_labels
t0 = time.perf_counter()
out = make_labels(tx, cutoff=as_of)
report(time.perf_counter() - t0, len(out))
"""

# The RFM part as it is usually written: orders from lines, then groupby + agg per window.
PANDAS_RFM = r"""
t0 = time.perf_counter()
cut = pd.Timestamp(as_of, tz=tx["ordered_at"].dt.tz)
past = tx[tx["ordered_at"] < cut]
orders = (
    past.groupby(["customer_id", "order_id"], observed=True, sort=False)
    .agg(placed=("ordered_at", "min"), amount=("amount", "sum"))
    .reset_index()
)
by_customer = orders.groupby("customer_id", observed=True)
rfm = by_customer.agg(
    last_order=("placed", "max"),
    first_order=("placed", "min"),
    orders_total=("order_id", "size"),
    spend_total=("amount", "sum"),
)
day = pd.Timedelta(days=1)
rfm["days_since_last_order"] = (cut - rfm["last_order"]) / day
rfm["days_since_first_order"] = (cut - rfm["first_order"]) / day
for days in (30, 90, 365):
    recent = orders[orders["placed"] >= cut - days * day]
    window = recent.groupby("customer_id", observed=True).agg(
        orders=("order_id", "size"), spend=("amount", "sum")
    )
    rfm[f"orders_{days}d"] = window["orders"].reindex(rfm.index, fill_value=0)
    rfm[f"spend_{days}d"] = window["spend"].reindex(rfm.index, fill_value=0.0)
rfm["aov_365d"] = rfm["spend_365d"] / rfm["orders_365d"].where(rfm["orders_365d"] > 0)
rfm = rfm.drop(columns=["last_order", "first_order"])
report(time.perf_counter() - t0, len(rfm))
"""

FLOOR = r"""
from features.duck import query
t0 = time.perf_counter()
out = query(
    "SELECT customer_id, count(*) AS lines, sum(amount) AS amount "
    "FROM transactions GROUP BY customer_id",
    transactions=tx,
)
report(time.perf_counter() - t0, len(out))
"""

STEPS = {
    "`build_features` (whole build)": (BUILD, "transactions,touches,customers"),
    "`make_labels` (90 d horizon)": (LABELS, "transactions"),
    "plain pandas RFM (groupby + agg)": (PANDAS_RFM, "transactions"),
    "floor: DuckDB count + sum by customer": (FLOOR, "transactions"),
}
FLOOR_STEP = "floor: DuckDB count + sum by customer"


def build_available() -> bool:
    probe = (
        "try:\n    from features import build_features\n"
        "except ImportError:\n    from features.customer_features import build_features\n"
    )
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; best wall is kept")
    parser.add_argument("--as-of", default="2026-01-01", help="cutoff (window ends 2026-07-01)")
    parser.add_argument(
        "--snapshot", type=Path, help="keep the validated snapshot here (reused if present)"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        snap = args.snapshot or Path(tmp)
        if all((snap / f"{t}.parquet").exists() for t in TABLES):
            print(f"reusing the validated snapshot in {snap}")
        else:
            made = run_json(SNAPSHOT, str(snap), str(args.customers))
            print(
                f"generated {made['customers']:,} customers, {made['lines']:,} lines, "
                f"{made['touches']:,} touches in {made['generate']:.1f} s; load_dataset "
                f"{made['load_dataset']:.1f} s (peak {made['rss_mb']:,.0f} MB)"
            )
        available = build_available()
        best: dict[str, dict[str, float] | str] = {}
        for _ in range(args.repeat):
            for name, (script, tables) in STEPS.items():
                if script is BUILD and not available:
                    best[name] = "not available"
                    continue
                try:
                    result = run_json(LOAD + script, str(snap), args.as_of, tables)
                except RuntimeError as error:
                    best[name] = f"failed: {error}"
                    continue
                old = best.get(name)
                if not isinstance(old, dict) or result["wall"] < old["wall"]:
                    best[name] = result

    floor = best[FLOOR_STEP]
    floor_wall = floor["wall"] if isinstance(floor, dict) else float("nan")
    print(f"\n{args.customers:,} customers, as of {args.as_of}, best of {args.repeat}\n")
    print(
        "| step | wall s | ratio to floor | peak RSS MB | RSS after load MB | rows out | load s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in best.items():
        if not isinstance(r, dict):
            print(f"| {name} | {r} | | | | | |")
            continue
        print(
            f"| {name} | {r['wall']:.2f} | {r['wall'] / floor_wall:.1f} | {r['rss_mb']:,.0f} "
            f"| {r['rss_loaded_mb']:,.0f} | {r['rows']:,} | {r['load']:.1f} |"
        )


if __name__ == "__main__":
    main()
