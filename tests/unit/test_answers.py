"""Answers written the way students write them, through the checker: every alternative correct answer passes, and
every wrong one fails with a message that names its slip (a registered hint, or the checker's generic diagnosis).

For each exercise ``ANSWERS[name]`` holds ``ok`` (correct answers in other forms: different algebra, loops where
the exercise allows them, library formulations) and ``wrong`` (real slips, each with the text its message must
contain). :func:`test_counts` keeps at least 3 alternatives and 5 slips per exercise and prints the table.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import course_utils as cu
from course_utils import embeddings, grading
from course_utils.grading import CheckFailure, check

ANSWERS: dict = {}
SLIP = "Likely slip: "  # the prefix of a named hint


def answers(name, ok, wrong, n_cases=4, edge_cases=True):
    ANSWERS[name] = dict(ok=ok, wrong=wrong, n_cases=n_cases, edge_cases=edge_cases)


# ------------------------------------------------------------------ notebook 01

answers("forward_mean", ok=[
    lambda x, b: x * (1 - b) ** 0.5,
    lambda x, b: jnp.exp(0.5 * jnp.log1p(-b)) * x,
    lambda x, b: jnp.multiply(jnp.power(1.0 - b, 0.5), x),
    lambda x, b: jnp.sqrt(1 - b) * jnp.asarray(x, jnp.float32),
], wrong=[
    (lambda x, b: (1 - b) * x, SLIP + "the mean is sqrt(1 - beta) * x_prev: the square root is missing."),
    (lambda x, b: jnp.sqrt(b) * x, SLIP + "the mean scales x_prev by sqrt(1 - beta), not sqrt(beta)."),
    (lambda x, b: jnp.sqrt(1 - b) + 0 * x, SLIP + "the mean depends on x_prev"),
    (lambda x, b: x, SLIP + "x_prev must be scaled down"),
    (lambda x, b: -jnp.sqrt(1 - b) * x, "with the sign flipped"),
    (lambda x, b: 0.5 * jnp.sqrt(1 - b) * x, "times a constant factor 0.5"),
])

answers("forward_variance", ok=[
    lambda b: b * 1.0,
    lambda b: jnp.float32(1.0) * b,
    lambda b: jnp.square(jnp.sqrt(b)),
    lambda b: jnp.asarray(b) + 0.0,
], wrong=[
    (lambda b: jnp.sqrt(b), SLIP + "you returned the standard deviation sqrt(beta)"),
    (lambda b: 1 - b, SLIP + "the variance of the added noise is beta, not 1 - beta."),
    (lambda b: b**2, SLIP + "the variance is beta, not beta squared."),
    (lambda b: jnp.sqrt(1 - b), SLIP + "sqrt(1 - beta) is the factor of the mean"),
    (lambda b: 2 * b, "on every test input your output is the expected one times a constant factor 2 "),
])

answers("forward_step", ok=[
    lambda x, b, e: x * (1 - b) ** 0.5 + e * b**0.5,
    lambda x, b, e: jnp.sqrt(1 - b) * x + jnp.sqrt(b) * e,
    lambda x, b, e: (lambda m, s: m + s * e)(jnp.sqrt(1 - b) * x, jnp.sqrt(b)),
    lambda x, b, e: jnp.sqrt(1 - b) * x + jnp.exp(0.5 * jnp.log(b)) * e,
], wrong=[
    (lambda x, b, e: jnp.sqrt(1 - b) * x + b * e, SLIP + "the noise is scaled by the standard deviation sqrt(beta)"),
    (lambda x, b, e: (1 - b) * x + jnp.sqrt(b) * e, SLIP + "the mean is sqrt(1 - beta) * x_prev: a square root is missing"),
    (lambda x, b, e: jnp.sqrt(1 - b) * x + e, SLIP + "the noise must be scaled by sqrt(beta)."),
    (lambda x, b, e: jnp.sqrt(1 - b) * x, SLIP + "the noise term sqrt(beta) * noise is missing."),
    (lambda x, b, e: jnp.sqrt(1 - b) * x - jnp.sqrt(b) * e, SLIP + "the noise is added (+ sqrt(beta) * noise)"),
    (lambda x, b, e: jnp.sqrt(b) * x + jnp.sqrt(1 - b) * e, SLIP + "the two square roots are swapped"),
])


def _linear_loop_safe(T, a, b):
    t = jnp.arange(1, T + 1, dtype=jnp.float32)
    return a + (t - 1) / max(T - 1, 1) * (b - a)


answers("linear_betas", ok=[
    lambda T, a, b: jnp.linspace(a, b, T),
    _linear_loop_safe,
    lambda T, a, b: a + (b - a) * jnp.arange(T) / jnp.maximum(T - 1, 1),
    lambda T, a, b: jnp.linspace(0.0, 1.0, T) * (b - a) + a,
    lambda T, a, b: jnp.where(T == 1, a, a + jnp.arange(T) * ((b - a) / max(T - 1, 1))),
    lambda T, a, b: jnp.stack([a + t / max(T - 1, 1) * (b - a) for t in range(T)]),  # right but slow (issue 27)
], wrong=[
    (lambda T, a, b: jnp.linspace(a, b, T + 1)[1:], SLIP + "off by one: T values from beta_start to beta_end"),
    (lambda T, a, b: jnp.linspace(a, b, T + 1)[:-1], SLIP + "off by one: the last value must be beta_end itself"),
    (lambda T, a, b: a + jnp.arange(T) / (T - 1) * (b - a), "NaN or infinite (a division by zero"),
    (lambda T, a, b: jnp.linspace(b, a, T), SLIP + "the betas increase from beta_start"),
    (lambda T, a, b: a + jnp.arange(T) / T * (b - a), SLIP + "divide by T - 1"),
])


def _cosine_clip(T, s, m):
    t = jnp.arange(T + 1) / T
    f = jnp.cos((t + s) / (1 + s) * jnp.pi / 2) ** 2
    return jnp.clip(1 - f[1:] / f[:-1], 0.0, m)


def _cos_f(T, s, square=True, offset=True):
    t = jnp.arange(T + 1, dtype=jnp.float32) / T
    c = jnp.cos(((t + s) / (1 + s) if offset else t) * jnp.pi / 2)
    return c**2 if square else c


answers("cosine_betas", ok=[
    _cosine_clip,
    lambda T, s, m: jnp.minimum(1 - (lambda ab: ab[1:] / ab[:-1])(_cos_f(T, s) / _cos_f(T, s)[0]), m),
    lambda T, s, m: jnp.minimum(1 - jnp.exp(jnp.diff(jnp.log(_cos_f(T, s)))), m),
    lambda T, s, m: jnp.minimum(1.0 - _cos_f(T, s)[1:] / _cos_f(T, s)[:-1], m),
], wrong=[
    (lambda T, s, m: 1 - _cos_f(T, s)[1:] / _cos_f(T, s)[:-1], SLIP + "the betas must be clipped at max_beta"),
    (lambda T, s, m: jnp.minimum(1 - _cos_f(T, s, square=False)[1:] / _cos_f(T, s, square=False)[:-1], m),
     SLIP + "f(t) is the cosine squared"),
    (lambda T, s, m: jnp.minimum(1 - _cos_f(T, s, offset=False)[1:] / _cos_f(T, s, offset=False)[:-1], m),
     SLIP + "the offset s is missing"),
    (lambda T, s, m: jnp.minimum(_cos_f(T, s)[1:] / _cos_f(T, s)[:-1], m), SLIP + "beta_t = 1 - alpha_bar_t / alpha_bar_{t-1}"),
    (lambda T, s, m: jnp.minimum(1 - _cos_f(T, s)[1:] / _cos_f(T, s)[0], m), SLIP + "ratios of neighbours"),
])

answers("my_betas", ok=[
    lambda T: jnp.linspace(1e-4, 0.02, T) * jnp.minimum(1000 / T, 40),
    lambda T: jnp.clip(jnp.linspace(1e-4, 8.0 / T, T), 1e-5, 0.999),
    lambda T: 1 - jnp.exp(-jnp.linspace(0.1, 10.0, T) / T * 2) * 1.0,
    lambda T: cu.schedules.cosine_betas(T),
], wrong=[
    (lambda T: jnp.linspace(1e-4, 20.0 / T, T), "for T = 2 every beta must lie strictly between 0 and 1"),
    (lambda T: jnp.linspace(0.02, 1e-4, T), "must not decrease"),
    (lambda T: jnp.linspace(1e-4, 0.02, T), "for T = 50 alpha_bar_T"),
    (lambda T: jnp.full((T - 1,), 0.1), "must return shape"),
    (lambda T: jnp.linspace(0.0, 0.3, T), "strictly between 0 and 1"),
    (lambda T: jnp.full((T,), 3.5 / T), "for T = 2 every beta must lie strictly between 0 and 1"),
])


def _alpha_bars_scan(b):
    def step(carry, beta):
        carry = carry * (1 - beta)
        return carry, carry
    return jax.lax.scan(step, jnp.float32(1.0), b)[1]


def _alpha_bars_loop(b):
    out, prod = [], 1.0
    for i in range(b.shape[0]):
        prod = prod * (1 - b[i])
        out.append(prod)
    return jnp.stack(out)


answers("alpha_bars", ok=[
    lambda b: jnp.exp(jnp.cumsum(jnp.log1p(-b))),
    _alpha_bars_scan,
    lambda b: jnp.cumprod(1.0 - b, axis=0),
    lambda b: jax.lax.associative_scan(jnp.multiply, 1 - b),
    _alpha_bars_loop,  # right but slow: run op by op (issue 27)
], wrong=[
    (lambda b: jnp.cumprod(b), SLIP + "take the cumulative product of 1 - betas"),
    (lambda b: 1 - jnp.cumprod(1 - b), SLIP + "alpha_bar_t is the product itself"),
    (lambda b: jnp.concatenate([jnp.ones(1), jnp.cumprod(1 - b)[:-1]]), SLIP + "off by one: alpha_bar_1"),
    (lambda b: jnp.prod(1 - b) + 0 * b, SLIP + "return every partial product"),
    (lambda b: 1 - jnp.cumsum(b), SLIP + "multiply the alphas"),
], n_cases=8)


def _summary(prev=None, snr=None, var=None, ab_fn=lambda b: jnp.cumprod(1 - b)):
    def summary(betas):
        ab = ab_fn(betas)
        abp = jnp.concatenate([jnp.ones(1), ab[:-1]]) if prev is None else prev(ab)
        return cu.schedules.ScheduleSummary(ab, ab / (1 - ab) if snr is None else snr(ab),
                                            (1 - abp) / (1 - ab) * betas if var is None else var(betas, ab, abp))
    return summary


def _summary_scan(betas):
    """alpha_bar and alpha_bar_{t-1} in one scan (the carry is the previous value), returned as a plain tuple."""
    def step(prev, beta):
        ab = prev * (1 - beta)
        return ab, (ab, prev)
    _, (ab, abp) = jax.lax.scan(step, jnp.float32(1.0), betas)
    return ab, ab / (1 - ab), betas * (1 - abp) / (1 - ab)


answers("schedule_summary", ok=[
    _summary(),
    _summary_scan,
    _summary(prev=lambda ab: jnp.pad(ab[:-1], (1, 0), constant_values=1.0), snr=lambda ab: 1 / (1 / ab - 1)),
    _summary(ab_fn=lambda b: jnp.exp(jnp.cumsum(jnp.log1p(-b))),
             var=lambda b, ab, abp: b * (1 - abp) / (1 - abp * (1 - b))),       # 1 - alpha_bar_t = 1 - alpha_t alpha_bar_{t-1}
    lambda b: list(_summary()(b)),
], wrong=[
    (_summary(prev=lambda ab: jnp.roll(ab, 1)), SLIP + "jnp.roll(alpha_bars, 1) wraps alpha_bar_T around"),
    (_summary(prev=lambda ab: jnp.concatenate([jnp.zeros(1), ab[:-1]])), SLIP + "alpha_bar_0 is 1"),
    (_summary(prev=lambda ab: ab), SLIP + "the posterior variance needs alpha_bar_{t-1}"),
    (_summary(snr=lambda ab: (1 - ab) / ab), SLIP + "not its inverse"),
    (_summary(snr=lambda ab: jnp.sqrt(ab / (1 - ab))), SLIP + "a ratio of variances"),
    (_summary(var=lambda b, ab, abp: (1 - ab) / (1 - abp) * b), SLIP + "upside down"),
    (_summary(ab_fn=lambda b: jnp.cumprod(b)), "the alpha_bars is wrong"),
    (lambda b: dict(_summary()(b)._asdict()), "expected a tuple of 3 values"),
    (_summary(prev=lambda ab: jnp.concatenate([jnp.ones(1), ab[1:]])), "the posterior_variances is wrong"),
], n_cases=6)


def _diffuse_scan_index(x0, betas, noises):
    def step(x, t):
        x = jnp.sqrt(1 - betas[t]) * x + jnp.sqrt(betas[t]) * noises[t]
        return x, x
    _, xs = jax.lax.scan(step, x0, jnp.arange(betas.shape[0]))
    return jnp.concatenate([x0[None], xs])


def _diffuse_scan_carry_out(x0, betas, noises):
    def step(x, bn):
        b, n = bn
        return jnp.sqrt(1 - b) * x + jnp.sqrt(b) * n, x
    last, xs = jax.lax.scan(step, x0, (betas, noises))
    return jnp.concatenate([xs, last[None]])


def _diffuse_fori(x0, betas, noises):
    def body(t, xs):
        return xs.at[t + 1].set(jnp.sqrt(1 - betas[t]) * xs[t] + jnp.sqrt(betas[t]) * noises[t])
    xs = jnp.zeros((betas.shape[0] + 1,) + x0.shape, x0.dtype).at[0].set(x0)
    return jax.lax.fori_loop(0, betas.shape[0], body, xs)


def _diffuse_with(update, prepend=True, stack_prev=False):
    def diffuse(x0, betas, noises):
        def step(x, bn):
            b, n = bn
            new = update(x, b, n, x0)
            return new, (x if stack_prev else new)
        _, xs = jax.lax.scan(step, x0, (betas, noises))
        return jnp.concatenate([x0[None], xs]) if prepend else xs
    return diffuse


def _diffuse_python_loop(x0, betas, noises):
    xs = [x0]
    for t in range(betas.shape[0]):
        xs.append(jnp.sqrt(1 - betas[t]) * xs[-1] + jnp.sqrt(betas[t]) * noises[t])
    return jnp.stack(xs)


_RIGHT = lambda x, b, n, x0: jnp.sqrt(1 - b) * x + jnp.sqrt(b) * n  # noqa: E731

answers("diffuse", ok=[_diffuse_scan_index, _diffuse_scan_carry_out, _diffuse_fori, _diffuse_with(_RIGHT)], wrong=[
    (_diffuse_with(_RIGHT, prepend=False), SLIP + "return x_0 too"),
    (_diffuse_with(lambda x, b, n, x0: jnp.sqrt(1 - b) * x0 + jnp.sqrt(b) * n), SLIP + "each step starts from the previous"),
    (_diffuse_with(lambda x, b, n, x0: jnp.sqrt(1 - b) * x + b * n), SLIP + "the noise is scaled by sqrt(beta_t), not beta_t."),
    (_diffuse_with(lambda x, b, n, x0: (1 - b) * x + jnp.sqrt(b) * n), "may call your `forward_step`"),
    (_diffuse_with(_RIGHT, stack_prev=True), SLIP + "each entry is the state after its step"),
    (_diffuse_python_loop, "loop over the time steps with jax.lax.scan"),
])

answers("q_sample", ok=[
    lambda x, a, e: x * a**0.5 + e * (1 - a) ** 0.5,
    lambda x, a, e: jnp.sqrt(a) * (x + jnp.sqrt((1 - a) / a) * e) if False else jnp.sqrt(a) * x + jnp.sqrt(1 - a) * e,
    lambda x, a, e: jnp.sqrt(jnp.asarray(a, jnp.float32)) * x + jnp.sqrt(1.0 - jnp.asarray(a, jnp.float32)) * e,
    lambda x, a, e: jnp.exp(0.5 * jnp.log(a)) * x + jnp.sqrt(1 - a) * e,
], wrong=[
    (lambda x, a, e: a * x + (1 - a) * e, SLIP + "both coefficients are square roots"),
    (lambda x, a, e: jnp.sqrt(a) * x + (1 - a) * e, SLIP + "the noise is scaled by sqrt(1 - alpha_bar), not 1 - alpha_bar."),
    (lambda x, a, e: jnp.sqrt(a) * x + jnp.sqrt(a) * e, SLIP + "the noise is scaled by sqrt(1 - alpha_bar)."),
    (lambda x, a, e: jnp.sqrt(1 - a) * x + jnp.sqrt(a) * e, SLIP + "the two coefficients are swapped"),
    (lambda x, a, e: jnp.sqrt(a) * x - jnp.sqrt(1 - a) * e, SLIP + "the noise is added"),
    (lambda x, a, e: jnp.sqrt(a) * x + 0 * e, SLIP + "the noise term sqrt(1 - alpha_bar) * noise is missing"),
])

# ------------------------------------------------------------------ notebook 02

answers("posterior_mean", ok=[
    lambda x0, xt, b, ab, abp: (jnp.sqrt(abp) * b * x0 + jnp.sqrt(1 - b) * (1 - abp) * xt) / (1 - ab),
    lambda x0, xt, b, ab, abp: abp**0.5 * b / (1 - ab) * x0 + (1 - b) ** 0.5 * (1 - abp) / (1 - ab) * xt,
    lambda x0, xt, b, ab, abp: (lambda c0, ct: c0 * x0 + ct * xt)(jnp.sqrt(abp) * b / (1 - ab), jnp.sqrt(1 - b) * (1 - abp) / (1 - ab)),
], wrong=[
    (lambda x0, xt, b, ab, abp: jnp.sqrt(1 - b) * (1 - abp) / (1 - ab) * x0 + jnp.sqrt(abp) * b / (1 - ab) * xt,
     SLIP + "the two coefficients are swapped"),
    (lambda x0, xt, b, ab, abp: jnp.sqrt(abp) * b / (1 - ab) * x0 + jnp.sqrt(ab) * (1 - abp) / (1 - ab) * xt,
     SLIP + "the coefficient of x_t has sqrt(alpha_t)"),
    (lambda x0, xt, b, ab, abp: jnp.sqrt(ab) * b / (1 - ab) * x0 + jnp.sqrt(1 - b) * (1 - abp) / (1 - ab) * xt,
     SLIP + "the coefficient of x0 has sqrt(alpha_bar_{t-1})"),
    (lambda x0, xt, b, ab, abp: abp * b / (1 - ab) * x0 + (1 - b) * (1 - abp) / (1 - ab) * xt, SLIP + "square roots are missing"),
    (lambda x0, xt, b, ab, abp: jnp.sqrt(abp) * b / (1 - ab) * x0 + (1 - b) * (1 - abp) / (1 - ab) * xt,
     SLIP + "the coefficient of x_t has sqrt(alpha_t) = sqrt(1 - beta_t): the square root is missing"),
    (lambda x0, xt, b, ab, abp: jnp.sqrt(abp) * b / (1 - abp) * x0 + jnp.sqrt(1 - b) * (1 - ab) / (1 - abp) * xt,
     SLIP + "alpha_bar_t and alpha_bar_{t-1} are swapped"),
])

answers("posterior_variance", ok=[
    lambda b, ab, abp: b * (1 - abp) / (1 - ab),
    lambda b, ab, abp: (b - b * abp) / (1 - ab),
    lambda b, ab, abp: jnp.divide(1 - abp, 1 - ab) * b,
], wrong=[
    (lambda b, ab, abp: (1 - abp) / (1 - ab), SLIP + "multiplies beta_t"),
    (lambda b, ab, abp: (1 - ab) / (1 - abp) * b, SLIP + "the ratio is upside down"),
    (lambda b, ab, abp: b + 0 * ab, SLIP + "that is the forward variance"),
    (lambda b, ab, abp: jnp.sqrt((1 - abp) / (1 - ab) * b), SLIP + "you returned a standard deviation"),
    (lambda b, ab, abp: (1 - abp) / (1 - ab) * (1 - b), SLIP + "the ratio multiplies beta_t, not alpha_t"),
    (lambda b, ab, abp: (abp - ab) / (1 - ab) * b, SLIP + "the numerator is 1 - alpha_bar_{t-1}"),
])

answers("mean_from_noise", ok=[
    lambda x, e, b, ab: x / jnp.sqrt(1 - b) - b / (jnp.sqrt(1 - ab) * jnp.sqrt(1 - b)) * e,
    lambda x, e, b, ab: (x - (1 - (1 - b)) / (1 - ab) ** 0.5 * e) * (1 - b) ** -0.5,
    lambda x, e, b, ab: jax.lax.rsqrt(1 - b) * (x - b * jax.lax.rsqrt(1 - ab) * e),
], wrong=[
    (lambda x, e, b, ab: (x - b / (1 - ab) * e) / jnp.sqrt(1 - b), SLIP + "the coefficient of the noise depends on 1 - alpha_bar_t in the wrong way"),
    (lambda x, e, b, ab: (x - b / jnp.sqrt(1 - ab) * e) / (1 - b), SLIP + "divided by the wrong power of alpha_t"),
    (lambda x, e, b, ab: (x - b / jnp.sqrt(1 - ab) * e) / jnp.sqrt(ab), SLIP + "divided by a function of alpha_bar_t"),
    (lambda x, e, b, ab: x - b / jnp.sqrt(1 - ab) * e, SLIP + "the coefficient of x_t is 1 in your answer"),
    (lambda x, e, b, ab: (x + b / jnp.sqrt(1 - ab) * e) / jnp.sqrt(1 - b), SLIP + "the sign of the noise term is wrong"),
    (lambda x, e, b, ab: x / jnp.sqrt(1 - b) - b / jnp.sqrt(1 - ab) * e, SLIP + "the coefficient of x_t is right but that of the noise is not"),
])

answers("mean_loss", ok=[
    lambda m, mt, s2: 0.5 * jnp.vdot(m - mt, m - mt) / s2,
    lambda m, mt, s2: jnp.sum(jnp.square(mt - m)) / 2 / s2,
    lambda m, mt, s2: (jnp.linalg.norm(jnp.ravel(m - mt)) ** 2) / (2 * s2),
    lambda m, mt, s2: jnp.mean((m - mt) ** 2) * jnp.size(m) / (2 * s2),
], wrong=[
    (lambda m, mt, s2: jnp.sum((m - mt) ** 2) / s2, SLIP + "the factor 1/2 is missing"),
    (lambda m, mt, s2: jnp.sum((m - mt) ** 2) / (2 * jnp.sqrt(s2)), SLIP + "sigma2 is already the variance"),
    (lambda m, mt, s2: jnp.mean((m - mt) ** 2) / (2 * s2), SLIP + "sum the squared errors"),
    (lambda m, mt, s2: (m - mt) ** 2 / (2 * s2), SLIP + "return a single number"),
    (lambda m, mt, s2: jnp.sqrt(jnp.sum((m - mt) ** 2)) / (2 * s2), SLIP + "the squared norm is needed"),
    (lambda m, mt, s2: jnp.sum((m - mt) ** 2) * s2 / 2, SLIP + "divide by 2 * sigma2, do not multiply"),
])


def _w(b, a, ab, s2):
    return b**2 / (2 * s2 * a * (1 - ab))


def _weight_by_means(b, a, ab, s2):
    """The weight as a student might get it: the squared coefficient of the noise in the mean, over 2 sigma2."""
    coef = b / (jnp.sqrt(a) * jnp.sqrt(1 - ab))
    return coef**2 / (2 * s2)


answers("noise_loss_weight", ok=[
    _w,
    _weight_by_means,
    lambda b, a, ab, s2: (b / jnp.sqrt(a * (1 - ab))) ** 2 * 0.5 / s2,
    lambda b, a, ab, s2: b * b / (2 * s2 * (1 - b) * (1 - ab)),           # alpha_t written as 1 - beta_t
    lambda b, a, ab, s2: jnp.exp(2 * jnp.log(b) - jnp.log(2 * s2) - jnp.log(a) - jnp.log1p(-ab)),
], wrong=[
    (lambda b, a, ab, s2: b / (2 * s2 * a * (1 - ab)), SLIP + "the weight's dependence on beta_t is wrong"),
    (lambda b, a, ab, s2: b**2 / (s2 * a * (1 - ab)), SLIP + "the factor 1/2 is missing"),
    (lambda b, a, ab, s2: b**2 / (2 * s2 * ab * (1 - ab)), SLIP + "the weight's dependence on alpha_t and alpha_bar_t is wrong"),
    (lambda b, a, ab, s2: b**2 / (2 * s2 * a * (1 - a)), SLIP + "the weight's dependence on alpha_bar_t is wrong"),
    (lambda b, a, ab, s2: b**2 / (2 * s2 * a * jnp.sqrt(1 - ab)), SLIP + "the power of 1 - alpha_bar_t in the weight is wrong"),
    (lambda b, a, ab, s2: b**2 / (2 * s2 * jnp.sqrt(a) * (1 - ab)), SLIP + "the power of alpha_t in the weight is wrong"),
    (lambda b, a, ab, s2: b**2 / (2 * s2**2 * a * (1 - ab)), SLIP + "sigma2 is already the variance"),
    (lambda b, a, ab, s2: b**2 / (2 * s2 * (1 - ab)), SLIP + "your weight does not depend on alpha_t"),
    (lambda b, a, ab, s2: 2 * s2 * a * (1 - ab) / b**2, "wrong output"),   # upside down: no named slip, the values shown
])

answers("noise_loss", ok=[
    lambda e, et, b, a, ab, s2: jnp.sum(jnp.square(e - et)) * b * b / (2 * s2 * a * (1 - ab)),
    lambda e, et, b, a, ab, s2: (b / jnp.sqrt(a * (1 - ab))) ** 2 * jnp.sum((et - e) ** 2) / (2 * s2),
    lambda e, et, b, a, ab, s2: _w(b, a, ab, s2) * jnp.vdot(e - et, e - et),
    lambda e, et, b, a, ab, s2: _weight_by_means(b, a, ab, s2) * jnp.sum((e - et) ** 2),
], wrong=[
    (lambda e, et, b, a, ab, s2: b**2 / (2 * s2 * ab * (1 - ab)) * jnp.sum((e - et) ** 2), SLIP + "the weight's dependence on alpha_t and alpha_bar_t is wrong"),
    (lambda e, et, b, a, ab, s2: b / (2 * s2 * a * (1 - ab)) * jnp.sum((e - et) ** 2), SLIP + "the weight's dependence on beta_t is wrong"),
    (lambda e, et, b, a, ab, s2: b**2 / (s2 * a * (1 - ab)) * jnp.sum((e - et) ** 2), SLIP + "the factor 1/2 is missing"),
    (lambda e, et, b, a, ab, s2: b**2 / (2 * s2 * a * jnp.sqrt(1 - ab)) * jnp.sum((e - et) ** 2), SLIP + "the power of 1 - alpha_bar_t in the weight is wrong"),
    (lambda e, et, b, a, ab, s2: b**2 / (2 * s2 * a * (1 - a)) * jnp.sum((e - et) ** 2), SLIP + "the weight's dependence on alpha_bar_t is wrong"),
    (lambda e, et, b, a, ab, s2: _w(b, a, ab, s2) * jnp.mean((e - et) ** 2), SLIP + "sum the squared errors"),
    (lambda e, et, b, a, ab, s2: jnp.sum((e - et) ** 2), SLIP + "the weight (your noise_loss_weight) is missing"),
    (lambda e, et, b, a, ab, s2: _w(b, a, ab, s2) * jnp.linalg.norm((e - et).ravel()), SLIP + "without a square root"),
])

answers("simple_loss", ok=[
    lambda e, et: jnp.linalg.norm((e - et).ravel()) ** 2,
    lambda e, et: jnp.vdot(et - e, et - e),
    lambda e, et: jnp.sum(jnp.square(e - et)),
    lambda e, et: jnp.mean((e - et) ** 2) * jnp.size(e),
], wrong=[
    (lambda e, et: jnp.mean((e - et) ** 2), SLIP + "sum the squared errors"),
    (lambda e, et: jnp.sum(jnp.abs(e - et)), SLIP + "square the errors"),
    (lambda e, et: jnp.sqrt(jnp.sum((e - et) ** 2)), SLIP + "without a square root"),
    (lambda e, et: (e - et) ** 2, SLIP + "return a single number"),
    (lambda e, et: jnp.sum((e - et) ** 2) / 2, "on every test input your output is the expected one times a constant factor 0.5"),
    (lambda e, et: jnp.sum(e**2 - et**2), SLIP + "square the difference"),
])

# ------------------------------------------------------------------ notebook 03


def _reverse(x_t, t, betas, m, p, kind="right"):
    alphas = 1 - betas
    ab = jnp.cumprod(alphas)
    abp = jnp.concatenate([jnp.ones(1), ab[:-1]])
    a, ab_t, ab_p, b = alphas[t - 1], ab[t - 1], abp[t - 1], betas[t - 1]
    if kind == "off_by_one":
        ab_p = ab_t
    var0 = p if kind == "p_as_var" else p**2
    v_prev = ab_p * var0 + 1 - ab_p
    mu_prev = (ab_p if kind == "mean_no_sqrt" else jnp.sqrt(ab_p)) * m
    k = 1.0 if kind == "no_sqrt_alpha" else jnp.sqrt(a)
    v_t = k**2 * v_prev + b
    mean = mu_prev + k * v_prev / v_t * (x_t - k * mu_prev)
    var = v_prev * b / v_t
    if kind == "std":
        var = jnp.sqrt(var)
    if kind == "swapped":
        return var, mean
    return mean, var


def _reverse_schedule(x_t, t, betas, m, p):
    s = cu.schedules.make_schedule(betas).at(t)
    v_prev = s.alpha_bars_prev * p**2 + 1 - s.alpha_bars_prev
    v_t = s.alpha_bars * p**2 + 1 - s.alpha_bars
    mean = jnp.sqrt(s.alpha_bars_prev) * m + jnp.sqrt(s.alphas) * v_prev / v_t * (x_t - jnp.sqrt(s.alpha_bars) * m)
    return mean, v_prev - s.alphas * v_prev**2 / v_t


def _reverse_precision(x_t, t, betas, m, p):
    # the product of the prior of x_{t-1} and the likelihood of x_t, in precisions
    ab = jnp.cumprod(1 - betas)
    abp = jnp.where(t > 1, ab[jnp.maximum(t - 2, 0)], 1.0)
    a, b = 1 - betas[t - 1], betas[t - 1]
    v_prev = abp * p**2 + 1 - abp
    precision = 1 / v_prev + a / b
    var = 1 / precision
    mean = var * (jnp.sqrt(abp) * m / v_prev + jnp.sqrt(a) * x_t / b)
    return mean, var


answers("gaussian_reverse_mean_var", ok=[_reverse, _reverse_schedule, _reverse_precision], wrong=[
    (lambda *a: _reverse(*a, kind="off_by_one"), SLIP + "off by one: x_{t-1} has mean"),
    (lambda *a: _reverse(*a, kind="p_as_var"), SLIP + "p is the standard deviation"),
    (lambda *a: _reverse(*a, kind="mean_no_sqrt"), SLIP + "a square root is missing"),
    (lambda *a: _reverse(*a, kind="no_sqrt_alpha"), SLIP + "the factor sqrt(alpha_t)"),
    (lambda *a: _reverse(*a, kind="std"), SLIP + "not its standard deviation"),
    (lambda *a: _reverse(*a, kind="swapped"), SLIP + "in the order (mean, variance)"),
], n_cases=3)

# ------------------------------------------------------------------ notebook 04 (the exercises as they were)


def _sin_cos(t, dim, freq, order="sincos"):
    ang = jnp.asarray(t, jnp.float32)[..., None] * freq
    parts = [jnp.sin(ang), jnp.cos(ang)]
    return jnp.concatenate(parts if order == "sincos" else parts[::-1], axis=-1)


def _freqs(dim, sign=-1.0, denom=None):
    half = dim // 2
    return 10000.0 ** (sign * jnp.arange(half, dtype=jnp.float32) / (denom or half))


answers("sinusoidal_embedding", ok=[
    lambda t, d: _sin_cos(t, d, _freqs(d)),
    lambda t, d: _sin_cos(t, d, jnp.exp(-jnp.log(10000.0) * jnp.arange(0, d // 2) / (d // 2))),
    lambda t, d: jnp.concatenate([jnp.sin(t[..., None] * _freqs(d)), jnp.cos(t[..., None] * _freqs(d))], -1),
], wrong=[
    (lambda t, d: _sin_cos(t, d, _freqs(d), order="cossin"), SLIP + "the sines come first"),
    (lambda t, d: _sin_cos(t, d, _freqs(d, sign=+1.0)), SLIP + "the frequencies decrease"),
    # The log left out: it agrees with the linspace hint where the angles are small, and with an edit everywhere.
    (lambda t, d: _sin_cos(t, d, jnp.exp(-10000.0 * jnp.arange(d // 2, dtype=jnp.float32) / (d // 2))),
     "`10000.0` where the reference has `jnp.log(10000.0)`"),
    (lambda t, d: _sin_cos(t, d, _freqs(d, denom=d)), SLIP + "divide i by dim / 2"),
    (lambda t, d: jnp.stack([jnp.sin(t[..., None] * _freqs(d)), jnp.cos(t[..., None] * _freqs(d))], -1).reshape(t.shape + (d,)),
     SLIP + "not interleaved"),
    (lambda t, d: _sin_cos(t, d, _freqs(d, denom=d // 2 - 1 if d > 2 else 1)), SLIP + "the exponent is i / (dim / 2)"),
], n_cases=5)


class _MLP(nnx.Module):
    def __init__(self, dim=2, hidden=128, depth=3, time_dim=32, *, rngs, act=jax.nn.silu, final=lambda z: z,
                 emb_first=False, raw_t=False, layers=None):
        self.time_dim, self.raw_t, self.emb_first = time_dim, raw_t, emb_first
        self.act, self.final = act, final
        n_in = dim + (1 if raw_t else time_dim)
        sizes = [n_in] + [hidden] * (depth if layers is None else layers)
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
        self.head = nnx.Linear(hidden, dim, rngs=rngs)

    def __call__(self, x, t):
        emb = t[:, None].astype(jnp.float32) if self.raw_t else embeddings.sinusoidal_embedding.raw(t, self.time_dim)
        h = jnp.concatenate([emb, x] if self.emb_first else [x, emb], axis=-1)
        for layer in self.layers:
            h = self.act(layer(h))
        return self.final(self.head(h))


def _mlp(**options):
    return type("MLPDenoiser", (_MLP,), {"__init__": lambda self, dim=2, hidden=128, depth=3, time_dim=32, *, rngs:
                                         _MLP.__init__(self, dim, hidden, depth, time_dim, rngs=rngs, **options)})


class _SequentialMLP(nnx.Module):
    def __init__(self, dim=2, hidden=128, depth=3, time_dim=32, *, rngs):
        self.time_dim = time_dim
        layers = [nnx.Linear(dim + time_dim, hidden, rngs=rngs), jax.nn.silu]
        for _ in range(depth - 1):
            layers += [nnx.Linear(hidden, hidden, rngs=rngs), jax.nn.silu]
        self.net = nnx.Sequential(*layers, nnx.Linear(hidden, dim, rngs=rngs))

    def __call__(self, x, t):
        return self.net(jnp.concatenate([x, embeddings.sinusoidal_embedding.raw(t, self.time_dim)], axis=-1))


answers("MLPDenoiser", ok=[_mlp(), _mlp(emb_first=True), _SequentialMLP], wrong=[
    (_mlp(final=jax.nn.silu), SLIP + "no activation after the output layer"),
    (_mlp(act=jax.nn.relu), SLIP + "not ReLU"),
    (_mlp(raw_t=True), "not the raw t"),
    (_mlp(act=jnp.tanh), SLIP + "not tanh"),
    (_mlp(layers=2), "the exercise's architecture (depth = 3 hidden nnx.Linear layers"),
    (_mlp(act=lambda z: z), SLIP + "the activation jax.nn.silu after each hidden layer is missing"),
], edge_cases=False)


def _loss(kind="right"):
    def ddpm_loss(model, x0, t, noise, alpha_bars):
        idx = t if kind == "index_t" else t - 1
        ab = alpha_bars[idx].reshape((-1,) + (1,) * (x0.ndim - 1))
        if kind == "no_sqrt":
            x_t = ab * x0 + (1 - ab) * noise
        else:
            x_t = jnp.sqrt(ab) * x0 + jnp.sqrt(1 - ab) * noise
        pred = model(x_t, t - 1 if kind == "model_t_minus_1" else t)
        goal = x0 if kind == "x0" else noise
        err = (goal - pred) ** 2
        return jnp.sum(err) if kind == "sum" else jnp.mean(err)
    return ddpm_loss


def _loss_take(model, x0, t, noise, alpha_bars):
    ab = jnp.take(alpha_bars, t - 1)
    ab = jnp.expand_dims(ab, tuple(range(1, x0.ndim)))
    x_t = ab**0.5 * x0 + (1 - ab) ** 0.5 * noise
    return jnp.mean(jnp.square(model(x_t, t) - noise))


def _loss_vmap(model, x0, t, noise, alpha_bars):
    ab = alpha_bars[t - 1]
    x_t = jax.vmap(lambda a, x, e: jnp.sqrt(a) * x + jnp.sqrt(1 - a) * e)(ab, x0, noise)
    return ((noise - model(x_t, t)) ** 2).mean()


answers("ddpm_loss", ok=[_loss(), _loss_take, _loss_vmap], wrong=[
    (_loss("index_t"), SLIP + "off by one: alpha_bar_t is alpha_bars[t - 1]"),
    (_loss("no_sqrt"), SLIP + "the square roots are missing"),
    (_loss("x0"), SLIP + "the network predicts the noise"),
    (_loss("sum"), SLIP + "average the squared errors"),
    (_loss("model_t_minus_1"), SLIP + "call the model with the time step t itself"),
], n_cases=3, edge_cases=False)


def _step(kind="right"):
    def ddpm_step(model, x, t, z, betas, alpha_bars, sigmas):
        i = t if kind == "index_t" else t - 1
        eps = model(x, jnp.full((x.shape[0],), t))
        b, ab = betas[i], alpha_bars[i]
        div = jnp.sqrt(ab) if kind == "alpha_bar" else jnp.sqrt(1 - b)
        sign = 1 if kind == "plus" else -1
        noise = {"square": sigmas[i] ** 2 * z, "none": 0 * z}.get(kind, sigmas[i] * z)
        return (x + sign * b / jnp.sqrt(1 - ab) * eps) / div + noise
    return ddpm_step


def _step_mean_from_noise(model, x, t, z, betas, alpha_bars, sigmas):
    b, ab, s = betas[t - 1], alpha_bars[t - 1], sigmas[t - 1]
    eps = model(x, t * jnp.ones(x.shape[0], jnp.int32))
    return x / jnp.sqrt(1 - b) - b / jnp.sqrt((1 - ab) * (1 - b)) * eps + s * z


answers("ddpm_step", ok=[_step(), _step_mean_from_noise,
                         lambda m, x, t, z, b, ab, s: _step()(m, x, t, z, b, ab, s) * 1.0], wrong=[
    (_step("index_t"), SLIP + "off by one: the coefficients of step t"),
    (_step("alpha_bar"), SLIP + "not sqrt(alpha_bar_t)"),
    (_step("square"), SLIP + "sigmas holds standard deviations"),
    (_step("none"), SLIP + "the noise term sigma_t * z is missing"),
    (_step("plus"), SLIP + "subtract the predicted noise"),
], n_cases=3, edge_cases=False)

_my_loss = _loss()  # a student's own (right) ddpm_loss: train_step calls it


def _train_step(kind="right", loss=_my_loss):
    """train_step as students write it, with nnx.value_and_grad and the nnx.Optimizer, or with one slip."""
    def train_step(model, optimizer, x0, t, noise, alpha_bars):
        if kind == "outside":      # differentiates a function that ignores its argument: the model from outside
            value, grads = nnx.value_and_grad(lambda m: loss(model, x0, t, noise, alpha_bars))(model)
        elif kind == "minus_loss":
            value, grads = nnx.value_and_grad(lambda m: -loss(m, x0, t, noise, alpha_bars))(model)
        elif kind == "swapped":
            value, grads = nnx.value_and_grad(loss)(model, noise, t, x0, alpha_bars)
        else:
            value, grads = nnx.value_and_grad(loss)(model, x0, t, noise, alpha_bars)
        if kind == "ascent":
            grads = jax.tree.map(lambda g: -g, grads)
        if kind == "old_api":
            optimizer.update(grads)
        elif kind != "no_update":
            optimizer.update(model, grads)
        if kind == "after":
            return loss(model, x0, t, noise, alpha_bars)
        if kind == "pair":
            return value, grads
        if kind == "per_point":
            ab = alpha_bars[t - 1].reshape((-1,) + (1,) * (x0.ndim - 1))
            return jnp.mean((noise - model(jnp.sqrt(ab) * x0 + jnp.sqrt(1 - ab) * noise, t)) ** 2, axis=-1)
        if kind == "no_return":
            return None
        return value
    return train_step


def _train_step_split(model, optimizer, x0, t, noise, alpha_bars):
    """With nnx.split / nnx.merge and jax.value_and_grad."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_of(params):
        return _my_loss(nnx.merge(graphdef, params, rest), x0, t, noise, alpha_bars)

    value, grads = jax.value_and_grad(loss_of)(params)
    optimizer.update(model, grads)
    return value


