"""Realistic data-quality defects injected into clean tables, with a manifest of what was done.

Real exports from a mini-program backend, a POS or a CRM arrive with duplicated lines, blank
ids, impossible dates, amounts typed with a currency sign and the like. ``make_messy`` puts a
known number of such defects into clean text tables so that the demo shows the quarantine at
work and tests can check that validation catches exactly the injected rows and nothing else.
Each defect makes exactly one row invalid: a cell defect spoils its row, a duplicate adds one
extra copy of a row right after it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

DUPLICATE = "duplicate line"

#: Per table: (column, value written into the cell) or (DUPLICATE, None).
DEFECTS: dict[str, list[tuple[str, str | None]]] = {
    "transactions": [
        (DUPLICATE, None),
        ("customer_id", ""),
        ("ordered_at", "2024-13-45 25:61"),
        ("ordered_at", "1970-01-01 08:00:00"),
        ("amount", "¥12.50"),
        ("amount", "NaN"),
        ("amount", "inf"),
        ("quantity", "0"),
        ("discount", "-5"),
    ],
    "touches": [
        (DUPLICATE, None),
        ("customer_id", ""),
        ("sent_at", "yesterday"),
        ("coupon_value", "-10"),
    ],
    "customers": [
        (DUPLICATE, None),
        ("joined_at", "not a date"),
    ],
}


def make_messy(
    frame: pd.DataFrame, table: str, *, fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Inject ``round(fraction * rows)`` defects (at least one) into a copy of ``frame``.

    Returns the table as text (timestamps ``YYYY-MM-DD HH:MM:SS``, nulls empty) with the defects,
    and a manifest with one row per defect: ``row`` (0-based position in the returned table),
    ``column`` and ``defect``.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be between 0 and 1, got {fraction}")
    rng = np.random.default_rng([seed, len(frame), *map(ord, table)])
    text = _as_text(frame)
    defects = [d for d in DEFECTS[table] if d[0] == DUPLICATE or d[0] in text.columns]
    n = min(len(text), max(1, round(fraction * len(text))))
    rows = np.sort(rng.choice(len(text), size=n, replace=False))
    kinds = rng.integers(0, len(defects), size=n)

    records = []
    for row, kind in zip(rows.tolist(), kinds.tolist(), strict=True):
        column, value = defects[kind]
        if column != DUPLICATE:
            text.loc[row, column] = value
        records.append((row, column, value))

    duplicated = np.array([r for r, c, _ in records if c == DUPLICATE], dtype=np.int64)
    order = np.sort(np.concatenate([np.arange(len(text)), duplicated]), kind="stable")
    messy = text.iloc[order].reset_index(drop=True)
    # The position of each original row in the output, and of each inserted copy.
    shift = np.searchsorted(duplicated, np.arange(len(text)), side="left")
    manifest = pd.DataFrame(
        {
            "row": [int(r + shift[r] + (1 if c == DUPLICATE else 0)) for r, c, _ in records],
            "column": [c if c != DUPLICATE else "line" for _, c, _ in records],
            "defect": [DUPLICATE if c == DUPLICATE else f"{c} = {v!r}" for _, c, v in records],
        }
    )
    return messy, manifest


def _as_text(frame: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(index=range(len(frame)))
    for column in frame.columns:
        values = frame[column].reset_index(drop=True)
        if pd.api.types.is_datetime64_any_dtype(values):
            text = values.dt.strftime("%Y-%m-%d %H:%M:%S")
        else:
            text = values.astype("string")
        out[column] = text.fillna("").astype(object)
    return out


def make_messy_files(data_dir: Path, *, fraction: float, seed: int) -> Path:
    """Rewrite each ``<table>.csv`` of ``data_dir`` with defects; return the manifest's path.

    The manifest (``defects.csv``, beside the tables) lists ``table, row, line, column, defect``
    where ``line`` is the line of the CSV file (header = line 1), as the quarantine reports it.
    """
    manifests = []
    for table in DEFECTS:
        path = data_dir / f"{table}.csv"
        if not path.exists():
            continue
        clean = pd.read_csv(path, dtype=str, keep_default_na=False)
        messy, manifest = make_messy(clean, table, fraction=fraction, seed=seed)
        messy.to_csv(path, index=False)
        manifests.append(manifest.assign(table=table, line=manifest["row"] + 2))
    target = data_dir / "defects.csv"
    pd.concat(manifests)[["table", "row", "line", "column", "defect"]].to_csv(target, index=False)
    return target
