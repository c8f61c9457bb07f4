"""Benchmark the online path: writing a snapshot to Feast's SQLite online store, and lookups.

Builds one feature snapshot of N synthetic customers (default 100,000) in a child process, then,
each in its own child process so peak RSS is that step's alone:

1. ``flows.feature_store.write_online``: ``feast apply`` is done first (not timed), then the
   guarded ``write_to_online_store`` of every feature view (all ~80 features), as
   ``ltv features`` does; followed by 200 single-customer ``lookup`` calls (median latency).
2. the floor: the same number of (entity, feature, value) rows written with one
   ``executemany`` upsert into one SQLite table keyed by (entity, feature): the least work a
   SQLite online store has to do.

Usage::

    .venv/bin/python bench/bench_online.py                     # 100,000 customers
    .venv/bin/python bench/bench_online.py --customers 20000 --repeat 3
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from child import run_json

#: Generate, validate, build the snapshot of 2026-07-01: argv = out dir, customers.
SNAPSHOT = r"""
import json, sys, tempfile, datetime
from pathlib import Path
from features import load_dataset
from features.synthetic import generate_to
from flows.features import build_snapshot
out, n = Path(sys.argv[1]), int(sys.argv[2])
with tempfile.TemporaryDirectory() as raw:
    generate_to(Path(raw), n)
    ds = load_dataset(raw)
snapshot = build_snapshot.fn(ds, datetime.date(2026, 7, 1))
snapshot.to_parquet(out / "snapshot.parquet", index=False)
print(json.dumps({"customers": len(snapshot)}))
"""

ONLINE = r"""
import json, resource, statistics, sys, time, datetime
from pathlib import Path
import pandas as pd
from flows import feature_store
snapshot = pd.read_parquet(Path(sys.argv[1]) / "snapshot.parquet")
work = Path(sys.argv[2])
store = feature_store.open_store(work)
feature_store.apply_definitions(store, work)
t0 = time.perf_counter()
done = feature_store.write_online(store, snapshot)
wall = time.perf_counter() - t0
at = snapshot["as_of"].iloc[0].to_pydatetime()
ids = snapshot["customer_id"].sample(200, random_state=0, replace=True).tolist()
times = []
for customer in ids:
    t = time.perf_counter()
    feature_store.lookup(store, customer, at)
    times.append(time.perf_counter() - t)
features = sum(len(v.features) for v in store.list_feature_views())
print(json.dumps({"wall": wall, "views": len(done.written), "features": features,
                  "lookup_ms": 1000 * statistics.median(times),
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

FLOOR = r"""
import json, resource, sqlite3, struct, sys, time
from pathlib import Path
import pandas as pd
snapshot = pd.read_parquet(Path(sys.argv[1]) / "snapshot.parquet")
features = int(sys.argv[3])
ids = snapshot["customer_id"].astype(str).tolist()
t0 = time.perf_counter()
db = sqlite3.connect(Path(sys.argv[2]) / "floor.db")
db.execute("CREATE TABLE online (entity BLOB, feature TEXT, value BLOB, ts INTEGER,"
           " PRIMARY KEY (entity, feature))")
names = [f"f{i}" for i in range(features)]
value = struct.pack("<d", 1.0)
rows = ((c.encode(), name, value, 0) for c in ids for name in names)
with db:
    db.executemany("INSERT INTO online VALUES (?, ?, ?, ?) ON CONFLICT (entity, feature)"
                   " DO UPDATE SET value = excluded.value, ts = excluded.ts", rows)
wall = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"wall": wall, "rss_mb": rss}))
"""


def main() -> None:
    """Build the snapshot, time the online write and the floor, print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        info = run_json(SNAPSHOT, str(base), str(args.customers))
        online, floor = [], []
        for i in range(args.repeat):
            online.append(run_json(ONLINE, str(base), str(base / f"work{i}")))
            (base / f"floor{i}").mkdir()
            width = str(online[-1]["features"])
            floor.append(run_json(FLOOR, str(base), str(base / f"floor{i}"), width))
        best = min(online, key=lambda r: r["wall"])
        low = min(floor, key=lambda r: r["wall"])
    rows = info["customers"] * best["features"]
    print(f"{info['customers']:,} customers x {best['features']} features = {rows:,} values")
    print("| step | wall s | ratio to floor | peak RSS | values/s |")
    print("|---|---:|---:|---:|---:|")
    print(
        f"| `write_online` ({best['views']} views) | {best['wall']:.1f} | "
        f"{best['wall'] / low['wall']:.1f} | {best['rss_mb'] / 1024:.1f} GB | "
        f"{rows / best['wall']:,.0f} |"
    )
    print(
        f"| floor: one SQLite executemany upsert | {low['wall']:.1f} | 1.0 | "
        f"{low['rss_mb'] / 1024:.1f} GB | {rows / low['wall']:,.0f} |"
    )
    print(f"lookup of one customer (all views, TTL check): median {best['lookup_ms']:.1f} ms")


if __name__ == "__main__":
    main()
