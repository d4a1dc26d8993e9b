"""The exact reverse process for Gaussian data (course_utils.analytic) against independent computations:
float64 Bayes' rule, statistics of simulated forward pairs, jax.grad of a log density, and an exact
propagation of means and variances through linear-Gaussian chains."""

import functools
import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from course_utils import analytic, config, forward, grading, losses, schedules
from course_utils.grading import CheckFailure, check
from course_utils._validate import unmarked

T, M, P = 50, 3.0, 0.5
BETAS = np.linspace(0.02, 0.3, T).astype(np.float32)


def _rng(*seed):
    return np.random.default_rng(list(seed))


def _schedule64(betas):
    """(betas, alphas, alpha_bar_t, alpha_bar_{t-1}) in float64, index t - 1 for step t."""
    b = np.asarray(betas, np.float64)
    ab = np.cumprod(1 - b)
    return b, 1 - b, ab, np.concatenate([[1.0], ab[:-1]])


def bayes_reverse(x_t, t, betas, m, p):
    """q(x_{t-1} | x_t) by Bayes' rule in float64, written with precisions (not covariances).

    Prior x_{t-1} ~ N(sqrt(abp) m, abp p^2 + 1 - abp); likelihood x_t | x_{t-1} ~ N(sqrt(a) x_{t-1}, b):
    the posterior precision is the sum of the precisions, the mean is precision-weighted.
    """
    b, a, ab, abp = (c[np.asarray(t) - 1] for c in _schedule64(betas))
    prior_mean, prior_var = np.sqrt(abp) * m, abp * p**2 + 1 - abp
    precision = 1 / prior_var + a / b
    var = 1 / precision
    mean = var * (prior_mean / prior_var + np.sqrt(a) * np.asarray(x_t, np.float64) / b)
    return mean, var


def _simulate_pairs(rng, t, n, betas=BETAS, m=M, p=P):
    """(x_{t-1}, x_t) drawn from the forward process started at x0 ~ N(m, p^2), float64."""
    b, a, ab, abp = (c[t - 1] for c in _schedule64(betas))
    x0 = m + p * rng.standard_normal(n)
    x_prev = math.sqrt(abp) * x0 + math.sqrt(1 - abp) * rng.standard_normal(n)
    x_t = math.sqrt(a) * x_prev + math.sqrt(b) * rng.standard_normal(n)
    return x_prev, x_t


# ------------------------------------------------------------------ the exact step


@pytest.mark.parametrize("seed", range(12))
def test_reverse_step_is_bayes_rule_in_float64(seed):
    rng = _rng(0, seed)
    shape = [(), (7,), (3, 4)][seed % 3]
    n_steps = int(rng.integers(1, 200))
    betas = np.linspace(rng.uniform(1e-4, 0.05), rng.uniform(0.05, 0.5), n_steps).astype(np.float32)
    t = np.asarray(rng.integers(1, n_steps + 1, size=shape), np.int32)
    m, p = float(rng.uniform(-5, 5)), float(rng.uniform(0.05, 3))
    x_t = np.asarray(rng.normal(0, 2, size=shape), np.float32)
    mean, var = analytic.gaussian_reverse_mean_var(x_t, t, betas, m, p)
    want_mean, want_var = bayes_reverse(x_t, t, betas, m, p)
    assert mean.shape == shape and var.shape == shape
    assert mean.dtype == jnp.float32 and var.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(mean, np.float64), want_mean, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(var, np.float64), want_var, rtol=1e-4)


def test_reverse_step_with_a_scalar_t_broadcasts_over_x():
    x = np.linspace(-3, 3, 11).astype(np.float32)
    mean, var = analytic.gaussian_reverse_mean_var(x, 17, BETAS, M, P)
    assert mean.shape == (11,) and var.shape == ()
    want_mean, want_var = bayes_reverse(x, 17, BETAS, M, P)
    np.testing.assert_allclose(np.asarray(mean), want_mean, rtol=1e-5, atol=1e-5)
    assert float(var) == pytest.approx(float(want_var), rel=1e-5)


