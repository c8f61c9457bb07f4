"""Feast over the feature snapshots: a real repository in a temp directory (R8, R9, R10).

Snapshots are built by the flow's own task functions from synthetic data; the store is the real
Feast 0.67 with the SQLite online store and the DuckDB offline store of feature_store.yaml.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from features import load_dataset
from features.families import FAMILIES, kinds
from features.synthetic import generate_to
from flows import feature_store
from flows.features import build_snapshot, snapshot_path

TZ = ZoneInfo("Asia/Shanghai")
DATES = [datetime.date(2026, 4, 1), datetime.date(2026, 5, 1), datetime.date(2026, 5, 6)]
FEATURES = kinds()
ROOT = Path(__file__).resolve().parents[2]


def midnight(day: datetime.date) -> pd.Timestamp:
    return pd.Timestamp(datetime.datetime.combine(day, datetime.time(0), TZ))


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A work directory with three snapshots written and the declarations applied."""
    work = tmp_path_factory.mktemp("feast")
    generate_to(work / "data", 300, seed=11)
    dataset = load_dataset(work / "data")
    snapshots = {}
    for day in DATES:
        snapshot = build_snapshot.fn(dataset, day, lineage="")
        snapshot_path(work, day).parent.mkdir(parents=True, exist_ok=True)
        snapshot.to_parquet(snapshot_path(work, day), index=False)
        snapshots[day] = snapshot.set_index("customer_id")
    store = feature_store.open_store(work)
    views = feature_store.apply_definitions(store, work)
    return work, store, views, snapshots


def assert_same(got, expected, name: str) -> None:
    """One feature value: ints and text exactly, floats to 1e-12, null where null."""
    if pd.isna(expected):
        assert got is None or pd.isna(got), (name, got, expected)
    elif FEATURES[name] == "float":
        assert got == pytest.approx(float(expected), rel=1e-12, abs=1e-12), name
    else:
        assert got == expected, (name, got, expected)


def online_values(store, customer: str, at: pd.Timestamp) -> dict:
    views = feature_store.lookup(store, customer, at.to_pydatetime())
    return {k: v for view in views for k, v in view.values.items()}


def test_views_and_services_follow_the_families(repo):
    _, store, views, _ = repo
    assert views == [f.view for f in FAMILIES]
    for family in FAMILIES:
        view = store.get_feature_view(family.view)
        assert [f.name for f in view.features] == [name for name, _ in family.columns]
        assert view.ttl == datetime.timedelta(days=7)
    service = store.get_feature_service("churn_model_v1")
    assert [p.name for p in service.feature_view_projections] == views


def test_training_frame_has_one_row_per_requested_row(repo):
    """R8: duplicates, unknown customers and cutoffs between snapshots all come back, in order."""
    _, store, _, snaps = repo
    ids = list(snaps[DATES[1]].index[:4])
    rows = [
        (ids[0], midnight(DATES[1])),
        (ids[1], midnight(DATES[0])),
        (ids[0], midnight(DATES[1])),  # an exact duplicate
        (ids[2], midnight(DATES[1]) + pd.Timedelta(days=2)),  # between snapshots -> May 1
        (ids[3], midnight(DATES[2])),
        ("nobody", midnight(DATES[2])),
        (ids[1], midnight(DATES[2]) + pd.Timedelta(days=8)),  # past the TTL -> nulls
        (ids[0], midnight(DATES[1])),
    ]
    entities = pd.DataFrame(rows, columns=["customer_id", "event_timestamp"])
    entities.index = pd.RangeIndex(100, 100 + len(rows))
    got = feature_store.historical_features(store, entities, "churn_model_v1")
    assert len(got) == len(rows)
    assert got.index.tolist() == entities.index.tolist()
    assert got["customer_id"].tolist() == [r[0] for r in rows]
    picked = [DATES[1], DATES[0], DATES[1], DATES[1], DATES[2], None, None, DATES[1]]
    for (customer, _), day, (_, row) in zip(rows, picked, got.iterrows(), strict=True):
        for name in FEATURES:
            expected = (
                snaps[day].loc[customer, name] if day and customer in snaps[day].index else None
            )
            assert_same(row[name], expected, name)


def test_a_cutoff_never_sees_a_later_snapshot(repo):
    _, store, _, snaps = repo
    customer = snaps[DATES[0]].index[0]
    cutoff = midnight(DATES[1]) - pd.Timedelta(seconds=1)  # one second before May 1
    entities = pd.DataFrame({"customer_id": [customer], "event_timestamp": [cutoff]})
    got = feature_store.historical_features(store, entities, "churn_model_v1")
    # April 1 is 30 days earlier than the cutoff: older than the TTL, so nothing at all.
    assert got.drop(columns=["customer_id", "event_timestamp"]).isna().all(axis=None)


