r"""Scores, the probability-flow ODE, Langevin correction and flow matching (notebook 07).

A noise predictor is a scaled score (Tweedie's formula), so a diffusion model
also defines an ordinary differential equation whose solution carries
:math:`q(x_T) \approx \mathcal N(0, I)` to the data distribution, the
*probability-flow ODE* (Song, Sohl-Dickstein, Kingma, Kumar, Ermon and Poole 2021, "Score-based generative
modeling through stochastic differential equations"). Its time here is
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
    :math:`h = -\log(1-\beta_t) \approx \beta_t`, which gives the score-SDE paper's (Song, Sohl-Dickstein,
    Kingma et al. 2021) discretisation :math:`x_{t-1} \approx x_t + \frac12\beta_t\,(x_t + \nabla\log q)`.
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
    r"""One step of Langevin dynamics, the corrector of predictor-corrector sampling (Song, Sohl-Dickstein, Kingma et al. 2021).

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


def mixture_flow_velocity(x, s, mixture: Mixture = TWO_PIXEL):
    r"""The exact flow-matching velocity :math:`\mathbb E[x_1 - x_0 \mid x_s]` of the straight path from standard normal
    noise :math:`x_0` to the mixture's data :math:`x_1`: the field a perfect flow-matching network learns.

    On the path :math:`x_s = (1 - s)\,x_0 + s\,x_1` component :math:`k` gives
    :math:`x_s \sim \mathcal N(s\mu_k, c_s I)`, :math:`c_s = (1-s)^2 + s^2\sigma^2`, and

    .. math::
        \mathbb E[x_1 \mid x_s, k] = \mu_k + \frac{s\,\sigma^2}{c_s}\,(x_s - s\mu_k), \qquad
        \mathbb E[x_1 - x_0 \mid x_s] = \frac{\mathbb E[x_1 \mid x_s] - x_s}{1 - s},

    the components weighted by their posterior probabilities given :math:`x_s`. ``x``: (N, d); ``s``: a number or
    (N,), in [0, 1) (at s = 0 it is :math:`\mathbb E[x_1] - x`). Returns (N, d).
    """
    means = jnp.asarray(mixture.means, x.dtype)
    s = jnp.broadcast_to(jnp.asarray(s, x.dtype), x.shape[:1])[:, None]                  # (N, 1)
    c = (1 - s) ** 2 + s ** 2 * mixture.std ** 2                                           # (N, 1)
    diff = x[:, None, :] - s[:, :, None] * means[None]                                     # (N, K, d)
    logits = jnp.log(jnp.asarray(mixture.weights, x.dtype))[None] - 0.5 * jnp.sum(diff ** 2, -1) / c
    posterior = jax.nn.softmax(logits, axis=1)                                             # (N, K)
    x1 = jnp.sum(posterior[..., None] * (means[None] + (s * mixture.std ** 2 / c)[:, :, None] * diff), axis=1)
    return (x1 - x) / (1 - s)


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
    r"""Samples from ``x_T`` (N, d) in ``n_steps`` evenly spaced steps T -> 0 with one of :data:`METHODS`.

    "DDPM" is the strided DDPM step (DDIM with :math:`\eta = 1`), "DDIM" the deterministic DDIM step
    (:func:`course_utils.sampling.ddim_step`), "PF Euler" and "PF Heun" the steps of the probability-flow ODE
    (``euler``, ``heun``: :func:`probability_flow_step` and :func:`heun_step`, or yours), and "PF Euler + Langevin"
    adds after each Euler step to :math:`t' > 0` one Langevin step (``corrector``: :func:`langevin_correct`) on
    :math:`q_{t'}` with :math:`\delta = ` ``langevin`` :math:`(1 - \bar\alpha_{t'})` and the score
    ``score(eps, alpha_bar)`` (:func:`score_from_eps`). The steps are arguments, without defaults: while grading the
    course's own are not available (``autograder/keyless.py``), and these samplers run yours.
    ``eps_fn(x, t)``: a function (static: a new one compiles anew) or a flax model.

    The visited steps are :math:`t_k = \mathrm{round}(T (n - k) / n)`, k = 0..n; step k draws its noise
    ``z`` (used by "DDPM" and the corrector) from ``jax.random.fold_in(key, k)``. The method and ``n_steps`` are
    traced (a ``lax.switch`` inside a ``fori_loop``), so one compilation serves every method and step count of a
    model structure. Returns :math:`x_0`, (N, d).
    """
    if method not in METHODS:
        raise ValueError(f"sample_with: argument `method` must be one of {METHODS}, got {method!r}")
    if not 1 <= int(n_steps) <= schedule.T:
        raise ValueError(f"sample_with: argument `n_steps` must lie in 1..T = {schedule.T}, got {n_steps}")
    return _sample(jnp.int32(METHODS.index(method)), *_split(eps_fn), x_T, jnp.int32(n_steps), schedule, key,
                   jnp.float32(langevin), euler=euler, heun=heun, corrector=corrector, score=score)


