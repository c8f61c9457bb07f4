"""One row per customer: the champion models' scores and what campaign teams read beside them.

Pure functions over the feature snapshot at ``as_of`` and the fitted models; the flow
(``flows/score.py``) loads the champions, runs these and writes the tables.

- Model scores (customers with an order before ``as_of``; the models were trained on buyers
  only, so a customer without an order gets no score and the ``acquisition`` stage):
  ``churn_prob``, ``p_purchase_30d``, ``expected_next_purchase_date``, ``predicted_value_180d``,
  and the risk band of the churn score.
- The next purchase date is ``as_of`` plus the expected days to the next order *given* one
  within the churn horizon; it is left empty when an order in the horizon is less likely than
  not (``churn_prob >= 0.5``), because then no date is expected.
- BG/NBD's P(alive) and expected purchases in 180 days, for comparison with the models.
- The value percentile within the lifecycle stage (0-100), and the previous scoring's RFM
  segment and stage (segment migration).
- Coupon tiers (:func:`coupon_columns`): eligibility, the budgeted allocation and the control
  group, from the rules of ``models.policy``.
- Win-back (recall): dormant and lost customers ranked by expected recovered value, the
  spend a contact wins back. P(reactivation if contacted) = 1 - churn_prob x (1 - r), with r
  the customer's smoothed reply rate on their best channel: they come back on their own, or
  answer the contact. The contact's own part is churn_prob x r, so the expected recovered
  value is churn_prob x r x expected spend if they buy: a "dormant" customer the model expects
  back anyway is worth little to call. Treating a reply as a comeback is optimistic; the list
  is a ranking, and a control group measures the real effect.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.codes import arrow_text, lookup
from models.policy import CouponPolicy, allocate, control_group, incremental_value
from models.training import Predictions

__all__ = [
    "DATE",
    "RECALL_STAGES",
    "RiskBands",
    "align",
    "baseline_columns",
    "insert_after",
    "with_baseline",
    "coupon_columns",
    "model_columns",
    "OPT_OUT_YES",
    "opt_out_flags",
    "order_value",
    "p_within",
    "recall_columns",
    "segment_migration",
    "touches_within",
    "value_percentile",
]

#: Calendar dates in the scored tables (Arrow ``date32``: Parquet, CSV and DuckDB dates).
DATE = pd.ArrowDtype(pa.date32())
#: Lifecycle stages a win-back contact is for.
RECALL_STAGES = ("dormant", "lost")


@dataclass(frozen=True)
class RiskBands:
    """Churn probability thresholds of the ``high`` and ``medium`` risk bands."""

    high: float = 0.7
    medium: float = 0.4

    def band(self, churn_prob: np.ndarray) -> pd.Series:
        """``high``, ``medium`` or ``low`` per score; null where there is no score."""
        p = np.asarray(churn_prob, dtype=float)
        bands = np.select([p >= self.high, p >= self.medium], ["high", "medium"], "low")
        out = pd.Series(bands, dtype="string")
        out[np.isnan(p)] = pd.NA
        return out


def model_columns(
    pred: Predictions, snapshot: pd.DataFrame, buyers: np.ndarray, bands: RiskBands
) -> pd.DataFrame:
    """The model scores of every customer of ``snapshot`` (nulls for those without an order).

    Args:
        pred: The predictions of the buyers' rows (``models.training.predict``), in order.
        snapshot: The feature snapshot.
        buyers: Which rows of ``snapshot`` have an order (and a prediction).
        bands: The churn risk bands.

    Returns:
        The columns, aligned with ``snapshot``'s index.
    """
    as_of = pd.Timestamp(snapshot["as_of"].iloc[0]).tz_localize(None).normalize()
    n = len(snapshot)

    def spread(values: np.ndarray) -> np.ndarray:
        full = np.full(n, np.nan)
        full[buyers] = values
        return full

    churn = spread(pred.churn_prob)
    days = spread(np.round(pred.expected_days_to_next_order))
    expected = days.copy()
    expected[~(churn < 0.5)] = np.nan
    known = np.nan_to_num(expected).astype("timedelta64[D]")
    ahead = np.where(np.isnan(expected), np.timedelta64("NaT"), known)
    next_date = pd.arrays.ArrowExtensionArray(
        pa.array(np.datetime64(as_of.date(), "D") + ahead, type=pa.date32())
    )
    out = pd.DataFrame(
        {
            "churn_prob": churn,
            "churn_risk_band": bands.band(churn).to_numpy(),
            "p_purchase_30d": spread(pred.p_purchase_30d),
            "expected_next_purchase_date": next_date,
            "predicted_value_180d": spread(pred.predicted_value_180d),
            "spend_if_buy_180d": spread(pred.spend_if_buy_180d),
        },
        index=snapshot.index,
    )
    return out


def align(values: pd.Series, keys: pd.Series, customer_ids: pd.Series) -> pd.Series:
    """``values`` (one per key, keys unique) for each of ``customer_ids``; null for the others.

    Ids are matched as text through Arrow: no Python string per customer.
    """
    at = lookup(arrow_text(customer_ids), arrow_text(keys).combine_chunks())
    where = np.where(np.isnan(at), -1, at).astype(np.int64)
    return pd.Series(values.array.take(where, allow_fill=True), index=customer_ids.index)


def baseline_columns(scores: pd.DataFrame, customer_ids: pd.Series) -> pd.DataFrame:
    """BG/NBD's P(alive) and expected purchases in 180 days for ``customer_ids`` (nulls unknown)."""
    keys = scores.index.to_series()
    return pd.DataFrame(
        {
            "p_alive_bgnbd": align(scores["p_alive"], keys, customer_ids),
            "expected_purchases_180d_bgnbd": align(
                scores["expected_purchases_180d"], keys, customer_ids
            ),
        }
    ).astype(float)


