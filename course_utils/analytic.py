r"""The exact reverse process when the data are Gaussian (notebook 03).

Data :math:`x_0 \sim \mathcal N(m, p^2)` in one dimension (``p`` is the
standard deviation). Every :math:`x_t` of the forward process is then Gaussian
too, and so is every reverse step :math:`q(x_{t-1} \mid x_t)`, so the whole
reverse process can be written down and run without a network. Notation used
below, with :math:`\alpha_t = 1 - \beta_t` and :math:`\bar\alpha_0 = 1`:

.. math::
    v_t = \bar\alpha_t\,p^2 + 1 - \bar\alpha_t \qquad (\text{the variance of } x_t,\ v_0 = p^2).

Conventions as everywhere in the course: ``betas`` has shape ``(T,)`` with
``betas[t - 1]`` = :math:`\beta_t`, and a time step ``t`` is an integer in
1..T (a Python int or an integer array; inside ``jax.jit`` and
``jax.lax.scan`` it is traced, so nothing here branches on its value).
Arrays ``x_t`` have any shape; ``t`` broadcasts against them.
"""

import functools
import inspect
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _validate as v
from .losses import mean_from_noise, posterior_mean, posterior_variance
from .schedules import check_betas, make_schedule


# ---------------------------------------------------------------- argument checks


def _check_real(where, name, value):
    """A finite number (or array of them)."""
    if v._is_traced(value):
        return
    arr = v._concrete(where, name, value)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{where}: argument `{name}` must be finite, got {v._describe(arr)}")


def _with_time_check(reference):
    """Also check ``t`` against the length of ``betas``: an integer in 1..T.

    (A check of two arguments together, run before the reference's own checks.)
    """
    signature = inspect.signature(reference.raw)
    where = reference.__name__

    @functools.wraps(reference)
    def wrapper(*args, **kwargs):
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:
            return reference(*args, **kwargs)  # the reference explains a bad call
        betas = bound.arguments["betas"]
        check_betas(where, "betas", betas)
        v.check_time_index(where, "t", bound.arguments["t"], jnp.shape(betas)[0])
        return reference(*args, **kwargs)

    wrapper.raw = reference.raw
    return wrapper


def _coefficients(betas, t):
    """The schedule's coefficients at step(s) ``t`` (1..T), traced or not, as a Schedule of values."""
    schedule = make_schedule.raw(betas)
    index = jnp.asarray(t) - 1
    return jax.tree_util.tree_map(lambda field: field[index], schedule)


# ---------------------------------------------------------------- marginals


@v.reference(alpha_bar_t=v.check_unit_interval, m=_check_real, p=v.check_positive)
def forward_marginal_mean_var(alpha_bar_t, m, p):
    r"""Mean and variance of :math:`q(x_t) = \mathcal N(\sqrt{\bar\alpha_t}\,m,\ v_t)`, :math:`v_t = \bar\alpha_t p^2 + 1 - \bar\alpha_t`.

    The forward process applied to :math:`x_0 \sim \mathcal N(m, p^2)`:
    :math:`x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon`
    is a sum of independent Gaussians. ``alpha_bar_t`` is a number or an
    array in (0, 1] (1 gives the data distribution itself, t = 0). Returns
    ``(mean, variance)``, each of the shape of ``alpha_bar_t``.
    """
    return jnp.sqrt(alpha_bar_t) * m, alpha_bar_t * p**2 + 1 - alpha_bar_t


# ---------------------------------------------------------------- reverse steps


