"""Exercises of notebook 02 (mean versus noise loss)."""

import jax.numpy as jnp
import numpy as np

from .. import losses
from ..grading import Exercise, Hint, register
from .common import array as _array, f32 as _f32, shape as _shape, time_step as _time_step



def _posterior_case(rng):
    s = _shape(rng)
    return (_array(rng, s), _array(rng, s), *_time_step(rng))


def _pm(x0, xt, b, ab, abp, *, c0=None, ct=None):
    return c0(b, ab, abp) * x0 + ct(b, ab, abp) * xt


_C0 = lambda b, ab, abp: jnp.sqrt(abp) * b / (1 - ab)  # noqa: E731
_CT = lambda b, ab, abp: jnp.sqrt(1 - b) * (1 - abp) / (1 - ab)  # noqa: E731

register(Exercise(
    name="posterior_mean",
    reference=losses.posterior_mean,
    make_case=_posterior_case,
    edge_cases=[(np.ones(3, np.float32), np.zeros(3, np.float32), _f32(0.1), _f32(0.9), _f32(1.0))],
    hints=[
        Hint(lambda x0, xt, b, ab, abp: _CT(b, ab, abp) * x0 + _C0(b, ab, abp) * xt, "the two coefficients are swapped between x0 and x_t."),
        Hint(lambda x0, xt, b, ab, abp: _C0(b, ab, abp) * x0 + jnp.sqrt(ab) * (1 - abp) / (1 - ab) * xt,
             "the coefficient of x_t has sqrt(alpha_t) = sqrt(1 - beta_t), not sqrt(alpha_bar_t)."),
        Hint(lambda x0, xt, b, ab, abp: jnp.sqrt(ab) * b / (1 - ab) * x0 + _CT(b, ab, abp) * xt,
             "the coefficient of x0 has sqrt(alpha_bar_{t-1}), not sqrt(alpha_bar_t)."),
        Hint(lambda x0, xt, b, ab, abp: abp * b / (1 - ab) * x0 + (1 - b) * (1 - abp) / (1 - ab) * xt,
             "square roots are missing: sqrt(alpha_bar_{t-1}) and sqrt(alpha_t)."),
        Hint(lambda x0, xt, b, ab, abp: _C0(b, ab, abp) * x0 + (1 - b) * (1 - abp) / (1 - ab) * xt,
             "the coefficient of x_t has sqrt(alpha_t) = sqrt(1 - beta_t): the square root is missing."),
        Hint(lambda x0, xt, b, ab, abp: jnp.sqrt(abp) * b / (1 - abp) * x0 + jnp.sqrt(1 - b) * (1 - ab) / (1 - abp) * xt,
             "alpha_bar_t and alpha_bar_{t-1} are swapped: both coefficients are divided by 1 - alpha_bar_t, and x_t's "
             "has 1 - alpha_bar_{t-1} on top."),
    ],
))

register(Exercise(
    name="posterior_variance",
    reference=losses.posterior_variance,
    make_case=lambda rng: _time_step(rng),
    edge_cases=[(_f32(0.1), _f32(0.9), _f32(1.0))],
    hints=[
        Hint(lambda b, ab, abp: (1 - abp) / (1 - ab), "the ratio (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) multiplies beta_t."),
        Hint(lambda b, ab, abp: (1 - ab) / (1 - abp) * b, "the ratio is upside down: (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)."),
        Hint(lambda b, ab, abp: b + 0 * ab, "that is the forward variance beta_t; the posterior variance is smaller by (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)."),
        Hint(lambda b, ab, abp: jnp.sqrt((1 - abp) / (1 - ab) * b), "you returned a standard deviation; return the variance."),
        Hint(lambda b, ab, abp: (1 - abp) / (1 - ab) * (1 - b), "the ratio multiplies beta_t, not alpha_t = 1 - beta_t."),
        Hint(lambda b, ab, abp: (abp - ab) / (1 - ab) * b, "the numerator is 1 - alpha_bar_{t-1}, not alpha_bar_{t-1} - alpha_bar_t."),
    ],
))


def _mfn_case(rng):
    s = _shape(rng)
    b, ab, _ = _time_step(rng)
    return _array(rng, s), _array(rng, s), b, ab


