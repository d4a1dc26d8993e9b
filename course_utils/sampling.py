r"""Sampling from a trained noise predictor: DDPM (any :math:`\sigma_t`) and DDIM, with classifier-free guidance.

Every sampler runs its loop over time steps as one jitted ``jax.lax.scan``
and draws all of its noise in one call beforehand.
"""

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from ._validate import marked
from .embeddings import NO_LABEL
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


@marked
def ddpm_sample(model, x_T, zs, betas, alpha_bars, sigmas):
    r"""The whole DDPM reverse process from ``x_T`` down to :math:`x_0`, with the noise drawn beforehand.

    One ``jax.lax.scan`` over :math:`t = T, T-1, \dots, 1`, each step :func:`ddpm_step`.
    ``x_T``: (N, ...); ``zs``: (T, N, ...), ``zs[t - 1]`` is the noise of step ``t`` (the same index
    as ``betas``, ``alpha_bars`` and ``sigmas``, each (T,)); ``zs[0]`` is never used: no noise is
    added at the last step (:math:`z = 0` at :math:`t = 1`, Ho et al. 2020, algorithm 2).
    Returns the trajectory, shape (T + 1, N, ...): index ``i`` holds :math:`x_{T - i}`
    (``[0]`` is ``x_T``, ``[-1]`` is :math:`x_0`). Deterministic given ``zs``.
    """
    zs, betas, alpha_bars, sigmas = (jnp.asarray(a) for a in (zs, betas, alpha_bars, sigmas))
    T = betas.shape[0]
    if zs.shape != (T,) + jnp.shape(x_T):
        raise ValueError(f"ddpm_sample: argument `zs` must have shape (T,) + x_T.shape = {(T,) + tuple(jnp.shape(x_T))}, "
                         f"got {tuple(zs.shape)}")

    def body(x, t):
        z = jnp.where(t > 1, zs[t - 1], 0.0)
        x_prev = ddpm_step(model, x, t, z, betas, alpha_bars, sigmas)
        return x_prev, x_prev

    _, xs = jax.lax.scan(body, x_T, jnp.arange(T, 0, -1))
    return jnp.concatenate([x_T[None], xs])


def ddim_sigma(alpha_bar_t, alpha_bar_prev, eta):
    r"""The standard deviation of a DDIM step (Song et al. 2021, eq. 16).

    .. math::
        \sigma_t(\eta) = \eta\,\sqrt{\frac{1-\bar\alpha_{t'}}{1-\bar\alpha_t}}\,
        \sqrt{1 - \frac{\bar\alpha_t}{\bar\alpha_{t'}}}

    :math:`\eta = 0` is deterministic DDIM; :math:`\eta = 1` with :math:`t' = t - 1` is DDPM's
    posterior standard deviation :math:`\sqrt{\tilde\beta_t}`.
    """
    return eta * jnp.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t)) * jnp.sqrt(1 - alpha_bar_t / alpha_bar_prev)


@marked
def ddim_step(model, x_t, t, t_prev, alpha_bars, eta=0.0, z=None):
    r"""One DDIM step (Song et al. 2021, eq. 12) from step ``t`` to ``t_prev`` < t, with the eta family.

    .. math::
        \hat x_0 = \frac{x_t - \sqrt{1-\bar\alpha_t}\,\epsilon_\theta}{\sqrt{\bar\alpha_t}}, \qquad
        x_{t'} = \sqrt{\bar\alpha_{t'}}\,\hat x_0 + \sqrt{1-\bar\alpha_{t'}-\sigma_t^2}\,\epsilon_\theta
        + \sigma_t z

    with :math:`\sigma_t = \sigma_t(\eta)` of :func:`ddim_sigma` and :math:`\bar\alpha_0 = 1`, so
    ``t_prev = 0`` returns :math:`\hat x_0` (then :math:`\sigma_t = 0`). ``x_t``, ``z``: (N, ...);
    ``t`` in 1..T and ``t_prev`` in 0..t-1 integers (the same for the batch); ``alpha_bars``: (T,),
    index ``t - 1``; ``eta`` in [0, 1]. ``z=None`` means no noise (for :math:`\eta = 0`).
    """
    eps = model(x_t, jnp.full((x_t.shape[0],), t))
    ab_t = alpha_bars[t - 1]
    ab_prev = jnp.where(t_prev > 0, alpha_bars[jnp.maximum(t_prev, 1) - 1], 1.0)
    x0_hat = (x_t - jnp.sqrt(1 - ab_t) * eps) / jnp.sqrt(ab_t)
    sigma = ddim_sigma(ab_t, ab_prev, eta)
    x_prev = jnp.sqrt(ab_prev) * x0_hat + jnp.sqrt(jnp.maximum(1 - ab_prev - sigma**2, 0.0)) * eps
    return x_prev if z is None else x_prev + sigma * z


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


@functools.partial(jax.jit, static_argnames=("graphdef", "trajectory", "step"))
def _ddim_scan(graphdef, state, x_T, steps, alpha_bars, eta, zs, *, trajectory, step):
    model = nnx.merge(graphdef, state)

    def body(x, pair_and_z):
        t_pair, z = pair_and_z
        x_prev = step(model, x, t_pair[0], t_pair[1], alpha_bars, eta, z)
        return x_prev, (x_prev if trajectory else None)

    x0, xs = jax.lax.scan(body, x_T, (jnp.stack([steps[:-1], steps[1:]], axis=1), zs))
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