@functools.partial(jax.jit, static_argnames=("graphdef", "fn", "euler", "heun", "corrector", "score"))
def _sample(method, graphdef, state, fn, x_T, n_steps, schedule, key, langevin, *, euler, heun, corrector, score):
    eps_fn = _merge(graphdef, state, fn)
    T = schedule.alpha_bars.shape[0]

    def step_at(k):
        return jnp.round(T * (n_steps - k) / n_steps).astype(jnp.int32)

    def ddpm(x, t, t_prev, z):
        return ddim_step(eps_fn, x, t, t_prev, schedule.alpha_bars, 1.0, z)

    def ddim(x, t, t_prev, z):
        return ddim_step(eps_fn, x, t, t_prev, schedule.alpha_bars, 0.0, z)

    def pf_euler(x, t, t_prev, z):
        return euler(eps_fn, x, t, t_prev, schedule)

    def pf_heun(x, t, t_prev, z):
        return heun(eps_fn, x, t, t_prev, schedule)

    def pf_euler_langevin(x, t, t_prev, z):
        x = euler(eps_fn, x, t, t_prev, schedule)
        safe = jnp.maximum(t_prev, 1)
        ab = schedule.alpha_bars[safe - 1]
        score_fn = lambda y: score(eps_fn(y, jnp.full((y.shape[0],), safe)), ab)  # noqa: E731
        return jnp.where(t_prev > 0, corrector(score_fn, x, langevin * (1 - ab), z), x)

    branches = {"DDPM": ddpm, "DDIM": ddim, "PF Euler": pf_euler, "PF Heun": pf_heun,
                "PF Euler + Langevin": pf_euler_langevin}

    def body(k, x):
        z = jax.random.normal(jax.random.fold_in(key, k), x.shape, x.dtype)
        out = jax.lax.switch(method, [branches[m] for m in METHODS], x, step_at(k), step_at(k + 1), z)
        return out.astype(x.dtype)

    return jax.lax.fori_loop(0, n_steps, body, x_T)


def flow_sample(velocity_fn, x, n_steps, *, sampler):
    """``sampler(velocity_fn, x, n_steps)`` (:func:`euler_flow_sample` or yours) compiled, for a function or a flax model."""
    return _flow_sample(*_split(velocity_fn), x, n_steps, sampler=sampler)


@functools.partial(jax.jit, static_argnames=("graphdef", "fn", "n_steps", "sampler"))
def _flow_sample(graphdef, state, fn, x, n_steps, *, sampler):
    return sampler(_merge(graphdef, state, fn), x, n_steps)


# ---------------------------------------------------------------- what the network predicts: eps, x0 or v (notebook 07)
#
# With x_t = sqrt(ab) x0 + sqrt(1 - ab) eps, any one of eps, x0 and the velocity v = sqrt(ab) eps - sqrt(1 - ab) x0
# (Salimans and Ho 2022) determines the other two given x_t, so a network that predicts any of them is a noise
# predictor, and so a score model. One function per conversion; each works elementwise and broadcasts.

PREDICTIONS = ("eps", "x0", "v")
"""The targets a network can be trained to predict: the noise, the clean data, the velocity."""


def velocity_target(x0, eps, alpha_bar_t):
    r"""The velocity :math:`v = \sqrt{\bar\alpha_t}\,\epsilon - \sqrt{1-\bar\alpha_t}\,x_0` (Salimans and Ho 2022).

    It is :math:`dx_t/d\phi` on the circle :math:`x_t = \cos\phi\,x_0 + \sin\phi\,\epsilon`,
    :math:`\cos\phi = \sqrt{\bar\alpha_t}`. Arguments broadcast; the result has their broadcast shape."""
    return jnp.sqrt(alpha_bar_t) * eps - jnp.sqrt(1 - alpha_bar_t) * x0


