"""Tests of models.policy: the policy file, incremental value, allocation, control group, CSV.

The allocation is checked three ways: hand-worked small cases, properties that must hold for
any input (hypothesis: budget, quotas, one tier per customer, only eligible positive options,
determinism) and an oracle that enumerates every assignment of small problems.
"""

from __future__ import annotations

import datetime
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from models import policy as policy_module
from models.policy import (
    STAGES,
    CouponPolicy,
    PolicyError,
    Tier,
    allocate,
    control_group,
    incremental_value,
    load_policy,
)

DEFAULT_POLICY = Path(__file__).resolve().parents[2] / "flows" / "coupon_policy.yaml"
PROPERTY_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    database=None,  # no .hypothesis folder written by the tests
    derandomize=True,  # the same examples on every run
    suppress_health_check=[HealthCheck.too_slow],
)


def chosen_totals(choice: np.ndarray, value: np.ndarray, cost: np.ndarray) -> tuple[float, float]:
    """Total value and cost of an allocation."""
    rows = np.flatnonzero(choice >= 0)
    return float(value[rows, choice[rows]].sum()), float(cost[rows, choice[rows]].sum())


# --------------------------------------------------------------------------------------------
# The policy file
# --------------------------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "coupon_policy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


TWO_TIERS = "tiers:\n  - {name: light, value: 5}\n  - {name: strong, value: 30}\n"