def ddim_sample(model, x_T, schedule: Schedule, n_steps, trajectory=False, eta=0.0, key=None, step=ddim_step):
    """DDIM sampling in ``n_steps`` strided steps from T down to 0.

    The visited time steps are ``n_steps + 1`` evenly spaced integers from T
    to 0. ``eta`` = 0 (the default) is deterministic and needs no ``key``; with
    ``eta`` > 0 the noise of every step is drawn from ``key`` in one call before
    the loop. Returns :math:`x_0`, or every visited state with ``trajectory=True``
    (shape (n_steps + 1, N, ...)). ``step`` takes one step: :func:`ddim_step`, or
    your own with the same signature ``(model, x_t, t, t_prev, alpha_bars, eta, z)``.
    """
    if not 1 <= n_steps <= schedule.T:
        raise ValueError(f"ddim_sample: argument `n_steps` must lie in 1..T = {schedule.T}, got {n_steps}")
    if not 0 <= eta <= 1:
        raise ValueError(f"ddim_sample: argument `eta` must lie in [0, 1], got {eta}")
    if eta > 0 and key is None:
        raise ValueError("ddim_sample: with eta > 0 the steps add noise: pass a PRNG `key`")
    steps = jnp.round(jnp.linspace(schedule.T, 0, n_steps + 1)).astype(jnp.int32)
    shape = (n_steps,) + tuple(x_T.shape)
    zs = jnp.zeros(shape, x_T.dtype) if key is None else jax.random.normal(key, shape, x_T.dtype)
    graphdef, state = nnx.split(model)
    return _ddim_scan(graphdef, state, x_T, steps, schedule.alpha_bars, jnp.float32(eta), zs,
                      trajectory=trajectory, step=step)


# ---------------------------------------------------------------- classifier-free guidance (notebooks 05 and 06)


@marked
def guided_eps(model, x_t, t, y, w):
    r"""Classifier-free guidance: :math:`(w + 1)\,\epsilon_\theta(x_t, t, y) - w\,\epsilon_\theta(x_t, t, \varnothing)`.

    ``x_t``: (N, d); ``t``: (N,); ``y``: (N,) labels; ``w``: the guidance
    weight (0: the plain conditional model). Returns (N, d).
    """
    eps_cond = model(x_t, t, y)
    eps_uncond = model(x_t, t, jnp.full(jnp.shape(y), NO_LABEL, jnp.asarray(y).dtype))
    return (w + 1) * eps_cond - w * eps_uncond


@marked
def guided_ddim_sample(model, x_T, y, w, timesteps, alpha_bars):
    r"""Deterministic DDIM (:math:`\eta = 0`) with classifier-free guidance, over the visited steps ``timesteps``.

    At each pair of consecutive visited steps :math:`t > t'` (one ``jax.lax.scan`` over the pairs):

    .. math::
        \tilde\epsilon = (w + 1)\,\epsilon_\theta(x_t, t, y) - w\,\epsilon_\theta(x_t, t, \varnothing), \qquad
        \hat x_0 = \frac{x_t - \sqrt{1-\bar\alpha_t}\,\tilde\epsilon}{\sqrt{\bar\alpha_t}}, \qquad
        x_{t'} = \sqrt{\bar\alpha_{t'}}\,\hat x_0 + \sqrt{1-\bar\alpha_{t'}}\,\tilde\epsilon

    with :math:`\bar\alpha_0 = 1`: :func:`guided_eps` (the "no label" :math:`\varnothing`
    is -1) in :func:`ddim_step`. ``model(x, t, y)``: a conditional noise predictor; ``x_T``: (N, ...);
    ``y``: (N,) labels; ``w``: the guidance weight; ``timesteps``: (K + 1,) integers decreasing from T to 0
    (the steps visited, ``timesteps[0]`` = T, ``timesteps[-1]`` = 0); ``alpha_bars``: (T,), index ``t - 1``.
    Returns the trajectory, shape (K + 1, N, ...): index ``k`` holds :math:`x_{t_k}` at ``t_k = timesteps[k]``
    (``[0]`` is ``x_T``, ``[-1]`` is :math:`x_0`). Deterministic given ``x_T``.
    """
    timesteps = jnp.asarray(timesteps, jnp.int32)
    if timesteps.ndim != 1 or timesteps.shape[0] < 2:
        raise ValueError(f"guided_ddim_sample: argument `timesteps` must have shape (K + 1,) with K >= 1, "
                         f"got shape {tuple(timesteps.shape)}")

    def eps(x, t):
        return guided_eps(model, x, t, y, w)

    def body(x, pair):
        x_prev = ddim_step(eps, x, pair[0], pair[1], alpha_bars)
        return x_prev, x_prev

    _, xs = jax.lax.scan(body, x_T, jnp.stack([timesteps[:-1], timesteps[1:]], axis=1))
    return jnp.concatenate([x_T[None], xs])