def x0_from_eps(eps, x_t, alpha_bar_t):
    r""":math:`\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\hat\epsilon) / \sqrt{\bar\alpha_t}`: the clean data a noise
    prediction implies (Tweedie's estimate of :math:`\mathbb E[x_0 \mid x_t]` when :math:`\hat\epsilon` is exact)."""
    return (x_t - jnp.sqrt(1 - alpha_bar_t) * eps) / jnp.sqrt(alpha_bar_t)


def eps_from_x0(x0, x_t, alpha_bar_t):
    r""":math:`\hat\epsilon = (x_t - \sqrt{\bar\alpha_t}\,\hat x_0) / \sqrt{1-\bar\alpha_t}`: the noise a prediction
    of the clean data implies. Arguments broadcast; the result has their broadcast shape."""
    return (x_t - jnp.sqrt(alpha_bar_t) * x0) / jnp.sqrt(1 - alpha_bar_t)


def v_from_eps(eps, x_t, alpha_bar_t):
    r""":math:`\hat v = (\hat\epsilon - \sqrt{1-\bar\alpha_t}\,x_t) / \sqrt{\bar\alpha_t}`: the velocity a noise
    prediction implies (:func:`velocity_target` with :math:`\hat x_0` of :func:`x0_from_eps`)."""
    return (eps - jnp.sqrt(1 - alpha_bar_t) * x_t) / jnp.sqrt(alpha_bar_t)


def eps_from_v(v, x_t, alpha_bar_t):
    r""":math:`\hat\epsilon = \sqrt{1-\bar\alpha_t}\,x_t + \sqrt{\bar\alpha_t}\,\hat v`: the noise a velocity
    prediction implies. Arguments broadcast; the result has their broadcast shape."""
    return jnp.sqrt(1 - alpha_bar_t) * x_t + jnp.sqrt(alpha_bar_t) * v


def score_from_x0(x0, x_t, alpha_bar_t):
    r"""The score from a prediction of the clean data (Tweedie's formula in its :math:`x_0` form):

    .. math::
        \nabla_{x_t}\log q(x_t) = -\frac{x_t - \sqrt{\bar\alpha_t}\,\mathbb E[x_0 \mid x_t]}{1-\bar\alpha_t} ."""
    return -(x_t - jnp.sqrt(alpha_bar_t) * x0) / (1 - alpha_bar_t)


def score_from_v(v, x_t, alpha_bar_t):
    r"""The score from a velocity prediction:
    :math:`\nabla\log q(x_t) = -x_t - \sqrt{\bar\alpha_t/(1-\bar\alpha_t)}\;\mathbb E[v \mid x_t]`."""
    return -x_t - jnp.sqrt(alpha_bar_t / (1 - alpha_bar_t)) * v


def signal_to_noise(alpha_bar_t):
    r"""The signal-to-noise ratio :math:`\mathrm{SNR}_t = \bar\alpha_t / (1-\bar\alpha_t)` of :math:`x_t`."""
    return alpha_bar_t / (1 - alpha_bar_t)


def min_snr_weight(alpha_bar_t, gamma, prediction="eps"):
    r"""The min-SNR-:math:`\gamma` loss weight (Hang et al. 2023) for a network that predicts ``prediction``.

    Min-SNR weighting trains every target on the same objective,
    :math:`\min(\mathrm{SNR}_t, \gamma)\,\lVert x_0 - \hat x_0\rVert^2`; in each target's own squared error that is

    .. math::
        w_\epsilon = \frac{\min(\mathrm{SNR}_t, \gamma)}{\mathrm{SNR}_t}, \qquad
        w_{x_0} = \min(\mathrm{SNR}_t, \gamma), \qquad
        w_v = \frac{\min(\mathrm{SNR}_t, \gamma)}{\mathrm{SNR}_t + 1},

    because :math:`\lVert\epsilon - \hat\epsilon\rVert^2 = \mathrm{SNR}_t\lVert x_0 - \hat x_0\rVert^2` and
    :math:`\lVert v - \hat v\rVert^2 = (1 + \mathrm{SNR}_t)\lVert x_0 - \hat x_0\rVert^2`. ``prediction``: one of
    :data:`PREDICTIONS` or its index (traced or not). ``alpha_bar_t`` in (0, 1); ``gamma`` > 0 (Hang et al.: 5).
    """
    snr = signal_to_noise(alpha_bar_t)
    clipped = jnp.minimum(snr, gamma)
    weights = jnp.stack(jnp.broadcast_arrays(clipped / snr, clipped, clipped / (snr + 1)))
    index = PREDICTIONS.index(prediction) if isinstance(prediction, str) else prediction
    return weights[index]


