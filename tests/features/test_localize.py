"""`_localize` (hourly table of offsets, pandas for the clock-change hours) against pandas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import pytz
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.validation import (
    _FEW_TIMES,
    _HOUR,
    _UNSETTLED,
    _hourly_offsets,
    _localize,
    _localize_with_pandas,
    _utc_by_hour,
)

ZONES = [
    "Asia/Shanghai",
    "America/New_York",
    "Europe/London",
    "Australia/Lord_Howe",
    "Asia/Gaza",
    "UTC",
    "Etc/GMT-8",
]
NAT = np.iinfo(np.int64).min
SECOND = 10**9
MINUTE = 60 * SECOND
LARGE = 150_000  # more than _FEW_TIMES, so that the table is used


def reference(naive: pd.Series, tz: str) -> pd.Series:
    """The plain pandas call `_localize` must reproduce exactly (the code it replaced)."""
    return _localize_with_pandas(naive, tz)


def check(naive: pd.Series, tz: str) -> None:
    got, want = _localize(naive, tz), reference(naive, tz)
    pd.testing.assert_series_equal(got, want, check_exact=True)
    assert got.dtype == want.dtype == pd.DatetimeTZDtype("ns", tz)
    assert got.index.equals(naive.index)
    np.testing.assert_array_equal(got.isna().to_numpy(), want.isna().to_numpy())


def stamp(text: str) -> int:
    return int(pd.Timestamp(text).value)


def random_wall(rng: np.random.Generator, n: int, start: str, end: str) -> np.ndarray:
    return rng.integers(stamp(start), stamp(end), n)


def transitions(tz: str, start: str = "1900-01-01", end: str = "2037-01-01") -> list[tuple]:
    """(UTC instant, offset before, offset after) of each clock change of ``tz``, nanoseconds."""
    zone = pytz.timezone(tz)
    times = getattr(zone, "_utc_transition_times", [])
    info = getattr(zone, "_transition_info", [])
    out = []
    for i in range(1, len(times)):
        at = int(pd.Timestamp(times[i]).value)
        if stamp(start) <= at < stamp(end):
            before, after = (int(info[j][0].total_seconds()) * SECOND for j in (i - 1, i))
            out.append((at, before, after))
    return out


def around_transitions(tz: str, rng: np.random.Generator) -> np.ndarray:
    """Wall times packed around every clock change of ``tz``.

    Every minute (at a random second) three hours either side, every exact wall time at which
    the clock changes, and a nanosecond, a second and an hour before and after it.
    """
    parts = []
    for at, before, after in transitions(tz):
        low, high = at + min(before, after) - 3 * _HOUR, at + max(before, after) + 3 * _HOUR
        parts.append(np.arange(low, high, MINUTE) + rng.integers(0, MINUTE))
        for edge in (at + before, at + after):
            steps = [-_HOUR, -SECOND, -1, 0, 1, SECOND, _HOUR]
            parts.append(edge + np.array(steps, dtype=np.int64))
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def mixed(rng: np.random.Generator, packed: np.ndarray, n: int = LARGE) -> np.ndarray:
    """``packed`` among random times of 1980-2030, shuffled, at least ``n`` in all."""
    fill = random_wall(rng, max(n - len(packed), 1_000), "1980-01-01", "2030-01-01")
    return rng.permutation(np.concatenate([packed, fill]))


def takes_table(wall: np.ndarray, tz: str) -> np.ndarray:
    """The positions pandas settles: asserts the table was used for the others."""
    assert len(wall) >= _FEW_TIMES
    by_hour = _utc_by_hour(wall, tz)
    assert by_hour is not None
    return by_hour[1]


# --- random times over several years --------------------------------------------------------


@pytest.mark.parametrize("tz", ZONES)
def test_random_times_over_years(tz: str) -> None:
    rng = np.random.default_rng(1)
    wall = random_wall(rng, LARGE, "1984-01-01", "2031-01-01")
    unsettled = takes_table(wall, tz)
    assert len(unsettled) < 0.01 * len(wall)  # only the hours with a clock change
    check(pd.Series(wall.view("datetime64[ns]"), name="ordered_at"), tz)


def test_shanghai_dst_years_are_settled_by_pandas() -> None:
    """1986-1991: Shanghai's clock changes go through pandas; 2025: one offset, no table."""
    rng = np.random.default_rng(2)
    dst = random_wall(rng, LARGE, "1986-01-01", "1992-01-01")
    assert 0 < len(takes_table(dst, "Asia/Shanghai")) < 0.01 * len(dst)
    check(pd.Series(dst.view("datetime64[ns]")), "Asia/Shanghai")
    recent = random_wall(rng, LARGE, "2025-07-01", "2026-07-01")
    assert len(takes_table(recent, "Asia/Shanghai")) == 0


