"""Validation of the input contract: golden tables for each outcome."""

import gc
import hashlib
import hmac
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pandas.testing import assert_frame_equal

from features import InputError, Rules, check_dataset, load_dataset
from features.io import neutralise_formulas

TZ = "Asia/Shanghai"


def write(path: Path, text: str, *, bom: bool = False, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode(encoding)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    return path


def quarantine(data_dir: Path, table: str = "transactions") -> pd.DataFrame:
    return pd.read_csv(data_dir / "quarantine" / f"{table}.csv", dtype=str, keep_default_na=False)


GOLDEN = """customer_id,order_id,ordered_at,amount,quantity,discount,category
C1,O1,2024-01-05 10:00,100.5,1,0,diapers
C1,O1,2024-01-05 10:00,100.5,1,0,diapers
,O2,2024-01-06,20,1,0,wipes
C2,O3,not-a-date,abc,0,-1,toys
C3,O4,1985-03-01,inf,1.5,,toys
C4,O5,2024-02-01T08:00:00+00:00,-30,2,,formula
C5,O6,2024/3/1 9:30,1e12,1,,
C6,O7,2024-03-02,5,1,0,x,extra
C7,O8,2024-03-03,NaN,1,0,
C8,O9,2024-03-04,12,,5,wipes
C9,O9,2024-03-04,12,1,5,wipes
"""


class TestGoldenTransactions:
    @pytest.fixture(scope="class")
    def loaded(self, tmp_path_factory):
        data = tmp_path_factory.mktemp("golden")
        write(data / "transactions.csv", GOLDEN)
        return data, load_dataset(data)

    def test_accepted_rows(self, loaded):
        _, ds = loaded
        expected = pd.DataFrame(
            {
                "customer_id": ["C1", "C4"],
                "order_id": ["O1", "O5"],
                "ordered_at": pd.to_datetime(["2024-01-05 10:00", "2024-02-01 16:00"]).tz_localize(
                    TZ
                ),
                "amount": [100.5, -30.0],
                "quantity": pd.array([1, 2], dtype="Int64"),
                "discount": [0.0, np.nan],
                "category": ["diapers", "formula"],
            }
        ).astype(
            {
                "customer_id": "string[pyarrow]",
                "order_id": "string[pyarrow]",
                "category": "string[pyarrow]",
            }
        )
        assert_frame_equal(ds.transactions, expected)

    def test_quarantine_reasons(self, loaded):
        data, _ = loaded
        got = quarantine(data)[["source_row", "reason"]]
        expected = pd.DataFrame(
            [
                ("3", "line is an exact duplicate of row 2"),
                ("4", "customer_id is missing"),
                (
                    "5",
                    "ordered_at is not a timestamp: 'not-a-date'; amount is not a number: 'abc'; "
                    "quantity is below 1: '0'; discount is negative: '-1'",
                ),
                (
                    "6",
                    "ordered_at is before 1990-01-01: '1985-03-01'; "
                    "amount is not finite (inf): 'inf'; quantity is not a whole number: '1.5'",
                ),
                ("8", "amount is beyond ±1,000,000: '1e12'"),
                ("10", "amount is missing"),
                ("11", "order_id belongs to several customers"),
                ("12", "order_id belongs to several customers"),
                ("9", "line has 8 fields, the header has 7"),
            ],
            columns=["source_row", "reason"],
        )
        assert_frame_equal(got, expected)

    def test_rows_are_conserved(self, loaded):
        _, ds = loaded
        report = ds.reports["transactions"]
        assert (report.rows_in, report.accepted, report.quarantined) == (11, 2, 9)
        assert report.duplicates == 1
        assert report.reasons["order_id: belongs to several customers"] == 2

    def test_report_json_is_written(self, loaded):
        data, _ = loaded
        assert '"quarantined": 9' in (data / "quarantine" / "report.json").read_text()


class TestTimestamps:
    def test_naive_values_are_in_the_configured_timezone(self, tmp_path):
        write(
            tmp_path / "transactions.csv",
            "customer_id,order_id,ordered_at,amount\nC1,O1,2024-06-18 20:00,1\n",
        )
        got = load_dataset(tmp_path, Rules(timezone="Europe/Berlin")).transactions["ordered_at"]
        assert got.iloc[0] == pd.Timestamp("2024-06-18 20:00", tz="Europe/Berlin")
        assert str(got.dt.tz) == "Europe/Berlin"

    def test_offsets_are_converted(self, tmp_path):
        write(
            tmp_path / "transactions.csv",
            "customer_id,order_id,ordered_at,amount\n"
            "C1,O1,2024-06-18T12:00:00Z,1\nC2,O2,2024-06-18T12:00:00+09:00,1\n"
            "C3,O3,2024-06-18 12:00,1\n",
        )
        got = load_dataset(tmp_path).transactions["ordered_at"].dt.strftime("%Y-%m-%d %H:%M")
        assert got.tolist() == ["2024-06-18 20:00", "2024-06-18 11:00", "2024-06-18 12:00"]

    def test_parquet_naive_and_aware(self, tmp_path):
        frame = pd.DataFrame(
            {
                "customer_id": ["C1"],
                "order_id": ["O1"],
                "ordered_at": [pd.Timestamp("2024-01-01 00:00", tz="UTC")],
                "amount": [1.0],
            }
        )
        frame.to_parquet(tmp_path / "transactions.parquet")
        got = load_dataset(tmp_path).transactions["ordered_at"].iloc[0]
        assert got == pd.Timestamp("2024-01-01 08:00", tz=TZ)
        frame.assign(ordered_at=frame["ordered_at"].dt.tz_localize(None)).to_parquet(
            tmp_path / "transactions.parquet"
        )
        got = load_dataset(tmp_path).transactions["ordered_at"].iloc[0]
        assert got == pd.Timestamp("2024-01-01 00:00", tz=TZ)

    def test_local_time_in_a_dst_gap_is_quarantined(self, tmp_path):
        write(
            tmp_path / "transactions.csv",
            "customer_id,order_id,ordered_at,amount\nC1,O1,2024-03-31 02:30,1\n",
        )
        ds = load_dataset(tmp_path, Rules(timezone="Europe/Berlin"))
        assert len(ds.transactions) == 0
        assert quarantine(tmp_path)["reason"].tolist() == [
            "ordered_at does not exist in Europe/Berlin (skipped by a clock change): "
            "'2024-03-31 02:30'"
        ]

    def test_repeated_local_hour_takes_its_first_occurrence(self, tmp_path):
        write(
            tmp_path / "transactions.csv",
            "customer_id,order_id,ordered_at,amount\nC1,O1,2017-11-05 01:11:55,1\n"
            "C2,O2,2017-11-05T01:11:55-05:00,1\n",
        )
        got = load_dataset(tmp_path, Rules(timezone="America/New_York")).transactions
        assert got["ordered_at"].dt.strftime("%H:%M %z").tolist() == ["01:11 -0400", "01:11 -0500"]


class TestFiles:
    TEXT = "customer_id,order_id,ordered_at,amount,category\nC1,O1,2024-01-01,1,尿不湿\n"

    def test_bom_or_not_gives_the_same_table(self, tmp_path):
        write(tmp_path / "a" / "transactions.csv", self.TEXT, bom=True)
        write(tmp_path / "b" / "transactions.csv", self.TEXT)
        assert_frame_equal(
            load_dataset(tmp_path / "a").transactions, load_dataset(tmp_path / "b").transactions
        )
        assert load_dataset(tmp_path / "a").transactions["category"].iloc[0] == "尿不湿"

    def test_non_utf8_file_is_named_with_its_line(self, tmp_path):
        text = self.TEXT + "C2,O2,2024-01-02,2,奶粉\n"
        write(tmp_path / "transactions.csv", text, encoding="gb18030")
        with pytest.raises(
            InputError,
            match=r"transactions.csv: not valid utf-8 text \(first "
            r"bad byte on line 2\).*LTV_INGEST__ENCODING",
        ):
            load_dataset(tmp_path)
        got = load_dataset(tmp_path, encoding="gb18030").transactions["category"].tolist()
        assert got == ["尿不湿", "奶粉"]

    def test_missing_required_column_names_file_and_column(self, tmp_path):
        write(tmp_path / "transactions.csv", "customer_id,order_id,amount\nC1,O1,1\n")
        with pytest.raises(InputError) as err:
            check_dataset(tmp_path)
        assert str(err.value) == (
            f"{tmp_path / 'transactions.csv'}: required column 'ordered_at' is missing "
            "(found: customer_id, order_id, amount)"
        )

    @pytest.mark.parametrize(
        ("files", "message"),
        [
            ({}, "no transactions.csv or transactions.parquet"),
            ({"transactions.csv": b""}, "transactions.csv: file is empty"),
            ({"transactions.parquet": b"PAR1 not really"}, "not a readable Parquet file"),
            ({"transactions.csv": b"x", "transactions.parquet": b"y"}, "both"),
            ({"transactions.csv": b"customer_id,customer_id\n"}, "appears twice"),
        ],
        ids=["no-file", "empty", "corrupt-parquet", "two-files", "duplicate-header"],
    )
    def test_unusable_inputs_stop_with_one_line(self, tmp_path, files, message):
        for name, content in files.items():
            (tmp_path / name).write_bytes(content)
        with pytest.raises(InputError, match=message) as err:
            load_dataset(tmp_path)
        assert "\n" not in str(err.value)

    @pytest.mark.parametrize("table", ["transactions", "touches"])
    def test_parquet_columns_equal_after_stripping_stop_with_one_line(self, tmp_path, table):
        """``amount`` and `` amount `` are one column once stripped: named, not a traceback."""
        columns = ["customer_id", "order_id", "ordered_at", "amount", " amount "]
        if table == "touches":
            write(tmp_path / "transactions.csv", "customer_id,order_id,ordered_at,amount\n")
            columns = ["customer_id", "channel", "sent_at", "sent_at "]
        frame = pa.table([pa.array(["x"]) for _ in columns], names=columns)
        pq.write_table(frame, tmp_path / f"{table}.parquet")
        with pytest.raises(InputError) as err:
            load_dataset(tmp_path)
        assert str(err.value).endswith("appears twice") and f"{table}.parquet" in str(err.value)

    @pytest.mark.parametrize("tz", [None, "UTC"])
    def test_parquet_times_beyond_the_nanosecond_range_are_quarantined(self, tmp_path, tz):
        """Year 3000 (or 1500) in a Parquet timestamp: a reason, not a traceback."""
        times = pa.array(
            [1704153600000000, 32503680000000000, -14831769600000000, 1704067200000000]
        )
        lines = pa.table(
            {
                "customer_id": ["C1", "C2", "C3", "C4"],
                "order_id": ["O1", "O2", "O3", "O4"],
                "ordered_at": times.cast(pa.timestamp("us", tz=tz)),
                "amount": [1.0, 2.0, 3.0, 4.0],
            }
        )
        pq.write_table(lines, tmp_path / "transactions.parquet")
        ds = load_dataset(tmp_path)
        assert ds.transactions["customer_id"].tolist() == ["C1", "C4"]
        reasons = quarantine(tmp_path).set_index("source_row")["reason"]
        assert reasons.index.tolist() == ["2", "3"]
        assert all(r.startswith("ordered_at is outside 1677-09-21 to 2262-04-11") for r in reasons)

    def test_missing_directory(self, tmp_path):
        with pytest.raises(InputError, match="data directory not found"):
            load_dataset(tmp_path / "nope")

    def test_blank_lines_are_quarantined_not_lost(self, tmp_path):
        write(
            tmp_path / "transactions.csv",
            "customer_id,order_id,ordered_at,amount\nC1,O1,2024-01-01,1\n\nC2,O2,2024-01-02,2\n",
        )
        ds = load_dataset(tmp_path)
        assert (ds.reports["transactions"].rows_in, len(ds.transactions)) == (3, 2)
        assert quarantine(tmp_path)[["source_row", "reason"]].values.tolist() == [
            ["3", "line is blank"]
        ]

    def test_stale_quarantine_is_removed_when_data_is_fixed(self, tmp_path):
        write(tmp_path / "transactions.csv", "customer_id,order_id,ordered_at,amount\n,O1,x,1\n")
        load_dataset(tmp_path)
        assert (tmp_path / "quarantine" / "transactions.csv").exists()
        write(
            tmp_path / "transactions.csv",
            "customer_id,order_id,ordered_at,amount\nC,O,2024-01-01,1\n",
        )
        load_dataset(tmp_path)
        assert not (tmp_path / "quarantine" / "transactions.csv").exists()


class TestOtherTables:
    def test_transactions_alone(self, tmp_path):
        write(
            tmp_path / "transactions.csv",
            "customer_id,order_id,ordered_at,amount\nC,O,2024-01-01,1\n",
        )
        ds = load_dataset(tmp_path)
        assert ds.touches is None and ds.customers is None
        assert set(ds.reports) == {"transactions"}

    def test_touches_and_customers(self, tmp_path):
        write(
            tmp_path / "transactions.csv",
            "customer_id,order_id,ordered_at,amount\nC1,O,2024-01-01,1\n",
        )
        write(
            tmp_path / "touches.csv",
            "customer_id,channel,sent_at,campaign_id,responded_at,coupon_value\n"
            "C1,wecom,2024-01-01 10:00,K1,2024-01-01 11:00,20\n"
            "C1,sms,2024-01-02 10:00,K1,2024-01-01 09:00,\n"
            "C2,group,2024-01-03,K2,,-5\n",
        )
        write(
            tmp_path / "customers.csv",
            "customer_id,joined_at,member_tier,city\nC1,2023-12-01,gold,Hangzhou\nC2,,,\n",
        )
        ds = load_dataset(tmp_path)
        assert ds.touches["channel"].tolist() == ["wecom"]
        assert quarantine(tmp_path, "touches")["reason"].tolist() == [
            "responded_at is before sent_at",
            "coupon_value is negative: '-5'",
        ]
        city = ds.customers["city"]  # attributes pass through
        assert city.iloc[0] == "Hangzhou" and pd.isna(city.iloc[1])
        assert ds.customers["joined_at"].isna().tolist() == [False, True]


class TestIdentifiers:
    HEADER = "customer_id,order_id,ordered_at,amount,phone,Name,openid,campaign_name\n"
    ROW = "C1,O1,2024-01-01,1,13812345678,张三,oX1,spring\n"

    def test_identifier_columns_are_dropped_without_a_key(self, tmp_path):
        write(
            tmp_path / "transactions.csv",
            self.HEADER + self.ROW + ",O2,2024-01-01,1,139,李四,oX2,x\n",
        )
        ds = load_dataset(tmp_path)
        assert list(ds.transactions.columns) == [
            "customer_id",
            "order_id",
            "ordered_at",
            "amount",
            "campaign_name",
        ]
        assert ds.reports["transactions"].dropped_columns == ["phone", "Name", "openid"]
        text = (tmp_path / "quarantine" / "transactions.csv").read_text()
        assert "139" not in text and "李四" not in text  # nor in the quarantine file

    def test_identifier_columns_are_hashed_with_a_key(self, tmp_path):
        write(tmp_path / "transactions.csv", self.HEADER + self.ROW)
        ds = load_dataset(tmp_path, Rules(hmac_key=b"secret"))
        expected = hmac.new(b"secret", b"13812345678", hashlib.sha256).hexdigest()[:24]
        assert ds.transactions["phone_hmac"].tolist() == [expected]
        assert "phone" not in ds.transactions.columns

    def test_phone_numbers_as_customer_ids_need_a_key(self, tmp_path):
        write(
            tmp_path / "transactions.csv",
            "customer_id,order_id,ordered_at,amount\nC1,O1,2024-01-01,1\n13812345678,O2,2024-01-01,1\n",
        )
        with pytest.raises(
            InputError, match="customer_id' holds phone numbers .*row 3.*LTV_HMAC_KEY"
        ):
            load_dataset(tmp_path)
        write(tmp_path / "touches.csv", "customer_id,channel,sent_at\n13812345678,sms,2024-01-01\n")
        ds = load_dataset(tmp_path, Rules(hmac_key=b"k"))
        hashed = ds.transactions["customer_id"].iloc[1]
        assert hashed != "13812345678" and len(hashed) == 24
        assert ds.touches["customer_id"].iloc[0] == hashed  # same person, same key in every table
        assert ds.transactions["customer_id"].iloc[0] == "C1"


def test_formula_cells_are_neutralised():
    frame = pd.DataFrame(
        {"a": ["=1+1", "+SUM(A1)", "-2", "@x", "\tx", "\rx", "ok", None], "n": range(8)}
    )
    got = neutralise_formulas(frame)
    assert got["a"].tolist()[:7] == ["'=1+1", "'+SUM(A1)", "'-2", "'@x", "'\tx", "'\rx", "ok"]
    assert pd.isna(got["a"].iloc[7]) and got["n"].tolist() == list(range(8))


def test_quarantine_file_is_spreadsheet_safe(tmp_path):
    write(
        tmp_path / "transactions.csv",
        'customer_id,order_id,ordered_at,amount\n=HYPERLINK("http://x"),O1,bad,1\n',
    )
    load_dataset(tmp_path)
    assert quarantine(tmp_path)["customer_id"].tolist() == ['\'=HYPERLINK("http://x")']


def test_duplicates_with_empty_cells_are_found(tmp_path):
    write(
        tmp_path / "transactions.csv",
        "customer_id,order_id,ordered_at,amount,category,sku\n"
        "C1,O1,2024-01-01,5,,\nC1,O1,2024-01-01,5,,\nC1,O1,2024-01-01,5,,x\nC1,O1,2024-01-01,5,,\n",
    )
    ds = load_dataset(tmp_path)
    assert ds.reports["transactions"].duplicates == 2
    assert quarantine(tmp_path)[["source_row", "reason"]].values.tolist() == [
        ["3", "line is an exact duplicate of row 2"],
        ["5", "line is an exact duplicate of row 2"],
    ]
    assert ds.transactions["sku"].tolist()[1] == "x"


def test_number_and_timestamp_layouts(tmp_path):
    write(
        tmp_path / "transactions.csv",
        "customer_id,order_id,ordered_at,amount\n"
        "C1,O1,2024/1/5 9:30,1e400\n"
        "C2,O2, 2024-01-05 10:00 ,nan\n"
        "C3,O3,2024-13-45 25:61, 12.5 \n"
        "C4,O4,05 Jan 2024,+4\n"
        "C5,O5,2024-01-05T10:00:00.250,.5\n",
    )
    ds = load_dataset(tmp_path)
    assert quarantine(tmp_path)["reason"].tolist() == [
        "amount is not finite (inf): '1e400'",
        "amount is missing",
        "ordered_at is not a timestamp: '2024-13-45 25:61'",
    ]
    assert ds.transactions["amount"].tolist() == [4.0, 0.5]
    assert ds.transactions["ordered_at"].dt.strftime("%Y-%m-%d %H:%M:%S.%f").tolist() == [
        "2024-01-05 00:00:00.000000",
        "2024-01-05 10:00:00.250000",
    ]


def test_loaded_tables_are_freed_without_a_garbage_collection(tmp_path):
    """No reference cycle keeps a validated table alive (pandera's accessor points back to the
    frame): the 20M lines of a big scoring are freed when the flow lets go of them."""
    write(tmp_path / "transactions.csv", GOLDEN)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        ds = load_dataset(tmp_path)
        alive = weakref.ref(ds.transactions)
        del ds
        assert alive() is None
    finally:
        if was_enabled:
            gc.enable()
