"""``ltv score`` end to end on synthetic data: champion models, tables, coupon tiers, win-back."""

from __future__ import annotations

import datetime
import hashlib
import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from prefect.artifacts import Artifact

from features.io import InputError
from features.synthetic import generate_to
from flows.features import lookup
from flows.outputs import TABLES, read_set, set_dir
from flows.score import score
from flows.settings import get_settings
from flows.train import train
from models.policy import load_policy

AS_OF = datetime.date(2026, 7, 1)
LATER = datetime.date(2026, 7, 8)
BUDGET = 1_500.0
#: A customer id that a spreadsheet would run as a formula.
HOSTILE = '=HYPERLINK("http://evil.example","x")'
#: The columns DESIGN.md fixes for scored_customers.
DESIGN_COLUMNS = [
    "customer_id",
    "as_of",
    "churn_prob",
    "p_purchase_30d",
    "expected_next_purchase_date",
    "predicted_value_180d",
    "rfm_segment",
    "lifecycle_stage",
    "coupon_tier",
    "coupon_value",
    "in_control_group",
    "recall_priority",
    "best_channel",
    "reason_1",
    "reason_2",
    "reason_3",
    "model_version",
    "run_id",
]


def _hostile_id(data) -> str:
    """Rename the first customer to a formula, in every table."""
    tx = pd.read_parquet(data / "transactions.parquet")
    victim = str(tx["customer_id"].iloc[0])
    for name in ("transactions", "touches", "customers"):
        path = data / f"{name}.parquet"
        frame = pd.read_parquet(path)
        frame["customer_id"] = frame["customer_id"].astype(str).replace(victim, HOSTILE)
        frame.to_parquet(path, index=False)
    return victim