def _train_step_grad_then_loss(model, optimizer, x0, t, noise, alpha_bars):
    """The loss first, then nnx.grad (two evaluations), then the update."""
    value = _my_loss(model, x0, t, noise, alpha_bars)
    grads = nnx.grad(_my_loss)(model, x0, t, noise, alpha_bars)
    optimizer.update(model, grads)
    return value


def _train_step_lambda(model, optimizer, x0, t, noise, alpha_bars):
    value, grads = nnx.value_and_grad(lambda m: _my_loss(m, x0, t, noise, alpha_bars))(model)
    optimizer.update(model, grads)
    return jnp.asarray(value, jnp.float32)


def _x0_target(model, x0, t, noise, alpha_bars):
    ab = alpha_bars[t - 1].reshape((-1,) + (1,) * (x0.ndim - 1))
    return jnp.mean((x0 - model(jnp.sqrt(ab) * x0 + jnp.sqrt(1 - ab) * noise, t)) ** 2)


answers("train_step", ok=[_train_step(), _train_step_split, _train_step_grad_then_loss, _train_step_lambda], wrong=[
    (_train_step("ascent"), SLIP + "gradient ascent"),
    (_train_step("no_update"), SLIP + "the parameters never change: after computing the gradient, call"),
    (_train_step("outside"), SLIP + "the gradient is zero"),
    (_train_step("after"), SLIP + "return the loss computed before the update"),
    (_train_step(loss=_x0_target), SLIP + "the network predicts the noise"),
    (_train_step("swapped"), SLIP + "x0 and noise are swapped"),
    (_train_step("minus_loss"), "the gradient's sign is flipped"),
    (_train_step("pair"), "return only the loss, a scalar"),
    (_train_step("per_point"), "it must be a scalar, shape ()"),
    (_train_step("no_return"), "did you forget `return loss`?"),
    (_train_step("old_api"), "the call is optimizer.update(model, grads)"),
    (_train_step(loss=_loss("index_t")), "This exercise may call your `ddpm_loss`"),
], edge_cases=True)