@_with_time_check
@v.reference(betas=check_betas, m=_check_real, p=v.check_positive)
def gaussian_reverse_mean_var(x_t, t, betas, m, p):
    r"""Mean and variance of the exact reverse step :math:`q(x_{t-1} \mid x_t)` for data :math:`\mathcal N(m, p^2)`
    (notebook 03, Exercise 2.1: condition the jointly Gaussian pair :math:`(x_{t-1}, x_t)` on :math:`x_t`).

    ``x_t``: any shape; ``t``: integer step(s) in 1..T, a number or an array
    that broadcasts against ``x_t`` (traced inside ``lax.scan``: index with
    ``t - 1``, no Python branch on it); ``betas``: ``(T,)``; ``m``, ``p``:
    numbers (``p`` the standard deviation). Returns ``(mean, variance)``: the mean has the broadcast shape of
    ``x_t`` and ``t``, the variance the shape of ``t``.
    """
    c = _coefficients(betas, t)
    v_prev = c.alpha_bars_prev * p**2 + 1 - c.alpha_bars_prev
    v_t = c.alpha_bars * p**2 + 1 - c.alpha_bars
    mean = jnp.sqrt(c.alpha_bars_prev) * m + jnp.sqrt(c.alphas) * v_prev / v_t * (x_t - jnp.sqrt(c.alpha_bars) * m)
    return mean, v_prev * c.betas / v_t


@_with_time_check
@v.reference(betas=check_betas, m=_check_real, p=v.check_positive)
def shortcut_reverse_mean_var(x_t, t, betas, m, p):
    r"""The shortcut: the forward posterior with :math:`x_0` replaced by the data mean, plus the spread of :math:`x_0`.

    With :math:`\tilde\mu_t(x_t, x_0) = c_0\,x_0 + c_t\,x_t`
    (:func:`course_utils.losses.posterior_mean`,
    :math:`c_0 = \sqrt{\bar\alpha_{t-1}}\,\beta_t / (1 - \bar\alpha_t)`) and
    :math:`\tilde\beta_t` (:func:`course_utils.losses.posterior_variance`):

    .. math::
        \text{mean} = \tilde\mu_t(x_t, m), \qquad \text{variance} = \tilde\beta_t + c_0^2\,p^2 .

    The exact step (:func:`gaussian_reverse_mean_var`) is the same formula with
    the *posterior* of :math:`x_0` given :math:`x_t` in place of its prior
    :math:`(m, p^2)`: mean :math:`c_0\,\mathbb E[x_0 \mid x_t] + c_t\,x_t`,
    variance :math:`\tilde\beta_t + c_0^2\,\mathrm{Var}[x_0 \mid x_t]`. So the
    shortcut is right where :math:`x_t` says nothing about :math:`x_0`
    (:math:`\bar\alpha_t \to 0`), or where the data are a single point
    (:math:`p \to 0`), and wrong in between. Shapes as in
    :func:`gaussian_reverse_mean_var`; the variance has the shape of ``t``.
    """
    c = _coefficients(betas, t)
    x0 = jnp.broadcast_to(jnp.asarray(m, jnp.result_type(x_t, float)), jnp.broadcast_shapes(jnp.shape(x_t), jnp.shape(t)))
    x_t = jnp.broadcast_to(x_t, x0.shape)
    mean = posterior_mean.raw(x0, x_t, c.betas, c.alpha_bars, c.alpha_bars_prev)
    coef_x0 = jnp.sqrt(c.alpha_bars_prev) * c.betas / (1 - c.alpha_bars)
    return mean, posterior_variance.raw(c.betas, c.alpha_bars, c.alpha_bars_prev) + coef_x0**2 * p**2


@v.reference(alpha_bar_t=v.check_open_unit, m=_check_real, p=v.check_positive)
def gaussian_eps(x_t, alpha_bar_t, m, p):
    r"""The exact noise predictor for Gaussian data: :math:`\epsilon^*(x_t) = \mathbb E[\epsilon \mid x_t]`.

    :math:`x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon`, so
    :math:`(\epsilon, x_t)` is jointly Gaussian with
    :math:`\mathrm{Cov}(\epsilon, x_t) = \sqrt{1-\bar\alpha_t}` and
    :math:`\mathrm{Var}(x_t) = v_t`:

    .. math::
        \epsilon^*(x_t) = \frac{\sqrt{1-\bar\alpha_t}\,\big(x_t - \sqrt{\bar\alpha_t}\,m\big)}{\bar\alpha_t\,p^2 + 1 - \bar\alpha_t}
        = -\sqrt{1-\bar\alpha_t}\;\nabla_{x_t}\log q(x_t).

    It is the minimiser of :math:`\mathbb E\,\lVert\epsilon - \epsilon_\theta(x_t)\rVert^2`
    (:math:`L_{simple}`): what a perfect network trained on these data outputs.
    ``x_t`` and ``alpha_bar_t`` (in (0, 1)) broadcast against each other; the
    result has their broadcast shape.
    """
    return jnp.sqrt(1 - alpha_bar_t) * (x_t - jnp.sqrt(alpha_bar_t) * m) / (alpha_bar_t * p**2 + 1 - alpha_bar_t)


