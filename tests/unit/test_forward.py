"""The forward process against numpy closed forms, a numpy loop, and sample statistics."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from course_utils import forward

SHAPES = [(), (3,), (2, 3), (4, 1, 2)]


def _rng(*seed):
    return np.random.default_rng(list(seed))


def _f32(rng, shape):
    return np.asarray(rng.standard_normal(shape), np.float32)


# ------------------------------------------------------------------ one step


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("beta", [1e-4, 0.02, 0.5, 0.999])
def test_forward_mean(shape, beta):
    x = _f32(_rng(0, len(shape)), shape)
    got = forward.forward_mean(x, np.float32(beta))
    assert got.shape == shape
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got, np.float64), math.sqrt(1 - np.float32(beta)) * x.astype(np.float64),
                               rtol=1e-6, atol=1e-7)


def test_forward_mean_broadcasts_one_beta_per_example():
    rng = _rng(1)
    x = _f32(rng, (6, 3))
    beta = rng.uniform(0.01, 0.9, (6, 1)).astype(np.float32)
    got = forward.forward_mean(x, beta)
    np.testing.assert_allclose(np.asarray(got), np.sqrt(1 - beta.astype(np.float64)) * x, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("beta", [1e-4, 0.3, 0.999, np.float32(0.02), np.array([0.1, 0.2], np.float32)])
def test_forward_variance(beta):
    got = forward.forward_variance(beta)
    assert got.dtype == jnp.float32
    assert got.shape == np.shape(beta)
    np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(beta, np.float32), rtol=0)


@pytest.mark.parametrize("shape", SHAPES)
def test_forward_step(shape):
    rng = _rng(2, len(shape))
    x, noise = _f32(rng, shape), _f32(rng, shape)
    beta = np.float32(rng.uniform(1e-3, 0.99))
    got = forward.forward_step(x, beta, noise)
    assert got.shape == shape
    assert got.dtype == jnp.float32
    b = float(beta)
    want = math.sqrt(1 - b) * x.astype(np.float64) + math.sqrt(b) * noise.astype(np.float64)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-5, atol=1e-6)


def test_forward_step_without_noise_is_the_mean():
    x = _f32(_rng(3), (5,))
    np.testing.assert_allclose(np.asarray(forward.forward_step(x, 0.3, np.zeros(5, np.float32))),
                               np.sqrt(0.7) * x, rtol=1e-6)


# ------------------------------------------------------------------ diffuse


def diffuse_np(x0, betas, noises):
    xs = [np.asarray(x0, np.float64)]
    for beta, noise in zip(np.asarray(betas, np.float64), np.asarray(noises, np.float64)):
        xs.append(math.sqrt(1 - beta) * xs[-1] + math.sqrt(beta) * noise)
    return np.stack(xs)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("T", [1, 2, 30])
def test_diffuse_matches_numpy_loop(shape, T):
    rng = _rng(4, T, len(shape))
    x0 = _f32(rng, shape)
    betas = np.linspace(rng.uniform(1e-3, 0.05), rng.uniform(0.1, 0.5), T).astype(np.float32)
    noises = _f32(rng, (T,) + shape)
    xs = forward.diffuse(x0, betas, noises)
    assert xs.shape == (T + 1,) + shape
    assert xs.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(xs[0]), x0)
    np.testing.assert_allclose(np.asarray(xs, np.float64), diffuse_np(x0, betas, noises), rtol=1e-5, atol=1e-5)


def test_diffuse_with_zero_noise_scales_by_sqrt_alpha_bar():
    betas = np.float32([0.1, 0.2, 0.3, 0.4])
    x0 = np.float32([1.0, -2.0])
    xs = np.asarray(forward.diffuse(x0, betas, np.zeros((4, 2), np.float32)), np.float64)
    ab = np.cumprod(1 - betas.astype(np.float64))
    np.testing.assert_allclose(xs[1:], np.sqrt(ab)[:, None] * x0, rtol=1e-6)


# ------------------------------------------------------------------ q_sample


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("ab", [1e-3, 0.5, 0.999, 1.0])
def test_q_sample(shape, ab):
    rng = _rng(5, len(shape))
    x0, noise = _f32(rng, shape), _f32(rng, shape)
    got = forward.q_sample(x0, np.float32(ab), noise)
    assert got.shape == shape
    assert got.dtype == jnp.float32
    a = float(np.float32(ab))
    want = math.sqrt(a) * x0.astype(np.float64) + math.sqrt(1 - a) * noise.astype(np.float64)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-5, atol=1e-6)


def test_q_sample_at_alpha_bar_one_is_x0():
    x0 = _f32(_rng(6), (7,))
    np.testing.assert_array_equal(np.asarray(forward.q_sample(x0, 1.0, _f32(_rng(7), (7,)))), x0)


def test_q_sample_one_alpha_bar_per_example():
    rng = _rng(8)
    x0, noise = _f32(rng, (5, 3)), _f32(rng, (5, 3))
    ab = rng.uniform(0.01, 0.99, (5, 1)).astype(np.float32)
    got = forward.q_sample(x0, ab, noise)
    a = ab.astype(np.float64)
    np.testing.assert_allclose(np.asarray(got), np.sqrt(a) * x0 + np.sqrt(1 - a) * noise, rtol=1e-5, atol=1e-6)


def test_q_sample_equals_diffuse_when_noises_are_combined():
    """Two steps: x_2 = sqrt(a1 a2) x0 + sqrt(1 - a1 a2) eps with eps the normalised combined noise."""
    rng = _rng(9)
    x0, n1, n2 = _f32(rng, (4,)), _f32(rng, (4,)), _f32(rng, (4,))
    b1, b2 = 0.1, 0.25
    xs = forward.diffuse(x0, np.float32([b1, b2]), np.stack([n1, n2]))
    a1, a2 = 1 - np.float32(b1), 1 - np.float32(b2)
    combined = math.sqrt(a2 * (1 - a1)) * n1 + math.sqrt(1 - a2) * n2
    eps = combined / math.sqrt(1 - a1 * a2)
    np.testing.assert_allclose(np.asarray(forward.q_sample(x0, a1 * a2, eps.astype(np.float32))),
                               np.asarray(xs[2]), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ statistics


N_SAMPLES = 200_000
T_STATS = 50


@pytest.fixture(scope="module")
def samples():
    """x_t for N scalars started at x0, by iterating diffuse and by jumping with q_sample."""
    betas = np.linspace(1e-4, 0.02, T_STATS).astype(np.float32)
    ab = np.cumprod(1 - betas.astype(np.float64))
    x0_value = 1.5
    x0 = jnp.full((N_SAMPLES,), x0_value, jnp.float32)
    k1, k2, k3 = jax.random.split(jax.random.key(1234), 3)
    xs = np.asarray(forward.diffuse(x0, betas, jax.random.normal(k1, (T_STATS, N_SAMPLES))), np.float64)
    jumps = {}
    for t, key in ((20, k2), (T_STATS, k3)):
        eps = jax.random.normal(key, (N_SAMPLES,))
        jumps[t] = np.asarray(forward.q_sample(x0, np.float32(ab[t - 1]), eps), np.float64)
    return dict(betas=betas, ab=ab, x0=x0_value, xs=xs, jumps=jumps)


@pytest.mark.parametrize("t", [20, T_STATS])
def test_diffuse_and_q_sample_give_the_same_distribution(samples, t):
    n = N_SAMPLES
    a = samples["xs"][t]
    b = samples["jumps"][t]
    ab = samples["ab"][t - 1]
    mean, var = math.sqrt(ab) * samples["x0"], 1 - ab
    for x in (a, b):
        # closed form: N(sqrt(ab) x0, 1 - ab); 5 standard errors
        assert abs(x.mean() - mean) < 5 * math.sqrt(var / n)
        assert abs(x.var(ddof=1) - var) < 5 * var * math.sqrt(2 / (n - 1))
        # Gaussian: 68.27 % within one standard deviation, no excess kurtosis
        p = math.erf(1 / math.sqrt(2))
        inside = np.mean(np.abs(x - mean) < math.sqrt(var))
        assert abs(inside - p) < 5 * math.sqrt(p * (1 - p) / n)
        z = (x - mean) / math.sqrt(var)
        assert abs(np.mean(z**4) - 3) < 5 * math.sqrt(96 / n)
    # the two samples against each other
    assert abs(a.mean() - b.mean()) < 5 * math.sqrt(a.var() / n + b.var() / n)
    se_var = math.sqrt(2 / (n - 1)) * math.hypot(a.var(), b.var())
    assert abs(a.var(ddof=1) - b.var(ddof=1)) < 5 * se_var
    qs = [0.01, 0.1, 0.5, 0.9, 0.99]
    # quantiles: standard error sqrt(q (1 - q) / n) / density, density >= that at 2.4 sigma
    np.testing.assert_allclose(np.quantile(a, qs), np.quantile(b, qs),
                               atol=5 * math.sqrt(2 * 0.01 * 0.99 / n) / (math.exp(-2.4**2 / 2) / math.sqrt(2 * math.pi * var)))


def test_diffuse_covariance_between_steps(samples):
    """Cov(x_s, x_t) = sqrt(ab_t / ab_s) (1 - ab_s) for s < t: the steps share their noise."""
    n = N_SAMPLES
    s, t = 20, T_STATS
    ab_s, ab_t = samples["ab"][s - 1], samples["ab"][t - 1]
    xs, xt = samples["xs"][s], samples["xs"][t]
    cov = np.mean((xs - xs.mean()) * (xt - xt.mean()))
    want = math.sqrt(ab_t / ab_s) * (1 - ab_s)
    se = math.sqrt(((1 - ab_s) * (1 - ab_t) + want**2) / n)
    assert abs(cov - want) < 5 * se
    # and q_sample jumps with independent noise are uncorrelated across steps
    j20, j50 = samples["jumps"][20], samples["jumps"][T_STATS]
    assert abs(np.mean((j20 - j20.mean()) * (j50 - j50.mean()))) < 5 * math.sqrt((1 - ab_s) * (1 - ab_t) / n)


# ------------------------------------------------------------------ transforms, .raw


def test_forward_functions_have_raw():
    for fn in (forward.forward_mean, forward.forward_variance, forward.forward_step, forward.diffuse, forward.q_sample):
        assert callable(fn.raw)
        assert fn.__name__ == fn.raw.__name__


def test_forward_under_jit_vmap_and_grad():
    rng = _rng(10)
    x0, noise = _f32(rng, (8, 3)), _f32(rng, (8, 3))
    ab = rng.uniform(0.05, 0.95, 8).astype(np.float32)
    got = jax.vmap(forward.q_sample)(x0, ab, noise)
    want = np.sqrt(ab.astype(np.float64))[:, None] * x0 + np.sqrt(1 - ab.astype(np.float64))[:, None] * noise
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
    got = jax.jit(forward.forward_step)(x0, 0.3, noise)
    np.testing.assert_allclose(np.asarray(got), np.sqrt(0.7) * x0 + np.sqrt(0.3) * noise, rtol=1e-5, atol=1e-6)
    got = jax.jit(jax.vmap(forward.forward_step.raw, in_axes=(0, 0, 0)))(x0, ab, noise)
    np.testing.assert_allclose(np.asarray(got), np.sqrt(1 - ab.astype(np.float64))[:, None] * x0
                               + np.sqrt(ab.astype(np.float64))[:, None] * noise, rtol=1e-5, atol=1e-6)


def test_grad_through_diffuse_is_sqrt_alpha_bar():
    betas = np.float32([0.05, 0.1, 0.2])
    noises = _f32(_rng(11), (3, 2))
    g = jax.grad(lambda x0: forward.diffuse(x0, betas, noises)[-1].sum())(jnp.float32([0.3, -1.0]))
    np.testing.assert_allclose(np.asarray(g), [math.sqrt(0.95 * 0.9 * 0.8)] * 2, rtol=1e-6)
    g = jax.grad(lambda b: forward.forward_step(jnp.float32(2.0), b, jnp.float32(0.5)))(jnp.float32(0.36))
    # d/db [sqrt(1 - b) x + sqrt(b) e] = -x / (2 sqrt(1 - b)) + e / (2 sqrt(b))
    assert float(g) == pytest.approx(-2.0 / (2 * 0.8) + 0.5 / (2 * 0.6), rel=1e-5)


def test_diffuse_is_vmappable_over_a_batch_of_noises():
    betas = np.float32([0.1, 0.2])
    x0 = np.float32([1.0, 2.0])
    noises = _f32(_rng(12), (5, 2, 2))
    got = jax.vmap(forward.diffuse, in_axes=(None, None, 0))(x0, betas, noises)
    assert got.shape == (5, 3, 2)
    for k in range(5):
        np.testing.assert_allclose(np.asarray(got[k], np.float64), diffuse_np(x0, betas, noises[k]), rtol=1e-5, atol=1e-6)
