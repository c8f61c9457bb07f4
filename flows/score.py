"""Scoring flow: every customer into one table, then coupon tiers, a control group and win-back.

``ltv score --data DIR --as-of DATE [--budget AMOUNT]``:

1. the ``champion`` version of each registered model (native LightGBM; without one the flow
   stops: "run ltv train first");
2. the feature snapshot at ``as_of`` (the definitions training used; written beside the
   training snapshots);
3. scores, BG/NBD's P(alive) for comparison, risk bands, value percentiles, segment migration,
   restock reminders and three plain-words reasons per customer (``models.scoring``,
   ``models.explain``);
4. coupon tiers within the budget (``models.policy``, uplift from past coupon touches by
   ``models.uplift``), a stratified control group, and the win-back ranking;
5. the tables, written as one set (``flows.outputs``), and a run summary.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture

from features.contracts import cutoff_timestamp
from features.dataset import Dataset
from features.io import InputError
from flows.caching import cached, digest_of
from flows.dask import dask_client, predict_by_partition
from flows.data import STORAGE_RETRIES, dataset_lineage, read_inputs
from flows.features import cluster_snapshot, snapshot_tables, write_snapshot
from flows.outputs import previous_scores, write_set
from flows.runs import end_abandoned_flow_runs
from flows.settings import Settings, get_settings, release_memory
from flows.train import REGISTERED, SERVICES, tracker_for, tracking_uri
from models.btyd import Baseline, bgnbd_summary
from models.explain import reasons
from models.policy import CouponPolicy, load_policy
from models.scoring import (
    DATE,
    RECALL_STAGES,
    RiskBands,
    align,
    coupon_columns,
    insert_after,
    model_columns,
    opt_out_flags,
    recall_columns,
    segment_migration,
    touches_within,
    value_percentile,
    with_baseline,
)
from models.tracking import Registered
from models.training import (
    Models,
    Predictions,
    load_part,
    model_matrix,
    models_from_parts,
    predict,
)
from models.uplift import (
    estimate_uplift,
    segments,
    uplift_unavailable_reason,
)

#: Columns of ``coupon_list`` and ``recall_list`` (besides the keys), in order.
COUPON_COLUMNS = (
    "customer_id",
    "as_of",
    "coupon_tier",
    "coupon_value",
    "expected_incremental_value",
    "expected_coupon_cost",
    "churn_prob",
    "p_purchase_30d",
    "predicted_value_180d",
    "lifecycle_stage",
    "rfm_segment",
    "best_channel",
    "reason_1",
    "reason_2",
    "reason_3",
)
RECALL_COLUMNS = (
    "customer_id",
    "as_of",
    "recall_priority",
    "expected_recovered_value",
    "p_reactivation",
    "churn_prob",
    "predicted_value_180d",
    "lifecycle_stage",
    "best_channel",
    "days_since_last_order",
    "reason_1",
    "reason_2",
    "reason_3",
)


@dataclass
class Champions:
    """The champion models of a scoring, with where they come from."""

    models: Models
    versions: dict[str, Registered]

    @property
    def label(self) -> str:
        """``ltv-churn:3|ltv-next-purchase:2|ltv-value:2``."""
        return "|".join(f"{r.name}:{r.version}" for r in self.versions.values())


def default_policy_file() -> Path:
    """The coupon policy shipped with the package."""
    return Path(str(resources.files("flows").joinpath("coupon_policy.yaml")))


@task(name="load-champions", cache_policy=NO_CACHE, **STORAGE_RETRIES)
def load_champions(settings: Settings, workdir: Path, as_of: datetime.date) -> Champions:
    """The ``champion`` version of every registered model (native LightGBM only).

    A champion trained on data up to a date after ``as_of`` is refused: scoring a past date
    with it would use outcomes that were not known then.
    """
    tracker = tracker_for(settings, workdir)
    versions, parts = {}, {}
    for kind, name in REGISTERED.items():
        found = tracker.champion_bundle(name)
        if found is None:
            raise InputError(
                f"no champion version of model {name} in {tracker.uri}: run ltv train first"
            )
        trained = tracker.version_tags(name, found.version).get("as_of")
        if trained and datetime.date.fromisoformat(trained) > as_of:
            raise InputError(
                f"the champion {name} v{found.version} was trained with data up to {trained}, "
                f"after the scoring date {as_of}: score {trained} or later, or train a model "
                f"at {as_of} in another work directory"
            )
        versions[kind] = found
        parts.update(load_part(kind, found.booster, found.files))
    horizon = int(versions["churn"].params.get("horizon_days", settings.train.horizon_days))
    return Champions(models_from_parts(parts, horizon), versions)


#: Restock reminders name the categories due within this many days (``categories_due_7d``).
RESTOCK_DAYS = 7


@task(name="build-features", cache_policy=NO_CACHE)
def scoring_tables(
    dataset: Dataset, as_of: datetime.date
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The snapshot at ``as_of``, the orders before it and the restock reminders.

    All three come from one pass over the lines: the orders feed BG/NBD and the coupon uplift.
    """
    tables = snapshot_tables(dataset, as_of, orders=True, due_within_days=RESTOCK_DAYS)
    assert tables.orders is not None and tables.due is not None  # asked for
    return tables.features, tables.orders, tables.due


