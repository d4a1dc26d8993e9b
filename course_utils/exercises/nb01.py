"""Exercises of notebook 01 (the forward process)."""

import jax.numpy as jnp
import numpy as np

from .. import forward, schedules
from ..grading import CheckFailure, Exercise, Hint, register, student_output
from .common import array as _array, f32 as _f32, shape as _shape


register(Exercise(
    name="forward_mean",
    reference=forward.forward_mean,
    make_case=lambda rng: (_array(rng, _shape(rng)), _f32(rng.uniform(1e-3, 0.99))),
    edge_cases=[(np.zeros(4, np.float32), _f32(0.5)), (np.ones((2, 2), np.float32), _f32(1e-4))],
    hints=[
        Hint(lambda x, b: (1 - b) * x, "the mean is sqrt(1 - beta) * x_prev: the square root is missing."),
        Hint(lambda x, b: jnp.sqrt(b) * x, "the mean scales x_prev by sqrt(1 - beta), not sqrt(beta)."),
        Hint(lambda x, b: jnp.sqrt(1 - b) + 0 * x, "the mean depends on x_prev: multiply by it."),
        Hint(lambda x, b: x, "x_prev must be scaled down by sqrt(1 - beta)."),
    ],
))

register(Exercise(
    name="forward_variance",
    reference=forward.forward_variance,
    make_case=lambda rng: (_f32(rng.uniform(1e-3, 0.99)),),
    edge_cases=[(_f32(1e-4),), (_f32(0.999),)],
    hints=[
        Hint(lambda b: jnp.sqrt(b), "you returned the standard deviation sqrt(beta); the variance is beta itself."),
        Hint(lambda b: 1 - b, "the variance of the added noise is beta, not 1 - beta."),
        Hint(lambda b: b**2, "the variance is beta, not beta squared."),
        Hint(lambda b: jnp.sqrt(1 - b), "sqrt(1 - beta) is the factor of the mean; the variance of the noise is beta."),
    ],
))

register(Exercise(
    name="forward_step",
    reference=forward.forward_step,
    depends_on=("forward_mean", "forward_variance"),
    make_case=lambda rng: (lambda s: (_array(rng, s), _f32(rng.uniform(1e-3, 0.99)), _array(rng, s)))(_shape(rng)),
    hints=[
        Hint(lambda x, b, e: jnp.sqrt(1 - b) * x + b * e, "the noise is scaled by the standard deviation sqrt(beta), not by the variance beta."),
        Hint(lambda x, b, e: (1 - b) * x + jnp.sqrt(b) * e, "the mean is sqrt(1 - beta) * x_prev: a square root is missing."),
        Hint(lambda x, b, e: jnp.sqrt(1 - b) * x + e, "the noise must be scaled by sqrt(beta)."),
        Hint(lambda x, b, e: jnp.sqrt(1 - b) * x, "the noise term sqrt(beta) * noise is missing."),
        Hint(lambda x, b, e: jnp.sqrt(1 - b) * x - jnp.sqrt(b) * e, "the noise is added (+ sqrt(beta) * noise), not subtracted."),
        Hint(lambda x, b, e: jnp.sqrt(b) * x + jnp.sqrt(1 - b) * e,
             "the two square roots are swapped: x_prev gets sqrt(1 - beta), the noise sqrt(beta)."),
    ],
))

register(Exercise(
    name="linear_betas",
    reference=schedules.linear_betas,
    make_case=lambda rng: (int(rng.choice([2, 10, 50, 200, 1000])), _f32(rng.uniform(1e-5, 1e-3)), _f32(rng.uniform(0.01, 0.3))),
    # T = 1: the text defines the single value as beta_start (what jnp.linspace gives); the formula
    # beta_start + (t - 1) / (T - 1) * (...) must then avoid 0 / 0 (the NaN message names the division).
    edge_cases=[(1, _f32(1e-4), _f32(0.02)), (1000, _f32(1e-4), _f32(0.02))],
    static_argnums=(0,),
    max_equations=2000,
    unrolled_message="Compute all T values at once: jnp.linspace(beta_start, beta_end, T), or jnp.arange(T) in the formula.",
    hints=[
        Hint(lambda T, a, b: jnp.linspace(a, b, T + 1)[1:], "off by one: T values from beta_start to beta_end, both ends included (jnp.linspace(beta_start, beta_end, T))."),
        Hint(lambda T, a, b: jnp.linspace(a, b, T + 1)[:-1], "off by one: the last value must be beta_end itself (jnp.linspace(beta_start, beta_end, T)); "
                                                           "in the formula divide by T - 1 (the gaps between T values), not T."),
        Hint(lambda T, a, b: jnp.linspace(b, a, T), "the betas increase from beta_start (beta_1) to beta_end (beta_T): the ends are swapped."),
    ],
))

