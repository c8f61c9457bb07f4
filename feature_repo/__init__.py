"""Feast declarations for the customer features: entity, source, feature views, services.

Declarations only, split by kind (``entities``, ``data_sources``, ``feature_views``,
``feature_services``). Each module declares its objects at module level for the Feast CLI
(``feast -c feature_repo apply`` from the project root) over the snapshots of
``$LTV_WORKDIR``; :func:`definitions` builds the same objects over any snapshot directory, which
is how the flows apply them.

One ``feature_store*.yaml`` per environment: ``feature_store.yaml`` (local: SQLite online store,
DuckDB offline store, files under ``${LTV_WORKDIR}/feast``) and ``feature_store.prod.yaml``
(Redis online store, Postgres registry, secrets from the environment).
"""

from __future__ import annotations

from pathlib import Path

from feast import Entity, FeatureService, FeatureView, FileSource

from feature_repo.data_sources import snapshot_source
from feature_repo.entities import customer
from feature_repo.feature_services import model_services
from feature_repo.feature_views import SNAPSHOT_TTL, family_views

__all__ = ["REPO_DIR", "SNAPSHOT_TTL", "definitions"]

#: Where the declarations and the ``feature_store*.yaml`` files live.
REPO_DIR = Path(__file__).resolve().parent


def definitions(
    snapshot_dir: Path,
) -> list[Entity | FileSource | FeatureView | FeatureService]:
    """Every Feast object of the repository, reading the snapshots under ``snapshot_dir``."""
    source = snapshot_source(snapshot_dir)
    views = family_views(source)
    return [customer, source, *views.values(), *model_services(views).values()]