@pytest.mark.parametrize("t", [1, 3, 10, 25, 50])
def test_reverse_step_matches_simulated_pairs(t):
    """In narrow bins of x_t, x_{t-1} - mean(x_t) has mean 0 and the step's variance.

    The conditional mean is linear in x_t, so the residual has these moments in
    every bin, whatever the bin's width: nothing to correct for.
    """
    x_prev, x_t = _simulate_pairs(_rng(1, t), t, 1_000_000)
    mean, var = analytic.gaussian_reverse_mean_var(x_t.astype(np.float32), t, BETAS, M, P)
    residual = x_prev - np.asarray(mean, np.float64)
    var = float(var)
    centre, spread = x_t.mean(), x_t.std()
    for c in (centre - 2 * spread, centre, centre + 1.5 * spread):
        keep = np.abs(x_t - c) < 0.05 * spread
        n = int(keep.sum())
        assert n > 2_000
        r = residual[keep]
        assert abs(r.mean()) < 5 * math.sqrt(var / n), (c, r.mean())
        assert abs(r.var() - var) < 5 * var * math.sqrt(2 / n), (c, r.var(), var)
    # and over all samples: least squares of x_{t-1} on x_t gives the same line
    slope, intercept = np.polyfit(x_t, x_prev, 1)
    at_zero, at_one = (float(analytic.gaussian_reverse_mean_var(np.float32(x), t, BETAS, M, P)[0]) for x in (0.0, 1.0))
    assert slope == pytest.approx(at_one - at_zero, abs=5e-3)
    assert intercept == pytest.approx(at_zero, abs=5e-3)


def test_the_moment_check_can_fail():
    """The same statistics reject the shortcut at an intermediate step."""
    t = 10
    x_prev, x_t = _simulate_pairs(_rng(2), t, 1_000_000)
    mean, var = analytic.shortcut_reverse_mean_var(x_t.astype(np.float32), t, BETAS, M, P)
    residual = x_prev - np.asarray(mean, np.float64)
    keep = np.abs(x_t - (x_t.mean() + 1.5 * x_t.std())) < 0.05 * x_t.std()
    n = int(keep.sum())
    assert abs(residual[keep].mean()) > 10 * math.sqrt(float(var) / n)


def test_reverse_step_at_t_1_and_at_the_end():
    """t = 1 conditions x_0 on x_1; the variance is the forward posterior's plus c0^2 Var[x0 | x_t] (>= it)."""
    x = np.linspace(-2, 5, 9).astype(np.float32)
    b1 = float(BETAS[0])
    mean, var = analytic.gaussian_reverse_mean_var(x, 1, BETAS, M, P)
    # x_1 = sqrt(1 - b1) x_0 + sqrt(b1) eps with x_0 ~ N(M, P^2): Gaussian conditioning by hand
    v1 = (1 - b1) * P**2 + b1
    np.testing.assert_allclose(np.asarray(mean), M + math.sqrt(1 - b1) * P**2 / v1 * (x - math.sqrt(1 - b1) * M),
                               rtol=1e-5, atol=1e-5)
    assert float(var) == pytest.approx(P**2 * b1 / v1, rel=1e-5)
    sched = schedules.make_schedule(BETAS)
    for t in range(1, T + 1):
        _, v_exact = analytic.gaussian_reverse_mean_var(x, t, BETAS, M, P)
        assert float(v_exact) >= float(sched.posterior_variances[t - 1]) * (1 - 1e-6)
        assert float(v_exact) <= float(BETAS[t - 1])  # p < 1: between the two classic choices


def test_reverse_step_runs_inside_jit_and_scan_with_a_traced_t():
    x = jnp.linspace(-1, 4, 6)

    def body(carry, t):
        mean, var = analytic.gaussian_reverse_mean_var(x, t, BETAS, M, P)
        return carry, (mean, var)

    _, (means, variances) = jax.jit(lambda: jax.lax.scan(body, 0, jnp.arange(1, T + 1)))()
    assert means.shape == (T, 6) and variances.shape == (T,)
    for t in (1, 20, 50):
        want_mean, want_var = bayes_reverse(np.asarray(x), t, BETAS, M, P)
        np.testing.assert_allclose(np.asarray(means[t - 1]), want_mean, rtol=1e-4, atol=1e-5)
        assert float(variances[t - 1]) == pytest.approx(float(want_var), rel=1e-4)


# ------------------------------------------------------------------ the shortcut


