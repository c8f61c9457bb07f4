"""Classic "buy till you die" baselines: BG/NBD for purchase counts, Gamma-Gamma for spend.

Written from the papers' formulas; the unmaintained ``lifetimes`` package is neither used nor
copied.

* BG/NBD: Fader, Hardie & Lee (2005), "Counting your customers the easy way: an alternative to
  the Pareto/NBD model", Marketing Science 24(2). While alive, a customer buys at Poisson rate
  ``lambda ~ Gamma(r, alpha)`` (shape ``r``, rate ``alpha``); immediately after each *repeat*
  purchase they drop out for good with probability ``p ~ Beta(a, b)``.
* Gamma-Gamma: Fader, Hardie & Lee (2005), "RFM and CLV: using iso-value curves for customer base
  analysis", JMR 42(4). Each transaction value is ``Gamma(p, nu)`` (shape ``p``, rate ``nu``)
  and ``nu ~ Gamma(q, v)`` across customers (shape ``q``, rate ``v``), independent of BG/NBD.

Per customer the summary inputs are ``frequency`` x (number of repeat purchases), ``recency`` t_x
(time of the last repeat purchase since the first purchase; 0 when x = 0) and ``T`` (age: time
from the first purchase to the end of the observation window), all in one time unit (e.g. weeks).
``bgnbd_summary`` builds them from an order table.

Everything is deterministic: the fits use fixed starting points and no randomness; the
simulators take an explicit seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy import optimize, special

__all__ = [
    "BGNBDParams",
    "GammaGammaParams",
    "bgnbd_log_likelihood",
    "bgnbd_summary",
    "expected_average_spend",
    "expected_purchases",
    "fit_bgnbd",
    "fit_gamma_gamma",
    "gamma_gamma_log_likelihood",
    "p_alive",
    "p_purchase_within",
    "simulate_bgnbd",
    "simulate_gamma_gamma",
]

ArrayLike = npt.ArrayLike
FloatArray = npt.NDArray[np.float64]

# Log-parameters are kept inside this box during optimisation (params in ~[2e-9, 5e8]).
_LOG_BOUND = 20.0
# |a - 1| below this is treated as the removable singularity of eq. (10) at a = 1.
_A_ONE_EPS = 1e-7


@dataclass(frozen=True)
class BGNBDParams:
    """BG/NBD population parameters.

    Attributes:
        r: Shape of the Gamma distribution of the purchase rate lambda.
        alpha: Rate of that Gamma distribution (in the summary's time unit, so
            ``E[lambda] = r / alpha`` purchases per unit).
        a: First shape of the Beta distribution of the dropout probability p.
        b: Second shape of that Beta distribution (``E[p] = a / (a + b)``).
    """

    r: float
    alpha: float
    a: float
    b: float


@dataclass(frozen=True)
class GammaGammaParams:
    """Gamma-Gamma spend parameters.

    Attributes:
        p: Shape of the Gamma distribution of a single transaction value.
        q: Shape of the Gamma distribution of the per-customer rate nu.
        v: Rate of that Gamma distribution. The population mean transaction value is
            ``p * v / (q - 1)`` (finite for ``q > 1``).
    """

    p: float
    q: float
    v: float


# --- input handling -------------------------------------------------------------------------------


def _as_float(values: ArrayLike, name: str) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    return arr


def _summary_arrays(
    frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Validate and broadcast the (x, t_x, T) summary."""
    x, t_x, age = np.broadcast_arrays(
        _as_float(frequency, "frequency"), _as_float(recency, "recency"), _as_float(T, "T")
    )
    if np.any(x < 0) or np.any(x != np.round(x)):
        raise ValueError("frequency must be a non-negative integer count")
    if np.any(t_x < 0) or np.any(t_x > age):
        raise ValueError("recency must satisfy 0 <= recency <= T")
    if np.any((x == 0) & (t_x != 0)):
        raise ValueError("recency must be 0 when frequency is 0")
    if np.any(age <= 0):
        raise ValueError("T must be positive")
    return x.astype(np.float64), t_x.astype(np.float64), age.astype(np.float64)


def _horizon(t: ArrayLike) -> FloatArray:
    horizon = _as_float(t, "t")
    if np.any(horizon < 0):
        raise ValueError("t must be non-negative")
    return horizon


def _weights(weights: ArrayLike | None, shape: tuple[int, ...]) -> FloatArray:
    if weights is None:
        return np.ones(shape, dtype=np.float64)
    w = np.broadcast_to(_as_float(weights, "weights"), shape).astype(np.float64)
    if np.any(w < 0) or not np.any(w > 0):
        raise ValueError("weights must be non-negative and not all zero")
    return w


