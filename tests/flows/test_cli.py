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
    ("args", "issue"),
    [
        (["features", "--data", "d", "--as-of", "2024-01-01"], 3),
        (["train", "--data", "d", "--as-of", "2024-01-01"], 4),
        (["score", "--data", "d", "--as-of", "2024-01-01", "--budget", "100"], 5),
        (["monitor", "--data", "d", "--as-of", "2024-01-01"], 6),
        (["lookup", "C1"], 3),
        (["report", "--as-of", "2024-01-01"], 6),
    ],
    ids=["features", "train", "score", "monitor", "lookup", "report"],
)
def test_verbs_not_built_yet_say_so_in_one_line(ltv, args, issue):
    out = ltv(*args)
    assert out.returncode == 3
    assert out.stderr.strip() == f"ltv {args[0]}: not implemented yet (planned in issue #{issue})"


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