class TestLoadPolicy:
    def test_default_file_loads(self):
        policy = load_policy(DEFAULT_POLICY)
        assert policy.margin_rate == 0.35
        assert policy.window_days == 7
        assert policy.control_share == 0.10
        assert (policy.frequency_cap.max_touches, policy.frequency_cap.days) == (3, 7)
        assert policy.opt_out_column == "opted_out"
        assert policy.tier_names == ["light", "standard", "strong"]
        assert list(policy.coupon_values) == sorted(policy.coupon_values)
        strong = policy.tiers[-1]
        assert strong.min_churn_prob == 0.3
        assert "activation" not in strong.stages and "acquisition" not in strong.stages
        assert all("acquisition" not in tier.stages for tier in policy.tiers)
        assert set(policy.default_uplift) == set(policy.tier_names)
        assert policy.quotas == [None, None, None]

    def test_defaults_and_sorting(self, tmp_path):
        path = write(tmp_path, "tiers:\n  - {name: big, value: 30}\n  - {name: small, value: 5}\n")
        policy = load_policy(path)
        assert policy.tier_names == ["small", "big"]
        assert policy.margin_rate == 0.35 and policy.control_share == 0.10
        assert policy.tiers[0].stages == ["activation", "maturity", "dormant", "lost"]
        assert policy.tiers[0].quota is None
        assert policy.tiers[0].min_value_180d == 0.0 and policy.tiers[0].min_churn_prob == 0.0
        np.testing.assert_array_equal(policy.default_uplifts, [0.0, 0.0])

    def test_default_uplifts_follow_tier_order(self, tmp_path):
        path = write(tmp_path, TWO_TIERS.replace("light", "a") + "default_uplift: {strong: 0.1}\n")
        np.testing.assert_array_equal(load_policy(path).default_uplifts, [0.0, 0.1])

    @pytest.mark.parametrize(
        ("text", "key", "words"),
        [
            (
                "tiers:\n  - {name: light, value: 5}\n  - {name: light, value: 10}\n",
                "tiers[1].name",
                "duplicate tier name 'light'",
            ),
            (
                "tiers:\n  - {name: light, value: 5}\n  - {name: strong, value: -5}\n",
                "tiers[1].value",
                "must be > 0",
            ),
            (
                "tiers:\n  - {name: light, value: 5, colour: red}\n",
                "tiers[0].colour",
                "unknown key",
            ),
            (TWO_TIERS + "budget: 100\n", "budget", "unknown key"),
            ("margin_rate: 1.5\n" + TWO_TIERS, "margin_rate", "must be <= 1"),
            ("control_share: 1\n" + TWO_TIERS, "control_share", "must be < 1"),
            ("window_days: 0\n" + TWO_TIERS, "window_days", "must be > 0"),
            ("frequency_cap: {max_touches: 0}\n" + TWO_TIERS, "frequency_cap.max_touches", ">="),
            (
                "tiers:\n  - {name: light, value: 5, stages: [dormant, sleepy]}\n",
                "tiers[0].stages[1]",
                "must be one of",
            ),
            ("tiers:\n  - {name: 'a b', value: 5}\n", "tiers[0].name", "without spaces"),
            ("tiers:\n  - {name: a, value: 5, quota: -1}\n", "tiers[0].quota", ">= 0"),
            ("tiers:\n  - {name: a, value: 5, quota: 2.5}\n", "tiers[0].quota", "whole number"),
            ("tiers: []\n", "tiers", "must not be empty"),
            ("margin_rate: 0.3\n", "tiers", "required"),
            (TWO_TIERS + "default_uplift: {gold: 0.1}\n", "default_uplift.gold", "not a tier"),
            (TWO_TIERS + "default_uplift: {light: 1.5}\n", "default_uplift.light", "between 0"),
            ("margin_rate: 0.3\nmargin_rate: 0.4\n" + TWO_TIERS, "line 2", "written twice"),
            ("tiers: [\n  - name: a\n", "invalid YAML at line", "expected"),
            ("- 1\n- 2\n", "top level", "got a list"),
        ],
        ids=[
            "duplicate-tier-names",
            "negative-value",
            "unknown-tier-key",
            "unknown-top-key",
            "margin-above-1",
            "control-share-1",
            "window-0",
            "cap-0",
            "unknown-stage",
            "name-with-space",
            "negative-quota",
            "fractional-quota",
            "no-tiers",
            "tiers-missing",
            "uplift-unknown-tier",
            "uplift-above-1",
            "duplicate-yaml-key",
            "bad-yaml",
            "not-a-mapping",
        ],
    )
    def test_bad_file_is_one_line_naming_file_and_key(self, tmp_path, text, key, words):
        path = write(tmp_path, text)
        with pytest.raises(PolicyError) as caught:
            load_policy(path)
        message = str(caught.value)
        assert message.startswith(f"coupon policy {path}: ")
        assert key in message and words in message
        assert "\n" not in message
        assert "pydantic" not in message.lower() and "validation error" not in message.lower()
        error = caught.value  # no chained traceback under the one line
        assert error.__cause__ is None
        assert error.__context__ is None or error.__suppress_context__

    def test_missing_file(self, tmp_path):
        path = tmp_path / "nope.yaml"
        with pytest.raises(PolicyError, match=r"^coupon policy .*nope\.yaml: file not found$"):
            load_policy(path)

    def test_several_errors_are_counted_on_one_line(self, tmp_path):
        path = write(tmp_path, "margin_rate: 2\nwindow_days: 0\n" + TWO_TIERS)
        with pytest.raises(PolicyError, match=r"margin_rate: .* \(and 1 more\)$"):
            load_policy(path)

    def test_policy_error_is_a_value_error(self):
        assert issubclass(PolicyError, ValueError)

    def test_model_forbids_extra_keys(self):
        with pytest.raises(ValueError):
            Tier(name="a", value=5, colour="red")  # type: ignore[call-arg]
        assert set(STAGES) >= set(CouponPolicy(tiers=[Tier(name="a", value=5)]).tiers[0].stages)


# --------------------------------------------------------------------------------------------
# Incremental value
# --------------------------------------------------------------------------------------------


