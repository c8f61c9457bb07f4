"""The fast paths of validation give what the plain ways give.

Text is only stripped when a byte says it may need it, customer ids only meet the phone/e-mail
expression when they could match it, Parquet times are cast by numpy, and the row-set rules
(shared orders, exact duplicates) look at hashes first and decide on the values. Each test
compares a fast path with the plain computation, or forces the hashes to collide.
"""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from pandas.testing import assert_series_equal

from features import validation
from features.contracts import SPECS, TEXT
from features.io import read_table
from features.validation import Rules, validate_table

BLANKS = [" ", "\t", "\n", "\r", "\u00a0", "\u3000", "\u2003", "\u1680", "\u0085", "\ufeff"]
CELLS = [
    "C1",
    "",
    None,
    "a b",
    "中文",
    "x\u200b",
    *[blank + "C1" for blank in BLANKS],
    *["C1" + blank for blank in BLANKS],
    *["中" + blank for blank in BLANKS],
    *BLANKS,
]


def text_series(chunks: list[pa.Array]) -> pd.Series:
    """A ``TEXT`` column over the given Arrow chunks, as read from a file."""
    chunks = [c.cast(pa.large_string()) for c in chunks]
    return pd.Series(pd.arrays.ArrowStringArray(pa.chunked_array(chunks, pa.large_string())))


def with_hidden_bytes(cells: list[str], hidden: str) -> pa.Array:
    """``cells`` followed by a null cell that keeps ``hidden`` as its bytes (Arrow allows it)."""
    data = "".join(cells).encode() + hidden.encode()
    offsets = np.cumsum([0] + [len(c.encode()) for c in cells] + [len(hidden.encode())])
    validity = np.packbits(np.array([True] * len(cells) + [False]), bitorder="little")
    return pa.Array.from_buffers(
        pa.large_string(),
        len(cells) + 1,
        [pa.py_buffer(validity), pa.py_buffer(offsets.astype(np.int64)), pa.py_buffer(data)],
    )


def plain_clean(text: pd.Series) -> pd.Series:
    stripped = text.astype(TEXT).str.strip()
    return stripped.mask(stripped == "")


class TestCleanText:
    @pytest.mark.parametrize("cell", [c for c in CELLS if c is not None])
    def test_each_cell_is_stripped_like_str_strip(self, cell):
        text = text_series([pa.array(["C2", cell, "C3"])])
        assert_series_equal(validation._clean_text(text), plain_clean(text))

    def test_chunks_slices_and_null_bytes(self):
        chunks = [
            pa.array(CELLS, pa.large_string()),
            pa.array(["x", " y", "z"], pa.large_string()).slice(1),  # ' y' is the slice's first
            pa.array(["C9", " C8"], pa.large_string()).slice(0, 1),  # ' C8' is outside the slice
            with_hidden_bytes(["C4", "C5"], " hidden "),
            pa.array([], pa.large_string()),
            pa.array(["", None], pa.large_string()),
        ]
        text = text_series(chunks)
        assert_series_equal(validation._clean_text(text), plain_clean(text))

    def test_clean_ascii_is_not_stripped(self):
        text = text_series([pa.array(["C1", "a b", "x-y"]), with_hidden_bytes(["C2"], "\t")])
        assert not validation._may_have_blank_edges(text.iloc[:3])
        assert validation._may_have_blank_edges(text)  # the null's bytes: a harmless maybe
        for cell in ["C1 ", " C1", "中", "C1\u3000"]:
            assert validation._may_have_blank_edges(text_series([pa.array(["C2", cell])]))


class TestPersonalIds:
    IDS = [
        "C0000001",
        "13812345678",
        "1381234567",
        "23812345678",
        "8613812345678",
        "+8613812345678",
        "86-13812345678",
        "+86 13812345678",
        "+86-138123456789",
        "+1234567",
        "+123456",
        "+123456789012345",
        "+1234567890123456",
        "１３８１２３４５６７８",
        "a@b.cn",
        "@b.cn",
        "a@b",
        "客户@例子.中国",
        "8888888888888888",
        "",
        None,
    ]

    def test_prefilter_finds_what_the_expression_finds(self):
        ids = text_series([pa.array(self.IDS[:10]), pa.array(self.IDS[10:]).slice(0)])
        expected = validation._matches(ids, validation._PHONE_OR_EMAIL)
        assert expected.sum() == 9  # the list holds matches and near misses
        np.testing.assert_array_equal(validation._looks_personal(ids), expected)

    def test_a_null_cell_never_looks_personal(self):
        ids = text_series([with_hidden_bytes(["C1"], "13812345678"), with_hidden_bytes([], "@")])
        assert not validation._looks_personal(ids).any()

    def test_no_candidates_no_expression(self, monkeypatch):
        def refuse(text, pattern):
            raise AssertionError("the expression ran")

        monkeypatch.setattr(validation, "_matches", refuse)
        ids = text_series([pa.array(["C1", "1234567", "+12345678901234567", "", None])])
        assert not validation._looks_personal(ids).any()


