"""``infra/compose.yaml`` cannot run here (no Docker): its structure and secrets are checked."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest
import yaml

from flows.settings import profile_variables

INFRA = Path(__file__).resolve().parents[2] / "infra"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|_KEY|AUTH_STRING|ACCESS_KEY", re.IGNORECASE)
REQUIRED = re.compile(r"^\$\{(\w+):\?[^}]*\}$")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((INFRA / "compose.yaml").read_text())


def _strings(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node


def test_every_server_of_the_profile_is_there(compose):
    assert set(compose["services"]) == {
        "postgres",
        "redis",
        "minio",
        "minio-init",
        "mlflow",
        "prefect-server",
        "prefect-worker",
    }


def test_ports_are_published_on_loopback_only(compose):
    published = {name: service.get("ports", []) for name, service in compose["services"].items()}
    assert published["mlflow"] == ["127.0.0.1:5000:5000"]
    assert published["prefect-server"] == ["127.0.0.1:4200:4200"]
    for name, ports in published.items():
        for port in ports:
            assert str(port).startswith("127.0.0.1:"), (name, port)


def test_secrets_are_required_from_the_environment_never_written(compose):
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key):
                assert REQUIRED.match(str(value)), (name, key, value)
    for text in _strings(compose):
        # A password in a URL only as a required variable.
        for password in re.findall(r"://[^/:@\s]+:([^@]+)@", text):
            assert REQUIRED.match(password), text


def test_env_example_names_every_variable_and_holds_no_value(compose):
    used = {m for text in _strings(compose) for m in re.findall(r"\$\{(\w+):\?", text)}
    example = {}
    for line in (INFRA / "env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            example[name] = value
    assert used == set(example)
    assert all(value == "" for value in example.values())


def test_mlflow_runs_basic_auth_on_postgres_with_s3_artifacts(compose):
    mlflow = compose["services"]["mlflow"]
    command = " ".join(mlflow["command"])
    assert "--app-name basic-auth" in command
    assert "--backend-store-uri postgresql+psycopg://mlflow@postgres:5432/mlflow" in command
    assert "--serve-artifacts --artifacts-destination s3://mlflow-artifacts/" in command
    env = mlflow["environment"]
    for required in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert REQUIRED.match(env[required]), required
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert compose["services"]["minio-init"]["entrypoint"][-1].endswith("ltv/mlflow-artifacts")


def test_auth_config_has_no_default_password_and_a_postgres_store():
    config = configparser.ConfigParser()
    config.read(INFRA / "mlflow" / "basic_auth.ini")
    auth = config["mlflow"]
    assert "admin_password" not in auth
    assert auth["database_uri"] == "${MLFLOW_AUTH_DB_URI}"
    assert auth["default_permission"] == "NO_PERMISSIONS"


def test_prefect_server_on_postgres_and_a_process_worker(compose):
    server = compose["services"]["prefect-server"]
    url = server["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert url.startswith("postgresql+asyncpg://prefect:${PREFECT_DB_PASSWORD:?")
    worker = compose["services"]["prefect-worker"]
    command = " ".join(worker["command"])
    assert "prefect work-pool create ltv --type process" in command
    assert "prefect worker start --pool ltv" in command


def test_worker_has_everything_the_prod_profile_asks_for(compose):
    env = compose["services"]["prefect-worker"]["environment"]
    assert env["LTV_ENV"] == "prod"
    needed = {*profile_variables("prod"), "LTV_MLFLOW__TRACKING_URI"}
    needed |= {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}
    assert needed <= set(env)
