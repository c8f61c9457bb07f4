"""Validation of the input contract: every row is accepted or quarantined with a reason.

Three steps per table, all vectorised:

1. *Protect*: columns that look like direct identifiers (phone, name, openid, unionid, e-mail,
   ...) are HMAC-hashed with the configured key, or dropped when there is none. Customer ids
   that look like phone numbers or e-mail addresses are hashed too, or refused.
2. *Parse*: each contract column is turned into its type (ids and text to strings, timestamps
   to the configured timezone, numbers to floats, counts to integers); a cell that does not
   parse is remembered with what it held.
3. *Check*: every rule of every column (``cell_rules``: ranges, finiteness, whole numbers,
   dates) over all rows at once, then the row-set rules (exact duplicate lines, an order shared
   by customers, a response before its touch). All failures of a row are collected, not just
   the first. The table's pandera schema is built from the same rules and validates the
   accepted rows, so nothing that breaks the contract can be accepted.

A row with at least one failure goes to quarantine with all its reasons, joined by ``"; "``.
``rows_in == accepted + quarantined`` holds for every table and is asserted.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow
import pyarrow.compute as pc

from features.contracts import DIRECT_IDENTIFIER_PATTERN, TEXT, ColumnSpec, TableSpec
from features.duck import query, quote
from features.io import InputError, RawTable, require_columns

_LATEST = pd.Timestamp("2100-01-01")
_OFFSET_SUFFIX = r"(Z|[+-]\d\d:?\d\d)$"
#: What Arrow's casts read: decimal numbers (with exponent, inf, nan) and ISO 8601 local times.
_NUMBER = r"(?i)^[+-]?((\d+\.?\d*|\.\d+)(e[+-]?\d+)?|inf|infinity|nan)$"
_ISO_TIMESTAMP = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}(:\d{2}(:\d{2}(\.\d{1,9})?)?)?)?$"
_PHONE_OR_EMAIL = r"^(\+?86[- ]?)?1[3-9]\d{9}$|^\+\d{7,15}$|^[^@\s]+@[^@\s]+\.[^@\s]+$"
_IDENTIFIER = re.compile(DIRECT_IDENTIFIER_PATTERN)


@dataclass(frozen=True)
class Rules:
    """What a valid row is; built from settings by the flows."""

    timezone: str = "Asia/Shanghai"
    min_timestamp: date = date(1990, 1, 1)
    max_abs_amount: float = 1_000_000.0
    max_quantity: int = 10_000
    hmac_key: bytes | None = None


@dataclass
class TableReport:
    """Counts for one validated table; ``rows_in == accepted + quarantined``."""

    table: str
    path: str
    rows_in: int
    accepted: int
    quarantined: int
    duplicates: int
    #: Quarantined rows per failed check (a row can fail several).
    reasons: dict[str, int] = field(default_factory=dict)
    hashed_columns: list[str] = field(default_factory=list)
    dropped_columns: list[str] = field(default_factory=list)


@dataclass
class ValidatedTable:
    """The accepted rows (typed) and the quarantined ones (as read, with a reason)."""

    accepted: pd.DataFrame
    quarantine: pd.DataFrame
    report: TableReport


def hash_identifier(values: pd.Series, key: bytes) -> pd.Series:
    """HMAC-SHA256 of each value (first 24 hex characters), computed once per distinct value."""
    text = values.astype(TEXT)
    uniques = text.dropna().unique()
    digests = {
        v: hmac.new(key, str(v).encode("utf-8"), hashlib.sha256).hexdigest()[:24] for v in uniques
    }
    return text.map(digests).astype(TEXT)


def validate_table(raw: RawTable, spec: TableSpec, rules: Rules) -> ValidatedTable:
    """Validate one raw table against its contract; raise :class:`InputError` if unusable."""
    frame = raw.frame.reset_index(drop=True)
    source_row = pd.Series(np.asarray(raw.source_row), index=frame.index, name="source_row")
    require_columns(raw.path, list(frame.columns), spec.required)
    frame, hashed, dropped = _protect_identifiers(frame, spec, rules, raw)

    typed = frame.copy(deep=False)  # parsed columns replace, pass-through columns are shared
    failures: list[_Failure] = []
    unparsed: dict[str, np.ndarray] = {}
    for column in frame.columns:
        column_spec = spec.spec(column)
        if column_spec is None:
            continue
        parsed = _PARSERS[column_spec.kind](frame[column], rules)
        typed[column], unparsed[column] = parsed.values, parsed.unparsed
        failures += [_failure(frame, m, column, msg) for msg, m in parsed.failed.items()]
    failures += _cell_failures(frame, typed, spec, rules, unparsed)
    failures += _row_set_failures(typed, spec, _failed(failures, len(frame)))
    duplicates = _duplicate_failures(frame, source_row, _failed(failures, len(frame)))
    failures.append(duplicates)

    blank = frame.isna().all(axis=1).to_numpy()
    if blank.any():  # one reason for an empty record, not one per missing column
        failures = [f.without(blank) for f in failures]
        failures.append(_failure(frame, blank, "line", "is blank", show=False))
    reasons = _combine(failures)
    bad_mask = frame.index.isin(reasons.index)
    quarantine = frame[bad_mask].astype(TEXT)
    quarantine.insert(0, "reason", reasons.reindex(quarantine.index).to_numpy())
    quarantine.insert(0, "source_row", source_row[bad_mask].to_numpy())
    malformed = _malformed_rows(raw, bool(hashed or dropped))
    if len(malformed):
        quarantine = pd.concat([quarantine, malformed], ignore_index=True)
    accepted = typed[~bad_mask].reset_index(drop=True) if bad_mask.any() else typed
    for count in (c.name for c in spec.columns if c.kind == "count"):
        if count in accepted:
            accepted[count] = _whole_numbers(accepted[count])
    build_schema(spec, rules).validate(accepted, inplace=True)  # the contract of what is accepted

    counts = {f.check: len(f.rows) for f in failures if len(f.rows)}
    if raw.malformed:
        counts["line: wrong number of fields"] = len(raw.malformed)
    report = TableReport(
        table=spec.name,
        path=str(raw.path),
        rows_in=len(frame) + len(raw.malformed),
        accepted=len(accepted),
        quarantined=len(quarantine),
        duplicates=len(duplicates.rows),
        reasons={str(k): int(v) for k, v in sorted(counts.items())},
        hashed_columns=hashed,
        dropped_columns=dropped,
    )
    assert report.rows_in == report.accepted + report.quarantined, report
    return ValidatedTable(accepted, quarantine.reset_index(drop=True), report)


# --- protect ---------------------------------------------------------------------------------


def _protect_identifiers(
    frame: pd.DataFrame, spec: TableSpec, rules: Rules, raw: RawTable
) -> tuple[pd.DataFrame, list[str], list[str]]:
    hashed: list[str] = []
    dropped: list[str] = []
    out = frame
    for column in list(frame.columns):
        if spec.spec(column) is not None or not _IDENTIFIER.match(str(column)):
            continue
        if rules.hmac_key is None:
            out = out.drop(columns=column)
            dropped.append(column)
        else:
            out = out.drop(columns=column).assign(
                **{f"{column}_hmac": hash_identifier(frame[column], rules.hmac_key)}
            )
            hashed.append(column)
    ids = _clean_text(out["customer_id"])
    looks_personal = _matches(ids, _PHONE_OR_EMAIL)
    if looks_personal.any():
        if rules.hmac_key is None:
            first = int(raw.source_row.iloc[int(np.argmax(looks_personal))])
            raise InputError(
                f"{raw.path}: column 'customer_id' holds phone numbers or e-mail addresses "
                f"(first at row {first}); set LTV_HMAC_KEY so they are hashed at ingestion"
            )
        out = out.assign(
            customer_id=ids.where(~looks_personal, hash_identifier(ids, rules.hmac_key))
        )
        hashed.append("customer_id")
    return out, hashed, dropped


def _matches(text: pd.Series, pattern: str) -> np.ndarray:
    """Where ``text`` matches the regular expression (vectorised in Arrow; null = no match)."""
    arr = pyarrow.array(text.astype(TEXT).array)  # the Arrow data itself, no copy
    return np.asarray(pc.fill_null(pc.match_substring_regex(arr, pattern), False))


# --- parse -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Parsed:
    """A column turned into its type; ``failed`` maps a reason to the cells that earned it."""

    values: pd.Series
    failed: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def unparsed(self) -> np.ndarray:
        """Cells that held something but could not be turned into the type."""
        masks = list(self.failed.values())
        return np.logical_or.reduce(masks) if masks else np.zeros(len(self.values), bool)


def _parse_text(raw: pd.Series, rules: Rules) -> Parsed:
    if pd.api.types.is_float_dtype(raw) and raw.dropna().mod(1).eq(0).all():
        raw = raw.astype("Int64")  # a numeric id column read from Parquet: 123.0 -> "123"
    return Parsed(_clean_text(raw))


def _clean_text(raw: pd.Series) -> pd.Series:
    """Text without surrounding blanks, empty cells null; shares memory when already clean."""
    text = raw.astype(TEXT)
    stripped = text.str.strip()
    if _characters(stripped) != _characters(text):  # else keep the original, drop the copy
        text = stripped
    empty = (text == "").to_numpy(dtype=bool, na_value=False)
    return text.mask(empty) if empty.any() else text


def _whole_numbers(values: pd.Series) -> pd.Series:
    """Checked whole numbers (float) as nullable ``Int64``, without pandas' per-value checks."""
    missing = values.isna().to_numpy()
    numbers = values.fillna(0).to_numpy(dtype=np.int64)
    return pd.Series(pd.arrays.IntegerArray(numbers, missing), index=values.index, name=values.name)


