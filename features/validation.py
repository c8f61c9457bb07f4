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
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow
import pyarrow.compute as pc

from features.contracts import DIRECT_IDENTIFIER_PATTERN, TEXT, ColumnSpec, TableSpec
from features.duck import query, query_arrow, quote
from features.io import InputError, RawTable, require_columns

_LATEST = pd.Timestamp("2100-01-01")
_OFFSET_SUFFIX = r"(Z|[+-]\d\d:?\d\d)$"
#: What Arrow's casts read: decimal numbers (with exponent, inf, nan) and ISO 8601 local times.
_NUMBER = r"(?i)^[+-]?((\d+\.?\d*|\.\d+)(e[+-]?\d+)?|inf|infinity|nan)$"
_ISO_TIMESTAMP = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}(:\d{2}(:\d{2}(\.\d{1,9})?)?)?)?$"
_PHONE_OR_EMAIL = r"^(\+?86[- ]?)?1[3-9]\d{9}$|^\+\d{7,15}$|^[^@\s]+@[^@\s]+\.[^@\s]+$"
_IDENTIFIER = re.compile(DIRECT_IDENTIFIER_PATTERN)
#: The id every table has: with the typed columns, it tells most lines apart cheaply.
_CUSTOMER = "customer_id"
#: Nanoseconds in a tick of the units a pandas datetime can have.
_NANOSECONDS = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}


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
    frame = raw.frame.copy(deep=False)  # the columns are shared, never written
    frame.index = pd.RangeIndex(len(frame))
    source_row = pd.Series(np.asarray(raw.source_row), index=frame.index, name="source_row")
    require_columns(raw.path, list(frame.columns), spec.required)
    frame, hashed, dropped = _protect_identifiers(frame, spec, rules, raw)

    # The candidates of the row-set rules need no cell rule: a thread finds them meanwhile.
    with ThreadPoolExecutor(max_workers=1) as helper:
        maybe_duplicates = helper.submit(_maybe_duplicates, frame)
        typed, failures, unparsed = _parse_columns(frame, spec, rules)
        maybe_shared = helper.submit(_maybe_shared, typed, spec)
        failures += _cell_failures(frame, typed, spec, rules, unparsed)
        failed = _failed(failures, len(frame))
        failures += _row_set_failures(typed, spec, maybe_shared.result() & ~failed, ~failed)
        failed = _failed(failures, len(frame))
        lines, maybe = maybe_duplicates.result()
        duplicates = _duplicate_failures(lines, source_row, maybe & ~failed)
    failures.append(duplicates)

    blank = _blank_rows(frame)
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
    accepted = _rows(typed, ~bad_mask) if bad_mask.any() else typed
    for count in (c.name for c in spec.columns if c.kind == "count"):
        if count in accepted:
            accepted[count] = _whole_numbers(accepted[count])
    build_schema(spec, rules).validate(accepted, inplace=True)  # the contract of what is accepted
    # pandera caches an accessor on the frame that points back to it. Dropping it breaks that
    # reference cycle: the table is freed when its last reader lets go, not at a full collection.
    accepted.__dict__.pop("pandera", None)

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


def _parse_columns(
    frame: pd.DataFrame, spec: TableSpec, rules: Rules
) -> tuple[pd.DataFrame, list[_Failure], dict[str, np.ndarray]]:
    """The typed table, the failures to parse, and per contract column where it did not parse."""
    columns = dict(frame.items())  # parsed columns replace, pass-through columns are shared
    failures: list[_Failure] = []
    unparsed: dict[str, np.ndarray] = {}
    for column in frame.columns:
        column_spec = spec.spec(column)
        if column_spec is None:
            continue
        parsed = _PARSERS[column_spec.kind](frame[column], rules)
        columns[column], unparsed[column] = parsed.values, parsed.unparsed
        failures += [_failure(frame, m, column, msg) for msg, m in parsed.failed.items()]
    typed = pd.DataFrame(columns, copy=False)  # setting columns one by one would copy each
    return typed, failures, unparsed


