"""``features.codes``: text columns to integer codes, through runs of equal values or not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from features.codes import arrow_text, encode, lookup, run_starts


def _ids(n: int, *, grouped: bool, seed: int = 0) -> pd.Series:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, n // 20 + 1, n)
    if grouped:
        ids.sort()
    text = pd.Series([f"id{i}" for i in ids], dtype="string[pyarrow]")
    text[rng.random(n) < 0.02] = pd.NA
    return text


@pytest.mark.parametrize("grouped", [True, False])
def test_encode_gives_first_appearance_codes_and_null_last(grouped):
    a, b = _ids(5_000, grouped=grouped), _ids(3_000, grouped=grouped, seed=1)
    assert (run_starts(arrow_text(a)) is not None) == grouped
    (ca, cb), dictionary = encode([arrow_text(a), arrow_text(b)])
    every = pd.concat([a, b], ignore_index=True)
    first_seen = pd.unique(every.dropna())
    assert dictionary.to_pylist() == list(first_seen)
    decoded = np.array(dictionary.to_pylist() + [None], dtype=object)[np.concatenate([ca, cb])]
    assert decoded.tolist() == [None if pd.isna(v) else v for v in every]


@pytest.mark.parametrize("grouped", [True, False])
def test_lookup_finds_positions_and_nan_for_absent_or_null(grouped):
    ids = _ids(4_000, grouped=grouped)
    known = pa.array([f"id{i}" for i in range(0, 300, 2)], pa.large_string())
    got = lookup(arrow_text(ids), known)
    position = {v: float(i) for i, v in enumerate(known.to_pylist())}
    expected = [np.nan if pd.isna(v) else position.get(v, np.nan) for v in ids]
    np.testing.assert_array_equal(got, np.array(expected))
    assert np.isnan(got).any() and (~np.isnan(got)).any()


def test_short_or_empty_columns_are_encoded_value_by_value():
    assert run_starts(arrow_text(pd.Series(["a"] * 100))) is None  # too short for runs
    (code,), dictionary = encode([arrow_text(pd.Series([], dtype="string"))])
    assert len(code) == 0 and len(dictionary) == 0
    assert len(lookup(arrow_text(pd.Series([], dtype="string")), pa.array(["a"]))) == 0
