"""The cache's parts: the Parquet serializer (no pickle), the key policy, pruning."""

from __future__ import annotations

import datetime
import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from flows.caching import Fingerprint, FrameSerializer, WholeFiles, code_digest, digest_of, prune
from models.estimators import Calibrator, Classifier


def _frame() -> pd.DataFrame:
    """Every kind of column the flows' frames hold."""
    n = 6
    ids = [f"C{i}" for i in range(n)]
    return pd.DataFrame(
        {
            "arrow_text": pd.array(ids, dtype="string[pyarrow]"),
            "python_text": pd.array([*ids[:-1], None], dtype="string[python]"),
            "objects": ["a", "b", None, "d", "e", "f"],
            "category": pd.Categorical(ids).set_categories(pd.Index(ids, dtype="string[pyarrow]")),
            "plain_category": pd.Categorical(["x", "y", "x", "y", "x", None]),
            "stamp": pd.date_range("2026-01-01", periods=n, freq="h", tz="Asia/Shanghai"),
            "naive": pd.date_range("2026-01-01", periods=n, freq="D"),
            "count": pd.array([1, None, 3, 4, 5, 6], dtype="Int64"),
            "flag": [True, False] * 3,
            "value": [0.1, np.nan, -3.5, 1e300, 0.0, 7.25],
            "date": [datetime.date(2026, 1, d) for d in range(1, n + 1)],
        }
    )


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert [repr(d) for d in a.dtypes] == [repr(d) for d in b.dtypes]
    assert repr(a.index.dtype) == repr(b.index.dtype)


def test_a_frame_is_stored_as_plain_parquet_and_comes_back_exactly(tmp_path):
    serializer = FrameSerializer()
    frame = _frame()
    blob = serializer.dumps(frame)
    assert blob[:4] == b"PAR1"  # any Parquet reader opens a cached frame
    (tmp_path / "f.parquet").write_bytes(blob)
    assert pd.read_parquet(tmp_path / "f.parquet")["value"].tolist()[2] == -3.5
    _same(serializer.loads(blob), frame)
    indexed = frame.set_index(pd.Index(frame["arrow_text"], name="customer_id"))
    _same(serializer.loads(serializer.dumps(indexed)), indexed)
    empty = frame.iloc[:0]
    _same(serializer.loads(serializer.dumps(empty)), empty)


def test_composite_results_come_back_with_boosters_arrays_and_project_dataclasses():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    y = (x[:, 0] + rng.normal(size=400) > 0).astype(int)
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "deterministic": True, "num_threads": 1},
        lgb.Dataset(x, y),
        num_boost_round=5,
    )
    model = Classifier(booster, Calibrator(x=[0.0, 1.0], y=[0.1, 0.9]), ["a", "b", "c"])
    value = (
        _frame(),
        np.arange(12, dtype=np.float32).reshape(3, 4),
        {"n": np.int64(3), "share": np.float64(0.5), "label": "x", 4: [None, True]},
        [datetime.date(2026, 7, 1), pd.Timestamp("2026-07-01 06:00", tz="UTC"), Path("/a/b")],
        model,
        pd.Series([1.5, None], name="p_alive", index=pd.Index(["c1", "c2"], dtype="string")),
    )
    serializer = FrameSerializer()
    back = serializer.loads(serializer.dumps(value))
    assert isinstance(back, tuple) and len(back) == len(value)
    _same(back[0], value[0])
    np.testing.assert_array_equal(back[1], value[1])
    assert back[1].dtype == np.float32
    assert back[2] == {"n": 3, "share": 0.5, "label": "x", 4: [None, True]}
    assert back[3] == value[3]
    assert isinstance(back[4], Classifier) and back[4].features == ["a", "b", "c"]
    assert back[4].booster.model_to_string() == booster.model_to_string()
    np.testing.assert_array_equal(back[4].booster.predict(x), booster.predict(x))
    pd.testing.assert_series_equal(back[5], value[5])


def test_values_that_would_need_pickle_are_refused_both_ways():
    serializer = FrameSerializer()

    @dataclass
    class Foreign:  # a dataclass of the tests, not of features/models/flows
        x: int

    for value in (object(), Foreign(1), np.array([object()]), {1, 2}):
        with pytest.raises(TypeError, match="cannot cache"):
            serializer.dumps(value)
    forged = io.BytesIO()
    with zipfile.ZipFile(forged, "w") as archive:
        tree = {"t": "dataclass", "type": "subprocess:Popen", "fields": {"args": "true"}}
        archive.writestr("value.json", json.dumps(tree))
    with pytest.raises(ValueError, match="refusing to rebuild subprocess:Popen"):
        serializer.loads(forged.getvalue())
    with pytest.raises(ValueError, match="not a cached ltv result"):
        serializer.loads(b"\x80\x04\x95pickled")


