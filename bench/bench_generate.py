"""Benchmark the synthetic generator against a Parquet-writing floor on the same machine.

Runs, each in its own child process (so peak RSS is that child's alone):

1. the generator: ``features.synthetic.generate_to`` for N customers into a temporary directory;
2. the floor: a script that only writes the same number of rows (transactions, touches,
   customers) of random numbers and ids to Parquet with pyarrow, with the same column types.

Reports wall seconds, peak RSS and rows, and the generator's cost as a ratio to the floor (the
machine is shared and noisy; ratios travel better than seconds). Prints a markdown table for
BENCHMARKS.md.

Usage::

    .venv/bin/python bench/bench_generate.py                 # 1,000,000 customers
    .venv/bin/python bench/bench_generate.py --customers 10000 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

GENERATOR = r"""
import json, resource, sys, time
from pathlib import Path
import pyarrow.parquet as pq
from features.synthetic import generate_to
out, n, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
t0 = time.perf_counter()
paths = generate_to(out, n, seed=seed)
wall = time.perf_counter() - t0
rows = {k: pq.ParquetFile(p).metadata.num_rows for k, p in paths.items()}
size = sum(p.stat().st_size for p in paths.values())
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"inner_wall": wall, "rows": rows, "bytes": size, "peak_kb": peak}))
"""

FLOOR = r"""
import json, resource, sys, time
from pathlib import Path
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
out, seed = Path(sys.argv[1]), int(sys.argv[2])
rows = json.loads(sys.argv[3])
rng = np.random.default_rng(seed)
t0 = time.perf_counter()

def ids(prefix, numbers, width):
    digits = pc.utf8_lpad(pc.cast(pa.array(numbers), pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, digits, "")

def ts(n):
    return pa.array(rng.integers(1_700_000_000, 1_780_000_000, n) * 1_000_000).cast(
        pa.timestamp("us"))

def words(names, n):
    return pa.array(names).take(pa.array(rng.integers(0, len(names), n)))

def write(name, n, make):
    # Same block size as the generator (about 200k customers' rows per block).
    writer = None
    block = max(1, n // max(1, rows["customers"] // 200_000))
    for lo in range(0, n, block):
        m = min(block, n - lo)
        table = make(m)
        if writer is None:
            writer = pq.ParquetWriter(out / f"{name}.parquet", table.schema, compression="zstd")
        writer.write_table(table, row_group_size=1 << 20)
    writer.close()

n_c = rows["customers"]
cats = ["diapers", "formula", "wipes", "feeding", "skincare", "snacks", "toys", "clothing"]
write("transactions", rows["transactions"], lambda m: pa.table({
    "customer_id": ids("C", np.sort(rng.integers(1, n_c + 1, m)), 7),
    "order_id": ids("O", np.sort(rng.integers(1, m + 1, m)), 10),
    "ordered_at": ts(m),
    "amount": np.round(rng.gamma(2.0, 80.0, m), 2),
    "category": words(cats, m),
    "sku": words([f"S{k:02d}" for k in range(48)], m),
    "quantity": rng.integers(1, 5, m).astype(np.int32),
    "channel": words(["mini_program", "store", "live", "app", "web"], m),
    "discount": np.where(rng.random(m) < 0.07, 20.0, 0.0),
}))
write("touches", rows["touches"], lambda m: pa.table({
    "customer_id": ids("C", np.sort(rng.integers(1, n_c + 1, m)), 7),
    "channel": words(["wecom", "group", "moments", "sms", "mini_program"], m),
    "sent_at": ts(m),
    "campaign_id": words([f"CMP{k:05d}" for k in range(500)], m),
    "responded_at": ts(m),
    "coupon_value": np.where(rng.random(m) < 0.3, 20.0, 0.0),
}))
write("customers", n_c, lambda m: pa.table({
    "customer_id": ids("C", np.arange(1, m + 1), 7),
    "joined_at": ts(m),
    "member_tier": words(["normal", "silver", "gold", "black"], m),
    "acquisition_source": words(["ads", "store", "referral", "live"], m),
    "city_tier": rng.integers(1, 6, m).astype(np.int8),
}))
write("ground_truth", n_c, lambda m: pa.table(
    {"customer_id": ids("C", np.arange(1, m + 1), 7)}
    | {f"x{k}": rng.random(m) for k in range(28)}
))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"inner_wall": time.perf_counter() - t0, "peak_kb": peak}))
"""


def run_child(code: str, args: list[str]) -> dict:
    """Run ``code`` in a fresh Python; return its JSON line plus wall seconds and peak RSS.

    Peak RSS is the child's own ``getrusage(RUSAGE_SELF).ru_maxrss`` (KiB on Linux), taken just
    before it exits; ``RUSAGE_CHILDREN`` here only keeps the maximum over all children so far,
    which is printed beside it as a cross-check for the first (largest) child.
    """
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"child failed with exit code {proc.returncode}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result.update(
        wall=wall,
        peak_rss_mb=result["peak_kb"] / 1024,
        children_max_mb=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; best wall is kept")
    args = parser.parse_args()

    gen_runs, floor_runs = [], []
    with tempfile.TemporaryDirectory(prefix="ltv-bench-") as tmp:
        for i in range(args.repeat):
            out = Path(tmp) / f"gen{i}"
            gen_runs.append(run_child(GENERATOR, [str(out), str(args.customers), str(args.seed)]))
            rows = gen_runs[-1]["rows"]
            floor_rows = {
                "transactions": rows["transactions"],
                "touches": rows["touches"],
                "customers": rows["customers"],
            }
            fout = Path(tmp) / f"floor{i}"
            fout.mkdir()
            floor_runs.append(run_child(FLOOR, [str(fout), str(args.seed), json.dumps(floor_rows)]))
            for d in (out, fout):
                for f in d.iterdir():
                    f.unlink()
    gen = min(gen_runs, key=lambda r: r["wall"])
    flo = min(floor_runs, key=lambda r: r["wall"])
    rows = gen["rows"]
    n = args.customers
    print(
        f"\nSynthetic generator, {n:,} customers, seed {args.seed} ({platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, best of {args.repeat})\n"
    )
    print("| run | wall s | peak RSS MB | transactions | touches | customers | ratio to floor |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(
        f"| generate_to (parquet) | {gen['wall']:.1f} | {gen['peak_rss_mb']:,.0f} | "
        f"{rows['transactions']:,} | {rows['touches']:,} | {rows['customers']:,} | "
        f"{gen['wall'] / flo['wall']:.2f} |"
    )
    print(
        f"| floor: random rows to parquet | {flo['wall']:.1f} | {flo['peak_rss_mb']:,.0f} | "
        f"{rows['transactions']:,} | {rows['touches']:,} | {rows['customers']:,} | 1.00 |"
    )
    print(
        f"\nPer customer: {rows['transactions'] / n:.1f} transaction lines, "
        f"{rows['touches'] / n:.1f} touches; files {gen['bytes'] / 1e6:,.0f} MB. "
        f"Wall includes interpreter start and imports (generator inner: "
        f"{gen['inner_wall']:.1f} s, floor inner: {flo['inner_wall']:.1f} s). "
        f"Peak RSS cross-check (max over children, RUSAGE_CHILDREN): "
        f"{gen_runs[0]['children_max_mb']:,.0f} MB."
    )


if __name__ == "__main__":
    main()
