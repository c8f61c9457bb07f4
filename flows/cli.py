"""The ``ltv`` command: one verb per DESIGN.md entry, each a Prefect flow run.

Bad input ends with one line on stderr naming the file and column, exit code 2, no traceback.
A verb that a later release adds says so in one line and exits with code 3.
``--help`` needs no server: Prefect is imported only when a verb runs.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn
from zoneinfo import ZoneInfo

import typer

from features.io import InputError

EXIT_INPUT = 2
EXIT_NOT_YET = 3

app = typer.Typer(
    name="ltv",
    help="Customer lifetime value for private-domain channels: features, models, scored lists.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Workdir = Annotated[
    Path | None,
    typer.Option("--workdir", help="Work directory (default from settings: ./ltv-work)."),
]
DataDir = Annotated[Path, typer.Option("--data", help="Directory with the input tables.")]
AsOf = Annotated[str, typer.Option("--as-of", help="Scoring / cutoff date, YYYY-MM-DD.")]
Runner = Annotated[
    str, typer.Option("--runner", help="local, or dask: partitioned by customer on a Dask cluster.")
]
DaskAddress = Annotated[
    str | None,
    typer.Option(help="Dask scheduler, e.g. tcp://10.0.0.5:8786 (default: a local cluster)."),
]
Format = Annotated[
    Literal["parquet", "csv"], typer.Option("--format", help="File format: parquet or csv.")
]

# Quiet, one-shot defaults for Prefect's temporary server; a configured server overrides them.
_PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_FOREMAN_ENABLED": "false",
}


def main() -> None:
    """Entry point of the ``ltv`` console script."""
    for key, value in _PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    app()


def _settings(workdir: Path | None) -> Any:
    """The settings, with ``--workdir`` (when given) winning over environment and file.

    A profile missing a server or secret (``LTV_ENV=prod``) ends here: one line, exit code 2.
    """
    from flows.settings import get_settings

    if workdir is not None:
        os.environ["LTV_WORKDIR"] = str(workdir)
        get_settings.cache_clear()
    try:
        return get_settings()
    except InputError as exc:
        _fail(f"error: {exc}", EXIT_INPUT)


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(code)


def _run(flow_call: Callable[[], Any]) -> Any:
    """Run a flow; turn input errors into one line and exit code 2."""
    _quiet_input_error_tracebacks()
    try:
        return flow_call()
    except InputError as exc:
        _fail(f"error: {exc}", EXIT_INPUT)


class _DropInputErrorTraceback(logging.Filter):
    """Keep Prefect's log line for a failed run, without the traceback of an input error."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], InputError):
            record.exc_info = None
            record.exc_text = None
        return True


def _quiet_input_error_tracebacks() -> None:
    import prefect  # noqa: F401  (sets up Prefect's logging handlers)

    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(_DropInputErrorTraceback())


def _check_runner(runner: str, address: str | None) -> None:
    """``--runner`` is local or dask; ``--dask-address`` goes with dask."""
    if runner not in ("local", "dask"):
        _fail(f"error: --runner takes local or dask, not {runner!r}", EXIT_INPUT)
    if address and runner != "dask":
        _fail("error: --dask-address needs --runner dask", EXIT_INPUT)


def _on_runner(flow_obj: Any, runner: str, address: str | None) -> Any:
    """The flow, with a Dask task runner for ``--runner dask`` (the scheduler must answer)."""
    if runner != "dask":
        return flow_obj
    from flows.dask import reachable, task_runner
    from flows.settings import get_settings

    settings = get_settings()
    if address:
        why = reachable(address, settings.dask.connect_timeout)
        if why is not None:
            _fail(f"error: --dask-address {address}: no Dask scheduler answers ({why})", EXIT_INPUT)
    return flow_obj.with_options(task_runner=task_runner(settings, address))


def _preflight(data: Path) -> None:
    from features.dataset import check_dataset
    from flows.settings import get_settings

    try:
        check_dataset(data, encoding=get_settings().ingest.encoding)
    except InputError as exc:
        _fail(f"error: {exc}", EXIT_INPUT)


