"""Coupon policy: which customer gets which coupon tier within a budget, and who is held out.

Pure logic (numpy, pandas, pydantic, PyYAML): no orchestration, tracking or feature-store calls.
The flow reads the policy file, scores the customers and passes plain arrays here.

- :class:`CouponPolicy` is the campaign team's YAML file (``flows/coupon_policy.yaml``), read by
  :func:`load_policy`; any problem is one line of :class:`PolicyError` naming the file and key.
- :func:`incremental_value` turns purchase probabilities into the expected *incremental* margin
  of each coupon tier and its expected cost. Everyone who buys in the coupon window redeems the
  coupon, organic buyers included, so a coupon to someone who would buy anyway is a pure cost:
  no discounts for coupon hunters who would buy anyway (DOMAIN.md, coupon tiering).
- :func:`allocate` picks at most one tier per customer to maximise the total incremental value
  under a budget and per-tier quotas (a multiple-choice knapsack, solved by a Lagrangian
  method; see its docstring for the method and its guarantees).
- :func:`control_group` draws a reproducible hold-out, stratified by tier, for measurement.

Arrays of options are ``(n, t)``: one row per customer, one column per tier, tiers in the
policy's order (value ascending). A tier index of ``-1`` means "no coupon".
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "STAGES",
    "CouponPolicy",
    "FrequencyCap",
    "PolicyError",
    "Tier",
    "allocate",
    "control_group",
    "incremental_value",
    "load_policy",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

Stage = Literal["acquisition", "activation", "maturity", "dormant", "lost"]
#: Lifecycle stages a tier may target (``features.customer_features`` ``lifecycle_stage``).
STAGES: tuple[str, ...] = ("acquisition", "activation", "maturity", "dormant", "lost")
_DEFAULT_STAGES: list[Stage] = ["activation", "maturity", "dormant", "lost"]

#: Rounds of quota penalties before the hard quota enforcement.
_QUOTA_ROUNDS = 6
#: Rounds on all customers after the rounds on a sample (large problems only).
_FULL_ROUNDS = 1
#: Customers in the sample that sets the starting penalties of a large problem.
_SAMPLE = 65_536
#: Share of the budget left over above which the unlimited solution is tried as well.
_SLACK = 1e-3
#: Rounds of the greedy fill of leftover budget (each round takes at least one move).
_FILL_ROUNDS = 64
# --------------------------------------------------------------------------------------------
# The policy file
# --------------------------------------------------------------------------------------------


class PolicyError(ValueError):
    """A coupon policy file that is missing, is not valid YAML or holds an invalid value."""


class FrequencyCap(BaseModel):
    """No coupon for a customer already touched ``max_touches`` times in the last ``days`` days."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_touches: int = Field(default=3, ge=1, strict=True)
    days: int = Field(default=7, ge=1, strict=True)