# ------------------------------------------------------------------ notebook 05

answers("gaussian_fourier_embedding", ok=[
    lambda t, W: jnp.concatenate([jnp.sin(2 * jnp.pi * t[..., None] * W), jnp.cos(2 * jnp.pi * t[..., None] * W)], axis=-1),
    lambda t, W: (lambda a: jnp.concatenate([jnp.sin(a), jnp.cos(a)], -1))(jnp.einsum("...,h->...h", t, W) * 2 * jnp.pi),
    lambda t, W: jnp.concatenate([jnp.sin(jnp.outer(t, W) * 2 * jnp.pi).reshape(t.shape + W.shape),
                                  jnp.cos(jnp.outer(t, W) * 2 * jnp.pi).reshape(t.shape + W.shape)], axis=-1),
], wrong=[
    (lambda t, W: jnp.concatenate([jnp.sin(t[..., None] * W), jnp.cos(t[..., None] * W)], -1), SLIP + "the factor 2 pi is missing"),
    (lambda t, W: jnp.concatenate([jnp.cos(2 * jnp.pi * t[..., None] * W), jnp.sin(2 * jnp.pi * t[..., None] * W)], -1),
     SLIP + "the sines come first"),
    (lambda t, W: jnp.stack([jnp.sin(2 * jnp.pi * t[..., None] * W), jnp.cos(2 * jnp.pi * t[..., None] * W)], -1).reshape(t.shape + (-1,)),
     SLIP + "not interleaved"),
    (lambda t, W: jnp.concatenate([jnp.sin(jnp.pi * t[..., None] * W), jnp.cos(jnp.pi * t[..., None] * W)], -1),
     SLIP + "the angles are 2 pi W t, not pi W t"),
    (lambda t, W: jnp.concatenate([jnp.sin(2 * jnp.pi * t[..., None] / W), jnp.cos(2 * jnp.pi * t[..., None] / W)], -1),
     SLIP + "multiply by W"),
])


