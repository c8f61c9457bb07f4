"""Reading input files and writing tables safely: the only file I/O in ``features/``.

CSV is read with every column as text (typing is validation's job), so a bad cell never stops
the read; a record with the wrong number of fields becomes a quarantined row, not an error.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from features.contracts import FILE_SUFFIXES, TEXT

NULL_TOKENS = ["", "NA", "N/A", "n/a", "NULL", "null", "None", "none", "NaT", "nan", "NaN"]
#: Leading characters that make a spreadsheet run a cell as a formula (OWASP CSV injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


class InputError(Exception):
    """A file that cannot be used at all: missing, unreadable, or lacking a required column.

    The message is one line naming the file (and the column, when one is at fault).
    """


@dataclass
class RawTable:
    """A table as read: text cells (CSV) or the file's own types (Parquet)."""

    path: Path
    frame: pd.DataFrame
    #: 1-based position of each record in the file: the line for CSV (header = line 1),
    #: the row for Parquet.
    source_row: pd.Series
    #: Records that could not be split into the header's columns: (line, reason, text).
    malformed: list[tuple[int | None, str, str]] = field(default_factory=list)


def find_table_file(data_dir: Path, table: str) -> Path | None:
    """The file holding ``table`` in ``data_dir`` (``.parquet`` or ``.csv``), if any."""
    found = [data_dir / f"{table}{suffix}" for suffix in FILE_SUFFIXES]
    found = [p for p in found if p.exists()]
    if len(found) > 1:
        raise InputError(f"{data_dir}: both {found[0].name} and {found[1].name} exist; keep one")
    return found[0] if found else None


def read_table(path: Path, *, encoding: str = "utf-8") -> RawTable:
    """Read one input file; raise :class:`InputError` if it cannot be read at all."""
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty")
    if path.suffix == ".parquet":
        return _read_parquet(path)
    if path.suffix == ".csv":
        return _read_csv(path, encoding=encoding)
    raise InputError(f"{path}: unsupported file type {path.suffix!r} (use .csv or .parquet)")


def read_columns(path: Path, *, encoding: str = "utf-8") -> list[str]:
    """The column names of an input file, reading only its header or schema."""
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty")
    if path.suffix == ".csv":
        return _read_header(path, encoding)
    try:
        names = [str(c).strip() for c in pq.read_schema(path).names]
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from None
    return _unique(path, names)


def _unique(path: Path, names: list[str]) -> list[str]:
    """``names``, or :class:`InputError` naming the first that appears twice (after stripping)."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InputError(f"{path}: column {name!r} appears twice")
        seen.add(name)
    return names


def require_columns(path: Path, columns: list[str], required: tuple[str, ...]) -> None:
    """Raise :class:`InputError` naming the first required column that is missing."""
    missing = [c for c in required if c not in columns]
    if missing:
        raise InputError(
            f"{path}: required column {missing[0]!r} is missing "
            f"(found: {', '.join(map(str, columns)) or 'no columns'})"
        )


def _read_parquet(path: Path) -> RawTable:
    try:
        frame = _to_pandas(pq.read_table(path))
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from None
    frame.columns = _unique(path, [str(c).strip() for c in frame.columns])
    return RawTable(path, frame, pd.Series(range(1, len(frame) + 1), index=frame.index))


def _read_csv(path: Path, *, encoding: str) -> RawTable:
    header = _read_header(path, encoding)
    table, malformed = _parse_csv(path, header, encoding, threads=True)
    if malformed:  # line numbers are only known reading on one thread: read again to get them
        table, malformed = _parse_csv(path, header, encoding, threads=False)
    frame = _to_pandas(table)
    frame.columns = header
    bad_lines = {line for line, _, _ in malformed if line is not None}
    lines = _good_lines(len(frame), bad_lines)
    return RawTable(path, frame, pd.Series(lines, index=frame.index), malformed)


def _parse_csv(
    path: Path, header: list[str], encoding: str, *, threads: bool
) -> tuple[pa.Table, list[tuple[int | None, str, str]]]:
    """Every column as text; records that do not fit the header are set aside with a reason."""
    malformed: list[tuple[int | None, str, str]] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        reason = (
            "line is blank"
            if not row.text.strip()
            else f"line has {row.actual_columns} fields, the header has {row.expected_columns}"
        )
        malformed.append((row.number, reason, row.text))
        return "skip"

    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(
                encoding=encoding, use_threads=threads, column_names=header, skip_rows=1
            ),
            # Blank lines are records too: reported, never silently skipped.
            parse_options=pacsv.ParseOptions(
                invalid_row_handler=on_invalid, newlines_in_values=True, ignore_empty_lines=False
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in header},
                null_values=NULL_TOKENS,
                strings_can_be_null=True,
            ),
        )
    except pa.ArrowInvalid as exc:
        raise InputError(_describe_csv_error(path, exc, encoding)) from None
    return table, malformed


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    """Arrow to pandas, keeping text in Arrow memory (no Python object per cell)."""
    mapping = {pa.string(): TEXT, pa.large_string(): TEXT}
    return table.to_pandas(types_mapper=mapping.get, self_destruct=True)


def _read_header(path: Path, encoding: str) -> list[str]:
    with open(path, "rb") as fh:
        first = fh.readline()
    try:
        text = first.decode(
            "utf-8-sig" if encoding.lower().replace("_", "-") == "utf-8" else encoding
        )
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: header is not valid {encoding} (byte {exc.start}); re-save the file as "
            "UTF-8 or set LTV_INGEST__ENCODING (e.g. gb18030)"
        ) from None
    names = [c.strip().strip('"').strip() for c in text.rstrip("\r\n").split(",")]
    if not any(names):
        raise InputError(f"{path}: first line is not a header")
    return _unique(path, names)


def _good_lines(n_good: int, bad_lines: set[int]) -> np.ndarray:
    """Line numbers of the accepted records: every line from 2 on that was not malformed."""
    lines = np.arange(2, n_good + len(bad_lines) + 2, dtype=np.int64)
    if bad_lines:
        lines = lines[~np.isin(lines, np.fromiter(bad_lines, dtype=np.int64))]
    return lines[:n_good]


def _describe_csv_error(path: Path, exc: Exception, encoding: str) -> str:
    message = _first_line(exc)
    if "UTF8" in message or "UTF-8" in message:
        line = _first_bad_utf8_line(path)
        return (
            f"{path}: not valid {encoding} text (first bad byte on line {line}); re-save it as "
            "UTF-8 or set LTV_INGEST__ENCODING (e.g. gb18030)"
        )
    return f"{path}: cannot be parsed as CSV ({message})"


def _first_bad_utf8_line(path: Path) -> int:
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _neutralise(column: pd.Series) -> pd.Series:
    """Prefix ``'`` to text cells starting with a formula character; other cells untouched."""
    try:
        starts = column.str.startswith(FORMULA_PREFIXES)
    except AttributeError:  # an object column without any text
        return column
    risky = starts.to_numpy(dtype=object, na_value=False).astype(bool)
    if not risky.any():
        return column
    out = column.copy()
    out[risky] = "'" + column[risky].astype(str)
    return out