@task(name="bgnbd-comparison", cache_policy=NO_CACHE)
def bgnbd_scores(
    orders: pd.DataFrame,
    cutoff: pd.Timestamp,
    sample: int,
    seed: int,
    horizon: int,
    lineage: str,
) -> pd.DataFrame:
    """BG/NBD + Gamma-Gamma fitted at ``cutoff`` (on a seeded sample of customers), all scored.

    ``lineage`` names the dataset ``orders`` come from.
    """
    summary = bgnbd_summary(orders, cutoff)
    if summary.empty:  # nobody has ordered yet: nothing to fit or compare
        return pd.DataFrame(columns=["p_alive", "expected_purchases_180d"], dtype=float)
    fit_on = summary.sample(n=sample, random_state=seed) if len(summary) > sample else summary
    return Baseline.fit(fit_on.sort_index()).predict(summary, horizon_days=horizon)


@task(name="score-customers", cache_policy=NO_CACHE)
def score_table(
    snapshot: pd.DataFrame,
    champions: Champions,
    previous: pd.DataFrame | None,
    due: pd.DataFrame,
    bands: RiskBands,
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Scores, bands, percentiles, migration, restock reminders and the win-back columns.

    Also returns the buyers' model inputs, which the reasons read (:func:`reason_table`;
    ``None`` when the five models do not share them).
    """
    _check_features(snapshot, champions)
    models = champions.models
    rows = np.flatnonzero(_buyers(snapshot))  # scored and explained where they are: no copy
    matrix = model_matrix(models, snapshot, rows)  # read by the five boosters and the reasons
    pred = predict(models, snapshot, matrix, rows)
    return score_columns(snapshot, pred, previous, due, bands), matrix


def _check_features(snapshot: pd.DataFrame, champions: Champions) -> None:
    missing = sorted({f for p in champions.models.parts() for f in p.features} - set(snapshot))
    if missing:
        raise InputError(
            f"the champion models need features the snapshot lacks: {', '.join(missing[:5])}; "
            "retrain with ltv train on this data"
        )


def score_columns(
    snapshot: pd.DataFrame,
    pred: Predictions,
    previous: pd.DataFrame | None,
    due: pd.DataFrame,
    bands: RiskBands,
) -> pd.DataFrame:
    """:func:`score_table`'s columns from the buyers' predictions ``pred`` (in snapshot order)."""
    scores = model_columns(pred, snapshot, _buyers(snapshot), bands)
    keys = snapshot[["customer_id", "as_of"]].copy()
    out = pd.concat([keys, scores], axis=1)
    for column in ("rfm_segment", "lifecycle_stage", "best_channel", "days_since_last_order"):
        out[column] = snapshot[column].array
    out["value_percentile_in_stage"] = value_percentile(
        out["predicted_value_180d"], out["lifecycle_stage"]
    ).to_numpy()
    out = pd.concat([out, segment_migration(out, previous)], axis=1)
    out["categories_due_7d"] = align(
        due["categories_due"], due["customer_id"], out["customer_id"]
    ).astype("string")
    return pd.concat([out, recall_columns(out, snapshot)], axis=1)


class _Done:
    """A result already there, read like a future's."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def result(self) -> Any:
        return self.value