def test_online_equals_offline_and_older_backfill_never_wins(repo):
    """R9: after the newest snapshot, an older one is refused; online == offline values."""
    _, store, _, snaps = repo
    newest, older = DATES[2], DATES[0]
    first = feature_store.write_online(store, snaps[newest].reset_index())
    assert first.written == [f.view for f in FAMILIES] and not first.skipped
    again = feature_store.write_online(store, snaps[older].reset_index())
    assert not again.written and set(again.skipped) == {f.view for f in FAMILIES}
    entities = pd.DataFrame(
        {"customer_id": list(snaps[newest].index[:25]), "event_timestamp": midnight(newest)}
    )
    offline = feature_store.historical_features(store, entities, "churn_model_v1")
    changed = 0
    for _, row in offline.iterrows():
        online = online_values(store, row["customer_id"], midnight(newest))
        for name in FEATURES:
            assert_same(online[name], snaps[newest].loc[row["customer_id"], name], name)
            assert_same(row[name], snaps[newest].loc[row["customer_id"], name], name)
        known_before = row["customer_id"] in snaps[older].index
        old = snaps[older].loc[row["customer_id"], "tenure_days"] if known_before else None
        changed += old is None or pd.isna(old) or old != online["tenure_days"]
    assert changed == 25  # the refused backfill would have changed every one of them


def test_stale_values_are_not_served_as_current(repo):
    """R10: values older than the view's TTL come back empty from the lookup."""
    _, store, _, snaps = repo
    customer = snaps[DATES[2]].index[0]
    feature_store.write_online(store, snaps[DATES[2]].reset_index())
    fresh = feature_store.lookup(
        store, customer, (midnight(DATES[2]) + pd.Timedelta(days=6)).to_pydatetime()
    )
    stale = feature_store.lookup(
        store, customer, (midnight(DATES[2]) + pd.Timedelta(days=8)).to_pydatetime()
    )
    before = feature_store.lookup(
        store, customer, (midnight(DATES[2]) - pd.Timedelta(days=1)).to_pydatetime()
    )
    assert not any(v.current for v in before)  # values from after --at are not "current" then
    assert all(v.current for v in fresh)
    assert fresh[0].values["orders_total"] == snaps[DATES[2]].loc[customer, "orders_total"]
    assert not any(v.current for v in stale)
    assert all(value is None for v in stale for value in v.values.values())
    assert {v.as_of for v in stale} == {midnight(DATES[2]).tz_convert("UTC").to_pydatetime()}


def test_the_feast_cli_reads_the_repository(repo, tmp_path):
    """ML engineers can run ``feast -c feature_repo apply`` from the project root."""
    work = tmp_path / "cli"
    env = {**os.environ, "LTV_WORKDIR": str(work)}
    (work / "feast").mkdir(parents=True)
    feast = str(Path(sys.executable).with_name("feast"))
    applied = subprocess.run(
        [feast, "-c", "feature_repo", "apply"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert applied.returncode == 0, applied.stderr[-2000:]
    listed = subprocess.run(
        [feast, "-c", "feature_repo", "feature-services", "list"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert listed.returncode == 0, listed.stderr[-2000:]
    for name in ("churn_model_v1", "next_purchase_model_v1", "value_model_v1"):
        assert name in listed.stdout


def test_production_profile_takes_every_secret_from_the_environment(monkeypatch):
    import yaml
    from feast import RepoConfig

    from feature_repo import REPO_DIR

    text = (REPO_DIR / "feature_store.prod.yaml").read_text()
    names = ["USER", "PASSWORD", "HOST", "PORT", "DB"]
    env = {f"LTV_FEAST_PG_{n}": f"pg-{n.lower()}" for n in names} | {
        "LTV_REDIS_HOST": "redis-host",
        "LTV_REDIS_PORT": "6380",
        "LTV_REDIS_PASSWORD": "redis-secret",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    config = RepoConfig(**yaml.safe_load(os.path.expandvars(text)))
    assert config.online_store.type == "redis"
    assert "redis-secret" in config.online_store.connection_string
    assert config.registry.registry_type == "sql"
    assert config.registry.path == "postgresql+psycopg://pg-user:pg-password@pg-host:pg-port/pg-db"
    # Nothing secret is written in the file itself: every credential is a ${VAR}.
    assert "password=${LTV_REDIS_PASSWORD}" in text and "${LTV_FEAST_PG_PASSWORD}@" in text