def _drop(kind="right"):
    def drop_labels(key, y, p):
        mask = jax.random.bernoulli(key, p, y.shape)
        if kind == "reversed":
            return jnp.where(mask, y, -1)
        if kind == "zero":
            return jnp.where(mask, 0, y)
        if kind == "one_minus_p":
            return jnp.where(jax.random.bernoulli(key, 1 - p, y.shape), -1, y)
        if kind == "one_draw":
            return jnp.where(jax.random.bernoulli(key, p), -1, y)
        if kind == "all":
            return jnp.full_like(y, -1)
        return jnp.where(mask, -1, y)
    return drop_labels


answers("drop_labels", ok=[
    _drop(),
    lambda key, y, p: jnp.where(jax.random.bernoulli(key, p, jnp.shape(y)), jnp.full_like(y, -1), y),
    lambda key, y, p: (lambda m: y * (1 - m) - m)(jax.random.bernoulli(key, p, y.shape).astype(y.dtype)),
    lambda key, y, p: jnp.where(~jax.random.bernoulli(key, p, y.shape), y, -1).astype(jnp.int32),
    lambda key, y, p: jnp.where(jax.random.uniform(key, y.shape) < p, -1, y),  # what bernoulli draws
], wrong=[
    (_drop("reversed"), SLIP + "the mask is reversed"),
    (_drop("zero"), SLIP + "not 0: 0 is a real class"),
    (_drop("one_minus_p"), SLIP + "not 1 - p_uncond"),
    (_drop("one_draw"), SLIP + "draw one value per label"),
    (_drop("all"), SLIP + "only a fraction p_uncond"),
])