class TestIncrementalValue:
    def test_hand_computed(self):
        # Customer 0: p_with = 0.2, 0.3; cost = 1, 3; value = 0.1*100*0.5 - 1, 0.2*50 - 3.
        # Customer 1: p_with clipped to 1 for both; cost = 5, 10; value = 0.1*50 - 5, 0.1*50 - 10.
        value, cost = incremental_value(
            p_without=[0.1, 0.9],
            uplift=[[0.1, 0.2], [0.2, 0.3]],
            order_value=[100.0, 100.0],
            margin_rate=0.5,
            coupon_values=[5.0, 10.0],
        )
        np.testing.assert_allclose(cost, [[1.0, 3.0], [5.0, 10.0]])
        np.testing.assert_allclose(value, [[4.0, 7.0], [0.0, -5.0]], atol=1e-12)

    def test_customer_who_buys_anyway_is_never_worth_a_coupon(self):
        value, cost = incremental_value([1.0, 1.0], [[0.5, 0.0], [0.0, 0.2]], 300.0, 0.4, [5, 30])
        np.testing.assert_allclose(value, -cost)
        assert (value < 0).all()
        assert allocate(value, cost).tolist() == [-1, -1]

    def test_negative_uplift_is_clipped_at_zero_probability(self):
        value, cost = incremental_value([0.05], [[-0.2]], [100.0], 0.5, [10.0])
        np.testing.assert_allclose(cost, [[0.0]])
        np.testing.assert_allclose(value, [[-0.05 * 100 * 0.5]])

    def test_missing_inputs_are_ineligible(self):
        value, cost = incremental_value(
            [0.1, np.nan, 0.1],
            [[0.3, 0.3], [0.3, 0.3], [np.nan, 0.3]],
            [100, 100, 100],
            0.5,
            [1, 2],
        )
        assert np.isneginf(value[1]).all() and np.isnan(cost[1]).all()
        assert np.isneginf(value[2, 0]) and np.isnan(cost[2, 0])
        assert np.isfinite(value[[0, 2], [0, 1]]).all()
        choice = allocate(value, cost, budget=100.0)
        assert choice[1] == -1 and choice[2] == 1

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"uplift": [[0.1]]}, "uplift must have shape"),
            ({"p_without": [1.5, 0.1]}, "p_without"),
            ({"margin_rate": 0.0}, "margin_rate"),
            ({"coupon_values": [0.0, 1.0]}, "coupon_values"),
            ({"order_value": [-1.0, 1.0]}, "order_value"),
        ],
        ids=["shape", "probability", "margin", "coupon", "order-value"],
    )
    def test_invalid_inputs(self, kwargs, match):
        args = {
            "p_without": [0.1, 0.2],
            "uplift": [[0.1, 0.1], [0.1, 0.1]],
            "order_value": [10.0, 10.0],
            "margin_rate": 0.3,
            "coupon_values": [1.0, 2.0],
        } | kwargs
        with pytest.raises(ValueError, match=match):
            incremental_value(**args)


# --------------------------------------------------------------------------------------------
# Allocation
# --------------------------------------------------------------------------------------------


def check_constraints(choice, value, cost, eligible, budget, quotas):
    """Every hard constraint of allocate, as assertions."""
    value, cost, eligible = np.asarray(value), np.asarray(cost), np.asarray(eligible, dtype=bool)
    n, t = value.shape
    assert choice.shape == (n,) and choice.dtype == np.int64
    assert ((choice >= -1) & (choice < t)).all()
    rows = np.flatnonzero(choice >= 0)
    picked = choice[rows]
    assert eligible[rows, picked].all()
    assert (value[rows, picked] > 0).all() and np.isfinite(value[rows, picked]).all()
    assert np.isfinite(cost[rows, picked]).all()
    if budget is not None and np.isfinite(budget):
        assert cost[rows, picked].sum() <= budget + 1e-9 * max(1.0, budget)
    if quotas is not None:
        counts = np.bincount(picked, minlength=t)
        for tier, quota in enumerate(quotas):
            if quota is not None and quota >= 0:
                assert counts[tier] <= quota