def _characters(text: pd.Series) -> int:
    """Characters in a text column, counted in Arrow."""
    return int(pc.sum(pc.utf8_length(pyarrow.array(text.array))).as_py() or 0)


def _parse_number(raw: pd.Series, rules: Rules) -> Parsed:
    if pd.api.types.is_bool_dtype(raw):
        raw = raw.astype("float64")
    if pd.api.types.is_numeric_dtype(raw):
        return Parsed(raw.astype("float64"))
    text = _clean_text(raw)
    number = _cast(text, pyarrow.float64(), _NUMBER, _coerce_number)
    unparsed = (text.notna() & number.isna()).to_numpy()
    unparsed &= ~_matches(text, r"(?i)^[+-]?nan$")  # a written NaN is a missing value
    return Parsed(number, {"is not a number": unparsed})


def _parse_count(raw: pd.Series, rules: Rules) -> Parsed:
    number = _parse_number(raw, rules)  # whole-number and range checks are rules of their own
    return Parsed(number.values, {"is not a whole number": number.unparsed})


def _parse_timestamp(raw: pd.Series, rules: Rules) -> Parsed:
    tz = rules.timezone
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        return Parsed(raw.dt.tz_convert(tz).astype(f"datetime64[ns, {tz}]"))
    aware = pd.Series(pd.NaT, index=raw.index, dtype=f"datetime64[ns, {tz}]")
    if pd.api.types.is_datetime64_dtype(raw):
        naive = raw.astype("datetime64[ns]")
        unparsed = np.zeros(len(raw), dtype=bool)
    else:
        text = _clean_text(raw)
        has_offset = _matches(text, _OFFSET_SUFFIX)
        naive = _to_datetime(text.where(~has_offset), utc=False)
        if has_offset.any():
            aware[has_offset] = _to_datetime(text[has_offset], utc=True).dt.tz_convert(tz)
        unparsed = (text.notna() & naive.isna() & aware.isna()).to_numpy()
    # The repeated hour when clocks go back: its first occurrence (deterministic, no row lost).
    local = naive.dt.tz_localize(tz, ambiguous=np.ones(len(naive), dtype=bool), nonexistent="NaT")
    in_gap = (naive.notna() & local.isna()).to_numpy()
    return Parsed(
        local.where(aware.isna(), aware),
        {
            "is not a timestamp": unparsed,
            f"does not exist in {tz} (skipped by a clock change)": in_gap,
        },
    )