def test_shortcut_formula():
    x = np.linspace(-3, 5, 7).astype(np.float32)
    b, a, ab, abp = _schedule64(BETAS)
    for t in (1, 2, 10, 50):
        i = t - 1
        c0 = math.sqrt(abp[i]) * b[i] / (1 - ab[i])
        ct = math.sqrt(a[i]) * (1 - abp[i]) / (1 - ab[i])
        mean, var = analytic.shortcut_reverse_mean_var(x, t, BETAS, M, P)
        np.testing.assert_allclose(np.asarray(mean), c0 * M + ct * x, rtol=1e-5, atol=1e-5)
        assert float(var) == pytest.approx((1 - abp[i]) / (1 - ab[i]) * b[i] + c0**2 * P**2, rel=1e-5)


def test_shortcut_is_exact_for_a_point_mass_and_at_t_1_draws_from_the_data():
    x = np.linspace(-3, 5, 7).astype(np.float32)
    for t in (2, 10, 40):
        exact = analytic.gaussian_reverse_mean_var(x, t, BETAS, M, 1e-3)
        short = analytic.shortcut_reverse_mean_var(x, t, BETAS, M, 1e-3)
        np.testing.assert_allclose(np.asarray(short[0]), np.asarray(exact[0]), rtol=1e-4, atol=1e-4)
        assert float(short[1]) == pytest.approx(float(exact[1]), rel=1e-3)
    mean, var = analytic.shortcut_reverse_mean_var(x, 1, BETAS, M, P)   # c0 = 1, c_t = 0, beta_tilde_1 = 0
    np.testing.assert_allclose(np.asarray(mean), np.full(7, M), rtol=1e-6)
    assert float(var) == pytest.approx(P**2, rel=1e-5)
    # and it is wrong in between, for real data
    exact = analytic.gaussian_reverse_mean_var(x, 10, BETAS, M, P)
    short = analytic.shortcut_reverse_mean_var(x, 10, BETAS, M, P)
    assert np.max(np.abs(np.asarray(short[0]) - np.asarray(exact[0]))) > 0.1


# ------------------------------------------------------------------ the exact noise predictor


def _log_density(x, alpha_bar, m, p):
    """log N(x; sqrt(ab) m, ab p^2 + 1 - ab), written out."""
    var = alpha_bar * p**2 + 1 - alpha_bar
    return -0.5 * (x - jnp.sqrt(alpha_bar) * m) ** 2 / var - 0.5 * jnp.log(2 * jnp.pi * var)


@pytest.mark.parametrize("seed", range(6))
def test_gaussian_eps_is_minus_scaled_score(seed):
    rng = _rng(3, seed)
    x = rng.normal(0, 2, size=20)
    ab, m, p = rng.uniform(1e-3, 0.999), rng.uniform(-4, 4), rng.uniform(0.1, 2)
    with config.float64():
        score = jax.vmap(jax.grad(_log_density), in_axes=(0, None, None, None))(jnp.asarray(x, jnp.float64), ab, m, p)
        want = -np.sqrt(1 - ab) * np.asarray(score)
    got = analytic.gaussian_eps(x.astype(np.float32), np.float32(ab), np.float32(m), np.float32(p))
    assert got.shape == (20,)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-4, atol=1e-5)


def test_gaussian_eps_is_the_conditional_mean_of_the_noise():
    """Regress simulated eps on x_t: the least-squares line is E[eps | x_t]."""
    rng = _rng(4)
    ab = 0.3
    x0, eps = M + P * rng.standard_normal(1_000_000), rng.standard_normal(1_000_000)
    x_t = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * eps
    slope, intercept = np.polyfit(x_t, eps, 1)
    at_zero, at_one = (float(analytic.gaussian_eps(np.float32(x), ab, M, P)) for x in (0.0, 1.0))
    assert slope == pytest.approx(at_one - at_zero, abs=3e-3)
    assert intercept == pytest.approx(at_zero, abs=3e-3)


