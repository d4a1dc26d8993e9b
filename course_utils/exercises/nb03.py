"""Exercises of notebook 03 (the reverse process in 1D, analytically).

``gaussian_reverse_mean_var(x_t, t, betas, m, p)`` returns a tuple
``(mean, variance)``; the checker compares the two on their own. The time step
``t`` is passed as an int32 array (one step per value of ``x_t``, the same
shape), so under ``jax.jit`` it is traced, exactly as inside ``lax.scan``: an
answer must index with it (``betas[t - 1]``) and must not branch on it in
Python. The variance then has the shape of ``t``, which is also the shape of
the mean, so an answer that broadcasts its variance to ``x_t``'s shape is
right too.
"""

import jax.numpy as jnp
import numpy as np

from .. import analytic, losses
from ..grading import Exercise, Hint, register
from .common import f32 as _f32, shape as _shape


def _reverse_case(rng):
    s = _shape(rng)
    T = int(rng.choice([1, 10, 50, 100]))   # few distinct shapes: each new one compiles the answer anew
    beta_lo = rng.uniform(1e-3, 0.05)
    betas = np.linspace(beta_lo, rng.uniform(beta_lo, 0.4), T).astype(np.float32)
    t = np.asarray(rng.integers(1, T + 1, size=s), np.int32)
    m, p = _f32(rng.uniform(-4, 4)), _f32(rng.uniform(0.1, 2.0))
    x_t = np.asarray(rng.normal(0, 1.5, size=s), np.float32)
    return x_t, t, betas, m, p


def _coefficients(betas, t):
    alphas = 1 - betas
    alpha_bars = jnp.cumprod(alphas)
    ab_prev = jnp.concatenate([jnp.ones(1, alpha_bars.dtype), alpha_bars[:-1]])
    return betas[t - 1], alphas[t - 1], alpha_bars[t - 1], ab_prev[t - 1]


def _conditioned(x_t, t, betas, m, p, *, prior_ab=None, data_var=None, prior_mean=None, scale=None):
    """Gaussian conditioning of x_{t-1} on x_t, with one ingredient replaceable (to build the slips)."""
    b, a, ab, abp = _coefficients(betas, t)
    ab_p = abp if prior_ab is None else prior_ab(ab, abp)
    var0 = p**2 if data_var is None else data_var(p)
    mu_prev = jnp.sqrt(ab_p) * m if prior_mean is None else prior_mean(ab_p, m)
    v_prev = ab_p * var0 + 1 - ab_p
    k = jnp.sqrt(a) if scale is None else scale(a)          # x_t = k x_{t-1} + sqrt(beta) eps
    v_t = k**2 * v_prev + b
    mean = mu_prev + k * v_prev / v_t * (x_t - k * mu_prev)
    return mean, v_prev * b / v_t


def _shortcut(with_variance):
    def variant(x_t, t, betas, m, p):
        b, a, ab, abp = _coefficients(betas, t)
        x0 = jnp.full(jnp.shape(x_t), m)
        mean = losses.posterior_mean.raw(x0, x_t, b, ab, abp)
        var = losses.posterior_variance.raw(b, ab, abp)
        if with_variance:
            var = var + (jnp.sqrt(abp) * b / (1 - ab)) ** 2 * p**2
        return mean, var
    return variant


def _as_std(x_t, t, betas, m, p):
    mean, var = analytic.gaussian_reverse_mean_var.raw(x_t, t, betas, m, p)
    return mean, jnp.sqrt(var)


def _swapped(x_t, t, betas, m, p):
    mean, var = analytic.gaussian_reverse_mean_var.raw(x_t, t, betas, m, p)
    return var, mean


def _edge(T, t_value, p=0.5, shape=(4,)):
    betas = np.linspace(0.02, 0.3, T).astype(np.float32)
    x_t = np.linspace(-2, 2, int(np.prod(shape))).reshape(shape).astype(np.float32)
    return x_t, np.full(shape, t_value, np.int32), betas, _f32(3.0), _f32(p)


register(Exercise(
    name="gaussian_reverse_mean_var",
    reference=analytic.gaussian_reverse_mean_var,
    make_case=_reverse_case,
    output_names=("mean", "variance"),
    # float32: the mean is a difference of terms of size |m| + |x_t|
    rtol=1e-4, atol=2e-5,
    edge_cases=[
        _edge(50, 1),                    # alpha_bar_0 = 1: x_{t-1} is x_0 itself
        _edge(50, 50),                   # the first reverse step, from almost pure noise
        _edge(1, 1, shape=(3,)),         # a single step
        _edge(50, 10, p=0.01),           # nearly a point mass: the forward posterior with x0 = m
        _edge(50, 10, p=2.0, shape=()),
    ],
    hints=[
        Hint(_shortcut(False),
             "you used the forward posterior q(x_{t-1} | x_t, x_0) with x_0 = m. That ignores the spread p of the data "
             "(the variance is too small) and what x_t tells us about x_0. Condition the Gaussian pair (x_{t-1}, x_t) instead."),
        Hint(_shortcut(True),
             "that is the shortcut (x_0 replaced by m, plus its variance c0^2 p^2). It treats x_0 as if x_t said nothing about it; "
             "the exact step conditions the Gaussian pair (x_{t-1}, x_t)."),
        Hint(lambda x, t, b, m, p: _conditioned(x, t, b, m, p, prior_ab=lambda ab, abp: ab),
             "off by one: x_{t-1} has mean sqrt(alpha_bar_{t-1}) m and variance alpha_bar_{t-1} p^2 + 1 - alpha_bar_{t-1} "
             "(with alpha_bar_0 = 1); you used alpha_bar_t."),
        Hint(lambda x, t, b, m, p: _conditioned(x, t, b, m, p, data_var=lambda p: p),
             "p is the standard deviation of the data; its variance is p**2."),
        Hint(lambda x, t, b, m, p: _conditioned(x, t, b, m, p, scale=lambda a: 1.0),
             "x_t given x_{t-1} has mean sqrt(alpha_t) x_{t-1}: the factor sqrt(alpha_t) = sqrt(1 - beta_t) is missing."),
        Hint(lambda x, t, b, m, p: _conditioned(x, t, b, m, p, prior_mean=lambda ab, m: ab * m),
             "the mean of x_{t-1} is sqrt(alpha_bar_{t-1}) m: a square root is missing."),
        Hint(_as_std, "return the variance of x_{t-1} given x_t, not its standard deviation."),
        Hint(_swapped, "return the two values in the order (mean, variance)."),
    ],
))