def neutralise_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` that a spreadsheet opens without running formulas (CSV injection).

    Every text cell (in object, string or category columns) that begins with ``=``, ``+``,
    ``-``, ``@``, a tab or a carriage return gets a leading single quote ``'``, as the OWASP
    CSV-injection guidance advises, so ``=cmd|' /C calc'!A0`` is shown as text. Numeric
    columns, non-text cells of object columns (numbers, dates) and nulls are left as they are;
    the index and column order are kept.

    Args:
        frame: The table to export.

    Returns:
        A new frame; ``frame`` is not modified.
    """
    out = frame.copy()
    for position, (_, column) in enumerate(frame.items()):
        if isinstance(column.dtype, pd.CategoricalDtype):
            categories = column.cat.categories
            if not (categories.dtype == object or pd.api.types.is_string_dtype(categories)):
                continue
            renamed = pd.Index(_neutralise(pd.Series(categories, dtype=object)))
            if renamed.is_unique:
                out.isetitem(position, column.cat.rename_categories(renamed).array)
            else:  # e.g. both "=a" and "'=a" are categories
                safe = _neutralise(column.astype(object))
                out.isetitem(position, safe.astype("category").array)
        elif column.dtype == object or pd.api.types.is_string_dtype(column.dtype):
            out.isetitem(position, _neutralise(column).array)
    return out


def spreadsheet_safe_table(table: pa.Table) -> pa.Table:
    """:func:`neutralise_formulas` for an Arrow table: the same rule, on Arrow's text kernels.

    Text columns (``string``, ``large_string`` and dictionaries of them) get a leading ``'`` on
    every cell that begins with a formula character; every other column is kept as it is.
    """
    columns = []
    for column in table.columns:
        kind = column.type
        if pa.types.is_dictionary(kind):
            column = column.cast(kind.value_type)
            kind = kind.value_type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            risky = pc.starts_with(column, FORMULA_PREFIXES[0])
            for prefix in FORMULA_PREFIXES[1:]:
                risky = pc.or_(risky, pc.starts_with(column, prefix))
            if pc.any(risky).as_py():
                quoted = pc.binary_join_element_wise(
                    pa.scalar("'", kind), column, pa.scalar("", kind)
                )
                column = pc.if_else(risky, quoted, column)
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def write_csv_safe(frame: pd.DataFrame, path: Path) -> Path:
    """Write a spreadsheet-safe UTF-8 CSV (with BOM, so Excel reads Chinese text) atomically."""
    return _atomic_write(
        path, lambda tmp: neutralise_formulas(frame).to_csv(tmp, index=False, encoding="utf-8-sig")
    )


def write_parquet(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` to Parquet atomically (a reader sees the old file or the new, whole)."""
    return _atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))


def _atomic_write(path: Path, write: Callable[[str], object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def process_alive(pid: str) -> bool:
    """Whether process ``pid`` of this host is running (not a pid: no telling, so yes).

    Staging directories and MLflow runs name the process that made them; whoever finds one
    left behind tells a writer still at work from one that was killed with this.
    """
    if not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
