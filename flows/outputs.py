"""The scored tables on disk: one whole set per ``as_of``, swapped in atomically.

Layout under the work directory (DESIGN.md):

- ``scores/as_of=YYYY-MM-DD/``: ``scored_customers.parquet``, ``coupon_list.parquet``,
  ``recall_list.parquet`` and ``summary.json``;
- ``exports/as_of=YYYY-MM-DD/``: the same tables as spreadsheet-safe CSV;
- ``ltv.duckdb``: tables ``scored_customers``, ``coupon_list`` and ``recall_list`` with an
  ``as_of`` column (the scoring date, a ``DATE``), one date's rows replaced in one
  transaction.

A set is written into a hidden temporary directory beside its final place and renamed into
place under an exclusive file lock (readers of a whole set, :func:`read_set`, take it
shared), together with the DuckDB rows, so two runs for the same
``as_of`` at once leave one complete set (the later one), never a mix, and a crash leaves the
old set (R1, R4). A run killed outright (SIGKILL runs no cleanup) can leave a set half swapped;
the next writer first puts it right under the lock (:func:`_recover`): the old set back when
DuckDB did not commit the new rows, the new one kept when it did. The files are written
deterministically: the same tables give the same bytes (R3).
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from features.duck import quote
from features.io import process_alive, spreadsheet_safe_table

__all__ = [
    "TABLES",
    "latest_scores",
    "previous_scores",
    "read_set",
    "score_row",
    "set_dir",
    "write_set",
]

#: The tables of a scoring set, in the order they are written.
TABLES = ("scored_customers", "coupon_list", "recall_list")


def set_dir(workdir: Path, as_of: datetime.date, kind: str = "scores") -> Path:
    """``<workdir>/<kind>/as_of=YYYY-MM-DD``."""
    return workdir / kind / f"as_of={as_of:%Y-%m-%d}"


@contextmanager
def _locked(workdir: Path, *, shared: bool = False) -> Iterator[None]:
    """A lock on the work directory's outputs: exclusive to write a set, shared to read one."""
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / ".outputs.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


#: Directories swapped into place: (final, where its old contents were moved, if it existed).
Swapped = list[tuple[Path, Path | None]]


def _swap(pairs: list[tuple[Path, Path]]) -> Swapped:
    """Put each staged directory in the place of its final one, all or none.

    A final directory that exists is first moved aside (``.as_of=….old-<pid>``); if any step
    fails, the directories already swapped get their old contents back (:func:`_undo`), and
    the error is raised. The caller deletes the old contents once the DuckDB rows are
    committed, or undoes the swap if the commit fails; a killed run's leftovers are put right
    by the next writer (:func:`_recover`).
    """
    done: Swapped = []
    try:
        for staged, final in pairs:
            old = None
            if final.exists():
                old = final.with_name(f".{final.name}.old-{os.getpid()}")
                os.replace(final, old)
            try:
                os.replace(staged, final)
            except BaseException:
                if old is not None:
                    os.replace(old, final)
                raise
            done.append((final, old))
    except BaseException:
        _undo(done)
        raise
    return done


def _undo(done: Swapped) -> None:
    """Put back what :func:`_swap` replaced (a final that did not exist is removed)."""
    for final, old in reversed(done):
        shutil.rmtree(final, ignore_errors=True)
        if old is not None:
            os.replace(old, final)