_DDPM_VARIANCES = ("posterior", "beta")


def _check_variance_choice(where, name, value):
    if value not in _DDPM_VARIANCES:
        raise ValueError(f"{where}: argument `{name}` must be one of {_DDPM_VARIANCES}, got {value!r}")


@_with_time_check
@v.reference(static_argnames=("variance",), betas=check_betas, m=_check_real, p=v.check_positive,
             variance=_check_variance_choice)
def ddpm_reverse_mean_var(x_t, t, betas, m, p, variance="posterior"):
    r"""The ordinary DDPM reverse step, fed with the exact noise predictor :func:`gaussian_eps`.

    .. math::
        \text{mean} = \frac{1}{\sqrt{\alpha_t}}\Big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\,\epsilon^*(x_t)\Big),
        \qquad \text{variance} = \sigma_t^2 = \tilde\beta_t \ (\texttt{"posterior"})\ \text{or}\ \beta_t\ (\texttt{"beta"}).

    The mean (:func:`course_utils.losses.mean_from_noise`) is exactly the mean
    of :math:`q(x_{t-1} \mid x_t)`, because the forward posterior mean is linear
    in the noise; the variance is a fixed choice, not the exact
    :math:`v_{t-1}\beta_t / v_t`. As in DDPM's sampling algorithm and the course's
    samplers (:mod:`course_utils.sampling`), no noise is added at the last step:
    the variance at t = 1 is 0 for both choices (:math:`\tilde\beta_1` is 0 anyway).
    Shapes as in :func:`gaussian_reverse_mean_var`.
    """
    c = _coefficients(betas, t)
    eps = gaussian_eps.raw(x_t, c.alpha_bars, m, p)
    x_t = jnp.broadcast_to(x_t, eps.shape)
    mean = mean_from_noise.raw(x_t, eps, c.betas, c.alpha_bars)
    var = c.posterior_variances if variance == "posterior" else jnp.where(t == 1, 0.0, c.betas)
    return mean, var


# ---------------------------------------------------------------- the sampler


class ReverseRun(NamedTuple):
    r"""What :func:`reverse_gaussian` returns (a pytree).

    ``x0``: the ``N`` final samples, shape ``(N,)``; ``steps``: the kept time
    steps, shape ``(K,)``; ``states``: the ``N`` states at those steps,
    ``states[k]`` = :math:`x_{steps[k]}`, shape ``(K, N)``; ``paths``: the
    whole trajectory of the first ``n_paths`` samples, ``paths[t]`` =
    :math:`x_t` for t = 0..T, shape ``(T + 1, n_paths)``.
    """

    x0: jax.Array
    steps: jax.Array
    states: jax.Array
    paths: jax.Array

    def at(self, t):
        """The ``N`` states at a kept step ``t``, shape ``(N,)``."""
        steps = [int(s) for s in np.asarray(self.steps)]
        if t not in steps:
            raise ValueError(f"ReverseRun.at: step {t} was not kept; the kept steps are {steps} (pass keep_steps=...)")
        return self.states[steps.index(t)]


def _check_step_function(where, name, value):
    if not callable(value):
        raise TypeError(f"{where}: argument `{name}` must be a function step(x_t, t, betas, m, p) -> (mean, variance), "
                        f"got {type(value).__name__}")


