"""A scoring killed while writing its set: the next writer puts the work directory right (R1, R4).

A SIGKILL runs no cleanup, so these tests lay out what a killed writer leaves at each step of
``write_set`` (staging directories, a set moved aside, DuckDB committed or not) and check that
``_recover``, which every write runs first under the lock, leaves one whole set: the old one
when DuckDB did not commit the new rows, the new one when it did.
"""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd

from flows.outputs import _locked, _recover, read_set, set_dir, write_set

AS_OF = datetime.date(2026, 7, 1)


def _tables(run_id: str) -> dict[str, pd.DataFrame]:
    scored = pd.DataFrame(
        {
            "customer_id": ["c1", "c2"],
            "as_of": [AS_OF, AS_OF],
            "churn_prob": [0.1, 0.9] if run_id == "a" else [0.2, 0.8],
            "run_id": [run_id, run_id],
        }
    )
    return {
        "scored_customers": scored,
        "coupon_list": scored[["customer_id", "as_of"]],
        "recall_list": scored[["customer_id", "as_of"]],
    }


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout)


def _run_ids(work: Path) -> tuple[str, str, set[str]]:
    """The run in the scores, in the exports and in DuckDB for AS_OF."""
    scores = read_set(work, AS_OF)["scored_customers"]["run_id"].iloc[0]
    exports = pd.read_csv(set_dir(work, AS_OF, "exports") / "scored_customers.csv")["run_id"]
    con = duckdb.connect(str(work / "ltv.duckdb"))
    rows = {r[0] for r in con.execute("SELECT run_id FROM scored_customers").fetchall()}
    con.close()
    return scores, exports.iloc[0], rows


def _killed_mid_swap(work: Path, tmp_path: Path, pid: int) -> None:
    """Run "b" swapped its scores in, moved run "a"'s aside, and died before the rest."""
    other = tmp_path / "other"
    write_set(other, AS_OF, _tables("b"), {"run": "b"})
    scores = set_dir(work, AS_OF)
    os.replace(scores, scores.with_name(f".{scores.name}.old-{pid}"))
    shutil.copytree(set_dir(other, AS_OF), scores)


def _recovered(work: Path) -> None:
    with _locked(work):
        _recover(work)


def test_a_set_half_swapped_without_commit_goes_back_to_the_old_one(tmp_path):
    work = tmp_path / "work"
    write_set(work, AS_OF, _tables("a"), {"run": "a"})
    _killed_mid_swap(work, tmp_path, _dead_pid())
    assert _run_ids(work)[:2] == ("b", "a")  # the mix a kill leaves
    _recovered(work)
    assert _run_ids(work) == ("a", "a", {"a"})
    assert not list((work / "scores").glob(".as_of=*"))


def test_a_set_committed_but_not_cleaned_up_keeps_the_new_one(tmp_path):
    work = tmp_path / "work"
    write_set(work, AS_OF, _tables("a"), {"run": "a"})
    _killed_mid_swap(work, tmp_path, _dead_pid())
    exports = set_dir(work, AS_OF, "exports")
    os.replace(exports, exports.with_name(f".{exports.name}.old-{_dead_pid()}"))
    shutil.copytree(set_dir(tmp_path / "other", AS_OF, "exports"), exports)
    con = duckdb.connect(str(work / "ltv.duckdb"))
    con.execute("UPDATE scored_customers SET run_id = 'b'")  # the commit happened
    con.close()
    _recovered(work)
    assert _run_ids(work) == ("b", "b", {"b"})
    assert not list((work / "scores").glob(".as_of=*")) + list((work / "exports").glob(".as_of=*"))


def test_staging_left_by_a_dead_writer_is_removed_and_a_live_ones_kept(tmp_path):
    work = tmp_path / "work"
    write_set(work, AS_OF, _tables("a"), {"run": "a"})
    dead = work / "scores" / f".as_of={AS_OF}.tmp-{_dead_pid()}-x1"
    live = work / "exports" / f".as_of={AS_OF}.tmp-{os.getpid()}-x2"
    for path in (dead, live):
        path.mkdir()
        (path / "scored_customers.parquet").write_bytes(b"partial")
    _recovered(work)
    assert not dead.exists() and live.exists()


def test_the_next_scoring_repairs_before_writing(tmp_path):
    work = tmp_path / "work"
    write_set(work, AS_OF, _tables("a"), {"run": "a"})
    _killed_mid_swap(work, tmp_path, _dead_pid())
    write_set(work, AS_OF, _tables("c"), {"run": "c"})
    assert _run_ids(work) == ("c", "c", {"c"})
    assert not list((work / "scores").glob(".as_of=*")) + list((work / "exports").glob(".as_of=*"))
