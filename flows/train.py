"""Training flow: point-in-time rows from Feast at past cutoffs, three models, MLflow.

``ltv train --data DIR --as-of DATE``:

1. monthly cutoffs whose labels have matured by ``as_of`` (``models.training.monthly_cutoffs``;
   a label window still open stops the flow); the latest is held out for evaluation, the one
   before it is the validation fold. Earlier cutoffs' outcome windows overlap the held-out one
   in calendar time, so 30 % of customers (a seeded hash) are also held out: their rows reach
   no fit, and only theirs are judged at the held-out cutoff;
2. a feature snapshot per cutoff (the same definitions as ``ltv features``), ``feast apply``,
   then the training frame from ``get_historical_features`` with one (customer, cutoff) row per
   customer who had ordered before the cutoff, and the labels of that cutoff;
3. churn, next-purchase and value models (LightGBM), the BG/NBD and RFM baselines on the same
   held-out rows, one MLflow run per model with metrics, charts and the registered model; a
   new version becomes ``champion`` only if it beats the champion on the same held-out rows.
"""

from __future__ import annotations

import datetime
import json
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from feature_repo.data_sources import snapshot_dir
from features import make_labels
from features.dataset import Dataset
from features.io import InputError
from features.orders import order_table
from flows import feature_store
from flows.caching import cached, code_digest, digest_of
from flows.dask import dask_client, fit_on_cluster
from flows.data import STORAGE_RETRIES, dataset_lineage, read_inputs
from flows.features import apply_repo, snapshot_on_runner, write_snapshot
from flows.runs import end_abandoned_flow_runs
from flows.settings import Settings, get_settings
from models.backtest import DECIDING_METRIC, Backtest, backtest, deciding_score
from models.btyd import Baseline, bgnbd_summary
from models.estimators import TrainConfig, feature_frame
from models.tracking import CHAMPION, Promotion, Tracker, as_json, default_tracking_uri
from models.training import (
    BUNDLES,
    Models,
    evaluation_customers,
    load_part,
    monthly_cutoffs,
    predict,
    save_parts,
    train_models,
)

#: Registered model and feature service (model version 1) per model kind.
REGISTERED = {"churn": "ltv-churn", "next_purchase": "ltv-next-purchase", "value": "ltv-value"}
#: Version tag naming the training that registered it (the fingerprint of its inputs).
TRAINING_KEY = "training_key"
#: Share of customers whose rows are kept out of every fit and judged at the held-out cutoff.
EVALUATION_SHARE = 0.3
SERVICES = {
    "churn": "churn_model_v1",
    "next_purchase": "next_purchase_model_v1",
    "value": "value_model_v1",
}


def tracker_for(settings: Settings, workdir: Path) -> Tracker:
    """The MLflow connection the settings ask for (default: SQLite in the work directory).

    A tracking server stores artifacts where it is configured to (``--serve-artifacts``: its
    own store, e.g. S3); only a local store gets an artifact root in the work directory.
    """
    uri = tracking_uri(settings, workdir)
    local = not uri.startswith(("http://", "https://"))
    return Tracker(uri, workdir / "mlartifacts" if local else None)


def tracking_uri(settings: Settings, workdir: Path) -> str:
    """Where the settings say MLflow tracks (default: SQLite in the work directory)."""
    return settings.mlflow.tracking_uri or default_tracking_uri(workdir)


def train_config(settings: Settings) -> TrainConfig:
    """LightGBM settings from the train section."""
    s = settings.train
    return TrainConfig(
        seed=settings.seed,
        num_threads=s.num_threads,
        learning_rate=s.learning_rate,
        num_leaves=s.num_leaves,
        min_data_in_leaf=s.min_data_in_leaf,
        max_rounds=s.max_rounds,
    )


