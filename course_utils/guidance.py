r"""Class-conditional diffusion and classifier-free guidance on a known Gaussian mixture (notebook 05).

The data are two-pixel images drawn from a mixture of isotropic Gaussians,
the component being the class label. Because the mixture is known, so is
every noised distribution :math:`q(x_t)` (again a mixture), its score, and
hence the *exact* noise predictor

.. math::
    \epsilon^*(x_t, t) = \mathbb E[\epsilon \mid x_t] = -\sqrt{1 - \bar\alpha_t}\;\nabla_{x_t}\log q(x_t),

unconditional or given the label. A learned :math:`\epsilon_\theta` can be
measured against it.

Conventions: labels are integers 0..K-1, and -1 (:data:`NO_LABEL`) means "no
label" (the unconditional model). Models take ``model(x, t, y)`` with ``x``
(N, 2), ``t`` (N,) steps in 1..T and ``y`` (N,) labels.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from . import config
from ._validate import marked
from .embeddings import NO_LABEL
from .forward import q_sample
from .losses import huber_loss, l1_loss, l2_loss, mean_from_noise
from .schedules import Schedule
from .training import data_parallel_shardings, run_in_chunks


# ---------------------------------------------------------------- the data


class Mixture(NamedTuple):
    """An isotropic Gaussian mixture: ``means`` (K, d), one standard deviation ``std``, ``weights`` (K,)."""

    means: tuple
    std: float
    weights: tuple


TWO_PIXEL = Mixture(means=((-0.35, 0.65), (0.75, -0.45)), std=0.1, weights=(0.35, 0.65))
"""The two-pixel data of notebook 05: class 0 (left pixel darker) has weight 0.35, class 1 has 0.65."""


def sample_mixture(key, n, mixture: Mixture = TWO_PIXEL):
    """``n`` points of the mixture and their labels: ``(x (n, d) float32, y (n,) int32)``."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"sample_mixture: argument `n` must be a positive int, got {n!r}")
    k_label, k_noise = jax.random.split(key)
    means = jnp.asarray(mixture.means, jnp.float32)
    y = jax.random.choice(k_label, len(mixture.weights), (n,), p=jnp.asarray(mixture.weights)).astype(jnp.int32)
    x = means[y] + mixture.std * jax.random.normal(k_noise, (n, means.shape[1]))
    return x, y


def _component_log_densities(x, alpha_bar, mixture):
    """log N(x; sqrt(ab) mu_k, v I) for every component, shape (*S, K), and v."""
    means = jnp.asarray(mixture.means, jnp.float32)
    alpha_bar = jnp.asarray(alpha_bar, jnp.float32)
    var = alpha_bar * mixture.std**2 + 1 - alpha_bar                # a number, or (*S, 1)
    d = means.shape[1]
    diff = x[..., None, :] - jnp.sqrt(alpha_bar)[..., None] * means  # (*S, K, d)
    return -0.5 * jnp.sum(diff**2, -1) / var - 0.5 * d * jnp.log(2 * jnp.pi * var), var, diff


def _responsibilities(x, alpha_bar, mixture, y):
    """p(component k | x_t) (y = None or -1), or the one-hot code of y; shape (*S, K)."""
    logs, var, diff = _component_log_densities(x, alpha_bar, mixture)
    posterior = jax.nn.softmax(logs + jnp.log(jnp.asarray(mixture.weights, jnp.float32)), axis=-1)
    if y is None:
        return posterior, var, diff
    y = jnp.asarray(y)
    one_hot = jax.nn.one_hot(jnp.maximum(y, 0), len(mixture.weights))
    return jnp.where((y < 0)[..., None], posterior, one_hot), var, diff


@functools.partial(jax.jit, static_argnames=("mixture",))
def mixture_log_density(x, mixture: Mixture = TWO_PIXEL, alpha_bar=1.0, y=None):
    r"""Log density of the noised mixture :math:`q_t(x) = \sum_k \pi_k \mathcal N(x; \sqrt{\bar\alpha_t}\mu_k, v_t I)`.

    :math:`v_t = \bar\alpha_t\sigma^2 + 1 - \bar\alpha_t`; ``alpha_bar = 1`` is the
    data density itself. ``x``: (*S, d); ``y`` (shape S, optional) gives the
    class-conditional density (label -1: unconditional). Returns shape S.
    """
    logs, _, _ = _component_log_densities(jnp.asarray(x, jnp.float32), alpha_bar, mixture)
    mixed = jax.nn.logsumexp(logs + jnp.log(jnp.asarray(mixture.weights, jnp.float32)), axis=-1)
    if y is None:
        return mixed
    y = jnp.asarray(y)
    own = jnp.take_along_axis(logs, jnp.maximum(y, 0)[..., None], axis=-1)[..., 0]
    return jnp.where(y < 0, mixed, own)