def _minimize_logspace(
    objective: Callable[[FloatArray], tuple[float, FloatArray]],
    starts: list[FloatArray],
) -> FloatArray:
    """Minimise a smooth objective over log-parameters from several fixed starts; best wins."""
    bounds = [(-_LOG_BOUND, _LOG_BOUND)] * len(starts[0])
    best: optimize.OptimizeResult | None = None
    for start in starts:
        result = optimize.minimize(
            objective,
            start,
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-9},
        )
        if np.isfinite(result.fun) and (best is None or result.fun < best.fun):
            best = result
    if best is None:
        raise RuntimeError("maximum-likelihood fit failed from every starting point")
    return np.asarray(best.x, dtype=np.float64)


# --- BG/NBD ---------------------------------------------------------------------------------------


def _bgnbd_terms(
    log_params: FloatArray, x: FloatArray, t_x: FloatArray, age: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Per-customer log-likelihood and its gradient with respect to the log-parameters.

    The BG/NBD likelihood (eq. 6 of Fader, Hardie & Lee 2005) is

        L = B(a, b+x)/B(a, b) * Gamma(r+x) alpha^r / (Gamma(r) (alpha+T)^(r+x))
            + [x > 0] B(a+1, b+x-1)/B(a, b) * Gamma(r+x) alpha^r / (Gamma(r) (alpha+t_x)^(r+x)),

    the first term being "still alive at T", the second "dropped out right after the x-th repeat
    purchase". It is evaluated in log space with a two-term logsumexp.
    """
    r, alpha, a, b = np.exp(log_params)
    # Special functions of x only take a few distinct values: evaluate them once per value.
    x_unique, x_index = np.unique(x, return_inverse=True)
    x_index = x_index.reshape(x.shape)
    ux1 = np.maximum(x_unique, 1.0)  # keeps B(a+1, b+x-1) defined where the term is dropped

    def per_x(values: FloatArray) -> FloatArray:
        return np.asarray(values, dtype=np.float64)[x_index]

    has_repeat = x > 0
    rx = r + x
    log_alpha_T = np.log(alpha + age)
    log_alpha_tx = np.log(alpha + t_x)

    log_b_ab = special.betaln(a, b)
    common = per_x(special.gammaln(r + x_unique)) - special.gammaln(r) + r * np.log(alpha)
    common = common - log_b_ab
    term_alive = per_x(special.betaln(a, b + x_unique)) - rx * log_alpha_T
    term_dead = np.where(
        has_repeat, per_x(special.betaln(a + 1.0, b + ux1 - 1.0)) - rx * log_alpha_tx, -np.inf
    )
    log_mix = np.logaddexp(term_alive, term_dead)
    ll = common + log_mix
    w_alive = np.exp(term_alive - log_mix)
    w_dead = 1.0 - w_alive

    dig_ab = special.digamma(a + b)
    dig_abx = special.digamma(a + b + x_unique)
    d_r = per_x(special.digamma(r + x_unique)) - special.digamma(r) + np.log(alpha)
    d_r = d_r - w_alive * log_alpha_T - w_dead * log_alpha_tx
    d_alpha = r / alpha - w_alive * rx / (alpha + age) - w_dead * rx / (alpha + t_x)
    # d/da and d/db of log B(., .) - log B(a, b) for each term.
    d_a_alive = per_x(dig_ab - dig_abx)
    d_b_alive = per_x(special.digamma(b + x_unique) - dig_abx - special.digamma(b) + dig_ab)
    d_a_dead = per_x(special.digamma(a + 1.0) - special.digamma(a) + dig_ab - dig_abx)
    d_b_dead = per_x(special.digamma(b + ux1 - 1.0) - special.digamma(b) + dig_ab - dig_abx)
    d_a = w_alive * d_a_alive + w_dead * np.where(has_repeat, d_a_dead, 0.0)
    d_b = w_alive * d_b_alive + w_dead * np.where(has_repeat, d_b_dead, 0.0)
    grad = np.stack([r * d_r, alpha * d_alpha, a * d_a, b * d_b])
    return ll, grad


def bgnbd_log_likelihood(
    params: BGNBDParams,
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
) -> FloatArray:
    """Per-customer BG/NBD log-likelihood (eq. 6 of Fader, Hardie & Lee 2005).

    Args:
        params: Population parameters.
        frequency: Number of repeat purchases x.
        recency: Time of the last repeat purchase since the first purchase (0 when x = 0).
        T: Time from the first purchase to the end of the observation window.

    Returns:
        ``log L(r, alpha, a, b | x, t_x, T)`` for each customer.
    """
    x, t_x, age = _summary_arrays(frequency, recency, T)
    log_params = np.log([params.r, params.alpha, params.a, params.b])
    return _bgnbd_terms(log_params, x, t_x, age)[0]


def fit_bgnbd(
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    penalty: float = 0.0,
) -> BGNBDParams:
    """Fit BG/NBD by maximum likelihood.

    The optimiser (L-BFGS-B with the analytic gradient) works on the log-parameters, so all four
    stay positive; it is run from a few fixed starting points and the best optimum is kept, which
    makes the fit deterministic. The objective is the weighted mean negative log-likelihood plus
    ``penalty * sum(log_params ** 2)``: a ridge on the log-parameters that shrinks towards 1.
    It is off by default; a tiny value (e.g. 1e-4) only guards against runaway estimates on
    degenerate samples (e.g. nobody ever repeats) and should otherwise be left at 0.

    Args:
        frequency: Number of repeat purchases x per customer (non-negative integers).
        recency: Time of the last repeat purchase since the first purchase (0 when x = 0).
        T: Time from the first purchase to the end of the observation window (> 0, >= recency).
        weights: Optional non-negative per-row weights (e.g. counts of identical summaries).
        penalty: Non-negative L2 penalty on the log-parameters (default 0: plain MLE).

    Returns:
        The fitted parameters.

    Raises:
        ValueError: On invalid inputs (negative or non-integer counts, recency outside [0, T]).
        RuntimeError: If the optimiser fails from every starting point.
    """
    x, t_x, age = _summary_arrays(frequency, recency, T)
    x, t_x, age = x.ravel(), t_x.ravel(), age.ravel()
    if x.size == 0:
        raise ValueError("need at least one customer")
    if penalty < 0:
        raise ValueError("penalty must be non-negative")
    w = _weights(weights, x.shape)
    # Identical summaries (e.g. everyone with x = 0 in a single cohort) are evaluated once.
    rows, inverse = np.unique(np.column_stack([x, t_x, age]), axis=0, return_inverse=True)
    w_rows = np.bincount(inverse.ravel(), weights=w, minlength=len(rows)).astype(np.float64)
    w = w_rows / w_rows.sum()
    x, t_x, age = rows[:, 0], rows[:, 1], rows[:, 2]

    def objective(log_params: FloatArray) -> tuple[float, FloatArray]:
        ll, grad = _bgnbd_terms(log_params, x, t_x, age)
        value = -float(w @ ll) + penalty * float(log_params @ log_params)
        return value, -(grad @ w) + 2.0 * penalty * log_params

    # Start r/alpha from the observed purchase rate; alpha in the data's time unit.
    scale = float(w @ age)
    rate = max(float(w @ x) / scale, 1e-3 / scale)
    starts = [
        np.log([1.0, 1.0 / rate, 1.0, 1.0]),
        np.log([0.5, 0.5 / rate, 0.5, 2.0]),
        np.log([2.0, 2.0 / rate, 2.0, 5.0]),
    ]
    r, alpha, a, b = np.exp(_minimize_logspace(objective, starts))
    return BGNBDParams(r=float(r), alpha=float(alpha), a=float(a), b=float(b))


def p_alive(
    params: BGNBDParams, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
) -> FloatArray:
    """Probability that a customer is still alive at T (eq. 11 of the BG/NBD paper).

    ``P(alive | x, t_x, T) = 1 / (1 + [x > 0] a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x))``; it is
    exactly 1 for x = 0 because dropout can only happen right after a repeat purchase.

    Args:
        params: BG/NBD parameters.
        frequency: Number of repeat purchases x.
        recency: Time of the last repeat purchase since the first purchase (0 when x = 0).
        T: Time from the first purchase to the end of the observation window.

    Returns:
        P(alive) per customer, in [0, 1].
    """
    x, t_x, age = _summary_arrays(frequency, recency, T)
    return np.asarray(_p_alive(params, x, t_x, age), dtype=np.float64)


def _p_alive(params: BGNBDParams, x: FloatArray, t_x: FloatArray, age: FloatArray) -> FloatArray:
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    has_repeat = x > 0
    x1 = np.where(has_repeat, x, 1.0)
    log_odds_dead = (
        np.log(a) - np.log(b + x1 - 1.0) + (r + x) * (np.log(alpha + age) - np.log(alpha + t_x))
    )
    # 1 / (1 + exp(log_odds_dead)) without overflow; x = 0 -> exactly 1.
    return np.where(has_repeat, special.expit(-log_odds_dead), 1.0)


def _hyp2f1_series(
    a: FloatArray, b: FloatArray, c: FloatArray, z: FloatArray, *, max_terms: int = 200_000
) -> FloatArray:
    """Gauss 2F1(a, b; c; z) by direct summation of its power series, for 0 <= z < 1.

    Used only where ``scipy.special.hyp2f1`` fails. The term ratio is
    ``(a+n)(b+n) / ((c+n)(n+1)) z``; summation stops once the terms are negligible.
    """
    a, b, c, z = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (a, b, c, z)))
    total = np.ones(a.shape)
    term = np.ones(a.shape)
    active = np.ones(a.shape, dtype=bool)
    for n in range(max_terms):
        term = np.where(active, term * (a + n) * (b + n) / ((c + n) * (n + 1.0)) * z, 0.0)
        total = total + term
        active = active & (np.abs(term) > 1e-17 * np.abs(total)) & (term != 0)
        if not active.any():
            break
    return np.asarray(total, dtype=np.float64)


def _hyp2f1(a: FloatArray, b: FloatArray, c: FloatArray, z: FloatArray) -> FloatArray:
    """``scipy.special.hyp2f1`` with a series fallback where it returns a non-finite value."""
    a, b, c, z = np.broadcast_arrays(a, b, c, z)
    value = np.asarray(special.hyp2f1(a, b, c, z), dtype=np.float64)
    bad = ~np.isfinite(value)
    if bad.any():
        value = value.copy()
        value[bad] = _hyp2f1_series(a[bad], b[bad], c[bad], z[bad])
    return value


def expected_purchases(
    params: BGNBDParams,
    t: ArrayLike,
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
) -> FloatArray:
    """Conditional expected number of purchases in (T, T + t] (eq. 10 of the BG/NBD paper).

    The paper's expression is

        E[Y(t) | x, t_x, T] = (a+b+x-1)/(a-1)
            * [1 - ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; z)] / D,
        z = t / (alpha+T+t),  D = 1 + [x > 0] a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x),

    with ``1/D = P(alive)``. For large x the 2F1 there grows like (1-z)^(a-1-r-x) and is
    cancelled by the power in front, which overflows / loses all precision. Euler's
    transformation ``2F1(A, B; C; z) = (1-z)^(C-A-B) 2F1(C-A, C-B; C; z)`` turns the product into

        ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; z)
            = (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z),

    whose series has small numerator parameters and a large denominator parameter, so it is
    evaluated stably; ``1 - (.)`` is computed as ``-expm1(log(.))``. Where scipy's hyp2f1 still
    fails a direct power series is summed instead. At a = 1 the expression has a removable
    singularity; for ``|a - 1| < 1e-7`` it is evaluated at ``a = 1 +/- 1e-7``.

    Equivalently (and this is what the tests check numerically), given alive at T the posterior is
    lambda ~ Gamma(r+x, alpha+T) independent of p ~ Beta(a, b+x), an alive customer buys
    ``(1 - exp(-lambda p t)) / p`` in expectation, and the result is P(alive) times its mean.

    Args:
        params: BG/NBD parameters.
        t: Length of the prediction window (same unit as T), >= 0; broadcast against customers.
        frequency: Number of repeat purchases x.
        recency: Time of the last repeat purchase since the first purchase (0 when x = 0).
        T: Time from the first purchase to the end of the observation window.

    Returns:
        Expected number of purchases in the next t periods, per customer.
    """
    x, t_x, age = _summary_arrays(frequency, recency, T)
    horizon = _horizon(t)
    horizon, x, t_x, age = np.broadcast_arrays(horizon, x, t_x, age)
    r, alpha, b = params.r, params.alpha, params.b
    a = params.a
    if abs(a - 1.0) < _A_ONE_EPS:
        a = 1.0 + _A_ONE_EPS if a >= 1.0 else 1.0 - _A_ONE_EPS

    z = horizon / (alpha + age + horizon)
    c = a + b + x - 1.0
    f = _hyp2f1(np.full(z.shape, a + b - 1.0 - r), np.full(z.shape, a - 1.0), c, z)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_product = (a - 1.0) * np.log1p(-z) + np.log(f)
    bracket = -np.expm1(log_product)
    value = c / (a - 1.0) * bracket * _p_alive(params, x, t_x, age)
    return np.asarray(np.where(horizon == 0, 0.0, value), dtype=np.float64)


def p_purchase_within(
    params: BGNBDParams,
    t: ArrayLike,
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
) -> FloatArray:
    """Probability of at least one purchase in (T, T + t].

    Derivation. Given (lambda, p), the BG/NBD likelihood of the history splits into "alive at T",
    ``(1-p)^x lambda^x e^(-lambda T)``, and "dropped out after the x-th repeat purchase",
    ``p (1-p)^(x-1) lambda^x e^(-lambda t_x)``. A dead customer buys nothing more. An alive
    customer can only drop out right after a purchase, so they make zero purchases in (T, T+t]
    exactly when their Poisson process has no event there, with probability e^(-lambda t). The
    joint "alive at T and no purchase in (T, T+t]" therefore has likelihood
    ``(1-p)^x lambda^x e^(-lambda (T+t))``; integrating over the Gamma(r, alpha) and Beta(a, b)
    priors and dividing by the marginal likelihood L(x, t_x, T) gives

        P(Y(t) = 0 | x, t_x, T) = 1 - P(alive) + P(alive) ((alpha+T)/(alpha+T+t))^(r+x),

    the y = 0 case of Fader & Hardie's conditional PMF of BG/NBD (the posterior of lambda given
    alive is Gamma(r+x, alpha+T), whose Laplace transform at t is the power term). Hence

        P(Y(t) >= 1 | x, t_x, T) = P(alive | x, t_x, T) * (1 - ((alpha+T)/(alpha+T+t))^(r+x)).

    The churn baseline for a horizon H is ``1 - p_purchase_within(params, H, ...)``.

    Args:
        params: BG/NBD parameters.
        t: Length of the window (same unit as T), >= 0; broadcast against customers.
        frequency: Number of repeat purchases x.
        recency: Time of the last repeat purchase since the first purchase (0 when x = 0).
        T: Time from the first purchase to the end of the observation window.

    Returns:
        P(at least one purchase in the next t periods), per customer; never above P(alive).
    """
    x, t_x, age = _summary_arrays(frequency, recency, T)
    horizon = _horizon(t)
    horizon, x, t_x, age = np.broadcast_arrays(horizon, x, t_x, age)
    alpha = params.alpha
    # 1 - ((alpha+T)/(alpha+T+t))^(r+x) = -expm1((r+x) log1p(-t/(alpha+T+t)))
    p_any_if_alive = -np.expm1((params.r + x) * np.log1p(-horizon / (alpha + age + horizon)))
    return np.asarray(_p_alive(params, x, t_x, age) * p_any_if_alive, dtype=np.float64)


def simulate_bgnbd(
    params: BGNBDParams,
    n_customers: int,
    T: ArrayLike,
    *,
    seed: int | np.random.Generator,
) -> pd.DataFrame:
    """Simulate (x, t_x, T) summaries from the BG/NBD generative process.

    Each customer makes a first purchase at time 0, draws ``lambda ~ Gamma(r, rate alpha)`` and
    ``p ~ Beta(a, b)``, then buys at Poisson rate lambda; right after each repeat purchase they
    drop out with probability p. The number of repeat purchases until dropout J is therefore
    Geometric(p) on {1, 2, ...}, so with N ~ Poisson(lambda T) Poisson events in (0, T] the
    observed frequency is ``x = min(N, J)``, the customer is alive at T iff ``N < J``, and the
    time of the x-th event is T times the x-th order statistic of N uniforms, i.e.
    ``t_x = T * Beta(x, N - x + 1)``. This is exact, not a discretisation.

    Args:
        params: BG/NBD parameters.
        n_customers: Number of customers.
        T: Observation length per customer: a scalar or an array of length n_customers.
        seed: Seed or generator for ``numpy.random.default_rng``.

    Returns:
        A frame with one row per customer and columns ``frequency`` (int), ``recency``, ``T``,
        the latent ``lambda_`` and ``p``, and ``alive`` (bool, alive at T).
    """
    rng = np.random.default_rng(seed)
    age = np.broadcast_to(_as_float(T, "T"), (n_customers,)).astype(np.float64)
    if np.any(age <= 0):
        raise ValueError("T must be positive")
    lam = rng.gamma(params.r, 1.0 / params.alpha, n_customers)
    p = rng.beta(params.a, params.b, n_customers)
    n_events = rng.poisson(lam * age)
    n_until_dropout = rng.geometric(np.clip(p, 1e-300, 1.0))
    x = np.minimum(n_events, n_until_dropout)
    has_repeat = x > 0
    position = rng.beta(np.maximum(x, 1), np.maximum(n_events - x + 1, 1))
    recency = np.where(has_repeat, age * position, 0.0)
    return pd.DataFrame(
        {
            "frequency": x.astype(np.int64),
            "recency": recency,
            "T": age,
            "lambda_": lam,
            "p": p,
            "alive": n_events < n_until_dropout,
        }
    )


# --- Gamma-Gamma ----------------------------------------------------------------------------------


def _gamma_gamma_inputs(
    frequency: ArrayLike, monetary_value: ArrayLike
) -> tuple[FloatArray, FloatArray]:
    x, m = np.broadcast_arrays(
        _as_float(frequency, "frequency"), _as_float(monetary_value, "monetary_value")
    )
    if np.any(x < 0) or np.any(x != np.round(x)):
        raise ValueError("frequency must be a non-negative integer count")
    return x.astype(np.float64), m.astype(np.float64)


def _gamma_gamma_terms(
    log_params: FloatArray, x: FloatArray, m: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Per-customer log density of the mean spend m over x transactions, and its gradient.

    Given nu, x * m ~ Gamma(p x, nu); integrating nu ~ Gamma(q, v) gives

        f(m | p, q, v, x) = Gamma(px+q) / (Gamma(px) Gamma(q)) v^q m^(px-1) x^(px) / (v+xm)^(px+q).
    """
    p, q, v = np.exp(log_params)
    px = p * x
    log_vxm = np.log(v + x * m)
    ll = (
        special.gammaln(px + q)
        - special.gammaln(px)
        - special.gammaln(q)
        + q * np.log(v)
        + (px - 1.0) * np.log(m)
        + px * np.log(x)
        - (px + q) * log_vxm
    )
    dig = special.digamma(px + q)
    d_p = x * (dig - special.digamma(px) + np.log(m) + np.log(x) - log_vxm)
    d_q = dig - special.digamma(q) + np.log(v) - log_vxm
    d_v = q / v - (px + q) / (v + x * m)
    return ll, np.stack([p * d_p, q * d_q, v * d_v])