def with_baseline(scored: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """``scored`` with :func:`baseline_columns` placed right after the model's value columns."""
    return insert_after(
        scored, "spend_if_buy_180d", baseline_columns(scores, scored["customer_id"])
    )


def insert_after(frame: pd.DataFrame, column: str, columns: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with ``columns`` (same index) placed right after ``column``.

    The columns of ``frame`` are shared, not copied (``pd.concat`` copies every one of them).
    """
    if not columns.index.equals(frame.index):
        raise ValueError("insert_after needs columns on the frame's index")
    out = frame.copy(deep=False)
    at = list(frame.columns).index(column) + 1
    for offset, (name, values) in enumerate(columns.items()):
        out.insert(at + offset, name, values.array)
    return out


def value_percentile(value: pd.Series, stage: pd.Series) -> pd.Series:
    """Each customer's predicted value as a percentile (0-100) within their lifecycle stage.

    The highest value of a stage is 100 (ties share their average rank: two equal values
    alone in a stage are both 75); null without a value.
    """
    pct = value.groupby(stage.astype(str).to_numpy()).rank(pct=True, method="average")
    return (pct * 100).round(1)


def segment_migration(current: pd.DataFrame, previous: pd.DataFrame | None) -> pd.DataFrame:
    """``previous_rfm_segment`` and ``previous_lifecycle_stage`` from the last scoring.

    Args:
        current: ``customer_id`` of this scoring (index kept).
        previous: The last scoring's ``customer_id, rfm_segment, lifecycle_stage``, or ``None``.
    """
    names = {"rfm_segment": "previous_rfm_segment", "lifecycle_stage": "previous_lifecycle_stage"}
    if previous is None:
        return pd.DataFrame(
            {new: pd.Series(pd.NA, index=current.index, dtype="string") for new in names.values()}
        )
    last = previous.drop_duplicates("customer_id").set_index("customer_id")
    found = last.reindex(current["customer_id"].to_numpy())
    return pd.DataFrame(
        {new: found[old].astype("string").to_numpy() for old, new in names.items()},
        index=current.index,
    )


def touches_within(
    touches: pd.DataFrame | None, customer_ids: pd.Series, as_of: pd.Timestamp, days: int
) -> np.ndarray:
    """Touches each customer (ids unique) had in ``[as_of - days, as_of)``: the frequency cap."""
    if touches is None or touches.empty:
        return np.zeros(len(customer_ids), dtype=np.int64)
    sent = touches["sent_at"]
    start = as_of - pd.Timedelta(days=days)
    recent = ((sent >= start) & (sent < as_of)).to_numpy(dtype=bool, na_value=False)
    ids = arrow_text(touches["customer_id"]).filter(pa.array(recent))
    at = lookup(ids, arrow_text(customer_ids).combine_chunks())  # NaN: not among the customers
    counts = np.bincount(at[~np.isnan(at)].astype(np.int64), minlength=len(customer_ids))
    return counts.astype(np.int64)


def recall_columns(scored: pd.DataFrame, snapshot: pd.DataFrame) -> pd.DataFrame:
    """P(reactivation if contacted), expected recovered value and the win-back rank.

    A customer without a reached channel (no touch in 180 days) has r = 0: nothing to recover
    through a channel the brand has not used.

    Only dormant and lost customers with a score get a ``recall_priority`` (1 = contact first;
    ties broken by ``customer_id``); the others are null.
    """
    channel = snapshot["best_channel"].astype("string")
    reply = np.full(len(snapshot), np.nan)
    for name in channel.dropna().unique():
        column = f"response_rate_{name}"
        if column in snapshot.columns:
            rows = (channel == name).fillna(False).to_numpy()
            reply[rows] = snapshot.loc[rows, column].to_numpy(dtype=float)
    churn = scored["churn_prob"].to_numpy(dtype=float)
    r = np.nan_to_num(reply, nan=0.0)
    p_react = 1.0 - churn * (1.0 - r)
    recovered = churn * r * scored["spend_if_buy_180d"].to_numpy(dtype=float)
    wanted = snapshot["lifecycle_stage"].isin(RECALL_STAGES).to_numpy() & ~np.isnan(recovered)
    priority = np.full(len(snapshot), np.nan)
    ids = pa.array(snapshot["customer_id"].astype("string[pyarrow]").array)
    id_rank = np.asarray(pc.rank(ids, sort_keys="ascending", tiebreaker="first"))  # no str objects
    rows = np.flatnonzero(wanted)
    order = rows[np.lexsort((id_rank[rows], -recovered[rows]))]
    priority[order] = np.arange(1, len(order) + 1)
    return pd.DataFrame(
        {
            "p_reactivation": np.where(wanted, p_react, np.nan),
            "expected_recovered_value": np.where(wanted, recovered, np.nan),
            "recall_priority": pd.array(np.where(wanted, priority, np.nan), dtype="Int64"),
        },
        index=snapshot.index,
    )


def order_value(snapshot: pd.DataFrame) -> np.ndarray:
    """Expected value of a customer's next order.

    The average order value over 365 days, else over the customer's whole history; null
    without orders or when refunds outweigh purchases (such a customer gets no coupon).
    """
    aov = snapshot["aov_365d"].to_numpy(dtype=float)
    orders = snapshot["orders_total"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        lifetime = snapshot["spend_total"].to_numpy(dtype=float) / orders
    value = np.where(np.isfinite(aov) & (aov > 0), aov, lifetime)
    return np.where(value > 0, value, np.nan)  # refunds beyond purchases: no order value


#: Text an opt-out column may hold for "yes, opted out" (any case); anything else is "no".
OPT_OUT_YES = ("1", "true", "t", "yes", "y")


def opt_out_flags(column: pd.Series) -> pd.Series:
    """``True`` where an opt-out attribute says yes.

    Booleans as they are, numbers when non-zero, text when one of :data:`OPT_OUT_YES` (a CSV
    keeps ``false`` as text, which must not count as a yes); nulls are no.
    """
    if pd.api.types.is_bool_dtype(column):
        return column.fillna(False).astype(bool)
    if pd.api.types.is_numeric_dtype(column):
        return column.fillna(0).astype(float) != 0
    text = column.astype("string").str.strip().str.lower()
    return text.isin(OPT_OUT_YES).fillna(False).astype(bool)


def p_within(p_30d: np.ndarray, days: float) -> np.ndarray:
    """P(order within ``days``) from P(order within 30 days), at a constant ordering rate."""
    return 1.0 - (1.0 - np.asarray(p_30d, dtype=float)) ** (days / 30.0)


def coupon_columns(
    scored: pd.DataFrame,
    snapshot: pd.DataFrame,
    uplift: np.ndarray,
    policy: CouponPolicy,
    *,
    budget: float | None,
    capped: np.ndarray,
    opted_out: np.ndarray,
    as_of: datetime.date,
    seed: int,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Each customer's coupon tier within the budget, the control group, and the totals.

    For customer i and tier t: P(order in the coupon window) without the coupon from the
    30-day purchase probability (:func:`p_within`), with it ``+ uplift[i, t]``; the expected
    incremental value and cost from :func:`models.policy.incremental_value`. A tier is open to
    customer i when they have a score, their stage is one of the tier's, their predicted value
    and churn probability reach the tier's minimums, they have not opted out and are not at
    the frequency cap. :func:`models.policy.allocate` picks the tiers within the budget and
    quotas; :func:`models.policy.control_group` holds out a share of each tier.

    Args:
        scored: ``customer_id``, ``churn_prob``, ``p_purchase_30d``, ``predicted_value_180d``,
            ``lifecycle_stage`` per customer.
        snapshot: The feature snapshot (same rows), for the expected order value.
        uplift: ``(n, t)`` purchase probability each tier adds, tiers in the policy's order.
        policy: The coupon policy.
        budget: Total expected coupon cost allowed (``None``: no limit).
        capped: Customers at the frequency cap.
        opted_out: Customers who opted out of contact.
        as_of: The scoring date (the control group's draw).
        seed: The control group's seed.
    """
    values = policy.coupon_values
    p_without = p_within(scored["p_purchase_30d"].to_numpy(dtype=float), policy.window_days)
    value, cost = incremental_value(
        p_without, uplift, order_value(snapshot), policy.margin_rate, values
    )
    stage = scored["lifecycle_stage"].astype(str).to_numpy()
    churn = scored["churn_prob"].to_numpy(dtype=float)
    worth = scored["predicted_value_180d"].to_numpy(dtype=float)
    open_to = ~capped & ~opted_out & np.isfinite(churn)
    eligible = np.column_stack(
        [
            open_to
            & np.isin(stage, list(t.stages))
            & (worth >= t.min_value_180d)
            & (churn >= t.min_churn_prob)
            for t in policy.tiers
        ]
    )
    choice = allocate(value, cost, eligible, budget, policy.quotas)
    control = control_group(scored["customer_id"], as_of, choice, policy.control_share, seed)
    chosen = choice >= 0
    pick = np.maximum(choice, 0)
    rows = np.arange(len(choice))
    names = np.array(policy.tier_names, dtype=object)
    out = pd.DataFrame(
        {
            "coupon_tier": pd.Series(names[pick], dtype="string").where(chosen).array,
            "coupon_value": np.where(chosen, values[pick], np.nan),
            "expected_incremental_value": np.where(chosen, value[rows, pick], np.nan),
            "expected_coupon_cost": np.where(chosen, cost[rows, pick], np.nan),
            "in_control_group": control,
            "frequency_capped": capped,
            "opted_out": opted_out,
        },
        index=scored.index,
    )
    sent = chosen & ~control
    totals = {
        "planned_cost": float(cost[rows[chosen], pick[chosen]].sum()),
        "budget_used": float(cost[rows[sent], pick[sent]].sum()),
        "control_cost_withheld": float(cost[rows[chosen & control], pick[chosen & control]].sum()),
        "expected_incremental_value": float(value[rows[sent], pick[sent]].sum()),
    }
    return out, totals