def _check_sampler_arguments(where, arguments):
    x_T, noises, betas = arguments["x_T"], arguments["noises"], arguments["betas"]
    check_betas(where, "betas", betas)
    v.check_ndim(where, "x_T", x_T, 1)
    T, N = jnp.shape(betas)[0], jnp.shape(x_T)[0]
    if jnp.shape(noises) != (T, N):
        raise ValueError(f"{where}: argument `noises` must have shape (T, N) = {(T, N)} "
                         f"(noises[t - 1] is the z of step t), got {jnp.shape(noises)}")
    keep = arguments["keep_steps"]
    if not isinstance(keep, tuple) or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in keep):
        raise TypeError(f"{where}: argument `keep_steps` must be a tuple of ints (steps 0..T to keep), got {keep!r}")
    if any(not 0 <= s <= T for s in keep) or len(set(keep)) != len(keep):
        raise ValueError(f"{where}: argument `keep_steps` must hold distinct steps in 0..{T}, got {keep}")
    n_paths = arguments["n_paths"]
    if isinstance(n_paths, bool) or not isinstance(n_paths, (int, np.integer)) or not 0 <= n_paths <= N:
        raise ValueError(f"{where}: argument `n_paths` must be an int in 0..N = 0..{N}, got {n_paths!r}")


def _with_sampler_checks(reference):
    signature = inspect.signature(reference.raw)

    @functools.wraps(reference)
    def wrapper(*args, **kwargs):
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:
            return reference(*args, **kwargs)
        bound.apply_defaults()
        _check_sampler_arguments(reference.__name__, bound.arguments)
        return reference(*args, **kwargs)

    wrapper.raw = reference.raw
    return wrapper


@_with_sampler_checks
@v.reference(static_argnames=("step", "keep_steps", "n_paths"), step=_check_step_function,
             betas=check_betas, m=_check_real, p=v.check_positive)
def reverse_gaussian(step, x_T, noises, betas, m, p, keep_steps=(), n_paths=0):
    r"""Run ``N`` reverse trajectories :math:`x_T \to x_0` at once, in one :func:`jax.lax.scan` over t = T..1.

    Each step draws :math:`x_{t-1} = \mu + \sqrt{\sigma^2}\,z_t` with
    ``(mu, sigma2) = step(x_t, t, betas, m, p)`` (any of the step functions of
    this module, or a student's :func:`gaussian_reverse_mean_var`) and
    :math:`z_t` = ``noises[t - 1]``. The noise is an argument, drawn in bulk
    beforehand: on a CPU drawing random numbers costs more than the steps.

    ``x_T``: the ``N`` starting points, shape ``(N,)``; ``noises``: shape
    ``(T, N)``; ``betas``: ``(T,)``; ``m``, ``p``: the data's mean and standard
    deviation. ``keep_steps``: a tuple of steps (0..T) whose ``N`` states are
    kept (only those are written to memory, not all ``T + 1``); ``n_paths``:
    keep the whole path of the first ``n_paths`` samples. ``step``,
    ``keep_steps`` and ``n_paths`` are static (a new value compiles anew).
    Returns a :class:`ReverseRun`.
    """
    T = betas.shape[0]
    slot = np.full(T + 1, -1, np.int32)
    for k, s in enumerate(keep_steps):
        slot[s] = k
    slot = jnp.asarray(slot)

    def keep(states, s, x):
        if not keep_steps:
            return states
        k = slot[s]
        return jax.lax.cond(k >= 0, lambda kept: jax.lax.dynamic_update_index_in_dim(kept, x, jnp.maximum(k, 0), 0),
                            lambda kept: kept, states)

    def body(carry, t_and_z):
        x_t, states = carry
        t, z = t_and_z
        mean, var = step(x_t, t, betas, m, p)
        x_prev = (mean + jnp.sqrt(var) * z).astype(x_t.dtype)
        return (x_prev, keep(states, t - 1, x_prev)), x_prev[:n_paths]

    states = keep(jnp.zeros((len(keep_steps),) + x_T.shape, x_T.dtype), T, x_T)
    (x0, states), tails = jax.lax.scan(body, (x_T, states), (jnp.arange(1, T + 1), noises), reverse=True)
    paths = jnp.concatenate([tails, x_T[None, :n_paths]], axis=0)  # tails[i] is x_i, i = 0..T-1
    return ReverseRun(x0=x0, steps=jnp.asarray(keep_steps, jnp.int32), states=states, paths=paths)
