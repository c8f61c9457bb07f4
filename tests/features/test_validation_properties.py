"""R6: generated input files never crash validation and never lose a row.

The number of generated files comes from the hypothesis profile: ``ci`` (default: 1,000 CSV
files per table and 1,000 Parquet files, 4,000 in all) or ``deep`` (``make fuzz``: 10,000 CSV
files per table and 10,000 Parquet files, R6 of RELIABILITY.md).
"""

import csv
import io
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.contracts import SPECS
from features.io import InputError, read_table
from features.validation import Rules, validate_table

settings.register_profile(
    "ci", max_examples=1_000, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.register_profile(
    "deep", max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck)
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)
PARQUET_EXAMPLES = settings.get_profile(PROFILE).max_examples

TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=12,
)
CELLS = {
    "id": st.one_of(st.sampled_from(["C1", "C2", " C3 ", "", "O1", "=cmd()", "客户"]), TEXT),
    "text": st.one_of(st.sampled_from(["wecom", "sms", "diapers", "", "+1", "@x"]), TEXT),
    "timestamp": st.one_of(
        st.sampled_from(
            [
                "2024-06-18 20:00",
                "2024-06-18T12:00:00Z",
                "2024/3/1 9:30",
                "1985-01-01",
                "2024-13-45",
                "9999-12-31",
                "",
                "now",
                "0",
                "2024-06-18T12:00:00+09:00",
                "2101-01-01",
            ]
        ),
        st.datetimes().map(str),
        TEXT,
    ),
    "number": st.one_of(
        st.sampled_from(["1.5", "-3", "abc", "NaN", "inf", "-inf", "1e400", "", "1,000", "0"]),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        TEXT,
    ),
    "count": st.one_of(
        st.sampled_from(["1", "0", "2.5", "-1", "x", "", "99999999"]),
        st.integers(-5, 20_000).map(str),
    ),
}
#: Cells that always pass: half the generated rows use only these, so accepted rows are common.
CLEAN = {
    "id": st.text(alphabet="CDEFG0123456789", min_size=1, max_size=6),
    "text": st.sampled_from(["wecom", "sms", "diapers", "formula", "城市"]),
    "timestamp": st.datetimes(
        min_value=pd.Timestamp("1990-01-02").to_pydatetime(),
        max_value=pd.Timestamp("2099-12-30").to_pydatetime(),
    ).map(lambda d: d.strftime("%Y-%m-%d %H:%M:%S")),
    "number": st.floats(0, 1e5, allow_nan=False).map(repr),
    "count": st.integers(1, 1_000).map(str),
}
EXTRA_COLUMNS = ["phone", "city", "name", "note"]


@st.composite
def csv_files(draw, table: str):
    """(file bytes, number of records written) for one table, hostile cells included."""
    spec = SPECS[table]
    optional = [c.name for c in spec.columns if not c.required]
    columns = list(spec.required) + draw(st.lists(st.sampled_from(optional), unique=True))
    columns += draw(st.lists(st.sampled_from(EXTRA_COLUMNS), unique=True, max_size=2))
    columns = draw(st.permutations(columns))
    kinds = [spec.spec(c).kind if spec.spec(c) else "text" for c in columns]
    clean = st.tuples(*[CLEAN[k] for k in kinds])
    hostile = st.tuples(*[CELLS[k] for k in kinds])
    rows = draw(st.lists(st.one_of(clean, hostile), max_size=25))
    # Exact duplicates and broken lines, at random places.
    if rows and draw(st.booleans()):
        rows.append(draw(st.sampled_from(rows)))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")  # quotes \r and \n in cells
    writer.writerow(columns)
    lines = [buffer.getvalue()]
    for row in rows:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(row)
        lines.append(buffer.getvalue())
    broken = draw(
        st.lists(
            st.sampled_from(["\n", "x\n", ",".join(["y"] * (len(columns) + 2)) + "\n"]), max_size=3
        )
    )
    for line in broken:
        lines.insert(draw(st.integers(1, len(lines))), line)
    bom = draw(st.booleans())
    return (b"\xef\xbb\xbf" if bom else b"") + "".join(lines).encode("utf-8"), len(rows) + len(
        broken
    )