def _digests(work, as_of) -> dict[str, str]:
    out = {}
    for kind, suffix in (("scores", "parquet"), ("exports", "csv")):
        for name in TABLES:
            path = set_dir(work, as_of, kind) / f"{name}.{suffix}"
            out[f"{kind}/{name}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def scored(tmp_path_factory, prefect_harness):
    work = tmp_path_factory.mktemp("score")
    data = work / "data"
    generate_to(data, 3000, seed=7)
    _hostile_id(data)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LTV_TRAIN__CUTOFF_MONTHS", "4")
        get_settings.cache_clear()
        with pytest.raises(InputError, match="run ltv train first"):
            score(data=data, as_of=AS_OF, workdir=work, budget=BUDGET)
        train(data=data, as_of=AS_OF, workdir=work)
        first = score(data=data, as_of=AS_OF, workdir=work, budget=BUDGET)
        digests = _digests(work, AS_OF)
        later = score(data=data, as_of=LATER, workdir=work, budget=BUDGET)
        again = score(data=data, as_of=AS_OF, workdir=work, budget=BUDGET)
        shown = lookup(HOSTILE, work)
    get_settings.cache_clear()
    return {
        "work": work,
        "data": data,
        "first": first,
        "later": later,
        "again": again,
        "digests": digests,
        "lookup": shown,
    }


def _table(state, name, as_of=AS_OF) -> pd.DataFrame:
    return pd.read_parquet(set_dir(state["work"], as_of) / f"{name}.parquet")


def test_scored_customers_has_the_design_columns_and_one_row_per_customer(scored):
    table = _table(scored, "scored_customers")
    assert set(DESIGN_COLUMNS) <= set(table.columns)
    extra = {
        "churn_risk_band",
        "p_alive_bgnbd",
        "expected_purchases_180d_bgnbd",
        "value_percentile_in_stage",
        "previous_rfm_segment",
        "previous_lifecycle_stage",
        "categories_due_7d",
        "feature_service",
    }
    assert extra <= set(table.columns)
    assert table["customer_id"].is_unique
    snapshot = pd.read_parquet(
        scored["work"] / "features" / "customer_features" / f"{AS_OF}.parquet"
    )
    assert len(table) == len(snapshot)
    buyers = table["lifecycle_stage"] != "acquisition"
    assert table.loc[buyers, "churn_prob"].between(0, 1).all()
    assert table.loc[~buyers, "churn_prob"].isna().all()
    assert table["run_id"].nunique() == 1 and len(table["run_id"].iloc[0]) == 16
    assert table["model_version"].iloc[0].startswith("ltv-churn:1|")
    assert set(table["churn_risk_band"].dropna()) <= {"high", "medium", "low"}
    # The percentile is within the stage: every stage's top customer is at 100.
    top = table.groupby("lifecycle_stage")["value_percentile_in_stage"].max().dropna()
    assert (top == 100).all()
    assert table.loc[buyers, "p_alive_bgnbd"].between(0, 1).all()
    likely = table["churn_prob"] < 0.5
    dates = table["expected_next_purchase_date"]
    assert dates[likely].notna().all() and dates[~likely].isna().all()
    ahead = pd.to_datetime(dates[likely]) - pd.Timestamp(AS_OF)
    assert ahead.dt.days.between(0, 90).all()
    due = table["categories_due_7d"].dropna()
    assert len(due) > 0 and not due.str.contains("_").any()


def test_reasons_are_plain_words_for_every_scored_customer(scored):
    table = _table(scored, "scored_customers")
    buyers = table[table["churn_prob"].notna()]
    columns = set(
        pd.read_parquet(
            scored["work"] / "features" / "customer_features" / f"{AS_OF}.parquet"
        ).columns
    )
    for slot in ("reason_1", "reason_2", "reason_3"):
        texts = buyers[slot]
        assert texts.notna().all(), slot
        assert not texts.str.contains("_").any()
        for text in texts.drop_duplicates().head(200):
            assert not any(column in text for column in columns if "_" in column)
    assert (table.loc[table["churn_prob"].isna(), "reason_1"] == "no order yet").all()


def test_budget_quotas_control_group_and_lists(scored):
    table = _table(scored, "scored_customers")
    summary = scored["first"]
    tiered = table["coupon_tier"].notna()
    assert tiered.sum() > 20, "the budget buys coupons"
    assert table.loc[tiered, "expected_coupon_cost"].sum() <= BUDGET + 1e-6
    assert summary["planned_cost"] <= BUDGET + 1e-6
    assert summary["budget_used"] + summary["control_cost_withheld"] == pytest.approx(
        summary["planned_cost"]
    )
    assert (table.loc[tiered, "expected_incremental_value"] > 0).all()
    policy = load_policy(get_settings().score.policy_file or _default_policy())
    for name, value in zip(policy.tier_names, policy.coupon_values, strict=True):
        rows = table[table["coupon_tier"] == name]
        assert (rows["coupon_value"] == value).all()
        if len(rows) >= 20:
            assert abs(rows["in_control_group"].mean() - policy.control_share) < 0.06, name
    assert not table.loc[~tiered, "in_control_group"].any()
    coupons = _table(scored, "coupon_list")
    sent = table[tiered & ~table["in_control_group"]]
    assert sorted(coupons["customer_id"]) == sorted(sent["customer_id"])
    recall = _table(scored, "recall_list")
    assert len(recall) > 0
    assert recall["recall_priority"].is_monotonic_increasing
    assert set(recall["customer_id"]) <= set(
        table.loc[table["lifecycle_stage"].isin(["dormant", "lost"]), "customer_id"]
    )
    assert recall["best_channel"].notna().all()
    values = recall["expected_recovered_value"].to_numpy()
    assert (np.diff(values) <= 1e-12).all(), "ranked by expected recovered value"


def _default_policy():
    from flows.score import default_policy_file

    return default_policy_file()


def test_rerun_is_byte_identical_and_segment_migration_is_recorded(scored):
    """R3: the same inputs give the same bytes; a later scoring shows where customers were."""
    assert _digests(scored["work"], AS_OF) == scored["digests"]
    assert scored["again"]["run_id"] == scored["first"]["run_id"]
    first, later = _table(scored, "scored_customers"), _table(scored, "scored_customers", LATER)
    assert first["previous_rfm_segment"].isna().all()
    merged = later.merge(first, on="customer_id", suffixes=("", "_before"))
    assert (merged["previous_rfm_segment"] == merged["rfm_segment_before"]).all()
    assert (merged["previous_lifecycle_stage"] == merged["lifecycle_stage_before"]).all()


def test_exports_neutralise_formulas_and_duckdb_holds_each_date_once(scored):
    import duckdb

    text = (set_dir(scored["work"], AS_OF, "exports") / "scored_customers.csv").read_text()
    assert "'" + HOSTILE.replace('"', '""') in text
    assert "\n" + HOSTILE not in text and "," + HOSTILE not in text
    raw = _table(scored, "scored_customers")
    assert HOSTILE in set(raw["customer_id"]), "the Parquet keeps the value itself"
    with duckdb.connect(str(scored["work"] / "ltv.duckdb"), read_only=True) as con:
        counts = dict(
            con.execute(
                "SELECT as_of::VARCHAR, count(*) FROM scored_customers GROUP BY 1"
            ).fetchall()
        )
    assert counts == {
        str(AS_OF): len(raw),
        str(LATER): len(_table(scored, "scored_customers", LATER)),
    }


def test_lookup_shows_the_latest_score_and_reasons(scored):
    row = scored["lookup"]["score"]
    later = _table(scored, "scored_customers", LATER).set_index("customer_id").loc[HOSTILE]
    assert row["customer_id"] == HOSTILE
    assert row["as_of"] == LATER
    assert row.get("churn_prob") == pytest.approx(later["churn_prob"])
    assert row["reason_1"] == later["reason_1"]


def test_tiering_beats_random_targeting_on_the_true_coupon_effect(scored):
    """Judged by the generator's truth, not by the model's own estimate."""
    table = _table(scored, "scored_customers")
    truth = pd.read_parquet(scored["data"] / "ground_truth.parquet")
    snapshot = pd.read_parquet(
        scored["work"] / "features" / "customer_features" / f"{AS_OF}.parquet"
    )
    policy = load_policy(_default_policy())
    frame = table.merge(truth, on="customer_id", how="left").merge(
        snapshot[["customer_id", "aov_365d"]], on="customer_id"
    )

    def true_value(rows: pd.DataFrame, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per customer: true incremental margin less coupon cost, and true coupon cost."""
        alive = rows["alive_at_end"].astype("boolean").fillna(False).to_numpy(bool)
        effect = rows["coupon_effect"].fillna(0).to_numpy(float)
        lift = alive * (1 - (1 - effect) ** ((values / 20.0) ** 0.6))
        p30 = rows["prob_order_next_30d"].fillna(0).to_numpy(float)
        p0 = 1 - (1 - p30) ** (policy.window_days / 30)
        aov = rows["aov_365d"].fillna(0).to_numpy(float)
        cost = np.minimum(p0 + lift, 1) * values
        return lift * aov * policy.margin_rate - cost, cost

    chosen = frame[frame["coupon_tier"].notna()]
    mine, my_cost = true_value(chosen, chosen["coupon_value"].to_numpy(float))
    ours, budget = mine.sum(), my_cost.sum()
    pool = frame[frame["churn_prob"].notna()]
    rng = np.random.default_rng(0)
    draws = []
    for _ in range(30):  # random customers and tiers until the same true cost is spent
        rows = pool.iloc[rng.permutation(len(pool))]
        values = rng.choice(chosen["coupon_value"].to_numpy(float), len(rows))
        value, cost = true_value(rows, values)
        take = int(np.searchsorted(np.cumsum(cost), budget)) + 1
        draws.append(value[:take].sum())
    assert ours > np.percentile(draws, 95), (ours, np.mean(draws))


WRITER = textwrap.dedent(
    """
    import datetime, sys
    from pathlib import Path
    import pandas as pd
    from flows.outputs import write_set
    work, marker = Path(sys.argv[1]), sys.argv[2]
    for i in range(8):
        day = datetime.date(2026, 7, 1)
        frame = pd.DataFrame({"customer_id": [marker] * 50, "as_of": [day] * 50})
        tables = {name: frame for name in ("scored_customers", "coupon_list", "recall_list")}
        write_set(work, datetime.date(2026, 7, 1), tables, {"marker": marker, "i": i})
    """
)


def test_two_writers_at_once_leave_one_whole_set(tmp_path):
    """R4: concurrent scorings of one as_of never leave a mixed or partial set."""
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), marker])
        for marker in ("a", "b")
    ]
    seen = set()
    final = set_dir(tmp_path, AS_OF)
    while any(w.poll() is None for w in writers):
        try:
            tables = read_set(tmp_path, AS_OF)
        except FileNotFoundError:
            continue  # not written yet
        markers = {frame["customer_id"].iloc[0] for frame in tables.values()}
        assert len(markers) == 1, markers
        seen |= markers
    assert all(w.wait() == 0 for w in writers)
    markers = {pd.read_parquet(final / f"{name}.parquet")["customer_id"].iloc[0] for name in TABLES}
    assert len(markers) == 1
    import duckdb

    with duckdb.connect(str(tmp_path / "ltv.duckdb"), read_only=True) as con:
        rows = con.execute(
            "SELECT count(*), count(DISTINCT customer_id) FROM coupon_list"
        ).fetchone()
    assert rows == (50, 1)
    assert not [p for p in final.parent.iterdir() if p.name.startswith(".")]


def test_a_failed_write_leaves_the_previous_set_whole(tmp_path):
    """R1: a scoring that dies while writing leaves the old set, and no temporary files."""
    from flows.outputs import write_set

    good = pd.DataFrame({"customer_id": ["a"], "as_of": [AS_OF]})
    write_set(tmp_path, AS_OF, dict.fromkeys(TABLES, good), {"run": 1})
    before = {p.name: p.read_bytes() for p in set_dir(tmp_path, AS_OF).iterdir()}
    broken = pd.DataFrame({"customer_id": ["b", 1.5], "as_of": [AS_OF, AS_OF]})  # mixed types
    with pytest.raises(Exception):  # noqa: B017 - whatever Arrow raises
        write_set(tmp_path, AS_OF, {"scored_customers": good, "coupon_list": broken}, {"run": 2})
    after = {p.name: p.read_bytes() for p in set_dir(tmp_path, AS_OF).iterdir()}
    assert after == before
    hidden = [p for kind in ("scores", "exports") for p in (tmp_path / kind).iterdir()]
    assert all(not p.name.startswith(".") for p in hidden), hidden


def test_two_scorings_at_once_finish_and_leave_the_same_bytes(scored, ltv_at_once):
    """R4: two ``ltv score`` processes for one as_of: both finish, one whole set, same bytes."""
    runs = ltv_at_once(
        "score",
        "--data",
        str(scored["data"]),
        "--as-of",
        str(AS_OF),
        "--budget",
        str(BUDGET),
        "--workdir",
        str(scored["work"]),
    )
    for run in runs:
        assert run.returncode == 0, run.stderr[-3000:]
        assert "database is locked" not in run.stderr
    assert _digests(scored["work"], AS_OF) == scored["digests"]


def test_a_date_before_the_champions_training_is_refused(scored):
    with pytest.raises(InputError, match="was trained with data up to 2026-07-01"):
        score(
            data=scored["data"],
            as_of=datetime.date(2026, 6, 1),
            workdir=scored["work"],
            budget=BUDGET,
        )


def test_a_column_without_values_does_not_fix_its_duckdb_type(tmp_path):
    """An all-null text column on the first date must not make DuckDB's column type NULL."""
    import duckdb

    from flows.outputs import write_set

    empty = pd.DataFrame({"customer_id": ["a"], "as_of": [AS_OF], "best_channel": [None]})
    write_set(tmp_path, AS_OF, dict.fromkeys(TABLES, empty), {})
    later = pd.DataFrame({"customer_id": ["a"], "as_of": [LATER], "best_channel": ["wecom"]})
    write_set(tmp_path, LATER, dict.fromkeys(TABLES, later), {})
    with duckdb.connect(str(tmp_path / "ltv.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT best_channel FROM coupon_list ORDER BY as_of").fetchall()
    assert rows == [(None,), ("wecom",)]


def test_every_scoring_run_leaves_artifacts_for_the_campaign_team(scored):
    """The Prefect UI shows the run's summary (markdown) and tier counts (table)."""
    summary = scored["again"]
    markdown = Artifact.get(f"ltv-score-{AS_OF}")
    assert markdown is not None and markdown.type == "markdown"
    text = str(markdown.data)
    assert f"# Scoring {AS_OF}" in text and summary["run_id"] in text
    assert f"control group: {summary['control_group']:,}" in text
    for name, model in summary["models"].items():
        assert f"{name} v{model['version']}" in text and model["run_id"] in text
    for reason in list(summary["top_reasons_high_risk"])[:3]:
        assert reason in text
    table = Artifact.get(f"ltv-score-{AS_OF}-tiers")
    assert table is not None and table.type == "table"
    rows = table.data if isinstance(table.data, list) else json.loads(str(table.data))
    assert {r["tier"]: r["coupons"] for r in rows} == summary["coupons_per_tier"]
    assert sum(r["control"] for r in rows) == summary["control_group"]


def _attempts(state, task_name: str) -> list[int]:
    """How many times each run of ``task_name`` in the flow run of ``state`` ran."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            )
        )
    return [r.run_count for r in runs if r.task_key.startswith(task_name.replace("-", "_"))]


def test_io_errors_in_storage_and_tracking_are_retried_and_change_nothing(scored, monkeypatch):
    """R5: a failing disk write and a failing MLflow read pass on retry; the bytes are the same."""
    import flows.score as scoring

    from .conftest import fails_once

    monkeypatch.setattr(
        scoring, "write_set", fails_once(scoring.write_set, OSError(28, "No space left on device"))
    )
    monkeypatch.setattr(
        scoring,
        "tracker_for",
        fails_once(scoring.tracker_for, ConnectionError("MLflow server unreachable (injected)")),
    )
    state = score(
        data=scored["data"], as_of=AS_OF, workdir=scored["work"], budget=BUDGET, return_state=True
    )
    assert state.is_completed()
    assert _attempts(state, "write_outputs") == [2]
    assert _attempts(state, "load_champions") == [2]
    assert _digests(scored["work"], AS_OF) == scored["digests"]


def test_unusable_input_is_not_retried(tmp_path):
    """An input error fails at once: retrying would read the same bad file again."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "transactions.csv").write_text("customer_id,order_id,ordered_at\nc1,o1,2026-01-01\n")
    state = score(data=data, as_of=AS_OF, workdir=tmp_path / "work", return_state=True)
    assert state.is_failed()
    with pytest.raises(InputError):
        state.result()
    assert _attempts(state, "load_champions") == [1]


@pytest.mark.parametrize(
    "after",
    ["load-champions", "load-dataset", "build-features", "coupon-uplift", "score-customers"],
)
def test_a_scoring_killed_after_a_task_then_rerun_leaves_the_same_bytes(scored, after):
    """R1: SIGKILL once ``after`` has finished; a rerun writes what an uninterrupted run did."""
    import signal

    from .conftest import kill_after, running_flow_runs

    args = ("score", "--data", str(scored["data"]), "--as-of", str(AS_OF))
    code = kill_after((*args, "--budget", str(BUDGET), "--workdir", str(scored["work"])), after)
    assert code == -signal.SIGKILL
    again = score(data=scored["data"], as_of=AS_OF, workdir=scored["work"], budget=BUDGET)
    assert again["run_id"] == scored["first"]["run_id"]
    assert _digests(scored["work"], AS_OF) == scored["digests"]
    leftovers = [p for kind in ("scores", "exports") for p in (scored["work"] / kind).glob(".*")]
    assert leftovers == []
    assert running_flow_runs() == []  # the killed run was marked Crashed by the rerun (R5)