def gamma_gamma_log_likelihood(
    params: GammaGammaParams, frequency: ArrayLike, monetary_value: ArrayLike
) -> FloatArray:
    """Per-customer Gamma-Gamma log density of the observed mean spend.

    Args:
        params: Gamma-Gamma parameters.
        frequency: Number of repeat transactions x (> 0).
        monetary_value: Mean value of those transactions (> 0).

    Returns:
        ``log f(m | p, q, v, x)`` per customer.
    """
    x, m = _gamma_gamma_inputs(frequency, monetary_value)
    if np.any(x <= 0) or np.any(m <= 0):
        raise ValueError("the Gamma-Gamma density needs frequency > 0 and monetary_value > 0")
    return _gamma_gamma_terms(np.log([params.p, params.q, params.v]), x, m)[0]


def fit_gamma_gamma(frequency: ArrayLike, monetary_value: ArrayLike) -> GammaGammaParams:
    """Fit the Gamma-Gamma spend model by maximum likelihood.

    Only customers with ``frequency > 0`` and ``monetary_value > 0`` enter the likelihood (the
    mean spend per repeat transaction is undefined or outside the model otherwise); the rest are
    ignored. The optimiser is L-BFGS-B with the analytic gradient on the log-parameters, from
    fixed starting points, so the fit is deterministic.

    Args:
        frequency: Number of repeat transactions per customer.
        monetary_value: Mean value of those repeat transactions.

    Returns:
        The fitted parameters.

    Raises:
        ValueError: If no customer has positive frequency and spend.
        RuntimeError: If the optimiser fails from every starting point.
    """
    x, m = _gamma_gamma_inputs(frequency, monetary_value)
    keep = (x > 0) & (m > 0)
    x, m = x[keep].ravel(), m[keep].ravel()
    if x.size == 0:
        raise ValueError("need at least one customer with frequency > 0 and monetary_value > 0")
    weight = 1.0 / x.size

    def objective(log_params: FloatArray) -> tuple[float, FloatArray]:
        ll, grad = _gamma_gamma_terms(log_params, x, m)
        return -float(ll.sum()) * weight, -grad.sum(axis=1) * weight

    # Method-of-moments-flavoured starts: p around 1-5, q > 1, v set so p v / (q - 1) ~ mean(m).
    mean_m = float(np.mean(m))
    starts = [
        np.log([1.0, 2.0, mean_m]),
        np.log([4.0, 3.0, 2.0 * mean_m / 4.0]),
        np.log([10.0, 5.0, 4.0 * mean_m / 10.0]),
    ]
    p, q, v = np.exp(_minimize_logspace(objective, starts))
    return GammaGammaParams(p=float(p), q=float(q), v=float(v))


