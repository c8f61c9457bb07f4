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
old set (R1, R4). The files are written deterministically: the same tables give the same bytes
(R3).
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
from features.io import spreadsheet_safe_table

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


def _swap(pairs: list[tuple[Path, Path]]) -> None:
    """Put each staged directory in the place of its final one, all or none.

    A final directory that exists is first moved aside; if any step fails, the directories
    already swapped get their old contents back, and the error is raised.
    """
    done: list[tuple[Path, Path | None]] = []
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
        for final, old in reversed(done):
            shutil.rmtree(final, ignore_errors=True)
            if old is not None:
                os.replace(old, final)
        raise
    for _, old in done:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


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
        staged[kind] = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
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
            with _locked(workdir), _duckdb_rows(workdir / "ltv.duckdb", as_of, arrow):
                for job in jobs:
                    job.result()
                _swap([(staged[kind], final[kind]) for kind in final])  # then the rows commit
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
