"""The one DuckDB of a process: vectorised SQL over pandas or Arrow tables, no files."""

from __future__ import annotations

import atexit
import gc
import threading
from functools import cache

import duckdb
import pandas as pd
import pyarrow as pa

_MAKING = threading.Lock()


def _connection() -> duckdb.DuckDBPyConnection:
    """One in-memory DuckDB for this process, made on first use (a connection costs ~20 ms)."""
    with _MAKING:  # threads asking at once (``cache`` alone would let each make one)
        return _made()


@cache
def _made() -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect()
    atexit.register(_close)
    return connection


def _close() -> None:
    """Close and collect before interpreter shutdown.

    Left to shutdown, DuckDB's bindings print dozens of "leaked instance" lines on stderr after
    every command that ran a query inside a Prefect flow.
    """
    _connection().close()
    _made.cache_clear()
    gc.collect()


def query(sql: str, **tables: object) -> pd.DataFrame:
    """Run ``sql`` over the named tables (pandas DataFrames or Arrow tables); return pandas."""
    return query_arrow(sql, **tables).to_pandas()


def query_arrow(sql: str, **tables: object) -> pa.Table:
    """Run ``sql`` over the named tables (pandas DataFrames or Arrow tables); return Arrow.

    Each call gets a cursor of its own, DuckDB's per-thread handle: its registered names are
    private to it, so calls from several threads never see each other's tables.
    """
    with _connection().cursor() as con:
        for name, table in tables.items():
            con.register(name, table)
        return con.sql(sql).to_arrow_table()


def quote(name: str) -> str:
    """A column name as a DuckDB identifier, whatever characters it holds."""
    return '"' + str(name).replace('"', '""') + '"'
