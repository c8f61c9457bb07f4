"""The one module that talks to MLflow: runs, metrics, artifacts, the registry and aliases.

Everything else passes plain values here. Conventions:

- Tracking defaults to ``sqlite:///<workdir>/mlflow.db`` with artifacts under
  ``<workdir>/mlartifacts``; settings can point at a server instead.
- A run always ends: ``FINISHED`` when its block completes, ``FAILED`` when it raises (never
  left ``RUNNING``); a run whose process was killed is ended ``KILLED`` by the next training
  (:meth:`Tracker.end_abandoned_runs`).
- Metrics go in ``log_batch`` calls of at most 1,000 values (MLflow's limit per call).
- Models are LightGBM ``Booster`` objects saved in LightGBM's native text format
  (``model.lgb``). Loading refuses anything else, and pickle deserialisation is switched off
  (``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``).
- Registered models get alias ``champion`` only through :func:`promote`, which the caller
  feeds with both models' scores on the same held-out cutoff; otherwise ``challenger`` with the
  reason as a version tag. Setting an alias is one registry write, so a concurrent load sees the
  old champion or the new one.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import lightgbm as lgb
import pandas as pd

from features.io import process_alive

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "Promotion",
    "Registered",
    "Run",
    "Tracker",
    "default_tracking_uri",
]

CHAMPION = "champion"
CHALLENGER = "challenger"
_BATCH = 1000
_T = TypeVar("_T")


def default_tracking_uri(workdir: Path) -> str:
    """The embedded default: a SQLite store in the work directory."""
    return f"sqlite:///{workdir.resolve() / 'mlflow.db'}"


def _retry(call: Callable[[], _T], attempts: int = 6) -> _T:
    """Retry a registry or tracking write that lost a race (SQLite locks, unique names)."""
    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        try:
            return call()
        except MlflowException as exc:
            text = str(exc).lower()
            transient = "locked" in text or "already exists" in text or "unique" in text
            if not transient or attempt == attempts - 1:
                raise
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


@contextmanager
def _creating(tracking_uri: str) -> Iterator[None]:
    """Hold a file lock beside a SQLite store while it may be created.

    MLflow creates and migrates a new SQLite database on first use; two processes doing that
    at once make one fail ("Online migration expected to match one row"). Other stores (a
    server, Postgres) handle their own concurrency.
    """
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    database = Path(tracking_uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fingerprint(frame: pd.DataFrame) -> str:
    """A digest of every column name, dtype and cell of ``frame`` (16 hex characters)."""
    digest = hashlib.sha256()
    digest.update(as_json([[c, str(t)] for c, t in frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def _schema(frame: pd.DataFrame) -> Any:
    """The MLflow column schema of ``frame`` from its dtypes (nullable where a null occurs)."""
    from mlflow.types import DataType
    from mlflow.types.schema import ColSpec, Schema

    def kind(dtype: Any) -> DataType:
        if pd.api.types.is_bool_dtype(dtype):
            return DataType.boolean
        if pd.api.types.is_integer_dtype(dtype):
            return DataType.long
        if pd.api.types.is_float_dtype(dtype):
            return DataType.double
        if pd.api.types.is_datetime64_any_dtype(dtype):
            return DataType.datetime
        return DataType.string

    nulls = frame.isna().any().to_numpy()
    return Schema(
        [
            ColSpec(kind(t), str(c), required=not bool(null))
            for (c, t), null in zip(frame.dtypes.items(), nulls, strict=True)
        ]
    )


def _requirements() -> list[str]:
    """The packages a registered booster needs, pinned to the versions that trained it."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("lightgbm", "numpy", "pandas", "scipy")]


@dataclass(frozen=True)
class Registered:
    """One registered model version, loaded: booster, companion files, run and parameters."""

    name: str
    version: str
    run_id: str
    params: dict[str, str]
    booster: lgb.Booster
    files: Path


@dataclass(frozen=True)
class Promotion:
    """The alias a new model version got, and why."""

    alias: str
    reason: str
    previous_champion: str | None