def expected_average_spend(
    params: GammaGammaParams, frequency: ArrayLike, monetary_value: ArrayLike
) -> FloatArray:
    """Conditional expected spend per transaction, E[M | p, q, v, x, m].

    ``E = p (v + x m) / (p x + q - 1)``, a weighted average of the population mean
    ``p v / (q - 1)`` (weight ``(q-1)/(px+q-1)``) and the customer's own mean m (weight
    ``px/(px+q-1)``). With x = 0 it is the population mean whatever monetary_value holds.

    Args:
        params: Gamma-Gamma parameters (q > 1 for a finite population mean).
        frequency: Number of repeat transactions x.
        monetary_value: Mean value of those transactions (ignored where x = 0).

    Returns:
        Expected average transaction value per customer.

    Raises:
        ValueError: If ``q <= 1`` (the population mean is infinite).
    """
    if params.q <= 1.0:
        raise ValueError("expected spend is infinite for q <= 1")
    x, m = _gamma_gamma_inputs(frequency, monetary_value)
    m = np.where(x > 0, m, 0.0)
    p, q, v = params.p, params.q, params.v
    return np.asarray(p * (v + x * m) / (p * x + q - 1.0), dtype=np.float64)


def simulate_gamma_gamma(
    params: GammaGammaParams,
    frequency: ArrayLike,
    *,
    seed: int | np.random.Generator,
) -> pd.DataFrame:
    """Simulate mean transaction values from the Gamma-Gamma model.

    Each customer draws ``nu ~ Gamma(q, rate v)``; each of their x transactions is
    ``Gamma(p, rate nu)``, so the mean of x of them is ``Gamma(p x, rate x nu)``.

    Args:
        params: Gamma-Gamma parameters.
        frequency: Number of transactions per customer (the mean is over these).
        seed: Seed or generator for ``numpy.random.default_rng``.

    Returns:
        A frame with columns ``frequency``, ``monetary_value`` (0.0 where frequency is 0) and
        the latent ``nu``.
    """
    rng = np.random.default_rng(seed)
    x, _ = _gamma_gamma_inputs(frequency, 0.0)
    x = np.atleast_1d(x)
    nu = rng.gamma(params.q, 1.0 / params.v, x.shape)
    has = x > 0
    total = rng.gamma(np.where(has, params.p * x, 1.0), 1.0 / nu)
    monetary = np.where(has, total / np.maximum(x, 1.0), 0.0)
    return pd.DataFrame({"frequency": x.astype(np.int64), "monetary_value": monetary, "nu": nu})