class Predictor(nnx.Module):
    r"""A network ``net(x, t)`` trained to predict ``prediction`` (:data:`PREDICTIONS`), called as a noise predictor.

    ``Predictor(net, alpha_bars, "v")(x, t)`` returns the noise that the network's velocity implies
    (:func:`eps_from_v`), so every sampler of the course, and :func:`score_from_eps`, use it unchanged;
    :meth:`raw` returns the network's own output. ``min_snr_gamma``: train with the min-SNR weight
    (:func:`min_snr_weight`), or None for the plain squared error of the target. The target and the weighting are
    ``nnx.Variable`` s (not Python constants), so that predictors of every kind share one graph and train together
    under ``jax.vmap`` (:func:`course_utils.training.train_many` with :func:`prediction_loss`).
    """

    def __init__(self, net, alpha_bars, prediction="eps", min_snr_gamma=None):
        if prediction not in PREDICTIONS:
            raise ValueError(f"Predictor: argument `prediction` must be one of {PREDICTIONS}, got {prediction!r}")
        if min_snr_gamma is not None and not min_snr_gamma > 0:
            raise ValueError(f"Predictor: argument `min_snr_gamma` must be None or positive, got {min_snr_gamma!r}")
        self.net = net
        self.alpha_bars = nnx.Variable(jnp.asarray(alpha_bars, jnp.float32))
        self.prediction = nnx.Variable(jnp.int32(PREDICTIONS.index(prediction)))
        self.weighted = nnx.Variable(jnp.bool_(min_snr_gamma is not None))
        self.gamma = nnx.Variable(jnp.float32(1.0 if min_snr_gamma is None else min_snr_gamma))

    def raw(self, x, t):
        """The network's own output: its prediction of the noise, of x0 or of v."""
        return self.net(x, t)

    def __call__(self, x, t):
        ab = self.alpha_bars[...][t - 1].reshape((-1,) + (1,) * (x.ndim - 1))
        out = self.raw(x, t)
        return jax.lax.switch(self.prediction[...], [lambda o: o, lambda o: eps_from_x0(o, x, ab),
                                                     lambda o: eps_from_v(o, x, ab)], out)


def prediction_loss(model: Predictor, x0, t, noise, alpha_bars):
    r"""The training loss of a :class:`Predictor`, with the signature of :func:`course_utils.training.ddpm_loss`.

    .. math::
        L = \operatorname{mean}\, w_t\,\lVert \mathrm{net}(x_t, t) - y\rVert^2, \qquad
        y \in \{\epsilon,\ x_0,\ v\}, \qquad x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon,

    with :math:`w_t = 1`, or :func:`min_snr_weight` when the predictor is min-SNR weighted. For
    ``Predictor(net, ab, "eps")`` it is :func:`course_utils.training.ddpm_loss` of ``net``.
    """
    ab = alpha_bars[t - 1].reshape((-1,) + (1,) * (x0.ndim - 1))
    x_t = jnp.sqrt(ab) * x0 + jnp.sqrt(1 - ab) * noise
    kind = model.prediction[...]
    target = jax.lax.switch(kind, [lambda: noise, lambda: x0, lambda: velocity_target(x0, noise, ab)])
    weight = jnp.where(model.weighted[...], min_snr_weight(ab, model.gamma[...], kind), 1.0)
    return jnp.mean(weight * (model.raw(x_t, t) - target) ** 2)


def eps_errors(model, schedule: Schedule, x0, noise, steps, mixture: Mixture = TWO_PIXEL):
    r"""The mean squared error of a noise predictor against the exact one of the mixture, at each of ``steps``.

    .. math::
        e_t = \operatorname{mean}\,\lVert \epsilon_\theta(x_t, t) - \epsilon^*(x_t, t)\rVert^2
            = (1-\bar\alpha_t)\,\operatorname{mean}\,\lVert s_\theta - \nabla\log q_t\rVert^2,
        \qquad x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon,

    averaged over coordinates, with :math:`\epsilon^*` = :func:`course_utils.guidance.mixture_eps`. ``model(x, t)``: a
    flax module or a function; ``x0`` (N, d) data; ``noise`` (K, N, d), one draw per step; ``steps`` (K,) in 1..T.
    Returns (K,), numpy.
    """
    return jax.device_get(_eps_errors(*_split(model), mixture, x0, noise, jnp.asarray(steps), schedule.alpha_bars))