class TestParquetTimes:
    def validate(self, tmp_path, times, tz):
        frame = pd.DataFrame(
            {
                "customer_id": [f"C{i}" for i in range(len(times))],
                "order_id": [f"O{i}" for i in range(len(times))],
                "ordered_at": pd.to_datetime(times, format="ISO8601").astype("datetime64[us]"),
                "amount": 1.0,
            }
        )
        path = tmp_path / "transactions.parquet"
        frame.to_parquet(path, index=False)
        raw = read_table(path)
        assert str(raw.frame["ordered_at"].dtype) == "datetime64[us]"  # the numpy cast's input
        return validate_table(raw, SPECS["transactions"], Rules(timezone=tz))

    @pytest.mark.parametrize(
        ("tz", "gap", "repeated", "first_offset"),
        [
            ("America/New_York", "2024-03-10 02:30", "2024-11-03 01:30", "-0400"),
            ("Europe/Berlin", "2024-03-31 02:30", "2024-10-27 02:30", "+0200"),
            ("Asia/Shanghai", "1991-04-14 02:30", "1991-09-15 01:30", "+0900"),
        ],
    )
    def test_clock_changes(self, tmp_path, tz, gap, repeated, first_offset):
        times = ["2024-06-18 20:00", gap, repeated, "1989-12-31 23:59", "2100-01-01", None]
        result = self.validate(tmp_path, times, tz)
        accepted = result.accepted["ordered_at"]
        assert str(accepted.dtype) == f"datetime64[ns, {tz}]"
        assert accepted.dt.strftime("%Y-%m-%d %H:%M %z").tolist()[1:] == [
            f"{repeated} {first_offset}"
        ]
        assert accepted.iloc[0] == pd.Timestamp("2024-06-18 20:00", tz=tz)
        cell = {t: f"'{np.datetime64(t.replace(' ', 'T'), 'us')}'" for t in times if t}
        assert result.quarantine["reason"].tolist() == [
            f"ordered_at does not exist in {tz} (skipped by a clock change): {cell[gap]}",
            f"ordered_at is before 1990-01-01: {cell['1989-12-31 23:59']}",
            f"ordered_at is after 2100-01-01: {cell['2100-01-01']}",
            "ordered_at is missing",
        ]

    @pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
    def test_nanoseconds_as_pandas_casts_them(self, unit):
        edges = ["1677-09-21 00:12:44", "2262-04-11 23:47:16", "2024-01-01 00:00:00.123456"]
        naive = pd.Series(
            pd.to_datetime(edges + [None], format="ISO8601").astype(f"datetime64[{unit}]")
        )
        got, outside = validation._as_nanoseconds(naive)
        assert_series_equal(got, naive.astype("datetime64[ns]"))
        assert got.dtype == "datetime64[ns]" and not outside.any()

    def test_times_outside_nanoseconds_are_failures_not_errors(self):
        naive = pd.Series(np.array(["2500-01-01", "NaT", "1500-01-01", "2024-05-01"], "M8[us]"))
        with pytest.raises(pd.errors.OutOfBoundsDatetime):
            naive.astype("datetime64[ns]")
        got, outside = validation._as_nanoseconds(naive)
        assert outside.tolist() == [True, False, True, False]
        assert got.isna().tolist() == [True, True, True, False]
        assert got.iloc[3] == pd.Timestamp("2024-05-01")


