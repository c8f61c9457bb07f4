"""The ``ltv`` CLI and the data flows, on the real Prefect engine."""

import pandas as pd
import pytest

from flows.data import validate

VERBS = [
    "demo",
    "generate",
    "import",
    "validate",
    "features",
    "train",
    "score",
    "monitor",
    "lookup",
    "report",
]


def test_help_lists_every_design_verb(ltv):
    out = ltv("--help")
    assert out.returncode == 0
    for verb in VERBS:
        assert f" {verb} " in out.stdout, verb


@pytest.mark.parametrize(
    "args",
    [["monitor", "--data", "d", "--as-of", "2024-01-01"], ["report", "--as-of", "2024-01-01"]],
    ids=["monitor", "report"],
)
def test_verbs_not_built_yet_say_so_in_one_line(ltv, args):
    out = ltv(*args)
    assert out.returncode == 3
    assert out.stderr.strip() == (
        f"ltv {args[0]}: not implemented yet (DESIGN.md lists it; no release builds it yet)"
    )


def test_score_without_a_trained_model_says_to_train_first(ltv, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "transactions.csv").write_text(
        "customer_id,order_id,ordered_at,amount\nC1,O1,2024-01-01,10\nC1,O2,2024-02-01,12\n"
    )
    work = str(tmp_path / "work")
    out = ltv("score", "--data", str(data), "--as-of", "2024-03-01", "--workdir", work)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "no champion version of model ltv-churn" in out.stderr
    assert "run ltv train first" in out.stderr and "Traceback" not in out.stderr
    negative = ltv("score", "--data", str(data), "--as-of", "2024-03-01", "--budget", "-5")
    assert negative.returncode == 2
    assert negative.stderr.strip() == (
        "error: --budget must be a finite amount, 0 or more, not -5.0"
    )
    unset = ltv("score", "--data", str(data), "--as-of", "2024-03-01", "--budget", "nan")
    assert unset.returncode == 2 and "not nan" in unset.stderr  # NaN would mean no limit


def test_bad_date_is_an_input_error(ltv):
    out = ltv("train", "--data", "d", "--as-of", "2024-13-01")
    assert out.returncode == 2
    assert out.stderr.strip() == "error: --as-of '2024-13-01' is not a date (YYYY-MM-DD)"


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({}, "no transactions.csv or transactions.parquet"),
        (
            {"transactions.csv": "customer_id,order_id,amount\nC,O,1\n"},
            "transactions.csv: required column 'ordered_at' is missing",
        ),
        (
            {
                "transactions.csv": "customer_id,order_id,ordered_at,amount\nC,O,2024-01-01,1\n",
                "touches.csv": "customer_id,sent_at\nC,2024-01-01\n",
            },
            "touches.csv: required column 'channel' is missing",
        ),
    ],
    ids=["no-transactions", "missing-column", "missing-column-in-optional-table"],
)
def test_validate_stops_with_one_line_and_exit_2(ltv, tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    out = ltv("validate", "--data", str(tmp_path))
    assert out.returncode == 2, out.stderr
    assert expected in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert "Traceback" not in out.stderr + out.stdout


def test_input_error_inside_the_flow_has_no_traceback(ltv, tmp_path):
    # The header is fine (the pre-flight passes); line 3 is not UTF-8: the flow itself fails.
    (tmp_path / "transactions.csv").write_bytes(
        b"customer_id,order_id,ordered_at,amount\nC1,O1,2024-01-01,1\nC2,O2,2024-01-01,\xff\n"
    )
    out = ltv("validate", "--data", str(tmp_path))
    assert out.returncode == 2
    assert "not valid utf-8 text (first bad byte on line 3)" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def test_validate_prints_counts(ltv, tmp_path):
    (tmp_path / "transactions.csv").write_text(
        "customer_id,order_id,ordered_at,amount\nC1,O1,2024-01-01,1\nC1,O1,2024-01-01,1\n"
        "C2,O2,bad,1\n"
    )
    out = ltv("validate", "--data", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "rows_in=3 = accepted 1 + quarantined 2" in out.stdout
    assert "1 × line: is an exact duplicate of row" in out.stdout
    assert "1 × ordered_at: is not a timestamp" in out.stdout
    assert "leaked" not in out.stderr  # DuckDB's shutdown noise stays away


def test_validate_flow_run_completes(tmp_path):
    (tmp_path / "transactions.csv").write_text(
        "customer_id,order_id,ordered_at,amount\nC1,O1,2024-01-01,1\n,O2,2024-01-02,1\n"
    )
    state = validate(data=tmp_path, return_state=True)
    assert state.is_completed()
    result = state.result()
    assert result["tables"]["transactions"]["accepted"] == 1
    assert result["tables"]["transactions"]["quarantined"] == 1
    assert pd.read_csv(tmp_path / "quarantine" / "transactions.csv")["reason"].tolist() == [
        "customer_id is missing"
    ]


def test_features_writes_one_snapshot_per_date(ltv, tmp_path):
    from features.synthetic import generate_to

    data, work = tmp_path / "data", tmp_path / "work"
    generate_to(data, 300, seed=4)
    runs = [
        ltv("features", "--data", str(data), "--as-of", as_of, "--workdir", str(work))
        for as_of in ("2026-01-01", "2026-01-01", "2026-03-01")  # a rerun replaces its date
    ]
    assert all(r.returncode == 0 for r in runs), runs[-1].stderr[-2000:]
    snapshots = sorted((work / "features" / "customer_features").glob("*.parquet"))
    assert [p.name for p in snapshots] == ["2026-01-01.parquet", "2026-03-01.parquet"]
    january = pd.read_parquet(snapshots[0])
    assert january["customer_id"].is_unique
    assert (january["as_of"] == pd.Timestamp("2026-01-01", tz="Asia/Shanghai")).all()
    assert f"features at 2026-01-01: {len(january):,} customers" in runs[1].stdout
    assert "lifecycle_stage:" in runs[2].stdout
    assert "feast: 7 feature views applied" in runs[2].stdout
    assert f"online: {len(january):,} customers written to 7 views" in runs[0].stdout
    # The same date again refreshes the online values; an older date never replaces newer ones.
    older = ltv("features", "--data", str(data), "--as-of", "2026-02-01", "--workdir", str(work))
    assert older.returncode == 0, older.stderr[-2000:]
    assert (
        "customer_rfm not written: online store already holds as_of 2026-03-01 00:00 +0800"
        in older.stdout
    )
    customer = january["customer_id"].iloc[0]
    shown = ltv("lookup", customer, "--at", "2026-03-01", "--workdir", str(work))
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "customer_rfm  as of 2026-03-01 00:00 +0800  current" in shown.stdout
    stale = ltv("lookup", customer, "--at", "2026-03-09", "--workdir", str(work))
    assert "not current (older than the view's TTL)" in stale.stdout
    assert "days_since_last_order" not in stale.stdout
    unknown = ltv("lookup", "nobody", "--workdir", str(work))
    assert unknown.returncode == 1
    assert unknown.stdout.strip().splitlines() == [
        "customer nobody: no online features",
        "customer nobody: no scores (run ltv score)",
    ]
    assert not any("leaked" in r.stderr for r in runs)
