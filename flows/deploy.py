"""The deployments ``ltv serve`` starts: daily scoring, weekly retraining, the whole pipeline.

All are declared here, from the settings (schedules in ``[schedule]``, the time zone) and two
parameters an engineer chooses when serving: the data directory and the coupon budget.

- ``score_customers/daily-scoring``: every day at 06:00 (``schedule.scoring_cron``) in the
  settings' time zone, ``as_of`` left to the day the run was scheduled for.
- ``train_models/weekly-retraining``: every Monday at 02:00 (``schedule.retraining_cron``).
- ``ltv_pipeline/on-demand``: no schedule; features, training and scoring in order at today's
  cutoff (or a given one), for a first run (started from the UI or ``prefect deployment run``).

Each deployment runs one at a time (a run due while another is going waits for it), and
``ltv serve`` runs one flow run at a time in all: two scorings, or a scoring and a retraining,
never overlap on the serving host. ``serve`` runs them until SIGINT (Ctrl-C) or SIGTERM (what a
process supervisor sends), then stops cleanly: runs in progress are cancelled, the schedules
paused, so no run is left Running and no schedule fires with nobody serving it.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import EntrypointType
from prefect.runner import Runner
from prefect.schedules import Cron

from flows.pipeline import ltv_pipeline, score_customers, train_models
from flows.settings import Settings

__all__ = ["TAGS", "deployments", "serve"]

#: Tags of every deployment (to find them, or to give them a work pool's queue).
TAGS = ["ltv"]


def deployments(settings: Settings, data: Path, budget: float | None = None) -> list[Any]:
    """The three deployments, their parameters pointing at ``data`` (and ``budget``)."""
    where = {"data": str(data.resolve()), "workdir": str(settings.workdir.resolve())}
    every: dict[str, Any] = {
        # One run at a time: a run due while another is going waits for it.
        "concurrency_limit": ConcurrencyLimitConfig(
            limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE
        ),
        "tags": TAGS,
        # Imported as ``flows.pipeline`` (a file path would put flows/ first on sys.path,
        # where flows/features.py hides the features package).
        "entrypoint_type": EntrypointType.MODULE_PATH,
    }
    scoring = score_customers.to_deployment(
        name="daily-scoring",
        schedule=Cron(settings.schedule.scoring_cron, timezone=settings.timezone),
        parameters={"run": where | {"budget": budget}},
        **every,
    )
    retraining = train_models.to_deployment(
        name="weekly-retraining",
        schedule=Cron(settings.schedule.retraining_cron, timezone=settings.timezone),
        parameters={"run": where},
        **every,
    )
    pipeline = ltv_pipeline.to_deployment(
        name="on-demand", parameters={"run": where | {"budget": budget}}, **every
    )
    return [scoring, retraining, pipeline]


def serve(served: list[Any], limit: int = 1) -> None:
    """Run ``served`` (at most ``limit`` flow runs at a time) until SIGINT or SIGTERM.

    Unlike ``prefect.serve``, a signal stops the runner's polling instead of cancelling the
    whole runner: Prefect's own shutdown then pauses the schedules uncancelled (cancelled
    midway, it was seen to leave them unpaused on a busy machine). A second signal stops at
    once.
    """
    asyncio.run(_serve(served, limit))


async def _serve(served: list[Any], limit: int) -> None:
    runner = Runner(pause_on_shutdown=True, limit=limit)
    for deployment in served:
        await runner.aadd_deployment(deployment)
    running = asyncio.create_task(runner.start())
    while not runner.started and not running.done():
        await asyncio.sleep(0.05)  # start() sets its own SIGTERM handler first; ours replace it
    stopping: list[asyncio.Task[None]] = []

    def stop() -> None:
        if stopping or not runner.started:
            running.cancel()
        else:
            stopping.append(asyncio.create_task(runner.astop()))

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop)
    try:
        await running
    except asyncio.CancelledError:
        pass
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
