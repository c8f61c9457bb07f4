"""End to end: the demo, and the real-data import followed by validation."""

from pathlib import Path

import pandas as pd

from features import Rules, load_dataset
from flows.data import import_dataset


def test_demo_runs_end_to_end(ltv, tmp_path):
    out = ltv("demo", "--customers", "400", "--workdir", str(tmp_path / "work"))
    assert out.returncode == 0, out.stderr[-2000:]
    data = tmp_path / "work" / "demo-data"
    assert {p.name for p in data.iterdir()} >= {
        "transactions.csv",
        "touches.csv",
        "customers.csv",
        "ground_truth.parquet",
        "defects.csv",
    }
    defects = pd.read_csv(data / "defects.csv")
    assert len(defects) > 0
    assert f"quarantined {len(defects):,} (quarantine: {data / 'quarantine'})" in out.stdout
    assert "× line: is an exact duplicate of row" in out.stdout
    snapshot = pd.read_parquet(
        tmp_path / "work" / "features" / "customer_features" / "2026-07-01.parquet"
    )
    assert f"features at 2026-07-01: {len(snapshot):,} customers" in out.stdout
    assert snapshot["customer_id"].is_unique and len(snapshot) == 400
    # The demo shows its top customer through the online store.
    top = snapshot.sort_values(["spend_365d", "customer_id"], ascending=[False, True]).iloc[0]
    assert f"$ ltv lookup {top['customer_id']} --at 2026-07-01" in out.stdout
    assert f"    rfm_segment                      {top['rfm_segment']}" in out.stdout
    # ... then trains the three models, registers them and says where to look.
    assert "champions: ltv-churn v1, ltv-next-purchase v1, ltv-value v1" in out.stdout
    assert f"MLflow UI: make mlflow-ui WORKDIR={tmp_path / 'work'}" in out.stdout
    assert "Prefect UI: http://" in out.stdout  # the server the runs went to
    assert (tmp_path / "work" / "mlflow.db").exists()
    # ... then scores every customer, prints the run summary and the top of both lists.
    scores = tmp_path / "work" / "scores" / "as_of=2026-07-01"
    scored = pd.read_parquet(scores / "scored_customers.parquet")
    assert len(scored) == 400
    assert "$ ltv score --data" in out.stdout and "--budget 160" in out.stdout
    assert f"of 400 customers at 2026-07-01 (run {scored['run_id'].iloc[0]};" in out.stdout
    assert "expected cost" in out.stdout and "of 160.00" in out.stdout
    assert f"top of coupon_list ({scores / 'coupon_list.parquet'})" in out.stdout
    assert f"top of recall_list ({scores / 'recall_list.parquet'})" in out.stdout
    assert (tmp_path / "work" / "exports" / "as_of=2026-07-01" / "coupon_list.csv").exists()
    # ... and the lookup shows the top customer's scores with the reasons.
    row = scored.set_index("customer_id").loc[top["customer_id"]]
    assert f"latest scores (as of 2026-07-01, run {row['run_id']})" in out.stdout
    assert f"    1. {row['reason_1']}" in out.stdout


def test_completejourney_import_then_validate(tmp_path):
    state = import_dataset(out=tmp_path, return_state=True)
    assert state.is_completed()
    assert sorted(Path(p).name for p in state.result()) == [
        "customers.parquet",
        "touches.parquet",
        "transactions.parquet",
    ]
    dataset = load_dataset(tmp_path, Rules(timezone="America/New_York"))
    assert dataset.quarantined == 0, dataset.reports
    summary = dataset.summary()
    assert (summary["customers"], summary["orders"], summary["lines"]) == (
        2_469,
        155_848,
        1_469_307,
    )
    assert len(dataset.customers) == 2_469
    assert dataset.touches["responded_at"].notna().sum() == 792