def _print_validation(result: dict[str, Any]) -> None:
    for name, report in result["tables"].items():
        typer.echo(
            f"{name:<13} rows_in={report['rows_in']:>10,}  accepted={report['accepted']:>10,}  "
            f"quarantined={report['quarantined']:>8,}  duplicates={report['duplicates']:,}"
        )
        for reason, count in sorted(report["reasons"].items(), key=lambda kv: -kv[1])[:12]:
            typer.echo(f"{'':<15}{count:>8,} × {reason}")
        protected = report["hashed_columns"] + report["dropped_columns"]
        if protected:
            typer.echo(
                f"{'':<15}identifiers hashed: {report['hashed_columns'] or '-'}; "
                f"dropped: {report['dropped_columns'] or '-'}"
            )
    s = result["summary"]
    typer.echo(
        f"customers={s['customers']:,} buyers={s['buyers']:,} orders={s['orders']:,} "
        f"lines={s['lines']:,} "
        f"touches={s['touches']:,} orders from {s['first_order']:%Y-%m-%d} "
        f"to {s['last_order']:%Y-%m-%d}"
    )
    typer.echo(
        f"rows_in={s['rows_in']:,} = accepted {s['rows_in'] - s['quarantined']:,} "
        f"+ quarantined {s['quarantined']:,} (quarantine: {result['quarantine_dir']})"
    )


def _print_features(result: dict[str, Any]) -> None:
    typer.echo(
        f"features at {result['as_of']}: {result['customers']:,} customers × "
        f"{result['columns']} features -> {result['path']}"
    )
    for family in ("lifecycle_stage", "rfm_segment"):
        counts = ", ".join(f"{k} {v:,}" for k, v in result[family].items())
        typer.echo(f"  {family}: {counts}")
    online = result["online"]
    typer.echo(f"  feast: {len(result['feature_views'])} feature views applied")
    if online["written"]:
        typer.echo(
            f"  online: {online['customers']:,} customers written to {len(online['written'])} views"
        )
    for view, reason in online["skipped"].items():
        typer.echo(f"  online: {view} not written: {reason}")


def _print_lookup(result: dict[str, Any], timezone: str) -> None:
    _print_online(result, timezone)
    row = result.get("score") or {}
    if not row:
        typer.echo(f"customer {result['customer_id']}: no scores (run ltv score)")
        return
    typer.echo(f"latest scores (as of {row['as_of']:%Y-%m-%d}, run {row.get('run_id', '-')}):")
    for name, value in row.items():
        if name not in ("customer_id", "as_of", "run_id") and not name.startswith("reason_"):
            typer.echo(f"    {name:<32} {_cell(value)}")
    typer.echo("  why (strongest drivers of the churn score):")
    for i in (1, 2, 3):
        if f"reason_{i}" in row:
            typer.echo(f"    {i}. {row[f'reason_{i}']}")


def _print_online(result: dict[str, Any], timezone: str) -> None:
    if not result["views"]:
        typer.echo("no feature views registered yet: run ltv features first")
        return
    if not result["found"]:
        typer.echo(f"customer {result['customer_id']}: no online features")
        return
    typer.echo(f"customer {result['customer_id']}: online features")
    for view in result["views"]:
        stamp = view["as_of"]
        if stamp is None:
            typer.echo(f"  {view['view']}  no values")
            continue
        local = datetime.fromisoformat(stamp).astimezone(ZoneInfo(timezone))
        state = "current" if view["current"] else "not current (older than the view's TTL)"
        typer.echo(f"  {view['view']}  as of {local:%Y-%m-%d %H:%M %z}  {state}")
        if not view["current"]:
            continue
        for name, value in view["values"].items():
            typer.echo(f"    {name:<32} {_cell(value)}")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@app.command()