def _rows(frame: pd.DataFrame, keep: np.ndarray) -> pd.DataFrame:
    """The rows of ``frame`` where ``keep`` holds, numbered from 0.

    Column by column: a mask filters Arrow text chunk by chunk, where a frame's ``take`` looks
    up each row's chunk (seconds at millions of rows).
    """
    return pd.DataFrame({name: values.array[keep] for name, values in frame.items()}, copy=False)


def _blank_rows(frame: pd.DataFrame) -> np.ndarray:
    """Rows with every cell missing; stops at the first column that leaves none."""
    blank = np.ones(len(frame), dtype=bool)
    for _, values in frame.items():
        blank &= values.isna().to_numpy()
        if not blank.any():
            break
    return blank


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
    looks_personal = _looks_personal(ids)
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


def _looks_personal(ids: pd.Series) -> np.ndarray:
    """Where an id matches ``_PHONE_OR_EMAIL``; the expression only runs where it can match.

    A match holds an ``@`` or starts with ``+``, ``1`` or ``8`` and is 8 to 16 bytes long (11
    digits after at most 4 prefix characters, or ``+`` and 7 to 15 digits).
    """
    maybe = np.concatenate(
        [np.zeros(0, dtype=bool)] + [_phone_like(o, data) for o, data in _string_chunks(ids)]
    )
    if any((data[o[0] : o[-1]] == ord("@")).any() for o, data in _string_chunks(ids)):
        maybe |= np.asarray(pc.fill_null(pc.match_substring(_arrow(ids), "@"), False))
    found = np.zeros(len(ids), dtype=bool)
    if maybe.any():
        found[maybe] = _matches(ids[maybe], _PHONE_OR_EMAIL)
    return found