register(Exercise(
    name="mean_from_noise",
    reference=losses.mean_from_noise,
    make_case=_mfn_case,
    hints=[
        Hint(lambda x, e, b, ab: (x - b / (1 - ab) * e) / jnp.sqrt(1 - b), "the coefficient of the noise depends on 1 - alpha_bar_t in the wrong way: compare with steps 1 and 4 of "
             "Derivation 1."),
        Hint(lambda x, e, b, ab: (x - b / jnp.sqrt(1 - ab) * e) / (1 - b), "the whole expression is divided by the wrong power of alpha_t: compare with step 3 of Derivation 1."),
        Hint(lambda x, e, b, ab: (x - b / jnp.sqrt(1 - ab) * e) / jnp.sqrt(ab), "the whole expression is divided by a function of alpha_bar_t, which step 3 of Derivation 1 removes from "
             "the coefficient of x_t: compare with your derivation."),
        Hint(lambda x, e, b, ab: x - b / jnp.sqrt(1 - ab) * e,
             "the coefficient of x_t is 1 in your answer, and the noise's is off by the same factor: compare with steps 3 "
             "and 4 of Derivation 1."),
        Hint(lambda x, e, b, ab: (x + b / jnp.sqrt(1 - ab) * e) / jnp.sqrt(1 - b), "the sign of the noise term is wrong: compare with step 1 of Derivation 1."),
        Hint(lambda x, e, b, ab: x / jnp.sqrt(1 - b) - b / jnp.sqrt(1 - ab) * e,
             "the coefficient of x_t is right but that of the noise is not: compare with step 4 of Derivation 1."),
    ],
))

register(Exercise(
    name="mean_loss",
    reference=losses.mean_loss,
    make_case=lambda rng: (lambda s: (_array(rng, s), _array(rng, s), _f32(rng.uniform(1e-3, 1.0))))(_shape(rng)),
    hints=[
        Hint(lambda m, mt, s2: jnp.sum((m - mt) ** 2) / s2, "the factor 1/2 is missing: divide by 2 * sigma2."),
        Hint(lambda m, mt, s2: jnp.sum((m - mt) ** 2) / (2 * jnp.sqrt(s2)), "sigma2 is already the variance: divide by 2 * sigma2, not by its square root."),
        Hint(lambda m, mt, s2: jnp.mean((m - mt) ** 2) / (2 * s2), "sum the squared errors over the coordinates; do not average them."),
        Hint(lambda m, mt, s2: (m - mt) ** 2 / (2 * s2), "return a single number: sum over all coordinates."),
        Hint(lambda m, mt, s2: jnp.sqrt(jnp.sum((m - mt) ** 2)) / (2 * s2), "the squared norm is needed, without a square root."),
        Hint(lambda m, mt, s2: jnp.sum((m - mt) ** 2) * s2 / 2, "divide by 2 * sigma2, do not multiply by it."),
    ],
))


def _noise_loss_case(rng):
    s = _shape(rng)
    b, ab, abp = _time_step(rng)
    sigma2 = b if rng.uniform() < 0.5 else losses.posterior_variance.raw(b, ab, abp) + _f32(1e-4)
    return _array(rng, s), _array(rng, s), b, _f32(1 - b), ab, _f32(sigma2)


def _weighted(weight):
    return lambda e, et, b, a, ab, s2: weight(b, a, ab, s2) * jnp.sum((e - et) ** 2)


def _weight_case(rng):
    """(beta_t, alpha_t, alpha_bar_t, sigma2): numbers, or (one case in two) arrays of 6 steps at once."""
    shape = () if rng.uniform() < 0.5 else (6,)
    b, ab, abp = (np.asarray(v, np.float32) for v in zip(*[_time_step(rng) for _ in range(max(1, int(np.prod(shape))))]))
    b, ab, abp = (v.reshape(shape) for v in (b, ab, abp))
    sigma2 = b if rng.uniform() < 0.5 else losses.posterior_variance.raw(b, ab, abp) + np.float32(1e-4)
    return b, np.asarray(1 - b, np.float32), ab, np.asarray(sigma2, np.float32)


def _weight_edge_cases():
    """The first and the last step of the linear schedule of Ho et al. (T = 1000, beta from 1e-4 to 0.02), with
    sigma2 = beta_t; a middle step with sigma2 = beta_tilde."""
    betas = np.linspace(1e-4, 0.02, 1000).astype(np.float32)
    ab = np.cumprod(1 - betas.astype(np.float64)).astype(np.float32)
    cases = []
    for t in (1, 1000):
        cases.append((betas[t - 1], np.float32(1 - betas[t - 1]), ab[t - 1], betas[t - 1]))
    t = 300
    beta_tilde = np.float32((1 - ab[t - 2]) / (1 - ab[t - 1]) * betas[t - 1])
    cases.append((betas[t - 1], np.float32(1 - betas[t - 1]), ab[t - 1], beta_tilde))
    return cases


