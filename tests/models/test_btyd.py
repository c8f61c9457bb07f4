"""Tests of the BG/NBD + Gamma-Gamma baseline (``models.btyd``).

The decisive checks are Monte Carlo: customers are simulated event by event (a separate,
deliberately naive implementation of the generative process, not ``simulate_bgnbd``), observed
up to T and then followed for a further t, and the conditional formulas (P(alive), expected
purchases, P(at least one purchase)) must agree with what actually happened. Agreement is judged
by a z-score of the mean residual (|z| < 4) and by a relative tolerance of a few percent.
Parameter recovery tolerances come from the seed-to-seed spread of the estimates (see the
constants below); every seed is fixed, so the tests are deterministic.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, special, stats

from models import btyd
from models.btyd import (
    BGNBDParams,
    GammaGammaParams,
    bgnbd_summary,
    expected_average_spend,
    expected_purchases,
    fit_bgnbd,
    fit_gamma_gamma,
    p_alive,
    p_purchase_within,
    simulate_bgnbd,
    simulate_gamma_gamma,
)

CDNOW = BGNBDParams(r=0.24, alpha=4.41, a=0.79, b=2.43)
SECOND = BGNBDParams(r=1.5, alpha=20.0, a=2.0, b=6.0)
GG = GammaGammaParams(p=6.25, q=3.74, v=15.44)

# Over 12 seeds with 40,000 customers the relative error of the BG/NBD estimates had a standard
# deviation of ~1% for r and alpha and ~5-6% for a and b (a and b are weakly identified: few
# dropouts are observed), max |error| 3% and 17%. With 50,000 customers the tolerances below are
# about 4-5 standard deviations. E[p] = a / (a + b) is much better determined than a, b apart.
BGNBD_REL_TOL = {"r": 0.05, "alpha": 0.05, "a": 0.20, "b": 0.25}
# Gamma-Gamma, 30,000 customers with 1 + Poisson(2) transactions, 12 seeds: sd 5.4% (p),
# 1.6% (q), 7% (v); the population mean spend p v / (q - 1) within 1%.
GG_REL_TOL = {"p": 0.15, "q": 0.06, "v": 0.20}


def rel_err(fitted: float, true: float) -> float:
    return abs(fitted / true - 1.0)


def log_param_standard_errors(terms, log_params: np.ndarray, *data) -> np.ndarray:
    """Standard errors of the log-parameters from the observed information (finite differences
    of the analytic score)."""
    k = len(log_params)
    hessian = np.empty((k, k))
    step = 1e-5
    for j in range(k):
        up, down = log_params.copy(), log_params.copy()
        up[j] += step
        down[j] -= step
        hessian[:, j] = -(terms(up, *data)[1].sum(axis=1) - terms(down, *data)[1].sum(axis=1))
        hessian[:, j] /= 2 * step
    return np.sqrt(np.diag(np.linalg.inv(hessian)))


# --- generative process, event by event ---------------------------------------------------------


def simulate_paths(params: BGNBDParams, T: np.ndarray, horizons: tuple[float, ...], seed: int):
    """Follow each customer purchase by purchase up to T + max(horizons).

    The first purchase is at time 0; then Poisson(lambda) purchases, and right after each one the
    customer drops out with probability p. Returns the (x, t_x) summary at T, whether the
    customer is alive at T, and the number of purchases in (T, T + h] for each horizon h.
    """
    rng = np.random.default_rng(seed)
    n = len(T)
    lam = rng.gamma(params.r, 1.0 / params.alpha, n)
    p = rng.beta(params.a, params.b, n)
    end = T + max(horizons)
    now = np.zeros(n)
    x = np.zeros(n, dtype=np.int64)
    t_x = np.zeros(n)
    alive_at_T = np.ones(n, dtype=bool)
    future = np.zeros((len(horizons), n), dtype=np.int64)
    active = np.arange(n)
    while active.size:
        now[active] += rng.exponential(1.0 / lam[active])
        active = active[now[active] <= end[active]]
        when = now[active]
        observed = when <= T[active]
        x[active[observed]] += 1
        t_x[active[observed]] = when[observed]
        for k, h in enumerate(horizons):
            future[k, active[~observed & (when <= T[active] + h)]] += 1
        drops = rng.random(active.size) < p[active]
        alive_at_T[active[drops & observed]] = False
        active = active[~drops]
    return x, t_x, alive_at_T, future


HORIZONS = (4.0, 26.0, 78.0)


@pytest.fixture(scope="module")
def paths():
    n = 200_000
    T = np.random.default_rng(11).uniform(13.0, 78.0, n)
    x, t_x, alive, future = simulate_paths(CDNOW, T, HORIZONS, seed=12)
    return x, t_x, T, alive, future


def z_score(residual: np.ndarray) -> float:
    spread = residual.std(ddof=1)
    if spread == 0:  # e.g. P(alive) = 1 and everyone alive: exact agreement or none at all
        return 0.0 if residual.mean() == 0 else float(np.sign(residual.mean()) * np.inf)
    return float(residual.mean() / (spread / np.sqrt(residual.size)))


BUCKETS = {
    "x=0": lambda x: x == 0,
    "x=1-2": lambda x: (x >= 1) & (x <= 2),
    "x>=3": lambda x: x >= 3,
    "all": lambda x: np.ones(x.shape, dtype=bool),
}


@pytest.mark.parametrize("bucket", list(BUCKETS))
def test_p_alive_matches_simulation(paths, bucket):
    x, t_x, T, alive, _ = paths
    sel = BUCKETS[bucket](x)
    prob = p_alive(CDNOW, x[sel], t_x[sel], T[sel])
    assert abs(z_score(alive[sel] - prob)) < 4
    assert rel_err(prob.mean(), alive[sel].mean()) < 0.02


@pytest.mark.parametrize("bucket", list(BUCKETS))
@pytest.mark.parametrize("k", range(len(HORIZONS)))
def test_expected_purchases_matches_simulation(paths, bucket, k):
    x, t_x, T, _, future = paths
    sel = BUCKETS[bucket](x)
    expected = expected_purchases(CDNOW, HORIZONS[k], x[sel], t_x[sel], T[sel])
    observed = future[k][sel]
    assert abs(z_score(observed - expected)) < 4
    assert rel_err(expected.mean(), observed.mean()) < (0.06 if HORIZONS[k] < 10 else 0.04)


@pytest.mark.parametrize("bucket", list(BUCKETS))
@pytest.mark.parametrize("k", range(len(HORIZONS)))
def test_p_purchase_within_matches_simulation(paths, bucket, k):
    x, t_x, T, _, future = paths
    sel = BUCKETS[bucket](x)
    prob = p_purchase_within(CDNOW, HORIZONS[k], x[sel], t_x[sel], T[sel])
    bought = future[k][sel] > 0
    assert abs(z_score(bought - prob)) < 4
    assert rel_err(prob.mean(), bought.mean()) < (0.05 if HORIZONS[k] < 10 else 0.03)


def test_monte_carlo_check_has_power(paths):
    """Plausible wrong formulas are rejected by the same z-test: it can tell them apart."""
    x, t_x, T, _, future = paths
    h, observed = HORIZONS[1], future[1]
    alive = p_alive(CDNOW, x, t_x, T)
    rate_if_alive = (CDNOW.r + x) / (CDNOW.alpha + T)
    no_dropout_after_T = alive * rate_if_alive * h
    assert z_score(observed - no_dropout_after_T) < -4
    ignoring_p_alive = expected_purchases(CDNOW, h, x, t_x, T) / alive
    assert z_score(observed - ignoring_p_alive) < -4
    prob_alive_only = alive * (1 - np.exp(-rate_if_alive * h))  # plug-in lambda, no Gamma
    assert abs(z_score((observed > 0) - prob_alive_only)) > 4


def test_simulate_bgnbd_matches_event_simulation(paths):
    """The vectorised exact simulator and the event-by-event one describe the same process."""
    x_ev, t_x_ev, T, alive_ev, _ = paths
    sim = simulate_bgnbd(CDNOW, len(T), T, seed=13)
    x, t_x, alive = sim["frequency"].to_numpy(), sim["recency"].to_numpy(), sim["alive"]
    for a, b in [
        (x, x_ev),
        (x == 0, x_ev == 0),
        (x >= 5, x_ev >= 5),
        (t_x / T, t_x_ev / T),
        (alive, alive_ev),
    ]:
        a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        se = np.sqrt(a.var() / a.size + b.var() / b.size)
        assert abs(a.mean() - b.mean()) < 4 * se
    # And the simulator's own latent alive flag agrees with P(alive) given its summaries.
    prob = p_alive(CDNOW, x, t_x, T)
    assert abs(z_score(alive.to_numpy() - prob)) < 4


# --- parameter recovery -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recovered():
    out = {}
    rng = np.random.default_rng(21)
    for name, params, T in [
        ("cdnow", CDNOW, 39.0),
        ("second", SECOND, rng.uniform(13.0, 104.0, 50_000)),
    ]:
        sim = simulate_bgnbd(params, 50_000, T, seed=rng)
        fitted = fit_bgnbd(sim["frequency"], sim["recency"], sim["T"])
        out[name] = (params, sim, fitted)
    return out


@pytest.mark.parametrize("name", ["cdnow", "second"])
def test_bgnbd_parameter_recovery(recovered, name):
    true, sim, fitted = recovered[name]
    for field, tol in BGNBD_REL_TOL.items():
        assert rel_err(getattr(fitted, field), getattr(true, field)) < tol, field
    mean_p = fitted.a / (fitted.a + fitted.b)
    assert rel_err(mean_p, true.a / (true.a + true.b)) < 0.05
    # Within 4 standard errors (observed information) on the log scale as well.
    log_fit = np.log([fitted.r, fitted.alpha, fitted.a, fitted.b])
    log_true = np.log([true.r, true.alpha, true.a, true.b])
    data = (sim["frequency"].to_numpy(float), sim["recency"].to_numpy(), sim["T"].to_numpy())
    se = log_param_standard_errors(btyd._bgnbd_terms, log_fit, *data)
    assert np.all(np.abs(log_fit - log_true) < 4 * se)
    # The fit is a maximum: it beats the true parameters on its own sample.
    ll_fit = btyd.bgnbd_log_likelihood(fitted, *data).sum()
    assert ll_fit >= btyd.bgnbd_log_likelihood(true, *data).sum()


def test_bgnbd_gradient_matches_finite_differences():
    sim = simulate_bgnbd(CDNOW, 2_000, 39.0, seed=3)
    data = (sim["frequency"].to_numpy(float), sim["recency"].to_numpy(), sim["T"].to_numpy())
    log_params = np.log([0.3, 5.0, 0.7, 2.0])
    analytic = btyd._bgnbd_terms(log_params, *data)[1].sum(axis=1)
    numeric = np.empty(4)
    for j in range(4):
        step = np.zeros(4)
        step[j] = 1e-6
        up = btyd._bgnbd_terms(log_params + step, *data)[0].sum()
        down = btyd._bgnbd_terms(log_params - step, *data)[0].sum()
        numeric[j] = (up - down) / 2e-6
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5)


def test_bgnbd_fit_is_deterministic_and_order_free(recovered):
    _, sim, fitted = recovered["second"]
    again = fit_bgnbd(sim["frequency"], sim["recency"], sim["T"])
    assert again == fitted
    shuffled = sim.sample(frac=1.0, random_state=0)
    assert fit_bgnbd(shuffled["frequency"], shuffled["recency"], shuffled["T"]) == fitted


def test_bgnbd_weights_equal_repeated_rows():
    sim = simulate_bgnbd(CDNOW, 3_000, 39.0, seed=5)
    counts = np.random.default_rng(6).integers(1, 4, len(sim))
    repeated = sim.loc[sim.index.repeat(counts)]
    by_weight = fit_bgnbd(sim["frequency"], sim["recency"], sim["T"], weights=counts)
    by_rows = fit_bgnbd(repeated["frequency"], repeated["recency"], repeated["T"])
    for field in ("r", "alpha", "a", "b"):
        assert getattr(by_weight, field) == pytest.approx(getattr(by_rows, field), rel=1e-5)


def test_bgnbd_penalty_shrinks_towards_one():
    sim = simulate_bgnbd(CDNOW, 3_000, 39.0, seed=7)
    plain = fit_bgnbd(sim["frequency"], sim["recency"], sim["T"])
    ridged = fit_bgnbd(sim["frequency"], sim["recency"], sim["T"], penalty=1e-4)
    norm = lambda q: np.sum(np.log([q.r, q.alpha, q.a, q.b]) ** 2)  # noqa: E731
    assert norm(ridged) < norm(plain)
    assert rel_err(ridged.r, plain.r) < 0.05


def test_fit_bgnbd_rejects_bad_inputs():
    with pytest.raises(ValueError, match="recency"):
        fit_bgnbd([1, 2], [5.0, 50.0], [39.0, 39.0])
    with pytest.raises(ValueError, match="frequency"):
        fit_bgnbd([1.5], [1.0], [39.0])
    with pytest.raises(ValueError, match="recency must be 0"):
        fit_bgnbd([0], [1.0], [39.0])


@pytest.fixture(scope="module")
def gamma_gamma_sample():
    rng = np.random.default_rng(31)
    x = 1 + rng.poisson(2.0, 50_000)
    return simulate_gamma_gamma(GG, x, seed=rng)


def test_gamma_gamma_parameter_recovery(gamma_gamma_sample):
    sim = gamma_gamma_sample
    fitted = fit_gamma_gamma(sim["frequency"], sim["monetary_value"])
    for field, tol in GG_REL_TOL.items():
        assert rel_err(getattr(fitted, field), getattr(GG, field)) < tol, field
    assert rel_err(fitted.p * fitted.v / (fitted.q - 1), GG.p * GG.v / (GG.q - 1)) < 0.02
    x, m = sim["frequency"].to_numpy(float), sim["monetary_value"].to_numpy()
    log_fit, log_true = np.log([fitted.p, fitted.q, fitted.v]), np.log([GG.p, GG.q, GG.v])
    se = log_param_standard_errors(btyd._gamma_gamma_terms, log_fit, x, m)
    assert np.all(np.abs(log_fit - log_true) < 4 * se)
    assert fit_gamma_gamma(sim["frequency"], sim["monetary_value"]) == fitted


def test_gamma_gamma_ignores_non_repeaters(gamma_gamma_sample):
    sim = gamma_gamma_sample.iloc[:5_000]
    base = fit_gamma_gamma(sim["frequency"], sim["monetary_value"])
    padded_x = np.concatenate([sim["frequency"], np.zeros(100)])
    padded_m = np.concatenate([sim["monetary_value"], np.zeros(100)])
    assert fit_gamma_gamma(padded_x, padded_m) == base
    with pytest.raises(ValueError, match="at least one customer"):
        fit_gamma_gamma([0, 0], [0.0, 0.0])


def test_gamma_gamma_density_integrates_to_one():
    for x in (1, 3, 20):
        total, _ = integrate.quad(
            lambda m, x=x: np.exp(btyd.gamma_gamma_log_likelihood(GG, x, m)), 0, np.inf
        )
        assert total == pytest.approx(1.0, rel=1e-7)


def test_expected_average_spend_matches_simulation(gamma_gamma_sample):
    """E[M | x, m] is the posterior mean of p / nu: check it against the simulated nu."""
    sim = gamma_gamma_sample
    x, m = sim["frequency"].to_numpy(), sim["monetary_value"].to_numpy()
    expected = expected_average_spend(GG, x, m)
    true_mean = GG.p / sim["nu"].to_numpy()
    for sel in (x == 1, x >= 4, np.ones(x.shape, dtype=bool)):
        assert abs(z_score(true_mean[sel] - expected[sel])) < 4
    population = GG.p * GG.v / (GG.q - 1)
    np.testing.assert_allclose(expected_average_spend(GG, [0, 0], [123.0, 0.0]), population)
    # Shrinkage: between the population mean and the customer's own mean.
    lo, hi = np.minimum(m, population), np.maximum(m, population)
    assert np.all((expected >= lo - 1e-9) & (expected <= hi + 1e-9))


# --- internal consistency and numerical stability -----------------------------------------------


def reference_expected_purchases(params, t, x, t_x, T):
    """Eq. (10) without the hypergeometric function: P(alive) times the posterior mean of
    (1 - exp(-lambda p t)) / p, with lambda | alive ~ Gamma(r+x, alpha+T) integrated in closed
    form and p | alive ~ Beta(a, b+x) by quadrature (over its quantiles)."""
    k, s = params.r + x, t / (params.alpha + T)
    dist = stats.beta(params.a, params.b + x)

    def integrand(u):
        p = dist.ppf(u)
        return k * s if p < 1e-12 else -np.expm1(-k * np.log1p(p * s)) / p

    value, _ = integrate.quad(integrand, 0, 1, limit=200, epsabs=0, epsrel=1e-11)
    return float(p_alive(params, x, t_x, T)) * value


CASES = [  # (t, x, t_x, T)
    (13.0, 0, 0.0, 39.0),
    (39.0, 3, 30.0, 39.0),
    (52.0, 10, 5.0, 39.0),
    (52.0, 200, 499.0, 500.0),
    (1_000.0, 200, 39.0, 40.0),
    (5_000.0, 300, 39.0, 40.0),
    (1e5, 2, 30.0, 39.0),
]


@pytest.mark.parametrize("params", [CDNOW, SECOND, BGNBDParams(r=0.5, alpha=3.0, a=0.3, b=0.5)])
@pytest.mark.parametrize("case", CASES)
def test_expected_purchases_matches_quadrature(params, case):
    t, x, t_x, T = case
    value = float(expected_purchases(params, t, x, t_x, T))
    assert value == pytest.approx(reference_expected_purchases(params, t, x, t_x, T), rel=1e-9)


def naive_eq10(params, t, x, t_x, T):
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    z = t / (alpha + T + t)
    hyp = special.hyp2f1(r + x, b + x, a + b + x - 1, z)
    power = ((alpha + T) / (alpha + T + t)) ** (r + x)
    return (a + b + x - 1) / (a - 1) * (1 - power * hyp) * p_alive(params, x, t_x, T)


def test_large_frequency_is_finite_where_the_textbook_form_breaks():
    t, x, t_x, T = 5_000.0, 300, 39.0, 40.0
    with np.errstate(all="ignore"):
        assert not np.isfinite(naive_eq10(CDNOW, t, x, t_x, T))
    x_big = np.array([200, 300, 1_000, 200])
    t_x_big, T_big = np.array([39.0, 39.0, 499.0, 500.0]), np.array([40.0, 40.0, 500.0, 500.0])
    for horizon in (1.0, 52.0, 5_000.0, 1e6):
        value = expected_purchases(CDNOW, horizon, x_big, t_x_big, T_big)
        assert np.all(np.isfinite(value)) and np.all(value > 0)
        # An alive customer buys at most E[lambda | alive] * t, dropout only lowers it.
        bound = (CDNOW.r + x_big) / (CDNOW.alpha + T_big) * horizon
        assert np.all(value <= bound * p_alive(CDNOW, x_big, t_x_big, T_big) * (1 + 1e-12))
        prob = p_purchase_within(CDNOW, horizon, x_big, t_x_big, T_big)
        assert np.all(np.isfinite(prob)) and np.all((prob >= 0) & (prob <= 1))


def test_hyp2f1_series_fallback(monkeypatch):
    rng = np.random.default_rng(41)
    a, b = rng.uniform(-0.9, 3, 50), rng.uniform(-0.9, 3, 50)
    c, z = rng.uniform(1.5, 300, 50), rng.uniform(0, 0.95, 50)
    np.testing.assert_allclose(btyd._hyp2f1_series(a, b, c, z), special.hyp2f1(a, b, c, z), 1e-12)
    # Where scipy fails, the series takes over and gives the same answers.
    x, t_x, T = np.array([0, 3, 200]), np.array([0.0, 30.0, 499.0]), np.array([39.0, 39.0, 500.0])
    expected = expected_purchases(CDNOW, 52.0, x, t_x, T)
    monkeypatch.setattr(btyd.special, "hyp2f1", lambda *args: np.full(np.shape(args[3]), np.nan))
    np.testing.assert_allclose(expected_purchases(CDNOW, 52.0, x, t_x, T), expected, rtol=1e-10)


def test_a_equal_to_one_is_handled():
    at_one = BGNBDParams(r=0.5, alpha=3.0, a=1.0, b=2.0)
    value = float(expected_purchases(at_one, 26.0, 3, 30.0, 39.0))
    reference = reference_expected_purchases(at_one, 26.0, 3, 30.0, 39.0)
    assert value == pytest.approx(reference, rel=1e-5)


@pytest.fixture(scope="module")
def grid():
    x = np.repeat(np.arange(0, 30), 40)
    T = np.tile(np.linspace(1.0, 104.0, 40), 30)
    t_x = np.where(x > 0, T * np.tile(np.linspace(0.0, 1.0, 40), 30), 0.0)
    return x, t_x, T


@pytest.mark.parametrize("params", [CDNOW, SECOND])
def test_consistency(params, grid):
    x, t_x, T = grid
    alive = p_alive(params, x, t_x, T)
    assert np.all((alive >= 0) & (alive <= 1))
    assert np.all(alive[x == 0] == 1.0)
    # t -> 0: nothing expected; t = 0 exactly: 0.
    assert np.all(expected_purchases(params, 0.0, x, t_x, T) == 0.0)
    assert np.all(np.abs(expected_purchases(params, 1e-9, x, t_x, T)) < 1e-8)
    assert np.all(p_purchase_within(params, 0.0, x, t_x, T) == 0.0)
    previous_e, previous_p = np.zeros(x.shape), np.zeros(x.shape)
    for t in (0.5, 4.0, 13.0, 52.0, 520.0):
        e = expected_purchases(params, t, x, t_x, T)
        prob = p_purchase_within(params, t, x, t_x, T)
        assert np.all(e >= previous_e) and np.all(prob >= previous_p)
        assert np.all(prob <= alive) and np.all(prob <= e + 1e-12)  # P(Y >= 1) <= E[Y]
        previous_e, previous_p = e, prob
    # For fixed x and T, a more recent last purchase means more likely alive.
    more_recent = p_alive(params, 5, [10.0, 20.0, 30.0], 39.0)
    assert np.all(np.diff(more_recent) > 0)


def test_p_purchase_within_formula():
    """P(no purchase) = 1 - P(alive) + P(alive) ((alpha+T)/(alpha+T+t))^(r+x)."""
    x, t_x, T, t = np.array([0, 2, 7]), np.array([0.0, 10.0, 30.0]), np.array([39.0] * 3), 26.0
    alive = p_alive(CDNOW, x, t_x, T)
    none = 1 - alive + alive * ((CDNOW.alpha + T) / (CDNOW.alpha + T + t)) ** (CDNOW.r + x)
    np.testing.assert_allclose(p_purchase_within(CDNOW, t, x, t_x, T), 1 - none, rtol=1e-13)


# --- summary from orders ------------------------------------------------------------------------


def orders_frame(rows, tz=None):
    frame = pd.DataFrame(rows, columns=["customer_id", "ordered_at", "value"])
    frame["ordered_at"] = pd.to_datetime(frame["ordered_at"])
    if tz is not None:
        frame["ordered_at"] = frame["ordered_at"].dt.tz_localize(tz)
    return frame


ROWS = [
    ("a", "2026-01-01 10:00", 10.0),  # first day: two orders, one purchase
    ("a", "2026-01-01 15:00", 5.0),
    ("a", "2026-01-08 09:00", 20.0),  # repeat day 1: 20
    ("a", "2026-01-15 08:00", 30.0),  # repeat day 2: 30 + 10
    ("a", "2026-01-15 20:00", 10.0),
    ("a", "2026-01-29 00:00", 99.0),  # at the cutoff: ignored
    ("b", "2026-01-20 12:00", 50.0),  # one purchase only
    ("b", "2026-02-03 12:00", 70.0),  # after the cutoff: ignored
    ("c", "2026-01-29 00:00", 10.0),  # only at / after the cutoff: absent
    ("c", "2026-02-01 00:00", 10.0),
]


def test_bgnbd_summary_by_hand():
    summary = bgnbd_summary(orders_frame(ROWS), pd.Timestamp("2026-01-29"))
    expected = pd.DataFrame(
        {
            "frequency": [2.0, 0.0],
            "recency": [2.0, 0.0],
            "T": [4.0, 9.0 / 7.0],
            "monetary_value": [30.0, 0.0],
        },
        index=pd.Index(["a", "b"], name="customer_id"),
    )
    pd.testing.assert_frame_equal(summary, expected)
    # Half a day later the order at 2026-01-29 00:00 counts (one more repeat day of 99).
    in_days = bgnbd_summary(orders_frame(ROWS), pd.Timestamp("2026-01-29 12:00"), unit_days=1.0)
    assert in_days.loc["a"].to_dict() == {
        "frequency": 3.0,
        "recency": 28.0,
        "T": 28.5,
        "monetary_value": (20.0 + 40.0 + 99.0) / 3,
    }
    assert in_days.loc["b", "T"] == 9.5


def test_bgnbd_summary_time_zones():
    orders = orders_frame(ROWS, tz="Asia/Shanghai")
    cutoff = pd.Timestamp("2026-01-29", tz="Asia/Shanghai")
    expected = bgnbd_summary(orders_frame(ROWS), pd.Timestamp("2026-01-29"))
    pd.testing.assert_frame_equal(bgnbd_summary(orders, cutoff), expected)
    # The same instant given in UTC is the same cutoff.
    pd.testing.assert_frame_equal(bgnbd_summary(orders, cutoff.tz_convert("UTC")), expected)
    # Calendar days are the orders' own: 23:30 and 00:30 Shanghai are two days, though one in UTC.
    late = orders_frame(
        [("d", "2026-01-01 23:30", 1.0), ("d", "2026-01-02 00:30", 2.0)], tz="Asia/Shanghai"
    )
    assert bgnbd_summary(late, cutoff).loc["d", "frequency"] == 1.0
    with pytest.raises(ValueError, match="tz-aware"):
        bgnbd_summary(orders, pd.Timestamp("2026-01-29"))
    with pytest.raises(ValueError, match="tz-aware"):
        bgnbd_summary(orders_frame(ROWS), cutoff)


def test_bgnbd_summary_edge_cases():
    empty = bgnbd_summary(orders_frame(ROWS), pd.Timestamp("2025-01-01"))
    assert empty.empty and list(empty.columns) == ["frequency", "recency", "T", "monetary_value"]
    with pytest.raises(ValueError, match="missing columns"):
        bgnbd_summary(orders_frame(ROWS).drop(columns="value"), pd.Timestamp("2026-01-29"))
    broken = orders_frame(ROWS)
    broken.loc[0, "value"] = np.nan
    with pytest.raises(ValueError, match="missing"):
        bgnbd_summary(broken, pd.Timestamp("2026-01-29"))


def test_bgnbd_summary_feeds_the_models():
    rng = np.random.default_rng(51)
    n = 300
    rows = []
    for customer in range(n):
        start = pd.Timestamp("2025-01-01") + pd.Timedelta(days=int(rng.integers(0, 200)))
        for day in np.sort(rng.choice(300, size=int(rng.integers(1, 8)), replace=False)):
            rows.append((customer, start + pd.Timedelta(days=int(day)), float(rng.gamma(2, 20))))
    summary = bgnbd_summary(orders_frame(rows), pd.Timestamp("2025-09-01"))
    assert (summary["recency"] <= summary["T"]).all() and (summary["T"] > 0).all()
    params = fit_bgnbd(summary["frequency"], summary["recency"], summary["T"])
    churn = 1 - p_purchase_within(
        params, 13.0, summary["frequency"], summary["recency"], summary["T"]
    )
    assert np.all((churn >= 0) & (churn <= 1))
    spend = fit_gamma_gamma(summary["frequency"], summary["monetary_value"])
    assert np.all(
        expected_average_spend(spend, summary["frequency"], summary["monetary_value"]) > 0
    )


def test_baseline_answers_the_models_questions():
    from models.btyd import Baseline

    truth = BGNBDParams(r=0.24, alpha=4.41, a=0.79, b=2.43)
    summary = simulate_bgnbd(truth, 5_000, 39.0, seed=7)[["frequency", "recency", "T"]]
    summary["monetary_value"] = np.where(summary["frequency"] > 0, 30.0, 0.0)
    summary["monetary_value"] += np.random.default_rng(1).gamma(2.0, 5.0, len(summary)) * (
        summary["frequency"] > 0
    )
    baseline = Baseline.fit(summary)
    got = baseline.predict(summary, horizon_days=90)
    assert list(got.columns) == [
        "p_alive",
        "churn_prob",
        "p_purchase_30d",
        "expected_purchases_180d",
        "predicted_value_180d",
    ]
    assert got.index.equals(summary.index)
    assert ((got["churn_prob"] >= 1 - got["p_alive"] - 1e-12) & (got["churn_prob"] <= 1)).all()
    assert (got["p_purchase_30d"] <= 1 - got["churn_prob"] + 1e-12).all()  # 30 d within 90 d
    assert (got["predicted_value_180d"] >= 0).all()
    assert baseline.gamma_gamma is not None


@pytest.mark.parametrize("ids", ["text", "arrow-text", "numbers", "categorical"])
def test_bgnbd_summary_does_not_depend_on_row_order(ids):
    """Sorted orders (as ``order_table`` gives them) take a faster path: same summary."""
    rng = np.random.default_rng(52)
    rows = [
        (f"c{c % 40:03d}", pd.Timestamp("2025-01-01") + pd.Timedelta(hours=int(h)), float(v))
        for c, h, v in zip(
            rng.integers(0, 400, 3000),
            rng.integers(0, 24 * 300, 3000),
            rng.gamma(2, 20, 3000),
            strict=True,
        )
    ]
    frame = orders_frame(rows, tz="Asia/Shanghai")
    if ids == "arrow-text":
        frame["customer_id"] = frame["customer_id"].astype("string[pyarrow]")
    elif ids == "numbers":
        frame["customer_id"] = frame["customer_id"].str[1:].astype(int)
    elif ids == "categorical":  # as customer_tables gives them: every known customer a category
        text = frame["customer_id"].astype("string[pyarrow]")
        known = pd.Index(sorted(set(text) | {"a-no-order", "z-no-order"}), dtype=text.dtype)
        frame["customer_id"] = pd.Categorical(text, dtype=pd.CategoricalDtype(known))
    cutoff = pd.Timestamp("2025-09-01", tz="Asia/Shanghai")
    shuffled = bgnbd_summary(frame, cutoff)
    if ids == "categorical":  # the same summary as of the ids as text
        as_text = frame.assign(customer_id=frame["customer_id"].astype("string[pyarrow]"))
        pd.testing.assert_frame_equal(shuffled, bgnbd_summary(as_text, cutoff))
    ordered = frame.sort_values(["customer_id", "ordered_at"], kind="stable")
    pd.testing.assert_frame_equal(bgnbd_summary(ordered, cutoff), shuffled)
    # Sorted by customer but one customer's days out of order: still the same.
    swapped = ordered.copy()
    swapped.iloc[[0, 1]] = swapped.iloc[[1, 0]].to_numpy()
    assert swapped["customer_id"].iloc[0] == swapped["customer_id"].iloc[1]
    pd.testing.assert_frame_equal(bgnbd_summary(swapped, cutoff), shuffled)
    assert len(shuffled) == 40 and shuffled["frequency"].gt(0).all()