class Tier(BaseModel):
    """One coupon tier: its face value, how many customers may get it and who is eligible."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    #: Unique, one word (it becomes a column value and a metric suffix).
    name: str = Field(min_length=1, pattern=r"^\S+$", strict=True)
    #: Face value of the coupon (currency units).
    value: float = Field(gt=0, strict=True)
    #: At most this many customers get the tier; ``None`` means no limit.
    quota: int | None = Field(default=None, ge=0, strict=True)
    #: Lifecycle stages eligible for the tier.
    stages: list[Stage] = Field(default_factory=lambda: list(_DEFAULT_STAGES), min_length=1)
    #: Predicted 180-day value a customer needs to be eligible.
    min_value_180d: float = Field(default=0.0, ge=0, strict=True)
    #: Churn probability a customer needs to be eligible (e.g. strongest tier for at-risk only).
    min_churn_prob: float = Field(default=0.0, ge=0, le=1, strict=True)


class CouponPolicy(BaseModel):
    """The coupon policy a campaign team edits (``flows/coupon_policy.yaml``).

    After validation the tiers are sorted by face value, ascending (ties keep the file order);
    every ``(n, t)`` array of this module uses that order.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    #: Gross margin as a share of net spend before the coupon.
    margin_rate: float = Field(default=0.35, gt=0, le=1, strict=True)
    #: Days a coupon is valid; a purchase within them counts as using it.
    window_days: int = Field(default=7, gt=0, strict=True)
    #: Share of each tier's customers held out as a control group.
    control_share: float = Field(default=0.10, ge=0, lt=1, strict=True)
    frequency_cap: FrequencyCap = Field(default_factory=FrequencyCap)
    #: Customer attribute that marks opt-outs (true: never gets a coupon).
    opt_out_column: str = Field(default="opted_out", min_length=1, strict=True)
    tiers: list[Tier] = Field(min_length=1)
    #: Purchase probability each tier's coupon adds, by tier name, used while there is no
    #: coupon history to learn from; a tier not listed adds 0.
    default_uplift: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_and_sort_tiers(self) -> CouponPolicy:
        first: dict[str, int] = {}
        for i, tier in enumerate(self.tiers):
            if tier.name in first:
                raise ValueError(
                    f"tiers[{i}].name: duplicate tier name {tier.name!r} "
                    f"(already used by tiers[{first[tier.name]}])"
                )
            first[tier.name] = i
        for name, uplift in self.default_uplift.items():
            if name not in first:
                raise ValueError(
                    f"default_uplift.{name}: not a tier name (tiers: {', '.join(first)})"
                )
            if not 0.0 <= uplift <= 1.0:
                raise ValueError(f"default_uplift.{name}: must be between 0 and 1 (got {uplift})")
        self.tiers = sorted(self.tiers, key=lambda tier: tier.value)
        return self

    @property
    def tier_names(self) -> list[str]:
        """Tier names in array order (value ascending)."""
        return [tier.name for tier in self.tiers]

    @property
    def coupon_values(self) -> FloatArray:
        """Face values in array order, shape ``(t,)``."""
        return np.array([tier.value for tier in self.tiers], dtype=np.float64)

    @property
    def default_uplifts(self) -> FloatArray:
        """``default_uplift`` in array order, shape ``(t,)``; a tier not listed gets 0."""
        return np.array([self.default_uplift.get(tier.name, 0.0) for tier in self.tiers])

    @property
    def quotas(self) -> list[int | None]:
        """Quotas in array order (``None``: unlimited), as :func:`allocate` takes them."""
        return [tier.quota for tier in self.tiers]


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key written twice (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool):
                continue  # unhashable keys are reported by PyYAML itself
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is written twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _key_path(loc: Sequence[int | str]) -> str:
    """``("tiers", 1, "value")`` -> ``"tiers[1].value"``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _allowed_keys(loc: Sequence[int | str]) -> list[str]:
    """The keys allowed where ``loc`` (the unknown key) sits."""
    parents = [p for p in loc[:-1] if isinstance(p, str)]
    model: type[BaseModel] = CouponPolicy
    if parents == ["tiers"]:
        model = Tier
    elif parents == ["frequency_cap"]:
        model = FrequencyCap
    return list(model.model_fields)


def _plain_message(error: Any) -> str:
    """One pydantic error in words a campaign team reads, without pydantic's jargon."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    bounds = {
        "greater_than": (">", "gt"),
        "greater_than_equal": (">=", "ge"),
        "less_than": ("<", "lt"),
        "less_than_equal": ("<=", "le"),
    }
    if kind in bounds:
        op, key = bounds[kind]
        message = f"must be {op} {ctx[key]:g}"
    elif kind == "missing":
        return "required key is missing"
    elif kind == "extra_forbidden":
        return f"unknown key (allowed: {', '.join(_allowed_keys(error['loc']))})"
    elif kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    elif kind == "literal_error":
        message = f"must be one of {ctx['expected']}"
    elif kind in ("int_type", "int_parsing", "int_from_float"):
        message = "must be a whole number"
    elif kind in ("float_type", "float_parsing"):
        message = "must be a number"
    elif kind == "finite_number":
        message = "must be a finite number"
    elif kind == "string_pattern_mismatch":
        message = "must be one word without spaces"
    elif kind in ("string_too_short", "too_short"):
        return "must not be empty"
    elif kind == "string_type":
        message = "must be text"
    elif kind in ("model_type", "dict_type"):
        return "must be a mapping of keys to values"
    elif kind == "list_type":
        return "must be a list"
    else:
        message = str(error["msg"])
    value = error.get("input")
    if isinstance(value, str | int | float | bool) or value is None:
        shown = repr(value)
        message += f" (got {shown if len(shown) <= 40 else shown[:37] + '...'})"
    return message


def load_policy(path: Path) -> CouponPolicy:
    """Read and validate a coupon policy YAML file.

    Args:
        path: The YAML file (``flows/coupon_policy.yaml`` by default in the flows).

    Returns:
        The validated policy, tiers sorted by face value.

    Raises:
        PolicyError: One line naming the file and the offending key, e.g.
            ``coupon policy flows/coupon_policy.yaml: tiers[1].value: must be > 0 (got -5)``,
            for a missing file, invalid YAML, an unknown key or an invalid value. When several
            values are invalid the first is named and the others counted.
    """
    where = f"coupon policy {path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError(f"{where}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{where}: cannot read the file ({exc})") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no Python objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        place = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise PolicyError(f"{where}: invalid YAML{place}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"{where}: invalid YAML: {' '.join(str(exc).split())}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        kind = type(raw).__name__
        raise PolicyError(f"{where}: expected keys and values at the top level, got a {kind}")
    try:
        return CouponPolicy.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        key = _key_path(first["loc"])
        line = f"{where}: {key + ': ' if key else ''}{_plain_message(first)}"
        if len(errors) > 1:
            line += f" (and {len(errors) - 1} more)"
        raise PolicyError(" ".join(line.split())) from None