def _cutoffs(dataset: Dataset, as_of: datetime.date, settings: Settings) -> list[datetime.date]:
    ordered_at = dataset.transactions["ordered_at"]
    start = ordered_at.min()
    cutoffs = monthly_cutoffs(
        start.date(),
        as_of,
        months=settings.train.cutoff_months,
        maturity_days=settings.train.maturity_days,
        min_history_days=settings.train.min_history_days,
    )
    if len(cutoffs) < 3:
        raise InputError(
            f"training at {as_of} needs 3 monthly cutoffs with {settings.train.maturity_days} "
            f"days of outcomes after each and {settings.train.min_history_days} days of history "
            f"before; the data ({start:%Y-%m-%d} to {ordered_at.max():%Y-%m-%d}) give "
            f"{len(cutoffs)}"
        )
    return cutoffs


@task(name="labels", cache_policy=NO_CACHE)
def labels_at(
    dataset: Dataset, cutoff: datetime.date, horizon_days: int, lineage: str
) -> pd.DataFrame:
    """Outcomes after ``cutoff`` (reads nothing before it); ``lineage`` names the dataset."""
    return make_labels(dataset.transactions, cutoff=cutoff, horizon_days=horizon_days)


@task(name="training-frame", cache_policy=NO_CACHE, **STORAGE_RETRIES)
def training_frame(
    entities: pd.DataFrame,
    labels: pd.DataFrame,
    workdir: Path,
    env: str,
    service: str,
    lineage: str,
) -> pd.DataFrame:
    """Features from Feast for each (customer, cutoff) row, joined with the cutoff's labels.

    ``lineage`` names the dataset and the cutoffs the entities and labels come from.
    """
    store = feature_store.open_store(workdir, env)
    features = feature_store.historical_features(store, entities, service)
    features = features.rename(columns={"event_timestamp": "cutoff"})
    features["cutoff"] = entities["event_timestamp"].to_numpy()
    merged = features.merge(labels, on=["customer_id", "cutoff"], how="left", validate="m:1")
    if merged["churned"].isna().any():
        raise RuntimeError("a training row has no label")
    return merged


@task(name="fit-models", cache_policy=NO_CACHE)
def fit(frame: pd.DataFrame, config: TrainConfig, lineage: str) -> Models:
    """Churn, next purchase and value models on the training rows ``lineage`` names."""
    return train_models(frame, config)


@task(name="baselines", cache_policy=NO_CACHE)
def baselines(
    dataset: Dataset, heldout: pd.DataFrame, cutoff: datetime.date, lineage: str
) -> pd.DataFrame:
    """BG/NBD + Gamma-Gamma fitted on the history before the held-out cutoff.

    ``lineage`` names the dataset and the held-out rows.
    """
    stamp = heldout["cutoff"].iloc[0]
    summary = bgnbd_summary(order_table(dataset.transactions, before=cutoff), stamp)
    fitted = Baseline.fit(summary)
    horizon = int(heldout["horizon_days"].iloc[0])
    scores = fitted.predict(summary, horizon_days=horizon)
    return scores.reindex(heldout["customer_id"]).set_axis(heldout.index, axis=0)


@task(name="log-model", cache_policy=NO_CACHE)  # no task retry: a version may be registered
def log_model(
    kind: str,
    result: Backtest,
    models: Models,
    frame: pd.DataFrame,
    heldout: pd.DataFrame,
    context: dict[str, Any],
    settings: Settings,
    workdir: Path,
) -> dict[str, Any]:
    """One MLflow run: params, metrics, charts, data fingerprint, registered model, alias.

    A version is registered once per training (``context["training_key"]``, on the run from
    its start and on the version once everything about it is done): a rerun of the same
    training, or one after a kill, finds it, finishes what the killed run left undone (its tags,
    its promotion) and logs nothing again (R1, R3).
    """
    tracker = tracker_for(settings, workdir)
    name = REGISTERED[kind]
    key = context["training_key"]
    tags = {
        "feature_service": SERVICES[kind],
        "heldout_cutoff": context["heldout_cutoff"],
        "training_cutoffs": as_json(context["training_cutoffs"]),
        "as_of": context["as_of"],
    }
    found = tracker.version_tagged(name, TRAINING_KEY, key) or tracker.version_of_run_tagged(
        name, TRAINING_KEY, key
    )
    if found is not None:
        done = _finish(tracker, kind, found, tags, result, heldout, context)
        return done | {"registered_before": True}
    champion = _champion(tracker, kind, heldout)  # scored before this version registers
    part = getattr(models, BUNDLES[kind][0])
    run_tags = tags | {TRAINING_KEY: key}
    with tracker.run(
        f"ltv-{kind.replace('_', '-')}", f"{kind} {context['as_of']}", run_tags
    ) as run:
        run.log_params(context["params"] | {"model_kind": kind, "features": len(part.features)})
        run.log_metrics(result.metrics)
        run.log_dataset(frame, f"{SERVICES[kind]}-training", context["snapshots"], "training", None)
        for path, figure in result.figures.items():
            run.log_figure(figure, f"charts/{path}")
        run.log_table(result.comparison.reset_index(), "comparison_vs_baselines.csv")
        run.log_table(result.deciles, "decile_table.csv")
        with tempfile.TemporaryDirectory() as tmp:
            extra = save_parts(models, kind, Path(tmp))
            example = feature_frame(heldout, part.features)
            version = run.log_booster(part.booster, name, example, tags, extra)
        done = _finish(tracker, kind, version, tags, result, heldout, context, champion)
        run.set_tags({"registered_version": version, "promotion": done["alias"]})
    return done


