"""The flows ML engineers schedule, with typed parameters the Prefect UI shows and validates.

``build_features``, ``train_models`` and ``score_customers`` run the verbs of the same names
(``ltv features``, ``ltv train``, ``ltv score``) inside their own flow run; ``ltv_pipeline``
runs the three in order, each as a child run. Each takes one pydantic model, so a deployment's
form in the UI lists the fields with their descriptions and refuses bad values (a negative
budget, a date that is not one) before anything runs.

``as_of`` may be left out: a run then takes the date it was scheduled for (or, run at once,
today) in the settings' time zone, so the daily scoring at 06:00 Asia/Shanghai scores on
everything before midnight, even when it starts late or waits for another run.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict, Field

from flows.features import features
from flows.runs import end_abandoned_flow_runs
from flows.score import score
from flows.settings import Settings, get_settings
from flows.train import train

__all__ = [
    "FeaturesRun",
    "PipelineRun",
    "ScoreRun",
    "build_features",
    "ltv_pipeline",
    "score_customers",
    "train_models",
]


class FeaturesRun(BaseModel):
    """Where the data are and the cutoff: the parameters of every flow."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data: Path = Field(
        description="Directory holding transactions (and optionally touches and customers) "
        "as CSV or Parquet."
    )
    as_of: datetime.date | None = Field(
        default=None,
        description="The cutoff: nothing at or after midnight of this date is read. "
        "Default: the day the run was scheduled for, in the settings' time zone.",
    )
    workdir: Path | None = Field(
        default=None,
        description="Where snapshots, models and scores go. Default: the settings' workdir.",
    )

    def cutoff(self, settings: Settings) -> datetime.date:
        """``as_of``, or the day the run was scheduled for in the settings' time zone.

        Outside a flow run (and for a run started at once) that is today.
        """
        if self.as_of is not None:
            return self.as_of
        scheduled = pd.Timestamp(flow_run.scheduled_start_time)
        return scheduled.tz_convert(settings.timezone).date()

    def directory(self, settings: Settings) -> Path:
        """``workdir``, or the settings' one."""
        return self.workdir if self.workdir is not None else settings.workdir


class ScoreRun(FeaturesRun):
    """The parameters of a scoring: those of every flow and the coupon budget."""

    budget: float | None = Field(
        default=None,
        ge=0,
        description="Total expected coupon cost allowed. Default: the settings' budget.",
    )


class PipelineRun(ScoreRun):
    """The parameters of ``ltv_pipeline``: features, training and scoring at one cutoff."""


@flow(name="build_features")
def build_features(run: FeaturesRun) -> dict[str, Any]:
    """Validate the data, build the feature snapshot at the cutoff, serve it online."""
    settings = get_settings()
    return features.fn(run.data, run.cutoff(settings), run.directory(settings))


@flow(name="train_models")
def train_models(run: FeaturesRun) -> dict[str, Any]:
    """Train, evaluate, track and register the churn, next-purchase and value models."""
    settings = get_settings()
    return train.fn(run.data, run.cutoff(settings), run.directory(settings))


@flow(name="score_customers")
def score_customers(run: ScoreRun) -> dict[str, Any]:
    """Score every customer; write the coupon tiers, the control group and the win-back list."""
    settings = get_settings()
    return score.fn(run.data, run.cutoff(settings), run.directory(settings), run.budget)


@flow(name="ltv_pipeline")
def ltv_pipeline(run: PipelineRun) -> dict[str, Any]:
    """``build_features``, ``train_models`` and ``score_customers`` in order, at one cutoff.

    The cutoff is fixed once, so a run that crosses midnight does not mix two dates.
    """
    end_abandoned_flow_runs()  # tags this run with its process, too (R5)
    settings = get_settings()
    fixed = FeaturesRun(data=run.data, as_of=run.cutoff(settings), workdir=run.directory(settings))
    built = build_features(fixed)
    trained = train_models(fixed)
    scored = score_customers(ScoreRun(**fixed.model_dump(), budget=run.budget))
    return {"as_of": str(fixed.as_of), "features": built, "training": trained, "scoring": scored}