def _guided(kind="right"):
    def guided_eps(model, x, t, y, w):
        cond = model(x, t, y)
        unc = model(x, t, jnp.full_like(y, 0 if kind == "zero" else -1))
        if kind == "swapped":
            return (w + 1) * unc - w * cond
        if kind == "no_plus_one":
            return w * cond + (1 - w) * unc
        if kind == "plus":
            return (w + 1) * cond + w * unc
        if kind == "cond_only":
            return (w + 1) * cond
        return (w + 1) * cond - w * unc
    return guided_eps


answers("guided_eps", ok=[
    _guided(),
    lambda m, x, t, y, w: m(x, t, y) + w * (m(x, t, y) - m(x, t, jnp.full_like(y, -1))),
    lambda m, x, t, y, w: (lambda both: (w + 1) * both[0] - w * both[1])(
        jnp.split(m(jnp.concatenate([x, x]), jnp.concatenate([t, t]), jnp.concatenate([y, -jnp.ones_like(y)])), 2)),
], wrong=[
    (_guided("swapped"), SLIP + "the conditional prediction gets the weight (w + 1)"),
    (_guided("no_plus_one"), SLIP + "another convention"),
    (_guided("zero"), SLIP + "uses the label -1"),
    (_guided("plus"), SLIP + "subtract w times the unconditional prediction"),
    (_guided("cond_only"), SLIP + "the unconditional prediction is missing"),
], n_cases=3)


_guided_right = _guided()


def _guided_sampler(kind="right"):
    """The guided reverse loop the way the exercise text describes it, with one slip (or none)."""
    def guided_sample(model, x_T, zs, y, w, betas, alpha_bars, sigmas):
        T = betas.shape[0]
        ts = {"up": jnp.arange(1, T + 1), "shift": jnp.arange(T - 1, -1, -1)}.get(kind, jnp.arange(T, 0, -1))

        def body(x_t, t):
            z = zs[t - 1] if kind == "noise_at_1" else jnp.where(t > 1, zs[t - 1], 0.0)
            steps = jnp.full((x_t.shape[0],), t)
            if kind == "conditional":
                eps = model(x_t, steps, y)
            elif kind == "unconditional":
                eps = model(x_t, steps, jnp.full_like(y, -1))
            else:
                eps = _guided_right(model, x_t, steps, y, w)
            b, ab = betas[t - 1], alpha_bars[t - 1]
            x_prev = (x_t - b / jnp.sqrt(1 - ab) * eps) / jnp.sqrt(1 - b) + sigmas[t - 1] * z
            return x_prev, (x_t if kind == "no_x0" else x_prev)

        _, xs = jax.lax.scan(body, x_T, ts)
        return xs if kind in ("no_xT", "no_x0") else jnp.concatenate([x_T[None], xs])
    return guided_sample


def _guided_sampler_noises_in_order(model, x_T, zs, y, w, betas, alpha_bars, sigmas):
    """Scanning over (t, z) pairs in the order they are used, the last noise zeroed beforehand."""
    ts = jnp.arange(betas.shape[0], 0, -1)
    noises = jnp.where((ts > 1)[:, None, None], zs[ts - 1], 0.0)

    def body(x, t_and_z):
        t, z = t_and_z
        eps = (w + 1) * model(x, jnp.full(x.shape[:1], t), y) - w * model(x, jnp.full(x.shape[:1], t), -jnp.ones_like(y))
        b, ab = betas[t - 1], alpha_bars[t - 1]
        x = x * jax.lax.rsqrt(1 - b) - b / jnp.sqrt((1 - ab) * (1 - b)) * eps + sigmas[t - 1] * z
        return x, x

    _, xs = jax.lax.scan(body, x_T, (ts, noises))
    return jnp.concatenate([x_T[None], xs], axis=0)


def _guided_sampler_fori(model, x_T, zs, y, w, betas, alpha_bars, sigmas):
    """fori_loop over i = 0..T-1 (t = T - i), writing each state into a preallocated trajectory."""
    T = betas.shape[0]
    path = jnp.zeros((T + 1,) + x_T.shape, x_T.dtype).at[0].set(x_T)

    def body(i, path):
        t = T - i
        x = path[i]
        eps = _guided_right(model, x, t * jnp.ones(x.shape[0], jnp.int32), y, w)
        mean = (x - betas[t - 1] / jnp.sqrt(1 - alpha_bars[t - 1]) * eps) / jnp.sqrt(1 - betas[t - 1])
        return path.at[i + 1].set(mean + (t > 1) * sigmas[t - 1] * zs[t - 1])

    return jax.lax.fori_loop(0, T, body, path)


answers("guided_sample", ok=[_guided_sampler(), _guided_sampler_noises_in_order, _guided_sampler_fori], wrong=[
    (_guided_sampler("up"), SLIP + "the reverse process runs backwards in time"),
    (_guided_sampler("shift"), SLIP + "yours start at T - 1"),
    (_guided_sampler("noise_at_1"), SLIP + "no noise at the last step"),
    (_guided_sampler("conditional"), SLIP + "the guidance is missing"),
    (_guided_sampler("unconditional"), SLIP + "the steps use the unconditional prediction"),
    (_guided_sampler("no_xT"), SLIP + "the trajectory starts with x_T itself"),
    (_guided_sampler("no_x0"), SLIP + "the trajectory is missing x_0"),
], n_cases=3)


_my_drop = _drop()  # a student's own (right) drop_labels: conditional_train_step calls it


def _cond_step(kind="right"):
    """conditional_train_step as students write it, or with one slip."""
    def conditional_train_step(model, optimizer, x0, y, t, noise, alpha_bars, key, p_uncond):
        labels = {"kept": y, "none": jnp.full_like(y, -1)}.get(kind, _my_drop(key, y, p_uncond))
        ab = alpha_bars[t if kind == "index_t" else t - 1][:, None]
        x_t = (ab * x0 + (1 - ab) * noise) if kind == "no_sqrt" else (jnp.sqrt(ab) * x0 + jnp.sqrt(1 - ab) * noise)

        def loss_fn(m):
            return jnp.mean(((x0 if kind == "x0" else noise) - m(x_t, t, labels)) ** 2)

        value, grads = nnx.value_and_grad(loss_fn)(model)
        if kind == "ascent":
            grads = jax.tree.map(lambda g: -g, grads)
        if kind != "no_update":
            optimizer.update(model, grads)
        return loss_fn(model) if kind == "after" else value
    return conditional_train_step


def _cond_step_split(model, optimizer, x0, y, t, noise, alpha_bars, key, p_uncond):
    """With nnx.split / nnx.merge and jax.value_and_grad, and the loss of notebook 04's form."""
    labels = _my_drop(key, y, p_uncond)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    ab = alpha_bars[t - 1].reshape(-1, 1)

    def loss_of(params):
        net = nnx.merge(graphdef, params, rest)
        return jnp.mean(jnp.square(net(ab**0.5 * x0 + (1 - ab) ** 0.5 * noise, t, labels) - noise))

    value, grads = jax.value_and_grad(loss_of)(params)
    optimizer.update(model, grads)
    return value


def _cond_step_grad(model, optimizer, x0, y, t, noise, alpha_bars, key, p_uncond):
    """nnx.grad with a loss of (model, labels), and the loss evaluated first."""
    labels = jnp.where(jax.random.bernoulli(key, p_uncond, y.shape), -1, y)
    ab = jnp.take(alpha_bars, t - 1)[:, None]

    def loss_fn(m, labels):
        return ((noise - m(jnp.sqrt(ab) * x0 + jnp.sqrt(1 - ab) * noise, t, labels)) ** 2).mean()

    value = loss_fn(model, labels)
    optimizer.update(model, nnx.grad(loss_fn)(model, labels))
    return value


answers("conditional_train_step", ok=[_cond_step(), _cond_step_split, _cond_step_grad], wrong=[
    (_cond_step("kept"), SLIP + "the labels are not dropped"),
    (_cond_step("none"), SLIP + "every label is replaced by \"no label\""),
    (_cond_step("ascent"), SLIP + "the parameters move uphill"),
    (_cond_step("after"), SLIP + "return the loss computed before the update"),
    (_cond_step("no_sqrt"), SLIP + "the square roots are missing"),
    (_cond_step("x0"), SLIP + "the network predicts the noise"),
    (_cond_step("index_t"), SLIP + "off by one: alpha_bar_t is alpha_bars[t - 1]"),
    (_cond_step("no_update"), "call optimizer.update(model, grads)"),
], edge_cases=True)


def _image_step(kind="right"):
    """image_train_step (notebook 06) as students write it, or with one slip."""
    def image_train_step(model, optimizer, x0, y, t, noise, alpha_bars, key, p_uncond):
        labels = {"kept": y, "none": jnp.full_like(y, -1)}.get(kind, _my_drop(key, y, p_uncond))
        ab = alpha_bars[t if kind == "index_t" else t - 1][:, None, None, None]
        x_t = (ab * x0 + (1 - ab) * noise) if kind == "no_sqrt" else (jnp.sqrt(ab) * x0 + jnp.sqrt(1 - ab) * noise)

        def loss_fn(m):
            squared = ((x0 if kind == "x0" else noise) - m(x_t, t, labels)) ** 2
            return jnp.sum(squared, axis=(1, 2, 3)).mean() if kind == "sum" else squared.mean()

        value, grads = nnx.value_and_grad(loss_fn)(model)
        if kind == "ascent":
            grads = jax.tree.map(lambda g: -g, grads)
        if kind != "no_update":
            optimizer.update(model, grads)
        return loss_fn(model) if kind == "after" else value
    return image_train_step


def _image_step_split(model, optimizer, x0, y, t, noise, alpha_bars, key, p_uncond):
    """With nnx.split / nnx.merge and jax.value_and_grad, alpha_bar_t broadcast by expand_dims."""
    labels = _my_drop(key, y, p_uncond)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    ab = jnp.expand_dims(alpha_bars[t - 1], (1, 2, 3))

    def loss_of(params):
        net = nnx.merge(graphdef, params, rest)
        return jnp.mean(jnp.square(net(ab**0.5 * x0 + (1 - ab) ** 0.5 * noise, t, labels) - noise))

    value, grads = jax.value_and_grad(loss_of)(params)
    optimizer.update(model, grads)
    return value