register(Exercise(
    name="cosine_betas",
    reference=schedules.cosine_betas,
    make_case=lambda rng: (int(rng.choice([2, 10, 50, 200, 1000])), _f32(rng.uniform(1e-3, 0.02)), _f32(rng.uniform(0.5, 0.999))),
    edge_cases=[(1000, _f32(0.008), _f32(0.999)), (5, _f32(0.008), _f32(0.2))],
    static_argnums=(0,),
    max_equations=2000,
    unrolled_message="Compute alpha_bar for all t = 0..T at once with jnp.arange(T + 1), then take ratios of neighbours.",
    # cos(t) near pi/2 loses digits in float32: correct answers written in
    # different ways differ by up to ~1e-4 relative near t = T.
    rtol=5e-4, atol=1e-5,
    hints=[
        Hint(lambda T, s, m: schedules.cosine_betas.raw(T, s, 1.0), "the betas must be clipped at max_beta (jnp.minimum(..., max_beta)); without it beta_T is 1."),
        Hint(lambda T, s, m: jnp.minimum(1 - _cos_ab(T, s)[:-1] / jnp.concatenate([jnp.ones(1), _cos_ab(T, s)[:-2]]), m),
             "off by one in t: beta_t = 1 - alpha_bar(t) / alpha_bar(t - 1) for t = 1..T, with alpha_bar(0) = 1."),
        Hint(lambda T, s, m: jnp.minimum(1 - _cos_ab(T, s)[1:] / _cos_ab(T, s)[:-1], m) * 0 + schedules.cosine_betas.raw(T, 0.0, m),
             "the offset s is missing from the formula (cos((t/T + s) / (1 + s) * pi/2)^2)."),
        Hint(lambda T, s, m: _cos_beta_unsquared(T, s, m), "f(t) is the cosine squared: cos(...) ** 2."),
        Hint(lambda T, s, m: jnp.minimum(_cos_ab(T, s)[1:] / _cos_ab(T, s)[:-1], m),
             "beta_t = 1 - alpha_bar_t / alpha_bar_{t-1}: you returned the ratio itself."),
        Hint(lambda T, s, m: jnp.minimum(1 - _cos_ab(T, s)[1:], m),
             "take ratios of neighbours, alpha_bar_t / alpha_bar_{t-1}; 1 - alpha_bar_t is not beta_t."),
    ],
))


def _cos_ab(T, s):
    t = jnp.arange(T + 1, dtype=jnp.float32)
    f = jnp.cos((t / T + s) / (1 + s) * jnp.pi / 2) ** 2
    return f / f[0]


def _cos_beta_unsquared(T, s, m):
    t = jnp.arange(T + 1, dtype=jnp.float32)
    f = jnp.cos((t / T + s) / (1 + s) * jnp.pi / 2)
    ab = f / f[0]
    return jnp.minimum(1 - ab[1:] / ab[:-1], m)


_SCHEDULE_T = (50, 200, 1000)  # alpha_bar_T must be small for these
_SHORT_T = (2, 10)  # hidden tests: "any T" gives a valid schedule, too short to destroy the data


def _schedule_trials(edge_cases):
    return [(T,) for T in _SCHEDULE_T + (_SHORT_T if edge_cases else ())]


def _judge_schedule(ex, trials, results):
    """``my_betas(T)``: shape (T,), values in (0, 1), non-decreasing; alpha_bar_T below 0.05 for T >= 50."""
    for (T,), record in zip(trials, results):
        betas = np.asarray(student_output(ex, record, ["T"], (T,)))
        problems = []
        if betas.shape != (T,):
            problems.append(f"for T = {T} it must return shape ({T},), got {betas.shape}")
        elif not np.issubdtype(betas.dtype, np.number) or not np.all(np.isfinite(betas)):
            problems.append(f"for T = {T} some betas are NaN or infinite")
        elif not np.all((betas > 0) & (betas < 1)):
            problems.append(f"for T = {T} every beta must lie strictly between 0 and 1; the values range from {betas.min():.4g} to {betas.max():.4g}")
        elif np.any(np.diff(betas.astype(np.float64)) < -1e-7):
            k = int(np.argmax(np.diff(betas.astype(np.float64)) < -1e-7))
            problems.append(f"for T = {T} the betas must not decrease; beta_{k + 2} = {betas[k + 1]:.4g} < beta_{k + 1} = {betas[k]:.4g}")
        elif T in _SCHEDULE_T:
            ab_T = float(np.prod(1 - betas.astype(np.float64)))
            if ab_T >= 0.05:
                problems.append(f"for T = {T} alpha_bar_T = {ab_T:.3g}: the data are not destroyed by the end (want alpha_bar_T < 0.05); make the betas larger")
        if problems:
            raise CheckFailure(f"{ex.name}: " + "\n".join(problems))
    shown = ", ".join(str(T) for (T,) in trials)
    return f"valid schedule for T = {shown} (betas in (0, 1), non-decreasing, alpha_bar_T < 0.05 for T >= 50)."


