"""The whole pipeline with ``LTV_ENV=prod`` against real servers (``infra/loopback.sh``).

One ``ltv demo`` (generate, validate, features, online write, training, scoring, lookup) runs
against Postgres (MLflow backend, Feast registry), Redis (Feast online store) and the MLflow
server with basic auth; the checks then read each server directly.
"""

from __future__ import annotations

import base64
import datetime
import math
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

AS_OF = "2026-07-01"
CUSTOMERS = 800
MODELS = ["ltv-churn", "ltv-next-purchase", "ltv-value"]


@pytest.fixture(scope="module")
def demo_run(prod_env, ltv, tmp_path_factory):
    """``ltv demo`` in the production profile; its work directory and start time (ms)."""
    import psycopg

    with psycopg.connect(prod_env["LTV_INFRA_MLFLOW_DB"]) as conn:
        row = conn.execute("SELECT (extract(epoch FROM now()) * 1000)::bigint").fetchone()
    assert row is not None
    started_ms = int(row[0])
    work = tmp_path_factory.mktemp("prod") / "work"
    began = time.monotonic()
    # Four monthly cutoffs keep training small; everything else is the demo as shipped.
    env = prod_env | {"LTV_TRAIN__CUTOFF_MONTHS": "4"}
    done = ltv("demo", "--customers", str(CUSTOMERS), "--workdir", str(work), env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    seconds = time.monotonic() - began
    for secret in ("MLFLOW_TRACKING_PASSWORD", "LTV_REDIS_PASSWORD", "LTV_FEAST_PG_PASSWORD"):
        assert prod_env[secret] not in done.stdout + done.stderr, f"{secret} printed"
    assert f"MLflow UI: {prod_env['LTV_MLFLOW__TRACKING_URI']}" in done.stdout
    return work, started_ms, seconds


@pytest.fixture
def prod_environ(prod_env, monkeypatch):
    """This process in the production profile (for Feast and MLflow clients used in-process)."""
    from flows.settings import get_settings

    for name, value in prod_env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield prod_env
    get_settings.cache_clear()


def _snapshot(work: Path) -> pd.DataFrame:
    return pd.read_parquet(work / "features" / "customer_features" / f"{AS_OF}.parquet")


def _same(online: object, offline: object) -> bool:
    if offline is None or (isinstance(offline, float) and math.isnan(offline)):
        return online is None or (isinstance(online, float) and math.isnan(online))
    if isinstance(offline, float):
        return isinstance(online, float) and math.isclose(online, offline, rel_tol=1e-6)
    return bool(online == offline)


def _redis_hash(env: dict[str, str], customer_id: str) -> tuple[object, bytes]:
    """The Redis client and the key under which Feast keeps ``customer_id``'s values."""
    import redis
    from feast.infra.online_stores.helpers import _redis_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    client = redis.Redis(
        host=env["LTV_REDIS_HOST"],
        port=int(env["LTV_REDIS_PORT"]),
        password=env["LTV_REDIS_PASSWORD"],
    )
    key = EntityKey(join_keys=["customer_id"], entity_values=[Value(string_val=customer_id)])
    return client, _redis_key("ltv", key, 3)


def test_online_lookups_are_served_from_redis_and_equal_the_snapshot(demo_run, prod_environ, ltv):
    from feast.infra.online_stores.helpers import _mmh3
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.type_map import feast_value_type_to_python_type

    from flows import feature_store

    work, _, _ = demo_run
    snapshot = _snapshot(work).set_index("customer_id")
    customer = str(snapshot["spend_365d"].idxmax())
    at = datetime.datetime(2026, 7, 1, tzinfo=datetime.UTC)

    # The CLI verb, in the profile.
    shown = ltv("lookup", customer, "--at", AS_OF, "--workdir", str(work), env=prod_environ)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert customer in shown.stdout and "spend_365d" in shown.stdout

    # Redis itself holds the customer's hash, with the snapshot's values.
    client, key = _redis_hash(prod_environ, customer)
    stored = client.hgetall(key)  # type: ignore[attr-defined]
    store = feature_store.open_store(work, "prod")
    assert store.config.online_store.type == "redis"
    assert store.config.registry.registry_type == "sql"
    views = store.list_feature_views()
    compared = 0
    for view in views:
        if f"_ts:{view.name}".encode() not in stored:
            continue  # a view with no value at all this date (skipped by the online write)
        for feature in view.features:
            raw = stored[_mmh3(f"{view.name}:{feature.name}")]
            value = feast_value_type_to_python_type(Value.FromString(raw))
            assert _same(value, snapshot.at[customer, feature.name]), (view.name, feature.name)
            compared += 1
    assert compared >= 20

    # The product's lookup returns the same values, and they come from Redis: once the
    # customer's hash is gone, nothing is served.
    served = feature_store.lookup(store, customer, at)
    current = [v for v in served if v.current]
    assert current and all(f"_ts:{v.view}".encode() in stored for v in current)
    for view in current:
        for name, value in view.values.items():
            assert _same(value, snapshot.at[customer, name]), (view.view, name)
    client.delete(key)  # type: ignore[attr-defined]
    assert not any(v.current for v in feature_store.lookup(store, customer, at))


def test_runs_and_registered_models_are_in_postgres(demo_run, prod_env):
    import psycopg

    work, started_ms, _ = demo_run
    with psycopg.connect(prod_env["LTV_INFRA_MLFLOW_DB"]) as conn:
        runs = conn.execute(
            "SELECT r.run_uuid, r.status, e.name, e.artifact_location FROM runs r "
            "JOIN experiments e USING (experiment_id) WHERE r.start_time >= %s",
            (started_ms,),
        ).fetchall()
        run_ids = [r[0] for r in runs]
        versions = conn.execute(
            "SELECT name, version FROM model_versions WHERE run_id = ANY(%s)", (run_ids,)
        ).fetchall()
        registered = {
            r[0]
            for r in conn.execute(
                "SELECT name FROM registered_models WHERE name = ANY(%s)", (MODELS,)
            )
        }
    assert len(runs) == 3 and {r[1] for r in runs} == {"FINISHED"}
    assert {r[2] for r in runs} == set(MODELS)
    # Artifacts went through the server (proxied storage), not to a local path of the client.
    assert all(str(r[3]).startswith("mlflow-artifacts:") for r in runs)
    assert {v[0] for v in versions} == set(MODELS) == registered
    # Scoring used champions that are registered versions in Postgres.
    scored = pd.read_parquet(work / "scores" / f"as_of={AS_OF}" / "scored_customers.parquet")
    labels = {part for label in scored["model_version"].unique() for part in label.split("|")}
    with psycopg.connect(prod_env["LTV_INFRA_MLFLOW_DB"]) as conn:
        for label in labels:
            name, version = label.split(":")
            found = conn.execute(
                "SELECT 1 FROM model_versions WHERE name = %s AND version = %s",
                (name, int(version)),
            ).fetchone()
            assert found, label


def test_mlflow_server_refuses_requests_without_credentials(prod_env, unauthenticated_status):
    url = prod_env["LTV_MLFLOW__TRACKING_URI"]
    assert unauthenticated_status(url) == 401
    user = prod_env["MLFLOW_TRACKING_USERNAME"]
    token = base64.b64encode(f"{user}:{prod_env['MLFLOW_TRACKING_PASSWORD']}".encode()).decode()
    request = urllib.request.Request(
        f"{url}/api/2.0/mlflow/experiments/search?max_results=1",
        headers={"Authorization": f"Basic {token}"},
    )
    with urllib.request.urlopen(request) as answer:
        assert answer.status == 200
    wrong = base64.b64encode(f"{user}:password1234".encode()).decode()  # MLflow's old default
    request.add_header("Authorization", f"Basic {wrong}")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request)
    assert refused.value.code == 401
