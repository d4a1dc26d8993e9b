r"""Scores, the probability-flow ODE, Langevin correction and flow matching (notebook 07).

A noise predictor is a scaled score (Tweedie's formula), so a diffusion model
also defines an ordinary differential equation whose solution carries
:math:`q(x_T) \approx \mathcal N(0, I)` to the data distribution, the
*probability-flow ODE* (Song et al. 2021). Its time here is
:math:`\lambda = \log\bar\alpha`, which is the VP SDE's
:math:`-\int_0^t\beta(s)\,ds`:

.. math::
    \frac{dx}{dt} = -\tfrac12\beta(t)\,\big(x + \nabla_x\log q_t(x)\big)
    \quad\Longleftrightarrow\quad
    \frac{dx}{d\log\bar\alpha} = \tfrac12\big(x + \nabla_x\log q(x)\big)
    = \tfrac12\Big(x - \frac{\epsilon(x)}{\sqrt{1-\bar\alpha}}\Big),

because :math:`d\log\bar\alpha / dt = -\beta(t)`. Discrete steps ``t`` of a
DDPM schedule are points :math:`\lambda_t = \log\bar\alpha_t` on that time
axis (:math:`\bar\alpha_0 = 1`, :math:`\lambda_0 = 0`), so a step may jump from
any ``t`` to any ``t_prev < t``.

Conventions as in :mod:`course_utils.sampling`: ``eps_fn(x, t)`` is a noise
predictor called like the course's models, with ``x`` (N, ...) and ``t`` (N,)
integer steps in 1..T; ``schedule`` is a :class:`course_utils.schedules.Schedule`.
Flow matching uses its own time :math:`s \in [0, 1]` from noise (0) to data (1).
"""

import functools
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from . import _validate as v
from ._validate import marked
from .analytic import forward_marginal_mean_var
from .guidance import TWO_PIXEL, Mixture, mixture_log_density
from .sampling import ddim_step
from .schedules import Schedule


# ---------------------------------------------------------------- scores


@v.reference(alpha_bar_t=v.check_open_unit)
def score_from_eps(eps, alpha_bar_t):
    r"""The score of the noised data from a noise prediction (Tweedie's formula).

    .. math::
        \nabla_{x_t}\log q(x_t) = -\frac{\mathbb E[\epsilon \mid x_t]}{\sqrt{1-\bar\alpha_t}}
        \approx -\frac{\epsilon_\theta(x_t, t)}{\sqrt{1-\bar\alpha_t}}

    ``eps`` and ``alpha_bar_t`` (in (0, 1)) broadcast against each other; the
    result has their broadcast shape.
    """
    return -eps / jnp.sqrt(1 - alpha_bar_t)


def mixture_score(x, alpha_bar, mixture: Mixture = TWO_PIXEL):
    r""":math:`\nabla_x \log q_{\bar\alpha}(x)` of the noised mixture, by ``jax.grad`` of its exact log-density.

    Defined for every :math:`\bar\alpha \in (0, 1]`, the data themselves (:math:`\bar\alpha = 1`) included, where
    ``-eps / sqrt(1 - alpha_bar)`` is 0 / 0. ``x``: (N, d); ``alpha_bar``: a number. Returns (N, d).
    """
    return jax.vmap(jax.grad(lambda point: mixture_log_density(point, mixture, alpha_bar)))(x)


# ---------------------------------------------------------------- the probability-flow ODE


def alpha_bar_at(schedule: Schedule, t):
    r""":math:`\bar\alpha_t` for integer steps ``t`` in 0..T (traced or not), with :math:`\bar\alpha_0 = 1`."""
    return jnp.where(t > 0, schedule.alpha_bars[jnp.maximum(t, 1) - 1], 1.0)


def _pf_velocity(eps_fn, x, t, alpha_bar):
    r""":math:`dx/d\log\bar\alpha = \frac12(x - \epsilon(x, t)/\sqrt{1-\bar\alpha_t})` at step ``t``."""
    eps = eps_fn(x, jnp.full((x.shape[0],), t))
    return 0.5 * (x - eps / jnp.sqrt(1 - alpha_bar))