class Run:
    """The active MLflow run: everything a training logs goes through here."""

    def __init__(self, tracker: Tracker, run_id: str) -> None:
        """Wrap the run ``run_id`` of ``tracker``."""
        self.tracker = tracker
        self.run_id = run_id

    def log_params(self, params: dict[str, Any]) -> None:
        """Log parameters (values become strings, as MLflow stores them)."""
        from mlflow.entities import Param

        items = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.tracker.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        """Log metrics in ``log_batch`` calls of at most 1,000; NaN values are skipped."""
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        items = [Metric(k, float(v), stamp, step) for k, v in metrics.items() if pd.notna(v)]
        for i in range(0, len(items), _BATCH):
            self.tracker.client.log_batch(self.run_id, metrics=items[i : i + _BATCH])

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Set run tags."""
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        if items:
            self.tracker.client.log_batch(self.run_id, tags=items)

    def log_figure(self, figure: Any, path: str) -> None:
        """A matplotlib figure as a PNG artifact at ``path``."""
        self.tracker.client.log_figure(self.run_id, figure, path)

    def log_table(self, frame: pd.DataFrame, path: str) -> None:
        """A small table as a CSV artifact (and shown by the MLflow UI)."""
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / Path(path).name
            frame.to_csv(target, index=False)
            parent = str(Path(path).parent)
            self.tracker.client.log_artifact(
                self.run_id, str(target), None if parent == "." else parent
            )

    def log_dataset(
        self, frame: pd.DataFrame, name: str, source: str, context: str, targets: str | None
    ) -> str:
        """Record the data a model saw (mlflow.data): schema, row count and fingerprint.

        The fingerprint hashes every cell (MLflow's own digest reads the first 10,000 rows) and
        the schema comes from the dtypes with one vectorised null check per column: MLflow's
        schema inference visits every value in Python, about 90 s at a million rows.
        """
        import mlflow

        from_pandas = mlflow.data.from_pandas  # type: ignore[attr-defined]
        dataset = from_pandas(
            frame, source=source, name=name, targets=targets, digest=fingerprint(frame)
        )
        dataset.__dict__["schema"] = _schema(frame)  # fills the cached property
        mlflow.log_input(dataset, context=context)
        return str(dataset.digest)

    def log_booster(
        self,
        booster: lgb.Booster,
        registered_name: str,
        input_example: pd.DataFrame,
        tags: dict[str, str],
        extra_files: list[Path] | None = None,
    ) -> str:
        """Save the booster in LightGBM's native format, register it; return the version.

        ``extra_files`` (companion boosters in native format, calibration maps as JSON) are
        stored inside the model, so a registered version carries everything scoring needs.
        """
        import mlflow
        from mlflow.models import infer_signature

        example = input_example.head(5)
        signature = infer_signature(example, booster.predict(example))
        info = _retry(
            lambda: mlflow.lightgbm.log_model(
                booster,
                name="model",
                signature=signature,
                input_example=example,
                registered_model_name=registered_name,
                await_registration_for=0,
                extra_files=[str(p) for p in extra_files or []] or None,
                # The JSON round trip of the serving check turns categorical columns into
                # text, which a booster trained on pandas categoricals refuses; the example
                # itself was just predicted on above.
                validate_serving_input=False,
                # Stated, not inferred: inference loads and runs the model in a subprocess.
                pip_requirements=_requirements(),
            )
        )
        version = str(info.registered_model_version)
        self.tracker.tag_version(registered_name, version, tags)
        return version


#: Tags naming the process that owns a run.
HOST_TAG = "ltv.host"
PID_TAG = "ltv.pid"


class Tracker:
    """A connection to one tracking store and model registry."""

    def __init__(self, tracking_uri: str, artifact_root: Path | None = None) -> None:
        """Connect to ``tracking_uri``; new experiments store artifacts under ``artifact_root``."""
        import mlflow
        from mlflow import MlflowClient

        os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        self.uri = tracking_uri
        self.artifact_root = artifact_root.resolve() if artifact_root else None
        with _creating(tracking_uri):  # the first connection creates and migrates the tables
            self.client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
            self.client.search_registered_models(max_results=1)  # the registry's, too

    def experiment(self, name: str) -> str:
        """The id of experiment ``name``, created on first use (safe under a race)."""
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        location = self.artifact_root.joinpath(name).as_uri() if self.artifact_root else None
        try:
            return str(self.client.create_experiment(name, artifact_location=location))
        except Exception:  # created meanwhile by a concurrent training
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return str(found.experiment_id)

    @contextmanager
    def run(self, experiment: str, name: str, tags: dict[str, str]) -> Iterator[Run]:
        """The active run of the block: FINISHED on success, FAILED if the block raises.

        The run is tagged with its process (``ltv.host``, ``ltv.pid``), so that a run whose
        process was killed can be ended later (:meth:`end_abandoned_runs`).
        """
        import mlflow

        owner = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
        started = mlflow.start_run(
            experiment_id=self.experiment(experiment), run_name=name, tags=tags | owner
        )
        try:
            yield Run(self, started.info.run_id)
        except BaseException:
            mlflow.end_run("FAILED")
            raise
        mlflow.end_run("FINISHED")

    def end_abandoned_runs(self) -> list[str]:
        """End as KILLED the runs left RUNNING by a process of this host that is gone (R2).

        A killed process cannot end its run; the next training calls this first. Runs of other
        hosts, and runs without the owner tags, are left alone (there is no telling).

        Returns:
            The ids of the runs ended.
        """
        experiments = [e.experiment_id for e in self.client.search_experiments()]
        if not experiments:
            return []
        host = socket.gethostname()
        ended = []
        for run in self.client.search_runs(
            experiments, filter_string="attributes.status = 'RUNNING'", max_results=1000
        ):
            owner = run.data.tags
            if owner.get(HOST_TAG) != host or process_alive(owner.get(PID_TAG, "")):
                continue
            self.client.set_terminated(run.info.run_id, status="KILLED")
            ended.append(run.info.run_id)
        return ended

    def champion(self, name: str) -> tuple[lgb.Booster, str] | None:
        """The ``champion`` version of registered model ``name`` and its version, if any."""
        version = self.champion_version(name)
        if version is None:
            return None
        return self.load_booster(name, version), version

    def champion_bundle(self, name: str) -> Registered | None:
        """The ``champion`` version of ``name`` with its run, parameters and files, if any.

        The alias is read once, so a promotion happening meanwhile gives the old champion or
        the new one, whole (R12).
        """
        version = self.champion_version(name)
        if version is None:
            return None
        booster, files = self.load_bundle(name, version)
        run_id = self.version_run(name, version)
        params = dict(self.client.get_run(run_id).data.params)
        return Registered(name, version, run_id, params, booster, files)

    def champion_version(self, name: str) -> str | None:
        """The version holding alias ``champion`` of registered model ``name``, if any."""
        return self._alias_version(name, CHAMPION)

    def _alias_version(self, name: str, alias: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(name, alias).version)
        except MlflowException:
            return None

    def load_booster(self, name: str, version: str) -> lgb.Booster:
        """Load a registered version; only LightGBM's native text format is accepted."""
        return self.load_bundle(name, version)[0]

    def load_bundle(self, name: str, version: str) -> tuple[lgb.Booster, Path]:
        """A registered version's booster and the directory of its extra files.

        Raises:
            ValueError: if the version is not a LightGBM booster in native text format, or one
                of its extra files is a pickle.
        """
        import mlflow
        from mlflow.models import Model

        uri = f"models:/{name}/{version}"
        local = Path(mlflow.artifacts.download_artifacts(uri))
        flavor = Model.load(str(local / "MLmodel")).flavors.get("lightgbm", {})
        data = local / str(flavor.get("data", ""))
        if flavor.get("model_class") != "lightgbm.basic.Booster" or data.suffix != ".lgb":
            raise ValueError(f"{uri} is not a native LightGBM model; refusing to load it")
        extra = local / "extra_files"
        if any(p.suffix in {".pkl", ".pickle", ".joblib"} for p in extra.glob("*")):
            raise ValueError(f"{uri} carries a pickled file; refusing to load it")
        return lgb.Booster(model_file=str(data)), extra

    def version_tagged(self, name: str, tag: str, value: str) -> str | None:
        """The first version of ``name`` whose tag ``tag`` is ``value``, if any."""
        found = self.client.search_model_versions(f"name = '{name}' and tags.{tag} = '{value}'")
        return str(min(int(v.version) for v in found)) if found else None

    def version_of_run_tagged(self, name: str, tag: str, value: str) -> str | None:
        """The first version of ``name`` logged by a run whose tag ``tag`` is ``value``, if any."""
        experiments = [e.experiment_id for e in self.client.search_experiments()]
        if not experiments:
            return None
        runs = self.client.search_runs(experiments, filter_string=f"tags.{tag} = '{value}'")
        versions = [
            int(v.version)
            for run in runs
            for v in self.client.search_model_versions(
                f"name = '{name}' and run_id = '{run.info.run_id}'"
            )
        ]
        return str(min(versions)) if versions else None

    def version_run(self, name: str, version: str) -> str:
        """The id of the run that logged one registered model version."""
        return str(self.client.get_model_version(name, version).run_id)

    def version_tags(self, name: str, version: str) -> dict[str, str]:
        """The tags of one registered model version."""
        return dict(self.client.get_model_version(name, version).tags)

    def promote(
        self,
        name: str,
        version: str,
        *,
        metric: str,
        new_value: float,
        champion: tuple[str, float | None] | None,
        cutoff: str,
        higher_is_better: bool = True,
    ) -> Promotion:
        """Give ``version`` alias ``champion`` only if it beats the champion on the same rows.

        Args:
            name: The registered model.
            version: The new version.
            metric: The deciding metric's name (for the reason).
            new_value: The new version's metric on the held-out rows.
            champion: ``(version, value)`` of the champion the caller scored on the same rows
                (value ``None``: it cannot be compared there), or ``None`` if there was none.
            cutoff: The held-out cutoff (for the reason).
            higher_is_better: Direction of ``metric``.

        Returns:
            The alias given and the reason, also stored as version tags. Without a comparison
            (the champion cannot score these rows, changed meanwhile, or the new metric is
            NaN) the new version is ``challenger``.
        """
        current = self.champion_version(name)
        scored = champion[0] if champion else None
        if current != scored:
            alias = CHALLENGER
            reason = f"the champion changed to v{current} while v{version} was evaluated"
        elif new_value != new_value:  # NaN: e.g. one class only in the held-out rows
            alias, reason = CHALLENGER, f"{metric} is undefined on held-out cutoff {cutoff}"
        elif champion is None:
            alias, reason = CHAMPION, "no champion yet"
        elif champion[1] is None:
            alias = CHALLENGER
            reason = f"champion v{champion[0]} cannot be compared on held-out cutoff {cutoff}"
        else:
            old = champion[1]
            better = new_value > old if higher_is_better else new_value < old
            alias = CHAMPION if better else CHALLENGER
            reason = (
                f"{'beats' if better else 'does not beat'} champion v{champion[0]} on held-out "
                f"cutoff {cutoff}: {metric} {new_value:.4f} vs {old:.4f}"
            )
        _retry(lambda: self.client.set_registered_model_alias(name, alias, version))
        self.tag_version(name, version, {"promotion": alias, "promotion_reason": reason})
        return Promotion(alias, reason, current)

    def tag_version(self, name: str, version: str, tags: dict[str, str]) -> None:
        """Set tags on one registered model version."""
        for key, value in tags.items():
            _retry(partial(self.client.set_model_version_tag, name, version, key, value))


def as_json(value: Any) -> str:
    """A compact, stable JSON string for tags (cutoff lists, feature lists)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
