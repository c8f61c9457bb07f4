"""The one module that talks to Feast: open the store, apply, write online, read back.

- :func:`open_store` reads ``feature_repo/feature_store.yaml`` (``LTV_ENV=prod``:
  ``feature_store.prod.yaml``) with ``${LTV_WORKDIR}`` set to the work directory and every other
  ``${VAR}`` from the environment.
- :func:`write_online` is the guarded online write (R9): the snapshot just built goes to the
  online store with ``write_to_online_store``, view by view, unless the view already holds a
  later ``as_of`` (Feast's own materialisation record; the same date again is rewritten). The
  SQLite writer replaces values without comparing event timestamps, so an older backfill would
  otherwise overwrite newer values. Customers known at a date stay known later, so a newer snapshot
  covers every customer of an older one and the whole-snapshot comparison is enough.
- :func:`lookup` reads one customer's online values and blanks every view whose values are
  older than its TTL (R10): Feast itself does not apply the TTL on online reads.
- :func:`historical_features` returns exactly one row per requested ``(customer, cutoff)`` row,
  duplicates included, in the order asked (R8), from the DuckDB offline store.
"""

from __future__ import annotations

import datetime
import os
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from feast import FeatureService, FeatureStore, RepoConfig

import feature_repo
from feature_repo.data_sources import snapshot_dir

__all__ = [
    "OnlineWrite",
    "ViewValues",
    "apply_definitions",
    "historical_features",
    "lookup",
    "open_store",
    "write_online",
]

_ROW = "__ltv_row"


def open_store(workdir: Path, env: str = "local") -> FeatureStore:
    """The feature store of ``workdir`` in environment ``env`` (``local`` or ``prod``)."""
    name = "feature_store.yaml" if env == "local" else f"feature_store.{env}.yaml"
    text = (feature_repo.REPO_DIR / name).read_text()
    workdir = workdir.resolve()
    text = string.Template(text).safe_substitute(LTV_WORKDIR=str(workdir))
    config = RepoConfig(**yaml.safe_load(os.path.expandvars(text)))
    config.repo_path = feature_repo.REPO_DIR
    if env == "local":
        (workdir / "feast").mkdir(parents=True, exist_ok=True)
    return FeatureStore(config=config)


def apply_definitions(store: FeatureStore, workdir: Path) -> list[str]:
    """``feast apply`` of every declaration over the snapshots of ``workdir``; the view names."""
    store.apply(list[Any](feature_repo.definitions(snapshot_dir(workdir))))
    return [v.name for v in store.list_feature_views()]


@dataclass(frozen=True)
class OnlineWrite:
    """What :func:`write_online` did with one snapshot."""

    as_of: datetime.datetime
    written: list[str]
    skipped: dict[str, str]
    customers: int


def write_online(store: FeatureStore, snapshot: pd.DataFrame) -> OnlineWrite:
    """Write one snapshot's values to the online store, never over newer values (R9).

    Args:
        store: The feature store.
        snapshot: One ``as_of`` of ``build_features`` output (with ``created_at``).

    Returns:
        The views written and, for each view skipped, why.
    """
    as_of = _single_as_of(snapshot)
    tz = getattr(snapshot["as_of"].dtype, "tz", None) or datetime.UTC
    written: list[str] = []
    skipped: dict[str, str] = {}
    for view in store.list_feature_views(allow_cache=False):
        held = view.most_recent_end_time
        if held is not None and held > as_of:
            newer = held.astimezone(tz)
            skipped[view.name] = f"online store already holds as_of {newer:%Y-%m-%d %H:%M %z}"
            continue
        columns = ["customer_id", "as_of", "created_at", *(f.name for f in view.features)]
        if snapshot[columns[3:]].isna().all(axis=None):
            # Feast writes nothing for an all-null view (no touches at all): record nothing, so
            # the view keeps saying which as_of its online values are from.
            skipped[view.name] = "every value is null at this as_of"
            continue
        store.write_to_online_store(view.name, snapshot[columns], allow_registry_cache=False)
        store.registry.apply_materialization(view, store.project, held or as_of, as_of)
        written.append(view.name)
    return OnlineWrite(as_of, written, skipped, len(snapshot))


def _single_as_of(snapshot: pd.DataFrame) -> datetime.datetime:
    stamps = pd.DatetimeIndex(snapshot["as_of"].unique())
    if len(stamps) != 1:
        raise ValueError(f"a snapshot has one as_of; got {len(stamps)}")
    if stamps.tz is None:  # naive times are UTC instants here
        stamps = stamps.tz_localize("UTC")
    return stamps.tz_convert("UTC")[0].to_pydatetime()


@dataclass(frozen=True)
class ViewValues:
    """One feature view's online values for a customer, and whether they are current."""

    view: str
    as_of: datetime.datetime | None
    current: bool
    values: dict[str, Any]


def lookup(
    store: FeatureStore, customer_id: str, at: datetime.datetime | None = None
) -> list[ViewValues]:
    """A customer's online features per view; values older than the view's TTL are blanked.

    Args:
        store: The feature store.
        customer_id: The customer.
        at: The moment the values must be current at (default: now).

    Returns:
        One entry per feature view in declaration order. A view with no value for the customer,
        or whose values are older than ``at - ttl``, has ``current=False`` and null values.
    """
    at = at or datetime.datetime.now(datetime.UTC)
    views = store.list_feature_views(allow_cache=False)
    refs = [f"{v.name}:{f.name}" for v in views for f in v.features]
    row = store.get_online_features(features=refs, entity_rows=[{"customer_id": customer_id}])
    found = row.to_dict(include_event_timestamps=True)
    out = []
    for view in views:
        seconds = max((found.get(f"{f.name}__ts", [0])[0] or 0) for f in view.features)
        stamp = datetime.datetime.fromtimestamp(seconds, datetime.UTC) if seconds else None
        # Current at ``at``: not older than the TTL, and not from after ``at`` either.
        current = stamp is not None and stamp <= at and (not view.ttl or stamp >= at - view.ttl)
        values = {f.name: (found[f.name][0] if current else None) for f in view.features}
        out.append(ViewValues(view.name, stamp, current, values))
    return out


def historical_features(
    store: FeatureStore, entity_rows: pd.DataFrame, service: str | FeatureService
) -> pd.DataFrame:
    """Point-in-time features for ``(customer_id, event_timestamp)`` rows, one row per row.

    Uses the DuckDB offline store, which keeps duplicate entity rows, with rows created after a
    cutoff left out (``filter_by_created_timestamp``). The result is in the order of
    ``entity_rows`` with its index; a row whose cutoff has no snapshot within the TTL gets
    nulls.

    Raises:
        RuntimeError: if the store returned another number of rows than asked (R8).
    """
    if isinstance(service, str):
        service = store.get_feature_service(service)
    entities = entity_rows.reset_index(drop=True)
    entities[_ROW] = range(len(entities))
    job = store.get_historical_features(
        entity_df=entities, features=service, filter_by_created_timestamp=True
    )
    frame = job.to_df()
    if len(frame) != len(entities) or frame[_ROW].nunique() != len(entities):
        raise RuntimeError(
            f"the offline store returned {len(frame)} rows for {len(entities)} requested"
        )
    frame = frame.sort_values(_ROW, kind="stable").drop(columns=_ROW)
    return frame.set_axis(entity_rows.index, axis=0)