def test_ddpm_step_with_the_exact_eps_has_the_exact_mean():
    x = np.linspace(-3, 5, 33).astype(np.float32)
    sched = schedules.make_schedule(BETAS)
    for t in range(1, T + 1):
        mean, var = analytic.ddpm_reverse_mean_var(x, t, BETAS, M, P)
        exact_mean, _ = analytic.gaussian_reverse_mean_var(x, t, BETAS, M, P)
        np.testing.assert_allclose(np.asarray(mean), np.asarray(exact_mean), rtol=1e-4, atol=2e-5)
        assert float(var) == pytest.approx(float(sched.posterior_variances[t - 1]), rel=1e-6)
        # sigma^2 = beta, except at the last step, where DDPM's sampler (and the course's) adds no noise
        want = 0.0 if t == 1 else float(BETAS[t - 1])
        assert float(analytic.ddpm_reverse_mean_var(x, t, BETAS, M, P, variance="beta")[1]) == pytest.approx(want)
    eps = analytic.gaussian_eps(x, sched.alpha_bars[9], M, P)
    np.testing.assert_allclose(np.asarray(analytic.ddpm_reverse_mean_var(x, 10, BETAS, M, P)[0]),
                               np.asarray(losses.mean_from_noise(x, eps, BETAS[9], sched.alpha_bars[9])), rtol=1e-6)


def test_forward_marginal():
    ab = np.array([1.0, 0.5, 1e-4])
    mean, var = analytic.forward_marginal_mean_var(ab, M, P)
    np.testing.assert_allclose(np.asarray(mean), np.sqrt(ab) * M, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(var), ab * P**2 + 1 - ab, rtol=1e-6)
    x_t = forward.q_sample(M + P * jax.random.normal(jax.random.key(0), (400_000,)), 0.5, jax.random.normal(jax.random.key(1), (400_000,)))
    assert float(x_t.mean()) == pytest.approx(float(mean[1]), abs=5 * math.sqrt(float(var[1]) / 400_000))
    assert float(x_t.var()) == pytest.approx(float(var[1]), rel=5 * math.sqrt(2 / 400_000))


# ------------------------------------------------------------------ the sampler


def _chain_moments(step_coefficients, start_mean, start_var):
    """Mean and variance of x_0 after x_{t-1} = k_t x_t + c_t + s_t z, t = T..1, in float64."""
    mean, var = start_mean, start_var
    for t in range(T, 0, -1):
        k, c, s2 = step_coefficients(t)
        mean, var = k * mean + c, k * k * var + s2
    return mean, var


def _linear_step(step, t):
    """A step function's (slope, intercept, variance) in x_t, read off at x_t = 0 and 1."""
    (m0, v), (m1, _) = (step(np.float32(x), t, BETAS, M, P) for x in (0.0, 1.0))
    return float(m1) - float(m0), float(m0), float(v)


@pytest.fixture(scope="module")
def start_and_noises():
    k1, k2 = jax.random.split(jax.random.key(42))
    n = 1_000_000
    return jax.random.normal(k1, (n,)), jax.random.normal(k2, (T, n))


def test_reverse_sampler_recovers_the_data_and_every_marginal(start_and_noises):
    x_T, noises = start_and_noises
    n = x_T.shape[0]
    sched = schedules.make_schedule(BETAS)
    # start from the exact q(x_T), so that every kept marginal is exactly a forward marginal
    m_T, v_T = analytic.forward_marginal_mean_var(sched.alpha_bars[-1], M, P)
    start = m_T + jnp.sqrt(v_T) * x_T
    run = analytic.reverse_gaussian(analytic.gaussian_reverse_mean_var, start, noises, BETAS, M, P,
                                    keep_steps=(40, 25, 10, 1), n_paths=3)
    assert run.x0.shape == (n,) and run.states.shape == (4, n) and run.paths.shape == (T + 1, 3)
    for t, x in [(0, run.x0), *((t, run.at(t)) for t in (40, 25, 10, 1))]:
        mean, var = analytic.forward_marginal_mean_var(float(sched.alpha_bars[t - 1]) if t else 1.0, M, P)
        sd = math.sqrt(float(var))
        assert abs(float(x.mean()) - float(mean)) < 4 * sd / math.sqrt(n), (t, float(x.mean()), float(mean))
        assert abs(float(x.std()) - sd) < 4 * sd / math.sqrt(2 * n), (t, float(x.std()), sd)
    # the data: N(3, 0.5^2) within the notebook's goal of 0.005
    assert abs(float(run.x0.mean()) - M) < 0.005 and abs(float(run.x0.std()) - P) < 0.005
    np.testing.assert_array_equal(np.asarray(run.paths[T]), np.asarray(start[:3]))
    np.testing.assert_array_equal(np.asarray(run.paths[0]), np.asarray(run.x0[:3]))
    np.testing.assert_array_equal(np.asarray(run.paths[10]), np.asarray(run.at(10)[:3]))