# --- times packed around every clock change -------------------------------------------------


@pytest.mark.parametrize("tz", ZONES)
def test_times_around_every_clock_change(tz: str) -> None:
    rng = np.random.default_rng(3)
    packed = around_transitions(tz, rng)
    if tz not in ("UTC", "Etc/GMT-8"):
        assert len(transitions(tz)) > 0
    wall = mixed(rng, packed)
    takes_table(wall, tz)
    naive = pd.Series(wall.view("datetime64[ns]"))
    check(naive, tz)
    # The gaps really are NaT and the repeated hours their first occurrence.
    local = _localize(naive, tz)
    for at, before, after in transitions(tz):
        if after > before:  # a gap: wall times [at + before, at + after) do not exist
            inside = (wall >= at + before) & (wall < at + after)
            assert local[inside].isna().all()
        elif after < before:  # repeated: the first occurrence, at the offset before
            inside = (wall >= at + after) & (wall < at + before)
            utc = wall[inside] - before
            np.testing.assert_array_equal(
                local[inside].dt.tz_convert(None).to_numpy().view(np.int64), utc
            )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tz=st.sampled_from(ZONES[:5]),
    picks=st.lists(
        st.tuples(st.floats(0, 1, exclude_max=True), st.integers(-3 * _HOUR, 3 * _HOUR)),
        min_size=1,
        max_size=200,
    ),
    null_share=st.sampled_from([0.0, 0.01, 0.5]),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_near_clock_changes(
    tz: str, picks: list[tuple[float, int]], null_share: float, seed: int
) -> None:
    """Any nanosecond within three hours of a clock change, among many ordinary times."""
    changes = transitions(tz)
    near = np.array(
        [
            changes[int(f * len(changes))][0] + changes[int(f * len(changes))][1] + d
            for f, d in picks
        ]
    )
    rng = np.random.default_rng(seed)
    wall = mixed(rng, near, _FEW_TIMES)
    wall[rng.random(len(wall)) < null_share] = NAT
    check(pd.Series(wall.view("datetime64[ns]"), index=rng.permutation(len(wall)) + 7), tz)


# --- nulls, index, name ---------------------------------------------------------------------


@pytest.mark.parametrize("tz", ZONES)
@pytest.mark.parametrize("null_share", [0.001, 0.3, 0.99])
def test_nulls_at_random_places_and_an_index(tz: str, null_share: float) -> None:
    rng = np.random.default_rng(4)
    wall = mixed(rng, around_transitions(tz, rng)[:20_000])
    wall[rng.random(len(wall)) < null_share] = NAT
    unsettled = takes_table(wall, tz)
    assert set(np.flatnonzero(wall == NAT)) <= set(unsettled)  # NaT stays NaT
    index = pd.Index([f"row{i}" for i in rng.permutation(len(wall))])
    check(pd.Series(wall.view("datetime64[ns]"), index=index, name="touched_at"), tz)


def test_name_kept_without_nulls_and_dropped_with_them_as_pandas_does() -> None:
    rng = np.random.default_rng(5)
    wall = random_wall(rng, LARGE, "2020-01-01", "2021-01-01")
    naive = pd.Series(wall.view("datetime64[ns]"), index=np.arange(len(wall)) * 2, name="at")
    assert _localize(naive, "Europe/London").name == "at"
    naive.iloc[3] = pd.NaT
    assert _localize(naive, "Europe/London").name is None
    check(naive, "Europe/London")


def test_all_null() -> None:
    naive = pd.Series(np.full(LARGE, NAT).view("datetime64[ns]"))
    assert _utc_by_hour(naive.to_numpy().view(np.int64), "Asia/Shanghai") is None
    check(naive, "Asia/Shanghai")