def _image_step_generic(model, optimizer, x0, y, t, noise, alpha_bars, key, p_uncond):
    """Any number of image axes (reshape to x0.ndim), the loss as a sum divided by the size, labels dropped inline."""
    labels = jnp.where(jax.random.uniform(key, y.shape) < p_uncond, -1, y)
    ab = alpha_bars[t - 1].reshape((-1,) + (1,) * (x0.ndim - 1))

    def loss_fn(m):
        err = noise - m(jnp.sqrt(ab) * x0 + jnp.sqrt(1.0 - ab) * noise, t, labels)
        return jnp.sum(err * err) / err.size

    value = loss_fn(model)
    optimizer.update(model, nnx.grad(loss_fn)(model))
    return value


answers("image_train_step", ok=[_image_step(), _image_step_split, _image_step_generic], wrong=[
    (_image_step("kept"), SLIP + "the labels are not dropped"),
    (_image_step("none"), SLIP + "every label is replaced by \"no label\""),
    (_image_step("ascent"), SLIP + "the parameters move uphill"),
    (_image_step("after"), SLIP + "return the loss computed before the update"),
    (_image_step("no_sqrt"), SLIP + "the square roots are missing"),
    (_image_step("x0"), SLIP + "the network predicts the noise"),
    (_image_step("index_t"), SLIP + "off by one: alpha_bar_t is alpha_bars[t - 1]"),
    (_image_step("sum"), SLIP + "the loss sums the squared errors over the pixels"),
    (_image_step("no_update"), "call optimizer.update(model, grads)"),
], edge_cases=True)


def _unet(kind="right"):
    def __call__(self, x, t, y):
        emb = self.embed(t, y)
        act = (lambda z: z) if kind == "no_silu" else jax.nn.silu

        def block(z, dense, norm):
            if kind != "no_embedding":
                z = z + dense(emb)[:, None, :]
            return norm(act(z)) if kind == "norm_after" else act(norm(z))
        h = x[:, :, None]
        h1 = block(self.conv1(h), self.dense1, self.norm1)
        h2 = block(self.conv2(h1), self.dense2, self.norm2)
        h3 = block(self.tconv2(h2), self.dense3, self.norm3)
        skips = [h1, h3, x[:, None, :]] if kind == "skip_order" else [h3, h1, x[:, None, :]]
        if kind == "no_input_skip":
            skips = [h3, h1, jnp.zeros_like(x[:, None, :])]
        return self.tconv1(jnp.concatenate(skips, axis=-1))[:, 0, :]
    return type("TwoPixelUNet", (cu.models.TwoPixelUNet,), {"__call__": __call__})


def _unet_squeeze(self, x, t, y):
    emb = self.embed(t, y)
    h = jnp.expand_dims(x, -1)
    h1 = jax.nn.silu(self.norm1(self.conv1(h) + jnp.expand_dims(self.dense1(emb), 1)))
    h2 = jax.nn.silu(self.norm2(self.conv2(h1) + jnp.expand_dims(self.dense2(emb), 1)))
    h3 = jax.nn.silu(self.norm3(self.tconv2(h2) + jnp.expand_dims(self.dense3(emb), 1)))
    return jnp.squeeze(self.tconv1(jnp.concatenate([h3, h1, x.reshape(x.shape[0], 1, 2)], axis=2)), 1)


def _unet_loop(self, x, t, y):
    emb = self.embed(t, y)
    h, outs = x[:, :, None], []
    for conv, dense, norm in ((self.conv1, self.dense1, self.norm1), (self.conv2, self.dense2, self.norm2),
                              (self.tconv2, self.dense3, self.norm3)):
        h = jax.nn.silu(norm(conv(h) + dense(emb)[:, None, :]))
        outs.append(h)
    return self.tconv1(jnp.concatenate([outs[2], outs[0], x[:, None, :]], -1))[:, 0, :]


answers("TwoPixelUNet", ok=[_unet(), type("TwoPixelUNet", (cu.models.TwoPixelUNet,), {"__call__": _unet_squeeze}),
                            type("TwoPixelUNet", (cu.models.TwoPixelUNet,), {"__call__": _unet_loop})], wrong=[
    (_unet("no_silu"), SLIP + "the SiLU activations are missing"),
    (_unet("no_embedding"), SLIP + "the blocks do not add the embedding"),
    (_unet("norm_after"), SLIP + "then GroupNorm, then SiLU"),
    (_unet("skip_order"), SLIP + "concatenate in the order"),
    (_unet("no_input_skip"), SLIP + "the skip of the input pixels is missing"),
], edge_cases=False)

# ------------------------------------------------------------------ notebook 06


def _block_class(kind="right"):
    def __call__(self, x, emb):
        def half(z, norm):
            if kind in ("silu_first_both",) or (kind == "silu_first_1" and norm is self.norm1):
                return norm(jax.nn.silu(z))
            return jax.nn.silu(z) if kind == "no_norm" else jax.nn.silu(norm(z))
        h = self.conv1(half(x, self.norm1))
        e = self.emb_proj(emb if kind == "emb_no_silu" else jax.nn.silu(emb))[:, None, None, :]
        if kind != "no_emb":
            h = h + e
        h = self.conv2(half(h, self.norm2))
        if kind == "no_skip":
            return h
        return h + (x if self.skip is None else self.skip(x))
    return type("ResidualBlock", (nnx.Module,), {"__init__": cu.unet.ResidualBlock.__init__, "__call__": __call__})


def _block_functional(self, x, emb):
    skip = self.skip(x) if self.skip is not None else x
    h = self.conv1(jax.nn.silu(self.norm1(x))) + jnp.expand_dims(self.emb_proj(jax.nn.silu(emb)), (1, 2))
    return skip + self.conv2(jax.nn.silu(self.norm2(h)))


answers("ResidualBlock", ok=[
    _block_class(),
    type("ResidualBlock", (nnx.Module,), {"__init__": cu.unet.ResidualBlock.__init__, "__call__": _block_functional}),
    type("ResidualBlock", (nnx.Module,), {"__init__": cu.unet.ResidualBlock.__init__,
                                          "__call__": lambda s, x, e: _block_functional(s, x, e) * 1.0}),
], wrong=[
    (_block_class("no_skip"), SLIP + "the skip connection is missing"),
    (_block_class("no_emb"), SLIP + "the embedding is not added"),
    (_block_class("emb_no_silu"), SLIP + "apply jax.nn.silu to emb"),
    (_block_class("silu_first_1"), SLIP + "(you applied SiLU first)"),
    (_block_class("silu_first_both"), SLIP + "in both halves"),
    (_block_class("no_norm"), SLIP + "the group norms are missing"),
], edge_cases=False)


def _attention_class(kind="right"):
    def __call__(self, x):
        n, h, w, c = x.shape
        heads = 1 if kind == "one_head" else self.num_heads
        d = c // heads
        qkv = self.qkv(x if kind == "no_norm" else self.norm(x)).reshape(n, h * w, 3, heads, d)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        s = jnp.einsum("nqhd,nkhd->nhqk", q, k)
        s = s if kind == "no_scale" else s / jnp.sqrt(d)
        wts = jax.nn.softmax(s, axis=-2 if kind == "softmax_q" else -1)
        out = self.out(jnp.einsum("nhqk,nkhd->nqhd", wts, v).reshape(n, h, w, c))
        return out if kind == "no_res" else x + out
    return type("SelfAttention", (nnx.Module,), {"__init__": cu.unet.SelfAttention.__init__, "__call__": __call__})


def _attention_transposed(self, x):
    n, h, w, c = x.shape
    d = c // self.num_heads
    qkv = self.qkv(self.norm(x)).reshape(n, h * w, 3, self.num_heads, d).transpose(2, 0, 3, 1, 4)  # (3, n, heads, hw, d)
    q, k, v = qkv[0], qkv[1], qkv[2]
    wts = jax.nn.softmax(q @ k.swapaxes(-1, -2) * d**-0.5, axis=-1)
    heads = (wts @ v).transpose(0, 2, 1, 3).reshape(n, h, w, c)
    return x + self.out(heads)


answers("SelfAttention", ok=[
    _attention_class(),
    type("SelfAttention", (nnx.Module,), {"__init__": cu.unet.SelfAttention.__init__, "__call__": _attention_transposed}),
    type("SelfAttention", (nnx.Module,), {"__init__": cu.unet.SelfAttention.__init__,
                                          "__call__": lambda s, x: _attention_transposed(s, x) + 0.0}),
], wrong=[
    (_attention_class("no_res"), SLIP + "the residual connection is missing"),
    (_attention_class("no_scale"), SLIP + "divide the scores"),
    (_attention_class("softmax_q"), SLIP + "the softmax runs over the keys"),
    (_attention_class("one_head"), SLIP + "split into self.num_heads heads"),
    (_attention_class("no_norm"), SLIP + "normalise x with self.norm"),
], edge_cases=False)


def _ddim_answer(kind="right"):
    """guided_ddim_sample the way a student writes it, with one slip (or none)."""
    def guided_ddim_sample(model, x_T, y, w, timesteps, alpha_bars):
        no_label = jnp.full_like(y, 0 if kind == "null_zero" else -1)
        ts = timesteps[::-1] if kind == "reversed" else timesteps

        def body(x_t, pair):
            t, t_prev = (pair[1], pair[0]) if kind == "swapped" else (pair[0], pair[1])
            steps = jnp.full((x_t.shape[0],), t_prev if kind == "model_t_prev" else t)
            cond, uncond = model(x_t, steps, y), model(x_t, steps, no_label)
            if kind == "convention":
                eps = w * cond + (1 - w) * uncond
            elif kind == "no_plus_one":
                eps = w * cond - w * uncond
            else:
                eps = (w + 1) * cond - w * uncond
            i = t if kind == "index_t" else t - 1
            ab_t = alpha_bars[i]
            ab_prev = alpha_bars[t_prev - 1] if kind == "wrap" else jnp.where(t_prev > 0, alpha_bars[t_prev - 1], 1.0)
            if kind == "index_t":
                ab_prev = jnp.where(t_prev > 0, alpha_bars[t_prev], 1.0)
            x0_hat = (x_t - jnp.sqrt(1 - ab_t) * eps) / (ab_t if kind == "no_sqrt" else jnp.sqrt(ab_t))
            x_prev = jnp.sqrt(ab_prev) * x0_hat + jnp.sqrt(1 - ab_prev) * (cond if kind == "direction_cond" else eps)
            return x_prev, (x_t if kind in ("collect_x_t", "collect_x_t_with_x_T") else x_prev)

        pairs = jnp.stack([ts[:-1], ts[:-1] - 1 if kind == "t_minus_1" else ts[1:]], axis=1)
        x_0, xs = jax.lax.scan(body, x_T, pairs)
        if kind == "x0_only":
            return x_0
        if kind in ("no_x_T", "collect_x_t"):
            return xs
        return jnp.concatenate([x_T[None], xs])
    return guided_ddim_sample


def _ddim_batched_guidance(model, x_T, y, w, timesteps, alpha_bars):
    """Both predictions in one call of the model (a batch of 2N), alpha_bar_0 = 1 padded in front."""
    ab = jnp.concatenate([jnp.ones((1,), alpha_bars.dtype), alpha_bars])
    n = x_T.shape[0]
    labels = jnp.concatenate([y, -jnp.ones_like(y)])

    def body(x, k):
        t, t_prev = timesteps[k], timesteps[k + 1]
        both = model(jnp.concatenate([x, x]), jnp.full((2 * n,), t), labels)
        eps = (1 + w) * both[:n] - w * both[n:]
        x0 = (x - jnp.sqrt(1 - ab[t]) * eps) / jnp.sqrt(ab[t])
        x = jnp.sqrt(ab[t_prev]) * x0 + jnp.sqrt(1 - ab[t_prev]) * eps
        return x, x

    _, xs = jax.lax.scan(body, x_T, jnp.arange(timesteps.shape[0] - 1))
    return jnp.concatenate([x_T[None], xs], axis=0)