def _cast(
    text: pd.Series, to: pyarrow.DataType, grammar: str, slow: Callable[[pd.Series], pd.Series]
) -> pd.Series:
    """Cast a whole text column with Arrow's strict, fast cast; unparseable cells become null.

    If a cell refuses, the cells matching ``grammar`` are cast; if one of those refuses too (a
    well-formed but impossible value such as month 13), ``slow`` coerces cell by cell.
    """
    arr = pyarrow.array(text.array)
    try:
        out = pc.cast(arr, to)
    except (pyarrow.ArrowInvalid, pyarrow.ArrowNotImplementedError):
        try:
            out = pc.cast(pc.if_else(pc.match_substring_regex(arr, grammar), arr, None), to)
        except (pyarrow.ArrowInvalid, pyarrow.ArrowNotImplementedError):
            return slow(text)
    return pd.Series(out.to_numpy(zero_copy_only=False), index=text.index)


def _coerce_number(text: pd.Series) -> pd.Series:
    return pd.to_numeric(text, errors="coerce").astype("float64")


def _coerce_iso_timestamp(text: pd.Series) -> pd.Series:
    return pd.to_datetime(text, format="ISO8601", errors="coerce")


def _to_datetime(text: pd.Series, *, utc: bool) -> pd.Series:
    """ISO 8601 through Arrow, then pandas for the other common layouts, cell by cell."""
    if utc:
        first = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True)
    else:
        first = _cast(text, pyarrow.timestamp("ns"), _ISO_TIMESTAMP, _coerce_iso_timestamp)
        first = first.astype("datetime64[ns]")
    retry = first.isna() & text.notna()
    if retry.any():
        first[retry] = pd.to_datetime(text[retry], format="mixed", errors="coerce", utc=utc)
    if not utc and isinstance(first.dtype, pd.DatetimeTZDtype):  # pragma: no cover - defensive
        first = first.dt.tz_localize(None)
    return first.astype("datetime64[ns, UTC]" if utc else "datetime64[ns]")