@st.composite
def problems(draw, max_n=12, max_t=4):
    n = draw(st.integers(0, max_n))
    t = draw(st.integers(1, max_t))
    # A few repeated values make ties (equal slopes, equal values, free options) common.
    value = draw(
        hnp.arrays(
            np.float64,
            (n, t),
            elements=st.one_of(
                st.sampled_from([-1.0, 0.0, 0.5, 1.0, 2.0]),
                st.floats(-5, 10, allow_nan=False, allow_infinity=False),
            ),
        )
    )
    cost = draw(
        hnp.arrays(
            np.float64,
            (n, t),
            elements=st.one_of(
                st.sampled_from([0.0, 0.5, 1.0, 3.0]),
                st.floats(0, 10, allow_nan=False, allow_infinity=False),
            ),
        )
    )
    eligible = draw(hnp.arrays(np.bool_, (n, t)))
    budget = draw(st.one_of(st.none(), st.just(np.inf), st.floats(0, 30)))
    quotas = draw(
        st.one_of(
            st.none(), st.lists(st.one_of(st.none(), st.integers(-1, 4)), min_size=t, max_size=t)
        )
    )
    return value, cost, eligible, budget, quotas


class TestAllocateProperties:
    @PROPERTY_SETTINGS
    @given(problems())
    def test_constraints_always_hold_and_result_is_deterministic(self, problem):
        value, cost, eligible, budget, quotas = problem
        before = (value.copy(), cost.copy(), eligible.copy())
        choice = allocate(value, cost, eligible, budget, quotas)
        check_constraints(choice, value, cost, eligible, budget, quotas)
        np.testing.assert_array_equal(allocate(value, cost, eligible, budget, quotas), choice)
        for original, argument in zip(before, (value, cost, eligible), strict=True):
            np.testing.assert_array_equal(original, argument)  # inputs untouched

    @settings(max_examples=60, deadline=None, database=None, derandomize=True)
    @given(problems(max_n=300, max_t=4))
    def test_constraints_hold_on_larger_problems(self, problem):
        value, cost, eligible, budget, quotas = problem
        choice = allocate(value, cost, eligible, budget, quotas)
        check_constraints(choice, value, cost, eligible, budget, quotas)

    def test_sampled_warm_start_of_large_problems(self, monkeypatch):
        # Above 2 x _SAMPLE customers the quota penalties start from a sample; the constraints
        # still hold and the value stays close to running every round on everyone.
        rng = np.random.default_rng(3)
        n, t = 2 * policy_module._SAMPLE + 5_000, 3
        value = rng.normal(1.0, 2.0, (n, t))
        cost = rng.uniform(0.1, 3.0, (n, t)) * np.array([1.0, 2.0, 3.0])
        eligible = rng.random((n, t)) < 0.9
        quotas = [None, 20_000, 5_000]
        budget = 40_000.0
        choice = allocate(value, cost, eligible, budget, quotas)
        check_constraints(choice, value, cost, eligible, budget, quotas)
        monkeypatch.setattr(policy_module, "_SAMPLE", 10 * n)
        full = allocate(value, cost, eligible, budget, quotas)
        check_constraints(full, value, cost, eligible, budget, quotas)
        sampled_value = chosen_totals(choice, value, cost)[0]
        full_value = chosen_totals(full, value, cost)[0]
        assert sampled_value >= 0.99 * full_value


def brute_force(value, cost, eligible, budget, quotas):
    """Best total value over every assignment (the oracle); -1 = no coupon."""
    n, t = value.shape
    options = np.array(list(itertools.product(range(-1, t), repeat=n)), dtype=np.int64)
    rows = np.arange(n)
    pad_value = np.hstack([np.zeros((n, 1)), np.where(eligible & (value > 0), value, -np.inf)])
    pad_cost = np.hstack([np.zeros((n, 1)), cost])
    totals = pad_value[rows, options + 1].sum(axis=1)
    spent = pad_cost[rows, options + 1].sum(axis=1)
    feasible = np.isfinite(totals) & (spent <= budget)
    for tier, quota in enumerate(quotas or []):
        if quota is not None and quota >= 0:
            feasible &= (options == tier).sum(axis=1) <= quota
    return float(totals[feasible].max())