# --- summary from an order table ------------------------------------------------------------------


def bgnbd_summary(
    orders: pd.DataFrame, cutoff: pd.Timestamp, *, unit_days: float = 7.0
) -> pd.DataFrame:
    """BG/NBD / Gamma-Gamma inputs per customer from an order-level table.

    Convention (the usual one for daily data): a *purchase* is a distinct calendar day with at
    least one order, so several orders on one day are one purchase whose value is their sum.
    Only orders strictly before ``cutoff`` count. Calendar days are taken in the timestamps' own
    time zone (wall-clock dates). Per customer, with d0 the day of the first order:

    * ``frequency``: number of distinct order days after d0 (repeat purchases);
    * ``recency``: (last order day - d0) in days / unit_days; 0 when frequency is 0;
    * ``T``: (cutoff - d0 at 00:00) / unit_days, measured on the wall clock, so T >= recency
      (and T > 0 because the cutoff is after the first order);
    * ``monetary_value``: mean over the repeat days of the day's summed order value; the first
      day is excluded (as in the Gamma-Gamma model); 0.0 when frequency is 0.

    Args:
        orders: Frame with columns ``customer_id``, ``ordered_at`` (timestamps, all tz-aware or
            all naive) and ``value`` (net order value).
        cutoff: End of the observation window (exclusive); tz-aware exactly when ``ordered_at``
            is.
        unit_days: Length of the time unit in days (7 gives weeks).

    Returns:
        Frame indexed by ``customer_id`` with float columns ``frequency``, ``recency``, ``T``
        and ``monetary_value``, sorted by customer id; customers without an order before the
        cutoff are absent.

    Raises:
        ValueError: On missing columns or values, or when ``cutoff`` and ``ordered_at`` do not
            agree on being tz-aware.
    """
    required = ["customer_id", "ordered_at", "value"]
    missing = [c for c in required if c not in orders.columns]
    if missing:
        raise ValueError(f"orders is missing columns {missing}")
    if unit_days <= 0:
        raise ValueError("unit_days must be positive")
    if any(orders[column].isna().any() for column in required):
        raise ValueError("orders has missing customer_id, ordered_at or value")

    ordered_at = pd.to_datetime(orders["ordered_at"])
    cutoff = pd.Timestamp(cutoff)
    tz = getattr(ordered_at.dt, "tz", None)
    if (tz is None) != (cutoff.tzinfo is None):
        raise ValueError("cutoff and ordered_at must both be tz-aware or both be naive")

    before = (ordered_at < cutoff).to_numpy()
    if tz is not None:
        # Wall-clock times in the orders' time zone: calendar days and day arithmetic.
        ordered_at = ordered_at.dt.tz_convert(tz).dt.tz_localize(None)
        cutoff = cutoff.tz_convert(tz).tz_localize(None)
    columns = ["frequency", "recency", "T", "monetary_value"]
    if not before.any():
        given = orders["customer_id"].dtype
        kind = given.categories.dtype if isinstance(given, pd.CategoricalDtype) else given
        index = pd.Index([], name="customer_id", dtype=kind)
        return pd.DataFrame({c: pd.Series([], dtype=np.float64) for c in columns}, index=index)
    # Customers as integer codes in id order, days as integers: sorted runs, no hash tables.
    day = ordered_at.to_numpy()[before].astype("datetime64[D]").astype(np.int64)
    value = orders["value"].to_numpy(dtype=np.float64)[before]
    customers = orders["customer_id"] if before.all() else orders["customer_id"][before]
    codes, ids = _sorted_codes(customers, day)
    if codes is None:  # not sorted by customer then time: sort
        if isinstance(customers.dtype, pd.CategoricalDtype):  # ids as ids, not categories
            customers = customers.astype(customers.cat.categories.dtype)
        codes, ids = pd.factorize(customers, sort=True)
        order = np.lexsort((day, codes))
        codes, day, value = codes[order], day[order], value[order]
    # One purchase per (customer, day): its value is the day's summed order value.
    starts = np.flatnonzero(np.r_[True, (np.diff(codes) != 0) | (np.diff(day) != 0)])
    day_code, day_of, day_value = codes[starts], day[starts], np.add.reduceat(value, starts)
    first = np.flatnonzero(np.r_[True, np.diff(day_code) != 0])  # each customer's first day
    last = np.r_[first[1:], len(day_code)] - 1
    frequency = (last - first).astype(np.float64)
    repeat_value = day_value.copy()
    repeat_value[first] = 0.0  # the first day is not a repeat purchase
    repeat_spend = np.add.reduceat(repeat_value, first)
    with np.errstate(invalid="ignore", divide="ignore"):
        monetary = np.where(frequency > 0, repeat_spend / frequency, 0.0)
    first_day = day_of[first]
    first_ns = first_day * 86_400 * 10**9  # the first day's midnight (wall clock), ns
    age_s = (cutoff.value - first_ns) / 1e9
    out = pd.DataFrame(
        {
            "frequency": frequency,
            "recency": (day_of[last] - first_day).astype(np.float64) / unit_days,
            "T": age_s / (unit_days * 86_400.0),
            "monetary_value": monetary,
        },
        index=day_code[first],
    )
    out.index = pd.Index(ids.take(out.index.to_numpy()), name="customer_id")
    return out.astype(np.float64)


