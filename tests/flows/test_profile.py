"""``LTV_ENV=prod``: the servers and secrets it needs come from the environment, or it refuses."""

from __future__ import annotations

import pytest

from flows.settings import ProfileError, Settings, profile_variables

FEAST_VARIABLES = [
    "LTV_FEAST_PG_DB",
    "LTV_FEAST_PG_HOST",
    "LTV_FEAST_PG_PASSWORD",
    "LTV_FEAST_PG_PORT",
    "LTV_FEAST_PG_USER",
    "LTV_REDIS_HOST",
    "LTV_REDIS_PASSWORD",
    "LTV_REDIS_PORT",
]
SECRET = "s3cr3t-never-printed"


@pytest.fixture
def prod(monkeypatch, tmp_path):
    """A complete production environment (values need not reach a server here)."""
    monkeypatch.chdir(tmp_path)  # no ltv.toml
    for name in FEAST_VARIABLES:
        monkeypatch.setenv(name, SECRET if name.endswith("PASSWORD") else "x")
    monkeypatch.setenv("LTV_ENV", "prod")
    monkeypatch.setenv("LTV_MLFLOW__TRACKING_URI", "http://127.0.0.1:1")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    return monkeypatch


def test_variables_come_from_each_profiles_feature_store_file():
    assert profile_variables("prod") == FEAST_VARIABLES
    assert profile_variables("local") == []  # LTV_WORKDIR is filled in by the flows


def test_local_needs_nothing(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LTV_ENV", raising=False)
    Settings().check_profile()


def test_complete_prod_environment_passes(prod):
    Settings().check_profile()


@pytest.mark.parametrize(
    "unset",
    [
        ["LTV_REDIS_PASSWORD"],
        ["LTV_FEAST_PG_HOST", "LTV_FEAST_PG_PASSWORD"],
        ["LTV_MLFLOW__TRACKING_URI"],
        ["MLFLOW_TRACKING_PASSWORD"],
    ],
    ids=["redis-password", "registry", "tracking-server", "mlflow-password"],
)
def test_missing_variables_are_all_named(prod, unset):
    for name in unset:
        prod.delenv(name)
    with pytest.raises(ProfileError) as error:
        Settings().check_profile()
    message = str(error.value)
    assert all(name in message for name in unset)
    assert SECRET not in message


def test_a_token_replaces_the_username_and_password(prod):
    prod.delenv("MLFLOW_TRACKING_USERNAME")
    prod.delenv("MLFLOW_TRACKING_PASSWORD")
    prod.setenv("MLFLOW_TRACKING_TOKEN", SECRET)
    Settings().check_profile()


def test_a_password_inside_the_tracking_uri_is_refused(prod):
    prod.setenv("LTV_MLFLOW__TRACKING_URI", f"http://admin:{SECRET}@127.0.0.1:1")
    with pytest.raises(ProfileError, match="MLFLOW_TRACKING_PASSWORD") as error:
        Settings().check_profile()
    assert SECRET not in str(error.value)


def test_cli_refuses_in_one_line_with_exit_code_2(prod, ltv, tmp_path):
    prod.delenv("LTV_REDIS_PASSWORD")
    done = ltv("features", "--data", str(tmp_path), "--as-of", "2026-07-01")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == [
        "error: LTV_ENV=prod needs LTV_REDIS_PASSWORD set in the environment "
        "(infra/README.md lists them)"
    ]
    assert SECRET not in done.stdout + done.stderr