def small_problem(rng, with_quotas):
    n, t = int(rng.integers(1, 7)), int(rng.integers(1, 4))
    value = np.round(rng.normal(1.0, 2.0, (n, t)) * 2) / 2  # halves: ties are common
    cost = np.round(rng.uniform(0.0, 3.0, (n, t)) * 2) / 2
    eligible = rng.random((n, t)) < 0.8
    budget = float(np.round(rng.uniform(0.0, 6.0), 1))
    quotas = None
    if with_quotas:
        quotas = [int(rng.integers(0, 3)) if rng.random() < 0.6 else None for _ in range(t)]
    return value, cost, eligible, budget, quotas


class TestAllocateAgainstBruteForce:
    CASES = 300

    def test_within_one_option_of_the_optimum_and_usually_optimal(self):
        rng = np.random.default_rng(20240601)
        optimal = 0
        for _ in range(self.CASES):
            value, cost, eligible, budget, quotas = small_problem(rng, with_quotas=False)
            choice = allocate(value, cost, eligible, budget, quotas)
            check_constraints(choice, value, cost, eligible, budget, quotas)
            got = chosen_totals(choice, value, cost)[0]
            best = brute_force(value, cost, eligible, budget, quotas)
            largest = float(np.where(eligible & (value > 0), value, 0.0).max())
            assert got >= best - largest - 1e-9
            optimal += got >= best - 1e-9
        assert optimal / self.CASES >= 0.8

    def test_with_quotas_usually_optimal(self):
        rng = np.random.default_rng(20240602)
        optimal = 0
        for _ in range(self.CASES):
            value, cost, eligible, budget, quotas = small_problem(rng, with_quotas=True)
            choice = allocate(value, cost, eligible, budget, quotas)
            check_constraints(choice, value, cost, eligible, budget, quotas)
            got = chosen_totals(choice, value, cost)[0]
            optimal += got >= brute_force(value, cost, eligible, budget, quotas) - 1e-9
        assert optimal / self.CASES >= 0.8


