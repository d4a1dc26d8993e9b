r"""Variance schedules and the quantities derived from them.

Conventions used throughout the course: time steps count from 1 to T, and a
schedule is an array ``betas`` of shape ``(T,)`` with ``betas[t - 1]`` =
:math:`\beta_t`. Derived arrays follow the same indexing.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from . import _validate as v


@v.reference(static_argnames=("T",), T=v.check_positive_int,
             beta_start=v.check_open_unit, beta_end=v.check_open_unit)
def linear_betas(T, beta_start=1e-4, beta_end=0.02):
    r"""Linearly spaced :math:`\beta_1 = \beta_{start}, \dots, \beta_T = \beta_{end}` (Ho et al. 2020).

    Returns an array of shape ``(T,)``.
    """
    return jnp.linspace(beta_start, beta_end, T)


@v.reference(static_argnames=("T",), T=v.check_positive_int,
             s=v.check_positive, max_beta=v.check_open_unit)
def cosine_betas(T, s=0.008, max_beta=0.999):
    r"""The cosine schedule of Nichol and Dhariwal (2021).

    .. math::
        f(t) = \cos^2\!\Big(\frac{t/T + s}{1 + s}\,\frac{\pi}{2}\Big), \quad
        \bar\alpha_t = \frac{f(t)}{f(0)}, \quad
        \beta_t = \min\Big(1 - \frac{\bar\alpha_t}{\bar\alpha_{t-1}},\ \beta_{max}\Big)

    for :math:`t = 1, \dots, T`. The clip at ``max_beta`` stops the last
    steps from destroying everything at once (:math:`\bar\alpha_T = 0` would
    make :math:`\beta_T = 1`). Returns an array of shape ``(T,)``.
    """
    t = jnp.arange(T + 1, dtype=jnp.float32)
    f = jnp.cos((t / T + s) / (1 + s) * jnp.pi / 2) ** 2
    alpha_bar = f / f[0]
    return jnp.minimum(1 - alpha_bar[1:] / alpha_bar[:-1], max_beta)


@v.reference(static_argnames=("T",), T=v.check_positive_int, beta=v.check_open_unit)
def constant_betas(T, beta=0.02):
    r"""The same :math:`\beta` at every step. Returns an array of shape ``(T,)``."""
    return jnp.full((T,), beta, dtype=jnp.float32)


def check_betas(where, name, betas):
    """The input check of a beta schedule argument: one-dimensional, every value in the open interval (0, 1)."""
    v.check_ndim(where, name, betas, 1)
    v.check_open_unit(where, name, betas)


@v.reference(betas=check_betas)
def alpha_bars(betas):
    r""":math:`\bar\alpha_t = \prod_{s=1}^{t} (1 - \beta_s)` for :math:`t = 1..T`, shape ``(T,)``."""
    return jnp.cumprod(1 - betas)


@v.reference(betas=check_betas)
def signal_to_noise(betas):
    r"""Signal-to-noise ratio of :math:`x_t`: :math:`\bar\alpha_t / (1 - \bar\alpha_t)`, shape ``(T,)``."""
    ab = alpha_bars.raw(betas)
    return ab / (1 - ab)


class Schedule(NamedTuple):
    r"""Every per-step coefficient of a schedule, computed once (a pytree of ``(T,)`` arrays).

    Index ``t - 1`` holds the value at step ``t``. ``alpha_bars_prev[0]`` is
    :math:`\bar\alpha_0 = 1`.
    """

    betas: jax.Array
    alphas: jax.Array
    alpha_bars: jax.Array
    alpha_bars_prev: jax.Array
    posterior_variances: jax.Array

    @property
    def T(self) -> int:
        return self.betas.shape[0]

    def at(self, t):
        """The coefficients at time step(s) ``t`` (1..T), as a Schedule of their values."""
        v.check_time_index("Schedule.at", "t", t, self.T)
        return Schedule(*(field[jnp.asarray(t) - 1] for field in self))


@v.reference(betas=check_betas)
def make_schedule(betas) -> Schedule:
    r"""Build a :class:`Schedule` from ``betas`` (shape ``(T,)``).

    The posterior variance is :math:`\tilde\beta_t = \frac{1 - \bar\alpha_{t-1}}{1 - \bar\alpha_t}\beta_t`.
    """
    alphas = 1 - betas
    ab = alpha_bars.raw(betas)
    ab_prev = jnp.concatenate([jnp.ones((1,), ab.dtype), ab[:-1]])
    return Schedule(
        betas=betas,
        alphas=alphas,
        alpha_bars=ab,
        alpha_bars_prev=ab_prev,
        posterior_variances=(1 - ab_prev) / (1 - ab) * betas,
    )


class ScheduleSummary(NamedTuple):
    r"""What a schedule does to the data, step by step (notebook 01): three ``(T,)`` arrays, index ``t - 1`` for step ``t``.

    ``alpha_bars``: :math:`\bar\alpha_t`; ``snr``: :math:`\bar\alpha_t / (1 - \bar\alpha_t)`;
    ``posterior_variances``: :math:`\tilde\beta_t = \frac{1 - \bar\alpha_{t-1}}{1 - \bar\alpha_t}\beta_t`
    (with :math:`\bar\alpha_0 = 1`, so :math:`\tilde\beta_1 = 0`).
    """

    alpha_bars: jax.Array
    snr: jax.Array
    posterior_variances: jax.Array


@v.reference(betas=check_betas)
def schedule_summary(betas) -> ScheduleSummary:
    r"""The :class:`ScheduleSummary` of ``betas`` (shape ``(T,)``): :math:`\bar\alpha_t`, the signal-to-noise
    ratio and the posterior variance :math:`\tilde\beta_t`, for :math:`t = 1, \dots, T`."""
    s = make_schedule.raw(betas)
    return ScheduleSummary(s.alpha_bars, s.alpha_bars / (1 - s.alpha_bars), s.posterior_variances)