def demo(
    customers: Annotated[int, typer.Option(help="Synthetic customers to generate.")] = 20_000,
    workdir: Workdir = None,
) -> None:
    """Everything that exists, end to end, on synthetic data."""
    from flows.demo import demo as demo_flow

    settings = _settings(workdir)
    result = _run(lambda: demo_flow(customers=customers, workdir=settings.workdir))
    typer.echo(f"demo data: {result['data']}")
    _print_validation(result)
    _print_features(result["features"])
    typer.echo(f"\n$ ltv train --data {result['data']} --as-of {result['features']['as_of']}")
    _print_training(result["training"])
    champions = ", ".join(
        f"{m['model']} v{m['version']}"
        for m in result["training"]["models"].values()
        if m["alias"] == "champion"
    )
    typer.echo(f"champions: {champions or 'unchanged (no new version beat the champion)'}")
    as_of = result["features"]["as_of"]
    budget = result["scoring"]["budget"]
    typer.echo(f"\n$ ltv score --data {result['data']} --as-of {as_of} --budget {budget:g}")
    _print_scoring(result["scoring"])
    typer.echo(f"\n$ ltv lookup {result['lookup']['customer_id']} --at {as_of}")
    _print_lookup(result["lookup"], settings.timezone)
    server = settings.mlflow.tracking_uri or ""
    ui = server if server.startswith(("http://", "https://")) else None
    typer.echo(f"MLflow UI: {ui or f'make mlflow-ui WORKDIR={settings.workdir}'}")
    typer.echo(f"Prefect UI: {_prefect_ui()}")


def _check_budget(budget: float | None) -> None:
    """A budget is a finite amount, 0 or more (NaN would read as no limit)."""
    if budget is not None and not (math.isfinite(budget) and budget >= 0):
        _fail(f"error: --budget must be a finite amount, 0 or more, not {budget}", EXIT_INPUT)


def _prefect_ui() -> str:
    """Where the flow runs can be seen: the configured server's UI, or how to open one."""
    from prefect.settings import PREFECT_UI_URL

    return PREFECT_UI_URL.value() or (
        "the runs are in Prefect's local database: `prefect server start` shows them at "
        "http://127.0.0.1:4200"
    )


@app.command()
def generate(
    customers: Annotated[int, typer.Option(help="Number of customers.")],
    out: Annotated[Path, typer.Option(help="Output directory.")],
    days: Annotated[int, typer.Option(help="Days of history.")] = 730,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    fmt: Format = "parquet",
    messy: Annotated[
        float, typer.Option(help="Share of rows given a realistic defect (CSV only), e.g. 0.002.")
    ] = 0.0,
    workdir: Workdir = None,
) -> None:
    """Generate synthetic private-domain data with a ground-truth file."""
    from flows.data import generate as generate_flow

    if not 0 <= messy < 1 or (messy and fmt != "csv"):
        _fail("error: --messy takes a share in [0, 1) and needs --format csv", EXIT_INPUT)
    paths = _run(
        lambda: generate_flow(
            customers=customers, out=out, days=days, seed=seed, fmt=fmt, messy=messy
        )
    )
    for path in paths:
        typer.echo(path)


@app.command("import")
def import_(
    source: Annotated[str, typer.Argument(help="Dataset to import: completejourney.")],
    out: Annotated[Path, typer.Option(help="Output directory.")],
    fmt: Format = "parquet",
    workdir: Workdir = None,
) -> None:
    """Import a public dataset into the input contract."""
    from flows.data import import_dataset

    if source != "completejourney":
        _fail(f"error: unknown dataset {source!r} (available: completejourney)", EXIT_INPUT)
    paths = _run(lambda: import_dataset(out=out, source="completejourney", fmt=fmt))
    for path in paths:
        typer.echo(path)


@app.command()
def validate(data: DataDir, workdir: Workdir = None) -> None:
    """Validate a data directory; print accepted and quarantined counts."""
    from flows.data import validate as validate_flow

    _preflight(data)
    _print_validation(_run(lambda: validate_flow(data=data)))


def _not_yet(verb: str) -> NoReturn:
    _fail(
        f"ltv {verb}: not implemented yet (DESIGN.md lists it; no release builds it yet)",
        EXIT_NOT_YET,
    )


def _as_of(value: str, option: str = "--as-of") -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        _fail(f"error: {option} {value!r} is not a date (YYYY-MM-DD)", EXIT_INPUT)


def _midnight(day: date, timezone: str) -> datetime:
    """The start of ``day`` in the configured time zone (the same rule as feature cutoffs)."""
    from features.contracts import cutoff_timestamp

    return cutoff_timestamp(day, timezone).to_pydatetime()


