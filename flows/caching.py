"""Caching of the expensive tasks (R3): keys from fingerprints, results as Parquet, no pickle.

A cached task's key is a digest of the task's name, the code (:func:`code_digest`: the sources
of ``features/``, ``models/`` and ``flows/`` and the versions of the libraries that compute) and
the inputs the task names in :class:`Fingerprint`. Large inputs (the validated dataset, a
snapshot) are never hashed cell by cell: the task takes a ``lineage`` string instead, the
fingerprint of what they were computed from (the data files' digest, the validation rules, the
cutoff ...), which the flow passes along.

Results are persisted under ``<workdir>/cache`` (``keys/``: Prefect's records, ``results/``: the
values) with :class:`FrameSerializer`: a DataFrame is stored as a plain Parquet file, and a
composite value (tuples, dicts, arrays, LightGBM boosters, the project's dataclasses) as a zip
of Parquet, ``.npy``, model text and JSON parts. Loading never runs pickled code. A value is
written before its key, and keys are written whole (temporary file, then rename), so a run
killed while writing leaves no key to a half-written value; :func:`prune` removes entries older
than the settings' ``cache.keep_days``.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import importlib
import io
import json
import os
import tempfile
import time
import zipfile
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from prefect.cache_policies import NO_CACHE, CachePolicy
from prefect.context import TaskRunContext
from prefect.filesystems import LocalFileSystem
from prefect.serializers import Serializer

from flows.settings import Settings

#: Packages whose code makes the cached values: a change to any of them is a new key.
CODE_PACKAGES = ("features", "models", "flows", "feature_repo")
#: Libraries whose versions are part of the code digest (their numbers may change values).
LIBRARIES = ("lightgbm", "numpy", "pandas", "pyarrow", "scikit-learn", "scipy", "duckdb", "feast")
#: Modules whose dataclasses may be rebuilt from a cached result (nothing else is).
DATACLASS_MODULES = ("features.", "models.", "flows.")

_PARQUET, _ZIP = b"PAR1", b"PK"
_DTYPES = b"ltv.dtypes"


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """A digest of the project's sources and the computing libraries' versions."""
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parent.parent
    for package in CODE_PACKAGES:
        for path in sorted((root / package).rglob("*")):
            if path.suffix in (".py", ".yaml") and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(root)).encode())
                digest.update(path.read_bytes())
    for name in LIBRARIES:
        try:
            digest.update(f"{name}=={metadata.version(name)}".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{name} absent".encode())
    return digest.hexdigest()


def digest_of(*parts: Any) -> str:
    """A short digest of plain values (str, numbers, dates, paths, lists, dicts, dataclasses)."""
    text = json.dumps([_plain(p) for p in parts], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):  # a secret: only its digest enters a key
        return "sha256:" + hashlib.sha256(value).hexdigest()
    if isinstance(value, Path):
        return str(value.resolve())
    if isinstance(value, datetime.date | pd.Timestamp):
        return value.isoformat()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if hasattr(value, "model_dump"):  # pydantic models
        return _plain(value.model_dump(mode="json"))
    raise TypeError(f"cannot fingerprint a {type(value).__name__}: pass a lineage string")


@dataclasses.dataclass
class Fingerprint(CachePolicy):
    """Key: the task's name, :func:`code_digest` and the task inputs named in ``inputs``.

    Every input that is not named (a DataFrame, the dataset) must be covered by a named
    ``lineage`` string, the fingerprint of what it was computed from.
    """

    inputs: tuple[str, ...] = ()

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        """The cache key of one call of the task."""
        fn = task_ctx.task.fn
        chosen = {name: inputs[name] for name in self.inputs}
        where = f"{fn.__module__}.{fn.__qualname__}"
        key = f"{task_ctx.task.name}-{digest_of(code_digest(), where, chosen)}"
        if isinstance(self.key_storage, LocalFileSystem):
            _drop_unusable(Path(str(self.key_storage.basepath)) / key)
        return key


def _drop_unusable(record: Path) -> None:
    """Remove a key whose value this cache cannot use, so that the task computes it again.

    That is a key whose value is gone or lies elsewhere (a moved or copied work directory),
    or whose serializer is not :class:`FrameSerializer` (a record that would be unpickled).
    """
    try:
        meta = json.loads(record.read_bytes())
    except FileNotFoundError:
        return
    except ValueError:
        meta = {}
    value = Path(str(meta.get("storage_key", "")))
    usable = (
        meta.get("serializer", {}).get("type") == FrameSerializer.model_fields["type"].default
        and value.parent == record.parent.parent / "results"
        and value.is_file()
    )
    if not usable:
        record.unlink(missing_ok=True)


class WholeFiles(LocalFileSystem):
    """A local file system whose writes are whole: a reader sees no file or the full one.

    Used for the keys (Prefect takes a value store only as a path or a saved block).
    """

    _block_type_slug = "ltv-whole-files"

    def write_path(self, path: str, content: bytes, **_: Any) -> str:  # type: ignore[override]
        """Write ``content`` to ``path`` through a temporary file and a rename."""
        target = self._resolve_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(content)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return str(target)

    async def awrite_path(self, path: str, content: bytes) -> str:
        """:meth:`write_path`, for Prefect's asynchronous callers."""
        return self.write_path(path, content)


