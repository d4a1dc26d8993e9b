"""Schedules against independent float64 numpy computations."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from course_utils import schedules


def cosine_betas_np(T, s=0.008, max_beta=0.999):
    """Nichol & Dhariwal (2021), eq. 17, in float64, written from the paper."""
    t = np.arange(T + 1, dtype=np.float64)
    f = np.cos(((t / T + s) / (1 + s)) * np.pi / 2) ** 2
    alpha_bar = f / f[0]
    return np.minimum(1 - alpha_bar[1:] / alpha_bar[:-1], max_beta), alpha_bar


def alpha_bars_loop(betas):
    out, prod = [], 1.0
    for b in np.asarray(betas, dtype=np.float64).tolist():
        prod *= 1.0 - b
        out.append(prod)
    return np.array(out)


# ------------------------------------------------------------------ linear


@pytest.mark.parametrize("T,start,end", [(1, 1e-4, 0.02), (2, 1e-4, 0.02), (10, 1e-3, 0.2),
                                         (1000, 1e-4, 0.02), (37, 0.05, 0.5)])
def test_linear_betas_matches_numpy_linspace(T, start, end):
    got = schedules.linear_betas(T, start, end)
    assert got.shape == (T,)
    assert got.dtype == jnp.float32
    want = np.linspace(start, end, T)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-6, atol=1e-9)
    assert math.isclose(float(got[0]), start, rel_tol=1e-6)
    if T > 1:
        assert math.isclose(float(got[-1]), end, rel_tol=1e-6)
        # equally spaced, step (end - start) / (T - 1)
        np.testing.assert_allclose(np.diff(np.asarray(got, np.float64)), (end - start) / (T - 1),
                                   rtol=1e-3, atol=1e-8)


def test_linear_betas_defaults_are_ho_et_al():
    got = np.asarray(schedules.linear_betas(1000), np.float64)
    np.testing.assert_allclose(got[[0, 499, 999]], [1e-4, 1e-4 + 499 * (0.02 - 1e-4) / 999, 0.02], rtol=1e-6)


# ------------------------------------------------------------------ cosine


@pytest.mark.parametrize("T", [1, 2, 5, 10, 50, 200, 1000])
def test_cosine_betas_matches_float64_paper_formula(T):
    got = schedules.cosine_betas(T)
    assert got.shape == (T,)
    assert got.dtype == jnp.float32
    want, _ = cosine_betas_np(T)
    # float32 evaluation of 1 - ab_t / ab_{t-1}: about 1e-7 absolute early on
    # (cancellation), up to ~5e-5 near t = T where cos(...) is close to 0.
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=2e-4, atol=5e-7)


@pytest.mark.parametrize("T,s,max_beta", [(20, 0.02, 0.5), (100, 0.001, 0.9), (5, 0.008, 0.2), (1000, 0.008, 0.999)])
def test_cosine_betas_with_other_parameters(T, s, max_beta):
    got = np.asarray(schedules.cosine_betas(T, s, max_beta), np.float64)
    want, _ = cosine_betas_np(T, s, max_beta)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=5e-7)


def test_cosine_betas_clips_at_max_beta():
    T, s = 10, 0.008
    unclipped, _ = cosine_betas_np(T, s, max_beta=np.inf)
    assert unclipped[-1] > 0.999  # without the clip beta_T is (numerically) 1
    got = np.asarray(schedules.cosine_betas(T, s, 0.999), np.float64)
    assert got[-1] == pytest.approx(0.999, rel=1e-6)
    assert np.all(got <= np.float32(0.999))
    # a low max_beta clips several steps, and leaves the rest untouched
    max_beta = 0.2
    got = np.asarray(schedules.cosine_betas(T, s, max_beta), np.float64)
    clipped = unclipped > max_beta
    assert 1 < clipped.sum() < T
    np.testing.assert_allclose(got[clipped], max_beta, rtol=1e-6)
    np.testing.assert_allclose(got[~clipped], unclipped[~clipped], rtol=2e-4, atol=5e-7)


def test_cosine_alpha_bars_follow_f_t_over_f_0():
    T = 200
    betas = schedules.cosine_betas(T)
    _, alpha_bar = cosine_betas_np(T)
    got = alpha_bars_loop(betas)
    # the clip only changes the last step(s); compare before it
    np.testing.assert_allclose(got[:-1], alpha_bar[1:-1], rtol=1e-4, atol=1e-7)
    assert np.all(np.diff(np.asarray(betas, np.float64)) > 0)


# ------------------------------------------------------------------ constant


@pytest.mark.parametrize("T,beta", [(1, 0.5), (7, 0.02), (1000, 1e-3)])
def test_constant_betas(T, beta):
    got = schedules.constant_betas(T, beta)
    assert got.shape == (T,)
    assert got.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(got), np.full(T, beta, np.float32))


def test_constant_betas_default():
    np.testing.assert_array_equal(np.asarray(schedules.constant_betas(3)), np.float32([0.02] * 3))


# ------------------------------------------------------------------ alpha_bars, SNR


@pytest.mark.parametrize("make", [
    lambda: np.linspace(1e-4, 0.02, 1000),
    lambda: np.random.default_rng(0).uniform(1e-3, 0.5, 37),
    lambda: np.array([0.3]),
])
def test_alpha_bars_is_running_product(make):
    betas = make().astype(np.float32)
    got = schedules.alpha_bars(jnp.asarray(betas))
    assert got.shape == betas.shape
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got, np.float64), alpha_bars_loop(betas), rtol=1e-5, atol=1e-30)


def test_alpha_bars_accepts_numpy_arrays():
    np.testing.assert_allclose(np.asarray(schedules.alpha_bars(np.array([0.5, 0.5, 0.5]))), [0.5, 0.25, 0.125], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(schedules.alpha_bars(np.array([0.1, 0.2]))), [0.9, 0.72], rtol=1e-6)


def test_signal_to_noise():
    betas = np.random.default_rng(1).uniform(1e-3, 0.2, 50).astype(np.float32)
    ab = alpha_bars_loop(betas)
    got = schedules.signal_to_noise(jnp.asarray(betas))
    assert got.shape == (50,)
    np.testing.assert_allclose(np.asarray(got, np.float64), ab / (1 - ab), rtol=1e-4)
    assert np.all(np.diff(np.asarray(got)) < 0)  # SNR decreases with t


@pytest.mark.parametrize("T", [1, 2, 50, 1000])
def test_schedule_summary_against_a_float64_loop(T):
    """alpha_bar, the SNR and the posterior variance of notebook 01's summary, each from its definition in float64
    (the posterior variance as the variance of x_{t-1} given x_t and x_0 by Gaussian conditioning)."""
    betas = np.sort(np.random.default_rng(T).uniform(1e-3, 0.3 * min(1, 50 / T), T)).astype(np.float32)  # no underflow
    ab = alpha_bars_loop(betas)
    ab_prev = np.array([1.0] + list(ab[:-1]))
    # x_{t-1} | x_0 has variance 1 - ab_prev; x_t = sqrt(1 - beta) x_{t-1} + sqrt(beta) eps: condition on x_t
    var_prev, b = 1 - ab_prev, np.asarray(betas, np.float64)
    conditioned = var_prev - (1 - b) * var_prev**2 / ((1 - b) * var_prev + b)
    got = schedules.schedule_summary(jnp.asarray(betas))
    assert isinstance(got, schedules.ScheduleSummary) and all(np.shape(x) == (T,) for x in got)
    np.testing.assert_allclose(np.asarray(got.alpha_bars, np.float64), ab, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(got.snr, np.float64), ab / (1 - ab), rtol=1e-4)
    np.testing.assert_allclose(np.asarray(got.posterior_variances, np.float64), conditioned, rtol=1e-4, atol=1e-7)
    assert float(got.posterior_variances[0]) == 0.0


# ------------------------------------------------------------------ Schedule


@pytest.fixture(scope="module")
def betas():
    return np.random.default_rng(2).uniform(1e-3, 0.3, 25).astype(np.float32)


def test_make_schedule_fields(betas):
    sch = schedules.make_schedule(jnp.asarray(betas))
    assert isinstance(sch, schedules.Schedule)
    assert sch.T == 25
    for field in sch:
        assert field.shape == (25,)
        assert field.dtype == jnp.float32
    b = betas.astype(np.float64)
    ab = alpha_bars_loop(b)
    ab_prev = np.concatenate([[1.0], ab[:-1]])
    np.testing.assert_array_equal(np.asarray(sch.betas), betas)
    np.testing.assert_allclose(np.asarray(sch.alphas, np.float64), 1 - b, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(sch.alpha_bars, np.float64), ab, rtol=1e-5)
    assert float(sch.alpha_bars_prev[0]) == 1.0
    np.testing.assert_allclose(np.asarray(sch.alpha_bars_prev, np.float64), ab_prev, rtol=1e-5)
    want_var = (1 - ab_prev) / (1 - ab) * b
    assert float(sch.posterior_variances[0]) == 0.0
    np.testing.assert_allclose(np.asarray(sch.posterior_variances, np.float64), want_var, rtol=1e-4, atol=1e-9)
    # tilde beta_t <= beta_t
    assert np.all(np.asarray(sch.posterior_variances) <= betas * (1 + 1e-6))


def test_schedule_at_every_step(betas):
    sch = schedules.make_schedule(jnp.asarray(betas))
    b = betas.astype(np.float64)
    ab = alpha_bars_loop(b)
    for t in range(1, sch.T + 1):
        at = sch.at(t)
        assert isinstance(at, schedules.Schedule)
        assert at.betas.shape == ()
        assert float(at.betas) == betas[t - 1]
        assert float(at.alphas) == pytest.approx(1 - b[t - 1], rel=1e-6)
        assert float(at.alpha_bars) == pytest.approx(ab[t - 1], rel=1e-5)
        assert float(at.alpha_bars_prev) == pytest.approx(ab[t - 2] if t > 1 else 1.0, rel=1e-5)
        abp = ab[t - 2] if t > 1 else 1.0
        assert float(at.posterior_variances) == pytest.approx((1 - abp) / (1 - ab[t - 1]) * b[t - 1], rel=1e-4, abs=1e-9)


def test_schedule_at_vector_of_steps(betas):
    sch = schedules.make_schedule(jnp.asarray(betas))
    t = np.array([1, 25, 3, 3])
    at = sch.at(t)
    np.testing.assert_array_equal(np.asarray(at.betas), betas[t - 1])
    np.testing.assert_array_equal(np.asarray(at.alpha_bars), np.asarray(sch.alpha_bars)[t - 1])
    at = sch.at(jnp.asarray(t))
    np.testing.assert_array_equal(np.asarray(at.betas), betas[t - 1])


@pytest.mark.parametrize("t", [0, 26, -1, np.array([1, 0]), np.array([25, 26])])
def test_schedule_at_out_of_range(betas, t):
    sch = schedules.make_schedule(jnp.asarray(betas))
    with pytest.raises(ValueError, match=r"Schedule\.at: argument `t` must lie in 1\.\.25"):
        sch.at(t)


@pytest.mark.parametrize("t", [1.0, np.array([1.5]), 2.0 + 0j])
def test_schedule_at_rejects_non_integer_steps(betas, t):
    sch = schedules.make_schedule(jnp.asarray(betas))
    with pytest.raises(TypeError, match=r"Schedule\.at: argument `t` must be an integer"):
        sch.at(t)


def test_schedule_is_a_pytree_usable_under_jit_and_vmap(betas):
    sch = schedules.make_schedule(jnp.asarray(betas))
    f = jax.jit(lambda s, t: s.at(t).alpha_bars)
    assert float(f(sch, 4)) == pytest.approx(float(sch.alpha_bars[3]))
    got = jax.vmap(lambda t: sch.at(t).posterior_variances)(jnp.arange(1, 26))
    np.testing.assert_array_equal(np.asarray(got), np.asarray(sch.posterior_variances))


# ------------------------------------------------------------------ transforms, .raw


def test_schedule_functions_have_raw_and_work_under_jit():
    for fn in (schedules.linear_betas, schedules.cosine_betas, schedules.constant_betas,
               schedules.alpha_bars, schedules.signal_to_noise, schedules.make_schedule, schedules.schedule_summary):
        assert callable(fn.raw)
    f = jax.jit(schedules.linear_betas.raw, static_argnums=0)
    np.testing.assert_allclose(np.asarray(f(5, 0.1, 0.5)), np.linspace(0.1, 0.5, 5), rtol=1e-6)
    g = jax.jit(lambda b: schedules.alpha_bars(b)[-1])
    assert float(g(jnp.float32([0.5, 0.5]))) == pytest.approx(0.25)


def test_grad_of_alpha_bar_T():
    betas = jnp.float32([0.1, 0.2, 0.3])
    # d/d beta_i prod_j (1 - beta_j) = -prod_{j != i} (1 - beta_j)
    g = jax.grad(lambda b: schedules.alpha_bars(b)[-1])(betas)
    np.testing.assert_allclose(np.asarray(g), [-0.8 * 0.7, -0.9 * 0.7, -0.9 * 0.8], rtol=1e-6)