def _ddim_ratio_form(model, x_T, y, w, timesteps, alpha_bars):
    """x_t' written directly from x_t and the guided noise (x0_hat never formed), eps = cond + w (cond - uncond)."""
    def body(x, pair):
        t, t_prev = pair
        steps = jnp.full(x.shape[:1], t)
        cond = model(x, steps, y)
        eps = cond + w * (cond - model(x, steps, jnp.full(y.shape, -1, y.dtype)))
        a = alpha_bars[t - 1]
        b = jnp.where(t_prev == 0, 1.0, alpha_bars[jnp.maximum(t_prev, 1) - 1])
        x = jnp.sqrt(b / a) * x + (jnp.sqrt(1 - b) - jnp.sqrt(b * (1 - a) / a)) * eps
        return x, x

    _, xs = jax.lax.scan(body, x_T, (timesteps[:-1], timesteps[1:]))
    return jnp.concatenate([x_T[None], xs])


def _ddim_fori(model, x_T, y, w, timesteps, alpha_bars):
    """A fori_loop that writes the trajectory into a preallocated array."""
    K = timesteps.shape[0] - 1
    path = jnp.zeros((K + 1,) + x_T.shape, x_T.dtype).at[0].set(x_T)

    def step(k, path):
        x, t, t_prev = path[k], timesteps[k], timesteps[k + 1]
        at = t * jnp.ones(x.shape[0], jnp.int32)
        eps = (w + 1) * model(x, at, y) - w * model(x, at, -jnp.ones_like(y))
        ab_t = alpha_bars[t - 1]
        ab_prev = jnp.where(t_prev >= 1, alpha_bars[t_prev - 1], jnp.float32(1))
        x0 = (x - (1 - ab_t) ** 0.5 * eps) * ab_t ** -0.5
        return path.at[k + 1].set(ab_prev ** 0.5 * x0 + (1 - ab_prev) ** 0.5 * eps)

    return jax.lax.fori_loop(0, K, step, path)


def _ddim_python_loop(model, x_T, y, w, timesteps, alpha_bars):
    xs = [x_T]
    for k in range(timesteps.shape[0] - 1):
        t, t_prev = timesteps[k], timesteps[k + 1]
        steps = jnp.full((x_T.shape[0],), t)
        eps = (w + 1) * model(xs[-1], steps, y) - w * model(xs[-1], steps, jnp.full_like(y, -1))
        ab_t, ab_prev = alpha_bars[t - 1], jnp.where(t_prev > 0, alpha_bars[t_prev - 1], 1.0)
        xs.append(jnp.sqrt(ab_prev) * (xs[-1] - jnp.sqrt(1 - ab_t) * eps) / jnp.sqrt(ab_t) + jnp.sqrt(1 - ab_prev) * eps)
    return jnp.stack(xs)


answers("guided_ddim_sample", ok=[
    _ddim_answer(), _ddim_batched_guidance, _ddim_ratio_form, _ddim_fori,
], wrong=[
    (_ddim_answer("reversed"), SLIP + "do not reverse it"),
    (_ddim_answer("swapped"), SLIP + "you swapped t and t'"),
    (_ddim_answer("t_minus_1"), SLIP + "not to t - 1"),
    (_ddim_answer("wrap"), SLIP + "alpha_bar_0 = 1 (the clean image)"),
    (_ddim_answer("index_t"), SLIP + "off by one: the alpha_bar of step t is alpha_bars[t - 1]"),
    (_ddim_answer("model_t_prev"), SLIP + "call the U-Net at the step the image is at"),
    (_ddim_answer("convention"), SLIP + "the guided noise is (w + 1) eps(x_t, t, y) - w eps(x_t, t, no label)"),
    (_ddim_answer("no_plus_one"), SLIP + "the conditional prediction itself is missing"),
    (_ddim_answer("null_zero"), SLIP + "\"no label\" is the label -1"),
    (_ddim_answer("direction_cond"), SLIP + "use the guided noise in both places"),
    (_ddim_answer("no_sqrt"), SLIP + "x0_hat divides by sqrt(alpha_bar_t)"),
    (_ddim_answer("x0_only"), SLIP + "return the whole trajectory"),
    (_ddim_answer("no_x_T"), SLIP + "the trajectory starts with x_T itself"),
    (_ddim_answer("collect_x_t"), SLIP + "the trajectory is missing x_0"),
    (_ddim_answer("collect_x_t_with_x_T"), SLIP + "the trajectory holds x_T twice"),
    (_ddim_python_loop, "loop over the visited time steps with jax.lax.scan"),
], n_cases=3)


# ------------------------------------------------------------------ notebook 07

answers("score_from_eps", ok=[
    lambda e, a: -e * jax.lax.rsqrt(1 - a),
    lambda e, a: -(e / (1 - a) ** 0.5),
    lambda e, a: jnp.negative(e) / jnp.sqrt(1.0 - jnp.asarray(a)),
], wrong=[
    (lambda e, a: e / jnp.sqrt(1 - a), SLIP + "the score points against the noise"),
    (lambda e, a: -e / (1 - a), SLIP + "divide by the standard deviation of the noise"),
    (lambda e, a: -e / jnp.sqrt(a), SLIP + "the noise in x_t has standard deviation sqrt(1 - alpha_bar_t)"),
    (lambda e, a: -e * jnp.sqrt(1 - a), SLIP + "divide, do not multiply"),
    (lambda e, a: -2 * e / jnp.sqrt(1 - a), "times a constant factor 2"),
])


def _padded(schedule):
    """[alpha_bar_0 = 1, alpha_bar_1, ..., alpha_bar_T]: index t is step t."""
    return jnp.concatenate([jnp.ones(1), jnp.asarray(schedule.alpha_bars)])


def _pf_padded(eps_fn, x_t, t, t_prev, schedule):
    ab = _padded(schedule)
    score = -eps_fn(x_t, jnp.full((x_t.shape[0],), t)) / jnp.sqrt(1 - ab[t])
    return x_t + 0.5 * (jnp.log(ab[t_prev]) - jnp.log(ab[t])) * (x_t + score)


def _pf_expanded(eps_fn, x_t, t, t_prev, schedule):
    ab_t = schedule.alpha_bars[t - 1]
    ab_prev = jnp.where(t_prev == 0, 1.0, schedule.alpha_bars[t_prev - 1])
    h = -jnp.log(ab_t / ab_prev)
    eps = eps_fn(x_t, t * jnp.ones(x_t.shape[0], jnp.int32))
    return x_t + 0.5 * h * x_t - 0.5 * h * eps * jax.lax.rsqrt(1 - ab_t)


def _pf_slip(sign=-1.0, half=0.5, power=0.5, clock="log", direction=1.0, python_if=False):
    def step(eps_fn, x_t, t, t_prev, schedule):
        ab = _padded(schedule)
        if python_if and t_prev == 0:
            return x_t
        eps = eps_fn(x_t, jnp.full((x_t.shape[0],), t))
        h = jnp.log(ab[t_prev] / ab[t]) if clock == "log" else ab[t_prev] - ab[t]
        return x_t + direction * h * half * (x_t + sign * eps / (1 - ab[t]) ** power)
    return step


answers("probability_flow_step", ok=[_pf_padded, _pf_expanded, _pf_slip()], wrong=[
    (_pf_slip(sign=1.0), SLIP + "the score is -eps / sqrt(1 - alpha_bar_t)"),
    (_pf_slip(half=1.0), SLIP + "the factor 1/2 is missing"),
    (_pf_slip(power=1.0), SLIP + "the score divides the noise by sqrt(1 - alpha_bar_t)"),
    (_pf_slip(clock="alpha_bar"), SLIP + "the time of this ODE is log alpha_bar"),
    (_pf_slip(direction=-1.0), SLIP + "the step goes towards the data"),
    (_pf_slip(python_if=True), "The cause: a Python `if`"),
], n_cases=4)


def _heun_padded(eps_fn, x_t, t, t_prev, schedule):
    ab = _padded(schedule)
    h = jnp.log(ab[t_prev] / ab[t])
    f1 = 0.5 * (x_t - eps_fn(x_t, jnp.full((x_t.shape[0],), t)) / jnp.sqrt(1 - ab[t]))
    x_e = x_t + h * f1
    t2 = jnp.maximum(t_prev, 1)
    f2 = 0.5 * (x_e - eps_fn(x_e, jnp.full((x_t.shape[0],), t2)) / jnp.sqrt(1 - ab[t2]))
    return jnp.where(t_prev > 0, 0.5 * (x_e + x_t + h * f2), x_e)


def _heun_with_euler(eps_fn, x_t, t, t_prev, schedule):
    """Heun from two Euler steps: the average of the predictor and an Euler step with the slope at its end."""
    x_e = _pf_padded(eps_fn, x_t, t, t_prev, schedule)
    ab = _padded(schedule)
    h = jnp.log(ab[t_prev] / ab[t])
    t2 = jnp.maximum(t_prev, 1)
    slope2 = 0.5 * (x_e + scores_ref_score(eps_fn(x_e, jnp.full((x_t.shape[0],), t2)), ab[t2]))
    return jnp.where(t_prev == 0, x_e, 0.5 * (x_e + x_t + h * slope2))


def scores_ref_score(eps, ab):
    return -eps / jnp.sqrt(1 - ab)


def _heun_slip(second_at="t_prev", average=True, wrap=False, python_if=False):
    def step(eps_fn, x_t, t, t_prev, schedule):
        if python_if and t_prev == 0:
            return _pf_padded(eps_fn, x_t, t, t_prev, schedule)
        ab_all = jnp.asarray(schedule.alpha_bars)
        ab = _padded(schedule)
        h = jnp.log(ab[t_prev] / ab[t])
        f1 = 0.5 * (x_t - eps_fn(x_t, jnp.full((x_t.shape[0],), t)) / jnp.sqrt(1 - ab[t]))
        x_e = x_t + h * f1
        t2 = {"t_prev": jnp.maximum(t_prev, 1), "t": t}[second_at]
        ab2 = ab_all[t_prev - 1] if wrap else ab[t2]
        t2 = t_prev if wrap else t2
        f2 = 0.5 * (x_e - eps_fn(x_e, jnp.full((x_t.shape[0],), t2)) / jnp.sqrt(1 - ab2))
        x_h = x_t + (0.5 * h * (f1 + f2) if average else h * f2)
        return x_h if wrap else jnp.where(t_prev > 0, x_h, x_e)
    return step


answers("heun_step", ok=[_heun_padded, _heun_with_euler, _heun_slip()], wrong=[
    (_pf_padded, SLIP + "that is the Euler step"),
    (_heun_slip(second_at="t"), SLIP + "evaluate the second slope at the end of the step"),
    (_heun_slip(average=False), SLIP + "move with the average of the two slopes"),
    (_heun_slip(wrap=True), SLIP + "at t_prev = 0 return the Euler step"),
    (_heun_slip(python_if=True), "The cause: a Python `if`"),
], n_cases=4)


def _langevin_if(score_fn, x, step_size, z):
    if step_size > 0:
        return x + step_size * score_fn(x) + jnp.sqrt(2 * step_size) * z
    return x


