"""The schedulable flows: typed parameters, their validation, and ``ltv_pipeline`` end to end."""

from __future__ import annotations

import datetime

import pandas as pd
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
from prefect.exceptions import ParameterTypeError
from prefect.utilities.callables import parameter_schema

from features.synthetic import generate_to
from flows.outputs import set_dir
from flows.pipeline import (
    FeaturesRun,
    ScoreRun,
    build_features,
    ltv_pipeline,
    score_customers,
    train_models,
)
from flows.settings import get_settings

AS_OF = datetime.date(2026, 7, 1)


@pytest.mark.parametrize(
    ("flow", "fields"),
    [
        (build_features, {"data", "as_of", "workdir"}),
        (train_models, {"data", "as_of", "workdir"}),
        (score_customers, {"data", "as_of", "workdir", "budget"}),
        (ltv_pipeline, {"data", "as_of", "workdir", "budget"}),
    ],
)
def test_each_flow_shows_its_fields_with_descriptions(flow, fields):
    schema = parameter_schema(flow.fn).model_dump()
    (model,) = schema["definitions"].values()
    assert set(model["properties"]) == fields
    assert model["required"] == ["data"]
    assert all(p.get("description") for p in model["properties"].values())
    if "budget" in fields:
        assert {"minimum": 0, "type": "number"} in model["properties"]["budget"]["anyOf"]


@pytest.mark.parametrize(
    "bad",
    [
        {"data": "d", "budget": -1},  # a negative budget
        {"data": "d", "as_of": "2026-13-01"},  # not a date
        {"data": "d", "budgte": 5},  # a misspelt field is refused, not ignored
        {"as_of": "2026-07-01"},  # no data
    ],
)
def test_bad_parameters_are_refused_before_anything_runs(bad, tmp_path):
    with pytest.raises(ParameterTypeError):
        score_customers(run=bad)


def test_as_of_defaults_to_today_in_the_settings_time_zone(tmp_path):
    settings = get_settings()
    today = pd.Timestamp.now(tz=settings.timezone).date()
    assert FeaturesRun(data=tmp_path).cutoff(settings) in {today, today + datetime.timedelta(1)}
    assert FeaturesRun(data=tmp_path, as_of=AS_OF).cutoff(settings) == AS_OF
    assert FeaturesRun(data=tmp_path).directory(settings) == settings.workdir
    assert ScoreRun(data=tmp_path, workdir=tmp_path).directory(settings) == tmp_path


def test_ltv_pipeline_runs_the_three_flows_in_order_as_child_runs(tmp_path, monkeypatch):
    data, work = tmp_path / "data", tmp_path / "work"
    generate_to(data, 1500, seed=11)
    monkeypatch.setenv("LTV_TRAIN__CUTOFF_MONTHS", "4")
    get_settings.cache_clear()
    try:
        state = ltv_pipeline(
            run={"data": str(data), "as_of": "2026-07-01", "workdir": str(work), "budget": 500},
            return_state=True,
        )
    finally:
        get_settings.cache_clear()
    assert state.is_completed()
    result = state.result()
    assert result["as_of"] == "2026-07-01"
    assert result["scoring"]["budget"] == 500 and result["scoring"]["planned_cost"] <= 500
    scores = pd.read_parquet(set_dir(work, AS_OF) / "scored_customers.parquet")
    assert len(scores) == result["scoring"]["customers"] > 0
    assert (work / "features" / "customer_features" / f"{AS_OF}.parquet").exists()
    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(
                    any_=[state.state_details.flow_run_id]
                )
            )
        )
        names = {client.read_flow(run.flow_id).name: run for run in children}
    assert set(names) == {"build_features", "train_models", "score_customers"}
    order = sorted(names, key=lambda name: names[name].start_time)
    assert order == ["build_features", "train_models", "score_customers"]
    assert all(run.state is not None and run.state.is_completed() for run in names.values())
    assert names["score_customers"].parameters["run"]["as_of"] == "2026-07-01"
