"""The one settings object: environment over ltv.toml over defaults."""

import gc
import weakref
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from flows.data import rules_from
from flows.settings import Settings, get_settings, release_memory


def test_defaults(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no ltv.toml here
    settings = Settings()
    assert settings.workdir == Path("ltv-work")
    assert settings.timezone == "Asia/Shanghai"
    assert settings.hmac_key is None and settings.hmac_key_bytes is None
    assert settings.ingest.min_timestamp == date(1990, 1, 1)


def test_toml_then_environment(monkeypatch, tmp_path):
    config = tmp_path / "ltv.toml"
    config.write_text(
        'timezone = "Europe/Berlin"\nworkdir = "from-toml"\n[ingest]\nmax_abs_amount = 500\n'
    )
    monkeypatch.setenv("LTV_CONFIG", str(config))
    monkeypatch.setenv("LTV_WORKDIR", "from-env")
    monkeypatch.setenv("LTV_INGEST__MAX_QUANTITY", "7")
    monkeypatch.setenv("LTV_HMAC_KEY", "s3cret")
    settings = Settings()
    assert settings.timezone == "Europe/Berlin"  # from the file
    assert settings.workdir == Path("from-env")  # the environment wins
    assert (settings.ingest.max_abs_amount, settings.ingest.max_quantity) == (500, 7)
    assert "s3cret" not in repr(settings)  # the key never shows in logs
    rules = rules_from(settings)
    assert (rules.timezone, rules.max_quantity, rules.hmac_key) == ("Europe/Berlin", 7, b"s3cret")


def test_get_settings_sets_the_arrow_allocator(monkeypatch, tmp_path):
    """The allocator named in the settings is Arrow's from then on (system by default)."""
    monkeypatch.chdir(tmp_path)
    before = pa.default_memory_pool()
    try:
        for name in ("jemalloc", "system"):
            monkeypatch.setenv("LTV_ARROW_MEMORY_POOL", name)
            monkeypatch.setenv("LTV_MALLOC_ARENAS", "2")
            get_settings.cache_clear()
            assert get_settings().arrow_memory_pool == name
            assert pa.default_memory_pool().backend_name == name
    finally:
        pa.set_memory_pool(before)
        get_settings.cache_clear()


def test_release_memory_frees_a_frame_held_only_in_a_reference_cycle():
    """What a flow let go of but a cycle still holds (a finished Prefect future holds its result
    and is held by its concurrent future) is freed at once, not at the next full collection."""
    was_enabled = gc.isenabled()
    gc.disable()  # no automatic collection: only release_memory can free the cycle
    try:
        frame = pd.DataFrame({"x": np.arange(1_000_000)})
        holder: dict[str, object] = {"frame": frame}
        holder["self"] = holder
        alive = weakref.ref(frame)
        del frame, holder
        assert alive() is not None  # still held by the cycle
        release_memory()
        assert alive() is None
    finally:
        if was_enabled:
            gc.enable()