def check_conservation(path: Path, table: str, expected_rows: int, rules: Rules) -> None:
    try:
        result = validate_table(read_table(path), SPECS[table], rules)
    except InputError as exc:  # a refusal is allowed; it must be one clear line
        assert "\n" not in str(exc) and str(path) in str(exc)
        return
    report = result.report
    assert report.rows_in == expected_rows
    assert report.rows_in == report.accepted + report.quarantined
    assert len(result.accepted) == report.accepted
    assert len(result.quarantine) == report.quarantined
    assert result.quarantine["reason"].notna().all()
    assert (result.quarantine["reason"].str.len() > 0).all()
    for column in SPECS[table].required:
        assert result.accepted[column].notna().all()


def _run_csv(table: str, data: tuple[bytes, int], with_key: bool) -> None:
    content, n_rows = data
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{table}.csv"
        path.write_bytes(content)
        check_conservation(path, table, n_rows, Rules(hmac_key=b"k" if with_key else None))


@given(csv_files("transactions"), st.booleans())
def test_transactions_csv_conserves_rows(data, with_key):
    _run_csv("transactions", data, with_key)


@given(csv_files("touches"), st.booleans())
def test_touches_csv_conserves_rows(data, with_key):
    _run_csv("touches", data, with_key)


@given(csv_files("customers"), st.booleans())
def test_customers_csv_conserves_rows(data, with_key):
    _run_csv("customers", data, with_key)


PARQUET_VALUES = {
    "id": st.one_of(st.none(), st.text(max_size=6), st.integers(-3, 10**12)),
    "text": st.one_of(st.none(), st.text(max_size=6)),
    "timestamp": st.one_of(
        st.none(),
        st.datetimes(
            min_value=pd.Timestamp("1700-01-01").to_pydatetime(),
            max_value=pd.Timestamp("2200-01-01").to_pydatetime(),
        ),
    ),
    "number": st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
    "count": st.one_of(
        st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 10**6)
    ),
}


@st.composite
def parquet_frames(draw, table: str):
    spec = SPECS[table]
    n = draw(st.integers(0, 15))
    data = {}
    for column in spec.columns:
        if not column.required and draw(st.booleans()):
            continue
        values = draw(st.lists(PARQUET_VALUES[column.kind], min_size=n, max_size=n))
        data[column.name] = pd.Series(values, dtype=object)
    frame = pd.DataFrame(data, index=range(n))
    for name in frame.columns:  # give each column a single Parquet type
        kind = spec.spec(name).kind
        if kind == "timestamp":
            frame[name] = pd.to_datetime(frame[name], errors="coerce")
            if draw(st.booleans()):
                frame[name] = frame[name].dt.tz_localize("UTC")
        elif kind in ("number", "count"):
            frame[name] = pd.to_numeric(frame[name].astype(object), errors="coerce").astype(
                "float64"
            )
        else:
            frame[name] = frame[name].map(lambda v: None if v is None else str(v))
    return frame


@settings(max_examples=PARQUET_EXAMPLES)
@given(st.sampled_from(sorted(SPECS)), st.data())
def test_parquet_conserves_rows(table, data):
    frame = data.draw(parquet_frames(table))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{table}.parquet"
        frame.to_parquet(path, index=False)
        check_conservation(path, table, len(frame), Rules(hmac_key=b"k"))


def test_the_generator_does_produce_hostile_files():
    """Guard against a vacuous property: the strategies reach both outcomes."""
    outcomes = set()

    @settings(max_examples=100, database=None)
    @given(csv_files("transactions"))
    def probe(data):
        content, _ = data
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "transactions.csv"
            path.write_bytes(content)
            result = validate_table(read_table(path), SPECS["transactions"], Rules(hmac_key=b"k"))
            outcomes.add("accepted" if result.report.accepted else "none-accepted")
            outcomes.add("quarantined" if result.report.quarantined else "none-quarantined")

    probe()
    assert {"accepted", "quarantined"} <= outcomes
    assert np.isfinite(len(outcomes))