def score_on_cluster(
    client: Any,
    snapshot: pd.DataFrame,
    champions: Champions,
    previous: pd.DataFrame | None,
    due: pd.DataFrame,
    bands: RiskBands,
) -> tuple[pd.DataFrame, _Done]:
    """:func:`score_table` and :func:`reason_table`, the per-row work by partition on Dask."""
    _check_features(snapshot, champions)
    partitions = get_settings().dask.partitions
    pred, why = predict_by_partition(client, snapshot, champions.models, partitions)
    scored = score_columns(snapshot, pred, previous, due, bands)
    return scored, _Done(reason_columns(snapshot, why))


@task(name="explain-scores", cache_policy=NO_CACHE)
def reason_table(
    snapshot: pd.DataFrame, champions: Champions, matrix: np.ndarray | None, lineage: str
) -> pd.DataFrame:
    """``reason_1`` .. ``reason_3``: the churn score's strongest drivers in plain words.

    ``matrix`` holds the buyers' model inputs (:func:`score_table`); a customer without an
    order has "no order yet". ``lineage`` names the snapshot and the models.
    """
    buyers = _buyers(snapshot)
    booster = champions.models.churn.booster
    why = reasons(booster, snapshot, matrix=matrix, rows=np.flatnonzero(buyers))
    return reason_columns(snapshot, why)


def reason_columns(snapshot: pd.DataFrame, why: pd.DataFrame) -> pd.DataFrame:
    """``reason_1`` .. ``reason_3`` of every customer from the buyers' reasons ``why``."""
    buyers = _buyers(snapshot)
    out = pd.DataFrame(index=snapshot.index)
    for column in ("reason_1", "reason_2", "reason_3"):
        text = pd.Series(pd.NA, index=snapshot.index, dtype="string")
        text[buyers] = why[column].to_numpy()
        out[column] = text
    out.loc[~buyers, "reason_1"] = "no order yet"
    return out