def _finish(
    tracker: Tracker,
    kind: str,
    version: str,
    tags: dict[str, str],
    result: Backtest,
    heldout: pd.DataFrame,
    context: dict[str, Any],
    champion: tuple[str, float | None] | None = None,
) -> dict[str, Any]:
    """Tag and promote a registered version, then mark it done with the training's key.

    Every step is safe to repeat, so a version a killed run left half done is finished here;
    the key goes last, so a version carrying it has all its tags and its promotion decided.
    """
    name = REGISTERED[kind]
    have = tracker.version_tags(name, version)
    tracker.tag_version(name, version, {k: v for k, v in tags.items() if have.get(k) != v})
    if "promotion_reason" in have:
        alias, reason = have["promotion"], have["promotion_reason"]
    elif tracker.champion_version(name) == version:  # the alias was set, the tags were not
        alias, reason = CHAMPION, "promoted by an interrupted run of this training"
        tracker.tag_version(name, version, {"promotion": alias, "promotion_reason": reason})
    else:
        if champion is None:
            champion = _champion(tracker, kind, heldout)
        promotion = _promote(tracker, kind, version, result, champion, context)
        alias, reason = promotion.alias, promotion.reason
    tracker.tag_version(name, version, {TRAINING_KEY: context["training_key"]})
    return {
        "model": name,
        "version": version,
        "alias": alias,
        "reason": reason,
        "run_id": tracker.version_run(name, version),
        "metrics": result.metrics,
    }


def _promote(
    tracker: Tracker,
    kind: str,
    version: str,
    result: Backtest,
    champion: tuple[str, float | None] | None,
    context: dict[str, Any],
) -> Promotion:
    """Make ``version`` champion if it beats ``champion`` on the deciding metric."""
    decided = DECIDING_METRIC[kind]
    return tracker.promote(
        REGISTERED[kind],
        version,
        metric=decided,
        new_value=result.metrics[decided],
        champion=champion,
        cutoff=context["heldout_cutoff"],
    )


def _champion(
    tracker: Tracker, kind: str, heldout: pd.DataFrame
) -> tuple[str, float | None] | None:
    """The current champion's version and its deciding metric on the same held-out rows.

    The value is ``None`` (not comparable) when the champion needs features these rows lack, or
    was trained on cutoffs at or after this held-out cutoff (its score would be inflated).
    """
    name = REGISTERED[kind]
    version = tracker.champion_version(name)
    if version is None:
        return None
    trained_on = json.loads(tracker.version_tags(name, version).get("training_cutoffs", "[]"))
    held = str(heldout["cutoff"].iloc[0].date())
    booster, files = tracker.load_bundle(name, version)
    parts = load_part(kind, booster, files)
    missing = [f for p in parts.values() for f in p.features if f not in heldout.columns]
    if missing or any(c >= held for c in trained_on):
        return version, None
    return version, deciding_score(kind, parts, heldout)