def mixture_density(x, mixture: Mixture = TWO_PIXEL, alpha_bar=1.0, y=None):
    """The density of :func:`mixture_log_density` (not its log)."""
    return jnp.exp(mixture_log_density(x, mixture, alpha_bar, y))


@functools.partial(jax.jit, static_argnames=("mixture",))
def mixture_eps(x_t, alpha_bar_t, mixture: Mixture = TWO_PIXEL, y=None):
    r"""The exact noise predictor of the mixture, :math:`\epsilon^*(x_t) = -\sqrt{1-\bar\alpha_t}\,\nabla\log q_t(x_t)`.

    .. math::
        \epsilon^*(x_t) = \frac{\sqrt{1-\bar\alpha_t}}{v_t}\sum_k r_k(x_t)\,\big(x_t - \sqrt{\bar\alpha_t}\,\mu_k\big),
        \qquad r_k(x_t) = p(k \mid x_t)

    With a label ``y`` the responsibilities are the one-hot code of ``y``
    (the class-conditional predictor); -1 means unconditional. ``x_t``:
    (N, d); ``alpha_bar_t``: a number or (N, 1); ``y``: None or (N,).
    Returns (N, d).
    """
    x_t = jnp.asarray(x_t, jnp.float32)
    r, var, diff = _responsibilities(x_t, alpha_bar_t, mixture, y)
    return jnp.sqrt(1 - alpha_bar_t) / var * jnp.sum(r[..., None] * diff, axis=-2)


class MixtureEps(nnx.Module):
    """The exact noise predictor as a model ``model(x, t, y)``: plug it in wherever a trained network goes."""

    def __init__(self, alpha_bars, mixture: Mixture = TWO_PIXEL):
        self.alpha_bars = nnx.Variable(jnp.asarray(alpha_bars, jnp.float32))
        self.mixture = mixture

    def __call__(self, x, t, y):
        ab = self.alpha_bars[...][jnp.asarray(t) - 1][:, None]
        return mixture_eps(x, ab, self.mixture, y)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _predict(graphdef, state, x, t, y):
    return nnx.merge(graphdef, state)(x, t, y)


def predict_eps(model, x, t, y):
    """``model(x, t, y)`` compiled (much faster than calling an nnx model op by op); ``t`` and ``y`` broadcast to (N,)."""
    x = jnp.asarray(x, jnp.float32)
    t = jnp.broadcast_to(jnp.asarray(t, jnp.int32), x.shape[:1])
    y = jnp.broadcast_to(jnp.asarray(y, jnp.int32), x.shape[:1])
    graphdef, state = nnx.split(model)
    return _predict(graphdef, state, x, t, y)


# ---------------------------------------------------------------- classifier-free guidance


@marked
def drop_labels(key, y, p_uncond):
    r"""Replace each label by :data:`NO_LABEL` (-1) with probability ``p_uncond``.

    One uniform number per label: ``jax.random.bernoulli(key, p_uncond, y.shape)``
    says which are dropped. Training on these labels teaches one network both
    :math:`\epsilon_\theta(x_t, t, y)` and :math:`\epsilon_\theta(x_t, t, \varnothing)`.
    """
    drop = jax.random.bernoulli(key, p_uncond, jnp.shape(y))
    return jnp.where(drop, NO_LABEL, y)


@marked
def guided_eps(model, x_t, t, y, w):
    r"""Classifier-free guidance: :math:`(w + 1)\,\epsilon_\theta(x_t, t, y) - w\,\epsilon_\theta(x_t, t, \varnothing)`.

    ``x_t``: (N, d); ``t``: (N,); ``y``: (N,) labels; ``w``: the guidance
    weight (0: the plain conditional model). Returns (N, d).
    """
    eps_cond = model(x_t, t, y)
    eps_uncond = model(x_t, t, jnp.full(jnp.shape(y), NO_LABEL, jnp.asarray(y).dtype))
    return (w + 1) * eps_cond - w * eps_uncond


class Guided(nnx.Module):
    r"""A conditional model with its labels and guidance weight fixed: ``Guided(model, y, w)(x, t)`` is the guided noise.

    It turns a conditional model into the unconditional ``model(x, t)`` that
    the samplers of :mod:`course_utils.sampling` (DDIM among them) expect.
    ``y``: (N,) labels, one per image of the batch; ``w``: the guidance weight.
    """

    def __init__(self, model, y, w):
        self.model = model
        self.y = nnx.Variable(jnp.asarray(y, jnp.int32))
        self.w = nnx.Variable(jnp.float32(w))

    def __call__(self, x, t):
        return guided_eps(self.model, x, t, self.y[...], self.w[...])