register(Exercise(name="my_betas", reference=None, static_argnums=(0,), trials=_schedule_trials, judge=_judge_schedule,
                  max_equations=2000,
                  unrolled_message="Compute all T betas at once from jnp.arange(1, T + 1) (or jnp.linspace)."))

register(Exercise(
    name="alpha_bars",
    reference=schedules.alpha_bars,
    make_case=lambda rng: (np.sort(rng.uniform(1e-4, 0.3, size=int(rng.choice([1, 10, 100, 1000])))).astype(np.float32),),
    rtol=2e-4,
    # A Python loop over T is correct but unrolls: ~3 operations per step, and compiling the chain of products takes
    # 44 s at T = 300 and over 5 GB at T = 1000. The check traces first (cheap) and stops it in seconds.
    max_equations=250,
    unrolled_message="use jnp.cumprod(1 - betas) (or jax.lax.scan): a Python loop over T unrolls under jit.",
    hints=[
        Hint(lambda b: jnp.cumprod(b), "alpha_t = 1 - beta_t: take the cumulative product of 1 - betas, not of betas."),
        Hint(lambda b: 1 - jnp.cumprod(1 - b), "alpha_bar_t is the product itself, not 1 minus it."),
        Hint(lambda b: jnp.concatenate([jnp.ones(1), jnp.cumprod(1 - b)[:-1]]), "off by one: alpha_bar_1 = 1 - beta_1 already includes the first step."),
        Hint(lambda b: jnp.prod(1 - b) + 0 * b, "return every partial product (jnp.cumprod), not only the last one."),
        Hint(lambda b: 1 - jnp.cumsum(b), "multiply the alphas (jnp.cumprod), do not subtract the betas."),
    ],
))


def _summary_case(rng):
    """An increasing schedule of 1, 10, 100 or 1000 steps, betas from 1e-3 (1 - alpha_bar_t stays far from float32
    rounding, so that the SNR written in other correct ways agrees) up to 0.3 (less for long schedules, whose
    alpha_bar_T would otherwise underflow)."""
    T = int(rng.choice([1, 10, 100, 1000]))
    return (np.sort(rng.uniform(1e-3, 0.3 * min(1.0, 50 / T), size=T)).astype(np.float32),)


def _summary_with(prev="shift", snr=lambda ab: ab / (1 - ab), var=lambda b, ab, abp: (1 - abp) / (1 - ab) * b):
    """The summary with one slip: alpha_bar_{t-1} built another way, the SNR or the posterior variance written wrong."""
    def run(betas):
        ab = jnp.cumprod(1 - betas)
        abp = {"shift": jnp.concatenate([jnp.ones(1), ab[:-1]]),
               "roll": jnp.roll(ab, 1),
               "zero": jnp.concatenate([jnp.zeros(1), ab[:-1]]),
               "same": ab}[prev]
        return schedules.ScheduleSummary(ab, snr(ab), var(betas, ab, abp))
    return run