# --------------------------------------------------------------------------------------------
# Expected incremental value
# --------------------------------------------------------------------------------------------


def incremental_value(
    p_without: npt.ArrayLike,
    uplift: npt.ArrayLike,
    order_value: npt.ArrayLike,
    margin_rate: float,
    coupon_values: npt.ArrayLike,
) -> tuple[FloatArray, FloatArray]:
    """Expected incremental margin and expected cost of each coupon tier for each customer.

    With ``p_with = clip(p_without + uplift, 0, 1)`` (per customer and tier):

    - ``cost = p_with * coupon_value``: everyone who buys within the coupon window redeems it,
      the customers who would have bought anyway included;
    - ``value = (p_with - p_without) * order_value * margin_rate - cost``: the margin of the
      purchases the coupon adds, less what all redemptions cost.

    So a coupon is worth nothing to a customer who buys anyway (``p_without`` near 1): the
    coupon only subsidises a purchase that would have happened.

    Args:
        p_without: Shape ``(n,)``, probability of a purchase within the window without a coupon.
        uplift: Shape ``(n, t)``, probability added by each tier's coupon (may be negative).
        order_value: Shape ``(n,)`` or a scalar, expected net spend of that purchase, >= 0.
        margin_rate: Gross margin share of net spend, in ``(0, 1]``.
        coupon_values: Shape ``(t,)``, each tier's face value, > 0.

    Returns:
        ``(value, cost)``, each of shape ``(n, t)``, in currency units. A customer-tier pair
        with a missing or infinite input (``p_without``, ``order_value`` or ``uplift``) gets
        ``value = -inf`` and ``cost = NaN``, which :func:`allocate` treats as ineligible.

    Raises:
        ValueError: On shapes that do not match, a finite ``p_without`` outside ``[0, 1]``, a
            negative ``order_value``, ``margin_rate`` outside ``(0, 1]`` or a coupon value that
            is not a positive finite number.
    """
    p0 = np.asarray(p_without, dtype=np.float64)
    up = np.asarray(uplift, dtype=np.float64)
    coupons = np.asarray(coupon_values, dtype=np.float64)
    if p0.ndim != 1:
        raise ValueError(f"p_without must be 1-D, got shape {p0.shape}")
    if coupons.ndim != 1:
        raise ValueError(f"coupon_values must be 1-D, got shape {coupons.shape}")
    n, t = p0.shape[0], coupons.shape[0]
    if up.shape != (n, t):
        raise ValueError(f"uplift must have shape {(n, t)}, got {up.shape}")
    spend = np.broadcast_to(np.asarray(order_value, dtype=np.float64), (n,))
    if not (np.isfinite(coupons).all() and (coupons > 0).all()):
        raise ValueError("coupon_values must be positive finite numbers")
    if not 0.0 < margin_rate <= 1.0:
        raise ValueError(f"margin_rate must be in (0, 1], got {margin_rate}")
    with np.errstate(invalid="ignore"):
        if ((p0 < 0) | (p0 > 1)).any():
            raise ValueError("p_without must lie in [0, 1]")
        if (spend < 0).any():
            raise ValueError("order_value must be >= 0")
    missing = ~(np.isfinite(p0) & np.isfinite(spend))[:, None] | ~np.isfinite(up)
    p_with = np.clip(p0[:, None] + up, 0.0, 1.0)
    cost = p_with * coupons[None, :]
    value = (p_with - p0[:, None]) * (spend * margin_rate)[:, None] - cost
    value[missing] = -np.inf
    cost[missing] = np.nan
    return value, cost


# --------------------------------------------------------------------------------------------
# Allocation within a budget
# --------------------------------------------------------------------------------------------