@functools.partial(jax.jit, static_argnames=("graphdef", "fn", "mixture"))
def _eps_errors(graphdef, state, fn, mixture, x0, noise, steps, alpha_bars):
    from .guidance import mixture_eps
    model = _merge(graphdef, state, fn)

    def at(t_and_noise):
        t, e = t_and_noise
        ab = alpha_bars[t - 1]
        x_t = jnp.sqrt(ab) * x0 + jnp.sqrt(1 - ab) * e
        return jnp.mean((model(x_t, jnp.full((x0.shape[0],), t)) - mixture_eps(x_t, ab, mixture)) ** 2)

    return jax.lax.map(at, (steps, noise))


def velocity_errors(model, x1, noise, times, mixture: Mixture = TWO_PIXEL):
    r"""The mean squared error of a velocity field against the exact flow-matching velocity of the mixture, at each time.

    .. math::
        e_s = \operatorname{mean}\,\lVert v_\theta(x_s, s) - \mathbb E[x_1 - x_0 \mid x_s]\rVert^2, \qquad
        x_s = (1 - s)\,x_0 + s\,x_1,

    averaged over coordinates, the exact velocity from :func:`mixture_flow_velocity`. ``model(x, s)``: a flax module
    or a function; ``x1`` (N, d) data; ``noise`` (K, N, d), one draw per time; ``times`` (K,) in [0, 1). Returns (K,),
    numpy.
    """
    return jax.device_get(_velocity_errors(*_split(model), mixture, x1, noise, jnp.asarray(times, jnp.float32)))


@functools.partial(jax.jit, static_argnames=("graphdef", "fn", "mixture"))
def _velocity_errors(graphdef, state, fn, mixture, x1, noise, times):
    model = _merge(graphdef, state, fn)

    def at(s_and_noise):
        s, e = s_and_noise
        x_s = (1 - s) * e + s * x1
        return jnp.mean((model(x_s, jnp.full((x1.shape[0],), s)) - mixture_flow_velocity(x_s, s, mixture)) ** 2)

    return jax.lax.map(at, (times, noise))


def consistent_with(values, target, label="value", n_samples=None):
    r"""Whether several measurements of one quantity agree with a known ``target`` within their spread.

    The mean differs from ``target`` by more than twice its standard error (:math:`2 s/\sqrt n`, about a 95 %
    interval) or not. With ``n_samples`` (each value a fraction of that many points) the variance of one value is
    taken as at least the binomial :math:`p(1-p)/N` of the target, so that three runs that happen to agree closely do
    not claim a precision their sample sizes cannot give. Returns {"agrees": bool, "difference", "se", "text"}, the text a one-line verdict,
    "PASS" (consistent with the target: the runs cannot tell them apart, which with few runs is a weak statement)
    when they agree within the spread and "FAIL" when the difference is larger.
    """
    import numpy as np
    x = np.asarray(values, np.float64).reshape(-1)
    if x.size < 2:
        raise ValueError(f"consistent_with: need at least two values for a spread, got {x.size}")
    variance = x.var(ddof=1)
    if n_samples is not None:   # each value is a fraction of n_samples points: at least the binomial variance
        variance = max(variance, target * (1 - target) / n_samples)
    se = float(np.sqrt(variance / x.size))
    difference = float(x.mean() - target)
    agrees = bool(abs(difference) <= 2 * se)
    verdict = (f"PASS: consistent with {target:g}, within twice the standard error" if agrees
               else f"FAIL: not consistent with {target:g}, more than twice the standard error")
    weak = f"; with n = {x.size} a weak test" if x.size < 10 else ""
    text = (f"{label} {x.mean():.4f} +- {x.std(ddof=1):.4f} (n = {x.size}) against {target:g}: "
            f"difference {difference:+.4f}, standard error {se:.4f}: {verdict}{weak}")
    return {"agrees": agrees, "difference": difference, "se": se, "text": text}
