r"""Sampling from a trained noise predictor: DDPM (any :math:`\sigma_t`) and DDIM.

Every sampler runs its loop over time steps as one jitted ``jax.lax.scan``
and draws all of its noise in one call beforehand.
"""

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from ._validate import marked
from .losses import mean_from_noise
from .schedules import Schedule

SIGMAS = ("beta", "beta_tilde", "ddim")


@marked
def ddpm_step(model, x_t, t, z, betas, alpha_bars, sigmas):
    r"""One step of DDPM sampling (Ho et al. 2020, algorithm 2), for a batch at one time step ``t``.

    .. math::
        x_{t-1} = \frac{1}{\sqrt{\alpha_t}}\Big(x_t - \frac{\beta_t}{\sqrt{1 - \bar\alpha_t}}\,
        \epsilon_\theta(x_t, t)\Big) + \sigma_t z

    ``x_t``: (N, ...); ``t``: an integer in 1..T (the same for the batch);
    ``z``: standard normal noise shaped like ``x_t`` (zero at the last step);
    ``betas``, ``alpha_bars``, ``sigmas``: (T,), index ``t - 1``.
    """
    eps = model(x_t, jnp.full((x_t.shape[0],), t))
    mean = mean_from_noise.raw(x_t, eps, betas[t - 1], alpha_bars[t - 1])
    return mean + sigmas[t - 1] * z


def ddim_step(model, x_t, t, t_prev, alpha_bars):
    r"""One deterministic DDIM step (Song et al. 2021, :math:`\eta = 0`) from step ``t`` to ``t_prev`` < t.

    .. math::
        \hat x_0 = \frac{x_t - \sqrt{1-\bar\alpha_t}\,\epsilon_\theta}{\sqrt{\bar\alpha_t}}, \qquad
        x_{t'} = \sqrt{\bar\alpha_{t'}}\,\hat x_0 + \sqrt{1-\bar\alpha_{t'}}\,\epsilon_\theta

    with :math:`\bar\alpha_0 = 1`, so ``t_prev = 0`` returns :math:`\hat x_0`.
    """
    eps = model(x_t, jnp.full((x_t.shape[0],), t))
    ab_t = alpha_bars[t - 1]
    ab_prev = jnp.where(t_prev > 0, alpha_bars[jnp.maximum(t_prev, 1) - 1], 1.0)
    x0_hat = (x_t - jnp.sqrt(1 - ab_t) * eps) / jnp.sqrt(ab_t)
    return jnp.sqrt(ab_prev) * x0_hat + jnp.sqrt(1 - ab_prev) * eps


def reverse_sigmas(schedule: Schedule, sigma: str):
    r"""The reverse-step standard deviations: :math:`\sqrt{\beta_t}` ("beta") or :math:`\sqrt{\tilde\beta_t}` ("beta_tilde")."""
    if sigma == "beta":
        return jnp.sqrt(schedule.betas)
    if sigma == "beta_tilde":
        return jnp.sqrt(schedule.posterior_variances)
    raise ValueError(f"reverse_sigmas: argument `sigma` must be 'beta' or 'beta_tilde', got {sigma!r}")


@functools.partial(jax.jit, static_argnames=("graphdef", "trajectory", "step"))
def _ddpm_scan(graphdef, state, x_T, key, schedule, sigmas, *, trajectory, step):
    model = nnx.merge(graphdef, state)
    T = schedule.betas.shape[0]
    # noises[i] is used at step t = T - i; no noise is added at the last step (t = 1). Drawn here, in
    # one call before the loop, so that the draw is compiled together with the loop (not op by op).
    noises = jax.random.normal(key, (T,) + x_T.shape).at[-1].set(0.0)

    def body(x, t_and_z):
        t, z = t_and_z
        x_prev = step(model, x, t, z, schedule.betas, schedule.alpha_bars, sigmas)
        return x_prev, (x_prev if trajectory else None)

    x0, xs = jax.lax.scan(body, x_T, (jnp.arange(T, 0, -1), noises))
    return jnp.concatenate([x_T[None], xs]) if trajectory else x0


@functools.partial(jax.jit, static_argnames=("graphdef", "trajectory"))
def _ddim_scan(graphdef, state, x_T, steps, alpha_bars, *, trajectory):
    model = nnx.merge(graphdef, state)

    def body(x, t_pair):
        x_prev = ddim_step(model, x, t_pair[0], t_pair[1], alpha_bars)
        return x_prev, (x_prev if trajectory else None)

    x0, xs = jax.lax.scan(body, x_T, jnp.stack([steps[:-1], steps[1:]], axis=1))
    return jnp.concatenate([x_T[None], xs]) if trajectory else x0


def sample(model, x_T, key, schedule: Schedule, sigma="beta_tilde", trajectory=False, step=ddpm_step):
    """Run the reverse process from ``x_T`` (N, ...) down to :math:`x_0`.

    ``sigma`` picks the noise of each reverse step: "beta" (:math:`\\sigma_t^2 =
    \\beta_t`), "beta_tilde" (:math:`\\sigma_t^2 = \\tilde\\beta_t`), or "ddim" (no
    noise: the deterministic DDIM update at every step; ``key`` is unused).
    Returns :math:`x_0`, or with ``trajectory=True`` every state from
    :math:`x_T` to :math:`x_0`, shape (T + 1, N, ...), where index ``i`` holds
    :math:`x_{T - i}`. ``step`` is the function that takes one reverse step
    (:func:`ddpm_step`, or your own with the same signature).
    """
    if sigma == "ddim":
        return ddim_sample(model, x_T, schedule, schedule.T, trajectory=trajectory)
    sigmas = reverse_sigmas(schedule, sigma)
    graphdef, state = nnx.split(model)
    return _ddpm_scan(graphdef, state, x_T, key, schedule, sigmas, trajectory=trajectory, step=step)


def ddim_sample(model, x_T, schedule: Schedule, n_steps, trajectory=False):
    """Deterministic DDIM sampling in ``n_steps`` strided steps from T down to 0.

    The visited time steps are ``n_steps + 1`` evenly spaced integers from T
    to 0. Returns :math:`x_0`, or every visited state with ``trajectory=True``
    (shape (n_steps + 1, N, ...)).
    """
    if not 1 <= n_steps <= schedule.T:
        raise ValueError(f"ddim_sample: argument `n_steps` must lie in 1..T = {schedule.T}, got {n_steps}")
    steps = jnp.round(jnp.linspace(schedule.T, 0, n_steps + 1)).astype(jnp.int32)
    graphdef, state = nnx.split(model)
    return _ddim_scan(graphdef, state, x_T, steps, schedule.alpha_bars, trajectory=trajectory)