_PARSERS: dict[str, Callable[[pd.Series, Rules], Parsed]] = {
    "id": _parse_text,
    "text": _parse_text,
    "timestamp": _parse_timestamp,
    "number": _parse_number,
    "count": _parse_count,
}


# --- check -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CellRule:
    """One check of one column; ``passes`` is vectorised, true where a non-null cell is valid."""

    message: str
    passes: Callable[[pd.Series], pd.Series]


def cell_rules(spec: ColumnSpec, rules: Rules) -> list[CellRule]:
    """The checks of one parsed column, in the order their reasons are reported."""
    found: list[CellRule] = []
    if spec.kind == "timestamp":
        earliest = pd.Timestamp(rules.min_timestamp).tz_localize(rules.timezone)
        latest = _LATEST.tz_localize(rules.timezone)
        found += [
            CellRule(f"is before {rules.min_timestamp:%Y-%m-%d}", lambda s: s >= earliest),
            CellRule(f"is after {_LATEST:%Y-%m-%d}", lambda s: s < latest),
        ]
    if spec.kind in ("number", "count"):
        found.append(CellRule("is not finite (inf)", lambda s: pd.Series(np.isfinite(s), s.index)))
    finite = _finite_or
    if spec.kind == "number":
        limit = rules.max_abs_amount
        found.append(CellRule(f"is beyond ±{limit:,.0f}", finite(lambda s: s.abs() <= limit)))
    if spec.kind == "count":
        top = rules.max_quantity
        found += [
            CellRule("is not a whole number", finite(lambda s: s.mod(1) == 0)),
            CellRule(f"is above {top:,}", finite(lambda s: s <= top)),
        ]
    if spec.min_value is not None:
        low = spec.min_value
        message = "is negative" if low == 0 else f"is below {low:g}"
        found.append(CellRule(message, lambda s: s >= low))
    return found