@marked
def probability_flow_step(eps_fn, x_t, t, t_prev, schedule: Schedule):
    r"""One Euler step of the probability-flow ODE from step ``t`` back to ``t_prev`` < t, in the time :math:`\log\bar\alpha`.

    .. math::
        x_{t'} = x_t + h\,\tfrac12\Big(x_t - \frac{\epsilon(x_t, t)}{\sqrt{1-\bar\alpha_t}}\Big),
        \qquad h = \log\bar\alpha_{t'} - \log\bar\alpha_t = \log\frac{\bar\alpha_{t'}}{\bar\alpha_t} > 0,

    with :math:`\bar\alpha_0 = 1`. For consecutive steps
    :math:`h = -\log(1-\beta_t) \approx \beta_t`, which gives Song et al.'s (2021)
    discretisation :math:`x_{t-1} \approx x_t + \frac12\beta_t\,(x_t + \nabla\log q)`.
    ``x_t``: (N, ...); ``t`` in 1..T and ``t_prev`` in 0..t-1 integers (traced inside a scan).
    """
    ab_t, ab_prev = schedule.alpha_bars[t - 1], alpha_bar_at(schedule, t_prev)
    return x_t + jnp.log(ab_prev / ab_t) * _pf_velocity(eps_fn, x_t, t, ab_t)


@marked
def heun_step(eps_fn, x_t, t, t_prev, schedule: Schedule):
    r"""One step of Heun's method (the trapezoidal rule with an Euler predictor) on the same ODE.

    .. math::
        \tilde x = x_t + h\,f(x_t, t), \qquad
        x_{t'} = x_t + \frac h2\big(f(x_t, t) + f(\tilde x, t')\big),
        \qquad f(x, t) = \tfrac12\Big(x - \frac{\epsilon(x, t)}{\sqrt{1-\bar\alpha_t}}\Big),

    :math:`h = \log(\bar\alpha_{t'}/\bar\alpha_t)`. Two evaluations of ``eps_fn`` and an error of
    order :math:`h^2` per unit time instead of Euler's :math:`h`. At ``t_prev = 0`` the noise predictor
    is not defined (:math:`\bar\alpha_0 = 1`), so that step is the Euler step (as in Karras et al. 2022).
    """
    ab_t, ab_prev = schedule.alpha_bars[t - 1], alpha_bar_at(schedule, t_prev)
    h = jnp.log(ab_prev / ab_t)
    slope = _pf_velocity(eps_fn, x_t, t, ab_t)
    x_euler = x_t + h * slope
    safe_prev = jnp.maximum(t_prev, 1)
    slope_prev = _pf_velocity(eps_fn, x_euler, safe_prev, schedule.alpha_bars[safe_prev - 1])
    return jnp.where(t_prev > 0, x_t + 0.5 * h * (slope + slope_prev), x_euler)


@marked
def langevin_correct(score_fn, x, step_size, z):
    r"""One step of Langevin dynamics, the corrector of predictor-corrector sampling (Song et al. 2021).

    .. math::
        x \leftarrow x + \delta\,\nabla_x\log q(x) + \sqrt{2\delta}\,z, \qquad z \sim \mathcal N(0, I)

    ``score_fn(x)`` returns the score at ``x`` (the shape of ``x``); ``step_size`` :math:`\delta > 0`;
    ``z``: standard normal, shaped like ``x``. It leaves :math:`q` unchanged as :math:`\delta \to 0`.
    """
    return x + step_size * score_fn(x) + jnp.sqrt(2 * step_size) * z