answers("langevin_correct", ok=[
    lambda score_fn, x, d, z: x + d * score_fn(x) + jnp.sqrt(2.0) * jnp.sqrt(d) * z,
    lambda score_fn, x, d, z: x + d * score_fn(x) + (2 * d) ** 0.5 * z,
    lambda score_fn, x, d, z: jnp.add(x, d * score_fn(x)) + jnp.sqrt(d + d) * z,
], wrong=[
    (lambda score_fn, x, d, z: x + d * score_fn(x) + jnp.sqrt(d) * z, SLIP + "the factor 2 inside the square root is missing"),
    (lambda score_fn, x, d, z: x + d * score_fn(x) + 2 * d * z, SLIP + "the square root is missing"),
    (lambda score_fn, x, d, z: x - d * score_fn(x) + jnp.sqrt(2 * d) * z, SLIP + "move up the score"),
    (lambda score_fn, x, d, z: x + d * score_fn(x), SLIP + "the noise term sqrt(2 * step_size) * z is missing"),
    (_langevin_if, "The cause: a Python `if`"),
])


def _fm_loss(path="straight", target="x1 - x0", reduce=jnp.mean, model_t=lambda t: t):
    def loss(model, x0, x1, t):
        s = jnp.expand_dims(t, -1)
        x_s = (1 - s) * x0 + s * x1 if path == "straight" else s * x0 + (1 - s) * x1
        goal = {"x1 - x0": x1 - x0, "x0 - x1": x0 - x1, "x1": x1}[target]
        return reduce((model(x_s, model_t(t)) - goal) ** 2)
    return loss


answers("flow_matching_loss", ok=[
    _fm_loss(),
    lambda model, x0, x1, t: jnp.mean(jnp.square(model(x0 + t[:, None] * (x1 - x0), t) - x1 + x0)),
    lambda model, x0, x1, t: jnp.sum((model(x0 + t.reshape(-1, 1) * (x1 - x0), t) - (x1 - x0)) ** 2) / x0.size,
], wrong=[
    (_fm_loss(target="x0 - x1"), SLIP + "the velocity points from the noise to the data"),
    (_fm_loss(path="swapped"), SLIP + "the path starts at the noise"),
    (_fm_loss(reduce=jnp.sum), SLIP + "average the squared errors"),
    (_fm_loss(model_t=lambda t: 1 - t), SLIP + "call the model with the time t of x_t"),
    (_fm_loss(target="x1"), "expected"),
])


def _flow_scan(velocity_fn, x, n_steps):
    def body(carry, k):
        y = carry + velocity_fn(carry, jnp.full((carry.shape[0],), k / n_steps)) / n_steps
        return y, y
    return jnp.concatenate([x[None], jax.lax.scan(body, x, jnp.arange(n_steps))[1]])


def _flow_fori(velocity_fn, x, n_steps):
    def body(k, xs):
        y = xs[k] + (1.0 / n_steps) * velocity_fn(xs[k], jnp.ones(x.shape[0]) * k / n_steps)
        return xs.at[k + 1].set(y)
    return jax.lax.fori_loop(0, n_steps, body, jnp.zeros((n_steps + 1,) + x.shape, x.dtype).at[0].set(x))


def _flow_times(velocity_fn, x, n_steps):
    times = jnp.linspace(0.0, 1.0, n_steps + 1)[:-1]

    def body(y, s):
        y = y + (1.0 / n_steps) * velocity_fn(y, jnp.broadcast_to(s, (y.shape[0],)))
        return y, y
    last, xs = jax.lax.scan(body, x, times)
    return jnp.concatenate([x[None], xs], axis=0)


def _flow_python_loop(velocity_fn, x, n_steps):
    xs = [x]
    for k in range(n_steps):
        xs.append(xs[-1] + velocity_fn(xs[-1], jnp.full((x.shape[0],), k / n_steps)) / n_steps)
    return jnp.stack(xs)


def _flow_slip(time="start", scale=True, keep="all"):
    def run(velocity_fn, x, n_steps):
        s0 = {"start": 0.0, "end": 1.0, "reversed": 0.0}[time]
        def body(y, k):
            s = 1.0 - k / n_steps if time == "reversed" else (k + s0) / n_steps
            y = y + (1.0 / n_steps if scale else 1.0) * velocity_fn(y, jnp.full((y.shape[0],), s))
            return y, y
        last, xs = jax.lax.scan(body, x, jnp.arange(n_steps))
        return {"all": jnp.concatenate([x[None], xs]), "last": last, "no noise": xs}[keep]
    return run


answers("euler_flow_sample", ok=[_flow_scan, _flow_fori, _flow_times], wrong=[
    (_flow_slip(time="end"), SLIP + "step k starts at time s_k = k / n_steps"),
    (_flow_slip(time="reversed"), SLIP + "flow matching's time runs forwards"),
    (_flow_slip(scale=False), SLIP + "each Euler step moves by the step size times the velocity"),
    (_flow_slip(keep="last"), SLIP + "return the whole trajectory"),
    (_flow_slip(keep="no noise"), SLIP + "the trajectory starts with the noise itself"),
    (_flow_python_loop, "loop over the steps with jax.lax.scan"),
], n_cases=3)


# ------------------------------------------------------------------ the tests

OK = [(n, i) for n in sorted(ANSWERS) for i in range(len(ANSWERS[n]["ok"]))]
WRONG = [(n, i) for n in sorted(ANSWERS) for i in range(len(ANSWERS[n]["wrong"]))]


def _check(name, fn):
    spec = ANSWERS[name]
    ex = grading.exercise(name)
    if ex.trials is not None:
        check(name, fn, edge_cases=spec["edge_cases"])
    else:
        check(name, fn, n_cases=spec["n_cases"], seed=11, edge_cases=spec["edge_cases"])


@pytest.mark.parametrize("name,index", OK, ids=[f"{n}-ok{i}" for n, i in OK])
def test_correct_answer_passes(name, index):
    _check(name, ANSWERS[name]["ok"][index])


@pytest.mark.parametrize("name,index", WRONG, ids=[f"{n}-slip{i}" for n, i in WRONG])
def test_wrong_answer_fails_naming_its_slip(name, index):
    fn, expected = ANSWERS[name]["wrong"][index]
    with pytest.raises(CheckFailure) as info:
        _check(name, fn)
    text = str(info.value)
    if expected.startswith(SLIP):  # a named hint: on one of the "Likely slip" lines
        found = any(line.startswith(SLIP) and expected[len(SLIP):] in line for line in text.splitlines())
    else:
        found = expected in text
    assert found, f"expected {expected!r} in:\n{text}"


def test_counts(capsys):
    """At least 3 alternatives and 5 slips for every exercise of the suite; the table is printed (-s)."""
    rows = []
    for name in sorted(ANSWERS):
        spec = ANSWERS[name]
        named = sum(1 for _, text in spec["wrong"] if text.startswith(SLIP))
        rows.append((name, len(spec["ok"]), len(spec["wrong"]), named))
        assert len(spec["ok"]) >= 3 and len(spec["wrong"]) >= 5, name
    with capsys.disabled():
        print("\nexercise                     alternatives  slips  named hints")
        for name, ok, wrong, named in rows:
            print(f"{name:28s} {ok:12d} {wrong:6d} {named:12d}")


# ------------------------------------------------------------------ generic messages


def test_python_if_on_an_array_gets_the_jnp_where_advice():
    def forward_mean(x_prev, beta):
        if beta > 0.5:
            return x_prev
        return jnp.sqrt(1 - beta) * x_prev

    with pytest.raises(CheckFailure, match=r"TracerBoolConversionError") as info:
        check("forward_mean", forward_mean, n_cases=1)
    assert "The cause: a Python `if`" in str(info.value) and "jnp.where" in str(info.value)


def test_boolean_indexing_gets_the_jnp_where_advice():
    def forward_mean(x_prev, beta):
        x = jnp.atleast_1d(x_prev)
        return x.at[x > 0].set(0.0) * 0 + x[x > -100] * jnp.sqrt(1 - beta)

    with pytest.raises(CheckFailure, match=r"NonConcreteBooleanIndexError") as info:
        check("forward_mean", forward_mean, n_cases=1)
    assert "use jnp.where(mask, a, b)" in str(info.value)


def test_a_type_error_inside_the_answer_is_not_a_changed_signature():
    def q_sample(x0, alpha_bar_t, noise):
        return jnp.sqrt(alpha_bar_t, noise) * x0

    with pytest.raises(CheckFailure) as info:
        check("q_sample", q_sample, n_cases=1)
    assert "TypeError inside your code" in str(info.value) and "Keep the signature" not in str(info.value)
    with pytest.raises(CheckFailure, match=r"Keep the signature given in the exercise: q_sample\(x0, alpha_bar_t, noise\)"):
        check("q_sample", lambda x0, noise: x0, n_cases=1)


def test_an_unrolled_loop_is_stopped_before_it_compiles(capsys):
    """The loop answer of alpha_bars at T = 1000 took minutes and gigabytes to compile: it is now stopped while tracing,
    and run op by op without jit instead (issue 27: right but slow is right), with one line of advice."""
    import time

    start = time.perf_counter()
    check("alpha_bars", _alpha_bars_loop, n_cases=20, seed=107, edge_cases=True)
    assert time.perf_counter() - start < 60
    printed = capsys.readouterr().out
    assert re.search(r"alpha_bars: passed 20 of 20 test inputs.\n  note: traced under jax.jit your function has \d+ operations", printed)
    assert "run op by op without jit: right, but slow." in printed
    assert "use jnp.cumprod(1 - betas) (or jax.lax.scan)" in printed


def test_a_loop_too_slow_even_op_by_op_fails(monkeypatch):
    """Only an answer too slow even without jit fails, with the same advice."""
    from course_utils.grading import failures, trials

    monkeypatch.setattr(trials, "UNJITTED_SECONDS", 0.0)  # where the trials read it (and the message)
    monkeypatch.setattr(failures, "UNJITTED_SECONDS", 0.0)
    with pytest.raises(CheckFailure, match=r"alpha_bars: traced under jax.jit your function has \d+ operations") as info:
        check("alpha_bars", _alpha_bars_loop, n_cases=2)
    assert "too slow" in str(info.value) and "use jnp.cumprod(1 - betas) (or jax.lax.scan)" in str(info.value)


def test_the_cosine_schedule_as_a_loop_over_t_passes(capsys):
    """cosine_betas written as a Python loop over t (like diffusers' betas_for_alpha_bar) has right values: it passes."""
    def cosine_betas(T, s=0.008, max_beta=0.999):
        def alpha_bar(u):
            return jnp.cos((u + s) / (1 + s) * jnp.pi / 2) ** 2
        return jnp.stack([jnp.minimum(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), max_beta) for i in range(T)])

    check("cosine_betas", cosine_betas, n_cases=3, seed=105, edge_cases=True)
    assert "run op by op without jit" in capsys.readouterr().out


@pytest.mark.parametrize("got,text", [
    (lambda e: e[::-1] * 0 + jnp.concatenate([e[:1], e[:-1]]), "shifted by one step along the first axis"),
    (lambda e: e.T, "transposed"),
    (lambda e: 3 * e, "times a constant factor 3"),
    (lambda e: -e, "sign flipped"),
    (lambda e: e + 0.25, "plus a constant 0.25"),
], ids=["shift", "transpose", "factor", "sign", "offset"])
def test_generic_diagnoses(got, text):
    expected = np.arange(1.0, 13.0).reshape(4, 3) ** 1.5
    if text == "transposed":
        expected = expected[:3]
    lines = grading.diagnose(expected, np.asarray(got(jnp.asarray(expected))))
    assert any(text in line for line in lines), lines


def test_a_failure_of_a_dependent_exercise_names_the_earlier_one():
    with pytest.raises(CheckFailure, match=r"may call your `noise_loss_weight`"):
        check("noise_loss", lambda e, et, b, a, ab, s2: jnp.sum((e - et) ** 2) * b, n_cases=1)