def _finite_or(test: Callable[[pd.Series], pd.Series]) -> Callable[[pd.Series], pd.Series]:
    """A check that leaves infinite values to the finiteness check (one reason each)."""
    return lambda s: test(s) | ~pd.Series(np.isfinite(s), s.index)


def build_schema(spec: TableSpec, rules: Rules) -> pa.DataFrameSchema:
    """The pandera schema of the accepted rows, built from the same rules as the quarantine.

    Every accepted table is validated against it, so an accepted row can never break the
    contract even if a parse or a rule were wrong.
    """
    dtypes = {
        "timestamp": pd.DatetimeTZDtype(tz=rules.timezone),
        "number": "float64",
        "count": "Int64",
    }
    return pa.DataFrameSchema(
        {
            c.name: pa.Column(
                dtypes.get(c.kind),
                checks=[pa.Check(r.passes, error=r.message) for r in cell_rules(c, rules)],
                nullable=not c.required,
                required=c.required,
            )
            for c in spec.columns
        },
        name=spec.name,
        strict=False,
    )


def _cell_failures(
    frame: pd.DataFrame,
    typed: pd.DataFrame,
    spec: TableSpec,
    rules: Rules,
    unparsed: dict[str, np.ndarray],
) -> list[_Failure]:
    found: list[_Failure] = []
    for column in spec.columns:
        if column.name not in typed:
            continue
        values = typed[column.name]
        present = values.notna().to_numpy()
        if column.required:
            missing = ~present & ~unparsed[column.name]
            found.append(_failure(frame, missing, column.name, "is missing", show=False))
        filled = values if present.all() else values[present]  # no copy in the usual case
        for rule in cell_rules(column, rules):
            bad = present.copy()
            bad[present] = ~rule.passes(filled).to_numpy(dtype=bool)
            found.append(_failure(frame, bad, column.name, rule.message))
    return found


def _row_set_failures(typed: pd.DataFrame, spec: TableSpec, failed: np.ndarray) -> list[_Failure]:
    """Rules over several rows, applied to the rows that passed every cell rule."""
    found: list[_Failure] = []
    ok = ~failed
    if spec.name == "transactions":
        lines = typed.loc[ok, ["order_id", "customer_id"]]
        shared_orders = query(
            "SELECT order_id FROM lines GROUP BY order_id "
            "HAVING min(customer_id) <> max(customer_id)",
            lines=lines,
        )["order_id"]
        shared = np.zeros(len(typed), dtype=bool)
        shared[np.flatnonzero(ok)] = lines["order_id"].isin(shared_orders).to_numpy()
        message = "belongs to several customers"
        found.append(_failure(typed, shared, "order_id", message, show=False))
    if spec.name == "touches" and "responded_at" in typed.columns:
        early = (typed["responded_at"] < typed["sent_at"]).fillna(False).to_numpy(bool) & ok
        found.append(_failure(typed, early, "responded_at", "is before sent_at", show=False))
    return found