def _sorted_codes(ids: pd.Series, day: np.ndarray) -> tuple[np.ndarray | None, pd.Index]:
    """Run codes of ``ids`` when the rows are sorted by id then day (``order_table`` sorts so).

    Comparing neighbours is much cheaper than hashing and sorting millions of ids; when the
    rows are not in that order the codes are ``None``. Categorical ids (``customer_tables``'
    orders) are compared by their codes when the categories are in order.
    """
    if isinstance(ids.dtype, pd.CategoricalDtype) and ids.cat.categories.is_monotonic_increasing:
        codes = ids.cat.codes.to_numpy()
        if len(codes) == 0 or codes.min() < 0:  # a null id: the general path says what to do
            return None, pd.Index([])
        new = np.r_[True, codes[1:] != codes[:-1]]
        if (np.diff(codes) < 0).any() or (np.diff(day)[~new[1:]] < 0).any():
            return None, pd.Index([])
        return np.cumsum(new) - 1, ids.cat.categories[codes[new]]
    try:
        values = pa.array(ids.array)
        previous, current = values[:-1], values[1:]
        unsorted = pc.any(pc.less(current, previous)).as_py()
    except (pa.ArrowException, TypeError):  # ids Arrow cannot compare (mixed types)
        return None, pd.Index([])
    if unsorted:
        return None, pd.Index([])
    new = np.r_[True, np.asarray(pc.not_equal(current, previous), dtype=bool)]
    if (np.diff(day)[~new[1:]] < 0).any():  # one customer's days out of order
        return None, pd.Index([])
    return np.cumsum(new) - 1, pd.Index(ids.array[new])