@app.command()
def features(
    data: DataDir,
    as_of: AsOf,
    workdir: Workdir = None,
    runner: Runner = "local",
    dask_address: DaskAddress = None,
) -> None:
    """Build point-in-time features at --as-of and write the snapshot."""
    from flows.features import features as features_flow

    _check_runner(runner, dask_address)
    cutoff = _as_of(as_of)
    settings = _settings(workdir)
    _preflight(data)
    run = _on_runner(features_flow, runner, dask_address)
    result = _run(lambda: run(data=data, as_of=cutoff, workdir=settings.workdir))
    _print_features(result | {"as_of": str(cutoff)})


@app.command()
def train(
    data: DataDir,
    as_of: AsOf,
    workdir: Workdir = None,
    runner: Runner = "local",
    dask_address: DaskAddress = None,
) -> None:
    """Train churn, next-purchase and value models; track and register them in MLflow."""
    from flows.train import train as train_flow

    _check_runner(runner, dask_address)
    cutoff = _as_of(as_of)
    settings = _settings(workdir)
    _preflight(data)
    run = _on_runner(train_flow, runner, dask_address)
    result = _run(lambda: run(data=data, as_of=cutoff, workdir=settings.workdir))
    _print_training(result)


def _print_training(result: dict[str, Any]) -> None:
    typer.echo(
        f"trained on cutoffs {', '.join(result['training_cutoffs'])}; "
        f"held out {result['heldout_cutoff']} "
        f"({result['params']['training_rows']:,} training rows, "
        f"{result['params']['heldout_rows']:,} held-out rows)"
    )
    rows = {
        "churn": ("auc", "ece"),
        "next_purchase": ("auc", "mae_days"),
        "value": ("gini", "decile_mape"),
    }
    for kind, done in result["models"].items():
        m = done["metrics"]
        first, second = rows[kind]
        typer.echo(
            f"  {done['model']:<18} v{done['version']:<3} {done['alias']:<10} "
            f"{first} {m[first]:.4f} (BG/NBD {m[first + '_bgnbd']:.4f}, "
            f"RFM {m[first + '_rfm']:.4f})  {second} {m[second]:.4f}"
        )
        typer.echo(f"      {done['reason']}")
    typer.echo(f"MLflow: {result['tracking_uri']}")


@app.command()
def score(
    data: DataDir,
    as_of: AsOf,
    budget: Annotated[float | None, typer.Option(help="Coupon budget.")] = None,
    workdir: Workdir = None,
    runner: Runner = "local",
    dask_address: DaskAddress = None,
) -> None:
    """Score every customer; write coupon and recall lists."""
    from flows.score import score as score_flow

    _check_runner(runner, dask_address)
    cutoff = _as_of(as_of)
    _check_budget(budget)
    settings = _settings(workdir)
    _preflight(data)
    run = _on_runner(score_flow, runner, dask_address)
    result = _run(lambda: run(data=data, as_of=cutoff, workdir=settings.workdir, budget=budget))
    _print_scoring(result)


def _print_scoring(result: dict[str, Any], top: int = 5) -> None:
    """The run summary, then the top of the coupon and recall lists."""
    import pandas as pd

    budget = result["budget"]
    models = ", ".join(f"{name} v{m['version']}" for name, m in result["models"].items())
    typer.echo(
        f"scored {result['scored']:,} of {result['customers']:,} customers at {result['as_of']} "
        f"(run {result['run_id']}; models {models})"
    )
    typer.echo(f"  per stage:     {_pairs(result['customers_per_stage'])}")
    typer.echo(f"  per risk band: {_pairs(result['customers_per_risk_band'])}")
    limit = "no limit" if budget is None else f"{budget:,.2f}"
    typer.echo(
        f"  coupons:       {result['coupon_list']:,} ({_pairs(result['coupons_per_tier'])}); "
        f"control group {result['control_group']:,}"
    )
    typer.echo(
        f"  budget:        expected cost {result['planned_cost']:,.2f} of {limit} "
        f"({result['budget_used']:,.2f} sent, {result['control_cost_withheld']:,.2f} held back "
        f"in the control group); expected incremental value "
        f"{result['expected_incremental_value']:,.2f}"
    )
    typer.echo(f"  uplift:        {result['uplift_method']}")
    typer.echo(
        f"  win-back:      {result['recall_list']:,} dormant or lost customers ranked "
        f"({result['recall_without_channel']:,} with no channel reached in 180 days)"
    )
    for name in ("coupon_list", "recall_list"):
        frame = pd.read_parquet(result["paths"][name]).head(top)
        typer.echo(f"\ntop of {name} ({result['paths'][name]}):")
        if frame.empty:
            typer.echo("  (empty)")
            continue
        shown = frame.drop(columns=["as_of", "reason_2", "reason_3"], errors="ignore")
        typer.echo(shown.to_string(index=False, float_format=lambda v: f"{v:,.3f}"))
    typer.echo(f"\ntables: {Path(result['paths']['scored_customers']).parent}")
    typer.echo(f"CSV: {result['paths']['exports']}  DuckDB: {result['paths']['duckdb']}")


