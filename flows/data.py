"""Data flows: generate synthetic data, import a public dataset, validate a data directory.

Tasks are thin wrappers over ``features/``; flows read like a table of contents.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

from prefect import State, flow, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from features import messy, synthetic
from features.adapters import completejourney
from features.dataset import Dataset, check_dataset, load_dataset
from features.io import InputError, write_csv_safe, write_parquet
from features.validation import Rules
from flows import caching
from flows.settings import Settings, get_settings

Format = Literal["parquet", "csv"]


#: How tasks that touch storage or tracking retry: twice more, after about 2 s and then 4 s
#: (jittered), so that a brief outage of a disk, the MLflow server or the online store does
#: not fail the run. Every such task is safe to repeat: its writes are staged and swapped in,
#: or overwrite with the same values.
STORAGE_RETRIES: dict[str, Any] = {
    "retries": 2,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": lambda task, run, state: _may_pass(state),
}


def _may_pass(state: State) -> bool:
    """Whether a failure may pass on a retry: not unusable input, which would fail again."""
    try:
        state.result()
    except InputError:
        return False
    except Exception:
        return True
    return True


def rules_from(settings: Settings) -> Rules:
    """The validation rules the settings ask for."""
    return Rules(
        timezone=settings.timezone,
        min_timestamp=settings.ingest.min_timestamp,
        max_abs_amount=settings.ingest.max_abs_amount,
        max_quantity=settings.ingest.max_quantity,
        hmac_key=settings.hmac_key_bytes,
    )


def dataset_lineage(settings: Settings, digest: str) -> str:
    """What a validated dataset is made of: its files' digest, the rules and the encoding."""
    return caching.digest_of(digest, rules_from(settings), settings.ingest.encoding)


def read_inputs(data: Path, workdir: Path, settings: Settings) -> tuple[Dataset, str]:
    """How a flow starts on ``data``: the cache pruned, the data validated, their files' digest.

    The files are fingerprinted beside the validation. The load is called, not submitted: a
    finished future holds its result in a reference cycle, which would keep the lines alive
    until the next full garbage collection.
    """
    prune_cache(workdir, settings.cache.keep_days)
    digest = data_fingerprint.submit(data, settings.ingest.encoding)
    dataset = load_data(data, rules_from(settings), settings.ingest.encoding)
    return dataset, digest.result()


@task(name="prune-cache", cache_policy=NO_CACHE)
def prune_cache(workdir: Path, keep_days: float) -> int:
    """Remove the cache entries of ``workdir`` older than ``keep_days``; how many went."""
    return len(caching.prune(workdir, keep_days))


@task(name="generate-synthetic", cache_policy=NO_CACHE)
def generate_data(out: Path, customers: int, days: int, seed: int, fmt: Format) -> list[str]:
    """Write a synthetic dataset (and its ground truth) to ``out``."""
    paths = synthetic.generate_to(out, customers, days=days, seed=seed, fmt=fmt)
    return [str(p) for p in paths.values()]


@task(name="add-defects", cache_policy=NO_CACHE)
def add_defects(out: Path, fraction: float, seed: int) -> str:
    """Inject realistic export defects into the CSV tables; return the manifest's path."""
    return str(messy.make_messy_files(out, fraction=fraction, seed=seed))


@task(name="load-dataset", cache_policy=NO_CACHE, **STORAGE_RETRIES)
def load_data(data: Path, rules: Rules, encoding: str) -> Dataset:
    """Read and validate a data directory; quarantine is written beside it."""
    return load_dataset(data, rules, encoding=encoding)


@task(name="data-fingerprint", cache_policy=NO_CACHE, **STORAGE_RETRIES)
def data_fingerprint(data: Path, encoding: str) -> str:
    """A digest of the input tables' files (names and bytes): the same files, the same digest."""
    digest = hashlib.sha256()
    for name, path in sorted(check_dataset(data, encoding=encoding).items()):
        with open(path, "rb") as fh:
            digest.update(f"{name}:{path.name}:".encode())
            digest.update(hashlib.file_digest(fh, "sha256").digest())
    return digest.hexdigest()[:16]


@task(name="read-completejourney", cache_policy=NO_CACHE)
def read_completejourney() -> dict[str, Any]:
    """Load the raw Complete Journey tables from the installed package."""
    return completejourney.load_completejourney()


@task(name="convert-completejourney", cache_policy=NO_CACHE)
def convert_completejourney(raw: dict[str, Any]) -> dict[str, Any]:
    """Map the raw tables onto the input contract."""
    return completejourney.convert_completejourney(raw)


@task(name="write-tables", cache_policy=NO_CACHE, **STORAGE_RETRIES)
def write_tables(tables: dict[str, Any], out: Path, fmt: Format) -> list[str]:
    """Write each table as ``<out>/<name>.<fmt>``."""
    writer = write_parquet if fmt == "parquet" else write_csv_safe
    return [str(writer(frame, out / f"{name}.{fmt}")) for name, frame in tables.items()]


@flow(name="ltv-generate")
def generate(
    customers: int,
    out: Path,
    days: int = 730,
    seed: int = 42,
    fmt: Format = "parquet",
    messy: float = 0.0,
) -> list[str]:
    """Generate a synthetic private-domain dataset with known ground truth.

    With ``messy`` > 0 (CSV only) that share of rows gets a realistic defect, listed in
    ``defects.csv``.
    """
    paths = generate_data(out, customers, days, seed, fmt)
    return paths + [add_defects(out, messy, seed)] if messy else paths


@flow(name="ltv-import")
def import_dataset(
    out: Path, source: Literal["completejourney"] = "completejourney", fmt: Format = "parquet"
) -> list[str]:
    """Import a public dataset into the input contract."""
    raw = read_completejourney()
    return write_tables(convert_completejourney(raw), out, fmt)


@flow(name="ltv-validate")
def validate(data: Path) -> dict[str, Any]:
    """Validate a data directory: accepted and quarantined counts per table."""
    settings = get_settings()
    dataset = load_data(data, rules_from(settings), settings.ingest.encoding)
    return describe(dataset)


def describe(dataset: Dataset) -> dict[str, Any]:
    """A plain summary of a validated dataset (what the CLI prints)."""
    return {
        "summary": dataset.summary(),
        "tables": {name: vars(report) for name, report in dataset.reports.items()},
        "quarantine_dir": str(dataset.quarantine_dir),
    }