class TestAllocateCases:
    def test_value_per_cost_beats_largest_value(self):
        # One tier. Customer 0 alone (value 10) fills the budget; customers 1 and 2 together
        # are worth 12 for the same cost.
        choice = allocate([[10.0], [6.0], [6.0]], [[10.0], [5.0], [5.0]], budget=10.0)
        assert choice.tolist() == [-1, 0, 0]

    def test_multiple_choice_takes_the_cheaper_tier_where_it_pays(self):
        # (value, cost) per tier: customer 0 (3, 1) or (5, 4); customer 1 (2, 1) or (4.5, 3).
        # Budget 5: tiers [0, 1] are worth 7.5 for cost 4, better than [1, 0] (7 for 5).
        value = [[3.0, 5.0], [2.0, 4.5]]
        cost = [[1.0, 4.0], [1.0, 3.0]]
        assert allocate(value, cost, budget=5.0).tolist() == [0, 1]

    def test_quota_keeps_the_customer_who_loses_most_without_the_tier(self):
        # Tier 0 for one customer only: margins over tier 1 are 1, 8 and 9, so customer 2
        # keeps it and the others take tier 1 (total 21; giving it to customer 1 makes 20).
        value = [[10.0, 9.0], [10.0, 2.0], [10.0, 1.0]]
        cost = np.zeros((3, 2))
        assert allocate(value, cost, budget=None, quotas=[1, None]).tolist() == [1, 1, 0]

    @pytest.mark.parametrize("budget", [None, 100.0], ids=["unlimited", "budget"])
    @pytest.mark.parametrize("rounds", [0, 6], ids=["enforcement-only", "with-penalties"])
    def test_quota_enforcement_keeps_the_largest_margins(self, monkeypatch, budget, rounds):
        # Without penalty rounds all three take tier 0; the hard enforcement alone must keep
        # customer 2 (margins over tier 1: 1, 8, 9) and move the others to tier 1.
        monkeypatch.setattr(policy_module, "_QUOTA_ROUNDS", rounds)
        value = [[10.0, 9.0], [10.0, 2.0], [10.0, 1.0]]
        cost = [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]
        assert allocate(value, cost, budget=budget, quotas=[1, None]).tolist() == [1, 1, 0]

    def test_ties_go_to_the_lowest_customer_then_tier_index(self):
        value = np.full((5, 2), 2.0)
        cost = np.ones((5, 2))
        assert allocate(value, cost, budget=2.0).tolist() == [0, 0, -1, -1, -1]
        assert allocate(value, cost, budget=None).tolist() == [0] * 5
        assert allocate(value, cost, budget=None, quotas=[2, None]).tolist() == [0, 0, 1, 1, 1]

    @pytest.mark.parametrize("budget", [None, np.inf, 1e12], ids=["none", "inf", "huge"])
    def test_unlimited_budget_takes_every_best_positive_option(self, budget):
        rng = np.random.default_rng(7)
        value = rng.normal(0.0, 2.0, (500, 4))
        cost = rng.uniform(0.0, 5.0, (500, 4))
        eligible = rng.random((500, 4)) < 0.7
        choice = allocate(value, cost, eligible, budget)
        best = np.where(eligible & (value > 0), value, -np.inf).max(axis=1)
        has = np.isfinite(best)
        assert (choice[~has] == -1).all()
        np.testing.assert_array_equal(value[has, choice[has]], best[has])

    def test_zero_budget_takes_only_free_options(self):
        value = [[1.0, 3.0], [2.0, 5.0], [-1.0, 4.0]]
        cost = [[0.0, 1.0], [0.0, 0.0], [0.0, 2.0]]
        assert allocate(value, cost, budget=0.0).tolist() == [0, 1, -1]

    def test_zero_costs_with_a_budget(self):
        value = np.array([[1.0, 2.0], [3.0, 0.5]])
        assert allocate(value, np.zeros((2, 2)), budget=0.0).tolist() == [1, 0]

    def test_no_customers(self):
        choice = allocate(np.zeros((0, 3)), np.zeros((0, 3)), budget=10.0)
        assert choice.shape == (0,) and choice.dtype == np.int64

    def test_one_tier(self):
        choice = allocate([[3.0], [1.0], [2.0]], [[1.0], [1.0], [1.0]], budget=2.0)
        assert choice.tolist() == [0, -1, 0]

    def test_all_values_negative_or_zero(self):
        value = np.array([[-1.0, 0.0], [-3.0, -0.1]])
        assert allocate(value, np.ones((2, 2)), budget=None).tolist() == [-1, -1]

    def test_nothing_eligible_and_zero_quota(self):
        value, cost = np.ones((3, 2)), np.ones((3, 2))
        assert allocate(value, cost, np.zeros((3, 2), dtype=bool)).tolist() == [-1, -1, -1]
        assert allocate(value, cost, quotas=[0, 1]).tolist() == [1, -1, -1]

    def test_non_finite_options_are_ineligible(self):
        value = [[np.nan, 1.0], [np.inf, 1.0], [2.0, 1.0]]
        cost = [[1.0, 1.0], [1.0, 1.0], [np.inf, 1.0]]
        assert allocate(value, cost, budget=None).tolist() == [1, 1, 1]

    @pytest.mark.parametrize(
        ("args", "match"),
        [
            (([[1.0]], [[1.0, 2.0]]), "cost must have shape"),
            (([1.0], [1.0]), "2-D"),
            (([[1.0]], [[-1.0]]), "cost must be >= 0"),
            (([[1.0]], [[1.0]], None, -1.0), "budget"),
            (([[1.0]], [[1.0]], None, float("nan")), "budget"),
            (([[1.0]], [[1.0]], None, None, [1, 2]), "quotas"),
            (([[1.0]], [[1.0]], [[True, False]]), "eligible"),
        ],
        ids=[
            "cost-shape",
            "1-d",
            "negative-cost",
            "negative-budget",
            "nan-budget",
            "quotas",
            "elig",
        ],
    )
    def test_invalid_arguments(self, args, match):
        with pytest.raises(ValueError, match=match):
            allocate(*args)


# --------------------------------------------------------------------------------------------
# Control group
# --------------------------------------------------------------------------------------------

AS_OF = datetime.date(2024, 6, 1)


