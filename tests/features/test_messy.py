"""Injected defects: validation catches exactly them, and accepts everything else unchanged."""

import shutil

import pandas as pd
import pytest

from features import load_dataset
from features.messy import DUPLICATE, make_messy, make_messy_files
from features.synthetic import generate_to


def test_manifest_points_at_each_defect():
    clean = pd.DataFrame(
        {
            "customer_id": [f"C{i}" for i in range(40)],
            "order_id": [f"O{i}" for i in range(40)],
            "ordered_at": pd.date_range("2024-01-01", periods=40, freq="D"),
            "amount": [float(i) for i in range(40)],
        }
    )
    messy, manifest = make_messy(clean, "transactions", fraction=0.25, seed=3)
    assert len(manifest) == 10
    copies = manifest[manifest["defect"] == DUPLICATE]
    assert len(messy) == 40 + len(copies)
    for row in copies["row"]:
        assert messy.iloc[row].tolist() == messy.iloc[row - 1].tolist()
    for row, column, defect in manifest[manifest["defect"] != DUPLICATE][
        ["row", "column", "defect"]
    ].itertuples(index=False):
        assert defect == f"{column} = {messy.at[row, column]!r}"
    # The other rows are the clean rows, untouched and in their order.
    n_spoiled = len(manifest) - len(copies)
    untouched = messy.drop(index=list(manifest["row"]))
    position = untouched["customer_id"].map({c: i for i, c in enumerate(clean["customer_id"])})
    assert len(untouched) == 40 - n_spoiled
    assert position.notna().all() and position.is_monotonic_increasing and position.is_unique
    for i, row in zip(position, untouched.itertuples(index=False), strict=True):
        assert row.amount == str(clean.at[i, "amount"])


def test_fraction_is_checked():
    with pytest.raises(ValueError, match="between 0 and 1"):
        make_messy(pd.DataFrame({"customer_id": ["C1"]}), "customers", fraction=1.5, seed=1)


def test_validation_quarantines_exactly_the_injected_rows(tmp_path):
    clean_dir, messy_dir = tmp_path / "clean", tmp_path / "messy"
    generate_to(clean_dir, 800, seed=5, fmt="csv")
    shutil.copytree(clean_dir, messy_dir)
    manifest = pd.read_csv(make_messy_files(messy_dir, fraction=0.01, seed=5))

    clean = load_dataset(clean_dir)
    messy = load_dataset(messy_dir)
    assert clean.quarantined == 0
    assert messy.quarantined == len(manifest) > 0
    for table in ("transactions", "touches", "customers"):
        expected = manifest.loc[manifest["table"] == table]
        got = pd.read_csv(messy_dir / "quarantine" / f"{table}.csv", dtype=str)
        assert sorted(got["source_row"].astype(int)) == sorted(expected["line"]), table
        for reason, defect in zip(
            got.sort_values("source_row", key=lambda s: s.astype(int))["reason"],
            expected.sort_values("line")["column"],
            strict=True,
        ):
            assert reason.startswith(defect), (reason, defect)
    # What is accepted is exactly the clean data minus the spoiled rows.
    spoiled = manifest[(manifest["table"] == "transactions") & (manifest["defect"] != DUPLICATE)]
    assert len(messy.transactions) == len(clean.transactions) - len(spoiled)
    kept = clean.transactions.merge(messy.transactions, how="inner")
    assert len(kept) == len(messy.transactions)


def test_injected_defects_are_reported_by_rule(tmp_path):
    generate_to(tmp_path, 600, seed=9, fmt="csv")
    manifest = pd.read_csv(make_messy_files(tmp_path, fraction=0.02, seed=9))
    report = load_dataset(tmp_path).reports["transactions"]
    injected = manifest[manifest["table"] == "transactions"]
    assert report.duplicates == (injected["defect"] == DUPLICATE).sum()
    assert report.quarantined == len(injected)
    assert report.rows_in == report.accepted + len(injected)