def allocate(
    value: npt.ArrayLike,
    cost: npt.ArrayLike,
    eligible: npt.ArrayLike | None = None,
    budget: float | None = None,
    quotas: Sequence[int | None] | npt.ArrayLike | None = None,
) -> IntArray:
    """Choose at most one coupon tier per customer, maximising total value within a budget.

    The problem is a multiple-choice knapsack with per-tier quotas (NP-hard). It is solved by
    a vectorised Lagrangian method:

    1. **Budget multiplier.** For a multiplier ``lam >= 0`` each customer takes
       ``argmax_t value - lam * cost - mu_t`` if that is > 0. Instead of bisecting ``lam``,
       the exact breakpoint is found: each customer's options are reduced to their upper convex
       hull in the (cost, value) plane (a gift-wrapping walk from the best free option, at most
       ``t`` steps, vectorised over customers); the hull increments, sorted by value per unit
       of cost, are what the Lagrangian choice takes as ``lam`` falls. A weighted quickselect
       finds the increment where the budget runs out; every increment above it is taken, tied
       increments in customer then tier order while they fit. This is the integral part of the
       LP relaxation's greedy optimum (Sinha & Zoltners, 1979).
    2. **Quotas.** A tier chosen by more customers than its quota gets a penalty ``mu_t``, set
       so that only its ``quota`` customers with the largest margin over their next best choice
       keep it (and a penalised tier left with room gets a smaller one), then step 1 is solved
       again: a few rounds. Above ~130,000 customers the rounds run on an evenly spaced sample
       of 65,536 (budget and quotas scaled), then once on everyone.
    3. **Hard quota enforcement.** An over-full tier keeps its customers with the largest
       margin; the rest move to their best option in a tier with room (no dearer than the
       coupon they lose, so the budget still holds) or to no coupon.
    4. **Budget trim** (a safety net against rounding): while over budget, drop the chosen
       options with the lowest value per cost.
    5. **Greedy fill** of the leftover budget: in rounds, the moves (a coupon for a customer
       without one, or a better one) with the largest value gain that fit the budget and the
       quotas.

    With quotas and more than 0.1 % of the budget left over, the unlimited solution (steps
    1-5 with ``lam = 0``) is computed too and kept if it fits the budget and is worth more:
    quotas that bind before the budget does are then solved without a budget multiplier.

    Guarantees: the constraints always hold (at most one tier per customer; only eligible
    options with a finite ``value > 0`` and a finite ``cost``; total chosen cost <=
    ``budget``; per-tier counts <= quotas); the result is deterministic, ties broken by
    customer index then tier index. Optimality gap: without quotas the total value is at
    least the LP relaxation's optimum (so at least the true optimum) minus the value of one
    hull increment, the one the budget splits, i.e. within one customer's best option value
    of the optimum. With binding quotas steps 2-3 are a heuristic without that bound.

    Speed: a few passes over ``n * t`` numbers per round; ``n = 1,000,000, t = 4`` takes
    0.2-1.2 s on one core (the most with a binding budget and every option on the hull).

    Args:
        value: Shape ``(n, t)``, expected incremental value of each option (e.g. from
            :func:`incremental_value`). Non-finite entries are ineligible.
        cost: Shape ``(n, t)``, expected cost of each option, >= 0. Non-finite entries are
            ineligible.
        eligible: Shape ``(n, t)`` booleans (default: everything eligible).
        budget: Total cost allowed, >= 0; ``None`` or ``inf``: unlimited, every customer takes
            their best positive option (ties: the lowest tier index) subject to the quotas.
        quotas: Length ``t``, the most customers per tier; ``None`` or a negative number:
            unlimited. ``None`` for the whole argument: no quotas.

    Returns:
        Shape ``(n,)`` int64: the chosen tier index per customer, ``-1`` for no coupon.

    Raises:
        ValueError: On shapes that do not match, a negative or NaN budget, or a finite negative
            cost of an eligible option.
    """
    v = np.asarray(value, dtype=np.float64)
    c = np.asarray(cost, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"value must be 2-D (customers x tiers), got shape {v.shape}")
    if c.shape != v.shape:
        raise ValueError(f"cost must have shape {v.shape}, got {c.shape}")
    n, t = v.shape
    ok = np.ones(v.shape, dtype=bool) if eligible is None else np.asarray(eligible, dtype=bool)
    if ok.shape != v.shape:
        raise ValueError(f"eligible must have shape {v.shape}, got {ok.shape}")
    caps = _quota_caps(quotas, t)
    limit = _budget_limit(budget)
    with np.errstate(invalid="ignore"):
        if (ok & np.isfinite(c) & (c < 0)).any():
            raise ValueError("cost must be >= 0 for eligible options")
        ok = ok & np.isfinite(v) & np.isfinite(c) & (v > 0) & (caps != 0)[None, :]
    if n == 0 or t == 0 or not ok.any():
        return np.full(n, -1, dtype=np.int64)

    # Only customers with an option take part; tier-major copies, so that every per-tier
    # operation below reads one contiguous row. Rows keep their order (the tie order).
    rows = np.flatnonzero(ok.any(axis=1))
    okay = ok[rows].T.copy()
    vals = np.where(okay, v[rows].T, 0.0)
    costs = np.where(okay, c[rows].T, 0.0)
    choice = _solve(vals, costs, okay, caps, limit)
    if limit is not None and (caps > 0).any() and _spent(choice, costs) < (1 - _SLACK) * limit:
        # Budget left over: the quotas may bind before the budget does, and then the
        # unlimited solution may fit; keep whichever fitting answer is worth more.
        free = _solve(vals, costs, okay, caps, None)
        if _spent(free, costs) <= limit and _worth(free, vals) > _worth(choice, vals):
            choice = free
    result = np.full(n, -1, dtype=np.int64)
    result[rows] = choice
    return result


