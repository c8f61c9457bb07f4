"""The one settings object: environment (``LTV_*``), then ``ltv.toml``, then defaults.

Only ``flows/`` and the CLI build it; ``features/`` and ``models/`` take plain arguments.
Nested sections are set from the environment with a double underscore, e.g.
``LTV_INGEST__MAX_ABS_AMOUNT=5e6``. Secrets (the HMAC key) have no default.

``LTV_ENV`` picks the profile: ``local`` (nothing to start) or ``prod`` (the servers of
``infra/``: ``feature_repo/feature_store.prod.yaml`` and the MLflow server of
``LTV_MLFLOW__TRACKING_URI``). A profile's secrets come only from the environment; a ``prod``
profile missing any of them is refused (:meth:`Settings.check_profile`) before anything runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
import importlib.util
import os
import re
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import pyarrow as pa
from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from features.io import InputError


class IngestSettings(BaseModel):
    """Thresholds that decide which input rows are quarantined."""

    min_timestamp: date = date(1990, 1, 1)
    max_abs_amount: float = Field(1_000_000.0, gt=0, description="largest |amount| per line")
    max_quantity: int = Field(10_000, gt=0)
    encoding: str = Field("utf-8", description="text encoding of CSV inputs (e.g. gb18030)")


class TrainSettings(BaseModel):
    """Which past cutoffs the models learn from, and how LightGBM fits them."""

    horizon_days: int = Field(90, gt=0, description="churn horizon H: no order in H days")
    cutoff_months: int = Field(12, ge=3, description="monthly cutoffs looked back over")
    maturity_days: int = Field(180, gt=0, description="a cutoff's labels need this long")
    min_history_days: int = Field(28, ge=0, description="history a cutoff needs before it")
    learning_rate: float = Field(0.1, gt=0)
    num_leaves: int = Field(7, ge=2)
    min_data_in_leaf: int = Field(50, ge=1)
    max_rounds: int = Field(300, ge=1)
    num_threads: int = Field(2, ge=1, description="threads LightGBM trains with")

    @model_validator(mode="after")
    def _windows_mature(self) -> TrainSettings:
        """Every label window (the horizon, 30 and 180 days) must fit in ``maturity_days``."""
        needed = max(self.horizon_days, 180)
        if self.maturity_days < needed:
            raise ValueError(f"maturity_days must be at least {needed} (the longest label window)")
        return self


class ScoreSettings(BaseModel):
    """How ``ltv score`` turns the scores into lists."""

    budget: float | None = Field(
        None, ge=0, description="coupon budget per scoring (expected cost); none = no limit"
    )
    policy_file: Path | None = Field(
        None, description="coupon tiers YAML; default: the coupon_policy.yaml shipped in flows/"
    )
    risk_high: float = Field(0.7, gt=0, le=1, description="churn_prob from which risk is high")
    risk_medium: float = Field(0.4, gt=0, le=1, description="churn_prob from which it is medium")
    baseline_sample: int = Field(
        200_000, ge=1_000, description="customers the comparison BG/NBD is fitted on (seeded)"
    )

    @model_validator(mode="after")
    def _bands_ordered(self) -> ScoreSettings:
        """The medium band starts below the high one."""
        if self.risk_medium >= self.risk_high:
            raise ValueError("risk_medium must be below risk_high")
        return self


class ScheduleSettings(BaseModel):
    """When the served deployments run (cron, in the settings' time zone)."""

    scoring_cron: str = Field("0 6 * * *", description="daily scoring: 06:00")
    retraining_cron: str = Field("0 2 * * 1", description="weekly retraining: Monday 02:00")


class CacheSettings(BaseModel):
    """Caching of the expensive tasks on a fingerprint of their inputs (``flows.caching``)."""

    enabled: bool = Field(True, description="reuse results of unchanged inputs (R3)")
    keep_days: float = Field(14.0, gt=0, description="entries not written for this long go")


class DaskSettings(BaseModel):
    """``--runner dask``: the local cluster started without ``--dask-address``, and partitions."""

    n_workers: int = Field(2, ge=1, description="workers of the local cluster (processes)")
    threads_per_worker: int = Field(1, ge=1, description="threads of each local worker")
    partitions: int = Field(4, ge=1, description="customer partitions of features and scoring")
    connect_timeout: float = Field(10.0, gt=0, description="seconds to reach --dask-address")


class MlflowSettings(BaseModel):
    """Where runs and registered models go."""

    tracking_uri: str | None = Field(
        None, description="default: sqlite:///<workdir>/mlflow.db with artifacts in workdir"
    )


class Settings(BaseSettings):
    """Everything the flows and the CLI may be configured with."""

    model_config = SettingsConfigDict(
        env_prefix="LTV_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    env: Literal["local", "prod"] = "local"
    workdir: Path = Path("ltv-work")
    timezone: str = "Asia/Shanghai"
    hmac_key: SecretStr | None = Field(
        None, description="key for HMAC-hashing direct identifiers; unset = drop them"
    )
    seed: int = 42
    arrow_memory_pool: Literal["system", "mimalloc", "jemalloc"] = Field(
        "system",
        description="Arrow's allocator; the system one gives freed memory back soonest (peak "
        "RSS of ltv score at 1M customers)",
    )
    malloc_arenas: int = Field(
        2,
        ge=0,
        description="glibc malloc arenas (M_ARENA_MAX); few arenas keep the freed memory of "
        "worker threads reusable (peak RSS of ltv score at 1M customers: 10.9 -> 10.3 GB); "
        "0 = glibc's default",
    )
    ingest: IngestSettings = IngestSettings()
    train: TrainSettings = TrainSettings()
    score: ScoreSettings = ScoreSettings()
    mlflow: MlflowSettings = MlflowSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    cache: CacheSettings = CacheSettings()
    dask: DaskSettings = DaskSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Order the sources: init arguments, environment, then ``ltv.toml``."""
        toml_file = Path(os.environ.get("LTV_CONFIG", "ltv.toml"))
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_file),
        )

    def check_profile(self) -> None:
        """Refuse a production profile whose servers or secrets are not all configured.

        ``prod`` needs every ``${VAR}`` of its ``feature_store.prod.yaml`` and an MLflow server
        (``LTV_MLFLOW__TRACKING_URI``) with credentials in ``MLFLOW_TRACKING_USERNAME`` and
        ``MLFLOW_TRACKING_PASSWORD`` (or ``MLFLOW_TRACKING_TOKEN``), never in the URI.

        Raises:
            ProfileError: naming every missing variable, in one line.
        """
        if self.env == "local":
            return
        missing = [name for name in profile_variables(self.env) if not os.environ.get(name)]
        uri = self.mlflow.tracking_uri
        if not uri:
            missing.append("LTV_MLFLOW__TRACKING_URI")
        elif urlsplit(uri).password:
            raise ProfileError(
                "LTV_MLFLOW__TRACKING_URI carries a password: put it in MLFLOW_TRACKING_PASSWORD"
            )
        elif uri.startswith(("http://", "https://")) and not os.environ.get(
            "MLFLOW_TRACKING_TOKEN"
        ):
            credentials = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
            missing += [name for name in credentials if not os.environ.get(name)]
        if missing:
            raise ProfileError(
                f"LTV_ENV={self.env} needs {', '.join(missing)} set in the environment "
                "(infra/README.md lists them)"
            )

    @property
    def hmac_key_bytes(self) -> bytes | None:
        """The HMAC key as bytes, or ``None`` when no key is configured."""
        return self.hmac_key.get_secret_value().encode() if self.hmac_key else None


class ProfileError(InputError):
    """The selected profile (``LTV_ENV``) lacks a server address or secret."""


def profile_variables(env: str) -> list[str]:
    """The environment variables the feature store file of ``env`` reads (``${VAR}``).

    ``LTV_WORKDIR`` is left out: the flows fill it in. Read as text, without importing Feast.
    """
    spec = importlib.util.find_spec("feature_repo")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the feature_repo package is not installed")
    name = "feature_store.yaml" if env == "local" else f"feature_store.{env}.yaml"
    text = (Path(spec.submodule_search_locations[0]) / name).read_text()
    lines = (line.split("#", 1)[0] for line in text.splitlines())
    found = {var for line in lines for var in re.findall(r"\$\{(\w+)\}", line)}
    return sorted(found - {"LTV_WORKDIR"})


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Build the settings once per process, and set Arrow's allocator from them."""
    settings = Settings()
    settings.check_profile()
    pools = {
        "system": pa.system_memory_pool,
        "mimalloc": pa.mimalloc_memory_pool,
        "jemalloc": pa.jemalloc_memory_pool,
    }
    with contextlib.suppress(NotImplementedError):  # a pyarrow built without it: its default
        pa.set_memory_pool(pools[settings.arrow_memory_pool]())
    if settings.malloc_arenas:
        _limit_malloc_arenas(settings.malloc_arenas)
    return settings


def release_memory() -> None:
    """Free what is only held in reference cycles, and hand freed memory back to the system.

    A large table can stay alive in a cycle long after its last use (a Prefect future and its
    concurrent future hold each other and the task's result; pandera's accessor and the frame
    it validated), until a full garbage collection; and glibc keeps freed pages in its arenas.
    Called between the phases of a flow, this keeps the peak to what the next phase needs.
    """
    gc.collect()
    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        _libc().malloc_trim(0)


@functools.cache
def _libc() -> ctypes.CDLL:
    """The C library (looked up once: ``find_library`` runs ``ldconfig``)."""
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def _limit_malloc_arenas(arenas: int) -> None:
    """Cap glibc's malloc arenas (``mallopt(M_ARENA_MAX)``); nothing elsewhere (no glibc)."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        _libc().mallopt(_M_ARENA_MAX, arenas)


#: glibc's ``M_ARENA_MAX`` option of ``mallopt``.
_M_ARENA_MAX = -8