def _recover(workdir: Path) -> None:
    """Undo what a scoring killed while writing left behind (called under the exclusive lock).

    - Staging directories (``.as_of=….tmp-<pid>-…``) of processes that are gone are removed.
    - A set moved aside (``.as_of=….old-<pid>``) means a writer died between its swap and the
      deletion of the old set, the last step. Under the lock no live writer is in that window.
      If DuckDB holds the new set's run (it committed), the old set is deleted; otherwise the
      old set is put back in both places, as DuckDB still has the old rows.
    """
    aside: list[Path] = []
    for kind in ("scores", "exports"):
        for staged in (workdir / kind).glob(".as_of=*.tmp-*"):
            if not process_alive(staged.name.split(".tmp-", 1)[1].split("-", 1)[0]):
                shutil.rmtree(staged, ignore_errors=True)
        aside += sorted((workdir / kind).glob(".as_of=*.old-*"))
    for date in sorted({path.name.split(".old-", 1)[0].removeprefix(".as_of=") for path in aside}):
        as_of = datetime.date.fromisoformat(date)
        committed = _run_in(set_dir(workdir, as_of)) == _committed_run(workdir, as_of)
        for old in (path for path in aside if path.name.startswith(f".as_of={date}.old-")):
            final = old.parent / f"as_of={date}"
            if committed:
                shutil.rmtree(old, ignore_errors=True)
                continue
            shutil.rmtree(final, ignore_errors=True)
            os.replace(old, final)


def _run_in(scores: Path) -> str | None:
    """The run id of the scoring set in ``scores`` (``None`` without one)."""
    path = scores / "scored_customers.parquet"
    if not path.exists():
        return None
    table = pq.read_table(path, columns=["run_id"])
    return str(table.column(0)[0]) if table.num_rows else None


def _committed_run(workdir: Path, as_of: datetime.date) -> str | None:
    """The run id DuckDB holds for ``as_of`` (``None`` without rows)."""
    path = workdir / "ltv.duckdb"
    if not path.exists():
        return None
    con = duckdb.connect(str(path))
    try:
        tables = con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_name = 'scored_customers'"
        ).fetchall()
        if not tables:
            return None
        found = con.execute(
            "SELECT any_value(run_id) FROM scored_customers WHERE as_of = ?", [as_of]
        ).fetchall()
    finally:
        con.close()
    return None if not found or found[0][0] is None else str(found[0][0])


def write_set(
    workdir: Path,
    as_of: datetime.date,
    tables: dict[str, pd.DataFrame],
    summary: dict[str, Any],
) -> dict[str, str]:
    """Write the tables of ``as_of`` (Parquet, CSV, DuckDB) and the summary, as one set.

    Returns:
        Where each table went.
    """
    final = {kind: set_dir(workdir, as_of, kind) for kind in ("scores", "exports")}
    staged = {}
    for kind, path in final.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        prefix = f".{path.name}.tmp-{os.getpid()}-"  # the pid: whose leftover it is
        staged[kind] = Path(tempfile.mkdtemp(prefix=prefix, dir=path.parent))
    try:
        arrow = {name: _typed(frame) for name, frame in tables.items()}
        text = json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n"
        (staged["scores"] / "summary.json").write_text(text)
        # Arrow's writers and DuckDB release the GIL: the files of all tables are written side
        # by side while DuckDB stages the rows (under the lock, uncommitted until the swap).
        with ThreadPoolExecutor(2) as pool:
            jobs = [
                pool.submit(pq.write_table, table, staged["scores"] / f"{name}.parquet")
                for name, table in arrow.items()
            ] + [
                pool.submit(_write_csv, table, staged["exports"] / f"{name}.csv")
                for name, table in arrow.items()
            ]
            with _locked(workdir):
                _recover(workdir)  # what a scoring killed while writing left behind
                done: Swapped = []
                try:
                    with _duckdb_rows(workdir / "ltv.duckdb", as_of, arrow):
                        for job in jobs:
                            job.result()
                        done = _swap([(staged[kind], final[kind]) for kind in final])
                except BaseException:
                    _undo(done)  # the rows were not committed: the files go back too
                    raise
                for _, old in done:  # committed: the old set is not needed any more
                    if old is not None:
                        shutil.rmtree(old, ignore_errors=True)
    finally:
        for path in staged.values():
            shutil.rmtree(path, ignore_errors=True)
    out = {name: str(final["scores"] / f"{name}.parquet") for name in tables}
    return out | {"exports": str(final["exports"]), "duckdb": str(workdir / "ltv.duckdb")}