@pytest.fixture(scope="module")
def customers():
    """100,000 customers: ids, and tiers -1 (none), 0, 1, 2 with about 25,000 each."""
    rng = np.random.default_rng(11)
    n = 100_000
    ids = pd.Series([f"C{i:06d}" for i in rng.permutation(n)], name="customer_id")
    tiers = rng.integers(-1, 3, n)
    return ids, tiers


class TestControlGroup:
    def test_share_per_tier_and_none_without_a_tier(self, customers):
        ids, tiers = customers
        flags = control_group(ids, AS_OF, tiers, 0.10, seed=42)
        assert flags.dtype == np.bool_ and flags.shape == tiers.shape
        assert not flags[tiers < 0].any()
        for tier in range(3):
            in_tier = tiers == tier
            assert in_tier.sum() >= 10_000
            assert abs(flags[in_tier].mean() - 0.10) < 0.005

    def test_reproducible(self, customers):
        ids, tiers = customers
        first = control_group(ids, AS_OF, tiers, 0.10, seed=42)
        np.testing.assert_array_equal(control_group(ids, AS_OF, tiers, 0.10, seed=42), first)
        as_datetime = datetime.datetime(2024, 6, 1, 9, 30)
        np.testing.assert_array_equal(control_group(ids, as_datetime, tiers, 0.10, 42), first)

    @pytest.mark.parametrize(
        ("as_of", "seed"), [(datetime.date(2024, 6, 2), 42), (AS_OF, 43)], ids=["date", "seed"]
    )
    def test_new_date_or_seed_gives_an_independent_draw(self, customers, as_of, seed):
        ids, tiers = customers
        first = control_group(ids, AS_OF, tiers, 0.10, seed=42)
        other = control_group(ids, as_of, tiers, 0.10, seed=seed)
        assert other.sum() == first.sum()
        # Independent draws overlap in about 10 % of the control group.
        overlap = (first & other).sum() / first.sum()
        assert 0.07 < overlap < 0.13

    def test_row_order_does_not_matter(self, customers):
        ids, tiers = customers
        flags = pd.Series(control_group(ids, AS_OF, tiers, 0.10, seed=42), index=ids.to_numpy())
        order = np.random.default_rng(5).permutation(len(ids))
        shuffled_ids = ids.iloc[order].reset_index(drop=True)
        shuffled = control_group(shuffled_ids, AS_OF, tiers[order], 0.10, seed=42)
        np.testing.assert_array_equal(shuffled, flags.loc[shuffled_ids.to_numpy()].to_numpy())

    def test_draw_is_not_the_id_order(self, customers):
        ids, tiers = customers
        flags = control_group(ids, AS_OF, tiers, 0.10, seed=42)
        in_tier = tiers == 0
        rank = ids[in_tier].rank(pct=True).to_numpy()
        assert abs(rank[flags[in_tier]].mean() - 0.5) < 0.02

    def test_rounding_per_tier(self):
        ids = pd.Series([f"c{i}" for i in range(9)])
        tiers = np.array([0] * 5 + [1] * 4)
        flags = control_group(ids, AS_OF, tiers, 0.10, seed=1)
        # round(0.5) -> 1 for the tier of 5 (halves round up); round(0.4) -> 0 for the tier of 4.
        assert flags[:5].sum() == 1 and flags[5:].sum() == 0
        assert not control_group(ids, AS_OF, tiers, 0.0, seed=1).any()

    def test_ids_are_drawn_by_their_text(self):
        tiers = np.zeros(50, dtype=np.int64)
        as_int = control_group(pd.Series(np.arange(50)), AS_OF, tiers, 0.2, seed=3)
        as_text = control_group(pd.Series([str(i) for i in range(50)]), AS_OF, tiers, 0.2, 3)
        np.testing.assert_array_equal(as_int, as_text)

    def test_invalid_arguments(self):
        ids = pd.Series(["a", "b"])
        with pytest.raises(ValueError, match="one entry per customer"):
            control_group(ids, AS_OF, np.array([0]), 0.1, seed=1)
        with pytest.raises(ValueError, match="share"):
            control_group(ids, AS_OF, np.array([0, 0]), 1.0, seed=1)