class FrameSerializer(Serializer):
    """Results as Parquet (a DataFrame) or a zip of Parquet, npy, model text and JSON parts.

    Loading never unpickles: arrays are read with ``allow_pickle=False``, boosters from
    LightGBM's text format, and only the dataclasses of :data:`DATACLASS_MODULES` are rebuilt.
    """

    type: Literal["ltv-frames"] = "ltv-frames"

    def dumps(self, obj: Any) -> bytes:
        """Encode ``obj``; a type this format does not hold raises ``TypeError``."""
        if isinstance(obj, pd.DataFrame):
            return _frame_bytes(obj)
        parts: dict[str, bytes] = {}
        tree = _encode(obj, parts)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            archive.writestr("value.json", json.dumps(tree))
            for name, data in parts.items():
                archive.writestr(name, data)
        return buffer.getvalue()

    def loads(self, blob: bytes) -> Any:
        """Decode what :meth:`dumps` wrote."""
        if blob[:4] == _PARQUET:
            return _frame_from(blob)
        if blob[:2] != _ZIP:
            raise ValueError("not a cached ltv result (neither Parquet nor zip)")
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            return _decode(json.loads(archive.read("value.json")), archive)


def _encode(value: Any, parts: dict[str, bytes]) -> Any:
    def part(data: bytes, suffix: str) -> str:
        name = f"{len(parts)}.{suffix}"
        parts[name] = data
        return name

    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.DataFrame):
        return {"t": "frame", "part": part(_frame_bytes(value), "parquet")}
    if isinstance(value, pd.Series):
        frame = value.to_frame(name="values")
        return {"t": "series", "name": value.name, "part": part(_frame_bytes(frame), "parquet")}
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise TypeError("cannot cache an array of Python objects: use a DataFrame")
        buffer = io.BytesIO()
        np.save(buffer, value, allow_pickle=False)
        return {"t": "array", "part": part(buffer.getvalue(), "npy")}
    if isinstance(value, lgb.Booster):
        return {"t": "booster", "part": part(value.model_to_string().encode(), "lgb")}
    if isinstance(value, tuple):
        return {"t": "tuple", "items": [_encode(v, parts) for v in value]}
    if isinstance(value, list):
        return {"t": "list", "items": [_encode(v, parts) for v in value]}
    if isinstance(value, dict):
        return {
            "t": "dict",
            "items": [[_encode(k, parts), _encode(v, parts)] for k, v in value.items()],
        }
    if isinstance(value, pd.Timestamp):
        return {"t": "timestamp", "value": value.isoformat()}
    if isinstance(value, datetime.datetime):
        return {"t": "datetime", "value": value.isoformat()}
    if isinstance(value, datetime.date):
        return {"t": "date", "value": value.isoformat()}
    if isinstance(value, Path):
        return {"t": "path", "value": str(value)}
    kind = type(value)
    if dataclasses.is_dataclass(value) and kind.__module__.startswith(DATACLASS_MODULES):
        fields = {f.name: _encode(getattr(value, f.name), parts) for f in dataclasses.fields(value)}
        return {
            "t": "dataclass",
            "type": f"{kind.__module__}:{kind.__qualname__}",
            "fields": fields,
        }
    raise TypeError(f"cannot cache a {kind.__module__}.{kind.__qualname__}")


def _decode(tree: Any, archive: zipfile.ZipFile) -> Any:
    if not isinstance(tree, dict):
        return tree
    kind = tree["t"]
    if kind == "frame":
        return _frame_from(archive.read(tree["part"]))
    if kind == "series":
        return _frame_from(archive.read(tree["part"]))["values"].rename(tree["name"])
    if kind == "array":
        return np.load(io.BytesIO(archive.read(tree["part"])), allow_pickle=False)
    if kind == "booster":
        return lgb.Booster(model_str=archive.read(tree["part"]).decode())
    if kind == "tuple":
        return tuple(_decode(v, archive) for v in tree["items"])
    if kind == "list":
        return [_decode(v, archive) for v in tree["items"]]
    if kind == "dict":
        return {_decode(k, archive): _decode(v, archive) for k, v in tree["items"]}
    if kind == "timestamp":
        return pd.Timestamp(tree["value"])
    if kind == "datetime":
        return datetime.datetime.fromisoformat(tree["value"])
    if kind == "date":
        return datetime.date.fromisoformat(tree["value"])
    if kind == "path":
        return Path(tree["value"])
    if kind == "dataclass":
        module, _, name = tree["type"].partition(":")
        if not module.startswith(DATACLASS_MODULES):
            raise ValueError(f"refusing to rebuild {tree['type']} from a cached result")
        cls: Any = getattr(importlib.import_module(module), name)
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            raise ValueError(f"{tree['type']} is not a dataclass")
        fields = {k: _decode(v, archive) for k, v in tree["fields"].items()}
        init = {f.name for f in dataclasses.fields(cls) if f.init}
        made = cls(**{k: v for k, v in fields.items() if k in init})
        for key in fields.keys() - init:
            object.__setattr__(made, key, fields[key])
        return made
    raise ValueError(f"unknown part {kind!r} in a cached result")