def _typed(frame: pd.DataFrame) -> pa.Table:
    """``frame`` as Arrow; a column with no type (all null, or no rows) becomes text.

    DuckDB would otherwise make a column of type NULL that no later date could fill.
    """
    table = pa.Table.from_pandas(frame, preserve_index=False)
    for i, field in enumerate(table.schema):
        if pa.types.is_null(field.type):
            table = table.set_column(i, field.name, table.column(i).cast(pa.string()))
    return table


def _write_csv(table: pa.Table, path: Path) -> None:
    """A spreadsheet-safe CSV file: header, text quoted where needed, nulls empty."""
    safe = spreadsheet_safe_table(table)
    pa_csv.write_csv(safe, path, pa_csv.WriteOptions(quoting_style="needed"))


@contextmanager
def _duckdb_rows(path: Path, as_of: datetime.date, tables: dict[str, pa.Table]) -> Iterator[None]:
    """Replace the rows of ``as_of`` in each table; commit when the block succeeds."""
    con = duckdb.connect(str(path))
    try:
        con.execute("BEGIN TRANSACTION")
        for name, table in tables.items():
            con.register("incoming", table)
            con.execute(f"CREATE TABLE IF NOT EXISTS {name} AS SELECT * FROM incoming LIMIT 0")
            have = {row[0] for row in con.execute(f"DESCRIBE {name}").fetchall()}
            for column in table.column_names:
                if column not in have:  # a column added since the table was made
                    kind = con.execute(f"SELECT typeof({quote(column)}) FROM incoming LIMIT 1")
                    found = kind.fetchone()
                    sql_type = found[0] if found else "VARCHAR"
                    con.execute(f"ALTER TABLE {name} ADD COLUMN {quote(column)} {sql_type}")
            con.execute(f"DELETE FROM {name} WHERE as_of = DATE '{as_of}'")
            con.execute(f"INSERT INTO {name} BY NAME SELECT * FROM incoming")
            con.unregister("incoming")
        yield
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        con.close()


def _dates(workdir: Path) -> list[datetime.date]:
    """The ``as_of`` dates with a complete scoring set, oldest first."""
    found = []
    for path in (workdir / "scores").glob("as_of=*"):
        if (path / "summary.json").exists():
            found.append(datetime.date.fromisoformat(path.name.removeprefix("as_of=")))
    return sorted(found)


def read_set(
    workdir: Path, as_of: datetime.date, columns: dict[str, list[str]] | None = None
) -> dict[str, pd.DataFrame]:
    """The tables of the set of ``as_of``, read whole under a shared lock (never a mix)."""
    wanted = columns or dict.fromkeys(TABLES)
    with _locked(workdir, shared=True):
        return {
            name: pd.read_parquet(set_dir(workdir, as_of) / f"{name}.parquet", columns=cols)
            for name, cols in wanted.items()
        }


def previous_scores(workdir: Path, as_of: datetime.date, columns: list[str]) -> pd.DataFrame | None:
    """``columns`` of the latest scoring strictly before ``as_of``, if there is one."""
    earlier = [d for d in _dates(workdir) if d < as_of]
    if not earlier:
        return None
    return read_set(workdir, earlier[-1], {"scored_customers": columns})["scored_customers"]


def latest_scores(workdir: Path, at: datetime.date | None = None) -> datetime.date | None:
    """The latest scoring date (at or before ``at`` when given)."""
    dates = [d for d in _dates(workdir) if at is None or d <= at]
    return dates[-1] if dates else None


def score_row(workdir: Path, customer_id: str, at: datetime.date | None = None) -> dict[str, Any]:
    """One customer's row of the latest scoring (at or before ``at``); empty if none."""
    as_of = latest_scores(workdir, at)
    if as_of is None:
        return {}
    path = set_dir(workdir, as_of) / "scored_customers.parquet"
    with _locked(workdir, shared=True):
        table = pq.read_table(path, filters=[("customer_id", "=", customer_id)])
    if table.num_rows == 0:
        return {}
    row = table.slice(0, 1).to_pylist()[0]
    return {key: value for key, value in row.items() if value is not None}