@dataclass(frozen=True)
class Baseline:
    """BG/NBD fitted at a cutoff, with Gamma-Gamma for spend: the classic CLV baseline.

    Fitted on every customer's purchase history before the cutoff (it needs no labels), then
    asked the same questions as the models: churn over the horizon is the probability of no
    purchase in it, 1 - ``p_purchase_within``; the 30-day purchase probability is
    ``p_purchase_within(30 days)``; value is expected purchases in 180 days times the
    Gamma-Gamma expected spend per purchase (the population mean for one-time buyers).
    """

    bgnbd: BGNBDParams
    gamma_gamma: GammaGammaParams | None
    unit_days: float

    @classmethod
    def fit(cls, summary: pd.DataFrame, *, unit_days: float = 7.0) -> Baseline:
        """Fit on a :func:`bgnbd_summary` frame (same ``unit_days``)."""
        bgnbd = fit_bgnbd(summary["frequency"], summary["recency"], summary["T"])
        repeat = summary[(summary["frequency"] > 0) & (summary["monetary_value"] > 0)]
        gamma_gamma = None
        if len(repeat) >= 10:
            fitted = fit_gamma_gamma(repeat["frequency"], repeat["monetary_value"])
            gamma_gamma = fitted if fitted.q > 1 else None
        return cls(bgnbd, gamma_gamma, unit_days)

    def predict(self, summary: pd.DataFrame, *, horizon_days: float) -> pd.DataFrame:
        """Baseline scores for the customers of ``summary`` (same index).

        Returns:
            ``p_alive``, ``churn_prob`` (no purchase within ``horizon_days``),
            ``p_purchase_30d``, ``expected_purchases_180d`` and ``predicted_value_180d``.
        """
        x, t_x, age = summary["frequency"], summary["recency"], summary["T"]
        unit = self.unit_days
        purchases = expected_purchases(self.bgnbd, 180 / unit, x, t_x, age)
        if self.gamma_gamma is not None:
            spend = expected_average_spend(self.gamma_gamma, x, summary["monetary_value"])
        else:
            repeat = summary["monetary_value"][summary["frequency"] > 0]
            spend = np.full(len(summary), float(repeat.mean()) if len(repeat) else 0.0)
        return pd.DataFrame(
            {
                "p_alive": p_alive(self.bgnbd, x, t_x, age),
                "churn_prob": 1 - p_purchase_within(self.bgnbd, horizon_days / unit, x, t_x, age),
                "p_purchase_30d": p_purchase_within(self.bgnbd, 30 / unit, x, t_x, age),
                "expected_purchases_180d": purchases,
                "predicted_value_180d": purchases * np.asarray(spend, dtype=float),
            },
            index=summary.index,
        )