def guided_step(model, x_t, t, z, y, w, schedule: Schedule, sigmas, eps_fn=guided_eps):
    r"""One DDPM step with the guided noise prediction: notebook 04's step with ``eps_fn(model, x_t, t, y, w)``."""
    eps = eps_fn(model, x_t, jnp.full((x_t.shape[0],), t), y, w)
    mean = mean_from_noise.raw(x_t, eps, schedule.betas[t - 1], schedule.alpha_bars[t - 1])
    return mean + sigmas[t - 1] * z


@functools.partial(jax.jit, static_argnames=("graphdef", "trajectory", "eps_fn"))
def _guided_scan(graphdef, state, x_T, noises, y, w, schedule, sigmas, *, trajectory, eps_fn):
    model = nnx.merge(graphdef, state)
    T = schedule.betas.shape[0]

    def body(x, t_and_z):
        t, z = t_and_z
        x_prev = guided_step(model, x, t, z, y, w, schedule, sigmas, eps_fn)
        return x_prev, (x_prev if trajectory else None)

    x0, xs = jax.lax.scan(body, x_T, (jnp.arange(T, 0, -1), noises))
    return jnp.concatenate([x_T[None], xs]) if trajectory else x0


def guided_sample(model, x_T, key, schedule: Schedule, y, w=0.0, sigma="beta_tilde", trajectory=False,
                  eps_fn=guided_eps):
    r"""DDPM sampling with classifier-free guidance, from ``x_T`` (N, d) down to :math:`x_0`.

    ``y``: (N,) labels (or one int for all; -1 everywhere samples the
    unconditional model, whatever ``w``); ``w``: the guidance weight;
    ``sigma``: "beta" or "beta_tilde" (as :func:`course_utils.sampling.sample`).
    The loop is one jitted ``lax.scan`` with all noise drawn beforehand.
    Returns :math:`x_0`, or with ``trajectory=True`` every state, shape
    (T + 1, N, d), index ``i`` holding :math:`x_{T - i}`.
    """
    from .sampling import reverse_sigmas

    sigmas = reverse_sigmas(schedule, sigma)
    y = jnp.broadcast_to(jnp.asarray(y, jnp.int32), (x_T.shape[0],))
    noises = jax.random.normal(key, (schedule.T,) + x_T.shape).at[-1].set(0.0)
    graphdef, state = nnx.split(model)
    return _guided_scan(graphdef, state, x_T, noises, y, jnp.float32(w), schedule, sigmas,
                        trajectory=trajectory, eps_fn=eps_fn)


# ---------------------------------------------------------------- training


LOSSES = {"l1": l1_loss, "l2": l2_loss, "huber": huber_loss}


def conditional_loss(model, x0, t, noise, alpha_bars, y, loss="l2"):
    r"""The DDPM loss of a conditional model: ``LOSSES[loss](noise, model(x_t, t, y))``, a mean over the batch."""
    alpha_bar_t = alpha_bars[t - 1].reshape((-1,) + (1,) * (x0.ndim - 1))
    x_t = q_sample.raw(x0, alpha_bar_t, noise)
    return LOSSES[loss](noise, model(x_t, t, y))


@config.jit(static_argnames=("graphdef", "batch_size", "chunk", "loss", "drop_fn", "sharding"))
def _train_chunk(graphdef, state, key, data, labels, alpha_bars, p_uncond, n_steps, *, batch_size, chunk, loss,
                 drop_fn, sharding=None):
    """``n_steps`` steps in one compiled loop; with ``sharding``, each batch is split over the devices."""
    def one_step(i, carry):
        state, losses = carry
        model, optimizer = nnx.merge(graphdef, state)
        k_index, k_t, k_noise, k_drop = jax.random.split(jax.random.fold_in(key, i), 4)
        index = jax.random.randint(k_index, (batch_size,), 0, data.shape[0])
        x0, y = data[index], drop_fn(k_drop, labels[index], p_uncond)
        t = jax.random.randint(k_t, (batch_size,), 1, alpha_bars.shape[0] + 1)
        noise = jax.random.normal(k_noise, x0.shape)
        if sharding is not None:
            x0, y, t, noise = jax.lax.with_sharding_constraint((x0, y, t, noise), sharding)
        value, grads = nnx.value_and_grad(conditional_loss)(model, x0, t, noise, alpha_bars, y, loss)
        optimizer.update(model, grads)
        return nnx.state((model, optimizer)), losses.at[i].set(value)

    start = (state, jnp.full((chunk,), jnp.nan, jnp.float32))
    if chunk == 1:  # one step, without a loop: XLA's CPU convolutions run several times slower inside loops
        return one_step(0, start)
    return jax.lax.fori_loop(0, n_steps, one_step, start)