def _solve(
    vals: FloatArray, costs: FloatArray, okay: BoolArray, caps: IntArray, limit: float | None
) -> IntArray:
    """Steps 1-5 on tier-major arrays of the customers who have an option."""
    t, m = vals.shape
    mu = np.zeros(t)
    rounds = _QUOTA_ROUNDS
    if limit is not None and (caps > 0).any() and m > 2 * _SAMPLE:
        # Warm start: the penalties of an evenly spaced sample (budget and quotas scaled to
        # it), so that most rounds cost a fraction of a full solve.
        pick = np.arange(0, m, m // _SAMPLE)
        share = pick.size / m
        scaled = np.maximum(1, np.round(caps * share)).astype(np.int64)
        sample_caps = np.where(caps > 0, scaled, caps)
        _, _, mu = _penalty_rounds(
            vals[:, pick], costs[:, pick], okay[:, pick], sample_caps, limit * share, mu, rounds
        )
        rounds = _FULL_ROUNDS
    choice, lam, mu = _penalty_rounds(vals, costs, okay, caps, limit, mu, rounds)
    _enforce_quotas(choice, vals, costs, okay, caps, lam, limit is not None)
    if limit is not None:
        _trim_to_budget(choice, vals, costs, limit)
    _fill(choice, vals, costs, okay, caps, limit)
    if limit is not None:
        _trim_to_budget(choice, vals, costs, limit)
    return choice


def _penalty_rounds(
    vals: FloatArray,
    costs: FloatArray,
    okay: BoolArray,
    caps: IntArray,
    limit: float | None,
    mu: FloatArray,
    rounds: int,
) -> tuple[IntArray, float, FloatArray]:
    """Steps 1-2: Lagrangian choices, adjusting the tier penalties ``mu`` for a few rounds."""
    mu = mu.copy()
    choice, lam = _lagrangian_choice(vals, costs, okay, mu, limit)
    for _ in range(rounds):
        counts = np.bincount(choice[choice >= 0], minlength=mu.size)
        off = np.flatnonzero((caps > 0) & ((counts > caps) | ((counts < caps) & (mu > 0))))
        if off.size == 0:
            break
        # Every option's Lagrangian score, and each customer's current one (0: no coupon).
        scores = vals - mu[:, None]
        usable = okay & (scores > 0)
        scores -= lam * costs
        held = np.maximum(choice, 0)
        current = np.where(choice >= 0, scores[held, np.arange(choice.size)], 0.0)
        for tier in off:
            mu[tier] = _tier_penalty(
                choice, scores, usable, okay, current, float(mu[tier]), int(tier), int(caps[tier])
            )
        choice, lam = _lagrangian_choice(vals, costs, okay, mu, limit)
    return choice, lam, mu


def _spent(choice: IntArray, costs: FloatArray) -> float:
    """Total cost of the chosen options."""
    who = np.flatnonzero(choice >= 0)
    return float(costs[choice[who], who].sum())


def _worth(choice: IntArray, vals: FloatArray) -> float:
    """Total value of the chosen options."""
    who = np.flatnonzero(choice >= 0)
    return float(vals[choice[who], who].sum())


def _quota_caps(quotas: Sequence[int | None] | npt.ArrayLike | None, t: int) -> IntArray:
    """Quotas as an int array of length ``t``; ``-1`` means unlimited."""
    if quotas is None:
        return np.full(t, -1, dtype=np.int64)
    items = list(np.asarray(quotas, dtype=object).reshape(-1))
    if len(items) != t:
        raise ValueError(f"quotas must have one entry per tier ({t}), got {len(items)}")
    return np.array([-1 if q is None or q < 0 else int(q) for q in items], dtype=np.int64)


def _budget_limit(budget: float | None) -> float | None:
    """The budget as a float, ``None`` when unlimited."""
    if budget is None:
        return None
    limit = float(budget)
    if np.isnan(limit) or limit < 0:
        raise ValueError(f"budget must be >= 0 or None, got {budget}")
    return None if np.isinf(limit) else limit


def _first_argmax(scores: FloatArray) -> IntArray:
    """Per column of a ``(t, n)`` array, the first row holding the maximum; -1 if all -inf."""
    best = np.full(scores.shape[1], -np.inf)
    pick = np.full(scores.shape[1], -1, dtype=np.int64)
    for j in range(scores.shape[0]):
        better = scores[j] > best
        np.copyto(best, scores[j], where=better)
        np.copyto(pick, j, where=better)
    return pick


def _lagrangian_choice(
    vals: FloatArray, costs: FloatArray, okay: BoolArray, mu: FloatArray, limit: float | None
) -> tuple[IntArray, float]:
    """Step 1: the Lagrangian choice with tier penalties ``mu``; returns it and ``lam``."""
    t, n = vals.shape
    # Reduced values; -inf marks an option the Lagrangian choice can never take.
    reduced = vals - mu[:, None]
    reduced[~(okay & (reduced > 0))] = -np.inf
    if limit is None:
        return _first_argmax(reduced), 0.0

    # Start of each hull: the best free option (cost 0), or no coupon.
    choice = np.full(n, -1, dtype=np.int64)
    start = np.zeros(n)
    for j in range(t):
        better = (costs[j] == 0) & (reduced[j] > start)
        np.copyto(start, reduced[j], where=better)
        np.copyto(choice, j, where=better)

    # Gift-wrapping walk along the upper hull, vectorised over the customers still walking.
    walking = (reduced > 0).any(axis=0)
    if walking.all():
        who, rv, cv = np.arange(n), reduced, costs
    else:
        who = np.flatnonzero(walking)
        rv, cv = reduced[:, who], costs[:, who]
    at_v, at_c = start[who], np.zeros(who.size)
    steps: list[tuple[IntArray, IntArray, FloatArray, FloatArray]] = []
    for _ in range(t):
        m = who.size
        if m == 0:
            break
        # Best step so far: slope 0 and nearest cost -inf, so only slopes > 0 are taken.
        slope = np.zeros(m)
        to = np.full(m, -1, dtype=np.int64)
        to_c = np.full(m, -np.inf)
        to_v = np.empty(m)
        dc, e = np.empty(m), np.empty(m)
        better, tie = np.empty(m, dtype=bool), np.empty(m, dtype=bool)
        for j in range(t):
            np.subtract(cv[j], at_c, out=dc)
            np.subtract(rv[j], at_v, out=e)
            with np.errstate(all="ignore"):
                np.divide(e, dc, out=e)  # meaningless where dc <= 0: masked below
            # Steepest first; on equal slope the nearer point, so collinear points stay steps.
            np.greater(e, slope, out=better)
            np.equal(e, slope, out=tie)
            tie &= cv[j] < to_c
            better |= tie
            np.greater(dc, 0.0, out=tie)
            better &= tie
            np.copyto(slope, e, where=better)
            np.copyto(to, j, where=better)
            np.copyto(to_c, cv[j], where=better)
            np.copyto(to_v, rv[j], where=better)
        moved = to >= 0
        if not moved.all():
            who, to, slope = who[moved], to[moved], slope[moved]
            to_c, to_v, at_c = to_c[moved], to_v[moved], at_c[moved]
            rv, cv = rv[:, moved], cv[:, moved]
        steps.append((who, to, to_c - at_c, slope))
        at_v, at_c = to_v, to_c

    if not steps:
        return choice, 0.0
    slopes = np.concatenate([s[3] for s in steps])
    widths = np.concatenate([s[2] for s in steps])
    lam = _breakpoint(slopes, widths, limit)
    if lam is None:
        taken = np.ones(slopes.size, dtype=bool)
        lam = 0.0
    else:
        taken = slopes > lam
        tied = np.flatnonzero(slopes == lam)
        if tied.size:
            cust = np.concatenate([s[0] for s in steps])[tied]
            step = np.concatenate([np.full(s[0].size, k) for k, s in enumerate(steps)])[tied]
            tied = tied[np.lexsort((step, cust))]
            room = limit - float(widths[taken].sum())
            fits = np.cumsum(widths[tied]) <= room
            n_fit = int(np.argmin(fits)) if not fits.all() else fits.size
            taken[tied[:n_fit]] = True
    offset = 0
    for cust_k, to_k, _, _ in steps:
        mask = taken[offset : offset + cust_k.size]
        choice[cust_k[mask]] = to_k[mask]
        offset += cust_k.size
    return choice, float(lam)


def _breakpoint(slopes: FloatArray, widths: FloatArray, limit: float) -> float | None:
    """The largest slope ``s`` with ``widths[slopes >= s].sum() > limit`` (weighted quickselect).

    ``None`` when everything fits. Expected linear time: each round partitions the remaining
    candidates around their median and keeps the half holding the breakpoint.
    """
    if float(widths.sum()) <= limit:
        return None
    above = 0.0  # width of the slopes above the remaining candidates
    e, w = slopes, widths
    while True:
        pivot = float(np.partition(e, e.size // 2)[e.size // 2])
        higher = e > pivot
        with_higher = above + float(w[higher].sum())
        if with_higher > limit:
            e, w = e[higher], w[higher]
            continue
        with_pivot = with_higher + float(w[e == pivot].sum())
        if with_pivot > limit:
            return pivot
        lower = e < pivot
        if not lower.any():  # rounding: sums disagree at the last ulp
            return pivot
        above = with_pivot
        e, w = e[lower], w[lower]


def _option_scores(
    vals: FloatArray, costs: FloatArray, lam: float, tiers: IntArray, who: IntArray
) -> FloatArray:
    """``value - lam * cost`` of option ``tiers[k]`` for customer ``who[k]``."""
    return vals[tiers, who] - lam * costs[tiers, who]


def _tier_penalty(
    choice: IntArray,
    scores: FloatArray,
    usable: BoolArray,
    okay: BoolArray,
    current: FloatArray,
    penalty: float,
    tier: int,
    cap: int,
) -> float:
    """Step 2: the new penalty of ``tier``, so that ``cap`` customers prefer it.

    ``scores`` are the options' ``value - mu - lam * cost``; ``usable`` marks the options the
    Lagrangian choice may take; ``current`` is each customer's score now. An over-full tier's
    penalty rises until only the ``cap`` customers with the largest margin over their next
    best choice keep it; an under-full tier's penalty falls until the missing customers with
    the smallest shortfall would take it, but never below 0.
    """
    mine = choice == tier
    count = int(mine.sum())
    if count > cap:
        who = np.flatnonzero(mine)
        alternative = np.zeros(who.size)  # no coupon
        for j in range(scores.shape[0]):
            if j != tier:
                other = np.where(usable[j, who], scores[j, who], -np.inf)
                np.maximum(alternative, other, out=alternative)
        margin = np.maximum(scores[tier, who] - alternative, 0.0)
        cut = float(-np.partition(-margin, cap)[cap])  # the (cap + 1)-th largest margin
        return penalty + float(np.nextafter(cut, np.inf)) if cut > 0 else penalty
    who = np.flatnonzero(~mine & okay[tier])
    if who.size <= cap - count:
        return 0.0
    shortfall = np.maximum(current[who] - scores[tier, who], 0.0)
    k = cap - count - 1  # the (cap - count)-th smallest shortfall
    cut = float(np.partition(shortfall, k)[k])
    return max(0.0, penalty - float(np.nextafter(cut, np.inf)))


def _enforce_quotas(
    choice: IntArray,
    vals: FloatArray,
    costs: FloatArray,
    okay: BoolArray,
    caps: IntArray,
    lam: float,
    budgeted: bool,
) -> None:
    """Step 3, in place: over-full tiers keep their best customers, the rest move or drop.

    Customers only move into tiers with room, so a tier made full stays full and each tier is
    cut at most once: at most ``t`` passes.
    """
    t = vals.shape[0]
    for _ in range(t + 1):
        counts = np.bincount(choice[choice >= 0], minlength=t)
        over = np.flatnonzero((caps >= 0) & (counts > caps))
        if over.size == 0:
            return
        tier = int(over[0])
        who = np.flatnonzero(choice == tier)
        room = (caps < 0) | (counts < caps)
        room[tier] = False
        usable = okay[:, who] & room[:, None]
        if budgeted:
            usable &= costs[:, who] <= costs[tier, who][None, :]
        scores = np.where(usable, vals[:, who] - lam * costs[:, who], -np.inf)
        alt = _first_argmax(scores)
        alt_score = np.where(alt >= 0, scores.max(axis=0), 0.0)
        margin = _option_scores(vals, costs, lam, np.full(who.size, tier), who) - alt_score
        order = np.argsort(-margin, kind="stable")
        bumped = order[int(caps[tier]) :]
        choice[who[bumped]] = alt[bumped]


def _trim_to_budget(choice: IntArray, vals: FloatArray, costs: FloatArray, limit: float) -> None:
    """Step 4, in place: drop the lowest value-per-cost choices until the budget holds."""
    while True:
        who = np.flatnonzero(choice >= 0)
        spent = costs[choice[who], who]
        excess = float(spent.sum()) - limit
        if excess <= 0:
            return
        paid = spent > 0
        who, spent = who[paid], spent[paid]
        with np.errstate(over="ignore"):  # a tiny cost: ratio inf, dropped last
            ratio = vals[choice[who], who] / spent
        order = np.argsort(ratio, kind="stable")
        k = int(np.searchsorted(np.cumsum(spent[order]), excess, side="left")) + 1
        choice[who[order[:k]]] = -1


def _fill(
    choice: IntArray,
    vals: FloatArray,
    costs: FloatArray,
    okay: BoolArray,
    caps: IntArray,
    limit: float | None,
) -> None:
    """Step 5, in place: spend the leftover budget on the largest value gains that fit.

    Each round takes every customer's best move (largest gain; ties: lowest tier index) that
    fits the leftover budget and has room in its tier, ranks the moves by gain (ties: customer
    index) and applies the longest prefix that fits the budget (skipping moves into tiers
    without room). Only the ``top`` best moves are ranked per round (all moves tied with the
    last included), and ``top`` doubles whenever the budget did not stop a round.
    """
    t, n = vals.shape
    cols = np.arange(n)
    has = choice >= 0
    cur_v = np.where(has, vals[np.maximum(choice, 0), cols], 0.0)
    cur_c = np.where(has, costs[np.maximum(choice, 0), cols], 0.0)
    left = np.inf if limit is None else limit - float(cur_c.sum())
    # Candidates never gain customers: after a move, a customer's remaining upgrades fitted
    # the budget before it too (their extra cost grows by at most what the budget shrank).
    who = np.flatnonzero((okay & (vals > cur_v) & (costs - cur_c <= left)).any(axis=0))
    top = 4096
    for _ in range(_FILL_ROUNDS):
        if who.size == 0:
            return
        counts = np.bincount(choice[choice >= 0], minlength=t)
        room = np.where(caps < 0, n, caps - counts)
        gain = vals[:, who] - cur_v[who]
        extra = costs[:, who] - cur_c[who]
        cand = okay[:, who] & (gain > 0) & (extra <= left) & (room > 0)[:, None]
        to = _first_argmax(np.where(cand, gain, -np.inf))
        live = to >= 0
        who, to = who[live], to[live]
        if who.size == 0:
            return
        g = gain[to, np.flatnonzero(live)]
        if g.size > top:
            cut = -np.partition(-g, top - 1)[top - 1]
            ranked = np.flatnonzero(g >= cut)
        else:
            ranked = np.arange(g.size)
        ranked = ranked[np.argsort(-g[ranked], kind="stable")]
        k, j = ranked, to[ranked]
        x = costs[j, who[k]] - cur_c[who[k]]
        # Room per tier, in this order (a move out of a tier frees room only next round).
        by_tier = np.argsort(j, kind="stable")
        rank = np.empty(j.size, dtype=np.int64)
        rank[by_tier] = np.arange(j.size) - np.searchsorted(j[by_tier], j[by_tier])
        keep = rank < room[j]
        fits = np.cumsum(np.where(keep, x, 0.0)) <= left
        n_fit = fits.size if fits.all() else int(np.argmin(fits))
        if n_fit == ranked.size:  # the budget did not stop this round: rank more next time
            top *= 2
        keep[n_fit:] = False
        moved, j = who[k[keep]], j[keep]
        choice[moved] = j
        left -= float((costs[j, moved] - cur_c[moved]).sum())
        cur_v[moved] = vals[j, moved]
        cur_c[moved] = costs[j, moved]


# --------------------------------------------------------------------------------------------
# Control group
# --------------------------------------------------------------------------------------------


def control_group(
    customer_ids: pd.Series,
    as_of: datetime.date,
    tiers: npt.ArrayLike,
    share: float,
    seed: int,
) -> BoolArray:
    """A reproducible random hold-out, stratified by tier.

    Within each chosen tier (``tiers >= 0``) customers are ordered by a keyed 64-bit hash of
    their id (pandas' SipHash of the id's text, keyed by ``seed`` and ``as_of``), and the first
    ``round(share * n_tier)`` (halves round up) are flagged as control. The draw depends only
    on the ids, ``as_of``, ``seed`` and the tiers: the same inputs give the same flags, the row
    order does not matter, and each ``as_of`` (campaign date) gets a fresh draw. Ids are
    hashed by their text, so ``123`` and ``"123"`` draw alike; they are expected to be unique.

    Args:
        customer_ids: Shape ``(n,)``, the customer ids.
        as_of: The campaign date (a ``datetime`` counts by its date).
        tiers: Shape ``(n,)``, the chosen tier index per customer (``-1``: no coupon, never
            control).
        share: Share of each tier held out, in ``[0, 1)``.
        seed: The experiment's seed.

    Returns:
        Shape ``(n,)`` booleans, in the input's row order: True for control customers.

    Raises:
        ValueError: On lengths that differ or ``share`` outside ``[0, 1)``.
    """
    tier = np.asarray(tiers, dtype=np.int64)
    if tier.ndim != 1 or tier.size != len(customer_ids):
        raise ValueError(
            f"tiers must be 1-D with one entry per customer ({len(customer_ids)}), "
            f"got shape {tier.shape}"
        )
    if not 0.0 <= share < 1.0:
        raise ValueError(f"share must be in [0, 1), got {share}")
    if isinstance(as_of, datetime.datetime):
        as_of = as_of.date()
    # SipHash takes a 16-byte key: 16 hex digits of a digest of (seed, date).
    key = hashlib.blake2b(f"{seed}|{as_of.isoformat()}".encode(), digest_size=8).hexdigest()
    text = pd.Series(customer_ids, copy=False).astype(str).to_numpy(dtype=object)
    draw = pd.util.hash_array(text, hash_key=key, categorize=False)
    flags = np.zeros(tier.size, dtype=bool)
    chosen = np.flatnonzero(tier >= 0)
    if chosen.size == 0 or share == 0:
        return flags
    order = chosen[np.lexsort((draw[chosen], tier[chosen]))]
    sorted_tier = tier[order]
    group_start = np.searchsorted(sorted_tier, sorted_tier, side="left")
    group_size = np.searchsorted(sorted_tier, sorted_tier, side="right") - group_start
    rank = np.arange(order.size) - group_start
    n_control = np.floor(share * group_size + 0.5)
    flags[order[rank < n_control]] = True
    return flags