def _duplicate_failures(frame: pd.DataFrame, source_row: pd.Series, failed: np.ndarray) -> _Failure:
    """Exact duplicate lines: the first is kept, the others quarantined naming it.

    One 64-bit hash per line (DuckDB ``hash`` over every column, NULLs alike) finds the
    candidates cheaply; an exact GROUP BY over the candidates alone confirms them, so a hash
    collision can never quarantine a line.
    """
    message = "is an exact duplicate of row"
    none = _Failure(np.zeros(0, dtype=np.int64), "line", message)
    positions = np.flatnonzero(~failed)
    lines = pyarrow.Table.from_pandas(frame, preserve_index=False)  # shares the columns' memory
    if failed.any():
        lines = lines.take(positions)
    lines = lines.append_column("__position", pyarrow.array(positions))
    columns = ", ".join(quote(c) for c in frame.columns)
    candidates = query(
        f"WITH h AS (SELECT __position, hash({columns}) AS h FROM lines) "
        "SELECT __position FROM h WHERE h IN (SELECT h FROM h GROUP BY h HAVING count(*) > 1)",
        lines=lines,
    )["__position"].to_numpy(dtype=np.int64)
    if not len(candidates):
        return none
    lines = lines.take(np.searchsorted(positions, np.sort(candidates)))
    repeats = query(
        f"SELECT min(__position) AS first, list(__position) AS rows FROM lines "
        f"GROUP BY {columns} HAVING count(*) > 1",
        lines=lines,
    )
    if repeats.empty:
        return none
    repeats = repeats.explode("rows")
    repeats = repeats[repeats["rows"] != repeats["first"]].sort_values("rows")
    rows = repeats["rows"].to_numpy(dtype=np.int64)
    first = source_row.to_numpy()[repeats["first"].to_numpy(dtype=np.int64)]
    return _Failure(rows, "line", message, first.astype(str).astype(object), quoted=False)


# --- reasons ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Failure:
    """Rows (positions) that failed one check, with the cells that failed it (or none)."""

    rows: np.ndarray
    column: str
    message: str
    detail: np.ndarray | None = None
    quoted: bool = True

    @property
    def check(self) -> str:
        """What failed, without the value: the key of the report's reason counts."""
        return f"{self.column}: {self.message}"

    def reasons(self) -> list[str]:
        """One reason per failed row: what failed, and the cell as it was read."""
        head = f"{self.column} {self.message}"
        if self.detail is None:
            return [head] * len(self.rows)
        if self.quoted:
            return [f"{head}: '{d}'" for d in self.detail]
        return [f"{head} {d}" for d in self.detail]

    def without(self, mask: np.ndarray) -> _Failure:
        """The same failure for the rows not in ``mask``."""
        keep = ~mask[self.rows]
        detail = None if self.detail is None else self.detail[keep]
        return _Failure(self.rows[keep], self.column, self.message, detail, self.quoted)


def _failure(
    frame: pd.DataFrame, mask: np.ndarray, column: str, message: str, *, show: bool = True
) -> _Failure:
    """The rows where ``mask`` holds, showing each row's cell of ``column`` when ``show``."""
    rows = np.flatnonzero(mask)
    detail = None
    if show and len(rows):
        cells = frame[column].to_numpy()[rows]
        detail = np.array([str(c)[:40] for c in cells], dtype=object)
    return _Failure(rows, column, message, detail)


def _failed(failures: list[_Failure], n_rows: int) -> np.ndarray:
    failed = np.zeros(n_rows, dtype=bool)
    for f in failures:
        failed[f.rows] = True
    return failed


def _combine(failures: list[_Failure]) -> pd.Series:
    """One reason per failed row: its failures in the order checked, joined by ``"; "``."""
    found = [f for f in failures if len(f.rows)]
    if not found:
        return pd.Series(dtype=object)
    everything = pd.DataFrame(
        {
            "row": np.concatenate([f.rows for f in found]),
            "reason": [r for f in found for r in f.reasons()],
        }
    ).drop_duplicates()
    return everything.groupby("row", sort=True)["reason"].agg("; ".join)


def _malformed_rows(raw: RawTable, withhold: bool) -> pd.DataFrame:
    if not raw.malformed:
        return pd.DataFrame(columns=["source_row", "reason"])
    return pd.DataFrame(
        {
            "source_row": [line for line, _, _ in raw.malformed],
            "reason": [reason for _, reason, _ in raw.malformed],
            "raw_line": [
                "[withheld: the file has identifier columns]" if withhold else text[:500]
                for _, _, text in raw.malformed
            ],
        }
    )
