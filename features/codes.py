"""Integer codes for text columns (customer ids, channels, categories), through Arrow.

Grouping, sorting and searching run on integers; the strings are hashed once. Tables usually
come grouped by customer, so a column made of long runs of equal values is encoded through
its runs' first values: comparing neighbours is several times cheaper than hashing each value.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.contracts import TEXT

__all__ = ["arrow_text", "encode", "lookup", "run_starts"]


def arrow_text(values: pd.Series) -> pa.ChunkedArray:
    """A column as Arrow ``large_string`` chunks (shares the memory of Arrow-backed text)."""
    arrow = pa.array(values.astype(TEXT), from_pandas=True)
    if isinstance(arrow, pa.Array):
        arrow = pa.chunked_array([arrow])
    return arrow.cast(pa.large_string())


def run_starts(column: pa.ChunkedArray) -> np.ndarray | None:
    """Where runs of equal values begin, if the column is mostly long runs (else ``None``).

    A null is a run of its own.
    """
    n = len(column)
    sample = column.slice(0, min(n, 1 << 16))
    if n < 1 << 10 or len(_changes(sample)) > len(sample) // 8:
        return None
    return np.append(0, _changes(column) + 1)


def _changes(column: pa.ChunkedArray) -> np.ndarray:
    """Positions ``i`` where value ``i + 1`` differs from value ``i`` (nulls differ)."""
    same = pc.fill_null(pc.equal(column.slice(1), column.slice(0, len(column) - 1)), False)
    return np.flatnonzero(~same.to_numpy())


def _heads(column: pa.ChunkedArray, starts: np.ndarray | None) -> pa.ChunkedArray:
    """The first value of each run (every value without runs)."""
    return column if starts is None else column.take(pa.array(starts))


def _spread(values: np.ndarray, starts: np.ndarray | None, n: int) -> np.ndarray:
    """One value per run back to one per row."""
    return values if starts is None else np.repeat(values, np.diff(np.append(starts, n)))


def encode(columns: list[pa.ChunkedArray]) -> tuple[list[np.ndarray], pa.Array]:
    """Dictionary codes (int32) of text columns sharing one dictionary; null is ``len(dict)``.

    Codes follow the order of first appearance.
    """
    starts = [run_starts(column) for column in columns]
    values = [_heads(c, s) for c, s in zip(columns, starts, strict=True)]
    every = pa.chunked_array([c for column in values for c in column.chunks], pa.large_string())
    encoded = pc.dictionary_encode(every)
    dictionary = (
        encoded.chunk(0).dictionary if encoded.num_chunks else pa.array([], pa.large_string())
    )
    indices = pa.chunked_array([c.indices for c in encoded.chunks], pa.int32())
    if indices.null_count:
        indices = pc.fill_null(indices, len(dictionary))
    flat = indices.to_numpy()
    codes = []
    at = 0
    for column, start, size in zip(values, starts, map(len, columns), strict=True):
        codes.append(_spread(flat[at : at + len(column)], start, size))
        at += len(column)
    return codes, dictionary


def lookup(column: pa.ChunkedArray, known: pa.Array) -> np.ndarray:
    """Each value's position in ``known`` (float64, NaN where absent; a null finds a null)."""
    starts = run_starts(column)
    found = pc.index_in(_heads(column, starts), value_set=known).to_numpy(zero_copy_only=False)
    return _spread(found.astype(np.float64), starts, len(column))
