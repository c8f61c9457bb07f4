"""Benchmark ``load_dataset`` (read + validate + quarantine) against a read-only floor.

Generates a synthetic dataset of N customers once (default 1,000,000: about 20M transaction
lines and 14M touches), then runs, each in its own child process so that peak RSS is that
child's alone:

1. ``features.load_dataset`` on the directory (every table read, parsed, checked, written to
   quarantine where needed);
2. the floor: the same Parquet files read into pandas with pyarrow and nothing else.

Reports wall seconds, peak RSS and the ratio to the floor (ratios survive a noisy machine) as a
markdown table for BENCHMARKS.md.

Usage::

    .venv/bin/python bench/bench_validate.py                     # 1,000,000 customers
    .venv/bin/python bench/bench_validate.py --customers 100000 --repeat 3
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from child import run_json

VALIDATE = r"""
import json, resource, sys, time
from features import load_dataset
t0 = time.perf_counter()
ds = load_dataset(sys.argv[1])
wall = time.perf_counter() - t0
print(json.dumps({"wall": wall, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rows": ds.rows_in, "quarantined": ds.quarantined}))
"""

FLOOR = r"""
import json, resource, sys, time
from pathlib import Path
import pandas as pd
import pyarrow.parquet as pq
t0 = time.perf_counter()
rows = 0
strings = pd.StringDtype("pyarrow")
for name in ("transactions", "touches", "customers"):
    frame = pq.read_table(Path(sys.argv[1]) / f"{name}.parquet").to_pandas(
        types_mapper={__import__("pyarrow").string(): strings}.get)
    rows += len(frame)
wall = time.perf_counter() - t0
print(json.dumps({"wall": wall, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rows": rows, "quarantined": 0}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; best wall is kept")
    args = parser.parse_args()
    from features.synthetic import generate_to

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        generate_to(data, args.customers)
        best: dict[str, dict[str, float]] = {}
        for _ in range(args.repeat):
            for name, script in (("load_dataset", VALIDATE), ("floor: read Parquet", FLOOR)):
                result = run_json(script, str(data))
                if name not in best or result["wall"] < best[name]["wall"]:
                    best[name] = result
    floor = best["floor: read Parquet"]["wall"]
    print(f"\n{args.customers:,} customers, best of {args.repeat}\n")
    print("| step | wall s | peak RSS MB | rows in | quarantined | ratio to floor |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in best.items():
        print(
            f"| {name} | {r['wall']:.1f} | {r['rss_mb']:,.0f} | {r['rows']:,} | "
            f"{r['quarantined']:,} | {r['wall'] / floor:.2f} |"
        )


if __name__ == "__main__":
    main()
