"""Posterior and losses against numpy formulas, Bayes' rule and the identities that link them."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from course_utils import forward, losses

SHAPES = [(), (5,), (3, 4), (2, 3, 2)]


def _rng(*seed):
    return np.random.default_rng(list(seed))


def _f32(rng, shape):
    return np.asarray(rng.standard_normal(shape), np.float32)


def _step(rng):
    """A consistent (beta_t, alpha_bar_t, alpha_bar_{t-1}) in float32."""
    beta = np.float32(rng.uniform(1e-3, 0.5))
    abp = np.float32(rng.uniform(0.01, 0.999))
    return beta, np.float32(abp * (1 - beta)), abp


def _f64(*xs):
    return [np.asarray(x, np.float64) for x in xs]


# ------------------------------------------------------------------ posterior


@pytest.mark.parametrize("seed", range(8))
def test_posterior_mean_formula(seed):
    rng = _rng(0, seed)
    shape = SHAPES[seed % 4]
    x0, xt = _f32(rng, shape), _f32(rng, shape)
    b, ab, abp = _step(rng)
    got = losses.posterior_mean(x0, xt, b, ab, abp)
    assert got.shape == shape
    assert got.dtype == jnp.float32
    x0_, xt_, b_, ab_, abp_ = _f64(x0, xt, b, ab, abp)
    want = np.sqrt(abp_) * b_ / (1 - ab_) * x0_ + np.sqrt(1 - b_) * (1 - abp_) / (1 - ab_) * xt_
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", range(8))
def test_posterior_variance_formula(seed):
    b, ab, abp = _step(_rng(1, seed))
    got = losses.posterior_variance(b, ab, abp)
    assert got.shape == ()
    assert got.dtype == jnp.float32
    b_, ab_, abp_ = _f64(b, ab, abp)
    assert float(got) == pytest.approx(float((1 - abp_) / (1 - ab_) * b_), rel=1e-5)
    assert 0 < float(got) < float(b)


def bayes_posterior(x0, xt, beta, alpha_bar_prev):
    """q(x_{t-1} | x_t, x0) by completing the square, in float64.

    q(x_{t-1} | x0) = N(sqrt(abp) x0, 1 - abp) and q(x_t | x_{t-1}) = N(sqrt(1 - beta) x_{t-1}, beta):
    as a function of x_{t-1} the product is Gaussian with precision 1/(1 - abp) + (1 - beta)/beta
    and precision-weighted mean sqrt(abp) x0 / (1 - abp) + sqrt(1 - beta) x_t / beta.
    """
    prior_var = 1 - alpha_bar_prev
    precision = 1 / prior_var + (1 - beta) / beta
    var = 1 / precision
    mean = var * (np.sqrt(alpha_bar_prev) * x0 / prior_var + np.sqrt(1 - beta) * xt / beta)
    return mean, var


@pytest.mark.parametrize("seed", range(20))
def test_posterior_is_the_gaussian_conditional(seed):
    rng = _rng(2, seed)
    shape = SHAPES[seed % 4]
    x0, xt = _f32(rng, shape), _f32(rng, shape)
    b, ab, abp = _step(rng)
    want_mean, want_var = bayes_posterior(*_f64(x0, xt, b, abp))
    np.testing.assert_allclose(np.asarray(losses.posterior_mean(x0, xt, b, ab, abp), np.float64), want_mean,
                               rtol=1e-4, atol=1e-5)
    assert float(losses.posterior_variance(b, ab, abp)) == pytest.approx(float(want_var), rel=1e-4)


def test_posterior_by_sampling():
    """Draw (x_{t-1}, x_t) from the forward process, keep the pairs with x_t near a value, compare."""
    rng = _rng(3)
    n = 400_000
    b, abp, x0 = 0.2, 0.6, 0.7
    ab = abp * (1 - b)
    x_prev = math.sqrt(abp) * x0 + math.sqrt(1 - abp) * rng.standard_normal(n)
    x_t = math.sqrt(1 - b) * x_prev + math.sqrt(b) * rng.standard_normal(n)
    target, width = 0.9, 0.02
    keep = np.abs(x_t - target) < width
    m = keep.sum()
    assert m > 5000
    mean = float(losses.posterior_mean(np.float32(x0), np.float32(target), b, ab, abp))
    var = float(losses.posterior_variance(b, ab, abp))
    sel = x_prev[keep]
    # the window adds a tiny spread: sqrt(1 - b) * x_{t-1} moves by at most `width`
    assert abs(sel.mean() - mean) < 5 * math.sqrt(var / m) + width
    assert abs(sel.var() - var) < 5 * var * math.sqrt(2 / m) + 2 * width**2


def test_posterior_at_the_first_step_is_x0():
    """t = 1: alpha_bar_0 = 1, so q(x_0 | x_1, x_0) is a point mass at x_0."""
    x0, xt = _f32(_rng(4), (6,)), _f32(_rng(5), (6,))
    b = np.float32(0.1)
    np.testing.assert_allclose(np.asarray(losses.posterior_mean(x0, xt, b, 1 - b, 1.0)), x0, rtol=1e-5, atol=1e-6)
    assert float(losses.posterior_variance(b, 1 - b, 1.0)) == 0.0


# ------------------------------------------------------------------ mean_from_noise


@pytest.mark.parametrize("seed", range(8))
def test_mean_from_noise_formula(seed):
    rng = _rng(6, seed)
    shape = SHAPES[seed % 4]
    xt, eps = _f32(rng, shape), _f32(rng, shape)
    b, ab, _ = _step(rng)
    got = losses.mean_from_noise(xt, eps, b, ab)
    assert got.shape == shape
    assert got.dtype == jnp.float32
    xt_, eps_, b_, ab_ = _f64(xt, eps, b, ab)
    want = (xt_ - b_ / np.sqrt(1 - ab_) * eps_) / np.sqrt(1 - b_)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", range(20))
def test_mean_from_noise_inverts_q_sample(seed):
    """With the true noise, the mean from the noise is the posterior mean."""
    rng = _rng(7, seed)
    shape = SHAPES[seed % 4]
    x0, eps = _f32(rng, shape), _f32(rng, shape)
    b, ab, abp = _step(rng)
    xt = forward.q_sample(x0, ab, eps)
    got = losses.mean_from_noise(xt, eps, b, ab)
    want = losses.posterior_mean(x0, xt, b, ab, abp)
    # coefficients up to 1 / (1 - alpha_bar_t) ~ 1e3 amplify float32 rounding
    scale = 1 + float(b) / math.sqrt(1 - float(ab)) / math.sqrt(1 - float(b))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=2e-6 * scale)


# ------------------------------------------------------------------ losses


@pytest.mark.parametrize("seed", range(8))
def test_mean_loss_formula(seed):
    rng = _rng(8, seed)
    shape = SHAPES[seed % 4]
    m, mt = _f32(rng, shape), _f32(rng, shape)
    s2 = np.float32(rng.uniform(1e-3, 1))
    got = losses.mean_loss(m, mt, s2)
    assert got.shape == ()
    assert got.dtype == jnp.float32
    m_, mt_, s2_ = _f64(m, mt, s2)
    assert float(got) == pytest.approx(float(np.sum((m_ - mt_) ** 2) / (2 * s2_)), rel=1e-5)


@pytest.mark.parametrize("seed", range(8))
def test_noise_loss_formula(seed):
    rng = _rng(9, seed)
    shape = SHAPES[seed % 4]
    e, et = _f32(rng, shape), _f32(rng, shape)
    b, ab, _ = _step(rng)
    s2 = np.float32(rng.uniform(1e-3, 1))
    got = losses.noise_loss(e, et, b, 1 - b, ab, s2)
    assert got.shape == ()
    e_, et_, b_, ab_, s2_ = _f64(e, et, b, ab, s2)
    want = b_**2 / (2 * s2_ * (1 - b_) * (1 - ab_)) * np.sum((e_ - et_) ** 2)
    assert float(got) == pytest.approx(float(want), rel=1e-5)


@pytest.mark.parametrize("seed", range(8))
def test_noise_loss_weight_is_the_ratio_of_the_two_losses(seed):
    """lambda_t against an independent computation in float64: the mean loss of mu_tilde and the mean implied by
    eps_theta, divided by ||eps - eps_theta||^2 (Derivation 2 of notebook 02, done numerically)."""
    rng = _rng(14, seed)
    b, ab, abp = (np.float64(v) for v in _step(rng))
    s2 = b if seed % 2 else (1 - abp) / (1 - ab) * b + 1e-4
    x0, eps, eps_theta = (rng.standard_normal(5) for _ in range(3))
    xt = np.sqrt(ab) * x0 + np.sqrt(1 - ab) * eps
    c0, ct = np.sqrt(abp) * b / (1 - ab), np.sqrt(1 - b) * (1 - abp) / (1 - ab)   # Bayes' rule, x0 and x_t
    x0_theta = (xt - np.sqrt(1 - ab) * eps_theta) / np.sqrt(ab)                   # the x0 that eps_theta implies
    by_means = np.sum((c0 * x0 + ct * xt - (c0 * x0_theta + ct * xt)) ** 2) / (2 * s2)
    want = by_means / np.sum((eps - eps_theta) ** 2)
    got = losses.noise_loss_weight(np.float32(b), np.float32(1 - b), np.float32(ab), np.float32(s2))
    assert got.shape == () and got.dtype == jnp.float32
    assert float(got) == pytest.approx(want, rel=1e-4)


def test_noise_loss_weight_broadcasts_over_a_schedule():
    from course_utils import schedules

    s = schedules.make_schedule(schedules.linear_betas(1000))
    w = losses.noise_loss_weight(s.betas, s.alphas, s.alpha_bars, s.betas)
    assert w.shape == (1000,)
    assert float(w[0]) == pytest.approx(1 / (2 * (1 - 1e-4)), rel=1e-3)        # 1 - alpha_bar_1 = beta_1
    np.testing.assert_allclose(np.asarray(losses.noise_loss(np.ones(3), np.zeros(3), s.betas[5], s.alphas[5],
                                                            s.alpha_bars[5], s.betas[5])), 3 * float(w[5]), rtol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
def test_simple_loss(shape):
    rng = _rng(10, len(shape))
    e, et = _f32(rng, shape), _f32(rng, shape)
    got = losses.simple_loss(e, et)
    assert got.shape == ()
    assert got.dtype == jnp.float32
    assert float(got) == pytest.approx(float(np.sum((e.astype(np.float64) - et) ** 2)), rel=1e-5)
    assert float(losses.simple_loss(e, e)) == 0.0


def test_mean_loss_equals_noise_loss_on_many_inputs():
    """L_{t-1} written with means equals it written with noises (Ho et al. 2020, eq. 8 -> 12)."""
    rng = _rng(11)
    worst = 0.0
    for i in range(200):
        shape = SHAPES[i % 4]
        x0, eps, eps_theta = _f32(rng, shape), _f32(rng, shape), _f32(rng, shape)
        b, ab, abp = _step(rng)
        s2 = np.float32(b if i % 2 else losses.posterior_variance(b, ab, abp) + 1e-4)
        xt = forward.q_sample(x0, ab, eps)
        lhs = float(losses.mean_loss(losses.posterior_mean(x0, xt, b, ab, abp),
                                     losses.mean_from_noise(xt, eps_theta, b, ab), s2))
        rhs = float(losses.noise_loss(eps, eps_theta, b, 1 - b, ab, s2))
        # float32: both sides are sums of squared differences of O(1 / (1 - ab)) terms
        rel = abs(lhs - rhs) / rhs
        worst = max(worst, rel)
    assert worst < 1e-3, worst


def test_mean_loss_equals_noise_loss_batched_with_vmap():
    rng = _rng(12)
    n = 64
    x0, eps, eps_theta = _f32(rng, (n, 3, 2)), _f32(rng, (n, 3, 2)), _f32(rng, (n, 3, 2))
    steps = [_step(rng) for _ in range(n)]
    b, ab, abp = (np.array(col, np.float32) for col in zip(*steps))
    s2 = b
    xt = forward.q_sample(x0, ab[:, None, None], eps)
    mu = jax.vmap(losses.posterior_mean)(x0, xt, b, ab, abp)
    mu_theta = jax.vmap(losses.mean_from_noise)(xt, eps_theta, b, ab)
    lhs = np.asarray(jax.vmap(losses.mean_loss)(mu, mu_theta, s2), np.float64)
    rhs = np.asarray(jax.vmap(losses.noise_loss)(eps, eps_theta, b, 1 - b, ab, s2), np.float64)
    assert lhs.shape == rhs.shape == (n,)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-3)


# ------------------------------------------------------------------ transforms, .raw


def test_loss_functions_have_raw():
    for fn in (losses.posterior_mean, losses.posterior_variance, losses.mean_from_noise,
               losses.mean_loss, losses.noise_loss, losses.noise_loss_weight, losses.simple_loss):
        assert callable(fn.raw)


def test_grads_of_losses():
    rng = _rng(13)
    e, et = _f32(rng, (3, 2)), _f32(rng, (3, 2))
    g = jax.grad(losses.simple_loss, argnums=1)(e, et)
    np.testing.assert_allclose(np.asarray(g), -2 * (e - et), rtol=1e-5, atol=1e-6)
    b, ab, s2 = np.float32(0.2), np.float32(0.5), np.float32(0.1)
    g = jax.grad(losses.noise_loss, argnums=1)(e, et, b, 1 - b, ab, s2)
    w = 0.04 / (2 * 0.1 * 0.8 * 0.5)
    np.testing.assert_allclose(np.asarray(g), -2 * w * (e - et), rtol=1e-5, atol=1e-6)
    g = jax.grad(losses.mean_loss, argnums=2)(e, et, s2)
    assert float(g) == pytest.approx(-float(np.sum((e.astype(np.float64) - et) ** 2)) / (2 * 0.01), rel=1e-5)
    g = jax.jit(jax.grad(lambda x0: losses.posterior_mean(x0, jnp.float32(0.0), b, ab, np.float32(0.625))))(jnp.float32(1.0))
    assert float(g) == pytest.approx(math.sqrt(0.625) * 0.2 / 0.5, rel=1e-5)