def gaussian_flow(x_t, alpha_bar_t, alpha_bar_prev, m, p):
    r"""The exact solution of the probability-flow ODE for Gaussian data :math:`\mathcal N(m, p^2)` (notebook 03).

    The flow keeps each point's standard score :math:`(x - \mu_t)/\sqrt{v_t}` fixed:

    .. math::
        x_{t'} = \sqrt{\bar\alpha_{t'}}\,m + \sqrt{v_{t'}/v_t}\,\big(x_t - \sqrt{\bar\alpha_t}\,m\big),
        \qquad v_t = \bar\alpha_t p^2 + 1 - \bar\alpha_t .

    (Differentiate in :math:`\log\bar\alpha` and compare with the ODE, score :math:`-(x - \mu_t)/v_t`.)
    """
    mean_t, var_t = forward_marginal_mean_var.raw(alpha_bar_t, m, p)
    mean_prev, var_prev = forward_marginal_mean_var.raw(alpha_bar_prev, m, p)
    return mean_prev + jnp.sqrt(var_prev / var_t) * (x_t - mean_t)


def pf_log_likelihood(score_fn: Callable, x0, alpha_bars, prior_log_density=None):
    r"""The log-likelihood of points ``x0`` (N, d) under the probability-flow ODE, with the exact divergence.

    Along a solution :math:`x(\lambda)` of :math:`dx/d\lambda = f(x, \lambda) = \frac12(x + s(x, \lambda))`,
    :math:`\lambda = \log\bar\alpha`, the log-density changes by the divergence (the instantaneous change of
    variables, Chen et al. 2018):

    .. math::
        \frac{d\log q(x(\lambda))}{d\lambda} = -\nabla\!\cdot f = -\tfrac12\big(d + \operatorname{tr}\nabla_x s\big),
        \qquad
        \log q_0(x_0) = \log q_K(x_K) + \tfrac12\int_{0}^{\lambda_K}\big(d + \operatorname{tr}\nabla_x s\big)\,d\lambda .

    ``score_fn(x, alpha_bar)``: the score of a batch (N, d) at a noise level :math:`\bar\alpha` (a number).
    ``alpha_bars``: the grid (K + 1,), decreasing from 1 (the data) to :math:`\bar\alpha_K`; each interval is one
    Heun step of ``x`` and of the integral, the trace of the d x d Jacobian computed exactly with ``jax.jacfwd``
    (cheap in two dimensions). ``prior_log_density(x)`` (N,): :math:`\log q_K`, by default the standard normal's.
    Returns the (N,) log-likelihoods.
    """
    if prior_log_density is None:
        prior_log_density = _normal_log_density
    d = x0.shape[1]

    def field(x, ab):
        """dx/dlambda and d/dlambda of the accumulated integral, (N, d) and (N,)."""
        def one(point):
            return score_fn(point[None], ab)[0]
        s = score_fn(x, ab)
        trace = jax.vmap(lambda point: jnp.trace(jax.jacfwd(one)(point)))(x)
        return 0.5 * (x + s), 0.5 * (d + trace)

    def body(carry, abs_pair):
        x, integral = carry
        ab, ab_next = abs_pair
        h = jnp.log(ab_next) - jnp.log(ab)
        dx, di = field(x, ab)
        dx2, di2 = field(x + h * dx, ab_next)
        return (x + 0.5 * h * (dx + dx2), integral + 0.5 * h * (di + di2)), None

    (x_K, integral), _ = jax.lax.scan(body, (x0, jnp.zeros(x0.shape[0], x0.dtype)), (alpha_bars[:-1], alpha_bars[1:]))
    return prior_log_density(x_K) + integral


def noise_level_grid(n_steps, sigma_min=1e-3, sigma_max=100.0):
    r"""A grid of :math:`\bar\alpha` for :func:`pf_log_likelihood`: 1 (the data), then ``n_steps`` levels whose
    :math:`\bar\sigma = \sqrt{(1-\bar\alpha)/\bar\alpha}` are spaced geometrically from ``sigma_min`` to ``sigma_max``
    (fine where the data are sharp and where they are noise alike), shape (n_steps + 1,)."""
    sigma = jnp.geomspace(sigma_min, sigma_max, n_steps)
    return jnp.concatenate([jnp.ones(1), 1 / (1 + sigma**2)])


