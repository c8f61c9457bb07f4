"""The demo: everything that exists, end to end, on synthetic data."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from prefect import flow

from features.contracts import cutoff_timestamp
from flows.data import add_defects, describe, generate_data, load_data, rules_from
from flows.features import lookup
from flows.pipeline import PipelineRun, ltv_pipeline
from flows.settings import get_settings

#: Share of demo rows given a realistic defect, so the quarantine has something to show.
DEMO_DEFECTS = 0.002
#: The demo's "this morning": the day after the synthetic window ends.
DEMO_AS_OF = datetime.date(2026, 7, 1)
#: The demo's coupon budget (expected cost, CNY) per customer: 8,000 for 20,000 customers.
DEMO_BUDGET_PER_CUSTOMER = 0.4


@flow(name="ltv-demo")
def demo(customers: int, workdir: Path) -> dict[str, Any]:
    """Everything that exists, end to end, on synthetic data."""
    settings = get_settings()
    data = workdir / "demo-data"
    generate_data(data, customers, 730, settings.seed, "csv")
    add_defects(data, DEMO_DEFECTS, settings.seed)
    dataset = load_data(data, rules_from(settings), settings.ingest.encoding)
    budget = DEMO_BUDGET_PER_CUSTOMER * customers
    run = PipelineRun(data=data, as_of=DEMO_AS_OF, workdir=workdir, budget=budget)
    done = ltv_pipeline(run)  # features, training and scoring: what the schedules run
    morning = cutoff_timestamp(DEMO_AS_OF, settings.timezone).to_pydatetime()
    example = lookup(done["features"]["top_customer"], workdir, at=morning)
    return describe(dataset) | {
        "data": str(data),
        "features": done["features"],
        "lookup": example,
        "training": done["training"],
        "scoring": done["scoring"],
    }