def _pairs(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in counts.items()) or "none"


@app.command()
def serve(
    data: DataDir,
    budget: Annotated[float | None, typer.Option(help="Coupon budget of each scoring.")] = None,
    workdir: Workdir = None,
) -> None:
    """Serve the deployments: daily scoring, weekly retraining, the on-demand pipeline.

    Runs until stopped (Ctrl-C or SIGTERM cancels runs in progress and pauses the schedules),
    against the Prefect API of PREFECT_API_URL; see the README to point it at a Prefect server
    or a work pool.
    """
    from prefect.settings import PREFECT_API_URL

    from flows.deploy import deployments
    from flows.deploy import serve as serve_deployments

    _check_budget(budget)
    if not PREFECT_API_URL.value():
        _fail(
            "error: ltv serve needs a Prefect server: start one (prefect server start) and "
            "set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api)",
            EXIT_INPUT,
        )
    settings = _settings(workdir)
    _preflight(data)
    served = deployments(settings, data, budget)
    typer.echo(f"serving {len(served)} deployments against {PREFECT_API_URL.value()}:")
    for deployment in served:
        when = ", ".join(str(s.schedule.cron) for s in deployment.schedules or []) or "on demand"
        typer.echo(f"  {deployment.flow_name}/{deployment.name}  ({when}, {settings.timezone})")
    # One flow run at a time: a scoring holds gigabytes, and the runs share the stores.
    try:
        serve_deployments(served, limit=1)
    finally:
        _pause(served)


def _pause(served: list[Any]) -> None:
    """Pause the schedules of ``served``.

    Prefect pauses them on its way out; pausing here too covers a stop before Prefect started
    serving (or a second Ctrl-C), so no schedule fires with nobody serving it.
    """
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for deployment in served:
            found = client.read_deployment_by_name(f"{deployment.flow_name}/{deployment.name}")
            client.pause_deployment(found.id)
    typer.echo(f"stopped; {len(served)} deployments paused")


@app.command()
def monitor(data: DataDir, as_of: AsOf, workdir: Workdir = None) -> None:
    """Check drift and score quality for --as-of."""
    _as_of(as_of)
    _not_yet("monitor")


@app.command()
def lookup(
    customer_id: Annotated[str, typer.Argument()],
    at: Annotated[
        str | None,
        typer.Option(help="Show values current at this date (YYYY-MM-DD; default: now)."),
    ] = None,
    workdir: Workdir = None,
) -> None:
    """Online features and the latest scores (with reasons) for one customer."""
    from flows.features import lookup as lookup_flow

    settings = _settings(workdir)
    moment = _midnight(_as_of(at, "--at"), settings.timezone) if at else None
    result = _run(lambda: lookup_flow(customer_id=customer_id, workdir=settings.workdir, at=moment))
    _print_lookup(result, settings.timezone)
    if not (result["found"] or result["score"]):
        raise typer.Exit(1)


@app.command()
def report(as_of: AsOf, workdir: Workdir = None) -> None:
    """HTML report for campaign teams."""
    _as_of(as_of)
    _not_yet("report")


if __name__ == "__main__":  # pragma: no cover
    main()