def _renumbered(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (the caller's to change) with rows numbered from 0: no copy of the columns."""
    frame.index = pd.RangeIndex(len(frame))
    return frame


def _buyers(snapshot: pd.DataFrame) -> np.ndarray:
    """The customers with an order: those the models score."""
    return (snapshot["orders_total"].fillna(0) > 0).to_numpy()


@dataclass
class CouponInputs:
    """Per customer (in snapshot order): each tier's uplift, the frequency cap and opt-outs."""

    uplift: np.ndarray
    capped: np.ndarray
    opted_out: np.ndarray
    facts: dict[str, Any]


#: What the coupon uplift and the frequency cap read of the touches.
COUPON_TOUCH_COLUMNS = ("customer_id", "sent_at", "coupon_value")


def _coupon_touches(touches: pd.DataFrame | None) -> pd.DataFrame | None:
    """The columns of the touches the coupons read (the rest is let go with the dataset)."""
    if touches is None:
        return None
    return touches[[c for c in COUPON_TOUCH_COLUMNS if c in touches.columns]]


@task(name="coupon-uplift", cache_policy=NO_CACHE)
def coupon_inputs(
    orders: pd.DataFrame,
    touches: pd.DataFrame | None,
    customers: pd.DataFrame | None,
    customer_ids: pd.Series,
    policy: CouponPolicy,
    as_of: datetime.date,
    lineage: str,
) -> CouponInputs:
    """Each tier's uplift per customer, who is at the frequency cap and who opted out.

    ``lineage`` names the dataset the orders, touches and customers come from.

    The uplift of each tier comes from past coupon touches (``models.uplift``, by segment) or,
    without coupon history, from the policy's ``default_uplift``.
    """
    stamp = cutoff_timestamp(as_of, getattr(orders["ordered_at"].dtype, "tz", None))
    table = estimate_uplift(
        None, touches, as_of=as_of, window_days=policy.window_days, orders=orders
    )
    if table is not None:
        segment = segments(orders, customer_ids, stamp)
        uplift = table.for_customers(segment, list(policy.coupon_values))
        method = "by segment from past coupon touches (models.uplift)"
    else:
        uplift = np.tile(policy.default_uplifts, (len(customer_ids), 1))
        why = uplift_unavailable_reason(touches, as_of=as_of, window_days=policy.window_days)
        method = f"default_uplift of the policy ({why or 'no usable coupon touch'})"
    cap = policy.frequency_cap
    capped = touches_within(touches, customer_ids, stamp, cap.days) >= cap.max_touches
    opted = np.zeros(len(customer_ids), dtype=bool)
    if customers is not None and policy.opt_out_column in customers.columns:
        column = customers[policy.opt_out_column]
        flags = pd.Series(opt_out_flags(column).to_numpy(), index=customers["customer_id"])
        anyone = flags.groupby(level=0).any().reindex(customer_ids.to_numpy())
        opted = anyone.fillna(False).to_numpy(dtype=bool)
    facts = {
        "uplift_method": method,
        "opted_out": int(opted.sum()),
        "uplift": table.describe().to_dict("records") if table is not None else [],
    }
    return CouponInputs(uplift, capped, opted, facts)


@task(name="coupon-tiers", cache_policy=NO_CACHE)
def coupon_tiers(
    scored: pd.DataFrame,
    snapshot: pd.DataFrame,
    inputs: CouponInputs,
    policy: CouponPolicy,
    budget: float | None,
    as_of: datetime.date,
    seed: int,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Each customer's coupon tier within the budget, and the control group."""
    out, totals = coupon_columns(
        scored,
        snapshot,
        inputs.uplift,
        policy,
        budget=budget,
        capped=inputs.capped,
        opted_out=inputs.opted_out,
        as_of=as_of,
        seed=seed,
    )
    facts = totals | {
        "budget": budget,
        "frequency_capped": int(out["frequency_capped"].sum()),
        **inputs.facts,
    }
    return out, facts


@task(name="write-outputs", cache_policy=NO_CACHE, **STORAGE_RETRIES)
def write_outputs(
    workdir: Path, as_of: datetime.date, tables: dict[str, pd.DataFrame], summary: dict[str, Any]
) -> dict[str, str]:
    """The set of ``as_of``, swapped in whole."""
    return write_set(workdir, as_of, tables, summary)


def scoring_id(parts: dict[str, Any]) -> str:
    """A scoring's id: a hash of what it was computed from (the same inputs, the same id)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _digest(secret: bytes | None) -> str | None:
    """A secret's SHA-256, so an id tells scorings with different keys apart without it."""
    return hashlib.sha256(secret).hexdigest() if secret else None


def summarise(scored: pd.DataFrame, facts: dict[str, Any], champions: Champions) -> dict[str, Any]:
    """What the campaign team reads first: counts per tier and stage, budget, control, lists."""
    tiered = scored["coupon_tier"].notna()
    control = scored["in_control_group"]
    reasons_top = scored.loc[scored["churn_risk_band"] == "high", "reason_1"]
    return {
        "customers": len(scored),
        "scored": int(scored["churn_prob"].notna().sum()),
        "customers_per_stage": _counts(scored["lifecycle_stage"]),
        "customers_per_risk_band": _counts(scored["churn_risk_band"]),
        "coupons_per_tier": _counts(scored.loc[tiered & ~control, "coupon_tier"]),
        "control_per_tier": _counts(scored.loc[tiered & control, "coupon_tier"]),
        "coupon_list": int((tiered & ~control).sum()),
        "control_group": int((tiered & control).sum()),
        "recall_list": int(scored["recall_priority"].notna().sum()),
        "recall_without_channel": int(
            (scored["recall_priority"].notna() & scored["best_channel"].isna()).sum()
        ),
        "top_reasons_high_risk": _shape_counts(reasons_top),
        "models": {
            r.name: {"version": r.version, "run_id": r.run_id} for r in champions.versions.values()
        },
        **facts,
    }


@task(name="campaign-artifacts", cache_policy=NO_CACHE, **STORAGE_RETRIES)
def publish_artifacts(summary: dict[str, Any], tracking_uri: str) -> list[str]:
    """The run's Prefect artifacts for the campaign team: a summary and the tier counts."""
    key = f"ltv-score-{summary['as_of']}"
    markdown = create_markdown_artifact(
        markdown=summary_markdown(summary, tracking_uri),
        key=key,
        description=f"ltv score {summary['as_of']}: lists, budget, control group, top reasons",
    )
    table = create_table_artifact(
        table=tier_rows(summary),
        key=f"{key}-tiers",
        description="coupons and control group per tier",
    )
    return [str(markdown), str(table)]


def tier_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per coupon tier: coupons sent, customers held out in control."""
    sent, held = summary["coupons_per_tier"], summary["control_per_tier"]
    return [
        {"tier": tier, "coupons": sent.get(tier, 0), "control": held.get(tier, 0)}
        for tier in sorted(set(sent) | set(held))
    ]


def summary_markdown(summary: dict[str, Any], tracking_uri: str) -> str:
    """The run summary as markdown: what the campaign team reads first in the Prefect UI."""
    budget, used = summary.get("budget"), summary.get("budget_used", 0.0)
    spent = f"{used:,.0f} of {budget:,.0f}" if budget else f"{used:,.0f} (no limit)"
    lines = [
        f"# Scoring {summary['as_of']}",
        "",
        f"- customers: {summary['customers']:,} ({summary['scored']:,} scored)",
        f"- coupon list: {summary['coupon_list']:,}; control group: {summary['control_group']:,}",
        f"- expected coupon cost: {spent}",
        f"- win-back list: {summary['recall_list']:,}",
        f"- run id: `{summary['run_id']}`",
        "",
        "| tier | coupons | control |",
        "|---|---:|---:|",
        *(f"| {r['tier']} | {r['coupons']:,} | {r['control']:,} |" for r in tier_rows(summary)),
        "",
        "| lifecycle stage | customers |",
        "|---|---:|",
        *(f"| {k} | {v:,} |" for k, v in summary["customers_per_stage"].items()),
        "",
        "| top reasons (high risk) | customers |",
        "|---|---:|",
        *(f"| {k} | {v:,} |" for k, v in summary["top_reasons_high_risk"].items()),
        "",
        "Models (MLflow):",
        *(
            f"- {name} v{m['version']}: {_model_link(tracking_uri, name, m)}"
            for name, m in summary["models"].items()
        ),
    ]
    return "\n".join(lines) + "\n"


def _model_link(tracking_uri: str, name: str, model: dict[str, Any]) -> str:
    """A link to the model version in the MLflow UI, or where to find it in a local store."""
    if tracking_uri.startswith(("http://", "https://")):
        base = tracking_uri.rstrip("/")
        return f"[run {model['run_id']}]({base}/#/models/{name}/versions/{model['version']})"
    return f"run `{model['run_id']}` in `{tracking_uri}` (`mlflow ui --backend-store-uri` it)"


def _counts(values: pd.Series, top: int = 10) -> dict[str, int]:
    """The ``top`` most frequent values (nulls left out) with their counts; ties by value."""
    return _top(values.value_counts(), top)


def _shape_counts(reasons: pd.Series, top: int = 10) -> dict[str, int]:
    """:func:`_counts` of the reasons with their numbers written N ("last order N× ...")."""
    counts = reasons.value_counts()  # the numbers rewritten once per distinct reason
    shapes = pd.Series(counts.index, dtype="string").str.replace(r"\d[\d,.]*", "N", regex=True)
    return _top(pd.Series(counts.to_numpy()).groupby(shapes.to_numpy()).sum(), top)


def _top(counts: pd.Series, top: int) -> dict[str, int]:
    """The ``top`` largest of ``counts`` (by value), ties by value."""
    pairs = ((str(k), int(v)) for k, v in counts.items() if v)
    return dict(sorted(pairs, key=lambda kv: (-kv[1], kv[0]))[:top])


@flow(name="ltv-score")
def score(
    data: Path, as_of: datetime.date, workdir: Path, budget: float | None = None
) -> dict[str, Any]:
    """Score every customer known at ``as_of``; coupon tiers, control group, win-back list."""
    end_abandoned_flow_runs()  # runs a killed process left Running (R5)
    settings = get_settings()
    budget = settings.score.budget if budget is None else budget
    policy_path = settings.score.policy_file or default_policy_file()
    policy = load_policy(policy_path)
    # First, so that a missing champion stops the run before the data are read. (Loaded
    # beside the reading, the MLflow client's Python work slowed the validation by more.)
    champions = load_champions(settings, workdir, as_of)
    dataset, digest = read_inputs(data, workdir, settings)
    # One pass over the lines gives the snapshot, the orders and the restock reminders; the
    # lines are freed once Prefect has sent the events of the task that read them (~0.5 s).
    client = dask_client()  # --runner dask: features and scores by partition of customers
    if client is None:
        snapshot, orders, restock = scoring_tables(dataset, as_of)
    else:
        built = cluster_snapshot(client, dataset, as_of, orders=True, due=RESTOCK_DAYS)
        assert built.orders is not None and built.due is not None  # asked for
        snapshot, orders, restock = built.features, built.orders, built.due
        del built
    tz = getattr(dataset.transactions["ordered_at"].dtype, "tz", None)
    touches, customers = _coupon_touches(dataset.touches), dataset.customers
    del dataset
    release_memory()  # what building the features freed
    written = write_snapshot.submit(snapshot, workdir, as_of)
    lineage = digest_of(dataset_lineage(settings, digest), as_of)
    baseline = cached(bgnbd_scores, workdir, settings, "sample", "seed", "horizon", "lineage")
    baseline = baseline.submit(
        orders,
        cutoff_timestamp(as_of, tz),
        settings.score.baseline_sample,
        settings.seed,
        champions.models.horizon_days,
        lineage,
    )
    ids = snapshot["customer_id"]
    # After BG/NBD, not beside it: the two hold large arrays, and the scores use both cores.
    inputs = cached(coupon_inputs, workdir, settings, "policy", "lineage").submit(
        orders,
        touches,
        customers,
        ids,
        policy,
        as_of,
        lineage,
        wait_for=[baseline],
        return_state=False,
    )
    del orders, touches, customers  # held by the tasks that read them, and let go after
    previous = previous_scores(workdir, as_of, ["customer_id", "rfm_segment", "lifecycle_stage"])
    bands = RiskBands(settings.score.risk_high, settings.score.risk_medium)
    why: PrefectFuture[pd.DataFrame] | _Done
    if client is None:
        scored, matrix = score_table(snapshot, champions, previous, restock, bands)
        # The reasons beside the tiers: neither reads the other.
        explain = cached(reason_table, workdir, settings, "lineage")
        models = [(r.name, r.version, r.run_id) for r in champions.versions.values()]
        why = explain.submit(snapshot, champions, matrix, digest_of(lineage, models))
        del matrix
    else:
        scored, why = score_on_cluster(client, snapshot, champions, previous, restock, bands)
    scored = with_baseline(scored, baseline.result())
    coupons, facts = coupon_tiers(
        scored, snapshot, inputs.result(), policy, budget, as_of, settings.seed
    )
    written.result()
    scored = insert_after(scored, "categories_due_7d", why.result())
    del why
    scored = insert_after(scored, scored.columns[-1], coupons)
    run_id = scoring_id(
        {
            "as_of": as_of,
            "models": champions.label,
            "data": digest,
            "ingest": settings.ingest.model_dump(mode="json"),
            "timezone": settings.timezone,
            "hmac_key": _digest(settings.hmac_key_bytes),
            "budget": budget,
            "policy": Path(policy_path).read_text(),
            "seed": settings.seed,
        }
    )
    scored["as_of"] = pd.Series(as_of, index=scored.index, dtype=DATE)
    scored["feature_service"] = SERVICES["churn"]
    scored["model_version"] = champions.label
    scored["run_id"] = run_id
    coupon_list = scored[scored["coupon_tier"].notna() & ~scored["in_control_group"]]
    coupon_list = coupon_list.sort_values(
        ["expected_incremental_value", "customer_id"], ascending=[False, True]
    )
    recall = scored[scored["recall_priority"].notna() & scored["best_channel"].notna()]
    recall = recall.sort_values("recall_priority")
    tables = {
        "scored_customers": _renumbered(scored),
        "coupon_list": _renumbered(coupon_list[list(COUPON_COLUMNS)]),
        "recall_list": _renumbered(recall[list(RECALL_COLUMNS)]),
    }
    summary = {"as_of": str(as_of), "run_id": run_id, "policy": str(policy_path)} | summarise(
        scored, facts, champions
    )
    summary["recall_stages"] = list(RECALL_STAGES)
    paths = write_outputs(workdir, as_of, tables, summary)
    publish_artifacts(summary, tracking_uri(settings, workdir))
    return summary | {"paths": paths}