@pytest.mark.parametrize("name,step", [
    ("shortcut", analytic.shortcut_reverse_mean_var),
    ("ddpm, beta_tilde", analytic.ddpm_reverse_mean_var),
    ("ddpm, beta", functools.partial(analytic.ddpm_reverse_mean_var, variance="beta")),
])
def test_sampler_final_moments_match_exact_propagation(start_and_noises, name, step):
    """Every sampler here is a linear-Gaussian chain: its x_0 is N(mean, var) with moments we can propagate."""
    x_T, noises = start_and_noises
    n = x_T.shape[0]
    want_mean, want_var = _chain_moments(lambda t: _linear_step(step, t), 0.0, 1.0)
    run = analytic.reverse_gaussian(step, x_T, noises, BETAS, M, P)
    sd = math.sqrt(want_var)
    assert abs(float(run.x0.mean()) - want_mean) < 4 * sd / math.sqrt(n), name
    assert abs(float(run.x0.std()) - sd) < 4 * sd / math.sqrt(2 * n), name
    if name == "ddpm, beta_tilde":   # the notebook's finding: right mean, too narrow at T = 50
        assert sd == pytest.approx(0.4397, abs=1e-3)
    if name == "ddpm, beta":         # with no noise at t = 1 (DDPM's convention), close to the data's 0.5
        assert sd == pytest.approx(0.497, abs=2e-3)


def test_sampler_walks_backwards_with_noise_t_minus_1_at_step_t():
    """A step that adds t and unit-variance noise: x_t = x_T + sum_{s > t} (s + noises[s - 1])."""
    x_T = jnp.arange(4.0)
    noises = jax.random.normal(jax.random.key(0), (T, 4))
    run = analytic.reverse_gaussian(lambda x, t, b, m, p: (x + t, 1.0), x_T, noises, BETAS, M, P,
                                    keep_steps=(T, 30, 0), n_paths=4)
    increments = np.arange(1, T + 1)[:, None] + np.asarray(noises)
    for t in (0, 1, 30, T):
        want = np.asarray(x_T) + increments[t:].sum(0)
        np.testing.assert_allclose(np.asarray(run.paths[t]), want, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(run.at(30)), np.asarray(run.paths[30]))
    np.testing.assert_allclose(np.asarray(run.at(0)), np.asarray(run.x0))
    np.testing.assert_array_equal(np.asarray(run.at(T)), np.asarray(x_T))
    with pytest.raises(ValueError, match=r"step 5 was not kept"):
        run.at(5)


# ------------------------------------------------------------------ argument errors


X = np.ones(3, np.float32)


@pytest.mark.parametrize("fn", [analytic.gaussian_reverse_mean_var, analytic.shortcut_reverse_mean_var,
                                analytic.ddpm_reverse_mean_var])
def test_step_argument_errors(fn):
    name = fn.__name__
    with pytest.raises(ValueError, match=rf"{name}: argument `t` must lie in 1\.\.50"):
        fn(X, 0, BETAS, M, P)
    with pytest.raises(ValueError, match=rf"{name}: argument `t` must lie in 1\.\.50"):
        fn(X, np.array([1, 51]), BETAS, M, P)
    with pytest.raises(TypeError, match=rf"{name}: argument `t` must be an integer"):
        fn(X, 2.0, BETAS, M, P)
    for p in (0.0, -0.5, math.nan):
        with pytest.raises(ValueError, match=rf"{name}: argument `p` must be positive"):
            fn(X, 3, BETAS, M, p)
    with pytest.raises(ValueError, match=rf"{name}: argument `m` must be finite"):
        fn(X, 3, BETAS, math.inf, P)
    with pytest.raises(ValueError, match=rf"{name}: argument `betas` must lie strictly between 0 and 1"):
        fn(X, 3, np.array([0.1, 1.0, 0.2]), M, P)
    with pytest.raises(ValueError, match=rf"{name}: argument `betas` must have 1 dimension"):
        fn(X, 1, BETAS[None], M, P)
    with pytest.raises(TypeError, match=rf"{name}"):
        fn(X, 3, BETAS, M)