# --- where pandas alone localizes -----------------------------------------------------------


def test_few_times_and_other_units_go_through_pandas() -> None:
    rng = np.random.default_rng(6)
    wall = mixed(rng, around_transitions("America/New_York", rng))
    check(pd.Series(wall[: _FEW_TIMES - 1].view("datetime64[ns]")), "America/New_York")
    micro = pd.Series((wall // 1000).view("datetime64[us]"))
    got = _localize(micro, "America/New_York")
    pd.testing.assert_series_equal(got, reference(micro, "America/New_York"))
    assert str(got.dtype) == "datetime64[us, America/New_York]"


def test_times_spanning_centuries_go_through_pandas() -> None:
    rng = np.random.default_rng(7)
    wall = random_wall(rng, LARGE, "1700-01-01", "2100-01-01")
    assert _utc_by_hour(wall, "Europe/London") is None
    check(pd.Series(wall.view("datetime64[ns]")), "Europe/London")


def test_times_outside_the_table_go_through_pandas() -> None:
    rng = np.random.default_rng(8)
    early = random_wall(rng, 50, "1677-10-01", "1677-12-31")
    wall = rng.permutation(
        np.concatenate([early, random_wall(rng, LARGE, "1678-06-01", "1700-01-01")])
    )
    unsettled = takes_table(wall, "America/New_York")
    assert set(np.flatnonzero(wall < stamp("1678-01-01"))) <= set(unsettled)
    check(pd.Series(wall.view("datetime64[ns]")), "America/New_York")


# --- the table ------------------------------------------------------------------------------


def hour_of(text: str) -> int:
    return stamp(text) // _HOUR


def test_hourly_offsets_of_a_zone_without_clock_changes() -> None:
    first = hour_of("2025-07-01")
    offsets = _hourly_offsets(first, 24 * 365, "Asia/Shanghai")
    assert (offsets == 8 * _HOUR).all()
    assert (_hourly_offsets(first, 100, "UTC") == 0).all()
    assert (_hourly_offsets(first, 100, "Etc/GMT-8") == 8 * _HOUR).all()


def test_hourly_offsets_unsettle_the_hours_a_clock_change_touches() -> None:
    first = hour_of("2024-03-09 20:00")
    offsets = _hourly_offsets(first, 12, "America/New_York")  # 02:00 -> 03:00 on 03-10
    unsettled = [first + i for i in np.flatnonzero(offsets == _UNSETTLED)]
    assert unsettled == [hour_of("2024-03-10 01:00"), hour_of("2024-03-10 02:00")]
    assert offsets[0] == -5 * _HOUR and offsets[-1] == -4 * _HOUR

    first = hour_of("2024-11-02 20:00")
    offsets = _hourly_offsets(first, 12, "America/New_York")  # 02:00 -> 01:00 on 11-03
    unsettled = [first + i for i in np.flatnonzero(offsets == _UNSETTLED)]
    assert unsettled == [hour_of("2024-11-03 00:00"), hour_of("2024-11-03 01:00")]

    first = hour_of("2024-04-06 22:00")
    offsets = _hourly_offsets(first, 6, "Australia/Lord_Howe")  # 02:00 -> 01:30 on 04-07
    unsettled = [first + i for i in np.flatnonzero(offsets == _UNSETTLED)]
    assert unsettled == [hour_of("2024-04-07 01:00")]
    assert offsets[0] == 11 * _HOUR and offsets[-1] == 21 * _HOUR // 2


def test_hourly_offsets_catch_a_change_at_an_odd_minute() -> None:
    """Gaza changed its clocks at 00:01 in some years: that hour must not be settled."""
    odd = [
        (at, before, after)
        for at, before, after in transitions("Asia/Gaza")
        if (at + before) % _HOUR or (at + after) % _HOUR
    ]
    assert odd
    for at, before, after in odd:
        low, high = (at + min(before, after)) // _HOUR, (at + max(before, after)) // _HOUR
        offsets = _hourly_offsets(low - 2, high - low + 5, "Asia/Gaza")
        assert (offsets[2 : 2 + high - low + 1] == _UNSETTLED).all()