register(Exercise(
    name="schedule_summary",
    reference=schedules.schedule_summary,
    depends_on=("alpha_bars",),
    make_case=_summary_case,
    edge_cases=[(np.float32([0.02]),), (np.asarray(schedules.linear_betas.raw(1000, 1e-3, 0.02), np.float32),),
                (np.asarray(schedules.cosine_betas.raw(200), np.float32),)],
    output_names=("alpha_bars", "snr", "posterior_variances"),
    rtol=3e-4, atol=1e-6,
    max_equations=250,
    unrolled_message="build alpha_bar_{t-1} for every t at once (jnp.concatenate with a leading 1): a Python loop over T unrolls under jit.",
    hints=[
        Hint(_summary_with(prev="roll"), "jnp.roll(alpha_bars, 1) wraps alpha_bar_T around to the front: alpha_bar_0 = 1 "
                                         "belongs there (jnp.concatenate([jnp.ones(1), alpha_bars[:-1]]))."),
        Hint(_summary_with(prev="zero"), "alpha_bar_0 is 1 (nothing of the data is destroyed before the first step), not 0: "
                                         "the posterior variance at t = 1 must be 0."),
        Hint(_summary_with(prev="same"), "the posterior variance needs alpha_bar_{t-1}, the value one step earlier, "
                                         "not alpha_bar_t (with it the ratio is 1 and you get beta_t back)."),
        Hint(_summary_with(snr=lambda ab: (1 - ab) / ab), "the SNR is signal over noise: alpha_bar_t / (1 - alpha_bar_t), not its inverse."),
        Hint(_summary_with(snr=lambda ab: jnp.sqrt(ab / (1 - ab))), "the SNR is a ratio of variances, alpha_bar_t / (1 - alpha_bar_t), "
                                                                  "without a square root."),
        Hint(_summary_with(snr=lambda ab: ab), "the SNR divides the signal's variance alpha_bar_t by the noise's, 1 - alpha_bar_t."),
        Hint(_summary_with(var=lambda b, ab, abp: (1 - ab) / (1 - abp) * b), "the ratio of the posterior variance is upside down: "
                                                                           "(1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)."),
        Hint(_summary_with(var=lambda b, ab, abp: (1 - abp) / (1 - ab)), "the ratio (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) multiplies beta_t."),
    ],
))


def _diffuse_case(rng):
    T = int(rng.integers(1, 40))
    x0 = _array(rng, (int(rng.integers(1, 6)), 2))
    betas = np.linspace(rng.uniform(1e-3, 0.05), rng.uniform(0.1, 0.5), T).astype(np.float32)
    return x0, betas, _array(rng, (T,) + x0.shape)


def _diffuse_with(step):
    def run(x0, betas, noises):
        xs = [x0]
        for beta, noise in zip(betas, noises):
            xs.append(step(xs[-1], beta, noise, x0))
        return jnp.stack(xs)
    return run


register(Exercise(
    name="diffuse",
    reference=forward.diffuse,
    depends_on=("forward_step",),
    make_case=_diffuse_case,
    rtol=1e-4, atol=1e-5,
    requires=("scan", "while"),
    requires_message="loop over the time steps with jax.lax.scan (a Python for loop unrolls all T steps into one huge compiled program).",
    hints=[
        Hint(lambda x0, b, n: forward.diffuse.raw(x0, b, n)[1:], "return x_0 too: the result has T + 1 entries, xs[t] = x_t."),
        Hint(_diffuse_with(lambda x, b, e, x0: jnp.sqrt(1 - b) * x0 + jnp.sqrt(b) * e),
             "each step starts from the previous x_{t-1}, not from x0."),
        Hint(_diffuse_with(lambda x, b, e, x0: jnp.sqrt(1 - b) * x + b * e),
             "the noise is scaled by sqrt(beta_t), not beta_t."),
        Hint(lambda x0, b, n: jnp.concatenate([x0[None], forward.diffuse.raw(x0, b, n)[:-1]]),
             "each entry is the state after its step: the scan body must return (x_t, x_t), not (x_t, x_{t-1})."),
    ],
))

register(Exercise(
    name="q_sample",
    reference=forward.q_sample,
    make_case=lambda rng: (lambda s: (_array(rng, s), _f32(rng.uniform(1e-3, 0.999)), _array(rng, s)))(_shape(rng)),
    edge_cases=[(np.ones(3, np.float32), _f32(1.0), np.ones(3, np.float32))],
    hints=[
        Hint(lambda x, a, e: a * x + (1 - a) * e, "both coefficients are square roots: sqrt(alpha_bar) and sqrt(1 - alpha_bar)."),
        Hint(lambda x, a, e: jnp.sqrt(a) * x + (1 - a) * e, "the noise is scaled by sqrt(1 - alpha_bar), not 1 - alpha_bar."),
        Hint(lambda x, a, e: jnp.sqrt(a) * x + jnp.sqrt(a) * e, "the noise is scaled by sqrt(1 - alpha_bar)."),
        Hint(lambda x, a, e: jnp.sqrt(1 - a) * x + jnp.sqrt(a) * e, "the two coefficients are swapped: x0 gets sqrt(alpha_bar)."),
        Hint(lambda x, a, e: jnp.sqrt(a) * x - jnp.sqrt(1 - a) * e, "the noise is added (+ sqrt(1 - alpha_bar) * noise), not subtracted."),
        Hint(lambda x, a, e: jnp.sqrt(a) * x + 0 * e, "the noise term sqrt(1 - alpha_bar) * noise is missing."),
    ],
))