@task(name="end-abandoned-runs", cache_policy=NO_CACHE, **STORAGE_RETRIES)
def end_abandoned_runs(settings: Settings, workdir: Path) -> list[str]:
    """End as KILLED the MLflow runs a killed process of this host left RUNNING."""
    return tracker_for(settings, workdir).end_abandoned_runs()


@flow(name="ltv-train")
def train(data: Path, as_of: datetime.date, workdir: Path) -> dict[str, Any]:
    """Train, evaluate against the baselines, track and register the three models."""
    end_abandoned_flow_runs()  # runs a killed process left Running (R5)
    settings = get_settings()
    end_abandoned_runs(settings, workdir)  # runs of a training that was killed (R2)
    dataset, digest = read_inputs(data, workdir, settings)
    lineage = dataset_lineage(settings, digest)
    cutoffs = _cutoffs(dataset, as_of, settings)
    horizon = settings.train.horizon_days
    outcomes = cached(labels_at, workdir, settings, "cutoff", "horizon_days", "lineage")
    entity_rows, label_frames = [], []
    for cutoff in cutoffs:
        snapshot = snapshot_on_runner(dataset, cutoff, workdir, lineage)
        write_snapshot(snapshot, workdir, cutoff)
        buyers = snapshot.loc[snapshot["orders_total"] > 0, ["customer_id", "as_of"]]
        entity_rows.append(buyers.rename(columns={"as_of": "event_timestamp"}))
        label_frames.append(outcomes(dataset, cutoff, horizon, lineage))
    apply_repo(workdir, settings.env)
    entities = pd.concat(entity_rows, ignore_index=True)
    labels = pd.concat(label_frames, ignore_index=True)
    immature = labels.loc[~labels["label_matured"], "cutoff"].drop_duplicates()
    if len(immature):
        raise InputError(
            f"the outcomes after cutoff {immature.iloc[0]:%Y-%m-%d} are not all in the data yet "
            f"(they need {settings.train.maturity_days} days; the data end "
            f"{dataset.transactions['ordered_at'].max():%Y-%m-%d}): use an earlier --as-of"
        )
    rows = digest_of(lineage, cutoffs, horizon)  # the entities and labels above
    frame = cached(training_frame, workdir, settings, "env", "service", "lineage")(
        entities, labels, workdir, settings.env, SERVICES["churn"], rows
    )
    last = (frame["cutoff"] == frame["cutoff"].max()).to_numpy()
    held_out = evaluation_customers(frame["customer_id"], EVALUATION_SHARE, settings.seed)
    train_rows, heldout = frame[~last & ~held_out], frame[last & held_out]
    split = digest_of(rows, EVALUATION_SHARE, settings.seed)  # train_rows and heldout
    config = train_config(settings)
    runner = "local" if dask_client() is None else "dask"
    if runner == "local":
        models = cached(fit, workdir, settings, "config", "lineage")(train_rows, config, split)
    else:  # --runner dask: LightGBM's Dask interface
        models = fit_on_cluster(train_rows, config, settings.dask.partitions)
    predictions = predict(models, heldout)
    bgnbd = cached(baselines, workdir, settings, "cutoff", "lineage")(
        dataset, heldout, cutoffs[-1], split
    )
    context = {
        "as_of": str(as_of),
        "heldout_cutoff": str(cutoffs[-1]),
        "evaluation_share": EVALUATION_SHARE,
        "training_cutoffs": [str(c) for c in cutoffs[:-1]],
        "snapshots": str(snapshot_dir(workdir)),
        "training_key": digest_of(split, config, as_of, runner, code_digest()),
        "params": {
            "horizon_days": horizon,
            "training_rows": len(train_rows),
            "heldout_rows": len(heldout),
            "cutoffs": len(cutoffs) - 1,
        }
        | vars(config),
    }
    results = {}
    for kind in REGISTERED:
        result = backtest(kind, models, heldout, predictions, bgnbd)
        results[kind] = log_model(
            kind, result, models, train_rows, heldout, context, settings, workdir
        )
    return {"models": results, "tracking_uri": tracker_for(settings, workdir).uri, **context}
