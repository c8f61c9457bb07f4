"""The spreadsheet-safe rule (OWASP CSV injection) on pandas frames and Arrow tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from features.io import neutralise_formulas, spreadsheet_safe_table

# --------------------------------------------------------------------------------------------
# Spreadsheet safety
# --------------------------------------------------------------------------------------------


class TestSpreadsheetSafe:
    @pytest.mark.parametrize(
        "text",
        ["=cmd|' /C calc'!A0", "+1", "-2+3", "@SUM(A1)", "\tx", "\rx"],
        ids=["equals", "plus", "minus", "at", "tab", "carriage-return"],
    )
    @pytest.mark.parametrize("dtype", ["object", "string", "category"])
    def test_formula_cells_get_a_quote(self, text, dtype):
        frame = pd.DataFrame({"note": pd.Series([text, "hello"], dtype=dtype)})
        out = neutralise_formulas(frame)
        assert out["note"].tolist() == ["'" + text, "hello"]
        if dtype == "category":
            assert isinstance(out["note"].dtype, pd.CategoricalDtype)
        else:
            assert out["note"].dtype == frame["note"].dtype
        assert frame["note"].tolist() == [text, "hello"]  # the input is not modified

    def test_numbers_nulls_and_plain_text_stay(self):
        frame = pd.DataFrame(
            {
                "customer_id": ["C1", "C2", None, "C4"],
                "mixed": ["=1+1", 5, None, np.nan],
                "spend": [-2.5, 3.0, np.nan, 0.0],
                "orders": [-1, 2, 3, 4],
                "note": pd.array(["ok", pd.NA, "-x", "fine"], dtype="string"),
            },
            index=[10, 11, 12, 13],
        )
        out = neutralise_formulas(frame)
        assert out["customer_id"].tolist() == ["C1", "C2", None, "C4"]
        assert out["mixed"].iloc[0] == "'=1+1"
        assert out["mixed"].iloc[1] == 5 and isinstance(out["mixed"].iloc[1], int)
        assert out["mixed"].iloc[2] is None and np.isnan(out["mixed"].iloc[3])
        pd.testing.assert_series_equal(out["spend"], frame["spend"])
        pd.testing.assert_series_equal(out["orders"], frame["orders"])
        assert out["note"].iloc[1] is pd.NA and out["note"].iloc[2] == "'-x"
        assert list(out.index) == [10, 11, 12, 13] and list(out.columns) == list(frame.columns)

    def test_categories_that_collide_after_quoting(self):
        frame = pd.DataFrame({"c": pd.Categorical(["=a", "'=a", "b"])})
        out = neutralise_formulas(frame)
        assert out["c"].tolist() == ["'=a", "'=a", "b"]
        assert isinstance(out["c"].dtype, pd.CategoricalDtype)

    def test_object_column_without_text(self):
        frame = pd.DataFrame({"x": pd.Series([1, 2, None], dtype=object)})
        pd.testing.assert_frame_equal(neutralise_formulas(frame), frame)


def test_the_arrow_version_neutralises_exactly_the_same_cells():
    cells = ["=x", "ok", None, "+1", "-2", "@s", "\tt", "\rr", "'=q", "a=b", ""]
    frame = pd.DataFrame(
        {
            "arrow": pd.array(cells, dtype="string[pyarrow]"),
            "python": cells,
            "category": pd.Categorical(cells),
            "number": np.arange(len(cells), dtype=float),
        }
    )
    got = spreadsheet_safe_table(pa.Table.from_pandas(frame, preserve_index=False)).to_pandas()
    expected = neutralise_formulas(frame)
    for column in ("arrow", "python", "category"):
        want = [None if pd.isna(v) else v for v in expected[column].astype(object)]
        assert got[column].tolist() == want, column
    assert got["number"].tolist() == frame["number"].tolist()