def _normal_log_density(x):
    return -0.5 * jnp.sum(x**2, axis=-1) - 0.5 * x.shape[-1] * jnp.log(2 * jnp.pi)


# ---------------------------------------------------------------- flow matching


@marked
def flow_matching_loss(model, x0, x1, t):
    r"""The conditional flow-matching loss on the straight path from noise ``x0`` to data ``x1`` (Lipman et al. 2023).

    .. math::
        x_s = (1 - s)\,x_0 + s\,x_1, \qquad
        L = \operatorname{mean}\,\big\lVert v_\theta(x_s, s) - (x_1 - x_0)\big\rVert^2

    ``x0``: standard normal noise (N, ...); ``x1``: data of the same shape; ``t``: times :math:`s \in [0, 1]`,
    shape (N,), one per example (time 0 is noise, time 1 is data). ``model(x, t)`` predicts the velocity.
    Averaged over examples and coordinates, as :func:`course_utils.training.ddpm_loss`.
    """
    s = t.reshape((-1,) + (1,) * (x0.ndim - 1))
    x_s = (1 - s) * x0 + s * x1
    return jnp.mean((model(x_s, t) - (x1 - x0)) ** 2)


@marked
def euler_flow_sample(velocity_fn, x, n_steps):
    r"""Integrate :math:`dx/ds = v(x, s)` from noise (s = 0) to data (s = 1) in ``n_steps`` Euler steps, in one ``lax.scan``.

    .. math::
        x_{k+1} = x_k + \Delta s\; v(x_k, s_k), \qquad s_k = k\,\Delta s,\ \Delta s = 1 / n

    ``velocity_fn(x, s)`` with ``s`` of shape (N,); ``x``: the noise (N, ...); ``n_steps``: a Python int.
    Returns the trajectory, shape (n_steps + 1, N, ...): ``[0]`` is the noise, ``[-1]`` the samples.
    """
    ds = 1.0 / n_steps

    def body(x, k):
        x_next = x + ds * velocity_fn(x, jnp.full((x.shape[0],), k * ds))
        return x_next, x_next

    _, xs = jax.lax.scan(body, x, jnp.arange(n_steps))
    return jnp.concatenate([x[None], xs])


class ContinuousTime(nnx.Module):
    """A model of integer time steps ``net(x, t)`` (``t`` in 1..T) called with a time ``s`` in [0, 1]: ``net(x, scale * s)``.

    Lets the course's MLP, whose sinusoidal time embedding is made for steps up to about 1000, predict a velocity."""

    def __init__(self, net, scale: float = 1000.0):
        self.net = net
        self.scale = scale

    def __call__(self, x, s):
        return self.net(x, self.scale * s)


def flow_matching_train_loss(model, x0, t, noise, alpha_bars, *, loss):
    r"""``loss`` (:func:`flow_matching_loss` or yours) with the signature of :func:`course_utils.training.ddpm_loss`,
    for :func:`course_utils.training.train`: data ``x0`` are the path's end, ``noise`` its start, and the integer steps
    ``t`` in 1..T become times :math:`s = (t - 1/2)/T` in (0, 1) (``alpha_bars`` only gives T)."""
    s = (t.astype(jnp.float32) - 0.5) / alpha_bars.shape[0]
    return loss(model, noise, x0, s)


# ---------------------------------------------------------------- the samplers side by side (notebook 07)

METHODS = ("DDPM", "DDIM", "PF Euler", "PF Heun", "PF Euler + Langevin")


def network_evaluations(method, n_steps):
    """How many calls of the noise predictor ``method`` makes in ``n_steps`` steps (no call at alpha_bar_0 = 1)."""
    return {"PF Heun": 2 * n_steps - 1, "PF Euler + Langevin": 2 * n_steps - 1}.get(method, n_steps)


