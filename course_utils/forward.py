r"""The forward (noising) process :math:`q(x_t \mid x_{t-1}) = \mathcal N(\sqrt{1-\beta_t}\,x_{t-1},\ \beta_t I)`.

The random step is split into deterministic pieces: the caller draws the
standard normal ``noise`` and passes it in, so every function here is a pure,
testable function of its inputs.
"""

import jax
import jax.numpy as jnp

from . import _validate as v
from .schedules import check_betas


@v.reference(beta=v.check_open_unit)
def forward_mean(x_prev, beta):
    r"""Mean of :math:`q(x_t \mid x_{t-1})`: :math:`\sqrt{1 - \beta_t}\, x_{t-1}`. Same shape as ``x_prev``."""
    return jnp.sqrt(1 - beta) * x_prev


@v.reference(beta=v.check_open_unit)
def forward_variance(beta):
    r"""Variance of each coordinate of :math:`q(x_t \mid x_{t-1})`: :math:`\beta_t`."""
    return jnp.asarray(beta, dtype=jnp.result_type(beta, jnp.float32))



@v.reference(beta=v.check_open_unit)
def forward_step(x_prev, beta, noise):
    r"""One forward step :math:`x_t = \sqrt{1-\beta_t}\,x_{t-1} + \sqrt{\beta_t}\,\epsilon`.

    ``noise`` is :math:`\epsilon \sim \mathcal N(0, I)`, the same shape as ``x_prev``.
    """
    v.check_same_shape("forward_step", "x_prev", x_prev, "noise", noise)
    return forward_mean.raw(x_prev, beta) + jnp.sqrt(forward_variance.raw(beta)) * noise


@v.reference(static_argnames=("every_step",), betas=check_betas)
def diffuse(x0, betas, noises, every_step=True):
    r"""Run the whole forward process with :func:`jax.lax.scan`.

    ``x0`` has any shape ``S``; ``betas`` has shape ``(T,)``; ``noises`` has
    shape ``(T, *S)`` with ``noises[t - 1]`` the noise of step ``t``.
    Returns every :math:`x_t` for :math:`t = 0, \dots, T`, shape ``(T + 1, *S)``,
    so that ``xs[t]`` is :math:`x_t` (``xs[0]`` is ``x0`` itself). With
    ``every_step=False`` only :math:`x_T` is returned (shape ``S``), which
    saves writing all the intermediate states to memory.
    """
    x0 = jnp.asarray(x0)
    expected = (jnp.shape(betas)[0],) + x0.shape
    if jnp.shape(noises) != expected:
        raise ValueError(f"diffuse: argument `noises` must have shape (T, *x0.shape) = {expected}, got {jnp.shape(noises)}")

    def step(x_prev, beta_and_noise):
        beta, noise = beta_and_noise
        x_t = forward_step.raw(x_prev, beta, noise)
        return x_t, (x_t if every_step else None)

    x_T, xs = jax.lax.scan(step, x0, (betas, noises))
    return jnp.concatenate([x0[None], xs], axis=0) if every_step else x_T


@v.reference(alpha_bar_t=v.check_unit_interval)
def q_sample(x0, alpha_bar_t, noise):
    r"""Jump straight to step t: :math:`x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1 - \bar\alpha_t}\,\epsilon`.

    ``alpha_bar_t`` is a number or an array that broadcasts against ``x0``
    (one value per example, for instance with shape ``(N, 1)``); ``noise`` has
    the shape of the result.
    """
    v.check_broadcastable("q_sample", {"x0": x0, "alpha_bar_t": alpha_bar_t, "noise": noise})
    return jnp.sqrt(alpha_bar_t) * x0 + jnp.sqrt(1 - alpha_bar_t) * noise