def train_conditional(model, data, labels, alpha_bars, *, steps, key, p_uncond=0.1, batch_size=256,
                      learning_rate=1e-3, loss="l2", optimizer=None, progress=None, chunk=500, drop_fn=drop_labels):
    """Train a conditional ``model(x, t, y)`` in place with label dropout; return the loss of every step.

    As :func:`course_utils.training.train`, plus: ``labels`` (N,) int, one per
    example; each step replaces a fraction ``p_uncond`` of the batch's labels
    by "no label" with ``drop_fn(key, y, p_uncond)`` (:func:`drop_labels` by
    default), so that the same network learns the unconditional model too;
    ``loss`` is "l1", "l2" or "huber". ``optimizer``: an optax transformation
    or an ``nnx.Optimizer`` from an earlier call (to continue training).

    With several devices (GPUs, TPU cores, or CPU devices made with
    ``jax.config.update("jax_num_cpu_devices", n)``), training is data
    parallel: the model and the data are copied to every device, each batch
    is split between them, and XLA adds up the gradients.
    """
    if steps < 1:
        raise ValueError(f"train_conditional: argument `steps` must be at least 1, got {steps}")
    if loss not in LOSSES:
        raise ValueError(f"train_conditional: argument `loss` must be one of {sorted(LOSSES)}, got {loss!r}")
    data, labels = jnp.asarray(data), jnp.asarray(labels, jnp.int32)
    if labels.shape != data.shape[:1]:
        raise ValueError(f"train_conditional: `labels` must have shape ({data.shape[0]},), got {labels.shape}")
    batch, replicated = data_parallel_shardings(batch_size, "train_conditional")
    if replicated is not None:
        data, labels, alpha_bars = jax.device_put((data, labels, alpha_bars), replicated)

    def run(graphdef, state, chunk_key, n):
        if replicated is not None:
            state = jax.device_put(state, replicated)
        return _train_chunk(graphdef, state, chunk_key, data, labels, alpha_bars, jnp.float32(p_uncond), n,
                            batch_size=batch_size, chunk=chunk, loss=loss, drop_fn=drop_fn, sharding=batch)

    return run_in_chunks(model, run, optimizer=optimizer, learning_rate=learning_rate, steps=steps, key=key,
                         chunk=chunk, progress=progress)


# ---------------------------------------------------------------- measuring


def mode_fractions(x, mixture: Mixture = TWO_PIXEL):
    """The fraction of points ``x`` (N, d) nearest to each component mean, shape (K,)."""
    means = np.asarray(mixture.means)
    nearest = np.argmin(((np.asarray(x)[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    return np.bincount(nearest, minlength=len(means)) / len(nearest)


def eps_error_by_step(model, schedule: Schedule, key, n=2000, mixture: Mixture = TWO_PIXEL, y=None):
    r"""Mean squared error of ``model`` against the exact :func:`mixture_eps` at every step, shape (T,).

    At each t, ``n`` points :math:`x_t` are drawn from :math:`q(x_t)` (data
    noised by the forward process), so the error is weighted where the
    sampler actually goes. ``y``: None (no label, the unconditional model) or
    an int label (then the data are drawn from that class only).
    """
    x0, labels = sample_mixture(key, n, mixture)
    if y is not None:
        means = jnp.asarray(mixture.means, jnp.float32)
        x0 = means[y] + mixture.std * jax.random.normal(jax.random.fold_in(key, 2), x0.shape)
    label = jnp.full((n,), NO_LABEL if y is None else y, jnp.int32)
    noise = jax.random.normal(jax.random.fold_in(key, 1), (schedule.T,) + x0.shape)
    graphdef, state = nnx.split(model)
    return np.asarray(_eps_errors(graphdef, state, mixture, x0, label, noise, schedule.alpha_bars))


@functools.partial(jax.jit, static_argnames=("graphdef", "mixture"))
def _eps_errors(graphdef, state, mixture, x0, label, noise, alpha_bars):
    model = nnx.merge(graphdef, state)

    def at(t_and_noise):
        t, e = t_and_noise
        x_t = q_sample.raw(x0, alpha_bars[t - 1], e)
        steps = jnp.full((x0.shape[0],), t)
        exact = mixture_eps(x_t, alpha_bars[t - 1], mixture, label)
        return jnp.mean((model(x_t, steps, label) - exact) ** 2)

    return jax.lax.map(at, (jnp.arange(1, alpha_bars.shape[0] + 1), noise))