def _split(fn):
    """(graphdef, state, None) for a flax module, (None, None, fn) for a function: a module's weights are traced, so
    that models of one structure share a compiled sampler."""
    if isinstance(fn, nnx.Module):
        graphdef, state = nnx.split(fn)
        return graphdef, state, None
    return None, None, fn


def _merge(graphdef, state, fn):
    return fn if graphdef is None else nnx.merge(graphdef, state)


def sample_with(method, eps_fn, x_T, n_steps, schedule: Schedule, key, langevin=0.1, *, euler, heun, corrector, score):
    r"""Samples from ``x_T`` (N, d) in ``n_steps`` evenly spaced steps T -> 0 with one of :data:`METHODS`, in one scan.

    "DDPM" is the strided DDPM step (DDIM with :math:`\eta = 1`), "DDIM" the deterministic DDIM step
    (:func:`course_utils.sampling.ddim_step`), "PF Euler" and "PF Heun" the steps of the probability-flow ODE
    (``euler``, ``heun``: :func:`probability_flow_step` and :func:`heun_step`, or yours), and "PF Euler + Langevin"
    adds after each Euler step to :math:`t' > 0` one Langevin step (``corrector``: :func:`langevin_correct`) on
    :math:`q_{t'}` with :math:`\delta = ` ``langevin`` :math:`(1 - \bar\alpha_{t'})` and the score
    ``score(eps, alpha_bar)`` (:func:`score_from_eps`). The steps are arguments, without defaults: while grading the
    course's own are not available (``autograder/keyless.py``), and these samplers run yours.
    ``eps_fn(x, t)``: a function (static: a new one compiles anew) or a flax model. Returns :math:`x_0`, (N, d).
    """
    if method not in METHODS:
        raise ValueError(f"sample_with: argument `method` must be one of {METHODS}, got {method!r}")
    return _sample(method, *_split(eps_fn), x_T, n_steps, schedule, key, langevin, euler=euler, heun=heun,
                   corrector=corrector, score=score)


@functools.partial(jax.jit, static_argnames=("method", "graphdef", "fn", "n_steps", "euler", "heun", "corrector", "score"))
def _sample(method, graphdef, state, fn, x_T, n_steps, schedule, key, langevin, *, euler, heun, corrector, score):
    eps_fn = _merge(graphdef, state, fn)
    steps = jnp.round(jnp.linspace(schedule.T, 0, n_steps + 1)).astype(jnp.int32)
    zs = jax.random.normal(key, (n_steps,) + x_T.shape, x_T.dtype)

    def body(x, step_and_z):
        (t, t_prev), z = step_and_z
        if method in ("DDPM", "DDIM"):
            return ddim_step(eps_fn, x, t, t_prev, schedule.alpha_bars, 1.0 if method == "DDPM" else 0.0, z), None
        x = (heun if method == "PF Heun" else euler)(eps_fn, x, t, t_prev, schedule)
        if method == "PF Euler + Langevin":
            safe = jnp.maximum(t_prev, 1)
            ab = schedule.alpha_bars[safe - 1]
            score_fn = lambda y: score(eps_fn(y, jnp.full((y.shape[0],), safe)), ab)  # noqa: E731
            x = jnp.where(t_prev > 0, corrector(score_fn, x, langevin * (1 - ab), z), x)
        return x, None

    x0, _ = jax.lax.scan(body, x_T, (jnp.stack([steps[:-1], steps[1:]], axis=1), zs))
    return x0


def flow_sample(velocity_fn, x, n_steps, *, sampler):
    """``sampler(velocity_fn, x, n_steps)`` (:func:`euler_flow_sample` or yours) compiled, for a function or a flax model."""
    return _flow_sample(*_split(velocity_fn), x, n_steps, sampler=sampler)


@functools.partial(jax.jit, static_argnames=("graphdef", "fn", "n_steps", "sampler"))
def _flow_sample(graphdef, state, fn, x, n_steps, *, sampler):
    return sampler(_merge(graphdef, state, fn), x, n_steps)