def _phone_like(offsets: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Cells of 8 to 16 bytes starting with ``+``, ``1`` or ``8`` (see :func:`_string_chunks`)."""
    lengths = np.diff(offsets)
    first = data[np.minimum(offsets[:-1], len(data) - 1)]  # an empty last cell: past the end
    return np.isin(first, np.frombuffer(b"+18", np.uint8)) & (lengths >= 8) & (lengths <= 16)


def _matches(text: pd.Series, pattern: str) -> np.ndarray:
    """Where ``text`` matches the regular expression (vectorised in Arrow; null = no match)."""
    arr = _arrow(text.astype(TEXT))
    return np.asarray(pc.fill_null(pc.match_substring_regex(arr, pattern), False))


def _arrow(text: pd.Series) -> pyarrow.ChunkedArray:
    """The Arrow data of a ``TEXT`` column itself, not a copy."""
    arr = pyarrow.array(text.array)  # a lone chunk comes back unwrapped
    return arr if isinstance(arr, pyarrow.ChunkedArray) else pyarrow.chunked_array([arr])


def _string_chunks(text: pd.Series) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Per Arrow chunk of a text column: its offsets (one more than its cells) and its bytes.

    Cell ``i`` is ``data[offsets[i] : offsets[i + 1]]``; read from Arrow's buffers, no copy. A
    null cell may keep bytes too (Arrow allows it), so the bytes may only rule cells out. When
    there are no bytes, ``data`` is one zero byte, so that an index stays in bounds.
    """
    for chunk in (c for c in _arrow(text).chunks if len(c)):
        assert chunk.type == pyarrow.large_string(), chunk.type  # what pandas keeps text as
        _, offsets, data = chunk.buffers()
        offsets = np.frombuffer(offsets, dtype=np.int64)
        yield (
            offsets[chunk.offset : chunk.offset + len(chunk) + 1],
            np.frombuffer(data or b"\0", dtype=np.uint8),
        )


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
    if _may_have_blank_edges(text):
        stripped = text.str.strip()
        if _bytes(stripped) != _bytes(text):  # stripping only removes; else keep the original
            text = stripped
    empty = (text == "").to_numpy(dtype=bool, na_value=False)
    return text.mask(empty) if empty.any() else text


def _may_have_blank_edges(text: pd.Series) -> bool:
    """Whether a cell may start or end with a blank, judged by its bytes.

    In UTF-8 a character is either one ASCII byte or bytes of 0x80 and above, so a cell whose
    first and last bytes are printable ASCII starts and ends with a character that is no blank
    of any kind, and stripping leaves it as it is. A chunk whose bytes are all printable needs
    no look at its cells.
    """
    for offsets, data in _string_chunks(text):
        if _printable(data[offsets[0] : offsets[-1]]):
            continue
        first = data[np.minimum(offsets[:-1], len(data) - 1)]  # an empty cell: another's byte
        if not (_printable(first) and _printable(data[offsets[1:] - 1])):
            return True
    return False


def _printable(data: np.ndarray) -> bool:
    """Whether every byte is printable ASCII (``!`` to ``~``): no blank, nor part of one."""
    return not len(data) or bool(data.min() > 0x20 and data.max() < 0x7F)


def _whole_numbers(values: pd.Series) -> pd.Series:
    """Checked whole numbers (float) as nullable ``Int64``, without pandas' per-value checks."""
    missing = values.isna().to_numpy()
    with np.errstate(invalid="ignore"):  # a missing value's NaN, zeroed below
        numbers = values.to_numpy(dtype=np.float64).astype(np.int64)
    numbers[missing] = 0
    return pd.Series(pd.arrays.IntegerArray(numbers, missing), index=values.index, name=values.name)


def _bytes(text: pd.Series) -> int:
    """Bytes in the (non-null) cells of a text column, counted in Arrow."""
    return int(pc.sum(pc.binary_length(_arrow(text))).as_py() or 0)


def _parse_number(raw: pd.Series, rules: Rules) -> Parsed:
    if pd.api.types.is_bool_dtype(raw):
        raw = raw.astype("float64")
    if pd.api.types.is_numeric_dtype(raw):
        return Parsed(raw if raw.dtype == np.float64 else raw.astype("float64"))
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
    outside = np.zeros(len(raw), dtype=bool)
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        if raw.dtype.unit == "ns":
            return Parsed(raw.dt.tz_convert(tz))
        utc, outside = _as_nanoseconds(raw.dt.tz_convert("UTC").dt.tz_localize(None))
        return Parsed(utc.dt.tz_localize("UTC").dt.tz_convert(tz), {_OUT_OF_RANGE: outside})
    if pd.api.types.is_datetime64_dtype(raw):
        (naive, outside), aware = _as_nanoseconds(raw), None
        unparsed = np.zeros(len(raw), dtype=bool)
    else:
        naive, aware, unparsed = _read_timestamps(raw, tz)
    local = _localize(naive, tz)
    in_gap = (naive.to_numpy().view(np.int64) != _NAT) & (_utc_nanoseconds(local) == _NAT)
    return Parsed(
        local if aware is None else local.where(aware.isna(), aware),
        {
            "is not a timestamp": unparsed,
            _OUT_OF_RANGE: outside,
            f"does not exist in {tz} (skipped by a clock change)": in_gap,
        },
    )


def _localize(naive: pd.Series, tz: str) -> pd.Series:
    """Naive local times in ``tz``; a time skipped by a clock change is NaT.

    The repeated hour when clocks go back is its first occurrence (deterministic, no row lost).
    Many times go through a table of the zone's offset hour by hour (pandas takes seconds for
    tens of millions), pandas settling only the times in an hour a clock change falls in: the
    result is :func:`_localize_with_pandas`'s, to the name of the Series.
    """
    if len(naive) < _FEW_TIMES or naive.dtype != np.dtype("datetime64[ns]"):
        return _localize_with_pandas(naive, tz)
    wall = naive.to_numpy().view(np.int64)
    by_hour = _utc_by_hour(wall, tz)
    if by_hour is None:
        return _localize_with_pandas(naive, tz)
    utc, unsettled = by_hour
    missing = wall[unsettled] == _NAT
    unsettled = unsettled[~missing]
    if len(unsettled):
        utc[unsettled] = _utc_nanoseconds(
            _localize_with_pandas(pd.Series(wall[unsettled].view("datetime64[ns]")), tz)
        )
    name = None if missing.any() else naive.name  # as pandas' way, which rebuilds the Series
    # Integers with an aware dtype are UTC nanoseconds: the Series takes them without a copy.
    aware = pd.DatetimeTZDtype("ns", tz)
    return pd.Series(utc, index=naive.index, name=name, dtype=aware, copy=False)


def _localize_with_pandas(naive: pd.Series, tz: str) -> pd.Series:
    """:func:`_localize` by pandas alone: for few times, and the reference.

    Only the present times are localized: an optional column is often mostly empty.
    """
    present = naive.notna().to_numpy()
    times = naive if present.all() else naive[present]
    local = times.dt.tz_localize(tz, ambiguous=np.ones(len(times), dtype=bool), nonexistent="NaT")
    if len(times) == len(naive):
        return local
    out = pd.Series(pd.NaT, index=naive.index, dtype=local.dtype)
    out[present] = local.array
    return out


#: Nanoseconds in an hour: the step of the table of offsets :func:`_localize` reads.
_HOUR = 3_600 * 10**9
#: Below this many times pandas alone localizes them (quick enough), and above this many hours
#: between the first time and the last too (the table would be larger than the times).
_FEW_TIMES = 100_000
_MOST_HOURS = 3_000_000
#: The hours (since 1970, wall clock) the table can cover: well inside what nanoseconds hold,
#: so that no offset takes a time of the table out of range.
_FIRST_HOUR = pd.Timestamp("1678-01-01").value // _HOUR
_LAST_HOUR = pd.Timestamp("2262-01-01").value // _HOUR
#: NaT as nanoseconds.
_NAT = np.iinfo(np.int64).min
#: The offset of an hour a clock change falls in (no zone has it); the least int64, so that a
#: block's minimum tells whether it has one.
_UNSETTLED = np.iinfo(np.int64).min
#: Times converted at a time: a block stays in the processor's cache through every step.
_BLOCK = 1 << 16


def _utc_by_hour(wall: np.ndarray, tz: str) -> tuple[np.ndarray, np.ndarray] | None:
    """UTC nanoseconds of the naive ``tz`` nanoseconds ``wall`` that their hour settles.

    Also returns the positions left NaT: the NaT times, those in an hour a clock change falls
    in and those outside the table. None when the times span too many hours for a table.
    """
    least, most = int(wall.min()), int(wall.max())
    some_missing = least == _NAT
    if some_missing:
        least = int(np.min(wall, where=wall != _NAT, initial=np.iinfo(np.int64).max))
    first, last = max(least // _HOUR, _FIRST_HOUR), min(most // _HOUR, _LAST_HOUR)
    if first > last or last - first >= _MOST_HOURS:
        return None
    offsets = _hourly_offsets(first, last - first + 1, tz)
    inside = (first, last) == (least // _HOUR, most // _HOUR)
    if inside and offsets[0] != _UNSETTLED and (offsets == offsets[0]).all():
        # One offset throughout (a zone without clock changes, or none in the span): no table.
        utc = wall - offsets[0]
        missing = np.flatnonzero(wall == _NAT) if some_missing else np.empty(0, dtype=np.intp)
        utc[missing] = _NAT
        return utc, missing
    return _utc_by_table(wall, first, offsets)


def _utc_by_table(
    wall: np.ndarray, first: int, offsets: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_utc_by_hour` with the ``offsets`` of the hours from hour ``first`` on.

    Block by block, so that each step reads what the previous one left in the cache.
    """
    table = np.full(len(offsets) + 2, _UNSETTLED, dtype=np.int64)  # an unsettled hour each side
    table[1:-1] = offsets
    utc = np.empty_like(wall)
    hour = np.empty(min(_BLOCK, len(wall)), dtype=np.int64)
    unsettled = []
    for start in range(0, len(wall), _BLOCK):
        times, out = wall[start : start + _BLOCK], utc[start : start + _BLOCK]
        index = hour[: len(times)]
        np.floor_divide(times, _HOUR, out=index)
        index -= first - 1
        np.take(table, index, mode="clip", out=out)  # NaT or outside the table: a side
        if out.min() == _UNSETTLED:
            unsettled.append(start + np.flatnonzero(out == _UNSETTLED))
        np.subtract(times, out, out=out)
    positions = np.concatenate(unsettled) if unsettled else np.empty(0, dtype=np.intp)
    utc[positions] = _NAT
    return utc, positions


def _hourly_offsets(first: int, hours: int, tz: str) -> np.ndarray:
    """The offset (local minus UTC, nanoseconds) of ``tz`` in each of ``hours`` wall-clock hours.

    The hours count from hour ``first`` since 1970 (wall clock). An hour is settled when its
    start and its end both exist once, with one offset: no clock change falls in it (none
    changes and changes back within an hour). Any other hour is ``_UNSETTLED``.
    """
    starts = np.arange(first, first + hours + 1, dtype=np.int64) * _HOUR
    utc = _utc_nanoseconds(
        pd.Series(starts.view("datetime64[ns]")).dt.tz_localize(
            tz, ambiguous="NaT", nonexistent="NaT"
        )
    )
    offsets = starts - utc
    settled = (utc != _NAT)[:-1] & (utc != _NAT)[1:] & (offsets[:-1] == offsets[1:])
    return np.where(settled, offsets[:-1], _UNSETTLED)


def _utc_nanoseconds(local: pd.Series) -> np.ndarray:
    """Aware times as UTC nanoseconds, NaT as :data:`_NAT`."""
    return local.dt.tz_convert(None).to_numpy().view(np.int64)


#: A time nanosecond timestamps cannot hold (pandas' range).
_OUT_OF_RANGE = f"is outside {pd.Timestamp.min:%Y-%m-%d} to {pd.Timestamp.max:%Y-%m-%d}"


def _read_timestamps(raw: pd.Series, tz: str) -> tuple[pd.Series, pd.Series, np.ndarray]:
    """Text as naive local times, the times written with an offset (in ``tz``) and the rest."""
    aware = pd.Series(pd.NaT, index=raw.index, dtype=f"datetime64[ns, {tz}]")
    text = _clean_text(raw)
    has_offset = _matches(text, _OFFSET_SUFFIX)
    naive = _to_datetime(text.where(~has_offset), utc=False)
    if has_offset.any():
        aware[has_offset] = _to_datetime(text[has_offset], utc=True).dt.tz_convert(tz)
    return naive, aware, (text.notna() & naive.isna() & aware.isna()).to_numpy()


def _as_nanoseconds(naive: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Naive times (Parquet's are microseconds) as ``datetime64[ns]``, and those that cannot be.

    numpy's cast is a multiplication that wraps silently past the nanosecond range (1677 to
    2262): times outside it become NaT first, and are returned as failures.
    """
    values = naive.to_numpy()
    limit = np.iinfo(np.int64).max // _NANOSECONDS[np.datetime_data(values.dtype)[0]]
    low, high = np.array([-limit, limit]).view(values.dtype)
    outside = (values < low) | (values > high)  # NaT compares false
    if outside.any():
        values = values.copy()
        values[outside] = np.datetime64("NaT")
    cast = values.astype("datetime64[ns]", copy=False)
    return pd.Series(cast, index=naive.index, name=naive.name), outside


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
        found.append(CellRule("is not finite (inf)", _on_floats(np.isfinite)))
    finite = _finite_or
    if spec.kind == "number":
        limit = rules.max_abs_amount
        within = finite(lambda x: (x >= -limit) & (x <= limit))
        found.append(CellRule(f"is beyond ±{limit:,.0f}", within))
    if spec.kind == "count":
        top = rules.max_quantity
        found += [
            CellRule("is not a whole number", finite(lambda x: np.floor(x) == x)),
            CellRule(f"is above {top:,}", finite(lambda x: x <= top)),
        ]
    if spec.min_value is not None:
        low = spec.min_value
        message = "is negative" if low == 0 else f"is below {low:g}"
        found.append(CellRule(message, _on_floats(lambda x: x >= low)))
    return found


def _on_floats(test: Callable[[np.ndarray], np.ndarray]) -> Callable[[pd.Series], pd.Series]:
    """A check of numbers run by numpy on their float values (float or ``Int64`` columns)."""
    return lambda s: pd.Series(test(_floats(s)), s.index)


def _floats(numbers: pd.Series) -> np.ndarray:
    """The values of a float or ``Int64`` column as floats; a float column's own array."""
    if numbers.dtype == np.float64:
        return numbers.to_numpy()
    return numbers.to_numpy(dtype=np.float64, na_value=np.nan)


def _finite_or(test: Callable[[np.ndarray], np.ndarray]) -> Callable[[pd.Series], pd.Series]:
    """A check that leaves infinite values to the finiteness check (one reason each)."""
    return _on_floats(lambda x: test(x) | ~np.isfinite(x))


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
        complete = bool(present.all())
        filled = values if complete else values[present]  # no copy in the usual case
        for rule in cell_rules(column, rules):
            bad = ~rule.passes(filled).to_numpy(dtype=bool)
            if not complete:
                bad = _spread(bad, present)
            found.append(_failure(frame, bad, column.name, rule.message))
    return found


def _spread(values: np.ndarray, where: np.ndarray) -> np.ndarray:
    """``values`` put at the true places of ``where``, false elsewhere."""
    out = np.zeros(len(where), dtype=bool)
    out[where] = values
    return out


def _row_set_failures(
    typed: pd.DataFrame, spec: TableSpec, maybe_shared: np.ndarray, ok: np.ndarray
) -> list[_Failure]:
    """Rules over several rows, applied to the ``ok`` rows: those that passed every cell rule."""
    found: list[_Failure] = []
    if spec.name == "transactions":
        shared = _shared_orders(typed["order_id"], typed["customer_id"], maybe_shared)
        message = "belongs to several customers"
        found.append(_failure(typed, shared, "order_id", message, show=False))
    if spec.name == "touches" and "responded_at" in typed.columns:
        early = (typed["responded_at"] < typed["sent_at"]).fillna(False).to_numpy(bool) & ok
        found.append(_failure(typed, early, "responded_at", "is before sent_at", show=False))
    return found


def _maybe_shared(typed: pd.DataFrame, spec: TableSpec) -> np.ndarray:
    """Lines of transactions whose order may belong to several customers (a superset).

    Each line's key holds the high bits of its order id's hash (the order's bucket) and, in the
    low bits, its customer's exact number. Sorted, a bucket's keys are adjacent, so a bucket
    holds several customers exactly when two neighbours share the high bits but not the low
    ones. All the lines of an order are in its bucket, so a shared order always marks it; a
    hash collision can only add a bucket.
    """
    if spec.name != "transactions":
        return np.zeros(len(typed), dtype=bool)
    customers = _arrow(typed["customer_id"]).combine_chunks()  # one dictionary: exact numbers
    customer = pc.dictionary_encode(customers, null_encoding="encode")
    bits = np.uint64(max(len(customer.dictionary) - 1, 1).bit_length())
    hashes = _row_hashes(pyarrow.table({"order_id": _arrow(typed["order_id"])}), ["order_id"])
    numbers = customer.indices.to_numpy().view(np.uint32)  # never negative
    keys, tied = _pack_sorted(hashes.copy(), numbers, int(bits))
    mixed = tied & (keys[1:] != keys[:-1])
    if not mixed.any():
        return np.zeros(len(typed), dtype=bool)
    return np.isin(hashes >> bits, keys[1:][mixed] >> bits)


def _shared_orders(orders: pd.Series, customers: pd.Series, candidates: np.ndarray) -> np.ndarray:
    """The ``candidates`` of an order whose candidate lines name several customers.

    Only the candidates are grouped, by the order id itself; as they hold all the lines that
    count of every order they touch (:func:`_maybe_shared`), a hash collision decides nothing.
    """
    if not candidates.any():
        return candidates
    lines = pyarrow.table({"order_id": _arrow(orders), "customer_id": _arrow(customers)})
    shared = query(
        "SELECT order_id FROM lines GROUP BY order_id HAVING min(customer_id) <> max(customer_id)",
        lines=lines.filter(pyarrow.array(candidates)),
    )["order_id"]
    return orders.isin(shared).to_numpy() & candidates


def _row_hashes(lines: pyarrow.Table, columns: list[str]) -> np.ndarray:
    """DuckDB's 64-bit hash of ``columns`` for each line (NULLs alike).

    A plain projection keeps the lines' order (DuckDB preserves insertion order by default).
    """
    hashed = ", ".join(quote(c) for c in columns)
    hashes = query_arrow(f"SELECT hash({hashed}) AS h FROM lines", lines=lines)["h"]
    return np.concatenate([np.zeros(0, np.uint64)] + [c.to_numpy() for c in hashes.chunks])


def _maybe_duplicates(frame: pd.DataFrame) -> tuple[pyarrow.Table, np.ndarray]:
    """The lines as read, in Arrow, and those whose hash of some columns repeats.

    Equal lines have equal 64-bit hashes of :func:`_key_columns`, so every line that repeats
    another is marked; a hash collision can only mark one more.
    """
    lines = pyarrow.Table.from_pandas(frame, preserve_index=False)  # shares the columns' memory
    return lines, _repeated(_row_hashes(lines, _key_columns(lines)))


def _duplicate_failures(lines: pyarrow.Table, source_row: pd.Series, maybe: np.ndarray) -> _Failure:
    """Exact duplicate lines among ``maybe``: the first is kept, the others quarantined naming it.

    Lines are the same when DuckDB groups them together (NULLs alike). Only the candidates are
    grouped, each by its every column, so a hash collision can never quarantine a line.
    """
    message = "is an exact duplicate of row"
    candidates = np.flatnonzero(maybe)
    repeats = query(
        f"SELECT min(__position) AS first, list(__position) AS rows FROM lines "
        f"GROUP BY {', '.join(quote(c) for c in lines.column_names)} HAVING count(*) > 1",
        lines=lines.take(candidates).append_column("__position", pyarrow.array(candidates)),
    )
    if repeats.empty:
        return _Failure(np.zeros(0, dtype=np.int64), "line", message)
    repeats = repeats.explode("rows")
    repeats = repeats[repeats["rows"] != repeats["first"]].sort_values("rows")
    rows = repeats["rows"].to_numpy(dtype=np.int64)
    first = source_row.to_numpy()[repeats["first"].to_numpy(dtype=np.int64)]
    return _Failure(rows, "line", message, first.astype(str).astype(object), quoted=False)


def _key_columns(lines: pyarrow.Table) -> list[str]:
    """Columns whose hash finds the candidate duplicates cheaply.

    Text costs most to hash. When a table has columns of other types (Parquet), those and the
    customer id are the key: equal lines agree on them, and they rarely all agree otherwise. A
    table of text alone (CSV) is hashed whole.
    """
    typed = [f.name for f in lines.schema if not _is_text(f.type)]
    if not typed or _CUSTOMER not in lines.column_names:
        return lines.column_names
    return [_CUSTOMER, *typed]


def _is_text(arrow_type: pyarrow.DataType) -> bool:
    return pyarrow.types.is_string(arrow_type) or pyarrow.types.is_large_string(arrow_type)


def _repeated(keys: np.ndarray) -> np.ndarray:
    """Where a 64-bit key occurs more than once, and rarely where one nearly does; uses ``keys``.

    Each key is sorted with its position in its low bits (:func:`_pack_sorted`), so equal keys
    end up next to each other and still tell where they came from. Keys that differ in those low
    bits alone are marked too; a mark only makes a candidate.
    """
    bits = max(len(keys) - 1, 1).bit_length()
    packed, tied = _pack_sorted(keys, np.arange(len(keys), dtype=np.uint64), bits)
    packed &= np.uint64((1 << bits) - 1)  # the positions
    marked = np.zeros(len(keys), dtype=bool)
    marked[packed[1:][tied]] = True
    marked[packed[:-1][tied]] = True
    return marked


def _pack_sorted(keys: np.ndarray, payload: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """``keys`` with ``payload`` (below ``2**bits``) in their low bits, sorted in place.

    One sort, no argsort. Also returns where a key shares its high bits with the next one.
    """
    low = np.uint64((1 << bits) - 1)
    keys &= ~low
    keys |= payload
    keys.sort()
    return keys, (keys[1:] ^ keys[:-1]) <= low


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
        cells = frame[column].iloc[rows].to_numpy()
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