def lines(seed: int, n: int = 400) -> pd.DataFrame:
    """Transaction lines with shared orders and exact duplicates (with empty cells) in them."""
    rng = np.random.default_rng(seed)
    order = rng.integers(0, 60, n)
    customer = order % 17  # an order has one customer ...
    shared = rng.random(n) < 0.03
    customer[shared] = rng.integers(0, 17, shared.sum())  # ... except a few
    frame = pd.DataFrame(
        {
            "customer_id": [f"C{c}" for c in customer],
            "order_id": [f"O{o}" for o in order],
            "ordered_at": pd.Timestamp("2024-01-01") + pd.to_timedelta(order, "h"),
            "amount": rng.integers(1, 4, n).astype(float),
            "category": rng.choice(["a", "b", None], n),
        }
    )
    copies = frame.sample(n // 10, random_state=seed)
    return pd.concat([frame, copies]).sample(frac=1, random_state=seed).reset_index(drop=True)


def expected_reasons(frame: pd.DataFrame, first_row: int) -> dict[int, str]:
    """The quarantine of ``lines``, the plain way: pandas groupby and duplicated.

    Rows are numbered from ``first_row`` (2 in CSV, after the header; 1 in Parquet).
    """
    shared = frame.groupby("order_id")["customer_id"].transform("nunique").to_numpy() > 1
    reasons = {
        int(i) + first_row: "order_id belongs to several customers" for i in np.flatnonzero(shared)
    }
    kept = frame[~shared]
    group = kept.groupby(list(kept.columns), dropna=False).ngroup()
    first = pd.Series(kept.index, index=kept.index).groupby(group).transform("min")
    for i in kept.index[kept.duplicated(keep="first")]:
        reasons[int(i) + first_row] = f"line is an exact duplicate of row {first[i] + first_row}"
    return reasons


class TestRowSets:
    """Hashes only pick candidates: forced collisions change nothing, in CSV and Parquet."""

    @pytest.fixture(params=["real", "colliding", "all equal"])
    def hashes(self, request, monkeypatch):
        real = validation._row_hashes
        forced = {
            "real": real,
            "colliding": lambda lines, columns: real(lines, columns) & np.uint64(15 << 60),
            "all equal": lambda lines, columns: np.zeros(lines.num_rows, dtype=np.uint64),
        }
        monkeypatch.setattr(validation, "_row_hashes", forced[request.param])

    @pytest.mark.parametrize("seed", [1, 2, 3])
    @pytest.mark.parametrize(("fmt", "first_row"), [("csv", 2), ("parquet", 1)])
    def test_shared_orders_and_duplicates(self, tmp_path, hashes, seed, fmt, first_row):
        frame = lines(seed)
        path = tmp_path / f"transactions.{fmt}"
        getattr(frame, f"to_{fmt}")(path, index=False)
        result = validate_table(read_table(path), SPECS["transactions"], Rules())
        got = dict(zip(result.quarantine["source_row"], result.quarantine["reason"], strict=True))
        assert got == expected_reasons(frame, first_row)
        assert 0 < sum("several" in r for r in got.values()) < len(got)
        assert result.report.accepted + len(got) == len(frame)


def test_repeated_marks_every_repeat():
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 2**63, 10_000, dtype=np.int64).astype(np.uint64) << np.uint64(1)
    keys[rng.integers(0, 10_000, 300)] = keys[rng.integers(0, 10_000, 300)]
    counts = pd.Series(keys).map(pd.Series(keys).value_counts()).to_numpy()
    np.testing.assert_array_equal(validation._repeated(keys), counts > 1)
    near = np.array([8, 9, 1 << 40], dtype=np.uint64)  # 8 and 9 differ in the low bits alone
    assert validation._repeated(near).tolist() == [True, True, False]
    assert validation._repeated(np.zeros(0, dtype=np.uint64)).tolist() == []
    assert validation._repeated(np.ones(1, dtype=np.uint64)).tolist() == [False]


def test_typed_numbers_and_blank_rows(tmp_path):
    frame = pd.DataFrame(
        {
            "customer_id": ["C1", "C2", "C3", "C4", "C5", "C6", None],
            "order_id": ["O1", "O2", "O3", "O4", "O5", "O6", None],
            "ordered_at": pd.to_datetime(["2024-01-01"] * 6 + [None]),
            "amount": [1.0, 2e6, np.inf, 3.0, 4.0, 5.0, np.nan],
            "quantity": [1.0, 1.0, 2.0, 2.5, 20_000.0, np.nan, np.nan],
            "discount": [0.0, 0.0, 0.0, -5.0, 0.0, 0.0, np.nan],
        }
    )
    path = tmp_path / "transactions.parquet"
    frame.to_parquet(path, index=False)
    result = validate_table(read_table(path), SPECS["transactions"], Rules())
    assert result.quarantine["reason"].tolist() == [
        "amount is beyond ±1,000,000: '2000000.0'",
        "amount is not finite (inf): 'inf'",
        "quantity is not a whole number: '2.5'; discount is negative: '-5.0'",
        "quantity is above 10,000: '20000.0'",
        "line is blank",
    ]
    assert result.accepted["quantity"].tolist() == [1, pd.NA]
    assert str(result.accepted["quantity"].dtype) == "Int64"
    assert result.accepted["amount"].tolist() == [1.0, 5.0]