def _key(policy: Fingerprint, **inputs) -> str | None:
    def task_fn():  # the function a task wraps: its module and name enter the key
        return None

    task = SimpleNamespace(name="build-features", fn=task_fn)
    return policy.compute_key(SimpleNamespace(task=task), inputs, {})


def test_the_key_follows_the_named_inputs_and_nothing_else():
    policy = Fingerprint(inputs=("as_of", "lineage"))
    day = datetime.date(2026, 7, 1)
    key = _key(policy, as_of=day, lineage="data-1", dataset=object())
    assert key == _key(policy, as_of=day, lineage="data-1", dataset=object())
    assert key != _key(policy, as_of=day, lineage="data-2", dataset=object())
    assert key != _key(policy, as_of=day + datetime.timedelta(days=1), lineage="data-1")
    assert key is not None and key.startswith("build-features-")
    assert len(code_digest()) == 64
    # Secrets enter a key only as their digest.
    assert "s3cret" not in json.dumps(digest_of(b"s3cret"))
    assert digest_of(b"s3cret") != digest_of(b"other")
    with pytest.raises(TypeError, match="pass a lineage string"):
        digest_of(pd.DataFrame())

    def other_fn():
        return None

    other = SimpleNamespace(task=SimpleNamespace(name="build-features", fn=other_fn))
    assert policy.compute_key(other, {"as_of": day, "lineage": "data-1"}, {}) != key


def test_a_key_whose_value_cannot_be_used_is_dropped_so_the_task_runs_again(tmp_path):
    keys, results = tmp_path / "cache" / "keys", tmp_path / "cache" / "results"
    keys.mkdir(parents=True)
    results.mkdir()
    policy = Fingerprint(inputs=("lineage",), key_storage=WholeFiles(basepath=str(keys)))
    key = _key(policy, lineage="x")
    assert key is not None

    def record(serializer: str, value: Path) -> None:
        text = {"storage_key": str(value), "serializer": {"type": serializer}}
        (keys / key).write_text(json.dumps(text))

    (results / key).write_bytes(b"PAR1")
    record("ltv-frames", results / key)
    assert _key(policy, lineage="x") == key and (keys / key).exists()  # usable: kept
    for serializer, value in [
        ("pickle", results / key),  # would be unpickled
        ("ltv-frames", tmp_path / "elsewhere" / key),  # a moved work directory
        ("ltv-frames", results / "gone"),  # the value was removed
    ]:
        record(serializer, value)
        _key(policy, lineage="x")
        assert not (keys / key).exists(), serializer


def test_writes_are_whole_and_pruning_takes_old_entries_with_their_values(tmp_path):
    root = tmp_path / "cache"
    keys, results = (
        WholeFiles(basepath=str(root / "keys")),
        WholeFiles(basepath=str(root / "results")),
    )
    for name in ("old", "new"):
        results.write_path(name, b"value")
        keys.write_path(name, b"record")
    results.write_path("orphan", b"value")  # a writer killed before its key
    (root / "results" / ".x.tmp").write_bytes(b"half")  # a writer killed mid-write
    assert sorted(p.name for p in (root / "keys").iterdir()) == ["new", "old"]
    now = 1_900_000_000.0
    for path in [root / "keys" / "old", root / "results" / "old", root / "results" / "orphan"]:
        os.utime(path, (now - 20 * 86_400, now - 20 * 86_400))
    os.utime(root / "results" / ".x.tmp", (now - 7200, now - 7200))
    for path in [root / "keys" / "new", root / "results" / "new"]:
        os.utime(path, (now - 86_400, now - 86_400))
    removed = prune(tmp_path, keep_days=14, now=now)
    assert sorted(removed) == [".x.tmp", "old", "orphan"]
    assert sorted(p.name for p in (root / "keys").iterdir()) == ["new"]
    assert sorted(p.name for p in (root / "results").iterdir()) == ["new"]
    assert prune(tmp_path / "nothing-here", keep_days=14) == []