def test_other_argument_errors():
    with pytest.raises(ValueError, match=r"ddpm_reverse_mean_var: argument `variance` must be one of"):
        analytic.ddpm_reverse_mean_var(X, 3, BETAS, M, P, variance="tilde")
    with pytest.raises(ValueError, match=r"gaussian_eps: argument `alpha_bar_t` must lie strictly between 0 and 1"):
        analytic.gaussian_eps(X, 1.0, M, P)
    with pytest.raises(ValueError, match=r"forward_marginal_mean_var: argument `p` must be positive"):
        analytic.forward_marginal_mean_var(0.5, M, 0.0)
    x_T, noises = np.zeros(8, np.float32), np.zeros((T, 8), np.float32)
    step = analytic.gaussian_reverse_mean_var
    with pytest.raises(ValueError, match=r"reverse_gaussian: argument `noises` must have shape \(T, N\) = \(50, 8\)"):
        analytic.reverse_gaussian(step, x_T, noises[1:], BETAS, M, P)
    with pytest.raises(TypeError, match=r"reverse_gaussian: argument `keep_steps` must be a tuple"):
        analytic.reverse_gaussian(step, x_T, noises, BETAS, M, P, keep_steps=[10])
    with pytest.raises(ValueError, match=r"reverse_gaussian: argument `keep_steps` must hold distinct steps in 0\.\.50"):
        analytic.reverse_gaussian(step, x_T, noises, BETAS, M, P, keep_steps=(51,))
    with pytest.raises(ValueError, match=r"reverse_gaussian: argument `n_paths`"):
        analytic.reverse_gaussian(step, x_T, noises, BETAS, M, P, n_paths=9)
    with pytest.raises(TypeError, match=r"reverse_gaussian: argument `step` must be a function"):
        analytic.reverse_gaussian("exact", x_T, noises, BETAS, M, P)
    with pytest.raises(ValueError, match=r"reverse_gaussian: argument `x_T` must have 1 dimension"):
        analytic.reverse_gaussian(step, x_T[None], noises, BETAS, M, P)


# ------------------------------------------------------------------ the exercise


def test_checker_passes_the_reference_and_fails_each_slip_with_its_hint(capsys):
    ex = grading.exercise("gaussian_reverse_mean_var")
    check("gaussian_reverse_mean_var", unmarked(ex.reference), seed=301, edge_cases=True)  # its body, untagged
    assert "passed 10 of 10" in capsys.readouterr().out
    assert len(ex.hints) >= 3
    for hint in ex.hints:
        with pytest.raises(CheckFailure) as info:
            check("gaussian_reverse_mean_var", hint.variant)
        assert f"Likely slip: {hint.message}" in str(info.value)


def test_checker_explains_tuple_outputs():
    ref = unmarked(analytic.gaussian_reverse_mean_var)  # the body, without the reference tag
    with pytest.raises(CheckFailure, match=r"returned a single .*expected a tuple of 2 values \(mean, variance\)"):
        check("gaussian_reverse_mean_var", lambda x, t, b, m, p: ref(x, t, b, m, p)[0])
    with pytest.raises(CheckFailure, match=r"returned 3 values, expected 2"):
        check("gaussian_reverse_mean_var", lambda x, t, b, m, p: (*ref(x, t, b, m, p), 0.0))
    with pytest.raises(CheckFailure, match=r"the variance is wrong: .* values are wrong"):
        check("gaussian_reverse_mean_var", lambda x, t, b, m, p: (ref(x, t, b, m, p)[0], 1.01 * ref(x, t, b, m, p)[1]))
    with pytest.raises(CheckFailure, match=r"the mean is wrong: wrong shape"):
        check("gaussian_reverse_mean_var", lambda x, t, b, m, p: (ref(x, t, b, m, p)[0][None], ref(x, t, b, m, p)[1]))
    # a list instead of a tuple, and a variance broadcast to x_t's shape, are both right
    check("gaussian_reverse_mean_var", lambda x, t, b, m, p: list(ref(x, t, b, m, p)))
    # a single-output exercise says so when it gets a tuple
    with pytest.raises(CheckFailure, match=r"returned a tuple of 2 values, expected a single array"):
        check("forward_variance", lambda b: (b, b))