# The slips of the derivation, as weights (one function each, shared with the hints of noise_loss). The messages say
# which part is wrong, not the right expression: Derivation 2, graded by hand, asks for it.
_W_RIGHT = lambda b, a, ab, s2: b**2 / (2 * s2 * a * (1 - ab))  # noqa: E731
_W_SLIPS = [
    (lambda b, a, ab, s2: b / (2 * s2 * a * (1 - ab)),
     "the weight's dependence on beta_t is wrong: compare with steps 2 and 3 of your Derivation 2."),
    (lambda b, a, ab, s2: b**2 / (s2 * a * (1 - ab)),
     "the factor 1/2 is missing: the KL term is ||mu_tilde - mu_theta||^2 / (2 sigma2)."),
    (lambda b, a, ab, s2: b**2 / (2 * s2 * ab * (1 - ab)),
     "the weight's dependence on alpha_t and alpha_bar_t is wrong: compare each factor with steps 2 and 3 of your "
     "Derivation 2."),
    (lambda b, a, ab, s2: b**2 / (2 * s2 * a * (1 - a)),
     "the weight's dependence on alpha_bar_t is wrong: compare with steps 2 and 3 of your Derivation 2."),
    (lambda b, a, ab, s2: b**2 / (2 * s2 * a * jnp.sqrt(1 - ab)),
     "the power of 1 - alpha_bar_t in the weight is wrong: compare with step 3 of your Derivation 2."),
    (lambda b, a, ab, s2: b**2 / (2 * s2 * jnp.sqrt(a) * (1 - ab)),
     "the power of alpha_t in the weight is wrong: compare with step 3 of your Derivation 2."),
    (lambda b, a, ab, s2: b**2 / (2 * s2**2 * a * (1 - ab)),
     "sigma2 is already the variance sigma_t^2: divide by 2 * sigma2, not by 2 * sigma2 ** 2."),
    (lambda b, a, ab, s2: b**2 / (2 * s2 * (1 - ab)),
     "your weight does not depend on alpha_t: compare with steps 2 and 3 of your Derivation 2."),
]

register(Exercise(
    name="noise_loss_weight",
    reference=losses.noise_loss_weight,
    make_case=_weight_case,
    edge_cases=_weight_edge_cases,
    hints=[Hint(w, message) for w, message in _W_SLIPS],
))


register(Exercise(
    name="noise_loss",
    reference=losses.noise_loss,
    depends_on=("noise_loss_weight",),
    make_case=_noise_loss_case,
    hints=[
        *(Hint(_weighted(w), message) for w, message in _W_SLIPS[:5]),
        Hint(lambda e, et, b, a, ab, s2: _W_RIGHT(b, a, ab, s2) * jnp.mean((e - et) ** 2), "sum the squared errors over the coordinates; do not average them."),
        Hint(lambda e, et, b, a, ab, s2: jnp.sum((e - et) ** 2) + 0 * b,
             "the weight (your noise_loss_weight) is missing: that is L_simple."),
        Hint(lambda e, et, b, a, ab, s2: _W_RIGHT(b, a, ab, s2) * jnp.sqrt(jnp.sum((e - et) ** 2)),
             "the weight multiplies the squared norm of eps - eps_theta, without a square root."),
    ],
))

register(Exercise(
    name="simple_loss",
    reference=losses.simple_loss,
    make_case=lambda rng: (lambda s: (_array(rng, s), _array(rng, s)))(_shape(rng)),
    hints=[
        Hint(lambda e, et: jnp.mean((e - et) ** 2), "sum the squared errors over the coordinates; do not average them."),
        Hint(lambda e, et: jnp.sum(jnp.abs(e - et)), "square the errors instead of taking absolute values."),
        Hint(lambda e, et: jnp.sqrt(jnp.sum((e - et) ** 2)), "L_simple is the squared norm, without a square root."),
        Hint(lambda e, et: (e - et) ** 2, "return a single number: sum over all coordinates."),
        Hint(lambda e, et: jnp.sum(e**2 - et**2), "square the difference (eps - eps_theta) ** 2, not each term on its own."),
    ],
))
