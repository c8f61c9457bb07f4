"""Benchmark training: the three models on ~1M rows, and the MLflow overhead per run.

Builds (untimed) a training frame of N synthetic customers x K monthly cutoffs with
``build_features`` and ``make_labels`` (default 200,000 x 5: about 1M rows when every customer
has ordered), plus a held-out cutoff. Then, in one child process:

1. ``models.training.train_models``: churn, 30-day purchase, next-order time, value hurdle
   (five LightGBM boosters) with the settings ``ltv train`` uses; wall and peak RSS;
2. a floor: one LightGBM binary model with the same settings and a fixed 100 rounds on the
   same rows (no early stopping), the least a single model costs;
3. MLflow overhead per run: a run on a fresh SQLite store with the metrics, the dataset
   fingerprint and the registered native model (``models.tracking``), charts excluded.

Usage::

    .venv/bin/python bench/bench_train.py                        # 200,000 customers x 5
    .venv/bin/python bench/bench_train.py --customers 20000 --cutoffs 5
"""

from __future__ import annotations

import argparse
import tempfile

from child import run, run_json

FRAME = r"""
import datetime, sys, tempfile
from pathlib import Path
import pandas as pd
from features import build_features, load_dataset, make_labels
from features.synthetic import generate_to
out, n, k = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
with tempfile.TemporaryDirectory() as raw:
    generate_to(Path(raw), n)
    ds = load_dataset(raw)
frames = []
months = [datetime.date(2025, m, 1) for m in range(12 - k, 13)] + [datetime.date(2026, 1, 1)]
for cutoff in months[-(k + 1):]:
    f = build_features(ds.transactions, ds.touches, ds.customers, as_of=cutoff)
    labels = make_labels(ds.transactions, cutoff=cutoff, horizon_days=90)
    m = f.merge(labels.drop(columns=["cutoff"]), on="customer_id")
    m = m[m["orders_total"] > 0].copy()
    m["cutoff"] = pd.Timestamp(cutoff)
    frames.append(m)
pd.concat(frames[:-1]).to_parquet(out / "train.parquet", index=False)
frames[-1].to_parquet(out / "heldout.parquet", index=False)
print(sum(len(f) for f in frames[:-1]))
"""

TRAIN = r"""
import json, resource, sys, tempfile, time
from pathlib import Path
import lightgbm as lgb
import numpy as np
import pandas as pd
from models.estimators import feature_frame
from models.training import predict, train_models
from models.tracking import Tracker, default_tracking_uri
base = Path(sys.argv[1])
frame = pd.read_parquet(base / "train.parquet")
heldout = pd.read_parquet(base / "heldout.parquet")
from flows.settings import get_settings
from flows.train import train_config
config = train_config(get_settings())  # the settings `ltv train` uses
t0 = time.perf_counter()
models = train_models(frame, config)
train_wall = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
rounds = {p: getattr(models, p).booster.num_trees() for p in
          ("churn", "purchase_30d", "next_order_days", "value_buy", "value_spend")}
x = feature_frame(frame.drop(columns=[c for c in frame.columns if c in (
    "churned", "purchased_30d", "days_to_next_order", "next_order_censored", "spend_180d",
    "orders_horizon", "label_matured", "horizon_days")]))
t0 = time.perf_counter()
lgb.train(config.params("binary"), lgb.Dataset(x, frame["churned"].astype(float)), 100)
floor_wall = time.perf_counter() - t0
t0 = time.perf_counter()
predictions = predict(models, heldout)
predict_wall = time.perf_counter() - t0
with tempfile.TemporaryDirectory() as tmp:
    tracker = Tracker(default_tracking_uri(Path(tmp)), Path(tmp) / "artifacts")
    tracker.experiment("warm-up")  # creating the SQLite schema is a one-off, not per run
    walls = []
    for i in range(3):
        t0 = time.perf_counter()
        with tracker.run("bench", f"run {i}", {"feature_service": "churn_model_v1"}) as run:
            run.log_params({"i": i, "rows": len(frame)})
            run.log_metrics({f"m{j}": float(j) for j in range(30)})
            run.log_dataset(frame, "train", tmp, "training", None)
            run.log_booster(models.churn.booster, "bench-churn",
                            feature_frame(heldout, models.churn.features), {})
        walls.append(time.perf_counter() - t0)
print(json.dumps({"rows": len(frame), "features": len(models.churn.features),
                  "train": train_wall, "floor": floor_wall, "predict": predict_wall,
                  "heldout": len(heldout), "mlflow": sorted(walls)[1], "rss_mb": rss,
                  "rounds": rounds}))
"""


def main() -> None:
    """Build the frame, time training, the floor and MLflow; print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--cutoffs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run(FRAME, tmp, str(args.customers), str(args.cutoffs))
        r = run_json(TRAIN, tmp)
    print(f"{r['rows']:,} training rows x {r['features']} features; rounds {r['rounds']}")
    print("| step | wall s | ratio to floor | peak RSS |")
    print("|---|---:|---:|---:|")
    print(
        f"| `train_models` (5 boosters) | {r['train']:.1f} | {r['train'] / r['floor']:.1f} | "
        f"{r['rss_mb'] / 1024:.1f} GB |"
    )
    print(f"| floor: one binary model, 100 rounds | {r['floor']:.1f} | 1.0 | |")
    print(f"| predict {r['heldout']:,} held-out rows (all models) | {r['predict']:.2f} | | |")
    print(f"| MLflow per run (params, metrics, dataset, native model) | {r['mlflow']:.2f} | | |")


if __name__ == "__main__":
    main()
