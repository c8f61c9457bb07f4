"""``load_dataset``: a data directory in, validated tables out, quarantine written beside."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from features.contracts import SPECS
from features.io import (
    InputError,
    find_table_file,
    read_columns,
    read_table,
    require_columns,
    write_csv_safe,
)
from features.validation import Rules, TableReport, ValidatedTable, validate_table

QUARANTINE_DIR = "quarantine"


@dataclass
class Dataset:
    """Validated input tables; ``touches`` and ``customers`` are ``None`` when absent."""

    transactions: pd.DataFrame
    touches: pd.DataFrame | None = None
    customers: pd.DataFrame | None = None
    reports: dict[str, TableReport] = field(default_factory=dict)
    quarantine_dir: Path | None = None

    @property
    def rows_in(self) -> int:
        """Rows read over all tables."""
        return sum(r.rows_in for r in self.reports.values())

    @property
    def quarantined(self) -> int:
        """Rows quarantined over all tables."""
        return sum(r.quarantined for r in self.reports.values())

    def summary(self) -> dict[str, object]:
        """Customers (in any table), buyers, orders, date range and row counts."""
        tx = self.transactions
        known = pd.concat(
            [t["customer_id"] for t in (tx, self.touches, self.customers) if t is not None]
        )
        return {
            "customers": int(known.nunique()),
            "buyers": int(tx["customer_id"].nunique()),
            "orders": int(tx["order_id"].nunique()),
            "lines": len(tx),
            "first_order": tx["ordered_at"].min(),
            "last_order": tx["ordered_at"].max(),
            "touches": 0 if self.touches is None else len(self.touches),
            "rows_in": self.rows_in,
            "quarantined": self.quarantined,
        }


def check_dataset(data_dir: str | Path, *, encoding: str = "utf-8") -> dict[str, Path]:
    """Fail fast, reading only headers: the table files, or :class:`InputError`.

    Catches a missing directory, a missing ``transactions`` file, an unreadable file and a
    missing required column, before any row is read.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise InputError(f"{data_dir}: data directory not found")
    found: dict[str, Path] = {}
    for name, spec in SPECS.items():
        path = find_table_file(data_dir, name)
        if path is None:
            if name == "transactions":
                raise InputError(f"{data_dir}: no transactions.csv or transactions.parquet")
            continue
        require_columns(path, read_columns(path, encoding=encoding), spec.required)
        found[name] = path
    return found


def load_dataset(
    data_dir: str | Path,
    rules: Rules | None = None,
    *,
    quarantine_dir: str | Path | None = None,
    encoding: str = "utf-8",
) -> Dataset:
    """Read and validate ``transactions`` (required), ``touches`` and ``customers``.

    Every input row is accepted or written to ``<quarantine_dir>/<table>.csv`` (default
    ``<data_dir>/quarantine``) with a ``reason``; a ``report.json`` beside it holds the counts.
    Raises :class:`~features.io.InputError` (one line naming file and column) when a table
    cannot be used at all.
    """
    rules = rules or Rules()
    data_dir = Path(data_dir)
    files = check_dataset(data_dir, encoding=encoding)
    qdir = Path(quarantine_dir) if quarantine_dir else data_dir / QUARANTINE_DIR
    tables: dict[str, pd.DataFrame | None] = dict.fromkeys(SPECS)
    reports: dict[str, TableReport] = {}

    def validated(name: str) -> ValidatedTable:
        return validate_table(read_table(files[name], encoding=encoding), SPECS[name], rules)

    # The tables side by side: most of the work is in Arrow and DuckDB, which let go of the GIL.
    with ThreadPoolExecutor(2) as pool:
        jobs = {name: pool.submit(validated, name) for name in files}
        try:
            results = {name: job.result() for name, job in jobs.items()}
        except BaseException:  # the first table's error, without validating the others
            pool.shutdown(cancel_futures=True)
            raise
    for name, result in results.items():
        tables[name] = result.accepted
        reports[name] = result.report
        target = qdir / f"{name}.csv"
        if len(result.quarantine):
            write_csv_safe(result.quarantine, target)
        elif target.exists():
            target.unlink()  # a quarantine from an earlier run of fixed data is stale
    if reports:
        qdir.mkdir(parents=True, exist_ok=True)
        (qdir / "report.json").write_text(
            json.dumps({k: asdict(v) for k, v in reports.items()}, indent=2) + "\n"
        )
    transactions = tables["transactions"]
    assert transactions is not None
    return Dataset(
        transactions=transactions,
        touches=tables["touches"],
        customers=tables["customers"],
        reports=reports,
        quarantine_dir=qdir,
    )