def _dtype_note(values: pd.Series | pd.Index) -> dict[str, Any] | None:
    """What Parquet loses of a column: a text column's storage, an empty one's categories."""
    dtype = values.dtype
    if isinstance(dtype, pd.StringDtype):
        return {"string": dtype.storage}
    if isinstance(dtype, pd.CategoricalDtype):
        text = dtype.categories.dtype
        storage = text.storage if isinstance(text, pd.StringDtype) else None
        note: dict[str, Any] = {"category": storage, "ordered": bool(dtype.ordered)}
        if not len(values):  # Parquet keeps only the categories that occur
            note["categories"] = dtype.categories.tolist()
        return note
    return None


def _restored(values: pd.Series | pd.Index, note: dict[str, Any]) -> Any:
    if "string" in note:
        return values.astype(pd.StringDtype(note["string"]))
    dtype: Any = values.dtype
    categories = pd.Index(note["categories"]) if "categories" in note else dtype.categories
    if note["category"]:
        categories = categories.astype(pd.StringDtype(note["category"]))
    return values.astype(pd.CategoricalDtype(categories, ordered=note["ordered"]))


def _frame_bytes(frame: pd.DataFrame) -> bytes:
    notes = {str(c): n for c, v in frame.items() if (n := _dtype_note(v)) is not None}
    if (index_note := _dtype_note(frame.index)) is not None:
        notes["\0index"] = index_note
    table = pa.Table.from_pandas(frame, preserve_index=None)
    table = table.replace_schema_metadata(
        (table.schema.metadata or {}) | {_DTYPES: json.dumps(notes).encode()}
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def _frame_from(blob: bytes) -> pd.DataFrame:
    table = pq.read_table(io.BytesIO(blob))
    notes = json.loads((table.schema.metadata or {}).get(_DTYPES, b"{}"))
    frame = table.to_pandas()
    for column, note in notes.items():
        if column == "\0index":
            frame.index = _restored(frame.index, note)
        else:
            frame[column] = _restored(frame[column], note)
    return frame


def cache_dir(workdir: Path) -> Path:
    """Where the cached results of ``workdir`` live."""
    return workdir.resolve() / "cache"


def cached(task: Any, workdir: Path, settings: Settings, *inputs: str) -> Any:
    """``task`` cached on ``inputs`` (with :func:`code_digest`) in ``workdir``'s cache.

    With ``cache.enabled`` off, the task neither reads nor writes the cache.
    """
    if not settings.cache.enabled:
        return task.with_options(cache_policy=NO_CACHE, persist_result=False)
    root = cache_dir(workdir)
    return task.with_options(
        cache_policy=Fingerprint(
            inputs=inputs, key_storage=WholeFiles(basepath=str(root / "keys"))
        ),
        persist_result=True,
        result_storage=root / "results",
        result_serializer=FrameSerializer(),
        cache_result_in_memory=False,
    )


def prune(workdir: Path, keep_days: float, now: float | None = None) -> list[str]:
    """Remove cache entries (key and value) written more than ``keep_days`` ago.

    Also removes values whose key is gone and temporary files a killed writer left. A key goes
    before its value, so no key is left naming a removed value. Returns the names removed.
    """
    root = cache_dir(workdir)
    now = time.time() if now is None else now
    limit = now - keep_days * 86_400
    removed = []
    for key in _files(root / "keys"):
        if key.stat().st_mtime < limit:
            key.unlink(missing_ok=True)
            (root / "results" / key.name).unlink(missing_ok=True)
            removed.append(key.name)
    for folder in (root / "keys", root / "results"):
        for path in _files(folder):
            age = path.stat().st_mtime
            stray = path.name.startswith(".") and path.name.endswith(".tmp") and age < now - 3600
            orphan = folder.name == "results" and not (root / "keys" / path.name).exists()
            if stray or (orphan and age < limit):
                path.unlink(missing_ok=True)
                removed.append(path.name)
    return removed


def _files(folder: Path) -> Iterable[Path]:
    return sorted(p for p in folder.glob("*") if p.is_file()) if folder.is_dir() else []
